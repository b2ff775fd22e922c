/*
 * simt_host.h: runs CUDA device code written for a team of warps (a CTA) on the host, so that CI,
 * which has no GPU, tests the device routines' own source (tests/test_topk_host.cpp runs
 * sel90_topk_radix from src/cuda/sel_topk.cuh and cd_select from src/cuda/cd_select.cuh).
 *
 * Each lane is a ucontext with its own stack; one host thread runs them one at a time. A lane runs
 * until it reaches a warp collective (__syncwarp, __ballot_sync, __any_sync, __all_sync, the
 * __reduce_*_sync, __shfl_sync, __shfl_down_sync, __shfl_up_sync, __shfl_xor_sync) or a named barrier or
 * __syncthreads (the team is the CTA; __shared__ arrays are statics, one CTA running at a time), and
 * waits there until every lane of its warp (of the team, for the barriers) has arrived at the same
 * kind of collective;
 * then all of them get its result. So the lanes' memory effects between two collectives happen in
 * lane order (or, with shuffle_lanes, in a pseudo-random order of the lanes each round), and a lane
 * sees its warp's writes from before a collective after it, as on the GPU.
 * What it checks beyond the results: every collective is reached by all 32 lanes of its warp with
 * the full mask (the GPU's requirement for the *_sync intrinsics), a named barrier by every lane of
 * the team with the team's thread count, and no lane finishes while others of its warp wait. A
 * mismatch is reported (simt::Team::error) instead of hanging.
 * Not modelled: the device memory model beyond that (a race shows only if the lane order it needs
 * comes up), and anything beyond the intrinsics below.
 */
#pragma once
#include <ucontext.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#define __device__
#define __host__
#define __forceinline__ inline
/* one CTA runs at a time, so a function's static is its CTA's shared array */
#define __shared__ static

struct uint4 {
    uint32_t x, y, z, w;
};
struct float4 {
    float x, y, z, w;
};
struct int4 {
    int x, y, z, w;
};
struct int2 {
    int x, y;
};
inline uint4 make_uint4(uint32_t x, uint32_t y, uint32_t z, uint32_t w) { return uint4{x, y, z, w}; }
inline int2 make_int2(int x, int y) { return int2{x, y}; }
struct SimtThreadIdx {
    unsigned x;
};
inline SimtThreadIdx threadIdx; /* the running lane's thread index in its team, set by the scheduler */

using std::max;
using std::min;

namespace simt {

enum Kind { NONE, SYNCWARP, BALLOT, ANY, ALL, RED_ADD, RED_AND, RED_OR, SHFL, SHFL_DOWN, SHFL_UP, SHFL_XOR, NAMED_BAR, SYNCTHREADS };
inline const char *kind_name(int k) {
    static const char *names[] = {"none", "__syncwarp", "__ballot_sync", "__any_sync", "__all_sync",
                                  "__reduce_add_sync", "__reduce_and_sync", "__reduce_or_sync", "__shfl_sync",
                                  "__shfl_down_sync", "__shfl_up_sync", "__shfl_xor_sync", "named_bar_sync", "__syncthreads"};
    return names[k];
}

struct Lane {
    ucontext_t ctx;
    std::vector<char> stack;
    bool done = false, waiting = false;
    int kind = NONE;
    uint32_t val = 0, mask = 0;
    int arg = 0;
    uint32_t vals[32]; /* the warp's values of the collective, once released */
};

class Team;
inline Team *g_team = nullptr; /* the team being run (one at a time) */

class Team {
  public:
    explicit Team(int warps) : nlanes_(32 * warps), lanes_(32 * warps), order_(32 * warps) {
        for (auto &l : lanes_) l.stack.resize(64 * 1024);
        for (int i = 0; i < nlanes_; i++) order_[i] = i;
    }
    /* lanes run in a pseudo-random order (from seed) between collectives instead of in lane order, so
     * that code which reads another lane's shared-memory write without a collective in between (a
     * missing __syncwarp / barrier) sees it or not depending on the order, as on the GPU */
    void shuffle_lanes(uint64_t seed) {
        shuffle_ = true;
        rand_ = seed * 0x9e3779b97f4a7c15ull + 1;
    }
    /* runs body(thread index) in every lane to its end; false (and error()) on a collective mismatch */
    template <typename F> bool run(F &&body) {
        body_ = [](void *f, int t) { (*static_cast<F *>(f))(t); };
        body_arg_ = &body;
        error_.clear();
        for (int i = 0; i < nlanes_; i++) prepare(i);
        Team *prev = g_team;
        g_team = this;
        for (;;) {
            bool progress = false;
            if (shuffle_) /* a new order of the lanes for every round (a shuffle of the identity) */
                for (int j = nlanes_ - 1; j > 0; j--) std::swap(order_[j], order_[(size_t)(next_rand() % (uint64_t)(j + 1))]);
            for (int oi = 0; oi < nlanes_ && error_.empty(); oi++) {
                const int i = order_[oi];
                Lane &l = lanes_[i];
                if (l.done || l.waiting) continue;
                resume(i);
                progress = true;
                if (l.waiting) try_release(i);
                else if (!l.done) fail("lane %d returned to the scheduler without waiting or finishing", i);
                else check_finished(i);
            }
            if (!error_.empty()) break;
            if (!progress) {
                int left = 0;
                for (int i = 0; i < nlanes_; i++) left += !lanes_[i].done;
                if (left) fail_stuck();
                break;
            }
        }
        g_team = prev;
        return error_.empty();
    }
    const std::string &error() const { return error_; }

    /* called by a lane: wait at a collective of `kind` with this lane's value; returns the 32 values
     * of its warp (for NAMED_BAR: nothing useful) */
    __attribute__((noinline)) const uint32_t *collective(int kind, uint32_t mask, uint32_t val, int arg) {
        Lane *const l = &lanes_[cur_];
        l->waiting = true;
        l->kind = kind;
        l->mask = mask;
        l->val = val;
        l->arg = arg;
        swapcontext(&l->ctx, &sched_);
        return lanes_[cur_].vals; /* cur_ is this lane again when the scheduler resumes it */
    }
    int nlanes() const { return nlanes_; }

  private:
    /* lane i's context at the start of the body; getcontext and swapcontext return twice, so they sit
     * in functions of their own and no local of run() lives across them (-Wclobbered) */
    __attribute__((noinline)) void prepare(int i) {
        Lane &l = lanes_[i];
        l.done = l.waiting = false;
        l.kind = NONE;
        getcontext(&l.ctx);
        l.ctx.uc_stack.ss_sp = l.stack.data();
        l.ctx.uc_stack.ss_size = l.stack.size();
        l.ctx.uc_link = &sched_;
        makecontext(&l.ctx, trampoline, 0);
    }
    /* runs lane i until it waits or finishes */
    __attribute__((noinline)) void resume(int i) {
        cur_ = i;
        threadIdx.x = (unsigned)i;
        swapcontext(&sched_, &lanes_[i].ctx);
    }
    static void trampoline() {
        Team *t = g_team;
        const int i = t->cur_;
        t->body_(t->body_arg_, i);
        t->lanes_[i].done = true; /* uc_link returns to the scheduler */
    }
    void fail(const char *fmt, int a, int b = 0) {
        char buf[256];
        snprintf(buf, sizeof buf, fmt, a, b);
        if (error_.empty()) error_ = buf;
    }
    /* a lane that finished while another lane of its warp (of the team) waits at a collective */
    void check_finished(int i) {
        const int w = i / 32;
        for (int j = 0; j < nlanes_; j++) {
            const Lane &o = lanes_[j];
            if (!o.waiting) continue;
            if (j / 32 == w || o.kind == NAMED_BAR || o.kind == SYNCTHREADS) {
                fail("lane %d finished while lane %d waits at a collective", i, j);
                return;
            }
        }
    }
    void fail_stuck() {
        std::string s = "deadlock:";
        for (int i = 0; i < nlanes_; i++)
            if (!lanes_[i].done) {
                s += " lane " + std::to_string(i) + " at " + kind_name(lanes_[i].kind) + ";";
                if (s.size() > 400) break;
            }
        error_ = s;
    }
    void try_release(int i) {
        const Lane &me = lanes_[i];
        const bool team_wide = me.kind == NAMED_BAR || me.kind == SYNCTHREADS;
        const int lo = team_wide ? 0 : i / 32 * 32, hi = team_wide ? nlanes_ : lo + 32;
        for (int j = lo; j < hi; j++) {
            const Lane &o = lanes_[j];
            if (o.done) {
                fail("lane %d waits at a collective that lane %d, finished, never reaches", i, j);
                return;
            }
            if (!o.waiting) return; /* not everyone is there yet */
        }
        for (int j = lo; j < hi; j++) {
            const Lane &o = lanes_[j];
            if (o.kind != me.kind) {
                fail("lanes %d and %d wait at different collectives", i, j);
                error_ += std::string(" (") + kind_name(me.kind) + " / " + kind_name(o.kind) + ")";
                return;
            }
            if (team_wide ? o.arg != nlanes_ : o.mask != 0xffffffffu) {
                fail(team_wide ? "lane %d: named barrier over %d threads, not the team's" :
                                 "lane %d: collective with mask %#x, not the full warp",
                     j, team_wide ? o.arg : (int)o.mask);
                return;
            }
        }
        for (int w = lo; w < hi; w += 32) {
            uint32_t v[32];
            for (int j = 0; j < 32; j++) v[j] = lanes_[w + j].val;
            for (int j = 0; j < 32; j++) {
                memcpy(lanes_[w + j].vals, v, sizeof v);
                lanes_[w + j].waiting = false;
            }
        }
    }

    uint64_t next_rand() { /* splitmix64 */
        uint64_t z = (rand_ += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }

    int nlanes_, cur_ = 0;
    std::vector<Lane> lanes_;
    std::vector<int> order_; /* the order the scheduler runs the lanes in */
    bool shuffle_ = false;
    uint64_t rand_ = 0;
    ucontext_t sched_;
    void (*body_)(void *, int) = nullptr;
    void *body_arg_ = nullptr;
    std::string error_;
};

inline int lane() { return (int)(threadIdx.x & 31); }
template <typename T> inline uint32_t bits(T v) {
    static_assert(sizeof(T) == 4, "4-byte values only");
    uint32_t u;
    memcpy(&u, &v, 4);
    return u;
}
template <typename T> inline T from_bits(uint32_t u) {
    T v;
    memcpy(&v, &u, 4);
    return v;
}

} // namespace simt

/* ---- the intrinsics the device code uses ---- */
inline void __syncwarp(unsigned mask = 0xffffffffu) { simt::g_team->collective(simt::SYNCWARP, mask, 0, 0); }
inline unsigned __ballot_sync(unsigned mask, int pred) {
    const uint32_t *v = simt::g_team->collective(simt::BALLOT, mask, pred != 0, 0);
    unsigned r = 0;
    for (int j = 0; j < 32; j++) r |= v[j] << j;
    return r;
}
inline int __any_sync(unsigned mask, int pred) {
    const uint32_t *v = simt::g_team->collective(simt::ANY, mask, pred != 0, 0);
    int r = 0;
    for (int j = 0; j < 32; j++) r |= (int)v[j];
    return r;
}
inline int __all_sync(unsigned mask, int pred) {
    const uint32_t *v = simt::g_team->collective(simt::ALL, mask, pred != 0, 0);
    int r = 1;
    for (int j = 0; j < 32; j++) r &= (int)v[j];
    return r;
}
inline unsigned __reduce_add_sync(unsigned mask, unsigned x) {
    const uint32_t *v = simt::g_team->collective(simt::RED_ADD, mask, x, 0);
    unsigned r = 0;
    for (int j = 0; j < 32; j++) r += v[j];
    return r;
}
inline unsigned __reduce_and_sync(unsigned mask, unsigned x) {
    const uint32_t *v = simt::g_team->collective(simt::RED_AND, mask, x, 0);
    unsigned r = ~0u;
    for (int j = 0; j < 32; j++) r &= v[j];
    return r;
}
inline unsigned __reduce_or_sync(unsigned mask, unsigned x) {
    const uint32_t *v = simt::g_team->collective(simt::RED_OR, mask, x, 0);
    unsigned r = 0;
    for (int j = 0; j < 32; j++) r |= v[j];
    return r;
}
template <typename T> inline T __shfl_sync(unsigned mask, T x, int src) {
    const uint32_t *v = simt::g_team->collective(simt::SHFL, mask, simt::bits(x), 0);
    return simt::from_bits<T>(v[src & 31]);
}
template <typename T> inline T __shfl_down_sync(unsigned mask, T x, unsigned delta) {
    const uint32_t *v = simt::g_team->collective(simt::SHFL_DOWN, mask, simt::bits(x), (int)delta);
    const int src = simt::lane() + (int)delta;
    return src < 32 ? simt::from_bits<T>(v[src]) : x;
}
template <typename T> inline T __shfl_up_sync(unsigned mask, T x, unsigned delta) {
    const uint32_t *v = simt::g_team->collective(simt::SHFL_UP, mask, simt::bits(x), (int)delta);
    const int src = simt::lane() - (int)delta;
    return src >= 0 ? simt::from_bits<T>(v[src]) : x;
}
template <typename T> inline T __shfl_xor_sync(unsigned mask, T x, int lane_mask) {
    const uint32_t *v = simt::g_team->collective(simt::SHFL_XOR, mask, simt::bits(x), lane_mask);
    return simt::from_bits<T>(v[(simt::lane() ^ lane_mask) & 31]);
}
/* the team is the CTA */
inline void __syncthreads() { simt::g_team->collective(simt::SYNCTHREADS, 0xffffffffu, 0, simt::g_team->nlanes()); }
template <int ID, int N> inline void named_bar_sync() {
    static_assert(ID > 0 && ID < 16 && N % 32 == 0, "named barrier ID 1..15 over whole warps");
    simt::g_team->collective(simt::NAMED_BAR, 0xffffffffu, 0, N);
}
inline unsigned atomicAdd(unsigned *p, unsigned v) { /* lanes run one at a time: a plain add */
    const unsigned old = *p;
    *p = old + v;
    return old;
}
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __clz(int x) { return x ? __builtin_clz((unsigned)x) : 32; }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline unsigned __float_as_uint(float f) { return simt::bits(f); }
inline float __int_as_float(int i) { return simt::from_bits<float>((uint32_t)i); }
template <typename T> inline T __ldcg(const T *p) { return *p; }
