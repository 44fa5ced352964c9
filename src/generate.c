/* generate.c — the generation loop of sala_generate.h: one prefill call, then sample / feed one token
 * at a time, with streaming detokenization and stop strings that are never partially emitted.
 *
 * Text path per token: detokenizer (complete UTF-8 only) -> `held` (text not yet given to the caller)
 * -> stop-string search over `held` -> release everything but the longest suffix of `held` that is a
 * proper prefix of some stop string. A stop string can only start inside `held`: everything released
 * before had no suffix that could begin one. */
#include "sala_generate.h"

#include <math.h>
#include <string.h>

#include "util.h"

sala_generate_params sala_generate_default_params(void) {
    sala_generate_params p;
    memset(&p, 0, sizeof p);
    p.max_tokens = -1;
    return p;
}

const char *sala_stop_reason_str(sala_stop_reason r) {
    switch (r) {
    case SALA_STOP_NONE:
        return "none";
    case SALA_STOP_EOS:
        return "eos";
    case SALA_STOP_STRING:
        return "stop";
    case SALA_STOP_MAX_TOKENS:
        return "length";
    case SALA_STOP_CONTEXT:
        return "context";
    case SALA_STOP_CALLBACK:
        return "abort";
    case SALA_STOP_ERROR:
        return "error";
    }
    return "unknown";
}

static int add_unique(int32_t *ids, int n, int cap, int32_t id, int vocab) {
    if (id < 0 || id >= vocab || n >= cap)
        return n;
    for (int i = 0; i < n; i++)
        if (ids[i] == id)
            return n;
    ids[n] = id;
    return n + 1;
}

int sala_generate_eos_ids(const sala_model *m, const sala_tokenizer *tok, int32_t *ids, int cap) {
    sala_model_info info;
    sala_model_get_info(m, &info);
    int n = 0;
    for (int i = 0; i < info.n_eos && i < 8; i++)
        n = add_unique(ids, n, cap, info.eos_ids[i], info.vocab);
    if (tok) {
        n = add_unique(ids, n, cap, sala_tokenizer_eos(tok), info.vocab);
        n = add_unique(ids, n, cap, sala_tokenizer_find(tok, "<|im_end|>"), info.vocab);
        n = add_unique(ids, n, cap, sala_tokenizer_find(tok, "</s>"), info.vocab);
    }
    return n;
}

static int32_t argmax(const float *z, int n) {
    int32_t best = 0;
    float bz = -INFINITY;
    for (int i = 0; i < n; i++)
        if (z[i] > bz) { /* strict: ties to the lower id */
            bz = z[i];
            best = i;
        }
    return best;
}

/* Earliest occurrence of any stop string in s[0..n): its offset, and which one in *which; -1 if none. */
static int64_t find_stop(const char *s, size_t n, const char *const *stop, int n_stop, int *which) {
    int64_t best = -1;
    for (int i = 0; i < n_stop; i++) {
        const char *h = memmem(s, n, stop[i], strlen(stop[i]));
        if (h && (best < 0 || h - s < best)) {
            best = h - s;
            *which = i;
        }
    }
    return best;
}

/* Length of the longest suffix of s[0..n) that is a proper prefix of some stop string. */
static size_t stop_holdback(const char *s, size_t n, const char *const *stop, int n_stop) {
    size_t k = 0;
    for (int i = 0; i < n_stop; i++) {
        size_t l = strlen(stop[i]);
        size_t m = l - 1 < n ? l - 1 : n;
        for (; m > k; m--)
            if (memcmp(s + n - m, stop[i], m) == 0) {
                k = m;
                break;
            }
    }
    return k;
}

typedef struct {
    char *buf; /* held text, NUL-terminated (grown by sala_detok_push) */
    size_t len;
} held_text;

/* Gives s->buf[0..k) to the callback and keeps the rest. Returns the callback's answer. */
static int release(held_text *h, size_t k, int32_t tok, const sala_generate_params *p) {
    int r = 0;
    if (p->on_token && (tok >= 0 || k > 0))
        r = p->on_token(p->ud, tok, h->buf ? h->buf : "", k);
    if (k && h->buf) {
        memmove(h->buf, h->buf + k, h->len - k);
        h->len -= k;
        h->buf[h->len] = 0;
    }
    return r;
}

sala_status sala_generate(sala_session *s, const int32_t *prompt, int64_t n_prompt, const sala_generate_params *p,
                          sala_generate_result *res) {
    sala_generate_result dummy;
    if (!res)
        res = &dummy;
    memset(res, 0, sizeof *res);
    res->stop = SALA_STOP_NONE;
    res->stop_index = -1;
    res->pending_token = -1;
    res->eos_token = -1;
    if (!s || !p || !p->model)
        return sala_set_error(SALA_ERR_ARG, "sala_generate: session, params and model are required");
    if (!prompt || n_prompt <= 0)
        return sala_set_error(SALA_ERR_ARG, "sala_generate: empty prompt (at least one token is needed to start)");
    if (p->n_stop > 0 && !p->tokenizer)
        return sala_set_error(SALA_ERR_ARG,
                              "stop strings need a tokenizer (the model folder has none; give --tokenizer DIR)");
    for (int i = 0; i < p->n_stop; i++)
        if (!p->stop || !p->stop[i] || !p->stop[i][0])
            return sala_set_error(SALA_ERR_ARG, "stop string %d is empty", i);
    sala_model_info info;
    sala_model_get_info(p->model, &info);
    const int V = info.vocab;
    for (int64_t i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= V)
            return sala_set_error(SALA_ERR_ARG,
                                  "prompt token id %d (index %lld) is outside the model's vocabulary of %d ids; "
                                  "the tokenizer does not match this model",
                                  prompt[i], (long long)i, V);
    const int64_t pos0 = sala_session_pos(s), n_ctx = sala_session_n_ctx(s);
    if (pos0 + n_prompt > n_ctx) {
        res->stop = SALA_STOP_CONTEXT;
        if (pos0 > 0)
            return sala_set_error(SALA_ERR_CONTEXT,
                                  "the new input (%lld tokens) does not fit the context: %lld tokens are already in "
                                  "the session and the context is %lld tokens. HINT: raise -c, or start over (/reset)",
                                  (long long)n_prompt, (long long)pos0, (long long)n_ctx);
        return sala_set_error(SALA_ERR_CONTEXT,
                              "the prompt has %lld tokens but the context is %lld tokens. HINT: raise -c (up to %d) or "
                              "shorten the prompt",
                              (long long)n_prompt, (long long)n_ctx, info.max_position);
    }

    float *logits = malloc((size_t)V * sizeof *logits);
    if (!logits)
        return sala_set_error(SALA_ERR_NOMEM, "no memory for the logits (%d floats)", V);
    sala_detok *dt = p->tokenizer ? sala_detok_new(p->tokenizer, p->skip_special) : NULL;
    held_text held = {0};
    if (p->sampler)
        sala_sampler_accept_prompt(p->sampler, prompt, n_prompt);

    /* prefill: one call */
    double t0 = sala_time();
    sala_status st = sala_session_eval(s, prompt, n_prompt, SALA_LOGITS_LAST, logits);
    double t1 = sala_time();
    res->t_prefill = t1 - t0;
    if (st != SALA_OK) {
        res->n_prompt = sala_session_pos(s) - pos0;
        res->stop = st == SALA_ERR_INTERRUPTED ? SALA_STOP_CALLBACK : SALA_STOP_ERROR;
        goto out;
    }
    res->n_prompt = n_prompt;

    for (;;) {
        if (p->max_tokens >= 0 && res->n_gen >= p->max_tokens) {
            res->stop = SALA_STOP_MAX_TOKENS;
            break;
        }
        int32_t tok = p->sampler ? sala_sampler_sample(p->sampler, logits, V) : argmax(logits, V);
        if (tok < 0) {
            st = SALA_ERR_ARG;
            res->stop = SALA_STOP_ERROR;
            goto out;
        }
        res->n_gen++;
        if (p->sampler)
            sala_sampler_accept(p->sampler, tok);
        int is_eos = 0;
        for (int i = 0; i < p->n_eos; i++)
            is_eos |= p->eos_ids[i] == tok;
        if (is_eos) {
            res->stop = SALA_STOP_EOS;
            res->eos_token = tok;
            break;
        }
        res->pending_token = tok;
        if (dt)
            sala_detok_push(dt, tok, &held.buf, &held.len);
        int which = -1;
        int64_t at = p->n_stop ? find_stop(held.buf ? held.buf : "", held.len, p->stop, p->n_stop, &which) : -1;
        if (at >= 0) {
            release(&held, (size_t)at, tok, p);
            held.len = 0; /* the stop string and what follows it are dropped */
            res->stop = SALA_STOP_STRING;
            res->stop_index = which;
            break;
        }
        size_t keep = p->n_stop ? stop_holdback(held.buf, held.len, p->stop, p->n_stop) : 0;
        if (release(&held, held.len - keep, tok, p)) {
            res->stop = SALA_STOP_CALLBACK;
            break;
        }
        if (p->max_tokens >= 0 && res->n_gen >= p->max_tokens) {
            res->stop = SALA_STOP_MAX_TOKENS;
            break;
        }
        if (sala_session_pos(s) >= n_ctx) {
            res->stop = SALA_STOP_CONTEXT;
            break;
        }
        st = sala_session_eval(s, &tok, 1, SALA_LOGITS_LAST, logits);
        if (st != SALA_OK) {
            res->stop = st == SALA_ERR_INTERRUPTED ? SALA_STOP_CALLBACK : SALA_STOP_ERROR;
            if (st == SALA_ERR_INTERRUPTED)
                st = SALA_OK; /* a stop request, not a failure */
            break;
        }
        res->n_decode++;
        res->pending_token = -1;
    }
    /* the rest of the text: what the detokenizer held and what could have become a stop string */
    if (res->stop != SALA_STOP_STRING && res->stop != SALA_STOP_ERROR) {
        if (dt)
            sala_detok_flush(dt, &held.buf, &held.len);
        if (held.len)
            release(&held, held.len, -1, p);
    }
    res->t_decode = sala_time() - t1;
out:
    free(held.buf);
    if (dt)
        sala_detok_free(dt);
    free(logits);
    return st;
}
