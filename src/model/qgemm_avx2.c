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
#include "quant_rows.h"
#include "quant_x86.h"

#define AI __attribute__((always_inline)) static inline
#include "quant_avx2_ops.h" /* ld, dp, qx_bits_bytes: the one-row kernels' own */
#include "quant_x86_kern.h"
#define QG_TILES_Q8_Q4 1 /* every tile type */
#define QG_YMM_REGS 16 /* AVX2: ymm0-15 */
#define QG_ZMM 0
#include "qgemm_x86_tiles.h"

int quant_gemm_avx2(uint32_t type, const void *w, int64_t r0, int64_t r1, int64_t cols, const int8_t *q,
                    const float *d, const float *s, int64_t ntok, float *y, int64_t ldy) {
    return qgemm_tiles(type, w, r0, r1, cols, q, d, s, ntok, y, ldy);
}

int quant_gemm_ktile_avx2(uint32_t type, const void *w, int64_t r0, int64_t r1, int64_t cols, const void *packed,
                          int64_t ntok, float *y, int64_t ldy) {
    return qgemm_ktiles(type, w, r0, r1, cols, packed, ntok, y, ldy);
}

int quant_gemv_avx2(uint32_t type, const void *w, int64_t r0, int64_t r1, int64_t cols, const int8_t *q,
                    const float *d, const float *s, int64_t ntok, float *y, int64_t ldy) {
    return qgemv_tiles(type, w, r0, r1, cols, q, d, s, ntok, y, ldy);
}
