/* nan_select_fixture.h: the hand-made NaN selection case that test_ref_semantics (CPU vs REF) and test_cuda
 * (CUDA vs REF) both run through the standalone block-score and top-k ops.
 *
 * Two sequences (q 2 / 1 rows, k 200 / 20), one head, B 16, kernels l1 16 / s1 8, init 1, local 1, topk 3:
 * K 4 columns, forced blocks {0, 11, 12} in row 0 and one free place.
 *   kernel scores [3 rows, 24 kernels]: every block's first kernel NaN in row 0, kernel 3 NaN in row 1
 *   block scores  [3 rows, 13 blocks]: row 0 hand-made (forced +inf, block 5 at 1, every other NaN: more NaN
 *                  blocks than free places, so NaN must rank below every score), block 7 of row 1 NaN
 * Header-only, static; needs infllm.h, math.h and string.h. */
#ifndef INFLLM_NAN_SELECT_FIXTURE_H
#define INFLLM_NAN_SELECT_FIXTURE_H

enum { NANFX_ROWS = 3, NANFX_N1 = 24, NANFX_NB = 13, NANFX_K = 4 };

static const int32_t nanfx_cu_seqlens_q[3] = {0, 2, 3}, nanfx_cu_seqlens_k[3] = {0, 200, 220};
/* row 0's selection from nanfx_block_scores: the forced blocks and the one finite score */
static const int32_t nanfx_want_row0[NANFX_K] = {0, 5, 11, 12};

static void nanfx_params(infllm_params *p) {
    infllm_params_default(p);
    p->block_size = 16;
    p->kernel_size = 16;
    p->kernel_stride = 8;
    p->init_blocks = 1;
    p->local_blocks = 1;
    p->topk = 3;
}

/* the fixture's layout over the given copies of nanfx_cu_seqlens_q / _k (host or device memory) */
static infllm_layout nanfx_layout(infllm_dtype dtype, const int32_t *cu_seqlens_q, const int32_t *cu_seqlens_k) {
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

static void nanfx_kernel_scores(float sc[NANFX_ROWS * NANFX_N1]) {
    for (int j = 0; j < NANFX_ROWS * NANFX_N1; j++) sc[j] = (float)((j * 29) % 17) / 8.0f;
    for (int j = 0; j < NANFX_N1; j += 2) sc[j] = NAN; /* every block's first kernel (2b - 1 or 0) is NaN somewhere */
    sc[NANFX_N1 + 3] = NAN;
}

/* overwrites row 0 and one entry of row 1 of block scores computed before (rows 1-2 keep theirs) */
static void nanfx_block_scores(float bs[NANFX_ROWS * NANFX_NB]) {
    for (int b = 0; b < NANFX_NB; b++) bs[b] = (b == 0 || b >= 11) ? INFINITY : NAN;
    bs[5] = 1.0f;
    bs[NANFX_NB + 7] = NAN;
}

#endif
