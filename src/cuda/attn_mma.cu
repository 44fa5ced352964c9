/* attn_mma.cu — tensor-core attention for bf16 caches (the default precision), dense causal and
 * InfLLM-v2 block-sparse (mma_core.cuh: mma.sync m16n8k16, bf16 operands, fp32 accumulation).
 *
 * Four kernels. k_attn_rows (G = 16, the released model, every sparse prefill): one warp per row, whose
 * 16 heads are one m16 tile, so a warp computes exactly the blocks its row chose (see the note above it);
 * on sm_90+ its sparse form runs as k_attn_rows_tma (the same work, tiles fetched by the tensor-memory
 * accelerator into 128-byte-swizzled shared memory: exactly the L2 sectors of the rows; SALA_SPARSE_TMA=0
 * keeps k_attn_rows), and from 256K keys on as k_attn_seg (attn_seg.cu: 16 rows per block, the rows of the
 * chunk paced to walk the cache together so that blocks are reused while in L2). The helpers these
 * kernels share are in attn_rows.cuh.
 * k_attn_dense (G = 16, dense causal with enough rows to fill the GPU): two rows per warp, so each K/V
 * fragment feeds two mma (see the note above it); k_attn_rows serves dense where its shared memory does
 * not fit. k_attn_mma (any G, decode): a block takes 16·NW consecutive (row, head-of-group) pairs of one KV group, one warp per 16 pairs, so the G heads
 * sharing a KV head read each key tile once. Dense: the key tiles 0 .. last row. Sparse: the block first
 * builds the union of its rows' block lists in shared memory (a bitmap over the blocks and its prefix
 * counts), each entry with a bitmask of the rows that chose it; a block's scores are −inf for rows that did
 * not choose it. Keys after a row's position are masked. K and V tiles stream through two stages with
 * cp.async; V stays row-major and ldmatrix.trans forms the P·V operands. Decode-sized launches use one warp
 * per block and split the keys.
 * In all, q is rounded to bf16 (the official kernels run on bf16 q); probabilities are rounded to bf16
 * for P·V; scores, softmax statistics and the output accumulate in fp32. */
#include <cuda.h>
#include <cudaTypedefs.h>
#include <stdlib.h>

#include "cuda/attn_internal.cuh"
#include "cuda/attn_rows.cuh"

template <int HD, int NW, bool SPARSE>
__global__ void __launch_bounds__(NW * 32) k_attn_mma(float *o, int64_t ldo, const float *q, int64_t ldq, const bf16 *K,
                                                      const bf16 *V, const int32_t *blocks, const int32_t *nsel,
                                                      int64_t T, int64_t pos0, int nh, int nkv, int budget, float scale,
                                                      int nsplit, float *part, int nbw, int ucap) {
    constexpr int M = 16 * NW, NT = 32 * NW, QP = mma_shape<HD>::QP, TILE = MMA_BK * QP;
    extern __shared__ uint4 smem_u4[];
    bf16 *Qs = (bf16 *)smem_u4, *Ks = Qs + M * QP, *Vs = Ks + 2 * TILE; /* K and V: two stages each */
    unsigned long long *umask = (unsigned long long *)(Vs + 2 * TILE);  /* [ucap] rows that chose union entry */
    int *ulist = (int *)(umask + ucap);                                  /* [ucap] union of the rows' blocks */
    unsigned *bits = (unsigned *)(ulist + ucap);                          /* [nbw] block bitmap */
    int *wpre = (int *)(bits + nbw);                                      /* [nbw] union index of each word */
    __shared__ int n_union;
    const int g = blockIdx.y, split = blockIdx.z, G = nh / nkv;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
    const int64_t npairs = T * G, p0 = (int64_t)blockIdx.x * M;
    const int64_t t_first = p0 / G;
    const int64_t t_last = (p0 + M - 1) / G < T - 1 ? (p0 + M - 1) / G : T - 1;
    const int R = (int)(t_last - t_first + 1);
    mma_load_queries<HD, NT>(Qs, M, q, ldq, p0, npairs, G, g);
    if (SPARSE) {
        /* union of the rows' block lists, ascending, with a bitmask of the rows that chose each block:
         * a bitmap over the blocks, its prefix counts, then each row's blocks find their union index */
        for (int w = threadIdx.x; w < nbw; w += NT) bits[w] = 0;
        __syncthreads();
        for (int x = threadIdx.x; x < R * budget; x += NT) {
            int r = x / budget, i = x % budget;
            int64_t tg = (t_first + r) * nkv + g;
            if (i < nsel[tg]) {
                int b = blocks[tg * budget + i];
                atomicOr(&bits[b >> 5], 1u << (b & 31));
            }
        }
        __syncthreads();
        if (threadIdx.x == 0) { /* nbw ≤ a few thousand words: one serial prefix is cheap next to the tiles */
            int c = 0;
            for (int w = 0; w < nbw; w++) wpre[w] = c, c += __popc(bits[w]);
            n_union = c;
        }
        __syncthreads();
        for (int w = threadIdx.x; w < nbw; w += NT) {
            unsigned v = bits[w];
            int c = wpre[w];
            while (v) {
                int bt = __ffs(v) - 1;
                v &= v - 1;
                ulist[c] = w * 32 + bt;
                umask[c++] = 0ull;
            }
        }
        __syncthreads();
        for (int x = threadIdx.x; x < R * budget; x += NT) {
            int r = x / budget, i = x % budget;
            int64_t tg = (t_first + r) * nkv + g;
            if (i < nsel[tg]) {
                int b = blocks[tg * budget + i];
                int idx = wpre[b >> 5] + __popc(bits[b >> 5] & ((1u << (b & 31)) - 1u));
                atomicOr(&umask[idx], 1ull << r);
            }
        }
    }
    __syncthreads();
    uint32_t qf[HD / 16][4];
    mma_q_frags<HD>(Qs, warp * 16, qf);
    int64_t rpos[2];
    int rrow[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int64_t p = p0 + warp * 16 + gq + 8 * r;
        rpos[r] = p < npairs ? pos0 + p / G : -1;
        rrow[r] = p < npairs ? (int)(p / G - t_first) : 0;
    }
    float O[HD / 8][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
#pragma unroll
    for (int dt = 0; dt < HD / 8; dt++) O[dt][0] = O[dt][1] = O[dt][2] = O[dt][3] = 0.f;
    const float sl2 = scale * LOG2E_F; /* scores in log2 units for exp2 */
    const int64_t kstride = (int64_t)nkv * HD, nkeys = pos0 + t_last + 1;
    /* this block's tiles: dense key tiles [i0, i1), or union entries [i0, i1) */
    int64_t i0, i1;
    if (SPARSE) {
        const int per = (budget + nsplit - 1) / nsplit;
        i0 = nsplit == 1 ? 0 : (int64_t)split * per;
        i1 = nsplit == 1 ? n_union : (i0 + per < n_union ? i0 + per : n_union);
    } else {
        const int64_t ntiles = (nkeys + MMA_BK - 1) / MMA_BK, tps = (ntiles + nsplit - 1) / nsplit;
        i0 = split * tps;
        i1 = i0 + tps < ntiles ? i0 + tps : ntiles;
    }
    const bf16 *Kg = K + (int64_t)g * HD, *Vg = V + (int64_t)g * HD;
    if (i0 < i1) { /* prologue: the first tile in flight */
        int64_t k0 = SPARSE ? (int64_t)ulist[i0] * MMA_BK : i0 * MMA_BK;
        mma_async_rows<HD, NT>(Ks, Kg, kstride, k0, nkeys);
        mma_async_rows<HD, NT>(Vs, Vg, kstride, k0, nkeys);
        cp_async_commit();
    }
    for (int64_t i = i0; i < i1; i++) {
        const int buf = (int)((i - i0) & 1);
        if (i + 1 < i1) { /* prefetch the next tile into the other stage */
            int64_t kn = SPARSE ? (int64_t)ulist[i + 1] * MMA_BK : (i + 1) * MMA_BK;
            mma_async_rows<HD, NT>(Ks + (buf ^ 1) * TILE, Kg, kstride, kn, nkeys);
            mma_async_rows<HD, NT>(Vs + (buf ^ 1) * TILE, Vg, kstride, kn, nkeys);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        const int64_t k0 = SPARSE ? (int64_t)ulist[i] * MMA_BK : i * MMA_BK;
        const unsigned long long mask = SPARSE ? umask[i] : ~0ull;
        float S[8][4];
        mma_qk<HD>(qf, Ks + buf * TILE, S);
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const bool chose = !SPARSE || ((mask >> rrow[r]) & 1ull);
#pragma unroll
            for (int nt = 0; nt < 8; nt++)
#pragma unroll
                for (int j = 0; j < 2; j++) {
                    int64_t key = k0 + nt * 8 + 2 * tq + j;
                    S[nt][2 * r + j] = (chose && key <= rpos[r]) ? S[nt][2 * r + j] * sl2 : -INFINITY;
                }
        }
        mma_softmax<HD>(S, m, l, O, true);
        mma_pv_rows<HD>(S, Vs + buf * TILE, O);
        __syncthreads(); /* this stage is refilled by the next iteration's prefetch */
    }
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int64_t p = p0 + warp * 16 + gq + 8 * r;
        if (p >= npairs) continue;
        int64_t t = p / G, h = g * G + p % G;
        if (nsplit == 1) {
            float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;
            float *orow = o + t * ldo + h * HD;
#pragma unroll
            for (int dt = 0; dt < HD / 8; dt++)
                orow[dt * 8 + 2 * tq] = O[dt][2 * r] * inv, orow[dt * 8 + 2 * tq + 1] = O[dt][2 * r + 1] * inv;
        } else {
            float *rec = part + ((int64_t)split * T * nh + t * nh + h) * (2 + HD);
            if (tq == 0) rec[0] = m[r] * LN2_F, rec[1] = l[r]; /* combine works in natural units */
#pragma unroll
            for (int dt = 0; dt < HD / 8; dt++)
                rec[2 + dt * 8 + 2 * tq] = O[dt][2 * r], rec[2 + dt * 8 + 2 * tq + 1] = O[dt][2 * r + 1];
        }
    }
}

/* ---- k_attn_rows: one warp per row (G = 16) ----
 *
 * With G = 16 the 16 heads of a row's KV group are exactly one m16 tile, so a warp owns one row and
 * computes only the blocks that row chose: no masked work, whatever the overlap of the rows' lists (the
 * benchmark's random top-k sets overlap little: the union of 4 rows' lists is ~2.8 lists at 128K). A block
 * takes W consecutive rows of one group and classifies their lists with per-row bitmaps. An entry chosen
 * by at least ROWS_THR of the rows (the init block and local window, which all rows share, and top-k blocks
 * shared by a few rows) is "shared": its 64 keys of K and V are loaded once, through NS stages of
 * block-wide cp.async tiles, and computed by the warps whose row chose it. Every other entry is the row's
 * own and streams through the warp's private ring of ROWS_D chunks of 16 keys (K0..K3 then V0..V3 of each
 * block; cp.async, one wait + __syncwarp per chunk, no block-wide barrier), so warps never wait for each
 * other on blocks only one of them needs. The kernel is bound by the L2 → SM traffic of these loads.
 * Tiles keep the padded pitch HD+8 (conflict-free ldmatrix). Nsight Compute counts 1.5× the ideal L2
 * sectors for these cp.async copies (rows whose shared address is 16 mod 32 bytes seem to fetch each
 * sector twice); an unpadded tile with 16-byte XOR swizzle made it 2× and the kernel 30% slower (H100).
 * Causal masking only on a row's diagonal block (a warp-uniform test). Shared entries are ordered by
 * (first row that chose it, list index), private ones by list index: results do not depend on timing.
 * DENSE: every block up to the row's own, all as shared entries (causal attention without lists). */
#define ROWS_W 4   /* rows (warps) per block: two blocks per SM */

/* S[2 nt2 + 0/1] (+)= Q Kᵀ for 16 keys (16 rows of Ks, pitch HD+8): two n-tiles; ldmatrix gives the
 * B fragments of both (lanes 0-7 / 8-15: keys 0-7 at d and d+8, lanes 16-31 the same for keys 8-15) */
template <int HD>
static __device__ __forceinline__ void rows_qk16(const uint32_t qf[HD / 16][4], const bf16 *Ks, float Sa[4],
                                                 float Sb[4]) {
    constexpr int QP = mma_shape<HD>::QP;
    const int lane = threadIdx.x & 31;
    const bf16 *base = Ks + ((lane & 7) + ((lane >> 4) << 3)) * QP + ((lane >> 3) & 1) * 8;
    float Xa[4] = {0.f, 0.f, 0.f, 0.f}, Xb[4] = {0.f, 0.f, 0.f, 0.f}; /* odd k-steps: 4 independent chains */
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++) {
        uint32_t r[4];
        ldsm_x4(r, base + kk * 16);
        uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
        mma16816((kk & 1) ? Xa : Sa, qf[kk], b0);
        mma16816((kk & 1) ? Xb : Sb, qf[kk], b1);
    }
#pragma unroll
    for (int i = 0; i < 4; i++) Sa[i] += Xa[i], Sb[i] += Xb[i];
}

/* O += P V for one 16-key k-step (16 V rows at Vs, pitch HD+8) */
template <int HD>
static __device__ __forceinline__ void rows_pv16(const float Pa[4], const float Pb[4], const bf16 *Vs,
                                                 float O[HD / 8][4]) {
    constexpr int QP = mma_shape<HD>::QP;
    const int lane = threadIdx.x & 31;
    uint32_t a[4] = {pack_bf16(Pa[0], Pa[1]), pack_bf16(Pa[2], Pa[3]), pack_bf16(Pb[0], Pb[1]),
                     pack_bf16(Pb[2], Pb[3])};
#pragma unroll
    for (int dp = 0; dp < HD / 16; dp++) {
        uint32_t r[4];
        ldsm_x4_trans(r, Vs + (lane & 15) * QP + dp * 16 + (lane >> 4) * 8);
        uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
        mma16816(O[2 * dp], a, b0);
        mma16816(O[2 * dp + 1], a, b1);
    }
}

template <int HD, int W> struct rows_shape {
    static constexpr int QP = mma_shape<HD>::QP, TILE = MMA_BK * QP, CHUNK = ROWS_RK * QP;
    static constexpr int NS = W >= 8 ? 4 : 3; /* stages of the shared tiles (K and V of 64 keys each) */
    static constexpr int TILES = 2 * NS * TILE > W * ROWS_D * CHUNK ? 2 * NS * TILE : W * ROWS_D * CHUNK; /* bf16 */
};

static __device__ __forceinline__ void cp_async16_all(void *smem, const void *gmem) {
    unsigned sa = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(sa), "l"(gmem));
}

/* rows [0, R) of dst (pitch HD+8) = bf16 rows first.. of src (stride `stride`), zero at or past limit; the
 * copies of a range wholly before limit carry no zero-fill operand (warp-uniform test) */
template <int HD, int R, int NT>
static __device__ __forceinline__ void rows_async(bf16 *dst, const bf16 *src, int64_t stride, int64_t first,
                                                  int64_t limit, int tid) {
    constexpr int QP = mma_shape<HD>::QP, CH = HD / 8;
    if (first + R <= limit) {
#pragma unroll
        for (int e = tid; e < R * CH; e += NT) {
            const int r = e / CH, c8 = (e % CH) * 8;
            cp_async16_all(dst + r * QP + c8, src + (first + r) * stride + c8);
        }
    } else {
#pragma unroll
        for (int e = tid; e < R * CH; e += NT) {
            const int r = e / CH, c8 = (e % CH) * 8;
            const bool v = first + r < limit;
            cp_async16(dst + r * QP + c8, v ? (const void *)(src + (first + r) * stride + c8) : (const void *)src, v);
        }
    }
}

template <int HD, int W, bool DENSE>
__global__ void __launch_bounds__(W * 32, W >= 8 ? 1 : 2)
    k_attn_rows(float *o, int64_t ldo, const float *q, int64_t ldq, const bf16 *K, const bf16 *V,
                const int32_t *blocks, const int32_t *nsel, int64_t T, int64_t pos0, int nkv, int budget, float scale,
                int nbw, int thr) {
    typedef rows_shape<HD, W> SH;
    constexpr int NT = 32 * W, QP = SH::QP, TILE = SH::TILE, CHUNK = SH::CHUNK, NS = SH::NS;
    extern __shared__ uint4 smem_u4[];
    bf16 *tiles = (bf16 *)smem_u4; /* shared phase: NS stages of (K, V); private phase: W rings of D chunks */
    unsigned *bm = (unsigned *)smem_u4; /* setup only: [W][nbw] bitmaps of the rows' blocks */
    int *lists = (int *)(tiles + SH::TILES); /* [W][budget] each row's blocks, then its private ones */
    int *eb = lists + W * budget;            /* [W][budget] shared entries by first row */
    unsigned *em = (unsigned *)(eb + W * budget);
    int *sb = (int *)(em + W * budget); /* [≤ W·budget] shared entries, concatenated */
    unsigned *sm = (unsigned *)(sb + W * budget);
    __shared__ int nl[W], np[W], ne[W];

    const int g = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
    const int64_t t0 = (int64_t)blockIdx.x * W;
    const int nvalid = T - t0 < W ? (int)(T - t0) : W;
    int ns = 0;
    if (DENSE) {
        ns = (int)((pos0 + t0 + nvalid - 1) / MMA_BK) + 1;
    } else {
        if (thr > nvalid) thr = nvalid;
        /* the rows' lists, their shared entries and private ones (rows_prepare) */
        ns = rows_prepare<W, NT>(lists, eb, em, bm, sb, sm, nl, np, ne, nsel, blocks, t0, nvalid, nkv, g, budget, nbw,
                                 thr);
        __syncthreads();
    }

    const bool valid = warp < nvalid;
    const int64_t t = t0 + warp, rpos = pos0 + t;
    uint32_t qf[HD / 16][4];
    if (valid) {
        rows_q_frags<HD>(q + t * ldq + (int64_t)g * 16 * HD, qf);
    } else {
#pragma unroll
        for (int kk = 0; kk < HD / 16; kk++) qf[kk][0] = qf[kk][1] = qf[kk][2] = qf[kk][3] = 0u;
    }
    float O[HD / 8][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
#pragma unroll
    for (int dt = 0; dt < HD / 8; dt++) O[dt][0] = O[dt][1] = O[dt][2] = O[dt][3] = 0.f;
    const float sl2 = scale * LOG2E_F;
    const int64_t kstride = (int64_t)nkv * HD, nkeys = pos0 + T;
    const bf16 *Kg = K + (int64_t)g * HD, *Vg = V + (int64_t)g * HD;

    /* 3. shared entries: CTA-wide 64-key tiles through NS stages, one barrier per tile */
    if (ns > 0) {
#pragma unroll
        for (int j = 0; j < NS - 1; j++) {
            if (j < ns) {
                const int64_t k0 = (DENSE ? (int64_t)j : (int64_t)sb[j]) * MMA_BK;
                rows_async<HD, MMA_BK, NT>(tiles + j * 2 * TILE, Kg, kstride, k0, nkeys, threadIdx.x);
                rows_async<HD, MMA_BK, NT>(tiles + j * 2 * TILE + TILE, Vg, kstride, k0, nkeys, threadIdx.x);
            }
            cp_async_commit();
        }
        int stage = 0;
        for (int j = 0; j < ns; j++) {
            cp_async_wait<NS - 2>(); /* entry j has landed (this thread's copies) */
            __syncthreads();          /* everyone's copies, and everyone is done with entry j − 1 */
            {
                const int jn = j + NS - 1, sn = stage == 0 ? NS - 1 : stage - 1; /* into entry j − 1's stage */
                if (jn < ns) {
                    const int64_t k0 = (DENSE ? (int64_t)jn : (int64_t)sb[jn]) * MMA_BK;
                    rows_async<HD, MMA_BK, NT>(tiles + sn * 2 * TILE, Kg, kstride, k0, nkeys, threadIdx.x);
                    rows_async<HD, MMA_BK, NT>(tiles + sn * 2 * TILE + TILE, Vg, kstride, k0, nkeys, threadIdx.x);
                }
                cp_async_commit();
            }
            const int64_t k0 = (DENSE ? (int64_t)j : (int64_t)sb[j]) * MMA_BK;
            const bool chose = DENSE ? (valid && rpos >= k0) : ((sm[j] >> warp) & 1u);
            if (chose) {
                const bf16 *Ks = tiles + stage * 2 * TILE;
                float S[8][4];
#pragma unroll
                for (int nt = 0; nt < 8; nt++) S[nt][0] = S[nt][1] = S[nt][2] = S[nt][3] = 0.f;
#pragma unroll
                for (int c = 0; c < 4; c++) rows_qk16<HD>(qf, Ks + c * ROWS_RK * QP, S[2 * c], S[2 * c + 1]);
                if (k0 + MMA_BK - 1 > rpos) rows_causal(S, k0, rpos);
                rows_softmax<HD>(S, m, l, O, sl2);
#pragma unroll
                for (int c = 0; c < 4; c++) rows_pv16<HD>(S[2 * c], S[2 * c + 1], Ks + TILE + c * ROWS_RK * QP, O);
            }
            stage = stage == NS - 1 ? 0 : stage + 1;
        }
        cp_async_wait<0>();
        __syncthreads(); /* the rings below reuse the stages */
    }

    /* 4. the row's private entries: the warp's own ring of 16-key chunks, no block-wide barrier */
    const int n = (!DENSE && valid) ? np[warp] : 0;
    if (n > 0) {
        bf16 *ring = tiles + warp * ROWS_D * CHUNK;
        const int *pl = lists + warp * budget;
        /* chunk `sub` (0-3: K keys 16·sub.., 4-7: V) of block b into ring slot `slot` */
        auto issue = [&](int slot, int b, int sub) {
            rows_async<HD, ROWS_RK, 32>(ring + slot * CHUNK, sub < 4 ? Kg : Vg, kstride,
                                        (int64_t)b * MMA_BK + (sub & 3) * ROWS_RK, nkeys, lane);
        };
#pragma unroll
        for (int c = 0; c < ROWS_D - 1; c++) {
            issue(c, pl[0], c);
            cp_async_commit();
        }
        float S[8][4];
        for (int p = 0; p < n; p++) {
#pragma unroll
            for (int c = 0; c < 8; c++) {
                __syncwarp(); /* every lane is done with the slot refilled now */
                {
                    const int c2 = c + ROWS_D - 1, pp = p + c2 / 8;
                    if (pp < n) issue(c2 % ROWS_D, pl[pp], c2 % 8);
                    cp_async_commit();
                }
                cp_async_wait<ROWS_D - 1>();
                __syncwarp();
                const bf16 *sl = ring + (c % ROWS_D) * CHUNK;
                if (c < 4) {
#pragma unroll
                    for (int i = 0; i < 4; i++) S[2 * c][i] = S[2 * c + 1][i] = 0.f;
                    rows_qk16<HD>(qf, sl, S[2 * c], S[2 * c + 1]);
                }
                if (c == 3) {
                    const int64_t k0 = (int64_t)pl[p] * MMA_BK;
                    if (k0 + MMA_BK - 1 > rpos) rows_causal(S, k0, rpos);
                    rows_softmax<HD>(S, m, l, O, sl2);
                }
                if (c >= 4) rows_pv16<HD>(S[2 * (c - 4)], S[2 * (c - 4) + 1], sl, O);
            }
        }
        cp_async_wait<0>();
    }
    if (!valid) return;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;
        float *orow = o + t * ldo + (int64_t)(g * 16 + gq + 8 * r) * HD;
#pragma unroll
        for (int dt = 0; dt < HD / 8; dt++)
            orow[dt * 8 + 2 * tq] = O[dt][2 * r] * inv, orow[dt * 8 + 2 * tq + 1] = O[dt][2 * r + 1] * inv;
    }
}

/* ---- k_attn_rows_tma: k_attn_rows with its K/V tiles fetched by the tensor-memory accelerator (sm_90+) ----
 *
 * Same work split, classification and order of operations as k_attn_rows (so the same results up to the
 * order of nothing: every tile is computed exactly as there), but the 64-key shared tiles and the 16-key
 * private chunks are brought in by cp.async.bulk.tensor (one thread issues, an mbarrier per stage / ring
 * slot counts the bytes) into unpadded tiles with the 128-byte swizzle: each tile is HD/64 column halves
 * of [rows][64 bf16 = 128 B], the 16-byte chunk c of row n stored at chunk c ^ (n & 7). ldmatrix reads
 * stay conflict-free (the 8 rows of one 8×8 matrix land in 8 distinct bank groups) and the L2 delivers
 * exactly the sectors of the rows: Nsight Compute counted 1.5× the ideal L2 sectors for k_attn_rows'
 * 16-byte cp.async copies into the padded tiles (the kernel is L2-throughput bound: 81 % at kv 112K,
 * 1.91 ms per 2048-row chunk, H100), and an unpadded tile with a 16-byte XOR swizzle filled by cp.async
 * was worse (2×). Keys at or past pos0 + T are zero-filled by the copy engine (the tensor's extent).
 * Measured (H100, one 2048-row chunk of the 9B shape, random independent lists, tests/test_cuda_attention
 * with SALA_ATTN_BENCH=1): kv 128K 1.897 → 1.259 ms, 512K 2.212 → 1.900, 1M 2.526 → 2.299 (there the
 * random top-k blocks come from HBM: ncu of k_attn_rows at kv 475K showed DRAM at 62 % and an L2 hit rate
 * of 62 %, so removing the duplicate L2 sectors helps less); outputs identical to k_attn_rows. Eight rows
 * per block (SALA_SPARSE_TMA=2, one block per SM, the local window shared by 8 rows) measured 1.332 /
 * 1.916 / 2.300 ms: no gain over four.
 * The tensor maps (K and V; 64- and 16-key boxes) are encoded on the host per call through the driver
 * entry point (no link to libcuda). Compiled for __CUDA_ARCH__ >= 900 only; launched when the device
 * is sm_90+ and the binary holds that code, otherwise (and with SALA_SPARSE_TMA=0) k_attn_rows runs. */
template <int HD, int W> struct tma_shape {
    static constexpr int NS = W >= 8 ? 4 : 3;            /* stages of the shared tiles */
    static constexpr int TILEB = MMA_BK * HD * 2;         /* bytes of one 64-key K or V tile */
    static constexpr int CHUNKB = ROWS_RK * HD * 2;       /* bytes of one 16-key private chunk */
    static constexpr int TILESB = 2 * NS * TILEB > W * ROWS_D * CHUNKB ? 2 * NS * TILEB : W * ROWS_D * CHUNKB;
};

template <int HD, int W>
__global__ void __launch_bounds__(W * 32, W >= 8 ? 1 : 2)
    k_attn_rows_tma(const __grid_constant__ rows_tmaps maps, float *o, int64_t ldo, const float *q, int64_t ldq,
                    const int32_t *blocks, const int32_t *nsel, int64_t T, int64_t pos0, int nkv, int budget,
                    float scale, int nbw, int thr) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    typedef tma_shape<HD, W> SH;
    constexpr int NT = 32 * W, NS = SH::NS, TILEB = SH::TILEB, CHUNKB = SH::CHUNKB, NH = HD / 64;
    extern __shared__ uint4 smem_u4[];
    /* the swizzle pattern follows address bits 7-9: tiles start on a 1024-byte boundary */
    uint8_t *tiles = (uint8_t *)(((uintptr_t)smem_u4 + 1023) & ~(uintptr_t)1023);
    unsigned *bm = (unsigned *)tiles;          /* setup only: [W][nbw] bitmaps of the rows' blocks */
    int *lists = (int *)(tiles + SH::TILESB);  /* [W][budget] each row's blocks, then its private ones */
    int *eb = lists + W * budget;              /* [W][budget] shared entries by first row */
    unsigned *em = (unsigned *)(eb + W * budget);
    int *sb = (int *)(em + W * budget); /* [≤ W·budget] shared entries, concatenated */
    unsigned *sm = (unsigned *)(sb + W * budget);
    __shared__ int nl[W], np[W], ne[W];
    __shared__ __align__(8) unsigned long long fullb[NS], ringb[W][ROWS_D];

    const int g = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
    const int64_t t0 = (int64_t)blockIdx.x * W;
    const int nvalid = T - t0 < W ? (int)(T - t0) : W;
    int ns = 0;
    if (threadIdx.x == 0) {
        for (int s = 0; s < NS; s++) mbar_init(smem_u32(&fullb[s]), 1);
        for (int s = 0; s < W * ROWS_D; s++) mbar_init(smem_u32(&ringb[s / ROWS_D][s % ROWS_D]), 1);
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    if (thr > nvalid) thr = nvalid;
    /* the rows' lists, their shared entries and private ones (rows_prepare) */
    ns = rows_prepare<W, NT>(lists, eb, em, bm, sb, sm, nl, np, ne, nsel, blocks, t0, nvalid, nkv, g, budget, nbw, thr);
    /* the bitmaps' generic writes before the copy engine writes the same bytes */
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    __syncthreads();

    const unsigned tb = smem_u32(tiles);
    /* entry (block b) into stage s: K then V, each NH column halves of 64 keys */
    auto issue_tile = [&](int s, int b) {
        const unsigned bar = smem_u32(&fullb[s]), dst = tb + (unsigned)(s * 2 * TILEB);
        mbar_expect_tx(bar, 2u * TILEB);
#pragma unroll
        for (int h = 0; h < NH; h++) {
            tma_load3(dst + h * MMA_BK * 128, &maps.k64, bar, h * 64, g, b * MMA_BK);
            tma_load3(dst + TILEB + h * MMA_BK * 128, &maps.v64, bar, h * 64, g, b * MMA_BK);
        }
    };
    if (threadIdx.x == 0)
        for (int j = 0; j < NS - 1 && j < ns; j++) issue_tile(j, sb[j]);

    const bool valid = warp < nvalid;
    const int64_t t = t0 + warp, rpos = pos0 + t;
    uint32_t qf[HD / 16][4];
    if (valid) {
        rows_q_frags<HD>(q + t * ldq + (int64_t)g * 16 * HD, qf);
    } else {
#pragma unroll
        for (int kk = 0; kk < HD / 16; kk++) qf[kk][0] = qf[kk][1] = qf[kk][2] = qf[kk][3] = 0u;
    }
    float O[HD / 8][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
#pragma unroll
    for (int dt = 0; dt < HD / 8; dt++) O[dt][0] = O[dt][1] = O[dt][2] = O[dt][3] = 0.f;
    const float sl2 = scale * LOG2E_F;

    /* 3. shared entries: CTA-wide 64-key tiles through NS stages, one barrier per tile */
    if (ns > 0) {
        int stage = 0;
        for (int j = 0; j < ns; j++) {
            mbar_wait(smem_u32(&fullb[stage]), (unsigned)((j / NS) & 1));
            __syncthreads(); /* everyone is done with entry j − 1, whose stage is refilled now */
            if (threadIdx.x == 0 && j + NS - 1 < ns) issue_tile(stage == 0 ? NS - 1 : stage - 1, sb[j + NS - 1]);
            const int64_t k0 = (int64_t)sb[j] * MMA_BK;
            if ((sm[j] >> warp) & 1u) {
                const unsigned Ks = tb + (unsigned)(stage * 2 * TILEB), Vs = Ks + TILEB;
                float S[8][4];
#pragma unroll
                for (int nt = 0; nt < 8; nt++) S[nt][0] = S[nt][1] = S[nt][2] = S[nt][3] = 0.f;
#pragma unroll
                for (int c = 0; c < 4; c++) tma_qk16<HD>(qf, Ks, MMA_BK * 128, c * ROWS_RK, S[2 * c], S[2 * c + 1]);
                if (k0 + MMA_BK - 1 > rpos) rows_causal(S, k0, rpos);
                rows_softmax<HD>(S, m, l, O, sl2);
#pragma unroll
                for (int c = 0; c < 4; c++) tma_pv16<HD>(S[2 * c], S[2 * c + 1], Vs, MMA_BK * 128, c * ROWS_RK, O);
            }
            stage = stage == NS - 1 ? 0 : stage + 1;
        }
        __syncthreads(); /* the rings below reuse the stages */
    }

    /* 4. the row's private entries: the warp's own ring of 16-key chunks (slot s of fill f: parity f & 1) */
    const int n = valid ? np[warp] : 0;
    if (n > 0) {
        const unsigned ring = tb + (unsigned)(warp * ROWS_D * CHUNKB);
        const int *pl = lists + warp * budget;
        auto issue = [&](int slot, int b, int sub) { /* chunk sub (0-3: K keys 16·sub.., 4-7: V) of block b */
            if (lane == 0) {
                const unsigned bar = smem_u32(&ringb[warp][slot]), dst = ring + (unsigned)(slot * CHUNKB);
                mbar_expect_tx(bar, (unsigned)CHUNKB);
#pragma unroll
                for (int h = 0; h < NH; h++)
                    tma_load3(dst + h * ROWS_RK * 128, sub < 4 ? &maps.k16 : &maps.v16, bar, h * 64, g,
                              b * MMA_BK + (sub & 3) * ROWS_RK);
            }
        };
#pragma unroll
        for (int c = 0; c < ROWS_D - 1; c++) issue(c, pl[0], c);
        float S[8][4];
        for (int p = 0; p < n; p++) {
#pragma unroll
            for (int c = 0; c < 8; c++) {
                __syncwarp(); /* every lane is done with the slot refilled now */
                {
                    const int c2 = c + ROWS_D - 1, pp = p + c2 / 8;
                    if (pp < n) issue(c2 % ROWS_D, pl[pp], c2 % 8);
                }
                /* fill number of chunk 8p + c in its slot: (8p + c) / D, whose parity is (c / D) & 1 (8 / D even) */
                mbar_wait(smem_u32(&ringb[warp][c % ROWS_D]), (unsigned)((c / ROWS_D) & 1));
                const unsigned sl = ring + (unsigned)((c % ROWS_D) * CHUNKB);
                if (c < 4) {
#pragma unroll
                    for (int i = 0; i < 4; i++) S[2 * c][i] = S[2 * c + 1][i] = 0.f;
                    tma_qk16<HD>(qf, sl, ROWS_RK * 128, 0, S[2 * c], S[2 * c + 1]);
                }
                if (c == 3) {
                    const int64_t k0 = (int64_t)pl[p] * MMA_BK;
                    if (k0 + MMA_BK - 1 > rpos) rows_causal(S, k0, rpos);
                    rows_softmax<HD>(S, m, l, O, sl2);
                }
                if (c >= 4) tma_pv16<HD>(S[2 * (c - 4)], S[2 * (c - 4) + 1], sl, ROWS_RK * 128, 0, O);
            }
        }
    }
    if (!valid) return;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;
        float *orow = o + t * ldo + (int64_t)(g * 16 + gq + 8 * r) * HD;
#pragma unroll
        for (int dt = 0; dt < HD / 8; dt++)
            orow[dt * 8 + 2 * tq] = O[dt][2 * r] * inv, orow[dt * 8 + 2 * tq + 1] = O[dt][2 * r + 1] * inv;
    }
#endif
}

/* ---- k_attn_dense: dense causal prefill, G = 16, two rows per warp ----
 *
 * A block takes R = 2·NW consecutive rows of one KV group; warp w owns rows 2w and 2w+1, each one m16
 * tile of its 16 heads, so every K and V fragment read from shared memory (ldmatrix) feeds two mma and
 * each warp has twice the independent mma chains (the one-row-per-warp kernel is bound by shared-memory
 * reads and mma latency at 8 warps per SM). q is stored once as bf16 in shared memory and its A fragments
 * are re-read per tile. 64-key K and V tiles stream through NS stages of cp.async, one barrier per tile;
 * each tile is computed in two halves of 32 keys (online softmax per half) so that O of both rows (128
 * floats at hd 128) and S fit the 255 registers without spills (249 with NW = 4, two blocks per SM); O is
 * rescaled only when a row's maximum moved. Causal masking only on the tiles that reach past a row's
 * position; warps skip the halves after their rows. Blocks start from the last rows (the most keys), so
 * the first chunk's triangle leaves no tail. H100, 32/2 heads, hd 128, 2048-row chunk at 128K keys: 14.8 ms
 * (295 TFLOP/s) against 19.0 ms for k_attn_rows; NW = 8 with 3 or 4 stages (one block per SM): 15.4 ms. */

/* keys after the row's position (k0 + column > rpos) → −inf, NTL n-tiles of 8 keys */
template <int NTL>
static __device__ __forceinline__ void dense_causal(float S[NTL][4], int k0, int rpos) {
    const int tq = threadIdx.x & 3;
#pragma unroll
    for (int nt = 0; nt < NTL; nt++)
#pragma unroll
        for (int j = 0; j < 2; j++)
            if (k0 + nt * 8 + 2 * tq + j > rpos) S[nt][j] = S[nt][2 + j] = -INFINITY;
}

/* online softmax of NTL·8 keys (as rows_softmax); O is rescaled only when some row's maximum moved (a
 * warp vote: after the first tiles the maximum rarely changes) */
template <int HD, int NTL>
static __device__ __forceinline__ void dense_softmax(float S[NTL][4], float m[2], float l[2], float O[HD / 8][4],
                                                     float sl2) {
    float alpha[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        float mx = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < NTL; nt++) mx = fmaxf(mx, fmaxf(S[nt][2 * r], S[nt][2 * r + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float mnew = fmaxf(m[r], mx * sl2), mb = mnew == -INFINITY ? 0.f : mnew;
        alpha[r] = exp2f(m[r] - mb);
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
        l[r] = l[r] * alpha[r] + rs;
        m[r] = mnew;
    }
    if (__any_sync(0xffffffffu, alpha[0] != 1.f || alpha[1] != 1.f))
#pragma unroll
        for (int dt = 0; dt < HD / 8; dt++)
            O[dt][0] *= alpha[0], O[dt][1] *= alpha[0], O[dt][2] *= alpha[1], O[dt][3] *= alpha[1];
}

template <int HD, int NW, int NS>
__global__ void __launch_bounds__(NW * 32, NW >= 8 ? 1 : 2)
    k_attn_dense(float *o, int64_t ldo, const float *q, int64_t ldq, const bf16 *K, const bf16 *V, int64_t T,
                 int64_t pos0, int nkv, float scale) {
    constexpr int NT = NW * 32, R = 2 * NW, QP = mma_shape<HD>::QP, TILE = MMA_BK * QP, CH = HD / 8;
    extern __shared__ uint4 smem_u4[];
    bf16 *Qs = (bf16 *)smem_u4, *tiles = Qs + R * 16 * QP; /* Qs [R·16][QP]; NS stages of (K, V) */
    const int g = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
    const int64_t t0 = (int64_t)(gridDim.x - 1 - blockIdx.x) * R;
    const int nvalid = T - t0 < R ? (int)(T - t0) : R;
    const int ns = (int)((pos0 + t0 + nvalid - 1) / MMA_BK) + 1;
    const int64_t kstride = (int64_t)nkv * HD, nkeys = pos0 + T;
    const bf16 *Kg = K + (int64_t)g * HD, *Vg = V + (int64_t)g * HD;
#pragma unroll
    for (int j = 0; j < NS - 1; j++) {
        if (j < ns) {
            rows_async<HD, MMA_BK, NT>(tiles + j * 2 * TILE, Kg, kstride, (int64_t)j * MMA_BK, nkeys, threadIdx.x);
            rows_async<HD, MMA_BK, NT>(tiles + j * 2 * TILE + TILE, Vg, kstride, (int64_t)j * MMA_BK, nkeys,
                                       threadIdx.x);
        }
        cp_async_commit();
    }
    for (int e = threadIdx.x; e < R * 16 * CH; e += NT) { /* the rows' 16 query vectors each, as bf16 */
        const int v = e / CH, c = (e % CH) * 8, r = v >> 4;
        uint4 x = make_uint4(0u, 0u, 0u, 0u);
        if (r < nvalid) x = load8_bf16(q + (t0 + r) * ldq + (int64_t)(g * 16 + (v & 15)) * HD + c);
        *(uint4 *)&Qs[v * QP + c] = x;
    }
    int rpos[2]; /* positions < 2³¹ (the cache is indexed by int32 block ids too) */
#pragma unroll
    for (int i = 0; i < 2; i++) rpos[i] = 2 * warp + i < nvalid ? (int)(pos0 + t0) + 2 * warp + i : -1;
    const int rmax = rpos[0] > rpos[1] ? rpos[0] : rpos[1];
    float O[2][HD / 8][4], m[2][2], l[2][2];
#pragma unroll
    for (int i = 0; i < 2; i++) {
        m[i][0] = m[i][1] = -INFINITY, l[i][0] = l[i][1] = 0.f;
#pragma unroll
        for (int dt = 0; dt < HD / 8; dt++) O[i][dt][0] = O[i][dt][1] = O[i][dt][2] = O[i][dt][3] = 0.f;
    }
    const float sl2 = scale * LOG2E_F;
    /* ldmatrix addresses (shared window, bytes): A fragments of the warp's two rows, K and V fragments */
    const unsigned qa = (unsigned)__cvta_generic_to_shared(Qs + (2 * warp * 16 + (lane & 15)) * QP + (lane >> 4) * 8),
                   tb = (unsigned)__cvta_generic_to_shared(tiles),
                   kofs = 2u * (((lane & 7) + ((lane >> 4) << 3)) * QP + ((lane >> 3) & 1) * 8),
                   vofs = 2u * (TILE + (lane & 15) * QP + (lane >> 4) * 8);
    int stage = 0;
    for (int j = 0; j < ns; j++) {
        cp_async_wait<NS - 2>();
        __syncthreads();
        {
            const int jn = j + NS - 1, sn = stage == 0 ? NS - 1 : stage - 1;
            if (jn < ns) {
                rows_async<HD, MMA_BK, NT>(tiles + sn * 2 * TILE, Kg, kstride, (int64_t)jn * MMA_BK, nkeys,
                                           threadIdx.x);
                rows_async<HD, MMA_BK, NT>(tiles + sn * 2 * TILE + TILE, Vg, kstride, (int64_t)jn * MMA_BK, nkeys,
                                           threadIdx.x);
            }
            cp_async_commit();
        }
        const int k0 = j * MMA_BK;
        const unsigned Ks = tb + 2u * stage * 2 * TILE + kofs, Vs = tb + 2u * stage * 2 * TILE + vofs;
#pragma unroll
        for (int h = 0; h < 2; h++) { /* two halves of 32 keys: S and P of both rows fit the registers */
            const int kh = k0 + 32 * h;
            if (rmax < kh) break; /* causal: no row of the warp sees these keys */
            float S[2][4][4];
#pragma unroll
            for (int i = 0; i < 2; i++)
#pragma unroll
                for (int nt = 0; nt < 4; nt++) S[i][nt][0] = S[i][nt][1] = S[i][nt][2] = S[i][nt][3] = 0.f;
#pragma unroll
            for (int kk = 0; kk < HD / 16; kk++) {
                uint32_t a0[4], a1[4];
                ldsm_x4_a(a0, qa + 32u * kk);
                ldsm_x4_a(a1, qa + 2u * 16 * QP + 32u * kk);
#pragma unroll
                for (int np = 0; np < 2; np++) {
                    uint32_t b[4];
                    ldsm_x4_a(b, Ks + 2u * (2 * h + np) * 16 * QP + 32u * kk);
                    uint32_t b0[2] = {b[0], b[1]}, b1[2] = {b[2], b[3]};
                    mma16816(S[0][2 * np], a0, b0);
                    mma16816(S[0][2 * np + 1], a0, b1);
                    mma16816(S[1][2 * np], a1, b0);
                    mma16816(S[1][2 * np + 1], a1, b1);
                }
            }
            uint32_t P[2][2][4]; /* probabilities as bf16 A fragments of the two 16-key steps */
#pragma unroll
            for (int i = 0; i < 2; i++) {
                if (kh + 31 > rpos[i]) dense_causal<4>(S[i], kh, rpos[i]);
                dense_softmax<HD, 4>(S[i], m[i], l[i], O[i], sl2);
#pragma unroll
                for (int ks = 0; ks < 2; ks++) {
                    P[i][ks][0] = pack_bf16(S[i][2 * ks][0], S[i][2 * ks][1]);
                    P[i][ks][1] = pack_bf16(S[i][2 * ks][2], S[i][2 * ks][3]);
                    P[i][ks][2] = pack_bf16(S[i][2 * ks + 1][0], S[i][2 * ks + 1][1]);
                    P[i][ks][3] = pack_bf16(S[i][2 * ks + 1][2], S[i][2 * ks + 1][3]);
                }
            }
#pragma unroll
            for (int ks = 0; ks < 2; ks++) {
#pragma unroll
                for (int dp = 0; dp < HD / 16; dp++) {
                    uint32_t b[4];
                    ldsm_x4_trans_a(b, Vs + 2u * (2 * h + ks) * 16 * QP + 32u * dp);
                    uint32_t b0[2] = {b[0], b[1]}, b1[2] = {b[2], b[3]};
                    mma16816(O[0][2 * dp], P[0][ks], b0);
                    mma16816(O[0][2 * dp + 1], P[0][ks], b1);
                    mma16816(O[1][2 * dp], P[1][ks], b0);
                    mma16816(O[1][2 * dp + 1], P[1][ks], b1);
                }
            }
        }
        stage = stage == NS - 1 ? 0 : stage + 1;
    }
    cp_async_wait<0>();
#pragma unroll
    for (int i = 0; i < 2; i++) {
        if (rpos[i] < 0) continue;
        const int64_t t = t0 + 2 * warp + i;
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const float inv = l[i][r] > 0.f ? 1.f / l[i][r] : 0.f;
            float *orow = o + t * ldo + (int64_t)(g * 16 + gq + 8 * r) * HD + 2 * tq;
#pragma unroll
            for (int dt = 0; dt < HD / 8; dt++)
                orow[dt * 8] = O[i][dt][2 * r] * inv, orow[dt * 8 + 1] = O[i][dt][2 * r + 1] * inv;
        }
    }
}

/* rows kernel launch; returns -1 when the shape is not for it (the caller falls back) */
template <int HD, int W, bool DENSE>
static int launch_rows(cudaStream_t st, float *o, int64_t ldo, const float *q, int64_t ldq, const void *K,
                       const void *V, const int32_t *blocks, const int32_t *nsel, int64_t T, int64_t pos0, int nkv,
                       int budget, float scale, int thr) {
    typedef rows_shape<HD, W> SH;
    int nbw = DENSE ? 0 : (int)(((pos0 + T + MMA_BK - 1) / MMA_BK + 31) / 32);
    if ((size_t)W * nbw * 4 > sizeof(bf16) * (size_t)SH::TILES) return -1;
    size_t smem = sizeof(bf16) * (size_t)SH::TILES + (DENSE ? 0 : (size_t)W * budget * 4 * 5);
    if (smem > smem_optin()) return -1; /* too big for this GPU: the k_attn_mma path */
    static size_t attr = 0;
    if (smem > attr) {
        cudaFuncSetAttribute(k_attn_rows<HD, W, DENSE>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        attr = smem;
    }
    dim3 grid((unsigned)((T + W - 1) / W), nkv);
    k_attn_rows<HD, W, DENSE><<<grid, W * 32, smem, st>>>(o, ldo, q, ldq, (const bf16 *)K, (const bf16 *)V, blocks,
                                                          nsel, T, pos0, nkv, budget, scale, nbw, thr);
    return LAUNCH_CHECK();
}

/* SALA_SPARSE_TMA: 0 k_attn_rows, 1 k_attn_rows_tma with 4 rows per block, 2 with 8 rows, 3 k_attn_seg
 * (attn_seg.cu) with 16 rows per block, 4 with 8; unset (-1): k_attn_seg with 16 rows when the call has
 * a row set of 16 for every SM and ≥ 256K keys, else mode 1 */
static int tma_mode(void) {
    const char *e = getenv("SALA_SPARSE_TMA");
    return e && *e ? atoi(e) : -1;
}

/* attn_seg.cu: the segment-paced kernel; -1 when not for this shape or device */
int attn_seg_sparse(cudaStream_t st, int mode, int force, float *o, int64_t ldo, const float *q, int64_t ldq,
                    const void *K, const void *V, const int32_t *blocks, const int32_t *nsel, int64_t T, int64_t pos0,
                    int nkv, int hd, int budget, float scale);

/* whether this device runs k_attn_rows_tma<HD, W> (sm_90+, and the binary holds code built for it) */
template <int HD, int W> static bool tma_usable(void) {
    static int ok = -1;
    if (ok < 0) {
        int dev = 0, major = 0;
        cudaGetDevice(&dev);
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
        cudaFuncAttributes fa;
        ok = major >= 9 && cudaFuncGetAttributes(&fa, k_attn_rows_tma<HD, W>) == cudaSuccess && fa.ptxVersion >= 90 &&
             fa.binaryVersion >= 90 && tma_encoder() != NULL;
        cudaGetLastError();
    }
    return ok == 1;
}

/* sparse rows launch with TMA tiles; -1 when not for this shape or device (the caller falls back) */
template <int HD, int W>
static int launch_rows_tma(cudaStream_t st, float *o, int64_t ldo, const float *q, int64_t ldq, const void *K,
                           const void *V, const int32_t *blocks, const int32_t *nsel, int64_t T, int64_t pos0, int nkv,
                           int budget, float scale, int thr) {
    typedef tma_shape<HD, W> SH;
    if (!tma_usable<HD, W>()) return -1;
    const int64_t nkeys = pos0 + T;
    int nbw = (int)(((nkeys + MMA_BK - 1) / MMA_BK + 31) / 32);
    if ((size_t)W * nbw * 4 > (size_t)SH::TILESB || nkeys > INT32_MAX - 2 * MMA_BK) return -1;
    if (((uintptr_t)K | (uintptr_t)V) & 15) return -1;
    size_t smem = 1024 + (size_t)SH::TILESB + (size_t)W * budget * 4 * 5;
    if (smem > smem_optin()) return -1;
    rows_tmaps maps;
    if (tma_encode(&maps.k64, K, HD, nkv, nkeys, MMA_BK) || tma_encode(&maps.v64, V, HD, nkv, nkeys, MMA_BK) ||
        tma_encode(&maps.k16, K, HD, nkv, nkeys, ROWS_RK) || tma_encode(&maps.v16, V, HD, nkv, nkeys, ROWS_RK))
        return -1;
    static size_t attr = 0;
    if (smem > attr) {
        cudaFuncSetAttribute(k_attn_rows_tma<HD, W>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        attr = smem;
    }
    dim3 grid((unsigned)((T + W - 1) / W), nkv);
    k_attn_rows_tma<HD, W><<<grid, W * 32, smem, st>>>(maps, o, ldo, q, ldq, blocks, nsel, T, pos0, nkv, budget,
                                                        scale, nbw, thr);
    return LAUNCH_CHECK();
}

/* the TMA kernel for hd 64 and 128 (the box is 64 columns); -1 otherwise */
template <int HD>
static int sparse_rows_tma(cudaStream_t st, float *o, int64_t ldo, const float *q, int64_t ldq, const void *K,
                           const void *V, const int32_t *blocks, const int32_t *nsel, int64_t T, int64_t pos0, int nkv,
                           int budget, float scale) {
    if constexpr (HD % 64 == 0) {
        const int mode = tma_mode();
        if (mode < 0 || mode == 3 || mode == 4) {
            const int e = attn_seg_sparse(st, mode < 0 ? 3 : mode, mode >= 0, o, ldo, q, ldq, K, V, blocks, nsel, T,
                                          pos0, nkv, HD, budget, scale);
            if (e >= 0 || mode >= 0) return e;
        }
        if (mode == 1 || mode < 0)
            return launch_rows_tma<HD, 4>(st, o, ldo, q, ldq, K, V, blocks, nsel, T, pos0, nkv, budget, scale,
                                          ROWS_THR);
        if (mode == 2)
            return launch_rows_tma<HD, 8>(st, o, ldo, q, ldq, K, V, blocks, nsel, T, pos0, nkv, budget, scale,
                                          ROWS_THR);
    }
    return -1;
}

/* dense causal launch (G = 16, enough rows to fill the GPU); returns -1 when the shape is not for it */
template <int HD, int NW, int NS>
static int launch_dense(cudaStream_t st, float *o, int64_t ldo, const float *q, int64_t ldq, const void *K,
                        const void *V, int64_t T, int64_t pos0, int nkv, float scale) {
    constexpr int R = 2 * NW;
    size_t smem = sizeof(bf16) * (size_t)(R * 16 + NS * 2 * MMA_BK) * mma_shape<HD>::QP;
    if (smem > smem_optin()) return -1;
    static size_t attr = 0;
    if (smem > attr) {
        cudaFuncSetAttribute(k_attn_dense<HD, NW, NS>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        attr = smem;
    }
    dim3 grid((unsigned)((T + R - 1) / R), nkv);
    k_attn_dense<HD, NW, NS><<<grid, NW * 32, smem, st>>>(o, ldo, q, ldq, (const bf16 *)K, (const bf16 *)V, T, pos0,
                                                         nkv, scale);
    return LAUNCH_CHECK();
}

template <int HD, int NW, bool SPARSE>
static int launch_mma(cudaStream_t st, float *o, int64_t ldo, const float *q, int64_t ldq, const void *K, const void *V,
                      const int32_t *blocks, const int32_t *nsel, int64_t T, int64_t pos0, int nh, int nkv, int budget,
                      float scale, float *scratch, int64_t scratch_floats) {
    constexpr int M = 16 * NW;
    int G = nh / nkv;
    /* sparse: union entries of at most M/G + 1 rows, and a bitmap over the blocks of the call */
    int rmax = M / G + 1 < 64 ? M / G + 1 : 64;
    int ucap = SPARSE ? rmax * budget : 0;
    int nbw = SPARSE ? (int)(((pos0 + T + MMA_BK - 1) / MMA_BK + 31) / 32) : 0;
    size_t smem = sizeof(bf16) * (size_t)((M + 4 * MMA_BK) * mma_shape<HD>::QP) + (size_t)ucap * 12 + (size_t)nbw * 8;
    if (smem > 227 * 1024) return (int)cudaErrorInvalidValue;
    static size_t attr = 0;
    if (smem > attr) {
        cudaFuncSetAttribute(k_attn_mma<HD, NW, SPARSE>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        attr = smem;
    }
    int64_t nblk = (T * G + M - 1) / M;
    int64_t ntiles = SPARSE ? budget : (pos0 + T + MMA_BK - 1) / MMA_BK;
    int nsplit = (!SPARSE || T == 1) ? attn_pick_split(nblk * nkv, ntiles, T * nh, HD, scratch_floats) : 1;
    dim3 grid((unsigned)nblk, nkv, nsplit);
    k_attn_mma<HD, NW, SPARSE><<<grid, NW * 32, smem, st>>>(o, ldo, q, ldq, (const bf16 *)K, (const bf16 *)V, blocks,
                                                            nsel, T, pos0, nh, nkv, budget, scale, nsplit, scratch,
                                                            nbw, ucap);
    int e = LAUNCH_CHECK();
    if (e || nsplit == 1) return e;
    return attn_combine(st, o, ldo, scratch, nsplit, T * nh, nh, HD);
}

template <int HD, bool SPARSE>
static int mma_nw(cudaStream_t st, float *o, int64_t ldo, const float *q, int64_t ldq, const void *K, const void *V,
                  const int32_t *blocks, const int32_t *nsel, int64_t T, int64_t pos0, int nh, int nkv, int budget,
                  float scale, float *scratch, int64_t sf) {
    if (nh / nkv == 16) { /* one warp per row (prefill; dense only with enough rows to fill the GPU) */
        int e = -1;
        if (SPARSE && T >= 2)
            e = sparse_rows_tma<HD>(st, o, ldo, q, ldq, K, V, blocks, nsel, T, pos0, nkv, budget, scale);
        if (SPARSE && T >= 2 && e < 0)
            e = launch_rows<HD, ROWS_W, false>(st, o, ldo, q, ldq, K, V, blocks, nsel, T, pos0, nkv, budget, scale,
                                               ROWS_THR);
        else if (!SPARSE && T * nkv >= 4 * cu_sm_count()) { /* dense causal: two rows per warp */
            /* 4 warps (8 rows), 2 stages: two blocks per SM (104 KB of shared memory each at hd 128) */
            e = launch_dense<HD, 4, 2>(st, o, ldo, q, ldq, K, V, T, pos0, nkv, scale);
            if (e < 0 && (T + ROWS_W - 1) / ROWS_W * nkv >= 2 * cu_sm_count())
                e = launch_rows<HD, ROWS_W, true>(st, o, ldo, q, ldq, K, V, NULL, NULL, T, pos0, nkv, 0, scale, 0);
        }
        if (e >= 0) return e;
    }
    if (T * (nh / nkv) <= 16)
        return launch_mma<HD, 1, SPARSE>(st, o, ldo, q, ldq, K, V, blocks, nsel, T, pos0, nh, nkv, budget, scale,
                                         scratch, sf);
    return launch_mma<HD, 4, SPARSE>(st, o, ldo, q, ldq, K, V, blocks, nsel, T, pos0, nh, nkv, budget, scale, scratch,
                                     sf);
}

int attn_mma(cudaStream_t st, int sparse, float *o, int64_t ldo, const float *q, int64_t ldq, const void *K,
             const void *V, const int32_t *blocks, const int32_t *nsel, int64_t T, int64_t pos0, int nh, int nkv,
             int hd, int budget, float scale, float *scratch, int64_t scratch_floats) {
#define MMA_CASE(HD)                                                                                               \
    case HD:                                                                                                       \
        return sparse ? mma_nw<HD, true>(st, o, ldo, q, ldq, K, V, blocks, nsel, T, pos0, nh, nkv, budget, scale,  \
                                         scratch, scratch_floats)                                                  \
                      : mma_nw<HD, false>(st, o, ldo, q, ldq, K, V, blocks, nsel, T, pos0, nh, nkv, budget, scale, \
                                          scratch, scratch_floats);
    switch (hd) {
        MMA_CASE(16)
        MMA_CASE(32)
        MMA_CASE(64)
        MMA_CASE(128)
    default: return (int)cudaErrorInvalidValue;
    }
#undef MMA_CASE
}
