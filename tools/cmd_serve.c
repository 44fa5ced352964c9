/* cmd_serve.c — `sala serve`: loads a checkpoint, its tokenizer and chat template, and runs the
 * OpenAI-compatible HTTP server (src/server/) until SIGINT / SIGTERM. Argument parsing and start-up only;
 * everything about HTTP, the slots and the protocol is in src/server/ (design note in
 * src/server/internal.h; user documentation in docs/SERVER.md). */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_common.h"
#include "cmds.h"
#include "sala.h"
#include "sala_chat.h"
#include "sala_tokenizer.h"
#include "server/server.h"
#include "util.h"

static void serve_usage(FILE *f) {
    fprintf(f, "usage: sala serve -m DIR [options]\n"
               "\n"
               "OpenAI-compatible HTTP server: POST /v1/chat/completions, POST /v1/completions (both with\n"
               "\"stream\": true as server-sent events), GET /v1/models, GET /health. See docs/SERVER.md.\n"
               "\n"
               "  -m, --model DIR        checkpoint folder (config.json + safetensors)\n"
               "      --tokenizer DIR    tokenizer / chat template folder (default: the checkpoint folder)\n"
               "      --host ADDR        address to listen on (default 127.0.0.1; 0.0.0.0 exposes the server)\n"
               "      --port N           port (default 8080; 0 = any free port, printed at start)\n"
               "      --api-key KEY      require 'Authorization: Bearer KEY' on every endpoint but /health\n"
               "                         (default: $SALA_API_KEY when set)\n"
               "      --alias NAME       model id served in /v1/models and accepted in \"model\"\n"
               "                         (default: the checkpoint folder's name)\n"
               "  -c, --ctx N            context length of each slot in tokens, k suffix ok (default: the model's)\n"
               "  -np, --parallel N      slots: requests generated at the same time, one session each (default 1)\n"
               "      --max-queue N      requests waiting for a slot before new ones get 503 (default 256)\n"
               "      --max-body SIZE    largest request body, e.g. 16M, 512K (default 16M); larger -> 413\n"
               "      --timeout S        idle connection timeout in seconds (default 120; 0 = none)\n"
               "      --keep-alive S     SSE comment on a stream silent for S seconds, e.g. during a long prefill\n"
               "                         (default 10; 0 = never)\n"
               "  -t, --threads N        CPU threads (default: all cores)\n"
               "      --device DEV       cpu or cuda[:N] (default cpu)\n"
               "      --chunk N          prefill chunk size in tokens (default: the engine's)\n"
               "  -q, --quiet            no per-request log lines on stderr\n"
               "  -h, --help             this help\n");
}

static int parse_size(const char *s, size_t *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || v < 0)
        return -1;
    double mul = 1;
    if (*end == 'k' || *end == 'K')
        mul = 1024, end++;
    else if (*end == 'm' || *end == 'M')
        mul = 1024.0 * 1024, end++;
    else if (*end == 'g' || *end == 'G')
        mul = 1024.0 * 1024 * 1024, end++;
    if (*end == 'i' || *end == 'I')
        end++;
    if (*end == 'b' || *end == 'B')
        end++;
    if (*end)
        return -1;
    v *= mul;
    if (v > 1e15)
        return -1;
    *out = (size_t)v;
    return 0;
}

static int parse_int(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int cmd_serve(int argc, char **argv) {
    srv_options o = srv_default_options();
    const char *model_dir = NULL, *tok_dir = NULL, *alias = NULL, *device = "cpu";
    long threads = 0, chunk = 0, ctx = 0;
    o.api_key = getenv("SALA_API_KEY");
    if (o.api_key && !o.api_key[0])
        o.api_key = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n;
#define NEED_VALUE()                                                                                                   \
    do {                                                                                                               \
        if (!v) {                                                                                                      \
            fprintf(stderr, "sala serve: %s needs a value (see --help)\n", a);                                         \
            return 2;                                                                                                  \
        }                                                                                                              \
        i++;                                                                                                           \
    } while (0)
#define BAD_VALUE(what)                                                                                                \
    do {                                                                                                               \
        fprintf(stderr, "sala serve: invalid value for %s: '%s' (%s)\n", a, v, what);                                  \
        return 2;                                                                                                      \
    } while (0)
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            serve_usage(stdout);
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            NEED_VALUE();
            model_dir = v;
        } else if (!strcmp(a, "--tokenizer")) {
            NEED_VALUE();
            tok_dir = v;
        } else if (!strcmp(a, "--host")) {
            NEED_VALUE();
            o.host = v;
        } else if (!strcmp(a, "--port")) {
            NEED_VALUE();
            if (parse_int(v, 0, 65535, &n))
                BAD_VALUE("a port number 0..65535");
            o.port = (int)n;
        } else if (!strcmp(a, "--api-key")) {
            NEED_VALUE();
            o.api_key = v[0] ? v : NULL;
        } else if (!strcmp(a, "--alias")) {
            NEED_VALUE();
            alias = v;
        } else if (!strcmp(a, "-c") || !strcmp(a, "--ctx") || !strcmp(a, "--ctx-size")) {
            NEED_VALUE();
            int64_t c = cli_parse_count(v);
            if (c < 0 || c > ((int64_t)1 << 40))
                BAD_VALUE("a token count >= 0, e.g. 4096 or 32k");
            ctx = (long)c;
        } else if (!strcmp(a, "-np") || !strcmp(a, "--parallel")) {
            NEED_VALUE();
            if (parse_int(v, 1, 256, &n))
                BAD_VALUE("1..256");
            o.parallel = (int)n;
        } else if (!strcmp(a, "--max-queue")) {
            NEED_VALUE();
            if (parse_int(v, 0, 1000000, &n))
                BAD_VALUE("0..1000000");
            o.max_queue = (int)n;
        } else if (!strcmp(a, "--max-body")) {
            NEED_VALUE();
            if (parse_size(v, &o.max_body) || o.max_body < 64)
                BAD_VALUE("a size of at least 64 bytes, e.g. 16M");
        } else if (!strcmp(a, "--timeout")) {
            NEED_VALUE();
            if (parse_int(v, 0, 86400, &n))
                BAD_VALUE("seconds 0..86400");
            o.timeout_s = (int)n;
        } else if (!strcmp(a, "--keep-alive")) {
            NEED_VALUE();
            char *end;
            o.keep_alive_s = strtod(v, &end);
            if (end == v || *end || !(o.keep_alive_s >= 0 && o.keep_alive_s <= 86400))
                BAD_VALUE("seconds, e.g. 10 or 0.5; 0 = never");
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            NEED_VALUE();
            if (parse_int(v, 0, 4096, &threads))
                BAD_VALUE("a thread count");
        } else if (!strcmp(a, "--device")) {
            NEED_VALUE();
            device = v;
        } else if (!strcmp(a, "--chunk")) {
            NEED_VALUE();
            int64_t c = cli_parse_count(v);
            if (c < 0 || c > (1 << 24))
                BAD_VALUE("a token count");
            chunk = (long)c;
        } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
            o.log = 0;
        } else {
            fprintf(stderr, "sala serve: unknown option '%s' (see --help)\n", a);
            return 2;
        }
#undef NEED_VALUE
#undef BAD_VALUE
    }
    if (!model_dir) {
        fprintf(stderr, "sala serve: -m DIR is required (see --help)\n");
        return 2;
    }
    o.n_ctx = ctx;
    o.chunk = (int)chunk;

    sala_model_params mp = sala_model_default_params();
    mp.n_threads = (int)threads;
    if (!strcmp(device, "cpu"))
        mp.device = SALA_DEVICE_CPU;
    else if (!strncmp(device, "cuda", 4)) {
        mp.device = SALA_DEVICE_CUDA;
        if (device[4] == ':')
            mp.gpu_id = atoi(device + 5);
        else if (device[4]) {
            fprintf(stderr, "sala serve: unknown device '%s' (cpu, cuda, cuda:N)\n", device);
            return 2;
        }
    } else {
        fprintf(stderr, "sala serve: unknown device '%s' (cpu, cuda, cuda:N)\n", device);
        return 2;
    }

    /* the model id: --alias, else the folder's last component */
    char name[1024];
    if (alias)
        snprintf(name, sizeof name, "%s", alias);
    else {
        char tmp[1024];
        snprintf(tmp, sizeof tmp, "%s", model_dir);
        size_t l = strlen(tmp);
        while (l > 1 && tmp[l - 1] == '/')
            tmp[--l] = 0;
        const char *base = strrchr(tmp, '/');
        snprintf(name, sizeof name, "%s", base ? base + 1 : tmp);
        if (!name[0])
            snprintf(name, sizeof name, "sala");
    }
    o.model_id = name;

    /* signals: blocked here, before any thread starts, so every thread inherits the mask and the main
       thread alone takes them with sigwait() */
    signal(SIGPIPE, SIG_IGN);
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    sala_model *model = NULL;
    sala_tokenizer *tok = NULL;
    sala_chat_template *tpl = NULL;
    srv_server *srv = NULL;
    int rc = 1;
    sala_status st = sala_model_load(model_dir, &mp, &model);
    if (st != SALA_OK) {
        fprintf(stderr, "sala serve: cannot load the model: %s\n", sala_last_error());
        goto done;
    }
    const char *td = tok_dir ? tok_dir : model_dir;
    st = sala_tokenizer_load(td, &tok);
    if (st != SALA_OK) {
        fprintf(stderr, "sala serve: cannot load the tokenizer from %s: %s%s\n", td, sala_last_error(),
                tok_dir ? "" : " (the server needs one: put it in the checkpoint folder or pass --tokenizer DIR)");
        goto done;
    }
    st = sala_chat_template_load(td, &tpl);
    if (st != SALA_OK) {
        fprintf(stderr, "sala serve: cannot load the chat template from %s: %s\n", td, sala_last_error());
        goto done;
    }
    st = srv_start(model, tok, tpl, &o, &srv);
    if (st != SALA_OK) {
        fprintf(stderr, "sala serve: %s\n", sala_last_error());
        goto done;
    }
    {
        const char *h = o.host;
        int v6 = strchr(h, ':') != NULL;
        int loopback = !strcmp(h, "localhost") || !strncmp(h, "127.", 4) || !strcmp(h, "::1");
        if (!loopback && !o.api_key)
            fprintf(stderr,
                    "sala serve: WARNING: listening on %s without --api-key: anyone who can reach this "
                    "address can use the server\n",
                    h);
        fprintf(stderr,
                "sala serve: model '%s', %d slot%s, chat template: %s\n"
                "sala serve: listening on http://%s%s%s:%d%s\n",
                name, o.parallel, o.parallel == 1 ? "" : "s", sala_chat_template_describe(tpl), v6 ? "[" : "", h,
                v6 ? "]" : "", srv_port(srv), o.api_key ? " (API key required)" : "");
        fflush(stderr);
    }
    int sig = 0;
    sigwait(&sigs, &sig);
    fprintf(stderr, "sala serve: %s received, stopping\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    srv_stop(srv);
    rc = 0;
done:
    sala_chat_template_free(tpl);
    sala_tokenizer_free(tok);
    sala_model_free(model);
    return rc;
}
