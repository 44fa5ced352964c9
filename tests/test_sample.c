/* test_sample.c — the sampling chain checked on distributions with fixed seeds: top-k never leaves the
 * k best, top-p keeps exactly the smallest prefix reaching p, min-p's cut-off is relative to the max,
 * penalties change exactly the right logits by the right amounts, temperature draws match
 * softmax(z/T) (chi-square over 20000 draws), a seed reproduces its sequence, greedy is the argmax
 * with ties to the lower id. */
#include "sala_sample.h"

#include <stdint.h>

#include "test.h"

/* CHECK without a message trips -Wformat-zero-length in test.h */
#define CHK(cond) CHECK(cond, " ")

static sala_sampler *mk(sala_sampler_params p) {
    sala_sampler *s = NULL;
    sala_status st = sala_sampler_new(&p, &s);
    CHECK(st == SALA_OK, "%s", sala_last_error());
    return s;
}

/* plain params: only what the test sets is on */
static sala_sampler_params plain(float temp, uint64_t seed) {
    sala_sampler_params p = sala_sampler_greedy_params();
    p.temperature = temp;
    p.seed = seed;
    return p;
}

/* deterministic pseudo-random logits */
static void fill_logits(float *z, int n, uint64_t seed, float scale) {
    uint64_t x = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    for (int i = 0; i < n; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        z[i] = scale * ((float)((x >> 33) & 0xffffff) / (float)0xffffff - 0.5f);
    }
}

/* softmax(z / T) over the ids with keep[i] != 0 */
static void softmax_ref(const float *z, const int *keep, int n, double T, double *p) {
    double m = -1e300, s = 0;
    for (int i = 0; i < n; i++)
        if (keep[i] && z[i] > m)
            m = z[i];
    for (int i = 0; i < n; i++) {
        p[i] = keep[i] ? exp((z[i] - m) / T) : 0;
        s += p[i];
    }
    for (int i = 0; i < n; i++)
        p[i] /= s;
}

/* chi-square statistic of counts against probabilities (cells with p > 0) and its degrees of freedom */
static double chi2(const int *cnt, const double *p, int n, int draws, int *df) {
    double x = 0;
    int cells = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] <= 0)
            continue;
        double e = p[i] * draws;
        x += (cnt[i] - e) * (cnt[i] - e) / e;
        cells++;
    }
    *df = cells - 1;
    return x;
}

/* upper 0.1% point of chi-square with df degrees of freedom (Wilson-Hilferty), a conservative bound */
static double chi2_crit(int df) {
    double z = 3.09; /* one-sided 0.001 */
    double a = 2.0 / (9.0 * df);
    double t = 1 - a + z * sqrt(a);
    return df * t * t * t;
}

static void test_params(void) {
    sala_sampler_params d = sala_sampler_default_params();
    CHK(fabsf(d.temperature - 0.8f) < 1e-6 && d.top_k == 40 && fabsf(d.top_p - 0.95f) < 1e-6);
    CHK(fabsf(d.min_p - 0.05f) < 1e-6 && d.repeat_penalty == 1.0f && d.repeat_last_n == 64);
    CHK(d.presence_penalty == 0 && d.frequency_penalty == 0 && d.seed == SALA_SEED_RANDOM);
    sala_sampler *s = NULL;
    sala_sampler_params p = d;
    p.temperature = -1;
    CHK(sala_sampler_new(&p, &s) == SALA_ERR_ARG && s == NULL);
    CHECK(strstr(sala_last_error(), "temperature") != NULL, "%s", sala_last_error());
    p = d;
    p.top_p = 0;
    CHK(sala_sampler_new(&p, &s) == SALA_ERR_ARG);
    p = d;
    p.min_p = 1.5f;
    CHK(sala_sampler_new(&p, &s) == SALA_ERR_ARG);
    p = d;
    p.repeat_penalty = 0;
    CHK(sala_sampler_new(&p, &s) == SALA_ERR_ARG);
    p = d;
    p.repeat_last_n = -2;
    CHK(sala_sampler_new(&p, &s) == SALA_ERR_ARG);
    p = d;
    p.frequency_penalty = NAN;
    CHK(sala_sampler_new(&p, &s) == SALA_ERR_ARG);
    CHK(sala_sampler_new(NULL, &s) == SALA_OK && s);
    CHK(sala_sampler_seed(s) != SALA_SEED_RANDOM);
    CHK(sala_sampler_sample(s, NULL, 10) == -1);
    sala_sampler_free(s);
}

static void test_prng(void) {
    sala_sampler *a = mk(plain(1, 42)), *b = mk(plain(1, 42)), *c = mk(plain(1, 43));
    int same = 1, diff = 0;
    double sum = 0, mn = 1, mx = 0;
    for (int i = 0; i < 100000; i++) {
        double x = sala_sampler_uniform(a), y = sala_sampler_uniform(b), w = sala_sampler_uniform(c);
        same &= x == y;
        diff += x != w;
        sum += x;
        if (x < mn)
            mn = x;
        if (x > mx)
            mx = x;
        CHK(x >= 0 && x < 1);
    }
    CHK(same);
    CHK(diff > 99990);
    CHECK(fabs(sum / 100000 - 0.5) < 0.005, "mean %g", sum / 100000);
    CHK(mn < 1e-3 && mx > 1 - 1e-3);
    /* known first value: the generator is ours and must not change across builds */
    sala_sampler *d = mk(plain(1, 0));
    double first = sala_sampler_uniform(d);
    sala_sampler_reset(d);
    CHK(sala_sampler_uniform(d) == first);
    sala_sampler_free(a);
    sala_sampler_free(b);
    sala_sampler_free(c);
    sala_sampler_free(d);
}

static void test_same_seed_same_sequence(void) {
    enum { V = 300 };
    float z[V];
    fill_logits(z, V, 7, 6.0f);
    sala_sampler_params p = sala_sampler_default_params();
    p.seed = 1234;
    p.repeat_penalty = 1.1f;
    p.presence_penalty = 0.3f;
    sala_sampler *a = mk(p), *b = mk(p);
    p.seed = 1235;
    sala_sampler *c = mk(p);
    int32_t seq[200];
    int same = 1, diff = 0;
    for (int i = 0; i < 200; i++) {
        int32_t x = sala_sampler_sample(a, z, V), y = sala_sampler_sample(b, z, V), w = sala_sampler_sample(c, z, V);
        seq[i] = x;
        same &= x == y;
        diff += x != w;
        sala_sampler_accept(a, x);
        sala_sampler_accept(b, y);
        sala_sampler_accept(c, w);
    }
    CHK(same);
    CHECK(diff > 20, "different seeds gave %d differences", diff);
    /* reset: same sequence again */
    sala_sampler_reset(a);
    int again = 1;
    for (int i = 0; i < 200; i++) {
        int32_t x = sala_sampler_sample(a, z, V);
        again &= x == seq[i];
        sala_sampler_accept(a, x);
    }
    CHK(again);
    /* random seed: reported, and reproducible with that number */
    sala_sampler_params r = sala_sampler_default_params();
    sala_sampler *d = mk(r);
    r.seed = sala_sampler_seed(d);
    sala_sampler *e = mk(r);
    int rep = 1;
    for (int i = 0; i < 50; i++)
        rep &= sala_sampler_sample(d, z, V) == sala_sampler_sample(e, z, V);
    CHK(rep);
    sala_sampler_free(a);
    sala_sampler_free(b);
    sala_sampler_free(c);
    sala_sampler_free(d);
    sala_sampler_free(e);
}

static void test_greedy(void) {
    sala_sampler *s = mk(plain(0, 1));
    float z[6] = {0.5f, 2.0f, -1.0f, 2.0f, 1.9f, 2.0f};
    CHK(sala_sampler_sample(s, z, 6) == 1);
    float z2[4] = {NAN, -INFINITY, -3.0f, -3.0f};
    CHK(sala_sampler_sample(s, z2, 4) == 2);
    float z3[3] = {-INFINITY, -INFINITY, -INFINITY};
    CHK(sala_sampler_sample(s, z3, 3) == 0);
    int32_t ids[6];
    float pr[6];
    CHK(sala_sampler_candidates(s, z, 6, ids, pr) == 1 && ids[0] == 1 && pr[0] == 1.0f);
    /* greedy with a repeat penalty: the penalized argmax */
    sala_sampler_params p = plain(0, 1);
    p.repeat_penalty = 2.0f;
    p.repeat_last_n = 8;
    sala_sampler *r = mk(p);
    sala_sampler_accept(r, 1);
    sala_sampler_accept(r, 3);
    CHK(sala_sampler_sample(r, z, 6) == 5);
    /* greedy draws no random number: the PRNG state is untouched */
    sala_sampler *t = mk(plain(0, 9)), *u = mk(plain(0, 9));
    for (int i = 0; i < 10; i++)
        sala_sampler_sample(t, z, 6);
    CHK(sala_sampler_uniform(t) == sala_sampler_uniform(u));
    sala_sampler_free(s);
    sala_sampler_free(r);
    sala_sampler_free(t);
    sala_sampler_free(u);
}

/* draws n times at the sampler's settings, counts per id */
static void draw_counts(sala_sampler *s, const float *z, int V, int n, int *cnt) {
    memset(cnt, 0, (size_t)V * sizeof *cnt);
    for (int i = 0; i < n; i++) {
        int32_t t = sala_sampler_sample(s, z, V);
        if (t >= 0 && t < V)
            cnt[t]++;
    }
}

static void test_temperature_distribution(void) {
    enum { V = 8, N = 20000 };
    const float z[V] = {1.0f, 0.2f, -0.5f, 2.0f, 0.0f, 1.5f, -2.0f, 0.7f};
    const double temps[3] = {0.7, 1.0, 2.0};
    int keep[V];
    for (int i = 0; i < V; i++)
        keep[i] = 1;
    for (int k = 0; k < 3; k++) {
        sala_sampler *s = mk(plain((float)temps[k], 100 + k));
        int cnt[V];
        double p[V];
        draw_counts(s, z, V, N, cnt);
        softmax_ref(z, keep, V, temps[k], p);
        int df;
        double x = chi2(cnt, p, V, N, &df);
        CHECK(x < chi2_crit(df), "T=%g chi2 %.2f >= %.2f", temps[k], x, chi2_crit(df));
        for (int i = 0; i < V; i++)
            CHECK(fabs(cnt[i] / (double)N - p[i]) < 0.015, "T=%g id %d freq %.4f p %.4f", temps[k], i,
                  cnt[i] / (double)N, p[i]);
        /* candidates report the same distribution */
        int32_t ids[V];
        float pr[V];
        int n = sala_sampler_candidates(s, z, V, ids, pr);
        CHK(n == V);
        double sum = 0;
        for (int i = 0; i < n; i++) {
            sum += pr[i];
            CHK(fabs(pr[i] - p[ids[i]]) < 1e-6);
            if (i)
                CHK(pr[i] <= pr[i - 1]);
        }
        CHK(fabs(sum - 1) < 1e-5);
        sala_sampler_free(s);
    }
    /* a low temperature concentrates on the argmax */
    sala_sampler *s = mk(plain(0.05f, 5));
    int cnt[V];
    draw_counts(s, z, V, 2000, cnt);
    CHECK(cnt[3] == 2000, "argmax drawn %d/2000 at T=0.05", cnt[3]);
    sala_sampler_free(s);
}

static void test_top_k(void) {
    enum { V = 100, K = 5, N = 20000 };
    float z[V];
    fill_logits(z, V, 3, 4.0f);
    /* the K best by brute force */
    int keep[V] = {0};
    for (int r = 0; r < K; r++) {
        int b = -1;
        for (int i = 0; i < V; i++)
            if (!keep[i] && (b < 0 || z[i] > z[b]))
                b = i;
        keep[b] = 1;
    }
    sala_sampler_params p = plain(1.5f, 77);
    p.top_k = K;
    sala_sampler *s = mk(p);
    int cnt[V];
    draw_counts(s, z, V, N, cnt);
    int outside = 0, inside_seen = 0;
    for (int i = 0; i < V; i++) {
        if (!keep[i])
            outside += cnt[i];
        else
            inside_seen += cnt[i] > 0;
    }
    CHECK(outside == 0, "%d draws outside the top-%d", outside, K);
    CHK(inside_seen == K);
    double pr[V];
    softmax_ref(z, keep, V, 1.5, pr);
    int df;
    double x = chi2(cnt, pr, V, N, &df);
    CHECK(df == K - 1 && x < chi2_crit(df), "chi2 %.2f df %d", x, df);
    sala_sampler_free(s);

    /* ties at the boundary go to the lower ids */
    float t[8] = {0, 1, 1, 1, 1, 0, 2, 1};
    p = plain(1.0f, 1);
    p.top_k = 3;
    s = mk(p);
    int32_t ids[8];
    float q[8];
    int n = sala_sampler_candidates(s, t, 8, ids, q);
    CHECK(n == 3 && ids[0] == 6 && ids[1] == 1 && ids[2] == 2, "n %d: %d %d %d", n, ids[0], ids[1], ids[2]);
    draw_counts(s, t, 8, 3000, cnt);
    CHK(cnt[3] + cnt[4] + cnt[7] + cnt[0] + cnt[5] == 0);
    sala_sampler_free(s);
    /* k >= V: no-op; k = 1: the argmax */
    p.top_k = 1000;
    s = mk(p);
    CHK(sala_sampler_candidates(s, t, 8, ids, q) == 8);
    sala_sampler_free(s);
    p.top_k = 1;
    s = mk(p);
    draw_counts(s, t, 8, 500, cnt);
    CHK(cnt[6] == 500);
    sala_sampler_free(s);
}

/* brute-force top-p set: sort by prob desc (ties lower id), smallest prefix with sum >= p */
static int topp_ref(const float *z, int V, double topp, int *keep) {
    int *order = malloc((size_t)V * sizeof *order);
    for (int i = 0; i < V; i++)
        order[i] = i;
    for (int i = 1; i < V; i++) { /* insertion sort, stable: ties keep the lower id first */
        int v = order[i], j = i - 1;
        while (j >= 0 && z[order[j]] < z[v]) {
            order[j + 1] = order[j];
            j--;
        }
        order[j + 1] = v;
    }
    double m = z[order[0]], s = 0;
    for (int i = 0; i < V; i++)
        s += exp(z[i] - m);
    double cum = 0;
    int n = 0;
    memset(keep, 0, (size_t)V * sizeof *keep);
    for (int i = 0; i < V; i++) {
        keep[order[i]] = 1;
        n++;
        cum += exp(z[order[i]] - m) / s;
        if (cum >= topp)
            break;
    }
    free(order);
    return n;
}

static void test_top_p(void) {
    /* exact small case: probabilities 0.4 0.3 0.2 0.1 on shuffled ids */
    float z[4] = {(float)log(0.2), (float)log(0.4), (float)log(0.1), (float)log(0.3)};
    const struct {
        float p;
        int n;
    } cases[] = {{0.35f, 1}, {0.65f, 2}, {0.75f, 3}, {0.85f, 3}, {0.95f, 4}, {0.99f, 4}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        sala_sampler_params p = plain(1.0f, 11);
        p.top_p = cases[c].p;
        sala_sampler *s = mk(p);
        int32_t ids[4];
        float q[4];
        int n = sala_sampler_candidates(s, z, 4, ids, q);
        CHECK(n == cases[c].n, "top_p %.2f kept %d, want %d", cases[c].p, n, cases[c].n);
        const int want[4] = {1, 3, 0, 2};
        for (int i = 0; i < n && i < 4; i++)
            CHK(ids[i] == want[i]);
        int cnt[4];
        draw_counts(s, z, 4, 4000, cnt);
        for (int i = 0; i < 4; i++) {
            int inside = 0;
            for (int j = 0; j < n; j++)
                inside |= ids[j] == i;
            if (!inside)
                CHECK(cnt[i] == 0, "top_p %.2f drew id %d outside", cases[c].p, i);
            else
                CHK(cnt[i] > 0);
        }
        sala_sampler_free(s);
    }
    /* large vocabularies against the brute force: a peaked one (the threshold path) and a flat one
     * (the full-sort path), several p */
    enum { V = 5000 };
    static float big[V];
    static int keep[V], cnt[V];
    static int32_t ids[V];
    static float q[V];
    const float scales[2] = {30.0f, 0.5f};
    const float ps[3] = {0.5f, 0.9f, 0.99f};
    for (int sc = 0; sc < 2; sc++) {
        fill_logits(big, V, 21 + sc, scales[sc]);
        for (int k = 0; k < 3; k++) {
            int nref = topp_ref(big, V, ps[k], keep);
            sala_sampler_params p = plain(1.0f, 5);
            p.top_p = ps[k];
            sala_sampler *s = mk(p);
            int n = sala_sampler_candidates(s, big, V, ids, q);
            CHECK(n == nref, "scale %g p %.2f: kept %d, reference %d", scales[sc], ps[k], n, nref);
            int ok = 1;
            for (int i = 0; i < n; i++)
                ok &= keep[ids[i]];
            CHECK(ok, "kept set differs from the reference");
            /* smallest prefix: without its last id the mass is below p */
            double mass = 0;
            for (int i = 0; i < n - 1; i++)
                mass += q[i];
            draw_counts(s, big, V, 1000, cnt);
            int outside = 0;
            for (int i = 0; i < V; i++)
                if (!keep[i])
                    outside += cnt[i];
            CHK(outside == 0);
            sala_sampler_free(s);
        }
    }
}

static void test_min_p(void) {
    enum { V = 200, N = 20000 };
    float z[V];
    fill_logits(z, V, 9, 8.0f);
    const float mps[3] = {0.05f, 0.2f, 0.6f};
    for (int k = 0; k < 3; k++) {
        int keep[V];
        float zmax = -INFINITY;
        for (int i = 0; i < V; i++)
            if (z[i] > zmax)
                zmax = z[i];
        int nref = 0;
        for (int i = 0; i < V; i++) { /* p_i / p_max >= min_p */
            keep[i] = exp((double)z[i] - zmax) >= mps[k];
            nref += keep[i];
        }
        sala_sampler_params p = plain(1.0f, 31 + k);
        p.min_p = mps[k];
        sala_sampler *s = mk(p);
        int32_t ids[V];
        float q[V];
        int n = sala_sampler_candidates(s, z, V, ids, q);
        CHECK(n == nref, "min_p %.2f kept %d, want %d", mps[k], n, nref);
        for (int i = 0; i < n; i++)
            CHK(keep[ids[i]]);
        CHK(q[n - 1] >= mps[k] * q[0] * (1 - 1e-5));
        int cnt[V];
        draw_counts(s, z, V, N, cnt);
        double pr[V];
        softmax_ref(z, keep, V, 1.0, pr);
        int outside = 0;
        for (int i = 0; i < V; i++)
            if (!keep[i])
                outside += cnt[i];
        CHK(outside == 0);
        int df;
        double x = chi2(cnt, pr, V, N, &df);
        CHECK(x < chi2_crit(df), "min_p %.2f chi2 %.2f df %d", mps[k], x, df);
        sala_sampler_free(s);
    }
    /* min-p is decided at temperature 1, before the temperature */
    float t[3] = {0.0f, (float)log(0.5), (float)log(0.25)};
    sala_sampler_params p = plain(5.0f, 2);
    p.min_p = 0.4f;
    sala_sampler *s = mk(p);
    int32_t ids[3];
    float q[3];
    CHK(sala_sampler_candidates(s, t, 3, ids, q) == 2);
    sala_sampler_free(s);
}

static void test_order(void) {
    /* top-k then top-p on the renormalized top-k set: probs .5 .2 .2 .1 with k = 3 -> .556 .222 .222;
     * top_p 0.7 keeps 2 (0.778 >= 0.7) where without top-k it would also keep 2 ... choose 0.56: with
     * top-k the first id alone reaches it (0.556 < 0.56 -> 2 kept); check against the renormalized sums */
    float z[4] = {(float)log(0.5), (float)log(0.2), (float)log(0.2), (float)log(0.1)};
    sala_sampler_params p = plain(1.0f, 3);
    p.top_k = 3;
    p.top_p = 0.55f; /* 0.5/0.9 = 0.556 >= 0.55: one id with top-k; without top-k 0.5 < 0.55: two */
    sala_sampler *s = mk(p);
    int32_t ids[4];
    float q[4];
    CHK(sala_sampler_candidates(s, z, 4, ids, q) == 1);
    sala_sampler_free(s);
    p.top_k = 0;
    s = mk(p);
    CHK(sala_sampler_candidates(s, z, 4, ids, q) == 2);
    sala_sampler_free(s);
    /* temperature after the filters: kept probabilities are softmax(z/T) over the kept set */
    p = plain(0.5f, 3);
    p.top_k = 2;
    s = mk(p);
    CHK(sala_sampler_candidates(s, z, 4, ids, q) == 2);
    double a = exp(log(0.5) / 0.5), b = exp(log(0.2) / 0.5);
    CHK(fabs(q[0] - a / (a + b)) < 1e-6 && ids[0] == 0 && ids[1] == 1);
    sala_sampler_free(s);
}

static void test_penalties(void) {
    enum { V = 10 };
    const float base[V] = {2.0f, -1.0f, 0.5f, -0.25f, 3.0f, 0.0f, 1.0f, -2.0f, 4.0f, -3.0f};
    float z[V];
    /* repeat penalty: window of 3 accepted tokens */
    sala_sampler_params p = plain(1.0f, 1);
    p.repeat_penalty = 2.0f;
    p.repeat_last_n = 3;
    sala_sampler *s = mk(p);
    const int32_t prompt[5] = {8, 9, 0, 1, 1}; /* window: last 3 = 0 1 1 */
    sala_sampler_accept_prompt(s, prompt, 5);
    memcpy(z, base, sizeof z);
    sala_sampler_apply_penalties(s, z, V);
    for (int i = 0; i < V; i++) {
        float want = base[i];
        if (i == 0)
            want = 1.0f; /* 2 / 2 */
        if (i == 1)
            want = -2.0f; /* -1 * 2, once although it occurs twice */
        CHECK(z[i] == want, "id %d: %g, want %g", i, z[i], want);
    }
    sala_sampler_accept(s, 3); /* window now 1 1 3 */
    sala_sampler_accept(s, 5); /* window now 1 3 5 */
    memcpy(z, base, sizeof z);
    sala_sampler_apply_penalties(s, z, V);
    for (int i = 0; i < V; i++) {
        float want = base[i];
        if (i == 1)
            want = -2.0f;
        if (i == 3)
            want = -0.5f;
        if (i == 5)
            want = 0.0f;
        CHECK(z[i] == want, "id %d: %g, want %g", i, z[i], want);
    }
    /* long history: the window slides */
    for (int i = 0; i < 1000; i++)
        sala_sampler_accept(s, (int32_t)(i % 7 == 0 ? 6 : 4));
    memcpy(z, base, sizeof z);
    sala_sampler_apply_penalties(s, z, V);
    /* last 3 of i=997,998,999: 997%7=3 -> 4, 998%7=4 -> 4, 999%7=5 -> 4 */
    for (int i = 0; i < V; i++)
        CHECK(z[i] == (i == 4 ? 1.5f : base[i]), "slid window id %d", i);
    sala_sampler_free(s);

    /* presence / frequency: generated tokens only */
    p = plain(1.0f, 1);
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.25f;
    s = mk(p);
    const int32_t pr[3] = {2, 2, 2};
    sala_sampler_accept_prompt(s, pr, 3);
    sala_sampler_accept(s, 4);
    sala_sampler_accept(s, 4);
    sala_sampler_accept(s, 4);
    sala_sampler_accept(s, 7);
    sala_sampler_accept(s, 12); /* beyond the vocab of this call: ignored */
    memcpy(z, base, sizeof z);
    sala_sampler_apply_penalties(s, z, V);
    for (int i = 0; i < V; i++) {
        float want = base[i];
        if (i == 4)
            want = 3.0f - (3 * 0.25f + 0.5f);
        if (i == 7)
            want = -2.0f - (0.25f + 0.5f);
        CHECK(fabsf(z[i] - want) < 1e-6, "id %d: %g, want %g", i, z[i], want);
    }
    /* the draw uses the penalized logits: id 4 was the second best, now well below */
    int32_t ids[V];
    float q[V];
    sala_sampler_candidates(s, base, V, ids, q);
    double e[V], sum = 0;
    for (int i = 0; i < V; i++)
        sum += (e[i] = exp(z[i]));
    for (int i = 0; i < V; i++)
        CHK(fabs(q[i] - e[ids[i]] / sum) < 1e-6);
    /* reset clears counts and window */
    sala_sampler_reset(s);
    memcpy(z, base, sizeof z);
    sala_sampler_apply_penalties(s, z, V);
    CHK(memcmp(z, base, sizeof z) == 0);
    sala_sampler_free(s);

    /* repeat_last_n = -1: whole history; 0: off */
    p = plain(1.0f, 1);
    p.repeat_penalty = 4.0f;
    p.repeat_last_n = -1;
    s = mk(p);
    sala_sampler_accept(s, 0);
    for (int i = 0; i < 5000; i++)
        sala_sampler_accept(s, 8);
    memcpy(z, base, sizeof z);
    sala_sampler_apply_penalties(s, z, V);
    CHK(z[0] == 0.5f && z[8] == 1.0f && z[4] == 3.0f);
    sala_sampler_free(s);
    p.repeat_last_n = 0;
    s = mk(p);
    sala_sampler_accept(s, 0);
    memcpy(z, base, sizeof z);
    sala_sampler_apply_penalties(s, z, V);
    CHK(memcmp(z, base, sizeof z) == 0);
    sala_sampler_free(s);
}

static void test_full_chain_default(void) {
    /* defaults on a vocab-sized input: every draw is among the top 40 and passes min-p */
    enum { V = 73448 };
    float *z = malloc(V * sizeof *z);
    fill_logits(z, V, 99, 20.0f);
    sala_sampler_params p = sala_sampler_default_params();
    p.seed = 8;
    sala_sampler *s = mk(p);
    float zmax = -INFINITY;
    for (int i = 0; i < V; i++)
        if (z[i] > zmax)
            zmax = z[i];
    int bad = 0;
    for (int i = 0; i < 300; i++) {
        int32_t t = sala_sampler_sample(s, z, V);
        int better = 0;
        for (int j = 0; j < V; j++)
            better += z[j] > z[t];
        if (better >= 40 || exp((double)z[t] - zmax) < 0.05 * 0.999)
            bad++;
    }
    CHECK(bad == 0, "%d draws outside top-k/min-p", bad);
    sala_sampler_free(s);
    free(z);
}

int main(void) {
    TEST_RUN(test_params);
    TEST_RUN(test_prng);
    TEST_RUN(test_same_seed_same_sequence);
    TEST_RUN(test_greedy);
    TEST_RUN(test_temperature_distribution);
    TEST_RUN(test_top_k);
    TEST_RUN(test_top_p);
    TEST_RUN(test_min_p);
    TEST_RUN(test_order);
    TEST_RUN(test_penalties);
    TEST_RUN(test_full_chain_default);
    TEST_END();
}
