/* run.c: `infllm run`: generate text with a GGUF or Hugging Face model, attention through the
 * InfLLM-V2 decode cache (dense, sparse, or the automatic switch). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
#include "quant.h"
#include "runutil.h"
#include "sample.h"
#include "tokenizer.h"

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "infllm run: cannot open '%s': %s\n", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap + 1);
    while (b) {
        size_t r = fread(b + n, 1, cap - n, f);
        n += r;
        if (n < cap) break;
        cap *= 2;
        char *nb = realloc(b, cap + 1);
        if (!nb) {
            free(b);
            b = NULL;
        } else {
            b = nb;
        }
    }
    fclose(f);
    if (!b) {
        fprintf(stderr, "infllm run: out of memory reading '%s'\n", path);
        return NULL;
    }
    b[n] = 0;
    *len = n;
    return b;
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

int cmd_run(int argc, char **argv) {
    run_opts o;
    run_opts_default(&o);
    const char *prompt = NULL, *prompt_file = NULL, *dump_logits = NULL, *tokens_arg = NULL, *system = NULL;
    const char *answer_prefix = NULL;
    int n_predict = 128, chat = 0, print_ids = 0, ignore_eos = 0, quiet = 0, top_k = 40, seed = 0;
    float temp = 0.8f, top_p = 0.95f, rpen = 1.0f;
    opt_def defs[] = {
        RUN_MODEL_OPTS(o),
        {"--prompt", "-p", OPT_STR, &prompt, "TEXT", "prompt text"},
        {"--file", "-f", OPT_STR, &prompt_file, "FILE", "read the prompt from FILE"},
        {"--n-predict", "-n", OPT_INT, &n_predict, "N", "tokens to generate (128; 0: prefill only)"},
        {"--chat", NULL, OPT_FLAG, &chat, NULL, "wrap the prompt in the model's ChatML chat template"},
        {"--system", NULL, OPT_STR, &system, "TEXT", "system prompt for --chat (default: the template's)"},
        {"--answer-prefix", NULL, OPT_STR, &answer_prefix, "TEXT", "with --chat: start the assistant's answer with TEXT"},
        {"--temp", NULL, OPT_FLOAT, &temp, "T", "temperature (0.8; 0: greedy)"},
        {"--top-k", NULL, OPT_INT, &top_k, "K", "top-k sampling (40; 0: off)"},
        {"--top-p", NULL, OPT_FLOAT, &top_p, "P", "top-p sampling (0.95; 1: off)"},
        {"--repeat-penalty", NULL, OPT_FLOAT, &rpen, "P", "repetition penalty over the last 64 tokens (1.0: off)"},
        {"--seed", NULL, OPT_INT, &seed, "N", "random seed (0: fixed default)"},
        {"--ignore-eos", NULL, OPT_FLAG, &ignore_eos, NULL, "do not stop at end-of-generation tokens"},
        {"--tokens", NULL, OPT_STR, &tokens_arg, "IDS", "prompt as comma-separated token ids (no tokenizer)"},
        {"--dump-logits", NULL, OPT_STR, &dump_logits, "FILE", "write the logits of every prompt position (.npy f32)"},
        {"--print-ids", NULL, OPT_FLAG, &print_ids, NULL, "print prompt and generated token ids to stderr"},
        {"--quiet", "-q", OPT_FLAG, &quiet, NULL, "no model info or timings on stderr"},
        {NULL, NULL, 0, NULL, NULL, NULL}};
    int rc = opts_parse("infllm run", "generate text with a GGUF or Hugging Face model (InfLLM-V2 attention)", defs,
                        argc, argv, 1, NULL, 0, NULL);
    if (rc == 1) return 0;
    if (rc) return 2;
    if (!o.model) {
        fprintf(stderr, "infllm run: -m MODEL is required (a .gguf file or a Hugging Face folder)\n");
        return 2;
    }
    if (!prompt && !prompt_file && !tokens_arg) {
        fprintf(stderr, "infllm run: give a prompt with -p TEXT, -f FILE or --tokens IDS\n");
        return 2;
    }
    if (n_predict < 0) {
        fprintf(stderr, "infllm run: -n must be >= 0\n");
        return 2;
    }
    if (run_opts_check(&o)) return 2;

    run_ctx R;
    if (run_load(&o, &R, quiet)) return 1;
    int ret = 1;
    char *text = NULL, *chat_text = NULL;
    int32_t *ids = NULL;
    float *logits = NULL;
    mdl_sampler smp = {0};
    mdl_session *s = NULL;
    int64_t n_prompt = 0;
    if (tokens_arg) {
        size_t cap = strlen(tokens_arg) / 2 + 2;
        ids = malloc(sizeof(int32_t) * (cap + (size_t)n_predict + 1));
        const char *p = tokens_arg;
        while (ids && *p) {
            char *end;
            long v = strtol(p, &end, 10);
            if (end == p) {
                fprintf(stderr, "infllm run: bad --tokens list at '%s'\n", p);
                ret = 2;
                goto done;
            }
            ids[n_prompt++] = (int32_t)v;
            p = *end == ',' ? end + 1 : end;
        }
    } else {
        size_t len = 0;
        if (prompt_file) {
            text = read_file(prompt_file, &len);
            if (!text) goto done;
        } else {
            text = strdup(prompt);
            len = strlen(text);
        }
        if (!R.tok) {
            fprintf(stderr, "infllm run: no tokenizer: %s\n", R.tok_err);
            goto done;
        }
        const char *in = text;
        int add_bos = -1, special = 0;
        if (chat) {
            chat_text = mdl_chat_format(R.m, system, text);
            if (!chat_text) {
                fprintf(stderr, "infllm run: %s\n", mdl_error());
                goto done;
            }
            if (answer_prefix) {
                size_t a = strlen(chat_text), b = strlen(answer_prefix);
                char *t2 = realloc(chat_text, a + b + 1);
                if (!t2) goto done;
                memcpy(t2 + a, answer_prefix, b + 1);
                chat_text = t2;
            }
            in = chat_text;
            len = strlen(chat_text);
            special = 1;
            int32_t bos = tok_bos(R.tok);
            const char *bt = bos >= 0 ? tok_token_text(R.tok, bos) : NULL;
            if (bt && strncmp(in, bt, strlen(bt)) == 0) add_bos = 0; /* template starts with it */
        }
        int need = tok_encode(R.tok, in, len, add_bos, special, NULL, 0);
        if (need == INT32_MIN) {
            fprintf(stderr, "infllm run: out of memory (tokenizer)\n");
            goto done;
        }
        int cnt = need < 0 ? -need : need;
        ids = malloc(sizeof(int32_t) * ((size_t)cnt + (size_t)n_predict + 1));
        if (!ids) {
            fprintf(stderr, "infllm run: out of memory\n");
            goto done;
        }
        n_prompt = tok_encode(R.tok, in, len, add_bos, special, ids, cnt + 1);
    }
    if (n_prompt < 1) {
        fprintf(stderr, "infllm run: the prompt is empty\n");
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
        fprintf(stderr, "prompt ids:");
        for (int64_t i = 0; i < n_prompt; i++) fprintf(stderr, " %d", ids[i]);
        fputc('\n', stderr);
    }
    double t0 = mdl_now();
    if (!quiet && isatty(2) && n_prompt > s->chunk) {
        s->progress = progress_bar;
        s->progress_ud = &t0;
    }
    if (mdl_forward(s, ids, n_prompt, logits, dump_logits != NULL)) {
        fprintf(stderr, "infllm run: %s\n", mdl_error());
        goto done;
    }
    double t_prefill = mdl_now() - t0;
    s->progress = NULL;
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
    double t_first = 0, t_dec0 = mdl_now();
    int64_t n_gen = 0, n_dec = 0;
    char pend[4 * TOK_MAX_PIECE];
    size_t npend = 0;
    int stopped_eog = 0;
    for (int i = 0; i < n_predict; i++) {
        int32_t t = mdl_sample(&smp, logits, ids, n_prompt + n_gen);
        if (i == 0) {
            t_first = mdl_now() - t0;
            t_dec0 = mdl_now();
        }
        ids[n_prompt + n_gen++] = t;
        if (R.tok && !ignore_eos && tok_is_eog(R.tok, t)) {
            stopped_eog = 1;
            break;
        }
        if (R.tok) {
            int k = tok_decode_piece(R.tok, t, 0, pend + npend, (int)(sizeof pend - npend));
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
            goto done;
        }
        n_dec++;
    }
    if (npend) fwrite(pend, 1, npend, stdout);
    if (n_predict > 0) printf("\n");
    fflush(stdout);
    double t_dec = mdl_now() - t_dec0;
    if (print_ids) {
        fprintf(stderr, "generated ids:");
        for (int64_t i = 0; i < n_gen; i++) fprintf(stderr, " %d", ids[n_prompt + i]);
        fputc('\n', stderr);
    }
    if (!quiet) {
        fprintf(stderr, "\n--- timings (%d threads, attention %s) ---\n", o.threads > 0 ? o.threads : run_threads(0),
                run_attn_desc(&o, s->pos));
        fprintf(stderr, "prompt:  %6lld tokens in %8.3f s = %8.1f tok/s\n", (long long)n_prompt, t_prefill,
                n_prompt / (t_prefill > 0 ? t_prefill : 1e-9));
        if (n_gen > 0) fprintf(stderr, "first token after %.3f s\n", t_first);
        if (n_dec > 0)
            fprintf(stderr, "decode:  %6lld tokens in %8.3f s = %8.1f tok/s\n", (long long)n_dec, t_dec,
                    n_dec / (t_dec > 0 ? t_dec : 1e-9));
        fprintf(stderr, "attention: %.3f s of the total%s\n", s->t_attn, stopped_eog ? "; stopped at end-of-generation" : "");
    }
    ret = 0;
done:
    mdl_sampler_free(&smp);
    free(logits);
    mdl_session_free(s);
    free(ids);
    free(text);
    free(chat_text);
    run_unload(&R);
    return ret;
}
