/* rmsnorm.cu — y = x / sqrt(mean(x²) + eps) ⊙ w / div, one block per row.
 *
 * The residual stream x stays fp32 in both precisions; y is the next GEMM's operand (fp32 in the exact
 * mode, bf16 otherwise). The residual scaling r = scale_depth/sqrt(L) is fused into the GEMM that
 * adds each branch back (alpha = r, beta = 1 in cu_gemm_run), so this kernel only normalises; `div` is
 * the final norm's µP divisor hidden/dim_model_base (1 elsewhere). The sum of squares is accumulated in
 * double like the CPU reference, so both round the same inverse norm. */
#include "cuda/common.cuh"

template <class YT>
__global__ void k_rmsnorm(YT *y, int64_t ldy, const float *x, int64_t ldx, const float *w, int D, float eps, float div) {
    int64_t r = blockIdx.x;
    const float *xr = x + r * ldx; /* [D] */
    double ss = 0;
    for (int i = threadIdx.x; i < D; i += blockDim.x) ss += (double)xr[i] * xr[i];
    ss = block_sum_d(ss);
    float inv = (float)(1.0 / sqrt(ss / D + eps));
    YT *yr = y + r * ldy;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float v = xr[i] * inv * w[i];
        if (div != 1.0f) v /= div;
        yr[i] = from_f32<YT>(v);
    }
}

extern "C" int cu_rmsnorm(void *st, void *y, cu_dtype yt, int64_t ldy, const float *x, int64_t ldx, const float *w,
                          int64_t rows, int D, float eps, float div) {
    if (rows <= 0) return 0;
    int threads = D >= 1024 ? 512 : D >= 256 ? 256 : 64;
    if (yt == CU_BF16)
        k_rmsnorm<bf16><<<(unsigned)rows, threads, 0, (cudaStream_t)st>>>((bf16 *)y, ldy, x, ldx, w, D, eps, div);
    else
        k_rmsnorm<float><<<(unsigned)rows, threads, 0, (cudaStream_t)st>>>((float *)y, ldy, x, ldx, w, D, eps, div);
    return LAUNCH_CHECK();
}
