/* infllm_lse.cu — InfLLM-v2 stage 1, first half: the coarse log-sum-exp of every query head over the
 * visible level-2 compressed keys,  LSE_h(r) = log Σ_{j < v2(r)} exp(scale · q_h(r)·C2[j])  (MODEL.md §4
 * step 2); −inf when nothing is visible. It normalises the level-1 scores in infllm_score.cu.
 * Same tiling as dense attention without the value pass (attn_core.cuh); decode splits the keys. With
 * d->bf16 the dot products run on tensor cores (q and C2 rounded to bf16, mma_core.cuh): for G = 16 and
 * at least 16 rows k_infllm_lse_wg on sm_90a (wgmma, infllm_wgmma.cuh; head dim a multiple of 64) or
 * k_infllm_lse_g16 (mma.sync, infllm_mma.cuh), k_infllm_lse_mma otherwise. */
#include "cuda/attn_core.cuh"
#include "cuda/attn_internal.cuh"
#include "cuda/infllm_mma.cuh"
#include "cuda/infllm_wgmma.cuh"
#include "cuda/mma_core.cuh"

template <int HD, int RM>
__global__ void __launch_bounds__(256) k_infllm_lse(float *lse, const float *q, int64_t ldq, const float *C2,
                                                    int64_t n2_avail, int64_t T, int64_t pos0, int64_t kv_len,
                                                    int decode, int nh, int nkv, int l2, int s2, float scale,
                                                    int nsplit, float *part) {
    typedef att_shape<HD, RM> S;
    extern __shared__ float4 smem_f4[];
    float *Qs = (float *)smem_f4, *KVs = Qs + S::M * S::QP;
    const int g = blockIdx.y, split = blockIdx.z, G = nh / nkv;
    const int tm = threadIdx.x / 16, tn = threadIdx.x % 16;
    const int64_t npairs = T * G, p0 = (int64_t)blockIdx.x * S::M;
    const int64_t t_last = (p0 + S::M - 1) / G < T - 1 ? (p0 + S::M - 1) / G : T - 1;
    for (int e = threadIdx.x; e < S::M * HD; e += 256) {
        int m = e / HD, d = e % HD;
        int64_t p = p0 + m;
        Qs[m * S::QP + d] = p < npairs ? q[(p / G) * ldq + (int64_t)(g * G + p % G) * HD + d] : 0.f;
    }
    int64_t vis[RM];
#pragma unroll
    for (int i = 0; i < RM; i++) {
        int64_t p = p0 + tm * RM + i;
        vis[i] = p < npairs ? infllm_vis(pos0 + p / G, kv_len, decode, l2, s2) : 0;
        if (vis[i] > n2_avail) vis[i] = n2_avail;
    }
    int64_t vmax = infllm_vis(pos0 + t_last, kv_len, decode, l2, s2); /* v2 grows with the row */
    if (vmax > n2_avail) vmax = n2_avail;
    const int64_t ntiles = (vmax + ATT_BK - 1) / ATT_BK;
    const int64_t tps = (ntiles + nsplit - 1) / nsplit;
    const int64_t kt0 = split * tps, kt1 = kt0 + tps < ntiles ? kt0 + tps : ntiles;
    att_state<HD, RM> st;
    st.init();
    for (int64_t kt = kt0; kt < kt1; kt++) {
        const int64_t k0 = kt * ATT_BK;
        __syncthreads();
        att_load_rows<HD>(KVs, C2 + (int64_t)g * HD, (int64_t)nkv * HD, k0, vmax);
        __syncthreads();
        float sc[RM][4];
        att_dots<HD, RM>(Qs, KVs, sc);
#pragma unroll
        for (int i = 0; i < RM; i++)
#pragma unroll
            for (int j = 0; j < 4; j++) sc[i][j] = (k0 + tn + 16 * j < vis[i]) ? sc[i][j] * scale : -INFINITY;
        st.softmax_step(sc, NULL, false);
    }
    if (tn != 0) return;
#pragma unroll
    for (int i = 0; i < RM; i++) {
        int64_t p = p0 + tm * RM + i;
        if (p >= npairs) continue;
        int64_t t = p / G, h = g * G + p % G;
        if (nsplit == 1) {
            lse[t * nh + h] = st.l[i] > 0.f ? st.m[i] + logf(st.l[i]) : -INFINITY;
        } else {
            float *rec = part + ((int64_t)split * T * nh + t * nh + h) * 2;
            rec[0] = st.m[i];
            rec[1] = st.l[i];
        }
    }
}

template <int HD, int RM>
static int launch_lse(cudaStream_t st, float *lse, const float *q, int64_t ldq, const float *C2, int64_t n2_avail,
                      int64_t T, int64_t pos0, int64_t kv_len, int decode, const cu_infllm_dims *d, float *scratch,
                      int64_t scratch_floats) {
    typedef att_shape<HD, RM> S;
    size_t smem = sizeof(float) * (S::M * S::QP + ATT_BK * S::QP);
    static bool attr = false;
    if (!attr) {
        cudaFuncSetAttribute(k_infllm_lse<HD, RM>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        attr = true;
    }
    int G = d->nh / d->nkv;
    int64_t nblk = (T * G + S::M - 1) / S::M;
    int64_t ntiles = (nwin64(kv_len, d->l2, d->s2) + ATT_BK - 1) / ATT_BK;
    int nsplit = attn_pick_split(nblk * d->nkv, ntiles, T * d->nh, 0, scratch_floats);
    dim3 grid((unsigned)nblk, d->nkv, nsplit);
    k_infllm_lse<HD, RM><<<grid, 256, smem, st>>>(lse, q, ldq, C2, n2_avail, T, pos0, kv_len, decode, d->nh, d->nkv,
                                                   d->l2, d->s2, d->scale, nsplit, scratch);
    int e = LAUNCH_CHECK();
    if (e || nsplit == 1) return e;
    return attn_combine(st, lse, d->nh, scratch, nsplit, T * d->nh, d->nh, 0);
}

template <int HD, int NW>
__global__ void __launch_bounds__(NW * 32) k_infllm_lse_mma(float *lse, const float *q, int64_t ldq, const bf16 *C2,
                                                            int64_t n2_avail, int64_t T, int64_t pos0, int64_t kv_len,
                                                            int decode, int nh, int nkv, int l2, int s2, float scale,
                                                            int nsplit, float *part) {
    constexpr int M = 16 * NW, NT = 32 * NW, QP = mma_shape<HD>::QP;
    extern __shared__ uint4 smem_u4[];
    bf16 *Qs = (bf16 *)smem_u4, *Ks = Qs + M * QP; /* Ks: two stages of 64 keys */
    const int g = blockIdx.y, split = blockIdx.z, G = nh / nkv;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
    const int64_t npairs = T * G, p0 = (int64_t)blockIdx.x * M;
    const int64_t t_last = (p0 + M - 1) / G < T - 1 ? (p0 + M - 1) / G : T - 1;
    constexpr int TILE = MMA_BK * QP;
    mma_load_queries<HD, NT>(Qs, M, q, ldq, p0, npairs, G, g);
    __syncthreads();
    uint32_t qf[HD / 16][4];
    mma_q_frags<HD>(Qs, warp * 16, qf);
    int64_t vis[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int64_t p = p0 + warp * 16 + gq + 8 * r;
        vis[r] = p < npairs ? infllm_vis(pos0 + p / G, kv_len, decode, l2, s2) : 0;
        if (vis[r] > n2_avail) vis[r] = n2_avail;
    }
    int64_t vmax = infllm_vis(pos0 + t_last, kv_len, decode, l2, s2);
    if (vmax > n2_avail) vmax = n2_avail;
    const int64_t ntiles = (vmax + MMA_BK - 1) / MMA_BK, tps = (ntiles + nsplit - 1) / nsplit;
    const int64_t kt0 = split * tps, kt1 = kt0 + tps < ntiles ? kt0 + tps : ntiles;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f}, O[HD / 8][4];
    const float sl2 = scale * LOG2E_F; /* log2 units: lse = (m + log2 l)·ln 2 */
    const bf16 *Cg = C2 + (int64_t)g * HD;
    if (kt0 < kt1) {
        mma_async_rows<HD, NT>(Ks, Cg, (int64_t)nkv * HD, kt0 * MMA_BK, vmax);
        cp_async_commit();
    }
    for (int64_t kt = kt0; kt < kt1; kt++) {
        const int64_t k0 = kt * MMA_BK;
        const int buf = (int)((kt - kt0) & 1);
        if (kt + 1 < kt1) { /* the next tile loads while this one is scored */
            mma_async_rows<HD, NT>(Ks + (buf ^ 1) * TILE, Cg, (int64_t)nkv * HD, k0 + MMA_BK, vmax);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        float S[8][4];
        mma_qk<HD>(qf, Ks + buf * TILE, S);
#pragma unroll
        for (int r = 0; r < 2; r++)
#pragma unroll
            for (int nt = 0; nt < 8; nt++)
#pragma unroll
                for (int j = 0; j < 2; j++)
                    S[nt][2 * r + j] = k0 + nt * 8 + 2 * tq + j < vis[r] ? S[nt][2 * r + j] * sl2 : -INFINITY;
        mma_softmax<HD>(S, m, l, O, false);
        __syncthreads(); /* this stage is refilled next */
    }
    if (tq != 0) return;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        int64_t p = p0 + warp * 16 + gq + 8 * r;
        if (p >= npairs) continue;
        int64_t t = p / G, h = g * G + p % G;
        if (nsplit == 1) {
            lse[t * nh + h] = l[r] > 0.f ? (m[r] + log2f(l[r])) * LN2_F : -INFINITY;
        } else { /* the combine works in natural units: m·ln 2 with the same l */
            float *rec = part + ((int64_t)split * T * nh + t * nh + h) * 2;
            rec[0] = m[r] * LN2_F;
            rec[1] = l[r];
        }
    }
}

template <int HD, int NW>
static int launch_lse_mma(cudaStream_t st, float *lse, const float *q, int64_t ldq, const bf16 *C2, int64_t n2_avail,
                          int64_t T, int64_t pos0, int64_t kv_len, int decode, const cu_infllm_dims *d, float *scratch,
                          int64_t scratch_floats) {
    constexpr int M = 16 * NW;
    size_t smem = sizeof(bf16) * (size_t)((M + 2 * MMA_BK) * mma_shape<HD>::QP);
    static bool attr = false;
    if (!attr) {
        cudaFuncSetAttribute(k_infllm_lse_mma<HD, NW>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        attr = true;
    }
    int G = d->nh / d->nkv;
    int64_t nblk = (T * G + M - 1) / M;
    int64_t ntiles = (nwin64(kv_len, d->l2, d->s2) + MMA_BK - 1) / MMA_BK;
    int nsplit = attn_pick_split(nblk * d->nkv, ntiles, T * d->nh, 0, scratch_floats);
    dim3 grid((unsigned)nblk, d->nkv, nsplit);
    k_infllm_lse_mma<HD, NW><<<grid, NW * 32, smem, st>>>(lse, q, ldq, C2, n2_avail, T, pos0, kv_len, decode, d->nh,
                                                           d->nkv, d->l2, d->s2, d->scale, nsplit, scratch);
    int e = LAUNCH_CHECK();
    if (e || nsplit == 1) return e;
    return attn_combine(st, lse, d->nh, scratch, nsplit, T * d->nh, d->nh, 0);
}

/* G == 16, at least 16 rows: 8 warps × 2 rows per block (infllm_mma.cuh), key tiles through three cp.async
 * stages. Each thread keeps its own running (max, sum) for each of its 4 heads per row over the keys it
 * holds (no cross-lane traffic per tile); the 8 lanes holding the same heads merge them at the end. The max
 * is lazy: it moves only when a score exceeds it by more than 2^8, so a tile rarely rescales, and every
 * exp stays ≤ 2^8 (exact in the sum's result, which is m + log2 l whatever m is). */
#define LSE2_STAGES 3
#define LSE2_SLACK 8.f
/* row t, head h's result of split `split` from its (M, L) in log2 units: the LSE itself when there is one split,
 * else the record (m·ln 2, l) that the combine merges in natural units */
static __device__ __forceinline__ void lse_store(float *lse, float *part, int nsplit, int split, int64_t T, int nh,
                                                 int64_t t, int64_t h, float M, float L) {
    if (nsplit == 1) {
        lse[t * nh + h] = L > 0.f ? (M + log2f(L)) * LN2_F : -INFINITY;
    } else {
        float *rec = part + ((int64_t)split * T * nh + t * nh + h) * 2;
        rec[0] = L > 0.f ? M * LN2_F : -INFINITY;
        rec[1] = L;
    }
}

template <int HD, int NW, int MINB, bool LEAN>
__global__ void __launch_bounds__(NW * 32, MINB) k_infllm_lse_g16(float *lse, const float *q, int64_t ldq, const bf16 *C2,
                                                           int64_t n2_avail, int64_t T, int64_t pos0, int64_t kv_len,
                                                           int decode, int nh, int nkv, int l2, int s2, float scale,
                                                           int nsplit, float *part) {
    constexpr int QP = mma_shape<HD>::QP, TILE = MMA_BK * QP;
    constexpr float MNONE = -1e30f; /* "no key yet": finite, so no ∞ − ∞ */
    extern __shared__ uint4 smem_u4[];
    bf16 *Ks = (bf16 *)smem_u4;
    const int g = blockIdx.y, split = blockIdx.z;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
    const int64_t t0 = (int64_t)blockIdx.x * (2 * NW);
    const int64_t t_last = t0 + 2 * NW - 1 < T - 1 ? t0 + 2 * NW - 1 : T - 1;
    int64_t vmax = infllm_vis(pos0 + t_last, kv_len, decode, l2, s2); /* v2 grows with the row */
    if (vmax > n2_avail) vmax = n2_avail;
    const int64_t ntiles = (vmax + MMA_BK - 1) / MMA_BK, tps = (ntiles + nsplit - 1) / nsplit;
    const int64_t kt0 = split * tps, kt1 = kt0 + tps < ntiles ? kt0 + tps : ntiles;
    int64_t v2[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int64_t t = t0 + 2 * warp + r;
        v2[r] = t < T ? infllm_vis(pos0 + t, kv_len, decode, l2, s2) : 0;
        if (v2[r] > vmax) v2[r] = vmax;
    }
    const int64_t vw = v2[0] > v2[1] ? v2[0] : v2[1], vlo = v2[0] < v2[1] ? v2[0] : v2[1];
    float m[2][4], l[2][4]; /* [row][2·nt + j]: head 8·nt + 2·tq + j, log2 units */
#pragma unroll
    for (int r = 0; r < 2; r++)
#pragma unroll
        for (int x = 0; x < 4; x++) m[r][x] = MNONE, l[r][x] = 0.f;
    if (kt0 < kt1) {
        uint32_t qf[2][HD / 16][2][2];
        imma_load_q<HD, NW>(qf, Ks, q, ldq, t0, T, g);
        const float sl2 = scale * LOG2E_F;
        const bf16 *Cg = C2 + (int64_t)g * HD;
        const int64_t cstride = (int64_t)nkv * HD;
        const unsigned ks_addr = (unsigned)__cvta_generic_to_shared(Ks);
        /* tile kt into stage sn: rows past vmax zero */
        auto load_tile = [&](int sn, int64_t kt) {
            if (LEAN) {
                const int64_t left = vmax - kt * MMA_BK;
                imma_async_tile<HD, NW * 32>(ks_addr + sn * TILE * 2, Cg + kt * MMA_BK * cstride, (int)cstride,
                                             left < MMA_BK ? (int)left : MMA_BK);
            } else {
                mma_async_rows<HD, NW * 32>(Ks + sn * TILE, Cg, cstride, kt * MMA_BK, vmax);
            }
        };
#pragma unroll
        for (int s = 0; s < LSE2_STAGES - 1; s++) {
            if (kt0 + s < kt1) load_tile(s, kt0 + s);
            cp_async_commit();
        }
        int stage = 0;
        for (int64_t kt = kt0; kt < kt1; kt++) {
            cp_async_wait<LSE2_STAGES - 2>();
            __syncthreads(); /* tile kt is in; every warp is done with the stage refilled next */
            {
                const int64_t kn = kt + LSE2_STAGES - 1;
                int sn = stage + LSE2_STAGES - 1;
                if (sn >= LSE2_STAGES) sn -= LSE2_STAGES;
                if (kn < kt1) load_tile(sn, kn);
                cp_async_commit();
            }
            const bf16 *Kt = Ks + stage * TILE;
            if (++stage == LSE2_STAGES) stage = 0;
            const int64_t k0 = kt * MMA_BK;
            if (k0 >= vw) continue; /* warp-uniform: neither row sees these keys */
            const bool edge = k0 + MMA_BK > vlo;
            int vrel[2];
#pragma unroll
            for (int r = 0; r < 2; r++) {
                const int64_t vr = v2[r] - k0;
                vrel[r] = vr < 0 ? 0 : vr > MMA_BK ? MMA_BK : (int)vr;
            }
#pragma unroll
            for (int mt = 0; mt < 4; mt++) {
                float acc[2][2][4];
                imma_scores16<HD>(acc, qf, Kt, mt);
                if (edge)
#pragma unroll
                    for (int r = 0; r < 2; r++)
#pragma unroll
                        for (int nt = 0; nt < 2; nt++)
#pragma unroll
                            for (int e = 0; e < 4; e++)
                                if (mt * 16 + (e >> 1) * 8 + gq >= vrel[r]) acc[r][nt][e] = -INFINITY;
                float mx[2][4];
                bool grow = false;
#pragma unroll
                for (int r = 0; r < 2; r++)
#pragma unroll
                    for (int nt = 0; nt < 2; nt++)
#pragma unroll
                        for (int j = 0; j < 2; j++) {
                            mx[r][2 * nt + j] = fmaxf(acc[r][nt][j], acc[r][nt][2 + j]) * sl2;
                            grow |= mx[r][2 * nt + j] > m[r][2 * nt + j] + LSE2_SLACK;
                        }
                if (__any_sync(0xffffffffu, grow)) {
#pragma unroll
                    for (int r = 0; r < 2; r++)
#pragma unroll
                        for (int x = 0; x < 4; x++)
                            if (mx[r][x] > m[r][x] + LSE2_SLACK) {
                                l[r][x] *= imma_ex2(m[r][x] - mx[r][x]);
                                m[r][x] = mx[r][x];
                            }
                }
#pragma unroll
                for (int r = 0; r < 2; r++)
#pragma unroll
                    for (int nt = 0; nt < 2; nt++)
#pragma unroll
                        for (int j = 0; j < 2; j++) {
                            const float nm = -m[r][2 * nt + j];
                            l[r][2 * nt + j] += imma_ex2(fmaf(acc[r][nt][j], sl2, nm)) +
                                                imma_ex2(fmaf(acc[r][nt][2 + j], sl2, nm));
                        }
            }
        }
        cp_async_wait<0>();
    }
    /* merge the 8 lanes (gq) that hold the same heads */
#pragma unroll
    for (int r = 0; r < 2; r++)
#pragma unroll
        for (int x = 0; x < 4; x++)
#pragma unroll
            for (int o = 4; o < 32; o <<= 1) {
                const float mo = __shfl_xor_sync(0xffffffffu, m[r][x], o), lo = __shfl_xor_sync(0xffffffffu, l[r][x], o);
                const float mn = fmaxf(m[r][x], mo);
                l[r][x] = l[r][x] * imma_ex2(m[r][x] - mn) + lo * imma_ex2(mo - mn);
                m[r][x] = mn;
            }
    if (gq != 0) return;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int64_t t = t0 + 2 * warp + r;
        if (t >= T) continue;
#pragma unroll
        for (int x = 0; x < 4; x++) {
            const int64_t h = g * 16 + (x >> 1) * 8 + 2 * tq + (x & 1);
            lse_store(lse, part, nsplit, split, T, nh, t, h, m[r][x], l[r][x]);
        }
    }
}

template <int HD, int NW, int MINB, bool LEAN>
static int launch_lse_g16(cudaStream_t st, float *lse, const float *q, int64_t ldq, const bf16 *C2, int64_t n2_avail,
                          int64_t T, int64_t pos0, int64_t kv_len, int decode, const cu_infllm_dims *d, float *scratch,
                          int64_t scratch_floats) {
    constexpr int smem = (int)sizeof(bf16) * LSE2_STAGES * MMA_BK * mma_shape<HD>::QP;
    static bool attr = false;
    if (!attr) {
        cudaFuncSetAttribute(k_infllm_lse_g16<HD, NW, MINB, LEAN>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
        attr = true;
    }
    int64_t nblk = (T + 2 * NW - 1) / (2 * NW);
    int64_t ntiles = (nwin64(kv_len, d->l2, d->s2) + MMA_BK - 1) / MMA_BK;
    int nsplit = attn_pick_split(nblk * d->nkv, ntiles, T * d->nh, 0, scratch_floats);
    dim3 grid((unsigned)nblk, d->nkv, nsplit);
    k_infllm_lse_g16<HD, NW, MINB, LEAN><<<grid, NW * 32, smem, st>>>(lse, q, ldq, C2, n2_avail, T, pos0, kv_len, decode, d->nh, d->nkv,
                                                   d->l2, d->s2, d->scale, nsplit, scratch);
    int e = LAUNCH_CHECK();
    if (e || nsplit == 1) return e;
    return attn_combine(st, lse, d->nh, scratch, nsplit, T * d->nh, d->nh, 0);
}

/* sm_90a, G == 16, head dim a multiple of 64 (infllm_wgmma.cuh): the structure of k_infllm_score_wg. NW warps
 * = NW/4 warpgroups = NW rows per block (one row per warp) share every key tile; ST cp.async stages (128-byte
 * swizzle) with DP tiles loading ahead; wgmma m64n64k16 × HD/16 per tile, issued a tile ahead of the exps
 * on two accumulator sets. Lane (g, t) holds heads g and g + 8 of its row for keys 8i + 2t (+1) of a tile,
 * and keeps a running (max, sum) for each of the two over the keys it sees; the 4 lanes of a quad merge them
 * at the end.
 * The fast step (with the next tile's product in flight, so branch-free) sums ex2(s − m) of its 16 keys per
 * head with the thread's current max m and keeps that sum only when the tile needs no mask (every key of
 * the tile visible to the row) and the sum is ≤ 2^LSEW_SLACK (so is every exp: no overflow, no ∞). Otherwise
 * the tile's scores, still in registers, are taken again once the product in flight is retired (nothing
 * in flight then): masked, max-updated, rescaled. That happens on a warp's first tile (m starts at "none"),
 * on the tile holding the row's last visible keys, and when a score exceeds m by LSEW_SLACK (log2 units).
 */
#define LSEW_SLACK 32.f
template <int HD, int NW, int MINB, int ST, int DP>
__global__ void __launch_bounds__(NW * 32, MINB) k_infllm_lse_wg(float *lse, const float *q, int64_t ldq, const bf16 *C2,
                                                                int64_t n2_avail, int64_t T, int64_t pos0, int64_t kv_len,
                                                                int decode, int nh, int nkv, int l2, int s2, float scale,
                                                                int nsplit, float *part) {
#if IWG_OK
    constexpr int NT = NW * 32, TB = IWG_TILE_BYTES(HD);
    constexpr float MNONE = -1e30f; /* "no key yet": finite, so no ∞ − ∞ */
    static_assert(NW % 4 == 0 && DP >= 1 && DP < ST, "whole warpgroups; a stage per tile in flight plus one");
    extern __shared__ uint4 smem_u4[];
    const unsigned sraw = (unsigned)__cvta_generic_to_shared(smem_u4);
    const unsigned ks_addr = (sraw + 1023u) & ~1023u;
    bf16 *Kgen = (bf16 *)((char *)smem_u4 + (ks_addr - sraw));
    const int g = blockIdx.y, split = blockIdx.z;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
    const int64_t t0 = (int64_t)blockIdx.x * NW;
    const int64_t t_last = t0 + NW - 1 < T - 1 ? t0 + NW - 1 : T - 1;
    int64_t vmax = infllm_vis(pos0 + t_last, kv_len, decode, l2, s2); /* v2 grows with the row */
    if (vmax > n2_avail) vmax = n2_avail;
    const int64_t ntiles = (vmax + MMA_BK - 1) / MMA_BK, tps = (ntiles + nsplit - 1) / nsplit;
    const int64_t kt0 = split * tps, kt1 = kt0 + tps < ntiles ? kt0 + tps : ntiles;
    const int64_t t = t0 + warp;
    const bool rv = t < T;
    const int64_t jbase = kt0 * MMA_BK;
    int vr; /* the row's visible keys, relative to jbase, clamped to [0, keys of the split] */
    {
        int64_t v = rv ? infllm_vis(pos0 + t, kv_len, decode, l2, s2) : 0;
        if (v > vmax) v = vmax;
        v -= jbase;
        const int64_t span = (kt1 > kt0 ? kt1 - kt0 : 0) * MMA_BK;
        vr = v < 0 ? 0 : v > span ? (int)span : (int)v;
    }
    float m[2] = {MNONE, MNONE}, l[2] = {0.f, 0.f}; /* heads gq, gq + 8; log2 units */
    const int nload = kt1 > kt0 ? (int)(kt1 - kt0) : 0;
    if (nload > 0) {
        uint32_t qa[HD / 16][4];
        iwg_load_q<HD, NW>(qa, Kgen, q, ldq, t0, T, g);
        const float sl2 = scale * LOG2E_F, lim = exp2f(LSEW_SLACK);
        const bf16 *Cg = C2 + (int64_t)g * HD;
        const int cstride = nkv * HD;
        const int vrel = (int)(vmax - jbase);
        auto load = [&](int i) { /* tile kt0 + i into its stage; keys past vmax zero */
            iwg_async_tile<HD, NT>(ks_addr + (i % ST) * TB, Cg + (kt0 + i) * MMA_BK * (int64_t)cstride, cstride,
                                   vrel - i * MMA_BK);
        };
        auto arrive = [&](int i) { /* as in k_infllm_score_wg */
            cp_async_wait<DP - 1>();
            iwg_proxy_fence();
            __syncthreads();
            if (i + DP < nload) load(i + DP);
            cp_async_commit();
        };
        /* the fast step of tile it: true when the tile must be taken again (slow) */
        auto consume = [&](int it, const float d[32]) -> bool {
            const float n0 = -m[0], n1 = -m[1];
            float a0 = 0.f, a1 = 0.f, b0 = 0.f, b1 = 0.f;
#pragma unroll
            for (int i = 0; i < 8; i++) {
                a0 += imma_ex2(fmaf(d[4 * i], sl2, n0));
                a1 += imma_ex2(fmaf(d[4 * i + 1], sl2, n0));
                b0 += imma_ex2(fmaf(d[4 * i + 2], sl2, n1));
                b1 += imma_ex2(fmaf(d[4 * i + 3], sl2, n1));
            }
            const float s0 = a0 + a1, s1 = b0 + b1;
            const bool ok = (it + 1) * MMA_BK <= vr && s0 <= lim && s1 <= lim; /* false on ∞ */
            l[0] = ok ? l[0] + s0 : l[0];
            l[1] = ok ? l[1] + s1 : l[1];
            return !ok && rv;
        };
        /* the slow step of tile it (nothing in flight): masked keys out, max and sum updated */
        auto redo = [&](int it, const float d[32]) {
            const int kr = vr - it * MMA_BK - 2 * tq; /* key 8i + 2t + j visible iff 8i + j < kr */
#pragma unroll
            for (int h = 0; h < 2; h++) { /* two passes over the registers: the max, then the sum */
                float mx = -INFINITY;
#pragma unroll
                for (int i = 0; i < 8; i++)
#pragma unroll
                    for (int j = 0; j < 2; j++)
                        if (8 * i + j < kr) mx = fmaxf(mx, d[4 * i + 2 * h + j] * sl2);
                const float mn = fmaxf(m[h], mx);
                float acc = l[h] * imma_ex2(m[h] - mn);
#pragma unroll
                for (int i = 0; i < 8; i++)
#pragma unroll
                    for (int j = 0; j < 2; j++)
                        if (8 * i + j < kr) acc += imma_ex2(fmaf(d[4 * i + 2 * h + j], sl2, -mn));
                l[h] = acc;
                m[h] = mn;
            }
        };
#pragma unroll
        for (int i = 0; i < DP; i++) {
            if (i < nload) load(i);
            cp_async_commit();
        }
        float acc0[32], acc1[32];
        arrive(0);
        iwg_issue_tile<HD>(acc0, qa, ks_addr);
        iwg_wait<0>();
        iwg_reg_fence32(acc0);
        /* tile it is complete in acc0 at the top of every iteration (k_infllm_score_wg's loop) */
        for (int it = 0; it < nload; it += 2) {
            arrive(it + 1);
            iwg_issue_tile<HD>(acc1, qa, ks_addr + ((it + 1) % ST) * TB);
            bool slow = consume(it, acc0);
            iwg_wait<0>();
            iwg_reg_fence32(acc1);
            if (slow) redo(it, acc0);
            if (it + 1 >= nload) break;
            arrive(it + 2);
            iwg_issue_tile<HD>(acc0, qa, ks_addr + ((it + 2) % ST) * TB);
            slow = consume(it + 1, acc1);
            iwg_wait<0>();
            iwg_reg_fence32(acc0);
            if (slow) redo(it + 1, acc1);
        }
        cp_async_wait<0>();
    }
    /* merge the 4 lanes (tq) that hold the same heads */
#pragma unroll
    for (int h = 0; h < 2; h++)
#pragma unroll
        for (int o = 1; o < 4; o <<= 1) {
            const float mo = __shfl_xor_sync(0xffffffffu, m[h], o), lo = __shfl_xor_sync(0xffffffffu, l[h], o);
            const float mn = fmaxf(m[h], mo);
            l[h] = l[h] * imma_ex2(m[h] - mn) + lo * imma_ex2(mo - mn);
            m[h] = mn;
        }
    if (tq != 0 || !rv) return;
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int64_t hh = g * 16 + gq + 8 * h;
        lse_store(lse, part, nsplit, split, T, nh, t, hh, m[h], l[h]);
    }
#else
    __trap(); /* launched only on sm_90, whose code this build lacks (build with sm_90a) */
#endif
}

template <int HD, int NW, int MINB, int ST, int DP>
static int launch_lse_wg(cudaStream_t st, float *lse, const float *q, int64_t ldq, const bf16 *C2, int64_t n2_avail,
                         int64_t T, int64_t pos0, int64_t kv_len, int decode, const cu_infllm_dims *d, float *scratch,
                         int64_t scratch_floats) {
    /* the stages (1024-aligned), which also stage the queries first: 8 rows × 16 heads × (HD + 8) bf16 */
    constexpr int sk = ST * IWG_TILE_BYTES(HD), sq = 8 * 16 * (HD + 8) * 2;
    constexpr int smem = (sk > sq ? sk : sq) + 1024;
    static bool attr = false;
    if (!attr) {
        cudaFuncSetAttribute(k_infllm_lse_wg<HD, NW, MINB, ST, DP>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
        attr = true;
    }
    int64_t nblk = (T + NW - 1) / NW;
    int64_t ntiles = (nwin64(kv_len, d->l2, d->s2) + MMA_BK - 1) / MMA_BK;
    int nsplit = attn_pick_split(nblk * d->nkv, ntiles, T * d->nh, 0, scratch_floats);
    dim3 grid((unsigned)nblk, d->nkv, nsplit);
    k_infllm_lse_wg<HD, NW, MINB, ST, DP><<<grid, NW * 32, smem, st>>>(lse, q, ldq, C2, n2_avail, T, pos0, kv_len, decode,
                                                                     d->nh, d->nkv, d->l2, d->s2, d->scale, nsplit,
                                                                     scratch);
    int e = LAUNCH_CHECK();
    if (e || nsplit == 1) return e;
    return attn_combine(st, lse, d->nh, scratch, nsplit, T * d->nh, d->nh, 0);
}

/* SALA_LSE_VAR (or cu_infllm_lse_variant, for the tests and the bench): 0 = k_infllm_lse_g16 with the
 * mma_async_rows tile loader (the reference the tests compare with), 1 = imma_async_tile (the default where
 * wgmma cannot run), 2 (default) = k_infllm_lse_wg on sm_90a (head dim a multiple of 64; 8 warps, 3 stages,
 * 2 tiles ahead) */
static int lse_var = -1;
extern "C" void cu_infllm_lse_variant(int v) { lse_var = v; }

template <int HD>
static int lse_rm(cudaStream_t st, float *lse, const float *q, int64_t ldq, const void *C2v, int64_t n2_avail, int64_t T,
                  int64_t pos0, int64_t kv_len, int decode, const cu_infllm_dims *d, float *scratch, int64_t sf) {
    if (d->bf16) {
        const bf16 *C2 = (const bf16 *)C2v;
        if (d->nh == 16 * d->nkv && T >= 16) { /* the released model's prefill */
            if (lse_var < 0) {
                const char *e = getenv("SALA_LSE_VAR");
                lse_var = e ? atoi(e) : 2;
            }
#define LSE_ARGS st, lse, q, ldq, C2, n2_avail, T, pos0, kv_len, decode, d, scratch, sf
            if (lse_var == 0) return launch_lse_g16<HD, 8, 2, false>(LSE_ARGS);
            if (lse_var != 1 && HD % 64 == 0 && infllm_wg_ok(st)) {
                constexpr int H = HD % 64 == 0 ? HD : 64;
                return launch_lse_wg<H, 8, 2, 3, 2>(LSE_ARGS);
            }
            return launch_lse_g16<HD, 8, 2, true>(LSE_ARGS);
#undef LSE_ARGS
        }
        if (T * (d->nh / d->nkv) <= 16)
            return launch_lse_mma<HD, 1>(st, lse, q, ldq, C2, n2_avail, T, pos0, kv_len, decode, d, scratch, sf);
        return launch_lse_mma<HD, 4>(st, lse, q, ldq, C2, n2_avail, T, pos0, kv_len, decode, d, scratch, sf);
    }
    const float *C2 = (const float *)C2v;
    if (T * (d->nh / d->nkv) <= 64)
        return launch_lse<HD, 1>(st, lse, q, ldq, C2, n2_avail, T, pos0, kv_len, decode, d, scratch, sf);
    return launch_lse<HD, 4>(st, lse, q, ldq, C2, n2_avail, T, pos0, kv_len, decode, d, scratch, sf);
}

extern "C" int cu_infllm_lse(void *stream, float *lse, const float *q, int64_t ldq, const void *C2, int64_t n2_avail,
                             int64_t T, int64_t pos0, int64_t kv_len, int decode, const cu_infllm_dims *d,
                             float *scratch, int64_t scratch_floats) {
    cudaStream_t st = (cudaStream_t)stream;
    if (T <= 0) return 0;
    if (d->nkv <= 0 || d->nh % d->nkv) return (int)cudaErrorInvalidValue;
    switch (d->hd) {
    case 16: return lse_rm<16>(st, lse, q, ldq, C2, n2_avail, T, pos0, kv_len, decode, d, scratch, scratch_floats);
    case 32: return lse_rm<32>(st, lse, q, ldq, C2, n2_avail, T, pos0, kv_len, decode, d, scratch, scratch_floats);
    case 64: return lse_rm<64>(st, lse, q, ldq, C2, n2_avail, T, pos0, kv_len, decode, d, scratch, scratch_floats);
    case 128: return lse_rm<128>(st, lse, q, ldq, C2, n2_avail, T, pos0, kv_len, decode, d, scratch, scratch_floats);
    default: return (int)cudaErrorInvalidValue;
    }
}
