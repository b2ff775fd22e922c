/* select_fixtures.h: selection cases that test_ref_semantics (REF and CPU) and test_cuda (CUDA) both run.
 *
 * 1. nanfx_*: the hand-made NaN case, through the standalone block-score and top-k ops. Two sequences (q 2 / 1 rows, k 200 / 20), one head, B 16, kernels l1 16 / s1 8, init 1, local 1, topk 3:
 * K 4 columns, forced blocks {0, 11, 12} in row 0 and one free place.
 *   kernel scores [3 rows, 24 kernels]: every block's first kernel NaN in row 0, kernel 3 NaN in row 1
 *   block scores  [3 rows, 13 blocks]: row 0 hand-made (forced +inf, block 5 at 1, every other NaN: more NaN
 *                  blocks than free places, so NaN must rank below every score), block 7 of row 1 NaN
 * 2. ovfx_*: stage-1 sums past the float range, through infllm_select_blocks. One sequence of 640 tokens, bf16, one
 *    head of d 64, q all 6, keys 6 in the first 32 tokens of blocks 2, 4 and 6 (one c1 window each) and small
 *    elsewhere: those kernels' head sums overflow to +inf against the c2 LSE. init 1, local 1, topk 3 (K 4). A free
 *    block's score is capped at FLT_MAX, so it never ties with the forced +inf blocks: every row keeps its forced
 *    blocks, and row 639 selects 0, 2, 8, 9 (blocks 2, 4, 6 tie at FLT_MAX: the lowest index). Without the cap the
 *    lower index won the tie and rows dropped their current block. Layout: h_layout1(INFLLM_DTYPE_BF16, lq, OVFX_T,
 *    1, 1, OVFX_D) for the last lq queries.
 * Header-only, static; needs infllm.h, dtype.h (infllm_f32_to_bf16), harness.h (h_uniform), math.h and string.h. */
#ifndef INFLLM_SELECT_FIXTURES_H
#define INFLLM_SELECT_FIXTURES_H

enum { NANFX_ROWS = 3, NANFX_N1 = 24, NANFX_NB = 13, NANFX_K = 4 };

static const int32_t nanfx_cu_seqlens_q[3] = {0, 2, 3}, nanfx_cu_seqlens_k[3] = {0, 200, 220};
/* row 0's selection from nanfx_block_scores: the forced blocks and the one finite score */
static const int32_t nanfx_want_row0[NANFX_K] = {0, 5, 11, 12};

static inline void nanfx_params(infllm_params *p) {
    infllm_params_default(p);
    p->block_size = 16;
    p->kernel_size = 16;
    p->kernel_stride = 8;
    p->init_blocks = 1;
    p->local_blocks = 1;
    p->topk = 3;
}

/* the fixture's layout over the given copies of nanfx_cu_seqlens_q / _k (host or device memory) */
static inline infllm_layout nanfx_layout(infllm_dtype dtype, const int32_t *cu_seqlens_q, const int32_t *cu_seqlens_k) {
    infllm_layout l;
    memset(&l, 0, sizeof l);
    l.dtype = dtype;
    l.num_seqs = 2;
    l.cu_seqlens_q = cu_seqlens_q;
    l.cu_seqlens_k = cu_seqlens_k;
    l.total_q = 3;
    l.total_k = 220;
    l.num_q_heads = 1;
    l.num_kv_heads = 1;
    l.head_dim = 16;
    l.max_seqlen_q = 2;
    l.max_seqlen_k = 200;
    return l;
}

static inline void nanfx_kernel_scores(float sc[NANFX_ROWS * NANFX_N1]) {
    for (int j = 0; j < NANFX_ROWS * NANFX_N1; j++) sc[j] = (float)((j * 29) % 17) / 8.0f;
    for (int j = 0; j < NANFX_N1; j += 2) sc[j] = NAN; /* every block's first kernel (2b - 1 or 0) is NaN somewhere */
    sc[NANFX_N1 + 3] = NAN;
}

/* overwrites row 0 and one entry of row 1 of block scores computed before (rows 1-2 keep theirs) */
static inline void nanfx_block_scores(float bs[NANFX_ROWS * NANFX_NB]) {
    for (int b = 0; b < NANFX_NB; b++) bs[b] = (b == 0 || b >= 11) ? INFINITY : NAN;
    bs[5] = 1.0f;
    bs[NANFX_NB + 7] = NAN;
}

enum { OVFX_T = 640, OVFX_D = 64 };
static const int32_t ovfx_want_last[4] = {0, 2, 8, 9};

static inline void ovfx_params(infllm_params *p) {
    infllm_params_default(p);
    p->init_blocks = 1;
    p->local_blocks = 1;
    p->topk = 3;
}

/* q, k [OVFX_T, 1, OVFX_D] bf16 bits */
static inline void ovfx_inputs(uint16_t *q, uint16_t *k) {
    unsigned long long rs = 5;
    for (int32_t t = 0; t < OVFX_T; t++)
        for (int32_t d = 0; d < OVFX_D; d++) {
            const int strong = t % 64 < 32 && (t / 64 == 2 || t / 64 == 4 || t / 64 == 6); /* one c1 window each */
            k[t * OVFX_D + d] = infllm_f32_to_bf16(strong ? 6.0f : (float)(h_uniform(&rs) - 0.5));
            q[t * OVFX_D + d] = infllm_f32_to_bf16(6.0f);
        }
}

/* forced blocks missing from the selection tk [lq, cols] of the last lq queries */
static inline int64_t ovfx_forced_missing(const infllm_params *p, const int32_t *tk, int32_t lq, int32_t cols) {
    int64_t missing = 0;
    for (int32_t i = 0; i < lq; i++) {
        const int32_t qb = (OVFX_T - lq + i) / 64;
        for (int32_t b = 0; b <= qb; b++) {
            if (!(b < p->init_blocks || b >= qb - p->local_blocks)) continue; /* forced (b <= qb) */
            int found = 0;
            for (int32_t e = 0; e < cols; e++) found |= tk[(size_t)i * cols + e] == b;
            missing += !found;
        }
    }
    return missing;
}

#endif
