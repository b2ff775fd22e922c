/*
 * test_topk_host: the selection's device top-k, sel90_topk_radix (src/cuda/sel_topk.cuh: the finalize of
 * k_select, k_select90 and k_dec_topk), compiled for the host and run lane by lane on tests/simt_host.h,
 * for teams of 1 and 2 warps, against a plain sort. CI has no GPU; this runs the routine's own source
 * there, on rows the GPU grid rarely makes: every length from 1 block up, k of 0, 1, n - 1, n and
 * above, forced and empty blocks at both ends, heavy ties, +-inf, +-0, subnormals and NaN payloads of
 * both signs, garbage past the row and in the team's shared memory.
 *
 * Reference (SPEC B §7, the CUDA routine's contract): block bb's key is f2key(+inf) if it is forced (one
 * of the first init_blocks, or bb >= qb - local_blocks), else f2key(-inf) if bb >= e_lo (no kernel touches
 * it), else f2key(score); the k = min(max(k, 0), n) largest keys, ties to the lower index, written
 * ascending, an index > qmax as -1, then -1 up to ncols. f2key orders NaNs by their bits.
 *
 * Knobs: INFLLM_TOPK_HOST_ROWS (default 1500 rows a team size), INFLLM_TOPK_HOST_SEED.
 * Ends with "test_topk_host: N passed, N failed" (tests/harness.h); exit 1 on any failure.
 */
#include "simt_host.h"

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
    std::vector<float> score; /* n values */
    const char *mode;
};

static std::vector<int32_t> reference(const RowCase &c) {
    const int qb = c.n - 1; /* the callers' row: blocks 0..qb of a query in block qb */
    const int k = std::min(std::max(c.k, 0), c.n);
    std::vector<uint32_t> key(c.n);
    for (int b = 0; b < c.n; b++) {
        const bool forced = b < c.init_blocks || b >= qb - c.local_blocks;
        key[b] = forced ? 0xff800000u : b >= c.e_lo ? 0x007fffffu : key_ref(c.score[b]);
    }
    std::vector<int> idx(c.n);
    std::iota(idx.begin(), idx.end(), 0);
    std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return key[a] > key[b]; });
    idx.resize(k);
    std::sort(idx.begin(), idx.end());
    std::vector<int32_t> out(c.ncols, -1);
    for (int j = 0; j < k && j < c.ncols; j++) out[j] = idx[j] > c.qmax ? -1 : idx[j];
    return out;
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
    c.init_blocks = uni(0, 3) ? uni(0, 2) : uni(0, 40);
    c.local_blocks = uni(0, 3) ? uni(0, 8) : uni(0, 60);
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
    return c;
}

/* runs sel90_topk_radix<TW> on the case; false if the team's collectives did not match */
template <int TW> static bool run_device(const RowCase &c, std::vector<int32_t> &out, std::string &err) {
    static simt::Team team(TW);
    const int slots = (c.n + 3) / 4 * 4 + 4;
    alignas(16) static float row[2204 + 8];
    alignas(16) static uint32_t team_mem[SEL90_TOPK_TEAM_WORDS];
    for (int i = 0; i < slots; i++) {
        const uint32_t garbage = 0x7fc0dead; /* a NaN past the row: must never count */
        if (i < c.n) row[i] = c.score[i];
        else memcpy(&row[i], &garbage, 4);
    }
    for (auto &w : team_mem) w = 0xa5a5a5a5u;
    const int guard = 8;
    out.assign(c.ncols + guard, 0x7eadbeef);
    const int qb = c.n - 1;
    const SelBlockKey key_of{qb, c.init_blocks, c.local_blocks, c.e_lo};
    const bool ok = team.run([&](int t) {
        sel90_topk_radix<TW>(row, c.n, c.k, c.qmax, out.data(), c.ncols, team_mem, t / 32, 0, key_of);
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
        const bool ran = run_device<TW>(c, got, err);
        CHECK(ran, "TW %d row %d (n %d k %d): %s", TW, r, c.n, c.k, err.c_str());
        if (!ran) continue;
        const std::vector<int32_t> want = reference(c);
        bool same = true;
        int first = -1;
        for (int j = 0; j < c.ncols; j++)
            if (got[j] != want[j]) {
                same = false;
                first = j;
                break;
            }
        bool guard_ok = true;
        for (size_t j = c.ncols; j < got.size(); j++) guard_ok = guard_ok && got[j] == 0x7eadbeef;
        CHECK(same, "TW %d row %d (%s, n %d k %d qmax %d ncols %d init %d local %d e_lo %d): slot %d is %d, want %d",
              TW, r, c.mode, c.n, c.k, c.qmax, c.ncols, c.init_blocks, c.local_blocks, c.e_lo, first,
              first >= 0 ? got[first] : 0, first >= 0 ? want[first] : 0);
        CHECK(guard_ok, "TW %d row %d: wrote past ncols %d", TW, r, c.ncols);
        bad += !same || !guard_ok;
    }
    printf("  team of %d warp%s: %d rows, %d wrong\n", TW, TW > 1 ? "s" : "", rows, bad);
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
    }

    run_cases<1>(rows, seed);
    run_cases<2>(rows, seed + 1);
    return finish("test_topk_host");
}
