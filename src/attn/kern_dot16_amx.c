/* kern_dot16_amx.c: the bf16 dot-product attention kernels (cpu_dot16) on Intel AMX-BF16 tiles (Sapphire / Emerald /
 * Granite Rapids), compiled with -mamx-tile -mamx-bf16 (and the AVX-512 + AVX512_BF16 flags of the vdpbf16ps file)
 * and called only where cpu_dot16_get() (cpu_attn.c) found AMX-BF16 granted to the process (infllm_x86_amx_ready)
 * and AVX512_BF16.
 *
 * They take the same packed tiles as kern_dot16_avx512bf16.c (cpu_kern.h): those pair layouts are what TDPBF16PS
 * reads as its B operand. One 64-key tile's K, Kp16 [4 groups][D/2][16][2], is per group of 16 keys and per 32
 * dims a B tile of 16 rows (dim pairs) x 64 bytes (16 keys x 2 dims) at a 64-byte stride; V, Vp16 [32 pairs][D][2],
 * is per 32 keys and 16 dims a B tile of 16 rows (key pairs) x 64 bytes (16 dims x 2 keys) at a 4 D-byte stride.
 * The A operands are Q's bf16 rows (16 rows x 32 dims) and P's rows rounded to bf16 (16 rows x 32 keys); the C
 * tiles (16 rows x 16 f32 columns) are S, or O's columns. A row's result depends only on its own row (16-row tiles,
 * rows padded with zeros), so the bitwise rules of the callers (decode == prefill rows, chunked == one-shot) hold.
 *
 * Arithmetic: TDPBF16PS adds, per element and in order of the pairs, the exact f32 products of the two bf16 pairs
 * into the f32 accumulator with round-to-nearest-even, and flushes denormal inputs and results to zero (it does not
 * read MXCSR), as vdpbf16ps does, with the pair's two products added one after the other. P is rounded to bf16
 * (nearest even, vcvtne2ps2bf16) for P V, as the vdpbf16ps kernels, the GPU kernels and FlashAttention round it.
 *
 * Tile state: each call loads its tile configuration (LDTILECFG) and releases the tiles (TILERELEASE) before it
 * returns, so that other AMX users of the thread (oneDNN under PyTorch, say) and ours never see each other's shapes,
 * and a thread that is not in a kernel holds no tile state for the OS to save. */
#include <stdint.h>
#include <string.h>

#include "cpu_kern.h"

#ifdef INFLLM_AMX_EMULATE
/* tests/test_amx_host.c: this file on a CPU without AMX, the tile instructions and the two vector helpers below
 * emulated (tests/amx_emu.h) */
#include "amx_emu.h"
#else
#include <immintrin.h>

/* dst[0 .. n / 2) = p[0 .. n) as bf16 pairs (keys 2i, 2i + 1), nearest even (vcvtne2ps2bf16), n a multiple of 32 */
static inline void p_row_pairs(uint32_t *dst, const float *p, int n) {
    for (int i = 0; i < n; i += 32) {
        const __m512bh h = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(p + i + 16), _mm512_loadu_ps(p + i));
        _mm512_storeu_si512(dst + i / 2, (__m512i)h);
    }
}

/* dst[0 .. D) = src[0 .. D) * a (D a multiple of 16; dst may be src) */
static inline void scale_row(float *dst, const float *src, float a, int D) {
    const __m512 av = _mm512_set1_ps(a);
    for (int d = 0; d < D; d += 16) _mm512_storeu_ps(dst + d, _mm512_mul_ps(_mm512_loadu_ps(src + d), av));
}
#endif

/* tile numbers: 0-3 accumulators (C), 4 / 5 the A / B operands of a 32-wide step, 6 / 7 those of a 16-wide one
 * (macros: the intrinsics paste the number into the instruction's register name) */
#define TA 4
#define TB 5
#define TAH 6
#define TBH 7
enum { AMX_ROWS = 16, AMX_MAX_D = 256 };

typedef struct {
    uint8_t palette, start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_tilecfg;

/* half: tiles 6 / 7 as the A / B of a 16-wide step (16 rows x 16 bf16, 8 pairs); else as a second A / B of a 32-wide
 * step (two B tiles in turn, 2 x 2 blocks) */
static void tiles_begin(int half) {
    amx_tilecfg c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int t = 0; t < 4; t++) { /* C: 16 rows x 16 f32 */
        c.rows[t] = AMX_ROWS;
        c.colsb[t] = 64;
    }
    c.rows[TA] = AMX_ROWS; /* A: 16 rows x 32 bf16 */
    c.colsb[TA] = 64;
    c.rows[TB] = 16; /* B: 16 pairs x 16 columns of 2 bf16 */
    c.colsb[TB] = 64;
    c.rows[TAH] = AMX_ROWS; /* A of a 16-wide step: 16 rows x 16 bf16 */
    c.colsb[TAH] = half ? 32 : 64;
    c.rows[TBH] = half ? 8 : 16; /* B of a 16-wide step: 8 pairs */
    c.colsb[TBH] = 64;
    /* GCC 12's _tile_loadconfig tells the compiler it reads only the first 8 bytes of the config ("m" of a pointer),
     * so at -O2 it dropped the stores of the rows and column widths: a palette-1 config of empty tiles, and the first
     * tile instruction raised SIGILL (seen on a Sapphire Rapids VM, session 72). This asm reads all 64 bytes. */
    __asm__ volatile("" : : "m"(c) : "memory");
    _tile_loadconfig(&c);
}

/* ---------------------------------------------------------------- QK ---- */
/* the A operand of rows r0 .. r0 + 15 (rb of them real): Q itself where 16 consecutive rows are there, else the rows
 * gathered into qb ([16][D], zero past the last); *lda its row stride in bytes */
static inline const uint16_t *q_block(const uint16_t *Q, int64_t ldq, const int *rows, int r0, int rb, int D,
                                      uint16_t *qb, size_t *lda) {
    if (!rows && rb == AMX_ROWS) {
        *lda = (size_t)ldq * 2;
        return Q + (int64_t)r0 * ldq;
    }
    if (rb < AMX_ROWS) memset(qb, 0, (size_t)AMX_ROWS * AMX_MAX_D * 2); /* whole (see pv16_amx) */
    for (int r = 0; r < rb; r++)
        memcpy(qb + (size_t)r * D, Q + (int64_t)(rows ? rows[r0 + r] : r0 + r) * ldq, (size_t)D * 2);
    *lda = (size_t)D * 2;
    return qb;
}

/* C tiles 0 .. nc - 1 of a 16-row block into S's rows r0 .. r0 + rb - 1 at columns col0 + 16 i (via sb, [16][64],
 * when the block has fewer than 16 rows: only the block's rows and those columns are S's) */
static inline void s_store(float *S, int r0, int rb, int col0, int nc, int t0, float *sb) {
    float *Sd = rb == AMX_ROWS ? S + (size_t)r0 * CPU_KT + col0 : sb;
    if (nc > 0) {
        if (t0 == 0) _tile_stored(0, Sd, CPU_KT * 4);
        else _tile_stored(2, Sd, CPU_KT * 4);
    }
    if (nc > 1) {
        if (t0 == 0) _tile_stored(1, Sd + 16, CPU_KT * 4);
        else _tile_stored(3, Sd + 16, CPU_KT * 4);
    }
    if (t0 == 0 && nc > 2) _tile_stored(2, Sd + 32, CPU_KT * 4);
    if (t0 == 0 && nc > 3) _tile_stored(3, Sd + 48, CPU_KT * 4);
    if (rb < AMX_ROWS)
        for (int r = 0; r < rb; r++)
            memcpy(S + (size_t)(r0 + r) * CPU_KT + col0, sb + (size_t)r * CPU_KT, (size_t)nc * CPU_KG * sizeof(float));
}

/* one 32- (A_ in tile 4 / B in 5 and 7) or 16-wide step (6 / 7) of the groups' C tiles 0 .. ng - 1: A_ from a, each
 * group's B from kd + g gs into the tile B0 .. B3 names (tile numbers: the intrinsics take them as immediates) */
#define QK_STEP(A_, B0, B1, B2, B3)                                                                                  \
    do {                                                                                                             \
        _tile_loadd(A_, a, lda);                                                                                     \
        _tile_loadd(B0, kd, 64);                                                                                     \
        _tile_dpbf16ps(0, A_, B0);                                                                                   \
        if (ng > 1) {                                                                                                \
            _tile_loadd(B1, kd + gs, 64);                                                                            \
            _tile_dpbf16ps(1, A_, B1);                                                                               \
        }                                                                                                            \
        if (ng > 2) {                                                                                                \
            _tile_loadd(B2, kd + 2 * gs, 64);                                                                        \
            _tile_dpbf16ps(2, A_, B2);                                                                               \
        }                                                                                                            \
        if (ng > 3) {                                                                                                \
            _tile_loadd(B3, kd + 3 * gs, 64);                                                                        \
            _tile_dpbf16ps(3, A_, B3);                                                                               \
        }                                                                                                            \
    } while (0)

/* one 16-row block x ng groups (C tiles 0 .. ng - 1); alt: D a multiple of 32 and tile 7 configured as a second B */
static inline void qk_1x4(const uint16_t *A, size_t lda, int D, const uint16_t *Kp, int ng, int alt) {
    const int64_t gs = (int64_t)D * CPU_KG; /* elements of one packed group of 16 keys */
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    int d = 0;
    for (; d + 32 <= D; d += 32) {
        const uint16_t *kd = Kp + (size_t)d * CPU_KG, *a = A + d; /* dim pairs d / 2 .. d / 2 + 15 of group 0 */
        if (alt)
            QK_STEP(TA, TB, TBH, TB, TBH);
        else
            QK_STEP(TA, TB, TB, TB, TB);
    }
    if (d < D) { /* D = 16 (mod 32): the last 16 dims, 8 pairs (tiles 6 / 7 configured for it) */
        const uint16_t *kd = Kp + (size_t)d * CPU_KG, *a = A + d;
        QK_STEP(TAH, TBH, TBH, TBH, TBH);
    }
}

/* two 16-row blocks (A0, A1) x groups g, g + 1 (the second where two): C 0 / 1 the first block's, 2 / 3 the second's;
 * D a multiple of 32, tiles 6 / 7 configured as a second A / B */
static inline void qk_2x2(const uint16_t *A0, size_t lda0, const uint16_t *A1, size_t lda1, int D, const uint16_t *Kg,
                          int two) {
    const int64_t gs = (int64_t)D * CPU_KG;
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int d = 0; d < D; d += 32) {
        const uint16_t *kd = Kg + (size_t)d * CPU_KG;
        _tile_loadd(TA, A0 + d, lda0);
        _tile_loadd(TB, kd, 64);
        _tile_loadd(TAH, A1 + d, lda1);
        _tile_dpbf16ps(0, TA, TB);
        _tile_dpbf16ps(2, TAH, TB);
        if (two) {
            _tile_loadd(TBH, kd + gs, 64);
            _tile_dpbf16ps(1, TA, TBH);
            _tile_dpbf16ps(3, TAH, TBH);
        }
    }
}

/* S[r][n] = Q row r . key n for the ng groups of 16 keys of Kp (cpu_dot16.qk16) */
static void qk16_amx(const uint16_t *Q, int64_t ldq, const int *rows, int R, int D, const uint16_t *Kp, int ng,
                     float *S) {
    _Alignas(64) uint16_t qb[2][AMX_ROWS * AMX_MAX_D]; /* [16][D] gathered Q rows of a block, zero past the last */
    _Alignas(64) float sb[AMX_ROWS * CPU_KT];         /* [16][64] S of a block of fewer than 16 rows */
    const int full = D % 32 == 0; /* no 16-dim step: tiles 6 / 7 a second A / B */
    tiles_begin(!full);
    int r0 = 0;
    if (full)
        for (; r0 + AMX_ROWS < R; r0 += 2 * AMX_ROWS) { /* two blocks, the second with at least one row */
            const int rb0 = AMX_ROWS, rb1 = R - r0 - AMX_ROWS < AMX_ROWS ? R - r0 - AMX_ROWS : AMX_ROWS;
            size_t lda0, lda1;
            const uint16_t *A0 = q_block(Q, ldq, rows, r0, rb0, D, qb[0], &lda0);
            const uint16_t *A1 = q_block(Q, ldq, rows, r0 + AMX_ROWS, rb1, D, qb[1], &lda1);
            for (int g = 0; g < ng; g += 2) {
                const int two = g + 1 < ng;
                qk_2x2(A0, lda0, A1, lda1, D, Kp + (size_t)g * D * CPU_KG, two);
                s_store(S, r0, rb0, g * CPU_KG, 1 + two, 0, sb);
                s_store(S, r0 + AMX_ROWS, rb1, g * CPU_KG, 1 + two, 2, sb);
            }
        }
    for (; r0 < R; r0 += AMX_ROWS) {
        const int rb = R - r0 < AMX_ROWS ? R - r0 : AMX_ROWS;
        size_t lda;
        const uint16_t *A = q_block(Q, ldq, rows, r0, rb, D, qb[0], &lda);
        qk_1x4(A, lda, D, Kp, ng, full);
        s_store(S, r0, rb, 0, ng, 0, sb);
    }
    _tile_release();
}

/* ---------------------------------------------------------------- PV ---- */
/* one 32- or 16-key step s of pv_cols: A_ from pb's columns 32 s .., the C tiles' B from vs + 32 c into B0 .. B3 */
#define PV_STEP(A_, B0, B1, B2, B3)                                                                                  \
    do {                                                                                                             \
        _tile_loadd(A_, pb + 16 * s, CPU_KT * 2);                                                                    \
        _tile_loadd(B0, vs, ldv);                                                                                    \
        _tile_dpbf16ps(0, A_, B0);                                                                                   \
        if (nct > 1) {                                                                                               \
            _tile_loadd(B1, vs + 32, ldv);                                                                           \
            _tile_dpbf16ps(1, A_, B1);                                                                               \
        }                                                                                                            \
        if (nct > 2) {                                                                                               \
            _tile_loadd(B2, vs + 64, ldv);                                                                           \
            _tile_dpbf16ps(2, A_, B2);                                                                               \
        }                                                                                                            \
        if (nct > 3) {                                                                                               \
            _tile_loadd(B3, vs + 96, ldv);                                                                           \
            _tile_dpbf16ps(3, A_, B3);                                                                               \
        }                                                                                                            \
    } while (0)

/* the 16 C tiles' columns d0 .. d0 + 16 nct - 1 of O (ldo bytes a row) += P V over the tile's keys: full steps of 32
 * keys (pb's columns 32 s ..), then a 16-key step when half */
static inline void pv_cols(float *Ob, size_t ldo, int nct, const uint32_t *pb, const uint16_t *V, int D, int d0,
                           int full, int half, int alt) {
    const size_t ldv = (size_t)D * 4; /* bytes from one key pair to the next in Vp16 */
    if (nct > 0) _tile_loadd(0, Ob + d0, ldo);
    if (nct > 1) _tile_loadd(1, Ob + d0 + 16, ldo);
    if (nct > 2) _tile_loadd(2, Ob + d0 + 32, ldo);
    if (nct > 3) _tile_loadd(3, Ob + d0 + 48, ldo);
    for (int s = 0; s <= full; s++) {
        if (s == full && !half) break;
        const uint16_t *vs = V + (size_t)s * 32 * D + 2 * (size_t)d0; /* key pair 16 s, dim d0 */
        if (s < full && alt) /* B in tiles 5 and 7 in turn (no 16-key step: tile 7 is a second B) */
            PV_STEP(TA, TB, TBH, TB, TBH);
        else if (s < full)
            PV_STEP(TA, TB, TB, TB, TB);
        else
            PV_STEP(TAH, TBH, TBH, TBH, TBH);
    }
    if (nct > 0) _tile_stored(0, Ob + d0, ldo);
    if (nct > 1) _tile_stored(1, Ob + d0 + 16, ldo);
    if (nct > 2) _tile_stored(2, Ob + d0 + 32, ldo);
    if (nct > 3) _tile_stored(3, Ob + d0 + 48, ldo);
}

/* O[row r] = O[row r] * alpha[r] + P[r] V over the first nk keys (a multiple of 16) (cpu_dot16.pv16) */
static void pv16_amx(float *O, const int *rows, int R, int D, const float *alpha, const float *P, const uint16_t *V,
                     int nk) {
    _Alignas(64) uint32_t pb[AMX_ROWS * (CPU_KT / 2)]; /* [16][32] P's rows as bf16 pairs */
    _Alignas(64) float ob[AMX_ROWS * AMX_MAX_D];       /* [16][D] listed rows of O */
    const int full = nk / 32, half = (nk & 16) != 0, ncols = (nk + 31) & ~31; /* P columns converted */
    const size_t ldo = (size_t)D * sizeof(float);
    const int alt = !half; /* no 16-key step: B in tiles 5 and 7 in turn */
    tiles_begin(half);
    for (int r0 = 0; r0 < R; r0 += AMX_ROWS) {
        const int rb = R - r0 < AMX_ROWS ? R - r0 : AMX_ROWS;
        /* a partial block's rows past its last are zero: whole buffers cleared first (a bound the compiler sees:
         * gcc's -Warray-bounds under the sanitizers took the tail's offset for possibly negative) */
        if (rb < AMX_ROWS) {
            memset(pb, 0, sizeof pb);
            memset(ob, 0, sizeof ob);
        }
        for (int r = 0; r < rb; r++) /* nearest even, as p_pairs in the vdpbf16ps kernels */
            p_row_pairs(pb + (size_t)r * (CPU_KT / 2), P + (size_t)(r0 + r) * CPU_KT, ncols);
        float *Ob = ob;
        const int direct = !rows && rb == AMX_ROWS; /* 16 consecutive rows: O itself is the C tiles' memory */
        if (direct) Ob = O + (size_t)r0 * D;
        for (int r = 0; r < rb; r++)
            scale_row(Ob + (size_t)r * D, O + (size_t)(rows ? rows[r0 + r] : r0 + r) * D, alpha[r0 + r], D);
        for (int d0 = 0; d0 < D; d0 += 64) {
            const int nct = D - d0 >= 64 ? 4 : (D - d0) / 16;
            pv_cols(Ob, ldo, nct, pb, V, D, d0, full, half, alt);
        }
        if (!direct)
            for (int r = 0; r < rb; r++)
                memcpy(O + (size_t)(rows ? rows[r0 + r] : r0 + r) * D, ob + (size_t)r * D, (size_t)D * sizeof(float));
    }
    _tile_release();
}

const cpu_dot16 cpu_dot16_amx = {"amx-bf16 dot", qk16_amx, pv16_amx};
