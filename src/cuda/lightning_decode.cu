/* lightning_decode.cu — Lightning attention by the plain recurrence, for decode steps (a few tokens):
 *     S ← λS + k_tᵀ v_t ;  o_t = s · q_t S          (MODEL.md §3; the current token is included)
 * One block per (head, 32 value columns); each thread keeps hd/RG rows of one column of S in registers,
 * the column's dot product with q is reduced across the row groups in shared memory. The state is read
 * and written once per call: the whole cost of a decode step is moving S (64 KiB per head).
 *
 * The fused one-row form (cu_lightning_decode_fused, the decode step's) also does the per-head q/k RMSNorm
 * and RoPE of cu_qknorm_rope (same formulas, same order) in shared memory, so that kernel is not
 * launched; it loads its part of S before pdl_wait(): only this kernel touches the layer's state. Its PDL
 * trigger comes first (decode_knobs.h, SALA_DEC_TRIG), so the o_proj GEMV after it starts loading weights
 * while this kernel waits for the projection and computes. */
#include "cuda/common.cuh"
#include "cuda/decode_knobs.h"
#include "cuda/pdl.cuh"

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
__global__ void __launch_bounds__(256) k_lightning_decode1(float *o, const float *q, const float *k, const float *v,
                                                           float *state, const double *lambda, float s,
                                                           const float *qw, const float *kw, float eps, int do_norm,
                                                           const float *inv_freq, int64_t pos0, const int64_t *dpos,
                                                           int do_rope, int trig0) {
    constexpr int CW = D < 32 ? D : 32, RG = 256 / CW, RPT = D / RG > 0 ? D / RG : 1, HALF = D / 2;
    __shared__ float red[RG][CW];
    __shared__ float qk[2][D];       /* prepared q, k of the head */
    __shared__ double cs[HALF][2];   /* cos, sin */
    const int h = blockIdx.y, c = threadIdx.x % CW, rg = threadIdx.x / CW;
    const int col = blockIdx.x * CW + c;
    const bool active = rg * RPT < D;
    float *Sg = state + (int64_t)h * D * D; /* [D][D] */
    if (trig0) pdl_trigger(); /* o_proj's blocks may start loading weights now (decode_knobs.h) */
    float S[RPT];
#pragma unroll
    for (int a = 0; a < RPT; a++) S[a] = active ? Sg[(int64_t)(rg * RPT + a) * D + col] : 0.f;
    const float lam = (float)lambda[h];
    /* the rotation's cos/sin before the wait too: the position is written by a copy before the step's first
     * kernel (session.cu) and inv_freq is a weight, neither by an earlier kernel of the step */
    if (do_rope) {
        const int64_t pos = dpos ? __ldcg(dpos) : pos0;
        for (int i = threadIdx.x; i < HALF; i += blockDim.x) {
            float p = (float)pos;
            float ang = p * inv_freq[i];
            cs[i][0] = cos((double)ang);
            cs[i][1] = sin((double)ang);
        }
    }
    pdl_wait();
    __syncthreads();
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (warp < 2) { /* warp 0: q, warp 1: k (as k_qknorm_rope does per head) */
        const float *src = (warp ? k : q) + (int64_t)h * D;
        const float *w = warp ? kw : qw;
        float inv = 1.0f;
        if (do_norm) {
            double ss = 0;
            for (int i = lane; i < D; i += 32) ss += (double)src[i] * src[i];
            ss = warp_sum_d(ss);
            inv = (float)(1.0 / sqrt(ss / D + eps));
        }
        for (int i = lane; i < HALF; i += 32) {
            float a = src[i], b = src[i + HALF];
            if (do_norm) {
                a = a * inv * w[i];
                b = b * inv * w[i + HALF];
            }
            if (do_rope) {
                double cc = cs[i][0], sn = cs[i][1];
                qk[warp][i] = (float)((double)a * cc - (double)b * sn);
                qk[warp][i + HALF] = (float)((double)b * cc + (double)a * sn);
            } else {
                qk[warp][i] = a;
                qk[warp][i + HALF] = b;
            }
        }
    }
    const float vt = v[(int64_t)h * D + col];
    __syncthreads();
    if (!trig0) pdl_trigger();
    float part = 0.f;
    if (active)
#pragma unroll
        for (int a = 0; a < RPT; a++) {
            int d = rg * RPT + a;
            S[a] = lam * S[a] + qk[1][d] * vt;
            part = fmaf(qk[0][d], S[a], part);
        }
    red[rg][c] = part;
    __syncthreads();
    if (rg == 0) {
        float acc = 0.f;
        for (int g = 0; g < RG; g++) acc += red[g][c];
        o[(int64_t)h * D + col] = s * acc;
    }
    if (active)
#pragma unroll
        for (int a = 0; a < RPT; a++) Sg[(int64_t)(rg * RPT + a) * D + col] = S[a];
}

/* PDL trigger at the top of k_lightning_decode1 (decode_knobs.h; -1: not read yet) */
static int lt_trig0 = -1;

extern "C" void cu_lightning_trig_early(int on) { lt_trig0 = on ? 1 : 0; }

extern "C" int cu_dec_trig_mask(void) {
    static int mask = -1;
    if (mask < 0) {
        const char *e = getenv("SALA_DEC_TRIG");
        mask = e && *e ? (atoi(e) & 7) : 1;
    }
    return mask;
}

template <int D>
static int launch_decode1(cudaStream_t st, float *o, const float *q, const float *k, const float *v, float *state,
                          const double *lambda, float s, int nh, const float *qw, const float *kw, float eps,
                          int do_norm, const float *inv_freq, int64_t pos0, const int64_t *dpos, int do_rope) {
    constexpr int CW = D < 32 ? D : 32;
    if (lt_trig0 < 0) lt_trig0 = cu_dec_trig_mask() & 1;
    int e = pdl_launch(PDL_LIGHT, k_lightning_decode1<D>, dim3(D / CW, nh), dim3(256), 0, st, o, q, k, v, state, lambda, s, qw,
                       kw, eps, do_norm, inv_freq, pos0, dpos, do_rope, lt_trig0);
    return e ? e : LAUNCH_CHECK();
}

extern "C" int cu_lightning_decode_fused(void *stream, float *o, const float *q, const float *k, const float *v,
                                         float *state, const double *lambda, float s, int nh, int hd, const float *qw,
                                         const float *kw, float eps, int do_norm, const float *inv_freq, int64_t pos0,
                                         const int64_t *dpos, int do_rope) {
    cudaStream_t st = (cudaStream_t)stream;
    switch (hd) {
    case 16: return launch_decode1<16>(st, o, q, k, v, state, lambda, s, nh, qw, kw, eps, do_norm, inv_freq, pos0, dpos, do_rope);
    case 32: return launch_decode1<32>(st, o, q, k, v, state, lambda, s, nh, qw, kw, eps, do_norm, inv_freq, pos0, dpos, do_rope);
    case 64: return launch_decode1<64>(st, o, q, k, v, state, lambda, s, nh, qw, kw, eps, do_norm, inv_freq, pos0, dpos, do_rope);
    case 128: return launch_decode1<128>(st, o, q, k, v, state, lambda, s, nh, qw, kw, eps, do_norm, inv_freq, pos0, dpos, do_rope);
    default: return (int)cudaErrorInvalidValue;
    }
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
