/* attn_seg.cu — InfLLM-v2 sparse prefill attention (G = 16, bf16 cache, sm_90+) with the rows walking the
 * KV cache in step, so that a block read from HBM serves every row that chose it while it sits in L2.
 *
 * Why: with long contexts (512K–1M keys, 0.5–1 GB of K+V per layer against 50 MB of L2) and top-k lists
 * that differ from row to row, k_attn_rows_tma (attn_mma.cu) has each warp stream its own row's blocks
 * in ascending order at its own pace, so the rows in flight are spread over the whole cache and each
 * 64-key block comes from HBM about as many times as rows chose it in the chunk (≈ 8 at 1M).
 *
 * k_attn_seg<HD, W>: the same per-row work as k_attn_rows_tma (one warp per row, 16 heads = one m16 tile;
 * init / window / blocks chosen by ≥ thr of the CTA's rows as CTA-wide 64-key TMA tiles first, then the
 * row's own blocks through its ring of 16-key TMA chunks), with these differences:
 *   1. W = 16 (or 8) rows per CTA, one CTA per SM, persistent over the (group, row set) items in
 *      group-major order: with 2048 rows and W = 16 the 128 CTAs of a pass hold every row of one KV
 *      group, i.e. the whole chunk walks that group's half of the cache together.
 *   2. Pacing: the cache is cut into segments of 2^sshift blocks. Before a warp starts a private block
 *      in segment s it waits (spinning on shared memory) until no warp of its CTA is still before
 *      segment s − slack, then until no CTA's published progress (gprog: pass · nsegv + the segment of
 *      its slowest warp, one int per CTA in global memory) is before s − gslack, or gtmo ns have passed
 *      (the timeout makes CTAs that are not resident harmless). The band of the cache the whole pass reads
 *      stays a few segments wide, i.e. in L2. Pacing changes only timing, never results. Without the
 *      pacing across CTAs they drift apart and most of the gain is lost (H100, 1M: 2.143 ms against 1.754
 *      with it; pacing within the CTA alone is worth less than that).
 *   3. The q fragments live in shared memory (16-byte reads per k-step) instead of registers, and the
 *      64-key tiles are softmaxed in halves of 32 keys, so that O (64 floats), the scores (16) and
 *      addressing fit the 128 registers of 512 threads (ptxas: 108 bytes of spills at hd 128); 16 rings
 *      are 2 chunks deep (shared memory), 8 are 4 deep.
 * The rows' blocks are taken in ascending order (the lists are ascending) after the shared entries, and
 * the probabilities are formed per 32-key half: results match k_attn_rows_tma up to summation order and
 * the bf16 rounding of the probabilities (≈ 1e-4 on the bench's 2048-row chunks; tests/test_cuda_attention.c
 * checks every mode against the CPU reference).
 * Measured (H100, run 2 of helper sp2, one 2048-row chunk of the 9B shape, tests/test_cuda_attention with
 * SALA_ATTN_BENCH=1, random independent lists), k_attn_rows_tma → k_attn_seg<128, 16> with segments of 256
 * blocks, slack 2, gslack 4: kv 128K 1.289 → 1.442 ms (slower: the cache nearly fits L2 and one CTA of 16
 * warps per SM with 2-deep rings streams less), 512K 1.926 → 1.515 (1.27×), 1M 2.317 → 1.619 (1.43×).
 * Hence the default (SALA_SPARSE_TMA unset) takes k_attn_seg only from 256K keys on (SALA_SPARSE_SEG_MIN).
 * Env (timing experiments): SALA_SPARSE_SEG = log2 of the segment in blocks (8), SALA_SPARSE_SLACK = the
 * slack within a CTA in segments (2; large: none), SALA_SPARSE_GSLACK = the slack across CTAs (4; < 0:
 * none), SALA_SPARSE_GTMO = its timeout in ns, SALA_SPARSE_THR = shared-entry threshold, SALA_SPARSE_GRID
 * caps the grid (tests: several items per CTA), SALA_SPARSE_SEG_MIN = the fewest keys for the default. */
#include <limits.h>
#include <stdlib.h>

#include "cuda/attn_rows.cuh"

template <int HD, int W> struct seg_shape {
    static constexpr int NS = 3;                    /* stages of the shared tiles */
    static constexpr int TILEB = MMA_BK * HD * 2;   /* bytes of one 64-key K or V tile */
    static constexpr int CHUNKB = ROWS_RK * HD * 2; /* bytes of one 16-key private chunk */
    static constexpr int RD = W >= 16 ? 2 : ROWS_D; /* private ring depth (chunks): 16 rings of 4 fit */
    static constexpr int TILESB = 2 * NS * TILEB > W *RD *CHUNKB ? 2 * NS *TILEB : W *RD *CHUNKB;
    static constexpr int QB = W * (HD / 16) * 512; /* q fragments: [W][HD/16][32 lanes] × 16 bytes */
};

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
static __device__ __forceinline__ uint4 lds128(unsigned a) {
    uint4 v;
    asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(a));
    return v;
}
static __device__ __forceinline__ void sts128(unsigned a, uint4 v) {
    asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};\n" ::"r"(a), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w)
                 : "memory");
}

/* tma_qk16 with the q fragments read from shared memory (qa: this lane's fragment of k-step 0; +512 per step) */
template <int HD>
static __device__ __forceinline__ void seg_qk16(unsigned qa, unsigned base, int half, int n0, float Sa[4],
                                                float Sb[4]) {
    const int lane = threadIdx.x & 31;
    const unsigned row = base + (unsigned)(n0 + (lane & 7) + ((lane >> 4) << 3)) * 128u;
    const unsigned y = (unsigned)((((lane >> 3) & 1) ^ (lane & 7)) << 4);
#pragma unroll
    for (int kk = 0; kk < HD / 16; kk++) {
        const uint4 qv = lds128(qa + (unsigned)kk * 512u);
        const uint32_t qf[4] = {qv.x, qv.y, qv.z, qv.w};
        uint32_t r[4];
        ldsm_x4_a(r, row + (unsigned)((kk >> 2) * half) + ((unsigned)(32 * (kk & 3)) ^ y));
        uint32_t b0[2] = {r[0], r[1]}, b1[2] = {r[2], r[3]};
        mma16816(Sa, qf, b0);
        mma16816(Sb, qf, b1);
    }
}
#endif

template <int HD, int W>
__global__ void __launch_bounds__(W * 32, 1)
    k_attn_seg(const __grid_constant__ rows_tmaps maps, float *o, int64_t ldo, const float *q, int64_t ldq,
               const int32_t *blocks, const int32_t *nsel, int64_t T, int64_t pos0, int nkv, int budget, float scale,
               int nbw, int thr0, int sshift, int slack, int *gprog, int gslack, int nsegv, int gtmo) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    typedef seg_shape<HD, W> SH;
    constexpr int RD = SH::RD, NT = 32 * W, NS = SH::NS, TILEB = SH::TILEB, CHUNKB = SH::CHUNKB, NH = HD / 64;
    extern __shared__ uint4 smem_u4[];
    uint8_t *tiles = (uint8_t *)(((uintptr_t)smem_u4 + 1023) & ~(uintptr_t)1023);
    unsigned *bm = (unsigned *)tiles;                  /* setup only: [W][nbw] bitmaps of the rows' blocks */
    const unsigned qs = smem_u32(tiles + SH::TILESB);  /* [W][HD/16][32] uint4 q fragments */
    int *lists = (int *)(tiles + SH::TILESB + SH::QB); /* [W][budget] each row's blocks, then its private ones */
    int *eb = lists + W * budget;                      /* [W][budget] shared entries by first row */
    unsigned *em = (unsigned *)(eb + W * budget);
    int *sb = (int *)(em + W * budget); /* [≤ W·budget] shared entries, concatenated */
    unsigned *sm = (unsigned *)(sb + W * budget);
    __shared__ int nl[W], np[W], ne[W];
    __shared__ volatile int wseg[W]; /* segment of each warp's current private block (INT_MAX: done) */
    __shared__ __align__(8) unsigned long long fullb[NS], ringb[W][RD];
    __shared__ int pub;             /* the progress this CTA last published to gprog */
    __shared__ volatile int gmin_c; /* the smallest progress of all CTAs, as last read */

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gq = lane >> 2, tq = lane & 3;
    if (threadIdx.x == 0) {
        for (int s = 0; s < NS; s++)
            mbar_init(smem_u32(&fullb[s]), 1);
        for (int s = 0; s < W * RD; s++)
            mbar_init(smem_u32(&ringb[s / RD][s % RD]), 1);
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
        pub = -1, gmin_c = 0;
    }
    const float sl2 = scale * LOG2E_F;
    const unsigned tb = smem_u32(tiles);
    const unsigned qa = qs + (unsigned)(warp * (HD / 16) * 512 + lane * 16);
    const int nsets = (int)((T + W - 1) / W), nitems = nsets * nkv, Ti = (int)T, p0 = (int)pos0;
    int tbase = 0; /* shared tiles consumed so far: stage (tbase + j) % NS, parity ((tbase + j) / NS) & 1 */

    for (int item = blockIdx.x; item < nitems; item += gridDim.x) {
        const int g = item / nsets, t0 = (item % nsets) * W;
        const int nvalid = Ti - t0 < W ? Ti - t0 : W;
        const int thr = thr0 > nvalid ? nvalid : thr0;
        int ns = 0;
        __syncthreads(); /* the previous item is done with the tiles, rings and lists */
        /* progress (for the CTAs' pacing) in passes over the cache: pass · nsegv + segment */
        const int vbase = (item / gridDim.x) * nsegv;
        if (gprog && threadIdx.x == 0 && vbase > pub) {
            pub = vbase;
            *(volatile int *)&gprog[blockIdx.x] = vbase;
        }
        /* the rows' lists, their shared entries and private ones (rows_prepare); each warp's first segment */
        ns = rows_prepare<W, NT>(lists, eb, em, bm, sb, sm, nl, np, ne, nsel, blocks, t0, nvalid, nkv, g, budget, nbw,
                                 thr);
        if (lane == 0) wseg[warp] = warp < nvalid && np[warp] > 0 ? lists[warp * budget] >> sshift : INT_MAX;
        /* the bitmaps' generic writes before the copy engine writes the same bytes */
        asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
        __syncthreads();

        auto issue_tile = [&](int s, int b) {
            const unsigned bar = smem_u32(&fullb[s]), dst = tb + (unsigned)(s * 2 * TILEB);
            mbar_expect_tx(bar, 2u * TILEB);
#pragma unroll
            for (int h = 0; h < NH; h++) {
                tma_load3(dst + h * MMA_BK * 128, &maps.k64, bar, h * 64, g, b * MMA_BK);
                tma_load3(dst + TILEB + h * MMA_BK * 128, &maps.v64, bar, h * 64, g, b * MMA_BK);
            }
        };
        if (threadIdx.x == 0)
            for (int j = 0; j < NS - 1 && j < ns; j++)
                issue_tile((tbase + j) % NS, sb[j]);

        const bool valid = warp < nvalid;
        const int t = t0 + warp, rpos = p0 + t;
        {
            uint32_t qf[HD / 16][4];
            if (valid) {
                rows_q_frags<HD>(q + (int64_t)t * ldq + g * 16 * HD, qf);
            } else {
#pragma unroll
                for (int kk = 0; kk < HD / 16; kk++)
                    qf[kk][0] = qf[kk][1] = qf[kk][2] = qf[kk][3] = 0u;
            }
#pragma unroll
            for (int kk = 0; kk < HD / 16; kk++)
                sts128(qa + (unsigned)kk * 512u, make_uint4(qf[kk][0], qf[kk][1], qf[kk][2], qf[kk][3]));
        }
        float O[HD / 8][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
#pragma unroll
        for (int dt = 0; dt < HD / 8; dt++)
            O[dt][0] = O[dt][1] = O[dt][2] = O[dt][3] = 0.f;

        /* 3. shared entries: CTA-wide 64-key tiles through NS stages, one barrier per tile */
        if (ns > 0) {
            for (int j = 0; j < ns; j++) {
                const int stage = (tbase + j) % NS;
                mbar_wait(smem_u32(&fullb[stage]), (unsigned)(((tbase + j) / NS) & 1));
                __syncthreads(); /* everyone is done with entry j − 1, whose stage is refilled now */
                if (threadIdx.x == 0 && j + NS - 1 < ns)
                    issue_tile((tbase + j + NS - 1) % NS, sb[j + NS - 1]);
                const int k0 = sb[j] * MMA_BK;
                if ((sm[j] >> warp) & 1u) {
                    const unsigned Ks = tb + (unsigned)(stage * 2 * TILEB), Vs = Ks + TILEB;
#pragma unroll 1
                    for (int h = 0; h < 2; h++) { /* two halves of 32 keys (scores in 16 registers) */
                        float S[4][4];
#pragma unroll
                        for (int nt = 0; nt < 4; nt++)
                            S[nt][0] = S[nt][1] = S[nt][2] = S[nt][3] = 0.f;
#pragma unroll
                        for (int c = 0; c < 2; c++)
                            seg_qk16<HD>(qa, Ks, MMA_BK * 128, (2 * h + c) * ROWS_RK, S[2 * c], S[2 * c + 1]);
                        if (k0 + 32 * h + 31 > rpos)
                            rows_causal(S, k0 + 32 * h, rpos);
                        rows_softmax<HD>(S, m, l, O, sl2);
#pragma unroll
                        for (int c = 0; c < 2; c++)
                            tma_pv16<HD>(S[2 * c], S[2 * c + 1], Vs, MMA_BK * 128, (2 * h + c) * ROWS_RK, O);
                    }
                }
            }
            tbase += ns;
            __syncthreads(); /* the rings below reuse the stages */
        }

        /* 4. the row's private entries, paced by segment: the warp's own ring of 16-key chunks (slot s of
         * fill f: parity f & 1; 8 chunks per block and D | 8, so every item starts at parity 0 again) */
        const int n = valid ? np[warp] : 0;
        if (n > 0) {
            const unsigned ring = tb + (unsigned)(warp * RD * CHUNKB);
            const int *pl = lists + warp * budget;
            auto issue = [&](int slot, int b, int sub) { /* chunk sub (0-3: K keys 16·sub.., 4-7: V) of block b */
                                                         if (lane == 0) {
                                                             const unsigned bar = smem_u32(&ringb[warp][slot]),
                                                                            dst = ring + (unsigned)(slot * CHUNKB);
                                                             mbar_expect_tx(bar, (unsigned)CHUNKB);
#pragma unroll
                                                             for (int h = 0; h < NH; h++)
                                                                 tma_load3(dst + h * ROWS_RK * 128,
                                                                           sub < 4 ? &maps.k16 : &maps.v16, bar, h * 64,
                                                                           g, b * MMA_BK + (sub & 3) * ROWS_RK);
                                                         }
            };
            /* wait until block b's segment is at most `slack` past the CTA's slowest warp, then (gprog) at most
             * `gslack` past the slowest CTA's published progress or until gtmo ns have passed (warp-uniform) */
            auto pace = [&](int b) {
                const int s = b >> sshift;
                __syncwarp();
                if (lane == 0)
                    wseg[warp] = s;
                __syncwarp();
                int v;
                for (;;) {
                    v = lane < W ? wseg[lane] : INT_MAX;
#pragma unroll
                    for (int off = 16; off > 0; off >>= 1)
                        v = min(v, __shfl_xor_sync(0xffffffffu, v, off));
                    if (s - slack <= v)
                        break;
                    __nanosleep(200);
                }
                if (!gprog)
                    return;
                if (lane == 0 && vbase + v > pub && atomicMax(&pub, vbase + v) < vbase + v)
                    *(volatile int *)&gprog[blockIdx.x] = vbase + v; /* this CTA's slowest warp */
                const int want = vbase + s - gslack;
                if (want <= gmin_c)
                    return;
                unsigned long long t0g;
                asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0g));
                for (;;) {
                    int gm = INT_MAX;
                    for (int c = lane; c < (int)gridDim.x; c += 32)
                        gm = min(gm, *(volatile int *)&gprog[c]);
#pragma unroll
                    for (int off = 16; off > 0; off >>= 1)
                        gm = min(gm, __shfl_xor_sync(0xffffffffu, gm, off));
                    if (lane == 0 && gm > gmin_c)
                        gmin_c = gm;
                    if (want <= gm)
                        break;
                    unsigned long long tg;
                    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(tg));
                    if (tg - t0g > (unsigned long long)gtmo)
                        break;
                    __nanosleep(500);
                }
            };
            /* chunk c of a block: half h = c / 4 (keys 32h..), K for c % 4 < 2 else V; sub = its 16-key chunk
             * in issue's numbering (0-3 K, 4-7 V) */
            auto sub_of = [](int c) { return ((c & 2) << 1) | (c & 1) | ((c & 4) >> 1); };
            pace(pl[0]);
#pragma unroll
            for (int c = 0; c < RD - 1; c++)
                issue(c, pl[0], sub_of(c));
            float S[4][4];
            for (int p = 0; p < n; p++) {
#pragma unroll 1
                for (int h = 0; h < 2; h++) { /* chunk 8p + 4h + c4: slot c4 % RD, parity ((4h + c4) / RD) & 1 */
#pragma unroll
                    for (int c4 = 0; c4 < 4; c4++) {
                        const int c = 4 * h + c4;
                        __syncwarp(); /* every lane is done with the slot refilled now */
                        {
                            const int c2 = c + RD - 1, pp = p + c2 / 8;
                            if (pp < n) {
                                if (c2 % 8 == 0)
                                    pace(pl[pp]);
                                issue((c4 + RD - 1) % RD, pl[pp], sub_of(c2 % 8));
                            }
                        }
                        mbar_wait(smem_u32(&ringb[warp][c4 % RD]), (unsigned)(((4 * h + c4) / RD) & 1));
                        const unsigned sl = ring + (unsigned)((c4 % RD) * CHUNKB);
                        const int j = c4 & 1;
                        if ((c4 & 2) == 0) {
#pragma unroll
                            for (int i = 0; i < 4; i++)
                                S[2 * j][i] = S[2 * j + 1][i] = 0.f;
                            seg_qk16<HD>(qa, sl, ROWS_RK * 128, 0, S[2 * j], S[2 * j + 1]);
                            if (j == 1) {
                                const int k0 = pl[p] * MMA_BK + 32 * h;
                                if (k0 + 31 > rpos)
                                    rows_causal(S, k0, rpos);
                                rows_softmax<HD>(S, m, l, O, sl2);
                            }
                        } else {
                            tma_pv16<HD>(S[2 * j], S[2 * j + 1], sl, ROWS_RK * 128, 0, O);
                        }
                    }
                }
            }
            __syncwarp();
            if (lane == 0)
                wseg[warp] = INT_MAX;
        }
        if (valid) {
#pragma unroll
            for (int r = 0; r < 2; r++) {
                const float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;
                float *orow = o + (int64_t)t * ldo + (g * 16 + gq + 8 * r) * HD;
#pragma unroll
                for (int dt = 0; dt < HD / 8; dt++)
                    orow[dt * 8 + 2 * tq] = O[dt][2 * r] * inv, orow[dt * 8 + 2 * tq + 1] = O[dt][2 * r + 1] * inv;
            }
        }
    }
    if (gprog) { /* done: nobody waits for this CTA */
        __syncthreads();
        if (threadIdx.x == 0)
            *(volatile int *)&gprog[blockIdx.x] = INT_MAX;
    }
#endif
}

static int env_int(const char *name, int dflt) {
    const char *e = getenv(name);
    return e && *e ? atoi(e) : dflt;
}

template <int HD, int W>
static int launch_seg(cudaStream_t st, float *o, int64_t ldo, const float *q, int64_t ldq, const void *K, const void *V,
                      const int32_t *blocks, const int32_t *nsel, int64_t T, int64_t pos0, int nkv, int budget,
                      float scale, int force) {
    typedef seg_shape<HD, W> SH;
    static int ok = -1;
    if (ok < 0) {
        int dev = 0, major = 0;
        cudaGetDevice(&dev);
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
        cudaFuncAttributes fa;
        ok = major >= 9 && cudaFuncGetAttributes(&fa, k_attn_seg<HD, W>) == cudaSuccess && fa.ptxVersion >= 90 &&
             fa.binaryVersion >= 90 && tma_encoder() != NULL;
        cudaGetLastError();
    }
    if (ok != 1)
        return -1;
    const int64_t nkeys = pos0 + T;
    const int nbw = (int)(((nkeys + MMA_BK - 1) / MMA_BK + 31) / 32);
    if ((size_t)W * nbw * 4 > (size_t)SH::TILESB || nkeys > INT32_MAX - 2 * MMA_BK)
        return -1;
    if (((uintptr_t)K | (uintptr_t)V) & 15)
        return -1;
    const size_t smem = 1024 + (size_t)SH::TILESB + SH::QB + (size_t)W * budget * 4 * 5;
    if (smem > smem_optin())
        return -1;
    const int64_t nsets = (T + W - 1) / W, nitems = nsets * nkv;
    const int sms = cu_sm_count();
    /* too few rows to fill the GPU, or a cache that nearly fits L2: the 4-row kernel */
    if (!force && (nitems < sms || nkeys < env_int("SALA_SPARSE_SEG_MIN", 262144)))
        return -1;
    rows_tmaps maps;
    if (tma_encode(&maps.k64, K, HD, nkv, nkeys, MMA_BK) || tma_encode(&maps.v64, V, HD, nkv, nkeys, MMA_BK) ||
        tma_encode(&maps.k16, K, HD, nkv, nkeys, ROWS_RK) || tma_encode(&maps.v16, V, HD, nkv, nkeys, ROWS_RK))
        return -1;
    static size_t attr = 0;
    if (smem > attr) {
        cudaFuncSetAttribute(k_attn_seg<HD, W>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        attr = smem;
    }
    /* one CTA per SM; when a group's row sets fit, a whole number of groups per pass */
    int64_t grid = nitems <= sms ? nitems : (nsets <= sms ? nsets * (sms / nsets) : sms);
    const int gcap = env_int("SALA_SPARSE_GRID", 0);
    if (gcap > 0 && grid > gcap)
        grid = gcap;
    int sshift = env_int("SALA_SPARSE_SEG", 8), slack = env_int("SALA_SPARSE_SLACK", 2);
    sshift = sshift < 0 ? 0 : sshift > 24 ? 24 : sshift;
    slack = slack < 0 ? 0 : slack; /* ≥ 0: the slowest warp never waits (no deadlock) */
    /* the CTAs' published progress (one int per CTA, kept between calls; stale entries only loosen the
     * pacing); SALA_SPARSE_GSLACK < 0 turns the pacing across CTAs off */
    const int gslack = env_int("SALA_SPARSE_GSLACK", 4), gtmo = env_int("SALA_SPARSE_GTMO", 20000);
    static int *gprog = NULL;
    static int gprog_n = 0;
    if (gslack >= 0 && gprog_n < grid) {
        if (gprog)
            cudaFree(gprog);
        gprog = NULL, gprog_n = 0;
        if (cudaMalloc(&gprog, sizeof(int) * (size_t)grid) == cudaSuccess &&
            cudaMemset(gprog, 0x7f, sizeof(int) * (size_t)grid) == cudaSuccess)
            gprog_n = (int)grid;
        else
            gprog = NULL;
        cudaGetLastError();
    }
    const int nsegv = (int)(((nkeys + MMA_BK - 1) / MMA_BK) >> sshift) + 2;
    const int thr = env_int("SALA_SPARSE_THR", W / 4 > ROWS_THR ? W / 4 : ROWS_THR);
    k_attn_seg<HD, W><<<(unsigned)grid, W * 32, smem, st>>>(maps, o, ldo, q, ldq, blocks, nsel, T, pos0, nkv, budget,
                                                            scale, nbw, thr, sshift, slack, gslack >= 0 ? gprog : NULL,
                                                            gslack, nsegv, gtmo);
    return LAUNCH_CHECK();
}

/* mode 3: W = 16 rows per CTA, mode 4: W = 8; force: launch even with fewer row sets than SMs or keys.
 * -1 when not for this shape or device (the caller falls back) */
int attn_seg_sparse(cudaStream_t st, int mode, int force, float *o, int64_t ldo, const float *q, int64_t ldq,
                    const void *K, const void *V, const int32_t *blocks, const int32_t *nsel, int64_t T, int64_t pos0,
                    int nkv, int hd, int budget, float scale) {
    if (hd == 128)
        return mode == 4
                   ? launch_seg<128, 8>(st, o, ldo, q, ldq, K, V, blocks, nsel, T, pos0, nkv, budget, scale, force)
                   : launch_seg<128, 16>(st, o, ldo, q, ldq, K, V, blocks, nsel, T, pos0, nkv, budget, scale, force);
    if (hd == 64)
        return mode == 4
                   ? launch_seg<64, 8>(st, o, ldo, q, ldq, K, V, blocks, nsel, T, pos0, nkv, budget, scale, force)
                   : launch_seg<64, 16>(st, o, ldo, q, ldq, K, V, blocks, nsel, T, pos0, nkv, budget, scale, force);
    return -1;
}
