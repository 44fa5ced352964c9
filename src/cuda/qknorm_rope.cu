/* qknorm_rope.cu — Lightning layers' q/k preparation, in place: per-head RMSNorm (q_norm / k_norm) and
 * then rotate-half RoPE at absolute positions (MODEL.md §3; angles as the official code: the fp32 product
 * pos · inv_freq_i, cos/sin of it in double). One block per (row, 8 heads), one warp per head: the row's
 * hd/2 cos/sin pairs are computed in shared memory and shared by the block's heads. (Eight heads per block
 * rather than the whole row keeps a decode step — one row — spread over the GPU.) With dpos != NULL the
 * first position is read from device memory, so a captured CUDA graph can replay the launch at any position. */
#include "cuda/common.cuh"

__global__ void k_qknorm_rope(float *qk, int64_t ld, int nheads, int nq, int hd, const float *qw, const float *kw,
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
        float *v = qk + t * ld + (int64_t)h * hd; /* [hd] */
        const float *w = h < nq ? qw : kw;
        float inv = 1.0f;
        if (do_norm) {
            double ss = 0;
            for (int i = lane; i < hd; i += 32) ss += (double)v[i] * v[i];
            ss = warp_sum_d(ss);
            inv = (float)(1.0 / sqrt(ss / hd + eps));
        }
        for (int i = lane; i < half; i += 32) {
            float a = v[i], b = v[i + half];
            if (do_norm) {
                a = a * inv * w[i];
                b = b * inv * w[i + half];
            }
            if (do_rope) {
                double c = cs[2 * i], s = cs[2 * i + 1];
                v[i] = (float)((double)a * c - (double)b * s);
                v[i + half] = (float)((double)b * c + (double)a * s);
            } else {
                v[i] = a;
                v[i + half] = b;
            }
        }
    }
}

extern "C" int cu_qknorm_rope_dev(void *st, float *qk, int64_t ld, int64_t T, int nheads, int nq, int hd,
                                  const float *qw, const float *kw, float eps, int do_norm, const float *inv_freq,
                                  int64_t pos0, const int64_t *dpos, int do_rope) {
    if (T <= 0 || (!do_norm && !do_rope)) return 0;
    size_t smem = sizeof(double) * (size_t)hd;
    dim3 grid((unsigned)T, (unsigned)((nheads + 7) / 8));
    k_qknorm_rope<<<grid, 256, smem, (cudaStream_t)st>>>(qk, ld, nheads, nq, hd, qw, kw, eps, do_norm, inv_freq,
                                                                 pos0, dpos, do_rope);
    return LAUNCH_CHECK();
}

extern "C" int cu_qknorm_rope(void *st, float *qk, int64_t ld, int64_t T, int nheads, int nq, int hd, const float *qw,
                              const float *kw, float eps, int do_norm, const float *inv_freq, int64_t pos0,
                              int do_rope) {
    return cu_qknorm_rope_dev(st, qk, ld, T, nheads, nq, hd, qw, kw, eps, do_norm, inv_freq, pos0, NULL, do_rope);
}
