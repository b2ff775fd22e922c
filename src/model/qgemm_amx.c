/* qgemm_amx.c: prefill products of the K-quants (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) and IQ4_XS on Intel AMX-INT8 tiles
 * (Sapphire / Emerald / Granite Rapids), bitwise the one-row kernels (k_q45_k, k_q6_k, k_kx: quant_x86_kern.h) and so
 * the prefill and decode tiles of every other x86 path.
 *
 * The arithmetic those kernels share (quant_x86_kern.h): per (row, token) and super-block one exact int32
 * isum = sum_j sc_j sum_{k in sub-block j} q_k a_k, then acc = fma((float)isum, d * D_a, acc) in super-block order;
 * Q4_K / Q5_K's mins m = sum_j mn_j s_j (exact), off = off - (dmin * D_a) * m, out = acc + off; Q2_K's mins
 * msum (exact), acc = fma(-(float)msum, dmin * D_a, acc). Here:
 *   - the weights are the A operand (16 rows x 64 values a tile) and the activations the B operand (64 values x 16
 *     tokens in the VNNI layout, signed); the activations are packed once a product (quant_amx_pack_act: [token
 *     tile][64-value step][16 rows of 4 values][16 tokens x 4 bytes]) and serve every row;
 *   - a value times its sub-block scale does not fit a byte, so each weight goes in as two byte planes whose two
 *     accumulators give the sums back exactly: Q4_K / Q5_K the value (0..31) times sc >> 3 and times sc & 7 (both
 *     <= 217, unsigned: 8 C_0 + C_1 = isum); Q2_K the value times its scale (<= 45) and the min (<= 15), unsigned
 *     (C_0 = isum, C_1 = msum); Q3_K / Q6_K / IQ4_XS w = value x scale (|w| <= 128 / 4096 / 4064) as 64 p1 + p0 with
 *     p0 in -32..31, signed (64 C_1 + C_0 = isum). A super-block is then whole 64-deep tile products and one stored
 *     accumulator pair (not one a sub-block);
 *   - Q4_K / Q5_K's m from the activations' block sums as int16 pairs against the mins (vpdpwssd), exact as the
 *     float sum is.
 * Tile: 2 panels of 16 rows x 16 tokens (4 accumulators, the activation tile and 3 weight tiles in turn: 8 tiles);
 * loops: token tiles in groups of 16 outside, super-blocks, then the group's token tiles, so that a super-block's
 * unpacked panel rows (16 KB) stay in L1 while the tokens' packed activations stream; acc / off per (row, token) in a
 * buffer between super-blocks (the order of each chain is the super-blocks').
 *
 * Built on Linux x86-64 with -mamx-tile -mamx-int8 and the AVX512-VNNI flags; called only where
 * quant_amx_available() (AMX-INT8, the process's tile grant, AVX512-VNNI, no lower INFLLM_SIMD, INFLLM_QUANT_AMX not
 * 0). Elsewhere the entry points report "not taken". Each call loads its tile configuration and releases the tiles
 * before it returns (as src/attn/kern_dot16_amx.c), and leaves no dirty upper vector state behind (upper_clean).
 * tests/test_quant_amx.c runs this source with the tile instructions emulated (tests/amx_emu.h) and scalar helpers
 * (INFLLM_AMX_EMULATE) on any CPU. */
#if defined(INFLLM_AMX_EMULATE) || (defined(__x86_64__) && defined(__linux__))
#define QAMX_BUILT 1
#else
#define QAMX_BUILT 0
#endif

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "mcommon.h"
#include "quant.h"

#if QAMX_BUILT
#ifdef INFLLM_AMX_EMULATE
#include "amx_emu.h"
#else
#include <immintrin.h>
#include <stdatomic.h>

#include "cpu_x86.h"
#include "quant_x86.h"
#define AI __attribute__((always_inline)) static inline
#include "quant_avx512_ops.h" /* ld, dp, dpsc: the one-row kernels' own */
#include "quant_x86_kern.h" /* kx_unpack: the row kernels' reading of Q2_K / Q3_K / IQ4_XS */
#endif

enum {
    QAMX_T = QUANT_AMX_TILE_TOKENS, /* tokens a tile (16: the tile rows) */
    QAMX_R = 16, /* weight rows a panel */
    QAMX_NP = 2, /* panels a call's pass */
    QAMX_TG = 16, /* token tiles a group (acc / off buffers: QAMX_NP x QAMX_TG x 2 KB) */
};

/* a panel plane's bytes a 64-value step (16 rows x 64), and where a row's value v sits from the row's step-0 start */
#define QAMX_PSTEP 1024
#define QAMX_POS(v) ((size_t)((v) >> 6) * QAMX_PSTEP + (size_t)((v) & 63))

/* bytes of one packed token tile: the values [cols / 64][16][64], D_a [nsb][16] floats, the block sums as int16
 * pairs [nsb][4][16] int32 */
static size_t tile_bytes(int64_t cols) { return (size_t)(16 * cols + 320 * (cols / 256)); }

int quant_amx_takes(uint32_t type, int64_t cols, int64_t ntok) {
    return (type == GGML_Q4_K || type == GGML_Q5_K || type == GGML_Q6_K || type == GGML_Q2_K || type == GGML_Q3_K ||
            type == GGML_IQ4_XS) &&
           cols > 0 && cols % 256 == 0 && cols <= (1 << 24) && ntok >= QUANT_AMX_MIN_TOKENS;
}

size_t quant_amx_act_bytes(int64_t ntok, int64_t cols) {
    return (size_t)((ntok + QAMX_T - 1) / QAMX_T) * tile_bytes(cols);
}

/* a block-sum pair as vpdpwssd reads it: s[0] in the low int16, s[1] in the high one (the sums are integers of at
 * most 32 x 127; a NaN block's sums, which come with a NaN D_a that makes the output NaN anyway, as 0) */
static int32_t sum_pair(const float *s) {
    const int lo = isfinite(s[0]) ? (int)s[0] : 0, hi = isfinite(s[1]) ? (int)s[1] : 0;
    return (int32_t)(((uint32_t)(uint16_t)(int16_t)hi << 16) | (uint16_t)(int16_t)lo);
}

/* ---- the vector helpers (AVX-512), or their scalar twins under the emulation ---- */
#ifdef INFLLM_AMX_EMULATE
/* qv[c][i][t * 4 + j] = q[t][64 c + 4 i + j] (rows cols apart; tokens >= nv zero) */
static void pack_values(const int8_t *q, int64_t cols, int nv, int8_t *qv) {
    for (int64_t c = 0; c < cols / 64; c++)
        for (int i = 0; i < 16; i++)
            for (int t = 0; t < 16; t++)
                for (int j = 0; j < 4; j++)
                    qv[c * 1024 + i * 64 + t * 4 + j] = t < nv ? q[t * cols + c * 64 + 4 * i + j] : 0;
}

/* one row's step g: the 64 values of sub-blocks 2g (low nibbles of qs[32g..], plus 16 where qh's bit 2g is set:
 * Q5_K) and 2g + 1 (high nibbles, bit 2g + 1), times (sc >> 3) into hi and times (sc & 7) into lo */
static void unpack_scale(const uint8_t *qs, const uint8_t *qh, int five, int g, int sc0, int sc1, uint8_t *hi,
                         uint8_t *lo) {
    for (int k = 0; k < 64; k++) {
        const int l = k & 31, sc = k < 32 ? sc0 : sc1, bit = 2 * g + (k >= 32);
        const uint8_t b = qs[32 * g + l];
        const int v = (k < 32 ? b & 0xF : b >> 4) + (five && ((qh[l] >> bit) & 1) ? 16 : 0);
        hi[k] = (uint8_t)(v * (sc >> 3));
        lo[k] = (uint8_t)(v * (sc & 7));
    }
}

/* one tile's outputs: y[t * ldy + n] = acc[n][t] (+ off[n][t]) for t < tv, n < nv (the buffers' [row][token] 16 x 16
 * block transposed), each token's row segment written whole */
static void out_block(const float *acc, const float *off, int tv, int nv, float *y, int64_t ldy) {
    for (int t = 0; t < tv; t++)
        for (int n = 0; n < nv; n++) y[t * ldy + n] = off ? acc[16 * n + t] + off[16 * n + t] : acc[16 * n + t];
}

/* Q2_K / Q3_K / Q6_K / IQ4_XS: a row's super-block x as its two planes of 256 bytes: Q2_K the values times their
 * 16-value scales (0..45) and the mins (0..15), unsigned; the others w = value x scale (|w| <= 128 / 4096 / 4064)
 * as w = 64 p1 + p0 with p0 in -32..31 (p1 in -64..64), signed (ggml's block definitions, as kx_unpack / q6k_signed
 * read them); and d / dmin */
static inline __attribute__((always_inline)) void kx_planes(uint32_t type, const uint8_t *x, uint8_t *pl0, uint8_t *pl1,
                                                            float *d, float *dmin) {
    int16_t w[256];
    uint16_t h16;
    if (type == GGML_Q2_K) {
        for (int v = 0; v < 256; v++) {
            const int n = v >> 7, j = (v >> 5) & 3, l = v & 31, sc = x[v >> 4];
            w[v] = (int16_t)(((x[16 + 32 * n + l] >> (2 * j)) & 3) * (sc & 0xF));
            pl1[QAMX_POS(v)] = (uint8_t)(sc >> 4);
        }
        memcpy(&h16, x + 80, 2);
        *d = mdl_f16_to_f32(h16);
        memcpy(&h16, x + 82, 2);
        *dmin = mdl_f16_to_f32(h16);
        for (int v = 0; v < 256; v++) pl0[QAMX_POS(v)] = (uint8_t)w[v];
        return;
    }
    if (type == GGML_Q3_K) {
        uint32_t a0, a1, tt;
        memcpy(&a0, x + 96, 4);
        memcpy(&a1, x + 100, 4);
        memcpy(&tt, x + 104, 4);
        const uint32_t k1 = 0x03030303u, k2 = 0x0f0f0f0fu;
        const uint32_t aux[4] = {(a0 & k2) | ((tt & k1) << 4), (a1 & k2) | (((tt >> 2) & k1) << 4),
                                 ((a0 >> 4) & k2) | (((tt >> 4) & k1) << 4),
                                 ((a1 >> 4) & k2) | (((tt >> 6) & k1) << 4)};
        for (int v = 0; v < 256; v++) {
            const int n = v >> 7, j = (v >> 5) & 3, l = v & 31, i = v >> 4;
            const int q = ((x[32 + 32 * n + l] >> (2 * j)) & 3) - ((x[l] >> (4 * n + j)) & 1 ? 0 : 4);
            w[v] = (int16_t)(q * ((int)((aux[i / 4] >> (8 * (i % 4))) & 0xFF) - 32));
        }
        memcpy(&h16, x + 108, 2);
    } else if (type == GGML_Q6_K) { /* (q - 32) x the 16-value scale; q from ql's nibble and qh's two bits */
        for (int v = 0; v < 256; v++) {
            const int n = v >> 7, k = (v >> 5) & 3, l = v & 31;
            const uint8_t L = x[64 * n + 32 * (k & 1) + l];
            const int q = (k >= 2 ? L >> 4 : L & 0xF) | (((x[128 + 32 * n + l] >> (2 * k)) & 3) << 4);
            w[v] = (int16_t)((q - 32) * (int8_t)x[192 + (v >> 4)]);
        }
        memcpy(&h16, x + 208, 2);
    } else { /* IQ4_XS */
        uint16_t sh;
        memcpy(&sh, x + 2, 2);
        for (int v = 0; v < 256; v++) {
            const int ib = v >> 5, l = v & 15, hi = (v >> 4) & 1;
            const int ls = ((x[4 + ib / 2] >> (4 * (ib % 2))) & 0xF) | (((sh >> (2 * ib)) & 3) << 4);
            const uint8_t b = x[8 + 16 * ib + l];
            w[v] = (int16_t)(quant_iq4nl_values[hi ? b >> 4 : b & 0xF] * (ls - 32));
        }
        memcpy(&h16, x, 2);
    }
    *d = mdl_f16_to_f32(h16);
    *dmin = 0.f;
    for (int v = 0; v < 256; v++) {
        const int p0 = ((w[v] + 32) & 63) - 32;
        pl0[QAMX_POS(v)] = (uint8_t)(int8_t)p0;
        pl1[QAMX_POS(v)] = (uint8_t)(int8_t)((w[v] - p0) / 64);
    }
}

static inline __attribute__((always_inline)) void post_row_kx(uint32_t type, const int32_t *c0, const int32_t *c1,
                                                              const float *Da, float dw, float dmw, float *acc) {
    for (int t = 0; t < 16; t++) {
        if (type == GGML_Q2_K) {
            const float dd = dw * Da[t], dm = dmw * Da[t];
            acc[t] = fmaf((float)c0[t], dd, acc[t]);
            acc[t] = fmaf(-(float)c1[t], dm, acc[t]);
        } else {
            const int32_t is = c1[t] * 64 + c0[t];
            const float dd = dw * Da[t];
            acc[t] = fmaf((float)is, dd, acc[t]);
        }
    }
}

/* the 16 tokens of panel row n: isum from the two accumulators' rows, acc / off updated (k_q45_k's operations) */
static inline __attribute__((always_inline)) void post_row(const int32_t *chi, const int32_t *clo, const float *Da,
                                                           const int32_t *s2, float dw, float dmw, const int32_t mnp[4],
                                                           float *acc, float *off) {
    for (int t = 0; t < 16; t++) {
        const int32_t is = chi[t] * 8 + clo[t];
        const float dd = dw * Da[t];
        acc[t] = fmaf((float)is, dd, acc[t]);
        int32_t mi = 0;
        for (int p = 0; p < 4; p++) {
            const int32_t sp = s2[p * 16 + t];
            mi += (int32_t)(int16_t)(sp & 0xffff) * (int32_t)(int16_t)(mnp[p] & 0xffff) +
                  (int32_t)(int16_t)((uint32_t)sp >> 16) * (int32_t)(int16_t)((uint32_t)mnp[p] >> 16);
        }
        const float m = (float)mi;
        const float f = dmw * Da[t];
        const float g = f * m;
        off[t] = off[t] - g;
    }
}
#else
static void pack_values(const int8_t *q, int64_t cols, int nv, int8_t *qv) {
    const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32((int)cols));
    const __mmask16 valid = (__mmask16)((1u << nv) - 1u);
    for (int64_t c = 0; c < cols / 64; c++)
        for (int i = 0; i < 16; i++) {
            const __m512i g = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), valid, idx, q + c * 64 + 4 * i, 1);
            _mm512_storeu_si512(qv + c * 1024 + i * 64, g);
        }
}

static void unpack_scale(const uint8_t *qs, const uint8_t *qh, int five, int g, int sc0, int sc1, uint8_t *hi,
                         uint8_t *lo) {
    const __m256i m4 = _mm256_set1_epi8(0xF), q = _mm256_loadu_si256((const __m256i *)(const void *)(qs + 32 * g));
    __m256i a = _mm256_and_si256(q, m4), b = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
    if (five) { /* as kq45_values */
        const __m256i h = _mm256_loadu_si256((const __m256i *)(const void *)qh), s16 = _mm256_set1_epi8(16);
        const __m256i b1 = _mm256_set1_epi8((char)(1 << (2 * g))), b2 = _mm256_set1_epi8((char)(1 << (2 * g + 1)));
        a = _mm256_or_si256(a, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(h, b1), b1), s16));
        b = _mm256_or_si256(b, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(h, b2), b2), s16));
    }
    const __m512i x = _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1);
    /* bytes times a 16-bit lane's multiplier: each product < 256, so the even byte's product stays in the low byte
     * and the odd byte's in the high one */
    const __m512i mh =
        _mm512_inserti64x4(_mm512_set1_epi16((short)(sc0 >> 3)), _mm256_set1_epi16((short)(sc1 >> 3)), 1);
    const __m512i ml = _mm512_inserti64x4(_mm512_set1_epi16((short)(sc0 & 7)), _mm256_set1_epi16((short)(sc1 & 7)), 1);
    _mm512_storeu_si512(hi, _mm512_mullo_epi16(x, mh));
    _mm512_storeu_si512(lo, _mm512_mullo_epi16(x, ml));
}

static void out_block(const float *acc, const float *off, int tv, int nv, float *y, int64_t ldy) {
    __m512 r[16];
    for (int n = 0; n < 16; n++) /* the same rounded sums as the scalar twin's, then a 16 x 16 transpose */
        r[n] = off ? _mm512_add_ps(_mm512_loadu_ps(acc + 16 * n), _mm512_loadu_ps(off + 16 * n))
                   : _mm512_loadu_ps(acc + 16 * n);
    __m512 u[16];
    for (int k = 0; k < 16; k += 2) { /* 32-bit pairs */
        u[k] = _mm512_unpacklo_ps(r[k], r[k + 1]);
        u[k + 1] = _mm512_unpackhi_ps(r[k], r[k + 1]);
    }
    for (int k = 0; k < 16; k += 4) /* 64-bit pairs */
        for (int j = 0; j < 2; j++) {
            r[k + j] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(u[k + j]), _mm512_castps_pd(u[k + 2 + j])));
            r[k + 2 + j] =
                _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(u[k + j]), _mm512_castps_pd(u[k + 2 + j])));
        }
    /* r[4 q + c]: rows 4q..4q + 3 in each 128-bit lane L, at token 4 L + (0, 2, 1, 3)[c]; gather the lanes */
    for (int k = 0; k < 8; k++) { /* 128-bit lanes: (0, 2) and (1, 3) of rows 0-3 / 8-11 with rows 4-7 / 12-15 */
        const int a = k < 4 ? k : k + 4, b = a + 4;
        u[2 * k] = _mm512_shuffle_f32x4(r[a], r[b], 0x88);
        u[2 * k + 1] = _mm512_shuffle_f32x4(r[a], r[b], 0xDD);
    }
    const __mmask16 m = (__mmask16)((1u << nv) - 1u);
    for (int t = 0; t < tv; t++) {
        /* token t = 4 L + (0, 2, 1, 3)[c]: 128-bit lane L of the four row blocks' r[4 q + c] */
        const int L = t >> 2, c = (t & 3) == 1 ? 2 : (t & 3) == 2 ? 1 : (t & 3);
        const __m512 lo = u[2 * c + (L & 1)], hi = u[2 * (c + 4) + (L & 1)];
        const __m512 v = (L >> 1) ? _mm512_shuffle_f32x4(lo, hi, 0xDD) : _mm512_shuffle_f32x4(lo, hi, 0x88);
        _mm512_mask_storeu_ps(y + t * ldy, m, v);
    }
}

/* 32 int16 products (two 16-lane halves, in value order) into the planes' 32 bytes each */
static inline void kx_split(uint32_t type, __m256i w0, __m256i w1, const __m256i *mn, uint8_t *pl0, uint8_t *pl1) {
    if (type == GGML_Q2_K) { /* the values x scales and the mins (mn: kq_bcast16's layout) as they are (< 128) */
        const __m256i m0 = _mm256_permute2x128_si256(*mn, *mn, 0x00), m1 = _mm256_permute2x128_si256(*mn, *mn, 0x11);
        _mm256_storeu_si256((__m256i *)(void *)pl0, _mm256_permute4x64_epi64(_mm256_packs_epi16(w0, w1), 0xD8));
        _mm256_storeu_si256((__m256i *)(void *)pl1, _mm256_permute4x64_epi64(_mm256_packs_epi16(m0, m1), 0xD8));
        return;
    }
    const __m256i c32 = _mm256_set1_epi16(32), c63 = _mm256_set1_epi16(63);
    const __m256i p00 = _mm256_sub_epi16(_mm256_and_si256(_mm256_add_epi16(w0, c32), c63), c32);
    const __m256i p01 = _mm256_sub_epi16(_mm256_and_si256(_mm256_add_epi16(w1, c32), c63), c32);
    const __m256i p10 = _mm256_srai_epi16(_mm256_sub_epi16(w0, p00), 6),
                  p11 = _mm256_srai_epi16(_mm256_sub_epi16(w1, p01), 6);
    _mm256_storeu_si256((__m256i *)(void *)pl0, _mm256_permute4x64_epi64(_mm256_packs_epi16(p00, p01), 0xD8));
    _mm256_storeu_si256((__m256i *)(void *)pl1, _mm256_permute4x64_epi64(_mm256_packs_epi16(p10, p11), 0xD8));
}

static inline __attribute__((always_inline)) void kx_planes(uint32_t type, const uint8_t *x, uint8_t *pl0, uint8_t *pl1,
                                                            float *d, float *dmin) {
    kx_block k;
    switch (type) { /* constant TYPE for kx_unpack's instances */
    case GGML_Q2_K: kx_unpack(GGML_Q2_K, x, &k); break;
    case GGML_Q3_K: kx_unpack(GGML_Q3_K, x, &k); break;
    case GGML_Q6_K: /* k_q6_k's reading: q - 32 signed, the 16-value scales as Q3_K's */
        kq_bcast16(_mm_loadu_si128((const __m128i *)(const void *)(x + 192)), k.sc);
        q6k_signed(x, k.u, k.sg);
        k.d = qx_h2f(x + 208);
        k.dmin = 0.f;
        break;
    default: kx_unpack(GGML_IQ4_XS, x, &k); break;
    }
    *d = k.d;
    *dmin = k.dmin;
    for (int b = 0; b < 8; b++) {
        /* the block's values (Q2_K unsigned, else signed) as int16 halves; its scales as kq_bcast16 / kq_bcast8 laid
         * them out (int16 lanes 0-7: the first 16 values' scale, 8-15: the second's) */
        const __m256i v = type == GGML_Q2_K ? k.u[b] : k.sg[b];
        const __m256i v0 = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(v)),
                      v1 = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(v, 1));
        const __m256i s0 = _mm256_permute2x128_si256(k.sc[b], k.sc[b], 0x00),
                      s1 = _mm256_permute2x128_si256(k.sc[b], k.sc[b], 0x11);
        const size_t o = QAMX_POS(32 * b);
        kx_split(type, _mm256_mullo_epi16(v0, s0), _mm256_mullo_epi16(v1, s1), &k.mn[b], pl0 + o, pl1 + o);
    }
}

static inline __attribute__((always_inline)) void post_row_kx(uint32_t type, const int32_t *c0, const int32_t *c1,
                                                              const float *Da, float dw, float dmw, float *acc) {
    const __m512 da = _mm512_loadu_ps(Da);
    __m512 a = _mm512_loadu_ps(acc);
    if (type == GGML_Q2_K) {
        a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_loadu_si512(c0)), _mm512_mul_ps(_mm512_set1_ps(dw), da), a);
        a = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(_mm512_loadu_si512(c1)), _mm512_mul_ps(_mm512_set1_ps(dmw), da), a);
    } else {
        const __m512i is = _mm512_add_epi32(_mm512_slli_epi32(_mm512_loadu_si512(c1), 6), _mm512_loadu_si512(c0));
        a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), _mm512_mul_ps(_mm512_set1_ps(dw), da), a);
    }
    _mm512_storeu_ps(acc, a);
}

static inline __attribute__((always_inline)) void post_row(const int32_t *chi, const int32_t *clo, const float *Da,
                                                           const int32_t *s2, float dw, float dmw, const int32_t mnp[4],
                                                           float *acc, float *off) {
    const __m512 da = _mm512_loadu_ps(Da);
    const __m512i is = _mm512_add_epi32(_mm512_slli_epi32(_mm512_loadu_si512(chi), 3), _mm512_loadu_si512(clo));
    _mm512_storeu_ps(
        acc, _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), _mm512_mul_ps(_mm512_set1_ps(dw), da), _mm512_loadu_ps(acc)));
    __m512i mi = _mm512_setzero_si512();
    for (int p = 0; p < 4; p++)
        mi = _mm512_dpwssd_epi32(mi, _mm512_loadu_si512(s2 + p * 16), _mm512_set1_epi32(mnp[p]));
    const __m512 f = _mm512_mul_ps(_mm512_set1_ps(dmw), da);
    _mm512_storeu_ps(off, _mm512_sub_ps(_mm512_loadu_ps(off), _mm512_mul_ps(f, _mm512_cvtepi32_ps(mi))));
}
#endif

/* the output lines of tokens t0 .. t0 + 255 (< ntok) and rows r0..r1-1, asked for with the intent to write: a
 * product's y is written once, a few rows of each token row at a time (T x rows floats, often past L2), and the
 * tiles outran the read-for-ownership misses of those scattered lines (2048 x 768 at 512 tokens: 1.9x where the
 * 768-row product, whose y stays in L2, ran 3.6x) */
static void prefetch_out(float *y, int64_t ldy, int64_t t0, int64_t ntok, int64_t r0, int64_t r1) {
#ifdef INFLLM_AMX_EMULATE
    (void)y, (void)ldy, (void)t0, (void)ntok, (void)r0, (void)r1;
#else
    const int64_t t1 = t0 + QAMX_TG * QAMX_T < ntok ? t0 + QAMX_TG * QAMX_T : ntok;
    for (int64_t t = t0; t < t1; t++)
        for (int64_t r = r0; r < r1; r += 16) __builtin_prefetch(y + t * ldy + r, 1, 3);
    __builtin_prefetch(y + (t1 - 1) * ldy + r1 - 1, 1, 3);
#endif
}

/* before returning to the callers' SSE code: quant_avx512_ops.h's qx_upper_clean (without it, the model's RoPE right
 * after the q / k / v products ran ~25x slower: a Q4_K_M prefill at 245 tok/s with the AMX tiles against 265 without
 * them and 524 with it, Sapphire Rapids VM) */
static inline void upper_clean(void) {
#ifndef INFLLM_AMX_EMULATE
    qx_upper_clean();
#endif
}

int quant_amx_available(void) {
#ifdef INFLLM_AMX_EMULATE
    return 1;
#else
    static atomic_int cached = -1; /* threads racing here all store the same answer */
    int v = atomic_load_explicit(&cached, memory_order_relaxed);
    if (v < 0) {
        v = quant_avx512_available() && infllm_x86_amx_int8_ready() && quant_amx_allowed();
        atomic_store_explicit(&cached, v, memory_order_relaxed);
    }
    return v;
#endif
}

void quant_amx_pack_act(const int8_t *q, const float *d, const float *s, int64_t ntok, int64_t cols, int64_t tile,
                        void *packed) {
    const int64_t nsb = cols / 256, nb = cols / 32, t0 = tile * QAMX_T;
    const int nv = ntok - t0 < QAMX_T ? (int)(ntok - t0) : QAMX_T;
    uint8_t *base = (uint8_t *)packed + (size_t)tile * tile_bytes(cols);
    float *dv = (float *)(void *)(base + 16 * cols); /* [nsb][16] */
    int32_t *s2 = (int32_t *)(void *)(base + 16 * cols + 64 * nsb); /* [nsb][4][16] */
    pack_values(q + t0 * cols, cols, nv, (int8_t *)base);
    for (int64_t sb = 0; sb < nsb; sb++)
        for (int t = 0; t < QAMX_T; t++) {
            const int64_t r = (t0 + t) * nb + sb * 8;
            dv[sb * 16 + t] = t < nv ? d[r] : 0.f;
            for (int p = 0; p < 4; p++) s2[(sb * 4 + p) * 16 + t] = t < nv ? sum_pair(s + r + 2 * p) : 0;
        }
    upper_clean();
}

/* Q4_K / Q5_K (five): a row's super-block x as its two planes (values times sc >> 3, times sc & 7), d / dmin and
 * the mins as int16 pairs */
static void q45_planes(int five, const uint8_t *x, uint8_t *pl0, uint8_t *pl1, float *d, float *dmin, int32_t mnp[4]) {
    uint16_t h;
    memcpy(&h, x, 2);
    *d = mdl_f16_to_f32(h);
    memcpy(&h, x + 2, 2);
    *dmin = mdl_f16_to_f32(h);
    const uint8_t *sc12 = x + 4, *qh = x + 16, *qs = x + (five ? 48 : 16);
    int sc[8], mn[8];
    for (int j = 0; j < 8; j++) { /* ggml's get_scale_min_k4 */
        if (j < 4) {
            sc[j] = sc12[j] & 63;
            mn[j] = sc12[j + 4] & 63;
        } else {
            sc[j] = (sc12[j + 4] & 0xF) | ((sc12[j - 4] >> 6) << 4);
            mn[j] = (sc12[j + 4] >> 4) | ((sc12[j] >> 6) << 4);
        }
    }
    for (int p = 0; p < 4; p++) mnp[p] = (int32_t)((uint32_t)mn[2 * p + 1] << 16 | (uint32_t)mn[2 * p]);
    for (int g = 0; g < 4; g++)
        unpack_scale(qs, qh, five, g, sc[2 * g], sc[2 * g + 1], pl0 + g * QAMX_PSTEP, pl1 + g * QAMX_PSTEP);
}

typedef struct {
    uint8_t palette, start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} qamx_tilecfg;

/* tiles 0-3: the accumulators (panel p: 2p plane 0, 2p + 1 plane 1), 4: the activations, 5-7: the weights; all 16 x 64
 * bytes */
static void tiles_begin(void) {
    qamx_tilecfg c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int t = 0; t < 8; t++) {
        c.rows[t] = 16;
        c.colsb[t] = 64;
    }
#ifndef INFLLM_AMX_EMULATE
    /* GCC 12's _tile_loadconfig declares an 8-byte operand: without this the stores above may be dropped (TEAM_NOTES)
     */
    __asm__ volatile("" : : "m"(c) : "memory");
#endif
    _tile_loadconfig(&c);
}

/* the output of token tiles g0 .. g0 + ng - 1 and panel rows p0.. (np panels, nvp[p] valid rows each) from acc
 * (+ off where given), [panel][token tile][row][token], token by token: each token's row segment whole (a row-major
 * loop over the buffers wrote each output line 16 times, and where ldy is a multiple of 1024 every token's line falls
 * in one cache set: 1024-, 2048- and 4096-row products ran at half the rate of a 1536-row one) */
static void write_out(const float *accb, const float *offb, int np, const int *nvp, int64_t g0, int ng, int64_t ntok,
                      int64_t p0, float *y, int64_t ldy) {
    for (int i = 0; i < ng; i++) {
        const int64_t t0 = (g0 + i) * QAMX_T;
        const int tv = ntok - t0 < QAMX_T ? (int)(ntok - t0) : QAMX_T;
        for (int p = 0; p < np; p++) {
            const size_t o = (size_t)(p * QAMX_TG + i) * 256;
            out_block(accb + o, offb ? offb + o : NULL, tv, nvp[p], y + t0 * ldy + p0 + p * QAMX_R, ldy);
        }
    }
}

/* a panel's super-block: two planes, the rows' d / dmin, Q4_K / Q5_K's mins as int16 pairs. A row's value v of a
 * plane sits at step v / 64, offset v % 64 (QAMX_PSTEP bytes a step): the unpack functions below write that. */
typedef struct {
    uint8_t pl[2][4][16][64]; /* [plane][64-value step][row][64]: a step's 16 rows one tile at a 64-byte stride */
    float dw[16], dmw[16];
    int32_t mnp[16][4];
} qamx_panel;

/* Two panels a pass: tiles 0-3 the accumulators (panel p: 2p plane 0, 2p + 1 plane 1), 4 the activations, 5-7 the
 * weights. Q4_K / Q5_K / Q2_K's planes unsigned (TDPBUSD), the others' signed (TDPBSSD). Loops: token tiles in groups
 * of QAMX_TG, super-blocks, the group's token tiles; acc (and Q4_K / Q5_K's off) per (panel, token tile, row, token)
 * in buffers between super-blocks. */
static inline __attribute__((always_inline)) int gemm_planes(const uint32_t type, const void *w, int64_t r0, int64_t r1,
                                                             int64_t cols, const void *packed, int64_t ntok, float *y,
                                                             int64_t ldy) {
    const size_t rb = ggml_row_size(type, cols), tb = tile_bytes(cols), bb = ggml_row_size(type, 256);
    const int64_t nsb = cols / 256, ntt = (ntok + QAMX_T - 1) / QAMX_T;
    const int q45 = type == GGML_Q4_K || type == GGML_Q5_K, uns = q45 || type == GGML_Q2_K;
    const size_t pan = sizeof(qamx_panel) * QAMX_NP, cbs = 4 * 256 * sizeof(int32_t);
    const size_t accs = (size_t)QAMX_NP * QAMX_TG * 256 * sizeof(float);
    uint8_t *mem = malloc(pan + cbs + 2 * accs); /* every access unaligned-safe */
    if (!mem) return 0;
    qamx_panel *P = (qamx_panel *)(void *)mem;
    int32_t *cb = (int32_t *)(void *)(mem + pan);
    float *accb = (float *)(void *)(mem + pan + cbs), *offb = q45 ? accb + accs / sizeof(float) : NULL;
    tiles_begin();
    for (int64_t p0 = r0; p0 < r1; p0 += QAMX_NP * QAMX_R) {
        int nvp[QAMX_NP], np = 0;
        for (int p = 0; p < QAMX_NP && p0 + p * QAMX_R < r1; p++, np++)
            nvp[p] = r1 - (p0 + p * QAMX_R) < QAMX_R ? (int)(r1 - (p0 + p * QAMX_R)) : QAMX_R;
        /* rows past the matrix: zero planes for the whole pass (the unpack writes only the valid rows), never
         * written out */
        for (int p = 0; p < np; p++)
            for (int n = nvp[p]; n < QAMX_R; n++)
                for (int g = 0; g < 4; g++) memset(P[p].pl[0][g][n], 0, 64), memset(P[p].pl[1][g][n], 0, 64);
        for (int64_t g0 = 0; g0 < ntt; g0 += QAMX_TG) {
            const int ng = ntt - g0 < QAMX_TG ? (int)(ntt - g0) : QAMX_TG;
            memset(accb, 0, (q45 ? 2 : 1) * accs);
            prefetch_out(y, ldy, g0 * QAMX_T, ntok, p0, p0 + np * QAMX_R < r1 ? p0 + np * QAMX_R : r1);
            for (int64_t sb = 0; sb < nsb; sb++) {
                for (int p = 0; p < np; p++)
                    for (int n = 0; n < nvp[p]; n++) {
                        const uint8_t *x = (const uint8_t *)w + (size_t)(p0 + p * QAMX_R + n) * rb + (size_t)sb * bb;
                        if (q45)
                            q45_planes(type == GGML_Q5_K, x, P[p].pl[0][0][n], P[p].pl[1][0][n], &P[p].dw[n],
                                       &P[p].dmw[n], P[p].mnp[n]);
                        else
                            kx_planes(type, x, P[p].pl[0][0][n], P[p].pl[1][0][n], &P[p].dw[n], &P[p].dmw[n]);
                    }
                for (int i = 0; i < ng; i++) {
                    const uint8_t *base = (const uint8_t *)packed + (size_t)(g0 + i) * tb;
                    const int8_t *qv = (const int8_t *)base + sb * 4 * 1024;
                    const float *Da = (const float *)(const void *)(base + 16 * cols) + sb * 16;
                    const int32_t *s2 = (const int32_t *)(const void *)(base + 16 * cols + 64 * nsb) + sb * 64;
                    _tile_zero(0);
                    _tile_zero(1);
                    _tile_zero(2);
                    _tile_zero(3);
/* accumulator C += weights tile A x activations (tile 4), unsigned or signed weights (the intrinsics take the tile
 * numbers as constants) */
#define QAMX_DP(C, A)                                                                                                  \
    do {                                                                                                               \
        if (uns)                                                                                                       \
            _tile_dpbusd(C, A, 4);                                                                                     \
        else                                                                                                           \
            _tile_dpbssd(C, A, 4);                                                                                     \
    } while (0)
                    for (int g = 0; g < 4; g++) {
                        _tile_loadd(4, qv + g * 1024, 64);
                        _tile_loadd(5, P[0].pl[0][g][0], 64);
                        QAMX_DP(0, 5);
                        _tile_loadd(6, P[0].pl[1][g][0], 64);
                        QAMX_DP(1, 6);
                        if (np > 1) {
                            _tile_loadd(7, P[1].pl[0][g][0], 64);
                            QAMX_DP(2, 7);
                            _tile_loadd(5, P[1].pl[1][g][0], 64);
                            QAMX_DP(3, 5);
                        }
                    }
#undef QAMX_DP
                    _tile_stored(0, cb, 64);
                    _tile_stored(1, cb + 256, 64);
                    if (np > 1) {
                        _tile_stored(2, cb + 512, 64);
                        _tile_stored(3, cb + 768, 64);
                    }
                    for (int p = 0; p < np; p++)
                        for (int n = 0; n < nvp[p]; n++) {
                            const size_t o = ((size_t)(p * QAMX_TG + i) * 16 + (size_t)n) * 16;
                            const int32_t *c0 = cb + (2 * p) * 256 + n * 16, *c1 = cb + (2 * p + 1) * 256 + n * 16;
                            if (q45)
                                post_row(c0, c1, Da, s2, P[p].dw[n], P[p].dmw[n], P[p].mnp[n], accb + o, offb + o);
                            else
                                post_row_kx(type, c0, c1, Da, P[p].dw[n], P[p].dmw[n], accb + o);
                        }
                }
            }
            write_out(accb, offb, np, nvp, g0, ng, ntok, p0, y, ldy);
        }
    }
    _tile_release();
    free(mem);
    return 1;
}

static int gemm_any(uint32_t type, const void *w, int64_t r0, int64_t r1, int64_t cols, const void *packed,
                    int64_t ntok, float *y, int64_t ldy) {
    switch (type) { /* one instance a type: its unpack, signedness and post steps constant (a shared instance ran 8%
                     * slower) */
    case GGML_Q4_K: return gemm_planes(GGML_Q4_K, w, r0, r1, cols, packed, ntok, y, ldy);
    case GGML_Q5_K: return gemm_planes(GGML_Q5_K, w, r0, r1, cols, packed, ntok, y, ldy);
    case GGML_Q6_K: return gemm_planes(GGML_Q6_K, w, r0, r1, cols, packed, ntok, y, ldy);
    case GGML_Q2_K: return gemm_planes(GGML_Q2_K, w, r0, r1, cols, packed, ntok, y, ldy);
    case GGML_Q3_K: return gemm_planes(GGML_Q3_K, w, r0, r1, cols, packed, ntok, y, ldy);
    default: return gemm_planes(GGML_IQ4_XS, w, r0, r1, cols, packed, ntok, y, ldy);
    }
}

int quant_gemm_amx(uint32_t type, const void *w, int64_t r0, int64_t r1, int64_t cols, const void *packed, int64_t ntok,
                   float *y, int64_t ldy) {
    if (!quant_amx_takes(type, cols, ntok) || r1 <= r0) return 0;
    const int r = gemm_any(type, w, r0, r1, cols, packed, ntok, y, ldy);
    upper_clean();
    return r;
}

#else /* not built: no AMX here */
int quant_amx_available(void) { return 0; }
int quant_amx_takes(uint32_t type, int64_t cols, int64_t ntok) {
    (void)type, (void)cols, (void)ntok;
    return 0;
}
size_t quant_amx_act_bytes(int64_t ntok, int64_t cols) {
    (void)ntok, (void)cols;
    return 0;
}
void quant_amx_pack_act(const int8_t *q, const float *d, const float *s, int64_t ntok, int64_t cols, int64_t tile,
                        void *packed) {
    (void)q, (void)d, (void)s, (void)ntok, (void)cols, (void)tile, (void)packed;
}
int quant_gemm_amx(uint32_t type, const void *w, int64_t r0, int64_t r1, int64_t cols, const void *packed, int64_t ntok,
                   float *y, int64_t ldy) {
    (void)type, (void)w, (void)r0, (void)r1, (void)cols, (void)packed, (void)ntok, (void)y, (void)ldy;
    return 0;
}
#endif
