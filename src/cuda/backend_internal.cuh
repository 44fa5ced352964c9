/* backend_internal.cuh — the CUDA backend's model and session structures, shared by model.cu (weights)
 * and session.cu (caches and the forward pass). Host C++ only. */
#ifndef SALA_CUDA_BACKEND_INTERNAL_CUH
#define SALA_CUDA_BACKEND_INTERNAL_CUH

#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "cuda/backend.h"
#include "cuda/cuda_extra.h"
#include "cuda/kernels.h"
#include "model/config.h"
#include "util.h"
}

/* One layer's weights on the GPU. The mixer's input projections are fused into one matrix so a chunk
 * needs one GEMM for them: rows q | k | v | gate (gate = z_proj or o_gate, when present). */
typedef struct {
    int sparse;
    int n_in;              /* rows of w_in */
    int has_gate;
    int qd, kvd;           /* query width, key/value width */
    float *ln1, *ln2;      /* [H] */
    uint16_t *w_in;        /* [n_in, H] bf16 */
    uint16_t *w_o;         /* [H, qd] */
    uint16_t *w_gu;        /* [2I, H]: gate rows then up rows */
    uint16_t *w_down;      /* [H, I] */
    float *q_norm, *k_norm;/* [lin_hd] (lightning, qk_norm) */
    float *o_norm;         /* [qd] (lightning, use_output_norm) */
} cu_layer;

struct cuda_model {
    sala_config cfg;
    sala_precision precision;
    cu_dtype act;          /* GEMM operands, KV cache: CU_F32 (exact) or CU_BF16 */
    int verbose;
    void *pool;            /* every weight, carved */
    int64_t pool_bytes;
    uint16_t *embed;       /* [V, H] */
    uint16_t *lm_head;     /* [V, H] (= embed when tied) */
    float *final_norm;     /* [H] */
    cu_layer *layers;      /* [L] host array of device pointers */
    double *lambda;        /* [lin_nh] device: Lightning decay */
    float *inv_freq_l;     /* [lin_hd/2] device: RoPE of linear layers */
    float *inv_freq_s;     /* [hd/2] device: RoPE of sparse layers (attn_use_rope) */
    int n_sparse, n_linear;
    int max_nin, qd_max;
    cu_gemm *gemm;
    cudaStream_t stream;
};

/* GPU time per kind of op, measured with events when SALA_CUDA_PROFILE=1 (printed after each call) */
enum { PROF_GEMM, PROF_NORM, PROF_LIGHTNING, PROF_DENSE, PROF_COMPRESS, PROF_LSE, PROF_SCORE, PROF_TOPK, PROF_SPARSE,
       PROF_OTHER, PROF_N };
/* and per kernel of the chunk's dense part, with the work each does (FLOPs of a GEMM, bytes an elementwise
 * kernel must move), to print its rate against the card's ceilings */
enum { PK_GEMM_IN, PK_GEMM_O, PK_GEMM_GU, PK_GEMM_DOWN, PK_RMSNORM, PK_QKROPE, PK_GATE, PK_SWIGLU, PK_N };
#define PROF_EVENTS 1024
typedef struct {
    cudaEvent_t ev[PROF_EVENTS];
    int cat[PROF_EVENTS / 2];
    int sub[PROF_EVENTS / 2];     /* PK_* or -1 */
    double work[PROF_EVENTS / 2]; /* FLOPs (GEMMs) or bytes (the others) of that launch */
    int n;
    int64_t calls;         /* single-token calls folded into ms since the last print */
    double ms[PROF_N];
    double pk_ms[PK_N], pk_work[PK_N];
} cu_prof;

struct cuda_session {
    cuda_model *cm;
    cu_prof *prof;         /* NULL unless SALA_CUDA_PROFILE=1 */
    int64_t n_ctx;
    int chunk;
    void *pool;
    int64_t pool_bytes;
    cuda_mem_plan plan;
    /* caches */
    void **K, **V;         /* [L] -> [n_ctx, nkv, hd] (act dtype), sparse layers */
    void **C1, **C2;       /* [L] -> [n1cap, nkv, hd], [n2cap, nkv, hd] compressed keys (act dtype) */
    float **state;         /* [L] -> [lin_nh, lin_hd, lin_hd], linear layers */
    int64_t n1cap, n2cap, comp_n1, comp_n2; /* compressed keys computed so far (all sparse layers) */
    /* activations for one chunk of C rows */
    int32_t *ids;          /* [chunk] */
    float *x;              /* [chunk, H] residual stream */
    void *a;               /* [chunk, max(H, qd, I)] GEMM operand (act dtype) */
    float *mix;            /* [chunk, max(n_in, 2I)] projection / FFN GEMM outputs */
    float *o;              /* [chunk, qd_max] mixer output */
    float *lse;            /* [chunk, nh] */
    float *pooled;         /* [chunk, nkv, nblk_cap] */
    float *halo;           /* [chunk, nkv, ntile_cap] */
    int32_t *blocks;       /* [chunk, nkv, budget] */
    int32_t *nsel;         /* [chunk, nkv] */
    int64_t nblk_cap, ntile_cap;
    float *scratch;        /* split-KV partials */
    int64_t scratch_floats;
    int logit_rows;        /* rows of logits computed per GEMM */
    void *fnorm;           /* [logit_rows, H] act dtype */
    float *logits;         /* [logit_rows, V] */
    int32_t *next;         /* [1] argmax */
    /* CUDA graphs of the decode step (SALA_CUDA_GRAPH=0 disables): the step's launches between the
     * sparse layers' attention cores are captured once into segments and replayed */
    int64_t *dpos;         /* [1] device: the step's position (read by RoPE in the graphs) */
    int graph_on;          /* graphs allowed for this session */
    int fuse;              /* one-row calls use the fused GEMVs (cu_gemv) and Lightning decode */
    int gmode, gbuild;     /* this call replays (gmode) / first captures (gbuild) the segments */
    int skip;              /* replaying: the ops of the open segment are not enqueued */
    int capturing;         /* the stream is capturing a segment */
    int seg, nseg;         /* segment of the call so far; segments captured (of the set in use) */
    cudaGraphExec_t *gexec;/* [n_layers + 2] the set in use: gexec_set[gset] */
    /* two sets of graphs: 0 = the step in n_sparse + 1 segments (the InfLLM-v2 chain launched between
     * them, or dense attention), 1 = the whole step in one graph (the chain of sparse_decode.cu) */
    cudaGraphExec_t *gexec_set[2];
    int nseg_set[2];
    /* the device-side InfLLM-v2 decode chain (bf16 mode; SALA_CUDA_DCHAIN=0 disables) */
    int dchain_ok;
    cu_sdec_plan sdec;
    void *sdec_work;
};

/* device failure -> SALA_ERR_DEVICE with the CUDA message */
sala_status cu_fail(int err, const char *what);

#endif
