/* model.cu — the CUDA backend's model: validate the config for the GPU path, plan one pool for every
 * weight, upload a loaded checkpoint into it once (or draw synthetic weights on the GPU for the
 * benchmark). Weights stay bf16; norm vectors fp32; the mixer's input projections and the FFN's gate/up
 * pair are fused into one matrix each (backend_internal.cuh). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
#include "cpu/ops.h"
#include "model/model.h"
}
#include "cuda/backend_internal.cuh"

sala_status cu_fail(int err, const char *what) {
    return sala_set_error(SALA_ERR_DEVICE, "GPU failure in %s: %s", what, cudaGetErrorString((cudaError_t)err));
}

static int hd_ok(int hd) { return hd == 16 || hd == 32 || hd == 64 || hd == 128; }

/* What the kernels support; everything else is refused with the reason. */
static sala_status check_config(const sala_config *c) {
    if (!hd_ok(c->hd) || !hd_ok(c->lin_hd))
        return sala_set_error(SALA_ERR_UNSUPPORTED, "the CUDA backend supports head_dim 16, 32, 64 or 128 (config: "
                              "head_dim %d, lightning_head_dim %d). HINT: use --device cpu", c->hd, c->lin_hd);
    if (c->nkv <= 0 || c->nh % c->nkv || 64 % (c->nh / c->nkv))
        return sala_set_error(SALA_ERR_UNSUPPORTED, "the CUDA backend needs num_attention_heads / num_key_value_heads "
                              "to divide 64 (config: %d / %d). HINT: use --device cpu", c->nh, c->nkv);
    if (c->lin_nkv != c->lin_nh)
        return sala_set_error(SALA_ERR_UNSUPPORTED, "the CUDA backend needs lightning_nkv == lightning_nh");
    if (c->block_size != 64 || c->kernel_stride <= 0 || 64 % c->kernel_stride || 64 % (64 / c->kernel_stride) ||
        c->kernel_size <= 0)
        return sala_set_error(SALA_ERR_UNSUPPORTED, "the CUDA backend needs sparse_config block_size 64 and a "
                              "kernel_stride dividing it (config: %d, %d). HINT: use --device cpu", c->block_size,
                              c->kernel_stride);
    if (c->hidden % 8 || c->inter % 8)
        return sala_set_error(SALA_ERR_UNSUPPORTED, "the CUDA backend needs hidden and intermediate sizes divisible "
                              "by 8");
    return SALA_OK;
}

typedef struct {
    char *base; /* NULL: only measure */
    int64_t off;
} carver;

static void *carve(carver *cv, int64_t bytes) {
    int64_t o = (cv->off + 255) & ~(int64_t)255;
    cv->off = o + bytes;
    return cv->base ? cv->base + o : NULL;
}

/* Lays every weight out in the pool (or measures it when cv->base is NULL). gate[l]: layer l has a gate. */
static void model_layout(cuda_model *cm, carver *cv, const int *gate, int tied) {
    const sala_config *c = &cm->cfg;
    int64_t H = c->hidden, I = c->inter, V = c->vocab;
    cm->embed = (uint16_t *)carve(cv, V * H * 2);
    cm->lm_head = tied ? cm->embed : (uint16_t *)carve(cv, V * H * 2);
    cm->final_norm = (float *)carve(cv, H * 4);
    cm->max_nin = 0;
    cm->qd_max = 0;
    for (int l = 0; l < c->n_layers; l++) {
        cu_layer *L = &cm->layers[l];
        L->sparse = c->sparse[l];
        L->qd = L->sparse ? c->nh * c->hd : c->lin_nh * c->lin_hd;
        L->kvd = L->sparse ? c->nkv * c->hd : L->qd;
        L->has_gate = gate[l];
        L->n_in = L->qd + 2 * L->kvd + (L->has_gate ? L->qd : 0);
        if (L->n_in > cm->max_nin) cm->max_nin = L->n_in;
        if (L->qd > cm->qd_max) cm->qd_max = L->qd;
        L->ln1 = (float *)carve(cv, H * 4);
        L->ln2 = (float *)carve(cv, H * 4);
        L->w_in = (uint16_t *)carve(cv, (int64_t)L->n_in * H * 2);
        L->w_o = (uint16_t *)carve(cv, H * L->qd * 2);
        L->w_gu = (uint16_t *)carve(cv, 2 * I * H * 2);
        L->w_down = (uint16_t *)carve(cv, H * I * 2);
        L->q_norm = L->k_norm = L->o_norm = NULL;
        if (!L->sparse) {
            L->q_norm = (float *)carve(cv, c->lin_hd * 4);
            L->k_norm = (float *)carve(cv, c->lin_hd * 4);
            L->o_norm = (float *)carve(cv, (int64_t)L->qd * 4);
        }
    }
    cm->lambda = (double *)carve(cv, (int64_t)c->lin_nh * 8);
    cm->inv_freq_l = (float *)carve(cv, (int64_t)c->lin_hd * 4);
    cm->inv_freq_s = (float *)carve(cv, (int64_t)c->hd * 4);
}

/* Shared start: device, config, layout, the pool. */
static sala_status model_begin(const sala_config *cfg, const sala_model_params *p, const int *gate, int tied,
                               const char *what, cuda_model **out) {
    *out = NULL;
    sala_status st = check_config(cfg);
    if (st) return st;
    int ndev = cu_device_count();
    if (ndev <= 0)
        return sala_set_error(SALA_ERR_DEVICE, "no CUDA GPU is visible to this process. HINT: use --device cpu");
    if (p->gpu_id < 0 || p->gpu_id >= ndev)
        return sala_set_error(SALA_ERR_ARG, "GPU %d does not exist (this machine has %d)", p->gpu_id, ndev);
    int e = (int)cudaSetDevice(p->gpu_id);
    if (e) return cu_fail(e, "cudaSetDevice");
    cuda_model *cm = (cuda_model *)xcalloc(1, sizeof *cm);
    cm->cfg = *cfg;
    cm->precision = p->precision == SALA_PRECISION_FP32 ? SALA_PRECISION_FP32 : SALA_PRECISION_BF16;
    cm->act = cm->precision == SALA_PRECISION_FP32 ? CU_F32 : CU_BF16;
    cm->verbose = p->verbose;
    cm->layers = (cu_layer *)xcalloc((size_t)cfg->n_layers, sizeof(cu_layer));
    for (int l = 0; l < cfg->n_layers; l++) *(cfg->sparse[l] ? &cm->n_sparse : &cm->n_linear) += 1;
    carver cv = {NULL, 0};
    model_layout(cm, &cv, gate, tied);
    cm->pool_bytes = cv.off;
    int64_t fr = 0, tot = 0;
    cu_mem_info(&fr, &tot);
    size_t scratch = cm->act == CU_F32 ? (size_t)64 << 20 : 0;
    if (cm->pool_bytes + (int64_t)scratch + (96ll << 20) > fr) {
        char a[64], b[64];
        st = sala_set_error(SALA_ERR_NOMEM, "the weights need %s on the GPU but only %s is free on %s. HINT: use a "
                            "GPU with more memory or --device cpu", sala_fmt_bytes(cm->pool_bytes, a, sizeof a),
                            sala_fmt_bytes(fr, b, sizeof b), cu_device_name(p->gpu_id));
        cuda_model_free(cm);
        return st;
    }
    cm->pool = cu_malloc((size_t)cm->pool_bytes);
    if (!cm->pool) {
        long long want = (long long)cm->pool_bytes;
        cuda_model_free(cm);
        return sala_set_error(SALA_ERR_NOMEM, "cudaMalloc of %lld bytes of weights failed", want);
    }
    cv.base = (char *)cm->pool;
    cv.off = 0;
    model_layout(cm, &cv, gate, tied);
    if ((e = (int)cudaStreamCreate(&cm->stream)) || (e = cu_gemm_new(&cm->gemm, scratch))) {
        cuda_model_free(cm);
        return cu_fail(e, "creating the stream / cuBLASLt handle");
    }
    /* RoPE inverse frequencies exactly as op_rope: 1.0f / (float)pow(theta, 2i/hd) */
    float inv[256];
    for (int i = 0; i < cfg->lin_hd / 2; i++) inv[i] = 1.0f / (float)pow(cfg->rope_theta, (double)(2 * i) / cfg->lin_hd);
    e = cu_h2d(cm->inv_freq_l, inv, sizeof(float) * (size_t)(cfg->lin_hd / 2));
    for (int i = 0; i < cfg->hd / 2; i++) inv[i] = 1.0f / (float)pow(cfg->rope_theta, (double)(2 * i) / cfg->hd);
    if (!e) e = cu_h2d(cm->inv_freq_s, inv, sizeof(float) * (size_t)(cfg->hd / 2));
    if (e) {
        cuda_model_free(cm);
        return cu_fail(e, "upload");
    }
    if (cm->verbose) {
        char a[64];
        fprintf(stderr, "sala: %s on %s: weights %s in one pool, %s activations\n", what, cu_device_name(p->gpu_id),
                sala_fmt_bytes(cm->pool_bytes, a, sizeof a), cm->act == CU_F32 ? "fp32" : "bf16");
    }
    *out = cm;
    return SALA_OK;
}

/* a [rows, cols] weight into bf16 device memory; other dtypes are rounded to bf16 on the way */
static sala_status upload_matrix(uint16_t *dst, const sala_weight *w, int64_t rows, int64_t cols, const char *name) {
    if (!w->data || w->rows != rows || w->cols != cols)
        return sala_set_error(SALA_ERR_CONFIG, "weight %s: expected [%lld, %lld]", name, (long long)rows, (long long)cols);
    int e;
    if (w->dtype == DT_BF16) {
        e = cu_h2d(dst, w->data, (size_t)(rows * cols * 2));
    } else {
        float *row = (float *)xmalloc(sizeof(float) * (size_t)cols);
        uint16_t *stage = (uint16_t *)xmalloc(sizeof(uint16_t) * (size_t)cols);
        e = 0;
        for (int64_t r = 0; r < rows && !e; r++) {
            weight_row_f32(w, r, row);
            for (int64_t i = 0; i < cols; i++) stage[i] = f32_to_bf16(row[i]);
            e = cu_h2d(dst + r * cols, stage, (size_t)cols * 2);
        }
        free(row);
        free(stage);
    }
    return e ? cu_fail(e, "weight upload") : SALA_OK;
}

static sala_status upload_vec(float *dst, const float *src, int64_t n) {
    if (!src) return cu_fill_f32(NULL, dst, n, 1.0f) ? cu_fail(1, "fill") : SALA_OK;
    int e = cu_h2d(dst, src, (size_t)n * 4);
    return e ? cu_fail(e, "weight upload") : SALA_OK;
}

extern "C" sala_status cuda_model_new(const struct sala_model *m, const sala_model_params *p, cuda_model **out) {
    const sala_config *c = &m->cfg;
    int *gate = (int *)xcalloc((size_t)c->n_layers, sizeof(int));
    for (int l = 0; l < c->n_layers; l++) gate[l] = m->layers[l].wgate.data != NULL;
    int tied = m->lm_head.data == m->embed.data;
    cuda_model *cm;
    double t0 = sala_time();
    sala_status st = model_begin(c, p, gate, tied, "model", &cm);
    free(gate);
    if (st) return st;
    int64_t H = c->hidden, I = c->inter, V = c->vocab;
    st = upload_matrix(cm->embed, &m->embed, V, H, "embed_tokens");
    if (!st && !tied) st = upload_matrix(cm->lm_head, &m->lm_head, V, H, "lm_head");
    if (!st) st = upload_vec(cm->final_norm, m->final_norm, H);
    for (int l = 0; l < c->n_layers && !st; l++) {
        const sala_layer *S = &m->layers[l];
        cu_layer *L = &cm->layers[l];
        st = upload_vec(L->ln1, S->in_norm, H);
        if (!st) st = upload_vec(L->ln2, S->post_norm, H);
        if (!st) st = upload_matrix(L->w_in, &S->wq, L->qd, H, "q_proj");
        if (!st) st = upload_matrix(L->w_in + (int64_t)L->qd * H, &S->wk, L->kvd, H, "k_proj");
        if (!st) st = upload_matrix(L->w_in + (int64_t)(L->qd + L->kvd) * H, &S->wv, L->kvd, H, "v_proj");
        if (!st && L->has_gate)
            st = upload_matrix(L->w_in + (int64_t)(L->qd + 2 * L->kvd) * H, &S->wgate, L->qd, H, "gate");
        if (!st) st = upload_matrix(L->w_o, &S->wo, H, L->qd, "o_proj");
        if (!st) st = upload_matrix(L->w_gu, &S->mlp_gate, I, H, "gate_proj");
        if (!st) st = upload_matrix(L->w_gu + I * H, &S->mlp_up, I, H, "up_proj");
        if (!st) st = upload_matrix(L->w_down, &S->mlp_down, H, I, "down_proj");
        if (!st && !L->sparse) {
            st = upload_vec(L->q_norm, S->q_norm, c->lin_hd);
            if (!st) st = upload_vec(L->k_norm, S->k_norm, c->lin_hd);
            if (!st) st = upload_vec(L->o_norm, S->o_norm, L->qd);
        }
    }
    if (!st) {
        int e = cu_h2d(cm->lambda, m->lambda, sizeof(double) * (size_t)c->lin_nh);
        if (!e) e = cu_sync();
        if (e) st = cu_fail(e, "upload");
    }
    if (st) {
        cuda_model_free(cm);
        return st;
    }
    if (cm->verbose) fprintf(stderr, "sala: weights uploaded in %.2f s\n", sala_time() - t0);
    *out = cm;
    return SALA_OK;
}

extern "C" sala_status cuda_model_new_synth(const sala_config *c, const sala_model_params *p, uint64_t seed,
                                            cuda_model **out) {
    int *gate = (int *)xcalloc((size_t)c->n_layers, sizeof(int));
    for (int l = 0; l < c->n_layers; l++) gate[l] = c->sparse[l] ? c->attn_use_output_gate : c->use_output_gate;
    cuda_model *cm;
    sala_status st = model_begin(c, p, gate, c->tie_embeddings, "synthetic model", &cm);
    free(gate);
    if (st) return st;
    int64_t H = c->hidden, I = c->inter, V = c->vocab;
    uint64_t k = seed * 1000003ull;
    int e = cu_fill_uniform_bf16(cm->stream, cm->embed, V * H, k++, 0.1f);
    if (!e && !c->tie_embeddings) e = cu_fill_uniform_bf16(cm->stream, cm->lm_head, V * H, k++, sqrtf(3.0f / H));
    if (!e) e = cu_fill_f32(cm->stream, cm->final_norm, H, 1.0f);
    for (int l = 0; l < c->n_layers && !e; l++) {
        cu_layer *L = &cm->layers[l];
        e = cu_fill_f32(cm->stream, L->ln1, H, 1.0f);
        if (!e) e = cu_fill_f32(cm->stream, L->ln2, H, 1.0f);
        if (!e) e = cu_fill_uniform_bf16(cm->stream, L->w_in, (int64_t)L->n_in * H, k++, sqrtf(3.0f / H));
        if (!e) e = cu_fill_uniform_bf16(cm->stream, L->w_o, H * L->qd, k++, sqrtf(3.0f / L->qd));
        if (!e) e = cu_fill_uniform_bf16(cm->stream, L->w_gu, 2 * I * H, k++, sqrtf(3.0f / H));
        if (!e) e = cu_fill_uniform_bf16(cm->stream, L->w_down, H * I, k++, sqrtf(3.0f / I));
        if (!e && !L->sparse) {
            e = cu_fill_f32(cm->stream, L->q_norm, c->lin_hd, 1.0f);
            if (!e) e = cu_fill_f32(cm->stream, L->k_norm, c->lin_hd, 1.0f);
            if (!e) e = cu_fill_f32(cm->stream, L->o_norm, L->qd, 1.0f);
        }
    }
    if (!e) {
        double *lam = (double *)xmalloc(sizeof(double) * (size_t)c->lin_nh);
        lightning_decay(lam, c->lin_nh);
        e = cu_h2d(cm->lambda, lam, sizeof(double) * (size_t)c->lin_nh);
        free(lam);
    }
    if (!e) e = cu_sync();
    if (e) {
        cuda_model_free(cm);
        return cu_fail(e, "synthetic weights");
    }
    *out = cm;
    return SALA_OK;
}

extern "C" void cuda_model_free(cuda_model *cm) {
    if (!cm) return;
    if (cm->gemm) cu_gemm_free(cm->gemm);
    if (cm->stream) cudaStreamDestroy(cm->stream);
    cu_free(cm->pool);
    free(cm->layers);
    free(cm);
}

extern "C" void cuda_device_info(char *name, int cap, int64_t *used, int64_t *total) {
    int dev = 0;
    cudaGetDevice(&dev);
    snprintf(name, (size_t)cap, "%s", cu_device_name(dev));
    int64_t fr = 0, tot = 0;
    cu_mem_info(&fr, &tot);
    *used = tot - fr;
    *total = tot;
}
