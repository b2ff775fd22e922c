/* kern_avx512.c: AVX-512F kernels (compiled with -mavx512*, called only when the CPU has them).
 * f32 FMA throughout: on Intel's AVX512_BF16 parts (Sapphire / Emerald Rapids) vdpbf16ps retires at half the
 * f32 FMA rate (bench/CPU_NOTES.md), so bf16 inputs are widened to f32 there; on AMD's (Zen 4 / 5) it runs at
 * twice the rate, and bf16 attention takes kern_dot16_avx512bf16.c's kernels instead (cpu_dot16_get). */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "cpu_kern.h"
#include "dtype.h"
#include "kern_rows6.h"

#define AI static inline __attribute__((always_inline))

/* 2^t, t <= 128; Taylor degree 7 on [-0.5, 0.5] (rel. err < 1e-8 before rounding), exact scaling. A NaN t
 * gives NaN (REF's exp): max_ps returns its second operand when either is NaN, so the constant comes first. */
AI __m512 exp2v(__m512 t) {
    t = _mm512_max_ps(_mm512_set1_ps(-150.0f), t);
    __m512 r = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_sub_ps(t, r);
    __m512 p = _mm512_set1_ps(1.525273380405984e-05f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.540353039338160e-04f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.333355814642844e-03f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.618129107628477e-03f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.550410866482158e-02f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.402265069591007e-01f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931471805599453e-01f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, r);
}

/* mask of lanes n0..n0+15 inside [a, b) */
AI __mmask16 range_mask(int n0, int a, int b) {
    __m512i idx = _mm512_add_epi32(_mm512_set1_epi32(n0),
                                   _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    return _mm512_cmpge_epi32_mask(idx, _mm512_set1_epi32(a)) & _mm512_cmplt_epi32_mask(idx, _mm512_set1_epi32(b));
}

/* ---------------------------------------------------------------- QK ---- */
AI void qk_blk(const float *Q, int64_t ldq, const int *rows, int D, const float *Kp, float *S, const int RR,
            const int NG) {
    __m512 acc[6][4];
    const float *qr[6];
#pragma GCC unroll 6
    for (int r = 0; r < RR; r++) qr[r] = Q + (rows ? rows[r] : r) * ldq;
#pragma GCC unroll 6
    for (int r = 0; r < RR; r++)
#pragma GCC unroll 4
        for (int g = 0; g < NG; g++) acc[r][g] = _mm512_setzero_ps();
    const int64_t gs = (int64_t)D * CPU_KG;
    for (int d = 0; d < D; d++) {
        __m512 kv[4];
#pragma GCC unroll 4
        for (int g = 0; g < NG; g++) kv[g] = _mm512_loadu_ps(Kp + g * gs + d * CPU_KG);
#pragma GCC unroll 6
        for (int r = 0; r < RR; r++) {
            __m512 qb = _mm512_set1_ps(qr[r][d]);
#pragma GCC unroll 4
            for (int g = 0; g < NG; g++) acc[r][g] = _mm512_fmadd_ps(qb, kv[g], acc[r][g]);
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < RR; r++)
#pragma GCC unroll 4
        for (int g = 0; g < NG; g++) _mm512_storeu_ps(S + r * CPU_KT + g * CPU_KG, acc[r][g]);
}

#define QK_NG(RR)                                                       \
    switch (ng) {                                                       \
    case 1: qk_blk(Q, ldq, rows, D, Kp, S, RR, 1); break;               \
    case 2: qk_blk(Q, ldq, rows, D, Kp, S, RR, 2); break;               \
    case 3: qk_blk(Q, ldq, rows, D, Kp, S, RR, 3); break;               \
    default: qk_blk(Q, ldq, rows, D, Kp, S, RR, 4); break;              \
    }

static void qk_avx512(const float *Q, int64_t ldq, const int *rows, int R, int D, const float *Kp, int ng, float *S) {
    KERN_ROWS6(R, rows, QK_NG, (Q += 6 * ldq, S += 6 * CPU_KT), (rows += 6, S += 6 * CPU_KT));
}

/* ---------------------------------------------------------------- PV ---- */
AI void pv_blk(float *O, const int *rows, int D, const float *alpha, const float *P, const float *V, int nk,
               const int RR, const int DV) {
    __m512 acc[6][4];
    float *orow[6];
#pragma GCC unroll 6
    for (int r = 0; r < RR; r++) {
        orow[r] = O + (rows ? rows[r] : r) * D;
        __m512 a = _mm512_set1_ps(alpha[r]);
#pragma GCC unroll 4
        for (int v = 0; v < DV; v++) acc[r][v] = _mm512_mul_ps(_mm512_loadu_ps(orow[r] + v * 16), a);
    }
    for (int n = 0; n < nk; n++) {
        __m512 vv[4];
#pragma GCC unroll 4
        for (int v = 0; v < DV; v++) vv[v] = _mm512_loadu_ps(V + (int64_t)n * D + v * 16);
#pragma GCC unroll 6
        for (int r = 0; r < RR; r++) {
            __m512 pb = _mm512_set1_ps(P[r * CPU_KT + n]);
#pragma GCC unroll 4
            for (int v = 0; v < DV; v++) acc[r][v] = _mm512_fmadd_ps(pb, vv[v], acc[r][v]);
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < RR; r++)
#pragma GCC unroll 4
        for (int v = 0; v < DV; v++) _mm512_storeu_ps(orow[r] + v * 16, acc[r][v]);
}

#define PV_DV(RR)                                                                \
    for (int d0 = 0; d0 < D; d0 += 64) {                                         \
        switch ((D - d0) >= 64 ? 4 : (D - d0) / 16) {                            \
        case 1: pv_blk(O + d0, rows, D, alpha, P, V + d0, nk, RR, 1); break;     \
        case 2: pv_blk(O + d0, rows, D, alpha, P, V + d0, nk, RR, 2); break;     \
        case 3: pv_blk(O + d0, rows, D, alpha, P, V + d0, nk, RR, 3); break;     \
        default: pv_blk(O + d0, rows, D, alpha, P, V + d0, nk, RR, 4); break;    \
        }                                                                        \
    }

static void pv_avx512(float *O, const int *rows, int R, int D, const float *alpha, const float *P, const float *V,
                      int nk) {
    KERN_ROWS6(R, rows, PV_DV, (O += 6 * D, P += 6 * CPU_KT, alpha += 6), (rows += 6, P += 6 * CPU_KT, alpha += 6));
}

/* ----------------------------------------------------------- softmax ---- */
static void softmax_avx512(const float *S, int R, int nk, const uint64_t *kmask, float sl2, float *m, float *l,
                           float *alpha, float *P) {
    (void)nk;
    const __m512 vs = _mm512_set1_ps(sl2);
    for (int r = 0; r < R; r++) {
        const float *s = S + (int64_t)r * CPU_KT;
        float *p = P + (int64_t)r * CPU_KT;
        uint64_t km = kmask[r];
        if (!km) {
            alpha[r] = 1.0f;
            for (int n = 0; n < CPU_KT; n += 16) _mm512_storeu_ps(p + n, _mm512_setzero_ps());
            continue;
        }
        __mmask16 k0 = (__mmask16)km, k1 = (__mmask16)(km >> 16), k2 = (__mmask16)(km >> 32),
                  k3 = (__mmask16)(km >> 48);
        const __m512 ninf = _mm512_set1_ps(-INFINITY);
        __m512 x0 = _mm512_mul_ps(_mm512_loadu_ps(s), vs), x1 = _mm512_mul_ps(_mm512_loadu_ps(s + 16), vs);
        __m512 x2 = _mm512_mul_ps(_mm512_loadu_ps(s + 32), vs), x3 = _mm512_mul_ps(_mm512_loadu_ps(s + 48), vs);
        __m512 y0 = _mm512_mask_mov_ps(ninf, k0, x0), y1 = _mm512_mask_mov_ps(ninf, k1, x1);
        __m512 y2 = _mm512_mask_mov_ps(ninf, k2, x2), y3 = _mm512_mask_mov_ps(ninf, k3, x3);
        float mn = kern_fmaxf(m[r], _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(y0, y1), _mm512_max_ps(y2, y3))));
        __m512 vm = _mm512_set1_ps(mn);
        x0 = _mm512_maskz_mov_ps(k0, exp2v(_mm512_sub_ps(x0, vm)));
        x1 = _mm512_maskz_mov_ps(k1, exp2v(_mm512_sub_ps(x1, vm)));
        x2 = _mm512_maskz_mov_ps(k2, exp2v(_mm512_sub_ps(x2, vm)));
        x3 = _mm512_maskz_mov_ps(k3, exp2v(_mm512_sub_ps(x3, vm)));
        _mm512_storeu_ps(p, x0);
        _mm512_storeu_ps(p + 16, x1);
        _mm512_storeu_ps(p + 32, x2);
        _mm512_storeu_ps(p + 48, x3);
        float sum_p = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(x0, x1), _mm512_add_ps(x2, x3)));
        /* alpha last: exp2f is a call, across which no vector or mask register survives (the row's four vectors
         * and masks were spilled around it) */
        float al = m[r] == -INFINITY ? 0.0f : (m[r] == mn ? 1.0f : exp2f(m[r] - mn));
        m[r] = mn;
        l[r] = l[r] * al + sum_p;
        alpha[r] = al;
    }
}

static void lse_avx512(const float *S, int R, int nk, const int *hi, float sl2, float *m, float *l) {
    const __m512 vs = _mm512_set1_ps(sl2);
    for (int r = 0; r < R; r++) {
        const float *s = S + (int64_t)r * CPU_KT;
        int b = hi[r] > nk ? nk : hi[r];
        if (b <= 0) continue;
        __m512 mx = _mm512_set1_ps(-INFINITY);
        for (int n = 0; n < b; n += 16) {
            __mmask16 k = range_mask(n, 0, b);
            mx = _mm512_mask_max_ps(mx, k, mx, _mm512_mul_ps(_mm512_loadu_ps(s + n), vs));
        }
        float mn = kern_fmaxf(m[r], _mm512_reduce_max_ps(mx));
        __m512 vm = _mm512_set1_ps(mn), sum = _mm512_setzero_ps();
        for (int n = 0; n < b; n += 16) {
            __mmask16 k = range_mask(n, 0, b);
            sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(k, exp2v(_mm512_fmsub_ps(_mm512_loadu_ps(s + n), vs, vm))));
        }
        const float sum_p = _mm512_reduce_add_ps(sum);
        const float al = m[r] == -INFINITY ? 0.0f : exp2f(m[r] - mn); /* after the vectors: a call */
        m[r] = mn;
        l[r] = l[r] * al + sum_p;
    }
}

/* f32 -> bf16 as infllm_f32_to_bf16 (nearest even, quiet NaN): the bf16 bits are the high
 * 16 bits of each lane of the result */
AI __m512i bf16_round_hi(__m512 x) {
    __m512i u = _mm512_castps_si512(x);
    __m512i abs = _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff));
    __mmask16 nan = _mm512_cmpgt_epu32_mask(abs, _mm512_set1_epi32(0x7f800000));
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i rnd = _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb);
    return _mm512_mask_or_epi32(rnd, nan, u, _mm512_set1_epi32(0x00400000));
}

/* x rounded to bf16, kept as f32 (infllm_round_to) */
AI __m512 round_bf16v(__m512 x) {
    return _mm512_castsi512_ps(_mm512_and_si512(bf16_round_hi(x), _mm512_set1_epi32((int)0xffff0000u)));
}

static void expsum_avx512(const float *S, int nt, int G, const int *hi, float sl2, const float *c, float *dst,
                          int64_t ldd, int ncols, int round_bf16) {
    const __m512 vs = _mm512_set1_ps(sl2);
    for (int t = 0; t < nt; t++) {
        float *d = dst + (int64_t)t * ldd;
        const float *s0 = S + (int64_t)t * G * CPU_KT;
        const int *h0 = hi + t * G;
        const float *c0 = c + t * G;
        for (int n = 0; n < ncols; n += 16) {
            __m512 acc = _mm512_maskz_mov_ps(range_mask(n, 0, h0[0]),
                                             exp2v(_mm512_fmsub_ps(_mm512_loadu_ps(s0 + n), vs, _mm512_set1_ps(c0[0]))));
            for (int h = 1; h < G; h++) {
                __m512 x = _mm512_fmsub_ps(_mm512_loadu_ps(s0 + (int64_t)h * CPU_KT + n), vs, _mm512_set1_ps(c0[h]));
                acc = _mm512_add_ps(acc, _mm512_maskz_mov_ps(range_mask(n, 0, h0[h]), exp2v(x)));
            }
            if (round_bf16) acc = round_bf16v(acc);
            _mm512_mask_storeu_ps(d + n, range_mask(n, 0, ncols), acc);
        }
    }
}

/* ------------------------------------------------------- conversions ---- */
static void load_avx512(float *dst, const void *src, infllm_dtype dt, int64_t n) {
    int64_t i = 0;
    if (dt == INFLLM_DTYPE_BF16) {
        const uint16_t *s = src;
        for (; i + 16 <= n; i += 16) {
            __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(s + i)));
            _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
        }
    } else if (dt == INFLLM_DTYPE_F16) {
        const uint16_t *s = src;
        for (; i + 16 <= n; i += 16)
            _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(s + i))));
    } else {
        memcpy(dst, src, (size_t)n * sizeof *dst);
        return;
    }
    for (; i < n; i++) dst[i] = infllm_load_f32(src, dt, i);
}

static void store_avx512(void *dst, infllm_dtype dt, const float *src, float mul, int64_t n) {
    int64_t i = 0;
    __m512 vm = _mm512_set1_ps(mul);
    if (dt == INFLLM_DTYPE_BF16) {
        uint16_t *d = dst;
        for (; i + 16 <= n; i += 16) {
            __m512i q = bf16_round_hi(_mm512_mul_ps(_mm512_loadu_ps(src + i), vm));
            _mm256_storeu_si256((__m256i *)(d + i), _mm512_cvtepi32_epi16(_mm512_srli_epi32(q, 16)));
        }
    } else if (dt == INFLLM_DTYPE_F32) {
        float *d = dst;
        for (; i + 16 <= n; i += 16) _mm512_storeu_ps(d + i, _mm512_mul_ps(_mm512_loadu_ps(src + i), vm));
    }
    for (; i < n; i++) infllm_store_f32(dst, dt, i, src[i] * mul);
}

const cpu_kern cpu_kern_avx512 = {"avx512", qk_avx512, softmax_avx512, pv_avx512, lse_avx512,
                                  expsum_avx512, load_avx512, store_avx512};
