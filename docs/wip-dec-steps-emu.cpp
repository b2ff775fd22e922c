// docs/wip-dec-steps-emu.cpp: g++ -O2 -o sel docs/wip-dec-steps-emu.cpp && ./sel [rows, 200000 by default: about a minute]
// host emulation of cd_select's threshold search: 2-bit steps (as in main) vs 4-bit steps (wip),
// against a sort; keys as cd_select builds them (bf16-like finite scores, forced +inf, empty -inf)
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <vector>
#include <algorithm>
#include <random>
#include <cmath>
#include <cstdlib>
static uint32_t f2key(float f) { uint32_t u; memcpy(&u, &f, 4); return (u & 0x80000000u) ? ~u : (u | 0x80000000u); }
static int clz(uint32_t x) { return x ? __builtin_clz(x) : 32; }
static const uint32_t KINF = 0xff800000u, KNINF = 0x007fffffu;
// the search's start, as cd_select: +inf / -inf thresholds from the counts, else the bits in
// which the finite keys differ (rem) above their common bits (thr)
static void search_start(const std::vector<uint32_t>& key, int n, int K, uint32_t& thr, uint32_t& rem) {
    int NF = 0, NE = 0; uint32_t OR = 0, AND = 0xffffffffu;
    for (int i = 0; i < (int)key.size(); i++) {
        bool in = i < n; uint32_t k = key[i];
        bool fin = in && k != KINF && k != KNINF;
        NF += in && k == KINF; NE += in && k == KNINF;
        if (fin) { OR |= k; AND &= k; }
    }
    if (NF >= K) thr = KINF, rem = 0; else if (n - NE < K) thr = KNINF, rem = 0;
    else if (AND > KNINF && OR < KINF) thr = AND, rem = OR ^ AND; else thr = 0, rem = 0xffffffffu;
}
// returns thr (the K-th largest key)
static uint32_t search2(const std::vector<uint32_t>& key, int n, int K) {
    uint32_t thr, rem;
    search_start(key, n, K, thr, rem);
    while (rem) {
        uint32_t hi = 0x80000000u >> clz(rem); rem ^= hi;
        uint32_t lo = rem ? 0x80000000u >> clz(rem) : 0u; rem ^= lo;
        uint32_t c1 = thr | lo, c2 = thr | hi, c3 = thr | hi | lo;
        int s1 = 0, s2 = 0, s3 = 0;
        for (uint32_t k : key) { s1 += k >= c1; s2 += k >= c2; s3 += k >= c3; }
        thr = s3 >= K ? c3 : s2 >= K ? c2 : s1 >= K ? c1 : thr;
    }
    return thr;
}
static uint32_t search4(const std::vector<uint32_t>& key, int n, int K, int nthreads, int kpt) {
    uint32_t thr, rem;
    search_start(key, n, K, thr, rem);
    while (rem) {
        uint32_t bq[4];
        for (int q = 0; q < 4; q++) { bq[q] = rem ? 0x80000000u >> clz(rem) : 0u; rem ^= bq[q]; }
        // per warp (32 threads) packed counts, then a 32-bit REDUX-like sum, then the block sum
        uint32_t tot[8] = {0};
        for (int w0 = 0; w0 < nthreads; w0 += 32) {
            uint32_t wsum[8] = {0};
            for (int t = w0; t < w0 + 32; t++) {
                uint32_t h[8] = {0};
                for (int u = 0; u < kpt; u++) {
                    uint32_t k = key[t * kpt + u];
                    if (k >= thr) {
                        uint32_t lvl = 0, cm = thr;
                        for (int q = 0; q < 4; q++) { uint32_t c = cm | bq[q]; if (k >= c) { cm = c; lvl |= 8u >> q; } }
                        for (int w = 0; w < 8; w++) h[w] += (lvl >> 1) == (uint32_t)w ? (1u << ((lvl & 1) * 16)) : 0u;
                    }
                }
                for (int w = 0; w < 8; w++) wsum[w] += h[w];
            }
            for (int w = 0; w < 8; w++) tot[w] += wsum[w];
        }
        int best = 0, s = 0;
        for (int m = 15; m >= 1; m--) { s += (tot[m >> 1] >> ((m & 1) * 16)) & 0xffffu; if (!best && s >= K) best = m; }
        uint32_t cb = thr;
        for (int q = 0; q < 4; q++) if (best & (8 >> q)) cb |= bq[q];
        thr = cb;
    }
    return thr;
}
int main(int argc, char **argv) {
    const int NROWS = argc > 1 ? atoi(argv[1]) : 200000;
    std::mt19937 rng(1);
    const int NT = 256;
    long bad2 = 0, bad4 = 0, rows = 0;
    for (int it = 0; it < NROWS; it++) {
        int kpt = (int[]){8, 16, 32, 48}[rng() % 4];
        int nb = 4 + rng() % (kpt * NT - 4);
        int n = 1 + rng() % nb;
        int K = 1 + rng() % n;
        std::vector<uint32_t> key(kpt * NT, 0u);
        int mode = rng() % 4;
        std::normal_distribution<float> nd(0.f, 1.f);
        for (int i = 0; i < n; i++) {
            float v;
            if (mode == 0) v = std::fabs(nd(rng));                         // positive
            else if (mode == 1) v = (float)(rng() % 5) * 0.25f;            // many ties, zeros
            else if (mode == 2) v = std::exp(nd(rng) * 3.f);               // wide range
            else v = std::fabs(nd(rng)) * 1e-3f;
            uint32_t b; memcpy(&b, &v, 4); b &= 0xffff0000u; memcpy(&v, &b, 4);  // bf16-rounded
            uint32_t r = rng() % 100;
            key[i] = r < 3 ? KINF : r < 6 ? KNINF : f2key(v);
        }
        if (rng() % 50 == 0) for (int i = 0; i < n; i++) key[i] = f2key((float)(rng() % 7) - 3.f); // negatives too
        std::vector<uint32_t> s(key.begin(), key.begin() + n);
        std::sort(s.rbegin(), s.rend());
        uint32_t ref = s[K - 1];
        uint32_t t2 = search2(key, n, K), t4 = search4(key, n, K, NT, kpt);
        bad2 += t2 != ref; bad4 += t4 != ref; rows++;
    }
    printf("rows %ld: 2-bit search wrong %ld, 4-bit search wrong %ld\n", rows, bad2, bad4);
    return bad4 != 0;
}
