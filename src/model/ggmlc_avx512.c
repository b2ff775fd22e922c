/* ggmlc_avx512.c: AVX-512 kernels of ggmlc.h, operation for operation what ggml's CPU backend
 * executes (vec.h ggml_v_expf / ggml_v_silu, tinyBLAS f16 dot products, ggml_vec_soft_max_f32). */
#include <immintrin.h>
#include <math.h>

#include "ggmlc.h"

#define AI __attribute__((always_inline)) static inline

/* _mm512_scalef_ps(j, n)'s bits for j in [0.5, 2) and integral n in lanes where j 2^n is below FLT_MIN, without
 * subnormal arithmetic: t = j 2^(n + 128) is normal and exact; the result is t's 24-bit significand shifted right by
 * 129 - exponent(t) with round to nearest even (what vscalefps rounds the exact product to, MXCSR's default), which is
 * the subnormal's encoding (a carry into the exponent field gives FLT_MIN, as rounding would). Lanes where n >= -126
 * give garbage (the caller keeps vscalefps there). */
AI __m512 scalef_denormal(__m512 j, __m512 n) {
    const __m512i tb = _mm512_castps_si512(_mm512_scalef_ps(j, _mm512_add_ps(n, _mm512_set1_ps(128.f))));
    const __m512i e = _mm512_srli_epi32(tb, 23); /* biased exponent of t (sign 0) */
    const __m512i m = _mm512_or_si512(_mm512_and_si512(tb, _mm512_set1_epi32(0x7FFFFF)), _mm512_set1_epi32(0x800000));
    const __m512i sh = _mm512_min_epi32(_mm512_sub_epi32(_mm512_set1_epi32(129), e), _mm512_set1_epi32(25));
    const __m512i q = _mm512_srlv_epi32(m, sh);
    const __m512i r = _mm512_sub_epi32(m, _mm512_sllv_epi32(q, sh));
    const __m512i half = _mm512_sllv_epi32(_mm512_set1_epi32(1), _mm512_sub_epi32(sh, _mm512_set1_epi32(1)));
    const __mmask16 up = _mm512_cmpgt_epi32_mask(r, half) |
                         (_mm512_cmpeq_epi32_mask(r, half) & _mm512_test_epi32_mask(q, _mm512_set1_epi32(1)));
    return _mm512_castsi512_ps(_mm512_mask_add_epi32(q, up, q, _mm512_set1_epi32(1)));
}

AI __m512 v_expf(__m512 x) {
    const __m512 r = _mm512_set1_ps(0x1.8p23f);
    const __m512 z = _mm512_fmadd_ps(x, _mm512_set1_ps(0x1.715476p+0f), r);
    const __m512 n = _mm512_sub_ps(z, r);
    const __m512 b = _mm512_fnmadd_ps(n, _mm512_set1_ps(0x1.7f7d1cp-20f),
                                      _mm512_fnmadd_ps(n, _mm512_set1_ps(0x1.62e4p-1f), x));
    const __mmask16 d = _mm512_cmp_ps_mask(_mm512_abs_ps(n), _mm512_set1_ps(192), _CMP_GT_OQ);
    const __m512 u = _mm512_mul_ps(b, b);
    const __m512 j = _mm512_fmadd_ps(
        _mm512_fmadd_ps(_mm512_fmadd_ps(_mm512_set1_ps(0x1.0e4020p-7f), b, _mm512_set1_ps(0x1.573e2ep-5f)), u,
                        _mm512_fmadd_ps(_mm512_set1_ps(0x1.555e66p-3f), b, _mm512_set1_ps(0x1.fffdb6p-2f))),
        u, _mm512_fmadd_ps(_mm512_set1_ps(0x1.ffffecp-1f), b, _mm512_set1_ps(1.0F)));
    /* j * 2^n; where that is below FLT_MIN (n < -126) its bits come from integer steps (scalef_denormal): a
     * vscalefps with a subnormal result takes a microcode assist (~30% of a Q4_K_M prefill on a Sapphire Rapids,
     * where softmax rows hold many exps below e^-87) */
    const __mmask16 sub = _mm512_cmp_ps_mask(n, _mm512_set1_ps(-126.5f), _CMP_LT_OQ);
    __m512 res;
    if (sub) {
        res = _mm512_mask_scalef_ps(scalef_denormal(j, n), (__mmask16)~sub, j, n);
    } else {
        res = _mm512_scalef_ps(j, n);
    }
    if (_mm512_kortestz(d, d)) return res;
    const __m512 zero = _mm512_setzero_ps();
    const __m512 alt = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(n, zero, _CMP_LE_OQ), _mm512_set1_ps(INFINITY), zero);
    return _mm512_mask_blend_ps(d, res, alt);
}

void ggmlc_expf_avx512(const float *x, float *y, int64_t n) {
    for (int64_t i = 0; i + 15 < n; i += 16) _mm512_storeu_ps(y + i, v_expf(_mm512_loadu_ps(x + i)));
}

void ggmlc_swiglu_avx512(float *g, const float *u, int64_t n) {
    const __m512 one = _mm512_set1_ps(1.f), zero = _mm512_setzero_ps();
    for (int64_t i = 0; i + 15 < n; i += 16) {
        __m512 x = _mm512_loadu_ps(g + i);
        __m512 silu = _mm512_div_ps(x, _mm512_add_ps(one, v_expf(_mm512_sub_ps(zero, x))));
        _mm512_storeu_ps(g + i, _mm512_mul_ps(silu, _mm512_loadu_ps(u + i)));
    }
}

AI __m512 ldh(const uint16_t *p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)p)); }
/* each lane rounded to f16 and back (nearest even) */
AI __m512 f16r(__m512 x) { return _mm512_cvtph_ps(_mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)); }
/* a query row of nd x 16 values rounded to f16, as llama.cpp converts Q for its f16 products */
AI void q_f16_row(float *dst, const float *src, int nd) {
#pragma GCC unroll 8
    for (int i = 0; i < nd; i++) _mm512_storeu_ps(dst + 16 * i, f16r(_mm512_loadu_ps(src + 16 * i)));
}

/* 16 vectors -> their 16 _mm512_reduce_add_ps sums (same pairing per vector), in order */
/* ggml_soft_max over s[0..L16) (scores, -inf past the row), given the lanes' running max vmax:
 * exp(s - max) with ggml's expf, their sum in double (16-lane partials in order), then the
 * probabilities scaled and rounded to f16 in place, as llama.cpp's f16 P.V reads them */
AI void softmax_f16(float *s, int64_t L16, __m512 vmax) {
    const __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
    double sum = 0;
    for (int64_t j0 = 0; j0 < L16; j0 += 16) {
        __m512 e = v_expf(_mm512_sub_ps(_mm512_loadu_ps(s + j0), mx));
        _mm512_storeu_ps(s + j0, e);
        sum += (double)_mm512_reduce_add_ps(e);
    }
    const __m512 sc = _mm512_set1_ps((float)(1.0 / sum));
    const __m512 tiny = _mm512_set1_ps(0x1p-100f);
    for (int64_t j0 = 0; j0 < L16; j0 += 16) {
        /* an exp below 2^-100 times sc (<= 1) is below f16's half-ulp of zero, 2^-25, so f16r makes it +0 either way:
         * zeroed here instead, so that no product is subnormal (a microcode assist each) */
        const __m512 e = _mm512_loadu_ps(s + j0);
        const __m512 p = _mm512_maskz_mul_ps(_mm512_cmp_ps_mask(e, tiny, _CMP_GE_OQ), e, sc);
        _mm512_storeu_ps(s + j0, f16r(p));
    }
}

AI __m512 reduce16x16(__m512 *A) {
    __m512 B[8], C[4], Dv[2];
    for (int k = 0; k < 8; k++)
        B[k] = _mm512_add_ps(_mm512_shuffle_f32x4(A[k], A[k + 8], 0x44), _mm512_shuffle_f32x4(A[k], A[k + 8], 0xEE));
    for (int k = 0; k < 4; k++)
        C[k] = _mm512_add_ps(_mm512_shuffle_f32x4(B[k], B[k + 4], 0x88), _mm512_shuffle_f32x4(B[k], B[k + 4], 0xDD));
    for (int k = 0; k < 2; k++)
        Dv[k] = _mm512_add_ps(_mm512_shuffle_ps(C[k], C[k + 2], 0x44), _mm512_shuffle_ps(C[k], C[k + 2], 0xEE));
    __m512 E = _mm512_add_ps(_mm512_shuffle_ps(Dv[0], Dv[1], 0x88), _mm512_shuffle_ps(Dv[0], Dv[1], 0xDD));
    /* E[4i + j] holds vector base(i) + cm(j): base = {0, 8, 4, 12}, cm = {0, 2, 1, 3} */
    const __m512i idx = _mm512_setr_epi32(0, 2, 1, 3, 8, 10, 9, 11, 4, 6, 5, 7, 12, 14, 13, 15);
    return _mm512_permutexvar_ps(idx, E);
}

void ggmlc_attn_row_avx512(const uint16_t *K, const uint16_t *V, int64_t ld, int64_t L, const float *q, int D,
                           float scale, float *out, float *sbuf, float *acc, int vecdot) {
    const int nd = D / 16;
    __m512 qv[32];
    for (int i = 0; i < nd; i++) qv[i] = f16r(_mm512_loadu_ps(q + 16 * i));
    const __m512 vs = _mm512_set1_ps(scale);
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    int64_t L16 = (L + 15) / 16 * 16;
    for (int64_t j0 = 0; j0 < L16; j0 += 16) {
        __m512 A[16];
        for (int k = 0; k < 16; k++) {
            int64_t j = j0 + k < L ? j0 + k : L - 1; /* past L: any key, masked below */
            const uint16_t *kr = K + j * ld;
            if (vecdot) { /* ggml_vec_dot_f16: 4 chains (D % 64 == 0), then (0+2) + (1+3) */
                __m512 c[4];
                for (int i = 0; i < 4; i++) c[i] = _mm512_mul_ps(qv[i], ldh(kr + 16 * i));
                for (int i = 4; i < nd; i++) c[i & 3] = _mm512_fmadd_ps(qv[i], ldh(kr + 16 * i), c[i & 3]);
                A[k] = _mm512_add_ps(_mm512_add_ps(c[0], c[2]), _mm512_add_ps(c[1], c[3]));
            } else {
                __m512 a = _mm512_mul_ps(qv[0], ldh(kr));
                for (int i = 1; i < nd; i++) a = _mm512_fmadd_ps(qv[i], ldh(kr + 16 * i), a);
                A[k] = a;
            }
        }
        __m512 s = _mm512_mul_ps(reduce16x16(A), vs);
        int64_t rem = L - j0;
        __mmask16 m = rem >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << rem) - 1);
        s = _mm512_mask_blend_ps(m, _mm512_set1_ps(-INFINITY), s);
        _mm512_storeu_ps(sbuf + j0, s);
        vmax = _mm512_max_ps(vmax, s);
    }
    softmax_f16(sbuf, L16, vmax);
    /* P.V: lane l accumulates the keys j = l mod 16 in order; then the 16 lanes per output in
     * _mm512_reduce_add_ps's pairing */
    const int nl = vecdot ? 64 : 16;
    for (int l = 0; l < nl; l++) {
        __m512 a[32];
        for (int i = 0; i < nd; i++) a[i] = _mm512_setzero_ps();
        for (int64_t j = l; j < L; j += nl) {
            __m512 p = _mm512_set1_ps(sbuf[j]);
            const uint16_t *vr = V + j * ld;
            for (int i = 0; i < nd; i++) a[i] = _mm512_fmadd_ps(p, ldh(vr + 16 * i), a[i]);
        }
        for (int i = 0; i < nd; i++) _mm512_storeu_ps(acc + l * D + 16 * i, a[i]);
    }
    for (int i = 0; i < nd && vecdot; i++) { /* ggml_vec_dot_f16's (0+2) + (1+3) of the 4 chains */
        for (int l = 0; l < 16; l++) {
            const float *c = acc + 16 * i;
            __m512 x = _mm512_add_ps(_mm512_add_ps(_mm512_loadu_ps(c + l * D), _mm512_loadu_ps(c + (32 + l) * D)),
                                     _mm512_add_ps(_mm512_loadu_ps(c + (16 + l) * D), _mm512_loadu_ps(c + (48 + l) * D)));
            _mm512_storeu_ps(acc + l * D + 16 * i, x);
        }
    }
    for (int i = 0; i < nd; i++) {
        __m512 a8[8], a4[4];
        for (int l = 0; l < 8; l++)
            a8[l] = _mm512_add_ps(_mm512_loadu_ps(acc + l * D + 16 * i), _mm512_loadu_ps(acc + (l + 8) * D + 16 * i));
        for (int l = 0; l < 4; l++) a4[l] = _mm512_add_ps(a8[l], a8[l + 4]);
        _mm512_storeu_ps(out + 16 * i, _mm512_add_ps(_mm512_add_ps(a4[0], a4[2]), _mm512_add_ps(a4[1], a4[3])));
    }
}

/* R query rows (rows[r], all heads of one KV group, tokens of one block) against keys 0..L[r]-1;
 * each K/V row is loaded and converted once for all R rows. Same operations per row as
 * ggmlc_attn_row_avx512. D % 16 == 0, D <= 128, R <= GGMLC_RB. work: R * (D + 256 + ls + 64 D) + ls
 * floats, ls = the keys rounded up to 16, plus 16. */
/* P.V from V transposed (VT: row d at VT + d * vld, keys along the row; zeros or finite values past
 * the keys): out lanes run along the keys as in tinyBLAS (16 lanes, one chain each) or
 * ggml_vec_dot_f16 (4 x 16 lanes over steps of 64), rows streamed in order, for dims [db, de) (multiples
 * of 16). RPV rows at a time
 * (missing rows read zero probabilities), the per-(row, d) 16 lanes then reduced 16 at a time. */
AI void pv_vt(const int RPV, const int DB, int vecdot, const uint16_t *VT, int64_t vld, int D, int db, int de, int R,
              const float *sb, int64_t ls, int64_t LP, const float *zrow, float *acc16, float *const *orows) {
    for (int r0 = 0; r0 < R; r0 += RPV) {
        const float *pr[GGMLC_RB];
        for (int r = 0; r < GGMLC_RB; r++) pr[r] = r0 + r < R ? sb + (size_t)(r0 + r) * ls : zrow;
        for (int d0 = db; d0 < de; d0 += DB) {
            __m512 a[GGMLC_RB][4];
#pragma GCC unroll 12
            for (int r = 0; r < RPV; r++)
#pragma GCC unroll 4
                for (int k = 0; k < 4; k++) a[r][k] = _mm512_setzero_ps();
            if (vecdot) { /* DB == 1: chains k = (j mod 64) / 16 */
                const uint16_t *vr = VT + (size_t)d0 * vld;
                for (int64_t j0 = 0; j0 < LP; j0 += 64) {
                    __m512 vv[4];
#pragma GCC unroll 4
                    for (int k = 0; k < 4; k++) vv[k] = ldh(vr + j0 + 16 * k);
#pragma GCC unroll 12
                    for (int r = 0; r < RPV; r++)
#pragma GCC unroll 4
                        for (int k = 0; k < 4; k++)
                            a[r][k] = _mm512_fmadd_ps(_mm512_loadu_ps(pr[r] + j0 + 16 * k), vv[k], a[r][k]);
                }
#pragma GCC unroll 12
                for (int r = 0; r < RPV; r++)
                    if (r0 + r < R)
                        _mm512_storeu_ps(acc16 + ((size_t)(r0 + r) * D + d0) * 16,
                                         _mm512_add_ps(_mm512_add_ps(a[r][0], a[r][2]), _mm512_add_ps(a[r][1], a[r][3])));
            } else { /* DB dims at a time, one chain per lane */
                for (int64_t j0 = 0; j0 < LP; j0 += 16) {
                    __m512 vv[4];
#pragma GCC unroll 4
                    for (int k = 0; k < DB; k++) vv[k] = ldh(VT + (size_t)(d0 + k) * vld + j0);
#pragma GCC unroll 12
                    for (int r = 0; r < RPV; r++) {
                        __m512 p = _mm512_loadu_ps(pr[r] + j0);
#pragma GCC unroll 4
                        for (int k = 0; k < DB; k++) a[r][k] = _mm512_fmadd_ps(p, vv[k], a[r][k]);
                    }
                }
#pragma GCC unroll 12
                for (int r = 0; r < RPV; r++)
#pragma GCC unroll 4
                    for (int k = 0; k < DB; k++)
                        if (r0 + r < R) _mm512_storeu_ps(acc16 + ((size_t)(r0 + r) * D + d0 + k) * 16, a[r][k]);
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int d0 = db; d0 < de; d0 += 16) {
            __m512 A[16];
            for (int k = 0; k < 16; k++) A[k] = _mm512_loadu_ps(acc16 + ((size_t)r * D + d0 + k) * 16);
            _mm512_storeu_ps(orows[r] + d0, reduce16x16(A));
        }
}

/* scores of keys [jb, je) (multiples of 16, je <= Lmax rounded up to 16) for R rows of f16-rounded queries
 * qh [R][D]: sb[r * ls + j] = scale x (q_r . k_j), -inf from L[r] on; each K row loaded and converted once
 * for all R rows; A: [R][16][16] scratch (the per-key lanes of one block of 16 keys). nd <= 8. */
AI void block_scores(const int nd, const uint16_t *K, int64_t ld, const int64_t *L, int64_t Lmax, int R,
                     const float *qh, float scale, int64_t jb, int64_t je, float *A, float *sb, int64_t ls, int vecdot) {
    const int D = nd * 16;
    const __m512 vs = _mm512_set1_ps(scale);
    for (int64_t j0 = jb; j0 < je; j0 += 16) {
        for (int k = 0; k < 16; k++) {
            int64_t j = j0 + k < Lmax ? j0 + k : Lmax - 1; /* past Lmax: any key, masked below */
            const uint16_t *kr = K + j * ld;
            if (j + 16 < Lmax) { /* rows of one group are 2 of every 6 lines: help the prefetcher */
                _mm_prefetch((const char *)(kr + 16 * ld), _MM_HINT_T0);
                _mm_prefetch((const char *)(kr + 16 * ld) + 64 * (nd > 2), _MM_HINT_T0);
            }
            __m512 kv[8] = {0};
            #pragma GCC unroll 8
            for (int i = 0; i < nd; i++) kv[i] = ldh(kr + 16 * i);
            for (int r = 0; r < R; r++) {
                const float *q = qh + r * D;
                __m512 a;
                if (vecdot) {
                    __m512 c[4];
                    #pragma GCC unroll 4
                    for (int i = 0; i < 4; i++) c[i] = _mm512_mul_ps(_mm512_loadu_ps(q + 16 * i), kv[i]);
                    #pragma GCC unroll 8
                    for (int i = 4; i < nd; i++) c[i & 3] = _mm512_fmadd_ps(_mm512_loadu_ps(q + 16 * i), kv[i], c[i & 3]);
                    a = _mm512_add_ps(_mm512_add_ps(c[0], c[2]), _mm512_add_ps(c[1], c[3]));
                } else {
                    a = _mm512_mul_ps(_mm512_loadu_ps(q), kv[0]);
                    #pragma GCC unroll 8
                    for (int i = 1; i < nd; i++) a = _mm512_fmadd_ps(_mm512_loadu_ps(q + 16 * i), kv[i], a);
                }
                _mm512_storeu_ps(A + (r * 16 + k) * 16, a);
            }
        }
        for (int r = 0; r < R; r++) {
            __m512 Ar[16];
            for (int k = 0; k < 16; k++) Ar[k] = _mm512_loadu_ps(A + (r * 16 + k) * 16);
            __m512 sv = _mm512_mul_ps(reduce16x16(Ar), vs);
            int64_t rem = L[r] - j0;
            __mmask16 m = rem >= 16 ? (__mmask16)0xFFFF : rem <= 0 ? (__mmask16)0 : (__mmask16)((1u << rem) - 1);
            _mm512_storeu_ps(sb + r * ls + j0, _mm512_mask_blend_ps(m, _mm512_set1_ps(-INFINITY), sv));
        }
    }
}

/* one row's scores srow[0..L16) (-inf past its keys) -> probabilities rounded to f16, zeros on [L16, LP) */
AI void row_softmax(float *srow, int64_t L16, int64_t LP) {
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    for (int64_t j0 = 0; j0 < L16; j0 += 16) vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(srow + j0));
    softmax_f16(srow, L16, vmax); /* 0 past L[r]: no-op products below */
    for (int64_t j = L16; j < LP; j++) srow[j] = 0.f;
}

AI void attn_block(const int nd, const uint16_t *K, const uint16_t *V, const uint16_t *VT, int64_t vld, int64_t ld,
                   const int64_t *L, int R, const float *const *qrows, float scale, float *const *orows, float *work,
                   int vecdot) {
    const int D = nd * 16;
    int64_t Lmax = 0;
    for (int r = 0; r < R; r++) Lmax = L[r] > Lmax ? L[r] : Lmax;
    const int64_t L16 = (Lmax + 15) / 16 * 16, LP = vecdot ? (Lmax + 63) / 64 * 64 : L16, ls = LP + 16;
    float *qh = work;                       /* [R][D] f16-rounded queries */
    float *A = qh + (size_t)R * D;          /* [R][16][16] per-key lanes of one key block */
    float *sb = A + (size_t)R * 256;        /* [R][ls] scores -> probabilities */
    float *acc = sb + (size_t)R * ls;       /* [R][64][D] P.V chains */
    for (int r = 0; r < R; r++) q_f16_row(qh + r * D, qrows[r], nd);
    block_scores(nd, K, ld, L, Lmax, R, qh, scale, 0, L16, A, sb, ls, vecdot);
    for (int r = 0; r < R; r++) row_softmax(sb + r * ls, L16, LP);
    if (VT) {
        float *zrow = acc + (size_t)R * 64 * D; /* [ls] zeros */
        for (int64_t j = 0; j < ls; j++) zrow[j] = 0.f;
        if (vecdot)
            pv_vt(6, 1, 1, VT, vld, D, 0, D, R, sb, ls, LP, zrow, acc, orows);
        else
            pv_vt(12, 2, 0, VT, vld, D, 0, D, R, sb, ls, LP, zrow, acc, orows);
        return;
    }
    /* P.V: chains of keys j = c mod nl, nl = 16 (tinyBLAS) or 64 (ggml_vec_dot_f16); RP rows at a
     * time with a constant count (missing rows read zero probabilities) so the accumulators stay
     * in registers */
    const int nl = vecdot ? 64 : 16;
    enum { RPMAX = 6 };
    const int RP = nd <= 4 ? 6 : 3;
    float *zrow = acc + (size_t)R * 64 * D; /* [ls] zeros */
    for (int64_t j = 0; j < L16; j++) zrow[j] = 0.f;
    for (int r0 = 0; r0 < R; r0 += RP) {
        const float *pr[RPMAX];
        for (int r = 0; r < RPMAX; r++) pr[r] = r0 + r < R ? sb + (size_t)(r0 + r) * ls : zrow;
        for (int c = 0; c < nl; c++) {
            __m512 a[RPMAX][8];
            #pragma GCC unroll 6
            for (int r = 0; r < RP; r++)
                #pragma GCC unroll 8
                for (int i = 0; i < nd; i++) a[r][i] = _mm512_setzero_ps();
            for (int64_t j = c; j < Lmax; j += nl) {
                const uint16_t *vr = V + j * ld;
                if (j + 4 * nl < Lmax) { /* strided rows: prefetch 4 steps ahead */
                    _mm_prefetch((const char *)(vr + 4 * nl * ld), _MM_HINT_T0);
                    _mm_prefetch((const char *)(vr + 4 * nl * ld) + 64 * (nd > 2), _MM_HINT_T0);
                }
                __m512 vv[8] = {0};
                #pragma GCC unroll 8
                for (int i = 0; i < nd; i++) vv[i] = ldh(vr + 16 * i);
                #pragma GCC unroll 6
                for (int r = 0; r < RP; r++) {
                    __m512 p = _mm512_set1_ps(pr[r][j]);
                    #pragma GCC unroll 8
                    for (int i = 0; i < nd; i++) a[r][i] = _mm512_fmadd_ps(p, vv[i], a[r][i]);
                }
            }
            for (int r = 0; r < RP && r0 + r < R; r++)
                #pragma GCC unroll 8
                for (int i = 0; i < nd; i++) _mm512_storeu_ps(acc + ((size_t)(r0 + r) * 64 + c) * D + 16 * i, a[r][i]);
        }
    }
    for (int r = 0; r < R; r++) {
        float *ac = acc + (size_t)r * 64 * D;
        #pragma GCC unroll 8
        for (int i = 0; i < nd; i++) {
            if (vecdot)
                for (int l = 0; l < 16; l++) {
                    const float *cc = ac + 16 * i;
                    __m512 x = _mm512_add_ps(_mm512_add_ps(_mm512_loadu_ps(cc + l * D), _mm512_loadu_ps(cc + (32 + l) * D)),
                                             _mm512_add_ps(_mm512_loadu_ps(cc + (16 + l) * D), _mm512_loadu_ps(cc + (48 + l) * D)));
                    _mm512_storeu_ps(ac + l * D + 16 * i, x);
                }
            __m512 a8[8], a4[4];
            for (int l = 0; l < 8; l++)
                a8[l] = _mm512_add_ps(_mm512_loadu_ps(ac + l * D + 16 * i), _mm512_loadu_ps(ac + (l + 8) * D + 16 * i));
            for (int l = 0; l < 4; l++) a4[l] = _mm512_add_ps(a8[l], a8[l + 4]);
            _mm512_storeu_ps(orows[r] + 16 * i, _mm512_add_ps(_mm512_add_ps(a4[0], a4[2]), _mm512_add_ps(a4[1], a4[3])));
        }
    }
}

void ggmlc_attn_block_avx512(const uint16_t *K, const uint16_t *V, const uint16_t *VT, int64_t vld, int64_t ld,
                             const int64_t *L, int R, const float *const *qrows, int D, float scale,
                             float *const *orows, float *work, int vecdot) {
    /* constant head sizes keep the per-key rows and accumulators in registers */
    if (D == 64)
        attn_block(4, K, V, VT, vld, ld, L, R, qrows, scale, orows, work, vecdot);
    else if (D == 128)
        attn_block(8, K, V, VT, vld, ld, L, R, qrows, scale, orows, work, vecdot);
    else
        attn_block(D / 16, K, V, VT, vld, ld, L, R, qrows, scale, orows, work, vecdot);
}

/* one-token decode in pieces that threads share (ggmlc.c's attn_decode; ggmlc.h): scores of keys [jb, je)
 * for R rows of one group, a row's softmax, P.V for dims [db, de) of R rows. Each piece runs block_scores /
 * row_softmax / pv_vt on its range, so the results are attn_block's bits whatever the split. */
void ggmlc_dec_scores_avx512(const uint16_t *K, int64_t ld, const int64_t *L, int R, const float *q, int D,
                             float scale, int64_t jb, int64_t je, float *sb, int64_t ls, float *work) {
    float *qh = work, *A = work + (size_t)R * D; /* [R][D] f16-rounded queries, [R][16][16] */
    for (int r = 0; r < R; r++) q_f16_row(qh + r * D, q + (size_t)r * D, D / 16);
    if (D == 64)
        block_scores(4, K, ld, L, L[0], R, qh, scale, jb, je, A, sb, ls, 1);
    else /* D 128 */
        block_scores(8, K, ld, L, L[0], R, qh, scale, jb, je, A, sb, ls, 1);
}
void ggmlc_dec_softmax_avx512(float *srow, int64_t L16, int64_t LP) { row_softmax(srow, L16, LP); }
void ggmlc_dec_pv_avx512(const uint16_t *VT, int64_t vld, int D, int R, const float *sb, int64_t ls, int64_t LP,
                         int db, int de, float *const *orows, float *work) {
    float *zrow = work, *acc16 = work + ls; /* [ls] zeros (the rows past R of the last 6), [R][D][16] */
    for (int64_t j = 0; j < LP; j++) zrow[j] = 0.f;
    pv_vt(6, 1, 1, VT, vld, D, db, de, R, sb, ls, LP, zrow, acc16, orows);
}

/* f32 <-> f16 rows with F16C (round to nearest even, as ggml's GGML_CPU_FP32_TO_FP16) */
void ggmlc_f32_to_f16_avx512(const float *src, uint16_t *dst, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(void *)(dst + i),
                            _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    for (; i < n; i++) dst[i] = _cvtss_sh(src[i], _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
void ggmlc_f16_to_f32_avx512(const uint16_t *src, float *dst, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, ldh(src + i));
    for (; i < n; i++) dst[i] = _cvtsh_ss(src[i]);
}
