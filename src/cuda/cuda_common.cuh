/*
 * cuda_common.cuh: shared helpers of the CUDA backend (src/cuda/*.cu).
 *
 * Conventions: every kernel takes device pointers; sequences are resolved on the device from
 * cu_q / cu_k (NULL = one sequence of total_q queries and total_k keys), never from host seqs.
 * Query i of a sequence sits at position lk - lq + i.
 */
#ifndef INFLLM_CUDA_COMMON_CUH
#define INFLLM_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "internal.h"

#define CU_CHECK(call)                                                                              \
    do {                                                                                            \
        cudaError_t e_ = (call);                                                                    \
        if (e_ != cudaSuccess)                                                                      \
            return infllm_set_error(INFLLM_ERR_CUDA, "CUDA: %s failed: %s (%s:%d)", #call,          \
                                    cudaGetErrorString(e_), __FILE__, __LINE__);                    \
    } while (0)

#define CU_LAUNCH_CHECK(what)                                                                       \
    do {                                                                                            \
        cudaError_t e_ = cudaGetLastError();                                                        \
        if (e_ != cudaSuccess)                                                                      \
            return infllm_set_error(INFLLM_ERR_CUDA, "CUDA: launch of %s failed: %s", what,         \
                                    cudaGetErrorString(e_));                                        \
    } while (0)

#define LOG2E_F 1.4426950408889634f
#define LN2_F 0.6931471805599453f

/* The backward's log2 lse of a row from its natural lse (-inf: the row has no keys): lse log2 e, or +inf without
 * keys so that the row's P = exp2(s - lse2) are all 0. Pass 1 derives it by this one rule whether it reads a stored
 * lse (k_bwd_delta, the _out calls) or writes Delta itself (the forward's epilogues given the natural lse they would
 * store, lse2 ln 2), so both give the same bits. */
#ifdef __CUDACC__
__device__ __forceinline__ float bwd_lse2_of(float lse) { return lse == -INFINITY ? INFINITY : lse * LOG2E_F; }
#endif

/* ---------------------------------------------------------------- sequences ---- */
struct SeqDesc {
    const int32_t *cu_q, *cu_k; /* device, or NULL for one sequence */
    int32_t num_seqs;
    int64_t total_q, total_k;
};

static inline SeqDesc seq_desc(const infllm_attn_params *ap) {
    SeqDesc s;
    s.cu_q = ap->cu_q;
    s.cu_k = ap->cu_k;
    s.num_seqs = ap->num_seqs;
    s.total_q = ap->total_q;
    s.total_k = ap->total_k;
    return s;
}

/* The selection parameters that every stage-1 parameter struct carries (SelParams, DecParams,
 * CdParams: the same field names), from ap */
template <typename P> static inline void sel_fill_params(P &p, const infllm_attn_params *ap) {
    p.Hq = ap->Hq;
    p.Hkv = ap->Hkv;
    p.G = ap->G;
    p.scale_log2 = ap->scale * LOG2E_F;
    p.l1 = ap->l1;
    p.s1 = ap->s1;
    p.l2 = ap->l2;
    p.s2 = ap->s2;
    p.B = ap->B;
    p.init_blocks = ap->init_blocks;
    p.local_blocks = ap->local_blocks;
    p.K = ap->topk_total;
    p.topk_out = ap->topk_out;
    p.exact = ap->exact_lse;
    p.round_bf16 = ap->dtype == INFLLM_DTYPE_BF16;
}

__device__ __forceinline__ void seq_get(const SeqDesc &s, int b, int64_t &q0, int32_t &lq, int64_t &k0,
                                        int32_t &lk) {
    if (s.cu_q) {
        int32_t a = s.cu_q[b], a1 = s.cu_q[b + 1], c = s.cu_k[b], c1 = s.cu_k[b + 1];
        q0 = a;
        lq = a1 - a;
        k0 = c;
        lk = c1 - c;
    } else {
        q0 = 0;
        lq = (int32_t)s.total_q;
        k0 = 0;
        lk = (int32_t)s.total_k;
    }
}

/* the sequence that owns query row t (binary search over cu_q) */
__device__ __forceinline__ int seq_of_row(const SeqDesc &s, int64_t t) {
    if (!s.cu_q) return 0;
    int lo = 0, hi = s.num_seqs - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) >> 1;
        if (s.cu_q[mid] <= t)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

__host__ __device__ __forceinline__ int32_t d_windows(int64_t L, int32_t size, int32_t stride) {
    return L >= size ? (int32_t)((L - size) / stride + 1) : 0;
}
__host__ __device__ __forceinline__ int32_t d_visible(int64_t pos, int32_t size, int32_t stride, int32_t n) {
    int64_t c = pos + 1 >= size ? (pos + 1 - size) / stride + 1 : 0;
    return (int32_t)(c < n ? c : n);
}
/* The first block (of B keys) that none of the n1 c1 kernels (size l1, stride s1) touches: every
 * block from it on has none, every one before has one. Block bb meets a kernel iff a kernel start (a
 * multiple of s1 in [0, s1 (n1 - 1)]) lies in [B bb - l1 + 1, B bb + B - 1]. None does past
 * (s1 (n1 - 1) + l1 - 1) / B; before it, a block's range is non-empty and either starts at 0, ends
 * at the last start, or is B + l1 - 1 >= s1 keys long (B is a multiple of s1: checked by the API), so
 * it holds one. This holds for any l1 >= 1, also below s1 (checked against the per-block division
 * test for every s1 <= 32, B <= 256, l1 <= s1 + 64, n1 <= 40, block < 80: 242M cases). */
__host__ __device__ __forceinline__ int32_t d_first_untouched_block(int32_t B, int32_t l1, int32_t s1, int32_t n1) {
    return n1 > 0 ? (int32_t)(((int64_t)s1 * (n1 - 1) + l1 - 1) / B + 1) : 0;
}
/* The first key a query at position pos attends under a sliding window (0: none): keys j with pos - window < j
 * (infllm_window_start) */
__host__ __device__ __forceinline__ int64_t d_window_start(int64_t pos, int32_t window) {
    return window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
}
/* The first block (of B keys) a query at position pos may select under a sliding window (0: none): blocks wholly
 * before its window are no candidates (infllm_window_first_block). Positions < 2^31; no division without a window */
__host__ __device__ __forceinline__ int d_window_first_block(int64_t pos, int32_t window, int32_t B) {
    return window > 0 ? (int)((uint32_t)d_window_start(pos, window) / (uint32_t)B) : 0;
}
/* per-sequence dense/sparse switch (SPEC A.8) */
__host__ __device__ __forceinline__ int d_seq_sparse(int mode, int32_t dense_len, int32_t lk) {
    if (mode == INFLLM_MODE_DENSE) return 0;
    if (mode == INFLLM_MODE_SPARSE) return 1;
    return dense_len < 0 || lk >= dense_len;
}

/* ---------------------------------------------------------------- dtypes ---- */
template <typename T> struct DT;
template <> struct DT<__nv_bfloat16> {
    static __device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
    static __device__ __forceinline__ __nv_bfloat16 from_f(float x) { return __float2bfloat16_rn(x); }
    static __device__ __forceinline__ uint32_t pack2(float a, float b) {
        __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
        return *reinterpret_cast<uint32_t *>(&h);
    }
    /* pack2's inverse: the element at the lower address, the one at the upper */
    static __device__ __forceinline__ float lo(uint32_t w) { return __uint_as_float(w << 16); }
    static __device__ __forceinline__ float hi(uint32_t w) { return __uint_as_float(w & 0xffff0000u); }
};
template <> struct DT<__half> {
    static __device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
    static __device__ __forceinline__ __half from_f(float x) { return __float2half_rn(x); }
    static __device__ __forceinline__ uint32_t pack2(float a, float b) {
        __half2 h = __floats2half2_rn(a, b);
        return *reinterpret_cast<uint32_t *>(&h);
    }
    static __device__ __forceinline__ float lo(uint32_t w) { return __half2float(__ushort_as_half((unsigned short)w)); }
    static __device__ __forceinline__ float hi(uint32_t w) {
        return __half2float(__ushort_as_half((unsigned short)(w >> 16)));
    }
};

/* m16n8k16 with f32 accumulate; A row-major, B "col" (k-major per column) */
template <typename T>
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void mma16816<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                                        uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma16816<__half>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* The sum / max of v over the 4 lanes of a quad (lanes 4 r .. 4 r + 3, the threads that hold one row
 * of an mma.sync or wgmma accumulator), in every lane of it: lanes 1 apart, then 2 apart */
__device__ __forceinline__ float quad_sum(float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}
__device__ __forceinline__ float quad_max(float v) {
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const void *smem) {
    uint32_t a = (uint32_t)__cvta_generic_to_shared(smem);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], const void *smem) {
    uint32_t a = (uint32_t)__cvta_generic_to_shared(smem);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

/* 16-byte async copy global -> shared; src_bytes 0 zero-fills (src must still be a valid address) */
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, int src_bytes) {
    uint32_t a = (uint32_t)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(a), "l"(gmem), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

/* Swizzled tile of ROWS x D 16-bit elements: 16-byte chunk c of row r lives at chunk c ^ (r & 7). */
template <int D> __device__ __forceinline__ int swz(int row, int col /* element, multiple of 8 */) {
    return row * D + ((((col >> 3) ^ (row & 7))) << 3);
}

/* acc[16 x D] += A[16 x 16 NK] (C fragments a[2 NK][4], rounded to T) times the swizzled [16 NK][D] tile sb
 * (B operand, k = its rows: ldmatrix .trans): O += P V in k_flash (NK 4), dv / dk and dq in the backward */
template <typename T, int D, int NK>
__device__ __forceinline__ void mma_acc_rows(float (&acc)[D / 8][4], const float (&a)[2 * NK][4], const uint16_t *sb,
                                             int lane) {
#pragma unroll
    for (int ks = 0; ks < NK; ks++) {
        uint32_t af[4];
        af[0] = DT<T>::pack2(a[2 * ks][0], a[2 * ks][1]);
        af[1] = DT<T>::pack2(a[2 * ks][2], a[2 * ks][3]);
        af[2] = DT<T>::pack2(a[2 * ks + 1][0], a[2 * ks + 1][1]);
        af[3] = DT<T>::pack2(a[2 * ks + 1][2], a[2 * ks + 1][3]);
#pragma unroll
        for (int dg = 0; dg < D / 16; dg += 4) {
            uint32_t r[4][4];
#pragma unroll
            for (int x = 0; x < 4; x++)
                ldsm_x4_t(r[x], sb + swz<D>(16 * ks + (lane & 7) + ((lane >> 3) & 1) * 8, 16 * (dg + x) + (lane >> 4) * 8));
#pragma unroll
            for (int x = 0; x < 4; x++) {
                mma16816<T>(acc[2 * (dg + x)], af, r[x][0], r[x][1]);
                mma16816<T>(acc[2 * (dg + x) + 1], af, r[x][2], r[x][3]);
            }
        }
    }
}

/* Loads ROWS rows (row0 + r, r < ROWS) of a token-major tensor into a swizzled smem tile;
 * rows with r >= nvalid are zero-filled. stride in elements between rows. */
template <int D, int ROWS, int NT>
__device__ __forceinline__ void load_tile_async(uint16_t *s, const uint16_t *g, int64_t stride, int nvalid) {
    constexpr int CH = D / 8; /* chunks per row */
    for (int i = threadIdx.x; i < ROWS * CH; i += NT) {
        int r = i / CH, c = i % CH;
        bool ok = r < nvalid;
        const uint16_t *src = g + (ok ? (int64_t)r * stride : 0) + c * 8;
        cp_async16(s + swz<D>(r, c * 8), src, ok ? 16 : 0);
    }
}

/* The A fragments of warp w's 16 rows [16 w, 16 w + 16) of a swizzled [rows][D] Q tile, all of D */
template <int D>
__device__ __forceinline__ void load_qf(uint32_t (&qf)[D / 16][4], const uint16_t *sQ, int warp) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
        const int row = warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
        ldsm_x4(qf[kk], sQ + swz<D>(row, 16 * kk + (lane >> 4) * 8));
    }
}

/* One warp's 16 x 64 score tile of the small-batch selection (k_dec_*, k_cd_*; CTAs of one warp):
 * warp_q16_issue copies the G query heads of one token (qtok: its head g*G, rows >= G zero) and 64
 * compressed keys (rows >= nvalid zero) into swizzled tiles (cp.async, one commit group);
 * warp_q16_mma waits for them and computes S = Q C^T into C fragments (s[j] = columns 8 j..8 j+7). */
/* the query part alone (no commit): rows >= G (G may exceed 16: rows 0..15 are copied) zero */
template <int D> __device__ __forceinline__ void warp_q16_issue_q(uint16_t *sq, const uint16_t *qtok, int G) {
    constexpr int CH = D / 8;
    const int lane = threadIdx.x & 31;
    for (int x = lane; x < 16 * CH; x += 32) {
        const int r = x / CH, c = x % CH;
        const bool ok = r < G;
        cp_async16(sq + swz<D>(r, c * 8), qtok + (ok ? (int64_t)r * D : 0) + c * 8, ok ? 16 : 0);
    }
}
template <int D>
__device__ __forceinline__ void warp_q16_issue(uint16_t *sq, uint16_t *sc, const uint16_t *qtok, int G,
                                               const uint16_t *cbase, int64_t cstride, int nvalid) {
    constexpr int CH = D / 8;
    const int lane = threadIdx.x & 31;
    warp_q16_issue_q<D>(sq, qtok, G);
    for (int x = lane; x < 64 * CH; x += 32) {
        const int r = x / CH, c = x % CH;
        const bool ok = r < nvalid;
        cp_async16(sc + swz<D>(r, c * 8), cbase + (ok ? (int64_t)r * cstride : 0) + c * 8, ok ? 16 : 0);
    }
    cp_async_commit();
}

/* The 4-token CTAs (k_dec_lse4 / k_dec_score4, k_cd_lse4 / k_cd_score4) share the compressed-key tile:
 * cta_q16_issue copies this warp's token's G query heads (qtok NULL: all zero) and, by every thread of
 * the CTA (NTHREADS), the 64 compressed keys; the caller waits and syncs the CTA before warp_q16_mma. */
template <int D, int NTHREADS>
__device__ __forceinline__ void cta_q16_issue(uint16_t *sq, uint16_t *sc, const uint16_t *qtok, int G,
                                              const uint16_t *cbase, int64_t cstride, int nvalid) {
    constexpr int CH = D / 8;
    static_assert((64 * CH) % NTHREADS == 0 && NTHREADS % 32 == 0, "cta_q16_issue: whole copy rounds");
    const int lane = threadIdx.x & 31, tid = threadIdx.x;
#pragma unroll
    for (int i = 0; i < 16 * CH / 32; i++) {
        const int x = lane + 32 * i, r = x / CH, c = x % CH;
        const bool ok = qtok && r < G;
        cp_async16(sq + swz<D>(r, c * 8), ok ? qtok + (int64_t)r * D + c * 8 : cbase, ok ? 16 : 0);
    }
#pragma unroll
    for (int i = 0; i < 64 * CH / NTHREADS; i++) {
        const int x = tid + NTHREADS * i, r = x / CH, c = x % CH;
        const bool ok = r < nvalid;
        cp_async16(sc + swz<D>(r, c * 8), cbase + (ok ? (int64_t)r * cstride : 0) + c * 8, ok ? 16 : 0);
    }
    cp_async_commit();
}
template <typename T, int D>
__device__ __forceinline__ void warp_q16_mma(const uint16_t *sq, const uint16_t *sc, float (&s)[8][4]) {
    constexpr int KS = D / 16;
    const int lane = threadIdx.x & 31;
    cp_async_wait<0>();
    __syncwarp();
#pragma unroll
    for (int j = 0; j < 8; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < KS; kk += 2) {
        uint32_t a0[4], a1[4];
        ldsm_x4(a0, sq + swz<D>((lane & 7) + ((lane >> 3) & 1) * 8, 16 * kk + (lane >> 4) * 8));
        ldsm_x4(a1, sq + swz<D>((lane & 7) + ((lane >> 3) & 1) * 8, 16 * (kk + 1) + (lane >> 4) * 8));
#pragma unroll
        for (int j = 0; j < 8; j++) {
            uint32_t r[4];
            ldsm_x4(r, sc + swz<D>(8 * j + (lane & 7), 16 * kk + (lane >> 3) * 8));
            mma16816<T>(s[j], a0, r[0], r[1]);
            mma16816<T>(s[j], a1, r[2], r[3]);
        }
    }
}

/* A group of G query heads as m16 head tiles, in the small-batch and the decode-cache selections (k_dec_*,
 * k_cd_*): ceil(G / 16) tiles, rows past G zero; at most HEAD_TILES_MAX (G <= 128, the API's largest group) */
#define HEAD_TILES_MAX 8
static inline int head_tiles(int G) { return (G + 15) / 16; }
/* the first query row of head tile h of token tok (sequence-absolute), KV head g: query head g G + 16 h; the
 * tile holds G - 16 h of the group's heads (more than 16: its first 16). P: CdParams or DecParams */
template <int D, typename P>
__device__ __forceinline__ const uint16_t *q_head_tile(const P &p, int64_t tok, int g, int h) {
    return (const uint16_t *)p.q + (tok * p.Hq + (int64_t)g * p.G + 16 * h) * D;
}

/* The next head tile of a token whose group spans several (G > 16: the decode cache's k_cd_score and the
 * small-batch k_dec_score): its query rows (qtok, rows >= G zero) replace the previous tile's in sq once
 * every lane's reads of sq are done, then S = Q C^T against the compressed-key tile still in sc */
template <typename T, int D>
__device__ __forceinline__ void warp_q16_next_tile(uint16_t *sq, const uint16_t *sc, const uint16_t *qtok, int G,
                                                   float (&s)[8][4]) {
    __syncwarp();
    warp_q16_issue_q<D>(sq, qtok, G);
    cp_async_commit();
    warp_q16_mma<T, D>(sq, sc, s);
}

/* Stage-1 helpers on an m16 x 64 score tile s in the mma.sync m16n8 accumulator layout (a wgmma
 * m64 accumulator gives each warp the same layout): lane (gid, tig) holds, of row ri (row gid for
 * ri = 0, gid + 8 for ri = 1), the columns 8 j + 2 tig + e as s[j][2 ri + e]. The pipeline's and
 * the decode path's selections call the same helpers, so their arithmetic (and so their block
 * choices) stays identical. */

/* row ri's logits to base 2 in place (times scale_log2), -inf at columns col0 + c >= vis; returns
 * the row's max (over the 4 lanes of the quad) */
__device__ __forceinline__ float tile_row_scale_max(float (&s)[8][4], int ri, int col0, int tig, int vis,
                                                    float scale_log2) {
    float mx = -INFINITY;
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
            int col = col0 + 8 * j + 2 * tig + e;
            float v = col < vis ? s[j][2 * ri + e] * scale_log2 : -INFINITY;
            s[j][2 * ri + e] = v;
            mx = fmaxf(mx, v);
        }
    return quad_max(mx);
}

/* this lane's sum of exp2(s - mu) over its 16 values of row ri (not summed over the quad) */
__device__ __forceinline__ float tile_row_exp2_sum(const float (&s)[8][4], int ri, float mu) {
    float acc = 0.f;
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
        for (int e = 0; e < 2; e++) acc += exp2f(s[j][2 * ri + e] - mu);
    return acc;
}

/* head sum of a tile whose 16 rows are the 16 query heads of one token (rows >= G are zero): lane
 * (gid, tig) gets the sums of columns 8 gid + 2 tig + e in keep[e] (one xor tree for every
 * caller) */
__device__ __forceinline__ void tile_head_sum16(const float (&s)[8][4], int gid, float (&keep)[2]) {
    keep[0] = keep[1] = 0.f;
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
        for (int e = 0; e < 2; e++) {
            float v = s[j][e] + s[j][2 + e];
            v += __shfl_xor_sync(0xffffffffu, v, 4);
            v += __shfl_xor_sync(0xffffffffu, v, 8);
            v += __shfl_xor_sync(0xffffffffu, v, 16);
            if (gid == j) keep[e] = v;
        }
}

/* The small-batch selection's per-row steps, shared by k_dec_score (pipeline) and k_cd_score (decode
 * cache) so that both give bit-identical block scores.
 *
 * row_lse2: the log2 LSE of one row from its per-tile partials (max, sum) in tile order, pr[16 * x]
 * for tile x (the [tile][16][2] layout), shared or global memory; +inf when the row has no mass or is
 * not a head of the group (valid false), so that its P is 0. */
__device__ __forceinline__ float row_lse2(const float2 *pr, int ntl, bool valid) {
    float m = -INFINITY, l = 0.f;
#pragma unroll 8
    for (int x = 0; x < ntl; x++) m = fmaxf(m, pr[16 * x].x);
#pragma unroll 8
    for (int x = 0; x < ntl; x++) {
        const float2 ml = pr[16 * x];
        l += ml.y * exp2f(ml.x - m);
    }
    return (l > 0.f && valid) ? m + __log2f(l) : INFINITY;
}

/* S (C fragments of 16 rows x 64 kernels from column col0) -> P = exp2(S * scale_log2 - lse2[row]),
 * 0 for kernels >= vis */
__device__ __forceinline__ void tile_probs(float (&s)[8][4], int col0, int tig, int vis, float scale_log2,
                                           const float (&lse2)[2]) {
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const int col = col0 + 8 * j + 2 * tig + (e & 1);
            s[j][e] = col < vis ? exp2f(s[j][e] * scale_log2 - lse2[e >> 1]) : 0.f;
        }
}

/* P of one head tile's S in s (tile_probs with its rows' log2 LSEs), then its 16-row head sum added to
 * keep: the group's sums over its head tiles in order (one tile: 0 + the tile's sum, exactly) */
__device__ __forceinline__ void tile_head_sum_add(float (&s)[8][4], int col0, int tig, int gid, int vis,
                                                  float scale_log2, const float (&lse2)[2], float (&keep)[2]) {
    tile_probs(s, col0, tig, vis, scale_log2, lse2);
    float kh[2];
    tile_head_sum16(s, gid, kh);
    keep[0] += kh[0];
    keep[1] += kh[1];
}

/* The group sums of this lane's two columns col0 + 8 gid + 2 tig (+1) (tile_head_sum16's keep),
 * rounded to bf16 when round_bf16, max-pooled into every block bb <= qb their kernel's keys touch:
 * atomicMax on pool[bb - b0] (float bits: scores are >= 0, the pool starts at 0, a NaN sum is skipped).
 * Kernels >= n1 do not exist. */
__device__ __forceinline__ void pool_kernels(const float (&keep)[2], int col0, int gid, int tig, int n1, int s1,
                                             int l1, int B, int qb, int round_bf16, int *pool, int b0) {
#pragma unroll
    for (int e = 0; e < 2; e++) {
        const int col = col0 + 8 * gid + 2 * tig + e;
        if (col < n1) {
            float v = keep[e];
            if (round_bf16) v = __bfloat162float(__float2bfloat16_rn(v));
            if (!(v > 0.f)) continue; /* 0 leaves the pool as it is; a NaN never wins a block's max (REF) */
            const int blo = s1 * col / B, bhi = min((s1 * col + l1 - 1) / B, qb);
            for (int bb = blo; bb <= bhi; bb++) atomicMax(pool + (bb - b0), __float_as_int(v));
        }
    }
}

#include "f2key.cuh"

/* Warp-cooperative top-k over vals[0..n): picks the k largest (value desc, index asc; a NaN below all), writes
 * the chosen indices ascending to out[0..k), then -1 up to out[ncols); indices > qmax become -1
 * (they are at the end since the list is ascending). All 32 lanes must call it. */
__device__ __forceinline__ void warp_topk(const float *vals, int n, int k, int qmax, int32_t *out, int ncols,
                                          int first = 0) {
    const int lane = threadIdx.x & 31;
    if (k > n) k = n;
    if (k < 0) k = 0;
    uint32_t thr = 0;
    if (k > 0 && k < n) {
        /* largest thr with count(key >= thr) >= k: the k-th largest key */
        for (int bit = 31; bit >= 0; bit--) {
            uint32_t cand = thr | (1u << bit);
            int cnt = 0;
            for (int i = lane; i < n; i += 32) cnt += f2key_nan_low(vals[i]) >= cand;
#pragma unroll
            for (int o = 16; o; o >>= 1) cnt += __shfl_xor_sync(0xffffffffu, cnt, o);
            if (cnt >= k) thr = cand;
        }
    }
    int need_eq = k;
    if (k > 0 && k < n) {
        int gt = 0;
        for (int i = lane; i < n; i += 32) gt += f2key_nan_low(vals[i]) > thr;
#pragma unroll
        for (int o = 16; o; o >>= 1) gt += __shfl_xor_sync(0xffffffffu, gt, o);
        need_eq = k - gt;
    }
    /* scan in index order: take key > thr, and key == thr while ties remain */
    int written = 0, eq_used = 0;
    for (int base = 0; base < n && written < k; base += 32) {
        int i = base + lane;
        uint32_t key = i < n ? f2key_nan_low(vals[i]) : 0;
        bool gtb = i < n && (k >= n || key > thr);
        bool eqb = i < n && k < n && key == thr;
        unsigned eqm = __ballot_sync(0xffffffffu, eqb);
        int eq_rank = __popc(eqm & ((1u << lane) - 1u));
        bool take = gtb || (eqb && eq_used + eq_rank < need_eq);
        unsigned tm = __ballot_sync(0xffffffffu, take);
        int pos = written + __popc(tm & ((1u << lane) - 1u));
        if (take && pos < k) out[pos] = i > qmax ? -1 : first + i;
        written += __popc(tm);
        eq_used += __popc(eqm);
        if (eq_used > need_eq) eq_used = need_eq;
    }
    for (int c = k + lane; c < ncols; c += 32) out[c] = -1;
}

#endif
