/*
 * test_cuda_capture.c: CUDA graph capture of calls whose kernels run for the first time in the
 * process, in the strictest capture mode (cudaStreamCaptureModeGlobal), with caller workspace.
 * The library does some host-side setup once per kernel or per process on a kernel's first launch
 * (shared-memory attributes, the TMA encode entry point, device properties); a model runtime that
 * captures its very first decode step would hit all of it inside the capture. test_cuda_cache
 * captures only after eager calls, so this is the only test of it.
 *
 * Each call below is captured first (so nothing of it ran before), the graph replayed twice, then
 * the same call made eagerly: the replay's output and LSE must equal the eager ones bit for bit, and
 * the eager output must be finite (it is poisoned with NaN bytes before each run). In order, each
 * the first use of its kernels: a sparse prefill (compression, fused selection, token grouping,
 * stage 2), a dense prefill, a stateless call of 5 queries (the decode kernels' 4-token selection),
 * one of 40 queries (the small-batch selection and split stage 2), and a decode-cache attend of one
 * query (the 1-warp selection kernels). GPU only: without one it exits 77 (ctest: skipped).
 */
#include <math.h>
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

enum { HQ = 32, HKV = 2, D = 128 };

typedef struct call {
    const char *name;
    infllm_params p;
    infllm_layout l;
    infllm_cache *cache; /* non-NULL: infllm_cache_attend of the last l.total_q queries */
    const void *q, *k, *v;
    void *out;
    float *lse;
} call;

static infllm_status run_call(const call *c) {
    if (c->cache) return infllm_cache_attend(c->cache, &c->p, c->q, c->l.total_q, HQ, c->out, c->lse);
    return infllm_attention(&c->p, &c->l, c->q, c->k, c->v, c->out, c->lse);
}

static void capture_then_eager(const call *c, cudaStream_t st) {
    const size_t ob = (size_t)c->l.total_q * HQ * D * 2, lb = (size_t)c->l.total_q * HQ * 4;
    cudaMemsetAsync(c->out, 0xff, ob, st);
    cudaMemsetAsync(c->lse, 0xff, lb, st);
    cudaStreamSynchronize(st);
    cudaGraph_t g = NULL;
    cudaGraphExec_t ge = NULL;
    cudaError_t e = cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal);
    CHECK(e == cudaSuccess, "%s: begin capture: %s", c->name, cudaGetErrorString(e));
    if (e != cudaSuccess) return;
    const infllm_status s = run_call(c);
    const char *why = s ? infllm_last_error() : "";
    e = cudaStreamEndCapture(st, &g);
    CHECK(s == INFLLM_OK, "%s: the call under capture failed: %s", c->name, why);
    CHECK(e == cudaSuccess && g, "%s: end capture: %s (something the call did was not capture-safe)", c->name,
          cudaGetErrorString(e));
    if (s || e != cudaSuccess || !g) {
        (void)cudaGetLastError();
        if (g) cudaGraphDestroy(g);
        return;
    }
    e = cudaGraphInstantiate(&ge, g, 0);
    CHECK(e == cudaSuccess, "%s: instantiate: %s", c->name, cudaGetErrorString(e));
    for (int rep = 0; rep < 2 && e == cudaSuccess; rep++) {
        e = cudaGraphLaunch(ge, st);
        CHECK(e == cudaSuccess, "%s: graph launch: %s", c->name, cudaGetErrorString(e));
    }
    e = cudaStreamSynchronize(st);
    CHECK(e == cudaSuccess, "%s: replay: %s", c->name, cudaGetErrorString(e));
    uint16_t *go = to_host(c->out, ob);
    float *gl = to_host(c->lse, lb);
    cudaMemsetAsync(c->out, 0xff, ob, st);
    cudaMemsetAsync(c->lse, 0xff, lb, st);
    CHECK_OK(run_call(c));
    e = cudaStreamSynchronize(st);
    CHECK(e == cudaSuccess, "%s: eager call: %s", c->name, cudaGetErrorString(e));
    uint16_t *eo = to_host(c->out, ob);
    float *el = to_host(c->lse, lb);
    size_t nonfinite = 0;
    for (size_t i = 0; i < ob / 2; i++) nonfinite += !isfinite(infllm_load_f32(eo, INFLLM_DTYPE_BF16, (int64_t)i));
    CHECK(nonfinite == 0, "%s: %zu output elements not finite (left unwritten?)", c->name, nonfinite);
    CHECK(memcmp(go, eo, ob) == 0 && memcmp(gl, el, lb) == 0, "%s: the graph's replay differs from the eager call",
          c->name);
    printf("  %-34s captured first, replayed, equal to the eager call\n", c->name);
    free(go), free(gl), free(eo), free(el);
    cudaGraphExecDestroy(ge);
    cudaGraphDestroy(g);
}

/* a call of the last lq of lk tokens of the buffers below (one sequence), its own workspace */
static call make_call(const char *name, infllm_mode mode, int64_t lq, int64_t lk, const uint16_t *dq,
                      const uint16_t *dk, const uint16_t *dv, void *out, float *lse, cudaStream_t st, void **ws) {
    call c;
    memset(&c, 0, sizeof c);
    c.name = name;
    infllm_params_default(&c.p);
    c.p.backend = INFLLM_BACKEND_CUDA;
    c.p.mode = mode;
    c.p.cuda_stream = st;
    c.l = h_layout1(INFLLM_DTYPE_BF16, lq, lk, HQ, HKV, D);
    c.q = dq + (lk - lq) * HQ * D;
    c.k = dk;
    c.v = dv;
    c.out = out;
    c.lse = lse;
    size_t wsb = 0;
    CHECK_OK(infllm_attention_workspace_size(&c.p, &c.l, &wsb));
    *ws = dev_alloc(wsb);
    c.p.workspace = *ws;
    c.p.workspace_bytes = wsb;
    return c;
}
#endif

int main(void) {
#ifndef INFLLM_HAVE_CUDA
    printf("test_cuda_capture: SKIP (built without CUDA)\n");
    return 77;
#else
    if (!cuda_test_device_line("test_cuda_capture")) return 77;
    printf("test_cuda_capture: first calls inside a CUDA graph capture (global mode)\n");
    const int64_t T = 3000;
    uint16_t *hq = malloc((size_t)T * HQ * D * 2), *hk = malloc((size_t)T * HKV * D * 2),
             *hv = malloc((size_t)T * HKV * D * 2);
    unsigned long long rs = 20261129;
    h_fill_qkv_normal(hq, (size_t)T * HQ * D, hk, hv, (size_t)T * HKV * D, INFLLM_DTYPE_BF16, &rs);
    uint16_t *dq = dup_dev(hq, (size_t)T * HQ * D * 2), *dk = dup_dev(hk, (size_t)T * HKV * D * 2),
             *dv = dup_dev(hv, (size_t)T * HKV * D * 2);
    void *dout = dev_alloc((size_t)T * HQ * D * 2);
    float *dlse = dev_alloc((size_t)T * HQ * 4);
    cudaStream_t st;
    cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking);
    /* the stateless calls, each the first of its kind: the last lq of lk tokens of the buffers above */
    static const struct {
        const char *name;
        infllm_mode mode;
        int64_t lq, lk;
    } calls[] = {
        {"sparse prefill, 1500 tokens", INFLLM_MODE_SPARSE, 1500, 1500},
        {"dense prefill, 1000 tokens", INFLLM_MODE_DENSE, 1000, 1000},
        {"5 queries x 2900 keys, sparse", INFLLM_MODE_SPARSE, 5, 2900},
        {"40 queries x 2900 keys, sparse", INFLLM_MODE_SPARSE, 40, 2900},
    };
    for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++) {
        void *ws = NULL;
        call c = make_call(calls[i].name, calls[i].mode, calls[i].lq, calls[i].lk, dq, dk, dv, dout, dlse, st, &ws);
        capture_then_eager(&c, st);
        cudaFree(ws);
    }

    /* a decode cache of 2500 tokens (appended eagerly), then its first attend under capture */
    {
        infllm_params cp;
        infllm_params_default(&cp);
        cp.backend = INFLLM_BACKEND_CUDA;
        cp.mode = INFLLM_MODE_SPARSE;
        cp.cuda_stream = st;
        infllm_cache *cache = NULL;
        CHECK_OK(infllm_cache_create(&cp, INFLLM_DTYPE_BF16, HKV, D, T, &cache));
        if (cache) {
            CHECK_OK(infllm_cache_append(cache, dk, dv, 2500));
            cudaStreamSynchronize(st);
            size_t wsb = 0;
            CHECK_OK(infllm_cache_workspace_size(cache, &cp, 1, HQ, &wsb));
            void *cws = dev_alloc(wsb);
            call c5;
            memset(&c5, 0, sizeof c5);
            c5.name = "decode-cache attend, 1 query";
            c5.p = cp;
            c5.p.workspace = cws;
            c5.p.workspace_bytes = wsb;
            c5.l.total_q = 1;
            c5.cache = cache;
            c5.q = dq + (int64_t)2499 * HQ * D;
            c5.out = dout;
            c5.lse = dlse;
            capture_then_eager(&c5, st);
            cudaFree(cws);
            infllm_cache_free(cache);
        }
    }
    CHECK(cudaDeviceSynchronize() == cudaSuccess, "CUDA error at the end: %s", cudaGetErrorString(cudaGetLastError()));
    cudaFree(dq), cudaFree(dk), cudaFree(dv), cudaFree(dout), cudaFree(dlse);
    cudaStreamDestroy(st);
    free(hq), free(hk), free(hv);
    return finish("test_cuda_capture");
#endif
}
