/* kern_neon.c: Advanced SIMD (NEON) kernels of aarch64 (4 lanes; a 16-key group is four vectors), the same
 * contracts and the same structure as kern_avx2.c. NEON is part of every aarch64 CPU, so no run-time check
 * guards them (INFLLM_SIMD=scalar picks the portable kernels). Built on aarch64 only. */
#include <arm_neon.h>
#include <math.h>
#include <string.h>

#include "cpu_kern.h"
#include "dtype.h"

#define AI static inline __attribute__((always_inline))

/* 2^f for f in [-1/2, 1/2]: kern_avx2.c's exp2_frac8 on 4 lanes, the polynomial of both exps below */
AI float32x4_t exp2_frac4(float32x4_t f) {
    float32x4_t p = vdupq_n_f32(1.525273380405984e-05f);
    p = vfmaq_f32(vdupq_n_f32(1.540353039338160e-04f), p, f);
    p = vfmaq_f32(vdupq_n_f32(1.333355814642844e-03f), p, f);
    p = vfmaq_f32(vdupq_n_f32(9.618129107628477e-03f), p, f);
    p = vfmaq_f32(vdupq_n_f32(5.550410866482158e-02f), p, f);
    p = vfmaq_f32(vdupq_n_f32(2.402265069591007e-01f), p, f);
    p = vfmaq_f32(vdupq_n_f32(6.931471805599453e-01f), p, f);
    p = vfmaq_f32(vdupq_n_f32(1.0f), p, f);
    return p;
}

/* 2^t for t <= 128 (t < -126 gives a tiny normal instead of a subnormal; callers mask): kern_avx2.c's exp2v8
 * on 4 lanes, the same polynomial. A NaN t gives NaN (REF's exp): FMAX / FMIN return NaN when an operand is
 * NaN, and the exponent of a NaN converts to 0. */
AI float32x4_t exp2v4(float32x4_t t) {
    t = vmaxq_f32(vdupq_n_f32(-126.0f), t);
    t = vminq_f32(vdupq_n_f32(128.0f), t);
    const float32x4_t r = vrndnq_f32(t); /* nearest, ties to even */
    const float32x4_t f = vsubq_f32(t, r);
    const float32x4_t p = exp2_frac4(f);
    const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(r), vdupq_n_s32(127)), 23);
    return vmulq_f32(p, vreinterpretq_f32_s32(e));
}

/* 2^t for every t <= 128, subnormal results included: kern_avx2.c's exp2v8_sub on 4 lanes (stage 1's scores) */
AI float32x4_t exp2v4_sub(float32x4_t t) {
    t = vmaxq_f32(vdupq_n_f32(-160.0f), t);
    t = vminq_f32(vdupq_n_f32(128.0f), t);
    const float32x4_t r = vrndnq_f32(t);
    const float32x4_t f = vsubq_f32(t, r);
    const float32x4_t p = exp2_frac4(f);
    const int32x4_t ri = vcvtq_s32_f32(r), r1 = vshrq_n_s32(ri, 1), r2 = vsubq_s32(ri, r1);
    const int32x4_t e1 = vshlq_n_s32(vaddq_s32(r1, vdupq_n_s32(127)), 23);
    const int32x4_t e2 = vshlq_n_s32(vaddq_s32(r2, vdupq_n_s32(127)), 23);
    return vmulq_f32(vmulq_f32(p, vreinterpretq_f32_s32(e1)), vreinterpretq_f32_s32(e2));
}

/* lanes n0 .. n0 + 3 inside [a, b) */
AI uint32x4_t range_mask4(int n0, int a, int b) {
    static const int32_t lanes[4] = {0, 1, 2, 3};
    const int32x4_t idx = vaddq_s32(vdupq_n_s32(n0), vld1q_s32(lanes));
    return vandq_u32(vcgeq_s32(idx, vdupq_n_s32(a)), vcltq_s32(idx, vdupq_n_s32(b)));
}

/* lanes of a 4-bit mask as a vector mask */
AI uint32x4_t bits4(unsigned m) {
    static const uint32_t b[4] = {1, 2, 4, 8};
    return vtstq_u32(vdupq_n_u32(m), vld1q_u32(b));
}

AI float32x4_t and_f32(uint32x4_t k, float32x4_t x) { return vreinterpretq_f32_u32(vandq_u32(k, vreinterpretq_u32_f32(x))); }

/* the max / sum of 16 vectors in one fixed tree (then across lanes), so a row's result does not depend on
 * which of its columns are masked */
AI float32x4_t max16(const float32x4_t *y) {
    float32x4_t a[8];
    for (int i = 0; i < 8; i++) a[i] = vmaxq_f32(y[2 * i], y[2 * i + 1]);
    for (int i = 0; i < 4; i++) a[i] = vmaxq_f32(a[2 * i], a[2 * i + 1]);
    return vmaxq_f32(vmaxq_f32(a[0], a[1]), vmaxq_f32(a[2], a[3]));
}
AI float32x4_t sum16(const float32x4_t *y) {
    float32x4_t a[8];
    for (int i = 0; i < 8; i++) a[i] = vaddq_f32(y[2 * i], y[2 * i + 1]);
    for (int i = 0; i < 4; i++) a[i] = vaddq_f32(a[2 * i], a[2 * i + 1]);
    return vaddq_f32(vaddq_f32(a[0], a[1]), vaddq_f32(a[2], a[3]));
}

/* S rows r < RR (<= 4) of one 16-key group: 4 rows x 4 vectors of accumulators */
AI void qk_blk4(const float *Q, int64_t ldq, const int *rows, int D, const float *Kg, float *S, const int RR) {
    float32x4_t acc[4][4];
    const float *qr[4];
    for (int r = 0; r < RR; r++) qr[r] = Q + (rows ? rows[r] : r) * ldq;
    for (int r = 0; r < RR; r++) acc[r][0] = acc[r][1] = acc[r][2] = acc[r][3] = vdupq_n_f32(0.0f);
    for (int d = 0; d < D; d++) {
        const float *kd = Kg + d * CPU_KG;
        const float32x4_t k0 = vld1q_f32(kd), k1 = vld1q_f32(kd + 4), k2 = vld1q_f32(kd + 8), k3 = vld1q_f32(kd + 12);
        for (int r = 0; r < RR; r++) {
            const float q = qr[r][d];
            acc[r][0] = vfmaq_n_f32(acc[r][0], k0, q);
            acc[r][1] = vfmaq_n_f32(acc[r][1], k1, q);
            acc[r][2] = vfmaq_n_f32(acc[r][2], k2, q);
            acc[r][3] = vfmaq_n_f32(acc[r][3], k3, q);
        }
    }
    for (int r = 0; r < RR; r++)
        for (int j = 0; j < 4; j++) vst1q_f32(S + r * CPU_KT + 4 * j, acc[r][j]);
}

static void qk_neon(const float *Q, int64_t ldq, const int *rows, int R, int D, const float *Kp, int ng, float *S) {
    for (int g = 0; g < ng; g++) {
        const float *Kg = Kp + (int64_t)g * D * CPU_KG;
        int r = 0;
#define QB(RR) qk_blk4(rows ? Q : Q + r * ldq, ldq, rows ? rows + r : NULL, D, Kg, S + r * CPU_KT + g * CPU_KG, RR)
        for (; r + 4 <= R; r += 4) QB(4);
        switch (R - r) {
        case 1: QB(1); break;
        case 2: QB(2); break;
        case 3: QB(3); break;
        default: break;
        }
#undef QB
    }
}

/* 16 output columns of rows r < RR (<= 4): O = O alpha + P V */
AI void pv_blk4(float *O, const int *rows, int D, const float *alpha, const float *P, const float *V, int nk,
                const int RR) {
    float32x4_t acc[4][4];
    float *orow[4];
    for (int r = 0; r < RR; r++) {
        orow[r] = O + (rows ? rows[r] : r) * D;
        for (int j = 0; j < 4; j++) acc[r][j] = vmulq_n_f32(vld1q_f32(orow[r] + 4 * j), alpha[r]);
    }
    for (int n = 0; n < nk; n++) {
        const float *vn = V + (int64_t)n * D;
        const float32x4_t v0 = vld1q_f32(vn), v1 = vld1q_f32(vn + 4), v2 = vld1q_f32(vn + 8), v3 = vld1q_f32(vn + 12);
        for (int r = 0; r < RR; r++) {
            const float p = P[r * CPU_KT + n];
            acc[r][0] = vfmaq_n_f32(acc[r][0], v0, p);
            acc[r][1] = vfmaq_n_f32(acc[r][1], v1, p);
            acc[r][2] = vfmaq_n_f32(acc[r][2], v2, p);
            acc[r][3] = vfmaq_n_f32(acc[r][3], v3, p);
        }
    }
    for (int r = 0; r < RR; r++)
        for (int j = 0; j < 4; j++) vst1q_f32(orow[r] + 4 * j, acc[r][j]);
}

static void pv_neon(float *O, const int *rows, int R, int D, const float *alpha, const float *P, const float *V,
                    int nk) {
    for (int d0 = 0; d0 < D; d0 += 16) {
        int r = 0;
#define PB(RR) pv_blk4(rows ? O + d0 : O + r * D + d0, rows ? rows + r : NULL, D, alpha + r, P + r * CPU_KT, V + d0, nk, RR)
        for (; r + 4 <= R; r += 4) PB(4);
        switch (R - r) {
        case 1: PB(1); break;
        case 2: PB(2); break;
        case 3: PB(3); break;
        default: break;
        }
#undef PB
    }
}

static void softmax_neon(const float *S, int R, int nk, const uint64_t *kmask, float sl2, float *m, float *l,
                         float *alpha, float *P) {
    (void)nk;
    const float32x4_t ninf = vdupq_n_f32(-INFINITY);
    for (int r = 0; r < R; r++) {
        const float *s = S + (int64_t)r * CPU_KT;
        float *p = P + (int64_t)r * CPU_KT;
        const uint64_t km = kmask[r];
        if (!km) {
            alpha[r] = 1.0f;
            memset(p, 0, CPU_KT * sizeof *p);
            continue;
        }
        float32x4_t x[16], y[16];
        uint32x4_t k[16];
        for (int v = 0; v < 16; v++) {
            k[v] = bits4((unsigned)(km >> (4 * v)) & 0xfu);
            x[v] = vmulq_n_f32(vld1q_f32(s + 4 * v), sl2);
            y[v] = vbslq_f32(k[v], x[v], ninf);
        }
        const float mn = fmaxf(m[r], vmaxvq_f32(max16(y)));
        const float al = m[r] == -INFINITY ? 0.0f : (m[r] == mn ? 1.0f : exp2f(m[r] - mn));
        const float32x4_t vm = vdupq_n_f32(mn);
        for (int v = 0; v < 16; v++) {
            x[v] = and_f32(k[v], exp2v4(vsubq_f32(x[v], vm)));
            vst1q_f32(p + 4 * v, x[v]);
        }
        m[r] = mn;
        l[r] = l[r] * al + vaddvq_f32(sum16(x));
        alpha[r] = al;
    }
}

static void lse_neon(const float *S, int R, int nk, const int *hi, float sl2, float *m, float *l) {
    const float32x4_t vs = vdupq_n_f32(sl2), ninf = vdupq_n_f32(-INFINITY);
    for (int r = 0; r < R; r++) {
        const float *s = S + (int64_t)r * CPU_KT;
        const int b = hi[r] > nk ? nk : hi[r];
        if (b <= 0) continue;
        float32x4_t mx = ninf;
        for (int n = 0; n < b; n += 4)
            mx = vmaxq_f32(mx, vbslq_f32(range_mask4(n, 0, b), vmulq_f32(vld1q_f32(s + n), vs), ninf));
        const float mn = fmaxf(m[r], vmaxvq_f32(mx));
        const float al = m[r] == -INFINITY ? 0.0f : exp2f(m[r] - mn);
        const float32x4_t nvm = vdupq_n_f32(-mn);
        float32x4_t sum = vdupq_n_f32(0.0f);
        for (int n = 0; n < b; n += 4) /* s * sl2 - m with one rounding, as kern_avx2.c's fmsub */
            sum = vaddq_f32(sum, and_f32(range_mask4(n, 0, b), exp2v4(vfmaq_f32(nvm, vld1q_f32(s + n), vs))));
        m[r] = mn;
        l[r] = l[r] * al + vaddvq_f32(sum);
    }
}

static void expsum_neon(const float *S, int nt, int G, const int *hi, float sl2, const float *c, float *dst,
                        int64_t ldd, int ncols, int round_bf16) {
    const float32x4_t vs = vdupq_n_f32(sl2);
    float buf[4];
    for (int t = 0; t < nt; t++) {
        float *d = dst + (int64_t)t * ldd;
        for (int n = 0; n < ncols; n += 4) {
            float32x4_t acc = vdupq_n_f32(0.0f);
            for (int h = 0; h < G; h++) { /* heads added in order, as the reference */
                const int r = t * G + h;
                const float32x4_t x = vfmaq_f32(vdupq_n_f32(-c[r]), vld1q_f32(S + (int64_t)r * CPU_KT + n), vs);
                const float32x4_t p = and_f32(range_mask4(n, 0, hi[r]), exp2v4_sub(x));
                acc = h == 0 ? p : vaddq_f32(acc, p);
            }
            vst1q_f32(buf, acc);
            const int mcols = ncols - n < 4 ? ncols - n : 4;
            for (int i = 0; i < mcols; i++) d[n + i] = round_bf16 ? infllm_round_to(INFLLM_DTYPE_BF16, buf[i]) : buf[i];
        }
    }
}

static void load_neon(float *dst, const void *src, infllm_dtype dt, int64_t n) {
    int64_t i = 0;
    const uint16_t *s = src;
    if (dt == INFLLM_DTYPE_BF16) {
        for (; i + 4 <= n; i += 4) vst1q_f32(dst + i, vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(s + i), 16)));
    } else if (dt == INFLLM_DTYPE_F16) {
        for (; i + 4 <= n; i += 4) vst1q_f32(dst + i, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(s + i))));
    } else {
        memcpy(dst, src, (size_t)n * sizeof *dst);
        return;
    }
    for (; i < n; i++) dst[i] = infllm_load_f32(src, dt, i);
}

static void store_neon(void *dst, infllm_dtype dt, const float *src, float mul, int64_t n) {
    for (int64_t i = 0; i < n; i++) infllm_store_f32(dst, dt, i, src[i] * mul);
}

const cpu_kern cpu_kern_neon = {"neon", qk_neon, softmax_neon, pv_neon, lse_neon, expsum_neon, load_neon, store_neon};
