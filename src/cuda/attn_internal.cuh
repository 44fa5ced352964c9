/* attn_internal.cuh — host-side helpers shared by the attention launchers (C++ only). */
#ifndef SALA_CUDA_ATTN_INTERNAL_CUH
#define SALA_CUDA_ATTN_INTERNAL_CUH
#include <cuda_runtime.h>
#include <stdint.h>
int attn_combine(cudaStream_t st, float *out, int64_t ldo, const float *part, int nsplit, int64_t nvec, int nh, int hd);
/* tensor-core attention over a bf16 cache (attn_mma.cu): dense causal, or block-sparse with blocks/nsel */
int attn_mma(cudaStream_t st, int sparse, float *o, int64_t ldo, const float *q, int64_t ldq, const void *K,
             const void *V, const int32_t *blocks, const int32_t *nsel, int64_t T, int64_t pos0, int nh, int nkv,
             int hd, int budget, float scale, float *scratch, int64_t scratch_floats);
int attn_pick_split(int64_t blocks, int64_t ntiles, int64_t nvec, int hd, int64_t scratch_floats);
#endif
