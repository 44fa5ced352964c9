/* backend.h — the CUDA backend as the host code sees it: plain C, no CUDA types.
 *
 * The CPU engine (src/session.c) calls these when a model was loaded with device = SALA_DEVICE_CUDA.
 * Builds without CUDA (make CUDA=0) link src/cuda_off.c instead, whose functions return
 * SALA_ERR_UNSUPPORTED with a message saying how to build with CUDA. */
#ifndef SALA_CUDA_BACKEND_H
#define SALA_CUDA_BACKEND_H

#include "sala.h"

struct sala_model;
typedef struct cuda_model cuda_model;
typedef struct cuda_session cuda_session;

/* Upload the weights of a loaded model (m->cfg, m->w) to the GPU. */
sala_status cuda_model_new(const struct sala_model *m, const sala_model_params *p, cuda_model **out);
void cuda_model_free(cuda_model *cm);
/* Allocate caches for n_ctx tokens and activations for `chunk`-token prefill chunks up front (chunk ≤ 0: the
 * largest of 8192, 4096, ..., 512 that fits); refuses (SALA_ERR_NOMEM, with the plan in the message) when it
 * does not fit the card or mem_limit. */
sala_status cuda_session_new(cuda_model *cm, int64_t n_ctx, int chunk, int64_t mem_limit, cuda_session **out);
void cuda_session_free(cuda_session *cs);
void cuda_session_reset(cuda_session *cs);
/* Same contract as sala_session_eval; pos is the session's position before the call. */
sala_status cuda_session_eval(cuda_session *cs, int64_t pos, const int32_t *ids, int64_t n, int which,
                              float *logits, int (*progress)(void *, int64_t, int64_t), void *ud);

#endif
