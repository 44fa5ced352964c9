/* test_loader.c — checkpoint loading: the official layouts load; every kind of bad input gives a clear
 * error (a non-OK status and a message naming the problem), never a crash.
 *
 * Bad checkpoints are built in a temp folder from the golden tiny-dense checkpoint: its tensors are
 * re-written with one change each, or a hand-made header replaces a shard. */
#include <sys/stat.h>
#include <unistd.h>

#include "model/config.h"
#include "model/safetensors.h"
#include "sala.h"
#include "test.h"
#include "util.h"

static char tmpdir[256];

static void write_text(const char *dir, const char *name, const char *text, size_t len) {
    char *p = sala_path_join(dir, name);
    FILE *f = fopen(p, "wb");
    if (f) {
        fwrite(text, 1, len, f);
        fclose(f);
    }
    free(p);
}

static char *golden_config(void) {
    char *buf = NULL;
    size_t len;
    sala_read_file(test_path("golden/tiny-dense/config.json"), &buf, &len);
    return buf;
}

/* fresh folder holding the golden config and, unless mutate() says otherwise, all its tensors in one
 * model.safetensors. mutate may edit the tensor list (returns the new count). */
typedef int (*mutate_fn)(st_write_tensor *t, int n);

static const char *make_ckpt(const char *name, mutate_fn mutate, const char *config_text) {
    static char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", tmpdir, name);
    mkdir(dir, 0755);
    char *cfg = config_text ? xstrdup(config_text) : golden_config();
    write_text(dir, "config.json", cfg, strlen(cfg));
    free(cfg);
    st_file f[2];
    st_open(&f[0], test_path("golden/tiny-dense/model-00001-of-00002.safetensors"));
    st_open(&f[1], test_path("golden/tiny-dense/model-00002-of-00002.safetensors"));
    int n = f[0].n_tensors + f[1].n_tensors, k = 0;
    st_write_tensor *t = calloc((size_t)n + 4, sizeof *t);
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < f[i].n_tensors; j++) {
            const st_tensor *s = &f[i].tensors[j];
            t[k].name = s->name;
            t[k].dtype = s->dtype;
            t[k].ndim = s->ndim;
            memcpy(t[k].shape, s->shape, sizeof s->shape);
            t[k].data = s->data;
            k++;
        }
    if (mutate) n = mutate(t, n);
    char *p = sala_path_join(dir, "model.safetensors");
    CHECK(st_write(p, t, n, NULL) == SALA_OK, "%s", sala_last_error());
    free(p);
    free(t);
    st_close(&f[0]);
    st_close(&f[1]);
    return dir;
}

static sala_status load(const char *dir) {
    sala_model *m = NULL;
    sala_status st = sala_model_load(dir, NULL, &m);
    sala_model_free(m);
    return st;
}

#define EXPECT_FAIL(dir, want_status, needle)                                                            \
    do {                                                                                                 \
        sala_status st_ = load(dir);                                                                     \
        CHECK(st_ == (want_status), "%s: status %d (%s)", dir, st_, sala_last_error());                  \
        CHECK(strstr(sala_last_error(), needle) != NULL, "message '%s' lacks '%s'", sala_last_error(), needle); \
    } while (0)

static void test_official_layouts_load(void) {
    sala_model *m;
    CHECK(sala_model_load(test_path("golden/tiny-gqa2"), NULL, &m) == SALA_OK, "%s", sala_last_error());
    sala_model_info in;
    sala_model_get_info(m, &in);
    CHECK(in.n_layers == 6 && in.n_sparse_layers == 3 && !strcmp(in.layer_pattern, "SLLSLS"), "%s", in.layer_pattern);
    CHECK(in.weight_bytes == 17252544, "%lld", (long long)in.weight_bytes); /* manifest: bf16 weight bytes */
    sala_model_free(m);
    /* single-file layout */
    const char *d = make_ckpt("single", NULL, NULL);
    CHECK(load(d) == SALA_OK, "%s", sala_last_error());
}

static int drop_one(st_write_tensor *t, int n) {
    for (int i = 0; i < n; i++)
        if (!strcmp(t[i].name, "model.layers.2.self_attn.k_norm.weight")) {
            t[i] = t[n - 1];
            return n - 1;
        }
    return n;
}
static int wrong_shape(st_write_tensor *t, int n) {
    for (int i = 0; i < n; i++)
        if (!strcmp(t[i].name, "model.layers.0.self_attn.k_proj.weight")) t[i].shape[0] /= 2;
    return n;
}
static int wrong_dtype(st_write_tensor *t, int n) {
    for (int i = 0; i < n; i++)
        if (!strcmp(t[i].name, "model.norm.weight")) t[i].dtype = DT_I32, t[i].shape[0] /= 2;
    return n;
}
static int extra_tensor(st_write_tensor *t, int n) {
    t[n] = t[0];
    t[n].name = "model.layers.0.self_attn.q_norm.weight";
    t[n].shape[0] = 16, t[n].ndim = 1;
    return n + 1;
}
static int f32_and_f16(st_write_tensor *t, int n) {
    static float buf32[512 * 256];
    static uint16_t buf16[512 * 256];
    for (int i = 0; i < n; i++) {
        if (!strcmp(t[i].name, "model.embed_tokens.weight")) { /* bf16 -> f32 exactly */
            const uint16_t *s = t[i].data;
            for (int j = 0; j < 512 * 256; j++) {
                uint32_t u = (uint32_t)s[j] << 16;
                memcpy(&buf32[j], &u, 4);
            }
            t[i].dtype = DT_F32;
            t[i].data = buf32;
        }
        if (!strcmp(t[i].name, "lm_head.weight")) { /* bf16 -> f16 (rounds; loads and runs) */
            const uint16_t *s = t[i].data;
            for (int j = 0; j < 512 * 256; j++) {
                uint32_t u = (uint32_t)s[j] << 16;
                float f;
                memcpy(&f, &u, 4);
                _Float16 h = (_Float16)f;
                memcpy(&buf16[j], &h, 2);
            }
            t[i].dtype = DT_F16;
            t[i].data = buf16;
        }
    }
    return n;
}

static void test_bad_tensors(void) {
    EXPECT_FAIL(make_ckpt("missing", drop_one, NULL), SALA_ERR_FORMAT, "model.layers.2.self_attn.k_norm.weight is missing");
    EXPECT_FAIL(make_ckpt("shape", wrong_shape, NULL), SALA_ERR_CONFIG, "model.layers.0.self_attn.k_proj.weight has shape [8, 256]");
    EXPECT_FAIL(make_ckpt("dtype", wrong_dtype, NULL), SALA_ERR_UNSUPPORTED, "model.norm.weight is I32");
    EXPECT_FAIL(make_ckpt("extra", extra_tensor, NULL), SALA_ERR_CONFIG, "q_norm.weight");
    const char *d = make_ckpt("mixed_dtypes", f32_and_f16, NULL);
    sala_model *m;
    CHECK(sala_model_load(d, NULL, &m) == SALA_OK, "%s", sala_last_error());
    if (m) {
        sala_session *s;
        CHECK(sala_session_new(m, NULL, &s) == SALA_OK);
        int32_t ids[3] = {1, 2, 3};
        float *lg = malloc(sizeof(float) * 512);
        CHECK(sala_session_eval(s, ids, 3, SALA_LOGITS_LAST, lg) == SALA_OK && isfinite(lg[7]));
        free(lg);
        sala_session_free(s);
        sala_model_free(m);
    }
}

/* raw shard content replacing model.safetensors of a good folder */
static const char *raw_ckpt(const char *name, const void *bytes, size_t len) {
    const char *dir = make_ckpt(name, NULL, NULL);
    write_text(dir, "model.safetensors", bytes, len);
    return dir;
}

static const char *raw_header(const char *name, const char *json, size_t data_len) {
    size_t hl = strlen(json);
    unsigned char *b = calloc(8 + hl + data_len, 1);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, json, hl);
    const char *d = raw_ckpt(name, b, 8 + hl + data_len);
    free(b);
    return d;
}

static void test_bad_files(void) {
    /* truncated: a good file cut short */
    {
        char *buf;
        size_t len;
        char *p = sala_path_join(make_ckpt("trunc", NULL, NULL), "model.safetensors");
        sala_read_file(p, &buf, &len);
        free(p);
        EXPECT_FAIL(raw_ckpt("trunc", buf, len - 1000), SALA_ERR_FORMAT, "past the end");
        EXPECT_FAIL(raw_ckpt("trunc_header", buf, 100), SALA_ERR_FORMAT, "does not fit the file");
        EXPECT_FAIL(raw_ckpt("tiny_file", buf, 5), SALA_ERR_FORMAT, "too short");
        free(buf);
    }
    EXPECT_FAIL(raw_header("badjson", "{\"a\": [1, 2", 0), SALA_ERR_FORMAT, "not a JSON object");
    EXPECT_FAIL(raw_header("past_end", "{\"x\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,8]}}", 4),
                SALA_ERR_FORMAT, "past the end");
    EXPECT_FAIL(raw_header("overlap",
                           "{\"x\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,8]},"
                           "\"y\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[4,12]}}",
                           16),
                SALA_ERR_FORMAT, "overlap");
    EXPECT_FAIL(raw_header("size_mismatch", "{\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,8]}}", 8),
                SALA_ERR_FORMAT, "8 bytes of data for a F32 tensor of 4 elements");
    EXPECT_FAIL(raw_header("unknown_dtype", "{\"x\":{\"dtype\":\"F8_E4M3\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4),
                SALA_ERR_UNSUPPORTED, "dtype F8_E4M3");
    EXPECT_FAIL(raw_header("neg_shape", "{\"x\":{\"dtype\":\"F32\",\"shape\":[-4],\"data_offsets\":[0,16]}}", 16),
                SALA_ERR_FORMAT, "bad shape");
    EXPECT_FAIL(raw_header("dup", "{\"x\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                                  "\"x\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 2),
                SALA_ERR_FORMAT, "listed twice");
    /* a header length beyond the file */
    unsigned char huge[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0};
    EXPECT_FAIL(raw_ckpt("huge_len", huge, sizeof huge), SALA_ERR_FORMAT, "does not fit the file");
}

static void test_bad_folders(void) {
    EXPECT_FAIL("/nonexistent/sala-model", SALA_ERR_IO, "no config.json");
    char d[512];
    snprintf(d, sizeof d, "%s/noweights", tmpdir);
    mkdir(d, 0755);
    char *cfg = golden_config();
    write_text(d, "config.json", cfg, strlen(cfg));
    EXPECT_FAIL(d, SALA_ERR_IO, "neither model.safetensors nor model.safetensors.index.json");
    /* index naming a file that does not hold the tensor */
    const char *g = make_ckpt("badindex", NULL, NULL);
    const char *idx = "{\"weight_map\": {\"lm_head.weight\": \"model.safetensors\", \"nope\": \"model.safetensors\"}}";
    write_text(g, "model.safetensors.index.json", idx, strlen(idx));
    EXPECT_FAIL(g, SALA_ERR_FORMAT, "lists tensor nope");
    const char *esc = "{\"weight_map\": {\"lm_head.weight\": \"../../etc/passwd\"}}";
    write_text(g, "model.safetensors.index.json", esc, strlen(esc));
    EXPECT_FAIL(g, SALA_ERR_FORMAT, "does not name a file in the folder");
    free(cfg);
}

static void test_bad_configs(void) {
    char *cfg = golden_config();
    struct {
        const char *from, *to, *needle;
        sala_status st;
    } edits[] = {
        {"\"vocab_size\": 512", "\"vocab_size\": 512,,", "not valid JSON", SALA_ERR_FORMAT},
        {"\"rope_scaling\": null", "\"rope_scaling\": {\"type\": \"yarn\"}", "rope_scaling", SALA_ERR_CONFIG},
        {"\"lightning-attn\",\n    \"minicpm4\"", "\"mamba\",\n    \"minicpm4\"", "mixer_types[3] = \"mamba\"", SALA_ERR_CONFIG},
        {"\"use_nope\": false", "\"use_nope\": true", "use_nope", SALA_ERR_CONFIG},
        {"\"num_key_value_heads\": 1", "\"num_key_value_heads\": 3", "not a multiple", SALA_ERR_CONFIG},
        {"\"hidden_size\": 256", "\"hidden_size\": \"256\"", "hidden_size must be an integer", SALA_ERR_CONFIG},
        {"\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\"", "gelu", SALA_ERR_CONFIG},
        {"\"attention_bias\": false", "\"attention_bias\": true", "attention_bias", SALA_ERR_CONFIG},
        {"\"hidden_size\": 256", "\"hidden_size\": 128", "shape", SALA_ERR_CONFIG}, /* tensors no longer match */
    };
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        char *at = strstr(cfg, edits[i].from);
        CHECK(at != NULL, "golden config lacks '%s'", edits[i].from);
        if (!at) continue;
        size_t a = (size_t)(at - cfg), fl = strlen(edits[i].from), tl = strlen(edits[i].to);
        char *out = malloc(strlen(cfg) + tl + 1);
        memcpy(out, cfg, a);
        memcpy(out + a, edits[i].to, tl);
        strcpy(out + a + tl, at + fl);
        char name[32];
        snprintf(name, sizeof name, "cfg%zu", i);
        EXPECT_FAIL(make_ckpt(name, NULL, out), edits[i].st, edits[i].needle);
        free(out);
    }
    free(cfg);
    /* defaults: an empty object is the released 9B shape */
    sala_config c;
    CHECK(config_parse(&c, "{}", 2) == SALA_OK, "%s", sala_last_error());
    CHECK(c.hidden == 4096 && c.n_layers == 32 && c.sparse[0] && c.sparse[9] && !c.sparse[1] && c.dense_len == 8192 &&
          c.n_eos == 2 && c.eos[1] == 73440);
}

/* a session refuses what does not fit: context, ids, memory limit */
static void test_session_limits(void) {
    sala_model *m;
    CHECK(sala_model_load(test_path("golden/tiny-dense"), NULL, &m) == SALA_OK);
    sala_session_params sp = sala_session_default_params();
    sp.n_ctx = 16;
    sala_session *s;
    CHECK(sala_session_new(m, &sp, &s) == SALA_OK);
    int32_t ids[20] = {0};
    float lg[512];
    CHECK(sala_session_eval(s, ids, 17, SALA_LOGITS_LAST, lg) == SALA_ERR_CONTEXT);
    CHECK(strstr(sala_last_error(), "do not fit the context of 16") != NULL, "%s", sala_last_error());
    ids[3] = 512;
    CHECK(sala_session_eval(s, ids, 5, SALA_LOGITS_LAST, lg) == SALA_ERR_ARG);
    ids[3] = -1;
    CHECK(sala_session_eval(s, ids, 5, SALA_LOGITS_LAST, lg) == SALA_ERR_ARG);
    CHECK(sala_session_pos(s) == 0, "failed calls leave the session as it was");
    sala_session_free(s);
    sp.n_ctx = 1 << 20;
    sp.mem_limit = 64 << 20;
    CHECK(sala_session_new(m, &sp, &s) == SALA_ERR_NOMEM);
    CHECK(strstr(sala_last_error(), "more than the limit") != NULL, "%s", sala_last_error());
    sala_model_free(m);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/sala-test-loader-XXXXXX");
    if (!mkdtemp(tmpdir)) return 1;
    TEST_RUN(test_official_layouts_load);
    TEST_RUN(test_bad_tensors);
    TEST_RUN(test_bad_files);
    TEST_RUN(test_bad_folders);
    TEST_RUN(test_bad_configs);
    TEST_RUN(test_session_limits);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", tmpdir);
    TEST_END();
}
