/* cuda_off.c — the CUDA backend's entry points in a build without CUDA: each says how to get one. */
#ifndef SALA_CUDA
#include "cuda/backend.h"
#include "util.h"

static sala_status no_cuda(void) {
    return sala_set_error(SALA_ERR_UNSUPPORTED, "this sala was built without CUDA. HINT: rebuild with `make CUDA=1` "
                          "on a machine with the CUDA toolkit, or use --device cpu");
}
sala_status cuda_model_new(const struct sala_model *m, const sala_model_params *p, cuda_model **out) {
    (void)m, (void)p;
    *out = NULL;
    return no_cuda();
}
void cuda_model_free(cuda_model *cm) { (void)cm; }
sala_status cuda_session_new(cuda_model *cm, int64_t n_ctx, int chunk, int64_t mem_limit, cuda_session **out) {
    (void)cm, (void)n_ctx, (void)chunk, (void)mem_limit;
    *out = NULL;
    return no_cuda();
}
void cuda_session_free(cuda_session *cs) { (void)cs; }
void cuda_session_reset(cuda_session *cs) { (void)cs; }
sala_status cuda_session_eval(cuda_session *cs, int64_t pos, const int32_t *ids, int64_t n, int which, float *logits,
                              int (*progress)(void *, int64_t, int64_t), void *ud) {
    (void)cs, (void)pos, (void)ids, (void)n, (void)which, (void)logits, (void)progress, (void)ud;
    return no_cuda();
}
#else
typedef int sala_cuda_off_unused;
#endif
