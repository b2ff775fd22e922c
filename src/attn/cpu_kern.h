/*
 * cpu_kern.h: the inner kernels of the fast CPU path (src/attn), one table per instruction set
 * (scalar, AVX2, AVX-512), picked at run time by cpu_kern_get(). Internal to src/attn.
 *
 * All arithmetic is f32. Keys are packed once per call into f32 tiles (cpu_attn.c):
 *   Kp  [groups][D][16]  16 keys per group, transposed so that one vector holds 16 keys of one dim
 *   Vp  [keys][D]        row-major f32
 * S and P tiles are [R][CPU_KT] (row stride CPU_KT = 64 columns = 4 groups).
 * Softmax state lives in the log2 domain: x = s * scale * log2(e).
 */
#ifndef INFLLM_CPU_KERN_H
#define INFLLM_CPU_KERN_H

#include <stdint.h>

#include "infllm.h"

#define CPU_KT 64 /* columns (keys / kernels) per compute tile */
#define CPU_KG 16 /* keys per packed group */

typedef struct cpu_kern {
    const char *name;
    /* S[r][n] = Q[row r] . key n, n < 16*ng; row r of Q is Q + (rows ? rows[r] : r) * ldq (f32);
     * Kp: ng packed groups. R >= 1. */
    void (*qk)(const float *Q, int64_t ldq, const int *rows, int R, int D, const float *Kp, int ng, float *S);
    /* Online-softmax step over one 64-column tile. Row r uses the columns whose bit is set in
     * kmask[r] (none if 0); columns >= nk are never set. x = S * sl2; m_new = max(m, max x);
     * alpha[r] = 2^(m - m_new) (1 if the row has no column, 0 if m was -inf);
     * P[r][n] = 2^(x - m_new) on valid columns, 0 elsewhere (all 64 columns written);
     * l = l * alpha + sum P. The arithmetic (max and sum trees over the four 16-column
     * vectors) does not depend on nk or on which columns are masked, so the result of a row
     * depends only on its own columns: sparse and dense paths agree bit for bit. */
    void (*softmax)(const float *S, int R, int nk, const uint64_t *kmask, float sl2, float *m, float *l,
                    float *alpha, float *P);
    /* O[row r][:] = O[row r][:] * alpha[r] + sum_{n < nk} P[r][n] * V[n][:]; row r of O is
     * O + (rows ? rows[r] : r) * D; V rows stride D. */
    void (*pv)(float *O, const int *rows, int R, int D, const float *alpha, const float *P, const float *V, int nk);
    /* Stage-1 pass 1: online max/sum of 2^(S*sl2) over columns n < hi[r] (m, l in log2 domain). */
    void (*lse)(const float *S, int R, int nk, const int *hi, float sl2, float *m, float *l);
    /* Stage-1 pass 2 with the group's head sum. Token t < nt owns rows t*G .. t*G+G-1 of S;
     * P[r][n] = n < hi[r] ? 2^(S[r][n]*sl2 - c[r]) : 0, and for n < ncols (<= 64)
     * dst[t*ldd + n] = P[t*G][n] + P[t*G+1][n] + ... + P[t*G+G-1][n], added in head order
     * (the reference's order), then rounded to bf16 (kept as f32) when round_bf16 is set.
     * Columns >= ncols of dst are not written. */
    void (*expsum)(const float *S, int nt, int G, const int *hi, float sl2, const float *c, float *dst,
                   int64_t ldd, int ncols, int round_bf16);
    /* dst[i] = src[i] as f32, i < n (exact conversion). */
    void (*load)(float *dst, const void *src, infllm_dtype dt, int64_t n);
    /* dst[i] = round_to_dtype(src[i] * mul), i < n (round to nearest even, as dtype.h). */
    void (*store)(void *dst, infllm_dtype dt, const float *src, float mul, int64_t n);
} cpu_kern;

extern const cpu_kern cpu_kern_scalar;
#if defined(__x86_64__) || defined(__i386__)
#define INFLLM_CPU_X86 1
extern const cpu_kern cpu_kern_avx2;
extern const cpu_kern cpu_kern_avx512;
#endif
#if defined(__aarch64__)
#define INFLLM_CPU_NEON 1
extern const cpu_kern cpu_kern_neon; /* kern_neon.c: every aarch64 CPU has Advanced SIMD */
#endif

/* The bf16 dot-product kernels (kern_dot16_avx512bf16.c; cpu_dot16_get): bf16 attention K / V kept as bf16 in
 * pair layouts, per 64-key tile
 *   Kp16 [4 groups][D/2][16][2]  element (key 16 g + n, dim d) at g*16*D + (d/2)*32 + 2 n + (d & 1)
 *   Vp16 [32 pairs][D][2]        element (key n, dim d) at (n/2)*2*D + 2 d + (n & 1)
 * (dot16_kindex / dot16_vindex in cpu_attn.c). qk16: as qk, Q rows of bf16 values (D even). pv16: as pv, P
 * rounded to bf16 (nearest even) for the product, nk a multiple of 16, D a multiple of 16. */
typedef struct cpu_dot16 {
    const char *name;
    void (*qk16)(const uint16_t *Q, int64_t ldq, const int *rows, int R, int D, const uint16_t *Kp, int ng, float *S);
    void (*pv16)(float *O, const int *rows, int R, int D, const float *alpha, const float *P, const uint16_t *V,
                 int nk);
} cpu_dot16;
#ifdef INFLLM_CPU_X86
extern const cpu_dot16 cpu_dot16_avx512bf16;
#if defined(__linux__) && defined(__x86_64__)
#define INFLLM_CPU_AMX 1 /* built where the process can ask the OS for the tile state (CMakeLists.txt) */
extern const cpu_dot16 cpu_dot16_amx; /* kern_dot16_amx.c: the same layouts on AMX-BF16 tiles */
#endif
#endif

/* The dot-product kernels where they run and are faster than the f32 FMA path (AMX-BF16 granted to the process, else
 * AVX512_BF16 on an AMD CPU; INFLLM_BF16_DOT=1 / avx512bf16 / amx / 0 chooses, cpu_attn.c), else NULL. Decided once a
 * process. */
const cpu_dot16 *cpu_dot16_get(void);
/* tests only (tests/amx_emu_hook.c): cpu_dot16_get() returns k from now on (NULL: the CPU's choice again) */
void cpu_dot16_test_override(const cpu_dot16 *k);
/* the kernels for inputs of dtype dt (bf16 only: the pair layouts hold the storage's own values), else NULL: the one
 * rule of every pack, the decode cache's tiles and the backward */
const cpu_dot16 *cpu_dot16_for(infllm_dtype dt);

/* Row j of a packed f32 K ([tiles*4][D][16], the qk kernel's layout) and of a row-major V ([rows][D],
 * V may be NULL): from storage ksrc / vsrc of dtype dt (D <= 256), or zeros when ksrc is NULL.
 * The one packing routine of src/attn (cpu_attn.c). */
void cpu_pack_row(const cpu_kern *kn, infllm_dtype dt, int D, float *K, float *V, int64_t j, const void *ksrc,
                  const void *vsrc);

/* Row j of a K packed for the dot kernels (Kp16's layout) from bf16 storage src, or zeros when src is NULL (cpu_attn.c;
 * the backward packs its K and V tiles with it) */
void cpu_pack_row_dot16(int D, uint16_t *K, int64_t j, const uint16_t *src);

/* fmaxf's result (the other operand where one is NaN) without its call: a call to libm leaves no vector register
 * live across it, so in a kernel's row loop the compiler spilled every vector around it. The sign of a zero maximum
 * may differ from libm's; the kernels only subtract the maximum and compare it with ==, where the sign does not
 * show. */
static inline float kern_fmaxf(float a, float b) { return a != a ? b : (b != b || a > b ? a : b); }

/* The kernel table for the running CPU (INFLLM_SIMD=scalar|avx2|avx512 forces a lower level). */
const cpu_kern *cpu_kern_get(void);

#endif
