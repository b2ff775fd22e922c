/* qgemm_avxvnni.c: the K-quant and IQ4_XS prefill tiles of qgemm_x86_tiles.h (qgemm_ktiles) on AVX2 CPUs with
 * AVX-VNNI (Intel's client cores from Alder Lake: the VEX-encoded vpdpwssd / vpdpbusd, without AVX-512), where each
 * scaled 32-value product is vpmaddubsw + vpdpwssd instead of AVX2's vpmaddubsw + vpmaddwd + vpaddd: one vector
 * operation less on the two ports that multiply. The integer sums are the same, so the results are bitwise
 * quant_dot_avx2's (test_quant's test_tiles_exact checks it where the CPU has AVX-VNNI).
 *
 * CMake compiles this file with the AVX2 flags and -mavxvnni where the compiler takes it; without that flag (or off
 * x86) it builds to the "not taken" entry points below. The dispatch (quant_avxvnni_available) checks AVX2 + FMA +
 * F16C, AVX-VNNI and INFLLM_SIMD allowing AVX2 kernels; INFLLM_AVXVNNI=0 turns it off. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "mcommon.h"
#include "quant.h"

#if defined(__AVXVNNI__) && defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#include <stdatomic.h>

#include "cpu_x86.h"
#include "quant_rows.h"
#include "quant_x86.h"

#define AI __attribute__((always_inline)) static inline
AI __m256i ld(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }
/* vpdpbusd (VEX): lane k = acc + the sum of u[j] * s[j] over bytes j = 4k..4k+3, as AVX2's vpmaddubsw + vpmaddwd
 * (no pair here reaches the int16 limit: quant_x86_kern.h) */
AI __m256i dp(__m256i u, __m256i s) { return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, s); }
/* acc + the int16 pair sums of u x s times their scales (vpdpwssd: exact while the int32 lanes do not wrap, as
 * AVX2's vpmaddwd + vpaddd) */
AI __m256i dpsc(__m256i acc, __m256i u, __m256i s, __m256i sc) {
    return _mm256_dpwssd_avx_epi32(acc, _mm256_maddubs_epi16(u, s), sc);
}
/* byte j = 0xff where bit j of qh is set (quant_avx2_ops.h's) */
AI __m256i qx_bits_bytes(uint32_t qh) {
    const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
    const __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int)qh), shuf);
    const __m256i others = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe);
    return _mm256_cmpeq_epi8(_mm256_or_si256(bytes, others), _mm256_set1_epi64x(-1));
}
#include "quant_x86_kern.h"
#define QG_TILES_Q8_Q4 0
#define QG_YMM_REGS 16 /* VEX: ymm0-15 */
#define QG_KTILES_ONLY 1
#define QG_ZMM 0
#include "qgemm_x86_tiles.h"

int quant_avxvnni_available(void) {
    static atomic_int cached = -1; /* threads racing here all store the same answer */
    int v = atomic_load_explicit(&cached, memory_order_relaxed);
    if (v < 0) {
        const char *e = getenv("INFLLM_AVXVNNI");
        v = infllm_x86_has(INFLLM_X86_LEVEL_AVX2 | INFLLM_X86_AVX_VNNI) && quant_simd_allowed(1) &&
            !(e && strcmp(e, "0") == 0);
        atomic_store_explicit(&cached, v, memory_order_relaxed);
    }
    return v;
}

int quant_gemm_ktile_avxvnni(uint32_t type, const void *w, int64_t r0, int64_t r1, int64_t cols, const void *packed,
                             int64_t ntok, float *y, int64_t ldy) {
    return quant_avxvnni_available() && qgemm_ktiles(type, w, r0, r1, cols, packed, ntok, y, ldy);
}

#else /* not built with AVX-VNNI */
int quant_avxvnni_available(void) { return 0; }
int quant_gemm_ktile_avxvnni(uint32_t type, const void *w, int64_t r0, int64_t r1, int64_t cols, const void *packed,
                             int64_t ntok, float *y, int64_t ldy) {
    (void)type, (void)w, (void)r0, (void)r1, (void)cols, (void)packed, (void)ntok, (void)y, (void)ldy;
    return 0;
}
#endif
