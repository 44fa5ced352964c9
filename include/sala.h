/* sala.h — public C API of sala, an inference engine for MiniCPM-SALA and hybrid sparse/linear models.
 *
 * Handles are opaque. Every call that can fail returns a sala_status; sala_last_error() gives the
 * plain-language message (with a hint where one helps) of the last failure on the calling thread.
 *
 * Dimension letters used in shape comments throughout the project:
 *   T tokens of a call, N tokens in the cache, V vocab, H hidden, I intermediate,
 *   nh query heads, nkv KV heads (sparse layers), hd head dim, L layers.
 */
#ifndef SALA_H
#define SALA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    SALA_OK = 0,
    SALA_ERR_IO,          /* file missing, unreadable, truncated */
    SALA_ERR_FORMAT,      /* malformed safetensors / JSON / tokenizer file */
    SALA_ERR_CONFIG,      /* config the engine cannot run, or tensor shape not matching it */
    SALA_ERR_UNSUPPORTED, /* valid input that this build does not support (dtype, device, template) */
    SALA_ERR_NOMEM,       /* host or device memory exhausted, or over the requested limit */
    SALA_ERR_ARG,         /* bad argument from the caller */
    SALA_ERR_CONTEXT,     /* request past the session's context length */
    SALA_ERR_DEVICE,      /* GPU runtime failure */
    SALA_ERR_INTERRUPTED, /* stopped by the caller's abort callback */
} sala_status;

const char *sala_status_str(sala_status s);
/* Message of the last failure on this thread ("" if none). */
const char *sala_last_error(void);

typedef enum { SALA_DEVICE_CPU = 0, SALA_DEVICE_CUDA = 1 } sala_device;

/* Numerics of the compute path. FP32: every activation in fp32 (the CPU engine, and the GPU's exact
 * mode). BF16: bf16 activations like the official kernels (GPU default). */
typedef enum { SALA_PRECISION_DEFAULT = 0, SALA_PRECISION_FP32, SALA_PRECISION_BF16 } sala_precision;

typedef struct sala_model sala_model;
typedef struct sala_session sala_session;

typedef struct {
    sala_device device;
    sala_precision precision;
    int n_threads;           /* CPU threads; 0 = all cores */
    int reference;           /* 1 = the plain, slow reference path (the spec); 0 = the fast path */
    int gpu_id;              /* CUDA device ordinal */
    int verbose;             /* print the memory plan and load times on stderr */
} sala_model_params;

sala_model_params sala_model_default_params(void);

/* Load a checkpoint folder in the official Hugging Face layout: config.json plus model.safetensors or
 * model-0000N-of-0000M.safetensors with model.safetensors.index.json. Weights are mmapped. */
sala_status sala_model_load(const char *dir, const sala_model_params *p, sala_model **out);
void sala_model_free(sala_model *m);

typedef struct {
    int n_layers, hidden, intermediate, vocab;
    int n_heads, n_kv_heads, head_dim;          /* sparse layers */
    int lin_heads, lin_head_dim;                /* linear layers */
    int n_sparse_layers, n_linear_layers;
    int max_position;                           /* max_position_embeddings from the config */
    int bos_id;
    int eos_ids[8];
    int n_eos;
    int dense_len;
    int64_t n_params;
    int64_t weight_bytes;                       /* as stored in the checkpoint */
    char layer_pattern[256];                    /* one letter per layer: S sparse, L linear ('...' if long) */
} sala_model_info;

void sala_model_get_info(const sala_model *m, sala_model_info *out);

/* Bytes needed for a session of n_ctx tokens. kv_bytes are the sparse layers' K and V in the given cache
 * element size (2 for bf16, 4 for fp32); comp_bytes the compressed keys; state_bytes the Lightning states;
 * act_bytes the activations of one prefill chunk of `chunk` tokens. */
typedef struct {
    int64_t weight_bytes, kv_bytes, comp_bytes, state_bytes, act_bytes, total_bytes;
} sala_mem_plan;

sala_mem_plan sala_model_mem_plan(const sala_model *m, int64_t n_ctx, int chunk, int kv_elem_bytes);

/* ---- sessions: one sequence, its caches and position ---- */

/* The prefill chunk a session takes when sala_session_params.chunk is 0: SALA_CHUNK_CPU tokens on the CPU; on
 * the GPU the largest of SALA_CHUNK_GPU_MAX, half that, ..., SALA_CHUNK_GPU_MIN whose session fits the card's free
 * memory and mem_limit (and at most the context). */
#define SALA_CHUNK_CPU 512
#define SALA_CHUNK_GPU_MAX 8192
#define SALA_CHUNK_GPU_MIN 512

typedef struct {
    int64_t n_ctx;           /* context length (tokens); 0 = max_position_embeddings of the config */
    int chunk;               /* prefill chunk size in tokens (bounds activation memory); 0 = default (below) */
    int64_t mem_limit;       /* refuse a session whose caches + activations exceed this (bytes); 0 = none */
    /* progress of long calls: done/total tokens; return non-zero to abort (SALA_ERR_INTERRUPTED) */
    int (*progress)(void *ud, int64_t done, int64_t total);
    void *progress_ud;
} sala_session_params;

sala_session_params sala_session_default_params(void);
sala_status sala_session_new(sala_model *m, const sala_session_params *p, sala_session **out);
void sala_session_free(sala_session *s);
/* Forget the sequence (position 0, empty caches). */
void sala_session_reset(sala_session *s);
int64_t sala_session_pos(const sala_session *s);
int64_t sala_session_n_ctx(const sala_session *s);

enum { SALA_LOGITS_NONE = 0, SALA_LOGITS_LAST = 1, SALA_LOGITS_ALL = 2 };

/* Feed n tokens at the session's position as ONE call of the model (the regime of the sparse layers and
 * InfLLM-v2's visibility follow the whole call, exactly as the reference's single forward; internally it
 * runs in chunks). logits: [n, V] for SALA_LOGITS_ALL, [V] for SALA_LOGITS_LAST, unused for NONE. */
sala_status sala_session_eval(sala_session *s, const int32_t *ids, int64_t n, int which, float *logits);

/* Snapshot / restore of the whole sequence state (position, caches, Lightning states). */
typedef struct sala_snapshot sala_snapshot;
sala_status sala_session_snapshot(const sala_session *s, sala_snapshot **out);
sala_status sala_session_restore(sala_session *s, const sala_snapshot *snap);
void sala_snapshot_free(sala_snapshot *snap);

/* A ready progress callback for sala_session_params.progress: on stderr, at most every 0.5 s and at the
 * end, "<label> 123456/1048576 tokens (11.8%), 45678 tok/s, 21s left". ud points to a zero-initialised
 * sala_progress_state (label optional; quiet = 1 prints nothing for calls under min_tokens). */
typedef struct {
    const char *label;
    int64_t min_tokens;      /* calls shorter than this print nothing (0 = 2048) */
    double t0, last;
    int64_t total;
} sala_progress_state;
int sala_progress_stderr(void *ud, int64_t done, int64_t total);

/* ---- synthetic checkpoints ---- */

/* Write a checkpoint folder (config.json, sharded safetensors + index) with random bf16 weights.
 * preset: "tiny", "small", "9b" (the released shape); or config_path: a config.json to follow. */
sala_status sala_synth_write(const char *out_dir, const char *preset, const char *config_path, uint64_t seed,
                             int verbose);

#ifdef __cplusplus
}
#endif
#endif
