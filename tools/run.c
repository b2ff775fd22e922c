/* run.c: placeholder until the model helper lands `infllm run`. */
#include <stdio.h>

#include "commands.h"

int cmd_run(int argc, char **argv) {
    (void)argc;
    (void)argv;
    fprintf(stderr, "infllm run: not built yet\n");
    return 1;
}
