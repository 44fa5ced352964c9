/* session.c — one sequence: its hybrid cache and the model's forward pass on the CPU (MODEL.md §3–4).
 *
 * The cache is a composition chosen per layer: a sparse (minicpm4) layer keeps its K and V for every
 * position plus the two levels of compressed keys, grown one complete window at a time; a linear
 * (lightning) layer keeps one fp32 state [nh, hd, hd].
 *
 * A call (sala_session_eval) is one forward of the reference over n tokens. It runs in chunks of at most
 * `chunk` tokens so activation memory does not grow with the prompt, but everything that the reference
 * decides per call is decided from the whole call: kv_len = pos + n picks dense vs InfLLM-v2 for every
 * row, and InfLLM-v2's visibility counts use kv_len. Hence a chunked prefill equals the one-shot prefill.
 * A single-token call at pos > 0 is a decode step (every compressed key visible).
 *
 * The model runs on the plain reference ops when params.reference is set (the spec), else on the fast
 * ops; both share this file, so the two differ only inside the ops. */
#include <math.h>
#include <string.h>

#include "cpu/ops.h"
#include "cuda/backend.h"
#include "model/model.h"
#include "util.h"

typedef struct {
    float *K, *V;        /* [cap, nkv, hd] */
    float *C1, *C2;      /* [cap1, nkv, hd], [cap2, nkv, hd] compressed keys, level 1 and 2 */
    int64_t n1, n2;      /* windows computed so far */
} sparse_cache;

struct sala_session {
    sala_model *m;
    sala_session_params p;
    int64_t n_ctx, pos, cap; /* cap: positions the K/V buffers hold now (grown on demand up to n_ctx) */
    int chunk;
    sparse_cache *kv;    /* [L], used by sparse layers */
    float **state;       /* [L] -> [lin_nh, lin_hd, lin_hd], used by linear layers */
    /* activations for one chunk of C tokens */
    float *x, *a, *y;    /* [C, H] */
    float *q, *k, *v;    /* [C, qd] */
    float *g, *o;        /* [C, qd] */
    float *f1, *f2;      /* [C, I] */
    float *row;          /* [H] final hidden of one row */
    cuda_session *cuda;
};

struct sala_snapshot {
    int64_t pos;
    sala_session *copy;
};

sala_session_params sala_session_default_params(void) {
    sala_session_params p;
    memset(&p, 0, sizeof p);
    return p;
}

static int64_t max_qdim(const sala_config *c) {
    int64_t a = (int64_t)c->nh * c->hd, b = (int64_t)c->lin_nh * c->lin_hd;
    return a > b ? a : b;
}

static infllm_dims make_dims(const sala_config *c) {
    infllm_dims d;
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
    return d;
}

/* grow K/V/compressed buffers of every sparse layer to hold `need` positions */
static sala_status ensure_capacity(sala_session *s, int64_t need) {
    if (need <= s->cap) return SALA_OK;
    const sala_config *c = &s->m->cfg;
    int64_t cap = s->cap ? s->cap : 1024;
    while (cap < need) cap *= 2;
    if (cap > s->n_ctx) cap = s->n_ctx;
    int64_t row = (int64_t)c->nkv * c->hd;
    int64_t c1 = infllm_n_windows(cap, c->kernel_size, c->kernel_stride) + 1;
    int64_t c2 = infllm_n_windows(cap, 4 * c->kernel_size, 4 * c->kernel_stride) + 1;
    for (int l = 0; l < c->n_layers; l++) {
        if (!c->sparse[l]) continue;
        sparse_cache *kc = &s->kv[l];
        float *K = realloc(kc->K, sizeof(float) * (size_t)(cap * row));
        if (K) kc->K = K;
        float *V = K ? realloc(kc->V, sizeof(float) * (size_t)(cap * row)) : NULL;
        if (V) kc->V = V;
        float *C1 = V ? realloc(kc->C1, sizeof(float) * (size_t)(c1 * row)) : NULL;
        if (C1) kc->C1 = C1;
        float *C2 = C1 ? realloc(kc->C2, sizeof(float) * (size_t)(c2 * row)) : NULL;
        if (C2) kc->C2 = C2;
        if (!C2)
            return sala_set_error(SALA_ERR_NOMEM, "out of memory growing the KV cache to %lld tokens",
                                  (long long)cap);
    }
    s->cap = cap;
    return SALA_OK;
}

sala_status sala_session_new(sala_model *m, const sala_session_params *pp, sala_session **out) {
    *out = NULL;
    const sala_config *c = &m->cfg;
    sala_session_params p = pp ? *pp : sala_session_default_params();
    int64_t n_ctx = p.n_ctx > 0 ? p.n_ctx : c->max_pos;
    /* A context past max_position_embeddings is allowed (RoPE is plain and only in the linear layers; the
     * paper runs the released model to 2M tokens); the default is the config's value. */
    /* the CPU's default chunk; the GPU picks its own (sala.h, cuda_session_new) and checks the memory limit
     * against its own plan */
    int chunk = p.chunk > 0 ? p.chunk : SALA_CHUNK_CPU;
    if (m->params.device == SALA_DEVICE_CPU && m->params.precision == SALA_PRECISION_BF16)
        return sala_set_error(SALA_ERR_UNSUPPORTED, "bf16 activations are a GPU mode; the CPU engine computes in fp32");
    sala_mem_plan plan = sala_model_mem_plan(m, n_ctx, chunk, m->params.device == SALA_DEVICE_CPU ? 4 : 2);
    if (!m->cuda && p.mem_limit > 0 && plan.total_bytes > p.mem_limit) {
        char a[64], b[64];
        return sala_set_error(SALA_ERR_NOMEM, "a context of %lld tokens needs %s (weights, caches, activations), "
                              "more than the limit of %s. HINT: lower -c", (long long)n_ctx,
                              sala_fmt_bytes(plan.total_bytes, a, sizeof a), sala_fmt_bytes(p.mem_limit, b, sizeof b));
    }
    sala_session *s = xcalloc(1, sizeof *s);
    s->m = m;
    s->p = p;
    s->n_ctx = n_ctx;
    s->chunk = chunk;
    if (m->cuda) {
        sala_status st = cuda_session_new(m->cuda, n_ctx, p.chunk, p.mem_limit, &s->cuda);
        if (st) {
            free(s);
            return st;
        }
        *out = s;
        return SALA_OK;
    }
    s->kv = xcalloc((size_t)c->n_layers, sizeof(sparse_cache));
    s->state = xcalloc((size_t)c->n_layers, sizeof(float *));
    int64_t sz = (int64_t)c->lin_nh * c->lin_hd * c->lin_hd;
    for (int l = 0; l < c->n_layers; l++)
        if (!c->sparse[l]) s->state[l] = xcalloc((size_t)sz, sizeof(float));
    int64_t H = c->hidden, qd = max_qdim(c), I = c->inter;
    s->x = xmalloc(sizeof(float) * (size_t)(chunk * H));
    s->a = xmalloc(sizeof(float) * (size_t)(chunk * H));
    s->y = xmalloc(sizeof(float) * (size_t)(chunk * H));
    s->q = xmalloc(sizeof(float) * (size_t)(chunk * qd));
    s->k = xmalloc(sizeof(float) * (size_t)(chunk * qd));
    s->v = xmalloc(sizeof(float) * (size_t)(chunk * qd));
    s->g = xmalloc(sizeof(float) * (size_t)(chunk * qd));
    s->o = xmalloc(sizeof(float) * (size_t)(chunk * qd));
    s->f1 = xmalloc(sizeof(float) * (size_t)(chunk * I));
    s->f2 = xmalloc(sizeof(float) * (size_t)(chunk * I));
    s->row = xmalloc(sizeof(float) * (size_t)H);
    sala_status st = ensure_capacity(s, 1);
    if (st) {
        sala_session_free(s);
        return st;
    }
    *out = s;
    return SALA_OK;
}

void sala_session_free(sala_session *s) {
    if (!s) return;
    if (s->cuda) cuda_session_free(s->cuda);
    if (s->kv)
        for (int l = 0; l < s->m->cfg.n_layers; l++) {
            free(s->kv[l].K);
            free(s->kv[l].V);
            free(s->kv[l].C1);
            free(s->kv[l].C2);
        }
    if (s->state)
        for (int l = 0; l < s->m->cfg.n_layers; l++) free(s->state[l]);
    free(s->kv);
    free(s->state);
    free(s->x);
    free(s->a);
    free(s->y);
    free(s->q);
    free(s->k);
    free(s->v);
    free(s->g);
    free(s->o);
    free(s->f1);
    free(s->f2);
    free(s->row);
    free(s);
}

void sala_session_reset(sala_session *s) {
    s->pos = 0;
    if (s->cuda) {
        cuda_session_reset(s->cuda);
        return;
    }
    const sala_config *c = &s->m->cfg;
    int64_t sz = (int64_t)c->lin_nh * c->lin_hd * c->lin_hd;
    for (int l = 0; l < c->n_layers; l++) {
        s->kv[l].n1 = s->kv[l].n2 = 0;
        if (s->state[l]) memset(s->state[l], 0, sizeof(float) * (size_t)sz);
    }
}

int64_t sala_session_pos(const sala_session *s) { return s->pos; }
int64_t sala_session_n_ctx(const sala_session *s) { return s->n_ctx; }

/* ---- the mixers ---- */

typedef struct {
    int64_t p0;      /* position of the chunk's first row */
    int64_t C;       /* rows in the chunk */
    int64_t kv_len;  /* last position of the whole call + 1 */
    int decode;      /* single-token call after a prefix */
    int ref;         /* reference ops */
} chunk_ctx;

static void matmul(const chunk_ctx *cx, float *y, const float *x, const sala_weight *W, int64_t T) {
    if (cx->ref)
        op_matmul_ref(y, x, W, T);
    else
        op_matmul(y, x, W, T);
}

static void rmsnorm(const chunk_ctx *cx, float *y, const float *x, const float *w, int64_t rows, int64_t D, float eps) {
    if (cx->ref)
        op_rmsnorm_ref(y, x, w, rows, D, eps);
    else
        op_rmsnorm(y, x, w, rows, D, eps);
}

/* minicpm4 layer: NoPE GQA attention, dense below dense_len and InfLLM-v2 above; sigmoid output gate */
static void mixer_sparse(sala_session *s, int l, const chunk_ctx *cx) {
    const sala_config *c = &s->m->cfg;
    const sala_layer *L = &s->m->layers[l];
    sparse_cache *kc = &s->kv[l];
    int64_t C = cx->C, qd = (int64_t)c->nh * c->hd, kvd = (int64_t)c->nkv * c->hd;
    matmul(cx, s->q, s->a, &L->wq, C); /* q [C, nh, hd] */
    matmul(cx, s->k, s->a, &L->wk, C); /* k [C, nkv, hd] */
    matmul(cx, s->v, s->a, &L->wv, C); /* v [C, nkv, hd] */
    if (c->attn_use_rope) {
        op_rope(s->q, C, c->nh, c->hd, cx->p0, c->rope_theta);
        op_rope(s->k, C, c->nkv, c->hd, cx->p0, c->rope_theta);
    }
    memcpy(kc->K + cx->p0 * kvd, s->k, sizeof(float) * (size_t)(C * kvd));
    memcpy(kc->V + cx->p0 * kvd, s->v, sizeof(float) * (size_t)(C * kvd));
    /* compressed keys: every window complete in the cache so far (equal to recomputing them all) */
    infllm_dims d = make_dims(c);
    int64_t N = cx->p0 + C;
    int64_t n1 = infllm_n_windows(N, d.l1, d.s1), n2 = infllm_n_windows(N, d.l2, d.s2);
    op_compress_keys(kc->C1, kc->K, kc->n1, n1, d.l1, d.s1, c->nkv, c->hd);
    op_compress_keys(kc->C2, kc->K, kc->n2, n2, d.l2, d.s2, c->nkv, c->hd);
    kc->n1 = n1;
    kc->n2 = n2;

    if (cx->kv_len < c->dense_len) {
        if (cx->ref)
            op_attention_dense_ref(s->o, s->q, kc->K, kc->V, C, cx->p0, c->nh, c->nkv, c->hd, d.scale);
        else
            op_attention_dense(s->o, s->q, kc->K, kc->V, C, cx->p0, c->nh, c->nkv, c->hd, d.scale);
    } else {
        int64_t n1_all = infllm_n_windows(cx->kv_len, d.l1, d.s1), n2_all = infllm_n_windows(cx->kv_len, d.l2, d.s2);
        int64_t wf = infllm_select_work_floats(&d, cx->kv_len);
#pragma omp parallel if (!cx->ref) num_threads(sala_get_threads())
        {
            float *work = xmalloc(sizeof(float) * (size_t)wf);
            int32_t *blocks = xmalloc(sizeof(int32_t) * (size_t)(d.budget * c->nkv));
            int *n_sel = xmalloc(sizeof(int) * (size_t)c->nkv);
#pragma omp for schedule(dynamic, 4)
            for (int64_t t = 0; t < C; t++) {
                int64_t r = cx->p0 + t;
                infllm_select_row(&d, s->q + t * qd, kc->C1, n1_all, kc->C2, n2_all, r, cx->kv_len, cx->decode,
                                  blocks, n_sel, work);
                op_attention_blocks_row(s->o + t * qd, s->q + t * qd, kc->K, kc->V, &d, r, blocks, n_sel);
            }
            free(work);
            free(blocks);
            free(n_sel);
        }
    }
    if (L->wgate.data) {
        matmul(cx, s->g, s->a, &L->wgate, C);
        op_sigmoid_gate(s->o, s->g, C * qd);
    }
    matmul(cx, s->y, s->o, &L->wo, C);
}

/* lightning layer: QK-norm, RoPE, constant-decay linear attention with an fp32 state, output norm, gate */
static void mixer_lightning(sala_session *s, int l, const chunk_ctx *cx) {
    const sala_config *c = &s->m->cfg;
    const sala_layer *L = &s->m->layers[l];
    int64_t C = cx->C, nh = c->lin_nh, hd = c->lin_hd, qd = nh * hd;
    float eps = (float)c->eps;
    matmul(cx, s->q, s->a, &L->wq, C); /* [C, nh, hd] */
    matmul(cx, s->k, s->a, &L->wk, C);
    matmul(cx, s->v, s->a, &L->wv, C);
    if (c->qk_norm) {
        rmsnorm(cx, s->q, s->q, L->q_norm, C * nh, hd, eps);
        rmsnorm(cx, s->k, s->k, L->k_norm, C * nh, hd, eps);
    }
    if (c->lightning_use_rope) {
        op_rope(s->q, C, (int)nh, (int)hd, cx->p0, c->rope_theta);
        op_rope(s->k, C, (int)nh, (int)hd, cx->p0, c->rope_theta);
    }
    float scale = c->lightning_scale == LSCALE_INV_SQRT_D ? (float)(1.0 / sqrt((double)hd))
                  : c->lightning_scale == LSCALE_INV_D    ? (float)(1.0 / hd)
                                                          : 1.0f;
    if (cx->ref)
        op_lightning_ref(s->o, s->q, s->k, s->v, s->state[l], s->m->lambda, scale, C, (int)nh, (int)hd);
    else
        op_lightning_chunked(s->o, s->q, s->k, s->v, s->state[l], s->m->lambda, scale, C, (int)nh, (int)hd, 64);
    if (c->use_output_norm) rmsnorm(cx, s->o, s->o, L->o_norm, C, qd, eps); /* one norm over all heads */
    if (L->wgate.data) {
        matmul(cx, s->g, s->a, &L->wgate, C);
        op_sigmoid_gate(s->o, s->g, C * qd);
    }
    matmul(cx, s->y, s->o, &L->wo, C);
}

/* final norm, µP divisor and lm_head for one row */
static void logits_row(sala_session *s, const chunk_ctx *cx, const float *x, float *out) {
    const sala_config *c = &s->m->cfg;
    rmsnorm(cx, s->row, x, s->m->final_norm, 1, c->hidden, (float)c->eps);
    float div = (float)(c->hidden / c->dim_model_base);
    for (int i = 0; i < c->hidden; i++) s->row[i] /= div;
    matmul(cx, out, s->row, &s->m->lm_head, 1);
}

static void forward_chunk(sala_session *s, const int32_t *ids, const chunk_ctx *cx, float *logits_all,
                          float *logits_last) {
    const sala_model *m = s->m;
    const sala_config *c = &m->cfg;
    int64_t C = cx->C, H = c->hidden, I = c->inter;
    float eps = (float)c->eps;
    float r = (float)(c->scale_depth / sqrt((double)c->n_layers));
    op_embed(s->x, &m->embed, ids, C, (float)c->scale_emb); /* x [C, H] */
    for (int l = 0; l < c->n_layers; l++) {
        const sala_layer *L = &m->layers[l];
        rmsnorm(cx, s->a, s->x, L->in_norm, C, H, eps);
        if (L->sparse)
            mixer_sparse(s, l, cx);
        else
            mixer_lightning(s, l, cx);
        op_residual(s->x, s->y, r, C * H);
        rmsnorm(cx, s->a, s->x, L->post_norm, C, H, eps);
        matmul(cx, s->f1, s->a, &L->mlp_gate, C); /* [C, I] */
        matmul(cx, s->f2, s->a, &L->mlp_up, C);
        op_swiglu(s->f1, s->f1, s->f2, C * I);
        matmul(cx, s->y, s->f1, &L->mlp_down, C);
        op_residual(s->x, s->y, r, C * H);
    }
    if (logits_all)
        for (int64_t t = 0; t < C; t++) logits_row(s, cx, s->x + t * H, logits_all + t * c->vocab);
    if (logits_last) logits_row(s, cx, s->x + (C - 1) * H, logits_last);
}

sala_status sala_session_eval(sala_session *s, const int32_t *ids, int64_t n, int which, float *logits) {
    const sala_config *c = &s->m->cfg;
    if (n <= 0) return sala_set_error(SALA_ERR_ARG, "sala_session_eval: no tokens");
    if (which != SALA_LOGITS_NONE && !logits) return sala_set_error(SALA_ERR_ARG, "sala_session_eval: logits is NULL");
    if (s->pos + n > s->n_ctx)
        return sala_set_error(SALA_ERR_CONTEXT, "%lld tokens at position %lld do not fit the context of %lld tokens. "
                              "HINT: raise -c (up to %d) or shorten the prompt", (long long)n, (long long)s->pos,
                              (long long)s->n_ctx, c->max_pos);
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab)
            return sala_set_error(SALA_ERR_ARG, "token id %d at index %lld is outside the vocabulary (0..%d)", ids[i],
                                  (long long)i, c->vocab - 1);
    if (s->cuda) {
        sala_status st = cuda_session_eval(s->cuda, s->pos, ids, n, which, logits, s->p.progress, s->p.progress_ud);
        if (!st) s->pos += n;
        return st;
    }
    sala_status st = ensure_capacity(s, s->pos + n);
    if (st) return st;
    chunk_ctx cx = {0};
    cx.kv_len = s->pos + n;
    cx.decode = n == 1 && s->pos > 0;
    cx.ref = s->m->params.reference;
    int64_t done = 0;
    while (done < n) {
        cx.p0 = s->pos;
        cx.C = n - done < s->chunk ? n - done : s->chunk;
        int last = done + cx.C == n;
        forward_chunk(s, ids + done, &cx, which == SALA_LOGITS_ALL ? logits + done * c->vocab : NULL,
                      which == SALA_LOGITS_LAST && last ? logits : NULL);
        done += cx.C;
        s->pos += cx.C;
        if (s->p.progress && s->p.progress(s->p.progress_ud, done, n) && done < n)
            return sala_set_error(SALA_ERR_INTERRUPTED, "stopped after %lld of %lld tokens (the session holds them)",
                                  (long long)done, (long long)n);
    }
    return SALA_OK;
}

/* ---- snapshots: a deep copy of the sequence state ---- */

sala_status sala_session_snapshot(const sala_session *s, sala_snapshot **out) {
    if (s->cuda) return sala_set_error(SALA_ERR_UNSUPPORTED, "snapshots of GPU sessions are not implemented yet");
    const sala_config *c = &s->m->cfg;
    sala_snapshot *snap = xcalloc(1, sizeof *snap);
    sala_session *cp = xcalloc(1, sizeof *cp);
    cp->m = s->m;
    cp->pos = s->pos;
    cp->kv = xcalloc((size_t)c->n_layers, sizeof(sparse_cache));
    cp->state = xcalloc((size_t)c->n_layers, sizeof(float *));
    int64_t row = (int64_t)c->nkv * c->hd, sz = (int64_t)c->lin_nh * c->lin_hd * c->lin_hd;
    for (int l = 0; l < c->n_layers; l++) {
        if (c->sparse[l]) {
            const sparse_cache *a = &s->kv[l];
            sparse_cache *b = &cp->kv[l];
            b->n1 = a->n1;
            b->n2 = a->n2;
            b->K = xmalloc(sizeof(float) * (size_t)(s->pos * row + 1));
            b->V = xmalloc(sizeof(float) * (size_t)(s->pos * row + 1));
            b->C1 = xmalloc(sizeof(float) * (size_t)(a->n1 * row + 1));
            b->C2 = xmalloc(sizeof(float) * (size_t)(a->n2 * row + 1));
            memcpy(b->K, a->K, sizeof(float) * (size_t)(s->pos * row));
            memcpy(b->V, a->V, sizeof(float) * (size_t)(s->pos * row));
            memcpy(b->C1, a->C1, sizeof(float) * (size_t)(a->n1 * row));
            memcpy(b->C2, a->C2, sizeof(float) * (size_t)(a->n2 * row));
        } else {
            cp->state[l] = xmalloc(sizeof(float) * (size_t)sz);
            memcpy(cp->state[l], s->state[l], sizeof(float) * (size_t)sz);
        }
    }
    snap->pos = s->pos;
    snap->copy = cp;
    *out = snap;
    return SALA_OK;
}

sala_status sala_session_restore(sala_session *s, const sala_snapshot *snap) {
    if (s->cuda) return sala_set_error(SALA_ERR_UNSUPPORTED, "snapshots of GPU sessions are not implemented yet");
    const sala_session *cp = snap->copy;
    if (cp->m != s->m) return sala_set_error(SALA_ERR_ARG, "snapshot belongs to another model");
    if (snap->pos > s->n_ctx) return sala_set_error(SALA_ERR_CONTEXT, "snapshot is longer than this session's context");
    sala_status st = ensure_capacity(s, snap->pos > 0 ? snap->pos : 1);
    if (st) return st;
    const sala_config *c = &s->m->cfg;
    int64_t row = (int64_t)c->nkv * c->hd, sz = (int64_t)c->lin_nh * c->lin_hd * c->lin_hd;
    for (int l = 0; l < c->n_layers; l++) {
        if (c->sparse[l]) {
            sparse_cache *a = &s->kv[l];
            const sparse_cache *b = &cp->kv[l];
            memcpy(a->K, b->K, sizeof(float) * (size_t)(snap->pos * row));
            memcpy(a->V, b->V, sizeof(float) * (size_t)(snap->pos * row));
            memcpy(a->C1, b->C1, sizeof(float) * (size_t)(b->n1 * row));
            memcpy(a->C2, b->C2, sizeof(float) * (size_t)(b->n2 * row));
            a->n1 = b->n1;
            a->n2 = b->n2;
        } else {
            memcpy(s->state[l], cp->state[l], sizeof(float) * (size_t)sz);
        }
    }
    s->pos = snap->pos;
    return SALA_OK;
}

void sala_snapshot_free(sala_snapshot *snap) {
    if (!snap) return;
    sala_session *cp = snap->copy;
    const sala_config *c = &cp->m->cfg;
    for (int l = 0; l < c->n_layers; l++) {
        free(cp->kv[l].K);
        free(cp->kv[l].V);
        free(cp->kv[l].C1);
        free(cp->kv[l].C2);
        free(cp->state[l]);
    }
    free(cp->kv);
    free(cp->state);
    free(cp);
    free(snap);
}
