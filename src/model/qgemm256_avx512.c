/* qgemm256_avx512.c: the prefill tiles of qgemm_x86_tiles.h on AVX512-VNNI CPUs (256-bit vectors, dp = vpdpbusd),
 * for the types whose one-row AVX-512 kernels are quant_x86_kern.h's 256-bit ones and which the 512-bit tiles of
 * qgemm_avx512.c do not take: Q5_0, Q5_1, Q4_K, Q5_K and Q6_K (Q8_0 and Q4_1 have those; Q4_0's AVX-512 kernel
 * sums two blocks a vpdpbusd, other lanes). Bitwise quant_dot_avx512's results (tests/test_quant.c). Before these
 * tiles, the five types' prefill ran the one-row kernels on AVX-512 CPUs.
 */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "mcommon.h"
#include "quant.h"
#include "quant_rows.h"
#include "quant_x86.h"

#define AI __attribute__((always_inline)) static inline
#include "quant_avx512_ops.h" /* ld, dp, qx_bits_bytes: the one-row kernels' own (quant_avx512.c) */
#include "quant_x86_kern.h"
/* prefill: Q8_0 / Q4_1 take qgemm_avx512.c's 512-bit tiles; Q4_0's AVX-512 one-row kernel sums two blocks a
 * vpdpbusd (so no Q4_0 decode tile either) */
#define QG_TILES_Q8_Q4 0
#define QG_YMM_REGS 32 /* AVX-512VL: ymm0-31 */
#define QG_ZMM 1 /* the K-quant tiles on 512 bits */
#include "qgemm_x86_tiles.h"

/* prefill; the K-quants' tiles on 512 bits (QG_ZMM), whose zmm / ymm16-31 state is cleaned before the return to
 * quant.c (qx_upper_clean) */
int quant_gemm256_avx512(uint32_t type, const void *w, int64_t r0, int64_t r1, int64_t cols, const int8_t *q,
                         const float *d, const float *s, int64_t ntok, float *y, int64_t ldy) {
    const int r = qgemm_tiles(type, w, r0, r1, cols, q, d, s, ntok, y, ldy);
    qx_upper_clean();
    return r;
}

int quant_gemm_ktile256_avx512(uint32_t type, const void *w, int64_t r0, int64_t r1, int64_t cols, const void *packed,
                               int64_t ntok, float *y, int64_t ldy) {
    const int r = qgemm_ktiles(type, w, r0, r1, cols, packed, ntok, y, ldy);
    qx_upper_clean();
    return r;
}

/* decode (1-3 tokens): the 4-row tiles for Q8_0, Q4_1, Q5_0, Q5_1 (not Q4_0), bitwise quant_dot_avx512 */
int quant_gemv256_avx512(uint32_t type, const void *w, int64_t r0, int64_t r1, int64_t cols, const int8_t *q,
                         const float *d, const float *s, int64_t ntok, float *y, int64_t ldy) {
    return qgemv_tiles(type, w, r0, r1, cols, q, d, s, ntok, y, ldy);
}
