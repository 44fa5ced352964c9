/* test_cuda_ceilings.c — the card's measured limits (src/cuda/ceilings.cu, `sala bench --ceilings`). Every
 * measurement checks its own kernel's result (the sums of the buffers read, GEMM outputs against the CPU,
 * the exp chains' fixed point) and fails on a mismatch; here each figure must also be a finite positive
 * rate, and an L2 read must beat an HBM read (on every card this engine targets the L2 delivers a multiple
 * of the memory's bandwidth). Prints the figures. Runs only with SALA_TEST_CUDA=1 and a GPU. */
#ifndef SALA_CUDA
#include <stdio.h>
int main(void) {
    printf("SKIP (built without CUDA)\n0 passed, 0 failed\n");
    return 0;
}
#else
#include <math.h>
#include <stdlib.h>

#include "cuda/cuda_extra.h"
#include "test.h"
#include "cuda_test.h"

static void test_ceilings(void) {
    cu_ceilings c;
    int e = cu_measure_ceilings(&c);
    CHECK(e == 0, "%s", cu_error_str(e));
    if (e) return;
    printf("  %s: GEMM %.1f TFLOP/s (sustained %.1f), HBM read %.3f TB/s, copy %.3f TB/s, L2 read %.3f TB/s (%lld MiB of %lld), "
           "ex2 %.3f T/s\n",
           cu_device_name(0), c.gemm_tflops, c.gemm_sustained_tflops, c.hbm_read_tbs, c.hbm_copy_tbs, c.l2_read_tbs,
           (long long)(c.l2_buffer_bytes >> 20), (long long)(c.l2_bytes >> 20), c.ex2_per_s / 1e12);
    const double v[6] = {c.gemm_tflops, c.gemm_sustained_tflops, c.hbm_read_tbs, c.hbm_copy_tbs, c.l2_read_tbs,
                         c.ex2_per_s};
    for (int i = 0; i < 6; i++) CHECK(isfinite(v[i]) && v[i] > 0, "figure %d: %g", i, v[i]);
    CHECK(c.l2_bytes > 0 && c.l2_buffer_bytes > 0 && c.l2_buffer_bytes <= c.l2_bytes);
    CHECK(c.gemm_sustained_tflops <= 1.05 * c.gemm_tflops, "sustained %.1f, fastest %.1f", c.gemm_sustained_tflops,
          c.gemm_tflops); /* a mean cannot beat the fastest run by more than timing noise */
    CHECK(c.l2_read_tbs > c.hbm_read_tbs, "L2 %.3f TB/s, HBM %.3f TB/s", c.l2_read_tbs, c.hbm_read_tbs);
}

int main(void) {
    if (!gpu_ready()) {
        printf("SKIP (needs SALA_TEST_CUDA=1 and a GPU)\n0 passed, 0 failed\n");
        return 0;
    }
    TEST_RUN(test_ceilings);
    TEST_END();
}
#endif
