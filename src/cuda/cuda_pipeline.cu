/*
 * cuda_pipeline.cu: the whole InfLLM-V2 attention on the GPU (cuda_attention) with the
 * per-sequence dense/sparse switch, and its workspace.
 *
 * Launches, all on ap->cuda_stream, no host synchronisation:
 *   sparse sequences: k_offsets + k_compress (c1, c2, device cu_c1/cu_c2) -> k_select (fused
 *   stage 1 + LSE approximation + group sum + max-pool + forced blocks + top-k; the score matrix
 *   stays on chip) -> k_flash<sparse> (filter: sparse sequences);
 *   dense sequences: k_flash<dense> (filter: dense sequences);
 *   one sequence (host lengths) of <= 16 queries with G <= 16 (dense: <= 2): (k_offsets + k_compress
 *   when sparse, then) the decode cache's kernels, k_cd_lse / k_cd_score / k_cd_attn / k_cd_combine, over the
 *   freshly compressed c1 / c2 (cuda_cache.cu; INFLLM_CUDA_NO_FEWQ_CD=1: the kernels above).
 * Workspace (256-byte aligned pieces): cu_c1/cu_c2, c1, c2, topk_idx [Hkv, total_q, topk_out],
 * split-KV scratch (few queries: cu_c1/cu_c2, c1, c2, the decode kernels' scratch). Linear in T.
 */
#include <atomic>
#include <mutex>
#include <stdlib.h>
#include <string.h>

#include "cuda_common.cuh"
#include "cuda_internal.cuh"

CudaDevProps cuda_dev_props(void) {
    enum { MAX_DEV = 64 }; /* devices past it are read every call */
    static CudaDevProps props[MAX_DEV];
    static std::atomic<int> ready[MAX_DEV];
    static std::mutex lock;
    CudaDevProps p = {100, 0, 0, 48 * 1024};
    int dev = 0, v = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) {
        (void)cudaGetLastError();
        return p;
    }
    const bool cached = dev >= 0 && dev < MAX_DEV;
    if (cached && ready[dev].load(std::memory_order_acquire)) return props[dev];
    if (cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev) == cudaSuccess && v > 0) p.sms = v;
    if (cudaDeviceGetAttribute(&v, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess) p.cc_major = v;
    if (cudaDeviceGetAttribute(&v, cudaDevAttrComputeCapabilityMinor, dev) == cudaSuccess) p.cc_minor = v;
    if (cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) == cudaSuccess && v > 0)
        p.smem_optin = v;
    (void)cudaGetLastError();
    if (cached) {
        std::lock_guard<std::mutex> guard(lock);
        if (!ready[dev].load(std::memory_order_relaxed)) {
            props[dev] = p;
            ready[dev].store(1, std::memory_order_release);
        }
    }
    return p;
}

int cuda_num_sms(void) { return cuda_dev_props().sms; }

int cuda_env_int(const char *name, std::atomic<int> *slot) {
    int v = slot->load(std::memory_order_relaxed);
    if (v == CUDA_ENV_UNREAD) {
        const char *e = getenv(name);
        v = e ? atoi(e) : 0;
        slot->store(v, std::memory_order_relaxed);
    }
    return v;
}

struct WsLayout {
    size_t off_cu, off_c1, off_c2, off_topk, off_split, split_bytes, off_dec, dec_bytes, off_fewq, fewq_bytes, total;
    int64_t rows_c1, rows_c2; /* rows of the c1 / c2 regions */
    int any_sparse, any_dense;
};

static size_t al256(size_t x) { return (x + 255) & ~(size_t)255; }
/* rows to allocate for a c1 / c2 buffer of n rows of data: at least CUDA_SELECT_MIN_ROWS, so that
 * short inputs get the sm_90a selection too */
static int64_t sel_buffer_rows(int64_t n) { return n > CUDA_SELECT_MIN_ROWS ? n : CUDA_SELECT_MIN_ROWS; }

static WsLayout ws_layout(const infllm_attn_params *ap) {
    WsLayout w;
    memset(&w, 0, sizeof w);
    if (ap->seqs) {
        for (int32_t b = 0; b < ap->num_seqs; b++) {
            if (ap->seqs[b].sparse)
                w.any_sparse = 1;
            else
                w.any_dense = 1;
        }
    } else {
        w.any_sparse = d_seq_sparse(ap->mode, ap->dense_len, ap->max_lk);
        w.any_dense = ap->mode == INFLLM_MODE_DENSE || (ap->mode == INFLLM_MODE_AUTO && ap->dense_len >= 0);
    }
    size_t es = 2, row = (size_t)ap->Hkv * ap->D * es;
    /* c1 / c2 rows: exact with host sequences, else a bound (a window of s tokens per s, + 1 a
     * sequence) */
    w.rows_c1 = sel_buffer_rows(ap->seqs ? ap->total_n1 : ap->total_k / ap->s1 + ap->num_seqs);
    w.rows_c2 = sel_buffer_rows(ap->seqs ? ap->total_n2 : ap->total_k / ap->s2 + ap->num_seqs);
    size_t off = 0;
    w.off_cu = off;
    off += al256(sizeof(int32_t) * 2 * (ap->num_seqs + 1));
    if (w.any_sparse) {
        w.off_c1 = off;
        off += al256((size_t)w.rows_c1 * row);
        w.off_c2 = off;
        off += al256((size_t)w.rows_c2 * row);
    }
    /* one sequence of <= 16 queries: the decode cache's kernels do the rest (no top-k, split or
     * selection scratch of the shared kernels) */
    w.fewq_bytes = cuda_fewq_cd_bytes(ap);
    if (w.fewq_bytes) {
        w.off_fewq = off;
        off += al256(w.fewq_bytes);
        w.total = off;
        return w;
    }
    if (w.any_sparse) {
        w.off_topk = off;
        off += al256((size_t)ap->Hkv * ap->total_q * (ap->topk_out > 0 ? ap->topk_out : 1) * sizeof(int32_t));
    }
    size_t sb = 0;
    if (w.any_sparse) {
        w.dec_bytes = cuda_dec_select_bytes(ap);
        w.off_dec = off;
        off += al256(w.dec_bytes);
        sb = cuda_flash_split_bytes(ap, 1, ap->topk_out);
    }
    if (w.any_dense) {
        size_t d = cuda_flash_split_bytes(ap, 0, 0);
        if (d > sb) sb = d;
    }
    w.off_split = off;
    w.split_bytes = sb;
    off += al256(sb);
    w.total = off;
    return w;
}

extern "C" infllm_status cuda_attention_workspace_size(const infllm_attn_params *ap, size_t *bytes) {
    infllm_status s = cuda_check_supported(ap, "attention");
    if (s) return s;
    *bytes = ws_layout(ap).total;
    return INFLLM_OK;
}

infllm_status cuda_workspace_acquire(const infllm_attn_params *ap, size_t need, const char *what,
                                     const char *size_fn, cudaStream_t st, unsigned char **ws, int *owned) {
    *ws = NULL;
    *owned = 0;
    if (ap->workspace) {
        /* the kernels read their workspace pieces (256-byte aligned offsets) with 16-byte vector
         * loads and TMA, which need a 16-byte aligned base */
        if ((uintptr_t)ap->workspace & 15)
            return infllm_set_error(INFLLM_ERR_WORKSPACE, "%s: workspace at %p is not 16-byte aligned", what,
                                    ap->workspace);
        if (ap->workspace_bytes < need)
            return infllm_set_error(INFLLM_ERR_WORKSPACE, "%s: workspace of %zu bytes is too small, %zu needed (%s)",
                                    what, ap->workspace_bytes, need, size_fn);
        *ws = (unsigned char *)ap->workspace;
        return INFLLM_OK;
    }
    cudaError_t e = cudaMallocAsync((void **)ws, need, st);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        *ws = NULL;
        return infllm_set_error(INFLLM_ERR_NOMEM, "%s: cannot allocate %zu bytes of workspace: %s", what, need,
                                cudaGetErrorString(e));
    }
    *owned = 1;
    return INFLLM_OK;
}

extern "C" infllm_status cuda_attention(const infllm_attn_params *ap, const void *q, const void *k, const void *v,
                                        void *out, float *lse) {
    infllm_status s = cuda_check_supported(ap, "attention");
    if (!s) s = cuda_check_aligned("attention", {{q, "q", 16}, {k, "k", 16}, {v, "v", 16}, {out, "out", 16},
                                                 {lse, "lse", 4}});
    if (s) return s;
    if (ap->total_q == 0) return INFLLM_OK;
    cudaStream_t st = (cudaStream_t)ap->cuda_stream;
    WsLayout w = ws_layout(ap);
    unsigned char *ws = NULL;
    int owned = 0;
    s = cuda_workspace_acquire(ap, w.total, "CUDA attention", "infllm_attention_workspace_size", st, &ws, &owned);
    if (s) return s;
    int32_t *cu_c1 = (int32_t *)(ws + w.off_cu);
    int32_t *cu_c2 = cu_c1 + ap->num_seqs + 1;
    void *split = w.split_bytes ? ws + w.off_split : NULL;
    if (w.fewq_bytes) {
        void *c1 = w.any_sparse ? ws + w.off_c1 : NULL, *c2 = w.any_sparse ? ws + w.off_c2 : NULL;
        if (w.any_sparse) s = cuda_compress_impl(ap, k, c1, c2, cu_c1, cu_c2, st);
        if (!s) s = cuda_fewq_cd_launch(ap, q, k, v, c1, c2, out, lse, ws + w.off_fewq, st);
    } else if (w.any_sparse) {
        void *c1 = ws + w.off_c1, *c2 = ws + w.off_c2;
        int32_t *topk = (int32_t *)(ws + w.off_topk);
        s = cuda_compress_impl(ap, k, c1, c2, cu_c1, cu_c2, st);
        if (!s && w.dec_bytes)
            s = cuda_dec_select_launch(ap, q, c1, c2, cu_c1, cu_c2, topk, ws + w.off_dec, st);
        else if (!s)
            s = cuda_select_launch(ap, q, c1, ap->exact_lse ? c1 : c2, cu_c1, ap->exact_lse ? cu_c1 : cu_c2, NULL, topk,
                                   1, w.rows_c1, ap->exact_lse ? w.rows_c1 : w.rows_c2, st);
        if (!s && ap->topk_out > 0)
            s = cuda_flash_launch(ap, q, k, v, topk, ap->topk_out, out, lse, 1, split, w.split_bytes, st);
    }
    if (!s && w.any_dense && !w.fewq_bytes)
        s = cuda_flash_launch(ap, q, k, v, NULL, 0, out, lse, 2, split, w.split_bytes, st);
    if (owned) cudaFreeAsync(ws, st);
    return s;
}

/* Test hook (tests/test_cuda.c declares it): the fused selection of one sequence of lq queries
 * (the last lq of lk positions), every row, into topk [Hkv, lq, topk_out] (device). */
extern "C" infllm_status cuda_debug_fused_topk(const infllm_params *p, infllm_dtype dtype, int32_t Hq, int32_t Hkv,
                                               int32_t D, int64_t lq, int64_t lk, const void *q, const void *k,
                                               int32_t *topk) {
    infllm_attn_params ap;
    infllm_seq *seqs = NULL;
    infllm_status s = infllm_build_single_seq_params(p, dtype, Hq, Hkv, D, lq, lk, &ap, &seqs);
    if (s) return s;
    s = cuda_check_supported(&ap, "debug_fused_topk");
    cudaStream_t st = (cudaStream_t)ap.cuda_stream;
    unsigned char *ws = NULL;
    size_t row = (size_t)ap.Hkv * ap.D * 2;
    const int64_t r1 = sel_buffer_rows(ap.total_n1 + 1), r2 = sel_buffer_rows(ap.total_n2 + 1);
    size_t b1 = al256((size_t)r1 * row), b2 = al256((size_t)r2 * row);
    size_t bd = s ? 0 : cuda_dec_select_bytes(&ap);
    if (!s && cudaMallocAsync((void **)&ws, 256 + b1 + b2 + al256(bd), st) != cudaSuccess) {
        (void)cudaGetLastError();
        s = infllm_set_error(INFLLM_ERR_NOMEM, "debug_fused_topk: no memory");
    }
    if (!s) {
        int32_t *cu = (int32_t *)ws;
        void *c1 = ws + 256, *c2 = ws + 256 + b1;
        s = cuda_compress_impl(&ap, k, c1, c2, cu, cu + 2, st);
        if (!s && bd) {
            ap.mode = INFLLM_MODE_SPARSE; /* every row */
            s = cuda_dec_select_launch(&ap, q, c1, c2, cu, cu + 2, topk, ws + 256 + b1 + b2, st);
        } else if (!s) {
            s = cuda_select_launch(&ap, q, c1, ap.exact_lse ? c1 : c2, cu, ap.exact_lse ? cu : cu + 2, NULL, topk, 0,
                                   r1, ap.exact_lse ? r1 : r2, st);
        }
    }
    if (ws) cudaFreeAsync(ws, st);
    free(seqs);
    return s;
}
