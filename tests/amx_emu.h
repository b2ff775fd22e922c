/*
 * amx_emu.h: the AMX-TILE / AMX-BF16 intrinsics that src/attn/kern_dot16_amx.c uses, emulated in C on any CPU, and
 * its two AVX-512 helpers in scalar code, so that tests/test_amx_host.c runs the kernel file's own source where no
 * AMX is (CI, this project's development machines); and AMX-INT8's TDPBUSD / TDPBSSD for src/model/qgemm_amx.c
 * (tests/test_quant_amx.c, whose scalar helpers are that file's own). Every tile operation checks its operands' shapes against the
 * loaded configuration as the hardware requires them (A rows = C rows, A's K = B's rows, B's columns = C's) and
 * that a configuration is loaded; a violation aborts with a message, so a layout or configuration mistake in the
 * kernel fails the test instead of computing garbage.
 *
 * TDPBF16PS as the Intel SDM states it: for each (m, n) of C and each 32-bit pair k of A's row m in order,
 * C += A.bf16[2k] * B[k].bf16[2n], then C += A.bf16[2k + 1] * B[k].bf16[2n + 1], f32 products of bf16 values (exact)
 * added with round-to-nearest-even, denormal inputs read as zero and denormal results flushed to zero.
 */
#ifndef INFLLM_AMX_EMU_H
#define INFLLM_AMX_EMU_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"

typedef struct {
    int configured;
    uint8_t rows[8];
    uint16_t colsb[8];
    uint8_t data[8][16][64];
    long ops; /* tile products run (the test checks that the kernels used the tiles at all) */
} amx_emu_state;

static _Thread_local amx_emu_state amx_emu; /* per thread, as tile registers are (the library's threads) */

static inline void amx_emu_fail(const char *what, int t) {
    fprintf(stderr, "amx_emu: %s (tile %d)\n", what, t);
    abort();
}

static inline void amx_emu_loadconfig(const void *cfg) {
    const uint8_t *c = (const uint8_t *)cfg;
    if (c[0] != 1) amx_emu_fail("palette is not 1", -1);
    for (int t = 0; t < 8; t++) {
        memcpy(&amx_emu.colsb[t], c + 16 + 2 * t, 2);
        amx_emu.rows[t] = c[48 + t];
        if (amx_emu.rows[t] > 16 || amx_emu.colsb[t] > 64 || (amx_emu.colsb[t] & 3))
            amx_emu_fail("configured shape past palette 1's limits", t);
    }
    amx_emu.configured = 1;
}

static inline void amx_emu_check(int t) {
    if (!amx_emu.configured) amx_emu_fail("tile instruction without a loaded configuration", t);
    if (t < 0 || t > 7 || !amx_emu.rows[t] || !amx_emu.colsb[t]) amx_emu_fail("tile not configured", t);
}

static inline void amx_emu_load(int t, const void *base, size_t stride) {
    amx_emu_check(t);
    memset(amx_emu.data[t], 0, sizeof amx_emu.data[t]);
    for (int r = 0; r < amx_emu.rows[t]; r++)
        memcpy(amx_emu.data[t][r], (const uint8_t *)base + (size_t)r * stride, amx_emu.colsb[t]);
}

static inline void amx_emu_store(int t, void *base, size_t stride) {
    amx_emu_check(t);
    for (int r = 0; r < amx_emu.rows[t]; r++)
        memcpy((uint8_t *)base + (size_t)r * stride, amx_emu.data[t][r], amx_emu.colsb[t]);
}

static inline float amx_emu_daz(float x) { return fabsf(x) < 1.17549435e-38f ? copysignf(0.0f, x) : x; }

/* a tile product's operands: configured, three different tiles, A's rows = C's, A's 4-byte groups = B's rows, B's
 * columns = C's (what the hardware requires of TDPBF16PS and TDPB*D alike) */
static inline void amx_emu_dp_check(int c, int a, int b) {
    amx_emu_check(c);
    amx_emu_check(a);
    amx_emu_check(b);
    if (c == a || c == b || a == b) amx_emu_fail("a tile product's operands must be three different tiles", c);
    if (amx_emu.rows[a] != amx_emu.rows[c]) amx_emu_fail("A's rows differ from C's", a);
    if (amx_emu.colsb[a] / 4 != amx_emu.rows[b]) amx_emu_fail("A's 4-byte groups differ from B's rows", b);
    if (amx_emu.colsb[b] != amx_emu.colsb[c]) amx_emu_fail("B's columns differ from C's", b);
}

static inline void amx_emu_dp(int c, int a, int b) {
    amx_emu_dp_check(c, a, b);
    const int M = amx_emu.rows[c], N = amx_emu.colsb[c] / 4, K = amx_emu.colsb[a] / 4;
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            float acc;
            memcpy(&acc, &amx_emu.data[c][m][4 * n], 4);
            for (int k = 0; k < K; k++)
                for (int e = 0; e < 2; e++) {
                    uint16_t ah, bh;
                    memcpy(&ah, &amx_emu.data[a][m][4 * k + 2 * e], 2);
                    memcpy(&bh, &amx_emu.data[b][k][4 * n + 2 * e], 2);
                    const float x = amx_emu_daz(infllm_bf16_to_f32(ah)), y = amx_emu_daz(infllm_bf16_to_f32(bh));
                    acc = amx_emu_daz(acc + x * y);
                }
            memcpy(&amx_emu.data[c][m][4 * n], &acc, 4);
        }
    amx_emu.ops++;
}

/* TDPBUSD / TDPBSSD (AMX-INT8): for each (m, n) of C, C += sum over A's 4-byte groups k of the four products of A's
 * bytes [m][4k + e] (unsigned, or signed: a_signed) and B's signed bytes [k][4n + e], in int32 (wrapping, as the
 * hardware's adds) */
static inline void amx_emu_dpb(int c, int a, int b, int a_signed) {
    amx_emu_dp_check(c, a, b);
    const int M = amx_emu.rows[c], N = amx_emu.colsb[c] / 4, K = amx_emu.colsb[a] / 4;
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            uint32_t acc;
            memcpy(&acc, &amx_emu.data[c][m][4 * n], 4);
            for (int k = 0; k < K; k++)
                for (int e = 0; e < 4; e++) {
                    const uint8_t av = amx_emu.data[a][m][4 * k + e];
                    const int32_t x = a_signed ? (int32_t)(int8_t)av : (int32_t)av;
                    acc += (uint32_t)(x * (int32_t)(int8_t)amx_emu.data[b][k][4 * n + e]);
                }
            memcpy(&amx_emu.data[c][m][4 * n], &acc, 4);
        }
    amx_emu.ops++;
}

#define _tile_loadconfig(p) amx_emu_loadconfig(p)
#define _tile_release() (amx_emu.configured = 0)
#define _tile_zero(t) (amx_emu_check(t), memset(amx_emu.data[t], 0, sizeof amx_emu.data[t]))
#define _tile_loadd(t, base, stride) amx_emu_load(t, base, (size_t)(stride))
#define _tile_stored(t, base, stride) amx_emu_store(t, base, (size_t)(stride))
#define _tile_dpbf16ps(c, a, b) amx_emu_dp(c, a, b)
#define _tile_dpbusd(c, a, b) amx_emu_dpb(c, a, b, 0)
#define _tile_dpbssd(c, a, b) amx_emu_dpb(c, a, b, 1)

/* the kernel file's two AVX-512 helpers */
static inline void p_row_pairs(uint32_t *dst, const float *p, int n) {
    for (int i = 0; i < n; i += 2)
        dst[i / 2] = (uint32_t)infllm_f32_to_bf16(p[i]) | (uint32_t)infllm_f32_to_bf16(p[i + 1]) << 16;
}
static inline void scale_row(float *dst, const float *src, float a, int D) {
    for (int d = 0; d < D; d++) dst[d] = src[d] * a;
}

#endif
