/*
 * internal.h: the seam between the public API and the backends.
 *
 * Data flows one way: public function -> validate + fill infllm_attn_params once
 * (src/core/api.c) -> backend function (ref_*, cpu_*, cuda_*) -> kernels. Every backend gets
 * the same params struct, unchanged. Backends may assume everything in it was validated.
 */
#ifndef INFLLM_INTERNAL_H
#define INFLLM_INTERNAL_H

#include <math.h>
#ifndef M_LOG2E /* POSIX's, not C11's: absent from MinGW's math.h (and MSVC's without _USE_MATH_DEFINES) */
#define M_LOG2E 1.44269504088896340736
#endif
#ifndef M_LN2
#define M_LN2 0.693147180559945309417
#endif
#include <stddef.h>
#include <stdint.h>

#include "infllm.h"
#include "printf_attr.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One sequence of a varlen batch, host-side (filled for the CPU and REF backends). */
typedef struct infllm_seq {
    int64_t q0;       /* first query row in q/out/lse */
    int64_t k0;       /* first key row in k/v */
    int32_t lq;       /* query rows */
    int32_t lk;       /* key rows; query i sits at position lk - lq + i */
    int64_t c1_0;     /* first c1 row */
    int64_t c2_0;     /* first c2 row */
    int32_t n1;       /* c1 kernels: windows(lk, l1, s1) */
    int32_t n2;       /* c2 kernels: windows(lk, l2, s2) */
    int32_t nblocks;  /* ceil(lk / B) */
    int32_t sparse;   /* infllm_attention: 1 = sparse path, 0 = dense (mode + dense_len) */
} infllm_seq;

typedef struct infllm_attn_params {
    /* layout */
    infllm_dtype dtype;
    int32_t Hq, Hkv, G, D;          /* G = Hq / Hkv */
    int64_t total_q, total_k;
    int32_t num_seqs;
    const infllm_seq *seqs;         /* [num_seqs] host array; NULL on the CUDA backend with
                                       device cu_seqlens (use cu_q/cu_k there) */
    const int32_t *cu_q, *cu_k;     /* as given by the caller (may be NULL for one sequence) */
    int32_t max_lq, max_lk;
    /* element strides of the token-major tensors (contiguous today) */
    int64_t q_tok, q_head;          /* Hq*D, D */
    int64_t kv_tok, kv_head;        /* Hkv*D, D */
    int64_t o_tok, o_head;          /* Hq*D, D */
    /* InfLLM-V2 parameters */
    int32_t B;                      /* block size */
    int32_t l1, s1;                 /* c1 kernel size, stride */
    int32_t l2, s2;                 /* c2 = 4*l1, 4*s1 */
    int32_t init_blocks, local_blocks;
    int32_t topk_total;             /* K = topk + local_blocks */
    int32_t dense_len;
    int32_t exact_lse;
    int32_t window;                 /* sliding key window, 0: none (infllm_window_start) */
    infllm_mode mode;
    float scale;                    /* softmax scale (resolved, never 0) */
    int32_t num_threads;            /* resolved, >= 1 */
    /* derived sizes */
    int64_t total_n1, total_n2;
    int32_t max_n1;                 /* stage-1 score columns */
    int32_t nblocks_out;            /* block-score columns */
    int32_t topk_out;               /* min(topk_total, nblocks_out) */
    /* CUDA */
    void *cuda_stream;
    void *workspace;
    size_t workspace_bytes;
} infllm_attn_params;

/* ------------------------------------------------------------ geometry ---- */
/* Complete windows of `size` with `stride` in a length-L sequence. */
static inline int32_t infllm_windows(int64_t L, int32_t size, int32_t stride) {
    return L >= size ? (int32_t)((L - size) / stride + 1) : 0;
}
/* Kernels (size, stride) whose last position size-1+stride*j <= pos: the visible ones. */
static inline int32_t infllm_visible_kernels(int64_t pos, int32_t size, int32_t stride, int32_t n) {
    int64_t c = pos + 1 >= size ? (pos + 1 - size) / stride + 1 : 0;
    return (int32_t)(c < n ? c : n);
}
static inline int64_t infllm_floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}
/* c1 kernels overlapping block b (SPEC A.4): [*lo, *hi) clipped to [0, n1). */
static inline void infllm_block_kernel_range(int32_t b, int32_t B, int32_t l1, int32_t s1,
                                             int32_t n1, int32_t *lo, int32_t *hi) {
    int64_t first = -infllm_floor_div(-((int64_t)B * b - l1 + 1), s1); /* ceil */
    int64_t last = infllm_floor_div((int64_t)B * b + B - 1, s1);        /* inclusive */
    if (first < 0) first = 0;
    if (last > n1 - 1) last = n1 - 1;
    *lo = (int32_t)first;
    *hi = last >= first ? (int32_t)(last + 1) : (int32_t)first;
}
/* The first key a query at position pos attends under a sliding window (0: none): keys j with pos - window < j. */
static inline int64_t infllm_window_start(int64_t pos, int32_t window) {
    return window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
}
/* The first block top-k may take for that query: blocks wholly before its window are no candidates. */
static inline int32_t infllm_window_first_block(int64_t pos, int32_t window, int32_t B) {
    return (int32_t)(infllm_window_start(pos, window) / B);
}
/* The most blocks a query's window reaches (its candidate blocks under a sliding window, whatever the length):
 * ceil((window - 1) / B) + 1; 0 without a window (no bound). When it is at most topk + local_blocks, every sparse row
 * selects all of them and sparse attention is the windowed dense one. */
static inline int64_t infllm_window_span_blocks(int32_t window, int32_t B) {
    return window > 0 ? ((int64_t)window - 1 + B - 1) / B + 1 : 0;
}
/* Forced block? b < init_blocks or q_block - local_blocks <= b <= q_block. */
static inline int infllm_block_forced(int32_t b, int32_t q_block, int32_t init_blocks,
                                      int32_t local_blocks) {
    return b < init_blocks || (b <= q_block && b >= q_block - local_blocks);
}

/* ------------------------------------------------------------- errors ---- */
/* Records a message for infllm_last_error() and returns s. printf-style. */
infllm_status infllm_set_error(infllm_status s, const char *fmt, ...) PF_PRINTF(2, 3);

/* Shared by infllm_attention and the decode cache (which passes its own c1/c2, rows at
 * seqs[b].c1_0 / c2_0; NULL: computed). api.c */
struct cpu_kv_tiles;
infllm_status infllm_attention_with_compressed(const infllm_attn_params *ap, infllm_backend backend,
                                               const void *q, const void *k, const void *v,
                                               const void *c1, const void *c2,
                                               const struct cpu_kv_tiles *kvt, void *out, float *lse);
/* Validated params for one sequence of lq queries (the last lq of lk positions). The caller
 * frees *seqs_out. api.c */
infllm_status infllm_build_single_seq_params(const infllm_params *p, infllm_dtype dtype, int32_t Hq,
                                             int32_t Hkv, int32_t D, int64_t lq, int64_t lk,
                                             infllm_attn_params *ap, infllm_seq **seqs_out);

/* ---------------------------------------------------- float64 reference ---- */
/* src/ref/: straight loops from SPEC; double arithmetic; outputs in double where they are
 * attention results so that tests can measure errors against them. No shared code with the
 * fast paths beyond this header and dtype.h. */
infllm_status ref_compress(const infllm_attn_params *ap, const void *k, void *c1, void *c2);
infllm_status ref_stage1(const infllm_attn_params *ap, const void *q, const void *c1,
                         const void *c2, float *scores /* [Hkv, total_q, max_n1] */);
infllm_status ref_block_scores(const infllm_attn_params *ap, const float *scores,
                               float *block_scores /* [Hkv, total_q, nblocks_out] */);
infllm_status ref_topk(const infllm_attn_params *ap, const float *block_scores,
                       int32_t *topk_idx /* [Hkv, total_q, topk_out] */);
/* The keys j <= p of sequence s that query row `row` of topk_idx (topk_cols entries; -1 and blocks past
 * the sequence ignored) attends: allowed[j] = its block is selected. sel: [nblocks_out + 1] scratch. */
void ref_allowed_keys(const infllm_attn_params *ap, const infllm_seq *s, const int32_t *row, int32_t topk_cols,
                      int64_t p, unsigned char *sel, unsigned char *allowed);
infllm_status ref_sparse_attn(const infllm_attn_params *ap, const void *q, const void *k,
                              const void *v, const int32_t *topk_idx, int32_t topk_cols,
                              double *out /* [total_q, Hq, D] */, double *lse /* [total_q, Hq] or NULL */);
infllm_status ref_dense_attn(const infllm_attn_params *ap, const void *q, const void *k,
                             const void *v, double *out, double *lse);

/* Backward of stage 2 / dense attention (topk_idx NULL: every causal key; ref_backward.c): float64
 * gradients dq [total_q, Hq, D], dk / dv [total_k, Hkv, D]. */
infllm_status ref_attn_backward(const infllm_attn_params *ap, const void *q, const void *k, const void *v,
                                const int32_t *topk_idx, int32_t topk_cols, const void *dout, double *dq,
                                double *dk, double *dv);

/* ------------------------------------------------------- fast CPU path ---- */
/* src/attn/: same contracts as the public ops, outputs in the layout dtype. */
/* The fused selection of every sequence (infllm_select_blocks) and the backward of stage 2 / dense
 * attention (topk_idx NULL: every causal key; cpu_backward.c). */
infllm_status cpu_select_blocks(const infllm_attn_params *ap, const void *q, const void *k, int32_t *topk_idx);
infllm_status cpu_attn_backward(const infllm_attn_params *ap, const void *q, const void *k, const void *v,
                                const int32_t *topk_idx, int32_t topk_cols, const float *lse, const void *dout,
                                void *dq, void *dk, void *dv);
infllm_status cpu_compress(const infllm_attn_params *ap, const void *k, void *c1, void *c2);
infllm_status cpu_stage1(const infllm_attn_params *ap, const void *q, const void *c1,
                         const void *c2, float *scores);
infllm_status cpu_block_scores(const infllm_attn_params *ap, const float *scores,
                               float *block_scores);
infllm_status cpu_topk(const infllm_attn_params *ap, const float *block_scores, int32_t *topk_idx);
infllm_status cpu_sparse_attn(const infllm_attn_params *ap, const void *q, const void *k,
                              const void *v, const int32_t *topk_idx, int32_t topk_cols,
                              void *out, float *lse);
infllm_status cpu_dense_attn(const infllm_attn_params *ap, const void *q, const void *k,
                             const void *v, void *out, float *lse);
/* The decode cache's K/V already in the CPU kernels' tile layout, packed once as tokens
 * arrive, so a decode step or a prefill chunk does not repack the whole prefix (the same tiles
 * and arithmetic as packing per call: results are bitwise identical). So are its compressed keys c1 / c2
 * (session 59: the selection packed all of them at every step, ~a quarter of a sparse decode step at 128K).
 * K / V of a 16-bit cache keep its 16-bit values, widened exactly to f32 a tile step at a time, as stage 2's
 * per-call packs do (session 62: f32 tiles doubled what a decode step reads, which on 16 cores bounds it). */
typedef struct cpu_kv_tiles {
    void *K, *V;           /* per KV head g: head_elems elements from K + g*head_elems (V likewise) */
    void *C1, *C2;         /* per KV head g: c1_floats elements from C1 + g*c1_floats (packed as K, no values; f32, or
                            * bf16 in the dot kernels' K layout where dot), C2 likewise */
    int32_t Hkv, D;
    infllm_dtype dtype;    /* the cache's: K / V elements are its 16-bit values for bf16 / f16, else f32 */
    int dot;               /* bf16 K / V (and C1 / C2) in the CPU dot kernels' pair layouts (src/attn/cpu_kern.h) */
    size_t head_elems;     /* capacity rounded up to whole tiles, times D */
    size_t c1_floats, c2_floats; /* the kernel capacities rounded up to whole tiles, times D */
    int64_t rows;          /* rows packed (the cache length) */
    int64_t rows1, rows2;  /* c1 / c2 kernels packed (the cache's n1 / n2) */
    uint64_t *vbad;        /* per KV head g: vbad + g*(head_elems / (64 D)), a tile's keys whose V row holds a NaN / inf */
    size_t bytes;
} cpu_kv_tiles;
/* n1cap / n2cap: the c1 / c2 kernels at the capacity */
infllm_status cpu_kv_tiles_init(cpu_kv_tiles *t, infllm_dtype dtype, int32_t Hkv, int32_t D, int64_t capacity,
                                int64_t n1cap, int64_t n2cap);
void cpu_kv_tiles_free(cpu_kv_tiles *t);
/* Makes the packed rows match k/v [rows, Hkv, D] and c1 / c2 [n1 / n2, Hkv, D]: packs rows appended since the last
 * call, zeroes rows dropped by a truncation. */
void cpu_kv_tiles_set_rows(cpu_kv_tiles *t, const void *k, const void *v, const void *c1, const void *c2, int64_t rows,
                           int64_t n1, int64_t n2);

/* Whole pipeline, per sequence dense or sparse (ap->seqs[b].sparse). c1/c2 (with rows at
 * seqs[b].c1_0 / c2_0) may be given (decode cache) or NULL (computed here); kvt (one sequence
 * only) may hold the packed K/V or be NULL. Stage 1 is fused with the group sum, max-pool and
 * top-k: working memory linear in T. */
infllm_status cpu_attention(const infllm_attn_params *ap, const void *q, const void *k,
                            const void *v, const void *c1, const void *c2,
                            const cpu_kv_tiles *kvt, void *out, float *lse);
/* c[j] = mean of the `len` rows k[row0 .. row0+len) (all Hkv*D columns), f32 sum in index
 * order, divided by len, rounded to dtype; written as row `dst_row` of dst. Shared by
 * cpu_compress and the decode cache so both give bit-identical kernels. */
void cpu_mean_window(const void *k, infllm_dtype dt, int64_t row_elems, int64_t row0, int32_t len,
                     void *dst, int64_t dst_row);
const char *cpu_simd_level_name(void);
int cpu_bf16_dot_on(void); /* cpu_dot16_get() != NULL (src/attn/cpu_kern.h): 2 the AMX kernels, 1 vdpbf16ps */
int cpu_amx_default(void); /* whether the AMX kernels run by default where the CPU has them (cpu_attn.c) */
int cpu_default_threads(void);
/* the threads a call runs on: requested (> 0) or all cores; 1 in a process forked after a call ran more than one
 * (GCC's OpenMP pool does not survive fork: such a child's first parallel region hung) */
int cpu_call_threads(int32_t requested);
/* nth, for an OpenMP region's num_threads clause: notes that this process has a thread pool from here on when nth
 * > 1 (what makes a later forked child run on one thread); every parallel region of the CPU backend goes through it */
int cpu_team(int nth);

/* ------------------------------------------------------------ CUDA path ---- */
/* src/cuda/: device pointers. Only linked when INFLLM_HAVE_CUDA. */
#ifdef INFLLM_HAVE_CUDA
infllm_status cuda_compress(const infllm_attn_params *ap, const void *k, void *c1, void *c2,
                            int32_t *cu_c1, int32_t *cu_c2);
infllm_status cuda_stage1(const infllm_attn_params *ap, const void *q, const void *c1,
                          const void *c2, const int32_t *cu_c1, const int32_t *cu_c2, float *scores);
infllm_status cuda_block_scores(const infllm_attn_params *ap, const float *scores,
                                const int32_t *cu_c1, float *block_scores);
infllm_status cuda_topk(const infllm_attn_params *ap, const float *block_scores, int32_t *topk_idx);
infllm_status cuda_sparse_attn(const infllm_attn_params *ap, const void *q, const void *k,
                               const void *v, const int32_t *topk_idx, int32_t topk_cols,
                               void *out, float *lse);
infllm_status cuda_dense_attn(const infllm_attn_params *ap, const void *q, const void *k,
                              const void *v, void *out, float *lse);
/* the scratch cuda_sparse_attn (topk_cols >= 1) or cuda_dense_attn (topk_cols 0) takes from p->workspace */
infllm_status cuda_flash_workspace_size(const infllm_attn_params *ap, int32_t topk_cols, size_t *bytes);
infllm_status cuda_attention(const infllm_attn_params *ap, const void *q, const void *k,
                             const void *v, void *out, float *lse);
infllm_status cuda_attention_workspace_size(const infllm_attn_params *ap, size_t *bytes);
/* infllm_select_blocks: compression + the fused selection of every sequence into topk_idx (device) */
infllm_status cuda_select_blocks(const infllm_attn_params *ap, const void *q, const void *k, int32_t *topk_idx);
infllm_status cuda_select_blocks_workspace_size(const infllm_attn_params *ap, size_t *bytes);
/* src/cuda/cuda_backward.cu: the backward of stage 2 (topk_idx non-NULL) or of dense attention, and its
 * workspace (topk_cols 0: dense); out (and then lse) the forward's, or NULL: the forward recomputed */
infllm_status cuda_attn_backward(const infllm_attn_params *ap, const void *q, const void *k, const void *v,
                                 const int32_t *topk_idx, int32_t topk_cols, const void *out, const float *lse,
                                 const void *dout, void *dq, void *dk, void *dv);
infllm_status cuda_attn_backward_workspace_size(const infllm_attn_params *ap, int32_t topk_cols, size_t *bytes);
int cuda_device_available(void);
#endif


/* ------------------------------------------------ CUDA decode cache ---- */
/* src/cuda/cuda_cache.cu: the device side of infllm_cache for the CUDA backend (cache.c owns the
 * bookkeeping; lengths live on the host, so no call below synchronises with the device). */
#ifdef INFLLM_HAVE_CUDA
/* The CUDA backend's dtype / head_dim rule (cuda_check_supported), for cache creation. */
infllm_status cuda_cache_check(infllm_dtype dtype, int32_t head_dim);
/* cudaMalloc / cudaFree of the cache storage (NOMEM with a message on failure). */
infllm_status cuda_cache_malloc(void **p, size_t bytes);
void cuda_cache_mfree(void *p);
/* One kernel on `stream`: copies k, v [n, Hkv, D] (device) to rows old_len.. of kc/vc and builds
 * the c1/c2 kernels that complete in (old_len, old_len + n] (windows (l1, s1) and (4*l1, 4*s1)),
 * bit-identical to cuda_compress / cpu_mean_window. */
infllm_status cuda_cache_append(infllm_dtype dt, int32_t Hkv, int32_t D, int32_t l1, int32_t s1, void *kc, void *vc,
                                void *c1, void *c2, const void *k, const void *v, int64_t old_len, int64_t n,
                                void *stream);
/* Attention of ap->total_q queries (the last of ap->total_k cached positions, one sequence) against
 * the cache's device K/V and c1/c2: selection on the stored kernels (no compression), stage 2 or
 * dense. Workspace: ap->workspace (>= cuda_cache_workspace_size) or stream-ordered allocation. */
infllm_status cuda_cache_attend(const infllm_attn_params *ap, const void *q, const void *k, const void *v,
                                const void *c1, const void *c2, void *out, float *lse);
/* Workspace bytes of cuda_cache_attend for ap (an upper bound over every length <= ap->total_k). */
infllm_status cuda_cache_workspace_size(const infllm_attn_params *ap, size_t *bytes);
/* The bytes cuda_cache_attend needs for exactly ap (its query count and length); tests/test_cuda_ws.c holds
 * cuda_cache_workspace_size to it for every smaller count and length. */
size_t cuda_cache_attend_bytes(const infllm_attn_params *ap);
/* The longest key count up to ap->total_k at which such an attend runs on the decode-cache kernels (0: none). */
int64_t cuda_cache_decode_max_len(const infllm_attn_params *ap);
/* The SM count the CUDA sizing and launch rules use (the current device's; 100 without one). */
int cuda_sm_count(void);
/* The current device's compute capability as 10 x major + minor (86 for 8.6; 0 without one); the kernels
 * need 80 or more. Both this and cuda_sm_count follow INFLLM_CUDA_EMULATE (cuda_pipeline.cu), whose
 * profile name, or "", cuda_emulated_name gives. */
int cuda_device_cc(void);
const char *cuda_emulated_name(void);
/* The virtual architecture the driver's code for the current device was compiled from (80 for compute_80
 * PTX, 90 for sm_90a code), -1 when the build holds none this device can run, 0 unknown. */
int cuda_device_code_arch(void);
/* infllm_cuda_device_info's line for the current device (api.c's rule says whether the backend runs on it). */
void cuda_device_describe(char *buf, size_t size);
#endif

#ifdef __cplusplus
}
#endif
#endif /* INFLLM_INTERNAL_H */
