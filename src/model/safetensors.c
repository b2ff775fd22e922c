/* safetensors.c: mmap'ed safetensors files and sharded checkpoints (see safetensors.h). */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "json.h"
#include "portable.h"

typedef struct {
    void *map;       /* NULL for memory images */
    size_t map_size;
    char *path;
} st_shard;

typedef struct {
    char *key, *value;
} st_meta;

struct st_model {
    st_shard *shards;
    int n_shards;
    st_tensor *tensors;
    size_t n_tensors, cap_tensors;
    st_meta *meta;
    size_t n_meta;
};

PF_PRINTF(3, 4)
static void seterr(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

size_t st_dtype_size(st_dtype t) { return t == ST_F32 ? 4 : 2; }
const char *st_dtype_name(st_dtype t) {
    switch (t) {
    case ST_F32: return "F32";
    case ST_F16: return "F16";
    case ST_BF16: return "BF16";
    }
    return "?";
}

void st_close(st_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_shards; i++) {
        if (m->shards[i].map) pf_unmap(m->shards[i].map, m->shards[i].map_size);
        free(m->shards[i].path);
    }
    free(m->shards);
    for (size_t i = 0; i < m->n_tensors; i++) free((char *)m->tensors[i].name);
    free(m->tensors);
    for (size_t i = 0; i < m->n_meta; i++) {
        free(m->meta[i].key);
        free(m->meta[i].value);
    }
    free(m->meta);
    free(m);
}

static char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *r = malloc(n);
    if (r) memcpy(r, s, n);
    return r;
}

static int cmp_begin(const void *a, const void *b) {
    const st_tensor *x = a, *y = b;
    const char *px = x->data, *py = y->data;
    return px < py ? -1 : px > py ? 1 : 0;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

/* Parses one image into m (tensors appended with shard index). */
static int parse_image(st_model *m, int shard, const char *label, const unsigned char *base, size_t size,
                       char *err, size_t errlen) {
    if (size < 8) {
        seterr(err, errlen, "%s: file too small for a safetensors header (%zu bytes)", label, size);
        return -1;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | base[i];
    if (hlen == 0 || hlen > size - 8) {
        seterr(err, errlen, "%s: header length %llu out of range (file %zu bytes)", label,
               (unsigned long long)hlen, size);
        return -1;
    }
    if (hlen > ((uint64_t)100 << 20)) {
        seterr(err, errlen, "%s: header length %llu exceeds the 100 MB limit", label, (unsigned long long)hlen);
        return -1;
    }
    json_error je;
    json_limits lim = {0, 64, 0};
    json_doc *doc = json_parse((const char *)base + 8, (size_t)hlen, &lim, &je);
    if (!doc) {
        seterr(err, errlen, "%s: header JSON error at byte %zu: %s", label, (size_t)(8 + je.offset), je.msg);
        return -1;
    }
    const unsigned char *data = base + 8 + hlen;
    size_t dsize = size - 8 - (size_t)hlen;
    const json_value *root = json_root(doc);
    int rc = -1;
    size_t first = m->n_tensors;
    if (!json_is(root, JSON_OBJECT)) {
        seterr(err, errlen, "%s: header is not a JSON object", label);
        goto out;
    }
    for (uint32_t k = 0; k < root->len; k++) {
        const json_member *mb = &root->u.members[k];
        const json_value *v = &mb->value;
        if (strlen(mb->key) != mb->key_len) {
            seterr(err, errlen, "%s: tensor name contains NUL", label);
            goto out;
        }
        if (strcmp(mb->key, "__metadata__") == 0) {
            if (!json_is(v, JSON_OBJECT)) {
                seterr(err, errlen, "%s: __metadata__ is not an object", label);
                goto out;
            }
            for (uint32_t j = 0; j < v->len; j++) {
                const json_member *e = &v->u.members[j];
                if (!json_is(&e->value, JSON_STRING)) {
                    seterr(err, errlen, "%s: __metadata__['%s'] is not a string", label, e->key);
                    goto out;
                }
                if (shard != 0) continue;
                st_meta *nm = realloc(m->meta, (m->n_meta + 1) * sizeof *nm);
                if (!nm) goto oom;
                m->meta = nm;
                nm[m->n_meta].key = xstrdup(e->key);
                nm[m->n_meta].value = xstrdup(e->value.u.str);
                m->n_meta++;
                if (!nm[m->n_meta - 1].key || !nm[m->n_meta - 1].value) goto oom;
            }
            continue;
        }
        if (!json_is(v, JSON_OBJECT)) {
            seterr(err, errlen, "%s: tensor '%s': entry is not an object", label, mb->key);
            goto out;
        }
        st_tensor t;
        memset(&t, 0, sizeof t);
        t.shard = shard;
        const char *dt = json_get_str(v, "dtype", NULL);
        if (!dt) {
            seterr(err, errlen, "%s: tensor '%s': missing \"dtype\"", label, mb->key);
            goto out;
        }
        if (!strcmp(dt, "F32")) t.dtype = ST_F32;
        else if (!strcmp(dt, "F16")) t.dtype = ST_F16;
        else if (!strcmp(dt, "BF16")) t.dtype = ST_BF16;
        else {
            seterr(err, errlen, "%s: tensor '%s': unsupported dtype %.32s (F32, F16 and BF16 only)", label,
                   mb->key, dt);
            goto out;
        }
        const json_value *shape = json_get(v, "shape");
        if (!json_is(shape, JSON_ARRAY)) {
            seterr(err, errlen, "%s: tensor '%s': missing or invalid \"shape\"", label, mb->key);
            goto out;
        }
        if (shape->len > ST_MAX_DIMS) {
            seterr(err, errlen, "%s: tensor '%s': %u dimensions (at most %d)", label, mb->key, shape->len,
                   ST_MAX_DIMS);
            goto out;
        }
        t.ndim = (int)shape->len;
        uint64_t numel = 1;
        int overflow = 0;
        for (int d = 0; d < t.ndim; d++) {
            int64_t x;
            if (!json_int(&shape->u.items[d], &x) || x < 0) {
                seterr(err, errlen, "%s: tensor '%s': shape[%d] is not a non-negative integer", label, mb->key, d);
                goto out;
            }
            t.shape[d] = x;
            if (x != 0 && numel > UINT64_MAX / (uint64_t)x) overflow = 1;
            else numel *= (uint64_t)x;
        }
        for (int d = 0; d < t.ndim; d++)
            if (t.shape[d] == 0) {
                numel = 0;
                overflow = 0;
            }
        uint64_t want = numel * st_dtype_size(t.dtype);
        if (overflow || numel > UINT64_MAX / 4 || numel > (uint64_t)INT64_MAX) {
            seterr(err, errlen, "%s: tensor '%s': shape overflows", label, mb->key);
            goto out;
        }
        const json_value *off = json_get(v, "data_offsets");
        int64_t b = -1, e = -1;
        if (!json_is(off, JSON_ARRAY) || off->len != 2 || !json_int(&off->u.items[0], &b) ||
            !json_int(&off->u.items[1], &e) || b < 0 || e < 0) {
            seterr(err, errlen, "%s: tensor '%s': missing or invalid \"data_offsets\"", label, mb->key);
            goto out;
        }
        if (b > e || (uint64_t)e > dsize) {
            seterr(err, errlen, "%s: tensor '%s': data_offsets [%lld, %lld] out of range (data section %zu bytes)",
                   label, mb->key, (long long)b, (long long)e, dsize);
            goto out;
        }
        if ((uint64_t)(e - b) != want) {
            seterr(err, errlen,
                   "%s: tensor '%s': data_offsets span %lld bytes but shape x %s needs %llu", label, mb->key,
                   (long long)(e - b), st_dtype_name(t.dtype), (unsigned long long)want);
            goto out;
        }
        t.numel = (int64_t)numel;
        t.nbytes = (size_t)want;
        t.data = data + b;
        t.name = xstrdup(mb->key);
        if (!t.name) goto oom;
        if (m->n_tensors == m->cap_tensors) {
            size_t nc = m->cap_tensors ? m->cap_tensors * 2 : 64;
            st_tensor *nt = realloc(m->tensors, nc * sizeof *nt);
            if (!nt) {
                free((char *)t.name);
                goto oom;
            }
            m->tensors = nt;
            m->cap_tensors = nc;
        }
        m->tensors[m->n_tensors++] = t;
    }
    /* overlap check among this shard's tensors */
    {
        size_t cnt = m->n_tensors - first;
        st_tensor *ts = cnt ? m->tensors + first : NULL;
        if (cnt > 1) qsort(ts, cnt, sizeof *ts, cmp_begin);
        const st_tensor *prev = NULL;
        for (size_t i = 0; i < cnt; i++) {
            if (ts[i].nbytes == 0) continue;
            if (prev && (const char *)prev->data + prev->nbytes > (const char *)ts[i].data) {
                seterr(err, errlen, "%s: tensors '%s' and '%s' overlap", label, prev->name, ts[i].name);
                goto out;
            }
            prev = &ts[i];
        }
    }
    rc = 0;
    goto out;
oom:
    seterr(err, errlen, "%s: out of memory", label);
out:
    json_free(doc);
    return rc;
}

static int finalize(st_model *m, char *err, size_t errlen) {
    if (m->n_tensors > 1) qsort(m->tensors, m->n_tensors, sizeof *m->tensors, cmp_name);
    for (size_t i = 1; i < m->n_tensors; i++)
        if (!strcmp(m->tensors[i - 1].name, m->tensors[i].name)) {
            seterr(err, errlen, "tensor '%s' appears twice", m->tensors[i].name);
            return -1;
        }
    return 0;
}

int st_open_memory(const void *data, size_t size, st_model **out, char *err, size_t errlen) {
    if (!out) return -1;
    *out = NULL;
    st_model *m = calloc(1, sizeof *m);
    if (!m) {
        seterr(err, errlen, "out of memory");
        return -1;
    }
    m->shards = calloc(1, sizeof *m->shards);
    if (!m->shards || !data) {
        seterr(err, errlen, m->shards ? "NULL data" : "out of memory");
        st_close(m);
        return -1;
    }
    m->n_shards = 1;
    if (parse_image(m, 0, "<memory>", data, size, err, errlen) || finalize(m, err, errlen)) {
        st_close(m);
        return -1;
    }
    *out = m;
    return 0;
}

static int map_shard(st_model *m, const char *path, char *err, size_t errlen) {
    st_shard *ns = realloc(m->shards, (size_t)(m->n_shards + 1) * sizeof *ns);
    if (!ns) {
        seterr(err, errlen, "out of memory");
        return -1;
    }
    m->shards = ns;
    st_shard *s = &ns[m->n_shards];
    memset(s, 0, sizeof *s);
    s->path = xstrdup(path);
    m->n_shards++;
    if (!s->path) {
        seterr(err, errlen, "out of memory");
        return -1;
    }
    int fd = open(path, PF_O_READ); /* a FIFO fails the regular-file check below, not blocks here */
    if (fd < 0) {
        seterr(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    struct stat stt;
    if (fstat(fd, &stt) != 0 || !S_ISREG(stt.st_mode)) {
        seterr(err, errlen, "%s: not a regular file", path);
        close(fd);
        return -1;
    }
    size_t size = (size_t)stt.st_size;
    if (size < 8) {
        seterr(err, errlen, "%s: file too small for a safetensors header (%zu bytes)", path, size);
        close(fd);
        return -1;
    }
    void *p = pf_map_read(fd, size);
    close(fd);
    if (!p) {
        seterr(err, errlen, "%s: mmap failed: %s", path, strerror(errno));
        return -1;
    }
    s->map = p;
    s->map_size = size;
    return parse_image(m, m->n_shards - 1, path, p, size, err, errlen);
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static int open_index(st_model *m, const char *index_path, char *err, size_t errlen) {
    json_error je;
    json_doc *doc = json_parse_file(index_path, NULL, &je);
    if (!doc) {
        char why[192];
        seterr(err, errlen, "%s: %s", index_path, json_error_text(&je, why, sizeof why));
        return -1;
    }
    int rc = -1;
    char *dir = xstrdup(index_path);
    char *path = NULL;
    const char **files = NULL;
    size_t n_files = 0;
    const json_value *wm = json_get(json_root(doc), "weight_map");
    if (!dir) goto out;
    const char *sep = pf_last_sep(dir); /* the index's folder, its separator kept */
    if (sep) dir[sep - dir + 1] = 0;
    else dir[0] = 0;
    if (!json_is(wm, JSON_OBJECT) || wm->len == 0) {
        seterr(err, errlen, "%s: missing or empty \"weight_map\"", index_path);
        goto out;
    }
    files = calloc(wm->len, sizeof *files);
    if (!files) goto out;
    for (uint32_t k = 0; k < wm->len; k++) {
        const char *f = json_str(&wm->u.members[k].value, NULL);
        if (!f || !*f || strchr(f, '/') || !strcmp(f, "..") || strlen(f) != wm->u.members[k].value.len) {
            seterr(err, errlen, "%s: weight_map['%s']: invalid shard file name", index_path, wm->u.members[k].key);
            goto out;
        }
        size_t j = 0;
        while (j < n_files && strcmp(files[j], f)) j++;
        if (j == n_files) files[n_files++] = f;
    }
    for (size_t j = 0; j < n_files; j++) {
        free(path);
        path = malloc(strlen(dir) + strlen(files[j]) + 1);
        if (!path) goto out;
        strcpy(path, dir);
        strcat(path, files[j]);
        if (map_shard(m, path, err, errlen)) goto out;
    }
    if (finalize(m, err, errlen)) goto out;
    for (uint32_t k = 0; k < wm->len; k++) {
        const json_member *e = &wm->u.members[k];
        const st_tensor *t = st_find(m, e->key);
        const char *f = e->value.u.str;
        size_t j = 0;
        while (j < n_files && strcmp(files[j], f)) j++;
        if (!t || t->shard != (int)j) {
            seterr(err, errlen, "%s: tensor '%s' listed in weight_map is not in %s", index_path, e->key, f);
            goto out;
        }
    }
    rc = 0;
out:
    if (rc && err && errlen && !err[0]) seterr(err, errlen, "%s: out of memory", index_path);
    free(path);
    free(files);
    free(dir);
    json_free(doc);
    return rc;
}

int st_open(const char *path, st_model **out, char *err, size_t errlen) {
    if (!out || !path) return -1;
    *out = NULL;
    if (err && errlen) err[0] = 0;
    st_model *m = calloc(1, sizeof *m);
    if (!m) {
        seterr(err, errlen, "out of memory");
        return -1;
    }
    int rc;
    struct stat stt;
    if (stat(path, &stt) != 0) {
        seterr(err, errlen, "%s: %s", path, strerror(errno));
        rc = -1;
    } else if (S_ISDIR(stt.st_mode)) {
        size_t n = strlen(path);
        char *p = malloc(n + 40);
        if (!p) {
            seterr(err, errlen, "out of memory");
            rc = -1;
        } else {
            snprintf(p, n + 40, "%s/model.safetensors.index.json", path);
            if (access(p, R_OK) == 0) {
                rc = open_index(m, p, err, errlen);
            } else {
                snprintf(p, n + 40, "%s/model.safetensors", path);
                rc = map_shard(m, p, err, errlen);
                if (!rc) rc = finalize(m, err, errlen);
            }
            free(p);
        }
    } else if (ends_with(path, ".json")) {
        rc = open_index(m, path, err, errlen);
    } else {
        rc = map_shard(m, path, err, errlen);
        if (!rc) rc = finalize(m, err, errlen);
    }
    if (rc) {
        st_close(m);
        return -1;
    }
    *out = m;
    return 0;
}

size_t st_count(const st_model *m) { return m ? m->n_tensors : 0; }

const st_tensor *st_tensor_at(const st_model *m, size_t i) {
    return (m && i < m->n_tensors) ? &m->tensors[i] : NULL;
}

const st_tensor *st_find(const st_model *m, const char *name) {
    if (!m || !name) return NULL;
    size_t lo = 0, hi = m->n_tensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(m->tensors[mid].name, name);
        if (c == 0) return &m->tensors[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return NULL;
}

const char *st_metadata(const st_model *m, const char *key) {
    if (!m || !key) return NULL;
    for (size_t i = m->n_meta; i-- > 0;)
        if (!strcmp(m->meta[i].key, key)) return m->meta[i].value;
    return NULL;
}

static float half_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1F, man = h & 0x3FF, bits;
    if (exp == 0) {
        if (man == 0) bits = sign;
        else {
            exp = 127 - 15 + 1;
            while (!(man & 0x400)) {
                man <<= 1;
                exp--;
            }
            man &= 0x3FF;
            bits = sign | (exp << 23) | (man << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7F800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

void st_to_f32(const st_tensor *t, float *dst) {
    if (!t || !dst) return;
    const unsigned char *s = t->data;
    for (int64_t i = 0; i < t->numel; i++) {
        if (t->dtype == ST_F32) {
            uint32_t b = (uint32_t)s[4 * i] | (uint32_t)s[4 * i + 1] << 8 | (uint32_t)s[4 * i + 2] << 16 |
                         (uint32_t)s[4 * i + 3] << 24;
            memcpy(&dst[i], &b, 4);
        } else {
            uint16_t h = (uint16_t)(s[2 * i] | s[2 * i + 1] << 8);
            if (t->dtype == ST_F16) dst[i] = half_to_f32(h);
            else {
                uint32_t b = (uint32_t)h << 16;
                memcpy(&dst[i], &b, 4);
            }
        }
    }
}
