/* fmtout.c: see fmtout.h */
#include "fmtout.h"

#include <math.h>
#include <string.h>

static const char *num(char *buf, size_t n, int decimals, double v, const char *nonfinite) {
    if (!isfinite(v)) snprintf(buf, n, "%s", nonfinite);
    else snprintf(buf, n, "%.*f", decimals < 0 ? 0 : decimals > 16 ? 16 : decimals, v);
    return buf;
}

const char *fmt_json_num(char *buf, size_t n, int decimals, double v) { return num(buf, n, decimals, v, "null"); }

const char *fmt_csv_num(char *buf, size_t n, int decimals, double v) { return num(buf, n, decimals, v, ""); }

void fmt_put_json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\') fputc('\\', f), fputc(*p, f);
        else if (*p == '\n') fputs("\\n", f);
        else if (*p == '\r') fputs("\\r", f);
        else if (*p == '\t') fputs("\\t", f);
        else if (*p < 0x20 || *p == 0x7f) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

void fmt_put_csv_str(FILE *f, const char *s) {
    if (!s) s = "";
    if (!strpbrk(s, ",\"\r\n")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (const char *p = s; *p; p++) {
        if (*p == '"') fputc('"', f);
        fputc(*p, f);
    }
    fputc('"', f);
}

static void put_value(FILE *f, int json, const fmt_col *c) {
    char b[FMT_NUM_MAX];
    switch (c->kind) {
    case FMT_KIND_NUM:
        fputs((json ? fmt_json_num : fmt_csv_num)(b, sizeof b, c->decimals, c->num), f);
        break;
    case FMT_KIND_INT: fprintf(f, "%lld", c->i); break;
    case FMT_KIND_STR: json ? fmt_put_json_str(f, c->str) : fmt_put_csv_str(f, c->str); break;
    }
}

void fmt_record(FILE *f, int json, const fmt_col *cols, size_t n, int *first) {
    if (json) {
        fputs(*first ? "[\n  {" : ",\n  {", f);
        for (size_t i = 0; i < n; i++) {
            if (i) fputs(", ", f);
            fmt_put_json_str(f, cols[i].key);
            fputs(": ", f);
            put_value(f, 1, &cols[i]);
        }
        fputc('}', f);
    } else {
        if (*first) {
            for (size_t i = 0; i < n; i++) {
                if (i) fputc(',', f);
                fmt_put_csv_str(f, cols[i].key);
            }
            fputc('\n', f);
        }
        for (size_t i = 0; i < n; i++) {
            if (i) fputc(',', f);
            put_value(f, 0, &cols[i]);
        }
        fputc('\n', f);
    }
    fflush(f);
    *first = 0;
}

void fmt_records_end(FILE *f, int json, int first, int failed) {
    if (!json) return;
    if (!first) fputs("\n]\n", f);
    else if (!failed) fputs("[]\n", f);
    fflush(f);
}
