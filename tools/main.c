/*
 * main.c: the infllm command. Subcommands:
 *   infllm attn ...        InfLLM-V2 attention on .npy tensors (tools/attn.c)
 *   infllm bench ...       benchmarks: attn, peak, run, backward (tools/bench.c)
 *   infllm run ...         run a model (tools/run.c)
 *   infllm eval ...        ppl / passkey evaluation of a model, dense against sparse (tools/eval.c)
 *   infllm --version       version, commit, SIMD level, llama.cpp numerics, quantized products' kernels, threads, CUDA
 *   infllm help [COMMAND]  this list, or COMMAND's --help
 */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "ggmlc.h"
#include "infllm.h"
#include "quant.h"

static void print_version(void) {
    printf("infllm %s\n", infllm_version());
    printf("commit: %s\n", infllm_build_commit());
    printf("simd: %s\n", infllm_cpu_simd_level());
    const int dot = infllm_cpu_bf16_dot();
    printf("bf16 attention: %s\n", dot == 2   ? "bf16 dot-product kernels (AMX tiles)"
                                   : dot != 0 ? "bf16 dot-product kernels (vdpbf16ps)"
                                              : "f32 FMA kernels");
    /* whose bits the model runtime's dense f16 attention and SwiGLU compute (docs/MODEL.md "Numerics") */
    printf("llama.cpp numerics: %s build's (INFLLM_LLAMA_ORDER=avx2|avx512 picks)\n",
           ggmlc_order() == GGMLC_ORDER_AVX2 ? "its AVX2" : "its AVX-512");
    /* the model's quantized products: avx512-vnni (+amx-int8: the K-quants' prefill on AMX-INT8 tiles), avx2, scalar */
    printf("quantized products: %s\n", quant_kernel_name());
    printf("threads: %d\n", infllm_cpu_num_threads());
    char dev[512];
    const int usable = infllm_cuda_device_info(dev, sizeof dev);
    if (!infllm_cuda_built())
        printf("cuda: off (built without CUDA)\n");
    else if (usable)
        printf("cuda: on, %s\n", dev);
    else if (!strcmp(dev, "no CUDA device"))
        printf("cuda: on (no CUDA device found)\n");
    else
        printf("cuda: on, but the device is not usable (compute capability 8.0+ and code for it needed): %s\n", dev);
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: infllm <command> [options]\n"
            "\n"
            "commands:\n"
            "  run      run a model (GGUF file or Hugging Face folder) with InfLLM-V2 attention\n"
            "  attn     InfLLM-V2 attention on .npy tensors (q, k, v), writes .npy results\n"
            "  bench    benchmarks: 'bench attn', 'bench peak', 'bench run', 'bench backward'\n"
            "  eval     quality, dense vs InfLLM-V2 sparse: 'eval ppl' (perplexity), 'eval passkey' (retrieval)\n"
            "  version  print version, commit, SIMD level, threads and CUDA status (also --version)\n"
            "\n"
            "'infllm <command> --help' (or 'infllm help <command>') describes each command's options.\n");
}

/* a command's --help: `infllm help CMD [WORDS]` runs `infllm CMD [WORDS] --help`, so that a word the command does not
 * take is refused by it (`help run extra`: an unexpected argument) and `help bench attn` lists bench attn's options */
static int help_for(int argc, char **argv) {
    const char *cmd = argv[0];
    if (!strcmp(cmd, "version") || !strcmp(cmd, "help")) {
        if (argc > 1) {
            fprintf(stderr, "infllm help: '%s' takes no further words (got '%s')\n\n", cmd, argv[1]);
            usage(stderr);
            return 2;
        }
        if (!strcmp(cmd, "help")) usage(stdout);
        else printf("usage: infllm version (or infllm --version)\nprints the version, commit, SIMD level, threads and "
                    "CUDA status; takes no options\n");
        return 0;
    }
    int (*fn)(int, char **) = !strcmp(cmd, "attn")    ? cmd_attn
                              : !strcmp(cmd, "bench") ? cmd_bench
                              : !strcmp(cmd, "run")   ? cmd_run
                              : !strcmp(cmd, "eval")  ? cmd_eval
                                                      : NULL;
    if (!fn) {
        fprintf(stderr, "infllm help: unknown command '%s'\n\n", cmd);
        usage(stderr);
        return 2;
    }
    static char help_flag[] = "--help";
    char *args[64];
    if (argc > 62) {
        fprintf(stderr, "infllm help: too many words\n");
        return 2;
    }
    for (int i = 0; i < argc; i++) args[i] = argv[i];
    args[argc] = help_flag;
    args[argc + 1] = NULL;
    return fn(argc + 1, args);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0 || strcmp(cmd, "-v") == 0) {
        if (argc > 2) { /* 'infllm version --json' printed the version and exited 0 */
            fprintf(stderr, "infllm %s: takes no arguments (got '%s')\n\n", cmd, argv[2]);
            usage(stderr);
            return 2;
        }
        print_version();
        return 0;
    }
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        if (argc > 2) return help_for(argc - 2, argv + 2); /* 'infllm help run' printed the command list */
        usage(stdout);
        return 0;
    }
    if (strcmp(cmd, "attn") == 0) return cmd_attn(argc - 1, argv + 1);
    if (strcmp(cmd, "bench") == 0) return cmd_bench(argc - 1, argv + 1);
    if (strcmp(cmd, "run") == 0) return cmd_run(argc - 1, argv + 1);
    if (strcmp(cmd, "eval") == 0) return cmd_eval(argc - 1, argv + 1);
    fprintf(stderr, "infllm: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
