/*
 * cuda_sm90.cuh: Hopper (sm_90a) device helpers shared by the wgmma kernels: the 128-byte
 * swizzled tile layout, shared-memory matrix descriptors, wgmma.mma_async wrappers (m64n64k16
 * with A and B from shared memory, m64n64k16 / m64n128k16 with A from registers; bf16 and f16,
 * f32 accumulate), wgmma fences, mbarriers and TMA tile loads. Everything compiles to nothing
 * outside the sm_90a pass (INFLLM_WGMMA_DEVICE unset), so callers guard their kernel bodies
 * with #ifdef INFLLM_WGMMA_DEVICE.
 */
#pragma once

#include <cuda.h> /* CUtensorMap */

#include "cuda_common.cuh"

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define INFLLM_WGMMA_DEVICE 1
#endif

/* tile of ROWS x D 16-bit elements in 128-byte-swizzle wgmma layout: [D/64][ROWS][64], 16-byte
 * chunk c of a 128-byte row r at c ^ (r & 7); tiles must be 1024-byte aligned */
template <int ROWS> __device__ __forceinline__ int swz90(int row, int col /* multiple of 8 */) {
    return (col >> 6) * ROWS * 64 + row * 64 + ((((col >> 3) & 7) ^ (row & 7)) << 3);
}

/* shared-memory matrix descriptor, 128-byte swizzle; lbo/sbo in bytes */
__device__ __forceinline__ uint64_t gmma_desc(const void *smem, uint32_t lbo, uint32_t sbo) {
    uint32_t a = (uint32_t)__cvta_generic_to_shared(smem);
    uint64_t d = (uint64_t)((a & 0x3FFFF) >> 4);
    d |= (uint64_t)((lbo >> 4) & 0x3FFF) << 16;
    d |= (uint64_t)((sbo >> 4) & 0x3FFF) << 32;
    d |= (uint64_t)1 << 62;
    return d;
}

/* descriptor d advanced by u 16-byte units: the start-address field (bits 0-13, a shared-memory
 * address >> 4, below 256 KB) never carries into the high word, so a 32-bit add does it */
__device__ __forceinline__ uint64_t gdesc_add(uint64_t d, uint32_t u) {
    return (d & 0xffffffff00000000ull) | (uint32_t)((uint32_t)d + u);
}

/* descriptor d as lane 0 of the warp holds it: the same value in every lane, and a shuffle's result is
 * one the compiler knows warp-uniform, so the descriptors built from it (gdesc_add) stay in uniform
 * registers instead of being built in vector registers and moved over by 2 R2UR each */
__device__ __forceinline__ uint64_t gdesc_uniform(uint64_t d) {
    const uint32_t lo = __shfl_sync(0xffffffffu, (uint32_t)d, 0), hi = __shfl_sync(0xffffffffu, (uint32_t)(d >> 32), 0);
    return ((uint64_t)hi << 32) | lo;
}

template <typename T, int N>
__device__ __forceinline__ void wgmma_ss(float (&d)[N / 8][4], uint64_t da, uint64_t db, int scale_d);
template <typename T, int N>
__device__ __forceinline__ void wgmma_rs(float (&d)[N / 8][4], const uint32_t (&a)[4], uint64_t db, int scale_d);
#ifdef INFLLM_WGMMA_DEVICE
/* the accumulator operands of an N = 64 (32 floats a thread) and N = 128 (64) product */
#define WGMMA_ACC_N64 "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
#define WGMMA_ACC_N128 WGMMA_ACC_N64, "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]), "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]), "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]), "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]), "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]), "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3])
/* the three products k_flash90 and k_select90 use, for element type T with PTX type TY: S = A B
 * (m64n64k16, A and B by descriptor) and O += P V (m64n64k16 / m64n128k16, A from registers, B
 * transposed by descriptor); bf16 and f16 differ only in TY */
#define WGMMA_PRODUCTS(T, TY)                                                                                   \
    template <>                                                                                                 \
    __device__ __forceinline__ void wgmma_ss<T, 64>(float(&d)[8][4], uint64_t da, uint64_t db, int scale_d) {   \
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"                                              \
                     "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY                                    \
                     " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n" \
                     : WGMMA_ACC_N64                                                                            \
                     : "l"(da), "l"(db), "r"(scale_d));                                                         \
    }                                                                                                           \
    template <>                                                                                                 \
    __device__ __forceinline__ void wgmma_rs<T, 64>(float(&d)[8][4], const uint32_t(&a)[4], uint64_t db,        \
                                                    int scale_d) {                                              \
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"                                              \
                     "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY                                    \
                     " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n" \
                     : WGMMA_ACC_N64                                                                            \
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(scale_d));                      \
    }                                                                                                           \
    template <>                                                                                                 \
    __device__ __forceinline__ void wgmma_rs<T, 128>(float(&d)[16][4], const uint32_t(&a)[4], uint64_t db,      \
                                                     int scale_d) {                                             \
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"                                              \
                     "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY                                   \
                     " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n" \
                     : WGMMA_ACC_N128                                                                           \
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(scale_d));                      \
    }
WGMMA_PRODUCTS(__nv_bfloat16, "bf16")
WGMMA_PRODUCTS(__half, "f16")
#undef WGMMA_PRODUCTS
#undef WGMMA_ACC_N128
#undef WGMMA_ACC_N64
#endif

/* acc (m64n64, f32) = A B^T over k = 0 .. D - 1 (S = Q K^T): A the 64 rows at descriptor da of a [MA][D] tile, B
 * the [64][D] tile at db, both swizzled (swz90, 16-bit) and K-major; a warpgroup's, uncommitted (the caller
 * fences, commits and waits) */
template <typename T, int D, int MA>
__device__ __forceinline__ void wgmma_rows_keys(float (&acc)[8][4], uint64_t da, uint64_t db) {
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
        const uint32_t ao = (uint32_t)(((kk >> 2) * MA * 64 + (kk & 3) * 16) * 2) >> 4;
        const uint32_t bo = (uint32_t)(((kk >> 2) * 64 * 64 + (kk & 3) * 16) * 2) >> 4;
        wgmma_ss<T, 64>(acc, gdesc_add(da, ao), gdesc_add(db, bo), kk > 0);
    }
}

/* acc (m64nN, f32) += A B over k = 0 .. 16 KS - 1 (O += P V): A from registers, a[ks] the k-step ks fragment (a C
 * fragment packed as the forward's P), B the [16 KS][N] rows at db transposed by the descriptor (k-step ks 16 x 64
 * elements on); a warpgroup's, uncommitted. accumulate 0: acc = A B (the first k-step ignores acc's contents) */
template <typename T, int N, int KS>
__device__ __forceinline__ void wgmma_regs_rows(float (&acc)[N / 8][4], const uint32_t (&a)[KS][4], uint64_t db,
                                                int accumulate = 1) {
#pragma unroll
    for (int ks = 0; ks < KS; ks++)
        wgmma_rs<T, N>(acc, a[ks], gdesc_add(db, (uint32_t)(ks * 16 * 64 * 2) >> 4), ks > 0 || accumulate);
}

__device__ __forceinline__ void wgmma_fence() {
#ifdef INFLLM_WGMMA_DEVICE
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wgmma_commit() {
#ifdef INFLLM_WGMMA_DEVICE
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wgmma_wait0() {
#ifdef INFLLM_WGMMA_DEVICE
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
#endif
}
/* waits until at most N of this warpgroup's committed wgmma groups are pending (the older ones are done) */
template <int N> __device__ __forceinline__ void wgmma_wait() {
#ifdef INFLLM_WGMMA_DEVICE
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}
/* keeps the compiler from moving accumulator reads/writes across the asynchronous MMA */
template <int J> __device__ __forceinline__ void reg_fence(float (&d)[J][4]) {
#pragma unroll
    for (int j = 0; j < J; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) asm volatile("" : "+f"(d[j][e])::"memory");
}
/* the same for 32-bit registers (wgmma A fragments, which the MMA reads asynchronously) */
template <int J> __device__ __forceinline__ void reg_fence_u32(uint32_t (&d)[J][4]) {
#pragma unroll
    for (int j = 0; j < J; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) asm volatile("" : "+r"(d[j][e])::"memory");
}
/* named barrier ID (1..15; 0 is __syncthreads') over N threads (a multiple of 32): named_bar_arrive
 * signals without waiting, named_bar_sync waits until N threads have arrived or synced (FA3's ordering
 * of warpgroups' MMA issue) */
template <int ID, int N> __device__ __forceinline__ void named_bar_sync() {
    asm volatile("bar.sync %0, %1;\n" ::"n"(ID), "n"(N) : "memory");
}
template <int ID, int N> __device__ __forceinline__ void named_bar_arrive() {
    asm volatile("bar.arrive %0, %1;\n" ::"n"(ID), "n"(N) : "memory");
}
__device__ __forceinline__ void fence_proxy_async() {
#ifdef INFLLM_WGMMA_DEVICE
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

/* mbarrier + TMA (cp.async.bulk.tensor): a stage's K and V tiles arrive as one transaction */
__device__ __forceinline__ void mbar_init(uint64_t *bar) {
#ifdef INFLLM_WGMMA_DEVICE
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"((uint32_t)__cvta_generic_to_shared(bar)));
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}
/* an mbarrier that completes a phase when `count` threads have arrived (mbar_arrive), for a stage's
 * release by its consumers */
__device__ __forceinline__ void mbar_init_count(uint64_t *bar, uint32_t count) {
#ifdef INFLLM_WGMMA_DEVICE
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"((uint32_t)__cvta_generic_to_shared(bar)),
                 "r"(count));
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void mbar_arrive(uint64_t *bar) {
#ifdef INFLLM_WGMMA_DEVICE
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"((uint32_t)__cvta_generic_to_shared(bar))
                 : "memory");
#endif
}
__device__ __forceinline__ void mbar_expect_tx(uint64_t *bar, uint32_t bytes) {
#ifdef INFLLM_WGMMA_DEVICE
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(
                     (uint32_t)__cvta_generic_to_shared(bar)),
                 "r"(bytes)
                 : "memory");
#endif
}
__device__ __forceinline__ void mbar_wait(uint64_t *bar, uint32_t parity) {
#ifdef INFLLM_WGMMA_DEVICE
    asm volatile("{\n.reg .pred P1;\nLAB_WAIT:\n"
                 "mbarrier.try_wait.parity.shared::cta.b64 P1, [%0], %1;\n"
                 "@P1 bra DONE;\nbra LAB_WAIT;\nDONE:\n}\n" ::"r"((uint32_t)__cvta_generic_to_shared(bar)),
                 "r"(parity)
                 : "memory");
#endif
}
/* box {64 columns, 1 head, 64 tokens} at (col, head, token) into a 128-byte-swizzled [64][64] tile */
__device__ __forceinline__ void tma_load(void *dst, const CUtensorMap *map, uint64_t *bar, int col, int head, int tok) {
#ifdef INFLLM_WGMMA_DEVICE
    asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, "
                 "%4}], [%5];\n" ::"r"((uint32_t)__cvta_generic_to_shared(dst)),
                 "l"((uint64_t)map), "r"(col), "r"(head), "r"(tok), "r"((uint32_t)__cvta_generic_to_shared(bar))
                 : "memory");
#endif
}

template <int D, int ROWS, int NT>
__device__ __forceinline__ void load_tile90(uint16_t *s, const uint16_t *g, int64_t stride, int nvalid) {
    constexpr int CH = D / 8;
    for (int i = threadIdx.x; i < ROWS * CH; i += NT) {
        int r = i / CH, c = i % CH;
        bool ok = r < nvalid;
        const uint16_t *src = g + (ok ? (int64_t)r * stride : 0) + c * 8;
        cp_async16(s + swz90<ROWS>(r, c * 8), src, ok ? 16 : 0);
    }
}
