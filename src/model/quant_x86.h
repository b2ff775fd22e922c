/* quant_x86.h: small AVX/F16C helpers (f16 load, Q4 unpack, llama.cpp's hsum) shared by the x86 quantized kernels (quant_avx512.c,
 * qgemm_avx512.c). Include only from files compiled with those instruction sets. */
#ifndef INFLLM_QUANT_X86_H
#define INFLLM_QUANT_X86_H

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

/* an f16 value at any alignment, widened to f32 */
static inline __attribute__((always_inline)) float qx_h2f(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

/* llama.cpp's hsum_float_8: (lanes k + k+4), then (0+2, 1+3), then the two; the kernels that
 * reproduce llama.cpp's results bitwise depend on this exact order */
static inline __attribute__((always_inline)) float qx_hsum256(__m256 v) {
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
}

/* the 32 4-bit values of a Q4_0/Q4_1 block (16 bytes at qs) as unsigned bytes in value order:
 * the low nibbles are values 0-15, the high nibbles 16-31 (ggml's bytes_from_nibbles_32) */
static inline __attribute__((always_inline)) __m256i qx_q4_unpack(const uint8_t *qs) {
    const __m128i m4 = _mm_set1_epi8(0xF);
    __m128i raw = _mm_loadu_si128((const __m128i *)(const void *)qs);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(raw, 4), m4), _mm_and_si128(raw, m4));
}

#endif
