/* bench.c: placeholder until the CPU helper lands `infllm bench`. */
#include <stdio.h>

#include "commands.h"

int cmd_bench(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "infllm bench: not built yet\n");
    return 1;
}
