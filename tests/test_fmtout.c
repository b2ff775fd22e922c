/* test_fmtout.c: the values of the tools' machine-readable output (tools/fmtout.c): JSON numbers with null for a NaN or
 * an infinity, CSV's empty field for them, JSON strings escaped, CSV fields quoted when they need it; and fmt_pick,
 * the pair of formatters each printer picks once by its format. */
#include "fmtout.h"
#include "harness.h"

static void same(const char *got, const char *want, const char *what) {
    CHECK(!strcmp(got, want), "%s: got '%s', want '%s'", what, got, want);
}

int main(void) {
    char b[FMT_NUM_MAX];
    const fmt_funcs js = fmt_pick(1), cs = fmt_pick(0);
    CHECK(js.num == fmt_json_num && js.str == fmt_json_str, "fmt_pick(1): the JSON formatters");
    CHECK(cs.num == fmt_csv_num && cs.str == fmt_csv_str, "fmt_pick(0): the CSV formatters");
    CHECK(fmt_pick(2).num == fmt_json_num, "fmt_pick: any nonzero is JSON");
    same(js.num(b, sizeof b, 3, 1.23456), "1.235", "json 1.23456 at 3 decimals");
    same(cs.num(b, sizeof b, 3, 1.23456), "1.235", "csv 1.23456 at 3 decimals");
    same(js.num(b, sizeof b, 2, NAN), "null", "json NaN");
    same(js.num(b, sizeof b, 2, -INFINITY), "null", "json -inf");
    same(cs.num(b, sizeof b, 2, INFINITY), "", "csv inf");
    char want[FMT_NUM_MAX];
    snprintf(want, sizeof want, "%.16f", -1.7e308); /* the longest: FMT_NUM_MAX holds it */
    same(cs.num(b, sizeof b, 16, -1.7e308), want, "csv -1.7e308 at 16 decimals: every digit fits");
    same(js.str(b, sizeof b, "a\"b\\c\nd\x01"), "\"a\\\"b\\\\c\\nd\\u0001\"", "json string escaped");
    same(cs.str(b, sizeof b, "plain"), "plain", "csv plain field as it is");
    same(cs.str(b, sizeof b, "Odd \"Q\", v2"), "\"Odd \"\"Q\"\", v2\"", "csv field quoted, quotes doubled");
    same(js.str(b, sizeof b, NULL), "\"\"", "json NULL string");
    return finish("test_fmtout");
}
