/* kern_dot16_avx512bf16.c: the bf16 dot-product attention kernels (vdpbf16ps), compiled with -mavx512bf16 and
 * called only where cpu_dot16_get() (cpu_attn.c) returned them: a CPU with AVX512_BF16 on which the instruction is
 * faster than f32 FMAs (AMD Zen 4 / 5: one 512-bit vdpbf16ps a cycle, 64 FLOP, against 32 of f32 FMA; Intel's
 * Sapphire / Emerald Rapids retire it at half the FMA rate, bench/CPU_NOTES.md), or INFLLM_BF16_DOT=1.
 *
 * bf16 attention K / V are then kept as bf16 in pair layouts (cpu_kern.h, cpu_dot16): a vector holds 16 keys x
 * 2 dims of K, or 16 dims x 2 keys of V, and each vdpbf16ps adds two products per lane. The products of two bf16
 * values are exact in f32; the instruction adds them into the f32 accumulator with round-to-nearest-even, and
 * flushes denormal inputs and results to zero (it does not read MXCSR). P is rounded to bf16 (nearest even) for
 * the P V product, as the GPU kernels and FlashAttention do; the softmax, its sums and the LSE stay f32. */
#include <immintrin.h>
#include <string.h>

#include "cpu_kern.h"
#include "kern_rows6.h"

#define AI static inline __attribute__((always_inline))

/* ---------------------------------------------------------------- QK ---- */
/* RR rows x NG groups of 16 keys: acc[r][g] lane n = sum over dim pairs of q[r] . k[16 g + n] */
AI void qk16_blk(const uint16_t *Q, int64_t ldq, const int *rows, int D, const uint16_t *Kp, float *S, const int RR,
                 const int NG) {
    __m512 acc[6][4];
    const uint16_t *qr[6];
#pragma GCC unroll 6
    for (int r = 0; r < RR; r++) qr[r] = Q + (rows ? rows[r] : r) * ldq;
#pragma GCC unroll 6
    for (int r = 0; r < RR; r++)
#pragma GCC unroll 4
        for (int g = 0; g < NG; g++) acc[r][g] = _mm512_setzero_ps();
    const int64_t gs = (int64_t)D * CPU_KG; /* elements of one packed group of 16 keys */
    for (int d = 0; d < D; d += 2) {
        __m512bh kv[4];
#pragma GCC unroll 4
        for (int g = 0; g < NG; g++) kv[g] = (__m512bh)_mm512_loadu_si512(Kp + g * gs + d * CPU_KG);
#pragma GCC unroll 6
        for (int r = 0; r < RR; r++) {
            uint32_t pair;
            memcpy(&pair, qr[r] + d, sizeof pair);
            const __m512bh qb = (__m512bh)_mm512_set1_epi32((int)pair);
#pragma GCC unroll 4
            for (int g = 0; g < NG; g++) acc[r][g] = _mm512_dpbf16_ps(acc[r][g], qb, kv[g]);
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < RR; r++)
#pragma GCC unroll 4
        for (int g = 0; g < NG; g++) _mm512_storeu_ps(S + r * CPU_KT + g * CPU_KG, acc[r][g]);
}

#define QK16_NG(RR)                                                     \
    switch (ng) {                                                       \
    case 1: qk16_blk(Q, ldq, rows, D, Kp, S, RR, 1); break;             \
    case 2: qk16_blk(Q, ldq, rows, D, Kp, S, RR, 2); break;             \
    case 3: qk16_blk(Q, ldq, rows, D, Kp, S, RR, 3); break;             \
    default: qk16_blk(Q, ldq, rows, D, Kp, S, RR, 4); break;            \
    }

static void qk16_avx512bf16(const uint16_t *Q, int64_t ldq, const int *rows, int R, int D, const uint16_t *Kp, int ng,
                            float *S) {
    KERN_ROWS6(R, rows, QK16_NG, (Q += 6 * ldq, S += 6 * CPU_KT), (rows += 6, S += 6 * CPU_KT));
}

/* ---------------------------------------------------------------- PV ---- */
/* RR rows x DV vectors of 16 columns from d0: O = O * alpha + P V over np key pairs; Pb [RR][32] the rows' P as
 * bf16 pairs (keys 2i, 2i + 1), V the tile's pair layout from column d0 */
AI void pv16_blk(float *O, const int *rows, int D, const float *alpha, const uint32_t *Pb, const uint16_t *V, int np,
                 const int RR, const int DV) {
    __m512 acc[6][4];
    float *orow[6];
#pragma GCC unroll 6
    for (int r = 0; r < RR; r++) {
        orow[r] = O + (rows ? rows[r] : r) * D;
        const __m512 a = _mm512_set1_ps(alpha[r]);
#pragma GCC unroll 4
        for (int v = 0; v < DV; v++) acc[r][v] = _mm512_mul_ps(_mm512_loadu_ps(orow[r] + v * 16), a);
    }
    for (int i = 0; i < np; i++) {
        __m512bh vv[4];
#pragma GCC unroll 4
        for (int v = 0; v < DV; v++) vv[v] = (__m512bh)_mm512_loadu_si512(V + (int64_t)i * 2 * D + v * 32);
#pragma GCC unroll 6
        for (int r = 0; r < RR; r++) {
            const __m512bh pb = (__m512bh)_mm512_set1_epi32((int)Pb[r * (CPU_KT / 2) + i]);
#pragma GCC unroll 4
            for (int v = 0; v < DV; v++) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], pb, vv[v]);
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < RR; r++)
#pragma GCC unroll 4
        for (int v = 0; v < DV; v++) _mm512_storeu_ps(orow[r] + v * 16, acc[r][v]);
}

/* the RR rows' P (f32, [RR][64]) as bf16 pairs, nearest even (vcvtne2ps2bf16): columns to nk rounded up to 32
 * (P rows have 64) */
AI void p_pairs(const float *P, uint32_t *Pb, const int RR, int nk) {
#pragma GCC unroll 6
    for (int r = 0; r < RR; r++)
        for (int n = 0; n < nk; n += 32) {
            const __m512bh h = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(P + r * CPU_KT + n + 16),
                                                   _mm512_loadu_ps(P + r * CPU_KT + n));
            _mm512_storeu_si512(Pb + r * (CPU_KT / 2) + n / 2, (__m512i)h);
        }
}

#define PV16_DV(RR)                                                                                     \
    do {                                                                                                \
        uint32_t Pb[6 * (CPU_KT / 2)];                                                                  \
        p_pairs(P, Pb, RR, nk);                                                                         \
        for (int d0 = 0; d0 < D; d0 += 64) {                                                            \
            switch ((D - d0) >= 64 ? 4 : (D - d0) / 16) {                                               \
            case 1: pv16_blk(O + d0, rows, D, alpha, Pb, V + 2 * d0, nk / 2, RR, 1); break;             \
            case 2: pv16_blk(O + d0, rows, D, alpha, Pb, V + 2 * d0, nk / 2, RR, 2); break;             \
            case 3: pv16_blk(O + d0, rows, D, alpha, Pb, V + 2 * d0, nk / 2, RR, 3); break;             \
            default: pv16_blk(O + d0, rows, D, alpha, Pb, V + 2 * d0, nk / 2, RR, 4); break;            \
            }                                                                                           \
        }                                                                                               \
    } while (0)

/* nk: a multiple of 16 (the qk kernel's groups), so nk / 2 whole pairs */
static void pv16_avx512bf16(float *O, const int *rows, int R, int D, const float *alpha, const float *P,
                            const uint16_t *V, int nk) {
    KERN_ROWS6(R, rows, PV16_DV, (O += 6 * D, P += 6 * CPU_KT, alpha += 6), (rows += 6, P += 6 * CPU_KT, alpha += 6));
}

const cpu_dot16 cpu_dot16_avx512bf16 = {"avx512-bf16 dot", qk16_avx512bf16, pv16_avx512bf16};
