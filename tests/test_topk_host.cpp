/*
 * test_topk_host: the selection's device top-k, sel90_topk_radix (src/cuda/sel_topk.cuh: the finalize of
 * k_select, k_select90 and k_dec_topk), compiled for the host and run lane by lane on tests/simt_host.h,
 * for teams of 1 and 2 warps, against a plain sort; and the decode cache's selection, cd_select
 * (src/cuda/cd_select.cuh, a k_cd_attn CTA of 8 warps), the same way; the finalize chained over a row's
 * segments as k_select90's SEG runs it (SelSegKey / SelSegOut) against the whole row, and SEG's slot
 * arithmetic (src/cuda/sel_seg.cuh) against every block its max-pool writes; and the stage-2 token grouping,
 * group_window (src/cuda/group_tokens.cuh, a k_group_tokens CTA of 8 warps), against a plain greedy (its
 * result never shows in the attention output, only in the speed); and k_flash90's block lists (src/cuda/flash_list.cuh:
 * the per-token sort and a row's cursor) against sets; and the backward's dk / dv work items (src/cuda/bwd_plan.cuh:
 * the count, the one-CTA scan, the cuts at ranks P, 2 P, ..., a piece's words) against the rows' token sets and the
 * workspace bounds. CI has no GPU; this runs the routine's own source
 * there, on rows the GPU grid rarely makes: every length from 1 block up, k of 0, 1, n - 1, n and
 * above, forced and empty blocks at both ends, heavy ties, +-inf, +-0, subnormals and NaN payloads of
 * both signs, garbage past the row and in the team's shared memory.
 *
 * Reference (SPEC B §7, the CUDA routine's contract): block bb's key is f2key(+inf) if it is forced (one
 * of the first init_blocks, or bb >= qb - local_blocks), else f2key(-inf) if bb >= e_lo (no kernel touches
 * it), else f2key(score) but at most f2key(FLT_MAX) (a free block's +inf never ties with a forced one); the k = min(max(k, 0), n) largest keys, ties to the lower index, written
 * ascending, an index > qmax as -1, then -1 up to ncols. f2key orders NaNs by their bits. Under a sliding
 * window (a row's first candidate wb > 0, in a fifth of the rows) only the blocks from wb on are candidates,
 * forced ones included, and at most n - wb are taken (REF's ref_topk); the device gets k from sel_window_k,
 * as its kernels call it. Such rows hold no score whose key is 0 (the all-ones -NaN: the device gives the
 * blocks before wb that key, and the kernels' block scores hold no NaN).
 *
 * cd_select's rows (its caller's precondition: n > K) hold the larger of two planes of non-negative block
 * scores (float bits compared as ints), with garbage past the row and, now and then, before the window's first
 * block (a window in a third of the rows: its candidates and its k as above); +inf and NaN scores now and then
 * (its search over all 32 bits), ties, forced and empty blocks; keys per thread 4, 8 and 48 (the CTA's
 * 1,024, 2,048 and 12,288 blocks).
 *
 * Every odd row runs with the lanes in a shuffled order between collectives (simt_host.h's
 * shuffle_lanes), so that a read of another lane's write without a collective in between would show.
 *
 * Knobs: INFLLM_TOPK_HOST_ROWS (default 1500 rows a team size; cd_select a fifth of it),
 * INFLLM_TOPK_HOST_SEED.
 * Ends with "test_topk_host: N passed, N failed" (tests/harness.h); exit 1 on any failure.
 */
#include "simt_host.h"

#include "bwd_plan.cuh"
#include "cd_select.cuh"
#include "flash_list.cuh"
#include "group_tokens.cuh"
#include "sel_seg.cuh"
#include "sel_topk.cuh"

#include "harness.h"

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdlib>
#include <numeric>
#include <random>

static uint32_t key_ref(float f) { /* independent of f2key.cuh */
    uint32_t u;
    memcpy(&u, &f, 4);
    return (u >> 31) ? ~u : (u | 0x80000000u);
}

struct RowCase {
    int n, k, qmax, ncols, init_blocks, local_blocks, e_lo;
    int wb; /* the first candidate block (a sliding window's), 0: every block */
    std::vector<float> score; /* n values */
    const char *mode;
};

/* the reference's keys of blocks 0..n-1 of a row whose query sits in block n - 1 */
static std::vector<uint32_t> ref_block_keys(int n, int init_blocks, int local_blocks, int e_lo,
                                            const std::vector<float> &score) {
    const int qb = n - 1; /* the callers' row: blocks 0..qb of a query in block qb */
    std::vector<uint32_t> key(n);
    for (int b = 0; b < n; b++) {
        const bool forced = b < init_blocks || b >= qb - local_blocks;
        key[b] = forced ? 0xff800000u : b >= e_lo ? 0x007fffffu : std::min(key_ref(score[b]), 0xff7fffffu);
    }
    return key;
}

/* the k largest keys (ties to the lower index), their indices ascending, an index > qmax as -1, then -1
 * up to ncols */
static std::vector<int32_t> ref_topk(const std::vector<uint32_t> &key, int k, int qmax, int ncols) {
    std::vector<int> idx(key.size());
    std::iota(idx.begin(), idx.end(), 0);
    std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return key[a] > key[b]; });
    idx.resize(k);
    std::sort(idx.begin(), idx.end());
    std::vector<int32_t> out(ncols, -1);
    for (int j = 0; j < k && j < ncols; j++) out[j] = idx[j] > qmax ? -1 : idx[j];
    return out;
}

/* the candidates [wb, n): their top min(max(k, 0), n - wb), indices shifted back */
static std::vector<int32_t> reference(const RowCase &c) {
    const std::vector<uint32_t> all = ref_block_keys(c.n, c.init_blocks, c.local_blocks, c.e_lo, c.score);
    const std::vector<uint32_t> cand(all.begin() + c.wb, all.end());
    std::vector<int32_t> out = ref_topk(cand, std::min(std::max(c.k, 0), c.n - c.wb), c.qmax - c.wb, c.ncols);
    for (auto &x : out) x = x < 0 ? -1 : x + c.wb;
    return out;
}

/* the device writes its output into a vector of ncols + kGuardSlots words filled with kGuard */
static const int32_t kGuard = 0x7eadbeef;
static const int kGuardSlots = 8;
/* the first of the ncols slots where got differs from want (-1: none) */
static int first_mismatch(const std::vector<int32_t> &got, const std::vector<int32_t> &want, int ncols) {
    for (int j = 0; j < ncols; j++)
        if (got[j] != want[j]) return j;
    return -1;
}
static bool guard_intact(const std::vector<int32_t> &got, int ncols) {
    for (size_t j = (size_t)ncols; j < got.size(); j++)
        if (got[j] != kGuard) return false;
    return true;
}

static float bf16_round(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7f800000u) == 0x7f800000u) return f; /* inf / nan as they are */
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    memcpy(&f, &u, 4);
    return f;
}

static RowCase draw(std::mt19937_64 &rng) {
    auto uni = [&](int lo, int hi) { return (int)std::uniform_int_distribution<int>(lo, hi)(rng); };
    std::normal_distribution<float> nd(0.f, 1.f);
    RowCase c;
    const int shape = uni(0, 9);
    c.n = shape < 3 ? uni(1, 40) : shape < 5 ? 4 * uni(1, 80) + uni(-1, 1) : shape < 6 ? 128 * uni(1, 16) + uni(-2, 2)
                                                                                        : uni(41, 2200);
    if (c.n < 1) c.n = 1;
    const int kk = uni(0, 9);
    c.k = kk == 0 ? 0 : kk == 1 ? 1 : kk == 2 ? c.n - 1 : kk == 3 ? c.n : kk == 4 ? c.n + uni(1, 9)
                                                                                  : uni(1, std::max(1, std::min(c.n, 160)));
    c.ncols = std::max(c.k, 0) + uni(0, 9);
    c.qmax = uni(0, 7) ? c.n - 1 : uni(-1, c.n - 1);
    /* now and then at the API's extremes: every block an init block (INT32_MAX; its group arithmetic overflowed
     * until session 46), the whole row local (2^24, the most topk + local may be) */
    c.init_blocks = uni(0, 3) ? uni(0, 2) : uni(0, 4) ? uni(0, 40) : INT32_MAX;
    c.local_blocks = uni(0, 3) ? uni(0, 8) : uni(0, 4) ? uni(0, 60) : 1 << 24;
    c.e_lo = uni(0, 2) ? c.n + uni(0, 5) : uni(0, c.n);
    c.score.resize(c.n);
    const int mode = uni(0, 6);
    static const char *names[] = {"bf16 probabilities", "f32 normals", "few values", "all equal", "special bits",
                                  "mostly zeros", "bf16 normals"};
    c.mode = names[mode];
    const float levels[5] = {0.f, 0.25f, 0.5f, 1.f, 3.f};
    const float one = uni(0, 1) ? 1.f : -2.5f;
    for (int b = 0; b < c.n; b++) {
        float v;
        switch (mode) {
        case 0: v = bf16_round(std::fabs(nd(rng)) * 0.05f * (float)uni(1, 16)); break;
        case 1: v = nd(rng); break;
        case 2: v = levels[uni(0, 4)]; break;
        case 3: v = one; break;
        case 4: {
            const int s = uni(0, 9);
            uint32_t u = (uint32_t)rng();
            if (s == 0) u = 0x7f800000u;                            /* +inf */
            else if (s == 1) u = 0xff800000u;                       /* -inf */
            else if (s == 2) u = 0x7fc00000u | (u & 0x3fffffu);     /* +NaN payloads */
            else if (s == 3) u = 0xffc00000u | (u & 0x3fffffu);     /* -NaN payloads */
            else if (s == 4) u = (u & 0x80000000u);                 /* +-0 */
            else if (s == 5) u = (u & 0x80000000u) | (u & 0x7fffu); /* subnormals */
            else if (s == 6) u = 0xffffffffu;                       /* the -NaN whose key is 0 */
            memcpy(&v, &u, 4);
            break;
        }
        case 5: v = uni(0, 15) ? 0.f : bf16_round(std::fabs(nd(rng))); break;
        default: v = bf16_round(nd(rng)); break;
        }
        c.score[b] = v;
    }
    c.wb = c.n > 1 && uni(0, 4) == 0 ? uni(1, c.n - 1) : 0;
    if (c.wb > 0)
        for (float &v : c.score)
            if (key_ref(v) == 0u) v = -INFINITY;
    return c;
}

/* runs sel90_topk_radix<TW> on the case; false if the team's collectives did not match */
template <int TW>
static bool run_device(const RowCase &c, std::vector<int32_t> &out, std::string &err, bool shuffled) {
    static simt::Team in_order(TW), shuffled_team(TW);
    static const bool seeded = (shuffled_team.shuffle_lanes(1000 + TW), true);
    (void)seeded;
    simt::Team &team = shuffled ? shuffled_team : in_order;
    const int slots = (c.n + 3) / 4 * 4 + 4;
    alignas(16) static float row[2204 + 8];
    alignas(16) static uint32_t team_mem[SEL90_TOPK_TEAM_WORDS];
    for (int i = 0; i < slots; i++) {
        const uint32_t garbage = 0x7fc0dead; /* a NaN past the row: must never count */
        if (i < c.n) row[i] = c.score[i];
        else memcpy(&row[i], &garbage, 4);
    }
    for (auto &w : team_mem) w = 0xa5a5a5a5u;
    out.assign(c.ncols + kGuardSlots, kGuard);
    const int qb = c.n - 1;
    const SelBlockKey key_of{qb, c.init_blocks, c.local_blocks, c.e_lo, c.wb};
    const int k = c.wb > 0 ? sel_window_k(c.k, c.n, c.wb) : c.k; /* (k above n or below 0 as it is without a window) */
    const bool ok = team.run([&](int t) {
        sel90_topk_radix<TW>(row, c.n, k, c.qmax, out.data(), c.ncols, team_mem, t / 32, 0, key_of);
    });
    if (!ok) err = team.error();
    return ok;
}

template <int TW> static void run_cases(int rows, uint64_t seed) {
    std::mt19937_64 rng(seed);
    int bad = 0;
    for (int r = 0; r < rows; r++) {
        const RowCase c = draw(rng);
        std::vector<int32_t> got;
        std::string err;
        const bool ran = run_device<TW>(c, got, err, r & 1); /* odd rows: lanes in a shuffled order */
        CHECK(ran, "TW %d row %d (n %d k %d): %s", TW, r, c.n, c.k, err.c_str());
        if (!ran) continue;
        const std::vector<int32_t> want = reference(c);
        const int first = first_mismatch(got, want, c.ncols);
        const bool same = first < 0, guard_ok = guard_intact(got, c.ncols);
        CHECK(same, "TW %d row %d (%s, n %d k %d qmax %d ncols %d init %d local %d e_lo %d wb %d): slot %d is %d, "
              "want %d",
              TW, r, c.mode, c.n, c.k, c.qmax, c.ncols, c.init_blocks, c.local_blocks, c.e_lo, c.wb, first,
              first >= 0 ? got[first] : 0, first >= 0 ? want[first] : 0);
        CHECK(guard_ok, "TW %d row %d: wrote past ncols %d", TW, r, c.ncols);
        bad += !same || !guard_ok;
    }
    printf("  team of %d warp%s: %d rows, %d wrong\n", TW, TW > 1 ? "s" : "", rows, bad);
}

/* ---- sel90_topk_radix_g in segments (k_select90's SEG rows) ----
 * The row of a case split at random block bounds, the first segment holding at least k blocks (as
 * k_select90 requires): segment 0's row is its scores alone (off 0); each later segment's row is the
 * k keys and blocks the previous one carried (SelSegOut with no top-k row) followed by its own scores;
 * the last segment writes the top-k row. The result must be the whole row's (reference(), qmax n - 1). */
template <int TW> static void seg_cases(int rows, uint64_t seed) {
    std::mt19937_64 rng(seed);
    auto uni = [&](int lo, int hi) { return (int)std::uniform_int_distribution<int>(lo, hi)(rng); };
    static simt::Team in_order(TW), shuffled_team(TW);
    static const bool seeded = (shuffled_team.shuffle_lanes(3000 + TW), true);
    (void)seeded;
    int bad = 0, multi = 0;
    alignas(16) static float row[2 * 2204 + 16];
    alignas(16) static uint32_t team_mem[SEL90_TOPK_TEAM_WORDS];
    static uint32_t ckey[2204];
    static int32_t cblk[2204], cidx[2204];
    for (int r = 0; r < rows; r++) {
        RowCase c = draw(rng);
        if (c.k < 1) c.k = 1;
        if (c.k > c.n) c.k = c.n;
        c.ncols = std::max(c.ncols, c.k); /* the kernel's topk_out >= K */
        c.qmax = c.n - 1;
        /* segment bounds: the first at >= k blocks, then random lengths (1 block up) */
        std::vector<int> bounds{0};
        int b = std::max(c.k, uni(c.k, c.k + (uni(0, 2) ? 8 : 300)));
        while (b < c.n) {
            bounds.push_back(b);
            b += uni(0, 3) ? uni(1, 12) : uni(1, 400);
        }
        bounds.push_back(c.n);
        multi += bounds.size() > 2;
        std::vector<int32_t> got(c.ncols + kGuardSlots, kGuard);
        const SelBlockKey base{c.n - 1, c.init_blocks, c.local_blocks, c.e_lo, c.wb};
        simt::Team &team = (r & 1) ? shuffled_team : in_order;
        bool ran = true;
        std::string err;
        for (size_t j = 0; j + 1 < bounds.size() && ran; j++) {
            const int wb = bounds[j], len = bounds[j + 1] - wb, off = j == 0 ? 0 : c.k;
            const bool last = j + 2 == bounds.size();
            const int n = off + len;
            for (int i = 0; i < (n + 3) / 4 * 4 + 4; i++) {
                const uint32_t garbage = 0x7fc0dead;
                if (i < off) memcpy(&row[i], &ckey[i], 4);
                else if (i < n) row[i] = c.score[wb + i - off];
                else memcpy(&row[i], &garbage, 4);
            }
            for (int i = 0; i < off; i++) cidx[i] = cblk[i];
            for (auto &w : team_mem) w = 0xa5a5a5a5u;
            const SelSegKey key_of{base, off, wb};
            const SelSegOut out{last ? got.data() : nullptr, ckey, cblk, cidx, off, wb, c.ncols};
            /* the carry keeps k keys; the last segment selects at most the window's candidates, as k_select90 */
            const int k = last ? sel_window_k(c.k, c.n, c.wb) : c.k;
            ran = team.run([&](int t) { sel90_topk_radix_g<TW>(row, n, k, team_mem, t / 32, 0, key_of, out); });
            if (!ran) err = team.error();
        }
        CHECK(ran, "seg TW %d row %d (n %d k %d): %s", TW, r, c.n, c.k, err.c_str());
        if (!ran) continue;
        const std::vector<int32_t> want = reference(c);
        const int first = first_mismatch(got, want, c.ncols);
        const bool same = first < 0, guard_ok = guard_intact(got, c.ncols);
        CHECK(same, "seg TW %d row %d (%s, n %d k %d ncols %d init %d local %d e_lo %d wb %d, %zu segments, first %d): "
              "slot %d is %d, want %d",
              TW, r, c.mode, c.n, c.k, c.ncols, c.init_blocks, c.local_blocks, c.e_lo, c.wb, bounds.size() - 1, bounds[1],
              first, first >= 0 ? got[first] : 0, first >= 0 ? want[first] : 0);
        CHECK(guard_ok, "seg TW %d row %d: wrote past ncols %d", TW, r, c.ncols);
        bad += !same || !guard_ok;
    }
    printf("  segments, team of %d warp%s: %d rows (%d in more than one segment), %d wrong\n", TW, TW > 1 ? "s" : "",
           rows, multi, bad);
    CHECK(multi > rows / 4, "seg: too few rows in more than one segment (%d of %d)", multi, rows);
}

/* ---- k_select90's segment arithmetic (sel_seg.cuh) ----
 * Random geometries (B a multiple of s1, any l1 >= 1, local blocks, K) and segment lengths from the plan's
 * minimum up, random CTAs of 8 consecutive tokens: the kernel's max-pool writes block b of a token's row in
 * segment j at slot off_j + b - wb_j for every block b <= qb of every kernel the token sees among the
 * segment's tiles; its finalizes read off_j + n slots (rounded up to 4). Every such slot must lie in
 * [off_j, off_j + window) and below the row's stride; the blocks a segment's kernels reach past its end
 * must fit the partial slots; segment 0 must span >= K blocks. Under a sliding window (half the cases) pass 2
 * starts at the tile of sel_pass2_first_kernel, which must be exactly the first kernel that meets the CTA's first
 * token's window first block (so no token's candidate block misses a kernel), and segment 0 at that tile's first
 * block, at or below every selecting token's own. The kernel counts, visibility and block ranges here are the
 * reference's (SPEC B), independent of cuda_common.cuh. */
static void seg_plan_cases(int cases, uint64_t seed) {
    std::mt19937_64 rng(seed);
    auto uni = [&](int64_t lo, int64_t hi) { return std::uniform_int_distribution<int64_t>(lo, hi)(rng); };
    const int CT = 128, TT = 8;
    int bad = 0;
    long segs = 0, writes = 0;
    for (int c = 0; c < cases; c++) {
        static const int s1s[6] = {1, 2, 4, 8, 16, 32};
        const int s1 = s1s[uni(0, 5)], B = s1 * (int)uni(1, 16);
        const int l1 = (int)(uni(0, 3) ? uni(1, 3 * s1) : uni(1, 3 * B));
        const int local = (int)(uni(0, 2) ? uni(0, 4) : uni(0, 64)), K = (int)(uni(0, 2) ? uni(1, 96) : uni(1, 400));
        const int64_t ts_min = sel_seg_ts_min(K, CT, s1, B);
        const int64_t ts = ts_min + (uni(0, 1) ? 0 : uni(0, 40));
        const int64_t W = sel_seg_window(ts, CT, s1, l1, B, local), stride = sel_seg_stride(K, W);
        const int npart = sel_seg_npart(l1, B);
        bool ok = stride % 32 == 8 && stride >= K + W + 4 && sel_seg_block(ts, CT, s1, B) >= K;
        /* a sequence of 1..6 segments' worth of kernels, and a CTA of its tokens */
        const int64_t seg_keys = (int64_t)s1 * CT * ts;
        const int64_t lk = std::max<int64_t>((int64_t)(K + 2) * B, uni(1, 6 * seg_keys + 2 * B));
        const int64_t n1 = lk >= l1 ? (lk - l1) / s1 + 1 : 0;
        auto visible = [&](int64_t pos) { /* kernels [s1 k, s1 k + l1 - 1] inside [0, pos] */
            const int64_t v = pos + 1 >= l1 ? (pos + 1 - l1) / s1 + 1 : 0;
            return std::min(v, n1);
        };
        const int64_t pos_last = uni(std::min<int64_t>((int64_t)K * B, lk - 1), lk - 1);
        const int64_t pos0 = std::max<int64_t>(0, pos_last - (TT - 1));
        const int kp2 = sel_pass2_kernels((int)visible(pos_last), pos_last, B, s1, local);
        const int64_t nt1 = (kp2 + CT - 1) / CT;
        /* a sliding window in half the cases, from one key to past the sequence */
        const int window = uni(0, 1) ? 0 : (int)uni(1, lk + B);
        const int64_t wstart = window > 0 && pos0 - window + 1 > 0 ? pos0 - window + 1 : 0, wb0 = wstart / B;
        int64_t k_first = 0; /* the first kernel that meets block wb0 */
        while ((s1 * k_first + l1 - 1) / B < wb0) k_first++;
        const int kf = sel_pass2_first_kernel(pos0, window, B, l1, s1);
        if (kf != k_first) {
            CHECK(false, "seg plan case %d (B %d s1 %d l1 %d, pos0 %lld window %d): sel_pass2_first_kernel %d, the "
                  "first kernel that meets block %lld is %lld", c, B, s1, l1, (long long)pos0, window, kf,
                  (long long)wb0, (long long)k_first);
            ok = false;
        }
        const int64_t t1f = kf / CT, nt2 = std::max<int64_t>(nt1 - t1f, 0);
        for (int64_t j = 0; ok && j * ts < std::max<int64_t>(nt2, 1); j++) {
            segs++;
            const bool last = (j + 1) * ts >= nt2;
            const int64_t wb = sel_seg_block(t1f + j * ts, CT, s1, B), wb1 = sel_seg_block(t1f + (j + 1) * ts, CT, s1, B);
            const int64_t off = j == 0 ? 0 : K;
            for (int64_t pos = pos0; ok && pos <= pos_last; pos++) {
                const int64_t qb = pos / B;
                if (qb + 1 <= K) continue; /* takes all its blocks */
                if (j == 0 && qb < wb) {
                    CHECK(false, "seg plan case %d: segment 0 starts at block %lld past token %lld's block %lld", c,
                          (long long)wb, (long long)pos, (long long)qb);
                    ok = false;
                    break;
                }
                if (qb < wb) continue; /* its blocks ended before */
                const int64_t vis = visible(pos);
                for (int64_t k = (t1f + j * ts) * CT; ok && k < std::min<int64_t>((t1f + (j + 1) * ts) * CT, nt1 * CT);
                     k++) {
                    if (k >= vis) break;
                    const int64_t blo = s1 * k / B, bhi = std::min<int64_t>((s1 * k + l1 - 1) / B, qb);
                    for (int64_t bb = blo; bb <= bhi; bb++) {
                        writes++;
                        const int64_t slot = off + bb - wb;
                        if (bb < wb || slot >= off + W || slot >= stride) {
                            CHECK(false, "seg plan case %d (B %d s1 %d l1 %d local %d K %d ts %lld, lk %lld): segment %lld "
                                  "writes block %lld at slot %lld (first block %lld, window %lld, stride %lld)",
                                  c, B, s1, l1, local, K, (long long)ts, (long long)lk, (long long)j, (long long)bb,
                                  (long long)slot, (long long)wb, (long long)W, (long long)stride);
                            ok = false;
                            break;
                        }
                        if (!last && qb >= wb1 && bb >= wb1 && bb - wb1 >= npart) {
                            CHECK(false, "seg plan case %d (B %d s1 %d l1 %d K %d ts %lld): segment %lld reaches block "
                                  "%lld past its end %lld: more than %d partial slots",
                                  c, B, s1, l1, K, (long long)ts, (long long)j, (long long)bb, (long long)wb1, npart);
                            ok = false;
                            break;
                        }
                    }
                }
                /* the finalize's row: n slots, read and written in groups of 4 */
                const int64_t n = off + (last || qb < wb1 ? qb + 1 : wb1) - wb;
                if (ok && (n - off > W || (n + 3) / 4 * 4 > stride)) {
                    CHECK(false, "seg plan case %d (B %d s1 %d l1 %d local %d K %d ts %lld, lk %lld): segment %lld's "
                          "finalize of token %lld (block %lld) reads %lld slots (window %lld, stride %lld)",
                          c, B, s1, l1, local, K, (long long)ts, (long long)lk, (long long)j, (long long)pos,
                          (long long)qb, (long long)n, (long long)W, (long long)stride);
                    ok = false;
                }
                if (ok && j == 0 && !last && qb >= wb1 && wb1 - wb < K) {
                    CHECK(false, "seg plan case %d: segment 0 spans blocks %lld..%lld, fewer than K %d", c,
                          (long long)wb, (long long)wb1 - 1, K);
                    ok = false;
                }
            }
            if (last) break;
        }
        CHECK(ok || segs == 0, "seg plan case %d: bad plan (stride %lld, window %lld)", c, (long long)stride, (long long)W);
        bad += !ok;
    }
    printf("  segment plans: %d geometries, %ld segments, %ld block writes checked, %d wrong\n", cases, segs, writes, bad);
}

/* ---- cd_select ---- */
struct CdCase {
    int n, K, topk_out, init_blocks, local_blocks, e_lo, wb; /* wb: a sliding window's first block (0: none) */
    std::vector<float> score; /* n values >= 0 (or +inf / +NaN) */
    const char *mode;
};

/* the candidates [wb, n): their top min(K, n - wb), indices shifted back (reference()'s rule) */
static std::vector<int32_t> cd_reference(const CdCase &c) {
    const std::vector<uint32_t> all = ref_block_keys(c.n, c.init_blocks, c.local_blocks, c.e_lo, c.score);
    std::vector<uint32_t> key(all.begin() + c.wb, all.end());
    /* cd_select's one deviation from ordering by bits: the all-ones -NaN's key 0 counts as 1 (so that it
     * never ties with the padding); its scores are the larger of two planes, so it needs both planes
     * all-ones */
    for (auto &k : key) k = k ? k : 1u;
    std::vector<int32_t> out = ref_topk(key, std::min(c.K, c.n - c.wb), c.n - 1 - c.wb, c.topk_out);
    for (auto &x : out) x = x < 0 ? -1 : x + c.wb;
    return out;
}

static CdCase cd_draw(std::mt19937_64 &rng, int nmax) {
    auto uni = [&](int lo, int hi) { return (int)std::uniform_int_distribution<int>(lo, hi)(rng); };
    std::normal_distribution<float> nd(0.f, 1.f);
    CdCase c;
    c.n = uni(0, 3) ? uni(2, std::min(nmax, 300)) : uni(2, nmax);
    const int kk = uni(0, 5);
    c.K = kk == 0 ? 1 : kk == 1 ? c.n - 1 : uni(1, std::max(1, std::min(c.n - 1, 160)));
    c.topk_out = c.K + uni(0, 9);
    /* now and then at the API's extremes: every block an init block (INT32_MAX; its group arithmetic overflowed
     * until session 46), the whole row local (2^24, the most topk + local may be) */
    c.init_blocks = uni(0, 3) ? uni(0, 2) : uni(0, 4) ? uni(0, 40) : INT32_MAX;
    c.local_blocks = uni(0, 3) ? uni(0, 8) : uni(0, 4) ? uni(0, 60) : 1 << 24;
    c.e_lo = uni(0, 2) ? c.n + uni(0, 5) : uni(0, c.n);
    /* a sliding window now and then: its first block anywhere in the row, often near or past n - K (the rows
     * that take fewer than K) */
    const int wk = uni(0, 5);
    c.wb = wk < 3 ? 0 : wk == 3 ? uni(0, c.n - 1) : std::max(0, std::min(c.n - 1, c.n - c.K + uni(-3, 3)));
    const int mode = uni(0, 4);
    static const char *names[] = {"bf16 probabilities", "few values", "all equal", "mostly zeros", "with +inf / NaN"};
    c.mode = names[mode];
    const float levels[4] = {0.f, 0.25f, 0.5f, 2.f};
    c.score.resize(c.n);
    for (int b = 0; b < c.n; b++) {
        float v = bf16_round(std::fabs(nd(rng)) * 0.05f * (float)uni(1, 16));
        if (mode == 1) v = levels[uni(0, 3)];
        if (mode == 2) v = 0.75f;
        if (mode == 3) v = uni(0, 15) ? 0.f : v;
        if (mode == 4 && uni(0, 20) == 0) {
            const uint32_t u = uni(0, 1) ? 0x7f800000u : 0x7fc00000u | ((uint32_t)rng() & 0x3fffffu);
            memcpy(&v, &u, 4);
        }
        c.score[b] = v;
    }
    return c;
}

/* cd_select<KPT, 8> on the case (a CTA of 8 warps); false if the CTA's collectives did not match */
template <int KPT> static bool cd_run(const CdCase &c, std::vector<int32_t> &out, std::string &err, bool shuffled) {
    static simt::Team in_order(8), shuffled_cta(8);
    static const bool seeded = (shuffled_cta.shuffle_lanes(2000 + KPT), true);
    (void)seeded;
    simt::Team &cta = shuffled ? shuffled_cta : in_order;
    const int nbmax = (c.n + 3) / 4 * 4;
    static_assert(KPT * 256 <= 12288, "one row of at most CD_MAX_BLOCKS blocks");
    alignas(16) static float bs[2 * 12288]; /* row 0: plane 0 at [0, nbmax), plane 1 at [nbmax, 2 nbmax) */
    std::mt19937_64 prng((uint64_t)c.n * 7919u + (uint64_t)c.K);
    for (int b = 0; b < nbmax; b++) {
        /* the score in one plane, a smaller non-negative value (or 0) in the other */
        const float sc = b < c.n ? c.score[b] : 0.f;
        const float lo = sc == sc && sc > 0.f && sc < INFINITY ? sc * (float)(prng() % 4) * 0.25f : 0.f;
        const int side = (int)(prng() & 1);
        bs[side * nbmax + b] = sc;
        bs[(side ^ 1) * nbmax + b] = lo;
        if (b >= c.n || (b < c.wb && (prng() & 1))) {
            /* past the row, and now and then before the window (k_cd_score skips those tiles: their planes hold
             * an earlier call's scores): garbage the routine must ignore */
            const uint32_t g = 0x7fc0beefu;
            memcpy(&bs[b], &g, 4);
            memcpy(&bs[nbmax + b], &g, 4);
        }
    }
    CdParams p{};
    p.bs = bs;
    p.nbmax = nbmax;
    p.K = c.K;
    p.topk_out = c.topk_out;
    p.init_blocks = c.init_blocks;
    p.local_blocks = c.local_blocks;
    p.e_lo = c.e_lo;
    out.assign(c.topk_out + kGuardSlots, kGuard);
    const bool ok = cta.run([&](int) { cd_select<KPT, 8>(p, 0, c.n - 1, c.wb, out.data()); });
    if (!ok) err = cta.error();
    return ok;
}

template <int KPT> static void cd_cases(int rows, uint64_t seed) {
    std::mt19937_64 rng(seed);
    int bad = 0;
    for (int r = 0; r < rows; r++) {
        const CdCase c = cd_draw(rng, KPT * 256);
        std::vector<int32_t> got;
        std::string err;
        const bool ran = cd_run<KPT>(c, got, err, r & 1);
        CHECK(ran, "cd_select<%d> row %d (n %d K %d): %s", KPT, r, c.n, c.K, err.c_str());
        if (!ran) continue;
        const std::vector<int32_t> want = cd_reference(c);
        const int first = first_mismatch(got, want, c.topk_out);
        const bool guard_ok = guard_intact(got, c.topk_out);
        CHECK(first < 0,
              "cd_select<%d> row %d (%s, n %d K %d topk_out %d init %d local %d e_lo %d wb %d): slot %d is %d, want %d",
              KPT, r, c.mode, c.n, c.K, c.topk_out, c.init_blocks, c.local_blocks, c.e_lo, c.wb, first,
              first >= 0 ? got[first] : 0, first >= 0 ? want[first] : 0);
        CHECK(guard_ok, "cd_select<%d> row %d: wrote past topk_out %d", KPT, r, c.topk_out);
        bad += first >= 0 || !guard_ok;
    }
    printf("  cd_select, %d keys a thread: %d rows, %d wrong\n", KPT, rows, bad);
}

/* ---- group_window (the stage-2 token grouping, group_tokens.cuh) ---- */

/* the rule, plainly: tiles of TT, each from the lowest free token, then the free token whose bitmap adds
 * the fewest bits to the tile's union, the lowest on ties (bench/stage2_union.py's greedy_groups) */
static std::vector<int> group_reference(const std::vector<uint32_t> &bm, int ncw, int nw, int TT, int min_gain) {
    std::vector<int> order;
    std::vector<char> taken(nw, 0);
    std::vector<uint32_t> u(ncw);
    for (int slot = 0; slot < nw; slot++) {
        int best = -1;
        if (slot % TT == 0) {
            for (int t = 0; t < nw && best < 0; t++)
                if (!taken[t]) best = t;
            std::fill(u.begin(), u.end(), 0u);
        } else {
            int bv = INT_MAX;
            for (int t = 0; t < nw; t++) {
                if (taken[t]) continue;
                int c = 0;
                for (int w = 0; w < ncw; w++) c += __builtin_popcount(bm[(size_t)t * ncw + w] & ~u[w]);
                if (c < bv) bv = c, best = t;
            }
        }
        taken[best] = 1;
        for (int w = 0; w < ncw; w++) u[w] |= bm[(size_t)best * ncw + w];
        order.push_back(best);
    }
    if (min_gain > 0) { /* keep the consecutive tiles unless the greedy ones' unions are min_gain% smaller */
        auto unions = [&](const std::vector<int> &ord) {
            long total = 0;
            for (int t0 = 0; t0 < nw; t0 += TT)
                for (int w = 0; w < ncw; w++) {
                    uint32_t x = 0u;
                    for (int t = t0; t < std::min(t0 + TT, nw); t++) x |= bm[(size_t)ord[t] * ncw + w];
                    total += __builtin_popcount(x);
                }
            return total;
        };
        std::vector<int> ident(nw);
        std::iota(ident.begin(), ident.end(), 0);
        if (unions(order) * 100 > unions(ident) * (100 - min_gain)) order = ident;
    }
    return order;
}

/* group_window<256> (a CTA of 8 warps, as k_group_tokens launches it) on random windows: W up to 512
 * tokens (more than the threads: each thread then holds two), partial windows, 1-80 bitmap words (an odd
 * and an even stride), tiles of 2-32 tokens, bitmaps dense, sparse, empty, identical, "coherent" (each
 * token its neighbour's chunks with a few changed, as a real layer's selections) and interleaved clusters
 * (where grouping gains most), with and without a minimum gain, against the reference */
static void group_cases(int windows, uint64_t seed) {
    std::mt19937_64 rng(seed);
    static simt::Team in_order(8), shuffled(8);
    static const bool seeded = (shuffled.shuffle_lanes(seed ^ 0x5eed), true);
    (void)seeded;
    int bad = 0, gained = 0, kept = 0;
    for (int r = 0; r < windows; r++) {
        static const int TTs[] = {2, 4, 8, 16, 18, 25, 32}, Ws[] = {16, 64, 128, 256, 512};
        const int TT = TTs[rng() % 7];
        int W = Ws[rng() % 5];
        if (W < TT) W = TT;
        const int nw = rng() % 3 ? W : 1 + (int)(rng() % W);
        const int ncw = rng() % 4 == 0 ? 1 + (int)(rng() % 80) : (int)(1u << (rng() % 7)); /* 1..64 or any to 80 */
        const int kind = (int)(rng() % 6);
        const int nclus = 2 + (int)(rng() % 3);
        static const int gains[] = {0, 0, 5, 10, 15, 30, 99};
        const int min_gain = gains[rng() % 7];
        const int stride = group_stride(ncw);
        std::vector<uint32_t> dense((size_t)nw * ncw);
        for (int t = 0; t < nw; t++)
            for (int w = 0; w < ncw; w++) {
                uint32_t x;
                switch (kind) {
                case 0: x = (uint32_t)rng(); break;                                    /* dense */
                case 1: x = (uint32_t)(rng() & rng() & rng() & rng()); break;          /* sparse */
                case 2: x = 0u; break;                                                 /* empty: all ties */
                case 3: x = (uint32_t)(seed * 2654435761u + (uint64_t)w * 40503u); break; /* identical */
                case 5: /* interleaved clusters: token t is like token t - nclus (grouping gains much) */
                    x = t >= nclus ? dense[(size_t)(t - nclus) * ncw + w] : (uint32_t)rng();
                    if (rng() % 8 == 0) x ^= 1u << (rng() % 32);
                    break;
                default: /* coherent: the previous token's word with a bit or two moved */
                    x = t ? dense[(size_t)(t - 1) * ncw + w] : (uint32_t)(rng() & rng());
                    if (rng() % 4 == 0) x ^= 1u << (rng() % 32);
                    if (rng() % 8 == 0) x ^= 1u << (rng() % 32);
                }
                dense[(size_t)t * ncw + w] = x;
            }
        /* the routine's shared memory, laid out as k_group_tokens lays it out, garbage past the rows */
        std::vector<uint32_t> smem(group_window_smem(W, ncw) / 4, 0xdeadbeefu);
        uint32_t *bm = smem.data(), *u = bm + (size_t)W * stride, *dval = u + ncw;
        int *nzw = (int *)(dval + ncw), *grow = nzw + ncw, *order = grow + W, *sh = order + W;
        for (int t = 0; t < nw; t++)
            for (int w = 0; w < ncw; w++) bm[(size_t)t * stride + w] = dense[(size_t)t * ncw + w];
        simt::Team &cta = r & 1 ? shuffled : in_order;
        const bool ok = cta.run(
            [&](int) { group_window<256>(bm, stride, ncw, nw, TT, u, dval, nzw, grow, order, sh, min_gain); });
        CHECK(ok, "group_window window %d (W %d nw %d TT %d ncw %d min_gain %d): %s", r, W, nw, TT, ncw, min_gain,
              cta.error().c_str());
        if (!ok) {
            bad++;
            continue;
        }
        const std::vector<int> want = group_reference(dense, ncw, nw, TT, min_gain);
        kept += min_gain > 0 && want[nw - 1] == nw - 1 && std::is_sorted(want.begin(), want.end());
        gained += min_gain > 0;
        int first = -1;
        for (int i = 0; i < nw && first < 0; i++)
            if (order[i] != want[i]) first = i;
        CHECK(first < 0,
              "group_window window %d (W %d nw %d TT %d ncw %d kind %d min_gain %d): slot %d holds token %d, want %d",
              r, W, nw, TT, ncw, kind, min_gain, first, first >= 0 ? order[first] : 0, first >= 0 ? want[first] : 0);
        bad += first >= 0;
    }
    printf("  group_window: %d windows, %d wrong (%d with a minimum gain, %d of them kept consecutive)\n", windows,
           bad, gained, kept);
    CHECK(kept > 0 && kept < gained, "group_window: the minimum gain kept %d of %d windows consecutive: both outcomes "
          "must come up", kept, gained);
}

/* ---- k_flash90's block lists (flash_list.cuh) ---- */

/* flash_list_sort<256> on random tiles (1-128 tokens, 1-200 columns within the K/V stages' 16K entries, block
 * indices anywhere below 0xffff, unusable entries, duplicates, rows wider than topk_cols + 2, garbage blocks
 * in the list memory), run by a CTA of 8 warps (in lane order or shuffled); each token's row is random (the
 * rank sort), in order (the copy: the selection kernels' rows) or in order but for one adjacent pair swapped
 * anywhere, or with a block twice (which the copy must not take); then rows walk the tile's union from a
 * random start (a split's first chunk, maybe inside a block) by flash_list_seek, 1-3 chunks a block (B = 64 ..
 * 192), skipping at random the chunks of blocks the token did not select (a warpgroup whose other tokens
 * selected them) and the later chunks of its own blocks (the causal limit), but never a block of its own at or
 * after the start (k_flash90's warpgroup walks them all), each flash_list_step against the token's set */
static void list_cases(int tiles, uint64_t seed) {
    std::mt19937_64 rng(seed);
    int bad = 0;
    long queries = 0, hits = 0;
    static simt::Team in_order(8), shuffled(8);
    shuffled.shuffle_lanes(seed);
    for (int r = 0; r < tiles; r++) {
        const int ntok = 1 + (int)(rng() % 128);
        int K = 1 + (int)(rng() % 200);
        if (ntok * K > 16384) K = 16384 / ntok;
        const int list_w = K + 2 + (rng() % 4 == 0 ? (int)(rng() % 5) : 0);
        const uint32_t nblocks = rng() % 4 == 0 ? 65534u : 1u + (uint32_t)(rng() % (rng() % 2 ? 64 : 8192));
        std::vector<uint16_t> uns((size_t)ntok * K);
        for (auto &x : uns) {
            const int kind = (int)(rng() % 16);
            x = kind == 0 ? (uint16_t)0xffffu : (uint16_t)(rng() % nblocks);
        }
        for (int i = 0; i < (int)uns.size() / 8; i++) /* duplicates inside a row */
            if (K > 1) {
                const int tt = (int)(rng() % ntok), a = (int)(rng() % K), b = (int)(rng() % K);
                uns[(size_t)tt * K + a] = uns[(size_t)tt * K + b];
            }
        for (int tt = 0; tt < ntok; tt++) { /* rows in order, or in order but one adjacent pair */
            const int kind = (int)(rng() % 10);
            if (kind < 5) continue;
            uint16_t *row = uns.data() + (size_t)tt * K;
            std::sort(row, row + K);
            if (kind == 9 && K > 1) { /* in order but one block twice */
                const int a = (int)(rng() % (K - 1));
                if (row[a] != 0xffffu) row[a + 1] = row[a];
            } else if (kind == 8 && K > 1) {
                const int a = (int)(rng() % (K - 1));
                if (row[a] == row[a + 1]) row[a + 1] = row[a] == 0 ? (uint16_t)1 : (uint16_t)(row[a] + 1);
                std::swap(row[a], row[a + 1]);
            }
        }
        /* garbage that looks like blocks: a walk reading past its row's end marks shows as a wrong answer */
        std::vector<uint16_t> list((size_t)ntok * list_w + 16);
        for (auto &x : list) x = (uint16_t)(rng() % nblocks);
        simt::Team &cta = r & 1 ? shuffled : in_order;
        const bool ran = cta.run([&](int tid) { flash_list_sort<256>(uns.data(), list.data(), ntok, K, list_w, tid); });
        CHECK(ran, "flash_list_sort tile %d (ntok %d K %d): %s", r, ntok, K, cta.error().c_str());
        int first_bad = -1;
        for (int tt = 0; tt < ntok && first_bad < 0; tt++) {
            std::vector<uint16_t> want(uns.begin() + (size_t)tt * K, uns.begin() + (size_t)(tt + 1) * K);
            std::sort(want.begin(), want.end());
            want.erase(std::unique(want.begin(), want.end()), want.end());
            want.resize((size_t)K + 2, (uint16_t)0xffffu); /* distinct blocks, 0xffff, the two end marks */
            if (!std::equal(want.begin(), want.end(), list.begin() + (size_t)tt * list_w)) first_bad = tt;
        }
        CHECK(first_bad < 0, "flash_list_sort tile %d (ntok %d K %d list_w %d): token %d's row is not its sorted "
              "distinct selection, 0xffff and end marks", r, ntok, K, list_w, first_bad);
        if (first_bad >= 0) {
            bad++;
            continue;
        }
        /* the union's blocks (every usable selection plus a few no token holds), increasing */
        std::vector<uint32_t> blocks;
        for (uint16_t x : uns)
            if (x != 0xffffu) blocks.push_back(x);
        for (int i = 0; i < 8; i++) blocks.push_back((uint32_t)(rng() % nblocks));
        std::sort(blocks.begin(), blocks.end());
        blocks.erase(std::unique(blocks.begin(), blocks.end()), blocks.end());
        const int cpb = 1 + (int)(rng() % 3);
        const size_t start = rng() % 3 == 0 ? rng() % blocks.size() : 0;
        const int start_ch = (int)(rng() % cpb); /* a split may start inside a block */
        int wrong = 0;
        for (int row = 0; row < 6 && !wrong; row++) { /* rows of random tokens, two of them the first */
            const int tt = row < 2 ? 0 : (int)(rng() % ntok);
            std::vector<uint16_t> sel(uns.begin() + (size_t)tt * K, uns.begin() + (size_t)(tt + 1) * K);
            int cur = flash_list_seek(list.data(), tt * list_w, blocks[start]);
            const int skip_pct = (int)(rng() % 70);
            for (size_t bi = start; bi < blocks.size() && !wrong; bi++) {
                const uint32_t b = blocks[bi];
                const bool want = std::find(sel.begin(), sel.end(), (uint16_t)b) != sel.end();
                const int ch0 = bi == start ? start_ch : 0;
                for (int ch = ch0; ch < cpb; ch++) {
                    /* a selected block's first walked chunk is never skipped */
                    if ((!want || ch > ch0) && (int)(rng() % 100) < skip_pct) continue;
                    const bool got = flash_list_step(list.data(), &cur, b);
                    queries++;
                    hits += got;
                    if (got != want || cur < tt * list_w || cur > tt * list_w + K) {
                        CHECK(false, "flash_list_step tile %d (ntok %d K %d list_w %d, %d chunks a block, start %zu "
                              "chunk %d): token %d block %u: got %d want %d, cursor at %d of its row",
                              r, ntok, K, list_w, cpb, start, start_ch, tt, b, (int)got, (int)want, cur - tt * list_w);
                        wrong = 1;
                        break;
                    }
                }
            }
        }
        bad += wrong;
    }
    printf("  flash_list: %d tiles, %ld cursor queries (%ld selected), %d wrong\n", tiles, queries, hits, bad);
    CHECK(hits > 0 && hits < queries, "flash_list: the queries must both hit and miss (%ld of %ld hit)", hits, queries);
}

/* bwd_plan.cuh on random batches (1-4 sequences of 0-3,000 queries over as many or up to 2,000 more keys, 1-3 KV
 * heads, sparse chunk rows of every density with the first chunk often full, or dense; targets 1 .. 600 pieces):
 * bwd_plan_count_sparse by a warp an entry, bwd_plan_scan by a CTA of 1,024 lanes, bwd_plan_items by a warp an
 * entry (odd batches with the lanes shuffled); a quarter of the batches with caches of up to 30,000 keys, so that
 * the scan takes several rounds; then against the rows: P = max(BWD_PLAN_MIN_P, ceil(all / target)), an entry's
 * pieces ceil(n / P) (1 for a chunk of no tokens, none past the keys), its items consecutive from item_off with
 * its index, [i_start, lq) cut into consecutive ranges whose listed tokens (as k_bwd_kv takes them: the words of
 * a range through bwd_piece_word) are P each but the last (1..P), every token once; the items and the partial
 * slots (distinct, for chunks of several pieces only) within the bounds the workspace is sized by. */
static void bwd_plan_cases(int cases, uint64_t seed) {
    std::mt19937_64 rng(seed);
    static simt::Team warp_in_order(1), warp_shuffled(1), cta_in_order(BWD_PLAN_THREADS / 32),
        cta_shuffled(BWD_PLAN_THREADS / 32);
    cta_shuffled.shuffle_lanes(seed);
    warp_shuffled.shuffle_lanes(seed + 1);
    int wide_cases = 0;
    int bad = 0, multi = 0;
    for (int r = 0; r < cases && bad < 5; r++) {
        const int nseq = 1 + (int)(rng() % 4), Hkv = 1 + (int)(rng() % 3);
        const bool sparse = rng() % 4 != 0;
        static const int targets[] = {1, 2, 7, 64, 528, 600};
        const int target = targets[rng() % 6];
        std::vector<int32_t> lq(nseq), lk(nseq);
        int64_t total_q = 0;
        int max_lk = 0;
        const bool wide = rng() % 4 == 0; /* long caches: more than one round of the scan's 1,024 entries */
        for (int b = 0; b < nseq; b++) {
            lq[b] = rng() % 8 == 0 ? (int32_t)(rng() % 3) : (int32_t)(rng() % (wide ? 601 : 3001));
            lk[b] = lq[b] + (rng() % 2 ? 0 : (int32_t)(rng() % (wide ? 30001 : 2001)));
            total_q += lq[b];
            max_lk = std::max(max_lk, (int)lk[b]);
        }
        const int max_chunks = (max_lk + 63) / 64;
        const int64_t nent = (int64_t)nseq * Hkv * max_chunks;
        simt::Team &warp = r & 1 ? warp_shuffled : warp_in_order;
        wide_cases += nent > BWD_PLAN_THREADS;
        /* each entry's row (sparse) of ceil(lq / 32) words; a density per chunk, chunk 0 often every token */
        std::vector<std::vector<uint32_t>> rows((size_t)nent);
        std::vector<int32_t> cnt_want((size_t)nent), first((size_t)nent);
        for (int64_t e = 0; e < nent; e++) {
            const int c = (int)(e % max_chunks), b = (int)(e / max_chunks / Hkv);
            first[e] = bwd_first_token(c, lq[b], lk[b]);
            if ((int64_t)c * 64 >= lk[b]) {
                cnt_want[e] = -1;
                continue;
            }
            if (!sparse) {
                cnt_want[e] = lq[b] - first[e];
                continue;
            }
            rows[e].assign((size_t)(lq[b] + 31) / 32, 0u);
            static const int dens[] = {0, 2, 50, 100, 100};
            const int d = c == 0 && rng() % 2 ? 100 : dens[rng() % 5];
            int n = 0;
            for (int i = first[e]; i < lq[b]; i++)
                if ((int)(rng() % 100) < d) rows[e][i / 32] |= 1u << (i % 32), n++;
            cnt_want[e] = n;
        }
        /* the count (sparse: a warp an entry; -1 and dense as k_bwd_plan_count) */
        std::vector<int32_t> cnt((size_t)nent), npieces((size_t)nent, -7), item_off((size_t)nent, -7), slot_off((size_t)nent, -7);
        for (int64_t e = 0; e < nent; e++) {
            cnt[e] = cnt_want[e];
            if (!sparse || cnt_want[e] < 0) continue;
            const int b = (int)(e / max_chunks / Hkv);
            int got = -1;
            const bool ran = warp.run([&](int lane) {
                const int n = bwd_plan_count_sparse(rows[e].data(), first[e], lq[b], lane);
                if (lane == 0) got = n;
            });
            CHECK(ran && got == cnt_want[e], "bwd_plan_count_sparse case %d entry %lld: %d, want %d %s", r, (long long)e,
                  got, cnt_want[e], warp.error().c_str());
            if (got != cnt_want[e]) bad++;
        }
        const int64_t items_max = bwd_plan_items_bound(nent, target);
        const int64_t slots_max = bwd_plan_slots_bound(total_q, Hkv, max_chunks, target);
        std::vector<int4> items((size_t)items_max + 4, int4{-9, -9, -9, -9});
        int32_t hdr[2] = {-1, -1};
        BwdPlan q{nent, target, cnt.data(), npieces.data(), item_off.data(), slot_off.data(), items.data(), hdr};
        simt::Team &cta = r & 1 ? cta_shuffled : cta_in_order;
        const bool ran = cta.run([&](int tid) { bwd_plan_scan(q, tid); });
        CHECK(ran, "bwd_plan_scan case %d: %s", r, cta.error().c_str());
        if (!ran) {
            bad++;
            continue;
        }
        long long all = 0;
        for (int64_t e = 0; e < nent; e++) all += std::max(cnt[e], 0);
        const long long P = std::max((long long)BWD_PLAN_MIN_P, (all + target - 1) / target);
        CHECK(hdr[1] == P, "bwd_plan_scan case %d: P %d, want %lld", r, hdr[1], P);
        int64_t next_item = 0, next_slot = 0;
        bool scan_ok = hdr[1] == P;
        for (int64_t e = 0; e < nent && scan_ok; e++) {
            const int want_pc = cnt[e] < 0 ? 0 : (int)std::max(1LL, (cnt[e] + P - 1) / P);
            scan_ok = npieces[e] == want_pc && item_off[e] == next_item && slot_off[e] == next_slot;
            CHECK(scan_ok, "bwd_plan_scan case %d entry %lld (n %d): pieces %d at item %d slot %d, want %d at %lld / %lld", r,
                  (long long)e, cnt[e], npieces[e], item_off[e], slot_off[e], want_pc, (long long)next_item,
                  (long long)next_slot);
            next_item += want_pc;
            next_slot += want_pc > 1 ? want_pc : 0;
        }
        CHECK(!scan_ok || (hdr[0] == next_item && next_item <= items_max && next_slot <= slots_max),
              "bwd_plan case %d: %d items (%lld), bound %lld; %lld slots, bound %lld", r, hdr[0], (long long)next_item,
              (long long)items_max, (long long)next_slot, (long long)slots_max);
        if (!scan_ok) {
            bad++;
            continue;
        }
        /* the items, and the pieces against the rows */
        for (int64_t e = 0; e < nent; e++) {
            const int pc = npieces[e];
            if (pc == 0) continue;
            const int b = (int)(e / max_chunks / Hkv);
            const uint32_t *rb = sparse ? rows[e].data() : nullptr;
            const bool ran_items = warp.run([&](int lane) { bwd_plan_items(q, e, pc, rb, first[e], lq[b], lane); });
            CHECK(ran_items, "bwd_plan_items case %d entry %lld: %s", r, (long long)e, warp.error().c_str());
            multi += pc > 1;
            const int words = (lq[b] + 31) / 32;
            int expect_lo = first[e], seen = 0;
            bool ok = ran_items;
            std::string why;
            for (int x = 0; x < pc && ok; x++) {
                const int4 it = items[(size_t)item_off[e] + x];
                const int want_slot = pc > 1 ? slot_off[e] + x : -1;
                if (it.x != (int)e || it.y != expect_lo || it.w != want_slot || it.z < it.y || (x == pc - 1 && it.z != lq[b])) {
                    ok = false;
                    why = "item {" + std::to_string(it.x) + ", " + std::to_string(it.y) + ", " + std::to_string(it.z) + ", " +
                          std::to_string(it.w) + "} of piece " + std::to_string(x);
                    break;
                }
                int n = 0;
                if (sparse) { /* as k_bwd_kv lists a piece: windows of 1,024 tokens from its first word */
                    for (int wbase = it.y & ~31; wbase < it.z; wbase += 1024)
                        for (int lane = 0; lane < 32; lane++) {
                            const int w = (wbase >> 5) + lane;
                            const uint32_t m = bwd_piece_word(rb, words, w, it.y, it.z);
                            const uint32_t inside = w < words ? rb[w] : 0u;
                            if ((m & ~inside) != 0u) ok = false;
                            for (int bit = 0; bit < 32; bit++)
                                if (((inside >> bit) & 1u) && w * 32 + bit >= it.y && w * 32 + bit < it.z && !((m >> bit) & 1u))
                                    ok = false; /* a listed token of the range dropped */
                            n += __builtin_popcount(m);
                        }
                } else {
                    n = it.z - it.y;
                }
                if (!ok) why = "piece " + std::to_string(x) + "'s words";
                else if (n > P || (x < pc - 1 && n != P) || (n == 0 && cnt[e] > 0)) {
                    ok = false;
                    why = "piece " + std::to_string(x) + " of " + std::to_string(n) + " tokens";
                }
                seen += n;
                expect_lo = it.z;
            }
            if (ok && seen != cnt[e]) {
                ok = false;
                why = "pieces list " + std::to_string(seen) + " tokens";
            }
            CHECK(ok, "bwd_plan case %d (%s, target %d, P %lld) entry %lld (lq %d lk %d first %d n %d, %d pieces): %s", r,
                  sparse ? "sparse" : "dense", target, P, (long long)e, lq[b], lk[b], first[e], cnt[e], pc, why.c_str());
            if (!ok) bad++;
        }
    }
    CHECK(multi > cases / 4 && wide_cases > cases / 20, "bwd_plan: too few chunks of several pieces (%d) or batches "
          "of more than %d entries (%d) in %d cases", multi, BWD_PLAN_THREADS, wide_cases, cases);
    printf("  bwd_plan: %d batches (%d of more than %d entries), %d chunks of several pieces, %d wrong\n", cases,
           wide_cases, BWD_PLAN_THREADS, multi, bad);
}

int main() {
    const char *er = getenv("INFLLM_TOPK_HOST_ROWS"), *es = getenv("INFLLM_TOPK_HOST_SEED");
    const int rows = er ? atoi(er) : 1500;
    const uint64_t seed = es ? strtoull(es, nullptr, 10) : 22;
    printf("test_topk_host: sel90_topk_radix (src/cuda/sel_topk.cuh) on the host, %d rows a team size, seed %" PRIu64
           "\n",
           rows, seed);

    /* the shim itself: a collective that one lane skips is reported, not a hang */
    {
        simt::Team team(1);
        const bool ok = team.run([&](int t) {
            if (t != 5) (void)__ballot_sync(0xffffffffu, 1);
        });
        CHECK(!ok && !team.error().empty(), "simt shim: a ballot that lane 5 skips was not reported");
        simt::Team pair(2);
        const bool ok2 = pair.run([&](int t) {
            if (t < 32) named_bar_sync<4, 64>();
        });
        CHECK(!ok2, "simt shim: a named barrier that warp 1 skips was not reported");
        int ballot_ok = 1;
        const bool ok3 = team.run([&](int t) {
            const unsigned b = __ballot_sync(0xffffffffu, t % 3 == 0);
            const int s = __shfl_down_sync(0xffffffffu, t, 4);
            ballot_ok &= b == 0x49249249u && s == (t + 4 < 32 ? t + 4 : t) &&
                         __reduce_add_sync(0xffffffffu, (unsigned)t) == 496u;
        });
        CHECK(ok3 && ballot_ok, "simt shim: ballot / shuffle / reduce results");
        /* shuffled lanes: a read of another lane's write with no collective in between sees it in some
         * runs and not in others (in lane order, lane 0 never sees lane 31's) */
        simt::Team mixed(1);
        mixed.shuffle_lanes(7);
        int seen = 0, runs = 40;
        for (int r = 0; r < runs; r++) {
            int flag = 0, got = -1;
            mixed.run([&](int t) {
                if (t == 31) flag = 1;
                if (t == 0) got = flag;
                __syncwarp();
            });
            seen += got == 1;
        }
        CHECK(seen > 0 && seen < runs, "simt shim: shuffled lanes saw a racy write in %d of %d runs", seen, runs);
    }

    run_cases<1>(rows, seed);
    run_cases<2>(rows, seed + 1);
    seg_cases<1>(rows / 2, seed + 7);
    seg_plan_cases(rows, seed + 9);
    seg_cases<2>(rows / 2, seed + 8);
    cd_cases<4>(rows / 5, seed + 2);
    cd_cases<8>(rows / 10, seed + 3);
    cd_cases<48>(rows / 100 + 1, seed + 4);
    group_cases(rows / 10, seed + 5);
    list_cases(rows / 5, seed + 6);
    bwd_plan_cases(rows / 10, seed + 10);
    return finish("test_topk_host");
}
