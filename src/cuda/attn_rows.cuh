/* attn_rows.cuh — pieces shared by the one-warp-per-row sparse prefill kernels (G = 16: a row's 16 heads
 * are one m16 tile): k_attn_rows / k_attn_rows_tma (attn_mma.cu) and k_attn_seg (attn_seg.cu). Device side:
 * the row's q fragments, causal mask, online softmax of a 64-key tile, and on sm_90+ the mbarrier / TMA
 * wrappers with the ldmatrix readers of 128-byte-swizzled tiles. Host side: the tensor maps of a bf16
 * [keys][nkv][HD] cache and the opt-in shared-memory limit. */
#ifndef SALA_CUDA_ATTN_ROWS_CUH
#define SALA_CUDA_ATTN_ROWS_CUH
#include <cuda.h>
#include <cudaTypedefs.h>

#include "cuda/mma_core.cuh"

#define ROWS_RK 16 /* keys per private chunk */
#define ROWS_D 4   /* private ring depth (chunks); divides 8, so ring slots are compile-time */
#define ROWS_THR 2 /* an entry chosen by at least this many of the block's rows is loaded once for them */

/* Classify row `warp`'s n entries (lists[warp·budget ...], −1 = not a block): an entry chosen by ≥ thr of
 * the nvalid rows (their bitmaps bm, nbw words each) is shared and emitted by the first row that chose it
 * into eb / em (block, mask of the rows); the others are private, compacted in place at the front of the
 * row's list. The whole warp calls it; *npriv and *nemit get the counts (every lane). */
static __device__ __forceinline__ void rows_classify(int *lists, int *eb, unsigned *em, const unsigned *bm, int nbw,
                                                     int budget, int n, int nvalid, int thr, int *npriv_out,
                                                     int *nemit_out) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int npriv = 0, nemit = 0;
    for (int i0 = 0; i0 < n; i0 += 32) {
        const int i = i0 + lane;
        bool act = i < n;
        const int b = act ? lists[warp * budget + i] : 0;
        unsigned mask = 0u;
        if (b < 0) act = false; /* not a block (bad input): skipped */
        if (act && b < 32 * nbw)
            for (int r2 = 0; r2 < nvalid; r2++) mask |= ((bm[r2 * nbw + (b >> 5)] >> (b & 31)) & 1u) << r2;
        const bool sh = act && mask && __popc(mask) >= thr, emit = sh && __ffs(mask) - 1 == warp, priv = act && !sh;
        const unsigned bp = __ballot_sync(0xffffffffu, priv), be = __ballot_sync(0xffffffffu, emit),
                       lt = (1u << lane) - 1u;
        __syncwarp();
        if (priv) lists[warp * budget + npriv + __popc(bp & lt)] = b;
        if (emit) {
            eb[warp * budget + nemit + __popc(be & lt)] = b;
            em[warp * budget + nemit + __popc(be & lt)] = mask;
        }
        npriv += __popc(bp);
        nemit += __popc(be);
    }
    __syncwarp();
    *npriv_out = npriv, *nemit_out = nemit;
}

/* The block's W rows t0 .. t0 + nvalid − 1 of KV group g, before any tile is read:
 *   1. each row's chosen blocks into lists[r·budget ..] (−1 past its count nl[r] ≤ budget) and bitmap
 *      bm[r·nbw ..];
 *   2. rows_classify of row w by warp w into np[w] / ne[w] (shared entries of the row in eb / em);
 *   3. every row's shared entries, in row order, into sb / sm.
 * Returns the number of shared entries. Every thread of the block calls it; it synchronises the block at
 * each step but not after step 3 (the caller's barrier, after its own fences, publishes sb / sm). */
template <int W, int NT>
static __device__ int rows_prepare(int *lists, int *eb, unsigned *em, unsigned *bm, int *sb, unsigned *sm, int *nl,
                                   int *np, int *ne, const int32_t *nsel, const int32_t *blocks, int64_t t0,
                                   int nvalid, int nkv, int g, int budget, int nbw, int thr) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    for (int x = threadIdx.x; x < W * nbw; x += NT) bm[x] = 0u;
    if (threadIdx.x < W) {
        const int n = (int)threadIdx.x < nvalid ? nsel[(t0 + threadIdx.x) * nkv + g] : 0;
        nl[threadIdx.x] = n < budget ? n : budget;
        np[threadIdx.x] = ne[threadIdx.x] = 0;
    }
    __syncthreads();
    for (int x = threadIdx.x; x < W * budget; x += NT) {
        const int r = x / budget, i = x - r * budget;
        int b = -1;
        if (i < nl[r]) {
            b = blocks[((t0 + r) * nkv + g) * budget + i];
            if (b >= 0 && b < 32 * nbw) atomicOr(&bm[r * nbw + (b >> 5)], 1u << (b & 31));
        }
        lists[x] = b;
    }
    __syncthreads();
    if (warp < nvalid) {
        int npriv, nemit;
        rows_classify(lists, eb, em, bm, nbw, budget, nl[warp], nvalid, thr, &npriv, &nemit);
        if (lane == 0) np[warp] = npriv, ne[warp] = nemit;
    }
    __syncthreads();
    int ns = 0;
    for (int r = 0; r < W; r++) {
        for (int k = threadIdx.x; k < ne[r]; k += NT) sb[ns + k] = eb[r * budget + k], sm[ns + k] = em[r * budget + k];
        ns += ne[r];
    }
    return ns;
}

/* the warp's 16 query vectors (heads 0..15 of the group, row stride HD from qh) as bf16 A fragments */
template <int HD>
static __device__ __forceinline__ void rows_q_frags(const float *qh, uint32_t qf[HD / 16][4]) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++) {
        const float *p0 = qh + g * HD + kk * 16 + 2 * t, *p1 = p0 + 8 * HD;
        qf[kk][0] = pack_bf16(p0[0], p0[1]);
        qf[kk][1] = pack_bf16(p1[0], p1[1]);
        qf[kk][2] = pack_bf16(p0[8], p0[9]);
        qf[kk][3] = pack_bf16(p1[8], p1[9]);
    }
}

/* keys after the row's position (k0 + column > rpos) → −inf; only called on the diagonal block. NTL n-tiles
 * of 8 keys from key k0 (8: a 64-key tile, 4: its half) */
template <int NTL>
static __device__ __forceinline__ void rows_causal(float (&S)[NTL][4], int64_t k0, int64_t rpos) {
    const int tq = threadIdx.x & 3;
#pragma unroll
    for (int nt = 0; nt < NTL; nt++)
#pragma unroll
        for (int j = 0; j < 2; j++)
            if (k0 + nt * 8 + 2 * tq + j > rpos) S[nt][j] = S[nt][2 + j] = -INFINITY;
}

/* online softmax of one tile of NTL·8 keys: S raw scores (−inf where masked) become probabilities; m, l
 * in log2 units of the scaled scores (sl2 = scale·log2 e) */
template <int HD, int NTL>
static __device__ __forceinline__ void rows_softmax(float (&S)[NTL][4], float m[2], float l[2], float O[HD / 8][4],
                                                    float sl2) {
#pragma unroll
    for (int r = 0; r < 2; r++) {
        float mx = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < NTL; nt++) mx = fmaxf(mx, fmaxf(S[nt][2 * r], S[nt][2 * r + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float mnew = fmaxf(m[r], mx * sl2), mb = mnew == -INFINITY ? 0.f : mnew;
        const float alpha = exp2f(m[r] - mb);
        float rs = 0.f;
#pragma unroll
        for (int nt = 0; nt < NTL; nt++)
#pragma unroll
            for (int j = 0; j < 2; j++) {
                float p = exp2f(fmaf(S[nt][2 * r + j], sl2, -mb));
                S[nt][2 * r + j] = p;
                rs += p;
            }
        rs += __shfl_xor_sync(0xffffffffu, rs, 1);
        rs += __shfl_xor_sync(0xffffffffu, rs, 2);
        l[r] = l[r] * alpha + rs;
        m[r] = mnew;
#pragma unroll
        for (int dt = 0; dt < HD / 8; dt++) O[dt][2 * r] *= alpha, O[dt][2 * r + 1] *= alpha;
    }
}

struct rows_tmaps {
    CUtensorMap k64, v64, k16, v16; /* [keys][nkv][HD] bf16 viewed as (d, group, key); boxes 64 × 1 × 64 / 16 */
};

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
static __device__ __forceinline__ unsigned smem_u32(const void *p) {
    return (unsigned)__cvta_generic_to_shared(p);
}
static __device__ __forceinline__ void mbar_init(unsigned bar, unsigned count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
static __device__ __forceinline__ void mbar_expect_tx(unsigned bar, unsigned bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
static __device__ __forceinline__ void mbar_wait(unsigned bar, unsigned parity) {
    asm volatile("{\n\t.reg .pred p;\n"
                 "TMA_WAIT_%=:\n\t"
                 "mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n\t"
                 "@!p bra TMA_WAIT_%=;\n}\n" ::"r"(bar),
                 "r"(parity)
                 : "memory");
}
/* box (c0 = first d, c1 = group, c2 = first key) of the map into shared memory at dst, counted on bar */
static __device__ __forceinline__ void tma_load3(unsigned dst, const CUtensorMap *map, unsigned bar, int c0, int c1,
                                                 int c2) {
    asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%3, "
                 "%4, %5}], [%2];\n" ::"r"(dst),
                 "l"((unsigned long long)map), "r"(bar), "r"(c0), "r"(c1), "r"(c2)
                 : "memory");
}
#endif

/* S (+)= Q Kᵀ for 16 keys at rows n0.. of a swizzled tile (column halves of `half` bytes), shared-window
 * address `base`; lanes address rows n0 + (lane & 7) + 8 (lane >> 4), chunk 2 kk + ((lane >> 3) & 1) */
template <int HD>
static __device__ __forceinline__ void tma_qk16(const uint32_t qf[HD / 16][4], unsigned base, int half, int n0,
                                                float Sa[4], float Sb[4]) {
    const int lane = threadIdx.x & 31;
    const unsigned row = base + (unsigned)(n0 + (lane & 7) + ((lane >> 4) << 3)) * 128u;
    const unsigned y = (unsigned)((((lane >> 3) & 1) ^ (lane & 7)) << 4);
    float Xa[4] = {0.f, 0.f, 0.f, 0.f}, Xb[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++) {
        uint32_t r[4];
        ldsm_x4_a(r, row + (unsigned)((kk >> 2) * half) + ((unsigned)(32 * (kk & 3)) ^ y));
        uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
        mma16816((kk & 1) ? Xa : Sa, qf[kk], b0);
        mma16816((kk & 1) ? Xb : Sb, qf[kk], b1);
    }
#pragma unroll
    for (int i = 0; i < 4; i++) Sa[i] += Xa[i], Sb[i] += Xb[i];
}

/* O += P V for the 16 keys at rows n0.. of a swizzled V tile; lanes address rows n0 + (lane & 15), chunk
 * 2 dp + (lane >> 4) (ldmatrix.trans) */
template <int HD>
static __device__ __forceinline__ void tma_pv16(const float Pa[4], const float Pb[4], unsigned base, int half, int n0,
                                                float O[HD / 8][4]) {
    const int lane = threadIdx.x & 31;
    const unsigned row = base + (unsigned)(n0 + (lane & 15)) * 128u;
    const unsigned y = (unsigned)(((lane >> 4) ^ (lane & 7)) << 4);
    uint32_t a[4] = {pack_bf16(Pa[0], Pa[1]), pack_bf16(Pa[2], Pa[3]), pack_bf16(Pb[0], Pb[1]),
                     pack_bf16(Pb[2], Pb[3])};
#pragma unroll
    for (int dp = 0; dp < HD / 16; dp++) {
        uint32_t r[4];
        ldsm_x4_trans_a(r, row + (unsigned)((dp >> 2) * half) + ((unsigned)(32 * (dp & 3)) ^ y));
        uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
        mma16816(O[2 * dp], a, b0);
        mma16816(O[2 * dp + 1], a, b1);
    }
}

/* the most dynamic shared memory one block may opt in to (227 KB on H100, less on smaller parts) */
static inline size_t smem_optin(void) {
    static int v = 0;
    if (!v) {
        int dev = 0;
        cudaGetDevice(&dev);
        cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
        if (v <= 0) v = 48 * 1024;
    }
    return (size_t)v;
}

/* the driver's tensor-map encoder, through the runtime's entry-point lookup (NULL when unavailable) */
static inline PFN_cuTensorMapEncodeTiled_v12000 tma_encoder(void) {
    static void *fn = NULL;
    static int tried = 0;
    if (!tried) {
        cudaDriverEntryPointQueryResult qr;
        if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &qr) !=
                cudaSuccess ||
            qr != cudaDriverEntryPointSuccess)
            fn = NULL;
        cudaGetLastError();
        tried = 1;
    }
    return (PFN_cuTensorMapEncodeTiled_v12000)fn;
}

/* map of a [nkeys][nkv][HD] bf16 cache as (d, group, key), 128-byte swizzle, box 64 d × 1 × `rows` keys */
static inline int tma_encode(CUtensorMap *m, const void *base, int hd, int nkv, int64_t nkeys, int rows) {
    PFN_cuTensorMapEncodeTiled_v12000 enc = tma_encoder();
    if (!enc) return -1;
    cuuint64_t dims[3] = {(cuuint64_t)hd, (cuuint64_t)nkv, (cuuint64_t)nkeys};
    cuuint64_t strides[2] = {(cuuint64_t)hd * 2, (cuuint64_t)nkv * hd * 2}; /* bytes, dims 1 and 2 */
    cuuint32_t box[3] = {64, 1, (cuuint32_t)rows}, es[3] = {1, 1, 1};
    CUresult r = enc(m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, (void *)base, dims, strides, box, es,
                     CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                     CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    return r == CUDA_SUCCESS ? 0 : -1;
}
#endif
