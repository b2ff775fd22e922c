/* ggmlc_l8_avx2.c: llama.cpp's AVX2-build arithmetic (ggmlc.h, order GGMLC_ORDER_AVX2), native 8-lane kernels.
 *
 * llama.cpp built for AVX2 (no AVX-512: GGML_NATIVE on a Zen 3, a Haswell .. Alder Lake, a laptop) computes its f16 /
 * f32 vector paths with 8 lanes where its AVX-512 build takes 16, and so computes other bits (ggmlc_avx512.c /
 * ggmlc_avx2.c give the AVX-512 build's). What this file does, each from llama-cpp-python 0.3.36's vendored ggml:
 *   - batch scores and P.V: llamafile/sgemm.cpp tinyBLAS<8, __m256, ...> (the F16 case): one FMA chain per lane from
 *     zero, then hsum(__m256): (l + 4), then (0 + 2) + (1 + 3);
 *   - one-token scores and P.V: ggml_vec_dot_f16 with simd-mappings.h's AVX GGML_F16_STEP 32 / EPR 8 (4 chains of 8
 *     lanes over steps of 32), then GGML_F32x8_REDUCE: (0 + 2), (1 + 3), their sum, (l + 4), two hadds;
 *   - ggml_vec_soft_max_f32: exp by vec.h's __m256 ggml_v_expf, 8-lane partials summed as hsum, in double;
 *   - ggml_vec_swiglu_f32: ggml_v_silu (the same expf) 8 lanes at a time.
 * ggmlc.c's scalar path computes the same with the order as a parameter (test_quant: bitwise equal). Work buffers and
 * calling conventions are ggmlc_avx2.c's, with 8-lane scratch (ggmlc.h). */
#include <immintrin.h>
#include <math.h>

#include "ggmlc.h"

#define AI __attribute__((always_inline)) static inline
#include "ggmlc_sub.h"

/* 8 f16 values -> f32 */
AI __m256 ldh(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)p)); }
/* round each lane to f16 and back (nearest even) */
AI __m256 f16r(__m256 x) { return _mm256_cvtph_ps(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)); }

/* vec.h's __m256 ggml_v_expf, operation for operation: k = 2^n from the exponent bits, the result fma(k, j, k); lanes
 * with |n| > 126 scale by two factors (s2 from the bits, s1 = 2^127 or 2^-125), past 192 to 0 or inf */
AI __m256 v_expf(__m256 x) {
    const __m256 r = _mm256_set1_ps(0x1.8p23f);
    const __m256 z = _mm256_fmadd_ps(x, _mm256_set1_ps(0x1.715476p+0f), r);
    const __m256 n = _mm256_sub_ps(z, r);
    const __m256 b = _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.7f7d1cp-20f),
                                      _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.62e4p-1f), x));
    const __m256i e = _mm256_slli_epi32(_mm256_castps_si256(z), 23);
    const __m256 k = _mm256_castsi256_ps(_mm256_add_epi32(e, _mm256_castps_si256(_mm256_set1_ps(1))));
    const __m256i c =
        _mm256_castps_si256(_mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.f), n), _mm256_set1_ps(126), _CMP_GT_OQ));
    const __m256 u = _mm256_mul_ps(b, b);
    const __m256 j = _mm256_fmadd_ps(
        _mm256_fmadd_ps(_mm256_fmadd_ps(_mm256_set1_ps(0x1.0e4020p-7f), b, _mm256_set1_ps(0x1.573e2ep-5f)), u,
                        _mm256_fmadd_ps(_mm256_set1_ps(0x1.555e66p-3f), b, _mm256_set1_ps(0x1.fffdb6p-2f))),
        u, _mm256_mul_ps(_mm256_set1_ps(0x1.ffffecp-1f), b));
    if (!_mm256_movemask_ps(_mm256_castsi256_ps(c))) return _mm256_fmadd_ps(j, k, k);
    const __m256i g = _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(n, _mm256_setzero_ps(), _CMP_LE_OQ)),
                                       _mm256_set1_epi32((int)0x82000000u));
    const __m256 s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f000000)));
    const __m256 s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
    const __m256i d =
        _mm256_castps_si256(_mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.f), n), _mm256_set1_ps(192), _CMP_GT_OQ));
    /* the lanes past -126: fma(s2, j, s2) * s1 with s1 = 2^-125 is below FLT_MIN; its rounding from integer steps
     * (ggmlc_sub.h, the same bits), the multiply kept normal (a subnormal product is a microcode assist) */
    const __m256 t1 = _mm256_fmadd_ps(s2, j, s2);
    const __m256 neg = _mm256_and_ps(_mm256_castsi256_ps(c), _mm256_cmp_ps(n, _mm256_setzero_ps(), _CMP_LT_OQ));
    const __m256 big = _mm256_mul_ps(t1, _mm256_blendv_ps(s1, _mm256_set1_ps(1.f), neg));
    const __m256 cpath = _mm256_blendv_ps(big, ggmlc_sub_scale8(t1, 125), neg);
    return _mm256_or_ps(
        _mm256_and_ps(_mm256_castsi256_ps(d), _mm256_mul_ps(s1, s1)),
        _mm256_andnot_ps(_mm256_castsi256_ps(d),
                         _mm256_or_ps(_mm256_and_ps(_mm256_castsi256_ps(c), cpath),
                                      _mm256_andnot_ps(_mm256_castsi256_ps(c), _mm256_fmadd_ps(k, j, k)))));
}

void ggmlc_expf_l8_avx2(const float *x, float *y, int64_t n) {
    for (int64_t i = 0; i + 7 < n; i += 8) _mm256_storeu_ps(y + i, v_expf(_mm256_loadu_ps(x + i)));
}

/* ggml_vec_swiglu_f32's AVX2 loop: g = silu(g) * u on the first n / 8 * 8 values (the caller does the tail) */
void ggmlc_swiglu_l8_avx2(float *g, const float *u, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.f), zero = _mm256_setzero_ps();
    for (int64_t i = 0; i + 7 < n; i += 8) {
        __m256 x = _mm256_loadu_ps(g + i);
        __m256 silu = _mm256_div_ps(x, _mm256_add_ps(one, v_expf(_mm256_sub_ps(zero, x))));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(silu, _mm256_loadu_ps(u + i)));
    }
}

/* tinyBLAS's hsum(__m256), also ggml_vec_soft_max_f32's: (l + 4), then (0 + 2) + (1 + 3) */
AI float hsum(__m256 x) {
    __m128 s = _mm_add_ps(_mm256_extractf128_ps(x, 1), _mm256_castps256_ps128(x));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

/* 8 vectors -> their 8 sums, in order: hsum's pairing, or (vd) GGML_F32x8_REDUCE's last steps, (l + 4) then two
 * hadds: (0 + 1) + (2 + 3) */
AI __m256 sum8x8(const __m256 *A, int vd) {
    __m256 T[4]; /* T[k]: low half the (l + 4) sums of vector k, high half those of vector k + 4 */
    for (int k = 0; k < 4; k++)
        T[k] = _mm256_add_ps(_mm256_permute2f128_ps(A[k], A[k + 4], 0x20), _mm256_permute2f128_ps(A[k], A[k + 4], 0x31));
    __m256 U01, U23; /* per half, two pairs of partial sums of each of two vectors */
    if (vd) {
        U01 = _mm256_hadd_ps(T[0], T[1]); /* (0 + 1), (2 + 3) */
        U23 = _mm256_hadd_ps(T[2], T[3]);
    } else {
        U01 = _mm256_add_ps(_mm256_shuffle_ps(T[0], T[1], 0x44), _mm256_shuffle_ps(T[0], T[1], 0xEE)); /* (0 + 2), (1 + 3) */
        U23 = _mm256_add_ps(_mm256_shuffle_ps(T[2], T[3], 0x44), _mm256_shuffle_ps(T[2], T[3], 0xEE));
    }
    return _mm256_hadd_ps(U01, U23); /* [0 1 2 3 | 4 5 6 7] */
}

/* lanes 0..rem-1 of s, -inf past them */
AI __m256 mask_tail(__m256 s, int64_t rem) {
    if (rem >= 8) return s;
    const __m256i keep = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(rem > 0 ? rem : 0)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    return _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), s, _mm256_castsi256_ps(keep));
}

/* q . k over n8 groups of 8 from a converted key row kf: tinyBLAS (one chain per lane) or ggml_vec_dot_f16 (vd: 4
 * chains over steps of 32, n8 % 4 == 0, then (0 + 2) + (1 + 3)); chains start from zero as both do */
AI __m256 qk8(const float *q, const float *kf, int n8, int vd) {
    const __m256 zero = _mm256_setzero_ps();
    if (vd) { /* steps of 4 groups, so that the 4 chains stay in registers (c[i & 3] kept them on the stack) */
        __m256 c0 = zero, c1 = zero, c2 = zero, c3 = zero;
        for (int i = 0; i < n8; i += 4) {
            c0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + 8 * i), _mm256_loadu_ps(kf + 8 * i), c0);
            c1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + 8 * i + 8), _mm256_loadu_ps(kf + 8 * i + 8), c1);
            c2 = _mm256_fmadd_ps(_mm256_loadu_ps(q + 8 * i + 16), _mm256_loadu_ps(kf + 8 * i + 16), c2);
            c3 = _mm256_fmadd_ps(_mm256_loadu_ps(q + 8 * i + 24), _mm256_loadu_ps(kf + 8 * i + 24), c3);
        }
        return _mm256_add_ps(_mm256_add_ps(c0, c2), _mm256_add_ps(c1, c3));
    }
    __m256 a = zero;
    for (int i = 0; i < n8; i++) a = _mm256_fmadd_ps(_mm256_loadu_ps(q + 8 * i), _mm256_loadu_ps(kf + 8 * i), a);
    return a;
}

/* a query row of n8 x 8 values rounded to f16, as llama.cpp converts Q for its f16 products */
AI void q_f16_row(float *dst, const float *src, int n8) {
    for (int i = 0; i < n8; i++) _mm256_storeu_ps(dst + 8 * i, f16r(_mm256_loadu_ps(src + 8 * i)));
}

/* scores of keys [jb, je) (multiples of 16) for R rows of f16-rounded queries qh [R][D]: sb[r * ls + j] =
 * scale x (q_r . k_j), -inf from L[r] on; each K row converted once for the R rows; A: [R][16][8] scratch */
AI void block_scores(const int n8, const uint16_t *K, int64_t ld, const int64_t *L, int64_t Lmax, int R,
                     const float *qh, float scale, int64_t jb, int64_t je, float *A, float *sb, int64_t ls, int vd) {
    const int D = n8 * 8;
    const __m256 vs = _mm256_set1_ps(scale);
    for (int64_t j0 = jb; j0 < je; j0 += 16) {
        for (int k = 0; k < 16; k++) {
            const int64_t j = j0 + k < Lmax ? j0 + k : Lmax - 1; /* past Lmax: any key, masked below */
            const uint16_t *kr = K + j * ld;
            if (j + 16 < Lmax) { /* every line of the row 16 keys on (a row may start mid-line) */
                const char *pf = (const char *)(kr + 16 * ld);
                for (int b = 0; b < 2 * D; b += 64) _mm_prefetch(pf + b, _MM_HINT_T0);
                _mm_prefetch(pf + 2 * D - 1, _MM_HINT_T0);
            }
            if (n8 == 8) { /* d 64: the key row in 8 registers for all R rows */
                __m256 kv[8];
#pragma GCC unroll 8
                for (int i = 0; i < 8; i++) kv[i] = ldh(kr + 8 * i);
                for (int r = 0; r < R; r++) {
                    const float *q = qh + r * D;
                    const __m256 zero = _mm256_setzero_ps();
                    __m256 a;
                    if (vd) {
                        __m256 c[4];
#pragma GCC unroll 4
                        for (int i = 0; i < 4; i++) c[i] = _mm256_fmadd_ps(_mm256_loadu_ps(q + 8 * i), kv[i], zero);
#pragma GCC unroll 4
                        for (int i = 4; i < 8; i++) c[i & 3] = _mm256_fmadd_ps(_mm256_loadu_ps(q + 8 * i), kv[i], c[i & 3]);
                        a = _mm256_add_ps(_mm256_add_ps(c[0], c[2]), _mm256_add_ps(c[1], c[3]));
                    } else {
                        a = zero;
#pragma GCC unroll 8
                        for (int i = 0; i < 8; i++) a = _mm256_fmadd_ps(_mm256_loadu_ps(q + 8 * i), kv[i], a);
                    }
                    _mm256_storeu_ps(A + (r * 16 + k) * 8, a);
                }
                continue;
            }
            float kf[512];
            for (int i = 0; i < n8; i++) _mm256_storeu_ps(kf + 8 * i, ldh(kr + 8 * i));
            for (int r = 0; r < R; r++) _mm256_storeu_ps(A + (r * 16 + k) * 8, qk8(qh + r * D, kf, n8, vd));
        }
        for (int r = 0; r < R; r++)
            for (int h = 0; h < 2; h++) {
                __m256 Ar[8];
                for (int k = 0; k < 8; k++) Ar[k] = _mm256_loadu_ps(A + (r * 16 + 8 * h + k) * 8);
                const int64_t j = j0 + 8 * h;
                _mm256_storeu_ps(sb + r * ls + j, mask_tail(_mm256_mul_ps(sum8x8(Ar, vd), vs), L[r] - j));
            }
    }
}

/* one row's scores srow[0..L16) (-inf past its keys) -> probabilities rounded to f16, zeros on [L16, LP):
 * ggml_soft_max's max, ggml_vec_soft_max_f32 (8-lane partials in double), the scale by (float)(1 / sum) */
AI void row_softmax(float *s, int64_t L16, int64_t LP) {
    __m256 vmax = _mm256_set1_ps(-INFINITY);
    for (int64_t j0 = 0; j0 < L16; j0 += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(s + j0));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    const __m256 mx = _mm256_set1_ps(_mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4))));
    double sum = 0;
    for (int64_t j0 = 0; j0 < L16; j0 += 8) {
        const __m256 e = v_expf(_mm256_sub_ps(_mm256_loadu_ps(s + j0), mx));
        _mm256_storeu_ps(s + j0, e);
        sum += (double)hsum(e);
    }
    const __m256 sc = _mm256_set1_ps((float)(1.0 / sum)), tiny = _mm256_set1_ps(0x1p-100f);
    for (int64_t j0 = 0; j0 < L16; j0 += 8) { /* exps below 2^-100 zeroed first: f16 rounds them to +0 anyway */
        const __m256 e = _mm256_loadu_ps(s + j0);
        _mm256_storeu_ps(s + j0, f16r(_mm256_mul_ps(_mm256_and_ps(e, _mm256_cmp_ps(e, tiny, _CMP_GE_OQ)), sc)));
    }
    for (int64_t j = L16; j < LP; j++) s[j] = 0.f;
}

/* one-token P.V for NR rows (p[r]: their probabilities) and dims [db, de) of VT [D][vld]: ggml_vec_dot_f16 of a VT row
 * and each row over keys [0, LP) (LP % 32 == 0), the V loads shared by the rows; the combined chains of (row r, dim
 * d) go to acc8 + (r D + d) 8 */
AI void pv_vt_rows(const int NR, const uint16_t *VT, int64_t vld, int D, int db, int de, const float *const *p,
                   int64_t LP, float *acc8) {
    for (int d = db; d < de; d++) {
        const uint16_t *vr = VT + (size_t)d * vld;
        __m256 a[3][4];
#pragma GCC unroll 3
        for (int r = 0; r < NR; r++)
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) a[r][k] = _mm256_setzero_ps();
        for (int64_t j0 = 0; j0 < LP; j0 += 32) {
#pragma GCC unroll 4
            for (int k = 0; k < 4; k++) {
                const __m256 v = ldh(vr + j0 + 8 * k);
#pragma GCC unroll 3
                for (int r = 0; r < NR; r++) a[r][k] = _mm256_fmadd_ps(v, _mm256_loadu_ps(p[r] + j0 + 8 * k), a[r][k]);
            }
        }
#pragma GCC unroll 3
        for (int r = 0; r < NR; r++)
            _mm256_storeu_ps(acc8 + ((size_t)r * D + d) * 8,
                             _mm256_add_ps(_mm256_add_ps(a[r][0], a[r][2]), _mm256_add_ps(a[r][1], a[r][3])));
    }
}

/* one-token P.V from V transposed (VT [D][vld]) for dims [db, de) (multiples of 8) of R rows: 3 rows at a time
 * (then 2 or 1) into acc8 [R][D][8], then 8 dims at a time summed in order (GGML_F32x8_REDUCE) into orows */
AI void pv_vt(const uint16_t *VT, int64_t vld, int D, int db, int de, int R, const float *sb, int64_t ls, int64_t LP,
              float *acc8, float *const *orows) {
    for (int r0 = 0; r0 < R;) {
        const int nr = R - r0 >= 3 ? 3 : R - r0;
        const float *p[3];
        for (int r = 0; r < nr; r++) p[r] = sb + (size_t)(r0 + r) * ls;
        float *ar = acc8 + (size_t)r0 * D * 8;
        if (nr == 3)
            pv_vt_rows(3, VT, vld, D, db, de, p, LP, ar);
        else if (nr == 2)
            pv_vt_rows(2, VT, vld, D, db, de, p, LP, ar);
        else
            pv_vt_rows(1, VT, vld, D, db, de, p, LP, ar);
        r0 += nr;
    }
    for (int r = 0; r < R; r++)
        for (int d0 = db; d0 < de; d0 += 8) {
            __m256 A[8];
            for (int k = 0; k < 8; k++) A[k] = _mm256_loadu_ps(acc8 + ((size_t)r * D + d0 + k) * 8);
            _mm256_storeu_ps(orows[r] + d0, sum8x8(A, 1));
        }
}

/* batch P.V from V rows: the chains of keys j = c, c + nl, ... < Lmax for two rows of probabilities (p0, p1) and NI
 * groups of 8 columns from V's column 0, into o0 / o1 (o1 NULL: one row); 2 NI accumulators in registers */
AI void pv_rows(const int NI, const uint16_t *V, int64_t ld, int64_t c, int nl, int64_t Lmax, const float *p0,
                const float *p1, float *o0, float *o1) {
    __m256 a0[4], a1[4];
#pragma GCC unroll 4
    for (int i = 0; i < NI; i++) a0[i] = a1[i] = _mm256_setzero_ps();
    for (int64_t j = c; j < Lmax; j += nl) {
        const __m256 b0 = _mm256_set1_ps(p0[j]), b1 = _mm256_set1_ps(p1[j]);
        const uint16_t *vr = V + j * ld;
#pragma GCC unroll 4
        for (int i = 0; i < NI; i++) {
            const __m256 v = ldh(vr + 8 * i);
            a0[i] = _mm256_fmadd_ps(v, b0, a0[i]);
            a1[i] = _mm256_fmadd_ps(v, b1, a1[i]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < NI; i++) {
        _mm256_storeu_ps(o0 + 8 * i, a0[i]);
        if (o1) _mm256_storeu_ps(o1 + 8 * i, a1[i]);
    }
}

/* R query rows (heads of one KV group x tokens) against keys 0..L[r]-1: scores, softmax, P.V (from VT for one
 * token, else from the V rows: nl = 8 (tinyBLAS) or 32 (ggml_vec_dot_f16) chains of keys j = c mod nl per column,
 * folded per column as the lanes are). work: R x (D + 128 + ls + 32 D) + ls floats, ls = LP + 16. */
AI void attn_block(const int n8, const uint16_t *K, const uint16_t *V, const uint16_t *VT, int64_t vld, int64_t ld,
                   const int64_t *L, int R, const float *const *qrows, float scale, float *const *orows, float *work,
                   int vd) {
    const int D = n8 * 8;
    int64_t Lmax = 0;
    for (int r = 0; r < R; r++) Lmax = L[r] > Lmax ? L[r] : Lmax;
    const int64_t L16 = (Lmax + 15) / 16 * 16, LP = vd ? (Lmax + 63) / 64 * 64 : L16, ls = LP + 16;
    float *qh = work;                 /* [R][D] f16-rounded queries */
    float *A = qh + (size_t)R * D;    /* [R][16][8] per-key lanes of one key block */
    float *sb = A + (size_t)R * 128;  /* [R][ls] scores -> probabilities */
    float *acc = sb + (size_t)R * ls; /* [R][32][D] P.V chains */
    for (int r = 0; r < R; r++) q_f16_row(qh + r * D, qrows[r], n8);
    block_scores(n8, K, ld, L, Lmax, R, qh, scale, 0, L16, A, sb, ls, vd);
    for (int r = 0; r < R; r++) row_softmax(sb + r * ls, L16, LP);
    if (VT && vd) {
        pv_vt(VT, vld, D, 0, D, R, sb, ls, LP, acc, orows);
        return;
    }
    const int nl = vd ? 32 : 8;
    float *zrow = acc + (size_t)R * 32 * D; /* [ls] zeros: a missing second row's probabilities */
    for (int64_t j = 0; j < L16; j++) zrow[j] = 0.f;
    for (int r0 = 0; r0 < R; r0 += 2) {
        const int two = r0 + 1 < R;
        const float *p0 = sb + (size_t)r0 * ls, *p1 = two ? p0 + ls : zrow;
        float *a0 = acc + (size_t)r0 * 32 * D, *a1 = two ? a0 + 32 * (size_t)D : NULL;
        for (int c = 0; c < nl; c++) {
            int i0 = 0;
            for (; i0 + 4 <= n8; i0 += 4) pv_rows(4, V + 8 * i0, ld, c, nl, Lmax, p0, p1, a0 + c * D + 8 * i0, a1 ? a1 + c * D + 8 * i0 : NULL);
            for (; i0 < n8; i0++) pv_rows(1, V + 8 * i0, ld, c, nl, Lmax, p0, p1, a0 + c * D + 8 * i0, a1 ? a1 + c * D + 8 * i0 : NULL);
        }
    }
    for (int r = 0; r < R; r++) {
        const float *ar = acc + (size_t)r * 32 * D;
        for (int c0 = 0; c0 < D; c0 += 8) {
            __m256 x[8], t[4];
            if (vd) /* GGML_F32x8_REDUCE: chains (0 + 2) + (1 + 3) per lane, then (l + 4), (0 + 1) + (2 + 3) */
                for (int l = 0; l < 8; l++)
                    x[l] = _mm256_add_ps(_mm256_add_ps(_mm256_loadu_ps(ar + l * D + c0), _mm256_loadu_ps(ar + (16 + l) * D + c0)),
                                         _mm256_add_ps(_mm256_loadu_ps(ar + (8 + l) * D + c0), _mm256_loadu_ps(ar + (24 + l) * D + c0)));
            else
                for (int l = 0; l < 8; l++) x[l] = _mm256_loadu_ps(ar + l * D + c0);
            for (int l = 0; l < 4; l++) t[l] = _mm256_add_ps(x[l], x[l + 4]);
            const __m256 o = vd ? _mm256_add_ps(_mm256_add_ps(t[0], t[1]), _mm256_add_ps(t[2], t[3]))
                                : _mm256_add_ps(_mm256_add_ps(t[0], t[2]), _mm256_add_ps(t[1], t[3]));
            _mm256_storeu_ps(orows[r] + c0, o);
        }
    }
}

void ggmlc_attn_block_l8_avx2(const uint16_t *K, const uint16_t *V, const uint16_t *VT, int64_t vld, int64_t ld,
                              const int64_t *L, int R, const float *const *qrows, int D, float scale,
                              float *const *orows, float *work, int vecdot) {
    if (D == 64)
        attn_block(8, K, V, VT, vld, ld, L, R, qrows, scale, orows, work, vecdot);
    else if (D == 128)
        attn_block(16, K, V, VT, vld, ld, L, R, qrows, scale, orows, work, vecdot);
    else
        attn_block(D / 8, K, V, VT, vld, ld, L, R, qrows, scale, orows, work, vecdot);
}

/* one-token decode in pieces that threads share (ggmlc.c's attn_decode; ggmlc.h): each piece is attn_block's code
 * on its range, so the bits do not depend on the split */
void ggmlc_dec_scores_l8_avx2(const uint16_t *K, int64_t ld, const int64_t *L, int R, const float *q, int D,
                              float scale, int64_t jb, int64_t je, float *sb, int64_t ls, float *work) {
    float *qh = work, *A = work + (size_t)R * D; /* [R][D] f16-rounded queries, [R][16][8] */
    for (int r = 0; r < R; r++) q_f16_row(qh + r * D, q + (size_t)r * D, D / 8);
    if (D == 64)
        block_scores(8, K, ld, L, L[0], R, qh, scale, jb, je, A, sb, ls, 1);
    else if (D == 128)
        block_scores(16, K, ld, L, L[0], R, qh, scale, jb, je, A, sb, ls, 1);
    else
        block_scores(D / 8, K, ld, L, L[0], R, qh, scale, jb, je, A, sb, ls, 1);
}
void ggmlc_dec_softmax_l8_avx2(float *srow, int64_t L16, int64_t LP) { row_softmax(srow, L16, LP); }
void ggmlc_dec_pv_l8_avx2(const uint16_t *VT, int64_t vld, int D, int R, const float *sb, int64_t ls, int64_t LP,
                          int db, int de, float *const *orows, float *work) {
    pv_vt(VT, vld, D, db, de, R, sb, ls, LP, work, orows);
}
