/* gguf.c: GGUF reader (see gguf.h). Format: magic "GGUF", u32 version, u64 n_tensors,
 * u64 n_kv, then n_kv {string key, u32 type, value}, then n_tensors {string name, u32 n_dims,
 * u64 ne[n_dims], u32 type, u64 offset}, padding to general.alignment, then the data. */
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mcommon.h"
#include "portable.h"

typedef struct rd {
    const uint8_t *p, *end, *base;
} rd;

static int rd_need(rd *r, uint64_t n, const char *what) {
    if ((uint64_t)(r->end - r->p) < n)
        return mdl_fail("gguf: file truncated or corrupted while reading %s at offset %zu "
                        "(needs %llu bytes, %zu left)",
                        what, (size_t)(r->p - r->base), (unsigned long long)n, (size_t)(r->end - r->p));
    return 0;
}
static int rd_u32(rd *r, uint32_t *v, const char *what) {
    if (rd_need(r, 4, what)) return -1;
    memcpy(v, r->p, 4);
    r->p += 4;
    return 0;
}
static int rd_u64(rd *r, uint64_t *v, const char *what) {
    if (rd_need(r, 8, what)) return -1;
    memcpy(v, r->p, 8);
    r->p += 8;
    return 0;
}
static int rd_str(rd *r, gguf_str *s, const char *what) {
    uint64_t n;
    if (rd_u64(r, &n, what)) return -1;
    if (rd_need(r, n, what)) return -1;
    s->p = (const char *)r->p;
    s->n = n;
    r->p += n;
    return 0;
}

static size_t scalar_size(uint32_t t) {
    switch (t) {
    case GGUF_T_UINT8: case GGUF_T_INT8: case GGUF_T_BOOL: return 1;
    case GGUF_T_UINT16: case GGUF_T_INT16: return 2;
    case GGUF_T_UINT32: case GGUF_T_INT32: case GGUF_T_FLOAT32: return 4;
    case GGUF_T_UINT64: case GGUF_T_INT64: case GGUF_T_FLOAT64: return 8;
    default: return 0;
    }
}

/* float -> int64 without undefined behaviour: NaN gives 0, out-of-range values saturate. */
static int64_t f64_to_i64_sat(double f) {
    if (!(f == f)) return 0;
    if (f >= 9223372036854775807.0) return INT64_MAX;
    if (f <= -9223372036854775808.0) return INT64_MIN;
    return (int64_t)f;
}

static void decode_scalar(uint32_t t, const uint8_t *p, gguf_kv *kv) {
    uint8_t u8; int8_t i8; uint16_t u16; int16_t i16; uint32_t u32; int32_t i32; float f32;
    uint64_t u64; int64_t i64; double f64;
    switch (t) {
    case GGUF_T_UINT8: case GGUF_T_BOOL: memcpy(&u8, p, 1); kv->u = u8; kv->i = u8; kv->f = u8; break;
    case GGUF_T_INT8: memcpy(&i8, p, 1); kv->i = i8; kv->u = (uint64_t)i8; kv->f = i8; break;
    case GGUF_T_UINT16: memcpy(&u16, p, 2); kv->u = u16; kv->i = u16; kv->f = u16; break;
    case GGUF_T_INT16: memcpy(&i16, p, 2); kv->i = i16; kv->u = (uint64_t)i16; kv->f = i16; break;
    case GGUF_T_UINT32: memcpy(&u32, p, 4); kv->u = u32; kv->i = u32; kv->f = u32; break;
    case GGUF_T_INT32: memcpy(&i32, p, 4); kv->i = i32; kv->u = (uint64_t)i32; kv->f = i32; break;
    case GGUF_T_FLOAT32: memcpy(&f32, p, 4); kv->f = f32; kv->i = f64_to_i64_sat(f32); kv->u = (uint64_t)kv->i; break;
    case GGUF_T_UINT64: memcpy(&u64, p, 8); kv->u = u64; kv->i = (int64_t)u64; kv->f = (double)u64; break;
    case GGUF_T_INT64: memcpy(&i64, p, 8); kv->i = i64; kv->u = (uint64_t)i64; kv->f = (double)i64; break;
    case GGUF_T_FLOAT64: memcpy(&f64, p, 8); kv->f = f64; kv->i = f64_to_i64_sat(f64); kv->u = (uint64_t)kv->i; break;
    default: break;
    }
}

/* Every ggml type the reader knows, by its number: name, values a block and bytes a block (ggml's type traits).
 * One table for the three questions the three switches here used to answer each over the same type list. */
typedef struct {
    const char *name;
    int block;    /* values a block; 0: not a type this reader knows */
    size_t bytes; /* bytes a block */
} ggml_type_info;
static const ggml_type_info GGML_TYPES[] = {
    [GGML_F32] = {"F32", 1, 4},           [GGML_F16] = {"F16", 1, 2},          [GGML_BF16] = {"BF16", 1, 2},
    [GGML_Q4_0] = {"Q4_0", 32, 18},       [GGML_Q4_1] = {"Q4_1", 32, 20},      [GGML_Q5_0] = {"Q5_0", 32, 22},
    [GGML_Q5_1] = {"Q5_1", 32, 24},       [GGML_Q8_0] = {"Q8_0", 32, 34},      [GGML_Q8_1] = {"Q8_1", 32, 36},
    [GGML_Q2_K] = {"Q2_K", 256, 84},      [GGML_Q3_K] = {"Q3_K", 256, 110},    [GGML_Q4_K] = {"Q4_K", 256, 144},
    [GGML_Q5_K] = {"Q5_K", 256, 176},     [GGML_Q6_K] = {"Q6_K", 256, 210},    [GGML_Q8_K] = {"Q8_K", 256, 292},
    [GGML_IQ4_NL] = {"IQ4_NL", 32, 18},   [GGML_IQ4_XS] = {"IQ4_XS", 256, 136},
    /* sized only (gguf.h) */
    [GGML_IQ2_XXS] = {"IQ2_XXS", 256, 66}, [GGML_IQ2_XS] = {"IQ2_XS", 256, 74}, [GGML_IQ3_XXS] = {"IQ3_XXS", 256, 98},
    [GGML_IQ1_S] = {"IQ1_S", 256, 50},    [GGML_IQ3_S] = {"IQ3_S", 256, 110},  [GGML_IQ2_S] = {"IQ2_S", 256, 82},
    [GGML_I8] = {"I8", 1, 1},             [GGML_I16] = {"I16", 1, 2},          [GGML_I32] = {"I32", 1, 4},
    [GGML_I64] = {"I64", 1, 8},           [GGML_F64] = {"F64", 1, 8},          [GGML_IQ1_M] = {"IQ1_M", 256, 56},
    [GGML_TQ1_0] = {"TQ1_0", 256, 54},    [GGML_TQ2_0] = {"TQ2_0", 256, 66},   [GGML_MXFP4] = {"MXFP4", 32, 17},
};
static const ggml_type_info *type_info(uint32_t type) {
    return type < sizeof GGML_TYPES / sizeof GGML_TYPES[0] && GGML_TYPES[type].block ? &GGML_TYPES[type] : NULL;
}

int ggml_block_size(uint32_t type) {
    const ggml_type_info *t = type_info(type);
    return t ? t->block : 0;
}
const char *ggml_type_name(uint32_t type) {
    const ggml_type_info *t = type_info(type);
    return t ? t->name : "unknown";
}
size_t ggml_row_size(uint32_t type, int64_t n) {
    int bs = ggml_block_size(type);
    if (bs == 0 || n < 0 || n % bs) return 0;
    return (size_t)(n / bs) * GGML_TYPES[type].bytes; /* bs != 0: a known type */
}

int gguf_str_eq(gguf_str s, const char *c) {
    size_t n = strlen(c);
    return s.n == n && memcmp(s.p, c, n) == 0;
}

void gguf_close(gguf_file *g) {
    if (!g) return;
    if (g->kv) {
        for (uint64_t i = 0; i < g->n_kv; i++) free((void *)g->kv[i].arr_strs);
    }
    free(g->kv);
    free(g->tensors);
    if (g->fd >= 0) {
        if (g->map) pf_unmap(g->map, g->size);
        close(g->fd);
    }
    free(g);
}

static int cmp_str_ptr(const void *a, const void *b) {
    const gguf_str *x = *(const gguf_str *const *)a, *y = *(const gguf_str *const *)b;
    const uint64_t n = x->n < y->n ? x->n : y->n;
    const int c = n ? memcmp(x->p, y->p, (size_t)n) : 0;
    return c ? c : (x->n < y->n ? -1 : x->n > y->n);
}

/* a name given twice (a metadata key or a tensor), found by sorting pointers to the n names at base + i * stride
 * (O(n log n): a header may hold millions); NULL when all differ or on allocation failure (*oom set) */
static const gguf_str *first_duplicate(const void *base, size_t stride, uint64_t n, int *oom) {
    *oom = 0;
    if (n < 2) return NULL;
    const gguf_str **v = malloc((size_t)n * sizeof *v);
    if (!v) {
        *oom = 1;
        return NULL;
    }
    for (uint64_t i = 0; i < n; i++) v[i] = (const gguf_str *)(const void *)((const char *)base + i * stride);
    qsort(v, (size_t)n, sizeof *v, cmp_str_ptr);
    const gguf_str *dup = NULL;
    for (uint64_t i = 1; i < n && !dup; i++)
        if (!cmp_str_ptr(&v[i - 1], &v[i])) dup = v[i];
    free(v);
    return dup;
}

static gguf_file *parse(gguf_file *g) {
    rd r = {(const uint8_t *)g->map, (const uint8_t *)g->map + g->size, (const uint8_t *)g->map};
    if (g->size < 4 || memcmp(r.p, "GGUF", 4) != 0) {
        mdl_fail("gguf: not a GGUF file (bad magic)");
        goto fail;
    }
    r.p += 4;
    if (rd_u32(&r, &g->version, "version")) goto fail;
    if (g->version != 2 && g->version != 3) {
        mdl_fail("gguf: unsupported GGUF version %u (2 and 3 are supported)", g->version);
        goto fail;
    }
    if (rd_u64(&r, &g->n_tensors, "tensor count") || rd_u64(&r, &g->n_kv, "metadata count")) goto fail;
    /* each kv needs at least 8+4 bytes, each tensor info at least 8+4+4+8 */
    uint64_t left = (uint64_t)(r.end - r.p);
    if (g->n_kv > left / 12 || g->n_tensors > left / 24) {
        mdl_fail("gguf: corrupted header: %llu metadata entries and %llu tensors cannot fit in %llu bytes",
                 (unsigned long long)g->n_kv, (unsigned long long)g->n_tensors, (unsigned long long)left);
        goto fail;
    }
    g->kv = calloc(g->n_kv ? g->n_kv : 1, sizeof *g->kv);
    g->tensors = calloc(g->n_tensors ? g->n_tensors : 1, sizeof *g->tensors);
    if (!g->kv || !g->tensors) {
        mdl_fail("gguf: out of memory");
        goto fail;
    }
    g->alignment = 32;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        gguf_kv *kv = &g->kv[i];
        if (rd_str(&r, &kv->key, "metadata key") || rd_u32(&r, &kv->type, "metadata type")) goto fail;
        if (kv->type == GGUF_T_STRING) {
            if (rd_str(&r, &kv->s, "metadata string")) goto fail;
        } else if (kv->type == GGUF_T_ARRAY) {
            if (rd_u32(&r, &kv->arr_type, "array type") || rd_u64(&r, &kv->arr_n, "array length")) goto fail;
            kv->arr_data = r.p;
            if (kv->arr_type == GGUF_T_STRING) {
                if (kv->arr_n > (uint64_t)(r.end - r.p) / 8) {
                    mdl_fail("gguf: corrupted string array '%.*s': %llu entries cannot fit", mdl_shown_len(kv->key.n),
                             kv->key.p, (unsigned long long)kv->arr_n);
                    goto fail;
                }
                gguf_str *ss = malloc((kv->arr_n ? kv->arr_n : 1) * sizeof *ss);
                if (!ss) {
                    mdl_fail("gguf: out of memory");
                    goto fail;
                }
                kv->arr_strs = ss;
                for (uint64_t j = 0; j < kv->arr_n; j++)
                    if (rd_str(&r, &ss[j], "string array element")) goto fail;
            } else {
                size_t es = scalar_size(kv->arr_type);
                if (es == 0) {
                    mdl_fail("gguf: metadata '%.*s': unsupported array element type %u", mdl_shown_len(kv->key.n),
                             kv->key.p, kv->arr_type);
                    goto fail;
                }
                if (kv->arr_n > UINT64_MAX / es || rd_need(&r, kv->arr_n * es, "metadata array")) {
                    if (kv->arr_n > UINT64_MAX / es) mdl_fail("gguf: corrupted array length");
                    goto fail;
                }
                r.p += kv->arr_n * es;
            }
        } else {
            size_t es = scalar_size(kv->type);
            if (es == 0) {
                mdl_fail("gguf: metadata '%.*s': unknown value type %u", mdl_shown_len(kv->key.n), kv->key.p, kv->type);
                goto fail;
            }
            if (rd_need(&r, es, "metadata value")) goto fail;
            decode_scalar(kv->type, r.p, kv);
            r.p += es;
        }
        if (gguf_str_eq(kv->key, "general.alignment")) {
            if ((kv->type != GGUF_T_UINT32 && kv->type != GGUF_T_INT32 && kv->type != GGUF_T_UINT64) ||
                kv->u == 0 || (kv->u & (kv->u - 1)) || kv->u > 65536) {
                mdl_fail("gguf: general.alignment must be a power of two integer <= 65536");
                goto fail;
            }
            g->alignment = (size_t)kv->u;
        }
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        gguf_tensor *t = &g->tensors[i];
        if (rd_str(&r, &t->name, "tensor name") || rd_u32(&r, &t->n_dims, "tensor dims")) goto fail;
        if (t->n_dims < 1 || t->n_dims > 4) {
            mdl_fail("gguf: tensor '%.*s' has %u dimensions (1..4 supported)", mdl_shown_len(t->name.n), t->name.p, t->n_dims);
            goto fail;
        }
        for (int d = 0; d < 4; d++) t->ne[d] = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) {
            uint64_t v;
            if (rd_u64(&r, &v, "tensor shape")) goto fail;
            if (v == 0 || v > ((uint64_t)1 << 40)) {
                mdl_fail("gguf: tensor '%.*s' has a bad dimension %llu", mdl_shown_len(t->name.n), t->name.p,
                         (unsigned long long)v);
                goto fail;
            }
            t->ne[d] = (int64_t)v;
        }
        if (rd_u32(&r, &t->type, "tensor type") || rd_u64(&r, &t->offset, "tensor offset")) goto fail;
    }
    /* a key or tensor given twice is ambiguous (which one would be read depends on the lookup): refused, as
     * llama.cpp's gguf reader does */
    {
        int oom = 0;
        const gguf_str *dup = first_duplicate(&g->kv[0].key, sizeof *g->kv, g->n_kv, &oom);
        const char *what = "metadata key";
        if (!dup && !oom) {
            dup = first_duplicate(&g->tensors[0].name, sizeof *g->tensors, g->n_tensors, &oom);
            what = "tensor";
        }
        if (oom || dup) {
            if (oom) mdl_fail("gguf: out of memory");
            else mdl_fail("gguf: %s '%.*s' appears more than once", what, mdl_shown_len(dup->n), dup->p);
            goto fail;
        }
    }
    /* data section */
    size_t hdr = (size_t)(r.p - r.base);
    size_t data_off = (hdr + g->alignment - 1) / g->alignment * g->alignment;
    if (data_off > g->size) {
        if (g->n_tensors) {
            mdl_fail("gguf: file truncated: no data section after the header");
            goto fail;
        }
        data_off = g->size;
    }
    g->data = r.base + data_off;
    g->data_size = g->size - data_off;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        gguf_tensor *t = &g->tensors[i];
        int bs = ggml_block_size(t->type);
        if (bs == 0) {
            mdl_fail("gguf: tensor '%.*s' has type %s (%u), which infllm does not read", mdl_shown_len(t->name.n), t->name.p,
                     ggml_type_name(t->type), t->type);
            goto fail;
        }
        if (t->ne[0] % bs) {
            mdl_fail("gguf: tensor '%.*s': row length %lld is not a multiple of the %s block (%d)", mdl_shown_len(t->name.n),
                     t->name.p, (long long)t->ne[0], ggml_type_name(t->type), bs);
            goto fail;
        }
        /* byte count without overflow: each ne <= 2^40, every product checked */
        uint64_t bytes = ggml_row_size(t->type, t->ne[0]);
        int ovf = 0;
        for (int d = 1; d < 4; d++) {
            if (bytes > UINT64_MAX / (uint64_t)t->ne[d]) ovf = 1;
            else bytes *= (uint64_t)t->ne[d];
        }
        if (ovf) {
            mdl_fail("gguf: tensor '%.*s' is impossibly large", mdl_shown_len(t->name.n), t->name.p);
            goto fail;
        }
        if (t->offset % g->alignment) {
            mdl_fail("gguf: tensor '%.*s' offset %llu is not aligned to %zu", mdl_shown_len(t->name.n), t->name.p,
                     (unsigned long long)t->offset, g->alignment);
            goto fail;
        }
        if (bytes > (uint64_t)g->data_size || t->offset > g->data_size - (size_t)bytes) {
            mdl_fail("gguf: file truncated or corrupted: tensor '%.*s' (%s, %llu bytes at data offset %llu) "
                     "extends past the end of the file (data section is %zu bytes)",
                     mdl_shown_len(t->name.n), t->name.p, ggml_type_name(t->type), (unsigned long long)bytes,
                     (unsigned long long)t->offset, g->data_size);
            goto fail;
        }
        t->nbytes = (size_t)bytes;
        t->data = g->data + t->offset;
    }
    return g;
fail:
    gguf_close(g);
    return NULL;
}

gguf_file *gguf_open(const char *path) {
    int fd = open(path, PF_O_READ); /* a FIFO fails the regular-file check below, not blocks here */
    if (fd < 0) {
        mdl_fail("cannot open '%s': %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        mdl_fail("'%s' is not a regular file", path);
        close(fd);
        return NULL;
    }
    if (st.st_size < 24) {
        mdl_fail("gguf: '%s' is too small (%lld bytes) to be a GGUF file", path, (long long)st.st_size);
        close(fd);
        return NULL;
    }
    void *m = pf_map_read(fd, (size_t)st.st_size);
    if (!m) {
        mdl_fail("cannot mmap '%s': %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    gguf_file *g = calloc(1, sizeof *g);
    if (!g) {
        pf_unmap(m, (size_t)st.st_size);
        close(fd);
        mdl_fail("out of memory");
        return NULL;
    }
    g->fd = fd;
    g->map = m;
    g->size = (size_t)st.st_size;
    return parse(g);
}

gguf_file *gguf_open_buffer(const void *buf, size_t size) {
    gguf_file *g = calloc(1, sizeof *g);
    if (!g) {
        mdl_fail("out of memory");
        return NULL;
    }
    g->fd = -1;
    g->map = (void *)(uintptr_t)buf;
    g->size = size;
    return parse(g);
}

const gguf_kv *gguf_find(const gguf_file *g, const char *key) {
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (gguf_str_eq(g->kv[i].key, key)) return &g->kv[i];
    return NULL;
}
const gguf_tensor *gguf_find_tensor(const gguf_file *g, const char *name) {
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (gguf_str_eq(g->tensors[i].name, name)) return &g->tensors[i];
    return NULL;
}
int64_t gguf_get_int(const gguf_file *g, const char *key, int64_t def) {
    const gguf_kv *kv = gguf_find(g, key);
    if (!kv || kv->type == GGUF_T_STRING || kv->type == GGUF_T_ARRAY) return def;
    return kv->i;
}
double gguf_get_float(const gguf_file *g, const char *key, double def) {
    const gguf_kv *kv = gguf_find(g, key);
    if (!kv || kv->type == GGUF_T_STRING || kv->type == GGUF_T_ARRAY) return def;
    return kv->f;
}
int gguf_get_str(const gguf_file *g, const char *key, char *buf, size_t cap) {
    const gguf_kv *kv = gguf_find(g, key);
    if (!kv || kv->type != GGUF_T_STRING || cap == 0) return -1;
    size_t n = kv->s.n < cap - 1 ? (size_t)kv->s.n : cap - 1;
    memcpy(buf, kv->s.p, n);
    buf[n] = 0;
    return 0;
}
