/* attn_internal.cuh — host-side helpers shared by the attention launchers (C++ only). */
#ifndef SALA_CUDA_ATTN_INTERNAL_CUH
#define SALA_CUDA_ATTN_INTERNAL_CUH
#include <cuda_runtime.h>
#include <stdint.h>
int attn_combine(cudaStream_t st, float *out, int64_t ldo, const float *part, int nsplit, int64_t nvec, int nh, int hd);
int attn_pick_split(int64_t blocks, int64_t ntiles, int64_t nvec, int hd, int64_t scratch_floats);
#endif
