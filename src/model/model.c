/* model.c — loading a checkpoint folder: config.json, the safetensors shards (via the index when
 * sharded), the tensor table of MODEL.md §2 with shape checks, and the memory plan. */
#include "model/model.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <string.h>

#include "cuda/backend.h"
#include "util.h"

sala_model_params sala_model_default_params(void) {
    sala_model_params p;
    memset(&p, 0, sizeof p);
    p.device = SALA_DEVICE_CPU;
    p.precision = SALA_PRECISION_DEFAULT;
    return p;
}

/* Opens the shards. Single file: model.safetensors; sharded: the files named by the index. */
static sala_status open_shards(sala_model *m) {
    char *idx_path = sala_path_join(m->dir, "model.safetensors.index.json");
    char *single = sala_path_join(m->dir, "model.safetensors");
    sala_status st = SALA_OK;
    if (sala_file_exists(idx_path)) {
        char *buf;
        size_t len;
        st = sala_read_file(idx_path, &buf, &len);
        if (!st) {
            cJSON *root = cJSON_ParseWithLength(buf, len);
            cJSON *wm = root ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
            if (!wm || !cJSON_IsObject(wm)) {
                st = sala_set_error(SALA_ERR_FORMAT, "%s: not valid JSON with a weight_map object", idx_path);
            } else {
                int cap = 0;
                for (cJSON *e = wm->child; e; e = e->next) cap++;
                char **names = xcalloc((size_t)cap + 1, sizeof(char *));
                int n = 0;
                for (cJSON *e = wm->child; e && !st; e = e->next) {
                    if (!cJSON_IsString(e) || strchr(e->valuestring, '/') || !strcmp(e->valuestring, "..")) {
                        st = sala_set_error(SALA_ERR_FORMAT, "%s: entry %s does not name a file in the folder",
                                            idx_path, e->string);
                        break;
                    }
                    int seen = 0;
                    for (int i = 0; i < n; i++) seen |= !strcmp(names[i], e->valuestring);
                    if (!seen) names[n++] = e->valuestring;
                }
                if (!st) {
                    m->files = xcalloc((size_t)n + 1, sizeof(st_file));
                    for (int i = 0; i < n && !st; i++) {
                        char *p = sala_path_join(m->dir, names[i]);
                        st = st_open(&m->files[i], p);
                        free(p);
                        if (!st) m->n_files++;
                    }
                    /* every name in the index must be in the file it points to */
                    for (cJSON *e = wm->child; e && !st; e = e->next) {
                        int fi = 0;
                        while (fi < m->n_files && strcmp(names[fi], e->valuestring)) fi++;
                        if (fi == m->n_files || !st_find(&m->files[fi], e->string))
                            st = sala_set_error(SALA_ERR_FORMAT, "%s lists tensor %s in %s, which does not hold it",
                                                idx_path, e->string, e->valuestring);
                    }
                }
                free(names);
            }
            cJSON_Delete(root);
            free(buf);
        }
    } else if (sala_file_exists(single)) {
        m->files = xcalloc(1, sizeof(st_file));
        st = st_open(&m->files[0], single);
        if (!st) m->n_files = 1;
    } else {
        st = sala_set_error(SALA_ERR_IO, "%s has neither model.safetensors nor model.safetensors.index.json. HINT: "
                            "pass the folder of a Hugging Face checkpoint (or make one with `sala synth`)", m->dir);
    }
    free(idx_path);
    free(single);
    return st;
}

typedef struct {
    sala_model *m;
    unsigned char **used; /* per file, per tensor */
} loader;

static const st_tensor *find_tensor(loader *ld, const char *name, int *fi, int *ti) {
    for (int f = 0; f < ld->m->n_files; f++) {
        const st_file *sf = &ld->m->files[f];
        for (int t = 0; t < sf->n_tensors; t++)
            if (!strcmp(sf->tensors[t].name, name)) {
                *fi = f;
                *ti = t;
                return &sf->tensors[t];
            }
    }
    return NULL;
}

/* A 1-D or 2-D float tensor of the given shape (cols = 0 for 1-D). */
static sala_status get_tensor(loader *ld, const char *name, int64_t rows, int64_t cols, const st_tensor **out) {
    int fi, ti;
    const st_tensor *t = find_tensor(ld, name, &fi, &ti);
    if (!t)
        return sala_set_error(SALA_ERR_FORMAT, "tensor %s is missing from the checkpoint in %s", name, ld->m->dir);
    if (t->dtype != DT_BF16 && t->dtype != DT_F16 && t->dtype != DT_F32)
        return sala_set_error(SALA_ERR_UNSUPPORTED, "tensor %s is %s; weights must be BF16, F16 or F32", name,
                              dtype_name(t->dtype));
    int want_ndim = cols ? 2 : 1;
    if (t->ndim != want_ndim || t->shape[0] != rows || (cols && t->shape[1] != cols)) {
        char got[128] = "", want[64];
        for (int d = 0; d < t->ndim; d++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", d ? ", " : "", (long long)t->shape[d]);
        if (cols)
            snprintf(want, sizeof want, "%lld, %lld", (long long)rows, (long long)cols);
        else
            snprintf(want, sizeof want, "%lld", (long long)rows);
        return sala_set_error(SALA_ERR_CONFIG, "tensor %s has shape [%s]; config.json implies [%s]", name, got, want);
    }
    ld->used[fi][ti] = 1;
    ld->m->n_params += rows * (cols ? cols : 1);
    *out = t;
    return SALA_OK;
}

static sala_status get_weight(loader *ld, sala_weight *w, const char *name, int64_t rows, int64_t cols) {
    const st_tensor *t;
    sala_status st = get_tensor(ld, name, rows, cols, &t);
    if (st) return st;
    *w = (sala_weight){t->dtype, t->data, rows, cols};
    return SALA_OK;
}

static sala_status get_vector(loader *ld, float **v, const char *name, int64_t n) {
    const st_tensor *t;
    sala_status st = get_tensor(ld, name, n, 0, &t);
    if (st) return st;
    sala_weight w = {t->dtype, t->data, 1, n};
    *v = xmalloc(sizeof(float) * (size_t)n);
    weight_row_f32(&w, 0, *v);
    return SALA_OK;
}

#define TRY(x)                                                                                               \
    do {                                                                                                     \
        sala_status s_ = (x);                                                                                \
        if (s_) return s_;                                                                                   \
    } while (0)

static sala_status load_tensors(sala_model *m) {
    const sala_config *c = &m->cfg;
    loader ld = {m, xcalloc((size_t)m->n_files, sizeof(unsigned char *))};
    for (int f = 0; f < m->n_files; f++) ld.used[f] = xcalloc((size_t)m->files[f].n_tensors + 1, 1);
    sala_status st = SALA_OK;
    int64_t H = c->hidden, I = c->inter;
    char nm[256];
#define W(w, rows, cols, ...) (snprintf(nm, sizeof nm, __VA_ARGS__), get_weight(&ld, w, nm, rows, cols))
#define VEC(v, n, ...) (snprintf(nm, sizeof nm, __VA_ARGS__), get_vector(&ld, v, nm, n))
    m->layers = xcalloc((size_t)c->n_layers, sizeof(sala_layer));
    st = W(&m->embed, c->vocab, H, "model.embed_tokens.weight");
    if (!st) st = VEC(&m->final_norm, H, "model.norm.weight");
    if (!st) {
        if (c->tie_embeddings)
            m->lm_head = m->embed;
        else
            st = W(&m->lm_head, c->vocab, H, "lm_head.weight");
    }
    for (int l = 0; l < c->n_layers && !st; l++) {
        sala_layer *L = &m->layers[l];
        L->sparse = c->sparse[l];
        int64_t qd = layer_qdim(c, L->sparse), kvd = layer_kvdim(c, L->sparse);
        const char *pre = "model.layers";
        if (!st) st = VEC(&L->in_norm, H, "%s.%d.input_layernorm.weight", pre, l);
        if (!st) st = VEC(&L->post_norm, H, "%s.%d.post_attention_layernorm.weight", pre, l);
        if (!st) st = W(&L->wq, qd, H, "%s.%d.self_attn.q_proj.weight", pre, l);
        if (!st) st = W(&L->wk, kvd, H, "%s.%d.self_attn.k_proj.weight", pre, l);
        if (!st) st = W(&L->wv, kvd, H, "%s.%d.self_attn.v_proj.weight", pre, l);
        if (!st) st = W(&L->wo, H, qd, "%s.%d.self_attn.o_proj.weight", pre, l);
        if (L->sparse) {
            if (!st && c->attn_use_output_gate) st = W(&L->wgate, qd, H, "%s.%d.self_attn.o_gate.weight", pre, l);
        } else {
            if (!st && c->use_output_gate) st = W(&L->wgate, qd, H, "%s.%d.self_attn.z_proj.weight", pre, l);
            if (!st && c->qk_norm) st = VEC(&L->q_norm, c->lin_hd, "%s.%d.self_attn.q_norm.weight", pre, l);
            if (!st && c->qk_norm) st = VEC(&L->k_norm, c->lin_hd, "%s.%d.self_attn.k_norm.weight", pre, l);
            if (!st && c->use_output_norm)
                st = VEC(&L->o_norm, qd, "%s.%d.self_attn.o_norm.weight", pre, l);
        }
        if (!st) st = W(&L->mlp_gate, I, H, "%s.%d.mlp.gate_proj.weight", pre, l);
        if (!st) st = W(&L->mlp_up, I, H, "%s.%d.mlp.up_proj.weight", pre, l);
        if (!st) st = W(&L->mlp_down, H, I, "%s.%d.mlp.down_proj.weight", pre, l);
    }
#undef W
#undef VEC
    for (int f = 0; f < m->n_files && !st; f++)
        for (int t = 0; t < m->files[f].n_tensors && !st; t++) {
            const st_tensor *tt = &m->files[f].tensors[t];
            if (ld.used[f][t]) {
                m->weight_bytes += tt->nbytes;
            } else if (c->tie_embeddings && !strcmp(tt->name, "lm_head.weight")) {
                /* a tied checkpoint may still carry the copy; it is the same matrix */
            } else {
                st = sala_set_error(SALA_ERR_CONFIG, "tensor %s (in %s) is not part of the model config.json describes "
                                    "(wrong mixer_types, or a variant sala does not implement)", tt->name,
                                    m->files[f].path);
            }
        }
    for (int f = 0; f < m->n_files; f++) free(ld.used[f]);
    free(ld.used);
    return st;
}

sala_status sala_model_load(const char *dir, const sala_model_params *p, sala_model **out) {
    *out = NULL;
    sala_clear_error();
    sala_model *m = xcalloc(1, sizeof *m);
    m->params = p ? *p : sala_model_default_params();
    m->dir = xstrdup(dir);
    char *cfg_path = sala_path_join(dir, "config.json");
    sala_status st = SALA_OK;
    if (!sala_file_exists(cfg_path))
        st = sala_set_error(SALA_ERR_IO, "%s: no config.json. HINT: -m takes the checkpoint folder", dir);
    if (!st) st = config_load(&m->cfg, cfg_path);
    free(cfg_path);
    if (!st) st = open_shards(m);
    if (!st) st = load_tensors(m);
    if (!st) {
        const sala_config *c = &m->cfg;
        for (int l = 0; l < c->n_layers; l++) *(c->sparse[l] ? &m->n_sparse : &m->n_linear) += 1;
        m->lambda = xmalloc(sizeof(double) * (size_t)c->lin_nh);
        lightning_decay(m->lambda, c->lin_nh);
        sala_set_threads(m->params.n_threads);
    }
    if (!st && m->params.device == SALA_DEVICE_CUDA) st = cuda_model_new(m, &m->params, &m->cuda);
    if (st) {
        sala_model_free(m);
        return st;
    }
    *out = m;
    return SALA_OK;
}

void sala_model_free(sala_model *m) {
    if (!m) return;
    if (m->cuda) cuda_model_free(m->cuda);
    if (m->layers)
        for (int l = 0; l < m->cfg.n_layers; l++) {
            sala_layer *L = &m->layers[l];
            free(L->in_norm);
            free(L->post_norm);
            free(L->q_norm);
            free(L->k_norm);
            free(L->o_norm);
        }
    free(m->layers);
    free(m->final_norm);
    free(m->lambda);
    for (int f = 0; f < m->n_files; f++) st_close(&m->files[f]);
    free(m->files);
    free(m->dir);
    free(m);
}

void sala_model_get_info(const sala_model *m, sala_model_info *o) {
    const sala_config *c = &m->cfg;
    memset(o, 0, sizeof *o);
    o->n_layers = c->n_layers;
    o->hidden = c->hidden;
    o->intermediate = c->inter;
    o->vocab = c->vocab;
    o->n_heads = c->nh;
    o->n_kv_heads = c->nkv;
    o->head_dim = c->hd;
    o->lin_heads = c->lin_nh;
    o->lin_head_dim = c->lin_hd;
    o->n_sparse_layers = m->n_sparse;
    o->n_linear_layers = m->n_linear;
    o->max_position = c->max_pos;
    o->bos_id = c->bos;
    o->n_eos = c->n_eos;
    for (int i = 0; i < c->n_eos && i < 8; i++) o->eos_ids[i] = c->eos[i];
    o->dense_len = c->dense_len;
    o->n_params = m->n_params;
    o->weight_bytes = m->weight_bytes;
    int n = c->n_layers < (int)sizeof o->layer_pattern - 1 ? c->n_layers : (int)sizeof o->layer_pattern - 1;
    for (int l = 0; l < n; l++) o->layer_pattern[l] = c->sparse[l] ? 'S' : 'L';
}

sala_mem_plan sala_model_mem_plan(const sala_model *m, int64_t n_ctx, int chunk, int kv_elem_bytes) {
    const sala_config *c = &m->cfg;
    sala_mem_plan p = {0};
    if (chunk <= 0) chunk = 512;
    p.weight_bytes = m->weight_bytes;
    int64_t kvrow = (int64_t)c->nkv * c->hd;
    p.kv_bytes = (int64_t)m->n_sparse * n_ctx * kvrow * 2 * kv_elem_bytes;
    int64_t n1 = infllm_n_windows(n_ctx, c->kernel_size, c->kernel_stride);
    int64_t n2 = infllm_n_windows(n_ctx, 4 * c->kernel_size, 4 * c->kernel_stride);
    p.comp_bytes = (int64_t)m->n_sparse * (n1 + n2) * kvrow * kv_elem_bytes;
    p.state_bytes = (int64_t)m->n_linear * c->lin_nh * c->lin_hd * c->lin_hd * 4;
    int64_t qd = c->nh * c->hd > c->lin_nh * c->lin_hd ? c->nh * c->hd : c->lin_nh * c->lin_hd;
    /* x, a, y [C, H]; q, k, v, gate, o [C, qd]; gate/up [C, I]; logits of one row [V] */
    p.act_bytes = (int64_t)chunk * (3 * c->hidden + 5 * qd + 2 * c->inter) * 4 + (int64_t)c->vocab * 4;
    p.total_bytes = p.weight_bytes + p.kv_bytes + p.comp_bytes + p.state_bytes + p.act_bytes;
    return p;
}
