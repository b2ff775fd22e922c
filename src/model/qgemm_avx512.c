/* qgemm_avx512.c: register-blocked products of Q4_1 and Q8_0 weights with int8 activations,
 * used by quant_matmul: quant_gemm_avx512 for prefill (>= 4 tokens). (Decode, 1-3 tokens, took two weight rows per
 * zmm here until session 72, when the 256-bit 4-row tiles of qgemm_x86_tiles.h, quant_gemv256_avx512, outran it:
 * 1.3x for Q4_1 and 1.1x for Q8_0 on a Sapphire Rapids VM at 1 token.)
 *
 * The one-row kernels of quant_avx512.c (kx_q4_1, kx_q8_0) reproduce llama.cpp's arithmetic:
 * per 32-value block, 8 int32 lanes of vpdpbusd sums -> f32, acc = fma(d_w * d_a, lanes, acc),
 * then a fixed horizontal sum, plus (Q4_1) the sequential sum of m_w * s_a. Each (row, token)
 * there costs its own broadcast scale and conversion per block and re-unpacks nothing, but every
 * block's weights are unpacked once per 8 tokens and each instruction does 32 multiply-adds.
 *
 * Here a zmm register holds two tokens' 8-lane accumulators (lanes 0-7 token t, 8-15 token t+1)
 * for one weight row, so each vpdpbusd does 64 multiply-adds, and a tile of 4 rows x 4 token
 * pairs shares each row's unpacked block (broadcast to both halves) over 8 tokens and each token
 * pair's activations and scales over 4 rows. Every lane does exactly the operations, in the same
 * order, of the one-row kernel: the results are bitwise equal to quant_dot_avx512's (the tests
 * check it), so prefill and decode agree with each other and with llama.cpp.
 */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "quant.h"
#include "quant_x86.h"

#define AI __attribute__((always_inline)) static inline

#define QG_NR 4 /* weight rows per tile */
#define QG_NP 4 /* token pairs per tile (8 tokens): 16 accumulators + 4 unpacked rows in 32 zmm */

/* One block b of an NRR x NPP tile. w: the tile's first row; qa/da: 2 * NPP token rows. */
AI void qg_block(const uint32_t TYPE, const uint8_t *w, size_t rb, int64_t b, const int8_t *const *qa,
                 const float *const *da, __m512 acc[QG_NR][QG_NP], const int NRR, const int NPP) {
    __m512i u[QG_NR];
    __mmask64 neg[QG_NR];
    float dw[QG_NR];
#pragma GCC unroll 4
    for (int r = 0; r < NRR; r++) {
        const uint8_t *wb = w + (size_t)r * rb + (size_t)b * (TYPE == GGML_Q8_0 ? 34 : 20);
        dw[r] = qx_h2f(wb);
        if (TYPE == GGML_Q8_0) {
            __m512i q = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(wb + 2)));
            u[r] = _mm512_abs_epi8(q);
            neg[r] = _mm512_movepi8_mask(q);
        } else {
            u[r] = _mm512_broadcast_i64x4(qx_q4_unpack(wb + 4));
            neg[r] = 0;
        }
    }
#pragma GCC unroll 4
    for (int p = 0; p < NPP; p++) {
        const int8_t *q0 = qa[2 * p] + b * 32, *q1 = qa[2 * p + 1] + b * 32;
        __m512i a = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)q0)),
                                       _mm256_loadu_si256((const __m256i *)q1), 1);
        __m512 dap = _mm512_insertf32x8(_mm512_set1_ps(da[2 * p][b]), _mm256_set1_ps(da[2 * p + 1][b]), 1);
#pragma GCC unroll 4
        for (int r = 0; r < NRR; r++) {
            /* Q8_0: signs of the weights moved onto the activations (|w| unsigned) */
            __m512i at = TYPE == GGML_Q8_0 ? _mm512_mask_sub_epi8(a, neg[r], _mm512_setzero_si512(), a) : a;
            __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u[r], at);
            /* d_w * d_a rounded once per half, as the scalar product of the one-row kernel */
            __m512 sc = _mm512_mul_ps(_mm512_set1_ps(dw[r]), dap);
            acc[r][p] = _mm512_fmadd_ps(sc, _mm512_cvtepi32_ps(s), acc[r][p]);
        }
    }
}

/* NRR rows x NPP token pairs; y[t * ldy + r]; ntv valid tokens (the last pair may repeat a token
 * whose result is dropped); st: s_a transposed [nb][2 * QG_NP] (Q4_1); mo: the rows' m [NRR][nb]. */
AI void qg_tile(const uint32_t TYPE, const uint8_t *w, size_t rb, int64_t nb, const int8_t *const *qa,
                const float *const *da, const float *st, const float *mo, float *y, int64_t ldy, int ntv,
                const int NRR, const int NPP) {
    __m512 acc[QG_NR][QG_NP];
#pragma GCC unroll 4
    for (int r = 0; r < NRR; r++)
#pragma GCC unroll 4
        for (int p = 0; p < NPP; p++) acc[r][p] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) qg_block(TYPE, w, rb, b, qa, da, acc, NRR, NPP);
    for (int r = 0; r < NRR; r++) {
        /* Q4_1: summs = sum over blocks, in order, of the rounded products m_w * s_a */
        __m256 summs = _mm256_setzero_ps();
        if (TYPE == GGML_Q4_1)
            for (int64_t b = 0; b < nb; b++)
                summs = _mm256_add_ps(summs, _mm256_mul_ps(_mm256_set1_ps(mo[r * nb + b]),
                                                           _mm256_loadu_ps(st + b * 2 * QG_NP)));
        float sm[8];
        _mm256_storeu_ps(sm, summs);
        for (int p = 0; p < NPP; p++) {
            float lo = qx_hsum256(_mm512_castps512_ps256(acc[r][p])) + sm[2 * p];
            float hi = qx_hsum256(_mm512_extractf32x8_ps(acc[r][p], 1)) + sm[2 * p + 1];
            if (2 * p < ntv) y[(2 * p) * ldy + r] = lo;
            if (2 * p + 1 < ntv) y[(2 * p + 1) * ldy + r] = hi;
        }
    }
}

/* a tile of nr <= QG_NR rows: constant sizes for full tiles, single rows at the edge */
static void qg_rows(const uint32_t TYPE, const uint8_t *w, size_t rb, int64_t nb, const int8_t *const *qa,
                    const float *const *da, const float *st, const float *mo, float *y, int64_t ldy, int ntv,
                    int nr) {
    if (nr == QG_NR) {
        if (TYPE == GGML_Q4_1) qg_tile(GGML_Q4_1, w, rb, nb, qa, da, st, mo, y, ldy, ntv, QG_NR, QG_NP);
        else qg_tile(GGML_Q8_0, w, rb, nb, qa, da, st, mo, y, ldy, ntv, QG_NR, QG_NP);
        return;
    }
    for (int r = 0; r < nr; r++) {
        const uint8_t *wr = w + (size_t)r * rb;
        const float *mr = mo ? mo + (size_t)r * nb : NULL;
        if (TYPE == GGML_Q4_1) qg_tile(GGML_Q4_1, wr, rb, nb, qa, da, st, mr, y + r, ldy, ntv, 1, QG_NP);
        else qg_tile(GGML_Q8_0, wr, rb, nb, qa, da, st, mr, y + r, ldy, ntv, 1, QG_NP);
    }
}

int quant_gemm_avx512(uint32_t type, const void *w, int64_t r0, int64_t r1, int64_t cols, const int8_t *q,
                      const float *d, const float *s, int64_t ntok, float *y, int64_t ldy) {
    if ((type != GGML_Q4_1 && type != GGML_Q8_0) || cols % QK || r1 <= r0 || ntok <= 0) return 0;
    const size_t rb = ggml_row_size(type, cols);
    const int64_t nb = cols / QK, nrows = r1 - r0;
    const int TT = 2 * QG_NP;
    /* Q4_1: the rows' m per block, and each token group's s transposed to [nb][TT] */
    float *mo = NULL, *st = NULL;
    if (type == GGML_Q4_1) {
        mo = malloc((size_t)nrows * (size_t)nb * sizeof(float));
        st = malloc((size_t)nb * TT * sizeof(float));
        if (!mo || !st) {
            free(mo);
            free(st);
            return 0;
        }
        for (int64_t r = 0; r < nrows; r++)
            for (int64_t b = 0; b < nb; b++)
                mo[r * nb + b] = qx_h2f((const uint8_t *)w + (size_t)(r0 + r) * rb + (size_t)b * 20 + 2);
    }
    for (int64_t t0 = 0; t0 < ntok; t0 += TT) {
        int ntv = ntok - t0 < TT ? (int)(ntok - t0) : TT;
        const int8_t *qa[2 * QG_NP];
        const float *da[2 * QG_NP];
        for (int k = 0; k < TT; k++) {
            int64_t t = t0 + (k < ntv ? k : ntv - 1); /* missing tokens repeat the last one */
            qa[k] = q + t * cols;
            da[k] = d + t * nb;
            if (st)
                for (int64_t b = 0; b < nb; b++) st[b * TT + k] = s[t * nb + b];
        }
        for (int64_t r = r0; r < r1; r += QG_NR) {
            int nr = r1 - r < QG_NR ? (int)(r1 - r) : QG_NR;
            qg_rows(type, (const uint8_t *)w + (size_t)r * rb, rb, nb, qa, da, st, mo ? mo + (r - r0) * nb : NULL,
                    y + t0 * ldy + r, ldy, ntv, nr);
        }
    }
    free(mo);
    free(st);
    return 1;
}
