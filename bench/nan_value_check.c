/*
 * nan_value_check.c: does a NaN value element reach rows that do not see its key? The CPU and CUDA pipelines against
 * REF's NaN positions, dense, sparse (blocks of 32) and dense under a window of 150, one sequence of 300 tokens,
 * 16 / 1 heads, d 64, bf16, a NaN at value element (key 100, dim 3). Not part of the build (session 64's reproducer
 * of an open CUDA defect; docs/CUDA_NOTES.md "Session 64"). On a GPU machine, after building build-gpu:
 *
 *   nvcc -O2 -Iinclude -x c bench/nan_value_check.c -Lbuild-gpu -linfllm -Xlinker -rpath,$PWD/build-gpu \
 *       -o /tmp/nan_value_check && /tmp/nan_value_check
 *
 * Session 64 on an H100 (tree 715d743): CPU differs from REF on 0 outputs in all three (its fix, this session);
 * CUDA on 576 / 2064 / 1056 (rows 64-99 of the dense run: the rows of key 100's 64-key chunk that do not see it).
 */
#include <cuda_runtime.h>
#include <infllm.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
static uint16_t bf(float f) { uint32_t u; memcpy(&u, &f, 4); if (f != f) return 0x7fc0; u += 0x7fff + ((u >> 16) & 1); return (uint16_t)(u >> 16); }
static float fb(uint16_t h) { uint32_t u = (uint32_t)h << 16; float f; memcpy(&f, &u, 4); return f; }
int main(void) {
    const int T = 300, Hq = 16, Hkv = 1, D = 64;
    const size_t nq = (size_t)T * Hq * D, nk = (size_t)T * Hkv * D;
    uint16_t *q = malloc(nq * 2), *k = malloc(nk * 2), *v = malloc(nk * 2), *o = malloc(nq * 2), *o2 = malloc(nq * 2);
    unsigned long long s = 7;
    for (size_t i = 0; i < nq + 2 * nk; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        float x = (float)((double)(s >> 11) / 9007199254740992.0 - 0.5);
        if (i < nq) q[i] = bf(x); else if (i < nq + nk) k[i - nq] = bf(x); else v[i - nq - nk] = bf(x);
    }
    v[(size_t)100 * D + 3] = 0x7fc0; /* NaN value at key 100 */
    void *dq, *dk, *dv, *dout;
    cudaMalloc(&dq, nq * 2); cudaMalloc(&dk, nk * 2); cudaMalloc(&dv, nk * 2); cudaMalloc(&dout, nq * 2);
    cudaMemcpy(dq, q, nq * 2, cudaMemcpyHostToDevice); cudaMemcpy(dk, k, nk * 2, cudaMemcpyHostToDevice); cudaMemcpy(dv, v, nk * 2, cudaMemcpyHostToDevice);
    for (int mode = 0; mode < 3; mode++) {
        infllm_params p; infllm_params_default(&p);
        p.block_size = 32; p.kernel_size = 16; p.kernel_stride = 8; p.topk = 3; p.local_blocks = 1;
        p.mode = mode == 1 ? INFLLM_MODE_SPARSE : INFLLM_MODE_DENSE; p.dense_len = -1;
        if (mode == 2) p.window = 150; /* key 100 leaves the window at position 250 */
        infllm_layout l; memset(&l, 0, sizeof l); l.dtype = INFLLM_DTYPE_BF16; l.num_seqs = 1; l.total_q = l.total_k = T;
        l.max_seqlen_q = l.max_seqlen_k = T; l.num_q_heads = Hq; l.num_kv_heads = Hkv; l.head_dim = D;
        p.backend = INFLLM_BACKEND_REF;
        if (infllm_attention(&p, &l, q, k, v, o2, NULL)) { printf("REF: %s\n", infllm_last_error()); return 1; }
        p.backend = INFLLM_BACKEND_CPU;
        if (infllm_attention(&p, &l, q, k, v, o, NULL)) { printf("CPU: %s\n", infllm_last_error()); return 1; }
        size_t cpu_diff = 0, nref = 0;
        for (size_t i = 0; i < nq; i++) { nref += isnan(fb(o2[i])); cpu_diff += isnan(fb(o[i])) != isnan(fb(o2[i])); }
        p.backend = INFLLM_BACKEND_CUDA;
        if (infllm_attention(&p, &l, dq, dk, dv, dout, NULL)) { printf("CUDA: %s\n", infllm_last_error()); return 1; }
        cudaMemcpy(o, dout, nq * 2, cudaMemcpyDeviceToHost);
        size_t cuda_diff = 0, first = (size_t)-1;
        for (size_t i = 0; i < nq; i++) if (isnan(fb(o[i])) != isnan(fb(o2[i]))) { cuda_diff++; if (first == (size_t)-1) first = i; }
        printf("%s: REF NaN outputs %zu; CPU differs on %zu, CUDA on %zu (first row %lld)\n",
               mode == 0 ? "dense" : mode == 1 ? "sparse B32" : "dense window 150", nref, cpu_diff, cuda_diff,
               first == (size_t)-1 ? -1LL : (long long)(first / (Hq * D)));
    }
    return 0;
}
