/* attn_mma.cu — tensor-core attention for bf16 caches (the default precision), dense causal and
 * InfLLM-v2 block-sparse in one template (mma_core.cuh).
 *
 * Same work split as the fp32 kernels: a block takes 16·NW consecutive (row, head-of-group) pairs of one
 * KV group, one warp per 16 pairs, so the G heads sharing a KV head read each key tile once. Dense: the
 * key tiles 0 .. last row. Sparse: the block first builds the union of its rows' block lists in shared
 * memory (a bitmap over the blocks and its prefix counts), each entry with a bitmask of the rows that
 * chose it; a block's scores are −inf for rows that did not choose it. Keys after a row's position are
 * masked. K and V tiles stream through two stages with cp.async (the next tile loads while the current
 * one is computed); V stays row-major and ldmatrix.trans forms the P·V operands. q is rounded to bf16 (the official
 * kernels run on bf16 q); probabilities are rounded to bf16 for P·V; scores, softmax statistics and the
 * output accumulate in fp32. Decode-sized launches use one warp per block and split the keys. */
#include "cuda/attn_internal.cuh"
#include "cuda/mma_core.cuh"

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
