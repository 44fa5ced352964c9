/* cmds.h — the subcommands of the `sala` binary, one file each under tools/. Each takes the arguments
 * after the subcommand name (argv[0] is the subcommand) and returns the process exit status. */
#ifndef SALA_CMDS_H
#define SALA_CMDS_H

int cmd_logits(int argc, char **argv);     /* tools/cmd_logits.c */
int cmd_info(int argc, char **argv);       /* tools/cmd_info.c */
int cmd_synth(int argc, char **argv);      /* tools/cmd_synth.c */
int cmd_tokenize(int argc, char **argv);   /* tools/cmd_tokenize.c */
int cmd_detokenize(int argc, char **argv); /* tools/cmd_tokenize.c */
int cmd_run(int argc, char **argv);        /* tools/cmd_run.c */
int cmd_chat(int argc, char **argv);       /* tools/cmd_run.c */
int cmd_serve(int argc, char **argv);      /* tools/cmd_serve.c */
int cmd_bench(int argc, char **argv);      /* tools/cmd_bench.c */

#endif
