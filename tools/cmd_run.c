/* cmd_run.c — `sala run` (one prompt, streamed continuation) and `sala chat` (interactive multi-turn).
 *
 * Both load a checkpoint and (when present) its tokenizer, build a session and a sampler, and drive
 * sala_generate() (src/generate.c). `run` takes the prompt from -p, -f, --prompt-ids or stdin and can wrap
 * it in the chat template (--chat). `chat` keeps one session for the whole conversation: each turn feeds
 * only its new tokens (the close of the previous answer + the new user message + the assistant header),
 * never the history again; /reset clears both.
 *
 * Ctrl-C: a SIGINT handler sets a flag that the token callback and the prefill progress callback return,
 * so generation stops at the next token or prefill chunk. run: the first Ctrl-C stops and prints the
 * summary, a second one exits at once. chat: Ctrl-C stops the answer and returns to the prompt; at the
 * prompt, a first Ctrl-C prints a hint and a second one exits. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmds.h"
#include "sala.h"
#include "sala_chat.h"
#include "sala_generate.h"
#include "sala_sample.h"
#include "sala_tokenizer.h"
#include "util.h"

#define MAX_STOPS 32

typedef struct {
    int is_chat; /* sala chat */
    const char *model_dir, *tok_dir, *prompt, *prompt_file, *ids_file, *system, *device;
    int64_t n_predict, n_ctx;
    int threads, chunk;
    sala_sampler_params sp;
    const char *stops[MAX_STOPS];
    int n_stops;
    int chat_wrap, print_ids, no_bos, show_think, ignore_eos, verbose, reference;
} run_opts;

/* ---- signals ---- */

static volatile sig_atomic_t g_stop;     /* stop the current generation */
static volatile sig_atomic_t g_sigcount; /* SIGINTs since the last reset */
static volatile sig_atomic_t g_run_hard; /* run: a second SIGINT exits at once */

static void on_sigint(int sig) {
    (void)sig;
    g_stop = 1;
    g_sigcount++;
    if (g_run_hard && g_sigcount >= 2)
        _exit(130);
}

static void install_sigint(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: a read at the chat prompt returns EINTR */
    sigaction(SIGINT, &sa, NULL);
}

/* ---- usage ---- */

static void usage(FILE *f, int is_chat) {
    if (is_chat)
        fprintf(f, "usage: sala chat -m DIR [options]\n"
                   "\n"
                   "Interactive chat in the model's chat template (ChatML). Type a message after '> ';\n"
                   "/reset forgets the conversation, /exit (or end of input) quits. Ctrl-C stops an answer;\n"
                   "Ctrl-C twice at the prompt quits. The session keeps its cache across turns: each turn\n"
                   "feeds only the new tokens.\n\n");
    else
        fprintf(f, "usage: sala run -m DIR [-p PROMPT | -f FILE | --prompt-ids FILE] [options]\n"
                   "\n"
                   "Generate a continuation of a prompt (read from stdin when no prompt option is given) and\n"
                   "stream it to stdout; timings go to stderr.\n\n");
    fprintf(f, "  -m, --model DIR          checkpoint folder (config.json + safetensors)\n"
               "      --tokenizer DIR      tokenizer folder (default: the checkpoint folder)\n");
    if (!is_chat)
        fprintf(f, "  -p, --prompt TEXT        the prompt\n"
                   "  -f, --file FILE          read the prompt from FILE\n"
                   "      --prompt-ids FILE    the prompt as token ids (integers separated by spaces, commas or\n"
                   "                           newlines; '-' = stdin); no tokenizer needed\n"
                   "      --print-ids          print the generated token ids instead of text\n"
                   "      --no-bos             do not put the BOS token in front of a text prompt\n"
                   "      --chat               wrap the prompt in the chat template (one user message)\n");
    fprintf(f,
            "      --system TEXT        system message (chat template)\n"
            "      --show-think         print the model's <think>...</think> reasoning (default)\n"
            "      --hide-think         print only the answer after </think>\n"
            "  -n, --n-predict N        new tokens at most (default: %s; -1 = until end of text)\n"
            "  -c, --ctx N              context length in tokens (default: %s, at most the model's;\n"
            "                           0 = the model's max_position_embeddings)\n"
            "  -t, --threads N          CPU threads (default: all cores)\n"
            "      --device DEV         cpu or cuda[:N] (default cpu)\n"
            "      --chunk N            prefill chunk size in tokens (default: the engine's)\n"
            "      --temp T             temperature (default 0.8; 0 = greedy)\n"
            "      --top-k N            keep the N most probable tokens (default 40; 0 = off)\n"
            "      --top-p P            keep the smallest set reaching probability P (default 0.95; 1 = off)\n"
            "      --min-p P            drop tokens below P x the top probability (default 0.05; 0 = off)\n"
            "      --repeat-penalty R   penalize the last --repeat-last-n tokens (default 1.0 = off)\n"
            "      --repeat-last-n N    window of the repeat penalty (default 64; -1 = all)\n"
            "      --presence-penalty A subtract A from generated tokens' logits (default 0)\n"
            "      --frequency-penalty A subtract A x count of generated tokens (default 0)\n"
            "      --seed N             random seed (default: random, printed with -v)\n"
            "      --stop STR           stop when STR appears (repeatable; STR is not printed)\n"
            "      --ignore-eos         do not stop at end-of-text tokens\n"
            "      --reference          use the slow reference compute path\n"
            "  -v, --verbose            print load details, the seed and the template\n"
            "  -h, --help               this help\n",
            is_chat ? "-1" : "256", is_chat ? "16384" : "4096 or prompt + N");
}

/* ---- argument parsing ---- */

static int parse_i64(const char *s, int64_t lo, int64_t hi, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int parse_f(const char *s, float *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end)
        return -1;
    *out = (float)v;
    return 0;
}

/* Returns 0 ok, 1 = --help printed, 2 = usage error (message printed). */
static int parse_args(int argc, char **argv, run_opts *o) {
    memset(o, 0, sizeof *o);
    o->is_chat = strcmp(argv[0], "chat") == 0;
    o->n_predict = o->is_chat ? -1 : 256;
    o->n_ctx = -1; /* default, decided later */
    o->device = "cpu";
    o->show_think = 1;
    o->sp = sala_sampler_default_params();
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = NULL;
        char name[64];
        /* --opt=value */
        const char *eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
        if (eq && (size_t)(eq - a) < sizeof name) {
            memcpy(name, a, (size_t)(eq - a));
            name[eq - a] = 0;
            a = name;
            val = eq + 1;
        }
#define IS(s) (strcmp(a, s) == 0)
#define NEED()                                                                                                         \
    do {                                                                                                               \
        used = 1;                                                                                                      \
        if (!val) {                                                                                                    \
            if (i + 1 >= argc) {                                                                                       \
                fprintf(stderr, "sala %s: option %s needs a value (see --help)\n", argv[0], a);                        \
                return 2;                                                                                              \
            }                                                                                                          \
            val = argv[++i];                                                                                           \
        }                                                                                                              \
    } while (0)
#define BAD()                                                                                                          \
    do {                                                                                                               \
        fprintf(stderr, "sala %s: bad value '%s' for %s (see --help)\n", argv[0], val, a);                             \
        return 2;                                                                                                      \
    } while (0)
/* an option that takes a number: parse its value (an integer must lie in [lo, hi], a range that fits dst's
 * type) and store it in dst */
#define INT_VALUE(lo, hi, dst)                                                                                         \
    do {                                                                                                               \
        NEED();                                                                                                        \
        if (parse_i64(val, lo, hi, &iv))                                                                               \
            BAD();                                                                                                     \
        (dst) = iv;                                                                                                    \
    } while (0)
#define FLOAT_VALUE(dst)                                                                                               \
    do {                                                                                                               \
        NEED();                                                                                                        \
        if (parse_f(val, &fv))                                                                                         \
            BAD();                                                                                                     \
        (dst) = fv;                                                                                                    \
    } while (0)
        int64_t iv;
        float fv;
        int used = 0;
        if (IS("-h") || IS("--help")) {
            usage(stdout, o->is_chat);
            return 1;
        } else if (IS("-m") || IS("--model")) {
            NEED();
            o->model_dir = val;
        } else if (IS("--tokenizer")) {
            NEED();
            o->tok_dir = val;
        } else if (!o->is_chat && (IS("-p") || IS("--prompt"))) {
            NEED();
            o->prompt = val;
        } else if (!o->is_chat && (IS("-f") || IS("--file"))) {
            NEED();
            o->prompt_file = val;
        } else if (!o->is_chat && IS("--prompt-ids")) {
            NEED();
            o->ids_file = val;
        } else if (!o->is_chat && IS("--print-ids")) {
            o->print_ids = 1;
        } else if (!o->is_chat && IS("--no-bos")) {
            o->no_bos = 1;
        } else if (!o->is_chat && IS("--chat")) {
            o->chat_wrap = 1;
        } else if (IS("--system")) {
            NEED();
            o->system = val;
        } else if (IS("--show-think")) {
            o->show_think = 1;
        } else if (IS("--hide-think")) {
            o->show_think = 0;
        } else if (IS("-n") || IS("--n-predict")) {
            INT_VALUE(-1, INT64_MAX, o->n_predict);
        } else if (IS("-c") || IS("--ctx") || IS("--ctx-size")) {
            INT_VALUE(0, INT64_MAX, o->n_ctx);
        } else if (IS("-t") || IS("--threads")) {
            INT_VALUE(0, 4096, o->threads);
        } else if (IS("--device")) {
            NEED();
            o->device = val;
        } else if (IS("--chunk")) {
            INT_VALUE(1, 1 << 20, o->chunk);
        } else if (IS("--temp") || IS("--temperature")) {
            FLOAT_VALUE(o->sp.temperature);
        } else if (IS("--top-k")) {
            INT_VALUE(0, INT32_MAX, o->sp.top_k);
        } else if (IS("--top-p")) {
            FLOAT_VALUE(o->sp.top_p);
        } else if (IS("--min-p")) {
            FLOAT_VALUE(o->sp.min_p);
        } else if (IS("--repeat-penalty")) {
            FLOAT_VALUE(o->sp.repeat_penalty);
        } else if (IS("--repeat-last-n")) {
            INT_VALUE(-1, INT32_MAX, o->sp.repeat_last_n);
        } else if (IS("--presence-penalty")) {
            FLOAT_VALUE(o->sp.presence_penalty);
        } else if (IS("--frequency-penalty")) {
            FLOAT_VALUE(o->sp.frequency_penalty);
        } else if (IS("--seed")) {
            NEED();
            if (parse_i64(val, -1, INT64_MAX, &iv))
                BAD();
            o->sp.seed = iv < 0 ? SALA_SEED_RANDOM : (uint64_t)iv;
        } else if (IS("--stop")) {
            NEED();
            if (!val[0]) {
                fprintf(stderr, "sala %s: --stop needs a non-empty string\n", argv[0]);
                return 2;
            }
            if (o->n_stops >= MAX_STOPS) {
                fprintf(stderr, "sala %s: at most %d --stop strings\n", argv[0], MAX_STOPS);
                return 2;
            }
            o->stops[o->n_stops++] = val;
        } else if (IS("--ignore-eos")) {
            o->ignore_eos = 1;
        } else if (IS("--reference")) {
            o->reference = 1;
        } else if (IS("-v") || IS("--verbose")) {
            o->verbose = 1;
        } else {
            fprintf(stderr, "sala %s: unknown option '%s' (see sala %s --help)\n", argv[0], argv[i], argv[0]);
            return 2;
        }
        if (eq && !used) {
            fprintf(stderr, "sala %s: option %s takes no value\n", argv[0], a);
            return 2;
        }
#undef IS
#undef NEED
#undef BAD
#undef INT_VALUE
#undef FLOAT_VALUE
    }
    if (!o->model_dir) {
        fprintf(stderr, "sala %s: no model: give -m DIR (see --help)\n", argv[0]);
        return 2;
    }
    int sources = !!o->prompt + !!o->prompt_file + !!o->ids_file;
    if (sources > 1) {
        fprintf(stderr, "sala %s: give only one of -p, -f and --prompt-ids\n", argv[0]);
        return 2;
    }
    if (o->ids_file && o->chat_wrap) {
        fprintf(stderr, "sala %s: --chat wraps text; it cannot be used with --prompt-ids\n", argv[0]);
        return 2;
    }
    return 0;
}

/* ---- helpers ---- */

static sala_status parse_device(const char *s, sala_model_params *mp) {
    if (strcmp(s, "cpu") == 0) {
        mp->device = SALA_DEVICE_CPU;
        return SALA_OK;
    }
    if (strncmp(s, "cuda", 4) == 0) {
        mp->device = SALA_DEVICE_CUDA;
        if (s[4] == ':') {
            int64_t g;
            if (parse_i64(s + 5, 0, 1023, &g))
                return sala_set_error(SALA_ERR_ARG, "bad device '%s'", s);
            mp->gpu_id = (int)g;
        } else if (s[4]) {
            return sala_set_error(SALA_ERR_ARG, "bad device '%s' (cpu, cuda or cuda:N)", s);
        }
        return SALA_OK;
    }
    return sala_set_error(SALA_ERR_ARG, "unknown device '%s' (cpu, cuda or cuda:N)", s);
}

/* config.json "sala_random_weights": true, or a RANDOM_WEIGHTS file in the folder */
static int random_weights(const char *dir) {
    char *marker = sala_path_join(dir, "RANDOM_WEIGHTS");
    int r = sala_file_exists(marker);
    free(marker);
    if (r)
        return 1;
    char *cfg = sala_path_join(dir, "config.json"), *text = NULL;
    size_t len;
    if (sala_read_file(cfg, &text, &len) == SALA_OK) {
        cJSON *j = cJSON_ParseWithLength(text, len);
        r = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "sala_random_weights"));
        cJSON_Delete(j);
    }
    free(text);
    free(cfg);
    sala_clear_error();
    return r;
}

static int has_tokenizer(const char *dir) {
    char *a = sala_path_join(dir, "tokenizer.json"), *b = sala_path_join(dir, "tokenizer.model");
    int r = sala_file_exists(a) || sala_file_exists(b);
    free(a);
    free(b);
    return r;
}

/* whole stream into a malloc'd string */
static char *read_stream(FILE *f, size_t *len) {
    size_t cap = 4096, n = 0;
    char *buf = xmalloc(cap);
    size_t r;
    while ((r = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (n + 1 >= cap) {
            cap *= 2;
            buf = xrealloc(buf, cap);
        }
    }
    buf[n] = 0;
    *len = n;
    return buf;
}

/* token ids: integers separated by whitespace or commas; [ ] ignored (a JSON array works) */
static sala_status read_ids(const char *path, int32_t **ids, int64_t *n) {
    char *text;
    size_t len;
    if (strcmp(path, "-") == 0) {
        text = read_stream(stdin, &len);
    } else {
        sala_status st = sala_read_file(path, &text, &len);
        if (st != SALA_OK)
            return st;
    }
    int64_t cap = 256, k = 0;
    int32_t *v = xmalloc((size_t)cap * sizeof *v);
    const char *p = text;
    while (*p) {
        if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == ',' || *p == '[' || *p == ']') {
            p++;
            continue;
        }
        char *end;
        errno = 0;
        long long x = strtoll(p, &end, 10);
        if (end == p || errno || x < 0 || x > INT32_MAX) {
            sala_status st =
                sala_set_error(SALA_ERR_FORMAT, "%s: not a token id list (bad entry near '%.20s')", path, p);
            free(v);
            free(text);
            return st;
        }
        if (k == cap) {
            cap *= 2;
            v = xrealloc(v, (size_t)cap * sizeof *v);
        }
        v[k++] = (int32_t)x;
        p = end;
    }
    free(text);
    if (k == 0) {
        free(v);
        return sala_set_error(SALA_ERR_FORMAT, "%s: no token ids", path);
    }
    *ids = v;
    *n = k;
    return SALA_OK;
}

/* ---- progress of a long prefill (session callback) ---- */

/* The engine's progress line (sala_progress_stderr: tokens done, tok/s, time left, for calls of at least
 * min_tokens), and the Ctrl-C flag as the answer: non-zero stops the prefill at the next chunk. */
static int on_progress(void *ud, int64_t done, int64_t total) {
    sala_progress_stderr(ud, done, total);
    return g_stop;
}

/* ---- output ---- */

typedef struct {
    int print_ids;
    int n_ids_printed;
    sala_think *think; /* hide-think: only content goes to stdout */
    int any_text;
    char last_char;
} out_state;

static void on_think_piece(void *ud, int is_reasoning, const char *text, size_t len) {
    out_state *os = ud;
    if (is_reasoning)
        return;
    fwrite(text, 1, len, stdout);
    os->any_text = 1;
    os->last_char = text[len - 1];
}

static int on_token(void *ud, int32_t tok, const char *text, size_t len) {
    out_state *os = ud;
    if (os->print_ids) {
        if (tok >= 0) {
            printf(os->n_ids_printed ? " %d" : "%d", tok);
            os->n_ids_printed++;
        }
    } else if (len) {
        if (os->think) {
            sala_think_push(os->think, text, len);
        } else {
            fwrite(text, 1, len, stdout);
            os->any_text = 1;
            os->last_char = text[len - 1];
        }
    }
    fflush(stdout);
    return g_stop;
}

static void print_summary(const sala_generate_result *r) {
    double pr = r->t_prefill > 0 ? r->n_prompt / r->t_prefill : 0;
    double dr = r->t_decode > 0 ? r->n_decode / r->t_decode : 0;
    fprintf(stderr, "\nprompt:    %lld tokens in %.3f s (%.2f tok/s)\n", (long long)r->n_prompt, r->t_prefill, pr);
    fprintf(stderr, "generated: %lld tokens in %.3f s (%.2f tok/s over %lld decode steps), stop: %s\n",
            (long long)r->n_gen, r->t_decode, dr, (long long)r->n_decode, sala_stop_reason_str(r->stop));
}

/* ---- shared set-up ---- */

typedef struct {
    sala_model *model;
    sala_model_info info;
    sala_tokenizer *tok;
    sala_chat_template *tpl;
    sala_session *sess;
    sala_sampler *smp;
    int32_t eos[16];
    int n_eos;
    sala_progress_state prog;
} run_ctx;

static void ctx_free(run_ctx *c) {
    sala_sampler_free(c->smp);
    sala_session_free(c->sess);
    sala_chat_template_free(c->tpl);
    sala_tokenizer_free(c->tok);
    sala_model_free(c->model);
}

static int fail(const char *cmd, sala_status st) {
    fprintf(stderr, "sala %s: %s (%s)\n", cmd, sala_last_error(), sala_status_str(st));
    return 1;
}

/* model, tokenizer (required unless ids_only), template (when need_tpl), sampler, eos ids */
static int ctx_open(run_ctx *c, const run_opts *o, int ids_only, int need_tpl) {
    const char *cmd = o->is_chat ? "chat" : "run";
    memset(c, 0, sizeof *c);
    sala_model_params mp = sala_model_default_params();
    mp.n_threads = o->threads;
    mp.reference = o->reference;
    mp.verbose = o->verbose;
    sala_status st = parse_device(o->device, &mp);
    if (st)
        return fail(cmd, st);
    double t0 = sala_time();
    st = sala_model_load(o->model_dir, &mp, &c->model);
    if (st)
        return fail(cmd, st);
    sala_model_get_info(c->model, &c->info);
    if (o->verbose)
        fprintf(stderr, "sala: loaded %s in %.2f s: %d layers (%s), vocab %d, max context %d\n", o->model_dir,
                sala_time() - t0, c->info.n_layers, c->info.layer_pattern, c->info.vocab, c->info.max_position);
    if (random_weights(o->model_dir))
        fprintf(stderr,
                "sala: NOTE: %s holds RANDOM weights (a synthetic checkpoint): the output is meaningless "
                "text; this run only shows the engine working.\n",
                o->model_dir);

    const char *tdir = o->tok_dir ? o->tok_dir : o->model_dir;
    if (!ids_only || o->tok_dir || has_tokenizer(tdir)) {
        if (!has_tokenizer(tdir)) {
            fprintf(stderr,
                    "sala %s: no tokenizer in %s (tokenizer.json or tokenizer.model). HINT: give "
                    "--tokenizer DIR%s\n",
                    cmd, tdir, o->is_chat ? "" : ", or token ids with --prompt-ids FILE");
            return 1;
        }
        st = sala_tokenizer_load(tdir, &c->tok);
        if (st)
            return fail(cmd, st);
    }
    if (need_tpl) {
        st = sala_chat_template_load(tdir, &c->tpl);
        if (st)
            return fail(cmd, st);
        if (o->verbose)
            fprintf(stderr, "sala: chat template: %s\n", sala_chat_template_describe(c->tpl));
    }
    st = sala_sampler_new(&o->sp, &c->smp);
    if (st)
        return fail(cmd, st);
    if (o->verbose)
        fprintf(stderr, "sala: seed %llu\n", (unsigned long long)sala_sampler_seed(c->smp));
    c->n_eos = o->ignore_eos ? 0 : sala_generate_eos_ids(c->model, c->tok, c->eos, 16);
    return 0;
}

static int ctx_session(run_ctx *c, const run_opts *o, int64_t n_ctx) {
    c->prog.min_tokens = 1024;
    sala_session_params sp = sala_session_default_params();
    sp.n_ctx = n_ctx;
    sp.chunk = o->chunk;
    sp.progress = on_progress;
    sp.progress_ud = &c->prog;
    sala_status st = sala_session_new(c->model, &sp, &c->sess);
    if (st)
        return fail(o->is_chat ? "chat" : "run", st);
    return 0;
}

/* every id must exist in the model */
static int check_ids(const run_ctx *c, const int32_t *ids, int64_t n, const char *cmd, const char *what) {
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= c->info.vocab) {
            fprintf(stderr, "sala %s: %s token id %d (position %lld) is outside the model's vocabulary of %d ids: %s\n",
                    cmd, what, ids[i], (long long)i, c->info.vocab,
                    c->tok ? "the tokenizer does not belong to this model (give a matching --tokenizer DIR, or "
                             "--prompt-ids)"
                           : "the ids do not belong to this model");
            return 1;
        }
    return 0;
}

static int64_t default_ctx(const run_opts *o, const run_ctx *c, int64_t need) {
    int64_t max = c->info.max_position;
    if (o->n_ctx == 0)
        return max;
    if (o->n_ctx > 0)
        return o->n_ctx;
    int64_t want = o->is_chat ? 16384 : 4096;
    if (need > want)
        want = need;
    return want < max ? want : max;
}

/* sala_generate's parameters for run and chat: c's model, tokenizer, sampler and eos ids, o's token budget
 * and stop strings (gp.stop points into *o), tokens to on_token with *os */
static sala_generate_params gen_params(const run_ctx *c, const run_opts *o, out_state *os) {
    sala_generate_params gp = sala_generate_default_params();
    gp.model = c->model;
    gp.tokenizer = c->tok;
    gp.sampler = c->smp;
    gp.max_tokens = o->n_predict;
    gp.eos_ids = c->eos;
    gp.n_eos = c->n_eos;
    gp.stop = o->stops;
    gp.n_stop = o->n_stops;
    gp.on_token = on_token;
    gp.ud = os;
    return gp;
}

/* ---- sala run ---- */

int cmd_run(int argc, char **argv) {
    run_opts o;
    int r = parse_args(argc, argv, &o);
    if (r)
        return r == 1 ? 0 : 2;

    /* the prompt text or ids first: a bad file fails before the model loads */
    char *text = NULL;
    size_t text_len = 0;
    int32_t *ids = NULL;
    int64_t n_ids = 0;
    sala_status st;
    if (o.ids_file) {
        st = read_ids(o.ids_file, &ids, &n_ids);
        if (st)
            return fail("run", st);
    } else if (o.prompt) {
        text = xstrdup(o.prompt);
        text_len = strlen(text);
    } else if (o.prompt_file) {
        st = sala_read_file(o.prompt_file, &text, &text_len);
        if (st)
            return fail("run", st);
    } else {
        if (isatty(0))
            fprintf(stderr, "sala run: reading the prompt from stdin (end with Ctrl-D)\n");
        text = read_stream(stdin, &text_len);
    }

    run_ctx c;
    if (ctx_open(&c, &o, o.ids_file != NULL, o.chat_wrap)) {
        ctx_free(&c);
        free(text);
        free(ids);
        return 1;
    }
    int rc = 0;
    sala_think *think = NULL;
    if (!ids) {
        char *enc = text;
        size_t enc_len = text_len;
        int add_bos = !o.no_bos && sala_tokenizer_bos(c.tok) >= 0;
        char *rendered = NULL;
        if (o.chat_wrap) {
            sala_chat_message m[2];
            int nm = 0;
            if (o.system)
                m[nm++] = (sala_chat_message){"system", o.system};
            m[nm++] = (sala_chat_message){"user", text};
            st = sala_chat_render(c.tpl, m, nm, SALA_CHAT_ADD_GENERATION_PROMPT, &rendered);
            if (st) {
                rc = fail("run", st);
                goto done;
            }
            enc = rendered;
            enc_len = strlen(rendered);
            add_bos = 0; /* the template writes its own <s> when it has one */
        }
        st = sala_tokenizer_encode(c.tok, enc, enc_len, add_bos, &ids, &n_ids);
        free(rendered);
        if (st) {
            rc = fail("run", st);
            goto done;
        }
        if (n_ids == 0) {
            fprintf(stderr, "sala run: the prompt is empty%s\n", o.no_bos ? " (and --no-bos leaves no token)" : "");
            rc = 1;
            goto done;
        }
    }
    if (check_ids(&c, ids, n_ids, "run", "prompt")) {
        rc = 1;
        goto done;
    }
    int64_t n_ctx = default_ctx(&o, &c, n_ids + (o.n_predict > 0 ? o.n_predict : 0));
    if (ctx_session(&c, &o, n_ctx)) {
        rc = 1;
        goto done;
    }
    if (o.verbose)
        fprintf(stderr, "sala: prompt %lld tokens, context %lld\n", (long long)n_ids, (long long)n_ctx);

    out_state os = {0};
    os.print_ids = o.print_ids;
    if (!o.show_think && !o.print_ids) {
        think = sala_think_new(o.chat_wrap && sala_chat_template_opens_think(c.tpl), on_think_piece, &os);
        os.think = think;
    }
    sala_generate_params gp = gen_params(&c, &o, &os);
    g_run_hard = 1;
    install_sigint();
    sala_generate_result res;
    st = sala_generate(c.sess, ids, n_ids, &gp, &res);
    if (think)
        sala_think_flush(think);
    if (os.print_ids || (os.any_text && os.last_char != '\n'))
        fputc('\n', stdout);
    fflush(stdout);
    if (st != SALA_OK && st != SALA_ERR_INTERRUPTED) {
        rc = fail("run", st);
        goto done;
    }
    print_summary(&res);
    if (res.stop == SALA_STOP_CALLBACK) {
        fprintf(stderr, "sala run: interrupted\n");
        rc = 130;
    }
done:
    sala_think_free(think);
    ctx_free(&c);
    free(text);
    free(ids);
    return rc;
}

/* ---- sala chat ---- */

/* One line from stdin (without the newline) in *line; returns 1 ok, 0 EOF, -1 interrupted (SIGINT). */
static int read_line(char **line, size_t *cap) {
    size_t n = 0;
    for (;;) {
        if (n + 2 > *cap) {
            *cap = *cap ? *cap * 2 : 256;
            *line = xrealloc(*line, *cap);
        }
        char ch;
        ssize_t r = read(0, &ch, 1);
        if (r < 0 && errno == EINTR) {
            if (g_stop)
                return -1;
            continue;
        }
        if (r <= 0) {
            (*line)[n] = 0;
            return n > 0 ? 1 : 0;
        }
        if (ch == '\n')
            break;
        (*line)[n++] = ch;
    }
    (*line)[n] = 0;
    if (n && (*line)[n - 1] == '\r')
        (*line)[--n] = 0;
    return 1;
}

int cmd_chat(int argc, char **argv) {
    run_opts o;
    int r = parse_args(argc, argv, &o);
    if (r)
        return r == 1 ? 0 : 2;
    run_ctx c;
    if (ctx_open(&c, &o, 0, 1)) {
        ctx_free(&c);
        return 1;
    }
    int64_t n_ctx = default_ctx(&o, &c, 0);
    if (ctx_session(&c, &o, n_ctx)) {
        ctx_free(&c);
        return 1;
    }
    fprintf(stderr,
            "sala chat: %s, context %lld tokens, template: %s\n"
            "  /reset forgets the conversation, /exit or Ctrl-D quits, Ctrl-C stops an answer.\n",
            o.model_dir, (long long)n_ctx, sala_chat_template_describe(c.tpl));
    install_sigint();
    g_run_hard = 0;

    out_state os = {0};
    sala_think *think = !o.show_think ? sala_think_new(0, on_think_piece, &os) : NULL;
    os.think = think;
    sala_generate_params gp = gen_params(&c, &o, &os);

    int turns = 0;          /* turns in the session since the last reset */
    int32_t pending = -1;   /* last answer's token not yet fed */
    int close_answer = 0;   /* the last answer still needs its end marker */
    int prompt_sigints = 0; /* Ctrl-C presses at the prompt in a row */
    char *line = NULL;
    size_t cap = 0;
    int rc = 0;
    for (;;) {
        fputs("> ", stdout);
        fflush(stdout);
        g_stop = 0;
        int got = read_line(&line, &cap);
        if (got < 0) {
            if (++prompt_sigints >= 2) {
                fputc('\n', stdout);
                break;
            }
            fputs("\n(Ctrl-C again to quit, or /exit)\n", stdout);
            continue;
        }
        if (got == 0) {
            fputc('\n', stdout);
            break;
        }
        prompt_sigints = 0;
        if (line[0] == 0)
            continue;
        if (strcmp(line, "/exit") == 0 || strcmp(line, "/quit") == 0)
            break;
        if (strcmp(line, "/reset") == 0) {
            sala_session_reset(c.sess);
            sala_sampler_reset(c.smp);
            turns = 0;
            pending = -1;
            close_answer = 0;
            fputs("(conversation cleared)\n", stdout);
            continue;
        }
        if (line[0] == '/' && strchr(line, ' ') == NULL) {
            fprintf(stdout, "(unknown command %s: /reset, /exit)\n", line);
            continue;
        }

        /* the new tokens: [pending] + close of the last answer + this turn */
        sala_chat_message m[2];
        int nm = 0;
        if (turns == 0 && o.system)
            m[nm++] = (sala_chat_message){"system", o.system};
        m[nm++] = (sala_chat_message){"user", line};
        char *turn = NULL;
        sala_status st =
            sala_chat_render(c.tpl, m, nm, SALA_CHAT_ADD_GENERATION_PROMPT | (turns ? SALA_CHAT_CONTINUE : 0), &turn);
        if (st) {
            rc = fail("chat", st);
            break;
        }
        const char *end = close_answer ? sala_chat_assistant_end(c.tpl) : "";
        size_t tl = strlen(end) + strlen(turn);
        char *text = xmalloc(tl + 1);
        snprintf(text, tl + 1, "%s%s", end, turn);
        free(turn);
        int32_t *enc = NULL;
        int64_t n_enc = 0;
        st = sala_tokenizer_encode(c.tok, text, tl, 0, &enc, &n_enc);
        free(text);
        if (st) {
            rc = fail("chat", st);
            break;
        }
        int64_t n_in = n_enc + (pending >= 0);
        int32_t *in = xmalloc((size_t)n_in * sizeof *in);
        if (pending >= 0)
            in[0] = pending;
        memcpy(in + (pending >= 0), enc, (size_t)n_enc * sizeof *enc);
        free(enc);
        if (check_ids(&c, in, n_in, "chat", "input")) {
            free(in);
            rc = 1;
            break;
        }

        os.any_text = 0;
        os.last_char = 0;
        if (think)
            sala_think_reset(think, sala_chat_template_opens_think(c.tpl));
        int64_t pos_before = sala_session_pos(c.sess);
        sala_generate_result res;
        st = sala_generate(c.sess, in, n_in, &gp, &res);
        free(in);
        if (think)
            sala_think_flush(think);
        if (os.any_text && os.last_char != '\n')
            fputc('\n', stdout);
        fflush(stdout);
        if (st == SALA_ERR_CONTEXT) {
            fprintf(stdout, "(%s)\n", sala_last_error());
            continue; /* nothing was fed: the conversation is as it was */
        }
        if (st == SALA_ERR_INTERRUPTED || (st != SALA_OK && sala_session_pos(c.sess) != pos_before)) {
            /* stopped (or failed) inside the prefill: the session holds part of this turn */
            if (st != SALA_ERR_INTERRUPTED)
                fprintf(stderr, "sala chat: %s\n", sala_last_error());
            sala_session_reset(c.sess);
            sala_sampler_reset(c.smp);
            turns = 0;
            pending = -1;
            close_answer = 0;
            fputs("(interrupted while reading the message: the conversation was cleared)\n", stdout);
            continue;
        }
        if (st != SALA_OK) {
            rc = fail("chat", st);
            break;
        }
        turns++;
        pending = res.pending_token;
        close_answer = 1; /* eos is never fed; every other stop leaves the answer open too */
        if (res.stop == SALA_STOP_CALLBACK)
            fputs("(stopped)\n", stdout);
        else if (res.stop == SALA_STOP_CONTEXT)
            fputs("(the context is full: /reset to start a new conversation)\n", stdout);
        else if (res.stop == SALA_STOP_MAX_TOKENS)
            fputs("(answer cut at -n tokens)\n", stdout);
        if (o.verbose)
            print_summary(&res);
    }
    free(line);
    sala_think_free(think);
    ctx_free(&c);
    return rc;
}
