/*
 * sel_topk.cuh: the selection's top-k finalize, sel90_topk_radix (a row's k largest block scores by a
 * byte radix select, by a team of 1 or 2 warps), and the block keys it selects on. Shared by k_select,
 * k_select90 and k_dec_topk (cuda_select.cu), and compiled on the host by tests/test_topk_host.cpp
 * (one ucontext a lane, tests/simt_host.h) against a plain sort, so that CI, which has no GPU, runs
 * the device routine's own source. Needs named_bar_sync (cuda_sm90.cuh, or the host shim) and the
 * warp intrinsics.
 */
#pragma once
#include <stdint.h>

#include "f2key.cuh"

/* A team of TW warps (1 or 2) that finalizes one row: team_bar syncs the team. Pairs use named
 * barriers 4..11 (1..3 order the main loop's issue); each case's ID is a compile-time constant (a
 * runtime ID makes ptxas reserve all 16 barriers and grow the registers, session 10). */
template <int TW> __device__ __forceinline__ void team_bar(int team) {
    if (TW == 1) {
        __syncwarp();
        return;
    }
    switch (team) {
    case 0: named_bar_sync<4, 64>(); break;
    case 1: named_bar_sync<5, 64>(); break;
    case 2: named_bar_sync<6, 64>(); break;
    case 3: named_bar_sync<7, 64>(); break;
    case 4: named_bar_sync<8, 64>(); break;
    case 5: named_bar_sync<9, 64>(); break;
    case 6: named_bar_sync<10, 64>(); break;
    default: named_bar_sync<11, 64>(); break;
    }
}
/* shared memory of one team: per warp 2 histograms of 256 bins (radix passes alternate between
 * them) + 32 exchange words */
enum { SEL90_TOPK_HIST = 2 * 256, SEL90_TOPK_TEAM_WORDS = 2 * SEL90_TOPK_HIST + 32 };
/* the same for a team of one warp (k_select): its 2 histograms + the exchange words */
enum { SEL_TOPK1_WORDS = SEL90_TOPK_HIST + 32 };

/* How many blocks a row of blocks 0..n-1 whose candidates start at block wb (SelBlockKey.wb) selects under a
 * top-k of K: every candidate where they are no more than K (REF's min(K, candidates)). The finalize's k for a
 * row's whole selection (not for a segment's carry, which keeps K keys): SelBlockKey::select_k */
__host__ __device__ __forceinline__ int sel_window_k(int K, int n, int wb) { return n - wb < K ? n - wb : K; }

/* Slot c of the row of a query in block qb that takes every block its window reaches (qb + 1 <= K: no top-k),
 * the window's first block wb on: wb + c, -1 past qb. k_select, k_select90 and k_dec_topk write these rows. */
__device__ __forceinline__ int32_t sel_take_all_slot(int wb, int qb, int c) { return wb + c <= qb ? wb + c : -1; }

/* The top-k key of block bb of a row whose query sits in block qb (bb <= qb), from its block score:
 * 0 for a block before wb, the row's first candidate (a sliding window's first block,
 * infllm_window_first_block; 0 without one): below every candidate's key, as the kernels' block
 * scores hold no NaN (their max-pool skips it), so a candidate's key is at least f2key(-inf) > 0, and
 * the caller selects at most the n - wb candidates (sel_window_k); then
 * f2key(+inf) for a forced block (one of the first init_blocks, or of the local_blocks before qb),
 * f2key(-inf) for a block no c1 kernel touches (from e_lo = d_first_untouched_block on), else
 * f2key of the score, at most f2key(FLT_MAX) (an overflowed, +inf score ranks below the forced blocks).
 * k_select's, k_select90's and k_dec_topk's finalize (sel90_topk_radix's key_of). */
struct SelBlockKey {
    int qb, init_blocks, local_blocks, e_lo, wb;
    __device__ __forceinline__ uint32_t operator()(int bb, float score) const {
        /* selects, not branches: the finalize's key pass runs this for the keys of groups with a forced,
         * an empty or an excluded block */
        const bool forced = bb < init_blocks || bb >= qb - local_blocks;
        /* a free block's key at most f2key(FLT_MAX): an overflowed stage-1 sum (+inf) never ties with the
         * forced blocks (REF's block score is FLT_MAX there) */
        const uint32_t key = bb >= e_lo ? 0x007fffffu /* f2key(-inf) */ : min(f2key(score), 0xff7fffffu);
        return bb < wb ? 0u : forced ? 0xff800000u /* f2key(+inf) */ : key;
    }
    /* the blocks [plain_lo(), plain_hi()) are neither excluded, forced nor empty: their key is min(f2key(score),
     * f2key(FLT_MAX)). plain_lo is at most plain_hi (an empty range), never init_blocks itself: the callers round it
     * up to a group of 4 and offset it by a segment's start, which overflowed int for init_blocks near INT32_MAX
     * (every block an init block: the forced blocks then took their scores' keys, session 46) */
    __device__ __forceinline__ int plain_lo() const { return min(max(init_blocks, wb), plain_hi()); }
    __device__ __forceinline__ int plain_hi() const { return min(qb - local_blocks, e_lo); }
    /* the blocks the row's finalize selects under a top-k of K (its blocks 0..qb, candidates from wb) */
    __device__ __forceinline__ int select_k(int K) const { return sel_window_k(K, qb + 1, wb); }
};
/* The finalize's output for a whole row (every caller but k_select90's segments): slot pos of `out`
 * gets block i (-1 past qmax), and the slots from k up to ncols get -1. */
struct SelTopkOut {
    int32_t *out;
    int qmax, ncols;
    static constexpr bool kKeys = false; /* put needs no key */
    __device__ __forceinline__ void put(int pos, int i, uint32_t) const { out[pos] = i > qmax ? -1 : i; }
    template <int TW> __device__ __forceinline__ void tail(int k, int tw, int lane) const {
        for (int c = k + tw * 32 + lane; c < ncols; c += 32 * TW) out[c] = -1;
    }
};

/* k_select90's long rows in segments (SEG): a segment's row holds, at positions [0, off), the keys of
 * the k blocks selected from the earlier segments (ascending blocks, in cidx: their keys are stored as
 * the row's float bits) and, from off on, the scores of blocks wb, wb + 1, .. of this segment. The
 * k largest keys of that row, ties to the lower position, are the k largest of every block so far,
 * ties to the lower block (positions ascend with blocks), so the segments' selections chain exactly.
 * With off = 0 (the first segment) this is SelBlockKey. */
struct SelSegKey {
    SelBlockKey base;
    int off, wb;
    __device__ __forceinline__ uint32_t operator()(int i, float score) const {
        return i < off ? __float_as_uint(score) : base(wb + i - off, score);
    }
    __device__ __forceinline__ int plain_lo() const { return off + max(base.plain_lo() - wb, 0); }
    __device__ __forceinline__ int plain_hi() const { return off + max(base.plain_hi() - wb, 0); }
};
/* SEG's output: the token's last segment writes the blocks to its top-k row `out` (and -1 from k to
 * ncols); an earlier one writes the selected keys and blocks to (ckey, cblk), the next row's carried
 * part. Position i is carried block cidx[i] below off, block wb + i - off from it. */
struct SelSegOut {
    int32_t *out; /* the top-k row, or NULL: carry */
    uint32_t *ckey;
    int32_t *cblk;
    const int32_t *cidx;
    int off, wb, ncols;
    static constexpr bool kKeys = true;
    __device__ __forceinline__ void put(int pos, int i, uint32_t key) const {
        const int32_t blk = i < off ? cidx[i] : wb + i - off;
        if (out) {
            out[pos] = blk;
        } else {
            ckey[pos] = key;
            cblk[pos] = blk;
        }
    }
    template <int TW> __device__ __forceinline__ void tail(int k, int tw, int lane) const {
        if (out)
            for (int c = k + tw * 32 + lane; c < ncols; c += 32 * TW) out[c] = -1;
    }
};

/* warp_topk's selection (the k largest of a row of n scores, ties to the lower index, indices written
 * ascending, > qmax -> -1, then -1 up to ncols) by a team of TW warps (1 or 2; thread tw * 32 +
 * lane). `row` holds the n float scores on entry (16-byte aligned, >= n rounded up to 4 slots);
 * when 0 < k < n each score becomes its key in place: key_of(i, score) (f2key of the score, or
 * f2key(+inf) for a forced block, f2key(-inf) for an empty one), zeros up to a multiple of 4 (a warp
 * step whose groups are all plain blocks, key_of's [plain_lo, plain_hi), takes f2key alone; session
 * 22); otherwise the row is left as it is and the output written from k alone. Warp tw owns a
 * contiguous half of the row's 4-key groups ([0, hsplit) and [hsplit, n4)) in every pass, reading
 * 4 keys a lane with one 16-byte load, so the two warps meet only at the exchanges.
 *   A byte radix select of the k-th largest key over all the keys. Pass A writes the keys, builds
 * each warp's histogram of their top byte (shared-memory atomics, one histogram per warp, summed when
 * read) and ANDs / ORs them; the digit is the highest bin whose count from the top reaches the rank
 * left. Then the windows 23..16, 15..8 and 7..0 among the candidates (the keys with the prefix so
 * far), each skipped when every key agrees on its bits: bf16-rounded scores and f2key(+inf) have the
 * low 16 bits 0, so a row of them takes one histogram pass after pass A (session 21: 1.15 on
 * average over the emulated rows, f2key(-inf) of empty blocks adding the others; before, a pass of
 * +-inf counts and two histogram passes). Padding keys (0, past n) are kept out of every histogram.
 * Host emulation against session 9's bit-by-bit search: docs/topk-emu.cpp (300,000 rows incl. NaN
 * payloads next to +-inf; team_topk_b).
 *   The scan in index order takes 128 keys a warp step (lane l holds keys 4 l..4 l + 3): key > thr,
 * and key == thr while ties remain (ranked by 4 more ballots only in the steps that hold a key ==
 * thr; session 22). Warp 1 starts from warp 0's counts of keys > thr and == thr in
 * the first half, which the passes give (warp 0's histograms and counts): no extra pass.
 * `team_mem`: SEL90_TOPK_TEAM_WORDS words of shared memory, 16-byte aligned. Both warps must call
 * with the same arguments.
 *   sel90_topk_radix_g is the routine with its key and output policies (KeyOf: SelBlockKey or
 * SelSegKey; Out: SelTopkOut or SelSegOut: put(pos, i, key) for each selected position i in order,
 * tail<TW>(k, tw, lane) after); sel90_topk_radix the whole-row form every kernel but SEG's uses. */
template <int TW, class KeyOf, class Out>
__device__ __forceinline__ void sel90_topk_radix_g(float *row, int n, int k, uint32_t *team_mem, int tw, int team,
                                                   const KeyOf &key_of, const Out &out) {
    const unsigned FULL = 0xffffffffu;
    const int lane = threadIdx.x & 31;
    uint4 *k4 = reinterpret_cast<uint4 *>(row);
    uint32_t *hist = team_mem + tw * SEL90_TOPK_HIST;      /* this warp's 2 histograms */
    const uint32_t *hist0 = team_mem;                       /* warp 0's (the first half's) */
    uint32_t *xch = team_mem + TW * SEL90_TOPK_HIST;
    const int n4 = (n + 3) >> 2;
    const int hsplit = TW > 1 ? (n4 + 1) >> 1 : n4;
    const int g_lo = tw == 0 ? 0 : hsplit, g_hi = tw == 0 ? hsplit : n4;
    auto ld = [&](int gi, uint32_t (&v)[4]) {
        const uint4 x = k4[gi];
        v[0] = x.x;
        v[1] = x.y;
        v[2] = x.z;
        v[3] = x.w;
    };
    if (k > n) k = n;
    if (k < 0) k = 0;
    const bool search = k > 0 && k < n;
    if (search)
        for (int i = lane; i < SEL90_TOPK_HIST / 4; i += 32) reinterpret_cast<uint4 *>(hist)[i] = make_uint4(0, 0, 0, 0);

    if (search) __syncwarp(); /* the zeroed histograms before any lane's increments */

    /* pass A: the keys in place, this warp's histogram of their top byte (buffer 0), the AND / OR of the
     * valid keys (padding keys, 0, stay out of both: their increments go to an exchange word nobody
     * reads, so that no key's atomic sits behind a branch). A row whose keys are all taken or none
     * (no search) needs no keys: the scan below writes it without reading them. */
    uint32_t kand = ~0u, kor = 0u;
    if (search) {
        uint32_t *const trash = xch + 8 * tw + 7;
        /* groups [pl_lo, pl_hi) hold 4 valid keys of plain blocks (key f2key(score), capped at f2key(FLT_MAX)):
         * a warp step of those alone takes 4 f2keys, no masks; the others (a forced, empty or padding slot; ~1 step
         * a warp) take key_of and the selects */
        const int pl_lo = (key_of.plain_lo() + 3) >> 2, pl_hi = min(key_of.plain_hi(), n) >> 2;
        for (int g0 = g_lo; g0 < g_hi; g0 += 32) {
            const int gi = g0 + lane;
            const bool act = gi < g_hi;
            float fs[4] = {0.f, 0.f, 0.f, 0.f};
            if (act) {
                const float4 f = reinterpret_cast<const float4 *>(row)[gi];
                fs[0] = f.x, fs[1] = f.y, fs[2] = f.z, fs[3] = f.w;
            }
            uint32_t v[4];
            if (__all_sync(FULL, !act || (gi >= pl_lo && gi < pl_hi))) { /* warp-uniform */
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    v[e] = min(f2key(fs[e]), 0xff7fffffu); /* key_of's: a free block stays below f2key(+inf) */
                    atomicAdd(act ? &hist[v[e] >> 24] : trash, 1u);
                    kand &= act ? v[e] : ~0u;
                    kor |= act ? v[e] : 0u;
                }
            } else {
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    const bool valid = act && 4 * gi + e < n;
                    const uint32_t kv = key_of(4 * gi + e, fs[e]); /* for every slot: a select, not a branch */
                    v[e] = valid ? kv : 0u;
                    atomicAdd(valid ? &hist[v[e] >> 24] : trash, 1u);
                    kand &= valid ? v[e] : ~0u;
                    kor |= v[e];
                }
            }
            if (act) k4[gi] = make_uint4(v[0], v[1], v[2], v[3]);
        }
    }
    __syncwarp();
    uint32_t thr = 0;
    int need_eq = k;
    uint32_t gt0 = 0, eq0 = 0; /* the first half's keys > thr and == thr (warp 1's start) */
    if (search) {
        kand = __reduce_and_sync(FULL, kand);
        kor = __reduce_or_sync(FULL, kor);
        if (TW > 1 && lane == 0) xch[8 * tw] = kand, xch[8 * tw + 1] = kor;
        team_bar<TW>(team); /* also: both warps' top-byte histograms are complete */
        if (TW > 1) kand = xch[0] & xch[8], kor = xch[1] | xch[9];
        const uint32_t diff = kand ^ kor; /* the bits in which the valid keys differ */
        uint32_t kk = (uint32_t)k;        /* rank of thr among the candidates, >= 1 */
        uint32_t pmask = 0u, prefix = 0u;
        int pass = 0;
        for (int hi = 31; hi >= 0; hi -= 8) {
            const int lo = hi - 7;
            const uint32_t wmask = (hi == 31 ? ~0u : (2u << hi) - 1u) & ~((1u << lo) - 1u);
            if (hi < 31) {
                if ((diff & wmask) == 0u) { /* every key agrees on these bits */
                    prefix |= kand & wmask;
                    pmask |= wmask;
                    continue;
                }
                pass++;
                uint32_t *h = hist + 256 * (pass & 1);
                if (pass >= 2) { /* the other warp read this buffer before the last barrier */
                    for (int i = lane; i < 64; i += 32) reinterpret_cast<uint4 *>(h)[i] = make_uint4(0, 0, 0, 0);
                    __syncwarp();
                }
                for (int gi = g_lo + lane; gi < g_hi; gi += 32) {
                    uint32_t v[4];
                    ld(gi, v);
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        if (4 * gi + e < n && (v[e] & pmask) == prefix) atomicAdd(&h[(v[e] & wmask) >> lo], 1u);
                }
                team_bar<TW>(team);
            }
            const int buf = pass & 1;
            /* lane l holds bins 8 l..8 l + 7 of both warps' histograms (bins) and of warp 0's
             * (b0); incl = the count of bins >= 8 l */
            uint32_t bins[8], b0[8];
            {
                const uint4 *h4 = reinterpret_cast<const uint4 *>(hist0 + 256 * buf);
                const uint4 x0 = h4[2 * lane], x1 = h4[2 * lane + 1];
                b0[0] = x0.x, b0[1] = x0.y, b0[2] = x0.z, b0[3] = x0.w;
                b0[4] = x1.x, b0[5] = x1.y, b0[6] = x1.z, b0[7] = x1.w;
#pragma unroll
                for (int j = 0; j < 8; j++) bins[j] = b0[j];
                if (TW > 1) {
                    const uint4 *g4 = reinterpret_cast<const uint4 *>(hist0 + SEL90_TOPK_HIST + 256 * buf);
                    const uint4 y0 = g4[2 * lane], y1 = g4[2 * lane + 1];
                    bins[0] += y0.x, bins[1] += y0.y, bins[2] += y0.z, bins[3] += y0.w;
                    bins[4] += y1.x, bins[5] += y1.y, bins[6] += y1.z, bins[7] += y1.w;
                }
            }
            uint32_t s = 0;
#pragma unroll
            for (int j = 0; j < 8; j++) s += bins[j];
            uint32_t incl = s;
#pragma unroll
            for (int off = 1; off < 32; off <<= 1) {
                const uint32_t t = __shfl_down_sync(FULL, incl, off);
                if (lane + off < 32) incl += t;
            }
            /* the digit: the highest bin whose count from the top reaches kk, else 0 */
            const unsigned hit = __ballot_sync(FULL, incl >= kk);
            const int L = hit ? 31 - __clz(hit) : 0;
            uint32_t c = incl - s, cd = 0;
            int dj = -1;
#pragma unroll
            for (int j = 7; j >= 0; j--) {
                if (dj < 0 && (c + bins[j] >= kk || (lane == 0 && j == 0))) {
                    dj = j;
                    cd = c;
                }
                c += bins[j];
            }
            const int d = __shfl_sync(FULL, 8 * lane + dj, L);
            kk -= __shfl_sync(FULL, cd, L);
            /* the first half's candidates above the digit are > thr; those at it, == thr if
             * this is the last digit */
            uint32_t g_above = 0, g_at = 0;
#pragma unroll
            for (int j = 0; j < 8; j++) {
                g_above += 8 * lane + j > d ? b0[j] : 0u;
                g_at += 8 * lane + j == d ? b0[j] : 0u;
            }
            gt0 += __reduce_add_sync(FULL, g_above);
            eq0 = __reduce_add_sync(FULL, g_at);
            prefix |= (uint32_t)d << lo;
            pmask |= wmask;
        }
        thr = prefix;
        need_eq = (int)kk;
    }
    /* scan in index order, 128 keys a warp step: take key > thr, and key == thr while ties remain;
     * warp tw scans groups [g_lo, g_hi). A row whose keys are all taken (k == n) needs no keys. */
    if (!search) {
        for (int i = g_lo * 4 + lane; i < min(4 * g_hi, k); i += 32)
            out.put(i, i, Out::kKeys ? key_of(i, row[i]) : 0u);
    } else {
        int written = 0, eq_used = 0;
        if (tw == 1) {
            eq_used = min((int)eq0, need_eq);
            written = (int)gt0 + eq_used;
        }
        const unsigned lower = (1u << lane) - 1u;
        for (int g0 = g_lo; g0 < g_hi && written < k; g0 += 32) {
            const int gi = g0 + lane;
            uint32_t v[4] = {0u, 0u, 0u, 0u};
            if (gi < g_hi) ld(gi, v);
            /* padding keys and the lanes past g_hi hold 0, never > thr: no validity test for > thr */
            bool take[4];
            bool lane_eq = false;
#pragma unroll
            for (int e = 0; e < 4; e++) {
                take[e] = v[e] > thr;
                lane_eq |= v[e] == thr;
            }
            /* keys == thr are taken in index order while ties remain: their ranks need 4 more ballots,
             * so only in the (warp-uniform) steps that hold one; most steps hold none. A 0 of the
             * padding matches only a threshold of 0 (a valid key can be 0: f2key of an all-ones -NaN),
             * and is kept out here. */
            if (__any_sync(FULL, lane_eq)) {
                const int nv = gi < g_hi ? n - 4 * gi : 0; /* this lane's valid keys: min(4, nv) */
                bool eqb[4];
                unsigned eqm[4];
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    eqb[e] = e < nv && v[e] == thr;
                    eqm[e] = __ballot_sync(FULL, eqb[e]);
                }
                int eq_rank = __popc(eqm[0] & lower) + __popc(eqm[1] & lower) + __popc(eqm[2] & lower) + __popc(eqm[3] & lower);
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    take[e] = take[e] || (eqb[e] && eq_used + eq_rank < need_eq);
                    eq_rank += eqb[e];
                }
                eq_used += __popc(eqm[0]) + __popc(eqm[1]) + __popc(eqm[2]) + __popc(eqm[3]);
                if (eq_used > need_eq) eq_used = need_eq;
            }
            unsigned tm[4];
#pragma unroll
            for (int e = 0; e < 4; e++) tm[e] = __ballot_sync(FULL, take[e]);
            int pos = written + __popc(tm[0] & lower) + __popc(tm[1] & lower) + __popc(tm[2] & lower) + __popc(tm[3] & lower);
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int i = 4 * gi + e;
                if (take[e] && pos < k) out.put(pos, i, v[e]);
                pos += take[e] ? 1 : 0;
            }
            written += __popc(tm[0]) + __popc(tm[1]) + __popc(tm[2]) + __popc(tm[3]);
        }
    }
    out.template tail<TW>(k, tw, lane);
}
template <int TW>
__device__ __forceinline__ void sel90_topk_radix(float *row, int n, int k, int qmax, int32_t *out, int ncols,
                                                 uint32_t *team_mem, int tw, int team, const SelBlockKey &key_of) {
    sel90_topk_radix_g<TW>(row, n, k, team_mem, tw, team, key_of, SelTopkOut{out, qmax, ncols});
}
