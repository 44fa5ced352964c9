/* lightning_decode.cu — Lightning attention by the plain recurrence, for decode steps (a few tokens):
 *     S ← λS + k_tᵀ v_t ;  o_t = s · q_t S          (MODEL.md §3; the current token is included)
 * One block per (head, 32 value columns); each thread keeps hd/RG rows of one column of S in registers,
 * the column's dot product with q is reduced across the row groups in shared memory. The state is read
 * and written once per call: the whole cost of a decode step is moving S (64 KiB per head). */
#include "cuda/common.cuh"

template <int D>
__global__ void __launch_bounds__(256) k_lightning_decode(float *o, int64_t ldo, const float *q, const float *k,
                                                          const float *v, int64_t ld, float *state,
                                                          const double *lambda, float s, int64_t T) {
    constexpr int CW = D < 32 ? D : 32;  /* columns per block */
    constexpr int RG = 256 / CW;         /* row groups */
    constexpr int RPT = D / RG > 0 ? D / RG : 1; /* rows per thread */
    __shared__ float red[RG][CW];
    const int h = blockIdx.y, c = threadIdx.x % CW, rg = threadIdx.x / CW;
    const int col = blockIdx.x * CW + c;
    const bool active = rg * RPT < D;
    float *Sg = state + (int64_t)h * D * D; /* [D][D] */
    float S[RPT];
#pragma unroll
    for (int a = 0; a < RPT; a++) S[a] = active ? Sg[(int64_t)(rg * RPT + a) * D + col] : 0.f;
    const float lam = (float)lambda[h];
    for (int64_t t = 0; t < T; t++) {
        const float *qt = q + t * ld + (int64_t)h * D, *kt = k + t * ld + (int64_t)h * D;
        const float vt = v[t * ld + (int64_t)h * D + col];
        float part = 0.f;
        if (active)
#pragma unroll
            for (int a = 0; a < RPT; a++) {
                int d = rg * RPT + a;
                S[a] = lam * S[a] + kt[d] * vt;
                part = fmaf(qt[d], S[a], part);
            }
        red[rg][c] = part;
        __syncthreads();
        if (rg == 0) {
            float acc = 0.f;
            for (int g = 0; g < RG; g++) acc += red[g][c];
            o[t * ldo + (int64_t)h * D + col] = s * acc;
        }
        __syncthreads();
    }
    if (active)
#pragma unroll
        for (int a = 0; a < RPT; a++) Sg[(int64_t)(rg * RPT + a) * D + col] = S[a];
}

template <int D>
static int launch_decode(cudaStream_t st, float *o, int64_t ldo, const float *q, const float *k, const float *v,
                         int64_t ld, float *state, const double *lambda, float s, int64_t T, int nh) {
    constexpr int CW = D < 32 ? D : 32;
    dim3 grid(D / CW, nh);
    k_lightning_decode<D><<<grid, 256, 0, st>>>(o, ldo, q, k, v, ld, state, lambda, s, T);
    return LAUNCH_CHECK();
}

extern "C" int cu_lightning_decode(void *stream, float *o, int64_t ldo, const float *q, const float *k, const float *v,
                                   int64_t ld, float *state, const double *lambda, float s, int64_t T, int nh, int hd) {
    cudaStream_t st = (cudaStream_t)stream;
    if (T <= 0) return 0;
    switch (hd) {
    case 16: return launch_decode<16>(st, o, ldo, q, k, v, ld, state, lambda, s, T, nh);
    case 32: return launch_decode<32>(st, o, ldo, q, k, v, ld, state, lambda, s, T, nh);
    case 64: return launch_decode<64>(st, o, ldo, q, k, v, ld, state, lambda, s, T, nh);
    case 128: return launch_decode<128>(st, o, ldo, q, k, v, ld, state, lambda, s, T, nh);
    default: return (int)cudaErrorInvalidValue;
    }
}
