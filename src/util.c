/* util.c — see util.h. */
#include "util.h"

#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static _Thread_local char g_err[1024];

const char *sala_status_str(sala_status s) {
    switch (s) {
    case SALA_OK: return "ok";
    case SALA_ERR_IO: return "i/o error";
    case SALA_ERR_FORMAT: return "malformed file";
    case SALA_ERR_CONFIG: return "unsupported or inconsistent model config";
    case SALA_ERR_UNSUPPORTED: return "not supported by this build";
    case SALA_ERR_NOMEM: return "out of memory";
    case SALA_ERR_ARG: return "invalid argument";
    case SALA_ERR_CONTEXT: return "context length exceeded";
    case SALA_ERR_DEVICE: return "GPU error";
    case SALA_ERR_INTERRUPTED: return "interrupted";
    }
    return "unknown status";
}

const char *sala_last_error(void) { return g_err; }

sala_status sala_set_error(sala_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_err, sizeof g_err, fmt, ap);
    va_end(ap);
    return s;
}

void sala_clear_error(void) { g_err[0] = 0; }

static void oom(size_t n) {
    fprintf(stderr, "sala: out of memory allocating %zu bytes\n", n);
    abort();
}
void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) oom(n);
    return p;
}
void *xcalloc(size_t n, size_t sz) {
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    if (!p) oom(n * sz);
    return p;
}
void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) oom(n);
    return q;
}
char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = xmalloc(n);
    memcpy(p, s, n);
    return p;
}

void sala_buf_add(sala_buf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 256;
        while (c < b->n + n + 1) c *= 2;
        b->p = xrealloc(b->p, c);
        b->cap = c;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

void sala_buf_puts(sala_buf *b, const char *s) { sala_buf_add(b, s, strlen(s)); }

double sala_time(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

sala_status sala_read_file(const char *path, char **out, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return sala_set_error(SALA_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    if (!buf) {
        fclose(f);
        return sala_set_error(SALA_ERR_NOMEM, "out of memory reading %s", path);
    }
    for (;;) {
        if (n + 1 >= cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                fclose(f);
                return sala_set_error(SALA_ERR_NOMEM, "out of memory reading %s", path);
            }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - 1 - n, f);
        n += r;
        if (r == 0) break;
    }
    int err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        return sala_set_error(SALA_ERR_IO, "read error on %s", path);
    }
    buf[n] = 0;
    *out = buf;
    if (len) *len = n;
    return SALA_OK;
}

char *sala_path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = xmalloc(a + b + 2);
    memcpy(p, dir, a);
    size_t k = a;
    if (a && dir[a - 1] != '/') p[k++] = '/';
    memcpy(p + k, name, b + 1);
    return p;
}

int sala_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

const char *sala_fmt_bytes(int64_t n, char *buf, size_t cap) {
    double d = (double)n;
    if (n >= (int64_t)1 << 30)
        snprintf(buf, cap, "%.2f GB (%.2f GiB)", d / 1e9, d / (1 << 30));
    else if (n >= (int64_t)1 << 20)
        snprintf(buf, cap, "%.2f MB (%.2f MiB)", d / 1e6, d / (1 << 20));
    else if (n >= 1024)
        snprintf(buf, cap, "%.1f KB (%.1f KiB)", d / 1e3, d / 1024);
    else
        snprintf(buf, cap, "%lld B", (long long)n);
    return buf;
}

static int g_threads;
void sala_set_threads(int n) {
    g_threads = n;
#ifdef _OPENMP
    if (n > 0) omp_set_num_threads(n);
#endif
}
int sala_get_threads(void) {
#ifdef _OPENMP
    return g_threads > 0 ? g_threads : omp_get_max_threads();
#else
    return 1;
#endif
}
