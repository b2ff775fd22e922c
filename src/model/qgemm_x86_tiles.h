/* qgemm_x86_tiles.h: the prefill tiles of one weight row x 8 tokens (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1; the K-quants
 * Q2_K .. Q6_K and IQ4_XS) and their drivers qgemm_tiles / qgemm_ktiles, bitwise the one-row kernels of
 * quant_x86_kern.h that the same file's includer builds with the same ld / dp / dpsc / qx_bits_bytes. Three
 * includers: qgemm_avx2.c (AVX2: dp = vpmaddubsw + vpmaddwd; quant_gemm_avx2, quant_gemm_ktile_avx2),
 * qgemm256_avx512.c (AVX512-VNNI: dp = vpdpbusd; quant_gemm256_avx512 for the types the 512-bit tiles of
 * qgemm_avx512.c do not take, quant_gemm_ktile256_avx512 with the K-quant tiles on 512 bits, QG_ZMM) and
 * qgemm_avxvnni.c (AVX2 + AVX-VNNI, the K-quant tiles only: QG_KTILES_ONLY); and the decode tiles of QV_NR rows x 1
 * token (qgemv_tiles: quant_gemv_avx2, quant_gemv256_avx512). Include after AI, the ops, quant_x86_kern.h and
 * quant_rows.h, with QG_TILES_Q8_Q4 defined 1 (all the types) or 0 (prefill not Q8_0 / Q4_0 / Q4_1: qgemm_tiles
 * returns 0 for them; decode not Q4_0), QG_YMM_REGS (16 or 32) and QG_ZMM (0 or 1).
 *
 * The one-row kernels of the 32-value types take a weight row against up to 8 token rows: per block and token, 8
 * int32 lanes (dp) -> f32, acc = fma(d_w * d_a, lanes, acc), and for the types with a min a scalar sum over blocks
 * of m_w * s_a. Per (block, token) that is, besides the vector operations, a scalar product d_w * d_a and its
 * broadcast and a scalar product and add: the port-bound part of the loop. qa_tile runs the same operations with
 *   - the scale d_w * d_a as one vector product of two broadcasts (d_a a broadcast load), the same rounded
 *     product in every lane;
 *   - the m_w * s_a sums for 8 tokens at once from the activations' s transposed to [block][token] once per call
 *     (lane t: token t's rounded product and rounded add, in block order, as the scalar sum);
 *   - the rows' m converted once per call, not once per row and token group.
 * Tile: one weight row x 8 tokens (one ymm accumulator each); the row's unpacked block serves 8 tokens, as in the
 * one-row kernel. The final horizontal sum and the + sum are the one-row kernel's, so the results are bitwise the
 * same (tests/test_quant.c checks it on every tile edge). The K-quant tiles (qa_tile_k, qa_tile_kx, below) sum each
 * super-block to the one-row kernel's exact int32 instead. Zen 3 (AVX2), bench/qmm_rate.c: Q4_1 ~1.9x, Q8_0 ~1.4x
 * over the one-row kernels (the K-quants' numbers: BENCHMARKS.md, sessions 72 and 74).
 */
#ifndef INFLLM_QGEMM_X86_TILES_H
#define INFLLM_QGEMM_X86_TILES_H

#define QA_NT 8 /* tokens per tile: 8 ymm accumulators, one weight row */
/* the K-quant tiles' block loops: rolled where AVX2 has 16 vector registers (unrolled, GCC kept more of the blocks'
 * values live and spilled the accumulators: 0.9-0.95x), unrolled with AVX-512's 32 (1.04-1.1x) */
#if QG_YMM_REGS >= 32
#define QK_PRAGMA_UNROLL _Pragma("GCC unroll 8")
#define QK45_PRAGMA_UNROLL _Pragma("GCC unroll 8")
#else
#define QK_PRAGMA_UNROLL _Pragma("GCC unroll 1")
#define QK45_PRAGMA_UNROLL _Pragma("GCC unroll 2")
#endif

/* The tile's 8 accumulators are named variables, one per token (QA_T8 writes a token step 8 times): as an array
 * (acc[QA_NT] and per-token offset arrays) GCC kept it in memory as well, storing every accumulator to the stack
 * each block, and reloaded the token offsets from the stack: 1.3-1.5x slower on Zen 3 (the same instructions
 * otherwise). The 8 tokens are rows qstride / dstride apart; qgemm_tiles pads a last partial group. */
#define QA_T8(STEP) STEP(0, acc0) STEP(1, acc1) STEP(2, acc2) STEP(3, acc3) STEP(4, acc4) STEP(5, acc5) STEP(6, acc6) STEP(7, acc7)
#define QA_ACC_DECL __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0, acc4 = acc0, acc5 = acc0, \
                           acc6 = acc0, acc7 = acc0
#define QA_HSUMS(h) const float h[QA_NT] = {qx_hsum256(acc0), qx_hsum256(acc1), qx_hsum256(acc2), qx_hsum256(acc3), \
                                            qx_hsum256(acc4), qx_hsum256(acc5), qx_hsum256(acc6), qx_hsum256(acc7)}

/* One weight row (w) x QA_NT tokens (qa / da: token 0's rows, qstride / dstride apart; the first ntv are written),
 * y[t * ldy]. Q8_0 as kx_q8_0; Q4_1 as kx_q4_1; Q4_0 / Q5_0 / Q5_1 as k_q45_01
 * (the nibbles, Q5's fifth bit from qh, unsigned; the min m, or Q4_0's -8 d / Q5_0's -16 d, times the activation
 * sums): per block and token acc = fma(d_w * d_a, lanes, acc) (the product commutes, so both kernels' operand
 * orders give these bits); the m * s sum in block order, rounded product then rounded add, 8 tokens a vector from
 * st (s transposed [nb][QA_NT]) with mo the row's m per block (the one-row kernels write the product as its own
 * statement, so that no compiler contracts it into the add). */
AI void qa_tile(const uint32_t TYPE, const uint8_t *w, int64_t nb, const int8_t *qa, int64_t qstride, const float *da,
                int64_t dstride, const float *st, const float *mo, float *y, int64_t ldy, int ntv) {
    const int five = TYPE == GGML_Q5_0 || TYPE == GGML_Q5_1, has_min = TYPE == GGML_Q4_1 || TYPE == GGML_Q5_1;
    const int offs = TYPE != GGML_Q8_0; /* a min / offset sum */
    const size_t hdr = has_min ? 4 : 2, bb = TYPE == GGML_Q8_0 ? 34 : hdr + (five ? 4 : 0) + 16;
    QA_ACC_DECL;
    __m256 summs = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const uint8_t *wb = w + (size_t)b * bb;
        const __m256 dw = _mm256_set1_ps(qx_h2f(wb));
        __m256i u, sg = _mm256_setzero_si256();
        if (TYPE == GGML_Q8_0) {
            sg = ld(wb + 2);
            u = _mm256_abs_epi8(sg);
        } else {
            u = qx_q45_values(wb, hdr, five);
        }
        const int8_t *qb = qa + b * 32;
        const float *db = da + b;
        /* Q8_0: the weights' signs moved onto the activations (|w| unsigned), as kx_q8_0 */
#define QA_STEP(t, acc)                                                                                                \
    {                                                                                                                  \
        const __m256i a = ld(qb + (t) * qstride);                                                                      \
        const __m256i s = dp(u, TYPE == GGML_Q8_0 ? _mm256_sign_epi8(a, sg) : a);                                     \
        acc = _mm256_fmadd_ps(_mm256_mul_ps(dw, _mm256_broadcast_ss(db + (t) * dstride)), _mm256_cvtepi32_ps(s), acc); \
    }
        QA_T8(QA_STEP)
#undef QA_STEP
        if (offs) summs = _mm256_add_ps(summs, _mm256_mul_ps(_mm256_set1_ps(mo[b]), _mm256_loadu_ps(st + b * QA_NT)));
    }
    QA_HSUMS(h);
    float sm[QA_NT];
    _mm256_storeu_ps(sm, summs);
    for (int t = 0; t < ntv; t++) y[t * ldy] = offs ? h[t] + sm[t] : h[t]; /* Q8_0: no + 0 (it would turn a -0 into +0) */
}

/* ---- The K-quant and IQ4_XS tiles: one row x QA_NT tokens on QACT_Q8_K activations ----
 * Per super-block and token each computes the one-row kernel's exact int32 sum (quant_x86_kern.h: k_q45_k, k_q6_k,
 * k_kx), the 8 tokens' sums then one vector (lane t: token t), and that kernel's float steps with lane t token t's
 * chain: bitwise equal, as the sums are exact integers whatever order their lanes add in. The super-block's 32-value
 * blocks go in turn: each is unpacked to one vector of values and one of int16 scales, which the 8 tokens' products
 * take into 8 int32 accumulators (one a token) before the next block is unpacked, so that a tile lives in AVX2's 16
 * registers. (Until session 74 the tiles unpacked a super-block's 8 blocks before the tokens: 16-24 live vectors,
 * which AVX2 spilled, and GCC stored each token's products to the stack: 45 GMAC/s for Q4_K at 1 thread on a
 * Sapphire Rapids VM under INFLLM_SIMD=avx2.)
 * Q6_K and Q3_K take their values unsigned (q, 0..63; q + 4 h, 0..7), not as |w| against the activations with w's
 * sign: sum_k sc_k sum_i (v_i - o) a_i = sum_k sc_k sum_i v_i a_i - o sum_k sc_k S_k (o = 32, 4), with S_k the
 * token's 16-value activation sums (the record's KT_BS, int16, |S_k| <= 16 x 127), one vpmaddwd a super-block and
 * token; Q2_K's min sum sum_k mn_k S_k the same way (its one-row kernel multiplies each block's activations by ones
 * for it). vpmaddubsw's pairs stay below 2 x 63 x 127, far from int16 saturation. */

/* 8 int32 lanes of (s | s << 16) from 8 int16 scales s (the low 128 bits of s16): lane j's dword, broadcast by
 * vpermd, is the 16 int16 lanes of scale j (kq_bcast8's sc[j]) */
AI __m256i qa_scale_words(__m128i s16) {
    const __m256i v = _mm256_cvtepu16_epi32(s16);
    return _mm256_or_si256(v, _mm256_slli_epi32(v, 16));
}

/* scale vector for the 32-value block whose 16-value halves take dwords i and i + 1 of sw (qa_scale_words of 16-value
 * scales): lanes 0-7 scale i, lanes 8-15 scale i + 1 (kq_bcast16's sc[b] with i = 2 b mod 8) */
AI __m256i qa_sc_pair(__m256i sw, int i) {
    return _mm256_permutevar8x32_epi32(sw, _mm256_setr_epi32(i, i, i, i, i + 1, i + 1, i + 1, i + 1));
}

#define QA_IS_DECL __m256i is0 = _mm256_setzero_si256(), is1 = is0, is2 = is0, is3 = is0, is4 = is0, is5 = is0, \
                           is6 = is0, is7 = is0
#define QA_IS8(STEP) STEP(0, is0) STEP(1, is1) STEP(2, is2) STEP(3, is3) STEP(4, is4) STEP(5, is5) STEP(6, is6) STEP(7, is7)
#define QA_IS_SUM kq_hsum8_epi32(is0, is1, is2, is3, is4, is5, is6, is7)

/* 8 tokens' int32 sums (lane t: token t) of v, a vector a token */
AI __m256i kq_hsum8_epi32(__m256i v0, __m256i v1, __m256i v2, __m256i v3, __m256i v4, __m256i v5, __m256i v6,
                          __m256i v7) {
    const __m256i h0 = _mm256_hadd_epi32(_mm256_hadd_epi32(v0, v1), _mm256_hadd_epi32(v2, v3));
    const __m256i h1 = _mm256_hadd_epi32(_mm256_hadd_epi32(v4, v5), _mm256_hadd_epi32(v6, v7));
    /* h0: 128-bit half 0 holds v0..v3's low-half sums, half 1 their high-half sums; h1 the same for v4..v7 */
    return _mm256_add_epi32(_mm256_permute2x128_si256(h0, h1, 0x20), _mm256_permute2x128_si256(h0, h1, 0x31));
}

/* a packed activation record's parts (quant.h: QUANT_KTILE_REC bytes a group of QA_NT tokens and super-block) */
#define KT_Q(r) ((const int8_t *)(r))                          /* [8 blocks][4][2][32] values */
#define KT_BS(r) ((const int16_t *)(const void *)((r) + 2048)) /* [4][2][16] 16-value sums */
/* token t's bytes in a block's 256 or in the 16-value sums: tokens t and t + 4 side by side, so that one 512-bit
 * load takes two tokens (quant_ktile_pack) */
#define KT_TOFF(t) QUANT_KTILE_TOFF(t)

/* The tiles' token steps at the includer's width. QG_ZMM 0: 8 ymm accumulators, one a token (is_t, lanes of token t).
 * QG_ZMM 1 (AVX-512, qgemm256_avx512.c): 4 zmm accumulators, one a token pair (is_p: low half token p, high half
 * token p + 4; one 64-byte load of the record takes both), each block's 256-bit values and scales broadcast to both
 * halves (KT_W): each vpmaddubsw / vpdpwssd does 64 products, where Intel's cores run 512-bit integer operations on
 * two ports and 256-bit ones on two or three. KT_ALL(STEP) runs STEP(t, is) for every accumulator, KT_LD(a, t) loads
 * accumulator t's activations of the block at a, KT_SUM their int32 sums, token t in lane t. */
#if QG_ZMM
typedef __m512i kt_vec;
/* two accumulators a token pair, the even blocks' (is) and the odd blocks' (js): one chain of 8 vpdpwssd a super-block
 * (latency 5 each) had made the tile wait on it */
#define KT_DECL kt_vec is0 = _mm512_setzero_si512(), is1 = is0, is2 = is0, is3 = is0, js0 = is0, js1 = is0, js2 = is0, js3 = is0
#define KT_ALL(STEP) STEP(0, is0) STEP(1, is1) STEP(2, is2) STEP(3, is3)
#define KT_ALL_K(k, STEP)                                  \
    if ((k) & 1) {                                         \
        STEP(0, js0) STEP(1, js1) STEP(2, js2) STEP(3, js3) \
    } else {                                               \
        KT_ALL(STEP)                                       \
    }
#define KT_CLEAR_ODD js0 = js1 = js2 = js3 = _mm512_setzero_si512();
#define KT_W(x) _mm512_broadcast_i64x4(x)
#define KT_LD(a, p) _mm512_loadu_si512((const void *)((const char *)(a) + 64 * (p)))
#define KT_DPSC(acc, u, s, sc) _mm512_dpwssd_epi32(acc, _mm512_maddubs_epi16(u, s), sc)
#define KT_MADD(a, b) _mm512_madd_epi16(a, b)
#define KT_SUB(a, b) _mm512_sub_epi32(a, b)
#define KT_SLLI(a, n) _mm512_slli_epi32(a, n)
#define KT_SUM kz_hsum8_epi32(_mm512_add_epi32(is0, js0), _mm512_add_epi32(is1, js1), _mm512_add_epi32(is2, js2), \
                            _mm512_add_epi32(is3, js3))
/* the 8 tokens' int32 sums, token t in lane t, of z_p (its low 8 lanes token p's, its high 8 token p + 4's) */
AI __m256i kz_hsum8_epi32(__m512i z0, __m512i z1, __m512i z2, __m512i z3) {
    /* per 128-bit lane: [z0 0+2, z1 0+2, z0 1+3, z1 1+3], then [z0, z1, z2, z3] a 128-bit lane's sums */
    const __m512i u = _mm512_add_epi32(_mm512_unpacklo_epi32(z0, z1), _mm512_unpackhi_epi32(z0, z1));
    const __m512i v = _mm512_add_epi32(_mm512_unpacklo_epi32(z2, z3), _mm512_unpackhi_epi32(z2, z3));
    const __m512i w = _mm512_add_epi32(_mm512_unpacklo_epi64(u, v), _mm512_unpackhi_epi64(u, v));
    /* w's 128-bit lanes: tokens 0-3 (half 0 of the pairs' low 256 bits), 0-3 (half 1), 4-7, 4-7 */
    const __m512i x = _mm512_add_epi32(w, _mm512_shuffle_i64x2(w, w, 0xb1)); /* lanes 0+1, 1+0, 2+3, 3+2 */
    return _mm512_castsi512_si256(_mm512_shuffle_i64x2(x, x, 0x08)); /* lanes 0, 2 */
}
#else
typedef __m256i kt_vec;
#define KT_DECL QA_IS_DECL
#define KT_ALL(STEP) QA_IS8(STEP)
#define KT_W(x) (x)
#define KT_LD(a, t) ld((const char *)(a) + KT_TOFF(t))
#define KT_DPSC(acc, u, s, sc) dpsc(acc, u, s, sc)
#define KT_MADD(a, b) _mm256_madd_epi16(a, b)
#define KT_SUB(a, b) _mm256_sub_epi32(a, b)
#define KT_SLLI(a, n) _mm256_slli_epi32(a, n)
#define KT_SUM QA_IS_SUM
#define KT_ALL_K(k, STEP) KT_ALL(STEP)
#define KT_CLEAR_ODD
#endif
#define KT_S32(r) ((const int16_t *)(const void *)((r) + 2304)) /* [4][2][8 blocks] block sums s, tokens k, k + 4 */
#define KT_DT(r) ((const float *)(const void *)((r) + 2432))   /* [QA_NT] D_a */

/* Q4_K / Q5_K (five): k_q45_k's sums and steps: acc = fma(cvt(isum), d * D_a, acc); the mins' sum
 * m = sum_j mn_j s_j (exact) 8 tokens a vector, off = off - (dmin D_a) m; out = acc + off. rec: the token group's
 * first record. */
AI void qa_tile_k(const int five, const uint8_t *w, int64_t nsb, const uint8_t *rec, float *y, int64_t ldy, int ntv) {
    const size_t bb = five ? 176 : 144;
    const __m256i m4 = _mm256_set1_epi8(0xF);
    __m256 acc = _mm256_setzero_ps(), off = acc;
    for (int64_t sb = 0; sb < nsb; sb++, w += bb, rec += QUANT_KTILE_REC) {
        __m128i sc8, mn8;
        kq45_scale_bytes(w + 4, &sc8, &mn8);
        const __m256i sw = qa_scale_words(_mm_cvtepu8_epi16(sc8));
        KT_DECL;
QK45_PRAGMA_UNROLL
        for (int k = 0; k < 8; k++) { /* sub-block k: the low (even k) or high nibbles of 32 bytes */
            __m256i v = _mm256_and_si256(
                _mm256_srl_epi16(ld(w + (five ? 48 : 16) + 32 * (k >> 1)), _mm_cvtsi32_si128(4 * (k & 1))), m4);
            if (five) /* + 16 where bit k of qh byte l is set */
                v = _mm256_or_si256(v, _mm256_and_si256(_mm256_slli_epi16(_mm256_srl_epi16(ld(w + 16), _mm_cvtsi32_si128(k)), 4),
                                                        _mm256_set1_epi8(16)));
            const kt_vec vw = KT_W(v), sc = KT_W(_mm256_permutevar8x32_epi32(sw, _mm256_set1_epi32(k)));
            const int8_t *a = KT_Q(rec) + 256 * k;
#define QK_STEP(t, is) is = KT_DPSC(is, vw, KT_LD(a, t), sc);
            KT_ALL_K(k, QK_STEP)
#undef QK_STEP
        }
        const __m256 dat = _mm256_loadu_ps(KT_DT(rec)); /* lane t: token t's D_a */
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(KT_SUM), _mm256_mul_ps(_mm256_set1_ps(qx_h2f(w)), dat), acc);
        /* lane t: token t's m = sum_j mn_j s_j as an int32 (|m| <= 8 x 63 x 4064: exact as a float, the value the
         * one-row kernel's float sum gives), then (dmin D_a) m. Tokens k and k + 4 share a vpmaddwd (their sums side by
         * side in the record, the mins in both halves); three vphaddd leave token t in lane t. */
        const __m256i mn16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(mn8));
        const int16_t *s32 = KT_S32(rec);
        const __m256i m01 = _mm256_hadd_epi32(_mm256_madd_epi16(mn16, ld(s32)), _mm256_madd_epi16(mn16, ld(s32 + 16)));
        const __m256i m23 = _mm256_hadd_epi32(_mm256_madd_epi16(mn16, ld(s32 + 32)), _mm256_madd_epi16(mn16, ld(s32 + 48)));
        const __m256 m = _mm256_cvtepi32_ps(_mm256_hadd_epi32(m01, m23));
        const __m256 f = _mm256_mul_ps(_mm256_set1_ps(qx_h2f(w + 2)), dat);
        off = _mm256_sub_ps(off, _mm256_mul_ps(f, m));
    }
    float a8[QA_NT], om[QA_NT];
    _mm256_storeu_ps(a8, acc);
    _mm256_storeu_ps(om, off);
    for (int t = 0; t < ntv; t++) y[t * ldy] = a8[t] + om[t];
}

/* Q2_K / Q3_K / Q6_K (16-value scales) and IQ4_XS: the one-row kernels' (k_kx, k_q6_k) sums and steps: per super-block
 * acc = fma(cvt(isum), d * D_a, acc), for Q2_K then acc = fma(-cvt(msum), dmin * D_a, acc); out = acc. rec: the token
 * group's first record. */
AI void qa_tile_kx(const uint32_t TYPE, const uint8_t *w, int64_t nsb, const uint8_t *rec, float *y, int64_t ldy,
                   int ntv) {
    const size_t bb = ggml_row_size(TYPE, 256);
    const int q6 = TYPE == GGML_Q6_K, q3 = TYPE == GGML_Q3_K, q2 = TYPE == GGML_Q2_K, iq = TYPE == GGML_IQ4_XS;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t sb = 0; sb < nsb; sb++, w += bb, rec += QUANT_KTILE_REC) {
        const int16_t *bt = KT_BS(rec);
        float d, dmin = 0.f;
        __m256i s16 = _mm256_setzero_si256(), m16 = s16; /* the 16 scales (and Q2_K's mins) as int16 */
        __m256i sw0, sw1 = _mm256_setzero_si256(); /* scale words: 16-value scales 0-7, 8-15; IQ4_XS's 8 in sw0 */
        if (iq) {
            d = qx_h2f(w);
            sw0 = qa_scale_words(iq4xs_scales(w));
        } else {
            if (q6) {
                d = qx_h2f(w + 208);
                s16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)(w + 192)));
            } else if (q3) {
                d = qx_h2f(w + 108);
                s16 = _mm256_cvtepi8_epi16(q3k_scales(w));
            } else {
                d = qx_h2f(w + 80);
                dmin = qx_h2f(w + 82);
                const __m128i raw = _mm_loadu_si128((const __m128i *)(const void *)w); /* scale | min << 4 */
                s16 = _mm256_cvtepu8_epi16(_mm_and_si128(raw, _mm_set1_epi8(0xF)));
                m16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(raw, 4), _mm_set1_epi8(0xF)));
            }
            sw0 = qa_scale_words(_mm256_castsi256_si128(s16));
            sw1 = qa_scale_words(_mm256_extracti128_si256(s16, 1));
        }
        /* Q6_K / Q3_K: the values' offset, - o sum_k sc_k S_k, in lanes of its own */
        KT_DECL;
        const kt_vec s16w = KT_W(s16);
#define QX_OFF(t, is) is = KT_SUB(is, KT_SLLI(KT_MADD(s16w, KT_LD(bt, t)), q6 ? 5 : 2));
        if (q6 || q3) { KT_ALL(QX_OFF) }
#undef QX_OFF
        if (iq) {
            const __m256i tbl =
                _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)quant_iq4nl_values));
QK_PRAGMA_UNROLL
            for (int b = 0; b < 8; b++) {
                const __m256i sg = _mm256_shuffle_epi8(tbl, qx_q4_unpack(w + 8 + 16 * b)), u = _mm256_abs_epi8(sg);
                const kt_vec uw = KT_W(u), sc = KT_W(_mm256_permutevar8x32_epi32(sw0, _mm256_set1_epi32(b)));
                const int8_t *a = KT_Q(rec) + 256 * b;
#if QG_ZMM /* no vpsignb on 512 bits: the activations negated where the value is negative (no value is 0) */
                const __mmask64 neg = _mm512_movepi8_mask(KT_W(sg));
#define IQ_STEP(t, is)                                                                                                 \
    {                                                                                                                  \
        const __m512i av = KT_LD(a, t);                                                                                \
        is = KT_DPSC(is, uw, _mm512_mask_sub_epi8(av, neg, _mm512_setzero_si512(), av), sc);                           \
    }
#else
#define IQ_STEP(t, is) is = dpsc(is, uw, _mm256_sign_epi8(KT_LD(a, t), sg), sc);
#endif
                KT_ALL_K(b, IQ_STEP)
#undef IQ_STEP
            }
        } else {
            const __m256i m3 = _mm256_set1_epi8(3), m4 = _mm256_set1_epi8(0xF);
QK_PRAGMA_UNROLL
            for (int n = 0; n < 2; n++) { /* blocks 4n .. 4n + 3 */
                const __m256i sw = n ? sw1 : sw0;
                const uint8_t *qs = w + (q6 ? 64 : 32) * n + (q6 ? 0 : q3 ? 32 : 16);
                /* Q6_K: the two high bits of blocks 4n..4n+3; Q3_K: the third bits, plane b at bit b - 4n */
                const __m256i H = q6   ? ld(w + 128 + 32 * n)
                                  : q3 ? _mm256_srl_epi16(ld(w), _mm_cvtsi32_si128(4 * n))
                                       : _mm256_setzero_si256();
#pragma GCC unroll 4
                for (int j = 0; j < 4; j++) {
                    __m256i v;
                    if (q6) { /* ql: blocks j = 0, 1 the low nibbles of bytes 0-31, 32-63, j = 2, 3 their high ones */
                        const __m256i L = ld(qs + 32 * (j & 1));
                        v = _mm256_or_si256(_mm256_and_si256(j < 2 ? L : _mm256_srli_epi16(L, 4), m4),
                                            _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(H, 2 * j), m3), 4));
                    } else {
                        v = _mm256_and_si256(_mm256_srli_epi16(ld(qs), 2 * j), m3);
                        if (q3)
                            v = _mm256_or_si256(v, _mm256_slli_epi16(
                                                       _mm256_and_si256(_mm256_srli_epi16(H, j), _mm256_set1_epi8(1)), 2));
                    }
                    const kt_vec vw = KT_W(v), sc = KT_W(qa_sc_pair(sw, 2 * j));
                    const int8_t *a = KT_Q(rec) + 256 * (4 * n + j);
#define KX_STEP(t, is) is = KT_DPSC(is, vw, KT_LD(a, t), sc);
                    KT_ALL_K(j, KX_STEP)
#undef KX_STEP
                }
            }
        }
        const __m256 dat = _mm256_loadu_ps(KT_DT(rec));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(KT_SUM), _mm256_mul_ps(_mm256_set1_ps(d), dat), acc);
        if (q2) {
            const kt_vec m16w = KT_W(m16);
#define Q2_MS(t, is) is = KT_MADD(m16w, KT_LD(bt, t));
            KT_ALL(Q2_MS)
            KT_CLEAR_ODD
#undef Q2_MS
            acc = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(KT_SUM), _mm256_mul_ps(_mm256_set1_ps(dmin), dat), acc);
        }
    }
    float a8[QA_NT];
    _mm256_storeu_ps(a8, acc);
    for (int t = 0; t < ntv; t++) y[t * ldy] = a8[t];
}

/* the K-quant / IQ4_XS rows r0..r1-1 on activations packed by quant_ktile_pack */
static int qgemm_ktiles(uint32_t type, const void *w, int64_t r0, int64_t r1, int64_t cols, const void *packed,
                        int64_t ntok, float *y, int64_t ldy) {
    if (!quant_ktile_takes(type, cols, ntok) || r1 <= r0) return 0;
    const size_t rb = ggml_row_size(type, cols);
    const int64_t nsb = cols / 256;
    const uint8_t *w0 = (const uint8_t *)w + (size_t)r0 * rb;
    for (int64_t t0 = 0; t0 < ntok; t0 += QA_NT) {
        const int ntv = ntok - t0 < QA_NT ? (int)(ntok - t0) : QA_NT;
        const uint8_t *rec = (const uint8_t *)packed + (size_t)((t0 / QA_NT) * nsb) * QUANT_KTILE_REC;
        for (int64_t r = 0; r < r1 - r0; r++) {
            const uint8_t *wr = w0 + (size_t)r * rb;
            float *yr = y + t0 * ldy + r0 + r;
            switch (type) { /* constant TYPE: each its own instance */
            case GGML_Q6_K: qa_tile_kx(GGML_Q6_K, wr, nsb, rec, yr, ldy, ntv); break;
            case GGML_Q2_K: qa_tile_kx(GGML_Q2_K, wr, nsb, rec, yr, ldy, ntv); break;
            case GGML_Q3_K: qa_tile_kx(GGML_Q3_K, wr, nsb, rec, yr, ldy, ntv); break;
            case GGML_IQ4_XS: qa_tile_kx(GGML_IQ4_XS, wr, nsb, rec, yr, ldy, ntv); break;
            case GGML_Q5_K: qa_tile_k(1, wr, nsb, rec, yr, ldy, ntv); break;
            default: qa_tile_k(0, wr, nsb, rec, yr, ldy, ntv); break;
            }
        }
    }
    return 1;
}

#if !defined(QG_KTILES_ONLY) /* the includer takes only qgemm_ktiles (qgemm_avxvnni.c) */
static int qgemm_tiles(uint32_t type, const void *w, int64_t r0, int64_t r1, int64_t cols, const int8_t *q,
                       const float *d, const float *s, int64_t ntok, float *y, int64_t ldy) {
    const int kq = type == GGML_Q4_K || type == GGML_Q5_K, q6k = type == GGML_Q6_K;
    const int kx = type == GGML_Q2_K || type == GGML_Q3_K || type == GGML_IQ4_XS;
    const int q45 = type == GGML_Q4_0 || type == GGML_Q4_1 || type == GGML_Q5_0 || type == GGML_Q5_1;
    /* QG_TILES_Q8_Q4 0: not Q8_0 / Q4_0 / Q4_1 (the AVX-512 includer, whose one-row kernels for them differ) */
    const int taken = q45 || kq || q6k || kx || type == GGML_Q8_0;
    if (!taken || (!QG_TILES_Q8_Q4 && (type == GGML_Q8_0 || type == GGML_Q4_0 || type == GGML_Q4_1)) ||
        cols % (kq || q6k || kx ? 256 : QK) || r1 <= r0 || ntok <= 0)
        return 0;
    if (kq || q6k || kx) { /* the K-quants and IQ4_XS: their activations packed here (quant_matmul packs them once a
                              product and calls qgemm_ktiles) */
        if (!quant_ktile_takes(type, cols, ntok)) return 0;
        void *packed = malloc(quant_ktile_act_bytes(ntok, cols));
        if (!packed) return 0;
        for (int64_t g = 0; g < (ntok + QA_NT - 1) / QA_NT; g++) quant_ktile_pack(q, d, s, ntok, cols, g, packed);
        const int r = qgemm_ktiles(type, w, r0, r1, cols, packed, ntok, y, ldy);
        free(packed);
        return r;
    }
    const size_t rb = ggml_row_size(type, cols);
    const int64_t nb = cols / QK, nrows = r1 - r0;
    const uint8_t *w0 = (const uint8_t *)w + (size_t)r0 * rb;
    /* Q4_0 / Q4_1 / Q5_0 / Q5_1: the rows' m per block (as k_q45_01 / kx_q4_1 compute it) and each token group's s
     * transposed to [nb][QA_NT]; a last group of fewer than QA_NT tokens: its rows copied, the last one repeated
     * (computed, not written) */
    float *mo = q45 ? malloc((size_t)nrows * (size_t)nb * sizeof(float)) : NULL;
    float *st = q45 ? malloc((size_t)nb * QA_NT * sizeof(float)) : NULL;
    int8_t *qpad = ntok % QA_NT ? malloc((size_t)QA_NT * (size_t)cols) : NULL;
    float *dpad = ntok % QA_NT ? malloc((size_t)QA_NT * (size_t)nb * sizeof(float)) : NULL;
    if ((q45 && (!mo || !st)) || (ntok % QA_NT && (!qpad || !dpad))) {
        free(mo);
        free(st);
        free(qpad);
        free(dpad);
        return 0;
    }
    {
        const int five = type == GGML_Q5_0 || type == GGML_Q5_1, has_min = type == GGML_Q4_1 || type == GGML_Q5_1;
        const size_t bb = (has_min ? 4 : 2) + (five ? 4 : 0) + 16;
        for (int64_t r = 0; mo && r < nrows; r++)
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *wb = w0 + (size_t)r * rb + (size_t)b * bb;
                mo[r * nb + b] = has_min ? qx_h2f(wb + 2) : (five ? -16.f : -8.f) * qx_h2f(wb);
            }
    }
    for (int64_t t0 = 0; t0 < ntok; t0 += QA_NT) {
        const int ntv = ntok - t0 < QA_NT ? (int)(ntok - t0) : QA_NT;
        for (int k = 0; st && k < QA_NT; k++) {
            const int64_t t = t0 + (k < ntv ? k : ntv - 1);
            for (int64_t b = 0; b < nb; b++) st[b * QA_NT + k] = s[t * nb + b];
        }
        const int8_t *qa = q + t0 * cols;
        const float *da = d + t0 * nb;
        if (ntv < QA_NT) {
            for (int k = 0; k < QA_NT; k++) {
                const int64_t t = t0 + (k < ntv ? k : ntv - 1);
                memcpy(qpad + (size_t)k * (size_t)cols, q + t * cols, (size_t)cols);
                memcpy(dpad + (size_t)k * (size_t)nb, d + t * nb, (size_t)nb * sizeof(float));
            }
            qa = qpad;
            da = dpad;
        }
        for (int64_t r = 0; r < nrows; r++) {
            const uint8_t *wr = w0 + (size_t)r * rb;
            const float *mr = mo ? mo + r * nb : NULL;
            float *yr = y + t0 * ldy + r0 + r;
            switch (type) { /* constant TYPE: each its own instance */
#if QG_TILES_Q8_Q4
            case GGML_Q8_0: qa_tile(GGML_Q8_0, wr, nb, qa, cols, da, nb, st, mr, yr, ldy, ntv); break;
            case GGML_Q4_0: qa_tile(GGML_Q4_0, wr, nb, qa, cols, da, nb, st, mr, yr, ldy, ntv); break;
            case GGML_Q4_1: qa_tile(GGML_Q4_1, wr, nb, qa, cols, da, nb, st, mr, yr, ldy, ntv); break;
#endif
            case GGML_Q5_0: qa_tile(GGML_Q5_0, wr, nb, qa, cols, da, nb, st, mr, yr, ldy, ntv); break;
            default: qa_tile(GGML_Q5_1, wr, nb, qa, cols, da, nb, st, mr, yr, ldy, ntv); break;
            }
        }
    }
    free(mo);
    free(st);
    free(qpad);
    free(dpad);
    return 1;
}

/* ------------------------------------------------------------ decode ---- */
/* One token x QV_NR weight rows (w: the first, rb bytes apart; rows past nvalid repeat the last valid one and are
 * not written), y[r]. Per row and block exactly the one-row kernel's operations (kx_q8_0, kx_q4_1, k_q45_01): the
 * scale d_w * d_a a rounded scalar product, acc = fma(that, lanes, acc) (the product commutes), the min / offset
 * sum in block order as a rounded product then a rounded add; the final hsum + sum. What differs is only that the
 * QV_NR rows' chains run side by side (the one-row kernel's single FMA chain a row was the decode's bound: one
 * block per FMA latency) and that each activation block is loaded once for them. */
#define QV_NR 4
/* A decode tile's rows: the QV_NR row pointers (rows past nvalid repeat the last valid one) and its prefetch plan: the
 * rows pf ahead (quant_rows.h's distance, at least two tiles), a few lines a block (nblk blocks a row): a row is a few
 * hundred bytes, too short a stream for the hardware prefetcher to run ahead of (decode reads every weight once a
 * token, from memory). */
typedef struct qv_rows {
    const uint8_t *wr[QV_NR];
    const char *pf;
    int64_t lpb; /* lines a block */
} qv_rows;

AI void qv_rows_init(qv_rows *R, const uint8_t *w, size_t rb, int64_t nblk, int nvalid) {
    for (int r = 0; r < QV_NR; r++) R->wr[r] = w + (size_t)(r < nvalid ? r : nvalid - 1) * rb;
    const int64_t pfr = (int64_t)(QUANT_ROWS_PF_BYTES / rb) > 2 * QV_NR ? (int64_t)(QUANT_ROWS_PF_BYTES / rb) : 2 * QV_NR;
    R->pf = (const char *)w + (size_t)pfr * rb;
    R->lpb = ((int64_t)(QV_NR * rb) + 64 * nblk - 1) / (64 * nblk);
}

/* block b's share of the lines ahead */
AI void qv_prefetch(const qv_rows *R, int64_t b) {
    for (int64_t k = b * R->lpb; k < (b + 1) * R->lpb; k++) _mm_prefetch(R->pf + 64 * k, _MM_HINT_T0);
}

/* lane r: the sum of v[r]'s 8 int32 lanes (QV_NR = 4 rows reduced together) */
AI __m128i qv_hsum4_epi32(const __m256i v[QV_NR]) {
    const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

AI void qv_tile(const uint32_t TYPE, const uint8_t *w, size_t rb, int64_t nb, const int8_t *qa, const float *da,
                const float *sa, float *y, int nvalid) {
    const int five = TYPE == GGML_Q5_0 || TYPE == GGML_Q5_1, has_min = TYPE == GGML_Q4_1 || TYPE == GGML_Q5_1;
    const int offs = TYPE != GGML_Q8_0;
    const size_t hdr = has_min ? 4 : 2, bb = TYPE == GGML_Q8_0 ? 34 : hdr + (five ? 4 : 0) + 16;
    qv_rows R;
    qv_rows_init(&R, w, rb, nb, nvalid);
    const uint8_t *const *wr = R.wr;
    __m256 acc[QV_NR];
    float off[QV_NR];
    for (int r = 0; r < QV_NR; r++) {
        acc[r] = _mm256_setzero_ps();
        off[r] = 0.f;
    }
    for (int64_t b = 0; b < nb; b++) {
        qv_prefetch(&R, b);
        const __m256i a = ld(qa + b * 32);
        const float dab = da[b], sab = offs ? sa[b] : 0.f;
#pragma GCC unroll 4
        for (int r = 0; r < QV_NR; r++) {
            const uint8_t *wb = wr[r] + (size_t)b * bb;
            const float d = qx_h2f(wb);
            __m256i s;
            if (TYPE == GGML_Q8_0) {
                const __m256i q = ld(wb + 2);
                s = dp(_mm256_abs_epi8(q), _mm256_sign_epi8(a, q));
            } else {
                s = dp(qx_q45_values(wb, hdr, five), a);
            }
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * dab), _mm256_cvtepi32_ps(s), acc[r]);
            if (offs) {
                const float m = has_min ? qx_h2f(wb + 2) : (five ? -16.f : -8.f) * d;
                const float ms = m * sab;
                off[r] = off[r] + ms;
            }
        }
    }
    for (int r = 0; r < nvalid; r++) {
        const float h = qx_hsum256(acc[r]);
        y[r] = offs ? h + off[r] : h; /* Q8_0: no + 0 (it would turn a -0 into +0) */
    }
}

/* Q4_K / Q5_K (five): one token x QV_NR weight rows, k_q45_k's operations per row (bitwise): per super-block each
 * row's exact int32 sum (the QV_NR rows' sums reduced together, lane r row r), acc = fma((float)sum, d * D_a, acc),
 * the mins' m exact, off = off - (dmin D_a) m; out = acc + off. Rows ~16 KB ahead are prefetched (qv_rows). */
AI void qv_tile_k(const int five, const uint8_t *w, size_t rb, int64_t nsb, const int8_t *qa, const float *da,
                  const float *sa, float *y, int nvalid) {
    const size_t bb = five ? 176 : 144;
    qv_rows R;
    qv_rows_init(&R, w, rb, nsb, nvalid);
    const uint8_t *const *wr = R.wr;
    __m128 acc = _mm_setzero_ps(), off = acc;
    for (int64_t sb = 0; sb < nsb; sb++) {
        qv_prefetch(&R, sb);
        const int8_t *a = qa + sb * 256;
        const __m256 s8 = _mm256_loadu_ps(sa + sb * 8);
        __m256i is[QV_NR];
        __m256 mr[QV_NR];
        float dw[QV_NR], dmw[QV_NR];
#pragma GCC unroll 4
        for (int r = 0; r < QV_NR; r++) {
            const uint8_t *x = wr[r] + (size_t)sb * bb;
            __m256i sc[8], i0 = _mm256_setzero_si256(), i1 = i0;
            __m256 mn;
            kq45_scales(x + 4, sc, &mn);
#pragma GCC unroll 4
            for (int j = 0; j < 4; j++) {
                __m256i lo, hi;
                kq45_values(x, five, j, &lo, &hi);
                i0 = dpsc(i0, lo, ld(a + 64 * j), sc[2 * j]);
                i1 = dpsc(i1, hi, ld(a + 64 * j + 32), sc[2 * j + 1]);
            }
            is[r] = _mm256_add_epi32(i0, i1);
            mr[r] = _mm256_mul_ps(mn, s8);
            dw[r] = qx_h2f(x);
            dmw[r] = qx_h2f(x + 2);
        }
        /* lane r: row r's sum; the int32 and the (exact) float sums by one reduction for the QV_NR rows */
        const __m128i isum = qv_hsum4_epi32(is);
        const __m256 hm = _mm256_hadd_ps(_mm256_hadd_ps(mr[0], mr[1]), _mm256_hadd_ps(mr[2], mr[3]));
        const __m128 m = _mm_add_ps(_mm256_castps256_ps128(hm), _mm256_extractf128_ps(hm, 1));
        const __m128 Da = _mm_set1_ps(da[sb * 8]);
        acc = _mm_fmadd_ps(_mm_cvtepi32_ps(isum), _mm_mul_ps(_mm_loadu_ps(dw), Da), acc);
        off = _mm_sub_ps(off, _mm_mul_ps(_mm_mul_ps(_mm_loadu_ps(dmw), Da), m));
    }
    float o[QV_NR];
    _mm_storeu_ps(o, _mm_add_ps(acc, off));
    for (int r = 0; r < nvalid; r++) y[r] = o[r];
}

/* Q6_K: one token x QV_NR weight rows, k_q6_k's operations per row (bitwise), the rows' super-block sums reduced
 * together (lane r: row r), acc = fma((float)sum, d * D_a, acc); rows ~16 KB ahead prefetched (qv_rows). */
AI void qv_tile_q6k(const uint8_t *w, size_t rb, int64_t nsb, const int8_t *qa, const float *da, float *y, int nvalid) {
    qv_rows R;
    qv_rows_init(&R, w, rb, nsb, nvalid);
    const uint8_t *const *wr = R.wr;
    __m128 acc = _mm_setzero_ps();
    for (int64_t sb = 0; sb < nsb; sb++) {
        qv_prefetch(&R, sb);
        const int8_t *a = qa + sb * 256;
        __m256i is[QV_NR];
        float dw[QV_NR];
#pragma GCC unroll 4
        for (int r = 0; r < QV_NR; r++) {
            const uint8_t *x = wr[r] + (size_t)sb * 210;
            __m256i sc[8], u[8], sg[8], i0 = _mm256_setzero_si256(), i1 = i0;
            kq_bcast16(_mm_loadu_si128((const __m128i *)(const void *)(x + 192)), sc);
            q6k_signed(x, u, sg);
#pragma GCC unroll 4
            for (int b = 0; b < 8; b += 2) {
                i0 = dpsc(i0, u[b], _mm256_sign_epi8(ld(a + 32 * b), sg[b]), sc[b]);
                i1 = dpsc(i1, u[b + 1], _mm256_sign_epi8(ld(a + 32 * b + 32), sg[b + 1]), sc[b + 1]);
            }
            is[r] = _mm256_add_epi32(i0, i1);
            dw[r] = qx_h2f(x + 208);
        }
        acc = _mm_fmadd_ps(_mm_cvtepi32_ps(qv_hsum4_epi32(is)), _mm_mul_ps(_mm_loadu_ps(dw), _mm_set1_ps(da[sb * 8])),
                           acc);
    }
    float o[QV_NR];
    _mm_storeu_ps(o, acc);
    for (int r = 0; r < nvalid; r++) y[r] = o[r];
}

/* Q2_K / Q3_K / IQ4_XS: one token x QV_NR weight rows, k_kx's operations per row (bitwise), the rows' sums reduced
 * together (lane r: row r); rows ~16 KB ahead prefetched (qv_rows). */
AI void qv_tile_kx(const uint32_t TYPE, const uint8_t *w, size_t rb, int64_t nsb, const int8_t *qa, const float *da,
                   float *y, int nvalid) {
    const size_t bb = ggml_row_size(TYPE, 256);
    qv_rows R;
    qv_rows_init(&R, w, rb, nsb, nvalid);
    const uint8_t *const *wr = R.wr;
    __m128 acc = _mm_setzero_ps();
    for (int64_t sb = 0; sb < nsb; sb++) {
        qv_prefetch(&R, sb);
        __m256i is[QV_NR], ms[QV_NR];
        float dw[QV_NR], dmw[QV_NR];
#pragma GCC unroll 4
        for (int r = 0; r < QV_NR; r++) {
            kx_block k;
            kx_unpack(TYPE, wr[r] + (size_t)sb * bb, &k);
            kx_lanes(TYPE, &k, qa + sb * 256, &is[r], &ms[r]);
            dw[r] = k.d;
            dmw[r] = k.dmin;
        }
        const __m128 Da = _mm_set1_ps(da[sb * 8]);
        acc = _mm_fmadd_ps(_mm_cvtepi32_ps(qv_hsum4_epi32(is)), _mm_mul_ps(_mm_loadu_ps(dw), Da), acc);
        if (TYPE == GGML_Q2_K)
            acc = _mm_fnmadd_ps(_mm_cvtepi32_ps(qv_hsum4_epi32(ms)), _mm_mul_ps(_mm_loadu_ps(dmw), Da), acc);
    }
    float o[QV_NR];
    _mm_storeu_ps(o, acc);
    for (int r = 0; r < nvalid; r++) y[r] = o[r];
}

/* The decode driver (1-3 tokens): QV_NR-row tiles for Q8_0, Q4_1, Q5_0, Q5_1, the K-quants, IQ4_XS and, where
 * QG_TILES_Q8_Q4 is 1, Q4_0 (the AVX-512 one-row Q4_0 kernel pairs blocks in zmm lanes); 0 for other types. The
 * K-quants and IQ4_XS since session 73, whose one exact int32 a super-block makes the 4 rows' conversions one vector
 * (before, the same 4-row tile ran them no faster: bench/qmm_rate.c, 1 token, 5-7 GMAC/s either way). On AVX-512
 * CPUs these 256-bit tiles replaced the 2-rows-a-zmm decode of Q4_1 / Q8_0 (session 72, Sapphire Rapids, 1 token:
 * Q4_1 1.3x, Q8_0 1.1x; the AVX2 build of the same tiles had outrun it). */
static int qgemv_tiles(uint32_t type, const void *w, int64_t r0, int64_t r1, int64_t cols, const int8_t *q,
                       const float *d, const float *s, int64_t ntok, float *y, int64_t ldy) {
    const int q45 = (QG_TILES_Q8_Q4 && type == GGML_Q4_0) || type == GGML_Q4_1 || type == GGML_Q5_0 || type == GGML_Q5_1;
    const int kq = type == GGML_Q4_K || type == GGML_Q5_K || type == GGML_Q6_K || type == GGML_Q2_K ||
                   type == GGML_Q3_K || type == GGML_IQ4_XS;
    if ((type != GGML_Q8_0 && !q45 && !kq) || cols % (kq ? 256 : QK) || r1 <= r0 || ntok <= 0) return 0;
    const size_t rb = ggml_row_size(type, cols);
    const int64_t nb = cols / QK;
    for (int64_t t = 0; t < ntok; t++) {
        const int8_t *qa = q + t * cols;
        const float *da = d + t * nb, *sa = s + t * nb;
        for (int64_t r = r0; r < r1; r += QV_NR) {
            const int nv = r1 - r < QV_NR ? (int)(r1 - r) : QV_NR;
            const uint8_t *wr = (const uint8_t *)w + (size_t)r * rb;
            float *yr = y + t * ldy + r;
            switch (type) { /* constant TYPE: each its own instance */
            case GGML_Q8_0: qv_tile(GGML_Q8_0, wr, rb, nb, qa, da, sa, yr, nv); break;
#if QG_TILES_Q8_Q4
            case GGML_Q4_0: qv_tile(GGML_Q4_0, wr, rb, nb, qa, da, sa, yr, nv); break;
#endif
            case GGML_Q4_1: qv_tile(GGML_Q4_1, wr, rb, nb, qa, da, sa, yr, nv); break;
            case GGML_Q5_0: qv_tile(GGML_Q5_0, wr, rb, nb, qa, da, sa, yr, nv); break;
            case GGML_Q4_K: qv_tile_k(0, wr, rb, cols / 256, qa, da, sa, yr, nv); break;
            case GGML_Q5_K: qv_tile_k(1, wr, rb, cols / 256, qa, da, sa, yr, nv); break;
            case GGML_Q6_K: qv_tile_q6k(wr, rb, cols / 256, qa, da, yr, nv); break;
            case GGML_Q2_K: qv_tile_kx(GGML_Q2_K, wr, rb, cols / 256, qa, da, yr, nv); break;
            case GGML_Q3_K: qv_tile_kx(GGML_Q3_K, wr, rb, cols / 256, qa, da, yr, nv); break;
            case GGML_IQ4_XS: qv_tile_kx(GGML_IQ4_XS, wr, rb, cols / 256, qa, da, yr, nv); break;
            default: qv_tile(GGML_Q5_1, wr, rb, nb, qa, da, sa, yr, nv); break;
            }
        }
    }
    return 1;
}

#endif /* !QG_KTILES_ONLY */

#endif
