/* bench_run.c: `infllm bench run`: model prefill and decode speed at several context
 * lengths, dense vs InfLLM-V2 sparse attention; markdown, csv or json. With a .gguf model and
 * llama-cpp-python installed (`--llamacpp auto`, the default) the same token ids are also timed
 * with llama.cpp in the same run (dense, its default f16 KV cache, the same thread count). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifndef _WIN32
#include <sys/wait.h>
#include <unistd.h>
#endif

#include "ggmlc.h"
#include "fmtout.h"
#include "infllm.h"
#include "mcommon.h"
#include "model.h"
#include "opts.h"
#include "quant.h"
#include "runutil.h"

typedef struct row {
    int64_t len;
    const char *mode;
    double prefill_s, decode_s;
    int gen;
    double attn_s;
} row;

/* llama.cpp's timing, run by python3 with llama-cpp-python: argv model tokens_file threads gen
 * lengths; prints "length prefill_s decode_s" per length; exit 3 when llama_cpp is missing. */
static const char *LLAMACPP_PY =
    "import sys, time\n"
    "try:\n"
    "    from llama_cpp import Llama\n"
    "except Exception:\n"
    "    sys.exit(3)\n"
    "model, tokf, threads, gen = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])\n"
    "lens = [int(x) for x in sys.argv[5].split(',')]\n"
    "ids = [int(x) for x in open(tokf).read().split()]\n"
    "llm = Llama(model_path=model, n_ctx=max(lens) + gen + 1, n_batch=512, n_threads=threads,\n"
    "            n_threads_batch=threads, logits_all=False, verbose=False)\n"
    "for L in lens:\n"
    "    llm.reset()\n"
    "    t0 = time.perf_counter(); llm.eval(ids[:L]); t1 = time.perf_counter()\n"
    "    for g in range(gen):\n"
    "        llm.eval([ids[L + g]])\n"
    "    t2 = time.perf_counter()\n"
    "    print(L, t1 - t0, t2 - t1, flush=True)\n";

/* Times llama.cpp on the same tokens; fills pf[i], dec[i] (seconds) for lens[i]. Returns 0 on
 * success, 3 when llama-cpp-python is not installed, else 1 (message on stderr). */
static int llamacpp_times(const char *model, const int32_t *toks, int64_t ntok, int threads, int gen,
                          const int64_t *lens, int nl, double *pf, double *dec) {
#ifdef _WIN32
    /* the driver runs through a POSIX shell (quoting, redirection, mkdtemp) */
    (void)model, (void)toks, (void)ntok, (void)threads, (void)gen, (void)lens, (void)nl, (void)pf, (void)dec;
    (void)LLAMACPP_PY;
    return 6;
#else
    char dir[] = "/tmp/infllm-bench-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("infllm bench run: mkdtemp");
        return 1;
    }
    char py[64], tk[64], outp[64], cmd[8192], lensbuf[1024] = "";
    snprintf(py, sizeof py, "%s/t.py", dir);
    snprintf(tk, sizeof tk, "%s/tokens", dir);
    snprintf(outp, sizeof outp, "%s/out", dir);
    int rc = 1;
    FILE *f = fopen(py, "w"), *g = fopen(tk, "w");
    if (f) fputs(LLAMACPP_PY, f);
    if (g)
        for (int64_t i = 0; i < ntok; i++) fprintf(g, "%d\n", (int)toks[i]);
    int wok = f && g;
    if (f && fclose(f)) wok = 0;
    if (g && fclose(g)) wok = 0;
    if (!wok) {
        fprintf(stderr, "infllm bench run: cannot write the llama.cpp driver in %s\n", dir);
        goto out;
    }
    for (int i = 0; i < nl; i++) {
        size_t n = strlen(lensbuf);
        snprintf(lensbuf + n, sizeof lensbuf - n, "%s%lld", i ? "," : "", (long long)lens[i]);
    }
    /* the model path is single-quoted for the shell ('\'' for quotes inside) */
    size_t k = 0;
    k += (size_t)snprintf(cmd + k, sizeof cmd - k, "python3 %s '", py);
    for (const char *c = model; *c && k + 8 < sizeof cmd; c++) {
        if (*c == '\'') k += (size_t)snprintf(cmd + k, sizeof cmd - k, "'\\''");
        else cmd[k++] = *c;
    }
    if (k + 200 + strlen(lensbuf) >= sizeof cmd) {
        fprintf(stderr, "infllm bench run: model path too long for the llama.cpp run\n");
        goto out;
    }
    snprintf(cmd + k, sizeof cmd - k, "' %s %d %d %s > %s", tk, threads, gen, lensbuf, outp);
    int st = system(cmd);
    if (st == -1 || !WIFEXITED(st)) {
        fprintf(stderr, "infllm bench run: could not run python3 for the llama.cpp comparison\n");
        goto out;
    }
    if (WEXITSTATUS(st) == 3) {
        rc = 3;
        goto out;
    }
    if (WEXITSTATUS(st) != 0) {
        fprintf(stderr, "infllm bench run: the llama.cpp run failed (exit %d)\n", WEXITSTATUS(st));
        goto out;
    }
    FILE *r = fopen(outp, "r");
    int got = 0;
    if (r) {
        long long L;
        double a, b;
        while (fscanf(r, "%lld %lf %lf", &L, &a, &b) == 3)
            for (int i = 0; i < nl; i++)
                if (lens[i] == L) {
                    pf[i] = a;
                    dec[i] = b;
                    got++;
                }
        fclose(r);
    }
    if (got != nl) fprintf(stderr, "infllm bench run: the llama.cpp run gave %d of %d lengths\n", got, nl);
    else rc = 0;
out:
    unlink(py);
    unlink(tk);
    unlink(outp);
    rmdir(dir);
    return rc;
#endif
}

#define PROG "infllm bench run"
/* the usage's summary line (beside a usage error too: opts_usage_error) */
#define SUMMARY "model prefill/decode speed at several context lengths, dense vs InfLLM-V2 sparse"

int cmd_bench_run(int argc, char **argv) {
    run_opts o;
    run_opts_default(&o, "infllm bench run");
    const char *lengths = "512,2048,8192", *modes = "dense,sparse", *format = "md", *llamacpp = "auto";
    int gen = 32, reps = 1;
    opt_def defs[] = {
        RUN_MODEL_OPTS(o),
        {"--lengths", NULL, OPT_STR, &lengths, "LIST", "prompt lengths in tokens (512,2048,8192; 8k suffix ok)"},
        {"--modes", NULL, OPT_STR, &modes, "LIST", "attention modes to compare (dense,sparse)"},
        {"--gen", NULL, OPT_INT, &gen, "N", "decode steps timed after each prefill (32)"},
        {"--reps", NULL, OPT_INT, &reps, "N", "repetitions; the fastest is reported (1)"},
        {"--format", NULL, OPT_STR, &format, "FMT", "md | csv | json (md)"},
        {"--llamacpp", NULL, OPT_STR, &llamacpp, "WHEN",
         "auto | on | off: also time llama.cpp (llama-cpp-python) on the same .gguf and tokens (auto)"},
        {NULL, NULL, 0, NULL, NULL, NULL}};
    /* bench defaults for the sparse runs: block 64, 12 top-k + 4 local (+1 init) blocks */
    o.block_size = 64;
    o.topk = 12;
    o.local_blocks = 4;
    o.init_blocks = 1;
    /* --attn and --ctx come with the shared model options but mean nothing here (--modes and --lengths choose):
     * they were silently ignored, so given ones are refused, as eval refuses --attn */
    o.attn = NULL;
    o.ctx_i = OPTS_INT_UNSET; /* -1 was the mark, so --ctx -1 ran */
    /* --help: these defaults, not the shared options' "model config or ..."; the refused options not listed */
    opts_set_help(defs, "--topk", "InfLLM-V2 dynamic blocks per query (12)");
    opts_set_help(defs, "--block-size", "InfLLM-V2 block size in tokens (64)");
    opts_set_help(defs, "--local-blocks", "InfLLM-V2 forced local blocks (4)");
    opts_set_help(defs, "--init-blocks", "InfLLM-V2 forced initial blocks (1)");
    opts_set_help(defs, "--attn", NULL);
    opts_set_help(defs, "--ctx", NULL);
    /* tools/bench.c passes the arguments after "run" */
    int rc = opts_parse(PROG, SUMMARY, defs, argc, argv, 0, NULL, 0, NULL);
    if (rc == 1) return 0;
    if (rc) return 2; /* opts_parse printed the message and the usage */
    if (!o.model) {
        fprintf(stderr, "infllm bench run: -m MODEL is required\n");
        return opts_usage_error(PROG, SUMMARY, defs);
    }
    if (o.attn || o.ctx_i != OPTS_INT_UNSET) {
        fprintf(stderr, "infllm bench run: %s does not apply here: %s\n", o.attn ? "--attn" : "--ctx",
                o.attn ? "--modes lists the attention modes to time" : "each run's context is its --lengths + --gen");
        return opts_usage_error(PROG, SUMMARY, defs);
    }
    o.ctx_i = 4096;
    int64_t lens[32];
    int nl = opts_int_list("infllm bench run", "--lengths", lengths, lens, 32);
    if (nl < 0) return opts_usage_error(PROG, SUMMARY, defs);
    if (gen < 1 || reps < 1) {
        fprintf(stderr, "infllm bench run: --gen and --reps must be >= 1 (got %d and %d)\n", gen, reps);
        return opts_usage_error(PROG, SUMMARY, defs);
    }
    if (!opts_one_of("infllm bench run", "--format", format, "md", "csv", "json"))
        return opts_usage_error(PROG, SUMMARY, defs);
    for (int i = 0; i < nl; i++)
        if (lens[i] > INT32_MAX - gen) { /* the token buffer's size would overflow; the cache holds < 2^31 */
            fprintf(stderr, "infllm bench run: --lengths %lld + --gen %d is more than the 2147483647 tokens a KV "
                            "cache holds\n", (long long)lens[i], gen);
            return opts_usage_error(PROG, SUMMARY, defs);
        }
    if (!opts_one_of("infllm bench run", "--llamacpp", llamacpp, "auto", "on", "off"))
        return opts_usage_error(PROG, SUMMARY, defs);
    static const char *const all_modes[3] = {"dense", "sparse", "auto"};
    const char *mode_names[3];
    int picked[3], nm = 0;
    if (opts_choice_list(modes, all_modes, 3, picked)) {
        fprintf(stderr, "infllm bench run: --modes is a comma list of dense, sparse and auto (got '%s')\n", modes);
        return opts_usage_error(PROG, SUMMARY, defs);
    }
    for (int i = 0; i < 3; i++)
        if (picked[i]) mode_names[nm++] = all_modes[i];
    o.attn = "dense";
    if (run_opts_check(&o)) return opts_usage_error(PROG, SUMMARY, defs);
    run_ctx R;
    if (run_load(&o, &R, 1)) return 1;
    int64_t maxlen = 0;
    for (int i = 0; i < nl; i++)
        if (lens[i] > maxlen) maxlen = lens[i];
    int32_t *toks = malloc(sizeof(int32_t) * (size_t)(maxlen + gen + 1));
    float *logits = malloc(sizeof(float) * (size_t)R.m->cfg.n_vocab);
    row *rows = calloc((size_t)(nl * (nm + 1)), sizeof *rows); /* + a llama.cpp row per length */
    int nrows = 0, ret = 1;
    if (!toks || !logits || !rows) {
        fprintf(stderr, "infllm bench run: out of memory\n");
        goto done;
    }
    /* deterministic pseudo-random token ids from the ordinary part of the vocabulary */
    uint64_t st = 12345;
    int V = R.m->cfg.n_vocab, lo = V > 1000 ? 256 : 0;
    for (int64_t i = 0; i < maxlen + gen; i++) {
        st = st * 6364136223846793005ULL + 1442695040888963407ULL;
        toks[i] = lo + (int32_t)((st >> 33) % (uint64_t)(V - lo));
    }
    fprintf(stderr, "bench run: %s, %d threads, kernels %s, attention simd %s, llama.cpp numerics %s\n", o.model,
            run_threads(o.threads), quant_kernel_name(), infllm_cpu_simd_level(),
            ggmlc_order() == GGMLC_ORDER_AVX2 ? "avx2" : "avx512");
    for (int i = 0; i < nl; i++) {
        for (int j = 0; j < nm; j++) {
            run_opts oo = run_opts_mode(&o, mode_names[j]);
            oo.ctx = lens[i] + gen;
            row *r = &rows[nrows];
            r->len = lens[i];
            r->mode = mode_names[j];
            r->gen = gen;
            r->prefill_s = r->decode_s = 1e30;
            for (int rep = 0; rep < reps; rep++) {
                mdl_session *s = run_session(&oo, &R, 1);
                if (!s) goto done;
                double t0 = mdl_now();
                if (mdl_forward(s, toks, lens[i], logits, 0)) {
                    fprintf(stderr, "infllm bench run: %s\n", mdl_error());
                    mdl_session_free(s);
                    goto done;
                }
                double t1 = mdl_now();
                for (int g = 0; g < gen; g++) {
                    int32_t best = 0;
                    for (int v = 1; v < V; v++)
                        if (logits[v] > logits[best]) best = v;
                    (void)best;
                    if (mdl_forward(s, &toks[lens[i] + g], 1, logits, 0)) {
                        fprintf(stderr, "infllm bench run: %s\n", mdl_error());
                        mdl_session_free(s);
                        goto done;
                    }
                }
                double t2 = mdl_now();
                if (t1 - t0 < r->prefill_s) r->prefill_s = t1 - t0;
                if (t2 - t1 < r->decode_s) r->decode_s = t2 - t1;
                r->attn_s = s->t_attn;
                mdl_session_free(s);
            }
            fprintf(stderr, "  %6lld tokens %-6s prefill %8.1f tok/s  decode %7.2f tok/s\n", (long long)r->len, r->mode,
                    r->len / r->prefill_s, gen / r->decode_s);
            nrows++;
        }
    }
    if (strcmp(llamacpp, "off")) {
        const int is_gguf = R.m->is_gguf;
        double *pf = calloc((size_t)nl, sizeof *pf), *dc = calloc((size_t)nl, sizeof *dc);
        int lrc = !pf || !dc ? 5 : !is_gguf ? 4
                                            : llamacpp_times(o.model, toks, maxlen + gen, run_threads(o.threads), gen,
                                                             lens, nl, pf, dc);
        if (lrc == 0) {
            for (int i = 0; i < nl; i++) {
                row *r = &rows[nrows++];
                r->len = lens[i];
                r->mode = "llama.cpp";
                r->gen = gen;
                r->prefill_s = pf[i];
                r->decode_s = dc[i];
                fprintf(stderr, "  %6lld tokens llama.cpp prefill %8.1f tok/s  decode %7.2f tok/s\n",
                        (long long)r->len, r->len / r->prefill_s, gen / r->decode_s);
            }
        } else {
            const char *why = lrc == 3   ? "llama-cpp-python is not installed (pip install llama-cpp-python)"
                              : lrc == 4 ? "the model is not a GGUF file"
                              : lrc == 5 ? "out of memory" /* it said 'its run failed' */
                              : lrc == 6 ? "not available on Windows (its driver runs through a POSIX shell)"
                                         : "its run failed";
            fprintf(stderr, "bench run: llama.cpp comparison skipped: %s\n", why);
            if (!strcmp(llamacpp, "on")) {
                free(pf);
                free(dc);
                goto done;
            }
        }
        free(pf);
        free(dc);
    }
    if (!strcmp(format, "md")) {
        printf("| context | attention | prefill tok/s | decode tok/s | prefill s | decode ms/token |\n");
        printf("| ---: | --- | ---: | ---: | ---: | ---: |\n");
        for (int i = 0; i < nrows; i++)
            printf("| %lld | %s | %.1f | %.2f | %.2f | %.1f |\n", (long long)rows[i].len, rows[i].mode,
                   rows[i].len / rows[i].prefill_s, rows[i].gen / rows[i].decode_s, rows[i].prefill_s,
                   1e3 * rows[i].decode_s / rows[i].gen);
        /* sparse speed-up over dense at each length */
        for (int i = 0; i < nrows; i++)
            for (int j = 0; j < nrows; j++)
                if (rows[i].len == rows[j].len && !strcmp(rows[i].mode, "sparse") && !strcmp(rows[j].mode, "dense"))
                    printf("\nsparse/dense at %lld: prefill %.2fx, decode %.2fx", (long long)rows[i].len,
                           rows[j].prefill_s / rows[i].prefill_s, rows[j].decode_s / rows[i].decode_s);
        /* ours against llama.cpp (same tokens, same threads) */
        for (int i = 0; i < nrows; i++)
            for (int j = 0; j < nrows; j++)
                if (rows[i].len == rows[j].len && strcmp(rows[i].mode, "llama.cpp") && !strcmp(rows[j].mode, "llama.cpp"))
                    printf("\n%s/llama.cpp at %lld: prefill %.2fx, decode %.2fx", rows[i].mode, (long long)rows[i].len,
                           rows[j].prefill_s / rows[i].prefill_s, rows[j].decode_s / rows[i].decode_s);
        printf("\n");
    } else { /* csv / json (fmtout.h): a rate of a time of 0 (a llama.cpp run can report one) is an empty field /
              * null, not inf */
        const int json = !strcmp(format, "json");
        int first = 1;
        for (int i = 0; i < nrows; i++) {
            const fmt_col cols[] = {FMT_INT("context", rows[i].len),
                                    FMT_STR("attention", rows[i].mode),
                                    FMT_NUM("prefill_tok_s", 3, rows[i].len / rows[i].prefill_s),
                                    FMT_NUM("decode_tok_s", 3, rows[i].gen / rows[i].decode_s),
                                    FMT_NUM("prefill_s", 4, rows[i].prefill_s),
                                    FMT_NUM("decode_ms_per_token", 3, 1e3 * rows[i].decode_s / rows[i].gen)};
            fmt_record(stdout, json, cols, sizeof cols / sizeof *cols, &first);
        }
        fmt_records_end(stdout, json, first, 0);
    }
    ret = 0;
done:
    free(toks);
    free(logits);
    free(rows);
    run_unload(&R);
    return ret;
}
