/*
 * opts.h: one option table drives both parsing and --help (DESIGN practice 15).
 * Unknown flags and bad values print a message and usage; the caller exits 2. So do the commands' own checks of
 * the parsed options (opts_usage_error).
 */
#ifndef INFLLM_OPTS_H
#define INFLLM_OPTS_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { OPT_FLAG, OPT_INT, OPT_FLOAT, OPT_DOUBLE, OPT_STR } opt_kind;

typedef struct opt_def {
    const char *name;     /* "--q" */
    const char *alias;    /* "-m" or NULL */
    opt_kind kind;
    void *dst;            /* int* (FLAG, INT), float* (FLOAT), double* (DOUBLE), const char** (STR) */
    const char *metavar;  /* "FILE" */
    const char *help;
} opt_def;

/* An OPT_INT option's "not given" mark: opts_parse refuses INT_MIN as a value, so no typed value reads as unset. */
#define OPTS_INT_UNSET INT_MIN

/* Parses argv[first..argc) against defs (terminated by a {NULL} entry). Positional
 * arguments are rejected unless positional != NULL, which then receives them in order
 * (up to max_pos). Returns 0, 1 when --help/-h was given (usage printed to stdout), or 2 on
 * error: every one (an unknown option, a stray argument, a missing value, a value given to a flag, a value
 * that does not parse) prints a message naming the option or argument, then the usage, on stderr. */
int opts_parse(const char *prog, const char *summary, const opt_def *defs, int argc, char **argv, int first,
               const char **positional, int max_pos, int *n_pos);
/* Lists defs with their help; an entry whose help is NULL is parsed but not listed (a shared option a command
 * refuses with its own message). */
void opts_usage(const char *prog, const char *summary, const opt_def *defs, int to_stderr);
/* A usage error found after opts_parse (a value of the right syntax that the command's own checks refuse, options
 * that conflict, a required one missing): once the caller has printed its message ("prog: why"), the usage on
 * stderr, as opts_parse does after its own errors. Returns 2, the exit status of every usage error. */
int opts_usage_error(const char *prog, const char *summary, const opt_def *defs);
/* Sets the help of defs' option `name` (NULL: not listed by opts_usage); a name not in defs is a no-op. */
void opts_set_help(opt_def *defs, const char *name, const char *help);
/* A list option's item parser: reads text[0..len) (never empty, no comma in it, leading blanks skipped) as item i
 * of the list into the storage ctx points at; NULL when it is valid, else why not ("is not a positive integer"). */
typedef const char *(*opts_item_fn)(void *ctx, int i, const char *text, size_t len);
/* The one place of the rules of a comma-separated list s given to option flag ("4096,16384"): items are split at
 * commas; blanks before an item are skipped ("4096, 8192"), blanks after it are the item's (and refused by a number);
 * an empty list, an empty item (",,", a leading or a trailing comma: "700,") and more than cap items are refused;
 * each item goes to item(ctx, i, ...). Returns the count (>= 1), or -1 after printing "prog: flag 'S': why" on
 * stderr. */
int opts_list(const char *prog, const char *flag, const char *s, int cap, opts_item_fn item, void *ctx);
/* opts_list of positive integers, a k / K suffix multiplying by 1024 ("4096,32K"), into out[cap] */
int opts_int_list(const char *prog, const char *flag, const char *s, int64_t *out, int cap);
/* opts_list of numbers in [lo, hi] (strtod's forms) into out[cap] */
int opts_num_list(const char *prog, const char *flag, const char *s, double lo, double hi, double *out, int cap);
/* A --tokens list ("1,2 3"): token ids, integers in [0, INT32_MAX], separated by a comma or blanks (blanks around a
 * comma are fine); an empty item (",,", a leading or a trailing comma) is refused. ids: NULL to count only. Returns
 * the count (0 for a blank list: the caller says what it needs), or -1 after "prog: flag: bad token id ..." on
 * stderr. */
int64_t opts_token_ids(const char *prog, const char *flag, const char *s, int32_t *ids);
/* 1 when value is a, b or c, else a message "prog: flag must be a, b or c" and 0 */
int opts_one_of(const char *prog, const char *flag, const char *value, const char *a, const char *b, const char *c);
/* Parses a comma-separated list of names from choices[0..n) ("dense,sparse"): picked[c] = 1 for each named; -1
 * on an empty item or a name not among them. */
int opts_choice_list(const char *s, const char *const *choices, int n, int *picked);
/* 1 when both paths exist and name the same file (an output option pointing at an input), else 0. */
int opts_same_file(const char *a, const char *b);
/* 1 when path names an existing file directly inside the folder dir, else 0. */
int opts_file_in_dir(const char *path, const char *dir);
/* 1 when path's parent is the folder dir, whether or not path exists (an output about to be written), else 0; a dir
 * that does not exist yet (one the command will create) holds path when path's parent names it: the same last
 * component in the same existing folder. */
int opts_path_in_dir(const char *path, const char *dir);
/* Checks that an output file can be created at path before any work is done: it is not a folder, and its parent
 * folder exists and is writable. 0, or -1 after printing "prog: flag PATH: why". */
int opts_output_file_check(const char *prog, const char *flag, const char *path);

#endif
