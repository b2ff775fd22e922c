/* kern_avx2.c: AVX2 + FMA kernels (8 lanes; a 16-key group is two vectors). */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "cpu_kern.h"
#include "dtype.h"
#include "kern_rows6.h"

#define AI static inline __attribute__((always_inline))

/* 2^f for f in [-1/2, 1/2] (the fraction after rounding): the degree-7 polynomial of both exps below */
AI __m256 exp2_frac8(__m256 f) {
    __m256 p = _mm256_set1_ps(1.525273380405984e-05f);
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.540353039338160e-04f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.333355814642844e-03f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.618129107628477e-03f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.550410866482158e-02f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.402265069591007e-01f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.931471805599453e-01f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
    return p;
}

/* 2^t for t <= 128 (t < -126 gives a tiny normal instead of a subnormal; callers mask). A NaN t gives NaN
 * (REF's exp): the clamps name the constant first, since max_ps / min_ps return their second operand when
 * either is NaN (the same results for every other t). */
AI __m256 exp2v8(__m256 t) {
    t = _mm256_max_ps(_mm256_set1_ps(-126.0f), t);
    t = _mm256_min_ps(_mm256_set1_ps(128.0f), t);
    __m256 r = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 f = _mm256_sub_ps(t, r);
    __m256 p = exp2_frac8(f);
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(r), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* 2^t for every t <= 128, subnormal results included (stage 1's scores: a product that underflows must be the
 * subnormal or the 0 REF has, not exp2v8's 2^-126, which ranked blocks REF scores 0 above their lower-index ties).
 * The scale goes on in two steps, 2^(r >> 1) then 2^(r - (r >> 1)), each a normal number for r in [-160, 128]: the
 * first product is exact, so the one rounding is the last's (t < -160 gives 0; where exp2v8's result is normal the
 * two are bitwise equal). NaN as exp2v8. */
AI __m256 exp2v8_sub(__m256 t) {
    t = _mm256_max_ps(_mm256_set1_ps(-160.0f), t);
    t = _mm256_min_ps(_mm256_set1_ps(128.0f), t);
    __m256 r = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 f = _mm256_sub_ps(t, r);
    __m256 p = exp2_frac8(f);
    const __m256i ri = _mm256_cvtps_epi32(r), r1 = _mm256_srai_epi32(ri, 1), r2 = _mm256_sub_epi32(ri, r1);
    const __m256i bias = _mm256_set1_epi32(127);
    __m256 e1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(r1, bias), 23));
    __m256 e2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(r2, bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, e1), e2);
}

AI __m256 range_mask8(int n0, int a, int b) {
    __m256i idx = _mm256_add_epi32(_mm256_set1_epi32(n0), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m256i ge = _mm256_cmpgt_epi32(idx, _mm256_set1_epi32(a - 1));
    __m256i lt = _mm256_cmpgt_epi32(_mm256_set1_epi32(b), idx);
    return _mm256_castsi256_ps(_mm256_and_si256(ge, lt));
}

AI float hmax8(__m256 v) {
    __m128 x = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_max_ps(x, _mm_movehl_ps(x, x));
    x = _mm_max_ss(x, _mm_shuffle_ps(x, x, 1));
    return _mm_cvtss_f32(x);
}
AI float hsum8(__m256 v) {
    __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    x = _mm_add_ss(x, _mm_shuffle_ps(x, x, 1));
    return _mm_cvtss_f32(x);
}

/* Register tiles of RR <= 6 rows x 16 columns: 12 accumulators, two loaded vectors and one broadcast fill 15 of
 * AVX2's 16 registers (the 6 x 16 shape of BLAS's Haswell kernels), so that two FMA pipes of 4-5 cycles' latency
 * have 12 independent chains. Each output element is the same chain of FMAs over d (QK) or n (PV), in the same
 * order, whatever the row blocking. */
AI void qk_blk8(const float *Q, int64_t ldq, const int *rows, int D, const float *Kg, float *S, const int RR) {
    __m256 acc[6][2];
    const float *qr[6];
#pragma GCC unroll 6
    for (int r = 0; r < RR; r++) qr[r] = Q + (rows ? rows[r] : r) * ldq;
#pragma GCC unroll 6
    for (int r = 0; r < RR; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (int d = 0; d < D; d++) {
        __m256 k0 = _mm256_loadu_ps(Kg + d * CPU_KG), k1 = _mm256_loadu_ps(Kg + d * CPU_KG + 8);
#pragma GCC unroll 6
        for (int r = 0; r < RR; r++) {
            __m256 qb = _mm256_broadcast_ss(qr[r] + d);
            acc[r][0] = _mm256_fmadd_ps(qb, k0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(qb, k1, acc[r][1]);
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < RR; r++) {
        _mm256_storeu_ps(S + r * CPU_KT, acc[r][0]);
        _mm256_storeu_ps(S + r * CPU_KT + 8, acc[r][1]);
    }
}

#define QK_GROUPS(RR)                                                                                                \
    for (int g = 0; g < ng; g++) qk_blk8(Q, ldq, rows, D, Kp + (int64_t)g * D * CPU_KG, S + g * CPU_KG, RR)

static void qk_avx2(const float *Q, int64_t ldq, const int *rows, int R, int D, const float *Kp, int ng, float *S) {
    KERN_ROWS6(R, rows, QK_GROUPS, (Q += 6 * ldq, S += 6 * CPU_KT), (rows += 6, S += 6 * CPU_KT));
}

AI void pv_blk8(float *O, const int *rows, int D, const float *alpha, const float *P, const float *V, int nk,
                const int RR) {
    __m256 acc[6][2];
    float *orow[6];
#pragma GCC unroll 6
    for (int r = 0; r < RR; r++) {
        orow[r] = O + (rows ? rows[r] : r) * D;
        __m256 a = _mm256_set1_ps(alpha[r]);
        acc[r][0] = _mm256_mul_ps(_mm256_loadu_ps(orow[r]), a);
        acc[r][1] = _mm256_mul_ps(_mm256_loadu_ps(orow[r] + 8), a);
    }
    for (int n = 0; n < nk; n++) {
        __m256 v0 = _mm256_loadu_ps(V + (int64_t)n * D), v1 = _mm256_loadu_ps(V + (int64_t)n * D + 8);
#pragma GCC unroll 6
        for (int r = 0; r < RR; r++) {
            __m256 pb = _mm256_broadcast_ss(P + r * CPU_KT + n);
            acc[r][0] = _mm256_fmadd_ps(pb, v0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(pb, v1, acc[r][1]);
        }
    }
#pragma GCC unroll 6
    for (int r = 0; r < RR; r++) {
        _mm256_storeu_ps(orow[r], acc[r][0]);
        _mm256_storeu_ps(orow[r] + 8, acc[r][1]);
    }
}

#define PV_DIMS(RR)                                                                                                  \
    for (int d0 = 0; d0 < D; d0 += 16) pv_blk8(O + d0, rows, D, alpha, P, V + d0, nk, RR)

static void pv_avx2(float *O, const int *rows, int R, int D, const float *alpha, const float *P, const float *V,
                    int nk) {
    KERN_ROWS6(R, rows, PV_DIMS, (O += 6 * D, P += 6 * CPU_KT, alpha += 6), (rows += 6, P += 6 * CPU_KT, alpha += 6));
}

/* lanes of an 8-bit mask as a vector mask */
AI __m256 bits8(unsigned m) {
    __m256i b = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    __m256i v = _mm256_and_si256(_mm256_set1_epi32((int)m), b);
    return _mm256_castsi256_ps(_mm256_cmpeq_epi32(v, b));
}

/* One row's masked maximum (the tree of the eight 8-column vectors, in this order: NaN handling depends on it) and,
 * given the new maximum, its P columns and their sum. x = S * sl2 is recomputed in the second pass (the same
 * product, so the same bits) rather than held: 8 vectors and their 8 masks would not fit AVX2's 16 registers beside
 * the exp's constants. FULL: every column valid (the masks are all ones; the blend and the and are identities). */
AI __m256 sm_x(const float *s, int v, __m256 vs) { return _mm256_mul_ps(_mm256_loadu_ps(s + 8 * v), vs); }
AI __m256 sm_y(const float *s, int v, __m256 vs, uint64_t km, const int FULL) {
    __m256 x = sm_x(s, v, vs);
    return FULL ? x : _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), x, bits8((unsigned)(km >> (8 * v)) & 0xffu));
}
AI __m256 sm_p(const float *s, int v, __m256 vs, __m256 vm, uint64_t km, const int FULL) {
    __m256 e = exp2v8(_mm256_sub_ps(sm_x(s, v, vs), vm));
    return FULL ? e : _mm256_and_ps(bits8((unsigned)(km >> (8 * v)) & 0xffu), e);
}
AI void softmax_row8(const float *s, float *p, uint64_t km, __m256 vs, float *m, float *l, float *alpha,
                     const int FULL) {
    __m256 mx = _mm256_max_ps(_mm256_max_ps(_mm256_max_ps(sm_y(s, 0, vs, km, FULL), sm_y(s, 1, vs, km, FULL)),
                                            _mm256_max_ps(sm_y(s, 2, vs, km, FULL), sm_y(s, 3, vs, km, FULL))),
                              _mm256_max_ps(_mm256_max_ps(sm_y(s, 4, vs, km, FULL), sm_y(s, 5, vs, km, FULL)),
                                            _mm256_max_ps(sm_y(s, 6, vs, km, FULL), sm_y(s, 7, vs, km, FULL))));
    float mn = kern_fmaxf(*m, hmax8(mx));
    /* opaque to the optimiser, so that the second pass recomputes x and the masks instead of keeping pass 1's */
    __asm__("" : "+r"(km), "+x"(vs));
    __m256 vm = _mm256_set1_ps(mn), e[8];
#pragma GCC unroll 8
    for (int v = 0; v < 8; v++) {
        e[v] = sm_p(s, v, vs, vm, km, FULL);
        _mm256_storeu_ps(p + 8 * v, e[v]);
    }
    /* the tree ((e0 + e1) + (e2 + e3)) + ((e4 + e5) + (e6 + e7)) */
    __m256 e0123 = _mm256_add_ps(_mm256_add_ps(e[0], e[1]), _mm256_add_ps(e[2], e[3]));
    __m256 e4567 = _mm256_add_ps(_mm256_add_ps(e[4], e[5]), _mm256_add_ps(e[6], e[7]));
    float sum_p = hsum8(_mm256_add_ps(e0123, e4567));
    /* alpha last: exp2f is a call, across which no vector register survives */
    float al = *m == -INFINITY ? 0.0f : (*m == mn ? 1.0f : exp2f(*m - mn));
    *m = mn;
    *l = *l * al + sum_p;
    *alpha = al;
}

static void softmax_avx2(const float *S, int R, int nk, const uint64_t *kmask, float sl2, float *m, float *l,
                         float *alpha, float *P) {
    (void)nk;
    const __m256 vs = _mm256_set1_ps(sl2);
    for (int r = 0; r < R; r++) {
        const float *s = S + (int64_t)r * CPU_KT;
        float *p = P + (int64_t)r * CPU_KT;
        uint64_t km = kmask[r];
        if (!km) {
            alpha[r] = 1.0f;
            for (int n = 0; n < CPU_KT; n += 8) _mm256_storeu_ps(p + n, _mm256_setzero_ps());
        } else if (km == ~(uint64_t)0) {
            softmax_row8(s, p, km, vs, m + r, l + r, alpha + r, 1);
        } else {
            softmax_row8(s, p, km, vs, m + r, l + r, alpha + r, 0);
        }
    }
}

static void lse_avx2(const float *S, int R, int nk, const int *hi, float sl2, float *m, float *l) {
    const __m256 vs = _mm256_set1_ps(sl2), ninf = _mm256_set1_ps(-INFINITY);
    for (int r = 0; r < R; r++) {
        const float *s = S + (int64_t)r * CPU_KT;
        int b = hi[r] > nk ? nk : hi[r];
        if (b <= 0) continue;
        __m256 mx = ninf;
        for (int n = 0; n < b; n += 8) {
            __m256 k = range_mask8(n, 0, b);
            mx = _mm256_max_ps(mx, _mm256_blendv_ps(ninf, _mm256_mul_ps(_mm256_loadu_ps(s + n), vs), k));
        }
        float mn = kern_fmaxf(m[r], hmax8(mx));
        float al = m[r] == -INFINITY ? 0.0f : exp2f(m[r] - mn);
        __m256 vm = _mm256_set1_ps(mn), sum = _mm256_setzero_ps();
        for (int n = 0; n < b; n += 8) {
            __m256 k = range_mask8(n, 0, b);
            sum = _mm256_add_ps(sum, _mm256_and_ps(k, exp2v8(_mm256_fmsub_ps(_mm256_loadu_ps(s + n), vs, vm))));
        }
        m[r] = mn;
        l[r] = l[r] * al + hsum8(sum);
    }
}

static void expsum_avx2(const float *S, int nt, int G, const int *hi, float sl2, const float *c, float *dst,
                       int64_t ldd, int ncols, int round_bf16) {
    const __m256 vs = _mm256_set1_ps(sl2);
    float buf[8];
    for (int t = 0; t < nt; t++) {
        float *d = dst + (int64_t)t * ldd;
        for (int n = 0; n < ncols; n += 8) {
            __m256 acc = _mm256_setzero_ps();
            for (int h = 0; h < G; h++) {
                int r = t * G + h;
                __m256 x = _mm256_fmsub_ps(_mm256_loadu_ps(S + (int64_t)r * CPU_KT + n), vs, _mm256_set1_ps(c[r]));
                __m256 p = _mm256_and_ps(range_mask8(n, 0, hi[r]), exp2v8_sub(x));
                acc = h == 0 ? p : _mm256_add_ps(acc, p);
            }
            _mm256_storeu_ps(buf, acc);
            int m = ncols - n < 8 ? ncols - n : 8;
            for (int i = 0; i < m; i++) d[n + i] = round_bf16 ? infllm_round_to(INFLLM_DTYPE_BF16, buf[i]) : buf[i];
        }
    }
}

static void load_avx2(float *dst, const void *src, infllm_dtype dt, int64_t n) {
    int64_t i = 0;
    if (dt == INFLLM_DTYPE_BF16) {
        const uint16_t *s = src;
        for (; i + 8 <= n; i += 8) {
            __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(s + i)));
            _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
        }
    } else if (dt == INFLLM_DTYPE_F16) {
        const uint16_t *s = src;
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i))));
    } else {
        memcpy(dst, src, (size_t)n * sizeof *dst);
        return;
    }
    for (; i < n; i++) dst[i] = infllm_load_f32(src, dt, i);
}

static void store_avx2(void *dst, infllm_dtype dt, const float *src, float mul, int64_t n) {
    for (int64_t i = 0; i < n; i++) infllm_store_f32(dst, dt, i, src[i] * mul);
}

const cpu_kern cpu_kern_avx2 = {"avx2", qk_avx2, softmax_avx2, pv_avx2, lse_avx2, expsum_avx2, load_avx2, store_avx2};
