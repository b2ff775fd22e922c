/* quant_avx512_ops.h: the AVX512-VNNI (VL) operations quant_x86_kern.h's kernels take from their includer (ld, dp,
 * qx_bits_bytes), shared by quant_avx512.c (the one-row kernels) and qgemm256_avx512.c (the prefill tiles), so that
 * both compute the same lanes. Include only from files compiled with AVX512F / BW / VL and VNNI, after defining AI
 * (always-inline static). */
#ifndef INFLLM_QUANT_AVX512_OPS_H
#define INFLLM_QUANT_AVX512_OPS_H

#include <immintrin.h>
#include <stdint.h>

AI __m256i ld(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }
/* 8 int32 lanes, lane k = sum of u[j] * s[j] over bytes j = 4k..4k+3 (u unsigned, s signed) */
AI __m256i dp(__m256i u, __m256i s) { return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s); }
/* acc + the scaled pair sums (quant_avx2_ops.h's dpsc, the same int32 results): vpdpwssd adds vpmaddwd's sums */
AI __m256i dpsc(__m256i acc, __m256i u, __m256i s, __m256i sc) {
    return _mm256_dpwssd_epi32(acc, _mm256_maddubs_epi16(u, s), sc);
}
/* byte j = 0xff where bit j of qh is set */
AI __m256i qx_bits_bytes(uint32_t qh) { return _mm256_movm_epi8((__mmask32)qh); }

#endif
