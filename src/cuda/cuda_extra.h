/* cuda_extra.h — CUDA backend entry points beyond backend.h (plain C): synthetic models generated on
 * the GPU for `sala bench`, greedy decoding without copying logits back, and the memory plan.
 * Builds without CUDA do not compile callers of these (tools/cmd_bench.c checks SALA_CUDA). */
#ifndef SALA_CUDA_EXTRA_H
#define SALA_CUDA_EXTRA_H

#include <stdint.h>

#include "cuda/backend.h"
#include "model/config.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int64_t weights, kv, comp, state, act, total; /* bytes on the GPU */
} cuda_mem_plan;

/* A model of the given shape whose bf16 weights are drawn on the GPU (uniform, scaled to keep the
 * activations O(1)); no checkpoint is read. */
sala_status cuda_model_new_synth(const sala_config *cfg, const sala_model_params *p, uint64_t seed, cuda_model **out);
/* Plan of a session before allocating it (chunk ≤ 0: the largest default chunk, 8192). */
cuda_mem_plan cuda_model_plan(const cuda_model *cm, int64_t n_ctx, int chunk);
/* The prefill chunk a session runs with (its own choice when it was created with chunk ≤ 0). */
int cuda_session_chunk(const cuda_session *cs);
/* Like cuda_session_eval with SALA_LOGITS_LAST, but returns only the argmax of the last row's logits. */
sala_status cuda_session_eval_argmax(cuda_session *cs, int64_t pos, const int32_t *ids, int64_t n, int32_t *next,
                                     int (*progress)(void *, int64_t, int64_t), void *ud);
/* The card's limits, measured now (ceilings.cu): cuBLAS bf16 GEMM 8192³ (fastest run, and the mean over
 * 1 s after 2 s of load), a streaming read of 4 GiB, a device-to-device copy (read + written bytes), reads
 * of a buffer of half the L2, and ex2.approx on MUFU. Takes about 5 s and 4 GiB of GPU memory; returns a
 * cudaError_t (0 = fine). */
typedef struct {
    double gemm_tflops, gemm_sustained_tflops, hbm_read_tbs, hbm_copy_tbs, l2_read_tbs, ex2_per_s;
    int64_t l2_bytes, l2_buffer_bytes;
} cu_ceilings;
int cu_measure_ceilings(cu_ceilings *c);
/* Device name and memory in use on it now (total − free, all processes and the CUDA context). */
void cuda_device_info(char *name, int cap, int64_t *used_bytes, int64_t *total_bytes);

#ifdef __cplusplus
}
#endif
#endif
