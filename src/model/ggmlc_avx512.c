/* ggmlc_avx512.c: AVX-512 kernels of ggmlc.h, operation for operation what ggml's CPU backend
 * executes (vec.h ggml_v_expf / ggml_v_silu, tinyBLAS f16 dot products, ggml_vec_soft_max_f32). */
#include <immintrin.h>
#include <math.h>

#include "ggmlc.h"

#define AI __attribute__((always_inline)) static inline

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
    const __m512 res = _mm512_scalef_ps(j, n);
    if (_mm512_kortestz(d, d)) return res;
    const __m512 zero = _mm512_setzero_ps();
    const __m512 alt = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(n, zero, _CMP_LE_OQ), _mm512_set1_ps(INFINITY), zero);
    return _mm512_mask_blend_ps(d, res, alt);
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

/* 16 vectors -> their 16 _mm512_reduce_add_ps sums (same pairing per vector), in order */
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
    for (int i = 0; i < nd; i++)
        qv[i] = _mm512_cvtph_ps(_mm512_cvtps_ph(_mm512_loadu_ps(q + 16 * i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
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
    const __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
    double sum = 0;
    for (int64_t j0 = 0; j0 < L16; j0 += 16) {
        __m512 e = v_expf(_mm512_sub_ps(_mm512_loadu_ps(sbuf + j0), mx));
        _mm512_storeu_ps(sbuf + j0, e);
        sum += (double)_mm512_reduce_add_ps(e);
    }
    const __m512 sc = _mm512_set1_ps((float)(1.0 / sum));
    for (int64_t j0 = 0; j0 < L16; j0 += 16) {
        __m512 p = _mm512_mul_ps(_mm512_loadu_ps(sbuf + j0), sc);
        p = _mm512_cvtph_ps(_mm512_cvtps_ph(p, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        _mm512_storeu_ps(sbuf + j0, p);
    }
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
