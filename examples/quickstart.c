/* quickstart.c: InfLLM-V2 attention through the C API (README example; built and run by ctest). */
#include <infllm.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    const int T = 4096, Hq = 16, Hkv = 1, D = 128;              /* one sequence of 4096 tokens */
    float *q = malloc(sizeof(float) * T * Hq * D);              /* [T, Hq, D] */
    float *k = malloc(sizeof(float) * T * Hkv * D);             /* [T, Hkv, D] */
    float *v = malloc(sizeof(float) * T * Hkv * D);             /* [T, Hkv, D] */
    float *out = malloc(sizeof(float) * T * Hq * D);            /* [T, Hq, D] */
    float *lse = malloc(sizeof(float) * T * Hq);                /* [T, Hq] */
    if (!q || !k || !v || !out || !lse) return 1;
    srand(1);
    for (long i = 0; i < (long)T * Hq * D; i++) q[i] = (float)rand() / (float)RAND_MAX - 0.5f;
    for (long i = 0; i < (long)T * Hkv * D; i++) k[i] = (float)rand() / (float)RAND_MAX - 0.5f;
    for (long i = 0; i < (long)T * Hkv * D; i++) v[i] = (float)rand() / (float)RAND_MAX - 0.5f;

    infllm_params p;
    infllm_params_default(&p);          /* MiniCPM4.1: 96 blocks of 64, dense below 8192 tokens */
    p.mode = INFLLM_MODE_SPARSE;        /* force the sparse path at this short length ... */
    p.topk = 16;                        /* ... with 16 + 32 local blocks of 64 out of 64 */

    infllm_layout l = {0};
    l.dtype = INFLLM_DTYPE_F32;
    l.num_seqs = 1;                     /* no cu_seqlens needed for one sequence */
    l.total_q = T;
    l.total_k = T;
    l.num_q_heads = Hq;
    l.num_kv_heads = Hkv;
    l.head_dim = D;

    infllm_status st = infllm_attention(&p, &l, q, k, v, out, lse);
    if (st != INFLLM_OK) {
        fprintf(stderr, "infllm_attention: %s: %s\n", infllm_status_str(st), infllm_last_error());
        return 1;
    }
    printf("sparse attention: out[T-1][0][0] = %.6f, lse[T-1][0] = %.4f\n", out[(long)(T - 1) * Hq * D],
           lse[(long)(T - 1) * Hq]);

    /* decode: a cache holding the same keys answers the last query the same way */
    infllm_cache *cache = NULL;
    float last[16 * 128];
    if ((st = infllm_cache_create(&p, INFLLM_DTYPE_F32, Hkv, D, T, &cache)) ||
        (st = infllm_cache_append(cache, k, v, T)) ||
        (st = infllm_cache_attend(cache, &p, q + (long)(T - 1) * Hq * D, 1, Hq, last, NULL))) {
        fprintf(stderr, "cache: %s: %s\n", infllm_status_str(st), infllm_last_error());
        infllm_cache_free(cache);
        return 1;
    }
    printf("decode step: out[0][0] = %.6f, cache holds %lld tokens in %zu bytes\n", last[0],
           (long long)infllm_cache_length(cache), infllm_cache_memory_bytes(cache));
    int same = fabsf(last[0] - out[(long)(T - 1) * Hq * D]) < 1e-5f;
    infllm_cache_free(cache);
    free(q), free(k), free(v), free(out), free(lse);
    return same ? 0 : 1;
}
