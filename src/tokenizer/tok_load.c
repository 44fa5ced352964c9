/* tok_load.c — loading a tokenizer: tokenizer.json (Hugging Face `tokenizers` format, parsed with cJSON),
 * the side files (tokenizer_config.json, special_tokens_map.json, added_tokens.json), and the public
 * accessors.
 *
 * What of tokenizer.json is understood (everything else is refused with SALA_ERR_UNSUPPORTED rather than
 * silently tokenizing differently):
 *   model        BPE: vocab, merges ("a b" strings or [a, b] pairs; a later duplicate pair overrides an
 *                earlier one, as in `tokenizers`), unk_token, fuse_unk, byte_fallback, ignore_merges.
 *   normalizer   null, Sequence, Prepend, Replace with a String pattern.
 *   pre_tokenizer null, or Metaspace without splitting (turned into Replace + Prepend).
 *   post_processor TemplateProcessing: a special token in front of $A is the BOS added by default.
 *   decoder      Sequence, Replace (String), ByteFallback, Fuse, Strip (leading ' ' only), Metaspace.
 *   added_tokens id, content, special. All are matched on the raw text (the `normalized`, lstrip, rstrip
 *                and single_word flags are not applied; every MiniCPM upload has them false).
 * Added tokens from the side files are added for ids not yet defined (the first definition of an id or a
 * content wins, tokenizer.json first). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "tokenizer/tok_internal.h"
#include "util.h"

#define TOK_MAX_ID (1 << 21) /* 2M ids: far above real vocabularies, bounds what a bad file can allocate */

/* ---- storage and tables ---- */

#define TOK_ARENA_BLOCK (256 * 1024)

/* strings live in 256 KiB arena blocks (a longer string gets a block of its own) */
char *tok_store(sala_tokenizer *t, const char *s, size_t len) {
    if (len + 1 > t->arena_left) {
        size_t size = len + 1 > TOK_ARENA_BLOCK / 4 ? len + 1 : TOK_ARENA_BLOCK;
        if (t->n_blocks == t->cap_blocks) {
            t->cap_blocks = t->cap_blocks ? t->cap_blocks * 2 : 64;
            t->blocks = xrealloc(t->blocks, (size_t)t->cap_blocks * sizeof *t->blocks);
        }
        char *b = xmalloc(size);
        t->blocks[t->n_blocks++] = b;
        if (size == TOK_ARENA_BLOCK) {
            t->arena = b;
            t->arena_left = size;
        } else {
            memcpy(b, s, len);
            b[len] = 0;
            return b;
        }
    }
    char *p = t->arena;
    memcpy(p, s, len);
    p[len] = 0;
    t->arena += len + 1;
    t->arena_left -= len + 1;
    return p;
}

sala_tokenizer *tok_new(void) {
    sala_tokenizer *t = xcalloc(1, sizeof *t);
    for (int i = 0; i < 65536; i++) t->bmp_id[i] = -1;
    for (int i = 0; i < 256; i++) t->byte_id[i] = -1;
    t->bos = t->eos = t->unk = t->pad = -1;
    t->spm_escape_ws = 1;
    return t;
}

int tok_reserve_id(sala_tokenizer *t, int64_t id) {
    if (id < 0 || id >= TOK_MAX_ID) return 0;
    if (id >= t->cap_ids) {
        int32_t cap = t->cap_ids ? t->cap_ids : 1024;
        while (cap <= id) cap *= 2;
        t->piece = xrealloc(t->piece, (size_t)cap * sizeof *t->piece);
        t->piece_len = xrealloc(t->piece_len, (size_t)cap * sizeof *t->piece_len);
        t->flags = xrealloc(t->flags, (size_t)cap);
        t->score = xrealloc(t->score, (size_t)cap * sizeof *t->score);
        t->sp_type = xrealloc(t->sp_type, (size_t)cap);
        for (int32_t i = t->cap_ids; i < cap; i++) {
            t->piece[i] = NULL;
            t->piece_len[i] = 0;
            t->flags[i] = 0;
            t->score[i] = 0;
            t->sp_type[i] = 0;
        }
        t->cap_ids = cap;
    }
    if (id >= t->n_vocab) t->n_vocab = (int32_t)id + 1;
    return 1;
}

static const tok_added *find_added(const sala_tokenizer *t, const char *s, size_t len) {
    for (int i = 0; i < t->n_added; i++)
        if (t->added[i].len == len && memcmp(t->added[i].s, s, len) == 0) return &t->added[i];
    return NULL;
}

int tok_add_token(sala_tokenizer *t, const char *content, int32_t id, int special) {
    size_t len = strlen(content);
    if (len == 0 || !tok_reserve_id(t, id)) return 0;
    if (t->flags[id] & TOK_F_ADDED) return 0;
    if (find_added(t, content, len)) return 0;
    const char *s = tok_store(t, content, len);
    t->added = xrealloc(t->added, (size_t)(t->n_added + 1) * sizeof *t->added);
    t->added[t->n_added++] = (tok_added){s, (uint32_t)len, id, special};
    t->piece[id] = s;
    t->piece_len[id] = (uint32_t)len;
    t->flags[id] |= TOK_F_ADDED | (special ? TOK_F_SPECIAL : 0);
    return 1;
}

/* ---- small cJSON helpers ---- */

static const char *json_str(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* a token given as "text" or {"content": "text", ...} */
static const char *json_token_name(const cJSON *v) {
    if (cJSON_IsString(v)) return v->valuestring;
    if (cJSON_IsObject(v)) return json_str(v, "content");
    return NULL;
}

static int json_is_int(const cJSON *v, int64_t lo, int64_t hi, int64_t *out) {
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!(d >= (double)lo && d <= (double)hi) || d != (double)(int64_t)d) return 0;
    *out = (int64_t)d;
    return 1;
}

static sala_status json_parse_file(const char *path, cJSON **out) {
    char *buf;
    size_t len;
    sala_status st = sala_read_file(path, &buf, &len);
    if (st) return st;
    cJSON *root = cJSON_ParseWithLength(buf, len);
    if (!root) {
        const char *e = cJSON_GetErrorPtr();
        long off = (e && e >= buf && e <= buf + len) ? (long)(e - buf) : -1;
        free(buf);
        return sala_set_error(SALA_ERR_FORMAT, "%s is not valid JSON (error near byte %ld)", path, off);
    }
    free(buf);
    *out = root;
    return SALA_OK;
}

static int32_t find_id(const sala_tokenizer *t, const char *name) {
    if (!name) return -1;
    return sala_tokenizer_find(t, name);
}

/* ---- tokenizer.json ---- */

static sala_status set_replace(tok_replace *r, const char *pattern, const char *content) {
    r->pattern = xstrdup(pattern);
    r->content = xstrdup(content);
    r->plen = (uint32_t)strlen(pattern);
    r->clen = (uint32_t)strlen(content);
    return SALA_OK;
}

static sala_status add_norm(sala_tokenizer *t, int kind, const char *pattern, const char *content,
                            const char *path) {
    if (t->n_norm >= (int)(sizeof t->norm / sizeof t->norm[0]))
        return sala_set_error(SALA_ERR_UNSUPPORTED, "%s: too many normalizer steps", path);
    if (kind == TOK_NORM_REPLACE && !*pattern)
        return sala_set_error(SALA_ERR_FORMAT, "%s: Replace normalizer with an empty pattern", path);
    t->norm[t->n_norm].kind = kind;
    set_replace(&t->norm[t->n_norm].r, pattern, content);
    t->n_norm++;
    return SALA_OK;
}

static sala_status parse_normalizer(sala_tokenizer *t, const cJSON *n, const char *path, int depth) {
    if (!n || cJSON_IsNull(n)) return SALA_OK;
    const char *type = json_str(n, "type");
    if (!type || depth > 8) return sala_set_error(SALA_ERR_FORMAT, "%s: normalizer without a type", path);
    if (!strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "normalizers"), *it;
        if (!cJSON_IsArray(list)) return sala_set_error(SALA_ERR_FORMAT, "%s: Sequence normalizer without a list", path);
        cJSON_ArrayForEach(it, list) {
            sala_status st = parse_normalizer(t, it, path, depth + 1);
            if (st) return st;
        }
        return SALA_OK;
    }
    if (!strcmp(type, "Prepend")) {
        const char *p = json_str(n, "prepend");
        if (!p) return sala_set_error(SALA_ERR_FORMAT, "%s: Prepend normalizer without a string", path);
        return add_norm(t, TOK_NORM_PREPEND, "", p, path);
    }
    if (!strcmp(type, "Replace")) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(n, "pattern");
        const char *ps = pat ? json_str(pat, "String") : NULL, *c = json_str(n, "content");
        if (!ps || !c)
            return sala_set_error(SALA_ERR_UNSUPPORTED,
                                  "%s: Replace normalizer with a regex pattern is not supported (only String)", path);
        return add_norm(t, TOK_NORM_REPLACE, ps, c, path);
    }
    return sala_set_error(SALA_ERR_UNSUPPORTED, "%s: normalizer type '%s' is not supported", path, type);
}

static sala_status parse_pre_tokenizer(sala_tokenizer *t, const cJSON *n, const char *path) {
    if (!n || cJSON_IsNull(n)) return SALA_OK;
    const char *type = json_str(n, "type");
    if (type && !strcmp(type, "Metaspace")) {
        const cJSON *split = cJSON_GetObjectItemCaseSensitive(n, "split");
        if (cJSON_IsTrue(split))
            return sala_set_error(SALA_ERR_UNSUPPORTED, "%s: Metaspace pre-tokenizer with split=true is not supported",
                                  path);
        const char *rep = json_str(n, "replacement");
        const char *scheme = json_str(n, "prepend_scheme");
        const cJSON *aps = cJSON_GetObjectItemCaseSensitive(n, "add_prefix_space");
        if (!rep) rep = "\xE2\x96\x81";
        sala_status st = add_norm(t, TOK_NORM_REPLACE, " ", rep, path);
        if (st) return st;
        int kind = TOK_NORM_PREPEND;
        if (scheme && !strcmp(scheme, "never")) kind = 0;
        if (scheme && !strcmp(scheme, "first")) kind = TOK_NORM_PREPEND_FIRST;
        if (!scheme && cJSON_IsFalse(aps)) kind = 0;
        return kind ? add_norm(t, kind, "", rep, path) : SALA_OK;
    }
    return sala_set_error(SALA_ERR_UNSUPPORTED, "%s: pre_tokenizer type '%s' is not supported", path,
                          type ? type : "?");
}

static sala_status parse_decoder(sala_tokenizer *t, const cJSON *n, const char *path, int depth) {
    if (!n || cJSON_IsNull(n)) return SALA_OK;
    const char *type = json_str(n, "type");
    if (!type || depth > 8) return sala_set_error(SALA_ERR_FORMAT, "%s: decoder without a type", path);
    if (!strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "decoders"), *it;
        if (!cJSON_IsArray(list)) return sala_set_error(SALA_ERR_FORMAT, "%s: Sequence decoder without a list", path);
        cJSON_ArrayForEach(it, list) {
            sala_status st = parse_decoder(t, it, path, depth + 1);
            if (st) return st;
        }
        return SALA_OK;
    }
    if (!strcmp(type, "Replace") || !strcmp(type, "Metaspace")) {
        const char *ps, *c;
        if (type[0] == 'R') {
            const cJSON *pat = cJSON_GetObjectItemCaseSensitive(n, "pattern");
            ps = pat ? json_str(pat, "String") : NULL;
            c = json_str(n, "content");
        } else {
            ps = json_str(n, "replacement");
            if (!ps) ps = "\xE2\x96\x81";
            c = " ";
            const char *scheme = json_str(n, "prepend_scheme");
            const cJSON *aps = cJSON_GetObjectItemCaseSensitive(n, "add_prefix_space");
            if (!(scheme && !strcmp(scheme, "never")) && !(!scheme && cJSON_IsFalse(aps))) t->dec_strip_start = 1;
        }
        if (!ps || !c || !*ps)
            return sala_set_error(SALA_ERR_UNSUPPORTED, "%s: %s decoder with a regex pattern is not supported", path,
                                  type);
        if (t->n_dec_replace >= TOK_MAX_REPLACE)
            return sala_set_error(SALA_ERR_UNSUPPORTED, "%s: too many Replace decoders", path);
        if (t->dec_byte_fallback)
            return sala_set_error(SALA_ERR_UNSUPPORTED, "%s: a Replace decoder after ByteFallback is not supported",
                                  path);
        return set_replace(&t->dec_replace[t->n_dec_replace++], ps, c);
    }
    if (!strcmp(type, "ByteFallback")) {
        t->dec_byte_fallback = 1;
        return SALA_OK;
    }
    if (!strcmp(type, "Fuse")) {
        t->dec_fused = 1;
        return SALA_OK;
    }
    if (!strcmp(type, "Strip")) {
        const char *c = json_str(n, "content");
        int64_t start = 0, stop = 0;
        json_is_int(cJSON_GetObjectItemCaseSensitive(n, "start"), 0, 1000, &start);
        json_is_int(cJSON_GetObjectItemCaseSensitive(n, "stop"), 0, 1000, &stop);
        /* after Fuse the output is one string: the strip applies once, at its start */
        if (!c || strcmp(c, " ") || stop != 0 || !t->dec_fused)
            return sala_set_error(SALA_ERR_UNSUPPORTED,
                                  "%s: Strip decoder other than leading spaces after Fuse is not supported", path);
        t->dec_strip_start = (int)start;
        return SALA_OK;
    }
    return sala_set_error(SALA_ERR_UNSUPPORTED, "%s: decoder type '%s' is not supported", path, type);
}

static void parse_post_processor(sala_tokenizer *t, const cJSON *n) {
    const char *type = n ? json_str(n, "type") : NULL;
    if (!type || strcmp(type, "TemplateProcessing")) return;
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(n, "single");
    const cJSON *first = cJSON_IsArray(single) ? cJSON_GetArrayItem(single, 0) : NULL;
    const cJSON *sp = first ? cJSON_GetObjectItemCaseSensitive(first, "SpecialToken") : NULL;
    const char *name = sp ? json_str(sp, "id") : NULL;
    if (!name) return;
    const cJSON *toks = cJSON_GetObjectItemCaseSensitive(n, "special_tokens");
    const cJSON *tok = toks ? cJSON_GetObjectItemCaseSensitive(toks, name) : NULL;
    const cJSON *ids = tok ? cJSON_GetObjectItemCaseSensitive(tok, "ids") : NULL;
    int64_t id;
    if (cJSON_IsArray(ids) && cJSON_GetArraySize(ids) == 1 && json_is_int(cJSON_GetArrayItem(ids, 0), 0, TOK_MAX_ID - 1, &id)) {
        t->bos = (int32_t)id;
        t->add_bos_default = 1;
    }
}

static sala_status load_json_model(sala_tokenizer *t, const cJSON *root, const char *path) {
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model)) return sala_set_error(SALA_ERR_FORMAT, "%s: no \"model\" object", path);
    const char *type = json_str(model, "type");
    if (type && strcmp(type, "BPE"))
        return sala_set_error(SALA_ERR_UNSUPPORTED, "%s: model type '%s' is not supported (only BPE)", path, type);
    const char *cs = json_str(model, "continuing_subword_prefix"), *ew = json_str(model, "end_of_word_suffix");
    if ((cs && *cs) || (ew && *ew))
        return sala_set_error(SALA_ERR_UNSUPPORTED,
                              "%s: BPE with continuing_subword_prefix / end_of_word_suffix is not supported", path);
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    if (!cJSON_IsObject(vocab)) return sala_set_error(SALA_ERR_FORMAT, "%s: model has no \"vocab\" object", path);
    tok_strmap_init(&t->vocab, (uint32_t)cJSON_GetArraySize(vocab));
    const cJSON *it;
    cJSON_ArrayForEach(it, vocab) {
        int64_t id;
        if (!it->string || !json_is_int(it, 0, TOK_MAX_ID - 1, &id))
            return sala_set_error(SALA_ERR_FORMAT, "%s: vocab entry '%s' has no valid id", path,
                                  it->string ? it->string : "?");
        tok_reserve_id(t, id);
        if (t->flags[id] & TOK_F_VOCAB)
            return sala_set_error(SALA_ERR_FORMAT, "%s: id %lld is used twice in the vocab", path, (long long)id);
        size_t len = strlen(it->string);
        const char *s = tok_store(t, it->string, len);
        t->piece[id] = s;
        t->piece_len[id] = (uint32_t)len;
        t->flags[id] |= TOK_F_VOCAB;
        tok_strmap_put(&t->vocab, s, (uint32_t)len, (int32_t)id);
    }
    if (t->vocab.n == 0) return sala_set_error(SALA_ERR_FORMAT, "%s: the vocab is empty", path);

    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (merges && !cJSON_IsArray(merges)) return sala_set_error(SALA_ERR_FORMAT, "%s: \"merges\" is not a list", path);
    tok_pairmap_init(&t->merges, merges ? (uint32_t)cJSON_GetArraySize(merges) : 16);
    uint32_t rank = 0;
    char *joined = NULL;
    size_t jcap = 0;
    cJSON_ArrayForEach(it, merges) {
        const char *a = NULL, *b = NULL;
        size_t la = 0, lb = 0;
        if (cJSON_IsString(it)) {
            const char *sp = strchr(it->valuestring, ' ');
            if (sp && !strchr(sp + 1, ' ')) {
                a = it->valuestring;
                la = (size_t)(sp - a);
                b = sp + 1;
                lb = strlen(b);
            }
        } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 && cJSON_IsString(cJSON_GetArrayItem(it, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(it, 1))) {
            a = cJSON_GetArrayItem(it, 0)->valuestring;
            b = cJSON_GetArrayItem(it, 1)->valuestring;
            la = strlen(a);
            lb = strlen(b);
        }
        if (!a) {
            free(joined);
            return sala_set_error(SALA_ERR_FORMAT, "%s: merge %u is not a pair of pieces", path, rank);
        }
        if (la + lb + 1 > jcap) {
            jcap = (la + lb + 1) * 2;
            joined = xrealloc(joined, jcap);
        }
        memcpy(joined, a, la);
        memcpy(joined + la, b, lb);
        int32_t ia = tok_strmap_get(&t->vocab, a, (uint32_t)la), ib = tok_strmap_get(&t->vocab, b, (uint32_t)lb);
        int32_t in = tok_strmap_get(&t->vocab, joined, (uint32_t)(la + lb));
        if (ia < 0 || ib < 0 || in < 0) {
            joined[la + lb] = 0;
            sala_status st = sala_set_error(SALA_ERR_FORMAT, "%s: merge %u (%.*s + %.*s): piece %s not in the vocab",
                                            path, rank, (int)la, a, (int)lb, b,
                                            ia < 0 ? "left" : ib < 0 ? "right" : "merged");
            free(joined);
            return st;
        }
        tok_pairmap_put(&t->merges, ia, ib, rank, in);
        rank++;
    }
    free(joined);

    const char *unk = json_str(model, "unk_token");
    if (unk) t->unk = tok_strmap_get(&t->vocab, unk, (uint32_t)strlen(unk));
    t->fuse_unk = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "fuse_unk"));
    t->byte_fallback = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback"));
    t->ignore_merges = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "ignore_merges"));
    return SALA_OK;
}

static sala_status load_json(sala_tokenizer *t, const char *path) {
    cJSON *root;
    sala_status st = json_parse_file(path, &root);
    if (st) return st;
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return sala_set_error(SALA_ERR_FORMAT, "%s: not a JSON object", path);
    }
    t->kind = TOK_KIND_HF;
    snprintf(t->source, sizeof t->source, "tokenizer.json");
    st = load_json_model(t, root, path);
    if (!st) {
        const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens"), *it;
        if (added && !cJSON_IsArray(added) && !cJSON_IsNull(added))
            st = sala_set_error(SALA_ERR_FORMAT, "%s: \"added_tokens\" is not a list", path);
        cJSON_ArrayForEach(it, (cJSON_IsArray(added) ? added : NULL)) {
            int64_t id;
            const char *c = json_str(it, "content");
            if (!c || !*c || !json_is_int(cJSON_GetObjectItemCaseSensitive(it, "id"), 0, TOK_MAX_ID - 1, &id)) {
                st = sala_set_error(SALA_ERR_FORMAT, "%s: an added token has no content or id", path);
                break;
            }
            tok_add_token(t, c, (int32_t)id, cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "special")));
        }
    }
    if (!st) st = parse_normalizer(t, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), path, 0);
    if (!st) st = parse_pre_tokenizer(t, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), path);
    if (!st) st = parse_decoder(t, cJSON_GetObjectItemCaseSensitive(root, "decoder"), path, 0);
    if (!st) parse_post_processor(t, cJSON_GetObjectItemCaseSensitive(root, "post_processor"));
    cJSON_Delete(root);
    return st;
}

/* ---- side files ---- */

typedef struct {
    char *bos, *eos, *unk, *pad;
    char **special;
    int n_special;
    int add_bos; /* -1 unknown */
} side_info;

static void side_take(char **dst, const cJSON *v) {
    const char *s = json_token_name(v);
    if (s && !*dst) *dst = xstrdup(s);
}

static void side_special(side_info *si, const char *s) {
    if (!s) return;
    si->special = xrealloc(si->special, (size_t)(si->n_special + 1) * sizeof *si->special);
    si->special[si->n_special++] = xstrdup(s);
}

static void side_names(side_info *si, const cJSON *root) {
    side_take(&si->bos, cJSON_GetObjectItemCaseSensitive(root, "bos_token"));
    side_take(&si->eos, cJSON_GetObjectItemCaseSensitive(root, "eos_token"));
    side_take(&si->unk, cJSON_GetObjectItemCaseSensitive(root, "unk_token"));
    side_take(&si->pad, cJSON_GetObjectItemCaseSensitive(root, "pad_token"));
    const cJSON *add = cJSON_GetObjectItemCaseSensitive(root, "additional_special_tokens"), *it;
    cJSON_ArrayForEach(it, (cJSON_IsArray(add) ? add : NULL)) side_special(si, json_token_name(it));
    const cJSON *ab = cJSON_GetObjectItemCaseSensitive(root, "add_bos_token");
    if (cJSON_IsBool(ab) && si->add_bos < 0) si->add_bos = cJSON_IsTrue(ab);
}

static int side_is_special(const side_info *si, const char *s) {
    if ((si->bos && !strcmp(si->bos, s)) || (si->eos && !strcmp(si->eos, s)) || (si->unk && !strcmp(si->unk, s)) ||
        (si->pad && !strcmp(si->pad, s)))
        return 1;
    for (int i = 0; i < si->n_special; i++)
        if (!strcmp(si->special[i], s)) return 1;
    return 0;
}

static sala_status side_open(const char *dir, const char *name, cJSON **out) {
    *out = NULL;
    char *p = sala_path_join(dir, name);
    sala_status st = SALA_OK;
    if (sala_file_exists(p)) {
        st = json_parse_file(p, out);
        if (!st && !cJSON_IsObject(*out)) {
            cJSON_Delete(*out);
            *out = NULL;
            st = sala_set_error(SALA_ERR_FORMAT, "%s: not a JSON object", p);
        }
    }
    free(p);
    return st;
}

sala_status tok_read_side_files(sala_tokenizer *t, const char *dir) {
    cJSON *cfg = NULL, *map = NULL, *added = NULL;
    sala_status st = side_open(dir, "tokenizer_config.json", &cfg);
    if (!st) st = side_open(dir, "special_tokens_map.json", &map);
    if (!st) st = side_open(dir, "added_tokens.json", &added);
    side_info si = {0};
    si.add_bos = -1;
    if (!st) {
        if (cfg) side_names(&si, cfg);
        if (map) side_names(&si, map);
        /* tokenizer_config.json: "added_tokens_decoder": {"73440": {"content": ..., "special": true}} */
        const cJSON *dec = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, "added_tokens_decoder") : NULL, *it;
        cJSON_ArrayForEach(it, (cJSON_IsObject(dec) ? dec : NULL)) {
            char *end;
            errno = 0;
            long id = it->string ? strtol(it->string, &end, 10) : -1;
            const char *c = json_str(it, "content");
            if (!it->string || *end || errno || id < 0 || id >= TOK_MAX_ID || !c) continue;
            const cJSON *sp = cJSON_GetObjectItemCaseSensitive(it, "special");
            tok_add_token(t, c, (int32_t)id, cJSON_IsBool(sp) ? cJSON_IsTrue(sp) : side_is_special(&si, c));
        }
        /* added_tokens.json: {"<|im_end|>": 73440} */
        cJSON_ArrayForEach(it, added) {
            int64_t id;
            if (it->string && json_is_int(it, 0, TOK_MAX_ID - 1, &id))
                tok_add_token(t, it->string, (int32_t)id, side_is_special(&si, it->string));
        }
        /* names from the maps override what the model file said, except the BOS of the post-processor */
        int32_t id;
        if (t->bos < 0 && (id = find_id(t, si.bos)) >= 0) t->bos = id;
        if ((id = find_id(t, si.eos)) >= 0) t->eos = id;
        if (t->unk < 0 && (id = find_id(t, si.unk)) >= 0) t->unk = id;
        if ((id = find_id(t, si.pad)) >= 0) t->pad = id;
        if (t->kind == TOK_KIND_SPM && si.add_bos >= 0) t->add_bos_default = si.add_bos;
    }
    free(si.bos);
    free(si.eos);
    free(si.unk);
    free(si.pad);
    for (int i = 0; i < si.n_special; i++) free(si.special[i]);
    free(si.special);
    cJSON_Delete(cfg);
    cJSON_Delete(map);
    cJSON_Delete(added);
    return st;
}

/* ---- finishing ---- */

static int cmp_added(const void *a, const void *b) {
    const tok_added *x = a, *y = b;
    if (x->len != y->len) return x->len > y->len ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

sala_status tok_finish(sala_tokenizer *t) {
    if (t->n_vocab <= 0) return sala_set_error(SALA_ERR_FORMAT, "tokenizer has no pieces");
    if (t->n_added) qsort(t->added, (size_t)t->n_added, sizeof *t->added, cmp_added);
    memset(t->added_first, 0, sizeof t->added_first);
    for (int i = 0; i < t->n_added; i++) t->added_first[(uint8_t)t->added[i].s[0]] = 1;

    /* decoder byte values: any token spelled <0xHH> (as the ByteFallback decoder reads it) */
    t->byte_val = xmalloc((size_t)t->n_vocab * sizeof *t->byte_val);
    for (int32_t i = 0; i < t->n_vocab; i++) {
        t->byte_val[i] = -1;
        const char *p = t->piece[i];
        if (!t->dec_byte_fallback || !p || t->piece_len[i] != 6 || memcmp(p, "<0x", 3) || p[5] != '>') continue;
        int h = hexval(p[3]), l = hexval(p[4]);
        if (h >= 0 && l >= 0) t->byte_val[i] = (int16_t)(h * 16 + l);
    }
    /* encoder byte fallback: the vocab pieces <0xHH> (upper-case hex, as `tokenizers` formats them) */
    if (t->kind == TOK_KIND_HF) {
        for (int b = 0; b < 256; b++) {
            char name[8];
            snprintf(name, sizeof name, "<0x%02X>", b);
            t->byte_id[b] = tok_strmap_get(&t->vocab, name, 6);
        }
    }
    /* one-character pieces of the BMP, for the first split of a BPE word */
    for (uint32_t i = 0; i < t->vocab.cap; i++) {
        const tok_str_entry *e = &t->vocab.e[i];
        if (e->id < 0) continue;
        int bad;
        int k = e->len ? tok_utf8_char((const uint8_t *)e->s, e->len, &bad) : 0;
        if (k == 0 || (uint32_t)k != e->len) continue;
        const uint8_t *s = (const uint8_t *)e->s;
        uint32_t cp = k == 1 ? s[0] : k == 2 ? ((s[0] & 0x1Fu) << 6) | (s[1] & 0x3Fu)
                      : k == 3 ? ((s[0] & 0x0Fu) << 12) | ((s[1] & 0x3Fu) << 6) | (s[2] & 0x3Fu) : 0x10000;
        if (cp < 0x10000) t->bmp_id[cp] = e->id;
    }
    if (t->eos < 0) t->eos = sala_tokenizer_find(t, "</s>");
    if (t->bos < 0) t->bos = sala_tokenizer_find(t, "<s>");
    if (t->bos >= t->n_vocab) t->bos = -1;
    return SALA_OK;
}

/* ---- public ---- */

static sala_status load_path(const char *path, const char *dir, sala_tokenizer **out) {
    sala_tokenizer *t = tok_new();
    sala_status st;
    /* tell JSON from protobuf by the first non-blank byte */
    FILE *f = fopen(path, "rb");
    if (!f) {
        sala_tokenizer_free(t);
        return sala_set_error(SALA_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    }
    int c;
    do c = fgetc(f);
    while (c == ' ' || c == '\t' || c == '\n' || c == '\r');
    fclose(f);
    if (c == '{') {
        st = load_json(t, path);
    } else {
        char *buf;
        size_t len;
        st = sala_read_file(path, &buf, &len);
        if (!st) {
            st = tok_load_spm(t, (const uint8_t *)buf, len, path);
            free(buf);
        }
    }
    if (!st) st = tok_read_side_files(t, dir);
    if (!st) st = tok_finish(t);
    if (st) {
        sala_tokenizer_free(t);
        return st;
    }
    *out = t;
    return SALA_OK;
}

sala_status sala_tokenizer_load_file(const char *path, sala_tokenizer **out) {
    if (!path || !out) return sala_set_error(SALA_ERR_ARG, "sala_tokenizer_load_file: NULL argument");
    *out = NULL;
    char *dir = xstrdup(path);
    char *slash = strrchr(dir, '/');
    if (slash) *(slash == dir ? slash + 1 : slash) = 0;
    else strcpy(dir, ".");
    sala_status st = load_path(path, dir, out);
    free(dir);
    return st;
}

sala_status sala_tokenizer_load(const char *dir, sala_tokenizer **out) {
    if (!dir || !out) return sala_set_error(SALA_ERR_ARG, "sala_tokenizer_load: NULL argument");
    *out = NULL;
    struct stat sb;
    if (stat(dir, &sb) != 0) return sala_set_error(SALA_ERR_IO, "cannot open %s: %s", dir, strerror(errno));
    if (S_ISREG(sb.st_mode)) return sala_tokenizer_load_file(dir, out);
    char *json = sala_path_join(dir, "tokenizer.json");
    char *model = sala_path_join(dir, "tokenizer.model");
    sala_status st;
    if (sala_file_exists(json)) st = load_path(json, dir, out);
    else if (sala_file_exists(model)) st = load_path(model, dir, out);
    else
        st = sala_set_error(SALA_ERR_IO, "no tokenizer in %s: neither tokenizer.json nor tokenizer.model exists", dir);
    free(json);
    free(model);
    return st;
}

void sala_tokenizer_free(sala_tokenizer *t) {
    if (!t) return;
    for (int i = 0; i < t->n_blocks; i++) free(t->blocks[i]);
    free(t->blocks);
    free(t->piece);
    free(t->piece_len);
    free(t->flags);
    free(t->byte_val);
    free(t->score);
    free(t->sp_type);
    free(t->added);
    tok_strmap_free(&t->vocab);
    tok_pairmap_free(&t->spm_user);
    tok_pairmap_free(&t->merges);
    for (int i = 0; i < t->n_norm; i++) {
        free(t->norm[i].r.pattern);
        free(t->norm[i].r.content);
    }
    for (int i = 0; i < t->n_dec_replace; i++) {
        free(t->dec_replace[i].pattern);
        free(t->dec_replace[i].content);
    }
    free(t);
}

const char *sala_tokenizer_source(const sala_tokenizer *t) { return t ? t->source : ""; }
int sala_tokenizer_n_vocab(const sala_tokenizer *t) { return t ? t->n_vocab : 0; }
int sala_tokenizer_bos(const sala_tokenizer *t) { return t ? t->bos : -1; }
int sala_tokenizer_eos(const sala_tokenizer *t) { return t ? t->eos : -1; }
int sala_tokenizer_unk(const sala_tokenizer *t) { return t ? t->unk : -1; }
int sala_tokenizer_add_bos_default(const sala_tokenizer *t) { return t ? t->add_bos_default && t->bos >= 0 : 0; }

int32_t sala_tokenizer_find(const sala_tokenizer *t, const char *piece) {
    if (!t || !piece) return -1;
    size_t len = strlen(piece);
    const tok_added *a = find_added(t, piece, len);
    if (a) return a->id;
    return tok_strmap_get(&t->vocab, piece, (uint32_t)len);
}

const char *sala_tokenizer_piece(const sala_tokenizer *t, int32_t id) {
    if (!t || id < 0 || id >= t->n_vocab) return NULL;
    return t->piece[id];
}

int sala_tokenizer_is_special(const sala_tokenizer *t, int32_t id) {
    return t && id >= 0 && id < t->n_vocab && (t->flags[id] & TOK_F_SPECIAL) != 0;
}

int sala_tokenizer_is_added(const sala_tokenizer *t, int32_t id) {
    return t && id >= 0 && id < t->n_vocab && (t->flags[id] & TOK_F_ADDED) != 0;
}
