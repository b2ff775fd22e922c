/* test_fmtout.c: the tools' machine-readable output (tools/fmtout.c): JSON numbers with null for a NaN or an
 * infinity, CSV's empty field for them, JSON strings escaped, CSV fields quoted when they need it; and the records
 * both formats print from one list of columns (csv's header is json's keys, in order). */
#define _POSIX_C_SOURCE 200809L /* open_memstream */
#include "fmtout.h"
#include "harness.h"

#include <stdlib.h>

static void same(const char *got, const char *want, const char *what) {
    CHECK(!strcmp(got, want), "%s: got '%s', want '%s'", what, got, want);
}

/* nrec records of cols, then the end of the list (after a failure when failed) */
typedef struct recs {
    int json, nrec, failed;
    const fmt_col *cols;
    size_t ncols;
} recs;

static void print_recs(FILE *f, const recs *r) {
    int first = 1;
    for (int i = 0; i < r->nrec; i++) fmt_record(f, r->json, r->cols, r->ncols, &first);
    fmt_records_end(f, r->json, first, r->failed);
}

/* a memory stream to print into, then what was printed compared with want */
typedef struct capture {
    char *buf;
    size_t len;
    FILE *f;
} capture;

static int capture_open(capture *c, const char *what) {
    c->buf = NULL, c->len = 0;
    c->f = open_memstream(&c->buf, &c->len);
    CHECK(c->f != NULL, "%s: open_memstream", what);
    return c->f != NULL;
}

static void capture_same(capture *c, const char *want, const char *what) {
    fclose(c->f);
    same(c->buf ? c->buf : "", want, what);
    free(c->buf);
}

/* what print_recs wrote, compared with want */
static void same_out(const recs *r, const char *want, const char *what) {
    capture c;
    if (!capture_open(&c, what)) return;
    print_recs(c.f, r);
    capture_same(&c, want, what);
}

/* what put wrote of s, compared with want */
static void same_str(void (*put)(FILE *, const char *), const char *s, const char *want, const char *what) {
    capture c;
    if (!capture_open(&c, what)) return;
    put(c.f, s);
    capture_same(&c, want, what);
}

int main(void) {
    char b[FMT_NUM_MAX];
    same(fmt_json_num(b, sizeof b, 3, 1.23456), "1.235", "json 1.23456 at 3 decimals");
    same(fmt_csv_num(b, sizeof b, 3, 1.23456), "1.235", "csv 1.23456 at 3 decimals");
    same(fmt_json_num(b, sizeof b, 2, NAN), "null", "json NaN");
    same(fmt_json_num(b, sizeof b, 2, -INFINITY), "null", "json -inf");
    same(fmt_csv_num(b, sizeof b, 2, INFINITY), "", "csv inf");
    char want[FMT_NUM_MAX];
    snprintf(want, sizeof want, "%.16f", -1.7e308); /* the longest: FMT_NUM_MAX holds it */
    same(fmt_csv_num(b, sizeof b, 16, -1.7e308), want, "csv -1.7e308 at 16 decimals: every digit fits");
    same(fmt_csv_num(b, sizeof b, 40, -1.7e308), want, "csv decimals past 16 print 16 (the buffer's bound)");
    same_str(fmt_put_json_str, "a\"b\\c\nd\x01\x7f\t\r", "\"a\\\"b\\\\c\\nd\\u0001\\u007f\\t\\r\"", "json string escaped");
    same_str(fmt_put_json_str, NULL, "\"\"", "json NULL string");
    same_str(fmt_put_json_str, "caf\xc3\xa9", "\"caf\xc3\xa9\"", "json: UTF-8 bytes as they are");
    same_str(fmt_put_csv_str, "plain", "plain", "csv plain field as it is");
    same_str(fmt_put_csv_str, "Odd \"Q\", v2", "\"Odd \"\"Q\"\", v2\"", "csv field quoted, quotes doubled");
    same_str(fmt_put_csv_str, "two\nlines", "\"two\nlines\"", "csv field with a newline quoted");
    same_str(fmt_put_csv_str, NULL, "", "csv NULL field empty");
    /* a long string is never cut (the cpu's name went through fixed buffers before) */
    char longs[3001];
    memset(longs, '"', 3000);
    longs[3000] = 0;
    char *wantj = malloc(6003);
    CHECK(wantj != NULL, "malloc");
    if (wantj) {
        wantj[0] = '"';
        for (int i = 0; i < 3000; i++) wantj[1 + 2 * i] = '\\', wantj[2 + 2 * i] = '"';
        wantj[6001] = '"';
        wantj[6002] = 0;
        same_str(fmt_put_json_str, longs, wantj, "json: 3000 quotes escaped, none cut");
        free(wantj);
    }

    const fmt_col cols[] = {FMT_STR("mode", "sparse"), FMT_INT("seqlen", 4096), FMT_NUM("ms", 3, 1.5),
                            FMT_NUM("vs_dense", 4, NAN), FMT_STR("cpu", "A \"B\", C"), FMT_INT("big", -(1LL << 40))};
    const size_t n = sizeof cols / sizeof *cols;
    recs r = {1, 2, 0, cols, n};
    same_out(&r,
             "[\n  {\"mode\": \"sparse\", \"seqlen\": 4096, \"ms\": 1.500, \"vs_dense\": null, \"cpu\": \"A \\\"B\\\", C\", "
             "\"big\": -1099511627776},\n  {\"mode\": \"sparse\", \"seqlen\": 4096, \"ms\": 1.500, \"vs_dense\": null, "
             "\"cpu\": \"A \\\"B\\\", C\", \"big\": -1099511627776}\n]\n",
             "json: two records, the array closed");
    r.json = 0;
    same_out(&r,
             "mode,seqlen,ms,vs_dense,cpu,big\nsparse,4096,1.500,,\"A \"\"B\"\", C\",-1099511627776\n"
             "sparse,4096,1.500,,\"A \"\"B\"\", C\",-1099511627776\n",
             "csv: the header once (json's keys in order), then the records");
    r.json = 1, r.nrec = 0;
    same_out(&r, "[]\n", "json without records: an empty array");
    r.failed = 1;
    same_out(&r, "", "json failing before any record: nothing");
    r.nrec = 1;
    same_out(&r,
             "[\n  {\"mode\": \"sparse\", \"seqlen\": 4096, \"ms\": 1.500, \"vs_dense\": null, \"cpu\": \"A \\\"B\\\", C\", "
             "\"big\": -1099511627776}\n]\n",
             "json failing after a record: the array closed");
    r.json = 0, r.nrec = 0, r.failed = 0;
    same_out(&r, "", "csv without records: nothing");
    return finish("test_fmtout");
}
