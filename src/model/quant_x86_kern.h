/* quant_x86_kern.h: the 256-bit quantized dot kernels of quant.h, shared by quant_avx512.c (AVX512-VNNI,
 * VL) and quant_avx2.c (AVX2 + FMA). An activation block of 32 int8 values is one ymm register; a weight
 * block is unpacked to unsigned bytes, and the including file's dp(u, s) gives 8 int32 lanes, lane k the
 * sum of the products of bytes 4k..4k+3 (vpdpbusd; on AVX2 vpmaddubsw + vpmaddwd, the same sums: no
 * pair of products here reaches the int16 limit, the largest being Q8_0's 2 x 128 x 127), so both files
 * compute bitwise the same results; scales are applied per block in float, but for Q4_K / Q5_K / Q6_K, whose
 * QACT_Q8_K activations let a super-block's sub-block scales apply in int32 (dpsc).
 * The includer defines, before including: AI (always-inline static), ld(p) (a 32-byte load), dp(u, s),
 * dpsc(acc, u, s, sc) (acc + dp with each int16 pair sum times its scale) and qx_bits_bytes(qh) (byte j = 0xff where bit j of qh is set, else 0), after gguf.h, mcommon.h, quant.h and
 * quant_x86.h. */
#ifndef INFLLM_QUANT_X86_KERN_H
#define INFLLM_QUANT_X86_KERN_H

/* one Q4_0 / Q4_1 / (five) Q5_0 / Q5_1 block's 32 values as unsigned bytes: its nibbles (after hdr bytes of d
 * [, m] and Q5's 4 bytes of qh), plus for Q5 16 where bit j of qh is set (the fifth bit of value j); also
 * qgemm_avx2.c's prefill and decode tiles */
AI __m256i qx_q45_values(const uint8_t *w, size_t hdr, int five) {
    __m256i u = qx_q4_unpack(w + hdr + (five ? 4 : 0));
    if (five) {
        uint32_t qh;
        memcpy(&qh, w + hdr, 4);
        u = _mm256_or_si256(u, _mm256_and_si256(qx_bits_bytes(qh), _mm256_set1_epi8(16)));
    }
    return u;
}

/* Q4_0 / Q4_1 and (five) Q5_0 / Q5_1: blocks of d [, m] [, qh] and 16 bytes of nibbles. The values
 * are unsigned: the nibbles, plus for Q5 the fifth bit of value j = bit j of qh (vpmovm2b); Q4_0's
 * -8 and Q5_0's -16 offsets go through the activation sums (m = -8 d, -16 d) as Q4_1's / Q5_1's min. */
AI void k_q45_01(int NA, int five, int has_min, int64_t nb, const uint8_t *w, const int8_t *const *qa,
                 const float *const *da, const float *const *sa, float *out) {
    __m256 acc[8];
    float off[8];
    for (int t = 0; t < NA; t++) { /* NA, not 8: zeroing all 8 compiled to rep stos, ~10% of a 1-token Q4_K row */
        acc[t] = _mm256_setzero_ps();
        off[t] = 0.f;
    }
    const size_t hdr = has_min ? 4 : 2, bb = hdr + (five ? 4 : 0) + 16;
    for (int64_t b = 0; b < nb; b++, w += bb) {
        float d = qx_h2f(w);
        float m = has_min ? qx_h2f(w + 2) : (five ? -16.f : -8.f) * d;
        const __m256i u = qx_q45_values(w, hdr, five);
        for (int t = 0; t < NA; t++) {
            __m256i s = dp(u, ld(qa[t] + b * 32));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(d * da[t][b]), acc[t]);
            /* two statements, as k_q45_k's: clang would contract m * s + off into an FMA, which rounds
             * otherwise where s is not an f16 value (Q4_0 / Q5_0's activations), and qgemm_avx2.c's twin
             * rounds the product */
            const float ms = m * sa[t][b];
            off[t] += ms;
        }
    }
    for (int t = 0; t < NA; t++) out[t] = qx_hsum256(acc[t]) + off[t];
}

/* 8 int16 scales (s16: the low 128 bits), scale j broadcast to the 16 int16 lanes of sc[j]: one scale a 32-value
 * block (Q4_K, Q5_K, IQ4_XS) */
AI void kq_bcast8(__m128i s16, __m256i sc[8]) {
    const __m256i v = _mm256_broadcastsi128_si256(s16);
#pragma GCC unroll 8
    for (int j = 0; j < 8; j++) sc[j] = _mm256_shuffle_epi8(v, _mm256_set1_epi16((short)((2 * j + 1) << 8 | 2 * j)));
}

/* 16 int8 scales (one a 16-value half block: Q6_K, Q2_K, Q3_K) as 8 vectors of int16: sc[b] holds block b's two, one a
 * 128-bit half (lanes 0-7: scale 2b, lanes 8-15: scale 2b + 1) */
AI void kq_bcast16(__m128i s8, __m256i sc[8]) {
    const __m256i v = _mm256_cvtepi8_epi16(s8);
    const __m256i lo = _mm256_permute2x128_si256(v, v, 0x00), hi = _mm256_permute2x128_si256(v, v, 0x11);
#pragma GCC unroll 4
    for (int k = 0; k < 4; k++) {
        const __m256i ctl = _mm256_setr_m128i(_mm_set1_epi16((short)((4 * k + 1) << 8 | 4 * k)),
                                              _mm_set1_epi16((short)((4 * k + 3) << 8 | (4 * k + 2))));
        sc[k] = _mm256_shuffle_epi8(lo, ctl);
        sc[4 + k] = _mm256_shuffle_epi8(hi, ctl);
    }
}

/* the sum of v's 8 int32 lanes (exact while it fits) */
AI int32_t qx_hsum256_epi32(__m256i v) {
    __m128i a = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    a = _mm_add_epi32(a, _mm_unpackhi_epi64(a, a));
    a = _mm_add_epi32(a, _mm_shuffle_epi32(a, 1));
    return _mm_cvtsi128_si32(a);
}

/* a * b + c rounded once (vfmadd231ss; written as an intrinsic so that no compiler turns it into two roundings) */
AI float kq_fma(float a, float b, float c) {
    return _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(a), _mm_set_ss(b), _mm_set_ss(c)));
}

/* IQ4_NL: the codes' signed values by vpshufb from the table, multiplied like Q8_0's (|w| x the activation with w's
 * sign) */
AI void k_iq4nl(int NA, int64_t nb, const uint8_t *w, const int8_t *const *qa, const float *const *da, float *out) {
    __m256 acc[8];
    for (int t = 0; t < NA; t++) acc[t] = _mm256_setzero_ps();
    const __m256i tbl = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)quant_iq4nl_values));
    for (int64_t b = 0; b < nb; b++, w += 18) {
        const float d = qx_h2f(w);
        const __m256i v = _mm256_shuffle_epi8(tbl, qx_q4_unpack(w + 2));
        const __m256i av = _mm256_abs_epi8(v);
        for (int t = 0; t < NA; t++) {
            __m256i s = dp(av, _mm256_sign_epi8(ld(qa[t] + b * 32), v));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(d * da[t][b]), acc[t]);
        }
    }
    for (int t = 0; t < NA; t++) out[t] = qx_hsum256(acc[t]);
}

/* an IQ4_XS super-block's 8 6-bit scales minus 32 as int16 (the low 128 bits), built in a general register (a vector
 * load of stored scalars stalled store forwarding): low nibbles from scales_l, two high bits each from scales_h */
AI __m128i iq4xs_scales(const uint8_t *w) {
    uint16_t sh;
    uint32_t sl;
    memcpy(&sh, w + 2, 2);
    memcpy(&sl, w + 4, 4);
    uint64_t lsv = 0;
#pragma GCC unroll 8
    for (int ib = 0; ib < 8; ib++)
        lsv |= (uint64_t)(((sl >> (4 * ib)) & 0xF) | (((uint32_t)sh >> (2 * ib)) & 3) << 4) << (8 * ib);
    return _mm_sub_epi16(_mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)lsv)), _mm_set1_epi16(32));
}

/* a Q3_K super-block's 16 6-bit scales minus 32 as int8, from its 12 bytes in general registers (llama.cpp's aux
 * steps) */
AI __m128i q3k_scales(const uint8_t *w) {
    uint32_t a0, a1, t;
    memcpy(&a0, w + 96, 4);
    memcpy(&a1, w + 100, 4);
    memcpy(&t, w + 104, 4);
    const uint32_t k1 = 0x03030303u, k2 = 0x0f0f0f0fu;
    const uint32_t s0 = (a0 & k2) | ((t & k1) << 4), s1 = (a1 & k2) | (((t >> 2) & k1) << 4);
    const uint32_t s2 = ((a0 >> 4) & k2) | (((t >> 4) & k1) << 4), s3 = ((a1 >> 4) & k2) | (((t >> 6) & k1) << 4);
    return _mm_sub_epi8(_mm_set_epi32((int)s3, (int)s2, (int)s1, (int)s0), _mm_set1_epi8(32));
}

/* Q2_K / Q3_K / IQ4_XS on QACT_Q8_K activations. A super-block is unpacked once (kx_unpack: per 32-value block b its
 * values u[b] as unsigned bytes, sg[b] the signed values where they are signed, sc[b] its scales as int16 lanes, Q2_K's
 * mins mn[b]) and each token's int32 lanes come from kx_lanes, which the one-row kernels and the prefill tiles
 * (qgemm_x86_tiles.h) share, so the two are bitwise equal. Q2_K: 16-value sub-blocks, one a 128-bit half of the
 * block's scale vector (kq_bcast16); the 2-bit values unsigned; its mins times the activations' 16-value sums in int32
 * too (dpsc with ones). Q3_K: the value
 * q + 4 h - 4 (-4..3) signed, its magnitude against the activation with its sign (as Q6_K), 16-value scales minus 32.
 * IQ4_XS: 8 blocks of 32 table values, each with a 6-bit scale minus 32 (kq_bcast8); magnitudes against signed
 * activations (vpmaddubsw's pairs at most 2 x 127 x 127 < 32768). */
typedef struct kx_block {
    __m256i u[8], sg[8], sc[8], mn[8];
    float d, dmin;
} kx_block;

AI void kx_unpack(const uint32_t TYPE, const uint8_t *w, kx_block *k) {
    const __m256i one = _mm256_set1_epi8(1);
    if (TYPE == GGML_IQ4_XS) {
        k->d = qx_h2f(w);
        k->dmin = 0.f;
        kq_bcast8(iq4xs_scales(w), k->sc);
        const __m256i tbl = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)quant_iq4nl_values));
#pragma GCC unroll 8
        for (int ib = 0; ib < 8; ib++) {
            k->sg[ib] = _mm256_shuffle_epi8(tbl, qx_q4_unpack(w + 8 + 16 * ib));
            k->u[ib] = _mm256_abs_epi8(k->sg[ib]);
        }
        return;
    }
    const int three = TYPE == GGML_Q3_K;
    const uint8_t *qs = w + (three ? 32 : 16);
    k->d = qx_h2f(w + (three ? 108 : 80));
    k->dmin = three ? 0.f : qx_h2f(w + 82);
    if (three) {
        kq_bcast16(q3k_scales(w), k->sc);
    } else {
        const __m128i m4 = _mm_set1_epi8(0xF);
        const __m128i raw = _mm_loadu_si128((const __m128i *)(const void *)w); /* scale | min << 4, 16 of them */
        kq_bcast16(_mm_and_si128(raw, m4), k->sc);
        kq_bcast16(_mm_and_si128(_mm_srli_epi16(raw, 4), m4), k->mn);
    }
    const __m256i m3 = _mm256_set1_epi8(3), four = _mm256_set1_epi8(4);
    const __m256i hm = three ? ld(w) : _mm256_setzero_si256();
#pragma GCC unroll 2
    for (int n = 0; n < 2; n++) {
        const __m256i Q = ld(qs + 32 * n);
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            const int b = 4 * n + j; /* the 32-value block: plane j of the n-th 32 bytes */
            __m256i u = _mm256_and_si256(_mm256_srli_epi16(Q, 2 * j), m3);
            if (three) { /* the third bit of plane 4 n + j: set +4 (value = u + 4 h - 4) */
                u = _mm256_or_si256(u, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hm, b), one), 2));
                k->sg[b] = _mm256_sub_epi8(u, four);
                u = _mm256_abs_epi8(k->sg[b]);
            }
            k->u[b] = u;
        }
    }
}

/* one token's lanes over the super-block (a: its 256 activations): *is the scaled value sums, *ms Q2_K's scaled
 * activation sums (its mins) */
AI void kx_lanes(const uint32_t TYPE, const kx_block *k, const int8_t *a, __m256i *is, __m256i *ms) {
    const __m256i one = _mm256_set1_epi8(1);
    __m256i i = _mm256_setzero_si256(), m = i;
#pragma GCC unroll 8
    for (int b = 0; b < 8; b++) {
        const __m256i av = ld(a + 32 * b);
        if (TYPE == GGML_Q2_K) {
            i = dpsc(i, k->u[b], av, k->sc[b]);
            m = dpsc(m, one, av, k->mn[b]);
        } else {
            i = dpsc(i, k->u[b], _mm256_sign_epi8(av, k->sg[b]), k->sc[b]);
        }
    }
    *is = i;
    *ms = m;
}

/* The super-block's lanes summed to exact int32s (isum; Q2_K's min sum msum: |msum| <= 16 x 15 x 16 x 127, isum at
 * most 8 x 32 x 32 x 127 x 127 < 2^31 for IQ4_XS), then per (row, token) a scalar chain as the other K-quants':
 * acc = fma((float)isum, d * D_a, acc), and for Q2_K acc = fma(-(float)msum, dmin * D_a, acc), in super-block order;
 * out = acc. The prefill tiles (8 tokens' sums one vector), the decode tiles (4 rows') and the AMX-INT8 tiles
 * (qgemm_amx.c) compute the same. */
AI void k_kx(int NA, const uint32_t TYPE, int64_t nsb, const uint8_t *w, const int8_t *const *qa, const float *const *da,
             float *out) {
    float acc[8];
    for (int t = 0; t < NA; t++) acc[t] = 0.f;
    const size_t bb = ggml_row_size(TYPE, 256);
    for (int64_t sb = 0; sb < nsb; sb++, w += bb) {
        kx_block k;
        kx_unpack(TYPE, w, &k);
        for (int t = 0; t < NA; t++) {
            __m256i is, ms;
            kx_lanes(TYPE, &k, qa[t] + sb * 256, &is, &ms);
            const float Da = da[t][sb * 8];
            acc[t] = kq_fma((float)qx_hsum256_epi32(is), k.d * Da, acc[t]);
            if (TYPE == GGML_Q2_K) acc[t] = kq_fma(-(float)qx_hsum256_epi32(ms), k.dmin * Da, acc[t]);
        }
    }
    for (int t = 0; t < NA; t++) out[t] = acc[t];
}

/* ---- Q4_K, Q5_K, Q6_K on QACT_Q8_K activations ----
 * A super-block's 256 activations share one scale D_a (da[8 sb], the same in its 8 blocks), so its products sum in
 * int32: lanes = the sum over its sub-blocks of dpsc(values, activations, the sub-block's integer scale), then per
 * super-block and token acc = fma(cvt(lanes), D_w * D_a, acc) (llama.cpp's q8_K kernels' idea; per 32 values and
 * token that is vpmaddubsw + vpdpwssd, or + vpmaddwd + vpaddd on AVX2, where the QACT_F32 kernels this replaced
 * converted and scaled every 32 values in float: 1.5-2x the work). Q4_K / Q5_K's mins: m = sum_j mn_j s_j over the
 * super-block's sub-blocks, s_j the block's integer activation sum (exact in float in any order: |m| <= 8 x 63 x
 * 4064 < 2^24), then off = off - (dmin D_a) m, two rounded products and a rounded subtract.
 * Q4_K / Q5_K sum a super-block's lanes to its one exact int32 (|sum| <= 8 x 63 x 31 x 32 x 127 < 2^26), so that
 * per (row, token) the float work is a scalar chain that any kernel shape can repeat bit for bit: per super-block
 * acc = fma((float)isum, D_w * D_a, acc), the product rounded first, in super-block order; out = acc + off. The
 * prefill tiles (qgemm_x86_tiles.h: 8 tokens' sums as one vector's lanes) and the AMX-INT8 tiles (qgemm_amx.c:
 * 16 rows x 16 tokens) compute exactly that: bitwise equal. Q6_K the same way: isum = sum_j sc_j sum (q - 32) a over
 * its 16 sub-blocks (|isum| <= 16 x 128 x 16 x 32 x 127 < 2^27), acc = fma((float)isum, d * D_a, acc), out = acc. */

/* a Q4_K / Q5_K super-block's 8 sub-block scales (the 12 bytes at q, unpacked in general registers: llama.cpp's utmp
 * steps) broadcast as kq_bcast8's, and its 8 mins as floats */
/* the 8 sub-block scales (sc8) and mins (mn8) of a Q4_K / Q5_K super-block as bytes 0-7, from the 12 bytes at q */
AI void kq45_scale_bytes(const uint8_t *q, __m128i *sc8, __m128i *mn8) {
    uint32_t u0, u1, u2;
    memcpy(&u0, q, 4);
    memcpy(&u1, q + 4, 4);
    memcpy(&u2, q + 8, 4);
    const uint32_t m6 = 0x3f3f3f3fu, m4 = 0x0f0f0f0fu, m2 = 0x03030303u;
    const uint32_t sc03 = u0 & m6, mn03 = u1 & m6;
    const uint32_t sc47 = (u2 & m4) | (((u0 >> 6) & m2) << 4), mn47 = ((u2 >> 4) & m4) | (((u1 >> 6) & m2) << 4);
    *sc8 = _mm_set_epi32(0, 0, (int)sc47, (int)sc03);
    *mn8 = _mm_set_epi32(0, 0, (int)mn47, (int)mn03);
}

AI void kq45_scales(const uint8_t *q, __m256i sc[8], __m256 *mn) {
    __m128i sc8, mn8;
    kq45_scale_bytes(q, &sc8, &mn8);
    kq_bcast8(_mm_cvtepu8_epi16(sc8), sc);
    *mn = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(mn8));
}

/* a Q4_K / Q5_K (five) super-block's values of sub-blocks 2j (lo) and 2j + 1 (hi) as unsigned bytes: the nibbles of
 * 32 bytes, plus for Q5_K 16 where bit 2j / 2j + 1 of qh byte l is set */
AI void kq45_values(const uint8_t *w, int five, int j, __m256i *lo, __m256i *hi) {
    const __m256i m4 = _mm256_set1_epi8(0xF);
    const __m256i q = ld(w + (five ? 48 : 16) + 32 * j);
    *lo = _mm256_and_si256(q, m4);
    *hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
    if (five) {
        const __m256i qh = ld(w + 16), s16 = _mm256_set1_epi8(16);
        const __m256i b1 = _mm256_set1_epi8((char)(1 << (2 * j))), b2 = _mm256_set1_epi8((char)(1 << (2 * j + 1)));
        *lo = _mm256_or_si256(*lo, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, b1), b1), s16));
        *hi = _mm256_or_si256(*hi, _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, b2), b2), s16));
    }
}

/* Q4_K / Q5_K (five), the one-row kernel (quant_dot_rows; the decode products): NA tokens, two int32 chains a token
 * (sub-blocks 2j and 2j + 1: vpdpwssd's latency) */
AI void k_q45_k(int NA, int five, int64_t nsb, const uint8_t *w, const int8_t *const *qa, const float *const *da,
                const float *const *sa, float *out) {
    float acc[8], off[8];
    for (int t = 0; t < NA; t++) { /* NA, not 8: zeroing all 8 compiled to rep stos, ~10% of a 1-token Q4_K row */
        acc[t] = 0.f;
        off[t] = 0.f;
    }
    const size_t bb = five ? 176 : 144;
    for (int64_t sb = 0; sb < nsb; sb++, w += bb) {
        __m256i sc[8], i0[8], i1[8];
        __m256 mn;
        kq45_scales(w + 4, sc, &mn);
        const float d = qx_h2f(w), dmin = qx_h2f(w + 2);
        for (int t = 0; t < NA; t++) i0[t] = i1[t] = _mm256_setzero_si256();
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            __m256i lo, hi;
            kq45_values(w, five, j, &lo, &hi);
            for (int t = 0; t < NA; t++) {
                const int8_t *a = qa[t] + sb * 256 + 64 * j;
                i0[t] = dpsc(i0[t], lo, ld(a), sc[2 * j]);
                i1[t] = dpsc(i1[t], hi, ld(a + 32), sc[2 * j + 1]);
            }
        }
        for (int t = 0; t < NA; t++) {
            const float Da = da[t][sb * 8];
            acc[t] = kq_fma((float)qx_hsum256_epi32(_mm256_add_epi32(i0[t], i1[t])), d * Da, acc[t]);
            const float m = qx_hsum256(_mm256_mul_ps(mn, _mm256_loadu_ps(sa[t] + sb * 8))); /* exact */
            const float f = dmin * Da;
            const float g = f * m; /* statements of their own: no compiler contracts them into an FMA */
            off[t] -= g;
        }
    }
    for (int t = 0; t < NA; t++) out[t] = acc[t] + off[t];
}

/* Q6_K: half n (0, 1) of a 210-byte super-block's codes as the unsigned 6-bit values (0..63) of its four 32-value
 * blocks 4n..4n+3 (low nibbles from ql, the two high bits from qh) */
AI void q6k_unpack(const uint8_t *w, int n, __m256i q[4]) {
    const __m256i m4 = _mm256_set1_epi8(0xF), m3 = _mm256_set1_epi8(3);
    const __m256i L0 = ld(w + 64 * n), L1 = ld(w + 64 * n + 32), H = ld(w + 128 + 32 * n);
    q[0] = _mm256_or_si256(_mm256_and_si256(L0, m4), _mm256_slli_epi16(_mm256_and_si256(H, m3), 4));
    q[1] = _mm256_or_si256(_mm256_and_si256(L1, m4), _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(H, 2), m3), 4));
    q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(L0, 4), m4),
                           _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(H, 4), m3), 4));
    q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(L1, 4), m4),
                           _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(H, 6), m3), 4));
}

/* a Q6_K super-block's values minus 32 (sg, signed, -32..31) and their magnitudes (u): the weights' offset moves into
 * signed weights, whose signs go onto the activations (|q - 32| <= 32 keeps vpmaddubsw's pairs far from saturation),
 * as Q8_0's kernel does */
AI void q6k_signed(const uint8_t *w, __m256i u[8], __m256i sg[8]) {
    const __m256i c32 = _mm256_set1_epi8(32);
#pragma GCC unroll 2
    for (int n = 0; n < 2; n++) {
        __m256i q[4];
        q6k_unpack(w, n, q);
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            sg[4 * n + k] = _mm256_sub_epi8(q[k], c32);
            u[4 * n + k] = _mm256_abs_epi8(sg[4 * n + k]);
        }
    }
}

AI void k_q6_k(int NA, int64_t nsb, const uint8_t *w, const int8_t *const *qa, const float *const *da, float *out) {
    float acc[8];
    for (int t = 0; t < NA; t++) acc[t] = 0.f;
    for (int64_t sb = 0; sb < nsb; sb++, w += 210) {
        __m256i sc[8], u[8], sg[8], i0[8], i1[8];
        kq_bcast16(_mm_loadu_si128((const __m128i *)(const void *)(w + 192)), sc);
        q6k_signed(w, u, sg);
        const float d = qx_h2f(w + 208);
        for (int t = 0; t < NA; t++) i0[t] = i1[t] = _mm256_setzero_si256();
#pragma GCC unroll 4
        for (int b = 0; b < 8; b += 2)
            for (int t = 0; t < NA; t++) {
                const int8_t *a = qa[t] + sb * 256 + 32 * b;
                i0[t] = dpsc(i0[t], u[b], _mm256_sign_epi8(ld(a), sg[b]), sc[b]);
                i1[t] = dpsc(i1[t], u[b + 1], _mm256_sign_epi8(ld(a + 32), sg[b + 1]), sc[b + 1]);
            }
        for (int t = 0; t < NA; t++)
            acc[t] = kq_fma((float)qx_hsum256_epi32(_mm256_add_epi32(i0[t], i1[t])), d * da[t][sb * 8], acc[t]);
    }
    for (int t = 0; t < NA; t++) out[t] = acc[t];
}


/* llama.cpp's order (ggml_vec_dot_q4_1_q8_1 / ggml_vec_dot_q8_0_q8_0, AVX2 + VNNI): per block,
 * 8 int32 lanes (lane k = the products of values 4k..4k+3) -> f32, acc = fma(d_w * d_a, lanes, acc);
 * at the end hsum (lanes k + k+4, then 0+2 / 1+3, then the two) plus, for Q4_1, the scalar
 * sum over blocks of m_w * s_a (rounded product, rounded add, in block order). Bitwise the
 * same results as llama.cpp's CPU backend for the same quantized activations. */
AI void kx_q4_1(int NA, int64_t nb, const uint8_t *w, const int8_t *const *qa, const float *const *da,
                const float *const *sa, float *out) {
    __m256 acc[8];
    float summs[8];
    for (int t = 0; t < NA; t++) {
        acc[t] = _mm256_setzero_ps();
        summs[t] = 0.f;
    }
    for (int64_t b = 0; b < nb; b++, w += 20) {
        float d = qx_h2f(w), m = qx_h2f(w + 2);
        __m256i u = qx_q4_unpack(w + 4);
        for (int t = 0; t < NA; t++) {
            __m256i s = dp(u, ld(qa[t] + b * 32));
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * da[t][b]), _mm256_cvtepi32_ps(s), acc[t]);
            float ms = m * sa[t][b];
            summs[t] = summs[t] + ms;
        }
    }
    for (int t = 0; t < NA; t++) out[t] = qx_hsum256(acc[t]) + summs[t];
}

AI void kx_q8_0(int NA, int64_t nb, const uint8_t *w, const int8_t *const *qa, const float *const *da, float *out) {
    __m256 acc[8];
    for (int t = 0; t < NA; t++) acc[t] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++, w += 34) {
        float d = qx_h2f(w);
        __m256i q = ld(w + 2);
        __m256i aq = _mm256_abs_epi8(q);
        for (int t = 0; t < NA; t++) {
            __m256i s = dp(aq, _mm256_sign_epi8(ld(qa[t] + b * 32), q));
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * da[t][b]), _mm256_cvtepi32_ps(s), acc[t]);
        }
    }
    for (int t = 0; t < NA; t++) out[t] = qx_hsum256(acc[t]);
}

/* float weights (F32 / F16 / BF16): the values i..n-1 past the vector loop, added to out in order */
AI void k_float_tail(int NA, uint32_t type, int64_t i, int64_t n, const uint8_t *w, const float *const *xa, float *out) {
    for (; i < n; i++) {
        float wf;
        uint16_t h;
        if (type == GGML_F32) {
            memcpy(&wf, w + 4 * i, 4);
        } else {
            memcpy(&h, w + 2 * i, 2);
            wf = type == GGML_F16 ? mdl_f16_to_f32(h) : mdl_bf16_to_f32(h);
        }
        for (int t = 0; t < NA; t++) out[t] += wf * xa[t][i];
    }
}

#define DISPATCH(call) \
    switch (na) {      \
    case 1: { const int NA = 1; call; } break; \
    case 2: { const int NA = 2; call; } break; \
    case 3: { const int NA = 3; call; } break; \
    case 4: { const int NA = 4; call; } break; \
    case 5: { const int NA = 5; call; } break; \
    case 6: { const int NA = 6; call; } break; \
    case 7: { const int NA = 7; call; } break; \
    default: { const int NA = 8; call; } break; \
    }

/* the switch cases of the types both files run on these kernels (all but Q4_0 and the float weights), for a
 * dot over w, n, qa, da, sa, out, na */
#define QX_CASES_256                                                                        \
    case GGML_Q8_0: DISPATCH(kx_q8_0(NA, n / 32, w, qa, da, out)); return 1;              \
    case GGML_Q4_1: DISPATCH(kx_q4_1(NA, n / 32, w, qa, da, sa, out)); return 1;          \
    case GGML_Q5_0: DISPATCH(k_q45_01(NA, 1, 0, n / 32, w, qa, da, sa, out)); return 1;   \
    case GGML_Q5_1: DISPATCH(k_q45_01(NA, 1, 1, n / 32, w, qa, da, sa, out)); return 1;   \
    case GGML_Q2_K: DISPATCH(k_kx(NA, GGML_Q2_K, n / 256, w, qa, da, out)); return 1;     \
    case GGML_Q3_K: DISPATCH(k_kx(NA, GGML_Q3_K, n / 256, w, qa, da, out)); return 1;     \
    case GGML_IQ4_NL: DISPATCH(k_iq4nl(NA, n / 32, w, qa, da, out)); return 1;            \
    case GGML_IQ4_XS: DISPATCH(k_kx(NA, GGML_IQ4_XS, n / 256, w, qa, da, out)); return 1; \
    case GGML_Q4_K: DISPATCH(k_q45_k(NA, 0, n / 256, w, qa, da, sa, out)); return 1;      \
    case GGML_Q5_K: DISPATCH(k_q45_k(NA, 1, n / 256, w, qa, da, sa, out)); return 1;      \
    case GGML_Q6_K: DISPATCH(k_q6_k(NA, n / 256, w, qa, da, out)); return 1;

#endif
