/* cmd_tokenize.c — `sala tokenize` and `sala detokenize`: the tokenizer of a model folder on stdin/stdout.
 *
 *   sala tokenize -m DIR [--ids] [--no-bos]   one output line per input line (the line without its '\n')
 *   sala detokenize -m DIR [--skip-special]   one line of whitespace-separated ids → its text
 *
 * DIR is a model folder or any folder with tokenizer.json / tokenizer.model (or one of those files). Which
 * file was loaded goes to stderr, so stdout stays machine-readable. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmds.h"
#include "sala.h"
#include "sala_tokenizer.h"

static void tokenize_usage(FILE *f) {
    fprintf(f,
            "usage: sala tokenize -m DIR [--ids] [--no-bos]\n"
            "Reads text from stdin and prints the tokens of each line (the line without its newline).\n"
            "  -m, --model DIR  model folder (or folder/file with tokenizer.json or tokenizer.model)\n"
            "  --ids            print the ids only, separated by spaces\n"
            "                   (default: id:'piece' pairs, with \\n, \\t, \\' and \\xNN escapes)\n"
            "  --no-bos         do not put the BOS token in front\n");
}

static void detokenize_usage(FILE *f) {
    fprintf(f,
            "usage: sala detokenize -m DIR [--skip-special]\n"
            "Reads lines of whitespace-separated token ids from stdin and prints the decoded text of each line.\n"
            "  -m, --model DIR  model folder (or folder/file with tokenizer.json or tokenizer.model)\n"
            "  --skip-special   leave out special tokens (<s>, <|im_end|>, ...)\n");
}

static sala_tokenizer *open_tokenizer(const char *dir, const char *cmd) {
    sala_tokenizer *t = NULL;
    sala_status st = sala_tokenizer_load(dir, &t);
    if (st) {
        fprintf(stderr, "sala %s: %s\n", cmd, sala_last_error());
        return NULL;
    }
    fprintf(stderr, "sala %s: loaded %s from %s (%d ids, bos %d, eos %d)\n", cmd, sala_tokenizer_source(t), dir,
            sala_tokenizer_n_vocab(t), sala_tokenizer_bos(t), sala_tokenizer_eos(t));
    return t;
}

static void print_piece(const char *p) {
    if (!p) p = "";
    putchar('\'');
    for (const unsigned char *s = (const unsigned char *)p; *s; s++) {
        switch (*s) {
        case '\n': fputs("\\n", stdout); break;
        case '\t': fputs("\\t", stdout); break;
        case '\r': fputs("\\r", stdout); break;
        case '\'': fputs("\\'", stdout); break;
        case '\\': fputs("\\\\", stdout); break;
        default:
            if (*s < 0x20 || *s == 0x7F) printf("\\x%02X", *s);
            else putchar(*s);
        }
    }
    putchar('\'');
}

int cmd_tokenize(int argc, char **argv) {
    const char *dir = NULL;
    int ids_only = 0, no_bos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            tokenize_usage(stdout);
            return 0;
        } else if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && i + 1 < argc) {
            dir = argv[++i];
        } else if (!strncmp(a, "--model=", 8)) {
            dir = a + 8;
        } else if (!strcmp(a, "--ids")) {
            ids_only = 1;
        } else if (!strcmp(a, "--no-bos")) {
            no_bos = 1;
        } else {
            fprintf(stderr, "sala tokenize: unknown or incomplete argument '%s'\n", a);
            tokenize_usage(stderr);
            return 2;
        }
    }
    if (!dir) {
        fprintf(stderr, "sala tokenize: -m DIR is required\n");
        tokenize_usage(stderr);
        return 2;
    }
    sala_tokenizer *t = open_tokenizer(dir, "tokenize");
    if (!t) return 1;
    int add_bos = !no_bos && sala_tokenizer_add_bos_default(t);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int rc = 0;
    while ((len = getline(&line, &cap, stdin)) >= 0) {
        if (len > 0 && line[len - 1] == '\n') len--;
        int32_t *ids;
        int64_t n;
        if (sala_tokenizer_encode(t, line, (size_t)len, add_bos, &ids, &n)) {
            fprintf(stderr, "sala tokenize: %s\n", sala_last_error());
            rc = 1;
            break;
        }
        for (int64_t i = 0; i < n; i++) {
            if (i) putchar(' ');
            if (ids_only) {
                printf("%d", (int)ids[i]);
            } else {
                printf("%d:", (int)ids[i]);
                print_piece(sala_tokenizer_piece(t, ids[i]));
            }
        }
        putchar('\n');
        free(ids);
    }
    free(line);
    sala_tokenizer_free(t);
    if (fflush(stdout) != 0) rc = 1;
    return rc;
}

int cmd_detokenize(int argc, char **argv) {
    const char *dir = NULL;
    int skip = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            detokenize_usage(stdout);
            return 0;
        } else if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && i + 1 < argc) {
            dir = argv[++i];
        } else if (!strncmp(a, "--model=", 8)) {
            dir = a + 8;
        } else if (!strcmp(a, "--skip-special")) {
            skip = 1;
        } else {
            fprintf(stderr, "sala detokenize: unknown or incomplete argument '%s'\n", a);
            detokenize_usage(stderr);
            return 2;
        }
    }
    if (!dir) {
        fprintf(stderr, "sala detokenize: -m DIR is required\n");
        detokenize_usage(stderr);
        return 2;
    }
    sala_tokenizer *t = open_tokenizer(dir, "detokenize");
    if (!t) return 1;
    char *line = NULL;
    size_t cap = 0;
    int rc = 0;
    long lineno = 0;
    int32_t *ids = NULL;
    size_t ids_cap = 0;
    while (getline(&line, &cap, stdin) >= 0) {
        lineno++;
        size_t n = 0;
        char *p = line, *end;
        for (;;) {
            while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == ',') p++;
            if (!*p) break;
            errno = 0;
            long v = strtol(p, &end, 10);
            if (end == p || errno || v < 0 || v > INT32_MAX ||
                (*end && *end != ' ' && *end != '\t' && *end != '\n' && *end != '\r' && *end != ',')) {
                fprintf(stderr, "sala detokenize: line %ld: '%.*s' is not a token id\n", lineno,
                        (int)strcspn(p, " \t\r\n,"), p);
                rc = 1;
                goto done;
            }
            if (n == ids_cap) {
                ids_cap = ids_cap ? ids_cap * 2 : 256;
                int32_t *grown = realloc(ids, ids_cap * sizeof *ids);
                if (!grown) {
                    fprintf(stderr, "sala detokenize: out of memory\n");
                    rc = 1;
                    goto done;
                }
                ids = grown;
            }
            ids[n++] = (int32_t)v;
            p = end;
        }
        char *text = sala_tokenizer_decode(t, ids, (int64_t)n, skip);
        if (!text) {
            fprintf(stderr, "sala detokenize: line %ld: %s\n", lineno, sala_last_error());
            rc = 1;
            goto done;
        }
        fputs(text, stdout);
        putchar('\n');
        free(text);
    }
done:
    free(ids);
    free(line);
    sala_tokenizer_free(t);
    if (fflush(stdout) != 0) rc = 1;
    return rc;
}
