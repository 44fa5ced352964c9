/* fuzz_tokenizer.c — libFuzzer target for the tokenizer (built and run by tests/fuzz.sh).
 *
 * The tokenizer.json tokenizer of $SALA_TOKENIZER_DIR (default tests/data/tokenizer/minicpm) and the
 * tokenizer.model fallback of the same folder are loaded once. Each input is used three ways:
 *   - as text: encode (any bytes), decode; whole decode == streaming decode; for valid UTF-8 without
 *     added-token strings and without a literal `▁`, decode(encode(x)) == x byte for byte (both tokenizers);
 *   - as ids (little-endian int32, some out of range): decode must fail cleanly on a bad id, the stream must
 *     skip it, and on valid ids whole and streaming decode agree;
 *   - when it starts with '{' (JSON) or 0x0A (protobuf field 1), as a tokenizer.json / tokenizer.model of its
 *     own: loading may fail (with a message) but must not crash or leak; if it loads, encode and decode run. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sala_tokenizer.h"
#include "util.h"

static sala_tokenizer *g_json, *g_spm;

static sala_tokenizer *load_or_die(const char *path, int file) {
    sala_tokenizer *t = NULL;
    sala_status st = file ? sala_tokenizer_load_file(path, &t) : sala_tokenizer_load(path, &t);
    if (st) {
        fprintf(stderr, "fuzz_tokenizer: cannot load %s: %s\n", path, sala_last_error());
        abort();
    }
    return t;
}

static void init(void) {
    const char *dir = getenv("SALA_TOKENIZER_DIR");
    if (!dir || !*dir) dir = "tests/data/tokenizer/minicpm";
    g_json = load_or_die(dir, 0);
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.model", dir);
    FILE *f = fopen(path, "rb");
    if (f) {
        fclose(f);
        g_spm = load_or_die(path, 1);
    }
}

/* independent check of well-formed UTF-8 (RFC 3629) */
static int valid_utf8(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t k;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            k = 2;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            k = 3;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            k = 4;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (i + k > n) return 0;
        for (size_t j = 1; j < k; j++) {
            if ((s[i + j] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + j] & 0x3F);
        }
        if ((k == 2 && cp < 0x80) || (k == 3 && cp < 0x800) || (k == 4 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += k;
    }
    return 1;
}

static char *stream(const sala_tokenizer *t, const int32_t *ids, int64_t n, int skip, size_t *len) {
    sala_detok *d = sala_detok_new(t, skip);
    char *out = NULL;
    *len = 0;
    for (int64_t i = 0; i < n; i++) sala_detok_push(d, ids[i], &out, len);
    sala_detok_flush(d, &out, len);
    sala_detok_free(d);
    return out;
}

/* the added tokens' strings, listed once per tokenizer */
typedef struct {
    const sala_tokenizer *t;
    const char *s[256];
    int n;
} added_list;
static added_list g_added[2];

static const added_list *added_of(const sala_tokenizer *t) {
    added_list *a = &g_added[t == g_json ? 0 : 1];
    if (a->t != t) {
        a->t = t;
        a->n = 0;
        for (int32_t id = 0; id < sala_tokenizer_n_vocab(t) && a->n < 256; id++)
            if (sala_tokenizer_is_added(t, id) && sala_tokenizer_piece(t, id)) a->s[a->n++] = sala_tokenizer_piece(t, id);
    }
    return a;
}

static int has_added_string(const sala_tokenizer *t, const uint8_t *data, size_t size) {
    const added_list *a = added_of(t);
    for (int i = 0; i < a->n; i++)
        if (memmem(data, size, a->s[i], strlen(a->s[i]))) return 1;
    return 0;
}

static void check_text(const sala_tokenizer *t, const uint8_t *data, size_t size) {
    int32_t *ids;
    int64_t n;
    if (sala_tokenizer_encode(t, (const char *)data, size, size & 1, &ids, &n) != SALA_OK) abort();
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= sala_tokenizer_n_vocab(t)) abort();
    for (int skip = 0; skip < 2; skip++) {
        char *whole = sala_tokenizer_decode(t, ids, n, skip);
        size_t slen;
        char *s = stream(t, ids, n, skip, &slen);
        if (!whole) abort();
        if (slen ? (!s || memcmp(whole, s, slen) != 0 || strlen(whole) > slen) : whole[0] != 0) abort();
        free(whole);
        free(s);
    }
    int64_t body = (size & 1) && sala_tokenizer_bos(t) >= 0 ? 1 : 0;
    if (valid_utf8(data, size) && !memmem(data, size, "\xE2\x96\x81", 3) && !has_added_string(t, data, size)) {
        size_t slen;
        char *s = stream(t, ids + body, n - body, 0, &slen);
        if (slen != size || (size && memcmp(s, data, size) != 0)) {
            fprintf(stderr, "round trip failed (%s): %zu bytes in, %zu out\n", sala_tokenizer_source(t), size, slen);
            abort();
        }
        free(s);
    }
    free(ids);
}

static void check_ids(const sala_tokenizer *t, const uint8_t *data, size_t size) {
    int64_t n = (int64_t)(size / 4);
    if (n == 0) return;
    int32_t *ids = malloc(sizeof *ids * (size_t)n);
    int bad = 0;
    int32_t nv = sala_tokenizer_n_vocab(t);
    for (int64_t i = 0; i < n; i++) {
        uint32_t v;
        memcpy(&v, data + 4 * i, 4);
        /* mostly valid ids, sometimes anything */
        ids[i] = (v & 0x80000000u) ? (int32_t)v : (int32_t)(v % (uint32_t)(nv + 2));
        if (ids[i] < 0 || ids[i] >= nv || !sala_tokenizer_piece(t, ids[i])) bad = 1;
    }
    char *whole = sala_tokenizer_decode(t, ids, n, (int)(size & 1));
    if (bad != (whole == NULL)) abort();
    size_t slen;
    char *s = stream(t, ids, n, (int)(size & 1), &slen);
    if (whole && (strlen(whole) > slen || memcmp(whole, s ? s : "", slen) != 0)) abort();
    free(whole);
    free(s);
    free(ids);
}

/* an input that looks like a tokenizer file is also loaded as one: errors are fine, crashes and leaks not */
static char g_tmpdir[64];

static void cleanup_tmpdir(void) {
    char p[128];
    snprintf(p, sizeof p, "%s/tokenizer.json", g_tmpdir);
    unlink(p);
    snprintf(p, sizeof p, "%s/tokenizer.model", g_tmpdir);
    unlink(p);
    rmdir(g_tmpdir);
}

static void check_as_file(const uint8_t *data, size_t size) {
    if (!g_tmpdir[0]) {
        snprintf(g_tmpdir, sizeof g_tmpdir, "/tmp/fuzz_tokenizer_XXXXXX");
        if (!mkdtemp(g_tmpdir)) abort();
        atexit(cleanup_tmpdir);
    }
    char path[128];
    snprintf(path, sizeof path, "%s/%s", g_tmpdir, data[0] == '{' ? "tokenizer.json" : "tokenizer.model");
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    fwrite(data, 1, size, f);
    fclose(f);
    sala_tokenizer *t = NULL;
    sala_clear_error();
    if (sala_tokenizer_load_file(path, &t) == SALA_OK) {
        static const char text[] = "Hello <s> w\xC3\xB6rld \xE2\x96\x81\xFF!";
        int32_t *ids;
        int64_t n;
        if (sala_tokenizer_encode(t, text, sizeof text - 1, 1, &ids, &n) == SALA_OK) {
            for (int64_t i = 0; i < n; i++)
                if (ids[i] < 0 || ids[i] >= sala_tokenizer_n_vocab(t)) abort();
            char *s = sala_tokenizer_decode(t, ids, n, 0);
            free(s);
            free(ids);
        }
        sala_tokenizer_free(t);
    } else if (!sala_last_error()[0]) {
        abort(); /* a failure must say why */
    }
    unlink(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_json) init();
    if (size > 0 && (data[0] == '{' || data[0] == 0x0A)) check_as_file(data, size);
    check_text(g_json, data, size);
    if (g_spm) check_text(g_spm, data, size);
    check_ids(g_json, data, size);
    return 0;
}
