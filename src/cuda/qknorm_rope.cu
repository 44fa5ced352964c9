/* qknorm_rope.cu — Lightning layers' q/k preparation, in place: per-head RMSNorm (q_norm / k_norm) and
 * then rotate-half RoPE at absolute positions (MODEL.md §3; angles as the official code: the fp32 product
 * pos · inv_freq_i, cos/sin of it in double). One block per (row, 8 heads), one warp per head: the row's
 * hd/2 cos/sin pairs are computed in shared memory and shared by the block's heads. (Eight heads per block
 * rather than the whole row keeps a decode step — one row — spread over the GPU.) With dpos != NULL the
 * first position is read from device memory, so a captured CUDA graph can replay the launch at any position.
 * qk is fp32, or bf16 (the bf16-output projection GEMM of a prefill chunk): the math is the same, in fp32 and
 * double, and the result is rounded to bf16 once when stored. */
#include "cuda/common.cuh"

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

extern "C" int cu_qknorm_rope_dev(void *st, void *qk, cu_dtype qt, int64_t ld, int64_t T, int nheads, int nq, int hd,
                                  const float *qw, const float *kw, float eps, int do_norm, const float *inv_freq,
                                  int64_t pos0, const int64_t *dpos, int do_rope) {
    if (T <= 0 || (!do_norm && !do_rope)) return 0;
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
