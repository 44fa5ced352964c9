/* tok_encode.c — text → ids, the pipeline of a tokenizer.json BPE tokenizer (and the common front end of the
 * SentencePiece fallback):
 *
 *   0. bytes that are not well-formed UTF-8 become U+FFFD (one per maximal ill-formed subpart, as Python's
 *      bytes.decode("utf-8", "replace")), so the result is what the reference gives for that decoded string;
 *   1. split on added tokens, leftmost match, longest first at a position (`tokenizers`' LeftmostLongest);
 *   2. each non-empty segment between them is normalized on its own (Prepend `▁`, Replace ' ' → `▁`);
 *   3. the whole segment is one BPE word: one symbol per character (or its <0xXX> bytes, or a fused <unk>),
 *      then merges applied lowest rank first, leftmost first among equal ranks.
 *
 * Step 3 is O(n log n) in the characters of the segment: symbols form a doubly linked list over an array,
 * candidate merges of adjacent symbols sit in a 4-ary min-heap keyed by (rank, position), and entries made
 * stale by an earlier merge are dropped when popped (lazy invalidation: the pair at the position must still
 * be the pair of that rank), the order and the rule of `tokenizers`' Word::merge_all. */
#include <string.h>

#include "tokenizer/tok_internal.h"
#include "util.h"

void tok_ids_push(tok_ids *a, int32_t id) {
    if (a->oom) return;
    if (a->n == a->cap) {
        int64_t cap = a->cap ? a->cap * 2 : 64;
        int32_t *v = realloc(a->v, (size_t)cap * sizeof *v);
        if (!v) {
            a->oom = 1;
            return;
        }
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = id;
}

/* ---- normalizer ---- */

static char *apply_replace(const char *s, size_t n, const tok_replace *r, size_t *out_n) { /* NULL: no memory */
    size_t count = 0;
    for (size_t i = 0; i + r->plen <= n;) {
        if (s[i] == r->pattern[0] && memcmp(s + i, r->pattern, r->plen) == 0) {
            count++;
            i += r->plen;
        } else {
            i++;
        }
    }
    size_t m = n - count * r->plen + count * r->clen;
    char *o = malloc(m + 1);
    if (!o) return NULL;
    size_t j = 0;
    for (size_t i = 0; i < n;) {
        if (i + r->plen <= n && s[i] == r->pattern[0] && memcmp(s + i, r->pattern, r->plen) == 0) {
            memcpy(o + j, r->content, r->clen);
            j += r->clen;
            i += r->plen;
        } else {
            o[j++] = s[i++];
        }
    }
    o[j] = 0;
    *out_n = j;
    return o;
}

/* malloc'd normalized copy of one segment (NULL: out of memory); at_start: the segment begins the text */
static char *normalize(const sala_tokenizer *t, const char *s, size_t n, int at_start, size_t *out_n) {
    char *cur = malloc(n + 1);
    if (!cur) return NULL;
    memcpy(cur, s, n);
    cur[n] = 0;
    int k;
    for (k = 0; k < t->n_norm; k++) {
        const tok_replace *r = &t->norm[k].r;
        int kind = t->norm[k].kind;
        char *next = NULL;
        if (kind == TOK_NORM_REPLACE) {
            next = apply_replace(cur, n, r, &n);
        } else if ((kind == TOK_NORM_PREPEND || (kind == TOK_NORM_PREPEND_FIRST && at_start)) && n > 0) {
            next = malloc(n + r->clen + 1);
            if (!next) break;
            memcpy(next, r->content, r->clen);
            memcpy(next + r->clen, cur, n);
            n += r->clen;
            next[n] = 0;
        }
        if (!next && kind == TOK_NORM_REPLACE) break;
        if (next) {
            free(cur);
            cur = next;
        }
    }
    if (k < t->n_norm) { /* an allocation failed */
        free(cur);
        return NULL;
    }
    *out_n = n;
    return cur;
}

/* ---- BPE by merge rank ---- */

typedef struct {
    int32_t id;         /* -1 once merged into its left neighbour */
    int32_t prev, next; /* -1 at the ends */
} bpe_sym;

/* The heap holds bare keys, rank << 32 | position of the left symbol (smaller pops first). A popped entry is
 * current when the pair now at that position still has that rank: a rank names one pair, and the pair at a
 * position changes whenever either symbol is merged, so this is the same test as `tokenizers`' comparison of
 * the result id. 4-ary: half the depth of a binary heap, and the four children share a cache line. */
typedef struct {
    uint64_t *a;
    size_t n, cap;
    int oom;
} bpe_heap;

static void heap_sift_down(bpe_heap *h, size_t i) {
    uint64_t x = h->a[i];
    const size_t n = h->n;
    for (;;) {
        size_t c = 4 * i + 1;
        if (c >= n) break;
        size_t best = c;
        size_t end = c + 4 < n ? c + 4 : n;
        for (size_t j = c + 1; j < end; j++)
            if (h->a[j] < h->a[best]) best = j;
        if (h->a[best] >= x) break;
        h->a[i] = h->a[best];
        i = best;
    }
    h->a[i] = x;
}

static void heap_push(bpe_heap *h, uint64_t key) {
    if (h->oom) return;
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 256;
        uint64_t *a = realloc(h->a, cap * sizeof *a);
        if (!a) {
            h->oom = 1;
            return;
        }
        h->a = a;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 4;
        if (h->a[p] <= key) break;
        h->a[i] = h->a[p];
        i = p;
    }
    h->a[i] = key;
}

static uint64_t heap_pop(bpe_heap *h) {
    uint64_t top = h->a[0];
    h->a[0] = h->a[--h->n];
    if (h->n) heap_sift_down(h, 0);
    return top;
}

static inline uint32_t utf8_cp(const uint8_t *s, int k) {
    switch (k) {
    case 1: return s[0];
    case 2: return ((s[0] & 0x1Fu) << 6) | (s[1] & 0x3Fu);
    case 3: return ((s[0] & 0x0Fu) << 12) | ((s[1] & 0x3Fu) << 6) | (s[2] & 0x3Fu);
    default: return 0x10000;
    }
}

static sala_status nomem(size_t n) {
    return sala_set_error(SALA_ERR_NOMEM, "tokenizer: out of memory encoding a %zu-byte text segment", n);
}

static sala_status bpe_word(const sala_tokenizer *t, const char *w, size_t n, tok_ids *out) {
    if (n == 0) return SALA_OK;
    if (t->ignore_merges && n < UINT32_MAX) {
        int32_t id = tok_strmap_get(&t->vocab, w, (uint32_t)n);
        if (id >= 0) {
            tok_ids_push(out, id);
            return SALA_OK;
        }
    }
    /* 1. initial symbols: at most one per byte */
    bpe_sym *sym = malloc(n * sizeof *sym);
    if (!sym) return nomem(n);
    int32_t ns = 0;
    int unk_pending = 0;
    const uint8_t *s = (const uint8_t *)w;
#define ADD_SYM(x)                    \
    do {                              \
        sym[ns].id = (x);             \
        sym[ns].prev = ns - 1;        \
        sym[ns].next = ns + 1;        \
        ns++;                         \
    } while (0)
    for (size_t i = 0; i < n;) {
        int bad, k = tok_utf8_char(s + i, n - i, &bad);
        if (k == 0) k = bad; /* cannot happen: the text was sanitized */
        int32_t id;
        if (k == 1 && s[i] >= 0x80) id = -1; /* a stray byte (not reachable after sanitizing) */
        else if (k <= 3) id = t->bmp_id[utf8_cp(s + i, k)];
        else id = tok_strmap_get(&t->vocab, w + i, (uint32_t)k);
        if (id >= 0) {
            if (unk_pending) ADD_SYM(t->unk);
            unk_pending = 0;
            ADD_SYM(id);
        } else {
            int all = t->byte_fallback;
            for (int j = 0; all && j < k; j++) all = t->byte_id[s[i + j]] >= 0;
            if (all) {
                if (unk_pending) ADD_SYM(t->unk);
                unk_pending = 0;
                for (int j = 0; j < k; j++) ADD_SYM(t->byte_id[s[i + j]]);
            } else if (t->unk >= 0) {
                if (unk_pending && !t->fuse_unk) ADD_SYM(t->unk);
                unk_pending = 1;
            } else {
                free(sym);
                return sala_set_error(SALA_ERR_UNSUPPORTED,
                                      "tokenizer: character at byte %zu has no piece, no byte fallback and no <unk>", i);
            }
        }
        i += (size_t)k;
    }
    if (unk_pending) ADD_SYM(t->unk);
#undef ADD_SYM
    sym[ns - 1].next = -1;

    /* 2. merges, lowest (rank, position) first */
    bpe_heap h = {0};
    h.cap = (size_t)ns + 16;
    h.a = malloc(h.cap * sizeof *h.a);
    if (!h.a) {
        free(sym);
        return nomem(n);
    }
    for (int32_t i = 0; i + 1 < ns; i++) {
        const tok_pair_entry *e = tok_pairmap_get(&t->merges, sym[i].id, sym[i + 1].id);
        if (e) h.a[h.n++] = ((uint64_t)e->rank << 32) | (uint32_t)i;
    }
    for (size_t i = h.n / 4 + 1; i-- > 0;)
        if (i < h.n) heap_sift_down(&h, i);
    while (h.n) {
        uint64_t top = heap_pop(&h);
        int32_t pos = (int32_t)(uint32_t)top;
        if (sym[pos].id < 0) continue;
        int32_t nx = sym[pos].next;
        if (nx < 0) continue;
        const tok_pair_entry *e = tok_pairmap_get(&t->merges, sym[pos].id, sym[nx].id);
        if (!e || e->rank != (uint32_t)(top >> 32)) continue; /* stale */
        sym[pos].id = e->new_id;
        sym[pos].next = sym[nx].next;
        sym[nx].id = -1;
        if (sym[nx].next >= 0) sym[sym[nx].next].prev = pos;
        int32_t pv = sym[pos].prev;
        if (pv >= 0 && (e = tok_pairmap_get(&t->merges, sym[pv].id, sym[pos].id)))
            heap_push(&h, ((uint64_t)e->rank << 32) | (uint32_t)pv);
        nx = sym[pos].next;
        if (nx >= 0 && (e = tok_pairmap_get(&t->merges, sym[pos].id, sym[nx].id)))
            heap_push(&h, ((uint64_t)e->rank << 32) | (uint32_t)pos);
    }
    free(h.a);
    if (h.oom) {
        free(sym);
        return nomem(n);
    }
    for (int32_t i = 0; i >= 0; i = sym[i].next) tok_ids_push(out, sym[i].id);
    free(sym);
    return SALA_OK;
}

static sala_status encode_segment(const sala_tokenizer *t, const char *s, size_t n, int at_start, tok_ids *out) {
    if (n == 0) return SALA_OK;
    if (n > (size_t)INT32_MAX / 4)
        return sala_set_error(SALA_ERR_ARG, "tokenizer: a text segment of %zu bytes is too long (limit %d)", n,
                              INT32_MAX / 4);
    if (t->kind == TOK_KIND_SPM) return tok_spm_encode_segment(t, s, n, out);
    size_t m;
    char *norm = normalize(t, s, n, at_start, &m);
    if (!norm) return nomem(n);
    sala_status st = bpe_word(t, norm, m, out);
    free(norm);
    return st;
}

sala_status sala_tokenizer_encode(const sala_tokenizer *t, const char *text, size_t len, int add_bos, int32_t **ids,
                                  int64_t *n) {
    if (!t || !ids || !n || (!text && len))
        return sala_set_error(SALA_ERR_ARG, "sala_tokenizer_encode: NULL argument");
    *ids = NULL;
    *n = 0;
    size_t slen = len;
    int oom = 0;
    char *clean = len ? tok_utf8_sanitize(text, len, &slen, &oom) : NULL;
    if (oom) return nomem(len);
    const char *s = clean ? clean : text;
    tok_ids out = {0};
    sala_status st = SALA_OK;
    if (add_bos && t->bos >= 0) tok_ids_push(&out, t->bos);
    size_t seg = 0, pos = 0;
    while (pos < slen && !st) {
        const tok_added *hit = NULL;
        if (t->added_first[(uint8_t)s[pos]]) {
            for (int k = 0; k < t->n_added; k++) {
                const tok_added *a = &t->added[k];
                if (a->len <= slen - pos && memcmp(s + pos, a->s, a->len) == 0) {
                    hit = a; /* sorted longest first */
                    break;
                }
            }
        }
        if (!hit) {
            pos++;
            continue;
        }
        st = encode_segment(t, s + seg, pos - seg, seg == 0, &out);
        tok_ids_push(&out, hit->id);
        pos += hit->len;
        seg = pos;
    }
    if (!st) st = encode_segment(t, s + seg, slen - seg, seg == 0, &out);
    free(clean);
    if (!st && out.oom) st = nomem(len);
    if (st) {
        free(out.v);
        return st;
    }
    if (!out.v) out.v = xmalloc(sizeof *out.v);
    *ids = out.v;
    *n = out.n;
    return SALA_OK;
}
