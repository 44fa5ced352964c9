/* cmd_bench.c — `sala bench`: prefill time (TTFT) and decode speed at given context lengths, through the
 * public API on any device, reported against the machine's limits.
 *
 * For each context N: a fresh session prefills N random tokens in one call (TTFT), then decodes --gen
 * tokens one call each (decode tok/s at context N). On the CPU the limit is memory bandwidth: it is
 * measured here (a parallel read of a buffer much larger than the caches) and each decode step is
 * reported as weight bytes read per second and as a fraction of that bandwidth. */
#include <math.h>

#include "cli_common.h"
#include "cmds.h"
#include "sala.h"
#include "util.h"

static void usage(FILE *f) {
    fprintf(f, "usage: sala bench -m DIR [options]\n"
               "  -m DIR              checkpoint folder (e.g. made by `sala synth --preset 9b`)\n"
               "  --contexts LIST     comma-separated context lengths (default 16); k suffix = x1024\n"
               "  --gen N             decode steps timed at each context (default 8)\n"
               "  --device cpu|cuda   (default cpu)\n"
               "  --precision fp32|bf16\n"
               "  -t THREADS          CPU threads (default: all cores)\n"
               "  --chunk C           prefill chunk (default 512)\n"
               "  --json FILE         also write the rows as JSON\n");
}

/* GB/s of a parallel streaming read over `bytes` */
static double measure_read_bw(int64_t bytes) {
    int64_t n = bytes / 8;
    uint64_t *buf = malloc((size_t)n * 8);
    if (!buf) return 0;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) buf[i] = (uint64_t)i;
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = sala_time();
        uint64_t acc = 0;
#pragma omp parallel for schedule(static) reduction(^ : acc)
        for (int64_t i = 0; i < n; i++) acc ^= buf[i];
        double dt = sala_time() - t0;
        if (acc == 42) fprintf(stderr, " "); /* keep the loop */
        if (bytes / dt / 1e9 > best) best = bytes / dt / 1e9;
    }
    free(buf);
    return best;
}

int cmd_bench(int argc, char **argv) {
    const char *model = NULL, *json = NULL, *contexts = "16";
    int64_t gen = 8, threads = 0, chunk = 0;
    sala_model_params mp = sala_model_default_params();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!(v = cli_value(argc, argv, &i))) return 2;
        if (!strcmp(a, "-m")) model = v;
        else if (!strcmp(a, "--contexts")) contexts = v;
        else if (!strcmp(a, "--json")) json = v;
        else if (!strcmp(a, "--gen") && (gen = cli_parse_count(v)) > 0) {}
        else if (!strcmp(a, "-t") && (threads = cli_parse_count(v)) >= 0 && threads < 4096) {}
        else if (!strcmp(a, "--chunk") && (chunk = cli_parse_count(v)) > 0 && chunk < (1 << 24)) {}
        else if (!strcmp(a, "--device") && (!strcmp(v, "cpu") || !strcmp(v, "cuda")))
            mp.device = !strcmp(v, "cuda") ? SALA_DEVICE_CUDA : SALA_DEVICE_CPU;
        else if (!strcmp(a, "--precision") && (!strcmp(v, "fp32") || !strcmp(v, "bf16")))
            mp.precision = !strcmp(v, "fp32") ? SALA_PRECISION_FP32 : SALA_PRECISION_BF16;
        else {
            fprintf(stderr, "sala bench: bad option or value: %s %s\n", a, v);
            usage(stderr);
            return 2;
        }
    }
    if (!model) {
        usage(stderr);
        return 2;
    }
    int64_t ctx[32];
    int nctx = 0;
    for (const char *p = contexts; *p && nctx < 32;) {
        char tok[32];
        size_t k = strcspn(p, ",");
        if (k == 0 || k >= sizeof tok) break;
        memcpy(tok, p, k);
        tok[k] = 0;
        if ((ctx[nctx] = cli_parse_count(tok)) <= 0) {
            fprintf(stderr, "sala bench: bad context '%s'\n", tok);
            return 2;
        }
        nctx++;
        p += k + (p[k] == ',');
    }
    mp.n_threads = (int)threads;
    double t0 = sala_time();
    sala_model *m;
    if (sala_model_load(model, &mp, &m)) {
        fprintf(stderr, "sala bench: %s\n", sala_last_error());
        return 1;
    }
    double t_load = sala_time() - t0;
    sala_model_info in;
    sala_model_get_info(m, &in);
    double bw = mp.device == SALA_DEVICE_CPU ? measure_read_bw((int64_t)2 << 30) : 0;
    const char *dev = mp.device == SALA_DEVICE_CPU ? "cpu" : "cuda";
    printf("model %s: %.2f B parameters, %.2f GB of weights, loaded in %.2f s; %s, %d threads\n", model,
           in.n_params / 1e9, in.weight_bytes / 1e9, t_load, dev, sala_get_threads());
    if (bw > 0) printf("host memory read bandwidth (measured): %.1f GB/s\n", bw);
    printf("%10s %10s %12s %12s %12s %14s\n", "context", "ttft_s", "prefill_t/s", "decode_t/s", "decode_ms", "weights_GB/s");
    FILE *jf = json ? fopen(json, "w") : NULL;
    if (json && !jf) {
        fprintf(stderr, "sala bench: cannot write %s\n", json);
        sala_model_free(m);
        return 1;
    }
    if (jf) fprintf(jf, "[\n");
    float *logits = malloc(sizeof(float) * (size_t)in.vocab);
    int rc = 0;
    uint64_t rng = 0x1234567;
    for (int c = 0; c < nctx && !rc; c++) {
        sala_session_params sp = sala_session_default_params();
        sp.n_ctx = ctx[c] + gen + 1;
        sp.chunk = (int)chunk;
        sala_progress_state prog = {.label = "prefill"};
        sp.progress = sala_progress_stderr;
        sp.progress_ud = &prog;
        sala_session *s;
        if (sala_session_new(m, &sp, &s)) {
            fprintf(stderr, "sala bench: context %lld: %s\n", (long long)ctx[c], sala_last_error());
            rc = 1;
            break;
        }
        int32_t *ids = malloc(sizeof(int32_t) * (size_t)ctx[c]);
        for (int64_t i = 0; i < ctx[c]; i++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            ids[i] = (int32_t)((rng >> 33) % (uint64_t)in.vocab);
        }
        double ta = sala_time();
        if (sala_session_eval(s, ids, ctx[c], SALA_LOGITS_LAST, logits)) rc = 1;
        double ttft = sala_time() - ta;
        double tb = sala_time();
        for (int64_t g = 0; g < gen && !rc; g++) {
            int32_t tok = ids[g % ctx[c]];
            if (sala_session_eval(s, &tok, 1, SALA_LOGITS_LAST, logits)) rc = 1;
        }
        double td = (sala_time() - tb) / gen;
        if (rc) fprintf(stderr, "sala bench: %s\n", sala_last_error());
        free(ids);
        sala_session_free(s);
        if (rc) break;
        double wbw = in.weight_bytes / td / 1e9;
        printf("%10lld %10.3f %12.1f %12.2f %12.1f %14.1f", (long long)ctx[c], ttft, ctx[c] / ttft, 1.0 / td, td * 1e3,
               wbw);
        if (bw > 0) printf("  (%.0f%% of measured bandwidth)", 100 * wbw / bw);
        printf("\n");
        if (jf)
            fprintf(jf, "%s  {\"arch\": \"sala\", \"device\": \"%s\", \"context\": %lld, \"ttft_s\": %.6f, "
                        "\"decode_tok_s\": %.4f, \"weights_gb_s\": %.2f, \"host_bw_gb_s\": %.2f, \"threads\": %d}",
                    c ? ",\n" : "", dev, (long long)ctx[c], ttft, 1.0 / td, wbw, bw, sala_get_threads());
    }
    if (jf) {
        fprintf(jf, "\n]\n");
        fclose(jf);
    }
    free(logits);
    sala_model_free(m);
    return rc;
}
