/* test_tokenizer.c — the MiniCPM tokenizer against the reference vectors of tests/data/tokenizer.
 *
 * Reference: curated.jsonl (101 cases) and random.jsonl (1,300 cases) made with Hugging Face `tokenizers`
 * from minicpm/tokenizer.json. Checked: ids with and without BOS, decode and decode with skip_special,
 * streaming decode == whole decode, round trips where the README says they hold; an independent naive BPE
 * (rescans every pair after each merge) on long texts, to check the heap encoder beyond the short vectors; the
 * encode rate on a few MB; the tokenizer.model fallback against sentencepiece_slow_ids; bad inputs. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sala_tokenizer.h"
#include "test.h"
#include "util.h"

static sala_tokenizer *g_tok;

typedef struct {
    char *text;
    size_t len;
    int32_t *ids, *ids_bos, *sp_ids;
    int n_ids, n_ids_bos, n_sp;
    char *decode, *decode_skip;
} tcase;

static int32_t *json_ids(const cJSON *a, int *n) {
    *n = cJSON_GetArraySize(a);
    int32_t *v = malloc(sizeof(int32_t) * (size_t)(*n + 1));
    for (int i = 0; i < *n; i++) v[i] = (int32_t)cJSON_GetArrayItem(a, i)->valuedouble;
    return v;
}

static char *json_strdup(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? strdup(v->valuestring) : NULL;
}

/* U+E000 back to NUL; returns the length in bytes */
static size_t restore_nul(char *s) {
    size_t len = strlen(s);
    for (char *q = s; (q = strstr(q, "\xEE\x80\x80"));) {
        *q = 0;
        memmove(q + 1, q + 3, len - (size_t)(q + 3 - s) + 1);
        len -= 2;
        q++;
    }
    return len;
}

static tcase *load_cases(const char *rel, int *n) {
    char *buf;
    size_t len;
    *n = 0;
    if (sala_read_file(test_path(rel), &buf, &len)) return NULL;
    tcase *c = NULL;
    int cap = 0;
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        /* cJSON strings end at a NUL: carry \u0000 through as U+E000 (absent from the vectors), then put it back */
        for (char *q = line; (q = strstr(q, "\\u0000"));) memcpy(q, "\\ue000", 6);
        cJSON *o = cJSON_Parse(line);
        if (!o) continue;
        if (*n == cap) c = realloc(c, sizeof *c * (size_t)(cap = cap ? cap * 2 : 256));
        tcase *x = &c[(*n)++];
        memset(x, 0, sizeof *x);
        x->text = json_strdup(o, "text");
        x->len = restore_nul(x->text);
        x->ids = json_ids(cJSON_GetObjectItemCaseSensitive(o, "ids"), &x->n_ids);
        x->ids_bos = json_ids(cJSON_GetObjectItemCaseSensitive(o, "ids_with_bos"), &x->n_ids_bos);
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(o, "sentencepiece_slow_ids");
        if (sp) x->sp_ids = json_ids(sp, &x->n_sp);
        x->decode = json_strdup(o, "decode");
        x->decode_skip = json_strdup(o, "decode_skip_special");
        if (x->decode) restore_nul(x->decode);
        if (x->decode_skip) restore_nul(x->decode_skip);
        cJSON_Delete(o);
    }
    free(buf);
    return c;
}

static void free_cases(tcase *c, int n) {
    for (int i = 0; i < n; i++) {
        free(c[i].text);
        free(c[i].ids);
        free(c[i].ids_bos);
        free(c[i].sp_ids);
        free(c[i].decode);
        free(c[i].decode_skip);
    }
    free(c);
}

static int ids_eq(const int32_t *a, int64_t na, const int32_t *b, int64_t nb) {
    return na == nb && (na == 0 || memcmp(a, b, sizeof *a * (size_t)na) == 0);
}

static void print_ids(const char *what, const int32_t *v, int64_t n) {
    fprintf(stderr, "    %s [", what);
    for (int64_t i = 0; i < n && i < 40; i++) fprintf(stderr, "%s%d", i ? ", " : "", v[i]);
    fprintf(stderr, "%s]\n", n > 40 ? ", ..." : "");
}

/* streaming decode, one id at a time */
static char *stream_decode_len(const sala_tokenizer *t, const int32_t *ids, int64_t n, int skip, size_t *len_out) {
    sala_detok *d = sala_detok_new(t, skip);
    char *out = NULL;
    size_t len = 0;
    for (int64_t i = 0; i < n; i++) sala_detok_push(d, ids[i], &out, &len);
    sala_detok_flush(d, &out, &len);
    sala_detok_free(d);
    if (!out) out = strdup("");
    *len_out = len;
    return out;
}

static char *stream_decode(const sala_tokenizer *t, const int32_t *ids, int64_t n, int skip) {
    size_t len;
    return stream_decode_len(t, ids, n, skip, &len);
}

/* decode(ids) == text, byte for byte (texts may hold NULs) */
static int decodes_to(const sala_tokenizer *t, const int32_t *ids, int64_t n, const char *text, size_t len) {
    size_t got;
    char *s = stream_decode_len(t, ids, n, 0, &got);
    char *w = sala_tokenizer_decode(t, ids, n, 0);
    int ok = w && got == len && memcmp(s, text, len) == 0 && strcmp(w, s) == 0;
    free(s);
    free(w);
    return ok;
}

/* the README's round-trip rule: holds for text without added-token strings and without a literal ▁ */
static int roundtrip_applies(const sala_tokenizer *t, const char *s) {
    if (strstr(s, "\xE2\x96\x81")) return 0;
    for (int32_t id = 0; id < sala_tokenizer_n_vocab(t); id++)
        if (sala_tokenizer_is_added(t, id) && strstr(s, sala_tokenizer_piece(t, id))) return 0;
    return 1;
}

static void run_cases(const char *rel, int expect_n, int full) {
    int n;
    tcase *c = load_cases(rel, &n);
    CHECK(c && n == expect_n, "%s: %d cases", rel, n);
    int ok_ids = 0, ok_bos = 0, ok_dec = 0, ok_skip = 0, ok_stream = 0, rt_n = 0, ok_rt = 0;
    for (int i = 0; i < n; i++) {
        tcase *x = &c[i];
        int32_t *ids = NULL, *idb = NULL;
        int64_t ni = 0, nb = 0;
        sala_status st = sala_tokenizer_encode(g_tok, x->text, x->len, 0, &ids, &ni);
        sala_status st2 = sala_tokenizer_encode(g_tok, x->text, x->len, 1, &idb, &nb);
        CHECK(st == SALA_OK && st2 == SALA_OK, "encode: %s", sala_last_error());
        if (ids_eq(ids, ni, x->ids, x->n_ids)) {
            ok_ids++;
        } else {
            fprintf(stderr, "  %s case %d: ids differ for \"%s\"\n", rel, i, x->text);
            print_ids("got", ids, ni);
            print_ids("want", x->ids, x->n_ids);
        }
        if (ids_eq(idb, nb, x->ids_bos, x->n_ids_bos)) ok_bos++;
        else fprintf(stderr, "  %s case %d: ids_with_bos differ for \"%s\"\n", rel, i, x->text);
        for (int skip = 0; skip < 2; skip++) {
            char *whole = sala_tokenizer_decode(g_tok, x->ids, x->n_ids, skip);
            char *strm = stream_decode(g_tok, x->ids, x->n_ids, skip);
            CHECK(whole != NULL, "decode: %s", sala_last_error());
            if (whole && !strcmp(whole, strm)) ok_stream++;
            else fprintf(stderr, "  %s case %d: stream \"%s\" != whole \"%s\"\n", rel, i, strm, whole ? whole : "(null)");
            const char *want = skip ? x->decode_skip : x->decode;
            if (full && whole) {
                if (want && !strcmp(whole, want)) skip ? ok_skip++ : ok_dec++;
                else fprintf(stderr, "  %s case %d: decode(skip=%d) \"%s\", want \"%s\"\n", rel, i, skip, whole, want);
            }
            free(whole);
            free(strm);
        }
        if (roundtrip_applies(g_tok, x->text)) {
            rt_n++;
            if (decodes_to(g_tok, ids, ni, x->text, x->len)) ok_rt++;
            else fprintf(stderr, "  %s case %d: round trip of \"%s\" fails\n", rel, i, x->text);
        }
        free(ids);
        free(idb);
    }
    printf("  %s: ids %d/%d, ids_with_bos %d/%d, stream==whole %d/%d", rel, ok_ids, n, ok_bos, n, ok_stream, 2 * n);
    if (full) printf(", decode %d/%d, decode_skip_special %d/%d", ok_dec, n, ok_skip, n);
    printf(", round trip %d/%d\n", ok_rt, rt_n);
    CHECK(ok_ids == n && ok_bos == n && ok_stream == 2 * n && ok_rt == rt_n, "%s", "");
    if (full) CHECK(ok_dec == n && ok_skip == n, "%s", "");
    CHECK(rt_n > 0, "%s", "");
    free_cases(c, n);
}

static void test_load(void) {
    sala_status st = sala_tokenizer_load(test_path("tokenizer/minicpm"), &g_tok);
    CHECK(st == SALA_OK, "%s", sala_last_error());
    if (!g_tok) exit(1);
    CHECK(!strcmp(sala_tokenizer_source(g_tok), "tokenizer.json"), "%s", "");
    CHECK(sala_tokenizer_n_vocab(g_tok) == 73448, "%d", sala_tokenizer_n_vocab(g_tok));
    CHECK(sala_tokenizer_bos(g_tok) == 1, "%s", "");
    CHECK(sala_tokenizer_eos(g_tok) == 73440, "%d", sala_tokenizer_eos(g_tok));
    CHECK(sala_tokenizer_unk(g_tok) == 0, "%s", "");
    CHECK(sala_tokenizer_add_bos_default(g_tok) == 1, "%s", "");
    CHECK(sala_tokenizer_find(g_tok, "<|im_start|>") == 73441, "%s", "");
    CHECK(sala_tokenizer_find(g_tok, "<|fim_suffix|>") == 73447, "%s", "");
    CHECK(sala_tokenizer_find(g_tok, "\xE2\x96\x81") == 59320, "%s", "");
    CHECK(sala_tokenizer_find(g_tok, "no such piece") == -1, "%s", "");
    CHECK(sala_tokenizer_piece(g_tok, 1089) && !strcmp(sala_tokenizer_piece(g_tok, 1089), "<0x00>"), "%s", "");
    CHECK(sala_tokenizer_piece(g_tok, 73447) && !strcmp(sala_tokenizer_piece(g_tok, 73447), "<|fim_suffix|>"), "%s", "");
    CHECK(sala_tokenizer_piece(g_tok, 73448) == NULL && sala_tokenizer_piece(g_tok, -1) == NULL, "%s", "");
    CHECK(sala_tokenizer_is_special(g_tok, 1) && sala_tokenizer_is_special(g_tok, 73441), "%s", "");
    CHECK(!sala_tokenizer_is_special(g_tok, 59320) && !sala_tokenizer_is_special(g_tok, 99999), "%s", "");
}

static void expect_ids(const char *text, int add_bos, const int32_t *want, int n) {
    int32_t *ids;
    int64_t ni;
    CHECK(sala_tokenizer_encode(g_tok, text, strlen(text), add_bos, &ids, &ni) == SALA_OK, "%s", "");
    CHECK(ids_eq(ids, ni, want, n), "\"%s\"", text);
    free(ids);
}

static void test_readme_examples(void) {
    expect_ids("Hello world", 0, (int32_t[]){21045, 2809}, 2);
    expect_ids(" Hello world", 0, (int32_t[]){1345, 15934, 2809}, 3);
    expect_ids("\xE4\xBD\xA0\xE5\xA5\xBD\xEF\xBC\x8C\xE4\xB8\x96\xE7\x95\x8C\xEF\xBC\x81", 0,
               (int32_t[]){59320, 23523, 65, 2925, 67}, 5);
    expect_ids("<|im_end|>\n", 0, (int32_t[]){73440, 59320, 5}, 3);
    const char *chat = "<|im_start|>user\nHello, world! Test prompt.<|im_end|>\n<|im_start|>assistant\n";
    int32_t want[] = {1, 73441, 3060, 5, 15934, 59342, 2809, 73, 5110, 12487, 72, 73440, 59320, 5, 73441, 16434, 5};
    expect_ids(chat, 1, want, 17);
    expect_ids(chat, 0, want + 1, 16);
    expect_ids("", 0, NULL, 0);
    expect_ids("", 1, (int32_t[]){1}, 1);
    /* text with a NUL inside is encoded by length */
    int32_t *ids;
    int64_t n;
    CHECK(sala_tokenizer_encode(g_tok, "a\0b", 3, 0, &ids, &n) == SALA_OK, "%s", "");
    char *back = sala_tokenizer_decode(g_tok, ids, n, 0);
    CHECK(back && back[0] == 'a' && back[1] == 0, "NUL comes back as a NUL byte");
    CHECK(n == 3 && ids[1] == 1089, "a, <0x00>, b");
    free(back);
    free(ids);
}

static void test_curated(void) { run_cases("tokenizer/vectors/curated.jsonl", 101, 1); }
static void test_random(void) { run_cases("tokenizer/vectors/random.jsonl", 1300, 0); }

/* ---- streaming ---- */

static void test_stream_holds_partial_chars(void) {
    /* U+1D518 has no piece: four byte tokens; nothing comes out until the fourth */
    const char *s = "\xF0\x9D\x94\x98!";
    int32_t *ids;
    int64_t n;
    CHECK(sala_tokenizer_encode(g_tok, s, strlen(s), 0, &ids, &n) == SALA_OK, "%s", "");
    CHECK(n == 6 && ids[0] == 59320 && ids[1] == 1089 + 0xF0, "n=%lld", (long long)n);
    sala_detok *d = sala_detok_new(g_tok, 0);
    char *out = NULL;
    size_t len = 0;
    size_t got[6];
    for (int i = 0; i < 6 && i < n; i++) got[i] = sala_detok_push(d, ids[i], &out, &len);
    CHECK(got[0] == 0, "leading space stripped");
    CHECK(got[1] == 0 && got[2] == 0 && got[3] == 0 && got[4] == 4, "character held until complete");
    CHECK(got[5] == 1, "%s", "");
    CHECK(sala_detok_flush(d, &out, &len) == 0, "%s", "");
    CHECK(out && len == strlen(s) && !strcmp(out, s), "%s", "");
    /* ill-formed runs: a truncated character, a stray continuation byte */
    sala_detok_reset(d);
    free(out);
    out = NULL;
    len = 0;
    int32_t bad[] = {1089 + 0xE4, 1089 + 0xBD, 1348 /* ▁a */, 1089 + 0x80, 1089 + 0xE4};
    for (int i = 0; i < 5; i++) sala_detok_push(d, bad[i], &out, &len);
    CHECK(out && !strcmp(out, "\xEF\xBF\xBD a\xEF\xBF\xBD"), "got \"%s\"", out ? out : "");
    sala_detok_flush(d, &out, &len);
    CHECK(out && !strcmp(out, "\xEF\xBF\xBD a\xEF\xBF\xBD\xEF\xBF\xBD"), "got \"%s\"", out ? out : "");
    char *whole = sala_tokenizer_decode(g_tok, bad, 5, 0);
    CHECK(whole && !strcmp(whole, out), "%s", "");
    /* an out-of-range id adds nothing to a stream, and fails a whole decode */
    CHECK(sala_detok_push(d, 999999, &out, &len) == 0, "%s", "");
    CHECK(sala_detok_push(d, -5, &out, &len) == 0, "%s", "");
    int32_t oob[] = {1348, 73448};
    char *r = sala_tokenizer_decode(g_tok, oob, 2, 0);
    CHECK(r == NULL && strstr(sala_last_error(), "73448"), "%s", sala_last_error());
    free(whole);
    free(out);
    free(ids);
    sala_detok_free(d);
    /* skipped special tokens do not break a byte run */
    int32_t mid[] = {1089 + 0xE4, 73440, 1089 + 0xBD, 1089 + 0xA0};
    char *a = sala_tokenizer_decode(g_tok, mid, 4, 1), *b = stream_decode(g_tok, mid, 4, 1);
    CHECK(a && !strcmp(a, "\xE4\xBD\xA0") && !strcmp(a, b), "%s", "");
    free(a);
    free(b);
}

/* ---- ill-formed input ---- */

static void test_invalid_utf8(void) {
    /* each maximal ill-formed subpart is one U+FFFD; the result is the encoding of that string */
    struct {
        const char *in, *as;
    } cases[] = {
        {"\xFF", "\xEF\xBF\xBD"},
        {"ab\xC3", "ab\xEF\xBF\xBD"},
        {"\xE4\xBD" "a", "\xEF\xBF\xBD" "a"},
        {"\xED\xA0\x80", "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"}, /* surrogate */
        {"\xF0\x9F\x98", "\xEF\xBF\xBD"},
        {"x\x80\x80y", "x\xEF\xBF\xBD\xEF\xBF\xBDy"},
        {"<|im_end\xFF|>", "<|im_end\xEF\xBF\xBD|>"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int32_t *a, *b;
        int64_t na, nb;
        CHECK(sala_tokenizer_encode(g_tok, cases[i].in, strlen(cases[i].in), 0, &a, &na) == SALA_OK, "%s", "");
        CHECK(sala_tokenizer_encode(g_tok, cases[i].as, strlen(cases[i].as), 0, &b, &nb) == SALA_OK, "%s", "");
        CHECK(ids_eq(a, na, b, nb), "case %zu", i);
        char *back = sala_tokenizer_decode(g_tok, a, na, 0);
        CHECK(back && !strcmp(back, cases[i].as), "case %zu: \"%s\"", i, back ? back : "");
        free(back);
        free(a);
        free(b);
    }
    /* all 256 byte values, in pseudo-random strings */
    uint64_t rng = 12345;
    for (int k = 0; k < 200; k++) {
        char buf[64];
        int len = k % 64;
        for (int i = 0; i < len; i++) {
            rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
            buf[i] = (char)(rng >> 56);
        }
        int32_t *ids;
        int64_t n;
        CHECK(sala_tokenizer_encode(g_tok, buf, (size_t)len, 1, &ids, &n) == SALA_OK, "%s", "");
        char *back = sala_tokenizer_decode(g_tok, ids, n, 0);
        char *strm = stream_decode(g_tok, ids, n, 0);
        CHECK(back && !strcmp(back, strm), "%s", "");
        free(back);
        free(strm);
        free(ids);
    }
}

/* ---- an independent, naive BPE (O(n^2)) on long texts ---- */

typedef struct {
    uint64_t key;
    uint32_t rank;
} naive_merge;

static int cmp_nm(const void *a, const void *b) {
    uint64_t x = ((const naive_merge *)a)->key, y = ((const naive_merge *)b)->key;
    return x < y ? -1 : x > y;
}

static naive_merge *g_nm;
static size_t g_nnm;

static int load_naive_merges(void) {
    char *buf;
    size_t len;
    if (sala_read_file(test_path("tokenizer/minicpm/tokenizer.json"), &buf, &len)) return 0;
    cJSON *root = cJSON_Parse(buf);
    free(buf);
    const cJSON *m = cJSON_GetObjectItem(cJSON_GetObjectItem(root, "model"), "merges"), *it;
    g_nnm = (size_t)cJSON_GetArraySize(m);
    g_nm = malloc(sizeof *g_nm * g_nnm);
    size_t k = 0;
    cJSON_ArrayForEach(it, m) {
        char *s = strdup(it->valuestring), *sp = strchr(s, ' ');
        *sp = 0;
        int32_t a = sala_tokenizer_find(g_tok, s), b = sala_tokenizer_find(g_tok, sp + 1);
        g_nm[k].key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
        g_nm[k].rank = (uint32_t)k;
        k++;
        free(s);
    }
    cJSON_Delete(root);
    qsort(g_nm, g_nnm, sizeof *g_nm, cmp_nm);
    return 1;
}

static uint32_t naive_rank(int32_t a, int32_t b) {
    naive_merge key = {((uint64_t)(uint32_t)a << 32) | (uint32_t)b, 0};
    naive_merge *hit = bsearch(&key, g_nm, g_nnm, sizeof *g_nm, cmp_nm);
    return hit ? hit->rank : UINT32_MAX;
}

/* text without added tokens and without invalid UTF-8 */
static int32_t *naive_encode(const char *text, int64_t *n_out) {
    size_t n = strlen(text);
    char *w = malloc(3 * n + 4), *p = w;
    p += sprintf(p, "\xE2\x96\x81");
    for (size_t i = 0; i < n; i++) {
        if (text[i] == ' ') p += sprintf(p, "\xE2\x96\x81");
        else *p++ = text[i];
    }
    *p = 0;
    int32_t *sym = malloc(sizeof *sym * (size_t)(p - w));
    int64_t ns = 0;
    for (const char *q = w; *q;) {
        int k = ((uint8_t)*q < 0x80) ? 1 : ((uint8_t)*q < 0xE0) ? 2 : ((uint8_t)*q < 0xF0) ? 3 : 4;
        char c[8];
        memcpy(c, q, (size_t)k);
        c[k] = 0;
        int32_t id = sala_tokenizer_find(g_tok, c);
        if (id >= 0) sym[ns++] = id;
        else
            for (int j = 0; j < k; j++) {
                snprintf(c, sizeof c, "<0x%02X>", (uint8_t)q[j]);
                sym[ns++] = sala_tokenizer_find(g_tok, c);
            }
        q += k;
    }
    uint32_t *rank = malloc(sizeof *rank * (size_t)(ns + 1));
    for (int64_t i = 0; i + 1 < ns; i++) rank[i] = naive_rank(sym[i], sym[i + 1]);
    for (;;) {
        int64_t best = -1;
        for (int64_t i = 0; i + 1 < ns; i++)
            if (rank[i] != UINT32_MAX && (best < 0 || rank[i] < rank[best])) best = i;
        if (best < 0) break;
        char merged[256];
        snprintf(merged, sizeof merged, "%s%s", sala_tokenizer_piece(g_tok, sym[best]),
                 sala_tokenizer_piece(g_tok, sym[best + 1]));
        sym[best] = sala_tokenizer_find(g_tok, merged);
        memmove(sym + best + 1, sym + best + 2, sizeof *sym * (size_t)(ns - best - 2));
        memmove(rank + best + 1, rank + best + 2, sizeof *rank * (size_t)(ns - best - 2));
        ns--;
        if (best > 0) rank[best - 1] = naive_rank(sym[best - 1], sym[best]);
        rank[best] = best + 1 < ns ? naive_rank(sym[best], sym[best + 1]) : UINT32_MAX;
    }
    free(rank);
    free(w);
    *n_out = ns;
    return sym;
}

/* long texts: the random cases without added-token strings or ▁, joined with separators */
static char *join_random_texts(int start, int count, const char *sep) {
    int n;
    tcase *c = load_cases("tokenizer/vectors/random.jsonl", &n);
    size_t cap = 1 << 16, len = 0;
    char *out = malloc(cap);
    out[0] = 0;
    for (int i = 0; i < count && n > 0; i++) {
        const tcase *x = &c[(start + i) % n];
        if (!roundtrip_applies(g_tok, x->text)) continue;
        size_t need = len + x->len + strlen(sep) + 1;
        if (need > cap) out = realloc(out, cap = need * 2);
        len += (size_t)sprintf(out + len, "%s%s", x->text, sep);
    }
    free_cases(c, n);
    return out;
}

static void test_naive_bpe_long(void) {
    CHECK(load_naive_merges(), "%s", "");
    const char *seps[] = {" ", "", "\n", "  "};
    int same = 0, total = 0;
    for (int k = 0; k < 8; k++) {
        char *text = join_random_texts(k * 150, 60 + 10 * k, seps[k % 4]);
        int64_t nn, nh;
        int32_t *want = naive_encode(text, &nn), *got;
        CHECK(sala_tokenizer_encode(g_tok, text, strlen(text), 0, &got, &nh) == SALA_OK, "%s", "");
        total++;
        if (ids_eq(got, nh, want, nn)) same++;
        else fprintf(stderr, "  naive BPE differs on a %zu-byte text (%lld vs %lld ids)\n", strlen(text),
                     (long long)nh, (long long)nn);
        free(want);
        free(got);
        free(text);
    }
    printf("  heap BPE == naive BPE on %d/%d long texts\n", same, total);
    CHECK(same == total, "%s", "");
    free(g_nm);
}

/* ---- speed ---- */

/* this thread's CPU seconds: the rate without the noise of a busy machine */
static double cpu_time(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void test_encode_speed(void) {
    /* ~4 MB: every random text (many scripts) repeated, as one long segment with no added tokens */
    char *piece = join_random_texts(0, 1300, " ");
    size_t plen = strlen(piece), target = 4u << 20, len = 0;
    char *text = malloc(target + plen + 1);
    while (len < target) {
        memcpy(text + len, piece, plen);
        len += plen;
    }
    text[len] = 0;
    int32_t *ids;
    int64_t n;
    double t0 = sala_time(), c0 = cpu_time();
    sala_status st = sala_tokenizer_encode(g_tok, text, len, 1, &ids, &n);
    double dt = sala_time() - t0, ct = cpu_time() - c0;
    CHECK(st == SALA_OK, "%s", "");
    printf("  encode: %.2f MB, %lld tokens in %.2f s (cpu %.2f s) = %.2f MB/s, %.0f tokens/s (by cpu time)\n",
           len / 1e6, (long long)n, dt, ct, len / 1e6 / ct, n / ct);
    CHECK(dt < 60, "encoding %.1f MB took %.1f s", len / 1e6, dt);
    t0 = sala_time();
    char *back = sala_tokenizer_decode(g_tok, ids + 1, n - 1, 0);
    dt = sala_time() - t0;
    printf("  decode: %lld tokens in %.3f s\n", (long long)n, dt);
    CHECK(back && strlen(back) == len && !memcmp(back, text, len), "round trip of the long text");
    /* the same text with a special token every ~2 KB (many short segments) */
    for (size_t i = 2000; i + 20 < len; i += 2000) memcpy(text + i, "<|im_end|>", 10);
    free(ids);
    c0 = cpu_time();
    st = sala_tokenizer_encode(g_tok, text, len, 0, &ids, &n);
    ct = cpu_time() - c0;
    CHECK(st == SALA_OK, "%s", "");
    printf("  encode with a special token every 2 KB: %.2f MB/s, %.0f tokens/s (by cpu time)\n", len / 1e6 / ct,
           n / ct);
    free(ids);
    free(back);
    free(text);
    free(piece);
}

/* ---- tokenizer.model fallback ---- */

static char *make_tmpdir(void) {
    char tmpl[] = "/tmp/sala_tok_XXXXXX";
    char *d = mkdtemp(tmpl);
    return d ? strdup(d) : NULL;
}

static int write_file(const char *dir, const char *name, const void *data, size_t len) {
    char *p = sala_path_join(dir, name);
    FILE *f = fopen(p, "wb");
    free(p);
    if (!f) return 0;
    int ok = fwrite(data, 1, len, f) == len;
    return fclose(f) == 0 && ok;
}

static void rm_dir(const char *dir) {
    const char *names[] = {"tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                           "added_tokens.json"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char *p = sala_path_join(dir, names[i]);
        unlink(p);
        free(p);
    }
    rmdir(dir);
}

static void test_spm_fallback(void) {
    char *model;
    size_t mlen;
    CHECK(sala_read_file(test_path("tokenizer/minicpm/tokenizer.model"), &model, &mlen) == SALA_OK, "%s", "");
    char *dir = make_tmpdir();
    CHECK(dir && write_file(dir, "tokenizer.model", model, mlen), "%s", "");
    sala_tokenizer *t = NULL;
    sala_status st = sala_tokenizer_load(dir, &t);
    CHECK(st == SALA_OK, "%s", sala_last_error());
    if (!t) return;
    CHECK(!strcmp(sala_tokenizer_source(t), "tokenizer.model"), "%s", "");
    CHECK(sala_tokenizer_n_vocab(t) == 73440, "%d", sala_tokenizer_n_vocab(t));
    CHECK(sala_tokenizer_bos(t) == 1 && sala_tokenizer_eos(t) == 2 && sala_tokenizer_unk(t) == 0, "%s", "");
    int same_pieces = 1;
    for (int32_t i = 0; i < 73440; i++)
        if (strcmp(sala_tokenizer_piece(t, i), sala_tokenizer_piece(g_tok, i))) same_pieces = 0;
    CHECK(same_pieces, "the .model's pieces are the .json's vocab");
    int n;
    tcase *c = load_cases("tokenizer/vectors/curated.jsonl", &n);
    int match = 0, simple = 0, simple_match = 0, rt = 0, rt_ok = 0;
    for (int i = 0; i < n; i++) {
        int32_t *ids;
        int64_t ni;
        CHECK(sala_tokenizer_encode(t, c[i].text, c[i].len, 0, &ids, &ni) == SALA_OK, "%s", "");
        int eq = ids_eq(ids, ni, c[i].sp_ids, c[i].n_sp);
        match += eq;
        /* "simple": no string that either tokenizer treats as an added/control token */
        int is_simple = roundtrip_applies(g_tok, c[i].text);
        simple += is_simple;
        simple_match += is_simple && eq;
        if (!eq) {
            fprintf(stderr, "  spm case %d%s: \"%s\"\n", i, is_simple ? " (simple)" : "", c[i].text);
            print_ids("got ", ids, ni);
            print_ids("slow", c[i].sp_ids, c[i].n_sp);
        }
        if (is_simple) {
            rt++;
            rt_ok += decodes_to(t, ids, ni, c[i].text, c[i].len);
        }
        free(ids);
    }
    printf("  tokenizer.model: sentencepiece_slow_ids matched %d/%d curated cases, %d/%d without special-token "
           "strings; round trip %d/%d\n",
           match, n, simple_match, simple, rt_ok, rt);
    CHECK(simple_match == simple && rt_ok == rt, "%s", "");
    free_cases(c, n);
    sala_tokenizer_free(t);
    /* with the side files the added tokens come back */
    const char *side[] = {"tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"};
    for (int i = 0; i < 3; i++) {
        char rel[128], *buf;
        size_t len;
        snprintf(rel, sizeof rel, "tokenizer/minicpm/%s", side[i]);
        CHECK(sala_read_file(test_path(rel), &buf, &len) == SALA_OK, "%s", "");
        CHECK(write_file(dir, side[i], buf, len), "%s", "");
        free(buf);
    }
    CHECK(sala_tokenizer_load(dir, &t) == SALA_OK, "%s", sala_last_error());
    if (t) {
        CHECK(sala_tokenizer_n_vocab(t) == 73448 && sala_tokenizer_eos(t) == 73440, "%s", "");
        CHECK(sala_tokenizer_find(t, "<|im_start|>") == 73441 && sala_tokenizer_is_special(t, 73441), "%s", "");
        int32_t *ids;
        int64_t ni;
        const char *s = "<|im_start|>user\nHi<|im_end|>";
        CHECK(sala_tokenizer_encode(t, s, strlen(s), 1, &ids, &ni) == SALA_OK, "%s", "");
        CHECK(ni >= 4 && ids[0] == 1 && ids[1] == 73441 && ids[ni - 1] == 73440, "%s", "");
        char *back = sala_tokenizer_decode(t, ids + 1, ni - 1, 0);
        CHECK(back && !strcmp(back, s), "%s", back ? back : "");
        free(back);
        free(ids);
        sala_tokenizer_free(t);
    }
    rm_dir(dir);
    free(dir);
    free(model);
}

/* ---- added tokens are data: an upload that names 73442-73444 differently ---- */

static char *replace_all(const char *s, const char *from, const char *to) {
    size_t n = 0, lf = strlen(from), lt = strlen(to);
    for (const char *p = s; (p = strstr(p, from)); p += lf) n++;
    char *out = malloc(strlen(s) + n * (lt > lf ? lt - lf : 0) + 1), *o = out;
    for (const char *p = s, *q; ; p = q + lf) {
        q = strstr(p, from);
        if (!q) {
            strcpy(o, p);
            break;
        }
        memcpy(o, p, (size_t)(q - p));
        o += q - p;
        memcpy(o, to, lt);
        o += lt;
    }
    return out;
}

static void test_renamed_added_tokens(void) {
    const char *files[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"};
    char *dir = make_tmpdir();
    for (int i = 0; i < 4; i++) {
        char rel[128], *buf;
        size_t len;
        snprintf(rel, sizeof rel, "tokenizer/minicpm/%s", files[i]);
        CHECK(sala_read_file(test_path(rel), &buf, &len) == SALA_OK, "%s", rel);
        char *a = replace_all(buf, "<|tool_call|>", "<tool_call>");
        char *b = replace_all(a, "<|execute_start|>", "</tool_call>");
        char *c = replace_all(b, "<|execute_end|>", "<|im_sep|>");
        CHECK(write_file(dir, files[i], c, strlen(c)), "%s", files[i]);
        free(buf);
        free(a);
        free(b);
        free(c);
    }
    sala_tokenizer *t = NULL;
    CHECK(sala_tokenizer_load(dir, &t) == SALA_OK, "%s", sala_last_error());
    if (t) {
        CHECK(sala_tokenizer_find(t, "<tool_call>") == 73442 && sala_tokenizer_find(t, "</tool_call>") == 73443 &&
                  sala_tokenizer_find(t, "<|im_sep|>") == 73444 && sala_tokenizer_find(t, "<|tool_call|>") == -1,
              "%s", "");
        const char *s = "x<tool_call>{}</tool_call><|im_sep|>";
        int32_t *ids;
        int64_t n;
        CHECK(sala_tokenizer_encode(t, s, strlen(s), 0, &ids, &n) == SALA_OK, "%s", "");
        CHECK(n == 5 && ids[1] == 73442 && ids[3] == 73443 && ids[4] == 73444, "n=%lld", (long long)n);
        char *back = sala_tokenizer_decode(t, ids, n, 0);
        CHECK(back && !strcmp(back, "x<tool_call> {}</tool_call><|im_sep|>"), "%s", back ? back : "");
        free(back);
        free(ids);
        sala_tokenizer_free(t);
    }
    rm_dir(dir);
    free(dir);
}

/* ---- the same tokenizer written with a Metaspace pre-tokenizer instead of the normalizer ---- */

static void test_metaspace_variant(void) {
    char *buf;
    size_t len;
    CHECK(sala_read_file(test_path("tokenizer/minicpm/tokenizer.json"), &buf, &len) == SALA_OK, "%s", "");
    cJSON *root = cJSON_Parse(buf);
    free(buf);
    cJSON_ReplaceItemInObject(root, "normalizer", cJSON_CreateNull());
    cJSON_ReplaceItemInObject(root, "pre_tokenizer",
                              cJSON_Parse("{\"type\": \"Metaspace\", \"replacement\": \"\\u2581\", "
                                          "\"prepend_scheme\": \"always\", \"split\": false}"));
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    char *dir = make_tmpdir();
    CHECK(text && write_file(dir, "tokenizer.json", text, strlen(text)), "%s", "");
    free(text);
    sala_tokenizer *t = NULL;
    CHECK(sala_tokenizer_load(dir, &t) == SALA_OK, "%s", sala_last_error());
    int n, same = 0;
    tcase *c = load_cases("tokenizer/vectors/random.jsonl", &n);
    for (int i = 0; t && i < n; i++) {
        int32_t *ids;
        int64_t ni;
        CHECK(sala_tokenizer_encode(t, c[i].text, c[i].len, 0, &ids, &ni) == SALA_OK, "%s", "");
        same += ids_eq(ids, ni, c[i].ids, c[i].n_ids);
        free(ids);
    }
    printf("  Metaspace pre-tokenizer variant: %d/%d random cases equal\n", same, n);
    CHECK(same == n, "%s", "");
    free_cases(c, n);
    sala_tokenizer_free(t);
    rm_dir(dir);
    free(dir);
}

/* ---- bad inputs ---- */

static void test_errors(void) {
    sala_tokenizer *t = (sala_tokenizer *)1;
    CHECK(sala_tokenizer_load("/nonexistent/dir", &t) == SALA_ERR_IO && t == NULL, "%s", "");
    CHECK(strstr(sala_last_error(), "/nonexistent/dir") != NULL, "%s", sala_last_error());
    char *dir = make_tmpdir();
    CHECK(sala_tokenizer_load(dir, &t) == SALA_ERR_IO, "empty folder");
    CHECK(strstr(sala_last_error(), "tokenizer.json"), "%s", sala_last_error());

    /* a malformed tokenizer.json is an error, even with a tokenizer.model beside it */
    char *model;
    size_t mlen;
    CHECK(sala_read_file(test_path("tokenizer/minicpm/tokenizer.model"), &model, &mlen) == SALA_OK, "%s", "");
    write_file(dir, "tokenizer.model", model, mlen);
    const char *bad_json[] = {
        "{ not json",
        "",
        "[1, 2]",
        "{\"model\": 5}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {}}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a b\"]}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 0}}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -3}}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a\"]}}",
        "{\"model\": {\"type\": \"Unigram\", \"vocab\": [[\"a\", 0.0]]}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"normalizer\": {\"type\": \"NFKC\"}}",
        "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}}, \"added_tokens\": [{\"id\": \"x\"}]}",
    };
    for (size_t i = 0; i < sizeof bad_json / sizeof bad_json[0]; i++) {
        write_file(dir, "tokenizer.json", bad_json[i], strlen(bad_json[i]));
        t = NULL;
        sala_status st = sala_tokenizer_load(dir, &t);
        CHECK(st == SALA_ERR_FORMAT || st == SALA_ERR_UNSUPPORTED, "case %zu: %d", i, st);
        CHECK(t == NULL && sala_last_error()[0], "case %zu", i);
        if (i < 3) CHECK(strstr(sala_last_error(), "tokenizer.json"), "%s", sala_last_error());
    }
    /* truncated copies of the real tokenizer.json */
    char *json;
    size_t jlen;
    CHECK(sala_read_file(test_path("tokenizer/minicpm/tokenizer.json"), &json, &jlen) == SALA_OK, "%s", "");
    size_t cuts[] = {1, 100, 5000, jlen / 2, jlen - 2};
    for (size_t i = 0; i < 5; i++) {
        write_file(dir, "tokenizer.json", json, cuts[i]);
        t = NULL;
        CHECK(sala_tokenizer_load(dir, &t) == SALA_ERR_FORMAT && !t, "cut at %zu", cuts[i]);
    }
    free(json);
    /* a malformed side file is reported */
    const char *tiny = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"<0x00>\": 1}}}";
    write_file(dir, "tokenizer.json", tiny, strlen(tiny));
    CHECK(sala_tokenizer_load(dir, &t) == SALA_OK, "%s", sala_last_error());
    sala_tokenizer_free(t);
    write_file(dir, "tokenizer_config.json", "{\"bos_token\": ", 14);
    CHECK(sala_tokenizer_load(dir, &t) == SALA_ERR_FORMAT && strstr(sala_last_error(), "tokenizer_config.json"), "%s", "");
    char *p = sala_path_join(dir, "tokenizer_config.json");
    unlink(p);
    free(p);
    p = sala_path_join(dir, "tokenizer.json");
    unlink(p);
    free(p);

    /* truncated and corrupted protobuf */
    int bad = 0, tries = 0;
    uint64_t rng = 7;
    for (int k = 0; k < 60; k++) {
        size_t cut;
        if (k < 40) {
            rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
            cut = (size_t)(rng >> 33) % mlen;
        } else {
            cut = mlen - (size_t)(k - 39);
        }
        write_file(dir, "tokenizer.model", model, cut);
        t = NULL;
        sala_status st = sala_tokenizer_load(dir, &t);
        tries++;
        if (st != SALA_OK && !t && sala_last_error()[0]) bad++;
        sala_tokenizer_free(t);
    }
    CHECK(bad == tries, "every truncated tokenizer.model is refused (%d/%d)", bad, tries);
    for (int k = 0; k < 40; k++) { /* flipped bytes: must not crash; may or may not load */
        char *m2 = malloc(mlen);
        memcpy(m2, model, mlen);
        for (int j = 0; j < 8; j++) {
            rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
            m2[(rng >> 33) % mlen] = (char)(rng >> 20);
        }
        write_file(dir, "tokenizer.model", m2, mlen);
        t = NULL;
        if (sala_tokenizer_load(dir, &t) == SALA_OK) {
            int32_t *ids;
            int64_t n;
            if (sala_tokenizer_encode(t, "Hello world", 11, 1, &ids, &n) == SALA_OK) free(ids);
        }
        sala_tokenizer_free(t);
        free(m2);
    }
    write_file(dir, "tokenizer.model", "\x0a\x05\x0a\x01", 4);
    CHECK(sala_tokenizer_load(dir, &t) == SALA_ERR_FORMAT, "%s", sala_last_error());
    write_file(dir, "tokenizer.model", "garbage!", 8);
    CHECK(sala_tokenizer_load(dir, &t) != SALA_OK, "%s", "");
    rm_dir(dir);
    free(dir);
    free(model);

    /* API misuse */
    int32_t *ids;
    int64_t n;
    CHECK(sala_tokenizer_encode(g_tok, NULL, 5, 0, &ids, &n) == SALA_ERR_ARG, "%s", "");
    CHECK(sala_tokenizer_encode(g_tok, NULL, 0, 0, &ids, &n) == SALA_OK && n == 0, "%s", "");
    free(ids);
    char *e = sala_tokenizer_decode(g_tok, NULL, 0, 0);
    CHECK(e && !*e, "%s", "");
    free(e);
    CHECK(sala_tokenizer_load(NULL, &t) == SALA_ERR_ARG, "%s", "");
}

int main(void) {
    TEST_RUN(test_load);
    TEST_RUN(test_readme_examples);
    TEST_RUN(test_curated);
    TEST_RUN(test_random);
    TEST_RUN(test_stream_holds_partial_chars);
    TEST_RUN(test_invalid_utf8);
    TEST_RUN(test_naive_bpe_long);
    TEST_RUN(test_encode_speed);
    TEST_RUN(test_spm_fallback);
    TEST_RUN(test_renamed_added_tokens);
    TEST_RUN(test_metaspace_variant);
    TEST_RUN(test_errors);
    sala_tokenizer_free(g_tok);
    TEST_END();
}
