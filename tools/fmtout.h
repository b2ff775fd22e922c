/* fmtout.h: values in the commands' machine-readable output (--format json / csv). JSON must parse with a strict
 * parser (Python's json.loads): a NaN or an infinity is `null` there, never printf's `nan` / `inf`; in CSV it is an
 * empty field. Strings are escaped (JSON) or quoted (CSV) whatever they hold. */
#ifndef INFLLM_FMTOUT_H
#define INFLLM_FMTOUT_H

#include <stddef.h>

/* v as "%.*f" with decimals into buf[n], or "null" when v is NaN or infinite; returns buf. A finite double has
 * at most 309 integer digits: FMT_NUM_MAX bytes hold any of them at up to 16 decimals. */
#define FMT_NUM_MAX 340
const char *fmt_json_num(char *buf, size_t n, int decimals, double v);
/* the same for CSV: an empty field when v is NaN or infinite */
const char *fmt_csv_num(char *buf, size_t n, int decimals, double v);
/* s as a JSON string literal, quotes included (", \ and control bytes escaped; other bytes as they are), into
 * buf[n] (cut between escapes when it does not fit, the closing quote kept); returns buf */
const char *fmt_json_str(char *buf, size_t n, const char *s);
/* s as one CSV field (RFC 4180): as it is, or quoted with inner quotes doubled when it holds a comma, a quote, a
 * CR or an LF; into buf[n] (cut as fmt_json_str); returns buf */
const char *fmt_csv_str(char *buf, size_t n, const char *s);

/* One format's pair of formatters, so that a printer picks them once: fmt_pick(1) gives JSON's (fmt_json_num,
 * fmt_json_str), fmt_pick(0) CSV's (fmt_csv_num, fmt_csv_str). */
typedef struct fmt_funcs {
    const char *(*num)(char *buf, size_t n, int decimals, double v);
    const char *(*str)(char *buf, size_t n, const char *s);
} fmt_funcs;
fmt_funcs fmt_pick(int json);

#endif
