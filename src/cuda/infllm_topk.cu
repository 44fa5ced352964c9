/* infllm_topk.cu — InfLLM-v2 block selection for each row and KV group (MODEL.md §4 steps 3–4).
 *
 * Candidates are the blocks 0..q_block of the row. Blocks after q_block score 0 or −inf while every
 * past block scores ≥ 0 or is forced, so with ties going to the lower index they can only be picked
 * when all past blocks are, and are dropped then: if q_block + 1 ≤ budget the row keeps every past
 * block, otherwise the top `budget` past blocks. Forced blocks (b < init_blocks, and the local window
 * q_block − local_blocks ≤ b ≤ q_block) score +inf.
 *
 * One thread block per (row, group): the pooled scores (plus the halo key of each tile's first block)
 * become order-preserving unsigned keys, in shared memory when the launch's longest row has at most
 * TOPK_SMEM_KEYS candidates (else in place in `pooled`, in global memory); a 3-pass 11/11/10-bit radix
 * select (warp-aggregated shared histograms, the digit found by a block scan) gives the budget-th
 * largest key and how many of its equals to take; a compaction in block order (each warp a contiguous
 * range, ballots within it) then keeps everything above it and the lowest-index equals — exactly
 * "ties to the lower block index" — already ascending. */
#include "cuda/common.cuh"

#define TOPK_SMEM_KEYS 16384 /* 64 KB of keys: a 1M-token row at block 64; fits sm_80/90/120 */
#define TOPK_BINS 2048

/* inverse of sort_key (a bijection): the exact float back */
static __device__ __forceinline__ float key_float(uint32_t k) {
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}


template <int NT, bool SMEM>
__global__ void __launch_bounds__(NT) k_infllm_topk(int32_t *blocks, int32_t *nsel, float *pooled, const float *halo,
                                                     int64_t pos0, int nkv, int block, int init_blocks,
                                                     int local_blocks, int budget, int NBT, int64_t nblk_cap,
                                                     int64_t ntile_cap) {
    extern __shared__ uint32_t skey[];
    __shared__ int hist[TOPK_BINS];
    __shared__ int sel_digit, sel_k;
    const int tid = threadIdx.x, lane = tid & 31;
    const int64_t tg = blockIdx.x; /* t * nkv + g */
    const int64_t t = tg / nkv;
    const int64_t r = pos0 + t, qb64 = r / block;
    int32_t *out = blocks + tg * budget;
    if (qb64 + 1 <= budget) {
        for (int b = tid; b <= qb64; b += NT) out[b] = b;
        if (tid == 0) nsel[tg] = (int32_t)(qb64 + 1);
        return;
    }
    const int qb = (int)qb64, ncand = qb + 1, flo = qb - local_blocks; /* forced: b < init_blocks || b >= flo */
    float *pv = pooled + tg * nblk_cap;
    uint32_t *key = SMEM ? skey : (uint32_t *)pv;
    const float *hal = halo + tg * ntile_cap;
#pragma unroll 4
    for (int b = tid; b < ncand; b += NT) key[b] = sort_key(b < init_blocks || b >= flo ? INFINITY : pv[b]);
    __syncthreads();
    /* the first block of each later tile also pools the halo key (the last key of the previous tile) */
    for (int64_t j = 1 + tid; j * NBT < ncand; j += NT) {
        const int b = (int)(j * NBT);
        if (b < init_blocks || b >= flo) continue;
        key[b] = sort_key(fmaxf(key_float(key[b]), hal[j]));
    }
    uint32_t prefix = 0, maskbits = 0;
    int k = budget;
#pragma unroll 1
    for (int pass = 0; pass < 3; pass++) {
        const int shift = pass == 0 ? 21 : pass == 1 ? 10 : 0;
        const uint32_t dmask = pass == 2 ? 1023u : 2047u;
        __syncthreads();
        for (int i = tid; i < TOPK_BINS; i += NT) hist[i] = 0;
        __syncthreads();
        /* scores cluster in a few exponents: lanes of a warp adding to the same bin are merged first
         * (one atomic per distinct bin and warp), else the first pass serialises on one address */
        for (int base = 0; base < ncand; base += NT) {
            const int b = base + tid;
            const uint32_t u = b < ncand ? key[b] : 0u;
            const bool act = b < ncand && (u & maskbits) == prefix;
            const unsigned active = __ballot_sync(0xffffffffu, act);
            if (act) {
                const unsigned bin = (u >> shift) & dmask;
                const unsigned peers = __match_any_sync(active, bin);
                if (lane == __ffs(peers) - 1) atomicAdd(&hist[bin], __popc(peers));
            }
        }
        __syncthreads();
        /* digit: the bin d with (count above d) < k ≤ (count from d up); each thread owns PER bins,
         * the suffix sum over threads finds the one owner (counts total ≥ k by construction) */
        constexpr int PER = TOPK_BINS / NT;
        int s = 0;
#pragma unroll
        for (int i = 0; i < PER; i++) s += hist[tid * PER + i];
        int tot;
        const int excl = scan_block<NT>(s, &tot);
        int cum = tot - excl - s;
        if (cum < k && cum + s >= k) {
            for (int i = PER - 1; i >= 0; i--) {
                const int h = hist[tid * PER + i];
                if (cum + h >= k) {
                    sel_digit = tid * PER + i;
                    sel_k = k - cum;
                    break;
                }
                cum += h;
            }
        }
        __syncthreads();
        prefix |= (uint32_t)sel_digit << shift;
        maskbits |= dmask << shift;
        k = sel_k;
    }
    const uint32_t thr = prefix; /* the budget-th largest key; take k of its equals, lowest index first */
    /* compaction: warp w scans [c0, c1) in 32-wide steps; equals are ranked in block order */
    const int nw = NT / 32, w = tid >> 5;
    const int chunk = ((ncand + nw - 1) / nw + 31) & ~31;
    const int c0 = w * chunk, c1 = min(c0 + chunk, ncand);
    const unsigned lt = (1u << lane) - 1u;
    int neq = 0;
    for (int b0 = c0; b0 < c1; b0 += 32) {
        const int b = b0 + lane;
        neq += __popc(__ballot_sync(0xffffffffu, b < c1 && key[b] == thr));
    }
    int tot;
    const int eq_base = __shfl_sync(0xffffffffu, scan_block<NT>(lane == 0 ? neq : 0, &tot), 0);
    int ntake = 0;
    for (int b0 = c0, e = eq_base; b0 < c1; b0 += 32) {
        const int b = b0 + lane;
        const uint32_t u = b < c1 ? key[b] : 0u;
        const bool eq = b < c1 && u == thr;
        const unsigned em = __ballot_sync(0xffffffffu, eq);
        const bool take = (b < c1 && u > thr) || (eq && e + __popc(em & lt) < k);
        ntake += __popc(__ballot_sync(0xffffffffu, take));
        e += __popc(em);
    }
    int out_base = __shfl_sync(0xffffffffu, scan_block<NT>(lane == 0 ? ntake : 0, &tot), 0);
    for (int b0 = c0, e = eq_base; b0 < c1; b0 += 32) {
        const int b = b0 + lane;
        const uint32_t u = b < c1 ? key[b] : 0u;
        const bool eq = b < c1 && u == thr;
        const unsigned em = __ballot_sync(0xffffffffu, eq);
        const bool take = (b < c1 && u > thr) || (eq && e + __popc(em & lt) < k);
        const unsigned tm = __ballot_sync(0xffffffffu, take);
        if (take) out[out_base + __popc(tm & lt)] = b;
        out_base += __popc(tm);
        e += __popc(em);
    }
    if (tid == 0) nsel[tg] = tot;
}

template <int NT>
static void launch_topk(cudaStream_t st, int64_t nblocks, int64_t max_ncand, int32_t *blocks, int32_t *nsel,
                        float *pooled, const float *halo, int64_t pos0, const cu_infllm_dims *d, int NBT,
                        int64_t nblk_cap, int64_t ntile_cap) {
    if (max_ncand <= TOPK_SMEM_KEYS) {
        size_t smem = sizeof(uint32_t) * (size_t)max_ncand;
        if (smem > 32768)
            cudaFuncSetAttribute(k_infllm_topk<NT, true>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 (int)(sizeof(uint32_t) * TOPK_SMEM_KEYS));
        k_infllm_topk<NT, true><<<(unsigned)nblocks, NT, smem, st>>>(blocks, nsel, pooled, halo, pos0, d->nkv, d->block,
                                                                     d->init_blocks, d->local_blocks, d->budget, NBT,
                                                                     nblk_cap, ntile_cap);
    } else {
        k_infllm_topk<NT, false><<<(unsigned)nblocks, NT, 0, st>>>(blocks, nsel, pooled, halo, pos0, d->nkv, d->block,
                                                                   d->init_blocks, d->local_blocks, d->budget, NBT,
                                                                   nblk_cap, ntile_cap);
    }
}

extern "C" int cu_infllm_topk(void *st, int32_t *blocks, int32_t *nsel, float *pooled, const float *halo, int64_t T,
                              int64_t pos0, const cu_infllm_dims *d, int64_t nblk_cap, int64_t ntile_cap) {
    if (T <= 0) return 0;
    int P = d->block / d->s1;
    const int64_t max_ncand = (pos0 + T - 1) / d->block + 1; /* the last row has the most candidates */
    /* few rows (decode): one wide block per row and group; many rows: 256 threads each, many blocks */
    if (T * d->nkv < 64)
        launch_topk<1024>((cudaStream_t)st, T * d->nkv, max_ncand, blocks, nsel, pooled, halo, pos0, d, 64 / P,
                          nblk_cap, ntile_cap);
    else
        launch_topk<256>((cudaStream_t)st, T * d->nkv, max_ncand, blocks, nsel, pooled, halo, pos0, d, 64 / P,
                         nblk_cap, ntile_cap);
    return LAUNCH_CHECK();
}
