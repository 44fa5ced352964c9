/* config.c — config.json of a MiniCPM-SALA checkpoint (MODEL.md §1).
 *
 * Defaults are the released model's values, so a config that omits a field gets what the reference
 * would use. Fields that change the math and that sala cannot honour are refused by name; fields with
 * no effect on inference (auto_map, initializer_range, transformers_version, ...) are ignored. */
#include "model/config.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <string.h>

#include "util.h"

static const unsigned char released_sparse_layers[] = {0, 9, 16, 17, 22, 29, 30, 31};

void config_defaults(sala_config *c) {
    memset(c, 0, sizeof *c);
    c->vocab = 73448;
    c->hidden = 4096;
    c->inter = 16384;
    c->n_layers = 32;
    c->nh = 32;
    c->nkv = 2;
    c->hd = 128;
    c->lin_nh = 32;
    c->lin_nkv = 32;
    c->lin_hd = 128;
    c->eps = 1e-6;
    c->rope_theta = 10000;
    c->scale_emb = 12;
    c->scale_depth = 1.4;
    c->dim_model_base = 256;
    c->attn_use_rope = 0;
    c->lightning_use_rope = 1;
    c->qk_norm = 1;
    c->use_output_norm = 1;
    c->use_output_gate = 1;
    c->attn_use_output_gate = 1;
    c->lightning_scale = LSCALE_INV_SQRT_D;
    c->tie_embeddings = 0;
    c->max_pos = 524288;
    for (size_t i = 0; i < sizeof released_sparse_layers; i++) c->sparse[released_sparse_layers[i]] = 1;
    c->kernel_size = 32;
    c->kernel_stride = 16;
    c->init_blocks = 1;
    c->block_size = 64;
    c->window_size = 2048;
    c->topk = 64;
    c->dense_len = 8192;
    c->bos = 1;
    c->eos[0] = 2;
    c->eos[1] = 73440;
    c->n_eos = 2;
}

/* reads an integer field if present; refuses non-integers and values outside [lo, hi] */
static sala_status get_int(const cJSON *o, const char *key, int *out, long lo, long hi) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!j || cJSON_IsNull(j)) return SALA_OK;
    if (!cJSON_IsNumber(j) || j->valuedouble != floor(j->valuedouble) || j->valuedouble < lo ||
        j->valuedouble > hi)
        return sala_set_error(SALA_ERR_CONFIG, "config.json: %s must be an integer in [%ld, %ld]", key, lo, hi);
    *out = (int)j->valuedouble;
    return SALA_OK;
}

static sala_status get_num(const cJSON *o, const char *key, double *out, double lo, double hi) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!j || cJSON_IsNull(j)) return SALA_OK;
    if (!cJSON_IsNumber(j) || !(j->valuedouble >= lo && j->valuedouble <= hi))
        return sala_set_error(SALA_ERR_CONFIG, "config.json: %s must be a number in [%g, %g]", key, lo, hi);
    *out = j->valuedouble;
    return SALA_OK;
}

static sala_status get_bool(const cJSON *o, const char *key, int *out) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!j || cJSON_IsNull(j)) return SALA_OK;
    if (!cJSON_IsBool(j)) return sala_set_error(SALA_ERR_CONFIG, "config.json: %s must be true or false", key);
    *out = cJSON_IsTrue(j);
    return SALA_OK;
}

/* a field whose only supported value is "absent / null / false / 0" */
static sala_status refuse_if_set(const cJSON *o, const char *key, const char *why) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!j || cJSON_IsNull(j) || cJSON_IsFalse(j) || (cJSON_IsNumber(j) && j->valuedouble == 0)) return SALA_OK;
    return sala_set_error(SALA_ERR_CONFIG, "config.json: %s is set; %s", key, why);
}

#define TRY(x)                                                                                               \
    do {                                                                                                     \
        sala_status s_ = (x);                                                                                \
        if (s_) {                                                                                            \
            cJSON_Delete(root);                                                                              \
            return s_;                                                                                       \
        }                                                                                                    \
    } while (0)

sala_status config_parse(sala_config *c, const char *json, size_t len) {
    config_defaults(c);
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return sala_set_error(SALA_ERR_FORMAT, "config.json is not valid JSON (or not an object)");
    }
    const int BIG = 1 << 24;
    TRY(get_int(root, "vocab_size", &c->vocab, 1, BIG));
    TRY(get_int(root, "hidden_size", &c->hidden, 1, 1 << 16));
    TRY(get_int(root, "intermediate_size", &c->inter, 1, 1 << 18));
    TRY(get_int(root, "num_hidden_layers", &c->n_layers, 1, SALA_MAX_LAYERS));
    TRY(get_int(root, "num_attention_heads", &c->nh, 1, 1024));
    c->nkv = c->nh;
    TRY(get_int(root, "num_key_value_heads", &c->nkv, 1, 1024));
    c->hd = c->hidden / c->nh;
    TRY(get_int(root, "head_dim", &c->hd, 1, 512));
    c->lin_nh = c->nh;
    TRY(get_int(root, "lightning_nh", &c->lin_nh, 1, 1024));
    c->lin_nkv = c->lin_nh;
    TRY(get_int(root, "lightning_nkv", &c->lin_nkv, 1, 1024));
    c->lin_hd = c->hd;
    TRY(get_int(root, "lightning_head_dim", &c->lin_hd, 1, 512));
    TRY(get_num(root, "rms_norm_eps", &c->eps, 0, 1));
    TRY(get_num(root, "rope_theta", &c->rope_theta, 1e-3, 1e12));
    TRY(get_num(root, "scale_emb", &c->scale_emb, -1e6, 1e6));
    TRY(get_num(root, "scale_depth", &c->scale_depth, -1e6, 1e6));
    TRY(get_num(root, "dim_model_base", &c->dim_model_base, 1e-6, 1e9));
    TRY(get_bool(root, "attn_use_rope", &c->attn_use_rope));
    TRY(get_bool(root, "lightning_use_rope", &c->lightning_use_rope));
    TRY(get_bool(root, "qk_norm", &c->qk_norm));
    TRY(get_bool(root, "use_output_norm", &c->use_output_norm));
    TRY(get_bool(root, "use_output_gate", &c->use_output_gate));
    TRY(get_bool(root, "attn_use_output_gate", &c->attn_use_output_gate));
    TRY(get_bool(root, "tie_word_embeddings", &c->tie_embeddings));
    TRY(get_int(root, "max_position_embeddings", &c->max_pos, 1, 1 << 30));
    TRY(get_int(root, "bos_token_id", &c->bos, 0, BIG));

    const cJSON *ls = cJSON_GetObjectItemCaseSensitive(root, "lightning_scale");
    if (ls && !cJSON_IsNull(ls)) {
        if (!cJSON_IsString(ls)) TRY(sala_set_error(SALA_ERR_CONFIG, "config.json: lightning_scale must be a string"));
        /* the reference: "1/d" -> 1/d, "1/sqrt(d)" -> 1/sqrt(d), anything else -> 1 */
        c->lightning_scale = !strcmp(ls->valuestring, "1/sqrt(d)") ? LSCALE_INV_SQRT_D
                             : !strcmp(ls->valuestring, "1/d")     ? LSCALE_INV_D
                                                                   : LSCALE_ONE;
    }

    const cJSON *eos = cJSON_GetObjectItemCaseSensitive(root, "eos_token_id");
    if (eos && !cJSON_IsNull(eos)) {
        c->n_eos = 0;
        if (cJSON_IsNumber(eos) || cJSON_IsArray(eos)) {
            /* one id or a list of ids, each checked before the conversion */
            for (const cJSON *e = cJSON_IsArray(eos) ? eos->child : eos; e; e = cJSON_IsArray(eos) ? e->next : NULL) {
                if (!cJSON_IsNumber(e) || !(e->valuedouble >= 0 && e->valuedouble < BIG) ||
                    e->valuedouble != floor(e->valuedouble))
                    TRY(sala_set_error(SALA_ERR_CONFIG, "config.json: eos_token_id entries must be token ids"));
                if (c->n_eos < SALA_MAX_EOS) c->eos[c->n_eos++] = (int)e->valuedouble;
            }
        } else {
            TRY(sala_set_error(SALA_ERR_CONFIG, "config.json: eos_token_id must be an id or a list of ids"));
        }
    }

    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "mixer_types");
    if (mt && !cJSON_IsNull(mt)) {
        if (!cJSON_IsArray(mt) || cJSON_GetArraySize(mt) != c->n_layers)
            TRY(sala_set_error(SALA_ERR_CONFIG, "config.json: mixer_types must list one entry per layer (%d)",
                               c->n_layers));
        int i = 0;
        for (const cJSON *e = mt->child; e; e = e->next, i++) {
            const char *s = cJSON_IsString(e) ? e->valuestring : "";
            if (!strcmp(s, "minicpm4"))
                c->sparse[i] = 1;
            else if (!strcmp(s, "lightning-attn") || !strcmp(s, "lightning") || !strcmp(s, "lightning_attn"))
                c->sparse[i] = 0;
            else
                TRY(sala_set_error(SALA_ERR_CONFIG,
                                   "config.json: mixer_types[%d] = \"%s\" is not a mixer sala knows (minicpm4, "
                                   "lightning-attn)",
                                   i, s));
        }
    } else if (c->n_layers != 32) {
        TRY(sala_set_error(SALA_ERR_CONFIG, "config.json: mixer_types is missing (needed unless the model has the "
                                            "released 32-layer pattern)"));
    }

    const cJSON *sc = cJSON_GetObjectItemCaseSensitive(root, "sparse_config");
    if (sc && !cJSON_IsNull(sc)) {
        if (!cJSON_IsObject(sc)) TRY(sala_set_error(SALA_ERR_CONFIG, "config.json: sparse_config must be an object"));
        TRY(get_int(sc, "kernel_size", &c->kernel_size, 1, 1 << 20));
        TRY(get_int(sc, "kernel_stride", &c->kernel_stride, 1, 1 << 20));
        TRY(get_int(sc, "init_blocks", &c->init_blocks, 0, 1 << 20));
        TRY(get_int(sc, "block_size", &c->block_size, 1, 1 << 20));
        TRY(get_int(sc, "window_size", &c->window_size, 0, 1 << 30));
        TRY(get_int(sc, "topk", &c->topk, 0, 1 << 20));
        TRY(get_int(sc, "dense_len", &c->dense_len, 0, 1 << 30));
        TRY(refuse_if_set(sc, "use_nope", "sala implements InfLLM-v2 with use_nope false, as released"));
    }

    /* fields that would change the math in ways sala does not implement */
    TRY(refuse_if_set(root, "rope_scaling", "sala implements plain RoPE (rope_scaling null), as released"));
    TRY(refuse_if_set(root, "attention_bias", "MiniCPM-SALA projections have no biases"));
    TRY(refuse_if_set(root, "mlp_bias", "MiniCPM-SALA projections have no biases"));
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(root, "hidden_act");
    if (act && cJSON_IsString(act) && strcmp(act->valuestring, "silu"))
        TRY(sala_set_error(SALA_ERR_CONFIG, "config.json: hidden_act \"%s\" is not supported (silu only)",
                           act->valuestring));
    cJSON_Delete(root);
    return config_validate(c);
}

sala_status config_validate(const sala_config *c) {
    /* fields derived from others (head_dim = hidden / heads by default) get the same bounds as when given */
    if (c->hd < 1 || c->hd > 512 || c->lin_hd < 1 || c->lin_hd > 512)
        return sala_set_error(SALA_ERR_CONFIG, "config: head dims %d / %d outside [1, 512] (head_dim defaults to "
                              "hidden_size / num_attention_heads)", c->hd, c->lin_hd);
    if (c->nh % c->nkv)
        return sala_set_error(SALA_ERR_CONFIG, "config: num_attention_heads %d is not a multiple of "
                              "num_key_value_heads %d", c->nh, c->nkv);
    if (c->lin_nkv != c->lin_nh)
        return sala_set_error(SALA_ERR_CONFIG, "config: lightning_nkv %d != lightning_nh %d: grouped linear "
                              "attention is not supported", c->lin_nkv, c->lin_nh);
    if ((c->lightning_use_rope && c->lin_hd % 2) || (c->attn_use_rope && c->hd % 2))
        return sala_set_error(SALA_ERR_CONFIG, "config: RoPE needs an even head_dim");
    if (c->kernel_size % c->kernel_stride || c->block_size % c->kernel_stride)
        return sala_set_error(SALA_ERR_CONFIG, "config: sparse_config needs kernel_size and block_size to be "
                              "multiples of kernel_stride (got %d, %d, %d)", c->kernel_size, c->block_size,
                              c->kernel_stride);
    if (c->window_size % c->block_size)
        return sala_set_error(SALA_ERR_CONFIG, "config: sparse_config.window_size %d is not a multiple of "
                              "block_size %d", c->window_size, c->block_size);
    if (c->bos >= c->vocab) return sala_set_error(SALA_ERR_CONFIG, "config: bos_token_id outside the vocabulary");
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos[i] >= c->vocab)
            return sala_set_error(SALA_ERR_CONFIG, "config: eos_token_id %d outside the vocabulary (%d)", c->eos[i],
                                  c->vocab);
    return SALA_OK;
}

sala_status config_load(sala_config *c, const char *path) {
    char *buf;
    size_t len;
    sala_status st = sala_read_file(path, &buf, &len);
    if (st) return st;
    st = config_parse(c, buf, len);
    free(buf);
    if (st) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", sala_last_error());
        return sala_set_error(st, "%s (%s)", msg, path);
    }
    return SALA_OK;
}

char *config_to_json(const sala_config *c) {
    cJSON *r = cJSON_CreateObject();
    cJSON *arch = cJSON_AddArrayToObject(r, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString("MiniCPMSALAForCausalLM"));
    cJSON_AddStringToObject(r, "model_type", "minicpm_sala");
    cJSON_AddNumberToObject(r, "vocab_size", c->vocab);
    cJSON_AddNumberToObject(r, "hidden_size", c->hidden);
    cJSON_AddNumberToObject(r, "intermediate_size", c->inter);
    cJSON_AddNumberToObject(r, "num_hidden_layers", c->n_layers);
    cJSON_AddNumberToObject(r, "num_attention_heads", c->nh);
    cJSON_AddNumberToObject(r, "num_key_value_heads", c->nkv);
    cJSON_AddNumberToObject(r, "head_dim", c->hd);
    cJSON_AddStringToObject(r, "hidden_act", "silu");
    cJSON_AddNumberToObject(r, "rms_norm_eps", c->eps);
    cJSON_AddNumberToObject(r, "max_position_embeddings", c->max_pos);
    cJSON_AddNumberToObject(r, "rope_theta", c->rope_theta);
    cJSON_AddNullToObject(r, "rope_scaling");
    cJSON_AddBoolToObject(r, "attention_bias", 0);
    cJSON_AddBoolToObject(r, "attn_use_rope", c->attn_use_rope);
    cJSON_AddBoolToObject(r, "attn_use_output_gate", c->attn_use_output_gate);
    cJSON_AddNumberToObject(r, "lightning_nh", c->lin_nh);
    cJSON_AddNumberToObject(r, "lightning_nkv", c->lin_nkv);
    cJSON_AddNumberToObject(r, "lightning_head_dim", c->lin_hd);
    cJSON_AddStringToObject(r, "lightning_scale", c->lightning_scale == LSCALE_INV_SQRT_D ? "1/sqrt(d)"
                                                  : c->lightning_scale == LSCALE_INV_D    ? "1/d"
                                                                                          : "1");
    cJSON_AddBoolToObject(r, "lightning_use_rope", c->lightning_use_rope);
    cJSON_AddBoolToObject(r, "qk_norm", c->qk_norm);
    cJSON_AddBoolToObject(r, "use_output_gate", c->use_output_gate);
    cJSON_AddBoolToObject(r, "use_output_norm", c->use_output_norm);
    cJSON_AddNumberToObject(r, "scale_emb", c->scale_emb);
    cJSON_AddNumberToObject(r, "scale_depth", c->scale_depth);
    cJSON_AddNumberToObject(r, "dim_model_base", c->dim_model_base);
    cJSON *mt = cJSON_AddArrayToObject(r, "mixer_types");
    for (int i = 0; i < c->n_layers; i++)
        cJSON_AddItemToArray(mt, cJSON_CreateString(c->sparse[i] ? "minicpm4" : "lightning-attn"));
    cJSON *sc = cJSON_AddObjectToObject(r, "sparse_config");
    cJSON_AddNumberToObject(sc, "kernel_size", c->kernel_size);
    cJSON_AddNumberToObject(sc, "kernel_stride", c->kernel_stride);
    cJSON_AddNumberToObject(sc, "init_blocks", c->init_blocks);
    cJSON_AddNumberToObject(sc, "block_size", c->block_size);
    cJSON_AddNumberToObject(sc, "window_size", c->window_size);
    cJSON_AddNumberToObject(sc, "topk", c->topk);
    cJSON_AddBoolToObject(sc, "use_nope", 0);
    cJSON_AddNumberToObject(sc, "dense_len", c->dense_len);
    cJSON_AddNumberToObject(r, "bos_token_id", c->bos);
    cJSON *eos = cJSON_AddArrayToObject(r, "eos_token_id");
    for (int i = 0; i < c->n_eos; i++) cJSON_AddItemToArray(eos, cJSON_CreateNumber(c->eos[i]));
    cJSON_AddNumberToObject(r, "pad_token_id", c->n_eos ? c->eos[0] : 0);
    cJSON_AddBoolToObject(r, "tie_word_embeddings", c->tie_embeddings);
    cJSON_AddStringToObject(r, "torch_dtype", "bfloat16");
    char *s = cJSON_Print(r);
    cJSON_Delete(r);
    return s;
}
