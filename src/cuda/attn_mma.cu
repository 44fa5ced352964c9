/* attn_mma.cu — tensor-core attention for bf16 caches (the default precision), dense causal and
 * InfLLM-v2 block-sparse in one template (mma_core.cuh).
 *
 * Same work split as the fp32 kernels: a block takes 16·NW consecutive (row, head-of-group) pairs of one
 * KV group, one warp per 16 pairs, so the G heads sharing a KV head read each key tile once. Dense: the
 * key tiles 0 .. last row. Sparse: warp 0 merges the (ascending) block lists of the block's rows into one
 * ascending sequence, each block with a bitmask of the rows that chose it; a block's scores are −inf for
 * rows that did not choose it. Keys after a row's position are masked. q is rounded to bf16 (the official
 * kernels run on bf16 q); probabilities are rounded to bf16 for P·V; scores, softmax statistics and the
 * output accumulate in fp32. Decode-sized launches use one warp per block and split the keys. */
#include "cuda/attn_internal.cuh"
#include "cuda/mma_core.cuh"

template <int HD, int NW, bool SPARSE>
__global__ void __launch_bounds__(NW * 32) k_attn_mma(float *o, int64_t ldo, const float *q, int64_t ldq, const bf16 *K,
                                                      const bf16 *V, const int32_t *blocks, const int32_t *nsel,
                                                      int64_t T, int64_t pos0, int nh, int nkv, int budget, float scale,
                                                      int nsplit, float *part) {
    constexpr int M = 16 * NW, NT = 32 * NW, QP = mma_shape<HD>::QP;
    extern __shared__ uint4 smem_u4[];
    bf16 *Qs = (bf16 *)smem_u4, *Ks = Qs + M * QP, *Vt = Ks + MMA_BK * QP;
    __shared__ int ptr[64];
    __shared__ int cur_blk;
    __shared__ unsigned long long cur_mask;
    const int g = blockIdx.y, split = blockIdx.z, G = nh / nkv;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
    const int64_t npairs = T * G, p0 = (int64_t)blockIdx.x * M;
    const int64_t t_first = p0 / G;
    const int64_t t_last = (p0 + M - 1) / G < T - 1 ? (p0 + M - 1) / G : T - 1;
    const int R = (int)(t_last - t_first + 1);
    mma_load_queries<HD, NT>(Qs, M, q, ldq, p0, npairs, G, g);
    if (SPARSE && threadIdx.x < 64) ptr[threadIdx.x] = 0;
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
    const int64_t kstride = (int64_t)nkv * HD, nkeys = pos0 + t_last + 1;
    const int64_t ntiles = (nkeys + MMA_BK - 1) / MMA_BK, tps = (ntiles + nsplit - 1) / nsplit;
    const int64_t kt0 = SPARSE ? 0 : split * tps, kt1 = SPARSE ? 0 : (kt0 + tps < ntiles ? kt0 + tps : ntiles);
    const int per = (budget + nsplit - 1) / nsplit, u0 = split * per;
    const int u1 = nsplit == 1 ? 0x7fffffff : u0 + per;
    for (int64_t it = SPARSE ? 0 : kt0;; it++) {
        int64_t k0;
        unsigned long long mask = ~0ull;
        if (SPARSE) {
            if (it >= u1) break;
            __syncthreads();
            if (warp == 0) {
                int cand = 0x7fffffff;
                for (int r = lane; r < R; r += 32) {
                    int64_t tg = (t_first + r) * nkv + g;
                    if (ptr[r] < nsel[tg]) cand = min(cand, blocks[tg * budget + ptr[r]]);
                }
                for (int off = 16; off > 0; off >>= 1) cand = min(cand, __shfl_xor_sync(0xffffffffu, cand, off));
                unsigned long long mk = 0;
                for (int r = lane; r < R; r += 32) {
                    int64_t tg = (t_first + r) * nkv + g;
                    if (ptr[r] < nsel[tg] && blocks[tg * budget + ptr[r]] == cand) {
                        mk |= 1ull << r;
                        ptr[r]++;
                    }
                }
                for (int off = 16; off > 0; off >>= 1) mk |= __shfl_xor_sync(0xffffffffu, mk, off);
                if (lane == 0) {
                    cur_blk = cand;
                    cur_mask = mk;
                }
            }
            __syncthreads();
            const int blk = cur_blk;
            mask = cur_mask;
            if (blk == 0x7fffffff) break;
            if (it < u0) continue;
            k0 = (int64_t)blk * MMA_BK;
        } else {
            if (it >= kt1) break;
            k0 = it * MMA_BK;
        }
        __syncthreads();
        mma_load_keys<HD, NT>(Ks, K + (int64_t)g * HD, kstride, k0, nkeys);
        mma_load_values_t<HD, NT>(Vt, V + (int64_t)g * HD, kstride, k0, nkeys);
        __syncthreads();
        float S[8][4];
        mma_qk<HD>(qf, Ks, S);
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const bool chose = !SPARSE || ((mask >> rrow[r]) & 1ull);
#pragma unroll
            for (int nt = 0; nt < 8; nt++)
#pragma unroll
                for (int j = 0; j < 2; j++) {
                    int64_t key = k0 + nt * 8 + 2 * tq + j;
                    S[nt][2 * r + j] = (chose && key <= rpos[r]) ? S[nt][2 * r + j] * scale : -INFINITY;
                }
        }
        mma_softmax<HD>(S, m, l, O, true);
        mma_pv<HD>(S, Vt, O);
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
            if (tq == 0) rec[0] = m[r], rec[1] = l[r];
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
    size_t smem = sizeof(bf16) * (size_t)((M + MMA_BK) * mma_shape<HD>::QP + HD * mma_shape<HD>::VP);
    static bool attr = false;
    if (!attr) {
        cudaFuncSetAttribute(k_attn_mma<HD, NW, SPARSE>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        attr = true;
    }
    int G = nh / nkv;
    int64_t nblk = (T * G + M - 1) / M;
    int64_t ntiles = SPARSE ? budget : (pos0 + T + MMA_BK - 1) / MMA_BK;
    int nsplit = (!SPARSE || T == 1) ? attn_pick_split(nblk * nkv, ntiles, T * nh, HD, scratch_floats) : 1;
    dim3 grid((unsigned)nblk, nkv, nsplit);
    k_attn_mma<HD, NW, SPARSE><<<grid, NW * 32, smem, st>>>(o, ldo, q, ldq, (const bf16 *)K, (const bf16 *)V, blocks,
                                                            nsel, T, pos0, nh, nkv, budget, scale, nsplit, scratch);
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
