/* ggmlc.c: llama.cpp-compatible numerics, scalar path and dispatch (ggmlc.h). */
#include "ggmlc.h"

#include <math.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "mcommon.h"
#include "quant.h"

static int g_scalar = 0;
void ggmlc_force_scalar(int on) { g_scalar = on; }
/* 2: AVX-512 kernels (ggmlc_avx512.c), 1: AVX2 (ggmlc_avx2.c), 0: scalar; bitwise the same results */
static int simd_level(void) {
    if (g_scalar) return 0;
    return quant_avx512_available() ? 2 : quant_avx2_available() ? 1 : 0;
}

static float f16r(float v) { return mdl_f16_to_f32(mdl_f32_to_f16(v)); }

/* ggml_v_expf (vec.h, AVX-512 variant) one lane at a time: fmaf is the fused operation the
 * intrinsics use, ldexpf the exact scaling of _mm512_scalef_ps */
static float v_expf1(float x) {
    const float r = 0x1.8p23f;
    float z = fmaf(x, 0x1.715476p+0f, r);
    float nn = z - r;
    float b = fmaf(-nn, 0x1.7f7d1cp-20f, fmaf(-nn, 0x1.62e4p-1f, x));
    float u = b * b;
    float j = fmaf(fmaf(fmaf(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u, fmaf(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)), u,
                   fmaf(0x1.ffffecp-1f, b, 1.0f));
    if (fabsf(nn) > 192.f) return nn <= 0.f ? 0.f : INFINITY;
    return ldexpf(j, (int)nn);
}

void ggmlc_f32_to_f16(const float *src, uint16_t *dst, size_t n) {
    const int lv = simd_level();
    if (lv) {
        (lv == 2 ? ggmlc_f32_to_f16_avx512 : ggmlc_f32_to_f16_avx2)(src, dst, n);
        return;
    }
    for (size_t i = 0; i < n; i++) dst[i] = mdl_f32_to_f16(src[i]);
}
void ggmlc_f16_to_f32(const uint16_t *src, float *dst, size_t n) {
    const int lv = simd_level();
    if (lv) {
        (lv == 2 ? ggmlc_f16_to_f32_avx512 : ggmlc_f16_to_f32_avx2)(src, dst, n);
        return;
    }
    for (size_t i = 0; i < n; i++) dst[i] = mdl_f16_to_f32(src[i]);
}

float ggmlc_silu1(float x) { return x / (1.0f + v_expf1(0.0f - x)); }

void ggmlc_swiglu(float *g, const float *u, int64_t n) {
    int64_t i = 0, n16 = n / 16 * 16;
    const int lv = simd_level();
    if (lv) {
        (lv == 2 ? ggmlc_swiglu_avx512 : ggmlc_swiglu_avx2)(g, u, n16);
        i = n16;
    } else {
        for (; i < n16; i++) g[i] = ggmlc_silu1(g[i]) * u[i];
    }
    for (; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i]; /* ggml_silu_f32 tail */
}

/* _mm512_reduce_add_ps's order */
static float red16(const float *a) {
    float a8[8], a4[4];
    for (int l = 0; l < 8; l++) a8[l] = a[l] + a[l + 8];
    for (int l = 0; l < 4; l++) a4[l] = a8[l] + a8[l + 4];
    return (a4[0] + a4[2]) + (a4[1] + a4[3]);
}

/* ggml_vec_dot_f16 (AVX-512: 4 accumulators of 16 lanes over steps of 64, then (0+2) + (1+3),
 * the 16 lanes, the leftover products added in double): llama.cpp's f16 products of one token.
 * acc64[c] is the chain of elements c, c+64, ... (c < 64); returns the f32 result. */
static float vecdot_finish(const float *acc64, double tail) {
    float x[16];
    for (int l = 0; l < 16; l++) x[l] = (acc64[l] + acc64[32 + l]) + (acc64[16 + l] + acc64[48 + l]);
    return (float)((double)red16(x) + tail);
}

/* one query row against keys 0..L-1 (scalar). vecdot: the one-token path of llama.cpp
 * (ggml_vec_dot_f16 order), else the batch path (tinyBLAS: 16 lanes, one chain each). */
static void attn_row_scalar(const uint16_t *K, const uint16_t *V, int64_t ld, int64_t L, const float *q, int D,
                            float scale, float *out, float *sbuf, float *acc, int vecdot) {
    float qh[512];
    for (int d = 0; d < D; d++) qh[d] = f16r(q[d]);
    float mx = -INFINITY;
    const int np = D / 64 * 64;
    for (int64_t j = 0; j < L; j++) {
        const uint16_t *k = K + j * ld;
        float s;
        if (vecdot) {
            float a64[64] = {0};
            double tail = 0;
            for (int i = 0; i < np; i++) a64[i & 63] = fmaf(qh[i], mdl_f16_to_f32(k[i]), a64[i & 63]);
            for (int i = np; i < D; i++) tail += (double)(qh[i] * mdl_f16_to_f32(k[i]));
            s = vecdot_finish(a64, tail);
        } else {
            float lanes[16];
            for (int l = 0; l < 16; l++) {
                float a = qh[l] * mdl_f16_to_f32(k[l]);
                for (int i = 16 + l; i < D; i += 16) a = fmaf(qh[i], mdl_f16_to_f32(k[i]), a);
                lanes[l] = a;
            }
            s = red16(lanes);
        }
        s = s * scale;
        sbuf[j] = s;
        if (s > mx) mx = s;
    }
    double sum = 0;
    for (int64_t c = 0; c < L; c += 16) {
        float e[16];
        for (int l = 0; l < 16; l++) e[l] = c + l < L ? v_expf1(sbuf[c + l] - mx) : 0.f;
        for (int l = 0; l < 16 && c + l < L; l++) sbuf[c + l] = e[l];
        sum += (double)red16(e);
    }
    float sc = (float)(1.0 / sum);
    /* the keys run over llama.cpp's padded cache (a multiple of 256): zero products past L */
    const int nl = vecdot ? 64 : 16;
    for (int l = 0; l < nl * D; l++) acc[l] = 0.f;
    for (int64_t j = 0; j < L; j++) {
        float p = f16r(sbuf[j] * sc);
        const uint16_t *v = V + j * ld;
        float *a = acc + (j % nl) * D;
        for (int d = 0; d < D; d++) a[d] = fmaf(p, mdl_f16_to_f32(v[d]), a[d]);
    }
    for (int d = 0; d < D; d++) {
        float col[64];
        for (int l = 0; l < nl; l++) col[l] = acc[l * D + d];
        out[d] = vecdot ? vecdot_finish(col, 0.0) : red16(col);
    }
}

/* One-token decode with V transposed, in three phases that all threads share, whatever the KV-head count
 * (one task a KV head left 3 tasks for 2 threads with SmolLM2's 3 heads, 2 for 16 with MiniCPM4's 2):
 *   scores: (key chunk, KV head) tasks, chunk-major, so a thread's keys are one contiguous run of the cache;
 *   softmax: one task a query row (max, exp, the sum in order, f16 probabilities);
 *   P.V: (KV head, 16 dims) tasks over the transposed V.
 * Each piece computes what the one-task-a-head block kernel computes on its range (each score, each row's
 * sum in key order, each output's chains), so the bits depend neither on the split nor on the threads. */
static int attn_decode(int simd, const uint16_t *K, const uint16_t *VT, int64_t vcap, int64_t nkv, const float *q,
                       int Hq, int Hkv, int D, float scale, float *out, int nthreads) {
    const int64_t ld = (int64_t)Hkv * D, gq = Hq / Hkv;
    const int64_t L16 = (nkv + 15) / 16 * 16, LP = (nkv + 63) / 64 * 64, ls = LP + 16;
    enum { CHUNK = 256 }; /* keys per scores task: 96 KB of SmolLM2's cache rows, a few L2-sized runs */
    const int64_t nch = (L16 + CHUNK - 1) / CHUNK, ndg = D / 16;
    const size_t per_sc = (size_t)gq * ((size_t)D + 256), per_pv = (size_t)ls + (size_t)gq * 16 * (size_t)D;
    const size_t per = per_sc > per_pv ? per_sc : per_pv;
    int nt = 1;
#ifdef _OPENMP
    nt = nthreads > 0 ? nthreads : omp_get_max_threads();
#endif
    (void)nthreads;
    float *sb = malloc(sizeof(float) * ((size_t)Hq * (size_t)ls + per * (size_t)nt)); /* [Hq][ls], then work */
    int64_t *Ls = malloc(sizeof(int64_t) * (size_t)gq);                              /* each row's keys: nkv */
    float **orows = malloc(sizeof(float *) * (size_t)Hq);
    if (!sb || !Ls || !orows) {
        free(sb);
        free(Ls);
        free(orows);
        return -1;
    }
    for (int64_t r = 0; r < gq; r++) Ls[r] = nkv;
    for (int64_t h = 0; h < Hq; h++) orows[h] = out + h * D;
    float *work = sb + (size_t)Hq * (size_t)ls;
#pragma omp parallel num_threads(nt)
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        float *wk = work + per * (size_t)tid;
#pragma omp for schedule(static)
        for (int64_t task = 0; task < nch * Hkv; task++) {
            const int64_t c = task / Hkv, g = task % Hkv, jb = c * CHUNK, je = jb + CHUNK < L16 ? jb + CHUNK : L16;
            (simd == 2 ? ggmlc_dec_scores_avx512 : ggmlc_dec_scores_avx2)(K + g * D, ld, Ls, (int)gq, q + g * gq * D, D,
                                                                            scale, jb, je, sb + g * gq * ls, ls, wk);
        }
#pragma omp for schedule(static)
        for (int64_t r = 0; r < Hq; r++)
            (simd == 2 ? ggmlc_dec_softmax_avx512 : ggmlc_dec_softmax_avx2)(sb + r * ls, L16, LP);
#pragma omp for schedule(static)
        for (int64_t task = 0; task < Hkv * ndg; task++) {
            const int64_t g = task / ndg, d0 = task % ndg * 16;
            (simd == 2 ? ggmlc_dec_pv_avx512 : ggmlc_dec_pv_avx2)(VT + g * D * vcap, vcap, D, (int)gq, sb + g * gq * ls, ls,
                                                                    LP, (int)d0, (int)d0 + 16, orows + g * gq, wk);
        }
    }
    free(orows);
    free(Ls);
    free(sb);
    return 0;
}

int ggmlc_attn_f16(const uint16_t *K, const uint16_t *V, const uint16_t *VT, int64_t vcap, int64_t nkv,
                   const float *q, int64_t n, int Hq, int Hkv, int D, float scale, float *out, int nthreads) {
    if (D % 16 || D > 512 || Hq % Hkv || n > nkv || (VT && (vcap % 64 || vcap < nkv))) return -1;
    const int simd = simd_level();
    const int64_t ld = (int64_t)Hkv * D, gq = Hq / Hkv;
    const int vecdot = n == 1; /* llama.cpp: one-token batches take ggml_vec_dot_f16, others tinyBLAS */
    if (simd && vecdot && VT && (D == 64 || D == 128)) /* one token: split over all threads */
        return attn_decode(simd, K, VT, vcap, nkv, q, Hq, Hkv, D, scale, out, nthreads);
    /* blocks of rows sharing each K/V row: the gq heads of a group x tb tokens */
    const int blocked = simd && D <= 128 && gq <= GGMLC_RB && (!vecdot || D % 64 == 0);
    const int64_t tb = blocked ? GGMLC_RB / gq : 1;
    const int64_t ntb = (n + tb - 1) / tb, tasks = blocked ? ntb * Hkv : n * Hq;
    int nt = 1;
#ifdef _OPENMP
    nt = nthreads > 0 ? nthreads : omp_get_max_threads();
    if (tasks < 2) nt = 1;
#endif
    const int64_t ls = (nkv + 63) / 64 * 64 + 16;
    size_t per = blocked ? (size_t)GGMLC_RB * ((size_t)D + 256 + (size_t)ls + 64 * (size_t)D) + (size_t)ls
                         : (size_t)ls + 64 * (size_t)D;
    float *work = malloc(sizeof(float) * per * (size_t)nt);
    if (!work) return -1;
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; task++) {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        float *wk = work + per * (size_t)tid;
        if (blocked) {
            int64_t b = task / Hkv, t0 = b * tb, t1 = t0 + tb < n ? t0 + tb : n;
            int g = (int)(task % Hkv), R = 0;
            int64_t L[GGMLC_RB];
            const float *qr[GGMLC_RB];
            float *orow[GGMLC_RB];
            for (int64_t t = t0; t < t1; t++)
                for (int64_t hh = 0; hh < gq; hh++, R++) {
                    int64_t h = g * gq + hh;
                    L[R] = nkv - n + t + 1;
                    qr[R] = q + (t * Hq + h) * D;
                    orow[R] = out + (t * Hq + h) * D;
                }
            /* transposed V for decode (sequential instead of 64-row strides); batches read V rows */
            (simd == 2 ? ggmlc_attn_block_avx512 : ggmlc_attn_block_avx2)(
                K + (int64_t)g * D, V + (int64_t)g * D, VT && vecdot ? VT + (int64_t)g * D * vcap : NULL, vcap, ld,
                L, R, qr, D, scale, orow, wk, vecdot);
            continue;
        }
        float *sbuf = wk, *acc = sbuf + ls;
        int64_t t = task / Hq;
        int h = (int)(task % Hq), g = (int)(h / gq);
        int64_t L = nkv - n + t + 1;
        const float *qr = q + task * D;
        float *o = out + task * D;
        if (simd && (!vecdot || D % 64 == 0))
            (simd == 2 ? ggmlc_attn_row_avx512 : ggmlc_attn_row_avx2)(K + (int64_t)g * D, V + (int64_t)g * D, ld, L, qr,
                                                                       D, scale, o, sbuf, acc, vecdot);
        else
            attn_row_scalar(K + (int64_t)g * D, V + (int64_t)g * D, ld, L, qr, D, scale, o, sbuf, acc, vecdot);
    }
    free(work);
    return 0;
}
