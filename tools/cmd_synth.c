/* cmd_synth.c — `sala synth`: write a checkpoint folder with random weights in the official layout. */
#include <sys/stat.h>

#include "cli_common.h"
#include "cmds.h"
#include "sala.h"
#include "util.h"

static void usage(FILE *f) {
    fprintf(f, "usage: sala synth -o DIR (--preset tiny|small|9b | --config FILE) [--seed S] [--tokenizer DIR]\n"
               "  --preset NAME     tiny (4 layers, 19 MB), small (8 layers, 90 MB), 9b (the released shape, 18.95 GB)\n"
               "  --config FILE     follow a config.json instead\n"
               "  --seed S          weight seed (default 1)\n"
               "  --tokenizer DIR   copy tokenizer files (tokenizer.json, tokenizer_config.json, ...) from DIR\n");
}

static int copy_file(const char *from, const char *to) {
    FILE *a = fopen(from, "rb");
    if (!a) return 0;
    FILE *b = fopen(to, "wb");
    if (!b) {
        fclose(a);
        return -1;
    }
    char buf[1 << 16];
    size_t n;
    int ok = 1;
    while ((n = fread(buf, 1, sizeof buf, a)) > 0)
        if (fwrite(buf, 1, n, b) != n) ok = 0;
    fclose(a);
    if (fclose(b) != 0) ok = 0;
    return ok ? 1 : -1;
}

int cmd_synth(int argc, char **argv) {
    const char *out = NULL, *preset = NULL, *config = NULL, *tok = NULL;
    int64_t seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!(v = cli_value(argc, argv, &i))) return 2;
        if (!strcmp(a, "-o")) out = v;
        else if (!strcmp(a, "--preset")) preset = v;
        else if (!strcmp(a, "--config")) config = v;
        else if (!strcmp(a, "--tokenizer")) tok = v;
        else if (!strcmp(a, "--seed") && (seed = cli_parse_count(v)) >= 0) {}
        else {
            fprintf(stderr, "sala synth: bad option or value: %s %s\n", a, v);
            usage(stderr);
            return 2;
        }
    }
    if (!out || (!preset && !config) || (preset && config)) {
        usage(stderr);
        return 2;
    }
    double t0 = sala_time();
    if (sala_synth_write(out, preset, config, (uint64_t)seed, 1)) {
        fprintf(stderr, "sala synth: %s\n", sala_last_error());
        return 1;
    }
    if (tok) {
        static const char *names[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                      "added_tokens.json", "tokenizer.model"};
        int copied = 0;
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            char *a = sala_path_join(tok, names[i]), *b = sala_path_join(out, names[i]);
            int r = copy_file(a, b);
            free(a);
            free(b);
            if (r < 0) {
                fprintf(stderr, "sala synth: cannot copy %s into %s\n", names[i], out);
                return 1;
            }
            copied += r;
        }
        if (!copied) {
            fprintf(stderr, "sala synth: %s holds no tokenizer files\n", tok);
            return 1;
        }
    }
    fprintf(stderr, "sala synth: wrote %s in %.1f s (random weights)\n", out, sala_time() - t0);
    return 0;
}
