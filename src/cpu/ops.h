/* ops.h — the model's operators on the CPU, fp32 activations.
 *
 * Two implementations of the heavy ops live side by side: the *_ref functions are plain loops that read
 * like MODEL.md (the spec, single-threaded), the others are the fast path (OpenMP threads, blocked
 * matmul, the chunked Lightning form). Tests check fast against ref, and ref against the golden logits.
 * The CUDA kernels are tested against the *_ref functions too.
 *
 * Layouts are row-major. A "weight" is a [rows, cols] matrix in bf16, f16 or f32 as stored in the
 * checkpoint (PyTorch Linear layout: y = x Wᵀ). */
#ifndef SALA_OPS_H
#define SALA_OPS_H

#include <stdint.h>

#include "model/safetensors.h"

typedef struct {
    sala_dtype dtype;        /* DT_BF16, DT_F16 or DT_F32 */
    const void *data;        /* [rows, cols] */
    int64_t rows, cols;
} sala_weight;

/* scalar conversions */
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);   /* round to nearest even */
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
/* row r of a weight as fp32 */
void weight_row_f32(const sala_weight *w, int64_t r, float *out);

/* x[T, H] = E[ids] * scale */
void op_embed(float *x, const sala_weight *E, const int32_t *ids, int64_t T, float scale);
/* y[rows, D] = x / sqrt(mean(x²) + eps) ⊙ w ; y may alias x */
void op_rmsnorm(float *y, const float *x, const float *w, int64_t rows, int64_t D, float eps);
void op_rmsnorm_ref(float *y, const float *x, const float *w, int64_t rows, int64_t D, float eps);
/* y[T, N] = x[T, K] · W[N, K]ᵀ */
void op_matmul_ref(float *y, const float *x, const sala_weight *W, int64_t T);
void op_matmul(float *y, const float *x, const sala_weight *W, int64_t T);
/* h[n] = silu(g[n]) * u[n] */
void op_swiglu(float *h, const float *g, const float *u, int64_t n);
/* o[n] *= sigmoid(g[n]) */
void op_sigmoid_gate(float *o, const float *g, int64_t n);
/* x += r * y, n elements */
void op_residual(float *x, const float *y, float r, int64_t n);

/* RoPE in place on x[T, nh, hd], rows at positions pos0 .. pos0+T-1; rotate-half pairs (i, i + hd/2).
 * Angle = fp32(pos * inv_freq_i), inv_freq_i = 1.0f / (float)pow(theta, 2i/hd); cos/sin in double. */
void op_rope(float *x, int64_t T, int nh, int hd, int64_t pos0, double theta);

/* ALiBi slopes m_h for nh heads (MODEL.md §3), decay λ_h = exp(-m_h). */
void lightning_decay(double *lambda, int nh);

/* Lightning attention (constant-decay simple GLA) for one call of T tokens.
 * q, k, v: [T, nh, hd]; state: [nh, hd, hd] fp32, updated in place (S ← λS + kᵀv, o = s·q·S).
 * o: [T, nh, hd]. */
void op_lightning_ref(float *o, const float *q, const float *k, const float *v, float *state,
                      const double *lambda, float s, int64_t T, int nh, int hd);
/* Same result by the chunked form (intra-chunk masked QKᵀ with the decay matrix + inter-chunk Q·S). */
void op_lightning_chunked(float *o, const float *q, const float *k, const float *v, float *state,
                          const double *lambda, float s, int64_t T, int nh, int hd, int chunk);

/* Dense causal attention, GQA, no position encoding. q: [T, nh, hd] at positions pos0..pos0+T-1;
 * K, V: [N, nkv, hd] with N >= pos0 + T; query head h uses KV head h / (nh/nkv). o: [T, nh, hd]. */
void op_attention_dense_ref(float *o, const float *q, const float *K, const float *V, int64_t T, int64_t pos0,
                            int nh, int nkv, int hd, float scale);
void op_attention_dense(float *o, const float *q, const float *K, const float *V, int64_t T, int64_t pos0,
                        int nh, int nkv, int hd, float scale);

/* ---- InfLLM-v2 (MODEL.md §4) ---- */

typedef struct {
    int nh, nkv, hd;
    int l1, s1;              /* level-1 compressed keys: kernel_size, kernel_stride */
    int l2, s2;              /* level-2: 4·l1, 4·s1 */
    int block;               /* block_size B */
    int init_blocks, local_blocks;
    int budget;              /* topk + local_blocks */
    float scale;             /* 1/sqrt(hd) */
} infllm_dims;

/* Number of complete windows of length l, stride s over N keys. */
int64_t infllm_n_windows(int64_t N, int l, int s);
/* C[j, nkv, hd] = mean(K[s·j .. s·j+l-1]) for j in [j0, j1); K: [N, nkv, hd]. */
void op_compress_keys(float *C, const float *K, int64_t j0, int64_t j1, int l, int s, int nkv, int hd);

/* Visible compressed keys of the row at position r in a call whose last position is kv_len-1.
 * decode != 0: a single-token call, every key is visible. Otherwise the official prefill rule,
 * quirk included: v1 = clamp((r+1)//s1 - 1 + n1 - (kv_len-(s1-1))//s1, 0, n1), likewise v2. */
void infllm_visible(const infllm_dims *d, int64_t r, int64_t kv_len, int decode, int64_t *v1, int64_t *v2);

/* Block selection for one row and every KV group.
 * q: [nh, hd] (this row), C1: [n1, nkv, hd], C2: [n2, nkv, hd] where n1, n2 are the totals for kv_len.
 * Writes the chosen blocks of group g, ascending, to blocks[g * budget + i] and their count to n_sel[g].
 * work: scratch of infllm_select_work_floats(d, kv_len) floats. */
int64_t infllm_select_work_floats(const infllm_dims *d, int64_t kv_len);
void infllm_select_row(const infllm_dims *d, const float *q, const float *C1, int64_t n1, const float *C2,
                       int64_t n2, int64_t r, int64_t kv_len, int decode, int32_t *blocks, int *n_sel,
                       float *work);

/* Attention of row r's query heads over the chosen blocks of their group (key position <= r).
 * q: [nh, hd], K, V: [N, nkv, hd], o: [nh, hd]. */
void op_attention_blocks_row(float *o, const float *q, const float *K, const float *V, const infllm_dims *d,
                             int64_t r, const int32_t *blocks, const int *n_sel);

#endif
