/*
 * cuda_compress.cu: key compression (SPEC B §4) on the GPU, the device-side c1/c2 row offsets,
 * and device detection.
 *
 *   c1[c1_0(b) + j][g][:] = (sum_{u<l1} k[k0(b) + s1*j + u][g][:]) / l1   (f32, index order)
 *   c2 likewise with (l2, s2) = (4*l1, 4*s1)
 * The f32 sum runs in index order and is divided (IEEE, not by a reciprocal) before rounding, like
 * cpu_mean_window, so c1/c2 are bit-identical to the CPU path.
 */
#include <stdio.h>

#include "cuda_common.cuh"
#include "cuda_internal.cuh"

extern "C" int cuda_device_available(void) {
    static std::atomic<int> cached{-1}; /* threads racing here all store the same answer */
    int c = cached.load(std::memory_order_relaxed);
    if (c < 0) {
        int n = 0;
        cudaError_t e = cudaGetDeviceCount(&n);
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            n = 0;
        }
        c = n > 0;
        cached.store(c, std::memory_order_relaxed);
    }
    return c;
}

/* cu_c1[b] = sum_{b'<b} n1(lk_b'), likewise cu_c2; one thread (num_seqs is small) */
__global__ void k_offsets(SeqDesc sd, int32_t l1, int32_t s1, int32_t l2, int32_t s2, int32_t *cu_c1,
                          int32_t *cu_c2) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    int32_t a1 = 0, a2 = 0;
    for (int b = 0; b < sd.num_seqs; b++) {
        int64_t q0, k0;
        int32_t lq, lk;
        seq_get(sd, b, q0, lq, k0, lk);
        cu_c1[b] = a1;
        cu_c2[b] = a2;
        a1 += d_windows(lk, l1, s1);
        a2 += d_windows(lk, l2, s2);
    }
    cu_c1[sd.num_seqs] = a1;
    cu_c2[sd.num_seqs] = a2;
}

/* grid (ceil(max_n / RPB), num_seqs, 2 levels); each thread owns a column of Hkv*D and RPB rows */
template <typename T>
__global__ void k_compress(SeqDesc sd, const T *__restrict__ k, T *__restrict__ c1, T *__restrict__ c2,
                           const int32_t *__restrict__ cu_c1, const int32_t *__restrict__ cu_c2, int64_t cols,
                           int32_t l1, int32_t s1, int rows_per_block) {
    int level = blockIdx.z;
    int b = blockIdx.y;
    if (level == 1 && !c2) return;
    int64_t q0, k0;
    int32_t lq, lk;
    seq_get(sd, b, q0, lq, k0, lk);
    int32_t size = level ? 4 * l1 : l1, stride = level ? 4 * s1 : s1;
    int32_t n = d_windows(lk, size, stride);
    int64_t base = level ? cu_c2[b] : cu_c1[b];
    T *dst = level ? c2 : c1;
    int j0 = blockIdx.x * rows_per_block;
    for (int jj = 0; jj < rows_per_block; jj++) {
        int j = j0 + jj;
        if (j >= n) return;
        for (int64_t col = threadIdx.x; col < cols; col += blockDim.x) {
            const T *src = k + (k0 + (int64_t)stride * j) * cols + col;
            float s = 0.f;
            int u = 0;
            for (; u + 16 <= size; u += 16) { /* 16 loads in flight, sum still in index order */
                float x[16];
#pragma unroll
                for (int i = 0; i < 16; i++) x[i] = DT<T>::to_f(src[(int64_t)(u + i) * cols]);
#pragma unroll
                for (int i = 0; i < 16; i++) s += x[i];
            }
            for (; u < size; u++) s += DT<T>::to_f(src[(int64_t)u * cols]);
            dst[(base + j) * cols + col] = DT<T>::from_f(__fdiv_rn(s, (float)size));
        }
    }
}

/* Whether the current device's kernels can read ptr: READS (its own and managed memory, pinned host memory mapped
 * into its address space, plain host memory where the device reads pageable memory: HMM / ATS), HOST_MEMORY (plain
 * host memory elsewhere), or OTHER_GPU (another device's memory, *owner set: reading it needs peer access, which the
 * caller may not have enabled, and without it the first load is a sticky illegal-address error that ends the
 * process's CUDA context; so such memory is refused whether or not peer access is on) */
enum PtrAccess { READS, HOST_MEMORY, OTHER_GPU };
static PtrAccess cuda_device_reads(const void *ptr, int *owner) {
    cudaPointerAttributes at;
    if (cudaPointerGetAttributes(&at, ptr) != cudaSuccess) {
        (void)cudaGetLastError(); /* not sticky; cleared so that the next launch check does not read it */
        return READS;             /* nothing known against it: leave it to the launch */
    }
    if (at.type == cudaMemoryTypeManaged) return READS;
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) {
        (void)cudaGetLastError();
        return READS;
    }
    if (at.type == cudaMemoryTypeDevice) {
        *owner = at.device;
        return at.device == dev ? READS : OTHER_GPU;
    }
    if (at.type == cudaMemoryTypeHost) return at.devicePointer != nullptr ? READS : HOST_MEMORY;
    int pageable = 0;
    if (cudaDeviceGetAttribute(&pageable, cudaDevAttrPageableMemoryAccess, dev) != cudaSuccess) {
        (void)cudaGetLastError();
        return READS;
    }
    return pageable != 0 ? READS : HOST_MEMORY;
}

infllm_status cuda_check_pointer_list(const char *op, const CudaArg *args, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (args[i].ptr && ((uintptr_t)args[i].ptr & (args[i].align - 1)))
            return infllm_set_error(INFLLM_ERR_UNSUPPORTED, "CUDA backend (%s): %s at %p is not %u-byte aligned", op,
                                    args[i].name, args[i].ptr, args[i].align);
    /* the queries are pure, but a call inside a graph capture of global or thread-local mode must not risk
     * invalidating it: this thread is in relaxed mode for them (a per-thread setting, restored after) */
    cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
    const bool exchanged = cudaThreadExchangeStreamCaptureMode(&mode) == cudaSuccess;
    if (!exchanged) (void)cudaGetLastError();
    const CudaArg *bad = nullptr;
    PtrAccess why = READS;
    int owner = -1;
    for (size_t i = 0; i < n && !bad; i++)
        if (args[i].ptr && (why = cuda_device_reads(args[i].ptr, &owner)) != READS) bad = &args[i];
    int dev = -1;
    if (bad && why == OTHER_GPU && cudaGetDevice(&dev) != cudaSuccess) (void)cudaGetLastError();
    if (exchanged) cudaThreadExchangeStreamCaptureMode(&mode);
    if (bad && why == OTHER_GPU)
        return infllm_set_error(INFLLM_ERR_UNSUPPORTED,
                                "CUDA backend (%s): %s at %p is memory of GPU %d, but the call runs on GPU %d (the "
                                "current device): make GPU %d current (cudaSetDevice) or copy it there",
                                op, bad->name, bad->ptr, owner, dev, owner);
    if (bad)
        return infllm_set_error(INFLLM_ERR_UNSUPPORTED,
                                "CUDA backend (%s): %s at %p is host memory that the GPU cannot read; pass device "
                                "memory (cudaMalloc, cudaMallocManaged, or mapped pinned host memory)",
                                op, bad->name, bad->ptr);
    return INFLLM_OK;
}

infllm_status cuda_check_pointers(const char *op, std::initializer_list<CudaArg> args) {
    return cuda_check_pointer_list(op, args.begin(), args.size());
}

/* The same windows, one warp a window: lane l sums columns [8 l, 8 l + 8) (+ 256 a step) from 16-byte
 * loads, CMP_ROWS rows in flight, each column's f32 sum in index order as above (bitwise the same
 * c1 / c2), one 16-byte store. Needs k, c1, c2 16-byte aligned and cols a multiple of 8 (the host
 * checks; else k_compress). grid (ceil(max_n / warps a CTA), num_seqs, 2 levels). */
enum { CMP_ROWS = 8 };
template <typename T>
__global__ void k_compress16(SeqDesc sd, const T *__restrict__ k, T *__restrict__ c1, T *__restrict__ c2,
                             const int32_t *__restrict__ cu_c1, const int32_t *__restrict__ cu_c2, int64_t cols,
                             int32_t l1, int32_t s1) {
    /* c2 (z 0) before c1 (z 1): CTAs start in grid order, and a c2 window is 4 c1 windows' rows, so
     * its long chains start first and c1's short ones fill in behind them instead of the c2 CTAs
     * running last, alone */
    const int level = 1 - (int)blockIdx.z, b = blockIdx.y, lane = threadIdx.x & 31;
    if (level == 1 && !c2) return;
    int64_t q0, k0;
    int32_t lq, lk;
    seq_get(sd, b, q0, lq, k0, lk);
    const int32_t size = level ? 4 * l1 : l1, stride = level ? 4 * s1 : s1;
    const int32_t n = d_windows(lk, size, stride);
    const int j = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (j >= n) return;
    T *dst = (level ? c2 : c1) + ((level ? cu_c2[b] : cu_c1[b]) + (int64_t)j) * cols;
    for (int64_t col = 8 * lane; col < cols; col += 256) {
        const T *src = k + (k0 + (int64_t)stride * j) * cols + col;
        float sum[8];
#pragma unroll
        for (int e = 0; e < 8; e++) sum[e] = 0.f;
        int u = 0;
        for (; u + CMP_ROWS <= size; u += CMP_ROWS) {
            uint4 x[CMP_ROWS];
#pragma unroll
            for (int i = 0; i < CMP_ROWS; i++) x[i] = *reinterpret_cast<const uint4 *>(src + (int64_t)(u + i) * cols);
#pragma unroll
            for (int i = 0; i < CMP_ROWS; i++) {
                const T *v = reinterpret_cast<const T *>(&x[i]);
#pragma unroll
                for (int e = 0; e < 8; e++) sum[e] += DT<T>::to_f(v[e]);
            }
        }
        for (; u < size; u++) {
            const uint4 x = *reinterpret_cast<const uint4 *>(src + (int64_t)u * cols);
            const T *v = reinterpret_cast<const T *>(&x);
#pragma unroll
            for (int e = 0; e < 8; e++) sum[e] += DT<T>::to_f(v[e]);
        }
        uint4 w;
        uint32_t *wp = reinterpret_cast<uint32_t *>(&w);
#pragma unroll
        for (int e = 0; e < 4; e++)
            wp[e] = DT<T>::pack2(__fdiv_rn(sum[2 * e], (float)size), __fdiv_rn(sum[2 * e + 1], (float)size));
        *reinterpret_cast<uint4 *>(dst + col) = w;
    }
}

infllm_status cuda_check_supported(const infllm_attn_params *ap, const char *op) {
    if (ap->dtype != INFLLM_DTYPE_BF16 && ap->dtype != INFLLM_DTYPE_F16)
        return infllm_set_error(INFLLM_ERR_UNSUPPORTED,
                                "CUDA backend (%s): dtype %s is not supported, use bf16 or f16 storage", op,
                                infllm_dtype_name(ap->dtype));
    if (ap->D != 64 && ap->D != 128)
        return infllm_set_error(INFLLM_ERR_UNSUPPORTED,
                                "CUDA backend (%s): head_dim %d is not supported, use 64 or 128", op, ap->D);
    /* every kernel with a sequence index takes it from a grid dimension (y, or z in the backward), whose limit
     * is 65535: a larger batch failed at its first launch with "invalid configuration argument" */
    if (ap->num_seqs > CUDA_MAX_SEQS)
        return infllm_set_error(INFLLM_ERR_UNSUPPORTED,
                                "CUDA backend (%s): %d sequences in one call, at most %d (a grid dimension's limit): "
                                "split the batch into calls of at most %d sequences",
                                op, ap->num_seqs, CUDA_MAX_SEQS, CUDA_MAX_SEQS);
    return INFLLM_OK;
}

infllm_status cuda_offsets_launch(const infllm_attn_params *ap, int32_t *cu_c1, int32_t *cu_c2, cudaStream_t st) {
    k_offsets<<<1, 32, 0, st>>>(seq_desc(ap), ap->l1, ap->s1, ap->l2, ap->s2, cu_c1, cu_c2);
    CU_LAUNCH_CHECK("k_offsets");
    return INFLLM_OK;
}

/* The default geometry (l1 32, s1 16, so c2 128 / 64), a warp a c2 window: warp jg reads the 128 rows
 * of c2 window jg, [64 jg, 64 jg + 128), once, and sums from them c2 window jg and the c1 windows
 * 4 jg .. 4 jg + 3 (rows [64 jg + 16 a, + 32), inside the c2 window's), each column's f32 sum in
 * index order and divided as above (bitwise k_compress). A row is read by the 2 warps whose c2
 * windows hold it, where k_compress16's window warps read it 4 times (two c1, two c2 windows): half
 * the L2 traffic, and every warp runs the same chain of 8 batches of 16 rows (k_compress16's c2
 * warps ran 16 batches of 8 behind which the c1 warps queued: 43.5 us at 1 x 128K, Hkv 2, d 128).
 * Batch bt (rows [16 bt, 16 bt + 16), loaded as two halves of 8, each half's loads in flight while
 * the half before it is summed) adds to the c2 sum, to c1 window bt ("hi", while bt < na)
 * and to c1 window bt - 1 ("lo", 1 <= bt <= na), which is then complete. A group past the
 * sequence's last c2 window (its tail c1 windows) reads only its c1 windows' rows. Lane l: columns
 * [8 l, 8 l + 8) (+ 256 a step), 16-byte loads and stores (the host checks alignment and cols % 8).
 * grid (ceil(groups / 8), num_seqs), 8 warps (2 CTAs an SM: every warp of a 128K call is resident).
 * H200, 1 x 128K: 34.5 us where k_compress16 took 43.7 (the same bits); its floor, 64 MB once from
 * HBM, is ~15 us, and single batches of 16 rows measured the same 34.9 us, so what bounds it is not
 * yet known (ncu next). Other geometries take k_compress16. */
enum { CMPG_S1 = 16, CMPG_L1 = 32 };

template <typename T, bool LO, bool HI>
__device__ __forceinline__ void cmpg_add(const uint4 (&x)[CMPG_S1 / 2], float (&a2)[8], float (&lo)[8],
                                         float (&hi)[8]) {
#pragma unroll
    for (int i = 0; i < CMPG_S1 / 2; i++) {
        const T *v = reinterpret_cast<const T *>(&x[i]);
#pragma unroll
        for (int e = 0; e < 8; e++) {
            const float f = DT<T>::to_f(v[e]);
            a2[e] += f;
            if (LO) lo[e] += f;
            if (HI) hi[e] += f;
        }
    }
}
template <typename T>
__device__ __forceinline__ void cmpg_add_flags(const uint4 (&x)[CMPG_S1 / 2], float (&a2)[8], float (&lo)[8],
                                               float (&hi)[8], bool use_lo, bool use_hi) {
    if (use_lo && use_hi)
        cmpg_add<T, true, true>(x, a2, lo, hi);
    else if (use_lo)
        cmpg_add<T, true, false>(x, a2, lo, hi);
    else if (use_hi)
        cmpg_add<T, false, true>(x, a2, lo, hi);
    else
        cmpg_add<T, false, false>(x, a2, lo, hi);
}
template <typename T>
__device__ __forceinline__ void cmpg_store(T *dst, const float (&sum)[8], float size) {
    uint4 w;
    uint32_t *wp = reinterpret_cast<uint32_t *>(&w);
#pragma unroll
    for (int e = 0; e < 4; e++) wp[e] = DT<T>::pack2(__fdiv_rn(sum[2 * e], size), __fdiv_rn(sum[2 * e + 1], size));
    *reinterpret_cast<uint4 *>(dst) = w;
}

/* the ring: NST stages of a half batch (8 rows x 32 lanes x 16 bytes) a warp, in dynamic shared
 * memory; a lane copies and reads back only its own 16 bytes of each row (cp.async, then its own
 * wait_group), so no barrier is needed */
enum { CMPG_WARPS = 8 };
/* NST stages a warp: 6 (one 192 KB CTA of 8 warps an SM: 5 half batches in flight a warp, 8 warps an
 * SM, 2048 warps in ~1.9 waves at 128K; Hopper) or 3 (two 96 KB CTAs an SM, 2 in flight a warp, 16
 * warps an SM, one wave; devices with less shared memory, or INFLLM_CUDA_COMPRESS_RING=3) */
static constexpr size_t cmpg_smem(int nst) { return (size_t)CMPG_WARPS * nst * (CMPG_S1 / 2) * 32 * 16; }

template <typename T, int NST>
__global__ void __launch_bounds__(CMPG_WARPS * 32, NST == 3 ? 2 : 1)
    k_compress_group(SeqDesc sd, const T *__restrict__ k, T *__restrict__ c1, T *__restrict__ c2,
                     const int32_t *__restrict__ cu_c1, const int32_t *__restrict__ cu_c2, int64_t cols) {
    constexpr int S1 = CMPG_S1, L1 = CMPG_L1, S2 = 4 * S1, L2 = 4 * L1;
    static_assert(L1 == 2 * S1, "k_compress_group: a c1 window spans batches bt and bt + 1");
    extern __shared__ __align__(16) uint4 cmpg_ring[]; /* [warp][stage][row][lane] */
    const int b = blockIdx.y, lane = threadIdx.x & 31;
    uint4 *ring = cmpg_ring + (threadIdx.x >> 5) * NST * (S1 / 2) * 32;
    int64_t q0, k0;
    int32_t lq, lk;
    seq_get(sd, b, q0, lq, k0, lk);
    const int32_t n1 = d_windows(lk, L1, S1), n2 = c2 ? d_windows(lk, L2, S2) : 0;
    const int jg = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (4 * jg >= n1) return;
    const bool has2 = jg < n2;                  /* then all 4 c1 windows exist (they end by row 80 of 128) */
    const int na = n1 - 4 * jg < 4 ? n1 - 4 * jg : 4; /* c1 windows of this group */
    const int nb = has2 ? L2 / S1 : na + 1;      /* batches of S1 rows */
    T *d1 = c1 + ((int64_t)cu_c1[b] + 4 * (int64_t)jg) * cols;
    T *d2 = has2 ? c2 + ((int64_t)cu_c2[b] + jg) * cols : nullptr;
    for (int64_t col = 8 * lane; col < cols; col += 256) {
        const T *src = k + (k0 + (int64_t)S2 * jg) * cols + col;
        float a2[8], lo[8], hi[8];
#pragma unroll
        for (int e = 0; e < 8; e++) a2[e] = lo[e] = hi[e] = 0.f;
        /* half batches of 8 rows through the ring, NST - 1 of them in flight while one is summed
         * (the register-buffered version, one half ahead, ran at 34.5 us at 1 x 128K: ~64 KB in flight
         * an SM, latency-bound; the ring holds ~160 KB in flight an SM) */
        const int nh = 2 * nb;
        auto issue = [&](int h) {
            uint4 *st = ring + (h % NST) * (S1 / 2) * 32 + lane;
#pragma unroll
            for (int r = 0; r < S1 / 2; r++) cp_async16(st + 32 * r, src + (int64_t)(8 * h + r) * cols, 16);
        };
#pragma unroll
        for (int h = 0; h < NST - 1; h++) {
            if (h < nh) issue(h);
            cp_async_commit();
        }
        for (int h = 0; h < nh; h++) {
            if (h + NST - 1 < nh) issue(h + NST - 1); /* the stage read in iteration h - 1 */
            cp_async_commit();
            cp_async_wait<NST - 1>(); /* half h has landed (this lane's own copies) */
            uint4 x[S1 / 2];
            const uint4 *st = ring + (h % NST) * (S1 / 2) * 32 + lane;
#pragma unroll
            for (int r = 0; r < S1 / 2; r++) x[r] = st[32 * r];
            const int bt = h >> 1;
            const bool use_hi = bt < na, use_lo = bt >= 1 && bt <= na;
            cmpg_add_flags<T>(x, a2, lo, hi, use_lo, use_hi);
            if (h & 1) {
                if (use_lo) cmpg_store<T>(d1 + (int64_t)(bt - 1) * cols + col, lo, (float)L1);
#pragma unroll
                for (int e = 0; e < 8; e++) {
                    lo[e] = hi[e];
                    hi[e] = 0.f;
                }
            }
        }
        if (has2) cmpg_store<T>(d2 + col, a2, (float)L2);
    }
}

template <typename T, int NST>
static infllm_status cmpg_launch(SeqDesc sd, const void *k, void *c1, void *c2, int32_t *cu_c1, int32_t *cu_c2,
                                 int64_t cols, dim3 grid, size_t smem, cudaStream_t st) {
    infllm_status s = cuda_func_smem((const void *)k_compress_group<T, NST>, smem, "k_compress_group");
    if (s) return s;
    k_compress_group<T, NST><<<grid, CMPG_WARPS * 32, smem, st>>>(sd, (const T *)k, (T *)c1, (T *)c2, cu_c1, cu_c2, cols);
    return INFLLM_OK;
}

infllm_status cuda_compress_impl(const infllm_attn_params *ap, const void *k, void *c1, void *c2, int32_t *cu_c1,
                                 int32_t *cu_c2, cudaStream_t st) {
    SeqDesc sd = seq_desc(ap);
    infllm_status s0 = cuda_offsets_launch(ap, cu_c1, cu_c2, st);
    if (s0) return s0;
    int32_t max_n = d_windows(ap->max_lk, ap->l1, ap->s1);
    if (max_n <= 0 || ap->total_k == 0) return INFLLM_OK;
    int64_t cols = (int64_t)ap->Hkv * ap->D;
    /* INFLLM_CUDA_NO_COMPRESS16=1: the thread-a-column kernel (A/B, tests); INFLLM_CUDA_NO_COMPRESS_GROUP=1:
     * k_compress16 for the default geometry too */
    static std::atomic<int> no_c16{CUDA_ENV_UNREAD}, no_group{CUDA_ENV_UNREAD};
    const bool vec16 = cuda_env_int("INFLLM_CUDA_NO_COMPRESS16", &no_c16) != 1 && cols % 8 == 0 &&
                       (((uintptr_t)k | (uintptr_t)c1 | (uintptr_t)c2) & 15) == 0;
    /* the 6-stage ring (192 KB) fits an H100 / H200 (227 KB of opt-in shared memory a CTA); an A100
     * (163 KB) takes the 3-stage one (96 KB). INFLLM_CUDA_COMPRESS_RING=3 forces the 3-stage ring, so
     * the A100's path is tested on a Hopper (scripts/cuda_check.sh). Measured at 1 x 128K on the H200
     * (session 16): k_compress_group 35.4 us (register-buffered) -> 29.7 (6 stages) / 35.7 (3 stages). */
    static std::atomic<int> ring{CUDA_ENV_UNREAD};
    const size_t optin = (size_t)cuda_dev_props().smem_optin;
    const int nst = cuda_env_int("INFLLM_CUDA_COMPRESS_RING", &ring) != 3 && cmpg_smem(6) <= optin ? 6 : 3;
    if (vec16 && ap->l1 == CMPG_L1 && ap->s1 == CMPG_S1 && cmpg_smem(nst) <= optin &&
        cuda_env_int("INFLLM_CUDA_NO_COMPRESS_GROUP", &no_group) != 1) {
        const int groups = (max_n + 3) / 4;
        dim3 gg((unsigned)((groups + CMPG_WARPS - 1) / CMPG_WARPS), (unsigned)ap->num_seqs);
        const size_t smem = cmpg_smem(nst);
        infllm_status s1 = INFLLM_OK;
        if (ap->dtype == INFLLM_DTYPE_BF16)
            s1 = nst == 3 ? cmpg_launch<__nv_bfloat16, 3>(sd, k, c1, c2, cu_c1, cu_c2, cols, gg, smem, st)
                         : cmpg_launch<__nv_bfloat16, 6>(sd, k, c1, c2, cu_c1, cu_c2, cols, gg, smem, st);
        else
            s1 = nst == 3 ? cmpg_launch<__half, 3>(sd, k, c1, c2, cu_c1, cu_c2, cols, gg, smem, st)
                         : cmpg_launch<__half, 6>(sd, k, c1, c2, cu_c1, cu_c2, cols, gg, smem, st);
        if (s1) return s1;
        CU_LAUNCH_CHECK("k_compress_group");
        return INFLLM_OK;
    }
    if (vec16) {
        const int warps = 8;
        dim3 g16((unsigned)((max_n + warps - 1) / warps), (unsigned)ap->num_seqs, 2);
        if (ap->dtype == INFLLM_DTYPE_BF16)
            k_compress16<__nv_bfloat16><<<g16, warps * 32, 0, st>>>(sd, (const __nv_bfloat16 *)k,
                                                                   (__nv_bfloat16 *)c1, (__nv_bfloat16 *)c2,
                                                                   cu_c1, cu_c2, cols, ap->l1, ap->s1);
        else
            k_compress16<__half><<<g16, warps * 32, 0, st>>>(sd, (const __half *)k, (__half *)c1, (__half *)c2,
                                                            cu_c1, cu_c2, cols, ap->l1, ap->s1);
        CU_LAUNCH_CHECK("k_compress16");
        return INFLLM_OK;
    }
    int threads = cols >= 256 ? 256 : (int)((cols + 31) / 32 * 32);
    int rpb = 1;
    dim3 grid((unsigned)((max_n + rpb - 1) / rpb), (unsigned)ap->num_seqs, 2);
    if (ap->dtype == INFLLM_DTYPE_BF16)
        k_compress<__nv_bfloat16><<<grid, threads, 0, st>>>(sd, (const __nv_bfloat16 *)k, (__nv_bfloat16 *)c1,
                                                            (__nv_bfloat16 *)c2, cu_c1, cu_c2, cols, ap->l1,
                                                            ap->s1, rpb);
    else
        k_compress<__half><<<grid, threads, 0, st>>>(sd, (const __half *)k, (__half *)c1, (__half *)c2, cu_c1,
                                                     cu_c2, cols, ap->l1, ap->s1, rpb);
    CU_LAUNCH_CHECK("k_compress");
    return INFLLM_OK;
}

extern "C" infllm_status cuda_compress(const infllm_attn_params *ap, const void *k, void *c1, void *c2,
                                       int32_t *cu_c1, int32_t *cu_c2) {
    infllm_status s = cuda_check_entry(ap, "compress_keys", {{k, "k", 2}, {c1, "c1", 2}, {c2, "c2", 2},
                                                             {cu_c1, "cu_seqlens_c1", 4}, {cu_c2, "cu_seqlens_c2", 4}});
    if (s) return s;
    cudaStream_t st = (cudaStream_t)ap->cuda_stream;
    int32_t *tmp = NULL;
    if (!cu_c1 || !cu_c2) {
        CU_CHECK(cudaMallocAsync((void **)&tmp, sizeof(int32_t) * 2 * (ap->num_seqs + 1), st));
        if (!cu_c1) cu_c1 = tmp;
        if (!cu_c2) cu_c2 = tmp + ap->num_seqs + 1;
    }
    s = cuda_compress_impl(ap, k, c1, c2, cu_c1, cu_c2, st);
    if (tmp) cudaFreeAsync(tmp, st);
    return s;
}
