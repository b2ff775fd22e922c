/*
 * chain_rate.cu: the per-chunk chain of two stage-2 tile shapes on an sm_90a GPU, to decide whether a
 * transposed 2-token tile is worth building (docs/CUDA_NOTES.md "Session 34": at 128K the 2-token union is
 * 1.36x of a token's blocks against 1.88x for today's 4-token warpgroup). Not part of the build, no
 * library code; values are zeros (the chain's time does not depend on them):
 *
 *   nvcc -O3 -std=c++17 -arch=sm_90a -Isrc/cuda -Isrc/core -Iinclude -o chain_rate bench/chain_rate.cu && ./chain_rate
 *
 * A warpgroup runs ITERS chunks of 64 keys (d 128, bf16, f32 accumulate), each one:
 *   mode 0 (today's k_flash90 shape, 4 tokens x 16 heads = 64 rows): S = Q K^T (8 x m64n64k16, both from
 *     shared memory), row max (2 shuffles), rescale of O (64 floats) and l, P = exp2 (32 a thread), P packed
 *     into A fragments, O += P V (4 x m64n128k16, A from registers, V transposed by descriptor);
 *   mode 1 (transposed, 2 tokens x 16 heads = 32 columns): S^T = K Q^T (8 x m64n32k16), the column max over
 *     the 64 keys (3 shuffles, then the 4 warps through shared memory and a warpgroup barrier), rescale of O^T
 *     (32 floats) and l, P^T = exp2 (16 a thread) stored transposed by stmatrix into a 128-byte-swizzled
 *     [32][64] tile, async-proxy fence and warpgroup barrier, O^T += V^T P^T (2 m-tiles x 4 k-steps of
 *     m64n32k16, V^T by a transposed-A descriptor, P^T by descriptor);
 *   mode 2: mode 1 with the column max kept per warp (no shared-memory exchange and its barrier: the bound of
 *     a reference-max scheme that rescales rarely).
 * No chunk overlaps the next (each waits for its P V product), in every mode alike. Prints ns per chunk per
 * warpgroup, ns per token-chunk (mode 0: 4 tokens, modes 1-2: 2), and the stage-2 time ratio the unions
 * predict, (t_mode / tokens x union_2) / (t_0 / 4 x union_4), for the unions given (default 1.36 / 1.88:
 * greedy in 16-token windows at 128K); below 1 the transposed tile would win on these inputs.
 */
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>

#include "bench_cuda.h"
#include "cuda_sm90.cuh"

constexpr int ITERS = 1024;
constexpr int TILE = 64 * 128 * 2; /* a [64][128] bf16 tile: 16 KB */
/* Q (mode 0: 64 rows; modes 1-2: 32), K, V; P^T [32][64] a warpgroup (4 KB each); column maxima [4 warps][32] a
 * warpgroup */
[[maybe_unused]] constexpr int SM_Q = 0, SM_K = TILE, SM_V = 2 * TILE, SM_P = 3 * TILE, SM_X = SM_P + 2 * 4096;
constexpr int SMEM = SM_X + 2 * 4 * 32 * 4 + 1024;

#ifdef INFLLM_WGMMA_DEVICE
#define ACC16(d) "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
                 "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
/* m64n32k16, A and B by descriptor; TA: A transposed (MN-major, V^T from V [keys][d]); scale_d 0: D = A B */
template <int TA> __device__ __forceinline__ void wg32_ss(float (&d)[16], uint64_t da, uint64_t db, int scale_d) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %19, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, "
                 "%10, %11, %12, %13, %14, %15}, %16, %17, p, 1, 1, %18, 0;\n}\n"
                 : ACC16(d)
                 : "l"(da), "l"(db), "n"(TA), "r"(scale_d));
}
/* a barrier of this warpgroup's 128 threads: ID id (1..15) given at run time, one per warpgroup */
__device__ __forceinline__ void wg_bar(int id) { asm volatile("bar.sync %0, 128;\n" ::"r"(id) : "memory"); }
#endif

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&v);
}

template <int MODE> __global__ void __launch_bounds__(256, 1) k_chain(float *sink) {
#ifdef INFLLM_WGMMA_DEVICE
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    unsigned char *smem = (unsigned char *)(((uintptr_t)smem_raw + 1023) & ~(uintptr_t)1023);
    for (int i = threadIdx.x; i < SMEM / 4 - 256; i += blockDim.x) ((uint32_t *)smem)[i] = 0u;
    __syncthreads();
    const int wg = threadIdx.x >> 7, warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31;
    const int g = lane >> 2, c = lane & 3;
    const float scale = 0.125f * 1.4426950408889634f;
    float acc_sum = 0.f;
    if (MODE == 0) {
        const uint64_t dq = gmma_desc(smem + SM_Q, 16, 1024), dk = gmma_desc(smem + SM_K, 16, 1024),
                       dv = gmma_desc(smem + SM_V, 64 * 128, 1024);
        float o[16][4], s[8][4], m[2] = {-1e30f, -1e30f}, l[2] = {0.f, 0.f};
#pragma unroll
        for (int j = 0; j < 16; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) o[j][e] = 0.f;
        for (int it = 0; it < ITERS; it++) {
            wgmma_fence();
#pragma unroll
            for (int kk = 0; kk < 8; kk++) /* k-step kk: atom kk / 4 (8 KB), 32 bytes into it per step */
                wgmma_ss<__nv_bfloat16, 64>(s, gdesc_add(dq, (kk >> 2) * 512 + (kk & 3) * 2),
                                            gdesc_add(dk, (kk >> 2) * 512 + (kk & 3) * 2), kk > 0);
            wgmma_commit();
            wgmma_wait0();
            reg_fence(s);
            float mx[2] = {m[0], m[1]};
#pragma unroll
            for (int j = 0; j < 8; j++) {
                mx[0] = fmaxf(mx[0], fmaxf(s[j][0], s[j][1]) * scale);
                mx[1] = fmaxf(mx[1], fmaxf(s[j][2], s[j][3]) * scale);
            }
#pragma unroll
            for (int r = 0; r < 2; r++) {
                mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
                mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
            }
            const float al0 = exp2f(m[0] - mx[0]), al1 = exp2f(m[1] - mx[1]);
            m[0] = mx[0], m[1] = mx[1];
            l[0] *= al0, l[1] *= al1;
#pragma unroll
            for (int j = 0; j < 16; j++) o[j][0] *= al0, o[j][1] *= al0, o[j][2] *= al1, o[j][3] *= al1;
            uint32_t pf[4][4];
#pragma unroll
            for (int j = 0; j < 8; j++) {
                const float p0 = exp2f(s[j][0] * scale - m[0]), p1 = exp2f(s[j][1] * scale - m[0]),
                            p2 = exp2f(s[j][2] * scale - m[1]), p3 = exp2f(s[j][3] * scale - m[1]);
                l[0] += p0 + p1, l[1] += p2 + p3;
                pf[j >> 1][(j & 1) * 2] = pack_bf16(p0, p1);     /* row g, keys 8 (j & 1) + 2c of k-step j / 2 */
                pf[j >> 1][(j & 1) * 2 + 1] = pack_bf16(p2, p3); /* row g + 8 */
            }
            wgmma_fence();
#pragma unroll
            for (int kk = 0; kk < 4; kk++) wgmma_rs<__nv_bfloat16, 128>(o, pf[kk], gdesc_add(dv, kk * 128), 1);
            wgmma_commit();
            wgmma_wait0();
            reg_fence(o);
        }
#pragma unroll
        for (int j = 0; j < 16; j++) acc_sum += o[j][0] + o[j][1] + o[j][2] + o[j][3];
        acc_sum += l[0] + l[1];
    } else {
        unsigned char *sp = smem + SM_P + wg * 4096;
        float *sx = (float *)(smem + SM_X) + wg * 4 * 32;
        const uint64_t dk = gmma_desc(smem + SM_K, 16, 1024), dq = gmma_desc(smem + SM_Q, 16, 1024),
                       dv = gmma_desc(smem + SM_V, 64 * 128, 1024), dp = gmma_desc(sp, 16, 1024);
        /* stmatrix addresses: lane i stores row i % 8 of matrix i / 8; matrix q of call h covers columns
         * 8 (2h + q / 2) .. +7 and keys 16 warp + 8 (q & 1) .. +7 (16 bytes at chunk 2 warp + (q & 1)) */
        uint32_t st_addr[2];
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int q = lane >> 3, n = 8 * (2 * h + (q >> 1)) + (lane & 7), ch = 2 * warp + (q & 1);
            st_addr[h] = (uint32_t)__cvta_generic_to_shared(sp + n * 128 + ((ch ^ (n & 7)) << 4));
        }
        float o[2][16], s[16], m[8], l[8];
#pragma unroll
        for (int i = 0; i < 8; i++) m[i] = -1e30f, l[i] = 0.f;
#pragma unroll
        for (int t = 0; t < 2; t++)
#pragma unroll
            for (int e = 0; e < 16; e++) o[t][e] = 0.f;
        for (int it = 0; it < ITERS; it++) {
            wgmma_fence();
#pragma unroll
            for (int kk = 0; kk < 8; kk++) /* K atoms of 8 KB, Q atoms of 4 KB (32 rows) */
                wg32_ss<0>(s, gdesc_add(dk, (kk >> 2) * 512 + (kk & 3) * 2),
                           gdesc_add(dq, (kk >> 2) * 256 + (kk & 3) * 2), kk > 0);
            wgmma_commit();
            wgmma_wait0();
#pragma unroll
            for (int e = 0; e < 16; e++) asm volatile("" : "+f"(s[e])::"memory");
            /* column i (0..7) of this thread: 8 (i / 2) + 2c + (i & 1); rows g and g + 8 of the warp's 16 keys */
            float mx[8];
#pragma unroll
            for (int i = 0; i < 8; i++) {
                const int j = i >> 1, e = i & 1;
                mx[i] = fmaxf(s[4 * j + e], s[4 * j + 2 + e]) * scale;
                mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 4));
                mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 8));
                mx[i] = fmaxf(mx[i], __shfl_xor_sync(0xffffffffu, mx[i], 16));
            }
            if (MODE == 1) {
                if (g == 0)
#pragma unroll
                    for (int i = 0; i < 8; i++) sx[warp * 32 + 8 * (i >> 1) + 2 * c + (i & 1)] = mx[i];
                wg_bar(1 + wg);
#pragma unroll
                for (int i = 0; i < 8; i++) {
                    const int col = 8 * (i >> 1) + 2 * c + (i & 1);
                    mx[i] = fmaxf(fmaxf(sx[col], sx[32 + col]), fmaxf(sx[64 + col], sx[96 + col]));
                }
            }
#pragma unroll
            for (int i = 0; i < 8; i++) {
                mx[i] = fmaxf(mx[i], m[i]);
                const float al = exp2f(m[i] - mx[i]);
                m[i] = mx[i];
                l[i] *= al;
                o[0][4 * (i >> 1) + (i & 1)] *= al, o[0][4 * (i >> 1) + 2 + (i & 1)] *= al;
                o[1][4 * (i >> 1) + (i & 1)] *= al, o[1][4 * (i >> 1) + 2 + (i & 1)] *= al;
            }
            uint32_t pr[8]; /* [j][half]: keys g (half 0) / g + 8 (half 1), columns 8 j + 2c, +1 */
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const float p0 = exp2f(s[4 * j] * scale - m[2 * j]), p1 = exp2f(s[4 * j + 1] * scale - m[2 * j + 1]),
                            p2 = exp2f(s[4 * j + 2] * scale - m[2 * j]),
                            p3 = exp2f(s[4 * j + 3] * scale - m[2 * j + 1]);
                l[2 * j] += p0 + p2, l[2 * j + 1] += p1 + p3;
                pr[2 * j] = pack_bf16(p0, p1);
                pr[2 * j + 1] = pack_bf16(p2, p3);
            }
#pragma unroll
            for (int h = 0; h < 2; h++)
                asm volatile("stmatrix.sync.aligned.m8n8.x4.trans.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(st_addr[h]),
                             "r"(pr[4 * h]), "r"(pr[4 * h + 1]), "r"(pr[4 * h + 2]), "r"(pr[4 * h + 3])
                             : "memory");
            asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
            wg_bar(3 + wg);
            wgmma_fence();
#pragma unroll
            for (int t = 0; t < 2; t++) /* m-tile t: d 64 t .. 64 t + 63, one atom of V */
#pragma unroll
                for (int kk = 0; kk < 4; kk++)
                    wg32_ss<1>(o[t], gdesc_add(dv, t * 512 + kk * 128), gdesc_add(dp, kk * 2), 1);
            wgmma_commit();
            wgmma_wait0();
#pragma unroll
            for (int t = 0; t < 2; t++)
#pragma unroll
                for (int e = 0; e < 16; e++) asm volatile("" : "+f"(o[t][e])::"memory");
        }
#pragma unroll
        for (int t = 0; t < 2; t++)
#pragma unroll
            for (int e = 0; e < 16; e++) acc_sum += o[t][e];
#pragma unroll
        for (int i = 0; i < 8; i++) acc_sum += l[i];
    }
    if (acc_sum == 12345.678f) sink[blockIdx.x] = acc_sum; /* never (keeps the chain alive) */
#else
    (void)sink;
#endif
}

template <int MODE> static int run(int sms, float *sink, double &ns_chunk) {
    CK(cudaFuncSetAttribute(k_chain<MODE>, cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM));
    int per_sm = 0;
    CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k_chain<MODE>, 256, SMEM));
    const int grid = sms * (per_sm > 0 ? per_sm : 1) * 4;
    k_chain<MODE><<<grid, 256, SMEM>>>(sink); /* warm-up */
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    float best;
    if (best_ms([&] { k_chain<MODE><<<grid, 256, SMEM>>>(sink); }, best)) return 1;
    /* the SMs' time per chunk of one warpgroup: total time x SMs / (chunks of all warpgroups) */
    ns_chunk = (double)best * 1e6 * sms / ((double)grid * 2 * ITERS);
    printf("mode %d: %d CTAs of 2 warpgroups an SM, %.3f ms for %d CTAs x %d chunks\n", MODE, per_sm, best, grid, ITERS);
    return 0;
}

int main(int argc, char **argv) {
    const double u2 = argc > 1 ? atof(argv[1]) : 1.36, u4 = argc > 2 ? atof(argv[2]) : 1.88;
    int dev = 0, sms = 0, major = 0;
    CK(cudaGetDevice(&dev));
    CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    CK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
    if (major != 9) {
        printf("chain_rate: needs compute capability 9.0; skipped\n");
        return 0;
    }
    float *sink;
    CK(cudaMalloc(&sink, sizeof(float) * sms * 64));
    double t[3];
    if (run<0>(sms, sink, t[0]) || run<1>(sms, sink, t[1]) || run<2>(sms, sink, t[2])) return 1;
    printf("| mode | tokens a tile | ns a chunk (SM time) | ns a token-chunk | predicted stage 2 vs mode 0 (unions %.2f / %.2f) |\n",
           u2, u4);
    printf("|---|---|---|---|---|\n");
    for (int md = 0; md < 3; md++) {
        const int tok = md == 0 ? 4 : 2;
        const double per_tok = t[md] / tok, pred = md == 0 ? 1.0 : (per_tok * u2) / (t[0] / 4 * u4);
        printf("| %d | %d | %.1f | %.1f | %.2f |\n", md, tok, t[md], per_tok, pred);
    }
    CK(cudaFree(sink));
    return 0;
}
