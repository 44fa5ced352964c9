/* config.h — the model's hyper-parameters, parsed from a Hugging Face config.json (MODEL.md §1).
 *
 * Every field that changes the math is read; a field the engine cannot honour (rope_scaling, biases,
 * an unknown mixer type, use_nope, ...) is refused with a message naming it. */
#ifndef SALA_CONFIG_H
#define SALA_CONFIG_H

#include "sala.h"

#define SALA_MAX_LAYERS 256
#define SALA_MAX_EOS 8

enum { LSCALE_INV_SQRT_D = 0, LSCALE_INV_D = 1, LSCALE_ONE = 2 };

typedef struct {
    int vocab, hidden, inter, n_layers;
    int nh, nkv, hd;               /* sparse layers: query heads, KV heads, head dim */
    int lin_nh, lin_nkv, lin_hd;   /* linear layers */
    double eps, rope_theta, scale_emb, scale_depth, dim_model_base;
    int attn_use_rope, lightning_use_rope, qk_norm, use_output_norm, use_output_gate, attn_use_output_gate;
    int lightning_scale;           /* LSCALE_* */
    int tie_embeddings;
    int max_pos;
    unsigned char sparse[SALA_MAX_LAYERS]; /* 1 = minicpm4 sparse layer, 0 = lightning layer */
    /* InfLLM-v2 (sparse_config) */
    int kernel_size, kernel_stride, init_blocks, block_size, window_size, topk, dense_len;
    int bos, eos[SALA_MAX_EOS], n_eos;
} sala_config;

/* Defaults of the reference code for fields a config may omit. */
void config_defaults(sala_config *c);
/* Parse config.json text; on failure returns non-OK and sets the thread's error message. */
sala_status config_parse(sala_config *c, const char *json, size_t len);
sala_status config_load(sala_config *c, const char *path);
/* Checks the combination of fields is one the engine can run. Called by config_parse. */
sala_status config_validate(const sala_config *c);
/* Writes the config in the official config.json format (used by `sala synth`). Caller frees. */
char *config_to_json(const sala_config *c);

#endif
