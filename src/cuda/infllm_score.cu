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
 * Kernels: k_infllm_score (fp32 mode); in the bf16 mode k_infllm_score_g16 for G = 16, P = 4 and at
 * least 16 rows (infllm_mma.cuh), k_infllm_score_mma for the rest (decode steps, other group sizes). */
#include "cuda/attn_core.cuh"
#include "cuda/infllm_mma.cuh"
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

template <int HD>
static int score_rm(cudaStream_t st, float *pooled, float *halo, const float *q, int64_t ldq, const float *lse,
                    const void *C1, int64_t n1_avail, int64_t T, int64_t pos0, int64_t kv_len, int decode,
                    const cu_infllm_dims *d, int64_t nblk_cap, int64_t ntile_cap) {
    int G = d->nh / d->nkv;
    if (d->bf16 && G == 16 && d->block / d->s1 == 4 && T >= 16) /* the released model's prefill */
        return launch_score_g16<HD, 8, 2>(st, pooled, halo, q, ldq, lse, C1, n1_avail, T, pos0, kv_len, decode, d,
                                          nblk_cap, ntile_cap);
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
