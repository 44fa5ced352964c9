/* kernels.h — the CUDA backend's kernels as plain-C launchers (one op per src/cuda/<op>.cu file).
 *
 * Every launcher enqueues its work on `stream` (a cudaStream_t, NULL = default stream) and returns 0 or a
 * cudaError_t code (cu_error_str() names it). Pointers are device pointers unless a comment says
 * otherwise. Layouts are row-major; `ld*` arguments are row strides in elements, so a kernel can read a
 * column section of a wider buffer (the fused projection output holds q | k | v | gate side by side).
 * All lengths and offsets are 64-bit: at a 1M-token context T·H·D passes 2^31.
 *
 * Dimension letters as in include/sala.h: T rows of a call, N tokens in the cache, H hidden, I
 * intermediate, nh query heads, nkv KV heads, hd head dim, G = nh/nkv heads per KV group. */
#ifndef SALA_CUDA_KERNELS_H
#define SALA_CUDA_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { CU_F32 = 0, CU_BF16 = 1 } cu_dtype;

/* ---- device memory and errors (util.cu); also what the C tests use instead of the CUDA runtime ---- */
int cu_device_count(void);
const char *cu_error_str(int err);
const char *cu_device_name(int dev);
void *cu_malloc(size_t bytes);                 /* NULL on failure */
void cu_free(void *p);
int cu_h2d(void *dst, const void *src, size_t bytes);
int cu_d2h(void *dst, const void *src, size_t bytes);
int cu_memset(void *p, int byte, size_t bytes);
int cu_sync(void);
int cu_mem_info(int64_t *free_bytes, int64_t *total_bytes);
int cu_sm_count(void);
/* fills for synthetic weights: w[n] = scale · uniform(-1, 1) from a counter hash of (seed, i) */
int cu_fill_uniform_bf16(void *stream, uint16_t *w, int64_t n, uint64_t seed, float scale);
int cu_fill_f32(void *stream, float *p, int64_t n, float value);
/* y[n] = bf16(x[n]) and back, on the device */
int cu_f32_to_bf16(void *stream, uint16_t *y, const float *x, int64_t n);

/* ---- GEMM (gemm.cu): cuBLASLt, fp32 accumulation ----
 * y[T, N] (dtype yt, row stride ldy) = alpha · x[T, K] · W[N, K]ᵀ + beta · y
 * x is bf16 (tensor cores, bf16 operands) or fp32 (exact mode: W is widened to fp32 in slices of the
 * handle's scratch and multiplied by cuBLASLt's fp32 SGEMM path, no TF32). beta = 1 with alpha = r
 * fuses the residual update x += r · (a · Wᵀ). A bf16 y (rounded once from the fp32 sum) needs a bf16 x
 * and beta = 0 (cudaErrorInvalidValue otherwise).
 * cu_gemm_tune: pick the algorithm of this shape (T > 4, bf16 x; x, W and the strides as the later calls
 * will pass them, y 256-byte aligned) by timing cuBLASLt's candidates into a temporary buffer with the beta
 * the later calls use (beta = 1 reads the output too: the residual update's epilogue is part of the time);
 * later cu_gemm_run calls of the shape use it. Synchronises the stream; does nothing while it is captured or
 * when the temporary buffer cannot be allocated (the heuristic's pick stays).
 * SALA_GEMM_TUNE=2 prints each candidate's time. */
typedef struct cu_gemm cu_gemm;
int cu_gemm_new(cu_gemm **out, size_t f32_scratch_bytes);
void cu_gemm_free(cu_gemm *g);
int cu_gemm_run(cu_gemm *g, void *stream, void *y, cu_dtype yt, int64_t ldy, const void *x, cu_dtype xt, int64_t ldx,
                const uint16_t *W, int64_t T, int64_t N, int64_t K, float alpha, float beta);
int cu_gemm_tune(cu_gemm *g, void *stream, cu_dtype yt, int64_t ldy, const void *x, int64_t ldx, const uint16_t *W,
                 int64_t T, int64_t N, int64_t K, float beta, const char *name);

/* ---- decode GEMV (gemv.cu): one row, W [N, K] bf16 streamed once, the ops around it fused ----
 * y = W·a, where the operand a (dtype `at`, built on chip) is, by `in`:
 *   CU_GV_PLAIN  a = x                                      (x [K] in dtype at, 16-byte aligned)
 *   CU_GV_NORM   a = x / sqrt(mean(x²) + eps) ⊙ w / div     (x fp32: cu_rmsnorm folded in)
 *   CU_GV_GATE   a = [x / sqrt(mean(x²) + eps) ⊙ w] ⊙ sigmoid(z)   (x, z fp32; w NULL: no norm, z NULL: no
 *                gate: cu_norm_gate folded in)
 * and the output, by `out`:
 *   CU_GV_STORE  y[n] = alpha·(W a)[n] + beta·y[n]          (fp32 [N]; beta = 0 ignores y)
 *   CU_GV_SWIGLU y[i] = silu((W a)[i]) · (W a)[N/2 + i]     (i < N/2, dtype at: cu_swiglu folded in)
 * Same formulas (and rounding of a) as the unfused kernels. Launched with programmatic dependent launch on
 * sm_90+ (pdl.cuh; SALA_CUDA_PDL=0 disables). cu_gemv_supported: K fits the kernel (K % 8 == 0, a in
 * shared memory); cu_gemv returns cudaErrorInvalidValue otherwise. */
enum { CU_GV_PLAIN = 0, CU_GV_NORM = 1, CU_GV_GATE = 2 };
enum { CU_GV_STORE = 0, CU_GV_SWIGLU = 1 };
typedef struct {
    int in, out;
    const void *x;
    const float *w, *z;
    float eps, div;
    void *y;
    float alpha, beta;
} cu_gemv_op;
int cu_gemv_supported(cu_dtype at, int64_t K);
int cu_gemv_prepare(void); /* one-time setup (kernel attributes, PDL switch); called at session creation */
/* tuning knobs for benchmarks (-1 keeps a setting): kernel variant 0..2, PDL trigger point 0..2, blocks per SM
 * (1..8, or 0: chosen per call, the default), bytes of each warp's rows prefetched into L2 before the previous
 * kernel is done (0 = none) */
void cu_gemv_config(int var, int trig, int bps, int pf);
/* batches of weights per warp staged in shared memory before pdl_wait (0..8): k[4] for a GEMV in one wave of
 * blocks by operand kind (plain, norm, gate with norm, gate alone), n2 in two waves; k NULL: the defaults */
void cu_gemv_stage(const int k[4], int n2);
/* benchmarks: stamp each block of the next nmax cu_gemv launches (global timer, ns; 0 = stop); read them back:
 * 1024 blocks × 16 values a launch (entry, wait returned, operand built, each of 8 warps' end, 15 = the SM) and
 * (N, K, in, out, blocks) a launch; returns the number of launches stamped */
int cu_gemv_prof(int nmax);
int cu_gemv_prof_read(unsigned long long *h, int (*meta)[5], int nmax);
void cu_pdl_set(int on); /* benchmarks: programmatic dependent launch for the kinds in the mask `on` (1 GEMV, 2
                          * Lightning, 4 InfLLM-v2 chain; where the GPU has it) */
int cu_gemv(void *stream, const cu_gemv_op *op, cu_dtype at, const uint16_t *W, int64_t N, int64_t K);
/* y[T, N] (fp32, row stride ldy) = alpha · x[T, K] · W[N, K]ᵀ + beta · y for T ≤ 4 (two rows of W per warp);
 * K % 8 == 0, W and x 16-byte aligned, ldx·sizeof(x) a multiple of 16 (cu_gemm_run checks) */
int cu_gemv_rows(void *stream, float *y, int64_t ldy, const void *x, cu_dtype xt, int64_t ldx, const uint16_t *W,
                 int64_t T, int64_t N, int64_t K, float alpha, float beta);

/* ---- elementwise and norms ---- */
/* x[T, H] = E[ids] · scale (embed.cu); E: [V, H] bf16 */
int cu_embed(void *stream, float *x, const uint16_t *E, const int32_t *ids, int64_t T, int H, float scale);
/* y[rows, D] = x / sqrt(mean(x²) + eps) ⊙ w / div   (rmsnorm.cu); y fp32 or bf16 */
int cu_rmsnorm(void *stream, void *y, cu_dtype yt, int64_t ldy, const float *x, int64_t ldx, const float *w,
               int64_t rows, int D, float eps, float div);
/* y[rows, D] = RMSNorm(o; w) ⊙ sigmoid(z)   (gate.cu): the Lightning output norm + gate when w != NULL,
 * the sparse layer's plain sigmoid gate when w == NULL; z (dtype zt) == NULL skips the gate. */
int cu_norm_gate(void *stream, void *y, cu_dtype yt, int64_t ldy, const float *o, int64_t ldo, const void *z,
                 cu_dtype zt, int64_t ldz, const float *w, int64_t rows, int D, float eps);
/* h[rows, I] = silu(gu[:, :I]) ⊙ gu[:, I:]   (swiglu.cu); gu: [rows, 2I] in dtype gt (fp32, or bf16 from a
 * bf16-output GEMM) */
int cu_swiglu(void *stream, void *h, cu_dtype ht, const void *gu, cu_dtype gt, int64_t rows, int I);
/* In place on qk[T, nheads, hd] (row stride ld): per-head RMSNorm (weight qw for heads < nq, kw for the
 * rest) when do_norm, then RoPE at positions pos0.. when do_rope (qknorm_rope.cu). inv_freq: [hd/2]. */
int cu_qknorm_rope(void *stream, float *qk, int64_t ld, int64_t T, int nheads, int nq, int hd, const float *qw,
                   const float *kw, float eps, int do_norm, const float *inv_freq, int64_t pos0, int do_rope);
/* the same on qk in dtype qt (fp32, or bf16: computed in fp32, stored rounded), with the first position read
 * from device memory *dpos when dpos != NULL (graph replay) */
int cu_qknorm_rope_dev(void *stream, void *qk, cu_dtype qt, int64_t ld, int64_t T, int nheads, int nq, int hd, const float *qw,
                       const float *kw, float eps, int do_norm, const float *inv_freq, int64_t pos0,
                       const int64_t *dpos, int do_rope);
/* K[pos0 + t], V[pos0 + t] = k[t], v[t]: append T rows of width kvd to a cache [N, kvd] (kv_append.cu) */
int cu_kv_append(void *stream, void *K, void *V, cu_dtype kvt, const float *k, const float *v, int64_t ld,
                 int64_t T, int64_t pos0, int kvd);
/* idx[r] = argmax_i x[r, i], ties to the lower index (argmax.cu) */
int cu_argmax(void *stream, int32_t *idx, const float *x, int64_t rows, int64_t n);

/* ---- Lightning attention (lightning_prefill.cu, lightning_decode.cu) ----
 * q, k, v: [T, nh, hd] with row stride ld; state [nh, hd, hd] fp32 updated in place (S ← λS + kᵀv,
 * o = s·q·S); o [T, nh·hd] with row stride ldo; lambda [nh] (double, device). Prefill: the chunked form
 * (64-token chunks, the state kept on chip across chunks); decode: the recurrence. Equal results.
 * prefill_mma: the bf16 mode's chunked form on tensor cores (q, k, v, A and the state inside q·S rounded
 * to bf16, fp32 accumulation and state); q, k, v in dtype qt (fp32 or bf16). Falls back to the fp32
 * kernels for fp32 shapes it does not take; bf16 q, k, v need hd in {16, 32, 64, 128}, ld % 4 == 0 and
 * 8-byte aligned q, k, v (cu_lightning_mma_takes), else cudaErrorInvalidValue. */
int cu_lightning_prefill(void *stream, float *o, int64_t ldo, const float *q, const float *k, const float *v,
                         int64_t ld, float *state, const double *lambda, float s, int64_t T, int nh, int hd);
int cu_lightning_prefill_mma(void *stream, float *o, int64_t ldo, const void *q, const void *k, const void *v,
                             cu_dtype qt, int64_t ld, float *state, const double *lambda, float s, int64_t T, int nh,
                             int hd);
int cu_lightning_mma_takes(const void *q, const void *k, const void *v, cu_dtype qt, int64_t ld, int hd);
int cu_lightning_decode(void *stream, float *o, int64_t ldo, const float *q, const float *k, const float *v,
                        int64_t ld, float *state, const double *lambda, float s, int64_t T, int nh, int hd);
/* One decode row with the q/k preparation fused (cu_qknorm_rope's per-head RMSNorm when do_norm, RoPE at
 * position *dpos (or pos0 when dpos is NULL) when do_rope), q and k left unchanged in memory; o [nh·hd].
 * PDL-launched on sm_90+ (the state is loaded before the previous kernel finishes). */
int cu_lightning_decode_fused(void *stream, float *o, const float *q, const float *k, const float *v, float *state,
                              const double *lambda, float s, int nh, int hd, const float *qw, const float *kw, float eps,
                              int do_norm, const float *inv_freq, int64_t pos0, const int64_t *dpos, int do_rope);

/* ---- attention (attn_dense.cu, attn_sparse.cu) ----
 * q: [T, nh, hd] fp32 (row stride ldq) at positions pos0..pos0+T-1; K, V: [N, nkv, hd] cache (fp32 or
 * bf16); o: [T, nh·hd] fp32 (row stride ldo). scratch: device floats for split-KV partial results
 * (used when there are too few query tiles to fill the GPU); NULL/0 disables splitting. */
int cu_attn_dense(void *stream, float *o, int64_t ldo, const float *q, int64_t ldq, const void *K, const void *V,
                  cu_dtype kvt, int64_t T, int64_t pos0, int nh, int nkv, int hd, float scale, float *scratch,
                  int64_t scratch_floats);

/* InfLLM-v2 constants (MODEL.md §4) */
typedef struct {
    int nh, nkv, hd;
    int l1, s1, l2, s2;      /* compressed keys: kernel size / stride, level 1 and 2 */
    int block;               /* B (64) */
    int init_blocks, local_blocks;
    int budget;              /* topk + local_blocks */
    float scale;             /* 1/sqrt(hd) */
    int bf16;                /* stage 1 on tensor cores: q and compressed keys rounded to bf16 (the bf16 mode,
                              * like the official kernels); 0 = fp32 FMA (the exact mode) */
} cu_infllm_dims;

/* C[j, nkv, hd] = mean(K[s·j .. s·j+l-1]) for j in [j0, j1), summed in fp32 in key order, stored in the
 * cache's dtype kvt (bf16: rounded once, what the tensor-core stage 1 reads) (infllm_compress.cu) */
int cu_infllm_compress(void *stream, void *C, const void *K, cu_dtype kvt, int64_t j0, int64_t j1, int l, int s,
                       int nkv, int hd);
/* lse[T, nh] = log Σ_{j < v2(r)} exp(scale · q_h(r)·C2[j]) for rows r = pos0 + t of a call with kv_len
 * (infllm_lse.cu). n2_avail: compressed keys present in C2 (every visible one is). Compressed keys are
 * bf16 when d->bf16, else fp32 (here and in cu_infllm_score). */
int cu_infllm_lse(void *stream, float *lse, const float *q, int64_t ldq, const void *C2, int64_t n2_avail,
                  int64_t T, int64_t pos0, int64_t kv_len, int decode, const cu_infllm_dims *d, float *scratch,
                  int64_t scratch_floats);
/* Stage 1 + max-pool (infllm_score.cu): for each row and KV group, the pooled block scores
 * pooled[t, g, b] (row stride nblk_cap per (t, g)) of the blocks whose pooling windows start in the
 * 64-key tiles of C1, and halo[t, g, tile] = the score of key 64·tile − 1 (which pools into the first
 * block of that tile). n1_avail: level-1 keys present in C1. */
int cu_infllm_score(void *stream, float *pooled, float *halo, const float *q, int64_t ldq, const float *lse,
                    const void *C1, int64_t n1_avail, int64_t T, int64_t pos0, int64_t kv_len, int decode,
                    const cu_infllm_dims *d, int64_t nblk_cap, int64_t ntile_cap);
/* Forced + top-K blocks per row and group, ties to the lower block index, ascending (infllm_topk.cu):
 * blocks[t, g, budget], nsel[t, g]. Overwrites pooled with sort keys. */
int cu_infllm_topk(void *stream, int32_t *blocks, int32_t *nsel, float *pooled, const float *halo, int64_t T,
                   int64_t pos0, const cu_infllm_dims *d, int64_t nblk_cap, int64_t ntile_cap);
/* Stage 2 (attn_sparse.cu): attention of each query head over the selected blocks of its group, keys
 * at or before the row. Block size must be 64. */
int cu_attn_sparse(void *stream, float *o, int64_t ldo, const float *q, int64_t ldq, const void *K, const void *V,
                   cu_dtype kvt, const int32_t *blocks, const int32_t *nsel, int64_t T, int64_t pos0,
                   const cu_infllm_dims *d, float *scratch, int64_t scratch_floats);

/* ---- InfLLM-v2 decode step of a sparse layer (sparse_decode.cu) ----
 * One row at position *dpos (device memory), so a CUDA graph can replay it: K[pos], V[pos] = k, v (and the
 * compressed keys whose windows end there; every earlier window must be in C1/C2 already), LSE, stage-1
 * scores, pooling and top-k, block-sparse attention into o [nh·hd]. Grids are sized for the session's
 * n_ctx by cu_sdec_plan_make (which fails, cudaErrorInvalidValue, for what the kernels do not cover: fp32
 * caches, G != 16, blocks other than 64 tokens pooled over 4 keys). `work` holds p->work_bytes, zeroed once
 * before the first step (cu_memset) and not touched otherwise; cu_sdec_blocks points at the chosen blocks
 * [nkv, budget] and counts [nkv] in it (for tests). With SALA_SDEC_FUSED=1 (and one CTA per SM able to hold it)
 * the step is one kernel instead (k_sdec_fused, grid barriers between its parts; measured slower, kept opt-in). */
typedef struct {
    int64_t n_ctx;
    int units2, tpu2;      /* LSE: warps per group, level-2 key tiles per warp */
    int ctas_score;        /* stage-1 CTAs per group (256 blocks each) */
    int ctas_attn;         /* attention CTAs per group (4 chosen blocks each) */
    int grid, half;        /* the fused kernel (opt-in): CTAs (0: the four kernels), CTAs per group */
    int kpu, ds;           /* fused: level-2 keys per LSE warp, dims parts of the output merge */
    int64_t fused_smem;    /* fused: dynamic shared memory */
    int attn_cl;           /* warps per CTA of the clustered attention kernel (sm_90+: a cluster of 16 CTAs per
                              group merging through distributed shared memory), 0: k_sdec_attn */
    int64_t work_bytes;
} cu_sdec_plan;
int cu_sdec_plan_make(cu_sdec_plan *p, const cu_infllm_dims *d, int64_t n_ctx);
int cu_sdec_step(void *stream, float *o, const float *q, const float *k, const float *v, void *K, void *V, void *C1,
                 void *C2, const int64_t *dpos, const cu_infllm_dims *d, const cu_sdec_plan *p, void *work);
int cu_sdec_blocks(const cu_infllm_dims *d, const cu_sdec_plan *p, const void *work, const int32_t **blocks,
                   const int32_t **nsel);

#ifdef __cplusplus
}
#endif
#endif
