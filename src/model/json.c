/* json.c: strict RFC 8259 parser into an arena-allocated DOM (see json.h). */
#include "json.h"
#include "portable.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct chunk {
    struct chunk *next;
    size_t used, cap;
    max_align_t data[];
} chunk;

struct json_doc {
    chunk *chunks;
    json_value root;
};

typedef struct {
    const unsigned char *s;
    size_t n, pos;
    json_doc *doc;
    json_error *err;
    int max_depth;
    size_t max_nodes, nodes;
    size_t first_chunk; /* size of the first arena chunk (scaled to the input) */
    json_member *stack; /* scratch for children of open containers */
    size_t sp, scap;
    int failed;
} parser;

static void *arena_alloc(parser *p, size_t size) {
    size = (size + 15) & ~(size_t)15;
    chunk *c = p->doc->chunks;
    if (!c || c->cap - c->used < size) {
        size_t cap = p->first_chunk;
        if (c) cap = c->cap < ((size_t)1 << 24) ? c->cap * 2 : c->cap;
        if (cap < size) cap = size;
        chunk *nc = malloc(sizeof(chunk) + cap);
        if (!nc) return NULL;
        nc->next = c;
        nc->used = 0;
        nc->cap = cap;
        p->doc->chunks = nc;
        c = nc;
    }
    void *r = (char *)c->data + c->used;
    c->used += size;
    return r;
}

static int fail(parser *p, size_t at, const char *msg) {
    if (!p->failed) {
        p->failed = 1;
        if (p->err) {
            p->err->offset = at;
            snprintf(p->err->msg, sizeof p->err->msg, "%s", msg);
        }
    }
    return -1;
}

static void skip_ws(parser *p) {
    while (p->pos < p->n) {
        unsigned char c = p->s[p->pos];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') p->pos++;
        else break;
    }
}

static int hex4(const unsigned char *s, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = s[i], d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else return -1;
        v = v * 16 + d;
    }
    *out = v;
    return 0;
}

/* Length of a valid UTF-8 sequence starting at s (n bytes available), or 0 if invalid. */
static size_t utf8_valid(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    if (c < 0xC2) return 0;
    if (c < 0xE0) return (n >= 2 && (s[1] & 0xC0) == 0x80) ? 2 : 0;
    if (c < 0xF0) {
        if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return 0;
        if (c == 0xE0 && s[1] < 0xA0) return 0; /* overlong */
        if (c == 0xED && s[1] >= 0xA0) return 0; /* surrogate */
        return 3;
    }
    if (c < 0xF5) {
        if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80) return 0;
        if (c == 0xF0 && s[1] < 0x90) return 0;
        if (c == 0xF4 && s[1] >= 0x90) return 0;
        return 4;
    }
    return 0;
}

static char *put_utf8(char *o, unsigned cp) {
    if (cp < 0x80) *o++ = (char)cp;
    else if (cp < 0x800) {
        *o++ = (char)(0xC0 | (cp >> 6));
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *o++ = (char)(0xE0 | (cp >> 12));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else {
        *o++ = (char)(0xF0 | (cp >> 18));
        *o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    }
    return o;
}

/* p->pos is at the opening quote. */
static int parse_string(parser *p, const char **out, uint32_t *out_len) {
    size_t start = ++p->pos;
    const unsigned char *s = p->s;
    size_t i = start;
    int has_escape = 0;
    /* first pass: find the end, validate */
    while (1) {
        if (i >= p->n) return fail(p, start - 1, "unterminated string");
        unsigned char c = s[i];
        if (c == '"') break;
        if (c < 0x20) return fail(p, i, "control character in string");
        if (c == '\\') {
            has_escape = 1;
            if (i + 1 >= p->n) return fail(p, i, "unterminated escape");
            unsigned char e = s[i + 1];
            if (e == 'u') {
                if (i + 6 > p->n) return fail(p, i, "truncated \\u escape");
                unsigned cp;
                if (hex4(s + i + 2, &cp)) return fail(p, i, "bad \\u escape");
                if (cp >= 0xD800 && cp < 0xDC00) {
                    unsigned lo;
                    if (i + 12 > p->n || s[i + 6] != '\\' || s[i + 7] != 'u' || hex4(s + i + 8, &lo) ||
                        lo < 0xDC00 || lo > 0xDFFF)
                        return fail(p, i, "unpaired high surrogate in \\u escape");
                    i += 12;
                } else if (cp >= 0xDC00 && cp < 0xE000) {
                    return fail(p, i, "unpaired low surrogate in \\u escape");
                } else {
                    i += 6;
                }
                continue;
            }
            if (!strchr("\"\\/bfnrt", e) || e == 0) return fail(p, i, "invalid escape character");
            i += 2;
            continue;
        }
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k = utf8_valid(s + i, p->n - i);
        if (!k) return fail(p, i, "invalid UTF-8 in string");
        i += k;
    }
    size_t raw = i - start;
    if (raw > 0xFFFFFFF0u) return fail(p, start, "string too long");
    char *dst = arena_alloc(p, raw + 1);
    if (!dst) return fail(p, start, "out of memory");
    size_t outlen;
    if (!has_escape) {
        memcpy(dst, s + start, raw);
        outlen = raw;
    } else {
        char *o = dst;
        size_t j = start;
        while (j < i) {
            unsigned char c = s[j];
            if (c != '\\') {
                *o++ = (char)c;
                j++;
                continue;
            }
            unsigned char e = s[j + 1];
            switch (e) {
            case '"': *o++ = '"'; j += 2; break;
            case '\\': *o++ = '\\'; j += 2; break;
            case '/': *o++ = '/'; j += 2; break;
            case 'b': *o++ = '\b'; j += 2; break;
            case 'f': *o++ = '\f'; j += 2; break;
            case 'n': *o++ = '\n'; j += 2; break;
            case 'r': *o++ = '\r'; j += 2; break;
            case 't': *o++ = '\t'; j += 2; break;
            default: { /* u */
                unsigned cp, lo;
                hex4(s + j + 2, &cp);
                j += 6;
                if (cp >= 0xD800 && cp < 0xDC00) {
                    hex4(s + j + 2, &lo);
                    j += 6;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
                o = put_utf8(o, cp);
            }
            }
        }
        outlen = (size_t)(o - dst);
    }
    dst[outlen] = 0;
    p->pos = i + 1;
    *out = dst;
    *out_len = (uint32_t)outlen;
    return 0;
}

static int parse_number(parser *p, json_value *v) {
    const unsigned char *s = p->s;
    size_t st = p->pos, i = st;
    int neg = 0, is_int = 1;
    if (i < p->n && s[i] == '-') {
        neg = 1;
        i++;
    }
    if (i >= p->n || s[i] < '0' || s[i] > '9') return fail(p, i, "invalid number");
    if (s[i] == '0') {
        i++;
        if (i < p->n && s[i] >= '0' && s[i] <= '9') return fail(p, i, "leading zero in number");
    } else {
        while (i < p->n && s[i] >= '0' && s[i] <= '9') i++;
    }
    size_t int_end = i;
    if (i < p->n && s[i] == '.') {
        is_int = 0;
        i++;
        if (i >= p->n || s[i] < '0' || s[i] > '9') return fail(p, i, "digit expected after '.'");
        while (i < p->n && s[i] >= '0' && s[i] <= '9') i++;
    }
    if (i < p->n && (s[i] == 'e' || s[i] == 'E')) {
        is_int = 0;
        i++;
        if (i < p->n && (s[i] == '+' || s[i] == '-')) i++;
        if (i >= p->n || s[i] < '0' || s[i] > '9') return fail(p, i, "digit expected in exponent");
        while (i < p->n && s[i] >= '0' && s[i] <= '9') i++;
    }
    v->type = JSON_NUMBER;
    v->is_int = 0;
    if (is_int) {
        uint64_t acc = 0;
        int ovf = 0;
        for (size_t k = st + (size_t)neg; k < int_end; k++) {
            unsigned d = s[k] - '0';
            if (acc > (UINT64_MAX - d) / 10) {
                ovf = 1;
                break;
            }
            acc = acc * 10 + d;
        }
        if (!ovf && (neg ? acc <= (uint64_t)INT64_MAX + 1 : acc <= (uint64_t)INT64_MAX)) {
            v->is_int = 1;
            v->i = neg ? (int64_t)(0 - acc) : (int64_t)acc;
            if (neg && acc == (uint64_t)INT64_MAX + 1) v->i = INT64_MIN;
            v->num = (double)v->i;
            p->pos = i;
            return 0;
        }
    }
    char buf[64];
    size_t len = i - st;
    char *tmp = len < sizeof buf ? buf : malloc(len + 1);
    if (!tmp) return fail(p, st, "out of memory");
    memcpy(tmp, s + st, len);
    tmp[len] = 0;
    v->num = strtod(tmp, NULL);
    if (tmp != buf) free(tmp);
    p->pos = i;
    return 0;
}

static int push(parser *p, const json_member *m) {
    if (p->sp == p->scap) {
        size_t nc = p->scap ? p->scap * 2 : 256;
        json_member *ns = realloc(p->stack, nc * sizeof *ns);
        if (!ns) return fail(p, p->pos, "out of memory");
        p->stack = ns;
        p->scap = nc;
    }
    p->stack[p->sp++] = *m;
    return 0;
}

static int parse_value(parser *p, json_value *v, int depth);

static int parse_container(parser *p, json_value *v, int depth, int is_obj) {
    if (depth >= p->max_depth) return fail(p, p->pos, "nesting too deep");
    size_t open = p->pos++;
    size_t base = p->sp;
    skip_ws(p);
    char close = is_obj ? '}' : ']';
    if (p->pos < p->n && p->s[p->pos] == (unsigned char)close) {
        p->pos++;
    } else {
        while (1) {
            json_member m;
            memset(&m, 0, sizeof m);
            skip_ws(p);
            if (is_obj) {
                if (p->pos >= p->n || p->s[p->pos] != '"')
                    return fail(p, p->pos, p->pos >= p->n ? "unterminated object" : "expected string key");
                if (parse_string(p, &m.key, &m.key_len)) return -1;
                skip_ws(p);
                if (p->pos >= p->n || p->s[p->pos] != ':') return fail(p, p->pos, "expected ':' after object key");
                p->pos++;
                skip_ws(p);
            }
            if (parse_value(p, &m.value, depth + 1)) return -1;
            if (push(p, &m)) return -1;
            skip_ws(p);
            if (p->pos >= p->n) return fail(p, open, is_obj ? "unterminated object" : "unterminated array");
            unsigned char c = p->s[p->pos];
            if (c == ',') {
                p->pos++;
                continue;
            }
            if (c == (unsigned char)close) {
                p->pos++;
                break;
            }
            return fail(p, p->pos, is_obj ? "expected ',' or '}' in object" : "expected ',' or ']' in array");
        }
    }
    size_t cnt = p->sp - base;
    if (cnt > 0xFFFFFFFFu) return fail(p, open, "container too large");
    v->type = is_obj ? JSON_OBJECT : JSON_ARRAY;
    v->len = (uint32_t)cnt;
    if (is_obj) {
        json_member *mm = cnt ? arena_alloc(p, cnt * sizeof *mm) : NULL;
        if (cnt && !mm) return fail(p, open, "out of memory");
        if (cnt) memcpy(mm, p->stack + base, cnt * sizeof *mm);
        v->u.members = mm;
    } else {
        json_value *it = cnt ? arena_alloc(p, cnt * sizeof *it) : NULL;
        if (cnt && !it) return fail(p, open, "out of memory");
        for (size_t k = 0; k < cnt; k++) it[k] = p->stack[base + k].value;
        v->u.items = it;
    }
    p->sp = base;
    return 0;
}

static int lit(parser *p, const char *w) {
    size_t n = strlen(w);
    if (p->n - p->pos < n || memcmp(p->s + p->pos, w, n) != 0) return fail(p, p->pos, "invalid literal");
    p->pos += n;
    return 0;
}

static int parse_value(parser *p, json_value *v, int depth) {
    memset(v, 0, sizeof *v);
    if (++p->nodes > p->max_nodes) return fail(p, p->pos, "too many values");
    if (p->pos >= p->n) return fail(p, p->pos, "unexpected end of input");
    unsigned char c = p->s[p->pos];
    switch (c) {
    case '{': return parse_container(p, v, depth, 1);
    case '[': return parse_container(p, v, depth, 0);
    case '"':
        v->type = JSON_STRING;
        return parse_string(p, &v->u.str, &v->len);
    case 't':
        v->type = JSON_BOOL;
        v->boolean = true;
        return lit(p, "true");
    case 'f':
        v->type = JSON_BOOL;
        return lit(p, "false");
    case 'n':
        v->type = JSON_NULL;
        return lit(p, "null");
    default:
        if (c == '-' || (c >= '0' && c <= '9')) return parse_number(p, v);
        return fail(p, p->pos, "unexpected character");
    }
}

void json_free(json_doc *doc) {
    if (!doc) return;
    chunk *c = doc->chunks;
    while (c) {
        chunk *n = c->next;
        free(c);
        c = n;
    }
    free(doc);
}

json_doc *json_parse(const char *text, size_t len, const json_limits *lim, json_error *err) {
    parser p;
    memset(&p, 0, sizeof p);
    p.s = (const unsigned char *)text;
    p.n = len;
    p.err = err;
    p.max_depth = (lim && lim->max_depth > 0) ? lim->max_depth : 256;
    p.first_chunk = len < 512 ? 1024 : len < 32768 ? len * 2 : (size_t)1 << 16;
    p.max_nodes = (lim && lim->max_nodes) ? lim->max_nodes : ((size_t)64 << 20);
    size_t max_in = (lim && lim->max_input) ? lim->max_input : ((size_t)1 << 30);
    if (err) {
        err->offset = 0;
        err->msg[0] = 0;
        err->io = 0;
    }
    if (!text && len) {
        fail(&p, 0, "NULL input");
        return NULL;
    }
    if (len > max_in) {
        fail(&p, max_in, "input too large");
        return NULL;
    }
    p.doc = calloc(1, sizeof *p.doc);
    if (!p.doc) {
        fail(&p, 0, "out of memory");
        return NULL;
    }
    skip_ws(&p);
    int rc = parse_value(&p, &p.doc->root, 0);
    if (!rc) {
        skip_ws(&p);
        if (p.pos != p.n) rc = fail(&p, p.pos, "trailing characters after JSON value");
    }
    free(p.stack);
    if (rc) {
        json_free(p.doc);
        return NULL;
    }
    return p.doc;
}

json_doc *json_parse_file(const char *path, const json_limits *lim, json_error *err) {
    /* a regular file only: O_NONBLOCK so that a FIFO in its place fails here instead of blocking the open, and
     * the S_ISREG check so that a device (a config.json linked to /dev/zero) is not read until memory runs out */
    int not_regular;
    FILE *f = pf_fopen_regular(path, &not_regular, NULL);
    if (!f) {
        if (err) {
            err->offset = 0;
            err->io = 1;
            if (not_regular) snprintf(err->msg, sizeof err->msg, "not a regular file");
            else snprintf(err->msg, sizeof err->msg, "cannot open: %s", strerror(errno));
        }
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n == cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    int ioerr = ferror(f);
    fclose(f);
    if (!buf || ioerr) {
        free(buf);
        if (err) {
            err->offset = 0;
            err->io = 1;
            snprintf(err->msg, sizeof err->msg, "%s", buf ? "read error" : "out of memory");
        }
        return NULL;
    }
    json_doc *d = json_parse(buf, n, lim, err);
    free(buf);
    return d;
}

const char *json_error_text(const json_error *err, char *buf, size_t buflen) {
    if (err->io) snprintf(buf, buflen, "%s", err->msg);
    else snprintf(buf, buflen, "JSON error at byte %zu: %s", err->offset, err->msg);
    return buf;
}

const json_value *json_root(const json_doc *doc) { return doc ? &doc->root : NULL; }

const json_value *json_getn(const json_value *obj, const char *key, size_t key_len) {
    if (!obj || obj->type != JSON_OBJECT || !key) return NULL;
    for (uint32_t k = obj->len; k-- > 0;) {
        const json_member *m = &obj->u.members[k];
        if (m->key_len == key_len && memcmp(m->key, key, key_len) == 0) return &m->value;
    }
    return NULL;
}

const json_value *json_get(const json_value *obj, const char *key) {
    return key ? json_getn(obj, key, strlen(key)) : NULL;
}

const json_value *json_index(const json_value *arr, size_t i) {
    if (!arr || arr->type != JSON_ARRAY || i >= arr->len) return NULL;
    return &arr->u.items[i];
}

const json_value *json_path(const json_value *v, const char *dotted) {
    if (!dotted) return NULL;
    while (v && *dotted) {
        const char *dot = strchr(dotted, '.');
        size_t n = dot ? (size_t)(dot - dotted) : strlen(dotted);
        v = json_getn(v, dotted, n);
        dotted += n;
        if (*dotted == '.') dotted++;
    }
    return v;
}

size_t json_len(const json_value *v) {
    if (!v) return 0;
    if (v->type == JSON_STRING || v->type == JSON_ARRAY || v->type == JSON_OBJECT) return v->len;
    return 0;
}

bool json_is(const json_value *v, json_type t) { return v && v->type == t; }

const char *json_str(const json_value *v, size_t *len_out) {
    if (!v || v->type != JSON_STRING) return NULL;
    if (len_out) *len_out = v->len;
    return v->u.str;
}

bool json_num(const json_value *v, double *out) {
    if (!v || v->type != JSON_NUMBER) return false;
    if (out) *out = v->num;
    return true;
}

bool json_int(const json_value *v, int64_t *out) {
    if (!v || v->type != JSON_NUMBER || !v->is_int) return false;
    if (out) *out = v->i;
    return true;
}

bool json_bool(const json_value *v, bool *out) {
    if (!v || v->type != JSON_BOOL) return false;
    if (out) *out = v->boolean;
    return true;
}

bool json_is_null(const json_value *v) { return v && v->type == JSON_NULL; }

double json_get_num(const json_value *obj, const char *key, double dflt) {
    double d;
    return json_num(json_get(obj, key), &d) ? d : dflt;
}

int64_t json_get_int(const json_value *obj, const char *key, int64_t dflt) {
    int64_t i;
    return json_int(json_get(obj, key), &i) ? i : dflt;
}

bool json_get_bool(const json_value *obj, const char *key, bool dflt) {
    bool b;
    return json_bool(json_get(obj, key), &b) ? b : dflt;
}

const char *json_get_str(const json_value *obj, const char *key, const char *dflt) {
    const char *s = json_str(json_get(obj, key), NULL);
    return s ? s : dflt;
}

const char *json_type_name(json_type t) {
    switch (t) {
    case JSON_NULL: return "null";
    case JSON_BOOL: return "bool";
    case JSON_NUMBER: return "number";
    case JSON_STRING: return "string";
    case JSON_ARRAY: return "array";
    case JSON_OBJECT: return "object";
    }
    return "?";
}
