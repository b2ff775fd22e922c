/*
 * harness.h: the tiny test harness. CHECK counts, prints a message on failure and carries on;
 * finish() prints "NAME: N passed, N failed" and returns the exit status (non-zero on any
 * failure). A test that cannot run here (no GPU) calls skip() which says so visibly.
 */
#ifndef INFLLM_TEST_HARNESS_H
#define INFLLM_TEST_HARNESS_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "infllm.h"

static int h_passed, h_failed;

/* setenv / unsetenv (POSIX; Windows has _putenv_s, where an empty value removes the variable) */
static inline int h_setenv(const char *name, const char *value) {
#ifdef _WIN32
    return _putenv_s(name, value);
#else
    return setenv(name, value, 1);
#endif
}
static inline int h_unsetenv(const char *name) {
#ifdef _WIN32
    return _putenv_s(name, "");
#else
    return unsetenv(name);
#endif
}

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        if (cond) {                                                        \
            h_passed++;                                                    \
        } else {                                                           \
            h_failed++;                                                    \
            fprintf(stderr, "FAIL %s:%d: (%s) ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                  \
            fputc('\n', stderr);                                           \
        }                                                                  \
    } while (0)

/* Checks that an infllm call returned status `want`. */
#define CHECK_STATUS(call, want)                                                              \
    do {                                                                                      \
        infllm_status st_ = (call);                                                           \
        CHECK(st_ == (want), "%s returned %s (%s), want %s", #call, infllm_status_str(st_),   \
              infllm_last_error(), infllm_status_str(want));                                 \
    } while (0)

#define CHECK_OK(call) CHECK_STATUS(call, INFLLM_OK)

static inline int finish(const char *name) {
    printf("%s: %d passed, %d failed\n", name, h_passed, h_failed);
    return h_failed ? 1 : 0;
}

/* The INFLLM_BF16_DOT=amx runs of a test (tests/CMakeLists.txt) are there for the AMX kernels: where they do not run
 * (no AMX-BF16 granted to the process, or INFLLM_SIMD below avx512-bf16) the run would repeat the INFLLM_BF16_DOT=0
 * one, so it says so and the test exits 77 (skipped). */
static inline int h_skip_amx_run(const char *name) {
    const char *e = getenv("INFLLM_BF16_DOT");
    if (!e || strcmp(e, "amx") != 0 || infllm_cpu_bf16_dot() == 2) return 0;
    printf("%s: SKIP (INFLLM_BF16_DOT=amx, and the AMX kernels do not run here: simd %s)\n", name,
           infllm_cpu_simd_level());
    return 1;
}

/* The unit roundoff of a storage dtype (half an ulp at 1.0, relative): 2^-8 bf16, 2^-11 f16, 2^-24 f32. */
static inline double h_unit_roundoff(infllm_dtype dt) {
    return dt == INFLLM_DTYPE_BF16 ? 0x1p-8 : dt == INFLLM_DTYPE_F16 ? 0x1p-11 : 0x1p-24;
}

/* The layout of one sequence (no cu_seqlens) of lq queries, the last of lk keys; max_seqlen_q/k set
 * too (the host backends compute them anyway, the CUDA backend reads them). */
static inline infllm_layout h_layout1(infllm_dtype dtype, int64_t lq, int64_t lk, int32_t hq, int32_t hkv,
                                      int32_t head_dim) {
    infllm_layout l;
    memset(&l, 0, sizeof l);
    l.dtype = dtype;
    l.num_seqs = 1;
    l.total_q = lq;
    l.total_k = lk;
    l.num_q_heads = hq;
    l.num_kv_heads = hkv;
    l.head_dim = head_dim;
    l.max_seqlen_q = (int32_t)lq;
    l.max_seqlen_k = (int32_t)lk;
    return l;
}

/* Deterministic random numbers (splitmix64 + Box-Muller). */
static inline unsigned long long h_rng_next(unsigned long long *s) {
    unsigned long long z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
static inline double h_uniform(unsigned long long *s) { return (double)(h_rng_next(s) >> 11) * (1.0 / 9007199254740992.0); }
static inline double h_normal(unsigned long long *s) {
    double u1 = h_uniform(s), u2 = h_uniform(s);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

#ifdef INFLLM_DTYPE_H /* for the tests that include src/core/dtype.h (its store) before this header */
/* N(0, 1) inputs in dtype dt, in the order the random-input tests share (so a seed keeps its inputs):
 * q [nq] first, then k and v [nk] each, element by element in turn. */
static inline void h_fill_qkv_normal(void *q, size_t nq, void *k, void *v, size_t nk, infllm_dtype dt,
                                     unsigned long long *rs) {
    for (size_t i = 0; i < nq; i++) infllm_store_f32(q, dt, (int64_t)i, (float)h_normal(rs));
    for (size_t i = 0; i < nk; i++) {
        infllm_store_f32(k, dt, (int64_t)i, (float)h_normal(rs));
        infllm_store_f32(v, dt, (int64_t)i, (float)h_normal(rs));
    }
}
#endif

#endif
