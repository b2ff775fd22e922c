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

/* Sorts the unsorted rows uns[ntok][K] into list[ntok][list_w] and writes the end marks. Every thread of
 * the CTA (NT of them) calls it with its tid; uns and list are shared memory and do not overlap. No
 * barrier inside: uns must be complete before (a barrier), and list is complete after the caller's next
 * barrier. Rank sort: an entry goes to the number of entries of its row below it, ties by column, a
 * permutation; O(K) reads an entry, the lanes of a warp mostly on one row (broadcasts). */
template <int NT>
__device__ inline void flash_list_sort(const uint16_t *uns, uint16_t *list, int ntok, int K, int list_w, int tid) {
    for (int i = tid; i < ntok * K; i += NT) {
        const int tt = i / K, kk = i % K;
        const uint16_t *row = uns + tt * K;
        const uint32_t v = row[kk];
        int rank = 0;
        for (int k2 = 0; k2 < K; k2++) {
            const uint32_t u = row[k2];
            rank += u < v || (u == v && k2 < kk);
        }
        list[tt * list_w + rank] = (uint16_t)v;
    }
    for (int tt = tid; tt < ntok; tt += NT) list[tt * list_w + K] = (uint16_t)0xffffu;
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
