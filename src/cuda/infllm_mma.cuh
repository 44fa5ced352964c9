/* infllm_mma.cuh — tensor-core pieces of InfLLM-v2 stage 1 (the LSE pass and the level-1 scores) in the
 * bf16 mode, for G = 16 query heads per KV group (the released model). Device code only.
 *
 * A warp owns two rows (2 × 16 query vectors of one KV group) and computes the transposed scores
 * Sᵀ = K Qᵀ of a 64-key tile as 4 key tiles (m = 16 keys) × 2 head tiles (n = 8 heads) per row:
 *   A = 16 keys × 16 dims of the tile, one ldmatrix.x4 from shared memory, used by 4 mma (2 rows × 2 head
 *       tiles), so every key fragment read from shared memory serves 32 query vectors;
 *   B = q of 8 heads × 16 dims, kept in registers for the whole launch (HD/16 · 2 · 2 · 2 words per row).
 * C layout (mma_core.cuh): c0,c1 = (key 16·mt + g, heads 8·nt + 2t, +1), c2,c3 = key 16·mt + 8 + g; so a
 * thread holds 4 heads of each key it sees, and sums over the group of heads need only the 4 lanes of a
 * quad. Key tiles sit in shared memory as [64][HD+8] bf16 (conflict-free ldmatrix rows).
 * On sm_90 the stage-1 scores and the LSE use the wgmma form of infllm_wgmma.cuh instead (asynchronous,
 * overlapped with the exps). */
#ifndef SALA_CUDA_INFLLM_MMA_CUH
#define SALA_CUDA_INFLLM_MMA_CUH

#include "cuda/mma_core.cuh"

/* 2^x on the MUFU unit (inputs in log2 units; −inf → 0, +inf → +inf) */
static __device__ __forceinline__ float imma_ex2(float x) {
    float y;
    asm volatile("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

/* q of rows t_first .. t_first + nr − 1 (nr ≤ 8; heads g·16 .. g·16 + 15 of each, fp32, row pitch ldq) rounded to
 * bf16 into stage[m·QP + d], m = local row · 16 + head; rows ≥ T zero. 16-byte loads when vec (q and ldq
 * allow them), pairs otherwise; NT threads of the block share the work. */
template <int HD, int NT>
static __device__ __forceinline__ void imma_stage_q(bf16 *stage, const float *q, int64_t ldq, int64_t t_first, int nr,
                                                    int64_t T, int g, bool vec) {
    constexpr int QP = mma_shape<HD>::QP;
    if (vec) {
#pragma unroll 8
        for (int e = threadIdx.x; e < nr * 4 * HD; e += NT) { /* groups of 4 dims */
            const int m = (4 * e) / HD, d = (4 * e) % HD;
            const int64_t t = t_first + (m >> 4);
            float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
            if (t < T) v = *(const float4 *)(q + t * ldq + (int64_t)(g * 16 + (m & 15)) * HD + d);
            *(uint2 *)&stage[m * QP + d] = make_uint2(pack_bf16(v.x, v.y), pack_bf16(v.z, v.w));
        }
    } else {
#pragma unroll 4
        for (int e = threadIdx.x; e < nr * 8 * HD; e += NT) { /* pairs of dims */
            const int m = (2 * e) / HD, d = (2 * e) % HD;
            const int64_t t = t_first + (m >> 4);
            float a = 0.f, b = 0.f;
            if (t < T) {
                const float *src = q + t * ldq + (int64_t)(g * 16 + (m & 15)) * HD + d;
                a = src[0];
                b = src[1];
            }
            *(uint32_t *)&stage[m * QP + d] = pack_bf16(a, b);
        }
    }
}

/* B fragments of the warp's two rows t0 + 2·warp + r (r = 0, 1), heads g·16.. of q (fp32, row pitch ldq):
 * qf[r][kk][nt] = bf16 pairs of head 8·nt + lane/4, dims kk·16 + 2·(lane%4) (+8). The block's 2·NW rows go
 * through `stage` (at least 128·(HD+8) bf16) 8 rows at a time with coalesced loads (16-byte loads when q and
 * ldq allow them, 8 of them in flight per thread); rows ≥ T are zero.
 * Every thread of the block must call it (it synchronises the block). */
template <int HD, int NW>
static __device__ __forceinline__ void imma_load_q(uint32_t qf[2][HD / 16][2][2], bf16 *stage, const float *q,
                                                   int64_t ldq, int64_t t0, int64_t T, int g) {
    constexpr int QP = mma_shape<HD>::QP, NT = 32 * NW, ROWS = 2 * NW;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
    const bool vec = ((((uintptr_t)q) | (uintptr_t)(ldq * 4)) & 15) == 0;
#pragma unroll 1
    for (int r0 = 0; r0 < ROWS; r0 += 8) {
        const int nr = ROWS - r0 < 8 ? ROWS - r0 : 8;
        if (r0) __syncthreads(); /* the previous rows' fragments are read */
        imma_stage_q<HD, NT>(stage, q, ldq, t0 + r0, nr, T, g, vec);
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

/* One key tile into shared memory with cp.async: rows [0, 64) of the stage at shared byte address sbase
 * (pitch HD+8 bf16) = rows 0.. of src (row stride `stride` elements), zero-filled from row nvalid on. The
 * thread's chunk column and first row are fixed, so a tile costs each thread 64·HD/8/NT copies with 32-bit
 * offsets (the caller passes the tile's first row as a pointer). */
template <int HD, int NT>
static __device__ __forceinline__ void imma_async_tile(unsigned sbase, const bf16 *src, int stride, int nvalid) {
    constexpr int CH = HD / 8, QP = mma_shape<HD>::QP, RSTEP = NT / CH, PER = (64 + RSTEP - 1) / RSTEP;
    static_assert(NT % CH == 0, "whole rows per pass");
    const int n0 = threadIdx.x / CH, c = (threadIdx.x % CH) * 8;
#pragma unroll
    for (int i = 0; i < PER; i++) {
        const int n = n0 + i * RSTEP;
        if (RSTEP * (i + 1) > 64 && n >= 64) break;
        const bool v = n < nvalid;
        const bf16 *p = src + (v ? n * stride + c : 0);
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(sbase + (unsigned)((n * QP + c) * 2)),
                     "l"(p), "r"(v ? 16 : 0));
    }
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
        ldsm_x4(a, a0 + kk * 16);
#pragma unroll
        for (int r = 0; r < 2; r++)
#pragma unroll
            for (int nt = 0; nt < 2; nt++) mma16816(acc[r][nt], a, qf[r][kk][nt]);
    }
}

#endif
