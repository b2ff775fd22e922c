// Host emulation of k_select90's top-k (src/cuda/sel_topk.cuh; since session 22 its own source also runs on the
// host in CI: tests/test_topk_host.cpp): build with
// `g++ -O2 -o emu docs/topk-emu.cpp && ./emu`; exit status 0 when every routine agrees with the
// reference on every row. The reference is session 9's sel90_topk (floats, f2key per pass, a
// bit-by-bit search of the k-th key, 32-key scan steps). Against it: session 10's sel90_topk_keys
// (keys in place, zero padding, 4 keys a lane, 128-key scan steps; on the device 26e6a37-d732329),
// radix_thr (the radix select of the threshold alone), and team_topk<1> / <2>, the device's
// sel90_topk_radix as of session 11 (7530a82) for teams of 1 and 2 warps, phase by phase. All
// written as 32-lane loops with the warp collectives as sums / ballots over the lanes. Keep
// team_topk in step with the device routine when that changes. team_topk_b<1> / <2> (session 21) is
// the byte radix over all keys (the top-byte histogram built in the key pass) that the device's
// sel90_topk_radix is since session 22; team_topk stays as the routine it replaced.
// Scores: bf16, many ties, f32, zeros, arbitrary bits, and +NaN / -NaN payloads next to +inf / -inf
// (the cases where the radix select's skip of common bits needs its guard).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <cmath>
#include <random>
#include <vector>
static uint32_t f2key(float f) { uint32_t u; memcpy(&u, &f, 4); return (u & 0x80000000u) ? ~u : (u | 0x80000000u); }
static int popc(uint32_t x) { return __builtin_popcount(x); }
static int clz(uint32_t x) { return __builtin_clz(x); }
static const uint32_t KINF = 0xff800000u, KNINF = 0x007fffffu;

// The first pass, the same in every routine below (and on the device in both versions): the keys
// >= / > f2key(+inf) and f2key(-inf), and the AND / OR of the keys other than those two.
struct KeyStats {
    uint32_t kand = ~0u, kor = 0u, ge_inf = 0, gt_inf = 0, ge_ninf = 0, gt_ninf = 0;
    void add(uint32_t key) {
        ge_inf += key >= KINF; gt_inf += key > KINF; ge_ninf += key >= KNINF; gt_ninf += key > KNINF;
        if (key != KINF && key != KNINF) { kand &= key; kor |= key; }
    }
    // the k-th largest key when it is f2key(+inf) or f2key(-inf); false when it lies in the others
    bool inf_thr(uint32_t uk, uint32_t *thr) const {
        if (ge_inf >= uk && gt_inf < uk) { *thr = KINF; return true; }
        if (ge_ninf >= uk && gt_ninf < uk) { *thr = KNINF; return true; }
        return false;
    }
};

// ---- old: sel90_topk(vals, n, k, qmax, out, ncols), out has ncols slots
static void old_topk(const std::vector<float> &vals, int n, int k, int qmax, std::vector<int> &out, int ncols) {
    if (k > n) k = n;
    if (k < 0) k = 0;
    uint32_t thr = 0;
    if (k > 0 && k < n) {
        KeyStats st;
        for (int i = 0; i < n; i++) st.add(f2key(vals[i]));
        const uint32_t uk = k, kand = st.kand;
        if (!st.inf_thr(uk, &thr)) {
            for (uint32_t diff = kand ^ st.kor; diff;) {
                uint32_t bit = 0x80000000u >> clz(diff);
                thr |= kand & ~(bit * 2u - 1u);
                uint32_t cand = thr | bit, cnt = 0;
                for (int i = 0; i < n; i++) cnt += f2key(vals[i]) >= cand;
                if (cnt >= uk) thr = cand;
                diff &= ~bit;
            }
            thr |= kand;
        }
    }
    int need_eq = k;
    if (k > 0 && k < n) { uint32_t gt = 0; for (int i = 0; i < n; i++) gt += f2key(vals[i]) > thr; need_eq = k - (int)gt; }
    int written = 0, eq_used = 0;
    for (int base = 0; base < n && written < k; base += 32) {
        bool gtb[32], eqb[32], take[32]; uint32_t eqm = 0, tm = 0;
        for (int l = 0; l < 32; l++) {
            int i = base + l; uint32_t key = i < n ? f2key(vals[i]) : 0;
            gtb[l] = i < n && (k >= n || key > thr); eqb[l] = i < n && k < n && key == thr;
            if (eqb[l]) eqm |= 1u << l;
        }
        for (int l = 0; l < 32; l++) {
            int eq_rank = popc(eqm & ((1u << l) - 1u));
            take[l] = gtb[l] || (eqb[l] && eq_used + eq_rank < need_eq);
            if (take[l]) tm |= 1u << l;
        }
        for (int l = 0; l < 32; l++) {
            int i = base + l; int pos = written + popc(tm & ((1u << l) - 1u));
            if (take[l] && pos < k) out[pos] = i > qmax ? -1 : i;
        }
        written += popc(tm); eq_used += popc(eqm); if (eq_used > need_eq) eq_used = need_eq;
    }
    for (int c = k; c < ncols; c++) out[c] = -1;
}

// ---- new: sel90_topk_keys(keys, n, k, qmax, out, ncols); keys has (n+3)&~3 entries, pads 0
static void new_topk(const std::vector<uint32_t> &keys, int n, int k, int qmax, std::vector<int> &out, int ncols) {
    const int n4 = (n + 3) >> 2;
    if (k > n) k = n;
    if (k < 0) k = 0;
    uint32_t thr = 0;
    if (k > 0 && k < n) {
        KeyStats st;
        for (int i = 0; i < n; i++) st.add(keys[i]); // the device checks i < n inside its 4-key groups
        const uint32_t uk = k, kand = st.kand;
        if (!st.inf_thr(uk, &thr)) {
            for (uint32_t diff = kand ^ st.kor; diff;) {
                uint32_t bit = 0x80000000u >> clz(diff);
                thr |= kand & ~(bit * 2u - 1u);
                uint32_t cand = thr | bit, cnt = 0;
                for (int gi = 0; gi < n4; gi++)
                    for (int e = 0; e < 4; e++) cnt += keys[4 * gi + e] >= cand;  // pads included, as on the GPU
                if (cnt >= uk) thr = cand;
                diff &= ~bit;
            }
            thr |= kand;
        }
    }
    int need_eq = k;
    if (k > 0 && k < n) {
        uint32_t gt = 0;
        for (int gi = 0; gi < n4; gi++) for (int e = 0; e < 4; e++) gt += keys[4 * gi + e] > thr;
        need_eq = k - (int)gt;
    }
    int written = 0, eq_used = 0;
    for (int g0 = 0; g0 < n4 && written < k; g0 += 32) {
        uint32_t v[32][4]; bool gtb[32][4], eqb[32][4], take[32][4]; uint32_t eqm[4] = {0, 0, 0, 0}, tm[4] = {0, 0, 0, 0};
        for (int l = 0; l < 32; l++) {
            int gi = g0 + l;
            for (int e = 0; e < 4; e++) v[l][e] = gi < n4 ? keys[4 * gi + e] : 0u;
            for (int e = 0; e < 4; e++) {
                int i = 4 * gi + e;
                gtb[l][e] = i < n && (k >= n || v[l][e] > thr);
                eqb[l][e] = i < n && k < n && v[l][e] == thr;
                if (eqb[l][e]) eqm[e] |= 1u << l;
            }
        }
        for (int l = 0; l < 32; l++) {
            uint32_t lower = (1u << l) - 1u;
            int eq_rank = popc(eqm[0] & lower) + popc(eqm[1] & lower) + popc(eqm[2] & lower) + popc(eqm[3] & lower);
            for (int e = 0; e < 4; e++) {
                take[l][e] = gtb[l][e] || (eqb[l][e] && eq_used + eq_rank < need_eq);
                eq_rank += eqb[l][e];
                if (take[l][e]) tm[e] |= 1u << l;
            }
        }
        for (int l = 0; l < 32; l++) {
            uint32_t lower = (1u << l) - 1u; int gi = g0 + l;
            int pos = written + popc(tm[0] & lower) + popc(tm[1] & lower) + popc(tm[2] & lower) + popc(tm[3] & lower);
            for (int e = 0; e < 4; e++) {
                int i = 4 * gi + e;
                if (take[l][e]) { if (pos < k) out[pos] = i > qmax ? -1 : i; pos++; }
            }
        }
        written += popc(tm[0]) + popc(tm[1]) + popc(tm[2]) + popc(tm[3]);
        eq_used += popc(eqm[0]) + popc(eqm[1]) + popc(eqm[2]) + popc(eqm[3]);
        if (eq_used > need_eq) eq_used = need_eq;
    }
    for (int c = k; c < ncols; c++) out[c] = -1;
}


// ---- next step after the patch (CUDA_NOTES): the k-th largest key by radix select. The bit search
// needs ~12 counting passes for bf16 scores; this needs the AND/OR pass plus one histogram pass per
// 8-bit window of the bits in which the candidates differ (~2 for bf16), and gives need_eq without
// the "> thr" pass. Sequential here (a warp would build each histogram with shared atomics).
// Returns thr; *need_eq = how many keys equal to thr to take; *hpasses = histogram passes.
static uint32_t radix_thr(const std::vector<uint32_t> &keys, int n, int k, int *need_eq, int *hpasses) {
    KeyStats st;
    for (int i = 0; i < n; i++) st.add(keys[i]);
    *hpasses = 0;
    uint32_t thr;
    if (st.inf_thr((uint32_t)k, &thr)) {
        *need_eq = k - (int)(thr == KINF ? st.gt_inf : st.gt_ninf);
        return thr;
    }
    // the k-th largest key lies in S (keys other than +-inf), whose keys share every bit above `top`
    const uint32_t kand = st.kand, diff = kand ^ st.kor;
    const int top = diff ? 31 - clz(diff) : -1;
    uint32_t pmask = top < 0 ? ~0u : top == 31 ? 0u : ~((2u << top) - 1u); // top = -1: all bits
    uint32_t prefix = kand & pmask;
    // candidates: keys with the same bits under pmask; keys above them rank first
    int above = 0; bool nonS = false;
    for (int i = 0; i < n; i++) {
        uint32_t m = keys[i] & pmask;
        above += m > prefix;
        if (m == prefix && (keys[i] == KINF || keys[i] == KNINF)) nonS = true;
    }
    int kk = k - above;
    for (int hi = top; hi >= 0; hi -= 8) {
        const int lo = hi >= 7 ? hi - 7 : 0;
        const uint32_t wmask = (hi == 31 ? ~0u : (2u << hi) - 1u) & ~((1u << lo) - 1u);
        if (!nonS && (diff & wmask) == 0) { prefix |= kand & wmask; pmask |= wmask; continue; } // common bits
        int hist[256] = {0};
        for (int i = 0; i < n; i++)
            if ((keys[i] & pmask) == prefix) hist[(keys[i] & wmask) >> lo]++;
        ++*hpasses;
        int cum = 0, d = 255;
        for (; d > 0; d--) { if (cum + hist[d] >= kk) break; cum += hist[d]; }
        kk -= cum;
        prefix |= (uint32_t)d << lo;
        pmask |= wmask;
    }
    *need_eq = kk; // the candidates left are the keys equal to prefix
    return prefix;
}

// sel90_topk_keys with radix_thr for the threshold (the same scan)
static void radix_topk(const std::vector<uint32_t> &keys, int n, int k, int qmax, std::vector<int> &out, int ncols,
                       int *hpasses) {
    if (k > n) k = n;
    if (k < 0) k = 0;
    uint32_t thr = 0; int need_eq = k;
    *hpasses = 0;
    if (k > 0 && k < n) thr = radix_thr(keys, n, k, &need_eq, hpasses);
    int written = 0, eq_used = 0;
    for (int i = 0; i < n && written < k; i++) {  // index order, as both scans
        uint32_t key = keys[i];
        bool take = (k >= n || key > thr) || (k < n && key == thr && eq_used < need_eq);
        if (k < n && key == thr) eq_used++;
        if (take) { out[written] = i > qmax ? -1 : i; written++; }
    }
    for (int c = k; c < ncols; c++) out[c] = -1;
}

// the digit search of a radix window, as the device's (lane l holds bins 8 l..8 l + 7 of the two warps'
// histograms summed; a suffix scan + ballot finds the lane, then the bin): the highest bin whose count from
// the top reaches kk (else 0). kk drops by the count above it; gt0 gains warp 0's count above it, eq0 is
// warp 0's count in it. Returns the digit.
static int pick_digit(const uint32_t (&h)[2][256], uint32_t &kk, uint32_t &gt0, uint32_t &eq0) {
    uint32_t bins[32][8], s[32], incl[32];
    for (int l = 0; l < 32; l++) { s[l] = 0; for (int j = 0; j < 8; j++) { bins[l][j] = h[0][8 * l + j] + h[1][8 * l + j]; s[l] += bins[l][j]; } }
    for (int l = 31; l >= 0; l--) incl[l] = s[l] + (l < 31 ? incl[l + 1] : 0);
    unsigned hit = 0;
    for (int l = 0; l < 32; l++) if (incl[l] >= kk) hit |= 1u << l;
    const int L = hit ? 31 - clz(hit) : 0;
    uint32_t c = incl[L] - s[L], cd = 0; int dj = -1;
    for (int j = 7; j >= 0; j--) {
        if (dj < 0 && (c + bins[L][j] >= kk || (L == 0 && j == 0))) { dj = j; cd = c; }
        c += bins[L][j];
    }
    const int d = 8 * L + dj;
    kk -= cd;
    for (int b = d + 1; b < 256; b++) gt0 += h[0][b];
    eq0 = h[0][d];
    return d;
}

// the device's scan in index order by a team of TW warps, warp tw over its half of the 4-key groups, 128 keys
// a step: key > thr, and key == thr while ties remain (need_eq); warp 1 starts from warp 0's counts gt0 /
// eq0. (The caller fills the slots past k with -1.)
template <int TW>
static void team_scan(const std::vector<uint32_t> &keys, int n, int k, int qmax, std::vector<int> &out, int hsplit,
                      uint32_t thr, int need_eq, uint32_t gt0, uint32_t eq0) {
    const int n4 = (n + 3) >> 2;
    auto lo_of = [&](int tw) { return tw == 0 ? 0 : hsplit; };
    auto hi_of = [&](int tw) { return tw == 0 ? hsplit : n4; };
    auto key = [&](int i) { return keys[i]; };
    for (int tw = 0; tw < TW; tw++) {
        const int g_lo = lo_of(tw), g_hi = hi_of(tw);
        int written = 0, eq_used = 0;
        if (tw == 1) { eq_used = std::min((int)eq0, need_eq); written = (int)gt0 + eq_used; }
        for (int g0 = g_lo; g0 < g_hi && written < k; g0 += 32) {
            bool gtb[32][4], eqb[32][4], take[32][4]; unsigned eqm[4] = {0, 0, 0, 0}, tm[4] = {0, 0, 0, 0};
            for (int l = 0; l < 32; l++) {
                const int gi = g0 + l;
                for (int e = 0; e < 4; e++) {
                    const uint32_t v = gi < g_hi ? key(4 * gi + e) : 0u;
                    const int i = 4 * gi + e;
                    gtb[l][e] = gi < g_hi && i < n && (k >= n || v > thr);
                    eqb[l][e] = gi < g_hi && i < n && k < n && v == thr;
                    if (eqb[l][e]) eqm[e] |= 1u << l;
                }
            }
            // the device takes keys == thr (by their ranks from 4 more ballots) only in the steps that hold
            // one (a warp-uniform vote); elsewhere take = gt
            const bool any_eq = (eqm[0] | eqm[1] | eqm[2] | eqm[3]) != 0u;
            for (int l = 0; l < 32; l++) {
                const unsigned lower = (1u << l) - 1u;
                int eq_rank = popc(eqm[0] & lower) + popc(eqm[1] & lower) + popc(eqm[2] & lower) + popc(eqm[3] & lower);
                for (int e = 0; e < 4; e++) {
                    take[l][e] = any_eq ? gtb[l][e] || (eqb[l][e] && eq_used + eq_rank < need_eq) : gtb[l][e];
                    eq_rank += eqb[l][e];
                    if (take[l][e]) tm[e] |= 1u << l;
                }
            }
            for (int l = 0; l < 32; l++) {
                const unsigned lower = (1u << l) - 1u;
                int pos = written + popc(tm[0] & lower) + popc(tm[1] & lower) + popc(tm[2] & lower) + popc(tm[3] & lower);
                for (int e = 0; e < 4; e++)
                    if (take[l][e]) { const int i = 4 * (g0 + l) + e; if (pos < k) out[pos] = i > qmax ? -1 : i; pos++; }
            }
            written += popc(tm[0]) + popc(tm[1]) + popc(tm[2]) + popc(tm[3]);
            eq_used += popc(eqm[0]) + popc(eqm[1]) + popc(eqm[2]) + popc(eqm[3]);
            if (eq_used > need_eq) eq_used = need_eq;
        }
    }
}

// sel90_topk_radix<TW> as on the device (session 11): the radix select by a team of TW warps, warp
// tw owning a contiguous half of the row's 4-key groups in every pass, one histogram per warp
// (summed when read), the keys above the first prefix counted in the first histogram pass, the
// digit found from per-lane bins 8 l..8 l + 7 by a suffix scan + ballot, and warp 1's scan started
// from warp 0's counts of keys > thr / == thr taken from its histograms (no extra pass). Emulated
// phase by phase on the same "shared memory" (between two team barriers each warp touches only its
// own half and its own histogram).
template <int TW>
static void team_topk(const std::vector<uint32_t> &keys, int n, int k, int qmax, std::vector<int> &out, int ncols) {
    const int n4 = (n + 3) >> 2, hsplit = TW > 1 ? (n4 + 1) >> 1 : n4;
    auto lo_of = [&](int tw) { return tw == 0 ? 0 : hsplit; };
    auto hi_of = [&](int tw) { return tw == 0 ? hsplit : n4; };
    if (k > n) k = n;
    if (k < 0) k = 0;
    const bool search = k > 0 && k < n;
    auto key = [&](int i) { return keys[i]; }; // n4 * 4 entries, zero padded
    KeyStats w[2];
    for (int tw = 0; tw < TW; tw++)
        for (int gi = lo_of(tw); gi < hi_of(tw); gi++)
            for (int e = 0; e < 4; e++) if (4 * gi + e < n) w[tw].add(key(4 * gi + e));
    uint32_t thr = 0, gt0 = 0, eq0 = 0;
    int need_eq = k;
    if (search) {
        KeyStats t = w[0];
        if (TW > 1) {
            t.ge_inf += w[1].ge_inf, t.gt_inf += w[1].gt_inf, t.ge_ninf += w[1].ge_ninf, t.gt_ninf += w[1].gt_ninf;
            t.kand &= w[1].kand, t.kor |= w[1].kor;
        }
        const uint32_t uk = (uint32_t)k, kand = t.kand;
        if (t.ge_inf >= uk && t.gt_inf < uk) {
            thr = KINF; need_eq = k - (int)t.gt_inf; gt0 = w[0].gt_inf; eq0 = w[0].ge_inf - w[0].gt_inf;
        } else if (t.ge_ninf >= uk && t.gt_ninf < uk) {
            thr = KNINF; need_eq = k - (int)t.gt_ninf; gt0 = w[0].gt_ninf; eq0 = w[0].ge_ninf - w[0].gt_ninf;
        } else {
            const uint32_t diff = kand ^ t.kor;
            if (diff == 0) {
                thr = kand;
                const uint32_t n_inf = t.ge_inf - t.gt_inf, n_ninf = t.ge_ninf - t.gt_ninf;
                need_eq = k - (int)((KINF > thr ? n_inf : 0u) + (KNINF > thr ? n_ninf : 0u));
                const uint32_t i0 = w[0].ge_inf - w[0].gt_inf, ni0 = w[0].ge_ninf - w[0].gt_ninf;
                gt0 = (KINF > thr ? i0 : 0u) + (KNINF > thr ? ni0 : 0u);
                eq0 = (uint32_t)std::min(4 * hsplit, n) - i0 - ni0;
            } else {
                const int top = 31 - clz(diff);
                uint32_t pmask = top == 31 ? 0u : ~((2u << top) - 1u), prefix = kand & pmask, kk = 0, nons = 0;
                int pass = 0;
                for (int hi = top; hi >= 0; hi -= 8) {
                    const int lo = hi >= 7 ? hi - 7 : 0;
                    const uint32_t wmask = (hi == 31 ? ~0u : (2u << hi) - 1u) & ~((1u << lo) - 1u);
                    if (pass > 0 && !nons && (diff & wmask) == 0) { prefix |= kand & wmask; pmask |= wmask; continue; }
                    uint32_t h[2][256] = {}, above[2] = {0, 0};
                    for (int tw = 0; tw < TW; tw++)
                        for (int gi = lo_of(tw); gi < hi_of(tw); gi++)
                            for (int e = 0; e < 4; e++) {
                                const uint32_t v = key(4 * gi + e), m = v & pmask;
                                if (m == prefix) h[tw][(v & wmask) >> lo]++;
                                if (pass == 0) { above[tw] += m > prefix; nons |= (uint32_t)(m == prefix && (v == KINF || v == KNINF)); }
                            }
                    if (pass == 0) { kk = uk - above[0] - above[1]; gt0 = above[0]; }
                    const int d = pick_digit(h, kk, gt0, eq0);
                    prefix |= (uint32_t)d << lo;
                    pmask |= wmask;
                    pass++;
                }
                thr = prefix;
                need_eq = (int)kk;
            }
        }
    } else if (k >= n && k > 0) {
        gt0 = (uint32_t)std::min(4 * hsplit, n);
    }
    team_scan<TW>(keys, n, k, qmax, out, hsplit, thr, need_eq, gt0, eq0);
    for (int c = k; c < ncols; c++) out[c] = -1;
}

// sel90_topk_radix<TW> since session 22 (written in session 21): a byte radix over ALL keys. The key pass
// also builds each warp's histogram of the keys' top byte (no +-inf counts, no S), and the AND / OR of the
// valid keys; the digit search picks the top byte of the k-th largest key; then the windows 23..16, 15..8, 7..0
// among the candidates, each skipped when every valid key agrees on its bits (bf16-rounded scores and
// f2key(+inf) agree on the low 16: two windows in all). Emulated like team_topk.
template <int TW>
static void team_topk_b(const std::vector<uint32_t> &keys, int n, int k, int qmax, std::vector<int> &out, int ncols,
                        int *hpasses) {
    const int n4 = (n + 3) >> 2, hsplit = TW > 1 ? (n4 + 1) >> 1 : n4;
    auto lo_of = [&](int tw) { return tw == 0 ? 0 : hsplit; };
    auto hi_of = [&](int tw) { return tw == 0 ? hsplit : n4; };
    if (k > n) k = n;
    if (k < 0) k = 0;
    const bool search = k > 0 && k < n;
    auto key = [&](int i) { return keys[i]; };
    uint32_t thr = 0, gt0 = 0, eq0 = 0;
    int need_eq = k;
    *hpasses = 0;
    if (search) {
        // pass A: top-byte histogram per warp, AND / OR of the valid keys
        uint32_t h[2][256] = {}, kand = ~0u, kor = 0u;
        for (int tw = 0; tw < TW; tw++)
            for (int gi = lo_of(tw); gi < hi_of(tw); gi++)
                for (int e = 0; e < 4; e++) {
                    const int i = 4 * gi + e;
                    if (i >= n) continue;
                    const uint32_t v = key(i);
                    h[tw][v >> 24]++;
                    kand &= v;
                    kor |= v;
                }
        const uint32_t diff = kand ^ kor, uk = (uint32_t)k;
        uint32_t kk = uk, pmask = 0u, prefix = 0u;
        for (int hi = 31; hi >= 0; hi -= 8) {
            const int lo = hi - 7;
            const uint32_t wmask = (hi == 31 ? ~0u : (2u << hi) - 1u) & ~((1u << lo) - 1u);
            if (hi < 31) {
                if ((diff & wmask) == 0) { prefix |= kand & wmask; pmask |= wmask; continue; } // every key agrees
                for (int tw = 0; tw < 2; tw++) for (int b = 0; b < 256; b++) h[tw][b] = 0;
                for (int tw = 0; tw < TW; tw++)
                    for (int gi = lo_of(tw); gi < hi_of(tw); gi++)
                        for (int e = 0; e < 4; e++) {
                            const int i = 4 * gi + e;
                            const uint32_t v = key(i); // zero pads: only ever in bin 0 of a prefix-0 window
                            if (i < n && (v & pmask) == prefix) h[tw][(v & wmask) >> lo]++;
                        }
                ++*hpasses;
            }
            const int d = pick_digit(h, kk, gt0, eq0);
            prefix |= (uint32_t)d << lo;
            pmask |= wmask;
        }
        thr = prefix;
        need_eq = (int)kk;
    } else if (k >= n && k > 0) {
        gt0 = (uint32_t)std::min(4 * hsplit, n);
    }
    team_scan<TW>(keys, n, k, qmax, out, hsplit, thr, need_eq, gt0, eq0);
    for (int c = k; c < ncols; c++) out[c] = -1;
}

static float bf16r(float x) { uint32_t u; memcpy(&u, &x, 4); u = (u + 0x7fff + ((u >> 16) & 1)) & 0xffff0000u; memcpy(&x, &u, 4); return x; }

int main() {
    std::mt19937_64 rng(12345);
    long rows = 0, bad = 0, rbad = 0, tbad = 0, hsum = 0, hrows = 0, bbad = 0, bsum0 = 0, brows0 = 0, bsumo = 0, browso = 0;
    for (int it = 0; it < 300000; it++) {
        int n = 1 + (int)(rng() % (it % 10 == 0 ? 3400 : 300));
        int k = (int)(rng() % (n + 3)) - 1;             // k in [-1, n+1]
        if (rng() % 4 == 0) k = 96 < n ? 96 : k;
        int qmax = n - 1 - (int)(rng() % 3);            // sometimes < n - 1
        int ncols = k > 0 ? k + (int)(rng() % 5) : (int)(rng() % 5);
        int mode = (int)(rng() % 8);
        std::vector<float> vals(n);
        std::uniform_real_distribution<float> U(0.f, 1.f);
        for (int i = 0; i < n; i++) {
            float x;
            switch (mode) {
            case 0: x = bf16r(U(rng)); break;                                  // bf16 scores
            case 1: x = bf16r((float)(rng() % 8) / 8.f); break;                // many ties
            case 2: x = U(rng); break;                                         // full f32
            case 3: x = (rng() % 3 == 0) ? 0.f : bf16r(U(rng) * 1e-3f); break; // zeros (underflow)
            case 4: { uint32_t u = (uint32_t)rng(); memcpy(&x, &u, 4); break; } // any bits, NaN too
            case 5: { /* +inf and NaNs next to it that share middle bits (the radix skip's guard) */
                static const uint32_t pat[4] = {0x000101u, 0x010100u, 0x010001u, 0x000100u};
                uint32_t u = 0x7f800000u | (rng() % 5 ? pat[rng() % 4] : 0u);
                memcpy(&x, &u, 4); break; }
            case 6: { /* -inf and negative NaNs next to it (keys just under f2key(-inf)) */
                static const uint32_t pat[4] = {0x000101u, 0x010100u, 0x010001u, 0x000100u};
                uint32_t u = 0xff800000u | (rng() % 5 ? pat[rng() % 4] : 0u);
                memcpy(&x, &u, 4); break; }
            default: x = bf16r(U(rng) * 4.f);
            }
            vals[i] = x;
        }
        // forced and empty blocks as the finalize sets them
        int init = (int)(rng() % 3), local = (int)(rng() % 4), empty_from = n - (int)(rng() % 3);
        for (int i = 0; i < n; i++) {
            if (i < init || i >= n - 1 - local) vals[i] = INFINITY;
            else if (i >= empty_from) vals[i] = -INFINITY;
        }
        std::vector<uint32_t> keys((n + 3) & ~3, 0u);
        for (int i = 0; i < n; i++) keys[i] = f2key(vals[i]);
        int cols = ncols > 0 ? ncols : 1;
        std::vector<int> a(cols + 8, -7), b(cols + 8, -7);
        old_topk(vals, n, k, qmax, a, ncols);
        new_topk(keys, n, k, qmax, b, ncols);
        std::vector<int> c(cols + 8, -7);
        int hp = 0;
        radix_topk(keys, n, k, qmax, c, ncols, &hp);
        if (a != c) {
            if (rbad < 5) printf("RADIX MISMATCH n=%d k=%d mode=%d\n", n, k, mode);
            rbad++;
        }
        std::vector<int> t1(cols + 8, -7), t2(cols + 8, -7);
        team_topk<1>(keys, n, k, qmax, t1, ncols);
        team_topk<2>(keys, n, k, qmax, t2, ncols);
        std::vector<int> b1(cols + 8, -7), b2(cols + 8, -7);
        int bp1 = 0, bp2 = 0;
        team_topk_b<1>(keys, n, k, qmax, b1, ncols, &bp1);
        team_topk_b<2>(keys, n, k, qmax, b2, ncols, &bp2);
        if (a != b1 || a != b2) {
            if (bbad < 5) printf("BYTE RADIX MISMATCH n=%d k=%d qmax=%d mode=%d (1 warp %s, 2 warps %s)\n", n, k, qmax, mode,
                                 a == b1 ? "ok" : "differs", a == b2 ? "ok" : "differs");
            bbad++;
        }
        if (k > 0 && k < n && n >= 1024) { (mode == 0 ? bsum0 : bsumo) += bp2; (mode == 0 ? brows0 : browso)++; }
        if (a != t1 || a != t2) {
            if (tbad < 5) printf("TEAM MISMATCH n=%d k=%d qmax=%d mode=%d (1 warp %s, 2 warps %s)\n", n, k, qmax, mode,
                                 a == t1 ? "ok" : "differs", a == t2 ? "ok" : "differs");
            tbad++;
        }
        if (mode == 0 && k > 0 && k < n && n >= 1024) { hsum += hp; hrows++; }
        rows++;
        if (a != b) {
            if (bad < 5) {
                printf("MISMATCH n=%d k=%d qmax=%d ncols=%d mode=%d\n", n, k, qmax, ncols, mode);
                for (int c = 0; c < ncols && c < 12; c++) printf(" %d/%d", a[c], b[c]);
                printf("\n");
            }
            bad++;
        }
    }
    printf("emulated rows: %ld, mismatches: %ld\n", rows, bad);
    printf("radix select (next step): mismatches with the bit search: %ld; histogram passes per bf16 row of >= 1024 blocks: %.2f\n",
           rbad, hrows ? (double)hsum / hrows : 0.0);
    printf("sel90_topk_radix of sessions 11-21 (1 and 2 warps): mismatches with the bit search: %ld\n", tbad);
    printf("byte radix (1 and 2 warps, the device routine since session 22): mismatches with the bit search: %ld; histogram passes after the "
           "key pass per row of >= 1024 blocks: %.2f (bf16 scores), %.2f (other modes)\n",
           bbad, brows0 ? (double)bsum0 / brows0 : 0.0, browso ? (double)bsumo / browso : 0.0);
    return bad != 0 || rbad != 0 || tbad != 0 || bbad != 0;
}
