/* quant_avx2.c: AVX2 + FMA kernels of quant.h, for x86 CPUs without AVX512-VNNI (before them every product
 * there ran quant.c's scalar dot, which dequantizes each block to float: the model ran ~10x slower on an
 * AVX2-only machine than the kernels allow). The quantized types take quant_x86_kern.h's 256-bit kernels
 * with dp(u, s) = vpmaddubsw + vpmaddwd, whose int32 lanes equal vpdpbusd's, so Q8_0, Q4_1, Q5_0, Q5_1 and
 * the K / IQ4 types give bitwise the AVX-512 path's results (for Q4_1 and Q8_0 that path follows llama.cpp's
 * order; not compared with llama.cpp on an AVX2 machine yet); Q4_0 takes the one-block kernel (the AVX-512 path pairs blocks in 512-bit registers) and the
 * float weights a 256-bit product, both within rounding of the AVX-512 results. */
#include <stdatomic.h>
#include <float.h>
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_x86.h"
#include "gguf.h"
#include "mcommon.h"
#include "quant.h"
#include "quant_x86.h"

#define AI __attribute__((always_inline)) static inline

int quant_avx2_available(void) {
    static atomic_int cached = -1; /* threads racing here all store the same answer */
    int v = atomic_load_explicit(&cached, memory_order_relaxed);
    if (v < 0) {
        v = infllm_x86_has(INFLLM_X86_LEVEL_AVX2) && quant_simd_allowed(1);
        atomic_store_explicit(&cached, v, memory_order_relaxed);
    }
    return v;
}

#include "quant_avx2_ops.h"
#include "quant_x86_kern.h"

/* F32 / F16 / BF16 weights against float activations, 8 lanes a step */
AI void k_float8(int NA, uint32_t type, int64_t n, const uint8_t *w, const float *const *xa, float *out) {
    __m256 acc[8];
    for (int t = 0; t < 8; t++) acc[t] = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 wv;
        if (type == GGML_F32)
            wv = _mm256_loadu_ps((const float *)(const void *)w + i);
        else if (type == GGML_F16)
            wv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(w + 2 * i)));
        else
            wv = _mm256_castsi256_ps(
                _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(const void *)(w + 2 * i))), 16));
        for (int t = 0; t < NA; t++) acc[t] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xa[t] + i), acc[t]);
    }
    for (int t = 0; t < NA; t++) out[t] = qx_hsum256(acc[t]);
    k_float_tail(NA, type, i, n, w, xa, out);
}

int quant_dot_avx2(uint32_t type, int64_t n, const void *wrow, const float *const *xa, const int8_t *const *qa,
                   const float *const *da, const float *const *sa, int na, float *out) {
    const uint8_t *w = (const uint8_t *)wrow;
    switch (type) {
    case GGML_F32: case GGML_F16: case GGML_BF16: DISPATCH(k_float8(NA, type, n, w, xa, out)); return 1;
    case GGML_Q4_0: DISPATCH(k_q45_01(NA, 0, 0, n / 32, w, qa, da, sa, out)); return 1;
    QX_CASES_256
    default: return 0;
    }
}

/* activation quantization of one row (n a multiple of 32), quant_act_row_mode's results bitwise: the max |x| of the
 * blocks that share a scale (one, or QACT_Q8_K's 8; exact in any order), x * id rounded to nearest even (vcvtps2dq
 * under the default rounding, as lrintf), clamped to +-127, the int32 sum exact in any order */
AI float act_block_amax(const float *x, int *nonfinite) {
    const __m256 sign = _mm256_set1_ps(-0.0f), big = _mm256_set1_ps(FLT_MAX);
    __m256 ax = _mm256_setzero_ps(), nf = _mm256_setzero_ps();
    for (int k = 0; k < 4; k++) {
        const __m256 a = _mm256_andnot_ps(sign, _mm256_loadu_ps(x + 8 * k));
        ax = _mm256_max_ps(ax, a);
        nf = _mm256_or_ps(nf, _mm256_cmp_ps(a, big, _CMP_NLE_UQ)); /* |x| not <= FLT_MAX: a NaN or an infinity */
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(ax), _mm256_extractf128_ps(ax, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    *nonfinite |= _mm256_movemask_ps(nf);
    return _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
}

/* one block's 32 values x * id to int8 at q; returns their sum */
AI int act_block_quantize(const float *x, float id, int8_t *q) {
    const __m256i lo = _mm256_set1_epi32(-127), hi = _mm256_set1_epi32(127);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    const __m256 iv = _mm256_set1_ps(id);
    __m256i iq[4];
    __m256i sum8 = _mm256_setzero_si256();
    for (int k = 0; k < 4; k++) {
        iq[k] = _mm256_min_epi32(_mm256_max_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * k), iv)), lo), hi);
        sum8 = _mm256_add_epi32(sum8, iq[k]);
    }
    /* int32 -> int8 (no saturation: |v| <= 127); the packs interleave 128-bit lanes, the permute undoes it */
    const __m256i p16a = _mm256_packs_epi32(iq[0], iq[1]), p16b = _mm256_packs_epi32(iq[2], iq[3]);
    _mm256_storeu_si256((__m256i *)(void *)q, _mm256_permutevar8x32_epi32(_mm256_packs_epi16(p16a, p16b), order));
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum8), _mm256_extracti128_si256(sum8, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
    return _mm_cvtsi128_si32(s4);
}

void quant_act_row_mode_avx2(const float *x, int64_t n, int8_t *q, float *d, float *s, int mode) {
    const int64_t nb = n / 32, G = quant_act_group(mode);
    for (int64_t g0 = 0; g0 < nb; g0 += G) {
        const int64_t g1 = g0 + G < nb ? g0 + G : nb; /* the blocks sharing one scale */
        float amax = 0.f;
        int nonfinite = 0;
        for (int64_t b = g0; b < g1; b++) amax = fmaxf(amax, act_block_amax(x + 32 * b, &nonfinite));
        if (nonfinite) { /* quant_act_block_nonfinite, as the scalar one */
            for (int64_t b = g0; b < g1; b++) quant_act_block_nonfinite(q + 32 * b, &d[b], &s[b]);
            continue;
        }
        float dd;
        const float id = quant_act_block_inv(mode, amax, &dd);
        for (int64_t b = g0; b < g1; b++)
            quant_act_scales(mode, dd, act_block_quantize(x + 32 * b, id, q + 32 * b), &d[b], &s[b]);
    }
}
