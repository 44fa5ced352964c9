/* sparse_decode.cu — a sparse layer's InfLLM-v2 decode step (MODEL.md §4) for one row, replayable from a
 * CUDA graph: the position is read from device memory (*dpos) and every grid is sized for the session's
 * n_ctx, the parts beyond the current length exiting at once. bf16 caches (the bf16 mode), G = 16 query
 * heads per KV group (one m16 tensor-core tile), 64-token blocks pooled over 4 level-1 keys.
 *
 * Four kernels, each launched with PDL (pdl.cuh) after the one before it:
 *   append   K[pos], V[pos] = k, v; the level-1 / level-2 compressed key whose window ends at pos (the same
 *            fp32 sums in key order as infllm_compress.cu, so the caches equal a prefill's).
 *   lse      LSE_h over the level-2 keys: one warp per key range, q as mma A fragments, keys straight from
 *            global memory into B fragments (the head dimension is permuted identically in both operands,
 *            so each lane loads 16 contiguous bytes of a key); (m, l) records merged by the last CTA.
 *   score    stage-1 scores Σ_h exp(s·q_h·C1[j] − LSE_h), max-pooled into block scores [4b−1, 4b+3]; each
 *            CTA keeps its top `budget` blocks (rank by key, ties to the lower block), the last CTA of the
 *            group selects the top `budget` of all candidates and writes them in ascending block order:
 *            the budget-th best of the CTAs' top few is a lower bound that drops nearly all candidates,
 *            the rest are ranked directly (a radix select as infllm_topk.cu when more than SD_SURV remain).
 *   attn     attention of the 16 heads over the chosen blocks (keys ≤ pos): one warp per block, K and V
 *            tiles by cp.async, scores and P·V on tensor cores (q and P rounded to bf16 as attn_mma.cu),
 *            records merged per CTA and by the last CTA into o.
 * "Last CTA" = the one whose atomicAdd on the group's counter completes the grid (threadfence reduction);
 * it resets the counter, so the work area is zeroed once and reused by every layer and step. The merge
 * orders are fixed, so the results do not depend on scheduling. */
#include "cuda/common.cuh"
#include "cuda/decode_knobs.h"
#include "cuda/mma_core.cuh"
#include "cuda/pdl.cuh"

#define SD_G 16        /* heads per group */
#define SD_BPC 256     /* blocks per score CTA (16 warps × one 64-key tile = 16 blocks each) */
#define SD_AW 4        /* warps (= chosen blocks) per attention CTA */
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

/* ---- 1. append + compress ---- */
__global__ void k_sdec_append(bf16 *K, bf16 *V, bf16 *C1, bf16 *C2, const float *k, const float *v,
                              const int64_t *dpos, int kvrow, int l1, int s1, int l2, int s2) {
    pdl_wait();
    pdl_trigger();
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= kvrow) return;
    const int64_t pos = *dpos, kv = pos + 1;
    K[pos * kvrow + c] = __float2bfloat16_rn(__ldcg(k + c));
    V[pos * kvrow + c] = __float2bfloat16_rn(__ldcg(v + c));
    for (int lev = 0; lev < 2; lev++) {
        const int l = lev ? l2 : l1, s = lev ? s2 : s1;
        if (kv < l || (kv - l) % s) continue;
        const int64_t j = (kv - l) / s;
        float acc = 0.f; /* fp32 in key order, as k_compress (the key at pos is this thread's own write) */
#pragma unroll 8
        for (int64_t tk = j * s; tk < j * s + l; tk++) acc += __bfloat162float(__ldcg(K + tk * kvrow + c));
        (lev ? C2 : C1)[j * kvrow + c] = __float2bfloat16_rn(acc / (float)l);
    }
}

/* ---- 2. LSE over the level-2 keys ---- */
template <int HD>
__global__ void __launch_bounds__(128) k_sdec_lse(float *part, float *lse, int *counter, const float *q, const bf16 *C2,
                                                  const int64_t *dpos, int nkv, int l2, int s2, float scale, int tpu,
                                                  int units) {
    const int grp = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    pdl_wait();
    pdl_trigger();
    const int64_t kv = *dpos + 1, n2 = nwin64(kv, l2, s2);
    const int u = blockIdx.x * 4 + warp;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
    const int64_t k0 = (int64_t)u * tpu * 64, k1 = k0 + tpu * 64 < n2 ? k0 + tpu * 64 : n2;
    if (u < units && k0 < k1) {
        uint32_t qf[HD / 16][4];
        sd_q_frags<HD>(q + (int64_t)grp * SD_G * HD, qf);
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
    if (u < units && t == 0) {
        float *rec = part + ((int64_t)grp * units + u) * SD_G * 2;
        rec[2 * g] = m[0], rec[2 * g + 1] = l[0];
        rec[2 * (g + 8)] = m[1], rec[2 * (g + 8) + 1] = l[1];
    }
    if (!sd_last_cta(counter + grp)) return;
    /* merge: the records into shared memory (all loads in flight at once), then 8 threads per head, records
     * u ≡ sub (mod 8), then across the 8 */
    extern __shared__ float4 sd_lse_smem[]; /* [units][16] (m, l) */
    const float4 *rec4 = (const float4 *)(part + (int64_t)grp * units * SD_G * 2);
    for (int i0 = 0; i0 < units * SD_G / 2; i0 += 128 * 8) {
        float4 t4[8];
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const int i = i0 + threadIdx.x + 128 * j;
            if (i < units * SD_G / 2) t4[j] = __ldcg(rec4 + i);
        }
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const int i = i0 + threadIdx.x + 128 * j;
            if (i < units * SD_G / 2) sd_lse_smem[i] = t4[j];
        }
    }
    __syncthreads();
    const float *rec = (const float *)sd_lse_smem;
    const int hh = threadIdx.x >> 3, sub = threadIdx.x & 7;
    float M = -INFINITY;
    for (int x = sub; x < units; x += 8) {
        float mm = rec[(x * SD_G + hh) * 2], ll = rec[(x * SD_G + hh) * 2 + 1];
        if (ll > 0.f) M = fmaxf(M, mm);
    }
    for (int o = 1; o < 8; o <<= 1) M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, o));
    float L = 0.f;
    for (int x = sub; x < units; x += 8) {
        float mm = rec[(x * SD_G + hh) * 2], ll = rec[(x * SD_G + hh) * 2 + 1];
        if (ll > 0.f) L += ll * exp2f(mm - M);
    }
    for (int o = 1; o < 8; o <<= 1) L += __shfl_xor_sync(0xffffffffu, L, o);
    if (sub == 0) lse[grp * SD_G + hh] = L > 0.f ? (M + log2f(L)) * LN2_F : -INFINITY;
    if (threadIdx.x == 0) counter[grp] = 0;
}

/* ---- 3. stage-1 scores, pooling, top-k ---- */

template <int HD>
__global__ void __launch_bounds__(512) k_sdec_score(int32_t *blocks, int32_t *nsel, uint32_t *cand_key,
                                                    int32_t *cand_blk, int *cand_n, int *counter, const float *q,
                                                    const float *lse, const bf16 *C1, const int64_t *dpos, int nkv,
                                                    int l1, int s1, float scale, int init_blocks, int local_blocks,
                                                    int budget) {
    extern __shared__ uint4 sd_smem[]; /* last CTA: candidate keys [cap], blocks [cap] */
    __shared__ float sc[16][68];       /* per warp: score of key 64·tile − 1, then the tile's 64 keys */
    __shared__ uint32_t bkey[SD_BPC];
    __shared__ int hist[256], sel_digit, sel_k, s_ns, s_nv;
    __shared__ uint64_t s_thr;
    const int grp = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    pdl_wait();
    pdl_trigger();
    const int64_t pos = *dpos, kv = pos + 1, n1 = nwin64(kv, l1, s1), qb = pos / 64;
    const int64_t b0 = (int64_t)blockIdx.x * SD_BPC, jt = (int64_t)blockIdx.x * 16 + warp, key0 = 64 * jt;
    /* scores of keys key0 − 1 .. key0 + 63 of this warp's tile (blocks 16·jt ..) */
    if (16 * jt <= qb) {
        uint32_t qf[HD / 16][4];
        sd_q_frags<HD>(q + (int64_t)grp * SD_G * HD, qf);
        const float L0 = __ldcg(lse + grp * SD_G + g) * LOG2E_F, L1 = __ldcg(lse + grp * SD_G + g + 8) * LOG2E_F;
        const float sl2 = scale * LOG2E_F;
        for (int nb = -1; nb < 8; nb += 3) { /* n-tiles −1 (the key before the tile) .. 7, three at a time */
            uint4 kr[3][sd_shape<HD>::NV];
#pragma unroll
            for (int i = 0; i < 3; i++) {
                const int64_t key = key0 + 8 * (nb + i) + g;
                sd_load_key<HD>(kr[i], C1 + (key * nkv + grp) * HD, key >= 0 && key < n1);
            }
#pragma unroll
            for (int i = 0; i < 3; i++) {
                float c[4];
                sd_qk<HD>(qf, kr[i], c);
#pragma unroll
                for (int j = 0; j < 2; j++) {
                    const int64_t key = key0 + 8 * (nb + i) + 2 * t + j;
                    const bool ok = key >= 0 && key < n1;
                    float v = ok ? exp2f(c[j] * sl2 - L0) + exp2f(c[2 + j] * sl2 - L1) : 0.f;
                    v += __shfl_xor_sync(0xffffffffu, v, 4);
                    v += __shfl_xor_sync(0xffffffffu, v, 8);
                    v += __shfl_xor_sync(0xffffffffu, v, 16);
                    const int idx = 1 + 8 * (nb + i) + 2 * t + j;
                    if (g == 0 && idx >= 0) sc[warp][idx] = ok ? v : -INFINITY;
                }
            }
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
        for (int j = 0; j < nvalid; j++) {
            const uint32_t kj = bkey[j];
            rank += kj > mykey || (kj == mykey && j < (int)threadIdx.x);
        }
        cand = rank < budget;
    }
    int total;
    const int off = scan_block<512>(cand ? 1 : 0, &total);
    const int64_t slot = (int64_t)grp * gridDim.x + blockIdx.x;
    if (cand) {
        cand_key[slot * budget + off] = mykey;
        cand_blk[slot * budget + off] = (int32_t)((uint32_t)(b0 + threadIdx.x) | (uint32_t)rank << 24); /* + the rank */
    }
    if (threadIdx.x == 0) cand_n[slot] = total;
    if (!sd_last_cta(counter + grp)) return;

    /* ---- last CTA of the group: the top `budget` of all candidates ---- */
    uint32_t *skey = (uint32_t *)sd_smem;
    const int ncta = gridDim.x;
    const int cap = ncta * budget;
    int32_t *sblk = (int32_t *)(skey + cap);
    int *soff = (int *)(sblk + cap); /* [ncta + 1] */
    if (threadIdx.x < 32) { /* offsets of the CTAs' lists */
        int base = 0;
        for (int c0 = 0; c0 < ncta; c0 += 32) {
            const int c = c0 + lane;
            const int v = c < ncta ? __ldcg(cand_n + (int64_t)grp * ncta + c) : 0;
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
    for (int e0 = 0; e0 < ncta * budget; e0 += 512 * 16) { /* 16 candidates a thread in flight */
        uint32_t kk[16];
        int32_t bb[16];
        int dst[16];
#pragma unroll
        for (int j = 0; j < 16; j++) {
            const int e = e0 + (int)threadIdx.x + 512 * j;
            dst[j] = -1;
            if (e < ncta * budget) {
                const int c = e / budget, i = e % budget;
                if (i < soff[c + 1] - soff[c]) {
                    const int64_t src = ((int64_t)grp * ncta + c) * budget + i;
                    dst[j] = soff[c] + i;
                    kk[j] = __ldcg(cand_key + src);
                    bb[j] = __ldcg(cand_blk + src);
                }
            }
        }
#pragma unroll
        for (int j = 0; j < 16; j++)
            if (dst[j] >= 0) {
                const int32_t b = bb[j] & 0xffffff;
                skey[dst[j]] = kk[j], sblk[dst[j]] = b;
                if ((int)((uint32_t)bb[j] >> 24) < m) sS[atomicAdd(&s_ns, 1)] = sd_comp(kk[j], b);
            }
    }
    __syncthreads();
    int32_t *out = blocks + (int64_t)grp * budget;
    if (n <= budget) { /* every candidate is chosen (they are the blocks 0..qb, or exactly `budget`) */
        for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = sblk[i];
        if (threadIdx.x == 0) nsel[grp] = n, counter[grp] = 0;
        return;
    }
    /* Composite keys (score key, then the lower block) order the candidates totally, as the radix select below
     * with its ties to the lower block. The budget-th largest of the subset sS is a lower bound of the
     * budget-th largest of all (when sS has budget of them): the candidates under it are dropped, typically
     * leaving a few hundred, whose ranks are counted directly (O(n²) in shared memory, no passes). */
    {
        const int ns = s_ns;
        if (threadIdx.x == 0) s_thr = 0;
        __syncthreads();
        if (ns >= budget)
            for (int i = threadIdx.x; i < ns; i += blockDim.x) {
                const uint64_t c = sS[i];
                int r = 0;
                for (int j = 0; j < ns; j++) r += sS[j] > c;
                if (r == budget - 1) s_thr = c;
            }
        __syncthreads();
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
        if (nv <= SD_SURV) { /* nv ≥ budget: the top `budget` of sS (or all n) are among them */
            for (int i = threadIdx.x; i < nv; i += blockDim.x) {
                const uint64_t c = sv[i];
                int r = 0;
                for (int j = 0; j < nv; j++) r += sv[j] > c;
                if (r < budget) sslot[r] = (int32_t)(0xffffffu - (uint32_t)c);
            }
            __syncthreads();
            for (int i = threadIdx.x; i < budget; i += blockDim.x) { /* ascending block order */
                const int32_t b = sslot[i];
                int pos = 0;
                for (int j = 0; j < budget; j++) pos += sslot[j] < b;
                out[pos] = b;
            }
            if (threadIdx.x == 0) nsel[grp] = budget, counter[grp] = 0;
            return;
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
        if (take) out[ob++] = sblk[i];
    }
    if (threadIdx.x == 0) nsel[grp] = outn, counter[grp] = 0;
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

template <int HD>
__global__ void __launch_bounds__(SD_AW * 32) k_sdec_attn(float *o, float *part, int *counter, const float *q,
                                                          const bf16 *K, const bf16 *V, const int32_t *blocks,
                                                          const int32_t *nsel, const int64_t *dpos, int nkv,
                                                          int budget, float scale, int trig0) {
    constexpr int QP = mma_shape<HD>::QP, TILE = MMA_BK * QP, RP = HD + 4, RECF = SD_G * RP;
    extern __shared__ uint4 sd_smem[];
    bf16 *Qs = (bf16 *)sd_smem;             /* [16][QP] */
    bf16 *Ks = Qs + SD_G * QP;              /* per warp: K tile, V tile */
    const int grp = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    bf16 *myK = Ks + warp * 2 * TILE, *myV = myK + TILE;
    float *rec = (float *)myK; /* [16][RP]: m, l, -, -, O[HD], after the tile is used; fits in the K tile */
    if (trig0) pdl_trigger(); /* o_proj's blocks may start loading weights now (decode_knobs.h) */
    pdl_wait();
    if (!trig0) pdl_trigger();
    const int64_t pos = *dpos;
    const int ns = __ldcg(nsel + grp), u = blockIdx.x * SD_AW + warp;
    const int64_t kstride = (int64_t)nkv * HD;
    int64_t k0 = 0;
    if (u < ns) { /* start both tiles now, q meanwhile */
        k0 = (int64_t)__ldcg(blocks + (int64_t)grp * budget + u) * MMA_BK;
        sd_async_rows<HD>(myK, K + (int64_t)grp * HD, kstride, k0, pos + 1);
        cp_async_commit();
        sd_async_rows<HD>(myV, V + (int64_t)grp * HD, kstride, k0, pos + 1);
        cp_async_commit();
    }
    { /* q: every thread's float4 loads in flight at once */
        constexpr int NQ4 = SD_G * HD / 4, NQ = (NQ4 + SD_AW * 32 - 1) / (SD_AW * 32);
        const float4 *q4 = (const float4 *)(q + (int64_t)grp * SD_G * HD);
        float4 qv[NQ];
#pragma unroll
        for (int j = 0; j < NQ; j++) {
            const int e4 = threadIdx.x + SD_AW * 32 * j;
            if (e4 < NQ4) qv[j] = __ldcg(q4 + e4);
        }
#pragma unroll
        for (int j = 0; j < NQ; j++) {
            const int e4 = threadIdx.x + SD_AW * 32 * j;
            if (e4 < NQ4) {
                bf16 *dq = Qs + (4 * e4 / HD) * QP + (4 * e4) % HD;
                dq[0] = __float2bfloat16_rn(qv[j].x), dq[1] = __float2bfloat16_rn(qv[j].y);
                dq[2] = __float2bfloat16_rn(qv[j].z), dq[3] = __float2bfloat16_rn(qv[j].w);
            }
        }
    }
    __syncthreads();
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f}, O[HD / 8][4];
#pragma unroll
    for (int dt = 0; dt < HD / 8; dt++) O[dt][0] = O[dt][1] = O[dt][2] = O[dt][3] = 0.f;
    if (u < ns) {
        uint32_t qf[HD / 16][4];
        mma_q_frags<HD>(Qs, 0, qf);
        cp_async_wait<1>();
        __syncwarp();
        float S[8][4];
        mma_qk<HD>(qf, myK, S);
        const float sl2 = scale * LOG2E_F;
#pragma unroll
        for (int nt = 0; nt < 8; nt++)
#pragma unroll
            for (int j = 0; j < 4; j++)
                S[nt][j] = k0 + nt * 8 + 2 * t + (j & 1) <= pos ? S[nt][j] * sl2 : -INFINITY;
        mma_softmax<HD>(S, m, l, O, true);
        cp_async_wait<0>();
        __syncwarp();
        mma_pv_rows<HD>(S, myV, O);
    }
    __syncwarp();
    /* the warp's record (log2 units) */
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
    __syncthreads();
    /* merge the CTA's warps into one record in global memory */
    float *cta_rec = part + ((int64_t)grp * gridDim.x + blockIdx.x) * RECF;
    for (int e = threadIdx.x; e < SD_G * HD; e += blockDim.x) {
        const int hh = e / HD, d = e % HD;
        float M = -INFINITY;
        for (int w = 0; w < SD_AW; w++) {
            const float *r = (const float *)(Ks + w * 2 * TILE) + hh * RP;
            if (r[1] > 0.f) M = fmaxf(M, r[0]);
        }
        float L = 0.f, A = 0.f;
        for (int w = 0; w < SD_AW; w++) {
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
    if (!sd_last_cta(counter + grp)) return;
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
    { /* each output float4 summed over the CTAs in order; a thread's outputs × 4 CTAs of loads in flight */
        constexpr int NOUT = SD_G * HD / 4, NO = (NOUT + SD_AW * 32 - 1) / (SD_AW * 32);
        float4 acc[NO];
#pragma unroll
        for (int j = 0; j < NO; j++) acc[j] = make_float4(0.f, 0.f, 0.f, 0.f);
        for (int c0 = 0; c0 < ncta; c0 += 4) {
            float4 a[NO][4];
#pragma unroll
            for (int j = 0; j < NO; j++)
#pragma unroll
                for (int cc = 0; cc < 4; cc++) {
                    const int e = threadIdx.x + SD_AW * 32 * j, c = c0 + cc;
                    if (e < NOUT && c < ncta)
                        a[j][cc] = __ldcg((const float4 *)(all + (int64_t)c * RECF + (e / (HD / 4)) * RP + 4 +
                                                           4 * (e % (HD / 4))));
                }
#pragma unroll
            for (int j = 0; j < NO; j++)
#pragma unroll
                for (int cc = 0; cc < 4; cc++) {
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
}

/* ---- host side ---- */

/* work area layout (byte offsets, 256-aligned) */
typedef struct {
    int64_t counters, lse_part, lse, cand_key, cand_blk, cand_n, blocks, nsel, attn_part, total;
} sd_layout;

static int64_t sd_al(int64_t x) { return (x + 255) & ~(int64_t)255; }

static sd_layout sd_lay(const cu_infllm_dims *d, const cu_sdec_plan *p) {
    sd_layout L;
    int64_t o = 0;
    L.counters = o, o = sd_al(o + 4 * 3 * (int64_t)d->nkv);
    L.lse_part = o, o = sd_al(o + 4 * (int64_t)d->nkv * p->units2 * SD_G * 2);
    L.lse = o, o = sd_al(o + 4 * (int64_t)d->nh);
    L.cand_key = o, o = sd_al(o + 4 * (int64_t)d->nkv * p->ctas_score * d->budget);
    L.cand_blk = o, o = sd_al(o + 4 * (int64_t)d->nkv * p->ctas_score * d->budget);
    L.cand_n = o, o = sd_al(o + 4 * (int64_t)d->nkv * p->ctas_score);
    L.blocks = o, o = sd_al(o + 4 * (int64_t)d->nkv * d->budget);
    L.nsel = o, o = sd_al(o + 4 * (int64_t)d->nkv);
    L.attn_part = o, o = sd_al(o + 4 * (int64_t)d->nkv * p->ctas_attn * SD_G * (d->hd + 4));
    L.total = o;
    return L;
}

static size_t sd_score_smem(const cu_infllm_dims *d, const cu_sdec_plan *p) {
    const size_t nc = (size_t)p->ctas_score;
    return nc * d->budget * 8 + 4 * (nc + 1) + 8 + 8 * (d->budget + 2 * nc) + 8 * SD_SURV + 4 * (size_t)d->budget;
}
static size_t sd_lse_bytes(const cu_sdec_plan *p) { return sizeof(float) * (size_t)p->units2 * SD_G * 2; }
static size_t sd_attn_smem(int hd) { return sizeof(bf16) * (size_t)(hd + 8) * (SD_G + SD_AW * 2 * MMA_BK); }

/* the largest dynamic shared memory any plan asks for (the attribute is per kernel, plans per session) */
#define SD_LSE_SMEM_MAX (512 * SD_G * 2 * 4)
#define SD_SCORE_SMEM_MAX (200 << 10)
template <int HD> static void sd_attrs(void) {
    cudaFuncSetAttribute(k_sdec_lse<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize, SD_LSE_SMEM_MAX);
    cudaFuncSetAttribute(k_sdec_score<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize, SD_SCORE_SMEM_MAX);
    cudaFuncSetAttribute(k_sdec_attn<HD>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sd_attn_smem(HD));
}

extern "C" int cu_sdec_plan_make(cu_sdec_plan *p, const cu_infllm_dims *d, int64_t n_ctx) {
    memset(p, 0, sizeof *p);
    if (!d->bf16 || d->nkv <= 0 || d->nh != SD_G * d->nkv || d->block != 64 || d->block / d->s1 != 4 ||
        d->block % d->s1 || d->budget <= 0 || d->budget > SD_BPC || d->l1 < d->s1 || d->l2 < d->s2 || n_ctx <= 0 ||
        n_ctx >= ((int64_t)1 << 30)) /* block indices < 2^24 (the candidates carry their rank in the top byte) */
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
    if (ss > (size_t)SD_SCORE_SMEM_MAX || sd_lse_bytes(p) > (size_t)SD_LSE_SMEM_MAX) return (int)cudaErrorInvalidValue;
    p->work_bytes = sd_lay(d, p).total;
    switch (d->hd) {
    case 16: sd_attrs<16>(); break;
    case 32: sd_attrs<32>(); break;
    case 64: sd_attrs<64>(); break;
    default: sd_attrs<128>(); break;
    }
    return LAUNCH_CHECK();
}

/* PDL trigger at the top of k_sdec_attn (decode_knobs.h; -1: not read yet) */
static int sd_trig0 = -1;

extern "C" void cu_sdec_trig_early(int on) { sd_trig0 = on ? 1 : 0; }

template <int HD>
static int sd_step(cudaStream_t st, float *o, const float *q, const float *k, const float *v, bf16 *K, bf16 *V, bf16 *C1,
                   bf16 *C2, const int64_t *dpos, const cu_infllm_dims *d, const cu_sdec_plan *p, char *work, int parts) {
    const sd_layout L = sd_lay(d, p);
    int *cnt = (int *)(work + L.counters);
    float *lse = (float *)(work + L.lse);
    int32_t *blocks = (int32_t *)(work + L.blocks), *nsel = (int32_t *)(work + L.nsel);
    const int kvrow = d->nkv * HD;
    int e = 0;
    if (parts & 1)
        e = pdl_launch(PDL_CHAIN, k_sdec_append, dim3((kvrow + 127) / 128), dim3(kvrow < 128 ? kvrow : 128), 0, st, K, V, C1, C2,
                       k, v, dpos, kvrow, d->l1, d->s1, d->l2, d->s2);
    if (!e && (parts & 2))
        e = pdl_launch(PDL_CHAIN, k_sdec_lse<HD>, dim3(p->units2 / 4, d->nkv), dim3(128), sd_lse_bytes(p), st,
                       (float *)(work + L.lse_part), lse,
                       cnt, q, (const bf16 *)C2, dpos, d->nkv, d->l2, d->s2, d->scale, p->tpu2, p->units2);
    if (!e && (parts & 4))
        e = pdl_launch(PDL_CHAIN, k_sdec_score<HD>, dim3(p->ctas_score, d->nkv), dim3(512), sd_score_smem(d, p), st, blocks, nsel,
                       (uint32_t *)(work + L.cand_key), (int32_t *)(work + L.cand_blk), (int *)(work + L.cand_n),
                       cnt + d->nkv, q, (const float *)lse, (const bf16 *)C1, dpos, d->nkv, d->l1, d->s1, d->scale,
                       d->init_blocks, d->local_blocks, d->budget);
    if (!e && (parts & 8))
        e = pdl_launch(PDL_CHAIN, k_sdec_attn<HD>, dim3(p->ctas_attn, d->nkv), dim3(SD_AW * 32), sd_attn_smem(HD), st, o,
                       (float *)(work + L.attn_part), cnt + 2 * d->nkv, q, (const bf16 *)K, (const bf16 *)V,
                       (const int32_t *)blocks, (const int32_t *)nsel, dpos, d->nkv, d->budget, d->scale,
                       sd_trig0 < 0 ? (sd_trig0 = (cu_dec_trig_mask() >> 1) & 1) : sd_trig0);
    return e ? e : LAUNCH_CHECK();
}

/* parts: a mask of the kernels to launch (1 append, 2 LSE, 4 stage 1 + top-k, 8 attention; 15 = the step), for
 * the per-kernel timings of tests/test_cuda_decbench.c (declared there) */
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

extern "C" int cu_sdec_blocks(const cu_infllm_dims *d, const cu_sdec_plan *p, const void *work, const int32_t **blocks,
                              const int32_t **nsel) {
    const sd_layout L = sd_lay(d, p);
    *blocks = (const int32_t *)((const char *)work + L.blocks);
    *nsel = (const int32_t *)((const char *)work + L.nsel);
    return 0;
}
