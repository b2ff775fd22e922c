/*
 * bwd_plan.cuh: the work items of the CUDA backward's dk / dv pass (cuda_backward.cu, k_bwd_kv; session 41).
 * In their own header so that tests/test_topk_host.cpp also runs them on the host (CI has no GPU; on the GPU
 * a piece that lost or repeated a token shows only as a wrong dk / dv of that chunk, and a plan past its
 * bounds would write past the workspace).
 *
 * Chunk entry e = (b Hkv + g) max_chunks + c: 64-key chunk c of KV head g of sequence b. Its listed tokens
 * are those whose rows k_bwd_kv takes for it: sparse, the set bits of its bitmap row (bit i of word i / 32:
 * sequence-relative token i attends a key of the chunk; no bit below the chunk's first visible token); dense,
 * every token from that first one. The tokens of a chunk are cut, in increasing order, into pieces of at most
 * P tokens, P = max(BWD_PLAN_MIN_P, ceil(all entries' tokens / target)), target = 4 x SMs: a chunk that every
 * token attends (the forced first block) no longer sets the pass's length. A piece is an item, one CTA:
 * int4 {entry, first token, end token, partial slot or -1}; its tokens are the listed ones in [first, end).
 * A chunk of one piece (also one of no tokens: its dk / dv are 0) writes its gradients itself, one of
 * several writes f32 partials to slots slot_off[e] .., which k_bwd_kv_sum adds in piece order.
 *
 * Bounds, which size the workspace: items = sum over chunks of max(1, ceil(n / P)) <= entries + all / P <=
 * entries + target; slots: a chunk of pc > 1 pieces has n > (pc - 1) P >= pc P / 2 tokens, so the slots are
 * fewer than 2 all / P <= min(2 target, 2 all / BWD_PLAN_MIN_P), and all <= total_q Hkv max_chunks.
 */
#pragma once
#include <stdint.h>

constexpr int BWD_PLAN_MIN_P = 256;   /* fewest tokens a piece of a chunk of several takes (P >= 32: one cut a word) */
constexpr int BWD_PLAN_THREADS = 1024; /* bwd_plan_scan's CTA */

struct BwdPlan {
    int64_t nentries;
    int target;        /* 4 x SMs: all tokens of the pass cut into at most this many pieces */
    int32_t *cnt;      /* [nentries] the chunk's listed tokens, -1: past its sequence's keys (no item) */
    int32_t *npieces;  /* [nentries] */
    int32_t *item_off; /* [nentries] its first item */
    int32_t *slot_off; /* [nentries] its first partial slot (chunks of several pieces) */
    int4 *items;       /* [bwd_plan_items_bound] */
    int32_t *hdr;      /* [0] items, [1] P */
};

/* host: the plan's sizes (the workspace's) */
static inline int64_t bwd_plan_items_bound(int64_t nentries, int target) { return nentries + target; }
static inline int64_t bwd_plan_slots_bound(int64_t total_q, int Hkv, int max_chunks, int target) {
    const int64_t all_max = total_q * Hkv * (int64_t)max_chunks;
    const int64_t by_all = (2 * all_max + BWD_PLAN_MIN_P - 1) / BWD_PLAN_MIN_P;
    return by_all < 2 * (int64_t)target ? by_all : 2 * (int64_t)target;
}

/* the first token of a sequence (lq queries, the last of them at key lk - 1) that sees a key of chunk c */
__device__ __forceinline__ int bwd_first_token(int c, int32_t lq, int32_t lk) {
    const int64_t t = (int64_t)c * 64 - ((int64_t)lk - lq);
    return t < 0 ? 0 : t > lq ? lq : (int)t;
}

/* the end (exclusive) of the tokens of such a sequence that see a key of chunk c under a sliding window (0: none): the
 * last is the one whose window starts at the chunk's last key, c 64 + 63 = pos - window + 1 */
__device__ __forceinline__ int bwd_end_token(int c, int32_t lq, int32_t lk, int32_t window) {
    if (window <= 0) return lq;
    const int64_t t = (int64_t)c * 64 + 63 + window - ((int64_t)lk - lq);
    return t < 0 ? 0 : t > lq ? lq : (int)t;
}

/* a warp (every lane, the same arguments): the listed tokens of a sparse chunk row of ceil(lq / 32) words */
__device__ inline int bwd_plan_count_sparse(const uint32_t *rowbits, int i_start, int32_t lq, int lane) {
    const int words = (lq + 31) / 32;
    int n = 0;
    for (int w = (i_start >> 5) + lane; w < words; w += 32) n += __popc(rowbits[w]);
#pragma unroll
    for (int o = 16; o; o >>= 1) n += __shfl_xor_sync(0xffffffffu, n, o);
    return n;
}

/* one CTA of BWD_PLAN_THREADS threads (tid): P, each entry's pieces, and the items' and slots' offsets
 * (exclusive scans in entry order); hdr[0] = the items, hdr[1] = P */
__device__ inline void bwd_plan_scan(const BwdPlan &q, int tid) {
    constexpr int NT = BWD_PLAN_THREADS, NW = NT / 32;
    __shared__ long long red[NT];
    __shared__ int wsum[2][NW];
    __shared__ int carry[2];
    const int lane = tid & 31, warp = tid >> 5;
    long long t = 0;
    for (int64_t e = tid; e < q.nentries; e += NT) t += q.cnt[e] > 0 ? q.cnt[e] : 0;
    red[tid] = t;
    if (tid < 2) carry[tid] = 0;
    __syncthreads();
    for (int s = NT / 2; s > 0; s >>= 1) {
        if (tid < s) red[tid] += red[tid + s];
        __syncthreads();
    }
    const long long total = red[0];
    long long P = (total + q.target - 1) / q.target;
    if (P < BWD_PLAN_MIN_P) P = BWD_PLAN_MIN_P;
    if (P > 0x7fffffffLL) P = 0x7fffffffLL;
    for (int64_t base = 0; base < q.nentries; base += NT) {
        const int64_t e = base + tid;
        const int n = e < q.nentries ? q.cnt[e] : -1;
        const long long np = (n + P - 1) / P;
        const int pc = n < 0 ? 0 : np < 1 ? 1 : (int)np;
        const int sl = pc > 1 ? pc : 0;
        int a = pc, z = sl; /* inclusive scans within the warp */
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const int ya = __shfl_up_sync(0xffffffffu, a, o), yz = __shfl_up_sync(0xffffffffu, z, o);
            if (lane >= o) a += ya, z += yz;
        }
        if (lane == 31) wsum[0][warp] = a, wsum[1][warp] = z;
        __syncthreads();
        int pa = carry[0], pz = carry[1];
        for (int x = 0; x < warp; x++) pa += wsum[0][x], pz += wsum[1][x];
        if (e < q.nentries) {
            q.npieces[e] = pc;
            q.item_off[e] = pa + a - pc;
            q.slot_off[e] = pz + z - sl;
        }
        __syncthreads();
        if (tid == NT - 1) carry[0] = pa + a, carry[1] = pz + z;
        __syncthreads();
    }
    if (tid == 0) {
        q.hdr[0] = carry[0];
        q.hdr[1] = (int)P;
    }
}

/* a warp (every lane): the items of entry e of pc >= 1 pieces whose listed tokens start at i_start (rowbits:
 * its sparse row, NULL for dense); a chunk of several pieces is cut at its tokens of rank P, 2 P, ... */
__device__ inline void bwd_plan_items(const BwdPlan &q, int64_t e, int pc, const uint32_t *rowbits, int i_start,
                                      int32_t lq, int lane) {
    const int P = q.hdr[1];
    int32_t *it = (int32_t *)(q.items + q.item_off[e]);
    for (int x = lane; x < pc; x += 32) {
        it[4 * x + 0] = (int32_t)e;
        if (x == 0) it[1] = i_start;
        if (x == pc - 1) it[4 * x + 2] = lq;
        it[4 * x + 3] = pc > 1 ? q.slot_off[e] + x : -1;
    }
    if (pc == 1) return;
    if (!rowbits) {
        for (int x = lane + 1; x < pc; x += 32) {
            const int t = i_start + x * P; /* < lq: pc = ceil((lq - i_start) / P) */
            it[4 * (x - 1) + 2] = t;
            it[4 * x + 1] = t;
        }
        return;
    }
    const int words = (lq + 31) / 32;
    long long run = 0; /* tokens listed before this round's words */
    for (int w0 = i_start >> 5; w0 < words; w0 += 32) {
        const int w = w0 + lane;
        uint32_t m = w < words ? rowbits[w] : 0u;
        const int n = __popc(m);
        int incl = n;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const int y = __shfl_up_sync(0xffffffffu, incl, o);
            if (lane >= o) incl += y;
        }
        /* the smallest multiple of P at or past this word's first rank; P >= 32: one cut a word at most */
        const long long r0 = run + incl - n, kb = (r0 + P - 1) / P;
        if (kb >= 1 && kb < pc && kb * P < run + incl) {
            for (long long k = kb * P - r0; k > 0; k--) m &= m - 1;
            const int t = w * 32 + __ffs((int)m) - 1;
            it[4 * (kb - 1) + 2] = t;
            it[4 * kb + 1] = t;
        }
        run += __shfl_sync(0xffffffffu, incl, 31);
    }
}

/* word w of a sparse row as a piece [tok_lo, tok_hi) lists it: the bits of tokens outside the piece cleared */
__device__ __forceinline__ uint32_t bwd_piece_word(const uint32_t *rowbits, int words, int w, int tok_lo, int tok_hi) {
    const int t0 = w * 32;
    if (w >= words || t0 + 32 <= tok_lo || t0 >= tok_hi) return 0u;
    uint32_t m = rowbits[w];
    if (tok_lo > t0) m &= ~0u << (tok_lo - t0);
    if (tok_hi < t0 + 32) m &= (1u << (tok_hi - t0)) - 1u;
    return m;
}
