/*
 * cuda_pipeline.cu: the whole InfLLM-V2 attention on the GPU (cuda_attention) with the
 * per-sequence dense/sparse switch, and its workspace.
 *
 * Launches, all on ap->cuda_stream, no host synchronisation:
 *   sparse sequences: k_offsets + k_compress (c1, c2, device cu_c1/cu_c2) -> k_select (fused
 *   stage 1 + LSE approximation + group sum + max-pool + forced blocks + top-k; the score matrix
 *   stays on chip) -> k_flash<sparse> (filter: sparse sequences);
 *   dense sequences: k_flash<dense> (filter: dense sequences);
 *   one sequence (host lengths) of <= 16 queries, any G (dense: <= 2): (k_offsets + k_compress
 *   when sparse, then) the decode cache's kernels, k_cd_lse / k_cd_score / k_cd_attn / k_cd_combine, over the
 *   freshly compressed c1 / c2 (cuda_cache.cu; INFLLM_CUDA_NO_FEWQ_CD=1: the kernels above).
 * Workspace (256-byte aligned pieces): cu_c1/cu_c2, c1, c2, topk_idx [Hkv, total_q, topk_out],
 * split-KV scratch (few queries: cu_c1/cu_c2, c1, c2, the decode kernels' scratch). Linear in T.
 * Also infllm_select_blocks (cuda_select_blocks): compression + the fused selection alone.
 */
#include <atomic>
#include <mutex>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_common.cuh"
#include "cuda_internal.cuh"

/* INFLLM_CUDA_EMULATE=NAME (a test switch, read with the device's properties): the launch planning of
 * another GPU on this one. The host then sees that device's compute capability, SM count and shared
 * memory limits (each only where lower than this device's, so no kernel is planned that this device
 * cannot run) and chooses kernels, tile shapes, pipeline depths, splits and workspaces as it would
 * there; the kernels it picks run here. So one Hopper runs the paths of an A100 (cc 8.0: the mma.sync
 * kernels, 163 KB a block), of the 99 KB parts (cc 8.6 / 8.9: RTX 30 / 40, A10, L4; cc 12.0 has the
 * same limits) and of a 16-SM Jetson AGX Orin (cc 8.7), and sees the refusal of a cc 7.5 T4
 * (scripts/cuda_check.sh, bench/emulate_check.py). Without a device the profile's properties replace the
 * fallback's, for the host-side planning tests (test_cuda_ws in CI; h200 is for them). Numbers: the CUDA
 * programming guide's table of compute capabilities and the parts' SM counts. An unknown name emulates
 * nothing (cuda_emulated_name says which profile is on). */
struct EmulatedDevice {
    const char *name;
    int cc, sms, smem_optin, smem_per_sm;
};
static const EmulatedDevice k_emulated[] = {
    {"h200", 90, 132, 227 * 1024, 228 * 1024}, {"a100", 80, 108, 163 * 1024, 164 * 1024},
    {"rtx3090", 86, 82, 99 * 1024, 100 * 1024}, {"l4", 89, 58, 99 * 1024, 100 * 1024},
    {"orin", 87, 16, 163 * 1024, 164 * 1024},  {"t4", 75, 40, 64 * 1024, 64 * 1024},
};
static const EmulatedDevice *emulated_device(void) {
    const char *e = getenv("INFLLM_CUDA_EMULATE");
    if (!e) return NULL;
    for (const EmulatedDevice &d : k_emulated)
        if (!strcmp(e, d.name)) return &d;
    return NULL;
}
/* lowers a device's properties to the profile's; without a device (device 0), sets them: the host-side
 * planning tests (test_cuda_ws) then plan for that GPU in CI, where no kernel can run anyway */
static void cuda_emulate_device(CudaDevProps *p, int device) {
    const EmulatedDevice *d = emulated_device();
    if (!d) return;
    if (!device) {
        *p = CudaDevProps{d->sms, d->cc / 10, d->cc % 10, d->smem_optin, d->smem_per_sm, d->cc, d->cc};
        return;
    }
    if (d->cc < 10 * p->cc_major + p->cc_minor) p->cc_major = d->cc / 10, p->cc_minor = d->cc % 10;
    p->code_arch = min(p->code_arch, d->cc); /* that GPU's own code: no PDL below 9.0 */
    p->binary_arch = min(p->binary_arch, d->cc);
    p->sms = min(p->sms, d->sms);
    p->smem_optin = min(p->smem_optin, d->smem_optin);
    p->smem_per_sm = min(p->smem_per_sm, d->smem_per_sm);
}
extern "C" const char *cuda_emulated_name(void) {
    const EmulatedDevice *d = emulated_device();
    return d ? d->name : "";
}

/* an empty kernel whose attributes say which code the driver loaded for a device (all kernels of the
 * library come from the same fatbinary, so they share its choice) */
__global__ void k_arch_probe(void) {}

CudaDevProps cuda_dev_props(void) {
    enum { MAX_DEV = 64 }; /* devices past it are read every call */
    static CudaDevProps props[MAX_DEV];
    static std::atomic<int> ready[MAX_DEV];
    static std::mutex lock;
    CudaDevProps p = {100, 0, 0, 48 * 1024, 48 * 1024, 0, 0};
    int dev = 0, v = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) {
        (void)cudaGetLastError();
        cuda_emulate_device(&p, 0);
        return p;
    }
    const bool cached = dev >= 0 && dev < MAX_DEV;
    if (cached && ready[dev].load(std::memory_order_acquire)) return props[dev];
    if (cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev) == cudaSuccess && v > 0) p.sms = v;
    if (cudaDeviceGetAttribute(&v, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess) p.cc_major = v;
    if (cudaDeviceGetAttribute(&v, cudaDevAttrComputeCapabilityMinor, dev) == cudaSuccess) p.cc_minor = v;
    if (cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) == cudaSuccess && v > 0)
        p.smem_optin = v;
    if (cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev) == cudaSuccess && v > 0)
        p.smem_per_sm = v;
    cudaFuncAttributes fa;
    const cudaError_t fe = cudaFuncGetAttributes(&fa, k_arch_probe);
    if (fe == cudaSuccess) {
        p.code_arch = fa.ptxVersion;
        p.binary_arch = fa.binaryVersion;
    } else if (fe == cudaErrorNoKernelImageForDevice || fe == cudaErrorInvalidDeviceFunction) {
        p.code_arch = p.binary_arch = -1; /* the build holds no code this device can run */
    }
    (void)cudaGetLastError();
    cuda_emulate_device(&p, 1);
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
extern "C" int cuda_sm_count(void) { return cuda_num_sms(); }
extern "C" int cuda_device_cc(void) {
    const CudaDevProps d = cuda_dev_props();
    return 10 * d.cc_major + d.cc_minor;
}
extern "C" int cuda_device_code_arch(void) { return cuda_dev_props().code_arch; }

extern "C" void cuda_device_describe(char *buf, size_t size) {
    if (!buf || !size) return;
    buf[0] = 0;
    int dev = 0;
    cudaDeviceProp prop;
    if (!cuda_device_available() || cudaGetDevice(&dev) != cudaSuccess ||
        cudaGetDeviceProperties(&prop, dev) != cudaSuccess) {
        (void)cudaGetLastError();
        snprintf(buf, size, "no CUDA device");
        return;
    }
    const CudaDevProps d = cuda_dev_props();
    const int cc = 10 * d.cc_major + d.cc_minor;
    char code[96];
    if (d.code_arch < 0)
        snprintf(code, sizeof code, "none (this build holds no code for cc %d.%d)", prop.major, prop.minor);
    else if (d.code_arch == 0)
        snprintf(code, sizeof code, "unknown");
    else if (d.binary_arch > d.code_arch)
        snprintf(code, sizeof code, "compute_%d PTX, JIT-compiled by the driver for sm_%d", d.code_arch, d.binary_arch);
    else
        snprintf(code, sizeof code, "sm_%d%s", d.binary_arch, cuda_use_wgmma() ? "a (wgmma)" : " (mma.sync)");
    const char *emu = cuda_emulated_name();
    int n = snprintf(buf, size, "%s, cc %d.%d, %d SMs, %d KB shared memory a block; kernels: %s", prop.name,
                     prop.major, prop.minor, prop.multiProcessorCount, (int)(prop.sharedMemPerBlockOptin / 1024), code);
    if (*emu && n >= 0 && (size_t)n < size)
        snprintf(buf + n, size - n, "; planned as %s (INFLLM_CUDA_EMULATE: cc %d.%d, %d SMs, %d KB a block)", emu,
                 cc / 10, cc % 10, d.sms, d.smem_optin / 1024);
}

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
    int dense_filter; /* the dense launch's sequences: 2, the dense ones; 0, all (a window every row selects whole) */
};

static size_t al256(size_t x) { return (x + 255) & ~(size_t)255; }
/* rows to allocate for a c1 / c2 buffer of n rows of data: at least CUDA_SELECT_MIN_ROWS, so that
 * short inputs get the sm_90a selection too */
static int64_t sel_buffer_rows(int64_t n) { return n > CUDA_SELECT_MIN_ROWS ? n : CUDA_SELECT_MIN_ROWS; }

/* The first pieces of a workspace: cu_c1 / cu_c2, then (with_c) the c1 and c2 buffers, whose rows are
 * exact with host sequences, else a bound (a window of s tokens per s, + 1 a sequence). Returns the
 * offset past them. */
static size_t ws_compressed(const infllm_attn_params *ap, int with_c, size_t &off_cu, size_t &off_c1, size_t &off_c2,
                            int64_t &rows_c1, int64_t &rows_c2) {
    const size_t row = (size_t)ap->Hkv * ap->D * 2; /* bf16 / f16 */
    rows_c1 = sel_buffer_rows(ap->seqs ? ap->total_n1 : ap->total_k / ap->s1 + ap->num_seqs);
    rows_c2 = sel_buffer_rows(ap->seqs ? ap->total_n2 : ap->total_k / ap->s2 + ap->num_seqs);
    size_t off = 0;
    off_cu = off;
    off += al256(sizeof(int32_t) * 2 * (ap->num_seqs + 1));
    if (with_c) {
        off_c1 = off;
        off += al256((size_t)rows_c1 * row);
        off_c2 = off;
        off += al256((size_t)rows_c2 * row);
    }
    return off;
}

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
    w.dense_filter = 2;
    if (w.any_sparse && cuda_window_selects_all(ap)) {
        /* every sparse row selects every block its window reaches: the windowed dense kernel serves all */
        w.any_sparse = 0;
        w.any_dense = 1;
        w.dense_filter = 0;
    }
    size_t off = ws_compressed(ap, w.any_sparse, w.off_cu, w.off_c1, w.off_c2, w.rows_c1, w.rows_c2);
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

/* the caller's workspace (if any) against what the call needs: aligned, large enough. Checked also by calls
 * with nothing to do (no query), so that a workspace smaller than the size function's answer is refused
 * whatever the batch holds, not first when a batch happens to have queries. */
static infllm_status cuda_workspace_check(const infllm_attn_params *ap, size_t need, const char *what,
                                          const char *size_fn) {
    if (!ap->workspace) return INFLLM_OK;
    /* the kernels read their workspace pieces (256-byte aligned offsets) with 16-byte vector loads and TMA,
     * which need a 16-byte aligned base */
    if ((uintptr_t)ap->workspace & 15)
        return infllm_set_error(INFLLM_ERR_WORKSPACE, "%s: workspace at %p is not 16-byte aligned", what,
                                ap->workspace);
    if (ap->workspace_bytes < need)
        return infllm_set_error(INFLLM_ERR_WORKSPACE, "%s: workspace of %zu bytes is too small, %zu needed (%s)", what,
                                ap->workspace_bytes, need, size_fn);
    /* and memory this device's kernels can write (not plain host memory, not another GPU's) */
    return cuda_check_pointers(what, {{ap->workspace, "workspace", 16}});
}

infllm_status cuda_workspace_acquire(const infllm_attn_params *ap, size_t need, const char *what,
                                     const char *size_fn, cudaStream_t st, unsigned char **ws, int *owned) {
    *ws = NULL;
    *owned = 0;
    if (ap->workspace) {
        infllm_status s = cuda_workspace_check(ap, need, what, size_fn);
        if (s) return s;
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
    infllm_status s = cuda_check_entry(ap, "attention", {{q, "q", 16}, {k, "k", 16}, {v, "v", 16},
                                                          {out, "out", 16}, {lse, "lse", 4}});
    if (s) return s;
    WsLayout w = ws_layout(ap);
    if (ap->total_q == 0) return cuda_workspace_check(ap, w.total, "CUDA attention", "infllm_attention_workspace_size");
    cudaStream_t st = (cudaStream_t)ap->cuda_stream;
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
        s = cuda_flash_launch(ap, q, k, v, NULL, 0, out, lse, w.dense_filter, split, w.split_bytes, st);
    if (owned) cudaFreeAsync(ws, st);
    return s;
}

/* infllm_select_blocks on the GPU: compression, then the fused selection of every sequence (the API's
 * rule: p->mode and dense_len are not applied), straight into the caller's topk_idx. Workspace (256-byte
 * aligned pieces): cu_c1 / cu_c2, c1, c2 and, for <= 64 queries, the decode selection's scratch. */
struct SelWsLayout {
    size_t off_cu, off_c1, off_c2, off_dec, dec_bytes, total;
    int64_t rows_c1, rows_c2;
};

static infllm_attn_params select_params(const infllm_attn_params *ap) {
    infllm_attn_params a = *ap;
    a.mode = INFLLM_MODE_SPARSE; /* the decode selection filters by mode: every sequence selects */
    return a;
}

static SelWsLayout sel_ws_layout(const infllm_attn_params *ap) {
    SelWsLayout w;
    memset(&w, 0, sizeof w);
    size_t off = ws_compressed(ap, 1, w.off_cu, w.off_c1, w.off_c2, w.rows_c1, w.rows_c2);
    w.dec_bytes = cuda_dec_select_bytes(ap);
    w.off_dec = off;
    off += al256(w.dec_bytes);
    w.total = off;
    return w;
}

extern "C" infllm_status cuda_select_blocks_workspace_size(const infllm_attn_params *ap, size_t *bytes) {
    infllm_status s = cuda_check_supported(ap, "select_blocks");
    if (s) return s;
    const infllm_attn_params a = select_params(ap);
    *bytes = sel_ws_layout(&a).total;
    return INFLLM_OK;
}

extern "C" infllm_status cuda_select_blocks(const infllm_attn_params *ap, const void *q, const void *k,
                                            int32_t *topk_idx) {
    infllm_status s = cuda_check_entry(ap, "select_blocks", {{q, "q", 16}, {k, "k", 16}, {topk_idx, "topk_idx", 4}});
    if (s) return s;
    const infllm_attn_params a = select_params(ap);
    const SelWsLayout w = sel_ws_layout(&a);
    if (ap->total_q == 0 || ap->topk_out < 1)
        return cuda_workspace_check(&a, w.total, "CUDA select_blocks", "infllm_select_blocks_workspace_size");
    cudaStream_t st = (cudaStream_t)a.cuda_stream;
    unsigned char *ws = NULL;
    int owned = 0;
    s = cuda_workspace_acquire(&a, w.total, "CUDA select_blocks", "infllm_select_blocks_workspace_size", st, &ws,
                               &owned);
    if (s) return s;
    int32_t *cu_c1 = (int32_t *)(ws + w.off_cu);
    int32_t *cu_c2 = cu_c1 + a.num_seqs + 1;
    void *c1 = ws + w.off_c1, *c2 = ws + w.off_c2;
    s = cuda_compress_impl(&a, k, c1, c2, cu_c1, cu_c2, st);
    if (!s && w.dec_bytes)
        s = cuda_dec_select_launch(&a, q, c1, c2, cu_c1, cu_c2, topk_idx, ws + w.off_dec, st);
    else if (!s)
        s = cuda_select_launch(&a, q, c1, a.exact_lse ? c1 : c2, cu_c1, a.exact_lse ? cu_c1 : cu_c2, NULL, topk_idx, 0,
                               w.rows_c1, a.exact_lse ? w.rows_c1 : w.rows_c2, st);
    if (owned) cudaFreeAsync(ws, st);
    return s;
}
