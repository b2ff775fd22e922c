/* quant_avx512.c: AVX512-VNNI kernels of quant.h: the 256-bit kernels of quant_x86_kern.h with vpdpbusd
 * (VL), and 512-bit ones for float weights and Q4_0 (two blocks a vpdpbusd). */
#include <stdatomic.h>
#include <float.h>
#include <immintrin.h>
#include <string.h>

#include "cpu_x86.h"
#include "gguf.h"
#include "mcommon.h"
#include "quant.h"
#include "quant_x86.h"
#include "quant_rows.h"

#define AI __attribute__((always_inline)) static inline

int quant_avx512_available(void) {
    static atomic_int cached = -1; /* threads racing here all store the same answer */
    int v = atomic_load_explicit(&cached, memory_order_relaxed);
    if (v < 0) {
        v = infllm_x86_has(INFLLM_X86_LEVEL_AVX512 | INFLLM_X86_AVX512VNNI) && quant_simd_allowed(2);
        atomic_store_explicit(&cached, v, memory_order_relaxed);
    }
    return v;
}

#include "quant_avx512_ops.h" /* ld, dp, qx_bits_bytes: the prefill tiles' (qgemm256_avx512.c) too */

#include "quant_x86_kern.h"


AI void k_float(int NA, uint32_t type, int64_t n, const uint8_t *w, const float *const *xa, float *out) {
    __m512 acc[8];
    for (int t = 0; t < 8; t++) acc[t] = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 wv;
        if (type == GGML_F32)
            wv = _mm512_loadu_ps((const float *)w + i);
        else if (type == GGML_F16)
            wv = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + 2 * i)));
        else
            wv = _mm512_castsi512_ps(
                _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(w + 2 * i))), 16));
        for (int t = 0; t < NA; t++) acc[t] = _mm512_fmadd_ps(wv, _mm512_loadu_ps(xa[t] + i), acc[t]);
    }
    for (int t = 0; t < NA; t++) out[t] = _mm512_reduce_add_ps(acc[t]);
    k_float_tail(NA, type, i, n, w, xa, out);
}


/* two floats from an address aligned to 4 only (no double-typed load: UBSan alignment) */
#define LD2(p) _mm_castsi128_ps(_mm_loadl_epi64((const __m128i_u *)(const void *)(p)))

/* 512-bit variants: two consecutive 32-value blocks per vpdpbusd (Q4_0, Q4_1, Q8_0) */
static const int32_t perm_pair[16] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1};

AI __m512 pair_scale(__m128 dd, const float *da) {
    __m128 dap = LD2(da);
    return _mm512_permutexvar_ps(_mm512_loadu_si512(perm_pair), _mm512_castps128_ps512(_mm_mul_ps(dd, dap)));
}

AI void k2_q4_01(int NA, int has_min, int64_t nb, const uint8_t *w, const int8_t *const *qa, const float *const *da,
                 const float *const *sa, float *out) {
    __m512 acc[8];
    for (int t = 0; t < 8; t++) acc[t] = _mm512_setzero_ps();
    __m128 offv[8];
    for (int t = 0; t < 8; t++) offv[t] = _mm_setzero_ps();
    const __m256i m4v = _mm256_set1_epi8(0xF);
    const __m512i perm_lh = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11); /* lo0 hi0 lo1 hi1 */
    const size_t bb = has_min ? 20 : 18, qo = has_min ? 4 : 2;
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2, w += 2 * bb) {
        __m256i v = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(w + qo))),
                                            _mm_loadu_si128((const __m128i *)(w + bb + qo)), 1); /* qs0 | qs1 */
        __m256i lo = _mm256_and_si256(v, m4v), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4v);
        __m512i u = _mm512_permutex2var_epi64(_mm512_castsi256_si512(lo), perm_lh, _mm512_castsi256_si512(hi));
        __m128 dd, mm;
        if (has_min) {
            uint32_t a0, a1;
            memcpy(&a0, w, 4);
            memcpy(&a1, w + bb, 4);
            __m128 dm = _mm_cvtph_ps(_mm_set_epi32(0, 0, (int)a1, (int)a0)); /* d0 m0 d1 m1 */
            dd = _mm_shuffle_ps(dm, dm, _MM_SHUFFLE(3, 1, 2, 0));             /* d0 d1 m0 m1 */
            mm = _mm_movehl_ps(dd, dd);                                       /* m0 m1 */
        } else {
            uint16_t a0, a1;
            memcpy(&a0, w, 2);
            memcpy(&a1, w + bb, 2);
            dd = _mm_cvtph_ps(_mm_set_epi16(0, 0, 0, 0, 0, 0, (short)a1, (short)a0));
            mm = _mm_mul_ps(dd, _mm_set1_ps(-8.f));
        }
        for (int t = 0; t < NA; t++) {
            __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, _mm512_loadu_si512(qa[t] + b * 32));
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), pair_scale(dd, da[t] + b), acc[t]);
            offv[t] = _mm_fmadd_ps(mm, LD2((sa[t] + b)), offv[t]);
        }
    }
    float tail[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    if (b < nb) {
        const int8_t *q2[8];
        const float *d2[8], *s2[8];
        for (int t = 0; t < NA; t++) {
            q2[t] = qa[t] + b * 32;
            d2[t] = da[t] + b;
            s2[t] = sa[t] + b;
        }
        k_q45_01(NA, 0, has_min, 1, w, q2, d2, s2, tail);
    }
    for (int t = 0; t < NA; t++) {
        __m128 o = offv[t];
        out[t] = _mm512_reduce_add_ps(acc[t]) + _mm_cvtss_f32(o) + _mm_cvtss_f32(_mm_shuffle_ps(o, o, 1)) + tail[t];
    }
}


int quant_dot_avx512(uint32_t type, int64_t n, const void *wrow, const float *const *xa, const int8_t *const *qa,
                     const float *const *da, const float *const *sa, int na, float *out) {
    const uint8_t *w = (const uint8_t *)wrow;
    switch (type) {
    case GGML_F32: case GGML_F16: case GGML_BF16: DISPATCH(k_float(NA, type, n, w, xa, out)); return 1;
    case GGML_Q4_0: DISPATCH(k2_q4_01(NA, 0, n / 32, w, qa, da, sa, out)); return 1;
    QX_CASES_256
    default: return 0;
    }
}

/* quant_dot_avx512 in quant_dot_rows' signature (every type has a kernel here) */
static void dot_rows_avx512(uint32_t type, int64_t n, const void *wrow, const float *const *xa, const int8_t *const *qa,
                            const float *const *da, const float *const *sa, int na, float *out, int use_simd) {
    (void)use_simd;
    quant_dot_avx512(type, n, wrow, xa, qa, da, sa, na, out);
}

/* the one-row kernels over rows r0..r1-1 (quant_rows.h's loop), here so that the loop between two rows' kernels is
 * VEX code. From quant.c's (legacy SSE) loop, each row's return from EVEX code that had touched ymm16-31 (whose upper
 * state vzeroupper does not clean) cost the SSE instructions between calls a state-transition penalty: Q5_K / Q6_K
 * decode products, whose kernels use those registers since session 72, ran at a third of their speed (Sapphire
 * Rapids). x / q, d, s as quant_matmul's (float rows for float weights). */
int quant_rows_avx512(uint32_t type, const void *w, int64_t r0, int64_t r1, int64_t cols, const float *x, const int8_t *q,
                      const float *d, const float *s, int64_t ntok, float *y, int64_t ldy) {
    const int isf = type == GGML_F32 || type == GGML_F16 || type == GGML_BF16;
    if (!quant_supported(type) || (!isf && cols % QK) || r1 <= r0 || ntok <= 0) return 0;
    quant_rows_loop(dot_rows_avx512, 1, isf, type, w, ggml_row_size(type, cols), r0, r1, cols, x, q, d, s, ntok, y, ldy);
    return 1;
}

/* activation quantization of one row (n a multiple of 32): same rounding as quant_act_row
 * (round to nearest even via cvtps; lrintf in the default mode) */
void quant_act_row_avx512(const float *x, int64_t n, int8_t *q, float *d, float *s) {
    quant_act_row_mode_avx512(x, n, q, d, s, QACT_F32);
}

/* mode QACT_F32: scale amax/127 kept in f32, values x * (1 / scale); QACT_Q8_1 / QACT_Q8_0:
 * llama.cpp's quantize_row_q8_1 / q8_0 (values x * (127 / amax); the scale rounded to f16; Q8_1's
 * s = f16(d * sum) from the f32 scale, Q8_0's s = f16 scale * sum); QACT_Q8_K: one scale for 8 blocks (quant.h) */
void quant_act_row_mode_avx512(const float *x, int64_t n, int8_t *q, float *d, float *s, int mode) {
    const __m512 sign = _mm512_set1_ps(-0.0f), big = _mm512_set1_ps(FLT_MAX);
    const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
    const int64_t nb = n / 32, G = quant_act_group(mode);
    for (int64_t g0 = 0; g0 < nb; g0 += G) {
        const int64_t g1 = g0 + G < nb ? g0 + G : nb; /* the blocks sharing one scale */
        __m512 ax = _mm512_setzero_ps();
        __mmask16 nf = 0;
        for (int64_t b = g0; b < g1; b++) {
            const __m512 a0 = _mm512_andnot_ps(sign, _mm512_loadu_ps(x + 32 * b));
            const __m512 a1 = _mm512_andnot_ps(sign, _mm512_loadu_ps(x + 32 * b + 16));
            ax = _mm512_max_ps(ax, _mm512_max_ps(a0, a1));
            /* a NaN or an infinity (|x| not <= FLT_MAX): quant_act_block_nonfinite, as the scalar one */
            nf |= _mm512_cmp_ps_mask(a0, big, _CMP_NLE_UQ) | _mm512_cmp_ps_mask(a1, big, _CMP_NLE_UQ);
        }
        if (nf) {
            for (int64_t b = g0; b < g1; b++) quant_act_block_nonfinite(q + 32 * b, &d[b], &s[b]);
            continue;
        }
        float dd;
        const float id = quant_act_block_inv(mode, _mm512_reduce_max_ps(ax), &dd);
        const __m512 iv = _mm512_set1_ps(id);
        for (int64_t b = g0; b < g1; b++) {
            __m512i i0 = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + 32 * b), iv));
            __m512i i1 = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + 32 * b + 16), iv));
            i0 = _mm512_min_epi32(_mm512_max_epi32(i0, lo), hi);
            i1 = _mm512_min_epi32(_mm512_max_epi32(i1, lo), hi);
            _mm_storeu_si128((__m128i *)(q + 32 * b), _mm512_cvtepi32_epi8(i0));
            _mm_storeu_si128((__m128i *)(q + 32 * b + 16), _mm512_cvtepi32_epi8(i1));
            quant_act_scales(mode, dd, _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1)), &d[b], &s[b]);
        }
    }
}
