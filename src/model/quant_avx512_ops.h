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

/* zmm16-31 zeroed, then VZEROUPPER (which leaves zmm16-31 as they are): for an AVX-512 entry point to call before it
 * returns to SSE code. Code that had used any of xmm16-31 (GCC's scalar temporaries and spills go there too) left
 * the upper state dirty, and the model's SSE code after the product (RoPE calling libm's VEX fmaf) ran ~25x slower
 * (session 73, qgemm_amx.c; session 74 the 512-bit K-quant tiles) */
static inline void qx_upper_clean(void) {
    __asm__ volatile("vpxord %%zmm16, %%zmm16, %%zmm16\n\tvpxord %%zmm17, %%zmm17, %%zmm17\n\t"
                     "vpxord %%zmm18, %%zmm18, %%zmm18\n\tvpxord %%zmm19, %%zmm19, %%zmm19\n\t"
                     "vpxord %%zmm20, %%zmm20, %%zmm20\n\tvpxord %%zmm21, %%zmm21, %%zmm21\n\t"
                     "vpxord %%zmm22, %%zmm22, %%zmm22\n\tvpxord %%zmm23, %%zmm23, %%zmm23\n\t"
                     "vpxord %%zmm24, %%zmm24, %%zmm24\n\tvpxord %%zmm25, %%zmm25, %%zmm25\n\t"
                     "vpxord %%zmm26, %%zmm26, %%zmm26\n\tvpxord %%zmm27, %%zmm27, %%zmm27\n\t"
                     "vpxord %%zmm28, %%zmm28, %%zmm28\n\tvpxord %%zmm29, %%zmm29, %%zmm29\n\t"
                     "vpxord %%zmm30, %%zmm30, %%zmm30\n\tvpxord %%zmm31, %%zmm31, %%zmm31\n\tvzeroupper" ::
                         : "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm24", "xmm25",
                           "xmm26", "xmm27", "xmm28", "xmm29", "xmm30", "xmm31");
}

#endif
