/* kern_scalar.c: the portable f32 kernels (reference for the SIMD versions, same contracts). */
#include <math.h>
#include <string.h>

#include "cpu_kern.h"
#include "dtype.h"

static void qk_scalar(const float *Q, int64_t ldq, const int *rows, int R, int D, const float *Kp, int ng, float *S) {
    for (int r = 0; r < R; r++) {
        const float *q = Q + (rows ? rows[r] : r) * ldq;
        for (int g = 0; g < ng; g++) {
            float acc[CPU_KG] = {0};
            const float *kg = Kp + (int64_t)g * D * CPU_KG;
            for (int d = 0; d < D; d++)
                for (int n = 0; n < CPU_KG; n++) acc[n] += q[d] * kg[d * CPU_KG + n];
            memcpy(S + (int64_t)r * CPU_KT + g * CPU_KG, acc, sizeof acc);
        }
    }
}

static void softmax_scalar(const float *S, int R, int nk, const uint64_t *kmask, float sl2, float *m, float *l,
                           float *alpha, float *P) {
    (void)nk;
    for (int r = 0; r < R; r++) {
        const float *s = S + (int64_t)r * CPU_KT;
        float *p = P + (int64_t)r * CPU_KT;
        uint64_t km = kmask[r];
        if (!km) {
            alpha[r] = 1.0f;
            memset(p, 0, CPU_KT * sizeof *p);
            continue;
        }
        float mx = -INFINITY;
        for (int n = 0; n < CPU_KT; n++)
            if ((km >> n) & 1) mx = fmaxf(mx, s[n] * sl2);
        float mn = fmaxf(m[r], mx);
        float al = m[r] == -INFINITY ? 0.0f : exp2f(m[r] - mn);
        float sum = 0.0f;
        for (int n = 0; n < CPU_KT; n++) { /* index order: the sum does not depend on nk */
            float e = ((km >> n) & 1) ? exp2f(s[n] * sl2 - mn) : 0.0f;
            p[n] = e;
            sum += e;
        }
        m[r] = mn;
        l[r] = l[r] * al + sum;
        alpha[r] = al;
    }
}

static void pv_scalar(float *O, const int *rows, int R, int D, const float *alpha, const float *P, const float *V,
                      int nk) {
    for (int r = 0; r < R; r++) {
        float *o = O + (int64_t)(rows ? rows[r] : r) * D;
        const float *p = P + (int64_t)r * CPU_KT;
        for (int d = 0; d < D; d++) o[d] *= alpha[r];
        for (int n = 0; n < nk; n++) {
            float pn = p[n];
            const float *vn = V + (int64_t)n * D;
            for (int d = 0; d < D; d++) o[d] += pn * vn[d];
        }
    }
}

static void lse_scalar(const float *S, int R, int nk, const int *hi, float sl2, float *m, float *l) {
    for (int r = 0; r < R; r++) {
        const float *s = S + (int64_t)r * CPU_KT;
        int b = hi[r] > nk ? nk : hi[r];
        if (b <= 0) continue;
        float mx = -INFINITY;
        for (int n = 0; n < b; n++) mx = fmaxf(mx, s[n] * sl2);
        float mn = fmaxf(m[r], mx);
        float al = m[r] == -INFINITY ? 0.0f : exp2f(m[r] - mn);
        float sum = 0.0f;
        for (int n = 0; n < b; n++) sum += exp2f(s[n] * sl2 - mn);
        m[r] = mn;
        l[r] = l[r] * al + sum;
    }
}

static void expsum_scalar(const float *S, int nt, int G, const int *hi, float sl2, const float *c, float *dst,
                         int64_t ldd, int ncols, int round_bf16) {
    for (int t = 0; t < nt; t++)
        for (int n = 0; n < ncols; n++) {
            float sum = 0.0f;
            for (int h = 0; h < G; h++) {
                int r = t * G + h;
                float p = n < hi[r] ? exp2f(S[(int64_t)r * CPU_KT + n] * sl2 - c[r]) : 0.0f;
                sum = h == 0 ? p : sum + p;
            }
            dst[(int64_t)t * ldd + n] = round_bf16 ? infllm_round_to(INFLLM_DTYPE_BF16, sum) : sum;
        }
}

static void load_scalar(float *dst, const void *src, infllm_dtype dt, int64_t n) {
    if (dt == INFLLM_DTYPE_F32) {
        memcpy(dst, src, (size_t)n * sizeof *dst);
        return;
    }
    for (int64_t i = 0; i < n; i++) dst[i] = infllm_load_f32(src, dt, i);
}

static void store_scalar(void *dst, infllm_dtype dt, const float *src, float mul, int64_t n) {
    for (int64_t i = 0; i < n; i++) infllm_store_f32(dst, dt, i, src[i] * mul);
}

const cpu_kern cpu_kern_scalar = {"scalar", qk_scalar, softmax_scalar, pv_scalar, lse_scalar,
                                  expsum_scalar, load_scalar, store_scalar};
