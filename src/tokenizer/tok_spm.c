/* tok_spm.c — the tokenizer.model fallback: a SentencePiece ModelProto read with a small protobuf reader, and
 * SentencePiece's own BPE encoding (merges by piece score).
 *
 * Used only when a folder has no tokenizer.json. Fields read:
 *   ModelProto      1 pieces (repeated), 2 trainer_spec, 3 normalizer_spec
 *   SentencePiece   1 piece, 2 score (float), 3 type (NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE)
 *   TrainerSpec     3 model_type (only BPE = 2), 35 byte_fallback, 40 unk_id, 41 bos_id, 42 eos_id, 43 pad_id
 *   NormalizerSpec  1 name, 2 precompiled_charsmap, 3 add_dummy_prefix, 4 remove_extra_whitespaces,
 *                   5 escape_whitespaces (proto2 defaults: true, true, true)
 * A normalizer other than "identity" with a character map (nmt_nfkc, ...) is refused: it would need the
 * compiled normalization trie.
 *
 * Encoding a segment (between added tokens; <unk>/<s>/</s> CONTROL/UNKNOWN pieces and the side files' added
 * tokens are added tokens here, as in transformers' slow LlamaTokenizer):
 *   normalize (remove extra spaces, dummy prefix, ' ' → `▁`, per the NormalizerSpec), split into characters
 *   with USER_DEFINED pieces matched whole (longest) and frozen, then repeatedly merge the adjacent pair whose
 *   concatenation is a piece with the highest score (leftmost on ties), through a max-heap with lazy
 *   invalidation (an entry is stale when either side changed length), then resegment UNUSED pieces into the
 *   pieces they were merged from, and send characters without a piece to byte fallback (or <unk>).
 * This is SentencePiece semantics, not tokenizer.json's: MiniCPM's model has add_dummy_prefix=false, so
 * "Hello" is `Hello`, not `▁Hello`, and `<SEP>`, `...` are atomic user-defined pieces. Against the
 * `sentencepiece_slow_ids` of tests/data/tokenizer/vectors/curated.jsonl it matches 96 of 101 cases; the 5
 * others contain <s>, </s> or <unk> as text, which raw sentencepiece spells out as characters and this loader
 * (like transformers' slow LlamaTokenizer, and like tokenizer.json) reads as the special token. */
#include <string.h>

#include "tokenizer/tok_internal.h"
#include "util.h"

/* ---- protobuf wire format ---- */

typedef struct {
    const uint8_t *p, *end;
} pb_buf;

typedef struct {
    uint32_t field;
    int wire;
    uint64_t v;            /* varint / fixed value */
    const uint8_t *data;   /* length-delimited payload */
    size_t len;
} pb_field;

static int pb_varint(pb_buf *b, uint64_t *out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (b->p >= b->end) return 0;
        uint8_t c = *b->p++;
        v |= (uint64_t)(c & 0x7F) << shift;
        if (!(c & 0x80)) {
            *out = v;
            return 1;
        }
    }
    return 0;
}

/* 1 = a field read, 0 = end of buffer, -1 = malformed / truncated */
static int pb_next(pb_buf *b, pb_field *f) {
    if (b->p >= b->end) return 0;
    uint64_t key;
    if (!pb_varint(b, &key)) return -1;
    f->field = (uint32_t)(key >> 3);
    f->wire = (int)(key & 7);
    if (f->field == 0) return -1;
    switch (f->wire) {
    case 0: return pb_varint(b, &f->v) ? 1 : -1;
    case 1:
        if (b->end - b->p < 8) return -1;
        memcpy(&f->v, b->p, 8);
        b->p += 8;
        return 1;
    case 5: {
        if (b->end - b->p < 4) return -1;
        uint32_t x;
        memcpy(&x, b->p, 4);
        f->v = x;
        b->p += 4;
        return 1;
    }
    case 2: {
        uint64_t len;
        if (!pb_varint(b, &len) || len > (uint64_t)(b->end - b->p)) return -1;
        f->data = b->p;
        f->len = (size_t)len;
        b->p += len;
        return 1;
    }
    default: return -1; /* groups (3, 4) are not used by sentencepiece_model.proto */
    }
}

static float pb_float(uint64_t v) {
    uint32_t x = (uint32_t)v;
    float f;
    memcpy(&f, &x, 4);
    return f;
}

static int64_t pb_int32(uint64_t v) { return (int64_t)(int32_t)(uint32_t)v; }

/* ---- loading ---- */

static void user_trie_add(sala_tokenizer *t, const char *s, size_t len, int32_t id) {
    int32_t node = 0; /* root */
    for (size_t i = 0; i < len; i++) {
        const tok_pair_entry *e = tok_pairmap_get(&t->spm_user, node, (uint8_t)s[i]);
        int32_t child = e ? e->new_id : ++t->spm_user_nodes;
        uint32_t term = e ? e->rank : 0;
        if (i + 1 == len) term = (uint32_t)id + 1;
        tok_pairmap_put(&t->spm_user, node, (uint8_t)s[i], term, child);
        node = child;
    }
}

/* length of the longest user-defined piece at s, 0 if none */
static uint32_t user_trie_match(const sala_tokenizer *t, const char *s, size_t n) {
    int32_t node = 0;
    uint32_t best = 0;
    for (size_t i = 0; i < n; i++) {
        const tok_pair_entry *e = tok_pairmap_get(&t->spm_user, node, (uint8_t)s[i]);
        if (!e) break;
        if (e->rank) best = (uint32_t)i + 1;
        node = e->new_id;
    }
    return best;
}

sala_status tok_load_spm(sala_tokenizer *t, const uint8_t *buf, size_t len, const char *path) {
    t->kind = TOK_KIND_SPM;
    snprintf(t->source, sizeof t->source, "tokenizer.model");
    int64_t model_type = 1, unk_id = 0, bos_id = 1, eos_id = 2, pad_id = -1;
    int byte_fallback = 0, dummy = 1, remove_ws = 1, escape_ws = 1;
    char norm_name[64] = "";
    size_t charsmap_len = 0;
    int32_t n = 0;
    int have_trainer = 0, have_norm = 0;
    pb_buf b = {buf, buf + len};
    pb_field f;
    int r;
    tok_strmap_init(&t->vocab, 1024);
    while ((r = pb_next(&b, &f)) == 1) {
        if (f.field == 1 && f.wire == 2) {
            const char *piece = NULL;
            size_t plen = 0;
            float score = 0;
            int type = SPM_NORMAL;
            pb_buf pbb = {f.data, f.data + f.len};
            pb_field g;
            int rr;
            while ((rr = pb_next(&pbb, &g)) == 1) {
                if (g.field == 1 && g.wire == 2) {
                    piece = (const char *)g.data;
                    plen = g.len;
                } else if (g.field == 2 && g.wire == 5) {
                    score = pb_float(g.v);
                } else if (g.field == 3 && g.wire == 0) {
                    type = (int)g.v;
                }
            }
            if (rr < 0) return sala_set_error(SALA_ERR_FORMAT, "%s: piece %d is malformed (truncated file?)", path, n);
            if (!piece || type < SPM_NORMAL || type > SPM_BYTE || memchr(piece, 0, plen))
                return sala_set_error(SALA_ERR_FORMAT, "%s: piece %d has no text or a bad type", path, n);
            if (!tok_reserve_id(t, n)) return sala_set_error(SALA_ERR_FORMAT, "%s: too many pieces", path);
            const char *s = tok_store(t, piece, plen);
            t->piece[n] = s;
            t->piece_len[n] = (uint32_t)plen;
            t->flags[n] |= TOK_F_VOCAB;
            t->score[n] = score;
            t->sp_type[n] = (uint8_t)type;
            if (type == SPM_NORMAL || type == SPM_USER_DEFINED || type == SPM_UNUSED) {
                if (plen == 0 || tok_strmap_get(&t->vocab, s, (uint32_t)plen) >= 0)
                    return sala_set_error(SALA_ERR_FORMAT, "%s: piece %d ('%s') is empty or duplicated", path, n, s);
                tok_strmap_put(&t->vocab, s, (uint32_t)plen, n);
            }
            if (type == SPM_USER_DEFINED) user_trie_add(t, s, plen, n);
            if (type == SPM_BYTE) {
                unsigned v;
                char tail;
                if (plen == 6 && sscanf(s, "<0x%2X%c", &v, &tail) == 2 && tail == '>' && v < 256) t->byte_id[v] = n;
            }
            n++;
        } else if (f.field == 2 && f.wire == 2) {
            have_trainer = 1;
            pb_buf tb = {f.data, f.data + f.len};
            pb_field g;
            int rr;
            while ((rr = pb_next(&tb, &g)) == 1) {
                if (g.wire != 0) continue;
                switch (g.field) {
                case 3: model_type = (int64_t)g.v; break;
                case 35: byte_fallback = g.v != 0; break;
                case 40: unk_id = pb_int32(g.v); break;
                case 41: bos_id = pb_int32(g.v); break;
                case 42: eos_id = pb_int32(g.v); break;
                case 43: pad_id = pb_int32(g.v); break;
                default: break;
                }
            }
            if (rr < 0) return sala_set_error(SALA_ERR_FORMAT, "%s: trainer_spec is malformed (truncated file?)", path);
        } else if (f.field == 3 && f.wire == 2) {
            have_norm = 1;
            pb_buf nb = {f.data, f.data + f.len};
            pb_field g;
            int rr;
            while ((rr = pb_next(&nb, &g)) == 1) {
                if (g.field == 1 && g.wire == 2)
                    snprintf(norm_name, sizeof norm_name, "%.*s", (int)(g.len < 63 ? g.len : 63), (const char *)g.data);
                else if (g.field == 2 && g.wire == 2) charsmap_len = g.len;
                else if (g.field == 3 && g.wire == 0) dummy = g.v != 0;
                else if (g.field == 4 && g.wire == 0) remove_ws = g.v != 0;
                else if (g.field == 5 && g.wire == 0) escape_ws = g.v != 0;
            }
            if (rr < 0)
                return sala_set_error(SALA_ERR_FORMAT, "%s: normalizer_spec is malformed (truncated file?)", path);
        }
    }
    if (r < 0) return sala_set_error(SALA_ERR_FORMAT, "%s: not a SentencePiece model (malformed or truncated protobuf)", path);
    if (n == 0) return sala_set_error(SALA_ERR_FORMAT, "%s: not a SentencePiece model (no pieces)", path);
    /* sentencepiece always writes both specs: a file without them is cut short at a field boundary */
    if (!have_trainer || !have_norm)
        return sala_set_error(SALA_ERR_FORMAT, "%s: incomplete SentencePiece model (no %s; truncated file?)", path,
                              !have_trainer ? "trainer_spec" : "normalizer_spec");
    if (model_type != 2)
        return sala_set_error(SALA_ERR_UNSUPPORTED,
                              "%s: SentencePiece model type %lld is not supported (only BPE); provide tokenizer.json",
                              path, (long long)model_type);
    if (charsmap_len > 0 && strcmp(norm_name, "identity") != 0)
        return sala_set_error(SALA_ERR_UNSUPPORTED,
                              "%s: SentencePiece normalizer '%s' is not supported (only identity); provide tokenizer.json",
                              path, norm_name);
    t->spm_byte_fallback = byte_fallback;
    t->spm_dummy_prefix = dummy;
    t->spm_remove_ws = remove_ws;
    t->spm_escape_ws = escape_ws;
    /* reserved pieces are matched as special added tokens */
    for (int32_t i = 0; i < n; i++) {
        if (t->sp_type[i] == SPM_UNKNOWN && t->unk < 0) t->unk = i;
        if ((t->sp_type[i] == SPM_CONTROL || t->sp_type[i] == SPM_UNKNOWN) && t->piece_len[i] > 0)
            tok_add_token(t, t->piece[i], i, 1);
    }
    if (unk_id >= 0 && unk_id < n && t->unk < 0) t->unk = (int32_t)unk_id;
    if (bos_id >= 0 && bos_id < n) t->bos = (int32_t)bos_id;
    if (eos_id >= 0 && eos_id < n) t->eos = (int32_t)eos_id;
    if (pad_id >= 0 && pad_id < n) t->pad = (int32_t)pad_id;
    t->add_bos_default = 1;
    /* decoder: `▁` → ' ', bytes, strip the dummy prefix */
    tok_replace *rp = &t->dec_replace[t->n_dec_replace++];
    rp->pattern = xstrdup("\xE2\x96\x81");
    rp->content = xstrdup(" ");
    rp->plen = 3;
    rp->clen = 1;
    t->dec_byte_fallback = 1;
    t->dec_strip_start = dummy ? 1 : 0;
    return SALA_OK;
}

/* ---- encoding ---- */

typedef struct {
    uint32_t start, len; /* bytes of the normalized segment */
    int32_t l, r;        /* the two nodes it was merged from, -1 for a character */
} spm_node;

typedef struct {
    int32_t node;        /* current node; -1 once merged into the left neighbour */
    int32_t prev, next;
    int frozen;
} spm_sym;

typedef struct {
    float score;
    int32_t left, right;
    uint32_t size;
} spm_pair;

typedef struct {
    spm_pair *a;
    size_t n, cap;
    int oom;
} spm_heap;

/* a before b: higher score, then smaller left */
static inline int pair_before(const spm_pair *a, const spm_pair *b) {
    if (a->score != b->score) return a->score > b->score;
    return a->left < b->left;
}

static void spm_push(spm_heap *h, spm_pair x) {
    if (h->oom) return;
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 256;
        spm_pair *a = realloc(h->a, cap * sizeof *a);
        if (!a) {
            h->oom = 1;
            return;
        }
        h->a = a;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!pair_before(&x, &h->a[p])) break;
        h->a[i] = h->a[p];
        i = p;
    }
    h->a[i] = x;
}

static spm_pair spm_pop(spm_heap *h) {
    spm_pair top = h->a[0], x = h->a[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && pair_before(&h->a[c + 1], &h->a[c])) c++;
        if (!pair_before(&h->a[c], &x)) break;
        h->a[i] = h->a[c];
        i = c;
    }
    if (h->n) h->a[i] = x;
    return top;
}

typedef struct {
    const sala_tokenizer *t;
    const char *s;
    spm_node *nodes;
    spm_sym *sym;
    spm_heap heap;
} spm_ctx;

static void maybe_add_pair(spm_ctx *c, int32_t left, int32_t right) {
    if (left < 0 || right < 0 || c->sym[left].frozen || c->sym[right].frozen) return;
    const spm_node *a = &c->nodes[c->sym[left].node], *b = &c->nodes[c->sym[right].node];
    int32_t id = tok_strmap_get(&c->t->vocab, c->s + a->start, a->len + b->len);
    if (id < 0) return;
    spm_push(&c->heap, (spm_pair){c->t->score[id], left, right, a->len + b->len});
}

static void emit_node(spm_ctx *c, int32_t nd, tok_ids *out, int *unk_run) {
    const sala_tokenizer *t = c->t;
    const spm_node *x = &c->nodes[nd];
    int32_t id = tok_strmap_get(&t->vocab, c->s + x->start, x->len);
    if (id >= 0 && t->sp_type[id] != SPM_UNUSED) {
        tok_ids_push(out, id);
        *unk_run = 0;
        return;
    }
    if (x->l >= 0) {
        emit_node(c, x->l, out, unk_run);
        emit_node(c, x->r, out, unk_run);
        return;
    }
    const uint8_t *p = (const uint8_t *)c->s + x->start;
    int all = t->spm_byte_fallback;
    for (uint32_t j = 0; all && j < x->len; j++) all = t->byte_id[p[j]] >= 0;
    if (all) {
        for (uint32_t j = 0; j < x->len; j++) tok_ids_push(out, t->byte_id[p[j]]);
        *unk_run = 0;
    } else if (!*unk_run) { /* consecutive unknown characters make one <unk> */
        tok_ids_push(out, t->unk);
        *unk_run = 1;
    }
}

static char *spm_normalize(const sala_tokenizer *t, const char *s, size_t n, size_t *out_n) {
    char *o = malloc(n * 3 + 4);
    if (!o) return NULL;
    size_t j = 0, i = 0, end = n;
    if (t->spm_remove_ws) {
        while (i < end && s[i] == ' ') i++;
        while (end > i && s[end - 1] == ' ') end--;
    }
    if (t->spm_dummy_prefix && i < end) {
        if (t->spm_escape_ws) {
            memcpy(o, "\xE2\x96\x81", 3);
            j = 3;
        } else {
            o[j++] = ' ';
        }
    }
    for (; i < end; i++) {
        if (s[i] == ' ') {
            if (t->spm_remove_ws && i > 0 && s[i - 1] == ' ') continue;
            if (t->spm_escape_ws) {
                memcpy(o + j, "\xE2\x96\x81", 3);
                j += 3;
                continue;
            }
        }
        o[j++] = s[i];
    }
    o[j] = 0;
    *out_n = j;
    return o;
}

sala_status tok_spm_encode_segment(const sala_tokenizer *t, const char *seg, size_t seg_n, tok_ids *out) {
    size_t n;
    char *s = spm_normalize(t, seg, seg_n, &n);
    if (!s) return sala_set_error(SALA_ERR_NOMEM, "tokenizer: out of memory for a %zu-byte segment", seg_n);
    if (n == 0) {
        free(s);
        return SALA_OK;
    }
    spm_ctx c = {.t = t, .s = s};
    c.nodes = malloc(2 * n * sizeof *c.nodes);
    c.sym = malloc(n * sizeof *c.sym);
    if (!c.nodes || !c.sym) {
        free(c.nodes);
        free(c.sym);
        free(s);
        return sala_set_error(SALA_ERR_NOMEM, "tokenizer: out of memory for a %zu-byte segment", n);
    }
    int32_t ns = 0, nn = 0;
    const uint8_t *u = (const uint8_t *)s;
    for (size_t i = 0; i < n;) {
        uint32_t len = t->spm_user.n ? user_trie_match(t, s + i, n - i) : 0;
        int frozen = len > 0;
        if (!len) {
            int bad, k = tok_utf8_char(u + i, n - i, &bad);
            len = (uint32_t)(k ? k : bad);
        }
        c.nodes[nn] = (spm_node){(uint32_t)i, len, -1, -1};
        c.sym[ns] = (spm_sym){nn, ns - 1, ns + 1, frozen};
        nn++;
        ns++;
        i += len;
    }
    c.sym[ns - 1].next = -1;
    for (int32_t i = 1; i < ns; i++) maybe_add_pair(&c, i - 1, i);
    while (c.heap.n) {
        spm_pair top = spm_pop(&c.heap);
        spm_sym *L = &c.sym[top.left], *R = &c.sym[top.right];
        if (L->node < 0 || R->node < 0) continue;
        if (c.nodes[L->node].len + c.nodes[R->node].len != top.size) continue; /* stale */
        c.nodes[nn] = (spm_node){c.nodes[L->node].start, top.size, L->node, R->node};
        L->node = nn++;
        L->next = R->next;
        if (R->next >= 0) c.sym[R->next].prev = top.left;
        R->node = -1;
        maybe_add_pair(&c, L->prev, top.left);
        maybe_add_pair(&c, top.left, L->next);
    }
    int unk_run = 0;
    sala_status st = SALA_OK;
    if (c.heap.oom) st = sala_set_error(SALA_ERR_NOMEM, "tokenizer: out of memory for a %zu-byte segment", seg_n);
    for (int32_t i = 0; i >= 0 && !st; i = c.sym[i].next) {
        int64_t before = out->n;
        emit_node(&c, c.sym[i].node, out, &unk_run);
        if (out->n > before && out->v[out->n - 1] < 0) {
            st = sala_set_error(SALA_ERR_UNSUPPORTED,
                                "tokenizer: a character has no piece, no byte fallback and the model has no <unk>");
        }
    }
    free(c.heap.a);
    free(c.nodes);
    free(c.sym);
    free(s);
    return st;
}
