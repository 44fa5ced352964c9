/* sala_sample.h — token sampling: penalties, top-k, top-p, min-p, temperature, seeded draws.
 *
 * The chain follows llama.cpp's default order:
 *   penalties -> top-k -> top-p -> min-p -> temperature -> draw
 * top-k / top-p / min-p are decided on softmax(logits) at temperature 1 (after penalties); temperature
 * then reshapes the kept candidates, and one token is drawn from softmax(kept logits / T).
 *
 * Semantics of each stage (all on the penalized logits z):
 *   repeat_penalty r (llama.cpp): for every distinct token id in the last repeat_last_n accepted tokens
 *       (prompt and generated), z > 0 -> z / r, z <= 0 -> z * r. 1.0 = off. Applied once per id,
 *       however often it occurs.
 *   presence_penalty a_p, frequency_penalty a_f (OpenAI): z -= c * a_f + (c > 0) * a_p, where c counts
 *       how often the id was *generated* so far (sala_sampler_accept; prompt tokens given to
 *       sala_sampler_accept_prompt do not count). 0 = off. Negative values encourage repetition.
 *   top_k k: keep the k most probable ids (ties at the boundary go to the lower id). <= 0 = off.
 *   top_p p: sort by probability (ties: lower id first), keep the smallest prefix whose probability sum
 *       reaches p (at least one id). >= 1 = off.
 *   min_p m: keep ids whose probability >= m * (probability of the most probable id). <= 0 = off.
 *       Probabilities here are renormalized over what top-k / top-p kept.
 *   temperature T: T <= 0 -> greedy: argmax of the penalized logits, ties to the lower id (top-k/p and
 *       min-p do not change an argmax, and no random number is drawn). T > 0: draw from softmax(z/T) over
 *       the kept ids.
 *   seed: the sampler's own PRNG (xoshiro256**, seeded through splitmix64), so a seed gives the same
 *       sequence on every machine and build. SALA_SEED_RANDOM picks a seed from the clock / pid.
 *
 * Thread safety: one sampler per sequence; a sampler is not shared between threads. */
#ifndef SALA_SAMPLE_H
#define SALA_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "sala.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SALA_SEED_RANDOM UINT64_MAX

typedef struct {
    float temperature;       /* 0 = greedy.                       default 0.8 */
    int top_k;               /* <= 0 = off.                       default 40 */
    float top_p;             /* >= 1 = off.                       default 0.95 */
    float min_p;             /* <= 0 = off.                       default 0.05 */
    float repeat_penalty;    /* 1 = off.                          default 1.0 */
    int repeat_last_n;       /* window of repeat_penalty; 0 = off, -1 = all accepted tokens. default 64 */
    float presence_penalty;  /* 0 = off.                          default 0 */
    float frequency_penalty; /* 0 = off.                          default 0 */
    uint64_t seed;           /* SALA_SEED_RANDOM = from the clock. default SALA_SEED_RANDOM */
} sala_sampler_params;

sala_sampler_params sala_sampler_default_params(void);
/* Parameters that give plain greedy decoding (temperature 0, every filter and penalty off). */
sala_sampler_params sala_sampler_greedy_params(void);

typedef struct sala_sampler sala_sampler;

/* Checks the parameters (SALA_ERR_ARG with a message for e.g. a negative temperature, top_p <= 0,
 * min_p > 1, repeat_penalty <= 0, repeat_last_n < -1, non-finite values). */
sala_status sala_sampler_new(const sala_sampler_params *p, sala_sampler **out);
void sala_sampler_free(sala_sampler *s);
/* Forget the history (repeat window, counts) and reseed with the params' seed (a random seed is drawn
 * again for SALA_SEED_RANDOM). */
void sala_sampler_reset(sala_sampler *s);
/* The seed in use (the drawn one for SALA_SEED_RANDOM): report it so a run can be repeated. */
uint64_t sala_sampler_seed(const sala_sampler *s);
const sala_sampler_params *sala_sampler_get_params(const sala_sampler *s);

/* A generated token: enters the repeat window and the presence/frequency counts. */
void sala_sampler_accept(sala_sampler *s, int32_t token);
/* Prompt (context) tokens: enter only the repeat window (as llama.cpp does), not the counts. */
void sala_sampler_accept_prompt(sala_sampler *s, const int32_t *ids, int64_t n);

/* Picks the next token from logits [n_vocab] (not modified). Does not accept it: call
 * sala_sampler_accept() with the token the caller keeps. Returns -1 (error set, SALA_ERR_ARG) only for
 * n_vocab <= 0 or logits == NULL. NaN logits are treated as -inf; if every logit is -inf or NaN, returns
 * the lowest id. */
int32_t sala_sampler_sample(sala_sampler *s, const float *logits, int n_vocab);

/* The distribution the next draw uses, for tests and logprobs: after penalties, top-k, top-p, min-p and
 * temperature, the kept ids in decreasing probability (ties: lower id first) and their probabilities
 * (summing to 1). ids/probs need room for n_vocab entries. Returns the number kept (1 for greedy:
 * the argmax with probability 1), or -1 on bad arguments. Draws no random number. */
int sala_sampler_candidates(sala_sampler *s, const float *logits, int n_vocab, int32_t *ids, float *probs);

/* logits [n_vocab] after the penalties only, in place (the first stage of the chain). */
void sala_sampler_apply_penalties(sala_sampler *s, float *logits, int n_vocab);

/* The sampler's PRNG, exposed for tests: next uniform double in [0, 1). */
double sala_sampler_uniform(sala_sampler *s);

#ifdef __cplusplus
}
#endif
#endif
