/*
 * cuda_testlib.h: the device line (or SKIP) a GPU test starts with, device buffer helpers and the naive
 * low-precision attention row shared by the GPU tests (test_cuda.c, test_cuda_cache.c, test_cuda_capture.c,
 * test_cuda_threads.c).
 * Include after <cuda_runtime.h>, inside #ifdef INFLLM_HAVE_CUDA. Failures are test-harness
 * failures: message and exit(2).
 */
#ifndef INFLLM_CUDA_TESTLIB_H
#define INFLLM_CUDA_TESTLIB_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "harness.h"
#include "infllm.h"
#include "ref_compare.h" /* ld, naive_row */

/* The least "naive error" a tolerance takes (relative, Frobenius): half the unit roundoff of the output's
 * storage type (harness.h; 2^-9 bf16, 2^-12 f16, 2^-25 f32), about what rounding a correct result to that type costs
 * alone (the kernels measure 1.9-2.0e-3 in bf16, 2.4-2.7e-4 in f16). The naive estimate runs on a sample of
 * rows (every 7th query) and is 0 where those rows are exact in low precision: a 2-query sequence samples
 * only its first row, which attends one key (output = v), and then any rounding failed "2 x naive 0"
 * (session 29's seed sweep, seed 104). */
static inline double naive_floor(infllm_dtype dt) { return 0.5 * h_unit_roundoff(dt); }

/* The first line of a GPU test: "NAME: <the device, its code>" and 1, or, with no usable device, "NAME: SKIP (<why>
 * ...)" and 0 (the test then returns 77, ctest's skip). */
static inline int cuda_test_device_line(const char *name) {
    char info[512];
    if (!infllm_cuda_device_info(info, sizeof info)) {
        printf("%s: SKIP (%s; needs a CUDA device of compute capability 8.0 or newer): run scripts/cuda_check.sh on a "
               "GPU machine\n",
               name, info);
        return 0;
    }
    printf("%s: %s\n", name, info);
    return 1;
}

/* whether the current device reads plain (pageable) host memory (HMM / ATS), where the backend accepts host
 * pointers; prints why the host-pointer refusals are not checked when it does */
static inline int cuda_test_device_reads_pageable(void) {
    int dev = 0, pageable = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&pageable, cudaDevAttrPageableMemoryAccess, dev);
    if (pageable) printf("  (this device reads pageable host memory: the host-pointer refusals are not checked)\n");
    return pageable;
}

/* cu_seqlens of nseq sequences of lq / lk tokens (cuq / cuk: nseq + 1 entries, from 0) and the longest of each */
static inline void seq_offsets(int nseq, const int *lq, const int *lk, int32_t *cuq, int32_t *cuk, int *maxq, int *maxk) {
    cuq[0] = cuk[0] = 0;
    *maxq = *maxk = 0;
    for (int b = 0; b < nseq; b++) {
        cuq[b + 1] = cuq[b] + lq[b];
        cuk[b + 1] = cuk[b] + lk[b];
        if (lq[b] > *maxq) *maxq = lq[b];
        if (lk[b] > *maxk) *maxk = lk[b];
    }
}

/* the host layout of nseq sequences (cu_seqlens cuq / cuk on the host, NULL for one sequence) in dtype dt */
static inline infllm_layout host_layout(infllm_dtype dt, int nseq, const int32_t *cuq, const int32_t *cuk, int64_t total_q,
                                        int64_t total_k, int Hq, int Hkv, int D) {
    infllm_layout l;
    memset(&l, 0, sizeof l);
    l.dtype = dt;
    l.num_seqs = nseq;
    l.cu_seqlens_q = nseq > 1 ? cuq : NULL;
    l.cu_seqlens_k = nseq > 1 ? cuk : NULL;
    l.total_q = total_q;
    l.total_k = total_k;
    l.num_q_heads = Hq;
    l.num_kv_heads = Hkv;
    l.head_dim = D;
    return l;
}

/* a device copy of bytes of host memory (at least 4 bytes allocated) */
static inline void *dup_dev(const void *h, size_t bytes) {
    void *d = NULL;
    if (cudaMalloc(&d, bytes ? bytes : 4) != cudaSuccess) {
        fprintf(stderr, "cudaMalloc(%zu) failed\n", bytes);
        exit(2);
    }
    if (bytes) cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice);
    return d;
}

/* device memory poisoned with 0xff bytes, so that unwritten outputs show up as NaN */
static inline void *dev_alloc(size_t bytes) {
    void *d = NULL;
    if (cudaMalloc(&d, bytes ? bytes : 4) != cudaSuccess) {
        fprintf(stderr, "cudaMalloc(%zu) failed\n", bytes);
        exit(2);
    }
    cudaMemset(d, 0xff, bytes ? bytes : 4); /* poison */
    return d;
}

/* a host copy of bytes of device memory (free() it) */
static inline void *to_host(const void *d, size_t bytes) {
    void *h = malloc(bytes ? bytes : 4);
    cudaError_t e = cudaMemcpy(h, d, bytes, cudaMemcpyDeviceToHost);
    if (e != cudaSuccess) {
        fprintf(stderr, "CUDA error: %s\n", cudaGetErrorString(e));
        exit(2);
    }
    return h;
}

/* The knobs the random cases of test_cuda (one-shot calls) and test_cuda_cache (the decode cache) draw,
 * in one place so that both cover the same space: storage dtype, head_dim 64 / 128, 1-2 KV heads, a group
 * of 1-32, the default block (64) or 16-192 with a kernel stride that divides it (16, B / 2, B / 4; a quarter of
 * the time any divisor from 2 up), any kernel size up to three strides (a quarter of the time up to 2 B + a
 * stride, past the block), 0-2 initial and 0-3 local forced blocks, top-k 1-8, exact LSE, and the mode (test_cuda
 * and test_cuda_cache then take some of these to their extremes themselves). B = 0: the library default. Needs
 * harness.h's h_rng_next and infllm.h. */
typedef struct rand_knobs {
    infllm_dtype dt;
    int D, Hq, Hkv, B, l1, s1, init_blocks, local_blocks, topk, exact;
    infllm_mode mode;
} rand_knobs;

static inline rand_knobs draw_knobs(unsigned long long *rng) {
    /* group sizes: divisors of 16 and not, and above 16 (20: two head tiles, the second of 4 rows) */
    static const int Gs[11] = {1, 2, 3, 4, 5, 7, 8, 12, 16, 20, 32}, Bs[7] = {0, 16, 32, 48, 64, 128, 192};
    rand_knobs k;
    k.dt = h_rng_next(rng) % 2 ? INFLLM_DTYPE_BF16 : INFLLM_DTYPE_F16;
    k.D = h_rng_next(rng) % 2 ? 128 : 64;
    k.Hkv = 1 + (int)(h_rng_next(rng) % 2);
    k.Hq = k.Hkv * Gs[h_rng_next(rng) % 11];
    k.B = Bs[h_rng_next(rng) % 7];
    const int Bv = k.B ? k.B : 64;
    const int strides[3] = {16, Bv / 2, Bv / 4}; /* each divides every B above */
    k.s1 = strides[h_rng_next(rng) % 3];
    if (h_rng_next(rng) % 4 == 0) { /* now and then any divisor of B from 2 up (the API's range, as test_diff's) */
        int divs[32], nd = 0;
        for (int d = 2; d <= Bv && nd < 32; d++)
            if (Bv % d == 0) divs[nd++] = d;
        k.s1 = divs[h_rng_next(rng) % nd];
    }
    /* the kernel size: up to three strides, now and then past the block (up to 2 B + a stride) */
    k.l1 = 1 + (int)(h_rng_next(rng) % (h_rng_next(rng) % 4 == 0 ? 2 * Bv + k.s1 : 3 * k.s1));
    k.init_blocks = (int)(h_rng_next(rng) % 3);
    k.local_blocks = (int)(h_rng_next(rng) % 4);
    k.topk = 1 + (int)(h_rng_next(rng) % 8);
    k.exact = (int)(h_rng_next(rng) % 2);
    k.mode = (infllm_mode)(h_rng_next(rng) % 3);
    return k;
}
/* A sliding key window for a random case (test_cuda_window's cases, test_cuda_cache's windowed attends): within a
 * block, whole blocks (1-8), a few blocks anyhow, anywhere in `span` (the longest sequence's keys), at or past it, or
 * most of it. B: the case's block size. */
static inline int32_t draw_window(unsigned long long *rng, int64_t B, int64_t span) {
    if (B < 1) B = 1;
    if (span < 1) span = 1;
    int64_t w;
    switch (h_rng_next(rng) % 6) {
    case 0: w = 1 + (int64_t)(h_rng_next(rng) % (uint64_t)B); break;
    case 1: w = B * (1 + (int64_t)(h_rng_next(rng) % 8)); break;
    case 2: w = 1 + (int64_t)(h_rng_next(rng) % (uint64_t)(8 * B)); break;
    case 3: w = 1 + (int64_t)(h_rng_next(rng) % (uint64_t)span); break;
    case 4: w = span + (int64_t)(h_rng_next(rng) % (uint64_t)(2 * B)); break;
    default: w = span / 2 + 1 + (int64_t)(h_rng_next(rng) % (uint64_t)(span / 2 + 1)); break;
    }
    return w < INT32_MAX ? (int32_t)w : INT32_MAX;
}

/* the knobs into a test's case struct, whose fields share their names */
#define APPLY_KNOBS(c, k)                                                                                         \
    ((c).dt = (k).dt, (c).D = (k).D, (c).Hq = (k).Hq, (c).Hkv = (k).Hkv, (c).B = (k).B, (c).l1 = (k).l1,            \
     (c).s1 = (k).s1, (c).init_blocks = (k).init_blocks, (c).local_blocks = (k).local_blocks, (c).topk = (k).topk, \
     (c).exact = (k).exact, (c).mode = (k).mode)
/* a case's knobs (and its dense_len) into params p on the library defaults: B, l1, s1 of 0 keep the default */
#define KNOB_PARAMS(p, c)                                                                                          \
    do {                                                                                                           \
        infllm_params_default(&(p));                                                                               \
        if ((c)->B) (p).block_size = (c)->B;                                                                       \
        if ((c)->l1) (p).kernel_size = (c)->l1;                                                                    \
        if ((c)->s1) (p).kernel_stride = (c)->s1;                                                                  \
        (p).init_blocks = (c)->init_blocks;                                                                        \
        (p).local_blocks = (c)->local_blocks;                                                                      \
        (p).topk = (c)->topk;                                                                                      \
        (p).exact_lse = (c)->exact;                                                                                \
        (p).dense_len = (c)->dense_len;                                                                            \
        (p).mode = (c)->mode;                                                                                      \
    } while (0)

#endif
