/*
 * cuda_compress.cu: key compression (SPEC B §4) on the GPU, the device-side c1/c2 row offsets,
 * and device detection.
 *
 *   c1[c1_0(b) + j][g][:] = (sum_{u<l1} k[k0(b) + s1*j + u][g][:]) / l1   (f32, index order)
 *   c2 likewise with (l2, s2) = (4*l1, 4*s1)
 * The f32 sum runs in index order and is divided (IEEE, not by a reciprocal) before rounding, like
 * cpu_mean_window, so c1/c2 are bit-identical to the CPU path.
 */
#include "cuda_common.cuh"
#include "cuda_internal.cuh"

extern "C" int cuda_device_available(void) {
    static int cached = -1;
    if (cached < 0) {
        int n = 0;
        cudaError_t e = cudaGetDeviceCount(&n);
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            n = 0;
        }
        cached = n > 0;
    }
    return cached;
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

infllm_status cuda_check_aligned(const char *op, std::initializer_list<CudaArg> args) {
    for (const CudaArg &a : args)
        if (a.ptr && ((uintptr_t)a.ptr & (a.align - 1)))
            return infllm_set_error(INFLLM_ERR_UNSUPPORTED, "CUDA backend (%s): %s at %p is not %u-byte aligned", op,
                                    a.name, a.ptr, a.align);
    return INFLLM_OK;
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
    return INFLLM_OK;
}

infllm_status cuda_offsets_launch(const infllm_attn_params *ap, int32_t *cu_c1, int32_t *cu_c2, cudaStream_t st) {
    k_offsets<<<1, 32, 0, st>>>(seq_desc(ap), ap->l1, ap->s1, ap->l2, ap->s2, cu_c1, cu_c2);
    CU_LAUNCH_CHECK("k_offsets");
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
    /* INFLLM_CUDA_NO_COMPRESS16=1: the thread-a-column kernel (A/B, tests) */
    static std::atomic<int> no_c16{CUDA_ENV_UNREAD};
    if (cuda_env_int("INFLLM_CUDA_NO_COMPRESS16", &no_c16) != 1 && cols % 8 == 0 &&
        (((uintptr_t)k | (uintptr_t)c1 | (uintptr_t)c2) & 15) == 0) {
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
    infllm_status s = cuda_check_supported(ap, "compress_keys");
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
