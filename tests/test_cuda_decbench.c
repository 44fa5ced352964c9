/* test_cuda_decbench.c — timings of the decode step's parts on the 9B shape (a measurement, not a check):
 * with SALA_DECBENCH=1 (and SALA_TEST_CUDA=1 on a GPU) it prints, each timed as CUDA graph replays with
 * events (the median of 5 batches of replays):
 *   gemv   each decode GEMV kind alone, and the step's 129 GEMVs (32 layers × w_in, o_proj, gate/up, down,
 *          then lm_head) in one graph, for the GEMV variants given by SALA_DECBENCH_VARS (default "2");
 *   light  the 24 fused Lightning decode kernels alone;
 *   chain  the InfLLM-v2 decode chain of one sparse layer at 8K, 128K and 1M tokens: the whole chain and
 *          each kernel alone (cu_sdec_step_parts), then its marginal cost inside a layer (w_in GEMV, chain,
 *          o_proj, gate/up, down, 8 layers in a graph, minus the same without the chain; the GEMVs evict the
 *          compressed keys from L2 as in the real step);
 *   step   a synthetic whole step (embedding and argmax aside) at 8K and 1M: GEMVs + Lightning + chains;
 *   the chain in a layer and the step are timed for each setting of the early PDL triggers (decode_knobs.h).
 *   timeline (SALA_DECBENCH_TIMELINE=1, or 2 for every GEMV's line; with SALA_DECBENCH_TIMELINE_ONLY=1 nothing
 *          else is timed): the synthetic step at 8K and 1M, then every GEMV block's global-timer stamps in one
 *          replay (cu_gemv_prof): when each GEMV's blocks start, leave their wait, have their operand and end,
 *          and the means by kind.
 * Weights are random bf16 (cu_fill_uniform_bf16), the caches too (their values only move the top-k). By default
 * one weight tensor of each shape serves every layer; SALA_DECBENCH_DISTINCT=1 gives each layer its own (18 GB,
 * as a real model): round 8 found the shared tensors flatter some GEMV changes (staging: the step's GEMVs
 * 6.505 → 6.372 ms shared, 6.533 → 6.527 distinct), so tune the GEMVs with distinct weights.
 * Without SALA_DECBENCH it prints a skip line, so the `kernels` part of gpu-check.sh stays quick. */
#ifndef SALA_CUDA
#include <stdio.h>
int main(void) {
    printf("SKIP (built without CUDA)\n0 passed, 0 failed\n");
    return 0;
}
#else
#include <cuda_runtime.h>
#include <stdint.h>

#include "cpu/ops.h"
#include "cuda/decode_knobs.h"
#include "cuda/kernels.h"
#include "test.h"
#include "cuda_test.h"

/* sparse_decode.cu (for this measurement only) */
int cu_sdec_step_parts(void *stream, float *o, const float *q, const float *k, const float *v, void *K, void *V, void *C1,
                       void *C2, const int64_t *dpos, const cu_infllm_dims *d, const cu_sdec_plan *p, void *work,
                       int parts);
int cu_sdec_stamps(unsigned long long t[8]);
int cu_sdec_stamps4(unsigned long long t[24]);

#define H 4096
#define I 16384
#define VOCAB 73448
#define NL 32
#define HD 128
#define NKV 2
#define LIN_NH 32

static cudaStream_t st;
static int fails;

#define CK(x)                                                                                                   \
    do {                                                                                                        \
        int e_ = (int)(x);                                                                                      \
        if (e_) {                                                                                               \
            fprintf(stderr, "%s:%d: %s -> %d (%s)\n", __FILE__, __LINE__, #x, e_, cudaGetErrorString((cudaError_t)e_)); \
            fails++;                                                                                            \
            return -1;                                                                                          \
        }                                                                                                       \
    } while (0)

typedef int (*enq_fn)(void *ctx);

/* µs per replay of the graph captured from enq (median of 5 batches of `reps`); < 0 on failure */
static double time_graph(enq_fn enq, void *ctx, int reps) {
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
    int e = enq(ctx);
    cudaGraph_t gg = NULL;
    int e2 = (int)cudaStreamEndCapture(st, &gg);
    if (e || e2) {
        fprintf(stderr, "capture failed: %d %d\n", e, e2);
        fails++;
        return -1;
    }
    g = gg;
    CK(cudaGraphInstantiate(&ge, g, 0));
    for (int w = 0; w < 3; w++) CK(cudaGraphLaunch(ge, st));
    CK(cudaStreamSynchronize(st));
    cudaEvent_t a, b;
    cudaEventCreate(&a), cudaEventCreate(&b);
    double t[5];
    for (int r = 0; r < 5; r++) {
        cudaEventRecord(a, st);
        for (int i = 0; i < reps; i++) cudaGraphLaunch(ge, st);
        cudaEventRecord(b, st);
        CK(cudaEventSynchronize(b));
        float ms = 0;
        cudaEventElapsedTime(&ms, a, b);
        t[r] = 1000.0 * ms / reps;
    }
    cudaEventDestroy(a), cudaEventDestroy(b);
    cudaGraphExecDestroy(ge);
    cudaGraphDestroy(g);
    for (int i = 0; i < 5; i++) /* sort, take the median */
        for (int j = i + 1; j < 5; j++)
            if (t[j] < t[i]) {
                double x = t[i];
                t[i] = t[j], t[j] = x;
            }
    return t[2];
}

/* ---- the model's buffers ---- */
typedef struct {
    uint16_t *w_in_l, *w_in_s, *w_o, *w_gu, *w_down, *lm; /* one of each shape; the GEMVs in between evict L2 */
    uint16_t *lw[NL][4]; /* each layer's w_in, w_o, w_gu, w_down: those above, or with SALA_DECBENCH_DISTINCT=1 a
                          * copy of its own, as in a real model (18 GB: the GPU's page tables see the real spread) */
    int distinct;
    float *x, *mix, *o, *logits, *ln, *onorm;
    uint16_t *a;
    float *state[24], *qn, *kn, *inv_freq;
    double *lambda;
    int64_t *dpos;
    /* sparse caches at the largest context */
    uint16_t *K, *V, *C1, *C2;
    void *work;
    cu_infllm_dims d;
    cu_sdec_plan plan;
    int64_t n_max;
    /* what a step enqueues */
    int with_mix, with_gemv, nlayers, only_sparse, chain_parts;
    int64_t n1, n2;
} model;

static const int sparse_at[8] = {0, 9, 16, 17, 22, 29, 30, 31};
static int is_sparse(int l) {
    for (int i = 0; i < 8; i++)
        if (sparse_at[i] == l) return 1;
    return 0;
}

static cu_gemv_op gop(int in, const void *x, const float *w, const float *z, int out, void *y, float alpha, float beta) {
    cu_gemv_op op;
    memset(&op, 0, sizeof op);
    op.in = in, op.out = out, op.x = x, op.w = w, op.z = z, op.eps = 1e-6f, op.div = 1.0f, op.y = y;
    op.alpha = alpha, op.beta = beta;
    return op;
}

static int enq_chain(model *m) {
    return cu_sdec_step_parts(st, m->o, m->mix, m->mix + H, m->mix + H + NKV * HD, m->K, m->V, m->C1, m->C2, m->dpos, &m->d,
                              &m->plan, m->work, m->chain_parts);
}

static int enq_layer(model *m, int l, int sparse) {
    const float r = 0.2f;
    cu_gemv_op op;
    if (m->with_gemv) {
        op = gop(CU_GV_NORM, m->x, m->ln, NULL, CU_GV_STORE, m->mix, 1.0f, 0.0f);
        const uint16_t *w_in = m->distinct ? m->lw[l][0] : sparse ? m->w_in_s : m->w_in_l;
        CK(cu_gemv(st, &op, CU_BF16, w_in, sparse ? 2 * H + 2 * NKV * HD : 4 * H, H));
    }
    if (m->with_mix) {
        if (sparse) CK(enq_chain(m));
        else
            CK(cu_lightning_decode_fused(st, m->o, m->mix, m->mix + H, m->mix + 2 * H, m->state[l % 24], m->lambda, 0.088f,
                                         LIN_NH, HD, m->qn, m->kn, 1e-6f, 1, m->inv_freq, 0, m->dpos, 1));
    }
    if (m->with_gemv) {
        op = gop(CU_GV_GATE, m->o, sparse ? NULL : m->onorm, m->mix + (sparse ? H + 2 * NKV * HD : 3 * H), CU_GV_STORE, m->x,
                 r, 1.0f);
        CK(cu_gemv(st, &op, CU_BF16, m->lw[l][1], H, H));
        op = gop(CU_GV_NORM, m->x, m->ln, NULL, CU_GV_SWIGLU, m->a, 1.0f, 0.0f);
        CK(cu_gemv(st, &op, CU_BF16, m->lw[l][2], 2 * I, H));
        op = gop(CU_GV_PLAIN, m->a, NULL, NULL, CU_GV_STORE, m->x, r, 1.0f);
        CK(cu_gemv(st, &op, CU_BF16, m->lw[l][3], H, I));
    }
    return 0;
}

static int enq_step(void *ctx) {
    model *m = ctx;
    for (int l = 0; l < m->nlayers; l++) {
        const int sp = m->only_sparse ? 1 : is_sparse(l);
        if (enq_layer(m, l, sp)) return -1;
    }
    if (m->with_gemv && !m->only_sparse) {
        cu_gemv_op op = gop(CU_GV_NORM, m->x, m->ln, NULL, CU_GV_STORE, m->logits, 1.0f, 0.0f);
        CK(cu_gemv(st, &op, CU_BF16, m->lm, VOCAB, H));
    }
    return 0;
}

static int enq_chain_only(void *ctx) { return enq_chain((model *)ctx); }

static int enq_light_only(void *ctx) {
    model *m = ctx;
    for (int l = 0; l < 24; l++)
        CK(cu_lightning_decode_fused(st, m->o, m->mix, m->mix + H, m->mix + 2 * H, m->state[l], m->lambda, 0.088f, LIN_NH, HD,
                                     m->qn, m->kn, 1e-6f, 1, m->inv_freq, 0, m->dpos, 1));
    return 0;
}

typedef struct {
    model *m;
    int in, out;
    const uint16_t *W;
    int64_t N, K;
    int n;
    const void *before; /* a gv_one enqueued once before each of the n (NULL: none) */
} gv_one;

static int enq_gv_one(void *ctx) {
    gv_one *g = ctx;
    model *m = g->m;
    for (int i = 0; i < g->n; i++) {
        if (g->before) {
            gv_one b = *(const gv_one *)g->before;
            b.n = 1;
            if (enq_gv_one(&b)) return -1;
        }
        cu_gemv_op op;
        if (g->in == CU_GV_PLAIN) op = gop(CU_GV_PLAIN, m->a, NULL, NULL, CU_GV_STORE, m->x, 0.2f, 1.0f);
        else if (g->in == CU_GV_GATE) op = gop(CU_GV_GATE, m->o, m->onorm, m->mix + 3 * H, CU_GV_STORE, m->x, 0.2f, 1.0f);
        else op = gop(CU_GV_NORM, m->x, m->ln, NULL, g->out, g->out == CU_GV_SWIGLU ? (void *)m->a : (void *)m->mix, 1.0f, 0.0f);
        CK(cu_gemv(st, &op, CU_BF16, g->W, g->N, g->K));
    }
    return 0;
}

static uint16_t *wnew(int64_t n, uint64_t seed) {
    uint16_t *w = cu_malloc(2 * (size_t)n);
    if (w && cu_fill_uniform_bf16(st, w, n, seed, 0.02f)) return NULL;
    return w;
}

static float *fnew(int64_t n, float a) {
    float *h = malloc(sizeof(float) * (size_t)n);
    fill(h, n, a);
    float *d = up(h, sizeof(float) * (size_t)n);
    free(h);
    return d;
}

static int model_make(model *m, int64_t n_max) {
    memset(m, 0, sizeof *m);
    m->n_max = n_max;
    m->w_in_l = wnew((int64_t)4 * H * H, 1);
    m->w_in_s = wnew((int64_t)(2 * H + 2 * NKV * HD) * H, 2);
    m->w_o = wnew((int64_t)H * H, 3);
    m->w_gu = wnew((int64_t)2 * I * H, 4);
    m->w_down = wnew((int64_t)H * I, 5);
    m->lm = wnew((int64_t)VOCAB * H, 6);
    m->distinct = getenv("SALA_DECBENCH_DISTINCT") && *getenv("SALA_DECBENCH_DISTINCT") == '1';
    for (int l = 0; l < NL; l++) {
        uint16_t **w = m->lw[l];
        if (!m->distinct) {
            w[0] = NULL, w[1] = m->w_o, w[2] = m->w_gu, w[3] = m->w_down;
            continue;
        }
        const uint64_t sd = 100 + 8 * (uint64_t)l;
        w[0] = wnew((int64_t)4 * H * H, sd); /* the Lightning shape, the larger: layers 0..7 also run as sparse ones */
        w[1] = wnew((int64_t)H * H, sd + 1), w[2] = wnew((int64_t)2 * I * H, sd + 2), w[3] = wnew((int64_t)H * I, sd + 3);
        if (!w[0] || !w[1] || !w[2] || !w[3]) return -1;
    }
    m->x = fnew(H, 1.0f), m->mix = fnew(4 * H, 1.0f), m->o = fnew(H, 1.0f), m->logits = fnew(VOCAB, 0.f);
    m->ln = fnew(H, 1.0f), m->onorm = fnew(H, 1.0f), m->qn = fnew(HD, 1.0f), m->kn = fnew(HD, 1.0f);
    m->a = wnew(I, 7);
    m->inv_freq = fnew(HD / 2, 0.5f);
    for (int l = 0; l < 24; l++) m->state[l] = fnew((int64_t)LIN_NH * HD * HD, 0.1f);
    double lam[LIN_NH];
    for (int h = 0; h < LIN_NH; h++) lam[h] = 0.99;
    m->lambda = up(lam, sizeof lam);
    int64_t pos = n_max - 1;
    m->dpos = up(&pos, sizeof pos);
    cu_infllm_dims *d = &m->d;
    d->nh = 32, d->nkv = NKV, d->hd = HD, d->l1 = 32, d->s1 = 16, d->l2 = 128, d->s2 = 64, d->block = 64;
    d->init_blocks = 1, d->local_blocks = 32, d->budget = 96, d->scale = 1.0f / sqrtf((float)HD), d->bf16 = 1;
    m->K = wnew(n_max * NKV * HD, 8), m->V = wnew(n_max * NKV * HD, 9);
    m->n1 = (n_max - d->l1) / d->s1 + 1, m->n2 = (n_max - d->l2) / d->s2 + 1;
    m->C1 = wnew(m->n1 * NKV * HD, 10), m->C2 = wnew(m->n2 * NKV * HD, 11);
    CK(cu_sdec_plan_make(&m->plan, d, n_max));
    m->work = cu_malloc((size_t)m->plan.work_bytes);
    if (!m->w_in_l || !m->w_in_s || !m->w_o || !m->w_gu || !m->w_down || !m->lm || !m->K || !m->V || !m->C1 || !m->C2 ||
        !m->work)
        return -1;
    CK(cu_memset(m->work, 0, (size_t)m->plan.work_bytes));
    CK(cu_sync());
    return 0;
}

/* the chain at context n (the caches of n_max are used; the plan is sized for n, as a session of n_ctx n) */
static int set_ctx(model *m, int64_t n) {
    int64_t pos = n - 1;
    CK(cu_h2d(m->dpos, &pos, sizeof pos));
    CK(cu_sdec_plan_make(&m->plan, &m->d, n));
    if (m->plan.work_bytes > 0) { /* fits: the work area of n_max is the largest */
        CK(cu_memset(m->work, 0, (size_t)m->plan.work_bytes));
    }
    return cu_sync();
}

static void bench_gemv(model *m, int var) {
    const double step_bytes = 2.0 * ((double)24 * 4 * H * H + 8.0 * (2 * H + 2 * NKV * HD) * H +
                                     NL * ((double)H * H + 2.0 * I * H + (double)H * I) + (double)VOCAB * H);
    cu_gemv_config(var, -1, -1, -1);
    struct {
        const char *name;
        int in, out;
        const uint16_t *W;
        int64_t N, K;
    } kinds[] = {
        {"w_in lightning NORM", CU_GV_NORM, CU_GV_STORE, m->w_in_l, 4 * H, H},
        {"o_proj GATE", CU_GV_GATE, CU_GV_STORE, m->w_o, H, H},
        {"o_proj PLAIN (bf16 a)", CU_GV_PLAIN, CU_GV_STORE, m->w_o, H, H},
        {"gate/up NORM+SWIGLU", CU_GV_NORM, CU_GV_SWIGLU, m->w_gu, 2 * I, H},
        {"down PLAIN", CU_GV_PLAIN, CU_GV_STORE, m->w_down, H, I},
        {"lm_head NORM", CU_GV_NORM, CU_GV_STORE, m->lm, VOCAB, H},
    };
    /* each kind after a gate/up GEMV (268 MB: the kind's weights come from memory, not L2, and it starts
     * behind a GEMV as in the step): time([gate/up, kind] × 4) − time(gate/up × 4), over 4 */
    gv_one gu = {m, CU_GV_NORM, CU_GV_SWIGLU, m->w_gu, 2 * I, H, 4, NULL};
    const double tgu = time_graph(enq_gv_one, &gu, 5);
    for (int i = 0; i < 6; i++) {
        gv_one g = {m, kinds[i].in, kinds[i].out, kinds[i].W, kinds[i].N, kinds[i].K, 4, &gu};
        double t = (time_graph(enq_gv_one, &g, 5) - tgu) / 4;
        printf("  var %d %-22s N=%6lld K=%6lld: %8.2f us  %.3f TB/s (after gate/up)\n", var, kinds[i].name,
               (long long)kinds[i].N, (long long)kinds[i].K, t, 2.0 * kinds[i].N * kinds[i].K / t / 1e6);
    }
    m->with_gemv = 1, m->with_mix = 0, m->nlayers = NL, m->only_sparse = 0;
    double t = time_graph(enq_step, m, 10);
    printf("step GEMVs var %d: %.3f ms (%.3f GB, %.3f TB/s)\n", var, t / 1000, step_bytes / 1e9, step_bytes / t / 1e6);
    fflush(stdout);
}

/* the whole synthetic step (µs): *ts with the mixers, *tg its GEMVs alone; leaves m set for the whole step */
static void time_step(model *m, int reps, double *ts, double *tg) {
    m->only_sparse = 0, m->nlayers = NL, m->with_gemv = 1, m->with_mix = 1;
    *ts = time_graph(enq_step, m, reps);
    m->with_mix = 0;
    *tg = time_graph(enq_step, m, reps);
    m->with_mix = 1;
}

/* ---- the step's timeline (SALA_DECBENCH_TIMELINE=1): every GEMV block's stamps in the last replay ---- */
static int cmp_u64(const void *a, const void *b) {
    const unsigned long long x = *(const unsigned long long *)a, y = *(const unsigned long long *)b;
    return x < y ? -1 : x > y;
}

static const char *gv_kind(const int *mt) {
    if (mt[0] == VOCAB) return "lm_head";
    if (mt[3] == CU_GV_SWIGLU) return "gate|up";
    if (mt[2] == CU_GV_PLAIN) return "down";
    if (mt[2] == CU_GV_GATE) return "o_proj";
    return mt[0] == 4 * H ? "w_in L" : "w_in S";
}

static void timeline(model *m, int64_t n) {
    enum { NK = 160, BW = 16, BMAX = 1024 };
    static unsigned long long buf[(size_t)NK * BMAX * BW], v[BMAX];
    static int meta[NK][5];
    double ts, tg;
    time_step(m, 10, &ts, &tg);
    printf("step N=%lld: GEMVs + mixers %.3f ms, GEMVs alone %.3f ms\n", (long long)n, ts / 1000, tg / 1000);
    if (cu_gemv_prof(NK)) {
        printf("timeline: no buffer\n");
        return;
    }
    const double t = time_graph(enq_step, m, 2);
    const int nl = cu_gemv_prof_read(buf, meta, NK);
    cu_gemv_prof(0);
    if (nl <= 0) return;
    printf("timeline N=%lld: step %.1f us, %d GEMVs; per GEMV, µs from the first block's entry: entry min/med/max,"
           " wait min/max, operand max, end min/med/max, then dt = end max - the previous end max\n",
           (long long)n, t, nl);
    /* per kind: count, dt, release (wait min - prev end), resident (entry med - prev end), operand (op max -
     * wait max), tail (end max - end med) */
    const char *kinds[6] = {"w_in L", "w_in S", "o_proj", "gate|up", "down", "lm_head"};
    double acc[6][6] = {{0}};
    double t0 = (double)buf[0];
    for (int b = 1; b < meta[0][4]; b++) t0 = (double)buf[(size_t)b * BW] < t0 ? (double)buf[(size_t)b * BW] : t0;
    double prev_end = 0;
    const int every = getenv("SALA_DECBENCH_TIMELINE")[0] == '2';
    for (int i = 0; i < nl; i++) {
        const int nb = meta[i][4];
        const unsigned long long *r = buf + (size_t)i * BMAX * BW;
        double q[4][3]; /* entry, wait, op, end: min med max */
        for (int f = 0; f < 4; f++) {
            for (int b = 0; b < nb; b++) {
                unsigned long long x = r[(size_t)b * BW + f];
                if (f == 3) /* the block's end: its last warp's */
                    for (int w = 1; w < 8; w++) x = r[(size_t)b * BW + 3 + w] > x ? r[(size_t)b * BW + 3 + w] : x;
                v[b] = x;
            }
            qsort(v, (size_t)nb, sizeof v[0], cmp_u64);
            q[f][0] = (v[0] - t0) / 1e3, q[f][1] = (v[nb / 2] - t0) / 1e3, q[f][2] = (v[nb - 1] - t0) / 1e3;
        }
        const double bytes = 2.0 * meta[i][0] * meta[i][1], dt = q[3][2] - prev_end;
        const char *kn = gv_kind(meta[i]);
        int k = 0;
        while (k < 5 && strcmp(kinds[k], kn)) k++;
        if (i > 0) {
            acc[k][0] += 1, acc[k][1] += dt, acc[k][2] += q[1][0] - prev_end, acc[k][3] += q[0][1] - prev_end;
            acc[k][4] += q[2][2] - q[1][2], acc[k][5] += q[3][2] - q[3][1];
        }
        if (every || i < 12 || i >= nl - 2)
            printf("  %3d %-7s %4d blk | entry %8.2f %8.2f %8.2f | wait %8.2f %8.2f | op %8.2f | end %8.2f %8.2f %8.2f"
                   " | dt %6.2f %.2f TB/s\n",
                   i, kn, nb, q[0][0], q[0][1], q[0][2], q[1][0], q[1][2], q[2][2], q[3][0], q[3][1], q[3][2], dt,
                   bytes / dt / 1e6);
        prev_end = q[3][2];
    }
    for (int k = 0; k < 6; k++)
        if (acc[k][0] > 0)
            printf("  mean %-7s (%2.0f): dt %6.2f  wait-min after prev end %5.2f  entry-med after prev end %6.2f  "
                   "operand %5.2f  tail (end max - med) %5.2f us\n",
                   kinds[k], acc[k][0], acc[k][1] / acc[k][0], acc[k][2] / acc[k][0], acc[k][3] / acc[k][0],
                   acc[k][4] / acc[k][0], acc[k][5] / acc[k][0]);
    fflush(stdout);
}

int main(void) {
    if (!gpu_ready() || !getenv("SALA_DECBENCH")) {
        printf("SKIP (a measurement: SALA_DECBENCH=1 and SALA_TEST_CUDA=1)\n");
        (void)test_cur_failed_;
        TEST_END();
    }
    setenv("SALA_SDEC_FUSED", "1", 0); /* plan the fused chain too: chain_parts 15 runs it, 31 the four kernels */
    cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking);
    struct cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, 0);
    printf("GPU %s, %d SMs\n", prop.name, prop.multiProcessorCount);
    cu_gemv_prepare();
    model m;
    const int64_t nmax = 1048576;
    if (model_make(&m, nmax)) {
        printf("setup failed\n");
        test_failed_ = 1;
        TEST_END();
    }
    if (getenv("SALA_DECBENCH_NCU")) { /* for Nsight Compute: "1" one eager chain at 1M (-k regex:k_sdec -c 4);
                                          * "step" one eager whole step (GEMVs, Lightning, chains) at
                                          * SALA_DECBENCH_CTX tokens (default 1M): every kernel of a step once */
        const int whole = !strcmp(getenv("SALA_DECBENCH_NCU"), "step");
        const char *c = getenv("SALA_DECBENCH_CTX");
        const int64_t n = c && atoll(c) > 0 && atoll(c) <= nmax ? atoll(c) : nmax;
        m.chain_parts = 15, m.with_gemv = 1, m.with_mix = 1, m.nlayers = NL, m.only_sparse = 0;
        if (set_ctx(&m, n) || (whole ? enq_step(&m) : enq_chain(&m)) || cu_sync()) test_failed_ = 1;
        else test_passed_ = 1;
        TEST_END();
    }
    const char *vars = getenv("SALA_DECBENCH_VARS");
    if (!vars) vars = "2";
    for (const char *p = vars; *p; p++)
        if (*p >= '0' && *p <= '9') bench_gemv(&m, *p - '0');
    cu_gemv_config(2, -1, -1, -1);
    if (getenv("SALA_GV_VAR")) cu_gemv_config(atoi(getenv("SALA_GV_VAR")), -1, -1, -1);

    double tl = time_graph(enq_light_only, &m, 20);
    printf("light: 24 fused Lightning decode kernels alone %.1f us (%.2f us each)\n", tl, tl / 24);

    const int64_t ctxs[3] = {8192, 131072, 1048576};
    const char *only = getenv("SALA_DECBENCH_CTX"); /* one context (tokens) */
    if (getenv("SALA_DECBENCH_TIMELINE")) { /* the step's GEMV timeline at 8K and 1M (or SALA_DECBENCH_CTX) */
        for (int c = 0; c < 3; c += 2) {
            if ((only && atoll(only) != ctxs[c]) || set_ctx(&m, ctxs[c])) continue;
            m.chain_parts = 31;
            timeline(&m, ctxs[c]);
        }
        if (getenv("SALA_DECBENCH_TIMELINE_ONLY")) {
            test_passed_ = !fails, test_failed_ = !!fails;
            TEST_END();
        }
    }
    for (int c = 0; c < 3; c++) {
        if (only && atoll(only) != ctxs[c]) continue;
        if (set_ctx(&m, ctxs[c])) break;
        const int pm[6] = {1, 2, 4, 8, 31, 15};
        double tp[6];
        for (int i = 0; i < 6; i++) {
            m.chain_parts = pm[i];
            tp[i] = time_graph(enq_chain_only, &m, 50);
        }
        if (getenv("SALA_SDEC_PROF")) { /* the fused kernel's steps, CTA 0's view of the last replay */
            unsigned long long ts[8];
            if (!cu_sdec_stamps(ts))
                printf("fused N=%-8lld steps (us): append %.2f  barrier %.2f  lse+barrier+merge %.2f  score+barrier %.2f"
                       "  select %.2f  attn %.2f  barrier+o %.2f\n",
                       (long long)ctxs[c], (ts[1] - ts[0]) / 1e3, (ts[2] - ts[1]) / 1e3, (ts[3] - ts[2]) / 1e3,
                       (ts[4] - ts[3]) / 1e3, (ts[5] - ts[4]) / 1e3, (ts[6] - ts[5]) / 1e3, (ts[7] - ts[6]) / 1e3);
        }
        printf("chain N=%-8lld alone (L2 warm): append %.1f  lse %.1f  score+topk %.1f  attn %.1f  | four kernels %.1f us"
               "  | fused %.1f us  [ctas lse %d score %d attn %d (clustered: %d warps a CTA); fused grid %d]\n",
               (long long)ctxs[c], tp[0], tp[1], tp[2], tp[3], tp[4], tp[5], m.plan.units2 / 4, m.plan.ctas_score,
               m.plan.ctas_attn, m.plan.attn_cl, m.plan.grid);
        /* the chain as four kernels and fused (cfg[k][2]: chain_parts 31 / 15), and the early PDL trigger
         * (decode_knobs.h) of the Lightning kernel and of the four-kernel chain's attention kernel */
        static const int cfg[4][3] = {{1, 0, 31}, {1, 1, 31}, {0, 0, 15}, {1, 0, 15}};
        for (int k = 0; k < 4; k++) {
            cu_lightning_trig_early(cfg[k][0]), cu_sdec_trig_early(cfg[k][1]);
            char tag[64];
            snprintf(tag, sizeof tag, "%s, trig lt %d sd %d", cfg[k][2] == 15 ? "fused" : "4 kernels", cfg[k][0],
                     cfg[k][1]);
            /* in a layer: 8 sparse layers with and without the chain */
            m.chain_parts = cfg[k][2], m.with_gemv = 1, m.nlayers = 8, m.only_sparse = 1;
            m.with_mix = 1;
            double t1 = time_graph(enq_step, &m, 5);
            m.with_mix = 0;
            double t0 = time_graph(enq_step, &m, 5);
            printf("chain N=%-8lld %s: 8 sparse layers %.1f us, without the chain %.1f us: %.1f us per chain\n",
                   (long long)ctxs[c], tag, t1, t0, (t1 - t0) / 8);
            if (getenv("SALA_SDEC_PROF") && cfg[k][2] == 31) { /* the last layer's four kernels, last replay */
                m.with_mix = 1;
                time_graph(enq_step, &m, 1);
                unsigned long long u[24];
                if (!cu_sdec_stamps4(u)) {
                    printf("  stamps (us from the append's wait):");
                    for (int i = 1; i < 21; i++) printf(" %d:%.2f", i, ((double)u[i] - (double)u[0]) / 1e3);
                    printf("  | select n %llu, survivors %llu, path %llu\n", u[21], u[22], u[23]);
                }
            }
            if (c != 1) {
                double ts, tg;
                time_step(&m, 5, &ts, &tg);
                printf("step N=%-8lld %s: GEMVs + mixers %.3f ms (%.1f tok/s without embed/argmax), GEMVs alone %.3f ms, "
                       "mixers add %.1f us\n",
                       (long long)ctxs[c], tag, ts / 1000, 1e6 / ts, tg / 1000, ts - tg);
            }
            fflush(stdout);
        }
        cu_lightning_trig_early(cu_dec_trig_mask() & 1), cu_sdec_trig_early(cu_dec_trig_mask() & 2);
        fflush(stdout);
    }
    if (fails) test_failed_ = 1;
    else test_passed_ = 1;
    TEST_END();
}
#endif
