/* quant.h: ggml block formats (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K,
 * Q6_K, IQ4_NL, IQ4_XS) and the
 * matrix-vector / matrix-matrix products on the quantized data. Activations are quantized
 * to int8 (scale amax/127 per 32 values, or per 256 for the K-quants' QACT_Q8_K) and multiplied with integer dot
 * products (AVX512-VNNI or AVX2 when the CPU has it, a portable scalar path otherwise); F32/F16/BF16 weights multiply float
 * activations. Weights are never dequantized as a whole. */
#ifndef INFLLM_QUANT_H
#define INFLLM_QUANT_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#define QK 32
#define QKK 256
#define QUANT_MAX_NA 8 /* activation rows per kernel call */

/* IQ4_NL / IQ4_XS: the values of the 16 4-bit codes (ggml's kvalues_iq4nl) */
extern const int8_t quant_iq4nl_values[16];

/* 1 if `type` (enum ggml_type) is supported for products and dequantization. */
int quant_supported(uint32_t type);
/* Dequantize n values (n a multiple of the block size) of one row. */
void quant_dequant_row(uint32_t type, const void *src, float *dst, int64_t n);

/* An activation matrix quantized to int8 blocks of 32. */
typedef struct qact {
    int64_t n;          /* columns (multiple of 32) */
    int64_t rows;
    int8_t *q;          /* [rows][n] */
    float *d;           /* [rows][n/32] block scale */
    float *s;           /* [rows][n/32] d * sum(q) of the block (QACT_Q8_K: sum(q)) */
} qact;
void quant_act_row(const float *x, int64_t n, int8_t *q, float *d, float *s);
/* Activation quantization schemes: QACT_F32 (scale amax/127 in f32, values x / scale; no weight type's since session
 * 72: the tests' scheme whose d * q is exactly what their f64 references multiply), QACT_Q8_1 and QACT_Q8_0
 * (llama.cpp's quantize_row_q8_1 / q8_0: values x * (127/amax) rounded to nearest even, the scale rounded to f16,
 * Q8_1's s = f16(d * sum)) and QACT_Q8_K (the K-quants and IQ4_XS, as llama.cpp's q8_K: one f32 scale amax/127 per
 * 256 values, values x * (127/amax), so that a super-block's products sum in int32 before one float multiply: d holds
 * the 256's scale in each of its 8 blocks, s the block's integer sum as a float, exact). quant_matmul picks the scheme
 * per weight type (quant_act_mode); the kernels of a type require its scheme. */
enum { QACT_F32 = 0, QACT_Q8_1 = 1, QACT_Q8_0 = 2, QACT_Q8_K = 3 };
/* 32-value blocks that share one scale in the scheme (8 for QACT_Q8_K; a row's last group may be shorter) */
static inline int64_t quant_act_group(int mode) { return mode == QACT_Q8_K ? 8 : 1; }
void quant_act_row_mode(const float *x, int64_t n, int8_t *q, float *d, float *s, int mode);
/* a block's stored scale d and s = d * sum(q) (QACT_Q8_K: sum(q)) for the scheme, from the f32 scale dd = amax / 127
 * (the scalar, AVX2 and AVX-512 quantizers finish a block with this) */
void quant_act_scales(int mode, float dd, int sum, float *d, float *s);
/* a block's scale dd = amax / 127 and the factor its values are multiplied by before rounding: 1 / dd (QACT_F32)
 * or 127 / amax (llama.cpp's quantize_row_q8_1 / q8_0), 0 for a block of zeros; shared by the scalar, AVX2 and
 * AVX-512 quantizers so that they round the same products */
static inline float quant_act_block_inv(int mode, float amax, float *dd) {
    *dd = amax / 127.f;
    if (mode == QACT_F32) return *dd > 0.f ? 1.f / *dd : 0.f;
    return amax != 0.f ? 127.f / amax : 0.f;
}
int quant_act_mode(uint32_t type);
/* A block of activations holding a NaN or an infinity (a model whose activations overflowed, or a NaN weight):
 * values 0 and scales NaN, so that every product over the block is NaN, as float arithmetic would make it not
 * finite. Without this rule each quantizer turned it into finite values in its own way (NaN x id converts to
 * INT_MIN, clamped to -127; the SIMD max kept or dropped a NaN by its lane), so a broken model's logits could come
 * out finite and differ by SIMD level. */
static inline void quant_act_block_nonfinite(int8_t *q, float *d, float *s) {
    for (int j = 0; j < QK; j++) q[j] = 0;
    *d = NAN;
    *s = NAN;
}

/* The quantized activations of one quant_matmul call ([ntok][cols] int8 values, [ntok][cols/32] scales d and s; one
 * such set per activation scheme of a quant_matmul_multi call), grown on demand and kept between calls. One per
 * caller that may run in parallel with another (a model session owns one); zero-initialise, release with
 * quant_scratch_free. */
typedef struct quant_scratch {
    int8_t *q;
    float *d, *s;
    size_t cap_q, cap_d; /* elements */
    void *amx;           /* the AMX-INT8 products' packed activations (quant_amx_pack_act) */
    size_t cap_amx;      /* bytes */
    void *ktile;         /* the K-quant prefill tiles' packed activations (quant_ktile_pack) */
    size_t cap_ktile;    /* bytes */
} quant_scratch;
void quant_scratch_free(quant_scratch *qs);

/* y[t * ldy + r] = W[r,:] . x[t,:] for r < rows, t < ntok. W is [rows][cols] in `type`
 * (row stride ggml_row_size(type, cols)); x is [ntok][cols] float. Threads: OpenMP over rows
 * (nthreads <= 0: all). qs: the caller's activation scratch (NULL: allocated and freed in the
 * call). Returns 0, or -1 with mdl_error() set (unsupported type, bad cols, out of memory). */
int quant_matmul(uint32_t type, const void *w, int64_t rows, int64_t cols, const float *x, int64_t ntok,
                 float *y, int64_t ldy, int nthreads, quant_scratch *qs);

/* Several products of one input (a layer's q / k / v, or gate / up): y_i[t * ldy_i + r] = W_i[r,:] . x[t,:] for each
 * op i (every cols equal), in one OpenMP region with the activations quantized once per scheme the weights take: a
 * decode step's barriers are fewer (each one waits for the slowest thread; on a loaded machine, for a descheduled
 * one). The same bits as nops quant_matmul calls. 1 <= nops <= QUANT_MAX_OPS. */
#define QUANT_MAX_OPS 4
typedef struct quant_mm {
    uint32_t type;     /* enum ggml_type */
    const void *w;     /* [rows][cols] in type */
    int64_t rows, cols;
    float *y;          /* [ntok][ldy] */
    int64_t ldy;
} quant_mm;
int quant_matmul_multi(const quant_mm *ops, int nops, const float *x, int64_t ntok, int nthreads, quant_scratch *qs);

/* Which kernel set quant_matmul uses: "avx512-vnni" (with "+amx-int8" where the K-quants' prefill runs on AMX-INT8
 * tiles), "avx2" or "scalar". force_scalar != 0 selects
 * the scalar path (tests). INFLLM_SIMD=avx2 / scalar (read once, as the attention kernels read it)
 * keeps the model's kernels at that level or below. */
const char *quant_kernel_name(void);
/* 1 when the products take float activations (INFLLM_FLOAT_ACT=1, read once), 0 for the int8 schemes (the default) */
int quant_float_activations(void);
void quant_force_scalar(int force_scalar);

/* Low level, for tests: dots of one weight row with na (1..QUANT_MAX_NA) activation rows. For float
 * weight types xa holds float rows; for quantized types qa holds quantized rows in the type's scheme
 * (quant_act_mode; only q/d/s pointers of each row are read). */
void quant_dot_rows(uint32_t type, int64_t n, const void *wrow, const float *const *xa, const int8_t *const *qa,
                    const float *const *da, const float *const *sa, int na, float *out, int use_simd);

/* internal: whether INFLLM_SIMD allows the model's kernels of this level (1: AVX2, 2: AVX-512) */
int quant_simd_allowed(int level);
/* internal: AVX2 + FMA kernels (quant_avx2.c), for CPUs without AVX512-VNNI; 0 when the type has none */
int quant_dot_avx2(uint32_t type, int64_t n, const void *wrow, const float *const *xa, const int8_t *const *qa,
                   const float *const *da, const float *const *sa, int na, float *out);
int quant_avx2_available(void);
void quant_act_row_mode_avx2(const float *x, int64_t n, int8_t *q, float *d, float *s, int mode);
/* internal: SIMD kernels (quant_avx512.c); return 0 when the type has no SIMD kernel */
int quant_dot_avx512(uint32_t type, int64_t n, const void *wrow, const float *const *xa, const int8_t *const *qa,
                     const float *const *da, const float *const *sa, int na, float *out);
int quant_avx512_available(void);
void quant_act_row_avx512(const float *x, int64_t n, int8_t *q, float *d, float *s);
void quant_act_row_mode_avx512(const float *x, int64_t n, int8_t *q, float *d, float *s, int mode);
/* internal: quant_dot_avx512 over rows r0..r1-1 and ntok tokens (x: float rows for float weights; else q / d / s) into
 * y[t * ldy + r], the loop itself in AVX-512 code (quant_avx512.c says why); 0 (nothing written) for a type without
 * an AVX-512 kernel. Bitwise quant_dot_avx512's results. */
int quant_rows_avx512(uint32_t type, const void *w, int64_t r0, int64_t r1, int64_t cols, const float *x, const int8_t *q,
                      const float *d, const float *s, int64_t ntok, float *y, int64_t ldy);
/* internal: register-blocked product of weight rows r0..r1-1 (Q4_1, Q8_0; else returns 0) with
 * ntok quantized activation rows (q [ntok][cols], d and s [ntok][cols/32]) into y[t * ldy + r]
 * (qgemm_avx512.c), bitwise equal to quant_dot_avx512. Returns 0 (nothing written) when it does
 * not apply or is out of memory. */
int quant_gemm_avx512(uint32_t type, const void *w, int64_t r0, int64_t r1, int64_t cols, const int8_t *q,
                      const float *d, const float *s, int64_t ntok, float *y, int64_t ldy);
/* internal: the same on AVX512-VNNI with 256-bit tiles for Q5_0, Q5_1, Q4_K, Q5_K and Q6_K (qgemm256_avx512.c,
 * qgemm_x86_tiles.h), bitwise equal to quant_dot_avx512; the types quant_gemm_avx512 does not take */
int quant_gemm256_avx512(uint32_t type, const void *w, int64_t r0, int64_t r1, int64_t cols, const int8_t *q,
                         const float *d, const float *s, int64_t ntok, float *y, int64_t ldy);
/* internal: the same on AVX2 + FMA for Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K (qgemm_avx2.c,
 * qgemm_x86_tiles.h), bitwise equal to quant_dot_avx2; >= 4 tokens where AVX512-VNNI is absent */
int quant_gemm_avx2(uint32_t type, const void *w, int64_t r0, int64_t r1, int64_t cols, const int8_t *q,
                    const float *d, const float *s, int64_t ntok, float *y, int64_t ldy);
/* internal: the same for few tokens (decode): 4 weight rows' chains side by side, each token separately, for Q8_0,
 * Q4_1, Q5_0, Q5_1, Q4_K, Q5_K; bitwise equal to quant_dot_avx512 (qgemm256_avx512.c, qgemm_x86_tiles.h) */
int quant_gemv256_avx512(uint32_t type, const void *w, int64_t r0, int64_t r1, int64_t cols, const int8_t *q,
                         const float *d, const float *s, int64_t ntok, float *y, int64_t ldy);
/* internal: the K-quant and IQ4_XS prefill tiles of AVX2 and AVX512-VNNI (qgemm_x86_tiles.h: one weight row x 8 tokens)
 * read their QACT_Q8_K activations packed once a product, where the row loop's chunks share them: per group of 8
 * tokens (a last group repeats its last token) and super-block one QUANT_KTILE_REC-byte record, 32-byte aligned where
 * the buffer is: the 8 tokens' 256 values (int8 [8 blocks][4][2][32]: per 32-value block tokens k and k + 4 side by
 * side, k < 4), their 16-value sums (int16 [4][2][16]), their 32-value block sums s (int16 [4][2][8 blocks]) and their
 * scale D_a (float [8]). quant_ktile_pack
 * writes group g's records (g < ceil(ntok / 8)) from quant_matmul's q / d / s; quant_ktile_act_bytes(ntok, cols) is
 * the whole buffer. */
#define QUANT_KTILE_TOKENS 8
#define QUANT_KTILE_REC (2048 + 256 + 128 + 32)
/* record token k's first byte in a block's 256 values and in the 16-value sums (half of it in the block sums) */
#define QUANT_KTILE_TOFF(k) ((k) % 4 * 64 + (k) / 4 * 32)
int quant_ktile_takes(uint32_t type, int64_t cols, int64_t ntok); /* Q2_K .. Q6_K, IQ4_XS; cols % 256 */
size_t quant_ktile_act_bytes(int64_t ntok, int64_t cols);
void quant_ktile_pack(const int8_t *q, const float *d, const float *s, int64_t ntok, int64_t cols, int64_t g,
                      void *packed);
/* rows r0..r1-1 of a K-quant / IQ4_XS product on the packed activations (AVX2: qgemm_avx2.c; AVX512-VNNI's 256-bit
 * tiles: qgemm256_avx512.c), bitwise quant_dot_avx2 / quant_dot_avx512; 0 (nothing written) when the type or shape is
 * not taken */
int quant_gemm_ktile_avx2(uint32_t type, const void *w, int64_t r0, int64_t r1, int64_t cols, const void *packed,
                          int64_t ntok, float *y, int64_t ldy);
int quant_gemm_ktile256_avx512(uint32_t type, const void *w, int64_t r0, int64_t r1, int64_t cols, const void *packed,
                               int64_t ntok, float *y, int64_t ldy);
/* the same on AVX512-VNNI CPUs with the weight rows in the lanes (qgemm_rl_avx512.c: 16-row panels unpacked once a
 * call, vpdpbusd against broadcast activations); the dispatch takes it where quant_avx512_available() and AMX is not
 * used, unless INFLLM_QUANT_RL=0 (then quant_gemm_ktile256_avx512) */
#define QUANT_RL_MIN_TOKENS 32 /* qmm_rate on a Sapphire Rapids VM: 0.5-0.9x the tiles at 4-16 tokens, 1.2-1.5x at 32 */
int quant_gemm_ktile_rl512(uint32_t type, const void *w, int64_t r0, int64_t r1, int64_t cols, const void *packed,
                           int64_t ntok, float *y, int64_t ldy);
int quant_rl_allowed(void);
/* the same on AVX2 (qgemm_rl_avx2.c: 8-row panels, vpmaddubsw pairs summed in int16 before one vpmaddwd with the
 * scales) for Q2_K .. Q6_K (0 for IQ4_XS: its values + 128 would saturate vpmaddubsw's pairs), bitwise
 * quant_dot_avx2; the dispatch takes it on AVX2 CPUs (with or without AVX-VNNI) from QUANT_RL_MIN_TOKENS tokens unless
 * INFLLM_QUANT_RL=0 */
int quant_gemm_ktile_rl_avx2(uint32_t type, const void *w, int64_t r0, int64_t r1, int64_t cols, const void *packed,
                             int64_t ntok, float *y, int64_t ldy);
/* the same on AVX2 CPUs with AVX-VNNI (qgemm_avxvnni.c: vpdpwssd for AVX2's vpmaddwd + vpaddd), bitwise
 * quant_dot_avx2; quant_avxvnni_available: the CPU has AVX2 + FMA + F16C and AVX-VNNI, INFLLM_SIMD allows AVX2
 * kernels and INFLLM_AVXVNNI is not 0 (0 where the compiler could not build the file) */
int quant_avxvnni_available(void);
int quant_gemm_ktile_avxvnni(uint32_t type, const void *w, int64_t r0, int64_t r1, int64_t cols, const void *packed,
                             int64_t ntok, float *y, int64_t ldy);
/* internal: AMX-INT8 prefill of Q4_K / Q5_K (qgemm_amx.c), bitwise equal to quant_dot_avx512 / _avx2. quant_matmul
 * packs each scheme's activations once a call (quant_amx_pack_act, one 16-token tile at a time, into
 * quant_amx_act_bytes) where quant_amx_takes the product and quant_amx_available(); then quant_gemm_amx does rows
 * r0..r1-1 (0: not taken or out of memory, nothing written). Available on Linux x86-64 CPUs with AMX-INT8 and
 * AVX512-VNNI whose kernel grants the tile state, unless INFLLM_SIMD is below avx512 or INFLLM_QUANT_AMX=0. */
#define QUANT_AMX_MIN_TOKENS 16
#define QUANT_AMX_TILE_TOKENS 16 /* tokens a packed tile */
int quant_amx_available(void);
int quant_amx_allowed(void); /* INFLLM_SIMD and INFLLM_QUANT_AMX (quant.c) */
int quant_amx_takes(uint32_t type, int64_t cols, int64_t ntok);
size_t quant_amx_act_bytes(int64_t ntok, int64_t cols);
void quant_amx_pack_act(const int8_t *q, const float *d, const float *s, int64_t ntok, int64_t cols, int64_t tile,
                        void *packed);
int quant_gemm_amx(uint32_t type, const void *w, int64_t r0, int64_t r1, int64_t cols, const void *packed,
                   int64_t ntok, float *y, int64_t ldy);
/* internal: AVX2 + FMA decode (1-3 tokens) for Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1: 4 weight rows' accumulator chains
 * side by side, each token separately; bitwise equal to quant_dot_avx2 (qgemm_avx2.c) */
int quant_gemv_avx2(uint32_t type, const void *w, int64_t r0, int64_t r1, int64_t cols, const int8_t *q,
                    const float *d, const float *s, int64_t ntok, float *y, int64_t ldy);

#endif
