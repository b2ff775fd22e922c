/* quant_rows.h: quant_matmul's row loop over the one-row kernels (a dot of one weight row with up to QUANT_MAX_NA
 * tokens), shared by quant.c (any CPU: quant_dot_rows) and quant_avx512.c (the loop compiled as AVX-512 code:
 * quant_rows_avx512 says why). Include after quant.h. */
#ifndef INFLLM_QUANT_ROWS_H
#define INFLLM_QUANT_ROWS_H

/* quant_dot_rows' signature: type, n, a weight row, float rows xa, quantized rows qa / da / sa, na, out, use_simd */
typedef void (*quant_dot_fn)(uint32_t type, int64_t n, const void *wrow, const float *const *xa,
                             const int8_t *const *qa, const float *const *da, const float *const *sa, int na,
                             float *out, int use_simd);

/* prefetch distance of the decode loop (1-3 tokens): rows ~16 KB ahead (at least one). A decode step reads each weight
 * once, from memory, and a row's few hundred bytes are too short a stream for the hardware prefetcher to run ahead of:
 * on a Sapphire Rapids VM (session 72) a Llama-shaped Q4_K_M decoded at 31 tok/s on 1 thread without it, 46 with 4 KB,
 * 50 with 16-64 KB */
#define QUANT_ROWS_PF_BYTES 16384

/* y[t * ldy + r] = dot(W row r, token t) for r0 <= r < r1, t < ntok: float rows x (isf: float weights or float
 * activations) or quantized rows q / d / s ([ntok][cols], [ntok][cols / 32]) */
static inline void quant_rows_loop(quant_dot_fn dot, int use_simd, int isf, uint32_t type, const void *w, size_t rb,
                                   int64_t r0, int64_t r1, int64_t cols, const float *x, const int8_t *q,
                                   const float *d, const float *s, int64_t ntok, float *y, int64_t ldy) {
    const int64_t nb = cols / QK;
    const int64_t pf = rb >= QUANT_ROWS_PF_BYTES ? 1 : (int64_t)(QUANT_ROWS_PF_BYTES / rb);
    for (int64_t t0 = 0; t0 < ntok; t0 += QUANT_MAX_NA) {
        const int na = ntok - t0 < QUANT_MAX_NA ? (int)(ntok - t0) : QUANT_MAX_NA;
        const float *xa[QUANT_MAX_NA];
        const int8_t *qa[QUANT_MAX_NA];
        const float *da[QUANT_MAX_NA], *sa[QUANT_MAX_NA];
        for (int k = 0; k < na; k++) {
            xa[k] = x + (t0 + k) * cols;
            qa[k] = isf ? NULL : q + (t0 + k) * cols;
            da[k] = isf ? NULL : d + (t0 + k) * nb;
            sa[k] = isf ? NULL : s + (t0 + k) * nb;
        }
        for (int64_t r = r0; r < r1; r++) {
            float out[QUANT_MAX_NA];
            if (ntok <= 3) { /* never faults, past the matrix too */
                const char *p = (const char *)w + (size_t)(r + pf) * rb;
                for (size_t o = 0; o < rb; o += 64) __builtin_prefetch(p + o, 0, 3);
            }
            dot(type, cols, (const uint8_t *)w + (size_t)r * rb, xa, qa, da, sa, na, out, use_simd);
            for (int k = 0; k < na; k++) y[(t0 + k) * ldy + r] = out[k];
        }
    }
}

#endif
