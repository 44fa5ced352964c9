/* mma_core.cuh — tensor-core tiles for the attention-like kernels of the bf16 mode (device code).
 *
 * mma.sync m16n8k16, bf16 operands, fp32 accumulation (sm_80 and later). A warp owns 16 query vectors;
 * key tiles of 64 rows sit in shared memory as bf16 (Ks [64][HD+8]; values transposed, Vt [HD][64+8], so
 * both B operands are read as contiguous bf16 pairs; the +8 padding makes every fragment load conflict-
 * free). Fragment layouts (PTX ISA, m16n8k16): with g = lane/4, t = lane%4,
 *   A (16×16, row): a0 = (g, 2t..2t+1), a1 = (g+8, 2t..), a2 = (g, 2t+8..), a3 = (g+8, 2t+8..)
 *   B (16×8, col):  b0 = (k 2t..2t+1, n g), b1 = (k 2t+8.., n g)
 *   C (16×8):       c0,c1 = (g, 2t..2t+1), c2,c3 = (g+8, 2t..2t+1)
 * so the scores S = Q Kᵀ come out as 8 C tiles of 8 keys, and two of them form the A operand of P·V
 * without leaving registers (the probabilities are rounded to bf16 there, as flash attention does). */
#ifndef SALA_CUDA_MMA_CORE_CUH
#define SALA_CUDA_MMA_CORE_CUH

#include "cuda/common.cuh"

#define MMA_BK 64
#define LOG2E_F 1.4426950408889634f
#define LN2_F 0.6931471805599453f

template <int HD> struct mma_shape {
    static constexpr int QP = HD + 8;     /* pitch (bf16) of Qs and Ks rows */
    static constexpr int VP = MMA_BK + 8; /* pitch of Vt rows */
};

static __device__ __forceinline__ void mma16816(float c[4], const uint32_t a[4], const uint32_t b[2]) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

static __device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t *)&v;
}

/* 8 consecutive elements of a row as bf16 (16 bytes) */
static __device__ __forceinline__ uint4 load8_bf16(const bf16 *p) { return *(const uint4 *)p; }
static __device__ __forceinline__ uint4 load8_bf16(const float *p) {
    float4 a = *(const float4 *)p, b = *(const float4 *)(p + 4);
    uint4 r;
    r.x = pack_bf16(a.x, a.y);
    r.y = pack_bf16(a.z, a.w);
    r.z = pack_bf16(b.x, b.y);
    r.w = pack_bf16(b.z, b.w);
    return r;
}

/* Ks[n][:] = src[(first + n) · stride, :HD] for n < 64 (zero at or past limit), as bf16 */
template <int HD, int NT, class KT>
static __device__ __forceinline__ void mma_load_keys(bf16 *Ks, const KT *src, int64_t stride, int64_t first,
                                                     int64_t limit) {
    constexpr int QP = mma_shape<HD>::QP, CH = HD / 8;
    for (int e = threadIdx.x; e < MMA_BK * CH; e += NT) {
        int n = e / CH, c = (e % CH) * 8;
        int64_t r = first + n;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (r < limit) v = load8_bf16(src + r * stride + c);
        *(uint4 *)&Ks[n * QP + c] = v;
    }
}

/* Vt[d][n] = src[(first + n) · stride + d] (transposed), zero at or past limit */
template <int HD, int NT>
static __device__ __forceinline__ void mma_load_values_t(bf16 *Vt, const bf16 *src, int64_t stride, int64_t first,
                                                         int64_t limit) {
    constexpr int VP = mma_shape<HD>::VP, CH = HD / 8;
    for (int e = threadIdx.x; e < MMA_BK * CH; e += NT) {
        int n = e % MMA_BK, c = (e / MMA_BK) * 8; /* consecutive lanes: consecutive keys, conflict-free stores */
        int64_t r = first + n;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (r < limit) v = load8_bf16(src + r * stride + c);
        const bf16 *h = (const bf16 *)&v;
#pragma unroll
        for (int i = 0; i < 8; i++) Vt[(c + i) * VP + n] = h[i];
    }
}

/* A fragments of the warp's 16 query vectors (rows row0.. of Qs), all HD/16 k-steps */
template <int HD>
static __device__ __forceinline__ void mma_q_frags(const bf16 *Qs, int row0, uint32_t qf[HD / 16][4]) {
    constexpr int QP = mma_shape<HD>::QP;
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++) {
        const bf16 *p0 = Qs + (row0 + g) * QP + kk * 16 + 2 * t, *p1 = p0 + 8 * QP;
        qf[kk][0] = *(const uint32_t *)p0;
        qf[kk][1] = *(const uint32_t *)p1;
        qf[kk][2] = *(const uint32_t *)(p0 + 8);
        qf[kk][3] = *(const uint32_t *)(p1 + 8);
    }
}

/* S[nt] (keys nt·8 ..) = Q Kᵀ for the warp's 16 vectors and the 64 keys in Ks */
template <int HD>
static __device__ __forceinline__ void mma_qk(const uint32_t qf[HD / 16][4], const bf16 *Ks, float S[8][4]) {
    constexpr int QP = mma_shape<HD>::QP;
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int nt = 0; nt < 8; nt++) S[nt][0] = S[nt][1] = S[nt][2] = S[nt][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++)
#pragma unroll
        for (int nt = 0; nt < 8; nt++) {
            const bf16 *kr = Ks + (nt * 8 + g) * QP + kk * 16 + 2 * t;
            uint32_t b[2] = {*(const uint32_t *)kr, *(const uint32_t *)(kr + 8)};
            mma16816(S[nt], qf[kk], b);
        }
}

/* O += P V for the 64 keys of the tile (P in the C layout of mma_qk) */
template <int HD>
static __device__ __forceinline__ void mma_pv(const float P[8][4], const bf16 *Vt, float O[HD / 8][4]) {
    constexpr int VP = mma_shape<HD>::VP;
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int ks = 0; ks < 4; ks++) {
        uint32_t a[4] = {pack_bf16(P[2 * ks][0], P[2 * ks][1]), pack_bf16(P[2 * ks][2], P[2 * ks][3]),
                         pack_bf16(P[2 * ks + 1][0], P[2 * ks + 1][1]), pack_bf16(P[2 * ks + 1][2], P[2 * ks + 1][3])};
#pragma unroll
        for (int dt = 0; dt < HD / 8; dt++) {
            const bf16 *vr = Vt + (dt * 8 + g) * VP + ks * 16 + 2 * t;
            uint32_t b[2] = {*(const uint32_t *)vr, *(const uint32_t *)(vr + 8)};
            mma16816(O[dt], a, b);
        }
    }
}

/* ---- asynchronous copies (cp.async, sm_80+) and ldmatrix ---- */

static __device__ __forceinline__ void cp_async16(void *smem, const void *gmem, bool valid) {
    unsigned sa = (unsigned)__cvta_generic_to_shared(smem);
    int n = valid ? 16 : 0; /* 0: no read, the 16 bytes are zero-filled */
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(sa), "l"(gmem), "r"(n));
}
static __device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> static __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

/* rows [0, 64) of dst (pitch HD+8) = bf16 rows first.. of src (row stride `stride`), zero at or past limit */
template <int HD, int NT>
static __device__ __forceinline__ void mma_async_rows(bf16 *dst, const bf16 *src, int64_t stride, int64_t first,
                                                      int64_t limit) {
    constexpr int QP = mma_shape<HD>::QP, CH = HD / 8;
    for (int e = threadIdx.x; e < MMA_BK * CH; e += NT) {
        int n = e / CH, c = (e % CH) * 8;
        int64_t r = first + n;
        bool v = r < limit;
        cp_async16(dst + n * QP + c, v ? (const void *)(src + r * stride + c) : (const void *)src, v);
    }
}

/* ldmatrix x4: four 8×8 b16 matrices, lanes 8i..8i+7 address the rows of matrix i; plain or transposed,
 * from a shared-window byte address (_a) or a generic pointer into shared memory */
static __device__ __forceinline__ void ldsm_x4_a(uint32_t r[4], unsigned a) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}
static __device__ __forceinline__ void ldsm_x4_trans_a(uint32_t r[4], unsigned a) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}
static __device__ __forceinline__ void ldsm_x4(uint32_t r[4], const bf16 *p) {
    ldsm_x4_a(r, (unsigned)__cvta_generic_to_shared(p));
}
static __device__ __forceinline__ void ldsm_x4_trans(uint32_t r[4], const bf16 *p) {
    ldsm_x4_trans_a(r, (unsigned)__cvta_generic_to_shared(p));
}

/* O += P V with V row-major in Vs [64 keys][HD+8]: ldmatrix.trans gives the B fragments (k = key, n = d) of
 * two 8-wide d tiles at once: lanes 0-15 address keys ks·16 + lane, lanes 16-31 the same keys 8 columns on */
template <int HD>
static __device__ __forceinline__ void mma_pv_rows(const float P[8][4], const bf16 *Vs, float O[HD / 8][4]) {
    constexpr int QP = mma_shape<HD>::QP;
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int ks = 0; ks < 4; ks++) {
        uint32_t a[4] = {pack_bf16(P[2 * ks][0], P[2 * ks][1]), pack_bf16(P[2 * ks][2], P[2 * ks][3]),
                         pack_bf16(P[2 * ks + 1][0], P[2 * ks + 1][1]), pack_bf16(P[2 * ks + 1][2], P[2 * ks + 1][3])};
#pragma unroll
        for (int dp = 0; dp < HD / 16; dp++) {
            uint32_t r[4];
            ldsm_x4_trans(r, Vs + (ks * 16 + (lane & 15)) * QP + dp * 16 + (lane >> 4) * 8);
            uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
            mma16816(O[2 * dp], a, b0);
            mma16816(O[2 * dp + 1], a, b1);
        }
    }
}

/* Online softmax over a tile for the thread's two rows (g: elements 0,1; g+8: elements 2,3); S holds scores
 * in log2 units (scaled by scale·log2 e) with −inf where masked and becomes P; m and l are in log2 units
 * too (exp2 is one MUFU instruction). Row statistics reduce over the quad (lanes 4g..4g+3). */
template <int HD>
static __device__ __forceinline__ void mma_softmax(float S[8][4], float m[2], float l[2], float O[HD / 8][4],
                                                   bool with_v) {
#pragma unroll
    for (int r = 0; r < 2; r++) {
        float mx = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < 8; nt++) mx = fmaxf(mx, fmaxf(S[nt][2 * r], S[nt][2 * r + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        float mnew = fmaxf(m[r], mx), alpha = 1.f, rs = 0.f;
        if (mnew != -INFINITY) alpha = m[r] == -INFINITY ? 0.f : exp2f(m[r] - mnew);
#pragma unroll
        for (int nt = 0; nt < 8; nt++)
#pragma unroll
            for (int j = 0; j < 2; j++) {
                float s = S[nt][2 * r + j];
                float p = (mnew == -INFINITY || s == -INFINITY) ? 0.f : exp2f(s - mnew);
                S[nt][2 * r + j] = p;
                rs += p;
            }
        rs += __shfl_xor_sync(0xffffffffu, rs, 1);
        rs += __shfl_xor_sync(0xffffffffu, rs, 2);
        l[r] = l[r] * alpha + rs;
        m[r] = mnew;
        if (with_v)
#pragma unroll
            for (int dt = 0; dt < HD / 8; dt++) O[dt][2 * r] *= alpha, O[dt][2 * r + 1] *= alpha;
    }
}

/* Qs[m][:] = bf16(q of query vector m) for the block's M (row, head-of-group) pairs starting at p0 */
template <int HD, int NT>
static __device__ __forceinline__ void mma_load_queries(bf16 *Qs, int M, const float *q, int64_t ldq, int64_t p0,
                                                        int64_t npairs, int G, int g) {
    constexpr int QP = mma_shape<HD>::QP;
    for (int e = threadIdx.x; e < M * HD; e += NT) {
        int m = e / HD, d = e % HD;
        int64_t p = p0 + m;
        float v = p < npairs ? q[(p / G) * ldq + (int64_t)(g * G + p % G) * HD + d] : 0.f;
        Qs[m * QP + d] = __float2bfloat16_rn(v);
    }
}

#endif
