/* runutil.h: model options, loading and session setup shared by `infllm run` and
 * `infllm bench run` (tools/run.c, tools/bench_run.c). */
#ifndef INFLLM_RUNUTIL_H
#define INFLLM_RUNUTIL_H

#include <stdint.h>

#include "model.h"
#include "opts.h"
#include "tokenizer.h"

typedef struct run_opts {
    const char *prog; /* the command's name that heads its messages ("infllm run", "infllm bench run", ...) */
    const char *model;
    int ctx_i;
    int64_t ctx;
    int threads;
    const char *attn;    /* dense | sparse | auto */
    const char *kv_type; /* f32 | f16 | bf16 */
    int chunk;
    int topk, block_size, local_blocks, init_blocks, dense_len, kernel_size, kernel_stride; /* OPTS_INT_UNSET: the model's */
} run_opts;

#define RUN_MODEL_OPTS(o)                                                                                     \
    {"--model", "-m", OPT_STR, &(o).model, "PATH", "model: a .gguf file or a Hugging Face folder"},          \
    {"--ctx", "-c", OPT_INT, &(o).ctx_i, "N", "context: KV cache capacity in tokens (4096)"},              \
    {"--threads", "-t", OPT_INT, &(o).threads, "N", "threads (0: all cores)"},                                \
    {"--attn", NULL, OPT_STR, &(o).attn, "MODE", "attention: dense | sparse | auto (auto: dense below --dense-len)"}, \
    {"--topk", NULL, OPT_INT, &(o).topk, "N", "InfLLM-V2 dynamic blocks per query (model config or 64)"},     \
    {"--block-size", NULL, OPT_INT, &(o).block_size, "N", "InfLLM-V2 block size in tokens (model config or 64)"},            \
    {"--local-blocks", NULL, OPT_INT, &(o).local_blocks, "N", "InfLLM-V2 forced local blocks (model config or 32)"},         \
    {"--init-blocks", NULL, OPT_INT, &(o).init_blocks, "N", "InfLLM-V2 forced initial blocks (model config or 1)"},          \
    {"--dense-len", NULL, OPT_INT, &(o).dense_len, "N", "auto mode: dense while kv_len < N (model config or 8192; -1: always sparse)"}, \
    {"--kernel-size", NULL, OPT_INT, &(o).kernel_size, "N", "InfLLM-V2 c1 kernel size (model config or 32)"},                \
    {"--kernel-stride", NULL, OPT_INT, &(o).kernel_stride, "N", "InfLLM-V2 c1 kernel stride (model config or 16)"},          \
    {"--kv-type", NULL, OPT_STR, &(o).kv_type, "T", "KV cache storage: f16 | f32 | bf16 (f16, as llama.cpp)"},  \
    {"--chunk", NULL, OPT_INT, &(o).chunk, "N", "prefill chunk in tokens (512)"}

typedef struct run_ctx {
    mdl_model *m;
    infllm_tokenizer *tok;
    char tok_err[512];
} run_ctx;

/* the defaults, for the command prog (o->prog: run_opts_check, run_load and run_session name it in their messages) */
void run_opts_default(run_opts *o, const char *prog);
int run_opts_check(run_opts *o);              /* prints the problem, returns non-zero */
int run_threads(int t);                        /* resolved thread count */
/* Loads the model (and its tokenizer when possible), prints info unless quiet. */
int run_load(const run_opts *o, run_ctx *r, int quiet);
void run_unload(run_ctx *r);
/* Attention params from the options and the model's defaults. */
void run_params(const run_opts *o, const mdl_model *m, infllm_params *p);
/* Memory check (estimate printed unless quiet; error when it does not fit) and session. */
mdl_session *run_session(const run_opts *o, run_ctx *r, int quiet);
const char *run_attn_desc(const run_opts *o, int64_t kv_len);

/* o for one attention mode of a comparison: --attn set to mode ("dense", "sparse", "auto"), and
 * sparse made sparse at every length (dense_len -1) */
run_opts run_opts_mode(const run_opts *o, const char *mode);
/* 0 when a chat-formatted text already starts with the tokenizer's BOS text (encode it without
 * adding one), else -1 (the tokenizer's default) */
int run_chat_add_bos(const infllm_tokenizer *tok, const char *text);
/* text[0..len) as token ids in a malloc'ed array with room for `extra` more; *n the count. NULL
 * with "prog: out of memory ..." on stderr. */
int32_t *run_tokenize(const char *prog, const infllm_tokenizer *tok, const char *text, size_t len, int add_bos,
                      int special, size_t extra, int64_t *n);

/* The most bytes a text input (run -f, eval ppl -f) may have: 256 MiB, ~60M tokens, far more than a
 * prompt or a perplexity text on the CPU; a device or endless pipe given as the file stops there. */
#define RUN_TEXT_MAX (256 << 20)

/* The whole file, NUL-terminated (*len without the NUL); NULL with a message naming prog on stderr
 * (cannot open, a folder, more than RUN_TEXT_MAX bytes, read error, out of memory). Pipes are read
 * (-f /dev/stdin). */
char *run_read_file(const char *prog, const char *path, size_t *len);

/* `infllm bench run` (tools/bench_run.c), dispatched by tools/bench.c */
int cmd_bench_run(int argc, char **argv);

#endif
