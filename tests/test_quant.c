/* test_quant.c: every supported ggml type's dot product (SIMD and scalar paths, 1..8
 * activation rows, the threaded matmul) against an independent float64 dequantize
 * reference; and the GGUF reader on a hand-built file, truncated at every length. */
#include <stdint.h>

#include "ggmlc.h"
#include "gguf.h"
#include "harness.h"
#include "mcommon.h"
#include "quant.h"

static double f16d(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return (double)mdl_f16_to_f32(h);
}

/* float64 reference dequantization, written from the ggml block definitions */
static void ref_block(uint32_t type, const uint8_t *b, double *y) {
    if (type == GGML_Q8_0) {
        for (int j = 0; j < 32; j++) y[j] = f16d(b) * (int8_t)b[2 + j];
    } else if (type == GGML_Q4_0) {
        for (int j = 0; j < 16; j++) {
            y[j] = f16d(b) * ((b[2 + j] & 15) - 8);
            y[j + 16] = f16d(b) * ((b[2 + j] >> 4) - 8);
        }
    } else if (type == GGML_Q4_1) {
        for (int j = 0; j < 16; j++) {
            y[j] = f16d(b) * (b[4 + j] & 15) + f16d(b + 2);
            y[j + 16] = f16d(b) * (b[4 + j] >> 4) + f16d(b + 2);
        }
    } else if (type == GGML_Q5_0 || type == GGML_Q5_1) {
        /* value i: low nibble of byte i % 16 (high nibble for i >= 16), fifth bit = bit i of qh */
        const int m1 = type == GGML_Q5_1;
        const uint8_t *qh = b + (m1 ? 4 : 2), *qs = b + (m1 ? 8 : 6);
        for (int i = 0; i < 32; i++) {
            int nib = i < 16 ? qs[i] & 15 : qs[i - 16] >> 4;
            int q = nib | (((qh[i / 8] >> (i % 8)) & 1) << 4);
            y[i] = m1 ? f16d(b) * q + f16d(b + 2) : f16d(b) * (q - 16);
        }
    } else if (type == GGML_Q2_K || type == GGML_Q3_K) {
        /* value i: half i / 128, 2-bit plane (i % 128) / 32, byte 32 half + i % 32 of qs; sub-block
         * of 16 values 8 half + 2 plane + (i % 32) / 16 */
        const int three = type == GGML_Q3_K;
        const uint8_t *qs = b + (three ? 32 : 16);
        for (int i = 0; i < 256; i++) {
            int half = i / 128, plane = (i % 128) / 32, l = i % 32, sub = 8 * half + 2 * plane + l / 16;
            int q2 = (qs[32 * half + l] >> (2 * plane)) & 3;
            if (three) {
                const uint8_t *s12 = b + 96;
                int sc6 = (sub < 8 ? s12[sub] & 15 : s12[sub - 8] >> 4) | (((s12[8 + sub % 4] >> (2 * (sub / 4))) & 3) << 4);
                int hbit = (b[l] >> (4 * half + plane)) & 1;
                y[i] = f16d(b + 108) * (sc6 - 32) * (q2 - (hbit ? 0 : 4));
            } else {
                y[i] = f16d(b + 80) * (b[sub] & 15) * q2 - f16d(b + 82) * (b[sub] >> 4);
            }
        }
    } else if (type == GGML_IQ4_NL || type == GGML_IQ4_XS) {
        /* value i of a 32-value group g: table[nibble], low nibbles of the group's 16 bytes first;
         * IQ4_XS groups scaled by (6-bit scale - 32), the scale's low 4 bits in nibble g of
         * scales_l, its high 2 bits at bit 2 g of scales_h */
        static const int kv[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
        const int xs = type == GGML_IQ4_XS, ng = xs ? 8 : 1;
        for (int g = 0; g < ng; g++) {
            double sc = 1.0;
            if (xs) {
                int hi = ((b[2] | (b[3] << 8)) >> (2 * g)) & 3, lo = (b[4 + g / 2] >> (4 * (g % 2))) & 15;
                sc = (lo | (hi << 4)) - 32;
            }
            const uint8_t *qs = b + (xs ? 8 + 16 * g : 2);
            for (int i = 0; i < 32; i++) y[32 * g + i] = f16d(b) * sc * kv[i < 16 ? qs[i] & 15 : qs[i - 16] >> 4];
        }
    } else if (type == GGML_Q4_K || type == GGML_Q5_K) {
        const uint8_t *s = b + 4;
        for (int sub = 0; sub < 8; sub++) {
            int sc, mn;
            if (sub < 4) {
                sc = s[sub] & 63;
                mn = s[sub + 4] & 63;
            } else {
                sc = (s[sub + 4] & 15) | ((s[sub - 4] >> 6) << 4);
                mn = (s[sub + 4] >> 4) | ((s[sub] >> 6) << 4);
            }
            for (int l = 0; l < 32; l++) {
                int pair = sub / 2, hi = sub % 2;
                int q;
                if (type == GGML_Q4_K) {
                    uint8_t byte = b[16 + 32 * pair + l];
                    q = hi ? byte >> 4 : byte & 15;
                } else {
                    uint8_t byte = b[48 + 32 * pair + l];
                    q = (hi ? byte >> 4 : byte & 15) + (((b[16 + l] >> sub) & 1) << 4);
                }
                y[sub * 32 + l] = f16d(b) * sc * q - f16d(b + 2) * mn;
            }
        }
    } else if (type == GGML_Q6_K) {
        const uint8_t *ql = b, *qh = b + 128;
        const int8_t *sc = (const int8_t *)(b + 192);
        double d = f16d(b + 208);
        for (int i = 0; i < 256; i++) {
            int half = i / 128, r = i % 128, quarter = r / 32, l = r % 32;
            const uint8_t *L = ql + 64 * half, *H = qh + 32 * half;
            int low = quarter == 0 ? (L[l] & 15) : quarter == 1 ? (L[l + 32] & 15) : quarter == 2 ? (L[l] >> 4) : (L[l + 32] >> 4);
            int high = (H[l] >> (2 * quarter)) & 3;
            y[i] = d * sc[8 * half + 2 * quarter + l / 16] * ((low | (high << 4)) - 32);
        }
    }
}

static void ref_row(uint32_t type, const uint8_t *w, int64_t n, double *y) {
    if (type == GGML_F32) {
        for (int64_t i = 0; i < n; i++) {
            float f;
            memcpy(&f, w + 4 * i, 4);
            y[i] = f;
        }
        return;
    }
    if (type == GGML_F16 || type == GGML_BF16) {
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, w + 2 * i, 2);
            y[i] = type == GGML_F16 ? mdl_f16_to_f32(h) : mdl_bf16_to_f32(h);
        }
        return;
    }
    int bs = ggml_block_size(type);
    size_t bb = ggml_row_size(type, bs);
    for (int64_t i = 0; i < n / bs; i++) ref_block(type, w + i * bb, y + i * bs);
}

static void put_f16(uint8_t *p, float v) {
    uint16_t h = mdl_f32_to_f16(v);
    memcpy(p, &h, 2);
}

/* a random row of `type` with sane scales */
static void random_row(uint32_t type, uint8_t *w, int64_t n, unsigned long long *rng) {
    size_t bytes = ggml_row_size(type, n);
    for (size_t i = 0; i < bytes; i++) w[i] = (uint8_t)h_rng_next(rng);
    if (type == GGML_F32) {
        for (int64_t i = 0; i < n; i++) {
            float f = (float)h_normal(rng);
            memcpy(w + 4 * i, &f, 4);
        }
        return;
    }
    if (type == GGML_F16 || type == GGML_BF16) {
        for (int64_t i = 0; i < n; i++) {
            float f = (float)h_normal(rng);
            uint16_t h = type == GGML_F16 ? mdl_f32_to_f16(f) : mdl_f32_to_bf16(f);
            memcpy(w + 2 * i, &h, 2);
        }
        return;
    }
    int bs = ggml_block_size(type);
    size_t bb = ggml_row_size(type, bs);
    for (int64_t i = 0; i < n / bs; i++) {
        uint8_t *b = w + i * bb;
        float d = (float)(0.002 + 0.03 * h_uniform(rng));
        switch (type) {
        case GGML_Q8_0: put_f16(b, d); for (int j = 0; j < 32; j++) if ((int8_t)b[2 + j] == -128) b[2 + j] = 0x81; break;
        case GGML_Q4_0: put_f16(b, d); break;
        case GGML_Q4_1: put_f16(b, d); put_f16(b + 2, (float)(-0.1 * h_uniform(rng))); break;
        case GGML_Q5_0: put_f16(b, d * 0.5f); break;
        case GGML_Q5_1: put_f16(b, d * 0.5f); put_f16(b + 2, (float)(-0.1 * h_uniform(rng))); break;
        case GGML_Q2_K: put_f16(b + 80, d * 0.5f); put_f16(b + 82, d * 0.3f); break;
        case GGML_Q3_K: put_f16(b + 108, d * 0.05f); break;
        case GGML_IQ4_NL: put_f16(b, d * 0.1f); break;
        case GGML_IQ4_XS: put_f16(b, d * 0.005f); break;
        case GGML_Q4_K: case GGML_Q5_K: put_f16(b, d * 0.05f); put_f16(b + 2, d * 0.02f); break;
        case GGML_Q6_K: put_f16(b + 208, d * 0.05f); break;
        default: break;
        }
    }
}

static void test_type(uint32_t type, int64_t n, unsigned long long seed) {
    unsigned long long rng = seed;
    enum { NT = 19, NR = 37 };
    size_t rb = ggml_row_size(type, n);
    uint8_t *w = malloc(rb * NR);
    float *x = malloc(sizeof(float) * n * NT);
    int8_t *q = malloc((size_t)n * NT);
    float *d = malloc(sizeof(float) * (n / 32) * NT), *s = malloc(sizeof(float) * (n / 32) * NT);
    double *wr = malloc(sizeof(double) * n);
    float *y = malloc(sizeof(float) * NT * NR);
    for (int r = 0; r < NR; r++) random_row(type, w + r * rb, n, &rng);
    for (int64_t i = 0; i < n * NT; i++) x[i] = (float)h_normal(&rng);
    /* QACT_F32 activations (d and s exactly what the f64 references below multiply; Q8_1's f16 s would not be), but
     * QACT_Q8_K for the types whose kernels require its scale shared by 256 values */
    const int amode = quant_act_mode(type) == QACT_Q8_K ? QACT_Q8_K : QACT_F32;
    for (int t = 0; t < NT; t++)
        quant_act_row_mode(x + t * n, n, q + t * n, d + t * (n / 32), s + t * (n / 32), amode);
    int isf = type == GGML_F32 || type == GGML_F16 || type == GGML_BF16;
    double worst_q = 0, worst_x = 0, worst_mm = 0, worst_mmq = 0, worst_deq = 0;
    float *deq = malloc(sizeof(float) * n);
    for (int r = 0; r < NR; r++) {
        ref_row(type, w + r * rb, n, wr);
        quant_dequant_row(type, w + r * rb, deq, n);
        for (int64_t i = 0; i < n; i++) {
            double e = fabs(deq[i] - wr[i]) / (fabs(wr[i]) + 1e-6);
            if (e > worst_deq) worst_deq = e;
        }
        for (int na = 1; na <= QUANT_MAX_NA; na++) {
            const float *xa[QUANT_MAX_NA];
            const int8_t *qa[QUANT_MAX_NA];
            const float *da[QUANT_MAX_NA], *sa[QUANT_MAX_NA];
            for (int t = 0; t < na; t++) {
                int row = (r + t) % NT;
                xa[t] = x + row * n;
                qa[t] = q + row * n;
                da[t] = d + row * (n / 32);
                sa[t] = s + row * (n / 32);
            }
            for (int simd = 0; simd <= 1; simd++) {
                float out[QUANT_MAX_NA];
                quant_dot_rows(type, n, w + r * rb, xa, qa, da, sa, na, out, simd);
                for (int t = 0; t < na; t++) {
                    /* exact reference with the quantized activation (what the kernels compute) */
                    double refq = 0, refx = 0, mag = 0;
                    for (int64_t i = 0; i < n; i++) {
                        double a = isf ? xa[t][i] : da[t][i / 32] * qa[t][i];
                        refq += wr[i] * a;
                        refx += wr[i] * xa[t][i];
                        mag += fabs(wr[i] * xa[t][i]);
                    }
                    double eq = fabs(out[t] - refq) / mag, ex = fabs(out[t] - refx) / mag;
                    if (eq > worst_q) worst_q = eq;
                    if (ex > worst_x) worst_x = ex;
                }
            }
        }
    }
    /* threaded matmul, all token counts 1..NT */
    for (int nt = 1; nt <= NT; nt += (nt < 9 ? 1 : 5)) {
        CHECK(quant_matmul(type, w, NR, n, x, nt, y, NR, 0, NULL) == 0, "matmul: %s", mdl_error());
        for (int t = 0; t < nt; t++)
            for (int r = 0; r < NR; r++) {
                ref_row(type, w + r * rb, n, wr);
                double refx = 0, mag = 0;
                for (int64_t i = 0; i < n; i++) {
                    refx += wr[i] * x[t * n + i];
                    mag += fabs(wr[i] * x[t * n + i]);
                }
                double e = fabs(y[t * NR + r] - refx) / mag;
                if (e > worst_mm) worst_mm = e;
            }
    }
    /* the prefill tile kernel (rows x tokens, used by quant_matmul for >= 4 tokens) on the same
     * quantized activations: exactly the f64 product of the dequantized operands, for every tile
     * edge (37 rows, 1..19 tokens, odd block counts) */
    /* AVX-512 (qgemm_avx512.c), AVX2 (qgemm_avx2.c), AVX-512's 256-bit tiles (qgemm256_avx512.c) */
    for (int kern = 0; kern < 3 && !isf; kern++) {
        if (kern == 1 ? !quant_avx2_available() : !quant_avx512_available()) continue;
        for (int nt = 1; nt <= NT; nt++) {
            for (int i = 0; i < NT * NR; i++) y[i] = NAN;
            int done = kern == 0   ? quant_gemm_avx512(type, w, 0, NR, n, q, d, s, nt, y, NR)
                       : kern == 1 ? quant_gemm_avx2(type, w, 0, NR, n, q, d, s, nt, y, NR)
                                   : quant_gemm256_avx512(type, w, 0, NR, n, q, d, s, nt, y, NR);
            if (!done) break; /* a type without a tile kernel */
            for (int t = 0; t < nt; t++)
                for (int r = 0; r < NR; r++) {
                    ref_row(type, w + r * rb, n, wr);
                    double refq = 0, mag = 0;
                    for (int64_t i = 0; i < n; i++) {
                        refq += wr[i] * d[t * (n / 32) + i / 32] * q[t * n + i];
                        mag += fabs(wr[i] * x[t * n + i]);
                    }
                    double e = fabs(y[t * NR + r] - refq) / mag;
                    if (!(e <= worst_mmq)) worst_mmq = isnan(e) ? INFINITY : e;
                }
        }
    }
    printf("%-5s n=%-5lld dequant rel %.2e | dot vs f64(quantized act) %.2e | vs f64(float act) %.2e | matmul %.2e"
           " | tile kernel %.2e\n",
           ggml_type_name(type), (long long)n, worst_deq, worst_q, worst_x, worst_mm, worst_mmq);
    CHECK(worst_deq < 1e-6, "%s dequant error %g", ggml_type_name(type), worst_deq);
    CHECK(worst_q < 2e-5, "%s dot error vs exact reference %g", ggml_type_name(type), worst_q);
    CHECK(worst_x < (isf ? 2e-5 : 1.5e-2), "%s dot error vs float activation %g", ggml_type_name(type), worst_x);
    CHECK(worst_mm < (isf ? 2e-5 : 1.5e-2), "%s matmul error %g", ggml_type_name(type), worst_mm);
    CHECK(worst_mmq < 2e-5, "%s tile kernel error vs exact reference %g", ggml_type_name(type), worst_mmq);
    free(w); free(x); free(q); free(d); free(s); free(wr); free(y); free(deq);
}

/* the codes of a K-quant / IQ4_XS super-block (not its scales) all set to byte c: the extremes of the values (0xff: Q6_K
 * 63, Q3_K 7, Q2_K 3, Q4_K 15, Q5_K 31, IQ4_XS 113; 0x00: IQ4_XS -127, Q6_K 0, i.e. -32) */
static void set_codes(uint32_t type, uint8_t *sb, uint8_t c) {
    switch (type) {
    case GGML_Q6_K: memset(sb, c, 192); break;
    case GGML_Q3_K: memset(sb, c, 96); break;
    case GGML_Q2_K: memset(sb + 16, c, 64); break;
    case GGML_Q4_K: memset(sb + 16, c, 128); break;
    case GGML_Q5_K: memset(sb + 16, c, 160); break;
    case GGML_IQ4_XS: memset(sb + 8, c, 128); break;
    default: break;
    }
}

/* Every prefill tile kernel (AVX2, AVX-512's 256-bit tiles, AVX-512's Q4_1 / Q8_0 tiles, AVX-VNNI's K-quant tiles,
 * AVX-512's and AVX2's rows-in-lanes K-quant kernels) bitwise equal to the one-row kernel of its instruction set (quant_dot_avx2 / quant_dot_avx512), row by row and token by token: 1..19 tokens (the 8-token groups whole and not), 37 rows, 3 super-blocks, on
 * random codes, on extremes (codes at their largest magnitudes, activations all +-127 in runs whose 16-value sums
 * reach +-2032: the int16 pair sums and the 16-value activation sums the tiles use must not saturate) and with a NaN
 * and an inf among the activations (NaN outputs where the one-row kernel gives NaN, the payload aside). */
static void test_tiles_exact(uint32_t type) {
    enum { NR = 37, NT = 19, N = 768 };
    unsigned long long rng = 4242 + type;
    const size_t rb = ggml_row_size(type, N);
    uint8_t *w = malloc(rb * NR);
    float *x = malloc(sizeof(float) * N * NT), *y = malloc(sizeof(float) * NR * NT);
    int8_t *q = malloc((size_t)N * NT);
    float *d = malloc(sizeof(float) * (N / 32) * NT), *s = malloc(sizeof(float) * (N / 32) * NT);
    void *packed = malloc(quant_ktile_act_bytes(NT, N));
    const int bsz = ggml_block_size(type);
    const size_t bb = ggml_row_size(type, bsz);
    int checked = 0;
    for (int mode = 0; mode < 3; mode++) {
        for (int r = 0; r < NR; r++) random_row(type, w + r * rb, N, &rng);
        for (int64_t i = 0; i < (int64_t)N * NT; i++) x[i] = (float)h_normal(&rng);
        if (mode == 2) { /* a NaN and an inf in two tokens' activations: their blocks' scales NaN */
            x[3 * N + 300] = NAN;
            x[10 * N + 40] = INFINITY;
        }
        if (mode == 1) { /* extremes: alternate 0xff / 0x00 codes per super-block; runs of 16 equal signs */
            for (int r = 0; r < NR; r++)
                for (int64_t b = 0; b < N / bsz; b++) set_codes(type, w + r * rb + b * bb, (r + b) % 2 ? 0x00 : 0xff);
            for (int64_t i = 0; i < (int64_t)N * NT; i++) x[i] = ((i / 16 + i / N) % 3) ? 1.f : -1.f;
        }
        for (int t = 0; t < NT; t++)
            quant_act_row_mode(x + t * N, N, q + t * N, d + t * (N / 32), s + t * (N / 32), quant_act_mode(type));
        for (int kern = 0; kern < 6; kern++) {
            if (kern == 1 || kern == 5 ? !quant_avx2_available()
                : kern == 3            ? !quant_avxvnni_available()
                                       : !quant_avx512_available())
                continue;
            for (int nt = 1; nt <= NT; nt++) {
                for (int i = 0; i < NT * NR; i++) y[i] = NAN;
                int done = 0;
                if (kern >= 3) { /* AVX-VNNI's tiles, AVX-512's / AVX2's rows-in-lanes: the K-quants only, on activations
                                    packed as quant_matmul packs them */
                    if (quant_ktile_takes(type, N, nt)) {
                        for (int64_t g = 0; g < (nt + QUANT_KTILE_TOKENS - 1) / QUANT_KTILE_TOKENS; g++)
                            quant_ktile_pack(q, d, s, nt, N, g, packed);
                        done = (kern == 3   ? quant_gemm_ktile_avxvnni
                                : kern == 4 ? quant_gemm_ktile_rl512
                                            : quant_gemm_ktile_rl_avx2)(type, w, 0, NR, N, packed, nt, y, NR);
                    }
                } else {
                    done = kern == 0   ? quant_gemm_avx512(type, w, 0, NR, N, q, d, s, nt, y, NR)
                           : kern == 1 ? quant_gemm_avx2(type, w, 0, NR, N, q, d, s, nt, y, NR)
                                       : quant_gemm256_avx512(type, w, 0, NR, N, q, d, s, nt, y, NR);
                }
                if (!done) break; /* a type this kernel set does not take */
                int bad = 0;
                for (int t = 0; t < nt; t++)
                    for (int r = 0; r < NR; r++) {
                        const float *xa[1] = {x + t * N}, *da[1] = {d + t * (N / 32)}, *sa[1] = {s + t * (N / 32)};
                        const int8_t *qa[1] = {q + t * N};
                        float o = NAN; /* the one-row kernel of the tile's own instruction set */
                        if (!(kern == 1 || kern == 3 || kern == 5 ? quant_dot_avx2 : quant_dot_avx512)(
                                type, N, w + r * rb, xa, qa, da, sa, 1, &o))
                            bad++;
                        if (memcmp(&o, &y[t * NR + r], sizeof o) != 0 && !(mode == 2 && isnan(o) && isnan(y[t * NR + r])))
                            bad++; /* bitwise; a NaN as a NaN */
                    }
                CHECK(bad == 0, "%s tile kernel %d, %s codes, %d tokens: %d outputs differ from the one-row kernel",
                      ggml_type_name(type), kern, mode == 1 ? "extreme" : mode == 2 ? "non-finite" : "random", nt, bad);
                checked++;
            }
        }
    }
    printf("%-6s prefill tiles == one-row kernel, bitwise: %d (kernel, codes, tokens) cases%s\n", ggml_type_name(type),
           checked, quant_avxvnni_available() && quant_ktile_takes(type, N, 1) ? " (AVX-VNNI's among them)" : "");
    free(w); free(x); free(y); free(q); free(d); free(s); free(packed);
}

/* the OpenMP path (products over 2M MACs) gives what the one-row kernel gives */
static void test_threaded(uint32_t type, int64_t n) {
    unsigned long long rng = 77;
    enum { R = 1031, T = 41 };
    size_t rb = ggml_row_size(type, n);
    uint8_t *w = malloc(rb * R);
    float *x = malloc(sizeof(float) * n * T), *y = malloc(sizeof(float) * R * T);
    int8_t *q = malloc((size_t)n * T);
    float *d = malloc(sizeof(float) * (n / 32) * T), *s = malloc(sizeof(float) * (n / 32) * T);
    for (int r = 0; r < R; r++) random_row(type, w + r * rb, n, &rng);
    for (int64_t i = 0; i < n * T; i++) x[i] = (float)h_normal(&rng);
    /* the activation scheme quant_matmul uses for this type */
    for (int t = 0; t < T; t++)
        quant_act_row_mode(x + t * n, n, q + t * n, d + t * (n / 32), s + t * (n / 32), quant_act_mode(type));
    /* 4 or more tokens (prefill tiles) and 1..3 tokens (decode: two rows per register), each bitwise
     * equal to the one-row kernel; R = 1031 rows leaves odd tiles at the end */
    /* 4 / 8 / 17: the AVX2 tiles' 8-token groups, whole and not; 41: past QUANT_RL_MIN_TOKENS (AVX-512's rows-in-lanes
     * kernel where AMX is off: test_quant_noamx) */
    const int ntoks[8] = {11, 1, 2, 3, 4, 8, 17, T};
    for (int k = 0; k < 8; k++) {
        const int nt = ntoks[k];
        int bad = 0;
        CHECK(quant_matmul(type, w, R, n, x, nt, y, R, 2, NULL) == 0, "threaded matmul: %s", mdl_error());
        for (int r = 0; r < R; r++)
            for (int t = 0; t < nt; t++) {
                const float *xa[1] = {x + t * n};
                const int8_t *qa[1] = {q + t * n};
                const float *da[1] = {d + t * (n / 32)}, *sa[1] = {s + t * (n / 32)};
                float o;
                quant_dot_rows(type, n, w + r * rb, xa, qa, da, sa, 1, &o, 1);
                if (o != y[t * R + r]) bad++; /* bitwise: prefill tiles, decode tiles and rows agree */
            }
        CHECK(bad == 0, "%s, %d tokens: %d threaded matmul outputs differ from the one-row kernel",
              ggml_type_name(type), nt, bad);
    }
    free(w); free(x); free(y); free(q); free(d); free(s);
}

/* quant_matmul_multi: products of one input with weights of different types and activation schemes (Q4_K: Q8_K,
 * Q5_0: Q8_0, Q3_K: Q8_K again, F16: float) in one region == one quant_matmul each, bitwise, at decode and prefill
 * token counts; bad calls refused */
static void test_multi(void) {
    unsigned long long rng = 99;
    enum { N = 512, T = 9 };
    static const uint32_t types[4] = {GGML_Q4_K, GGML_Q5_0, GGML_F16, GGML_Q3_K};
    static const int64_t rows[4] = {67, 40, 33, 129};
    uint8_t *w[4];
    float *y1[4], *y2[4];
    float *x = malloc(sizeof(float) * N * T);
    for (int64_t i = 0; i < N * T; i++) x[i] = (float)h_normal(&rng);
    quant_mm ops[4];
    for (int i = 0; i < 4; i++) {
        const size_t rb = ggml_row_size(types[i], N);
        w[i] = malloc(rb * (size_t)rows[i]);
        y1[i] = malloc(sizeof(float) * (size_t)(rows[i] * T));
        y2[i] = malloc(sizeof(float) * (size_t)(rows[i] * T));
        for (int64_t r = 0; r < rows[i]; r++) random_row(types[i], w[i] + (size_t)r * rb, N, &rng);
        ops[i] = (quant_mm){types[i], w[i], rows[i], N, y2[i], rows[i]};
    }
    quant_scratch qs = {0};
    const int ntoks[4] = {1, 3, 4, T};
    for (int k = 0; k < 4; k++) {
        const int nt = ntoks[k];
        int bad = 0;
        for (int i = 0; i < 4; i++)
            CHECK(quant_matmul(types[i], w[i], rows[i], N, x, nt, y1[i], rows[i], 2, NULL) == 0, "matmul: %s", mdl_error());
        CHECK(quant_matmul_multi(ops, 4, x, nt, 2, &qs) == 0, "matmul_multi: %s", mdl_error());
        for (int i = 0; i < 4; i++) bad += memcmp(y1[i], y2[i], sizeof(float) * (size_t)(rows[i] * nt)) != 0;
        CHECK(bad == 0, "quant_matmul_multi, %d tokens: %d of 4 products differ from their quant_matmul", nt, bad);
    }
    CHECK(quant_matmul_multi(ops, 0, x, 1, 1, &qs) != 0 && quant_matmul_multi(ops, QUANT_MAX_OPS + 1, x, 1, 1, &qs) != 0,
          "quant_matmul_multi: a product count out of range refused");
    ops[1].cols = 256;
    CHECK(quant_matmul_multi(ops, 2, x, 1, 1, &qs) != 0 && strstr(mdl_error(), "differ"),
          "quant_matmul_multi: different row lengths refused (%s)", mdl_error());
    quant_scratch_free(&qs);
    for (int i = 0; i < 4; i++) {
        free(w[i]);
        free(y1[i]);
        free(y2[i]);
    }
    free(x);
}

/* ---------------------------------------------------------------- GGUF ---- */
typedef struct buf { uint8_t *p; size_t n, cap; } buf;
static void put(buf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void put_u32(buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(buf *b, uint64_t v) { put(b, &v, 8); }
static void put_s(buf *b, const char *s) { put_u64(b, strlen(s)); put(b, s, strlen(s)); }

static void test_gguf(void) {
    buf b = {0};
    put(&b, "GGUF", 4);
    put_u32(&b, 3);
    put_u64(&b, 2); /* tensors */
    put_u64(&b, 6); /* kv */
    put_s(&b, "general.architecture"); put_u32(&b, GGUF_T_STRING); put_s(&b, "llama");
    put_s(&b, "general.alignment"); put_u32(&b, GGUF_T_UINT32); put_u32(&b, 64);
    put_s(&b, "x.f64"); put_u32(&b, GGUF_T_FLOAT64); { double v = 2.5; put(&b, &v, 8); }
    put_s(&b, "x.i16arr"); put_u32(&b, GGUF_T_ARRAY); put_u32(&b, GGUF_T_INT16); put_u64(&b, 3);
    { int16_t v[3] = {-1, 2, -3}; put(&b, v, 6); }
    put_s(&b, "x.strarr"); put_u32(&b, GGUF_T_ARRAY); put_u32(&b, GGUF_T_STRING); put_u64(&b, 2);
    put_s(&b, "ab"); put_s(&b, "");
    put_s(&b, "x.bool"); put_u32(&b, GGUF_T_BOOL); { uint8_t v = 1; put(&b, &v, 1); }
    put_s(&b, "a"); put_u32(&b, 2); put_u64(&b, 32); put_u64(&b, 2);
    const size_t a_type_off = b.n;
    put_u32(&b, GGML_Q8_0); put_u64(&b, 0);
    put_s(&b, "b"); put_u32(&b, 1); put_u64(&b, 3); put_u32(&b, GGML_F32); put_u64(&b, 128);
    while (b.n % 64) put(&b, "\0", 1);
    size_t data0 = b.n;
    for (int i = 0; i < 128 + 12; i++) put(&b, "\x01", 1);
    gguf_file *g = gguf_open_buffer(b.p, b.n);
    CHECK(g != NULL, "gguf_open_buffer: %s", mdl_error());
    if (g) {
        char s[32];
        CHECK(gguf_get_str(g, "general.architecture", s, sizeof s) == 0 && strcmp(s, "llama") == 0, "arch");
        CHECK(g->alignment == 64, "alignment %zu", g->alignment);
        CHECK(gguf_get_float(g, "x.f64", 0) == 2.5, "f64");
        CHECK(gguf_get_int(g, "x.bool", 0) == 1, "bool");
        const gguf_kv *kv = gguf_find(g, "x.strarr");
        CHECK(kv && kv->arr_n == 2 && gguf_str_eq(kv->arr_strs[0], "ab") && kv->arr_strs[1].n == 0, "string array");
        kv = gguf_find(g, "x.i16arr");
        CHECK(kv && kv->arr_n == 3 && kv->arr_type == GGUF_T_INT16, "int16 array");
        const gguf_tensor *t = gguf_find_tensor(g, "b");
        CHECK(t && t->ne[0] == 3 && t->nbytes == 12 && (const uint8_t *)t->data == b.p + data0 + 128, "tensor b");
        t = gguf_find_tensor(g, "a");
        CHECK(t && t->ne[1] == 2 && t->nbytes == 68, "tensor a");
        gguf_close(g);
    }
    /* a type the reader does not take is refused by name (IQ2_XXS = 16; 5: a removed type id) */
    {
        const uint32_t types[2] = {16, 5};
        const char *want[2] = {"IQ2_XXS", "unknown (5)"};
        for (int k = 0; k < 2; k++) {
            uint8_t *c = malloc(b.n);
            memcpy(c, b.p, b.n);
            memcpy(c + a_type_off, &types[k], 4);
            gguf_file *h = gguf_open_buffer(c, b.n);
            CHECK(!h && strstr(mdl_error(), want[k]) && strstr(mdl_error(), "'a'"),
                  "tensor of type %u: refused naming '%s' (got: %s)", types[k], want[k], h ? "accepted" : mdl_error());
            if (h) gguf_close(h);
            free(c);
        }
    }
    /* a name from the file is printed at most MDL_SHOWN_MAX (200) bytes long: "%.*s" took (int)length, which for a
     * length past INT_MAX is negative (no precision: printf read on past the name); a 300-byte tensor name and
     * metadata key, each in an error message (5 dimensions; value type 99), show 200 of their bytes */
    {
        char long_name[301];
        memset(long_name, 'n', 300);
        long_name[300] = 0;
        for (int is_kv = 0; is_kv < 2; is_kv++) {
            buf f = {0};
            put(&f, "GGUF", 4);
            put_u32(&f, 3);
            put_u64(&f, is_kv ? 0 : 1); /* tensors */
            put_u64(&f, is_kv ? 1 : 0); /* kv */
            put_s(&f, long_name);
            put_u32(&f, is_kv ? 99 : 5); /* a value type that does not exist / 5 dimensions */
            put_u64(&f, 0);
            put_u64(&f, 0);
            gguf_file *h = gguf_open_buffer(f.p, f.n);
            int run = 0, longest = 0; /* the longest run of 'n' in the message: the name as shown */
            for (const char *e = mdl_error(); *e; e++) {
                run = *e == 'n' ? run + 1 : 0;
                longest = run > longest ? run : longest;
            }
            CHECK(!h && longest == MDL_SHOWN_MAX, "%s of 300 bytes: refused, %d of its bytes shown (want %d)",
                  is_kv ? "metadata key" : "tensor name", longest, MDL_SHOWN_MAX);
            if (h) gguf_close(h);
            free(f.p);
        }
    }
    /* every truncation must fail cleanly */
    int bad = 0;
    for (size_t n = 0; n < b.n; n++) {
        uint8_t *c = malloc(n ? n : 1);
        memcpy(c, b.p, n);
        gguf_file *h = gguf_open_buffer(c, n);
        if (h) {
            bad++;
            gguf_close(h);
        } else if (!mdl_error()[0]) {
            bad++;
        }
        free(c);
    }
    CHECK(bad == 0, "%d truncated files were accepted or gave no message", bad);
    /* corrupted counts/lengths: flip every byte of the header to 0xff, must never crash */
    int accepted = 0;
    for (size_t i = 0; i < data0; i++) {
        uint8_t *c = malloc(b.n);
        memcpy(c, b.p, b.n);
        c[i] = 0xff;
        gguf_file *h = gguf_open_buffer(c, b.n);
        if (h) {
            accepted++;
            for (uint64_t k = 0; k < h->n_tensors; k++) /* whatever was accepted must lie inside */
                CHECK((const uint8_t *)h->tensors[k].data + h->tensors[k].nbytes <= c + b.n, "tensor outside");
            gguf_close(h);
        }
        free(c);
    }
    printf("gguf: %zu-byte file, every truncation rejected, %d of %zu single-byte header corruptions still valid\n",
           b.n, accepted, data0);
    free(b.p);
}

/* llama.cpp's quantize_row_q8_1 / q8_0, written from ggml-quants.c: id = 127 / amax, values
 * rounded to nearest even, scale stored as f16, q8_1's s = f16(d * sum) with the f32 d */
static void test_act_modes(void) {
    unsigned long long rng = 11;
    enum { N = 2048 };
    static float x[N], d[N / 32], s[N / 32], d1[N / 32], s1[N / 32];
    static int8_t q[N], q1[N];
    for (int i = 0; i < N; i++) x[i] = (float)(h_normal(&rng) * (i % 61 == 0 ? 30 : 1) * (i < 1024 ? 1 : 1e-3));
    for (int i = 64; i < 96; i++) x[i] = 0.f;
    for (int i = 96; i < 128; i++) x[i] = (float)(i - 112) * 0.5f; /* exact halves: ties to even */
    for (int mode = QACT_Q8_1; mode <= QACT_Q8_0; mode++) {
        quant_act_row_mode(x, N, q, d, s, mode);
        int bad = 0;
        for (int b = 0; b < N / 32; b++) {
            float amax = 0.f;
            for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[b * 32 + j]));
            float dd = amax / 127.f, id = amax != 0.f ? 127.f / amax : 0.f;
            int sum = 0;
            for (int j = 0; j < 32; j++) {
                float v = nearbyintf(x[b * 32 + j] * id);
                bad += q[b * 32 + j] != (int8_t)v;
                sum += (int)v;
            }
            float d16 = mdl_f16_to_f32(mdl_f32_to_f16(dd));
            float sref = mode == QACT_Q8_1 ? mdl_f16_to_f32(mdl_f32_to_f16(dd * (float)sum)) : d16 * (float)sum;
            bad += d[b] != d16 || s[b] != sref;
        }
        CHECK(bad == 0, "activation mode %d: %d values differ from llama.cpp's quantize_row_q8_%d", mode, bad,
              mode == QACT_Q8_1 ? 1 : 0);
        CHECK(q[96] == -127 && q[97] == -119 && q[99] == -103, "ties to even (got %d %d %d)", q[96], q[97], q[99]);
        if (quant_avx512_available()) {
            quant_act_row_mode_avx512(x, N, q1, d1, s1, mode);
            CHECK(memcmp(q, q1, N) == 0 && memcmp(d, d1, sizeof d) == 0 && memcmp(s, s1, sizeof s) == 0,
                  "SIMD activation mode %d differs from the scalar one", mode);
        }
    }
    /* QACT_Q8_K: one scale amax / 127 per 256 values (its 8 blocks), values rint(x * 127 / amax), s the integer sum */
    {
        quant_act_row_mode(x, N, q, d, s, QACT_Q8_K);
        int bad = 0;
        for (int g = 0; g < N / 256; g++) {
            float amax = 0.f;
            for (int j = 0; j < 256; j++) amax = fmaxf(amax, fabsf(x[g * 256 + j]));
            const float id = amax != 0.f ? 127.f / amax : 0.f;
            for (int b = g * 8; b < g * 8 + 8; b++) {
                int sum = 0;
                for (int j = 0; j < 32; j++) {
                    float v = nearbyintf(x[b * 32 + j] * id);
                    bad += q[b * 32 + j] != (int8_t)v;
                    sum += (int)v;
                }
                bad += d[b] != amax / 127.f || s[b] != (float)sum;
            }
        }
        CHECK(bad == 0, "activation mode Q8_K: %d values / scales differ from the definition", bad);
    }
    /* the SIMD quantizers (AVX2 also on AVX-512 CPUs) against the scalar one, every mode, bitwise; also a row whose
     * last QACT_Q8_K group is 5 blocks */
    for (int mode = QACT_F32; mode <= QACT_Q8_K; mode++)
        for (int n = N; n >= N - 96; n -= 96) {
            memset(q, 0x55, sizeof q);
            memset(d, 0, sizeof d);
            memset(s, 0, sizeof s);
            quant_act_row_mode(x, n, q, d, s, mode);
            for (int level = 1; level <= 2; level++) {
                if (level == 1 ? !quant_avx2_available() : !quant_avx512_available()) continue;
                memset(q1, 0x55, sizeof q1);
                memset(d1, 0, sizeof d1);
                memset(s1, 0, sizeof s1);
                if (level == 1) quant_act_row_mode_avx2(x, n, q1, d1, s1, mode);
                else quant_act_row_mode_avx512(x, n, q1, d1, s1, mode);
                CHECK(memcmp(q, q1, N) == 0 && memcmp(d, d1, sizeof d) == 0 && memcmp(s, s1, sizeof s) == 0,
                      "%s activation mode %d differs from the scalar one (%d values)", level == 1 ? "AVX2" : "AVX-512",
                      mode, n);
            }
        }
    CHECK(quant_act_mode(GGML_Q4_1) == QACT_Q8_1 && quant_act_mode(GGML_Q8_0) == QACT_Q8_0 &&
              quant_act_mode(GGML_Q4_K) == QACT_Q8_K && quant_act_mode(GGML_Q6_K) == QACT_Q8_K &&
              quant_act_mode(GGML_Q2_K) == QACT_Q8_K && quant_act_mode(GGML_Q3_K) == QACT_Q8_K &&
              quant_act_mode(GGML_IQ4_XS) == QACT_Q8_K && quant_act_mode(GGML_IQ4_NL) == QACT_Q8_0,
          "activation mode per weight type");
    /* a block holding a NaN or an infinity (at any lane: the SIMD max kept or dropped a NaN by its position, and NaN x
     * id converted to -127): values 0, scales NaN, on every quantizer, in every block sharing its scale (QACT_Q8_K's
     * 8); the other blocks as before */
    for (int mode = QACT_F32; mode <= QACT_Q8_K; mode++) {
        static float xn[N];
        static const float bad_vals[3] = {NAN, INFINITY, -INFINITY};
        memcpy(xn, x, sizeof xn);
        const int G = (int)quant_act_group(mode);
        int nb_bad = 0;
        for (int b = 0; b < N / 32; b += 5 * G, nb_bad++) xn[b * 32 + (b * 7) % 32] = bad_vals[nb_bad % 3];
        for (int level = 0; level < 3; level++) {
            if ((level == 1 && !quant_avx2_available()) || (level == 2 && !quant_avx512_available())) continue;
            memset(q1, 0x55, sizeof q1);
            if (level == 0) quant_act_row_mode(xn, N, q1, d1, s1, mode);
            else if (level == 1) quant_act_row_mode_avx2(xn, N, q1, d1, s1, mode);
            else quant_act_row_mode_avx512(xn, N, q1, d1, s1, mode);
            quant_act_row_mode(x, N, q, d, s, mode);
            int wrong = 0;
            for (int b = 0; b < N / 32; b++) {
                if ((b / G) % 5 == 0) {
                    for (int j = 0; j < 32; j++) wrong += q1[b * 32 + j] != 0;
                    wrong += !isnan(d1[b]) || !isnan(s1[b]);
                } else {
                    wrong += memcmp(q + b * 32, q1 + b * 32, 32) != 0 || d[b] != d1[b] || s[b] != s1[b];
                }
            }
            CHECK(wrong == 0, "activation mode %d, %s quantizer: %d wrong in blocks with a NaN / inf (values 0, scales "
                  "NaN) or beside them", mode, level == 0 ? "scalar" : level == 1 ? "AVX2" : "AVX-512", wrong);
        }
    }
}

/* ggmlc: llama.cpp-order attention and SwiGLU: scalar == SIMD (AVX-512, or AVX2 on CPUs without it and under
 * INFLLM_SIMD=avx2: test_quant_avx2) bitwise, close to float64. Layouts: the block kernel at d 64, 96 and 128,
 * head sizes that are not multiples of 64 (d 80, 96: one-token batches on the scalar path), and the row kernel
 * (groups above the block kernel's 12 rows, d 256). */
/* qs: the queries' scale (2 for scores of a few units; 12 for score spreads past 87 in most rows, whose
 * exp(s - max) fall below FLT_MIN: the AVX-512 kernels build those subnormals from integer steps, session 73) */
static void test_ggmlc_attn_qs(int Hq, int Hkv, int D, int64_t nkv, unsigned long long seed, float qs) {
    unsigned long long rng = seed;
    uint16_t *K = malloc(2 * (size_t)nkv * Hkv * D), *V = malloc(2 * (size_t)nkv * Hkv * D);
    float *q = malloc(4 * 7 * (size_t)Hq * D), *o0 = malloc(4 * 7 * (size_t)Hq * D), *o1 = malloc(4 * 7 * (size_t)Hq * D);
    for (int64_t i = 0; i < nkv * Hkv * D; i++) {
        K[i] = mdl_f32_to_f16((float)h_normal(&rng));
        V[i] = mdl_f32_to_f16((float)h_normal(&rng));
    }
    for (int i = 0; i < 7 * Hq * D; i++) q[i] = (float)h_normal(&rng) * qs;
    /* V transposed, [Hkv][D][vcap], finite garbage past nkv (must not matter) */
    const int64_t vcap = (nkv + 63) / 64 * 64 + 64;
    uint16_t *VT = malloc(2 * (size_t)vcap * Hkv * D);
    for (int64_t i = 0; i < vcap * Hkv * D; i++) VT[i] = mdl_f32_to_f16(1000.f);
    for (int64_t j = 0; j < nkv; j++)
        for (int i = 0; i < Hkv * D; i++) VT[i * vcap + j] = V[j * Hkv * D + i];
    float *o2 = malloc(4 * 7 * (size_t)Hq * D);
    CHECK(ggmlc_attn_f16(K, V, VT, 300, nkv, q, 1, Hq, Hkv, D, 0.125f, o2, 1) != 0, "VT capacity not a multiple of 64");
    for (int n = 1; n <= 7; n += 6) {
        ggmlc_force_scalar(1);
        CHECK(ggmlc_attn_f16(K, V, NULL, 0, nkv, q, n, Hq, Hkv, D, 0.125f, o0, 2) == 0, "ggmlc attention (scalar)");
        ggmlc_force_scalar(0);
        CHECK(ggmlc_attn_f16(K, V, NULL, 0, nkv, q, n, Hq, Hkv, D, 0.125f, o1, 2) == 0, "ggmlc attention");
        CHECK(memcmp(o0, o1, 4 * (size_t)n * Hq * D) == 0, "ggmlc attention (order %d, Hq %d Hkv %d D %d), %d queries: SIMD != scalar bitwise", ggmlc_order(), Hq, Hkv, D, n);
        CHECK(ggmlc_attn_f16(K, V, VT, vcap, nkv, q, n, Hq, Hkv, D, 0.125f, o2, 2) == 0, "ggmlc attention (VT)");
        CHECK(memcmp(o0, o2, 4 * (size_t)n * Hq * D) == 0, "ggmlc attention (order %d, Hq %d Hkv %d D %d), %d queries: transposed V != scalar", ggmlc_order(), Hq, Hkv, D, n);
        /* one token with V transposed: the decode split over threads (keys in chunks of 256 x KV heads, rows,
         * KV heads x 16 dims) gives the same bits at any thread count */
        for (int nt = 1; n == 1 && nt <= 5; nt += 2) {
            memset(o2, 0xff, 4 * (size_t)Hq * D);
            CHECK(ggmlc_attn_f16(K, V, VT, vcap, nkv, q, 1, Hq, Hkv, D, 0.125f, o2, nt) == 0, "ggmlc decode (VT)");
            CHECK(memcmp(o0, o2, 4 * (size_t)Hq * D) == 0, "ggmlc decode (order %d, Hq %d Hkv %d D %d, %lld keys), %d threads: != scalar",
                  ggmlc_order(), Hq, Hkv, D, (long long)nkv, nt);
        }
        double worst = 0;
        for (int t = 0; t < n; t++)
            for (int h = 0; h < Hq; h++) {
                int64_t L = nkv - n + t + 1;
                int g = h / (Hq / Hkv);
                double *sc = malloc(sizeof(double) * (size_t)L), mx = -1e300, sum = 0;
                for (int64_t j = 0; j < L; j++) {
                    double a = 0;
                    for (int dd = 0; dd < D; dd++)
                        a += (double)q[(t * Hq + h) * D + dd] * mdl_f16_to_f32(K[(j * Hkv + g) * D + dd]);
                    sc[j] = a * 0.125;
                    mx = sc[j] > mx ? sc[j] : mx;
                }
                for (int64_t j = 0; j < L; j++) sum += (sc[j] = exp(sc[j] - mx));
                for (int dd = 0; dd < D; dd++) {
                    double r = 0;
                    for (int64_t j = 0; j < L; j++) r += sc[j] / sum * mdl_f16_to_f32(V[(j * Hkv + g) * D + dd]);
                    double e = fabs(r - o1[(t * Hq + h) * D + dd]);
                    worst = e > worst ? e : worst;
                }
                free(sc);
            }
        /* the queries' f16 rounding (llama.cpp's) moves each score by ~2^-11 of its magnitude, which grows with qs */
        CHECK(worst < 2e-3 * qs / 2.f, "ggmlc attention (order %d, Hq %d Hkv %d D %d, %d queries, q scale %g) vs float64: max abs err %g",
              ggmlc_order(), Hq, Hkv, D, n, (double)qs, worst);
    }
    /* a one-token batch takes another order than the same query inside a batch: both close. The scores differ
     * by f32 rounding, which can flip a probability's rounding to f16 (by 2^-11 of it, rarely: near-ties); all
     * of them flipping moves the output by at most 2^-11 x sum_j p_j |v_j| <= 2^-11 max |v| (session 28: 2.1e-5
     * at d 80, where the earlier bound, 1e-5, was a guess) */
    ggmlc_attn_f16(K, V, NULL, 0, nkv, q + 6 * Hq * D, 1, Hq, Hkv, D, 0.125f, o0, 1);
    double dmax = 0, vmax = 0;
    for (int i = 0; i < Hq * D; i++) dmax = fmax(dmax, fabs(o0[i] - o1[6 * Hq * D + i]));
    for (int64_t i = 0; i < nkv * Hkv * D; i++) vmax = fmax(vmax, fabs(mdl_f16_to_f32(V[i])));
    CHECK(dmax <= ldexp(vmax, -11), "one-token vs batch order (order %d, Hq %d Hkv %d D %d): %g > 2^-11 max|v| %g", ggmlc_order(), Hq, Hkv, D,
          dmax, ldexp(vmax, -11));
    free(K); free(V); free(VT); free(q); free(o0); free(o1); free(o2);
}
static void test_ggmlc_attn(int Hq, int Hkv, int D, int64_t nkv, unsigned long long seed) {
    test_ggmlc_attn_qs(Hq, Hkv, D, nkv, seed, 2.f);
}

/* the one-token decode split at cache lengths around its 16-key blocks, 64-key P.V steps and 256-key chunks
 * (1 .. 257 keys), groups of 1 and 3, d 64 and 128, 1 and 3 threads: bitwise the scalar path */
static void test_ggmlc_decode_edges(void) {
    static const int64_t lens[] = {1, 15, 16, 17, 63, 64, 65, 255, 256, 257};
    static const int shapes[][3] = {{4, 4, 64}, {6, 2, 128}};
    unsigned long long rng = 31;
    for (int si = 0; si < 2; si++) {
        const int Hq = shapes[si][0], Hkv = shapes[si][1], D = shapes[si][2];
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
            const int64_t nkv = lens[li], vcap = (nkv + 63) / 64 * 64;
            uint16_t *K = malloc(2 * (size_t)nkv * Hkv * D), *V = malloc(2 * (size_t)nkv * Hkv * D);
            uint16_t *VT = malloc(2 * (size_t)vcap * Hkv * D);
            float *q = malloc(4 * (size_t)Hq * D), *o0 = malloc(4 * (size_t)Hq * D), *o1 = malloc(4 * (size_t)Hq * D);
            for (int64_t i = 0; i < nkv * Hkv * D; i++) {
                K[i] = mdl_f32_to_f16((float)h_normal(&rng));
                V[i] = mdl_f32_to_f16((float)h_normal(&rng));
            }
            for (int64_t i = 0; i < vcap * Hkv * D; i++) VT[i] = mdl_f32_to_f16(-3.f); /* finite past the keys */
            for (int64_t j = 0; j < nkv; j++)
                for (int i = 0; i < Hkv * D; i++) VT[i * vcap + j] = V[j * Hkv * D + i];
            for (int i = 0; i < Hq * D; i++) q[i] = (float)h_normal(&rng) * 2.f;
            ggmlc_force_scalar(1);
            CHECK(ggmlc_attn_f16(K, V, NULL, 0, nkv, q, 1, Hq, Hkv, D, 0.125f, o0, 1) == 0, "ggmlc decode edges (scalar)");
            ggmlc_force_scalar(0);
            for (int nt = 1; nt <= 3; nt += 2) {
                memset(o1, 0xff, 4 * (size_t)Hq * D);
                CHECK(ggmlc_attn_f16(K, V, VT, vcap, nkv, q, 1, Hq, Hkv, D, 0.125f, o1, nt) == 0, "ggmlc decode edges");
                CHECK(memcmp(o0, o1, 4 * (size_t)Hq * D) == 0, "ggmlc decode (order %d, Hq %d Hkv %d D %d), %lld keys, %d threads: != scalar",
                      ggmlc_order(), Hq, Hkv, D, (long long)nkv, nt);
            }
            free(K); free(V); free(VT); free(q); free(o0); free(o1);
        }
    }
}

/* every case in both of llama.cpp's x86 orders (ggmlc.h): the AVX2 build's 8 lanes (ggmlc_l8_avx2.c, run on AVX-512
 * CPUs too) and the AVX-512 build's 16 (AVX-512 kernels, or ggmlc_avx2.c's pairs of 8 on AVX2 CPUs), each against
 * the scalar path in the same order */
static void test_ggmlc_order(void) {
    test_ggmlc_decode_edges();
    test_ggmlc_attn_qs(6, 2, 64, 301, 31, 12.f); /* subnormal exps in the batch softmax and the decode split */
    test_ggmlc_attn_qs(8, 2, 128, 203, 32, 12.f);
    test_ggmlc_attn(6, 2, 64, 301, 21);
    test_ggmlc_attn(8, 2, 128, 203, 22);
    test_ggmlc_attn(4, 1, 80, 77, 23);
    test_ggmlc_attn(16, 1, 64, 150, 24);
    test_ggmlc_attn(4, 2, 256, 90, 26); /* head sizes above the block kernel's 128: the row kernel */
    test_ggmlc_attn(7, 1, 96, 130, 27);
    test_ggmlc_attn(9, 3, 64, 1100, 28);  /* SmolLM2's heads, decode over 5 key chunks (the last partial) */
    test_ggmlc_attn(32, 2, 128, 530, 29); /* groups of 16 (MiniCPM4): decode rows above the block kernel's 12 */
    unsigned long long rng = 25;
    enum { F = 1541 };
    static float g0[F], g1[F], u[F];
    for (int i = 0; i < F; i++) {
        g0[i] = g1[i] = (float)(h_normal(&rng) * (i < 20 ? 60 : 4));
        u[i] = (float)h_normal(&rng);
    }
    g0[0] = g1[0] = -200.f; /* exp underflow path */
    for (int i = 0; i < 128; i++) /* exp(-x) below FLT_MIN (x in 87.3 .. 104) and around its edges: 80 .. 112 */
        g0[40 + i] = g1[40 + i] = 80.f + 0.25f * (float)i + (float)h_uniform(&rng) * 0.25f;
    ggmlc_force_scalar(1);
    ggmlc_swiglu(g0, u, F);
    ggmlc_force_scalar(0);
    double ws = 0;
    for (int i = 0; i < F; i++) {
        double xg = g1[i], ref = xg / (1 + exp(-xg)) * u[i];
        ws = fmax(ws, fabs(ref - g0[i]) / (fabs(ref) + 1e-3));
    }
    ggmlc_swiglu(g1, u, F);
    CHECK(memcmp(g0, g1, sizeof g0) == 0, "ggmlc SwiGLU (order %d): SIMD != scalar bitwise", ggmlc_order());
    CHECK(ws < 1e-5, "ggmlc SwiGLU (order %d) vs float64: rel err %g", ggmlc_order(), ws);
}

/* the two orders are two computations: SwiGLU (the expf variants) and the attention (lane counts), batch and one
 * token, each differ in some element between them (an order switch that changed nothing fails here) and agree to
 * rounding: SwiGLU within 4 f32 ulps of the larger, the attention within 2^-11 max |v| (probabilities rounded to f16
 * may flip, as between a batch and a one-token order) */
static void test_ggmlc_orders_differ(void) {
    unsigned long long rng = 41;
    enum { F = 1024, HQ = 6, HKV = 2, D = 64, NKV = 300, NQ = 5 };
    static float g8[F], g16[F], u[F], q[NQ * HQ * D], o8[NQ * HQ * D], o16[NQ * HQ * D];
    static uint16_t K[NKV * HKV * D], V[NKV * HKV * D], VT[HKV * D * 320];
    for (int i = 0; i < F; i++) {
        g8[i] = g16[i] = (float)(h_normal(&rng) * 6);
        u[i] = (float)h_normal(&rng);
    }
    for (int i = 0; i < NKV * HKV * D; i++) {
        K[i] = mdl_f32_to_f16((float)h_normal(&rng));
        V[i] = mdl_f32_to_f16((float)h_normal(&rng));
    }
    for (int j = 0; j < 320; j++)
        for (int i = 0; i < HKV * D; i++) VT[i * 320 + j] = j < NKV ? V[j * HKV * D + i] : 0;
    for (int i = 0; i < NQ * HQ * D; i++) q[i] = (float)h_normal(&rng) * 2.f;
    ggmlc_set_order(GGMLC_ORDER_AVX2);
    ggmlc_swiglu(g8, u, F);
    ggmlc_set_order(GGMLC_ORDER_AVX512);
    ggmlc_swiglu(g16, u, F);
    int ndiff = 0, far = 0;
    for (int i = 0; i < F; i++) {
        ndiff += g8[i] != g16[i];
        far += fabsf(g8[i] - g16[i]) > 4.f * 0x1p-23f * fmaxf(fabsf(g8[i]), fabsf(g16[i]));
    }
    CHECK(ndiff > 0 && far == 0, "SwiGLU, AVX2 vs AVX-512 order: %d of %d values differ (want > 0), %d beyond 4 ulps", ndiff, F, far);
    for (int n = 1; n <= NQ; n += NQ - 1) {
        ggmlc_set_order(GGMLC_ORDER_AVX2);
        CHECK(ggmlc_attn_f16(K, V, VT, 320, NKV, q, n, HQ, HKV, D, 0.125f, o8, 2) == 0, "ggmlc attention, AVX2 order");
        ggmlc_set_order(GGMLC_ORDER_AVX512);
        CHECK(ggmlc_attn_f16(K, V, VT, 320, NKV, q, n, HQ, HKV, D, 0.125f, o16, 2) == 0, "ggmlc attention, AVX-512 order");
        double dmax = 0;
        ndiff = 0;
        for (int i = 0; i < n * HQ * D; i++) {
            ndiff += o8[i] != o16[i];
            dmax = fmax(dmax, fabs(o8[i] - o16[i]));
        }
        double vmax = 0;
        for (int i = 0; i < NKV * HKV * D; i++) vmax = fmax(vmax, fabs(mdl_f16_to_f32(V[i])));
        CHECK(ndiff > 0 && dmax <= ldexp(vmax, -11), "attention (%d queries), AVX2 vs AVX-512 order: %d of %d values differ "
              "(want > 0), max %g (bound %g)", n, ndiff, n * HQ * D, dmax, ldexp(vmax, -11));
    }
}

/* ggml's AVX-512 expf: the kernel's lanes bitwise its scalar twin, across the results below FLT_MIN (exp of
 * -87.4 .. -103.9, the integer steps of scalef_denormal, session 73: they never change an output, a softmax's f16
 * probabilities and SwiGLU's 1 + e absorb them, so only this checks them), their edges, exact ties of the rounding
 * cannot be aimed at from x, so every 1/64 step and random points are taken */
static void test_ggmlc_expf(void) {
    enum { N = 4096 };
    static float x[N], y[N];
    unsigned long long rng = 73;
    for (int i = 0; i < N; i++)
        x[i] = i < 2560 ? -110.f + (float)i / 64.f : (float)(-120.0 + 130.0 * h_uniform(&rng));
    /* the AVX-512 kernel, the AVX-512 order on AVX2, the AVX2 build's order on AVX2 (ggmlc_l8_avx2.c) */
    for (int k = 0; k < 3; k++) {
        if (k == 0 ? !quant_avx512_available() : !quant_avx2_available()) continue;
        (k == 0 ? ggmlc_expf_avx512 : k == 1 ? ggmlc_expf_avx2 : ggmlc_expf_l8_avx2)(x, y, N);
        int bad = 0, sub = 0;
        for (int i = 0; i < N; i++) {
            const float want = k == 2 ? ggmlc_expf1_l8(x[i]) : ggmlc_expf1(x[i]);
            sub += want != 0.f && fabsf(want) < 1.17549435e-38f;
            if (memcmp(&want, &y[i], 4) != 0 && bad++ < 3)
                printf("  expf %d (%.9g): kernel %a, scalar %a\n", k, (double)x[i], (double)y[i], (double)want);
        }
        CHECK(bad == 0 && sub > 500, "expf kernel %d: %d of %d differ from the scalar twin (%d subnormal results)", k,
              bad, N, sub);
    }
}

static void test_ggmlc(void) {
    test_ggmlc_expf();
    const int dflt = ggmlc_order();
    CHECK(dflt == (quant_avx512_available() || !quant_avx2_available() ? GGMLC_ORDER_AVX512 : GGMLC_ORDER_AVX2) ||
              getenv("INFLLM_LLAMA_ORDER"), "default order %d for kernels %s", dflt, quant_kernel_name());
    static const int orders[2] = {GGMLC_ORDER_AVX2, GGMLC_ORDER_AVX512};
    for (int i = 0; i < 2; i++) {
        ggmlc_set_order(orders[i]);
        CHECK(ggmlc_order() == orders[i], "ggmlc_set_order(%d) took", orders[i]);
        test_ggmlc_order();
    }
    test_ggmlc_orders_differ();
    ggmlc_set_order(0);
    CHECK(ggmlc_order() == dflt, "ggmlc_set_order(0) returns to the default");
}

int main(void) {
    printf("kernels: %s\n", quant_kernel_name());
    test_act_modes();
    test_ggmlc();
    uint32_t types[] = {GGML_F32,  GGML_F16,  GGML_BF16, GGML_Q8_0, GGML_Q4_0, GGML_Q4_1, GGML_Q5_0,
                        GGML_Q5_1, GGML_Q2_K, GGML_Q3_K, GGML_Q4_K, GGML_Q5_K, GGML_Q6_K, GGML_IQ4_NL,
                        GGML_IQ4_XS};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        int bs = ggml_block_size(types[i]);
        test_type(types[i], bs == 256 ? 512 : 576, 1234 + i);
        test_type(types[i], bs == 256 ? 256 : 32, 99 + i);
        if (bs != 256) test_type(types[i], 96, 7 + i); /* odd block count: the 2-block kernels' tail */
    }
    /* the SIMD activation quantizer gives the same bytes and scales as the scalar one */
    if (quant_avx512_available()) {
        unsigned long long rng = 5;
        enum { N = 4096 };
        static float x[N], d0[N / 32], s0[N / 32], d1[N / 32], s1[N / 32];
        static int8_t q0[N], q1[N];
        for (int i = 0; i < N; i++) x[i] = (float)(h_normal(&rng) * (i % 97 == 0 ? 50 : 1));
        for (int i = 0; i < 32; i++) x[i] = 0.f; /* an all-zero block */
        quant_act_row(x, N, q0, d0, s0);
        quant_act_row_avx512(x, N, q1, d1, s1);
        CHECK(memcmp(q0, q1, N) == 0 && memcmp(d0, d1, sizeof d0) == 0 && memcmp(s0, s1, sizeof s0) == 0,
              "SIMD activation quantization differs from the scalar one");
    }
    {
        static const uint32_t tiled[] = {GGML_Q8_0, GGML_Q4_0, GGML_Q4_1, GGML_Q5_0, GGML_Q5_1, GGML_Q2_K,
                                         GGML_Q3_K, GGML_Q4_K, GGML_Q5_K, GGML_Q6_K, GGML_IQ4_XS};
        for (size_t i = 0; i < sizeof tiled / sizeof tiled[0]; i++) test_tiles_exact(tiled[i]);
    }
    test_threaded(GGML_Q4_1, 576);
    test_threaded(GGML_Q8_0, 576);
    test_threaded(GGML_Q6_K, 512);
    test_threaded(GGML_Q4_K, 512);
    test_threaded(GGML_Q5_K, 768);
    test_threaded(GGML_Q5_0, 576);
    test_threaded(GGML_Q5_1, 576);
    test_threaded(GGML_Q4_0, 576);
    test_threaded(GGML_Q3_K, 512);
    test_threaded(GGML_Q2_K, 768);
    test_threaded(GGML_IQ4_XS, 512);
    test_threaded(GGML_F16, 576);
    test_multi();
    test_gguf();
    return finish("test_quant");
}
