/* run.c: `infllm run`: generate text with a GGUF or Hugging Face model, attention through the
 * InfLLM-V2 decode cache (dense, sparse, or the automatic switch). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "commands.h"
#include "infllm.h"
#include "mcommon.h"
#include "model.h"
#include "mtok.h"
#include "npy.h"
#include "opts.h"
#include "portable.h"
#include "quant.h"
#include "runutil.h"
#include "sample.h"
#include "tokenizer.h"

/* --dump-qkv: the prompt's attention inputs of the chosen layers, collected through the
 * session's qkv_hook and written as .npy files after the prefill */
typedef struct qkv_dump {
    const char *dir;
    int n_layer;
    int *slot;        /* [n_layer]: index into buf, or -1 when the layer is not dumped */
    float **buf;      /* [nsel * 3]: q [T][Q], k [T][KV], v [T][KV] of each dumped layer */
    int *layers;      /* [nsel] */
    int nsel;
    int64_t T, pos0, Q, KV;
} qkv_dump;

static int qkv_collect(void *ud, int layer, int64_t pos, int n, const float *q, const float *k, const float *v) {
    qkv_dump *d = ud;
    if (layer < 0 || layer >= d->n_layer || d->slot[layer] < 0) return 0;
    int64_t r = pos - d->pos0;
    if (r < 0 || n < 0 || r + n > d->T) return -1;
    float **b = d->buf + (size_t)d->slot[layer] * 3;
    memcpy(b[0] + r * d->Q, q, sizeof(float) * (size_t)n * (size_t)d->Q);
    memcpy(b[1] + r * d->KV, k, sizeof(float) * (size_t)n * (size_t)d->KV);
    memcpy(b[2] + r * d->KV, v, sizeof(float) * (size_t)n * (size_t)d->KV);
    return 0;
}

static void qkv_dump_free(qkv_dump *d) {
    if (d->buf)
        for (int i = 0; i < d->nsel * 3; i++) free(d->buf[i]);
    free(d->buf);
    free(d->slot);
    free(d->layers);
    memset(d, 0, sizeof *d);
}

static const char *layer_item(void *ctx, int i, const char *text, size_t len) {
    char *end;
    errno = 0;
    const long x = strtol(text, &end, 10);
    if (end != text + len || errno || x < 0 || x > 1000000)
        return "is not a layer number (0 to 1000000; or give 'all')";
    ((int *)ctx)[i] = (int)x;
    return NULL;
}

/* "0,10,20" or "all" -> layers (count, 0 for all with *out NULL, -1 with a message for a bad list, -2 with one when
 * out of memory); ranges are checked later */
static int parse_layers(const char *s, int **out) {
    *out = NULL;
    if (strcmp(s, "all") == 0) return 0;
    int cap = 1; /* the list's items at the most */
    for (const char *p = s; *p; p++) cap += *p == ',';
    int *a = malloc(sizeof(int) * (size_t)cap);
    if (!a) {
        fprintf(stderr, "infllm run: out of memory (the --dump-layers list)\n");
        return -2;
    }
    const int n = opts_list("infllm run", "--dump-layers", s, cap, layer_item, a);
    if (n < 0) free(a);
    else *out = a;
    return n;
}

/* creates the directory when missing and checks that a file can be written in it */
static int dump_dir_ok(const char *dir) {
    struct stat sb;
    if (stat(dir, &sb) != 0 && pf_mkdir(dir) != 0) {
        fprintf(stderr, "infllm run: cannot create --dump-qkv directory '%s': %s\n", dir, strerror(errno));
        return -1;
    }
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "infllm run: --dump-qkv '%s' is not a directory\n", dir);
        return -1;
    }
    char probe[4096];
    snprintf(probe, sizeof probe, "%s/.infllm-probe.tmp.%ld", dir, (long)getpid());
    FILE *f = fopen(probe, "wb");
    if (!f) {
        fprintf(stderr, "infllm run: cannot write in the --dump-qkv directory '%s': %s\n", dir, strerror(errno));
        return -1;
    }
    fclose(f);
    remove(probe);
    return 0;
}

/* 1 when path names a file the dump would write into dir (existing or not, as --dump-logits' need not be):
 * tokens.npy or {q,k,v}_layer<L>.npy there (any layer: which ones are written is known only once the model has
 * loaded) */
static int qkv_dump_target(const char *path, const char *dir) {
    if (!opts_path_in_dir(path, dir)) return 0;
    const char *b = pf_last_sep(path);
    b = b ? b + 1 : path;
    if (!strcmp(b, "tokens.npy")) return 1;
    if (!(b[0] == 'q' || b[0] == 'k' || b[0] == 'v') || strncmp(b + 1, "_layer", 6) != 0) return 0;
    const char *d = b + 7, *e = d;
    while (*e >= '0' && *e <= '9') e++;
    return e > d && !strcmp(e, ".npy");
}

/* selects the layers (NULL list: all), allocates [T] rows for each; prints the problem */
static int qkv_dump_init(qkv_dump *d, const mdl_model *m, const int *list, int nlist, int64_t T, int64_t pos0,
                         int quiet) {
    const mdl_config *c = &m->cfg;
    d->n_layer = c->n_layer;
    d->T = T;
    d->pos0 = pos0;
    d->Q = (int64_t)c->n_head * c->head_dim;
    d->KV = (int64_t)c->n_head_kv * c->head_dim;
    d->slot = malloc(sizeof(int) * (size_t)c->n_layer);
    d->layers = malloc(sizeof(int) * (size_t)c->n_layer);
    if (!d->slot || !d->layers) {
        fprintf(stderr, "infllm run: out of memory\n");
        return 1;
    }
    for (int l = 0; l < c->n_layer; l++) d->slot[l] = list ? -1 : l;
    for (int i = 0; list && i < nlist; i++) {
        if (list[i] >= c->n_layer) return 2; /* checked after loading */
        d->slot[list[i]] = 0;
    }
    for (int l = 0; l < c->n_layer; l++)
        if (d->slot[l] >= 0) {
            d->slot[l] = d->nsel;
            d->layers[d->nsel++] = l;
        }
    size_t bytes = (size_t)d->nsel * (size_t)T * (size_t)(d->Q + 2 * d->KV) * sizeof(float);
    if (!quiet)
        fprintf(stderr, "dump: q/k/v of %d layer(s) x %lld tokens (%.1f MiB) into %s\n", d->nsel, (long long)T,
                (double)bytes / (1 << 20), d->dir);
    d->buf = calloc((size_t)d->nsel * 3, sizeof(float *));
    for (int i = 0; d->buf && i < d->nsel * 3; i++) {
        d->buf[i] = malloc(sizeof(float) * (size_t)T * (size_t)(i % 3 == 0 ? d->Q : d->KV));
        if (!d->buf[i]) break;
    }
    if (!d->buf || (d->nsel && !d->buf[d->nsel * 3 - 1])) {
        fprintf(stderr, "infllm run: out of memory for --dump-qkv (%zu bytes)\n", bytes);
        return 1;
    }
    return 0;
}

static int qkv_dump_write(const qkv_dump *d, const mdl_model *m, const int32_t *ids, int quiet) {
    const mdl_config *c = &m->cfg;
    char path[4096], err[512];
    int64_t tshape[1] = {d->T};
    snprintf(path, sizeof path, "%s/tokens.npy", d->dir);
    if (npy_write(path, "<i4", 1, tshape, ids, err, sizeof err)) {
        fprintf(stderr, "infllm run: %s\n", err);
        return -1;
    }
    for (int i = 0; i < d->nsel; i++) {
        static const char *const names[3] = {"q", "k", "v"};
        for (int j = 0; j < 3; j++) {
            int64_t shape[3] = {d->T, j == 0 ? c->n_head : c->n_head_kv, c->head_dim};
            snprintf(path, sizeof path, "%s/%s_layer%d.npy", d->dir, names[j], d->layers[i]);
            if (npy_write(path, "<f4", 3, shape, d->buf[(size_t)i * 3 + (size_t)j], err, sizeof err)) {
                fprintf(stderr, "infllm run: %s\n", err);
                return -1;
            }
        }
    }
    if (!quiet)
        fprintf(stderr, "dump: wrote tokens.npy and {q,k,v}_layer<L>.npy for %d layer(s) in %s\n", d->nsel, d->dir);
    return 0;
}

static void progress_bar(void *ud, int64_t done, int64_t total) {
    double t0 = *(double *)ud, el = mdl_now() - t0;
    int w = 30, f = (int)(w * done / (total ? total : 1));
    fprintf(stderr, "\rprefill [");
    for (int i = 0; i < w; i++) fputc(i < f ? '#' : ' ', stderr);
    fprintf(stderr, "] %lld/%lld tokens %.0f tok/s", (long long)done, (long long)total, el > 0 ? done / el : 0.0);
    if (done == total) fputc('\n', stderr);
    fflush(stderr);
}

/* --tokens "1,2 3": ids into ids[] (NULL: only counted), the count, or -1 after a message (opts_token_ids) */
static int64_t parse_token_list(const char *arg, int32_t *ids) {
    return opts_token_ids("infllm run", "--tokens", arg, ids);
}

/* what a generation did, summed over the turns of an interactive run */
typedef struct gen_stats {
    int64_t n_gen, n_dec;  /* tokens sampled, decode steps run */
    double t_first, t_dec; /* seconds to the first sampled token (first turn), spent in decode steps */
    int stopped_eog;       /* the last turn stopped at an end-of-generation token */
    int warned_nonfinite;
} gen_stats;

/* Samples up to n_predict tokens from logits (the last fed token's) and prints them; each but the last is fed back,
 * and an end-of-generation token stops it (not fed) unless ignore_eos. ids holds the history (*n_ids tokens, room
 * for n_predict more); the sampled tokens are appended to it, and *n_gen_out counts them. t0: when the turn's
 * prefill began (for the first token's time). 0, or 1 after a message. */
static int generate(mdl_session *s, const run_ctx *R, mdl_sampler *smp, float *logits, int32_t *ids, int64_t *n_ids,
                    int n_predict, int ignore_eos, double t0, gen_stats *g, int64_t *n_gen_out) {
    const int V = R->m->cfg.n_vocab;
    double t_dec0 = mdl_now();
    char pend[4 * TOK_MAX_PIECE];
    size_t npend = 0;
    int64_t n_gen = 0;
    g->stopped_eog = 0;
    for (int i = 0; i < n_predict; i++) {
        /* a model whose logits are partly NaN / inf (a NaN weight in a few rows of the output head, activations that
         * overflow) sampled among the rest without a word: say so once (all NaN stops in mdl_sample) */
        int n_nan = 0, n_inf = 0;
        for (int v = 0; !g->warned_nonfinite && v < V; v++) {
            n_nan += isnan(logits[v]) != 0;
            n_inf += isinf(logits[v]) != 0;
        }
        if ((n_nan || n_inf) && n_nan < V) {
            fprintf(stderr, "%sinfllm run: warning: the logits at position %lld are not all finite (%d NaN, %d inf of %d): "
                            "the model's weights hold NaN / inf or its activations overflow; NaN tokens are never "
                            "sampled\n", i ? "\n" : "", (long long)(*n_ids - 1), n_nan, n_inf, V);
            g->warned_nonfinite = 1;
        }
        int32_t t = mdl_sample(smp, logits, ids, *n_ids);
        if (t < 0) {
            fprintf(stderr, "\ninfllm run: %s\n", mdl_error());
            return 1;
        }
        if (i == 0) {
            if (g->n_gen == 0) g->t_first = mdl_now() - t0;
            t_dec0 = mdl_now();
        }
        ids[(*n_ids)++] = t;
        n_gen++;
        if (R->tok && !ignore_eos && tok_is_eog(R->tok, t)) {
            g->stopped_eog = 1;
            break;
        }
        if (R->tok) {
            int k = tok_decode_piece(R->tok, t, 0, pend + npend, (int)(sizeof pend - npend));
            if (k > 0) npend += (size_t)k;
            size_t ok = tok_utf8_complete(pend, npend);
            if (ok) {
                fwrite(pend, 1, ok, stdout);
                fflush(stdout);
                memmove(pend, pend + ok, npend - ok);
                npend -= ok;
            }
        } else {
            printf("%d ", t);
            fflush(stdout);
        }
        if (i + 1 == n_predict) break;
        if (mdl_forward(s, &t, 1, logits, 0)) {
            fprintf(stderr, "\ninfllm run: %s\n", mdl_error());
            return 1;
        }
        g->n_dec++;
    }
    if (npend) fwrite(pend, 1, npend, stdout);
    if (n_predict > 0) printf("\n");
    fflush(stdout);
    g->t_dec += mdl_now() - t_dec0;
    g->n_gen += n_gen;
    *n_gen_out = n_gen;
    return 0;
}

/* --interactive: one line of stdin without its "\n" (and a "\r" before it), *len its bytes; NULL at the end of the
 * input (or out of memory: *len is then -1) */
static char *read_line(FILE *in, int64_t *len) {
    size_t cap = 256, n = 0;
    char *b = malloc(cap);
    int ch = EOF;
    *len = -1;
    if (!b) return NULL;
    while ((ch = getc(in)) != EOF && ch != '\n') {
        if (n + 1 >= cap) {
            char *b2 = realloc(b, cap *= 2);
            if (!b2) {
                free(b);
                return NULL;
            }
            b = b2;
        }
        b[n++] = (char)ch;
    }
    if (ch == EOF && n == 0) {
        free(b);
        *len = 0;
        return NULL;
    }
    if (n && b[n - 1] == '\r') n--;
    b[n] = 0;
    *len = (int64_t)n;
    return b;
}

/* --print-ids: "LABEL ids: a b c" on stderr */
static void print_ids_line(const char *label, const int32_t *ids, int64_t n) {
    fprintf(stderr, "%s ids:", label);
    for (int64_t i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
    fputc('\n', stderr);
}

/* --interactive: the next line of stdin to take as a turn (empty lines skipped, and with --chat lines holding a NUL
 * byte, which the template cannot take, after a message), *len its bytes; NULL at the end of the input (*len 0) or
 * out of memory (*len -1, after a message) */
static char *next_turn_line(int chat, int64_t *len) {
    char *line;
    if (isatty(0)) fputs("> ", stderr);
    while ((line = read_line(stdin, len)) && (*len == 0 || (chat && memchr(line, 0, (size_t)*len)))) {
        if (*len) fprintf(stderr, "infllm run: a line with a NUL byte is not a chat message: skipped\n");
        free(line);
        if (isatty(0)) fputs("> ", stderr);
    }
    if (!line && *len < 0) fprintf(stderr, "infllm run: out of memory (the input line)\n");
    return line;
}

/* what an output file of the command (--dump-logits, --prompt-cache) would overwrite among its inputs: "a file of the
 * model" (a GGUF, or a Hugging Face folder's .json / .safetensors files), "the prompt file", or NULL */
static const char *overwritten_input(const char *path, const char *model, const char *prompt_file) {
    if (opts_same_file(path, model) || (opts_file_in_dir(path, model) && mdl_hf_file_name(path))) return "a file of the model";
    return opts_same_file(path, prompt_file) ? "the prompt file" : NULL;
}

/* the usage's summary line (beside a usage error too: opts_usage_error) */
#define RUN_SUMMARY "generate text with a GGUF or Hugging Face model (InfLLM-V2 attention)"

int cmd_run(int argc, char **argv) {
    run_opts o;
    run_opts_default(&o, "infllm run");
    const char *prompt = NULL, *prompt_file = NULL, *dump_logits = NULL, *tokens_arg = NULL, *system = NULL;
    const char *answer_prefix = NULL, *dump_qkv = NULL, *dump_layers = NULL, *prompt_cache = NULL;
    int n_predict = 128, chat = 0, print_ids = 0, ignore_eos = 0, quiet = 0, top_k = 40, seed = 0, cache_ro = 0;
    int interactive = 0;
    float temp = 0.8f, top_p = 0.95f, rpen = 1.0f;
    opt_def defs[] = {
        RUN_MODEL_OPTS(o),
        {"--prompt", "-p", OPT_STR, &prompt, "TEXT", "prompt text"},
        {"--file", "-f", OPT_STR, &prompt_file, "FILE", "read the prompt from FILE"},
        {"--n-predict", "-n", OPT_INT, &n_predict, "N", "tokens to generate (128; 0: prefill only)"},
        {"--chat", NULL, OPT_FLAG, &chat, NULL,
         "wrap the prompt in the model's chat template (ChatML, Llama 3, Phi-3 or Mistral style)"},
        {"--interactive", "-i", OPT_FLAG, &interactive, NULL,
         "after the answer, read more turns from stdin, a line each (with --chat: user messages), until its end"},
        {"--system", NULL, OPT_STR, &system, "TEXT", "system prompt for --chat (default: the template's)"},
        {"--answer-prefix", NULL, OPT_STR, &answer_prefix, "TEXT", "with --chat: start the assistant's answer with TEXT"},
        {"--temp", NULL, OPT_FLOAT, &temp, "T", "temperature (0.8; 0: greedy)"},
        {"--top-k", NULL, OPT_INT, &top_k, "K", "top-k sampling (40; 0: off)"},
        {"--top-p", NULL, OPT_FLOAT, &top_p, "P", "top-p sampling (0.95; 1: off)"},
        {"--repeat-penalty", NULL, OPT_FLOAT, &rpen, "P", "repetition penalty over the last 64 tokens (1.0: off)"},
        {"--seed", NULL, OPT_INT, &seed, "N", "random seed (0: fixed default)"},
        {"--ignore-eos", NULL, OPT_FLAG, &ignore_eos, NULL, "do not stop at end-of-generation tokens"},
        {"--tokens", NULL, OPT_STR, &tokens_arg, "IDS", "prompt as token ids, comma or blank separated (no tokenizer)"},
        {"--dump-logits", NULL, OPT_STR, &dump_logits, "FILE", "write the logits of every prompt position (.npy f32)"},
        {"--dump-qkv", NULL, OPT_STR, &dump_qkv, "DIR",
         "write the prompt's post-RoPE q, k, v (f32 [T, heads, head_dim]) as DIR/{q,k,v}_layer<L>.npy"},
        {"--dump-layers", NULL, OPT_STR, &dump_layers, "LIST", "layers for --dump-qkv: '0,10,20' or 'all' (all)"},
        {"--prompt-cache", NULL, OPT_STR, &prompt_cache, "FILE",
         "reuse the K/V of the longest prompt prefix FILE holds (same model and options), then save this prompt's"},
        {"--prompt-cache-ro", NULL, OPT_FLAG, &cache_ro, NULL, "with --prompt-cache: read it, do not update it"},
        {"--print-ids", NULL, OPT_FLAG, &print_ids, NULL, "print prompt and generated token ids to stderr"},
        {"--quiet", "-q", OPT_FLAG, &quiet, NULL, "no model info or timings on stderr"},
        {NULL, NULL, 0, NULL, NULL, NULL}};
    int rc = opts_parse("infllm run", RUN_SUMMARY, defs, argc, argv, 1, NULL, 0, NULL);
    if (rc == 1) return 0;
    if (rc) return 2;
    if (!o.model) {
        fprintf(stderr, "infllm run: -m MODEL is required (a .gguf file or a Hugging Face folder)\n");
        return opts_usage_error("infllm run", RUN_SUMMARY, defs);
    }
    if (!!prompt + !!prompt_file + !!tokens_arg > 1 || (!prompt && !prompt_file && !tokens_arg && !interactive)) {
        /* two of them: one would be silently ignored; none: --interactive reads the first from stdin */
        fprintf(stderr, "infllm run: give the prompt once: -p TEXT, -f FILE or --tokens IDS%s\n",
                prompt || prompt_file || tokens_arg ? " (not more than one)" : "");
        return opts_usage_error("infllm run", RUN_SUMMARY, defs);
    }
    if (interactive && (tokens_arg || answer_prefix || dump_logits || dump_qkv)) {
        fprintf(stderr, "infllm run: --interactive reads text turns; it does not go with %s\n",
                tokens_arg ? "--tokens" : answer_prefix ? "--answer-prefix" : dump_logits ? "--dump-logits" : "--dump-qkv");
        return opts_usage_error("infllm run", RUN_SUMMARY, defs);
    }
    /* options that only shape a text prompt through the chat template did nothing elsewhere, silently */
    if ((system || answer_prefix) && !chat) {
        fprintf(stderr, "infllm run: %s applies to --chat only\n", system ? "--system" : "--answer-prefix");
        return opts_usage_error("infllm run", RUN_SUMMARY, defs);
    }
    if (chat && tokens_arg) {
        fprintf(stderr, "infllm run: --chat wraps a text prompt (-p / -f) in the chat template, not --tokens ids\n");
        return opts_usage_error("infllm run", RUN_SUMMARY, defs);
    }
    if (n_predict < 0) {
        fprintf(stderr, "infllm run: -n must be >= 0\n");
        return opts_usage_error("infllm run", RUN_SUMMARY, defs);
    }
    if (run_opts_check(&o)) return opts_usage_error("infllm run", RUN_SUMMARY, defs);
    if (mdl_sampler_check(temp, top_k, top_p, rpen)) {
        fprintf(stderr, "infllm run: %s\n", mdl_error());
        return opts_usage_error("infllm run", RUN_SUMMARY, defs);
    }
    if (dump_logits) {
        /* a folder that cannot take the file failed only after the whole prefill */
        if (opts_output_file_check("infllm run", "--dump-logits", dump_logits))
            return opts_usage_error("infllm run", RUN_SUMMARY, defs);
        const char *input = overwritten_input(dump_logits, o.model, prompt_file);
        if (input) {
            fprintf(stderr, "infllm run: --dump-logits %s is %s: not overwriting it\n", dump_logits, input);
            return opts_usage_error("infllm run", RUN_SUMMARY, defs);
        }
    }
    if (cache_ro && !prompt_cache) {
        fprintf(stderr, "infllm run: --prompt-cache-ro needs --prompt-cache FILE\n");
        return opts_usage_error("infllm run", RUN_SUMMARY, defs);
    }
    int cache_kind = 0; /* --prompt-cache: 0 no file yet, 1 a prompt cache */
    if (prompt_cache) {
        if (dump_logits || dump_qkv) { /* they need every prompt position computed */
            fprintf(stderr, "infllm run: --prompt-cache skips the cached positions, which %s needs\n",
                    dump_logits ? "--dump-logits" : "--dump-qkv");
            return opts_usage_error("infllm run", RUN_SUMMARY, defs);
        }
        if (!cache_ro && opts_output_file_check("infllm run", "--prompt-cache", prompt_cache))
            return opts_usage_error("infllm run", RUN_SUMMARY, defs);
        const char *input = overwritten_input(prompt_cache, o.model, prompt_file);
        if (input) {
            fprintf(stderr, "infllm run: --prompt-cache %s is %s: not using it\n", prompt_cache, input);
            return opts_usage_error("infllm run", RUN_SUMMARY, defs);
        }
        /* a file that is there and is not a prompt cache is never read as one, nor replaced */
        if ((cache_kind = mdl_state_file_kind(prompt_cache)) < 0) {
            fprintf(stderr, "infllm run: --prompt-cache: %s: not overwriting it\n", mdl_error());
            return 1;
        }
    }
    if (dump_layers && !dump_qkv) {
        fprintf(stderr, "infllm run: --dump-layers needs --dump-qkv DIR\n");
        return opts_usage_error("infllm run", RUN_SUMMARY, defs);
    }
    int *dump_list = NULL, n_dump_list = 0;
    if (dump_qkv) {
        if (dump_layers && (n_dump_list = parse_layers(dump_layers, &dump_list)) < 0)
            return n_dump_list == -2 ? 1 : opts_usage_error("infllm run", RUN_SUMMARY, defs);
        if (dump_dir_ok(dump_qkv)) {
            free(dump_list);
            return 1;
        }
        /* the model, the prompt file and the --dump-logits file stay intact (the dump writes fixed names) */
        const char *kept[3][2] = {{o.model, "the model"}, {prompt_file, "the prompt file"}, {dump_logits, "the --dump-logits file"}};
        for (int i = 0; i < 3; i++)
            if (qkv_dump_target(kept[i][0], dump_qkv)) {
                fprintf(stderr, "infllm run: --dump-qkv %s would overwrite %s (%s): not writing there\n", dump_qkv,
                        kept[i][1], kept[i][0]);
                free(dump_list);
                return opts_usage_error("infllm run", RUN_SUMMARY, defs);
            }
    }

    /* the prompt is read (and a --tokens list checked) before the model loads: a missing file or a typo in the
     * list was reported only after the load */
    char *text = NULL;
    size_t text_len = 0;
    int64_t n_token_list = 0;
    if (tokens_arg && (n_token_list = parse_token_list(tokens_arg, NULL)) < 0) {
        free(dump_list);
        return opts_usage_error("infllm run", RUN_SUMMARY, defs);
    }
    if (prompt_file && !(text = run_read_file("infllm run", prompt_file, &text_len))) {
        free(dump_list);
        return 1;
    }
    /* the chat template takes the prompt as a C string: a NUL byte in the file cut it there without a word */
    const char *nul = chat && text ? memchr(text, 0, text_len) : NULL;
    if (nul) {
        fprintf(stderr, "infllm run: --chat: %s has a NUL byte at offset %zu; the chat template takes text (drop --chat "
                        "to tokenize the file's bytes as they are)\n", prompt_file, (size_t)(nul - text));
        free(dump_list);
        free(text);
        return 2; /* the file's content: the usage would not help */
    }
    run_ctx R;
    if (run_load(&o, &R, quiet)) {
        free(dump_list);
        free(text);
        return 1;
    }
    int ret = 1;
    qkv_dump dump = {0};
    dump.dir = dump_qkv;
    char *chat_text = NULL;
    mdl_chat cs = {0}; /* --chat: the model's chat style */
    int32_t *ids = NULL;
    float *logits = NULL;
    mdl_sampler smp = {0};
    mdl_session *s = NULL;
    int64_t n_prompt = 0;
    for (int i = 0; dump_list && i < n_dump_list; i++)
        if (dump_list[i] >= R.m->cfg.n_layer) {
            fprintf(stderr, "infllm run: --dump-layers: layer %d is out of range (the model has layers 0..%d)\n",
                    dump_list[i], R.m->cfg.n_layer - 1);
            ret = 2;
            goto done;
        }
    /* room for the generated tokens: at most --ctx of them are ever generated (a larger -n is cut below), so a
     * huge -n must not size the buffer (-n 2147483647 asked for 8 GiB and failed as "the prompt is empty") */
    const size_t gen_room = (size_t)((int64_t)n_predict < o.ctx ? (int64_t)n_predict : o.ctx);
    if (tokens_arg) {
        ids = malloc(sizeof(int32_t) * ((size_t)n_token_list + gen_room + 1));
        if (!ids) {
            fprintf(stderr, "infllm run: out of memory (token buffer)\n");
            goto done;
        }
        n_prompt = parse_token_list(tokens_arg, ids);
    } else {
        if (!prompt && !prompt_file) { /* --interactive without a prompt: the first turn is stdin's first line */
            int64_t ll = 0;
            if (!(text = next_turn_line(chat, &ll))) {
                ret = ll < 0 ? 1 : 0; /* no input: nothing to answer */
                goto done;
            }
            text_len = (size_t)ll;
        }
        size_t len = text_len;
        if (!prompt_file && prompt) {
            text = strdup(prompt);
            if (!text) { /* this and the --answer-prefix below failed without a word (exit 1) */
                fprintf(stderr, "infllm run: out of memory (the prompt)\n");
                goto done;
            }
            len = strlen(text);
        }
        if (!R.tok) {
            fprintf(stderr, "infllm run: no tokenizer: %s\n", R.tok_err);
            goto done;
        }
        const char *in = text;
        int add_bos = -1, special = 0;
        if (chat) {
            /* (the EOS token's text closes an answer of a Mistral template: later turns only) */
            if (mdl_chat_init(R.m, &cs) || (interactive && mdl_chat_set_eos(&cs, R.tok)) ||
                !(chat_text = mdl_chat_first(&cs, system, text, len, &len))) {
                fprintf(stderr, "infllm run: %s\n", mdl_error());
                goto done;
            }
            /* a template that writes the system prompt into the last user message (Mistral v0.3 / Nemo) moves it on
             * each turn, out of the one already fed: a second turn could only differ from the template's rendering
             * (the first matches), so a conversation with one is refused before it starts, not after the first answer */
            if (interactive && system && cs.system_place == MDL_CHAT_SYS_LAST_USER) {
                fprintf(stderr, "infllm run: chat: the model's chat template (Mistral) puts the system prompt in the "
                                "latest user message, moving it on each turn, which is not reproduced here for a "
                                "conversation (-i): drop --system or -i, or put the instructions in the message\n");
                goto done;
            }
            if (!quiet)
                fprintf(stderr, "chat: %s (%s)%s%s%s\n", mdl_chat_style_name(&cs),
                        cs.has_template ? "the model's template" : "no template: assumed",
                        cs.date[0] ? ", dated " : "", cs.date, !system && cs.default_system ? ", its system prompt" : "");
            if (answer_prefix) {
                size_t b = strlen(answer_prefix);
                char *t2 = realloc(chat_text, len + b + 1);
                if (!t2) {
                    fprintf(stderr, "infllm run: out of memory (the chat prompt with --answer-prefix)\n");
                    goto done;
                }
                memcpy(t2 + len, answer_prefix, b + 1);
                chat_text = t2;
                len += b;
            }
            in = chat_text;
            special = 1;
            /* the BOS token where the template writes it (Llama 3's bos_token), else the tokenizer's default (0
             * when the text starts with it) */
            add_bos = cs.bos ? 1 : run_chat_add_bos(R.tok, in);
        }
        ids = run_tokenize("infllm run", R.tok, in, len, add_bos, special, gen_room, &n_prompt);
        if (!ids) goto done;
    }
    if (n_prompt < 1) {
        fprintf(stderr, "infllm run: the prompt is empty\n");
        ret = 2;
        goto done;
    }
    for (int64_t i = 0; tokens_arg && i < n_prompt; i++)
        if (ids[i] >= R.m->cfg.n_vocab) { /* a bad argument, as in eval ppl: exit 2, before the session is made */
            fprintf(stderr, "infllm run: --tokens: token id %d (position %lld) is outside the vocabulary (0..%d)\n",
                    ids[i], (long long)i, R.m->cfg.n_vocab - 1);
            ret = 2;
            goto done;
        }
    if (n_prompt > o.ctx) {
        fprintf(stderr,
                "infllm run: the prompt has %lld tokens, more than the context (--ctx %lld): raise --ctx or shorten "
                "the prompt\n",
                (long long)n_prompt, (long long)o.ctx);
        ret = 2;
        goto done;
    }
    if (n_prompt + n_predict > o.ctx) {
        int np = (int)(o.ctx - n_prompt);
        if (!quiet)
            fprintf(stderr, "note: generating at most %d tokens (prompt %lld + %d > --ctx %lld)\n", np,
                    (long long)n_prompt, n_predict, (long long)o.ctx);
        n_predict = np;
    }
    s = run_session(&o, &R, quiet);
    if (!s) goto done;
    int V = R.m->cfg.n_vocab;
    size_t lcount = dump_logits ? (size_t)n_prompt * V : (size_t)V;
    logits = malloc(sizeof(float) * lcount);
    if (!logits) {
        fprintf(stderr, "infllm run: out of memory (logits: %zu bytes)\n", sizeof(float) * lcount);
        goto done;
    }
    if (mdl_sampler_init(&smp, V, temp, top_k, top_p, rpen, (uint64_t)seed)) {
        fprintf(stderr, "infllm run: %s\n", mdl_error());
        goto done;
    }
    if (print_ids) {
        print_ids_line("prompt", ids, n_prompt);
    }
    if (dump_qkv) {
        int drc = qkv_dump_init(&dump, R.m, dump_list, dump_list ? n_dump_list : 0, n_prompt, s->pos, quiet);
        if (drc) {
            ret = drc;
            goto done;
        }
        s->qkv_hook = qkv_collect;
        s->qkv_ud = &dump;
    }
    double t0 = mdl_now();
    int64_t cached = 0, held = 0; /* --prompt-cache: prompt tokens taken from the file, tokens it held */
    if (prompt_cache && cache_kind == 0 && cache_ro && !quiet)
        fprintf(stderr, "prompt cache: %s does not exist (--prompt-cache-ro: not made)\n", prompt_cache);
    if (cache_kind == 1) {
        if (mdl_session_load(s, prompt_cache, ids, n_prompt, &cached, &held)) {
            fprintf(stderr, "infllm run: --prompt-cache: %s\n", mdl_error());
            goto done;
        }
        if (!quiet)
            fprintf(stderr, "prompt cache: %lld of the prompt's %lld tokens from %s (%.3f s)\n", (long long)cached,
                    (long long)n_prompt, prompt_cache, mdl_now() - t0);
    }
    if (!quiet && isatty(2) && n_prompt - cached > s->chunk) {
        s->progress = progress_bar;
        s->progress_ud = &t0;
    }
    if (mdl_forward(s, ids + cached, n_prompt - cached, logits, dump_logits != NULL)) {
        fprintf(stderr, "infllm run: %s\n", mdl_error());
        goto done;
    }
    double t_prefill = mdl_now() - t0;
    /* the file keeps this prompt's state, unless it holds exactly this prompt already */
    if (prompt_cache && !cache_ro && !(held == n_prompt && cached == n_prompt - 1)) {
        if (mdl_session_save(s, ids, prompt_cache)) {
            fprintf(stderr, "infllm run: --prompt-cache: %s\n", mdl_error());
            goto done;
        }
        if (!quiet) fprintf(stderr, "prompt cache: saved the prompt's %lld tokens to %s\n", (long long)n_prompt, prompt_cache);
    }
    s->progress = NULL;
    s->qkv_hook = NULL;
    if (dump_qkv && qkv_dump_write(&dump, R.m, ids, quiet)) goto done;
    if (dump_logits) {
        int64_t shape[2] = {n_prompt, V};
        char err[256];
        if (npy_write(dump_logits, "<f4", 2, shape, logits, err, sizeof err)) {
            fprintf(stderr, "infllm run: %s\n", err);
            goto done;
        }
        memmove(logits, logits + (size_t)(n_prompt - 1) * V, sizeof(float) * V);
    }
    /* generation */
    gen_stats gs = {0};
    int64_t n_ids = n_prompt, n_gen = 0;
    if (generate(s, &R, &smp, logits, ids, &n_ids, n_predict, ignore_eos, t0, &gs, &n_gen)) goto done;
    if (print_ids) {
        print_ids_line("generated", ids + n_prompt, n_gen);
    }
    /* --interactive: a turn a line of stdin. The last sampled token was not fed (generate); with --chat the
     * assistant's message is closed as the template closes it (its turn end, <|im_end|> / <|eot_id|> / <|end|>, which
     * the model usually sampled: then that token is fed) and the line goes in as the next user message; without, the
     * line follows the text as it is */
    int64_t n_prefilled = n_prompt - cached;
    const int32_t turn_end = chat && R.tok ? tok_token_id(R.tok, cs.turn_end) : -1;
    while (interactive) {
        int64_t ll = 0;
        char *line = next_turn_line(chat, &ll);
        if (!line) {
            if (ll < 0) goto done;
            break; /* the end of the input */
        }
        const int32_t last = n_gen > 0 ? ids[n_ids - 1] : -1;
        const int feed_last = last >= 0 && (!R.tok || !tok_is_eog(R.tok, last) || last == turn_end);
        if (last >= 0 && !feed_last) n_ids--; /* another end-of-generation token: not part of the conversation */
        size_t tlen = 0;
        char *turn = NULL;
        if (chat) {
            turn = mdl_chat_next(&cs, last >= 0 && last == turn_end, line, (size_t)ll, &tlen);
        } else if ((turn = malloc((size_t)ll + 2))) { /* by bytes: a raw line may hold a NUL byte, taken as text */
            memcpy(turn, line, (size_t)ll);
            memcpy(turn + ll, "\n", 2);
            tlen = (size_t)ll + 1;
        }
        free(line);
        if (!turn) {
            fprintf(stderr, "infllm run: %s\n", chat ? mdl_error() : "out of memory (the turn)");
            goto done;
        }
        int64_t nt = 0;
        int32_t *tt = run_tokenize("infllm run", R.tok, turn, tlen, 0, chat, 0, &nt);
        free(turn);
        if (!tt) goto done;
        const int64_t n_turn = nt + feed_last; /* the tokens this turn feeds */
        if (s->pos + n_turn >= o.ctx) {
            free(tt);
            /* (also with -q: the rest of the input is left unread) */
            fprintf(stderr, "infllm run: the context is full (--ctx %lld: %lld tokens, and this turn's %lld): the "
                            "conversation ends here\n", (long long)o.ctx, (long long)s->pos, (long long)n_turn);
            break;
        }
        const int np = (int)(o.ctx - s->pos - n_turn < n_predict ? o.ctx - s->pos - n_turn : n_predict);
        int32_t *grown = realloc(ids, sizeof(int32_t) * (size_t)(n_ids + nt + np + 1));
        if (!grown) {
            free(tt);
            fprintf(stderr, "infllm run: out of memory (the token history)\n");
            goto done;
        }
        ids = grown;
        const int64_t turn0 = n_ids - feed_last; /* the turn's first token in ids (the carried one) */
        memcpy(ids + n_ids, tt, sizeof(int32_t) * (size_t)nt);
        n_ids += nt;
        free(tt);
        if (print_ids) {
            print_ids_line("prompt", ids + turn0, n_ids - turn0);
        }
        const double tt0 = mdl_now();
        if (mdl_forward(s, ids + turn0, n_turn, logits, 0)) {
            fprintf(stderr, "infllm run: %s\n", mdl_error());
            goto done;
        }
        t_prefill += mdl_now() - tt0;
        n_prefilled += n_turn;
        if (generate(s, &R, &smp, logits, ids, &n_ids, np, ignore_eos, tt0, &gs, &n_gen)) goto done;
        if (print_ids) print_ids_line("generated", ids + n_ids - n_gen, n_gen);
    }
    if (!quiet) {
        fprintf(stderr, "\n--- timings (%d threads, attention %s) ---\n", o.threads > 0 ? o.threads : run_threads(0),
                run_attn_desc(&o, s->pos));
        fprintf(stderr, "prompt:  %6lld tokens in %8.3f s = %8.1f tok/s", (long long)n_prefilled, t_prefill,
                n_prefilled / (t_prefill > 0 ? t_prefill : 1e-9));
        if (cached) fprintf(stderr, " (+ %lld from the prompt cache)", (long long)cached);
        fputc('\n', stderr);
        if (gs.n_gen > 0) fprintf(stderr, "first token after %.3f s\n", gs.t_first);
        if (gs.n_dec > 0)
            fprintf(stderr, "decode:  %6lld tokens in %8.3f s = %8.1f tok/s\n", (long long)gs.n_dec, gs.t_dec,
                    gs.n_dec / (gs.t_dec > 0 ? gs.t_dec : 1e-9));
        fprintf(stderr, "attention: %.3f s of the total%s\n", s->t_attn,
                gs.stopped_eog ? "; stopped at end-of-generation" : "");
    }
    ret = 0;
done:
    qkv_dump_free(&dump);
    free(dump_list);
    mdl_sampler_free(&smp);
    free(logits);
    mdl_session_free(s);
    free(ids);
    free(text);
    free(chat_text);
    mdl_chat_free(&cs);
    run_unload(&R);
    return ret;
}
