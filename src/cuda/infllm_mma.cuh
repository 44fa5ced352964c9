/* infllm_mma.cuh — tensor-core pieces of InfLLM-v2 stage 1 (the LSE pass and the level-1 scores) in the
 * bf16 mode, for G = 16 query heads per KV group (the released model). Two forms:
 *
 * mma.sync (any sm_80+ GPU): a warp owns two rows (2 × 16 query vectors of one KV group) and computes the
 * transposed scores Sᵀ = K Qᵀ of a 64-key tile as 4 key tiles (m = 16 keys) × 2 head tiles (n = 8
 * heads) per row:
 *   A = 16 keys × 16 dims of the tile, one ldmatrix.x4 from shared memory, used by 4 mma (2 rows × 2 head
 *       tiles), so every key fragment read from shared memory serves 32 query vectors;
 *   B = q of 8 heads × 16 dims, kept in registers for the whole launch (HD/16 · 2 · 2 · 2 words per row).
 * C layout (mma_core.cuh): c0,c1 = (key 16·mt + g, heads 8·nt + 2t, +1), c2,c3 = key 16·mt + 8 + g; so a
 * thread holds 4 heads of each key it sees, and sums over the group of heads need only the 4 lanes of a
 * quad. Key tiles sit in shared memory as [64][HD+8] bf16 (conflict-free ldmatrix rows).
 *
 * wgmma (sm_90a, below): a warp owns one row; the 4 warps of a warpgroup are the 64 rows of A (q in
 * registers) against key tiles that the tensor cores read from shared memory themselves, asynchronously,
 * so a warp turns one half tile into exps while the next half is multiplied.
 *
 * iwg_enabled() (host) picks the form. */
#ifndef SALA_CUDA_INFLLM_MMA_CUH
#define SALA_CUDA_INFLLM_MMA_CUH

#include <stdlib.h>

#include "cuda/mma_core.cuh"

/* 2^x on the MUFU unit (inputs in log2 units; −inf → 0, +inf → +inf) */
static __device__ __forceinline__ float imma_ex2(float x) {
    float y;
    asm volatile("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

/* four 8×8 bf16 matrices, not transposed: lane i addresses row i of matrix i/8 */
static __device__ __forceinline__ void imma_ldsm_x4(uint32_t r[4], const bf16 *p) {
    unsigned a = (unsigned)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

/* B fragments of the warp's two rows t0 + 2·warp + r (r = 0, 1), heads g·16.. of q (fp32, row pitch ldq):
 * qf[r][kk][nt] = bf16 pairs of head 8·nt + lane/4, dims kk·16 + 2·(lane%4) (+8). The block's 2·NW rows go
 * through `stage` (at least 128·(HD+8) bf16) 8 rows at a time with coalesced loads; rows ≥ T are zero.
 * Every thread of the block must call it (it synchronises the block). */
template <int HD, int NW>
static __device__ __forceinline__ void imma_load_q(uint32_t qf[2][HD / 16][2][2], bf16 *stage, const float *q,
                                                   int64_t ldq, int64_t t0, int64_t T, int g) {
    constexpr int QP = mma_shape<HD>::QP, NT = 32 * NW, ROWS = 2 * NW;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
#pragma unroll 1
    for (int r0 = 0; r0 < ROWS; r0 += 8) {
        const int nr = ROWS - r0 < 8 ? ROWS - r0 : 8;
        if (r0) __syncthreads(); /* the previous rows' fragments are read */
#pragma unroll 4
        for (int e = threadIdx.x; e < nr * 8 * HD; e += NT) { /* pairs of dims */
            const int m = (2 * e) / HD, d = (2 * e) % HD;   /* m = local row · 16 + head */
            const int64_t t = t0 + r0 + (m >> 4);
            float a = 0.f, b = 0.f;
            if (t < T) {
                const float *src = q + t * ldq + (int64_t)(g * 16 + (m & 15)) * HD + d;
                a = src[0];
                b = src[1];
            }
            *(uint32_t *)&stage[m * QP + d] = pack_bf16(a, b);
        }
        __syncthreads();
        const int lr = 2 * warp - r0; /* the warp's first row within this pass */
        if (lr >= 0 && lr < nr) {
#pragma unroll
            for (int r = 0; r < 2; r++)
#pragma unroll
                for (int kk = 0; kk < HD / 16; kk++)
#pragma unroll
                    for (int nt = 0; nt < 2; nt++) {
                        const bf16 *p = stage + ((lr + r) * 16 + nt * 8 + gq) * QP + kk * 16 + 2 * tq;
                        qf[r][kk][nt][0] = *(const uint32_t *)p;
                        qf[r][kk][nt][1] = *(const uint32_t *)(p + 8);
                    }
        }
    }
    __syncthreads(); /* the stage is free for key tiles */
}

/* acc[r][nt] = Sᵀ of keys 16·mt.. of the tile Kt ([64][HD+8] bf16) against the two rows' heads */
template <int HD>
static __device__ __forceinline__ void imma_scores16(float acc[2][2][4], const uint32_t qf[2][HD / 16][2][2],
                                                     const bf16 *Kt, int mt) {
    constexpr int QP = mma_shape<HD>::QP;
    const int lane = threadIdx.x & 31;
    const bf16 *a0 = Kt + (mt * 16 + (lane & 15)) * QP + (lane >> 4) * 8;
#pragma unroll
    for (int r = 0; r < 2; r++)
#pragma unroll
        for (int nt = 0; nt < 2; nt++) acc[r][nt][0] = acc[r][nt][1] = acc[r][nt][2] = acc[r][nt][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++) {
        uint32_t a[4];
        imma_ldsm_x4(a, a0 + kk * 16);
#pragma unroll
        for (int r = 0; r < 2; r++)
#pragma unroll
            for (int nt = 0; nt < 2; nt++) mma16816(acc[r][nt], a, qf[r][kk][nt]);
    }
}

/* ---- warpgroup MMA (sm_90a): one warp = one row's 16 heads = 16 of the 64 rows of A ----
 * A = q of 4 rows (one per warp of the warpgroup) in registers, the mma.sync A layout per warp:
 *   qa[kk] = {(head g, dims kk·16 + 2t..), (g + 8, ..), (g, +8..), (g + 8, +8..)};
 * B = the key tile in shared memory, K-major without swizzle: 16-byte chunk c (dims 8c..8c+7) of key n
 * at byte (c·8 + n/8)·128 + (n%8)·16, so a k-step's two chunks are 1024 bytes apart (leading byte
 * offset) and groups of 8 keys 128 bytes apart (stride byte offset);
 * D (m64nN) per warp: d[4i + e] = (head g + 8·(e>>1), key 8i + 2t + (e&1)). */
#define IWG_TILE_BYTES(HD) (MMA_BK * (HD) * 2)

template <int HD, int NT>
static __device__ __forceinline__ void iwg_async_tile(unsigned char *dst, const bf16 *src, int64_t stride,
                                                      int64_t first, int64_t limit) {
    /* pairs of lanes fetch the two halves of a 32-byte sector; consecutive pairs take consecutive keys */
    for (int e = threadIdx.x; e < MMA_BK * HD / 8; e += NT) {
        const int half = e & 1, n = (e >> 1) & (MMA_BK - 1), c = 2 * (e >> 7) + half;
        const int64_t r = first + n;
        const bool v = r < limit;
        cp_async16(dst + (c * 8 + (n >> 3)) * 128 + (n & 7) * 16, v ? (const void *)(src + r * stride + c * 8) : (const void *)src,
                   v);
    }
}

static __device__ __forceinline__ uint64_t iwg_desc(const void *smem, int lbo, int sbo) {
    const uint32_t a = (uint32_t)__cvta_generic_to_shared(smem);
    return (uint64_t)((a & 0x3FFFF) >> 4) | ((uint64_t)(lbo >> 4) << 16) | ((uint64_t)(sbo >> 4) << 32);
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define IWG_OK 1
static __device__ __forceinline__ void iwg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
static __device__ __forceinline__ void iwg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
static __device__ __forceinline__ void iwg_proxy_fence() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
template <int N> static __device__ __forceinline__ void iwg_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
static __device__ __forceinline__ void iwg_reg_fence16(float d[16]) {
#pragma unroll
    for (int i = 0; i < 16; i++) asm volatile("" : "+f"(d[i])::"memory");
}
static __device__ __forceinline__ void iwg_m64n32k16(float d[16], const uint32_t a[4], uint64_t desc, int acc) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %21, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 "
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, "
                 "{%16, %17, %18, %19}, %20, p, 1, 1, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
                   "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]),
                   "+f"(d[15])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(acc));
}

/* issue (not wait for) the scores of keys 32·half.. of the tile into d[16] (m64n32: d[4i + e] = head
 * g + 8·(e>>1), key 32·half + 8i + 2t + (e&1)); complete after iwg_wait, then iwg_reg_fence16(d) */
template <int HD>
static __device__ __forceinline__ void iwg_issue_half(float d[16], const uint32_t qa[HD / 16][4],
                                                      const unsigned char *tile, int half) {
    iwg_reg_fence16(d);
    iwg_fence();
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++) iwg_m64n32k16(d, qa[kk], iwg_desc(tile + kk * 2048 + half * 512, 1024, 128), kk > 0);
    iwg_commit();
}

#else
#define IWG_OK 0
#endif

/* host: the wgmma kernels run on sm_90 (Hopper); SALA_INFLLM_MMA=1 selects the mma.sync ones there too
 * (to compare them on the same card). The build must then hold sm_90a code (the Makefile's CUARCH has
 * it; without it the wgmma kernels trap rather than return wrong scores). */
static inline bool iwg_enabled(void) {
    static int major = -1;
    if (major < 0) {
        int dev = 0;
        major = 0;
        if (cudaGetDevice(&dev) == cudaSuccess) cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    }
    const char *e = getenv("SALA_INFLLM_MMA");
    return major == 9 && !(e && *e == '1');
}

/* A fragments of warp w's row t0 + w (heads g·16..), through `stage` 8 rows at a time (as imma_load_q;
 * every thread of the block calls it) */
template <int HD, int NW>
static __device__ __forceinline__ void iwg_load_q(uint32_t qa[HD / 16][4], bf16 *stage, const float *q, int64_t ldq,
                                                  int64_t t0, int64_t T, int g) {
    constexpr int QP = mma_shape<HD>::QP, NT = 32 * NW;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
#pragma unroll 1
    for (int r0 = 0; r0 < NW; r0 += 8) {
        const int nr = NW - r0 < 8 ? NW - r0 : 8;
        if (r0) __syncthreads();
#pragma unroll 4
        for (int e = threadIdx.x; e < nr * 8 * HD; e += NT) {
            const int m = (2 * e) / HD, d = (2 * e) % HD;
            const int64_t t = t0 + r0 + (m >> 4);
            float a = 0.f, b = 0.f;
            if (t < T) {
                const float *src = q + t * ldq + (int64_t)(g * 16 + (m & 15)) * HD + d;
                a = src[0];
                b = src[1];
            }
            *(uint32_t *)&stage[m * QP + d] = pack_bf16(a, b);
        }
        __syncthreads();
        const int lr = warp - r0;
        if (lr >= 0 && lr < nr) {
#pragma unroll
            for (int kk = 0; kk < HD / 16; kk++) {
                const bf16 *p = stage + (lr * 16 + gq) * QP + kk * 16 + 2 * tq;
                qa[kk][0] = *(const uint32_t *)p;
                qa[kk][1] = *(const uint32_t *)(p + 8 * QP);
                qa[kk][2] = *(const uint32_t *)(p + 8);
                qa[kk][3] = *(const uint32_t *)(p + 8 * QP + 8);
            }
        }
    }
    __syncthreads();
}


#endif
