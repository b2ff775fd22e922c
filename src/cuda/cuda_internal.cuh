/*
 * cuda_internal.cuh: C++-linkage seams between the src/cuda/*.cu files.
 */
#ifndef INFLLM_CUDA_INTERNAL_CUH
#define INFLLM_CUDA_INTERNAL_CUH

#include <atomic>
#include <climits>
#include <initializer_list>
#include <cuda_runtime.h>

#include "internal.h"

/* sequences in one call: the kernels take the sequence from grid dimension y (z in the backward) */
enum { CUDA_MAX_SEQS = 65535 };
/* bf16/f16 storage, head_dim 64/128 and at most CUDA_MAX_SEQS sequences, else INFLLM_ERR_UNSUPPORTED with a
 * message naming op */
infllm_status cuda_check_supported(const infllm_attn_params *ap, const char *op);

/* The sliding key window (ap->window > 0) on CUDA: the dense and stage-2 kernels and the backward mask by it (k_flash,
 * k_flash90), and so does the decode cache's k_cd_attn (session 59, run on an H100: test_cuda_window in every configuration; its selection cd_select starts at the window's
 * first block, k_cd_score skips the c1 tiles before it). The fused selection kernels
 * (k_select, k_select90, k_dec_topk) start each row's candidates at its window's first block (SelBlockKey.wb,
 * session 56; run on a GPU in session 57), so select_blocks, the pipeline and the cache's attend take any window.
 * A sparse row's candidate blocks
 * (those that reach its window) number at most ceil((window - 1) / B) + 1 whatever the length; when that is at
 * most topk + local_blocks, every row selects all of them and sparse attention is the windowed dense one (the CPU
 * backend's selects_every_block), which needs no selection. */
static inline int cuda_window_selects_all(const infllm_attn_params *ap) {
    return ap->window > 0 && infllm_window_span_blocks(ap->window, ap->B) <= ap->topk_total;
}
/* Whether the decode kernels' one sequence (ap->seqs[0]) attends sparse: a sparse sequence whose window every row
 * selects whole attends the windowed dense way, with no selection (cd_run, cuda_fewq_cd_*) */
static inline int cuda_cd_sparse(const infllm_attn_params *ap) {
    return ap->seqs[0].sparse && !cuda_window_selects_all(ap);
}

/* A device argument and the alignment the kernels need of it: 16 bytes for a 16-bit tensor (read and
 * written as 16-byte vectors, by cp.async and TMA), 4 for a float / int32 array. */
struct CudaArg {
    const void *ptr;
    const char *name;
    unsigned align;
};
/* INFLLM_ERR_UNSUPPORTED naming op and the first argument (NULL ones pass) that is misaligned or that the
 * current device cannot read (plain host memory, unless the device reads pageable memory: HMM / ATS), before
 * any kernel runs: such an access would fail asynchronously and poison the CUDA context. Device, managed and
 * mapped pinned host memory pass. */
infllm_status cuda_check_pointers(const char *op, std::initializer_list<CudaArg> args);
/* the same over an array of n arguments */
infllm_status cuda_check_pointer_list(const char *op, const CudaArg *args, size_t n);
/* An entry point's boundary check: cuda_check_supported, then cuda_check_pointers over args and the layout's
 * cu_seqlens_q / cu_seqlens_k (ap->cu_q, ap->cu_k; NULL for one sequence). */
template <size_t N>
infllm_status cuda_check_entry(const infllm_attn_params *ap, const char *op, const CudaArg (&args)[N]) {
    infllm_status s = cuda_check_supported(ap, op);
    if (s) return s;
    CudaArg all[N + 2];
    for (size_t i = 0; i < N; i++) all[i] = args[i];
    all[N] = {ap->cu_q, "cu_seqlens_q", 4};
    all[N + 1] = {ap->cu_k, "cu_seqlens_k", 4};
    return cuda_check_pointer_list(op, all, N + 2);
}

/* c1/c2 + device offsets cu_c1/cu_c2 ([num_seqs+1], required here) */
infllm_status cuda_compress_impl(const infllm_attn_params *ap, const void *k, void *c1, void *c2, int32_t *cu_c1,
                                 int32_t *cu_c2, cudaStream_t st);

/* device cu_c1/cu_c2 offsets only */
infllm_status cuda_offsets_launch(const infllm_attn_params *ap, int32_t *cu_c1, int32_t *cu_c2, cudaStream_t st);

/* Stage 1 on tensor cores. scores != NULL: writes the [Hkv, total_q, max_n1] score matrix (zeroed
 * here first). topk != NULL: fused path, writes topk_idx [Hkv, total_q, topk_out] for the sparse
 * sequences only (filter_sparse) with the LSE approximation, group sum, max-pool, forced blocks
 * and top-k done on chip. c1_rows / c2_rows: the rows the c1 / c2 buffers hold (c2: of the buffer passed
 * as c2), 0 when unknown; the sm_90a kernel, which loads its tiles by TMA, needs them (its maps must
 * not reach past the buffers) and at least one tile of rows, else the mma.sync kernel runs. */
infllm_status cuda_select_launch(const infllm_attn_params *ap, const void *q, const void *c1, const void *c2,
                                 const int32_t *cu_c1, const int32_t *cu_c2, float *scores, int32_t *topk,
                                 int filter_sparse, int64_t c1_rows, int64_t c2_rows, cudaStream_t st);
/* Rows a c1 / c2 buffer should hold at least so that the sm_90a selection can map it (its largest
 * tile; the rows past the data are never read as data) */
#define CUDA_SELECT_MIN_ROWS 256

/* Small-batch (decode) selection: split over kernel tiles, for total_q <= 64 and 16 % G == 0.
 * cuda_dec_select_bytes: scratch bytes, 0 when the path does not apply (or INFLLM_CUDA_NO_DEC=1). */
size_t cuda_dec_select_bytes(const infllm_attn_params *ap);
infllm_status cuda_dec_select_launch(const infllm_attn_params *ap, const void *q, const void *c1, const void *c2,
                                     const int32_t *cu_c1, const int32_t *cu_c2, int32_t *topk, void *ws,
                                     cudaStream_t st);

/* The stateless call of one sequence (host lengths) with total_q <= 16 (any G) on the decode
 * cache's kernels (cuda_cache.cu), over c1 / c2 compressed into rows from 0 (c1, c2 unused when the
 * sequence is dense). cuda_fewq_cd_bytes: its workspace, 0 when it does not apply (or
 * INFLLM_CUDA_NO_FEWQ_CD=1); ws: that many bytes, 256-byte aligned. */
size_t cuda_fewq_cd_bytes(const infllm_attn_params *ap);
infllm_status cuda_fewq_cd_launch(const infllm_attn_params *ap, const void *q, const void *k, const void *v,
                                  const void *c1, const void *c2, void *out, float *lse, void *ws, cudaStream_t st);

/* Flash attention on tensor cores: dense causal (topk == NULL) or block-sparse. filter: 0 all
 * sequences, 1 only sparse ones, 2 only dense ones (per-sequence switch). split_ws: scratch for
 * the split-KV path (may be NULL: no split); split_ws_bytes its size. */
infllm_status cuda_flash_launch(const infllm_attn_params *ap, const void *q, const void *k, const void *v,
                                const int32_t *topk, int32_t topk_cols, void *out, float *lse, int filter,
                                void *split_ws, size_t split_ws_bytes, cudaStream_t st);
/* The attention backward's pass 1: cuda_flash_launch's forward (same kernels, tiles, splits and grouping) whose
 * epilogue writes, instead of O and the lse, each row's Delta = dout . O from the unrounded f32 O and its log2
 * LSE (+inf for a row without keys, whose Delta is 0). */
struct CudaFlashDelta {
    const void *dout; /* [total_q, Hq, D] */
    float *delta;     /* [total_q, Hq] written */
    float *lse2;      /* [total_q, Hq] written */
};
infllm_status cuda_flash_delta_launch(const infllm_attn_params *ap, const void *q, const void *k, const void *v,
                                      const int32_t *topk, int32_t topk_cols, const CudaFlashDelta *fd, void *split_ws,
                                      size_t split_ws_bytes, cudaStream_t st);
/* The attention backward's dq pass on the forward's wgmma kernel (k_flash90 DQ; sm_90a builds on cc 9.0):
 * dq = scale sum_j P_j (dP_j - Delta) k_j over the same selection, with P = exp2(s scale log2(e) - lse2). */
struct CudaFlashDq {
    const void *dout; /* [total_q, Hq, D] */
    const float *lse2;  /* [total_q, Hq] log2 LSE of each row (+inf: a row without keys) */
    const float *delta; /* [total_q, Hq] rowsum(dout * out) */
    void *dq;           /* [total_q, Hq, D] written */
};
/* whether cuda_flash_dq_launch runs for this layout (wgmma device, its tiles within shared memory) */
int cuda_flash_dq_usable(const infllm_attn_params *ap, int sparse, int32_t topk_cols);
/* group_ws: the token grouping table's scratch, as cuda_flash_launch's split_ws (may be NULL: no grouping) */
infllm_status cuda_flash_dq_launch(const infllm_attn_params *ap, const void *q, const void *k, const void *v,
                                   const int32_t *topk, int32_t topk_cols, const CudaFlashDq *dq, void *group_ws,
                                   size_t group_ws_bytes, cudaStream_t st);
/* bytes of split scratch cuda_flash_launch may use for this layout */
size_t cuda_flash_split_bytes(const infllm_attn_params *ap, int sparse, int32_t topk_cols);
/* the query tokens of one cuda_flash_launch tile (with max_lq queries a sequence): the launch's tiles, and so
 * its split scratch, stay the same for every query count from (k - 1) * TT + 1 to k * TT */
int cuda_flash_tile_tokens(const infllm_attn_params *ap, int sparse);

/* Properties of the current device (cudaGetDevice), read from the driver once per device and kept in
 * a table (thread-safe; no device call after the first): SM count, compute capability, the opt-in
 * shared memory limit of one block, the shared memory of one SM, and the code the driver runs there:
 * code_arch is the virtual architecture (PTX target, 10 x major + minor) the library's kernels were
 * compiled from for this device, binary_arch the SASS they run as. Below the device's own compute
 * capability the driver JIT-compiled PTX (a GPU newer than the build's architectures: a cc 10.x / 12.x
 * part runs an 80;90a build's compute_80 PTX), and code of __CUDA_ARCH__ < 900 has no sm_90
 * instructions (griddepcontrol, which PDL launches need). A device whose attributes cannot be read
 * gets 100 SMs, cc 0.0, 48 KB and code_arch 0, so every capability check fails closed.
 * INFLLM_CUDA_EMULATE=NAME lowers them to another GPU's (cuda_pipeline.cu: a100, rtx3090, l4, orin, t4),
 * a test switch. */
struct CudaDevProps {
    int sms, cc_major, cc_minor, smem_optin, smem_per_sm;
    int code_arch, binary_arch;
};
CudaDevProps cuda_dev_props(void);
/* cuda_dev_props().sms */
int cuda_num_sms(void);

/* The environment variable `name` as atoi reads it (0 when unset), read on the first call for `slot`
 * and kept there: the tuning switches are read once per process. Thread-safe (two first calls read
 * the same value). Each switch owns one slot: `static std::atomic<int> slot{CUDA_ENV_UNREAD};` */
#define CUDA_ENV_UNREAD INT_MIN
int cuda_env_int(const char *name, std::atomic<int> *slot);

/* The call's workspace: ap->workspace when it holds `need` bytes (else INFLLM_ERR_WORKSPACE naming
 * `what` and `size_fn`, the call that sizes it), or a stream-ordered allocation on st (*owned = 1:
 * the caller cudaFreeAsync's it on st). */
infllm_status cuda_workspace_acquire(const infllm_attn_params *ap, size_t need, const char *what,
                                     const char *size_fn, cudaStream_t st, unsigned char **ws, int *owned);

/* Lets `func` (a kernel) launch with `smem` bytes of dynamic shared memory on the current device
 * (cudaFuncAttributeMaxDynamicSharedMemorySize; nothing to do up to 48 KB). The attribute is set
 * once per (kernel, device) for the largest size asked so far; thread-safe. INFLLM_ERR_UNSUPPORTED with
 * the sizes when static + smem exceed the device's opt-in limit (cuda_dev_props), INFLLM_ERR_CUDA with a
 * message naming `what` when the device refuses otherwise. */
infllm_status cuda_func_smem(const void *func, size_t smem, const char *what);

#ifdef INFLLM_CUDA_SM90A
#include <cuda.h> /* CUtensorMap */
/* TMA map of a row-major [rows, Hkv, D] 16-bit tensor (K, V, c1, c2): boxes of 64 columns x 1 head x
 * box_rows rows (<= 256), 128-byte swizzle (the wgmma tile layout [D/64][box_rows][64]); reads past
 * `rows` are zero-filled, so `rows` must not exceed the buffer's. false: no driver entry point (looked
 * up once), base not 16-byte aligned, fewer than box_rows or more than 2^31 - 1 rows. */
bool cuda_tma_map_rows(CUtensorMap *m, const void *base, int Hkv, int D, int64_t rows, int box_rows);
#endif

/* 1 when the sm_90a (wgmma) kernels run: built with sm_90a (INFLLM_CUDA_SM90A), the current
 * device has compute capability 9.0, and INFLLM_CUDA_NO_WGMMA=1 is not set (read once) */
int cuda_use_wgmma(void);

#endif
