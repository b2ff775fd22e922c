/*
 * kern_rate.c: the CPU attention kernels' rate alone, one thread, a tile hot in cache: the qk, pv and softmax entries
 * of the running CPU's table (src/attn/cpu_kern.h: AVX-512, AVX2, NEON or scalar; INFLLM_SIMD lowers it), R rows x
 * one 64-key tile x head_dim D, f32. Each figure is the best of many short trials, since a shared VM's neighbours
 * move a single long run by +-10% (bench/CPU_NOTES.md, session 66). Not part of the build; it links the static
 * library for the internal kernel table:
 *
 *   gcc -O2 -std=c11 -Iinclude -Isrc/attn bench/kern_rate.c build/libinfllm.a -lm -fopenmp -o /tmp/kern_rate && \
 *       /tmp/kern_rate [R ...]        (default R: 6 16 48 96 1024)
 *
 * qk / pv GFLOP/s count 2 FLOP a multiply-add; softmax is ns per row of 64 columns (all valid, the dense interior
 * tiles' case, and a random mask with empty rows, the edges'). Compare them with `infllm bench peak`'s one-thread figure.
 * Where the CPU runs bf16 attention on dot-product kernels (cpu_dot16_get: AMX tiles or vdpbf16ps; INFLLM_BF16_DOT
 * chooses), their qk16 / pv16 rows follow, on bf16 tiles with the rows listed as the attention's tile steps list them.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cpu_kern.h"
#include "bench_time.h"

enum { D = 128, TRIALS = 300 };

static void rate(const cpu_kern *kn, int R) {
    float *Q = calloc((size_t)R * D, sizeof(float)), *K = calloc((size_t)CPU_KT * D, sizeof(float));
    float *V = calloc((size_t)CPU_KT * D, sizeof(float)), *S = calloc((size_t)R * CPU_KT, sizeof(float));
    float *P = calloc((size_t)R * CPU_KT, sizeof(float)), *O = calloc((size_t)R * D, sizeof(float));
    float *alpha = calloc((size_t)R, sizeof(float)), *m = calloc((size_t)R, sizeof(float));
    float *l = calloc((size_t)R, sizeof(float));
    uint64_t *full = calloc((size_t)R, sizeof(uint64_t)), *part = calloc((size_t)R, sizeof(uint64_t));
    if (!Q || !K || !V || !S || !P || !O || !alpha || !m || !l || !full || !part) {
        fprintf(stderr, "kern_rate: out of memory at R %d\n", R);
        exit(1);
    }
    srand(66);
    for (int i = 0; i < R * D; i++) Q[i] = (float)(rand() % 200 - 100) * 1e-3f;
    for (int i = 0; i < CPU_KT * D; i++) K[i] = (float)(rand() % 200 - 100) * 1e-3f;
    for (int i = 0; i < CPU_KT * D; i++) V[i] = (float)(rand() % 200 - 100) * 1e-3f;
    for (int r = 0; r < R; r++) {
        alpha[r] = 1.0f;
        full[r] = ~(uint64_t)0;
        part[r] = r % 7 == 0 ? 0 : ((uint64_t)rand() << 42) ^ ((uint64_t)rand() << 21) ^ (uint64_t)rand();
    }
    kn->qk(Q, D, NULL, R, D, K, CPU_KT / CPU_KG, S);
    const int calls = 20000 / R + 1; /* a trial: ~1-2 ms */
    double best[4] = {1e30, 1e30, 1e30, 1e30};
    for (int k = 0; k < TRIALS; k++) {
        double t = now_s();
        for (int i = 0; i < calls; i++) kn->qk(Q, D, NULL, R, D, K, CPU_KT / CPU_KG, S);
        double dt = now_s() - t;
        if (dt < best[0]) best[0] = dt;
        t = now_s();
        for (int i = 0; i < calls; i++) kn->pv(O, NULL, R, D, alpha, S, V, CPU_KT);
        dt = now_s() - t;
        if (dt < best[1]) best[1] = dt;
        for (int v = 0; v < 2; v++) {
            t = now_s();
            for (int i = 0; i < calls; i++) {
                for (int r = 0; r < R; r++) m[r] = l[r] = 0.0f;
                kn->softmax(S, R, CPU_KT, v ? part : full, 0.125f, m, l, alpha, P);
            }
            dt = now_s() - t;
            if (dt < best[2 + v]) best[2 + v] = dt;
        }
    }
    const double flop = 2.0 * R * CPU_KT * D * calls;
    printf("| %s | %d | %.1f | %.1f | %.1f | %.1f |\n", kn->name, R, flop / best[0] * 1e-9, flop / best[1] * 1e-9,
           best[2] / calls / R * 1e9, best[3] / calls / R * 1e9);
    free(Q), free(K), free(V), free(S), free(P), free(O), free(alpha), free(m), free(l), free(full), free(part);
}

/* the dot-product kernels (bf16 K / V in their pair layouts, P f32 rounded by the kernel), rows listed */
static void rate16(const cpu_dot16 *dk, int R) {
    uint16_t *Q = calloc((size_t)R * D, 2), *K = calloc((size_t)CPU_KT * D, 2), *V = calloc((size_t)CPU_KT * D, 2);
    float *S = calloc((size_t)R * CPU_KT, sizeof(float)), *O = calloc((size_t)R * D, sizeof(float));
    float *alpha = calloc((size_t)R, sizeof(float));
    int *rows = calloc((size_t)R, sizeof(int));
    if (!Q || !K || !V || !S || !O || !alpha || !rows) {
        fprintf(stderr, "kern_rate: out of memory at R %d\n", R);
        exit(1);
    }
    srand(70);
    for (int i = 0; i < R * D; i++) Q[i] = (uint16_t)(0x3c00 + rand() % 256); /* bf16 values around 0.01 */
    for (int i = 0; i < CPU_KT * D; i++) K[i] = V[i] = (uint16_t)(0x3c00 + rand() % 256);
    for (int r = 0; r < R; r++) {
        alpha[r] = 1.0f;
        rows[r] = r;
    }
    for (int i = 0; i < R * CPU_KT; i++) S[i] = (float)(rand() % 100) * 1e-2f; /* P in [0, 1) */
    const int calls = 20000 / R + 1;
    double best[2] = {1e30, 1e30};
    float *Sq = calloc((size_t)R * CPU_KT, sizeof(float));
    if (!Sq) exit(1);
    for (int k = 0; k < TRIALS; k++) {
        double t = now_s();
        for (int i = 0; i < calls; i++) dk->qk16(Q, D, rows, R, D, K, CPU_KT / CPU_KG, Sq);
        double dt = now_s() - t;
        if (dt < best[0]) best[0] = dt;
        t = now_s();
        for (int i = 0; i < calls; i++) dk->pv16(O, rows, R, D, alpha, S, V, CPU_KT);
        dt = now_s() - t;
        if (dt < best[1]) best[1] = dt;
    }
    const double flop = 2.0 * R * CPU_KT * D * calls;
    printf("| %s | %d | %.1f | %.1f | - | - |\n", dk->name, R, flop / best[0] * 1e-9, flop / best[1] * 1e-9);
    free(Q), free(K), free(V), free(S), free(Sq), free(O), free(alpha), free(rows);
}

int main(int argc, char **argv) {
    const cpu_kern *kn = cpu_kern_get();
    const cpu_dot16 *dk = cpu_dot16_get();
    static const int defaults[] = {6, 16, 48, 96, 1024};
    printf("# kern_rate: one thread, one 64-key tile hot, d %d, best of %d trials\n", D, TRIALS);
    printf("| kernels | rows | qk GFLOP/s | pv GFLOP/s | softmax ns/row (full) | softmax ns/row (masked) |\n");
    printf("|---|---:|---:|---:|---:|---:|\n");
    if (argc > 1) {
        for (int i = 1; i < argc; i++) {
            int R = atoi(argv[i]);
            if (R < 1 || R > 65536) {
                fprintf(stderr, "kern_rate: rows must be 1..65536, got '%s'\n", argv[i]);
                return 2;
            }
            rate(kn, R);
            if (dk) rate16(dk, R);
        }
    } else {
        for (size_t i = 0; i < sizeof defaults / sizeof defaults[0]; i++) {
            rate(kn, defaults[i]);
            if (dk) rate16(dk, defaults[i]);
        }
    }
    return 0;
}
