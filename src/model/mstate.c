/* mstate.c: prompt caches, a session's state in a file (model.h: mdl_session_save / mdl_session_load).
 *
 * Layout (little-endian, as the machines this builds for store it):
 *   char     magic[8]          "INFLLMPC"
 *   uint32   version           1
 *   uint32   kv_dtype          infllm_dtype of the caches
 *   uint64   model             model_fingerprint(): configuration and samples of every weight
 *   int32    n_layer, n_head_kv, head_dim
 *   int32    mode, block_size, kernel_size, kernel_stride, init_blocks, local_blocks, topk, dense_len, exact_lse,
 *            float_act (the products' activations: 1 float, INFLLM_FLOAT_ACT=1; 0 int8)
 *   float32  softmax_scale
 *   float32  rope_ff[head_dim / 2]   the RoPE frequency factors the session's context picked
 *   int64    n_tokens
 *   int32    tokens[n_tokens]
 *   per layer, per token: its K row [n_head_kv][head_dim], then its V row, in kv_dtype (so that a load streams
 *   both into the cache's append a chunk at a time)
 * Every field of the header but n_tokens decides the cached K / V (a layer's K / V depend on the attention output of
 * the layers before it, so on the attention parameters too); a load compares them all with the session's. */
#include "model.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf.h"
#include "mcommon.h"
#include "portable.h"
#include "quant.h"

static const char MAGIC[8] = {'I', 'N', 'F', 'L', 'L', 'M', 'P', 'C'};
enum { STATE_VERSION = 1, N_PARAMS = 10 };

typedef struct {
    uint32_t version, kv_dtype;
    uint64_t model;
    int32_t n_layer, n_head_kv, head_dim;
    int32_t params[N_PARAMS];
    float softmax_scale;
} state_head;

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ULL;
    return h;
}

/* up to 512 bytes from the start and 512 from the end of a weight's data, with its type and shape */
static uint64_t fnv_weight(uint64_t h, const mdl_weight *w) {
    h = fnv(h, &w->type, sizeof w->type);
    h = fnv(h, &w->rows, sizeof w->rows);
    h = fnv(h, &w->cols, sizeof w->cols);
    if (!w->data) return h;
    const size_t n = ggml_row_size(w->type, w->cols) * (size_t)w->rows, k = n < 512 ? n : 512;
    h = fnv(h, w->data, k);
    return fnv(h, (const char *)w->data + (n - k), k);
}

static uint64_t fnv_vec(uint64_t h, const float *v, int64_t n) {
    return v ? fnv(h, v, sizeof(float) * (size_t)n) : fnv(h, "-", 1);
}

/* the model's identity: its configuration, every norm vector and bias whole, samples of every matrix */
static uint64_t model_fingerprint(const mdl_model *m) {
    const mdl_config *c = &m->cfg;
    uint64_t h = 1469598103934665603ULL;
    h = fnv(h, c->arch, strlen(c->arch));
    const int32_t ints[] = {c->n_vocab, c->n_embd, c->n_layer, c->n_head, c->n_head_kv, c->head_dim, c->n_ff,
                            c->rope_interleaved};
    const float floats[] = {c->rope_theta, c->rms_eps, c->embed_scale, c->residual_scale, c->logit_scale,
                            c->rope_freq_scale, c->rope_attn_factor};
    h = fnv(h, ints, sizeof ints);
    h = fnv(h, floats, sizeof floats);
    h = fnv_weight(h, &m->tok_embd);
    h = fnv_weight(h, &m->output);
    h = fnv_vec(h, m->output_norm, c->n_embd);
    const int64_t Q = (int64_t)c->n_head * c->head_dim, KV = (int64_t)c->n_head_kv * c->head_dim;
    for (int l = 0; l < c->n_layer; l++) {
        const mdl_layer *L = &m->layers[l];
        const mdl_weight *w[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->wgate, &L->wup, &L->wdown};
        for (size_t i = 0; i < sizeof w / sizeof *w; i++) h = fnv_weight(h, w[i]);
        h = fnv_vec(h, L->attn_norm, c->n_embd);
        h = fnv_vec(h, L->ffn_norm, c->n_embd);
        h = fnv_vec(h, L->bq, Q);
        h = fnv_vec(h, L->bk, KV);
        h = fnv_vec(h, L->bv, KV);
        h = fnv_vec(h, L->q_norm, c->head_dim);
        h = fnv_vec(h, L->k_norm, c->head_dim);
        if (L->window) h = fnv(h, &L->window, sizeof L->window); /* (files of window-less models stay valid) */
    }
    return h;
}

static state_head session_head(const mdl_session *s) {
    const mdl_config *c = &s->m->cfg;
    const infllm_params *p = &s->p;
    state_head h = {STATE_VERSION,
                    (uint32_t)s->kv_dtype,
                    model_fingerprint(s->m),
                    c->n_layer,
                    c->n_head_kv,
                    c->head_dim,
                    {(int32_t)p->mode, p->block_size, p->kernel_size, p->kernel_stride, p->init_blocks, p->local_blocks,
                     p->topk, p->dense_len, p->exact_lse, quant_float_activations()},
                    p->softmax_scale};
    return h;
}

static int put(FILE *f, const void *p, size_t n) { return n == 0 || fwrite(p, 1, n, f) == n; }

int mdl_session_save(const mdl_session *s, const int32_t *tokens, const char *path) {
    const mdl_config *c = &s->m->cfg;
    const state_head h = session_head(s);
    const int64_t n = s->pos;
    const size_t row = (size_t)c->n_head_kv * (size_t)c->head_dim * infllm_dtype_size(s->kv_dtype);
    const size_t tmplen = strlen(path) + 32;
    char *tmp = malloc(tmplen);
    if (!tmp) return mdl_fail("prompt cache: out of memory");
    snprintf(tmp, tmplen, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        const int e = errno;
        free(tmp);
        return mdl_fail("prompt cache: cannot create %s.tmp.*: %s", path, strerror(e));
    }
    int ok = put(f, MAGIC, sizeof MAGIC) && put(f, &h.version, 4) && put(f, &h.kv_dtype, 4) && put(f, &h.model, 8) &&
             put(f, &h.n_layer, 4) && put(f, &h.n_head_kv, 4) && put(f, &h.head_dim, 4) &&
             put(f, h.params, sizeof h.params) && put(f, &h.softmax_scale, 4) &&
             put(f, s->rope_ff, sizeof(float) * (size_t)(c->head_dim / 2)) && put(f, &n, 8) &&
             put(f, tokens, sizeof(int32_t) * (size_t)n);
    for (int l = 0; ok && l < c->n_layer; l++) {
        const char *k = infllm_cache_keys(s->caches[l]), *v = infllm_cache_values(s->caches[l]);
        for (int64_t t = 0; ok && t < n; t++) ok = put(f, k + row * (size_t)t, row) && put(f, v + row * (size_t)t, row);
    }
    const int e = errno;
    ok = (fclose(f) == 0) && ok;
    if (!ok || pf_replace(tmp, path) != 0) {
        const int e2 = ok ? errno : e;
        unlink(tmp);
        free(tmp);
        return mdl_fail("prompt cache: writing %s failed: %s", path, strerror(e2 ? e2 : EIO));
    }
    free(tmp);
    return 0;
}

/* the file opened for reading if it is a regular one (a FIFO would block, a folder has no data); NULL after mdl_fail */
static FILE *open_regular(const char *path, int64_t *size) {
    int not_regular;
    long long sz = 0;
    FILE *f = pf_fopen_regular(path, &not_regular, &sz);
    if (!f) {
        if (not_regular) mdl_fail("prompt cache %s: not a regular file", path);
        else mdl_fail("prompt cache %s: %s", path, strerror(errno));
        return NULL;
    }
    *size = (int64_t)sz;
    return f;
}

static int get(FILE *f, void *p, size_t n) { return n == 0 || fread(p, 1, n, f) == n; }

int mdl_state_file_kind(const char *path) {
    struct stat sb;
    if (stat(path, &sb) != 0) return errno == ENOENT ? 0 : mdl_fail("prompt cache %s: %s", path, strerror(errno));
    int64_t size;
    FILE *f = open_regular(path, &size);
    if (!f) return -1;
    char magic[8];
    const int ok = get(f, magic, sizeof magic) && !memcmp(magic, MAGIC, sizeof magic);
    fclose(f);
    if (!ok) mdl_fail("%s is not an infllm prompt cache", path);
    return ok ? 1 : -1;
}

int mdl_session_load(mdl_session *s, const char *path, const int32_t *tokens, int64_t n, int64_t *used,
                     int64_t *held) {
    const mdl_config *c = &s->m->cfg;
    *used = *held = 0;
    if (s->pos != 0) return mdl_fail("prompt cache: the session already holds %lld tokens", (long long)s->pos);
    int64_t size;
    FILE *f = open_regular(path, &size);
    if (!f) return -1;
    const state_head want = session_head(s);
    state_head h;
    char magic[8];
    const int hd2 = c->head_dim / 2;
    float *ff = malloc(sizeof(float) * (size_t)hd2);
    int32_t *toks = NULL;
    char *buf = NULL;
    int rc = -1;
    int64_t nt = 0;
    if (!ff) {
        mdl_fail("prompt cache: out of memory");
        goto out;
    }
    if (!get(f, magic, 8) || memcmp(magic, MAGIC, 8)) {
        mdl_fail("prompt cache %s: not an infllm prompt cache", path);
        goto out;
    }
    if (!get(f, &h.version, 4) || !get(f, &h.kv_dtype, 4) || !get(f, &h.model, 8) || !get(f, &h.n_layer, 4) ||
        !get(f, &h.n_head_kv, 4) || !get(f, &h.head_dim, 4) || !get(f, h.params, sizeof h.params) ||
        !get(f, &h.softmax_scale, 4)) {
        mdl_fail("prompt cache %s: truncated header", path);
        goto out;
    }
    if (h.version != STATE_VERSION) {
        mdl_fail("prompt cache %s: version %u (this build reads %d)", path, h.version, STATE_VERSION);
        goto out;
    }
    if (h.model != want.model || h.n_layer != want.n_layer || h.n_head_kv != want.n_head_kv ||
        h.head_dim != want.head_dim) {
        mdl_fail("prompt cache %s was made with another model", path);
        goto out;
    }
    if (h.kv_dtype != want.kv_dtype) {
        mdl_fail("prompt cache %s holds a %s KV cache, this session's is %s (--kv-type)", path,
                 h.kv_dtype <= INFLLM_DTYPE_BF16 ? infllm_dtype_name((infllm_dtype)h.kv_dtype) : "unknown",
                 infllm_dtype_name(s->kv_dtype));
        goto out;
    }
    if (memcmp(h.params, want.params, sizeof h.params) ||
        memcmp(&h.softmax_scale, &want.softmax_scale, sizeof h.softmax_scale)) {
        mdl_fail("prompt cache %s was made with other attention parameters (mode, dense_len, top-k, block / kernel "
                 "geometry, forced blocks, exact LSE or softmax scale) or activations (INFLLM_FLOAT_ACT): its K / V "
                 "would not be this run's", path);
        goto out;
    }
    if (!get(f, ff, sizeof(float) * (size_t)hd2) || !get(f, &nt, 8)) {
        mdl_fail("prompt cache %s: truncated header", path);
        goto out;
    }
    if (memcmp(ff, s->rope_ff, sizeof(float) * (size_t)hd2)) {
        mdl_fail("prompt cache %s was made with other RoPE factors (LongRoPE takes its long or short factors by the "
                 "context: give the --ctx it was made with)", path);
        goto out;
    }
    const size_t row = (size_t)c->n_head_kv * (size_t)c->head_dim * infllm_dtype_size(s->kv_dtype);
    const int64_t head_bytes = (int64_t)ftell(f); /* where the header just read ends */
    /* the size the header announces, before anything is allocated by it */
    if (nt < 0 || nt > (int64_t)1 << 31 ||
        size != head_bytes + 4 * nt + 2 * (int64_t)c->n_layer * nt * (int64_t)row) {
        mdl_fail("prompt cache %s: %lld bytes, not what its header describes (%lld tokens)", path, (long long)size,
                 (long long)nt);
        goto out;
    }
    toks = malloc(sizeof(int32_t) * (size_t)(nt ? nt : 1));
    if (!toks || !get(f, toks, sizeof(int32_t) * (size_t)nt)) {
        mdl_fail(toks ? "prompt cache %s: truncated" : "prompt cache %s: out of memory", path);
        goto out;
    }
    /* the longest common prefix, leaving the prompt's last token to the caller's forward (its logits) */
    int64_t u = 0;
    const int64_t lim = n - 1 < nt ? n - 1 : nt;
    while (u < lim && u < s->ctx && toks[u] == tokens[u]) u++;
    /* per layer: the u cached tokens' rows appended a chunk at a time, the rest read past */
    enum { CHUNK = 1024 };
    buf = malloc(4 * row * CHUNK);
    if (!buf) {
        mdl_fail("prompt cache: out of memory");
        goto out;
    }
    char *kb = buf + 2 * row * CHUNK, *vb = kb + row * CHUNK;
    for (int l = 0; u > 0 && l < c->n_layer; l++) {
        for (int64_t r = 0; r < nt; r += CHUNK) {
            const int64_t m = nt - r < CHUNK ? nt - r : CHUNK;
            if (!get(f, buf, 2 * row * (size_t)m)) {
                mdl_fail("prompt cache %s: truncated (layer %d)", path, l);
                goto out;
            }
            const int64_t take = u - r < m ? (u - r > 0 ? u - r : 0) : m;
            for (int64_t t = 0; t < take; t++) {
                memcpy(kb + row * (size_t)t, buf + 2 * row * (size_t)t, row);
                memcpy(vb + row * (size_t)t, buf + 2 * row * (size_t)t + row, row);
            }
            if (take > 0 && mdl_session_put_kv(s, l, r, kb, vb, take)) goto out;
        }
    }
    s->pos = u;
    *used = u;
    *held = nt;
    rc = 0;
out:
    free(buf);
    free(toks);
    free(ff);
    fclose(f);
    if (rc) { /* nothing half-loaded stays: the caches back to empty */
        for (int l = 0; l < c->n_layer; l++) infllm_cache_truncate(s->caches[l], 0);
        s->pos = 0;
    }
    return rc;
}
