/* util.h — errors, checked allocation, timing, small file helpers shared by the whole engine.
 *
 * Two error channels: sala_set_error() records an expected failure (bad file, bad config, bad request)
 * as a status with a plain-language message for the caller; SALA_CHECK() is for bugs and impossible
 * states: it prints the expression and file:line and aborts. */
#ifndef SALA_UTIL_H
#define SALA_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "sala.h"

#if defined(__GNUC__)
#define SALA_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define SALA_PRINTF(a, b)
#endif

/* Record a failure for sala_last_error() and return s, so callers can write
 * `return sala_set_error(SALA_ERR_IO, "cannot open %s: %s", path, strerror(errno));` */
sala_status sala_set_error(sala_status s, const char *fmt, ...) SALA_PRINTF(2, 3);
void sala_clear_error(void);

#define SALA_CHECK(cond)                                                                     \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            fprintf(stderr, "sala: internal error: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
            abort();                                                                         \
        }                                                                                    \
    } while (0)

/* Allocation that aborts with a message on failure: for small, bounded allocations only. Big pools
 * (weights, caches, activations) use plain malloc and report SALA_ERR_NOMEM. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t sz);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);

double sala_time(void); /* seconds, monotonic */

/* A growable NUL-terminated string: zero-initialise, append, free(b.p) when done. */
typedef struct {
    char *p;
    size_t n, cap;
} sala_buf;
void sala_buf_add(sala_buf *b, const char *s, size_t n);
void sala_buf_puts(sala_buf *b, const char *s);

/* Whole file into a NUL-terminated buffer (len excludes the NUL). */
sala_status sala_read_file(const char *path, char **out, size_t *len);
/* path join into a malloc'd string */
char *sala_path_join(const char *dir, const char *name);
int sala_file_exists(const char *path);

/* Human-readable sizes: "18.95 GB (17.65 GiB)" style into buf. */
const char *sala_fmt_bytes(int64_t n, char *buf, size_t cap);

/* Number of threads the fast paths use (OpenMP); set by the model params, 0 = all cores. Every parallel
 * region names it (num_threads), because omp_set_num_threads() only binds the calling thread and the
 * server runs the engine from worker threads. */
void sala_set_threads(int n);
int sala_get_threads(void);

#endif
