/*
 * test_ref_semantics.c: the geometry helpers and the REF backend against brute-force
 * definitions written from the SPEC, on inputs whose answers are known in closed form.
 *  - infllm_windows / infllm_visible_kernels / infllm_block_kernel_range / infllm_block_forced
 *    against brute force over kernel and block intervals, for several (B, l1, s1);
 *    the default geometry against SPEC B §6's window max(4b-1, 0) .. min(4b+4, n1);
 *  - stage 1 with q = 0: every logit is 0, so a visible c1 kernel scores G / (number of visible
 *    LSE kernels) and everything else 0: the visibility pattern, the exact_lse switch, the
 *    "no visible LSE kernel -> 0" rule and the bottom-right alignment are checked exactly;
 *  - stage 2 / dense with q = 0: the output is the plain mean of the allowed values and
 *    lse = log(count), so the allowed key set (causal, selected blocks, -1 and out-of-range
 *    entries ignored) is checked exactly; an empty set gives 0 and -inf;
 *  - block scores and top-k on hand-made score rows (forced blocks, padding columns, ties to
 *    the lower index, ascending order, -1 for future blocks); a varlen row's padding columns take
 *    no place; an overflowed (+inf) stage-1 sum never displaces a forced block.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "harness.h"
#include "infllm.h"
#include "internal.h"
#include "select_fixtures.h"

static void test_geometry(void) {
    const int32_t geo[][3] = {{64, 32, 16}, {32, 16, 8}, {128, 32, 16}, {16, 16, 8}, {48, 32, 16}, {64, 64, 32}, {64, 16, 16}};
    int64_t bad = 0;
    for (size_t gi = 0; gi < sizeof geo / sizeof geo[0]; gi++) {
        int32_t B = geo[gi][0], l1 = geo[gi][1], s1 = geo[gi][2];
        for (int32_t L = 0; L < 700; L += 7) {
            int32_t n1 = 0;
            for (int32_t j = 0; (int64_t)s1 * j + l1 <= L; j++) n1++;
            if (infllm_windows(L, l1, s1) != n1) bad++;
            for (int32_t p = 0; p < L; p += 3) {
                int32_t vis = 0;
                for (int32_t j = 0; j < n1; j++) vis += s1 * j + l1 - 1 <= p;
                if (infllm_visible_kernels(p, l1, s1, n1) != vis) bad++;
            }
            int32_t nb = (L + B - 1) / B;
            for (int32_t b = 0; b < nb + 2; b++) {
                int32_t lo, hi, blo = -1, bhi = -1;
                infllm_block_kernel_range(b, B, l1, s1, n1, &lo, &hi);
                for (int32_t j = 0; j < n1; j++) { /* [s1 j, s1 j + l1) intersects [B b, B b + B) */
                    if ((int64_t)s1 * j < (int64_t)B * b + B && (int64_t)s1 * j + l1 > (int64_t)B * b) {
                        if (blo < 0) blo = j;
                        bhi = j + 1;
                    }
                }
                if (blo < 0 ? hi != lo : (lo != blo || hi != bhi)) bad++;
                if (B == 64 && l1 == 32 && s1 == 16) { /* SPEC B §6 */
                    int32_t slo = 4 * b - 1 > 0 ? 4 * b - 1 : 0, shi = 4 * b + 4 < n1 ? 4 * b + 4 : n1;
                    if ((shi > slo) != (hi > lo) || (shi > slo && (slo != lo || shi != hi))) bad++;
                }
            }
        }
    }
    CHECK(bad == 0, "geometry helpers disagree with brute force in %lld places", (long long)bad);
    int fb = 0;
    for (int32_t qb = 0; qb < 40; qb++)
        for (int32_t b = 0; b < 45; b++)
            for (int32_t init = 0; init < 3; init++)
                for (int32_t loc = 0; loc < 4; loc++) {
                    int want = b < init || (b >= qb - loc && b <= qb);
                    fb += infllm_block_forced(b, qb, init, loc) != want;
                }
    CHECK(fb == 0, "infllm_block_forced wrong in %d cases", fb);
}

typedef struct lay {
    int32_t n, lq[4], lk[4], cuq[5], cuk[5];
    int64_t tq, tk;
} lay;

static infllm_layout mk_layout(lay *y, int32_t Hq, int32_t Hkv, int32_t D) {
    y->cuq[0] = y->cuk[0] = 0;
    for (int32_t b = 0; b < y->n; b++) {
        y->cuq[b + 1] = y->cuq[b] + y->lq[b];
        y->cuk[b + 1] = y->cuk[b] + y->lk[b];
    }
    y->tq = y->cuq[y->n];
    y->tk = y->cuk[y->n];
    infllm_layout l;
    memset(&l, 0, sizeof l);
    l.dtype = INFLLM_DTYPE_F32;
    l.num_seqs = y->n;
    l.cu_seqlens_q = y->cuq;
    l.cu_seqlens_k = y->cuk;
    l.total_q = y->tq;
    l.total_k = y->tk;
    l.num_q_heads = Hq;
    l.num_kv_heads = Hkv;
    l.head_dim = D;
    return l;
}

static void test_stage1_visibility(void) {
    const int32_t Hq = 6, Hkv = 2, G = 3, D = 16;
    lay y = {3, {40, 1, 200}, {40, 300, 257}, {0}, {0}, 0, 0};
    infllm_layout l = mk_layout(&y, Hq, Hkv, D);
    for (int exact = 0; exact < 2; exact++) {
        infllm_params p;
        infllm_params_default(&p);
        p.backend = INFLLM_BACKEND_REF;
        p.block_size = 32;
        p.kernel_size = 16;
        p.kernel_stride = 8;
        p.exact_lse = exact;
        infllm_sizes sz;
        CHECK_OK(infllm_get_sizes(&p, &l, &sz));
        float *q = calloc((size_t)(y.tq * Hq * D), 4), *k = malloc((size_t)(y.tk * Hkv * D) * 4);
        unsigned long long seed = 5;
        for (int64_t i = 0; i < y.tk * Hkv * D; i++) k[i] = (float)h_normal(&seed);
        float *c1 = malloc((size_t)(sz.total_n1 * Hkv * D + 1) * 4), *c2 = malloc((size_t)(sz.total_n2 * Hkv * D + 1) * 4);
        float *sc = malloc((size_t)(Hkv * y.tq * sz.max_n1 + 1) * 4);
        CHECK_OK(infllm_compress_keys(&p, &l, k, c1, c2, NULL, NULL));
        CHECK_OK(infllm_stage1_scores(&p, &l, q, c1, c2, NULL, NULL, sc));
        int64_t bad = 0;
        for (int32_t b = 0; b < y.n; b++) {
            int32_t n1 = infllm_windows(y.lk[b], 16, 8), n2 = infllm_windows(y.lk[b], 64, 32);
            for (int32_t i = 0; i < y.lq[b]; i++) {
                int64_t t = y.cuq[b] + i, pos = y.lk[b] - y.lq[b] + i;
                int32_t v1 = 0, vl = 0;
                for (int32_t j = 0; j < n1; j++) v1 += 8 * j + 15 <= pos;
                if (exact)
                    vl = v1;
                else
                    for (int32_t j = 0; j < n2; j++) vl += 32 * j + 63 <= pos;
                for (int32_t g = 0; g < Hkv; g++)
                    for (int32_t j = 0; j < sz.max_n1; j++) {
                        double want = (vl > 0 && j < n1 && 8 * j + 15 <= pos) ? (double)G / vl : 0.0;
                        double got = sc[((int64_t)g * y.tq + t) * sz.max_n1 + j];
                        if (fabs(got - want) > 1e-6 * want) bad++;
                    }
            }
        }
        CHECK(bad == 0, "stage-1 visibility (exact_lse %d): %lld entries wrong", exact, (long long)bad);
        free(q);
        free(k);
        free(c1);
        free(c2);
        free(sc);
    }
}

static void test_attention_sets(void) {
    const int32_t Hq = 4, Hkv = 2, G = 2, D = 16, B = 16;
    lay y = {3, {50, 1, 7}, {50, 90, 40}, {0}, {0}, 0, 0};
    infllm_layout l = mk_layout(&y, Hq, Hkv, D);
    infllm_params p;
    infllm_params_default(&p);
    p.backend = INFLLM_BACKEND_REF;
    p.block_size = B;
    p.kernel_size = 16;
    p.kernel_stride = 8;
    float *q = calloc((size_t)(y.tq * Hq * D), 4), *k = malloc((size_t)(y.tk * Hkv * D) * 4);
    float *v = malloc((size_t)(y.tk * Hkv * D) * 4), *out = malloc((size_t)(y.tq * Hq * D) * 4);
    float *lse = malloc((size_t)(y.tq * Hq) * 4);
    unsigned long long seed = 9;
    for (int64_t i = 0; i < y.tk * Hkv * D; i++) {
        k[i] = (float)h_normal(&seed);
        v[i] = (float)h_normal(&seed);
    }
    const int32_t cols = 4;
    int32_t *tk = malloc((size_t)(Hkv * y.tq * cols) * 4);
    /* a varied selection per (g, t): some real blocks, -1, out-of-range and future entries */
    for (int32_t g = 0; g < Hkv; g++)
        for (int64_t t = 0; t < y.tq; t++) {
            int32_t *r = tk + ((int64_t)g * y.tq + t) * cols;
            r[0] = (int32_t)((t + g) % 4);
            r[1] = (t % 3 == 0) ? -1 : (int32_t)((t * 7 + g) % 6);
            r[2] = (t % 5 == 0) ? 1000 : (int32_t)(t / 16);
            r[3] = (t % 11 == 0) ? -5 : 2;
        }
    for (int dense = 0; dense < 2; dense++) {
        if (dense)
            CHECK_OK(infllm_dense_attention(&p, &l, q, k, v, out, lse));
        else
            CHECK_OK(infllm_sparse_attention(&p, &l, q, k, v, tk, cols, out, lse));
        int64_t bad = 0, empty = 0;
        for (int32_t b = 0; b < y.n; b++)
            for (int32_t i = 0; i < y.lq[b]; i++) {
                int64_t t = y.cuq[b] + i, pos = y.lk[b] - y.lq[b] + i;
                int32_t nbk = (y.lk[b] + B - 1) / B;
                for (int32_t h = 0; h < Hq; h++) {
                    int32_t g = h / G;
                    const int32_t *r = tk + ((int64_t)g * y.tq + t) * cols;
                    double mean[16] = {0};
                    int64_t cnt = 0;
                    for (int64_t j = 0; j <= pos; j++) {
                        int allowed = dense;
                        for (int32_t c = 0; c < cols && !allowed; c++) allowed = r[c] >= 0 && r[c] < nbk && r[c] == j / B;
                        if (!allowed) continue;
                        cnt++;
                        for (int32_t d = 0; d < D; d++) mean[d] += v[((y.cuk[b] + j) * Hkv + g) * D + d];
                    }
                    if (cnt == 0) empty++;
                    for (int32_t d = 0; d < D; d++) {
                        double want = cnt ? mean[d] / (double)cnt : 0.0;
                        if (fabs(out[(t * Hq + h) * D + d] - want) > 1e-5 * (1 + fabs(want))) bad++;
                    }
                    double wl = cnt ? log((double)cnt) : -INFINITY;
                    float gl = lse[t * Hq + h];
                    if (cnt ? fabs(gl - wl) > 1e-5 : !(isinf(gl) && gl < 0)) bad++;
                }
            }
        CHECK(bad == 0, "%s attention with q = 0: %lld values differ from the mean of the allowed values",
              dense ? "dense" : "sparse", (long long)bad);
        if (!dense) CHECK(empty > 0, "the sparse case should contain rows with an empty key set");
    }
    free(q);
    free(k);
    free(v);
    free(out);
    free(lse);
    free(tk);
}

static void test_select(void) {
    /* one sequence of lk = 200 keys, the last 2 queries (positions 198, 199), B = 16, l1 16 s1 8 */
    lay y = {2, {2, 1}, {200, 20}, {0}, {0}, 0, 0};
    infllm_layout l = mk_layout(&y, 1, 1, 16);
    infllm_params p;
    infllm_params_default(&p);
    p.backend = INFLLM_BACKEND_REF;
    p.block_size = 16;
    p.kernel_size = 16;
    p.kernel_stride = 8;
    p.init_blocks = 1;
    p.local_blocks = 1;
    p.topk = 3; /* K = 4 */
    infllm_sizes sz;
    CHECK_OK(infllm_get_sizes(&p, &l, &sz));
    CHECK(sz.max_n1 == 24 && sz.nblocks_out == 13 && sz.topk_out == 4, "sizes %d %d %d", sz.max_n1, sz.nblocks_out,
          sz.topk_out);
    float sc[3 * 24], bs[3 * 13];
    int32_t tk[3 * 4];
    for (int j = 0; j < 3 * 24; j++) sc[j] = 0.0f;
    /* row 0 (pos 198, q_block 12): kernel j overlaps blocks j/2 - ... ; put distinct values */
    for (int j = 0; j < 24; j++) sc[j] = (float)((j * 37) % 23) / 4.0f;
    /* row 1 (pos 199): all equal -> ties resolved to lower block index */
    for (int j = 0; j < 24; j++) sc[24 + j] = 1.0f;
    /* row 2: second sequence (lk 20, pos 19, q_block 1, n1 = 1) */
    sc[48] = 5.0f;
    CHECK_OK(infllm_block_scores(&p, &l, sc, bs));
    /* expected block scores for row 0: forced 0, 11, 12; others max over kernels 2b-1..2b+1 */
    int bad = 0;
    for (int b = 0; b < 13; b++) {
        float want;
        if (b == 0 || b == 11 || b == 12) {
            want = INFINITY;
        } else {
            want = -INFINITY;
            for (int j = 2 * b - 1; j <= 2 * b + 1 && j < 24; j++)
                if (j >= 0 && sc[j] > want) want = sc[j];
        }
        bad += bs[b] != want;
        bad += bs[13 + b] != ((b == 0 || b == 11 || b == 12) ? INFINITY : 1.0f);
    }
    /* row 2: blocks 0 (init, current-1 = 0) and 1 (current) forced; 2..12 padding (-inf) */
    bad += bs[26] != INFINITY || bs[27] != INFINITY;
    for (int b = 2; b < 13; b++) bad += bs[26 + b] != -INFINITY;
    CHECK(bad == 0, "block scores on hand-made rows: %d wrong", bad);
    CHECK_OK(infllm_topk_select(&p, &l, bs, tk));
    /* row 0: forced {0, 11, 12} + the best non-forced block (ties -> lower index) */
    int best = -1;
    float bv = -INFINITY;
    for (int b = 1; b < 11; b++)
        if (bs[b] > bv) {
            bv = bs[b];
            best = b;
        }
    int32_t want0[4] = {0, best, 11, 12};
    CHECK(memcmp(tk, want0, sizeof want0) == 0, "top-k row 0: %d %d %d %d (want 0 %d 11 12)", tk[0], tk[1], tk[2],
          tk[3], best);
    int32_t want1[4] = {0, 1, 11, 12}; /* all 1.0: lowest index wins the tie */
    CHECK(memcmp(tk + 4, want1, sizeof want1) == 0, "top-k row 1: %d %d %d %d", tk[4], tk[5], tk[6], tk[7]);
    int32_t want2[4] = {0, 1, -1, -1}; /* two blocks exist; the rest are padding -> -1 */
    CHECK(memcmp(tk + 8, want2, sizeof want2) == 0, "top-k row 2: %d %d %d %d", tk[8], tk[9], tk[10], tk[11]);

    /* init_blocks 3: row 2's padding column 2 (its sequence has 2 blocks) is below init_blocks, so
     * forced (+inf) as in every column (SPEC B 6, golden README); columns 3..12 stay -inf; the
     * selection is unchanged (entries past the sequence's blocks become -1) */
    p.init_blocks = 3;
    CHECK_OK(infllm_block_scores(&p, &l, sc, bs));
    bad = bs[26] != INFINITY || bs[27] != INFINITY || bs[28] != INFINITY;
    for (int b = 3; b < 13; b++) bad += bs[26 + b] != -INFINITY;
    CHECK(bad == 0, "init 3: row 2's block scores %g %g %g %g (want inf inf inf -inf)", bs[26], bs[27], bs[28], bs[29]);
    CHECK_OK(infllm_topk_select(&p, &l, bs, tk));
    CHECK(memcmp(tk + 8, want2, sizeof want2) == 0, "init 3: top-k row 2: %d %d %d %d", tk[8], tk[9], tk[10], tk[11]);
    infllm_params pc = p;
    pc.backend = INFLLM_BACKEND_CPU;
    float bsc[3 * 13];
    CHECK_OK(infllm_block_scores(&pc, &l, sc, bsc));
    CHECK(memcmp(bs, bsc, sizeof bs) == 0, "init 3: CPU block scores differ from REF");
}

/* NaN scores (from NaN inputs): a NaN kernel score never wins a block's max, and a NaN block score ranks
 * lowest, on CPU as on REF. The CPU once started its max at the block's first kernel (a NaN there made the
 * block NaN) and ranked a NaN above +inf (so NaN blocks took the places of forced ones). */
static void test_select_nan(void) {
    infllm_params p;
    nanfx_params(&p);
    infllm_layout l = nanfx_layout(INFLLM_DTYPE_F32, nanfx_cu_seqlens_q, nanfx_cu_seqlens_k);
    float sc[NANFX_ROWS * NANFX_N1], bs[2][NANFX_ROWS * NANFX_NB];
    int32_t tk[2][NANFX_ROWS * NANFX_K];
    nanfx_kernel_scores(sc);
    for (int be = 0; be < 2; be++) {
        p.backend = be ? INFLLM_BACKEND_CPU : INFLLM_BACKEND_REF;
        CHECK_OK(infllm_block_scores(&p, &l, sc, bs[be]));
        CHECK_OK(infllm_topk_select(&p, &l, bs[be], tk[be]));
    }
    int bad = 0;
    for (int i = 0; i < NANFX_ROWS * NANFX_NB; i++) bad += memcmp(&bs[0][i], &bs[1][i], sizeof(float)) != 0;
    CHECK(bad == 0, "NaN kernel scores: %d CPU block scores differ from REF", bad);
    CHECK(memcmp(tk[0], tk[1], sizeof tk[0]) == 0, "NaN kernel scores: CPU top-k differs from REF");
    nanfx_block_scores(bs[0]);
    nanfx_block_scores(bs[1]);
    for (int be = 0; be < 2; be++) {
        p.backend = be ? INFLLM_BACKEND_CPU : INFLLM_BACKEND_REF;
        CHECK_OK(infllm_topk_select(&p, &l, bs[be], tk[be]));
    }
    CHECK(memcmp(tk[0], tk[1], sizeof tk[0]) == 0, "NaN block scores: CPU top-k differs from REF");
    CHECK(memcmp(tk[1], nanfx_want_row0, sizeof nanfx_want_row0) == 0,
          "NaN block scores: CPU row 0 %d %d %d %d (want 0 5 11 12)", tk[1][0], tk[1][1], tk[1][2], tk[1][3]);
}

/* A varlen row's padding columns (b >= nblocks of its sequence: the batch's longer sequence sets nblocks_out) are
 * no candidates: the top-k of a row is that of its own blocks, whatever the batch, on REF as on CPU (and CUDA).
 * REF once ranked every column and turned a padding winner into -1 afterwards: a caller's padding above the real
 * scores emptied the row (-1 -1 -1), and a NaN block lost its slot to a -inf padding column (0 2 3 -1). */
static void test_select_padding(void) {
    lay y = {2, {1, 1}, {64, 160}, {0}, {0}, 0, 0}; /* 4 and 10 blocks of 16; row 0 at position 63 (q_block 3) */
    infllm_layout l = mk_layout(&y, 1, 1, 16);
    lay y1 = {1, {1}, {64}, {0}, {0}, 0, 0}; /* sequence 0 alone */
    infllm_layout l1 = mk_layout(&y1, 1, 1, 16);
    infllm_params p;
    infllm_params_default(&p);
    p.block_size = 16;
    p.kernel_size = 16;
    p.kernel_stride = 16;
    p.init_blocks = 0;
    p.local_blocks = 0;
    for (int variant = 0; variant < 2; variant++) {
        p.topk = variant == 0 ? 3 : 4;
        float bs[2 * 10];
        for (int b = 0; b < 10; b++) bs[b] = variant == 0 ? 100.0f : -INFINITY, bs[10 + b] = (float)b;
        bs[0] = 1.0f, bs[1] = variant == 0 ? 2.0f : NAN, bs[2] = -5.0f, bs[3] = 7.0f;
        const int32_t want[2][4] = {{0, 1, 3, -1}, {0, 1, 2, 3}};
        for (int be = 0; be < 2; be++) {
            p.backend = be ? INFLLM_BACKEND_CPU : INFLLM_BACKEND_REF;
            int32_t tk[2 * 4], alone[4];
            CHECK_OK(infllm_topk_select(&p, &l, bs, tk));
            CHECK_OK(infllm_topk_select(&p, &l1, bs, alone));
            CHECK(!memcmp(tk, want[variant], (size_t)p.topk * 4) && !memcmp(alone, want[variant], (size_t)p.topk * 4),
                  "%s padding variant %d: row 0 selects %d %d %d in the batch, %d %d %d alone (want %d %d %d ...)",
                  be ? "CPU" : "REF", variant, tk[0], tk[1], tk[2], alone[0], alone[1], alone[2], want[variant][0],
                  want[variant][1], want[variant][2]);
        }
    }
}

/* A stage-1 head sum past the float range (a c1 logit ~88.7 above the row's LSE: here keys and queries of
 * components 6, |q| = |k| = 48 at d 64, in three 32-key windows) is +inf; its block's score is FLT_MAX, so the
 * forced blocks (+inf) keep their places. They had tied at +inf and the lower index won: the overflowed blocks
 * 2 and 4 took the places of the local block 8 and the current block 9 (selection 0 2 4, REF and CPU alike),
 * and the query did not attend its own block. */
static void test_select_overflow(void) {
    const int32_t T = OVFX_T, D = OVFX_D;
    infllm_layout l = h_layout1(INFLLM_DTYPE_BF16, T, T, 1, 1, D);
    uint16_t *q = malloc((size_t)T * D * 2), *k = malloc((size_t)T * D * 2);
    ovfx_inputs(q, k);
    infllm_params p;
    ovfx_params(&p); /* K = 4: forced 0, 8, 9 and one free place at row 639 */
    for (int be = 0; be < 2; be++) {
        p.backend = be ? INFLLM_BACKEND_CPU : INFLLM_BACKEND_REF;
        infllm_sizes sz;
        CHECK_OK(infllm_get_sizes(&p, &l, &sz));
        int32_t *tk = malloc((size_t)T * (size_t)sz.topk_out * 4);
        CHECK_OK(infllm_select_blocks(&p, &l, q, k, tk));
        const int64_t missing = ovfx_forced_missing(&p, tk, T, sz.topk_out); /* rows that lost a forced block */
        const int32_t *last = tk + (size_t)(T - 1) * sz.topk_out;
        CHECK(missing == 0 && sz.topk_out == 4 && !memcmp(last, ovfx_want_last, sizeof ovfx_want_last),
              "%s: overflowed stage-1 sums: %lld forced blocks dropped; row %d selects %d %d %d %d (want 0 2 8 9)",
              be ? "CPU" : "REF", (long long)missing, T - 1, last[0], last[1], last[2], last[3]);
        /* the standalone block scores: FLT_MAX for a free block whose kernels hold +inf */
        float sc[8] = {1.0f, INFINITY, 2.0f, 0.5f, 0.0f, 0.0f, 0.0f, 0.0f}, bs[4];
        infllm_layout l1;
        memset(&l1, 0, sizeof l1);
        l1.dtype = INFLLM_DTYPE_F32, l1.num_seqs = 1, l1.total_q = 1, l1.total_k = 64, l1.num_q_heads = 1;
        l1.num_kv_heads = 1, l1.head_dim = 16;
        infllm_params p1 = p;
        p1.block_size = 16, p1.kernel_size = 8, p1.kernel_stride = 8, p1.init_blocks = 0, p1.local_blocks = 0;
        CHECK_OK(infllm_block_scores(&p1, &l1, sc, bs)); /* blocks 0..2 free (kernels 2b, 2b + 1), 3 current */
        CHECK(bs[0] == FLT_MAX && bs[1] == 2.0f && bs[3] == INFINITY, "%s: block scores %g %g %g %g (want FLT_MAX 2 . inf)",
              be ? "CPU" : "REF", bs[0], bs[1], bs[2], bs[3]);
        free(tk);
    }
    free(q);
    free(k);
}

int main(void) {
    test_geometry();
    test_stage1_visibility();
    test_attention_sets();
    test_select();
    test_select_nan();
    test_select_padding();
    test_select_overflow();
    return finish("test_ref_semantics");
}
