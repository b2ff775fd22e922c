/*
 * sel_seg.cuh: the block arithmetic of k_select90's segments (SEG, cuda_select.cu) that its host plan
 * (sel90_seg_plan) and the kernel share, and pass 2's kernel range (sel_pass2_kernels, sel_pass2_first_kernel).
 * Host and device;
 * tests/test_topk_host.cpp checks on the host, over random geometries, that every block the kernel's
 * max-pool writes and every row its finalize reads stays in the slots these give (CI has no GPU).
 */
#pragma once
#include <stdint.h>

/* The c1 kernels pass 2 of a fused selection (top-k, not the score matrix) must score for a tile
 * whose last token is at pos_last: kernel j touches blocks s1 j / B .. (s1 j + l1 - 1) / B, and from
 * block qb_last - local_blocks on every block is forced for every token of the tile (a token's
 * forced local blocks start at its qb - local_blocks, and qb <= qb_last), so finalize overwrites
 * those blocks' scores with +inf whatever they are: pass 2 stops at the first kernel whose first
 * block is there (about the last tile's worth of kernels fewer). k_select90 caps its tile count;
 * k_select caps its maxvis1 instead (capping its loop made ptxas spill 40 bytes in the 4-warp
 * instances). */
__host__ __device__ __forceinline__ int sel_pass2_kernels(int maxvis1, int64_t pos_last, int B, int s1, int local_blocks) {
    /* positions < 2^31 (sequence lengths are int32): 32-bit unsigned math */
    const int fb = (int)((uint32_t)pos_last / (uint32_t)B) - local_blocks;
    if (fb <= 0) return maxvis1;
    const uint32_t j = ((uint32_t)fb * (uint32_t)B + (uint32_t)s1 - 1u) / (uint32_t)s1;
    return j < (uint32_t)maxvis1 ? (int)j : maxvis1;
}

/* Under a sliding window (0: none) a fused selection's tokens take no block before their window's first block,
 * and a tile's first token (at pos0) has the earliest: pass 2 need score no c1 kernel before the first one that
 * meets that block, ceil((B wb - l1 + 1) / s1) (kernel j covers keys s1 j .. s1 j + l1 - 1), 0 where that is
 * negative. The blocks before the window keep a partial or zero score that their key (SelBlockKey: 0 before wb)
 * never reads. Pass 1 (the LSE) stays whole: stage 1's scores do not depend on the window. */
__host__ __device__ __forceinline__ int sel_pass2_first_kernel(int64_t pos0, int window, int B, int l1, int s1) {
    if (window <= 0 || pos0 - window + 1 <= 0) return 0;
    const int64_t num = (pos0 - window + 1) / B * B - l1 + 1;
    return num <= 0 ? 0 : (int)((num + s1 - 1) / s1);
}

/* SEG, with pass-2 tiles of ct c1 kernels (stride s1, size l1) over blocks of B keys:
 * the first block that tile t's kernels meet; at the end of tile t - 1 every block below it is final
 * (segment j's row starts at block sel_seg_block(j ts)) */
__host__ __device__ __forceinline__ int sel_seg_block(int64_t t, int ct, int s1, int B) {
    return (int)((int64_t)s1 * ct * t / B);
}
/* the window of a segment of ts tiles, in blocks: the blocks its kernels meet from its first block (s1 ct ts
 * / B + 1, and up to (l1 - 1) / B + 1 more that its last kernels reach past its end), and, in a token's last
 * segment, every block up to the token's own (pass 2 stops before the kernels whose blocks are all forced
 * local ones: up to local_blocks + 1 past the last tile's) */
__host__ __device__ __forceinline__ int64_t sel_seg_window(int64_t ts, int ct, int s1, int l1, int B, int local_blocks) {
    return ((int64_t)s1 * ct * ts + l1) / B + local_blocks + 4;
}
/* the blocks from the next segment's first block on that a segment's last kernels can reach (kept across
 * its end): at most (l1 - 1 - s1) / B + 2 <= (l1 + B - 1) / B + 1 */
__host__ __device__ __forceinline__ int sel_seg_npart(int l1, int B) { return (l1 + B - 1) / B + 2; }
/* a token's row: K carried keys, the window, 4 slots for the finalize's rounding to groups of 4; = 8 (mod
 * 32), so that the max-pool's atomics of one instruction (4 tokens x 2 blocks) fall in distinct banks */
__host__ __device__ __forceinline__ int64_t sel_seg_stride(int64_t K, int64_t window) {
    return (K + window + 4 + 23) / 32 * 32 + 8;
}
/* the fewest tiles a segment that end at a block >= K (so that segment 0 leaves K blocks to carry) */
__host__ __device__ __forceinline__ int64_t sel_seg_ts_min(int64_t K, int ct, int s1, int B) {
    return (K * B + (int64_t)s1 * ct - 1) / ((int64_t)s1 * ct);
}
