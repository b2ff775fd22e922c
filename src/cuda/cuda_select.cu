/*
 * cuda_select.cu: stage 1 (SPEC B §5, A.2, A.3, A.6), block scores (B §6, A.4) and top-k (B §7)
 * on the GPU.
 *
 * k_select: one CTA = one KV head g x TT consecutive query tokens of one sequence; its M = 16*NW
 * rows are (token, query head of the group) pairs, row r -> token r / G, head g*G + r % G.
 *   pass 1: rows . cL^T on tensor cores over the visible LSE-level kernels (c2, or c1 with
 *           exact_lse), online max/sum -> log2-domain LSE per row;
 *   pass 2: rows . c1^T, P = exp2(S - LSE), zero for invisible kernels, summed over the G heads of
 *           each token (warp shuffles when G divides 16, shared memory otherwise), rounded to bf16
 *           for bf16 storage, then either written out (standalone scores) or max-pooled into the
 *           token's causal block scores kept in shared memory (fused path);
 *   top-k:  forced blocks +inf, one warp per token picks K blocks (score desc, index asc) and
 *           writes them ascending. The T x n1 score matrix never reaches device memory.
 * Tokens whose causal block count <= K take all causal blocks and skip stage 1; a CTA whose
 * tokens all do so exits before loading anything.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_common.cuh"
#include "cuda_internal.cuh"
#include "cuda_sm90.cuh"
#include "sel_seg.cuh"
#include "sel_topk.cuh"

struct SelParams {
    const void *q, *c1, *c2;
    const int32_t *cu_c1, *cu_c2;
    SeqDesc sd;
    int Hq, Hkv, G, TT;
    float scale_log2;
    int l1, s1, l2, s2, B, init_blocks, local_blocks, K, topk_out;
    int exact, round_bf16;
    int window; /* sliding key window (0: none): a row's candidates start at d_window_first_block, and pass 2 of a
                 * fused selection at its first kernel's tile (sel_pass2_first_kernel) */
    float *scores; /* standalone: [Hkv, total_q, max_n1] */
    int max_n1;
    int32_t *topk; /* fused: [Hkv, total_q, topk_out] */
    int filter_sparse, mode, dense_len;
    int nbmax; /* block-score slots per token (fused) */
    int wg_order; /* k_select90: warpgroups issue each tile's products one after the other */
    int gpad;     /* k_select: a token's rows padded to 16 (heads G..15 zero, masked), as k_select90 */
    /* k_select90 in segments (SEG; sel90_seg_plan): pass-2 tiles a segment, a token's row of slots (carried
     * keys + window, = 8 mod 32), partial slots carried past a segment's end */
    int seg_tiles, seg_stride, seg_npart;
};

__device__ __forceinline__ int64_t fdiv64(int64_t a, int64_t b) {
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

/* pass 1 of the fused selection: the online (max, sum) in base 2 of rows gid (ri 0) and gid + 8
 * (ri 1) over one more 64-column score tile starting at column col0; vis0 / vis1: the rows'
 * visible kernels (columns at or past them count as -inf) */
__device__ __forceinline__ void lse_tile_update(float (&s)[8][4], float (&m)[2], float (&l)[2], int col0, int tig,
                                                int vis0, int vis1, float scale_log2) {
#pragma unroll
    for (int ri = 0; ri < 2; ri++) {
        float mx = tile_row_scale_max(s, ri, col0, tig, ri ? vis1 : vis0, scale_log2);
        float mn = fmaxf(m[ri], mx);
        float mu = mn == -INFINITY ? 0.f : mn;
        float acc = tile_row_exp2_sum(s, ri, mu);
        l[ri] = l[ri] * exp2f(m[ri] - mu) + acc;
        m[ri] = mn;
    }
}

/* sum over row ri's 16 scores of a thread of exp2(s scale_log2 - m), the scale inside the FFMA: the sum of
 * lse_tile_update_full and of lse_tile_sum_ref */
__device__ __forceinline__ float tile_row_exp2_sum_scaled(const float (&s)[8][4], int ri, float scale_log2, float m) {
    float acc = 0.f;
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
        for (int e = 0; e < 2; e++) acc += exp2f(fmaf(s[j][2 * ri + e], scale_log2, -m));
    return acc;
}

/* lse_tile_update for a tile whose 64 columns are all visible to both rows: no masking, the max on
 * the raw scores (scale_log2 > 0, so max(s) scale_log2 is the max of the scaled scores) and the
 * scale inside the exponent's FFMA (k_flash90's softmax does the same); ~7 instructions a score
 * become ~4 */
__device__ __forceinline__ void lse_tile_update_full(float (&s)[8][4], float (&m)[2], float (&l)[2], float scale_log2) {
#pragma unroll
    for (int ri = 0; ri < 2; ri++) {
        float mx = -INFINITY;
#pragma unroll
        for (int j = 0; j < 8; j++) mx = fmaxf(mx, fmaxf(s[j][2 * ri], s[j][2 * ri + 1]));
        mx = quad_max(mx) * scale_log2;
        const float mn = fmaxf(m[ri], mx);
        const float mu = mn == -INFINITY ? 0.f : mn;
        const float acc = tile_row_exp2_sum_scaled(s, ri, scale_log2, mu);
        l[ri] = l[ri] * exp2f(m[ri] - mu) + acc;
        m[ri] = mn;
    }
}

/* lse_tile_update_full's sum without its max: a tile whose 64 columns every row sees, summed against
 * the row's running reference m (the max of the rows' first full tile, quad-uniform), not a running max:
 * nl = l + sum exp2(s scale - m), one FFMA, MUFU and FADD a score, no max and no shuffles. A later score may
 * exceed m; the sum stays exact in f32 up to ~2^127 x exp2(m). Returns false when a row's new sum would not
 * be finite (a score ~127 above m, or a NaN). It commits nothing: the caller votes over the warp and either
 * takes nl in every lane or redoes the tile with lse_tile_update_full in every lane, which moves m to the
 * max (a lane that took its own nl before a vote that failed would add the tile twice). m must be finite. */
__device__ __forceinline__ bool lse_tile_sum_ref(const float (&s)[8][4], const float (&m)[2], const float (&l)[2],
                                                 float (&nl)[2], float scale_log2) {
#pragma unroll
    for (int ri = 0; ri < 2; ri++) nl[ri] = l[ri] + tile_row_exp2_sum_scaled(s, ri, scale_log2, m[ri]);
    return nl[0] < INFINITY && nl[1] < INFINITY; /* false for +inf and NaN */
}

/* S = Q C^T of one warp's 16 rows (Q as A fragments qf[KS], loaded once) and a swizzled [64][D] tile
 * sk of compressed keys, in C fragments (s[j] = columns 8 j..8 j+7); both passes of k_select */
template <typename T, int D>
__device__ __forceinline__ void tile_qf_mma(const uint32_t (&qf)[D / 16][4], const uint16_t *sk, float (&s)[8][4]) {
    constexpr int KS = D / 16;
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int j = 0; j < 8; j++) {
        s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < KS; kk += 2) {
            uint32_t r[4];
            ldsm_x4(r, sk + swz<D>(8 * j + (lane & 7), 16 * kk + (lane >> 3) * 8));
            mma16816<T>(s[j], qf[kk], r[0], r[1]);
            mma16816<T>(s[j], qf[kk + 1], r[2], r[3]);
        }
    }
}

/* k_select's finalize puts NW x SEL_TOPK1_WORDS words at the start of its shared memory, which holds
 * at least the two c tiles (2 x 64 x D x 2 bytes, D >= 64) and, for M > 64, the Q tile before them */
static_assert(8 * SEL_TOPK1_WORDS * 4 <= 2 * 64 * 64 * 2 + 128 * 64 * 2 && 4 * SEL_TOPK1_WORDS * 4 <= 2 * 64 * 64 * 2,
              "k_select: the finalize's histograms must fit in the idle Q / c tiles");

template <typename T, int D, int NW>
__global__ void __launch_bounds__(NW * 32, NW == 4 ? 3 : 1) k_select(SelParams p) {
    constexpr int M = 16 * NW, NT = 32 * NW, CH = D / 8, KS = D / 16;
    extern __shared__ __align__(16) unsigned char smem[];
    /* M <= 64: the Q tile is staged in the second c-tile buffer (free until the first prefetch) */
    constexpr bool QALIAS = M <= 64;
    uint16_t *sC = (uint16_t *)smem + (QALIAS ? 0 : M * D); /* [2][64][D] */
    uint16_t *sQ = QALIAS ? sC + 64 * D : (uint16_t *)smem;
    float *sBS = (float *)(sC + 2 * 64 * D);                /* [TT][nbmax] (fused) */
    float *sP = sBS + (p.topk ? p.TT * p.nbmax : 0); /* [M][65] (generic G) */

    const int b = blockIdx.y, g = blockIdx.z;
    int64_t q0, k0;
    int32_t lq, lk;
    seq_get(p.sd, b, q0, lq, k0, lk);
    const int tok0 = blockIdx.x * p.TT;
    if (tok0 >= lq) return;
    if (p.filter_sparse && !d_seq_sparse(p.mode, p.dense_len, lk)) return;
    const int ntok = min(p.TT, lq - tok0);
    const int64_t pos0 = (int64_t)lk - lq + tok0;
    const int64_t pos_last = pos0 + ntok - 1;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, gid = lane >> 2, tig = lane & 3;
    /* rows a token: the group's G heads, or 16 with gpad (heads Gr..15: zero rows that see no kernel,
     * so their P is 0, the head sums are the Gr heads' and a CTA holds as many tokens as at G = 16) */
    const int Gr = p.G, G = p.gpad ? 16 : Gr;

    if (p.topk) {
        /* tokens with <= K causal blocks take them all (those their window reaches) */
        for (int tt = 0; tt < ntok; tt++) {
            int64_t qb = (pos0 + tt) / p.B;
            if (qb + 1 <= p.K) {
                const int wb = d_window_first_block(pos0 + tt, p.window, p.B);
                int32_t *row = p.topk + ((int64_t)g * p.sd.total_q + q0 + tok0 + tt) * p.topk_out;
                for (int c = tid; c < p.topk_out; c += NT) row[c] = sel_take_all_slot(wb, (int)qb, c);
            }
        }
        if (pos_last / p.B + 1 <= p.K) return;
    }

    const int32_t n1 = d_windows(lk, p.l1, p.s1);
    const int32_t n2 = d_windows(lk, p.l2, p.s2);
    const int64_t c1_0 = p.cu_c1 ? p.cu_c1[b] : 0;
    const int64_t c2_0 = p.cu_c2 ? p.cu_c2[b] : 0;
    const uint16_t *cL = (const uint16_t *)(p.exact ? p.c1 : p.c2);
    const int64_t cL0 = p.exact ? c1_0 : c2_0;
    const int nL = p.exact ? n1 : n2, lL = p.exact ? p.l1 : p.l2, sL = p.exact ? p.s1 : p.s2;
    const int64_t kvstride = (int64_t)p.Hkv * D;

    /* rows of this thread */
    bool rvalid[2];
    int rtt[2], visL[2], vis1[2];
    for (int ri = 0; ri < 2; ri++) {
        int r = warp * 16 + gid + 8 * ri;
        int tt = r / G;
        rvalid[ri] = r < p.TT * G && tt < ntok;
        rtt[ri] = rvalid[ri] ? tt : 0;
        int64_t pos = pos0 + rtt[ri];
        /* a padding row (gpad: head r % G >= Gr) sees no kernel, so its LSE is +inf and its P 0 */
        const bool sees = rvalid[ri] && r - tt * G < Gr;
        visL[ri] = sees ? d_visible(pos, lL, sL, nL) : 0;
        vis1[ri] = sees ? d_visible(pos, p.l1, p.s1, n1) : 0;
    }
    const int maxvisL = d_visible(pos_last, lL, sL, nL);
    /* fused top-k: the kernels past sel_pass2_kernels touch only blocks every token forces, so pass 2
     * stops there (the last tile's rows past it load as zeros: their scores go to forced blocks only) */
    const int maxvis1 = p.topk ? sel_pass2_kernels(d_visible(pos_last, p.l1, p.s1, n1), pos_last, p.B, p.s1,
                                                   p.local_blocks)
                               : d_visible(pos_last, p.l1, p.s1, n1);
    /* fused top-k under a sliding window: pass 2 starts at the tile of the first kernel that meets the first token's
     * window first block (sel_pass2_first_kernel; the standalone scores need every kernel) */
    const int t1_first = p.topk ? sel_pass2_first_kernel(pos0, p.window, p.B, p.l1, p.s1) / 64 : 0;

    /* Q rows -> sQ */
    {
        const uint16_t *qg = (const uint16_t *)p.q;
        for (int i = tid; i < M * CH; i += NT) {
            int r = i / CH, c = i % CH;
            int tt = r / G, hh = r % G;
            bool ok = r < p.TT * G && tt < ntok && hh < Gr;
            const uint16_t *src =
                qg + (ok ? ((q0 + tok0 + tt) * p.Hq + (int64_t)g * Gr + hh) * D : 0) + c * 8;
            cp_async16(sQ + swz<D>(r, c * 8), src, ok ? 16 : 0);
        }
    }
    if (p.topk) {
        for (int i = tid; i < p.TT * p.nbmax; i += NT) sBS[i] = 0.f;
    }
    int ntL = (maxvisL + 63) / 64, nt1 = (maxvis1 + 63) / 64;
    if (ntL > 0) load_tile_async<D, 64, NT>(sC, cL + (cL0 * p.Hkv + g) * D, kvstride, maxvisL);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();

    uint32_t qf[KS][4];
    load_qf<D>(qf, sQ, warp);
    __syncthreads(); /* sQ may alias the second c-tile buffer */

    /* ---- pass 1: LSE over the visible level-L kernels ---- */
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
    int stage = 0;
    for (int t = 0; t < ntL; t++) {
        if (t + 1 < ntL)
            load_tile_async<D, 64, NT>(sC + (stage ^ 1) * 64 * D, cL + ((cL0 + 64 * (t + 1)) * p.Hkv + g) * D,
                                       kvstride, maxvisL - 64 * (t + 1));
        else if (nt1 > t1_first) /* prefetch the first c1 tile */
            load_tile_async<D, 64, NT>(sC + (stage ^ 1) * 64 * D,
                                       (const uint16_t *)p.c1 + ((c1_0 + 64 * t1_first) * p.Hkv + g) * D, kvstride,
                                       maxvis1 - 64 * t1_first);
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        float s[8][4];
        tile_qf_mma<T, D>(qf, sC + stage * 64 * D, s);
        lse_tile_update(s, m, l, 64 * t, tig, visL[0], visL[1], p.scale_log2);
        __syncthreads();
        stage ^= 1;
    }
    if (ntL == 0 && nt1 > t1_first) {
        load_tile_async<D, 64, NT>(sC + stage * 64 * D, (const uint16_t *)p.c1 + ((c1_0 + 64 * t1_first) * p.Hkv + g) * D,
                                   kvstride, maxvis1 - 64 * t1_first);
        cp_async_commit();
    }
    float lse2[2];
#pragma unroll
    for (int ri = 0; ri < 2; ri++) {
        float lt = l[ri];
        lt = quad_sum(lt);
        lse2[ri] = lt > 0.f ? m[ri] + __log2f(lt) : INFINITY; /* no visible kernel: P = 0 */
    }

    /* ---- pass 2: probabilities over c1, group sum, round, emit ---- */
    const bool shfl_path = (16 % G) == 0;
    const bool dflt = p.B == 64 && p.s1 == 16 && p.l1 == 32;
    const int Kb = p.K;
    for (int t = t1_first; t < nt1; t++) {
        if (t + 1 < nt1)
            load_tile_async<D, 64, NT>(sC + (stage ^ 1) * 64 * D,
                                       (const uint16_t *)p.c1 + ((c1_0 + 64 * (t + 1)) * p.Hkv + g) * D, kvstride,
                                       maxvis1 - 64 * (t + 1));
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        float s[8][4];
        tile_qf_mma<T, D>(qf, sC + stage * 64 * D, s);
#pragma unroll
        for (int j = 0; j < 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                int ri = e >> 1;
                int col = 64 * t + 8 * j + 2 * tig + (e & 1);
                s[j][e] = col < vis1[ri] ? exp2f(s[j][e] * p.scale_log2 - lse2[ri]) : 0.f;
            }
        /* group sums -> emit(tt, col, val) */
        auto emit = [&](int tt, int col, float val) {
            if (tt >= ntok || col >= n1) return;
            if (p.round_bf16) val = __bfloat162float(__float2bfloat16_rn(val));
            if (p.scores) {
                int64_t trow = q0 + tok0 + tt;
                /* NaN (from NaN inputs) -> 0, as REF */
                p.scores[((int64_t)g * p.sd.total_q + trow) * p.max_n1 + col] = val == val ? val : 0.f;
            } else {
                int qb = (int)((pos0 + tt) / p.B);
                if (qb + 1 <= Kb) return;
                if (!(val > 0.f)) return; /* the row starts at 0; a NaN never wins a block's max (REF) */
                int blo, bhi;
                if (dflt) {
                    blo = col >> 2;
                    bhi = (col + 1) >> 2;
                } else {
                    blo = (p.s1 * col) / p.B;
                    bhi = (p.s1 * col + p.l1 - 1) / p.B;
                }
                if (bhi > qb) bhi = qb;
                int *dst = (int *)&sBS[tt * p.nbmax];
                atomicMax(dst + blo, __float_as_int(val));
                for (int bb = blo + 1; bb <= bhi; bb++) atomicMax(dst + bb, __float_as_int(val));
            }
        };
        if (shfl_path) {
            if (G == 16) {
                /* lane (gid, tig) emits n-tile gid */
                float mine[2];
                tile_head_sum16(s, gid, mine);
                emit(warp, 64 * t + 8 * gid + 2 * tig, mine[0]);
                emit(warp, 64 * t + 8 * gid + 2 * tig + 1, mine[1]);
            } else {
#pragma unroll
                for (int j = 0; j < 8; j++)
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        float v = s[j][e];
                        for (int off = 4; off < 4 * G; off <<= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
                        int r = warp * 16 + gid + 8 * (e >> 1);
                        if ((j % G) == (gid % G)) emit(r / G, 64 * t + 8 * j + 2 * tig + (e & 1), v);
                    }
            }
        } else {
#pragma unroll
            for (int j = 0; j < 8; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int r = warp * 16 + gid + 8 * (e >> 1);
                    sP[r * 65 + 8 * j + 2 * tig + (e & 1)] = s[j][e];
                }
            __syncthreads();
            for (int i = tid; i < p.TT * 64; i += NT) {
                int tt = i / 64, col = i % 64;
                float v = 0.f;
                for (int hh = 0; hh < G; hh++) v += sP[(tt * G + hh) * 65 + col];
                emit(tt, 64 * t + col, v);
            }
        }
        __syncthreads();
        stage ^= 1;
    }
    cp_async_wait<0>();
    if (!p.topk) return;
    __syncthreads();

    /* ---- finalize block scores + top-k, one warp per token: sel90_topk_radix<1> (k_select90's
     * routine with a team of one warp) over keys it writes in place, its histograms in the idle Q /
     * c tiles at the start of shared memory (NW x SEL_TOPK1_WORDS words; static_assert below). Block
     * keys: SelBlockKey. Rows hold nbmax slots, a multiple of 4. */
    const int e_lo = d_first_untouched_block(p.B, p.l1, p.s1, n1);
    for (int tt = warp; tt < ntok; tt += NW) {
        const int64_t qb = (pos0 + tt) / p.B;
        if (qb + 1 <= Kb) continue;
        const int wb = d_window_first_block(pos0 + tt, p.window, p.B);
        const SelBlockKey key_of{(int)qb, p.init_blocks, p.local_blocks, e_lo, wb};
        int32_t *row = p.topk + ((int64_t)g * p.sd.total_q + q0 + tok0 + tt) * p.topk_out;
        sel90_topk_radix<1>(sBS + tt * p.nbmax, (int)qb + 1, key_of.select_k(Kb), (int)qb, row, p.topk_out,
                            reinterpret_cast<uint32_t *>(smem) + warp * SEL_TOPK1_WORDS, 0, 0, key_of);
    }
}

/* ------------------------------------------------------ sm_90a: k_select90 ---- */
/* The fused selection on Hopper's asynchronous warpgroup MMA (wgmma, sm_90a only), for groups of
 * 16 heads (MiniCPM4) and of any smaller G: one CTA = one KV head g x 8 consecutive tokens = 128
 * rows (token, head). A group of G < 16 heads takes its token's rows 0..G-1; rows G..15 hold zeros
 * and a -LSE of -inf, so their P is exactly 0 and pass 2's head-sum tree (adds only) gives a sum of
 * the G heads (x + 0 = x; a K holding inf or NaN makes a zero row's P NaN, as it makes the real
 * rows' attention NaN). It costs 16 / G times the tensor work of the group's rows but runs this
 * kernel: at 128K tokens and G = 4 the mma.sync k_select fits one CTA of 4 warps an SM (the block
 * scores of its 16 tokens) and took 444 ms on the H200, this 58 (session 23, with the heads repeated
 * 16 / G times instead of zero rows: the same block order, every sum x 16 / G).
 *   4 warpgroups, 1 CTA per SM. c2/c1 come in tiles of CT = 128 (3 stages) or 256 (2 stages) kernels
 * x D (TMA, one mbarrier per stage, 128-byte swizzle = the wgmma layout: [D/64][CT][64]); Q (by
 * cp.async) stays in shared memory all along. Each warpgroup issues CT / 128 m64n64 products a
 * tile, each its own group, and processes product p while the later one multiplies; the
 * warpgroups issue in turn (named barriers), so that their products complete one warpgroup after
 * the other and one's exps run under the next ones' products.
 *   pass 1 (rows x kernels): warpgroup w takes rows 64 (w % 2).. (tokens 4 (w % 2)..) against column
 *           half w / 2 of the tile, S = Q_w c^T, one product per 64 kernels; online max/sum per row
 *           as in k_select, each 64-column product one step, in column order; at the end the two
 *           column halves' (max, sum) are merged through shared memory.
 *   pass 2 (kernels x rows, transposed): warpgroup w takes the tile's kernels CT/2 (w % 2).. against
 *           the rows of token half w / 2 (tokens 4 (w / 2)..), S^T = c_w Q_h^T, one product per 64
 *           kernels. A thread then holds, per row (kernel), 4 heads of each of 4 tokens:
 *           P = exp2(S - LSE) (LSE per column, negated, from shared memory once), the head sum is 3
 *           local adds + a 3-shuffle reduce-scatter over the 4 lanes of a quad that leaves lane tig
 *           with token tig's sum (0.19 shuffles per score; k_select's row layout needs 1.5), rounded
 *           to bf16 for bf16 storage, then max-pooled by shared-memory atomicMax into the token's
 *           block scores as in k_select.
 * Then the forced blocks and the top-k (k_select's selection, by a radix select with two warps per
 * token: sel90_topk_radix). CTAs are launched heaviest (last tokens) first. (Session 10: 4
 * warpgroups instead of 2 alone changed nothing; with the ordered issue, select -5% at 128K; 2
 * warpgroups with the ordered issue were 1.6x slower.) */
template <int N> __device__ __forceinline__ void wgmma_wait_n() {
#ifdef INFLLM_WGMMA_DEVICE
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}
/* wait until at most n product groups are pending; n is a constant once the caller's loop is unrolled */
__device__ __forceinline__ void wgmma_wait_le(int n) {
    if (n <= 0)
        wgmma_wait_n<0>();
    else if (n == 1)
        wgmma_wait_n<1>();
    else if (n == 2)
        wgmma_wait_n<2>();
    else
        wgmma_wait_n<3>();
}

/* atomicMax(shared int at addr, v) where pred holds, the address given as a shared-window offset (ptxas
 * still branches around the ATOMS, but the caller's addresses become immediate offsets of one register) */
__device__ __forceinline__ void smem_max_if(uint32_t addr, int v, bool pred) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %2, 0;\n@p red.shared.max.s32 [%0], %1;\n}\n" ::"r"(addr), "r"(v),
                 "r"((int)pred)
                 : "memory");
}

/* tokens and threads (4 warpgroups) per CTA; the two tile shapes (kernels per tile, stages): 256 x 2
 * (fits to ~130K tokens at d 128) or 128 x 3 (to ~200K; ~330K at d 64); see sel90_wide for the choice (and
 * sel90_ring2_mode for a third, 128 x 2, to 256K, which takes the place of 128 x 3 at d 128) */
enum { SEL90_TT = 8, SEL90_NT = 512, SEL90_CT_WIDE = 256, SEL90_NS_WIDE = 2, SEL90_CT = 128, SEL90_NS = 3 };
/* warps per token in the finalize (1 or 2: with 2 all 16 warps of the CTA work on its 8 tokens) */
enum { SEL90_TOPK_TW = 2 };
static_assert(SEL90_TOPK_TW == 1 || SEL90_TOPK_TW == 2, "sel90_topk_radix: teams of 1 or 2 warps");
static_assert(SEL90_NT / 32 / SEL90_TOPK_TW >= SEL90_TT && SEL90_TT <= 8, "k_select90: a team per token, 8 teams");
static_assert(SEL90_TT * SEL90_TOPK_TEAM_WORDS * 4 <= SEL90_NS * SEL90_CT * 64 * 2 &&
                  SEL90_TT * SEL90_TOPK_TEAM_WORDS * 4 <= SEL90_NS_WIDE * SEL90_CT_WIDE * 64 * 2,
              "k_select90: the finalize's histograms must fit in the tile stages (d 64)");
static_assert(SEL90_CT_WIDE <= CUDA_SELECT_MIN_ROWS && SEL90_CT <= CUDA_SELECT_MIN_ROWS,
              "a c1/c2 buffer of CUDA_SELECT_MIN_ROWS rows must hold one k_select90 tile");
/* per-token row of block scores: >= nbmax and = 8 (mod 32), so that the atomics of one instruction
 * (4 tokens x 2 blocks) fall in distinct banks */
__host__ __device__ __forceinline__ int sel90_nbs(int nbmax) { return (nbmax + 31) / 32 * 32 + 8; }

/* DEC (decoupled warpgroups, session 18): no CTA barrier between tiles. A warpgroup takes tile i as soon
 * as its TMA has landed and releases the stage (an "empty" mbarrier of 4 arrivals, one a warpgroup) when
 * its own products of the tile have completed; thread 0 of warpgroup 3, the last to issue, waits for the
 * release and loads tile i + NS into the stage. So a warpgroup's exps and max-pool of tile i overlap the
 * other warpgroups' products of tiles i and i + 1 instead of every warpgroup meeting at a barrier after
 * the slowest one's exps. The ordered issue takes a set of named barriers per stage (issue_turn). !DEC:
 * one __syncthreads a tile, as through session 17.
 * SEG (sel90_seg_plan; past the whole rows' shared memory): pass 2 in segments of p.seg_tiles tiles. A
 * token's row holds, in segment 0, blocks 0.. from slot 0; in segment j > 0, the keys of the K blocks
 * selected so far (slots 0..K-1, their blocks in sCidx) and then blocks wb_j.. (wb_j = s1 CT j seg_tiles /
 * B, the first block that segment j's kernels meet). At a segment's end every warpgroup meets at a CTA
 * barrier; the blocks below the next segment's wb are final, and each token's team selects its K best of
 * that row (sel90_topk_radix_g with SelSegKey / SelSegOut): into the carry, or, for a token whose blocks
 * end there, into its top-k row. The row then starts over with the carry and the few blocks from the next
 * wb on that the segment's last kernels reached. The finalize works in the tile stages, so the next
 * segment's tiles load only after it (seg_lim). */
template <typename T, int D, int CT, int NS, bool DEC, bool SEG>
__global__ void __launch_bounds__(SEL90_NT, 1)
    k_select90(SelParams p, const __grid_constant__ CUtensorMap tmL, const __grid_constant__ CUtensorMap tm1) {
#ifdef INFLLM_WGMMA_DEVICE
    constexpr int TT = SEL90_TT, M = 16 * TT, NT = SEL90_NT, CH = D / 8, KS = D / 16;
    /* 4 warpgroups. Pass 1: warpgroup w takes the rows of tokens 4 (w % 2).. against column half w / 2
     * of each tile (CT / 2 kernels: the NP 64-kernel groups 2 pp + w / 2, NP products of 64 x 64). Pass 2:
     * kernel half w % 2 (NP groups of 64) x the rows of token half w / 2: NP products. */
    constexpr int NP = CT / 128;
    static_assert(NT == 512 && (CT == 128 || CT == 256), "k_select90: 4 warpgroups, tiles of 128 or 256 kernels");
    static_assert(!SEG || DEC, "k_select90: segments with decoupled warpgroups only");
    extern __shared__ __align__(16) unsigned char smem_raw[];
    /* 128-byte swizzled tiles need 1024-byte alignment (the host adds 1024 bytes) */
    unsigned char *smem = smem_raw + ((1024u - ((uint32_t)__cvta_generic_to_shared(smem_raw) & 1023u)) & 1023u);
    uint16_t *sQ = (uint16_t *)smem;            /* [D/64][M][64] rows (token, head) */
    uint16_t *sC = sQ + M * D;                  /* [NS][D/64][CT][64] kernel tiles */
    const int nbs = SEG ? p.seg_stride : sel90_nbs(p.nbmax);
    float *sBS = (float *)(sC + NS * CT * D);   /* [TT][nbs] block scores (SEG: a segment's row, see below) */
    float *sNL = sBS + TT * nbs;                /* [M] -LSE (log2) per row */
    float *sPM = sNL + M, *sPL = sPM + M;       /* [M] each: pass 1's (max, sum) over column half 1 */
    int *sVis = (int *)(sPL + M);               /* [TT] visible c1 kernels per token */
    int32_t *sCidx = sVis + TT;                 /* SEG: [TT][K] the blocks of the carried keys */

    const int b = blockIdx.y, g = blockIdx.z;
    int64_t q0, k0;
    int32_t lq, lk;
    seq_get(p.sd, b, q0, lq, k0, lk);
    const int tok0 = (int)(gridDim.x - 1 - blockIdx.x) * TT; /* heaviest CTAs first */
    if (tok0 >= lq) return;
    if (p.filter_sparse && !d_seq_sparse(p.mode, p.dense_len, lk)) return;
    const int ntok = min(TT, lq - tok0);
    const int64_t pos0 = (int64_t)lk - lq + tok0;
    const int64_t pos_last = pos0 + ntok - 1;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, gid = lane >> 2, tig = lane & 3;
    /* the warpgroup index broadcast from lane 0, so that the compiler knows it uniform and keeps the
     * tile descriptors that derive from it in uniform registers (as k_flash90; before, every product's
     * two descriptors were built in vector registers and moved over by 4 R2UR) */
    const int wg = __shfl_sync(0xffffffffu, warp >> 2, 0), wq = warp & 3;
    /* pass 1: row group (tokens 4 rg..) and column half; pass 2: kernel half and token half */
    const int rg = wg & 1, chalf = wg >> 1, khalf = wg & 1, th = wg >> 1;
    const int Kb = p.K;

    /* tokens with <= K causal blocks (qb + 1 <= K, i.e. positions below K B) take them all, those their window
     * reaches (positions < 2^31: 32-bit block math); no division for the tokens past them, which are nearly all */
    const int64_t few_end = (int64_t)Kb * p.B;
    for (int tt = 0; tt < ntok && pos0 + tt < few_end; tt++) {
        const int qb = (int)(pos0 + tt) / p.B, wb = d_window_first_block(pos0 + tt, p.window, p.B);
        int32_t *row = p.topk + ((int64_t)g * p.sd.total_q + q0 + tok0 + tt) * p.topk_out;
        for (int c = tid; c < p.topk_out; c += NT) row[c] = sel_take_all_slot(wb, qb, c);
    }
    if (pos_last < few_end) return;

    const int32_t n1 = d_windows(lk, p.l1, p.s1);
    const int32_t n2 = d_windows(lk, p.l2, p.s2);
    /* this sequence's first c1 / level-L row (the maps' rows < 2^31) */
    const int row10 = p.cu_c1 ? p.cu_c1[b] : 0;
    const int rowL0 = p.exact ? row10 : (p.cu_c2 ? p.cu_c2[b] : 0);
    const int nL = p.exact ? n1 : n2, lL = p.exact ? p.l1 : p.l2, sL = p.exact ? p.s1 : p.s2;
    const int maxvisL = d_visible(pos_last, lL, sL, nL);
    const int maxvis1 = d_visible(pos_last, p.l1, p.s1, n1);
    const int minvis1 = d_visible(pos0, p.l1, p.s1, n1);
    /* pass 1: this warp's rows are token 4 rg + wq, heads gid and gid + 8 */
    const int ptok = 4 * rg + wq;
    const int visLw = ptok < ntok ? d_visible(pos0 + ptok, lL, sL, nL) : 0;
    /* pass 2: this lane emits token 4 th + tig (selecting, and its last causal block) */
    const int etok = 4 * th + tig, eqb = (int)(pos0 + etok) / p.B;
    const bool eok = etok < ntok && eqb + 1 > Kb;

    {
        /* row r = (token r / 16, head r % 16); a group of G < 16 heads leaves rows G..15 of its token zero
         * (masked out of pass 2 by their -LSE, see the kernel's comment) */
        const uint16_t *qg = (const uint16_t *)p.q;
        for (int i = tid; i < M * CH; i += NT) {
            int r = i / CH, c = i % CH;
            int tt = r >> 4, hh = r & 15;
            bool ok = tt < ntok && hh < p.G;
            const uint16_t *src = qg + (ok ? ((q0 + tok0 + tt) * p.Hq + (int64_t)g * p.G + hh) * D : 0) + c * 8;
            cp_async16(sQ + swz90<M>(r, c * 8), src, ok ? 16 : 0);
        }
    }
    for (int i = tid; i < TT * nbs; i += NT) sBS[i] = 0.f;
    if (tid < TT) sVis[tid] = tid < ntok ? d_visible(pos0 + tid, p.l1, p.s1, n1) : 0;
    __shared__ __align__(8) uint64_t sBar[NS]; /* tile stage s's TMA arrival */
    __shared__ __align__(8) uint64_t sEmpty[DEC ? NS : 1]; /* DEC: stage s released by the 4 warpgroups */
    if (tid == 0)
        for (int s = 0; s < NS; s++) {
            mbar_init(&sBar[s]);
            if (DEC) mbar_init_count(&sEmpty[s], 4);
        }
    cp_async_commit();
    cp_async_wait<0>(); /* the Q tile */
    fence_proxy_async();
    __syncthreads();

    /* one stream of tiles: ntL level-L tiles (pass 1), then c1 tiles t1_first..nt1 - 1 (pass 2; under a sliding
     * window, p.window, from the tile of the first kernel that meets the first token's window first block,
     * before which no token of the CTA has a candidate: sel_pass2_first_kernel) */
    const int ntL = (maxvisL + CT - 1) / CT;
    const int nt1 = (sel_pass2_kernels(maxvis1, pos_last, p.B, p.s1, p.local_blocks) + CT - 1) / CT;
    const int t1_first = sel_pass2_first_kernel(pos0, p.window, p.B, p.l1, p.s1) / CT;
    const int ntot = ntL + max(nt1 - t1_first, 0);
    /* tile i (level-L tiles first, then c1 tiles) goes to stage i % NS by TMA: thread 0 issues D / 64
     * boxes of {64 columns, head g, CT rows} from the pass's first row of this sequence. Rows past the
     * visible kernels are masked (by selects) in both passes, so they may hold anything; rows past the
     * map's extent (the buffer's rows) come as zeros. */
    auto load = [&](int i) { /* thread 0 */
        if (i >= ntot) return;
        const bool pl = i < ntL;
        const int row = pl ? rowL0 + CT * i : row10 + CT * (t1_first + i - ntL);
        const int st = i % NS;
        uint16_t *dst = sC + st * CT * D;
        mbar_expect_tx(&sBar[st], CT * D * 2);
#pragma unroll
        for (int h = 0; h < D / 64; h++) tma_load(dst + h * CT * 64, pl ? &tmL : &tm1, &sBar[st], h * 64, g, row);
    };
    /* SEG: the tiles of a segment's successors wait for its finalize (whose histograms and carried keys use
     * the tile stages): tiles below seg_lim may load */
    int seg_lim = SEG ? ntL + p.seg_tiles : ntot;
    /* SEG: the current segment's first block and its row slot (0 in segment 0, K after: the carried keys
     * come first), seg_shift = seg_off - seg_wb. Segment 0 starts at tile t1_first's first block (0 without a
     * window): every block that tile's kernels meet is at or past it, and so is every token's qb */
    int seg_wb = SEG ? sel_seg_block(t1_first, CT, p.s1, p.B) : 0, seg_off = 0, seg_shift = -seg_wb;
    if (tid == 0)
#pragma unroll
        for (int s = 0; s < (DEC ? NS : NS - 1); s++)
            if (!SEG || s < seg_lim) load(s);
    /* tile i is in its stage (parity of its phase: bit st of phase), and the stage of tile i - 1 is
     * free (every warp is past its products, the barrier says): load tile i + NS - 1 there. DEC: no
     * barrier; the stage of tile i is reloaded by release_tile */
    uint32_t phase = 0, ephase = 0;
    auto next_tile = [&](int i) {
        if (!DEC) {
            __syncthreads();
            if (tid == 0) load(i + NS - 1);
        }
        const int st = i % NS;
        mbar_wait(&sBar[st], (phase >> st) & 1u);
        phase ^= 1u << st;
    };
    /* DEC: this warpgroup's products of tile i have completed (its last wgmma wait): release the stage;
     * warpgroup 3's thread 0 waits for all four releases and loads tile i + NS into it */
    auto release_tile = [&](int i) {
        if (!DEC) return;
        const int st = i % NS;
        if ((tid & 127) == 0) mbar_arrive(&sEmpty[st]);
        if (tid == 384) {
            if (i + NS < ntot) {
                mbar_wait(&sEmpty[st], (ephase >> st) & 1u);
                /* SEG: none past the segment's limit (those load at its end; in a segment, every tile below
                 * i + NS is loaded whenever i + NS is below the limit) */
                if (!SEG || i + NS < seg_lim) load(i + NS);
            }
            ephase ^= 1u << st;
        }
    };
    /* With p.wg_order, the warpgroups issue a tile's products in turn (warpgroup w waits on named barrier
     * w until w - 1 has issued its own), so that the tensor cores finish them in that order and
     * warpgroup w's exps run under the later warpgroups' products instead of every warpgroup's
     * products completing together. Every warpgroup runs every tile (the tile count is the CTA's),
     * and the tile barrier keeps one tile's arrivals from meeting the next tile's. */
    const bool ordered = p.wg_order != 0;
    /* DEC: tile i's turns on barrier set i % NS (IDs 1-3, 4-6, 7-9). Warpgroup w - 1 reaches tile i + NS
     * only once tile i's stage has been released, which warpgroup w does after its turn of tile i, so an
     * early arrival can never complete the set's barrier of an earlier tile (one set for all tiles, or two
     * by parity with 3 stages, would let it: that hung). */
    auto turn_sync = [&](int set) {
        if (set == 0) {
            if (wg == 1) named_bar_sync<1, 256>();
            if (wg == 2) named_bar_sync<2, 256>();
            if (wg == 3) named_bar_sync<3, 256>();
        } else if (set == 1) {
            if (wg == 1) named_bar_sync<4, 256>();
            if (wg == 2) named_bar_sync<5, 256>();
            if (wg == 3) named_bar_sync<6, 256>();
        } else {
            if (wg == 1) named_bar_sync<7, 256>();
            if (wg == 2) named_bar_sync<8, 256>();
            if (wg == 3) named_bar_sync<9, 256>();
        }
    };
    auto turn_arrive = [&](int set) {
        if (set == 0) {
            if (wg == 0) named_bar_arrive<1, 256>();
            if (wg == 1) named_bar_arrive<2, 256>();
            if (wg == 2) named_bar_arrive<3, 256>();
        } else if (set == 1) {
            if (wg == 0) named_bar_arrive<4, 256>();
            if (wg == 1) named_bar_arrive<5, 256>();
            if (wg == 2) named_bar_arrive<6, 256>();
        } else {
            if (wg == 0) named_bar_arrive<7, 256>();
            if (wg == 1) named_bar_arrive<8, 256>();
            if (wg == 2) named_bar_arrive<9, 256>();
        }
    };
    static_assert(NS <= 3, "k_select90: three barrier sets for the ordered issue");
    auto issue_turn = [&](int i) {
        if (ordered) turn_sync(DEC ? i % NS : 0);
    };
    auto issue_done = [&](int i) {
        if (ordered) turn_arrive(DEC ? i % NS : 0);
    };
    /* descriptors in 16-byte units; k-step kk of a [D/64][R][64] tile is at
     * (kk / 4) R 64 + (kk % 4) 16 elements */
    const uint64_t dQ = gmma_desc(sQ, 16, 1024), dC = gmma_desc(sC, 16, 1024);
    auto du = [](int elems) { return (uint32_t)(elems * 2) >> 4; };
    const uint64_t dQw = gdesc_add(dQ, du(rg * 64 * 64));    /* pass 1: this warpgroup's rows */
    const uint64_t dQh = gdesc_add(dQ, du(th * 64 * 64));    /* pass 2: its token half's rows */

    /* ---- pass 1: LSE over the visible level-L kernels ---- */
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
    bool have_ref = false; /* m holds the max of a full tile (every row's m finite) */
    int i = 0;
    for (; i < ntL; i++) {
        next_tile(i);
        const int so = (i % NS) * CT * D;
        /* product pp: this warpgroup's 64 rows x the tile's kernels 64 (2 pp + chalf).. (column half chalf
         * takes every other 64-kernel group), each its own group, so that the (max, sum) update of one runs
         * while the next one multiplies. Interleaved, each half meets the same kernel groups in the same order
         * with tiles of 128 and 256 kernels, so both give a row the same (max, sum), bit for bit, and the
         * same top-k (contiguous halves summed a row in another grouping: near-tied sets then depended on
         * the tile width, i.e. on the longest sequence of the call, session 31) */
        float acc[NP][8][4];
        const uint64_t dCt = gdesc_uniform(gdesc_add(dC, du(so + chalf * 64 * 64))); /* this tile's stage, column half */
        const uint64_t dQt = gdesc_uniform(dQw); /* in the loop, as pass 2's */
        issue_turn(i);
        wgmma_fence();
#pragma unroll
        for (int pp = 0; pp < NP; pp++) {
#pragma unroll
            for (int kk = 0; kk < KS; kk++)
                wgmma_ss<T, 64>(acc[pp], gdesc_add(dQt, du((kk >> 2) * M * 64 + (kk & 3) * 16)),
                                gdesc_add(dCt, du((kk >> 2) * CT * 64 + 2 * pp * 64 * 64 + (kk & 3) * 16)), kk > 0);
            wgmma_commit();
        }
        issue_done(i);
#pragma unroll
        for (int pp = 0; pp < NP; pp++) {
            wgmma_wait_le(NP - 1 - pp);
            reg_fence<8>(acc[pp]);
            if (pp == NP - 1) release_tile(i);
            const int col0 = CT * i + 64 * (2 * pp + chalf);
            if (col0 + 64 <= visLw) { /* warp-uniform: a warp's rows are one token's heads */
                /* after the rows' first full tile, the sum against its max (lse_tile_sum_ref), the
                 * tile redone with a max when any row of the warp would overflow; the vote is
                 * warp-uniform (so that no branch around the products in flight diverges: C7518)
                 * and decides for every lane (no lane keeps its own sum of a redone tile) */
                bool summed = false;
                if (have_ref) {
                    float nl[2];
                    if (__all_sync(0xffffffffu, lse_tile_sum_ref(acc[pp], m, l, nl, p.scale_log2))) {
                        l[0] = nl[0], l[1] = nl[1];
                        summed = true;
                    }
                }
                if (!summed) lse_tile_update_full(acc[pp], m, l, p.scale_log2);
                have_ref = true;
            } else {
                lse_tile_update(acc[pp], m, l, col0, tig, visLw, visLw, p.scale_log2);
            }
        }
    }
    /* the row's (max, sum): column half 1 hands its own to half 0 through shared memory, which merges
     * them as one more online step */
    float lrow[2];
#pragma unroll
    for (int ri = 0; ri < 2; ri++) {
        float lt = l[ri];
        lt = quad_sum(lt);
        lrow[ri] = lt;
    }
    const int prow = 64 * rg + 16 * wq + gid; /* this thread's first pass-1 row; the second is + 8 */
    if (chalf == 1 && tig == 0)
#pragma unroll
        for (int ri = 0; ri < 2; ri++) {
            sPM[prow + 8 * ri] = m[ri];
            sPL[prow + 8 * ri] = lrow[ri];
        }
    __syncthreads();
    if (chalf == 0 && tig == 0)
#pragma unroll
        for (int ri = 0; ri < 2; ri++) {
            const float m1 = sPM[prow + 8 * ri], mn = fmaxf(m[ri], m1), mu = mn == -INFINITY ? 0.f : mn;
            const float lt = lrow[ri] * exp2f(m[ri] - mu) + sPL[prow + 8 * ri] * exp2f(m1 - mu);
            /* no visible kernel, or a row past the group's heads (gid + 8 ri = its head): P = 0 */
            sNL[prow + 8 * ri] = lt > 0.f && gid + 8 * ri < p.G ? -(mn + __log2f(lt)) : -INFINITY;
        }
    __syncthreads();
    float nl[8][2]; /* [j][e]: -LSE of row 64 th + 8 j + 2 tig + e */
#pragma unroll
    for (int j = 0; j < 8; j++) {
        float2 v = *reinterpret_cast<const float2 *>(&sNL[64 * th + 8 * j + 2 * tig]);
        nl[j][0] = v.x;
        nl[j][1] = v.y;
    }

    /* ---- pass 2: probabilities over c1, head sum, round, max-pool ---- */
    const bool dflt = p.B == 64 && p.s1 == 16 && p.l1 == 32;
    /* kernel k's sum v for token 4 h + tig -> the token's block scores. Default geometry: kernel k
     * overlaps blocks k / 4 and (k + 1) / 4, so the lanes of the 4 kernels 4c..4c+3 (gid % 4 =
     * 0..3, k % 4 = gid % 4: kb is gid + a multiple of 8) first take their max by 2 shuffles, then
     * the k % 4 = 3 lane adds that max to block c and its own value to block c + 1: 2 atomics per
     * 4 kernels, 8 lanes per instruction on distinct banks (sel90_nbs). Else one lane per kernel
     * and block, as k_select. Scores are >= 0, so float bits compare as ints; 0 is the initial
     * value (invisible kernels, underflow) and needs no atomic. */
    /* A tile's products are exponentiated first (the second's MMA runs under the first's exps), each
     * thread keeping its 4 local head sums per row; then the (product, row) pairs are reduced over
     * the quad, rounded and max-pooled together, with no branch before the atomics, so that their
     * shuffle chains (3 + 2 dependent shuffles each) overlap (session 8, at 2 warps a scheduler: one
     * chain per row behind a branch around its atomics made a tile's chains run one after the other). */
    auto exp_step = [&](float (&a)[8][4], int kb, bool full, float (&ps)[2][4]) {
        if (full) {
#pragma unroll
            for (int j = 0; j < 8; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) a[j][e] = exp2f(fmaf(a[j][e], p.scale_log2, nl[j][e & 1]));
        } else {
#pragma unroll
            for (int j = 0; j < 8; j++) {
                const int vis = sVis[4 * th + (j >> 1)];
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    float x = fmaf(a[j][e], p.scale_log2, nl[j][e & 1]);
                    a[j][e] = kb + 8 * (e >> 1) < vis ? exp2f(x) : 0.f;
                }
            }
        }
        /* row ri (kernel kb + 8 ri), token 4 h + u of this thread's 4 heads: 3 local adds */
#pragma unroll
        for (int ri = 0; ri < 2; ri++)
#pragma unroll
            for (int u = 0; u < 4; u++)
                ps[ri][u] = (a[2 * u][2 * ri] + a[2 * u][2 * ri + 1]) + (a[2 * u + 1][2 * ri] + a[2 * u + 1][2 * ri + 1]);
    };
    /* ps[kg][ri][u]: kernel group kg (kernels kb + 64 kg, + 8 ri), token 4 th + u */
    auto pool_step = [&](float (&ps)[NP][2][4], int kb) {
        float v[NP][2];
        const bool hi = tig & 2, odd = tig & 1;
#pragma unroll
        for (int kg = 0; kg < NP; kg++)
#pragma unroll
            for (int ri = 0; ri < 2; ri++) {
                /* reduce-scatter over the quad: lane tig ends with token 4 th + tig's sum */
                const float(&q)[4] = ps[kg][ri];
                float k0 = hi ? q[2] : q[0], k1 = hi ? q[3] : q[1];
                k0 += __shfl_xor_sync(0xffffffffu, hi ? q[0] : q[2], 2);
                k1 += __shfl_xor_sync(0xffffffffu, hi ? q[1] : q[3], 2);
                v[kg][ri] = (odd ? k1 : k0) + __shfl_xor_sync(0xffffffffu, odd ? k0 : k1, 1);
                if (p.round_bf16) v[kg][ri] = __bfloat162float(__float2bfloat16_rn(v[kg][ri]));
            }
        /* this token's row; SEG: block c at slot seg_off + c - seg_wb (seg_shift) of the row, addressed from
         * sBS by a (non-negative) slot index (the plain form kept for !SEG: its SASS as before) */
        int *dst = (int *)&sBS[etok * nbs];
        const int rb = etok * nbs + seg_shift;
        if (dflt) {
            float gm[NP][2];
#pragma unroll
            for (int kg = 0; kg < NP; kg++)
#pragma unroll
                for (int ri = 0; ri < 2; ri++) gm[kg][ri] = fmaxf(v[kg][ri], __shfl_xor_sync(0xffffffffu, v[kg][ri], 4));
#pragma unroll
            for (int kg = 0; kg < NP; kg++)
#pragma unroll
                for (int ri = 0; ri < 2; ri++) gm[kg][ri] = fmaxf(gm[kg][ri], __shfl_xor_sync(0xffffffffu, gm[kg][ri], 8));
            if ((gid & 3) != 3 || !eok) return;
            /* the 8 atomics at immediate offsets from one address (kb >= 0, so (kb + 8 m) >> 2 = (kb >> 2) +
             * 2 m); atomicMax(dst + c) had two IMADs of address arithmetic each */
            const uint32_t dsts = SEG ? (uint32_t)__cvta_generic_to_shared(sBS) + 4u * (uint32_t)(rb + (kb >> 2))
                                      : (uint32_t)__cvta_generic_to_shared(dst) + 4u * (uint32_t)(kb >> 2);
#pragma unroll
            for (int kg = 0; kg < NP; kg++)
#pragma unroll
                for (int ri = 0; ri < 2; ri++) {
                    const int c = (kb >> 2) + 16 * kg + 2 * ri;
                    const uint32_t a = dsts + 4u * (16 * kg + 2 * ri);
                    smem_max_if(a, __float_as_int(gm[kg][ri]), gm[kg][ri] > 0.f);
                    smem_max_if(a + 4u, __float_as_int(v[kg][ri]), v[kg][ri] > 0.f && c + 1 <= eqb);
                }
            return;
        }
        if (!eok) return;
#pragma unroll
        for (int kg = 0; kg < NP; kg++)
#pragma unroll
            for (int ri = 0; ri < 2; ri++) {
                if (!(v[kg][ri] > 0.f)) continue;
                const int k = kb + 64 * kg + 8 * ri;
                int blo = (p.s1 * k) / p.B, bhi = (p.s1 * k + p.l1 - 1) / p.B;
                if (bhi > eqb) bhi = eqb;
                if (SEG) {
                    atomicMax((int *)sBS + (rb + blo), __float_as_int(v[kg][ri]));
                    for (int bb = blo + 1; bb <= bhi; bb++) atomicMax((int *)sBS + (rb + bb), __float_as_int(v[kg][ri]));
                } else {
                    atomicMax(dst + blo, __float_as_int(v[kg][ri]));
                    for (int bb = blo + 1; bb <= bhi; bb++) atomicMax(dst + bb, __float_as_int(v[kg][ri]));
                }
            }
    };
    /* the finalize's team histograms ([teams][SEL90_TOPK_TEAM_WORDS]), in the tile stages when they are idle
     * (a segment's end, the end) */
    uint32_t *const sTeam = reinterpret_cast<uint32_t *>(sC);
    /* SEG: the finalize (sel90_topk_radix_g, a team of SEL90_TOPK_TW warps per token) of the tokens whose
     * blocks reach the current segment (qb >= seg_wb): those whose blocks end below wb1 into their top-k
     * rows, the others into the carried keys to be ([TT][K] sNkey, sNblk past the teams' histograms). A
     * segment's end passes its successor's first block; the last segment INT_MAX (every token's blocks end
     * there) */
    auto seg_finalize = [&](int wb1) {
        const int e_lo = d_first_untouched_block(p.B, p.l1, p.s1, n1);
        constexpr int TW = SEL90_TOPK_TW;
        const int team = warp / TW, tw = warp % TW;
        uint32_t *sNkey = sTeam + TT * SEL90_TOPK_TEAM_WORDS;
        int32_t *sNblk = reinterpret_cast<int32_t *>(sNkey + TT * Kb);
        for (int tt = team; tt < ntok; tt += NT / 32 / TW) { /* team < SEL90_TT: one token each */
            const int qb = (int)(pos0 + tt) / p.B;
            if (qb + 1 <= Kb || qb < seg_wb) continue; /* takes all its blocks, or done before */
            const bool last = qb < wb1;                 /* its blocks end in this segment */
            int32_t *row = p.topk + ((int64_t)g * p.sd.total_q + q0 + tok0 + tt) * p.topk_out;
            /* the window's blocks before it: key 0 in every segment; the carry keeps K keys, the last selects at
             * most the window's candidates */
            const int wwb = d_window_first_block(pos0 + tt, p.window, p.B);
            const SelSegKey key_of{SelBlockKey{qb, p.init_blocks, p.local_blocks, e_lo, wwb}, seg_off, seg_wb};
            const SelSegOut out{last ? row : nullptr, sNkey + tt * Kb, sNblk + tt * Kb, sCidx + tt * Kb,
                                seg_off, seg_wb, p.topk_out};
            sel90_topk_radix_g<TW>(sBS + tt * nbs, seg_off + (last ? qb + 1 : wb1) - seg_wb,
                                   last ? key_of.base.select_k(Kb) : Kb, sTeam + team * SEL90_TOPK_TEAM_WORDS, tw,
                                   team, key_of, out);
        }
    };
    /* SEG: segment by segment, its tiles (up to seg_lim) and then, unless it is the last, its end (after the
     * tile loop, which does not carry its code: inside it, never taken, it cost the loop 1.25x); !SEG: one pass */
    for (;;) {
        for (const int i_end = SEG ? min(ntot, seg_lim) : ntot; i < i_end; i++) {
            next_tile(i);
            const int t = t1_first + i - ntL; /* the c1 tile */
            const int so = (i % NS) * CT * D;
            /* product kg: this warpgroup's kernels CT / 2 khalf + 64 kg.. x the rows of tokens 4 th..4 th + 3,
             * each its own group, so that the exps of one run while the next ones multiply */
            float acc[NP][8][4];
            const uint64_t dCtw = gdesc_uniform(gdesc_add(dC, du(so + (CT / 2) * khalf * 64))); /* this warpgroup's kernels of the tile */
            const uint64_t dQt = gdesc_uniform(dQh); /* in the loop: hoisted, ptxas kept the 8 Q descriptors in
                                                      * vector registers and moved each over by R2UR */
            issue_turn(i);
            wgmma_fence();
#pragma unroll
            for (int kg = 0; kg < NP; kg++) {
#pragma unroll
                for (int kk = 0; kk < KS; kk++)
                    wgmma_ss<T, 64>(acc[kg], gdesc_add(dCtw, du((kk >> 2) * CT * 64 + 64 * kg * 64 + (kk & 3) * 16)),
                                    gdesc_add(dQt, du((kk >> 2) * M * 64 + (kk & 3) * 16)), kk > 0);
                wgmma_commit();
            }
            issue_done(i);
            const int kb = CT * t + (CT / 2) * khalf + 16 * wq + gid; /* c1 kernel of this thread's first row */
            const bool full = CT * t + CT <= minvis1;                /* the whole tile is visible to every token */
            float ps[NP][2][4];
#pragma unroll
            for (int kg = 0; kg < NP; kg++) {
                wgmma_wait_le(NP - 1 - kg);
                reg_fence<8>(acc[kg]);
                if (kg == NP - 1) release_tile(i);
                exp_step(acc[kg], kb + 64 * kg, full, ps[kg]);
            }
            pool_step(ps, kb);
        }
        if constexpr (!SEG) {
            break;
        } else {
            if (i == ntot) break;
            /* the end of a segment that is not the last; i is the next one's first tile. Blocks below wb1 have
             * every kernel they meet in (tile i starts at kernel CT (t1_first + i - ntL)) */
            const int wb1 = sel_seg_block(t1_first + i - ntL, CT, p.s1, p.B);
            const int npart = p.seg_npart;
            uint32_t *sNkey = sTeam + TT * SEL90_TOPK_TEAM_WORDS;          /* [TT][K] the carried keys to be */
            int32_t *sNblk = reinterpret_cast<int32_t *>(sNkey + TT * Kb); /* [TT][K] their blocks (both as */
            float *sPart = reinterpret_cast<float *>(sNblk + TT * Kb);     /* seg_finalize's), [TT][npart] blocks wb1.. */
            __syncthreads(); /* every warpgroup's max-pool of the segment */
            /* the blocks from wb1 on that this segment's kernels reached (its last kernels' later
             * blocks), before the finalize's key pass overwrites up to 3 slots past a row's end */
            for (int x = tid; x < TT * npart; x += NT) {
                const int tt = x / npart, slot = seg_off + wb1 - seg_wb + x % npart;
                sPart[x] = slot < nbs ? sBS[tt * nbs + slot] : 0.f;
            }
            __syncthreads();
            seg_finalize(wb1);
            __syncthreads();
            /* the next segment's rows of the tokens that go on: K carried keys, then blocks wb1.. */
            for (int tt = 0; tt < ntok; tt++) {
                const int qb = (int)(pos0 + tt) / p.B;
                if (qb + 1 <= Kb || qb < wb1) continue;
                for (int x = tid; x < nbs; x += NT) {
                    float v = 0.f;
                    if (x < Kb) {
                        v = __uint_as_float(sNkey[tt * Kb + x]);
                        sCidx[tt * Kb + x] = sNblk[tt * Kb + x];
                    } else if (x - Kb < npart) {
                        v = sPart[tt * npart + x - Kb];
                    }
                    sBS[tt * nbs + x] = v;
                }
            }
            seg_wb = wb1;
            seg_off = Kb;
            seg_shift = seg_off - seg_wb;
            seg_lim += p.seg_tiles;
            fence_proxy_async(); /* the stages' generic writes (histograms, carry) before the next TMA into them */
            __syncthreads();     /* the rows, and the stages free for the next segment's tiles */
            if (tid == 384) /* the tiles up to i - 1 released; none from i on loaded yet */
                for (int u = i; u < i + NS && u < seg_lim; u++) load(u);
        }
    }
    __syncthreads();

    /* ---- finalize: the rows' keys in place + top-k, a team of SEL90_TOPK_TW warps per token ---- */
    /* sel90_topk_radix turns each row into keys (SelBlockKey; zeros up to a multiple of 4: the row
     * has nbs >= qb + 9 slots) and selects */
    if constexpr (SEG) {
        seg_finalize(INT_MAX);
    } else {
        const int e_lo = d_first_untouched_block(p.B, p.l1, p.s1, n1);
        constexpr int TW = SEL90_TOPK_TW;
        const int team = warp / TW, tw = warp % TW;
        for (int tt = team; tt < ntok; tt += NT / 32 / TW) { /* team < SEL90_TT: one token each */
            const int qb = (int)(pos0 + tt) / p.B;
            if (qb + 1 <= Kb) continue;
            const int wb = d_window_first_block(pos0 + tt, p.window, p.B);
            const SelBlockKey key_of{qb, p.init_blocks, p.local_blocks, e_lo, wb};
            int32_t *row = p.topk + ((int64_t)g * p.sd.total_q + q0 + tok0 + tt) * p.topk_out;
            sel90_topk_radix<TW>(sBS + tt * nbs, qb + 1, key_of.select_k(Kb), qb, row, p.topk_out,
                                 sTeam + team * SEL90_TOPK_TEAM_WORDS, tw, team, key_of);
        }
    }
#else
    __trap(); /* not built for sm_90a: the host never launches this */
#endif
}

/* ------------------------------------------------------------ host side ---- */

static size_t sel_smem(int D, int NW, int TT, int nbmax, int fused, int generic) {
    size_t M = 16 * NW;
    size_t s = (M <= 64 ? 0 : M * D * 2) + 2 * 64 * (size_t)D * 2;
    if (fused) s += (size_t)TT * nbmax * 4;
    if (generic) s += M * 65 * 4;
    return s;
}

template <typename T, int D, int NW>
static infllm_status sel_run(const SelParams &p, size_t smem, int64_t gx, cudaStream_t st) {
    infllm_status s = cuda_func_smem((const void *)k_select<T, D, NW>, smem, "k_select");
    if (s) return s;
    dim3 grid((unsigned)gx, (unsigned)p.sd.num_seqs, (unsigned)p.Hkv);
    k_select<T, D, NW><<<grid, NW * 32, smem, st>>>(p);
    CU_LAUNCH_CHECK("k_select");
    return INFLLM_OK;
}

#ifdef INFLLM_CUDA_SM90A
/* alignment slack, Q, the tile stages (ct kernels x ns), block scores, -LSE per row, pass 1's (max,
 * sum) over column half 1 per row, visible kernels per token */
static size_t sel90_smem_rows(int D, int ct, int ns, size_t row_slots) {
    const size_t M = 16 * SEL90_TT;
    return 1024 + (M + (size_t)ns * ct) * (size_t)D * 2 + (size_t)SEL90_TT * row_slots * 4 + 3 * M * 4 + SEL90_TT * 4;
}
static size_t sel90_smem(int D, int nbmax, int ct, int ns) { return sel90_smem_rows(D, ct, ns, sel90_nbs(nbmax)); }

/* the two tile maps (level L = c2, or c1 with exact LSE; and c1) of k_select90 with CT-row boxes;
 * false when either cannot be built (the caller then runs k_select) */
static bool sel90_maps(CUtensorMap *tmL, CUtensorMap *tm1, const SelParams &p, int D, int CT, int64_t c1_rows,
                       int64_t c2_rows) {
    memset(tmL, 0, sizeof *tmL);
    memset(tm1, 0, sizeof *tm1);
    return cuda_tma_map_rows(tm1, p.c1, p.Hkv, D, c1_rows, CT) &&
           cuda_tma_map_rows(tmL, p.exact ? p.c1 : p.c2, p.Hkv, D, p.exact ? c1_rows : c2_rows, CT);
}

/* SEG's layout: sel90_smem's with rows of `stride` slots, and the carried keys' blocks ([TT][K] int32) */
static size_t sel90_smem_seg(int D, int ct, int ns, int stride, int K) {
    return sel90_smem_rows(D, ct, ns, (size_t)stride) + (size_t)SEL90_TT * K * 4;
}

template <typename T, int D, int CT, int NS, bool DEC, bool SEG = false>
static infllm_status sel90_run(const SelParams &p, const CUtensorMap &tmL, const CUtensorMap &tm1, int64_t gx,
                               cudaStream_t st) {
    const size_t smem = SEG ? sel90_smem_seg(D, CT, NS, p.seg_stride, p.K) : sel90_smem(D, p.nbmax, CT, NS);
    infllm_status s = cuda_func_smem((const void *)k_select90<T, D, CT, NS, DEC, SEG>, smem, "k_select90");
    if (s) return s;
    dim3 grid((unsigned)gx, (unsigned)p.sd.num_seqs, (unsigned)p.Hkv);
    k_select90<T, D, CT, NS, DEC, SEG><<<grid, SEL90_NT, smem, st>>>(p, tmL, tm1);
    CU_LAUNCH_CHECK("k_select90");
    return INFLLM_OK;
}
/* k_select90's warpgroups issue each tile's products in turn (SelParams.wg_order) unless
 * INFLLM_CUDA_SEL90_NO_ORDER=1 (same results; select 3.6% slower at 128K); read once */
static int sel90_ordered(void) {
    static std::atomic<int> no_order{CUDA_ENV_UNREAD};
    return cuda_env_int("INFLLM_CUDA_SEL90_NO_ORDER", &no_order) != 1;
}
/* k_select90's decoupled warpgroups (DEC; session 18: select 1.08x at 128K, 1.06x at 64K, even at 32K,
 * bitwise the same top-k) unless INFLLM_CUDA_SEL90_COUPLED=1 (the tile barrier of sessions 4-17); read
 * once */
static int sel90_decoupled(void) {
    static std::atomic<int> coupled{CUDA_ENV_UNREAD};
    return cuda_env_int("INFLLM_CUDA_SEL90_COUPLED", &coupled) != 1;
}
/* k_select90 with a 2-stage ring of 128-kernel tiles (RING2): 98 KB of tiles at d 128 instead of the 3-stage
 * ring's 131 KB, so 8 tokens' block scores fit to 4,104 blocks (256K tokens) instead of ~3,080 (~197K), past
 * which the selection falls back to the mma.sync k_select. Session 27 (H200): select 2.4-2.6x faster at 200K /
 * 224K / 256K than that fallback (G 16: 147.3 -> 57.1 ms at 256K; G 4: 589.9 -> 222.7), top-k and output
 * bitwise equal to the 3-stage ring's at 180K. Where both rings fit the 2-stage one is faster too (session 27
 * at 180K: 1.056x G 16, 1.069x G 4; session 28 at 160K: 1.058x, at 32K 1.037x, G 16), so it replaces the
 * 3-stage ring wherever 128-kernel tiles run at d 128 (the wide 256 x 2 tiles stay ahead of it at 48K-130K:
 * 0.969x at 128K). d 128 only (at d 64 a 2-stage ring of 128 kernels is too small for the finalize's
 * histograms, and the 3-stage ring already fits to ~330K tokens); decoupled warpgroups only. Returns 1
 * (default), 0 with INFLLM_CUDA_SEL90_NO_RING2=1 (the 3-stage ring where it fits, the fallback past it: for
 * comparisons, and the grid's run of the 3-stage ring at d 128); read once. */
static int sel90_ring2_mode(void) {
    static std::atomic<int> no_ring2{CUDA_ENV_UNREAD};
    return cuda_env_int("INFLLM_CUDA_SEL90_NO_RING2", &no_ring2) == 1 ? 0 : 1;
}
static int sel90_ring2_usable(const infllm_attn_params *ap) { return ap->D == 128 && sel90_decoupled(); }
static_assert(SEL90_TT * SEL90_TOPK_TEAM_WORDS * 4 <= 2 * SEL90_CT * 128 * 2,
              "k_select90: the finalize's histograms must fit in the 2 tile stages (d 128)");

/* k_select90 in segments (SEG) where a token's block scores do not fit whole (past 256K tokens at d 128,
 * ~330K at d 64: before, the mma.sync k_select, 2.4-2.6x slower at 200-256K). The pass-2 tiles go in
 * segments of seg_tiles; at a segment's end the CTA selects each token's K best of (the K carried from the
 * segments before, this segment's finished blocks) into the carry (SelSegKey / SelSegOut: exact, the
 * same top-k as the whole row), and its row starts over with the carried keys and the blocks that the
 * segment's last kernels reached past its end. Tiles of 128 kernels, the ring of 2 stages at d 128 and 3 at
 * d 64 (whose stages hold the finalize's histograms, the new carry and those partial blocks at a segment's
 * end: their next tiles load after it). Fills p.seg_* and returns the shared memory, or 0 where it cannot
 * run (K too large for the stages, or a window too small for a segment of >= K blocks). max_tiles > 0
 * caps the tiles a segment (INFLLM_CUDA_SEL90_SEG, for the grid's small shapes). */
static size_t sel90_seg_plan(const infllm_attn_params *ap, SelParams &p, int limit, int max_tiles) {
    const int ct = SEL90_CT, ns = ap->D == 128 ? 2 : 3, TT = SEL90_TT;
    const int64_t K = p.K, s1 = ap->s1;
    const int64_t npart = sel_seg_npart(ap->l1, ap->B);
    const int64_t stage_words = (int64_t)ns * ct * ap->D / 2;
    if (K < 1 || TT * (SEL90_TOPK_TEAM_WORDS + 2 * K + npart) > stage_words) return 0;
    /* the window a segment of ts tiles needs, and the rows (sel_seg.cuh) */
    auto window = [&](int64_t ts) { return sel_seg_window(ts, ct, ap->s1, ap->l1, ap->B, p.local_blocks); };
    auto stride_of = [&](int64_t w) { return sel_seg_stride(K, w); };
    const int64_t ts_min = sel_seg_ts_min(K, ct, ap->s1, ap->B); /* segment 0 ends at block >= K */
    int64_t ts = ts_min; /* then as many as fit, and no more than twice the longest sequence's kernels need */
    while (sel90_smem_seg(ap->D, ct, ns, (int)stride_of(window(ts + 1)), (int)K) <= (size_t)limit &&
           (max_tiles <= 0 || ts + 1 <= max_tiles) && s1 * ct * ts < (int64_t)ap->max_lk * 2)
        ts++;
    const int64_t stride = stride_of(window(ts));
    const size_t smem = sel90_smem_seg(ap->D, ct, ns, (int)stride, (int)K);
    if (smem > (size_t)limit) return 0;
    p.seg_tiles = (int)ts;
    p.seg_stride = (int)stride;
    p.seg_npart = (int)npart;
    return smem;
}
/* INFLLM_CUDA_SEL90_SEG=N > 0: k_select90 in segments of at most N tiles (or the fewest that end at a block
 * >= K) wherever it runs (for the grid and A/B runs); -1: never (past the whole rows' limit the mma.sync k_select, as before); unset: segments only
 * where the whole rows do not fit. Read once. */
static int sel90_seg_mode(void) {
    static std::atomic<int> seg{CUDA_ENV_UNREAD};
    return cuda_env_int("INFLLM_CUDA_SEL90_SEG", &seg);
}

template <typename T, int D>
static infllm_status sel90_dispatch(const SelParams &p, int seg, int wide, int ring2, const CUtensorMap &tmL,
                                    const CUtensorMap &tm1, int64_t gx, cudaStream_t st) {
    if (sel90_decoupled()) {
        /* SEG (sel90_seg_plan): 128-kernel tiles, the 2-stage ring at d 128, 3 stages at d 64 */
        if (seg) return sel90_run<T, D, SEL90_CT, D == 128 ? 2 : SEL90_NS, true, true>(p, tmL, tm1, gx, st);
        if (wide) return sel90_run<T, D, SEL90_CT_WIDE, SEL90_NS_WIDE, true>(p, tmL, tm1, gx, st);
        /* RING2: d 128 only (sel90_ring2_usable), so that no other head size builds a 2-stage kernel */
        if constexpr (D == 128)
            if (ring2) return sel90_run<T, 128, SEL90_CT, 2, true>(p, tmL, tm1, gx, st);
        return sel90_run<T, D, SEL90_CT, SEL90_NS, true>(p, tmL, tm1, gx, st);
    }
    if (wide) return sel90_run<T, D, SEL90_CT_WIDE, SEL90_NS_WIDE, false>(p, tmL, tm1, gx, st);
    return sel90_run<T, D, SEL90_CT, SEL90_NS, false>(p, tmL, tm1, gx, st);
}
/* k_select90's 256-kernel tiles (2 products a warpgroup, one barrier, one TMA round and set of
 * descriptors per 256 kernels) against the 128-kernel ones (1 product a warpgroup, a partial last
 * tile half as large in each pass): on the H200 with 4 ordered warpgroups (session 10) the wide tiles
 * were 8% faster at 128K tokens, 6% at 64K and even at 32K, so they are used from 48K tokens on,
 * where they fit. INFLLM_CUDA_SEL90_TILES=128 or 256 forces one shape (256 still only where it
 * fits); read once. */
static int sel90_wide(const infllm_attn_params *ap, int nbmax, int limit) {
    static std::atomic<int> tiles{CUDA_ENV_UNREAD};
    const int force = cuda_env_int("INFLLM_CUDA_SEL90_TILES", &tiles);
    if (sel90_smem(ap->D, nbmax, SEL90_CT_WIDE, SEL90_NS_WIDE) > (size_t)limit) return 0;
    return force == 128 || force == 256 ? force == 256 : ap->max_lk >= 48 * 1024;
}
#endif

template <typename T, int D>
static infllm_status sel_dispatch_nw(int NW, const SelParams &p, size_t smem, int64_t gx, cudaStream_t st) {
    if (NW == 8) return sel_run<T, D, 8>(p, smem, gx, st);
    if (NW == 4) return sel_run<T, D, 4>(p, smem, gx, st);
    return sel_run<T, D, 1>(p, smem, gx, st);
}

static int max_smem_optin(void) { return cuda_dev_props().smem_optin; }

/* k_select for a group of G < 16 heads pads a token's rows to 16 (gpad: heads G..15 zero and masked):
 * unpadded, a CTA holds the block scores of 64 / G tokens (at 128K and G 4, 128 KB: one CTA of 4 warps
 * an SM), padded those of 4 tokens as at G 16, for 16 / G times the products. The rule follows session
 * 24's A/B of the select time (H200, INFLLM_CUDA_NO_WGMMA=1, padded / unpadded speed):
 *   G 4 (d 128)       1.04x / 1.27x / 3.58x at 8K / 32K / 128K: pad
 *   G 8 (d 64)        2.79x / 3.26x / 5.16x at 8K / 32K / 128K: pad
 *   G 2 (d 128)       0.71x / 0.90x at 8K / 32K (8x the products): never pad below G 4
 *   G 7 (d 128)       0.84x at 32K (3 CTAs an SM either way), 1.90x at 128K (3 against 1): pad where
 *                     more 4-warp CTAs fit an SM (by shared memory, 1 KB a CTA reserved by the driver)
 * INFLLM_CUDA_SEL_PAD16=1 forces the padding, INFLLM_CUDA_NO_SEL_PAD16=1 forbids it (A/B switches; read
 * once). */
static int sel_pad16(const infllm_attn_params *ap, int nbmax) {
    static std::atomic<int> pad{CUDA_ENV_UNREAD}, nopad{CUDA_ENV_UNREAD};
    if (cuda_env_int("INFLLM_CUDA_NO_SEL_PAD16", &nopad) == 1) return 0;
    if (cuda_env_int("INFLLM_CUDA_SEL_PAD16", &pad) == 1) return 1;
    if (ap->G < 4) return 0;
    if (16 % ap->G == 0) return 1;
    const size_t per_sm = (size_t)cuda_dev_props().smem_per_sm;
    /* k_select<4>'s CTAs an SM by shared memory, at most its 3 */
    auto ctas = [&](size_t smem) { return (int)min((size_t)3, per_sm / (smem + 1024)); };
    const size_t plain = sel_smem(ap->D, 4, 64 / ap->G, nbmax, 1, (16 % ap->G) != 0);
    const size_t padded = sel_smem(ap->D, 4, 4, nbmax, 1, 0);
    return ctas(padded) > ctas(plain);
}

/* Groups of 1-3 heads over short sequences take the mma.sync k_select even on sm_90a: k_select90 pads a
 * token's rows to 16, so it runs 16 / G times the products, while k_select's tiles hold 16 * 4 / G tokens of
 * G rows. Measured on the H200 (session 25, bench/cuda_ab.sh, k_select's select speed against k_select90's,
 * 32 query heads, d 128): 8K 2.16x / 1.34x / 1.60x (G 1 / 2 / 3), 16K 1.51x / 1.12x / 1.40x, 20K 1.46x /
 * 1.10x / 1.39x, 24K 0.81x / 0.79x / 0.99x. The default path at G 1: pipeline 2.93 -> 2.32 ms at 8K, 11.59 ->
 * 9.55 ms at 16K. At d 64 (session 26; 16 query heads for G 1 / 2, 12 for G 3) k_select's tiles are half
 * as large and it wins longer: G 1 1.96x / 1.44x / 1.35x / 1.33x at 8K / 16K / 20K / 24K, 0.73x at 28K;
 * G 2 1.20x at 8K, 1.00x / 0.97x at 16K (two calls), 0.97x / 0.96x at 20K / 24K; G 3 1.36x at 8K, 1.29x at
 * 24K, 1.18x at 32K, 0.84x at 40K. Hence the per-(G, d) limits below (G 2's between its measured points);
 * the default against NO_SEL_SHORT, same call: G 1 d 64 24K pipeline 9.74 vs 11.07 ms, G 3 32K 7.99 vs
 * 8.40. INFLLM_CUDA_SEL_SHORT=1 takes k_select at every length for these groups, INFLLM_CUDA_NO_SEL_SHORT=1
 * never (k_select90, the rule before). */
#ifdef INFLLM_CUDA_SM90A
static int64_t sel_short_max_keys(int G, int D) {
    if (D != 64) return 20480;
    return G == 1 ? 24576 : G == 2 ? 12288 : 32768;
}
static int sel_short_small_group(const infllm_attn_params *ap) {
    static std::atomic<int> always{CUDA_ENV_UNREAD}, never{CUDA_ENV_UNREAD};
    if (ap->G > 3 || cuda_env_int("INFLLM_CUDA_NO_SEL_SHORT", &never) == 1) return 0;
    return cuda_env_int("INFLLM_CUDA_SEL_SHORT", &always) == 1 || ap->max_lk <= sel_short_max_keys(ap->G, ap->D);
}
#endif

/* the fields SelParams (k_select) and DecParams (k_dec_*) share, filled the same way for both */
template <typename P>
static void sel_fill_common(P &p, const infllm_attn_params *ap, const void *q, const void *c1, const void *c2,
                            const int32_t *cu_c1, const int32_t *cu_c2) {
    p.q = q;
    p.c1 = c1;
    p.c2 = c2;
    p.cu_c1 = cu_c1;
    p.cu_c2 = cu_c2;
    p.sd = seq_desc(ap);
    sel_fill_params(p, ap);
    /* under a sliding window, pass 2 of the fused selections (k_select90, k_select, k_dec_score / k_dec_score4) skips
     * the c1 tiles before the first kernel that meets a CTA's first token's window first block (session 58: H100, 128K,
     * W 16384 stage 1 14.7 -> 7.8 ms, outputs bitwise the same; sel_pass2_first_kernel) */
    p.window = ap->window;
}

infllm_status cuda_select_launch(const infllm_attn_params *ap, const void *q, const void *c1, const void *c2,
                                 const int32_t *cu_c1, const int32_t *cu_c2, float *scores, int32_t *topk,
                                 int filter_sparse, int64_t c1_rows, int64_t c2_rows, cudaStream_t st) {
    infllm_status s = cuda_check_supported(ap, "stage 1");
    if (s) return s;
    if (ap->total_q == 0 || ap->max_lq == 0) return INFLLM_OK;
    SelParams p;
    memset(&p, 0, sizeof p);
    sel_fill_common(p, ap, q, c1, c2, cu_c1, cu_c2);
    p.scores = scores;
    p.max_n1 = ap->max_n1;
    p.topk = topk;
    p.filter_sparse = filter_sparse;
    p.mode = ap->mode;
    p.dense_len = ap->dense_len;
    p.nbmax = topk ? (int)((ap->max_lk + ap->B - 1) / ap->B) : 0;
    p.nbmax = (p.nbmax + 3) & ~3; /* rows of 16 bytes: k_select's finalize reads and writes 4 keys at a time */
    int limit = max_smem_optin();
#ifdef INFLLM_CUDA_SM90A
    /* groups of at most 16 on sm_90a (fewer heads than 16: zero rows, masked): k_select90 (8 tokens per
     * CTA) when its block scores fit (to 256K tokens at d 128, where its 128-kernel tiles run in a 2-stage
     * ring; ~330K at d 64; past that in segments, see sel90_seg_plan) and the row counts of c1 / c2 are
     * known (its tiles come by TMA, whose maps must
     * not reach past the buffers); decode-like shapes (one token) keep the 1-warp tiles */
    CUtensorMap tmL, tm1;
    const int ring3_fits = sel90_smem(ap->D, p.nbmax, SEL90_CT, SEL90_NS) <= (size_t)limit;
    const int ring2_mode = sel90_ring2_usable(ap) ? sel90_ring2_mode() : 0;
    const int ring2_fits = ring2_mode && sel90_smem(ap->D, p.nbmax, SEL90_CT, 2) <= (size_t)limit;
    const bool sel90_shape = topk && !scores && ap->G <= 16 && ap->max_lq > 1 && cuda_use_wgmma() &&
                             !sel_short_small_group(ap);
    /* past them (or forced), k_select90 in segments (sel90_seg_plan fills p.seg_*) */
    const int seg_mode = sel90_seg_mode();
    const int seg = sel90_shape && seg_mode >= 0 && (seg_mode > 0 || (!ring3_fits && !ring2_fits)) &&
                    sel90_decoupled() && sel90_seg_plan(ap, p, limit, seg_mode);
    if (sel90_shape && (seg || ring3_fits || ring2_fits)) {
        p.TT = SEL90_TT;
        p.wg_order = sel90_ordered();
        const int wide = !seg && sel90_wide(ap, p.nbmax, limit);
        const int ring2 = !seg && !wide && ring2_fits;
        if (sel90_maps(&tmL, &tm1, p, ap->D, wide ? SEL90_CT_WIDE : SEL90_CT, c1_rows, c2_rows)) {
            int64_t gx = (ap->max_lq + SEL90_TT - 1) / SEL90_TT;
            if (ap->dtype == INFLLM_DTYPE_BF16)
                return ap->D == 128 ? sel90_dispatch<__nv_bfloat16, 128>(p, seg, wide, ring2, tmL, tm1, gx, st)
                                    : sel90_dispatch<__nv_bfloat16, 64>(p, seg, wide, ring2, tmL, tm1, gx, st);
            return ap->D == 128 ? sel90_dispatch<__half, 128>(p, seg, wide, ring2, tmL, tm1, gx, st)
                                : sel90_dispatch<__half, 64>(p, seg, wide, ring2, tmL, tm1, gx, st);
        }
    }
#endif
    /* k_select with a token's rows padded to 16 for a fused selection of groups below 16, by sel_pad16's
     * measured rule (k_select90 above pads every group <= 16 itself) */
    const bool pad_ok = topk && !scores && ap->G < 16 && ap->max_lq * (int64_t)ap->G > 16;
    int gpad = pad_ok && sel_pad16(ap, p.nbmax);
    /* 4 warps (3 CTAs per SM) first; 8 warps for groups > 64; 1 warp for decode-like shapes */
    int cands[3] = {4, 8, 1};
    if (ap->max_lq * (int64_t)ap->G <= 16) {
        cands[0] = 1;
        cands[1] = 4;
        cands[2] = 8;
    }
    /* the first warp count whose tile (16 NW / Gk tokens' block-score rows) fits; 0: none */
    auto pick_nw = [&](int Gk) {
        for (int i = 0; i < 3; i++) {
            const int nw = cands[i];
            if (Gk > 16 * nw) continue;
            if (sel_smem(ap->D, nw, 16 * nw / Gk, p.nbmax, topk != NULL, (16 % Gk) != 0) <= (size_t)limit) return nw;
        }
        return 0;
    };
    int NW = pick_nw(gpad ? 16 : ap->G);
    /* unpadded, a CTA holds the block scores of 16 NW / G tokens; where not even one warp's fit (at d 128, G 1
     * past ~68K keys on the 99 KB of cc 8.6 / 8.9 parts, ~134K on an A100's 163 KB; G 2 past ~137K / ~268K), the
     * padded rows (NW tokens a CTA) still do, to ~1.1M / ~2.1M keys, at 16 / G times the products: slower, but
     * the call runs */
    if (!NW && !gpad && pad_ok) {
        gpad = 1;
        NW = pick_nw(16);
    }
    const int Gk = gpad ? 16 : ap->G; /* k_select's rows a token */
    const int generic = (16 % Gk) != 0;
    if (!NW)
        return infllm_set_error(INFLLM_ERR_UNSUPPORTED,
                                "CUDA stage 1: group size %d with %d blocks per sequence does not fit in this "
                                "device's %d bytes of shared memory a block (max group 128; blocks x tokens-per-tile x "
                                "4 bytes must fit)",
                                ap->G, p.nbmax, limit);
    p.TT = 16 * NW / Gk;
    p.gpad = gpad;
    size_t smem = sel_smem(ap->D, NW, p.TT, p.nbmax, topk != NULL, generic);
    int64_t gx = (ap->max_lq + p.TT - 1) / p.TT;
    if (scores) {
        size_t bytes = (size_t)ap->Hkv * ap->total_q * ap->max_n1 * sizeof(float);
        if (bytes) CU_CHECK(cudaMemsetAsync(scores, 0, bytes, st));
        if (ap->max_n1 == 0) return INFLLM_OK;
    }
    if (ap->dtype == INFLLM_DTYPE_BF16) {
        if (ap->D == 128) return sel_dispatch_nw<__nv_bfloat16, 128>(NW, p, smem, gx, st);
        return sel_dispatch_nw<__nv_bfloat16, 64>(NW, p, smem, gx, st);
    }
    if (ap->D == 128) return sel_dispatch_nw<__half, 128>(NW, p, smem, gx, st);
    return sel_dispatch_nw<__half, 64>(NW, p, smem, gx, st);
}

/* ------------------------------------------------------- standalone ops ---- */

extern "C" infllm_status cuda_stage1(const infllm_attn_params *ap, const void *q, const void *c1, const void *c2,
                                     const int32_t *cu_c1, const int32_t *cu_c2, float *scores) {
    infllm_status s = cuda_check_entry(ap, "stage1_scores", {{q, "q", 16}, {c1, "c1", 16}, {c2, "c2", 16},
                                                              {scores, "scores", 4}, {cu_c1, "cu_seqlens_c1", 4},
                                                              {cu_c2, "cu_seqlens_c2", 4}});
    if (s) return s;
    cudaStream_t st = (cudaStream_t)ap->cuda_stream;
    if (ap->exact_lse && !c2) c2 = c1;
    int32_t *tmp = NULL;
    if ((!cu_c1 || (!cu_c2 && !ap->exact_lse)) && ap->num_seqs > 1) {
        CU_CHECK(cudaMallocAsync((void **)&tmp, sizeof(int32_t) * 2 * (ap->num_seqs + 1), st));
        s = cuda_offsets_launch(ap, tmp, tmp + ap->num_seqs + 1, st);
        if (s) {
            cudaFreeAsync(tmp, st);
            return s;
        }
        if (!cu_c1) cu_c1 = tmp;
        if (!cu_c2) cu_c2 = tmp + ap->num_seqs + 1;
    }
    s = cuda_select_launch(ap, q, c1, c2, cu_c1, cu_c2, scores, NULL, 0, 0, 0, st);
    if (tmp) cudaFreeAsync(tmp, st);
    return s;
}

/* one thread per (g, t, b) */
__global__ void k_block_scores(SeqDesc sd, const float *__restrict__ scores, float *__restrict__ bs, int Hkv,
                               int max_n1, int nbo, int B, int l1, int s1, int init_blocks, int local_blocks) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    int64_t n = (int64_t)Hkv * sd.total_q * nbo;
    if (i >= n) return;
    int bb = (int)(i % nbo);
    int64_t t = (i / nbo) % sd.total_q;
    int g = (int)(i / nbo / sd.total_q);
    int sb = seq_of_row(sd, t);
    int64_t q0, k0;
    int32_t lq, lk;
    seq_get(sd, sb, q0, lq, k0, lk);
    int32_t nblocks = (lk + B - 1) / B;
    int32_t n1 = d_windows(lk, l1, s1);
    int64_t pos = (int64_t)lk - lq + (t - q0);
    int64_t qb = pos / B;
    float v;
    /* forced first, padding columns too (SPEC B 6: init blocks are +inf in every column) */
    if (bb < init_blocks || (bb <= qb && bb >= qb - local_blocks)) {
        v = INFINITY;
    } else if (bb >= nblocks) {
        v = -INFINITY;
    } else {
        int64_t first = -fdiv64(-((int64_t)B * bb - l1 + 1), s1);
        int64_t last = fdiv64((int64_t)B * bb + B - 1, s1);
        if (first < 0) first = 0;
        if (last > n1 - 1) last = n1 - 1;
        v = -INFINITY;
        const float *row = scores + ((int64_t)g * sd.total_q + t) * max_n1;
        for (int64_t j = first; j <= last; j++) v = fmaxf(v, row[j]);
        if (v == INFINITY) v = __int_as_float(0x7f7fffff); /* FLT_MAX: an overflowed sum stays below forced (REF) */
    }
    bs[i] = v;
}

extern "C" infllm_status cuda_block_scores(const infllm_attn_params *ap, const float *scores, const int32_t *cu_c1,
                                           float *block_scores) {
    (void)cu_c1;
    int64_t n = (int64_t)ap->Hkv * ap->total_q * ap->nblocks_out;
    if (n == 0) return INFLLM_OK;
    cudaStream_t st = (cudaStream_t)ap->cuda_stream;
    k_block_scores<<<(unsigned)((n + 255) / 256), 256, 0, st>>>(seq_desc(ap), scores, block_scores, ap->Hkv,
                                                                ap->max_n1, ap->nblocks_out, ap->B, ap->l1, ap->s1,
                                                                ap->init_blocks, ap->local_blocks);
    CU_LAUNCH_CHECK("k_block_scores");
    return INFLLM_OK;
}

/* one warp per (g, t): candidates are the row's own blocks [wb, nblocks of its sequence), wb the first that reaches
 * its sliding window (0 without one) */
__global__ void k_topk(SeqDesc sd, const float *__restrict__ bs, int32_t *__restrict__ out, int Hkv, int nbo, int K,
                       int B, int window) {
    int64_t w = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    if (w >= (int64_t)Hkv * sd.total_q) return;
    int64_t t = w % sd.total_q;
    int sb = seq_of_row(sd, t);
    int64_t q0, k0;
    int32_t lq, lk;
    seq_get(sd, sb, q0, lq, k0, lk);
    int32_t nblocks = (lk + B - 1) / B;
    if (nblocks > nbo) nblocks = nbo;
    int64_t pos = (int64_t)lk - lq + (t - q0);
    int qb = (int)(pos / B);
    const int wb = d_window_first_block(pos, window, B); /* <= qb < nblocks */
    warp_topk(bs + w * nbo + wb, nblocks - wb, K, qb - wb, out + w * K, K, wb);
}

extern "C" infllm_status cuda_topk(const infllm_attn_params *ap, const float *block_scores, int32_t *topk_idx) {
    int64_t rows = (int64_t)ap->Hkv * ap->total_q;
    if (rows == 0 || ap->topk_out <= 0) return INFLLM_OK;
    cudaStream_t st = (cudaStream_t)ap->cuda_stream;
    k_topk<<<(unsigned)((rows * 32 + 255) / 256), 256, 0, st>>>(seq_desc(ap), block_scores, topk_idx, ap->Hkv,
                                                                ap->nblocks_out, ap->topk_out, ap->B, ap->window);
    CU_LAUNCH_CHECK("k_topk");
    return INFLLM_OK;
}

/* ------------------------------------------------ small-batch (decode) selection ---- */
/* For a handful of query rows (decode) the fused kernel would leave the GPU idle: one CTA per
 * (token, KV head) walks every kernel. Here each warp takes one 64-kernel tile instead:
 *   k_dec_lse:   per LSE-level tile and head tile, per row partial (max, sum) -> part [Hkv][R][T][nt][16][2]
 *   k_dec_score: per c1 tile, for each head tile merge the partials, P, head sum; the head tiles'
 *                sums added in order, round, global atomicMax into the block scores -> bsg [Hkv][T][nbmax]
 *   k_dec_topk:  a team of DEC_TOPK_TW warps per (KV head, row): forced blocks, top-k.
 * A token's G heads are R = ceil(G / 16) m16 head tiles (rows past G zero; G <= 16: one tile, and the
 * arithmetic is the k_cd_* kernels' of the decode cache). Before session 24: 16 % G == 0 only. */
struct DecParams {
    const void *q, *c1, *c2;
    const int32_t *cu_c1, *cu_c2;
    SeqDesc sd;
    int Hq, Hkv, G, max_lq;
    float scale_log2;
    int l1, s1, l2, s2, B, init_blocks, local_blocks, K, topk_out, exact, round_bf16;
    int window; /* sliding key window (0: none): as SelParams' */
    int filter_sparse, mode, dense_len;
    int ntL;      /* LSE-level tiles (max over sequences) */
    int R;        /* head tiles of a group, ceil(G / 16) */
    float *part;  /* [Hkv][R][total_q][ntL][16][2] */
    float *bsg;   /* [Hkv][total_q][nbmax], zeroed */
    int nbmax;
    int32_t *topk;
};

template <int D> struct DecSmem {
    uint16_t q[16 * D];
    uint16_t c[64 * D];
};

/* the row's token: grid.y = seq * max_lq + i */
__device__ __forceinline__ bool dec_row(const DecParams &p, int64_t &q0, int32_t &lq, int64_t &k0, int32_t &lk,
                                        int &i, int &b) {
    b = blockIdx.y / p.max_lq;
    i = blockIdx.y % p.max_lq;
    seq_get(p.sd, b, q0, lq, k0, lk);
    if (i >= lq) return false;
    if (p.filter_sparse && !d_seq_sparse(p.mode, p.dense_len, lk)) return false;
    return true;
}

template <typename T, int D>
__device__ __forceinline__ void dec_tile_scores(const DecParams &p, DecSmem<D> &sm, int64_t q0, int i, int g, int h,
                                                const uint16_t *cbase, int nvalid, float (&s)[8][4]) {
    warp_q16_issue<D>(sm.q, sm.c, q_head_tile<D>(p, q0 + i, g, h), p.G - 16 * h, cbase, (int64_t)p.Hkv * D, nvalid);
    warp_q16_mma<T, D>(sm.q, sm.c, s);
}

template <typename T, int D> __global__ void __launch_bounds__(32) k_dec_lse(DecParams p) {
    __shared__ __align__(16) DecSmem<D> sm;
    int64_t q0, k0;
    int32_t lq, lk;
    int i, b;
    if (!dec_row(p, q0, lq, k0, lk, i, b)) return;
    /* grid.z = Hkv R: a head tile each, z = g R + h */
    const int z = blockIdx.z, g = z / p.R, h = z - g * p.R, t = blockIdx.x, lane = threadIdx.x, gid = lane >> 2,
              tig = lane & 3;
    int64_t pos = (int64_t)lk - lq + i;
    if (pos / p.B + 1 <= p.K) return;
    int32_t n1 = d_windows(lk, p.l1, p.s1), n2 = d_windows(lk, p.l2, p.s2);
    int nL = p.exact ? n1 : n2, lL = p.exact ? p.l1 : p.l2, sL = p.exact ? p.s1 : p.s2;
    int vis = d_visible(pos, lL, sL, nL);
    float *part = p.part + (((int64_t)z * p.sd.total_q + q0 + i) * p.ntL + t) * 32;
    if (64 * t >= vis) {
        if (lane < 16) {
            part[2 * lane] = -INFINITY;
            part[2 * lane + 1] = 0.f;
        }
        return;
    }
    int64_t cL0 = p.exact ? (p.cu_c1 ? p.cu_c1[b] : 0) : (p.cu_c2 ? p.cu_c2[b] : 0);
    const uint16_t *cL = (const uint16_t *)(p.exact ? p.c1 : p.c2);
    float s[8][4];
    dec_tile_scores<T, D>(p, sm, q0, i, g, h, cL + ((cL0 + 64 * t) * p.Hkv + g) * D, vis - 64 * t, s);
#pragma unroll
    for (int ri = 0; ri < 2; ri++) {
        float mx = tile_row_scale_max(s, ri, 64 * t, tig, vis, p.scale_log2);
        float mu = mx == -INFINITY ? 0.f : mx, acc = tile_row_exp2_sum(s, ri, mu);
        acc = quad_sum(acc);
        if (tig == 0) {
            int r = gid + 8 * ri;
            part[2 * r] = mx;
            part[2 * r + 1] = acc;
        }
    }
}

template <typename T, int D> __global__ void __launch_bounds__(32) k_dec_score(DecParams p) {
    __shared__ __align__(16) DecSmem<D> sm;
    int64_t q0, k0;
    int32_t lq, lk;
    int i, b;
    if (!dec_row(p, q0, lq, k0, lk, i, b)) return;
    const int g = blockIdx.z, t = blockIdx.x, lane = threadIdx.x, gid = lane >> 2, tig = lane & 3;
    int64_t pos = (int64_t)lk - lq + i;
    int qb = (int)(pos / p.B);
    if (qb + 1 <= p.K) return;
    int32_t n1 = d_windows(lk, p.l1, p.s1), n2 = d_windows(lk, p.l2, p.s2);
    int vis1 = d_visible(pos, p.l1, p.s1, n1);
    if (64 * t >= vis1) return; /* invisible kernels score 0 = the zeroed block scores */
    /* a tile wholly before the first kernel that meets the row's window first block: only blocks that are no
     * candidates */
    if (64 * t + 64 <= sel_pass2_first_kernel(pos, p.window, p.B, p.l1, p.s1)) return;
    int nL = p.exact ? n1 : n2, lL = p.exact ? p.l1 : p.l2, sL = p.exact ? p.s1 : p.s2;
    int ntl = (d_visible(pos, lL, sL, nL) + 63) / 64;
    int64_t c10 = p.cu_c1 ? p.cu_c1[b] : 0;
    float s[8][4];
    /* head sums over the G rows of the token, head tile by head tile (rows past G are zero): lane
     * (gid, tig) max-pools the sums of its columns 8 gid + 2 tig (+1) */
    float keep[2] = {0.f, 0.f};
    for (int h = 0; h < p.R; h++) {
        const float2 *part = (const float2 *)p.part + (((int64_t)g * p.R + h) * p.sd.total_q + q0 + i) * p.ntL * 16;
        const float lse2[2] = {row_lse2(part + gid, ntl, 16 * h + gid < p.G),
                               row_lse2(part + gid + 8, ntl, 16 * h + gid + 8 < p.G)};
        if (h == 0)
            dec_tile_scores<T, D>(p, sm, q0, i, g, 0, (const uint16_t *)p.c1 + ((c10 + 64 * t) * p.Hkv + g) * D,
                                  vis1 - 64 * t, s);
        else
            warp_q16_next_tile<T, D>(sm.q, sm.c, q_head_tile<D>(p, q0 + i, g, h), p.G - 16 * h, s);
        tile_head_sum_add(s, 64 * t, tig, gid, vis1, p.scale_log2, lse2, keep);
    }
    int *bs = (int *)p.bsg + ((int64_t)g * p.sd.total_q + q0 + i) * p.nbmax;
    pool_kernels(keep, 64 * t, gid, tig, n1, p.s1, p.l1, p.B, qb, p.round_bf16, bs, 0);
}

/* k_dec_lse4 / k_dec_score4: k_dec_lse / k_dec_score for calls of 4 or more tokens a sequence,
 * DEC_SEL_TOKENS consecutive tokens of one sequence a CTA, a warp each, sharing the compressed-key
 * tile (one copy into shared memory for 4 tokens: at 64 tokens x 128K each 16 KB c1 tile was read
 * 64 times from L2 by as many 1-warp CTAs; k_dec_score 97 -> 66 us, k_dec_lse 15.7 -> 11.4 us on the
 * H200). Each warp's arithmetic is the 1-warp kernel's (the same MMAs, partial merge and head sum), so
 * the block scores are bit-identical. grid.y = seq * ceil(max_lq / 4) + token / 4. */
#define DEC_SEL_TOKENS 4
template <int D, int TPC> struct DecSmem4 {
    uint16_t q[TPC][16 * D];
    uint16_t c[64 * D];
};

/* the CTA's sequence and first token; false: no token of the CTA is in a (sparse) sequence */
template <int TPC>
__device__ __forceinline__ bool dec_cta(const DecParams &p, int64_t &q0, int32_t &lq, int64_t &k0, int32_t &lk,
                                        int &i0, int &b) {
    const int nyq = (p.max_lq + TPC - 1) / TPC;
    b = blockIdx.y / nyq;
    i0 = (blockIdx.y % nyq) * TPC;
    seq_get(p.sd, b, q0, lq, k0, lk);
    if (i0 >= lq) return false;
    if (p.filter_sparse && !d_seq_sparse(p.mode, p.dense_len, lk)) return false;
    return true;
}

/* every thread: copy the tile (rows < nvalid, the CTA's last token's count: counts grow with the
 * position) and this warp's token's Q (need false: zeros); the caller waits and syncs the CTA */
template <int D, int TPC>
__device__ __forceinline__ void dec_tile_load(const DecParams &p, DecSmem4<D, TPC> &sm, int64_t q0, int i, int g,
                                              int h, bool need, const uint16_t *cbase, int nvalid) {
    const int warp = threadIdx.x >> 5;
    cta_q16_issue<D, 32 * TPC>(sm.q[warp], sm.c, need ? q_head_tile<D>(p, q0 + i, g, h) : NULL, p.G - 16 * h, cbase,
                               (int64_t)p.Hkv * D, nvalid);
}

template <typename T, int D> __global__ void __launch_bounds__(32 * DEC_SEL_TOKENS) k_dec_lse4(DecParams p) {
    constexpr int TPC = DEC_SEL_TOKENS;
    __shared__ __align__(16) DecSmem4<D, TPC> sm;
    int64_t q0, k0;
    int32_t lq, lk;
    int i0, b;
    if (!dec_cta<TPC>(p, q0, lq, k0, lk, i0, b)) return;
    /* grid.z = Hkv R: a head tile each, z = g R + h */
    const int z = blockIdx.z, g = z / p.R, h = z - g * p.R, t = blockIdx.x, warp = threadIdx.x >> 5,
              lane = threadIdx.x & 31, gid = lane >> 2, tig = lane & 3;
    const int i_last = min(i0 + TPC, lq) - 1, i = i0 + warp;
    const int64_t pos_last = (int64_t)lk - lq + i_last, pos = (int64_t)lk - lq + i;
    if (pos_last / p.B + 1 <= p.K) return; /* no token of the CTA selects (the first ones never do before it) */
    int32_t n1 = d_windows(lk, p.l1, p.s1), n2 = d_windows(lk, p.l2, p.s2);
    int nL = p.exact ? n1 : n2, lL = p.exact ? p.l1 : p.l2, sL = p.exact ? p.s1 : p.s2;
    const bool tok = i < lq && pos / p.B + 1 > p.K;
    const int vis = tok ? d_visible(pos, lL, sL, nL) : 0, vis_last = d_visible(pos_last, lL, sL, nL);
    const bool need = tok && 64 * t < vis;
    float *part = p.part + (((int64_t)z * p.sd.total_q + q0 + i) * p.ntL + t) * 32;
    if (tok && !need && lane < 16) {
        part[2 * lane] = -INFINITY;
        part[2 * lane + 1] = 0.f;
    }
    if (64 * t >= vis_last) return; /* no warp of the CTA sees a kernel of this tile */
    int64_t cL0 = p.exact ? (p.cu_c1 ? p.cu_c1[b] : 0) : (p.cu_c2 ? p.cu_c2[b] : 0);
    const uint16_t *cL = (const uint16_t *)(p.exact ? p.c1 : p.c2);
    dec_tile_load<D, TPC>(p, sm, q0, i, g, h, need, cL + ((cL0 + 64 * t) * p.Hkv + g) * D, vis_last - 64 * t);
    cp_async_wait<0>();
    __syncthreads();
    if (!need) return;
    float s[8][4];
    warp_q16_mma<T, D>(sm.q[warp], sm.c, s);
#pragma unroll
    for (int ri = 0; ri < 2; ri++) {
        float mx = tile_row_scale_max(s, ri, 64 * t, tig, vis, p.scale_log2);
        float mu = mx == -INFINITY ? 0.f : mx, acc = tile_row_exp2_sum(s, ri, mu);
        acc = quad_sum(acc);
        if (tig == 0) {
            int r = gid + 8 * ri;
            part[2 * r] = mx;
            part[2 * r + 1] = acc;
        }
    }
}

template <typename T, int D> __global__ void __launch_bounds__(32 * DEC_SEL_TOKENS) k_dec_score4(DecParams p) {
    constexpr int TPC = DEC_SEL_TOKENS;
    __shared__ __align__(16) DecSmem4<D, TPC> sm;
    int64_t q0, k0;
    int32_t lq, lk;
    int i0, b;
    if (!dec_cta<TPC>(p, q0, lq, k0, lk, i0, b)) return;
    const int g = blockIdx.z, t = blockIdx.x, warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gid = lane >> 2,
              tig = lane & 3;
    const int i_last = min(i0 + TPC, lq) - 1, i = i0 + warp;
    const int64_t pos_last = (int64_t)lk - lq + i_last, pos = (int64_t)lk - lq + i;
    if (pos_last / p.B + 1 <= p.K) return;
    int32_t n1 = d_windows(lk, p.l1, p.s1), n2 = d_windows(lk, p.l2, p.s2);
    const int vis1_last = d_visible(pos_last, p.l1, p.s1, n1);
    if (64 * t >= vis1_last) return; /* invisible kernels score 0 = the zeroed block scores */
    /* a tile wholly before the first kernel that meets the CTA's first token's window first block (the
     * earliest): only blocks that are no token's candidates */
    if (64 * t + 64 <= sel_pass2_first_kernel((int64_t)lk - lq + i0, p.window, p.B, p.l1, p.s1)) return;
    const int qb = (int)(pos / p.B);
    const bool tok = i < lq && qb + 1 > p.K;
    const int vis1 = tok ? d_visible(pos, p.l1, p.s1, n1) : 0;
    const bool need = tok && 64 * t < vis1;
    int64_t c10 = p.cu_c1 ? p.cu_c1[b] : 0;
    dec_tile_load<D, TPC>(p, sm, q0, i, g, 0, need, (const uint16_t *)p.c1 + ((c10 + 64 * t) * p.Hkv + g) * D,
                          vis1_last - 64 * t);
    int ntl = 0;
    float lse2[2] = {0.f, 0.f};
    auto row_lses = [&](int h) { /* head tile h's row LSEs from its sub-row's partials */
        const float2 *part = (const float2 *)p.part + (((int64_t)g * p.R + h) * p.sd.total_q + q0 + i) * p.ntL * 16;
        lse2[0] = row_lse2(part + gid, ntl, 16 * h + gid < p.G);
        lse2[1] = row_lse2(part + gid + 8, ntl, 16 * h + gid + 8 < p.G);
    };
    if (need) { /* head tile 0's row LSEs, while the tile is in flight */
        int nL = p.exact ? n1 : n2, lL = p.exact ? p.l1 : p.l2, sL = p.exact ? p.s1 : p.s2;
        ntl = (d_visible(pos, lL, sL, nL) + 63) / 64;
        row_lses(0);
    }
    cp_async_wait<0>();
    __syncthreads();
    if (!need) return;
    float s[8][4];
    warp_q16_mma<T, D>(sm.q[warp], sm.c, s);
    /* head sums over the G rows of the token, head tile by head tile (rows past G are zero): lane
     * (gid, tig) max-pools the sums of its columns 8 gid + 2 tig (+1) */
    float keep[2] = {0.f, 0.f};
    tile_head_sum_add(s, 64 * t, tig, gid, vis1, p.scale_log2, lse2, keep);
    for (int h = 1; h < p.R; h++) {
        row_lses(h);
        warp_q16_next_tile<T, D>(sm.q[warp], sm.c, q_head_tile<D>(p, q0 + i, g, h), p.G - 16 * h, s);
        tile_head_sum_add(s, 64 * t, tig, gid, vis1, p.scale_log2, lse2, keep);
    }
    int *bs = (int *)p.bsg + ((int64_t)g * p.sd.total_q + q0 + i) * p.nbmax;
    pool_kernels(keep, 64 * t, gid, tig, n1, p.s1, p.l1, p.B, qb, p.round_bf16, bs, 0);
}

/* k_dec_topk: warps a CTA, and warps a row (a team: 1 or 2, sel90_topk_radix's; teams of 2 sync on
 * named barriers 4 + team) */
enum { DEC_TOPK_WARPS = 4, DEC_TOPK_TW = 2, DEC_TOPK_TEAMS = DEC_TOPK_WARPS / DEC_TOPK_TW };
enum { DEC_TOPK_TEAM_WORDS = DEC_TOPK_TW == 1 ? (int)SEL_TOPK1_WORDS : (int)SEL90_TOPK_TEAM_WORDS };
/* a team per (KV head, row): the row's keys in place (SelBlockKey) and its top-k by
 * sel90_topk_radix<DEC_TOPK_TW> (the selection kernels' routine), histograms in shared memory. Rows
 * hold nbmax slots, a multiple of 4. (Was warp_topk's 32-bit search: 33 passes over the row, 61 us
 * at 1 x 128K on the H200; one warp a row on the radix routine, session 13: 23 us.) */
__global__ void __launch_bounds__(DEC_TOPK_WARPS * 32) k_dec_topk(DecParams p) {
    __shared__ __align__(16) uint32_t sHist[DEC_TOPK_TEAMS * DEC_TOPK_TEAM_WORDS];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int team = warp / DEC_TOPK_TW, tw = warp % DEC_TOPK_TW;
    const int64_t w = (int64_t)blockIdx.x * DEC_TOPK_TEAMS + team; /* the row; the team returns as one */
    if (w >= (int64_t)p.Hkv * p.sd.total_q) return;
    int64_t t = w % p.sd.total_q;
    int sb = seq_of_row(p.sd, t);
    int64_t q0, k0;
    int32_t lq, lk;
    seq_get(p.sd, sb, q0, lq, k0, lk);
    if (p.filter_sparse && !d_seq_sparse(p.mode, p.dense_len, lk)) return;
    int64_t pos = (int64_t)lk - lq + (t - q0);
    int qb = (int)(pos / p.B);
    int32_t *row = p.topk + w * p.topk_out;
    const int wb = d_window_first_block(pos, p.window, p.B);
    if (qb + 1 <= p.K) { /* every causal block its window reaches */
        for (int c = tw * 32 + lane; c < p.topk_out; c += DEC_TOPK_TW * 32) row[c] = sel_take_all_slot(wb, qb, c);
        return;
    }
    const int e_lo = d_first_untouched_block(p.B, p.l1, p.s1, d_windows(lk, p.l1, p.s1));
    const SelBlockKey key_of{qb, p.init_blocks, p.local_blocks, e_lo, wb};
    sel90_topk_radix<DEC_TOPK_TW>(p.bsg + w * p.nbmax, qb + 1, key_of.select_k(p.K), qb, row, p.topk_out,
                                  sHist + team * DEC_TOPK_TEAM_WORDS, tw, team, key_of);
}

template <typename T, int D, int TPC>
static void dec_select_kernels(const DecParams &p, dim3 g1, dim3 g2, cudaStream_t st) {
    if (TPC == DEC_SEL_TOKENS) {
        k_dec_lse4<T, D><<<g1, 32 * TPC, 0, st>>>(p);
        k_dec_score4<T, D><<<g2, 32 * TPC, 0, st>>>(p);
    } else {
        k_dec_lse<T, D><<<g1, 32, 0, st>>>(p);
        k_dec_score<T, D><<<g2, 32, 0, st>>>(p);
    }
}

/* block-score slots of a row: all blocks of the longest sequence, rounded up to 4 (sel90_topk_radix
 * reads 4 keys a lane and zero-pads the row to a multiple of 4) */
static int64_t dec_nbmax(const infllm_attn_params *ap) {
    return ((ap->max_lk + ap->B - 1) / ap->B + 3) & ~(int64_t)3;
}

size_t cuda_dec_select_bytes(const infllm_attn_params *ap) {
    static std::atomic<int> no_dec{CUDA_ENV_UNREAD};
    if (cuda_env_int("INFLLM_CUDA_NO_DEC", &no_dec) == 1 || ap->total_q > 64 || head_tiles(ap->G) > HEAD_TILES_MAX)
        return 0;
    /* groups that divide 16 and groups above 16 take it up to 64 queries (G 32, Hkv 1, 128K keys on the H200:
     * 17 / 64 queries 2.85x / 2.05x the fused k_select's speed, session 24); the other groups below 16 fill
     * a tile with fewer than 16 heads and only up to 128 (KV head, query) rows (G 7, Hkv 4: 17 queries
     * 1.24x, 64 queries 0.88x: the fused k_select's few CTAs cost about the same at any count, these
     * kernels grow with the rows) */
    if (ap->G < 16 && 16 % ap->G != 0 && (int64_t)ap->Hkv * ap->total_q > 128) return 0;
    int64_t nL = ap->exact_lse ? d_windows(ap->max_lk, ap->l1, ap->s1) : d_windows(ap->max_lk, ap->l2, ap->s2);
    int64_t ntL = (nL + 63) / 64;
    int64_t nbmax = dec_nbmax(ap);
    const int64_t R = head_tiles(ap->G);
    return (size_t)ap->Hkv * ap->total_q * (R * (ntL > 0 ? ntL : 1) * 32 + nbmax) * sizeof(float) + 512;
}

infllm_status cuda_dec_select_launch(const infllm_attn_params *ap, const void *q, const void *c1, const void *c2,
                                     const int32_t *cu_c1, const int32_t *cu_c2, int32_t *topk, void *ws,
                                     cudaStream_t st) {
    DecParams p;
    memset(&p, 0, sizeof p);
    sel_fill_common(p, ap, q, c1, c2, cu_c1, cu_c2);
    p.max_lq = ap->max_lq;
    p.filter_sparse = 1;
    p.mode = ap->mode;
    p.dense_len = ap->dense_len;
    int64_t nL = ap->exact_lse ? d_windows(ap->max_lk, ap->l1, ap->s1) : d_windows(ap->max_lk, ap->l2, ap->s2);
    p.ntL = (int)((nL + 63) / 64);
    if (p.ntL < 1) p.ntL = 1;
    p.nbmax = (int)dec_nbmax(ap);
    p.R = head_tiles(ap->G);
    p.part = (float *)ws;
    p.bsg = p.part + (size_t)ap->Hkv * p.R * ap->total_q * p.ntL * 32;
    p.topk = topk;
    CU_CHECK(cudaMemsetAsync(p.bsg, 0, (size_t)ap->Hkv * ap->total_q * p.nbmax * sizeof(float), st));
    int nt1 = (d_windows(ap->max_lk, ap->l1, ap->s1) + 63) / 64;
    /* a CTA of 4 tokens (warps) sharing each compressed-key tile, or 1 for decode-like calls */
    const int tpc = ap->max_lq >= DEC_SEL_TOKENS ? DEC_SEL_TOKENS : 1;
    const unsigned ny = (unsigned)(ap->num_seqs * ((ap->max_lq + tpc - 1) / tpc));
    dim3 g1((unsigned)p.ntL, ny, (unsigned)(ap->Hkv * p.R));
    dim3 g2((unsigned)(nt1 > 0 ? nt1 : 1), ny, (unsigned)ap->Hkv);
    bool bf = ap->dtype == INFLLM_DTYPE_BF16;
    if (tpc == DEC_SEL_TOKENS) {
        if (ap->D == 128) {
            if (bf) dec_select_kernels<__nv_bfloat16, 128, DEC_SEL_TOKENS>(p, g1, g2, st);
            else dec_select_kernels<__half, 128, DEC_SEL_TOKENS>(p, g1, g2, st);
        } else {
            if (bf) dec_select_kernels<__nv_bfloat16, 64, DEC_SEL_TOKENS>(p, g1, g2, st);
            else dec_select_kernels<__half, 64, DEC_SEL_TOKENS>(p, g1, g2, st);
        }
    } else {
        if (ap->D == 128) {
            if (bf) dec_select_kernels<__nv_bfloat16, 128, 1>(p, g1, g2, st);
            else dec_select_kernels<__half, 128, 1>(p, g1, g2, st);
        } else {
            if (bf) dec_select_kernels<__nv_bfloat16, 64, 1>(p, g1, g2, st);
            else dec_select_kernels<__half, 64, 1>(p, g1, g2, st);
        }
    }
    CU_LAUNCH_CHECK("k_dec_lse/k_dec_score");
    int64_t rows = (int64_t)ap->Hkv * ap->total_q;
    k_dec_topk<<<(unsigned)((rows + DEC_TOPK_TEAMS - 1) / DEC_TOPK_TEAMS), DEC_TOPK_WARPS * 32, 0, st>>>(p);
    CU_LAUNCH_CHECK("k_dec_topk");
    return INFLLM_OK;
}
