/* synth.c — synthetic checkpoints in the official layout (config.json, model-0000N-of-0000M.safetensors,
 * model.safetensors.index.json) with random bf16 weights, for tests, demos and benchmarks without the
 * 19 GB download.
 *
 * Values are a pure function of (seed, tensor index, element index) (a counter-based hash), so a
 * checkpoint is the same whatever the number of threads, and 19 GB stream out without being held in
 * memory. Scales keep activations O(1): matrices uniform with std 1/sqrt(fan_in), embeddings std
 * 1/scale_emb, lm_head scaled so logits have a std of about 2, norm weights 1. The folder gets a
 * RANDOM_WEIGHTS marker and config.json "sala_random_weights": true so tools can say so. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>

#include "cpu/ops.h"
#include "model/config.h"
#include "model/safetensors.h"
#include "sala.h"
#include "util.h"

static sala_status preset_config(const char *name, sala_config *c) {
    config_defaults(c);
    if (!strcmp(name, "9b")) return SALA_OK; /* the released shape */
    memset(c->sparse, 0, sizeof c->sparse);
    if (!strcmp(name, "small")) {
        c->hidden = 256, c->inter = 768, c->n_layers = 8;
        c->nh = 8, c->nkv = 2, c->hd = 32, c->lin_nh = 8, c->lin_nkv = 8, c->lin_hd = 32;
        c->window_size = 256, c->topk = 4, c->dense_len = 1024;
        c->dim_model_base = 64, c->max_pos = 65536;
        c->sparse[0] = c->sparse[4] = c->sparse[7] = 1;
        return SALA_OK;
    }
    if (!strcmp(name, "tiny")) {
        c->hidden = 64, c->inter = 128, c->n_layers = 4;
        c->nh = 4, c->nkv = 2, c->hd = 16, c->lin_nh = 4, c->lin_nkv = 4, c->lin_hd = 16;
        c->window_size = 128, c->topk = 2, c->dense_len = 512;
        c->dim_model_base = 16, c->max_pos = 32768;
        c->sparse[0] = c->sparse[3] = 1;
        return SALA_OK;
    }
    return sala_set_error(SALA_ERR_ARG, "unknown preset '%s' (tiny, small, 9b)", name);
}

typedef struct {
    char name[128];
    int64_t rows, cols; /* cols 0: a vector */
    float std;          /* 0: constant 1 (norm weights) */
} synth_tensor;

static uint64_t mix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static int build_list(const sala_config *c, synth_tensor *t) {
    int n = 0;
    float sh = (float)(1.0 / sqrt((double)c->hidden)), si = (float)(1.0 / sqrt((double)c->inter));
#define ADD(r, cc, s, ...) (snprintf(t[n].name, sizeof t[n].name, __VA_ARGS__), t[n].rows = r, t[n].cols = cc, t[n].std = s, n++)
    ADD(c->vocab, c->hidden, (float)(1.0 / c->scale_emb), "model.embed_tokens.weight");
    for (int l = 0; l < c->n_layers; l++) {
        int sp = c->sparse[l];
        int64_t qd = sp ? (int64_t)c->nh * c->hd : (int64_t)c->lin_nh * c->lin_hd;
        int64_t kvd = sp ? (int64_t)c->nkv * c->hd : qd;
        float so = (float)(1.0 / sqrt((double)qd));
        ADD(c->hidden, 0, 0, "model.layers.%d.input_layernorm.weight", l);
        ADD(qd, c->hidden, sh, "model.layers.%d.self_attn.q_proj.weight", l);
        ADD(kvd, c->hidden, sh, "model.layers.%d.self_attn.k_proj.weight", l);
        ADD(kvd, c->hidden, sh, "model.layers.%d.self_attn.v_proj.weight", l);
        if (sp) {
            ADD(qd, c->hidden, sh, "model.layers.%d.self_attn.o_gate.weight", l);
        } else {
            ADD(qd, c->hidden, sh, "model.layers.%d.self_attn.z_proj.weight", l);
            ADD(c->lin_hd, 0, 0, "model.layers.%d.self_attn.q_norm.weight", l);
            ADD(c->lin_hd, 0, 0, "model.layers.%d.self_attn.k_norm.weight", l);
            ADD(qd, 0, 0, "model.layers.%d.self_attn.o_norm.weight", l);
        }
        ADD(c->hidden, qd, so, "model.layers.%d.self_attn.o_proj.weight", l);
        ADD(c->hidden, 0, 0, "model.layers.%d.post_attention_layernorm.weight", l);
        ADD(c->inter, c->hidden, sh, "model.layers.%d.mlp.gate_proj.weight", l);
        ADD(c->inter, c->hidden, sh, "model.layers.%d.mlp.up_proj.weight", l);
        ADD(c->hidden, c->inter, si, "model.layers.%d.mlp.down_proj.weight", l);
    }
    ADD(c->hidden, 0, 0, "model.norm.weight");
    if (!c->tie_embeddings)
        ADD(c->vocab, c->hidden, (float)(2.0 * (c->hidden / c->dim_model_base) / sqrt((double)c->hidden)), "lm_head.weight");
#undef ADD
    return n;
}

static int64_t tensor_bytes(const synth_tensor *t) { return t->rows * (t->cols ? t->cols : 1) * 2; }

/* fills elements [e0, e0+n) of tensor ti */
static void fill(uint16_t *dst, const synth_tensor *t, int ti, int64_t e0, int64_t n, uint64_t seed) {
    if (t->std == 0) {
        uint16_t one = f32_to_bf16(1.0f);
        for (int64_t i = 0; i < n; i++) dst[i] = one;
        return;
    }
    float a = t->std * 1.7320508f; /* uniform [-a, a] has std a/sqrt(3) */
    uint64_t base = mix64(seed ^ mix64((uint64_t)ti + 1));
#pragma omp parallel for schedule(static) num_threads(sala_get_threads())
    for (int64_t i = 0; i < n; i++) {
        uint64_t r = mix64(base + (uint64_t)(e0 + i));
        float u = (float)(r >> 40) * (1.0f / 16777216.0f); /* [0, 1) */
        dst[i] = f32_to_bf16((2.0f * u - 1.0f) * a);
    }
}

static sala_status write_shard(const char *path, const synth_tensor *t, int first, int count, uint64_t seed,
                               int verbose, int64_t *done, int64_t total) {
    st_write_tensor *wt = xcalloc((size_t)count, sizeof *wt);
    for (int i = 0; i < count; i++) {
        const synth_tensor *s = &t[first + i];
        wt[i].name = s->name;
        wt[i].dtype = DT_BF16;
        wt[i].ndim = s->cols ? 2 : 1;
        wt[i].shape[0] = s->rows;
        wt[i].shape[1] = s->cols;
    }
    FILE *fp = fopen(path, "wb");
    if (!fp) {
        free(wt);
        return sala_set_error(SALA_ERR_IO, "cannot create %s: %s", path, strerror(errno));
    }
    sala_status st = st_write_header(fp, wt, count, "{\"format\":\"pt\"}", path);
    enum { BUF = 1 << 23 }; /* elements per write */
    uint16_t *buf = xmalloc(sizeof(uint16_t) * BUF);
    double t0 = sala_time(), last = 0;
    for (int i = 0; i < count && !st; i++) {
        int64_t ne = tensor_bytes(&t[first + i]) / 2;
        for (int64_t e = 0; e < ne && !st; e += BUF) {
            int64_t n = ne - e < BUF ? ne - e : BUF;
            fill(buf, &t[first + i], first + i, e, n, seed);
            if (fwrite(buf, 2, (size_t)n, fp) != (size_t)n)
                st = sala_set_error(SALA_ERR_IO, "write error on %s (disk full?)", path);
            *done += n * 2;
            if (verbose && sala_time() - last > 1.0) {
                last = sala_time();
                fprintf(stderr, "\rsynth: %.2f / %.2f GB", *done / 1e9, total / 1e9);
            }
        }
    }
    (void)t0;
    free(buf);
    if (fclose(fp) != 0 && !st) st = sala_set_error(SALA_ERR_IO, "write error on %s", path);
    free(wt);
    return st;
}

sala_status sala_synth_write(const char *out_dir, const char *preset, const char *config_path, uint64_t seed,
                             int verbose) {
    sala_config c;
    sala_status st;
    if (config_path)
        st = config_load(&c, config_path);
    else
        st = preset_config(preset ? preset : "tiny", &c);
    if (st) return st;
    if (mkdir(out_dir, 0755) != 0 && errno != EEXIST)
        return sala_set_error(SALA_ERR_IO, "cannot create %s: %s", out_dir, strerror(errno));
    synth_tensor *t = xcalloc((size_t)(16 * c.n_layers + 8), sizeof *t);
    int n = build_list(&c, t);
    int64_t total = 0;
    for (int i = 0; i < n; i++) total += tensor_bytes(&t[i]);
    /* shards of at most 5 GB, like the official upload; small models still get 2 shards so the
     * sharded path is what tests exercise */
    int64_t max_shard = total > (int64_t)1 << 30 ? (int64_t)5 << 30 : (total + 1) / 2 + 1;
    int n_shards = 0, *first = xcalloc((size_t)n + 1, sizeof(int));
    {
        int64_t acc = 0;
        for (int i = 0; i < n; i++) {
            int64_t b = tensor_bytes(&t[i]);
            if (i == 0 || acc + b > max_shard) {
                first[n_shards++] = i;
                acc = 0;
            }
            acc += b;
        }
        first[n_shards] = n;
    }
    cJSON *idx = cJSON_CreateObject(), *meta = cJSON_AddObjectToObject(idx, "metadata");
    cJSON_AddNumberToObject(meta, "total_size", (double)total);
    cJSON *wm = cJSON_AddObjectToObject(idx, "weight_map");
    int64_t done = 0;
    for (int sh = 0; sh < n_shards && !st; sh++) {
        char fname[64];
        snprintf(fname, sizeof fname, "model-%05d-of-%05d.safetensors", sh + 1, n_shards);
        for (int i = first[sh]; i < first[sh + 1]; i++) cJSON_AddStringToObject(wm, t[i].name, fname);
        char *path = sala_path_join(out_dir, fname);
        st = write_shard(path, t, first[sh], first[sh + 1] - first[sh], seed, verbose, &done, total);
        free(path);
    }
    if (verbose) fprintf(stderr, "\rsynth: %.2f GB in %d shards          \n", total / 1e9, n_shards);
    char *js = cJSON_Print(idx);
    cJSON_Delete(idx);
    struct {
        const char *name;
        char *text;
    } files[3] = {{"model.safetensors.index.json", js}, {"config.json", NULL}, {"RANDOM_WEIGHTS", NULL}};
    char *cj = config_to_json(&c);
    cJSON *cfg = cJSON_Parse(cj);
    free(cj);
    cJSON_AddBoolToObject(cfg, "sala_random_weights", 1);
    cJSON_AddNumberToObject(cfg, "sala_synth_seed", (double)seed);
    files[1].text = cJSON_Print(cfg);
    cJSON_Delete(cfg);
    files[2].text = xstrdup("The weights in this folder are random (made by `sala synth`); its output is noise.\n");
    for (int i = 0; i < 3 && !st; i++) {
        char *path = sala_path_join(out_dir, files[i].name);
        FILE *fp = fopen(path, "wb");
        int ok = fp && fputs(files[i].text, fp) >= 0;
        if (fp && fclose(fp) != 0) ok = 0;
        if (!ok) st = sala_set_error(SALA_ERR_IO, "cannot write %s", path);
        free(path);
    }
    for (int i = 0; i < 3; i++) free(files[i].text);
    free(first);
    free(t);
    return st;
}
