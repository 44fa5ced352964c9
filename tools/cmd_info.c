/* cmd_info.c — `sala info`: the model summary and the memory plan for a context length. */
#include "cli_common.h"
#include "cmds.h"
#include "sala.h"
#include "util.h"

static void usage(FILE *f) {
    fprintf(f, "usage: sala info -m DIR [-c CTX] [--chunk C] [--mem-limit BYTES]\n"
               "  -c CTX            context length for the plan (default: max_position_embeddings); k/m suffix ok\n"
               "  --chunk C         prefill chunk size for both plans (default: the engines' own, 512 on the\n"
               "                    CPU, 8192 on the GPU, which takes less when the card's memory is short)\n"
               "  --mem-limit B     check the plan against a memory limit (e.g. 31G); exit 1 if it does not fit\n");
}

int cmd_info(int argc, char **argv) {
    const char *model = NULL;
    int64_t ctx = 0, chunk = 0, limit = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!(v = cli_value(argc, argv, &i))) return 2;
        if (!strcmp(a, "-m")) model = v;
        else if (!strcmp(a, "-c") && (ctx = cli_parse_count(v)) > 0) {}
        else if (!strcmp(a, "--chunk") && (chunk = cli_parse_count(v)) > 0 && chunk < (1 << 24)) {}
        else if (!strcmp(a, "--mem-limit") && (limit = cli_parse_count(v)) > 0) {}
        else {
            fprintf(stderr, "sala info: bad option or value: %s %s\n", a, v);
            usage(stderr);
            return 2;
        }
    }
    if (!model) {
        usage(stderr);
        return 2;
    }
    double t0 = sala_time();
    sala_model *m;
    if (sala_model_load(model, NULL, &m)) {
        fprintf(stderr, "sala info: %s\n", sala_last_error());
        return 1;
    }
    double tl = sala_time() - t0;
    sala_model_info in;
    sala_model_get_info(m, &in);
    if (ctx <= 0) ctx = in.max_position;
    char b[6][64];
    printf("model        %s (loaded by mmap in %.2f s)\n", model, tl);
    printf("layers       %d: %d sparse (InfLLM-v2) + %d linear (Lightning)\n", in.n_layers, in.n_sparse_layers,
           in.n_linear_layers);
    printf("pattern      %s\n", in.layer_pattern);
    printf("hidden       %d, intermediate %d, vocab %d\n", in.hidden, in.intermediate, in.vocab);
    printf("sparse attn  %d query heads, %d KV heads, head dim %d, dense below %d tokens\n", in.n_heads, in.n_kv_heads,
           in.head_dim, in.dense_len);
    printf("linear attn  %d heads, head dim %d\n", in.lin_heads, in.lin_head_dim);
    printf("parameters   %lld (%.2f B)\n", (long long)in.n_params, in.n_params / 1e9);
    printf("max context  %d (max_position_embeddings)\n", in.max_position);
    /* each engine's chunk as its session allocates it (sala.h: the CPU's default, and the GPU's largest, which
     * it takes where it fits, never past the context) */
    int64_t chunk_g = chunk > 0 ? chunk : SALA_CHUNK_GPU_MAX, chunk_c = chunk > 0 ? chunk : SALA_CHUNK_CPU;
    if (chunk_g > ctx) chunk_g = ctx;
    printf("\nmemory plan for a context of %lld tokens, prefill chunk %lld on the GPU, %lld on the CPU:\n",
           (long long)ctx, (long long)chunk_g, (long long)chunk_c);
    printf("  %-26s %-28s %s\n", "", "GPU (bf16 caches)", "CPU (fp32 caches)");
    sala_mem_plan g = sala_model_mem_plan(m, ctx, (int)chunk_g, 2), c = sala_model_mem_plan(m, ctx, (int)chunk_c, 4);
#define ROW(name, field) \
    printf("  %-26s %-28s %s\n", name, sala_fmt_bytes(g.field, b[0], 64), sala_fmt_bytes(c.field, b[1], 64))
    ROW("weights", weight_bytes);
    ROW("KV cache (sparse layers)", kv_bytes);
    ROW("compressed keys", comp_bytes);
    ROW("Lightning state", state_bytes);
    ROW("activations (one chunk)", act_bytes);
    ROW("total", total_bytes);
#undef ROW
    int rc = 0;
    if (limit > 0) {
        int fits_g = g.total_bytes <= limit, fits_c = c.total_bytes <= limit;
        printf("\nlimit %s: GPU plan %s, CPU plan %s\n", sala_fmt_bytes(limit, b[2], 64), fits_g ? "fits" : "DOES NOT FIT",
               fits_c ? "fits" : "DOES NOT FIT");
        if (!fits_g && !fits_c) {
            fprintf(stderr, "sala info: a context of %lld tokens does not fit in %s. HINT: lower -c\n", (long long)ctx,
                    sala_fmt_bytes(limit, b[3], 64));
            rc = 1;
        }
    }
    sala_model_free(m);
    return rc;
}
