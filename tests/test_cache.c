/*
 * test_cache.c: the decode cache (SPEC B §8, A.7) on the REF and CPU backends.
 *  - decode: appending tokens one by one and attending each (n = 1) gives exactly (bitwise)
 *    infllm_attention on the decode layout (lq = 1, lk = t + 1), and the same result as row t
 *    of a one-shot prefill (REF: bitwise; CPU: within one dtype ulp, f32 near bitwise);
 *  - chunked prefill (chunks of odd sizes) equals the one-shot prefill;
 *  - the AUTO dense/sparse switch (dense_len) mid-generation;
 *  - c1/c2 of the cache equal infllm_compress_keys bit for bit (CPU; REF within one ulp);
 *  - capacity exceeded -> INFLLM_ERR_CAPACITY with nothing appended; truncate then append
 *    rebuilds c1/c2; the K/V views hold what was appended; memory_bytes is plausible;
 *    cache_free(NULL) is a no-op;
 *  - NaN in a key: decode steps through the CPU cache NaN in exactly REF's outputs (test_nan);
 *  - random configurations (random_cfg) with random schedules (test_schedule: appends, attends with drawn threads,
 *    mode and dense_len, truncations, exact capacities): every attend bitwise equal to infllm_attention and within
 *    2 x naive + floor of the float64 REF backend (check_vs_ref).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "harness.h"
#include "infllm.h"
#include "ref_compare.h"

typedef struct cfg {
    const char *name;
    infllm_dtype dt;
    int32_t Hq, Hkv, D, L;
    int32_t B, l1, s1, init, local, topk, exact;
    float scale; /* softmax_scale (0: 1/sqrt(D)) */
} cfg;

typedef struct data {
    const cfg *c;
    size_t es;
    int64_t rq, rk; /* elements per token row of q / of k, v */
    void *q, *k, *v;
} data;

static const char *bname(infllm_backend b) { return b == INFLLM_BACKEND_REF ? "REF" : "CPU"; }

static void make_data(data *d, const cfg *c, unsigned long long seed) {
    d->c = c;
    d->es = infllm_dtype_size(c->dt);
    d->rq = (int64_t)c->Hq * c->D;
    d->rk = (int64_t)c->Hkv * c->D;
    d->q = malloc((size_t)(c->L * d->rq) * d->es);
    d->k = malloc((size_t)(c->L * d->rk) * d->es);
    d->v = malloc((size_t)(c->L * d->rk) * d->es);
    double drift = 0;
    for (int64_t i = 0; i < c->L * d->rq; i++) infllm_store_f32(d->q, c->dt, i, (float)(h_normal(&seed) + 0.5));
    for (int64_t t = 0; t < c->L; t++) {
        if (t % 16 == 0) drift = h_normal(&seed);
        for (int64_t e = 0; e < d->rk; e++) {
            infllm_store_f32(d->k, c->dt, t * d->rk + e, (float)(h_normal(&seed) + drift));
            infllm_store_f32(d->v, c->dt, t * d->rk + e, (float)h_normal(&seed));
        }
    }
}
static void free_data(data *d) {
    free(d->q);
    free(d->k);
    free(d->v);
}

/* threads: 1 for the per-token calls (a parallel region per decode step is slow on a busy
 * machine), 2 for the chunked prefill so the threaded path is covered too */
static infllm_params params_of(const cfg *c, infllm_backend be, int threads) {
    infllm_params p;
    infllm_params_default(&p);
    p.backend = be;
    p.block_size = c->B;
    p.kernel_size = c->l1;
    p.kernel_stride = c->s1;
    p.init_blocks = c->init;
    p.local_blocks = c->local;
    p.topk = c->topk;
    p.exact_lse = c->exact;
    p.softmax_scale = c->scale;
    p.mode = INFLLM_MODE_SPARSE;
    p.num_threads = threads;
    return p;
}

static infllm_layout layout_of(const cfg *c, int64_t lq, int64_t lk) {
    infllm_layout l;
    memset(&l, 0, sizeof l);
    l.dtype = c->dt;
    l.num_seqs = 1;
    l.total_q = lq;
    l.total_k = lk;
    l.num_q_heads = c->Hq;
    l.num_kv_heads = c->Hkv;
    l.head_dim = c->D;
    return l;
}

static double rel_tol(infllm_dtype dt) {
    return dt == INFLLM_DTYPE_BF16 ? 1.0 / 128 : dt == INFLLM_DTYPE_F16 ? 1.0 / 1024 : 1e-5;
}

/* n elements of a vs b (dtype): bitwise when exact, else within one dtype ulp (f32: 1e-5) */
static int64_t count_diff(const void *a, const void *b, infllm_dtype dt, int64_t n, int exact, double *worst) {
    int64_t bad = 0;
    double amax = 0;
    for (int64_t i = 0; i < n; i++) amax = fmax(amax, fabs(infllm_load_f32(b, dt, i)));
    *worst = 0;
    for (int64_t i = 0; i < n; i++) {
        float x = infllm_load_f32(a, dt, i), y = infllm_load_f32(b, dt, i);
        double dd = fabs((double)x - y);
        if (dd > *worst || isnan(x)) *worst = isnan(x) ? INFINITY : dd;
        if (exact) {
            if (memcmp((const char *)a + (size_t)i * infllm_dtype_size(dt), (const char *)b + (size_t)i * infllm_dtype_size(dt),
                       infllm_dtype_size(dt)) != 0)
                bad++;
        } else if (!(dd <= rel_tol(dt) * fmax(fabs(x), fabs(y)) + 1e-6 * amax)) {
            bad++;
        }
    }
    return bad;
}
static int64_t count_diff_f(const float *a, const float *b, int64_t n, int exact, double *worst) {
    int64_t bad = 0;
    *worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double dd = fabs((double)a[i] - b[i]);
        if (a[i] == b[i]) dd = 0;
        if (!(dd <= *worst)) *worst = dd;
        if (exact ? memcmp(&a[i], &b[i], 4) != 0 : !(dd <= 1e-5 * fabs(b[i]) + 1e-5)) bad++;
    }
    return bad;
}

/* c1/c2 of the cache vs infllm_compress_keys on the first `len` keys */
static void check_kernels(const cfg *c, infllm_backend be, infllm_cache *cache, const void *k, int64_t len,
                          const char *when) {
    infllm_params p = params_of(c, be, 1);
    infllm_layout l = layout_of(c, len, len);
    infllm_sizes sz;
    if (len == 0) return;
    if (infllm_get_sizes(&p, &l, &sz) != INFLLM_OK) return;
    size_t es = infllm_dtype_size(c->dt);
    int64_t rk = (int64_t)c->Hkv * c->D;
    void *c1 = malloc((size_t)(sz.total_n1 * rk + 1) * es), *c2 = malloc((size_t)(sz.total_n2 * rk + 1) * es);
    infllm_status st = infllm_compress_keys(&p, &l, k, c1, c2, NULL, NULL);
    CHECK(st == INFLLM_OK, "[%s/%s] compress: %s", c->name, bname(be), infllm_last_error());
    if (st == INFLLM_OK) {
        int64_t n1 = -1, n2 = -1;
        const void *cc1 = infllm_cache_c1(cache, &n1), *cc2 = infllm_cache_c2(cache, &n2);
        CHECK(n1 == sz.total_n1 && n2 == sz.total_n2, "[%s/%s] %s: cache holds %lld/%lld kernels, want %lld/%lld",
              c->name, bname(be), when, (long long)n1, (long long)n2, (long long)sz.total_n1, (long long)sz.total_n2);
        if (n1 == sz.total_n1 && n2 == sz.total_n2) {
            /* the cache pools like the CPU path (f32 sum in index order): bitwise vs the CPU; the
             * REF's float64 mean may differ by one ulp */
            double w;
            int exact = be == INFLLM_BACKEND_CPU;
            int64_t b1 = n1 ? count_diff(cc1, c1, c->dt, n1 * rk, exact, &w) : 0;
            int64_t b2 = n2 ? count_diff(cc2, c2, c->dt, n2 * rk, exact, &w) : 0;
            CHECK(b1 == 0 && b2 == 0, "[%s/%s] %s: cache c1/c2 differ from compress_keys in %lld/%lld elements",
                  c->name, bname(be), when, (long long)b1, (long long)b2);
        }
    }
    free(c1);
    free(c2);
}

/* A CPU cache long enough that the selection chooses (40 blocks, 6 a row), so that the packed compressed keys
 * (cpu_kv_tiles' C1 / C2, session 59) decide which blocks a decode step attends: decode steps on 2 threads against
 * the one-shot infllm_attention of the whole sequence, bitwise; then the cache truncated by 700 tokens, other keys
 * appended in chunks (the tiles must follow the truncation and repack), and the last query again against the one-shot
 * call on the new sequence. (The configurations above are too short for the choice to depend on the c1 scores: a
 * cache whose C1 tiles stayed zero passed them.) */
static void test_long_decode(infllm_dtype dt) {
    const cfg c = {"long-decode", dt, 8, 2, 64, 2600, 64, 32, 16, 1, 2, 4, 0, 0.0f};
    data d, d2;
    make_data(&d, &c, 901);
    make_data(&d2, &c, 902);
    /* the keys appended after the truncation score far apart (3x), so that their blocks win slots the zeros or the
     * old keys of a stale pack would not */
    for (int64_t i = 0; i < c.L * d2.rk; i++) infllm_store_f32(d2.k, dt, i, 3.0f * infllm_load_f32(d2.k, dt, i));
    const int64_t L = c.L, rq = d.rq, rk = d.rk, cut = L - 700;
    const size_t es = d.es;
    infllm_params p = params_of(&c, INFLLM_BACKEND_CPU, 2), p1 = params_of(&c, INFLLM_BACKEND_CPU, 1);
    infllm_cache *cache = NULL;
    CHECK_OK(infllm_cache_create(&p, dt, c.Hkv, c.D, L, &cache));
    void *full = malloc((size_t)(L * rq) * es), *o = malloc((size_t)(4 * rq) * es);
    float *lfull = malloc((size_t)(L * c.Hq) * 4), *lo = malloc((size_t)(4 * c.Hq) * 4);
    /* the sequence after the truncation: d's first cut rows, then d2's */
    void *k2 = malloc((size_t)(L * rk) * es), *v2 = malloc((size_t)(L * rk) * es);
    if (!cache || !full || !o || !lfull || !lo || !k2 || !v2) {
        CHECK(0, "[long-decode %s] setup failed", infllm_dtype_name(dt));
        goto done;
    }
    memcpy(k2, d.k, (size_t)(cut * rk) * es);
    memcpy(v2, d.v, (size_t)(cut * rk) * es);
    memcpy((char *)k2 + (size_t)(cut * rk) * es, (char *)d2.k + (size_t)(cut * rk) * es, (size_t)((L - cut) * rk) * es);
    memcpy((char *)v2 + (size_t)(cut * rk) * es, (char *)d2.v + (size_t)(cut * rk) * es, (size_t)((L - cut) * rk) * es);
    for (int round = 0; round < 2; round++) {
        const void *K = round ? k2 : d.k, *V = round ? v2 : d.v, *Q = round ? d2.q : d.q;
        const infllm_layout l = layout_of(&c, L, L);
        CHECK_OK(infllm_attention(&p1, &l, Q, K, V, full, lfull));
        if (round == 0) {
            CHECK_OK(infllm_cache_append(cache, K, V, L - 4));
        } else {
            CHECK_OK(infllm_cache_truncate(cache, cut));
            for (int64_t t = cut; t < L - 4; t += 100) {
                const int64_t n = L - 4 - t < 100 ? L - 4 - t : 100;
                CHECK_OK(infllm_cache_append(cache, (const char *)K + (size_t)(t * rk) * es,
                                             (const char *)V + (size_t)(t * rk) * es, n));
            }
        }
        int same = 1;
        for (int64_t t = L - 4; t < L; t++) {
            CHECK_OK(infllm_cache_append(cache, (const char *)K + (size_t)(t * rk) * es,
                                         (const char *)V + (size_t)(t * rk) * es, 1));
            CHECK_OK(infllm_cache_attend(cache, &p, (const char *)Q + (size_t)(t * rq) * es, 1, c.Hq, o, lo));
            same &= !memcmp(o, (const char *)full + (size_t)(t * rq) * es, (size_t)rq * es) &&
                    !memcmp(lo, lfull + t * c.Hq, (size_t)c.Hq * 4);
        }
        CHECK(same, "[long-decode %s] %s: decode steps differ (bitwise) from the one-shot attention",
              infllm_dtype_name(dt), round ? "after a truncation and other keys" : "first fill");
    }
done:
    infllm_cache_free(cache);
    free(full), free(o), free(lfull), free(lo), free(k2), free(v2);
    free_data(&d);
    free_data(&d2);
}

/* Decode steps and few-token attends on more threads than KV heads x tokens take the CPU's few-token path (session
 * 61: each token's key tiles in segments of 8 spread over the threads and merged in key order, stage 1's tiles side
 * by side) where the segments keep 2 x Hkv threads busy (few_tokens), else the heads side by side: every result
 * bitwise the one-shot attention's on one thread (of the last queries against every key, as a chunk's prefill). Rows long enough for several segments (4200 keys: 66 dense tiles;
 * topk 40 + 3: 43 of 66 blocks, 6 segments; 2600 keys, topk 16 + 3: 19 of 41, whose selection near-ties catch a
 * stage-1 LSE off by one column), dense and sparse, the exact LSE, sliding windows: the first nvar of those. */
static void test_few_threads(infllm_dtype dt, int len, int topk, size_t nvar) {
    const cfg c = {"few-threads", dt, 8, 2, 64, len, 64, 32, 16, 1, 2, topk, 0, 0.0f};
    static const struct {
        const char *what;
        infllm_mode mode;
        int exact, window;
    } var[] = {{"sparse", INFLLM_MODE_SPARSE, 0, 0},
               {"sparse, exact LSE", INFLLM_MODE_SPARSE, 1, 0},
               {"sparse, window 1500", INFLLM_MODE_SPARSE, 0, 1500},
               {"dense", INFLLM_MODE_DENSE, 0, 0},
               {"dense, window 1000", INFLLM_MODE_DENSE, 0, 1000}};
    /* the calls after the prefix: tokens and threads (tokens x 2 KV heads < threads: the few-token path where the
     * segments suffice; 1 token on 2 threads: the heads side by side). At most 7 threads: CI's 2 cores run them,
     * under qemu too. */
    static const int steps[][2] = {{1, 3}, {1, 4}, {1, 6}, {2, 5}, {3, 7}, {1, 2}};
    data d;
    make_data(&d, &c, 903);
    const int64_t L = c.L, rq = d.rq;
    int64_t pre = L;
    for (size_t j = 0; j < sizeof steps / sizeof steps[0]; j++) pre -= steps[j][0];
    const int64_t nq = L - pre; /* the one-shot call: the last nq queries against all L keys (cheap under qemu) */
    const size_t es = d.es;
    void *full = malloc((size_t)(nq * rq) * es), *o = malloc((size_t)(4 * rq) * es);
    float *lfull = malloc((size_t)(nq * c.Hq) * 4), *lo = malloc((size_t)(4 * c.Hq) * 4);
    if (!full || !o || !lfull || !lo) {
        CHECK(0, "[few-threads %s] setup failed", infllm_dtype_name(dt));
        goto done;
    }
    for (size_t v = 0; v < sizeof var / sizeof var[0] && v < nvar; v++) {
        infllm_params p = params_of(&c, INFLLM_BACKEND_CPU, 1);
        p.mode = var[v].mode;
        p.exact_lse = var[v].exact;
        p.window = var[v].window;
        const infllm_layout l = layout_of(&c, nq, L);
        CHECK_OK(infllm_attention(&p, &l, (const char *)d.q + (size_t)(pre * rq) * es, d.k, d.v, full, lfull));
        infllm_cache *cache = NULL;
        CHECK_OK(infllm_cache_create(&p, dt, c.Hkv, c.D, L, &cache));
        if (!cache) continue;
        CHECK_OK(infllm_cache_append(cache, d.k, d.v, pre));
        int64_t t = pre;
        for (size_t j = 0; j < sizeof steps / sizeof steps[0]; j++) {
            const int n = steps[j][0];
            p.num_threads = steps[j][1];
            CHECK_OK(infllm_cache_append(cache, (const char *)d.k + (size_t)(t * d.rk) * es,
                                         (const char *)d.v + (size_t)(t * d.rk) * es, n));
            CHECK_OK(infllm_cache_attend(cache, &p, (const char *)d.q + (size_t)(t * rq) * es, n, c.Hq, o, lo));
            CHECK(!memcmp(o, (const char *)full + (size_t)((t - pre) * rq) * es, (size_t)(n * rq) * es) &&
                      !memcmp(lo, lfull + (t - pre) * c.Hq, (size_t)(n * c.Hq) * 4),
                  "[few-threads %s L %d topk %d] %s: %d token(s) at %lld on %d threads differ (bitwise) from the "
                  "one-shot attention on one thread", infllm_dtype_name(dt), len, topk, var[v].what, n, (long long)t,
                  p.num_threads);
            t += n;
        }
        infllm_cache_free(cache);
    }
done:
    free(full), free(o), free(lfull), free(lo);
    free_data(&d);
}

static void test_decode(const cfg *c, infllm_backend be, const data *d, int dense_len) {
    infllm_params p = params_of(c, be, 1);
    if (dense_len) {
        p.mode = INFLLM_MODE_AUTO;
        p.dense_len = dense_len;
    }
    int64_t L = c->L, rq = d->rq, rk = d->rk;
    size_t es = d->es;
    infllm_cache *cache = NULL;
    infllm_status st = infllm_cache_create(&p, c->dt, c->Hkv, c->D, L, &cache);
    CHECK(st == INFLLM_OK && cache, "[%s/%s] cache_create: %s", c->name, bname(be), infllm_last_error());
    if (!cache) return;
    CHECK(infllm_cache_length(cache) == 0 && infllm_cache_capacity(cache) == L, "[%s] fresh cache", c->name);
    /* what the cache holds: K / V and the compressed keys c1 / c2 (complete windows of (l1, s1) and (4 l1, 4 s1)) in
     * the storage dtype; the CPU backend also keeps them as tiles of 64 rows (packed once per token): K / V in a
     * 16-bit cache's 16-bit values, else f32, c1 / c2 in f32 (a tiny cache's tiles are mostly padding: 7 tokens at
     * d 192 with 2 KV heads hold 307 KB, session 63's random case that the older "2x the K/V" bound failed), and a
     * word a K / V tile flagging its keys whose values are not finite (session 64).
     * memory_bytes reports that plus the struct: at most 64 KB more */
    const int64_t n1 = L >= c->l1 ? (L - c->l1) / c->s1 + 1 : 0, n2 = L >= 4 * c->l1 ? (L - 4 * c->l1) / (4 * c->s1) + 1 : 0;
    size_t minb = (size_t)(2 * L + n1 + n2) * (size_t)rk * es;
    if (be == INFLLM_BACKEND_CPU) {
        const int64_t rows = (L + 63) / 64 * 64, rows12 = (n1 + 63) / 64 * 64 + (n2 + 63) / 64 * 64;
        /* c1 / c2 tiles in bf16 where bf16 attention runs on the dot-product kernels (session 65) */
        const size_t c_es = c->dt == INFLLM_DTYPE_BF16 && infllm_cpu_bf16_dot() ? 2 : sizeof(float);
        minb += (size_t)(2 * rows) * (size_t)rk * (es == 2 ? 2 : sizeof(float)) + (size_t)rows12 * (size_t)rk * c_es;
        minb += (size_t)(rows / 64) * (size_t)(rk / c->D) * sizeof(uint64_t); /* a flag word a tile (session 64) */
    }
    size_t mem = infllm_cache_memory_bytes(cache);
    CHECK(mem >= minb && mem <= minb + 65536, "[%s/%s] memory_bytes %zu for %zu bytes of K/V, compressed keys and tiles",
          c->name, bname(be), mem, minb);

    void *out_dec = malloc((size_t)(L * rq) * es), *o1 = malloc((size_t)rq * es);
    float *lse_dec = malloc((size_t)(L * c->Hq) * 4), *l1 = malloc((size_t)c->Hq * 4);
    int64_t bad_layout = 0, failed = 0;
    for (int64_t t = 0; t < L; t++) {
        st = infllm_cache_append(cache, (const char *)d->k + (size_t)(t * rk) * es, (const char *)d->v + (size_t)(t * rk) * es, 1);
        if (st == INFLLM_OK)
            st = infllm_cache_attend(cache, &p, (const char *)d->q + (size_t)(t * rq) * es, 1, c->Hq,
                                     (char *)out_dec + (size_t)(t * rq) * es, lse_dec + t * c->Hq);
        if (st != INFLLM_OK) {
            CHECK(0, "[%s/%s] decode step %lld: %s", c->name, bname(be), (long long)t, infllm_last_error());
            failed = 1;
            break;
        }
        if (t == 40 || t == L / 2 || t == L - 1) check_kernels(c, be, cache, d->k, t + 1, "decode");
        /* the same step through infllm_attention: one query over the prefix of t + 1 keys
         * (every step early on, then every 5th and the last: keeps the ASan run short) */
        if (t > 80 && t % 5 != 0 && t != L - 1) continue;
        infllm_layout l = layout_of(c, 1, t + 1);
        st = infllm_attention(&p, &l, (const char *)d->q + (size_t)(t * rq) * es, d->k, d->v, o1, l1);
        if (st != INFLLM_OK) {
            CHECK(0, "[%s/%s] attention at %lld: %s", c->name, bname(be), (long long)t, infllm_last_error());
            failed = 1;
            break;
        }
        if (memcmp(o1, (char *)out_dec + (size_t)(t * rq) * es, (size_t)rq * es) != 0 ||
            memcmp(l1, lse_dec + t * c->Hq, (size_t)c->Hq * 4) != 0)
            bad_layout++;
    }
    if (!failed) {
        CHECK(bad_layout == 0, "[%s/%s%s] %lld decode steps differ (bitwise) from infllm_attention on the same prefix",
              c->name, bname(be), dense_len ? " auto" : "", (long long)bad_layout);
        /* the K/V views hold what was appended */
        CHECK(memcmp(infllm_cache_keys(cache), d->k, (size_t)(L * rk) * es) == 0 &&
                  memcmp(infllm_cache_values(cache), d->v, (size_t)(L * rk) * es) == 0,
              "[%s] cache K/V views", c->name);
        /* decode == rows of the one-shot prefill (sparse mode: same selection by construction) */
        if (!dense_len) {
            void *out_pre = malloc((size_t)(L * rq) * es);
            float *lse_pre = malloc((size_t)(L * c->Hq) * 4);
            infllm_layout l = layout_of(c, L, L);
            st = infllm_attention(&p, &l, d->q, d->k, d->v, out_pre, lse_pre);
            CHECK(st == INFLLM_OK, "[%s/%s] prefill: %s", c->name, bname(be), infllm_last_error());
            if (st == INFLLM_OK) {
                double w1, w2;
                int exact = be == INFLLM_BACKEND_REF;
                int64_t b1 = count_diff(out_dec, out_pre, c->dt, L * rq, exact, &w1);
                int64_t b2 = count_diff_f(lse_dec, lse_pre, L * c->Hq, exact, &w2);
                printf("[%s/%s] decode vs one-shot prefill: worst out diff %.3g, lse diff %.3g\n", c->name, bname(be),
                       w1, w2);
                CHECK(b1 == 0 && b2 == 0, "[%s/%s] decode vs prefill: %lld output and %lld lse elements differ", c->name,
                      bname(be), (long long)b1, (long long)b2);
            }
            free(out_pre);
            free(lse_pre);
        }
    }

    /* capacity: nothing appended on failure */
    int64_t n1a, n1b;
    infllm_cache_c1(cache, &n1a);
    st = infllm_cache_append(cache, d->k, d->v, 1);
    CHECK(st == INFLLM_ERR_CAPACITY, "[%s] append past capacity: %s", c->name, infllm_status_str(st));
    CHECK(strlen(infllm_last_error()) > 0, "capacity message");
    infllm_cache_c1(cache, &n1b);
    CHECK(infllm_cache_length(cache) == L && n1a == n1b, "[%s] failed append changed the cache", c->name);

    /* truncate, then append other keys: c1/c2 rebuilt from the new keys */
    int64_t cut = L / 2 + 3 < L ? L / 2 + 3 : L; /* (short random lengths: at most L) */
    CHECK_OK(infllm_cache_truncate(cache, cut));
    CHECK(infllm_cache_length(cache) == cut, "[%s] length after truncate", c->name);
    check_kernels(c, be, cache, d->k, cut, "after truncate");
    void *k2 = malloc((size_t)(L * rk) * es), *v2 = malloc((size_t)(L * rk) * es);
    memcpy(k2, d->k, (size_t)(cut * rk) * es);
    memcpy(v2, d->v, (size_t)(cut * rk) * es);
    for (int64_t i = cut * rk; i < L * rk; i++) { /* the tail reversed: different keys */
        memcpy((char *)k2 + (size_t)i * es, (const char *)d->k + (size_t)(L * rk - 1 - (i - cut * rk)) * es, es);
        memcpy((char *)v2 + (size_t)i * es, (const char *)d->v + (size_t)(L * rk - 1 - (i - cut * rk)) * es, es);
    }
    st = infllm_cache_append(cache, (char *)k2 + (size_t)(cut * rk) * es, (char *)v2 + (size_t)(cut * rk) * es, L - cut);
    CHECK(st == INFLLM_OK, "[%s] append after truncate: %s", c->name, infllm_last_error());
    check_kernels(c, be, cache, k2, L, "truncate + append");
    /* attending the last token equals a fresh computation on the new keys */
    st = infllm_cache_attend(cache, &p, (const char *)d->q + (size_t)((L - 1) * rq) * es, 1, c->Hq, o1, l1);
    infllm_layout l = layout_of(c, 1, L);
    void *o2 = malloc((size_t)rq * es);
    infllm_status st2 = infllm_attention(&p, &l, (const char *)d->q + (size_t)((L - 1) * rq) * es, k2, v2, o2, NULL);
    CHECK(st == INFLLM_OK && st2 == INFLLM_OK && memcmp(o1, o2, (size_t)rq * es) == 0,
          "[%s/%s] attend after truncate + append differs from a fresh computation", c->name, bname(be));
    CHECK_OK(infllm_cache_truncate(cache, 0));
    int64_t n1z = -1, n2z = -1;
    infllm_cache_c1(cache, &n1z);
    infllm_cache_c2(cache, &n2z);
    CHECK(infllm_cache_length(cache) == 0 && n1z == 0 && n2z == 0, "[%s] truncate to 0", c->name);
    free(o2);
    free(k2);
    free(v2);
    free(out_dec);
    free(o1);
    free(lse_dec);
    free(l1);
    infllm_cache_free(cache);
}

static void test_chunked(const cfg *c, infllm_backend be, const data *d) {
    infllm_params p = params_of(c, be, 2);
    int64_t L = c->L, rq = d->rq, rk = d->rk;
    size_t es = d->es;
    void *out_pre = malloc((size_t)(L * rq) * es), *out_ch = malloc((size_t)(L * rq) * es);
    float *lse_pre = malloc((size_t)(L * c->Hq) * 4), *lse_ch = malloc((size_t)(L * c->Hq) * 4);
    infllm_layout l = layout_of(c, L, L);
    infllm_status st = infllm_attention(&p, &l, d->q, d->k, d->v, out_pre, lse_pre);
    CHECK(st == INFLLM_OK, "[%s/%s] prefill: %s", c->name, bname(be), infllm_last_error());
    infllm_cache *cache = NULL;
    if (st == INFLLM_OK) st = infllm_cache_create(&p, c->dt, c->Hkv, c->D, L + 5, &cache);
    if (st == INFLLM_OK) {
        static const int64_t chunks[] = {37, 64, 1, 100, 15, 16, 1000};
        int64_t pos = 0;
        for (size_t i = 0; pos < L && st == INFLLM_OK; i++) {
            int64_t n = chunks[i % 7];
            if (n > L - pos) n = L - pos;
            st = infllm_cache_append(cache, (const char *)d->k + (size_t)(pos * rk) * es,
                                     (const char *)d->v + (size_t)(pos * rk) * es, n);
            if (st == INFLLM_OK)
                st = infllm_cache_attend(cache, &p, (const char *)d->q + (size_t)(pos * rq) * es, n, c->Hq,
                                         (char *)out_ch + (size_t)(pos * rq) * es, lse_ch + pos * c->Hq);
            pos += n;
        }
        CHECK(st == INFLLM_OK, "[%s/%s] chunked prefill: %s", c->name, bname(be), infllm_last_error());
        if (st == INFLLM_OK) {
            check_kernels(c, be, cache, d->k, L, "chunked");
            double w1, w2;
            int exact = be == INFLLM_BACKEND_REF;
            int64_t b1 = count_diff(out_ch, out_pre, c->dt, L * rq, exact, &w1);
            int64_t b2 = count_diff_f(lse_ch, lse_pre, L * c->Hq, exact, &w2);
            printf("[%s/%s] chunked vs one-shot prefill: worst out diff %.3g, lse diff %.3g\n", c->name, bname(be), w1,
                   w2);
            CHECK(b1 == 0 && b2 == 0, "[%s/%s] chunked vs one-shot: %lld output and %lld lse elements differ", c->name,
                  bname(be), (long long)b1, (long long)b2);
        }
    } else {
        CHECK(0, "[%s/%s] setup: %s", c->name, bname(be), infllm_last_error());
    }
    infllm_cache_free(cache);
    free(out_pre);
    free(out_ch);
    free(lse_pre);
    free(lse_ch);
}

/* NaN inputs (docs/TESTS.md): a key element set to NaN at one of three positions (outside every selection of the
 * late queries, inside the low blocks that all-zero stage-1 rows pick by index, inside the local window); decode
 * steps through the CPU cache against REF's infllm_attention on each prefix: NaN in exactly the same outputs. A
 * fourth case (session 64) puts NaN into two value elements under a dense window of 500 keys: one at 2390, before
 * the window of every step but in a tile the first steps visit (a masked key: before the fix, P = 0 x NaN reached
 * every row), and one at 2800, inside it (its column of every row). */
static void test_nan(void) {
    const int32_t Hq = 32, Hkv = 2, D = 64, T = 3000, L0 = 2900;
    const infllm_dtype dt = INFLLM_DTYPE_BF16;
    const int32_t at[4] = {1200, 100, 2950, 2390};
    size_t ref_nan[4] = {0, 0, 0, 0};
    for (int ci = 0; ci < 4; ci++) {
        infllm_params p;
        infllm_params_default(&p);
        p.mode = ci == 3 ? INFLLM_MODE_DENSE : INFLLM_MODE_SPARSE;
        p.window = ci == 3 ? 500 : 0;
        p.topk = 6;
        p.local_blocks = 2;
        p.num_threads = 2;
        p.backend = INFLLM_BACKEND_CPU;
        const size_t nq = (size_t)T * Hq * D, nk = (size_t)T * Hkv * D;
        uint16_t *q = malloc(nq * 2), *k = malloc(nk * 2), *v = malloc(nk * 2);
        uint16_t *o1 = malloc((size_t)Hq * D * 2), *o2 = malloc((size_t)Hq * D * 2);
        float l1[32], l2[32];
        unsigned long long rs = 91;
        h_fill_qkv_normal(q, nq, k, v, nk, dt, &rs);
        if (ci < 3) {
            infllm_store_f32(k, dt, (int64_t)at[ci] * Hkv * D + 3, NAN);
        } else { /* values of KV head 1 */
            infllm_store_f32(v, dt, (int64_t)at[ci] * Hkv * D + D + 3, NAN);
            infllm_store_f32(v, dt, (int64_t)2800 * Hkv * D + D + 5, NAN);
        }
        infllm_cache *c = NULL;
        CHECK_OK(infllm_cache_create(&p, dt, Hkv, D, T, &c));
        if (!c) break;
        CHECK_OK(infllm_cache_append(c, k, v, L0));
        size_t bad = 0;
        for (int32_t L = L0; L <= T; L += 20) {
            if (L > L0)
                CHECK_OK(infllm_cache_append(c, k + (size_t)(L - 20) * Hkv * D, v + (size_t)(L - 20) * Hkv * D, 20));
            const uint16_t *qq = q + (size_t)(L - 1) * Hq * D; /* the query at position L - 1 */
            CHECK_OK(infllm_cache_attend(c, &p, qq, 1, Hq, o1, l1));
            infllm_params pr = p;
            pr.backend = INFLLM_BACKEND_REF;
            const infllm_layout l = h_layout1(dt, 1, L, Hq, Hkv, D);
            CHECK_OK(infllm_attention(&pr, &l, qq, k, v, o2, l2));
            for (int32_t i = 0; i < Hq * D; i++) {
                const int a = isnan(infllm_load_f32(o1, dt, i)), b = isnan(infllm_load_f32(o2, dt, i));
                ref_nan[ci] += b;
                bad += a != b;
            }
            for (int32_t h = 0; h < Hq; h++) bad += isnan(l1[h]) != isnan(l2[h]);
        }
        CHECK(bad == 0, "NaN %s at %d: %zu cache outputs / LSE NaN where REF's are not (or not where they are)",
              ci < 3 ? "key" : "value", at[ci], bad);
        infllm_cache_free(c);
        free(q), free(k), free(v), free(o1), free(o2);
    }
    /* the three positions do what they say: outside every late selection, then inside */
    CHECK(ref_nan[0] == 0 && ref_nan[1] > 0 && ref_nan[2] > 0, "NaN cases: REF NaN outputs %zu / %zu / %zu (want 0 / > 0 "
          "/ > 0)", ref_nan[0], ref_nan[1], ref_nan[2]);
    /* the values' case: one column of KV head 1's 16 heads in each of the 6 steps (the value at 2800 only) */
    CHECK(ref_nan[3] == (size_t)6 * (Hq / Hkv), "NaN values: REF NaN outputs %zu (want %d)", ref_nan[3], 6 * (Hq / Hkv));
}


static int32_t draw(unsigned long long *r, int32_t n) { return (int32_t)(h_rng_next(r) % (unsigned long long)n); }

/* The errors against REF of one case (a schedule: all its attends), as test_diff's check_tol takes them over one
 * case: the cache's worst error must be <= 2 x the naive implementation's worst error + the floor (`ulps` units of
 * roundoff eps at the largest reference value). Over a case, not per attend: an attend of a few queries over a few
 * keys is a sample too small for the naive error to measure what float32 arithmetic costs (f32 with softmax_scale
 * ~1.5: one row of 3 keys, naive 6e-7, the CPU's exp2 with the scale folded into log2(e) 2e-6). For the same reason
 * the out floor is at least test_diff's stage-1 rule carried to the output: the exp of a float32 argument rounded a
 * few times carries 4 x lmax x u relative error (lmax: the largest |scaled logit| a row attends, u = 2^-24), which
 * moves an output by up to that times the largest |v| (f32, softmax_scale ~1, logits ~50: 1.2e-5 at |v| ~ 4). */
typedef struct ref_tol {
    const char *name;
    double eps, ulps;
    double err, naive, ref_max; /* worst over the case */
    double exp_floor;           /* out: the float32 exp-argument floor (check_vs_ref), over the case */
    int64_t nan;
    char worst[320]; /* the attend of the worst error, and where */
} ref_tol;

static void tol_add(ref_tol *a, const void *got, const void *naive, infllm_dtype dt, const float *exp, int64_t n,
                    const char *what) {
    errs ec = err_of(got, dt, exp, INFLLM_DTYPE_F32, n), en = err_of(naive, dt, exp, INFLLM_DTYPE_F32, n);
    a->nan += ec.nan;
    a->naive = fmax(a->naive, en.max_abs);
    a->ref_max = fmax(a->ref_max, ec.ref_max);
    if (ec.max_abs > a->err || (ec.nan && !a->worst[0])) {
        a->err = fmax(a->err, ec.max_abs);
        snprintf(a->worst, sizeof a->worst, "%s, element %lld (cache %.8g, ref %.8g)", what, (long long)ec.worst,
                 ec.worst >= 0 ? (double)infllm_load_f32(got, dt, ec.worst) : 0.0,
                 ec.worst >= 0 ? (double)exp[ec.worst] : 0.0);
    }
}

static void tol_check(const cfg *c, const ref_tol *a) {
    const double bound = 2.0 * a->naive + fmax(a->ulps * a->eps * (a->ref_max > 1e-30 ? a->ref_max : 1.0), a->exp_floor);
    CHECK(a->nan == 0 && a->err <= bound, "[%s] cache %s vs REF: worst error %.4g (%s; %lld NaN) > 2 x naive %.4g + floor "
          "%.3g", c->name, a->name, a->err, a->worst, (long long)a->nan, a->naive, bound - 2.0 * a->naive);
}

/* n of the cache's queries (positions len - n .. len - 1, inputs k, v of len tokens) against the float64 REF backend
 * on the same prefix (DESIGN practice 7, as test_diff): the expected rows are REF's ops in float64 (selection in the
 * storage dtype, attention on f32 copies), and the cache's worst error on out (and lse) must be <= 2 x the worst
 * error of the naive same-precision row (ref_compare.h's naive_row_lse, on REF's selection) + test_diff's floor
 * (out: half an ulp of the largest value in 16-bit dtypes, two in f32; lse: 8 f32 units of roundoff), taken over
 * the whole case: the errors go into acc (out, lse) for tol_check. The REF
 * infllm_attention call must agree with its ops (mode / dense_len switch included). Sparse rows whose CPU selection
 * (infllm_select_blocks: what the cache's attend selects) differs from REF's are skipped when the difference is a
 * near-tie at the top-k boundary, a failure otherwise. */
static void check_vs_ref(const cfg *c, const infllm_params *pc, const void *q, int64_t n, int64_t len, const void *k,
                         const void *v, const void *out, const float *lse, const char *what, ref_tol acc[2]) {
    const int32_t Hq = c->Hq, Hkv = c->Hkv, D = c->D;
    const int64_t rq = (int64_t)Hq * D, rk = (int64_t)Hkv * D;
    infllm_params pr = *pc;
    pr.backend = INFLLM_BACKEND_REF;
    const infllm_layout l = h_layout1(c->dt, n, len, Hq, Hkv, D);
    infllm_layout l32 = l;
    l32.dtype = INFLLM_DTYPE_F32;
    infllm_sizes sz;
    if (infllm_get_sizes(&pr, &l, &sz) != INFLLM_OK) {
        CHECK(0, "[%s] %s: get_sizes: %s", c->name, what, infllm_last_error());
        return;
    }
    const int sparse = pc->mode == INFLLM_MODE_SPARSE ||
                       (pc->mode == INFLLM_MODE_AUTO && (pc->dense_len < 0 || len >= pc->dense_len));
    const int32_t K = sz.topk_out, NB = sz.nblocks_out;
    float *q32 = malloc((size_t)(n * rq) * 4), *k32 = malloc((size_t)(len * rk) * 4), *v32 = malloc((size_t)(len * rk) * 4);
    for (int64_t i = 0; i < n * rq; i++) q32[i] = infllm_load_f32(q, c->dt, i);
    for (int64_t i = 0; i < len * rk; i++) k32[i] = infllm_load_f32(k, c->dt, i), v32[i] = infllm_load_f32(v, c->dt, i);
    float *ro = malloc((size_t)(n * rq) * 4), *rl = malloc((size_t)(n * Hq) * 4);
    void *ra = malloc((size_t)(n * rq) * infllm_dtype_size(c->dt));
    float *ral = malloc((size_t)(n * Hq) * 4);
    int32_t *rtk = NULL, *ctk = NULL;
    float *rbs = NULL;
    unsigned char *skip = calloc((size_t)n, 1);
    int ok = 1;
    if (sparse) {
        size_t es = infllm_dtype_size(c->dt);
        void *rc1 = malloc((size_t)(sz.total_n1 * rk) * es + 4), *rc2 = malloc((size_t)(sz.total_n2 * rk) * es + 4);
        float *rsc = malloc((size_t)Hkv * (size_t)n * (size_t)sz.max_n1 * 4 + 4);
        rbs = malloc((size_t)Hkv * (size_t)n * (size_t)NB * 4 + 4);
        rtk = malloc((size_t)Hkv * (size_t)n * (size_t)K * 4 + 4);
        ctk = malloc((size_t)Hkv * (size_t)n * (size_t)K * 4 + 4);
        ok = infllm_compress_keys(&pr, &l, k, rc1, rc2, NULL, NULL) == INFLLM_OK &&
             infllm_stage1_scores(&pr, &l, q, rc1, rc2, NULL, NULL, rsc) == INFLLM_OK &&
             infllm_block_scores(&pr, &l, rsc, rbs) == INFLLM_OK && infllm_topk_select(&pr, &l, rbs, rtk) == INFLLM_OK &&
             infllm_sparse_attention(&pr, &l32, q32, k32, v32, rtk, K, ro, rl) == INFLLM_OK &&
             infllm_select_blocks(pc, &l, q, k, ctk) == INFLLM_OK;
        free(rc1), free(rc2), free(rsc);
    } else {
        ok = infllm_dense_attention(&pr, &l32, q32, k32, v32, ro, rl) == INFLLM_OK;
    }
    ok = ok && infllm_attention(&pr, &l, q, k, v, ra, ral) == INFLLM_OK;
    CHECK(ok, "[%s] %s: REF / selection call: %s", c->name, what, infllm_last_error());
    if (ok) {
        /* the REF infllm_attention in the dtype is its ops' float64 result rounded once */
        const double eps = h_unit_roundoff(c->dt);
        int64_t ref_mismatch = 0, not_tie = 0;
        for (int64_t i = 0; i < n * rq; i++)
            ref_mismatch += fabs(infllm_load_f32(ra, c->dt, i) - ro[i]) > eps * fabs(ro[i]) * 1.01 + 3e-8;
        for (int64_t i = 0; i < n * Hq; i++) ref_mismatch += fabs(ral[i] - rl[i]) > 1e-6 * fabs(rl[i]) + 1e-6;
        CHECK(ref_mismatch == 0, "[%s] %s: REF infllm_attention disagrees with the REF ops (%s) on %lld values",
              c->name, what, sparse ? "sparse" : "dense", (long long)ref_mismatch);
        char label[400];
        snprintf(label, sizeof label, "[%s] %s: CPU", c->name, what);
        if (sparse) not_tie = selection_diff(rbs, rtk, ctk, Hkv, n, NB, K, c->dt, skip, 3, label).not_tie;
        CHECK(not_tie == 0, "[%s] %s: %lld CPU selection rows differ from REF's without a near-tie", c->name, what,
              (long long)not_tie);
        /* the rows compared, gathered: cache, naive, expected */
        void *sub_c = malloc((size_t)(n * rq) * infllm_dtype_size(c->dt)), *sub_n = malloc((size_t)(n * rq) * infllm_dtype_size(c->dt));
        float *exp_o = malloc((size_t)(n * rq) * 4), *exp_l = malloc((size_t)(n * Hq) * 4 + 4);
        float *subl_c = malloc((size_t)(n * Hq) * 4 + 4), *subl_n = malloc((size_t)(n * Hq) * 4 + 4);
        float *sbuf = malloc((size_t)len * 4), *orow = malloc((size_t)D * 4);
        int64_t *keys = malloc((size_t)len * 8);
        const float scale = pc->softmax_scale > 0 ? pc->softmax_scale : 1.0f / sqrtf((float)D);
        double vmax = 0;
        for (int64_t i = 0; i < len * rk; i++) vmax = fmax(vmax, fabs(v32[i]));
        int64_t ne = 0, nl = 0;
        for (int64_t t = 0; t < n; t++) {
            if (skip[t]) continue;
            const int64_t pos = len - n + t;
            for (int32_t h = 0; h < Hq; h++) {
                const int32_t g = h / (Hq / Hkv);
                int cnt = 0;
                const int64_t first = pc->window > 0 && pos - pc->window + 1 > 0 ? pos - pc->window + 1 : 0;
                for (int64_t j = first; j <= pos; j++) { /* causal, in the sliding window, selected */
                    int in = !sparse;
                    for (int32_t kk = 0; !in && kk < K; kk++) in = rtk[((int64_t)g * n + t) * K + kk] == (int32_t)(j / c->B);
                    if (in) keys[cnt++] = j;
                }
                float lmax = 0.0f;
                for (int j = 0; j < cnt; j++) {
                    float dot = 0.0f;
                    for (int32_t e = 0; e < D; e++)
                        dot += infllm_load_f32(q, c->dt, (t * Hq + h) * D + e) * infllm_load_f32(k, c->dt, (keys[j] * Hkv + g) * D + e);
                    lmax = fmaxf(lmax, fabsf(scale * dot));
                }
                acc[0].exp_floor = fmax(acc[0].exp_floor, 4.0 * lmax / 16777216 * vmax);
                float nlse;
                naive_row_lse(q, k, v, c->dt, Hq, Hkv, D, t, h, 0, keys, cnt, scale, sbuf, orow, &nlse);
                for (int32_t d = 0; d < D; d++) {
                    const int64_t i = (t * Hq + h) * D + d;
                    infllm_store_f32(sub_c, c->dt, ne, infllm_load_f32(out, c->dt, i));
                    infllm_store_f32(sub_n, c->dt, ne, orow[d]);
                    exp_o[ne++] = ro[i];
                }
                subl_c[nl] = lse ? lse[t * Hq + h] : rl[t * Hq + h];
                subl_n[nl] = nlse;
                exp_l[nl++] = rl[t * Hq + h];
            }
        }
        tol_add(&acc[0], sub_c, sub_n, c->dt, exp_o, ne, what);
        tol_add(&acc[1], subl_c, subl_n, INFLLM_DTYPE_F32, exp_l, nl, what);
        free(sub_c), free(sub_n), free(exp_o), free(exp_l), free(subl_c), free(subl_n), free(sbuf), free(orow), free(keys);
    }
    free(q32), free(k32), free(v32), free(ro), free(rl), free(ra), free(ral), free(rtk), free(ctk), free(rbs), free(skip);
}

/* A random schedule on one cache (rng r; CPU, a quarter of them REF): appends of 1..N tokens interleaved with attends
 * of 1..length queries (every attend with its own thread count 1-4, mode and dense_len among -1, 0, 1, around the
 * current length and INT32_MAX, and now and then its own exact_lse, topk, init_blocks, default softmax_scale or a
 * sliding key window; now
 * and then again without lse, and with no queries), truncations back to an earlier length followed by re-appends of
 * other tokens, and (half the time) a capacity of exactly the final length, which the schedule then fills. Each
 * attend is checked bitwise against the stateless infllm_attention of the cache's backend on the same prefix (as
 * test_decode), against REF (check_vs_ref), and c1/c2 against infllm_compress_keys (check_kernels). Token t of the
 * j-th generation (bumped by each truncation) takes row (t + 7 j) % L of d's K/V; the queries at positions
 * len - n .. len - 1 are d's rows of those positions. */
static void test_schedule(const cfg *c, const data *d, unsigned long long *r) {
    const int64_t L = c->L, rq = d->rq, rk = d->rk;
    const size_t es = d->es;
    enum { MAX_OPS = 24 };
    int64_t ops[MAX_OPS]; /* > 0: append that many; < 0: truncate to -op - 1 (plus attends drawn as it runs) */
    int nops = 0;
    int64_t len = 0, peak = 0;
    const int64_t maxchunk = 1 + draw(r, (int32_t)(L < 64 ? L : 64));
    while (nops < MAX_OPS - 1 && !(nops >= 3 && draw(r, 4) == 0)) {
        if (len > 0 && draw(r, 5) == 0) {
            const int64_t to = draw(r, (int32_t)len); /* 0 .. len - 1 */
            ops[nops++] = -to - 1;
            len = to;
        } else if (len < L) {
            int64_t n = 1 + draw(r, (int32_t)maxchunk);
            if (n > L - len) n = L - len;
            ops[nops++] = n;
            len += n;
            if (len > peak) peak = len;
        } else {
            break;
        }
    }
    if (peak == 0) ops[nops++] = 1, len = peak = 1;
    const int exact_cap = draw(r, 2);
    if (exact_cap && len < peak) ops[nops++] = peak - len; /* fill: the final length is the capacity */
    const int64_t cap = exact_cap ? peak : peak + draw(r, (int32_t)(L - peak + 1));
    char what[200];
    /* a REF cache now and then: it must equal REF's own stateless call bitwise too */
    const infllm_backend be = draw(r, 4) ? INFLLM_BACKEND_CPU : INFLLM_BACKEND_REF;
    infllm_params p = params_of(c, be, 1);
    infllm_cache *cache = NULL;
    CHECK_OK(infllm_cache_create(&p, c->dt, c->Hkv, c->D, cap, &cache));
    if (!cache) return;
    void *curk = malloc((size_t)(cap * rk) * es), *curv = malloc((size_t)(cap * rk) * es);
    void *out = malloc((size_t)(L * rq) * es), *out2 = malloc((size_t)(L * rq) * es);
    float *lse = malloc((size_t)(L * c->Hq) * 4), *lse2 = malloc((size_t)(L * c->Hq) * 4);
    int64_t gen = 0;
    ref_tol acc[2] = {{.name = "out", .eps = h_unit_roundoff(c->dt), .ulps = c->dt == INFLLM_DTYPE_F32 ? 4.0 : 1.0},
                      {.name = "lse", .eps = 1.0 / 16777216, .ulps = 8.0}};
    len = 0;
    const int failed_before = h_failed;
    for (int i = 0; i < nops && h_failed == failed_before; i++) {
        if (ops[i] < 0) {
            const int64_t to = -ops[i] - 1;
            CHECK_OK(infllm_cache_truncate(cache, to));
            len = to;
            gen++;
            continue;
        }
        const int64_t n = ops[i];
        for (int64_t t = len; t < len + n; t++) {
            const int64_t src = (t + 7 * gen) % L;
            memcpy((char *)curk + (size_t)(t * rk) * es, (const char *)d->k + (size_t)(src * rk) * es, (size_t)rk * es);
            memcpy((char *)curv + (size_t)(t * rk) * es, (const char *)d->v + (size_t)(src * rk) * es, (size_t)rk * es);
        }
        /* one append of n, or two of n / 2 and the rest */
        const int64_t first = n > 1 && draw(r, 2) ? n / 2 : n;
        CHECK_OK(infllm_cache_append(cache, (char *)curk + (size_t)(len * rk) * es, (char *)curv + (size_t)(len * rk) * es, first));
        if (first < n)
            CHECK_OK(infllm_cache_append(cache, (char *)curk + (size_t)((len + first) * rk) * es,
                                         (char *)curv + (size_t)((len + first) * rk) * es, n - first));
        len += n;
        CHECK(infllm_cache_length(cache) == len, "[%s] schedule: length %lld, want %lld", c->name,
              (long long)infllm_cache_length(cache), (long long)len);
        check_kernels(c, be, cache, curk, len, "schedule");
        const int nattend = draw(r, 3);
        for (int a = 0; a < nattend; a++) {
            const int64_t nq = draw(r, 3) ? 1 + draw(r, (int32_t)(len < 4 ? len : 4)) : 1 + draw(r, (int32_t)len);
            static const infllm_mode modes[3] = {INFLLM_MODE_DENSE, INFLLM_MODE_SPARSE, INFLLM_MODE_AUTO};
            p.num_threads = 1 + draw(r, 4);
            p.mode = modes[draw(r, 3)];
            const int32_t dl[7] = {-1, 0, 1, (int32_t)len - 1, (int32_t)len, (int32_t)len + 1, INT32_MAX};
            p.dense_len = dl[draw(r, 7)];
            /* the other parameters are read at each attend too: now and then other values than the configuration's */
            p.exact_lse = draw(r, 4) ? c->exact : !c->exact;
            p.topk = draw(r, 4) ? c->topk : 1 + draw(r, 5);
            p.init_blocks = draw(r, 4) ? c->init : draw(r, 3);
            p.softmax_scale = draw(r, 4) ? c->scale : 0.0f;
            /* a sliding key window a third of the time: 1, or up to past the length */
            p.window = draw(r, 3) ? 0 : draw(r, 4) ? 1 + draw(r, (int32_t)len + 8) : 1;
            snprintf(what, sizeof what, "%s cache, op %d: %lld queries at length %lld, %d threads, mode %d, dense_len %d, topk %d, "
                     "init %d, exact %d, scale %g, window %d", bname(be), i, (long long)nq, (long long)len, p.num_threads,
                     (int)p.mode, p.dense_len, p.topk, p.init_blocks, p.exact_lse, (double)p.softmax_scale, p.window);
            const void *q = (const char *)d->q + (size_t)((len - nq) * rq) * es;
            infllm_status st = infllm_cache_attend(cache, &p, q, nq, c->Hq, out, lse);
            CHECK(st == INFLLM_OK, "[%s] %s: attend: %s", c->name, what, infllm_last_error());
            if (st != INFLLM_OK) break;
            if (draw(r, 8) == 0) { /* without lse the same out; no queries: nothing written */
                memset(out2, 0x5A, (size_t)(nq * rq) * es);
                CHECK_OK(infllm_cache_attend(cache, &p, q, nq, c->Hq, out2, NULL));
                CHECK(memcmp(out, out2, (size_t)(nq * rq) * es) == 0, "[%s] %s: attend without lse differs", c->name, what);
                CHECK_OK(infllm_cache_attend(cache, &p, q, 0, c->Hq, out2, NULL));
                CHECK(memcmp(out, out2, (size_t)(nq * rq) * es) == 0, "[%s] %s: attend of 0 queries wrote", c->name, what);
            }
            const infllm_layout l = layout_of(c, nq, len);
            st = infllm_attention(&p, &l, q, curk, curv, out2, lse2);
            CHECK(st == INFLLM_OK, "[%s] %s: attention: %s", c->name, what, infllm_last_error());
            if (st == INFLLM_OK)
                CHECK(memcmp(out, out2, (size_t)(nq * rq) * es) == 0 && memcmp(lse, lse2, (size_t)(nq * c->Hq) * 4) == 0,
                      "[%s] %s: attend differs (bitwise) from infllm_attention on the same prefix", c->name, what);
            if (st == INFLLM_OK && p.num_threads > 1) {
                /* the thread count changes no bit: few queries take the KV heads side by side (session 59), more
                 * take the token groups */
                infllm_params p1 = p;
                p1.num_threads = 1;
                st = infllm_cache_attend(cache, &p1, q, nq, c->Hq, out2, lse2);
                CHECK(st == INFLLM_OK && memcmp(out, out2, (size_t)(nq * rq) * es) == 0 &&
                          memcmp(lse, lse2, (size_t)(nq * c->Hq) * 4) == 0,
                      "[%s] %s: attend on %d threads differs (bitwise) from one thread", c->name, what, p.num_threads);
            }
            check_vs_ref(c, &p, q, nq, len, curk, curv, out, lse, what, acc);
        }
    }
    if (h_failed == failed_before && exact_cap) {
        CHECK(len == cap, "[%s] schedule: final length %lld, capacity %lld", c->name, (long long)len, (long long)cap);
        CHECK_STATUS(infllm_cache_append(cache, d->k, d->v, 1), INFLLM_ERR_CAPACITY);
    }
    for (int i = 0; i < 2; i++) tol_check(c, &acc[i]);
    free(curk), free(curv), free(out), free(out2), free(lse), free(lse2);
    infllm_cache_free(cache);
}

/* Random configuration idx of seed (seeded from both, so that one reruns alone): dtype; Hkv 1-2 and G 1-8 or
 * 12 / 17 / 20 / 33; head_dim any multiple of 16 up to 256; length 1-300; kernel_stride 1-32 with block_size any
 * multiple of it up to 128, kernel_size from 1 to past the block; init_blocks 0-2, 40 or INT32_MAX; local_blocks
 * 0-3 or 1000; topk 0 (with local blocks), 1-5, 500 or the largest valid; exact_lse; softmax_scale default, 0.02-0.3
 * or 0.5-2. The name holds every value. */
static void random_cfg(cfg *c, char *name, size_t nname, unsigned long long seed, int idx) {
    unsigned long long r0 = seed * 0x2545F4914F6CDD1DULL + (unsigned long long)idx, *r = &r0;
    h_rng_next(r);
    static const infllm_dtype dts[3] = {INFLLM_DTYPE_F32, INFLLM_DTYPE_F16, INFLLM_DTYPE_BF16};
    static const int32_t bigG[4] = {12, 17, 20, 33}, strides[9] = {1, 2, 3, 4, 5, 8, 12, 16, 32};
    memset(c, 0, sizeof *c);
    c->dt = dts[draw(r, 3)];
    c->Hkv = 1 + draw(r, 2);
    c->Hq = c->Hkv * (draw(r, 4) ? 1 + draw(r, 8) : bigG[draw(r, 4)]);
    c->D = 16 * (1 + draw(r, 16));
    c->L = 1 + draw(r, 300);
    c->s1 = strides[draw(r, 9)];
    int32_t m = 1 + draw(r, 8);
    while (m > 1 && c->s1 * m > 128) m--;
    c->B = c->s1 * m;
    c->l1 = draw(r, 4) ? 1 + draw(r, 3 * c->s1) : c->B + 1 + draw(r, c->B);
    const int32_t ik = draw(r, 6);
    c->init = ik < 3 ? ik : ik == 3 ? 1 : ik == 4 ? 40 : INT32_MAX;
    const int32_t lk = draw(r, 6);
    c->local = lk < 4 ? lk : lk == 4 ? 1 : 1000;
    const int32_t tk = draw(r, 6);
    c->topk = tk == 0 ? 0 : tk < 4 ? 1 + draw(r, 5) : tk == 4 ? 500 : (1 << 24) - c->local;
    if (c->topk + c->local == 0) c->topk = 1;
    c->exact = draw(r, 2);
    const int32_t sk = draw(r, 4);
    c->scale = sk < 2 ? 0.0f : sk == 2 ? (float)(0.02 + 0.28 * h_uniform(r)) : (float)(0.5 + 1.5 * h_uniform(r));
    snprintf(name, nname, "random seed %llu #%d %s Hq%d Hkv%d D%d L%d B%d k%d/%d init%d local%d topk%d exact%d scale%g",
             seed, idx, infllm_dtype_name(c->dt), c->Hq, c->Hkv, c->D, c->L, c->B, c->l1, c->s1, c->init, c->local,
             c->topk, c->exact, (double)c->scale);
    c->name = name;
}

int main(void) {
    if (h_skip_amx_run("test_cache")) return 77;
    /* INFLLM_CACHE_RANDOM_ONLY=1: the random configurations alone (long runs over many seeds) */
    const int only_random = getenv("INFLLM_CACHE_RANDOM_ONLY") != NULL;
    static const cfg cfgs[] = {
        /* name      dtype              Hq Hkv  D    L    B  l1 s1 init local topk exact scale */
        {"f32-b32", INFLLM_DTYPE_F32, 4, 2, 64, 260, 32, 16, 8, 1, 1, 2, 0, 0.0f},
        {"bf16-b64", INFLLM_DTYPE_BF16, 6, 2, 64, 290, 64, 32, 16, 1, 1, 1, 0, 0.0f},
        {"f16-exact", INFLLM_DTYPE_F16, 3, 1, 128, 200, 32, 32, 16, 0, 2, 1, 1, 0.0f},
    };
    infllm_cache_free(NULL); /* no-op */
    CHECK(infllm_cache_length(NULL) == 0, "length(NULL)");
    for (size_t i = 0; !only_random && i < sizeof cfgs / sizeof cfgs[0]; i++) {
        data d;
        make_data(&d, &cfgs[i], 77 + i);
        for (int b = 0; b < 2; b++) {
            infllm_backend be = b == 0 ? INFLLM_BACKEND_REF : INFLLM_BACKEND_CPU;
            test_decode(&cfgs[i], be, &d, 0);
            test_chunked(&cfgs[i], be, &d);
        }
        /* the AUTO switch mid-generation: dense below dense_len, sparse from it on */
        test_decode(&cfgs[i], INFLLM_BACKEND_CPU, &d, cfgs[i].L / 2);
        free_data(&d);
    }
    if (!only_random) {
        test_long_decode(INFLLM_DTYPE_F32);
        test_long_decode(INFLLM_DTYPE_BF16);
        test_few_threads(INFLLM_DTYPE_F32, 4200, 40, 5);
        test_few_threads(INFLLM_DTYPE_BF16, 4200, 40, 5);
        test_few_threads(INFLLM_DTYPE_BF16, 2600, 16, 1); /* sparse only */
    }
    /* random configurations (random_cfg; INFLLM_CACHE_RANDOM, default 2; INFLLM_CACHE_SEED, default 1; starting at
     * INFLLM_CACHE_RANDOM_FIRST, default 0) on the CPU backend: every knob drawn, so that combinations the table above
     * does not name get checked; INFLLM_CACHE_SCHEDULES (default 2) random schedules each (test_schedule) */
    const char *rn = getenv("INFLLM_CACHE_RANDOM"), *rs = getenv("INFLLM_CACHE_SEED"),
               *rf = getenv("INFLLM_CACHE_RANDOM_FIRST");
    const char *rsch = getenv("INFLLM_CACHE_SCHEDULES");
    const int nrand = rn ? atoi(rn) : 2, rfirst = rf ? atoi(rf) : 0, nsched = rsch ? atoi(rsch) : 2;
    const unsigned long long rseed = rs ? strtoull(rs, NULL, 10) : 1ULL;
    for (int i = rfirst; i < rfirst + nrand; i++) {
        char name[160];
        cfg c;
        random_cfg(&c, name, sizeof name, rseed, i);
        printf("%s\n", name);
        data d;
        make_data(&d, &c, 1000 + (unsigned long long)i);
        test_decode(&c, INFLLM_BACKEND_CPU, &d, 0);
        test_chunked(&c, INFLLM_BACKEND_CPU, &d);
        test_decode(&c, INFLLM_BACKEND_CPU, &d, c.L / 2);
        /* schedules: INFLLM_CACHE_SCHEDULES per configuration (default 2), seeded from the configuration */
        unsigned long long sr = rseed * 0x9E3779B97F4A7C15ULL + (unsigned long long)i * 131 + 17;
        for (int s = 0; s < nsched; s++) test_schedule(&c, &d, &sr);
        free_data(&d);
    }
    if (only_random) return finish("test_cache");
    test_nan();
    return finish("test_cache");
}
