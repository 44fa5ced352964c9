/* tok_decode.c — ids → text, and the streaming detokenizer.
 *
 * The decoder of tokenizer.json (Replace `▁` → ' ', ByteFallback, Fuse, Strip one leading ' ') is run as a
 * small state machine over ids: ordinary tokens are written out after the Replace steps; <0xXX> tokens feed
 * a UTF-8 assembler that writes a character once its bytes are complete; the Strip removes leading spaces
 * from the first bytes written. Whole-text decode is the same machine run over all ids followed by a flush,
 * so streaming and whole decode agree by construction.
 *
 * Ill-formed byte runs: `tokenizers` turns a run of byte tokens that is not entirely valid UTF-8 into one
 * U+FFFD per byte of the run. Here each maximal ill-formed subpart becomes one U+FFFD and the valid
 * characters of the run are kept (Python's errors="replace"), which is what lets a stream emit a character
 * as soon as it is complete. The two agree on every run that is valid UTF-8, i.e. on anything the encoder
 * produces. Special tokens skipped with skip_special do not interrupt a byte run (they are filtered out
 * before the decoder, as in `tokenizers`). */
#include <malloc.h>
#include <string.h>

#include "tokenizer/tok_internal.h"
#include "util.h"

struct sala_detok {
    const sala_tokenizer *t;
    int skip_special;
    int strip_left;   /* leading ' ' still to strip (only before the first other byte) */
    uint8_t held[4];  /* bytes of an incomplete character */
    int n_held, need;
};

/* output buffer; `local` (when set) is caller-provided storage used until it is outgrown */
typedef struct {
    char *buf;
    size_t len, cap;
    char *local;
} sink;

static void sink_put(sink *k, const char *s, size_t n) {
    if (!k->buf && k->local) {
        k->buf = k->local;
    }
    if (k->len + n + 1 > k->cap) {
        size_t cap = k->cap ? k->cap * 2 : 64;
        while (k->len + n + 1 > cap) cap *= 2;
        if (k->buf && k->buf == k->local) {
            char *p = xmalloc(cap);
            memcpy(p, k->buf, k->len);
            k->buf = p;
        } else {
            k->buf = xrealloc(k->buf, cap);
        }
        k->cap = cap;
    }
    memcpy(k->buf + k->len, s, n);
    k->len += n;
    k->buf[k->len] = 0;
}

static void emit(sala_detok *d, sink *k, const char *s, size_t n) {
    while (d->strip_left > 0 && n > 0) {
        if (s[0] != ' ') {
            d->strip_left = 0;
            break;
        }
        s++;
        n--;
        d->strip_left--;
    }
    if (n) {
        d->strip_left = 0;
        sink_put(k, s, n);
    }
}

static const char FFFD[] = "\xEF\xBF\xBD";

static void flush_held(sala_detok *d, sink *k) {
    if (d->n_held) emit(d, k, FFFD, 3);
    d->n_held = 0;
}

static void feed_byte(sala_detok *d, sink *k, uint8_t b) {
    if (d->n_held) {
        if (tok_utf8_cont_ok(d->held[0], d->n_held, b)) {
            d->held[d->n_held++] = b;
            if (d->n_held == d->need) {
                emit(d, k, (const char *)d->held, (size_t)d->n_held);
                d->n_held = 0;
            }
            return;
        }
        flush_held(d, k); /* the held prefix is a maximal ill-formed subpart; b starts afresh */
    }
    int need = tok_utf8_lead_len(b);
    if (need == 0) {
        emit(d, k, FFFD, 3);
    } else if (need == 1) {
        char c = (char)b;
        emit(d, k, &c, 1);
    } else {
        d->held[0] = b;
        d->n_held = 1;
        d->need = need;
    }
}

static void emit_piece(sala_detok *d, sink *k, const char *s, size_t n) {
    const sala_tokenizer *t = d->t;
    if (t->n_dec_replace == 0) {
        emit(d, k, s, n);
        return;
    }
    if (t->n_dec_replace == 1) { /* the usual case (`▁` → ' '): straight into the output */
        const tok_replace *rp = &t->dec_replace[0];
        size_t i = 0, lit = 0;
        while (i < n) {
            if (s[i] == rp->pattern[0] && i + rp->plen <= n && memcmp(s + i, rp->pattern, rp->plen) == 0) {
                if (i > lit) emit(d, k, s + lit, i - lit);
                emit(d, k, rp->content, rp->clen);
                i += rp->plen;
                lit = i;
            } else {
                i++;
            }
        }
        if (n > lit) emit(d, k, s + lit, n - lit);
        return;
    }
    /* the Replace steps, in order (a piece is short: a few temporary copies are fine) */
    char *cur = NULL;
    for (int r = 0; r < t->n_dec_replace; r++) {
        const tok_replace *rp = &t->dec_replace[r];
        sink o = {0};
        size_t i = 0, lit = 0;
        while (i < n) {
            if (i + rp->plen <= n && memcmp(s + i, rp->pattern, rp->plen) == 0) {
                if (i > lit) sink_put(&o, s + lit, i - lit);
                sink_put(&o, rp->content, rp->clen);
                i += rp->plen;
                lit = i;
            } else {
                i++;
            }
        }
        if (n > lit) sink_put(&o, s + lit, n - lit);
        free(cur);
        cur = o.buf;
        s = cur ? cur : "";
        n = o.len;
    }
    emit(d, k, s, n);
    free(cur);
}

static void detok_step(sala_detok *d, sink *k, int32_t id) {
    const sala_tokenizer *t = d->t;
    if (id < 0 || id >= t->n_vocab || !t->piece[id]) return;
    if (d->skip_special && (t->flags[id] & TOK_F_SPECIAL)) return;
    if (t->byte_val[id] >= 0) {
        feed_byte(d, k, (uint8_t)t->byte_val[id]);
        return;
    }
    flush_held(d, k);
    emit_piece(d, k, t->piece[id], t->piece_len[id]);
}

sala_detok *sala_detok_new(const sala_tokenizer *t, int skip_special) {
    if (!t) return NULL;
    sala_detok *d = xcalloc(1, sizeof *d);
    d->t = t;
    d->skip_special = skip_special;
    d->strip_left = t->dec_strip_start;
    return d;
}

void sala_detok_reset(sala_detok *d) {
    if (!d) return;
    d->n_held = 0;
    d->strip_left = d->t->dec_strip_start;
}

void sala_detok_free(sala_detok *d) { free(d); }

static size_t append_out(const sink *k, char **out, size_t *out_len) {
    if (!out || !out_len) return 0;
    if (!*out) *out_len = 0;
    /* grow geometrically: a stream appends one token at a time to the same buffer (glibc tells the
     * capacity of any malloc'd block, so a buffer the caller allocated is fine too) */
    size_t need = *out_len + k->len + 1;
    char *p = *out;
    if (!p || malloc_usable_size(p) < need) {
        size_t cap = *out_len * 2 > need ? *out_len * 2 : need;
        if (cap < 64) cap = 64;
        p = xrealloc(p, cap);
    }
    memcpy(p + *out_len, k->buf ? k->buf : "", k->len);
    *out_len += k->len;
    p[*out_len] = 0;
    *out = p;
    return k->len;
}

static void sink_done(sink *k) {
    if (k->buf != k->local) free(k->buf);
}

size_t sala_detok_push(sala_detok *d, int32_t id, char **out, size_t *out_len) {
    if (!d) return 0;
    char local[256];
    sink k = {.local = local, .cap = sizeof local};
    detok_step(d, &k, id);
    size_t n = k.len ? append_out(&k, out, out_len) : 0;
    sink_done(&k);
    return n;
}

size_t sala_detok_flush(sala_detok *d, char **out, size_t *out_len) {
    if (!d) return 0;
    char local[16];
    sink k = {.local = local, .cap = sizeof local};
    flush_held(d, &k);
    size_t n = k.len ? append_out(&k, out, out_len) : 0;
    sink_done(&k);
    return n;
}

char *sala_tokenizer_decode(const sala_tokenizer *t, const int32_t *ids, int64_t n, int skip_special) {
    if (!t || (!ids && n > 0) || n < 0) {
        sala_set_error(SALA_ERR_ARG, "sala_tokenizer_decode: bad argument");
        return NULL;
    }
    for (int64_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_vocab || !t->piece[ids[i]]) {
            sala_set_error(SALA_ERR_ARG, "cannot decode token id %d at position %lld: the vocabulary has ids 0..%d",
                           (int)ids[i], (long long)i, t->n_vocab - 1);
            return NULL;
        }
    }
    sala_detok d = {.t = t, .skip_special = skip_special, .strip_left = t->dec_strip_start};
    sink k = {0};
    sink_put(&k, "", 0);
    for (int64_t i = 0; i < n; i++) detok_step(&d, &k, ids[i]);
    flush_held(&d, &k);
    return k.buf;
}
