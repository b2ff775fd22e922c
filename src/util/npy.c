/* npy.c: see npy.h. */
#define _POSIX_C_SOURCE 200809L
#include "npy.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "portable.h"

static size_t descr_size(const char *d) {
    static const struct {
        const char *d;
        size_t s;
    } known[] = {{"<u2", 2}, {"<f2", 2}, {"<f4", 4}, {"<f8", 8}, {"<i4", 4}, {"<i8", 8}, {"|u1", 1}, {"<u4", 4}};
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(d, known[i].d) == 0) return known[i].s;
    return 0;
}

void npy_free(npy_array *a) {
    if (!a) return;
    free(a->data);
    a->data = NULL;
}

/* Finds the value text following 'key': in the header dict. */
static const char *find_key(const char *h, const char *key) {
    const char *p = strstr(h, key);
    if (!p) return NULL;
    p += strlen(key);
    while (*p == ' ') p++;
    if (*p != ':') return NULL;
    p++;
    while (*p == ' ') p++;
    return p;
}

int npy_read(const char *path, npy_array *a, char *err, size_t errlen) {
    memset(a, 0, sizeof *a);
    /* PF_O_READ (O_NONBLOCK where FIFOs exist), then a regular file only: fopen of a FIFO without a writer blocked
     * forever (infllm attn --dout FIFO hung), and the reader seeks, so a pipe could never be read anyway ("cannot
     * seek"). A directory keeps its own message (EISDIR, as reading it said). */
    const int fd = open(path, PF_O_READ);
    if (fd < 0) {
        const int e = errno;
#ifdef _WIN32 /* a folder does not open there (EACCES), where POSIX's fstat below tells it */
        struct stat ps;
        if (stat(path, &ps) == 0 && S_ISDIR(ps.st_mode)) {
            snprintf(err, errlen, "%s: cannot read: %s", path, strerror(EISDIR));
            return -1;
        }
#endif
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(e));
        return -1;
    }
    struct stat sb;
    const int stat_ok = fstat(fd, &sb) == 0;
    if (!stat_ok || !S_ISREG(sb.st_mode)) {
        const int isdir = stat_ok && S_ISDIR(sb.st_mode);
        close(fd);
        if (isdir)
            snprintf(err, errlen, "%s: cannot read: %s", path, strerror(EISDIR));
        else
            snprintf(err, errlen, "%s: not a regular file (a FIFO, device or socket): a .npy file is read whole", path);
        return -1;
    }
    FILE *f = pf_blocking(fd) == 0 ? fdopen(fd, "rb") : NULL;
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    const int rc = npy_read_stream(f, path, a, err, errlen);
    fclose(f);
    return rc;
}

int npy_read_stream(FILE *f, const char *path, npy_array *a, char *err, size_t errlen) {
    memset(a, 0, sizeof *a);
    unsigned char pre[10];
    char *hdr = NULL;
    int rc = -1;
    const size_t got = fread(pre, 1, 10, f);
    if (got != 10 && ferror(f)) { /* a directory opens but does not read (EISDIR) */
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        goto out;
    }
    if (got != 10) {
        snprintf(err, errlen, "%s: not a .npy file (%zu bytes, shorter than the format's preamble)", path, got);
        goto out;
    }
    if (memcmp(pre, "\x93NUMPY", 6) != 0) {
        snprintf(err, errlen, "%s: not a .npy file (bad magic)", path);
        goto out;
    }
    size_t hlen;
    int major = pre[6];
    if (major == 1) {
        hlen = (size_t)pre[8] | ((size_t)pre[9] << 8);
    } else if (major == 2 || major == 3) {
        unsigned char more[2];
        if (fread(more, 1, 2, f) != 2) {
            snprintf(err, errlen, "%s: truncated header", path);
            goto out;
        }
        hlen = (size_t)pre[8] | ((size_t)pre[9] << 8) | ((size_t)more[0] << 16) | ((size_t)more[1] << 24);
    } else {
        snprintf(err, errlen, "%s: unsupported .npy format version %d", path, major);
        goto out;
    }
    if (hlen == 0 || hlen > (1u << 20)) {
        snprintf(err, errlen, "%s: implausible header length %zu", path, hlen);
        goto out;
    }
    hdr = malloc(hlen + 1);
    if (!hdr) { /* was reported as a truncated header */
        snprintf(err, errlen, "%s: out of memory (its %zu-byte header)", path, hlen);
        goto out;
    }
    if (fread(hdr, 1, hlen, f) != hlen) {
        snprintf(err, errlen, "%s: truncated header", path);
        goto out;
    }
    hdr[hlen] = 0;
    const char *d = find_key(hdr, "'descr'");
    if (!d || (*d != '\'' && *d != '"')) {
        snprintf(err, errlen, "%s: header has no 'descr'", path);
        goto out;
    }
    char q = *d++;
    size_t n = 0;
    while (d[n] && d[n] != q && n < sizeof a->descr - 1) n++;
    if (d[n] != q) {
        snprintf(err, errlen, "%s: bad 'descr' in header", path);
        goto out;
    }
    memcpy(a->descr, d, n);
    a->descr[n] = 0;
    if (strcmp(a->descr, "|i1") == 0) strcpy(a->descr, "|u1");
    a->elem_size = descr_size(a->descr);
    if (a->elem_size == 0) {
        snprintf(err, errlen, "%s: unsupported dtype '%s' (big-endian, pickled or exotic types are not read)", path,
                 a->descr);
        goto out;
    }
    const char *fo = find_key(hdr, "'fortran_order'");
    if (!fo) {
        snprintf(err, errlen, "%s: header has no 'fortran_order'", path);
        goto out;
    }
    if (strncmp(fo, "False", 5) != 0) {
        snprintf(err, errlen, "%s: Fortran-order arrays are not supported", path);
        goto out;
    }
    const char *sh = find_key(hdr, "'shape'");
    if (!sh || *sh != '(') {
        snprintf(err, errlen, "%s: header has no 'shape' tuple", path);
        goto out;
    }
    sh++;
    a->count = 1;
    a->ndim = 0;
    /* a Python tuple of integers: "()", "(3,)", "(3, 4)", "(3, 4,)"; a separator is one comma */
    for (int need_comma = 0;;) {
        while (*sh == ' ') sh++;
        if (*sh == ')') break;
        if (need_comma) {
            if (*sh != ',') {
                snprintf(err, errlen, "%s: malformed 'shape' (dimensions not separated by a comma)", path);
                goto out;
            }
            sh++;
            while (*sh == ' ') sh++;
            if (*sh == ')') break;
        }
        if (*sh < '0' || *sh > '9') {
            snprintf(err, errlen, "%s: malformed 'shape'", path);
            goto out;
        }
        need_comma = 1;
        if (a->ndim == NPY_MAX_DIMS) {
            snprintf(err, errlen, "%s: more than %d dimensions", path, NPY_MAX_DIMS);
            goto out;
        }
        char *end;
        errno = 0;
        long long v = strtoll(sh, &end, 10);
        if (errno || v < 0 || v > (1LL << 40)) {
            snprintf(err, errlen, "%s: dimension out of range in 'shape'", path);
            goto out;
        }
        a->shape[a->ndim++] = v;
        if (v != 0 && a->count > (SIZE_MAX / 16) / (size_t)v) {
            snprintf(err, errlen, "%s: array too large", path);
            goto out;
        }
        a->count *= (size_t)v;
        sh = end;
    }
    size_t bytes = a->count * a->elem_size;
    long pos = ftell(f);
    if (fseek(f, 0, SEEK_END) != 0) {
        snprintf(err, errlen, "%s: cannot seek", path);
        goto out;
    }
    long endpos = ftell(f);
    if (endpos < 0 || pos < 0 || (size_t)(endpos - pos) < bytes) {
        snprintf(err, errlen, "%s: truncated data: header promises %zu bytes, file has %ld", path, bytes,
                 endpos - pos);
        goto out;
    }
    if ((size_t)(endpos - pos) > bytes) {
        snprintf(err, errlen, "%s: %ld trailing bytes after the array data", path, (long)((size_t)(endpos - pos) - bytes));
        goto out;
    }
    fseek(f, pos, SEEK_SET);
    a->data = malloc(bytes ? bytes : 1);
    if (!a->data) {
        snprintf(err, errlen, "%s: out of memory (%zu bytes)", path, bytes);
        goto out;
    }
    if (fread(a->data, 1, bytes, f) != bytes) {
        snprintf(err, errlen, "%s: read error", path);
        npy_free(a);
        goto out;
    }
    rc = 0;
out:
    free(hdr);
    return rc;
}

int npy_write(const char *path, const char *descr, int ndim, const int64_t *shape, const void *data, char *err,
              size_t errlen) {
    size_t es = descr_size(descr);
    if (!es || ndim < 0 || ndim > NPY_MAX_DIMS) {
        snprintf(err, errlen, "%s: cannot write dtype '%s' with %d dims", path, descr, ndim);
        return -1;
    }
    char dict[512];
    int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
    size_t count = 1;
    for (int i = 0; i < ndim; i++) {
        n += snprintf(dict + n, sizeof dict - (size_t)n, "%lld%s", (long long)shape[i],
                      (ndim == 1 || i + 1 < ndim) ? ", " : "");
        count *= (size_t)shape[i];
    }
    /* numpy writes "(5,)" for 1-D and "(2, 3)" otherwise; trim the trailing space */
    if (ndim == 1) n--;
    n += snprintf(dict + n, sizeof dict - (size_t)n, "), }");
    size_t total = 10 + (size_t)n + 1;
    size_t pad = (64 - total % 64) % 64;
    size_t hlen = (size_t)n + pad + 1;
    size_t tmplen = strlen(path) + 32;
    char *tmp = malloc(tmplen);
    if (!tmp) {
        snprintf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    snprintf(tmp, tmplen, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hlen & 0xff),
                             (unsigned char)(hlen >> 8)};
    int ok = fwrite(pre, 1, 10, f) == 10 && fwrite(dict, 1, (size_t)n, f) == (size_t)n;
    for (size_t i = 0; ok && i < pad; i++) ok = fputc(' ', f) != EOF;
    ok = ok && fputc('\n', f) != EOF;
    ok = ok && (count * es == 0 || fwrite(data, es, count, f) == count);
    ok = (fclose(f) == 0) && ok;
    if (!ok || pf_replace(tmp, path) != 0) {
        snprintf(err, errlen, "%s: write failed: %s", path, strerror(errno));
        unlink(tmp);
        free(tmp);
        return -1;
    }
    free(tmp);
    return 0;
}
