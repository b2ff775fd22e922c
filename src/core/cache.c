/*
 * cache.c: the decode cache of one sequence: K/V plus the c1/c2 compressed keys, updated
 * incrementally as tokens arrive (SPEC B §8, A.7), so that a decode step or a prefill chunk
 * costs no recompression of the prefix.
 *
 * CUDA backend: the same bookkeeping on the host (length, n1, n2: no call reads device memory back)
 * and the storage on the device (src/cuda/cuda_cache.cu): an append is one kernel on the stream
 * given at creation (copy + the kernels that complete), an attend runs the selection on the stored
 * c1/c2 and stage 2, so a decode step needs no host synchronisation and can be graph-captured.
 */
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "internal.h"

struct infllm_cache {
    infllm_dtype dtype;
    infllm_backend backend;
    int32_t Hkv, D;
    int32_t B, l1, s1, l2, s2;     /* fixed at creation: the stored kernels depend on them */
    int64_t capacity;
    int64_t length;
    int64_t n1, n2;                /* complete kernels of the current length */
    void *k;                       /* [capacity, Hkv, D]; device memory on the CUDA backend */
    void *v;                       /* [capacity, Hkv, D]; likewise */
    void *c1;                      /* [windows(capacity, l1, s1), Hkv, D]; likewise */
    void *c2;                      /* [windows(capacity, l2, s2), Hkv, D]; likewise */
    void *stream;                  /* CUDA: the stream appends run on (p->cuda_stream at creation) */
    cpu_kv_tiles tiles;            /* CPU backend: K/V packed for the kernels as tokens arrive */
    int has_tiles;
    size_t bytes;
};

infllm_status infllm_cache_create(const infllm_params *p, infllm_dtype dtype, int32_t num_kv_heads,
                                  int32_t head_dim, int64_t capacity, infllm_cache **out) {
    if (!out) return infllm_set_error(INFLLM_ERR_NULL_ARG, "cache output pointer is NULL");
    *out = NULL;
    if (!p) return infllm_set_error(INFLLM_ERR_NULL_ARG, "params is NULL");
    if (capacity < 1 || capacity > INT32_MAX)
        return infllm_set_error(INFLLM_ERR_SHAPE, "cache capacity must be in 1..2^31-1 (got %lld)",
                                (long long)capacity);
    /* K, V and their tiles (f32 at most): refuse sizes whose byte counts would not fit a size_t (before the layout's
     * own address-space check, which would call them a shape error) */
    double need = (double)capacity * (double)num_kv_heads * (double)head_dim * (2.0 * 4.0 + 2.0 * 4.0);
    if (num_kv_heads > 0 && head_dim > 0 && need > (double)(SIZE_MAX / 4))
        return infllm_set_error(INFLLM_ERR_NOMEM, "cache of %lld tokens x %d KV heads x %d dims is too large",
                                (long long)capacity, num_kv_heads, head_dim);
    /* validate everything else through the ordinary boundary (one query, capacity keys) */
    infllm_attn_params ap;
    infllm_seq *seqs = NULL;
    infllm_status st = infllm_build_single_seq_params(p, dtype, num_kv_heads, num_kv_heads, head_dim, 1,
                                                      capacity, &ap, &seqs);
    free(seqs);
    if (st) return st;
    if (p->backend == INFLLM_BACKEND_CUDA) {
#ifdef INFLLM_HAVE_CUDA
        if ((st = cuda_cache_check(dtype, head_dim))) return st;
#else
        return infllm_set_error(INFLLM_ERR_UNSUPPORTED, "CUDA backend: infllm was built without CUDA");
#endif
    }
    infllm_cache *c = calloc(1, sizeof *c);
    if (!c) return infllm_set_error(INFLLM_ERR_NOMEM, "out of memory (cache)");
    c->dtype = dtype;
    c->backend = p->backend;
    c->Hkv = num_kv_heads;
    c->D = head_dim;
    c->B = ap.B;
    c->l1 = ap.l1;
    c->s1 = ap.s1;
    c->l2 = ap.l2;
    c->s2 = ap.s2;
    c->capacity = capacity;
    c->stream = p->cuda_stream;
    size_t row = (size_t)num_kv_heads * (size_t)head_dim * infllm_dtype_size(dtype);
    size_t kv_bytes = (size_t)capacity * row;
    size_t c1_bytes = (size_t)infllm_windows(capacity, c->l1, c->s1) * row;
    size_t c2_bytes = (size_t)infllm_windows(capacity, c->l2, c->s2) * row;
    if (c->backend == INFLLM_BACKEND_CUDA) {
#ifdef INFLLM_HAVE_CUDA
        if ((st = cuda_cache_malloc(&c->k, kv_bytes)) || (st = cuda_cache_malloc(&c->v, kv_bytes)) ||
            (st = cuda_cache_malloc(&c->c1, c1_bytes)) || (st = cuda_cache_malloc(&c->c2, c2_bytes))) {
            infllm_cache_free(c);
            return st;
        }
        c->bytes = sizeof *c + 2 * kv_bytes + c1_bytes + c2_bytes;
        *out = c;
        return INFLLM_OK;
#endif
    }
    c->k = malloc(kv_bytes);
    c->v = malloc(kv_bytes);
    c->c1 = malloc(c1_bytes ? c1_bytes : 1);
    c->c2 = malloc(c2_bytes ? c2_bytes : 1);
    if (!c->k || !c->v || !c->c1 || !c->c2) {
        infllm_cache_free(c);
        return infllm_set_error(INFLLM_ERR_NOMEM, "out of memory: cache of %lld tokens needs %zu bytes",
                                (long long)capacity, 2 * kv_bytes + c1_bytes + c2_bytes);
    }
    c->bytes = sizeof *c + 2 * kv_bytes + c1_bytes + c2_bytes;
    if (c->backend == INFLLM_BACKEND_CPU) {
        if ((st = cpu_kv_tiles_init(&c->tiles, dtype, num_kv_heads, head_dim, capacity,
                                    infllm_windows(capacity, c->l1, c->s1), infllm_windows(capacity, c->l2, c->s2)))) {
            infllm_cache_free(c);
            return st;
        }
        c->has_tiles = 1;
        c->bytes += c->tiles.bytes;
    }
    *out = c;
    return INFLLM_OK;
}

void infllm_cache_free(infllm_cache *c) {
    if (!c) return;
#ifdef INFLLM_HAVE_CUDA
    if (c->backend == INFLLM_BACKEND_CUDA) {
        cuda_cache_mfree(c->k);
        cuda_cache_mfree(c->v);
        cuda_cache_mfree(c->c1);
        cuda_cache_mfree(c->c2);
        free(c);
        return;
    }
#endif
    free(c->k);
    free(c->v);
    free(c->c1);
    free(c->c2);
    cpu_kv_tiles_free(&c->tiles);
    free(c);
}

/* Recomputes n1/n2 for the current length, building every kernel that completed in
 * (old_len, length]. */
static void update_kernels(infllm_cache *c, int64_t old_len) {
    int64_t row = (int64_t)c->Hkv * c->D;
    int32_t n1_old = infllm_windows(old_len, c->l1, c->s1);
    int32_t n2_old = infllm_windows(old_len, c->l2, c->s2);
    int32_t n1_new = infllm_windows(c->length, c->l1, c->s1);
    int32_t n2_new = infllm_windows(c->length, c->l2, c->s2);
    for (int32_t j = n1_old; j < n1_new; j++)
        cpu_mean_window(c->k, c->dtype, row, (int64_t)j * c->s1, c->l1, c->c1, j);
    for (int32_t j = n2_old; j < n2_new; j++)
        cpu_mean_window(c->k, c->dtype, row, (int64_t)j * c->s2, c->l2, c->c2, j);
    c->n1 = n1_new;
    c->n2 = n2_new;
}

infllm_status infllm_cache_append(infllm_cache *c, const void *k, const void *v, int64_t n) {
    if (!c) return infllm_set_error(INFLLM_ERR_NULL_ARG, "cache is NULL");
    if (n < 0) return infllm_set_error(INFLLM_ERR_SHAPE, "cannot append %lld tokens", (long long)n);
    if (n == 0) return INFLLM_OK;
    if (!k || !v) return infllm_set_error(INFLLM_ERR_NULL_ARG, "%s is NULL", k ? "v" : "k");
    if (n > c->capacity - c->length) /* no overflow for huge n */
        return infllm_set_error(INFLLM_ERR_CAPACITY,
                                "cache capacity exceeded: %lld tokens + %lld new > capacity %lld",
                                (long long)c->length, (long long)n, (long long)c->capacity);
#ifdef INFLLM_HAVE_CUDA
    if (c->backend == INFLLM_BACKEND_CUDA) {
        infllm_status st = cuda_cache_append(c->dtype, c->Hkv, c->D, c->l1, c->s1, c->k, c->v, c->c1, c->c2, k, v,
                                             c->length, n, c->stream);
        if (st) return st;
        c->length += n;
        c->n1 = infllm_windows(c->length, c->l1, c->s1);
        c->n2 = infllm_windows(c->length, c->l2, c->s2);
        return INFLLM_OK;
    }
#endif
    size_t row = (size_t)c->Hkv * (size_t)c->D * infllm_dtype_size(c->dtype);
    memcpy((char *)c->k + (size_t)c->length * row, k, (size_t)n * row);
    memcpy((char *)c->v + (size_t)c->length * row, v, (size_t)n * row);
    int64_t old = c->length;
    c->length += n;
    update_kernels(c, old);
    if (c->has_tiles) cpu_kv_tiles_set_rows(&c->tiles, c->k, c->v, c->c1, c->c2, c->length, c->n1, c->n2);
    return INFLLM_OK;
}

infllm_status infllm_cache_truncate(infllm_cache *c, int64_t new_length) {
    if (!c) return infllm_set_error(INFLLM_ERR_NULL_ARG, "cache is NULL");
    if (new_length < 0 || new_length > c->length)
        return infllm_set_error(INFLLM_ERR_SHAPE, "truncate to %lld: must be in 0..%lld", (long long)new_length,
                                (long long)c->length);
    c->length = new_length;
    c->n1 = infllm_windows(new_length, c->l1, c->s1);
    c->n2 = infllm_windows(new_length, c->l2, c->s2);
    if (c->has_tiles) cpu_kv_tiles_set_rows(&c->tiles, c->k, c->v, c->c1, c->c2, c->length, c->n1, c->n2);
    return INFLLM_OK;
}

/* The stored c1/c2 were built with the cache's block and kernel geometry and live on its backend:
 * an attend (or its workspace query) with other values cannot use them. */
static infllm_status check_params_match(const infllm_cache *c, const infllm_params *p, const char *what) {
    if (p->block_size != c->B || p->kernel_size != c->l1 || p->kernel_stride != c->s1)
        return infllm_set_error(INFLLM_ERR_PARAM,
                                "cache was created with block_size %d, kernel_size %d, kernel_stride %d; "
                                "%s got %d, %d, %d",
                                c->B, c->l1, c->s1, what, p->block_size, p->kernel_size, p->kernel_stride);
    if (p->backend != c->backend) return infllm_set_error(INFLLM_ERR_PARAM, "cache was created for another backend");
    return INFLLM_OK;
}

infllm_status infllm_cache_attend(infllm_cache *c, const infllm_params *p, const void *q, int64_t n,
                                  int32_t num_q_heads, void *out, float *lse) {
    if (!c) return infllm_set_error(INFLLM_ERR_NULL_ARG, "cache is NULL");
    if (!p) return infllm_set_error(INFLLM_ERR_NULL_ARG, "params is NULL");
    if (n < 0 || n > c->length)
        return infllm_set_error(INFLLM_ERR_SHAPE,
                                "%lld queries but the cache holds %lld tokens: append the queries' K/V first",
                                (long long)n, (long long)c->length);
    infllm_status pst = check_params_match(c, p, "attend");
    if (pst) return pst;
    infllm_attn_params ap;
    infllm_seq *seqs = NULL;
    /* params and heads are validated for n == 0 too (nothing to attend is no licence for a bad call) */
    infllm_status st =
        infllm_build_single_seq_params(p, c->dtype, num_q_heads, c->Hkv, c->D, n, c->length, &ap, &seqs);
    if (st) return st;
    if (n == 0 || !q || !out) {
        free(seqs);
        return n == 0 ? INFLLM_OK : infllm_set_error(INFLLM_ERR_NULL_ARG, "%s is NULL", q ? "out" : "q");
    }
    st = infllm_attention_with_compressed(&ap, c->backend, q, c->k, c->v, c->c1, c->c2,
                                         c->has_tiles ? &c->tiles : NULL, out, lse);
    free(seqs);
    return st;
}

infllm_status infllm_cache_workspace_size(const infllm_cache *c, const infllm_params *p, int64_t n,
                                          int32_t num_q_heads, size_t *bytes) {
    if (!bytes) return infllm_set_error(INFLLM_ERR_NULL_ARG, "bytes is NULL");
    *bytes = 0;
    if (!c) return infllm_set_error(INFLLM_ERR_NULL_ARG, "cache is NULL");
    if (!p) return infllm_set_error(INFLLM_ERR_NULL_ARG, "params is NULL");
    if (n < 1 || n > c->capacity)
        return infllm_set_error(INFLLM_ERR_SHAPE, "%lld queries: must be in 1..capacity (%lld)", (long long)n,
                                (long long)c->capacity);
    infllm_status pst = check_params_match(c, p, "workspace_size");
    if (pst) return pst;
    infllm_attn_params ap;
    infllm_seq *seqs = NULL;
    /* at full capacity: the size then serves every length the cache can reach */
    infllm_status st =
        infllm_build_single_seq_params(p, c->dtype, num_q_heads, c->Hkv, c->D, n, c->capacity, &ap, &seqs);
    free(seqs);
    if (st) return st;
#ifdef INFLLM_HAVE_CUDA
    if (c->backend == INFLLM_BACKEND_CUDA) return cuda_cache_workspace_size(&ap, bytes);
#endif
    return INFLLM_OK;
}

int64_t infllm_cache_length(const infllm_cache *c) { return c ? c->length : 0; }
int64_t infllm_cache_capacity(const infllm_cache *c) { return c ? c->capacity : 0; }
size_t infllm_cache_memory_bytes(const infllm_cache *c) { return c ? c->bytes : 0; }
const void *infllm_cache_keys(const infllm_cache *c) { return c ? c->k : NULL; }
const void *infllm_cache_values(const infllm_cache *c) { return c ? c->v : NULL; }
const void *infllm_cache_c1(const infllm_cache *c, int64_t *n1) {
    if (n1) *n1 = c ? c->n1 : 0;
    return c ? c->c1 : NULL;
}
const void *infllm_cache_c2(const infllm_cache *c, int64_t *n2) {
    if (n2) *n2 = c ? c->n2 : 0;
    return c ? c->c2 : NULL;
}
