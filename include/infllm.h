/*
 * infllm.h: InfLLM-V2 dense-sparse switchable attention, public C API.
 *
 * Conventions (read once, they hold for every function below):
 *  - Tensors are token-major and contiguous, packed as FlashAttention's varlen layout:
 *      q   [total_q, Hq,  D]     k, v [total_k, Hkv, D]     out [total_q, Hq, D]
 *    Sequence b owns query rows cu_seqlens_q[b] .. cu_seqlens_q[b+1]-1 and key rows
 *    cu_seqlens_k[b] .. cu_seqlens_k[b+1]-1. Its Lq queries are the LAST Lq of its Lk
 *    positions (bottom-right alignment): query i sits at position Lk - Lq + i. So a fresh
 *    prefill has Lq == Lk, a decode step Lq == 1, a chunked prefill 1 < Lq < Lk.
 *  - Query head h uses KV head h / (Hq / Hkv) (contiguous GQA groups, any group size).
 *  - Storage dtype f32, f16 or bf16 (raw 16-bit patterns); arithmetic accumulates in f32
 *    (f64 in the reference backend). The LSE output is fp32 natural log, [total_q, Hq].
 *  - Pointers are host memory for the CPU and REF backends and device memory for CUDA
 *    (cu_seqlens included). The caller allocates every input and output; the library
 *    never keeps a pointer after a call returns, except inside an infllm_cache.
 *    CUDA: 16-bit tensors (q, k, v, out, c1, c2 of the attention and stage-1 calls) must be
 *    16-byte aligned and float / int32 arrays 4-byte aligned (cudaMalloc's and PyTorch's
 *    allocations and their row offsets are), else INFLLM_ERR_UNSUPPORTED naming the argument;
 *    infllm_compress_keys (k, c1, c2) and infllm_cache_append (k, v) take any 2-byte alignment.
 *    Every pointer, cu_seqlens and the workspace too, must be memory the GPU reads (cudaMalloc,
 *    cudaMallocManaged, mapped pinned host memory; plain host memory only on devices that read
 *    pageable memory) and not another GPU's cudaMalloc memory (the call runs on the current
 *    device; peer access is not assumed), else INFLLM_ERR_UNSUPPORTED naming it, before any
 *    kernel runs. A decode cache stays on the device that was current at its creation.
 *  - Every function validates its arguments and returns INFLLM_OK or a specific status;
 *    infllm_last_error() then holds a one-line message naming the problem (thread-local).
 *    On error, outputs may be partially written; inputs are never modified. Nothing in the
 *    library exits or aborts.
 */
#ifndef INFLLM_H
#define INFLLM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define INFLLM_VERSION_MAJOR 0
#define INFLLM_VERSION_MINOR 1
#define INFLLM_VERSION_PATCH 0
#define INFLLM_VERSION_STRING "0.1.0"

/* ---------------------------------------------------------------- status ---- */
typedef enum infllm_status {
    INFLLM_OK = 0,
    INFLLM_ERR_NULL_ARG = 1,      /* a required pointer is NULL */
    INFLLM_ERR_SHAPE = 2,         /* sizes disagree (cu_seqlens, totals, heads, ...) */
    INFLLM_ERR_GQA = 3,           /* Hq is not a positive multiple of Hkv */
    INFLLM_ERR_DTYPE = 4,         /* unsupported storage dtype */
    INFLLM_ERR_HEAD_DIM = 5,      /* unsupported head_dim */
    INFLLM_ERR_PARAM = 6,         /* a sparse-attention parameter is out of range */
    INFLLM_ERR_CAPACITY = 7,      /* decode cache capacity exceeded */
    INFLLM_ERR_NOMEM = 8,         /* allocation failed */
    INFLLM_ERR_UNSUPPORTED = 9,   /* backend not built / not available / op not supported */
    INFLLM_ERR_CUDA = 10,         /* a CUDA runtime call failed */
    INFLLM_ERR_IO = 11,           /* file I/O (tools, model loading) */
    INFLLM_ERR_FORMAT = 12,       /* malformed file contents (tools, model loading) */
    INFLLM_ERR_WORKSPACE = 13     /* caller-provided workspace too small or not 16-byte aligned */
} infllm_status;

/* Static English name of a status ("ok", "shape mismatch", ...). Never NULL. */
const char *infllm_status_str(infllm_status s);
/* The message of the last failed call on this thread ("" if none). Valid until the next
 * failing call on this thread. */
const char *infllm_last_error(void);

/* ----------------------------------------------------------------- enums ---- */
typedef enum infllm_dtype {
    INFLLM_DTYPE_F32 = 0,
    INFLLM_DTYPE_F16 = 1,
    INFLLM_DTYPE_BF16 = 2
} infllm_dtype;

typedef enum infllm_backend {
    INFLLM_BACKEND_CPU = 0,   /* the fast CPU path (SIMD + threads) */
    INFLLM_BACKEND_REF = 1,   /* the float64 reference: slow, O(T^2) memory, the executable spec */
    INFLLM_BACKEND_CUDA = 2   /* NVIDIA GPUs; INFLLM_ERR_UNSUPPORTED when not built or no GPU */
} infllm_backend;

typedef enum infllm_mode {
    INFLLM_MODE_AUTO = 0,     /* per sequence: kv_len < dense_len -> dense, else sparse (SPEC A.8) */
    INFLLM_MODE_DENSE = 1,
    INFLLM_MODE_SPARSE = 2
} infllm_mode;

/* Size in bytes of one element of dtype (0 for an invalid dtype). */
size_t infllm_dtype_size(infllm_dtype dt);
const char *infllm_dtype_name(infllm_dtype dt);

/* ---------------------------------------------------------------- params ---- */
/* The most CPU threads a call takes (infllm_params.num_threads). */
#define INFLLM_MAX_THREADS 4096

/* Every InfLLM-V2 parameter (SPEC A.4). infllm_params_default() fills the MiniCPM4.1 values. */
typedef struct infllm_params {
    int32_t block_size;      /* B: stage-2 block, tokens (64). Multiple of kernel_stride, except for
                                infllm_sparse/dense_attention and their backward (no compression). */
    int32_t kernel_size;     /* l1: c1 window (32). c2 uses 4*kernel_size. */
    int32_t kernel_stride;   /* s1: c1 stride (16). c2 uses 4*kernel_stride. */
    int32_t init_blocks;     /* forced leading blocks (1) */
    int32_t local_blocks;    /* forced blocks before the current one (32) */
    int32_t topk;            /* dynamic blocks; a query selects topk + local_blocks in all (64) */
    int32_t dense_len;       /* AUTO mode: dense while kv_len < dense_len (8192); -1: always sparse */
    int32_t exact_lse;       /* 1: stage-1 LSE over c1 itself (no c2 approximation) (0) */
    int32_t window;          /* sliding key window (0: none): a query at position p attends only the keys j with
                                p - window < j <= p (Mistral's and Phi-3's sliding_window, transformers' rule), in
                                dense attention, stage 2 and their backward; and the top-k takes no block wholly
                                before that range (b*B + B <= p - window + 1), so that a window spanning at most
                                topk + local_blocks blocks makes the sparse result the dense one. Compression, stage 1
                                and the block scores do not depend on it. >= 0. Every backend and op takes it (CUDA
                                runs a window spanning at most topk + local_blocks blocks, where every sparse row
                                selects all blocks it reaches, as the windowed dense call) */
    float softmax_scale;     /* 0: 1/sqrt(head_dim); finite, >= 0 and at most ~2.36e38 (FLT_MAX / log2(e)).
                                The CPU and CUDA backends score in float32: scale x |q.k| must stay well
                                inside float's range (an overflowed score is inf, its row NaN; REF, in
                                float64, does not overflow), and the CPU backward's recomputed softmax
                                loses its row normalisation once scale x |q.k| passes ~1e9 (its lse is
                                float32) */
    infllm_mode mode;        /* AUTO */
    infllm_backend backend;  /* CPU */
    int32_t num_threads;     /* CPU backend: 0 = all cores; at most INFLLM_MAX_THREADS (4096). In a process
                                forked after a CPU call ran on several threads (a server's or data
                                loader's workers), calls run on one thread: GCC's OpenMP pool does not survive fork
                                (results do not depend on the thread count) */
    /* CUDA backend only: stream (a cudaStream_t), and caller-provided workspace of at least
     * infllm_attention_workspace_size() bytes for infllm_attention (for infllm_select_blocks,
     * infllm_sparse_attention and infllm_dense_attention: the size function of that name), 16-byte
     * aligned (as
     * cudaMalloc's and PyTorch's allocations are; NULL: the library allocates per call, which is
     * not allowed under CUDA graph capture). */
    void *cuda_stream;
    void *workspace;
    size_t workspace_bytes;
} infllm_params;

void infllm_params_default(infllm_params *p);
/* Total blocks a query selects: topk + local_blocks (96 by default), saturated to the int32 range. */
int32_t infllm_params_topk_total(const infllm_params *p);

/* ---------------------------------------------------------------- layout ---- */
/* Shapes of one call. cu_seqlens_* may be NULL when num_seqs == 1 (one sequence of
 * total_q queries and total_k keys). max_seqlen_* are required (> 0, or 0 when total_q /
 * total_k is 0) for the CUDA backend when cu_seqlens are given (the device arrays cannot be
 * read without a sync); on the host backends 0 means "compute them", and a value given (> 0) must be at least
 * the longest sequence's, as CUDA trusts it (else INFLLM_ERR_SHAPE). A layout whose tensors could not be
 * addressed (q, k or the float32 stage-1 / block scores [Hkv, total_q, max_n1 / nblocks_out] past PTRDIFF_MAX
 * bytes; topk_idx [Hkv, total_q, topk_cols] likewise) is refused with INFLLM_ERR_SHAPE. The CUDA backend takes
 * at most 65535 sequences a call (a grid dimension's limit; INFLLM_ERR_UNSUPPORTED above: split the batch). */
typedef struct infllm_layout {
    infllm_dtype dtype;
    int32_t num_seqs;
    const int32_t *cu_seqlens_q;   /* [num_seqs+1] */
    const int32_t *cu_seqlens_k;   /* [num_seqs+1] */
    int64_t total_q;
    int64_t total_k;
    int32_t num_q_heads;           /* Hq */
    int32_t num_kv_heads;          /* Hkv; Hq % Hkv == 0 */
    int32_t head_dim;              /* D: a multiple of 16 from 16 to 256 (CUDA: 64 or 128) */
    int32_t max_seqlen_q;
    int32_t max_seqlen_k;
} infllm_layout;

/* Sizes derived from params and layout, for allocating the per-stage outputs. */
typedef struct infllm_sizes {
    int64_t total_n1;        /* c1 rows over all sequences */
    int64_t total_n2;        /* c2 rows (0 in exact_lse mode is still the c2 count; c2 is just unused) */
    int32_t max_n1;          /* stage-1 score columns: max over sequences of n1 */
    int32_t nblocks_out;     /* block-score columns: max over sequences of ceil(Lk/B) */
    int32_t topk_out;        /* top-k columns: min(topk_total, nblocks_out) */
} infllm_sizes;

/* Host backends only (reads cu_seqlens). */
infllm_status infllm_get_sizes(const infllm_params *p, const infllm_layout *l, infllm_sizes *out);

/* ------------------------------------------------------------ stage ops ---- */
/* Key compression (SPEC B §4): c1 = mean of k over windows [s1*j, s1*j+l1), c2 likewise with
 * (4*l1, 4*s1); complete windows only; f32 accumulation, stored in the layout dtype.
 *   k      [total_k, Hkv, D]
 *   c1     [total_n1, Hkv, D]      c2 [total_n2, Hkv, D]
 *   cu_seqlens_c1, cu_seqlens_c2: [num_seqs+1] int32 row offsets, written (may be NULL; on CUDA a NULL one
 *   costs a small stream-ordered allocation per call, so pass both where nothing may allocate: graph capture). */
infllm_status infllm_compress_keys(const infllm_params *p, const infllm_layout *l,
                                   const void *k, void *c1, void *c2,
                                   int32_t *cu_seqlens_c1, int32_t *cu_seqlens_c2);

/* Stage-1 kernel scores (SPEC B §5, clean causal rule A.2): for query row t and KV head g,
 *   scores[g][t][j] = sum over the group's query heads h of exp(s*q_h.c1_j - LSE_h),
 * LSE_h over the visible c2 kernels (visible c1 kernels with exact_lse). A kernel is visible
 * iff its last covered position <= the query's position. 0 for invisible j, j >= n1 of the
 * sequence, and rows with no visible LSE kernel. Rounded to bf16 when dtype is bf16 (A.3). A NaN
 * (from NaN inputs) is written as 0, as the official kernels' wrapper does.
 *   q [total_q, Hq, D]; c1, c2 and their cu_seqlens as written by infllm_compress_keys
 *   (c2 / cu_seqlens_c2 may be NULL with exact_lse; NULL offsets of several sequences are recomputed,
 *   on CUDA in a small stream-ordered allocation per call)
 *   scores [Hkv, total_q, max_n1] float32 */
infllm_status infllm_stage1_scores(const infllm_params *p, const infllm_layout *l,
                                   const void *q, const void *c1, const void *c2,
                                   const int32_t *cu_seqlens_c1, const int32_t *cu_seqlens_c2,
                                   float *scores);

/* Block scores (SPEC B §6, A.4): +inf for forced blocks (b < init_blocks, or
 * q_block - local_blocks <= b <= q_block), otherwise the max of the stage-1 scores of the c1
 * kernels overlapping block b (clipped to [0, n1)), -inf when that range is empty (a NaN score never
 * wins the max), FLT_MAX where that max is +inf (a stage-1 sum past the float range), so that the forced
 * blocks rank above every other.
 *   scores [Hkv, total_q, max_n1] -> block_scores [Hkv, total_q, nblocks_out] float32 */
infllm_status infllm_block_scores(const infllm_params *p, const infllm_layout *l,
                                  const float *scores, float *block_scores);

/* Top-k (SPEC B §7, A.3): the topk_out largest block scores of each row (score desc, NaN below
 * every other score, then block index asc), sorted ascending, entries > q_block replaced by -1
 * (so -1 padding is at the end). Blocks past the row's own sequence are never selected.
 *   block_scores [Hkv, total_q, nblocks_out] -> topk_idx [Hkv, total_q, topk_out] int32 */
infllm_status infllm_topk_select(const infllm_params *p, const infllm_layout *l,
                                 const float *block_scores, int32_t *topk_idx);

/* Stage 2, block-sparse attention (SPEC B §9): query t, head h attends the keys j <= its
 * position whose block j / B is a non-negative entry of topk_idx[h / G][t].
 *   topk_idx [Hkv, total_q, topk_cols] (topk_cols >= 1, or 0 when total_q is 0: the topk_out of a batch
 *   without keys; -1 entries ignored)
 *   out [total_q, Hq, D] (layout dtype), lse [total_q, Hq] float32 or NULL.
 * A row with no key (cannot happen with a forced current block) gets out = 0, lse = -inf. */
infllm_status infllm_sparse_attention(const infllm_params *p, const infllm_layout *l,
                                      const void *q, const void *k, const void *v,
                                      const int32_t *topk_idx, int32_t topk_cols,
                                      void *out, float *lse);

/* Dense causal attention (bottom-right aligned). out [total_q, Hq, D], lse [total_q, Hq] or NULL. */
infllm_status infllm_dense_attention(const infllm_params *p, const infllm_layout *l,
                                     const void *q, const void *k, const void *v,
                                     void *out, float *lse);

/* Workspace bytes infllm_sparse_attention (with this topk_cols) and infllm_dense_attention need on the
 * CUDA backend for this layout (0 elsewhere; 0 also where the launch neither splits the keys nor groups the
 * tokens), from the totals and max_seqlen_* only. With p->workspace of that size the call allocates nothing,
 * so a training step's forward (infllm_select_blocks, then infllm_sparse_attention) can be captured into a
 * CUDA graph; NULL: the call allocates stream-ordered scratch (if that fails it runs unsplit and ungrouped:
 * slower, and equal up to rounding). */
infllm_status infllm_sparse_attention_workspace_size(const infllm_params *p, const infllm_layout *l,
                                                     int32_t topk_cols, size_t *bytes);
infllm_status infllm_dense_attention_workspace_size(const infllm_params *p, const infllm_layout *l,
                                                    size_t *bytes);

/* The blocks the sparse path selects, for every query (SPEC B §4-7: compression, stage 1, block
 * scores and top-k, fused on the CPU backend so that working memory stays linear in T; p->mode and
 * dense_len are not applied: each sequence is treated as sparse). A query with at most topk_out
 * causal blocks selects all of them. With the same inputs these are the blocks infllm_attention's
 * sparse path attends, so infllm_sparse_attention on them gives its result (and its lse) and
 * infllm_sparse_attention_backward its gradients: a training step's forward and backward.
 *   topk_idx [Hkv, total_q, topk_out] int32 (infllm_get_sizes), ascending, -1 padded.
 * CUDA (bf16 / f16, head_dim 64 / 128): device pointers, on p->cuda_stream, no host synchronisation;
 * the same sets as the CPU backend's but for near-ties that another summation order rounds the other
 * way (the tests require >= 99% of rows identical to REF's; at 128K the two GPU selection kernels
 * disagree on 1 to 16 rows in 262,144). Workspace as
 * for infllm_attention: p->workspace of infllm_select_blocks_workspace_size bytes, or NULL to let
 * the call allocate (not under graph capture). */
infllm_status infllm_select_blocks(const infllm_params *p, const infllm_layout *l,
                                   const void *q, const void *k, int32_t *topk_idx);
/* Workspace bytes infllm_select_blocks needs on the CUDA backend for this layout (0 elsewhere). */
infllm_status infllm_select_blocks_workspace_size(const infllm_params *p, const infllm_layout *l,
                                                  size_t *bytes);

/* Backward of stage 2 (SPEC B §9.3, A.1): the gradients of the block-sparse attention with the
 * selection held fixed (no gradient flows through selection or compression). Given the forward's
 * inputs, its topk_idx and its lse (natural log, as infllm_sparse_attention / infllm_attention
 * write it), and dout = dLoss/dout:
 *   dout [total_q, Hq, D] (layout dtype), lse [total_q, Hq] float32 (required)
 *   dq [total_q, Hq, D], dk / dv [total_k, Hkv, D] (layout dtype), written, not accumulated; keys
 *   no query attends get 0. A gradient that shares memory with an input (q, k, v, topk_idx, lse, dout, the
 *   _out variants' out) or with another gradient is refused with INFLLM_ERR_PARAM (no in-place backward).
 * The CPU backend recomputes the softmax in f32 from q, k and lse, normalising each row by its
 * recomputed sum (so lse only has to keep the exponent in range: an lse rounded to f32, or taken from
 * another backend's forward, costs no accuracy), and Delta = rowsum(P * dP) from the recomputation
 * (not from a rounded forward output, which the call does not need). The REF backend computes the
 * exact gradient in float64 from q, k, v alone (lse must still be given).
 * CUDA (bf16 / f16, head_dim 64 / 128): device pointers, on p->cuda_stream, no host synchronisation; the
 * forward is recomputed by the forward's own kernels for its lse and Delta = rowsum(dout * out) from its f32
 * output before rounding (the lse argument is not read: any lse the host backends take gives the same
 * result), P and dS enter the tensor-core products rounded to the dtype (as FlashAttention's backward);
 * deterministic (each gradient element written by one thread block, sums in a fixed order). Workspace:
 * p->workspace of the size function below, or NULL to let the call allocate (not under graph capture). */
infllm_status infllm_sparse_attention_backward(const infllm_params *p, const infllm_layout *l,
                                               const void *q, const void *k, const void *v,
                                               const int32_t *topk_idx, int32_t topk_cols,
                                               const float *lse, const void *dout,
                                               void *dq, void *dk, void *dv);

/* Backward of dense causal attention (bottom-right aligned), as above with every causal key. */
infllm_status infllm_dense_attention_backward(const infllm_params *p, const infllm_layout *l,
                                              const void *q, const void *k, const void *v,
                                              const float *lse, const void *dout,
                                              void *dq, void *dk, void *dv);

/* The two calls above with the forward's output out [total_q, Hq, D] (layout dtype) given, as
 * infllm_sparse_attention / infllm_dense_attention (or infllm_attention) wrote it together with lse: CUDA then
 * takes the softmax from lse and Delta = rowsum(dout * out) from out as given instead of recomputing the forward
 * (about a quarter of the backward's time at 128K on an H200), so out and lse must come from one forward of
 * these inputs. FlashAttention's way: out's rounding to the dtype enters Delta, so in rows that one key
 * dominates (a sharp softmax) dq and dk are less accurate than the call without out's (within 2x the error of
 * a plain 16-bit backward that takes Delta from the same out); with this backend's forward's out and lse, dv is
 * bitwise the call without out's. out may be NULL (the calls above). CPU and REF do not read out. Workspace:
 * the same size functions. */
infllm_status infllm_sparse_attention_backward_out(const infllm_params *p, const infllm_layout *l,
                                                   const void *q, const void *k, const void *v,
                                                   const int32_t *topk_idx, int32_t topk_cols,
                                                   const void *out, const float *lse, const void *dout,
                                                   void *dq, void *dk, void *dv);
infllm_status infllm_dense_attention_backward_out(const infllm_params *p, const infllm_layout *l,
                                                  const void *q, const void *k, const void *v,
                                                  const void *out, const float *lse, const void *dout,
                                                  void *dq, void *dk, void *dv);

/* Workspace bytes the backward calls need on the CUDA backend for this layout (0 elsewhere), from the
 * totals and max_seqlen_* only (topk_cols: the sparse call's). */
infllm_status infllm_sparse_attention_backward_workspace_size(const infllm_params *p, const infllm_layout *l,
                                                              int32_t topk_cols, size_t *bytes);
infllm_status infllm_dense_attention_backward_workspace_size(const infllm_params *p, const infllm_layout *l,
                                                             size_t *bytes);

/* The whole InfLLM-V2 attention with the dense/sparse switch (p->mode, p->dense_len, per
 * sequence). Sparse sequences run compression, stage 1, block scores, top-k and stage 2; the
 * CPU backend fuses stage 1 with the group sum, max-pool and top-k so working memory is
 * linear in T. out [total_q, Hq, D], lse [total_q, Hq] or NULL. */
infllm_status infllm_attention(const infllm_params *p, const infllm_layout *l,
                               const void *q, const void *k, const void *v,
                               void *out, float *lse);

/* Workspace bytes infllm_attention needs on the CUDA backend for this layout (0 elsewhere).
 * Uses max_seqlen_* and totals only (no device reads). */
infllm_status infllm_attention_workspace_size(const infllm_params *p, const infllm_layout *l,
                                              size_t *bytes);

/* --------------------------------------------------------- decode cache ---- */
/* A KV cache for ONE sequence with its c1/c2 compressed keys, updated incrementally
 * (SPEC B §8). Storage is preallocated for `capacity` tokens at creation. The block size,
 * kernel size/stride and backend are fixed at creation from p; the other parameters are
 * read at each attend call.
 * CUDA backend (bf16/f16, head_dim 64/128): the K, V, c1, c2 storage is device memory, and so are
 * the k, v, q, out and lse pointers below and the views returned by infllm_cache_keys/values/c1/c2.
 * The lengths are kept on the host, so no cache call synchronises with the device: an append is
 * one kernel (copy + the c1/c2 kernels that complete with the new tokens) on the stream given at
 * creation (p->cuda_stream); an attend runs on its own p->cuda_stream (use the same stream, or
 * order them yourself). A decode step (append + attend) with caller workspace (p->workspace, at
 * least infllm_cache_workspace_size bytes) allocates nothing and can be captured into a CUDA graph.
 * A captured graph replays the captured step as it was (same position and length: the host-side
 * length is not advanced by a replay). */
typedef struct infllm_cache infllm_cache;
/* Thread safety: the other functions of this header may be called from several threads at once on
 * separate buffers; calls on one infllm_cache must not overlap (it is not locked). */

/* Creates a cache; *out receives it (NULL on failure). Free with infllm_cache_free. */
infllm_status infllm_cache_create(const infllm_params *p, infllm_dtype dtype,
                                  int32_t num_kv_heads, int32_t head_dim, int64_t capacity,
                                  infllm_cache **out);
/* Frees a cache; NULL is a no-op. CUDA: device memory is freed with cudaFree (which waits for
 * the device). */
void infllm_cache_free(infllm_cache *c);
/* Appends n tokens: k, v [n, Hkv, D] in the cache dtype. INFLLM_ERR_CAPACITY (and nothing
 * appended) when length + n > capacity. CUDA: k, v are device pointers read by the append
 * kernel, so they must stay valid until that kernel has run on the cache's stream. */
infllm_status infllm_cache_append(infllm_cache *c, const void *k, const void *v, int64_t n);
/* Attends the n newest tokens' queries q [n, Hq, D] against the cache (they sit at positions
 * length-n .. length-1; append their K/V first). n == 1 is a decode step, n > 1 a chunk of a
 * chunked prefill. Dense/sparse switch as infllm_attention, with kv_len = length.
 * out [n, Hq, D] (cache dtype), lse [n, Hq] or NULL. CUDA: workspace from p->workspace (size
 * checked: INFLLM_ERR_WORKSPACE) or, when NULL, allocated per call (stream-ordered). */
infllm_status infllm_cache_attend(infllm_cache *c, const infllm_params *p,
                                  const void *q, int64_t n, int32_t num_q_heads,
                                  void *out, float *lse);
/* Workspace bytes infllm_cache_attend needs for up to n queries of num_q_heads heads with params
 * p, at any length up to the capacity (so one buffer serves the cache's whole life: size it for
 * the largest chunk, decode steps fit too). 0 on the host backends. No device access. */
infllm_status infllm_cache_workspace_size(const infllm_cache *c, const infllm_params *p, int64_t n,
                                          int32_t num_q_heads, size_t *bytes);
/* Drops tokens past new_length (new_length <= length): c1/c2 past it are dropped too. */
infllm_status infllm_cache_truncate(infllm_cache *c, int64_t new_length);
int64_t infllm_cache_length(const infllm_cache *c);
int64_t infllm_cache_capacity(const infllm_cache *c);
/* Bytes held by the cache (K, V, c1, c2 storage and bookkeeping; CUDA: device storage plus the
 * host-side struct). */
size_t infllm_cache_memory_bytes(const infllm_cache *c);
/* Read-only views of the cache storage ([length, Hkv, D] for k/v, [n1, Hkv, D] for c1...).
 * Valid until the next append/truncate/free. CUDA: device pointers. */
const void *infllm_cache_keys(const infllm_cache *c);
const void *infllm_cache_values(const infllm_cache *c);
const void *infllm_cache_c1(const infllm_cache *c, int64_t *n1);
const void *infllm_cache_c2(const infllm_cache *c, int64_t *n2);

/* ----------------------------------------------------------------- info ---- */
const char *infllm_version(void);          /* "0.1.0" */
const char *infllm_build_commit(void);     /* git commit the library was built from */
const char *infllm_cpu_simd_level(void);   /* "avx512-bf16", "avx512", "avx2", "scalar" (runtime dispatch) */
/* Nonzero if the CPU backend runs the products of bf16 attention (stage 2, dense, the selection's scores, the
 * backward's S and dP) on its bf16 dot-product kernels (P rounded to bf16 for P V, as GPU kernels do): 2 on Intel
 * AMX-BF16 tiles (by default on Sapphire / Emerald / Granite Rapids under Linux, which grants the process the tile
 * state), 1 on AVX512_BF16's vdpbf16ps (by default on AMD Zen 4 / 5, where it runs at twice the f32 FMA rate; Intel's
 * run it at half); 0 if on f32 FMAs. INFLLM_BF16_DOT=0 turns them off, =avx512bf16 / =amx picks one (where the CPU has
 * it), =1 the best the CPU has. Read once a process. */
int infllm_cpu_bf16_dot(void);
int infllm_cpu_num_threads(void);          /* threads used when num_threads == 0 */
int infllm_cuda_available(void);           /* 1 if built with CUDA and a device of compute capability 8.0+ is present */
int infllm_cuda_built(void);               /* 1 if built with CUDA */
/* One line on the current CUDA device and the code that runs there (name, compute capability, SMs,
 * shared memory a block; the kernels: sm_90a wgmma, mma.sync SASS, or PTX the driver JIT-compiled for a
 * GPU newer than the build), or why there is none, into buf (truncated to size). Returns
 * infllm_cuda_available(). */
int infllm_cuda_device_info(char *buf, size_t size);

#ifdef __cplusplus
}
#endif
#endif /* INFLLM_H */
