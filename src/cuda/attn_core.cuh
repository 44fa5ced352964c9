/* attn_core.cuh — the tile machinery shared by the attention-like kernels (dense and block-sparse
 * attention, InfLLM-v2's LSE and stage-1 scores). Device code only.
 *
 * A block of 256 threads holds M = 16·RM query vectors (fp32, shared memory, row pitch HD+4) and
 * streams key tiles of 64 rows through one shared buffer (K, then V of the same keys). Thread
 * (tm = tid/16, tn = tid%16) owns query rows m = tm·RM + i and keys n = tn + 16·j of each tile, and
 * output columns c = tn + 16·cc: the 16 lanes sharing a row reduce with xor-shuffles inside their half
 * warp. Softmax is the online (flash) form in fp32 with accurate expf; masked scores are −inf and
 * contribute exactly 0.
 *
 * Split-KV: when a launch has too few query tiles to fill the GPU (decode), the key range is cut into
 * nsplit parts; each writes (m, l, unnormalised o) to a scratch area and attn_combine merges them. */
#ifndef SALA_CUDA_ATTN_CORE_CUH
#define SALA_CUDA_ATTN_CORE_CUH

#include "cuda/common.cuh"

#define ATT_BK 64

template <int HD, int RM> struct att_shape {
    static constexpr int M = 16 * RM;  /* query vectors per block */
    static constexpr int QP = HD + 4;  /* row pitch of Qs and KVs */
    static constexpr int PP = ATT_BK + 1;
    static constexpr int CPT = HD / 16; /* output columns per thread */
    /* floats of shared memory: Qs [M][QP], KVs [64][QP], Ps [M][PP] */
    static constexpr int SMEM_FLOATS = M * QP + ATT_BK * QP + M * PP;
};

/* rows [0, 64) of dst (pitch QP) = src rows first .. first+63 (row stride `stride` elements, HD used);
 * rows at or past `limit` are zero */
template <int HD, class KT>
static __device__ __forceinline__ void att_load_rows(float *dst, const KT *src, int64_t stride, int64_t first,
                                                     int64_t limit) {
    constexpr int QP = HD + 4;
    for (int e = threadIdx.x; e < ATT_BK * HD; e += 256) {
        int n = e / HD, d = e % HD;
        int64_t r = first + n;
        dst[n * QP + d] = r < limit ? to_f32(src[r * stride + d]) : 0.f;
    }
}

/* raw dot products of this thread's RM query rows with its 4 keys */
template <int HD, int RM>
static __device__ __forceinline__ void att_dots(const float *Qs, const float *Ks, float acc[RM][4]) {
    constexpr int QP = HD + 4;
    const int tm = threadIdx.x / 16, tn = threadIdx.x % 16;
#pragma unroll
    for (int i = 0; i < RM; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = 0.f;
#pragma unroll 4
    for (int d = 0; d < HD; d += 4) {
        float4 qa[RM], kb[4];
#pragma unroll
        for (int i = 0; i < RM; i++) qa[i] = *(const float4 *)&Qs[(tm * RM + i) * QP + d];
#pragma unroll
        for (int j = 0; j < 4; j++) kb[j] = *(const float4 *)&Ks[(tn + 16 * j) * QP + d];
#pragma unroll
        for (int i = 0; i < RM; i++)
#pragma unroll
            for (int j = 0; j < 4; j++) {
                acc[i][j] = fmaf(qa[i].x, kb[j].x, acc[i][j]);
                acc[i][j] = fmaf(qa[i].y, kb[j].y, acc[i][j]);
                acc[i][j] = fmaf(qa[i].z, kb[j].z, acc[i][j]);
                acc[i][j] = fmaf(qa[i].w, kb[j].w, acc[i][j]);
            }
    }
}

static __device__ __forceinline__ float half_warp_max(float v) {
    for (int o = 8; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
static __device__ __forceinline__ float half_warp_sum(float v) {
    for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* Online-softmax state of one thread's RM rows (replicated over the row's 16 lanes). */
template <int HD, int RM> struct att_state {
    float m[RM], l[RM], o[RM][HD / 16];
    __device__ void init() {
#pragma unroll
        for (int i = 0; i < RM; i++) {
            m[i] = -INFINITY;
            l[i] = 0.f;
#pragma unroll
            for (int c = 0; c < HD / 16; c++) o[i][c] = 0.f;
        }
    }
    /* scores (already scaled, −inf where masked) of the current tile: update m, l, rescale o, write the
     * probabilities to Ps (when with_v) */
    __device__ void softmax_step(float sc[RM][4], float *Ps, bool with_v) {
        constexpr int PP = ATT_BK + 1;
        const int tm = threadIdx.x / 16, tn = threadIdx.x % 16;
#pragma unroll
        for (int i = 0; i < RM; i++) {
            float mx = fmaxf(fmaxf(sc[i][0], sc[i][1]), fmaxf(sc[i][2], sc[i][3]));
            mx = half_warp_max(mx);
            float mnew = fmaxf(m[i], mx);
            float alpha = 1.f, p[4] = {0.f, 0.f, 0.f, 0.f};
            if (mnew != -INFINITY) {
                alpha = m[i] == -INFINITY ? 0.f : expf(m[i] - mnew);
#pragma unroll
                for (int j = 0; j < 4; j++) p[j] = sc[i][j] == -INFINITY ? 0.f : expf(sc[i][j] - mnew);
            }
            float ps = half_warp_sum((p[0] + p[1]) + (p[2] + p[3]));
            l[i] = l[i] * alpha + ps;
            m[i] = mnew;
            if (with_v) {
#pragma unroll
                for (int c = 0; c < HD / 16; c++) o[i][c] *= alpha;
#pragma unroll
                for (int j = 0; j < 4; j++) Ps[(tm * RM + i) * PP + tn + 16 * j] = p[j];
            }
        }
    }
    /* o += P · V for the tile in Vs */
    __device__ void pv(const float *Ps, const float *Vs) {
        constexpr int PP = ATT_BK + 1, QP = HD + 4;
        const int tm = threadIdx.x / 16, tn = threadIdx.x % 16;
#pragma unroll 4
        for (int n = 0; n < ATT_BK; n++) {
            float pr[RM];
#pragma unroll
            for (int i = 0; i < RM; i++) pr[i] = Ps[(tm * RM + i) * PP + n];
#pragma unroll
            for (int c = 0; c < HD / 16; c++) {
                float vv = Vs[n * QP + tn + 16 * c];
#pragma unroll
                for (int i = 0; i < RM; i++) o[i][c] = fmaf(pr[i], vv, o[i][c]);
            }
        }
    }
};

/* Split-KV partial record of one query vector: [m, l, o[HD]] (o unnormalised). */
template <int HD>
static __device__ __forceinline__ void att_write_partial(float *rec, float m, float l, const float *o_cols, int tn) {
    if (tn == 0) {
        rec[0] = m;
        rec[1] = l;
    }
#pragma unroll
    for (int c = 0; c < HD / 16; c++) rec[2 + tn + 16 * c] = o_cols[c];
}

#endif
