/* session.cu — a sequence on the GPU: caches allocated up front for n_ctx tokens, and the forward pass
 * (MODEL.md §3–4) run chunk by chunk, mirroring src/session.c.
 *
 * Memory: one pool per session holds the sparse layers' K/V and compressed keys (act dtype),
 * the Lightning states (fp32), and activations sized by the prefill chunk; nothing is allocated while
 * tokens run. The plan is printed at start-up (verbose) and a session that does not fit the card or
 * mem_limit is refused with SALA_ERR_NOMEM and the plan in the message.
 *
 * A call (cuda_session_eval) is one forward of the reference over n tokens: kv_len = pos + n decides
 * dense vs InfLLM-v2 for every row and InfLLM-v2's visibility counts, whatever the chunking; a
 * single-token call after a prefix is a decode step. Compressed keys are computed from the key cache
 * when a sparse-regime chunk needs them (the windows complete so far), which equals growing them one
 * window at a time.
 *
 * Per layer and chunk: RMSNorm → one fused GEMM for q|k|v|gate → mixer → gate (and Lightning's output
 * norm) → o_proj GEMM adding r·y into the residual (beta = 1) → RMSNorm → fused gate|up GEMM → SwiGLU →
 * down GEMM adding into the residual. In the bf16 mode a prefill chunk's gate|up product and the Lightning
 * layers' q|k|v|z are written in bf16 (ffn_dtype, lin_dtype); the residual stream stays fp32. The GEMM
 * algorithms of a full chunk are chosen by timing when the session is created (tune_gemms).
 *
 * One-row chunks (decode) run the fused forms (s->fuse; SALA_CUDA_FUSE=0 turns them off): the RMSNorms,
 * the gates and SwiGLU are folded into the GEMVs (cu_gemv), the Lightning qk-norm + RoPE into the recurrence
 * kernel, the final norm into the lm_head GEMV: 4 GEMVs + the mixer per layer instead of ~10 kernels. A
 * decode step in the sparse regime whose compressed keys are complete runs each sparse layer's InfLLM-v2
 * chain on the device (sparse_decode.cu, position in s->dpos), so the whole step is one CUDA graph. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/backend_internal.cuh"
#include "cuda/common.cuh"

#define SPLIT_SCRATCH_FLOATS (4ll << 20) /* 16 MiB of split-KV partials */
#define LOGIT_ROWS 64

static int64_t act_size(cu_dtype t) { return t == CU_BF16 ? 2 : 4; }

static cu_infllm_dims make_dims(const cuda_model *cm) {
    const sala_config *c = &cm->cfg;
    cu_infllm_dims d;
    d.nh = c->nh;
    d.nkv = c->nkv;
    d.hd = c->hd;
    d.l1 = c->kernel_size;
    d.s1 = c->kernel_stride;
    d.l2 = 4 * c->kernel_size;
    d.s2 = 4 * c->kernel_stride;
    d.block = c->block_size;
    d.init_blocks = c->init_blocks;
    d.local_blocks = c->window_size / c->block_size;
    d.budget = c->topk + d.local_blocks;
    d.scale = (float)(1.0 / sqrt((double)c->hd));
    d.bf16 = cm->act == CU_BF16;
    return d;
}

typedef struct {
    char *base;
    int64_t off;
} carver;

static void *carve(carver *cv, int64_t bytes) {
    int64_t o = (cv->off + 255) & ~(int64_t)255;
    cv->off = o + bytes;
    return cv->base ? cv->base + o : NULL;
}

/* Lays the session out (or measures it when cv->base is NULL); fills the plan's parts. */
static void session_layout(cuda_session *s, carver *cv, cuda_mem_plan *plan) {
    const cuda_model *cm = s->cm;
    const sala_config *c = &cm->cfg;
    const int64_t C = s->chunk, H = c->hidden, I = c->inter, V = c->vocab, kvrow = (int64_t)c->nkv * c->hd;
    const int64_t es = act_size(cm->act);
    cu_infllm_dims d = make_dims(cm);
    s->n1cap = nwin64(s->n_ctx, d.l1, d.s1) + 1;
    s->n2cap = nwin64(s->n_ctx, d.l2, d.s2) + 1;
    int P = d.block / d.s1;
    s->nblk_cap = (s->n_ctx + d.block - 1) / d.block + 64 / P + 2;
    s->ntile_cap = s->nblk_cap / (64 / P) + 3;
    int64_t off0 = cv->off;
    for (int l = 0; l < c->n_layers; l++) {
        if (!c->sparse[l]) continue;
        s->K[l] = carve(cv, s->n_ctx * kvrow * es);
        s->V[l] = carve(cv, s->n_ctx * kvrow * es);
    }
    plan->kv = cv->off - off0;
    off0 = cv->off;
    for (int l = 0; l < c->n_layers; l++) {
        if (!c->sparse[l]) continue;
        s->C1[l] = carve(cv, s->n1cap * kvrow * es);
        s->C2[l] = carve(cv, s->n2cap * kvrow * es);
    }
    plan->comp = cv->off - off0;
    off0 = cv->off;
    for (int l = 0; l < c->n_layers; l++)
        if (!c->sparse[l]) s->state[l] = (float *)carve(cv, (int64_t)c->lin_nh * c->lin_hd * c->lin_hd * 4);
    plan->state = cv->off - off0;
    off0 = cv->off;
    int64_t awidth = H > cm->qd_max ? H : cm->qd_max;
    if (I > awidth) awidth = I;
    int64_t mwidth = cm->max_nin > 2 * I ? cm->max_nin : 2 * I;
    s->ids = (int32_t *)carve(cv, C * 4);
    s->x = (float *)carve(cv, C * H * 4);
    s->a = carve(cv, C * awidth * es);
    s->mix = (float *)carve(cv, C * mwidth * 4);
    s->o = (float *)carve(cv, C * cm->qd_max * 4);
    if (cm->n_sparse) {
        s->lse = (float *)carve(cv, C * c->nh * 4);
        s->pooled = (float *)carve(cv, C * c->nkv * s->nblk_cap * 4);
        s->halo = (float *)carve(cv, C * c->nkv * s->ntile_cap * 4);
        s->blocks = (int32_t *)carve(cv, C * c->nkv * d.budget * 4);
        s->nsel = (int32_t *)carve(cv, C * c->nkv * 4);
    }
    s->scratch_floats = SPLIT_SCRATCH_FLOATS;
    s->scratch = (float *)carve(cv, s->scratch_floats * 4);
    s->logit_rows = LOGIT_ROWS;
    s->fnorm = carve(cv, (int64_t)s->logit_rows * H * es);
    s->logits = (float *)carve(cv, (int64_t)s->logit_rows * V * 4);
    s->next = (int32_t *)carve(cv, 256);
    s->dpos = (int64_t *)carve(cv, 256);
    /* the decode chain of sparse_decode.cu, when its kernels cover this model */
    const char *de = getenv("SALA_CUDA_DCHAIN");
    s->dchain_ok = cm->n_sparse && !(de && *de == '0') && cu_sdec_plan_make(&s->sdec, &d, s->n_ctx) == 0;
    cudaGetLastError();
    s->sdec_work = s->dchain_ok ? carve(cv, s->sdec.work_bytes) : NULL;
    plan->act = cv->off - off0;
    plan->weights = cm->pool_bytes;
    plan->total = plan->weights + cv->off;
}

static void session_arrays(cuda_session *s, int L) {
    s->K = (void **)xcalloc((size_t)L, sizeof(void *));
    s->V = (void **)xcalloc((size_t)L, sizeof(void *));
    s->C1 = (void **)xcalloc((size_t)L, sizeof(void *));
    s->C2 = (void **)xcalloc((size_t)L, sizeof(void *));
    s->state = (float **)xcalloc((size_t)L, sizeof(float *));
    for (int k = 0; k < 2; k++) s->gexec_set[k] = (cudaGraphExec_t *)xcalloc((size_t)L + 2, sizeof(cudaGraphExec_t));
    s->gexec = s->gexec_set[0];
}

static void session_arrays_free(cuda_session *s) {
    free(s->K);
    free(s->V);
    free(s->C1);
    free(s->C2);
    free(s->state);
    free(s->gexec_set[0]);
    free(s->gexec_set[1]);
}

/* the plan of a session of n_ctx tokens with chunk-token prefill chunks, and the bytes of its pool */
static cuda_mem_plan plan_of(const cuda_model *cm, int64_t n_ctx, int chunk, int64_t *pool_bytes) {
    cuda_session tmp;
    memset(&tmp, 0, sizeof tmp);
    tmp.cm = (cuda_model *)cm;
    tmp.n_ctx = n_ctx;
    tmp.chunk = chunk;
    session_arrays(&tmp, cm->cfg.n_layers);
    carver cv = {NULL, 0};
    cuda_mem_plan plan;
    memset(&plan, 0, sizeof plan);
    session_layout(&tmp, &cv, &plan);
    session_arrays_free(&tmp);
    if (pool_bytes) *pool_bytes = cv.off;
    return plan;
}

/* The prefill chunk when the caller leaves it to the engine: the largest of SALA_CHUNK_GPU_MAX (8192), 4096, ...,
 * SALA_CHUNK_GPU_MIN (512) tokens (and at most n_ctx) whose session fits the card's free memory and mem_limit.
 * Larger chunks make larger GEMMs and fewer launches: H100, 128K-token prefill, chunk 2048 / 4096 / 8192 →
 * 4.725 / 4.634 / 4.506 s (docs/PERF.md), for 1.2 GiB more activations at 8192. */
static int default_chunk(const cuda_model *cm, int64_t n_ctx, int64_t mem_limit) {
    int64_t fr = 0, tot = 0;
    cu_mem_info(&fr, &tot);
    int c = SALA_CHUNK_GPU_MAX;
    for (; c > SALA_CHUNK_GPU_MIN; c /= 2) {
        if (c / 2 >= n_ctx) continue; /* a chunk past the context would only be clamped to it */
        int64_t pool = 0;
        cuda_mem_plan p = plan_of(cm, n_ctx, c, &pool);
        if ((mem_limit <= 0 || p.total <= mem_limit) && pool + (64ll << 20) <= fr) break;
    }
    return c;
}

extern "C" cuda_mem_plan cuda_model_plan(const cuda_model *cm, int64_t n_ctx, int chunk) {
    return plan_of(cm, n_ctx, chunk > 0 ? chunk : SALA_CHUNK_GPU_MAX, NULL);
}

extern "C" int cuda_session_chunk(const cuda_session *cs) { return cs->chunk; }

static const char *plan_text(const cuda_mem_plan *p, char *buf, size_t cap) {
    char a[6][64];
    snprintf(buf, cap, "weights %s + KV %s + compressed keys %s + Lightning states %s + activations %s = %s",
             sala_fmt_bytes(p->weights, a[0], 64), sala_fmt_bytes(p->kv, a[1], 64), sala_fmt_bytes(p->comp, a[2], 64),
             sala_fmt_bytes(p->state, a[3], 64), sala_fmt_bytes(p->act, a[4], 64), sala_fmt_bytes(p->total, a[5], 64));
    return buf;
}

static int tune_gemms(cuda_session *s);

extern "C" sala_status cuda_session_new(cuda_model *cm, int64_t n_ctx, int chunk, int64_t mem_limit,
                                        cuda_session **out) {
    *out = NULL;
    if (n_ctx <= 0) return sala_set_error(SALA_ERR_ARG, "context length must be positive");
    cuda_session *s = (cuda_session *)xcalloc(1, sizeof *s);
    s->cm = cm;
    s->n_ctx = n_ctx;
    s->chunk = chunk > 0 ? chunk : default_chunk(cm, n_ctx, mem_limit);
    if (s->chunk > n_ctx) s->chunk = (int)n_ctx;
    session_arrays(s, cm->cfg.n_layers);
    carver cv = {NULL, 0};
    session_layout(s, &cv, &s->plan);
    s->pool_bytes = cv.off;
    char pt[512];
    plan_text(&s->plan, pt, sizeof pt);
    int64_t fr = 0, tot = 0;
    cu_mem_info(&fr, &tot);
    if (cm->verbose)
        fprintf(stderr, "sala: GPU session of %lld tokens (chunk %d): %s; %.2f GiB free of %.2f GiB\n",
                (long long)n_ctx, s->chunk, pt, fr / 1073741824.0, tot / 1073741824.0);
    sala_status st = SALA_OK;
    if (mem_limit > 0 && s->plan.total > mem_limit) {
        char b[64];
        st = sala_set_error(SALA_ERR_NOMEM, "a GPU session of %lld tokens needs %s, over the limit of %s. HINT: "
                            "lower the context (-c) or the chunk", (long long)n_ctx, pt,
                            sala_fmt_bytes(mem_limit, b, sizeof b));
    } else if (s->pool_bytes + (64ll << 20) > fr) {
        char b[64];
        st = sala_set_error(SALA_ERR_NOMEM, "a GPU session of %lld tokens does not fit: it needs %s, and only %s is "
                            "free on the GPU beside the weights. HINT: lower the context (-c) or the chunk",
                            (long long)n_ctx, pt, sala_fmt_bytes(fr, b, sizeof b));
    }
    if (!st) {
        s->pool = cu_malloc((size_t)s->pool_bytes);
        if (!s->pool)
            st = sala_set_error(SALA_ERR_NOMEM, "cudaMalloc of the session pool failed (%s)", pt);
    }
    if (st) {
        session_arrays_free(s);
        free(s);
        return st;
    }
    cv.base = (char *)s->pool;
    cv.off = 0;
    session_layout(s, &cv, &s->plan);
    if (s->sdec_work) cu_memset(s->sdec_work, 0, (size_t)s->sdec.work_bytes);
    const char *pe = getenv("SALA_CUDA_PROFILE");
    if (pe && *pe == '1') {
        s->prof = (cu_prof *)xcalloc(1, sizeof(cu_prof));
        for (int i = 0; i < PROF_EVENTS; i++) cudaEventCreate(&s->prof->ev[i]);
    }
    cu_gemv_prepare();
    int te = tune_gemms(s);
    if (te) {
        cuda_session_free(s);
        return cu_fail(te, "GEMM tuning");
    }
    const char *ge = getenv("SALA_CUDA_GRAPH");
    s->graph_on = !(ge && *ge == '0');
    /* one-row calls with the norms/gates/SwiGLU fused into the GEMVs (SALA_CUDA_FUSE=0: separate kernels) */
    const char *fe = getenv("SALA_CUDA_FUSE");
    const sala_config *c = &cm->cfg;
    s->fuse = !(fe && *fe == '0') && cu_gemv_supported(cm->act, c->hidden) && cu_gemv_supported(cm->act, c->inter) &&
              cu_gemv_supported(cm->act, cm->qd_max) && c->hidden % 8 == 0;
    for (int l = 0; l < c->n_layers; l++) s->fuse = s->fuse && cu_gemv_supported(cm->act, cm->layers[l].qd);
    cuda_session_reset(s);
    int e = cu_sync();
    if (e) {
        cuda_session_free(s);
        return cu_fail(e, "session setup");
    }
    *out = s;
    return SALA_OK;
}

static void prof_print(cuda_session *s, int64_t n);
static cu_dtype ffn_dtype(const cuda_session *s, int64_t C);
static cu_dtype lin_dtype(const cuda_session *s, const cu_layer *L, int64_t C);

/* The algorithm of each GEMM of a full prefill chunk, chosen by timing cuBLASLt's candidates on this card
 * (cu_gemm_tune) on the session's own buffers (s->a filled with random operands first); SALA_GEMM_TUNE=0
 * keeps the heuristic's first pick. Chunks of another length (the last one of a prompt) use the heuristic. */
static int tune_gemms(cuda_session *s) {
    cuda_model *cm = s->cm;
    const sala_config *c = &cm->cfg;
    const char *te = getenv("SALA_GEMM_TUNE");
    if (cm->act != CU_BF16 || s->chunk <= 4 || (te && *te == '0')) return 0;
    const int64_t C = s->chunk, H = c->hidden, I = c->inter;
    int64_t awidth = H > cm->qd_max ? H : cm->qd_max;
    if (I > awidth) awidth = I;
    cudaStream_t st = cm->stream;
    int e = cu_fill_uniform_bf16(st, (uint16_t *)s->a, C * awidth, 0x5a1a, 1.0f);
    int seen[2] = {0, 0};
    for (int l = 0; l < c->n_layers && !e; l++) {
        const cu_layer *L = &cm->layers[l];
        if (seen[L->sparse]++) continue;
        e = cu_gemm_tune(cm->gemm, st, lin_dtype(s, L, C), L->n_in, s->a, H, L->w_in, C, L->n_in, H, 0.f, "projection");
        if (!e) e = cu_gemm_tune(cm->gemm, st, CU_F32, H, s->a, L->qd, L->w_o, C, H, L->qd, 1.f, "o_proj");
        if (!e && l == 0) {
            e = cu_gemm_tune(cm->gemm, st, ffn_dtype(s, C), 2 * I, s->a, H, L->w_gu, C, 2 * I, H, 0.f, "gate/up");
            if (!e) e = cu_gemm_tune(cm->gemm, st, CU_F32, H, s->a, I, L->w_down, C, H, I, 1.f, "down");
        }
    }
    return e;
}

extern "C" void cuda_session_free(cuda_session *s) {
    if (!s) return;
    if (s->prof) {
        if (s->prof->calls) prof_print(s, 1);
        for (int i = 0; i < PROF_EVENTS; i++) cudaEventDestroy(s->prof->ev[i]);
        free(s->prof);
    }
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < s->nseg_set[k]; i++)
            if (s->gexec_set[k][i]) cudaGraphExecDestroy(s->gexec_set[k][i]);
    cu_free(s->pool);
    session_arrays_free(s);
    free(s);
}

extern "C" void cuda_session_reset(cuda_session *s) {
    const sala_config *c = &s->cm->cfg;
    s->comp_n1 = s->comp_n2 = 0;
    for (int l = 0; l < c->n_layers; l++)
        if (s->state[l])
            cudaMemsetAsync(s->state[l], 0, sizeof(float) * (size_t)c->lin_nh * c->lin_hd * c->lin_hd, s->cm->stream);
}

/* ---- the forward pass ---- */

typedef struct {
    int64_t p0, C;      /* first position and rows of the chunk */
    int64_t kv_len;     /* last position of the whole call + 1 */
    int decode;
    int sparse_regime;  /* kv_len >= dense_len */
    int64_t n1h, n2h;   /* compressed keys complete in the cache after this chunk */
    int dch;            /* a decode step whose sparse layers run the device-side chain (sparse_decode.cu) */
} chunk_ctx;

#define TRY(expr, what)                      \
    do {                                     \
        int e_ = (expr);                     \
        if (e_) return cu_fail(e_, what);    \
    } while (0)

/* sub: PK_* or -1; work: that launch's FLOPs or bytes */
static void prof_begin(cuda_session *s, int cat, int sub, double work) {
    cu_prof *p = s->prof;
    if (!p || p->n >= PROF_EVENTS / 2) return;
    p->cat[p->n] = cat;
    p->sub[p->n] = sub;
    p->work[p->n] = work;
    cudaEventRecord(p->ev[2 * p->n], s->cm->stream);
}
static void prof_end(cuda_session *s) {
    cu_prof *p = s->prof;
    if (!p || p->n >= PROF_EVENTS / 2) return;
    cudaEventRecord(p->ev[2 * p->n + 1], s->cm->stream);
    p->n++;
}
/* after a stream sync: fold the recorded intervals into the totals */
static void prof_collect(cuda_session *s) {
    cu_prof *p = s->prof;
    if (!p) return;
    for (int i = 0; i < p->n; i++) {
        float ms = 0;
        if (cudaEventElapsedTime(&ms, p->ev[2 * i], p->ev[2 * i + 1]) != cudaSuccess) continue;
        p->ms[p->cat[i]] += ms;
        if (p->sub[i] >= 0) p->pk_ms[p->sub[i]] += ms, p->pk_work[p->sub[i]] += p->work[i];
    }
    p->n = 0;
}
static void prof_print(cuda_session *s, int64_t n) {
    cu_prof *p = s->prof;
    if (!p) return;
    static const char *names[PROF_N] = {"gemm", "norm/gate/rope", "lightning", "dense attn", "compress",
                                        "lse", "stage1 score", "top-k", "sparse attn", "other"};
    double tot = 0;
    for (int i = 0; i < PROF_N; i++) tot += p->ms[i];
    if (n > 1)
        fprintf(stderr, "sala: GPU time of a %lld-token call: %.3f s =", (long long)n, tot / 1e3);
    else
        fprintf(stderr, "sala: GPU time of %lld decode steps: %.3f ms/step =", (long long)p->calls,
                tot / (double)(p->calls ? p->calls : 1));
    for (int i = 0; i < PROF_N; i++)
        if (p->ms[i] > 0) /* seconds of the call, or ms per decode step */
            fprintf(stderr, " %s %.3f", names[i], n > 1 ? p->ms[i] / 1e3 : p->ms[i] / (double)(p->calls ? p->calls : 1));
    fprintf(stderr, "\n");
    /* the dense part per kernel: GEMMs in TFLOP/s, the elementwise kernels in TB/s of the bytes they must move */
    static const char *pk_names[PK_N] = {"proj GEMM", "o_proj GEMM", "gate|up GEMM", "down GEMM",
                                         "rmsnorm", "qk-norm+rope", "out-norm+gate", "swiglu"};
    int any = 0;
    for (int i = 0; i < PK_N; i++)
        if (p->pk_ms[i] > 0) {
            fprintf(stderr, "%s %s %.3f s %.*f %s", any ? "," : "sala: per kernel:", pk_names[i], p->pk_ms[i] / 1e3,
                    i <= PK_GEMM_DOWN ? 0 : 2, p->pk_work[i] / p->pk_ms[i] / 1e9, i <= PK_GEMM_DOWN ? "TFLOP/s" : "TB/s");
            any = 1;
        }
    if (any) fprintf(stderr, "\n");
    memset(p->pk_ms, 0, sizeof p->pk_ms);
    memset(p->pk_work, 0, sizeof p->pk_work);
    memset(p->ms, 0, sizeof p->ms);
}

/* TRY with the op's GPU time counted under `cat`; TRYK also under the kernel `sub` (PK_*) doing `work` */
#define TRYK(cat, sub, work, expr, what)    \
    do {                                    \
        if (s->skip) break;                 \
        prof_begin(s, cat, sub, work);      \
        int e_ = (expr);                    \
        prof_end(s);                        \
        if (e_) return cu_fail(e_, what);   \
    } while (0)
#define TRYP(cat, expr, what) TRYK(cat, -1, 0.0, expr, what)
/* TRY that a replayed segment skips */
#define TRYS(expr, what)                    \
    do {                                    \
        if (s->skip) break;                 \
        int e_ = (expr);                    \
        if (e_) return cu_fail(e_, what);   \
    } while (0)

/* Decode-step graphs. A segment is a run of launches that reads nothing a step changes except through
 * device memory (the token id in s->ids, the position in s->dpos): the first graph step captures each
 * segment (cudaStreamBeginCapture .. EndCapture, instantiate) and launches it; later steps skip its
 * launches (s->skip) and launch the instantiated graph. Outside the segments (KV append, dense attention
 * or the host-driven InfLLM-v2 chain, whose grids follow the context length) the launches run as usual.
 * With the device-side chain (cx->dch) nothing is outside: the step is one segment, kept in a second set
 * of graphs (gexec_set[1]) so that steps of both kinds can alternate. */
static sala_status seg_open(cuda_session *s) {
    if (!s->gmode) return SALA_OK;
    if (s->gbuild) {
        TRY((int)cudaStreamBeginCapture(s->cm->stream, cudaStreamCaptureModeThreadLocal), "graph capture");
        s->capturing = 1;
    } else {
        s->skip = 1;
    }
    return SALA_OK;
}

static sala_status seg_close(cuda_session *s) {
    if (!s->gmode) return SALA_OK;
    cudaStream_t st = s->cm->stream;
    if (s->gbuild) {
        cudaGraph_t g = NULL;
        s->capturing = 0;
        TRY((int)cudaStreamEndCapture(st, &g), "graph capture");
        int e = (int)cudaGraphInstantiateWithFlags(&s->gexec[s->seg], g, 0);
        cudaGraphDestroy(g);
        TRY(e, "graph instantiate");
        s->nseg = s->seg + 1;
    } else if (s->seg >= s->nseg) {
        return sala_set_error(SALA_ERR_DEVICE, "decode graph: more segments than captured");
    }
    s->skip = 0;
    TRY((int)cudaGraphLaunch(s->gexec[s->seg++], st), "graph launch");
    return SALA_OK;
}

static sala_status mixer_sparse(cuda_session *s, int l, const chunk_ctx *cx, int fz) {
    cuda_model *cm = s->cm;
    const sala_config *c = &cm->cfg;
    const cu_layer *L = &cm->layers[l];
    cudaStream_t st = cm->stream;
    const int64_t ld = L->n_in, C = cx->C;
    float *q = s->mix, *k = s->mix + L->qd, *v = s->mix + L->qd + L->kvd, *gate = s->mix + L->qd + 2 * L->kvd;
    cu_infllm_dims d = make_dims(cm);
    if (c->attn_use_rope)
        TRYP(PROF_NORM, cu_qknorm_rope_dev(st, s->mix, CU_F32, ld, C, c->nh + c->nkv, c->nh, c->hd, NULL, NULL, (float)c->eps, 0,
                                           cm->inv_freq_s, cx->p0, s->gmode ? s->dpos : NULL, 1), "rope");
    if (cx->dch) { /* the whole chain on the device, inside the step's one graph */
        TRYP(PROF_SPARSE, cu_sdec_step(st, s->o, q, k, v, s->K[l], s->V[l], s->C1[l], s->C2[l], s->dpos, &d, &s->sdec,
                                       s->sdec_work), "sparse decode");
        if (!fz)
            TRYP(PROF_NORM, cu_norm_gate(st, s->a, cm->act, L->qd, s->o, L->qd, L->has_gate ? gate : NULL, CU_F32, ld,
                                         NULL, C, L->qd, (float)c->eps), "gate");
        return SALA_OK;
    }
    sala_status ss = seg_close(s);
    if (ss) return ss;
    TRYP(PROF_OTHER, cu_kv_append(st, s->K[l], s->V[l], cm->act, k, v, ld, C, cx->p0, L->kvd), "kv append");
    if (!cx->sparse_regime) {
        TRYP(PROF_DENSE, cu_attn_dense(st, s->o, L->qd, q, ld, s->K[l], s->V[l], cm->act, C, cx->p0, c->nh, c->nkv, c->hd, d.scale,
                          s->scratch, s->scratch_floats), "dense attention");
    } else {
        if (cx->n1h > s->comp_n1)
            TRYP(PROF_COMPRESS, cu_infllm_compress(st, s->C1[l], s->K[l], cm->act, s->comp_n1, cx->n1h, d.l1, d.s1, c->nkv, c->hd),
                "compress keys");
        if (cx->n2h > s->comp_n2)
            TRYP(PROF_COMPRESS, cu_infllm_compress(st, s->C2[l], s->K[l], cm->act, s->comp_n2, cx->n2h, d.l2, d.s2, c->nkv, c->hd),
                "compress keys");
        TRYP(PROF_LSE, cu_infllm_lse(st, s->lse, q, ld, s->C2[l], cx->n2h, C, cx->p0, cx->kv_len, cx->decode, &d, s->scratch,
                          s->scratch_floats), "infllm lse");
        TRYP(PROF_SCORE, cu_infllm_score(st, s->pooled, s->halo, q, ld, s->lse, s->C1[l], cx->n1h, C, cx->p0, cx->kv_len, cx->decode,
                            &d, s->nblk_cap, s->ntile_cap), "infllm stage 1");
        TRYP(PROF_TOPK, cu_infllm_topk(st, s->blocks, s->nsel, s->pooled, s->halo, C, cx->p0, &d, s->nblk_cap, s->ntile_cap),
            "infllm top-k");
        TRYP(PROF_SPARSE, cu_attn_sparse(st, s->o, L->qd, q, ld, s->K[l], s->V[l], cm->act, s->blocks, s->nsel, C, cx->p0, &d,
                           s->scratch, s->scratch_floats), "sparse attention");
    }
    ss = seg_open(s);
    if (ss) return ss;
    if (!fz) /* fused decode: the o_proj GEMV applies the gate */
        TRYK(PROF_NORM, PK_GATE, (double)C * L->qd * (4 + (L->has_gate ? 4 : 0) + (cm->act == CU_BF16 ? 2 : 4)),
             cu_norm_gate(st, s->a, cm->act, L->qd, s->o, L->qd, L->has_gate ? gate : NULL, CU_F32, ld, NULL, C, L->qd,
                          (float)c->eps), "gate");
    return SALA_OK;
}

static float lightning_scale(const sala_config *c) {
    const int hd = c->lin_hd;
    return c->lightning_scale == LSCALE_INV_SQRT_D ? (float)(1.0 / sqrt((double)hd))
           : c->lightning_scale == LSCALE_INV_D    ? (float)(1.0 / hd)
                                                   : 1.0f;
}

/* A fused one-row step (decode): qk-norm + RoPE inside the recurrence kernel; the output norm and gate
 * are applied by the o_proj GEMV (forward_chunk). */
static sala_status lightning_decode_row(cuda_session *s, int l, const chunk_ctx *cx) {
    cuda_model *cm = s->cm;
    const sala_config *c = &cm->cfg;
    const cu_layer *L = &cm->layers[l];
    const int nh = c->lin_nh, hd = c->lin_hd;
    float *q = s->mix, *k = s->mix + L->qd, *v = s->mix + 2 * L->qd;
    TRYP(PROF_LIGHTNING, cu_lightning_decode_fused(cm->stream, s->o, q, k, v, s->state[l], cm->lambda, lightning_scale(c),
                                                   nh, hd, L->q_norm, L->k_norm, (float)c->eps, c->qk_norm,
                                                   cm->inv_freq_l, cx->p0, s->gmode ? s->dpos : NULL,
                                                   c->lightning_use_rope), "lightning");
    return SALA_OK;
}

/* The projection output q | k | v | z of a prefill chunk is bf16 (qt) when lin_dtype() chose it, else fp32. */
static sala_status mixer_lightning(cuda_session *s, int l, const chunk_ctx *cx, int fz, cu_dtype qt) {
    if (fz) return lightning_decode_row(s, l, cx);
    cuda_model *cm = s->cm;
    const sala_config *c = &cm->cfg;
    const cu_layer *L = &cm->layers[l];
    cudaStream_t st = cm->stream;
    const int64_t ld = L->n_in, C = cx->C, es = qt == CU_BF16 ? 2 : 4;
    const int nh = c->lin_nh, hd = c->lin_hd;
    char *mix = (char *)s->mix;
    void *q = mix, *k = mix + L->qd * es, *v = mix + 2 * L->qd * es, *z = mix + 3 * L->qd * es;
    const double as = cm->act == CU_BF16 ? 2 : 4;
    TRYK(PROF_NORM, PK_QKROPE, 2.0 * C * 2 * L->qd * es,
         cu_qknorm_rope_dev(st, s->mix, qt, ld, C, 2 * nh, nh, hd, L->q_norm, L->k_norm, (float)c->eps, c->qk_norm,
                            cm->inv_freq_l, cx->p0, s->gmode ? s->dpos : NULL, c->lightning_use_rope), "qk norm + rope");
    const float scale = lightning_scale(c);
    if (qt == CU_BF16)
        TRYP(PROF_LIGHTNING, cu_lightning_prefill_mma(st, s->o, L->qd, q, k, v, qt, ld, s->state[l], cm->lambda, scale,
                                                      C, nh, hd), "lightning");
    else if (C <= 4)
        TRYP(PROF_LIGHTNING, cu_lightning_decode(st, s->o, L->qd, (float *)q, (float *)k, (float *)v, ld, s->state[l],
                                                 cm->lambda, scale, C, nh, hd), "lightning");
    else if (cm->act == CU_BF16)
        TRYP(PROF_LIGHTNING, cu_lightning_prefill_mma(st, s->o, L->qd, q, k, v, CU_F32, ld, s->state[l], cm->lambda,
                                                      scale, C, nh, hd), "lightning");
    else
        TRYP(PROF_LIGHTNING, cu_lightning_prefill(st, s->o, L->qd, (float *)q, (float *)k, (float *)v, ld, s->state[l],
                                                  cm->lambda, scale, C, nh, hd), "lightning");
    TRYK(PROF_NORM, PK_GATE, (double)C * L->qd * (4 + (L->has_gate ? es : 0) + as),
         cu_norm_gate(st, s->a, cm->act, L->qd, s->o, L->qd, L->has_gate ? z : NULL, qt, ld,
                      c->use_output_norm ? L->o_norm : NULL, C, L->qd, (float)c->eps), "output norm + gate");
    return SALA_OK;
}

/* Prefill chunks of the bf16 mode write the GEMM outputs that only elementwise ops read in bf16 (half the
 * bytes): the gate|up product (read by SwiGLU) and the Lightning layers' q | k | v | z (read by the qk norm +
 * RoPE, the tensor-core Lightning kernel and the output gate — which round q, k, v to bf16 anyway). Decode
 * rows (C ≤ 4, the GEMVs) and the exact mode stay fp32; so do the sparse layers' q, k, v. */
static cu_dtype ffn_dtype(const cuda_session *s, int64_t C) {
    return s->cm->act == CU_BF16 && C > 4 ? CU_BF16 : CU_F32;
}
static cu_dtype lin_dtype(const cuda_session *s, const cu_layer *L, int64_t C) {
    const char *m = (const char *)s->mix;
    if (ffn_dtype(s, C) != CU_BF16 || L->sparse) return CU_F32;
    return cu_lightning_mma_takes(m, m + 2 * L->qd, m + 4 * L->qd, CU_BF16, L->n_in, s->cm->cfg.lin_hd) ? CU_BF16 : CU_F32;
}

static sala_status chunk_logits(cuda_session *s, int64_t r0, int64_t n);

static cu_gemv_op gv_op(int in, const void *x, const float *w, const float *z, float eps, float div, int out, void *y,
                        float alpha, float beta) {
    cu_gemv_op op;
    memset(&op, 0, sizeof op);
    op.in = in, op.out = out, op.x = x, op.w = w, op.z = z, op.eps = eps, op.div = div, op.y = y;
    op.alpha = alpha, op.beta = beta;
    return op;
}

/* In graph mode (s->gmode, a decode step) the step runs as segments and ends with the last row's logits. */
static sala_status forward_chunk(cuda_session *s, const chunk_ctx *cx) {
    cuda_model *cm = s->cm;
    const sala_config *c = &cm->cfg;
    cudaStream_t st = cm->stream;
    const int64_t C = cx->C, H = c->hidden, I = c->inter;
    const float eps = (float)c->eps, r = (float)(c->scale_depth / sqrt((double)c->n_layers));
    /* one row: the norms, gates and SwiGLU run inside the GEMVs (cu_gemv) */
    const int fz = s->fuse && C == 1;
    sala_status ss = seg_open(s);
    if (ss) return ss;
    TRYP(PROF_OTHER, cu_embed(st, s->x, cm->embed, s->ids, C, (int)H, (float)c->scale_emb), "embedding");
    for (int l = 0; l < c->n_layers; l++) {
        const cu_layer *L = &cm->layers[l];
        const cu_dtype qt = lin_dtype(s, L, C), ft = ffn_dtype(s, C);
        if (fz) {
            cu_gemv_op op = gv_op(CU_GV_NORM, s->x, L->ln1, NULL, eps, 1.0f, CU_GV_STORE, s->mix, 1.0f, 0.0f);
            TRYP(PROF_GEMM, cu_gemv(st, &op, cm->act, L->w_in, L->n_in, H), "projection GEMV");
            ss = L->sparse ? mixer_sparse(s, l, cx, 1) : mixer_lightning(s, l, cx, 1, CU_F32);
            if (ss) return ss;
            /* o_proj on the gated mixer output (Lightning: output norm too), added into the residual */
            const float *gz = NULL, *gw = NULL;
            if (L->sparse) {
                if (L->has_gate) gz = s->mix + L->qd + 2 * L->kvd;
            } else {
                if (L->has_gate) gz = s->mix + 3 * L->qd;
                if (c->use_output_norm) gw = L->o_norm;
            }
            op = gv_op(CU_GV_GATE, s->o, gw, gz, eps, 1.0f, CU_GV_STORE, s->x, r, 1.0f);
            TRYP(PROF_GEMM, cu_gemv(st, &op, cm->act, L->w_o, H, L->qd), "o_proj GEMV");
            op = gv_op(CU_GV_NORM, s->x, L->ln2, NULL, eps, 1.0f, CU_GV_SWIGLU, s->a, 1.0f, 0.0f);
            TRYP(PROF_GEMM, cu_gemv(st, &op, cm->act, L->w_gu, 2 * I, H), "gate/up GEMV");
            op = gv_op(CU_GV_PLAIN, s->a, NULL, NULL, eps, 1.0f, CU_GV_STORE, s->x, r, 1.0f);
            TRYP(PROF_GEMM, cu_gemv(st, &op, cm->act, L->w_down, H, I), "down GEMV");
            continue;
        }
        const double as = cm->act == CU_BF16 ? 2 : 4, rms_bytes = (double)C * H * (4 + as);
        TRYK(PROF_NORM, PK_RMSNORM, rms_bytes, cu_rmsnorm(st, s->a, cm->act, H, s->x, H, L->ln1, C, (int)H, eps, 1.0f),
             "rmsnorm");
        TRYK(PROF_GEMM, PK_GEMM_IN, 2.0 * C * L->n_in * H,
             cu_gemm_run(cm->gemm, st, s->mix, qt, L->n_in, s->a, cm->act, H, L->w_in, C, L->n_in, H, 1.0f, 0.0f),
             "projection GEMM");
        ss = L->sparse ? mixer_sparse(s, l, cx, 0) : mixer_lightning(s, l, cx, 0, qt);
        if (ss) return ss;
        TRYK(PROF_GEMM, PK_GEMM_O, 2.0 * C * H * L->qd,
             cu_gemm_run(cm->gemm, st, s->x, CU_F32, H, s->a, cm->act, L->qd, L->w_o, C, H, L->qd, r, 1.0f), "o_proj GEMM");
        TRYK(PROF_NORM, PK_RMSNORM, rms_bytes, cu_rmsnorm(st, s->a, cm->act, H, s->x, H, L->ln2, C, (int)H, eps, 1.0f),
             "rmsnorm");
        TRYK(PROF_GEMM, PK_GEMM_GU, 2.0 * C * 2 * I * H,
             cu_gemm_run(cm->gemm, st, s->mix, ft, 2 * I, s->a, cm->act, H, L->w_gu, C, 2 * I, H, 1.0f, 0.0f),
             "gate/up GEMM");
        TRYK(PROF_NORM, PK_SWIGLU, (double)C * I * (2 * (ft == CU_BF16 ? 2 : 4) + as),
             cu_swiglu(st, s->a, cm->act, s->mix, ft, C, (int)I), "swiglu");
        TRYK(PROF_GEMM, PK_GEMM_DOWN, 2.0 * C * H * I,
             cu_gemm_run(cm->gemm, st, s->x, CU_F32, H, s->a, cm->act, I, L->w_down, C, H, I, r, 1.0f), "down GEMM");
    }
    if (s->gmode) {
        ss = chunk_logits(s, C - 1, 1);
        if (ss) return ss;
    }
    return seg_close(s);
}

/* logits of rows [r0, r0 + n) of the chunk into s->logits [n, V] */
static sala_status chunk_logits(cuda_session *s, int64_t r0, int64_t n) {
    cuda_model *cm = s->cm;
    const sala_config *c = &cm->cfg;
    const int64_t H = c->hidden;
    float div = (float)(c->hidden / c->dim_model_base);
    if (s->fuse && n == 1) { /* final norm inside the lm_head GEMV */
        cu_gemv_op op = gv_op(CU_GV_NORM, s->x + r0 * H, cm->final_norm, NULL, (float)c->eps, div, CU_GV_STORE,
                              s->logits, 1.0f, 0.0f);
        TRYS(cu_gemv(cm->stream, &op, cm->act, cm->lm_head, c->vocab, H), "lm_head GEMV");
        return SALA_OK;
    }
    TRYS(cu_rmsnorm(cm->stream, s->fnorm, cm->act, H, s->x + r0 * H, H, cm->final_norm, n, (int)H, (float)c->eps, div),
        "final norm");
    TRYS(cu_gemm_run(cm->gemm, cm->stream, s->logits, CU_F32, c->vocab, s->fnorm, cm->act, H, cm->lm_head, n, c->vocab, H, 1.0f,
                    0.0f), "lm_head GEMM");
    return SALA_OK;
}

/* which: SALA_LOGITS_*; or 3 = argmax of the last row into *next */
static sala_status session_eval(cuda_session *s, int64_t pos, const int32_t *ids, int64_t n, int which, float *logits,
                                int32_t *next, int (*progress)(void *, int64_t, int64_t), void *ud) {
    cuda_model *cm = s->cm;
    const sala_config *c = &cm->cfg;
    if (n <= 0) return sala_set_error(SALA_ERR_ARG, "cuda_session_eval: no tokens");
    if (pos < 0 || pos + n > s->n_ctx)
        return sala_set_error(SALA_ERR_CONTEXT, "%lld tokens at position %lld do not fit the GPU session's context of "
                              "%lld tokens", (long long)n, (long long)pos, (long long)s->n_ctx);
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab)
            return sala_set_error(SALA_ERR_ARG, "token id %d at index %lld is outside the vocabulary (0..%d)", ids[i],
                                  (long long)i, c->vocab - 1);
    cu_infllm_dims d = make_dims(cm);
    chunk_ctx cx;
    memset(&cx, 0, sizeof cx);
    cx.kv_len = pos + n;
    cx.decode = n == 1 && pos > 0;
    cx.sparse_regime = cm->n_sparse > 0 && cx.kv_len >= c->dense_len;
    cudaStream_t st = cm->stream;
    /* a decode step runs as CUDA graphs (see seg_open) unless disabled or profiled */
    int gm = s->graph_on && !s->prof && n == 1 && pos > 0 && which != SALA_LOGITS_NONE;
    /* the device chain needs every window before pos compressed (a previous call in the sparse regime) */
    cx.dch = cx.decode && cx.sparse_regime && s->dchain_ok && s->comp_n1 >= nwin64(pos, d.l1, d.s1) &&
             s->comp_n2 >= nwin64(pos, d.l2, d.s2);
    const int gset = cx.dch ? 1 : 0;
    s->gexec = s->gexec_set[gset];
    s->nseg = s->nseg_set[gset];
    s->gmode = gm;
    s->gbuild = gm && s->nseg == 0;
    s->seg = 0;
    s->skip = 0;
    if (gm || cx.dch) {
        int64_t p = pos;
        TRY((int)cudaMemcpyAsync(s->dpos, &p, sizeof p, cudaMemcpyHostToDevice, st), "position upload");
    }
    for (int64_t done = 0; done < n;) {
        cx.p0 = pos + done;
        cx.C = n - done < s->chunk ? n - done : s->chunk;
        cx.n1h = nwin64(cx.p0 + cx.C, d.l1, d.s1);
        cx.n2h = nwin64(cx.p0 + cx.C, d.l2, d.s2);
        TRY((int)cudaMemcpyAsync(s->ids, ids + done, sizeof(int32_t) * (size_t)cx.C, cudaMemcpyHostToDevice, st),
            "token upload");
        sala_status ss = forward_chunk(s, &cx);
        if (!ss && gm && s->seg != s->nseg)
            ss = sala_set_error(SALA_ERR_DEVICE, "decode graph: %d segments of %d replayed", s->seg, s->nseg);
        s->nseg_set[gset] = s->nseg;
        s->gmode = s->skip = 0;
        if (ss) {
            if (s->capturing) { /* a failed capture: end it, drop the graphs and run this session without them */
                cudaGraph_t g = NULL;
                cudaStreamEndCapture(st, &g);
                if (g) cudaGraphDestroy(g);
                cudaGetLastError();
                s->capturing = 0;
            }
            if (gm) {
                for (int k = 0; k < 2; k++) {
                    for (int i = 0; i < s->nseg_set[k]; i++) cudaGraphExecDestroy(s->gexec_set[k][i]);
                    s->nseg_set[k] = 0;
                }
                s->nseg = 0;
                s->graph_on = 0;
            }
            return ss;
        }
        if (cx.sparse_regime) {
            if (cx.n1h > s->comp_n1) s->comp_n1 = cx.n1h;
            if (cx.n2h > s->comp_n2) s->comp_n2 = cx.n2h;
        }
        int last = done + cx.C == n;
        if (which == SALA_LOGITS_ALL) {
            for (int64_t r0 = 0; r0 < cx.C; r0 += s->logit_rows) {
                int64_t rows = cx.C - r0 < s->logit_rows ? cx.C - r0 : s->logit_rows;
                if (!gm) ss = chunk_logits(s, r0, rows);
                if (ss) return ss;
                TRY((int)cudaMemcpyAsync(logits + (done + r0) * c->vocab, s->logits,
                                         sizeof(float) * (size_t)(rows * c->vocab), cudaMemcpyDeviceToHost, st),
                    "logits download");
            }
        } else if (last && (which == SALA_LOGITS_LAST || which == 3)) {
            if (!gm) ss = chunk_logits(s, cx.C - 1, 1);
            if (ss) return ss;
            if (which == 3) {
                TRY(cu_argmax(st, s->next, s->logits, 1, c->vocab), "argmax");
                TRY((int)cudaMemcpyAsync(next, s->next, sizeof(int32_t), cudaMemcpyDeviceToHost, st), "download");
            } else {
                TRY((int)cudaMemcpyAsync(logits, s->logits, sizeof(float) * (size_t)c->vocab, cudaMemcpyDeviceToHost,
                                         st), "logits download");
            }
        }
        /* the host ids buffer must stay valid until the upload ran; sync per chunk also bounds the queue */
        TRY((int)cudaStreamSynchronize(st), "forward pass");
        prof_collect(s);
        done += cx.C;
        if (progress && progress(ud, done, n) && done < n)
            return sala_set_error(SALA_ERR_INTERRUPTED, "stopped after %lld of %lld tokens (the session holds them)",
                                  (long long)done, (long long)n);
    }
    if (s->prof) {
        if (n > 1) {
            if (s->prof->calls) { /* decode steps before this call were not printed yet */
                s->prof->calls = 0;
                memset(s->prof->ms, 0, sizeof s->prof->ms);
                memset(s->prof->pk_ms, 0, sizeof s->prof->pk_ms);
                memset(s->prof->pk_work, 0, sizeof s->prof->pk_work);
            }
            prof_print(s, n);
        } else {
            s->prof->calls++;
        }
    }
    return SALA_OK;
}

extern "C" sala_status cuda_session_eval(cuda_session *s, int64_t pos, const int32_t *ids, int64_t n, int which,
                                         float *logits, int (*progress)(void *, int64_t, int64_t), void *ud) {
    if (which != SALA_LOGITS_NONE && !logits) return sala_set_error(SALA_ERR_ARG, "cuda_session_eval: logits is NULL");
    return session_eval(s, pos, ids, n, which, logits, NULL, progress, ud);
}

extern "C" sala_status cuda_session_eval_argmax(cuda_session *s, int64_t pos, const int32_t *ids, int64_t n,
                                                int32_t *next, int (*progress)(void *, int64_t, int64_t), void *ud) {
    return session_eval(s, pos, ids, n, 3, NULL, next, progress, ud);
}
