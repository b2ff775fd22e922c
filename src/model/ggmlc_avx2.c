/* ggmlc_avx2.c: AVX2 + FMA + F16C kernels of ggmlc.h's AVX-512 order (GGMLC_ORDER_AVX512: llama.cpp's AVX-512
 * build's bits) for x86 CPUs without AVX-512 (before them the llama.cpp-order dense attention and SwiGLU ran
 * ggmlc.c's scalar code there, calling fmaf one lane at a time: about half of a short dense prefill on an AVX2-only
 * machine, session 27). Since session 69 those CPUs default to the AVX2 build's order (ggmlc_l8_avx2.c); these
 * kernels run there when INFLLM_LLAMA_ORDER=avx512 asks for the AVX-512 build's bits.
 *
 * The same operations, lane for lane, as ggmlc_avx512.c (and so as ggmlc.c's scalar path: the results are
 * bitwise equal, which test_quant checks): a 16-lane vector of that file is a pair of 8-lane halves here
 * (v16: lanes 0-7, 8-15), every FMA / multiply / add is per lane, and the cross-lane sums keep
 * _mm512_reduce_add_ps's pairing ((l + 8), then (l + 4), then (0 + 2) + (1 + 3)). What differs is only
 * the register blocking (rows and head-dimension slices per pass: 16 ymm registers instead of 32 zmm),
 * which changes which products are in flight together, never the order of a chain. _mm512_scalef_ps
 * (j * 2^n, |n| <= 192) becomes two exact power-of-two factors, one rounding, as ldexpf. */
#include <immintrin.h>
#include <math.h>

#include "ggmlc.h"

#define AI __attribute__((always_inline)) static inline
#include "ggmlc_sub.h"

typedef struct {
    __m256 lo, hi;
} v16;

AI v16 v16_set1(float x) { return (v16){_mm256_set1_ps(x), _mm256_set1_ps(x)}; }
AI v16 v16_zero(void) { return (v16){_mm256_setzero_ps(), _mm256_setzero_ps()}; }
AI v16 v16_load(const float *p) { return (v16){_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
AI void v16_store(float *p, v16 a) {
    _mm256_storeu_ps(p, a.lo);
    _mm256_storeu_ps(p + 8, a.hi);
}
AI v16 v16_add(v16 a, v16 b) { return (v16){_mm256_add_ps(a.lo, b.lo), _mm256_add_ps(a.hi, b.hi)}; }
AI v16 v16_sub(v16 a, v16 b) { return (v16){_mm256_sub_ps(a.lo, b.lo), _mm256_sub_ps(a.hi, b.hi)}; }
AI v16 v16_mul(v16 a, v16 b) { return (v16){_mm256_mul_ps(a.lo, b.lo), _mm256_mul_ps(a.hi, b.hi)}; }
AI v16 v16_fmadd(v16 a, v16 b, v16 c) { return (v16){_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi)}; }
AI v16 v16_max(v16 a, v16 b) { return (v16){_mm256_max_ps(a.lo, b.lo), _mm256_max_ps(a.hi, b.hi)}; }
/* 16 f16 values -> f32 */
AI v16 ldh(const uint16_t *p) {
    return (v16){_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)p)),
                 _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(p + 8)))};
}
/* round each lane to f16 and back (nearest even) */
AI __m256 f16r8(__m256 x) { return _mm256_cvtph_ps(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)); }
AI v16 v16_f16r(v16 a) { return (v16){f16r8(a.lo), f16r8(a.hi)}; }
/* a query row of nd x 16 values rounded to f16, as llama.cpp converts Q for its f16 products */
AI void q_f16_row(float *dst, const float *src, int nd) {
    for (int i = 0; i < nd; i++) v16_store(dst + 16 * i, v16_f16r(v16_load(src + 16 * i)));
}

/* _mm512_reduce_add_ps's order: (l + 8), (l + 4), then (0 + 2) + (1 + 3) */
AI float v16_reduce_add(v16 a) {
    const __m256 s8 = _mm256_add_ps(a.lo, a.hi);
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4)); /* (0 + 2), (1 + 3) */
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}
AI float v16_reduce_max(v16 a) {
    __m256 m = _mm256_max_ps(a.lo, a.hi);
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    return _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
}

/* 16 vectors -> the v16 of their 16 v16_reduce_add sums, in order (the same pairing per vector) */
AI v16 reduce16x16(const v16 *A) {
    __m256 s8[16], T[8], U[4], V[2];
    for (int k = 0; k < 16; k++) s8[k] = _mm256_add_ps(A[k].lo, A[k].hi); /* lane l: l + (l + 8) */
    /* T[k]: low half the (l + 4) sums of vector k, high half those of vector k + 8 */
    for (int k = 0; k < 8; k++)
        T[k] = _mm256_add_ps(_mm256_permute2f128_ps(s8[k], s8[k + 8], 0x20), _mm256_permute2f128_ps(s8[k], s8[k + 8], 0x31));
    /* U[k]: per half (0 + 2), (1 + 3) of T[k], then of T[k + 4] */
    for (int k = 0; k < 4; k++)
        U[k] = _mm256_add_ps(_mm256_shuffle_ps(T[k], T[k + 4], 0x44), _mm256_shuffle_ps(T[k], T[k + 4], 0xEE));
    /* V[k]: per half the sums of T[k], T[k + 4], T[k + 2], T[k + 6] (high half: the vectors + 8) */
    for (int k = 0; k < 2; k++)
        V[k] = _mm256_add_ps(_mm256_shuffle_ps(U[k], U[k + 2], 0x88), _mm256_shuffle_ps(U[k], U[k + 2], 0xDD));
    /* V[0] = [0 4 2 6 | 8 12 10 14], V[1] = [1 5 3 7 | 9 13 11 15] -> in order */
    const __m256 X = _mm256_unpacklo_ps(V[0], V[1]); /* [0 1 4 5 | 8 9 12 13] */
    const __m256 Y = _mm256_unpackhi_ps(V[0], V[1]); /* [2 3 6 7 | 10 11 14 15] */
    const __m256 P = _mm256_shuffle_ps(X, Y, 0x44);  /* [0 1 2 3 | 8 9 10 11] */
    const __m256 Q = _mm256_shuffle_ps(X, Y, 0xEE);  /* [4 5 6 7 | 12 13 14 15] */
    return (v16){_mm256_permute2f128_ps(P, Q, 0x20), _mm256_permute2f128_ps(P, Q, 0x31)};
}

/* ggml_v_expf (AVX-512 variant) on 8 lanes */
AI __m256 v_expf8(__m256 x) {
    const __m256 r = _mm256_set1_ps(0x1.8p23f);
    const __m256 z = _mm256_fmadd_ps(x, _mm256_set1_ps(0x1.715476p+0f), r);
    const __m256 n = _mm256_sub_ps(z, r);
    const __m256 b = _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.7f7d1cp-20f),
                                      _mm256_fnmadd_ps(n, _mm256_set1_ps(0x1.62e4p-1f), x));
    const __m256 absn = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), n);
    const __m256 d = _mm256_cmp_ps(absn, _mm256_set1_ps(192), _CMP_GT_OQ);
    const __m256 u = _mm256_mul_ps(b, b);
    const __m256 j = _mm256_fmadd_ps(
        _mm256_fmadd_ps(_mm256_fmadd_ps(_mm256_set1_ps(0x1.0e4020p-7f), b, _mm256_set1_ps(0x1.573e2ep-5f)), u,
                        _mm256_fmadd_ps(_mm256_set1_ps(0x1.555e66p-3f), b, _mm256_set1_ps(0x1.fffdb6p-2f))),
        u, _mm256_fmadd_ps(_mm256_set1_ps(0x1.ffffecp-1f), b, _mm256_set1_ps(1.0F)));
    /* j * 2^n as _mm512_scalef_ps: n is an integer (|n| <= 192 where used), split into two halves of at
     * most 96 whose powers of two are normal floats; the first product is exact, the second rounds once */
    const __m256i ni = _mm256_cvttps_epi32(n);
    const __m256i n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
    const __m256i bias = _mm256_set1_epi32(127);
    const __m256 p1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
    const __m256 p2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
    /* lanes with n < -126 give results below FLT_MIN: from integer steps (ggmlc_sub.h, the same bits) on
     * t = j 2^(n + 128), their second product kept normal (a subnormal one is a microcode assist) */
    const __m256 sub = _mm256_cmp_ps(n, _mm256_set1_ps(-126.5f), _CMP_LT_OQ);
    __m256 res;
    if (_mm256_testz_ps(sub, sub)) {
        res = _mm256_mul_ps(_mm256_mul_ps(j, p1), p2);
    } else {
        const __m256i nt = _mm256_add_epi32(ni, _mm256_set1_epi32(128));
        const __m256i t1 = _mm256_srai_epi32(nt, 1), t2 = _mm256_sub_epi32(nt, t1);
        const __m256 q1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(t1, bias), 23));
        const __m256 q2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(t2, bias), 23));
        const __m256 t = _mm256_mul_ps(_mm256_mul_ps(j, q1), q2); /* exact: normal */
        const __m256 nrm = _mm256_mul_ps(_mm256_mul_ps(j, p1), _mm256_blendv_ps(p2, _mm256_set1_ps(1.f), sub));
        res = _mm256_blendv_ps(nrm, ggmlc_sub_scale8(t, 128), sub);
    }
    if (_mm256_testz_ps(d, d)) return res;
    const __m256 zero = _mm256_setzero_ps();
    const __m256 alt = _mm256_blendv_ps(_mm256_set1_ps(INFINITY), zero, _mm256_cmp_ps(n, zero, _CMP_LE_OQ)); /* n <= 0: 0 */
    return _mm256_blendv_ps(res, alt, d);
}
AI v16 v_expf(v16 x) { return (v16){v_expf8(x.lo), v_expf8(x.hi)}; }

void ggmlc_expf_avx2(const float *x, float *y, int64_t n) {
    for (int64_t i = 0; i + 7 < n; i += 8) _mm256_storeu_ps(y + i, v_expf8(_mm256_loadu_ps(x + i)));
}

void ggmlc_swiglu_avx2(float *g, const float *u, int64_t n) {
    const __m256 one = _mm256_set1_ps(1.f), zero = _mm256_setzero_ps();
    for (int64_t i = 0; i + 7 < n; i += 8) { /* lane-wise: 8 at a time is the 16-lane kernel's result */
        __m256 x = _mm256_loadu_ps(g + i);
        __m256 silu = _mm256_div_ps(x, _mm256_add_ps(one, v_expf8(_mm256_sub_ps(zero, x))));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(silu, _mm256_loadu_ps(u + i)));
    }
}

/* lanes 0..rem-1 of s, -inf past them */
AI v16 mask_tail(v16 s, int64_t rem) {
    if (rem >= 16) return s;
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    if (rem <= 0) return (v16){ninf, ninf};
    const __m256i idx_lo = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), idx_hi = _mm256_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15);
    const __m256i rv = _mm256_set1_epi32((int)rem);
    const __m256 keep_lo = _mm256_castsi256_ps(_mm256_cmpgt_epi32(rv, idx_lo));
    const __m256 keep_hi = _mm256_castsi256_ps(_mm256_cmpgt_epi32(rv, idx_hi));
    return (v16){_mm256_blendv_ps(ninf, s.lo, keep_lo), _mm256_blendv_ps(ninf, s.hi, keep_hi)};
}

/* ggml_soft_max over s[0..L16) (ggmlc_avx512.c's softmax_f16): exp(s - max), the sum in double of the
 * 16-lane partials in order, the probabilities scaled and rounded to f16 in place */
AI void softmax_f16(float *s, int64_t L16, v16 vmax) {
    const v16 mx = v16_set1(v16_reduce_max(vmax));
    double sum = 0;
    for (int64_t j0 = 0; j0 < L16; j0 += 16) {
        v16 e = v_expf(v16_sub(v16_load(s + j0), mx));
        v16_store(s + j0, e);
        sum += (double)v16_reduce_add(e);
    }
    const v16 sc = v16_set1((float)(1.0 / sum));
    /* exps below 2^-100 zeroed first: times sc (<= 1) they round to +0 in f16 anyway, and their product could be
     * subnormal (an assist) */
    const __m256 tiny = _mm256_set1_ps(0x1p-100f);
    for (int64_t j0 = 0; j0 < L16; j0 += 16) {
        v16 e = v16_load(s + j0);
        e.lo = _mm256_and_ps(e.lo, _mm256_cmp_ps(e.lo, tiny, _CMP_GE_OQ));
        e.hi = _mm256_and_ps(e.hi, _mm256_cmp_ps(e.hi, tiny, _CMP_GE_OQ));
        v16_store(s + j0, v16_f16r(v16_mul(e, sc)));
    }
}

/* the 16 lanes of acc rows l = 0..15 (stride D), at columns [c0, c0 + 16): _mm512_reduce_add_ps's pairing
 * per column, (l + 8), (l + 4), (0 + 2) + (1 + 3); vecdot first folds the 4 chains (0 + 2) + (1 + 3) */
AI void fold_lanes(float *acc, int D, int c0, int vecdot, float *out) {
    if (vecdot)
        for (int l = 0; l < 16; l++) {
            const float *c = acc + c0;
            v16 x = v16_add(v16_add(v16_load(c + l * D), v16_load(c + (32 + l) * D)),
                            v16_add(v16_load(c + (16 + l) * D), v16_load(c + (48 + l) * D)));
            v16_store(acc + l * D + c0, x);
        }
    v16 a8[8], a4[4];
    for (int l = 0; l < 8; l++) a8[l] = v16_add(v16_load(acc + l * D + c0), v16_load(acc + (l + 8) * D + c0));
    for (int l = 0; l < 4; l++) a4[l] = v16_add(a8[l], a8[l + 4]);
    v16_store(out + c0, v16_add(v16_add(a4[0], a4[2]), v16_add(a4[1], a4[3])));
}

/* q . k over D (nd groups of 16): one chain per lane (tinyBLAS) or ggml_vec_dot_f16's 4 chains */
AI v16 qk16(const float *q, const uint16_t *kr, int nd, int vecdot) {
    if (vecdot) {
        v16 c[4];
        for (int i = 0; i < 4; i++) c[i] = v16_mul(v16_load(q + 16 * i), ldh(kr + 16 * i));
        for (int i = 4; i < nd; i++) c[i & 3] = v16_fmadd(v16_load(q + 16 * i), ldh(kr + 16 * i), c[i & 3]);
        return v16_add(v16_add(c[0], c[2]), v16_add(c[1], c[3]));
    }
    v16 a = v16_mul(v16_load(q), ldh(kr));
    for (int i = 1; i < nd; i++) a = v16_fmadd(v16_load(q + 16 * i), ldh(kr + 16 * i), a);
    return a;
}

void ggmlc_attn_row_avx2(const uint16_t *K, const uint16_t *V, int64_t ld, int64_t L, const float *q, int D,
                         float scale, float *out, float *sbuf, float *acc, int vecdot) {
    const int nd = D / 16;
    float qh[512];
    q_f16_row(qh, q, nd);
    const v16 vs = v16_set1(scale);
    v16 vmax = v16_set1(-INFINITY);
    const int64_t L16 = (L + 15) / 16 * 16;
    for (int64_t j0 = 0; j0 < L16; j0 += 16) {
        v16 A[16];
        for (int k = 0; k < 16; k++) {
            int64_t j = j0 + k < L ? j0 + k : L - 1; /* past L: any key, masked below */
            A[k] = qk16(qh, K + j * ld, nd, vecdot);
        }
        v16 s = mask_tail(v16_mul(reduce16x16(A), vs), L - j0);
        v16_store(sbuf + j0, s);
        vmax = v16_max(vmax, s);
    }
    softmax_f16(sbuf, L16, vmax);
    /* P.V: lane l accumulates the keys j = l mod nl in order, 16 columns at a time */
    const int nl = vecdot ? 64 : 16;
    for (int l = 0; l < nl; l++)
        for (int i = 0; i < nd; i++) {
            v16 a = v16_zero();
            for (int64_t j = l; j < L; j += nl) a = v16_fmadd(v16_set1(sbuf[j]), ldh(V + j * ld + 16 * i), a);
            v16_store(acc + l * D + 16 * i, a);
        }
    for (int i = 0; i < nd; i++) fold_lanes(acc, D, 16 * i, vecdot, out);
}

/* P.V from V transposed (ggmlc_avx512.c's pv_vt) for dims [db, de) (multiples of 16): RPV rows at a time
 * (missing rows read zero probabilities), DB dims, each (row, dim) a set of 16 lanes along the keys */
AI void pv_vt(const int RPV, const int DB, int vecdot, const uint16_t *VT, int64_t vld, int D, int db, int de, int R,
              const float *sb, int64_t ls, int64_t LP, const float *zrow, float *acc16, float *const *orows) {
    for (int r0 = 0; r0 < R; r0 += RPV) {
        const float *pr[GGMLC_RB];
        for (int r = 0; r < GGMLC_RB; r++) pr[r] = r0 + r < R ? sb + (size_t)(r0 + r) * ls : zrow;
        for (int d0 = db; d0 < de; d0 += DB) {
            v16 a[GGMLC_RB][4];
#pragma GCC unroll 12
            for (int r = 0; r < RPV; r++)
#pragma GCC unroll 4
                for (int k = 0; k < 4; k++) a[r][k] = v16_zero();
            if (vecdot) { /* DB == 1: chains k = (j mod 64) / 16 */
                const uint16_t *vr = VT + (size_t)d0 * vld;
                for (int64_t j0 = 0; j0 < LP; j0 += 64) {
                    v16 vv[4];
#pragma GCC unroll 4
                    for (int k = 0; k < 4; k++) vv[k] = ldh(vr + j0 + 16 * k);
#pragma GCC unroll 12
                    for (int r = 0; r < RPV; r++)
#pragma GCC unroll 4
                        for (int k = 0; k < 4; k++) a[r][k] = v16_fmadd(v16_load(pr[r] + j0 + 16 * k), vv[k], a[r][k]);
                }
#pragma GCC unroll 12
                for (int r = 0; r < RPV; r++)
                    if (r0 + r < R)
                        v16_store(acc16 + ((size_t)(r0 + r) * D + d0) * 16,
                                  v16_add(v16_add(a[r][0], a[r][2]), v16_add(a[r][1], a[r][3])));
            } else {
                for (int64_t j0 = 0; j0 < LP; j0 += 16) {
                    v16 vv[4];
#pragma GCC unroll 4
                    for (int k = 0; k < DB; k++) vv[k] = ldh(VT + (size_t)(d0 + k) * vld + j0);
#pragma GCC unroll 12
                    for (int r = 0; r < RPV; r++) {
                        v16 p = v16_load(pr[r] + j0);
#pragma GCC unroll 4
                        for (int k = 0; k < DB; k++) a[r][k] = v16_fmadd(p, vv[k], a[r][k]);
                    }
                }
#pragma GCC unroll 12
                for (int r = 0; r < RPV; r++)
#pragma GCC unroll 4
                    for (int k = 0; k < DB; k++)
                        if (r0 + r < R) v16_store(acc16 + ((size_t)(r0 + r) * D + d0 + k) * 16, a[r][k]);
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int d0 = db; d0 < de; d0 += 16) {
            v16 A[16];
            for (int k = 0; k < 16; k++) A[k] = v16_load(acc16 + ((size_t)r * D + d0 + k) * 16);
            v16_store(orows[r] + d0, reduce16x16(A));
        }
}

/* scores of keys [jb, je) (multiples of 16, je <= Lmax rounded up to 16) for R rows of f16-rounded queries
 * qh [R][D]: sb[r * ls + j] = scale x (q_r . k_j), -inf from L[r] on; each K row loaded and converted once
 * for all R rows; A: [R][16][16] scratch (the per-key lanes of one block of 16 keys) */
AI void block_scores(const int nd, const uint16_t *K, int64_t ld, const int64_t *L, int64_t Lmax, int R,
                     const float *qh, float scale, int64_t jb, int64_t je, float *A, float *sb, int64_t ls, int vecdot) {
    const int D = nd * 16;
    const v16 vs = v16_set1(scale);
    for (int64_t j0 = jb; j0 < je; j0 += 16) {
        for (int k = 0; k < 16; k++) {
            int64_t j = j0 + k < Lmax ? j0 + k : Lmax - 1; /* past Lmax: any key, masked below */
            const uint16_t *kr = K + j * ld;
            if (j + 16 < Lmax) { /* the row's first and last bytes and every line between (3 lines where a
                                  * 128-byte row starts mid-line: malloc's large blocks start 16 bytes in) */
                const char *pf = (const char *)(kr + 16 * ld);
                for (int b = 0; b < 2 * D; b += 64) _mm_prefetch(pf + b, _MM_HINT_T0);
                _mm_prefetch(pf + 2 * D - 1, _MM_HINT_T0);
            }
            if (nd == 4) { /* d 64: the key row converted once into 8 ymm registers, kept for all R rows */
                v16 kv[4];
#pragma GCC unroll 4
                for (int i = 0; i < 4; i++) kv[i] = ldh(kr + 16 * i);
                for (int r = 0; r < R; r++) {
                    const float *q = qh + r * D;
                    v16 a;
                    if (vecdot) {
                        a = v16_add(v16_add(v16_mul(v16_load(q), kv[0]), v16_mul(v16_load(q + 32), kv[2])),
                                    v16_add(v16_mul(v16_load(q + 16), kv[1]), v16_mul(v16_load(q + 48), kv[3])));
                    } else {
                        a = v16_mul(v16_load(q), kv[0]);
#pragma GCC unroll 4
                        for (int i = 1; i < 4; i++) a = v16_fmadd(v16_load(q + 16 * i), kv[i], a);
                    }
                    v16_store(A + (r * 16 + k) * 16, a);
                }
                continue;
            }
            /* the key row converted once, in the row's halves of 8 lanes (8 ymm at d 128) */
            float kf[512];
            for (int i = 0; i < nd; i++) v16_store(kf + 16 * i, ldh(kr + 16 * i));
            for (int r = 0; r < R; r++) {
                const float *q = qh + r * D;
                v16 a;
                if (vecdot) {
                    v16 c[4];
                    for (int i = 0; i < 4; i++) c[i] = v16_mul(v16_load(q + 16 * i), v16_load(kf + 16 * i));
                    for (int i = 4; i < nd; i++) c[i & 3] = v16_fmadd(v16_load(q + 16 * i), v16_load(kf + 16 * i), c[i & 3]);
                    a = v16_add(v16_add(c[0], c[2]), v16_add(c[1], c[3]));
                } else {
                    a = v16_mul(v16_load(q), v16_load(kf));
                    for (int i = 1; i < nd; i++) a = v16_fmadd(v16_load(q + 16 * i), v16_load(kf + 16 * i), a);
                }
                v16_store(A + (r * 16 + k) * 16, a);
            }
        }
        for (int r = 0; r < R; r++) {
            v16 Ar[16];
            for (int k = 0; k < 16; k++) Ar[k] = v16_load(A + (r * 16 + k) * 16);
            v16_store(sb + r * ls + j0, mask_tail(v16_mul(reduce16x16(Ar), vs), L[r] - j0));
        }
    }
}

/* one row's scores srow[0..L16) (-inf past its keys) -> probabilities rounded to f16, zeros on [L16, LP) */
AI void row_softmax(float *srow, int64_t L16, int64_t LP) {
    v16 vmax = v16_set1(-INFINITY);
    for (int64_t j0 = 0; j0 < L16; j0 += 16) vmax = v16_max(vmax, v16_load(srow + j0));
    softmax_f16(srow, L16, vmax); /* 0 past L[r]: no-op products below */
    for (int64_t j = L16; j < LP; j++) srow[j] = 0.f;
}

/* R query rows (one KV group's heads, tokens of one block) against keys 0..L[r]-1 (ggmlc_avx512.c's
 * attn_block; work as there) */
AI void attn_block(const int nd, const uint16_t *K, const uint16_t *V, const uint16_t *VT, int64_t vld, int64_t ld,
                   const int64_t *L, int R, const float *const *qrows, float scale, float *const *orows, float *work,
                   int vecdot) {
    const int D = nd * 16;
    int64_t Lmax = 0;
    for (int r = 0; r < R; r++) Lmax = L[r] > Lmax ? L[r] : Lmax;
    const int64_t L16 = (Lmax + 15) / 16 * 16, LP = vecdot ? (Lmax + 63) / 64 * 64 : L16, ls = LP + 16;
    float *qh = work;              /* [R][D] f16-rounded queries */
    float *A = qh + (size_t)R * D; /* [R][16][16] per-key lanes of one key block */
    float *sb = A + (size_t)R * 256; /* [R][ls] scores -> probabilities */
    float *acc = sb + (size_t)R * ls; /* [R][64][D] P.V chains */
    for (int r = 0; r < R; r++) q_f16_row(qh + r * D, qrows[r], nd);
    block_scores(nd, K, ld, L, Lmax, R, qh, scale, 0, L16, A, sb, ls, vecdot);
    for (int r = 0; r < R; r++) row_softmax(sb + r * ls, L16, LP);
    if (VT) {
        float *zrow = acc + (size_t)R * 64 * D; /* [ls] zeros */
        for (int64_t j = 0; j < ls; j++) zrow[j] = 0.f;
        if (vecdot)
            pv_vt(1, 1, 1, VT, vld, D, 0, D, R, sb, ls, LP, zrow, acc, orows);
        else
            pv_vt(2, 2, 0, VT, vld, D, 0, D, R, sb, ls, LP, zrow, acc, orows);
        return;
    }
    /* P.V: chains of keys j = c mod nl, nl = 16 (tinyBLAS) or 64 (ggml_vec_dot_f16); RP rows x IB column
     * groups of 16 at a time (missing rows read zero probabilities) */
    const int nl = vecdot ? 64 : 16;
    enum { RP = 3, IB = 2 };
    float *zrow = acc + (size_t)R * 64 * D; /* [ls] zeros */
    for (int64_t j = 0; j < L16; j++) zrow[j] = 0.f;
    for (int r0 = 0; r0 < R; r0 += RP) {
        const float *pr[RP];
        for (int r = 0; r < RP; r++) pr[r] = r0 + r < R ? sb + (size_t)(r0 + r) * ls : zrow;
        for (int c = 0; c < nl; c++)
            for (int i0 = 0; i0 < nd; i0 += IB) {
                const int ib = nd - i0 < IB ? nd - i0 : IB;
                v16 a[RP][IB];
                for (int r = 0; r < RP; r++)
                    for (int i = 0; i < IB; i++) a[r][i] = v16_zero();
                for (int64_t j = c; j < Lmax; j += nl) {
                    const uint16_t *vr = V + j * ld + 16 * i0;
                    v16 vv[IB];
                    for (int i = 0; i < ib; i++) vv[i] = ldh(vr + 16 * i);
                    for (int r = 0; r < RP; r++) {
                        const v16 p = v16_set1(pr[r][j]);
                        for (int i = 0; i < ib; i++) a[r][i] = v16_fmadd(p, vv[i], a[r][i]);
                    }
                }
                for (int r = 0; r < RP && r0 + r < R; r++)
                    for (int i = 0; i < ib; i++) v16_store(acc + ((size_t)(r0 + r) * 64 + c) * D + 16 * (i0 + i), a[r][i]);
            }
    }
    for (int r = 0; r < R; r++)
        for (int i = 0; i < nd; i++) fold_lanes(acc + (size_t)r * 64 * D, D, 16 * i, vecdot, orows[r]);
}

void ggmlc_attn_block_avx2(const uint16_t *K, const uint16_t *V, const uint16_t *VT, int64_t vld, int64_t ld,
                           const int64_t *L, int R, const float *const *qrows, int D, float scale,
                           float *const *orows, float *work, int vecdot) {
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
void ggmlc_dec_scores_avx2(const uint16_t *K, int64_t ld, const int64_t *L, int R, const float *q, int D, float scale,
                           int64_t jb, int64_t je, float *sb, int64_t ls, float *work) {
    float *qh = work, *A = work + (size_t)R * D; /* [R][D] f16-rounded queries, [R][16][16] */
    for (int r = 0; r < R; r++) q_f16_row(qh + r * D, q + (size_t)r * D, D / 16);
    if (D == 64)
        block_scores(4, K, ld, L, L[0], R, qh, scale, jb, je, A, sb, ls, 1);
    else /* D 128 */
        block_scores(8, K, ld, L, L[0], R, qh, scale, jb, je, A, sb, ls, 1);
}
void ggmlc_dec_softmax_avx2(float *srow, int64_t L16, int64_t LP) { row_softmax(srow, L16, LP); }
void ggmlc_dec_pv_avx2(const uint16_t *VT, int64_t vld, int D, int R, const float *sb, int64_t ls, int64_t LP,
                       int db, int de, float *const *orows, float *work) {
    pv_vt(1, 1, 1, VT, vld, D, db, de, R, sb, ls, LP, NULL, work, orows); /* one row at a time: no zero rows */
}

/* f32 <-> f16 rows with F16C (round to nearest even) */
void ggmlc_f32_to_f16_avx2(const float *src, uint16_t *dst, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(void *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    for (; i < n; i++) dst[i] = _cvtss_sh(src[i], _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}
void ggmlc_f16_to_f32_avx2(const uint16_t *src, float *dst, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(src + i))));
    for (; i < n; i++) dst[i] = _cvtsh_ss(src[i]);
}
