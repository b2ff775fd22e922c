/*
 * flash_list.cuh: k_flash90's block lists (cuda_attn.cu, LIST): a tile's per-token selections as sorted
 * 16-bit block lists, each row of the tile walking its token's list with a cursor. In their own header so
 * that tests/test_topk_host.cpp also runs them on the host, against sets (CI has no GPU; on the GPU
 * a wrong membership shows in the attention output only where the row's chunk would have mattered).
 *
 * A list row is the token's distinct selected blocks in increasing order, then 0xffff up to column
 * topk_cols (unusable entries and duplicates: a block selected twice is selected, as with the bitmaps),
 * then two end marks 0xffff at columns topk_cols and topk_cols + 1: list_w >= topk_cols + 2 entries a
 * row. Block indices are below 0xffff (the host takes lists only with fewer than 65,535 blocks), so a
 * cursor never passes the first end mark, and flash_list_step's second load (the entry after the cursor)
 * stays in the row.
 */
#pragma once
#include <stdint.h>

/* Sorts the rows uns[ntok][K] into list[ntok][list_w], drops duplicate entries and writes the end marks.
 * Every thread of the CTA (NT of them, whole warps) calls it with its tid; uns and list are shared memory
 * and do not overlap. No barrier inside (warp collectives only): uns must be complete before (a barrier),
 * and list is complete after the caller's next barrier. A warp a token: a row that is strictly increasing
 * but for its 0xffff tail (the selection kernels write their rows ascending with the unusable entries at
 * the tail, which map to 0xffff: SPEC A, the API's topk_idx) is copied, K reads an entry fewer than a
 * sort; any other row (a caller's, in any order or with a block twice) is rank-sorted: an entry goes to
 * the number of its row's entries below it, ties by column, a permutation, O(K) broadcast reads an entry
 * (session 27 sorted every row that way: 0.6-0.7x at G 1, where a tile holds 128 tokens), and then
 * compacted: each block once, 0xffff after. */
template <int NT>
__device__ inline void flash_list_sort(const uint16_t *uns, uint16_t *list, int ntok, int K, int list_w, int tid) {
    static_assert(NT % 32 == 0, "flash_list_sort: whole warps");
    const int lane = tid & 31;
    for (int tt = tid >> 5; tt < ntok; tt += NT / 32) { /* warp-uniform */
        const uint16_t *row = uns + tt * K;
        uint16_t *out = list + tt * list_w;
        bool disorder = false;
        for (int kk = lane; kk + 1 < K; kk += 32) {
            const uint32_t a = row[kk], b = row[kk + 1];
            disorder |= a > b || (a == b && a != 0xffffu);
        }
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
            __syncwarp();
            /* compaction in place, 32 entries a step: an entry stays if it differs from the one before it
             * (read before any write of the step; writes go left, never past the step's own entries) */
            int kept = 0;
            uint32_t before = 0x10000u; /* the previous step's last entry, as read */
            for (int k0 = 0; k0 < K; k0 += 32) {
                const int kk = k0 + lane;
                const uint32_t v = kk < K ? out[kk] : 0xffffu;
                uint32_t prev = __shfl_up_sync(0xffffffffu, v, 1);
                if (lane == 0) prev = before;
                const bool keep = kk < K && v != 0xffffu && v != prev;
                const unsigned mask = __ballot_sync(0xffffffffu, keep);
                before = __shfl_sync(0xffffffffu, v, 31);
                __syncwarp();
                if (keep) out[kept + __popc(mask & ((1u << lane) - 1u))] = (uint16_t)v;
                kept += __popc(mask);
                __syncwarp();
            }
            for (int kk = kept + lane; kk < K; kk += 32) out[kk] = (uint16_t)0xffffu;
        }
        if (lane == 0) out[K] = out[K + 1] = (uint16_t)0xffffu;
    }
}

/* A row's cursor (an index into the list rows) for a walk that starts at block blk0: the row's first
 * entry >= blk0. Once a row per CTA (a split's first chunk). */
__device__ __forceinline__ int flash_list_seek(const uint16_t *list, int row_start, uint32_t blk0) {
    int c = row_start;
    while (list[c] < blk0) c++;
    return c;
}

/* Whether the row whose cursor is *cur selected block blk, for a walk in non-decreasing blk that tests
 * every block of the row at or after its start (k_flash90: a row's blocks are chunks its warpgroup walks;
 * several chunks of one block test the same blk) and whose cursor came from flash_list_seek. Then the
 * entries before blk from the cursor on are at most one, the previous tested block's, so the test is
 * two independent loads and no loop: the entry at the cursor, or if that is below blk the next one
 * (distinct entries: flash_list_sort dropped the duplicates). Session 28's walk was a loop of dependent
 * loads a row between S's issue and its wait (0.95-0.97x against the bitmaps at G 16). The cursor stops
 * at the first end mark at the latest (0xffff is below no block); e1 is then the second end mark. With
 * one end mark e1 was the next row's first entry (or the chunk bitmaps after the lists), and the answer
 * below took it: a false "selected" wherever it equalled blk (CI's test_topk_host, a 1-column tile,
 * before any GPU run met it). */
__device__ __forceinline__ bool flash_list_step(const uint16_t *list, int *cur, uint32_t blk) {
    const int c = *cur;
    const uint32_t e0 = list[c], e1 = list[c + 1];
    *cur = c + (int)(e0 < blk);
    /* e0 < e1 but at the 0xffff tail and the end marks (distinct entries), so e1 == blk only where
     * e0 < blk: no select, which ptxas turned into a second load conditional on the first's compare */
    return (e0 == blk) | (e1 == blk);
}
