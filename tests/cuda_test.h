/* cuda_test.h — helpers shared by the tests/test_cuda_*.c kernel tests (included only with SALA_CUDA):
 * a seeded uniform generator, host<->device copies with poisoned fresh buffers, the bf16 rounding the
 * reference must see, the element-wise comparison that prints the worst difference, and the top-k
 * checks' comparators. */
#ifndef SALA_CUDA_TEST_H
#define SALA_CUDA_TEST_H

#include <stdint.h>

#include "cpu/ops.h"
#include "cuda/kernels.h"
#include "test.h"

static uint64_t rng_s = 0x9e3779b97f4a7c15ull;
static inline float frand(void) { /* uniform [-1, 1) */
    rng_s ^= rng_s << 13;
    rng_s ^= rng_s >> 7;
    rng_s ^= rng_s << 17;
    return (float)((double)(rng_s >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}
static inline void fill(float *x, int64_t n, float a) {
    for (int64_t i = 0; i < n; i++) x[i] = a * frand();
}
static inline void *up(const void *h, size_t n) {
    void *d = cu_malloc(n);
    if (d) cu_h2d(d, h, n);
    return d;
}
static inline void *dnew(size_t n) { /* poisoned: all-ones bytes are NaN in fp32 and bf16 */
    void *d = cu_malloc(n);
    if (d) cu_memset(d, 0xff, n);
    return d;
}
static inline int down(void *h, const void *d, size_t n) {
    int e = cu_sync();
    if (!e) e = cu_d2h(h, d, n);
    return e;
}
static inline float bf(float x) { return bf16_to_f32(f32_to_bf16(x)); }

/* per-element |got − ref| ≤ atol[i] (or atol0 when atol is NULL) + rtol·|ref|; prints the worst */
static inline int close_to(const char *what, const float *got, const float *ref, int64_t n, const double *atol, double atol0,
                    double rtol) {
    double worst = 0;
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]), lim = (atol ? atol[i] : atol0) + rtol * fabs(ref[i]);
        if (!(d <= lim)) {
            if (first < 0) first = i;
            bad++;
        }
        if (d > worst || d != d) worst = d != d ? INFINITY : d;
    }
    printf("   %-44s max|d| %.3g%s\n", what, worst, bad ? "  MISMATCH" : "");
    if (bad)
        fprintf(stderr, "  %s: %lld of %lld elements off; first at %lld: got %.9g want %.9g\n", what, (long long)bad,
                (long long)n, (long long)first, got[first], ref[first]);
    return bad == 0;
}

static inline int gpu_ready(void) {
    const char *e = getenv("SALA_TEST_CUDA");
    return e && *e == '1' && cu_device_count() > 0;
}

/* K/V cache [N, nkv, hd] random, rounded to bf16 when the cache is bf16 (the reference sees the same values) */
static inline void make_cache(float *K, float *V, int64_t n, int bf16, void **dK, void **dV) {
    fill(K, n, 1.5f);
    fill(V, n, 1.0f);
    if (bf16) {
        uint16_t *kb = malloc(2 * (size_t)n), *vb = malloc(2 * (size_t)n);
        for (int64_t i = 0; i < n; i++) {
            kb[i] = f32_to_bf16(K[i]), K[i] = bf16_to_f32(kb[i]);
            vb[i] = f32_to_bf16(V[i]), V[i] = bf16_to_f32(vb[i]);
        }
        *dK = up(kb, 2 * (size_t)n);
        *dV = up(vb, 2 * (size_t)n);
        free(kb), free(vb);
    } else {
        *dK = up(K, sizeof(float) * (size_t)n);
        *dV = up(V, sizeof(float) * (size_t)n);
    }
}

/* the CPU side of the top-k checks (test_cuda_topk.c, test_cuda_infllm.c): ascending block indices, and
 * (score, block) pairs in the selection rule's order: descending score, ties to the lower block */
static inline int cmp_i32_t(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

typedef struct {
    float s;
    int32_t b;
} ref_sc;

static inline int cmp_ref_sc(const void *a, const void *b) {
    const ref_sc *x = a, *y = b;
    if (x->s > y->s) return -1;
    if (x->s < y->s) return 1;
    return (x->b > y->b) - (x->b < y->b);
}

#endif
