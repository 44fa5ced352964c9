/* test_cuda_topk.c — the prefill top-k (cu_infllm_topk) on synthetic pooled scores against the selection
 * rule of infllm_select_row (MODEL.md §4 step 4): forced blocks (b < init, the local window) +inf, the halo
 * key pooled into each later tile's first block, descending score with ties to the lower block index,
 * output ascending. Exact: the block lists must be equal, for both kernels — k_topk_reg (variant 1, the
 * default up to 16384 candidates: keys in registers) and variant 0 (the radix kernel, the only one for
 * longer rows).
 *
 * Score sets aim at each path of k_topk_reg: continuous scores (a few survivors above the lower bound,
 * ranked in shared memory), scores within 1e-4 of each other, few distinct values and all-equal rows (the bound is the threshold, many
 * equals at it), −inf entries, many +inf entries (ties at the top), scores quantized to 1/256 (ties at a
 * threshold above the bound), rows whose high scores (8 levels) all sit in 16 of the 512 threads' columns
 * (more than 512 survivors: the bitwise search over all keys), negative scores; row lengths from below the
 * budget to 16384 candidates (every PER), launches whose rows differ in length, decode rows, and rows past
 * 16384.
 *
 * SALA_TOPK_BENCH=1 (after the tests) or 2 (alone): the time of both kernels on the last 2048-row chunk at
 * kv 128K, 512K and 1M (released shape: 2 groups, budget 96, block 64, halo every 16 blocks), for several
 * score sets, with the kernels' outputs compared (exact) on that data. */
#ifndef SALA_CUDA
#include <stdio.h>
int main(void) {
    printf("SKIP (built without CUDA)\n0 passed, 0 failed\n");
    return 0;
}
#else
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/ops.h"
#include "cuda/kernels.h"
#include "test.h"
#include "cuda_test.h"

/* infllm_topk.cu (internal): 0 the radix kernel, otherwise (−1, the default) k_topk_reg where it applies */
void cu_infllm_topk_variant(int v);

enum { K_FEW, K_EQUAL, K_ZERO_NINF, K_UNIFORM, K_COLUMNS, K_DECAY, K_QUANT, K_MANY_INF, K_NEG, K_NARROW, K_COUNT };
static const char *kind_name[K_COUNT] = {"few values", "all equal", "0 / -inf", "uniform", "16 hot columns",
                                         "decay + noise", "quantized 1/256", "2% +inf", "negative",
                                         "1 + 1e-4 u"};

/* score of block b of a row whose last block is qb */
static float synth(int kind, int64_t b, int64_t qb) {
    static const float few[4] = {0.0f, 0.25f, 0.5f, 1.0f};
    const float u = 0.5f + 0.5f * frand(); /* [0, 1) */
    switch (kind) {
    case K_FEW: return u < 0.05f ? -INFINITY : few[(int)(u * 3.999f)];
    case K_EQUAL: return 0.75f;
    case K_ZERO_NINF: return u < 0.1f ? -INFINITY : 0.0f;
    case K_UNIFORM: return u < 0.02f ? 0.0f : u;
    case K_COLUMNS: return (b % 512) < 16 ? 1.0f + floorf(u * 8.0f) / 8.0f : u;
    case K_DECAY: return expf(-(float)(qb - b) / 3000.0f) * (0.5f + u) + 0.05f * u;
    case K_QUANT: return floorf(u * 256.0f) / 256.0f;
    case K_MANY_INF: return u < 0.02f ? INFINITY : u;
    case K_NEG: return -u - (u < 0.5f ? 1.0f : 0.0f);
    default: return 1.0f + 1e-4f * u;
    }
}

typedef struct {
    int block, s1, nkv, budget, init, local;
} tk_shape;

static const tk_shape released = {64, 16, 2, 96, 1, 32};

static cu_infllm_dims tk_dims(const tk_shape *s) {
    cu_infllm_dims gd;
    memset(&gd, 0, sizeof gd);
    gd.nkv = s->nkv, gd.block = s->block, gd.s1 = s->s1, gd.init_blocks = s->init, gd.local_blocks = s->local;
    gd.budget = s->budget;
    return gd;
}

/* one launch of T rows from pos0 with both kernels, each against the CPU rule */
static void topk_case(const char *what, const tk_shape *sh, int64_t pos0, int64_t T, int kind) {
    const cu_infllm_dims gd = tk_dims(sh);
    const int NBT = 64 / (sh->block / sh->s1), budget = sh->budget, nkv = sh->nkv;
    const int64_t maxc = (pos0 + T - 1) / sh->block + 1, nblk_cap = maxc + 5, ntile_cap = maxc / NBT + 3, R = T * nkv;
    float *pool = malloc(sizeof(float) * (size_t)(R * nblk_cap)), *halo = malloc(sizeof(float) * (size_t)(R * ntile_cap));
    for (int64_t i = 0; i < R; i++) {
        const int64_t qb = (pos0 + i / nkv) / sh->block;
        for (int64_t b = 0; b < nblk_cap; b++) pool[i * nblk_cap + b] = synth(kind, b, qb);
        for (int64_t j = 0; j < ntile_cap; j++) halo[i * ntile_cap + j] = synth(kind, j * NBT, qb);
    }
    /* the CPU rule */
    ref_sc *list = malloc(sizeof(ref_sc) * (size_t)maxc);
    int32_t *cb = malloc(sizeof(int32_t) * (size_t)(R * budget)), *cn = malloc(sizeof(int32_t) * (size_t)R);
    for (int64_t i = 0; i < R; i++) {
        const int64_t qb = (pos0 + i / nkv) / sh->block, nc = qb + 1;
        const float *pv = pool + i * nblk_cap, *hl = halo + i * ntile_cap;
        int32_t *o = cb + i * budget;
        int n = 0;
        if (nc <= budget) {
            for (int64_t b = 0; b < nc; b++) o[n++] = (int32_t)b;
        } else {
            for (int64_t b = 0; b < nc; b++) {
                float v = pv[b];
                if (b % NBT == 0 && b > 0) v = fmaxf(v, hl[b / NBT]);
                if (b < sh->init || (b >= qb - sh->local && b <= qb)) v = INFINITY;
                list[b].s = v, list[b].b = (int32_t)b;
            }
            qsort(list, (size_t)nc, sizeof *list, cmp_ref_sc);
            for (int j = 0; j < budget; j++) o[n++] = list[j].b;
            qsort(o, (size_t)n, sizeof(int32_t), cmp_i32_t);
        }
        cn[i] = n;
    }
    int32_t *gb = malloc(sizeof(int32_t) * (size_t)(R * budget)), *gn = malloc(sizeof(int32_t) * (size_t)R);
    static const int vars[2] = {1, 0};
    for (int vi = 0; vi < 2; vi++) {
        const int var = vars[vi];
        /* fresh copies: the radix kernel's global-memory path overwrites the scores with keys */
        float *dpool = up(pool, sizeof(float) * (size_t)(R * nblk_cap)), *dhalo = up(halo, sizeof(float) * (size_t)(R * ntile_cap));
        int32_t *dblk = dnew(sizeof(int32_t) * (size_t)(R * budget)), *dnsel = dnew(sizeof(int32_t) * (size_t)R);
        cu_infllm_topk_variant(var);
        int e = cu_infllm_topk(NULL, dblk, dnsel, dpool, dhalo, T, pos0, &gd, nblk_cap, ntile_cap);
        cu_infllm_topk_variant(-1);
        CHECK(e == 0 && cu_sync() == 0, "topk %s: %s", what, cu_error_str(e));
        CHECK(down(gb, dblk, sizeof(int32_t) * (size_t)(R * budget)) == 0);
        CHECK(down(gn, dnsel, sizeof(int32_t) * (size_t)R) == 0);
        int64_t bad = 0;
        for (int64_t i = 0; i < R; i++) {
            if (gn[i] != cn[i] || memcmp(gb + i * budget, cb + i * budget, sizeof(int32_t) * (size_t)cn[i])) {
                if (bad++ < 3) {
                    fprintf(stderr, "  %s (variant %d) row %lld group %lld: gpu %d blocks, cpu %d:", what, var,
                            (long long)(pos0 + i / nkv), (long long)(i % nkv), gn[i], cn[i]);
                    for (int j = 0; j < cn[i] && j < 12; j++)
                        fprintf(stderr, " %d/%d", j < gn[i] ? gb[i * budget + j] : -1, cb[i * budget + j]);
                    fprintf(stderr, "\n");
                }
            }
        }
        printf("   %-52s variant %d: %lld selections (up to %lld candidates), %lld differ\n", what, var, (long long)R,
               (long long)maxc, (long long)bad);
        CHECK(bad == 0, "topk %s variant %d: %lld selections differ", what, var, (long long)bad);
        cu_free(dpool), cu_free(dhalo), cu_free(dblk), cu_free(dnsel);
    }
    free(pool), free(halo), free(list), free(cb), free(cn), free(gb), free(gn);
}

static void test_topk_kinds(void) {
    const tk_shape tiny = {64, 16, 1, 9, 1, 4}, blk1 = {1, 1, 2, 96, 1, 32}, blk16 = {16, 16, 2, 96, 1, 32};
    for (int kind = 0; kind < K_COUNT; kind++) {
        char nm[96];
#define CASE(sh, p0, T, fmt)                                                                                           \
    do {                                                                                                               \
        snprintf(nm, sizeof nm, "%s: " fmt, kind_name[kind]);                                                         \
        topk_case(nm, sh, p0, T, kind);                                                                                \
    } while (0)
        CASE(&released, 1048576 - 33, 33, "1M, 33 rows (PER 32)");
        CASE(&released, 1048575, 1, "decode 1M");
        CASE(&released, 524288 - 40, 40, "512K (PER 16)");
        CASE(&released, 262144 - 64 * 9 - 5, 64 * 9 + 5, "256K, 10 row lengths (PER 8)");
        CASE(&released, 4096 * 64 - 128, 256, "rows of 4095..4098 candidates (PER 16)");
        CASE(&released, 4096 * 64 - 192, 128, "rows of 4094..4096 candidates (PER 8)");
        CASE(&released, 70000, 70, "70K (PER 4)");
        CASE(&tiny, 70000, 70, "70K, budget 9");
        CASE(&blk1, 0, 300, "block 1, rows 0..299 (PER 1)");
        CASE(&released, 96 * 64 - 64, 192, "rows around the budget");
        CASE(&blk16, 300000, 40, "block 16: > 16384 candidates (radix only)");
        CASE(&blk16, 300000, 1, "decode > 16384 candidates (radix only)");
#undef CASE
    }
}

/* SALA_TOPK_BENCH: both kernels on the last 2048-row chunk; the outputs compared */
static void bench_topk(void) {
    const char *be = getenv("SALA_TOPK_BENCH");
    if (!be || (*be != '1' && *be != '2')) return;
    static const int64_t kvs[3] = {131072, 524288, 1048576};
    static const int kinds[6] = {K_UNIFORM, K_DECAY, K_NARROW, K_QUANT, K_FEW, K_COLUMNS};
    const tk_shape *sh = &released;
    const cu_infllm_dims gd = tk_dims(sh);
    const int budget = sh->budget, nkv = sh->nkv, reps = 20;
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0), cudaEventCreate(&e1);
    for (int ci = 0; ci < 3; ci++) {
        const int64_t kv = kvs[ci], T = 2048, pos0 = kv - T, R = T * nkv;
        const int64_t nblk_cap = (kv + 63) / 64 + 18, ntile_cap = nblk_cap / 16 + 3;
        double cand = 0; /* candidates read per launch (bytes = 4 ×) */
        for (int64_t t = 0; t < T; t++) cand += (double)nkv * ((pos0 + t) / 64 + 1);
        float *pool = malloc(sizeof(float) * (size_t)(R * nblk_cap)), *halo = malloc(sizeof(float) * (size_t)(R * ntile_cap));
        float *dpool = cu_malloc(sizeof(float) * (size_t)(R * nblk_cap)), *dhalo = cu_malloc(sizeof(float) * (size_t)(R * ntile_cap));
        int32_t *dblk[2], *dnsel[2];
        for (int v = 0; v < 2; v++) {
            dblk[v] = dnew(sizeof(int32_t) * (size_t)(R * budget));
            dnsel[v] = dnew(sizeof(int32_t) * (size_t)R);
        }
        int32_t *hb[2], *hn[2];
        for (int v = 0; v < 2; v++) {
            hb[v] = malloc(sizeof(int32_t) * (size_t)(R * budget));
            hn[v] = malloc(sizeof(int32_t) * (size_t)R);
        }
        for (int ki = 0; ki < 6; ki++) {
            const int kind = kinds[ki];
            for (int64_t i = 0; i < R; i++) {
                const int64_t qb = (pos0 + i / nkv) / 64;
                for (int64_t b = 0; b <= qb; b++) pool[i * nblk_cap + b] = synth(kind, b, qb);
                for (int64_t j = 0; j * 16 <= qb; j++) halo[i * ntile_cap + j] = synth(kind, j * 16, qb);
            }
            cu_h2d(dpool, pool, sizeof(float) * (size_t)(R * nblk_cap));
            cu_h2d(dhalo, halo, sizeof(float) * (size_t)(R * ntile_cap));
            double ms[2];
            for (int v = 0; v < 2; v++) {
                cu_infllm_topk_variant(v);
                int e = cu_infllm_topk(NULL, dblk[v], dnsel[v], dpool, dhalo, T, pos0, &gd, nblk_cap, ntile_cap);
                CHECK(e == 0 && cu_sync() == 0, "bench: %s", cu_error_str(e));
                cudaEventRecord(e0, 0);
                for (int r = 0; r < reps; r++) cu_infllm_topk(NULL, dblk[v], dnsel[v], dpool, dhalo, T, pos0, &gd, nblk_cap, ntile_cap);
                cudaEventRecord(e1, 0);
                cudaEventSynchronize(e1);
                float f = 0;
                cudaEventElapsedTime(&f, e0, e1);
                ms[v] = f / reps;
                CHECK(down(hb[v], dblk[v], sizeof(int32_t) * (size_t)(R * budget)) == 0);
                CHECK(down(hn[v], dnsel[v], sizeof(int32_t) * (size_t)R) == 0);
            }
            cu_infllm_topk_variant(-1);
            int64_t bad = 0;
            for (int64_t i = 0; i < R; i++)
                bad += hn[0][i] != hn[1][i] || memcmp(hb[0] + i * budget, hb[1] + i * budget, sizeof(int32_t) * (size_t)hn[0][i]);
            printf("   bench topk kv %7lld rows %lld..%lld, %-16s radix %.3f ms, registers %.3f ms (%.2fx, %.0f GB/s), "
                   "%lld selections differ\n",
                   (long long)kv, (long long)pos0, (long long)(pos0 + T - 1), kind_name[kind], ms[0], ms[1], ms[0] / ms[1],
                   4.0 * cand / (ms[1] * 1e6), (long long)bad);
            CHECK(bad == 0, "bench kv %lld %s: %lld selections differ", (long long)kv, kind_name[kind], (long long)bad);
        }
        for (int v = 0; v < 2; v++) cu_free(dblk[v]), cu_free(dnsel[v]), free(hb[v]), free(hn[v]);
        cu_free(dpool), cu_free(dhalo);
        free(pool), free(halo);
    }
    cudaEventDestroy(e0), cudaEventDestroy(e1);
}

int main(void) {
    if (!gpu_ready()) {
        printf("SKIP (needs SALA_TEST_CUDA=1 and a GPU)\n0 passed, 0 failed\n");
        return 0;
    }
    const char *be = getenv("SALA_TOPK_BENCH");
    if (!be || *be != '2') TEST_RUN(test_topk_kinds);
    TEST_RUN(bench_topk);
    TEST_END();
}
#endif
