/*
 * amx_proto.c: a prototype of dense causal attention on Intel AMX-BF16 tiles (Sapphire / Emerald / Granite Rapids),
 * timed against the library's CPU path (AVX-512, f32 FMA on widened bf16) on the same inputs in the same run, with
 * both outputs' error against the library's f32 result. Not part of the build (session 64's measurement of whether
 * AMX is worth a kernel path; bench/CPU_NOTES.md "AMX"):
 *
 *   gcc -O2 -march=native -fopenmp -Iinclude -Isrc/core bench/amx_proto.c -Lbuild -linfllm -Wl,-rpath,$PWD/build \
 *       -lm -o /tmp/amx_proto && /tmp/amx_proto [T] [threads]
 *
 * Shape: one sequence of T tokens, 16 query heads on 1 KV head (MiniCPM4's group), head_dim 128, bf16.
 * The AMX loop, per token (16 rows = its 16 heads) and 64-key tile: S (16 x 64) = Q K^T as 4 x 4 TDPBF16PS
 * (C tiles 0-3, Q chunk in tile 4, the K chunk in VNNI order in tile 5), S stored, the online softmax in AVX-512
 * (exp2 by a degree-6 polynomial and vscalefps), P rounded to bf16 (as the naive bf16 implementation and
 * FlashAttention round P for the P V product), O (16 x 128 f32, in memory) rescaled, then O += P V as two halves
 * of 4 C tiles x 2 key chunks x 4 TDPBF16PS. K and V are packed once into VNNI pairs (the library's widening
 * would be this packing). amx_attention_t is the transposed form (S^T = K Q^T, a vertical softmax, O^T = V^T P^T),
 * timed in the same run: no faster (bench/CPU_NOTES.md).
 */
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "dtype.h"
#include "infllm.h"

enum { H = 16, D = 128, KT = 64 };

typedef struct {
    uint8_t palette, start;
    uint8_t res[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tilecfg;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void tiles_on(void) {
    tilecfg c;
    memset(&c, 0, sizeof c);
    c.palette = 1;
    for (int i = 0; i < 6; i++) {
        c.rows[i] = 16;
        c.colsb[i] = 64;
    }
    __asm__ volatile("" : : "m"(c) : "memory"); /* GCC 12's _tile_loadconfig reads 8 bytes as far as it knows */
    _tile_loadconfig(&c);
}

/* 2^x for x <= 0 (x = -inf gives 0): degree-6 polynomial on the fraction, vscalefps for the exponent */
static inline __m512 exp2_ps(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-127.0f));
    const __m512 fl = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    const __m512 f = _mm512_sub_ps(x, fl);
    __m512 p = _mm512_set1_ps(1.5353362e-4f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.3398874e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.6184294e-3f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.5503546e-2f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022652e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.9314718e-1f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, fl);
}

/* f32 -> bf16 bits, nearest even (no NaN here) */
static inline __m256i to_bf16(__m512 x) {
    __m512i u = _mm512_castps_si512(x);
    __m512i r = _mm512_add_epi32(_mm512_set1_epi32(0x7fff), _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1)));
    return _mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_add_epi32(u, r), 16));
}

/* q [T, H, D], k / v [T, D] bf16 bits; out [T, H, D] bf16 bits */
static void amx_attention(const uint16_t *q, const uint16_t *k, const uint16_t *v, uint16_t *out, int T, int nth) {
    const int ntile = (T + KT - 1) / KT;
    /* VNNI packs: kp[tile][key col tile 4][d chunk 4][16][32]: B[kk][2n + j] = K[16 ct + n][32 dc + 2 kk + j];
     * vp[tile][key chunk 2][d col tile 8][16][32]: B[kk][2n + j] = V[32 kc + 2 kk + j][16 dt + n]; keys past T: 0 */
    uint16_t *kp = aligned_alloc(64, (size_t)ntile * KT * D * 2), *vp = aligned_alloc(64, (size_t)ntile * KT * D * 2);
#pragma omp parallel for num_threads(nth)
    for (int t = 0; t < ntile; t++) {
        uint16_t *kt = kp + (size_t)t * KT * D, *vt = vp + (size_t)t * KT * D;
        for (int ct = 0; ct < 4; ct++)
            for (int dc = 0; dc < 4; dc++)
                for (int kk = 0; kk < 16; kk++)
                    for (int n = 0; n < 16; n++)
                        for (int j = 0; j < 2; j++) {
                            const int key = t * KT + 16 * ct + n;
                            kt[((ct * 4 + dc) * 16 + kk) * 32 + 2 * n + j] = key < T ? k[(size_t)key * D + 32 * dc + 2 * kk + j] : 0;
                        }
        for (int kc = 0; kc < 2; kc++)
            for (int dt = 0; dt < 8; dt++)
                for (int kk = 0; kk < 16; kk++)
                    for (int n = 0; n < 16; n++)
                        for (int j = 0; j < 2; j++) {
                            const int key = t * KT + 32 * kc + 2 * kk + j;
                            vt[((kc * 8 + dt) * 16 + kk) * 32 + 2 * n + j] = key < T ? v[(size_t)key * D + 16 * dt + n] : 0;
                        }
    }
    const float sl2 = (1.0f / sqrtf((float)D)) * 1.4426950408889634f;
#pragma omp parallel num_threads(nth)
    {
        tiles_on();
        float *S = aligned_alloc(64, H * KT * 4), *O = aligned_alloc(64, H * D * 4);
        uint16_t *P = aligned_alloc(64, H * KT * 2);
        float m[H], l[H], alpha[H];
#pragma omp for schedule(dynamic, 8)
        for (int tok = T - 1; tok >= 0; tok--) { /* the longest rows first */
            const uint16_t *qt = q + (size_t)tok * H * D;
            for (int r = 0; r < H; r++) {
                m[r] = -INFINITY;
                l[r] = 0.0f;
            }
            memset(O, 0, H * D * 4);
            const int last = tok / KT;
            for (int t = 0; t <= last; t++) {
                const uint16_t *kt = kp + (size_t)t * KT * D, *vt = vp + (size_t)t * KT * D;
                _tile_zero(0);
                _tile_zero(1);
                _tile_zero(2);
                _tile_zero(3);
                for (int dc = 0; dc < 4; dc++) {
                    _tile_loadd(4, qt + 32 * dc, D * 2);
                    _tile_loadd(5, kt + ((0 * 4 + dc) * 16) * 32, 64);
                    _tile_dpbf16ps(0, 4, 5);
                    _tile_loadd(5, kt + ((1 * 4 + dc) * 16) * 32, 64);
                    _tile_dpbf16ps(1, 4, 5);
                    _tile_loadd(5, kt + ((2 * 4 + dc) * 16) * 32, 64);
                    _tile_dpbf16ps(2, 4, 5);
                    _tile_loadd(5, kt + ((3 * 4 + dc) * 16) * 32, 64);
                    _tile_dpbf16ps(3, 4, 5);
                }
                _tile_stored(0, S, KT * 4);
                _tile_stored(1, S + 16, KT * 4);
                _tile_stored(2, S + 32, KT * 4);
                _tile_stored(3, S + 48, KT * 4);
                /* the online softmax of the 16 rows over this tile's visible keys */
                const int nvis = t < last ? KT : tok - t * KT + 1;
                int rescale = 0;
                for (int r = 0; r < H; r++) {
                    __m512 s[4], mx = _mm512_set1_ps(-INFINITY);
                    __mmask16 vis[4];
                    for (int c = 0; c < 4; c++) {
                        vis[c] = nvis >= 16 * (c + 1) ? 0xffff : nvis <= 16 * c ? 0 : (__mmask16)((1u << (nvis - 16 * c)) - 1);
                        s[c] = _mm512_mask_mul_ps(_mm512_set1_ps(-INFINITY), vis[c], _mm512_load_ps(S + r * KT + 16 * c), _mm512_set1_ps(sl2));
                        mx = _mm512_max_ps(mx, s[c]);
                    }
                    const float mn = fmaxf(m[r], _mm512_reduce_max_ps(mx));
                    alpha[r] = m[r] == mn ? 1.0f : exp2f(m[r] - mn);
                    rescale |= alpha[r] != 1.0f;
                    m[r] = mn;
                    __m512 sum = _mm512_setzero_ps();
                    for (int c = 0; c < 4; c++) {
                        const __m512 p = _mm512_maskz_mov_ps(vis[c], exp2_ps(_mm512_sub_ps(s[c], _mm512_set1_ps(mn))));
                        sum = _mm512_add_ps(sum, p);
                        _mm256_store_si256((__m256i *)(P + r * KT + 16 * c), to_bf16(p));
                    }
                    l[r] = l[r] * alpha[r] + _mm512_reduce_add_ps(sum);
                }
                if (rescale)
                    for (int r = 0; r < H; r++)
                        if (alpha[r] != 1.0f)
                            for (int d = 0; d < D; d += 16)
                                _mm512_store_ps(O + r * D + d, _mm512_mul_ps(_mm512_load_ps(O + r * D + d), _mm512_set1_ps(alpha[r])));
                for (int half = 0; half < 2; half++) {
                    float *Oh = O + 64 * half;
                    _tile_loadd(0, Oh, D * 4);
                    _tile_loadd(1, Oh + 16, D * 4);
                    _tile_loadd(2, Oh + 32, D * 4);
                    _tile_loadd(3, Oh + 48, D * 4);
                    for (int kc = 0; kc < 2; kc++) {
                        _tile_loadd(4, P + 32 * kc, KT * 2);
                        const uint16_t *vb = vt + ((kc * 8 + 4 * half) * 16) * 32;
                        _tile_loadd(5, vb, 64);
                        _tile_dpbf16ps(0, 4, 5);
                        _tile_loadd(5, vb + 16 * 32, 64);
                        _tile_dpbf16ps(1, 4, 5);
                        _tile_loadd(5, vb + 32 * 32, 64);
                        _tile_dpbf16ps(2, 4, 5);
                        _tile_loadd(5, vb + 48 * 32, 64);
                        _tile_dpbf16ps(3, 4, 5);
                    }
                    _tile_stored(0, Oh, D * 4);
                    _tile_stored(1, Oh + 16, D * 4);
                    _tile_stored(2, Oh + 32, D * 4);
                    _tile_stored(3, Oh + 48, D * 4);
                }
            }
            uint16_t *ot = out + (size_t)tok * H * D;
            for (int r = 0; r < H; r++)
                for (int d = 0; d < D; d += 16)
                    _mm256_storeu_si256((__m256i *)(ot + r * D + d), to_bf16(_mm512_mul_ps(_mm512_load_ps(O + r * D + d), _mm512_set1_ps(1.0f / l[r]))));
        }
        free(S), free(O), free(P);
        _tile_release();
    }
    free(kp), free(vp);
}

/* The same attention transposed (session 64, second form): S^T = K Q^T with K read as it is (A operand, 16 keys x 32
 * dims straight from the input rows) and the token's Q packed once in VNNI pairs (B), so a vector of S^T holds one
 * key's 16 rows and the online softmax is vertical (no horizontal reductions); O^T = V^T P^T with V^T packed once a
 * tile and P^T's VNNI pairs made by interleaving two keys' bf16 vectors. k is read in whole 64-row tiles: kpad holds
 * T rounded up to 64 rows, zeros past T. */
static void amx_attention_t(const uint16_t *q, const uint16_t *kpad, const uint16_t *v, uint16_t *out, int T, int nth) {
    const int ntile = (T + KT - 1) / KT;
    /* vt[tile][key chunk 2][d tile 8][16 d][32 keys]: A[d][key] = V[32 kc + key][16 dt + d]; keys past T: 0 */
    uint16_t *vt = aligned_alloc(64, (size_t)ntile * KT * D * 2);
#pragma omp parallel for num_threads(nth)
    for (int t = 0; t < ntile; t++)
        for (int kc = 0; kc < 2; kc++)
            for (int dt = 0; dt < 8; dt++)
                for (int d = 0; d < 16; d++)
                    for (int kk = 0; kk < 32; kk++) {
                        const int key = t * KT + 32 * kc + kk;
                        vt[((((size_t)t * 2 + kc) * 8 + dt) * 16 + d) * 32 + kk] = key < T ? v[(size_t)key * D + 16 * dt + d] : 0;
                    }
    const __m512 sl2 = _mm512_set1_ps((1.0f / sqrtf((float)D)) * 1.4426950408889634f);
#pragma omp parallel num_threads(nth)
    {
        tiles_on();
        float *St = aligned_alloc(64, KT * H * 4), *Ot = aligned_alloc(64, D * H * 4);
        uint16_t *Qv = aligned_alloc(64, 4 * 16 * 32 * 2), *PT = aligned_alloc(64, 2 * 16 * 32 * 2);
#pragma omp for schedule(dynamic, 8)
        for (int tok = T - 1; tok >= 0; tok--) {
            const uint16_t *qt = q + (size_t)tok * H * D;
            for (int dc = 0; dc < 4; dc++) /* Qv[dc][kk][2 n + j] = Q[row n][32 dc + 2 kk + j] */
                for (int kk = 0; kk < 16; kk++)
                    for (int n = 0; n < 16; n++) {
                        Qv[(dc * 16 + kk) * 32 + 2 * n] = qt[n * D + 32 * dc + 2 * kk];
                        Qv[(dc * 16 + kk) * 32 + 2 * n + 1] = qt[n * D + 32 * dc + 2 * kk + 1];
                    }
            __m512 m = _mm512_set1_ps(-INFINITY), l = _mm512_setzero_ps();
            memset(Ot, 0, D * H * 4);
            const int last = tok / KT;
            for (int t = 0; t <= last; t++) {
                const uint16_t *kt = kpad + (size_t)t * KT * D;
                _tile_zero(0);
                _tile_zero(1);
                _tile_zero(2);
                _tile_zero(3);
                for (int dc = 0; dc < 4; dc++) {
                    _tile_loadd(5, Qv + dc * 16 * 32, 64);
                    _tile_loadd(4, kt + 0 * 16 * D + 32 * dc, D * 2);
                    _tile_dpbf16ps(0, 4, 5);
                    _tile_loadd(4, kt + 1 * 16 * D + 32 * dc, D * 2);
                    _tile_dpbf16ps(1, 4, 5);
                    _tile_loadd(4, kt + 2 * 16 * D + 32 * dc, D * 2);
                    _tile_dpbf16ps(2, 4, 5);
                    _tile_loadd(4, kt + 3 * 16 * D + 32 * dc, D * 2);
                    _tile_dpbf16ps(3, 4, 5);
                }
                _tile_stored(0, St, 64);
                _tile_stored(1, St + 16 * 16, 64);
                _tile_stored(2, St + 32 * 16, 64);
                _tile_stored(3, St + 48 * 16, 64);
                const int nvis = t < last ? KT : tok - t * KT + 1;
                __m512 mx = m;
                for (int n = 0; n < nvis; n++) mx = _mm512_max_ps(mx, _mm512_mul_ps(_mm512_load_ps(St + n * 16), sl2));
                const __m512 alpha = exp2_ps(_mm512_sub_ps(m, mx)); /* m = -inf on the first tile: O and l are 0 */
                m = mx;
                __m512 sum = _mm512_setzero_ps();
                for (int n = 0; n < KT; n += 2) {
                    __m512 p0 = _mm512_setzero_ps(), p1 = _mm512_setzero_ps();
                    if (n < nvis) p0 = exp2_ps(_mm512_fmsub_ps(_mm512_load_ps(St + n * 16), sl2, m));
                    if (n + 1 < nvis) p1 = exp2_ps(_mm512_fmsub_ps(_mm512_load_ps(St + (n + 1) * 16), sl2, m));
                    sum = _mm512_add_ps(sum, _mm512_add_ps(p0, p1));
                    const __m512i pair = _mm512_or_si512(_mm512_cvtepu16_epi32(to_bf16(p0)),
                                                         _mm512_slli_epi32(_mm512_cvtepu16_epi32(to_bf16(p1)), 16));
                    _mm512_store_si512((__m512i *)(PT + (n / 32) * 16 * 32 + ((n % 32) / 2) * 32), pair);
                }
                l = _mm512_fmadd_ps(l, alpha, sum);
                if (_mm512_cmp_ps_mask(alpha, _mm512_set1_ps(1.0f), _CMP_NEQ_UQ))
                    for (int d = 0; d < D; d++) _mm512_store_ps(Ot + d * 16, _mm512_mul_ps(_mm512_load_ps(Ot + d * 16), alpha));
                const uint16_t *vtt = vt + (size_t)t * KT * D;
                for (int half = 0; half < 2; half++) {
                    float *Oh = Ot + half * 64 * 16;
                    _tile_loadd(0, Oh, 64);
                    _tile_loadd(1, Oh + 16 * 16, 64);
                    _tile_loadd(2, Oh + 32 * 16, 64);
                    _tile_loadd(3, Oh + 48 * 16, 64);
                    for (int kc = 0; kc < 2; kc++) {
                        _tile_loadd(5, PT + kc * 16 * 32, 64);
                        const uint16_t *a = vtt + ((size_t)(kc * 8 + 4 * half) * 16) * 32;
                        _tile_loadd(4, a, 64);
                        _tile_dpbf16ps(0, 4, 5);
                        _tile_loadd(4, a + 16 * 32, 64);
                        _tile_dpbf16ps(1, 4, 5);
                        _tile_loadd(4, a + 32 * 32, 64);
                        _tile_dpbf16ps(2, 4, 5);
                        _tile_loadd(4, a + 48 * 32, 64);
                        _tile_dpbf16ps(3, 4, 5);
                    }
                    _tile_stored(0, Oh, 64);
                    _tile_stored(1, Oh + 16 * 16, 64);
                    _tile_stored(2, Oh + 32 * 16, 64);
                    _tile_stored(3, Oh + 48 * 16, 64);
                }
            }
            float linv[16];
            _mm512_storeu_ps(linv, _mm512_div_ps(_mm512_set1_ps(1.0f), l));
            uint16_t *ot = out + (size_t)tok * H * D;
            for (int r = 0; r < H; r++)
                for (int d = 0; d < D; d++) ot[r * D + d] = infllm_f32_to_bf16(Ot[d * 16 + r] * linv[r]);
        }
        free(St), free(Ot), free(Qv), free(PT);
        _tile_release();
    }
    free(vt);
}

static double rel_err(const uint16_t *a, const float *ref, size_t n) {
    double e = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        const double d = infllm_bf16_to_f32(a[i]) - ref[i];
        e += d * d;
        r += (double)ref[i] * ref[i];
    }
    return sqrt(e / r);
}

int main(int argc, char **argv) {
    const int T = argc > 1 ? atoi(argv[1]) : 8192, nth = argc > 2 ? atoi(argv[2]) : 2;
    if (syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */)) {
        printf("amx_proto: no AMX tile data permission on this machine\n");
        return 2;
    }
    const size_t nq = (size_t)T * H * D, nk = (size_t)T * D;
    uint16_t *q = malloc(nq * 2), *k = malloc(nk * 2), *v = malloc(nk * 2), *o_amx = malloc(nq * 2), *o_cpu = malloc(nq * 2);
    float *q32 = malloc(nq * 4), *k32 = malloc(nk * 4), *v32 = malloc(nk * 4), *o32 = malloc(nq * 4);
    unsigned long long s = 1;
    for (size_t i = 0; i < nq + 2 * nk; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        const float x = (float)((double)(s >> 11) / 9007199254740992.0 * 2.0 - 1.0);
        uint16_t *dst = i < nq ? q + i : i < nq + nk ? k + (i - nq) : v + (i - nq - nk);
        float *d32 = i < nq ? q32 + i : i < nq + nk ? k32 + (i - nq) : v32 + (i - nq - nk);
        *dst = infllm_f32_to_bf16(x);
        *d32 = infllm_bf16_to_f32(*dst);
    }
    infllm_params p;
    infllm_params_default(&p);
    p.backend = INFLLM_BACKEND_CPU;
    p.num_threads = nth;
    infllm_layout l;
    memset(&l, 0, sizeof l);
    l.dtype = INFLLM_DTYPE_BF16;
    l.num_seqs = 1;
    l.total_q = l.total_k = T;
    l.max_seqlen_q = l.max_seqlen_k = T;
    l.num_q_heads = H;
    l.num_kv_heads = 1;
    l.head_dim = D;
    infllm_layout l32 = l;
    l32.dtype = INFLLM_DTYPE_F32;
    if (infllm_dense_attention(&p, &l32, q32, k32, v32, o32, NULL)) {
        printf("f32 reference: %s\n", infllm_last_error());
        return 1;
    }
    const size_t kpad_rows = (size_t)(T + KT - 1) / KT * KT;
    uint16_t *kpad = calloc(kpad_rows * D, 2), *o_t = malloc(nq * 2);
    memcpy(kpad, k, nk * 2);
    double best_cpu = 1e30, best_amx = 1e30, best_t = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = now();
        if (infllm_dense_attention(&p, &l, q, k, v, o_cpu, NULL)) {
            printf("cpu: %s\n", infllm_last_error());
            return 1;
        }
        double t1 = now();
        amx_attention(q, k, v, o_amx, T, nth);
        double t2 = now();
        amx_attention_t(q, kpad, v, o_t, T, nth);
        double t3 = now();
        if (t1 - t0 < best_cpu) best_cpu = t1 - t0;
        if (t2 - t1 < best_amx) best_amx = t2 - t1;
        if (t3 - t2 < best_t) best_t = t3 - t2;
    }
    const double flop = 4.0 * H * D * ((double)T * (T + 1) / 2);
    printf("T %d, 16 / 1 heads, d 128, bf16, %d thread(s), best of 3\n", T, nth);
    printf("library CPU dense: %8.1f ms  %6.1f GFLOP/s  rel err vs its f32 run %.3e\n", best_cpu * 1e3, flop / best_cpu / 1e9,
           rel_err(o_cpu, o32, nq));
    printf("AMX prototype    : %8.1f ms  %6.1f GFLOP/s  rel err vs its f32 run %.3e  (%.2fx)\n", best_amx * 1e3,
           flop / best_amx / 1e9, rel_err(o_amx, o32, nq), best_cpu / best_amx);
    printf("AMX transposed   : %8.1f ms  %6.1f GFLOP/s  rel err vs its f32 run %.3e  (%.2fx)\n", best_t * 1e3,
           flop / best_t / 1e9, rel_err(o_t, o32, nq), best_cpu / best_t);
    return 0;
}
