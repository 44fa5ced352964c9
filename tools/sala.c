/* sala.c — the command line: `sala <command> [options]`, one file per command under tools/. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmds.h"

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} commands[] = {
    {"run", cmd_run, "generate text from a prompt (streamed)"},
    {"chat", cmd_chat, "interactive multi-turn chat"},
    {"serve", cmd_serve, "OpenAI-compatible HTTP server"},
    {"logits", cmd_logits, "write the logits of a token sequence (testing interface)"},
    {"info", cmd_info, "model summary and memory plan"},
    {"synth", cmd_synth, "write a checkpoint with random weights (tests, demos, benchmarks)"},
    {"tokenize", cmd_tokenize, "text on stdin to token ids"},
    {"detokenize", cmd_detokenize, "token ids on stdin to text"},
    {"bench", cmd_bench, "prefill and decode speed at long contexts"},
};

static void usage(FILE *f) {
    fprintf(f, "sala — inference engine for MiniCPM-SALA (sparse + linear attention hybrids)\n\n"
               "usage: sala <command> [options]     (sala <command> --help for its options)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-11s %s\n", commands[i].name, commands[i].help);
}

int main(int argc, char **argv) {
    /* OpenMP threads that spin while waiting make every parallel region crawl when the machine has other
     * work (measured: 1.8 vs 98 tok/s decoding a small model on a loaded 2-core machine), and cost little
     * when it has none. libgomp reads its settings when it loads, so set the default and start again. */
    if (!getenv("OMP_WAIT_POLICY")) {
        setenv("OMP_WAIT_POLICY", "passive", 1);
        execv("/proc/self/exe", argv);
    }
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "sala: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
