/* ops.c — the fast CPU operators: OpenMP threads, blocked matmul, the chunked Lightning form.
 *
 * Each function here has a plain twin in ops_ref.c and is tested against it (tests/test_ops.c).
 * Design choices:
 *  - matmul reads the weights in their stored dtype. For a few rows (decode) bf16 rows are widened in
 *    registers (memory-bound: the weights stream once); for many rows a block of weight rows is widened
 *    into a thread-local fp32 buffer and reused across all rows of the call (compute-bound).
 *  - every output element is one dot product in a fixed order, whatever the number of rows or threads,
 *    so a chunked prefill computes the same projections bit for bit as a one-shot prefill.
 *  - dot products use 8-wide vectors (GCC vector extensions; AVX2/FMA when the build enables them). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/ops.h"
#include "util.h"

typedef float v8f __attribute__((vector_size(32)));
typedef uint16_t v8u16 __attribute__((vector_size(16)));
typedef uint32_t v8u32 __attribute__((vector_size(32)));

static inline float hsum8(v8f v) { return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7])); }

static inline v8f load8(const float *p) {
    v8f v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline v8f load8_bf16(const uint16_t *p) {
    v8u16 h;
    memcpy(&h, p, sizeof h);
    v8u32 u = __builtin_convertvector(h, v8u32) << 16;
    v8f f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static float dot_f32(const float *a, const float *b, int64_t n) {
    v8f s0 = {0}, s1 = {0};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 += load8(a + i) * load8(b + i);
        s1 += load8(a + i + 8) * load8(b + i + 8);
    }
    float s = hsum8(s0 + s1);
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static float dot_bf16(const float *a, const uint16_t *b, int64_t n) {
    v8f s0 = {0}, s1 = {0};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 += load8(a + i) * load8_bf16(b + i);
        s1 += load8(a + i + 8) * load8_bf16(b + i + 8);
    }
    float s = hsum8(s0 + s1);
    for (; i < n; i++) s += a[i] * bf16_to_f32(b[i]);
    return s;
}

void op_rmsnorm(float *y, const float *x, const float *w, int64_t rows, int64_t D, float eps) {
#pragma omp parallel for schedule(static) if (rows > 1) num_threads(sala_get_threads())
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * D;
        double ss = 0;
        for (int64_t i = 0; i < D; i++) ss += (double)xr[i] * xr[i];
        float inv = (float)(1.0 / sqrt(ss / D + eps));
        for (int64_t i = 0; i < D; i++) y[r * D + i] = xr[i] * inv * w[i];
    }
}

enum { MM_NB = 16, MM_FEW_ROWS = 4 };

void op_matmul(float *y, const float *x, const sala_weight *W, int64_t T) {
    int64_t N = W->rows, K = W->cols;
    if (T <= MM_FEW_ROWS && W->dtype == DT_BF16) {
        const uint16_t *w = W->data;
#pragma omp parallel for schedule(static) num_threads(sala_get_threads())
        for (int64_t n = 0; n < N; n++)
            for (int64_t t = 0; t < T; t++) y[t * N + n] = dot_bf16(x + t * K, w + n * K, K);
        return;
    }
    if (W->dtype == DT_F32) {
        const float *w = W->data;
#pragma omp parallel for schedule(static) num_threads(sala_get_threads())
        for (int64_t n = 0; n < N; n++)
            for (int64_t t = 0; t < T; t++) y[t * N + n] = dot_f32(x + t * K, w + n * K, K);
        return;
    }
    int64_t nblocks = (N + MM_NB - 1) / MM_NB;
#pragma omp parallel num_threads(sala_get_threads())
    {
        float *wb = xmalloc(sizeof(float) * (size_t)(MM_NB * K));
#pragma omp for schedule(dynamic, 1)
        for (int64_t bi = 0; bi < nblocks; bi++) {
            int64_t n0 = bi * MM_NB, nb = N - n0 < MM_NB ? N - n0 : MM_NB;
            for (int64_t r = 0; r < nb; r++) weight_row_f32(W, n0 + r, wb + r * K);
            for (int64_t t = 0; t < T; t++) {
                const float *xt = x + t * K;
                for (int64_t r = 0; r < nb; r++) y[t * N + n0 + r] = dot_f32(xt, wb + r * K, K);
            }
        }
        free(wb);
    }
}

/* ---- Lightning, chunked form ----
 * For a chunk of len tokens starting with state S (per head), with λ^i precomputed:
 *   o_t = s·( λ^(t+1) q_t S + Σ_{j≤t} λ^(t−j) (q_t·k_j) v_j )
 *   S  ← λ^len S + Σ_j λ^(len−1−j) k_jᵀ v_j
 * which equals the recurrence S ← λS + k_tᵀv_t, o_t = s q_t S. */
void op_lightning_chunked(float *o, const float *q, const float *k, const float *v, float *state,
                          const double *lambda, float s, int64_t T, int nh, int hd, int chunk) {
    if (chunk <= 0) chunk = 64;
#pragma omp parallel for schedule(dynamic, 1) num_threads(sala_get_threads())
    for (int h = 0; h < nh; h++) {
        float *S = state + (int64_t)h * hd * hd;
        float *lp = xmalloc(sizeof(float) * (size_t)(chunk + 1));
        float *A = xmalloc(sizeof(float) * (size_t)chunk * chunk);
        float *acc = xmalloc(sizeof(float) * (size_t)hd);
        for (int i = 0; i <= chunk; i++) lp[i] = (float)pow(lambda[h], i);
        int64_t st = (int64_t)nh * hd; /* stride between tokens */
        for (int64_t c0 = 0; c0 < T; c0 += chunk) {
            int len = (int)(T - c0 < chunk ? T - c0 : chunk);
            /* intra-chunk scores A[t][j] = λ^(t−j) q_t·k_j, j ≤ t */
            for (int t = 0; t < len; t++) {
                const float *qt = q + (c0 + t) * st + (int64_t)h * hd;
                for (int j = 0; j <= t; j++)
                    A[t * chunk + j] = lp[t - j] * dot_f32(qt, k + (c0 + j) * st + (int64_t)h * hd, hd);
            }
            for (int t = 0; t < len; t++) {
                const float *qt = q + (c0 + t) * st + (int64_t)h * hd;
                /* inter-chunk: λ^(t+1) q_t S */
                for (int jv = 0; jv < hd; jv++) acc[jv] = 0;
                for (int i = 0; i < hd; i++) {
                    float qi = qt[i] * lp[t + 1];
                    const float *Si = S + (int64_t)i * hd;
                    for (int jv = 0; jv < hd; jv++) acc[jv] += qi * Si[jv];
                }
                for (int j = 0; j <= t; j++) {
                    float a = A[t * chunk + j];
                    const float *vj = v + (c0 + j) * st + (int64_t)h * hd;
                    for (int jv = 0; jv < hd; jv++) acc[jv] += a * vj[jv];
                }
                float *ot = o + (c0 + t) * st + (int64_t)h * hd;
                for (int jv = 0; jv < hd; jv++) ot[jv] = s * acc[jv];
            }
            /* state update */
            float dl = lp[len];
            for (int64_t i = 0; i < (int64_t)hd * hd; i++) S[i] *= dl;
            for (int j = 0; j < len; j++) {
                const float *kj = k + (c0 + j) * st + (int64_t)h * hd, *vj = v + (c0 + j) * st + (int64_t)h * hd;
                float w = lp[len - 1 - j];
                for (int i = 0; i < hd; i++) {
                    float ki = w * kj[i];
                    float *Si = S + (int64_t)i * hd;
                    for (int jv = 0; jv < hd; jv++) Si[jv] += ki * vj[jv];
                }
            }
        }
        free(lp);
        free(A);
        free(acc);
    }
}

/* ---- dense causal attention: rows in parallel, the G heads of a group share each key read ---- */
void op_attention_dense(float *o, const float *q, const float *K, const float *V, int64_t T, int64_t pos0,
                        int nh, int nkv, int hd, float scale) {
    int G = nh / nkv;
    int64_t nmax = pos0 + T;
#pragma omp parallel num_threads(sala_get_threads())
    {
        float *p = xmalloc(sizeof(float) * (size_t)nmax);
        float *acc = xmalloc(sizeof(float) * (size_t)hd);
#pragma omp for schedule(dynamic, 1) collapse(2)
        for (int64_t t = 0; t < T; t++)
            for (int h = 0; h < nh; h++) {
                int g = h / G;
                int64_t n = pos0 + t + 1;
                const float *qt = q + (t * nh + h) * hd;
                float mx = -INFINITY;
                for (int64_t j = 0; j < n; j++) {
                    p[j] = scale * dot_f32(qt, K + (j * nkv + g) * hd, hd);
                    if (p[j] > mx) mx = p[j];
                }
                float sum = 0;
                for (int i = 0; i < hd; i++) acc[i] = 0;
                for (int64_t j = 0; j < n; j++) {
                    float e = expf(p[j] - mx);
                    sum += e;
                    const float *vj = V + (j * nkv + g) * hd;
                    for (int i = 0; i < hd; i++) acc[i] += e * vj[i];
                }
                float *ot = o + (t * nh + h) * hd;
                for (int i = 0; i < hd; i++) ot[i] = acc[i] / sum;
            }
        free(p);
        free(acc);
    }
}
