/* swiglu.cu — h = silu(g) ⊙ u from the fused gate|up GEMM output gu[rows, 2I] (g = gu[:, :I], u = gu[:, I:]).
 * Same formula as op_swiglu: g / (1 + exp(-g)) · u. */
#include "cuda/common.cuh"

template <class HT> __global__ void k_swiglu(HT *h, const float *gu, int64_t rows, int I) {
    int64_t n = rows * I;
    for (int64_t e = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; e < n; e += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = e / I, i = e % I;
        float g = gu[r * 2 * I + i], u = gu[r * 2 * I + I + i];
        h[e] = from_f32<HT>(g / (1.0f + expf(-g)) * u);
    }
}

extern "C" int cu_swiglu(void *st, void *h, cu_dtype ht, const float *gu, int64_t rows, int I) {
    int64_t n = rows * I;
    if (n <= 0) return 0;
    int blocks = (int)((n + 255) / 256 < 65536 ? (n + 255) / 256 : 65536);
    if (ht == CU_BF16)
        k_swiglu<bf16><<<blocks, 256, 0, (cudaStream_t)st>>>((bf16 *)h, gu, rows, I);
    else
        k_swiglu<float><<<blocks, 256, 0, (cudaStream_t)st>>>((float *)h, gu, rows, I);
    return LAUNCH_CHECK();
}
