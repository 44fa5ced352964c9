/* test_cuda_chunk.c — the GPU session's prefill chunk when the caller leaves it to the engine
 * (cuda_session_new with chunk ≤ 0): the largest of 8192, 4096, ..., 512 whose session fits the free memory
 * and the memory limit, and never more than the context. On the released 9B shape with synthetic weights
 * (cuda_model_new_synth, no checkpoint): a 1M-token session takes 8192 with no limit; a limit equal to the
 * plan at 4096 (or just over it) gives 4096, at 1024 gives 1024; a limit under the plan at 512 is refused
 * with SALA_ERR_NOMEM; a 3000-token session gets a 3000-token chunk; an explicit chunk is kept. Runs only
 * with SALA_TEST_CUDA=1 and a GPU with 32 GiB free (17.7 GiB of weights and a 1M-token session); skips
 * on smaller cards. */
#ifndef SALA_CUDA
#include <stdio.h>
int main(void) {
    printf("SKIP (built without CUDA)\n0 passed, 0 failed\n");
    return 0;
}
#else
#include <stdlib.h>

#include "cuda/cuda_extra.h"
#include "sala.h"
#include "test.h"
#include "cuda_test.h"

static cuda_model *cm;

/* the chunk a session of n_ctx tokens takes (chunk 0 = the engine's choice), or −1 when it is refused */
static int chunk_of(int64_t n_ctx, int chunk, int64_t mem_limit, sala_status *st) {
    cuda_session *s = NULL;
    *st = cuda_session_new(cm, n_ctx, chunk, mem_limit, &s);
    if (*st) return -1;
    int c = cuda_session_chunk(s);
    cuda_session_free(s);
    return c;
}

static void test_default_chunk(void) {
    const int64_t N = 1 << 20;
    sala_status st;
    int c = chunk_of(N, 0, 0, &st);
    CHECK(c == 8192, "1M, no limit: chunk %d (%s)", c, st ? sala_last_error() : "");
    const int64_t p4096 = cuda_model_plan(cm, N, 4096).total, p1024 = cuda_model_plan(cm, N, 1024).total;
    const int64_t p512 = cuda_model_plan(cm, N, 512).total;
    CHECK(cuda_model_plan(cm, N, 8192).total > p4096 && p4096 > p1024 && p1024 > p512, "plans grow with the chunk");
    c = chunk_of(N, 0, p4096, &st);
    CHECK(c == 4096, "limit = plan at 4096: chunk %d", c);
    c = chunk_of(N, 0, p4096 + 1, &st);
    CHECK(c == 4096, "limit just over the plan at 4096: chunk %d", c);
    c = chunk_of(N, 0, p1024, &st);
    CHECK(c == 1024, "limit = plan at 1024: chunk %d", c);
    c = chunk_of(N, 0, p512 - 1, &st);
    CHECK(c == -1 && st == SALA_ERR_NOMEM, "limit under the plan at 512: refused (%d, status %d)", c, (int)st);
    c = chunk_of(3000, 0, 0, &st);
    CHECK(c == 3000, "3000-token context: chunk %d", c);
    c = chunk_of(N, 2048, 0, &st);
    CHECK(c == 2048, "explicit chunk kept: %d", c);
}

int main(void) {
    if (!gpu_ready()) {
        printf("SKIP (needs SALA_TEST_CUDA=1 and a GPU)\n0 passed, 0 failed\n");
        return 0;
    }
    int64_t fr = 0, tot = 0;
    cu_mem_info(&fr, &tot);
    if (fr < (32ll << 30)) { /* 17.7 GiB of weights + a 1M-token session with 8192-token chunks ≈ 29 GiB */
        printf("SKIP (needs 32 GiB free on the GPU, %.1f GiB are)\n0 passed, 0 failed\n", fr / 1073741824.0);
        return 0;
    }
    sala_config cfg;
    config_defaults(&cfg);
    cfg.max_pos = 1 << 30;
    sala_model_params mp = sala_model_default_params();
    mp.device = SALA_DEVICE_CUDA;
    mp.precision = SALA_PRECISION_BF16;
    if (cuda_model_new_synth(&cfg, &mp, 7, &cm)) {
        printf("FAIL: synthetic model: %s\n0 passed, 1 failed\n", sala_last_error());
        return 1;
    }
    TEST_RUN(test_default_chunk);
    cuda_model_free(cm);
    TEST_END();
}
#endif
