/* tok_hash.c — the tokenizer's two hash maps (string → id, id pair → merge) and its UTF-8 helpers.
 *
 * Both maps are open addressing with linear probing over a power-of-two table kept at most half full; they
 * are built once at load and only read afterwards, so there is no deletion. Strings are hashed with 64-bit
 * FNV-1a followed by a murmur-style finalizer; pairs with the splitmix64 finalizer. */
#include <string.h>

#include "tokenizer/tok_internal.h"
#include "util.h"

static inline uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

static inline uint64_t hash_str(const char *s, uint32_t len) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (uint32_t i = 0; i < len; i++) {
        h ^= (uint8_t)s[i];
        h *= 0x100000001b3ULL;
    }
    return mix64(h ^ len);
}

static uint32_t cap_for(uint32_t expected) {
    uint32_t cap = 16;
    while (cap < expected * 2u + 2u) cap <<= 1;
    return cap;
}

void tok_strmap_init(tok_strmap *m, uint32_t expected) {
    m->cap = cap_for(expected);
    m->n = 0;
    m->e = xmalloc((size_t)m->cap * sizeof *m->e);
    for (uint32_t i = 0; i < m->cap; i++) m->e[i].id = -1;
}

void tok_strmap_free(tok_strmap *m) {
    free(m->e);
    m->e = NULL;
    m->cap = m->n = 0;
}

static void strmap_grow(tok_strmap *m) {
    tok_strmap bigger;
    bigger.cap = m->cap * 2;
    bigger.n = 0;
    bigger.e = xmalloc((size_t)bigger.cap * sizeof *bigger.e);
    for (uint32_t i = 0; i < bigger.cap; i++) bigger.e[i].id = -1;
    for (uint32_t i = 0; i < m->cap; i++)
        if (m->e[i].id >= 0) tok_strmap_put(&bigger, m->e[i].s, m->e[i].len, m->e[i].id);
    free(m->e);
    *m = bigger;
}

void tok_strmap_put(tok_strmap *m, const char *s, uint32_t len, int32_t id) {
    if (!m->e) tok_strmap_init(m, 16);
    if ((m->n + 1) * 2 > m->cap) strmap_grow(m);
    uint32_t mask = m->cap - 1, i = (uint32_t)hash_str(s, len) & mask;
    while (m->e[i].id >= 0) {
        if (m->e[i].len == len && memcmp(m->e[i].s, s, len) == 0) {
            m->e[i].id = id;
            m->e[i].s = s;
            return;
        }
        i = (i + 1) & mask;
    }
    m->e[i].s = s;
    m->e[i].len = len;
    m->e[i].id = id;
    m->n++;
}

int32_t tok_strmap_get(const tok_strmap *m, const char *s, uint32_t len) {
    if (!m->e) return -1;
    uint32_t mask = m->cap - 1, i = (uint32_t)hash_str(s, len) & mask;
    while (m->e[i].id >= 0) {
        if (m->e[i].len == len && memcmp(m->e[i].s, s, len) == 0) return m->e[i].id;
        i = (i + 1) & mask;
    }
    return -1;
}

#define PAIR_EMPTY UINT64_MAX

void tok_pairmap_init(tok_pairmap *m, uint32_t expected) {
    m->cap = cap_for(expected);
    m->n = 0;
    m->e = xmalloc((size_t)m->cap * sizeof *m->e);
    for (uint32_t i = 0; i < m->cap; i++) m->e[i].key = PAIR_EMPTY;
}

void tok_pairmap_free(tok_pairmap *m) {
    free(m->e);
    m->e = NULL;
    m->cap = m->n = 0;
}

static void pairmap_grow(tok_pairmap *m) {
    tok_pairmap bigger;
    tok_pairmap_init(&bigger, m->cap);
    for (uint32_t i = 0; i < m->cap; i++)
        if (m->e[i].key != PAIR_EMPTY)
            tok_pairmap_put(&bigger, (int32_t)(m->e[i].key >> 32), (int32_t)(uint32_t)m->e[i].key, m->e[i].rank,
                            m->e[i].new_id);
    free(m->e);
    *m = bigger;
}

void tok_pairmap_put(tok_pairmap *m, int32_t a, int32_t b, uint32_t rank, int32_t new_id) {
    if (!m->e) tok_pairmap_init(m, 16);
    if ((m->n + 1) * 2 > m->cap) pairmap_grow(m);
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint32_t mask = m->cap - 1, i = (uint32_t)mix64(key) & mask;
    while (m->e[i].key != PAIR_EMPTY) {
        if (m->e[i].key == key) {
            m->e[i].rank = rank;
            m->e[i].new_id = new_id;
            return;
        }
        i = (i + 1) & mask;
    }
    m->e[i].key = key;
    m->e[i].rank = rank;
    m->e[i].new_id = new_id;
    m->n++;
}

const tok_pair_entry *tok_pairmap_get(const tok_pairmap *m, int32_t a, int32_t b) {
    if (!m->e) return NULL;
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint32_t mask = m->cap - 1, i = (uint32_t)mix64(key) & mask;
    while (m->e[i].key != PAIR_EMPTY) {
        if (m->e[i].key == key) return &m->e[i];
        i = (i + 1) & mask;
    }
    return NULL;
}

/* ---- UTF-8 (Unicode Table 3-7, well-formed byte sequences) ---- */

int tok_utf8_lead_len(uint8_t c) {
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) return 2;
    if (c >= 0xE0 && c <= 0xEF) return 3;
    if (c >= 0xF0 && c <= 0xF4) return 4;
    return 0;
}

int tok_utf8_cont_ok(uint8_t lead, int i, uint8_t b) {
    if (i == 1) {
        switch (lead) {
        case 0xE0: return b >= 0xA0 && b <= 0xBF;
        case 0xED: return b >= 0x80 && b <= 0x9F;
        case 0xF0: return b >= 0x90 && b <= 0xBF;
        case 0xF4: return b >= 0x80 && b <= 0x8F;
        default: break;
        }
    }
    return b >= 0x80 && b <= 0xBF;
}

int tok_utf8_char(const uint8_t *s, size_t n, int *bad) {
    int need = tok_utf8_lead_len(s[0]);
    if (need == 0) {
        *bad = 1;
        return 0;
    }
    for (int i = 1; i < need; i++) {
        if ((size_t)i >= n || !tok_utf8_cont_ok(s[0], i, s[i])) {
            *bad = i;
            return 0;
        }
    }
    *bad = 0;
    return need;
}

char *tok_utf8_sanitize(const char *text, size_t len, size_t *out_len, int *oom) {
    const uint8_t *s = (const uint8_t *)text;
    size_t i = 0;
    int bad;
    /* fast scan: most text is valid */
    while (i < len) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        int k = tok_utf8_char(s + i, len - i, &bad);
        if (!k) break;
        i += (size_t)k;
    }
    if (i == len) return NULL;
    /* size first: the text may be large */
    size_t need = i;
    for (size_t j = i; j < len;) {
        int k = tok_utf8_char(s + j, len - j, &bad);
        need += k ? (size_t)k : 3;
        j += k ? (size_t)k : (size_t)bad;
    }
    char *out = malloc(need + 1);
    if (!out) {
        *oom = 1;
        return NULL;
    }
    memcpy(out, text, i);
    size_t o = i;
    while (i < len) {
        int k = tok_utf8_char(s + i, len - i, &bad);
        if (k) {
            memcpy(out + o, s + i, (size_t)k);
            o += (size_t)k;
            i += (size_t)k;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i += (size_t)bad;
        }
    }
    out[o] = 0;
    *out_len = o;
    return out;
}
