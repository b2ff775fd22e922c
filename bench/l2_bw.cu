/*
 * l2_bw.cu: the rate at which an H200's SMs can pull K / V chunks into shared memory by bulk copies,
 * as the sparse stage 2 (k_flash90) does: each CTA (256 threads, 2 stages of one 32 KB chunk) has
 * thread 0 copy a pseudo-random 32 KB chunk (two 16 KB halves, "K" and "V") of a buffer of S bytes
 * into the stage freed last, with the stage's mbarrier counting the bytes; nothing else runs. The
 * question it answers (docs/CUDA_NOTES.md, session 17): stage 2 at 128K moves ~242 GB from L2 in
 * ~46 ms (~5.2 TB/s); is that near what the memory system gives for this pattern, i.e. is the
 * union walk bound by L2 -> SM bytes rather than by its instruction chain?
 *
 * Not part of the build (sm_90 only, no library code):
 *
 *   nvcc -O3 -gencode arch=compute_90a,code=sm_90a -Isrc/cuda -Isrc/core -Iinclude -o l2_bw bench/l2_bw.cu && ./l2_bw
 *
 * Prints one row a (buffer size, CTAs an SM, stages) with TB/s. A buffer well inside the L2 (50 MB
 * on the H200, split in two partitions) gives the L2 -> SM rate; 64 MB is one KV head's K and V at
 * 128K x d 128 (stage 2's working set with zmajor); 2 GB is the HBM rate.
 */
#include <cstdint>
#include <cstdio>
#include <cuda_runtime.h>

#include "bench_cuda.h"
#include "cuda_sm90.cuh"

constexpr int CHUNK = 32768, HALF = CHUNK / 2;

/* the library's mbarrier helpers (mbar_init / mbar_expect_tx / mbar_wait), as k_flash90 uses them;
 * the plain (non-tensor) bulk copy below is the only one this file adds */
__device__ __forceinline__ void bulk_copy(void *dst, const void *src, uint32_t bytes, uint64_t *b) {
#ifdef INFLLM_WGMMA_DEVICE
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                     (uint32_t)__cvta_generic_to_shared(dst)),
                 "l"(src), "r"(bytes), "r"((uint32_t)__cvta_generic_to_shared(b))
                 : "memory");
#endif
}

/* chunk i of CTA c: a hash, so that CTAs in flight touch the whole buffer as stage 2's do */
__device__ __forceinline__ uint64_t pick(uint32_t c, uint32_t i, uint64_t nchunks) {
    uint32_t h = c * 0x9E3779B1u ^ (i + 0x7F4A7C15u) * 0x85EBCA77u;
    h ^= h >> 15;
    h *= 0x2C1B3C6Du;
    h ^= h >> 13;
    return h % nchunks;
}

__global__ void __launch_bounds__(256) k_pull(const unsigned char *buf, uint64_t nchunks, int iters, int nst,
                                              unsigned long long *sink) {
    extern __shared__ __align__(128) unsigned char smem[];
    __shared__ __align__(8) uint64_t bar[8];
    if (threadIdx.x == 0) {
        for (int s = 0; s < nst; s++) mbar_init(&bar[s]);
    }
    __syncthreads();
    if (threadIdx.x != 0) return;
    uint32_t phase = 0;
    const uint32_t c = blockIdx.x;
    const uint64_t half_off = nchunks * HALF; /* "V" lives in the buffer's second half */
    for (int s = 0; s < nst && s < iters; s++) {
        const uint64_t ch = pick(c, s, nchunks);
        mbar_expect_tx(&bar[s], CHUNK);
        bulk_copy(smem + s * CHUNK, buf + ch * HALF, HALF, &bar[s]);
        bulk_copy(smem + s * CHUNK + HALF, buf + half_off + ch * HALF, HALF, &bar[s]);
    }
    unsigned long long acc = 0;
    for (int i = 0; i < iters; i++) {
        const int s = i % nst;
        mbar_wait(&bar[s], (phase >> s) & 1u);
        phase ^= 1u << s;
        acc += smem[s * CHUNK + (i & 1023)];
        const int nx = i + nst;
        if (nx < iters) {
            const uint64_t ch = pick(c, nx, nchunks);
            mbar_expect_tx(&bar[s], CHUNK);
            bulk_copy(smem + s * CHUNK, buf + ch * HALF, HALF, &bar[s]);
            bulk_copy(smem + s * CHUNK + HALF, buf + half_off + ch * HALF, HALF, &bar[s]);
        }
    }
    if (acc == 0x123456789ull) *sink = acc; /* never true: keeps the reads */
}

int main() {
    int dev = 0, sms = 0, l2 = 0;
    CK(cudaGetDevice(&dev));
    CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    CK(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev));
    const size_t max_bytes = (size_t)2 << 30;
    unsigned char *buf = nullptr;
    unsigned long long *sink = nullptr;
    CK(cudaMalloc(&buf, max_bytes));
    CK(cudaMalloc(&sink, 8));
    CK(cudaMemset(buf, 1, max_bytes));
    CK(cudaFuncSetAttribute(k_pull, cudaFuncAttributeMaxDynamicSharedMemorySize, 4 * CHUNK));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    printf("# l2_bw: %d SMs, L2 %.1f MB; 32 KB chunks (2 x 16 KB bulk copies) into shared memory\n", sms, l2 / 1048576.0);
    printf("| buffer MB | CTAs / SM | stages | KB in flight / SM | TB/s |\n| --- | --- | --- | --- | --- |\n");
    const size_t sizes_mb[] = {16, 32, 48, 64, 128, 2048};
    const int ctas_per_sm[] = {1, 2, 3};
    const int stages[] = {2, 3};
    for (size_t mb : sizes_mb) {
        const uint64_t nchunks = (uint64_t)(mb << 20) / CHUNK;
        for (int cps : ctas_per_sm)
            for (int nst : stages) {
                if (cps * nst * CHUNK > 200 * 1024) continue;
                const int grid = sms * cps, iters = 2048;
                k_pull<<<grid, 256, nst * CHUNK>>>(buf, nchunks, 64, nst, sink); /* warm */
                CK(cudaGetLastError());
                CK(cudaEventRecord(e0));
                const int reps = 3;
                for (int r = 0; r < reps; r++) k_pull<<<grid, 256, nst * CHUNK>>>(buf, nchunks, iters, nst, sink);
                CK(cudaEventRecord(e1));
                CK(cudaEventSynchronize(e1));
                CK(cudaGetLastError());
                float ms = 0.f;
                CK(cudaEventElapsedTime(&ms, e0, e1));
                const double bytes = (double)reps * grid * iters * CHUNK;
                printf("| %zu | %d | %d | %d | %.2f |\n", mb, cps, nst, cps * nst * 32, bytes / (ms * 1e-3) / 1e12);
            }
    }
    return 0;
}
