/* ops_ref.c — the reference operators: plain loops that read like MODEL.md §3–4.
 *
 * This file is the spec in code. Nothing here is tuned; every fast path (ops.c, the CUDA kernels) is
 * tested against these functions. Accumulations that decide block selection (InfLLM-v2 stage 1) run in
 * double so that the reference's exact ties and near-ties are reproduced. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/ops.h"
#include "util.h"

/* ---- number formats ---- */

float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x7fffffu)) return (uint16_t)((u >> 16) | 0x40); /* NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ffu, u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while (!(man & 0x400u));
            u = sign | (uint32_t)(127 - 15 - e) << 23 | (man & 0x3ffu) << 13;
        }
    } else if (exp == 0x1f) {
        u = sign | 0x7f800000u | man << 13;
    } else {
        u = sign | (exp + 127 - 15) << 23 | man << 13;
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u;
    int32_t exp = (int32_t)((u >> 23) & 0xff) - 127 + 15;
    uint32_t man = u & 0x7fffffu;
    if (((u >> 23) & 0xff) == 0xff) return (uint16_t)(sign | 0x7c00u | (man ? 0x200u : 0));
    if (exp >= 0x1f) return (uint16_t)(sign | 0x7c00u);
    if (exp <= 0) {
        if (exp < -10) return (uint16_t)sign;
        man |= 0x800000u;
        int shift = 14 - exp;
        uint32_t half = 1u << (shift - 1), rest = man & ((1u << shift) - 1), r = man >> shift;
        if (rest > half || (rest == half && (r & 1))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = (uint32_t)exp << 10 | man >> 13, rest = man & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (r & 1))) r++;
    return (uint16_t)(sign | r);
}

void weight_row_f32(const sala_weight *w, int64_t r, float *out) {
    int64_t n = w->cols;
    switch (w->dtype) {
    case DT_F32: memcpy(out, (const float *)w->data + r * n, (size_t)n * 4); break;
    case DT_BF16: {
        const uint16_t *p = (const uint16_t *)w->data + r * n;
        for (int64_t i = 0; i < n; i++) out[i] = bf16_to_f32(p[i]);
        break;
    }
    case DT_F16: {
        const uint16_t *p = (const uint16_t *)w->data + r * n;
        for (int64_t i = 0; i < n; i++) out[i] = f16_to_f32(p[i]);
        break;
    }
    default: SALA_CHECK(!"weight dtype");
    }
}

/* ---- elementwise and norms ---- */

void op_embed(float *x, const sala_weight *E, const int32_t *ids, int64_t T, float scale) {
    for (int64_t t = 0; t < T; t++) {
        float *row = x + t * E->cols;
        weight_row_f32(E, ids[t], row);
        for (int64_t i = 0; i < E->cols; i++) row[i] *= scale;
    }
}

void op_rmsnorm_ref(float *y, const float *x, const float *w, int64_t rows, int64_t D, float eps) {
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * D;
        double ss = 0;
        for (int64_t i = 0; i < D; i++) ss += (double)xr[i] * xr[i];
        float inv = (float)(1.0 / sqrt(ss / D + eps));
        for (int64_t i = 0; i < D; i++) y[r * D + i] = xr[i] * inv * w[i];
    }
}

void op_matmul_ref(float *y, const float *x, const sala_weight *W, int64_t T) {
    int64_t N = W->rows, K = W->cols;
    float *wr = xmalloc((size_t)K * sizeof(float));
    for (int64_t n = 0; n < N; n++) {
        weight_row_f32(W, n, wr);
        for (int64_t t = 0; t < T; t++) {
            const float *xt = x + t * K;
            double acc = 0;
            for (int64_t k = 0; k < K; k++) acc += (double)xt[k] * wr[k];
            y[t * N + n] = (float)acc;
        }
    }
    free(wr);
}

void op_swiglu(float *h, const float *g, const float *u, int64_t n) {
    for (int64_t i = 0; i < n; i++) h[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void op_sigmoid_gate(float *o, const float *g, int64_t n) {
    for (int64_t i = 0; i < n; i++) o[i] *= 1.0f / (1.0f + expf(-g[i]));
}

void op_residual(float *x, const float *y, float r, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] += r * y[i];
}

void op_rope(float *x, int64_t T, int nh, int hd, int64_t pos0, double theta) {
    int half = hd / 2;
    float inv_freq[512];
    SALA_CHECK(half <= 512);
    for (int i = 0; i < half; i++) inv_freq[i] = 1.0f / (float)pow(theta, (double)(2 * i) / hd);
    for (int64_t t = 0; t < T; t++) {
        float p = (float)(pos0 + t);
        for (int i = 0; i < half; i++) {
            float ang = p * inv_freq[i]; /* fp32 product, as the official code */
            double c = cos((double)ang), s = sin((double)ang);
            for (int h = 0; h < nh; h++) {
                float *v = x + (t * nh + h) * hd;
                double a = v[i], b = v[i + half];
                v[i] = (float)(a * c - b * s);
                v[i + half] = (float)(b * c + a * s);
            }
        }
    }
}

/* ---- Lightning attention ---- */

static void alibi_slopes(double *m, int n) {
    int p = 1;
    while (p * 2 <= n) p *= 2; /* closest power of two not above n */
    double start = pow(2.0, -8.0 / p);
    for (int i = 0; i < p; i++) m[i] = pow(start, i + 1);
    if (p < n) { /* every other slope of 2p */
        double start2 = pow(2.0, -8.0 / (2 * p));
        for (int i = 0; i < n - p; i++) m[p + i] = pow(start2, 2 * i + 1);
    }
}

void lightning_decay(double *lambda, int nh) {
    double *m = xmalloc(sizeof(double) * (size_t)nh);
    alibi_slopes(m, nh);
    for (int h = 0; h < nh; h++) lambda[h] = exp(-m[h]);
    free(m);
}

void op_lightning_ref(float *o, const float *q, const float *k, const float *v, float *state,
                      const double *lambda, float s, int64_t T, int nh, int hd) {
    for (int h = 0; h < nh; h++) {
        float *S = state + (int64_t)h * hd * hd; /* S[i][j]: key dim i, value dim j */
        float lam = (float)lambda[h];
        for (int64_t t = 0; t < T; t++) {
            const float *kt = k + (t * nh + h) * hd, *vt = v + (t * nh + h) * hd, *qt = q + (t * nh + h) * hd;
            for (int i = 0; i < hd; i++)
                for (int j = 0; j < hd; j++) S[i * hd + j] = lam * S[i * hd + j] + kt[i] * vt[j];
            float *ot = o + (t * nh + h) * hd;
            for (int j = 0; j < hd; j++) {
                double acc = 0;
                for (int i = 0; i < hd; i++) acc += (double)qt[i] * S[i * hd + j];
                ot[j] = (float)(s * acc);
            }
        }
    }
}

/* ---- dense attention ---- */

void op_attention_dense_ref(float *o, const float *q, const float *K, const float *V, int64_t T, int64_t pos0,
                            int nh, int nkv, int hd, float scale) {
    int G = nh / nkv;
    for (int64_t t = 0; t < T; t++) {
        int64_t n = pos0 + t + 1; /* keys 0..pos */
        double *p = xmalloc(sizeof(double) * (size_t)n);
        for (int h = 0; h < nh; h++) {
            int g = h / G;
            const float *qt = q + (t * nh + h) * hd;
            double mx = -INFINITY;
            for (int64_t j = 0; j < n; j++) {
                const float *kj = K + (j * nkv + g) * hd;
                double d = 0;
                for (int i = 0; i < hd; i++) d += (double)qt[i] * kj[i];
                p[j] = d * scale;
                if (p[j] > mx) mx = p[j];
            }
            double sum = 0;
            for (int64_t j = 0; j < n; j++) sum += (p[j] = exp(p[j] - mx));
            float *ot = o + (t * nh + h) * hd;
            for (int i = 0; i < hd; i++) {
                double acc = 0;
                for (int64_t j = 0; j < n; j++) acc += p[j] * V[(j * nkv + g) * hd + i];
                ot[i] = (float)(acc / sum);
            }
        }
        free(p);
    }
}

/* ---- InfLLM-v2 ---- */

static int64_t floordiv(int64_t a, int64_t b) {
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
    return q;
}

static int64_t clamp64(int64_t x, int64_t lo, int64_t hi) { return x < lo ? lo : x > hi ? hi : x; }

int64_t infllm_n_windows(int64_t N, int l, int s) { return N < l ? 0 : (N - l) / s + 1; }

void op_compress_keys(float *C, const float *K, int64_t j0, int64_t j1, int l, int s, int nkv, int hd) {
    for (int64_t j = j0; j < j1; j++)
        for (int g = 0; g < nkv; g++)
            for (int i = 0; i < hd; i++) {
                float acc = 0; /* fp32 sum in key order: the same value however the window is reached */
                for (int64_t t = j * s; t < j * s + l; t++) acc += K[(t * nkv + g) * hd + i];
                C[(j * nkv + g) * hd + i] = acc / (float)l;
            }
}

void infllm_visible(const infllm_dims *d, int64_t r, int64_t kv_len, int decode, int64_t *v1, int64_t *v2) {
    int64_t n1 = infllm_n_windows(kv_len, d->l1, d->s1), n2 = infllm_n_windows(kv_len, d->l2, d->s2);
    if (decode) {
        *v1 = n1;
        *v2 = n2;
        return;
    }
    *v1 = clamp64(floordiv(r + 1, d->s1) - 1 + n1 - floordiv(kv_len - (d->s1 - 1), d->s1), 0, n1);
    *v2 = clamp64(floordiv(r + 1, d->s2) - 1 + n2 - floordiv(kv_len - (d->s2 - 1), d->s2), 0, n2);
}

int64_t infllm_select_work_floats(const infllm_dims *d, int64_t kv_len) {
    int64_t n1 = infllm_n_windows(kv_len, d->l1, d->s1);
    int64_t nb = (kv_len + d->block - 1) / d->block;
    /* score[n1] doubles + (score, block) pairs [nb], counted in floats */
    return 2 * (n1 + 1) + 4 * (nb + 1) + 16;
}

typedef struct {
    double score;
    int32_t block;
} block_score;

/* descending score, ties to the lower block index */
static int cmp_block_score(const void *a, const void *b) {
    const block_score *x = a, *y = b;
    if (x->score > y->score) return -1;
    if (x->score < y->score) return 1;
    return (x->block > y->block) - (x->block < y->block);
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

void infllm_select_row(const infllm_dims *d, const float *q, const float *C1, int64_t n1, const float *C2,
                       int64_t n2, int64_t r, int64_t kv_len, int decode, int32_t *blocks, int *n_sel,
                       float *work) {
    int G = d->nh / d->nkv, hd = d->hd;
    int64_t v1, v2;
    infllm_visible(d, r, kv_len, decode, &v1, &v2);
    SALA_CHECK(v1 <= n1 && v2 <= n2);
    int64_t nb = (kv_len + d->block - 1) / d->block;
    int64_t qb = r / d->block;
    int64_t K = d->budget < nb ? d->budget : nb;
    int stride = d->block / d->s1; /* compressed keys per block (pool stride); pool kernel = stride + 1 */
    double *score = (double *)work;                      /* [n1] stage-1 score of each compressed key */
    block_score *list = (block_score *)(score + n1 + 1); /* [nb] pooled block scores */
    for (int g = 0; g < d->nkv; g++) {
        for (int64_t j = 0; j < n1; j++) score[j] = 0; /* invisible keys score 0 */
        for (int hh = 0; hh < G; hh++) {
            int h = g * G + hh;
            const float *qh = q + (int64_t)h * hd;
            double mx = -INFINITY, sum = 0;
            for (int64_t j = 0; j < v2; j++) {
                const float *c = C2 + (j * d->nkv + g) * hd;
                double dot = 0;
                for (int i = 0; i < hd; i++) dot += (double)qh[i] * c[i];
                dot *= d->scale;
                if (dot > mx) {
                    sum = sum * exp(mx - dot) + 1;
                    mx = dot;
                } else {
                    sum += exp(dot - mx);
                }
            }
            double lse = v2 > 0 ? mx + log(sum) : -INFINITY;
            for (int64_t j = 0; j < v1; j++) {
                const float *c = C1 + (j * d->nkv + g) * hd;
                double dot = 0;
                for (int i = 0; i < hd; i++) dot += (double)qh[i] * c[i];
                score[j] += exp(dot * d->scale - lse);
            }
        }
        for (int64_t b = 0; b < nb; b++) {
            double s;
            if (b < d->init_blocks || (b >= qb - d->local_blocks && b <= qb)) {
                s = INFINITY;
            } else {
                int64_t lo = b * stride - 1, hi = b * stride + stride - 1; /* window [4b-1, 4b+3] */
                if (lo < 0) lo = 0;
                if (hi > n1 - 1) hi = n1 - 1;
                s = -INFINITY;
                for (int64_t j = lo; j <= hi; j++)
                    if (score[j] > s) s = score[j];
            }
            list[b].score = s;
            list[b].block = (int32_t)b;
        }
        qsort(list, (size_t)nb, sizeof *list, cmp_block_score);
        int cnt = 0;
        for (int64_t i = 0; i < K; i++)
            if (list[i].block <= qb) blocks[(int64_t)g * d->budget + cnt++] = list[i].block;
        qsort(blocks + (int64_t)g * d->budget, (size_t)cnt, sizeof(int32_t), cmp_i32);
        n_sel[g] = cnt;
    }
}

void op_attention_blocks_row(float *o, const float *q, const float *K, const float *V, const infllm_dims *d,
                             int64_t r, const int32_t *blocks, const int *n_sel) {
    int G = d->nh / d->nkv, hd = d->hd;
    for (int h = 0; h < d->nh; h++) {
        int g = h / G;
        const float *qh = q + (int64_t)h * hd;
        const int32_t *bl = blocks + (int64_t)g * d->budget;
        double mx = -INFINITY, sum = 0;
        double acc[512];
        SALA_CHECK(hd <= 512);
        for (int i = 0; i < hd; i++) acc[i] = 0;
        for (int b = 0; b < n_sel[g]; b++) {
            int64_t t0 = (int64_t)bl[b] * d->block, t1 = t0 + d->block;
            if (t1 > r + 1) t1 = r + 1;
            for (int64_t t = t0; t < t1; t++) {
                const float *kt = K + (t * d->nkv + g) * hd, *vt = V + (t * d->nkv + g) * hd;
                double dot = 0;
                for (int i = 0; i < hd; i++) dot += (double)qh[i] * kt[i];
                dot *= d->scale;
                if (dot > mx) {
                    double c = exp(mx - dot);
                    sum *= c;
                    for (int i = 0; i < hd; i++) acc[i] *= c;
                    mx = dot;
                }
                double p = exp(dot - mx);
                sum += p;
                for (int i = 0; i < hd; i++) acc[i] += p * vt[i];
            }
        }
        for (int i = 0; i < hd; i++) o[(int64_t)h * hd + i] = (float)(acc[i] / sum);
    }
}
