/* progress.c — the stderr progress line for long prefills (tokens done, tokens/s, time left). */
#include <stdio.h>

#include "sala.h"
#include "util.h"

int sala_progress_stderr(void *ud, int64_t done, int64_t total) {
    sala_progress_state *p = ud;
    double now = sala_time();
    if (p->total != total || done <= 0 || p->t0 == 0) { /* a new call */
        if (p->t0 == 0 || p->total != total) {
            p->t0 = now;
            p->last = 0;
            p->total = total;
        }
    }
    int64_t min_tokens = p->min_tokens > 0 ? p->min_tokens : 2048;
    if (total < min_tokens) return 0;
    int end = done >= total;
    if (!end && now - p->last < 0.5) return 0;
    p->last = now;
    double el = now - p->t0, rate = el > 0 ? done / el : 0, left = rate > 0 ? (total - done) / rate : 0;
    fprintf(stderr, "\r%s %lld/%lld tokens (%.1f%%), %.0f tok/s, %s %.0fs%s", p->label ? p->label : "prefill",
            (long long)done, (long long)total, 100.0 * done / total, rate, end ? "took" : "left", end ? el : left,
            end ? "\n" : "   ");
    fflush(stderr);
    if (end) p->t0 = 0;
    return 0;
}
