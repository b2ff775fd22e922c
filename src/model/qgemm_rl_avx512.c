/* qgemm_rl_avx512.c: the K-quant and IQ4_XS prefill products on AVX512-VNNI CPUs without AMX (Zen 4 / 5, Ice Lake,
 * Cascade Lake; and wherever INFLLM_QUANT_AMX=0): weight rows in the vector lanes. A panel of 16 weight rows is
 * unpacked once a call, per super-block, into unsigned bytes laid out as vpdpbusd's 16 x 4 operand (one zmm a 4-value
 * group of a 32-value block: row r's 4 values in dword lane r), and each token's 4 activation bytes are broadcast from
 * the packed records (quant_ktile_pack) as the instruction's memory operand: one vpdpbusd is 64 products with no
 * unpack, sign or shuffle in the token loop (the 8-token tiles of qgemm_x86_tiles.h spend a vpmaddubsw and a vpdpwssd
 * on 32 or 64 products, plus the per-row unpack each token group repeats). llama.cpp's AVX-512 build has a kernel of
 * this shape (its "tiled" mul_mat: vpdpbusd against broadcast activations), which ran IQ4_XS / Q3_K prefill at about
 * twice this runtime's 256-bit tiles (BENCHMARKS "Session 74").
 *
 * Per (row, token, super-block) the result is the one-row kernels' exact int32 (quant_x86_kern.h): the block sums
 * times the integer scales (vpmulld: the 16 rows' scales, one an int32 lane), the values' offset (Q6_K 32, Q3_K 4,
 * IQ4_XS 128: its values are stored + 128, unsigned) taken off through the activations' 16- / 32-value sums and the
 * scales as int16 pairs (vpdpwssd: o sum_k sc_k S_k), then the one-row kernels' float steps, lane r row r's chain:
 * acc = fma((float)isum, d * D_a, acc) in super-block order; Q2_K acc = fma(-(float)msum, dmin * D_a, acc); Q4_K /
 * Q5_K off = off - (dmin * D_a) m, out = acc + off. So the outputs are bitwise quant_dot_avx512's (test_quant's
 * test_tiles_exact). Built with the AVX-512 flags and VNNI (CMake's *_avx512.c rule); quant_avx512_available() is
 * the dispatch's check. */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "mcommon.h"
#include "quant.h"
#include "quant_x86.h"

#define AI __attribute__((always_inline)) static inline
#include "quant_avx512_ops.h" /* ld, dp, dpsc, qx_bits_bytes, qx_upper_clean */
#include "quant_x86_kern.h"   /* the row kernels' unpack helpers */
#include "qgemm_rl.h"

enum { RL_R = 16 }; /* weight rows a panel: one an int32 lane */

/* one panel's super-block, unpacked (64-byte aligned) */
typedef struct rl_sb {
    uint8_t v[8][8][64]; /* [block][4-value group][row * 4 + k]: the values as unsigned bytes (IQ4_XS: + 128) */
    int32_t sc[16][16];  /* [scale][row]: 32-value types block b's scale at b, 16-value types half-block k's at k */
    int32_t op[8][16];   /* [pair][row]: the scales as int16 pairs (sc_2p | sc_2p+1 << 16), for the offset sums */
    int32_t mp[8][16];   /* [pair][row]: the mins as int16 pairs (Q2_K: 8 pairs of 16-value mins; Q4_K / Q5_K: 4) */
    float d[16], dmin[16];
} rl_sb;

static int rl_takes(uint32_t type) {
    return type == GGML_Q2_K || type == GGML_Q3_K || type == GGML_Q4_K || type == GGML_Q5_K || type == GGML_Q6_K ||
           type == GGML_IQ4_XS;
}

/* R[r] (16 dwords of row r) -> R[j] (dword j of the 16 rows): unpacks within 128-bit lanes, then lane shuffles */
AI void rl_transpose16(__m512i R[16]) {
    __m512i t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(R[2 * i], R[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(R[2 * i], R[2 * i + 1]);
    }
    /* R[4 i + c]: in 128-bit lane L, rows 4 i .. 4 i + 3 of column 4 L + c */
    for (int i = 0; i < 4; i++) {
        R[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        R[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        R[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        R[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    for (int c = 0; c < 4; c++) {
        const __m512i a = _mm512_shuffle_i32x4(R[c], R[4 + c], 0x88), b = _mm512_shuffle_i32x4(R[c], R[4 + c], 0xdd);
        const __m512i e = _mm512_shuffle_i32x4(R[8 + c], R[12 + c], 0x88), f = _mm512_shuffle_i32x4(R[8 + c], R[12 + c], 0xdd);
        t[c] = _mm512_shuffle_i32x4(a, e, 0x88);      /* column c: lanes L0 of R[c], R[4 + c], R[8 + c], R[12 + c] */
        t[8 + c] = _mm512_shuffle_i32x4(a, e, 0xdd);  /* column 8 + c: their lanes L2 */
        t[4 + c] = _mm512_shuffle_i32x4(b, f, 0x88);  /* column 4 + c: lanes L1 */
        t[12 + c] = _mm512_shuffle_i32x4(b, f, 0xdd); /* column 12 + c: lanes L3 */
    }
    for (int j = 0; j < 16; j++) R[j] = t[j];
}

/* the panel of rows w0 .. (nv valid; the others repeat the last) for every super-block into P[nsb] */
static void rl_unpack(uint32_t type, const uint8_t *w0, size_t rb, int nv, int64_t nsb, rl_sb *P) {
    const size_t bb = ggml_row_size(type, 256);
    uint8_t tmp[RL_R][256];
    for (int64_t sb = 0; sb < nsb; sb++) {
        for (int r = 0; r < RL_R; r++) {
            const uint8_t *x = w0 + (size_t)(r < nv ? r : nv - 1) * rb + (size_t)sb * bb;
            const rl_panel_sb p = {&P[sb].sc[0][0], &P[sb].op[0][0], &P[sb].mp[0][0], P[sb].d, P[sb].dmin, RL_R};
            switch (type) { /* constant TYPE: each its own instance */
            case GGML_Q2_K: rl_unpack_row(GGML_Q2_K, x, r, tmp[r], p); break;
            case GGML_Q3_K: rl_unpack_row(GGML_Q3_K, x, r, tmp[r], p); break;
            case GGML_Q4_K: rl_unpack_row(GGML_Q4_K, x, r, tmp[r], p); break;
            case GGML_Q5_K: rl_unpack_row(GGML_Q5_K, x, r, tmp[r], p); break;
            case GGML_Q6_K: rl_unpack_row(GGML_Q6_K, x, r, tmp[r], p); break;
            default: rl_unpack_row(GGML_IQ4_XS, x, r, tmp[r], p); break;
            }
        }
        /* the 16 rows x 64 dwords transposed: group g = 8 b + i of row r to P->v[b][i][4 r], 16 groups at a time */
        for (int q = 0; q < 4; q++) {
            __m512i R[RL_R];
            /* unaligned loads: MinGW's GCC does not realign the stack for an over-aligned local */
            for (int r = 0; r < RL_R; r++) R[r] = _mm512_loadu_si512((const void *)(tmp[r] + 64 * q));
            rl_transpose16(R);
            __m512i *dst = (__m512i *)(void *)P[sb].v + 16 * q;
            for (int j = 0; j < RL_R; j++) _mm512_store_si512((void *)(dst + j), R[j]);
        }
    }
}

/* broadcast of the 4 bytes (or int16 pair) at p */
AI __m512i rl_b4(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

/* 4 tokens (record tokens k0 .. k0 + 3 of the group whose records start at rec) x the panel P[0 .. nsb-1]; their
 * outputs (valid tokens ntv, rows nv) to y + t ldy */
AI void rl_quad(const uint32_t TYPE, const rl_sb *P, int64_t nsb, const uint8_t *rec, int k0, float *y, int64_t ldy,
                int ntv, __mmask16 rows) {
    const int s16 = TYPE == GGML_Q2_K || TYPE == GGML_Q3_K || TYPE == GGML_Q6_K; /* 16-value scales */
    const int q45 = TYPE == GGML_Q4_K || TYPE == GGML_Q5_K;
    const int osh = TYPE == GGML_Q6_K ? 5 : TYPE == GGML_Q3_K ? 2 : TYPE == GGML_IQ4_XS ? 7 : 0; /* log2 of the offset */
    __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    __m512 off0 = acc0, off1 = acc0, off2 = acc0, off3 = acc0;
    for (int64_t sb = 0; sb < nsb; sb++, rec += QUANT_KTILE_REC) {
        const rl_sb *S = &P[sb];
        __m512i is0 = _mm512_setzero_si512(), is1 = is0, is2 = is0, is3 = is0;
#pragma GCC unroll 1
        for (int b = 0; b < 8; b++) {
            const __m512i *V = (const __m512i *)(const void *)S->v[b];
            const __m512i W0 = _mm512_load_si512(V), W1 = _mm512_load_si512(V + 1), W2 = _mm512_load_si512(V + 2),
                          W3 = _mm512_load_si512(V + 3), W4 = _mm512_load_si512(V + 4), W5 = _mm512_load_si512(V + 5),
                          W6 = _mm512_load_si512(V + 6), W7 = _mm512_load_si512(V + 7);
            const uint8_t *a = rec + 256 * b;
#define RL_TOK(u, is)                                                                                                  \
    {                                                                                                                  \
        const uint8_t *at = a + QUANT_KTILE_TOFF(k0 + (u));                                                                     \
        __m512i lo = _mm512_dpbusd_epi32(_mm512_setzero_si512(), W0, rl_b4(at));                                      \
        __m512i hi = _mm512_dpbusd_epi32(_mm512_setzero_si512(), W4, rl_b4(at + 16));                                 \
        lo = _mm512_dpbusd_epi32(lo, W1, rl_b4(at + 4));                                                              \
        hi = _mm512_dpbusd_epi32(hi, W5, rl_b4(at + 20));                                                             \
        lo = _mm512_dpbusd_epi32(lo, W2, rl_b4(at + 8));                                                              \
        hi = _mm512_dpbusd_epi32(hi, W6, rl_b4(at + 24));                                                             \
        lo = _mm512_dpbusd_epi32(lo, W3, rl_b4(at + 12));                                                             \
        hi = _mm512_dpbusd_epi32(hi, W7, rl_b4(at + 28));                                                             \
        if (s16)                                                                                                       \
            is = _mm512_add_epi32(is, _mm512_add_epi32(_mm512_mullo_epi32(lo, _mm512_load_si512(S->sc[2 * b])),       \
                                                       _mm512_mullo_epi32(hi, _mm512_load_si512(S->sc[2 * b + 1])))); \
        else                                                                                                           \
            is = _mm512_add_epi32(is, _mm512_mullo_epi32(_mm512_add_epi32(lo, hi), _mm512_load_si512(S->sc[b])));     \
    }
            RL_TOK(0, is0) RL_TOK(1, is1) RL_TOK(2, is2) RL_TOK(3, is3)
#undef RL_TOK
        }
        const __m512 d = _mm512_load_ps(S->d), dmin = _mm512_load_ps(S->dmin);
        const uint8_t *bs = rec + 2048, *s32 = rec + 2304;
#define RL_END(u, is, acc, off)                                                                                        \
    {                                                                                                                  \
        const int k = k0 + (u);                                                                                        \
        const __m512 da = _mm512_set1_ps(((const float *)(const void *)(rec + 2432))[k]);                             \
        if (osh) { /* - o sum_k sc_k S_k: 16-value sums (8 pairs) or IQ4_XS's 32-value sums (4 pairs) */             \
            __m512i o = _mm512_setzero_si512();                                                                        \
            if (TYPE == GGML_IQ4_XS)                                                                                   \
                for (int p = 0; p < 4; p++)                                                                            \
                    o = _mm512_dpwssd_epi32(o, _mm512_load_si512(S->op[p]), rl_b4(s32 + QUANT_KTILE_TOFF(k) / 2 + 4 * p)); \
            else                                                                                                       \
                for (int p = 0; p < 8; p++)                                                                            \
                    o = _mm512_dpwssd_epi32(o, _mm512_load_si512(S->op[p]), rl_b4(bs + QUANT_KTILE_TOFF(k) + 4 * p));          \
            is = _mm512_sub_epi32(is, _mm512_slli_epi32(o, osh));                                                      \
        }                                                                                                              \
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), _mm512_mul_ps(d, da), acc);                                      \
        if (TYPE == GGML_Q2_K) {                                                                                       \
            __m512i ms = _mm512_setzero_si512();                                                                       \
            for (int p = 0; p < 8; p++)                                                                                \
                ms = _mm512_dpwssd_epi32(ms, _mm512_load_si512(S->mp[p]), rl_b4(bs + QUANT_KTILE_TOFF(k) + 4 * p));            \
            acc = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(ms), _mm512_mul_ps(dmin, da), acc);                              \
        }                                                                                                              \
        if (q45) { /* m = sum_j mn_j s_j (exact), off = off - (dmin D_a) m */                                          \
            __m512i m = _mm512_setzero_si512();                                                                        \
            for (int p = 0; p < 4; p++)                                                                                \
                m = _mm512_dpwssd_epi32(m, _mm512_load_si512(S->mp[p]), rl_b4(s32 + QUANT_KTILE_TOFF(k) / 2 + 4 * p)); \
            off = _mm512_sub_ps(off, _mm512_mul_ps(_mm512_mul_ps(dmin, da), _mm512_cvtepi32_ps(m)));                   \
        }                                                                                                              \
    }
        RL_END(0, is0, acc0, off0) RL_END(1, is1, acc1, off1) RL_END(2, is2, acc2, off2) RL_END(3, is3, acc3, off3)
#undef RL_END
    }
    if (q45) {
        acc0 = _mm512_add_ps(acc0, off0);
        acc1 = _mm512_add_ps(acc1, off1);
        acc2 = _mm512_add_ps(acc2, off2);
        acc3 = _mm512_add_ps(acc3, off3);
    }
    if (ntv > 0) _mm512_mask_storeu_ps(y, rows, acc0);
    if (ntv > 1) _mm512_mask_storeu_ps(y + ldy, rows, acc1);
    if (ntv > 2) _mm512_mask_storeu_ps(y + 2 * ldy, rows, acc2);
    if (ntv > 3) _mm512_mask_storeu_ps(y + 3 * ldy, rows, acc3);
}

/* the instance of rl_quad for the type */
AI void rl_quad_any(uint32_t type, const rl_sb *P, int64_t nsb, const uint8_t *rec, int k0, float *y, int64_t ldy,
                    int ntv, __mmask16 rows) {
    switch (type) {
    case GGML_Q2_K: rl_quad(GGML_Q2_K, P, nsb, rec, k0, y, ldy, ntv, rows); break;
    case GGML_Q3_K: rl_quad(GGML_Q3_K, P, nsb, rec, k0, y, ldy, ntv, rows); break;
    case GGML_Q4_K: rl_quad(GGML_Q4_K, P, nsb, rec, k0, y, ldy, ntv, rows); break;
    case GGML_Q5_K: rl_quad(GGML_Q5_K, P, nsb, rec, k0, y, ldy, ntv, rows); break;
    case GGML_Q6_K: rl_quad(GGML_Q6_K, P, nsb, rec, k0, y, ldy, ntv, rows); break;
    default: rl_quad(GGML_IQ4_XS, P, nsb, rec, k0, y, ldy, ntv, rows); break;
    }
}

#define RL_MASK16(nv) const __mmask16 rows = (__mmask16)((1u << (nv)) - 1)
RL_GEMM(quant_gemm_ktile_rl512, rl_takes, rl_sb, RL_R, rl_unpack, rl_quad_any, RL_MASK16, qx_upper_clean())
