/* qknorm_rope.cu — Lightning layers' q/k preparation, in place: per-head RMSNorm (q_norm / k_norm) and
 * then rotate-half RoPE at absolute positions (MODEL.md §3; angles as the official code: the fp32 product
 * pos · inv_freq_i, cos/sin of it in double). One block per (row, 8 heads), one warp per head: the row's
 * hd/2 cos/sin pairs are computed in shared memory and shared by the block's heads. (Eight heads per block
 * rather than the whole row keeps a decode step — one row — spread over the GPU.) With dpos != NULL the
 * first position is read from device memory, so a captured CUDA graph can replay the launch at any position.
 * qk is fp32, or bf16 (the bf16-output projection GEMM of a prefill chunk): the math is the same, in fp32 and
 * double, and the result is rounded to bf16 once when stored. */
#include "cuda/common.cuh"
#include "cuda/pdl.cuh"

template <class QT>
__global__ void k_qknorm_rope(QT *qk, int64_t ld, int nheads, int nq, int hd, const float *qw, const float *kw,
                              float eps, int do_norm, const float *inv_freq, int64_t pos0, const int64_t *dpos,
                              int do_rope) {
    extern __shared__ double cs[]; /* [hd/2][2] cos, sin */
    int64_t t = blockIdx.x;
    if (dpos) pos0 = *dpos; /* graph replay: the position lives on the device */
    int half = hd / 2, lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    if (do_rope)
        for (int i = threadIdx.x; i < half; i += blockDim.x) {
            float p = (float)(pos0 + t);
            float ang = p * inv_freq[i];
            cs[2 * i] = cos((double)ang);
            cs[2 * i + 1] = sin((double)ang);
        }
    __syncthreads();
    for (int h = blockIdx.y * nw + warp; h < nheads && h < (int)(blockIdx.y + 1) * nw; h += nw) {
        QT *v = qk + t * ld + (int64_t)h * hd; /* [hd] */
        const float *w = h < nq ? qw : kw;
        float inv = 1.0f;
        if (do_norm) {
            double ss = 0;
            for (int i = lane; i < hd; i += 32) {
                const double x = to_f32(v[i]);
                ss += x * x;
            }
            ss = warp_sum_d(ss);
            inv = (float)(1.0 / sqrt(ss / hd + eps));
        }
        for (int i = lane; i < half; i += 32) {
            float a = to_f32(v[i]), b = to_f32(v[i + half]);
            if (do_norm) {
                a = a * inv * w[i];
                b = b * inv * w[i + half];
            }
            if (do_rope) {
                double c = cs[2 * i], s = cs[2 * i + 1];
                v[i] = from_f32<QT>((float)((double)a * c - (double)b * s));
                v[i + half] = from_f32<QT>((float)((double)b * c + (double)a * s));
            } else {
                v[i] = from_f32<QT>(a);
                v[i + half] = from_f32<QT>(b);
            }
        }
    }
}

/* hd = 128: each lane holds four consecutive elements of a head (one 8- or 16-byte load and store): lanes
 * 0..15 the first half, lanes 16..31 the second, so a lane's rotate-half partners sit in lane ^ 16. A warp
 * loads NB = 4 heads before it works on any of them, to keep loads in flight, and lane j of the warp takes
 * the double-precision sqrt and division of head j's norm (not every lane of every head). The rotation
 * a·c ∓ b·s is evaluated in float-float (c and s split into float high and low parts, products made exact
 * by FMA, the sum by two-sum): within ≈ 2⁻⁴⁷ of the double value k_qknorm_rope rounds, so the float result is
 * the same except when the exact value lies that close to a rounding boundary. Same sum of squares in
 * double (other order). Everything else as k_qknorm_rope. */
template <class QT>
__global__ void k_qknorm_rope128(QT *qk, int64_t ld, int nheads, int nq, int hpb, const float *qw, const float *kw,
                                 float eps, int do_norm, const float *inv_freq, int64_t pos0, const int64_t *dpos,
                                 int do_rope) {
    enum { HD = 128, NB = 4 };
    __shared__ double cs[HD]; /* [HD/2][2] cos, sin */
    const int64_t t = blockIdx.x;
    if (dpos) pos0 = *dpos;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    if (do_rope)
        for (int i = threadIdx.x; i < HD / 2; i += blockDim.x) {
            float p = (float)(pos0 + t);
            float ang = p * inv_freq[i];
            cs[2 * i] = cos((double)ang);
            cs[2 * i + 1] = sin((double)ang);
        }
    __syncthreads();
    const int h1 = min(nheads, (int)(blockIdx.y + 1) * hpb), i0 = 4 * (lane & 15), c0 = 4 * lane;
    /* this lane's cos and ±sin (first half: a·c − b·s, second half: own·c + partner·s) as float pairs */
    float ch[4], cl[4], sh[4], sl[4];
    if (do_rope)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const double c = cs[2 * (i0 + e)], sn = lane < 16 ? -cs[2 * (i0 + e) + 1] : cs[2 * (i0 + e) + 1];
            ch[e] = (float)c, cl[e] = (float)(c - (double)ch[e]);
            sh[e] = (float)sn, sl[e] = (float)(sn - (double)sh[e]);
        }
    float4 gq = make_float4(1, 1, 1, 1), gk = gq;
    if (do_norm) gq = load4(qw + c0), gk = load4(kw + c0);
    pdl_wait(); /* the angles and weights above need nothing an earlier kernel writes */
    pdl_trigger();
    for (int hb = blockIdx.y * hpb + warp * NB; hb < h1; hb += nw * NB) {
        float4 x[NB];
#pragma unroll
        for (int j = 0; j < NB; j++)
            x[j] = hb + j < h1 ? load4(qk + t * ld + (int64_t)(hb + j) * HD + c0) : make_float4(0, 0, 0, 0);
        float inv[NB];
        if (do_norm) {
            double ss[NB];
#pragma unroll
            for (int j = 0; j < NB; j++)
                ss[j] = warp_sum_d((double)x[j].x * x[j].x + (double)x[j].y * x[j].y + (double)x[j].z * x[j].z +
                                   (double)x[j].w * x[j].w);
            const int m = lane & (NB - 1);
            const double my = m == 0 ? ss[0] : m == 1 ? ss[1] : m == 2 ? ss[2] : ss[3];
            const float iv = (float)(1.0 / sqrt(my / HD + eps));
#pragma unroll
            for (int j = 0; j < NB; j++) inv[j] = __shfl_sync(0xffffffffu, iv, j);
        }
#pragma unroll
        for (int j = 0; j < NB; j++) {
            const int h = hb + j;
            if (h >= h1) break;
            float4 a = x[j];
            if (do_norm) {
                const float4 g = h < nq ? gq : gk;
                a = make_float4(a.x * inv[j] * g.x, a.y * inv[j] * g.y, a.z * inv[j] * g.z, a.w * inv[j] * g.w);
            }
            if (do_rope) {
                float av[4] = {a.x, a.y, a.z, a.w}, o[4];
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const float b = __shfl_xor_sync(0xffffffffu, av[e], 16); /* the partner half */
                    /* _rn intrinsics: never contracted into FMAs, which would break the exact-error steps */
                    const float p = __fmul_rn(av[e], ch[e]), pe = fmaf(av[e], ch[e], -p);
                    const float q = __fmul_rn(b, sh[e]), qe = fmaf(b, sh[e], -q);
                    const float hi = __fadd_rn(p, q), bb = __fsub_rn(hi, p);
                    const float err = __fadd_rn(__fsub_rn(p, __fsub_rn(hi, bb)), __fsub_rn(q, bb));
                    const float lo = fmaf(av[e], cl[e], fmaf(b, sl[e], pe + qe + err));
                    o[e] = __fadd_rn(hi, lo);
                }
                a = make_float4(o[0], o[1], o[2], o[3]);
            }
            store4(qk + t * ld + (int64_t)h * HD + c0, a);
        }
    }
}

extern "C" int cu_qknorm_rope_dev(void *st, void *qk, cu_dtype qt, int64_t ld, int64_t T, int nheads, int nq, int hd,
                                  const float *qw, const float *kw, float eps, int do_norm, const float *inv_freq,
                                  int64_t pos0, const int64_t *dpos, int do_rope) {
    if (T <= 0 || (!do_norm && !do_rope)) return 0;
    const int es = qt == CU_BF16 ? 2 : 4;
    if (hd == 128 && ld % 4 == 0 && align_of(qk) >= 4 * es && (!do_norm || (align_of(qw) >= 16 && align_of(kw) >= 16))) {
        /* a prefill chunk: one block per row (the cos/sin table once per row); a few rows: 8 heads per block */
        const int hpb = T >= 256 ? nheads : 8;
        dim3 grid((unsigned)T, (unsigned)((nheads + hpb - 1) / hpb));
        /* a replayable decode launch (dpos) goes with PDL, as the decode GEMV before it and the InfLLM-v2 chain
         * after it: it starts during the projection's tail and computes its angles before pdl_wait() */
        const int kind = dpos ? PDL_CHAIN : 0;
        int e = qt == CU_BF16 ? pdl_launch(kind, k_qknorm_rope128<bf16>, grid, dim3(256), 0, (cudaStream_t)st, (bf16 *)qk, ld,
                                           nheads, nq, hpb, qw, kw, eps, do_norm, inv_freq, pos0, dpos, do_rope)
                              : pdl_launch(kind, k_qknorm_rope128<float>, grid, dim3(256), 0, (cudaStream_t)st, (float *)qk,
                                           ld, nheads, nq, hpb, qw, kw, eps, do_norm, inv_freq, pos0, dpos, do_rope);
        return e ? e : LAUNCH_CHECK();
    }
    size_t smem = sizeof(double) * (size_t)hd;
    dim3 grid((unsigned)T, (unsigned)((nheads + 7) / 8));
    if (qt == CU_BF16)
        k_qknorm_rope<bf16><<<grid, 256, smem, (cudaStream_t)st>>>((bf16 *)qk, ld, nheads, nq, hd, qw, kw, eps, do_norm,
                                                                   inv_freq, pos0, dpos, do_rope);
    else
        k_qknorm_rope<float><<<grid, 256, smem, (cudaStream_t)st>>>((float *)qk, ld, nheads, nq, hd, qw, kw, eps,
                                                                    do_norm, inv_freq, pos0, dpos, do_rope);
    return LAUNCH_CHECK();
}

extern "C" int cu_qknorm_rope(void *st, float *qk, int64_t ld, int64_t T, int nheads, int nq, int hd, const float *qw,
                              const float *kw, float eps, int do_norm, const float *inv_freq, int64_t pos0,
                              int do_rope) {
    return cu_qknorm_rope_dev(st, qk, CU_F32, ld, T, nheads, nq, hd, qw, kw, eps, do_norm, inv_freq, pos0, NULL, do_rope);
}
