/* infllm_topk.cu — InfLLM-v2 block selection for each row and KV group (MODEL.md §4 steps 3–4).
 *
 * Candidates are the blocks 0..q_block of the row. Blocks after q_block score 0 or −inf while every
 * past block scores ≥ 0 or is forced, so with ties going to the lower index they can only be picked
 * when all past blocks are, and are dropped then: if q_block + 1 ≤ budget the row keeps every past
 * block, otherwise the top `budget` past blocks. Forced blocks (b < init_blocks, and the local window
 * q_block − local_blocks ≤ b ≤ q_block) score +inf.
 *
 * One thread block per (row, group): the pooled scores (plus the halo key of each tile's first block)
 * become order-preserving unsigned keys in place; a 4-pass 8-bit radix select finds the budget-th
 * largest key and how many of its equals to take; a compaction in block order then keeps everything
 * above it and the lowest-index equals — exactly "ties to the lower block index" — already ascending. */
#include "cuda/common.cuh"

static __device__ __forceinline__ uint32_t sort_key(float v) {
    uint32_t u = __float_as_uint(v);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/* exclusive prefix sum over the block's NT threads; *total gets the sum */
template <int NT> static __device__ int scan_block(int v, int *total) {
    __shared__ int wsum[NT / 32];
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    int x = v;
    for (int o = 1; o < 32; o <<= 1) {
        int y = __shfl_up_sync(0xffffffffu, x, o);
        if (lane >= o) x += y;
    }
    __syncthreads();
    if (lane == 31) wsum[w] = x;
    __syncthreads();
    int base = 0, tot = 0;
    for (int i = 0; i < NT / 32; i++) {
        if (i < w) base += wsum[i];
        tot += wsum[i];
    }
    *total = tot;
    return base + x - v;
}

template <int NT>
__global__ void __launch_bounds__(NT) k_infllm_topk(int32_t *blocks, int32_t *nsel, float *pooled, const float *halo,
                                                     int64_t pos0, int nkv, int block, int init_blocks,
                                                     int local_blocks, int budget, int NBT, int64_t nblk_cap,
                                                     int64_t ntile_cap) {
    __shared__ int hist[256];
    __shared__ int sel_digit, sel_k;
    const int64_t tg = blockIdx.x; /* t * nkv + g */
    const int64_t t = tg / nkv;
    const int64_t r = pos0 + t, qb = r / block, ncand = qb + 1;
    int32_t *out = blocks + tg * budget;
    if (ncand <= budget) {
        for (int64_t b = threadIdx.x; b < ncand; b += NT) out[b] = (int32_t)b;
        if (threadIdx.x == 0) nsel[tg] = (int32_t)ncand;
        return;
    }
    float *pv = pooled + tg * nblk_cap;
    uint32_t *key = (uint32_t *)pv;
    const float *hal = halo + tg * ntile_cap;
    for (int64_t b = threadIdx.x; b < ncand; b += NT) {
        bool forced = b < init_blocks || (b >= qb - local_blocks && b <= qb);
        float v;
        if (forced) {
            v = INFINITY;
        } else {
            v = pv[b];
            if (b % NBT == 0 && b > 0) v = fmaxf(v, hal[b / NBT]);
        }
        key[b] = sort_key(v);
    }
    uint32_t prefix = 0, maskbits = 0;
    int k = budget;
    for (int shift = 24; shift >= 0; shift -= 8) {
        __syncthreads();
        if (threadIdx.x < 256) hist[threadIdx.x] = 0;
        __syncthreads();
        /* scores cluster in a few exponents: lanes of a warp adding to the same bin are merged first
         * (one atomic per distinct bin and warp), else the first passes serialise on one address */
        for (int64_t base = 0; base < ncand; base += NT) {
            const int64_t b = base + threadIdx.x;
            const uint32_t u = b < ncand ? key[b] : 0u;
            const bool act = b < ncand && (u & maskbits) == prefix;
            const unsigned active = __ballot_sync(0xffffffffu, act);
            if (act) {
                const unsigned bin = (u >> shift) & 255u;
                const unsigned peers = __match_any_sync(active, bin);
                if ((threadIdx.x & 31) == __ffs(peers) - 1) atomicAdd(&hist[bin], __popc(peers));
            }
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            int cum = 0, d = 255;
            for (; d > 0; d--) {
                if (cum + hist[d] >= k) break;
                cum += hist[d];
            }
            sel_digit = d;
            sel_k = k - cum;
        }
        __syncthreads();
        prefix |= (uint32_t)sel_digit << shift;
        maskbits |= 255u << shift;
        k = sel_k;
    }
    const uint32_t thr = prefix; /* the budget-th largest key; take k of its equals, lowest index first */
    const int64_t seg = (ncand + NT - 1) / NT, b0 = threadIdx.x * seg;
    const int64_t b1 = b0 + seg < ncand ? b0 + seg : ncand;
    int neq = 0;
    for (int64_t b = b0; b < b1; b++) neq += key[b] == thr;
    int tot;
    int eq_base = scan_block<NT>(neq, &tot);
    int ntake = 0;
    for (int64_t b = b0, e = eq_base; b < b1; b++) {
        uint32_t u = key[b];
        if (u > thr) {
            ntake++;
        } else if (u == thr) {
            if (e < k) ntake++;
            e++;
        }
    }
    int out_base = scan_block<NT>(ntake, &tot);
    for (int64_t b = b0, e = eq_base; b < b1; b++) {
        uint32_t u = key[b];
        bool take = u > thr;
        if (u == thr) {
            take = e < k;
            e++;
        }
        if (take) out[out_base++] = (int32_t)b;
    }
    if (threadIdx.x == 0) nsel[tg] = tot;
}

extern "C" int cu_infllm_topk(void *st, int32_t *blocks, int32_t *nsel, float *pooled, const float *halo, int64_t T,
                              int64_t pos0, const cu_infllm_dims *d, int64_t nblk_cap, int64_t ntile_cap) {
    if (T <= 0) return 0;
    int P = d->block / d->s1;
    /* few rows (decode): one wide block per row and group; many rows: 256 threads each, many blocks */
    if (T * d->nkv < 64)
        k_infllm_topk<1024><<<(unsigned)(T * d->nkv), 1024, 0, (cudaStream_t)st>>>(
            blocks, nsel, pooled, halo, pos0, d->nkv, d->block, d->init_blocks, d->local_blocks, d->budget, 64 / P,
            nblk_cap, ntile_cap);
    else
        k_infllm_topk<256><<<(unsigned)(T * d->nkv), 256, 0, (cudaStream_t)st>>>(
            blocks, nsel, pooled, halo, pos0, d->nkv, d->block, d->init_blocks, d->local_blocks, d->budget, 64 / P,
            nblk_cap, ntile_cap);
    return LAUNCH_CHECK();
}
