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

/* exclusive prefix sum over the block's 256 threads; *total gets the sum */
static __device__ int scan256(int v, int *total) {
    __shared__ int wsum[8];
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
    for (int i = 0; i < 8; i++) {
        if (i < w) base += wsum[i];
        tot += wsum[i];
    }
    *total = tot;
    return base + x - v;
}

__global__ void __launch_bounds__(256) k_infllm_topk(int32_t *blocks, int32_t *nsel, float *pooled, const float *halo,
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
        for (int64_t b = threadIdx.x; b < ncand; b += 256) out[b] = (int32_t)b;
        if (threadIdx.x == 0) nsel[tg] = (int32_t)ncand;
        return;
    }
    float *pv = pooled + tg * nblk_cap;
    uint32_t *key = (uint32_t *)pv;
    const float *hal = halo + tg * ntile_cap;
    for (int64_t b = threadIdx.x; b < ncand; b += 256) {
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
        hist[threadIdx.x] = 0;
        __syncthreads();
        for (int64_t b = threadIdx.x; b < ncand; b += 256) {
            uint32_t u = key[b];
            if ((u & maskbits) == prefix) atomicAdd(&hist[(u >> shift) & 255u], 1);
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
    const int64_t seg = (ncand + 255) / 256, b0 = threadIdx.x * seg;
    const int64_t b1 = b0 + seg < ncand ? b0 + seg : ncand;
    int neq = 0;
    for (int64_t b = b0; b < b1; b++) neq += key[b] == thr;
    int tot;
    int eq_base = scan256(neq, &tot);
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
    int out_base = scan256(ntake, &tot);
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
    k_infllm_topk<<<(unsigned)(T * d->nkv), 256, 0, (cudaStream_t)st>>>(blocks, nsel, pooled, halo, pos0, d->nkv,
                                                                         d->block, d->init_blocks, d->local_blocks,
                                                                         d->budget, 64 / P, nblk_cap, ntile_cap);
    return LAUNCH_CHECK();
}
