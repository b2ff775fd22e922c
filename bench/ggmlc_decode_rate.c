/*
 * ggmlc_decode_rate.c: the model runtime's dense one-token attention (ggmlc_attn_f16 with V transposed, the
 * llama.cpp-order path a dense decode step takes) alone, over LAYERS separate f16 caches so that each call
 * reads its cache from memory as a model step does (SmolLM2-135M: 30 layers x 2K keys x 3 KV heads x 64
 * dims = 47 MB of K and V a step). Not part of the build; it links the static library:
 *
 *   gcc -O2 -std=c11 -Iinclude -Isrc/model -Isrc/util bench/ggmlc_decode_rate.c build/libinfllm_model.a build/libinfllm.a \
 *       build/libinfllm_util.a -lm -fopenmp -o /tmp/ggmlc_decode_rate && \
 *       /tmp/ggmlc_decode_rate [KEYS [THREADS [HQ HKV D [LAYERS]]]]   (default 2048 2 9 3 64 30)
 *
 * INFLLM_LLAMA_ORDER=avx2|avx512 picks llama.cpp's build order (ggmlc.h; the first column says which ran).
 * Prints microseconds per step (all layers), the best of many steps (bench/CPU_NOTES.md: a shared VM's
 * neighbours move long runs), the median, and the K/V bytes a step reads as GB/s at the best time.
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
    const int64_t nkv = argc > 1 ? atoll(argv[1]) : 2048;
    const int nt = argc > 2 ? atoi(argv[2]) : 2;
    const int Hq = argc > 5 ? atoi(argv[3]) : 9, Hkv = argc > 5 ? atoi(argv[4]) : 3, D = argc > 5 ? atoi(argv[5]) : 64;
    const int layers = argc > 6 ? atoi(argv[6]) : 30;
    if (nkv < 1 || nt < 1 || Hq < 1 || Hkv < 1 || Hq % Hkv || D < 16 || D % 16 || layers < 1) {
        fprintf(stderr, "usage: %s [KEYS [THREADS [HQ HKV D [LAYERS]]]]\n", argv[0]);
        return 2;
    }
    const int64_t vcap = (nkv + 63) / 64 * 64, kvn = nkv * Hkv * D;
    uint16_t **K = malloc(sizeof(*K) * (size_t)layers), **V = malloc(sizeof(*V) * (size_t)layers),
             **VT = malloc(sizeof(*VT) * (size_t)layers);
    float *q = malloc(sizeof(float) * (size_t)Hq * D), *out = malloc(sizeof(float) * (size_t)Hq * D);
    unsigned long long rng = 1;
    for (int i = 0; i < Hq * D; i++) q[i] = (float)((rng = rng * 6364136223846793005ULL + 1442695040888963407ULL) >> 40) / 16777216.f - 0.5f;
    for (int l = 0; l < layers; l++) {
        K[l] = malloc(2 * (size_t)kvn);
        V[l] = malloc(2 * (size_t)kvn);
        VT[l] = malloc(2 * (size_t)vcap * Hkv * D);
        if (!K[l] || !V[l] || !VT[l]) return 1;
        for (int64_t i = 0; i < kvn; i++) {
            rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
            K[l][i] = mdl_f32_to_f16((float)(rng >> 40) / 16777216.f - 0.5f);
            V[l][i] = mdl_f32_to_f16((float)((rng >> 20) & 0xfffff) / 1048576.f - 0.5f);
        }
        for (int64_t i = 0; i < vcap * Hkv * D; i++) VT[l][i] = 0;
        for (int64_t j = 0; j < nkv; j++)
            for (int64_t i = 0; i < (int64_t)Hkv * D; i++) VT[l][i * vcap + j] = V[l][j * Hkv * D + i];
    }
    enum { STEPS = 60 };
    double t[STEPS];
    for (int s = -3; s < STEPS; s++) {
        double t0 = now_s();
        for (int l = 0; l < layers; l++)
            if (ggmlc_attn_f16(K[l], V[l], VT[l], vcap, nkv, q, 1, Hq, Hkv, D, 0.125f, out, nt)) return 1;
        if (s >= 0) t[s] = now_s() - t0;
    }
    qsort(t, STEPS, sizeof(double), cmp_d);
    const double bytes = 2.0 * 2.0 * (double)kvn * layers;
    printf("| order %d | keys %lld | threads %d | Hq %d Hkv %d D %d | layers %d | best %.0f us | median %.0f us | %.1f GB/s |\n",
           ggmlc_order(),
           (long long)nkv, nt, Hq, Hkv, D, layers, 1e6 * t[0], 1e6 * t[STEPS / 2], bytes / t[0] / 1e9);
    return 0;
}
