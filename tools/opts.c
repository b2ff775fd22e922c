/* opts.c: see opts.h. */
#include "opts.h"
#include "portable.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void opts_usage(const char *prog, const char *summary, const opt_def *defs, int to_stderr) {
    FILE *f = to_stderr ? stderr : stdout;
    fprintf(f, "usage: %s [options]\n%s\n\noptions:\n", prog, summary);
    for (const opt_def *d = defs; d->name; d++) {
        if (!d->help) continue;
        char left[64];
        snprintf(left, sizeof left, "%s%s%s %s", d->alias ? d->alias : "", d->alias ? ", " : "", d->name,
                 d->kind == OPT_FLAG ? "" : (d->metavar ? d->metavar : "X"));
        fprintf(f, "  %-28s %s\n", left, d->help);
    }
    fprintf(f, "  %-28s %s\n", "-h, --help", "show this help");
}

int opts_usage_error(const char *prog, const char *summary, const opt_def *defs) {
    opts_usage(prog, summary, defs, 1);
    return 2;
}

void opts_set_help(opt_def *defs, const char *name, const char *help) {
    for (opt_def *d = defs; d->name; d++)
        if (!strcmp(d->name, name)) d->help = help;
}

static int parse_value(const opt_def *d, const char *v, const char *prog) {
    char *end;
    errno = 0;
    switch (d->kind) {
    case OPT_INT: {
        long long x = strtoll(v, &end, 10);
        /* INT_MIN is refused: it is the tools' "option not given" mark (OPTS_INT_UNSET), which must lie out of the
         * reach of anything typed (a mark of -9 made --topk -9 run silently with the default) */
        if (errno || *end || end == v || x <= INT_MIN || x > INT_MAX) {
            fprintf(stderr, "%s: %s expects an integer in %d..%d, got '%s'\n", prog, d->name, -INT_MAX, INT_MAX, v);
            return -1;
        }
        *(int *)d->dst = (int)x;
        return 0;
    }
    case OPT_FLOAT: {
        float x = strtof(v, &end);
        if (*end || end == v) {
            fprintf(stderr, "%s: %s expects a number, got '%s'\n", prog, d->name, v);
            return -1;
        }
        if (errno || !isfinite(x)) { /* 1e39 overflows to inf, 1e-50 underflows (to 0: for --scale, "the default") */
            fprintf(stderr, "%s: %s %s is outside float32's finite range (about 1.2e-38 to 3.4e38 in magnitude, or 0)\n",
                    prog, d->name, v);
            return -1;
        }
        *(float *)d->dst = x;
        return 0;
    }
    case OPT_DOUBLE: { /* a value float32 cannot hold (bench's --peak, --seconds take any finite double) */
        double x = strtod(v, &end);
        if (*end || end == v) {
            fprintf(stderr, "%s: %s expects a number, got '%s'\n", prog, d->name, v);
            return -1;
        }
        if (errno || !isfinite(x)) { /* 1e999 overflows to inf, 1e-400 underflows (ERANGE) */
            fprintf(stderr, "%s: %s %s is outside float64's finite range (about 2.2e-308 to 1.8e308 in magnitude, or 0)\n",
                    prog, d->name, v);
            return -1;
        }
        *(double *)d->dst = x;
        return 0;
    }
    case OPT_STR: *(const char **)d->dst = v; return 0;
    case OPT_FLAG: *(int *)d->dst = 1; return 0;
    }
    return -1;
}

int opts_parse(const char *prog, const char *summary, const opt_def *defs, int argc, char **argv, int first,
               const char **positional, int max_pos, int *n_pos) {
    if (n_pos) *n_pos = 0;
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            opts_usage(prog, summary, defs, 0);
            return 1;
        }
        if (a[0] != '-' || a[1] == 0) {
            if (positional && n_pos && *n_pos < max_pos) {
                positional[(*n_pos)++] = a;
                continue;
            }
            fprintf(stderr, "%s: unexpected argument '%s'\n", prog, a);
            opts_usage(prog, summary, defs, 1);
            return 2;
        }
        const char *eq = strchr(a, '=');
        size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
        const opt_def *d = defs;
        for (; d->name; d++)
            if ((strlen(d->name) == nlen && strncmp(d->name, a, nlen) == 0) ||
                (d->alias && strlen(d->alias) == nlen && strncmp(d->alias, a, nlen) == 0))
                break;
        if (!d->name) {
            fprintf(stderr, "%s: unknown option '%s'\n", prog, a);
            opts_usage(prog, summary, defs, 1);
            return 2;
        }
        if (d->kind == OPT_FLAG) {
            if (eq) {
                fprintf(stderr, "%s: %s takes no value\n", prog, d->name);
                opts_usage(prog, summary, defs, 1);
                return 2;
            }
            *(int *)d->dst = 1;
            continue;
        }
        const char *v = eq ? eq + 1 : NULL;
        if (!v) {
            if (i + 1 >= argc) {
                fprintf(stderr, "%s: %s needs a value (%s)\n", prog, d->name, d->metavar ? d->metavar : "X");
                opts_usage(prog, summary, defs, 1);
                return 2;
            }
            v = argv[++i];
        }
        if (parse_value(d, v, prog)) { /* its message names the option */
            opts_usage(prog, summary, defs, 1);
            return 2;
        }
    }
    return 0;
}

int opts_list(const char *prog, const char *flag, const char *s, int cap, opts_item_fn item, void *ctx) {
    if (!*s) {
        fprintf(stderr, "%s: %s '': an empty list\n", prog, flag);
        return -1;
    }
    int n = 0;
    for (const char *p = s;; p++) { /* p: the start of item n */
        while (isspace((unsigned char)*p)) p++;
        const size_t len = strcspn(p, ",");
        if (!len) {
            fprintf(stderr, "%s: %s '%s': item %d is empty%s\n", prog, flag, s, n + 1,
                    *p ? "" : " (a list does not end in a comma)");
            return -1;
        }
        if (n == cap) {
            fprintf(stderr, "%s: %s '%s': more than %d items\n", prog, flag, s, cap);
            return -1;
        }
        const char *why = item(ctx, n, p, len);
        if (why) {
            fprintf(stderr, "%s: %s '%s': '%.*s' %s\n", prog, flag, s, (int)len, p, why);
            return -1;
        }
        n++;
        p += len;
        if (!*p) return n;
    }
}

static const char *int_item(void *ctx, int i, const char *text, size_t len) {
    char *end;
    errno = 0;
    long long x = strtoll(text, &end, 10); /* stops at the comma after the item */
    if (end == text || x <= 0) return "is not a positive integer (a k suffix: times 1024)";
    if (errno == ERANGE || ((*end == 'k' || *end == 'K') && x > LLONG_MAX / 1024)) return "is too large";
    if (*end == 'k' || *end == 'K') { /* 32K, 64k */
        x *= 1024;
        end++;
    }
    if (end != text + len) return "is not a positive integer (a k suffix: times 1024)";
    ((int64_t *)ctx)[i] = x;
    return NULL;
}

int opts_int_list(const char *prog, const char *flag, const char *s, int64_t *out, int cap) {
    return opts_list(prog, flag, s, cap, int_item, out);
}

typedef struct num_list {
    double *out, lo, hi;
    char why[96];
} num_list;

static const char *num_item(void *ctx, int i, const char *text, size_t len) {
    num_list *l = ctx;
    char *end;
    const double v = strtod(text, &end);
    if (end == text || end != text + len || !(v >= l->lo && v <= l->hi)) {
        snprintf(l->why, sizeof l->why, "is not a number in [%g, %g]", l->lo, l->hi);
        return l->why;
    }
    l->out[i] = v;
    return NULL;
}

int opts_num_list(const char *prog, const char *flag, const char *s, double lo, double hi, double *out, int cap) {
    num_list l = {out, lo, hi, ""};
    return opts_list(prog, flag, s, cap, num_item, &l);
}

int64_t opts_token_ids(const char *prog, const char *flag, const char *s, int32_t *ids) {
    int64_t n = 0;
    int after_comma = 0; /* a comma since the last id: an id must come next */
    for (const char *p = s;;) {
        while (isspace((unsigned char)*p)) p++;
        if (!*p || *p == ',') {
            if (*p && !after_comma && n > 0) { /* the comma after id n */
                after_comma = 1;
                p++;
                continue;
            }
            if (!*p && !after_comma) return n;
            fprintf(stderr, "%s: %s: bad token id list: item %lld is empty (%s)\n", prog, flag, (long long)n + 1,
                    *p ? "two commas, or a comma first" : "a list does not end in a comma");
            return -1;
        }
        char *end = (char *)p;
        errno = 0;
        const long long v = isdigit((unsigned char)*p) ? strtoll(p, &end, 10) : 0;
        if (end == p || (*end && *end != ',' && !isspace((unsigned char)*end)) || errno == ERANGE || v > INT32_MAX) {
            const size_t len = strcspn(p, ", \t\n\r\v\f");
            fprintf(stderr, "%s: %s: bad token id '%.*s' (item %lld; token ids are integers from 0 to %d)\n", prog,
                    flag, (int)(len < 40 ? len : 40), p, (long long)n + 1, INT32_MAX);
            return -1;
        }
        if (ids) ids[n] = (int32_t)v;
        n++;
        after_comma = 0;
        p = end;
    }
}

int opts_one_of(const char *prog, const char *flag, const char *value, const char *a, const char *b, const char *c) {
    if (!strcmp(value, a) || !strcmp(value, b) || !strcmp(value, c)) return 1;
    fprintf(stderr, "%s: %s must be %s, %s or %s\n", prog, flag, a, b, c);
    return 0;
}

int opts_choice_list(const char *s, const char *const *choices, int n, int *picked) {
    for (int c = 0; c < n; c++) picked[c] = 0;
    for (const char *p = s;; p++) {
        const size_t len = strcspn(p, ",");
        int c = 0;
        while (c < n && !(strlen(choices[c]) == len && !strncmp(p, choices[c], len))) c++;
        if (c == n) return -1;
        picked[c] = 1;
        p += len;
        if (!*p) return 0;
    }
}

/* the folder a (non-empty) path's last component sits in: "." for a bare name, "/" for "/name" */
static void parent_folder(const char *path, char *parent, size_t len) {
    const char *slash = pf_last_sep(path);
    if (!slash) snprintf(parent, len, ".");
    else if (slash == path) snprintf(parent, len, "/");
    else snprintf(parent, len, "%.*s", (int)(slash - path), path);
}

/* 1 when the folders a and b are one: the same existing folder, or, where neither exists yet (a folder the
 * command is about to create, as infllm attn's --dump / --grad-dir), the same name in one folder */
static int same_folder(const char *a, const char *b, int depth) {
    struct stat sa, sb;
    const int ea = stat(a, &sa) == 0, eb = stat(b, &sb) == 0;
    if (ea || eb)
        return ea && eb && S_ISDIR(sa.st_mode) && S_ISDIR(sb.st_mode) && pf_same_entry(a, b);
    char ta[4096], tb[4096];
    snprintf(ta, sizeof ta, "%s", a);
    snprintf(tb, sizeof tb, "%s", b);
    for (size_t n = strlen(ta); n > 1 && pf_is_sep(ta[n - 1]); n--) ta[n - 1] = 0; /* "new/" is "new" (and "new\\") */
    for (size_t n = strlen(tb); n > 1 && pf_is_sep(tb[n - 1]); n--) tb[n - 1] = 0;
    const char *na = pf_last_sep(ta), *nb = pf_last_sep(tb);
    na = na ? na + 1 : ta;
    nb = nb ? nb + 1 : tb;
    if (depth > 64 || !*na || strcmp(na, nb) || !strcmp(na, ".") || !strcmp(na, "..")) return 0;
    char pa[4096], pb[4096];
    parent_folder(ta, pa, sizeof pa);
    parent_folder(tb, pb, sizeof pb);
    return same_folder(pa, pb, depth + 1);
}

int opts_path_in_dir(const char *path, const char *dir) {
    if (!path || !*path || !dir || !*dir) return 0;
    char parent[4096];
    parent_folder(path, parent, sizeof parent);
    return same_folder(parent, dir, 0);
}

int opts_file_in_dir(const char *path, const char *dir) {
    struct stat sf;
    return path && stat(path, &sf) == 0 && !S_ISDIR(sf.st_mode) && opts_path_in_dir(path, dir);
}

int opts_same_file(const char *a, const char *b) {
    return pf_same_entry(a, b);
}

int opts_output_file_check(const char *prog, const char *flag, const char *path) {
    struct stat sb;
    if (!path || !*path) {
        fprintf(stderr, "%s: %s needs a file name\n", prog, flag);
        return -1;
    }
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "%s: %s %s is a folder, not a file\n", prog, flag, path);
        return -1;
    }
    char parent[4096];
    parent_folder(path, parent, sizeof parent);
    if (stat(parent, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "%s: %s %s: the folder '%s' does not exist\n", prog, flag, path, parent);
        return -1;
    }
    if (access(parent, W_OK | X_OK) != 0) {
        fprintf(stderr, "%s: %s %s: cannot write in the folder '%s': %s\n", prog, flag, path, parent, strerror(errno));
        return -1;
    }
    return 0;
}
