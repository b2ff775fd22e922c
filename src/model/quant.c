/* quant.c: ggml block formats, scalar kernels and the threaded matmul driver (quant.h). */
#include "quant.h"
#include "quant_rows.h"

#include <float.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "gguf.h"
#include "mcommon.h"
#include "infllm.h"

static inline float h2f(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return mdl_f16_to_f32(h);
}

int quant_supported(uint32_t type) {
    switch (type) {
    case GGML_F32: case GGML_F16: case GGML_BF16: case GGML_Q8_0: case GGML_Q4_0: case GGML_Q4_1:
    case GGML_Q5_0: case GGML_Q5_1: case GGML_Q2_K: case GGML_Q3_K: case GGML_Q4_K: case GGML_Q5_K: case GGML_Q6_K:
    case GGML_IQ4_NL: case GGML_IQ4_XS:
        return 1;
    default: return 0;
    }
}

/* IQ4_NL / IQ4_XS: a 4-bit index into this non-linear table (ggml's kvalues_iq4nl) */
const int8_t quant_iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

static inline void scale_min_k4(int j, const uint8_t *q, uint8_t *d, uint8_t *m) {
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* one block of `type` -> floats (bs values) */
static void dequant_block(uint32_t type, const uint8_t *b, float *y) {
    switch (type) {
    case GGML_Q8_0: {
        float d = h2f(b);
        const int8_t *q = (const int8_t *)(b + 2);
        for (int j = 0; j < 32; j++) y[j] = d * (float)q[j];
        break;
    }
    case GGML_Q4_0: {
        float d = h2f(b);
        const uint8_t *q = b + 2;
        for (int j = 0; j < 16; j++) {
            y[j] = d * (float)((q[j] & 0xF) - 8);
            y[j + 16] = d * (float)((q[j] >> 4) - 8);
        }
        break;
    }
    case GGML_Q4_1: {
        float d = h2f(b), m = h2f(b + 2);
        const uint8_t *q = b + 4;
        for (int j = 0; j < 16; j++) {
            y[j] = d * (float)(q[j] & 0xF) + m;
            y[j + 16] = d * (float)(q[j] >> 4) + m;
        }
        break;
    }
    case GGML_Q5_0:
    case GGML_Q5_1: {
        /* d [, m], qh (bit j: the fifth bit of value j), qs (values j and j + 16 in byte j) */
        const int has_min = type == GGML_Q5_1;
        float d = h2f(b), m = has_min ? h2f(b + 2) : 0.f;
        uint32_t qh;
        memcpy(&qh, b + (has_min ? 4 : 2), 4);
        const uint8_t *q = b + (has_min ? 8 : 6);
        const int off = has_min ? 0 : 16;
        for (int j = 0; j < 16; j++) {
            int x0 = (int)((q[j] & 0xF) | (((qh >> j) & 1u) << 4)) - off;
            int x1 = (int)((q[j] >> 4) | (((qh >> (j + 16)) & 1u) << 4)) - off;
            y[j] = d * (float)x0 + m;
            y[j + 16] = d * (float)x1 + m;
        }
        break;
    }
    case GGML_Q2_K: {
        /* scales[16] (low nibble: scale, high: min, a sub-block of 16 values), qs[64] (2 bits a
         * value), d, dmin */
        const uint8_t *sc = b, *q = b + 16;
        float d = h2f(b + 80), dmin = h2f(b + 82);
        int is = 0;
        for (int n = 0; n < 256; n += 128) {
            for (int shift = 0; shift < 8; shift += 2) {
                for (int h = 0; h < 2; h++) {
                    uint8_t s = sc[is++];
                    float dl = d * (float)(s & 0xF), ml = dmin * (float)(s >> 4);
                    for (int l = 0; l < 16; l++) *y++ = dl * (float)((q[16 * h + l] >> shift) & 3) - ml;
                }
            }
            q += 32;
        }
        break;
    }
    case GGML_Q3_K: {
        /* hmask[32] (the third bit: set +0, clear -4), qs[64] (2 bits a value), scales[12] (16
         * 6-bit scales, minus 32), d */
        const uint8_t *hm = b, *q = b + 32, *s12 = b + 96;
        float d = h2f(b + 108);
        int sc[16];
        for (int j = 0; j < 16; j++) {
            int lo = j < 8 ? s12[j] & 0xF : s12[j - 8] >> 4;
            int hi = (s12[8 + (j & 3)] >> (2 * (j >> 2))) & 3;
            sc[j] = (lo | (hi << 4)) - 32;
        }
        int is = 0;
        uint8_t m = 1;
        for (int n = 0; n < 256; n += 128) {
            for (int shift = 0; shift < 8; shift += 2) {
                for (int h = 0; h < 2; h++) {
                    float dl = d * (float)sc[is++];
                    for (int l = 0; l < 16; l++) {
                        int v = (int)((q[16 * h + l] >> shift) & 3) - ((hm[16 * h + l] & m) ? 0 : 4);
                        *y++ = dl * (float)v;
                    }
                }
                m = (uint8_t)(m << 1);
            }
            q += 32;
        }
        break;
    }
    case GGML_IQ4_NL: {
        /* d, qs[16] (values j and j + 16 in byte j) */
        float d = h2f(b);
        for (int j = 0; j < 16; j++) {
            y[j] = d * (float)quant_iq4nl_values[b[2 + j] & 0xF];
            y[j + 16] = d * (float)quant_iq4nl_values[b[2 + j] >> 4];
        }
        break;
    }
    case GGML_IQ4_XS: {
        /* d, scales_h (2 high bits of each sub-block's 6-bit scale), scales_l[4] (low nibbles), qs[128]
         * (8 sub-blocks of 32 values laid out like IQ4_NL's); scale minus 32 */
        float d = h2f(b);
        uint16_t sh;
        memcpy(&sh, b + 2, 2);
        const uint8_t *sl = b + 4, *q = b + 8;
        for (int ib = 0; ib < 8; ib++, q += 16, y += 32) {
            int ls = ((sl[ib / 2] >> (4 * (ib % 2))) & 0xF) | (((sh >> (2 * ib)) & 3) << 4);
            float dl = d * (float)(ls - 32);
            for (int j = 0; j < 16; j++) {
                y[j] = dl * (float)quant_iq4nl_values[q[j] & 0xF];
                y[j + 16] = dl * (float)quant_iq4nl_values[q[j] >> 4];
            }
        }
        break;
    }
    case GGML_Q4_K: {
        float d = h2f(b), dmin = h2f(b + 2);
        const uint8_t *sc = b + 4, *q = b + 16;
        int is = 0;
        for (int j = 0; j < 256; j += 64) {
            uint8_t s, m;
            scale_min_k4(is, sc, &s, &m);
            float d1 = d * s, m1 = dmin * m;
            scale_min_k4(is + 1, sc, &s, &m);
            float d2 = d * s, m2 = dmin * m;
            for (int l = 0; l < 32; l++) *y++ = d1 * (float)(q[l] & 0xF) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * (float)(q[l] >> 4) - m2;
            q += 32;
            is += 2;
        }
        break;
    }
    case GGML_Q5_K: {
        float d = h2f(b), dmin = h2f(b + 2);
        const uint8_t *sc = b + 4, *qh = b + 16, *ql = b + 48;
        int is = 0;
        uint8_t u1 = 1, u2 = 2;
        for (int j = 0; j < 256; j += 64) {
            uint8_t s, m;
            scale_min_k4(is, sc, &s, &m);
            float d1 = d * s, m1 = dmin * m;
            scale_min_k4(is + 1, sc, &s, &m);
            float d2 = d * s, m2 = dmin * m;
            for (int l = 0; l < 32; l++) *y++ = d1 * (float)((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * (float)((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
            ql += 32;
            is += 2;
            u1 = (uint8_t)(u1 << 2);
            u2 = (uint8_t)(u2 << 2);
        }
        break;
    }
    case GGML_Q6_K: {
        const uint8_t *ql = b, *qh = b + 128;
        const int8_t *sc = (const int8_t *)(b + 192);
        float d = h2f(b + 208);
        for (int n = 0; n < 256; n += 128) {
            for (int l = 0; l < 32; l++) {
                int is = l / 16;
                int q1 = (int)((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                int q2 = (int)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                int q3 = (int)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                int q4 = (int)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l] = d * sc[is + 0] * (float)q1;
                y[l + 32] = d * sc[is + 2] * (float)q2;
                y[l + 64] = d * sc[is + 4] * (float)q3;
                y[l + 96] = d * sc[is + 6] * (float)q4;
            }
            y += 128;
            ql += 64;
            qh += 32;
            sc += 8;
        }
        break;
    }
    default: break;
    }
}

void quant_dequant_row(uint32_t type, const void *src, float *dst, int64_t n) {
    const uint8_t *p = (const uint8_t *)src;
    switch (type) {
    case GGML_F32: memcpy(dst, src, (size_t)n * 4); return;
    case GGML_F16:
        for (int64_t i = 0; i < n; i++) dst[i] = h2f(p + 2 * i);
        return;
    case GGML_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = mdl_bf16_to_f32(h);
        }
        return;
    default: {
        int bs = ggml_block_size(type);
        size_t bb = ggml_row_size(type, bs);
        for (int64_t i = 0; i < n / bs; i++) dequant_block(type, p + (size_t)i * bb, dst + i * bs);
    }
    }
}

static float f16r(float v) { return mdl_f16_to_f32(mdl_f32_to_f16(v)); }

void quant_act_scales(int mode, float dd, int sum, float *d, float *s) {
    if (mode == QACT_F32) {
        *d = dd;
        *s = dd * (float)sum;
    } else if (mode == QACT_Q8_1) {
        *d = f16r(dd);
        *s = f16r(dd * (float)sum);
    } else if (mode == QACT_Q8_K) {
        *d = dd;
        *s = (float)sum; /* |sum| <= 32 x 127: exact */
    } else {
        *d = f16r(dd);
        *s = *d * (float)sum;
    }
}

int quant_act_mode(uint32_t type) {
    if (type == GGML_Q4_1 || type == GGML_Q5_1) return QACT_Q8_1;
    if (type == GGML_Q4_0 || type == GGML_Q5_0 || type == GGML_Q8_0 || type == GGML_IQ4_NL) return QACT_Q8_0;
    if (type == GGML_Q2_K || type == GGML_Q3_K || type == GGML_Q4_K || type == GGML_Q5_K || type == GGML_Q6_K ||
        type == GGML_IQ4_XS)
        return QACT_Q8_K;
    return QACT_F32;
}

void quant_act_row(const float *x, int64_t n, int8_t *q, float *d, float *s) {
    quant_act_row_mode(x, n, q, d, s, QACT_F32);
}

void quant_act_row_mode(const float *x, int64_t n, int8_t *q, float *d, float *s, int mode) {
    const int64_t nb = n / QK, G = quant_act_group(mode);
    for (int64_t g0 = 0; g0 < nb; g0 += G) {
        const int64_t g1 = g0 + G < nb ? g0 + G : nb; /* the blocks g0..g1-1 share one scale */
        float amax = 0.f;
        int finite = 1;
        for (int64_t j = g0 * QK; j < g1 * QK; j++) {
            float a = fabsf(x[j]);
            if (a > amax) amax = a;
            finite &= a <= FLT_MAX; /* false for inf and NaN */
        }
        if (!finite) {
            for (int64_t b = g0; b < g1; b++) quant_act_block_nonfinite(q + b * QK, &d[b], &s[b]);
            continue;
        }
        float dd;
        const float id = quant_act_block_inv(mode, amax, &dd);
        for (int64_t b = g0; b < g1; b++) {
            const float *xb = x + b * QK;
            int sum = 0;
            for (int j = 0; j < QK; j++) {
                int v = (int)lrintf(xb[j] * id);
                if (v > 127) v = 127;
                if (v < -127) v = -127;
                q[b * QK + j] = (int8_t)v;
                sum += v;
            }
            quant_act_scales(mode, dd, sum, &d[b], &s[b]);
        }
    }
}

/* scalar dots: dequantize a weight block and multiply with the dequantized activation */
static void dot_scalar(uint32_t type, int64_t n, const void *wrow, const float *const *xa, const int8_t *const *qa,
                       const float *const *da, int na, float *out) {
    const uint8_t *w = (const uint8_t *)wrow;
    for (int t = 0; t < na; t++) out[t] = 0.f;
    if (type == GGML_F32 || type == GGML_F16 || type == GGML_BF16 || !qa || !qa[0]) {
        float buf[256];
        for (int64_t i0 = 0; i0 < n; i0 += 256) {
            int64_t m = n - i0 < 256 ? n - i0 : 256;
            quant_dequant_row(type, w + ggml_row_size(type, i0), buf, m);
            for (int t = 0; t < na; t++) {
                float acc = 0.f;
                for (int64_t j = 0; j < m; j++) acc += buf[j] * xa[t][i0 + j];
                out[t] += acc;
            }
        }
        return;
    }
    int bs = ggml_block_size(type);
    size_t bb = ggml_row_size(type, bs);
    float buf[256];
    for (int64_t i = 0; i < n / bs; i++) {
        dequant_block(type, w + (size_t)i * bb, buf);
        for (int t = 0; t < na; t++) {
            float acc = 0.f;
            for (int s = 0; s < bs / QK; s++) {
                int64_t blk = i * (bs / QK) + s;
                const int8_t *q = qa[t] + blk * QK;
                float a = 0.f;
                for (int j = 0; j < QK; j++) a += buf[s * QK + j] * (float)q[j];
                acc += a * da[t][blk];
            }
            out[t] += acc;
        }
    }
}

static int g_force_scalar = 0; /* tests set it before any product */
static atomic_int g_float_act = -1; /* read once; sessions on several threads may race to store it */
void quant_force_scalar(int f) { g_force_scalar = f; }
static int float_act(void) {
    int v = atomic_load_explicit(&g_float_act, memory_order_relaxed);
    if (v < 0) {
        const char *e = getenv("INFLLM_FLOAT_ACT");
        v = e && e[0] == '1';
        atomic_store_explicit(&g_float_act, v, memory_order_relaxed);
    }
    return v;
}
int quant_float_activations(void) { return float_act(); }
int quant_amx_allowed(void) {
    const char *e = getenv("INFLLM_QUANT_AMX"); /* read once by quant_amx_available */
    return quant_simd_allowed(2) && !(e && e[0] == '0');
}
const char *quant_kernel_name(void) {
    if (g_force_scalar) return "scalar";
    if (quant_avx512_available()) return quant_amx_available() ? "avx512-vnni+amx-int8" : "avx512-vnni";
    if (!quant_avx2_available()) return "scalar";
    return quant_avxvnni_available() ? "avx2+avx-vnni" : "avx2";
}

int quant_simd_allowed(int level) {
    /* the library's level (the CPU's, lowered by INFLLM_SIMD, read once there) */
    const char *l = infllm_cpu_simd_level();
    const int cap = !strcmp(l, "scalar") ? 0 : !strcmp(l, "avx2") ? 1 : 2;
    return level <= cap;
}

void quant_dot_rows(uint32_t type, int64_t n, const void *wrow, const float *const *xa, const int8_t *const *qa,
                    const float *const *da, const float *const *sa, int na, float *out, int use_simd) {
    if (use_simd && quant_avx512_available() && quant_dot_avx512(type, n, wrow, xa, qa, da, sa, na, out)) return;
    if (use_simd && !quant_avx512_available() && quant_avx2_available() &&
        quant_dot_avx2(type, n, wrow, xa, qa, da, sa, na, out))
        return;
    dot_scalar(type, n, wrow, xa, qa, da, na, out);
}

void quant_scratch_free(quant_scratch *qs) {
    if (!qs) return;
    free(qs->q);
    free(qs->d);
    free(qs->s);
    free(qs->amx);
    free(qs->ktile);
    memset(qs, 0, sizeof *qs);
}

static int quant_matmul_multi_with(const quant_mm *ops, int nops, const float *x, int64_t ntok, int nthreads,
                                   quant_scratch *qs);

int quant_matmul(uint32_t type, const void *w, int64_t rows, int64_t cols, const float *x, int64_t ntok, float *y,
                 int64_t ldy, int nthreads, quant_scratch *qs) {
    const quant_mm op = {type, w, rows, cols, y, ldy};
    return quant_matmul_multi(&op, 1, x, ntok, nthreads, qs);
}

int quant_rl_allowed(void) {
    static atomic_int cached = -1; /* threads racing here all store the same answer */
    int v = atomic_load_explicit(&cached, memory_order_relaxed);
    if (v < 0) {
        const char *e = getenv("INFLLM_QUANT_RL");
        v = !(e && strcmp(e, "0") == 0);
        atomic_store_explicit(&cached, v, memory_order_relaxed);
    }
    return v;
}

int quant_ktile_takes(uint32_t type, int64_t cols, int64_t ntok) {
    return (type == GGML_Q2_K || type == GGML_Q3_K || type == GGML_Q4_K || type == GGML_Q5_K || type == GGML_Q6_K ||
            type == GGML_IQ4_XS) &&
           cols > 0 && cols % 256 == 0 && ntok >= 1;
}

size_t quant_ktile_act_bytes(int64_t ntok, int64_t cols) {
    return (size_t)((ntok + QUANT_KTILE_TOKENS - 1) / QUANT_KTILE_TOKENS) * (size_t)(cols / 256) * QUANT_KTILE_REC;
}

void quant_ktile_pack(const int8_t *q, const float *d, const float *s, int64_t ntok, int64_t cols, int64_t g,
                      void *packed) {
    const int64_t nsb = cols / 256, nb = cols / QK, t0 = g * QUANT_KTILE_TOKENS;
    uint8_t *rec = (uint8_t *)packed + (size_t)(g * nsb) * QUANT_KTILE_REC;
    for (int64_t sb = 0; sb < nsb; sb++, rec += QUANT_KTILE_REC) {
        int8_t *rq = (int8_t *)rec;
        int16_t *rbs = (int16_t *)(void *)(rec + 2048), *rs32 = (int16_t *)(void *)(rec + 2304);
        float *rdt = (float *)(void *)(rec + 2432);
        for (int k = 0; k < QUANT_KTILE_TOKENS; k++) {
            const int64_t t = t0 + k < ntok ? t0 + k : ntok - 1;
            const int8_t *qt = q + t * cols + sb * 256;
            const int off = (k % 4) * 64 + (k / 4) * 32; /* tokens k and k + 4 side by side */
            for (int b = 0; b < 8; b++) memcpy(rq + b * 256 + off, qt + 32 * b, 32);
            for (int j = 0; j < 16; j++) { /* |sum| <= 16 x 127 */
                int sum = 0;
                for (int i = 0; i < 16; i++) sum += qt[16 * j + i];
                rbs[off / 2 + j] = (int16_t)sum;
            }
            /* the 32-value sums (s, an integer <= 32 x 127 in QACT_Q8_K) of tokens k and k + 4 side by side; a
             * non-finite block's NaN s as 0 (its NaN D_a makes the token's outputs NaN either way) */
            for (int b = 0; b < 8; b++) {
                const float sv = s[t * nb + sb * 8 + b];
                rs32[(k % 4) * 16 + (k / 4) * 8 + b] = sv == sv ? (int16_t)sv : 0;
            }
            rdt[k] = d[t * nb + sb * 8];
        }
    }
}

int quant_matmul_multi(const quant_mm *ops, int nops, const float *x, int64_t ntok, int nthreads, quant_scratch *qs) {
    if (qs) return quant_matmul_multi_with(ops, nops, x, ntok, nthreads, qs);
    quant_scratch own = {0};
    int r = quant_matmul_multi_with(ops, nops, x, ntok, nthreads, &own);
    quant_scratch_free(&own);
    return r;
}

/* rows per work item: 16 stay in L1 while the tokens stream; the prefill tiles (quant_gemm_avx512 / _avx2) pay a
 * per-call setup (the tokens' s transposed, the rows' m), so they take 32 (ffn_down rows of 1536 still fit L1) */
static int64_t chunk_rows(uint32_t type, int isf, int simd, int64_t ntok) {
    return (!isf && simd && ntok >= 4 &&
            (type == GGML_Q4_1 || type == GGML_Q8_0 || type == GGML_Q4_0 || type == GGML_Q5_0 || type == GGML_Q5_1 ||
             type == GGML_Q2_K || type == GGML_Q3_K || type == GGML_Q4_K || type == GGML_Q5_K || type == GGML_Q6_K ||
             type == GGML_IQ4_XS)) ? 32 : 16;
}

/* rows r0..r1-1 of one product (isf: float rows x; else the activations Q / D / S of its scheme) */
static void matmul_rows(uint32_t type, const void *w, int64_t r0, int64_t r1, int64_t cols, int isf, int fa, int simd,
                        const float *x, const int8_t *Q, const float *D, const float *S, int64_t ntok, float *y,
                        int64_t ldy) {
    /* prefill: register-blocked tiles of rows x tokens (AVX-512: Q4_1 and Q8_0 on 512 bits, Q5_0, Q5_1, the K-quants
     * and IQ4_XS on 256; AVX2: those and Q4_0), same bits as below */
    if (!isf && simd && ntok >= 4 && quant_avx512_available() &&
        (quant_gemm_avx512(type, w, r0, r1, cols, Q, D, S, ntok, y, ldy) ||
         quant_gemm256_avx512(type, w, r0, r1, cols, Q, D, S, ntok, y, ldy)))
        return;
    if (!isf && simd && ntok >= 4 && !quant_avx512_available() && quant_avx2_available() &&
        quant_gemm_avx2(type, w, r0, r1, cols, Q, D, S, ntok, y, ldy))
        return;
    /* decode: 4 rows' chains side by side (Q8_0, Q4_1, Q5_0, Q5_1; AVX2 also Q4_0), same bits as below */
    if (!isf && simd && ntok < 4 && quant_avx512_available() &&
        quant_gemv256_avx512(type, w, r0, r1, cols, Q, D, S, ntok, y, ldy))
        return;
    if (!isf && simd && ntok < 4 && !quant_avx512_available() && quant_avx2_available() &&
        quant_gemv_avx2(type, w, r0, r1, cols, Q, D, S, ntok, y, ldy))
        return;
    /* the rest (other types and token counts) on AVX-512 CPUs: the one-row kernels, looped in AVX-512 code */
    if (simd && !fa && quant_avx512_available() && quant_rows_avx512(type, w, r0, r1, cols, x, Q, D, S, ntok, y, ldy))
        return;
    quant_rows_loop(quant_dot_rows, simd && !fa, isf, type, w, ggml_row_size(type, cols), r0, r1, cols, x, Q, D, S,
                    ntok, y, ldy);
}

static int quant_matmul_multi_with(const quant_mm *ops, int nops, const float *x, int64_t ntok, int nthreads,
                                   quant_scratch *qs) {
    if (nops < 1 || nops > QUANT_MAX_OPS) return mdl_fail("quant_matmul_multi: %d products (1..%d)", nops, QUANT_MAX_OPS);
    const int64_t cols = ops[0].cols;
    int isf[QUANT_MAX_OPS], fa[QUANT_MAX_OPS], mi[QUANT_MAX_OPS], modes[QUANT_MAX_OPS], nm = 0;
    int amx[QUANT_MAX_OPS], amx_m = -1; /* the products on AMX-INT8 tiles, and their (one) activation scheme */
    int kt[QUANT_MAX_OPS], kt_m = -1;   /* the products on the packed K-quant tiles (AVX2 / AVX512-VNNI), their scheme */
    int64_t macs = 0;
    for (int i = 0; i < nops; i++) {
        const uint32_t type = ops[i].type;
        if (!quant_supported(type)) return mdl_fail("tensor type %s is not supported for products", ggml_type_name(type));
        if (ops[i].cols != cols)
            return mdl_fail("products of one input: row lengths %lld and %lld differ", (long long)cols,
                            (long long)ops[i].cols);
        if (cols % ggml_block_size(type))
            return mdl_fail("row length %lld is not a multiple of the %s block", (long long)cols, ggml_type_name(type));
        isf[i] = type == GGML_F32 || type == GGML_F16 || type == GGML_BF16;
        fa[i] = !isf[i] && float_act(); /* debugging: float activations, weights dequantized per block */
        if (fa[i]) isf[i] = 1;
        if (!isf[i] && cols % QK) return mdl_fail("row length %lld is not a multiple of 32", (long long)cols);
        mi[i] = -1;
        if (!isf[i]) { /* the activations are quantized once per scheme the products take */
            const int mode = quant_act_mode(type);
            for (int m = 0; m < nm && mi[i] < 0; m++)
                if (modes[m] == mode) mi[i] = m;
            if (mi[i] < 0) {
                modes[nm] = mode;
                mi[i] = nm++;
            }
        }
        macs += ops[i].rows * ntok * cols;
    }
    const int simd = !g_force_scalar;
    for (int i = 0; i < nops; i++) {
        amx[i] = !isf[i] && simd && quant_amx_takes(ops[i].type, cols, ntok) && quant_amx_available() &&
                 (amx_m < 0 || amx_m == mi[i]);
        if (amx[i]) amx_m = mi[i];
    }
    const int kt_avx512 = quant_avx512_available(), kt_isa = kt_avx512 || quant_avx2_available();
    /* the rows-in-lanes kernel unpacks its panels once a call: below QUANT_RL_MIN_TOKENS the tiles are faster */
    const int kt_vnni = !kt_avx512 && kt_isa && quant_avxvnni_available();
    const int kt_rl = kt_isa && ntok >= QUANT_RL_MIN_TOKENS && quant_rl_allowed();
    for (int i = 0; i < nops; i++) {
        kt[i] = !isf[i] && simd && !amx[i] && kt_isa && ntok >= 4 && quant_ktile_takes(ops[i].type, cols, ntok) &&
                (kt_m < 0 || kt_m == mi[i]);
        if (kt[i]) kt_m = mi[i];
    }
    const int64_t nb = cols / QK;
    const size_t per_q = (size_t)(ntok * cols), per_d = (size_t)(ntok * nb);
    if (nm > 0) {
        const size_t nq = per_q * (size_t)nm, nd = per_d * (size_t)nm;
        if (nq > qs->cap_q) {
            int8_t *p = realloc(qs->q, nq);
            if (!p) return mdl_fail("out of memory (activation buffer)");
            qs->q = p;
            qs->cap_q = nq;
        }
        if (nd > qs->cap_d) {
            /* both grown before cap_d moves, so that a failure leaves the old capacity valid */
            float *a = realloc(qs->d, nd * sizeof(float));
            if (!a) return mdl_fail("out of memory (activation buffer)");
            qs->d = a;
            float *b = realloc(qs->s, nd * sizeof(float));
            if (!b) return mdl_fail("out of memory (activation buffer)");
            qs->s = b;
            qs->cap_d = nd;
        }
    }
    if (amx_m >= 0) {
        const size_t nb_amx = quant_amx_act_bytes(ntok, cols);
        if (nb_amx > qs->cap_amx) {
            void *p = realloc(qs->amx, nb_amx);
            if (p) {
                qs->amx = p;
                qs->cap_amx = nb_amx;
            } else { /* the other kernels, then */
                for (int i = 0; i < nops; i++) amx[i] = 0;
                amx_m = -1;
            }
        }
    }
    if (kt_m >= 0) {
        const size_t nb_kt = quant_ktile_act_bytes(ntok, cols);
        if (nb_kt > qs->cap_ktile) {
            void *p = realloc(qs->ktile, nb_kt);
            if (p) {
                qs->ktile = p;
                qs->cap_ktile = nb_kt;
            } else { /* the tiles that pack their own, then */
                for (int i = 0; i < nops; i++) kt[i] = 0;
                kt_m = -1;
            }
        }
    }
    /* work items: each product's rows in chunks, numbered product after product */
    int64_t rc[QUANT_MAX_OPS], first[QUANT_MAX_OPS + 1];
    first[0] = 0;
    for (int i = 0; i < nops; i++) {
        rc[i] = chunk_rows(ops[i].type, isf[i], simd, ntok);
        first[i + 1] = first[i] + (ops[i].rows + rc[i] - 1) / rc[i];
    }
    const int64_t nchunks = first[nops];
    int nt = nthreads;
#ifdef _OPENMP
    if (nt <= 0) nt = omp_get_max_threads();
    /* only tiny products run on one thread. A decode step's per-layer products (SmolLM2:
     * 110K-885K multiply-adds, ~5-30 us) gain from 2 threads on an idle machine: 2K decode went
     * from 35-40 to 48-53 tok/s when the cut-off moved from 2M to 64K multiply-adds (on a loaded
     * machine a barrier can wait for a descheduled thread: -t 1 is then the better choice) */
    if (macs < (1 << 16)) nt = 1;
#else
    nt = 1;
    (void)nt;
    (void)macs;
#endif
#pragma omp parallel num_threads(nt)
    {
        if (nm > 0) {
#pragma omp for schedule(static)
            for (int64_t k = 0; k < nm * ntok; k++) {
                const int m = (int)(k / ntok);
                const int64_t t = k % ntok;
                int8_t *q = qs->q + (size_t)m * per_q + (size_t)(t * cols);
                float *d = qs->d + (size_t)m * per_d + (size_t)(t * nb), *sv = qs->s + (size_t)m * per_d + (size_t)(t * nb);
                if (simd && quant_avx512_available())
                    quant_act_row_mode_avx512(x + t * cols, cols, q, d, sv, modes[m]);
                else if (simd && quant_avx2_available())
                    quant_act_row_mode_avx2(x + t * cols, cols, q, d, sv, modes[m]);
                else
                    quant_act_row_mode(x + t * cols, cols, q, d, sv, modes[m]);
            }
            if (amx_m >= 0) { /* after the barrier that ends the loop above */
#pragma omp for schedule(static)
                for (int64_t tile = 0; tile < (ntok + QUANT_AMX_TILE_TOKENS - 1) / QUANT_AMX_TILE_TOKENS; tile++)
                    quant_amx_pack_act(qs->q + (size_t)amx_m * per_q, qs->d + (size_t)amx_m * per_d,
                                       qs->s + (size_t)amx_m * per_d, ntok, cols, tile, qs->amx);
            }
            if (kt_m >= 0) {
#pragma omp for schedule(static)
                for (int64_t g = 0; g < (ntok + QUANT_KTILE_TOKENS - 1) / QUANT_KTILE_TOKENS; g++)
                    quant_ktile_pack(qs->q + (size_t)kt_m * per_q, qs->d + (size_t)kt_m * per_d,
                                     qs->s + (size_t)kt_m * per_d, ntok, cols, g, qs->ktile);
            }
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t c = 0; c < nchunks; c++) {
            int i = 0;
            while (c >= first[i + 1]) i++;
            const int64_t r0 = (c - first[i]) * rc[i], r1 = r0 + rc[i] < ops[i].rows ? r0 + rc[i] : ops[i].rows;
            const int m = mi[i] < 0 ? 0 : mi[i];
            const int8_t *Q = isf[i] ? NULL : qs->q + (size_t)m * per_q;
            const float *D = isf[i] ? NULL : qs->d + (size_t)m * per_d, *S = isf[i] ? NULL : qs->s + (size_t)m * per_d;
            if (amx[i] && quant_gemm_amx(ops[i].type, ops[i].w, r0, r1, cols, qs->amx, ntok, ops[i].y, ops[i].ldy))
                continue;
            /* the K-quants' packed-activation kernels: rows in lanes from QUANT_RL_MIN_TOKENS (AVX2's not for IQ4_XS:
             * it answers 0), else the 8-token tiles */
            if (kt[i] && kt_rl &&
                (kt_avx512 ? quant_gemm_ktile_rl512 : quant_gemm_ktile_rl_avx2)(ops[i].type, ops[i].w, r0, r1, cols,
                                                                                qs->ktile, ntok, ops[i].y, ops[i].ldy))
                continue;
            if (kt[i] && (kt_avx512 ? quant_gemm_ktile256_avx512
                          : kt_vnni ? quant_gemm_ktile_avxvnni
                                    : quant_gemm_ktile_avx2)(ops[i].type, ops[i].w, r0, r1, cols, qs->ktile, ntok,
                                                             ops[i].y, ops[i].ldy))
                continue;
            matmul_rows(ops[i].type, ops[i].w, r0, r1, cols, isf[i], fa[i], simd, x, Q, D, S, ntok, ops[i].y, ops[i].ldy);
        }
    }
    return 0;
}
