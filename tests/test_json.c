/* test_json.c: the strict JSON parser: values, escapes (surrogate pairs -> UTF-8), numbers,
 * lookups, limits, error offsets/reasons on malformed input, and linear time on a big input. */
#include <stdint.h>
#include <time.h>

#include "harness.h"
#include "json.h"

static json_doc *P(const char *s) { return json_parse(s, strlen(s), NULL, NULL); }

/* Expects a parse error at byte `off` whose message contains `why`. */
static void bad(const char *s, size_t off, const char *why) {
    json_error e;
    json_doc *d = json_parse(s, strlen(s), NULL, &e);
    CHECK(d == NULL, "accepted invalid JSON: %s", s);
    json_free(d);
    if (!d) CHECK(e.offset == off && strstr(e.msg, why), "%s: got offset %zu '%s', want %zu '%s'", s, e.offset, e.msg, off, why);
}

int main(void) {
    json_doc *d = P(" {\"a\": 1, \"b\": [true, false, null, -2.5e3, \"x\"], \"c\": {\"d\": \"e\"}, \"a\": 7} ");
    CHECK(d != NULL, "parse");
    const json_value *r = json_root(d);
    CHECK(json_is(r, JSON_OBJECT) && json_len(r) == 4, "root object with 4 members");
    CHECK(json_get_int(r, "a", 0) == 7, "duplicate key: last wins");
    const json_value *b = json_get(r, "b");
    bool bv = false;
    CHECK(json_len(b) == 5 && json_bool(json_index(b, 0), &bv) && bv, "true");
    CHECK(json_bool(json_index(b, 1), &bv) && !bv, "false");
    CHECK(json_is_null(json_index(b, 2)), "null");
    double x;
    CHECK(json_num(json_index(b, 3), &x) && x == -2500.0 && !json_int(json_index(b, 3), NULL), "-2.5e3");
    CHECK(!strcmp(json_str(json_index(b, 4), NULL), "x"), "string in array");
    CHECK(json_index(b, 5) == NULL && json_index(r, 0) == NULL, "index out of range / wrong type");
    CHECK(!strcmp(json_get_str(json_path(r, "c"), "d", ""), "e") && json_path(r, "c.d") && !json_path(r, "c.z"),
          "path");
    CHECK(json_get(NULL, "a") == NULL && json_get(b, "a") == NULL, "get on NULL / array");
    CHECK(json_get_num(r, "zz", 3.5) == 3.5 && json_get_bool(r, "a", true) && !strcmp(json_get_str(r, "a", "d"), "d"),
          "defaults");
    CHECK(!strcmp(json_type_name(JSON_OBJECT), "object"), "type name");
    json_free(d);

    /* escapes */
    d = P("\"a\\\"\\\\\\/\\b\\f\\n\\r\\t\\u0041\\u00e9\\u4f60\\ud83d\\ude00\\u0000z\"");
    CHECK(d != NULL, "escapes parse");
    size_t len = 0;
    const char *s = json_str(json_root(d), &len);
    const char want[] = "a\"\\/\b\f\n\r\tA\xC3\xA9\xE4\xBD\xA0\xF0\x9F\x98\x80\0z";
    CHECK(s && len == sizeof want - 1 && !memcmp(s, want, len), "escapes decode (len %zu)", len);
    json_free(d);
    d = P("\"h\xC3\xA9llo \xF0\x9F\x98\x80\"");
    CHECK(d && json_len(json_root(d)) == 11, "raw UTF-8 kept");
    json_free(d);

    /* numbers */
    d = P("[0, -0, 9223372036854775807, -9223372036854775808, 9223372036854775808, 1e400, 0.5, 1E+2, 123456789012]");
    CHECK(d != NULL, "numbers");
    int64_t i;
    const json_value *a = json_root(d);
    CHECK(json_int(json_index(a, 2), &i) && i == INT64_MAX, "int64 max");
    CHECK(json_int(json_index(a, 3), &i) && i == INT64_MIN, "int64 min");
    CHECK(!json_int(json_index(a, 4), &i) && json_num(json_index(a, 4), &x) && x == 9223372036854775808.0,
          "beyond int64 -> double only");
    CHECK(json_num(json_index(a, 7), &x) && x == 100.0, "1E+2");
    CHECK(json_int(json_index(a, 8), &i) && i == 123456789012LL, "big int exact");
    json_free(d);

    /* top-level scalars and whitespace */
    d = P(" 42 ");
    CHECK(d && json_get_int(NULL, "x", 1) == 1 && json_int(json_root(d), &i) && i == 42, "scalar root");
    json_free(d);
    d = P("{}");
    CHECK(d && json_len(json_root(d)) == 0, "empty object");
    json_free(d);
    d = P("[[]]");
    CHECK(d && json_len(json_index(json_root(d), 0)) == 0, "nested empty array");
    json_free(d);

    /* malformed: offset and reason */
    bad("", 0, "end of input");
    bad("   ", 3, "end of input");
    bad("{", 1, "unterminated object");
    bad("[1,]", 3, "unexpected character");
    bad("{\"a\":1,}", 7, "expected string key");
    bad("{\"a\" 1}", 5, "expected ':'");
    bad("[1 2]", 3, "expected ',' or ']'");
    bad("01", 1, "leading zero");
    bad("-", 1, "invalid number");
    bad("1.", 2, "digit expected after '.'");
    bad("1e", 2, "exponent");
    bad("NaN", 0, "unexpected character");
    bad("tru", 0, "invalid literal");
    bad("\"abc", 0, "unterminated string");
    bad("\"a\tb\"", 2, "control character");
    bad("\"\\x\"", 1, "invalid escape");
    bad("\"\\u12G4\"", 1, "bad \\u escape");
    bad("\"\\ud83d\"", 1, "unpaired high surrogate");
    bad("\"\\ude00\"", 1, "unpaired low surrogate");
    bad("\"\\ud83d\\u0041\"", 1, "unpaired high surrogate");
    bad("\"\xC3\"", 1, "invalid UTF-8");
    bad("\"\xC0\xAF\"", 1, "invalid UTF-8");           /* overlong */
    bad("\"\xED\xA0\x80\"", 1, "invalid UTF-8");       /* encoded surrogate */
    bad("\"\xF4\x90\x80\x80\"", 1, "invalid UTF-8");   /* > U+10FFFF */
    bad("{} x", 3, "trailing characters");
    bad("[1] [2]", 4, "trailing characters");
    bad("// c\n1", 0, "unexpected character");
    bad("{\"a\":1 /* */}", 7, "expected ',' or '}'");

    /* NUL inside the input is an error, not a terminator */
    json_error e;
    CHECK(json_parse("[1]\0", 4, NULL, &e) == NULL && e.offset == 3, "embedded NUL");

    /* limits */
    char deep[600];
    for (int k = 0; k < 300; k++) deep[k] = '[';
    for (int k = 0; k < 300; k++) deep[300 + k] = ']';
    CHECK(json_parse(deep, 600, NULL, &e) == NULL && strstr(e.msg, "deep"), "depth limit 256: %s", e.msg);
    json_limits lim = {0, 400, 0};
    d = json_parse(deep, 600, &lim, &e);
    CHECK(d != NULL, "depth 300 with max_depth 400");
    json_free(d);
    json_limits lim2 = {10, 0, 0};
    CHECK(json_parse("[1,2,3,4,5,6]", 13, &lim2, &e) == NULL && strstr(e.msg, "too large"), "max_input");
    json_limits lim3 = {0, 0, 3};
    CHECK(json_parse("[1,2,3,4]", 9, &lim3, &e) == NULL && strstr(e.msg, "too many"), "max_nodes");
    CHECK(json_parse_file("/nonexistent/x.json", NULL, &e) == NULL && strstr(e.msg, "cannot open"), "missing file");

    /* linear time: a vocab-like object of 400K keys (~8 MB) */
    size_t n = 400000, cap = n * 40 + 16, o = 0;
    char *big = malloc(cap);
    big[o++] = '{';
    for (size_t k = 0; k < n; k++) o += (size_t)sprintf(big + o, "%s\"tok\\u00e9%zu\":%zu", k ? "," : "", k, k);
    big[o++] = '}';
    clock_t t0 = clock();
    d = json_parse(big, o, NULL, &e);
    double sec = (double)(clock() - t0) / CLOCKS_PER_SEC;
    CHECK(d && json_len(json_root(d)) == n, "big object");
    if (d) {
        const json_member *m = &json_root(d)->u.members[n - 1];
        CHECK(m->value.i == (int64_t)(n - 1) && !strncmp(m->key, "tok\xC3\xA9", 5), "last member");
    }
    printf("parsed %.1f MB in %.3f s (%.0f MB/s)\n", o / 1e6, sec, o / 1e6 / (sec > 0 ? sec : 1e-9));
    CHECK(sec < 2.0, "8 MB parse took %.2f s", sec);
    json_free(d);
    free(big);

    /* every truncation of a valid document fails cleanly */
    const char *doc = "{\"k\":[1,-2.5e-3,\"\\ud83d\\ude00\",{\"z\":null}],\"t\":true}";
    int ok = 1;
    for (size_t k = 0; k < strlen(doc); k++) {
        json_doc *dd = json_parse(doc, k, NULL, &e);
        if (dd) ok = 0;
        if (!dd && e.offset > k) ok = 0;
        json_free(dd);
    }
    CHECK(ok, "all truncations rejected with an offset inside the input");
    return finish("test_json");
}
