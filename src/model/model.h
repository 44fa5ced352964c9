/* model.h — a loaded checkpoint: config, weight descriptors into the mmapped files, derived constants.
 *
 * Weights stay in the files' dtype (bf16 for the official checkpoint) and are read in place; only the
 * norm vectors are widened to fp32 copies at load. The tensor table follows MODEL.md §2 exactly: every
 * expected tensor must be present with its shape, and a tensor sala would not use is refused (it would
 * mean the checkpoint computes something sala does not). */
#ifndef SALA_MODEL_H
#define SALA_MODEL_H

#include "cpu/ops.h"
#include "model/config.h"
#include "model/safetensors.h"
#include "sala.h"

struct cuda_model;

typedef struct {
    int sparse;                       /* 1 = minicpm4 (InfLLM-v2), 0 = lightning */
    float *in_norm, *post_norm;       /* [H] */
    sala_weight wq;                   /* [nh·hd, H] (lightning: lin_nh·lin_hd) */
    sala_weight wk, wv;               /* [nkv·hd, H] (lightning: lin_nh·lin_hd) */
    sala_weight wgate;                /* o_gate (sparse) or z_proj (lightning) [q_dim, H]; data NULL if off */
    sala_weight wo;                   /* [H, q_dim] */
    float *q_norm, *k_norm;           /* [lin_hd], lightning with qk_norm */
    float *o_norm;                    /* [lin_nh·lin_hd], lightning with use_output_norm */
    sala_weight mlp_gate, mlp_up;     /* [I, H] */
    sala_weight mlp_down;             /* [H, I] */
} sala_layer;

struct sala_model {
    sala_config cfg;
    sala_model_params params;
    char *dir;
    st_file *files;
    int n_files;
    sala_weight embed;                /* [V, H] */
    sala_weight lm_head;              /* [V, H] (the embedding when tied) */
    float *final_norm;                /* [H] */
    sala_layer *layers;               /* [L] */
    double *lambda;                   /* [lin_nh] Lightning decay per head */
    int64_t n_params, weight_bytes;
    int n_sparse, n_linear;
    struct cuda_model *cuda;          /* set when loaded for SALA_DEVICE_CUDA */
};

/* query width of a layer's mixer (nh·hd or lin_nh·lin_hd) */
static inline int layer_qdim(const sala_config *c, int sparse) { return sparse ? c->nh * c->hd : c->lin_nh * c->lin_hd; }
static inline int layer_kvdim(const sala_config *c, int sparse) { return sparse ? c->nkv * c->hd : c->lin_nh * c->lin_hd; }

#endif
