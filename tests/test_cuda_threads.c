/*
 * test_cuda_threads.c: the CUDA backend called from several host threads at once, each on its own
 * stream with its own buffers and workspace, as a server does with one request per thread. The
 * threads start together, so the process's first launches of every kernel (the host-side setup a
 * kernel's first launch does: shared-memory attributes, the TMA encode entry point, device
 * properties) race each other. Each thread runs, in its own inputs: a sparse prefill
 * (`infllm_attention`: compression, fused selection, token grouping, stage 2), a dense prefill, a
 * stateless call of 5 and one of 40 queries against the prefix (the few-query kernels), and a decode
 * cache (prefix append, then 4 decode steps); twice. Afterwards the same jobs run again alone, one
 * thread after another: every output and LSE must be bitwise the same, and finite. GPU only: without
 * one it exits 77 (ctest: skipped).
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "harness.h"
#include "infllm.h"

#ifdef INFLLM_HAVE_CUDA
#include <cuda_runtime.h>

#include "cuda_testlib.h"

enum { HQ = 32, HKV = 2, D = 128, NTH = 4, REPS = 2 };
enum { T = 3000, TD = 1500, STEPS = 4 }; /* sparse prefill / prefix, dense prefill, decode steps */

/* one thread's jobs; their outputs one after another in one device buffer, job j's rows from
 * row_of(j): [rows][HQ][D] bf16 and [rows][HQ] f32 */
enum { J_SPARSE, J_DENSE, J_Q5, J_Q40, J_DECODE, NJOB };
static int64_t job_rows(int j) {
    switch (j) {
    case J_SPARSE: return T;
    case J_DENSE: return TD;
    case J_Q5: return 5;
    case J_Q40: return 40;
    default: return STEPS;
    }
}
static int64_t row_of(int j) {
    int64_t r = 0;
    for (int i = 0; i < j; i++) r += job_rows(i);
    return r;
}

typedef struct worker {
    int id;
    cudaStream_t st;
    uint16_t *q, *k, *v; /* device, [T][H][D] */
    uint16_t *out;       /* device, [row_of(NJOB)][HQ][D] */
    float *lse;          /* device, [row_of(NJOB)][HQ] */
    void *ws;
    size_t ws_bytes;
    uint16_t *host_out[REPS + 1]; /* the outputs of each threaded round, then of the solo run */
    float *host_lse[REPS + 1];
    int failed;            /* calls that did not return INFLLM_OK, CUDA errors */
    char first_error[256]; /* the first failure's message */
} worker;

#define OUT_ELEMS ((size_t)row_of(NJOB) * HQ * D)
#define LSE_ELEMS ((size_t)row_of(NJOB) * HQ)

static void note_failure(worker *w, const char *what, const char *why) {
    if (!w->failed) snprintf(w->first_error, sizeof w->first_error, "%s: %s", what, why);
    w->failed++;
}

static void base_params(infllm_params *p, infllm_mode mode, const worker *w) {
    infllm_params_default(p);
    p->backend = INFLLM_BACKEND_CUDA;
    p->mode = mode;
    p->cuda_stream = w->st;
    p->workspace = w->ws;
    p->workspace_bytes = w->ws_bytes;
    p->topk = 16; /* 16 + 8 local of 47 blocks at T: the selection prunes */
    p->local_blocks = 8;
}

static void base_layout(infllm_layout *l, int64_t lq, int64_t lk) { *l = h_layout1(INFLLM_DTYPE_BF16, lq, lk, HQ, HKV, D); }

/* the stateless call of the last lq of lk tokens into job slot j */
static void attention_job(worker *w, int j, infllm_mode mode, int64_t lq, int64_t lk) {
    infllm_params p;
    infllm_layout l;
    base_params(&p, mode, w);
    base_layout(&l, lq, lk);
    const infllm_status s = infllm_attention(&p, &l, w->q + (lk - lq) * HQ * D, w->k, w->v,
                                             w->out + (size_t)row_of(j) * HQ * D, w->lse + (size_t)row_of(j) * HQ);
    if (s) note_failure(w, "infllm_attention", infllm_last_error());
}

static void run_round(worker *w, int slot) {
    cudaMemsetAsync(w->out, 0xff, OUT_ELEMS * 2, w->st); /* poison: unwritten outputs show as NaN */
    cudaMemsetAsync(w->lse, 0xff, LSE_ELEMS * 4, w->st);
    attention_job(w, J_SPARSE, INFLLM_MODE_SPARSE, T, T);
    attention_job(w, J_DENSE, INFLLM_MODE_DENSE, TD, TD);
    attention_job(w, J_Q5, INFLLM_MODE_SPARSE, 5, T);
    attention_job(w, J_Q40, INFLLM_MODE_SPARSE, 40, T);
    infllm_params p;
    base_params(&p, INFLLM_MODE_SPARSE, w);
    infllm_cache *c = NULL;
    infllm_status s = infllm_cache_create(&p, INFLLM_DTYPE_BF16, HKV, D, T, &c);
    if (s) {
        note_failure(w, "infllm_cache_create", infllm_last_error());
    } else {
        const int64_t kr = (int64_t)HKV * D, qr = (int64_t)HQ * D, pre = T - STEPS;
        if ((s = infllm_cache_append(c, w->k, w->v, pre))) note_failure(w, "infllm_cache_append", infllm_last_error());
        for (int t = 0; t < STEPS && !s; t++) {
            s = infllm_cache_append(c, w->k + (pre + t) * kr, w->v + (pre + t) * kr, 1);
            if (s) {
                note_failure(w, "infllm_cache_append", infllm_last_error());
                break;
            }
            s = infllm_cache_attend(c, &p, w->q + (pre + t) * qr, 1, HQ,
                                    w->out + (size_t)(row_of(J_DECODE) + t) * qr,
                                    w->lse + (size_t)(row_of(J_DECODE) + t) * HQ);
            if (s) note_failure(w, "infllm_cache_attend", infllm_last_error());
        }
        cudaStreamSynchronize(w->st); /* the cache's own kernels ran on p.cuda_stream */
        infllm_cache_free(c);
    }
    cudaError_t e = cudaStreamSynchronize(w->st);
    if (e != cudaSuccess) note_failure(w, "stream", cudaGetErrorString(e));
    e = cudaMemcpy(w->host_out[slot], w->out, OUT_ELEMS * 2, cudaMemcpyDeviceToHost);
    if (e == cudaSuccess) e = cudaMemcpy(w->host_lse[slot], w->lse, LSE_ELEMS * 4, cudaMemcpyDeviceToHost);
    if (e != cudaSuccess) note_failure(w, "copy back", cudaGetErrorString(e));
}

static pthread_barrier_t g_start;

static void *thread_main(void *arg) {
    worker *w = arg;
    pthread_barrier_wait(&g_start); /* the first launches of all threads together */
    for (int r = 0; r < REPS; r++) run_round(w, r);
    return NULL;
}

static size_t nonfinite(const uint16_t *o) {
    size_t bad = 0;
    for (int64_t i = 0; i < (int64_t)OUT_ELEMS; i++) bad += !isfinite(infllm_load_f32(o, INFLLM_DTYPE_BF16, i));
    return bad;
}

static int alloc_worker(worker *w, int id) {
    memset(w, 0, sizeof *w);
    w->id = id;
    if (cudaStreamCreateWithFlags(&w->st, cudaStreamNonBlocking) != cudaSuccess) return 0;
    const size_t qb = (size_t)T * HQ * D * 2, kb = (size_t)T * HKV * D * 2;
    uint16_t *hq = malloc(qb), *hk = malloc(kb), *hv = malloc(kb);
    if (!hq || !hk || !hv) return 0;
    unsigned long long rs = 7000 + (unsigned long long)id;
    h_fill_qkv_normal(hq, (size_t)T * HQ * D, hk, hv, (size_t)T * HKV * D, INFLLM_DTYPE_BF16, &rs);
    int ok = cudaMalloc((void **)&w->q, qb) == cudaSuccess && cudaMalloc((void **)&w->k, kb) == cudaSuccess &&
             cudaMalloc((void **)&w->v, kb) == cudaSuccess && cudaMalloc((void **)&w->out, OUT_ELEMS * 2) == cudaSuccess &&
             cudaMalloc((void **)&w->lse, LSE_ELEMS * 4) == cudaSuccess;
    if (ok) {
        cudaMemcpy(w->q, hq, qb, cudaMemcpyHostToDevice);
        cudaMemcpy(w->k, hk, kb, cudaMemcpyHostToDevice);
        cudaMemcpy(w->v, hv, kb, cudaMemcpyHostToDevice);
    }
    free(hq), free(hk), free(hv);
    if (!ok) return 0;
    /* one workspace for every call of the thread: the largest any of them needs */
    static const int64_t shapes[][2] = {{T, T}, {TD, TD}, {5, T}, {40, T}};
    for (int i = 0; i < 4; i++) {
        infllm_params p;
        infllm_layout l;
        base_params(&p, i == 1 ? INFLLM_MODE_DENSE : INFLLM_MODE_SPARSE, w);
        base_layout(&l, shapes[i][0], shapes[i][1]);
        size_t b = 0;
        if (infllm_attention_workspace_size(&p, &l, &b)) return 0;
        if (b > w->ws_bytes) w->ws_bytes = b;
    }
    {
        infllm_params p;
        base_params(&p, INFLLM_MODE_SPARSE, w);
        infllm_cache *c = NULL;
        size_t b = 0;
        if (infllm_cache_create(&p, INFLLM_DTYPE_BF16, HKV, D, T, &c)) return 0;
        infllm_status s = infllm_cache_workspace_size(c, &p, 1, HQ, &b);
        infllm_cache_free(c);
        if (s) return 0;
        if (b > w->ws_bytes) w->ws_bytes = b;
    }
    if (cudaMalloc(&w->ws, w->ws_bytes ? w->ws_bytes : 16) != cudaSuccess) return 0;
    for (int r = 0; r <= REPS; r++) {
        w->host_out[r] = malloc(OUT_ELEMS * 2);
        w->host_lse[r] = malloc(LSE_ELEMS * 4);
        if (!w->host_out[r] || !w->host_lse[r]) return 0;
    }
    return 1;
}
#endif

int main(void) {
#ifndef INFLLM_HAVE_CUDA
    printf("test_cuda_threads: SKIP (built without CUDA)\n");
    return 77;
#else
    if (!cuda_test_device_line("test_cuda_threads")) return 77;
    worker w[NTH];
    for (int i = 0; i < NTH; i++)
        if (!alloc_worker(&w[i], i)) {
            fprintf(stderr, "test_cuda_threads: setup of thread %d failed (device memory?)\n", i);
            return 2;
        }
    pthread_barrier_init(&g_start, NULL, NTH);
    pthread_t th[NTH];
    int started = 0;
    for (int i = 0; i < NTH; i++)
        if (pthread_create(&th[i], NULL, thread_main, &w[i]) == 0) started++;
    if (started != NTH) {
        fprintf(stderr, "test_cuda_threads: started %d of %d threads\n", started, NTH);
        return 2; /* the barrier would never open for the ones started */
    }
    for (int i = 0; i < NTH; i++) pthread_join(th[i], NULL);
    pthread_barrier_destroy(&g_start);
    /* the same jobs alone, one thread's after another's, on the main thread */
    for (int i = 0; i < NTH; i++) run_round(&w[i], REPS);
    for (int i = 0; i < NTH; i++) {
        CHECK(w[i].failed == 0, "thread %d: %d failures, the first: %s", i, w[i].failed, w[i].first_error);
        CHECK(nonfinite(w[i].host_out[REPS]) == 0, "thread %d: outputs not finite when run alone", i);
        for (int r = 0; r < REPS; r++) {
            int same = 1;
            for (int j = 0; j < NJOB; j++) {
                const size_t o0 = (size_t)row_of(j) * HQ * D, l0 = (size_t)row_of(j) * HQ,
                             on = (size_t)job_rows(j) * HQ * D, ln = (size_t)job_rows(j) * HQ;
                const int eq = !memcmp(w[i].host_out[r] + o0, w[i].host_out[REPS] + o0, on * 2) &&
                               !memcmp(w[i].host_lse[r] + l0, w[i].host_lse[REPS] + l0, ln * 4);
                CHECK(eq, "thread %d, round %d, job %d: differs from the same call run alone", i, r, j);
                same &= eq;
            }
            if (same) h_passed++;
        }
    }
    if (NTH > 1)
        CHECK(memcmp(w[0].host_out[REPS], w[1].host_out[REPS], (size_t)T * HQ * D * 2) != 0,
              "threads 0 and 1 have the same sparse output: their inputs are not distinct");
    printf("test_cuda_threads: %d threads x %d rounds, each its own stream (sparse %d, dense %d, 5 and 40 queries, "
           "%d decode steps), first launches concurrent, bitwise equal to the calls run alone\n",
           NTH, REPS, T, TD, STEPS);
    for (int i = 0; i < NTH; i++) {
        cudaFree(w[i].q), cudaFree(w[i].k), cudaFree(w[i].v), cudaFree(w[i].out), cudaFree(w[i].lse), cudaFree(w[i].ws);
        cudaStreamDestroy(w[i].st);
        for (int r = 0; r <= REPS; r++) free(w[i].host_out[r]), free(w[i].host_lse[r]);
    }
    return finish("test_cuda_threads");
#endif
}
