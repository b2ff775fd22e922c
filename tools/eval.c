/* eval.c: `infllm eval ppl`: the perplexity of a text under dense and InfLLM-V2 sparse attention in
 * one run, the quality side of the switch that `infllm bench run` times.
 *
 * The text's tokens are cut into consecutive windows of --window tokens (the last partial one is
 * dropped). Each window is run from an empty cache, and its positions from --score-from on are
 * scored: position j's logits against token j + 1 of the window, NLL = logsumexp - logit. So
 * every scored token sees at least --score-from tokens of context, as llama.cpp's perplexity tool
 * does (it scores the second half of each window; with --bos auto the first token of each window
 * becomes BOS when the tokenizer adds one, also as llama.cpp does). The same windows go through
 * every mode, in lockstep; each mode's row gives the mean NLL, PPL = exp(mean NLL) with one
 * standard error, how often its top-1 token equals dense's at the scored positions, and the mean
 * KL divergence of its next-token distribution from dense's (nats a token: llama.cpp's
 * --kl-divergence measure for a quantized model, here for the sparse attention).
 *
 * `infllm eval passkey`: the pass key retrieval test (below) at several lengths and depths, per
 * mode on the same prompts.
 *
 * Logits that are not finite (a NaN or inf weight, activations that overflow) stop both commands with exit 1
 * and a message naming the mode, the window (or prompt) and the first such position; stdout stays empty. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "fmtout.h"
#include "mcommon.h"
#include "model.h"
#include "mtok.h"
#include "opts.h"
#include "runutil.h"
#include "tokenizer.h"

typedef struct eval_row {
    const char *mode;
    int64_t windows, scored;
    double nll_sum, nll_sq, seconds;
    int64_t same_top1; /* scored positions whose argmax equals dense's (dense row: all) */
    double kl_sum;     /* sum over scored positions of KL(dense || this mode), nats */
} eval_row;

static const char *PROG = "infllm eval ppl";
/* the usage's summary lines of eval ppl and eval passkey (beside a usage error too: opts_usage_error) */
#define PPL_SUMMARY "perplexity of a text under dense and InfLLM-V2 sparse attention (the same windows for every mode)"
#define PK_SUMMARY "pass key retrieval: a 5-digit key hidden in filler text at several lengths and depths"

/* --tokens: token ids (opts_token_ids' list: "1,2,3" or blank / comma separated text); NULL after a message, with
 * *n -1 for a bad list (a usage error), >= 0 when out of memory */
static int32_t *parse_ids(const char *s, int64_t *n) {
    if ((*n = opts_token_ids(PROG, "--tokens", s, NULL)) < 0) return NULL;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(*n + 1));
    if (!ids) {
        fprintf(stderr, "%s: out of memory (token list)\n", PROG);
        return NULL;
    }
    opts_token_ids(PROG, "--tokens", s, ids);
    return ids;
}

/* log-sum-exp of a row and its argmax, in double */
static double row_lse(const float *l, int V, int *argmax) {
    int best = 0;
    for (int v = 1; v < V; v++)
        if (l[v] > l[best]) best = v;
    double mx = l[best], s = 0;
    for (int v = 0; v < V; v++) s += exp((double)l[v] - mx);
    *argmax = best;
    return mx + log(s);
}

/* The first of rows rows of V logits that holds a NaN or an infinity, or -1; *bad the first such value. A model
 * whose forward gives them (a NaN / inf weight, or activations that overflow) has no perplexity and no answer:
 * the NLL sum turned NaN and the argmax token 0 without a word. */
static int first_nonfinite_row(const float *l, int rows, int V, float *bad) {
    for (int i = 0; i < rows; i++)
        for (int v = 0; v < V; v++)
            if (!isfinite(l[(size_t)i * V + v])) {
                *bad = l[(size_t)i * V + v];
                return i;
            }
    return -1;
}

static const char *nonfinite_name(float x) { return isnan(x) ? "NaN" : x > 0 ? "+inf" : "-inf"; }

static int eval_passkey(int argc, char **argv);

/* both eval commands: -m is required and --attn is refused (--modes lists what modes_what says);
 * nonzero after printing why */
static int eval_model_opts_bad(const char *prog, const run_opts *o, const char *modes_what) {
    if (!o->model) {
        fprintf(stderr, "%s: -m MODEL is required\n", prog);
        return 1;
    }
    if (o->attn) {
        fprintf(stderr, "%s: --attn does not apply here: --modes lists %s\n", prog, modes_what);
        return 1;
    }
    return 0;
}

/* an exact comma list of distinct mode names (dense, sparse, auto) into names[3]; dense moved first
 * (the other modes compare with it); returns the count, 0 with a message on a bad list */
static int parse_modes(const char *prog, const char *modes, const char *names[3]) {
    char buf[64];
    int nm = 0;
    if (strlen(modes) >= sizeof buf) modes = "?";
    /* strtok skips empty items: 'dense,' and 'dense,,sparse' passed (bench run refuses them) */
    if (modes[0] == ',' || (modes[0] && modes[strlen(modes) - 1] == ',') || strstr(modes, ",,")) {
        fprintf(stderr, "%s: --modes is a comma list of distinct dense, sparse, auto (got '%s': an empty item)\n", prog,
                modes);
        return 0;
    }
    snprintf(buf, sizeof buf, "%s", modes);
    for (char *t = strtok(buf, ","); t; t = strtok(NULL, ",")) {
        const char *k = !strcmp(t, "dense") ? "dense" : !strcmp(t, "sparse") ? "sparse" : !strcmp(t, "auto") ? "auto" : NULL;
        int dup = 0;
        for (int i = 0; i < nm; i++) dup |= k && !strcmp(names[i], k);
        if (!k || dup || nm == 3) {
            fprintf(stderr, "%s: --modes is a comma list of distinct dense, sparse, auto (got '%s')\n", prog, modes);
            return 0;
        }
        names[nm++] = k;
    }
    if (!nm) fprintf(stderr, "%s: --modes is empty\n", prog);
    for (int j = 1; j < nm; j++)
        if (!strcmp(names[j], "dense")) {
            names[j] = names[0];
            names[0] = "dense";
        }
    return nm;
}

int cmd_eval(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "passkey")) return eval_passkey(argc, argv);
    if (argc < 2 || strcmp(argv[1], "ppl")) {
        /* --help: the usage on stdout, as every other command's (it went to stderr); an unknown evaluation is named,
         * as bench names an unknown benchmark (it printed the usage alone) */
        const int help = argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"));
        if (argc >= 2 && !help) fprintf(stderr, "infllm eval: unknown evaluation '%s' (ppl, passkey)\n", argv[1]);
        fprintf(help ? stdout : stderr,
                "usage: infllm eval ppl [options]       perplexity of a text, dense vs InfLLM-V2 sparse\n"
                "       infllm eval passkey [options]   retrieval of a pass key hidden in filler text\n"
                "'infllm eval ppl --help' and 'infllm eval passkey --help' list the options.\n");
        return help ? 0 : 2;
    }
    run_opts o;
    run_opts_default(&o, PROG);
    o.attn = NULL; /* --modes chooses; a given --attn is refused below */
    o.ctx_i = OPTS_INT_UNSET; /* --window's default; a different one beside --window is refused below */
    const char *file = NULL, *tokens = NULL, *modes = "dense,sparse", *format = "md", *bos = "auto";
    /* not given: OPTS_INT_UNSET (0 and -1 were the marks, so --window 0 and --score-from -5 ran as the defaults) */
    int window = OPTS_INT_UNSET, score_from = OPTS_INT_UNSET, max_windows = 0, quiet = 0;
    opt_def defs[] = {
        RUN_MODEL_OPTS(o),
        {"--file", "-f", OPT_STR, &file, "FILE", "the text to score"},
        {"--tokens", NULL, OPT_STR, &tokens, "IDS", "score these token ids instead (comma or blank separated; no tokenizer)"},
        {"--window", NULL, OPT_INT, &window, "N", "tokens a window (--ctx)"},
        {"--score-from", NULL, OPT_INT, &score_from, "N",
         "score window positions from N on, so each scored token has >= N tokens of context (window / 2)"},
        {"--max-windows", NULL, OPT_INT, &max_windows, "N", "score at most N windows (0: all)"},
        {"--modes", NULL, OPT_STR, &modes, "LIST", "attention modes, each on the same windows (dense,sparse)"},
        {"--bos", NULL, OPT_STR, &bos, "WHEN", "auto | on | off: the first token of each window becomes BOS (auto: "
                                              "when the tokenizer adds BOS)"},
        {"--format", NULL, OPT_STR, &format, "FMT", "md | csv | json (md)"},
        {"--quiet", "-q", OPT_FLAG, &quiet, NULL, "no model info or progress on stderr"},
        {NULL, NULL, 0, NULL, NULL, NULL}};
    opts_set_help(defs, "--attn", NULL); /* refused below (--modes): not listed */
    /* the modes run in lockstep steps of at most 128 positions (below): a forward call never takes more, so the
     * shared options' "(512)" was never what ran, and a larger --chunk changed nothing */
    opts_set_help(defs, "--chunk", "prefill chunk in tokens (128, the most here: the modes run in lockstep steps of "
                                   "128 positions; a smaller N splits them)");
    int rc = opts_parse(PROG, PPL_SUMMARY, defs, argc, argv, 2, NULL, 0, NULL);
    if (rc == 1) return 0;
    if (rc) return 2;
    if (eval_model_opts_bad(PROG, &o, "the attention modes to score")) return opts_usage_error(PROG, PPL_SUMMARY, defs);
    if (!file == !tokens) {
        fprintf(stderr, "%s: give the text with -f FILE or the ids with --tokens (one of them)\n", PROG);
        return opts_usage_error(PROG, PPL_SUMMARY, defs);
    }
    if (window != OPTS_INT_UNSET && o.ctx_i != OPTS_INT_UNSET && o.ctx_i != window) { /* one was ignored */
        fprintf(stderr, "%s: --window %d and --ctx %d disagree: the window is the context (give one of them)\n", PROG,
                window, o.ctx_i);
        return opts_usage_error(PROG, PPL_SUMMARY, defs);
    }
    if (o.ctx_i == OPTS_INT_UNSET) o.ctx_i = 4096;
    if (window == OPTS_INT_UNSET) window = o.ctx_i;
    if (score_from == OPTS_INT_UNSET) score_from = window / 2 < window - 2 ? window / 2 : (window >= 2 ? window - 2 : 0);
    if (window < 2 || score_from < 0 || score_from > window - 2 || max_windows < 0) {
        fprintf(stderr, "%s: need --window >= 2, 0 <= --score-from <= window - 2 and --max-windows >= 0 (window %d, "
                        "score-from %d)\n", PROG, window, score_from);
        return opts_usage_error(PROG, PPL_SUMMARY, defs);
    }
    if (!opts_one_of(PROG, "--format", format, "md", "csv", "json") ||
        !opts_one_of(PROG, "--bos", bos, "auto", "on", "off"))
        return opts_usage_error(PROG, PPL_SUMMARY, defs);
    const char *mode_names[3];
    const int nm = parse_modes(PROG, modes, mode_names);
    if (!nm) return opts_usage_error(PROG, PPL_SUMMARY, defs);
    o.ctx_i = window; /* every session holds one window */
    o.attn = "dense";
    if (run_opts_check(&o)) return opts_usage_error(PROG, PPL_SUMMARY, defs);
    /* the text is read (or the id list parsed) before the model loads: a missing file or a typo in the list was
     * reported only after the load */
    int32_t *ids = NULL;
    char *text = NULL;
    size_t len = 0;
    int64_t n = 0;
    if (tokens) {
        if (!(ids = parse_ids(tokens, &n))) return n < 0 ? opts_usage_error(PROG, PPL_SUMMARY, defs) : 1;
    } else if (!(text = run_read_file(PROG, file, &len))) {
        return 1;
    }
    run_ctx R;
    if (run_load(&o, &R, quiet)) {
        free(ids);
        free(text);
        return 1;
    }
    int ret = 1;
    int32_t *win = NULL;
    float *logits_m[3] = {NULL, NULL, NULL};
    mdl_session *sess[3] = {NULL, NULL, NULL};
    eval_row rows[3];
    memset(rows, 0, sizeof rows);
    if (!tokens) {
        if (!R.tok) {
            fprintf(stderr, "%s: no tokenizer: %s\n", PROG, R.tok_err);
            goto done;
        }
        ids = run_tokenize(PROG, R.tok, text, len, 0, 0, 0, &n);
        if (!ids) goto done;
    }
    const int V = R.m->cfg.n_vocab;
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= V) {
            fprintf(stderr, "%s: token id %d (position %lld) is outside the vocabulary (0..%d)\n", PROG, ids[i],
                    (long long)i, V - 1);
            ret = 2;
            goto done;
        }
    int64_t nwin = n / window;
    if (max_windows > 0 && nwin > max_windows) nwin = max_windows;
    if (nwin < 1) {
        fprintf(stderr, "%s: the text has %lld tokens, fewer than one window of %d (lower --window)\n", PROG,
                (long long)n, window);
        ret = 2;
        goto done;
    }
    int32_t bos_id = R.tok ? tok_bos(R.tok) : -1;
    int use_bos = !strcmp(bos, "on") || (!strcmp(bos, "auto") && R.tok && tok_add_bos_default(R.tok));
    if (use_bos && bos_id < 0) {
        if (!strcmp(bos, "on")) {
            fprintf(stderr, "%s: --bos on, but the model's tokenizer has no BOS token\n", PROG);
            ret = 2;
            goto done;
        }
        use_bos = 0;
    }
    /* the modes run in lockstep, a step of positions at a time, so that each step's dense logits are
     * at hand for the KL divergence of the others; a step is at most 128 positions (memory: modes x
     * step x vocabulary floats) */
    const int step = o.chunk > 0 && o.chunk < 128 ? o.chunk : 128;
    const int64_t per_win = window - 1 - score_from;
    const int have_dense = !strcmp(mode_names[0], "dense");
    for (int j = 0; j < nm; j++) {
        logits_m[j] = malloc(sizeof(float) * (size_t)step * (size_t)V);
        if (!logits_m[j]) {
            fprintf(stderr, "%s: out of memory (logits of %d positions x %d)\n", PROG, step, V);
            goto done;
        }
        run_opts oo = run_opts_mode(&o, mode_names[j]);
        rows[j].mode = mode_names[j];
        sess[j] = run_session(&oo, &R, 1);
        if (!sess[j]) goto done;
    }
    win = malloc(sizeof(int32_t) * (size_t)window);
    if (!win) {
        fprintf(stderr, "%s: out of memory\n", PROG);
        goto done;
    }
    if (!quiet)
        fprintf(stderr, "eval ppl: %lld tokens, %lld windows of %d, scoring positions %d..%d of each (%lld tokens)%s\n",
                (long long)n, (long long)nwin, window, score_from, window - 2, (long long)(nwin * per_win),
                use_bos ? ", BOS first" : "");
    for (int64_t w = 0; w < nwin; w++) {
        memcpy(win, ids + w * window, sizeof(int32_t) * (size_t)window);
        if (use_bos) win[0] = bos_id;
        for (int j = 0; j < nm; j++)
            if (mdl_session_truncate(sess[j], 0)) {
                fprintf(stderr, "%s: %s\n", PROG, mdl_error());
                goto done;
            }
        /* positions 0..window-2 have a target; the last one's logits are not needed */
        for (int p0 = 0; p0 < window - 1; p0 += step) {
            const int m = window - 1 - p0 < step ? window - 1 - p0 : step;
            for (int j = 0; j < nm; j++) {
                const double t0 = mdl_now();
                if (mdl_forward(sess[j], win + p0, m, logits_m[j], 1)) {
                    fprintf(stderr, "%s: %s (%s)\n", PROG, mdl_error(), mode_names[j]);
                    goto done;
                }
                rows[j].seconds += mdl_now() - t0;
                float bad = 0;
                const int r = first_nonfinite_row(logits_m[j], m, V, &bad);
                if (r >= 0) {
                    fprintf(stderr, "%s: the %s logits are not finite (%s) at window %lld of %lld (text tokens %lld..%lld), "
                                    "position %d: the model's weights hold NaN / inf or its activations overflow; no "
                                    "perplexity\n", PROG, mode_names[j], nonfinite_name(bad), (long long)(w + 1),
                            (long long)nwin, (long long)(w * window), (long long)(w * window + window - 1), p0 + r);
                    goto done;
                }
            }
            for (int i = 0; i < m; i++) {
                const int pos = p0 + i;
                if (pos < score_from) continue;
                int top0 = -1;
                double lse0 = 0;
                for (int j = 0; j < nm; j++) {
                    eval_row *r = &rows[j];
                    int top;
                    const float *l = logits_m[j] + (size_t)i * V;
                    const double lse = row_lse(l, V, &top);
                    const double nll = lse - (double)l[win[pos + 1]];
                    r->nll_sum += nll;
                    r->nll_sq += nll * nll;
                    r->scored++;
                    if (!have_dense) continue;
                    if (j == 0) {
                        top0 = top;
                        lse0 = lse;
                    }
                    r->same_top1 += top == top0;
                    if (j > 0) { /* KL(dense || this mode) = sum p_d (log p_d - log p_j) */
                        const float *l0 = logits_m[0] + (size_t)i * V;
                        double kl = 0;
                        for (int v = 0; v < V; v++) {
                            const double lp0 = (double)l0[v] - lse0;
                            kl += exp(lp0) * (lp0 - ((double)l[v] - lse));
                        }
                        r->kl_sum += kl > 0 ? kl : 0; /* >= 0 up to rounding */
                    }
                }
            }
        }
        for (int j = 0; j < nm; j++) rows[j].windows++;
        if (!quiet) {
            fprintf(stderr, "  window %lld/%lld: PPL so far", (long long)(w + 1), (long long)nwin);
            for (int j = 0; j < nm; j++)
                fprintf(stderr, " %s %.4f", rows[j].mode, exp(rows[j].nll_sum / (double)rows[j].scored));
            fputc('\n', stderr);
        }
    }
    /* mean NLL, its standard error, PPL and PPL's one-s.e. band (exp of mean +- s.e.) */
    double mean[3], se[3];
    for (int j = 0; j < nm; j++) {
        const double k = (double)rows[j].scored;
        mean[j] = rows[j].nll_sum / k;
        const double var = k > 1 ? (rows[j].nll_sq - k * mean[j] * mean[j]) / (k - 1) : 0;
        se[j] = sqrt(var > 0 ? var / k : 0);
    }
    if (!strcmp(format, "md")) {
        printf("| attention | windows | scored tokens | mean NLL | PPL | PPL (1 s.e.) | top-1 = dense | KL(dense \\|\\| "
               "this), nats/token | seconds | tok/s |\n");
        printf("| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |\n");
        for (int j = 0; j < nm; j++) {
            const eval_row *r = &rows[j];
            char agree[32] = "-", kl[32] = "-";
            if (have_dense) {
                snprintf(agree, sizeof agree, "%.2f%%", 100.0 * (double)r->same_top1 / (double)r->scored);
                snprintf(kl, sizeof kl, "%.6f", r->kl_sum / (double)r->scored);
            }
            printf("| %s | %lld | %lld | %.5f | %.4f | %.4f-%.4f | %s | %s | %.2f | %.1f |\n", r->mode,
                   (long long)r->windows, (long long)r->scored, mean[j], exp(mean[j]), exp(mean[j] - se[j]),
                   exp(mean[j] + se[j]), agree, kl, r->seconds, (double)(r->windows * (window - 1)) / r->seconds);
        }
        if (have_dense)
            for (int j = 1; j < nm; j++)
                printf("\n%s/dense: PPL %.4fx, mean NLL %+.5f", rows[j].mode, exp(mean[j] - mean[0]), mean[j] - mean[0]);
        printf("\n");
    } else { /* csv / json (fmtout.h): a value that is not finite (a PPL past double's range: exp of a mean NLL > 709)
              * is an empty field / null, not printf's inf (json.loads refused the file) */
        const int json = !strcmp(format, "json");
        int first = 1;
        for (int j = 0; j < nm; j++) {
            const double k = (double)rows[j].scored;
            const double agree = have_dense ? (double)rows[j].same_top1 / k : NAN, kl = have_dense ? rows[j].kl_sum / k : NAN;
            const fmt_col cols[] = {FMT_STR("attention", rows[j].mode),
                                    FMT_INT("windows", rows[j].windows),
                                    FMT_INT("scored_tokens", rows[j].scored),
                                    FMT_NUM("mean_nll", 6, mean[j]),
                                    FMT_NUM("ppl", 6, exp(mean[j])),
                                    FMT_NUM("nll_se", 6, se[j]),
                                    FMT_NUM("top1_same_as_dense", 6, agree), /* no dense row: null / empty */
                                    FMT_NUM("kl_vs_dense", 8, kl),
                                    FMT_NUM("seconds", 4, rows[j].seconds)};
            fmt_record(stdout, json, cols, sizeof cols / sizeof *cols, &first);
        }
        fmt_records_end(stdout, json, first, 0);
    }
    ret = 0;
done:
    for (int j = 0; j < 3; j++) {
        mdl_session_free(sess[j]);
        free(logits_m[j]);
    }
    free(ids);
    free(win);
    free(text);
    run_unload(&R);
    return ret;
}

/* ------------------------------------------------------------------ passkey ---- */

/* The classic pass key test (Landmark Attention, LongLoRA): an instruction, filler sentences with
 * one sentence holding a random 5-digit key at a relative depth, the question; the model's greedy
 * continuation must contain the key. */
static const char *PK_PROG = "infllm eval passkey";
static const char *PK_INTRO = "There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
                              "I will quiz you about the important information there.\n";
static const char *PK_FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ";
static const char *PK_QUESTION = "What is the pass key?";
static const char *PK_ANSWER = " The pass key is";

/* the prompt of n filler sentences with the needle after round(depth n) of them; malloc'ed */
static char *pk_text(int64_t n, double depth, int key, int chat_user_only) {
    char needle[128];
    snprintf(needle, sizeof needle, "The pass key is %05d. Remember it. %05d is the pass key. ", key, key);
    const size_t fl = strlen(PK_FILLER);
    const size_t cap = strlen(PK_INTRO) + (size_t)n * fl + strlen(needle) + strlen(PK_QUESTION) + strlen(PK_ANSWER) + 8;
    char *t = malloc(cap);
    if (!t) return NULL;
    size_t o = 0;
    const int64_t at = (int64_t)(depth * (double)n + 0.5);
    memcpy(t + o, PK_INTRO, strlen(PK_INTRO));
    o += strlen(PK_INTRO);
    for (int64_t i = 0; i <= n; i++) {
        if (i == at) {
            memcpy(t + o, needle, strlen(needle));
            o += strlen(needle);
        }
        if (i < n) {
            memcpy(t + o, PK_FILLER, fl);
            o += fl;
        }
    }
    t[o++] = '\n';
    memcpy(t + o, PK_QUESTION, strlen(PK_QUESTION));
    o += strlen(PK_QUESTION);
    if (!chat_user_only) {
        memcpy(t + o, PK_ANSWER, strlen(PK_ANSWER));
        o += strlen(PK_ANSWER);
    }
    t[o] = 0;
    return t;
}

/* tokens of the prompt (chat: the model's template around the question, the answer's start
 * appended); *n their count; NULL with a message */
static int32_t *pk_encode(const run_ctx *R, int chat, int64_t nfill, double depth, int key, int64_t *n) {
    char *user = pk_text(nfill, depth, key, chat);
    if (!user) { /* this and the realloc below failed without a word (exit 1) */
        fprintf(stderr, "%s: out of memory (the prompt's text)\n", PK_PROG);
        return NULL;
    }
    char *text = user;
    int special = 0, add_bos = -1;
    if (chat) {
        mdl_chat cs;
        size_t a = 0;
        char *c = mdl_chat_init(R->m, &cs) ? NULL : mdl_chat_first(&cs, NULL, user, strlen(user), &a);
        free(user);
        if (!c) {
            mdl_chat_free(&cs);
            fprintf(stderr, "%s: %s\n", PK_PROG, mdl_error());
            return NULL;
        }
        size_t b = strlen(PK_ANSWER + 1);
        text = realloc(c, a + b + 1);
        if (!text) {
            mdl_chat_free(&cs);
            fprintf(stderr, "%s: out of memory (the chat prompt)\n", PK_PROG);
            free(c);
            return NULL;
        }
        memcpy(text + a, PK_ANSWER + 1, b + 1); /* "The pass key is", no leading space after the template */
        special = 1;
        add_bos = cs.bos ? 1 : run_chat_add_bos(R->tok, text);
        mdl_chat_free(&cs);
    }
    int32_t *ids = run_tokenize(PK_PROG, R->tok, text, strlen(text), add_bos, special, 0, n);
    free(text);
    return ids;
}

/* the answer made safe to print: control bytes become spaces, and any byte of an invalid or
 * incomplete UTF-8 sequence '?' (a model's first tokens can be arbitrary bytes) */
static void pk_printable(char *s) {
    unsigned char *p = (unsigned char *)s;
    while (*p) {
        int len = *p < 0x80 ? 1 : (*p >> 5) == 6 ? 2 : (*p >> 4) == 14 ? 3 : (*p >> 3) == 30 ? 4 : 0;
        int ok = len > 0;
        for (int i = 1; ok && i < len; i++) ok = (p[i] & 0xC0) == 0x80;
        if (!ok) {
            *p++ = '?';
            continue;
        }
        if (len == 1 && (*p < 0x20 || *p == 0x7f)) *p = ' ';
        p += len;
    }
}

typedef struct pk_cell {
    const char *mode;
    int64_t target, tokens_sum;
    double depth;
    int trials, found;
    double seconds;
} pk_cell;

static int eval_passkey(int argc, char **argv) {
    run_opts o;
    run_opts_default(&o, PK_PROG);
    o.attn = NULL;
    o.ctx_i = OPTS_INT_UNSET; /* a given --ctx is refused below */
    const char *lengths = "1024,2048,4096", *depths_s = "0.1,0.5,0.9", *modes = "dense,sparse", *format = "md";
    const char *chat_s = "auto";
    int trials = 1, seed = 1, gen = 8, quiet = 0;
    opt_def defs[] = {
        RUN_MODEL_OPTS(o),
        {"--lengths", NULL, OPT_STR, &lengths, "LIST", "prompt lengths in tokens (1024,2048,4096; 8k suffix ok)"},
        {"--depths", NULL, OPT_STR, &depths_s, "LIST", "where the key sits, 0 (start) .. 1 (end) (0.1,0.5,0.9)"},
        {"--trials", NULL, OPT_INT, &trials, "N", "keys per (length, depth) (1)"},
        {"--seed", NULL, OPT_INT, &seed, "N", "seed of the keys (1)"},
        {"--gen", NULL, OPT_INT, &gen, "N", "greedy tokens generated for the answer (8)"},
        {"--modes", NULL, OPT_STR, &modes, "LIST", "attention modes, each on the same prompts (dense,sparse)"},
        {"--chat", NULL, OPT_STR, &chat_s, "WHEN", "auto | on | off: the question in the model's chat template "
                                                  "(auto: when it has one of a style formatted here, or none and "
                                                  "<|im_start|> in its vocabulary)"},
        {"--format", NULL, OPT_STR, &format, "FMT", "md | csv | json (md)"},
        {"--quiet", "-q", OPT_FLAG, &quiet, NULL, "no model info or progress on stderr"},
        {NULL, NULL, 0, NULL, NULL, NULL}};
    opts_set_help(defs, "--attn", NULL); /* refused below (--modes, --lengths): not listed */
    opts_set_help(defs, "--ctx", NULL);
    int rc = opts_parse(PK_PROG, PK_SUMMARY, defs, argc, argv, 2, NULL, 0, NULL);
    if (rc == 1) return 0;
    if (rc) return 2;
    if (eval_model_opts_bad(PK_PROG, &o, "the attention modes")) return opts_usage_error(PK_PROG, PK_SUMMARY, defs);
    if (o.ctx_i != OPTS_INT_UNSET) { /* was overwritten below without a word */
        fprintf(stderr, "%s: --ctx does not apply here: each prompt's context follows --lengths and --gen\n", PK_PROG);
        return opts_usage_error(PK_PROG, PK_SUMMARY, defs);
    }
    int64_t lens[32];
    double depths[32];
    const int nl = opts_int_list(PK_PROG, "--lengths", lengths, lens, 32);
    if (nl < 0) return opts_usage_error(PK_PROG, PK_SUMMARY, defs);
    const int nd = opts_num_list(PK_PROG, "--depths", depths_s, 0, 1, depths, 32);
    if (nd < 0) return opts_usage_error(PK_PROG, PK_SUMMARY, defs);
    if (trials < 1 || trials > 1000 || gen < 1 || gen > 64) {
        fprintf(stderr, "%s: need 1 <= --trials <= 1000 and 1 <= --gen <= 64\n", PK_PROG);
        return opts_usage_error(PK_PROG, PK_SUMMARY, defs);
    }
    if (!opts_one_of(PK_PROG, "--format", format, "md", "csv", "json") ||
        !opts_one_of(PK_PROG, "--chat", chat_s, "auto", "on", "off"))
        return opts_usage_error(PK_PROG, PK_SUMMARY, defs);
    const char *mode_names[3];
    const int nm = parse_modes(PK_PROG, modes, mode_names);
    if (!nm) return opts_usage_error(PK_PROG, PK_SUMMARY, defs);
    int64_t maxlen = 0;
    for (int i = 0; i < nl; i++) maxlen = lens[i] > maxlen ? lens[i] : maxlen;
    if (maxlen > (1 << 30)) { /* the context below must stay an int (a KV cache holds < 2^31 tokens) */
        fprintf(stderr, "%s: --lengths %lld is too long (at most %d tokens)\n", PK_PROG, (long long)maxlen, 1 << 30);
        return opts_usage_error(PK_PROG, PK_SUMMARY, defs);
    }
    o.ctx_i = (int)(maxlen + maxlen / 8 + 256 + gen); /* room for the prompt's overshoot */
    o.attn = "dense";
    if (run_opts_check(&o)) return opts_usage_error(PK_PROG, PK_SUMMARY, defs);
    run_ctx R;
    if (run_load(&o, &R, quiet)) return 1;
    int ret = 1;
    pk_cell *cells = calloc((size_t)nm * nl * nd, sizeof *cells);
    float *logits = malloc(sizeof(float) * (size_t)R.m->cfg.n_vocab);
    if (!cells || !logits) {
        fprintf(stderr, "%s: out of memory\n", PK_PROG);
        goto done;
    }
    if (!R.tok) {
        fprintf(stderr, "%s: the model has no usable tokenizer: %s\n", PK_PROG, R.tok_err);
        goto done;
    }
    int chat = !strcmp(chat_s, "on");
    if (!strcmp(chat_s, "auto")) { /* a chat template of a style formatted here, or none and ChatML's markers */
        mdl_chat cs;
        chat = !mdl_chat_init(R.m, &cs) && (cs.has_template || tok_token_id(R.tok, "<|im_start|>") >= 0);
        mdl_chat_free(&cs);
    }
    /* tokens a filler sentence adds, and what the rest of the prompt takes */
    int64_t t0n = 0, t1n = 0;
    int32_t *p0 = pk_encode(&R, chat, 0, 0.5, 12345, &t0n), *p1 = pk_encode(&R, chat, 64, 0.5, 12345, &t1n);
    const int probed = p0 && p1;
    free(p0);
    free(p1);
    if (!probed) goto done;
    const double per_filler = (double)(t1n - t0n) / 64.0;
    const int V = R.m->cfg.n_vocab;
    uint64_t rs = (uint64_t)seed * 0x9E3779B97F4A7C15ULL + 1;
    for (int li = 0; li < nl; li++) {
        const int64_t nfill = per_filler > 0 ? (int64_t)((double)(lens[li] - t0n) / per_filler + 0.5) : 0;
        if (nfill < 1) {
            fprintf(stderr, "%s: length %lld is too short for the prompt (%lld tokens without filler)\n", PK_PROG,
                    (long long)lens[li], (long long)t0n);
            ret = 2;
            goto done;
        }
        for (int di = 0; di < nd; di++)
            for (int t = 0; t < trials; t++) {
                rs = rs * 6364136223846793005ULL + 1442695040888963407ULL;
                const int key = 10000 + (int)((rs >> 33) % 90000);
                char want[16];
                snprintf(want, sizeof want, "%d", key);
                int64_t n = 0;
                int32_t *ids = pk_encode(&R, chat, nfill, depths[di], key, &n);
                if (!ids) goto done;
                for (int j = 0; j < nm; j++) {
                    pk_cell *c = &cells[((size_t)j * nl + li) * nd + di];
                    c->mode = mode_names[j];
                    c->target = lens[li];
                    c->depth = depths[di];
                    run_opts oo = run_opts_mode(&o, mode_names[j]);
                    mdl_session *s = run_session(&oo, &R, 1);
                    if (!s) {
                        free(ids);
                        goto done;
                    }
                    const double ts = mdl_now();
                    char out[512] = "";
                    size_t no = 0;
                    int ok = !mdl_forward(s, ids, n, logits, 0), nonfinite = 0;
                    for (int g = 0; ok && g < gen; g++) {
                        float bad = 0;
                        if (first_nonfinite_row(logits, 1, V, &bad) == 0) { /* the argmax was token 0 */
                            fprintf(stderr, "%s: the %s logits are not finite (%s) at length %lld, depth %.2f, key %s, "
                                            "position %lld (%s): the model's weights hold NaN / inf or its activations "
                                            "overflow; no result\n", PK_PROG, c->mode, nonfinite_name(bad),
                                    (long long)lens[li], depths[di], want, (long long)(n - 1 + g),
                                    g ? "a generated token" : "the prompt's last token");
                            nonfinite = 1;
                            break;
                        }
                        int32_t best = 0;
                        for (int v = 1; v < V; v++)
                            if (logits[v] > logits[best]) best = v;
                        if (tok_is_eog(R.tok, best)) break;
                        char piece[TOK_MAX_PIECE];
                        int k = tok_decode_piece(R.tok, best, 0, piece, (int)sizeof piece);
                        if (k > 0 && no + (size_t)k < sizeof out) {
                            memcpy(out + no, piece, (size_t)k);
                            no += (size_t)k;
                            out[no] = 0;
                        }
                        if (g + 1 < gen) ok = !mdl_forward(s, &best, 1, logits, 0);
                    }
                    c->seconds += mdl_now() - ts;
                    mdl_session_free(s);
                    if (nonfinite) {
                        free(ids);
                        goto done;
                    }
                    if (!ok) {
                        fprintf(stderr, "%s: %s\n", PK_PROG, mdl_error());
                        free(ids);
                        goto done;
                    }
                    const int hit = strstr(out, want) != NULL;
                    c->trials++;
                    c->found += hit;
                    c->tokens_sum += n;
                    if (!quiet) {
                        pk_printable(out);
                        fprintf(stderr, "  %-6s %6lld tokens, depth %.2f, key %s: %s \"%s\"\n", c->mode, (long long)n,
                                depths[di], want, hit ? "found" : "missed", out);
                    }
                }
                free(ids);
            }
    }
    const int ncell = nm * nl * nd;
    if (!strcmp(format, "md")) {
        printf("| attention | length | tokens (mean) | depth | found | accuracy |\n");
        printf("| --- | ---: | ---: | ---: | ---: | ---: |\n");
        for (int i = 0; i < ncell; i++)
            printf("| %s | %lld | %.0f | %.2f | %d/%d | %.0f%% |\n", cells[i].mode, (long long)cells[i].target,
                   (double)cells[i].tokens_sum / cells[i].trials, cells[i].depth, cells[i].found, cells[i].trials,
                   100.0 * cells[i].found / cells[i].trials);
        for (int j = 0; j < nm; j++) {
            int f = 0, tr = 0;
            for (int i = 0; i < nl * nd; i++) {
                f += cells[(size_t)j * nl * nd + i].found;
                tr += cells[(size_t)j * nl * nd + i].trials;
            }
            printf("%s%s: %d of %d found (%.0f%%)", j ? "; " : "\n", mode_names[j], f, tr, 100.0 * f / tr);
        }
        printf("\n");
    } else { /* csv / json (fmtout.h) */
        const int json = !strcmp(format, "json");
        int first = 1;
        for (int i = 0; i < ncell; i++) {
            const fmt_col cols[] = {FMT_STR("attention", cells[i].mode),
                                    FMT_INT("length", cells[i].target),
                                    FMT_NUM("tokens_mean", 1, (double)cells[i].tokens_sum / cells[i].trials),
                                    FMT_NUM("depth", 4, cells[i].depth),
                                    FMT_INT("trials", cells[i].trials),
                                    FMT_INT("found", cells[i].found),
                                    FMT_NUM("accuracy", 6, (double)cells[i].found / cells[i].trials),
                                    FMT_NUM("seconds", 4, cells[i].seconds)};
            fmt_record(stdout, json, cols, sizeof cols / sizeof *cols, &first);
        }
        fmt_records_end(stdout, json, first, 0);
    }
    ret = 0;
done:
    free(cells);
    free(logits);
    run_unload(&R);
    return ret;
}
