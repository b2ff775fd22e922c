/* test_opts.c: the tools' list options (tools/opts.c): the rules every comma list shares (opts_list: empty lists
 * and items, a trailing comma, blanks, the count limit, messages naming the option and the item) and the integer /
 * number items on them (opts_int_list, opts_num_list); opts_one_of; the --tokens lists of run and eval
 * (opts_token_ids); opts_parse's OPT_DOUBLE values and its errors (each with the usage). */
#include <stdint.h>
#include <unistd.h>

#include "harness.h"
#include "opts.h"

/* what the last call printed on stderr */
static char err_buf[1024];
static FILE *err_file;
static int err_fd = -1;

static void capture(void) {
    fflush(stderr);
    if (err_fd < 0) err_fd = dup(2);
    err_file = tmpfile();
    dup2(fileno(err_file), 2);
}
static const char *captured(void) {
    fflush(stderr);
    dup2(err_fd, 2);
    size_t n = 0;
    if (err_file) {
        rewind(err_file);
        n = fread(err_buf, 1, sizeof err_buf - 1, err_file);
        fclose(err_file);
        err_file = NULL;
    }
    err_buf[n] = 0;
    return err_buf;
}

/* s as an integer list: the count, and the message (empty when none) */
static int ints(const char *s, int64_t *out, int cap, const char **msg) {
    capture();
    const int n = opts_int_list("prog", "--lengths", s, out, cap);
    *msg = captured();
    return n;
}

static void bad_int(const char *s, const char *why) {
    int64_t v[4];
    const char *msg;
    const int n = ints(s, v, 4, &msg);
    CHECK(n == -1 && !strncmp(msg, "prog: --lengths '", 17) && strstr(msg, why),
          "'%s': count %d, message '%s', want -1 and '%s'", s, n, msg, why);
}

static void bad_num(const char *s, const char *why) {
    double v[4];
    capture();
    const int n = opts_num_list("prog", "--depths", s, 0, 1, v, 4);
    const char *msg = captured();
    CHECK(n == -1 && !strncmp(msg, "prog: --depths '", 16) && strstr(msg, why),
          "'%s': count %d, message '%s', want -1 and '%s'", s, n, msg, why);
}

/* s as a --tokens list: the count (ids into v[8]) and the message */
static int64_t toks(const char *s, int32_t *v, const char **msg) {
    capture();
    const int64_t n = opts_token_ids("prog", "--tokens", s, v);
    *msg = captured();
    if (n >= 0) { /* the counting pass agrees */
        capture();
        const int64_t m = opts_token_ids("prog", "--tokens", s, NULL);
        captured();
        CHECK(m == n, "'%s': counted %lld, parsed %lld", s, (long long)m, (long long)n);
    }
    return n;
}

static void bad_toks(const char *s, const char *why) {
    int32_t v[8];
    const char *msg;
    const int64_t n = toks(s, v, &msg);
    CHECK(n == -1 && !strncmp(msg, "prog: --tokens: bad token id", 28) && strstr(msg, why),
          "'%s': count %lld, message '%s', want -1 and '%s'", s, (long long)n, msg, why);
}

int main(void) {
    int64_t v[4];
    const char *msg;
    int n = ints("4096,32K,1k,7", v, 4, &msg);
    CHECK(n == 4 && v[0] == 4096 && v[1] == 32768 && v[2] == 1024 && v[3] == 7 && !*msg, "4096,32K,1k,7: %d '%s'", n,
          msg);
    n = ints("4096, 8192,\t5", v, 4, &msg); /* blanks before an item are skipped (as strtoll did) */
    CHECK(n == 3 && v[0] == 4096 && v[1] == 8192 && v[2] == 5, "blanks before items: %d '%s'", n, msg);
    n = ints("+12", v, 4, &msg);
    CHECK(n == 1 && v[0] == 12, "+12: %d", n);
    n = ints("9007199254740991k", v, 4, &msg); /* (2^53 - 1) * 1024 < 2^63 */
    CHECK(n == 1 && v[0] == 9007199254740991LL * 1024, "9007199254740991k: %d", n);
    /* the list rules */
    bad_int("", "an empty list");
    bad_int("700,", "item 2 is empty (a list does not end in a comma)");
    bad_int("700, ", "item 2 is empty (a list does not end in a comma)");
    bad_int(",700", "item 1 is empty");
    bad_int("700,,800", "item 2 is empty");
    bad_int(" ", "item 1 is empty");
    bad_int("1,2,3,4,5", "more than 4 items");
    /* the items */
    bad_int("4096 ", "'4096 ' is not a positive integer"); /* blanks after an item are the item's */
    bad_int("4096 ,1", "'4096 ' is not a positive integer");
    bad_int("abc", "'abc' is not a positive integer");
    bad_int("1,0", "'0' is not a positive integer");
    bad_int("-5", "'-5' is not a positive integer");
    bad_int("5x", "'5x' is not a positive integer");
    bad_int("5kk", "'5kk' is not a positive integer");
    bad_int("0x10", "'0x10' is not a positive integer");
    bad_int("9007199254740993k", "'9007199254740993k' is too large"); /* overflowed the multiplication */
    bad_int("99999999999999999999", "is too large");
    bad_int("256,", "--lengths '256,'"); /* the message shows the list as given */

    double d[4];
    capture();
    n = opts_num_list("prog", "--depths", "0.1, 0.5,1,0,1e-1", 0, 1, d, 4);
    msg = captured();
    CHECK(n == -1 && strstr(msg, "more than 4 items"), "5 depths, cap 4: %d '%s'", n, msg);
    capture();
    n = opts_num_list("prog", "--depths", "0.1, 0.5,1,0", 0, 1, d, 4);
    msg = captured();
    CHECK(n == 4 && d[0] == 0.1 && d[1] == 0.5 && d[2] == 1 && d[3] == 0 && !*msg, "0.1, 0.5,1,0: %d '%s'", n, msg);
    bad_num("0.5,", "item 2 is empty (a list does not end in a comma)");
    bad_num("", "an empty list");
    bad_num("1.5", "'1.5' is not a number in [0, 1]");
    bad_num("-0.1", "'-0.1' is not a number in [0, 1]");
    bad_num("nan", "'nan' is not a number in [0, 1]");
    bad_num("0.5x", "'0.5x' is not a number in [0, 1]");
    bad_num("0.5 ", "'0.5 ' is not a number in [0, 1]");

    /* opts_token_ids: ids separated by commas and / or blanks; empty items refused; 0..INT32_MAX */
    int32_t t[8];
    int64_t nt = toks("1,2 3", t, &msg);
    CHECK(nt == 3 && t[0] == 1 && t[1] == 2 && t[2] == 3 && !*msg, "1,2 3: %lld '%s'", (long long)nt, msg);
    nt = toks(" 0 ,\t2147483647\n5 ", t, &msg);
    CHECK(nt == 3 && t[0] == 0 && t[1] == INT32_MAX && t[2] == 5 && !*msg, "blanks around: %lld '%s'", (long long)nt,
          msg);
    nt = toks("  ", t, &msg);
    CHECK(nt == 0 && !*msg, "a blank list: %lld '%s' (the caller says what it needs)", (long long)nt, msg);
    bad_toks("1,,2", "item 2 is empty (two commas");
    bad_toks(",1", "item 1 is empty");
    bad_toks("1,2,", "item 3 is empty (a list does not end in a comma)");
    bad_toks("1, ,2", "item 2 is empty");
    bad_toks("1,x", "bad token id 'x' (item 2");
    bad_toks("-1", "'-1'");
    bad_toks("+1", "'+1'");
    bad_toks("1.5", "'1.5'");
    bad_toks("2147483648", "'2147483648'");
    bad_toks("99999999999999999999999", "'99999999999999999999999'");
    bad_toks("7 4294967301", "'4294967301' (item 2"); /* not cast: it would be token 5 */

    /* opts_one_of: one of three values, else a message naming the flag and the three */
    capture();
    n = opts_one_of("prog", "--format", "csv", "md", "csv", "json");
    msg = captured();
    CHECK(n == 1 && !*msg, "csv among md, csv, json: %d '%s'", n, msg);
    capture();
    n = opts_one_of("prog", "--format", "xml", "md", "csv", "json");
    msg = captured();
    CHECK(n == 0 && !strcmp(msg, "prog: --format must be md, csv or json\n"), "xml: %d '%s'", n, msg);

    /* an OPT_DOUBLE option (bench's --peak, --seconds): strtod's value, unrounded to float, and any finite double;
     * no number, overflow, underflow and inf refused with a message naming the option */
    static const struct {
        const char *arg;
        int rc;
        double want;
        const char *why;
    } dbl[] = {{"0.05", 0, 0.05, ""},          {"1e300", 0, 1e300, ""}, {"-2.5", 0, -2.5, ""},
               {"abc", 2, 0, "--x expects a number, got 'abc'"}, {"1e999", 2, 0, "--x 1e999 is outside"},
               {"1e-400", 2, 0, "--x 1e-400 is outside"},        {"inf", 2, 0, "--x inf is outside"},
               {"2x", 2, 0, "--x expects a number"}};
    for (size_t i = 0; i < sizeof dbl / sizeof *dbl; i++) {
        double x = 7;
        const opt_def defs[] = {{"--x", NULL, OPT_DOUBLE, &x, "X", "a double"}, {NULL, NULL, OPT_FLAG, NULL, NULL, NULL}};
        char *argv[] = {"--x", (char *)dbl[i].arg};
        capture();
        const int rc = opts_parse("prog", "", defs, 2, argv, 0, NULL, 0, NULL);
        msg = captured();
        CHECK(rc == dbl[i].rc && (rc ? x == 7 && strstr(msg, dbl[i].why) != NULL : x == dbl[i].want && !*msg),
              "--x %s: rc %d, x %.17g, message '%s'", dbl[i].arg, rc, x, msg);
    }
    /* every opts_parse error (exit status 2) prints a message naming the option or argument, then the usage, on
     * stderr: "needs a value" and "takes no value" printed no usage while an unknown option did; a bad value
     * neither, though opts.h promised it */
    static const struct {
        int argc;
        const char *argv[2], *why;
    } bad[] = {{1, {"--n"}, "prog: --n needs a value (N)\n"},
               {1, {"--f=1"}, "prog: --f takes no value\n"},
               {2, {"--n", "4x"}, "prog: --n expects an integer"},
               {1, {"--n=-2147483648"}, "prog: --n expects an integer"}, /* INT_MIN: the "not given" mark */
               {1, {"--bogus"}, "prog: unknown option '--bogus'\n"},
               {1, {"stray"}, "prog: unexpected argument 'stray'\n"}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int nv = 5, fv = 0;
        const opt_def defs[] = {{"--n", NULL, OPT_INT, &nv, "N", "a count"},
                                {"--f", NULL, OPT_FLAG, &fv, NULL, "a flag"},
                                {NULL, NULL, OPT_FLAG, NULL, NULL, NULL}};
        char *argv[] = {(char *)bad[i].argv[0], (char *)bad[i].argv[1]};
        capture();
        const int rc = opts_parse("prog", "a summary", defs, bad[i].argc, argv, 0, NULL, 0, NULL);
        msg = captured();
        const char *usage = strstr(msg, "usage: prog [options]\na summary\n");
        CHECK(rc == 2 && !strncmp(msg, bad[i].why, strlen(bad[i].why)) && usage && strstr(usage, "--n N") &&
                  strstr(usage, "--f ") && nv == 5 && fv == 0,
              "%s%s%s: rc %d, n %d, f %d, stderr '%s', want 2, its message '%s' then the usage", bad[i].argv[0],
              bad[i].argc > 1 ? " " : "", bad[i].argc > 1 ? bad[i].argv[1] : "", rc, nv, fv, msg, bad[i].why);
    }
    return finish("test_opts");
}
