/* fmtout.h: the commands' machine-readable output (--format json / csv). A record is one table of columns (key, kind,
 * value) that both formats print, so that csv's header and json's keys cannot drift apart (they did: bench attn's
 * csv lacked six of json's keys and named one otherwise, until session 49; the columns are one list since session 50).
 * JSON must parse with a strict parser (Python's json.loads): a NaN or an infinity is `null` there, never printf's
 * `nan` / `inf`; in CSV it is an empty field. Strings are escaped (JSON) or quoted (CSV) whatever they hold. */
#ifndef INFLLM_FMTOUT_H
#define INFLLM_FMTOUT_H

#include <stddef.h>
#include <stdio.h>

/* v as "%.*f" with decimals into buf[n], or "null" when v is NaN or infinite; returns buf. A finite double has
 * at most 309 integer digits: FMT_NUM_MAX bytes hold any of them at up to 16 decimals. */
#define FMT_NUM_MAX 340
const char *fmt_json_num(char *buf, size_t n, int decimals, double v);
/* the same for CSV: an empty field when v is NaN or infinite */
const char *fmt_csv_num(char *buf, size_t n, int decimals, double v);

/* s to f as a JSON string literal, quotes included (", \ and control bytes escaped; other bytes as they are); NULL
 * as "" */
void fmt_put_json_str(FILE *f, const char *s);
/* s to f as one CSV field (RFC 4180): as it is, or quoted with inner quotes doubled when it holds a comma, a quote,
 * a CR or an LF; NULL as an empty field */
void fmt_put_csv_str(FILE *f, const char *s);

/* One column of a record: its key (json's key, csv's header) and its value, by kind. */
typedef enum fmt_kind { FMT_KIND_NUM, FMT_KIND_INT, FMT_KIND_STR } fmt_kind;
typedef struct fmt_col {
    const char *key;
    fmt_kind kind;
    int decimals;    /* FMT_KIND_NUM: printf's precision (at most 16) */
    double num;      /* FMT_KIND_NUM: NaN / inf (a value that does not apply) print as null / an empty field */
    long long i;     /* FMT_KIND_INT */
    const char *str; /* FMT_KIND_STR: escaped / quoted as the format needs */
} fmt_col;
#define FMT_NUM(key, decimals, v) ((fmt_col){(key), FMT_KIND_NUM, (decimals), (double)(v), 0, NULL})
#define FMT_INT(key, v) ((fmt_col){(key), FMT_KIND_INT, 0, 0.0, (long long)(v), NULL})
#define FMT_STR(key, v) ((fmt_col){(key), FMT_KIND_STR, 0, 0.0, 0, (v)})

/* One record of cols[0..n) to f, flushed. json: "[\n  {...}" when *first, else ",\n  {...}" (the array stays open
 * for the next record: fmt_records_end closes it); csv: the keys as a header line when *first, then the values'
 * line. Clears *first. */
void fmt_record(FILE *f, int json, const fmt_col *cols, size_t n, int *first);
/* The end of a list of records: json closes the array ("\n]\n"), or prints "[]" when no record was printed and the
 * command did not fail (after a failure with no record nothing is printed, as for every other error; after some
 * records the array is closed, so that the output stays one JSON document beside the message); csv prints nothing. */
void fmt_records_end(FILE *f, int json, int first, int failed);

#endif
