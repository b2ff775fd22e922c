/* ggmlc.h: llama.cpp-compatible numerics for the model runtime (ggml CPU backend semantics):
 * SwiGLU with ggml's vectorized expf, and dense causal attention over an f16 K/V cache computed
 * the way ggml's non-flash path does (Q rounded to f16, scores as tinyBLAS f16 dot products,
 * softmax with ggml's expf and per-lane-group partial sums, probabilities rounded to f16, P.V
 * as dot products over the keys; a one-token batch takes ggml_vec_dot_f16's order instead, as
 * llama.cpp does). llama.cpp's x86 builds compute two sets of bits: its AVX-512 build with 16
 * lanes and one expf, its AVX2 build with 8 lanes and another expf (ggmlc_l8_avx2.c says where
 * each comes from); the order (ggmlc_order) picks which one, by default the one llama.cpp built
 * natively for this CPU computes. Bitwise equal to llama.cpp's results for the same inputs; for
 * a given order the scalar, AVX2 and AVX-512 paths give the same bits. */
#ifndef INFLLM_GGMLC_H
#define INFLLM_GGMLC_H

#include <stddef.h>
#include <stdint.h>

/* The lanes of llama.cpp's f16 / f32 vector paths whose bits to compute: its AVX2 build's (8) or its AVX-512
 * build's (16). ggmlc_order: the one set by ggmlc_set_order, else INFLLM_LLAMA_ORDER=avx2|avx512 (read once),
 * else the CPU's (as lowered by INFLLM_SIMD): 16 where AVX-512 kernels run, 8 on AVX2, 16 elsewhere.
 * ggmlc_set_order(0) returns to that default. Not for changing while another thread computes. */
enum { GGMLC_ORDER_AVX2 = 8, GGMLC_ORDER_AVX512 = 16 };
int ggmlc_order(void);
void ggmlc_set_order(int order);

/* g[i] = silu(g[i]) * u[i] (ggml_vec_swiglu_f32) */
void ggmlc_swiglu(float *g, const float *u, int64_t n);

/* Dense causal attention: K, V [nkv][Hkv][D] f16 (cache positions 0..nkv-1), q [n][Hq][D] f32 for
 * the n newest positions (nkv-n .. nkv-1), out [n][Hq][D] f32. D % 16 == 0, Hq % Hkv == 0.
 * VT (optional, NULL: read V): the same values transposed, [Hkv][D][vcap] with vcap a multiple of
 * 64 >= nkv and zeros (or any finite values) past nkv: streamed in order by the P.V products.
 * nthreads <= 0: all. Returns 0, or -1 (bad sizes, out of memory). */
int ggmlc_attn_f16(const uint16_t *K, const uint16_t *V, const uint16_t *VT, int64_t vcap, int64_t nkv,
                   const float *q, int64_t n, int Hq, int Hkv, int D, float scale, float *out, int nthreads);

/* f32 <-> f16 rows (round to nearest even), F16C when available */
void ggmlc_f32_to_f16(const float *src, uint16_t *dst, size_t n);
void ggmlc_f16_to_f32(const uint16_t *src, float *dst, size_t n);

/* for tests: force the scalar path (1) or let the CPU decide (0) */
void ggmlc_force_scalar(int on);

/* internal: AVX-512 kernels (ggmlc_avx512.c) */
void ggmlc_swiglu_avx512(float *g, const float *u, int64_t n);
void ggmlc_attn_row_avx512(const uint16_t *K, const uint16_t *V, int64_t ld, int64_t L, const float *q, int D,
                           float scale, float *out, float *sbuf, float *accbuf, int vecdot);
float ggmlc_silu1(float x);
/* tests: ggml's AVX-512 expf (vec.h ggml_v_expf) lane by lane as the scalar path computes it, and the AVX-512
 * kernel's own (n a multiple of 16; needs an AVX-512 CPU) */
float ggmlc_expf1(float x);
void ggmlc_expf_avx512(const float *x, float *y, int64_t n);
/* the same on AVX2 (n a multiple of 8): the AVX-512 order's expf (ggmlc_avx2.c) and the AVX2 build's (ggmlc_l8_avx2.c,
 * whose scalar twin is ggmlc_expf1_l8) */
void ggmlc_expf_avx2(const float *x, float *y, int64_t n);
void ggmlc_expf_l8_avx2(const float *x, float *y, int64_t n);
float ggmlc_expf1_l8(float x);
void ggmlc_f32_to_f16_avx512(const float *src, uint16_t *dst, size_t n);
void ggmlc_f16_to_f32_avx512(const uint16_t *src, float *dst, size_t n);
#define GGMLC_RB 12 /* query rows per block kernel call */
void ggmlc_attn_block_avx512(const uint16_t *K, const uint16_t *V, const uint16_t *VT, int64_t vld, int64_t ld,
                             const int64_t *L, int R, const float *const *qrows, int D, float scale,
                             float *const *orows, float *work, int vecdot);
/* internal: one-token decode in pieces that threads share (ggmlc.c's attn_decode; D 64 or 128): the scores of keys
 * [jb, je) (multiples of 16) of R query rows q [R][D] that share K (one KV head, row stride ld; L[r] = the keys,
 * the same for every row) into sb [R][ls] (-inf from L on); one row's softmax (scores on [0, L16) -> f16
 * probabilities, zeros on [L16, LP)); P.V from V transposed (VT [D][vld]) for dims [db, de) (multiples of 16) into
 * orows[r]. work: R x (D + 256) floats for the scores, ls + R x 16 D for P.V. */
void ggmlc_dec_scores_avx512(const uint16_t *K, int64_t ld, const int64_t *L, int R, const float *q, int D,
                             float scale, int64_t jb, int64_t je, float *sb, int64_t ls, float *work);
void ggmlc_dec_softmax_avx512(float *srow, int64_t L16, int64_t LP);
void ggmlc_dec_pv_avx512(const uint16_t *VT, int64_t vld, int D, int R, const float *sb, int64_t ls, int64_t LP,
                         int db, int de, float *const *orows, float *work);
void ggmlc_dec_scores_avx2(const uint16_t *K, int64_t ld, const int64_t *L, int R, const float *q, int D, float scale,
                           int64_t jb, int64_t je, float *sb, int64_t ls, float *work);
void ggmlc_dec_softmax_avx2(float *srow, int64_t L16, int64_t LP);
void ggmlc_dec_pv_avx2(const uint16_t *VT, int64_t vld, int D, int R, const float *sb, int64_t ls, int64_t LP,
                       int db, int de, float *const *orows, float *work);
/* internal: the AVX2 build's order (GGMLC_ORDER_AVX2) in native 8-lane kernels (ggmlc_l8_avx2.c), the calls of the
 * AVX-512 order's kernels with 8-lane scratch: the block kernel takes any D % 16 == 0 (D % 32 == 0 for one token),
 * work R x (D + 128 + ls + 32 D) + ls floats; the decode pieces any D % 32 == 0; swiglu the first n / 8 * 8 values */
void ggmlc_swiglu_l8_avx2(float *g, const float *u, int64_t n);
void ggmlc_attn_block_l8_avx2(const uint16_t *K, const uint16_t *V, const uint16_t *VT, int64_t vld, int64_t ld,
                              const int64_t *L, int R, const float *const *qrows, int D, float scale,
                              float *const *orows, float *work, int vecdot);
void ggmlc_dec_scores_l8_avx2(const uint16_t *K, int64_t ld, const int64_t *L, int R, const float *q, int D,
                              float scale, int64_t jb, int64_t je, float *sb, int64_t ls, float *work);
void ggmlc_dec_softmax_l8_avx2(float *srow, int64_t L16, int64_t LP);
void ggmlc_dec_pv_l8_avx2(const uint16_t *VT, int64_t vld, int D, int R, const float *sb, int64_t ls, int64_t LP,
                          int db, int de, float *const *orows, float *work);
/* internal: AVX2 + FMA + F16C kernels of the AVX-512 order (ggmlc_avx2.c), the same bits */
void ggmlc_swiglu_avx2(float *g, const float *u, int64_t n);
void ggmlc_attn_row_avx2(const uint16_t *K, const uint16_t *V, int64_t ld, int64_t L, const float *q, int D,
                         float scale, float *out, float *sbuf, float *accbuf, int vecdot);
void ggmlc_f32_to_f16_avx2(const float *src, uint16_t *dst, size_t n);
void ggmlc_f16_to_f32_avx2(const uint16_t *src, float *dst, size_t n);
void ggmlc_attn_block_avx2(const uint16_t *K, const uint16_t *V, const uint16_t *VT, int64_t vld, int64_t ld,
                           const int64_t *L, int R, const float *const *qrows, int D, float scale,
                           float *const *orows, float *work, int vecdot);
#endif
