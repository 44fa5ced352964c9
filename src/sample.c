/* sample.c — the sampling chain of sala_sample.h: penalties -> top-k -> top-p -> min-p -> temperature ->
 * draw, with a PRNG of our own (xoshiro256** seeded through splitmix64) so a seed reproduces a run on any
 * machine.
 *
 * Cost per token: O(V), no sort. top-k keeps a heap of the k best in one pass (a quickselect for large k);
 * top-p is a weighted quickselect: partition around a pivot, compare the mass of the better side with
 * p, recurse into one side, so the kept prefix is exact without ordering it. The draw
 * walks the kept ids in increasing id order, so the sequence for a seed does not depend on how the
 * filters ordered their work.
 *
 * Candidates are (id, z) pairs; the order "better" is z descending, then id ascending, a strict total
 * order, so ties are always decided towards the lower id. */
#include "sala_sample.h"

#include <math.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "util.h"

typedef struct {
    float z; /* penalized logit */
    float e; /* exp(z - zmax), set once the top-k is known */
    int32_t id;
} cand;

struct sala_sampler {
    sala_sampler_params p;
    uint64_t seed;  /* the seed in use */
    uint64_t st[4]; /* xoshiro256** state */
    /* history of accepted tokens (prompt + generated) for the repeat window */
    int32_t *hist;
    int64_t n_hist, cap_hist;
    /* generated-token counts for presence / frequency, and the distinct ids that have a count */
    int32_t *counts;
    int64_t cap_counts;
    int32_t *gen_ids;
    int64_t n_gen_ids, cap_gen_ids;
    /* scratch, sized to the vocab of the last call */
    int cap_v;
    float *z;       /* [V] penalized logits */
    cand *c;        /* [V] candidates */
    uint32_t *mark; /* [V] stamps for the distinct ids of the repeat window */
    uint32_t stamp;
};

/* ---- PRNG ---- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static inline uint64_t rotl64(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

static uint64_t xoshiro_next(uint64_t st[4]) {
    uint64_t r = rotl64(st[1] * 5, 7) * 9;
    uint64_t t = st[1] << 17;
    st[2] ^= st[0];
    st[3] ^= st[1];
    st[1] ^= st[2];
    st[0] ^= st[3];
    st[2] ^= t;
    st[3] = rotl64(st[3], 45);
    return r;
}

static void sampler_seed(sala_sampler *s) {
    uint64_t seed = s->p.seed;
    if (seed == SALA_SEED_RANDOM) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = (uint64_t)ts.tv_sec * 1000000007ULL ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32) ^
                     (uint64_t)(uintptr_t)s;
        seed = splitmix64(&x) & 0x7fffffffffffffffULL; /* printable as a signed number, never RANDOM */
    }
    s->seed = seed;
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        s->st[i] = splitmix64(&x);
}

double sala_sampler_uniform(sala_sampler *s) {
    return (double)(xoshiro_next(s->st) >> 11) * 0x1.0p-53;
}

/* ---- params ---- */

sala_sampler_params sala_sampler_default_params(void) {
    sala_sampler_params p;
    memset(&p, 0, sizeof p);
    p.temperature = 0.8f;
    p.top_k = 40;
    p.top_p = 0.95f;
    p.min_p = 0.05f;
    p.repeat_penalty = 1.0f;
    p.repeat_last_n = 64;
    p.presence_penalty = 0.0f;
    p.frequency_penalty = 0.0f;
    p.seed = SALA_SEED_RANDOM;
    return p;
}

sala_sampler_params sala_sampler_greedy_params(void) {
    sala_sampler_params p = sala_sampler_default_params();
    p.temperature = 0.0f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.seed = 0;
    return p;
}

static sala_status params_check(const sala_sampler_params *p) {
    if (!isfinite(p->temperature) || p->temperature < 0)
        return sala_set_error(SALA_ERR_ARG, "temperature must be >= 0 (0 = greedy), got %g", p->temperature);
    if (!isfinite(p->top_p) || p->top_p <= 0)
        return sala_set_error(SALA_ERR_ARG, "top_p must be in (0, 1] (1 = off), got %g", p->top_p);
    if (!isfinite(p->min_p) || p->min_p < 0 || p->min_p > 1)
        return sala_set_error(SALA_ERR_ARG, "min_p must be in [0, 1] (0 = off), got %g", p->min_p);
    if (!isfinite(p->repeat_penalty) || p->repeat_penalty <= 0)
        return sala_set_error(SALA_ERR_ARG, "repeat_penalty must be > 0 (1 = off), got %g", p->repeat_penalty);
    if (p->repeat_last_n < -1)
        return sala_set_error(SALA_ERR_ARG, "repeat_last_n must be >= -1 (-1 = whole history), got %d",
                              p->repeat_last_n);
    if (!isfinite(p->presence_penalty) || !isfinite(p->frequency_penalty))
        return sala_set_error(SALA_ERR_ARG, "presence/frequency penalties must be finite numbers");
    return SALA_OK;
}

sala_status sala_sampler_new(const sala_sampler_params *p, sala_sampler **out) {
    *out = NULL;
    sala_sampler_params def = sala_sampler_default_params();
    if (!p)
        p = &def;
    sala_status st = params_check(p);
    if (st != SALA_OK)
        return st;
    sala_sampler *s = xcalloc(1, sizeof *s);
    s->p = *p;
    sampler_seed(s);
    *out = s;
    return SALA_OK;
}

void sala_sampler_free(sala_sampler *s) {
    if (!s)
        return;
    free(s->hist);
    free(s->counts);
    free(s->gen_ids);
    free(s->z);
    free(s->c);
    free(s->mark);
    free(s);
}

void sala_sampler_reset(sala_sampler *s) {
    s->n_hist = 0;
    for (int64_t i = 0; i < s->n_gen_ids; i++)
        s->counts[s->gen_ids[i]] = 0;
    s->n_gen_ids = 0;
    sampler_seed(s);
}

uint64_t sala_sampler_seed(const sala_sampler *s) {
    return s->seed;
}
const sala_sampler_params *sala_sampler_get_params(const sala_sampler *s) {
    return &s->p;
}

/* ---- history ---- */

static void hist_push(sala_sampler *s, int32_t tok) {
    int64_t keep = s->p.repeat_last_n;
    if (keep == 0)
        return;
    if (s->n_hist == s->cap_hist) {
        if (keep > 0 && s->n_hist >= keep) {
            /* drop the oldest, keep the last `keep - 1` to make room */
            memmove(s->hist, s->hist + (s->n_hist - (keep - 1)), (size_t)(keep - 1) * sizeof *s->hist);
            s->n_hist = keep - 1;
        } else {
            s->cap_hist = s->cap_hist ? s->cap_hist * 2 : (keep > 0 ? 2 * keep : 256);
            s->hist = xrealloc(s->hist, (size_t)s->cap_hist * sizeof *s->hist);
        }
    }
    s->hist[s->n_hist++] = tok;
}

void sala_sampler_accept(sala_sampler *s, int32_t tok) {
    if (tok < 0)
        return;
    hist_push(s, tok);
    if (tok >= s->cap_counts) {
        int64_t nc = s->cap_counts ? s->cap_counts : 1024;
        while (nc <= tok)
            nc *= 2;
        s->counts = xrealloc(s->counts, (size_t)nc * sizeof *s->counts);
        memset(s->counts + s->cap_counts, 0, (size_t)(nc - s->cap_counts) * sizeof *s->counts);
        s->cap_counts = nc;
    }
    if (s->counts[tok]++ == 0) {
        if (s->n_gen_ids == s->cap_gen_ids) {
            s->cap_gen_ids = s->cap_gen_ids ? s->cap_gen_ids * 2 : 256;
            s->gen_ids = xrealloc(s->gen_ids, (size_t)s->cap_gen_ids * sizeof *s->gen_ids);
        }
        s->gen_ids[s->n_gen_ids++] = tok;
    }
}

void sala_sampler_accept_prompt(sala_sampler *s, const int32_t *ids, int64_t n) {
    int64_t from = 0;
    if (s->p.repeat_last_n == 0)
        return;
    if (s->p.repeat_last_n > 0 && n > s->p.repeat_last_n)
        from = n - s->p.repeat_last_n;
    for (int64_t i = from; i < n; i++)
        if (ids[i] >= 0)
            hist_push(s, ids[i]);
}

/* ---- the chain ---- */

static void scratch_reserve(sala_sampler *s, int n_vocab) {
    if (n_vocab <= s->cap_v)
        return;
    s->cap_v = n_vocab;
    s->z = xrealloc(s->z, (size_t)n_vocab * sizeof *s->z);
    s->c = xrealloc(s->c, (size_t)n_vocab * sizeof *s->c);
    free(s->mark);
    s->mark = xcalloc((size_t)n_vocab, sizeof *s->mark);
    s->stamp = 0;
}

void sala_sampler_apply_penalties(sala_sampler *s, float *z, int n_vocab) {
    const float r = s->p.repeat_penalty;
    if (r != 1.0f && s->p.repeat_last_n != 0 && s->n_hist > 0) {
        scratch_reserve(s, n_vocab);
        if (++s->stamp == 0) { /* wrapped: clear the stamps */
            memset(s->mark, 0, (size_t)s->cap_v * sizeof *s->mark);
            s->stamp = 1;
        }
        int64_t from = 0;
        if (s->p.repeat_last_n > 0 && s->n_hist > s->p.repeat_last_n)
            from = s->n_hist - s->p.repeat_last_n;
        for (int64_t i = from; i < s->n_hist; i++) {
            int32_t t = s->hist[i];
            if (t >= n_vocab || s->mark[t] == s->stamp)
                continue;
            s->mark[t] = s->stamp;
            z[t] = z[t] > 0 ? z[t] / r : z[t] * r;
        }
    }
    const float ap = s->p.presence_penalty, af = s->p.frequency_penalty;
    if (ap != 0.0f || af != 0.0f) {
        for (int64_t i = 0; i < s->n_gen_ids; i++) {
            int32_t t = s->gen_ids[i];
            if (t >= n_vocab)
                continue;
            z[t] -= (float)s->counts[t] * af + ap;
        }
    }
}

static inline int better(cand a, cand b) {
    return a.z > b.z || (a.z == b.z && a.id < b.id);
}

static int cmp_better(const void *pa, const void *pb) {
    const cand *a = pa, *b = pb;
    if (better(*a, *b))
        return -1;
    if (better(*b, *a))
        return 1;
    return 0;
}

static int cmp_id(const void *pa, const void *pb) {
    const cand *a = pa, *b = pb;
    return (a->id > b->id) - (a->id < b->id);
}

static void cswap(cand *a, cand *b) {
    cand t = *a;
    *a = *b;
    *b = t;
}

/* Partitions c[lo..hi] (inclusive, hi > lo) around a median-of-three pivot; returns its final index st:
 * c[lo..st) are better than the pivot, c(st..hi] worse. The order is strict and total, so there are no
 * equal keys to degrade the partition. */
static int partition(cand *c, int lo, int hi) {
    int mid = lo + (hi - lo) / 2;
    if (better(c[mid], c[lo]))
        cswap(&c[mid], &c[lo]);
    if (better(c[hi], c[lo]))
        cswap(&c[hi], &c[lo]);
    if (better(c[mid], c[hi]))
        cswap(&c[mid], &c[hi]);
    cand piv = c[hi];
    int st = lo;
    for (int i = lo; i < hi; i++)
        if (better(c[i], piv))
            cswap(&c[i], &c[st++]);
    cswap(&c[st], &c[hi]);
    return st;
}

/* Sifts c[j] down the binary heap c[0..k) whose parents are worse than their children (root = the worst). */
static void worst_heap_sift_down(cand *c, int k, int j) {
    for (;;) {
        int l = 2 * j + 1, r = l + 1, w = j;
        if (l < k && better(c[w], c[l]))
            w = l;
        if (r < k && better(c[w], c[r]))
            w = r;
        if (w == j)
            break;
        cswap(&c[j], &c[w]);
        j = w;
    }
}

/* Rearranges c[0..n) so that c[0..k) are the k best (in no particular order), 0 < k < n. */
static void select_best(cand *c, int n, int k) {
    if (k <= 256) {
        /* one pass with a heap of the k best (root = the worst of them): most ids are rejected by a
         * single comparison */
        for (int i = k / 2 - 1; i >= 0; i--) /* heapify c[0..k) */
            worst_heap_sift_down(c, k, i);
        for (int i = k; i < n; i++) {
            if (!better(c[i], c[0]))
                continue;
            cswap(&c[i], &c[0]);
            worst_heap_sift_down(c, k, 0);
        }
        return;
    }
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        int st = partition(c, lo, hi);
        if (st == k - 1 || st == k)
            return;
        if (st > k)
            hi = st - 1;
        else
            lo = st + 1;
    }
}

/* Smallest k such that the k best of c[0..n) carry mass >= target (mass of an id: its e), with c
 * rearranged so that those k come first (in no particular order). A weighted quickselect: O(n) expected,
 * no sort. Returns n when rounding leaves the total just below target. */
static int select_mass(cand *c, int n, double target) {
    int lo = 0, hi = n; /* the answer's last id is in c[lo..hi); c[0..lo) are in, with mass acc */
    double acc = 0;
    while (hi - lo > 1) {
        int st = partition(c, lo, hi - 1);
        double m = 0;
        for (int i = lo; i < st; i++)
            m += c[i].e;
        if (acc + m >= target) {
            hi = st; /* inside the better part; st > lo here since target > acc */
        } else if (acc + m + c[st].e >= target) {
            return st + 1;
        } else {
            acc += m + c[st].e;
            lo = st + 1;
        }
    }
    return lo < n ? lo + 1 : n;
}

/* Runs penalties, top-k, top-p and min-p. Leaves the kept candidates in s->c[0..n) (any order; z = the
 * penalized logit, e = exp(z - zmax)) and returns n (>= 1). Greedy callers do not use this. */
static int chain_filter(sala_sampler *s, const float *logits, int n_vocab, float *zmax_out) {
    scratch_reserve(s, n_vocab);
    float *z = s->z;
    for (int i = 0; i < n_vocab; i++)
        z[i] = isnan(logits[i]) ? -INFINITY : logits[i];
    sala_sampler_apply_penalties(s, z, n_vocab);

    /* candidates: every id with a finite (or +inf) penalized logit */
    cand *c = s->c;
    int n = 0;
    float zmax = -INFINITY;
    for (int i = 0; i < n_vocab; i++) {
        if (z[i] == -INFINITY)
            continue;
        c[n].z = z[i];
        c[n].id = i;
        if (z[i] > zmax)
            zmax = z[i];
        n++;
    }
    if (n == 0) { /* nothing finite: the lowest id */
        c[0] = (cand){0.0f, 1.0f, 0};
        *zmax_out = 0;
        return 1;
    }
    if (zmax == INFINITY) { /* +inf dominates: keep the +inf ids, equally likely */
        int m = 0;
        for (int i = 0; i < n; i++)
            if (c[i].z == INFINITY)
                c[m++] = (cand){0.0f, 1.0f, c[i].id};
        *zmax_out = 0;
        return m;
    }

    /* top-k */
    if (s->p.top_k > 0 && s->p.top_k < n) {
        select_best(c, n, s->p.top_k);
        n = s->p.top_k;
        zmax = -INFINITY;
        for (int i = 0; i < n; i++)
            if (c[i].z > zmax)
                zmax = c[i].z;
    }
    for (int i = 0; i < n; i++)
        c[i].e = (float)exp((double)c[i].z - zmax);

    /* top-p: the smallest set of the most probable ids (ties: lower id) whose mass reaches p */
    if (s->p.top_p < 1.0f && n > 1) {
        double sum = 0;
        for (int i = 0; i < n; i++)
            sum += c[i].e;
        n = select_mass(c, n, (double)s->p.top_p * sum);
    }

    /* min-p relative to the most probable kept id (e = 1 for it) */
    if (s->p.min_p > 0.0f && n > 1) {
        const double lmin = log((double)s->p.min_p);
        int m = 0;
        for (int i = 0; i < n; i++)
            if ((double)c[i].z - zmax >= lmin)
                c[m++] = c[i];
        n = m; /* the max itself always passes (0 >= log(min_p)) */
    }
    *zmax_out = zmax;
    return n;
}

static int32_t greedy(sala_sampler *s, const float *logits, int n_vocab) {
    const float *z = logits;
    int need_pen = (s->p.repeat_penalty != 1.0f && s->n_hist > 0 && s->p.repeat_last_n != 0) ||
                   ((s->p.presence_penalty != 0 || s->p.frequency_penalty != 0) && s->n_gen_ids > 0);
    if (need_pen) {
        scratch_reserve(s, n_vocab);
        memcpy(s->z, logits, (size_t)n_vocab * sizeof *s->z);
        sala_sampler_apply_penalties(s, s->z, n_vocab);
        z = s->z;
    }
    int32_t best = 0;
    float bz = -INFINITY;
    for (int i = 0; i < n_vocab; i++)
        if (z[i] > bz) { /* strict: ties stay with the lower id; NaN never wins */
            bz = z[i];
            best = i;
        }
    return best;
}

int32_t sala_sampler_sample(sala_sampler *s, const float *logits, int n_vocab) {
    if (!s || !logits || n_vocab <= 0) {
        sala_set_error(SALA_ERR_ARG, "sampler: no logits (n_vocab %d)", n_vocab);
        return -1;
    }
    if (s->p.temperature <= 0.0f)
        return greedy(s, logits, n_vocab);
    float zmax;
    int n = chain_filter(s, logits, n_vocab, &zmax);
    if (n == 1)
        return s->c[0].id;
    cand *c = s->c;
    const double invT = 1.0 / (double)s->p.temperature;
    const double u = sala_sampler_uniform(s);
    /* draw in increasing id order: sort a small kept set; scatter a large one over the ids (s->z is
     * free now) and walk them */
    if (n <= 256) {
        qsort(c, (size_t)n, sizeof *c, cmp_id);
        double sum = 0;
        for (int i = 0; i < n; i++)
            sum += (c[i].e = (float)exp(((double)c[i].z - zmax) * invT));
        const double t = u * sum;
        double cum = 0;
        for (int i = 0; i < n; i++) {
            cum += c[i].e;
            if (t < cum)
                return c[i].id;
        }
        return c[n - 1].id; /* rounding at the very end */
    }
    float *w = s->z;
    memset(w, 0, (size_t)n_vocab * sizeof *w);
    int32_t last = 0;
    for (int i = 0; i < n; i++) {
        w[c[i].id] = (float)exp(((double)c[i].z - zmax) * invT);
        if (c[i].id > last)
            last = c[i].id;
    }
    double sum = 0;
    for (int i = 0; i <= last; i++)
        sum += w[i];
    const double t = u * sum;
    double cum = 0;
    for (int i = 0; i <= last; i++) {
        cum += w[i];
        if (w[i] > 0 && t < cum)
            return i;
    }
    return last;
}

int sala_sampler_candidates(sala_sampler *s, const float *logits, int n_vocab, int32_t *ids, float *probs) {
    if (!s || !logits || n_vocab <= 0 || !ids || !probs) {
        sala_set_error(SALA_ERR_ARG, "sampler: bad arguments to sala_sampler_candidates");
        return -1;
    }
    if (s->p.temperature <= 0.0f) {
        ids[0] = greedy(s, logits, n_vocab);
        probs[0] = 1.0f;
        return 1;
    }
    float zmax;
    int n = chain_filter(s, logits, n_vocab, &zmax);
    cand *c = s->c;
    qsort(c, (size_t)n, sizeof *c, cmp_better);
    const double invT = 1.0 / (double)s->p.temperature;
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += exp(((double)c[i].z - zmax) * invT);
    for (int i = 0; i < n; i++) {
        ids[i] = c[i].id;
        probs[i] = (float)(exp(((double)c[i].z - zmax) * invT) / sum);
    }
    return n;
}
