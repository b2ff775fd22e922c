/*
 * group_tokens.cuh: the greedy token grouping of one stage-2 window (k_group_tokens, cuda_attn.cu) as a
 * routine of a CTA of NT threads, in its own header so that tests/test_topk_host.cpp also runs it on the
 * host (tests/simt_host.h) against a plain greedy: the grouping never changes a row's result, only
 * which rows share a tile, so the GPU grid cannot tell a wrong grouping from a right one.
 *
 * The rule (bench/stage2_union.py's greedy_groups): tiles of TT tokens are formed one after the other;
 * a tile starts at the lowest free token and adds, one at a time, the free token whose chunks add the
 * fewest to the tile's union (the lowest token on ties). Needs the warp and block intrinsics.
 *
 * Each free token's growth |bm[t] & ~u| is kept in grow[t] and updated as the union grows: when token
 * j joins, grow[t] -= |bm[t] & (bm[j] & ~u)|, over the words where the union changed only (a list that
 * warp 0 builds). Recomputing every growth over all words for every slot (session 5's kernel, a warp a
 * token) cost W x ncw words a slot, W^2 ncw a window: at G 4 (128-token windows, 64 words at 128K) it
 * was on the order of milliseconds. A thread a token reads its own bitmap row, so rows are stored at an
 * odd stride (group_stride) and a warp's 32 rows fall in 32 banks.
 */
#pragma once
#include <limits.h>
#include <stdint.h>

/* words between two tokens' chunk bitmaps in shared memory: odd, so that 32 consecutive rows read at the
 * same word hit 32 banks */
__host__ __device__ inline int group_stride(int ncw) { return ncw | 1; }

/* shared memory of one window of W tokens with ncw bitmap words each (group_window's arrays, in the order
 * k_group_tokens lays them out): bm [W][stride], u, dval, nzw [ncw], grow, order [W], one int */
__host__ __device__ inline size_t group_window_smem(int W, int ncw) {
    return ((size_t)W * group_stride(ncw) + 3 * (size_t)ncw + 2 * (size_t)W + 1) * sizeof(uint32_t);
}

/* Groups the nw (<= W) tokens of a window whose chunk bitmaps are bm[t * stride .. + ncw) into tiles of
 * TT: order[slot] = the token placed at that slot (tile slot / TT). Every thread of the CTA (NT of them,
 * a multiple of 32) calls it; the arrays are shared memory: u, dval, nzw of ncw entries, grow and order
 * of nw, sh of 1. Two barriers a slot; warp 0 alone picks the token and lists the union's changed words,
 * then every thread updates the growth of its tokens.
 * min_gain (percent, 0: off): keep the consecutive tiles (order[slot] = slot) unless the greedy tiles'
 * unions add up to at most (100 - min_gain)% of the consecutive tiles' (an experiment of session 25: on a
 * layer whose neighbouring tokens select alike, grouping took longer although its unions were 4-9% smaller;
 * INFLLM_CUDA_GROUP_MIN_GAIN). */
template <int NT>
__device__ inline void group_window(const uint32_t *bm, int stride, int ncw, int nw, int TT, uint32_t *u,
                                    uint32_t *dval, int *nzw, int *grow, int *order, int *sh, int min_gain = 0) {
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    for (int t = tid; t < nw; t += NT) grow[t] = 0; /* free (INT_MAX: taken) */
    /* warp 0, per lane: the bits the union took over all slots, so the greedy tiles' unions summed (min_gain) */
    int greedy_bits = 0;
    __syncthreads();
    for (int slot = 0; slot < nw; slot++) {
        const bool first = slot % TT == 0;
        if (warp == 0) {
            int best = -1;
            if (first) { /* a new tile: the lowest free token */
                for (int base = 0; base < nw && best < 0; base += 32) {
                    const unsigned m = __ballot_sync(0xffffffffu, base + lane < nw && grow[base + lane] != INT_MAX);
                    if (m) best = base + __ffs((int)m) - 1;
                }
            } else { /* the free token that grows the union least, the lowest on ties */
                int bv = INT_MAX, bi = nw;
                for (int t = lane; t < nw; t += 32)
                    if (grow[t] < bv) bv = grow[t], bi = t;
#pragma unroll
                for (int o = 16; o; o >>= 1) {
                    const int ov = __shfl_xor_sync(0xffffffffu, bv, o), oi = __shfl_xor_sync(0xffffffffu, bi, o);
                    if (ov < bv || (ov == bv && oi < bi)) bv = ov, bi = oi;
                }
                best = bi;
            }
            /* the union takes best's chunks; the words that changed, and their new bits, listed in order */
            int nnz = 0;
            for (int w0 = 0; w0 < ncw; w0 += 32) {
                const int w = w0 + lane;
                uint32_t d = 0u;
                if (w < ncw) {
                    const uint32_t b = bm[(size_t)best * stride + w], old = first ? 0u : u[w];
                    d = b & ~old;
                    u[w] = old | b;
                    greedy_bits += __popc(d);
                }
                const unsigned m = __ballot_sync(0xffffffffu, d != 0u);
                if (d) {
                    const int at = nnz + __popc(m & ((1u << lane) - 1u));
                    nzw[at] = w;
                    dval[at] = d;
                }
                nnz += __popc(m);
            }
            if (lane == 0) {
                sh[0] = nnz;
                order[slot] = best;
                grow[best] = INT_MAX;
            }
        }
        __syncthreads();
        if (first) { /* every free token's growth against the new tile's union, over all words */
            for (int t = tid; t < nw; t += NT) {
                if (grow[t] == INT_MAX) continue;
                const uint32_t *row = bm + (size_t)t * stride;
                int c = 0;
                for (int w = 0; w < ncw; w++) c += __popc(row[w] & ~u[w]);
                grow[t] = c;
            }
        } else { /* less what the union just took */
            const int nnz = sh[0];
            for (int t = tid; t < nw; t += NT) {
                if (grow[t] == INT_MAX) continue;
                const uint32_t *row = bm + (size_t)t * stride;
                int c = grow[t];
                for (int i = 0; i < nnz; i++) c -= __popc(row[nzw[i]] & dval[i]);
                grow[t] = c;
            }
        }
        __syncthreads();
    }
    if (min_gain > 0) { /* the consecutive tiles' unions: a warp a tile, lanes over the words */
        const int tiles = (nw + TT - 1) / TT;
        for (int ti = warp; ti < tiles; ti += NT / 32) {
            int c = 0;
            for (int w = lane; w < ncw; w += 32) {
                uint32_t x = 0u;
                for (int t = ti * TT; t < min(ti * TT + TT, nw); t++) x |= bm[(size_t)t * stride + w];
                c += __popc(x);
            }
            c = __reduce_add_sync(0xffffffffu, c);
            if (lane == 0) grow[ti] = c; /* grow is free now: the tiles' unions */
        }
        __syncthreads();
        if (warp == 0) {
            int cons = 0;
            for (int ti = lane; ti < tiles; ti += 32) cons += grow[ti];
            cons = __reduce_add_sync(0xffffffffu, cons);
            const int greedy = __reduce_add_sync(0xffffffffu, greedy_bits);
            /* greedy * 100 > cons * (100 - min_gain): not worth it, consecutive (warp 0 decides, all follow) */
            if (lane == 0) sh[0] = (int64_t)greedy * 100 > (int64_t)cons * (100 - min_gain);
        }
        __syncthreads();
        if (sh[0])
            for (int t = tid; t < nw; t += NT) order[t] = t;
        __syncthreads();
    }
}
