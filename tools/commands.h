/* commands.h: the subcommands of the infllm command. Each returns the process exit status
 * (0 ok, 1 runtime failure, 2 usage error) and prints its own messages. */
#ifndef INFLLM_COMMANDS_H
#define INFLLM_COMMANDS_H

int cmd_attn(int argc, char **argv);   /* tools/attn.c  */
int cmd_bench(int argc, char **argv);  /* tools/bench.c: bench attn | bench peak | bench run */
int cmd_run(int argc, char **argv);    /* tools/run.c   */
int cmd_bench_run(int argc, char **argv); /* tools/bench_run.c: `infllm bench run` */
int cmd_eval(int argc, char **argv);   /* tools/eval.c: `infllm eval ppl` */

#endif
