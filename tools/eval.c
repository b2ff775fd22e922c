/* eval.c: `infllm eval ppl`: the perplexity of a text under dense and InfLLM-V2 sparse attention in
 * one run, the quality side of the switch that `infllm bench run` times.
 *
 * The text's tokens are cut into consecutive windows of --window tokens (the last partial one is
 * dropped). Each window is run from an empty cache, and its positions from --score-from on are
 * scored: position j's logits against token j + 1 of the window, NLL = logsumexp - logit. So
 * every scored token sees at least --score-from tokens of context, as llama.cpp's perplexity tool
 * does (it scores the second half of each window; with --bos auto the first token of each window
 * becomes BOS when the tokenizer adds one, also as llama.cpp does). The same windows go through
 * every mode; each mode's row gives the mean NLL, PPL = exp(mean NLL) with one standard error,
 * and how often its top-1 token equals dense's at the scored positions. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "mcommon.h"
#include "model.h"
#include "opts.h"
#include "runutil.h"
#include "tokenizer.h"

typedef struct eval_row {
    const char *mode;
    int64_t windows, scored;
    double nll_sum, nll_sq, seconds;
    int64_t same_top1; /* scored positions whose argmax equals dense's (dense row: all) */
} eval_row;

static const char *PROG = "infllm eval ppl";

/* token ids from "1,2,3" or whitespace / comma separated text */
static int32_t *parse_ids(const char *s, int64_t *n) {
    size_t cap = strlen(s) / 2 + 2;
    int32_t *ids = malloc(sizeof(int32_t) * cap);
    *n = 0;
    if (!ids) return NULL;
    const char *p = s;
    while (*p) {
        while (*p == ',' || *p == ' ' || *p == '\n' || *p == '\t' || *p == '\r') p++;
        if (!*p) break;
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > INT32_MAX) {
            fprintf(stderr, "%s: bad token id at '%.20s'\n", PROG, p);
            free(ids);
            return NULL;
        }
        ids[(*n)++] = (int32_t)v;
        p = end;
    }
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

int cmd_eval(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "ppl")) {
        fprintf(stderr,
                "usage: infllm eval ppl [options]   (perplexity of a text, dense vs InfLLM-V2 sparse)\n"
                "'infllm eval ppl --help' lists the options.\n");
        return argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) ? 0 : 2;
    }
    run_opts o;
    run_opts_default(&o);
    o.attn = NULL; /* --modes chooses; a given --attn is refused below */
    const char *file = NULL, *tokens = NULL, *modes = "dense,sparse", *format = "md", *bos = "auto";
    int window = 0, score_from = -1, max_windows = 0, quiet = 0;
    opt_def defs[] = {
        RUN_MODEL_OPTS(o),
        {"--file", "-f", OPT_STR, &file, "FILE", "the text to score"},
        {"--tokens", NULL, OPT_STR, &tokens, "IDS", "score these token ids instead (comma separated; no tokenizer)"},
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
    int rc = opts_parse(PROG,
                        "perplexity of a text under dense and InfLLM-V2 sparse attention (the same windows for "
                        "every mode)",
                        defs, argc, argv, 2, NULL, 0, NULL);
    if (rc == 1) return 0;
    if (rc) return 2;
    if (!o.model) {
        fprintf(stderr, "%s: -m MODEL is required\n", PROG);
        return 2;
    }
    if (o.attn) {
        fprintf(stderr, "%s: --attn does not apply here: --modes lists the attention modes to score\n", PROG);
        return 2;
    }
    if (!file == !tokens) {
        fprintf(stderr, "%s: give the text with -f FILE or the ids with --tokens (one of them)\n", PROG);
        return 2;
    }
    if (window == 0) window = o.ctx_i;
    if (score_from < 0) score_from = window / 2 < window - 2 ? window / 2 : (window >= 2 ? window - 2 : 0);
    if (window < 2 || score_from > window - 2 || max_windows < 0) {
        fprintf(stderr, "%s: need --window >= 2, 0 <= --score-from <= window - 2 and --max-windows >= 0 (window %d, "
                        "score-from %d)\n", PROG, window, score_from);
        return 2;
    }
    if (strcmp(format, "md") && strcmp(format, "csv") && strcmp(format, "json")) {
        fprintf(stderr, "%s: --format must be md, csv or json\n", PROG);
        return 2;
    }
    if (strcmp(bos, "auto") && strcmp(bos, "on") && strcmp(bos, "off")) {
        fprintf(stderr, "%s: --bos must be auto, on or off\n", PROG);
        return 2;
    }
    const char *mode_names[3];
    int nm = 0;
    {
        /* an exact comma list of distinct known names */
        char buf[64];
        if (strlen(modes) >= sizeof buf) modes = "?";
        snprintf(buf, sizeof buf, "%s", modes);
        for (char *t = strtok(buf, ","); t; t = strtok(NULL, ",")) {
            const char *k = !strcmp(t, "dense") ? "dense" : !strcmp(t, "sparse") ? "sparse" : !strcmp(t, "auto") ? "auto" : NULL;
            int dup = 0;
            for (int i = 0; i < nm; i++) dup |= k && !strcmp(mode_names[i], k);
            if (!k || dup || nm == 3) {
                fprintf(stderr, "%s: --modes is a comma list of distinct dense, sparse, auto (got '%s')\n", PROG, modes);
                return 2;
            }
            mode_names[nm++] = k;
        }
        if (!nm) {
            fprintf(stderr, "%s: --modes is empty\n", PROG);
            return 2;
        }
    }
    o.ctx_i = window; /* every session holds one window */
    o.attn = "dense";
    if (run_opts_check(&o)) return 2;
    run_ctx R;
    if (run_load(&o, &R, quiet)) return 1;
    int ret = 1;
    int32_t *ids = NULL, *dense_top = NULL, *win = NULL;
    float *logits = NULL;
    char *text = NULL;
    eval_row rows[3];
    memset(rows, 0, sizeof rows);
    int64_t n = 0;
    if (tokens) {
        ids = parse_ids(tokens, &n);
        if (!ids) {
            ret = 2;
            goto done;
        }
    } else {
        size_t len = 0;
        text = run_read_file(PROG, file, &len);
        if (!text) goto done;
        if (!R.tok) {
            fprintf(stderr, "%s: no tokenizer: %s\n", PROG, R.tok_err);
            goto done;
        }
        int need = tok_encode(R.tok, text, len, 0, 0, NULL, 0);
        if (need == INT32_MIN) {
            fprintf(stderr, "%s: out of memory (tokenizer)\n", PROG);
            goto done;
        }
        int cnt = need < 0 ? -need : need;
        ids = malloc(sizeof(int32_t) * ((size_t)cnt + 1));
        if (!ids) {
            fprintf(stderr, "%s: out of memory\n", PROG);
            goto done;
        }
        n = tok_encode(R.tok, text, len, 0, 0, ids, cnt + 1);
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
    const int chunk = o.chunk > 0 ? o.chunk : 512;
    const int64_t per_win = window - 1 - score_from;
    logits = malloc(sizeof(float) * (size_t)chunk * (size_t)V);
    dense_top = malloc(sizeof(int32_t) * (size_t)(nwin * per_win));
    win = malloc(sizeof(int32_t) * (size_t)window);
    if (!logits || !dense_top || !win) {
        fprintf(stderr, "%s: out of memory (logits of %d positions x %d)\n", PROG, chunk, V);
        goto done;
    }
    int have_dense = 0;
    for (int j = 0; j < nm; j++) have_dense |= !strcmp(mode_names[j], "dense");
    /* dense first, so that the other modes can compare their top-1 with it */
    for (int j = 0; j < nm; j++)
        if (!strcmp(mode_names[j], "dense") && j) {
            const char *t = mode_names[0];
            mode_names[0] = mode_names[j];
            mode_names[j] = t;
        }
    if (!quiet)
        fprintf(stderr, "eval ppl: %lld tokens, %lld windows of %d, scoring positions %d..%d of each (%lld tokens)%s\n",
                (long long)n, (long long)nwin, window, score_from, window - 2, (long long)(nwin * per_win),
                use_bos ? ", BOS first" : "");
    for (int j = 0; j < nm; j++) {
        run_opts oo = o;
        oo.attn = mode_names[j];
        if (!strcmp(oo.attn, "sparse")) oo.dense_len = -1;
        eval_row *r = &rows[j];
        r->mode = mode_names[j];
        mdl_session *s = run_session(&oo, &R, 1);
        if (!s) goto done;
        double t0 = mdl_now();
        for (int64_t w = 0; w < nwin; w++) {
            memcpy(win, ids + w * window, sizeof(int32_t) * (size_t)window);
            if (use_bos) win[0] = bos_id;
            if (mdl_session_truncate(s, 0)) {
                fprintf(stderr, "%s: %s\n", PROG, mdl_error());
                mdl_session_free(s);
                goto done;
            }
            /* positions 0..window-2 have a target; the last one's logits are not needed */
            for (int p0 = 0; p0 < window - 1; p0 += chunk) {
                const int m = window - 1 - p0 < chunk ? window - 1 - p0 : chunk;
                if (mdl_forward(s, win + p0, m, logits, 1)) {
                    fprintf(stderr, "%s: %s\n", PROG, mdl_error());
                    mdl_session_free(s);
                    goto done;
                }
                for (int i = 0; i < m; i++) {
                    const int pos = p0 + i;
                    if (pos < score_from) continue;
                    int top;
                    const float *l = logits + (size_t)i * V;
                    const double nll = row_lse(l, V, &top) - (double)l[win[pos + 1]];
                    r->nll_sum += nll;
                    r->nll_sq += nll * nll;
                    r->scored++;
                    const int64_t k = w * per_win + (pos - score_from);
                    if (j == 0 && have_dense) dense_top[k] = top;
                    if (have_dense) r->same_top1 += dense_top[k] == top;
                }
            }
            r->windows++;
            if (!quiet)
                fprintf(stderr, "  %-6s window %lld/%lld: PPL so far %.4f\n", r->mode, (long long)(w + 1), (long long)nwin,
                        exp(r->nll_sum / (double)r->scored));
        }
        r->seconds = mdl_now() - t0;
        mdl_session_free(s);
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
        printf("| attention | windows | scored tokens | mean NLL | PPL | PPL (1 s.e.) | top-1 = dense | seconds | tok/s |\n");
        printf("| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |\n");
        for (int j = 0; j < nm; j++) {
            const eval_row *r = &rows[j];
            char agree[32] = "-";
            if (have_dense) snprintf(agree, sizeof agree, "%.2f%%", 100.0 * (double)r->same_top1 / (double)r->scored);
            printf("| %s | %lld | %lld | %.5f | %.4f | %.4f-%.4f | %s | %.2f | %.1f |\n", r->mode, (long long)r->windows,
                   (long long)r->scored, mean[j], exp(mean[j]), exp(mean[j] - se[j]), exp(mean[j] + se[j]), agree,
                   r->seconds, (double)(r->windows * window) / r->seconds);
        }
        if (have_dense)
            for (int j = 1; j < nm; j++)
                printf("\n%s/dense: PPL %.4fx, mean NLL %+.5f", rows[j].mode, exp(mean[j] - mean[0]), mean[j] - mean[0]);
        printf("\n");
    } else if (!strcmp(format, "csv")) {
        printf("attention,windows,scored_tokens,mean_nll,ppl,nll_se,top1_same_as_dense,seconds\n");
        for (int j = 0; j < nm; j++) {
            char agree[32] = "";
            if (have_dense) snprintf(agree, sizeof agree, "%.6f", (double)rows[j].same_top1 / (double)rows[j].scored);
            printf("%s,%lld,%lld,%.6f,%.6f,%.6f,%s,%.4f\n", rows[j].mode, (long long)rows[j].windows,
                   (long long)rows[j].scored, mean[j], exp(mean[j]), se[j], agree, rows[j].seconds);
        }
    } else {
        printf("[\n");
        for (int j = 0; j < nm; j++) {
            printf("  {\"attention\": \"%s\", \"windows\": %lld, \"scored_tokens\": %lld, \"mean_nll\": %.6f, "
                   "\"ppl\": %.6f, \"nll_se\": %.6f, ",
                   rows[j].mode, (long long)rows[j].windows, (long long)rows[j].scored, mean[j], exp(mean[j]), se[j]);
            if (have_dense)
                printf("\"top1_same_as_dense\": %.6f, ", (double)rows[j].same_top1 / (double)rows[j].scored);
            else
                printf("\"top1_same_as_dense\": null, ");
            printf("\"seconds\": %.4f}%s\n", rows[j].seconds, j + 1 < nm ? "," : "");
        }
        printf("]\n");
    }
    ret = 0;
done:
    free(ids);
    free(dense_top);
    free(win);
    free(logits);
    free(text);
    run_unload(&R);
    return ret;
}
