/* infllm_score.cu — InfLLM-v2 stage 1 with the fused group sum and the max-pool (MODEL.md §4 steps 2–3).
 *
 * For row r and KV group g, each visible level-1 compressed key j < v1(r) scores
 *     score_g(r, j) = Σ_{h ∈ g} exp(scale · q_h(r)·C1[j] − LSE_h(r))
 * an existing but invisible key scores 0, a key past n1 does not exist (−inf). Blocks pool the scores of
 * keys [P·b − 1, P·b + P − 1] (P = B/s1 = 4) by max.
 *
 * A thread block takes the (row, head) pairs of a few whole rows (16·RM pairs, a multiple of G) and one
 * tile of 64 keys: the exps of its pairs are summed per row in shared memory, then pooled into the
 * 64/P blocks that start in the tile. The key 64·tile − 1 of the block starting the tile lies in the
 * previous tile; that tile stores it as halo[tile], and the top-k kernel folds it in. Tiles with no
 * block at or before the rows' own block are skipped (the top-k never reads them); tiles past every
 * row's visible keys only write 0 / −inf. With d->bf16 the dot products run on tensor cores (q and C1
 * rounded to bf16 like the official kernel, fp32 accumulation); exps, sums and pooling stay fp32.
 * Kernels: k_infllm_score (fp32 mode); in the bf16 mode, for G = 16, P = 4 and at least 16 rows (the
 * released model's prefill), k_infllm_score_wg on sm_90 (wgmma, infllm_wgmma.cuh; head dim a multiple of
 * 64) and k_infllm_score_g16x elsewhere (mma.sync, infllm_mma.cuh); k_infllm_score_mma for the rest (decode
 * steps, other group sizes). k_infllm_score_g16 (the mma.sync kernel before g16x) stays as the reference
 * the tests compare the other two with (SALA_S1_VAR, score_rm). */
#include "cuda/attn_core.cuh"
#include "cuda/infllm_mma.cuh"
#include "cuda/infllm_wgmma.cuh"
#include "cuda/mma_core.cuh"

template <int HD, int RM>
__global__ void __launch_bounds__(256) k_infllm_score(float *pooled, float *halo, const float *q, int64_t ldq,
                                                      const float *lse, const float *C1, int64_t n1_avail, int64_t T,
                                                      int64_t pos0, int64_t kv_len, int decode, int nh, int nkv,
                                                      int l1, int s1, int block, float scale, int64_t nblk_cap,
                                                      int64_t ntile_cap) {
    typedef att_shape<HD, RM> S;
    extern __shared__ float4 smem_f4[];
    float *Qs = (float *)smem_f4, *Ks = Qs + S::M * S::QP, *Es = Ks + ATT_BK * S::QP; /* Es [M][65] */
    __shared__ float Ls[S::M];
    __shared__ float Rs[64][ATT_BK + 1]; /* per-row sums [rows][64] */
    const int g = blockIdx.z, G = nh / nkv, P = block / s1, NBT = ATT_BK / P;
    const int tm = threadIdx.x / 16, tn = threadIdx.x % 16;
    const int64_t npairs = T * G, p0 = (int64_t)blockIdx.x * S::M, jt = blockIdx.y, j0 = jt * ATT_BK;
    const int64_t t_first = p0 / G;
    const int64_t t_last = (p0 + S::M - 1) / G < T - 1 ? (p0 + S::M - 1) / G : T - 1;
    const int R = (int)(t_last - t_first + 1);
    if (jt * NBT > (pos0 + t_last) / block) return; /* no row needs these blocks */
    const int64_t n1_call = nwin64(kv_len, l1, s1);
    int64_t vmax = infllm_vis(pos0 + t_last, kv_len, decode, l1, s1);
    if (vmax > n1_avail) vmax = n1_avail;
    float e[RM][4];
#pragma unroll
    for (int i = 0; i < RM; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) e[i][j] = 0.f;
    if (j0 < vmax) {
        for (int x = threadIdx.x; x < S::M * HD; x += 256) {
            int m = x / HD, d = x % HD;
            int64_t p = p0 + m;
            Qs[m * S::QP + d] = p < npairs ? q[(p / G) * ldq + (int64_t)(g * G + p % G) * HD + d] : 0.f;
        }
        for (int m = threadIdx.x; m < S::M; m += 256) {
            int64_t p = p0 + m;
            Ls[m] = p < npairs ? lse[(p / G) * nh + g * G + p % G] : 0.f;
        }
        att_load_rows<HD>(Ks, C1 + (int64_t)g * HD, (int64_t)nkv * HD, j0, vmax);
        __syncthreads();
        float dot[RM][4];
        att_dots<HD, RM>(Qs, Ks, dot);
#pragma unroll
        for (int i = 0; i < RM; i++) {
            int64_t p = p0 + tm * RM + i;
            if (p >= npairs) continue;
            int64_t v1 = infllm_vis(pos0 + p / G, kv_len, decode, l1, s1);
            if (v1 > vmax) v1 = vmax;
            float L = Ls[tm * RM + i];
#pragma unroll
            for (int j = 0; j < 4; j++)
                if (j0 + tn + 16 * j < v1) e[i][j] = expf(dot[i][j] * scale - L);
        }
    }
#pragma unroll
    for (int i = 0; i < RM; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) Es[(tm * RM + i) * (ATT_BK + 1) + tn + 16 * j] = e[i][j];
    __syncthreads();
    /* group sum per row, heads in order (pairs of a row are consecutive: p = t·G + hh) */
    for (int x = threadIdx.x; x < R * ATT_BK; x += 256) {
        int r = x / ATT_BK, n = x % ATT_BK;
        int64_t pbase = (t_first + r) * G - p0; /* index of head 0 of row r in this block */
        float sum = 0.f;
        for (int hh = 0; hh < G; hh++) sum += Es[(pbase + hh) * (ATT_BK + 1) + n];
        Rs[r][n] = j0 + n < n1_call ? sum : -INFINITY;
    }
    __syncthreads();
    for (int x = threadIdx.x; x < R * NBT; x += 256) {
        int r = x / NBT, bl = x % NBT;
        int64_t t = t_first + r;
        float v = -INFINITY;
        for (int jj = bl * P - 1; jj <= bl * P + P - 1; jj++)
            if (jj >= 0) v = fmaxf(v, Rs[r][jj]);
        pooled[(t * nkv + g) * nblk_cap + jt * NBT + bl] = v;
    }
    for (int r = threadIdx.x; r < R; r += 256) {
        int64_t t = t_first + r;
        if (jt + 1 < ntile_cap) halo[(t * nkv + g) * ntile_cap + jt + 1] = Rs[r][ATT_BK - 1];
    }
}

/* The same with the dot products on tensor cores: 4 warps × 16 pairs against tiles of 64 keys. A block
 * keeps its queries (as mma fragments) and their LSEs on chip and walks SC_TILES consecutive key tiles,
 * so q is read once per block instead of once per tile. */
#define SC_TILES 16
template <int HD, int NW>
__global__ void __launch_bounds__(NW * 32) k_infllm_score_mma(float *pooled, float *halo, const float *q, int64_t ldq,
                                                          const float *lse, const bf16 *C1, int64_t n1_avail,
                                                          int64_t T, int64_t pos0, int64_t kv_len, int decode, int nh,
                                                          int nkv, int l1, int s1, int block, float scale,
                                                          int64_t nblk_cap, int64_t ntile_cap) {
    constexpr int M = 16 * NW, NT = 32 * NW, QP = mma_shape<HD>::QP, EP = ATT_BK + 1;
    extern __shared__ uint4 smem_u4[];
    constexpr int TILE = MMA_BK * QP;
    bf16 *Qs = (bf16 *)smem_u4, *Ks = Qs + M * QP;  /* Ks: two stages of 64 keys */
    float *Es = (float *)(Ks + 2 * TILE);          /* [M][EP], only when G != 16 */
    __shared__ float Ls[M];
    __shared__ float Rs[64][ATT_BK + 1];
    const int g = blockIdx.z, G = nh / nkv, P = block / s1, NBT = ATT_BK / P;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
    const int64_t npairs = T * G, p0 = (int64_t)blockIdx.x * M;
    const int64_t t_first = p0 / G;
    const int64_t t_last = (p0 + M - 1) / G < T - 1 ? (p0 + M - 1) / G : T - 1;
    const int R = (int)(t_last - t_first + 1);
    const int64_t qb_last = (pos0 + t_last) / block;
    const int64_t jt0 = (int64_t)blockIdx.y * SC_TILES;
    if (jt0 * NBT > qb_last) return; /* no row needs these blocks */
    const int64_t n1_call = nwin64(kv_len, l1, s1);
    int64_t vmax = infllm_vis(pos0 + t_last, kv_len, decode, l1, s1);
    if (vmax > n1_avail) vmax = n1_avail;
    uint32_t qf[HD / 16][4];
    int64_t v1r[2];
    float Lr[2];
    if (jt0 * ATT_BK < vmax) {
        mma_load_queries<HD, NT>(Qs, M, q, ldq, p0, npairs, G, g);
        for (int m = threadIdx.x; m < M; m += NT) {
            int64_t p = p0 + m;
            Ls[m] = p < npairs ? lse[(p / G) * nh + g * G + p % G] : 0.f;
        }
        __syncthreads();
        mma_q_frags<HD>(Qs, warp * 16, qf);
#pragma unroll
        for (int r = 0; r < 2; r++) {
            const int m = warp * 16 + gq + 8 * r;
            const int64_t p = p0 + m;
            v1r[r] = p < npairs ? infllm_vis(pos0 + p / G, kv_len, decode, l1, s1) : 0;
            if (v1r[r] > vmax) v1r[r] = vmax;
            Lr[r] = Ls[m];
        }
    }
    /* G == 16: a warp's 16 pairs are the heads of one row, so the group sum is a reduction across the
     * warp's rows in registers; otherwise the exps go through shared memory */
    const bool fast = G == 16;
    const float sl2 = scale * LOG2E_F;
    /* key tiles of this block: [jt0, jt_end); those below vmax stream through two cp.async stages */
    int64_t jt_end = jt0 + SC_TILES;
    if (jt_end > qb_last / NBT + 1) jt_end = qb_last / NBT + 1;
    const bf16 *Cg = C1 + (int64_t)g * HD;
    if (jt0 * ATT_BK < vmax) {
        mma_async_rows<HD, NT>(Ks, Cg, (int64_t)nkv * HD, jt0 * ATT_BK, vmax);
        cp_async_commit();
    }
    for (int64_t jt = jt0; jt < jt_end; jt++) {
        const int64_t j0 = jt * ATT_BK;
        const int buf = (int)((jt - jt0) & 1);
        __syncthreads(); /* the previous tile's Ks stage, Es and Rs are no longer read */
        if (j0 < vmax) {
            if (jt + 1 < jt_end && j0 + ATT_BK < vmax) {
                mma_async_rows<HD, NT>(Ks + (buf ^ 1) * TILE, Cg, (int64_t)nkv * HD, j0 + ATT_BK, vmax);
                cp_async_commit();
                cp_async_wait<1>();
            } else {
                cp_async_wait<0>();
            }
            __syncthreads();
            float S[8][4];
            mma_qk<HD>(qf, Ks + buf * TILE, S);
            float e[8][4];
#pragma unroll
            for (int r = 0; r < 2; r++)
#pragma unroll
                for (int nt = 0; nt < 8; nt++)
#pragma unroll
                    for (int j = 0; j < 2; j++) {
                        int key = nt * 8 + 2 * tq + j;
                        e[nt][2 * r + j] = j0 + key < v1r[r] ? exp2f(S[nt][2 * r + j] * sl2 - Lr[r] * LOG2E_F) : 0.f;
                    }
            if (fast) {
#pragma unroll
                for (int nt = 0; nt < 8; nt++)
#pragma unroll
                    for (int j = 0; j < 2; j++) {
                        float v = e[nt][j] + e[nt][2 + j]; /* rows g and g+8 */
                        v += __shfl_xor_sync(0xffffffffu, v, 4);
                        v += __shfl_xor_sync(0xffffffffu, v, 8);
                        v += __shfl_xor_sync(0xffffffffu, v, 16);
                        int key = nt * 8 + 2 * tq + j;
                        if (gq == 0 && warp < R) Rs[warp][key] = j0 + key < n1_call ? v : -INFINITY;
                    }
            } else {
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    const int m = warp * 16 + gq + 8 * r;
#pragma unroll
                    for (int nt = 0; nt < 8; nt++)
#pragma unroll
                        for (int j = 0; j < 2; j++) Es[m * EP + nt * 8 + 2 * tq + j] = e[nt][2 * r + j];
                }
            }
        } else if (!fast) {
            for (int x = threadIdx.x; x < M * ATT_BK; x += NT) Es[(x / ATT_BK) * EP + x % ATT_BK] = 0.f;
        } else {
            for (int x = threadIdx.x; x < R * ATT_BK; x += NT) {
                int n = x % ATT_BK;
                Rs[x / ATT_BK][n] = j0 + n < n1_call ? 0.f : -INFINITY;
            }
        }
        __syncthreads();
        if (!fast) {
            for (int x = threadIdx.x; x < R * ATT_BK; x += NT) {
                int r = x / ATT_BK, n = x % ATT_BK;
                int64_t pbase = (t_first + r) * G - p0;
                float sum = 0.f;
                for (int hh = 0; hh < G; hh++) sum += Es[(pbase + hh) * EP + n];
                Rs[r][n] = j0 + n < n1_call ? sum : -INFINITY;
            }
            __syncthreads();
        }
        for (int x = threadIdx.x; x < R * NBT; x += NT) {
            int r = x / NBT, bl = x % NBT;
            int64_t t = t_first + r;
            float v = -INFINITY;
            for (int jj = bl * P - 1; jj <= bl * P + P - 1; jj++)
                if (jj >= 0) v = fmaxf(v, Rs[r][jj]);
            pooled[(t * nkv + g) * nblk_cap + jt * NBT + bl] = v;
        }
        for (int r = threadIdx.x; r < R; r += NT) {
            int64_t t = t_first + r;
            if (jt + 1 < ntile_cap) halo[(t * nkv + g) * ntile_cap + jt + 1] = Rs[r][ATT_BK - 1];
        }
    }
}

/* G == 16 and P == 4 (the released model), at least 16 rows: 8 warps × 2 rows per block (infllm_mma.cuh),
 * (kept as the tests' reference; k_infllm_score_g16x below is the same with a leaner tile loader)
 * SC2_TILES key tiles per block streamed through three cp.async stages, one __syncthreads per tile. A
 * thread sums the exps of its 4 heads per key; a reduce-scatter over the quad (6 shuffles per row and
 * tile) leaves lane (g, t) the group sums of keys 16t + g and 16t + 8 + g; the warp pools them through a
 * small shared buffer laid out [key % 4][key / 4] (conflict-free reads) and writes each row's 16 block
 * scores with one coalesced store. Masks (invisible keys 0, missing keys −inf) apply to the sums. */
#define SC2_TILES 32
#define SC2_STAGES 3
template <int HD, int NW, int MINB>
__global__ void __launch_bounds__(NW * 32, MINB) k_infllm_score_g16(float *pooled, float *halo, const float *q, int64_t ldq,
                                                             const float *lse, const bf16 *C1, int64_t n1_avail,
                                                             int64_t T, int64_t pos0, int64_t kv_len, int decode,
                                                             int nh, int nkv, int l1, int s1, int block, float scale,
                                                             int64_t nblk_cap, int64_t ntile_cap) {
    constexpr int QP = mma_shape<HD>::QP, TILE = MMA_BK * QP, PW = 80; /* pool buffer row pitch (floats) */
    extern __shared__ uint4 smem_u4[];
    bf16 *Ks = (bf16 *)smem_u4; /* SC2_STAGES tiles of 64 keys; the queries pass through it first */
    __shared__ float pool_s[NW][2 * PW];
    const int g = blockIdx.z;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
    const int64_t t0 = (int64_t)blockIdx.x * (2 * NW);
    const int64_t t_last = t0 + 2 * NW - 1 < T - 1 ? t0 + 2 * NW - 1 : T - 1;
    const int64_t qb_last = (pos0 + t_last) / block;
    const int64_t jt0 = (int64_t)blockIdx.y * SC2_TILES;
    if (jt0 * 16 > qb_last) return; /* no row needs these blocks */
    int64_t jt_end = jt0 + SC2_TILES;
    if (jt_end > qb_last / 16 + 1) jt_end = qb_last / 16 + 1;
    const int64_t n1_call = nwin64(kv_len, l1, s1);
    int64_t vmax = infllm_vis(pos0 + t_last, kv_len, decode, l1, s1);
    if (vmax > n1_avail) vmax = n1_avail;
    int64_t jt_load = (vmax + MMA_BK - 1) / MMA_BK; /* tiles [jt0, jt_load) hold visible keys */
    if (jt_load > jt_end) jt_load = jt_end;
    if (jt_load < jt0) jt_load = jt0;
    /* per-tile bounds as ints relative to the first key of the block's range (< 64·(SC2_TILES + 1)) */
    const int64_t jbase = jt0 * MMA_BK;
    auto rel = [&](int64_t x) { x -= jbase; return x < 0 ? 0 : x > 64 * (SC2_TILES + 1) ? 64 * (SC2_TILES + 1) : (int)x; };
    int v1r[2];
    bool rv[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int64_t t = t0 + 2 * warp + r;
        rv[r] = t < T;
        int64_t v = rv[r] ? infllm_vis(pos0 + t, kv_len, decode, l1, s1) : 0;
        v1r[r] = rel(v < vmax ? v : vmax);
    }
    const int n1r = rel(n1_call), vwr = v1r[0] > v1r[1] ? v1r[0] : v1r[1]; /* the warp's keys end at vwr */
    float *ps = pool_s[warp];
    /* this lane's outputs in emit: row lane/16, block lane%16 of each tile */
    const bool out_row = rv[lane >> 4];
    const int64_t tg_out = (t0 + 2 * warp + (lane >> 4)) * nkv + g;
    float *pool_out = pooled + tg_out * nblk_cap + jt0 * 16 + (lane & 15);
    float *halo_out = halo + tg_out * ntile_cap + jt0 + 1;
    const int halo_n = (int)(ntile_cap - 1 - jt0); /* halo of tile jt0 + i exists for i < halo_n */
    /* masks, pooling and stores of tile jt0 + it; z[r][i] = group sum of key 16·tq + 8·i + gq of row r */
    auto emit = [&](int it, float z[2][2]) {
        const int j0 = it * MMA_BK;
        __syncwarp();
#pragma unroll
        for (int r = 0; r < 2; r++)
#pragma unroll
            for (int i = 0; i < 2; i++) {
                const int key = 16 * tq + 8 * i + gq;
                const float v = j0 + key < v1r[r] ? z[r][i] : j0 + key < n1r ? 0.f : -INFINITY;
                ps[r * PW + (key & 3) * 16 + (key >> 2)] = v;
            }
        __syncwarp();
        const int bl = lane & 15;
        const float *pr = ps + (lane >> 4) * PW;
        float m = fmaxf(fmaxf(pr[bl], pr[16 + bl]), fmaxf(pr[32 + bl], pr[48 + bl]));
        if (bl > 0) m = fmaxf(m, pr[48 + bl - 1]); /* key 4·bl − 1 */
        if (out_row) {
            pool_out[it * 16] = m;
            if (bl == 15 && it < halo_n) halo_out[it] = pr[48 + 15]; /* key 63 */
        }
    };
    const bf16 *Cg = C1 + (int64_t)g * HD;
    const int64_t cstride = (int64_t)nkv * HD;
    if (jt_load > jt0) {
        uint32_t qf[2][HD / 16][2][2];
        imma_load_q<HD, NW>(qf, Ks, q, ldq, t0, T, g);
        float nl2[2][2][2]; /* −LSE in log2 units of heads 8·nt + 2·tq + j */
#pragma unroll
        for (int r = 0; r < 2; r++)
#pragma unroll
            for (int nt = 0; nt < 2; nt++)
#pragma unroll
                for (int j = 0; j < 2; j++)
                    nl2[r][nt][j] = rv[r] ? -lse[(t0 + 2 * warp + r) * nh + g * 16 + nt * 8 + 2 * tq + j] * LOG2E_F : 0.f;
        const float sl2 = scale * LOG2E_F;
#pragma unroll
        for (int s = 0; s < SC2_STAGES - 1; s++) {
            if (jt0 + s < jt_load) mma_async_rows<HD, NW * 32>(Ks + s * TILE, Cg, cstride, (jt0 + s) * MMA_BK, vmax);
            cp_async_commit();
        }
        int stage = 0;
        const int nload = (int)(jt_load - jt0);
        for (int it = 0; it < nload; it++) {
            cp_async_wait<SC2_STAGES - 2>();
            __syncthreads(); /* tile jt is in; every warp is done with the stage refilled next */
            {
                const int in = it + SC2_STAGES - 1;
                int sn = stage + SC2_STAGES - 1;
                if (sn >= SC2_STAGES) sn -= SC2_STAGES;
                if (in < nload) mma_async_rows<HD, NW * 32>(Ks + sn * TILE, Cg, cstride, (jt0 + in) * MMA_BK, vmax);
                cp_async_commit();
            }
            const bf16 *Kt = Ks + stage * TILE;
            if (++stage == SC2_STAGES) stage = 0;
            float z[2][2] = {{0.f, 0.f}, {0.f, 0.f}};
            if (it * MMA_BK < vwr) {
                float v[2][8]; /* [row][2·mt + h]: sum over the thread's 4 heads, key 16·mt + 8·h + gq */
#pragma unroll
                for (int mt = 0; mt < 4; mt++) {
                    float acc[2][2][4];
                    imma_scores16<HD>(acc, qf, Kt, mt);
#pragma unroll
                    for (int r = 0; r < 2; r++)
#pragma unroll
                        for (int h = 0; h < 2; h++) {
                            float sum = 0.f;
#pragma unroll
                            for (int nt = 0; nt < 2; nt++)
#pragma unroll
                                for (int j = 0; j < 2; j++)
                                    sum += imma_ex2(fmaf(acc[r][nt][2 * h + j], sl2, nl2[r][nt][j]));
                            v[r][2 * mt + h] = sum;
                        }
                }
                /* reduce-scatter over the quad: xor 2 keeps x = 4·(tq>>1) + i, xor 1 keeps x = 2·tq + i */
                const bool b1 = tq & 2, b0 = tq & 1;
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    float w[4];
#pragma unroll
                    for (int i = 0; i < 4; i++) {
                        const float keep = b1 ? v[r][i + 4] : v[r][i], send = b1 ? v[r][i] : v[r][i + 4];
                        w[i] = keep + __shfl_xor_sync(0xffffffffu, send, 2);
                    }
#pragma unroll
                    for (int i = 0; i < 2; i++) {
                        const float keep = b0 ? w[i + 2] : w[i], send = b0 ? w[i] : w[i + 2];
                        z[r][i] = keep + __shfl_xor_sync(0xffffffffu, send, 1);
                    }
                }
            }
            emit(it, z);
        }
        cp_async_wait<0>();
    }
    for (int it = (int)(jt_load - jt0); it < (int)(jt_end - jt0); it++) { /* past every visible key: 0 or −inf */
        float z[2][2] = {{0.f, 0.f}, {0.f, 0.f}};
        emit(it, z);
    }
}

/* k_infllm_score_g16 with the tile loads of imma_async_tile (a fixed 16-byte chunk per thread, 32-bit
 * offsets: ~20 instructions per tile instead of ~145), 16-byte q loads (imma_load_q) and TILES key tiles per
 * block (64: q is staged half as often); same arithmetic in the same order, so bitwise the same scores. */
template <int HD, int NW, int MINB, int TILES>
__global__ void __launch_bounds__(NW * 32, MINB) k_infllm_score_g16x(float *pooled, float *halo, const float *q, int64_t ldq,
                                                             const float *lse, const bf16 *C1, int64_t n1_avail,
                                                             int64_t T, int64_t pos0, int64_t kv_len, int decode,
                                                             int nh, int nkv, int l1, int s1, int block, float scale,
                                                             int64_t nblk_cap, int64_t ntile_cap) {
    constexpr int QP = mma_shape<HD>::QP, TILE = MMA_BK * QP, PW = 80; /* pool buffer row pitch (floats) */
    extern __shared__ uint4 smem_u4[];
    bf16 *Ks = (bf16 *)smem_u4; /* SC2_STAGES tiles of 64 keys; the queries pass through it first */
    __shared__ float pool_s[NW][2 * PW];
    const int g = blockIdx.z;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
    const int64_t t0 = (int64_t)blockIdx.x * (2 * NW);
    const int64_t t_last = t0 + 2 * NW - 1 < T - 1 ? t0 + 2 * NW - 1 : T - 1;
    const int64_t qb_last = (pos0 + t_last) / block;
    const int64_t jt0 = (int64_t)blockIdx.y * TILES;
    if (jt0 * 16 > qb_last) return; /* no row needs these blocks */
    int64_t jt_end = jt0 + TILES;
    if (jt_end > qb_last / 16 + 1) jt_end = qb_last / 16 + 1;
    const int64_t n1_call = nwin64(kv_len, l1, s1);
    int64_t vmax = infllm_vis(pos0 + t_last, kv_len, decode, l1, s1);
    if (vmax > n1_avail) vmax = n1_avail;
    int64_t jt_load = (vmax + MMA_BK - 1) / MMA_BK; /* tiles [jt0, jt_load) hold visible keys */
    if (jt_load > jt_end) jt_load = jt_end;
    if (jt_load < jt0) jt_load = jt0;
    /* per-tile bounds as ints relative to the first key of the block's range (< 64·(TILES + 1)) */
    const int64_t jbase = jt0 * MMA_BK;
    auto rel = [&](int64_t x) { x -= jbase; return x < 0 ? 0 : x > 64 * (TILES + 1) ? 64 * (TILES + 1) : (int)x; };
    int v1r[2];
    bool rv[2];
#pragma unroll
    for (int r = 0; r < 2; r++) {
        const int64_t t = t0 + 2 * warp + r;
        rv[r] = t < T;
        int64_t v = rv[r] ? infllm_vis(pos0 + t, kv_len, decode, l1, s1) : 0;
        v1r[r] = rel(v < vmax ? v : vmax);
    }
    const int n1r = rel(n1_call), vwr = v1r[0] > v1r[1] ? v1r[0] : v1r[1]; /* the warp's keys end at vwr */
    float *ps = pool_s[warp];
    /* this lane's outputs in emit: row lane/16, block lane%16 of each tile */
    const bool out_row = rv[lane >> 4];
    const int64_t tg_out = (t0 + 2 * warp + (lane >> 4)) * nkv + g;
    float *pool_out = pooled + tg_out * nblk_cap + jt0 * 16 + (lane & 15);
    float *halo_out = halo + tg_out * ntile_cap + jt0 + 1;
    const int halo_n = (int)(ntile_cap - 1 - jt0); /* halo of tile jt0 + i exists for i < halo_n */
    /* masks, pooling and stores of tile jt0 + it; z[r][i] = group sum of key 16·tq + 8·i + gq of row r */
    auto emit = [&](int it, float z[2][2]) {
        const int j0 = it * MMA_BK;
        __syncwarp();
#pragma unroll
        for (int r = 0; r < 2; r++)
#pragma unroll
            for (int i = 0; i < 2; i++) {
                const int key = 16 * tq + 8 * i + gq;
                const float v = j0 + key < v1r[r] ? z[r][i] : j0 + key < n1r ? 0.f : -INFINITY;
                ps[r * PW + (key & 3) * 16 + (key >> 2)] = v;
            }
        __syncwarp();
        const int bl = lane & 15;
        const float *pr = ps + (lane >> 4) * PW;
        float m = fmaxf(fmaxf(pr[bl], pr[16 + bl]), fmaxf(pr[32 + bl], pr[48 + bl]));
        if (bl > 0) m = fmaxf(m, pr[48 + bl - 1]); /* key 4·bl − 1 */
        if (out_row) {
            pool_out[it * 16] = m;
            if (bl == 15 && it < halo_n) halo_out[it] = pr[48 + 15]; /* key 63 */
        }
    };
    const bf16 *Cg = C1 + (int64_t)g * HD;
    const int64_t cstride = (int64_t)nkv * HD;
    const unsigned ks_addr = (unsigned)__cvta_generic_to_shared(Ks);
    if (jt_load > jt0) {
        uint32_t qf[2][HD / 16][2][2];
        imma_load_q<HD, NW>(qf, Ks, q, ldq, t0, T, g);
        float nl2[2][2][2]; /* −LSE in log2 units of heads 8·nt + 2·tq + j */
#pragma unroll
        for (int r = 0; r < 2; r++)
#pragma unroll
            for (int nt = 0; nt < 2; nt++)
#pragma unroll
                for (int j = 0; j < 2; j++)
                    nl2[r][nt][j] = rv[r] ? -lse[(t0 + 2 * warp + r) * nh + g * 16 + nt * 8 + 2 * tq + j] * LOG2E_F : 0.f;
        const float sl2 = scale * LOG2E_F;
#pragma unroll
        for (int s = 0; s < SC2_STAGES - 1; s++) {
            if (jt0 + s < jt_load) imma_async_tile<HD, NW * 32>(ks_addr + s * TILE * 2, Cg + (jt0 + s) * MMA_BK * cstride, (int)cstride, (int)(vmax - (jt0 + s) * MMA_BK));
            cp_async_commit();
        }
        const int vrel = (int)(vmax - jbase < 64 * (TILES + 1) ? vmax - jbase : 64 * (TILES + 1)); /* visible rows from jbase */
        int stage = 0;
        const int nload = (int)(jt_load - jt0);
        for (int it = 0; it < nload; it++) {
            cp_async_wait<SC2_STAGES - 2>();
            __syncthreads(); /* tile jt is in; every warp is done with the stage refilled next */
            {
                const int in = it + SC2_STAGES - 1;
                int sn = stage + SC2_STAGES - 1;
                if (sn >= SC2_STAGES) sn -= SC2_STAGES;
                if (in < nload)
                    imma_async_tile<HD, NW * 32>(ks_addr + sn * TILE * 2, Cg + (jt0 + in) * MMA_BK * cstride, (int)cstride,
                                                 vrel - in * MMA_BK);
                cp_async_commit();
            }
            const bf16 *Kt = Ks + stage * TILE;
            if (++stage == SC2_STAGES) stage = 0;
            float z[2][2] = {{0.f, 0.f}, {0.f, 0.f}};
            if (it * MMA_BK < vwr) {
                float v[2][8]; /* [row][2·mt + h]: sum over the thread's 4 heads, key 16·mt + 8·h + gq */
#pragma unroll
                for (int mt = 0; mt < 4; mt++) {
                    float acc[2][2][4];
                    imma_scores16<HD>(acc, qf, Kt, mt);
#pragma unroll
                    for (int r = 0; r < 2; r++)
#pragma unroll
                        for (int h = 0; h < 2; h++) {
                            float sum = 0.f;
#pragma unroll
                            for (int nt = 0; nt < 2; nt++)
#pragma unroll
                                for (int j = 0; j < 2; j++)
                                    sum += imma_ex2(fmaf(acc[r][nt][2 * h + j], sl2, nl2[r][nt][j]));
                            v[r][2 * mt + h] = sum;
                        }
                }
                /* reduce-scatter over the quad: xor 2 keeps x = 4·(tq>>1) + i, xor 1 keeps x = 2·tq + i */
                const bool b1 = tq & 2, b0 = tq & 1;
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    float w[4];
#pragma unroll
                    for (int i = 0; i < 4; i++) {
                        const float keep = b1 ? v[r][i + 4] : v[r][i], send = b1 ? v[r][i] : v[r][i + 4];
                        w[i] = keep + __shfl_xor_sync(0xffffffffu, send, 2);
                    }
#pragma unroll
                    for (int i = 0; i < 2; i++) {
                        const float keep = b0 ? w[i + 2] : w[i], send = b0 ? w[i] : w[i + 2];
                        z[r][i] = keep + __shfl_xor_sync(0xffffffffu, send, 1);
                    }
                }
            }
            emit(it, z);
        }
        cp_async_wait<0>();
    }
    for (int it = (int)(jt_load - jt0); it < (int)(jt_end - jt0); it++) { /* past every visible key: 0 or −inf */
        float z[2][2] = {{0.f, 0.f}, {0.f, 0.f}};
        emit(it, z);
    }
}

template <int HD, int RM>
static int launch_score(cudaStream_t st, float *pooled, float *halo, const float *q, int64_t ldq, const float *lse,
                        const float *C1, int64_t n1_avail, int64_t T, int64_t pos0, int64_t kv_len, int decode,
                        const cu_infllm_dims *d, int64_t nblk_cap, int64_t ntile_cap) {
    typedef att_shape<HD, RM> S;
    size_t smem = sizeof(float) * S::SMEM_FLOATS;
    static bool attr = false;
    if (!attr) {
        cudaFuncSetAttribute(k_infllm_score<HD, RM>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        attr = true;
    }
    int G = d->nh / d->nkv;
    int64_t nblk = (T * G + S::M - 1) / S::M;
    int P = d->block / d->s1;
    int64_t qb_max = (pos0 + T - 1) / d->block;
    int64_t ntiles = (qb_max + 1) * P / ATT_BK + 1; /* tiles holding the starts of blocks 0..qb_max */
    if (ntiles * (int64_t)(ATT_BK / P) > nblk_cap || ntiles + 1 > ntile_cap) return (int)cudaErrorInvalidValue;
    dim3 grid((unsigned)nblk, (unsigned)ntiles, d->nkv);
    k_infllm_score<HD, RM><<<grid, 256, smem, st>>>(pooled, halo, q, ldq, lse, C1, n1_avail, T, pos0, kv_len, decode,
                                                     d->nh, d->nkv, d->l1, d->s1, d->block, d->scale, nblk_cap,
                                                     ntile_cap);
    return LAUNCH_CHECK();
}

template <int HD, int NW, int MINB>
static int launch_score_g16(cudaStream_t st, float *pooled, float *halo, const float *q, int64_t ldq, const float *lse,
                            const void *C1, int64_t n1_avail, int64_t T, int64_t pos0, int64_t kv_len, int decode,
                            const cu_infllm_dims *d, int64_t nblk_cap, int64_t ntile_cap) {
    constexpr int smem = (int)sizeof(bf16) * SC2_STAGES * MMA_BK * mma_shape<HD>::QP;
    static bool attr = false;
    if (!attr) {
        cudaFuncSetAttribute(k_infllm_score_g16<HD, NW, MINB>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
        attr = true;
    }
    int64_t ntiles = ((pos0 + T - 1) / d->block + 1) * 4 / ATT_BK + 1;
    if (ntiles * (int64_t)(ATT_BK / 4) > nblk_cap || ntiles + 1 > ntile_cap) return (int)cudaErrorInvalidValue;
    dim3 grid((unsigned)((T + 2 * NW - 1) / (2 * NW)), (unsigned)((ntiles + SC2_TILES - 1) / SC2_TILES), d->nkv);
    k_infllm_score_g16<HD, NW, MINB><<<grid, NW * 32, smem, st>>>(pooled, halo, q, ldq, lse, (const bf16 *)C1, n1_avail,
                                                                  T, pos0, kv_len, decode, d->nh, d->nkv, d->l1, d->s1,
                                                                  d->block, d->scale, nblk_cap, ntile_cap);
    return LAUNCH_CHECK();
}

/* sm_90a, head dim a multiple of 64 (infllm_wgmma.cuh): 8 warps = 2 warpgroups = 8 rows per block, one row
 * per warp, TILES key tiles per block through three cp.async stages (128-byte swizzle), one __syncthreads
 * per tile. wgmma m64n64k16 × HD/16 per tile, issued one tile ahead on two accumulator sets (the loop is
 * unrolled by two so both stay static), so a warp's exps of tile i overlap the tensor cores' work on tile
 * i + 1. A finished tile leaves lane (g, t) the exps of heads g, g + 8 for keys 8i + 2t (+1); the head
 * pair is added, then a reduce-scatter over the 8 lanes of a column group (xor 16, 8, 4: 14 shuffles)
 * leaves lane (g, t) the group sums of keys 8g + 2t and 8g + 2t + 1; pooling as in k_infllm_score_g16.
 * ST stages, DP ≤ ST − 1 tiles loading ahead: the tile that arrives at step i was issued DP steps earlier
 * into the stage the tensor cores read at step i − 1 (retired by every warp before step i's barrier).
 */
template <int HD, int MINB, int TILES, int ST, int DP>
__global__ void __launch_bounds__(256, MINB) k_infllm_score_wg(float *pooled, float *halo, const float *q, int64_t ldq,
                                                              const float *lse, const bf16 *C1, int64_t n1_avail,
                                                              int64_t T, int64_t pos0, int64_t kv_len, int decode, int nh,
                                                              int nkv, int l1, int s1, int block, float scale,
                                                              int64_t nblk_cap, int64_t ntile_cap) {
#if IWG_OK
    constexpr int NW = 8, NT = 256, TB = IWG_TILE_BYTES(HD);
    extern __shared__ uint4 smem_u4[];
    /* stages at a 1024-byte aligned shared address (the swizzle pattern repeats every 1024 bytes) */
    const unsigned sraw = (unsigned)__cvta_generic_to_shared(smem_u4);
    const unsigned ks_addr = (sraw + 1023u) & ~1023u;
    bf16 *Kgen = (bf16 *)((char *)smem_u4 + (ks_addr - sraw));
    __shared__ float pool_s[NW][64 + 32]; /* [64 keys][32 dummy store targets] per warp */
    const int g = blockIdx.z;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
    const int64_t t0 = (int64_t)blockIdx.x * NW;
    const int64_t t_last = t0 + NW - 1 < T - 1 ? t0 + NW - 1 : T - 1;
    const int64_t qb_last = (pos0 + t_last) / block;
    const int64_t jt0 = (int64_t)blockIdx.y * TILES;
    if (jt0 * 16 > qb_last) return;
    int64_t jt_end = jt0 + TILES;
    if (jt_end > qb_last / 16 + 1) jt_end = qb_last / 16 + 1;
    const int64_t n1_call = nwin64(kv_len, l1, s1);
    int64_t vmax = infllm_vis(pos0 + t_last, kv_len, decode, l1, s1);
    if (vmax > n1_avail) vmax = n1_avail;
    int64_t jt_load = (vmax + MMA_BK - 1) / MMA_BK;
    if (jt_load > jt_end) jt_load = jt_end;
    if (jt_load < jt0) jt_load = jt0;
    const int64_t jbase = jt0 * MMA_BK;
    auto rel = [&](int64_t x) { x -= jbase; return x < 0 ? 0 : x > 64 * (TILES + 1) ? 64 * (TILES + 1) : (int)x; };
    const int64_t t = t0 + warp;
    const bool rv = t < T;
    int v1r;
    const int n1r = rel(n1_call);
    {
        int64_t v = rv ? infllm_vis(pos0 + t, kv_len, decode, l1, s1) : 0;
        v1r = rel(v < vmax ? v : vmax);
    }
    const int64_t tg = t * nkv + g;
    float *ps = pool_s[warp];
    /* no branch on the lane or the warp while a wgmma is in flight (ptxas would serialise them): lanes 16..31
     * repeat lanes 0..15's stores, and a row past T stores into the warp's dummy slots instead */
    float *pool_out = rv ? pooled + tg * nblk_cap + jt0 * 16 + (lane & 15) : ps + 64 + lane;
    const int pool_step = rv ? 16 : 0;
    float *halo_out = rv && (lane & 15) == 15 ? halo + tg * ntile_cap + jt0 + 1 : ps + 64 + lane;
    const int halo_step = rv && (lane & 15) == 15 ? 1 : 0;
    const int halo_n = (int)(ntile_cap - 1 - jt0); /* halo of tile jt0 + i exists for i < halo_n */
    /* the masked group sums z0, z1 of keys k0, k0 + 1 of tile it into the pool buffer, then the tile's 16
     * block maxima and its halo */
    auto emit = [&](int it, int k0, float z0, float z1) {
        const int j0 = it * MMA_BK;
        __syncwarp();
        ps[(k0 & 3) * 16 + (k0 >> 2)] = j0 + k0 < v1r ? z0 : j0 + k0 < n1r ? 0.f : -INFINITY;
        ps[((k0 + 1) & 3) * 16 + ((k0 + 1) >> 2)] = j0 + k0 + 1 < v1r ? z1 : j0 + k0 + 1 < n1r ? 0.f : -INFINITY;
        __syncwarp();
        const int bl = lane & 15;
        float m = fmaxf(fmaxf(ps[bl], ps[16 + bl]), fmaxf(ps[32 + bl], ps[48 + bl]));
        const float prev = ps[bl > 0 ? 47 + bl : 48]; /* key 4·bl − 1 (block 0: itself again) */
        m = fmaxf(m, prev);
        const float h = ps[63]; /* key 63 */
        pool_out[it * pool_step] = m;
        float *hp = it < halo_n ? halo_out + it * halo_step : ps + 64 + lane;
        *hp = h;
    };
    const int mykey = 8 * gq + 2 * tq;
    const bf16 *Cg = C1 + (int64_t)g * HD;
    const int cstride = nkv * HD;
    const int nload = (int)(jt_load - jt0);
    if (nload > 0) {
        uint32_t qa[HD / 16][4];
        iwg_load_q<HD, NW>(qa, Kgen, q, ldq, t0, T, g);
        float nl2[2];
#pragma unroll
        for (int hh = 0; hh < 2; hh++) nl2[hh] = rv ? -lse[t * nh + g * 16 + gq + 8 * hh] * LOG2E_F : 0.f;
        const float sl2 = scale * LOG2E_F;
        const int vrel = (int)(vmax - jbase < 64 * (TILES + 1) ? vmax - jbase : 64 * (TILES + 1));
        auto load = [&](int i) { /* tile jt0 + i into its stage */
            iwg_async_tile<HD, NT>(ks_addr + (i % ST) * TB, Cg + (jt0 + i) * MMA_BK * (int64_t)cstride, cstride,
                                   vrel - i * MMA_BK);
        };
        /* tile i is in shared memory for every thread (and the tile before it fully consumed): load i + DP
         * (one commit group per tile, empty past the last, so DP − 1 groups may stay pending) */
        auto arrive = [&](int i) {
            cp_async_wait<DP - 1>();
            iwg_proxy_fence(); /* the tile's bytes, written by cp.async, are read by the tensor cores' proxy */
            __syncthreads();
            if (i + DP < nload) load(i + DP);
            cp_async_commit();
        };
        /* exps of a finished tile, summed over the group, into the pool */
        auto consume = [&](int it, const float d[32]) {
            float sv[16];
#pragma unroll
            for (int i = 0; i < 8; i++)
#pragma unroll
                for (int j = 0; j < 2; j++)
                    sv[2 * i + j] = imma_ex2(fmaf(d[4 * i + j], sl2, nl2[0])) + imma_ex2(fmaf(d[4 * i + 2 + j], sl2, nl2[1]));
            const bool b2 = gq & 4, b1 = gq & 2, b0 = gq & 1;
            float w[8], u[4];
#pragma unroll
            for (int k = 0; k < 8; k++) {
                const float keep = b2 ? sv[k + 8] : sv[k], send = b2 ? sv[k] : sv[k + 8];
                w[k] = keep + __shfl_xor_sync(0xffffffffu, send, 16);
            }
#pragma unroll
            for (int k = 0; k < 4; k++) {
                const float keep = b1 ? w[k + 4] : w[k], send = b1 ? w[k] : w[k + 4];
                u[k] = keep + __shfl_xor_sync(0xffffffffu, send, 8);
            }
            float z[2];
#pragma unroll
            for (int k = 0; k < 2; k++) {
                const float keep = b0 ? u[k + 2] : u[k], send = b0 ? u[k] : u[k + 2];
                z[k] = keep + __shfl_xor_sync(0xffffffffu, send, 4);
            }
            emit(it, mykey, z[0], z[1]);
        };
        static_assert(DP >= 1 && DP < ST, "a stage for each tile in flight plus the one being read");
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
        /* tile it is complete in acc0 at the top of every iteration; the product of the next tile is issued
         * before the exps of this one and retired at the end of the step, so nothing is in flight across a
         * branch or the loop's back edge (ptxas serialises wgmma otherwise). The next product is issued even
         * past the last tile (on a stale stage, never emitted) to keep the steps branch-free. */
        for (int it = 0; it < nload; it += 2) {
            arrive(it + 1);
            iwg_issue_tile<HD>(acc1, qa, ks_addr + ((it + 1) % ST) * TB);
            consume(it, acc0);
            iwg_wait<0>();
            iwg_reg_fence32(acc1);
            if (it + 1 >= nload) break;
            arrive(it + 2);
            iwg_issue_tile<HD>(acc0, qa, ks_addr + ((it + 2) % ST) * TB);
            consume(it + 1, acc1);
            iwg_wait<0>();
            iwg_reg_fence32(acc0);
        }
        cp_async_wait<0>();
    }
    for (int it = nload; it < (int)(jt_end - jt0); it++) /* past every visible key: 0 or −inf */
        emit(it, mykey, 0.f, 0.f);
#else
    __trap(); /* launched only on sm_90, whose code this build lacks (build with sm_90a) */
#endif
}

template <int HD, int MINB, int TILES, int ST, int DP>
static int launch_score_wg(cudaStream_t st, float *pooled, float *halo, const float *q, int64_t ldq, const float *lse,
                           const void *C1, int64_t n1_avail, int64_t T, int64_t pos0, int64_t kv_len, int decode,
                           const cu_infllm_dims *d, int64_t nblk_cap, int64_t ntile_cap) {
    constexpr int smem = ST * IWG_TILE_BYTES(HD) + 1024; /* + room to align the stages to 1024 bytes */
    static bool attr = false;
    if (!attr) {
        cudaFuncSetAttribute(k_infllm_score_wg<HD, MINB, TILES, ST, DP>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
        attr = true;
    }
    int64_t ntiles = ((pos0 + T - 1) / d->block + 1) * 4 / ATT_BK + 1;
    if (ntiles * (int64_t)(ATT_BK / 4) > nblk_cap || ntiles + 1 > ntile_cap) return (int)cudaErrorInvalidValue;
    dim3 grid((unsigned)((T + 7) / 8), (unsigned)((ntiles + TILES - 1) / TILES), d->nkv);
    k_infllm_score_wg<HD, MINB, TILES, ST, DP><<<grid, 256, smem, st>>>(pooled, halo, q, ldq, lse, (const bf16 *)C1, n1_avail, T,
                                                                pos0, kv_len, decode, d->nh, d->nkv, d->l1, d->s1,
                                                                d->block, d->scale, nblk_cap, ntile_cap);
    return LAUNCH_CHECK();
}

/* Writes 1 when the code the driver loaded for this device is the sm_90a build (wgmma available). */
__global__ void k_probe_sm90a(int *out) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    *out = 1;
#else
    *out = 0;
#endif
}

/* host: the wgmma kernel needs an sm_90 device running this build's sm_90a code (a build with only
 * compute_90 / sm_90 code would reach the kernel's trap: there the probe answers 0 and g16x runs; the LSE
 * asks too, for k_infllm_lse_wg). The probe runs once, outside any stream capture (while capturing, the
 * answer is "no" until it has run). */
bool infllm_wg_ok(cudaStream_t st) {
    static int ok = -1;
    if (ok >= 0) return ok == 1;
    int dev = 0, major = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) !=
                                                   cudaSuccess || major != 9) {
        cudaGetLastError();
        ok = 0;
        return false;
    }
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    if (cudaStreamIsCapturing(st, &cs) != cudaSuccess || cs != cudaStreamCaptureStatusNone) return false;
    int *d = NULL, h = 0;
    if (cudaMalloc((void **)&d, sizeof(int)) == cudaSuccess) {
        k_probe_sm90a<<<1, 1, 0, st>>>(d);
        if (cudaMemcpyAsync(&h, d, sizeof(int), cudaMemcpyDeviceToHost, st) != cudaSuccess ||
            cudaStreamSynchronize(st) != cudaSuccess)
            h = 0;
        cudaFree(d);
    }
    cudaGetLastError();
    ok = h == 1;
    return ok == 1;
}

/* The kernel of the released model's prefill: k_infllm_score_wg on sm_90 (head dim a multiple of 64),
 * k_infllm_score_g16x elsewhere. SALA_S1_VAR (or cu_infllm_score_variant, for the tests and the bench)
 * picks one on the same card: 0 = k_infllm_score_g16 (the reference the tests compare with), 1 =
 * k_infllm_score_g16x, 4 (default) = k_infllm_score_wg where it can run (3 stages, one tile loading ahead;
 * 2 ahead in 3 stages or 3 in 4 measured no faster on the H100). */
static int s1_var = -1;
extern "C" void cu_infllm_score_variant(int v) { s1_var = v; }
template <int HD, int NW, int MINB, int TILES>
static int launch_score_g16x(cudaStream_t st, float *pooled, float *halo, const float *q, int64_t ldq, const float *lse,
                             const void *C1, int64_t n1_avail, int64_t T, int64_t pos0, int64_t kv_len, int decode,
                             const cu_infllm_dims *d, int64_t nblk_cap, int64_t ntile_cap) {
    constexpr int smem = (int)sizeof(bf16) * SC2_STAGES * MMA_BK * mma_shape<HD>::QP;
    static bool attr = false;
    if (!attr) {
        cudaFuncSetAttribute(k_infllm_score_g16x<HD, NW, MINB, TILES>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
        attr = true;
    }
    int64_t ntiles = ((pos0 + T - 1) / d->block + 1) * 4 / ATT_BK + 1;
    if (ntiles * (int64_t)(ATT_BK / 4) > nblk_cap || ntiles + 1 > ntile_cap) return (int)cudaErrorInvalidValue;
    dim3 grid((unsigned)((T + 2 * NW - 1) / (2 * NW)), (unsigned)((ntiles + TILES - 1) / TILES), d->nkv);
    k_infllm_score_g16x<HD, NW, MINB, TILES><<<grid, NW * 32, smem, st>>>(
        pooled, halo, q, ldq, lse, (const bf16 *)C1, n1_avail, T, pos0, kv_len, decode, d->nh, d->nkv, d->l1, d->s1,
        d->block, d->scale, nblk_cap, ntile_cap);
    return LAUNCH_CHECK();
}

template <int HD>
static int score_rm(cudaStream_t st, float *pooled, float *halo, const float *q, int64_t ldq, const float *lse,
                    const void *C1, int64_t n1_avail, int64_t T, int64_t pos0, int64_t kv_len, int decode,
                    const cu_infllm_dims *d, int64_t nblk_cap, int64_t ntile_cap) {
    int G = d->nh / d->nkv;
    if (d->bf16 && G == 16 && d->block / d->s1 == 4 && T >= 16) { /* the released model's prefill */
        if (s1_var < 0) {
            const char *e = getenv("SALA_S1_VAR");
            s1_var = e ? atoi(e) : 4;
        }
#define S1_ARGS st, pooled, halo, q, ldq, lse, C1, n1_avail, T, pos0, kv_len, decode, d, nblk_cap, ntile_cap
        if (s1_var == 0) return launch_score_g16<HD, 8, 2>(S1_ARGS);
        if (s1_var != 1 && HD % 64 == 0 && infllm_wg_ok(st)) {
            constexpr int H = HD % 64 == 0 ? HD : 64;
            return launch_score_wg<H, 2, 64, 3, 1>(S1_ARGS);
        }
        return launch_score_g16x<HD, 8, 2, 64>(S1_ARGS);
#undef S1_ARGS
    }
    if (d->bf16) {
        /* G == 16: 8 warps = 8 rows per block share each key tile and sum their heads in registers;
         * other group sizes: 4 warps, the exps staged in shared memory */
        const int nw = G == 16 ? 8 : 4, M = 16 * nw;
        size_t smem = sizeof(bf16) * (size_t)((M + 2 * MMA_BK) * mma_shape<HD>::QP) +
                      (G == 16 ? 0 : sizeof(float) * (size_t)M * (ATT_BK + 1));
        static size_t attr4 = 0, attr8 = 0;
        if (nw == 8 && smem > attr8)
            cudaFuncSetAttribute(k_infllm_score_mma<HD, 8>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
                attr8 = smem;
        if (nw == 4 && smem > attr4)
            cudaFuncSetAttribute(k_infllm_score_mma<HD, 4>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem),
                attr4 = smem;
        int64_t nblk = (T * G + M - 1) / M;
        int P = d->block / d->s1;
        int64_t ntiles = ((pos0 + T - 1) / d->block + 1) * P / ATT_BK + 1;
        if (ntiles * (int64_t)(ATT_BK / P) > nblk_cap || ntiles + 1 > ntile_cap) return (int)cudaErrorInvalidValue;
        dim3 grid((unsigned)nblk, (unsigned)((ntiles + SC_TILES - 1) / SC_TILES), d->nkv);
        if (nw == 8)
            k_infllm_score_mma<HD, 8><<<grid, 256, smem, st>>>(pooled, halo, q, ldq, lse, (const bf16 *)C1, n1_avail, T,
                                                               pos0, kv_len, decode, d->nh, d->nkv, d->l1, d->s1,
                                                               d->block, d->scale, nblk_cap, ntile_cap);
        else
            k_infllm_score_mma<HD, 4><<<grid, 128, smem, st>>>(pooled, halo, q, ldq, lse, (const bf16 *)C1, n1_avail, T,
                                                               pos0, kv_len, decode, d->nh, d->nkv, d->l1, d->s1,
                                                               d->block, d->scale, nblk_cap, ntile_cap);
        return LAUNCH_CHECK();
    }
    if (G <= 16 && T * G <= 16)
        return launch_score<HD, 1>(st, pooled, halo, q, ldq, lse, (const float *)C1, n1_avail, T, pos0, kv_len, decode, d, nblk_cap,
                                   ntile_cap);
    return launch_score<HD, 4>(st, pooled, halo, q, ldq, lse, (const float *)C1, n1_avail, T, pos0, kv_len, decode, d, nblk_cap,
                               ntile_cap);
}

extern "C" int cu_infllm_score(void *stream, float *pooled, float *halo, const float *q, int64_t ldq, const float *lse,
                               const void *C1, int64_t n1_avail, int64_t T, int64_t pos0, int64_t kv_len, int decode,
                               const cu_infllm_dims *d, int64_t nblk_cap, int64_t ntile_cap) {
    cudaStream_t st = (cudaStream_t)stream;
    if (T <= 0) return 0;
    int G = d->nkv > 0 ? d->nh / d->nkv : 0;
    /* whole rows per block: G must divide 64; pooling windows must tile 64 keys */
    if (G <= 0 || d->nh % d->nkv || 64 % G || d->block % d->s1 || ATT_BK % (d->block / d->s1))
        return (int)cudaErrorInvalidValue;
    switch (d->hd) {
    case 16: return score_rm<16>(st, pooled, halo, q, ldq, lse, C1, n1_avail, T, pos0, kv_len, decode, d, nblk_cap, ntile_cap);
    case 32: return score_rm<32>(st, pooled, halo, q, ldq, lse, C1, n1_avail, T, pos0, kv_len, decode, d, nblk_cap, ntile_cap);
    case 64: return score_rm<64>(st, pooled, halo, q, ldq, lse, C1, n1_avail, T, pos0, kv_len, decode, d, nblk_cap, ntile_cap);
    case 128: return score_rm<128>(st, pooled, halo, q, ldq, lse, C1, n1_avail, T, pos0, kv_len, decode, d, nblk_cap, ntile_cap);
    default: return (int)cudaErrorInvalidValue;
    }
}
