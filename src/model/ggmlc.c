/* ggmlc.c: llama.cpp-compatible numerics, scalar path and dispatch (ggmlc.h). */
#include "ggmlc.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
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

/* The llama.cpp build whose arithmetic to compute: 16 lanes (its AVX-512 build) or 8 (its AVX2 build; ggmlc.h). */
static atomic_int g_order = 0; /* set by ggmlc_set_order; 0: INFLLM_LLAMA_ORDER, else the CPU's level */
void ggmlc_set_order(int order) {
    atomic_store(&g_order, order == GGMLC_ORDER_AVX2 || order == GGMLC_ORDER_AVX512 ? order : 0);
}
int ggmlc_order(void) {
    const int set = atomic_load(&g_order);
    if (set) return set;
    static atomic_int env = -1; /* INFLLM_LLAMA_ORDER, read once: 0 when unset (or another value) */
    int e = atomic_load(&env);
    if (e < 0) {
        const char *v = getenv("INFLLM_LLAMA_ORDER");
        e = v && !strcmp(v, "avx512") ? GGMLC_ORDER_AVX512 : v && !strcmp(v, "avx2") ? GGMLC_ORDER_AVX2 : 0;
        atomic_store(&env, e);
    }
    if (e) return e;
    /* as llama.cpp's native build on this CPU (INFLLM_SIMD lowers it, as it lowers the kernels): AVX-512 machines
     * 16 lanes, AVX2 machines 8; others (aarch64, old x86) keep the AVX-512 order, one fixed choice */
    return quant_avx512_available() ? GGMLC_ORDER_AVX512 : quant_avx2_available() ? GGMLC_ORDER_AVX2 : GGMLC_ORDER_AVX512;
}

static float f16r(float v) { return mdl_f16_to_f32(mdl_f32_to_f16(v)); }
static uint32_t f32_bits(float v) {
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    return u;
}
static float bits_f32(uint32_t u) {
    float v;
    memcpy(&v, &u, sizeof v);
    return v;
}

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

/* ggml_v_expf (vec.h, __m256 variant: llama.cpp's AVX2 builds) one lane at a time: k = 2^n from z's bits, the
 * result fma(k, j, k); |n| > 126 scales by s2 (bits) and s1 = 2^127 or 2^-125, |n| > 192 gives s1 * s1 */
static float v_expf1_l8(float x) {
    const float r = 0x1.8p23f;
    const float z = fmaf(x, 0x1.715476p+0f, r);
    const float nn = z - r;
    const float b = fmaf(-nn, 0x1.7f7d1cp-20f, fmaf(-nn, 0x1.62e4p-1f, x));
    const uint32_t e = f32_bits(z) << 23;
    const float k = bits_f32(e + 0x3f800000u);
    const float u = b * b;
    const float b1 = 0x1.ffffecp-1f * b; /* its own statement: never contracted into the fma below */
    const float j = fmaf(fmaf(fmaf(0x1.0e4020p-7f, b, 0x1.573e2ep-5f), u, fmaf(0x1.555e66p-3f, b, 0x1.fffdb6p-2f)), u, b1);
    const float an = fabsf(nn);
    if (!(an > 126.f)) return fmaf(k, j, k);
    const uint32_t g = nn <= 0.f ? 0x82000000u : 0u;
    const float s1 = bits_f32(g + 0x7f000000u), s2 = bits_f32(e - g);
    if (an > 192.f) return s1 * s1;
    return fmaf(s2, j, s2) * s1;
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
float ggmlc_expf1(float x) { return v_expf1(x); }
float ggmlc_expf1_l8(float x) { return v_expf1_l8(x); }

void ggmlc_swiglu(float *g, const float *u, int64_t n) {
    const int lv = simd_level(), W = ggmlc_order();
    int64_t i = 0, nw = n / W * W; /* ggml_vec_swiglu_f32: W lanes at a time, then ggml_silu_f32 one at a time */
    if (W == GGMLC_ORDER_AVX2 && lv) {
        ggmlc_swiglu_l8_avx2(g, u, nw);
        i = nw;
    } else if (W == GGMLC_ORDER_AVX2) {
        for (; i < nw; i++) g[i] = g[i] / (1.0f + v_expf1_l8(0.0f - g[i])) * u[i];
    } else if (lv) {
        (lv == 2 ? ggmlc_swiglu_avx512 : ggmlc_swiglu_avx2)(g, u, nw);
        i = nw;
    } else {
        for (; i < nw; i++) g[i] = ggmlc_silu1(g[i]) * u[i];
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
/* 8 lanes: tinyBLAS's hsum(__m256) (also ggml_vec_soft_max_f32's AVX2 sum): (l + 4), then (0 + 2) + (1 + 3); or
 * (hadd) GGML_F32x8_REDUCE's two hadds after (l + 4): (0 + 1) + (2 + 3) */
static float red8(const float *a, int hadd) {
    float a4[4];
    for (int l = 0; l < 4; l++) a4[l] = a[l] + a[l + 4];
    return hadd ? (a4[0] + a4[1]) + (a4[2] + a4[3]) : (a4[0] + a4[2]) + (a4[1] + a4[3]);
}
static float red_w(const float *a, int W) { return W == 16 ? red16(a) : red8(a, 0); }

/* ggml_vec_dot_f16's sum of its chains (4 accumulators of W lanes over steps of 4 W, then (0 + 2) + (1 + 3), the W
 * lanes: _mm512_reduce_add_ps's order for 16, GGML_F32x8_REDUCE's for 8), as the double it adds the leftover
 * products to one by one before the f32 result: llama.cpp's f16 products of one token. acc[c] is the chain of
 * elements c, c + 4 W, ... (c < 4 W). */
static double vecdot_lanes(const float *acc, int W) {
    float x[16];
    for (int l = 0; l < W; l++) x[l] = (acc[l] + acc[2 * W + l]) + (acc[W + l] + acc[3 * W + l]);
    return (double)(W == 16 ? red16(x) : red8(x, 1));
}

/* one query row against keys 0..L-1 (scalar), in the order of W lanes (16: llama.cpp's AVX-512 build, 8: its AVX2
 * build). vecdot: the one-token path of llama.cpp (ggml_vec_dot_f16 order), else the batch path (tinyBLAS: W
 * lanes, one chain each). acc: 64 x D floats. */
static void attn_row_scalar(const uint16_t *K, const uint16_t *V, int64_t ld, int64_t L, const float *q, int D,
                            float scale, float *out, float *sbuf, float *acc, int vecdot, int W) {
    float qh[512];
    for (int d = 0; d < D; d++) qh[d] = f16r(q[d]);
    float mx = -INFINITY;
    const int NV = 4 * W, np = D / NV * NV;
    for (int64_t j = 0; j < L; j++) {
        const uint16_t *k = K + j * ld;
        float s;
        if (vecdot) {
            float a64[64] = {0};
            for (int i = 0; i < np; i++) a64[i % NV] = fmaf(qh[i], mdl_f16_to_f32(k[i]), a64[i % NV]);
            double sf = vecdot_lanes(a64, W);
            for (int i = np; i < D; i++) sf += (double)(qh[i] * mdl_f16_to_f32(k[i])); /* leftovers, in order */
            s = (float)sf;
        } else {
            float lanes[16];
            for (int l = 0; l < W; l++) { /* AVX-512 order: the first product alone; AVX2 order: fma from zero */
                float a = W == 16 ? qh[l] * mdl_f16_to_f32(k[l]) : fmaf(qh[l], mdl_f16_to_f32(k[l]), 0.f);
                for (int i = W + l; i < D; i += W) a = fmaf(qh[i], mdl_f16_to_f32(k[i]), a);
                lanes[l] = a;
            }
            s = red_w(lanes, W);
        }
        s = s * scale;
        sbuf[j] = s;
        if (s > mx) mx = s;
    }
    double sum = 0;
    for (int64_t c = 0; c < L; c += W) {
        float e[16];
        for (int l = 0; l < W; l++) e[l] = c + l < L ? (W == 16 ? v_expf1 : v_expf1_l8)(sbuf[c + l] - mx) : 0.f;
        for (int l = 0; l < W && c + l < L; l++) sbuf[c + l] = e[l];
        sum += (double)red_w(e, W);
    }
    float sc = (float)(1.0 / sum);
    /* the keys run over llama.cpp's padded cache (a multiple of 256): zero products past L */
    const int nl = vecdot ? NV : W;
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
        out[d] = vecdot ? (float)vecdot_lanes(col, W) : red_w(col, W);
    }
}

/* The kernel sets: the scalar path (either order), the AVX-512 build's order on AVX-512 or on AVX2 (16 lanes as
 * pairs of 8), the AVX2 build's order on AVX2 (also on AVX-512 CPUs when that order is asked for) */
enum { KS_SCALAR = 0, KS_AVX2 = 1, KS_AVX512 = 2, KS_L8 = 3 };

/* One-token decode with V transposed, in three phases that all threads share, whatever the KV-head count
 * (one task a KV head left 3 tasks for 2 threads with SmolLM2's 3 heads, 2 for 16 with MiniCPM4's 2):
 *   scores: (key chunk, KV head) tasks, chunk-major, so a thread's keys are one contiguous run of the cache;
 *   softmax: one task a query row (max, exp, the sum in order, f16 probabilities);
 *   P.V: (KV head, 16 dims) tasks over the transposed V.
 * Each piece computes what the one-task-a-head block kernel computes on its range (each score, each row's
 * sum in key order, each output's chains), so the bits depend neither on the split nor on the threads. */
static int attn_decode(int ks, const uint16_t *K, const uint16_t *VT, int64_t vcap, int64_t nkv, const float *q,
                       int Hq, int Hkv, int D, float scale, float *out, int nthreads) {
    void (*scores)(const uint16_t *, int64_t, const int64_t *, int, const float *, int, float, int64_t, int64_t, float *,
                   int64_t, float *) = ks == KS_L8       ? ggmlc_dec_scores_l8_avx2
                                       : ks == KS_AVX512 ? ggmlc_dec_scores_avx512
                                                         : ggmlc_dec_scores_avx2;
    void (*softmax)(float *, int64_t, int64_t) = ks == KS_L8       ? ggmlc_dec_softmax_l8_avx2
                                                 : ks == KS_AVX512 ? ggmlc_dec_softmax_avx512
                                                                   : ggmlc_dec_softmax_avx2;
    void (*pv)(const uint16_t *, int64_t, int, int, const float *, int64_t, int64_t, int, int, float *const *,
               float *) = ks == KS_L8 ? ggmlc_dec_pv_l8_avx2 : ks == KS_AVX512 ? ggmlc_dec_pv_avx512 : ggmlc_dec_pv_avx2;
    const int64_t ld = (int64_t)Hkv * D, gq = Hq / Hkv;
    const int64_t L16 = (nkv + 15) / 16 * 16, LP = (nkv + 63) / 64 * 64, ls = LP + 16;
    enum { CHUNK = 256 }; /* keys per scores task: 96 KB of SmolLM2's cache rows, a few L2-sized runs */
    const int64_t nch = (L16 + CHUNK - 1) / CHUNK, ndg = D / 16;
    /* per thread: [gq][D] queries + [gq][16][16] lanes (scores), or [gq][D][16] chains (P.V; 8-lane: [gq][D][8]) */
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
            scores(K + g * D, ld, Ls, (int)gq, q + g * gq * D, D, scale, jb, je, sb + g * gq * ls, ls, wk);
        }
#pragma omp for schedule(static)
        for (int64_t r = 0; r < Hq; r++) softmax(sb + r * ls, L16, LP);
#pragma omp for schedule(static)
        for (int64_t task = 0; task < Hkv * ndg; task++) {
            const int64_t g = task / ndg, d0 = task % ndg * 16;
            pv(VT + g * D * vcap, vcap, D, (int)gq, sb + g * gq * ls, ls, LP, (int)d0, (int)d0 + 16, orows + g * gq, wk);
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
    const int simd = simd_level(), W = ggmlc_order();
    const int ks = W == GGMLC_ORDER_AVX2 ? (simd ? KS_L8 : KS_SCALAR) : simd;
    const int64_t ld = (int64_t)Hkv * D, gq = Hq / Hkv;
    const int vecdot = n == 1; /* llama.cpp: one-token batches take ggml_vec_dot_f16, others tinyBLAS */
    if (ks && vecdot && VT && (ks == KS_L8 ? D % 32 == 0 : D == 64 || D == 128)) /* one token: all threads */
        return attn_decode(ks, K, VT, vcap, nkv, q, Hq, Hkv, D, scale, out, nthreads);
    /* blocks of rows sharing each K/V row: tb tokens x the heads of a group, in hch chunks of at most GGMLC_RB heads
     * (hc each: a group of 16 as two of 8; before session 69 groups above GGMLC_RB took the row kernel, a K/V pass a
     * head); 8 lanes: any head size, 16 lanes: d <= 128 */
    const int blocked = ks == KS_L8 ? !vecdot || D % 32 == 0 : ks && D <= 128 && (!vecdot || D % 64 == 0);
    const int64_t hch = blocked ? (gq + GGMLC_RB - 1) / GGMLC_RB : 1, hc = (gq + hch - 1) / hch;
    const int64_t tb = blocked ? GGMLC_RB / hc : 1;
    const int64_t ntb = (n + tb - 1) / tb, tasks = blocked ? ntb * Hkv * hch : n * Hq;
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
            const int64_t b = task / (Hkv * hch), t0 = b * tb, t1 = t0 + tb < n ? t0 + tb : n;
            const int g = (int)(task % (Hkv * hch) / hch);
            const int64_t h0 = task % hch * hc, h1 = h0 + hc < gq ? h0 + hc : gq;
            int R = 0;
            int64_t L[GGMLC_RB];
            const float *qr[GGMLC_RB];
            float *orow[GGMLC_RB];
            for (int64_t t = t0; t < t1; t++)
                for (int64_t hh = h0; hh < h1; hh++, R++) {
                    int64_t h = g * gq + hh;
                    L[R] = nkv - n + t + 1;
                    qr[R] = q + (t * Hq + h) * D;
                    orow[R] = out + (t * Hq + h) * D;
                }
            /* transposed V for decode (sequential instead of 64-row strides); batches read V rows */
            (ks == KS_L8 ? ggmlc_attn_block_l8_avx2 : ks == KS_AVX512 ? ggmlc_attn_block_avx512 : ggmlc_attn_block_avx2)(
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
        if ((ks == KS_AVX2 || ks == KS_AVX512) && (!vecdot || D % 64 == 0))
            (ks == KS_AVX512 ? ggmlc_attn_row_avx512 : ggmlc_attn_row_avx2)(K + (int64_t)g * D, V + (int64_t)g * D, ld,
                                                                             L, qr, D, scale, o, sbuf, acc, vecdot);
        else
            attn_row_scalar(K + (int64_t)g * D, V + (int64_t)g * D, ld, L, qr, D, scale, o, sbuf, acc, vecdot, W);
    }
    free(work);
    return 0;
}
