/*
 * test_threads.c: the public API called from several host threads at once (CPU backend), as a server
 * does with one request per thread. Each thread runs its own jobs on its own inputs: the whole
 * pipeline (infllm_attention, sparse), dense attention, the fused selection + sparse forward + backward,
 * and a decode cache (prefix append, then decode steps), several times over; every result must be
 * bitwise the one the same job gave when run alone beforehand. Meanwhile one thread makes invalid calls
 * and checks that infllm_last_error() reports its own error, not another thread's. The library keeps no
 * shared mutable state on these paths (the error text and the CPU path's working-memory counters are
 * thread-local), which is what this checks from the outside; run under -fsanitize=thread it also finds
 * races that leave the outputs intact.
 *
 * INFLLM_THREADS_TEST_THREADS (default 4) host threads, INFLLM_THREADS_TEST_REPS (default 3) rounds;
 * each call uses INFLLM_THREADS_TEST_OMP (default 2) OpenMP threads, so the teams of several calls run
 * at the same time (1 under ThreadSanitizer, which does not understand libgomp's barriers).
 */
#include <pthread.h>
#include <stdint.h>

#include "harness.h"
#include "infllm.h"
#ifdef INFLLM_HAVE_MODEL
#include "sample.h"
#endif

#define HQ 8
#define HKV 2
#define D 64
#define T 1536       /* keys = queries of the prefill jobs: 24 blocks of 64 */
#define PREFIX 1400  /* decode cache: prefix, then T - PREFIX decode steps */
#define MAXT 16

typedef struct job_out {
    uint16_t *attn, *dense, *fwd, *dq, *dk, *dv, *dec; /* bf16 outputs */
    float *attn_lse, *dense_lse;
    int32_t *topk;
    int status; /* 0: every call returned OK */
} job_out;

typedef struct job {
    int id;
    uint16_t *q, *k, *v, *dout; /* [T][H][D] bf16 inputs, seeded by id */
    job_out ref;                /* the job run alone */
    int reps;
    int mismatches; /* results of the threaded runs that differ from ref */
    int failed_calls;
    int wrong_errors; /* failed calls whose infllm_last_error() was not their own */
} job;

static uint16_t to_bf16(float f) {
    union {
        float f;
        uint32_t u;
    } x = {f};
    uint32_t r = x.u + 0x7fffu + ((x.u >> 16) & 1u);
    return (uint16_t)(r >> 16);
}

static void fill(uint16_t *a, size_t n, unsigned long long *seed) {
    for (size_t i = 0; i < n; i++) a[i] = to_bf16((float)h_normal(seed));
}

static int g_omp_threads = 2;

static void params_of(infllm_params *p) {
    infllm_params_default(p);
    p->topk = 6; /* 6 + 2 local blocks of 24: the selection prunes */
    p->local_blocks = 2;
    p->dense_len = -1;
    p->mode = INFLLM_MODE_SPARSE;
    p->backend = INFLLM_BACKEND_CPU;
    p->num_threads = g_omp_threads;
}

/* one sequence of nq queries, the last of nk keys */
static void layout_of(infllm_layout *l, int64_t nq, int64_t nk) { *l = h_layout1(INFLLM_DTYPE_BF16, nq, nk, HQ, HKV, D); }

static int alloc_out(job_out *o) {
    const size_t qn = (size_t)T * HQ * D, kn = (size_t)T * HKV * D;
    o->attn = malloc(qn * 2);
    o->dense = malloc(qn * 2);
    o->fwd = malloc(qn * 2);
    o->dq = malloc(qn * 2);
    o->dk = malloc(kn * 2);
    o->dv = malloc(kn * 2);
    o->dec = malloc((size_t)(T - PREFIX) * HQ * D * 2);
    o->attn_lse = malloc((size_t)T * HQ * sizeof(float));
    o->dense_lse = malloc((size_t)T * HQ * sizeof(float));
    o->topk = malloc((size_t)HKV * T * 8 * sizeof(int32_t));
    o->status = 0;
    return o->attn && o->dense && o->fwd && o->dq && o->dk && o->dv && o->dec && o->attn_lse && o->dense_lse &&
           o->topk;
}

static void free_out(job_out *o) {
    free(o->attn);
    free(o->dense);
    free(o->fwd);
    free(o->dq);
    free(o->dk);
    free(o->dv);
    free(o->dec);
    free(o->attn_lse);
    free(o->dense_lse);
    free(o->topk);
}

/* every job of one input set into o; o->status counts the calls that did not return OK */
static void run_jobs(const job *j, job_out *o) {
    infllm_params p;
    infllm_layout l;
    params_of(&p);
    layout_of(&l, T, T);
    int bad = 0;
    bad += infllm_attention(&p, &l, j->q, j->k, j->v, o->attn, o->attn_lse) != INFLLM_OK;
    bad += infllm_dense_attention(&p, &l, j->q, j->k, j->v, o->dense, o->dense_lse) != INFLLM_OK;
    infllm_sizes sz;
    bad += infllm_get_sizes(&p, &l, &sz) != INFLLM_OK;
    if (!bad && sz.topk_out == 8) {
        float *lse = malloc((size_t)T * HQ * sizeof(float));
        bad += !lse;
        if (lse) {
            bad += infllm_select_blocks(&p, &l, j->q, j->k, o->topk) != INFLLM_OK;
            bad += infllm_sparse_attention(&p, &l, j->q, j->k, j->v, o->topk, 8, o->fwd, lse) != INFLLM_OK;
            bad += infllm_sparse_attention_backward(&p, &l, j->q, j->k, j->v, o->topk, 8, lse, j->dout, o->dq, o->dk,
                                                    o->dv) != INFLLM_OK;
            free(lse);
        }
    } else {
        bad++;
    }
    infllm_cache *c = NULL;
    bad += infllm_cache_create(&p, INFLLM_DTYPE_BF16, HKV, D, T, &c) != INFLLM_OK;
    if (c) {
        const size_t kr = (size_t)HKV * D, qr = (size_t)HQ * D;
        bad += infllm_cache_append(c, j->k, j->v, PREFIX) != INFLLM_OK;
        for (int t = PREFIX; t < T; t++) {
            bad += infllm_cache_append(c, j->k + t * kr, j->v + t * kr, 1) != INFLLM_OK;
            bad += infllm_cache_attend(c, &p, j->q + t * qr, 1, HQ, o->dec + (t - PREFIX) * qr, NULL) != INFLLM_OK;
        }
        infllm_cache_free(c);
    }
    o->status = bad;
}

static int same_out(const job_out *a, const job_out *b) {
    const size_t qn = (size_t)T * HQ * D * 2, kn = (size_t)T * HKV * D * 2, ln = (size_t)T * HQ * sizeof(float);
    return !memcmp(a->attn, b->attn, qn) && !memcmp(a->dense, b->dense, qn) && !memcmp(a->fwd, b->fwd, qn) &&
           !memcmp(a->dq, b->dq, qn) && !memcmp(a->dk, b->dk, kn) && !memcmp(a->dv, b->dv, kn) &&
           !memcmp(a->dec, b->dec, (size_t)(T - PREFIX) * HQ * D * 2) && !memcmp(a->attn_lse, b->attn_lse, ln) &&
           !memcmp(a->dense_lse, b->dense_lse, ln) && !memcmp(a->topk, b->topk, (size_t)HKV * T * 8 * sizeof(int32_t));
}

static void *worker(void *arg) {
    job *j = arg;
    job_out o;
    if (!alloc_out(&o)) {
        j->failed_calls++;
        free_out(&o);
        return NULL;
    }
    for (int r = 0; r < j->reps; r++) {
        run_jobs(j, &o);
        j->failed_calls += o.status;
        if (!same_out(&o, &j->ref)) j->mismatches++;
        /* errors of this thread too, with their own message, while the error thread checks its own */
        for (int e = 0; e < 200; e++) {
            infllm_params p;
            infllm_layout l;
            params_of(&p);
            layout_of(&l, 4, 4);
            l.num_seqs = 0;
            infllm_status st = infllm_dense_attention(&p, &l, j->q, j->k, j->v, o.dense, NULL);
            const char *msg = infllm_last_error();
            if (st != INFLLM_ERR_SHAPE || !msg || !strstr(msg, "num_seqs")) j->wrong_errors++;
        }
    }
    free_out(&o);
    return NULL;
}

/* invalid calls while the workers run, in two threads with different errors: each call must fail
 * with its own thread's message (a message shared between threads shows up here within a few
 * thousand calls) */
typedef struct err_job {
    int kind, calls, wrong;
} err_job;

static void *error_worker(void *arg) {
    err_job *e = arg;
    uint16_t buf[4 * HQ * 16] = {0};
    for (int r = 0; r < e->calls; r++) {
        infllm_params p;
        infllm_layout l;
        params_of(&p);
        layout_of(&l, 4, 4);
        if (e->kind == 0) {
            l.head_dim = 7; /* not a supported head_dim */
            infllm_status st = infllm_dense_attention(&p, &l, buf, buf, buf, buf, NULL);
            const char *msg = infllm_last_error();
            if (st != INFLLM_ERR_HEAD_DIM || !msg || !strstr(msg, "head_dim 7 ")) e->wrong++;
        } else {
            l.num_kv_heads = 3; /* Hq % Hkv != 0 */
            infllm_status st = infllm_dense_attention(&p, &l, buf, buf, buf, buf, NULL);
            const char *msg = infllm_last_error();
            if (st != INFLLM_ERR_GQA || !msg || !strstr(msg, "not a multiple of Hkv (3)")) e->wrong++;
        }
    }
    return NULL;
}

#ifdef INFLLM_HAVE_MODEL
/* The model runtime's sampler, one per thread (a server's sessions): each thread draws SAMPLE_DRAWS tokens at a
 * high temperature from its own logits over its own vocabulary (sizes differ between threads, so a sort that read
 * another thread's logits would also read past them), and must draw what it drew alone. Until session 43 the
 * candidates' sort compared through a global pointer to the logits (qsort has no context argument), so threads
 * sorted by each other's logits. */
#define SAMPLE_DRAWS 60
typedef struct sample_job {
    int V;
    float *logits;
    int32_t ref[SAMPLE_DRAWS], got[SAMPLE_DRAWS];
    int failed;
} sample_job;

static void sample_run(sample_job *j, int32_t *out) {
    mdl_sampler s;
    if (mdl_sampler_init(&s, j->V, 2.0f, 0, 1.0f, 1.0f, 7)) {
        j->failed = 1;
        mdl_sampler_free(&s);
        return;
    }
    float *lg = malloc(sizeof(float) * (size_t)j->V);
    for (int i = 0; lg && i < SAMPLE_DRAWS; i++) {
        memcpy(lg, j->logits, sizeof(float) * (size_t)j->V);
        out[i] = mdl_sample(&s, lg, NULL, 0);
    }
    if (!lg) j->failed = 1;
    free(lg);
    mdl_sampler_free(&s);
}

static void *sample_worker(void *arg) {
    sample_job *j = arg;
    sample_run(j, j->got);
    return NULL;
}

static void sampler_threads(int nthreads) {
    sample_job sj[MAXT];
    unsigned long long seed = 99;
    for (int i = 0; i < nthreads; i++) {
        sj[i].V = 4000 + 9000 * (i % 3); /* 4,000 / 13,000 / 22,000 tokens */
        sj[i].failed = 0;
        sj[i].logits = malloc(sizeof(float) * (size_t)sj[i].V);
        if (!sj[i].logits) {
            CHECK(0, "out of memory (sampler logits)");
            return;
        }
        for (int t = 0; t < sj[i].V; t++) sj[i].logits[t] = (float)h_normal(&seed);
        sample_run(&sj[i], sj[i].ref); /* alone */
    }
    pthread_t th[MAXT];
    int started = 0;
    for (int i = 0; i < nthreads; i++)
        if (pthread_create(&th[started], NULL, sample_worker, &sj[i]) == 0) started++;
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < started; i++) {
        CHECK(!sj[i].failed, "sampler thread %d: sampler_init or a draw failed", i);
        CHECK(memcmp(sj[i].ref, sj[i].got, sizeof sj[i].ref) == 0,
              "sampler thread %d (vocab %d): draws differ from the same draws alone", i, sj[i].V);
    }
    for (int i = 0; i < nthreads; i++) free(sj[i].logits);
}
#endif

static int env_int(const char *name, int def, int lo, int hi) {
    const char *s = getenv(name);
    if (!s || !*s) return def;
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || v < lo || v > hi) {
        fprintf(stderr, "%s: want an integer in [%d, %d], got '%s'\n", name, lo, hi, s);
        exit(2);
    }
    return (int)v;
}

int main(void) {
    const int nthreads = env_int("INFLLM_THREADS_TEST_THREADS", 4, 1, MAXT);
    const int reps = env_int("INFLLM_THREADS_TEST_REPS", 3, 1, 100);
    g_omp_threads = env_int("INFLLM_THREADS_TEST_OMP", 2, 1, 64);
    job jobs[MAXT];
    const size_t qn = (size_t)T * HQ * D, kn = (size_t)T * HKV * D;
    int ok = 1;
    for (int i = 0; i < nthreads; i++) {
        job *j = &jobs[i];
        memset(j, 0, sizeof *j);
        j->id = i;
        j->reps = reps;
        unsigned long long seed = 1000 + (unsigned long long)i;
        j->q = malloc(qn * 2);
        j->k = malloc(kn * 2);
        j->v = malloc(kn * 2);
        j->dout = malloc(qn * 2);
        if (!j->q || !j->k || !j->v || !j->dout || !alloc_out(&j->ref)) {
            fprintf(stderr, "out of memory\n");
            return 1;
        }
        fill(j->q, qn, &seed);
        fill(j->k, kn, &seed);
        fill(j->v, kn, &seed);
        fill(j->dout, qn, &seed);
        run_jobs(j, &j->ref); /* alone */
        CHECK(j->ref.status == 0, "input set %d: %d calls failed when run alone (%s)", i, j->ref.status,
              infllm_last_error());
        ok &= j->ref.status == 0;
    }
    /* the input sets must give different results, or a thread reading another's data could pass */
    if (nthreads > 1) CHECK(memcmp(jobs[0].ref.attn, jobs[1].ref.attn, qn * 2) != 0, "input sets 0 and 1 agree");
    if (!ok) return finish("test_threads");

    pthread_t th[MAXT + 2];
    err_job ej[2] = {{0, 100000 * reps, 0}, {1, 100000 * reps, 0}};
    int started = 0, err_started = 0;
    for (int i = 0; i < 2; i++)
        if (pthread_create(&th[started], NULL, error_worker, &ej[i]) == 0) started++, err_started++;
    for (int i = 0; i < nthreads; i++)
        if (pthread_create(&th[started], NULL, worker, &jobs[i]) == 0) started++;
    CHECK(started == nthreads + 2, "started %d of %d threads", started, nthreads + 2);
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < nthreads; i++) {
        CHECK(jobs[i].failed_calls == 0, "thread %d: %d calls failed", i, jobs[i].failed_calls);
        CHECK(jobs[i].wrong_errors == 0, "thread %d: %d failed calls did not report their own error", i,
              jobs[i].wrong_errors);
        CHECK(jobs[i].mismatches == 0, "thread %d: %d of %d rounds differ from the same jobs run alone", i,
              jobs[i].mismatches, reps);
    }
    for (int i = 0; i < err_started; i++)
        CHECK(ej[i].wrong == 0, "error thread %d: %d of %d calls did not report their own error", i, ej[i].wrong,
              ej[i].calls);
    printf("%d threads x %d rounds (attention, dense, select + sparse forward + backward, %d decode steps) "
           "bitwise equal to the calls run alone\n",
           nthreads, reps, T - PREFIX);
#ifdef INFLLM_HAVE_MODEL
    sampler_threads(nthreads > 1 ? nthreads : 2);
#endif
    for (int i = 0; i < nthreads; i++) {
        free(jobs[i].q);
        free(jobs[i].k);
        free(jobs[i].v);
        free(jobs[i].dout);
        free_out(&jobs[i].ref);
    }
    return finish("test_threads");
}
