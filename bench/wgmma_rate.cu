/*
 * wgmma_rate.cu: the H200's rate for wgmma m64nNk16 (bf16 in, f32 accumulate) with both operands in
 * shared memory (128-byte swizzle, as k_flash90 / k_select90 use them), for N = 16, 32, 64, 128 and
 * 1, 2 or 4 warpgroups an SM. Question it answers (docs/CUDA_NOTES.md, "Stage 2 and its 28 ms
 * target"): how much of the tensor rate a per-token product (S^T = K_c Q_t^T, N = 16 = one token's
 * heads) keeps against today's N = 64. Not part of the build (sm_90a only, no library code):
 *
 *   nvcc -O3 -arch=sm_90a -o wgmma_rate bench/wgmma_rate.cu && ./wgmma_rate
 *
 * Each warpgroup runs ITERS iterations of the same 64 x 128 x 64 MACs, as 128 / N independent
 * m64nN products (K = 64: 4 k-steps of m64nNk16) issued together, one commit, then a wait for all
 * (the shape of a chunk loop: per token, N = 16 gives 8 products a chunk for 8 tokens); operands a
 * 64 x 64 A tile and a 128 x 64 B tile in shared memory, zeros. One CTA per SM with 1, 2 or 4
 * warpgroups, grid = SM count x 4 waves. Prints TFLOP/s and the ratios to N = 128 and N = 64; then
 * the same with A from registers (the RS form, N = 16 / 32 / 64). Session 11 (H200): SS m64n16 runs
 * at 0.40 of m64n64's rate (388 vs 970 TFLOP/s, 1-4 warpgroups alike).
 */
#include <cstdint>
#include <cstdio>
#include <cuda_runtime.h>

#include "bench_cuda.h"

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define WG_DEVICE 1
#endif

__device__ __forceinline__ uint64_t desc128(const void *smem) { /* 128-byte swizzle, lbo 16, sbo 1024 */
    uint32_t a = (uint32_t)__cvta_generic_to_shared(smem);
    uint64_t d = (uint64_t)((a & 0x3FFFF) >> 4);
    d |= (uint64_t)(16 >> 4) << 16;
    d |= (uint64_t)(1024 >> 4) << 32;
    d |= (uint64_t)1 << 62;
    return d;
}
template <int N> __device__ __forceinline__ void wg_ss(float (&d)[N / 2], uint64_t da, uint64_t db);
#ifdef WG_DEVICE
template <> __device__ __forceinline__ void wg_ss<16>(float (&d)[8], uint64_t da, uint64_t db) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7}, %8, %9, p, 1, 1, 0, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
                 : "l"(da), "l"(db));
}
template <> __device__ __forceinline__ void wg_ss<32>(float (&d)[16], uint64_t da, uint64_t db) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, %16, %17, p, 1, 1, 0, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
                 : "l"(da), "l"(db));
}
template <> __device__ __forceinline__ void wg_ss<64>(float (&d)[32], uint64_t da, uint64_t db) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                 : "l"(da), "l"(db));
}
template <> __device__ __forceinline__ void wg_ss<128>(float (&d)[64], uint64_t da, uint64_t db) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
                 : "l"(da), "l"(db));
}
/* the same with A (64 x 16 per k-step) from registers, 4 x b32 a thread (the RS form: a chunk's K
 * tile held in registers across the tokens that selected it); B still from shared memory */
template <int N> __device__ __forceinline__ void wg_rs(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t db);
template <> __device__ __forceinline__ void wg_rs<16>(float (&d)[8], const uint32_t (&a)[4], uint64_t db) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7}, {%8, %9, %10, %11}, %12, p, 1, 1, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db));
}
template <> __device__ __forceinline__ void wg_rs<32>(float (&d)[16], const uint32_t (&a)[4], uint64_t db) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, {%16, %17, %18, %19}, %20, p, 1, 1, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db));
}
template <> __device__ __forceinline__ void wg_rs<64>(float (&d)[32], const uint32_t (&a)[4], uint64_t db) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db));
}
#endif

constexpr int ITERS = 2048;

/* per iteration: the same 64 x 128 x 64 MACs as NACC = 128 / N independent m64nN products (K = 64:
 * 4 k-steps each), all issued, one commit, then a wait for all of them (a chunk loop's shape) */
template <int N, bool RS> __global__ void __launch_bounds__(RS ? 256 : 512, 1) k_rate(float *sink, int nwg) {
#ifdef WG_DEVICE
    constexpr int NACC = 128 / N;
    extern __shared__ __align__(1024) unsigned char smem[];
    const int wg = threadIdx.x >> 7;
    /* A: [64 rows][64] at 0, B: [128 rows][64] at 8 KB; zeros (the rate does not depend on values) */
    for (int i = threadIdx.x; i < (64 + 128) * 64 / 2; i += blockDim.x) ((uint32_t *)smem)[i] = 0u;
    __syncthreads();
    if (wg >= nwg) return;
    const uint64_t da = desc128(smem), db = desc128(smem + 64 * 64 * 2);
    float d[NACC][N / 2];
#pragma unroll
    for (int a = 0; a < NACC; a++)
#pragma unroll
        for (int j = 0; j < N / 2; j++) d[a][j] = 0.f;
    uint32_t ra[4][4]; /* RS: the A tile's 4 k-steps in registers (zeros, loaded once) */
#pragma unroll
    for (int kk = 0; kk < 4; kk++)
#pragma unroll
        for (int j = 0; j < 4; j++) ra[kk][j] = ((const uint32_t *)smem)[(threadIdx.x & 127) * 4 + j + kk];
    for (int it = 0; it < ITERS; it++) {
        asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
        for (int a = 0; a < NACC; a++)
#pragma unroll
            for (int kk = 0; kk < 4; kk++) { /* k-step kk: 16 columns = 32 bytes; product a: B rows N a.. */
                if constexpr (RS)
                    wg_rs<N>(d[a], ra[kk], db + ((uint64_t)(a * N * 128) >> 4) + 2 * kk);
                else
                    wg_ss<N>(d[a], da + 2 * kk, db + ((uint64_t)(a * N * 128) >> 4) + 2 * kk);
            }
        asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
        asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
#pragma unroll
        for (int a = 0; a < NACC; a++)
#pragma unroll
            for (int j = 0; j < N / 2; j++) asm volatile("" : "+f"(d[a][j])::"memory");
    }
    float s = 0.f;
#pragma unroll
    for (int a = 0; a < NACC; a++)
#pragma unroll
        for (int j = 0; j < N / 2; j++) s += d[a][j];
    if (s != 0.f) sink[blockIdx.x] = s; /* never true (zeros); keeps the products alive */
#endif
}

template <int N, bool RS = false> static int run(int sms, int nwg, float *sink, double &tflops) {
    const int smem = (64 + 128) * 64 * 2 + 1024;
    CK(cudaFuncSetAttribute(k_rate<N, RS>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    const int grid = sms * 4;
    k_rate<N, RS><<<grid, 128 * nwg, smem>>>(sink, nwg); /* warm-up */
    CK(cudaGetLastError());
    float best;
    if (best_ms([&] { k_rate<N, RS><<<grid, 128 * nwg, smem>>>(sink, nwg); }, best)) return 1;
    const double flops = 2.0 * 64 * 128 * 64 * (double)ITERS * nwg * grid;
    tflops = flops / (best * 1e-3) / 1e12;
    return 0;
}

int main() {
    int dev = 0, sms = 0, major = 0, minor = 0;
    CK(cudaGetDevice(&dev));
    CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    CK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    CK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
    if (major != 9) {
        printf("wgmma_rate: needs compute capability 9.0 (this device: %d.%d); skipped\n", major, minor);
        return 0;
    }
    float *sink;
    CK(cudaMalloc(&sink, sizeof(float) * sms * 4));
    printf("| warpgroups an SM | N = 16 TFLOP/s | N = 32 | N = 64 | N = 128 | N = 16 / N = 128 | N = 16 / N = 64 |\n");
    printf("|---|---|---|---|---|---|---|\n");
    for (int nwg = 1; nwg <= 4; nwg *= 2) {
        double t16, t32, t64, t128;
        if (run<16>(sms, nwg, sink, t16) || run<32>(sms, nwg, sink, t32) || run<64>(sms, nwg, sink, t64) ||
            run<128>(sms, nwg, sink, t128))
            return 1;
        printf("| %d | %.0f | %.0f | %.0f | %.0f | %.2f | %.2f |\n", nwg, t16, t32, t64, t128, t16 / t128, t16 / t64);
    }
    printf("\nA from registers (RS form), B from shared memory\n");
    printf("| warpgroups an SM | N = 16 TFLOP/s | N = 32 | N = 64 | N = 16 / N = 64 (SS) |\n|---|---|---|---|---|\n");
    for (int nwg = 1; nwg <= 2; nwg *= 2) { /* RS: ~190 registers (ptxas keeps A per product in flight) */
        double r16, r32, r64, t64;
        if (run<16, true>(sms, nwg, sink, r16) || run<32, true>(sms, nwg, sink, r32) ||
            run<64, true>(sms, nwg, sink, r64) || run<64>(sms, nwg, sink, t64))
            return 1;
        printf("| %d | %.0f | %.0f | %.0f | %.2f |\n", nwg, r16, r32, r64, r16 / t64);
    }
    CK(cudaFree(sink));
    return 0;
}
