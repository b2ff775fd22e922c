/*
 * test_errors.c: every error path of every public function returns its specific status and
 * sets a non-empty infllm_last_error() message of its own; nothing crashes (run it under
 * ASan too). Before each failing call a sentinel error is recorded, so a call that forgot
 * to set its own message is caught.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "harness.h"
#include "infllm.h"

static const char *sentinel(void) {
    infllm_params p;
    infllm_cache *c;
    infllm_params_default(&p);
    infllm_cache_create(&p, INFLLM_DTYPE_F32, 1, 64, -777, &c); /* records a message no test expects */
    return infllm_last_error();
}

static char g_sent[1024];

#define EXPECT(call, want)                                                                                     \
    do {                                                                                                       \
        snprintf(g_sent, sizeof g_sent, "%s", sentinel());                                                    \
        infllm_status st_ = (call);                                                                            \
        const char *msg_ = infllm_last_error();                                                                \
        CHECK(st_ == (want), "%s returned %s (%s), want %s", #call, infllm_status_str(st_), msg_,              \
              infllm_status_str(want));                                                                        \
        CHECK((want) == INFLLM_OK || (msg_ && msg_[0] && strcmp(msg_, g_sent) != 0),                           \
              "%s: no message of its own (last error \"%s\")", #call, msg_ ? msg_ : "(null)");                 \
    } while (0)

/* buffers big enough for every call below */
enum { TQ = 100, TK = 100, HQ = 4, HKV = 2, D = 64 };
static float q[TQ * HQ * D], k[TK * HKV * D], v[TK * HKV * D], out[TQ * HQ * D], lse[TQ * HQ];
static float c1[TK * HKV * D], c2[TK * HKV * D];
static float scores[HKV * TQ * TK], bscores[HKV * TQ * TK];
static int32_t topk[HKV * TQ * TK];
static int32_t cu1[8], cu2[8];
static float dout[TQ * HQ * D], dq[TQ * HQ * D], dk[TK * HKV * D], dv[TK * HKV * D];

static infllm_layout base_layout(void) {
    infllm_layout l;
    memset(&l, 0, sizeof l);
    l.dtype = INFLLM_DTYPE_F32;
    l.num_seqs = 1;
    l.total_q = TQ;
    l.total_k = TK;
    l.num_q_heads = HQ;
    l.num_kv_heads = HKV;
    l.head_dim = D;
    return l;
}
static infllm_params base_params(void) {
    infllm_params p;
    infllm_params_default(&p);
    p.backend = INFLLM_BACKEND_REF;
    p.topk = 2;
    p.local_blocks = 1;
    p.block_size = 32;
    return p;
}

/* Runs every layout-taking public op with (p, l) and expects `want` from each (an error: with a message of
 * its own); the stage-2 ops (sparse / dense attention, their workspace sizes and backward) expect want_stage2. */
static void all_ops_split(const char *what, const infllm_params *p, const infllm_layout *l, infllm_status want,
                          infllm_status want_stage2) {
    infllm_sizes sz;
    size_t bytes;
    printf("  %s\n", what);
    /* infllm_get_sizes ignores the backend (sizes never depend on it) */
    if (!p || (p->backend != INFLLM_BACKEND_CUDA && (unsigned)p->backend <= 2u)) EXPECT(infllm_get_sizes(p, l, &sz), want);
    EXPECT(infllm_compress_keys(p, l, k, c1, c2, cu1, cu2), want);
    EXPECT(infllm_stage1_scores(p, l, q, c1, c2, NULL, NULL, scores), want);
    EXPECT(infllm_block_scores(p, l, scores, bscores), want);
    EXPECT(infllm_topk_select(p, l, bscores, topk), want);
    EXPECT(infllm_sparse_attention(p, l, q, k, v, topk, 1, out, lse), want_stage2);
    EXPECT(infllm_dense_attention(p, l, q, k, v, out, lse), want_stage2);
    EXPECT(infllm_attention(p, l, q, k, v, out, lse), want);
    EXPECT(infllm_attention_workspace_size(p, l, &bytes), want);
    EXPECT(infllm_select_blocks_workspace_size(p, l, &bytes), want);
    EXPECT(infllm_sparse_attention_workspace_size(p, l, 1, &bytes), want_stage2);
    EXPECT(infllm_dense_attention_workspace_size(p, l, &bytes), want_stage2);
    EXPECT(infllm_sparse_attention_backward_workspace_size(p, l, 1, &bytes), want_stage2);
    EXPECT(infllm_dense_attention_backward_workspace_size(p, l, &bytes), want_stage2);
    EXPECT(infllm_select_blocks(p, l, q, k, topk), want);
    EXPECT(infllm_sparse_attention_backward(p, l, q, k, v, topk, 1, lse, dout, dq, dk, dv), want_stage2);
    EXPECT(infllm_dense_attention_backward(p, l, q, k, v, lse, dout, dq, dk, dv), want_stage2);
}
static void all_ops(const char *what, const infllm_params *p, const infllm_layout *l, infllm_status want) {
    all_ops_split(what, p, l, want, want);
}

static void test_params(void) {
    infllm_layout l = base_layout();
    infllm_params p;
    printf("params:\n");
    all_ops("params NULL", NULL, &l, INFLLM_ERR_NULL_ARG);
#define BAD_PARAM(field, value, want)              \
    do {                                           \
        p = base_params();                         \
        p.field = value;                           \
        all_ops(#field " = " #value, &p, &l, want); \
    } while (0)
    BAD_PARAM(block_size, 0, INFLLM_ERR_PARAM);
    BAD_PARAM(block_size, -64, INFLLM_ERR_PARAM);
    BAD_PARAM(kernel_size, 0, INFLLM_ERR_PARAM);
    BAD_PARAM(kernel_size, -1, INFLLM_ERR_PARAM);
    BAD_PARAM(kernel_stride, 0, INFLLM_ERR_PARAM);
    BAD_PARAM(kernel_stride, -16, INFLLM_ERR_PARAM);
    BAD_PARAM(kernel_size, 1 << 30, INFLLM_ERR_PARAM);
    BAD_PARAM(init_blocks, -1, INFLLM_ERR_PARAM);
    BAD_PARAM(local_blocks, -1, INFLLM_ERR_PARAM);
    BAD_PARAM(topk, -1, INFLLM_ERR_PARAM);
    BAD_PARAM(dense_len, -2, INFLLM_ERR_PARAM);
    BAD_PARAM(exact_lse, 2, INFLLM_ERR_PARAM);
    BAD_PARAM(exact_lse, -1, INFLLM_ERR_PARAM);
    BAD_PARAM(window, -1, INFLLM_ERR_PARAM);
    BAD_PARAM(window, INT32_MIN, INFLLM_ERR_PARAM);
    BAD_PARAM(softmax_scale, -0.5f, INFLLM_ERR_PARAM);
    BAD_PARAM(softmax_scale, NAN, INFLLM_ERR_PARAM);
    BAD_PARAM(softmax_scale, INFINITY, INFLLM_ERR_PARAM);
    BAD_PARAM(softmax_scale, 3e38f, INFLLM_ERR_PARAM); /* scale * log2(e) overflows float32: the CPU gave all NaN */
    BAD_PARAM(mode, (infllm_mode)7, INFLLM_ERR_PARAM);
    BAD_PARAM(backend, (infllm_backend)9, INFLLM_ERR_PARAM);
    BAD_PARAM(num_threads, -1, INFLLM_ERR_PARAM);
    BAD_PARAM(num_threads, 4097, INFLLM_ERR_PARAM);
    BAD_PARAM(num_threads, INT32_MAX, INFLLM_ERR_PARAM); /* libgomp exited the process sizing its team */
#undef BAD_PARAM
    /* block_size not a multiple of kernel_stride: refused where keys are compressed; stage 2 alone (and its
     * backward) never uses the kernels and runs (test_backward checks its results against REF) */
    p = base_params();
    p.block_size = 40;
    all_ops_split("block_size 40, stride 16", &p, &l, INFLLM_ERR_PARAM, INFLLM_OK);
    p = base_params();
    p.kernel_stride = 24;
    all_ops_split("block_size 32, stride 24", &p, &l, INFLLM_ERR_PARAM, INFLLM_OK);
    /* topk + local_blocks must be >= 1 */
    p = base_params();
    p.topk = 0;
    p.local_blocks = 0;
    all_ops("topk 0 + local 0", &p, &l, INFLLM_ERR_PARAM);
    /* CUDA backend when not available */
    if (!infllm_cuda_available()) {
        p = base_params();
        p.backend = INFLLM_BACKEND_CUDA;
        all_ops("CUDA backend unavailable", &p, &l, INFLLM_ERR_UNSUPPORTED);
    } else {
        printf("SKIP CUDA-unavailable checks: a CUDA device is present\n");
    }
    /* (a sliding window on CUDA: test_cuda_window, which needs a device, runs every op under one) */
    /* valid edge values are accepted */
    p = base_params();
    p.block_size = 48; /* multiple of 16 */
    p.dense_len = -1;
    p.exact_lse = 1;
    p.softmax_scale = 0.1f;
    p.init_blocks = 0;
    p.topk = 0;
    p.num_threads = 4096;
    infllm_sizes sz;
    CHECK_OK(infllm_get_sizes(&p, &l, &sz));
}

static void test_layout(void) {
    infllm_params p = base_params();
    infllm_layout l;
    printf("layout:\n");
    all_ops("layout NULL", &p, NULL, INFLLM_ERR_NULL_ARG);
#define BAD_LAYOUT(field, value, want)               \
    do {                                             \
        l = base_layout();                           \
        l.field = value;                             \
        all_ops(#field " = " #value, &p, &l, want);  \
    } while (0)
    BAD_LAYOUT(dtype, (infllm_dtype)3, INFLLM_ERR_DTYPE);
    BAD_LAYOUT(dtype, (infllm_dtype)-1, INFLLM_ERR_DTYPE);
    BAD_LAYOUT(num_q_heads, 0, INFLLM_ERR_GQA);
    BAD_LAYOUT(num_kv_heads, 0, INFLLM_ERR_GQA);
    BAD_LAYOUT(num_q_heads, -4, INFLLM_ERR_GQA);
    BAD_LAYOUT(num_q_heads, 5, INFLLM_ERR_GQA); /* not a multiple of Hkv = 2 */
    BAD_LAYOUT(num_kv_heads, 3, INFLLM_ERR_GQA);
    BAD_LAYOUT(head_dim, 0, INFLLM_ERR_HEAD_DIM);
    BAD_LAYOUT(head_dim, -64, INFLLM_ERR_HEAD_DIM);
    BAD_LAYOUT(head_dim, 8, INFLLM_ERR_HEAD_DIM);
    BAD_LAYOUT(head_dim, 65, INFLLM_ERR_HEAD_DIM);
    BAD_LAYOUT(head_dim, 272, INFLLM_ERR_HEAD_DIM);
    BAD_LAYOUT(num_seqs, 0, INFLLM_ERR_SHAPE);
    BAD_LAYOUT(num_seqs, -1, INFLLM_ERR_SHAPE);
    BAD_LAYOUT(total_q, -1, INFLLM_ERR_SHAPE);
    BAD_LAYOUT(total_k, -5, INFLLM_ERR_SHAPE);
    BAD_LAYOUT(total_q, (int64_t)1 << 40, INFLLM_ERR_SHAPE);
    BAD_LAYOUT(total_q, TK + 1, INFLLM_ERR_SHAPE); /* one sequence with lq > lk */
    BAD_LAYOUT(num_seqs, 2, INFLLM_ERR_NULL_ARG);  /* cu_seqlens required */
    /* max_seqlen_*: optional on the host (0), but never negative nor below the longest sequence, which the CUDA
     * backend would trust (host backends once ignored any value) */
    BAD_LAYOUT(max_seqlen_q, -1, INFLLM_ERR_SHAPE);
    BAD_LAYOUT(max_seqlen_k, -1, INFLLM_ERR_SHAPE);
    BAD_LAYOUT(max_seqlen_k, TK - 1, INFLLM_ERR_SHAPE);
    BAD_LAYOUT(max_seqlen_q, 1, INFLLM_ERR_SHAPE);
    l = base_layout();
    l.max_seqlen_k = TK;
    {
        infllm_sizes msz;
        CHECK_OK(infllm_get_sizes(&p, &l, &msz));
        l.max_seqlen_k = TK + 100; /* larger than needed: accepted, the host computes its own */
        CHECK_OK(infllm_get_sizes(&p, &l, &msz));
    }
#undef BAD_LAYOUT
    static const int32_t cq_ok[3] = {0, 40, 100}, ck_ok[3] = {0, 40, 100};
    l = base_layout();
    l.cu_seqlens_q = cq_ok;
    all_ops("only cu_seqlens_q", &p, &l, INFLLM_ERR_NULL_ARG);
    l = base_layout();
    l.cu_seqlens_k = ck_ok;
    all_ops("only cu_seqlens_k", &p, &l, INFLLM_ERR_NULL_ARG);

    struct {
        const char *what;
        int32_t cq[3], ck[3];
        int32_t nseq;
    } bad[] = {
        {"cu_seqlens_q not starting at 0", {1, 40, 100}, {0, 50, 100}, 2},
        {"cu_seqlens_k not starting at 0", {0, 40, 100}, {2, 50, 100}, 2},
        {"cu_seqlens_q decreasing", {0, 60, 50}, {0, 70, 100}, 2},
        {"cu_seqlens_k decreasing", {0, 40, 100}, {0, 50, 30}, 2},
        {"cu_seqlens_q not ending at total_q", {0, 40, 90}, {0, 50, 100}, 2},
        {"cu_seqlens_k not ending at total_k", {0, 40, 100}, {0, 50, 99}, 2},
        {"cu_seqlens_q beyond total_q", {0, 40, 101}, {0, 50, 100}, 2},
        {"cu_seqlens_k beyond total_k", {0, 40, 100}, {0, 50, 120}, 2},
        {"lq > lk in sequence 0", {0, 60, 100}, {0, 50, 100}, 2},
        {"lq > lk in sequence 1", {0, 10, 100}, {0, 50, 100}, 2},
        {"one sequence, lq > lk", {0, 100, 0}, {0, 90, 0}, 1},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        l = base_layout();
        l.num_seqs = bad[i].nseq;
        l.cu_seqlens_q = bad[i].cq;
        l.cu_seqlens_k = bad[i].ck;
        if (bad[i].nseq == 1) l.total_k = 90;
        all_ops(bad[i].what, &p, &l, INFLLM_ERR_SHAPE);
    }
    /* the good batch passes validation */
    l = base_layout();
    l.num_seqs = 2;
    l.cu_seqlens_q = cq_ok;
    l.cu_seqlens_k = ck_ok;
    infllm_sizes sz;
    CHECK_OK(infllm_get_sizes(&p, &l, &sz));
    /* layouts whose tensors no buffer can hold (their element counts overflow int64 offsets): refused, not
     * run off the end of the caller's arrays (every op once accepted them) */
    l = base_layout();
    l.total_q = l.total_k = INT32_MAX;
    l.num_q_heads = 1 << 30;
    l.head_dim = 256;
    all_ops("q of 2^31 x 2^30 x 256 elements", &p, &l, INFLLM_ERR_SHAPE);
    l = base_layout();
    l.total_q = 1;
    l.total_k = INT32_MAX;
    l.num_q_heads = l.num_kv_heads = 1 << 30;
    l.head_dim = 256;
    all_ops("k of 2^31 x 2^30 x 256 elements", &p, &l, INFLLM_ERR_SHAPE);
    l = base_layout();
    l.dtype = INFLLM_DTYPE_BF16;
    l.total_q = l.total_k = INT32_MAX;
    l.num_q_heads = l.num_kv_heads = 1 << 16;
    l.head_dim = 16;
    all_ops("stage-1 scores of 2^16 x 2^31 x 2^26 floats", &p, &l, INFLLM_ERR_SHAPE);
    {   /* and a topk_idx of Hkv x total_q x topk_cols entries past the address space (the rest fits) */
        infllm_params pb = p;
        size_t bytes;
        pb.kernel_size = pb.kernel_stride = 1 << 26;
        pb.block_size = 1 << 28;
        EXPECT(infllm_sparse_attention(&pb, &l, q, k, v, topk, INT32_MAX, out, lse), INFLLM_ERR_SHAPE);
        EXPECT(infllm_sparse_attention_workspace_size(&pb, &l, INT32_MAX, &bytes), INFLLM_ERR_SHAPE);
        EXPECT(infllm_sparse_attention_backward_workspace_size(&pb, &l, INT32_MAX, &bytes), INFLLM_ERR_SHAPE);
        EXPECT(infllm_sparse_attention_backward(&pb, &l, q, k, v, topk, INT32_MAX, lse, dout, dq, dk, dv),
               INFLLM_ERR_SHAPE);
    }
    /* the largest total_k: its block count, ceil(lk / B), once overflowed int32 (lk + B - 1) */
    l = base_layout();
    l.total_q = 1;
    l.total_k = INT32_MAX;
    CHECK_OK(infllm_get_sizes(&p, &l, &sz));
    CHECK(sz.nblocks_out == (int32_t)(((int64_t)INT32_MAX + p.block_size - 1) / p.block_size),
          "nblocks_out %d for total_k 2^31-1", (int)sz.nblocks_out);
}

static void test_op_args(void) {
    infllm_params p = base_params();
    infllm_layout l = base_layout();
    infllm_sizes sz;
    printf("op arguments:\n");
    EXPECT(infllm_get_sizes(&p, &l, NULL), INFLLM_ERR_NULL_ARG);
    EXPECT(infllm_compress_keys(&p, &l, NULL, c1, c2, NULL, NULL), INFLLM_ERR_NULL_ARG);
    EXPECT(infllm_compress_keys(&p, &l, k, NULL, c2, NULL, NULL), INFLLM_ERR_NULL_ARG);
    EXPECT(infllm_compress_keys(&p, &l, k, c1, NULL, NULL, NULL), INFLLM_ERR_NULL_ARG);
    EXPECT(infllm_stage1_scores(&p, &l, NULL, c1, c2, NULL, NULL, scores), INFLLM_ERR_NULL_ARG);
    EXPECT(infllm_stage1_scores(&p, &l, q, NULL, c2, NULL, NULL, scores), INFLLM_ERR_NULL_ARG);
    EXPECT(infllm_stage1_scores(&p, &l, q, c1, NULL, NULL, NULL, scores), INFLLM_ERR_NULL_ARG);
    EXPECT(infllm_stage1_scores(&p, &l, q, c1, c2, NULL, NULL, NULL), INFLLM_ERR_NULL_ARG);
    /* wrong c1/c2 offsets */
    CHECK_OK(infllm_get_sizes(&p, &l, &sz));
    int32_t bad_cu[2] = {0, (int32_t)sz.total_n1 + 1};
    EXPECT(infllm_stage1_scores(&p, &l, q, c1, c2, bad_cu, NULL, scores), INFLLM_ERR_SHAPE);
    int32_t bad_cu2[2] = {1, (int32_t)sz.total_n2};
    EXPECT(infllm_stage1_scores(&p, &l, q, c1, c2, NULL, bad_cu2, scores), INFLLM_ERR_SHAPE);
    /* exact_lse needs no c2 */
    p.exact_lse = 1;
    CHECK_OK(infllm_stage1_scores(&p, &l, q, c1, NULL, NULL, NULL, scores));
    p.exact_lse = 0;
    EXPECT(infllm_block_scores(&p, &l, NULL, bscores), INFLLM_ERR_NULL_ARG);
    EXPECT(infllm_block_scores(&p, &l, scores, NULL), INFLLM_ERR_NULL_ARG);
    EXPECT(infllm_topk_select(&p, &l, NULL, topk), INFLLM_ERR_NULL_ARG);
    EXPECT(infllm_topk_select(&p, &l, bscores, NULL), INFLLM_ERR_NULL_ARG);
    EXPECT(infllm_sparse_attention(&p, &l, NULL, k, v, topk, 1, out, lse), INFLLM_ERR_NULL_ARG);
    EXPECT(infllm_sparse_attention(&p, &l, q, NULL, v, topk, 1, out, lse), INFLLM_ERR_NULL_ARG);
    EXPECT(infllm_sparse_attention(&p, &l, q, k, NULL, topk, 1, out, lse), INFLLM_ERR_NULL_ARG);
    EXPECT(infllm_sparse_attention(&p, &l, q, k, v, NULL, 1, out, lse), INFLLM_ERR_NULL_ARG);
    EXPECT(infllm_sparse_attention(&p, &l, q, k, v, topk, 1, NULL, lse), INFLLM_ERR_NULL_ARG);
    EXPECT(infllm_sparse_attention(&p, &l, q, k, v, topk, 0, out, lse), INFLLM_ERR_SHAPE);
    EXPECT(infllm_sparse_attention(&p, &l, q, k, v, topk, -3, out, lse), INFLLM_ERR_SHAPE);
    EXPECT(infllm_dense_attention(&p, &l, NULL, k, v, out, lse), INFLLM_ERR_NULL_ARG);
    EXPECT(infllm_dense_attention(&p, &l, q, NULL, v, out, lse), INFLLM_ERR_NULL_ARG);
    EXPECT(infllm_dense_attention(&p, &l, q, k, NULL, out, lse), INFLLM_ERR_NULL_ARG);
    EXPECT(infllm_dense_attention(&p, &l, q, k, v, NULL, lse), INFLLM_ERR_NULL_ARG);
    EXPECT(infllm_attention(&p, &l, NULL, k, v, out, lse), INFLLM_ERR_NULL_ARG);
    EXPECT(infllm_attention(&p, &l, q, NULL, v, out, lse), INFLLM_ERR_NULL_ARG);
    EXPECT(infllm_attention(&p, &l, q, k, NULL, out, lse), INFLLM_ERR_NULL_ARG);
    EXPECT(infllm_attention(&p, &l, q, k, v, NULL, lse), INFLLM_ERR_NULL_ARG);
    EXPECT(infllm_attention_workspace_size(&p, &l, NULL), INFLLM_ERR_NULL_ARG);
    EXPECT(infllm_select_blocks(&p, &l, NULL, k, topk), INFLLM_ERR_NULL_ARG);
    EXPECT(infllm_select_blocks(&p, &l, q, NULL, topk), INFLLM_ERR_NULL_ARG);
    EXPECT(infllm_select_blocks(&p, &l, q, k, NULL), INFLLM_ERR_NULL_ARG);
    {
        const void *in[5] = {q, k, v, lse, dout};
        void *outs[3] = {dq, dk, dv};
        const char *names[8] = {"q", "k", "v", "lse", "dout", "dq", "dk", "dv"};
        for (int i = 0; i < 8; i++) { /* each argument of the backward ops NULL in turn */
            const void *a[8] = {in[0], in[1], in[2], in[3], in[4], outs[0], outs[1], outs[2]};
            a[i] = NULL;
            printf("  backward with %s NULL\n", names[i]);
            EXPECT(infllm_sparse_attention_backward(&p, &l, a[0], a[1], a[2], topk, 1, (const float *)a[3], a[4],
                                                    (void *)a[5], (void *)a[6], (void *)a[7]),
                   INFLLM_ERR_NULL_ARG);
            EXPECT(infllm_dense_attention_backward(&p, &l, a[0], a[1], a[2], (const float *)a[3], a[4], (void *)a[5],
                                                   (void *)a[6], (void *)a[7]),
                   INFLLM_ERR_NULL_ARG);
        }
    }
    EXPECT(infllm_sparse_attention_backward(&p, &l, q, k, v, NULL, 1, lse, dout, dq, dk, dv), INFLLM_ERR_NULL_ARG);
    /* a gradient in an input's memory, or two gradients in one buffer (test_backward: every pair, CPU and REF) */
    EXPECT(infllm_sparse_attention_backward(&p, &l, q, k, v, topk, 1, lse, dout, q, dk, dv), INFLLM_ERR_PARAM);
    EXPECT(infllm_dense_attention_backward(&p, &l, q, k, v, lse, dout, dq, dk, dk), INFLLM_ERR_PARAM);
    EXPECT(infllm_dense_attention_backward_out(&p, &l, q, k, v, dq, lse, dout, dq, dk, dv), INFLLM_ERR_PARAM);
    EXPECT(infllm_sparse_attention_backward(&p, &l, q, k, v, topk, 0, lse, dout, dq, dk, dv), INFLLM_ERR_SHAPE);
    /* the CUDA backend has no backward, and its selection takes bf16 / f16 only (built with or without
     * CUDA; test_cuda checks the selection's other refusals on a GPU) */
    {
        infllm_params pc = p;
        pc.backend = INFLLM_BACKEND_CUDA;
        EXPECT(infllm_dense_attention_backward(&pc, &l, q, k, v, lse, dout, dq, dk, dv), INFLLM_ERR_UNSUPPORTED);
        EXPECT(infllm_select_blocks(&pc, &l, q, k, topk), INFLLM_ERR_UNSUPPORTED);
    }
    size_t bytes = 123;
    CHECK_OK(infllm_attention_workspace_size(&p, &l, &bytes));
    CHECK(bytes == 0, "workspace bytes on a host backend: %zu", bytes);
    bytes = 123;
    CHECK_OK(infllm_select_blocks_workspace_size(&p, &l, &bytes));
    CHECK(bytes == 0, "select_blocks workspace bytes on a host backend: %zu", bytes);
    EXPECT(infllm_select_blocks_workspace_size(&p, &l, NULL), INFLLM_ERR_NULL_ARG);
    EXPECT(infllm_select_blocks_workspace_size(&p, NULL, &bytes), INFLLM_ERR_NULL_ARG);
    bytes = 123;
    CHECK_OK(infllm_sparse_attention_workspace_size(&p, &l, 4, &bytes));
    CHECK(bytes == 0, "sparse attention workspace bytes on a host backend: %zu", bytes);
    bytes = 123;
    CHECK_OK(infllm_dense_attention_workspace_size(&p, &l, &bytes));
    CHECK(bytes == 0, "dense attention workspace bytes on a host backend: %zu", bytes);
    EXPECT(infllm_sparse_attention_workspace_size(&p, &l, 0, &bytes), INFLLM_ERR_SHAPE);
    EXPECT(infllm_sparse_attention_workspace_size(&p, &l, 1, NULL), INFLLM_ERR_NULL_ARG);
    EXPECT(infllm_dense_attention_workspace_size(&p, NULL, &bytes), INFLLM_ERR_NULL_ARG);
    EXPECT(infllm_dense_attention_workspace_size(&p, &l, NULL), INFLLM_ERR_NULL_ARG);
    bytes = 123;
    CHECK_OK(infllm_sparse_attention_backward_workspace_size(&p, &l, 4, &bytes));
    CHECK(bytes == 0, "sparse backward workspace bytes on a host backend: %zu", bytes);
    bytes = 123;
    CHECK_OK(infllm_dense_attention_backward_workspace_size(&p, &l, &bytes));
    CHECK(bytes == 0, "dense backward workspace bytes on a host backend: %zu", bytes);
    EXPECT(infllm_sparse_attention_backward_workspace_size(&p, &l, 0, &bytes), INFLLM_ERR_SHAPE);
    EXPECT(infllm_sparse_attention_backward_workspace_size(&p, &l, 1, NULL), INFLLM_ERR_NULL_ARG);
    EXPECT(infllm_dense_attention_backward_workspace_size(&p, NULL, &bytes), INFLLM_ERR_NULL_ARG);
    EXPECT(infllm_dense_attention_backward_workspace_size(&p, &l, NULL), INFLLM_ERR_NULL_ARG);
    /* lse NULL is allowed */
    CHECK_OK(infllm_dense_attention(&p, &l, q, k, v, out, NULL));
}

/* Calls without a query (total_q 0: one sequence of 0 queries, and a batch of three) do nothing and
 * succeed on the host backends, every op and both workspace queries, in every mode (the CUDA backend
 * once divided by its empty grid there: test_cuda's noq cases) */
static void test_empty_calls(void) {
    printf("calls without a query:\n");
    static const int32_t cuq[4] = {0, 0, 0, 0}, cuk[4] = {0, 30, 70, TK};
    for (int be = 0; be < 2; be++)
        for (int nseq = 1; nseq <= 3; nseq += 2)
            for (int mode = 0; mode < 3; mode++) {
                infllm_params p = base_params();
                p.backend = be ? INFLLM_BACKEND_CPU : INFLLM_BACKEND_REF;
                p.mode = (infllm_mode)mode;
                p.dense_len = 50;
                infllm_layout l = base_layout();
                l.total_q = 0;
                if (nseq > 1) {
                    l.num_seqs = nseq;
                    l.cu_seqlens_q = cuq;
                    l.cu_seqlens_k = cuk;
                }
                infllm_sizes sz;
                size_t bytes = 1;
                char what[64];
                snprintf(what, sizeof what, "%s, %d sequence(s), mode %d", be ? "cpu" : "ref", nseq, mode);
                all_ops(what, &p, &l, INFLLM_OK);
                CHECK_OK(infllm_get_sizes(&p, &l, &sz));
                CHECK(sz.topk_out >= 0, "topk_out %d", (int)sz.topk_out);
                CHECK_OK(infllm_attention_workspace_size(&p, &l, &bytes));
                CHECK(bytes == 0, "workspace bytes on a host backend: %zu", bytes);
            }
}

/* A batch without keys (every sequence empty): infllm_get_sizes gives topk_out 0, and a training step's calls
 * with it (infllm_select_blocks, then the sparse forward and backward on topk_out columns) succeed; they once
 * refused the 0 columns ("topk_cols must be >= 1") though no row would read one. Columns stay >= 1 wherever
 * there is a query (test_op_args), and a negative count is refused here too. */
static void test_keyless_batch(void) {
    printf("a batch without keys, topk_out columns:\n");
    static const int32_t cu0[4] = {0, 0, 0, 0};
    for (int be = 0; be < 2; be++)
        for (int nseq = 1; nseq <= 3; nseq += 2) {
            infllm_params p = base_params();
            p.backend = be ? INFLLM_BACKEND_CPU : INFLLM_BACKEND_REF;
            p.mode = INFLLM_MODE_SPARSE;
            infllm_layout l = base_layout();
            l.total_q = l.total_k = 0;
            if (nseq > 1) {
                l.num_seqs = nseq;
                l.cu_seqlens_q = cu0;
                l.cu_seqlens_k = cu0;
            }
            infllm_sizes sz;
            size_t bytes = 1;
            CHECK_OK(infllm_get_sizes(&p, &l, &sz));
            CHECK(sz.topk_out == 0, "topk_out %d of a batch without keys", (int)sz.topk_out);
            CHECK_OK(infllm_select_blocks(&p, &l, q, k, topk));
            CHECK_OK(infllm_sparse_attention(&p, &l, q, k, v, topk, sz.topk_out, out, lse));
            CHECK_OK(infllm_sparse_attention_backward(&p, &l, q, k, v, topk, sz.topk_out, lse, dout, dq, dk, dv));
            CHECK_OK(infllm_sparse_attention_workspace_size(&p, &l, sz.topk_out, &bytes));
            CHECK(bytes == 0, "workspace bytes on a host backend: %zu", bytes);
            EXPECT(infllm_sparse_attention(&p, &l, q, k, v, topk, -1, out, lse), INFLLM_ERR_SHAPE);
            EXPECT(infllm_sparse_attention_backward(&p, &l, q, k, v, topk, -1, lse, dout, dq, dk, dv),
                   INFLLM_ERR_SHAPE);
        }
}

static void test_cache_errors(void) {
    infllm_params p = base_params();
    infllm_cache *c = (infllm_cache *)&p; /* must be overwritten with NULL on failure */
    printf("cache:\n");
    EXPECT(infllm_cache_create(&p, INFLLM_DTYPE_F32, HKV, D, 64, NULL), INFLLM_ERR_NULL_ARG);
    EXPECT(infllm_cache_create(NULL, INFLLM_DTYPE_F32, HKV, D, 64, &c), INFLLM_ERR_NULL_ARG);
    CHECK(c == NULL, "cache_create failure leaves *out NULL");
    EXPECT(infllm_cache_create(&p, INFLLM_DTYPE_F32, HKV, D, 0, &c), INFLLM_ERR_SHAPE);
    EXPECT(infllm_cache_create(&p, INFLLM_DTYPE_F32, HKV, D, -5, &c), INFLLM_ERR_SHAPE);
    EXPECT(infllm_cache_create(&p, INFLLM_DTYPE_F32, HKV, D, (int64_t)1 << 40, &c), INFLLM_ERR_SHAPE);
    /* byte counts that would overflow size_t: refused before any allocation */
    EXPECT(infllm_cache_create(&p, INFLLM_DTYPE_BF16, 2000000000, 256, 2000000000, &c), INFLLM_ERR_NOMEM);
    CHECK(c == NULL, "oversized cache_create leaves *out NULL");
    EXPECT(infllm_cache_create(&p, (infllm_dtype)5, HKV, D, 64, &c), INFLLM_ERR_DTYPE);
    EXPECT(infllm_cache_create(&p, INFLLM_DTYPE_F32, 0, D, 64, &c), INFLLM_ERR_GQA);
    EXPECT(infllm_cache_create(&p, INFLLM_DTYPE_F32, HKV, 12, 64, &c), INFLLM_ERR_HEAD_DIM);
    infllm_params bp = p;
    bp.block_size = 40;
    EXPECT(infllm_cache_create(&bp, INFLLM_DTYPE_F32, HKV, D, 64, &c), INFLLM_ERR_PARAM);
    bp = p;
    bp.backend = INFLLM_BACKEND_CUDA;
    EXPECT(infllm_cache_create(&bp, INFLLM_DTYPE_F32, HKV, D, 64, &c), INFLLM_ERR_UNSUPPORTED);
    CHECK(c == NULL, "cache_create failure leaves *out NULL");

    c = NULL;
    CHECK_OK(infllm_cache_create(&p, INFLLM_DTYPE_F32, HKV, D, 64, &c));
    if (!c) return;
    EXPECT(infllm_cache_append(NULL, k, v, 1), INFLLM_ERR_NULL_ARG);
    EXPECT(infllm_cache_append(c, NULL, v, 1), INFLLM_ERR_NULL_ARG);
    EXPECT(infllm_cache_append(c, k, NULL, 1), INFLLM_ERR_NULL_ARG);
    EXPECT(infllm_cache_append(c, k, v, -1), INFLLM_ERR_SHAPE);
    CHECK_OK(infllm_cache_append(c, k, v, 0));
    CHECK_OK(infllm_cache_append(c, k, v, 40));
    EXPECT(infllm_cache_append(c, k, v, 25), INFLLM_ERR_CAPACITY);
    EXPECT(infllm_cache_append(c, k, v, INT64_MAX), INFLLM_ERR_CAPACITY); /* no overflow */
    EXPECT(infllm_cache_attend(c, &p, q, INT64_MAX, HQ, out, lse), INFLLM_ERR_SHAPE);
    CHECK(infllm_cache_length(c) == 40, "failed append changed the length to %lld", (long long)infllm_cache_length(c));
    EXPECT(infllm_cache_attend(NULL, &p, q, 1, HQ, out, lse), INFLLM_ERR_NULL_ARG);
    EXPECT(infllm_cache_attend(c, NULL, q, 1, HQ, out, lse), INFLLM_ERR_NULL_ARG);
    EXPECT(infllm_cache_attend(c, &p, NULL, 1, HQ, out, lse), INFLLM_ERR_NULL_ARG);
    EXPECT(infllm_cache_attend(c, &p, q, 1, HQ, NULL, lse), INFLLM_ERR_NULL_ARG);
    EXPECT(infllm_cache_attend(c, &p, q, 41, HQ, out, lse), INFLLM_ERR_SHAPE);
    EXPECT(infllm_cache_attend(c, &p, q, -1, HQ, out, lse), INFLLM_ERR_SHAPE);
    EXPECT(infllm_cache_attend(c, &p, q, 1, 3, out, lse), INFLLM_ERR_GQA);
    EXPECT(infllm_cache_attend(c, &p, q, 1, 0, out, lse), INFLLM_ERR_GQA);
    bp = p;
    bp.block_size = 64;
    EXPECT(infllm_cache_attend(c, &bp, q, 1, HQ, out, lse), INFLLM_ERR_PARAM);
    bp = p;
    bp.kernel_size = 16;
    EXPECT(infllm_cache_attend(c, &bp, q, 1, HQ, out, lse), INFLLM_ERR_PARAM);
    bp = p;
    bp.kernel_stride = 8;
    EXPECT(infllm_cache_attend(c, &bp, q, 1, HQ, out, lse), INFLLM_ERR_PARAM);
    bp = p;
    bp.backend = INFLLM_BACKEND_CPU;
    EXPECT(infllm_cache_attend(c, &bp, q, 1, HQ, out, lse), INFLLM_ERR_PARAM);
    bp = p;
    bp.topk = -1;
    EXPECT(infllm_cache_attend(c, &bp, q, 1, HQ, out, lse), INFLLM_ERR_PARAM);
    bp = p;
    bp.softmax_scale = -1;
    EXPECT(infllm_cache_attend(c, &bp, q, 1, HQ, out, lse), INFLLM_ERR_PARAM);
    {   /* the workspace query validates like the attend: it must not size another geometry */
        size_t wb = 1;
        EXPECT(infllm_cache_workspace_size(c, &p, 1, HQ, NULL), INFLLM_ERR_NULL_ARG);
        EXPECT(infllm_cache_workspace_size(NULL, &p, 1, HQ, &wb), INFLLM_ERR_NULL_ARG);
        EXPECT(infllm_cache_workspace_size(c, NULL, 1, HQ, &wb), INFLLM_ERR_NULL_ARG);
        EXPECT(infllm_cache_workspace_size(c, &p, 0, HQ, &wb), INFLLM_ERR_SHAPE);
        EXPECT(infllm_cache_workspace_size(c, &p, 65, HQ, &wb), INFLLM_ERR_SHAPE);
        EXPECT(infllm_cache_workspace_size(c, &p, 1, 3, &wb), INFLLM_ERR_GQA);
        bp = p;
        bp.block_size = 64;
        EXPECT(infllm_cache_workspace_size(c, &bp, 1, HQ, &wb), INFLLM_ERR_PARAM);
        bp = p;
        bp.kernel_stride = 8;
        EXPECT(infllm_cache_workspace_size(c, &bp, 1, HQ, &wb), INFLLM_ERR_PARAM);
        bp = p;
        bp.backend = INFLLM_BACKEND_CPU;
        EXPECT(infllm_cache_workspace_size(c, &bp, 1, HQ, &wb), INFLLM_ERR_PARAM);
        CHECK_OK(infllm_cache_workspace_size(c, &p, 1, HQ, &wb));
        CHECK(wb == 0, "CPU cache attend needs no caller workspace, got %zu bytes", wb);
    }
    CHECK_OK(infllm_cache_attend(c, &p, q, 0, HQ, out, lse)); /* n = 0: nothing to do */
    CHECK_OK(infllm_cache_attend(c, &p, NULL, 0, HQ, NULL, NULL));
    /* ... but still a validated call (n = 0 once returned ok before looking at the heads or params) */
    EXPECT(infllm_cache_attend(c, &p, q, 0, 3, out, lse), INFLLM_ERR_GQA);
    EXPECT(infllm_cache_attend(c, &p, q, 0, INT32_MIN, out, lse), INFLLM_ERR_GQA);
    bp = p;
    bp.topk = -1;
    EXPECT(infllm_cache_attend(c, &bp, q, 0, HQ, out, lse), INFLLM_ERR_PARAM);
    bp = p;
    bp.block_size = 64;
    EXPECT(infllm_cache_attend(c, &bp, q, 0, HQ, out, lse), INFLLM_ERR_PARAM);
    CHECK_OK(infllm_cache_attend(c, &p, q, 2, HQ, out, lse));
    EXPECT(infllm_cache_truncate(NULL, 0), INFLLM_ERR_NULL_ARG);
    EXPECT(infllm_cache_truncate(c, 41), INFLLM_ERR_SHAPE);
    EXPECT(infllm_cache_truncate(c, -1), INFLLM_ERR_SHAPE);
    CHECK(infllm_cache_length(c) == 40, "failed truncate changed the length");
    CHECK_OK(infllm_cache_truncate(c, 10));
    CHECK(infllm_cache_length(c) == 10, "truncate to 10");
    infllm_cache_free(c);
    /* NULL-safe accessors */
    infllm_cache_free(NULL);
    int64_t n = 99;
    CHECK(infllm_cache_length(NULL) == 0 && infllm_cache_capacity(NULL) == 0 && infllm_cache_memory_bytes(NULL) == 0,
          "NULL cache getters");
    CHECK(infllm_cache_keys(NULL) == NULL && infllm_cache_values(NULL) == NULL, "NULL cache views");
    CHECK(infllm_cache_c1(NULL, &n) == NULL && n == 0, "NULL cache c1");
    n = 99;
    CHECK(infllm_cache_c2(NULL, &n) == NULL && n == 0, "NULL cache c2");
}

static void test_misc(void) {
    printf("misc:\n");
    for (int s = 0; s <= 13; s++) {
        const char *str = infllm_status_str((infllm_status)s);
        CHECK(str && str[0], "status %d has a name", s);
    }
    CHECK(infllm_status_str((infllm_status)99) != NULL, "unknown status has a name");
    CHECK(strcmp(infllm_status_str(INFLLM_OK), "ok") == 0, "ok");
    CHECK(infllm_dtype_name((infllm_dtype)9) != NULL, "invalid dtype name");
    infllm_params_default(NULL); /* no crash */
    CHECK(infllm_params_topk_total(NULL) == 0, "topk_total(NULL)");
    infllm_params p;
    infllm_params_default(&p);
    CHECK(infllm_params_topk_total(&p) == 96, "default topk_total %d", infllm_params_topk_total(&p));
    {   /* fields at their extremes: saturated, not a signed overflow */
        infllm_params e = p;
        e.topk = INT32_MAX;
        e.local_blocks = INT32_MAX;
        CHECK(infllm_params_topk_total(&e) == INT32_MAX, "topk_total of INT32_MAX + INT32_MAX: %d",
              infllm_params_topk_total(&e));
        e.topk = INT32_MIN;
        e.local_blocks = -1;
        CHECK(infllm_params_topk_total(&e) == INT32_MIN, "topk_total of INT32_MIN - 1: %d", infllm_params_topk_total(&e));
    }
    CHECK(p.block_size == 64 && p.kernel_size == 32 && p.kernel_stride == 16 && p.init_blocks == 1 &&
              p.local_blocks == 32 && p.topk == 64 && p.dense_len == 8192 && p.exact_lse == 0 && p.window == 0 &&
              p.softmax_scale == 0.0f && p.mode == INFLLM_MODE_AUTO,
          "MiniCPM4.1 defaults");
    CHECK(strcmp(infllm_version(), INFLLM_VERSION_STRING) == 0, "version");
    CHECK(infllm_build_commit() != NULL, "build commit");
    CHECK(infllm_cuda_available() == 0 || infllm_cuda_built() == 1, "cuda available implies built");
    char info[256];
    memset(info, 'x', sizeof info);
    const int usable = infllm_cuda_device_info(info, sizeof info);
    CHECK(usable == infllm_cuda_available(), "device info's answer %d, cuda available %d", usable, infllm_cuda_available());
    CHECK(info[0] != 0 && memchr(info, 0, sizeof info) != NULL, "device info: a terminated line");
    char tiny[8];
    infllm_cuda_device_info(tiny, sizeof tiny);
    CHECK(memchr(tiny, 0, sizeof tiny) != NULL, "device info truncated to its buffer");
    CHECK(infllm_cuda_device_info(NULL, 16) == 0 && infllm_cuda_device_info(info, 0) == 0, "device info: no buffer");
    printf("cuda device: %s\n", info);
}

int main(void) {
    test_params();
    test_layout();
    test_op_args();
    test_empty_calls();
    test_keyless_batch();
    test_cache_errors();
    test_misc();
    return finish("test_errors");
}
