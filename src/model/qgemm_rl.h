/* qgemm_rl.h: the rows-in-lanes K-quant kernels' panel unpack (qgemm_rl_avx512.c: 16 rows a zmm; qgemm_rl_avx2.c: 8
 * rows a ymm), one weight row's super-block at a time with quant_x86_kern.h's 256-bit helpers. Include after AI, the
 * includer's ops and quant_x86_kern.h. */
#ifndef INFLLM_QGEMM_RL_H
#define INFLLM_QGEMM_RL_H

/* where a panel's super-block keeps its per-row numbers: sc [16][nr] (32-value types: block b's scale at b; 16-value
 * types: half-block k's at k), op [8][nr] (the scales as int16 pairs sc_2p | sc_2p+1 << 16: the offset sums), mp
 * [8][nr] (the mins as int16 pairs: Q2_K 8 of 16-value mins, Q4_K / Q5_K 4), d / dmin [nr] */
typedef struct rl_panel_sb {
    int32_t *sc, *op, *mp;
    float *d, *dmin;
    int nr;
} rl_panel_sb;

/* n bytes 64-byte aligned from malloc (aligned_alloc is missing from some C libraries): free(*base) releases them */
static inline void *rl_alloc64(size_t n, void **base) {
    *base = malloc(n + 63);
    return *base ? (void *)(((uintptr_t)*base + 63) & ~(uintptr_t)63) : NULL;
}

/* The entry point NAME (quant.h's quant_gemm_ktile_rl*): rows r0..r1-1 in panels of NR rows (a last panel's missing
 * rows repeat its last valid one; their lanes are not stored), each unpacked for every super-block into an array of
 * SB_T by UNPACK(type, w0, rb, nv, nsb, P), then 4 tokens at a time by QUAD_ANY(type, P, nsb, rec, k0, y, ldy, ntv,
 * rows) on the packed records; MASK_DECL(nv) declares `rows`, the store mask of the nv valid rows; TAKES(type) the
 * types the kernel takes; DONE before returning (the AVX-512 file's qx_upper_clean). 0 (nothing written) where the
 * type or shape is not taken or memory is short. */
#define RL_GEMM(NAME, TAKES, SB_T, NR, UNPACK, QUAD_ANY, MASK_DECL, DONE)                                              \
    int NAME(uint32_t type, const void *w, int64_t r0, int64_t r1, int64_t cols, const void *packed, int64_t ntok,     \
             float *y, int64_t ldy) {                                                                                  \
        if (!TAKES(type) || !quant_ktile_takes(type, cols, ntok) || r1 <= r0) return 0;                                \
        const int64_t nsb = cols / 256;                                                                                \
        const size_t rb = ggml_row_size(type, cols);                                                                   \
        void *base;                                                                                                    \
        SB_T *P = rl_alloc64(sizeof(SB_T) * (size_t)nsb, &base);                                                       \
        if (!P) return 0;                                                                                              \
        for (int64_t p0 = r0; p0 < r1; p0 += NR) {                                                                     \
            const int nv = r1 - p0 < NR ? (int)(r1 - p0) : NR;                                                         \
            MASK_DECL(nv);                                                                                             \
            UNPACK(type, (const uint8_t *)w + (size_t)p0 * rb, rb, nv, nsb, P);                                        \
            for (int64_t t0 = 0; t0 < ntok; t0 += 4) {                                                                 \
                const uint8_t *rec =                                                                                   \
                    (const uint8_t *)packed + (size_t)((t0 / QUANT_KTILE_TOKENS) * nsb) * QUANT_KTILE_REC;             \
                const int k0 = (int)(t0 % QUANT_KTILE_TOKENS), ntv = ntok - t0 < 4 ? (int)(ntok - t0) : 4;             \
                QUAD_ANY(type, P, nsb, rec, k0, y + t0 * ldy + p0, ldy, ntv, rows);                                    \
            }                                                                                                          \
        }                                                                                                              \
        free(base);                                                                                                    \
        DONE;                                                                                                          \
        return 1;                                                                                                      \
    }

/* two int16 as one dword: a in the low half */
static inline int32_t rl_pair(int a, int b) {
    return (int32_t)((uint32_t)(uint16_t)(int16_t)a | (uint32_t)(uint16_t)(int16_t)b << 16);
}

/* row r of a panel's super-block x: its 256 values into tmp (256 bytes, unsigned; IQ4_XS + 128), its scales, scale
 * pairs, min pairs, d and dmin into P's arrays (index [k][r], P.nr rows) */
AI void rl_unpack_row(const uint32_t TYPE, const uint8_t *x, int r, uint8_t *tmp, rl_panel_sb P) {
    if (TYPE == GGML_Q4_K || TYPE == GGML_Q5_K) {
        const int five = TYPE == GGML_Q5_K;
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            __m256i lo, hi;
            kq45_values(x, five, j, &lo, &hi);
            _mm256_storeu_si256((__m256i *)(void *)(tmp + 64 * j), lo);
            _mm256_storeu_si256((__m256i *)(void *)(tmp + 64 * j + 32), hi);
        }
        __m128i sc8, mn8;
        kq45_scale_bytes(x + 4, &sc8, &mn8);
        uint8_t s[16], m[16];
        _mm_storeu_si128((__m128i *)(void *)s, sc8);
        _mm_storeu_si128((__m128i *)(void *)m, mn8);
        for (int j = 0; j < 8; j++) P.sc[j * P.nr + r] = s[j];
        for (int p = 0; p < 4; p++) P.mp[p * P.nr + r] = rl_pair(m[2 * p], m[2 * p + 1]);
        P.d[r] = qx_h2f(x);
        P.dmin[r] = qx_h2f(x + 2);
    } else if (TYPE == GGML_Q6_K) {
#pragma GCC unroll 2
        for (int n = 0; n < 2; n++) {
            __m256i q[4];
            q6k_unpack(x, n, q);
            for (int k = 0; k < 4; k++) _mm256_storeu_si256((__m256i *)(void *)(tmp + 32 * (4 * n + k)), q[k]);
        }
        const int8_t *s = (const int8_t *)(x + 192);
        for (int k = 0; k < 16; k++) P.sc[k * P.nr + r] = s[k];
        for (int p = 0; p < 8; p++) P.op[p * P.nr + r] = rl_pair(s[2 * p], s[2 * p + 1]);
        P.d[r] = qx_h2f(x + 208);
        P.dmin[r] = 0.f;
    } else if (TYPE == GGML_IQ4_XS) {
        const __m256i tbl = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)quant_iq4nl_values));
        for (int b = 0; b < 8; b++) /* the signed table values + 128 as unsigned bytes */
            _mm256_storeu_si256((__m256i *)(void *)(tmp + 32 * b),
                                _mm256_xor_si256(_mm256_shuffle_epi8(tbl, qx_q4_unpack(x + 8 + 16 * b)), _mm256_set1_epi8((char)0x80)));
        int16_t s[8];
        _mm_storeu_si128((__m128i *)(void *)s, iq4xs_scales(x));
        for (int b = 0; b < 8; b++) P.sc[b * P.nr + r] = s[b];
        for (int p = 0; p < 4; p++) P.op[p * P.nr + r] = rl_pair(s[2 * p], s[2 * p + 1]);
        P.d[r] = qx_h2f(x);
        P.dmin[r] = 0.f;
    } else { /* Q2_K, Q3_K: 2-bit planes (Q3_K: + 4 where its hmask bit is set) */
        const int three = TYPE == GGML_Q3_K;
        const uint8_t *qs = x + (three ? 32 : 16);
        const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1), hm = three ? ld(x) : _mm256_setzero_si256();
        for (int n = 0; n < 2; n++) {
            const __m256i Q = ld(qs + 32 * n);
            for (int j = 0; j < 4; j++) {
                const int b = 4 * n + j;
                __m256i u = _mm256_and_si256(_mm256_srl_epi16(Q, _mm_cvtsi32_si128(2 * j)), m3);
                if (three)
                    u = _mm256_or_si256(u, _mm256_slli_epi16(_mm256_and_si256(_mm256_srl_epi16(hm, _mm_cvtsi32_si128(b)), one), 2));
                _mm256_storeu_si256((__m256i *)(void *)(tmp + 32 * b), u);
            }
        }
        if (three) {
            int8_t s[16];
            _mm_storeu_si128((__m128i *)(void *)s, q3k_scales(x));
            for (int k = 0; k < 16; k++) P.sc[k * P.nr + r] = s[k];
            for (int p = 0; p < 8; p++) P.op[p * P.nr + r] = rl_pair(s[2 * p], s[2 * p + 1]);
            P.d[r] = qx_h2f(x + 108);
            P.dmin[r] = 0.f;
        } else {
            for (int k = 0; k < 16; k++) P.sc[k * P.nr + r] = x[k] & 0xF;
            for (int p = 0; p < 8; p++) P.mp[p * P.nr + r] = rl_pair(x[2 * p] >> 4, x[2 * p + 1] >> 4);
            P.d[r] = qx_h2f(x + 80);
            P.dmin[r] = qx_h2f(x + 82);
        }
    }
}


#endif
