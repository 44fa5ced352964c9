/* cli_common.h — option helpers shared by the engine-facing commands (logits, info). */
#ifndef SALA_CLI_COMMON_H
#define SALA_CLI_COMMON_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* parse a non-negative integer option value with an optional k/m/g (x1024) or K/M/G suffix; -1 on error */
static inline int64_t cli_parse_count(const char *s) {
    if (!s || !*s) return -1;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || v < 0 || end == s) return -1;
    int64_t mul = 1;
    if (*end == 'k' || *end == 'K') mul = 1024, end++;
    else if (*end == 'm' || *end == 'M') mul = 1024 * 1024, end++;
    else if (*end == 'g' || *end == 'G') mul = 1024ll * 1024 * 1024, end++;
    if (*end) return -1;
    if (v > INT64_MAX / mul) return -1;
    return v * mul;
}

/* fetch the value of option argv[*i]; prints an error and returns NULL if missing */
static inline const char *cli_value(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) {
        fprintf(stderr, "sala %s: option %s needs a value\n", argv[0], argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

#endif
