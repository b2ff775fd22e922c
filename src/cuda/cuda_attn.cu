/*
 * cuda_attn.cu: dense causal and block-sparse attention (stage 2, SPEC B §9) on tensor cores
 * (mma.sync m16n8k16, bf16/f16 in, f32 accumulate), FlashAttention-2 style online softmax.
 *
 * One CTA = one KV head g x TT consecutive query tokens of one sequence; its M = 16*NW rows are
 * (token, query head of the group) pairs: row r -> token r / Gt, head g*G + hc*Gt + r % Gt with
 * Gt = min(G, M) (hc chunks the heads when G > M). So one K/V tile load feeds all the heads of
 * a group (16 rows per token for MiniCPM4), which is what keeps the tensor cores busy.
 * Keys come in chunks of 64. Sparse: the CTA walks the union of the chunks that its tokens'
 * selected blocks cover, in ascending order, and masks per row (block selected by the row's
 * token, and key position <= the row's position); dense: all chunks up to the last position.
 * Split-KV (few CTAs, e.g. decode): the chunk list is cut into nsplit ranges, partial results are
 * merged by k_combine.
 */
#include <limits.h>
#include <atomic>
#include <mutex>
#include <stdlib.h>
#include <string.h>

#include <cuda.h> /* CUtensorMap */
#if defined(INFLLM_CUDA_SM90A)
#include <cudaTypedefs.h> /* PFN_cuTensorMapEncodeTiled */
#endif

#include "cuda_common.cuh"
#include "cuda_internal.cuh"
#include "cuda_sm90.cuh"
#include "group_tokens.cuh"
#include "flash_list.cuh"

struct FlashParams {
    const void *q, *k, *v;
    void *out;
    float *lse;
    SeqDesc sd;
    int Hq, Hkv, G, Gt, TT, hchunks;
    float scale_log2;
    const int32_t *topk;
    int topk_cols;
    int B;
    int chunk_blk_shift; /* B = 64 << shift (block of chunk c: c >> shift), or -1 (B not 64 x a power of 2) */
    int filter, mode, dense_len;
    int window; /* sliding key window (d_window_start), 0: none */
    int nsplit;
    float *part_o;   /* [cta][nsplit][M][D] */
    float *part_lse; /* [cta][nsplit][M] (log2 domain) */
    int nbw;         /* words of one token's block bitmap */
    int ncw;         /* words of the chunk bitmap */
    int tma;         /* k_flash90: K/V chunks inside the sequence come by TMA (tensor maps valid) */
    /* k_flash90 sparse, one split: [Hkv][total_q] the sequence-relative query token in each tile
     * slot (tile i = slots TT i .. TT i + TT - 1; k_group_tokens), or NULL: token = slot */
    const int32_t *perm;
    /* a one-split grid's order: 0, (sequence, z) fastest under the tile count-down; 1, z slowest: every
     * tile of KV head 0 before KV head 1's, so the CTAs running at a time read one head's K / V, half
     * the L2 working set. Sparse launches take 1 (stage 2 at 128K 49.5 -> 47.8 ms on the H200, 64K
     * 1.02x, 32K unchanged: its K / V fit the L2 anyway; INFLLM_CUDA_NO_ZMAJOR=1: 0), dense ones 0
     * (not measured). */
    int zmajor;
    int list_w; /* k_flash90 LIST: 16-bit entries of one token's sorted block list (topk_cols + 2), or 0 */
    /* k_flash90 DQ (the attention backward's dq pass, cuda_flash_dq_launch): out is dq, and these the
     * backward's inputs: dout [total_q, Hq, D] and per row ([total_q, Hq] f32) the log2 LSE and Delta */
    const void *dout;
    const float *lse2, *delta;
    float scale;
    /* the attention backward's pass 1 (cuda_flash_delta_launch), else NULL: the epilogue writes no O but each
     * row's Delta = fwd_dout . O with O the unrounded f32 output (fwd_delta [total_q, Hq]; a row without keys 0)
     * and into lse its log2 LSE (+inf: a row without keys) as k_bwd_delta derives it from the natural lse the
     * forward writes (lse ln 2, then log2 e: the _out calls' softmax is the same bits, so their dv too) */
    const void *fwd_dout;
    float *fwd_delta;
};

/* Returns from the kernel when this sequence (lk keys) is not one of the launch's: p.filter 0 takes
 * all sequences, 1 only sparse ones, 2 only dense ones. A macro, not a function: an inline helper
 * changed ptxas's register allocation in k_flash (more spill loads), the macro's SASS is the
 * hand-written check's. */
#define FLASH_RETURN_IF_FILTERED(p, lk)                                                                     \
    if ((p).filter) {                                                                                        \
        const int sp_ = d_seq_sparse((p).mode, (p).dense_len, (lk));                                         \
        if (((p).filter == 1 && !sp_) || ((p).filter == 2 && sp_)) return;                                   \
    }

__device__ __forceinline__ int chunk_next(const uint32_t *bits, int nwords, int from) {
    int w = from >> 5;
    if (w >= nwords) return -1;
    uint32_t m = bits[w] & (0xffffffffu << (from & 31));
    while (!m) {
        if (++w >= nwords) return -1;
        m = bits[w];
    }
    return w * 32 + __ffs(m) - 1;
}

/* This split's range of a tile's chunk list (the union bitmap sChunk when SPARSE, else chunks
 * dense_first..last_chunk: dense_first is 0 but under a sliding window), by rank: first = its first chunk,
 * count = its number of chunks (1 << 30: all, one split; 0: none). A macro like FLASH_RETURN_IF_FILTERED,
 * so that k_flash and k_flash90 keep the SASS of their hand-written copies (an inline function changed
 * k_flash's register allocation). */
#define FLASH_SPLIT_RANGE(p, SPARSE, sChunk, dense_first, last_chunk, split, first, count)                     \
    first = (SPARSE) ? chunk_next((sChunk), (p).ncw, 0) : (dense_first);                                     \
    if ((p).nsplit > 1) {                                                                                    \
        int U_;                                                                                              \
        if (SPARSE) {                                                                                        \
            U_ = 0;                                                                                          \
            for (int w_ = 0; w_ < (p).ncw; w_++) U_ += __popc((sChunk)[w_]);                                 \
        } else {                                                                                             \
            U_ = (last_chunk) + 1 - (dense_first);                                                           \
        }                                                                                                    \
        const int r0_ = (int)((int64_t)U_ * (split) / (p).nsplit);                                           \
        const int r1_ = (int)((int64_t)U_ * ((split) + 1) / (p).nsplit);                                     \
        count = r1_ - r0_;                                                                                   \
        for (int i_ = 0; i_ < r0_ && first >= 0; i_++)                                                       \
            first = (SPARSE) ? chunk_next((sChunk), (p).ncw, first + 1) : first + 1;                         \
    } else {                                                                                                 \
        count = 1 << 30;                                                                                     \
    }                                                                                                        \
    if (first < 0 || first > (last_chunk)) count = 0;

/* A split CTA's result for row r (this thread's columns of o, row ri of its fragments): o / l and the
 * row's log2 LSE, in the partial buffers k_combine merges ([cta][split][M][D] and [cta][split][M]) */
template <int D, int M, int DT_>
__device__ __forceinline__ void flash_store_partial(const FlashParams &p, int zz, int split, int r,
                                                    const float (&o)[DT_][4], int ri, float inv, float lse2, int tig) {
    const int64_t cta = ((int64_t)blockIdx.y * gridDim.x + blockIdx.x) * (gridDim.z / p.nsplit) + zz;
    const int64_t base = (cta * p.nsplit + split) * M + r;
#pragma unroll
    for (int j = 0; j < DT_; j++) {
        const float2 w = make_float2(o[j][2 * ri] * inv, o[j][2 * ri + 1] * inv);
        *reinterpret_cast<float2 *>(p.part_o + base * D + 8 * j + 2 * tig) = w;
    }
    if (tig == 0) p.part_lse[base] = lse2;
}

/* The backward's pass 1 (FlashParams::fwd_delta): sum over the row's D columns of O_d dout_d, O unnormalised
 * (this thread's columns of accumulator row ri, summed over the quad: every lane of the warp calls it); drow:
 * the row's dout, NULL where the row is not one of the tile's (its lanes add 0). Taken from the f32 O, not
 * the O rounded to the dtype: the rounding (up to 2^-11 |O| in f16, 2^-8 in bf16) would enter Delta, and in a row
 * whose softmax one key dominates dS = P (dP - Delta) cancels to far below it (test_cuda_backward's sharp
 * f16 case: dq / dk 4x the naive 16-bit bound with the rounded O, bench/bwd_delta_model.py) */
template <typename T, int DT_>
__device__ __forceinline__ float fwd_delta_dot(const float (&o)[DT_][4], int ri, const T *drow, int tig) {
    float acc = 0.f;
    if (drow) {
#pragma unroll
        for (int j = 0; j < DT_; j++) {
            const uint32_t w = *reinterpret_cast<const uint32_t *>(drow + 8 * j + 2 * tig);
            acc += o[j][2 * ri] * DT<T>::lo(w) + o[j][2 * ri + 1] * DT<T>::hi(w);
        }
    }
    return quad_sum(acc);
}
/* k_flash's / k_flash90's one-split epilogue in the backward's pass 1: row ([total_q, Hq] index, -1: not one of the
 * tile's rows; every lane of the warp calls it) gets Delta = inv sum O_d dout_d and the log2 lse from the natural lse
 * the forward would store (bwd_lse2_of, the rule of k_bwd_delta) */
template <typename T, int D, int DT_>
__device__ __forceinline__ void fwd_delta_store(const FlashParams &p, const float (&o)[DT_][4], int ri, int64_t row,
                                                float inv, float lt, float lse2, int tig) {
    const float dot = fwd_delta_dot<T, DT_>(o, ri, row >= 0 ? (const T *)p.fwd_dout + row * D : NULL, tig);
    if (row >= 0 && tig == 0) {
        p.fwd_delta[row] = dot * inv;
        p.lse[row] = bwd_lse2_of(!(lt <= 0.f) ? lse2 * LN2_F : -INFINITY);
    }
}

/* the block of 64-key chunk c when B % 64 == 0 (positions < 2^31): a shift when B is 64 x a power of 2 */
__device__ __forceinline__ int chunk_block(const FlashParams &p, int c) {
    return p.chunk_blk_shift >= 0 ? c >> p.chunk_blk_shift : (c * 64) / p.B;
}

/* This CTA's query tile, sequence and z (KV head x head chunk x split). A one-split grid runs its
 * query tiles heaviest first: the hardware hands out CTAs in linear order (x fastest), and under
 * the causal mask the last tiles of a sequence see the most keys, so the linear index counts the
 * tile down, with (sequence, z) fastest; the light tiles then fill the tail of the launch instead
 * of the heaviest; with zmajor, z is the slowest index instead (FlashParams::zmajor). A split grid
 * keeps blockIdx: its partials are indexed by it, as k_combine reads them. */
__device__ __forceinline__ void flash_cta(int nsplit, int zmajor, int &tile, int &b, int &z) {
    if (nsplit > 1) {
        tile = blockIdx.x, b = blockIdx.y, z = blockIdx.z;
        return;
    }
    const uint64_t lin = blockIdx.x + (uint64_t)gridDim.x * (blockIdx.y + (uint64_t)gridDim.y * blockIdx.z);
    if (zmajor) {
        const uint64_t per_z = (uint64_t)gridDim.x * gridDim.y, r = lin % per_z;
        z = (int)(lin / per_z);
        tile = (int)(gridDim.x - 1 - r / gridDim.y);
        b = (int)(r % gridDim.y);
        return;
    }
    const uint64_t per = (uint64_t)gridDim.y * gridDim.z;
    tile = (int)(gridDim.x - 1 - lin / per);
    const uint64_t r = lin % per;
    b = (int)(r % gridDim.y);
    z = (int)(r / gridDim.y);
}

/* sparse k_flash90: a row's running max moves only when a chunk's max passes it by more than this
 * (log2 units); P <= 2^8 otherwise, exact in bf16/f16 and f32, and most chunks keep every alpha at 1 */
#define FLASH_RESCALE_LOG2 8.f
/* dense k_flash90: P V of a chunk in this many key ranges (1, 2 or 4), each issued as soon as its P
 * is ready (session 17, H200: 1.02-1.04x at 8K-32K with 2, 4 no better). The sparse instances keep
 * one: 0.98-0.99x there with 2 or 4, and their SASS is sensitive to any change of the softmax's order. */
#ifndef FLASH90_PV_PARTS_DENSE
#define FLASH90_PV_PARTS_DENSE 2
#endif
static_assert(FLASH90_PV_PARTS_DENSE == 1 || FLASH90_PV_PARTS_DENSE == 2 || FLASH90_PV_PARTS_DENSE == 4,
              "FLASH90_PV_PARTS_DENSE: 1, 2 or 4");
/* the max of each of a thread's two rows (ri 0, 1) over one 64-key chunk of raw scores, over the
 * row's quad (the 4 lanes that hold it) */
__device__ __forceinline__ void rows2_max(const float (&s)[8][4], float (&mx)[2]) {
#pragma unroll
    for (int ri = 0; ri < 2; ri++) {
        float t[4]; /* a max tree (exact in any order) instead of a 16-deep chain */
#pragma unroll
        for (int j = 0; j < 4; j++)
            t[j] = fmaxf(fmaxf(s[2 * j][2 * ri], s[2 * j][2 * ri + 1]), fmaxf(s[2 * j + 1][2 * ri], s[2 * j + 1][2 * ri + 1]));
        mx[ri] = fmaxf(fmaxf(t[0], t[1]), fmaxf(t[2], t[3]));
    }
    /* quad_max of both rows with their shuffles interleaved (quad_max per row changes the SASS) */
#pragma unroll
    for (int ri = 0; ri < 2; ri++) mx[ri] = fmaxf(mx[ri], __shfl_xor_sync(0xffffffffu, mx[ri], 1));
#pragma unroll
    for (int ri = 0; ri < 2; ri++) mx[ri] = fmaxf(mx[ri], __shfl_xor_sync(0xffffffffu, mx[ri], 2));
}
/* a row's new running max m, given the chunk's raw max mx; LAZY: it moves only when the scaled max
 * passes it by more than FLASH_RESCALE_LOG2 (softmax_rows2 and softmax_max2 share this rule) */
template <bool LAZY> __device__ __forceinline__ float running_max(float m, float mx, float scale_log2) {
    const float mxs = mx * scale_log2;
    return !LAZY || mxs > m + FLASH_RESCALE_LOG2 ? fmaxf(m, mxs) : m;
}
/* The online softmax (base 2) of a thread's two rows (ri 0, 1) over one 64-key chunk of raw scores s,
 * masked (-inf) already: max on the raw scores (scale > 0, so max(s) * scale is the max of the scaled
 * scores), the scale inside the exponent's FFMA; P replaces s, alpha[ri] rescales the row's O. Both
 * rows go through with no branch in between, so that their dependency chains (max tree, 2 shuffles,
 * 16 exp2, sum) overlap. LAZY: the running max moves only by more than FLASH_RESCALE_LOG2. */
template <bool LAZY>
__device__ __forceinline__ void softmax_rows2(float (&s)[8][4], float (&m)[2], float (&l)[2], float (&alpha)[2],
                                              float scale_log2) {
    float mx[2];
    rows2_max(s, mx);
#pragma unroll
    for (int ri = 0; ri < 2; ri++) {
        const float mn = running_max<LAZY>(m[ri], mx[ri], scale_log2);
        const float mu = mn == -INFINITY ? 0.f : mn;
        alpha[ri] = exp2f(m[ri] - mu);
        m[ri] = mn;
        float acc = 0.f;
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                const float pe = exp2f(fmaf(s[j][2 * ri + e], scale_log2, -mu));
                s[j][2 * ri + e] = pe;
                acc += pe;
            }
        l[ri] = l[ri] * alpha[ri] + acc;
    }
}
/* softmax_rows2 in steps, for a chunk whose P V is issued in key ranges (dense k_flash90): the max,
 * alpha and the new running max first (not lazy: dense), then softmax_exp2 per key range, then
 * l = l * alpha + acc. The same arithmetic as softmax_rows2<false>, in the same order per row. (The sparse
 * instances issue P V in one range: two ranges were 0.98-1.01x on real selections, session 20.) */
__device__ __forceinline__ void softmax_max2(const float (&s)[8][4], float (&m)[2], float (&alpha)[2], float (&mu)[2],
                                             float scale_log2) {
    float mx[2];
    rows2_max(s, mx);
#pragma unroll
    for (int ri = 0; ri < 2; ri++) {
        const float mn = running_max<false>(m[ri], mx[ri], scale_log2);
        mu[ri] = mn == -INFINITY ? 0.f : mn;
        alpha[ri] = exp2f(m[ri] - mu[ri]);
        m[ri] = mn;
    }
}
/* P = exp2(s * scale - mu) of the keys in columns [8 j0, 8 j1) of both rows, added to the rows' sums
 * acc in column order (so that any split of [0, 8) sums in the same order as one pass) */
__device__ __forceinline__ void softmax_exp2(float (&s)[8][4], const float (&mu)[2], float (&acc)[2], float scale_log2,
                                             int j0, int j1) {
#pragma unroll
    for (int ri = 0; ri < 2; ri++)
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                if (j < j0 || j >= j1) continue; /* j0, j1 are constants where this is unrolled */
                const float pe = exp2f(fmaf(s[j][2 * ri + e], scale_log2, -mu[ri]));
                s[j][2 * ri + e] = pe;
                acc[ri] += pe;
            }
}

template <typename T, int D, int NW, bool SPARSE>
__global__ void __launch_bounds__(NW * 32, NW == 4 ? 3 : 1) k_flash(FlashParams p) {
    constexpr int M = 16 * NW, NT = 32 * NW, CH = D / 8, KS = D / 16, DT_ = D / 8;
    /* 4-warp tiles: 2 stages and <= 168 registers so that 3 CTAs (12 warps) share an SM;
     * 1- and 8-warp tiles: 3 stages */
    constexpr int STAGES = NW == 4 ? 2 : 3;
    extern __shared__ __align__(16) unsigned char smem[];
    /* STAGES stages of [K 64 x D][V 64 x D]; the Q tile (M <= 128 rows) is staged in the last
     * stage first */
    uint16_t *sKV = (uint16_t *)smem;
    uint16_t *sQ = sKV + (STAGES - 1) * 2 * 64 * D;
    uint32_t *sTok = (uint32_t *)(sKV + STAGES * 2 * 64 * D);
    uint32_t *sChunk = sTok + (SPARSE ? p.TT * p.nbw : 0);

    int tile, b, z;
    flash_cta(p.nsplit, p.zmajor, tile, b, z);
    const int split = z % p.nsplit;
    const int zz = z / p.nsplit;
    const int hc = zz % p.hchunks, g = zz / p.hchunks;
    int64_t q0, k0;
    int32_t lq, lk;
    seq_get(p.sd, b, q0, lq, k0, lk);
    const int tok0 = tile * p.TT;
    if (tok0 >= lq) return;
    FLASH_RETURN_IF_FILTERED(p, lk)
    const int ntok = min(p.TT, lq - tok0);
    const int64_t pos0 = (int64_t)lk - lq + tok0;
    const int64_t pos_last = pos0 + ntok - 1;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, gid = lane >> 2, tig = lane & 3;
    const int G = p.G, Gt = p.Gt;

    bool rvalid[2];
    int rtt[2], rhh[2];
    int64_t rpos[2];
#pragma unroll
    for (int ri = 0; ri < 2; ri++) {
        int r = warp * 16 + gid + 8 * ri;
        int tt = r / Gt, hh = hc * Gt + r % Gt;
        rvalid[ri] = r < p.TT * Gt && tt < ntok && hh < G;
        rtt[ri] = rvalid[ri] ? tt : 0;
        rhh[ri] = hh;
        rpos[ri] = rvalid[ri] ? pos0 + tt : -1;
    }

    /* Q rows -> sQ */
    {
        const uint16_t *qg = (const uint16_t *)p.q;
        for (int i = tid; i < M * CH; i += NT) {
            int r = i / CH, c = i % CH;
            int tt = r / Gt, hh = hc * Gt + r % Gt;
            bool ok = r < p.TT * Gt && tt < ntok && hh < G;
            const uint16_t *src = qg + (ok ? ((q0 + tok0 + tt) * p.Hq + (int64_t)g * G + hh) * D : 0) + c * 8;
            cp_async16(sQ + swz<D>(r, c * 8), src, ok ? 16 : 0);
        }
    }
    const int nchunks_seq = (lk + 63) / 64;
    if (SPARSE) {
        for (int i = tid; i < p.TT * p.nbw + p.ncw; i += NT) sTok[i] = 0u;
        __syncthreads();
        const int32_t nb_seq = (lk + p.B - 1) / p.B;
        for (int i = tid; i < ntok * p.topk_cols; i += NT) {
            int tt = i / p.topk_cols, kk = i % p.topk_cols;
            int32_t blk = p.topk[((int64_t)g * p.sd.total_q + q0 + tok0 + tt) * p.topk_cols + kk];
            int64_t pos = pos0 + tt;
            /* a block past the token or wholly before its sliding window holds no key it sees */
            const int64_t kbeg = (int64_t)blk * p.B, wlo = d_window_start(pos, p.window);
            if (blk < 0 || blk >= nb_seq || kbeg > pos || kbeg + p.B <= wlo) continue;
            atomicOr(&sTok[tt * p.nbw + (blk >> 5)], 1u << (blk & 31));
            int64_t kend = kbeg + p.B - 1;
            if (kend > pos) kend = pos;
            for (int64_t c = max(kbeg, wlo) >> 6; c <= (kend >> 6); c++)
                atomicOr(&sChunk[c >> 5], 1u << (c & 31));
        }
        __syncthreads();
    }
    const int last_chunk = (int)(pos_last >> 6);
    /* dense: from the chunk of the tile's first window start (its first token's) */
    const int dense_first = (int)(d_window_start(pos0, p.window) >> 6);
    int first, count;
    FLASH_SPLIT_RANGE(p, SPARSE, sChunk, dense_first, last_chunk, split, first, count)

    const uint16_t *kg = (const uint16_t *)p.k + (k0 * p.Hkv + g) * D;
    const uint16_t *vg = (const uint16_t *)p.v + (k0 * p.Hkv + g) * D;
    const int64_t kvs = (int64_t)p.Hkv * D;
    auto load_chunk = [&](int cc, int st) {
        uint16_t *base = sKV + st * 2 * 64 * D;
        load_tile_async<D, 64, NT>(base, kg + (int64_t)cc * 64 * kvs, kvs, lk - cc * 64);
        load_tile_async<D, 64, NT>(base + 64 * D, vg + (int64_t)cc * 64 * kvs, kvs, lk - cc * 64);
    };
    int c = count > 0 ? first : -1;
    if (c >= 0) load_chunk(c, 0);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();

    uint32_t qf[KS][4];
    load_qf<D>(qf, sQ, warp);
    __syncthreads(); /* the last stage is free for K/V now */
    int cn = -1;
    if (STAGES == 3 && c >= 0 && count > 1) {
        cn = SPARSE ? chunk_next(sChunk, p.ncw, c + 1) : c + 1;
        if (cn > last_chunk) cn = -1;
    }
    if (cn >= 0) load_chunk(cn, 1);
    cp_async_commit();
    float o[DT_][4];
#pragma unroll
    for (int j = 0; j < DT_; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
    int stage = 0;
    const bool b64 = (p.B & 63) == 0;
    (void)nchunks_seq;

    while (c >= 0 && count > 0) {
        int cnn = -1;
        if (STAGES == 3) {
            if (cn >= 0 && count > 2) {
                cnn = SPARSE ? chunk_next(sChunk, p.ncw, cn + 1) : cn + 1;
                if (cnn > last_chunk) cnn = -1;
            }
            if (cnn >= 0) load_chunk(cnn, stage == 0 ? 2 : stage - 1);
            cp_async_commit();
            cp_async_wait<2>();
        } else {
            if (count > 1) {
                cn = SPARSE ? chunk_next(sChunk, p.ncw, c + 1) : c + 1;
                if (cn > last_chunk) cn = -1;
            }
            if (cn >= 0) load_chunk(cn, stage ^ 1);
            cp_async_commit();
            cp_async_wait<1>();
        }
        __syncthreads();
        const uint16_t *sk = sKV + stage * 2 * 64 * D;
        const uint16_t *sv = sk + 64 * D;

        /* a warp whose rows did not select this chunk (and block = chunk granularity) or whose
         * rows all sit before it skips the tensor-core work: the union of the tile's selections
         * then costs loads, not math */
        bool warp_needed;
        const int blk = SPARSE && b64 ? chunk_block(p, c) : 0; /* once per chunk */
        {
            bool need = false;
#pragma unroll
            for (int ri = 0; ri < 2; ri++) {
                bool sel = rvalid[ri] && (int64_t)c * 64 <= rpos[ri] &&
                           (p.window == 0 || (int64_t)c * 64 + 62 + p.window >= rpos[ri]); /* reaches its window */
                if (SPARSE && b64 && sel) {
                    sel = (sTok[rtt[ri] * p.nbw + (blk >> 5)] >> (blk & 31)) & 1u;
                }
                need = need || sel;
            }
            warp_needed = __any_sync(0xffffffffu, need);
        }
        if (warp_needed) {
        float s[8][4];
#pragma unroll
        for (int j = 0; j < 8; j++) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < KS; kk += 2) {
#pragma unroll
            for (int jg = 0; jg < 8; jg += 4) { /* 4 fragment loads in flight, then 8 MMAs */
                uint32_t r[4][4];
#pragma unroll
                for (int x = 0; x < 4; x++)
                    ldsm_x4(r[x], sk + swz<D>(8 * (jg + x) + (lane & 7), 16 * kk + (lane >> 3) * 8));
#pragma unroll
                for (int x = 0; x < 4; x++) {
                    mma16816<T>(s[jg + x], qf[kk], r[x][0], r[x][1]);
                    mma16816<T>(s[jg + x], qf[kk + 1], r[x][2], r[x][3]);
                }
            }
        }
        /* mask (only where this thread's keys are not all visible), then the online softmax of both
         * rows (softmax_rows2) */
#pragma unroll
        for (int ri = 0; ri < 2; ri++) {
            bool rowsel = true;
            const uint32_t *bits = sTok + rtt[ri] * p.nbw;
            if (SPARSE && b64) rowsel = (bits[blk >> 5] >> (blk & 31)) & 1u;
            /* key 8 j + e of this thread visible iff 8 j + e <= lim (clamped: 57 is its last key) */
            const int64_t rel = rpos[ri] - (int64_t)c * 64 - 2 * tig;
            const int lim = rowsel ? (int)max(min(rel, (int64_t)64), (int64_t)-1) : -1;
            /* and iff 8 j + e >= lo, the row's sliding window start (clamped: 0 when the window starts at or
             * before this thread's first key, as without a window) */
            const int lo = p.window > 0 ? (int)min(max(rel - p.window + 1, (int64_t)0), (int64_t)64) : 0;
            if (lim < 57 || lo > 0 || (SPARSE && !b64)) {
#pragma unroll
                for (int j = 0; j < 8; j++)
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        bool ok = 8 * j + e <= lim && 8 * j + e >= lo;
                        if (SPARSE && !b64 && ok) {
                            int blk = (int)(((int64_t)c * 64 + 8 * j + 2 * tig + e) / p.B);
                            ok = (bits[blk >> 5] >> (blk & 31)) & 1u;
                        }
                        if (!ok) s[j][2 * ri + e] = -INFINITY;
                    }
            }
        }
        float alpha[2];
        softmax_rows2<false>(s, m, l, alpha, p.scale_log2);
#pragma unroll
        for (int j = 0; j < DT_; j++) {
            o[j][0] *= alpha[0];
            o[j][1] *= alpha[0];
            o[j][2] *= alpha[1];
            o[j][3] *= alpha[1];
        }
        mma_acc_rows<T, D, 4>(o, s, sv, lane); /* O += P V */
        } /* warp_needed */
        __syncthreads();
        stage = stage == STAGES - 1 ? 0 : stage + 1;
        c = cn;
        cn = cnn; /* STAGES == 2: recomputed from c next iteration */
        count--;
    }
    cp_async_wait<0>();

    /* epilogue */
#pragma unroll
    for (int ri = 0; ri < 2; ri++) {
        float lt = l[ri];
        lt = quad_sum(lt);
        /* !(lt <= 0): a row without keys gives 0 / -inf; a NaN sum (a NaN score) stays NaN, as REF's */
        float inv = !(lt <= 0.f) ? 1.f / lt : 0.f;
        float lse2 = !(lt <= 0.f) ? m[ri] + __log2f(lt) : -INFINITY;
        int r = warp * 16 + gid + 8 * ri;
        if (p.nsplit > 1) {
            flash_store_partial<D, M>(p, zz, split, r, o, ri, inv, lse2, tig);
            continue;
        }
        if (p.fwd_delta) {
            const int64_t row = rvalid[ri] ? (q0 + tok0 + rtt[ri]) * p.Hq + (int64_t)g * G + rhh[ri] : -1;
            fwd_delta_store<T, D, DT_>(p, o, ri, row, inv, lt, lse2, tig);
            continue;
        }
        if (!rvalid[ri]) continue;
        int64_t trow = q0 + tok0 + rtt[ri];
        int64_t h = (int64_t)g * G + rhh[ri];
        T *orow = (T *)p.out + (trow * p.Hq + h) * D;
#pragma unroll
        for (int j = 0; j < DT_; j++) {
            uint32_t w = DT<T>::pack2(o[j][2 * ri] * inv, o[j][2 * ri + 1] * inv);
            *reinterpret_cast<uint32_t *>(orow + 8 * j + 2 * tig) = w;
        }
        if (p.lse && tig == 0) p.lse[trow * p.Hq + h] = !(lt <= 0.f) ? lse2 * LN2_F : -INFINITY;
    }
}


/* ============================================================ sm_90a: wgmma ==== *
 * k_flash90: the same tiling and masking as k_flash with M = 128 rows = 2 warpgroups, on
 * Hopper's asynchronous warpgroup MMA (wgmma, sm_90a only). S = Q K^T takes Q and K from shared
 * memory (descriptors, 128-byte swizzle), O += P V takes P from registers (the S accumulator
 * layout is the A-fragment layout) and V from shared memory (MN-major, transposed by the
 * instruction). A warpgroup (64 rows) skips a chunk none of its rows selected. Compiled only in
 * the sm_90a pass (__CUDA_ARCH_FEAT_SM90_ALL); the host picks it only when the build has sm_90a
 * (INFLLM_CUDA_SM90A) and the device is compute capability 9.0, else k_flash runs. The wgmma,
 * mbarrier and TMA helpers are in cuda_sm90.cuh. */

/* LIST (sparse, B a multiple of 64, fewer than 65,535 blocks; flash_cfg decides): a token's selection is
 * held as its sorted block list (16-bit, topk_cols entries and an end mark 0xffff) instead of a bitmap of
 * every block of the sequence, and each row keeps a cursor into its list. The union's chunks are walked in
 * increasing order, so a row's cursor only moves forward: at chunk c of block b the row advances past its
 * blocks below b and selected c iff the entry it stops at is b. The list's size does not grow with the
 * sequence: at G 4 (32 tokens a tile) the bitmaps pass the 2-CTA shared-memory budget at ~231K tokens
 * (stage 2 then runs one CTA an SM, 2x slower), at G 1 (128 tokens) at ~61K, and past the opt-in limit
 * (~500K at G 1) the bitmaps do not fit at all. */
/* DQ: the attention backward's dq pass (cuda_backward.cu's pass 2) on this kernel's walk, tiles, grouping and
 * loads: per chunk S = Q K^T and dP = dO V^T (both from shared memory), P = exp2(S scale_log2 - lse2) under the
 * same masks, dS = P (dP - Delta) rounded to the dtype, dq += dS K (dS from registers as P in O += P V, K
 * transposed by its descriptor as V); no softmax state, one split, dq scaled by p.scale at the end. The dS K
 * accumulator, S and dP do not fit 2 CTAs' registers an SM: 1 CTA (8 warps) and a dout tile beside Q. */
template <typename T, int D, bool SPARSE, bool LIST = false, bool DQ = false>
__global__ void __launch_bounds__(256, DQ ? 1 : 2)
    k_flash90(FlashParams p, const __grid_constant__ CUtensorMap tmk, const __grid_constant__ CUtensorMap tmv) {
#ifdef INFLLM_WGMMA_DEVICE
    static_assert(SPARSE || !LIST, "k_flash90: block lists are a sparse layout");
    constexpr int NWG = 2, M = 64 * NWG, NT = 128 * NWG, CH = D / 8, DT_ = D / 8;
    constexpr int KVB = 64 * D; /* elements of one K or V chunk tile */
    extern __shared__ __align__(16) unsigned char smem_raw[];
    /* wgmma's 128-byte swizzle needs 1024-byte aligned tiles (the host adds 1024 bytes) */
    unsigned char *smem = smem_raw + ((1024u - ((uint32_t)__cvta_generic_to_shared(smem_raw) & 1023u)) & 1023u);
    /* [stage 0: K V][stage 1: K V][Q M x D][DQ: dout M x D][token bitmaps, or LIST: token block lists
     * [TT][list_w] 16-bit][chunk bitmap][per-warpgroup chunk bitmaps] */
    uint16_t *sKV = (uint16_t *)smem;
    uint16_t *sQ = sKV + 2 * 2 * KVB;
    uint16_t *sO = sQ + M * D; /* DQ only */
    uint32_t *sTok = (uint32_t *)(sQ + (DQ ? 2 : 1) * M * D);
    const uint16_t *sList = reinterpret_cast<const uint16_t *>(sTok);
    uint32_t *sChunk = sTok + (SPARSE ? (LIST ? (p.TT * p.list_w + 1) / 2 : p.TT * p.nbw) : 0);
    uint32_t *sChunkW = sChunk + (SPARSE ? p.ncw : 0);

    int tile, b, z;
    flash_cta(p.nsplit, p.zmajor, tile, b, z);
    const int split = z % p.nsplit;
    const int zz = z / p.nsplit;
    const int hc = zz % p.hchunks, g = zz / p.hchunks;
    int64_t q0, k0;
    int32_t lq, lk;
    seq_get(p.sd, b, q0, lq, k0, lk);
    const int tok0 = tile * p.TT;
    if (tok0 >= lq) return;
    FLASH_RETURN_IF_FILTERED(p, lk)
    const int ntok = min(p.TT, lq - tok0);
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, gid = lane >> 2, tig = lane & 3;
    /* the warpgroup, broadcast from lane 0 so that ptxas can keep what derives from it (the Q
     * descriptors, the warpgroup's chunk-bitmap row) in uniform registers */
    const int wg = __shfl_sync(0xffffffffu, warp >> 2, 0);
    const int G = p.G, Gt = p.Gt;
    /* the tile's tokens (sequence-relative): slot tt holds token sTix[tt] (tok0 + tt without a
     * grouping table); position = lk - lq + token */
    __shared__ int sTix[M];
    const bool grouped = SPARSE && p.perm != nullptr;
    if (tid < ntok) sTix[tid] = grouped ? p.perm[(int64_t)g * p.sd.total_q + q0 + tok0 + tid] : tok0 + tid;
    __syncthreads();
    const int64_t pos_base = (int64_t)lk - lq;
    int tok_last = tok0 + ntok - 1; /* the tile's last token */
    if (grouped) {
        tok_last = sTix[0];
        for (int i = 1; i < ntok; i++) tok_last = max(tok_last, sTix[i]);
    }
    const int64_t pos_last = pos_base + tok_last;

    /* per row of this thread: offset of its token's block bitmap (LIST: the row's cursor into its
     * token's block list, from the list's start), position (-1: invalid row); 32-bit positions (lk <
     * 2^31) keep the register count at the 2-CTA cap */
    int rbo[2], rpos[2];
#pragma unroll
    for (int ri = 0; ri < 2; ri++) {
        int r = warp * 16 + gid + 8 * ri;
        int tt = r / Gt, hh = hc * Gt + r % Gt;
        bool ok = r < p.TT * Gt && tt < ntok && hh < G;
        rbo[ri] = ok ? tt * (LIST ? p.list_w : p.nbw) : 0;
        rpos[ri] = ok ? (int)(pos_base + sTix[tt]) : -1;
    }
    /* this warpgroup's tokens: slots [wt0, wt1] (wt1 < wt0: no valid rows) */
    const int wt0 = (wg * 64) / Gt;
    const int wt1 = min(min((wg * 64 + 63) / Gt, ntok - 1), (p.TT * Gt - 1) / Gt);
    int wg_last_pos = -1;
    for (int i = wt0; i <= wt1; i++) wg_last_pos = max(wg_last_pos, (int)(pos_base + sTix[i]));

    {
        const uint16_t *qg = (const uint16_t *)p.q;
        for (int i = tid; i < M * CH; i += NT) {
            int r = i / CH, c = i % CH;
            int tt = r / Gt, hh = hc * Gt + r % Gt;
            bool ok = r < p.TT * Gt && tt < ntok && hh < G;
            const uint16_t *src = qg + (ok ? ((q0 + sTix[tt]) * p.Hq + (int64_t)g * G + hh) * D : 0) + c * 8;
            cp_async16(sQ + swz90<M>(r, c * 8), src, ok ? 16 : 0);
            if constexpr (DQ) cp_async16(sO + swz90<M>(r, c * 8), (const uint16_t *)p.dout + (src - qg), ok ? 16 : 0);
        }
    }
    /* DQ: this thread's rows' log2 LSE and Delta (an invalid row: 0, its scores are all masked) */
    float rl[2] = {0.f, 0.f}, rd[2] = {0.f, 0.f};
    if constexpr (DQ) {
#pragma unroll
        for (int ri = 0; ri < 2; ri++) {
            const int r = warp * 16 + gid + 8 * ri, tt = r / Gt, hh = hc * Gt + r % Gt;
            if (r < p.TT * Gt && tt < ntok && hh < G) {
                const int64_t x = (q0 + sTix[tt]) * p.Hq + (int64_t)g * G + hh;
                rl[ri] = p.lse2[x];
                rd[ri] = p.delta[x];
            }
        }
    }
    if (SPARSE) {
        if (LIST)
            for (int i = tid; i < (1 + NWG) * p.ncw; i += NT) sChunk[i] = 0u;
        else
            for (int i = tid; i < p.TT * p.nbw + (1 + NWG) * p.ncw; i += NT) sTok[i] = 0u;
        __syncthreads();
        const int32_t nb_seq = (lk + p.B - 1) / p.B;
        /* LIST: the tokens' selections unsorted ([ntok][topk_cols], unusable blocks as 0xffff) in the K/V
         * stages, free until the first chunk's load (flash_cfg checks that they fit) */
        uint16_t *sUns = sKV;
        for (int i = tid; i < ntok * p.topk_cols; i += NT) {
            int tt = i / p.topk_cols, kk = i % p.topk_cols;
            int32_t blk = p.topk[((int64_t)g * p.sd.total_q + q0 + sTix[tt]) * p.topk_cols + kk];
            int64_t pos = pos_base + sTix[tt];
            /* a block past the token or wholly before its sliding window holds no key it sees */
            const int64_t kbeg = (int64_t)blk * p.B, wlo = d_window_start(pos, p.window);
            const bool usable = !(blk < 0 || blk >= nb_seq || kbeg > pos || kbeg + p.B <= wlo);
            if (LIST) sUns[i] = usable ? (uint16_t)blk : (uint16_t)0xffffu;
            if (!usable) continue;
            if (!LIST) atomicOr(&sTok[tt * p.nbw + (blk >> 5)], 1u << (blk & 31));
            int w0 = (tt * Gt) / 64, w1 = min((tt * Gt + Gt - 1) / 64, NWG - 1);
            int64_t kend = kbeg + p.B - 1;
            if (kend > pos) kend = pos;
            for (int64_t c = max(kbeg, wlo) >> 6; c <= (kend >> 6); c++) {
                atomicOr(&sChunk[c >> 5], 1u << (c & 31));
                for (int w = w0; w <= w1; w++) atomicOr(&sChunkW[w * p.ncw + (c >> 5)], 1u << (c & 31));
            }
        }
        __syncthreads();
        if (LIST) {
            /* each token's list sorted, then its end mark (flash_list.cuh) */
            flash_list_sort<NT>(sUns, reinterpret_cast<uint16_t *>(sTok), ntok, p.topk_cols, p.list_w, tid);
            /* the first chunk's TMA (async proxy) overwrites the stage these generic reads used */
            fence_proxy_async();
            __syncthreads();
        }
    }
    const int last_chunk = (int)(pos_last >> 6);
    /* dense (tokens in order): from the chunk of the tile's first window start (its first token's) */
    const int dense_first = SPARSE ? 0 : (int)(d_window_start(pos_base + tok0, p.window) >> 6);
    int first, count;
    FLASH_SPLIT_RANGE(p, SPARSE, sChunk, dense_first, last_chunk, split, first, count)
    if constexpr (LIST) { /* each row's cursor at its first entry in this split's walk */
        if (count > 0) {
            const uint32_t blk0 = (uint32_t)chunk_block(p, first);
#pragma unroll
            for (int ri = 0; ri < 2; ri++) rbo[ri] = flash_list_seek(sList, rbo[ri], blk0);
        }
    }

    const uint16_t *kg = (const uint16_t *)p.k + (k0 * p.Hkv + g) * D;
    const uint16_t *vg = (const uint16_t *)p.v + (k0 * p.Hkv + g) * D;
    const int64_t kvs = (int64_t)p.Hkv * D;
    /* a chunk wholly inside the sequence comes by TMA (thread 0 issues, everyone waits on the
     * stage's mbarrier); a partial last chunk by cp.async with zero fill */
    __shared__ __align__(8) uint64_t sBar[2];
    if (p.tma && tid == 0) {
        mbar_init(&sBar[0]);
        mbar_init(&sBar[1]);
    }
    __syncthreads();
    auto by_tma = [&](int cc) { return p.tma && cc * 64 + 64 <= lk; };
    auto load_chunk = [&](int cc, int st) {
        uint16_t *base = sKV + st * 2 * KVB;
        if (by_tma(cc)) {
            if (tid == 0) {
                mbar_expect_tx(&sBar[st], 2 * KVB * 2);
                const int tok = (int)(k0 + cc * 64);
#pragma unroll
                for (int h = 0; h < D / 64; h++) {
                    tma_load(base + h * 64 * 64, &tmk, &sBar[st], h * 64, g, tok);
                    tma_load(base + KVB + h * 64 * 64, &tmv, &sBar[st], h * 64, g, tok);
                }
            }
        } else {
            load_tile90<D, 64, NT>(base, kg + (int64_t)cc * 64 * kvs, kvs, lk - cc * 64);
            load_tile90<D, 64, NT>(base + KVB, vg + (int64_t)cc * 64 * kvs, kvs, lk - cc * 64);
        }
    };
    uint32_t phase = 0; /* bit st: parity of stage st's next mbarrier phase */
    int c = count > 0 ? first : -1;
    if (c >= 0) load_chunk(c, 0);
    cp_async_commit();

    float o[DT_][4];
    /* DQ (sparse and dense): the accumulator is not zeroed here but by the first dS K product (its scale-d off): a
     * zeroing before the loop, reaching the loop head beside a product still in flight from the previous chunk
     * (below), makes ptxas serialize every wgmma of the kernel (C7515) */
    bool dq_zero = true; /* DQ: no dS K product issued yet */
    if (!DQ) {
#pragma unroll
        for (int j = 0; j < DT_; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
    }
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
    int stage = 0;
    const bool b64 = LIST || (p.B & 63) == 0; /* LIST: flash_cfg takes it only when B % 64 == 0 */
    /* descriptors: Q rows of this warpgroup, K/V of stage 0 (stage 1 = + 2*KVB*2 bytes) */
    const uint64_t dq = gmma_desc(sQ + wg * 64 * 64, 16, 1024);
    const uint64_t dk0 = gmma_desc(sKV, 16, 1024);
    const uint64_t dv0 = gmma_desc(sKV + KVB, 64 * 128, 1024);
    /* DQ: dout rows of this warpgroup; V of stage 0 as dP's B operand (K-major, as K in S); K of stage 0 as
     * dS K's (MN-major, as V in P V) */
    const uint64_t ddo = DQ ? gmma_desc(sO + wg * 64 * 64, 16, 1024) : 0;
    const uint64_t dvk0 = DQ ? gmma_desc(sKV + KVB, 16, 1024) : 0;
    const uint64_t dkt0 = DQ ? gmma_desc(sKV, 64 * 128, 1024) : 0;
    int cn = -1;
    /* sparse: the chunk after c and whether this warpgroup computes c are known one iteration ahead
     * (worked out while the previous chunk's S = Q K^T ran), so that a chunk's serial head is the
     * next chunk's load, the wait for this one and the product (ncu, session 12: the bitmap scan
     * and the warpgroup bitmap's test before the product were ~13% of a warp's cycles) */
    auto wg_needs = [&](int cc) {
        return cc * 64 <= wg_last_pos && ((sChunkW[wg * p.ncw + (cc >> 5)] >> (cc & 31)) & 1u);
    };
    bool need = false;
    /* sparse: when the next load is by TMA, the stage it fills is released by named-barrier arrivals
     * instead of a CTA barrier at the end of every chunk: warps 1-7 arrive on barrier 1 + stage after
     * their last read of the stage (the P V product's wait), and warp 0 syncs on it in the next
     * iteration, under its S product, before thread 0 issues the load. A warpgroup may then run a
     * chunk ahead of the other, never two: chunk i + 1 is loaded only after every warp released chunk
     * i - 1. So a barrier ID is never arrived on for a later use before warp 0 synced on it, with
     * the IDs alternating by stage. cp.async loads (every thread copies) keep the CTA barrier.
     * (ncu at 128K, session 12: the end-of-chunk barrier held ~21% of a warp's sampled cycles;
     * stage 2 1.02x on the H200, call 4.) released: the load of this iteration goes that way. */
    bool released = false;
    /* DQ, sparse: this warpgroup's dq += dS K of the chunk it computed last may still run when the iteration ends
     * (it is waited for under the next chunk's S / dP products); its stage is released then (dq_pend: warps 1-7
     * have that stage's arrival to make) */
    bool dq_pend = false;
    /* DQ: dS packed as the A operand of dq += dS K, which the product reads from these registers until it is done:
     * kept alive (and unshared with the next chunk's S / dP accumulators) until its wait */
    uint32_t dqa[DQ ? 4 : 1][4];
    const int warp_u = SPARSE || DQ ? __shfl_sync(0xffffffffu, warp, 0) : warp; /* warp, known uniform (as wg) */
    if (SPARSE && c >= 0) {
        cn = count > 1 ? chunk_next(sChunk, p.ncw, c + 1) : -1;
        if (cn > last_chunk) cn = -1;
        need = wg_needs(c);
    }
    /* per row of this thread at chunk c: key 8 j + e of its columns is visible iff 8 j + e <= lim (-1: none;
     * LIST: advances the row's cursor). The rows' block bits are read before the product's wait. */
    auto row_limits = [&](int (&lim)[2]) {
        const int blk = SPARSE && b64 ? chunk_block(p, c) : 0; /* once per chunk, for both rows */
#pragma unroll
        for (int ri = 0; ri < 2; ri++) {
            bool rowsel = true;
            if constexpr (LIST) {
                rowsel = flash_list_step(sList, &rbo[ri], (uint32_t)blk);
            } else if (SPARSE && b64) {
                const uint32_t *bits = sTok + rbo[ri];
                rowsel = (bits[blk >> 5] >> (blk & 31)) & 1u;
            }
            lim[ri] = rowsel ? rpos[ri] - c * 64 - 2 * tig : -1;
        }
    };
    /* the scores of keys a row does not see -> -inf; only a thread whose keys are not all visible masks.
     * Under a sliding window key 8 j + e is visible also only iff 8 j + e >= lo = lim - window + 1, the row's
     * window start (<= 0 where the window starts at or before the thread's first key; a row with lim < 0 sees
     * no key anyway). From lim, not rpos: rpos kept for this spilled it in the sparse instances' loop. */
    auto mask_scores = [&](float (&s)[8][4], const int (&lim)[2]) {
#pragma unroll
        for (int ri = 0; ri < 2; ri++) {
            const uint32_t *bits = sTok + rbo[ri];
            const int lo = p.window > 0 ? lim[ri] - p.window + 1 : 0;
            if (lim[ri] < 57 || lo > 0 || (SPARSE && !b64)) { /* 57 = 8 * 7 + 1, this thread's last key */
#pragma unroll
                for (int j = 0; j < 8; j++)
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        bool ok = 8 * j + e <= lim[ri] && 8 * j + e >= lo;
                        if (SPARSE && !b64 && ok) {
                            int blk = (c * 64 + 8 * j + 2 * tig + e) / p.B;
                            ok = (bits[blk >> 5] >> (blk & 31)) & 1u;
                        }
                        if (!ok) s[j][2 * ri + e] = -INFINITY;
                    }
            }
        }
    };

    while (c >= 0 && count > 0) {
        if (!SPARSE) {
            if (count > 1) {
                cn = c + 1;
                if (cn > last_chunk) cn = -1;
            } else {
                cn = -1;
            }
        }
        if (cn >= 0 && !released) load_chunk(cn, stage ^ 1);
        cp_async_commit();
        cp_async_wait<1>();
        /* a TMA chunk is visible to each thread that saw its mbarrier phase complete, and TMA
         * writes through the async proxy that wgmma reads: no CTA barrier is needed for it. A
         * cp.async chunk (and the Q tile, which came with the first chunk) needs the proxy fence
         * and the barrier. The stage reuse is ordered by the barrier at the end of the loop (sparse,
         * TMA loads: by the named barriers of `released`). */
        const bool tma_chunk = by_tma(c);
        if (tma_chunk) {
            mbar_wait(&sBar[stage], (phase >> stage) & 1u);
            phase ^= 1u << stage;
        }
        if (!tma_chunk || c == first) {
            fence_proxy_async();
            __syncthreads();
        }

        const bool wg_needed = SPARSE ? need : c * 64 <= wg_last_pos;
        /* sparse: the chunk after cn and whether this warpgroup computes cn, worked out under the
         * product when this warpgroup computes c */
        int cnn = -1;
        bool need_n = false;
        auto look_ahead = [&]() {
            if (SPARSE && cn >= 0) {
                cnn = count > 2 ? chunk_next(sChunk, p.ncw, cn + 1) : -1;
                if (cnn > last_chunk) cnn = -1;
                need_n = wg_needs(cn);
            } else if (DQ && cn >= 0) { /* dense DQ: the next chunk in order, for the release below */
                cnn = count > 2 ? cn + 1 : -1;
                if (cnn > last_chunk) cnn = -1;
            }
        };
        /* stage ^ 1 (chunk c - 1) released by every warp: warp 0 syncs on barrier 1 + (stage ^ 1),
         * on which warps 1-7 arrived, then thread 0 loads cn into it */
        auto load_released = [&]() {
            if ((SPARSE || DQ) && released && warp_u == 0) {
                if (stage)
                    named_bar_sync<1, 256>();
                else
                    named_bar_sync<2, 256>();
                if (tid == 0) load_chunk(cn, stage ^ 1);
            }
        };
        /* DQ: the previous chunk's dS K done (waited for by the caller), its stage released by warps 1-7 */
        auto dq_release_prev = [&]() {
            if constexpr (DQ) {
                if (dq_pend) {
                    if (stage)
                        named_bar_arrive<1, 256>();
                    else
                        named_bar_arrive<2, 256>();
                }
                dq_pend = false;
            }
        };
        if (!wg_needed) {
            if constexpr (DQ) {
                wgmma_wait0();
                reg_fence_u32<4>(dqa);
                dq_release_prev();
            }
            load_released();
            look_ahead();
        }
        if (DQ && wg_needed) {
            if constexpr (DQ) {
                /* S = Q K^T and dP = dO V^T, two commit groups: P's exps run under dP's product */
                const uint32_t soff = (uint32_t)(stage * 2 * KVB * 2) >> 4; /* descriptor units */
                float s[8][4], dp[8][4];
                wgmma_fence();
                wgmma_rows_keys<T, D, M>(s, dq, gdesc_add(dk0, soff));
                wgmma_commit();
                wgmma_rows_keys<T, D, M>(dp, ddo, gdesc_add(dvk0, soff));
                wgmma_commit();
                /* the previous chunk's dS K (committed before S) done: release its stage */
                wgmma_wait<2>();
                reg_fence_u32<4>(dqa);
                dq_release_prev();
                load_released();
                look_ahead();
                int lim[2];
                row_limits(lim);
                wgmma_wait<1>();
                reg_fence<8>(s);
                /* a warp none of whose rows sees a key of the chunk: dS = 0 (the warpgroup's product still
                 * takes its rows) */
                const bool skip = SPARSE && b64 && __all_sync(0xffffffffu, lim[0] < 0 && lim[1] < 0);
                if (!skip) {
                    mask_scores(s, lim);
#pragma unroll
                    for (int j = 0; j < 8; j++)
#pragma unroll
                        for (int e = 0; e < 4; e++) s[j][e] = exp2f(s[j][e] * p.scale_log2 - rl[e >> 1]); /* P */
                }
                wgmma_wait<0>();
                reg_fence<8>(dp);
                if (!skip) {
#pragma unroll
                    for (int j = 0; j < 8; j++)
#pragma unroll
                        for (int e = 0; e < 4; e++) s[j][e] *= dp[j][e] - rd[e >> 1]; /* dS */
                }
                uint32_t(&a)[4][4] = dqa;
#pragma unroll
                for (int ks = 0; ks < 4; ks++) {
                    a[ks][0] = skip ? 0u : DT<T>::pack2(s[2 * ks][0], s[2 * ks][1]);
                    a[ks][1] = skip ? 0u : DT<T>::pack2(s[2 * ks][2], s[2 * ks][3]);
                    a[ks][2] = skip ? 0u : DT<T>::pack2(s[2 * ks + 1][0], s[2 * ks + 1][1]);
                    a[ks][3] = skip ? 0u : DT<T>::pack2(s[2 * ks + 1][2], s[2 * ks + 1][3]);
                }
                /* dq += dS K */
                reg_fence<DT_>(o);
                wgmma_fence();
                wgmma_regs_rows<T, D, 4>(o, a, gdesc_add(dkt0, soff), !DQ || !dq_zero);
                dq_zero = false;
                wgmma_commit();
            }
        } else if (!DQ && wg_needed) {
            const uint32_t soff = (uint32_t)(stage * 2 * KVB * 2) >> 4; /* descriptor units */
            float s[8][4];
            wgmma_fence();
            wgmma_rows_keys<T, D, M>(s, dq, gdesc_add(dk0, soff));
            wgmma_commit();
            load_released();
            look_ahead();
            /* softmax in base 2 on the raw scores: the row max is taken before scaling (the scale is
             * > 0, so max(s) * scale is the max of the scaled scores) and the scale goes into the
             * exponent's FFMA; only a thread whose keys are not all visible (the diagonal chunk, an
             * unselected block, block sizes below 64) masks. The rows' block bits are read before
             * the wait, under the product. */
            int lim[2]; /* per row: key j8+e of this thread is visible iff 8 j + e <= lim */
            row_limits(lim);
            wgmma_wait0();
            reg_fence<8>(s);
            /* sparse: a warp none of whose rows sees a key of the chunk (at G 16 a warp's 16 rows are one
             * token, and ~half the chunks its warpgroup walks are another token's) skips the softmax:
             * P = 0, alpha = 1, m and l unchanged, which is bitwise what the full path computes there */
            const bool skip = SPARSE && b64 && __all_sync(0xffffffffu, lim[0] < 0 && lim[1] < 0);
            /* P and O += P V in PARTS key ranges of 64 / PARTS keys (dense): the exps of a range run while
             * the tensor cores take the previous range's P V, so the chunk's serial chain is shorter by a
             * range's exps for each range after the first. Each row's sum adds its keys in column order
             * and the products accumulate in k-step order, as in one pass: the same bits. */
            constexpr int PARTS = SPARSE ? 1 : FLASH90_PV_PARTS_DENSE, JP = 8 / PARTS, KP = 4 / PARTS;
            float alpha[2] = {1.f, 1.f}, mu[2] = {0.f, 0.f}, acc[2] = {0.f, 0.f};
            if (!skip) {
                /* masks first (a branch per row), then both rows' softmax with no branch in between */
                mask_scores(s, lim);
                if (PARTS == 1)
                    softmax_rows2<SPARSE>(s, m, l, alpha, p.scale_log2);
                else
                    softmax_max2(s, m, alpha, mu, p.scale_log2);
            }
            /* O *= alpha; sparse: not when every alpha of the warp is 1 (no row max moved, or a skipped
             * chunk), the same bits without the multiplies (in the dense instances the branch makes
             * ptxas serialize the wgmma at this register cap: C7512) */
            if (!SPARSE || __any_sync(0xffffffffu, alpha[0] != 1.f || alpha[1] != 1.f)) {
#pragma unroll
                for (int j = 0; j < DT_; j++) {
                    o[j][0] *= alpha[0];
                    o[j][1] *= alpha[0];
                    o[j][2] *= alpha[1];
                    o[j][3] *= alpha[1];
                }
            }
            uint32_t a[4][4];
#pragma unroll
            for (int part = 0; part < PARTS; part++) {
                if (PARTS > 1 && !skip) softmax_exp2(s, mu, acc, p.scale_log2, part * JP, part * JP + JP);
#pragma unroll
                for (int ks = part * KP; ks < part * KP + KP; ks++) {
                    a[ks][0] = skip ? 0u : DT<T>::pack2(s[2 * ks][0], s[2 * ks][1]);
                    a[ks][1] = skip ? 0u : DT<T>::pack2(s[2 * ks][2], s[2 * ks][3]);
                    a[ks][2] = skip ? 0u : DT<T>::pack2(s[2 * ks + 1][0], s[2 * ks + 1][1]);
                    a[ks][3] = skip ? 0u : DT<T>::pack2(s[2 * ks + 1][2], s[2 * ks + 1][3]);
                }
                if (part == 0) reg_fence<DT_>(o);
                wgmma_fence();
#pragma unroll
                for (int ks = part * KP; ks < part * KP + KP; ks++) {
                    uint32_t vo = (uint32_t)(ks * 16 * 64 * 2) >> 4;
                    wgmma_rs<T, D>(o, a[ks], gdesc_add(dv0, soff + vo), 1);
                }
                wgmma_commit();
            }
            if (PARTS > 1 && !skip) {
#pragma unroll
                for (int ri = 0; ri < 2; ri++) l[ri] = l[ri] * alpha[ri] + acc[ri];
            }
            wgmma_wait0();
            reg_fence<DT_>(o);
            if (PARTS > 1) reg_fence_u32<4>(a); /* P stays in its registers until the products that read it are done */
        }
        if (SPARSE || DQ) {
            /* the next load into this stage is cnn's: by TMA, this stage is released by arrivals on
             * barrier 1 + stage (warp 0 syncs on it next iteration); else by the CTA barrier */
            released = cnn >= 0 && by_tma(cnn);
            if (!released) {
                if constexpr (DQ) { /* the stage is reused after this barrier: the dS K that reads it done */
                    wgmma_wait0();
                    reg_fence<DT_>(o);
                    reg_fence_u32<4>(dqa);
                }
                __syncthreads();
            } else if (warp_u != 0) {
                if constexpr (DQ)
                    dq_pend = true; /* arrived on in the next iteration, after its dS K wait */
                else if (stage)
                    named_bar_arrive<2, 256>();
                else
                    named_bar_arrive<1, 256>();
            }
        } else {
            __syncthreads();
        }
        stage ^= 1;
        c = cn;
        count--;
        if (SPARSE) {
            cn = cnn;
            need = need_n;
        }
    }
    cp_async_wait<0>();
    if constexpr (DQ) { /* the last dS K (the walk's last chunk releases by the CTA barrier, which waited for
                         * it); a warpgroup that computed no chunk: dq = 0 */
        wgmma_wait0();
        reg_fence<DT_>(o);
        reg_fence_u32<4>(dqa);
        if (dq_zero) {
#pragma unroll
            for (int j = 0; j < DT_; j++) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
        }
    }

#pragma unroll
    for (int ri = 0; ri < 2; ri++) {
        if constexpr (DQ) { /* dq = scale dS K, one split */
            const int r = warp * 16 + gid + 8 * ri, tt = r / Gt, hh = hc * Gt + r % Gt;
            if (!(r < p.TT * Gt && tt < ntok && hh < G)) continue;
            T *row = (T *)p.out + ((q0 + sTix[tt]) * p.Hq + (int64_t)g * G + hh) * D;
#pragma unroll
            for (int j = 0; j < DT_; j++)
                *reinterpret_cast<uint32_t *>(row + 8 * j + 2 * tig) =
                    DT<T>::pack2(o[j][2 * ri] * p.scale, o[j][2 * ri + 1] * p.scale);
            continue;
        }
        float lt = l[ri];
        lt = quad_sum(lt);
        /* !(lt <= 0): a row without keys gives 0 / -inf; a NaN sum (a NaN score) stays NaN, as REF's */
        float inv = !(lt <= 0.f) ? 1.f / lt : 0.f;
        float lse2 = !(lt <= 0.f) ? m[ri] + __log2f(lt) : -INFINITY;
        int r = warp * 16 + gid + 8 * ri;
        if (p.nsplit > 1) {
            flash_store_partial<D, M>(p, zz, split, r, o, ri, inv, lse2, tig);
            continue;
        }
        int tt = r / Gt, hh = hc * Gt + r % Gt;
        const bool row_ok = r < p.TT * Gt && tt < ntok && hh < G;
        if (p.fwd_delta) {
            fwd_delta_store<T, D, DT_>(p, o, ri, row_ok ? (q0 + sTix[tt]) * p.Hq + (int64_t)g * G + hh : -1, inv, lt,
                                       lse2, tig);
            continue;
        }
        if (!row_ok) continue;
        int64_t trow = q0 + sTix[tt];
        int64_t h = (int64_t)g * G + hh;
        T *orow = (T *)p.out + (trow * p.Hq + h) * D;
#pragma unroll
        for (int j = 0; j < DT_; j++) {
            uint32_t w = DT<T>::pack2(o[j][2 * ri] * inv, o[j][2 * ri + 1] * inv);
            *reinterpret_cast<uint32_t *>(orow + 8 * j + 2 * tig) = w;
        }
        if (p.lse && tig == 0) p.lse[trow * p.Hq + h] = !(lt <= 0.f) ? lse2 * LN2_F : -INFINITY;
    }
#else
    __trap(); /* not built for sm_90a: the host never launches this */
#endif
}

/* Stage-2 token grouping for k_flash90 (sparse, one split). A tile walks the union of the 64-key
 * chunks its TT tokens selected, and per-token selections of neighbouring tokens overlap little, so
 * which tokens share a tile sets the work. Inside each window of `tiles` * TT consecutive query
 * tokens of a sequence (per KV head), tiles are formed greedily (group_window, group_tokens.cuh: a
 * tile starts at the lowest free token and adds, one at a time, the free token that adds the fewest
 * chunks to its union, the lowest on ties). Rows are masked per token, so the grouping changes only
 * which rows share a tile, never a row's result. perm[g][q0 + w0 + slot] = the token
 * (sequence-relative) of that slot. grid (windows, num_seqs, Hkv), 256 threads; dynamic shared memory
 * group_smem(). */
static size_t group_smem(int tiles, int TT, int ncw) { return group_window_smem(tiles * TT, ncw); }

__global__ void __launch_bounds__(256) k_group_tokens(FlashParams p, int32_t *perm, int tiles, int min_gain) {
    extern __shared__ uint32_t gsm[];
    const int W = tiles * p.TT, ncw = p.ncw, stride = group_stride(ncw);
    const int b = blockIdx.y, g = blockIdx.z, w0 = blockIdx.x * W;
    const int tid = threadIdx.x;
    int64_t q0, k0;
    int32_t lq, lk;
    seq_get(p.sd, b, q0, lq, k0, lk);
    if (w0 >= lq) return;
    FLASH_RETURN_IF_FILTERED(p, lk)
    const int nw = min(W, lq - w0);
    uint32_t *bm = gsm;                         /* [W][stride] chunk bitmaps of the window's tokens */
    uint32_t *u = bm + (size_t)W * stride;      /* [ncw] the open tile's union */
    uint32_t *dval = u + ncw;                   /* [ncw] the union's new bits, by changed word */
    int *nzw = (int *)(dval + ncw);             /* [ncw] the changed words */
    int *grow = nzw + ncw;                      /* [W] chunks a free token would add; INT_MAX: taken */
    int *order = grow + W;                      /* [W] slot -> token of the window */
    int *sh = order + W;                        /* [1] */
    for (int i = tid; i < nw * stride; i += 256) bm[i] = 0u;
    __syncthreads();
    const int32_t nb_seq = (lk + p.B - 1) / p.B;
    for (int i = tid; i < nw * p.topk_cols; i += 256) {
        const int tt = i / p.topk_cols, kk = i % p.topk_cols;
        const int32_t blk = p.topk[((int64_t)g * p.sd.total_q + q0 + w0 + tt) * p.topk_cols + kk];
        const int64_t pos = (int64_t)lk - lq + w0 + tt;
        /* the chunks k_flash90 walks for this token: as its tile setup (past the token, before its window: none) */
        const int64_t kbeg = (int64_t)blk * p.B, wlo = d_window_start(pos, p.window);
        if (blk < 0 || blk >= nb_seq || kbeg > pos || kbeg + p.B <= wlo) continue;
        const int64_t kend = min(kbeg + p.B - 1, pos);
        for (int64_t c = max(kbeg, wlo) >> 6; c <= (kend >> 6); c++)
            atomicOr(&bm[tt * stride + (c >> 5)], 1u << (c & 31));
    }
    __syncthreads();
    group_window<256>(bm, stride, ncw, nw, p.TT, u, dval, nzw, grow, order, sh, min_gain);
    for (int i = tid; i < nw; i += 256) perm[(int64_t)g * p.sd.total_q + q0 + w0 + i] = w0 + order[i];
}

/* merges the nsplit (<= 32) partial results of each row: one warp a row, COMBINE_WARPS rows a CTA;
 * grid = the flash grid without the split factor, its z times M / COMBINE_WARPS row groups. Lane s
 * holds split s's LSE and weight 2^(lse_s - max); lane l merges columns [E l, E l + E) over the
 * splits in split order (weights broadcast from their lanes, all of a row's loads independent), so
 * the sums are the one-thread-a-row merge's, bitwise. (That merge, 4 warps a flash CTA with each
 * warp's rows and splits serial, took 45 us at 1 x 128K and 330 us at 16 x 128K on the H200: 4 CTAs
 * for the whole GPU.) */
enum { COMBINE_WARPS = 4 };
__device__ __forceinline__ void combine_load(float (&v)[4], const float *src) { /* one 16-byte load */
    const float4 x = *reinterpret_cast<const float4 *>(src);
    v[0] = x.x, v[1] = x.y, v[2] = x.z, v[3] = x.w;
}
__device__ __forceinline__ void combine_load(float (&v)[2], const float *src) {
    const float2 x = *reinterpret_cast<const float2 *>(src);
    v[0] = x.x, v[1] = x.y;
}
template <typename T, int D, int M>
__global__ void __launch_bounds__(COMBINE_WARPS * 32) k_combine(FlashParams p) {
    static_assert(M % COMBINE_WARPS == 0 && D % 64 == 0, "k_combine: row groups, 2 or 4 columns a lane");
    constexpr int RG = M / COMBINE_WARPS, E = D / 32;
    const int b = blockIdx.y, zz = blockIdx.z / RG;
    const int hc = zz % p.hchunks, g = zz / p.hchunks;
    const int lane = threadIdx.x & 31;
    const int r = (blockIdx.z % RG) * COMBINE_WARPS + (threadIdx.x >> 5); /* this warp's row */
    int64_t q0, k0;
    int32_t lq, lk;
    seq_get(p.sd, b, q0, lq, k0, lk);
    const int tok0 = blockIdx.x * p.TT;
    if (tok0 >= lq) return;
    FLASH_RETURN_IF_FILTERED(p, lk)
    const int ntok = min(p.TT, lq - tok0);
    const int tt = r / p.Gt, hh = hc * p.Gt + r % p.Gt;
    if (!(r < p.TT * p.Gt && tt < ntok && hh < p.G)) return;
    const int64_t cta = ((int64_t)blockIdx.y * gridDim.x + blockIdx.x) * (gridDim.z / RG) + zz;
    const float *lse_r = p.part_lse + cta * p.nsplit * M + r;             /* split s: + s M */
    const float *o_r = p.part_o + (cta * p.nsplit * M + r) * D + E * lane; /* split s: + s M D */
    const float ls = lane < p.nsplit ? lse_r[(int64_t)lane * M] : -INFINITY;
    float mx = ls;
#pragma unroll
    for (int o = 16; o; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    const float mu = mx == -INFINITY ? 0.f : mx;
    const float w = exp2f(ls - mu); /* 0 for lanes >= nsplit */
    float tot = 0.f, acc[E];
#pragma unroll
    for (int e = 0; e < E; e++) acc[e] = 0.f;
#pragma unroll 4
    for (int sp = 0; sp < p.nsplit; sp++) {
        const float ws = __shfl_sync(0xffffffffu, w, sp);
        tot += ws;
        float v[E];
        combine_load(v, o_r + (int64_t)sp * M * D);
#pragma unroll
        for (int e = 0; e < E; e++) acc[e] += ws * v[e];
    }
    const int64_t trow = q0 + tok0 + tt;
    const int64_t h = (int64_t)g * p.G + hh;
    if (p.fwd_delta) { /* the backward's pass 1: Delta from the unrounded O (fwd_delta_dot) */
        const T *drow = (const T *)p.fwd_dout + (trow * p.Hq + h) * D + E * lane;
        float dot = 0.f;
#pragma unroll
        for (int e = 0; e < E; e++) dot += acc[e] * DT<T>::to_f(drow[e]);
#pragma unroll
        for (int o = 16; o; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
        if (lane == 0) {
            p.fwd_delta[trow * p.Hq + h] = !(tot <= 0.f) ? dot / tot : 0.f;
            p.lse[trow * p.Hq + h] = bwd_lse2_of(!(tot <= 0.f) ? (mu + __log2f(tot)) * LN2_F : -INFINITY);
        }
        return;
    }
    T *orow = (T *)p.out + (trow * p.Hq + h) * D + E * lane;
#pragma unroll
    for (int e = 0; e < E; e += 2)
        *reinterpret_cast<uint32_t *>(orow + e) =
            DT<T>::pack2(!(tot <= 0.f) ? acc[e] / tot : 0.f, !(tot <= 0.f) ? acc[e + 1] / tot : 0.f);
    if (p.lse && lane == 0) p.lse[trow * p.Hq + h] = !(tot <= 0.f) ? (mu + __log2f(tot)) * LN2_F : -INFINITY;
}

/* ------------------------------------------------------------ host side ---- */

/* Dynamic shared memory of `smem` bytes for kernel func: static + dynamic above the default 48 KB
 * needs the kernel's MaxDynamicSharedMemorySize raised first (a launch without it fails with "invalid
 * argument"), so the kernel's static bytes count too; both are cached per (kernel, device). */
infllm_status cuda_func_smem(const void *func, size_t smem, const char *what) {
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) {
        (void)cudaGetLastError();
        dev = -1;
    }
    /* (kernel, device) -> its static bytes and the dynamic size set; a full table falls back to asking
     * and setting every call */
    struct Entry {
        const void *func;
        int dev;
        size_t stat, smem;
    };
    static Entry table[128];
    static int used = 0;
    static std::mutex lock;
    std::lock_guard<std::mutex> guard(lock);
    Entry *e = NULL;
    for (int i = 0; i < used; i++)
        if (table[i].func == func && table[i].dev == dev) e = &table[i];
    if (!e) {
        cudaFuncAttributes fa;
        if (cudaFuncGetAttributes(&fa, func) != cudaSuccess) {
            cudaError_t err = cudaGetLastError();
            return infllm_set_error(INFLLM_ERR_CUDA, "CUDA: attributes of %s: %s", what, cudaGetErrorString(err));
        }
        Entry fresh = Entry{func, dev, fa.sharedSizeBytes, 0};
        if (used < (int)(sizeof table / sizeof table[0])) {
            e = &table[used++];
            *e = fresh;
        } else {
            static thread_local Entry spare;
            spare = fresh;
            e = &spare;
        }
    }
    if (e->stat + smem <= 48 * 1024 || e->smem >= smem) return INFLLM_OK;
    /* past the device's opt-in limit (cuda_dev_props: INFLLM_CUDA_EMULATE lowers it) the launch planning
     * chose a tile this device cannot hold: refused here with the numbers, where the driver would answer
     * "invalid argument" */
    const int optin = cuda_dev_props().smem_optin;
    if (e->stat + smem > (size_t)optin)
        return infllm_set_error(INFLLM_ERR_UNSUPPORTED,
                                "CUDA: %s needs %zu + %zu bytes of shared memory a block; this device allows %d",
                                what, e->stat, smem, optin);
    cudaError_t err = cudaFuncSetAttribute(func, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (err != cudaSuccess) {
        (void)cudaGetLastError();
        return infllm_set_error(INFLLM_ERR_CUDA, "CUDA: %s with %zu + %zu bytes of shared memory: %s", what, e->stat,
                                smem, cudaGetErrorString(err));
    }
    e->smem = smem;
    return INFLLM_OK;
}

/* wgmma path usable: built with sm_90a (INFLLM_CUDA_SM90A), device of compute capability 9.0,
 * and not switched off by INFLLM_CUDA_NO_WGMMA=1 */
int cuda_use_wgmma(void) {
#ifdef INFLLM_CUDA_SM90A
    static std::atomic<int> no_wgmma{CUDA_ENV_UNREAD};
    if (cuda_env_int("INFLLM_CUDA_NO_WGMMA", &no_wgmma) == 1) return 0;
    const CudaDevProps d = cuda_dev_props();
    return d.cc_major == 9 && d.cc_minor == 0;
#else
    return 0;
#endif
}

struct FlashCfg {
    int NW, Gt, TT, hchunks, nsplit;
    int nbw, ncw; /* words of a token's block bitmap and of the chunk bitmap (FlashParams) */
    int list_w;   /* > 0: k_flash90 holds each token's selection as a sorted block list of list_w entries */
    bool wg; /* k_flash90 (NW = 8: two warpgroups, M = 128) */
    int64_t gx;
    size_t smem;
};

/* the launch of k_flash (NW warps; 8: k_flash90 where it runs) or k_flash90 for the call; flash_cfg picks NW */
static FlashCfg flash_cfg_nw(const infllm_attn_params *ap, int sparse, int32_t topk_cols, int allow_split, int nw) {
    FlashCfg c;
    c.NW = nw;
    c.wg = c.NW != 1 && cuda_use_wgmma();
    if (c.wg) c.NW = 8;
    int M = 16 * c.NW;
    c.Gt = ap->G < M ? ap->G : M;
    c.TT = M / c.Gt;
    c.hchunks = (ap->G + c.Gt - 1) / c.Gt;
    c.gx = (ap->max_lq + c.TT - 1) / c.TT;
    const int nbw = c.nbw = (int)((((int64_t)ap->max_lk + ap->B - 1) / ap->B + 31) / 32);
    const int ncw = c.ncw = (int)((((int64_t)ap->max_lk + 63) / 64 + 31) / 32);
    c.smem = (c.NW == 4 ? 2 : 3) * 2 * 64 * (size_t)ap->D * 2; /* Q is staged inside the last stage */
    (void)M;
    if (c.wg) /* 2 stages of K/V, a separate Q tile, 1024 bytes of alignment slack, per-warpgroup chunk bitmaps */
        c.smem = 2 * 2 * 64 * (size_t)ap->D * 2 + (size_t)M * ap->D * 2 + 1024 + (sparse ? 2 * (size_t)ncw * 4 : 0);
    c.list_w = 0;
    if (sparse && c.wg) {
        /* the token bitmaps, or LIST's block lists (B a multiple of 64 and fewer than 65,535 blocks: 16-bit
         * entries below the end marks; the unsorted lists within the two K/V stages, where k_flash90 sorts
         * them). The lists by default (session 28, H200, bf16, stage 2 against the bitmaps, same run):
         * - where a tile holds 16-64 tokens (G 2-8): 1.27x at G 2 / 32K, 1.24x / 1.27x at G 4 / 32K / 128K,
         *   1.08x / 1.12x at G 8, 1.15x / 1.19x at G 8 d 64, 1.26x / 1.31x at G 7; session 29's loop-free
         *   cursor (flash_list_step) another 1.031x / 1.023x at G 4, 1.053x / 1.055x at G 8 d 64. At 8
         *   tokens (G 9-16) 1.009x / 1.008x at 32K / 128K with that cursor (0.95-0.97x with session 28's
         *   loop): a tie, so the bitmaps stay; at 128 (G 1) 0.83x / 0.89x at 16K / 32K;
         * - where the bitmaps would cost the second CTA an SM and the lists are smaller (G 4 past ~231K tokens,
         *   G 2 past ~123K): stage 2 2.15x at G 4 / 256K, 2.26x at G 2 / 128K. At G 1 (d 128) neither fits
         *   two CTAs past ~61K and the lists are the larger to ~99K;
         * - where the bitmaps exceed the block's opt-in limit (G 1 past ~500K): the call was refused.
         * INFLLM_CUDA_NO_FLASH_LIST=1 keeps the bitmaps wherever they fit (comparisons, the grid's bitmap run),
         * INFLLM_CUDA_FLASH_LIST=2 takes the lists wherever usable (a test switch); read once. */
        static std::atomic<int> list_env{CUDA_ENV_UNREAD}, no_list_env{CUDA_ENV_UNREAD};
        const int list_mode = cuda_env_int("INFLLM_CUDA_NO_FLASH_LIST", &no_list_env) == 1 ? 0
                              : cuda_env_int("INFLLM_CUDA_FLASH_LIST", &list_env) == 2 ? 2
                                                                                       : 1;
        const size_t bitmaps = ((size_t)c.TT * nbw + ncw) * 4;
        const int lw = topk_cols + 2; /* the blocks and two end marks (flash_list.cuh) */
        const size_t lists = (((size_t)c.TT * lw + 1) / 2 + ncw) * 4;
        const int64_t nblocks = ((int64_t)ap->max_lk + ap->B - 1) / ap->B;
        const bool usable = ap->B % 64 == 0 && nblocks < 65535 && topk_cols > 0 &&
                            (size_t)c.TT * topk_cols * 2 <= 2 * 2 * 64 * (size_t)ap->D * 2;
        const CudaDevProps d = cuda_dev_props();
        /* static shared memory (sTix, sBar: 528 bytes) and the 1 KB the device reserves a CTA */
        const size_t two_cta = d.smem_per_sm / 2 > 2048 ? (size_t)d.smem_per_sm / 2 - 1024 - 528 : 0;
        /* (the lists of many columns may be larger than the bitmaps of a short sequence: not at the cost of
         * the second CTA) */
        const bool small_group = c.TT >= 16 && c.TT <= 64 && (c.smem + lists <= two_cta || lists < bitmaps);
        const bool want = list_mode == 2 ||
                          (list_mode == 1 && (small_group || (c.smem + bitmaps > two_cta && lists < bitmaps))) ||
                          (c.smem + bitmaps > (size_t)d.smem_optin && lists < bitmaps);
        if (usable && want) c.list_w = lw;
        c.smem += c.list_w ? lists : bitmaps;
    } else if (sparse) {
        c.smem += ((size_t)c.TT * nbw + ncw) * 4;
    }
    int64_t ctas = c.gx * ap->num_seqs * ap->Hkv * c.hchunks;
    int sms = cuda_num_sms();
    c.nsplit = 1;
    if (allow_split && ctas > 0 && ctas < sms) { /* no CTA (no query: the workspace query of an empty call) */
        int64_t chunks = sparse ? (int64_t)topk_cols * ((ap->B + 63) / 64 + 1) : (ap->max_lk + 63) / 64;
        /* floor, not ceil: the splits fill the SMs' 2 CTA slots at most once (64 queries x 128K at
         * G 16: 16 tiles x ceil(264 / 16) = 17 splits = 272 CTAs for 264 slots, a second wave of 8) */
        int64_t ns = (2 * sms) / ctas;
        if (ns > chunks / 2) ns = chunks / 2;
        if (ns > 32) ns = 32;
        if (ns > 1) c.nsplit = (int)ns;
    }
    (void)topk_cols;
    return c;
}

/* 1-warp tiles for calls of at most 16 query rows a sequence (decode), else 4 (INFLLM_CUDA_SPARSE_NW /
 * INFLLM_CUDA_DENSE_NW=8: 8); on the mma.sync kernels the 1-warp tiles hold 3 K/V stages (96 KB at d 128)
 * and the 4-warp ones 2, so where the 3 stages and the token bitmaps pass the block's limit (the 99 KB of
 * cc 8.6 / 8.9 parts: a group of 1 past ~92K keys, of 2 past ~174K) the 4-warp tiles take the call. Longer
 * calls take them too, so the workspace query, sized at the longest length, covers the shorter ones. */
static FlashCfg flash_cfg(const infllm_attn_params *ap, int sparse, int32_t topk_cols, int allow_split) {
    static std::atomic<int> dense_nw{CUDA_ENV_UNREAD}, sparse_nw{CUDA_ENV_UNREAD};
    const int nw_env = sparse ? cuda_env_int("INFLLM_CUDA_SPARSE_NW", &sparse_nw)
                              : cuda_env_int("INFLLM_CUDA_DENSE_NW", &dense_nw);
    const int nw = (int64_t)ap->max_lq * ap->G <= 16 ? 1 : (nw_env == 8 ? 8 : 4);
    FlashCfg c = flash_cfg_nw(ap, sparse, topk_cols, allow_split, nw);
    if (!c.wg && c.NW == 1 && c.smem > (size_t)cuda_dev_props().smem_optin)
        c = flash_cfg_nw(ap, sparse, topk_cols, allow_split, 4);
    return c;
}

/* the tiles of one k_group_tokens window when a one-split sparse k_flash90 launch groups its tokens:
 * tiles of 2..32 tokens (groups of 4 to 64 heads), the window's chunk bitmaps within the block's opt-in
 * shared memory (227 KB on the H100 / H200: ~0.9M tokens at G 4-7's 128-token windows, ~1.8M at G 16's 64;
 * until session 26 the default 48 KB, which ended grouping at ~186K / ~380K tokens; H200, stage 2 grouped
 * against INFLLM_CUDA_NO_GROUP=1, outputs bitwise equal: G 4 (32 / 8 / 128) at 256K 484.7 vs 521.7 ms, G 16
 * at 512K 250.3-252.9 vs 257.9-260.6), not INFLLM_CUDA_NO_GROUP=1; else 0 (no grouping). Windows of 8 tiles up to
 * 16 tokens a tile (INFLLM_CUDA_GROUP_TILES=16: 16 where the bitmaps fit), of 4 tiles (128 tokens) above
 * (GROUP_TILES=8 / 16: the most up to that which fit). Tiles of 17..32 tokens (G 4-7) have grouped since
 * session 25 (INFLLM_CUDA_NO_GROUP_WIDE=1: consecutive, as before). H200, stage 2 ms, consecutive ->
 * grouped in 4-tile windows (in 8-tile ones), bench/cuda_bench.py --topk-npy on SmolLM2's real selections:
 *   G 4 (32 / 8 / 128): 128K layer 15 40.50 -> 42.25, layer 29 68.43 -> 53.48, 32K layer 15 8.62 -> 9.88 (11.28);
 *                       synthetic 32K 14.95 -> 15.32 (16.54)
 *   G 7 (28 / 4 / 128): 128K layer 15 35.34 -> 33.18, layer 29 56.45 -> 41.76, 32K layer 15 7.60 -> 7.88 (8.30);
 *                       synthetic 32K 12.62 -> 12.45 (12.52)
 * The three real selections together: 0.90x (G 4) and 0.83x (G 7) the time. The loss is on layer 15,
 * whose neighbouring tokens select nearly the same blocks (the 4-token union 113 of 96 selected): the
 * consecutive tiles are already tight there, and grouping only spreads a tile's tokens over more
 * diagonal chunks (and costs its kernel). */
static int flash_group_tiles(const FlashCfg &c, int sparse) {
    static std::atomic<int> no_group{CUDA_ENV_UNREAD}, group_tiles{CUDA_ENV_UNREAD}, no_wide{CUDA_ENV_UNREAD};
    const int env_tiles = cuda_env_int("INFLLM_CUDA_GROUP_TILES", &group_tiles);
    if (cuda_env_int("INFLLM_CUDA_NO_GROUP", &no_group) == 1) return 0;
    const int max_tt = cuda_env_int("INFLLM_CUDA_NO_GROUP_WIDE", &no_wide) == 1 ? 16 : 32;
    if (!sparse || !c.wg || c.nsplit > 1 || c.TT < 2 || c.TT > max_tt) return 0;
    const int min_tiles = c.TT > 16 ? 4 : 8;
    const int want = env_tiles == 16 || env_tiles == 8 ? env_tiles : min_tiles;
    const int optin = cuda_dev_props().smem_optin;
    const size_t limit = (size_t)(optin > 48 * 1024 ? optin : 48 * 1024);
    for (int tiles = want; tiles >= min_tiles; tiles /= 2)
        if (group_smem(tiles, c.TT, c.ncw) <= limit) return tiles;
    return 0;
}
static size_t group_table_bytes(const infllm_attn_params *ap) {
    return (size_t)ap->Hkv * ap->total_q * sizeof(int32_t) + 256;
}
static size_t flash_group_bytes(const infllm_attn_params *ap, const FlashCfg &c, int sparse) {
    return flash_group_tiles(c, sparse) ? group_table_bytes(ap) : 0;
}

int cuda_flash_tile_tokens(const infllm_attn_params *ap, int sparse) { return flash_cfg(ap, sparse, 1, 0).TT; }

/* scratch of a flash launch: split-KV partials, or (one split) the token grouping table */
size_t cuda_flash_split_bytes(const infllm_attn_params *ap, int sparse, int32_t topk_cols) {
    FlashCfg c = flash_cfg(ap, sparse, topk_cols, 1);
    if (c.nsplit <= 1) return flash_group_bytes(ap, c, sparse);
    int64_t ctas = c.gx * ap->num_seqs * ap->Hkv * c.hchunks;
    return (size_t)ctas * c.nsplit * 16 * c.NW * (ap->D + 1) * sizeof(float) + 256;
}

template <typename T, int D, int NW, bool SP>
static infllm_status flash_run(const FlashParams &p, const FlashCfg &c, cudaStream_t st) {
    infllm_status s = cuda_func_smem((const void *)k_flash<T, D, NW, SP>, c.smem, "k_flash");
    if (s) return s;
    dim3 grid((unsigned)c.gx, (unsigned)p.sd.num_seqs, (unsigned)(p.Hkv * c.hchunks * c.nsplit));
    k_flash<T, D, NW, SP><<<grid, NW * 32, c.smem, st>>>(p);
    CU_LAUNCH_CHECK("k_flash");
    if (c.nsplit > 1) {
        dim3 g2((unsigned)c.gx, (unsigned)p.sd.num_seqs, (unsigned)(p.Hkv * c.hchunks * (16 * NW) / COMBINE_WARPS));
        k_combine<T, D, 16 * NW><<<g2, COMBINE_WARPS * 32, 0, st>>>(p);
        CU_LAUNCH_CHECK("k_combine");
    }
    return INFLLM_OK;
}

#if defined(INFLLM_CUDA_SM90A)
static PFN_cuTensorMapEncodeTiled_v12000 tma_encode_fn(void) {
    void *fn = NULL;
    cudaDriverEntryPointQueryResult q;
#if CUDART_VERSION >= 12050
    cudaError_t e = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q);
#else
    cudaError_t e = cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &fn, cudaEnableDefault, &q);
#endif
    if (e == cudaSuccess && q == cudaDriverEntryPointSuccess) return (PFN_cuTensorMapEncodeTiled_v12000)fn;
    (void)cudaGetLastError();
    return NULL;
}

bool cuda_tma_map_rows(CUtensorMap *m, const void *base, int Hkv, int D, int64_t rows, int box_rows) {
    static const PFN_cuTensorMapEncodeTiled_v12000 enc = tma_encode_fn(); /* looked up once, thread-safe */
    if (!enc || ((uintptr_t)base & 15) || rows < box_rows || rows > INT32_MAX) return false;
    cuuint64_t dims[3] = {(cuuint64_t)D, (cuuint64_t)Hkv, (cuuint64_t)rows};
    cuuint64_t strides[2] = {(cuuint64_t)D * 2, (cuuint64_t)Hkv * D * 2}; /* bytes, dims 1 and 2 */
    cuuint32_t box[3] = {64, 1, (cuuint32_t)box_rows}, estr[3] = {1, 1, 1};
    return enc(m, CU_TENSOR_MAP_DATA_TYPE_UINT16, 3, (void *)base, dims, strides, box, estr,
               CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
               CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}
#endif

template <typename T, int D, bool SP, bool LIST, bool DQ = false>
static infllm_status flash_run90(const FlashParams &p0, const FlashCfg &c, cudaStream_t st, int64_t total_k) {
    FlashParams p = p0;
    CUtensorMap tmk, tmv;
    memset(&tmk, 0, sizeof tmk);
    memset(&tmv, 0, sizeof tmv);
#if defined(INFLLM_CUDA_SM90A)
    /* INFLLM_CUDA_NO_TMA=1 (tests): every chunk by cp.async, the path of misaligned or tiny K/V */
    static std::atomic<int> no_tma{CUDA_ENV_UNREAD};
    p.tma = cuda_env_int("INFLLM_CUDA_NO_TMA", &no_tma) != 1 && cuda_tma_map_rows(&tmk, p.k, p.Hkv, D, total_k, 64) &&
            cuda_tma_map_rows(&tmv, p.v, p.Hkv, D, total_k, 64);
#else
    (void)total_k;
    p.tma = 0;
#endif
    infllm_status s = cuda_func_smem((const void *)k_flash90<T, D, SP, LIST, DQ>, c.smem, "k_flash90");
    if (s) return s;
    dim3 grid((unsigned)c.gx, (unsigned)p.sd.num_seqs, (unsigned)(p.Hkv * c.hchunks * c.nsplit));
    k_flash90<T, D, SP, LIST, DQ><<<grid, 256, c.smem, st>>>(p, tmk, tmv);
    CU_LAUNCH_CHECK(DQ ? "k_flash90 (dq)" : "k_flash90");
    if (c.nsplit > 1) {
        dim3 g2((unsigned)c.gx, (unsigned)p.sd.num_seqs, (unsigned)(p.Hkv * c.hchunks * (128) / COMBINE_WARPS));
        k_combine<T, D, 128><<<g2, COMBINE_WARPS * 32, 0, st>>>(p);
        CU_LAUNCH_CHECK("k_combine");
    }
    return INFLLM_OK;
}

template <typename T, int D>
static infllm_status flash_dispatch(const FlashParams &p, const FlashCfg &c, bool sparse, int64_t total_k,
                                    cudaStream_t st) {
    if (p.dout) { /* the backward's dq pass (cuda_flash_dq_launch: c.wg, one split) */
        if (!sparse) return flash_run90<T, D, false, false, true>(p, c, st, total_k);
        return c.list_w ? flash_run90<T, D, true, true, true>(p, c, st, total_k)
                        : flash_run90<T, D, true, false, true>(p, c, st, total_k);
    }
    if (c.wg) {
        if (!sparse) return flash_run90<T, D, false, false>(p, c, st, total_k);
        return c.list_w ? flash_run90<T, D, true, true>(p, c, st, total_k) : flash_run90<T, D, true, false>(p, c, st, total_k);
    }
    if (c.NW == 1) return sparse ? flash_run<T, D, 1, true>(p, c, st) : flash_run<T, D, 1, false>(p, c, st);
    if (c.NW == 8) return sparse ? flash_run<T, D, 8, true>(p, c, st) : flash_run<T, D, 8, false>(p, c, st);
    return sparse ? flash_run<T, D, 4, true>(p, c, st) : flash_run<T, D, 4, false>(p, c, st);
}

/* the dq pass's launch (k_flash90 DQ): the forward's tiles, one split, a dout tile beside Q */
static FlashCfg flash_dq_cfg(const infllm_attn_params *ap, int sparse, int32_t topk_cols) {
    FlashCfg c = flash_cfg(ap, sparse, topk_cols, 0);
    c.smem += (size_t)16 * c.NW * ap->D * 2;
    return c;
}

int cuda_flash_dq_usable(const infllm_attn_params *ap, int sparse, int32_t topk_cols) {
    if (!cuda_use_wgmma() || ap->max_lq <= 0) return 0;
    const FlashCfg c = flash_dq_cfg(ap, sparse, topk_cols);
    return c.wg && c.NW == 8 && c.smem <= (size_t)cuda_dev_props().smem_optin;
}

/* the forward (dq == NULL) or, with dq, the backward's dq pass on the same walk */
static infllm_status flash_launch(const infllm_attn_params *ap, const void *q, const void *k, const void *v,
                                  const int32_t *topk, int32_t topk_cols, void *out, float *lse, int filter,
                                  void *split_ws, size_t split_ws_bytes, cudaStream_t st, const CudaFlashDq *dq,
                                  const CudaFlashDelta *fd = NULL) {
    infllm_status s = cuda_check_supported(ap, topk ? "sparse attention" : "dense attention");
    if (s) return s;
    if (ap->total_q == 0 || ap->max_lq == 0) return INFLLM_OK;
    bool sparse = topk != NULL;
    FlashCfg c = dq ? flash_dq_cfg(ap, sparse, topk_cols) : flash_cfg(ap, sparse, topk_cols, split_ws != NULL);
    if (dq && !(c.wg && c.NW == 8))
        return infllm_set_error(INFLLM_ERR_UNSUPPORTED, "CUDA attention backward: the wgmma dq pass on a device without it");
    if (c.nsplit > 1 && cuda_flash_split_bytes(ap, sparse, topk_cols) > split_ws_bytes) c.nsplit = 1;
    const int limit = cuda_dev_props().smem_optin;
    if (c.smem > (size_t)limit)
        return infllm_set_error(INFLLM_ERR_UNSUPPORTED,
                                "CUDA sparse attention: %d tokens per tile x %lld blocks do not fit in shared memory",
                                c.TT, (long long)((ap->max_lk + ap->B - 1) / ap->B));
    FlashParams p;
    memset(&p, 0, sizeof p);
    p.q = q;
    p.k = k;
    p.v = v;
    p.out = out;
    p.lse = lse;
    p.sd = seq_desc(ap);
    p.Hq = ap->Hq;
    p.Hkv = ap->Hkv;
    p.G = ap->G;
    p.Gt = c.Gt;
    p.TT = c.TT;
    p.hchunks = c.hchunks;
    p.scale_log2 = ap->scale * LOG2E_F;
    p.topk = topk;
    p.topk_cols = topk_cols;
    p.B = ap->B;
    p.chunk_blk_shift = -1;
    for (int sh = 0; sh < 24; sh++)
        if (ap->B == (64 << sh)) p.chunk_blk_shift = sh;
    p.filter = filter;
    p.mode = ap->mode;
    p.dense_len = ap->dense_len;
    p.window = ap->window;
    p.nsplit = c.nsplit;
    static std::atomic<int> no_zmajor{CUDA_ENV_UNREAD};
    p.zmajor = sparse && cuda_env_int("INFLLM_CUDA_NO_ZMAJOR", &no_zmajor) != 1;
    if (c.nsplit > 1) {
        int64_t ctas = c.gx * ap->num_seqs * ap->Hkv * c.hchunks;
        p.part_o = (float *)split_ws;
        p.part_lse = p.part_o + (size_t)ctas * c.nsplit * 16 * c.NW * ap->D;
    }
    p.nbw = c.nbw;
    p.list_w = c.list_w;
    p.ncw = c.ncw;
    if (dq) {
        p.out = dq->dq;
        p.dout = dq->dout;
        p.lse2 = dq->lse2;
        p.delta = dq->delta;
        p.scale = ap->scale;
    }
    if (fd) {
        p.out = NULL;
        p.fwd_dout = fd->dout;
        p.fwd_delta = fd->delta;
        p.lse = fd->lse2;
    }
    const int gtiles = flash_group_tiles(c, sparse);
    if (gtiles && split_ws && split_ws_bytes >= group_table_bytes(ap)) {
        /* tiles of similar selections; the table lives where split partials would */
        const int W = gtiles * c.TT;
        dim3 gg((unsigned)((ap->max_lq + W - 1) / W), (unsigned)ap->num_seqs, (unsigned)ap->Hkv);
        /* INFLLM_CUDA_GROUP_MIN_GAIN=P (an experiment of session 25, default off): a window keeps its
         * consecutive tiles unless grouping shrinks their unions by P% (group_window) */
        static std::atomic<int> min_gain{CUDA_ENV_UNREAD};
        const int mg = cuda_env_int("INFLLM_CUDA_GROUP_MIN_GAIN", &min_gain);
        const size_t gsmem = group_smem(gtiles, c.TT, p.ncw);
        s = cuda_func_smem((const void *)k_group_tokens, gsmem, "k_group_tokens");
        if (s) return s;
        k_group_tokens<<<gg, 256, gsmem, st>>>(p, (int32_t *)split_ws, gtiles, mg > 0 && mg < 100 ? mg : 0);
        CU_LAUNCH_CHECK("k_group_tokens");
        p.perm = (const int32_t *)split_ws;
    }
    if (ap->dtype == INFLLM_DTYPE_BF16)
        return ap->D == 128 ? flash_dispatch<__nv_bfloat16, 128>(p, c, sparse, ap->total_k, st)
                            : flash_dispatch<__nv_bfloat16, 64>(p, c, sparse, ap->total_k, st);
    return ap->D == 128 ? flash_dispatch<__half, 128>(p, c, sparse, ap->total_k, st)
                        : flash_dispatch<__half, 64>(p, c, sparse, ap->total_k, st);
}

infllm_status cuda_flash_launch(const infllm_attn_params *ap, const void *q, const void *k, const void *v,
                                const int32_t *topk, int32_t topk_cols, void *out, float *lse, int filter,
                                void *split_ws, size_t split_ws_bytes, cudaStream_t st) {
    return flash_launch(ap, q, k, v, topk, topk_cols, out, lse, filter, split_ws, split_ws_bytes, st, NULL);
}

infllm_status cuda_flash_delta_launch(const infllm_attn_params *ap, const void *q, const void *k, const void *v,
                                      const int32_t *topk, int32_t topk_cols, const CudaFlashDelta *fd, void *split_ws,
                                      size_t split_ws_bytes, cudaStream_t st) {
    return flash_launch(ap, q, k, v, topk, topk_cols, NULL, NULL, 0, split_ws, split_ws_bytes, st, NULL, fd);
}

infllm_status cuda_flash_dq_launch(const infllm_attn_params *ap, const void *q, const void *k, const void *v,
                                   const int32_t *topk, int32_t topk_cols, const CudaFlashDq *dq, void *group_ws,
                                   size_t group_ws_bytes, cudaStream_t st) {
    return flash_launch(ap, q, k, v, topk, topk_cols, NULL, NULL, 0, group_ws, group_ws_bytes, st, dq);
}

/* ------------------------------------------------------- public-op seams ---- */

/* The standalone ops' scratch (split partials or the token grouping table): the caller's p->workspace,
 * checked against infllm_{sparse,dense}_attention_workspace_size (too small or misaligned ->
 * INFLLM_ERR_WORKSPACE, also for a call with no query), or, without one, a stream-ordered allocation per
 * call (failing which the call runs unsplit and ungrouped: slower, equal up to rounding). */
static infllm_status flash_op(const infllm_attn_params *ap, const void *q, const void *k, const void *v,
                              const int32_t *topk, int32_t cols, void *out, float *lse) {
    /* the caller's pointers are checked here, at the API's entry, as cuda_attention and
     * cuda_cache_attend check theirs: cuda_flash_launch, which all three reach, takes them checked */
    const char *op = topk ? "sparse attention" : "dense attention";
    infllm_status s = cuda_check_entry(ap, op, {{q, "q", 16}, {k, "k", 16}, {v, "v", 16}, {out, "out", 16},
                                                {topk, "topk_idx", 4}, {lse, "lse", 4}});
    if (s) return s;
    cudaStream_t st = (cudaStream_t)ap->cuda_stream;
    size_t ws = cuda_flash_split_bytes(ap, topk != NULL, cols);
    unsigned char *buf = NULL;
    int owned = 0;
    if (ap->workspace) {
        s = cuda_workspace_acquire(ap, ws, topk ? "CUDA sparse attention" : "CUDA dense attention",
                                   topk ? "infllm_sparse_attention_workspace_size"
                                        : "infllm_dense_attention_workspace_size",
                                   st, &buf, &owned);
        if (s) return s;
        if (!ws) buf = NULL; /* nothing to split or group: the launch plans as with no workspace */
    } else if (ws) {
        if (cudaMallocAsync((void **)&buf, ws, st) != cudaSuccess) {
            (void)cudaGetLastError();
            buf = NULL;
            ws = 0;
        }
        owned = buf != NULL;
    }
    s = cuda_flash_launch(ap, q, k, v, topk, cols, out, lse, 0, buf, ws, st);
    if (owned) cudaFreeAsync(buf, st);
    return s;
}

extern "C" infllm_status cuda_sparse_attn(const infllm_attn_params *ap, const void *q, const void *k, const void *v,
                                          const int32_t *topk_idx, int32_t topk_cols, void *out, float *lse) {
    return flash_op(ap, q, k, v, topk_idx, topk_cols, out, lse);
}

extern "C" infllm_status cuda_dense_attn(const infllm_attn_params *ap, const void *q, const void *k, const void *v,
                                         void *out, float *lse) {
    return flash_op(ap, q, k, v, NULL, 0, out, lse);
}

/* what flash_op needs for this layout (topk_cols: the sparse call's; 0: dense) */
extern "C" infllm_status cuda_flash_workspace_size(const infllm_attn_params *ap, int32_t topk_cols, size_t *bytes) {
    infllm_status s = cuda_check_supported(ap, topk_cols ? "sparse attention" : "dense attention");
    if (s) return s;
    *bytes = cuda_flash_split_bytes(ap, topk_cols > 0, topk_cols);
    return INFLLM_OK;
}
