/* test_cuda_graph.c — the CUDA decode step replayed from CUDA graphs gives the same logits, bit for bit, as
 * the step launched op by op (SALA_CUDA_GRAPH=0), on golden decode cases of the sparse configs: a prefill
 * of the prompt, then one call per token, crossing dense_len (the compressed caches are first built on a
 * decode step) — in fp32 and bf16 mode.
 *
 * Runs only with SALA_TEST_CUDA=1 on a machine with a GPU (make test-cuda); otherwise prints SKIP. */
#ifndef SALA_CUDA
#include <stdio.h>
int main(void) {
    printf("SKIP (built without CUDA)\n0 passed, 0 failed\n");
    return 0;
}
#else
#include <stdint.h>

#include "cuda/kernels.h"
#include "model/safetensors.h"
#include "sala.h"
#include "util.h"
#include "test.h"

/* all T rows' logits [T, V] of the case's tokens: prefill of P, then one call per token */
static int run_ids(sala_model *m, const int32_t *ids, int64_t T, int64_t P, int64_t V, float *out) {
    sala_session_params sp = sala_session_default_params();
    sp.chunk = 4096;
    sp.n_ctx = T + 8;
    sala_session *s;
    if (sala_session_new(m, &sp, &s)) {
        fprintf(stderr, "session: %s\n", sala_last_error());
        return 0;
    }
    int ok = sala_session_eval(s, ids, P, SALA_LOGITS_ALL, out) == SALA_OK;
    for (int64_t t = P; ok && t < T; t++)
        ok = sala_session_eval(s, ids + t, 1, SALA_LOGITS_LAST, out + t * V) == SALA_OK;
    if (!ok) fprintf(stderr, "eval: %s\n", sala_last_error());
    sala_session_free(s);
    return ok;
}

static void graph_case(const char *cfg, const char *name, sala_precision prec) {
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/golden/%s", test_data_dir(), cfg);
    snprintf(path, sizeof path, "%s/case_%s.safetensors", dir, name);
    st_file f;
    int ok = st_open(&f, path) == SALA_OK;
    CHECK(ok, "open %s", path);
    if (!ok) return;
    const st_tensor *ti = st_find(&f, "input_ids"), *tp = st_find(&f, "prompt_len"), *tl = st_find(&f, "logits");
    CHECK(ti && tp && tl, "%s: tensors", path);
    if (!ti || !tp || !tl) {
        st_close(&f);
        return;
    }
    int64_t T = ti->shape[0], P = *(const int32_t *)tp->data, V = tl->shape[1];
    int32_t *ids = malloc((size_t)ti->nbytes);
    memcpy(ids, ti->data, (size_t)ti->nbytes);
    st_close(&f);
    sala_model_params mp = sala_model_default_params();
    mp.device = SALA_DEVICE_CUDA;
    mp.precision = prec;
    sala_model *m;
    ok = sala_model_load(dir, &mp, &m) == SALA_OK;
    CHECK(ok, "load %s: %s", dir, sala_last_error());
    if (ok) {
        float *a = calloc((size_t)(T * V), sizeof(float)), *b = calloc((size_t)(T * V), sizeof(float));
        setenv("SALA_CUDA_GRAPH", "0", 1);
        int oa = run_ids(m, ids, T, P, V, a);
        setenv("SALA_CUDA_GRAPH", "1", 1);
        int ob = run_ids(m, ids, T, P, V, b);
        CHECK(oa && ob, "%s/%s runs", cfg, name);
        if (oa && ob) {
            int64_t diff = 0;
            double mx = 0;
            for (int64_t i = P * V; i < T * V; i++)
                if (memcmp(&a[i], &b[i], sizeof(float))) {
                    diff++;
                    double d = fabs((double)a[i] - b[i]);
                    if (d > mx) mx = d;
                }
            printf("   %-12s %-16s %s: %lld decode rows, %lld logits differ (max %.3e)\n", cfg, name,
                   prec == SALA_PRECISION_BF16 ? "bf16" : "fp32", (long long)(T - P), (long long)diff, mx);
            CHECK(diff == 0, "%s/%s: graph vs no-graph decode logits differ in %lld places (max %.3e)", cfg, name,
                  (long long)diff, mx);
        }
        free(a);
        free(b);
        sala_model_free(m);
    }
    free(ids);
}

static void test_graph_decode(void) {
    graph_case("tiny-sparse", "decode_900_300", SALA_PRECISION_FP32);
    graph_case("tiny-gqa2", "decode_1900_200", SALA_PRECISION_FP32);
    graph_case("tiny-sparse", "decode_900_300", SALA_PRECISION_BF16);
    graph_case("tiny-gqa2", "decode_2100_64", SALA_PRECISION_BF16);
}

int main(void) {
    const char *e = getenv("SALA_TEST_CUDA");
    if (!(e && *e == '1' && cu_device_count() > 0)) {
        printf("SKIP (needs SALA_TEST_CUDA=1 and a GPU)\n0 passed, 0 failed\n");
        return 0;
    }
    TEST_RUN(test_graph_decode);
    TEST_END();
}
#endif
