/* fmtout.c: see fmtout.h */
#include "fmtout.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const char *num(char *buf, size_t n, int decimals, double v, const char *nonfinite) {
    if (!isfinite(v)) snprintf(buf, n, "%s", nonfinite);
    else snprintf(buf, n, "%.*f", decimals, v);
    return buf;
}

const char *fmt_json_num(char *buf, size_t n, int decimals, double v) { return num(buf, n, decimals, v, "null"); }

const char *fmt_csv_num(char *buf, size_t n, int decimals, double v) { return num(buf, n, decimals, v, ""); }

/* appends piece (k bytes) to buf at *o when it fits with room for `keep` more bytes and the NUL; 0 when not */
static int put(char *buf, size_t n, size_t *o, const char *piece, size_t k, size_t keep) {
    if (*o + k + keep + 1 > n) return 0;
    memcpy(buf + *o, piece, k);
    *o += k;
    return 1;
}

const char *fmt_json_str(char *buf, size_t n, const char *s) {
    size_t o = 0;
    if (n < 3) {
        if (n) buf[0] = 0;
        return buf;
    }
    buf[o++] = '"';
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        char e[8];
        size_t k;
        if (*p == '"' || *p == '\\') e[0] = '\\', e[1] = (char)*p, k = 2;
        else if (*p == '\n') memcpy(e, "\\n", 2), k = 2;
        else if (*p == '\r') memcpy(e, "\\r", 2), k = 2;
        else if (*p == '\t') memcpy(e, "\\t", 2), k = 2;
        else if (*p < 0x20 || *p == 0x7f) k = (size_t)snprintf(e, sizeof e, "\\u%04x", *p);
        else e[0] = (char)*p, k = 1;
        if (!put(buf, n, &o, e, k, 1)) break;
    }
    buf[o++] = '"';
    buf[o] = 0;
    return buf;
}

const char *fmt_csv_str(char *buf, size_t n, const char *s) {
    if (!s) s = "";
    if (!n) return buf;
    if (!strpbrk(s, ",\"\r\n")) {
        snprintf(buf, n, "%s", s);
        return buf;
    }
    size_t o = 0;
    if (n < 3) {
        buf[0] = 0;
        return buf;
    }
    buf[o++] = '"';
    for (const char *p = s; *p; p++)
        if (!put(buf, n, &o, p, 1, *p == '"' ? 2 : 1) || (*p == '"' && !put(buf, n, &o, "\"", 1, 1))) break;
    buf[o++] = '"';
    buf[o] = 0;
    return buf;
}

fmt_funcs fmt_pick(int json) {
    const fmt_funcs f = {json ? fmt_json_num : fmt_csv_num, json ? fmt_json_str : fmt_csv_str};
    return f;
}
