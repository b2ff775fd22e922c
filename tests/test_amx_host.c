/*
 * test_amx_host.c: the AMX attention kernels (src/attn/kern_dot16_amx.c, cpu_dot16_amx) run from their own source
 * on any CPU, the tile instructions emulated by tests/amx_emu.h (which also checks every tile operation's shapes
 * against the loaded configuration), against float64 products on the same packed tiles (the pair layouts of
 * cpu_kern.h): S = Q K^T for 1-4 groups of 16 keys and P V for 16-64 keys, head_dim 16-256 (the 16-dim and 16-key
 * half steps included), 1-48 rows (partial 16-row blocks), rows listed or consecutive. Also: a row's result is
 * bitwise the same alone and in any block (the callers' decode == prefill rule), S columns past the groups and O
 * rows not listed are left as they were, keys past nk and groups past ng are never read (NaN there), and each call
 * releases the tiles. The real instructions run on AMX machines in test_diff / test_cache / test_backward /
 * test_golden under INFLLM_BF16_DOT=amx (tests/CMakeLists.txt).
 */
#define INFLLM_AMX_EMULATE 1
#define cpu_dot16_amx cpu_dot16_amx_emulated /* not the library's symbol */
#include "../src/attn/cpu_kern.h"
extern const cpu_dot16 cpu_dot16_amx_emulated;
#include "../src/attn/kern_dot16_amx.c"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int failures, checks;
#define CHECK(cond, ...)                                                                                             \
    do {                                                                                                             \
        checks++;                                                                                                    \
        if (!(cond)) {                                                                                               \
            failures++;                                                                                              \
            if (failures <= 20) {                                                                                    \
                printf("FAIL %s:%d: ", __FILE__, __LINE__);                                                          \
                printf(__VA_ARGS__);                                                                                 \
                printf("\n");                                                                                        \
            }                                                                                                        \
        }                                                                                                            \
    } while (0)

static uint64_t rng = 88172645463325252ull;
static double urand(void) { /* [0, 1) */
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}
static uint16_t rbf16(void) { return infllm_f32_to_bf16((float)(urand() * 2.0 - 1.0)); }

/* the pair layouts of one 64-key tile (cpu_kern.h) */
static size_t kidx(int D, int key, int d) { return (size_t)(key / 16) * 16 * D + (size_t)(d / 2) * 32 + 2 * (key % 16) + (d & 1); }
static size_t vidx(int D, int key, int d) { return (size_t)(key / 2) * 2 * D + 2 * (size_t)d + (key & 1); }

enum { MAXR = 48, ROWS_ALL = 64 }; /* Q / O arrays of 64 rows, the listed rows a permutation of some of them */

static void qk_case(int D, int R, int ng, int listed) {
    uint16_t *Q = malloc(sizeof(uint16_t) * ROWS_ALL * D), *Kp = malloc(sizeof(uint16_t) * CPU_KT * D);
    float S[MAXR * CPU_KT], S1[CPU_KT];
    int rows[MAXR];
    for (int i = 0; i < ROWS_ALL * D; i++) Q[i] = rbf16();
    for (int key = 0; key < CPU_KT; key++)
        for (int d = 0; d < D; d++) Kp[kidx(D, key, d)] = key < 16 * ng ? rbf16() : 0x7fc0; /* NaN past ng groups */
    for (int r = 0; r < R; r++) rows[r] = listed ? (r * 37 + 11) % ROWS_ALL : r;
    for (int i = 0; i < MAXR * CPU_KT; i++) S[i] = -12345.0f;
    const long ops0 = amx_emu.ops;
    cpu_dot16_amx.qk16(Q, D, listed ? rows : NULL, R, D, Kp, ng, S);
    CHECK(amx_emu.ops > ops0 && !amx_emu.configured, "qk D %d R %d ng %d: tiles not used or not released", D, R, ng);
    double worst = 0;
    int untouched = 1, indep = 1;
    for (int r = 0; r < R; r++) {
        const uint16_t *q = Q + (size_t)rows[r] * D;
        for (int n = 0; n < CPU_KT; n++) {
            if (n >= 16 * ng) {
                untouched &= S[r * CPU_KT + n] == -12345.0f;
                continue;
            }
            double ref = 0, mag = 0;
            for (int d = 0; d < D; d++) {
                const double x = (double)infllm_bf16_to_f32(q[d]) * infllm_bf16_to_f32(Kp[kidx(D, n, d)]);
                ref += x;
                mag += fabs(x);
            }
            const double err = fabs(S[r * CPU_KT + n] - ref) / (2.0 * D * 0x1p-24 * mag + 1e-30);
            if (err > worst) worst = err;
        }
        /* the row alone (a block of one, listed): bitwise the same */
        for (int n = 0; n < CPU_KT; n++) S1[n] = -1.0f;
        cpu_dot16_amx.qk16(Q, D, &rows[r], 1, D, Kp, ng, S1);
        for (int n = 0; n < 16 * ng; n++) indep &= memcmp(&S1[n], &S[r * CPU_KT + n], 4) == 0;
    }
    CHECK(worst <= 1.0, "qk D %d R %d ng %d listed %d: error %.3g of the f32 accumulation bound", D, R, ng, listed, worst);
    CHECK(untouched, "qk D %d R %d ng %d: S columns past the groups written", D, R, ng);
    CHECK(indep, "qk D %d R %d ng %d listed %d: a row alone differs from the row in its block", D, R, ng, listed);
    free(Q);
    free(Kp);
}

static void pv_case(int D, int R, int nk, int listed) {
    float *O = malloc(sizeof(float) * ROWS_ALL * D), *O0 = malloc(sizeof(float) * ROWS_ALL * D);
    float *O1 = malloc(sizeof(float) * ROWS_ALL * D);
    uint16_t *Vp = malloc(sizeof(uint16_t) * CPU_KT * D);
    float P[MAXR * CPU_KT], alpha[MAXR];
    int rows[MAXR], listed_row[ROWS_ALL] = {0};
    for (int i = 0; i < ROWS_ALL * D; i++) O0[i] = (float)(urand() * 4.0 - 2.0);
    for (int key = 0; key < CPU_KT; key++)
        for (int d = 0; d < D; d++) Vp[vidx(D, key, d)] = key < nk ? rbf16() : 0x7fc0; /* NaN past nk */
    for (int r = 0; r < R; r++) {
        rows[r] = listed ? (r * 37 + 11) % ROWS_ALL : r;
        listed_row[rows[r]] = 1;
        alpha[r] = r % 7 == 3 ? 0.0f : r % 7 == 5 ? 1.0f : (float)urand();
        for (int n = 0; n < CPU_KT; n++) P[r * CPU_KT + n] = n < nk && (n + r) % 5 ? (float)urand() : 0.0f;
    }
    memcpy(O, O0, sizeof(float) * ROWS_ALL * D);
    const long ops0 = amx_emu.ops;
    cpu_dot16_amx.pv16(O, listed ? rows : NULL, R, D, alpha, P, Vp, nk);
    CHECK(amx_emu.ops > ops0 && !amx_emu.configured, "pv D %d R %d nk %d: tiles not used or not released", D, R, nk);
    double worst = 0;
    int untouched = 1, indep = 1, finite = 1;
    for (int i = 0; i < ROWS_ALL; i++)
        if (!listed_row[i]) untouched &= memcmp(O + (size_t)i * D, O0 + (size_t)i * D, sizeof(float) * D) == 0;
    for (int r = 0; r < R; r++) {
        const float *o = O + (size_t)rows[r] * D, *o0 = O0 + (size_t)rows[r] * D;
        for (int d = 0; d < D; d++) {
            const double base = (double)(o0[d] * alpha[r]); /* the kernel's rounded product */
            double ref = base, mag = fabs(base);
            for (int n = 0; n < nk; n++) {
                const double x = (double)infllm_bf16_to_f32(infllm_f32_to_bf16(P[r * CPU_KT + n])) *
                                 infllm_bf16_to_f32(Vp[vidx(D, n, d)]);
                ref += x;
                mag += fabs(x);
            }
            finite &= isfinite(o[d]);
            const double err = fabs(o[d] - ref) / (2.0 * (nk + 1) * 0x1p-24 * mag + 1e-30);
            if (err > worst) worst = err;
        }
        /* the row alone: bitwise the same */
        memcpy(O1, O0, sizeof(float) * ROWS_ALL * D);
        cpu_dot16_amx.pv16(O1, &rows[r], 1, D, &alpha[r], P + (size_t)r * CPU_KT, Vp, nk);
        indep &= memcmp(O1 + (size_t)rows[r] * D, o, sizeof(float) * D) == 0;
    }
    CHECK(finite, "pv D %d R %d nk %d: a non-finite output (a key past nk was read)", D, R, nk);
    CHECK(worst <= 1.0, "pv D %d R %d nk %d listed %d: error %.3g of the f32 accumulation bound", D, R, nk, listed, worst);
    CHECK(untouched, "pv D %d R %d nk %d: rows not listed changed", D, R, nk);
    CHECK(indep, "pv D %d R %d nk %d listed %d: a row alone differs from the row in its block", D, R, nk, listed);
    free(O);
    free(O0);
    free(O1);
    free(Vp);
}

int main(void) {
    static const int Ds[] = {16, 48, 64, 80, 128, 256}, Rs[] = {1, 5, 16, 17, 33, 48};
    for (size_t i = 0; i < sizeof Ds / sizeof *Ds; i++)
        for (size_t j = 0; j < sizeof Rs / sizeof *Rs; j++)
            for (int listed = 0; listed < 2; listed++) {
                for (int ng = 1; ng <= 4; ng++) qk_case(Ds[i], Rs[j], ng, listed);
                for (int nk = 16; nk <= 64; nk += 16) pv_case(Ds[i], Rs[j], nk, listed);
            }
    printf("test_amx_host: %d checks, %d failed (tile products emulated: %ld)\n", checks, failures, amx_emu.ops);
    return failures ? 1 : 0;
}
