/* infllm_wgmma.cuh — warpgroup MMA (sm_90a) pieces of InfLLM-v2 stage 1 in the bf16 mode, G = 16 heads per
 * KV group, head dim a multiple of 64. Device code (and the host probe's declaration); the kernels are
 * k_infllm_score_wg (infllm_score.cu) and k_infllm_lse_wg (infllm_lse.cu).
 *
 * A warp owns one row (its 16 query heads are 16 of the 64 rows of A, the 4 warps of a warpgroup the 64);
 * A = q in registers in the mma.sync A layout (iwg_load_q); B = a tile of 64 compressed keys that the tensor
 * cores read from shared memory themselves, K-major with the 128-byte swizzle:
 *   key n, 16-byte chunk c (dims 8c..8c+7) at byte (c/8)·64·128 + n·128 + ((c%8) ^ (n%8))·16
 * (a column block of 64 dims is 64 rows of 128 bytes, 8-row atoms 1024 bytes apart = the stride byte
 * offset; the k-step kk starts 32·(kk%4) bytes into column block kk/4; the tile base is 1024-aligned), so
 * the tensor cores' 16-byte reads of 8 keys hit 8 different bank groups.
 * D (m64n64, per warp): d[4i + e] = (head g + 8·(e>>1), key 8i + 2t + (e&1)), g = lane/4, t = lane%4.
 * wgmma is asynchronous: a warpgroup issues the 8 k-steps of tile i+1 and turns the finished scores of
 * tile i into exps while the tensor cores work (two accumulator sets). */
#ifndef SALA_CUDA_INFLLM_WGMMA_CUH
#define SALA_CUDA_INFLLM_WGMMA_CUH

#include "cuda/infllm_mma.cuh"

#define IWG_TILE_BYTES(HD) (MMA_BK * (HD) * 2)

/* host: true when the device runs this build's sm_90a code (wgmma available); infllm_score.cu, one probe
 * launch per process, outside any stream capture */
bool infllm_wg_ok(cudaStream_t st);

/* Part of the exps as a polynomial on the FMA pipe was tried (degree 5 on [−0.5, 0.5], 1 to 4 of every 8
 * exps) and made both kernels slower (H100, 1M, last chunk: LSE 0.580 → 0.62–0.78 ms, stage 1 2.61 →
 * 2.85–3.29 ms): MUFU does not limit them. Timing without the exps (LSE 0.525 ms, stage 1 2.26) and without
 * the products (0.204, 1.27) showed that the tensor-core skeleton — products, their waits and the per-tile
 * barrier — takes the time.
 * Round 5 changed that skeleton one thing at a time (variants measured, then removed) and found
 * nothing faster (H100, last 2048-row chunk, 1M; today's kernel 2.55–2.65 ms in the same calls): 16 rows
 * per block (4 warpgroups, each key tile loaded once for twice the rows) 2.91; 4 rows per block (4 blocks
 * per SM) 3.04; the next product kept in flight across the barrier (wait_group 1) 2.73; mbarrier stages
 * instead of __syncthreads (cp.async "full" arrivals, per-warp "empty" arrivals, warps up to 2–3 tiles
 * apart) 3.11–3.23; 128 keys per product (m64n128k16) with one accumulator set and 2 blocks per SM 2.54–2.66
 * (level), with two sets (one block per SM, 213 registers) 3.13–3.30. The LSE with 16 / 4 rows per block:
 * 0.709 / 0.627 ms against 0.590. So the key-tile traffic (L2) is not the bound, mbarriers in place of the
 * barrier do not help, and every layout other than two 8-warp blocks per SM lost. 2.6 ms is close to the sum
 * of the two floors (products ≈ 1.4 ms at 788 TFLOP/s, exps ≈ 1.16 ms on MUFU); which pipe stalls the
 * other (tensor vs XU activity, MIO throttle) needs a profile, not another variant. */

/* A fragments of warp w's row t0 + w (heads g·16..), through `stage` (≥ 8·16·(HD+8) bf16), 8 rows at a
 * time; every thread of the block calls it (it synchronises the block) */
template <int HD, int NW>
static __device__ __forceinline__ void iwg_load_q(uint32_t qa[HD / 16][4], bf16 *stage, const float *q, int64_t ldq,
                                                  int64_t t0, int64_t T, int g) {
    constexpr int QP = mma_shape<HD>::QP, NT = 32 * NW;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
    const bool vec = ((((uintptr_t)q) | (uintptr_t)(ldq * 4)) & 15) == 0;
#pragma unroll 1
    for (int r0 = 0; r0 < NW; r0 += 8) {
        const int nr = NW - r0 < 8 ? NW - r0 : 8;
        if (r0) __syncthreads();
        imma_stage_q<HD, NT>(stage, q, ldq, t0 + r0, nr, T, g, vec);
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

/* one tile (rows 0..63 of src, row stride `stride` elements, zero-filled from row nvalid on) into the
 * swizzled layout at shared byte address sbase (1024-aligned), by cp.async with 32-bit offsets */
template <int HD, int NT>
static __device__ __forceinline__ void iwg_async_tile(unsigned sbase, const bf16 *src, int stride, int nvalid) {
    constexpr int CH = HD / 8, RSTEP = NT / CH, PER = (64 + RSTEP - 1) / RSTEP;
    static_assert(NT % CH == 0 && HD % 64 == 0, "whole rows per pass, 128-byte column blocks");
    const int n0 = threadIdx.x / CH, c = threadIdx.x % CH;
#pragma unroll
    for (int i = 0; i < PER; i++) {
        const int n = n0 + i * RSTEP;
        if (RSTEP * (i + 1) > 64 && n >= 64) break;
        const bool v = n < nvalid;
        const bf16 *p = src + (v ? n * stride + 8 * c : 0);
        const unsigned dst = sbase + (unsigned)((c >> 3) * (64 * 128) + n * 128 + (((c & 7) ^ (n & 7)) << 4));
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(p), "r"(v ? 16 : 0));
    }
}

/* smem matrix descriptor: K-major, 128-byte swizzle, stride byte offset 1024 (8-row atoms) */
static __device__ __forceinline__ uint64_t iwg_desc_sw128(unsigned saddr) {
    return (uint64_t)((saddr & 0x3FFFF) >> 4) | ((uint64_t)1 << 16) | ((uint64_t)(1024 >> 4) << 32) |
           ((uint64_t)1 << 62);
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define IWG_OK 1
static __device__ __forceinline__ void iwg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
static __device__ __forceinline__ void iwg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
static __device__ __forceinline__ void iwg_proxy_fence() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
template <int N> static __device__ __forceinline__ void iwg_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
static __device__ __forceinline__ void iwg_reg_fence32(float d[32]) {
#pragma unroll
    for (int i = 0; i < 32; i++) asm volatile("" : "+f"(d[i])::"memory");
}
/* d (+)= A (registers) · B (descriptor), m64n64k16, bf16 in, fp32 accumulate; acc = 0 overwrites d */
static __device__ __forceinline__ void iwg_m64n64k16(float d[32], const uint32_t a[4], uint64_t desc, int acc) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
                 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
                 "{%32, %33, %34, %35}, %36, p, 1, 1, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
                   "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]),
                   "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]),
                   "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]),
                   "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(acc));
}
/* issue (not wait for) the scores of the tile at shared byte address tile into d */
template <int HD>
static __device__ __forceinline__ void iwg_issue_tile(float d[32], const uint32_t qa[HD / 16][4], unsigned tile) {
    iwg_reg_fence32(d);
    iwg_fence();
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++)
        iwg_m64n64k16(d, qa[kk], iwg_desc_sw128(tile + (kk >> 2) * (64 * 128) + (kk & 3) * 32), kk > 0);
    iwg_commit(); /* d is not touched again before the iwg_wait that retires this group (then iwg_reg_fence32) */
}
#else
#define IWG_OK 0
#endif

#endif
