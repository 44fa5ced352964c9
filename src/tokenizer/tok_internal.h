/* tok_internal.h — the tokenizer's private state, shared by the files of src/tokenizer/.
 *
 * One struct holds both kinds of tokenizer (tokenizer.json "HF" and SentencePiece "SPM"): the id → piece
 * table, a string → id hash map of the model vocab, the merge table (HF: pair of ids → rank and result id),
 * the added tokens (matched on the raw text before anything else, longest first), and the normalizer and
 * decoder settings reduced to the few steps MiniCPM-style tokenizers use.
 *
 *   tok_load.c    tokenizer.json + side files (cJSON), common finishing of the tables
 *   tok_spm.c     tokenizer.model: protobuf reader, SentencePiece BPE encoder (merges by score)
 *   tok_encode.c  added-token split, normalizer, BPE by merge rank (heap + linked symbols)
 *   tok_decode.c  decoder and the streaming detokenizer (whole decode runs through the same machine)
 *   tok_hash.c    the two hash maps and the UTF-8 helpers */
#ifndef SALA_TOK_INTERNAL_H
#define SALA_TOK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "sala_tokenizer.h"

/* ---- hash maps ---- */

/* string → id, open addressing; keys point into storage owned by the tokenizer (not copied). */
typedef struct {
    const char *s;
    uint32_t len;
    int32_t id;   /* -1 = empty slot */
} tok_str_entry;

typedef struct {
    tok_str_entry *e;
    uint32_t cap;  /* power of two */
    uint32_t n;
} tok_strmap;

void tok_strmap_init(tok_strmap *m, uint32_t expected);
void tok_strmap_free(tok_strmap *m);
/* insert or overwrite */
void tok_strmap_put(tok_strmap *m, const char *s, uint32_t len, int32_t id);
int32_t tok_strmap_get(const tok_strmap *m, const char *s, uint32_t len); /* -1 if absent */

/* (left id, right id) → (rank, result id), open addressing. */
typedef struct {
    uint64_t key;  /* (left << 32) | right; UINT64_MAX = empty */
    uint32_t rank;
    int32_t new_id;
} tok_pair_entry;

typedef struct {
    tok_pair_entry *e;
    uint32_t cap;
    uint32_t n;
} tok_pairmap;

void tok_pairmap_init(tok_pairmap *m, uint32_t expected);
void tok_pairmap_free(tok_pairmap *m);
void tok_pairmap_put(tok_pairmap *m, int32_t a, int32_t b, uint32_t rank, int32_t new_id); /* overwrite */
const tok_pair_entry *tok_pairmap_get(const tok_pairmap *m, int32_t a, int32_t b);        /* NULL if absent */

/* ---- UTF-8 ---- */

/* Length of the well-formed UTF-8 character at s (1..4), or 0 if the bytes there are not one; then *bad is
 * the length of the maximal ill-formed subpart (Unicode 3.9, "U+FFFD substitution of maximal subparts",
 * as Python's errors="replace"), which becomes one U+FFFD. n > 0. */
int tok_utf8_char(const uint8_t *s, size_t n, int *bad);
/* Incremental form for the streaming decoder: expected total length for a lead byte (0 = invalid lead),
 * and whether b may follow lead at position i (1..3) of the character. */
int tok_utf8_lead_len(uint8_t lead);
int tok_utf8_cont_ok(uint8_t lead, int i, uint8_t b);
/* Copy of text with every maximal ill-formed subpart replaced by U+FFFD; NULL when text is already valid
 * UTF-8 (no copy needed) or, with *oom set, when the copy cannot be allocated. */
char *tok_utf8_sanitize(const char *text, size_t len, size_t *out_len, int *oom);

/* ---- the tokenizer ---- */

enum { TOK_KIND_HF = 1, TOK_KIND_SPM = 2 };
enum { TOK_NORM_PREPEND = 1, TOK_NORM_PREPEND_FIRST = 2, TOK_NORM_REPLACE = 3 };

/* flags per id */
enum {
    TOK_F_VOCAB = 1,      /* a model vocab piece */
    TOK_F_ADDED = 2,      /* an added token */
    TOK_F_SPECIAL = 4,    /* special added token (skipped by skip_special) */
};

/* SentencePiece piece types (ModelProto.SentencePiece.Type) */
enum { SPM_NORMAL = 1, SPM_UNKNOWN = 2, SPM_CONTROL = 3, SPM_USER_DEFINED = 4, SPM_UNUSED = 5, SPM_BYTE = 6 };

typedef struct {
    const char *s;  /* content (points into the tokenizer's arena) */
    uint32_t len;
    int32_t id;
    int special;
} tok_added;

#define TOK_MAX_REPLACE 4

typedef struct {
    char *pattern, *content;
    uint32_t plen, clen;
} tok_replace;

struct sala_tokenizer {
    int kind;
    char source[32];     /* "tokenizer.json" / "tokenizer.model" */

    int32_t n_vocab;     /* 1 + largest id */
    int32_t cap_ids;     /* allocated length of the per-id tables */
    const char **piece;  /* [n_vocab] the token string of an id (added content wins), NULL for a hole */
    uint32_t *piece_len; /* [n_vocab] */
    uint8_t *flags;      /* [n_vocab] TOK_F_* */
    int16_t *byte_val;   /* [n_vocab] byte of a <0xXX> piece for the decoder's byte fallback, else -1 */

    /* string storage: arena blocks freed at the end */
    char **blocks;
    int n_blocks, cap_blocks;
    char *arena;
    size_t arena_left;

    /* model vocab (HF) or the pieces SentencePiece merges into (NORMAL/USER_DEFINED/UNUSED) */
    tok_strmap vocab;
    int32_t bmp_id[65536]; /* id of the one-character piece for BMP code points (-1 none) */
    int32_t byte_id[256];  /* id of <0xXX>, -1 if none */

    /* HF BPE */
    tok_pairmap merges;
    int fuse_unk, byte_fallback, ignore_merges;

    /* normalizer (HF): steps applied in order to each segment between added tokens */
    int n_norm;
    struct {
        int kind;          /* TOK_NORM_* */
        tok_replace r;     /* prepend: content only */
    } norm[8];

    /* SentencePiece */
    float *score;          /* [n_vocab] */
    uint8_t *sp_type;      /* [n_vocab] */
    int spm_dummy_prefix, spm_remove_ws, spm_escape_ws, spm_byte_fallback;
    /* user-defined pieces, matched atomically (longest): a byte trie stored in a pair map,
     * (node, byte) → child node in new_id, and in rank the id + 1 of the piece ending there (0 = none) */
    tok_pairmap spm_user;
    int32_t spm_user_nodes;

    /* added tokens, sorted by content length (longest first) */
    tok_added *added;
    int n_added;
    uint8_t added_first[256]; /* 1 if some added token starts with this byte */

    /* decoder */
    int n_dec_replace;
    tok_replace dec_replace[TOK_MAX_REPLACE];
    int dec_byte_fallback;
    int dec_strip_start;   /* leading ' ' stripped from the start of the output */
    int dec_fused;         /* a Fuse step was seen (load time only) */

    int32_t bos, eos, unk, pad;
    int add_bos_default;   /* what the post-processor / add_bos_token does by default */
};

/* tok_load.c */
char *tok_store(sala_tokenizer *t, const char *s, size_t len); /* NUL-terminated copy kept until free */
sala_tokenizer *tok_new(void);
/* grows the id tables to hold id; returns 0 on an absurd id */
int tok_reserve_id(sala_tokenizer *t, int64_t id);
/* add an added token (content copied); keeps an existing id's content; returns 0 if the content is already an
 * added token or the id is already one (the first definition wins) */
int tok_add_token(sala_tokenizer *t, const char *content, int32_t id, int special);
/* read tokenizer_config.json / special_tokens_map.json / added_tokens.json of dir (all optional) */
sala_status tok_read_side_files(sala_tokenizer *t, const char *dir);
/* sort added tokens, fill byte tables; call after everything is read */
sala_status tok_finish(sala_tokenizer *t);

/* tok_encode.c: a growing list of ids; a failed allocation sets oom and later pushes do nothing (the
 * encoder then reports SALA_ERR_NOMEM: the list grows with the input, so no abort) */
typedef struct {
    int32_t *v;
    int64_t n, cap;
    int oom;
} tok_ids;
void tok_ids_push(tok_ids *a, int32_t id);

/* tok_spm.c */
sala_status tok_load_spm(sala_tokenizer *t, const uint8_t *buf, size_t len, const char *path);
/* SentencePiece encoding of one segment (between added tokens) */
sala_status tok_spm_encode_segment(const sala_tokenizer *t, const char *s, size_t n, tok_ids *out);

#endif
