/*
 * flash_list.cuh: k_flash90's block lists (cuda_attn.cu, LIST): a tile's per-token selections as sorted
 * 16-bit block lists, each row of the tile walking its token's list with a cursor. In their own header so
 * that tests/test_topk_host.cpp also runs them on the host, against sets (CI has no GPU; on the GPU
 * a wrong membership shows in the attention output only where the row's chunk would have mattered).
 *
 * A list row is the token's topk_cols selected blocks in increasing order (0xffff for unusable entries,
 * which sort last), then an end mark 0xffff at column topk_cols: list_w >= topk_cols + 1 entries a row.
 * Block indices are below 0xffff (the host takes lists only with fewer than 65,535 blocks), so a cursor
 * never passes the end mark.
 */
#pragma once
#include <stdint.h>

/* Sorts the rows uns[ntok][K] into list[ntok][list_w] and writes the end marks. Every thread of the CTA
 * (NT of them, whole warps) calls it with its tid; uns and list are shared memory and do not overlap. No
 * barrier inside (warp collectives only): uns must be complete before (a barrier), and list is complete
 * after the caller's next barrier. A warp a token: a row that is already in order (the selection kernels
 * write their rows ascending with the unusable entries at the tail, which map to 0xffff: SPEC A, the
 * API's topk_idx) is copied, K reads an entry fewer than a sort; any other row is rank-sorted: an entry
 * goes to the number of its row's entries below it, ties by column, a permutation; O(K) broadcast reads
 * an entry (session 27 sorted every row that way: 0.6-0.7x at G 1, where a tile holds 128 tokens). */
template <int NT>
__device__ inline void flash_list_sort(const uint16_t *uns, uint16_t *list, int ntok, int K, int list_w, int tid) {
    static_assert(NT % 32 == 0, "flash_list_sort: whole warps");
    const int lane = tid & 31;
    for (int tt = tid >> 5; tt < ntok; tt += NT / 32) { /* warp-uniform */
        const uint16_t *row = uns + tt * K;
        uint16_t *out = list + tt * list_w;
        bool disorder = false;
        for (int kk = lane; kk + 1 < K; kk += 32) disorder |= row[kk] > row[kk + 1];
        if (!__any_sync(0xffffffffu, disorder)) {
            for (int kk = lane; kk < K; kk += 32) out[kk] = row[kk];
        } else {
            for (int kk = lane; kk < K; kk += 32) {
                const uint32_t v = row[kk];
                int rank = 0;
                for (int k2 = 0; k2 < K; k2++) {
                    const uint32_t u = row[k2];
                    rank += u < v || (u == v && k2 < kk);
                }
                out[rank] = (uint16_t)v;
            }
        }
        if (lane == 0) out[K] = (uint16_t)0xffffu;
    }
}

/* Whether the row whose cursor is *cur (an index into the list rows, at or before the first entry >= blk)
 * selected block blk: the cursor moves past the entries below blk and stays on the first entry >= blk.
 * Calls with non-decreasing blk per cursor (the union's chunks in increasing order; a chunk skipped is
 * caught up at the next call). */
__device__ __forceinline__ bool flash_list_selects(const uint16_t *list, int *cur, uint32_t blk) {
    int c = *cur;
    uint32_t e = list[c];
    while (e < blk) e = list[++c];
    *cur = c;
    return e == blk;
}
