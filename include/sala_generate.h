/* sala_generate.h — the generation loop shared by `sala run`, `sala chat` and the HTTP server.
 *
 * sala_generate(session, prompt ids, params):
 *   1. checks the prompt fits: session position + n_prompt <= n_ctx (else SALA_ERR_CONTEXT, nothing fed);
 *   2. prefill: ONE sala_session_eval(s, prompt, n_prompt, SALA_LOGITS_LAST, logits) (the session's
 *      progress callback, set in its params, sees it and may abort it);
 *   3. loop: sample a token from the logits (greedy when sampler is NULL), accept it into the sampler,
 *      and stop on, in this order:
 *        - an eos id (the eos token is neither emitted as text nor fed to the session),
 *        - a stop string completed by the text (the text from the stop string on is never emitted;
 *          text that could still become a stop string is held back until it is decided),
 *        - the callback returning non-zero (the token's text was already delivered),
 *        - max_tokens reached,
 *        - the context full (the token could not be fed);
 *      otherwise the token is fed with one sala_session_eval(s, &tok, 1, SALA_LOGITS_LAST, logits).
 *   The last sampled non-eos token is never fed when the loop stops (no logits are needed after it):
 *   result.pending_token tells which; a caller continuing the same session (chat) feeds it first.
 *
 * Text: with a tokenizer, each token goes through a streaming detokenizer (complete UTF-8 only), then the
 * stop-string hold-back, and the callback receives the newly releasable text. Without a tokenizer (the
 * tiny golden checkpoints) the text is always empty and stop strings are refused (SALA_ERR_ARG).
 *
 * Session state after a return: every emitted token but the pending one is in the session. After a
 * failed or interrupted prefill the session's position is whatever the engine left; callers that need
 * the history (chat) compare sala_session_pos() with its value before the call.
 * Thread safety: one call per session at a time. */
#ifndef SALA_GENERATE_H
#define SALA_GENERATE_H

#include <stddef.h>
#include <stdint.h>

#include "sala.h"
#include "sala_sample.h"
#include "sala_tokenizer.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    SALA_STOP_NONE = 0,   /* not stopped (only seen on an error before the loop) */
    SALA_STOP_EOS,        /* sampled an eos id */
    SALA_STOP_STRING,     /* a stop string appeared in the text (result.stop_index says which) */
    SALA_STOP_MAX_TOKENS, /* max_tokens generated */
    SALA_STOP_CONTEXT,    /* the session's context is full */
    SALA_STOP_CALLBACK,   /* the callback (or the prefill progress callback) asked to stop */
    SALA_STOP_ERROR,      /* an engine call failed: see the returned status and sala_last_error() */
} sala_stop_reason;

const char *sala_stop_reason_str(sala_stop_reason r); /* "eos", "stop", "length", "context", "abort", "error" */

/* Called once per sampled non-eos token with the text it released (may be empty: held back by the
 * detokenizer or a possible stop string), and once more at the end with token = -1 and the rest of the
 * text (only when there is some). Return non-zero to stop generating. */
typedef int (*sala_token_fn)(void *ud, int32_t token, const char *text, size_t len);

typedef struct {
    sala_model *model;               /* required: vocab size for the logits */
    const sala_tokenizer *tokenizer; /* NULL: ids only */
    sala_sampler *sampler;           /* NULL: greedy. Caller owns it; prompt tokens are given to
                                        sala_sampler_accept_prompt() here, generated ones to accept(). */
    int64_t max_tokens;              /* new tokens to sample at most (eos included); < 0 = no limit */
    const int32_t *eos_ids;          /* stop ids; NULL with n_eos 0 = none (see sala_generate_eos_ids) */
    int n_eos;
    const char *const *stop; /* stop strings (non-empty), n_stop of them */
    int n_stop;
    int skip_special; /* detokenize without special added tokens (default 0: shown) */
    sala_token_fn on_token;
    void *ud;
} sala_generate_params;

sala_generate_params sala_generate_default_params(void); /* max_tokens -1, everything else 0/NULL */

typedef struct {
    sala_stop_reason stop;
    int stop_index;        /* SALA_STOP_STRING: index in params.stop; else -1 */
    int64_t n_prompt;      /* prompt tokens fed by the prefill */
    double t_prefill;      /* seconds of the prefill call */
    int64_t n_gen;         /* tokens sampled (eos included) */
    int64_t n_decode;      /* single-token evals after the prefill */
    double t_decode;       /* seconds from the end of the prefill to the end (sampling included) */
    int32_t pending_token; /* last sampled non-eos token not fed to the session, or -1 */
    int32_t eos_token;     /* the eos id sampled (SALA_STOP_EOS), else -1 */
} sala_generate_result;

/* Returns SALA_OK for every normal stop (eos, stop string, max tokens, context full, callback);
 * SALA_ERR_CONTEXT when the prompt does not fit; SALA_ERR_INTERRUPTED when the prefill was aborted by the
 * session's progress callback (result.stop = SALA_STOP_CALLBACK); another error when the engine failed
 * (result.stop = SALA_STOP_ERROR). *res is filled in every case. SALA_ERR_ARG for an empty prompt, a prompt
 * id outside [0, vocab), stop strings without a tokenizer. */
sala_status sala_generate(sala_session *s, const int32_t *prompt, int64_t n_prompt, const sala_generate_params *p,
                          sala_generate_result *res);

/* The default stop ids: the model config's eos ids plus the tokenizer's eos and "<|im_end|>" / "</s>"
 * when it has them (tokenizer may be NULL), without duplicates, ids < vocab only. Returns the count. */
int sala_generate_eos_ids(const sala_model *m, const sala_tokenizer *tok, int32_t *ids, int cap);

#ifdef __cplusplus
}
#endif
#endif
