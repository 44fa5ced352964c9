/* test_cuda_decode.c — the decode step's fused kernels against the CPU reference ops:
 *   cu_gemv (one row; RMSNorm / norm + sigmoid gate folded into the operand, SwiGLU or the residual
 *     update folded into the output) vs op_rmsnorm_ref / op_sigmoid_gate / op_matmul_ref / op_swiglu;
 *   cu_lightning_decode_fused (qk-norm + RoPE inside the recurrence) vs op_rmsnorm_ref + op_rope +
 *     op_lightning_ref;
 *   cu_sdec_step (the InfLLM-v2 decode chain of a sparse layer at a device-side position: append,
 *     compressed keys, LSE, stage 1, pooling, top-k, block-sparse attention) vs op_compress_keys,
 *     infllm_select_row and op_attention_blocks_row, two consecutive steps on one work area.
 *
 * Tolerances, with their reason:
 *   GEMV: the reference gets the operand the kernel builds (same fp32 formula, rounded to bf16 in the bf16
 *     mode), so only the summation order differs: |Δ| ≤ 1e-5·Σ|a w| + 1e-6 (see test_cuda_ops.c); the gate's
 *     expf may differ by an ulp from the host's, which can move one bf16 rounding of a: + 2⁻⁶·max|a w|.
 *     SwiGLU output: the fp32 error of g and u through silu(g)·u, plus one bf16 rounding (2⁻⁸·|ref|).
 *   Lightning: as test_cuda_lightning.c, 2e-5·max|ref| + 1e-6 (o and the state).
 *   Sparse chain: as test_cuda_infllm.c: compressed keys rel 1e-6 (same sums), block sets equal up to one
 *     near-tie swap at the boundary in all, attention |Δ| ≤ 5e-3 (probabilities rounded to bf16).
 * Runs only with SALA_TEST_CUDA=1 on a GPU. */
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

/* ---- GEMV ---- */

static void gemv_case(int in, int out, cu_dtype at, int64_t N, int64_t K, float alpha, float beta, int with_w,
                      int with_z) {
    float *x = malloc(sizeof(float) * (size_t)K), *w = malloc(sizeof(float) * (size_t)K);
    float *z = malloc(sizeof(float) * (size_t)K), *a = malloc(sizeof(float) * (size_t)K);
    fill(x, K, 3.0f);
    fill(w, K, 1.5f);
    fill(z, K, 4.0f);
    uint16_t *wb = malloc(2 * (size_t)(N * K)), *ab = malloc(2 * (size_t)K);
    for (int64_t i = 0; i < N * K; i++) wb[i] = f32_to_bf16(0.5f * frand());
    const float div = in == CU_GV_NORM ? 4.0f : 1.0f;
    /* the operand as the kernel builds it */
    if (in == CU_GV_PLAIN) {
        memcpy(a, x, sizeof(float) * (size_t)K);
    } else {
        double ss = 0;
        for (int64_t i = 0; i < K; i++) ss += (double)x[i] * x[i];
        float inv = (float)(1.0 / sqrt(ss / K + 1e-6f));
        for (int64_t i = 0; i < K; i++) {
            float v = x[i];
            if (in == CU_GV_NORM || with_w) v = v * inv * w[i];
            if (in == CU_GV_NORM && div != 1.0f) v /= div;
            if (in == CU_GV_GATE && with_z) v *= 1.0f / (1.0f + expf(-z[i]));
            a[i] = v;
        }
    }
    if (at == CU_BF16)
        for (int64_t i = 0; i < K; i++) ab[i] = f32_to_bf16(a[i]), a[i] = bf16_to_f32(ab[i]);
    if (in == CU_GV_PLAIN && at == CU_BF16)
        for (int64_t i = 0; i < K; i++) x[i] = a[i];
    float *ref = malloc(sizeof(float) * (size_t)N), *y0 = malloc(sizeof(float) * (size_t)N);
    double *tol = malloc(sizeof(double) * (size_t)N);
    fill(y0, N, 1.0f);
    sala_weight W = {DT_BF16, wb, N, K};
    op_matmul_ref(ref, a, &W, 1);
    double gate_slack = 0;
    for (int64_t n = 0; n < N; n++) {
        double s = 0, mx = 0;
        for (int64_t k = 0; k < K; k++) {
            double p = fabs((double)a[k] * bf16_to_f32(wb[n * K + k]));
            s += p;
            mx = fmax(mx, p);
        }
        tol[n] = 1e-5 * s + 1e-6 + (in == CU_GV_GATE && at == CU_BF16 ? mx / 64 : 0);
        gate_slack = fmax(gate_slack, tol[n]);
    }
    int64_t nout = out == CU_GV_SWIGLU ? N / 2 : N;
    float *want = malloc(sizeof(float) * (size_t)nout);
    double *wtol = malloc(sizeof(double) * (size_t)nout);
    for (int64_t i = 0; i < nout; i++) {
        if (out == CU_GV_SWIGLU) {
            float g = ref[i], u = ref[nout + i];
            op_swiglu(&want[i], &g, &u, 1);
            double sg = 1.0 / (1.0 + exp(-(double)g));
            double dg = fabs((sg * (1 + g * (1 - sg))) * u), du = fabs(g * sg);
            wtol[i] = dg * tol[i] + du * tol[nout + i] + (at == CU_BF16 ? fabs(want[i]) / 256 : 1e-6 * fabs(want[i])) + 1e-6;
        } else {
            want[i] = alpha * ref[i] + beta * y0[i];
            wtol[i] = fabs(alpha) * tol[i] + 1e-6 * fabs(want[i]);
        }
    }
    /* device */
    const size_t es = at == CU_BF16 ? 2 : 4;
    void *dx;
    if (in == CU_GV_PLAIN)
        dx = at == CU_BF16 ? up(ab, 2 * (size_t)K) : up(x, sizeof(float) * (size_t)K);
    else
        dx = up(x, sizeof(float) * (size_t)K);
    float *dw = up(w, sizeof(float) * (size_t)K), *dz = up(z, sizeof(float) * (size_t)K);
    uint16_t *dW = up(wb, 2 * (size_t)(N * K));
    void *dy = out == CU_GV_SWIGLU ? dnew(es * (size_t)nout) : up(y0, sizeof(float) * (size_t)N);
    if (out == CU_GV_STORE && beta == 0.0f) cu_memset(dy, 0xff, sizeof(float) * (size_t)N);
    cu_gemv_op op;
    memset(&op, 0, sizeof op);
    op.in = in, op.out = out, op.x = dx, op.w = (in == CU_GV_NORM || with_w) ? dw : NULL;
    op.z = with_z ? dz : NULL, op.eps = 1e-6f, op.div = div, op.y = dy, op.alpha = alpha, op.beta = beta;
    int e = cu_gemv(NULL, &op, at, dW, N, K);
    CHECK(e == 0, "cu_gemv: %s", cu_error_str(e));
    float *got = malloc(sizeof(float) * (size_t)nout);
    if (out == CU_GV_SWIGLU && at == CU_BF16) {
        uint16_t *hb = malloc(2 * (size_t)nout);
        CHECK(down(hb, dy, 2 * (size_t)nout) == 0);
        for (int64_t i = 0; i < nout; i++) got[i] = bf16_to_f32(hb[i]);
        free(hb);
    } else {
        CHECK(down(got, dy, sizeof(float) * (size_t)nout) == 0);
    }
    static const char *ins[] = {"plain", "rmsnorm", "gate"};
    char what[128];
    snprintf(what, sizeof what, "gemv %s%s%s -> %s %s N=%lld K=%lld", ins[in], with_w ? "+norm" : "",
             with_z ? "+z" : "", out == CU_GV_SWIGLU ? "swiglu" : beta != 0 ? "residual" : "store",
             at == CU_BF16 ? "bf16" : "fp32", (long long)N, (long long)K);
    CHECK(close_to(what, got, want, nout, wtol, 0, 0), "%s", what);
    (void)gate_slack;
    cu_free(dx), cu_free(dw), cu_free(dz), cu_free(dW), cu_free(dy);
    free(x), free(w), free(z), free(a), free(wb), free(ab), free(ref), free(y0), free(tol), free(want), free(wtol);
    free(got);
}

static void test_gemv(void) {
    /* every kernel variant (the same sums in the same order), with its trigger point, prefetch and batches
     * staged in shared memory */
    for (int v = 0; v < 6; v++) {
        const int var = v % 3, at = v / 3;
        cu_gemv_config(var, var, var == 1 ? 3 : 2, var == 2 ? 16384 : 0);
        const int ns = var == 0 ? 0 : var == 1 ? 1 : 3, sk[4] = {ns, ns, ns, ns};
        cu_gemv_stage(sk, ns);
        printf("   variant %d, %d staged:\n", var, ns);
        cu_dtype t = (cu_dtype)at;
        gemv_case(CU_GV_PLAIN, CU_GV_STORE, t, 4099, 512, 1.0f, 0.0f, 0, 0);
        gemv_case(CU_GV_PLAIN, CU_GV_STORE, t, 300, 16384, 0.7f, 1.0f, 0, 0); /* down_proj's K, residual */
        gemv_case(CU_GV_PLAIN, CU_GV_STORE, t, 37, 264, 1.0f, 0.0f, 0, 0);
        gemv_case(CU_GV_NORM, CU_GV_STORE, t, 1000, 4096, 1.0f, 0.0f, 0, 0);
        gemv_case(CU_GV_NORM, CU_GV_SWIGLU, t, 2 * 1500, 4096, 1.0f, 0.0f, 0, 0);
        gemv_case(CU_GV_NORM, CU_GV_SWIGLU, t, 2 * 3, 256, 1.0f, 0.0f, 0, 0);
        gemv_case(CU_GV_GATE, CU_GV_STORE, t, 513, 4096, 0.7f, 1.0f, 1, 1); /* Lightning: norm + gate */
        gemv_case(CU_GV_GATE, CU_GV_STORE, t, 129, 1024, 0.7f, 1.0f, 0, 1); /* sparse layer: gate only */
        gemv_case(CU_GV_GATE, CU_GV_STORE, t, 64, 128, 1.0f, 0.0f, 0, 0);   /* no gate: a = x */
    }
    /* the default (blocks per SM chosen per call): long GEMVs (≥ 4 items a warp at 2 blocks per SM on up to 160
     * SMs) run in two waves of blocks */
    cu_gemv_config(2, 1, 0, 0);
    cu_gemv_stage(NULL, 0);
    printf("   default:\n");
    for (int at = 0; at < 2; at++) {
        gemv_case(CU_GV_PLAIN, CU_GV_STORE, (cu_dtype)at, 300, 16384, 0.7f, 1.0f, 0, 0);
        gemv_case(CU_GV_GATE, CU_GV_STORE, (cu_dtype)at, 129, 1024, 0.7f, 1.0f, 0, 1);
        gemv_case(CU_GV_NORM, CU_GV_STORE, (cu_dtype)at, 4 * 160 * 16 + 7, 512, 1.0f, 0.0f, 0, 0);
        gemv_case(CU_GV_NORM, CU_GV_SWIGLU, (cu_dtype)at, 2 * (4 * 160 * 16 + 3), 256, 1.0f, 0.0f, 0, 0);
        gemv_case(CU_GV_GATE, CU_GV_STORE, (cu_dtype)at, 513, 4096, 0.7f, 1.0f, 1, 1); /* 1 batch staged */
    }
}

/* ---- Lightning decode with qk-norm + RoPE ---- */

static void lightning_fused_case(int nh, int hd, int64_t pos, int do_norm, int do_rope, int use_dpos) {
    int64_t qd = (int64_t)nh * hd, ssz = (int64_t)nh * hd * hd;
    float *qkv = malloc(sizeof(float) * (size_t)(3 * qd)), *qw = malloc(sizeof(float) * (size_t)hd);
    float *kw = malloc(sizeof(float) * (size_t)hd);
    fill(qkv, 3 * qd, 2.0f);
    fill(qw, hd, 1.5f);
    fill(kw, hd, 1.5f);
    float *S0 = malloc(sizeof(float) * (size_t)ssz), *Sref = malloc(sizeof(float) * (size_t)ssz);
    fill(S0, ssz, 0.5f);
    memcpy(Sref, S0, sizeof(float) * (size_t)ssz);
    float *q = malloc(sizeof(float) * (size_t)qd), *k = malloc(sizeof(float) * (size_t)qd), *ref = malloc(sizeof(float) * (size_t)qd);
    memcpy(q, qkv, sizeof(float) * (size_t)qd);
    memcpy(k, qkv + qd, sizeof(float) * (size_t)qd);
    if (do_norm) {
        op_rmsnorm_ref(q, q, qw, nh, hd, 1e-6f);
        op_rmsnorm_ref(k, k, kw, nh, hd, 1e-6f);
    }
    if (do_rope) {
        op_rope(q, 1, nh, hd, pos, 10000.0);
        op_rope(k, 1, nh, hd, pos, 10000.0);
    }
    double *lam = malloc(sizeof(double) * (size_t)nh);
    lightning_decay(lam, nh);
    float s = (float)(1.0 / sqrt((double)hd));
    op_lightning_ref(ref, q, k, qkv + 2 * qd, Sref, lam, s, 1, nh, hd);
    float inv[256];
    for (int i = 0; i < hd / 2; i++) inv[i] = 1.0f / (float)pow(10000.0, (double)(2 * i) / hd);
    float *dqkv = up(qkv, sizeof(float) * (size_t)(3 * qd)), *dS = up(S0, sizeof(float) * (size_t)ssz);
    float *dqw = up(qw, sizeof(float) * (size_t)hd), *dkw = up(kw, sizeof(float) * (size_t)hd);
    float *dinv = up(inv, sizeof(float) * (size_t)(hd / 2));
    double *dlam = up(lam, sizeof(double) * (size_t)nh);
    int64_t *dpos = up(&pos, sizeof pos);
    float *dout = dnew(sizeof(float) * (size_t)qd);
    int e = cu_lightning_decode_fused(NULL, dout, dqkv, dqkv + qd, dqkv + 2 * qd, dS, dlam, s, nh, hd, dqw, dkw, 1e-6f,
                                      do_norm, dinv, use_dpos ? -5 : pos, use_dpos ? dpos : NULL, do_rope);
    CHECK(e == 0, "launch: %s", cu_error_str(e));
    float *go = malloc(sizeof(float) * (size_t)qd), *gS = malloc(sizeof(float) * (size_t)ssz), *gq = malloc(sizeof(float) * (size_t)(3 * qd));
    CHECK(down(go, dout, sizeof(float) * (size_t)qd) == 0);
    CHECK(down(gS, dS, sizeof(float) * (size_t)ssz) == 0);
    CHECK(down(gq, dqkv, sizeof(float) * (size_t)(3 * qd)) == 0);
    CHECK(!memcmp(gq, qkv, sizeof(float) * (size_t)(3 * qd)), "fused lightning decode wrote into q|k|v");
    double mo = 0, ms = 0;
    for (int64_t i = 0; i < qd; i++) mo = fmax(mo, fabs(ref[i]));
    for (int64_t i = 0; i < ssz; i++) ms = fmax(ms, fabs(Sref[i]));
    char what[128];
    snprintf(what, sizeof what, "lightning fused nh=%d hd=%d pos=%lld norm %d rope %d%s: o", nh, hd, (long long)pos,
             do_norm, do_rope, use_dpos ? " (dpos)" : "");
    CHECK(close_to(what, go, ref, qd, NULL, 2e-5 * mo + 1e-6, 0), "%s", what);
    what[strlen(what) - 1] = 'S';
    CHECK(close_to(what, gS, Sref, ssz, NULL, 2e-5 * ms + 1e-6, 0), "%s", what);
    cu_free(dqkv), cu_free(dS), cu_free(dqw), cu_free(dkw), cu_free(dinv), cu_free(dlam), cu_free(dpos), cu_free(dout);
    free(qkv), free(qw), free(kw), free(S0), free(Sref), free(q), free(k), free(ref), free(lam), free(go), free(gS);
    free(gq);
}

static void test_lightning_fused(void) {
    lightning_fused_case(4, 16, 7, 1, 1, 0);
    lightning_fused_case(32, 128, 1000003, 1, 1, 1);
    lightning_fused_case(3, 64, 77, 0, 1, 0);
    lightning_fused_case(5, 32, 12, 1, 0, 1);
}

/* ---- InfLLM-v2 decode chain ---- */

typedef struct {
    const char *name;
    int nh, nkv, hd, topk, local, init;
} sel_cfg;

static int set_diff(const int32_t *a, int na, const int32_t *b, int nb) {
    int i = 0, j = 0, d = 0;
    for (; i < na; i++) {
        while (j < nb && b[j] < a[i]) j++;
        if (j >= nb || b[j] != a[i]) d++;
    }
    return d;
}

/* 1: the four kernels of the chain (plan.grid = 0) with the clustered attention kernel where the plan has one
 * (opt-in, SALA_SDEC_CLUSTER=1, set here; sm_90+), 2: the four kernels with k_sdec_attn (plan.attn_cl = 0), 0: the
 * fused kernel, which an H100 must be planned */
static int sdec_four;

/* steps at positions P and P + 1 (rows P, P + 1 appended by the chain) in a session of n_ctx tokens */
static void sdec_case(const sel_cfg *c, int64_t P, int64_t n_ctx) {
    infllm_dims d;
    d.nh = c->nh, d.nkv = c->nkv, d.hd = c->hd, d.l1 = 32, d.s1 = 16, d.l2 = 128, d.s2 = 64, d.block = 64;
    d.init_blocks = c->init, d.local_blocks = c->local, d.budget = c->topk + c->local;
    d.scale = (float)(1.0 / sqrt((double)c->hd));
    cu_infllm_dims gd;
    gd.nh = d.nh, gd.nkv = d.nkv, gd.hd = d.hd, gd.l1 = d.l1, gd.s1 = d.s1, gd.l2 = d.l2, gd.s2 = d.s2;
    gd.block = d.block, gd.init_blocks = d.init_blocks, gd.local_blocks = d.local_blocks, gd.budget = d.budget;
    gd.scale = d.scale, gd.bf16 = 1;
    cu_sdec_plan plan;
    int e = cu_sdec_plan_make(&plan, &gd, n_ctx);
    CHECK(e == 0, "%s: plan: %s", c->name, cu_error_str(e));
    if (e) return;
    if (sdec_four) plan.grid = 0;
    else CHECK(plan.grid > 0, "%s: no fused plan (the GPU cannot hold one CTA per SM)", c->name);
    if (sdec_four == 2) plan.attn_cl = 0;
    const int64_t kvrow = (int64_t)d.nkv * d.hd, qd = (int64_t)d.nh * d.hd, rows = P + 2, kn = rows * kvrow;
    float *K = malloc(sizeof(float) * (size_t)kn), *V = malloc(sizeof(float) * (size_t)kn);
    void *dK, *dV;
    make_cache(K, V, kn, 1, &dK, &dV);
    cu_memset((char *)dK + 2 * P * kvrow, 0xff, 2 * (size_t)(2 * kvrow)); /* rows P, P+1: the chain appends them */
    cu_memset((char *)dV + 2 * P * kvrow, 0xff, 2 * (size_t)(2 * kvrow));
    const int64_t n1max = infllm_n_windows(rows, d.l1, d.s1), n2max = infllm_n_windows(rows, d.l2, d.s2);
    float *C1 = malloc(sizeof(float) * (size_t)((n1max + 1) * kvrow)), *C2 = malloc(sizeof(float) * (size_t)((n2max + 1) * kvrow));
    op_compress_keys(C1, K, 0, n1max, d.l1, d.s1, d.nkv, d.hd);
    op_compress_keys(C2, K, 0, n2max, d.l2, d.s2, d.nkv, d.hd);
    for (int64_t i = 0; i < n1max * kvrow; i++) C1[i] = bf(C1[i]);
    for (int64_t i = 0; i < n2max * kvrow; i++) C2[i] = bf(C2[i]);
    void *dC1 = dnew(2 * (size_t)((n1max + 1) * kvrow)), *dC2 = dnew(2 * (size_t)((n2max + 1) * kvrow));
    /* the windows complete before row P, as a session has them */
    CHECK(cu_infllm_compress(NULL, dC1, dK, CU_BF16, 0, infllm_n_windows(P, d.l1, d.s1), d.l1, d.s1, d.nkv, d.hd) == 0);
    CHECK(cu_infllm_compress(NULL, dC2, dK, CU_BF16, 0, infllm_n_windows(P, d.l2, d.s2), d.l2, d.s2, d.nkv, d.hd) == 0);
    void *work = cu_malloc((size_t)plan.work_bytes);
    cu_memset(work, 0, (size_t)plan.work_bytes);
    int64_t *dpos = dnew(sizeof(int64_t));
    float *dqkv = dnew(sizeof(float) * (size_t)(qd + 2 * kvrow)), *dout = dnew(sizeof(float) * (size_t)qd);
    float *qkv = malloc(sizeof(float) * (size_t)(qd + 2 * kvrow)), *go = malloc(sizeof(float) * (size_t)qd);
    float *ro = malloc(sizeof(float) * (size_t)qd), *work_c = malloc(sizeof(float) * (size_t)infllm_select_work_floats(&d, rows));
    int32_t *gb = malloc(sizeof(int32_t) * (size_t)(d.nkv * d.budget)), *gn = malloc(sizeof(int32_t) * (size_t)d.nkv);
    int32_t *cb = malloc(sizeof(int32_t) * (size_t)(d.nkv * d.budget));
    int *cn = malloc(sizeof(int) * (size_t)d.nkv);
    const int32_t *dblk, *dnsel;
    cu_sdec_blocks(&gd, &plan, work, &dblk, &dnsel);
    int flips = 0;
    for (int64_t pos = P; pos <= P + 1; pos++) {
        const int64_t kv = pos + 1, n1 = infllm_n_windows(kv, d.l1, d.s1), n2 = infllm_n_windows(kv, d.l2, d.s2);
        fill(qkv, qd, 3.0f);
        for (int64_t i = 0; i < qd; i++) qkv[i] = bf(qkv[i]);
        memcpy(qkv + qd, K + pos * kvrow, sizeof(float) * (size_t)kvrow);
        memcpy(qkv + qd + kvrow, V + pos * kvrow, sizeof(float) * (size_t)kvrow);
        cu_h2d(dqkv, qkv, sizeof(float) * (size_t)(qd + 2 * kvrow));
        cu_h2d(dpos, &pos, sizeof pos);
        e = cu_sdec_step(NULL, dout, dqkv, dqkv + qd, dqkv + qd + kvrow, dK, dV, dC1, dC2, dpos, &gd, &plan, work);
        CHECK(e == 0, "cu_sdec_step: %s", cu_error_str(e));
        char what[160];
        snprintf(what, sizeof what, "%s decode pos %lld (n_ctx %lld, %s)", c->name, (long long)pos, (long long)n_ctx,
                 plan.grid ? "fused" : plan.attn_cl ? "four kernels, clustered attention" : "four kernels");
        /* caches: the appended row and every compressed key so far */
        uint16_t *raw = malloc(2 * (size_t)((n1 + 1) * kvrow));
        float *g = malloc(sizeof(float) * (size_t)((n1 + 1) * kvrow));
        CHECK(down(raw, (char *)dK + 2 * pos * kvrow, 2 * (size_t)kvrow) == 0);
        int bad = 0;
        for (int64_t i = 0; i < kvrow; i++) bad += bf16_to_f32(raw[i]) != K[pos * kvrow + i];
        CHECK(down(raw, (char *)dV + 2 * pos * kvrow, 2 * (size_t)kvrow) == 0);
        for (int64_t i = 0; i < kvrow; i++) bad += bf16_to_f32(raw[i]) != V[pos * kvrow + i];
        CHECK(bad == 0, "%s: appended K/V row differs in %d places", what, bad);
        CHECK(down(raw, dC1, 2 * (size_t)(n1 * kvrow)) == 0);
        for (int64_t i = 0; i < n1 * kvrow; i++) g[i] = bf16_to_f32(raw[i]);
        CHECK(close_to("  C1", g, C1, n1 * kvrow, NULL, 0, 1e-6), "%s C1", what);
        CHECK(down(raw, dC2, 2 * (size_t)(n2 * kvrow)) == 0);
        for (int64_t i = 0; i < n2 * kvrow; i++) g[i] = bf16_to_f32(raw[i]);
        CHECK(close_to("  C2", g, C2, n2 * kvrow, NULL, 0, 1e-6), "%s C2", what);
        free(raw), free(g);
        /* selection */
        CHECK(down(gb, dblk, sizeof(int32_t) * (size_t)(d.nkv * d.budget)) == 0);
        CHECK(down(gn, dnsel, sizeof(int32_t) * (size_t)d.nkv) == 0);
        CHECK(down(go, dout, sizeof(float) * (size_t)qd) == 0);
        infllm_select_row(&d, qkv, C1, n1, C2, n2, pos, kv, 1, cb, cn, work_c);
        int same = 1;
        for (int gi = 0; gi < d.nkv; gi++) {
            const int32_t *gg = gb + gi * d.budget, *cc = cb + gi * d.budget;
            int ng = gn[gi], sorted = 1;
            for (int i = 1; i < ng; i++) sorted &= gg[i - 1] < gg[i];
            CHECK(sorted, "%s group %d: blocks not ascending", what, gi);
            if (ng == cn[gi] && !memcmp(gg, cc, sizeof(int32_t) * (size_t)ng)) continue;
            same = 0;
            int d1 = set_diff(gg, ng, cc, cn[gi]), d2 = set_diff(cc, cn[gi], gg, ng);
            if (ng == cn[gi] && d1 == 1 && d2 == 1) {
                flips++;
            } else {
                CHECK(0, "%s group %d: gpu %d blocks, cpu %d (%d / %d differ)", what, gi, ng, cn[gi], d1, d2);
                for (int i = 0; i < ng && i < 16; i++) fprintf(stderr, " %d/%d", gg[i], i < cn[gi] ? cc[i] : -1);
                fprintf(stderr, "\n");
            }
        }
        double worst = -1;
        if (same) {
            op_attention_blocks_row(ro, qkv, K, V, &d, pos, cb, cn);
            worst = 0;
            for (int64_t i = 0; i < qd; i++) {
                double dd = fabs((double)go[i] - ro[i]);
                worst = fmax(worst, dd == dd ? dd : 1e9);
            }
            CHECK(worst <= 5e-3, "%s: attention max|d| %.3g", what, worst);
        }
        printf("   %s: %d / %d blocks, attention max|d| %.3g%s\n", what, gn[0], cn[0], worst,
               same ? "" : " (selection differs: attention not compared)");
    }
    CHECK(flips <= 1, "%s: %d near-tie flips", c->name, flips);
    cu_free(dK), cu_free(dV), cu_free(dC1), cu_free(dC2), cu_free(work), cu_free(dpos), cu_free(dqkv), cu_free(dout);
    free(K), free(V), free(C1), free(C2), free(qkv), free(go), free(ro), free(work_c), free(gb), free(gn), free(cb);
    free(cn);
}

static const sel_cfg tiny_sparse = {"tiny-sparse", 16, 1, 16, 4, 4, 1};
static const sel_cfg tiny_gqa2 = {"tiny-gqa2", 32, 2, 16, 8, 8, 1};
static const sel_cfg released = {"released", 32, 2, 128, 64, 32, 1};

static void sparse_decode_cases(void) {
    sdec_case(&tiny_sparse, 1023, 1100);    /* pos 1023: a level-1 and a level-2 window end at the first step */
    sdec_case(&tiny_sparse, 1600, 20000);   /* most CTAs past the context: early exits */
    sdec_case(&tiny_gqa2, 2163, 2200);
    sdec_case(&released, 300, 400);         /* fewer blocks than the budget: every block */
    sdec_case(&released, 19999, 20100);
    sdec_case(&released, 70015, 1 << 20);   /* the grids of a 1M session; both windows end at pos + 1 */
    sdec_case(&released, 150000, 160000);   /* several stage-1 CTAs with candidates: the bounded rank select */
    sdec_case(&released, 64 * 9400 - 1, 1 << 20); /* 37 CTAs with candidates of 64: the selection's one-round path */
    sdec_case(&released, 64 * 266 + 5, 20000); /* two CTAs, the second with 11 blocks: too few for the bound */
}

static void test_sparse_decode(void) { /* the four kernels, then the fused one (opt-in, SALA_SDEC_FUSED=1) */
    const char *was = getenv("SALA_SDEC_FUSED"), *wcl = getenv("SALA_SDEC_CLUSTER");
    char keep[8] = "", keepcl[8] = "";
    if (was) snprintf(keep, sizeof keep, "%s", was);
    if (wcl) snprintf(keepcl, sizeof keepcl, "%s", wcl);
    setenv("SALA_SDEC_CLUSTER", "1", 1);
    sdec_four = 1;
    sparse_decode_cases();
    if (wcl) setenv("SALA_SDEC_CLUSTER", keepcl, 1);
    else unsetenv("SALA_SDEC_CLUSTER");
    sdec_four = 2;
    sparse_decode_cases();
    setenv("SALA_SDEC_FUSED", "1", 1);
    sdec_four = 0;
    sparse_decode_cases();
    if (was) setenv("SALA_SDEC_FUSED", keep, 1);
    else unsetenv("SALA_SDEC_FUSED");
}

int main(void) {
    if (!gpu_ready()) {
        printf("SKIP (needs SALA_TEST_CUDA=1 and a GPU)\n0 passed, 0 failed\n");
        return 0;
    }
    printf("GPU: %s\n", cu_device_name(0));
    TEST_RUN(test_gemv);
    TEST_RUN(test_lightning_fused);
    TEST_RUN(test_sparse_decode);
    TEST_END();
}
#endif
