/* sala_tokenizer.h — the MiniCPM tokenizer (SentencePiece-style BPE over Unicode characters with byte
 * fallback), loaded from a checkpoint folder.
 *
 * Source files, in order of preference:
 *   tokenizer.json   Hugging Face `tokenizers` format: the reference (tests/data/tokenizer/README.md).
 *   tokenizer.model  SentencePiece protobuf, used only when tokenizer.json is missing: SentencePiece's own
 *                    BPE by piece score and its NormalizerSpec (what sentencepiece / transformers' slow
 *                    LlamaTokenizer give). For MiniCPM that differs from tokenizer.json on most texts: the
 *                    model has add_dummy_prefix=false (no `▁` in front) and keeps user-defined pieces such as
 *                    <SEP> or `...` atomic. <s>, </s>, <unk> are matched as special tokens in the text.
 * tokenizer_config.json / special_tokens_map.json / added_tokens.json are read when present (added tokens,
 * bos/eos names). sala_tokenizer_source() tells which file was loaded.
 *
 * Encoding: text is split on added tokens (longest match first); each segment between them gets `▁`
 * prepended and every ' ' replaced by `▁`, then is merged as one BPE word; characters without a piece
 * become <0xXX> byte pieces. Bytes that are not well-formed UTF-8 are first replaced by U+FFFD, one per
 * maximal ill-formed subpart (as Python's bytes.decode("utf-8", "replace")), so encode(x) equals what the
 * reference tokenizer gives for that decoded string and decode(encode(x)) == that string.
 *
 * Thread safety: a loaded tokenizer is read-only; encode/decode may be called from several threads. */
#ifndef SALA_TOKENIZER_H
#define SALA_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "sala.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sala_tokenizer sala_tokenizer;

/* dir holds tokenizer.json (preferred) or, only if that is missing, tokenizer.model (SentencePiece protobuf);
 * also reads tokenizer_config.json / special_tokens_map.json / added_tokens.json when present. */
sala_status sala_tokenizer_load(const char *dir, sala_tokenizer **out);
/* Load one specific file (tokenizer.json or a SentencePiece .model, told apart by content); the side files
 * are read from the same folder. */
sala_status sala_tokenizer_load_file(const char *path, sala_tokenizer **out);
void sala_tokenizer_free(sala_tokenizer *t);

const char *sala_tokenizer_source(const sala_tokenizer *t); /* "tokenizer.json" or "tokenizer.model" */
int sala_tokenizer_n_vocab(const sala_tokenizer *t);        /* 1 + the largest id (pieces + added tokens) */
int sala_tokenizer_bos(const sala_tokenizer *t);            /* -1 if none */
/* eos: eos_token of tokenizer_config.json / special_tokens_map.json when present (MiniCPM: <|im_end|> 73440),
 * else the model's </s>; a checkpoint's generation_config.json may list more stop ids (MiniCPM-SALA: 2, 73440). */
int sala_tokenizer_eos(const sala_tokenizer *t);            /* -1 if none */
int sala_tokenizer_unk(const sala_tokenizer *t);            /* -1 if none */
/* 1 if the tokenizer puts BOS in front by default (tokenizer.json post-processor, or add_bos_token of
 * tokenizer_config.json for tokenizer.model); callers choose with encode's add_bos. */
int sala_tokenizer_add_bos_default(const sala_tokenizer *t);

/* ids malloc'd, caller frees (also when *n == 0). add_bos: put the BOS id in front (the post-processor's
 * rule; no EOS). Never fails on arbitrary bytes; fails only on bad arguments or a tokenizer that cannot
 * represent a byte (no <0xXX> pieces and no <unk>). */
sala_status sala_tokenizer_encode(const sala_tokenizer *t, const char *text, size_t len, int add_bos,
                                  int32_t **ids, int64_t *n);
/* malloc'd NUL-terminated text; NULL + error (SALA_ERR_ARG) on an id out of range. skip_special: drop
 * special added tokens (<s>, </s>, <|im_end|>, ...). Bytes that do not form valid UTF-8 come out as U+FFFD. */
char *sala_tokenizer_decode(const sala_tokenizer *t, const int32_t *ids, int64_t n, int skip_special);

int32_t sala_tokenizer_find(const sala_tokenizer *t, const char *piece); /* id of a piece / added token, -1 if none */
const char *sala_tokenizer_piece(const sala_tokenizer *t, int32_t id);   /* NULL if out of range */
int sala_tokenizer_is_special(const sala_tokenizer *t, int32_t id);      /* special added token (0/1) */
int sala_tokenizer_is_added(const sala_tokenizer *t, int32_t id);        /* any added token (0/1) */

/* Streaming decode: push one id at a time, get back only complete UTF-8 characters (a character split
 * across byte-fallback pieces is held until complete); the leading-space strip at the very start applies. */
typedef struct sala_detok sala_detok;
sala_detok *sala_detok_new(const sala_tokenizer *t, int skip_special);
/* Appends the newly complete text to *out (a malloc'd buffer owned by the caller, grown with realloc; *out may
 * be NULL with *out_len 0; kept NUL-terminated) and returns the bytes added. An id out of range adds nothing. */
size_t sala_detok_push(sala_detok *d, int32_t id, char **out, size_t *out_len);
/* Emits any held bytes (invalid UTF-8 as U+FFFD). */
size_t sala_detok_flush(sala_detok *d, char **out, size_t *out_len);
/* Forget the state: the next push is the start of an output again. */
void sala_detok_reset(sala_detok *d);
void sala_detok_free(sala_detok *d);

#ifdef __cplusplus
}
#endif
#endif
