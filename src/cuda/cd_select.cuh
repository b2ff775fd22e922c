/*
 * cd_select.cuh: the decode cache's parameters (CdParams) and its selection, cd_select: one row's block
 * list from its block scores by the NW warps of a k_cd_attn CTA (cuda_cache.cu). Its own header so
 * that tests/test_topk_host.cpp also compiles cd_select on the host (tests/simt_host.h, a CTA of
 * ucontext lanes) against a plain sort: CI has no GPU. Needs f2key (f2key.cuh) and the warp and
 * block intrinsics.
 */
#pragma once
#include <math.h>
#include <stdint.h>

#include "f2key.cuh"

#define CD_MAX_TOKENS 16
#define CD_MAX_BLOCKS 12288 /* blocks of one row: 48 keys per thread of a selecting k_cd_attn CTA, in registers */

struct CdParams {
    const uint16_t *q, *k, *v, *c1, *c2;
    void *out;
    float *lse;
    /* a group's G query heads are R = ceil(G / 16) head tiles of 16 rows (rows past G zero); a sub-row
     * (g, h, t) = KV head g, head tile h, token t, index (g R + h) n + t */
    float *part;     /* [Hkv][R][n][ntL][16][2] LSE partials (max, sum) */
    float *bs;       /* [Hkv][n][2][nbmax] block scores in two planes (nbmax % 4 == 0): see cd_store_blocks */
    float *apart;    /* [Hkv][R][n][nsplit][16][D]: attention partials, o unnormalised */
    float *aml;      /* [Hkv][R][n][nsplit][16][2]: their (max, sum) in base 2 */
    int Hq, Hkv, G, n;
    int R; /* head tiles of a group, ceil(G / 16) */
    int L; /* < 2^31 (cd_plan) */
    float scale_log2;
    int l1, s1, l2, s2, B, init_blocks, local_blocks, K, topk_out, exact, round_bf16;
    int ntL, nbmax, nbt; /* LSE-level tiles, block-score slots, blocks touched by one c1 tile */
    int sparse, nsplit, eps; /* attention: entries of the block list per split (one k_cd_attn CTA) */
    /* from the host, so that no kernel divides: kernel counts at length L, and per token t the
     * position, its block, and the c1 / LSE-level kernels it sees */
    int n1, nL;
    int e_lo;  /* the first block with no c1 kernel: every block from it on has none, every one before has one */
    int pos[CD_MAX_TOKENS], qb[CD_MAX_TOKENS], vis1[CD_MAX_TOKENS], visL[CD_MAX_TOKENS];
    /* under a sliding window (infllm_params.window; 0 without one): per token its first key (d_window_start), that
     * key's block (d_window_first_block: no block before it is a candidate or attended) and the first c1 tile
     * whose kernels touch a block from it on (k_cd_score skips the tiles before) */
    int wlo[CD_MAX_TOKENS], wb[CD_MAX_TOKENS], t1lo[CD_MAX_TOKENS];
};

/* The block list of one (head g, token t) row from its block scores, by the NW warps of a CTA
 * (qb + 1 > K); out: the row's topk_out entries (global or shared memory). Under a sliding window the
 * candidates are the blocks from wb (the window's first block; 0 without one) on: the blocks before it get
 * key 0 (as the padding past the row), whatever their score plane holds (k_cd_score skips their tiles), and
 * the row takes min(K, n - wb) blocks (sel_window_k's rule), -1 after them. Thread i holds the keys of
 * blocks KPT*i .. KPT*i + KPT-1 in registers (KPT * NW * 32 >= nbmax); the score loads are
 * unconditional (clamped into the row) and written ahead of the classification. Forced blocks are
 * +inf, blocks without a c1 kernel -inf: those are the blocks from e_lo on (host-computed). The
 * K-th largest key:
 * +inf when K blocks are forced, -inf when fewer than K are finite or forced, else a finite key,
 * found two bits a step over only the bits in which the finite keys differ (they all share the
 * others: the AND of the keys holds them; every candidate then lies strictly between the -inf and
 * the +inf key, so the +inf keys count and the -inf keys never do), each step a block-wide count of
 * the keys >= three candidates (warp redux, one barrier, every thread sums the warp counts); keys
 * outside that range (no real score is) fall back to the search over all 32 bits. The list is one
 * block-wide exclusive scan of (keys > thr, keys == thr) in index order: a block above the threshold
 * goes to position (above before it) + min(equal before it, kleft), an equal one to (above before) +
 * (equal before) while that is < kleft: ties to the lower index, ascending, as warp_topk and the
 * SPEC rule. */
template <int KPT, int NW>
__device__ __forceinline__ void cd_select(const CdParams &p, int64_t row, int qb, int wb, int32_t *out) {
    constexpr uint32_t KINF = 0xff800000u, KNINF = 0x007fffffu; /* f2key(+inf), f2key(-inf) */
    __shared__ uint4 sred[NW];     /* per warp (+inf keys, -inf keys, OR, AND of the finite keys) */
    __shared__ int2 scnt[2][NW];   /* per warp (count >= c1 | count >= c2 << 16, count >= c3), two buffers */
    __shared__ uint32_t sscan[NW]; /* per warp (above << 16 | equal) totals */
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int n = qb + 1, K = n - wb < p.K ? n - wb : p.K; /* wb <= qb: K >= 1 */
    const int *bs0 = (const int *)p.bs + row * 2 * p.nbmax, *bs1 = bs0 + p.nbmax; /* the two planes */
    const int i0 = tid * KPT;
    float v[KPT];
#pragma unroll
    for (int u = 0; u < KPT; u += 4) {
        /* i0 + u and nbmax are multiples of 4, and every block of the row (< n <= nbmax) lies in
         * [0, nbmax - 4]: the clamp only moves the vectors wholly past the row, whose keys are
         * ignored. A block's score is the larger plane (float bits of scores >= 0) */
        const int o = min(i0 + u, p.nbmax - 4);
        const int4 x4 = __ldcg(reinterpret_cast<const int4 *>(bs0 + o));
        const int4 y4 = __ldcg(reinterpret_cast<const int4 *>(bs1 + o));
        v[u] = __int_as_float(max(x4.x, y4.x));
        v[u + 1] = __int_as_float(max(x4.y, y4.y));
        v[u + 2] = __int_as_float(max(x4.z, y4.z));
        v[u + 3] = __int_as_float(max(x4.w, y4.w));
    }
    uint32_t key[KPT];                  /* every candidate block of the row; 0 before and past them */
    int nf = 0, ne = 0;
    uint32_t kor = 0u, kand = 0xffffffffu;
#pragma unroll
    for (int u = 0; u < KPT; u++) {
        const int bb = i0 + u;
        const bool cand = bb >= wb && bb < n;
        const bool forced = bb < p.init_blocks || bb >= qb - p.local_blocks;
        /* a free block's key at most f2key(FLT_MAX): an overflowed (+inf) score stays below the forced ones */
        const uint32_t k = cand ? (forced ? KINF : bb >= p.e_lo ? KNINF : min(f2key(v[u]), 0xff7fffffu)) : 0u;
        key[u] = k;
        const bool fin = cand && k != KINF && k != KNINF;
        nf += (int)(cand && k == KINF);
        ne += (int)(cand && k == KNINF);
        kor |= fin ? k : 0u;
        kand &= fin ? k : 0xffffffffu;
    }
    nf = __reduce_add_sync(0xffffffffu, nf);
    ne = __reduce_add_sync(0xffffffffu, ne);
    kor = __reduce_or_sync(0xffffffffu, kor);
    kand = __reduce_and_sync(0xffffffffu, kand);
    if (lane == 0) sred[warp] = make_uint4((uint32_t)nf, (uint32_t)ne, kor, kand);
    __syncthreads();
    int NF = 0, NE = 0;
    uint32_t OR = 0u, AND = 0xffffffffu;
#pragma unroll
    for (int w = 0; w < NW; w++) {
        const uint4 r = sred[w];
        NF += (int)r.x;
        NE += (int)r.y;
        OR |= r.z;
        AND &= r.w;
    }
    uint32_t thr, rem; /* thr: the K-th largest key once the bits of rem are decided */
    if (!(AND > KNINF && OR < KINF)) {
        /* a key outside [f2key(-inf), f2key(+inf)] (a NaN score; no real one is): the search over all
         * 32 bits, first, since a NaN key above f2key(+inf) breaks the +inf shortcut below (its scan
         * then counted more than K keys above thr and wrote before `out`; session 22, found by
         * tests/test_topk_host.cpp). A row key of 0 (the all-ones -NaN) becomes 1 here, so that the
         * padding keys (0) never tie with the threshold. Block-uniform: AND / OR are the CTA's. */
        thr = 0u, rem = 0xffffffffu;
#pragma unroll
        for (int u = 0; u < KPT; u++) key[u] = i0 + u >= wb && i0 + u < n && key[u] == 0u ? 1u : key[u];
    } else if (NF >= K) {
        thr = KINF, rem = 0u;
    } else if (n - wb - NE < K) {
        thr = KNINF, rem = 0u;
    } else { /* a finite key: AND | (bits of OR ^ AND) */
        thr = AND, rem = OR ^ AND;
    }
    int buf = 0;
#pragma unroll 1
    while (rem) {
        const uint32_t hi = 0x80000000u >> __clz(rem);
        rem ^= hi;
        const uint32_t lo = rem ? 0x80000000u >> __clz(rem) : 0u;
        rem ^= lo;
        const uint32_t c1 = thr | lo, c2 = thr | hi, c3 = thr | hi | lo; /* c1 = thr when lo = 0: never taken */
        int a12 = 0, a3 = 0; /* counts <= 12288: two fit in one int */
#pragma unroll
        for (int u = 0; u < KPT; u++) {
            a12 += (int)(key[u] >= c1) + ((int)(key[u] >= c2) << 16);
            a3 += (int)(key[u] >= c3);
        }
        a12 = __reduce_add_sync(0xffffffffu, a12);
        a3 = __reduce_add_sync(0xffffffffu, a3);
        if (lane == 0) scnt[buf][warp] = make_int2(a12, a3);
        __syncthreads(); /* buffer buf is written again two steps on, after every thread passed the next barrier */
        int s12 = 0, s3 = 0;
#pragma unroll
        for (int w = 0; w < NW; w++) {
            const int2 c = scnt[buf][w];
            s12 += c.x;
            s3 += c.y;
        }
        thr = s3 >= K ? c3 : (s12 >> 16) >= K ? c2 : (s12 & 0xffff) >= K ? c1 : thr;
        buf ^= 1;
    }
    /* the list: exclusive scan of (above, equal) counts, packed as above << 16 | equal */
    int gt = 0, eq = 0;
#pragma unroll
    for (int u = 0; u < KPT; u++) {
        gt += (int)(key[u] > thr);
        eq += (int)(key[u] == thr);
    }
    const uint32_t x = ((uint32_t)gt << 16) | (uint32_t)eq;
    uint32_t incl = x;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const uint32_t y = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += y;
    }
    if (lane == 31) sscan[warp] = incl;
    __syncthreads();
    uint32_t wbefore = 0u, total = 0u;
#pragma unroll
    for (int w = 0; w < NW; w++) {
        const uint32_t y = sscan[w];
        wbefore += w < warp ? y : 0u;
        total += y;
    }
    const uint32_t before = wbefore + incl - x;
    const int kleft = K - (int)(total >> 16); /* equal keys to take, lowest indices first */
    int gb = (int)(before >> 16), eb = (int)(before & 0xffffu);
#pragma unroll
    for (int u = 0; u < KPT; u++) {
        if (key[u] > thr) {
            out[gb + min(eb, kleft)] = i0 + u;
            gb++;
        } else if (key[u] == thr) {
            if (eb < kleft) out[gb + eb] = i0 + u;
            eb++;
        }
    }
    for (int c = K + tid; c < p.topk_out; c += NW * 32) out[c] = -1;
}
