/*
 * qmm_rate.c: the model runtime's quantized products alone (quant_matmul: activation quantization + the dot
 * kernels), one or more threads, weights of random codes with f16 scales in [2^-8, 2^-7): Q4_1 / Q8_0 / Q4_0 / Q5_0 / Q5_1 at a small
 * model's layer shapes (SmolLM2-135M: 576 -> 1536 FFN, 576 -> 576 attention, 1536 -> 576 down), Q4_K / Q5_K / Q6_K at
 * 768 / 2048 (their rows are multiples of 256 values). Each figure is the
 * best of many short trials (bench/CPU_NOTES.md: a shared VM's neighbours move long runs +-10%). Not part of the
 * build; it links the static library:
 *
 *   gcc -O2 -std=c11 -Iinclude -Isrc/model bench/qmm_rate.c build/libinfllm_model.a build/libinfllm.a build/libinfllm_util.a -lm -fopenmp -o /tmp/qmm_rate && \
 *       /tmp/qmm_rate [TOKENS [THREADS [COPIES [TYPE]]]]  (default 512 tokens, 1 thread, 1 copy, all types;
 *                                                        TYPE: one type's name, e.g. Q4_K)
 *
 * COPIES > 1 cycles the calls through that many copies of each weight matrix, so that they come from memory as a
 * model's decode step reads them (96 copies of a SmolLM2 FFN matrix: 53 MB), not from the caches.
 *
 * Prints GMAC/s (multiply-adds of the weight x activation product) per type and shape and the kernel set
 * (INFLLM_SIMD=avx2 / scalar lowers it).
 */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gguf.h"
#include "quant.h"
#include "bench_time.h"

static uint32_t rng = 67;
static uint32_t next_u32(void) {
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng;
}

/* random codes; every f16 scale field (d, and the min / dmin of Q4_1 / Q4_K / Q5_K) of each block in [2^-8, 2^-7) */
static void fill_rows(uint32_t type, uint8_t *w, size_t bytes) {
    for (size_t k = 0; k < bytes; k++) w[k] = (uint8_t)next_u32();
    const size_t bb = ggml_row_size(type, ggml_block_size(type)); /* one block */
    const int nscales = type == GGML_Q4_1 || type == GGML_Q5_1 || type == GGML_Q4_K || type == GGML_Q5_K ||
                        type == GGML_Q2_K ? 2 : 1;
    /* the f16 scale(s) d (dmin): Q6_K's, Q2_K's and Q3_K's follow the codes and scales; the others' lead */
    const size_t at = type == GGML_Q6_K ? 208 : type == GGML_Q2_K ? 80 : type == GGML_Q3_K ? 108 : 0;
    for (size_t i = 0; i + bb <= bytes; i += bb)
        for (int k = 0; k < nscales; k++) {
            uint16_t h = (uint16_t)(0x1c00 | (next_u32() & 0x3ff));
            memcpy(w + i + at + 2 * k, &h, 2);
        }
}

int main(int argc, char **argv) {
    const int64_t ntok = argc > 1 ? atoll(argv[1]) : 512;
    const int nthreads = argc > 2 ? atoi(argv[2]) : 1, copies = argc > 3 ? atoi(argv[3]) : 1;
    if (ntok <= 0 || nthreads <= 0 || copies <= 0) {
        fprintf(stderr, "usage: qmm_rate [TOKENS [THREADS [COPIES [TYPE]]]]\n");
        return 2;
    }
    /* rows (outputs), cols (inputs); the K-quants' rows are multiples of 256 values */
    static const int64_t shapes[][2] = {{1536, 576}, {576, 576}, {576, 1536}}, kshapes[][2] = {{2048, 768}, {768, 768}, {768, 2048}};
    static const uint32_t types[] = {GGML_Q4_1, GGML_Q8_0, GGML_Q4_0, GGML_Q5_0, GGML_Q5_1, GGML_Q4_K,
                                     GGML_Q5_K, GGML_Q6_K, GGML_Q2_K, GGML_Q3_K, GGML_IQ4_XS};
    printf("# quant_matmul, %lld tokens, %d thread(s), %d weight cop%s, kernels %s; best of the trials\n", (long long)ntok,
           nthreads, copies, copies > 1 ? "ies" : "y", quant_kernel_name());
    printf("| type | rows | cols | ms | GMAC/s |\n|---|---:|---:|---:|---:|\n");
    quant_scratch qs = {0};
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        if (argc > 4 && strcmp(argv[4], ggml_type_name(types[ti])) != 0) continue;
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
            const int kq = ggml_block_size(types[ti]) == 256; /* the K-quants and IQ4_XS: rows of 256s */
            const int64_t rows = kq ? kshapes[si][0] : shapes[si][0], cols = kq ? kshapes[si][1] : shapes[si][1];
            const size_t rb = ggml_row_size(types[ti], cols);
            uint8_t *w = malloc(rb * (size_t)rows * (size_t)copies);
            float *x = malloc(sizeof(float) * (size_t)(ntok * cols)), *y = malloc(sizeof(float) * (size_t)(ntok * rows));
            if (!w || !x || !y) {
                fprintf(stderr, "qmm_rate: out of memory\n");
                return 1;
            }
            fill_rows(types[ti], w, rb * (size_t)rows * (size_t)copies);
            for (int64_t i = 0; i < ntok * cols; i++) x[i] = (float)((int)(next_u32() % 2001) - 1000) * 1e-3f;
            const double macs = (double)rows * (double)cols * (double)ntok;
            const int calls = copies > 1 ? copies : (int)(2e8 / macs) + 1, trials = copies > 1 ? 10 : 40;
            double best = 1e30;
            for (int k = 0; k < trials; k++) {
                double t = now_s();
                for (int c = 0; c < calls; c++)
                    if (quant_matmul(types[ti], w + rb * (size_t)rows * (size_t)(c % copies), rows, cols, x, ntok, y, rows,
                                     nthreads, &qs)) {
                        fprintf(stderr, "qmm_rate: quant_matmul failed\n");
                        return 1;
                    }
                double dt = (now_s() - t) / calls;
                if (dt < best) best = dt;
            }
            printf("| %s | %lld | %lld | %.3f | %.1f |\n", ggml_type_name(types[ti]), (long long)rows, (long long)cols,
                   best * 1e3, macs / best * 1e-9);
            free(w), free(x), free(y);
        }
    }
    quant_scratch_free(&qs);
    return 0;
}
