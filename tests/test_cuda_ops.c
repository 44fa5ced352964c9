/* test_cuda_ops.c — the CUDA backend's GEMM and elementwise kernels against the CPU reference ops
 * (src/cpu/ops.h *_ref and plain ops), on random inputs at several sizes including odd ones.
 *
 * Runs only with SALA_TEST_CUDA=1 on a machine with a GPU (make test-cuda); otherwise prints SKIP.
 * Outputs are poisoned with NaN bytes before each launch, so an unwritten element fails.
 *
 * Tolerances, per element, with their reason:
 *   GEMM (fp32 accumulation in another order than the double-accumulated reference): |Δ| ≤ 1e-5·Σ_k|x_k w_k|
 *     + 1e-6 — the typical reordering error is √K·2⁻²⁴·Σ|xw| (4e-6 at K = 4096). The bf16 path is
 *     compared with the reference fed the same bf16-rounded x.
 *   norms, gates, SwiGLU, RoPE (the same formula in fp32, sums in double): |Δ| ≤ 1e-6 + 1e-5·|ref|.
 *   bf16 outputs: one bf16 rounding of the fp32 result, |Δ| ≤ 2⁻⁸·|ref| + 1e-6 (added to the GEMM's bound
 *     for a bf16-output GEMM). bf16 inputs (SwiGLU, gate, qk-norm + RoPE fed a bf16 GEMM output): the reference
 *     runs on the same bf16 values, so only the output rounding differs.
 *   embedding, KV append, argmax: exact. */
#ifndef SALA_CUDA
#include <stdio.h>
int main(void) {
    printf("SKIP (built without CUDA)\n0 passed, 0 failed\n");
    return 0;
}
#else
#include <stdint.h>

#include "cpu/ops.h"
#include "cuda/kernels.h"
#include "test.h"
#include "cuda_test.h"

/* ---- GEMM ---- */

/* pad: extra elements per row of x (odd pads force cuBLASLt / the fallback; multiples of 8 allow the GEMV) */
static void gemm_case(cu_gemm *g, int64_t T, int64_t N, int64_t K, cu_dtype xt, float alpha, float beta, int pad,
                      cu_dtype yt) {
    int64_t ldx = K + pad, ldy = N + 5; /* strided operand and output */
    float *x = malloc(sizeof(float) * (size_t)(T * ldx)), *w = malloc(sizeof(float) * (size_t)(N * K));
    uint16_t *wb = malloc(2 * (size_t)(N * K)), *xb = malloc(2 * (size_t)(T * ldx));
    fill(x, T * ldx, 1.0f);
    fill(w, N * K, 0.5f);
    for (int64_t i = 0; i < N * K; i++) wb[i] = f32_to_bf16(w[i]);
    if (xt == CU_BF16)
        for (int64_t i = 0; i < T * ldx; i++) xb[i] = f32_to_bf16(x[i]), x[i] = bf16_to_f32(xb[i]);
    float *y0 = malloc(sizeof(float) * (size_t)(T * ldy));
    fill(y0, T * ldy, 1.0f);
    /* reference: op_matmul_ref on the packed operand */
    float *xp = malloc(sizeof(float) * (size_t)(T * K)), *ref = malloc(sizeof(float) * (size_t)(T * N));
    double *tol = malloc(sizeof(double) * (size_t)(T * N));
    for (int64_t t = 0; t < T; t++) memcpy(xp + t * K, x + t * ldx, sizeof(float) * (size_t)K);
    sala_weight W = {DT_BF16, wb, N, K};
    op_matmul_ref(ref, xp, &W, T);
    for (int64_t t = 0; t < T; t++)
        for (int64_t n = 0; n < N; n++) {
            double s = 0;
            for (int64_t k = 0; k < K; k++) s += fabs((double)xp[t * K + k] * bf16_to_f32(wb[n * K + k]));
            ref[t * N + n] = alpha * ref[t * N + n] + beta * y0[t * ldy + n];
            tol[t * N + n] = 1e-5 * s * fabs(alpha) + 1e-6 + (yt == CU_BF16 ? fabs(ref[t * N + n]) / 256 : 0);
        }
    void *dx = xt == CU_BF16 ? up(xb, 2 * (size_t)(T * ldx)) : up(x, sizeof(float) * (size_t)(T * ldx));
    uint16_t *dw = up(wb, 2 * (size_t)(N * K));
    const size_t ys = yt == CU_BF16 ? 2 : 4;
    void *dy = yt == CU_BF16 ? dnew(ys * (size_t)(T * ldy)) : up(y0, sizeof(float) * (size_t)(T * ldy));
    if (beta == 0.0f) cu_memset(dy, 0xff, ys * (size_t)(T * ldy)); /* beta 0 must ignore y */
    if (xt == CU_BF16 && T > 4) /* a tuned plan (timed with this beta) must compute the same product */
        CHECK(cu_gemm_tune(g, NULL, yt, ldy, dx, ldx, dw, T, N, K, beta, "test") == 0);
    int e = cu_gemm_run(g, NULL, dy, yt, ldy, dx, xt, ldx, dw, T, N, K, alpha, beta);
    CHECK(e == 0, "cu_gemm_run: %s", cu_error_str(e));
    float *got = malloc(sizeof(float) * (size_t)(T * ldy)), *gp = malloc(sizeof(float) * (size_t)(T * N));
    CHECK(down(got, dy, ys * (size_t)(T * ldy)) == 0);
    if (yt == CU_BF16) /* widen in place, from the end */
        for (int64_t i = T * ldy - 1; i >= 0; i--) got[i] = bf16_to_f32(((uint16_t *)got)[i]);
    for (int64_t t = 0; t < T; t++) memcpy(gp + t * N, got + t * ldy, sizeof(float) * (size_t)N);
    char what[128];
    snprintf(what, sizeof what, "gemm %s%s T=%lld N=%lld K=%lld a=%g b=%g pad %d", xt == CU_BF16 ? "bf16" : "fp32",
             yt == CU_BF16 ? " -> bf16" : "", (long long)T, (long long)N, (long long)K, alpha, beta, pad);
    CHECK(close_to(what, gp, ref, T * N, tol, 0, 0), "%s", what);
    cu_free(dx), cu_free(dw), cu_free(dy);
    free(x), free(w), free(wb), free(xb), free(y0), free(xp), free(ref), free(tol), free(got), free(gp);
}

static void test_gemm(void) {
    cu_gemm *g;
    int e = cu_gemm_new(&g, 1 << 20); /* small scratch: the fp32 path must slice W */
    CHECK(e == 0, "cu_gemm_new: %s", cu_error_str(e));
    if (e) return;
    static const int64_t shapes[][3] = {{1, 37, 64}, {7, 100, 136}, {65, 259, 256}, {300, 1000, 1024}, {2, 4099, 512}};
    for (int i = 0; i < 5; i++)
        for (int xt = 0; xt < 2; xt++)
            gemm_case(g, shapes[i][0], shapes[i][1], shapes[i][2], (cu_dtype)xt, 1.0f, 0.0f, xt == CU_BF16 ? 8 : 3, CU_F32);
    gemm_case(g, 33, 130, 264, CU_BF16, 0.7f, 1.0f, 8, CU_F32); /* residual epilogue */
    gemm_case(g, 33, 130, 264, CU_F32, 0.7f, 1.0f, 3, CU_F32);
    /* bf16 products (cuBLASLt, tuned; a 3-row one and odd strides on the tiled kernel) */
    for (int i = 0; i < 5; i++) gemm_case(g, shapes[i][0], shapes[i][1], shapes[i][2], CU_BF16, 1.0f, 0.0f, 8, CU_BF16);
    gemm_case(g, 300, 1000, 1024, CU_BF16, 0.5f, 0.0f, 3, CU_BF16);
    gemm_case(g, 512, 2048, 1024, CU_BF16, 1.0f, 0.0f, 0, CU_BF16);
    gemm_case(g, 512, 2048, 1024, CU_BF16, 1.0f, 0.0f, 0, CU_F32);
    gemm_case(g, 512, 2048, 1024, CU_BF16, 0.7f, 1.0f, 0, CU_F32); /* tuned residual update (o_proj, down) */
    { /* a bf16 product that would accumulate, or from fp32 operands, is refused */
        void *b = dnew(1 << 16);
        CHECK(cu_gemm_run(g, NULL, b, CU_BF16, 64, b, CU_BF16, 64, b, 8, 64, 64, 1.0f, 1.0f) != 0);
        CHECK(cu_gemm_run(g, NULL, b, CU_BF16, 64, b, CU_F32, 64, b, 8, 64, 64, 1.0f, 0.0f) != 0);
        cu_free(b);
    }
    /* decode-sized products on the GEMV kernel (aligned rows), both operand types, with and without beta */
    for (int xt = 0; xt < 2; xt++) {
        gemm_case(g, 1, 4099, 512, (cu_dtype)xt, 1.0f, 0.0f, 0, CU_F32);
        gemm_case(g, 3, 131, 264, (cu_dtype)xt, 1.0f, 0.0f, 8, CU_F32);
        gemm_case(g, 4, 1000, 1024, (cu_dtype)xt, 0.7f, 1.0f, 16, CU_F32);
        gemm_case(g, 2, 1, 4096, (cu_dtype)xt, 1.0f, 0.0f, 0, CU_F32);
    }
    cu_gemm_free(g);
}

/* ---- elementwise ---- */

static void test_embed(void) {
    int64_t V = 50, H = 72, T = 9;
    float *E = malloc(sizeof(float) * (size_t)(V * H));
    uint16_t *Eb = malloc(2 * (size_t)(V * H));
    fill(E, V * H, 1.0f);
    for (int64_t i = 0; i < V * H; i++) Eb[i] = f32_to_bf16(E[i]);
    int32_t ids[9] = {0, 49, 3, 3, 17, 8, 0, 22, 41};
    float *ref = malloc(sizeof(float) * (size_t)(T * H)), *got = malloc(sizeof(float) * (size_t)(T * H));
    sala_weight W = {DT_BF16, Eb, V, H};
    op_embed(ref, &W, ids, T, 12.0f);
    uint16_t *dE = up(Eb, 2 * (size_t)(V * H));
    int32_t *dids = up(ids, sizeof ids);
    float *dx = dnew(sizeof(float) * (size_t)(T * H));
    CHECK(cu_embed(NULL, dx, dE, dids, T, (int)H, 12.0f) == 0);
    CHECK(down(got, dx, sizeof(float) * (size_t)(T * H)) == 0);
    CHECK(close_to("embed", got, ref, T * H, NULL, 0, 0));
    cu_free(dE), cu_free(dids), cu_free(dx);
    free(E), free(Eb), free(ref), free(got);
}

static void test_rmsnorm(void) {
    /* odd ldx: the one-element kernel; ldx a multiple of 4: the four-element one, or with D a multiple of 512
     * (4096, 512, 1536) the one holding the row in registers */
    static const int Ds[] = {16, 256, 4104, 16, 260, 4096, 512, 1536}, pad[] = {3, 3, 3, 0, 0, 4, 0, 8};
    for (int di = 0; di < 8; di++) {
        int D = Ds[di];
        int64_t rows = 5, ldx = D + pad[di], ldy = D + 8;
        float *x = malloc(sizeof(float) * (size_t)(rows * ldx)), *w = malloc(sizeof(float) * (size_t)D);
        fill(x, rows * ldx, 3.0f);
        fill(w, D, 1.0f);
        float *xp = malloc(sizeof(float) * (size_t)(rows * D)), *ref = malloc(sizeof(float) * (size_t)(rows * D));
        for (int64_t r = 0; r < rows; r++) memcpy(xp + r * D, x + r * ldx, sizeof(float) * (size_t)D);
        op_rmsnorm_ref(ref, xp, w, rows, D, 1e-6f);
        for (int64_t i = 0; i < rows * D; i++) ref[i] /= 4.0f;
        float *dx = up(x, sizeof(float) * (size_t)(rows * ldx)), *dw = up(w, sizeof(float) * (size_t)D);
        for (int yt = 0; yt < 2; yt++) {
            size_t es = yt ? 2 : 4;
            void *dy = dnew(es * (size_t)(rows * ldy));
            CHECK(cu_rmsnorm(NULL, dy, (cu_dtype)yt, ldy, dx, ldx, dw, rows, D, 1e-6f, 4.0f) == 0);
            char *hy = malloc(es * (size_t)(rows * ldy));
            CHECK(down(hy, dy, es * (size_t)(rows * ldy)) == 0);
            float *got = malloc(sizeof(float) * (size_t)(rows * D));
            for (int64_t r = 0; r < rows; r++)
                for (int i = 0; i < D; i++)
                    got[r * D + i] = yt ? bf16_to_f32(((uint16_t *)hy)[r * ldy + i]) : ((float *)hy)[r * ldy + i];
            char what[96];
            snprintf(what, sizeof what, "rmsnorm D=%d ldx %lld out %s", D, (long long)ldx, yt ? "bf16" : "fp32");
            CHECK(close_to(what, got, ref, rows * D, NULL, 1e-6, yt ? 1.0 / 256 : 1e-5), "%s", what);
            cu_free(dy), free(hy), free(got);
        }
        cu_free(dx), cu_free(dw);
        free(x), free(w), free(xp), free(ref);
    }
}

static void test_norm_gate(void) {
    /* odd strides: the one-element kernel; strides of a multiple of 4: the four-element one (al 1), or with D a
     * multiple of 512 the one holding the row in registers (al 2) */
    for (int zt = 0; zt < 2; zt++)
    for (int al = 0; al < 3; al++)
    for (int with_norm = 0; with_norm < 2; with_norm++) {
        int D = with_norm ? 272 : 100;
        if (al == 2) D = with_norm ? 4096 : 1024;
        int64_t rows = 6, ldo = D + (al ? 4 : 1), ldz = 3 * D + (al ? 8 : 7), zo = al ? 8 : 5; /* z at column zo */
        float *o = malloc(sizeof(float) * (size_t)(rows * ldo)), *z = malloc(sizeof(float) * (size_t)(rows * ldz));
        float *w = malloc(sizeof(float) * (size_t)D);
        fill(o, rows * ldo, 2.0f);
        fill(z, rows * ldz, 4.0f);
        fill(w, D, 1.0f);
        uint16_t *z16 = malloc(2 * (size_t)(rows * ldz));
        for (int64_t i = 0; i < rows * ldz; i++) z16[i] = f32_to_bf16(z[i]);
        if (zt == CU_BF16) /* the reference gates with the same bf16 values */
            for (int64_t i = 0; i < rows * ldz; i++) z[i] = bf16_to_f32(z16[i]);
        float *ref = malloc(sizeof(float) * (size_t)(rows * D)), *g = malloc(sizeof(float) * (size_t)(rows * D));
        for (int64_t r = 0; r < rows; r++) {
            memcpy(ref + r * D, o + r * ldo, sizeof(float) * (size_t)D);
            memcpy(g + r * D, z + r * ldz + zo, sizeof(float) * (size_t)D);
        }
        if (with_norm) op_rmsnorm_ref(ref, ref, w, rows, D, 1e-6f);
        op_sigmoid_gate(ref, g, rows * D);
        float *d_o = up(o, sizeof(float) * (size_t)(rows * ldo)), *dz = up(z, sizeof(float) * (size_t)(rows * ldz));
        float *dw = up(w, sizeof(float) * (size_t)D), *dy = dnew(sizeof(float) * (size_t)(rows * D));
        uint16_t *dz16 = up(z16, 2 * (size_t)(rows * ldz));
        const void *zp = zt == CU_BF16 ? (const void *)(dz16 + zo) : (const void *)(dz + zo);
        CHECK(cu_norm_gate(NULL, dy, CU_F32, D, d_o, ldo, zp, (cu_dtype)zt, ldz, with_norm ? dw : NULL, rows, D, 1e-6f) == 0);
        float *got = malloc(sizeof(float) * (size_t)(rows * D));
        CHECK(down(got, dy, sizeof(float) * (size_t)(rows * D)) == 0);
        char what[64];
        snprintf(what, sizeof what, "%s D=%d%s%s", with_norm ? "output norm + sigmoid gate" : "sigmoid gate", D,
                 zt ? ", bf16 z" : "", al ? ", aligned" : "");
        CHECK(close_to(what, got, ref, rows * D, NULL, 1e-6, 1e-5), "%s", what);
        cu_free(d_o), cu_free(dz), cu_free(dw), cu_free(dy), cu_free(dz16);
        free(o), free(z), free(w), free(ref), free(g), free(got), free(z16);
    }
}

/* I = 100 takes the quad path (I % 4 == 0), I = 101 the scalar one */
static void swiglu_case(int64_t rows, int I, cu_dtype gt) {
    float *gu = malloc(sizeof(float) * (size_t)(rows * 2 * I));
    fill(gu, rows * 2 * I, 5.0f);
    uint16_t *gu16 = malloc(2 * (size_t)(rows * 2 * I));
    for (int64_t i = 0; i < rows * 2 * I; i++) {
        gu16[i] = f32_to_bf16(gu[i]);
        if (gt == CU_BF16) gu[i] = bf16_to_f32(gu16[i]); /* the reference sees the same bf16 values */
    }
    float *g = malloc(sizeof(float) * (size_t)(rows * I)), *u = malloc(sizeof(float) * (size_t)(rows * I));
    float *ref = malloc(sizeof(float) * (size_t)(rows * I));
    for (int64_t r = 0; r < rows; r++)
        for (int i = 0; i < I; i++) g[r * I + i] = gu[r * 2 * I + i], u[r * I + i] = gu[r * 2 * I + I + i];
    op_swiglu(ref, g, u, rows * I);
    void *dgu = gt == CU_BF16 ? up(gu16, 2 * (size_t)(rows * 2 * I)) : up(gu, sizeof(float) * (size_t)(rows * 2 * I));
    for (int ht = 0; ht < 2; ht++) {
        size_t es = ht ? 2 : 4;
        void *dh = dnew(es * (size_t)(rows * I));
        CHECK(cu_swiglu(NULL, dh, (cu_dtype)ht, dgu, gt, rows, I) == 0);
        char *hh = malloc(es * (size_t)(rows * I));
        float *got = malloc(sizeof(float) * (size_t)(rows * I));
        CHECK(down(hh, dh, es * (size_t)(rows * I)) == 0);
        for (int64_t i = 0; i < rows * I; i++) got[i] = ht ? bf16_to_f32(((uint16_t *)hh)[i]) : ((float *)hh)[i];
        char what[64];
        snprintf(what, sizeof what, "swiglu %s -> %s I=%d", gt ? "bf16" : "fp32", ht ? "bf16" : "fp32", I);
        CHECK(close_to(what, got, ref, rows * I, NULL, 1e-6, ht ? 1.0 / 256 : 1e-5), "%s", what);
        cu_free(dh), free(hh), free(got);
    }
    cu_free(dgu);
    free(gu), free(gu16), free(g), free(u), free(ref);
}

static void test_swiglu(void) {
    for (int gt = 0; gt < 2; gt++) {
        swiglu_case(4, 100, (cu_dtype)gt);
        swiglu_case(3, 101, (cu_dtype)gt);
        swiglu_case(70, 16, (cu_dtype)gt);
    }
}

static void qk_case(int hd, int nh, int64_t T, int64_t pos0, int do_norm, cu_dtype qt) {
    int64_t ld = 3 * nh * hd + 4; /* q | k | (rest) in a wider row */
    float *buf = malloc(sizeof(float) * (size_t)(T * ld)), *qw = malloc(sizeof(float) * (size_t)hd);
    float *kw = malloc(sizeof(float) * (size_t)hd);
    fill(buf, T * ld, 2.0f);
    uint16_t *b16 = malloc(2 * (size_t)(T * ld));
    for (int64_t i = 0; i < T * ld; i++) {
        b16[i] = f32_to_bf16(buf[i]);
        if (qt == CU_BF16) buf[i] = bf16_to_f32(b16[i]);
    }
    fill(qw, hd, 1.5f);
    fill(kw, hd, 1.5f);
    int64_t qd = (int64_t)nh * hd;
    float *q = malloc(sizeof(float) * (size_t)(T * qd)), *k = malloc(sizeof(float) * (size_t)(T * qd));
    for (int64_t t = 0; t < T; t++) {
        memcpy(q + t * qd, buf + t * ld, sizeof(float) * (size_t)qd);
        memcpy(k + t * qd, buf + t * ld + qd, sizeof(float) * (size_t)qd);
    }
    if (do_norm) {
        op_rmsnorm_ref(q, q, qw, T * nh, hd, 1e-6f);
        op_rmsnorm_ref(k, k, kw, T * nh, hd, 1e-6f);
    }
    op_rope(q, T, nh, hd, pos0, 10000.0);
    op_rope(k, T, nh, hd, pos0, 10000.0);
    float inv[128];
    for (int i = 0; i < hd / 2; i++) inv[i] = 1.0f / (float)pow(10000.0, (double)(2 * i) / hd);
    float *dbuf = up(buf, sizeof(float) * (size_t)(T * ld)), *dqw = up(qw, sizeof(float) * (size_t)hd);
    float *dkw = up(kw, sizeof(float) * (size_t)hd), *dinv = up(inv, sizeof(float) * (size_t)(hd / 2));
    uint16_t *d16 = up(b16, 2 * (size_t)(T * ld));
    float *got = malloc(sizeof(float) * (size_t)(T * ld));
    if (qt == CU_BF16) {
        CHECK(cu_qknorm_rope_dev(NULL, d16, CU_BF16, ld, T, 2 * nh, nh, hd, dqw, dkw, 1e-6f, do_norm, dinv, pos0, NULL, 1) == 0);
        CHECK(down(b16, d16, 2 * (size_t)(T * ld)) == 0);
        for (int64_t i = 0; i < T * ld; i++) got[i] = bf16_to_f32(b16[i]);
    } else {
        CHECK(cu_qknorm_rope(NULL, dbuf, ld, T, 2 * nh, nh, hd, dqw, dkw, 1e-6f, do_norm, dinv, pos0, 1) == 0);
        CHECK(down(got, dbuf, sizeof(float) * (size_t)(T * ld)) == 0);
    }
    float *gq = malloc(sizeof(float) * (size_t)(T * qd)), *gk = malloc(sizeof(float) * (size_t)(T * qd));
    int untouched = 1;
    for (int64_t t = 0; t < T; t++) {
        memcpy(gq + t * qd, got + t * ld, sizeof(float) * (size_t)qd);
        memcpy(gk + t * qd, got + t * ld + qd, sizeof(float) * (size_t)qd);
        for (int64_t i = 2 * qd; i < ld; i++) untouched &= got[t * ld + i] == buf[t * ld + i];
    }
    char what[96];
    snprintf(what, sizeof what, "%sRoPE%s hd=%d T=%lld pos0=%lld q", do_norm ? "qk-norm + " : "", qt ? " bf16" : "", hd,
             (long long)T, (long long)pos0);
    const double rt = qt == CU_BF16 ? 1.0 / 256 : 1e-5;
    CHECK(close_to(what, gq, q, T * qd, NULL, 1e-6, rt), "%s", what);
    what[strlen(what) - 1] = 'k';
    CHECK(close_to(what, gk, k, T * qd, NULL, 1e-6, rt), "%s", what);
    CHECK(untouched, "qknorm_rope wrote outside q and k");
    cu_free(dbuf), cu_free(dqw), cu_free(dkw), cu_free(dinv), cu_free(d16);
    free(b16), free(buf), free(qw), free(kw), free(q), free(k), free(got), free(gq), free(gk);
}

static void test_qknorm_rope(void) {
    for (int qt = 0; qt < 2; qt++) {
        qk_case(16, 4, 5, 0, 1, (cu_dtype)qt);
        qk_case(128, 3, 7, 1000003, 1, (cu_dtype)qt);   /* hd 128: k_qknorm_rope128, 8 heads per block */
        qk_case(128, 32, 300, 1048276, 1, (cu_dtype)qt); /* one block per row (T ≥ 256), angles near 2^20 */
        qk_case(128, 5, 260, 9, 0, (cu_dtype)qt);       /* one block per row, RoPE only, heads not a multiple of 4 */
        qk_case(64, 2, 3, 77, 0, (cu_dtype)qt);
    }
}

static void test_kv_append(void) {
    int64_t T = 13, pos0 = 29, kvd = 48, ld = 200, N = 64;
    float *src = malloc(sizeof(float) * (size_t)(T * ld));
    fill(src, T * ld, 3.0f);
    for (int kt = 0; kt < 2; kt++) {
        size_t es = kt ? 2 : 4;
        float *ds = up(src, sizeof(float) * (size_t)(T * ld));
        void *dK = dnew(es * (size_t)(N * kvd)), *dV = dnew(es * (size_t)(N * kvd));
        CHECK(cu_kv_append(NULL, dK, dV, (cu_dtype)kt, ds + 7, ds + 7 + kvd, ld, T, pos0, (int)kvd) == 0);
        char *hk = malloc(es * (size_t)(N * kvd)), *hv = malloc(es * (size_t)(N * kvd));
        CHECK(down(hk, dK, es * (size_t)(N * kvd)) == 0);
        CHECK(down(hv, dV, es * (size_t)(N * kvd)) == 0);
        int bad = 0;
        for (int64_t t = 0; t < T; t++)
            for (int64_t c = 0; c < kvd; c++) {
                float wk = src[t * ld + 7 + c], wv = src[t * ld + 7 + kvd + c];
                int64_t i = (pos0 + t) * kvd + c;
                float gk = kt ? bf16_to_f32(((uint16_t *)hk)[i]) : ((float *)hk)[i];
                float gv = kt ? bf16_to_f32(((uint16_t *)hv)[i]) : ((float *)hv)[i];
                if (kt) wk = bf(wk), wv = bf(wv);
                bad += gk != wk || gv != wv;
            }
        CHECK(bad == 0, "kv_append %s: %d wrong", kt ? "bf16" : "fp32", bad);
        printf("   kv_append %s: %s\n", kt ? "bf16" : "fp32", bad ? "MISMATCH" : "exact");
        cu_free(ds), cu_free(dK), cu_free(dV), free(hk), free(hv);
    }
    free(src);
}

static void test_argmax(void) {
    int64_t rows = 3, n = 73448;
    float *x = malloc(sizeof(float) * (size_t)(rows * n));
    fill(x, rows * n, 10.0f);
    x[0 * n + 5] = 50.0f; /* row 0: single max */
    x[1 * n + 70000] = 60.0f, x[1 * n + 123] = 60.0f; /* row 1: tie -> lower index */
    x[2 * n + n - 1] = 70.0f;
    float *dx = up(x, sizeof(float) * (size_t)(rows * n));
    int32_t *di = dnew(sizeof(int32_t) * (size_t)rows), got[3];
    CHECK(cu_argmax(NULL, di, dx, rows, n) == 0);
    CHECK(down(got, di, sizeof got) == 0);
    CHECK(got[0] == 5 && got[1] == 123 && got[2] == n - 1, "argmax %d %d %d", got[0], got[1], got[2]);
    printf("   argmax: %d %d %d\n", got[0], got[1], got[2]);
    cu_free(dx), cu_free(di), free(x);
}

int main(void) {
    if (!gpu_ready()) {
        printf("SKIP (needs SALA_TEST_CUDA=1 and a GPU)\n0 passed, 0 failed\n");
        return 0;
    }
    printf("GPU: %s\n", cu_device_name(0));
    TEST_RUN(test_gemm);
    TEST_RUN(test_embed);
    TEST_RUN(test_rmsnorm);
    TEST_RUN(test_norm_gate);
    TEST_RUN(test_swiglu);
    TEST_RUN(test_qknorm_rope);
    TEST_RUN(test_kv_append);
    TEST_RUN(test_argmax);
    TEST_END();
}
#endif
