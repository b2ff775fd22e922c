/* qgemm_avx2.c: the products of quantized weights with int8 activations on AVX2 + FMA CPUs (used by quant_matmul
 * where AVX512-VNNI is absent): quant_gemm_avx2, the prefill tiles of qgemm_x86_tiles.h (>= 4 tokens; Q8_0, Q4_0,
 * Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K), and quant_gemv_avx2, the decode product of all but the K-quants, each bitwise
 * equal to the one-row kernels of quant_x86_kern.h (kx_q8_0, kx_q4_1, k_q45_01, k_q45_k, k_q6_k) that
 * quant_dot_avx2 runs.
 */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "mcommon.h"
#include "quant.h"
#include "quant_x86.h"

#define AI __attribute__((always_inline)) static inline
#include "quant_avx2_ops.h" /* ld, dp, qx_bits_bytes: the one-row kernels' own */
#include "quant_x86_kern.h"
#define QG_TILES_Q8_Q4 1 /* every tile type */
#include "qgemm_x86_tiles.h"

int quant_gemm_avx2(uint32_t type, const void *w, int64_t r0, int64_t r1, int64_t cols, const int8_t *q,
                    const float *d, const float *s, int64_t ntok, float *y, int64_t ldy) {
    return qgemm_tiles(type, w, r0, r1, cols, q, d, s, ntok, y, ldy);
}

/* ------------------------------------------------------------ decode ---- */
/* One token x QV_NR weight rows (w: the first, rb bytes apart; rows past nvalid repeat the last valid one and are
 * not written), y[r]. Per row and block exactly the one-row kernel's operations (kx_q8_0, kx_q4_1, k_q45_01): the
 * scale d_w * d_a a rounded scalar product, acc = fma(that, lanes, acc) (the product commutes), the min / offset
 * sum in block order as a rounded product then a rounded add; the final hsum + sum. What differs is only that the
 * QV_NR rows' chains run side by side (the one-row kernel's single FMA chain a row was the decode's bound: one
 * block per FMA latency) and that each activation block is loaded once for them. */
#define QV_NR 4
AI void qv_tile(const uint32_t TYPE, const uint8_t *w, size_t rb, int64_t nb, const int8_t *qa, const float *da,
                const float *sa, float *y, int nvalid) {
    const int five = TYPE == GGML_Q5_0 || TYPE == GGML_Q5_1, has_min = TYPE == GGML_Q4_1 || TYPE == GGML_Q5_1;
    const int offs = TYPE != GGML_Q8_0;
    const size_t hdr = has_min ? 4 : 2, bb = TYPE == GGML_Q8_0 ? 34 : hdr + (five ? 4 : 0) + 16;
    const uint8_t *wr[QV_NR];
    __m256 acc[QV_NR];
    float off[QV_NR];
    for (int r = 0; r < QV_NR; r++) {
        wr[r] = w + (size_t)(r < nvalid ? r : nvalid - 1) * rb;
        acc[r] = _mm256_setzero_ps();
        off[r] = 0.f;
    }
    /* the rows two tiles ahead, a few lines a block: a row is a few hundred bytes, too short a stream for the
     * hardware prefetcher to run ahead of (decode reads every weight once a token, from memory) */
    const char *pf = (const char *)w + 2 * QV_NR * rb;
    const int64_t lpb = ((int64_t)(QV_NR * rb) + 64 * nb - 1) / (64 * nb); /* lines a block */
    for (int64_t b = 0; b < nb; b++) {
        for (int64_t k = b * lpb; k < (b + 1) * lpb; k++) _mm_prefetch(pf + 64 * k, _MM_HINT_T0);
        const __m256i a = ld(qa + b * 32);
        const float dab = da[b], sab = offs ? sa[b] : 0.f;
#pragma GCC unroll 4
        for (int r = 0; r < QV_NR; r++) {
            const uint8_t *wb = wr[r] + (size_t)b * bb;
            const float d = qx_h2f(wb);
            __m256i s;
            if (TYPE == GGML_Q8_0) {
                const __m256i q = ld(wb + 2);
                s = dp(_mm256_abs_epi8(q), _mm256_sign_epi8(a, q));
            } else {
                s = dp(qx_q45_values(wb, hdr, five), a);
            }
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * dab), _mm256_cvtepi32_ps(s), acc[r]);
            if (offs) {
                const float m = has_min ? qx_h2f(wb + 2) : (five ? -16.f : -8.f) * d;
                const float ms = m * sab;
                off[r] = off[r] + ms;
            }
        }
    }
    for (int r = 0; r < nvalid; r++) {
        const float h = qx_hsum256(acc[r]);
        y[r] = offs ? h + off[r] : h; /* Q8_0: no + 0 (it would turn a -0 into +0) */
    }
}

/* Q4_K / Q5_K are not here: the same 4-row tile ran them no faster (bench/qmm_rate.c, 1 token, 5-7 GMAC/s either
 * way): their decode is bound by the per-row scalar scale work (scales_k4, the sub-blocks' d and m products), not
 * by one FMA chain a row */
int quant_gemv_avx2(uint32_t type, const void *w, int64_t r0, int64_t r1, int64_t cols, const int8_t *q,
                    const float *d, const float *s, int64_t ntok, float *y, int64_t ldy) {
    const int q45 = type == GGML_Q4_0 || type == GGML_Q4_1 || type == GGML_Q5_0 || type == GGML_Q5_1;
    if ((type != GGML_Q8_0 && !q45) || cols % QK || r1 <= r0 || ntok <= 0) return 0;
    const size_t rb = ggml_row_size(type, cols);
    const int64_t nb = cols / QK;
    for (int64_t t = 0; t < ntok; t++) {
        const int8_t *qa = q + t * cols;
        const float *da = d + t * nb, *sa = s + t * nb;
        for (int64_t r = r0; r < r1; r += QV_NR) {
            const int nv = r1 - r < QV_NR ? (int)(r1 - r) : QV_NR;
            const uint8_t *wr = (const uint8_t *)w + (size_t)r * rb;
            float *yr = y + t * ldy + r;
            switch (type) { /* constant TYPE: each its own instance */
            case GGML_Q8_0: qv_tile(GGML_Q8_0, wr, rb, nb, qa, da, sa, yr, nv); break;
            case GGML_Q4_0: qv_tile(GGML_Q4_0, wr, rb, nb, qa, da, sa, yr, nv); break;
            case GGML_Q4_1: qv_tile(GGML_Q4_1, wr, rb, nb, qa, da, sa, yr, nv); break;
            case GGML_Q5_0: qv_tile(GGML_Q5_0, wr, rb, nb, qa, da, sa, yr, nv); break;
            default: qv_tile(GGML_Q5_1, wr, rb, nb, qa, da, sa, yr, nv); break;
            }
        }
    }
    return 1;
}
