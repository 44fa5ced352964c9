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
 * "ties to the lower block index" — already ascending.
 *
 * k_topk_reg (the default when a row has at most 32 · 512 candidates, i.e. up to 1M tokens at block 64)
 * reads the pooled scores once and keeps them in registers: 512 threads, PER ≤ 32 keys each (slot i of
 * thread tid holds block i·512 + tid: coalesced loads; the halo keys go through shared memory). Then
 *   1. a lower bound t: the largest key with at least need = budget − nf thread maxima ≥ t, the maxima
 *      taken over each thread's non-forced keys (nf forced keys are +inf, above t): so at least `budget`
 *      candidates are ≥ t and the answer's threshold thr satisfies thr ≥ t. A bitwise search with
 *      __syncthreads_count, from below the common prefix of the largest and smallest maxima;
 *   2. the survivors G = {key > t} (about budget + a few on independent scores) go to shared memory;
 *      if |G| < budget then thr = t; if |G| ≤ 512 each thread ranks one survivor against all of G (thr
 *      is the survivor with fewer than `budget` greater and at least `budget` greater-or-equal);
 *      else (many ties or a skewed row) a bitwise search over all keys with block counts finds thr;
 *   3. everything above thr plus the lowest-index k = budget − #(> thr) equals, written in block order:
 *      per (slot, warp) counts of "> thr" and "= thr" in one block scan, then each element's place is
 *      its greater-before count plus min(its equal-before count, k).
 * Same selection bit for bit as the radix kernel (which stays for longer rows and as variant 0).
 * Measured (H100, the last 2048-row chunk, tests/test_cuda_topk.c SALA_TOPK_BENCH): 512K 0.26–0.39 →
 * 0.13–0.17 ms, 1M 0.71–0.98 → 0.21–0.25 ms; rows whose top scores sit in few of the 512 thread columns
 * take the bitwise search over all keys (1M: 0.61 ms). A variant that prefetched the next row into shared
 * memory (cp.async, persistent blocks) was no faster (1M: 0.24–0.28 ms; 32 % of DRAM bandwidth, the
 * selection's barriers bound it) and was dropped. */
#include "cuda/common.cuh"

#include <stdlib.h>

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


/* ---------------- keys in registers (rows up to TK_NT · 32 candidates) ---------------- */
#define TK_NT 512
#define TK_NW (TK_NT / 32)
#define TK_HALO (32 * TK_NT / 16 + 1) /* halo keys of a row of 32 · TK_NT candidates at NBT ≥ 16 */
#define TK_FORCED 0xff800000u      /* sort_key(+inf) */

struct tk_shared {
    uint4 gkey4[TK_NT / 4 + 1]; /* survivors' keys, zero-padded to a multiple of 4 */
    int tab[TK_NT];            /* per (slot, warp): "> thr" count << 16 | "= thr" count, then their prefix sums */
    uint32_t wmax[TK_NW], wmin[TK_NW];
    int wpart[TK_NW];
    int s_cnt, s_gt;
    uint32_t s_thr;
};

/* a row's geometry: qb, the candidate count, the first forced block of the local window */
struct tk_row {
    int64_t qb;
    int ncand, flo;
};
static __device__ __forceinline__ tk_row topk_row(int64_t tg, int64_t pos0, int nkv, int block, int local_blocks) {
    tk_row g;
    g.qb = (pos0 + tg / nkv) / block;
    g.ncand = (int)(g.qb + 1 < 0x7fffffff ? g.qb + 1 : 0x7fffffff);
    g.flo = (int)g.qb - local_blocks;
    return g;
}

/* keys of slot i = block i·NT + tid from the scores v (valid for the first nv slots; pads key 0, below every
 * candidate: candidate keys are clamped to ≥ 1, which merges only the NaNs with all bits set and all bits but
 * the last, never in the scores), the halo keys from shared memory (b mod NBT = tid mod NBT as NBT divides NT);
 * returns the max of the thread's non-forced keys (0 if none) */
template <int PER>
static __device__ __forceinline__ uint32_t topk_keys(uint32_t (&key)[PER], const float (&v)[PER], const float *shal,
                                                     int ncand, int init_blocks, int flo, int nbt_log2) {
    const int tid = threadIdx.x, nv = ncand > tid ? (ncand - tid + TK_NT - 1) / TK_NT : 0;
    const bool hthread = (tid & ((1 << nbt_log2) - 1)) == 0;
    uint32_t mx = 0;
#pragma unroll
    for (int i = 0; i < PER; i++) {
        const int b = i * TK_NT + tid;
        float x = v[i];
        if (b > 0 && hthread) x = fmaxf(x, shal[b >> nbt_log2]);
        const uint32_t kk = max(sort_key(x), 1u);
        if ((i + 1) * TK_NT <= min(ncand, flo) && i * TK_NT >= init_blocks) { /* the whole slot valid, not forced */
            key[i] = kk;
            mx = max(mx, kk);
        } else {
            const bool forced = b < init_blocks || b >= flo;
            key[i] = i < nv ? (forced ? TK_FORCED : kk) : 0u;
            mx = max(mx, i < nv && !forced ? kk : 0u);
        }
    }
    return mx;
}

/* phases 1–3 (file note) for one row whose keys are in registers; out gets the budget blocks ascending */
template <int PER>
static __device__ __forceinline__ void topk_select(const uint32_t (&key)[PER], uint32_t mx, int32_t *out, int ncand,
                                                   int init_blocks, int flo, int budget, tk_shared &sm) {
    constexpr int NT = TK_NT, NW = TK_NW;
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
    uint32_t *gkey = (uint32_t *)sm.gkey4;
    /* 1. t: at least `need` non-forced thread maxima are ≥ t, so with the nf forced keys (the largest but
     * NaNs: t is capped at TK_FORCED) at least `budget` candidates are ≥ t. The search starts below the
     * common prefix of the largest and smallest nonzero maxima when at least `need` are nonzero (t lies
     * between them then). */
    const int nonforced = max(0, min(flo, ncand) - init_blocks), nf = ncand - nonforced;
    const int need = max(budget - nf, 1);
    {
        const uint32_t wmx = __reduce_max_sync(0xffffffffu, mx), wmn = __reduce_min_sync(0xffffffffu, mx ? mx : ~0u);
        if (lane == 0) sm.wmax[w] = wmx, sm.wmin[w] = wmn;
    }
    if (tid == 0) sm.s_cnt = 0;
    const int nz = __syncthreads_count(mx != 0);
    const uint32_t hi = __reduce_max_sync(0xffffffffu, lane < NW ? sm.wmax[lane] : 0u);
    const uint32_t lo = __reduce_min_sync(0xffffffffu, lane < NW ? sm.wmin[lane] : ~0u);
    uint32_t t = 0;
    int top = 31;
    if (nz >= need) {
        const uint32_t diff = hi ^ lo;
        top = diff ? 31 - __clz(diff) : -1;
        t = top >= 0 ? lo & ~((2u << top) - 1u) : lo; /* top = 31: 2u << 31 = 0, nothing kept */
    }
#pragma unroll 1
    for (int bit = top; bit >= 0; bit--) {
        const uint32_t c = t | (1u << bit);
        if (__syncthreads_count(mx >= c) >= need) t = c;
    }
    t = min(t, TK_FORCED);
    /* 2. survivors G = {key > t} (pads never: t ≥ 0) into gkey, in any order */
    int n = 0;
#pragma unroll
    for (int i = 0; i < PER; i++) n += key[i] > t;
    int incl = n;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const int y = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += y;
    }
    int base = 0;
    if (lane == 31 && incl) base = atomicAdd(&sm.s_cnt, incl);
    int pos = __shfl_sync(0xffffffffu, base, 31) + incl - n;
#pragma unroll
    for (int i = 0; i < PER; i++)
        if (key[i] > t) {
            if (pos < NT) gkey[pos] = key[i];
            pos++;
        }
    __syncthreads();
    const int S = sm.s_cnt;
    uint32_t thr;
    int cgt = 0;
    if (S < budget) { /* ≥ budget keys are ≥ t, fewer are > t: the budget-th largest is t */
        thr = t, cgt = S;
    } else if (S <= NT) { /* rank each survivor against G; zero pads never count (survivors are > t ≥ 0) */
        if (tid < 4) gkey[S + tid] = 0u;
        __syncthreads();
        if (tid < S) {
            const uint32_t g = gkey[tid];
            int gt = 0, ge = 0;
#pragma unroll 4
            for (int j = 0; j < (S + 3) >> 2; j++) {
                const uint4 q = sm.gkey4[j];
                gt += (q.x > g) + (q.y > g) + (q.z > g) + (q.w > g);
                ge += (q.x >= g) + (q.y >= g) + (q.z >= g) + (q.w >= g);
            }
            if (gt < budget && ge >= budget) sm.s_thr = g, sm.s_gt = gt; /* equal survivors write the same */
        }
        __syncthreads();
        thr = sm.s_thr, cgt = sm.s_gt;
    } else { /* many survivors: the largest key x with #(keys ≥ x) ≥ budget, bit by bit over all keys */
        uint32_t p = 0;
#pragma unroll 1
        for (int bit = 31; bit >= -1; bit--) { /* bit −1: the count of keys > p (the final pass) */
            const uint32_t c = bit >= 0 ? p | (1u << bit) : p;
            int m = 0;
#pragma unroll
            for (int i = 0; i < PER; i++) m += bit >= 0 ? key[i] >= c : key[i] > c;
            m = __reduce_add_sync(0xffffffffu, m);
            if (lane == 0) sm.wpart[w] = m;
            __syncthreads();
            int tot = 0;
#pragma unroll
            for (int j = 0; j < NW; j++) tot += sm.wpart[j];
            __syncthreads();
            if (bit >= 0) {
                if (tot >= budget) p = c; /* c ≥ 1: pads are not counted */
            } else {
                cgt = tot;
            }
        }
        thr = p;
    }
    /* 3. keep every key > thr and the k lowest-index keys = thr, in block order */
    const int k = budget - cgt;
#pragma unroll
    for (int i = 0; i < PER; i++) {
        const unsigned m = __ballot_sync(0xffffffffu, key[i] >= thr);
        int c = 0;
        if (m) {
            const unsigned gm = __ballot_sync(0xffffffffu, key[i] > thr);
            c = (__popc(gm) << 16) | __popc(m & ~gm); /* ≤ 16384 each: no carry in the scan below */
        }
        if (lane == 0) sm.tab[i * NW + w] = c;
    }
    __syncthreads();
    int tot;
    const int x = tid < PER * NW ? sm.tab[tid] : 0;
    const int ex = scan_block<NT>(x, &tot);
    if (tid < PER * NW) sm.tab[tid] = ex;
    __syncthreads();
#pragma unroll
    for (int i = 0; i < PER; i++) {
        const int b = i * NT + tid;
        const bool ge = key[i] >= thr;
        const unsigned m = __ballot_sync(0xffffffffu, ge);
        if (m) {
            const bool gt = key[i] > thr;
            const unsigned gm = __ballot_sync(0xffffffffu, gt);
            if (ge) {
                const unsigned below = (1u << lane) - 1u;
                const int off = sm.tab[i * NW + w];
                const int gbefore = (off >> 16) + __popc(gm & below), ebefore = (off & 0xffff) + __popc(m & ~gm & below);
                if (gt || ebefore < k) out[gbefore + min(ebefore, k)] = b;
            }
        }
    }
}

/* one row per thread block, the scores loaded straight into registers (the halo keys via shared memory) */
template <int PER>
__global__ void __launch_bounds__(TK_NT, 2) k_topk_reg(int32_t *blocks, int32_t *nsel, const float *pooled,
                                                        const float *halo, int64_t pos0, int nkv, int block,
                                                        int init_blocks, int local_blocks, int budget, int nbt_log2,
                                                        int64_t nblk_cap, int64_t ntile_cap) {
    __shared__ tk_shared sm;
    __shared__ float shal[TK_HALO];
    const int tid = threadIdx.x;
    const int64_t tg = blockIdx.x; /* t * nkv + g */
    const tk_row g = topk_row(tg, pos0, nkv, block, local_blocks);
    int32_t *out = blocks + tg * budget;
    if (g.qb + 1 <= budget) {
        for (int b = tid; b <= g.qb; b += TK_NT) out[b] = b;
        if (tid == 0) nsel[tg] = (int32_t)(g.qb + 1);
        return;
    }
    const float *pv = pooled + tg * nblk_cap, *hal = halo + tg * ntile_cap;
    float v[PER];
    const int nv = g.ncand > tid ? (g.ncand - tid + TK_NT - 1) / TK_NT : 0;
#pragma unroll
    for (int i = 0; i < PER; i++) {
        v[i] = 0.0f;
        if (i < nv) v[i] = __ldcs(pv + i * TK_NT + tid);
    }
    const int nh = ((g.ncand - 1) >> nbt_log2) + 1;
    for (int j = tid; j < nh; j += TK_NT) shal[j] = __ldg(hal + j);
    __syncthreads();
    uint32_t key[PER];
    const uint32_t mx = topk_keys<PER>(key, v, shal, g.ncand, init_blocks, g.flo, nbt_log2);
    topk_select<PER>(key, mx, out, g.ncand, init_blocks, g.flo, budget, sm);
    if (tid == 0) nsel[tg] = budget;
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

/* the kernel cu_infllm_topk takes (for tests and measurements; internal): 0 the radix kernel, otherwise
 * (−1, the default) k_topk_reg where the row fits it; until set, the environment's SALA_TOPK_VAR (else −1) */
static int g_topk_variant = -2;
extern "C" void cu_infllm_topk_variant(int v) { g_topk_variant = v; }

template <int PER>
static void launch_reg(cudaStream_t st, int64_t nrows, int32_t *blocks, int32_t *nsel, const float *pooled,
                       const float *halo, int64_t pos0, const cu_infllm_dims *d, int nbt_log2, int64_t nblk_cap,
                       int64_t ntile_cap) {
    k_topk_reg<PER><<<(unsigned)nrows, TK_NT, 0, st>>>(blocks, nsel, pooled, halo, pos0, d->nkv, d->block,
                                                        d->init_blocks, d->local_blocks, d->budget, nbt_log2, nblk_cap,
                                                        ntile_cap);
}

extern "C" int cu_infllm_topk(void *st, int32_t *blocks, int32_t *nsel, float *pooled, const float *halo, int64_t T,
                              int64_t pos0, const cu_infllm_dims *d, int64_t nblk_cap, int64_t ntile_cap) {
    if (T <= 0) return 0;
    if (g_topk_variant == -2) {
        const char *e = getenv("SALA_TOPK_VAR");
        g_topk_variant = e ? atoi(e) : -1;
    }
    int P = d->block / d->s1;
    const int NBT = 64 / P;
    const int64_t max_ncand = (pos0 + T - 1) / d->block + 1; /* the last row has the most candidates */
    int nbt_log2 = 0;
    while (nbt_log2 < 7 && (1 << nbt_log2) < NBT) nbt_log2++;
    /* the register kernel: rows of ≤ 32 · TK_NT candidates, budget ≤ TK_NT (its maxima bound), NBT a power of
     * two (b mod NBT is a mask) of at least 16 (the row's halo keys fit TK_HALO) */
    if (g_topk_variant != 0 && max_ncand <= 32 * TK_NT && d->budget <= TK_NT && NBT >= 16 && (1 << nbt_log2) == NBT &&
        NBT <= 64) {
        const int64_t nb = T * d->nkv;
        cudaStream_t s = (cudaStream_t)st;
#define TK_L(PER) launch_reg<PER>(s, nb, blocks, nsel, pooled, halo, pos0, d, nbt_log2, nblk_cap, ntile_cap)
        if (max_ncand <= 1 * TK_NT) TK_L(1);
        else if (max_ncand <= 2 * TK_NT) TK_L(2);
        else if (max_ncand <= 4 * TK_NT) TK_L(4);
        else if (max_ncand <= 8 * TK_NT) TK_L(8);
        else if (max_ncand <= 16 * TK_NT) TK_L(16);
        else TK_L(32);
#undef TK_L
        return LAUNCH_CHECK();
    }
    /* few rows (decode): one wide block per row and group; many rows: 256 threads each, many blocks */
    if (T * d->nkv < 64)
        launch_topk<1024>((cudaStream_t)st, T * d->nkv, max_ncand, blocks, nsel, pooled, halo, pos0, d, NBT,
                          nblk_cap, ntile_cap);
    else
        launch_topk<256>((cudaStream_t)st, T * d->nkv, max_ncand, blocks, nsel, pooled, halo, pos0, d, NBT,
                         nblk_cap, ntile_cap);
    return LAUNCH_CHECK();
}
