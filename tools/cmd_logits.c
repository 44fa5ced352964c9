/* cmd_logits.c — `sala logits`: the stable testing interface. Reads whitespace-separated token ids,
 * writes float32 little-endian logits [T, vocab], row-major, one row per input position.
 * With --decode-from P the first P tokens are one prefill call (run in chunks of C) and the rest are
 * fed one token per call, exactly like a generation would. */
#include "cli_common.h"
#include "cmds.h"
#include "sala.h"

static void usage(FILE *f) {
    fprintf(f, "usage: sala logits -m DIR -i IDS -o OUT [options]\n"
               "  -m DIR              checkpoint folder (config.json + safetensors)\n"
               "  -i IDS              file of whitespace-separated token ids ('-' = stdin)\n"
               "  -o OUT              output: float32 little-endian logits [T, vocab]\n"
               "  --decode-from P     prefill the first P tokens, then feed the rest one at a time\n"
               "  --chunk C           prefill chunk size in tokens (default 512)\n"
               "  -t THREADS          CPU threads (default: all cores)\n"
               "  --device cpu|cuda   compute device (default cpu)\n"
               "  --precision fp32|bf16  GPU activations (default bf16 on cuda; the CPU is fp32)\n"
               "  --reference         the plain reference path (slow; the spec)\n"
               "  -c CTX              context length (default: the number of ids)\n");
}

static int read_ids(const char *path, int32_t **out, int64_t *n) {
    FILE *f = strcmp(path, "-") ? fopen(path, "r") : stdin;
    if (!f) {
        fprintf(stderr, "sala logits: cannot open %s: %s\n", path, strerror(errno));
        return 0;
    }
    int64_t cap = 1024, k = 0;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)cap);
    char tok[64];
    int ok = 1;
    while (ok && fscanf(f, "%63s", tok) == 1) {
        char *end;
        errno = 0;
        long v = strtol(tok, &end, 10);
        if (*end || errno || v < 0 || v > INT32_MAX) {
            fprintf(stderr, "sala logits: %s: '%s' is not a token id\n", path, tok);
            ok = 0;
            break;
        }
        if (k == cap) ids = realloc(ids, sizeof(int32_t) * (size_t)(cap *= 2));
        ids[k++] = (int32_t)v;
    }
    if (f != stdin) fclose(f);
    if (!ok) {
        free(ids);
        return 0;
    }
    *out = ids;
    *n = k;
    return 1;
}

int cmd_logits(int argc, char **argv) {
    const char *model = NULL, *in = NULL, *outp = NULL;
    int64_t decode_from = -1, chunk = 0, threads = 0, ctx = 0;
    sala_model_params mp = sala_model_default_params();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--reference")) {
            mp.reference = 1;
            continue;
        }
        if (!(v = cli_value(argc, argv, &i))) return 2;
        if (!strcmp(a, "-m")) model = v;
        else if (!strcmp(a, "-i")) in = v;
        else if (!strcmp(a, "-o")) outp = v;
        else if (!strcmp(a, "--decode-from") && (decode_from = cli_parse_count(v)) >= 0) {}
        else if (!strcmp(a, "--chunk") && (chunk = cli_parse_count(v)) > 0 && chunk < (1 << 24)) {}
        else if (!strcmp(a, "-t") && (threads = cli_parse_count(v)) >= 0 && threads < 4096) {}
        else if (!strcmp(a, "-c") && (ctx = cli_parse_count(v)) > 0) {}
        else if (!strcmp(a, "--device") && (!strcmp(v, "cpu") || !strcmp(v, "cuda")))
            mp.device = !strcmp(v, "cuda") ? SALA_DEVICE_CUDA : SALA_DEVICE_CPU;
        else if (!strcmp(a, "--precision") && (!strcmp(v, "fp32") || !strcmp(v, "bf16")))
            mp.precision = !strcmp(v, "fp32") ? SALA_PRECISION_FP32 : SALA_PRECISION_BF16;
        else {
            fprintf(stderr, "sala logits: bad option or value: %s %s\n", a, v);
            usage(stderr);
            return 2;
        }
    }
    if (!model || !in || !outp) {
        usage(stderr);
        return 2;
    }
    int32_t *ids;
    int64_t T;
    if (!read_ids(in, &ids, &T)) return 1;
    if (T == 0) {
        fprintf(stderr, "sala logits: %s holds no token ids\n", in);
        free(ids);
        return 1;
    }
    if (decode_from < 0 || decode_from > T) decode_from = T;
    if (decode_from == 0) decode_from = 1; /* the first call is always a prefill of at least one token */
    mp.n_threads = (int)threads;
    sala_model *m;
    if (sala_model_load(model, &mp, &m)) {
        fprintf(stderr, "sala logits: %s\n", sala_last_error());
        free(ids);
        return 1;
    }
    sala_model_info info;
    sala_model_get_info(m, &info);
    sala_session_params sp = sala_session_default_params();
    sp.n_ctx = ctx > 0 ? ctx : T;
    sp.chunk = (int)chunk;
    sala_progress_state prog = {.label = "prefill"};
    sp.progress = sala_progress_stderr;
    sp.progress_ud = &prog;
    sala_session *s = NULL;
    float *logits = malloc(sizeof(float) * (size_t)T * (size_t)info.vocab);
    int rc = 1;
    FILE *fo = NULL;
    if (!logits) {
        fprintf(stderr, "sala logits: out of memory for %lld x %d logits\n", (long long)T, info.vocab);
        goto done;
    }
    if (sala_session_new(m, &sp, &s)) {
        fprintf(stderr, "sala logits: %s\n", sala_last_error());
        goto done;
    }
    if (sala_session_eval(s, ids, decode_from, SALA_LOGITS_ALL, logits)) {
        fprintf(stderr, "sala logits: %s\n", sala_last_error());
        goto done;
    }
    for (int64_t t = decode_from; t < T; t++)
        if (sala_session_eval(s, ids + t, 1, SALA_LOGITS_LAST, logits + t * info.vocab)) {
            fprintf(stderr, "sala logits: at position %lld: %s\n", (long long)t, sala_last_error());
            goto done;
        }
    fo = fopen(outp, "wb");
    if (!fo || fwrite(logits, sizeof(float) * (size_t)info.vocab, (size_t)T, fo) != (size_t)T) {
        fprintf(stderr, "sala logits: cannot write %s: %s\n", outp, strerror(errno));
        goto done;
    }
    rc = 0;
done:
    if (fo && fclose(fo) && rc == 0) {
        fprintf(stderr, "sala logits: cannot write %s: %s\n", outp, strerror(errno));
        rc = 1;
    }
    free(logits);
    free(ids);
    sala_session_free(s);
    sala_model_free(m);
    return rc;
}
