/* sparse_decode.cu — a sparse layer's InfLLM-v2 decode step (MODEL.md §4) for one row, replayable from a
 * CUDA graph: the position is read from device memory (*dpos) and every grid is sized for the session's
 * n_ctx, the parts beyond the current length exiting at once. bf16 caches (the bf16 mode), G = 16 query
 * heads per KV group (one m16 tensor-core tile), 64-token blocks pooled over 4 level-1 keys.
 *
 * Four kernels, each launched with PDL (pdl.cuh) after the one before it. Each does before pdl_wait() whatever
 * needs only what is final by then: q is final once the LSE kernel starts (the append triggers after its own
 * wait), the compressed keys but the one this step's append writes, the K rows of earlier steps.
 *   append   K[pos], V[pos] = k, v; the level-1 / level-2 compressed key whose window ends at pos (the same
 *            fp32 sums in key order as infllm_compress.cu, so the caches equal a prefill's; the window's older
 *            rows copied into shared memory before the wait).
 *   lse      LSE_h over the level-2 keys: one warp per key range, q as mma A fragments, keys straight from
 *            global memory into B fragments (the head dimension is permuted identically in both operands,
 *            so each lane loads 16 contiguous bytes of a key); one (m, l) record per CTA, which every stage-1
 *            CTA merges itself (no last-CTA step). All but the newest key's 32-key step before the wait.
 *   score    stage-1 scores Σ_h exp(s·q_h·C1[j] − LSE_h), max-pooled into block scores [4b−1, 4b+3] (the
 *            dot products before the wait, held in shared memory until the LSE is there); each
 *            CTA keeps its top `budget` blocks (rank by key, ties to the lower block) as a list in rank
 *            order, the last CTA of the group selects the top `budget` of all candidates and writes them in
 *            ascending block order: the budget-th best of the lists' first few is a lower bound that drops
 *            nearly all candidates (and, the lists being in rank order, most need only their first
 *            SD_SEL_P entries loaded), the rest are ranked directly (a radix select as infllm_topk.cu when
 *            more than SD_SURV remain).
 *   attn     attention of the 16 heads over the chosen blocks (keys ≤ pos): one warp per block, K and V
 *            tiles by cp.async, scores and P·V on tensor cores (q and P rounded to bf16 as attn_mma.cu),
 *            records merged per CTA and by the last CTA into o. It lets o_proj launch after its tile (o_proj
 *            then streams its first weights during the merges, not during the tile loads).
 * Measured per sparse layer inside a step (H100, tests/test_cuda_decbench.c, docs/PERF.md round 7): 85 → 66 µs
 * at 1M, 46 → 38 µs at 8K; SALA_SDEC_PROF=1 stamps each kernel's phases (cu_sdec_stamps4).
 * "Last CTA" = the one whose atomicAdd on the group's counter completes the grid (threadfence reduction);
 * it resets the counter, so the work area is zeroed once and reused by every layer and step. The merge
 * orders are fixed, so the results do not depend on scheduling. */
#include "cuda/common.cuh"
#include "cuda/decode_knobs.h"
#include "cuda/mma_core.cuh"
#include "cuda/pdl.cuh"

#include <cooperative_groups.h>

#define SD_G 16        /* heads per group */
#define SD_BPC 256     /* blocks per score CTA (16 warps × one 64-key tile = 16 blocks each) */
#define SD_AW 4        /* warps (= chosen blocks) per attention CTA */
#define SD_MCTA 8      /* attention: CTA records a thread loads at once in the last CTA's merge */
#define SD_SURV 1024   /* top-k: candidates kept above the lower bound, ranked directly (else radix select) */

/* ---- operand fragments with the head dimension permuted (see the top) ----
 * Lane (g = lane/4, t = lane%4) takes dims [32·kp + 8t, +8) of a row for k-steps 2kp, 2kp+1 (HD ≥ 32), or
 * dims [4t, +4) for the single k-step of HD = 16: b0/a0 get the first pair, b1/a2 the second. */
template <int HD> struct sd_shape {
    static constexpr int NV = HD >= 32 ? HD / 32 : 1; /* 16-byte (HD = 16: 8-byte) loads per key and lane */
    static constexpr int KS = HD / 16;                 /* k-steps */
};

template <int HD>
static __device__ __forceinline__ void sd_q_frags(const float *q, uint32_t qf[HD / 16][4]) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const float *r0 = q + g * HD, *r1 = q + (g + 8) * HD;
    if constexpr (HD == 16) {
        float4 x = __ldcg((const float4 *)(r0 + 4 * t)), y = __ldcg((const float4 *)(r1 + 4 * t));
        qf[0][0] = pack_bf16(x.x, x.y), qf[0][2] = pack_bf16(x.z, x.w);
        qf[0][1] = pack_bf16(y.x, y.y), qf[0][3] = pack_bf16(y.z, y.w);
    } else {
#pragma unroll
        for (int kp = 0; kp < HD / 32; kp++) {
            const int b = 32 * kp + 8 * t;
            float4 x0 = __ldcg((const float4 *)(r0 + b)), x1 = __ldcg((const float4 *)(r0 + b + 4));
            float4 y0 = __ldcg((const float4 *)(r1 + b)), y1 = __ldcg((const float4 *)(r1 + b + 4));
            qf[2 * kp][0] = pack_bf16(x0.x, x0.y), qf[2 * kp][2] = pack_bf16(x0.z, x0.w);
            qf[2 * kp + 1][0] = pack_bf16(x1.x, x1.y), qf[2 * kp + 1][2] = pack_bf16(x1.z, x1.w);
            qf[2 * kp][1] = pack_bf16(y0.x, y0.y), qf[2 * kp][3] = pack_bf16(y0.z, y0.w);
            qf[2 * kp + 1][1] = pack_bf16(y1.x, y1.y), qf[2 * kp + 1][3] = pack_bf16(y1.z, y1.w);
        }
    }
}

/* this lane's part of key row `row` (HD bf16), zero when !valid */
template <int HD>
static __device__ __forceinline__ void sd_load_key(uint4 kr[sd_shape<HD>::NV], const bf16 *row, bool valid) {
    const int t = threadIdx.x & 3;
#pragma unroll
    for (int i = 0; i < sd_shape<HD>::NV; i++) kr[i] = make_uint4(0, 0, 0, 0);
    if (!valid) return;
    if constexpr (HD == 16) {
        uint2 u = __ldcg((const uint2 *)(row + 4 * t));
        kr[0].x = u.x, kr[0].y = u.y;
    } else {
#pragma unroll
        for (int i = 0; i < sd_shape<HD>::NV; i++) kr[i] = __ldcg((const uint4 *)(row + 32 * i + 8 * t));
    }
}

/* c = Q Kᵀ for the 16 heads and the 8 keys of an n-tile (this lane's key loaded in kr) */
template <int HD>
static __device__ __forceinline__ void sd_qk(const uint32_t qf[HD / 16][4], const uint4 kr[sd_shape<HD>::NV],
                                             float c[4]) {
    c[0] = c[1] = c[2] = c[3] = 0.f;
#pragma unroll
    for (int s = 0; s < HD / 16; s++) {
        const uint4 &u = kr[HD == 16 ? 0 : s / 2];
        uint32_t b[2];
        if (HD == 16 || s % 2 == 0) b[0] = u.x, b[1] = u.y;
        else b[0] = u.z, b[1] = u.w;
        mma16816(c, qf[s], b);
    }
}

/* the block-wide "am I the last CTA of this group" test after this CTA's results are written */
static __device__ __forceinline__ bool sd_last_cta(int *counter) {
    __shared__ int last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicAdd(counter, 1) == (int)gridDim.x - 1;
    __syncthreads();
    if (last) __threadfence();
    return last;
}

/* a candidate's composite key: the score key, then the lower block first (block < 2^24) */
static __device__ __forceinline__ uint64_t sd_comp(uint32_t key, int32_t blk) {
    return (uint64_t)key << 32 | (0xffffffu - (uint32_t)blk);
}

/* SALA_SDEC_PROF=1: the four kernels' global-timer stamps (ns) of their last launch, one thread's view each
 * (cu_sdec_stamps4, for tests/test_cuda_decbench.c) */
__device__ unsigned long long sd_stamps4[24];
static __device__ __forceinline__ void sd_stamp(bool on, int i) {
    if (on) {
        unsigned long long t;
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
        sd_stamps4[i] = t;
    }
}

#define SF_RMAX 8 /* records a lane holds in sf_merge_ml: at most 32·SF_RMAX records */

/* (M, L) over n records (m at rec[r·stride], l at rec[r·stride + 1], log2 units; l = 0: empty): one warp, every
 * lane gets both; f (if not NULL) gets each record's weight in the merged result, exp2(m − M) / L (0 if empty) */
static __device__ __forceinline__ void sf_merge_ml(const float *rec, int n, int stride, float *M_, float *L_, float *f) {
    const int lane = threadIdx.x & 31;
    float mm[SF_RMAX], ll[SF_RMAX];
#pragma unroll
    for (int i = 0; i < SF_RMAX; i++) {
        const int r = lane + 32 * i;
        mm[i] = r < n ? __ldcg(rec + (int64_t)r * stride) : -INFINITY;
        ll[i] = r < n ? __ldcg(rec + (int64_t)r * stride + 1) : 0.f;
    }
    float M = -INFINITY;
#pragma unroll
    for (int i = 0; i < SF_RMAX; i++)
        if (ll[i] > 0.f) M = fmaxf(M, mm[i]);
    M = warp_max(M);
    float L = 0.f;
#pragma unroll
    for (int i = 0; i < SF_RMAX; i++)
        if (ll[i] > 0.f) L += ll[i] * exp2f(mm[i] - M);
    L = warp_sum(L);
    *M_ = M, *L_ = L;
    if (f)
#pragma unroll
        for (int i = 0; i < SF_RMAX; i++) {
            const int r = lane + 32 * i;
            if (r < n) f[r] = ll[i] > 0.f && L > 0.f ? exp2f(mm[i] - M) / L : 0.f;
        }
}

/* ---- 1. append + compress ---- */

/* The append of K[pos], V[pos] = k, v and of the level-1 / level-2 compressed keys whose windows end at pos, by one
 * CTA for columns [c0, c0 + nc) (nc ≤ its threads), in two parts:
 *   sd_append_copy    the window's older rows (positions < pos: earlier steps wrote them, so this may run before
 *                     pdl_wait()) into T [rows][nc] in shared memory by cp.async, the newest row last;
 *   sd_append_finish  (after the wait) each thread's column of K[pos], V[pos], then the window summed in key order
 *                     from T with the key at pos as the bf16 it is stored as: the same fp32 sums as k_compress, so
 *                     the caches equal a prefill's, without a chain of dependent loads.
 * rows = sd_append_rows: the longest window ending at pos (0: none). */
static __device__ __forceinline__ int sd_append_rows(int64_t pos, int l1, int s1, int l2, int s2) {
    const int64_t kv = pos + 1;
    int rows = 0;
    for (int lev = 0; lev < 2; lev++) {
        const int l = lev ? l2 : l1, s = lev ? s2 : s1;
        if (kv >= l && (kv - l) % s == 0 && l > rows) rows = l;
    }
    return rows;
}

static __device__ __forceinline__ void sd_append_copy(bf16 *T, const bf16 *K, int64_t pos, int kvrow, int c0, int nc,
                                                      int rows) {
    const int cpr = nc / 8; /* 16-byte chunks of a row */
    for (int e = threadIdx.x; e < (rows - 1) * cpr; e += blockDim.x) {
        const int r = e / cpr, ch = e % cpr;
        cp_async16(T + (int64_t)r * nc + 8 * ch, K + (pos - rows + 1 + r) * kvrow + c0 + 8 * ch, true);
    }
    cp_async_commit();
}

static __device__ __forceinline__ void sd_append_finish(const bf16 *T, bf16 *K, bf16 *V, bf16 *C1, bf16 *C2,
                                                        const float *k, const float *v, int64_t pos, int kvrow, int c0,
                                                        int nc, int rows, int l1, int s1, int l2, int s2) {
    const int tid = threadIdx.x, c = c0 + tid;
    const int64_t kv = pos + 1;
    bf16 kb = __float2bfloat16_rn(0.f);
    if (tid < nc) {
        kb = __float2bfloat16_rn(__ldcg(k + c));
        K[pos * kvrow + c] = kb;
        V[pos * kvrow + c] = __float2bfloat16_rn(__ldcg(v + c));
    }
    cp_async_wait<0>();
    __syncthreads();
    if (tid >= nc) return;
    for (int lev = 0; lev < 2; lev++) {
        const int l = lev ? l2 : l1, s = lev ? s2 : s1;
        if (kv < l || (kv - l) % s) continue;
        const int64_t j = (kv - l) / s;
        const bf16 *col = T + (int64_t)(rows - l) * nc + tid; /* the window's first key */
        float acc = 0.f;
#pragma unroll 8
        for (int r = 0; r < l - 1; r++) acc += __bfloat162float(col[(int64_t)r * nc]);
        acc += __bfloat162float(kb);
        (lev ? C2 : C1)[j * kvrow + c] = __float2bfloat16_rn(acc / (float)l);
    }
}

/* one thread per column, 128 a CTA */
__global__ void __launch_bounds__(128) k_sdec_append(bf16 *K, bf16 *V, bf16 *C1, bf16 *C2, const float *k,
                                                     const float *v, const int64_t *dpos, int kvrow, int l1, int s1,
                                                     int l2, int s2, int prof) {
    extern __shared__ uint4 sd_app[];
    bf16 *T = (bf16 *)sd_app;
    /* the position is written by a copy before the step's first kernel (session.cu), never by a kernel of the
     * step, so every kernel of the chain may read it before pdl_wait() */
    const int64_t pos = __ldcg(dpos);
    const int c0 = blockIdx.x * blockDim.x, nc = kvrow - c0 < (int)blockDim.x ? kvrow - c0 : (int)blockDim.x;
    const int rows = sd_append_rows(pos, l1, s1, l2, s2);
    sd_append_copy(T, K, pos, kvrow, c0, nc, rows);
    pdl_wait();
    pdl_trigger();
    const bool st0 = prof && blockIdx.x == 0 && threadIdx.x == 0;
    sd_stamp(st0, 0);
    sd_append_finish(T, K, V, C1, C2, k, v, pos, kvrow, c0, nc, rows, l1, s1, l2, s2);
    sd_stamp(st0, 1);
}

/* the append's shared memory: the longer window's rows of a CTA's columns (`threads` a CTA) */
static size_t sd_append_smem(const cu_infllm_dims *d, int threads) {
    const int kvrow = d->nkv * d->hd, nc = kvrow < threads ? kvrow : threads, rows = d->l1 > d->l2 ? d->l1 : d->l2;
    return sizeof(bf16) * (size_t)rows * nc;
}

/* ---- 2. LSE over the level-2 keys ---- */

/* the online (m, l), log2 units, of heads g and g + 8 (this lane's quad) of group grp over level-2 keys [k0, k1):
 * one warp, 32 keys a step */
template <int HD>
static __device__ __forceinline__ void sd_lse_range(const uint32_t qf[HD / 16][4], const bf16 *C2, int grp, int nkv,
                                                    int64_t k0, int64_t k1, float scale, float m[2], float l[2]) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const float sl2 = scale * LOG2E_F;
    for (int64_t n0 = k0; n0 < k1; n0 += 32) { /* four n-tiles of 8 keys */
        uint4 kr[4][sd_shape<HD>::NV];
#pragma unroll
        for (int nt = 0; nt < 4; nt++) {
            const int64_t key = n0 + 8 * nt + g;
            sd_load_key<HD>(kr[nt], C2 + (key * nkv + grp) * HD, key < k1);
        }
        float S[4][4];
#pragma unroll
        for (int nt = 0; nt < 4; nt++) {
            sd_qk<HD>(qf, kr[nt], S[nt]);
#pragma unroll
            for (int j = 0; j < 4; j++)
                S[nt][j] = n0 + 8 * nt + 2 * t + (j & 1) < k1 ? S[nt][j] * sl2 : -INFINITY;
        }
#pragma unroll
        for (int r = 0; r < 2; r++) { /* online log-sum-exp of head g (r = 0) / g + 8 (r = 1), as mma_softmax */
            float mx = -INFINITY;
#pragma unroll
            for (int nt = 0; nt < 4; nt++) mx = fmaxf(mx, fmaxf(S[nt][2 * r], S[nt][2 * r + 1]));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            const float mnew = fmaxf(m[r], mx);
            float alpha = 1.f, rs = 0.f;
            if (mnew != -INFINITY) alpha = m[r] == -INFINITY ? 0.f : exp2f(m[r] - mnew);
#pragma unroll
            for (int nt = 0; nt < 4; nt++)
#pragma unroll
                for (int j = 0; j < 2; j++) {
                    const float sv = S[nt][2 * r + j];
                    rs += (mnew == -INFINITY || sv == -INFINITY) ? 0.f : exp2f(sv - mnew);
                }
            rs += __shfl_xor_sync(0xffffffffu, rs, 1);
            rs += __shfl_xor_sync(0xffffffffu, rs, 2);
            l[r] = l[r] * alpha + rs;
            m[r] = mnew;
        }
    }
}

/* Everything but the level-2 key this step's append writes runs before pdl_wait(): q is final once this kernel
 * starts (k_sdec_append triggers after its own wait). With trig0 the kernel lets k_sdec_score start at once, so
 * that the level-1 keys stream while the append and this kernel run. */
template <int HD>
__global__ void __launch_bounds__(128, 4) k_sdec_lse(float *part, const float *q, const bf16 *C2,
                                                  const int64_t *dpos, int nkv, int l2, int s2, float scale, int tpu,
                                                  int units, int trig0, int prof) {
    const int grp = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const bool st0 = prof && blockIdx.x == 0 && grp == 0 && threadIdx.x == 0;
    sd_stamp(st0, 2);
    if (trig0) pdl_trigger();
    const int64_t kv = __ldcg(dpos) + 1, n2 = nwin64(kv, l2, s2); /* the position: readable before the wait */
    const int64_t n2_old = nwin64(kv - 1, l2, s2);                   /* keys n2_old.. are this step's */
    const int u = blockIdx.x * 4 + warp;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
    const int64_t k0 = (int64_t)u * tpu * 64, k1 = k0 + tpu * 64 < n2 ? k0 + tpu * 64 : n2;
    /* the 32-key steps of [k0, k1) before `split` hold only older keys */
    const int64_t split = n2_old < k1 ? (n2_old < k0 ? k0 : k0 + (n2_old - k0) / 32 * 32) : k1;
    uint32_t qf[HD / 16][4];
    if (u < units && k0 < k1) {
        sd_q_frags<HD>(q + (int64_t)grp * SD_G * HD, qf);
        sd_lse_range<HD>(qf, C2, grp, nkv, k0, split, scale, m, l);
    }
    sd_stamp(st0, 16);
    pdl_wait();
    if (!trig0) pdl_trigger();
    sd_stamp(st0, 3);
    if (u < units && split < k1) sd_lse_range<HD>(qf, C2, grp, nkv, split, k1, scale, m, l);
    /* the CTA's record: its 4 warps' (m, l) merged per head (the warps in order) */
    __shared__ float s_ml[4][SD_G][2];
    if (t == 0) {
        s_ml[warp][g][0] = m[0], s_ml[warp][g][1] = l[0];
        s_ml[warp][g + 8][0] = m[1], s_ml[warp][g + 8][1] = l[1];
    }
    __syncthreads();
    if (threadIdx.x < SD_G) {
        const int h = threadIdx.x;
        float M = -INFINITY, L = 0.f;
        for (int w = 0; w < 4; w++)
            if (s_ml[w][h][1] > 0.f) M = fmaxf(M, s_ml[w][h][0]);
        for (int w = 0; w < 4; w++)
            if (s_ml[w][h][1] > 0.f) L += s_ml[w][h][1] * exp2f(s_ml[w][h][0] - M);
        float *rec = part + (((int64_t)grp * gridDim.x + blockIdx.x) * SD_G + h) * 2;
        rec[0] = M, rec[1] = L;
    }
    sd_stamp(st0, 17);
}

/* ---- 3. stage-1 scores, pooling, top-k ---- */

/* Raw stage-1 dot products q_h·C1[key] (fp32, unscaled) of a warp's 64-key tile (keys key0 − 8 .. key0 + 63 as
 * n-tiles i = 0..8 of 8 keys: key0 + 8(i − 1) + [0, 8)), each lane's mma fragment into S[(4i + j)·32 + lane]
 * (shared memory, SD_SW floats a warp). `sel` picks the n-tiles: 0 those holding no key of [nlo, nhi) (the keys
 * this step's append writes, so they may run before pdl_wait()), 1 those that do, 2 all. Keys past n1 are 0. */
#define SD_SW (9 * 4 * 32)
template <int HD>
static __device__ __forceinline__ void sd_unit_dots(float *S, const float *q, const bf16 *C1, int64_t key0, int64_t n1,
                                                    int64_t nlo, int64_t nhi, int sel, int grp, int nkv) {
    const int lane = threadIdx.x & 31, g = lane >> 2;
    auto want = [&](int i) {
        const int64_t first = key0 + 8 * (i - 1);
        const bool touch = first < nhi && first + 8 > nlo;
        return sel == 2 || (sel == 1) == touch;
    };
    bool any = false;
#pragma unroll
    for (int i = 0; i < 9; i++) any = any || want(i);
    if (!any) return;
    uint32_t qf[HD / 16][4];
    sd_q_frags<HD>(q + (int64_t)grp * SD_G * HD, qf);
    for (int nb = -1; nb < 8; nb += 3) { /* n-tiles −1 (the key before the tile) .. 7, three at a time */
        uint4 kr[3][sd_shape<HD>::NV];
#pragma unroll
        for (int i = 0; i < 3; i++) {
            const int64_t key = key0 + 8 * (nb + i) + g;
            sd_load_key<HD>(kr[i], C1 + (key * nkv + grp) * HD, want(nb + 1 + i) && key >= 0 && key < n1);
        }
#pragma unroll
        for (int i = 0; i < 3; i++)
            if (want(nb + 1 + i)) {
                float c[4];
                sd_qk<HD>(qf, kr[i], c);
#pragma unroll
                for (int j = 0; j < 4; j++) S[(4 * (nb + 1 + i) + j) * 32 + lane] = c[j];
            }
    }
}

/* Stage-1 scores of blocks [SD_BPC·unit, +SD_BPC) of group grp (the CTA's 16 warps, one 64-key tile each, their dot
 * products in S by sd_unit_dots: warp w's at S + w·SD_SW) max-pooled into sort keys, then the unit's candidates
 * (valid blocks of rank < budget, ties to the lower block, in rank order: list index = rank) into slot
 * grp·nunits + unit of cand_key / cand_blk and their count into cand_n. L0, L1: the LSE (log2 units) of heads g and
 * g + 8 of the lane's quad. 512 threads; S is free again on return. */
template <int HD>
static __device__ void sd_unit_finish(uint32_t *cand_key, int32_t *cand_blk, int *cand_n, const float *S, float L0,
                                      float L1, int64_t pos, int grp, int unit, int nunits, int l1, int s1, float scale,
                                      int init_blocks, int local_blocks, int budget) {
    __shared__ float sc[16][68];       /* per warp: score of key 64·tile − 1, then the tile's 64 keys */
    __shared__ uint32_t bkey[SD_BPC];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int64_t kv = pos + 1, n1 = nwin64(kv, l1, s1), qb = pos / 64;
    const int64_t b0 = (int64_t)unit * SD_BPC, jt = (int64_t)unit * 16 + warp, key0 = 64 * jt;
    if (16 * jt <= qb) {
        const float sl2 = scale * LOG2E_F;
        const float *Sw = S + warp * SD_SW;
#pragma unroll
        for (int i = 0; i < 9; i++)
#pragma unroll
            for (int j = 0; j < 2; j++) {
                const int64_t key = key0 + 8 * (i - 1) + 2 * t + j;
                const bool ok = key >= 0 && key < n1;
                const float c0 = Sw[(4 * i + j) * 32 + lane], c1 = Sw[(4 * i + 2 + j) * 32 + lane];
                float v = ok ? exp2f(c0 * sl2 - L0) + exp2f(c1 * sl2 - L1) : 0.f;
                v += __shfl_xor_sync(0xffffffffu, v, 4);
                v += __shfl_xor_sync(0xffffffffu, v, 8);
                v += __shfl_xor_sync(0xffffffffu, v, 16);
                const int idx = 1 + 8 * (i - 1) + 2 * t + j;
                if (g == 0 && idx >= 0) sc[warp][idx] = ok ? v : -INFINITY;
            }
        __syncwarp();
        if (lane < 16) {
            const int64_t b = 16 * jt + lane;
            float p = -INFINITY;
            for (int x = 4 * lane; x <= 4 * lane + 4; x++) p = fmaxf(p, sc[warp][x]);
            const bool forced = b < init_blocks || (b >= qb - local_blocks && b <= qb);
            bkey[warp * 16 + lane] = sort_key(forced ? INFINITY : p);
        }
    }
    __syncthreads();
    /* this CTA's candidates: valid blocks (≤ qb) of rank < budget, ties to the lower block, in block order */
    const int nvalid = b0 > qb ? 0 : (int)(qb - b0 + 1 < SD_BPC ? qb - b0 + 1 : SD_BPC);
    bool cand = false;
    uint32_t mykey = 0;
    int rank = 0;
    if ((int)threadIdx.x < nvalid) {
        mykey = bkey[threadIdx.x];
#pragma unroll 8 /* independent shared-memory loads in flight: these loops are latency-bound */
        for (int j = 0; j < nvalid; j++) {
            const uint32_t kj = bkey[j];
            rank += kj > mykey || (kj == mykey && j < (int)threadIdx.x);
        }
        cand = rank < budget;
    }
    /* the list in rank order (the ranks of the candidates are 0 .. total − 1): composite keys descending */
    const int total = nvalid < budget ? nvalid : budget;
    const int64_t slot = (int64_t)grp * nunits + unit;
    if (cand) {
        cand_key[slot * budget + rank] = mykey;
        cand_blk[slot * budget + rank] = (int32_t)(b0 + threadIdx.x);
    }
    if (threadIdx.x == 0) cand_n[slot] = total;
}

/* sd_unit_dots (all n-tiles) then sd_unit_finish for one unit: S is the CTA's 16·SD_SW floats of shared memory */
template <int HD>
static __device__ void sd_score_unit(uint32_t *cand_key, int32_t *cand_blk, int *cand_n, float *S, const float *q,
                                     float L0, float L1, const bf16 *C1, int64_t pos, int grp, int unit, int nunits,
                                     int nkv, int l1, int s1, float scale, int init_blocks, int local_blocks, int budget) {
    const int warp = threadIdx.x >> 5;
    const int64_t jt = (int64_t)unit * 16 + warp;
    __syncthreads(); /* S, sc and bkey of a previous unit are read */
    if (16 * jt <= pos / 64)
        sd_unit_dots<HD>(S + warp * SD_SW, q, C1, 64 * jt, nwin64(pos + 1, l1, s1), 0, 0, 2, grp, nkv);
    __syncwarp();
    sd_unit_finish<HD>(cand_key, cand_blk, cand_n, S, L0, L1, pos, grp, unit, nunits, l1, s1, scale, init_blocks,
                       local_blocks, budget);
}

/* out[0..n) = the n distinct block indices src[0..n) (shared memory) in ascending order; 512 threads */
static __device__ __forceinline__ void sd_blocks_sorted(int32_t *out, const int32_t *src, int n) {
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const int32_t b = src[i];
        int pos = 0;
#pragma unroll 8 /* independent shared-memory loads in flight: these loops are latency-bound */
        for (int j = 0; j < n; j++) pos += src[j] < b;
        out[pos] = b;
    }
}

/* *thr = the budget-th largest of the ns ≥ budget composite keys sS (shared memory), two threads (adjacent lanes)
 * an entry while 2·ns ≤ 512; the caller synchronizes before reading it */
static __device__ __forceinline__ void sd_bound(uint64_t *thr, const uint64_t *sS, int ns, int budget) {
    const int two = 2 * ns <= 512, per = two ? 2 : 1;
    for (int i0 = 0; i0 < ns * per; i0 += 512) {
        const int i = (i0 + (int)threadIdx.x) / per, part = two ? (int)threadIdx.x & 1 : 0;
        const uint64_t c = i < ns ? sS[i] : 0;
        int r = 0;
        if (i < ns)
#pragma unroll 8
            for (int j = part; j < ns; j += per) r += sS[j] > c;
        if (two) r += __shfl_xor_sync(0xffffffffu, r, 1);
        if (i < ns && part == 0 && r == budget - 1) *thr = c;
    }
}

/* out = the top `budget` of the nv ≥ budget survivors sv (composite keys, shared memory) in ascending block order,
 * through sslot [budget]; 512 threads */
static __device__ __forceinline__ void sd_top_sorted(int32_t *out, const uint64_t *sv, int nv, int budget,
                                                     int32_t *sslot) {
    for (int i = threadIdx.x; i < nv; i += blockDim.x) {
        const uint64_t c = sv[i];
        int r = 0;
#pragma unroll 8
        for (int j = 0; j < nv; j++) r += sv[j] > c;
        if (r < budget) sslot[r] = (int32_t)(0xffffffu - (uint32_t)c);
    }
    __syncthreads();
    sd_blocks_sorted(out, sslot, budget);
}

/* The top `budget` of group grp's candidates (the ncta lists of sd_score_unit) in ascending block order into out
 * (global or shared memory), from every candidate loaded; returns their number (every thread). 512 threads, smem:
 * sd_select_smem bytes. sd_select tries sd_select_fast first. */
static __device__ int sd_select_all(int32_t *out, const uint32_t *cand_key, const int32_t *cand_blk, const int *cand_n,
                                    int grp, int ncta, int budget, void *smem, bool st = false) {
    st = st && threadIdx.x == 0; /* SALA_SDEC_PROF: stamps 18-20, the counts n, nv and the path in 21-23 */
    __shared__ int hist[256], sel_digit, sel_k, s_ns, s_nv;
    __shared__ uint64_t s_thr;
    const int lane = threadIdx.x & 31;
    uint32_t *skey = (uint32_t *)smem;
    const int cap = ncta * budget;
    int32_t *sblk = (int32_t *)(skey + cap);
    int *soff = (int *)(sblk + cap); /* [ncta + 1] */
    /* every list slot's candidate (16 a thread in flight) is loaded in the same round as the lists' counts: only
     * the slots below their list's count are kept */
    constexpr int PER = 16;
    const int64_t gbase = (int64_t)grp * ncta * budget;
    uint32_t kk[PER];
    int32_t bb[PER];
    auto issue = [&](int e0) {
#pragma unroll
        for (int j = 0; j < PER; j++) {
            const int e = e0 + (int)threadIdx.x + 512 * j;
            if (e < ncta * budget) kk[j] = __ldcg(cand_key + gbase + e), bb[j] = __ldcg(cand_blk + gbase + e);
        }
    };
    issue(0);
    if (threadIdx.x < 32) { /* offsets of the CTAs' lists (the first 32·8 counts loaded at once) */
        int base = 0, pre[8];
#pragma unroll
        for (int k = 0; k < 8; k++) {
            const int c = 32 * k + lane;
            pre[k] = c < ncta ? __ldcg(cand_n + (int64_t)grp * ncta + c) : 0;
        }
        for (int c0 = 0; c0 < ncta; c0 += 32) {
            const int c = c0 + lane;
            int v = 0;
#pragma unroll
            for (int k = 0; k < 8; k++)
                if (c0 == 32 * k) v = pre[k];
            if (c0 >= 256 && c < ncta) v = __ldcg(cand_n + (int64_t)grp * ncta + c);
            int x = v;
            for (int o = 1; o < 32; o <<= 1) {
                int y = __shfl_up_sync(0xffffffffu, x, o);
                if (lane >= o) x += y;
            }
            if (c < ncta) soff[c] = base + x - v;
            base += __shfl_sync(0xffffffffu, x, 31);
        }
        if (lane == 0) soff[ncta] = base;
    }
    if (threadIdx.x == 32) s_ns = 0, s_nv = 0;
    __syncthreads();
    const int n = soff[ncta];
    /* the candidates of local rank < m (at most budget + 2·ncta) as composite keys, for a lower bound below */
    const int m = (budget + ncta - 1) / ncta + 1;
    uint64_t *sS = (uint64_t *)(((uintptr_t)(soff + ncta + 1) + 7) & ~(uintptr_t)7); /* [budget + 2·ncta] */
    uint64_t *sv = sS + budget + 2 * ncta;                                           /* [SD_SURV] */
    int32_t *sslot = (int32_t *)(sv + SD_SURV);                                        /* [budget] */
    for (int e0 = 0;;) {
#pragma unroll
        for (int j = 0; j < PER; j++) {
            const int e = e0 + (int)threadIdx.x + 512 * j;
            if (e >= ncta * budget) continue;
            const int c = e / budget, i = e % budget;
            if (i >= soff[c + 1] - soff[c]) continue;
            const int dst = soff[c] + i;
            skey[dst] = kk[j], sblk[dst] = bb[j];
            if (i < m) sS[atomicAdd(&s_ns, 1)] = sd_comp(kk[j], bb[j]); /* list index = local rank */
        }
        e0 += 512 * PER;
        if (e0 >= ncta * budget) break;
        issue(e0);
    }
    __syncthreads();
    sd_stamp(st, 18);
    if (st) sd_stamps4[21] = (unsigned long long)n, sd_stamps4[23] = 0;
    if (n <= budget) { /* every candidate is chosen (they are the blocks 0..qb, or exactly `budget`) */
        sd_blocks_sorted(out, sblk, n);
        return n;
    }
    /* Composite keys (score key, then the lower block) order the candidates totally, as the radix select below
     * with its ties to the lower block. The budget-th largest of the subset sS is a lower bound of the
     * budget-th largest of all (when sS has budget of them): the candidates under it are dropped, typically
     * leaving a few hundred, whose ranks are counted directly (O(n²) in shared memory, no passes). */
    {
        const int ns = s_ns;
        if (threadIdx.x == 0) s_thr = 0;
        __syncthreads();
        if (ns >= budget) sd_bound(&s_thr, sS, ns, budget);
        __syncthreads();
        sd_stamp(st, 19);
        const uint64_t thr = s_thr;
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            const uint64_t c = sd_comp(skey[i], sblk[i]);
            if (c >= thr) {
                const int x = atomicAdd(&s_nv, 1);
                if (x < SD_SURV) sv[x] = c;
            }
        }
        __syncthreads();
        const int nv = s_nv;
        sd_stamp(st, 20);
        if (st) sd_stamps4[22] = (unsigned long long)nv, sd_stamps4[23] = nv <= SD_SURV ? 1 : 2;
        if (nv <= SD_SURV) { /* nv ≥ budget: the top `budget` of sS (or all n) are among them */
            sd_top_sorted(out, sv, nv, budget, sslot);
            return budget;
        }
    }
    /* radix select of the budget-th largest key, 8 bits a pass (as k_infllm_topk) */
    uint32_t prefix = 0, maskbits = 0;
    int k = budget;
    for (int shift = 24; shift >= 0; shift -= 8) {
        if (threadIdx.x < 256) hist[threadIdx.x] = 0;
        __syncthreads();
        for (int base = 0; base < n; base += blockDim.x) {
            const int i = base + threadIdx.x;
            const uint32_t u = i < n ? skey[i] : 0u;
            const bool act = i < n && (u & maskbits) == prefix;
            const unsigned active = __ballot_sync(0xffffffffu, act);
            if (act) {
                const unsigned bin = (u >> shift) & 255u;
                const unsigned peers = __match_any_sync(active, bin);
                if (lane == __ffs(peers) - 1) atomicAdd(&hist[bin], __popc(peers));
            }
        }
        __syncthreads();
        if (threadIdx.x < 32) { /* the digit: bins from 255 down, 8 per lane */
            int h[8], s = 0;
#pragma unroll
            for (int i = 0; i < 8; i++) h[i] = hist[255 - 8 * lane - i], s += h[i];
            int x = s;
            for (int o = 1; o < 32; o <<= 1) {
                int y = __shfl_up_sync(0xffffffffu, x, o);
                if (lane >= o) x += y;
            }
            int cum = x - s; /* keys in bins above this lane's */
            const bool here = cum < k && k <= x;
            const bool none = __ballot_sync(0xffffffffu, here) == 0; /* cannot happen: n > k */
            if (here || (none && lane == 31)) {
                int d = 255 - 8 * lane - 7;
                for (int i = 0; i < 8; i++) {
                    if (cum + h[i] >= k) {
                        d = 255 - 8 * lane - i;
                        break;
                    }
                    cum += h[i];
                }
                sel_digit = d;
                sel_k = k - cum;
            }
        }
        __syncthreads();
        prefix |= (uint32_t)sel_digit << shift;
        maskbits |= 255u << shift;
        k = sel_k;
        __syncthreads();
    }
    const uint32_t thr = prefix; /* take every key above thr and the first k equal to it */
    const int seg = (n + (int)blockDim.x - 1) / (int)blockDim.x, i0 = threadIdx.x * seg;
    const int i1 = i0 + seg < n ? i0 + seg : n;
    int neq = 0;
    for (int i = i0; i < i1; i++) neq += skey[i] == thr;
    int tot;
    const int eq_base = scan_block<512>(neq, &tot);
    int ntake = 0;
    for (int i = i0, e = eq_base; i < i1; i++) {
        const uint32_t u = skey[i];
        if (u > thr) ntake++;
        else if (u == thr) ntake += e++ < k;
    }
    int outn;
    int ob = scan_block<512>(ntake, &outn);
    for (int i = i0, e = eq_base; i < i1; i++) {
        const uint32_t u = skey[i];
        bool take = u > thr;
        if (u == thr) take = e++ < k;
        if (take) sslot[ob++] = sblk[i];
    }
    __syncthreads();
    sd_blocks_sorted(out, sslot, outn);
    return outn;
}

/* sd_select_all's common case without loading every candidate: the lists are in rank order (composite keys
 * descending), so the lower bound needs only each list's first m entries, and a list's candidates at or above it
 * are a prefix of it. Loads the counts and the first SD_SEL_P entries of every list in one round, then the rest of
 * only those lists whose P-th entry is at or above the bound (the one with the forced local blocks); then as
 * sd_select_all (survivors ranked directly, ascending block order). Returns -1 (every thread) where that does not
 * decide the selection — all chosen, too few lists for the bound, more than SD_SURV survivors — and sd_select_all
 * must run instead, after a __syncthreads(). */
#define SD_SEL_P 8
static __device__ int sd_select_fast(int32_t *out, const uint32_t *cand_key, const int32_t *cand_blk, const int *cand_n,
                                     int grp, int ncta, int budget, void *smem, bool st = false) {
    constexpr int P = SD_SEL_P;
    __shared__ int f_n, f_ns, f_nv;
    __shared__ uint64_t f_thr;
    const int m = (budget + ncta - 1) / ncta + 1;
    if (m > P || ncta * P > SD_SURV || budget < 32) return -1; /* smem: within sd_select_smem for budget ≥ 32 */
    st = st && threadIdx.x == 0;
    uint64_t *sK = (uint64_t *)smem;           /* [ncta·P] the lists' first entries */
    uint64_t *sS = sK + ncta * P;              /* [ncta·m] the bound's subset */
    uint64_t *sv = sS + ncta * m;              /* [SD_SURV] survivors */
    int *sCnt = (int *)(sv + SD_SURV);         /* [ncta] */
    int *sLong = sCnt + ncta;                  /* [ncta] lists with survivors past their first P */
    int32_t *sslot = (int32_t *)(sLong + ncta); /* [budget] */
    if (threadIdx.x == 0) f_n = 0, f_ns = 0, f_nv = 0, f_thr = 0;
    const int64_t gbase = (int64_t)grp * ncta * budget;
    for (int e = threadIdx.x; e < ncta * P; e += blockDim.x) {
        const int64_t src = gbase + (int64_t)(e / P) * budget + e % P;
        const uint32_t k = __ldcg(cand_key + src);
        const int32_t b = __ldcg(cand_blk + src);
        sK[e] = sd_comp(k, b);
    }
    for (int c = threadIdx.x; c < ncta; c += blockDim.x) sCnt[c] = __ldcg(cand_n + (int64_t)grp * ncta + c);
    __syncthreads();
    sd_stamp(st, 18);
    for (int c = threadIdx.x; c < ncta; c += blockDim.x) atomicAdd(&f_n, sCnt[c]);
    for (int e = threadIdx.x; e < ncta * P; e += blockDim.x)
        if (e % P < m && e % P < sCnt[e / P]) sS[atomicAdd(&f_ns, 1)] = sK[e];
    __syncthreads();
    const int n = f_n, ns = f_ns;
    if (st) sd_stamps4[21] = (unsigned long long)n, sd_stamps4[23] = 3;
    if (n <= budget || ns < budget) return -1;
    sd_bound(&f_thr, sS, ns, budget);
    __syncthreads();
    sd_stamp(st, 19);
    const uint64_t thr = f_thr;
    for (int c = threadIdx.x; c < ncta; c += blockDim.x) sLong[c] = sCnt[c] > P && sK[c * P + P - 1] >= thr;
    for (int e = threadIdx.x; e < ncta * P; e += blockDim.x)
        if (e % P < sCnt[e / P] && sK[e] >= thr) {
            const int x = atomicAdd(&f_nv, 1);
            if (x < SD_SURV) sv[x] = sK[e];
        }
    __syncthreads();
    /* the rest of the long lists (typically the one holding the forced local blocks): a second round */
    for (int c = 0; c < ncta; c++) {
        if (!sLong[c]) continue;
        for (int i = P + (int)threadIdx.x; i < sCnt[c]; i += blockDim.x) {
            const int64_t src = gbase + (int64_t)c * budget + i;
            const uint64_t k = sd_comp(__ldcg(cand_key + src), __ldcg(cand_blk + src));
            if (k >= thr) {
                const int x = atomicAdd(&f_nv, 1);
                if (x < SD_SURV) sv[x] = k;
            }
        }
    }
    __syncthreads();
    const int nv = f_nv; /* ≥ budget: sS's top budget are among them */
    if (nv > SD_SURV) return -1;
    sd_stamp(st, 20);
    if (st) sd_stamps4[22] = (unsigned long long)nv;
    sd_top_sorted(out, sv, nv, budget, sslot);
    return budget;
}

/* The top `budget` of group grp's candidates in ascending block order into out; returns their number (every
 * thread): sd_select_fast where it decides, else sd_select_all. 512 threads, smem: sd_select_smem bytes. */
static __device__ int sd_select(int32_t *out, const uint32_t *cand_key, const int32_t *cand_blk, const int *cand_n,
                                int grp, int ncta, int budget, void *smem, bool st = false) {
    int n = sd_select_fast(out, cand_key, cand_blk, cand_n, grp, ncta, budget, smem, st);
    if (n < 0) {
        __syncthreads();
        n = sd_select_all(out, cand_key, cand_blk, cand_n, grp, ncta, budget, smem, st);
    }
    return n;
}

/* The dot products need only q and C1, so they run before pdl_wait() (this kernel starts once the LSE kernel runs,
 * and q is final by then, see k_sdec_lse), all but the n-tiles holding the level-1 key this step's append writes;
 * the LSE records are read after the wait. ≤ 96 registers, so that a CTA fits beside the LSE kernel's on an SM. */
template <int HD>
__global__ void __maxnreg__(96)
    k_sdec_score(int32_t *blocks, int32_t *nsel, uint32_t *cand_key, int32_t *cand_blk, int *cand_n, int *counter,
                 const float *q, const float *lse_part, int nrec, const bf16 *C1, const int64_t *dpos, int nkv, int l1,
                 int s1, float scale, int init_blocks, int local_blocks, int budget, int prof) {
    extern __shared__ uint4 sd_smem[]; /* the dot products [16][SD_SW], then (last CTA) sd_select's */
    float *S = (float *)sd_smem;
    const int grp = blockIdx.y, warp = threadIdx.x >> 5, g = (threadIdx.x & 31) >> 2;
    const int64_t pos = __ldcg(dpos); /* the position: readable before the wait (k_sdec_append) */
    const int64_t n1 = nwin64(pos + 1, l1, s1), n1_old = nwin64(pos, l1, s1); /* key n1_old.. is this step's */
    const int64_t jt = (int64_t)blockIdx.x * 16 + warp, key0 = 64 * jt;
    const bool live = 16 * jt <= pos / 64, st0 = prof && blockIdx.x == 0 && grp == 0 && threadIdx.x == 0;
    sd_stamp(st0, 5);
    if (live) sd_unit_dots<HD>(S + warp * SD_SW, q, C1, key0, n1, n1_old, n1, 0, grp, nkv);
    sd_stamp(st0, 6);
    pdl_wait();
    pdl_trigger();
    sd_stamp(st0, 7);
    if (live) sd_unit_dots<HD>(S + warp * SD_SW, q, C1, key0, n1, n1_old, n1, 1, grp, nkv);
    /* the LSE of head `warp`: the LSE kernel's nrec records of the group merged (every CTA alike) */
    __shared__ float s_lse[SD_G];
    {
        float M, L;
        sf_merge_ml(lse_part + ((int64_t)grp * nrec * SD_G + warp) * 2, nrec, SD_G * 2, &M, &L, NULL);
        const float lse = L > 0.f ? (M + log2f(L)) * LN2_F : -INFINITY;
        if ((threadIdx.x & 31) == 0) s_lse[warp] = lse * LOG2E_F;
    }
    __syncthreads();
    const float L0 = s_lse[g], L1 = s_lse[g + 8];
    sd_unit_finish<HD>(cand_key, cand_blk, cand_n, S, L0, L1, pos, grp, blockIdx.x, gridDim.x, l1, s1, scale,
                       init_blocks, local_blocks, budget);
    sd_stamp(st0, 8);
    if (!sd_last_cta(counter + grp)) return;
    const bool stl = prof && grp == 0 && threadIdx.x == 0;
    sd_stamp(stl, 9);
    const int n =
        sd_select(blocks + (int64_t)grp * budget, cand_key, cand_blk, cand_n, grp, gridDim.x, budget, sd_smem, stl);
    if (threadIdx.x == 0) nsel[grp] = n, counter[grp] = 0;
    sd_stamp(stl, 10);
}

/* ---- 4. attention over the chosen blocks ---- */

/* rows [0, 64) of dst (pitch HD + 8) = bf16 rows first.. of src, zero at or past limit; this warp's lanes */
template <int HD>
static __device__ __forceinline__ void sd_async_rows(bf16 *dst, const bf16 *src, int64_t stride, int64_t first,
                                                     int64_t limit) {
    constexpr int QP = mma_shape<HD>::QP, CH = HD / 8;
    const int lane = threadIdx.x & 31;
    for (int e = lane; e < MMA_BK * CH; e += 32) {
        const int n = e / CH, c = (e % CH) * 8;
        const int64_t r = first + n;
        const bool v = r < limit;
        cp_async16(dst + n * QP + c, v ? (const void *)(src + r * stride + c) : (const void *)src, v);
    }
}

/* Qs [16][QP] = bf16 of the group's 16 query vectors qg (fp32, HD each): NT threads, every thread's float4
 * loads in flight at once */
template <int HD, int NT>
static __device__ __forceinline__ void sd_q_smem(bf16 *Qs, const float *qg) {
    constexpr int QP = mma_shape<HD>::QP, NQ4 = SD_G * HD / 4, NQ = (NQ4 + NT - 1) / NT;
    const float4 *q4 = (const float4 *)qg;
    float4 qv[NQ];
#pragma unroll
    for (int j = 0; j < NQ; j++) {
        const int e4 = threadIdx.x + NT * j;
        if (e4 < NQ4) qv[j] = __ldcg(q4 + e4);
    }
#pragma unroll
    for (int j = 0; j < NQ; j++) {
        const int e4 = threadIdx.x + NT * j;
        if (e4 < NQ4) {
            bf16 *dq = Qs + (4 * e4 / HD) * QP + (4 * e4) % HD;
            dq[0] = __float2bfloat16_rn(qv[j].x), dq[1] = __float2bfloat16_rn(qv[j].y);
            dq[2] = __float2bfloat16_rn(qv[j].z), dq[3] = __float2bfloat16_rn(qv[j].w);
        }
    }
}

/* the warp's K and V tiles of the block at key k0 of group grp (rows < kv) requested by cp.async, K's group first */
template <int HD>
static __device__ __forceinline__ void sd_tiles_start(bf16 *myK, bf16 *myV, const bf16 *K, const bf16 *V, int grp,
                                                      int64_t kstride, int64_t k0, int64_t kv) {
    sd_async_rows<HD>(myK, K + (int64_t)grp * HD, kstride, k0, kv);
    cp_async_commit();
    sd_async_rows<HD>(myV, V + (int64_t)grp * HD, kstride, k0, kv);
    cp_async_commit();
}

/* the number of chosen blocks of group grp, and (u < that number) the tiles of chosen block u started into the
 * warp's myK / myV, *k0 its first key (the count and the block index loaded in flight together) */
template <int HD>
static __device__ __forceinline__ int sd_chosen_start(bf16 *myK, bf16 *myV, const bf16 *K, const bf16 *V,
                                                      const int32_t *blocks, const int32_t *nsel, int grp, int budget,
                                                      int nkv, int u, int64_t pos, int64_t *k0) {
    const int ns = __ldcg(nsel + grp);
    const int32_t bu = __ldcg(blocks + (int64_t)grp * budget + (u < budget ? u : budget - 1));
    *k0 = 0;
    if (u < ns) {
        *k0 = (int64_t)bu * MMA_BK;
        sd_tiles_start<HD>(myK, myV, K, V, grp, (int64_t)nkv * HD, *k0, pos + 1);
    }
    return ns;
}

/* an empty online softmax: m = −∞, l = 0, O = 0 */
template <int HD> static __device__ __forceinline__ void sd_softmax_init(float m[2], float l[2], float O[HD / 8][4]) {
    m[0] = m[1] = -INFINITY, l[0] = l[1] = 0.f;
#pragma unroll
    for (int dt = 0; dt < HD / 8; dt++) O[dt][0] = O[dt][1] = O[dt][2] = O[dt][3] = 0.f;
}

/* one chosen block (keys k0 .. k0 + 63, those ≤ pos) into the warp's online softmax (m, l in log2 units, O): its K
 * and V tiles were requested by cp.async, K's group first */
template <int HD>
static __device__ __forceinline__ void sd_attn_tile(const bf16 *Qs, const bf16 *myK, const bf16 *myV, int64_t k0,
                                                    int64_t pos, float scale, float m[2], float l[2], float O[HD / 8][4]) {
    constexpr int QP = mma_shape<HD>::QP;
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    cp_async_wait<1>();
    __syncwarp();
    float S[8][4];
#pragma unroll
    for (int nt = 0; nt < 8; nt++) S[nt][0] = S[nt][1] = S[nt][2] = S[nt][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++) { /* mma_qk with q's fragments read per k-step (fewer live registers) */
        uint32_t a[4];
        const bf16 *p0 = Qs + g * QP + kk * 16 + 2 * t, *p1 = p0 + 8 * QP;
        a[0] = *(const uint32_t *)p0, a[1] = *(const uint32_t *)p1;
        a[2] = *(const uint32_t *)(p0 + 8), a[3] = *(const uint32_t *)(p1 + 8);
#pragma unroll
        for (int nt = 0; nt < 8; nt++) {
            const bf16 *kr = myK + (nt * 8 + g) * QP + kk * 16 + 2 * t;
            uint32_t b[2] = {*(const uint32_t *)kr, *(const uint32_t *)(kr + 8)};
            mma16816(S[nt], a, b);
        }
    }
    const float sl2 = scale * LOG2E_F;
#pragma unroll
    for (int nt = 0; nt < 8; nt++)
#pragma unroll
        for (int j = 0; j < 4; j++) S[nt][j] = k0 + nt * 8 + 2 * t + (j & 1) <= pos ? S[nt][j] * sl2 : -INFINITY;
    mma_softmax<HD>(S, m, l, O, true);
    cp_async_wait<0>();
    __syncwarp();
    mma_pv_rows<HD>(S, myV, O);
}

/* the warp's record [16 heads][HD + 4]: m, l (log2 units), -, -, O[HD] */
template <int HD>
static __device__ __forceinline__ void sd_attn_record(float *rec, const float m[2], const float l[2],
                                                      const float O[HD / 8][4]) {
    constexpr int RP = HD + 4;
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    if (t == 0) {
        rec[g * RP] = m[0], rec[g * RP + 1] = l[0];
        rec[(g + 8) * RP] = m[1], rec[(g + 8) * RP + 1] = l[1];
    }
#pragma unroll
    for (int dt = 0; dt < HD / 8; dt++) {
        const int d = 4 + dt * 8 + 2 * t;
        rec[g * RP + d] = O[dt][0], rec[g * RP + d + 1] = O[dt][1];
        rec[(g + 8) * RP + d] = O[dt][2], rec[(g + 8) * RP + d + 1] = O[dt][3];
    }
}

/* the CTA's record [16][HD + 4] in global memory = the merge of its NW warps' records (in the K tiles, SD_AW-style
 * layout: warp w's at Ks + 2w·TILE), the warps in order; NT threads */
template <int HD, int NW, int NT>
static __device__ __forceinline__ void sd_cta_record(float *cta_rec, const bf16 *Ks) {
    constexpr int TILE = MMA_BK * mma_shape<HD>::QP, RP = HD + 4;
    for (int e = threadIdx.x; e < SD_G * HD; e += NT) {
        const int hh = e / HD, d = e % HD;
        float M = -INFINITY;
        for (int w = 0; w < NW; w++) {
            const float *r = (const float *)(Ks + w * 2 * TILE) + hh * RP;
            if (r[1] > 0.f) M = fmaxf(M, r[0]);
        }
        float L = 0.f, A = 0.f;
        for (int w = 0; w < NW; w++) {
            const float *r = (const float *)(Ks + w * 2 * TILE) + hh * RP;
            if (r[1] > 0.f) {
                const float f = exp2f(r[0] - M);
                L += r[1] * f;
                A += r[4 + d] * f;
            }
        }
        if (d == 0) cta_rec[hh * RP] = M, cta_rec[hh * RP + 1] = L;
        cta_rec[hh * RP + 4 + d] = A;
    }
}

template <int HD>
__global__ void __launch_bounds__(SD_AW * 32) k_sdec_attn(float *o, float *part, int *counter, const float *q,
                                                          const bf16 *K, const bf16 *V, const int32_t *blocks,
                                                          const int32_t *nsel, const int64_t *dpos, int nkv,
                                                          int budget, float scale, int trig0, int prof) {
    constexpr int QP = mma_shape<HD>::QP, TILE = MMA_BK * QP, RP = HD + 4, RECF = SD_G * RP;
    extern __shared__ uint4 sd_smem[];
    bf16 *Qs = (bf16 *)sd_smem;             /* [16][QP] */
    bf16 *Ks = Qs + SD_G * QP;              /* per warp: K tile, V tile */
    const int grp = blockIdx.y, warp = threadIdx.x >> 5;
    bf16 *myK = Ks + warp * 2 * TILE, *myV = myK + TILE;
    float *rec = (float *)myK; /* [16][RP]: m, l, -, -, O[HD], after the tile is used; fits in the K tile */
    if (trig0 == 1) pdl_trigger(); /* o_proj's blocks may start loading weights now (decode_knobs.h) */
    const int64_t pos = __ldcg(dpos); /* readable before the wait (k_sdec_append) */
    pdl_wait();
    const bool st0 = prof && blockIdx.x == 0 && grp == 0 && threadIdx.x == 0;
    sd_stamp(st0, 11);
    const int u = blockIdx.x * SD_AW + warp;
    int64_t k0;
    const int ns = sd_chosen_start<HD>(myK, myV, K, V, blocks, nsel, grp, budget, nkv, u, pos, &k0); /* q meanwhile */
    sd_q_smem<HD, SD_AW * 32>(Qs, q + (int64_t)grp * SD_G * HD);
    __syncthreads();
    float m[2], l[2], O[HD / 8][4];
    sd_softmax_init<HD>(m, l, O);
    if (u < ns) sd_attn_tile<HD>(Qs, myK, myV, k0, pos, scale, m, l, O);
    /* o_proj may start streaming its weights now, not while the tiles load: measured faster (H100, decbench) */
    if (trig0 == 0) pdl_trigger();
    sd_stamp(st0, 12);
    __syncwarp();
    sd_attn_record<HD>(rec, m, l, O);
    __syncthreads();
    /* merge the CTA's warps into one record in global memory */
    sd_cta_record<HD, SD_AW, SD_AW * 32>(part + ((int64_t)grp * gridDim.x + blockIdx.x) * RECF, Ks);
    if (trig0 == 2) pdl_trigger();
    sd_stamp(st0, 13);
    if (!sd_last_cta(counter + grp)) return;
    const bool stl = prof && grp == 0 && threadIdx.x == 0;
    sd_stamp(stl, 14);
    /* last CTA: per head, M and L over the CTAs' records, then each output as one float4 sum over them */
    const int ncta = gridDim.x;
    const float *all = part + (int64_t)grp * ncta * RECF;
    float *fm = (float *)sd_smem, *fl = fm + ncta * SD_G; /* [ncta][16] m, l, then the factors */
    __shared__ float Mh[SD_G], Lh[SD_G];
    for (int e0 = 0; e0 < ncta * SD_G; e0 += SD_AW * 32 * 4) { /* 4 records a thread in flight */
        float a[4], b[4];
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int e = e0 + threadIdx.x + SD_AW * 32 * j;
            if (e < ncta * SD_G) {
                const float *r = all + (int64_t)(e / SD_G) * RECF + (e % SD_G) * RP;
                a[j] = __ldcg(r), b[j] = __ldcg(r + 1);
            }
        }
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int e = e0 + threadIdx.x + SD_AW * 32 * j;
            if (e < ncta * SD_G) fm[e] = a[j], fl[e] = b[j];
        }
    }
    __syncthreads();
    if (threadIdx.x < SD_G) {
        const int hh = threadIdx.x;
        float M = -INFINITY, L = 0.f;
        for (int c = 0; c < ncta; c++)
            if (fl[c * SD_G + hh] > 0.f) M = fmaxf(M, fm[c * SD_G + hh]);
        for (int c = 0; c < ncta; c++)
            if (fl[c * SD_G + hh] > 0.f) L += fl[c * SD_G + hh] * exp2f(fm[c * SD_G + hh] - M);
        Mh[hh] = M, Lh[hh] = L;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < ncta * SD_G; e += blockDim.x) { /* factor of CTA c's record for head hh */
        const int hh = e % SD_G;
        fm[e] = fl[e] > 0.f && Lh[hh] > 0.f ? exp2f(fm[e] - Mh[hh]) / Lh[hh] : 0.f;
    }
    __syncthreads();
    { /* each output float4 summed over the CTAs in order; a thread's outputs × SD_MCTA CTAs of loads in flight */
        constexpr int NOUT = SD_G * HD / 4, NO = (NOUT + SD_AW * 32 - 1) / (SD_AW * 32);
        float4 acc[NO];
#pragma unroll
        for (int j = 0; j < NO; j++) acc[j] = make_float4(0.f, 0.f, 0.f, 0.f);
        for (int c0 = 0; c0 < ncta; c0 += SD_MCTA) {
            float4 a[NO][SD_MCTA];
#pragma unroll
            for (int j = 0; j < NO; j++)
#pragma unroll
                for (int cc = 0; cc < SD_MCTA; cc++) {
                    const int e = threadIdx.x + SD_AW * 32 * j, c = c0 + cc;
                    if (e < NOUT && c < ncta)
                        a[j][cc] = __ldcg((const float4 *)(all + (int64_t)c * RECF + (e / (HD / 4)) * RP + 4 +
                                                           4 * (e % (HD / 4))));
                }
#pragma unroll
            for (int j = 0; j < NO; j++)
#pragma unroll
                for (int cc = 0; cc < SD_MCTA; cc++) {
                    const int e = threadIdx.x + SD_AW * 32 * j, c = c0 + cc;
                    if (e < NOUT && c < ncta) {
                        const float f = fm[c * SD_G + e / (HD / 4)];
                        const float4 v = a[j][cc];
                        if (f != 0.f) acc[j].x += f * v.x, acc[j].y += f * v.y, acc[j].z += f * v.z, acc[j].w += f * v.w;
                    }
                }
        }
#pragma unroll
        for (int j = 0; j < NO; j++) {
            const int e = threadIdx.x + SD_AW * 32 * j;
            if (e < NOUT) *(float4 *)(o + (int64_t)(grp * SD_G + e / (HD / 4)) * HD + 4 * (e % (HD / 4))) = acc[j];
        }
    }
    if (threadIdx.x == 0) counter[grp] = 0;
    sd_stamp(stl, 15);
}

/* The attention step as one cluster of SD_CL = 16 CTAs per group (sm_90+; k_sdec_attn elsewhere): CTA r's NW warps
 * take chosen blocks r·NW + w, the CTA merges its warps' records into its shared memory (sd_cta_record), and after
 * the cluster barrier CTA r merges head r over the 16 CTAs' records through distributed shared memory into o —
 * no records in global memory, no last-CTA round trips. trig: as k_sdec_attn's (0 after the tile, 1 at the top,
 * 2 after the CTA's record). */
#define SD_CL 16
template <int HD, int NW>
__global__ void __launch_bounds__(NW * 32) k_sdec_attn_cl(float *o, const float *q, const bf16 *K, const bf16 *V,
                                                          const int32_t *blocks, const int32_t *nsel,
                                                          const int64_t *dpos, int nkv, int budget, float scale, int trig,
                                                          int prof) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    namespace cgr = cooperative_groups;
    constexpr int QP = mma_shape<HD>::QP, TILE = MMA_BK * QP, RP = HD + 4, NT = NW * 32;
    extern __shared__ uint4 sd_smem[];
    bf16 *Qs = (bf16 *)sd_smem, *Ks = Qs + SD_G * QP; /* [16][QP], then per warp: K tile, V tile */
    float *crec = (float *)(Ks + NW * 2 * TILE);       /* [16][RP]: the CTA's record */
    cgr::cluster_group cl = cgr::this_cluster();
    const int grp = blockIdx.y, warp = threadIdx.x >> 5, rank = (int)cl.block_rank();
    bf16 *myK = Ks + warp * 2 * TILE, *myV = myK + TILE;
    if (trig == 1) pdl_trigger();
    const int64_t pos = __ldcg(dpos);
    /* q and the K/V rows are final once this kernel starts (stage 1 triggers after its wait) */
    sd_q_smem<HD, NT>(Qs, q + (int64_t)grp * SD_G * HD);
    pdl_wait();
    const bool st0 = prof && rank == 0 && grp == 0 && threadIdx.x == 0;
    sd_stamp(st0, 11);
    const int u = rank * NW + warp;
    int64_t k0;
    const int ns = sd_chosen_start<HD>(myK, myV, K, V, blocks, nsel, grp, budget, nkv, u, pos, &k0);
    __syncthreads(); /* Qs */
    float m[2], l[2], O[HD / 8][4];
    sd_softmax_init<HD>(m, l, O);
    if (u < ns) sd_attn_tile<HD>(Qs, myK, myV, k0, pos, scale, m, l, O);
    if (trig == 0) pdl_trigger();
    sd_stamp(st0, 12);
    __syncwarp();
    sd_attn_record<HD>((float *)myK, m, l, O);
    __syncthreads();
    sd_cta_record<HD, NW, NT>(crec, Ks);
    if (trig == 2) pdl_trigger();
    sd_stamp(st0, 13);
    cl.sync();
    sd_stamp(st0, 14);
    /* head `rank` of the group: (M, L) over the CTAs' records, then each dim summed over them in order */
    __shared__ float s_f[SD_CL];
    if (threadIdx.x < SD_CL) {
        const float *r = cl.map_shared_rank(crec, (int)threadIdx.x) + rank * RP;
        float mm = r[0], ll = r[1];
        float M = ll > 0.f ? mm : -INFINITY;
        for (int x = 1; x < SD_CL; x <<= 1) M = fmaxf(M, __shfl_xor_sync(0xffffu, M, x));
        float w = ll > 0.f ? ll * exp2f(mm - M) : 0.f, L = w;
        for (int x = 1; x < SD_CL; x <<= 1) L += __shfl_xor_sync(0xffffu, L, x);
        s_f[threadIdx.x] = ll > 0.f && L > 0.f ? exp2f(mm - M) / L : 0.f;
    }
    __syncthreads();
    for (int dd = threadIdx.x; dd < HD; dd += NT) {
        float a[SD_CL];
#pragma unroll
        for (int c = 0; c < SD_CL; c++) a[c] = s_f[c] != 0.f ? cl.map_shared_rank(crec, c)[rank * RP + 4 + dd] : 0.f;
        float acc = 0.f;
#pragma unroll
        for (int c = 0; c < SD_CL; c++)
            if (s_f[c] != 0.f) acc += s_f[c] * a[c];
        o[(int64_t)(grp * SD_G + rank) * HD + dd] = acc;
    }
    cl.sync(); /* every CTA's record stays until all have read it */
    sd_stamp(st0, 15);
#endif
}

/* ---- the fused chain: one kernel, one CTA per SM, the steps separated by grid barriers ----
 * Each of the four kernels above costs a launch, a wait for its predecessor and a last-CTA merge. k_sdec_fused
 * runs the same steps in one grid of P = nkv·half CTAs (CTAs [grp·half, +half)
 * serve group grp), every CTA resident at once (one CTA per SM, checked at plan time):
 *   0  append (CTA 0)                                                          | barrier
 *   1  LSE: warp w of the group's CTA c takes level-2 keys [(16c + w)·kpu, +kpu); the CTA merges its 16 warps'
 *      (m, l) into one record                                                 | barrier
 *   2  every CTA merges its group's `half` records into the LSE (one warp per head), then scores the stage-1
 *      units c, c + half, .. (sd_score_unit)                                  | barrier
 *   3  every CTA of the group selects the same top `budget` blocks (sd_select, into shared memory; CTA c = 0
 *      also writes them out for cu_sdec_blocks), then its SF_AW attention warps take the chosen blocks
 *      c + half·(w + SF_AW·i) and the CTA writes one record                   | barrier
 *   4  CTA j < nkv·16·DS merges (group, head, dims quarter) over the group's `half` records into o.
 * Merge orders are fixed, so the result does not depend on scheduling; they differ from the four kernels'
 * (LSE and attention are merged in other groupings), which the tests' tolerances cover.
 * Opt-in (SALA_SDEC_FUSED=1): on an H100 it was no faster alone (43.8 against 44.0 µs at 8K, 77.3 against 78.2
 * at 1M) and slower inside a step (52 against 48 µs per layer at 8K, 98 against 86 at 1M): the launches were not
 * the cost. SALA_SDEC_PROF=1 stamps each step (CTA 0's view, cu_sdec_stamps); at 1M: append 6.6 µs, barrier
 * 1.3, LSE with its barrier and merge 14.9, stage 1 with its barrier 25.2, selection 13.4, attention 8.8, the
 * last barrier and o 5.5 — those steps themselves are what to make faster, in either form. */
#define SF_T 512 /* threads of a fused CTA (sd_score_unit's 16 warps) */
#define SF_AW 2  /* attention warps per CTA */

struct sf_args {
    float *o;
    const float *q, *k, *v;
    bf16 *K, *V, *C1, *C2;
    const int64_t *dpos;
    unsigned long long *bar;
    float *lse_part, *attn_part;
    uint32_t *cand_key;
    int32_t *cand_blk, *blocks, *nsel;
    int *cand_n;
    int nkv, l1, s1, l2, s2, init_blocks, local_blocks, budget, half, nunits, kpu, ds;
    float scale;
    int prof; /* SALA_SDEC_PROF: CTA 0 stamps the global timer at each step's end into sf_stamps */
};

/* the global timer (ns) at the fused kernel's start and after each step, CTA 0 (cu_sdec_stamps) */
__device__ unsigned long long sf_stamps[8];
static __device__ __forceinline__ void sf_stamp(int on, int i) {
    if (on && blockIdx.x == 0 && threadIdx.x == 0) {
        unsigned long long t;
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
        sf_stamps[i] = t;
    }
}

/* all CTAs of the grid here (arrivals counted on a 64-bit word that only grows: every launch passes the same
 * number of barriers with the same grid, so the target is the next multiple of the grid size) */
static __device__ __forceinline__ void sf_grid_sync(unsigned long long *bar) {
    __syncthreads();
    if (threadIdx.x == 0) {
        const unsigned long long n = gridDim.x;
        __threadfence();
        const unsigned long long old = atomicAdd(bar, 1ull), target = old - old % n + n;
        unsigned long long cur;
        do {
            asm volatile("ld.acquire.gpu.global.u64 %0, [%1];" : "=l"(cur) : "l"(bar) : "memory");
        } while (cur < target);
        __threadfence();
    }
    __syncthreads();
}

template <int HD>
__global__ void __launch_bounds__(SF_T, 1) k_sdec_fused(sf_args a) {
    constexpr int QP = mma_shape<HD>::QP, TILE = MMA_BK * QP, RP = HD + 4, RECF = SD_G * RP;
    extern __shared__ uint4 sd_smem[]; /* step 3: sd_select's, then Qs [16][QP] and SF_AW × (K tile, V tile) */
    __shared__ float s_ml[SF_T / 32][SD_G][2];
    __shared__ float s_lse[SD_G];
    __shared__ int32_t s_blk[SD_BPC];
    __shared__ float s_red[SF_T];
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int grp = blockIdx.x / a.half, cg = blockIdx.x % a.half;
    /* the position comes from a copy made before the step's first kernel (session.cu), not from the kernel before
     * this one, so it may be read before pdl_wait() */
    const int64_t pos = __ldcg(a.dpos), kv = pos + 1;
    /* 0. append: CTA b takes columns [b·SF_T, +SF_T), its window's older rows copied before the wait */
    const int kvrow = a.nkv * HD, c0 = blockIdx.x * SF_T, nc = kvrow - c0 < SF_T ? kvrow - c0 : SF_T;
    const int rows = sd_append_rows(pos, a.l1, a.s1, a.l2, a.s2);
    if (nc > 0) sd_append_copy((bf16 *)sd_smem, a.K, pos, kvrow, c0, nc, rows);
    pdl_wait();
    pdl_trigger();
    sf_stamp(a.prof, 0);
    if (nc > 0)
        sd_append_finish((const bf16 *)sd_smem, a.K, a.V, a.C1, a.C2, a.k, a.v, pos, kvrow, c0, nc, rows, a.l1, a.s1,
                         a.l2, a.s2);
    sf_stamp(a.prof, 1);
    sf_grid_sync(a.bar);
    sf_stamp(a.prof, 2);

    /* 1. LSE over the level-2 keys: one record per CTA */
    {
        const int64_t n2 = nwin64(kv, a.l2, a.s2), k0 = (int64_t)(cg * (SF_T / 32) + warp) * a.kpu;
        const int64_t k1 = k0 + a.kpu < n2 ? k0 + a.kpu : n2;
        float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
        if (k0 < k1) {
            uint32_t qf[HD / 16][4];
            sd_q_frags<HD>(a.q + (int64_t)grp * SD_G * HD, qf);
            sd_lse_range<HD>(qf, a.C2, grp, a.nkv, k0, k1, a.scale, m, l);
        }
        if (t == 0) {
            s_ml[warp][g][0] = m[0], s_ml[warp][g][1] = l[0];
            s_ml[warp][g + 8][0] = m[1], s_ml[warp][g + 8][1] = l[1];
        }
        __syncthreads();
        if (warp == 0) { /* head h = lane / 2 over the 16 warps */
            const int h = lane >> 1;
            float M = -INFINITY, L = 0.f;
            for (int w = 0; w < SF_T / 32; w++)
                if (s_ml[w][h][1] > 0.f) M = fmaxf(M, s_ml[w][h][0]);
            for (int w = 0; w < SF_T / 32; w++)
                if (s_ml[w][h][1] > 0.f) L += s_ml[w][h][1] * exp2f(s_ml[w][h][0] - M);
            if ((lane & 1) == 0) {
                float *rec = a.lse_part + ((int64_t)blockIdx.x * SD_G + h) * 2;
                rec[0] = M, rec[1] = L;
            }
        }
    }
    sf_grid_sync(a.bar);

    /* 2. the group's LSE, then its stage-1 units cg, cg + half, .. */
    if (warp < SD_G) {
        float M, L;
        sf_merge_ml(a.lse_part + ((int64_t)grp * a.half * SD_G + warp) * 2, a.half, SD_G * 2, &M, &L, NULL);
        const float lse = L > 0.f ? (M + log2f(L)) * LN2_F : -INFINITY; /* as k_sdec_lse stores it */
        if (lane == 0) s_lse[warp] = lse * LOG2E_F;
    }
    __syncthreads();
    sf_stamp(a.prof, 3);
    {
        const float L0 = s_lse[g], L1 = s_lse[g + 8];
        for (int u = cg; u < a.nunits; u += a.half)
            sd_score_unit<HD>(a.cand_key, a.cand_blk, a.cand_n, (float *)sd_smem, a.q, L0, L1, a.C1, pos, grp, u,
                              a.nunits, a.nkv, a.l1,
                              a.s1, a.scale, a.init_blocks, a.local_blocks, a.budget);
    }
    sf_grid_sync(a.bar);

    /* 3. selection (every CTA of the group alike), attention over the chosen blocks, the CTA's record */
    sf_stamp(a.prof, 4);
    const int ns = sd_select(s_blk, a.cand_key, a.cand_blk, a.cand_n, grp, a.nunits, a.budget, sd_smem);
    __syncthreads();
    sf_stamp(a.prof, 5);
    if (cg == 0) {
        for (int i = tid; i < ns; i += SF_T) a.blocks[(int64_t)grp * a.budget + i] = s_blk[i];
        if (tid == 0) a.nsel[grp] = ns;
    }
    bf16 *Qs = (bf16 *)sd_smem, *Ks = Qs + SD_G * QP;
    sd_q_smem<HD, SF_T>(Qs, a.q + (int64_t)grp * SD_G * HD);
    __syncthreads();
    if (warp < SF_AW) {
        bf16 *myK = Ks + warp * 2 * TILE, *myV = myK + TILE;
        float m[2], l[2], O[HD / 8][4];
        sd_softmax_init<HD>(m, l, O);
        const int64_t kstride = (int64_t)a.nkv * HD;
        for (int i = cg + a.half * warp; i < ns; i += a.half * SF_AW) {
            const int64_t k0 = (int64_t)s_blk[i] * MMA_BK;
            sd_tiles_start<HD>(myK, myV, a.K, a.V, grp, kstride, k0, kv);
            sd_attn_tile<HD>(Qs, myK, myV, k0, pos, a.scale, m, l, O);
            __syncwarp(); /* every lane is done with the tiles before the next block's copies */
        }
        sd_attn_record<HD>((float *)myK, m, l, O);
    }
    __syncthreads();
    sd_cta_record<HD, SF_AW, SF_T>(a.attn_part + (int64_t)blockIdx.x * RECF, Ks);
    sf_stamp(a.prof, 6);
    sf_grid_sync(a.bar);

    /* 4. o: unit j = (group, head, dims part) over the group's records, each thread a column of records */
    {
        constexpr int PARTS_MAX = SF_T / 16;
        __shared__ float s_f[32 * SF_RMAX];
        const int dn = HD / a.ds, parts = SF_T / dn; /* dims per unit, threads per dim */
        for (int j = blockIdx.x; j < a.nkv * SD_G * a.ds; j += gridDim.x) {
            const int g2 = j / (SD_G * a.ds), h = (j / a.ds) % SD_G, d0 = (j % a.ds) * dn;
            const float *all = a.attn_part + (int64_t)g2 * a.half * RECF + h * RP;
            if (warp == 0) {
                float M, L;
                sf_merge_ml(all, a.half, RECF, &M, &L, s_f);
            }
            __syncthreads();
            const int d = d0 + tid % dn, pt = tid / dn;
            float acc = 0.f;
            for (int r0 = pt; r0 < a.half; r0 += parts * 4) { /* 4 records of the column in flight */
                float x[4];
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    const int r = r0 + parts * i;
                    x[i] = r < a.half && s_f[r] != 0.f ? __ldcg(all + (int64_t)r * RECF + 4 + d) : 0.f;
                }
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    const int r = r0 + parts * i;
                    if (r < a.half && s_f[r] != 0.f) acc += s_f[r] * x[i];
                }
            }
            s_red[tid] = acc;
            __syncthreads();
            if (tid < dn) {
                float sum = 0.f;
                for (int p2 = 0; p2 < parts && p2 < PARTS_MAX; p2++) sum += s_red[p2 * dn + tid];
                a.o[(int64_t)(g2 * SD_G + h) * HD + d0 + tid] = sum;
            }
            __syncthreads();
        }
    }
    sf_stamp(a.prof, 7);
}

/* ---- host side ---- */

/* work area layout (byte offsets, 256-aligned) */
typedef struct {
    int64_t counters, bar, lse_part, cand_key, cand_blk, cand_n, blocks, nsel, attn_part, total;
} sd_layout;

static int64_t sd_max(int64_t a, int64_t b) { return a > b ? a : b; }

static int64_t sd_al(int64_t x) { return (x + 255) & ~(int64_t)255; }

static sd_layout sd_lay(const cu_infllm_dims *d, const cu_sdec_plan *p) {
    sd_layout L;
    int64_t o = 0;
    L.counters = o, o = sd_al(o + 4 * 2 * (int64_t)d->nkv); /* stage 1's, then the attention's */
    L.bar = o, o = sd_al(o + 8);
    /* the four kernels' records, or the fused kernel's (one per CTA): room for either */
    L.lse_part = o, o = sd_al(o + 4 * sd_max((int64_t)d->nkv * p->units2, p->grid) * SD_G * 2);
    L.cand_key = o, o = sd_al(o + 4 * (int64_t)d->nkv * p->ctas_score * d->budget);
    L.cand_blk = o, o = sd_al(o + 4 * (int64_t)d->nkv * p->ctas_score * d->budget);
    L.cand_n = o, o = sd_al(o + 4 * (int64_t)d->nkv * p->ctas_score);
    L.blocks = o, o = sd_al(o + 4 * (int64_t)d->nkv * d->budget);
    L.nsel = o, o = sd_al(o + 4 * (int64_t)d->nkv);
    L.attn_part = o, o = sd_al(o + 4 * sd_max((int64_t)d->nkv * p->ctas_attn, p->grid) * SD_G * (d->hd + 4));
    L.total = o;
    return L;
}

static size_t sd_select_smem(const cu_infllm_dims *d, const cu_sdec_plan *p) {
    const size_t nc = (size_t)p->ctas_score;
    return nc * d->budget * 8 + 4 * (nc + 1) + 8 + 8 * (d->budget + 2 * nc) + 8 * SD_SURV + 4 * (size_t)d->budget;
}
/* the stage-1 kernels' shared memory: the dot products of 16 warps, then the selection's */
static size_t sd_score_smem(const cu_infllm_dims *d, const cu_sdec_plan *p) {
    const size_t dots = sizeof(float) * 16 * SD_SW, sel = sd_select_smem(d, p);
    return dots > sel ? dots : sel;
}
/* Qs and `warps` × (K tile, V tile) of the attention step */
static size_t sd_attn_smem(int hd, int warps) { return sizeof(bf16) * (size_t)(hd + 8) * (SD_G + warps * 2 * MMA_BK); }
static size_t sf_smem(const cu_infllm_dims *d, const cu_sdec_plan *p) {
    const size_t att = sd_attn_smem(d->hd, SF_AW), sel = sd_score_smem(d, p), app = sd_append_smem(d, SF_T);
    const size_t m = att > sel ? att : sel;
    return m > app ? m : app;
}

/* the largest dynamic shared memory any plan asks for (the attribute is per kernel, plans per session) */
#define SD_SCORE_SMEM_MAX (200 << 10)
#define SD_APPEND_SMEM_MAX (128 << 10)
template <int HD> static void sd_attrs(void) {
    cudaFuncSetAttribute(k_sdec_append, cudaFuncAttributeMaxDynamicSharedMemorySize, SD_APPEND_SMEM_MAX);
    cudaFuncSetAttribute(k_sdec_score<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize, SD_SCORE_SMEM_MAX);
    cudaFuncSetAttribute(k_sdec_attn<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sd_attn_smem(HD, SD_AW));
}

/* the clustered attention kernel: its shared memory, its instance for NW warps, and the plan's choice (p->attn_cl:
 * the fewest warps covering budget / SD_CL blocks a CTA, where a cluster of 16 such CTAs fits; opt-in,
 * SALA_SDEC_CLUSTER=1) */
static size_t sd_cl_smem(int hd, int nw) { return sd_attn_smem(hd, nw) + sizeof(float) * SD_G * (size_t)(hd + 4); }
typedef void (*sd_cl_kern)(float *, const float *, const bf16 *, const bf16 *, const int32_t *, const int32_t *,
                           const int64_t *, int, int, float, int, int);
template <int HD> static sd_cl_kern sd_cl_pick(int nw) {
    switch (nw) {
    case 1: return k_sdec_attn_cl<HD, 1>;
    case 2: return k_sdec_attn_cl<HD, 2>;
    case 4: return k_sdec_attn_cl<HD, 4>;
    case 6: return k_sdec_attn_cl<HD, 6>;
    default: return NULL;
    }
}
template <int HD> static void sd_cl_plan(cu_sdec_plan *p, const cu_infllm_dims *d) {
    p->attn_cl = 0;
    const char *e = getenv("SALA_SDEC_CLUSTER"); /* opt-in: measured slower in a step (docs/PERF.md round 7) */
    if (!e || *e != '1') return;
    int dev = 0, major = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
    const int need = (d->budget + SD_CL - 1) / SD_CL;
    const int nw = need <= 1 ? 1 : need <= 2 ? 2 : need <= 4 ? 4 : need <= 6 ? 6 : 0;
    if (major < 9 || !nw) return;
    const sd_cl_kern kern = sd_cl_pick<HD>(nw);
    const size_t smem = sd_cl_smem(HD, nw);
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(SD_CL, (unsigned)d->nkv);
    cfg.blockDim = dim3((unsigned)nw * 32);
    cfg.dynamicSmemBytes = smem;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeClusterDimension;
    at[0].val.clusterDim.x = SD_CL, at[0].val.clusterDim.y = 1, at[0].val.clusterDim.z = 1;
    cfg.attrs = at;
    cfg.numAttrs = 1;
    int ncl = 0;
    if (cudaFuncSetAttribute(kern, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) != cudaSuccess ||
        cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) != cudaSuccess ||
        cudaOccupancyMaxActiveClusters(&ncl, kern, &cfg) != cudaSuccess || ncl < 1) {
        cudaGetLastError();
        return;
    }
    p->attn_cl = nw;
}

/* the fused kernel's grid for this plan (p->grid etc.), when every CTA can be resident at once; else p->grid = 0 */
template <int HD> static void sf_plan(cu_sdec_plan *p, const cu_infllm_dims *d) {
    p->grid = 0;
    const char *e = getenv("SALA_SDEC_FUSED"); /* opt-in: measured slower in a step than the four kernels */
    if (!e || *e != '1') return;
    const int sms = cu_sm_count();
    int half = sms / d->nkv;
    if (half > 32 * SF_RMAX) half = 32 * SF_RMAX;
    if (half < 1) return;
    const size_t smem = sf_smem(d, p);
    int dev = 0, optin = 0, per_sm = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
    if (smem > (size_t)optin) return;
    if (cudaFuncSetAttribute(k_sdec_fused<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k_sdec_fused<HD>, SF_T, smem) != cudaSuccess || per_sm < 1) {
        cudaGetLastError();
        return;
    }
    p->half = half;
    p->grid = half * d->nkv; /* ≤ one CTA per SM: all resident */
    const int64_t n2 = nwin64(p->n_ctx, d->l2, d->s2), warps = (int64_t)half * (SF_T / 32);
    p->kpu = (int)(32 * ((n2 + 32 * warps - 1) / (32 * warps)));
    if (p->kpu < 32) p->kpu = 32;
    p->ds = 1;
    while (p->ds < 4 && HD / (2 * p->ds) >= 16 && (int64_t)d->nkv * SD_G * 2 * p->ds <= p->grid) p->ds *= 2;
    p->fused_smem = (int64_t)smem;
}

extern "C" int cu_sdec_plan_make(cu_sdec_plan *p, const cu_infllm_dims *d, int64_t n_ctx) {
    memset(p, 0, sizeof *p);
    if (!d->bf16 || d->nkv <= 0 || d->nh != SD_G * d->nkv || d->block != 64 || d->block / d->s1 != 4 ||
        d->block % d->s1 || d->budget <= 0 || d->budget > SD_BPC || d->l1 < d->s1 || d->l2 < d->s2 || n_ctx <= 0 ||
        n_ctx >= ((int64_t)1 << 30)) /* block indices < 2^24 (sd_comp packs 0xffffff − block) */
        return (int)cudaErrorInvalidValue;
    if (d->hd != 16 && d->hd != 32 && d->hd != 64 && d->hd != 128) return (int)cudaErrorInvalidValue;
    p->n_ctx = n_ctx;
    const int64_t t2 = (nwin64(n_ctx, d->l2, d->s2) + 63) / 64; /* level-2 key tiles at full context */
    int64_t units = t2 < 1 ? 1 : t2, tpu = 1;
    while (units > 512) tpu *= 2, units = (t2 + tpu - 1) / tpu;
    p->tpu2 = (int)tpu;
    p->units2 = (int)((units + 3) / 4 * 4);
    const int64_t nblk = (n_ctx + 63) / 64;
    p->ctas_score = (int)((nblk + SD_BPC - 1) / SD_BPC);
    p->ctas_attn = (d->budget + SD_AW - 1) / SD_AW;
    size_t ss = sd_score_smem(d, p);
    if (ss > (size_t)SD_SCORE_SMEM_MAX ||
        sd_append_smem(d, 128) > (size_t)SD_APPEND_SMEM_MAX)
        return (int)cudaErrorInvalidValue;
    switch (d->hd) {
    case 16: sd_attrs<16>(), sf_plan<16>(p, d), sd_cl_plan<16>(p, d); break;
    case 32: sd_attrs<32>(), sf_plan<32>(p, d), sd_cl_plan<32>(p, d); break;
    case 64: sd_attrs<64>(), sf_plan<64>(p, d), sd_cl_plan<64>(p, d); break;
    default: sd_attrs<128>(), sf_plan<128>(p, d), sd_cl_plan<128>(p, d); break;
    }
    p->work_bytes = sd_lay(d, p).total;
    return LAUNCH_CHECK();
}

/* PDL triggers at the top of k_sdec_attn and of k_sdec_lse (decode_knobs.h; -1: not read yet) */
static int sd_trig0 = -1, sd_lse_trig0 = -1;

/* the attention kernel's trigger: 1 at its top (SALA_DEC_TRIG & 2), else after its tile (0) or after its CTA's
 * record (2, SALA_SDEC_ATRIG=2) */
static int sd_attn_trig_late(void) {
    const char *e = getenv("SALA_SDEC_ATRIG");
    return e && *e == '2' ? 2 : 0;
}
static int sd_attn_trig(void) {
    if (sd_trig0 < 0) sd_trig0 = (cu_dec_trig_mask() >> 1) & 1 ? 1 : sd_attn_trig_late();
    return sd_trig0;
}
extern "C" void cu_sdec_trig_early(int on) { sd_trig0 = on ? 1 : sd_attn_trig_late(); }

template <int HD>
static int sd_step(cudaStream_t st, float *o, const float *q, const float *k, const float *v, bf16 *K, bf16 *V, bf16 *C1,
                   bf16 *C2, const int64_t *dpos, const cu_infllm_dims *d, const cu_sdec_plan *p, char *work, int parts) {
    const sd_layout L = sd_lay(d, p);
    int *cnt = (int *)(work + L.counters);
    int32_t *blocks = (int32_t *)(work + L.blocks), *nsel = (int32_t *)(work + L.nsel);
    const int kvrow = d->nkv * HD;
    static int prof = -1; /* SALA_SDEC_PROF=1: the kernels' stamps (cu_sdec_stamps, cu_sdec_stamps4) */
    if (prof < 0) prof = getenv("SALA_SDEC_PROF") && *getenv("SALA_SDEC_PROF") == '1';
    int e = 0;
    if (parts == 15 && p->grid > 0) { /* the whole step: the fused kernel */
        sf_args a;
        a.o = o, a.q = q, a.k = k, a.v = v, a.K = K, a.V = V, a.C1 = C1, a.C2 = C2, a.dpos = dpos;
        a.bar = (unsigned long long *)(work + L.bar);
        a.lse_part = (float *)(work + L.lse_part), a.attn_part = (float *)(work + L.attn_part);
        a.cand_key = (uint32_t *)(work + L.cand_key), a.cand_blk = (int32_t *)(work + L.cand_blk);
        a.cand_n = (int *)(work + L.cand_n), a.blocks = blocks, a.nsel = nsel;
        a.nkv = d->nkv, a.l1 = d->l1, a.s1 = d->s1, a.l2 = d->l2, a.s2 = d->s2, a.init_blocks = d->init_blocks;
        a.local_blocks = d->local_blocks, a.budget = d->budget, a.half = p->half, a.nunits = p->ctas_score;
        a.kpu = p->kpu, a.ds = p->ds, a.scale = d->scale;
        a.prof = prof;
        e = pdl_launch(PDL_CHAIN, k_sdec_fused<HD>, dim3(p->grid), dim3(SF_T), (size_t)p->fused_smem, st, a);
        return e ? e : LAUNCH_CHECK();
    }
    parts &= 15;
    if (parts & 1)
        e = pdl_launch(PDL_CHAIN, k_sdec_append, dim3((kvrow + 127) / 128), dim3(kvrow < 128 ? kvrow : 128),
                       sd_append_smem(d, 128), st, K, V, C1, C2,
                       k, v, dpos, kvrow, d->l1, d->s1, d->l2, d->s2, prof);
    if (!e && (parts & 2))
        e = pdl_launch(PDL_CHAIN, k_sdec_lse<HD>, dim3(p->units2 / 4, d->nkv), dim3(128), 0, st,
                       (float *)(work + L.lse_part), q, (const bf16 *)C2, dpos, d->nkv, d->l2, d->s2, d->scale,
                       p->tpu2, p->units2,
                       sd_lse_trig0 < 0 ? (sd_lse_trig0 = (cu_dec_trig_mask() >> 2) & 1) : sd_lse_trig0, prof);
    if (!e && (parts & 4))
        e = pdl_launch(PDL_CHAIN, k_sdec_score<HD>, dim3(p->ctas_score, d->nkv), dim3(512), sd_score_smem(d, p), st, blocks, nsel,
                       (uint32_t *)(work + L.cand_key), (int32_t *)(work + L.cand_blk), (int *)(work + L.cand_n),
                       cnt, q, (const float *)(work + L.lse_part), p->units2 / 4, (const bf16 *)C1, dpos,
                       d->nkv, d->l1, d->s1, d->scale,
                       d->init_blocks, d->local_blocks, d->budget, prof);
    if (!e && (parts & 8) && p->attn_cl) {
        cudaLaunchConfig_t cfg = {};
        cfg.gridDim = dim3(SD_CL, (unsigned)d->nkv);
        cfg.blockDim = dim3((unsigned)p->attn_cl * 32);
        cfg.dynamicSmemBytes = sd_cl_smem(HD, p->attn_cl);
        cfg.stream = st;
        cudaLaunchAttribute at[2];
        at[0].id = cudaLaunchAttributeClusterDimension;
        at[0].val.clusterDim.x = SD_CL, at[0].val.clusterDim.y = 1, at[0].val.clusterDim.z = 1;
        at[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        at[1].val.programmaticStreamSerializationAllowed = 1;
        cfg.attrs = at;
        cfg.numAttrs = (cu_pdl_on() & PDL_CHAIN) ? 2 : 1;
        e = (int)cudaLaunchKernelEx(&cfg, sd_cl_pick<HD>(p->attn_cl), o, q, (const bf16 *)K, (const bf16 *)V,
                                    (const int32_t *)blocks, (const int32_t *)nsel, dpos, d->nkv, d->budget, d->scale,
                                    sd_attn_trig(), prof);
    } else if (!e && (parts & 8))
        e = pdl_launch(PDL_CHAIN, k_sdec_attn<HD>, dim3(p->ctas_attn, d->nkv), dim3(SD_AW * 32), sd_attn_smem(HD, SD_AW), st, o,
                       (float *)(work + L.attn_part), cnt + d->nkv, q, (const bf16 *)K, (const bf16 *)V,
                       (const int32_t *)blocks, (const int32_t *)nsel, dpos, d->nkv, d->budget, d->scale,
                       sd_attn_trig(), prof);
    return e ? e : LAUNCH_CHECK();
}

/* parts: a mask of the kernels to launch (1 append, 2 LSE, 4 stage 1 + top-k, 8 attention; 15 = the step: the
 * fused kernel where the plan has one, 31 = the four kernels in any case), for the per-kernel timings of
 * tests/test_cuda_decbench.c and the tests of both forms (declared there) */
extern "C" int cu_sdec_step_parts(void *stream, float *o, const float *q, const float *k, const float *v, void *K, void *V,
                                  void *C1, void *C2, const int64_t *dpos, const cu_infllm_dims *d, const cu_sdec_plan *p,
                                  void *work, int parts) {
    cudaStream_t st = (cudaStream_t)stream;
    if (!p->work_bytes) return (int)cudaErrorInvalidValue;
    bf16 *Kb = (bf16 *)K, *Vb = (bf16 *)V, *C1b = (bf16 *)C1, *C2b = (bf16 *)C2;
    char *w = (char *)work;
    switch (d->hd) {
    case 16: return sd_step<16>(st, o, q, k, v, Kb, Vb, C1b, C2b, dpos, d, p, w, parts);
    case 32: return sd_step<32>(st, o, q, k, v, Kb, Vb, C1b, C2b, dpos, d, p, w, parts);
    case 64: return sd_step<64>(st, o, q, k, v, Kb, Vb, C1b, C2b, dpos, d, p, w, parts);
    case 128: return sd_step<128>(st, o, q, k, v, Kb, Vb, C1b, C2b, dpos, d, p, w, parts);
    default: return (int)cudaErrorInvalidValue;
    }
}

extern "C" int cu_sdec_step(void *stream, float *o, const float *q, const float *k, const float *v, void *K, void *V,
                            void *C1, void *C2, const int64_t *dpos, const cu_infllm_dims *d, const cu_sdec_plan *p,
                            void *work) {
    return cu_sdec_step_parts(stream, o, q, k, v, K, V, C1, C2, dpos, d, p, work, 15);
}

/* the fused kernel's stamps of its last launch with SALA_SDEC_PROF=1 (8 global-timer values, ns; for
 * tests/test_cuda_decbench.c, declared there) */
extern "C" int cu_sdec_stamps(unsigned long long t[8]) {
    return (int)cudaMemcpyFromSymbol(t, sf_stamps, 8 * sizeof(unsigned long long));
}

/* the four kernels' stamps of their last launches with SALA_SDEC_PROF=1 (24 values, ns; the indices are the
 * sd_stamp calls': append 0-1, LSE 2-4 and 16-17, stage 1 + top-k 5-10, attention 11-15, the selection 18-20;
 * 21-23 hold the selection's candidate count, survivor count and path) */
extern "C" int cu_sdec_stamps4(unsigned long long t[24]) {
    return (int)cudaMemcpyFromSymbol(t, sd_stamps4, 24 * sizeof(unsigned long long));
}

extern "C" int cu_sdec_blocks(const cu_infllm_dims *d, const cu_sdec_plan *p, const void *work, const int32_t **blocks,
                              const int32_t **nsel) {
    const sd_layout L = sd_lay(d, p);
    *blocks = (const int32_t *)((const char *)work + L.blocks);
    *nsel = (const int32_t *)((const char *)work + L.nsel);
    return 0;
}
