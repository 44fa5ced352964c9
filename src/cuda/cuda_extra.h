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
/* Plan of a session before allocating it. */
cuda_mem_plan cuda_model_plan(const cuda_model *cm, int64_t n_ctx, int chunk);
/* Like cuda_session_eval with SALA_LOGITS_LAST, but returns only the argmax of the last row's logits. */
sala_status cuda_session_eval_argmax(cuda_session *cs, int64_t pos, const int32_t *ids, int64_t n, int32_t *next,
                                     int (*progress)(void *, int64_t, int64_t), void *ud);
/* Device name and memory in use on it now (total − free, all processes and the CUDA context). */
void cuda_device_info(char *name, int cap, int64_t *used_bytes, int64_t *total_bytes);

#ifdef __cplusplus
}
#endif
#endif
