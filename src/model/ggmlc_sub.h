/* ggmlc_sub.h: results below FLT_MIN without subnormal arithmetic, for the AVX2 llama.cpp-order kernels
 * (ggmlc_avx2.c, ggmlc_l8_avx2.c; ggmlc_avx512.c has its 512-bit twin, scalef_denormal). A multiply whose result is
 * subnormal takes a microcode assist on Intel cores, and a softmax over scores spread past 87 makes many (session 73:
 * 47% of a prefill's attention samples on AVX-512). Include after AI and <immintrin.h>, in AVX2 files only. */
#ifndef INFLLM_GGMLC_SUB_H
#define INFLLM_GGMLC_SUB_H

/* RNE(t * 2^-k) for positive normal t where the result is below FLT_MIN (k + 1 > t's biased exponent), built from t's
 * significand shifted right with round to nearest even: the bits a multiply by 2^-k rounds to (a carry into the
 * exponent field gives FLT_MIN, as rounding would). Other lanes give garbage: the caller blends them out. */
AI __m256 ggmlc_sub_scale8(__m256 t, int k) {
    const __m256i tb = _mm256_castps_si256(t), one = _mm256_set1_epi32(1);
    const __m256i e = _mm256_srli_epi32(tb, 23);
    const __m256i m = _mm256_or_si256(_mm256_and_si256(tb, _mm256_set1_epi32(0x7FFFFF)), _mm256_set1_epi32(0x800000));
    const __m256i sh = _mm256_min_epi32(_mm256_sub_epi32(_mm256_set1_epi32(k + 1), e), _mm256_set1_epi32(25));
    const __m256i q = _mm256_srlv_epi32(m, sh);
    const __m256i r = _mm256_sub_epi32(m, _mm256_sllv_epi32(q, sh));
    const __m256i half = _mm256_sllv_epi32(one, _mm256_sub_epi32(sh, one));
    const __m256i odd = _mm256_cmpeq_epi32(_mm256_and_si256(q, one), one);
    const __m256i up = _mm256_or_si256(_mm256_cmpgt_epi32(r, half), _mm256_and_si256(_mm256_cmpeq_epi32(r, half), odd));
    return _mm256_castsi256_ps(_mm256_sub_epi32(q, up)); /* up: -1 where rounding up */
}

#endif
