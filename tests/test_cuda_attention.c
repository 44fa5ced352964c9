/* test_cuda_attention.c — dense causal GQA attention on the GPU (the sparse layers below dense_len)
 * against op_attention_dense_ref: prefill chunks at position 0 and later, decode steps (which split the
 * keys across blocks), GQA group sizes 1 to 16, fp32 and bf16 caches (the reference reads the same
 * bf16-rounded K/V).
 *
 * Tolerances. fp32 cache (exact mode, FMA kernels): |Δ| ≤ 2e-5 + 1e-4·|ref| — outputs are convex
 * combinations of V entries in [-1, 1] and fp32 online softmax differs from the double reference by
 * ~1e-6. bf16 cache (tensor cores): q is pre-rounded to bf16 here so both sides see the same operands,
 * but the kernel rounds the probabilities to bf16 for P·V (relative 2⁻⁹ each), so |Δ| ≤ 5e-3 (a wrong key
 * or mask moves outputs by O(0.1)). Runs only with SALA_TEST_CUDA=1. */
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


/* T query rows at positions pos0.. over a cache of pos0 + T keys; q in a strided buffer */
static void dense_case(int nh, int nkv, int hd, int64_t T, int64_t pos0, int bf16) {
    int64_t N = pos0 + T, qd = (int64_t)nh * hd, ldq = qd + 2 * (int64_t)nkv * hd, ldo = qd + 4;
    int64_t kn = N * nkv * hd;
    float *K = malloc(sizeof(float) * (size_t)kn), *V = malloc(sizeof(float) * (size_t)kn);
    void *dK, *dV;
    make_cache(K, V, kn, bf16, &dK, &dV);
    float *qb = malloc(sizeof(float) * (size_t)(T * ldq)), *q = malloc(sizeof(float) * (size_t)(T * qd));
    fill(qb, T * ldq, 2.0f);
    if (bf16)
        for (int64_t i = 0; i < T * ldq; i++) qb[i] = bf(qb[i]);
    for (int64_t t = 0; t < T; t++) memcpy(q + t * qd, qb + t * ldq, sizeof(float) * (size_t)qd);
    float scale = (float)(1.0 / sqrt((double)hd));
    float *ref = malloc(sizeof(float) * (size_t)(T * qd));
    op_attention_dense_ref(ref, q, K, V, T, pos0, nh, nkv, hd, scale);
    float *dq = up(qb, sizeof(float) * (size_t)(T * ldq)), *dout = dnew(sizeof(float) * (size_t)(T * ldo));
    int64_t sf = 1 << 20;
    float *scr = cu_malloc(sizeof(float) * (size_t)sf);
    int e = cu_attn_dense(NULL, dout, ldo, dq, ldq, dK, dV, bf16 ? CU_BF16 : CU_F32, T, pos0, nh, nkv, hd, scale, scr, sf);
    CHECK(e == 0, "cu_attn_dense: %s", cu_error_str(e));
    float *got = malloc(sizeof(float) * (size_t)(T * ldo)), *gp = malloc(sizeof(float) * (size_t)(T * qd));
    CHECK(down(got, dout, sizeof(float) * (size_t)(T * ldo)) == 0);
    for (int64_t t = 0; t < T; t++) memcpy(gp + t * qd, got + t * ldo, sizeof(float) * (size_t)qd);
    char what[112];
    snprintf(what, sizeof what, "dense nh=%d nkv=%d hd=%d T=%lld pos0=%lld %s", nh, nkv, hd, (long long)T,
             (long long)pos0, bf16 ? "bf16" : "fp32");
    CHECK(close_to(what, gp, ref, T * qd, NULL, bf16 ? 5e-3 : 2e-5, bf16 ? 0 : 1e-4), "%s", what);
    cu_free(dK), cu_free(dV), cu_free(dq), cu_free(dout), cu_free(scr);
    free(K), free(V), free(qb), free(q), free(ref), free(got), free(gp);
}

static void test_attn_dense(void) {
    for (int bf = 0; bf < 2; bf++) {
        dense_case(16, 1, 16, 77, 0, bf);     /* tiny-dense shape, prefill */
        dense_case(16, 1, 16, 50, 130, bf);   /* a later chunk */
        dense_case(16, 1, 16, 1, 2999, bf);   /* decode: split over the keys */
        dense_case(32, 2, 128, 129, 0, bf);   /* the released shape */
        dense_case(32, 2, 128, 1, 5000, bf);  /* its decode */
        dense_case(4, 4, 64, 33, 17, bf);     /* G = 1 */
        dense_case(8, 2, 32, 3, 700, bf);     /* few rows, G = 4 */
    }
}

int main(void) {
    if (!gpu_ready()) {
        printf("SKIP (needs SALA_TEST_CUDA=1 and a GPU)\n0 passed, 0 failed\n");
        return 0;
    }
    TEST_RUN(test_attn_dense);
    TEST_END();
}
#endif
