/* simd_none.c: the model runtime's x86 kernel entry points on other CPUs (aarch64, ...), where CMake leaves the
 * *_avx512.c / *_avx2.c files out. Every availability query answers 0, so quant.c and ggmlc.c take their portable
 * paths and never call the kernels below; those exist only so that the callers' references link, and each
 * reports "no kernel" (0) or does nothing. Empty on x86, where the real kernels are built. */
#if !defined(__x86_64__) && !defined(__i386__)
#include <stddef.h>
#include <stdint.h>

#include "ggmlc.h"
#include "quant.h"

int quant_avx2_available(void) { return 0; }
int quant_avx512_available(void) { return 0; }

int quant_dot_avx2(uint32_t type, int64_t n, const void *wrow, const float *const *xa, const int8_t *const *qa,
                   const float *const *da, const float *const *sa, int na, float *out) {
    return 0;
}
int quant_dot_avx512(uint32_t type, int64_t n, const void *wrow, const float *const *xa, const int8_t *const *qa,
                     const float *const *da, const float *const *sa, int na, float *out) {
    return 0;
}
void quant_act_row_mode_avx2(const float *x, int64_t n, int8_t *q, float *d, float *s, int mode) {}
void quant_act_row_avx512(const float *x, int64_t n, int8_t *q, float *d, float *s) {}
void quant_act_row_mode_avx512(const float *x, int64_t n, int8_t *q, float *d, float *s, int mode) {}
int quant_gemm_avx512(uint32_t type, const void *w, int64_t r0, int64_t r1, int64_t cols, const int8_t *q,
                      const float *d, const float *s, int64_t ntok, float *y, int64_t ldy) {
    return 0;
}
int quant_gemm256_avx512(uint32_t type, const void *w, int64_t r0, int64_t r1, int64_t cols, const int8_t *q,
                         const float *d, const float *s, int64_t ntok, float *y, int64_t ldy) {
    return 0;
}
int quant_gemm_avx2(uint32_t type, const void *w, int64_t r0, int64_t r1, int64_t cols, const int8_t *q,
                    const float *d, const float *s, int64_t ntok, float *y, int64_t ldy) {
    return 0;
}
int quant_gemm_ktile_avx2(uint32_t type, const void *w, int64_t r0, int64_t r1, int64_t cols, const void *packed,
                          int64_t ntok, float *y, int64_t ldy) {
    return 0;
}
int quant_gemm_ktile256_avx512(uint32_t type, const void *w, int64_t r0, int64_t r1, int64_t cols, const void *packed,
                               int64_t ntok, float *y, int64_t ldy) {
    return 0;
}
int quant_gemm_ktile_rl512(uint32_t type, const void *w, int64_t r0, int64_t r1, int64_t cols, const void *packed,
                           int64_t ntok, float *y, int64_t ldy) {
    return 0;
}
int quant_gemm_ktile_rl_avx2(uint32_t type, const void *w, int64_t r0, int64_t r1, int64_t cols, const void *packed,
                             int64_t ntok, float *y, int64_t ldy) {
    return 0;
}
int quant_gemv_avx2(uint32_t type, const void *w, int64_t r0, int64_t r1, int64_t cols, const int8_t *q,
                    const float *d, const float *s, int64_t ntok, float *y, int64_t ldy) {
    return 0;
}
int quant_gemv256_avx512(uint32_t type, const void *w, int64_t r0, int64_t r1, int64_t cols, const int8_t *q,
                         const float *d, const float *s, int64_t ntok, float *y, int64_t ldy) {
    return 0;
}
int quant_rows_avx512(uint32_t type, const void *w, int64_t r0, int64_t r1, int64_t cols, const float *x, const int8_t *q,
                      const float *d, const float *s, int64_t ntok, float *y, int64_t ldy) {
    return 0;
}

#define GGMLC_NONE(level)                                                                                            \
    void ggmlc_swiglu_##level(float *g, const float *u, int64_t n) {}                                                \
    void ggmlc_attn_row_##level(const uint16_t *K, const uint16_t *V, int64_t ld, int64_t L, const float *q, int D,  \
                                float scale, float *out, float *sbuf, float *accbuf, int vecdot) {}                  \
    void ggmlc_f32_to_f16_##level(const float *src, uint16_t *dst, size_t n) {}                                      \
    void ggmlc_f16_to_f32_##level(const uint16_t *src, float *dst, size_t n) {}                                      \
    void ggmlc_attn_block_##level(const uint16_t *K, const uint16_t *V, const uint16_t *VT, int64_t vld, int64_t ld, \
                                  const int64_t *L, int R, const float *const *qrows, int D, float scale,            \
                                  float *const *orows, float *work, int vecdot) {}                                   \
    void ggmlc_dec_scores_##level(const uint16_t *K, int64_t ld, const int64_t *L, int R, const float *q, int D,   \
                                  float scale, int64_t jb, int64_t je, float *sb, int64_t ls, float *work) {}        \
    void ggmlc_dec_softmax_##level(float *srow, int64_t L16, int64_t LP) {}                                         \
    void ggmlc_dec_pv_##level(const uint16_t *VT, int64_t vld, int D, int R, const float *sb, int64_t ls,          \
                              int64_t LP, int db, int de, float *const *orows, float *work) {}
GGMLC_NONE(avx512)
GGMLC_NONE(avx2)
#undef GGMLC_NONE
void ggmlc_expf_avx512(const float *x, float *y, int64_t n) {}
void ggmlc_expf_avx2(const float *x, float *y, int64_t n) {}
void ggmlc_expf_l8_avx2(const float *x, float *y, int64_t n) {}
void ggmlc_swiglu_l8_avx2(float *g, const float *u, int64_t n) {}
void ggmlc_attn_block_l8_avx2(const uint16_t *K, const uint16_t *V, const uint16_t *VT, int64_t vld, int64_t ld,
                              const int64_t *L, int R, const float *const *qrows, int D, float scale,
                              float *const *orows, float *work, int vecdot) {}
void ggmlc_dec_scores_l8_avx2(const uint16_t *K, int64_t ld, const int64_t *L, int R, const float *q, int D,
                              float scale, int64_t jb, int64_t je, float *sb, int64_t ls, float *work) {}
void ggmlc_dec_softmax_l8_avx2(float *srow, int64_t L16, int64_t LP) {}
void ggmlc_dec_pv_l8_avx2(const uint16_t *VT, int64_t vld, int D, int R, const float *sb, int64_t ls, int64_t LP,
                          int db, int de, float *const *orows, float *work) {}
#else
typedef int infllm_simd_none_empty; /* ISO C: a translation unit must declare something */
#endif
