/* qgemm_rl_avx2.c: the K-quant prefill products (Q2_K .. Q6_K; IQ4_XS stays on the 8-token tiles) on AVX2 CPUs with
 * the weight rows in the vector lanes, as qgemm_rl_avx512.c on AVX512-VNNI: a panel of 8 rows unpacked once a call,
 * per super-block, as unsigned bytes laid out 8 rows x 4 values a ymm, and each token's 4 activation bytes broadcast
 * (a load). Without vpdpbusd, vpmaddubsw's int16 pair sums of up to four 4-value groups add in int16 (vpaddw: at
 * most 4 x 2 x 31 x 127 = 31496 for Q5_K's values; two groups for Q6_K's, 32004) before one vpmaddwd widens them with
 * the row's scale (both int16 halves of its dword lane): per 16 values and token 4 vpmaddubsw, 3 vpaddw, a vpmaddwd
 * and a vpaddd for 8 rows, where the 8-token tiles spend a vpmaddubsw, a vpmaddwd and a vpaddd per 32 products and
 * repeat each row's unpack per token group. The values' offsets (Q6_K 32, Q3_K 4) and the mins go through the
 * packed 16- / 32-value activation sums and the scales / mins as int16 pairs (vpmaddwd), so each (row, token,
 * super-block) sum is the one-row kernels' exact int32 and the float steps are theirs (acc = fma((float)isum,
 * d * D_a, acc); Q2_K acc = fma(-(float)msum, dmin * D_a, acc); Q4_K / Q5_K off = off - (dmin * D_a) m,
 * out = acc + off): bitwise quant_dot_avx2 (test_quant's test_tiles_exact). */
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "mcommon.h"
#include "quant.h"
#include "quant_x86.h"

#define AI __attribute__((always_inline)) static inline
#include "quant_avx2_ops.h" /* ld, dp, dpsc, qx_bits_bytes */
#include "quant_x86_kern.h" /* the row kernels' unpack helpers */
#include "qgemm_rl.h"

enum { RL8 = 8 }; /* weight rows a panel: one a dword lane */

/* one panel's super-block, unpacked (32-byte aligned) */
typedef struct rl8_sb {
    uint8_t v[8][8][32]; /* [block][4-value group][row * 4 + k]: the values as unsigned bytes */
    int32_t sc[16][8];   /* [scale][row]: the scale in both int16 halves (vpmaddwd's pair) */
    int32_t op[8][8];    /* [pair][row]: the scales as int16 pairs, for the offset sums */
    int32_t mp[8][8];    /* [pair][row]: the mins as int16 pairs */
    float d[8], dmin[8];
} rl8_sb;

static int rl8_takes(uint32_t type) {
    return type == GGML_Q2_K || type == GGML_Q3_K || type == GGML_Q4_K || type == GGML_Q5_K || type == GGML_Q6_K;
}

/* R[r] (8 dwords of row r) -> R[j] (dword j of the 8 rows) */
AI void rl8_transpose8(__m256i R[8]) {
    __m256i t[8], u[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_epi32(R[2 * i], R[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_epi32(R[2 * i], R[2 * i + 1]);
    }
    /* u[4 h + c]: in 128-bit lane L, rows 4 h .. 4 h + 3 of column 4 L + c */
    for (int h = 0; h < 2; h++) {
        u[4 * h] = _mm256_unpacklo_epi64(t[4 * h], t[4 * h + 2]);
        u[4 * h + 1] = _mm256_unpackhi_epi64(t[4 * h], t[4 * h + 2]);
        u[4 * h + 2] = _mm256_unpacklo_epi64(t[4 * h + 1], t[4 * h + 3]);
        u[4 * h + 3] = _mm256_unpackhi_epi64(t[4 * h + 1], t[4 * h + 3]);
    }
    for (int c = 0; c < 4; c++) {
        R[c] = _mm256_permute2x128_si256(u[c], u[4 + c], 0x20);     /* column c: lane 0 of both */
        R[4 + c] = _mm256_permute2x128_si256(u[c], u[4 + c], 0x31); /* column 4 + c: lane 1 */
    }
}

static void rl8_unpack(uint32_t type, const uint8_t *w0, size_t rb, int nv, int64_t nsb, rl8_sb *P) {
    const size_t bb = ggml_row_size(type, 256);
    uint8_t tmp[RL8][256];
    for (int64_t sb = 0; sb < nsb; sb++) {
        rl8_sb *S = &P[sb];
        const rl_panel_sb p = {&S->sc[0][0], &S->op[0][0], &S->mp[0][0], S->d, S->dmin, RL8};
        for (int r = 0; r < RL8; r++) {
            const uint8_t *x = w0 + (size_t)(r < nv ? r : nv - 1) * rb + (size_t)sb * bb;
            switch (type) { /* constant TYPE: each its own instance */
            case GGML_Q2_K: rl_unpack_row(GGML_Q2_K, x, r, tmp[r], p); break;
            case GGML_Q3_K: rl_unpack_row(GGML_Q3_K, x, r, tmp[r], p); break;
            case GGML_Q4_K: rl_unpack_row(GGML_Q4_K, x, r, tmp[r], p); break;
            case GGML_Q5_K: rl_unpack_row(GGML_Q5_K, x, r, tmp[r], p); break;
            default: rl_unpack_row(GGML_Q6_K, x, r, tmp[r], p); break;
            }
        }
        for (int k = 0; k < 16; k++)
            for (int r = 0; r < RL8; r++) S->sc[k][r] = rl_pair(S->sc[k][r], S->sc[k][r]);
        /* the 8 rows x 64 dwords transposed: group g = 8 b + i of row r to v[b][i][4 r], 8 groups at a time */
        for (int q = 0; q < 8; q++) {
            __m256i R[RL8];
            for (int r = 0; r < RL8; r++) R[r] = ld(tmp[r] + 32 * q); /* unaligned: see qgemm_rl_avx512.c */
            rl8_transpose8(R);
            __m256i *dst = (__m256i *)(void *)S->v + 8 * q;
            for (int j = 0; j < RL8; j++) _mm256_store_si256(dst + j, R[j]);
        }
    }
}

/* broadcast of the 4 bytes (or int16 pair) at p */
AI __m256i rl8_b4(const uint8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

/* 4 tokens (record tokens k0 .. k0 + 3 of the group whose records start at rec) x the panel P[0 .. nsb-1] into
 * y + t ldy (ntv valid tokens, the rows of mask) */
AI void rl8_quad(const uint32_t TYPE, const rl8_sb *P, int64_t nsb, const uint8_t *rec, int k0, float *y, int64_t ldy,
                 int ntv, __m256i mask) {
    const int s16 = TYPE == GGML_Q2_K || TYPE == GGML_Q3_K || TYPE == GGML_Q6_K; /* 16-value scales */
    const int q45 = TYPE == GGML_Q4_K || TYPE == GGML_Q5_K, q6 = TYPE == GGML_Q6_K;
    const int osh = q6 ? 5 : TYPE == GGML_Q3_K ? 2 : 0; /* log2 of the values' offset */
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    __m256 off0 = acc0, off1 = acc0, off2 = acc0, off3 = acc0;
    for (int64_t sb = 0; sb < nsb; sb++, rec += QUANT_KTILE_REC) {
        const rl8_sb *S = &P[sb];
        __m256i is0 = _mm256_setzero_si256(), is1 = is0, is2 = is0, is3 = is0;
#pragma GCC unroll 1
        for (int h2 = 0; h2 < 16; h2++) { /* half-block h2: block h2 / 2, its 4-value groups 4 (h2 % 2) .. + 3 */
            const int b = h2 >> 1, h = h2 & 1;
            const __m256i *V = (const __m256i *)(const void *)S->v[b][4 * h];
            const __m256i W0 = _mm256_load_si256(V), W1 = _mm256_load_si256(V + 1), W2 = _mm256_load_si256(V + 2),
                          W3 = _mm256_load_si256(V + 3);
            const __m256i sc = _mm256_load_si256((const __m256i *)(const void *)S->sc[s16 ? h2 : b]);
            const uint8_t *a = rec + 256 * b + 16 * h;
#define RL8_TOK(u, is)                                                                                                 \
    {                                                                                                                  \
        const uint8_t *at = a + QUANT_KTILE_TOFF(k0 + (u));                                                            \
        const __m256i p01 = _mm256_add_epi16(_mm256_maddubs_epi16(W0, rl8_b4(at)), _mm256_maddubs_epi16(W1, rl8_b4(at + 4))); \
        const __m256i p23 = _mm256_add_epi16(_mm256_maddubs_epi16(W2, rl8_b4(at + 8)), _mm256_maddubs_epi16(W3, rl8_b4(at + 12))); \
        if (q6) /* two groups' pairs at most in int16 (2 x 16002) */                                                  \
            is = _mm256_add_epi32(is, _mm256_add_epi32(_mm256_madd_epi16(p01, sc), _mm256_madd_epi16(p23, sc)));      \
        else                                                                                                           \
            is = _mm256_add_epi32(is, _mm256_madd_epi16(_mm256_add_epi16(p01, p23), sc));                             \
    }
            RL8_TOK(0, is0) RL8_TOK(1, is1) RL8_TOK(2, is2) RL8_TOK(3, is3)
#undef RL8_TOK
        }
        const __m256 d = _mm256_load_ps(S->d), dmin = _mm256_load_ps(S->dmin);
        const uint8_t *bs = rec + 2048, *s32 = rec + 2304;
#define RL8_END(u, is, acc, off)                                                                                       \
    {                                                                                                                  \
        const int k = k0 + (u);                                                                                        \
        const __m256 da = _mm256_set1_ps(((const float *)(const void *)(rec + 2432))[k]);                             \
        if (osh) { /* - o sum_k sc_k S_k over the 16-value sums */                                                    \
            __m256i o = _mm256_setzero_si256();                                                                        \
            for (int p = 0; p < 8; p++)                                                                                \
                o = _mm256_add_epi32(o, _mm256_madd_epi16(_mm256_load_si256((const __m256i *)(const void *)S->op[p]),  \
                                                          rl8_b4(bs + QUANT_KTILE_TOFF(k) + 4 * p)));                  \
            is = _mm256_sub_epi32(is, _mm256_slli_epi32(o, osh));                                                      \
        }                                                                                                              \
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is), _mm256_mul_ps(d, da), acc);                                      \
        if (TYPE == GGML_Q2_K) {                                                                                       \
            __m256i ms = _mm256_setzero_si256();                                                                       \
            for (int p = 0; p < 8; p++)                                                                                \
                ms = _mm256_add_epi32(ms, _mm256_madd_epi16(_mm256_load_si256((const __m256i *)(const void *)S->mp[p]), \
                                                            rl8_b4(bs + QUANT_KTILE_TOFF(k) + 4 * p)));                \
            acc = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(ms), _mm256_mul_ps(dmin, da), acc);                              \
        }                                                                                                              \
        if (q45) { /* m = sum_j mn_j s_j (exact), off = off - (dmin D_a) m */                                          \
            __m256i m = _mm256_setzero_si256();                                                                        \
            for (int p = 0; p < 4; p++)                                                                                \
                m = _mm256_add_epi32(m, _mm256_madd_epi16(_mm256_load_si256((const __m256i *)(const void *)S->mp[p]),  \
                                                          rl8_b4(s32 + QUANT_KTILE_TOFF(k) / 2 + 4 * p)));             \
            off = _mm256_sub_ps(off, _mm256_mul_ps(_mm256_mul_ps(dmin, da), _mm256_cvtepi32_ps(m)));                   \
        }                                                                                                              \
    }
        RL8_END(0, is0, acc0, off0) RL8_END(1, is1, acc1, off1) RL8_END(2, is2, acc2, off2) RL8_END(3, is3, acc3, off3)
#undef RL8_END
    }
    if (q45) {
        acc0 = _mm256_add_ps(acc0, off0);
        acc1 = _mm256_add_ps(acc1, off1);
        acc2 = _mm256_add_ps(acc2, off2);
        acc3 = _mm256_add_ps(acc3, off3);
    }
    if (ntv > 0) _mm256_maskstore_ps(y, mask, acc0);
    if (ntv > 1) _mm256_maskstore_ps(y + ldy, mask, acc1);
    if (ntv > 2) _mm256_maskstore_ps(y + 2 * ldy, mask, acc2);
    if (ntv > 3) _mm256_maskstore_ps(y + 3 * ldy, mask, acc3);
}

/* the instance of rl8_quad for the type (IQ4_XS is not taken: rl8_takes) */
AI void rl8_quad_any(uint32_t type, const rl8_sb *P, int64_t nsb, const uint8_t *rec, int k0, float *y, int64_t ldy,
                     int ntv, __m256i rows) {
    switch (type) {
    case GGML_Q2_K: rl8_quad(GGML_Q2_K, P, nsb, rec, k0, y, ldy, ntv, rows); break;
    case GGML_Q3_K: rl8_quad(GGML_Q3_K, P, nsb, rec, k0, y, ldy, ntv, rows); break;
    case GGML_Q4_K: rl8_quad(GGML_Q4_K, P, nsb, rec, k0, y, ldy, ntv, rows); break;
    case GGML_Q5_K: rl8_quad(GGML_Q5_K, P, nsb, rec, k0, y, ldy, ntv, rows); break;
    default: rl8_quad(GGML_Q6_K, P, nsb, rec, k0, y, ldy, ntv, rows); break;
    }
}

#define RL_MASK8(nv) const __m256i rows = _mm256_cmpgt_epi32(_mm256_set1_epi32(nv), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
RL_GEMM(quant_gemm_ktile_rl_avx2, rl8_takes, rl8_sb, RL8, rl8_unpack, rl8_quad_any, RL_MASK8, (void)0)
