/*
 * test_backward.c: infllm_sparse_attention_backward / infllm_dense_attention_backward.
 *
 * 1. The float64 REF backward against central finite differences of the REF forward (f32
 *    storage, loss = sum dout * out), on sampled elements of q, k and v, sparse and dense: the
 *    analytic gradient is the derivative of the forward the library computes.
 * 2. The CPU backward against the REF backward over a grid (GQA groups 1 / 3 / 16, head_dim 32 /
 *    64 / 128, f32 / f16 / bf16, block 16 / 64 / 128, varlen batches with chunked layouts (lq <
 *    lk), dense and sparse, random selections with -1 padding, duplicates and entries past the
 *    query's block). Tolerance (DESIGN practice 7): the CPU's worst error against float64 is at
 *    most twice that of a naive same-precision backward written here (f32 arithmetic on the
 *    dtype-rounded inputs, a max-subtracted softmax per row, gradients rounded to the dtype),
 *    plus a floor of a few dtype ulps of the largest value. The lse the CPU backward reads is the
 *    CPU forward's.
 * 3. Exact properties of the CPU path: keys that no query attends get exactly 0; the result does
 *    not depend on the thread count (bitwise); the dense backward equals the sparse one with
 *    every block selected (bitwise).
 * 4. infllm_select_blocks: the CPU's fused selection equals its staged ops (and REF's its own),
 *    infllm_sparse_attention on it gives infllm_attention's sparse output and lse bit for bit, and
 *    the backward on it passes check 2: one training step end to end.
 * 5. Bad input: NULL arguments, topk_cols < 1: clear errors. The CUDA backend on this test's plain host buffers:
 *    refused with INFLLM_ERR_UNSUPPORTED saying why (no usable device, or host memory the GPU cannot read), or run
 *    where the device reads pageable memory; test_cuda_backward holds the CUDA backward itself.
 * Checks 1 and 2 also run at a softmax_scale other than 1 / sqrt(D) (0.45x / 2.3x; a quarter of the random cases
 *    0.3-3.3x).
 * INFLLM_BACKWARD_RANDOM=N (default 6) / INFLLM_BACKWARD_SEED=S add seeded random cases to check 2.
 * INFLLM_TEST_VERBOSE=1 prints each gradient's errors.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "harness.h"
#include "infllm.h"

typedef struct bcase {
    const char *name;
    infllm_dtype dt;
    int32_t Hq, Hkv, D, B, nseq;
    int32_t lq[3], lk[3];
    int32_t topk_cols; /* 0: dense */
    float scale_fac;   /* 0: softmax_scale 0 (1 / sqrt(D)); else softmax_scale = scale_fac / sqrt(D) */
    int32_t window;    /* params.window: a sliding key window (0: none) */
} bcase;

typedef struct bdata {
    const bcase *c;
    infllm_layout l;
    int32_t cu_q[4], cu_k[4];
    int64_t tq, tk;
    void *q, *k, *v, *dout;
    float *qf, *kf, *vf, *df; /* the dtype-rounded inputs as f32 */
    int32_t *topk;            /* [Hkv, tq, cols] */
} bdata;

static void *alloc_dt(infllm_dtype dt, int64_t n) { return calloc((size_t)(n > 0 ? n : 1), infllm_dtype_size(dt)); }

static void fill(void *x, float *xf, infllm_dtype dt, int64_t n, unsigned long long *rs, double sd) {
    for (int64_t i = 0; i < n; i++) {
        infllm_store_f32(x, dt, i, (float)(sd * h_normal(rs)));
        xf[i] = infllm_load_f32(x, dt, i);
    }
}

static void bdata_init(bdata *x, const bcase *c, unsigned long long seed) {
    memset(x, 0, sizeof *x);
    x->c = c;
    x->cu_q[0] = x->cu_k[0] = 0;
    for (int32_t b = 0; b < c->nseq; b++) {
        x->cu_q[b + 1] = x->cu_q[b] + c->lq[b];
        x->cu_k[b + 1] = x->cu_k[b] + c->lk[b];
    }
    x->tq = x->cu_q[c->nseq];
    x->tk = x->cu_k[c->nseq];
    infllm_layout *l = &x->l;
    l->dtype = c->dt;
    l->num_seqs = c->nseq;
    l->cu_seqlens_q = x->cu_q;
    l->cu_seqlens_k = x->cu_k;
    l->total_q = x->tq;
    l->total_k = x->tk;
    l->num_q_heads = c->Hq;
    l->num_kv_heads = c->Hkv;
    l->head_dim = c->D;
    const int64_t nq = x->tq * c->Hq * c->D, nk = x->tk * c->Hkv * c->D;
    x->q = alloc_dt(c->dt, nq);
    x->dout = alloc_dt(c->dt, nq);
    x->k = alloc_dt(c->dt, nk);
    x->v = alloc_dt(c->dt, nk);
    x->qf = malloc((size_t)(nq + 1) * 4);
    x->df = malloc((size_t)(nq + 1) * 4);
    x->kf = malloc((size_t)(nk + 1) * 4);
    x->vf = malloc((size_t)(nk + 1) * 4);
    unsigned long long rs = seed;
    fill(x->q, x->qf, c->dt, nq, &rs, 1.5); /* peaked softmaxes as well as flat ones */
    fill(x->k, x->kf, c->dt, nk, &rs, 1.0);
    fill(x->v, x->vf, c->dt, nk, &rs, 1.0);
    fill(x->dout, x->df, c->dt, nq, &rs, 1.0);
    if (c->topk_cols > 0) {
        const int32_t K = c->topk_cols;
        x->topk = malloc((size_t)c->Hkv * (size_t)x->tq * (size_t)K * sizeof(int32_t));
        for (int32_t b = 0; b < c->nseq; b++)
            for (int32_t i = 0; i < c->lq[b]; i++) {
                const int64_t t = x->cu_q[b] + i, pos = (int64_t)c->lk[b] - c->lq[b] + i;
                const int32_t qb = (int32_t)(pos / c->B), nb = (c->lk[b] + c->B - 1) / c->B;
                for (int32_t g = 0; g < c->Hkv; g++) {
                    int32_t *row = x->topk + ((int64_t)g * x->tq + t) * K;
                    for (int32_t e = 0; e < K; e++) {
                        const double u = h_uniform(&rs);
                        if (e == 0)
                            row[e] = qb; /* the forced current block */
                        else if (u < 0.1)
                            row[e] = -1; /* padding */
                        else if (u < 0.15)
                            row[e] = row[e - 1]; /* a duplicate */
                        else if (u < 0.2)
                            row[e] = qb + 1 + (int32_t)(h_uniform(&rs) * 3); /* future / past the end */
                        else
                            row[e] = (int32_t)(h_uniform(&rs) * (qb + 1)); /* causal, maybe repeated */
                        if (row[e] >= nb + 2) row[e] = nb + 2;
                    }
                }
            }
    }
}

static void bdata_free(bdata *x) {
    free(x->q);
    free(x->k);
    free(x->v);
    free(x->dout);
    free(x->qf);
    free(x->kf);
    free(x->vf);
    free(x->df);
    free(x->topk);
}

static infllm_params params_for(const bcase *c, infllm_backend be, int threads) {
    infllm_params p;
    infllm_params_default(&p);
    p.block_size = c->B;
    p.backend = be;
    p.num_threads = threads;
    if (c->scale_fac > 0) p.softmax_scale = c->scale_fac / sqrtf((float)c->D);
    p.window = c->window;
    return p;
}

static infllm_status run_forward(const bdata *x, const infllm_params *p, void *out, float *lse) {
    return x->c->topk_cols ? infllm_sparse_attention(p, &x->l, x->q, x->k, x->v, x->topk, x->c->topk_cols, out, lse)
                           : infllm_dense_attention(p, &x->l, x->q, x->k, x->v, out, lse);
}

static infllm_status run_backward(const bdata *x, const infllm_params *p, const float *lse, void *dq, void *dk,
                                  void *dv) {
    return x->c->topk_cols ? infllm_sparse_attention_backward(p, &x->l, x->q, x->k, x->v, x->topk, x->c->topk_cols,
                                                              lse, x->dout, dq, dk, dv)
                           : infllm_dense_attention_backward(p, &x->l, x->q, x->k, x->v, lse, x->dout, dq, dk, dv);
}

/* ---------------------------------------------------- naive f32 backward ---- */
/* the allowed keys of (t, g): sel[b] per block, causal limit pos */
static void naive_backward(const bdata *x, void *dq, void *dk, void *dv) {
    const bcase *c = x->c;
    const int32_t G = c->Hq / c->Hkv, D = c->D, B = c->B;
    const float scale = (c->scale_fac > 0 ? c->scale_fac : 1.0f) / sqrtf((float)D); /* params_for's */
    const int64_t nk = x->tk * c->Hkv * D;
    float *dkf = calloc((size_t)nk + 1, 4), *dvf = calloc((size_t)nk + 1, 4);
    float *w = malloc(((size_t)x->tk + 1) * 4), *dp = malloc(((size_t)x->tk + 1) * 4), *acc = malloc((size_t)D * 4);
    unsigned char *sel = malloc((size_t)x->tk / (size_t)B + 4);
    for (int32_t b = 0; b < c->nseq; b++) {
        const int32_t nb = (c->lk[b] + B - 1) / B;
        for (int32_t i = 0; i < c->lq[b]; i++) {
            const int64_t t = x->cu_q[b] + i, pos = (int64_t)c->lk[b] - c->lq[b] + i, k0 = x->cu_k[b];
            for (int32_t h = 0; h < c->Hq; h++) {
                const int32_t g = h / G;
                memset(sel, c->topk_cols ? 0 : 1, (size_t)nb + 1);
                for (int32_t e = 0; e < c->topk_cols; e++) {
                    const int32_t bb = x->topk[((int64_t)g * x->tq + t) * c->topk_cols + e];
                    if (bb >= 0 && bb < nb) sel[bb] = 1;
                }
                const float *qh = x->qf + (t * c->Hq + h) * D, *dh = x->df + (t * c->Hq + h) * D;
                float m = -INFINITY, sum = 0.f, delta = 0.f;
                const int64_t first = c->window > 0 && pos - c->window + 1 > 0 ? pos - c->window + 1 : 0;
                for (int64_t j = first; j <= pos; j++) {
                    if (!sel[j / B]) continue;
                    const float *kj = x->kf + ((k0 + j) * c->Hkv + g) * D, *vj = x->vf + ((k0 + j) * c->Hkv + g) * D;
                    float s = 0.f, d2 = 0.f;
                    for (int32_t d = 0; d < D; d++) {
                        s += qh[d] * kj[d];
                        d2 += dh[d] * vj[d];
                    }
                    w[j] = scale * s;
                    dp[j] = d2;
                    m = fmaxf(m, w[j]);
                }
                for (int32_t d = 0; d < D; d++) acc[d] = 0.f;
                if (m != -INFINITY) {
                    for (int64_t j = first; j <= pos; j++)
                        if (sel[j / B]) sum += expf(w[j] - m);
                    for (int64_t j = first; j <= pos; j++)
                        if (sel[j / B]) {
                            w[j] = expf(w[j] - m) / sum;
                            delta += w[j] * dp[j];
                        }
                    for (int64_t j = first; j <= pos; j++) {
                        if (!sel[j / B]) continue;
                        const int64_t kr = ((k0 + j) * c->Hkv + g) * D;
                        const float ds = scale * w[j] * (dp[j] - delta);
                        for (int32_t d = 0; d < D; d++) {
                            acc[d] += ds * x->kf[kr + d];
                            dkf[kr + d] += ds * qh[d];
                            dvf[kr + d] += w[j] * dh[d];
                        }
                    }
                }
                for (int32_t d = 0; d < D; d++) infllm_store_f32(dq, c->dt, (t * c->Hq + h) * D + d, acc[d]);
            }
        }
    }
    for (int64_t i = 0; i < nk; i++) {
        infllm_store_f32(dk, c->dt, i, dkf[i]);
        infllm_store_f32(dv, c->dt, i, dvf[i]);
    }
    free(dkf);
    free(dvf);
    free(w);
    free(dp);
    free(acc);
    free(sel);
}

/* ------------------------------------------------------------ compare ---- */
typedef struct errs {
    double max_abs, ref_max;
    int64_t worst, nan;
} errs;

static errs err_of(const void *a, const void *ref, infllm_dtype dt, int64_t n) {
    errs e = {0, 0, -1, 0};
    for (int64_t i = 0; i < n; i++) {
        const double x = infllm_load_f32(a, dt, i), y = infllm_load_f32(ref, dt, i);
        if (isnan(x)) e.nan++;
        if (fabs(y) > e.ref_max) e.ref_max = fabs(y);
        const double d = fabs(x - y);
        if (!(d <= e.max_abs)) {
            e.max_abs = d;
            e.worst = i;
        }
    }
    return e;
}

static double g_worst_ratio;

static void check_grad(const bcase *c, const char *what, const void *cpu, const void *naive, const void *ref,
                       int64_t n) {
    const errs ec = err_of(cpu, ref, c->dt, n), en = err_of(naive, ref, c->dt, n);
    const double floor_ = 4.0 * h_unit_roundoff(c->dt) * (ec.ref_max > 1e-30 ? ec.ref_max : 1.0);
    const double bound = 2.0 * en.max_abs + floor_;
    if (ec.max_abs / bound > g_worst_ratio) g_worst_ratio = ec.max_abs / bound;
    if (getenv("INFLLM_TEST_VERBOSE"))
        printf("    %-28s %s: cpu error %.3g, naive %.3g, floor %.3g, largest value %.3g\n", c->name, what, ec.max_abs,
               en.max_abs, floor_, ec.ref_max);
    if (getenv("INFLLM_TEST_VERBOSE") && ec.worst >= 0)
        printf("      worst %s element %lld: cpu %.9g, naive %.9g, ref %.9g\n", what, (long long)ec.worst,
               (double)infllm_load_f32(cpu, c->dt, ec.worst), (double)infllm_load_f32(naive, c->dt, ec.worst),
               (double)infllm_load_f32(ref, c->dt, ec.worst));
    CHECK(ec.nan == 0, "[%s] %s: %lld NaN", c->name, what, (long long)ec.nan);
    CHECK(ec.max_abs <= bound, "[%s] %s: CPU worst error %.4g at %lld (cpu %.8g, ref %.8g) > 2 x naive %.4g + %.3g",
          c->name, what, ec.max_abs, (long long)ec.worst,
          ec.worst >= 0 ? (double)infllm_load_f32(cpu, c->dt, ec.worst) : 0.0,
          ec.worst >= 0 ? (double)infllm_load_f32(ref, c->dt, ec.worst) : 0.0, en.max_abs, floor_);
}

/* ------------------------------------------------------------ the grid ---- */
static void run_case(const bcase *c, unsigned long long seed) {
    bdata x;
    bdata_init(&x, c, seed);
    const int64_t nq = x.tq * c->Hq * c->D, nk = x.tk * c->Hkv * c->D;
    void *out = alloc_dt(c->dt, nq);
    float *lse = malloc((size_t)(x.tq * c->Hq + 1) * 4);
    void *rq = alloc_dt(c->dt, nq), *rk = alloc_dt(c->dt, nk), *rv = alloc_dt(c->dt, nk);
    void *cq = alloc_dt(c->dt, nq), *ck = alloc_dt(c->dt, nk), *cv = alloc_dt(c->dt, nk);
    void *nq_ = alloc_dt(c->dt, nq), *nk_ = alloc_dt(c->dt, nk), *nv_ = alloc_dt(c->dt, nk);
    void *tq1 = alloc_dt(c->dt, nq), *tk1 = alloc_dt(c->dt, nk), *tv1 = alloc_dt(c->dt, nk);
    const infllm_params cpu = params_for(c, INFLLM_BACKEND_CPU, 2), cpu1 = params_for(c, INFLLM_BACKEND_CPU, 1),
                        ref = params_for(c, INFLLM_BACKEND_REF, 1);
    CHECK_OK(run_forward(&x, &cpu, out, lse));
    /* poison the outputs: the backward must write every element */
    memset(cq, 0x7f, (size_t)nq * infllm_dtype_size(c->dt));
    memset(ck, 0x7f, (size_t)nk * infllm_dtype_size(c->dt));
    memset(cv, 0x7f, (size_t)nk * infllm_dtype_size(c->dt));
    CHECK_OK(run_backward(&x, &cpu, lse, cq, ck, cv));
    CHECK_OK(run_backward(&x, &ref, lse, rq, rk, rv));
    naive_backward(&x, nq_, nk_, nv_);
    check_grad(c, "dq", cq, nq_, rq, nq);
    check_grad(c, "dk", ck, nk_, rk, nk);
    check_grad(c, "dv", cv, nv_, rv, nk);
    /* keys no query attends: exactly 0, as in the reference */
    int64_t bad_zero = 0, zeros = 0;
    for (int64_t i = 0; i < nk; i++)
        if (infllm_load_f32(rv, c->dt, i) == 0.0f && infllm_load_f32(rk, c->dt, i) == 0.0f) {
            zeros++;
            if (infllm_load_f32(cv, c->dt, i) != 0.0f || infllm_load_f32(ck, c->dt, i) != 0.0f) bad_zero++;
        }
    CHECK(bad_zero == 0, "[%s] %lld of %lld unattended key elements not 0", c->name, (long long)bad_zero,
          (long long)zeros);
    /* an lse off by up to 1e-3 (rounded in another precision, or another backend's forward): the CPU
     * normalises each row by its recomputed sum, so the gradients stay within the same bound */
    float *lse2 = malloc((size_t)(x.tq * c->Hq + 1) * 4);
    for (int64_t i = 0; i < x.tq * c->Hq; i++) lse2[i] = lse[i] + (i % 3 == 0 ? 1e-3f : i % 3 == 1 ? -7e-4f : 0.0f);
    CHECK_OK(run_backward(&x, &cpu, lse2, tq1, tk1, tv1));
    check_grad(c, "dq (lse off by 1e-3)", tq1, nq_, rq, nq);
    check_grad(c, "dk (lse off by 1e-3)", tk1, nk_, rk, nk);
    check_grad(c, "dv (lse off by 1e-3)", tv1, nv_, rv, nk);
    free(lse2);
    /* pass A without its P / dP cache (recomputed in the second sweep, as for long dense rows) */
    h_setenv("INFLLM_CPU_BW_CACHE_BYTES", "0");
    CHECK_OK(run_backward(&x, &cpu, lse, tq1, tk1, tv1));
    h_unsetenv("INFLLM_CPU_BW_CACHE_BYTES");
    check_grad(c, "dq (no P cache)", tq1, nq_, rq, nq);
    check_grad(c, "dk (no P cache)", tk1, nk_, rk, nk);
    check_grad(c, "dv (no P cache)", tv1, nv_, rv, nk);
    /* one thread: the same bits */
    CHECK_OK(run_backward(&x, &cpu1, lse, tq1, tk1, tv1));
    const size_t es = infllm_dtype_size(c->dt);
    CHECK(!memcmp(tq1, cq, (size_t)nq * es) && !memcmp(tk1, ck, (size_t)nk * es) && !memcmp(tv1, cv, (size_t)nk * es),
          "[%s] 1 and 2 threads differ", c->name);
    printf("  %-28s tq %5lld tk %5lld  dq/dk/dv ok, %lld unattended key elements\n", c->name, (long long)x.tq,
           (long long)x.tk, (long long)zeros);
    void *bufs[] = {out, rq, rk, rv, cq, ck, cv, nq_, nk_, nv_, tq1, tk1, tv1};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    free(lse);
    bdata_free(&x);
}

/* the dense backward equals the sparse one with every block selected, bit for bit */
static void dense_vs_all_blocks(void) {
    bcase c = {"dense-vs-all-blocks", INFLLM_DTYPE_BF16, 6, 2, 64, 32, 2, {70, 33}, {200, 33}, 0, 0, 0};
    bdata x;
    bdata_init(&x, &c, 99);
    const int32_t nbmax = (200 + 31) / 32;
    int32_t *all = malloc((size_t)2 * (size_t)x.tq * (size_t)nbmax * sizeof(int32_t));
    for (int64_t r = 0; r < 2 * x.tq; r++)
        for (int32_t e = 0; e < nbmax; e++) all[r * nbmax + e] = e;
    const int64_t nq = x.tq * 6 * 64, nk = x.tk * 2 * 64;
    void *out = alloc_dt(c.dt, nq);
    float *lse = malloc((size_t)(x.tq * 6) * 4);
    void *a[3] = {alloc_dt(c.dt, nq), alloc_dt(c.dt, nk), alloc_dt(c.dt, nk)};
    void *b[3] = {alloc_dt(c.dt, nq), alloc_dt(c.dt, nk), alloc_dt(c.dt, nk)};
    const infllm_params p = params_for(&c, INFLLM_BACKEND_CPU, 2);
    CHECK_OK(infllm_dense_attention(&p, &x.l, x.q, x.k, x.v, out, lse));
    CHECK_OK(infllm_dense_attention_backward(&p, &x.l, x.q, x.k, x.v, lse, x.dout, a[0], a[1], a[2]));
    CHECK_OK(infllm_sparse_attention_backward(&p, &x.l, x.q, x.k, x.v, all, nbmax, lse, x.dout, b[0], b[1], b[2]));
    const size_t es = infllm_dtype_size(c.dt);
    CHECK(!memcmp(a[0], b[0], (size_t)nq * es) && !memcmp(a[1], b[1], (size_t)nk * es) &&
              !memcmp(a[2], b[2], (size_t)nk * es),
          "dense backward != sparse backward with every block");
    /* the _out calls: the CPU does not read out, and out may be NULL (the plain calls): the same bits */
    CHECK_OK(infllm_dense_attention_backward_out(&p, &x.l, x.q, x.k, x.v, out, lse, x.dout, b[0], b[1], b[2]));
    CHECK(!memcmp(a[0], b[0], (size_t)nq * es) && !memcmp(a[1], b[1], (size_t)nk * es) &&
              !memcmp(a[2], b[2], (size_t)nk * es),
          "infllm_dense_attention_backward_out (out given) != infllm_dense_attention_backward on the CPU");
    CHECK_OK(infllm_sparse_attention_backward_out(&p, &x.l, x.q, x.k, x.v, all, nbmax, NULL, lse, x.dout, b[0], b[1],
                                                  b[2]));
    CHECK(!memcmp(a[0], b[0], (size_t)nq * es) && !memcmp(a[1], b[1], (size_t)nk * es) &&
              !memcmp(a[2], b[2], (size_t)nk * es),
          "infllm_sparse_attention_backward_out (out NULL) != the dense backward");
    CHECK(infllm_sparse_attention_backward_out(&p, &x.l, x.q, x.k, x.v, all, nbmax, out, NULL, x.dout, b[0], b[1],
                                               b[2]) == INFLLM_ERR_NULL_ARG &&
              strstr(infllm_last_error(), "lse"),
          "infllm_sparse_attention_backward_out without lse: want INFLLM_ERR_NULL_ARG naming lse, got '%s'",
          infllm_last_error());
    for (int i = 0; i < 3; i++) {
        free(a[i]);
        free(b[i]);
    }
    free(out);
    free(lse);
    free(all);
    bdata_free(&x);
}

/* ------------------------------------------------ finite differences ---- */
/* loss = sum dout * out of the REF forward (f32 storage, summed in double) */
static double ref_loss(const bdata *x, void *out) {
    const infllm_params ref = params_for(x->c, INFLLM_BACKEND_REF, 1);
    infllm_status st = run_forward(x, &ref, out, NULL);
    if (st != INFLLM_OK) return NAN;
    double L = 0.0;
    const int64_t n = x->tq * x->c->Hq * x->c->D;
    for (int64_t i = 0; i < n; i++) L += (double)x->df[i] * (double)((const float *)out)[i];
    return L;
}

static void finite_differences(const bcase *c) {
    bdata x;
    bdata_init(&x, c, 4242);
    const int64_t nq = x.tq * c->Hq * c->D, nk = x.tk * c->Hkv * c->D;
    float *out = malloc((size_t)nq * 4), *lse = malloc((size_t)(x.tq * c->Hq) * 4);
    float *g[3] = {malloc((size_t)nq * 4), malloc((size_t)nk * 4), malloc((size_t)nk * 4)};
    const infllm_params ref = params_for(c, INFLLM_BACKEND_REF, 1);
    CHECK_OK(run_forward(&x, &ref, out, lse));
    CHECK_OK(run_backward(&x, &ref, lse, g[0], g[1], g[2]));
    /* the loss's rounding noise: each f32 output is rounded (<= 2^-24 relative) in both runs, so the
     * difference of two losses carries about sqrt(sum (dout out)^2) 2^-24 of noise (rows the
     * perturbation does not touch cancel exactly); 4x that, over the step, is the absolute slack,
     * and 1e-3 relative covers the O(h^2) truncation of the central difference */
    double sumsq = 0.0;
    for (int64_t i = 0; i < nq; i++) sumsq += (double)x.df[i] * out[i] * ((double)x.df[i] * out[i]);
    const double noise = 4.0 * sqrt(sumsq) * 0x1p-24;
    float *in[3] = {x.q, x.k, x.v};
    const int64_t n[3] = {nq, nk, nk};
    const char *names[3] = {"q", "k", "v"};
    unsigned long long rs = 7;
    double worst = 0.0;
    for (int a = 0; a < 3; a++)
        for (int s = 0; s < 40; s++) {
            const int64_t i = (int64_t)(h_uniform(&rs) * (double)n[a]);
            const float x0 = in[a][i], xp = x0 + 1e-2f, xm = x0 - 1e-2f;
            in[a][i] = xp;
            const double lp = ref_loss(&x, out);
            in[a][i] = xm;
            const double lm = ref_loss(&x, out);
            in[a][i] = x0;
            const double fd = (lp - lm) / ((double)xp - (double)xm), an = g[a][i];
            const double tol = 1e-3 * fabs(an) + noise / ((double)xp - (double)xm);
            if (fabs(fd - an) / tol > worst) worst = fabs(fd - an) / tol;
            CHECK(fabs(fd - an) <= tol, "[%s] d%s[%lld]: analytic %.8g, finite difference %.8g (tolerance %.3g)",
                  c->name, names[a], (long long)i, an, fd, tol);
        }
    printf("  %-28s finite differences on 120 elements: worst error / tolerance %.2f\n", c->name, worst);
    free(out);
    free(lse);
    for (int a = 0; a < 3; a++) free(g[a]);
    bdata_free(&x);
}

/* Stage 2 alone with block_size 8 under the default kernel stride (16): the forward and backward never use the
 * compression kernels, so block_size need not be a multiple of kernel_stride there (it was refused with
 * INFLLM_ERR_PARAM before). The forward against REF's (f32: within 1e-5 of the largest value), then run_case's
 * backward checks; the selection still refuses these params. */
static void stage2_only_small_block(const bcase *c, unsigned long long seed) {
    bdata x;
    bdata_init(&x, c, seed);
    const infllm_params cpu = params_for(c, INFLLM_BACKEND_CPU, 2), ref = params_for(c, INFLLM_BACKEND_REF, 1);
    const int64_t nq = x.tq * c->Hq * c->D; /* out [tq, Hq, D], lse [tq, Hq] */
    void *out_cpu = alloc_dt(c->dt, nq), *out_ref = alloc_dt(c->dt, nq);
    float *lse_cpu = malloc((size_t)(x.tq * c->Hq + 1) * 4), *lse_ref = malloc((size_t)(x.tq * c->Hq + 1) * 4);
    CHECK_OK(run_forward(&x, &cpu, out_cpu, lse_cpu));
    CHECK_OK(run_forward(&x, &ref, out_ref, lse_ref));
    double worst = 0, amax = 0;
    for (int64_t i = 0; i < nq; i++) {
        const double r = infllm_load_f32(out_ref, c->dt, i);
        worst = fmax(worst, fabs(infllm_load_f32(out_cpu, c->dt, i) - r));
        amax = fmax(amax, fabs(r));
    }
    for (int64_t i = 0; i < x.tq * c->Hq; i++) worst = fmax(worst, fabs((double)lse_cpu[i] - lse_ref[i]));
    CHECK(worst <= 1e-5 * (amax > 1 ? amax : 1), "[%s] forward: CPU vs REF max |diff| %.3g", c->name, worst);
    if (c->topk_cols) {
        int32_t *sel = malloc((size_t)c->Hkv * (size_t)x.tq * (size_t)c->topk_cols * 4 + 4);
        CHECK_STATUS(infllm_select_blocks(&cpu, &x.l, x.q, x.k, sel), INFLLM_ERR_PARAM);
        free(sel);
    }
    free(out_cpu);
    free(out_ref);
    free(lse_cpu);
    free(lse_ref);
    bdata_free(&x);
    run_case(c, seed);
}

/* ------------------------------------------------------ the selection ---- */
/* infllm_select_blocks: CPU (fused) against the CPU's staged ops and REF against REF's (the same
 * blocks, bit for bit), then the training step: infllm_sparse_attention on the selection gives
 * infllm_attention's sparse output and lse, and its backward matches the REF backward. */
/* one sequence (lq2 0) or two; kernel l1 / s1 (0: the defaults), init_blocks */
static void selection_case(const char *name, infllm_dtype dt, int32_t Hq, int32_t Hkv, int32_t D, int32_t B,
                           int32_t topk, int32_t local, int32_t exact, int32_t lq, int32_t lk, int32_t lq2, int32_t lk2,
                           int32_t l1, int32_t s1, int32_t init) {
    bcase c = {name, dt, Hq, Hkv, D, B, lq2 ? 2 : 1, {lq, lq2}, {lk, lk2}, 0, 0, 0};
    bdata x;
    bdata_init(&x, &c, 31337);
    infllm_params cpu = params_for(&c, INFLLM_BACKEND_CPU, 2), ref = params_for(&c, INFLLM_BACKEND_REF, 1);
    cpu.topk = ref.topk = topk;
    cpu.local_blocks = ref.local_blocks = local;
    cpu.exact_lse = ref.exact_lse = exact;
    cpu.init_blocks = ref.init_blocks = init;
    if (l1) cpu.kernel_size = ref.kernel_size = l1;
    if (s1) cpu.kernel_stride = ref.kernel_stride = s1;
    cpu.mode = ref.mode = INFLLM_MODE_SPARSE;
    infllm_sizes sz;
    CHECK_OK(infllm_get_sizes(&cpu, &x.l, &sz));
    const int32_t KO = sz.topk_out;
    const size_t ntk = (size_t)Hkv * (size_t)x.tq * (size_t)KO;
    int32_t *sel_cpu = malloc(ntk * 4), *sel_ref = malloc(ntk * 4), *staged = malloc(ntk * 4);
    void *c1 = alloc_dt(dt, sz.total_n1 * Hkv * D), *c2 = alloc_dt(dt, sz.total_n2 * Hkv * D);
    float *sc = malloc((size_t)Hkv * (size_t)x.tq * (size_t)sz.max_n1 * 4 + 4);
    float *bs = malloc((size_t)Hkv * (size_t)x.tq * (size_t)sz.nblocks_out * 4 + 4);
    CHECK_OK(infllm_select_blocks(&cpu, &x.l, x.q, x.k, sel_cpu));
    CHECK_OK(infllm_select_blocks(&ref, &x.l, x.q, x.k, sel_ref));
    for (int be = 0; be < 2; be++) {
        const infllm_params *pp = be ? &ref : &cpu;
        CHECK_OK(infllm_compress_keys(pp, &x.l, x.k, c1, c2, NULL, NULL));
        CHECK_OK(infllm_stage1_scores(pp, &x.l, x.q, c1, c2, NULL, NULL, sc));
        CHECK_OK(infllm_block_scores(pp, &x.l, sc, bs));
        CHECK_OK(infllm_topk_select(pp, &x.l, bs, staged));
        CHECK(!memcmp(staged, be ? sel_ref : sel_cpu, ntk * 4), "[%s] %s: infllm_select_blocks != the staged ops", name,
              be ? "REF" : "CPU");
    }
    /* forward: the selection + stage 2 is infllm_attention's sparse path */
    const int64_t nq = x.tq * Hq * D, nk = x.tk * Hkv * D;
    void *o1 = alloc_dt(dt, nq), *o2 = alloc_dt(dt, nq);
    float *lse1 = malloc((size_t)x.tq * Hq * 4), *lse2 = malloc((size_t)x.tq * Hq * 4);
    CHECK_OK(infllm_attention(&cpu, &x.l, x.q, x.k, x.v, o1, lse1));
    CHECK_OK(infllm_sparse_attention(&cpu, &x.l, x.q, x.k, x.v, sel_cpu, KO, o2, lse2));
    CHECK(!memcmp(o1, o2, (size_t)nq * infllm_dtype_size(dt)) && !memcmp(lse1, lse2, (size_t)x.tq * Hq * 4),
          "[%s] infllm_sparse_attention on infllm_select_blocks != infllm_attention", name);
    /* backward on that selection */
    bcase cs = c;
    cs.topk_cols = KO;
    x.c = &cs;
    x.topk = sel_cpu;
    void *cq = alloc_dt(dt, nq), *ck = alloc_dt(dt, nk), *cv = alloc_dt(dt, nk);
    void *rq = alloc_dt(dt, nq), *rk = alloc_dt(dt, nk), *rv = alloc_dt(dt, nk);
    void *nq_ = alloc_dt(dt, nq), *nk_ = alloc_dt(dt, nk), *nv_ = alloc_dt(dt, nk);
    CHECK_OK(run_backward(&x, &cpu, lse2, cq, ck, cv));
    CHECK_OK(run_backward(&x, &ref, lse2, rq, rk, rv));
    naive_backward(&x, nq_, nk_, nv_);
    check_grad(&cs, "dq", cq, nq_, rq, nq);
    check_grad(&cs, "dk", ck, nk_, rk, nk);
    check_grad(&cs, "dv", cv, nv_, rv, nk);
    int32_t nsel_min = KO;
    for (size_t i = 0; i < ntk; i += (size_t)KO) {
        int32_t n = 0;
        while (n < KO && sel_cpu[i + (size_t)n] >= 0) n++;
        if (n < nsel_min) nsel_min = n;
    }
    printf("  %-28s %d sequence(s), %lld keys, %d blocks of %d a query (at least %d selected): selection, forward, "
           "backward ok\n", name, c.nseq, (long long)x.tk, KO, B, nsel_min);
    x.topk = NULL;
    void *bufs[] = {sel_cpu, sel_ref, staged, c1, c2, sc, bs, o1, o2, lse1, lse2, cq, ck, cv, rq, rk, rv, nq_, nk_, nv_};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    bdata_free(&x);
}

/* topk past every block ("select them all", up to the 2^24 - 1 the API takes): each query selects blocks 0 .. its own,
 * -1 after. The CPU selection had sized its rows by topk + local_blocks, not by the sequence's blocks: 65,536 queries
 * asked malloc for 65,536 x 2^24 int32 (4 TiB) and the call failed with INFLLM_ERR_NOMEM. */
static void select_topk_past_every_block(void) {
    const int32_t T = 65536, B = 1024;
    const infllm_layout l = h_layout1(INFLLM_DTYPE_BF16, T, T, 1, 1, 16);
    infllm_params p;
    infllm_params_default(&p);
    p.block_size = B;
    p.topk = (1 << 24) - 1;
    p.local_blocks = 0;
    p.num_threads = 2;
    infllm_sizes sz;
    CHECK_OK(infllm_get_sizes(&p, &l, &sz));
    const int32_t KO = sz.topk_out; /* 64 blocks */
    uint16_t *q = calloc((size_t)T * 16, 2), *k = calloc((size_t)T * 16, 2);
    int32_t *sel = calloc((size_t)T * (size_t)KO, 4);
    CHECK_OK(infllm_select_blocks(&p, &l, q, k, sel));
    int64_t bad = 0;
    for (int64_t t = 0; t < T; t++)
        for (int32_t e = 0; e < KO; e++) bad += sel[t * KO + e] != (e <= t / B ? e : -1);
    CHECK(bad == 0, "select with topk 2^24 - 1 over %d blocks: %lld entries are not blocks 0 .. q_block, -1 after",
          KO, (long long)bad);
    free(q);
    free(k);
    free(sel);
}

/* ------------------------------------------------------------ errors ---- */
/* NaN inputs: one element of KV head 0's key at token 200 and one element of the last token's last query head
 * set to NaN (dense, f32, 300 tokens, 4 / 2 heads, d 64). REF's rule: a row that sees a NaN score gets NaN
 * gradients (and gives NaN to every key it attends); a row with keys is never a row without keys (REF's backward
 * had taken an all-NaN row for one: m == -inf). The CPU's dq / dk / dv NaN exactly where REF's are (until session
 * 64 the rows of the NaN key's 64-key tile before it got NaN in dq too: their masked dS, 0, met the NaN key in the
 * tile's product, 0 x NaN, as in flash-attention kernels; the dq product's copy of K now has it zeroed). */
/* value_nan 1: one element of KV head 0's value at token 200 instead, where no dq row is exempt: a masked key's
 * NaN dP (dO . v) adds neither to Delta nor to dS (the Delta sum had taken 0 x NaN, which made every dq row
 * before the NaN value in its tile NaN). */
static void nan_backward(int value_nan) {
    const int32_t Hq = 4, Hkv = 2, D = 64, T = 300, nan_at = 200;
    const infllm_layout l = h_layout1(INFLLM_DTYPE_F32, T, T, Hq, Hkv, D);
    const size_t nq = (size_t)T * Hq * D, nk = (size_t)T * Hkv * D;
    float *q = malloc(nq * 4), *k = malloc(nk * 4), *v = malloc(nk * 4), *dout = malloc(nq * 4);
    unsigned long long rs = 77;
    for (size_t i = 0; i < nq; i++) q[i] = (float)h_normal(&rs), dout[i] = (float)h_normal(&rs);
    for (size_t i = 0; i < nk; i++) k[i] = (float)h_normal(&rs), v[i] = (float)h_normal(&rs);
    if (value_nan) {
        v[(size_t)nan_at * Hkv * D + 3] = NAN;
    } else {
        k[(size_t)nan_at * Hkv * D + 3] = NAN;
        q[((size_t)(T - 1) * Hq + Hq - 1) * D] = NAN;
    }
    float *lse[2], *g[2][3];
    for (int be = 0; be < 2; be++) {
        infllm_params p;
        infllm_params_default(&p);
        p.backend = be ? INFLLM_BACKEND_CPU : INFLLM_BACKEND_REF;
        p.num_threads = 2;
        float *out = malloc(nq * 4);
        lse[be] = malloc((size_t)T * Hq * 4);
        g[be][0] = malloc(nq * 4), g[be][1] = malloc(nk * 4), g[be][2] = malloc(nk * 4);
        CHECK_OK(infllm_dense_attention(&p, &l, q, k, v, out, lse[be]));
        CHECK_OK(infllm_dense_attention_backward(&p, &l, q, k, v, lse[be], dout, g[be][0], g[be][1], g[be][2]));
        free(out);
    }
    const char *what = value_nan ? "a NaN value" : "a NaN key and query";
    size_t nref[3] = {0, 0, 0}, diff[3] = {0, 0, 0};
    for (size_t i = 0; i < nq; i++) { /* every dq row (session 64: the NaN key's tile's rows before it were exempt) */
        nref[0] += isnan(g[0][0][i]);
        diff[0] += isnan(g[0][0][i]) != isnan(g[1][0][i]);
    }
    for (int a = 1; a < 3; a++)
        for (size_t i = 0; i < nk; i++) {
            nref[a] += isnan(g[0][a][i]);
            diff[a] += isnan(g[0][a][i]) != isnan(g[1][a][i]);
        }
    /* dv = P^T dO does not read v: finite with a NaN value */
    CHECK(nref[0] > 0 && nref[1] > 0 && (nref[2] > 0) != value_nan, "%s: REF's gradients NaN in dq %zu, dk %zu, dv %zu",
          what, nref[0], nref[1], nref[2]);
    if (value_nan) /* rows before the NaN value do not attend it: finite in REF */
        CHECK(!isnan(g[0][0][((size_t)(nan_at - 1) * Hq) * D + 5]), "%s: REF's dq of the row before it is NaN", what);
    else /* the NaN query head's own row: NaN in REF (it has keys) */
        CHECK(isnan(g[0][0][((size_t)(T - 1) * Hq + Hq - 1) * D + 5]), "%s: REF's dq of the NaN query row is finite", what);
    CHECK(diff[0] == 0 && diff[1] == 0 && diff[2] == 0,
          "%s: CPU gradients NaN where REF's are not (or not where they are): dq %zu, dk %zu, dv %zu", what, diff[0],
          diff[1], diff[2]);
    for (int be = 0; be < 2; be++) free(lse[be]), free(g[be][0]), free(g[be][1]), free(g[be][2]);
    free(q), free(k), free(v), free(dout);
}

/* the forward (out, lse) and then the backward into g[0..2] = dq, dk, dv of one layout on p's backend: sparse on
 * topk [Hkv, T, K] when topk is given, else dense */
static void forward_backward(const infllm_params *p, const infllm_layout *l, const void *q, const void *k,
                             const void *v, const int32_t *topk, int32_t K, const void *dout, void *out, float *lse,
                             float *const g[3]) {
    CHECK_OK(topk ? infllm_sparse_attention(p, l, q, k, v, topk, K, out, lse)
                  : infllm_dense_attention(p, l, q, k, v, out, lse));
    CHECK_OK(topk ? infllm_sparse_attention_backward(p, l, q, k, v, topk, K, lse, dout, g[0], g[1], g[2])
                  : infllm_dense_attention_backward(p, l, q, k, v, lse, dout, g[0], g[1], g[2]));
}

/* A softmax_scale near the bottom of float's range (1e-38, and the smallest subnormal): the forward's lse is about
 * log(keys), so the CPU backward's shift lse / scale overflowed to inf and every P was 0: dv (the mean of dout over
 * the keys, O(1)) came out 0 against REF's, dq / dk 0 too. dv within 1e-5 of REF's largest value; dq and dk (of
 * the scale's size, subnormal at the bottom) within 1e-41 absolute. Dense and sparse, f32, 100 tokens. */
static void tiny_scale_backward(void) {
    const int32_t Hq = 2, Hkv = 1, D = 32, T = 100, B = 16, K = 3;
    const infllm_layout l = h_layout1(INFLLM_DTYPE_F32, T, T, Hq, Hkv, D);
    const size_t nq = (size_t)T * Hq * D, nk = (size_t)T * Hkv * D;
    float *q = malloc(nq * 4), *k = malloc(nk * 4), *v = malloc(nk * 4), *dout = malloc(nq * 4), *out = malloc(nq * 4);
    float *lse = malloc((size_t)T * Hq * 4);
    int32_t *topk = malloc((size_t)Hkv * T * K * 4);
    unsigned long long rs = 2024;
    for (size_t i = 0; i < nq; i++) q[i] = (float)h_normal(&rs), dout[i] = (float)h_normal(&rs);
    for (size_t i = 0; i < nk; i++) k[i] = (float)h_normal(&rs), v[i] = (float)h_normal(&rs);
    for (int32_t t = 0; t < T; t++) {
        topk[t * K] = t / B; /* the current block, block 0, and one before the current one (or -1) */
        topk[t * K + 1] = 0;
        topk[t * K + 2] = t / B > 1 ? t / B - 2 : -1;
    }
    const float scales[2] = {1e-38f, 1.4e-45f};
    for (int si = 0; si < 2; si++)
        for (int sparse = 0; sparse < 2; sparse++) {
            float *g[2][3];
            for (int be = 0; be < 2; be++) {
                infllm_params p;
                infllm_params_default(&p);
                p.backend = be ? INFLLM_BACKEND_REF : INFLLM_BACKEND_CPU;
                p.num_threads = 2;
                p.block_size = B;
                p.softmax_scale = scales[si];
                g[be][0] = malloc(nq * 4), g[be][1] = malloc(nk * 4), g[be][2] = malloc(nk * 4);
                forward_backward(&p, &l, q, k, v, sparse ? topk : NULL, K, dout, out, lse, g[be]);
            }
            double err[3] = {0, 0, 0}, vmax = 0;
            const size_t n[3] = {nq, nk, nk};
            for (int a = 0; a < 3; a++)
                for (size_t i = 0; i < n[a]; i++) {
                    const double d = fabs((double)g[0][a][i] - g[1][a][i]);
                    if (!(d <= err[a])) err[a] = d;
                    if (a == 2 && fabs(g[1][a][i]) > vmax) vmax = fabs(g[1][a][i]);
                }
            CHECK(err[2] <= 1e-5 * vmax && err[0] <= 1e-41 && err[1] <= 1e-41,
                  "softmax_scale %g, %s: CPU vs REF worst dq %.3g, dk %.3g, dv %.3g (largest dv %.3g)",
                  (double)scales[si], sparse ? "sparse" : "dense", err[0], err[1], err[2], vmax);
            for (int be = 0; be < 2; be++) free(g[be][0]), free(g[be][1]), free(g[be][2]);
        }
    free(q), free(k), free(v), free(dout), free(out), free(lse), free(topk);
}

/* A NaN in a query row that is not the last (token 100 of 300, head 0) and one in a dout row (token 200, head 1),
 * dense and sparse: REF's dk / dv are NaN only for the keys those rows attend. The CPU's pass B multiplied the
 * row's q / dout by the P = dS = 0 of the other keys of its 64-key tile (keys 101-127, 201-255: 0 x NaN), and a NaN
 * row's normalisation made its masked P NaN too, so dk / dv were NaN there as well. Every gradient's NaN pattern
 * must be REF's exactly (dq included: no NaN key here). */
static void nan_rows_backward(void) {
    const int32_t Hq = 4, Hkv = 2, D = 64, T = 300, B = 64, K = 3;
    const infllm_layout l = h_layout1(INFLLM_DTYPE_F32, T, T, Hq, Hkv, D);
    const size_t nq = (size_t)T * Hq * D, nk = (size_t)T * Hkv * D;
    float *q = malloc(nq * 4), *k = malloc(nk * 4), *v = malloc(nk * 4), *dout = malloc(nq * 4), *out = malloc(nq * 4);
    int32_t *topk = malloc((size_t)Hkv * T * K * 4);
    unsigned long long rs = 99;
    for (size_t i = 0; i < nq; i++) q[i] = (float)h_normal(&rs), dout[i] = (float)h_normal(&rs);
    for (size_t i = 0; i < nk; i++) k[i] = (float)h_normal(&rs), v[i] = (float)h_normal(&rs);
    q[((size_t)100 * Hq + 0) * D + 5] = NAN;
    dout[((size_t)200 * Hq + 1) * D + 3] = NAN;
    for (int32_t g = 0; g < Hkv; g++)
        for (int32_t t = 0; t < T; t++) {
            int32_t *row = topk + ((size_t)g * T + t) * K;
            row[0] = t / B, row[1] = 0, row[2] = t / B >= 2 ? t / B - 2 : -1;
        }
    for (int sparse = 0; sparse < 2; sparse++) {
        float *g[2][3], *lse = malloc((size_t)T * Hq * 4);
        for (int be = 0; be < 2; be++) {
            infllm_params p;
            infllm_params_default(&p);
            p.backend = be ? INFLLM_BACKEND_CPU : INFLLM_BACKEND_REF;
            p.num_threads = 2;
            p.block_size = B;
            g[be][0] = malloc(nq * 4), g[be][1] = malloc(nk * 4), g[be][2] = malloc(nk * 4);
            forward_backward(&p, &l, q, k, v, sparse ? topk : NULL, K, dout, out, lse, g[be]);
        }
        size_t nref[3] = {0, 0, 0}, diff[3] = {0, 0, 0};
        const size_t n[3] = {nq, nk, nk};
        for (int a = 0; a < 3; a++)
            for (size_t i = 0; i < n[a]; i++) {
                nref[a] += isnan(g[0][a][i]);
                diff[a] += isnan(g[0][a][i]) != isnan(g[1][a][i]);
            }
        CHECK(nref[0] > 0 && nref[1] > 0 && nref[2] > 0, "NaN q / dout rows, %s: REF's NaN counts dq %zu, dk %zu, dv %zu",
              sparse ? "sparse" : "dense", nref[0], nref[1], nref[2]);
        CHECK(diff[0] == 0 && diff[1] == 0 && diff[2] == 0,
              "NaN q / dout rows, %s: CPU gradients NaN where REF's are not (or not where they are): dq %zu, dk %zu, dv "
              "%zu (of REF's %zu, %zu, %zu)",
              sparse ? "sparse" : "dense", diff[0], diff[1], diff[2], nref[0], nref[1], nref[2]);
        for (int be = 0; be < 2; be++) free(g[be][0]), free(g[be][1]), free(g[be][2]);
        free(lse);
    }
    free(q), free(k), free(v), free(dout), free(out), free(topk);
}

static void error_checks(void) {
    bcase c = {"errors", INFLLM_DTYPE_BF16, 4, 2, 64, 64, 1, {10}, {10}, 2, 0, 0};
    bdata x;
    bdata_init(&x, &c, 5);
    const int64_t nq = x.tq * 4 * 64, nk = x.tk * 2 * 64;
    void *dq = alloc_dt(c.dt, nq), *dk = alloc_dt(c.dt, nk), *dv = alloc_dt(c.dt, nk);
    float *lse = calloc((size_t)x.tq * 4, 4);
    const infllm_params p = params_for(&c, INFLLM_BACKEND_CPU, 1);
    CHECK_STATUS(infllm_sparse_attention_backward(&p, &x.l, x.q, x.k, x.v, x.topk, 2, NULL, x.dout, dq, dk, dv),
                 INFLLM_ERR_NULL_ARG);
    CHECK(strstr(infllm_last_error(), "lse") != NULL, "the message names lse: %s", infllm_last_error());
    CHECK_STATUS(infllm_sparse_attention_backward(&p, &x.l, x.q, x.k, x.v, x.topk, 2, lse, NULL, dq, dk, dv),
                 INFLLM_ERR_NULL_ARG);
    CHECK_STATUS(infllm_sparse_attention_backward(&p, &x.l, x.q, x.k, x.v, NULL, 2, lse, x.dout, dq, dk, dv),
                 INFLLM_ERR_NULL_ARG);
    CHECK_STATUS(infllm_sparse_attention_backward(&p, &x.l, x.q, x.k, x.v, x.topk, 0, lse, x.dout, dq, dk, dv),
                 INFLLM_ERR_SHAPE);
    CHECK_STATUS(infllm_dense_attention_backward(&p, &x.l, x.q, x.k, x.v, lse, x.dout, dq, NULL, dv),
                 INFLLM_ERR_NULL_ARG);
    CHECK_STATUS(infllm_dense_attention_backward(&p, NULL, x.q, x.k, x.v, lse, x.dout, dq, dk, dv),
                 INFLLM_ERR_NULL_ARG);
    infllm_layout bad = x.l;
    bad.head_dim = 100;
    CHECK(infllm_dense_attention_backward(&p, &bad, x.q, x.k, x.v, lse, x.dout, dq, dk, dv) != INFLLM_OK,
          "head_dim 100 accepted");
    CHECK_STATUS(infllm_select_blocks(&p, &x.l, x.q, NULL, x.topk), INFLLM_ERR_NULL_ARG);
    CHECK_STATUS(infllm_select_blocks(&p, &x.l, x.q, x.k, NULL), INFLLM_ERR_NULL_ARG);
    /* the CUDA backend on these host buffers (one sequence, no offsets, max_seqlen given as CUDA needs): without a
     * usable device refused saying so; with one, the host pointers refused naming one (the first checked) as host
     * memory, unless the device reads pageable memory (HMM / ATS), where the call runs */
    const infllm_params cu = params_for(&c, INFLLM_BACKEND_CUDA, 1);
    const infllm_layout l1 = h_layout1(c.dt, x.tq, x.tk, 4, 2, 64);
    const infllm_status cst = infllm_dense_attention_backward(&cu, &l1, x.q, x.k, x.v, lse, x.dout, dq, dk, dv);
    if (!infllm_cuda_available())
        CHECK(cst == INFLLM_ERR_UNSUPPORTED && strstr(infllm_last_error(), "CUDA") != NULL,
              "CUDA backward without a usable device: %s, '%s'", infllm_status_str(cst), infllm_last_error());
    else
        CHECK(cst == INFLLM_OK || (cst == INFLLM_ERR_UNSUPPORTED && strstr(infllm_last_error(), "host memory") != NULL),
              "CUDA backward on plain host buffers: %s, '%s' (want the host memory refused, or accepted where the "
              "device reads pageable memory)", infllm_status_str(cst), infllm_last_error());
    free(dq);
    free(dk);
    free(dv);
    free(lse);
    bdata_free(&x);
}

/* Gradients written over an input: the CPU backward reads q, dout and lse again in pass B after pass A has stored
 * dq (and the next (sequence, KV head) packs k / v after dk / dv of the last were stored), so dq in q's or dout's
 * memory gave wrong dk / dv without a word, where REF (float64 temporaries) gave the right ones and the forward takes
 * out == q. Every backend refuses an overlap of a gradient with an input or with another gradient, naming both;
 * buffers that only touch (dk then dv in one allocation) run and give the separate buffers' bits. */
static void aliased_buffers(void) {
    bcase c = {"aliases", INFLLM_DTYPE_F32, 4, 2, 32, 16, 2, {20, 7}, {40, 30}, 3, 0, 0};
    bdata x;
    bdata_init(&x, &c, 11);
    const int64_t nq = x.tq * c.Hq * c.D, nk = x.tk * c.Hkv * c.D;
    const size_t es = infllm_dtype_size(c.dt);
    char *dq = alloc_dt(c.dt, nq), *dkv = alloc_dt(c.dt, 2 * nk), *dk = alloc_dt(c.dt, nk), *dv = alloc_dt(c.dt, nk);
    float *lse = calloc((size_t)x.tq * c.Hq, sizeof(float));
    /* a gradient over lse / topk_idx: both in one buffer of a gradient's size, so that the gradient's range overlaps
     * nothing else (other allocations may lie right after a small one) */
    char *big = alloc_dt(c.dt, nq > nk ? nq : nk);
    for (int be = 0; be < 2; be++) {
        const infllm_params p = params_for(&c, be ? INFLLM_BACKEND_REF : INFLLM_BACKEND_CPU, 2);
        CHECK_OK(run_forward(&x, &p, dq, lse));
        CHECK_OK(run_backward(&x, &p, lse, dq, dk, dv));
        /* dk and dv back to back in one allocation: no overlap */
        CHECK_OK(infllm_sparse_attention_backward(&p, &x.l, x.q, x.k, x.v, x.topk, 3, lse, x.dout, dq, dkv,
                                                  dkv + nk * es));
        CHECK(!memcmp(dkv, dk, (size_t)nk * es) && !memcmp(dkv + nk * es, dv, (size_t)nk * es),
              "%s: dk / dv back to back in one buffer differ from separate buffers", be ? "REF" : "CPU");
        const struct {
            const char *what, *a, *b; /* the names the message must give */
            void *q, *dout, *dq, *dk, *dv;
            const float *lse;
            const int32_t *topk;
        } cases[] = {
            {"dq = q", "dq", "q", x.q, x.dout, x.q, dk, dv, lse, x.topk},
            {"dq = dout", "dq", "dout", x.q, x.dout, x.dout, dk, dv, lse, x.topk},
            {"dk = k", "dk", "k", x.q, x.dout, dq, x.k, dv, lse, x.topk},
            {"dv one element into v", "dv", "v", x.q, x.dout, dq, dk, (char *)x.v + es, lse, x.topk},
            {"dq over lse", "dq", "lse", x.q, x.dout, big, dk, dv, (const float *)big, x.topk},
            {"dk over topk_idx", "dk", "topk_idx", x.q, x.dout, dq, big, dv, lse, (const int32_t *)big},
            {"dk = dv", "dk", "dv", x.q, x.dout, dq, dk, dk, lse, x.topk},
            {"dv overlapping dk's tail", "dk", "dv", x.q, x.dout, dq, dkv, dkv + (nk - 1) * es, lse, x.topk},
        };
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            const infllm_status st =
                infllm_sparse_attention_backward(&p, &x.l, cases[i].q, x.k, x.v, cases[i].topk, 3, cases[i].lse,
                                                 cases[i].dout, cases[i].dq, cases[i].dk, cases[i].dv);
            const char *msg = infllm_last_error();
            CHECK(st == INFLLM_ERR_PARAM && strstr(msg, cases[i].a) && strstr(msg, cases[i].b) && strstr(msg, "overlap"),
                  "%s sparse backward, %s: %s '%s' (want INFLLM_ERR_PARAM naming %s and %s)", be ? "REF" : "CPU",
                  cases[i].what, infllm_status_str(st), msg, cases[i].a, cases[i].b);
        }
        /* the dense call and the _out variant likewise (out is read by CUDA: an input) */
        CHECK_STATUS(infllm_dense_attention_backward(&p, &x.l, x.q, x.k, x.v, lse, x.dout, x.q, dk, dv),
                     INFLLM_ERR_PARAM);
        CHECK_STATUS(infllm_dense_attention_backward_out(&p, &x.l, x.q, x.k, x.v, dq, lse, x.dout, dq, dk, dv),
                     INFLLM_ERR_PARAM);
        CHECK(strstr(infllm_last_error(), "out") != NULL, "the message names out: %s", infllm_last_error());
    }
    free(big);
    free(dq);
    free(dkv);
    free(dk);
    free(dv);
    free(lse);
    bdata_free(&x);
}

int main(void) {
    if (h_skip_amx_run("test_backward")) return 77;
    const infllm_dtype BF = INFLLM_DTYPE_BF16, F16 = INFLLM_DTYPE_F16, F32 = INFLLM_DTYPE_F32;
    printf("test_backward: attention backward (REF vs finite differences, CPU vs REF)\n");
    /* name, dtype, Hq, Hkv, D, B, nseq, lq[], lk[], topk_cols (0: dense), softmax_scale factor (0: the default) */
    const bcase fd_cases[] = {
        {"fd-sparse-g2-f32", F32, 4, 2, 32, 16, 1, {40}, {64}, 3, 0, 0},
        {"fd-dense-g3-f32", F32, 3, 1, 32, 16, 2, {20, 9}, {20, 30}, 0, 0, 0},
        /* a softmax_scale of the caller's (2.3x and 0.45x the default): the gradients carry it */
        {"fd-sparse-g2-f32-scale-sharp", F32, 4, 2, 32, 16, 1, {40}, {64}, 3, 2.3f, 0},
        {"fd-dense-g3-f32-scale-soft", F32, 3, 1, 32, 16, 2, {20, 9}, {20, 30}, 0, 0.45f, 0},
        /* sliding key windows: the gradients of the windowed attention */
        {"fd-sparse-g2-f32-window", F32, 4, 2, 32, 16, 1, {40}, {64}, 3, 0, 21},
        {"fd-dense-g3-f32-window", F32, 3, 1, 32, 16, 2, {20, 9}, {20, 30}, 0, 0, 7},
    };
    for (size_t i = 0; i < sizeof fd_cases / sizeof fd_cases[0]; i++) finite_differences(&fd_cases[i]);
    const bcase cases[] = {
        {"sparse-g16-bf16-d128", BF, 32, 2, 128, 64, 1, {300}, {300}, 4, 0, 0},
        {"sparse-g3-f16-d64-varlen", F16, 6, 2, 64, 32, 3, {50, 1, 97}, {130, 40, 97}, 5, 0, 0},
        {"sparse-g1-f32-d32-B16", F32, 3, 3, 32, 16, 2, {64, 17}, {64, 200}, 6, 0, 0},
        {"sparse-g4-bf16-B128-chunk", BF, 8, 2, 64, 128, 1, {140}, {600}, 3, 0, 0},
        /* a group above 64 heads (row batches of 64 + 16), blocks of 80 (tiles that straddle two
         * blocks), a one-token decode sequence beside a chunk */
        {"sparse-g80-f32-d32-B80", F32, 80, 1, 32, 80, 2, {1, 30}, {250, 190}, 3, 0, 0},
        /* head_dim 16, a sequence without queries (its keys get 0), one-token sequences */
        {"sparse-d16-tiny-seqs", F32, 2, 1, 16, 16, 3, {0, 5, 1}, {40, 5, 1}, 2, 0, 0},
        /* only the forced current block: the keys before the first query's block are never attended */
        {"sparse-current-only-bf16", BF, 4, 2, 64, 64, 1, {20}, {300}, 1, 0, 0},
        {"dense-g16-bf16-d64", BF, 16, 1, 64, 64, 2, {100, 31}, {100, 160}, 0, 0, 0},
        {"dense-g2-f16-d128", F16, 4, 2, 128, 64, 1, {77}, {200}, 0, 0, 0},
        /* sequences of one 64-key tile (run whole on one thread each) beside one of 65 keys (the team's passes) */
        {"dense-g4-bf16-one-tile-seqs", BF, 8, 2, 64, 64, 3, {64, 1, 30}, {64, 65, 30}, 0, 0, 0},
        /* a softmax_scale other than 1 / sqrt(D), sharper and softer, not a power of two (those scale exactly) */
        {"sparse-g16-bf16-d128-scale-sharp", BF, 32, 2, 128, 64, 1, {300}, {300}, 4, 2.3f, 0},
        {"dense-g3-f32-d96-scale-soft-varlen", F32, 6, 2, 96, 32, 2, {80, 20}, {80, 150}, 0, 0.45f, 0},
        /* sliding key windows: under a tile, across tiles, in a chunk and a decode step */
        {"sparse-g16-bf16-d128-window", BF, 32, 2, 128, 64, 1, {300}, {300}, 4, 0, 150},
        {"dense-g4-f16-d64-window-varlen", F16, 8, 2, 64, 32, 3, {100, 1, 40}, {100, 230, 190}, 0, 0, 45},
        {"dense-g1-f32-window1", F32, 2, 2, 32, 16, 1, {70}, {70}, 0, 0, 1},
        {"sparse-g3-bf16-B80-window-chunk", BF, 6, 2, 64, 80, 1, {90}, {260}, 5, 0, 100},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i], 1000 + i);
    /* seeded random cases (INFLLM_BACKWARD_RANDOM, default 6, from INFLLM_BACKWARD_SEED, default 1):
     * dtype, G, D, block size, 1-3 sequences of prefill / chunk / decode layouts, dense or sparse
     * with 1-8 selection columns; the name carries every parameter, so a failure can be rerun */
    const char *rn = getenv("INFLLM_BACKWARD_RANDOM"), *rsd = getenv("INFLLM_BACKWARD_SEED");
    const int nrand = rn ? atoi(rn) : 6;
    unsigned long long rs = rsd ? strtoull(rsd, NULL, 10) : 1;
    static char names[64][160];
    for (int i = 0; i < nrand && i < 64; i++) {
        static const infllm_dtype dts[3] = {INFLLM_DTYPE_BF16, INFLLM_DTYPE_F16, INFLLM_DTYPE_F32};
        static const int32_t Gs[7] = {1, 2, 3, 4, 8, 16, 24}, Ds[7] = {16, 32, 64, 96, 128, 192, 256}, Bs[6] = {16, 32, 48, 64, 80, 128};
        bcase c;
        memset(&c, 0, sizeof c);
        c.dt = dts[h_rng_next(&rs) % 3];
        const int32_t G = Gs[h_rng_next(&rs) % 7];
        c.Hkv = 1 + (int32_t)(h_rng_next(&rs) % 2);
        c.Hq = G * c.Hkv;
        c.D = Ds[h_rng_next(&rs) % 7];
        c.B = Bs[h_rng_next(&rs) % 6];
        c.nseq = 1 + (int32_t)(h_rng_next(&rs) % 3);
        for (int32_t b = 0; b < c.nseq; b++) {
            c.lk[b] = 1 + (int32_t)(h_rng_next(&rs) % 260);
            const int layout = (int)(h_rng_next(&rs) % 3); /* prefill, chunk, decode */
            c.lq[b] = layout == 0 ? c.lk[b] : layout == 1 ? 1 + (int32_t)(h_rng_next(&rs) % (uint64_t)c.lk[b]) : 1;
        }
        c.topk_cols = h_rng_next(&rs) % 4 == 0 ? 0 : 1 + (int32_t)(h_rng_next(&rs) % 8);
        static const float scale_facs[4] = {0.3f, 0.7f, 1.6f, 3.3f}; /* a quarter at another softmax_scale */
        c.scale_fac = h_rng_next(&rs) % 4 == 0 ? scale_facs[h_rng_next(&rs) % 4] : 0.0f;
        c.window = h_rng_next(&rs) % 4 == 0 ? 1 + (int32_t)(h_rng_next(&rs) % 200) : 0; /* a quarter windowed */
        snprintf(names[i], sizeof names[i], "rand%d-%s-G%d-Hkv%d-D%d-B%d-%s%d-seqs%d-sc%g-win%d", i,
                 infllm_dtype_name(c.dt), G, c.Hkv, c.D, c.B, c.topk_cols ? "sparse" : "dense", c.topk_cols, c.nseq,
                 (double)c.scale_fac, c.window);
        c.name = names[i];
        run_case(&c, 5000 + (unsigned long long)i + 1000 * rs);
    }
    dense_vs_all_blocks();
    const bcase small_block[] = {
        {"stage2-only-B8-sparse-f32", F32, 4, 2, 32, 8, 2, {30, 1}, {45, 20}, 4, 0, 0},
        {"stage2-only-B8-dense-f32", F32, 3, 1, 16, 8, 1, {25}, {40}, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof small_block / sizeof small_block[0]; i++) stage2_only_small_block(&small_block[i], 77 + i);
    /* name, dtype, Hq, Hkv, D, B, topk, local, exact_lse, lq, lk */
    /* name, dtype, Hq, Hkv, D, B, topk, local, exact_lse, lq, lk, lq2, lk2, l1, s1, init_blocks */
    selection_case("select-g16-bf16", BF, 16, 1, 64, 16, 6, 2, 0, 700, 700, 0, 0, 0, 0, 1);
    selection_case("select-g3-f16-exact-chunk", F16, 6, 2, 64, 32, 4, 1, 1, 200, 900, 0, 0, 0, 0, 1);
    /* a varlen batch (a chunk and a short prefill whose queries all select every causal block), kernels
     * 16 / 8, two init blocks, f32 */
    selection_case("select-varlen-k16s8-init2", F32, 4, 2, 32, 32, 3, 1, 0, 150, 620, 90, 90, 16, 8, 2);
    select_topk_past_every_block();
    error_checks();
    aliased_buffers();
    nan_backward(0);
    nan_backward(1);
    tiny_scale_backward();
    nan_rows_backward();
    printf("BACKWARD SUMMARY: %zu grid + %d random + 3 selection cases, worst CPU error / its bound (2 x naive + "
           "floor) = %.2f\n",
           sizeof cases / sizeof cases[0], nrand < 64 ? nrand : 64, g_worst_ratio);
    return finish("test_backward");
}
