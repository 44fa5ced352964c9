/* cmd_bench.c — `sala bench`: prefill time (TTFT) and decode speed at given context lengths, through the
 * public API on any device, reported against the machine's limits.
 *
 * For each context N: a fresh session prefills N random tokens in one call (TTFT), then decodes --gen
 * tokens one call each (decode tok/s at context N). On the CPU the limit is memory bandwidth: it is
 * measured here (a parallel read of a buffer much larger than the caches) and each decode step is
 * reported as weight bytes read per second and as a fraction of that bandwidth.
 *
 * On the GPU without -m (`sala bench --device cuda [--arch sala|full]`) the model is synthetic: the
 * released 9B shape (or, with --arch full, a MiniCPM4-8B-shaped model whose every layer is dense GQA
 * attention) with random bf16 weights drawn directly on the GPU, so no 19 GB checkpoint is needed. Each
 * context reports TTFT, decode tok/s (greedy, the argmax taken on the GPU), the GPU memory in use (the
 * session's caches are allocated up front, so this is the peak), and the fractions of the card's bf16
 * GEMM rate (prefill: the weight GEMMs' FLOPs over TTFT) and memory bandwidth (decode: weight bytes per
 * step) against --peak-tflops / --peak-tbs (H100 SXM defaults: 788 TFLOP/s measured, 3.0 TB/s), or with
 * --ceilings against the limits measured on the card in the same call (src/cuda/ceilings.cu). */
#include <math.h>

#include "cli_common.h"
#include "cmds.h"
#include "sala.h"
#include "util.h"
#ifdef SALA_CUDA
#include "cuda/cuda_extra.h"
#include "cuda/kernels.h"
#include "model/config.h"
#endif

static void usage(FILE *f) {
    fprintf(f, "usage: sala bench -m DIR [options]\n"
               "  -m DIR              checkpoint folder (e.g. made by `sala synth --preset 9b`)\n"
               "  --contexts LIST     comma-separated context lengths (default 16); k suffix = x1024\n"
               "  --gen N             decode steps timed at each context (default 8)\n"
               "  --device cpu|cuda   (default cpu)\n"
               "  --precision fp32|bf16\n"
               "  -t THREADS          CPU threads (default: all cores)\n"
               "  --chunk C           prefill chunk (default: the engine's, 512 on the CPU, the largest of 8192..512\n"
               "                      that fits on the GPU)\n"
               "  --json FILE         also write the rows as JSON\n"
               "GPU benchmark on synthetic weights (no -m, --device cuda):\n"
               "  --arch sala|full    the released SALA 9B shape, or every layer dense GQA (MiniCPM4-8B shape)\n"
               "  --budget-s S        skip contexts predicted to take longer than S seconds in all (default 480)\n"
               "  --commit HASH       recorded in the JSON rows (default $SALA_COMMIT)\n"
               "  --peak-tflops X     bf16 GEMM rate of the card (default 788)\n"
               "  --peak-tbs X        memory bandwidth of the card in TB/s (default 3.0)\n"
               "  --ceilings          first measure the card's limits (bf16 GEMM, HBM read and copy, L2 read, MUFU\n"
               "                      exp rate) and state gemm%% and bw%% against the measured sustained GEMM\n"
               "                      rate and HBM read (unless --peak-* are given); --contexts none measures\n"
               "                      only these\n");
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

#ifdef SALA_CUDA
typedef struct {
    const char *arch, *json, *commit;
    const int64_t *ctx;
    int nctx;
    int64_t gen, chunk;
    sala_precision precision;
    double budget_s, peak_tflops, peak_tbs;
} cuda_bench_opts;

static int bench_progress(void *ud, int64_t done, int64_t total) {
    double *last = ud;
    double now = sala_time();
    if (now - *last > 15.0 || done == total) {
        fprintf(stderr, "  prefill %lld / %lld tokens\n", (long long)done, (long long)total);
        *last = now;
    }
    return 0;
}

/* FLOPs of the weight GEMMs per token (2 per multiply-add), lm_head excluded */
static double gemm_flops_per_token(const sala_config *c) {
    double f = 0;
    for (int l = 0; l < c->n_layers; l++) {
        double qd = c->sparse[l] ? (double)c->nh * c->hd : (double)c->lin_nh * c->lin_hd;
        double kvd = c->sparse[l] ? (double)c->nkv * c->hd : qd;
        int gate = c->sparse[l] ? c->attn_use_output_gate : c->use_output_gate;
        double in = qd + 2 * kvd + (gate ? qd : 0);
        f += 2.0 * c->hidden * (in + qd + 3.0 * c->inter);
    }
    return f;
}

/* --ceilings: the card's limits measured now; the measured GEMM rate and HBM read rate become the peaks of
 * the gemm% and bw% columns unless given (peak_set: 1 = --peak-tflops, 2 = --peak-tbs) */
static int bench_ceilings(double *peak_tflops, double *peak_tbs, int peak_set) {
    char dev[256];
    int64_t used = 0, total = 0;
    cuda_device_info(dev, sizeof dev, &used, &total);
    cu_ceilings c;
    int e = cu_measure_ceilings(&c);
    if (e) {
        fprintf(stderr, "sala bench: measuring the card's limits failed: %s\n", cu_error_str(e));
        return 1;
    }
    printf("limits of %s, measured now:\n", dev);
    printf("  bf16 GEMM (cuBLAS, 8192^3, fp32 accumulate)   %8.1f TFLOP/s (fastest of 10)\n", c.gemm_tflops);
    printf("  the same, sustained (mean of 1 s after 2 s)   %8.1f TFLOP/s\n", c.gemm_sustained_tflops);
    printf("  HBM read (4 GiB, 16-byte loads)               %8.3f TB/s\n", c.hbm_read_tbs);
    printf("  HBM copy (2 GiB, bytes read + written)        %8.3f TB/s\n", c.hbm_copy_tbs);
    printf("  L2 read (%3lld MiB buffer, L2 %3lld MiB)          %8.3f TB/s\n", (long long)(c.l2_buffer_bytes >> 20),
           (long long)(c.l2_bytes >> 20), c.l2_read_tbs);
    printf("  MUFU ex2.approx.f32                           %8.3f T/s\n", c.ex2_per_s / 1e12);
    if (!(peak_set & 1)) *peak_tflops = c.gemm_sustained_tflops;
    if (!(peak_set & 2)) *peak_tbs = c.hbm_read_tbs;
    printf("gemm%% and bw%% below are against %.1f TFLOP/s and %.3f TB/s\n", *peak_tflops, *peak_tbs);
    fflush(stdout);
    return 0;
}

static int bench_cuda_synth(const cuda_bench_opts *o) {
    sala_config c;
    config_defaults(&c);
    int full = !strcmp(o->arch, "full");
    if (full) { /* MiniCPM4-8B shape: 32 dense GQA layers, no output gate */
        for (int l = 0; l < c.n_layers; l++) c.sparse[l] = 1;
        c.attn_use_output_gate = 0;
        c.dense_len = 1 << 30;
    }
    c.max_pos = 1 << 30;
    sala_model_params mp = sala_model_default_params();
    mp.device = SALA_DEVICE_CUDA;
    mp.precision = o->precision;
    mp.verbose = 1;
    double t0 = sala_time();
    cuda_model *cm;
    if (cuda_model_new_synth(&c, &mp, 1234, &cm)) {
        fprintf(stderr, "sala bench: %s\n", sala_last_error());
        return 1;
    }
    char dev[256];
    int64_t used = 0, total = 0;
    cuda_device_info(dev, sizeof dev, &used, &total);
    cuda_mem_plan wp = cuda_model_plan(cm, 1, 1);
    double fpt = gemm_flops_per_token(&c);
    printf("arch %s (%s): synthetic weights %.2f GiB on %s drawn in %.2f s; %s precision\n", o->arch,
           full ? "every layer dense GQA, MiniCPM4-8B shape" : "SALA 9B, 8 sparse + 24 lightning layers",
           wp.weights / 1073741824.0, dev, sala_time() - t0, o->precision == SALA_PRECISION_FP32 ? "fp32" : "bf16");
    printf("%9s %10s %12s %8s %12s %10s %9s %10s %10s\n", "context", "ttft_s", "prefill_t/s", "gemm%", "decode_t/s",
           "decode_ms", "bw%", "plan_GiB", "peak_GiB");
    FILE *jf = NULL;
    if (o->json) {
        jf = fopen(o->json, "a");
        if (!jf) {
            fprintf(stderr, "sala bench: cannot write %s\n", o->json);
            cuda_model_free(cm);
            return 1;
        }
    }
    const char *precision = o->precision == SALA_PRECISION_FP32 ? "fp32" : "bf16";
    double spent = 0, last_t = 0;
    int64_t last_n = 0, rc = 0;
    uint64_t rng = 0x1234567;
    for (int k = 0; k < o->nctx && !rc; k++) {
        int64_t N = o->ctx[k];
        if (last_n) { /* prediction: dense attention grows as N², SALA's stage 1 too but from a small share */
            double pred = last_t * pow((double)N / last_n, full ? 2.0 : 1.6);
            if (spent + pred > o->budget_s) {
                printf("%9lld  skipped: predicted %.0f s, over the --budget-s %.0f s left\n", (long long)N, pred,
                       o->budget_s - spent);
                continue;
            }
        }
        double ta = sala_time();
        cuda_session *s;
        if (cuda_session_new(cm, N + o->gen + 1, (int)o->chunk, 0, &s)) {
            printf("%9lld  does not fit: %s\n", (long long)N, sala_last_error());
            continue;
        }
        const int chunk = cuda_session_chunk(s);
        cuda_mem_plan plan = cuda_model_plan(cm, N + o->gen + 1, chunk);
        int32_t *ids = malloc(sizeof(int32_t) * (size_t)N);
        for (int64_t i = 0; i < N; i++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            ids[i] = (int32_t)((rng >> 33) % (uint64_t)c.vocab);
        }
        double last_print = sala_time();
        int32_t next = 0;
        double tp = sala_time();
        if (cuda_session_eval_argmax(s, 0, ids, N, &next, bench_progress, &last_print)) rc = 1;
        double ttft = sala_time() - tp;
        /* decode: one untimed warm-up step (plans, first-touch), then gen timed steps */
        double td = 0;
        if (!rc && cuda_session_eval_argmax(s, N, &next, 1, &next, NULL, NULL)) rc = 1;
        double tb = sala_time();
        for (int64_t g = 0; g < o->gen && !rc; g++)
            if (cuda_session_eval_argmax(s, N + 1 + g, &next, 1, &next, NULL, NULL)) rc = 1;
        td = (sala_time() - tb) / o->gen;
        cuda_device_info(dev, sizeof dev, &used, &total);
        free(ids);
        cuda_session_free(s);
        if (rc) {
            fprintf(stderr, "sala bench: context %lld: %s\n", (long long)N, sala_last_error());
            break;
        }
        double gemm_pct = 100.0 * fpt * N / ttft / (o->peak_tflops * 1e12);
        double bw_pct = 100.0 * wp.weights / td / (o->peak_tbs * 1e12);
        printf("%9lld %10.3f %12.0f %8.1f %12.2f %10.2f %9.1f %10.2f %10.2f\n", (long long)N, ttft, N / ttft, gemm_pct,
               1.0 / td, td * 1e3, bw_pct, plan.total / 1073741824.0, used / 1073741824.0);
        fflush(stdout);
        if (jf) {
            fprintf(jf, "{\"arch\": \"%s\", \"context\": %lld, \"ttft_s\": %.4f, \"decode_tok_s\": %.3f, "
                        "\"peak_gpu_gib\": %.3f, \"plan_gib\": %.3f, \"gemm_frac\": %.4f, \"bw_frac\": %.4f, "
                        "\"precision\": \"%s\", \"chunk\": %lld, \"device\": \"%s\", \"commit\": \"%s\"}\n",
                    o->arch, (long long)N, ttft, 1.0 / td, used / 1073741824.0, plan.total / 1073741824.0,
                    gemm_pct / 100, bw_pct / 100, precision, (long long)chunk, dev, o->commit ? o->commit : "");
            fflush(jf);
        }
        last_t = sala_time() - ta;
        last_n = N;
        spent += last_t;
    }
    if (jf) fclose(jf);
    cuda_model_free(cm);
    return (int)rc;
}
#endif

int cmd_bench(int argc, char **argv) {
    const char *model = NULL, *json = NULL, *contexts = "16";
    int64_t gen = 8, threads = 0, chunk = 0;
    const char *arch = "sala", *commit = getenv("SALA_COMMIT");
    double budget_s = 480, peak_tflops = 788, peak_tbs = 3.0;
    int contexts_set = 0, ceilings = 0, peak_set = 0;
    sala_model_params mp = sala_model_default_params();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--ceilings")) {
            ceilings = 1;
            continue;
        }
        if (!(v = cli_value(argc, argv, &i))) return 2;
        if (!strcmp(a, "-m")) model = v;
        else if (!strcmp(a, "--contexts")) contexts = v, contexts_set = 1;
        else if (!strcmp(a, "--arch") && (!strcmp(v, "sala") || !strcmp(v, "full"))) arch = v;
        else if (!strcmp(a, "--commit")) commit = v;
        else if (!strcmp(a, "--budget-s") && (budget_s = atof(v)) > 0) {}
        else if (!strcmp(a, "--peak-tflops") && (peak_tflops = atof(v)) > 0) peak_set |= 1;
        else if (!strcmp(a, "--peak-tbs") && (peak_tbs = atof(v)) > 0) peak_set |= 2;
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
    if (ceilings && (model || mp.device != SALA_DEVICE_CUDA)) {
        fprintf(stderr, "sala bench: --ceilings measures a GPU: it goes with --device cuda and no -m\n");
        return 2;
    }
    if (!model && mp.device != SALA_DEVICE_CUDA) {
        usage(stderr);
        return 2;
    }
    if (!model && !contexts_set) contexts = "8k,32k,128k,256k,512k,1024k";
    if (!strcmp(contexts, "none")) contexts = "";
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
    if (!model) {
#ifdef SALA_CUDA
        if (ceilings && bench_ceilings(&peak_tflops, &peak_tbs, peak_set)) return 1;
        if (!nctx) return 0;
        cuda_bench_opts o = {arch, json, commit, ctx, nctx, gen, chunk, mp.precision, budget_s,
                             peak_tflops, peak_tbs};
        return bench_cuda_synth(&o);
#else
        (void)arch, (void)commit, (void)budget_s, (void)peak_tflops, (void)peak_tbs, (void)ceilings, (void)peak_set;
        fprintf(stderr, "sala bench: this sala was built without CUDA; the synthetic GPU benchmark needs `make CUDA=1`\n");
        return 1;
#endif
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
