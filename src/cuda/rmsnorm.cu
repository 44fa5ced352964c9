/* rmsnorm.cu — y = x / sqrt(mean(x²) + eps) ⊙ w / div, one block per row.
 *
 * The residual stream x stays fp32 in both precisions; y is the next GEMM's operand (fp32 in the exact
 * mode, bf16 otherwise). The residual scaling r = scale_depth/sqrt(L) is fused into the GEMM that
 * adds each branch back (alpha = r, beta = 1 in cu_gemm_run), so this kernel only normalises; `div` is
 * the final norm's µP divisor hidden/dim_model_base (1 elsewhere). The sum of squares is accumulated in
 * double like the CPU reference, so both round the same inverse norm. Rows of a multiple of 4 elements
 * with aligned x, w and y are read and written four elements at a time (k_rmsnorm4: the prefill moves
 * 24 bytes per element per call at memory speed; k_rmsnorm_r holds the row in registers when D is a multiple
 * of 512); others one at a time. */
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

/* the same with float4 groups (D % 4 == 0; the second pass reads the row again from L1) */
template <class YT>
__global__ void k_rmsnorm4(YT *y, int64_t ldy, const float *x, int64_t ldx, const float *w, int D, float eps, float div) {
    const int64_t r = blockIdx.x;
    const float *xr = x + r * ldx; /* [D] */
    double ss = 0;
    for (int i = 4 * threadIdx.x; i < D; i += 4 * blockDim.x) {
        const float4 v = load4(xr + i);
        ss += (double)v.x * v.x + (double)v.y * v.y + (double)v.z * v.z + (double)v.w * v.w;
    }
    ss = block_sum_d(ss);
    const float inv = (float)(1.0 / sqrt(ss / D + eps));
    YT *yr = y + r * ldy;
    for (int i = 4 * threadIdx.x; i < D; i += 4 * blockDim.x) {
        const float4 v = load4(xr + i), g = load4(w + i);
        float4 o = make_float4(v.x * inv * g.x, v.y * inv * g.y, v.z * inv * g.z, v.w * inv * g.w);
        if (div != 1.0f) o.x /= div, o.y /= div, o.z /= div, o.w /= div;
        store4(yr + i, o);
    }
}

/* the same with the row held in registers: D = 16 · blockDim.x, each thread four float4 groups loaded before
 * any is used (more bytes in flight, x read once); the sums run in the same order as k_rmsnorm4, so both give
 * the same bits */
template <class YT>
__global__ void k_rmsnorm_r(YT *y, int64_t ldy, const float *x, int64_t ldx, const float *w, float eps, float div) {
    const int64_t r = blockIdx.x;
    const int D = 16 * blockDim.x;
    const float *xr = x + r * ldx; /* [D] */
    float4 v[4];
#pragma unroll
    for (int k = 0; k < 4; k++) v[k] = load4(xr + 4 * (threadIdx.x + k * blockDim.x));
    double ss = 0;
#pragma unroll
    for (int k = 0; k < 4; k++)
        ss += (double)v[k].x * v[k].x + (double)v[k].y * v[k].y + (double)v[k].z * v[k].z + (double)v[k].w * v[k].w;
    ss = block_sum_d(ss);
    const float inv = (float)(1.0 / sqrt(ss / D + eps));
    YT *yr = y + r * ldy;
#pragma unroll
    for (int k = 0; k < 4; k++) {
        const int i = 4 * (threadIdx.x + k * blockDim.x);
        const float4 g = load4(w + i);
        float4 o = make_float4(v[k].x * inv * g.x, v[k].y * inv * g.y, v[k].z * inv * g.z, v[k].w * inv * g.w);
        if (div != 1.0f) o.x /= div, o.y /= div, o.z /= div, o.w /= div;
        store4(yr + i, o);
    }
}

extern "C" int cu_rmsnorm(void *st, void *y, cu_dtype yt, int64_t ldy, const float *x, int64_t ldx, const float *w,
                          int64_t rows, int D, float eps, float div) {
    if (rows <= 0) return 0;
    cudaStream_t s = (cudaStream_t)st;
    const int ys = yt == CU_BF16 ? 2 : 4;
    if (D % 4 == 0 && ldx % 4 == 0 && ldy % 4 == 0 && align_of(x) >= 16 && align_of(w) >= 16 && align_of(y) >= 4 * ys) {
        if (D % 512 == 0 && D <= 16384) { /* 32..1024 threads of 16 elements */
            if (yt == CU_BF16)
                k_rmsnorm_r<bf16><<<(unsigned)rows, D / 16, 0, s>>>((bf16 *)y, ldy, x, ldx, w, eps, div);
            else
                k_rmsnorm_r<float><<<(unsigned)rows, D / 16, 0, s>>>((float *)y, ldy, x, ldx, w, eps, div);
            return LAUNCH_CHECK();
        }
        const int threads = D >= 2048 ? 256 : D >= 512 ? 128 : 32;
        if (yt == CU_BF16)
            k_rmsnorm4<bf16><<<(unsigned)rows, threads, 0, s>>>((bf16 *)y, ldy, x, ldx, w, D, eps, div);
        else
            k_rmsnorm4<float><<<(unsigned)rows, threads, 0, s>>>((float *)y, ldy, x, ldx, w, D, eps, div);
        return LAUNCH_CHECK();
    }
    int threads = D >= 1024 ? 512 : D >= 256 ? 256 : 64;
    if (yt == CU_BF16)
        k_rmsnorm<bf16><<<(unsigned)rows, threads, 0, s>>>((bf16 *)y, ldy, x, ldx, w, D, eps, div);
    else
        k_rmsnorm<float><<<(unsigned)rows, threads, 0, s>>>((float *)y, ldy, x, ldx, w, D, eps, div);
    return LAUNCH_CHECK();
}
