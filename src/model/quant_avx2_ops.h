/* quant_avx2_ops.h: the AVX2 operations quant_x86_kern.h's kernels take from their includer (ld, dp,
 * qx_bits_bytes), shared by quant_avx2.c (the one-row kernels) and qgemm_avx2.c (the prefill tiles), so that both
 * compute the same lanes. Include only from files compiled with AVX2, after defining AI (always-inline static). */
#ifndef INFLLM_QUANT_AVX2_OPS_H
#define INFLLM_QUANT_AVX2_OPS_H

#include <immintrin.h>
#include <stdint.h>

AI __m256i ld(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }
/* 8 int32 lanes, lane k = sum of u[j] * s[j] over bytes j = 4k..4k+3 (u unsigned, s signed), as vpdpbusd:
 * vpmaddubsw's int16 pairs saturate only past 32767, which no kernel here reaches (quant_x86_kern.h) */
AI __m256i dp(__m256i u, __m256i s) { return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)); }
/* acc + 8 int32 lanes, lane k = the sum over bytes j = 4k..4k+3 of u[j] * s[j] times the int16 scale of its pair
 * (sc: 16 int16 lanes, lane i scaling bytes 2i, 2i+1): the K-quant kernels' scaled super-block sums. vpmaddubsw's
 * pairs (at most 2 x 32 x 127 here: Q6_K's |q - 32|) and the int32 sums (at most 8 x 2 x 8128 x 128 a super-block) stay in range */
AI __m256i dpsc(__m256i acc, __m256i u, __m256i s, __m256i sc) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), sc));
}
/* byte j = 0xff where bit j of qh is set (ggml's bytes_from_bits_32) */
AI __m256i qx_bits_bytes(uint32_t qh) {
    const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
    const __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh), shuf);
    const __m256i others = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe); /* every bit but bit j % 8 of byte j */
    return _mm256_cmpeq_epi8(_mm256_or_si256(bytes, others), _mm256_set1_epi64x(-1));
}

#endif
