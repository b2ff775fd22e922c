/*
 * ggmlc_prefill_rate.c: the model runtime's dense prefill attention alone (ggmlc_attn_f16 for a chunk of QUERIES
 * new tokens against KEYS cached ones, the llama.cpp-order path a dense prefill ubatch takes), in the order
 * INFLLM_LLAMA_ORDER=avx2|avx512 picks (ggmlc.h; the default is the CPU's). Not part of the build; it links the
 * static library:
 *
 *   gcc -O2 -std=c11 -Iinclude -Isrc/model -Isrc/util bench/ggmlc_prefill_rate.c build/libinfllm_model.a \
 *       build/libinfllm.a build/libinfllm_util.a -lm -fopenmp -o /tmp/ggmlc_prefill_rate && \
 *       /tmp/ggmlc_prefill_rate [KEYS [QUERIES [THREADS [HQ HKV D]]]]   (default 2048 512 2 9 3 64)
 *
 * Prints the best and the median of 7 calls in milliseconds (a shared VM's neighbours move single runs).
 */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "ggmlc.h"
#include "mcommon.h"
#include "bench_time.h"

int main(int argc, char **argv) {
    const int64_t nkv = argc > 1 ? atoll(argv[1]) : 2048, n = argc > 2 ? atoll(argv[2]) : 512;
    const int nt = argc > 3 ? atoi(argv[3]) : 2;
    const int Hq = argc > 6 ? atoi(argv[4]) : 9, Hkv = argc > 6 ? atoi(argv[5]) : 3, D = argc > 6 ? atoi(argv[6]) : 64;
    if (nkv < 1 || n < 1 || n > nkv || nt < 1 || Hq < 1 || Hkv < 1 || Hq % Hkv || D < 16 || D % 16 || D > 512) {
        fprintf(stderr, "usage: %s [KEYS [QUERIES [THREADS [HQ HKV D]]]] (QUERIES <= KEYS, D a multiple of 16 <= 512)\n", argv[0]);
        return 2;
    }
    const size_t kvn = (size_t)nkv * (size_t)Hkv * (size_t)D, qn = (size_t)n * (size_t)Hq * (size_t)D;
    uint16_t *K = malloc(2 * kvn), *V = malloc(2 * kvn); /* [nkv][Hkv][D] f16 */
    float *q = malloc(4 * qn), *o = malloc(4 * qn);       /* [n][Hq][D] */
    if (!K || !V || !q || !o) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    uint64_t s = 1;
    for (size_t i = 0; i < kvn; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        K[i] = mdl_f32_to_f16((float)((s >> 40) & 1023) / 512.f - 1.f);
        V[i] = mdl_f32_to_f16((float)((s >> 20) & 1023) / 512.f - 1.f);
    }
    for (size_t i = 0; i < qn; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        q[i] = (float)((s >> 40) & 1023) / 256.f - 2.f;
    }
    enum { CALLS = 7 };
    double t[CALLS];
    for (int r = 0; r < CALLS; r++) {
        const double t0 = now_s();
        if (ggmlc_attn_f16(K, V, NULL, 0, nkv, q, n, Hq, Hkv, D, 1.0f / 16, o, nt)) {
            fprintf(stderr, "ggmlc_attn_f16 failed\n");
            return 1;
        }
        t[r] = now_s() - t0;
    }
    qsort(t, CALLS, sizeof(double), cmp_d);
    printf("| order %d | keys %lld | queries %lld | threads %d | Hq %d Hkv %d D %d | best %.1f ms | median %.1f ms |\n",
           ggmlc_order(), (long long)nkv, (long long)n, nt, Hq, Hkv, D, 1e3 * t[0], 1e3 * t[CALLS / 2]);
    free(K);
    free(V);
    free(q);
    free(o);
    return 0;
}
