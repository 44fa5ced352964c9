/* Minimal test harness shared by every tests/test_*.c program.
 *
 * A test is a function; TEST_RUN() counts it as passed when none of its CHECKs failed. Every program ends
 * with TEST_END(), which prints "N passed, N failed" (the line tests/run.sh adds up) and returns non-zero
 * on any failure. Data files are found under $SALA_TEST_DATA (default tests/data, relative to the repo). */
#ifndef SALA_TEST_H
#define SALA_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_passed_, test_failed_, test_cur_failed_;

#define CHECK(cond, ...)                                                                 \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            test_cur_failed_++;                                                          \
            fprintf(stderr, "  FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);            \
            fprintf(stderr, " " __VA_ARGS__);                                            \
            fputc('\n', stderr);                                                         \
        }                                                                                \
    } while (0)

#define TEST_RUN(fn)                                                                     \
    do {                                                                                 \
        test_cur_failed_ = 0;                                                            \
        fn();                                                                            \
        if (test_cur_failed_) {                                                          \
            test_failed_++;                                                              \
            printf("FAIL %s\n", #fn);                                                    \
        } else {                                                                         \
            test_passed_++;                                                              \
            printf("ok   %s\n", #fn);                                                    \
        }                                                                                \
        fflush(stdout);                                                                  \
    } while (0)

#define TEST_END()                                                                       \
    do {                                                                                 \
        printf("%d passed, %d failed\n", test_passed_, test_failed_);                    \
        return test_failed_ ? 1 : 0;                                                     \
    } while (0)

static inline const char *test_data_dir(void) {
    const char *d = getenv("SALA_TEST_DATA");
    return d && *d ? d : "tests/data";
}

/* path under the test data folder, in a static rotating buffer */
static inline const char *test_path(const char *rel) {
    static char buf[8][1024];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", test_data_dir(), rel);
    return buf[k];
}

#endif
