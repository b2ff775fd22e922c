#!/usr/bin/env python3
"""stage2_union.py: how much K/V a stage-2 tile walks, for tile shapes and token groupings.

The CUDA stage 2 (k_flash90) gives a warpgroup 4 tokens x 16 heads and a CTA 8 tokens; the CTA
walks the union of its tokens' selected blocks, so its work is proportional to the union, not to
the 96 blocks a token needs. This script computes the selections with the CPU backend (the same
rule as the GPU: top-k identical on >= 99% of rows) on the inputs bench/cuda_bench.py times
(`make_inputs`: N(0,1) plus a per-256-token segment component, or plain N(0,1) with --random;
numpy's generator, so the values differ but the statistics are the same), and prints, per group
size, the mean union in blocks for

  consecutive  tokens 4c..4c+3 (what the kernels did before k_group_tokens)
  greedy W     tokens grouped inside windows of W consecutive tokens: a group starts at the
               lowest unassigned token and adds, one at a time, the token that grows the union
               least (what k_group_tokens does, with W = 8 tiles' tokens: 64 at group 16)
  +swaps W     (--refine) greedy W, then swaps of two tokens between groups of a window while
               one lowers the window's total union (not built; on a --sample of the windows)

(tokens past the last whole group or window are left out), and, in parentheses, union / K
(K = the blocks one token selects, 96 by default): a warpgroup computes every chunk of the union
for all its rows, so that is the MMA work per useful MMA, and union / tokens is the chunk loads
per token.

    python3 bench/stage2_union.py --lib build-cpu/libinfllm.so [--T 32768] [--random] [--csv]
                                  [--refine --sample 0.15] [--tiles] [--counts]
"""
import argparse
import ctypes as C
import sys

import numpy as np


from infllm_ctypes import BF16, CPU, Layout, Params, Sizes

HQ, HKV, D = 32, 2, 128


def bf16_bits(x):
    """float32 array -> bf16 bit patterns (uint16), round to nearest even"""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def make_inputs(T, structured, seed, hq=HQ, hkv=HKV, d=D):
    """q [T, hq, d], k [T, hkv, d] as bf16 bits, as bench/cuda_bench.py's make_inputs"""
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((T, hq, d), dtype=np.float32)
    k = rng.standard_normal((T, hkv, d), dtype=np.float32)
    if structured:
        nseg = (T + 255) // 256
        segq = rng.standard_normal((nseg, hq, d), dtype=np.float32)
        segk = rng.standard_normal((nseg, hkv, d), dtype=np.float32)
        pos = np.arange(T) // 256
        q = 0.6 * q + 0.8 * segq[pos]
        k = 0.6 * k + 0.8 * segk[pos]
    return bf16_bits(q), bf16_bits(k)


def ok(lib, st, what):
    if st != 0:
        sys.exit(f"stage2_union: {what}: status {st}: {lib.infllm_last_error().decode()}")


def load_lib(path, prog="stage2_union"):
    """libinfllm.so through ctypes (exits with a message when it cannot be loaded)"""
    try:
        lib = C.CDLL(path)
    except OSError as e:
        sys.exit(f"{prog}: cannot load {path}: {e} (build it: cmake -S . -B build-cpu -DINFLLM_CUDA=OFF)")
    lib.infllm_last_error.restype = C.c_char_p
    return lib


def selections(lib, T, structured, seed, threads):
    """topk [HKV, T, K] int32 (-1 padded) from the CPU backend's stage ops"""
    q, k = make_inputs(T, structured, seed)
    return select_blocks(lib, q, k, threads)


def select_blocks(lib, q, k, threads):
    """(topk [Hkv, T, K] int32 (-1 padded), number of blocks) of one sequence with the MiniCPM4.1
    defaults (infllm_params_default), from the CPU backend's stage ops; q [T, Hq, D] and
    k [T, Hkv, D] as bf16 bits (uint16)"""
    T, hq, d = q.shape
    hkv = k.shape[1]
    if k.shape != (T, hkv, d) or q.dtype != np.uint16 or k.dtype != np.uint16 or hq % hkv:
        raise ValueError(f"select_blocks: q {q.shape} {q.dtype} and k {k.shape} {k.dtype}: expected bf16 bits "
                         "[T, Hq, D] and [T, Hkv, D] with Hkv dividing Hq")
    q, k = np.ascontiguousarray(q), np.ascontiguousarray(k)
    p = Params()
    lib.infllm_params_default(C.byref(p))
    p.backend = CPU
    p.num_threads = threads
    lay = Layout()
    lay.dtype = BF16
    lay.num_seqs = 1
    lay.total_q = lay.total_k = T
    lay.num_q_heads, lay.num_kv_heads, lay.head_dim = hq, hkv, d
    lay.max_seqlen_q = lay.max_seqlen_k = T
    sz = Sizes()
    ok(lib, lib.infllm_get_sizes(C.byref(p), C.byref(lay), C.byref(sz)), "get_sizes")
    c1 = np.zeros((sz.total_n1 + 1, hkv, d), np.uint16)
    c2 = np.zeros((sz.total_n2 + 1, hkv, d), np.uint16)
    cu1 = np.zeros(2, np.int32)
    cu2 = np.zeros(2, np.int32)
    vp = lambda a: a.ctypes.data_as(C.c_void_p)
    ok(lib, lib.infllm_compress_keys(C.byref(p), C.byref(lay), vp(k), vp(c1), vp(c2), vp(cu1), vp(cu2)), "compress")
    scores = np.zeros((hkv, T, sz.max_n1), np.float32)
    ok(lib, lib.infllm_stage1_scores(C.byref(p), C.byref(lay), vp(q), vp(c1), vp(c2), vp(cu1), vp(cu2),
                                     vp(scores)), "stage1")
    del q, c1, c2
    bs = np.zeros((hkv, T, sz.nblocks_out), np.float32)
    ok(lib, lib.infllm_block_scores(C.byref(p), C.byref(lay), vp(scores), vp(bs)), "block_scores")
    del scores
    topk = np.zeros((hkv, T, sz.topk_out), np.int32)
    ok(lib, lib.infllm_topk_select(C.byref(p), C.byref(lay), vp(bs), vp(topk)), "topk")
    return topk, sz.nblocks_out


def masks(topk, nb):
    """[HKV, T, nb] bool: block b selected by token t of head g"""
    G, T, K = topk.shape
    m = np.zeros((G, T, nb + 1), bool)
    idx = np.where(topk >= 0, topk, nb)
    np.put_along_axis(m, idx, True, axis=2)
    return m[:, :, :nb]


def union_consecutive(m, gs):
    G, T, nb = m.shape
    n = T // gs
    u = m[:, :n * gs].reshape(G, n, gs, nb).any(axis=2).sum(axis=2)
    return u.mean()


def union_greedy(m, gs, W):
    """mean union of groups of gs tokens formed greedily inside windows of W tokens"""
    return union_greedy_all(m, [gs], W)[gs]


def union_greedy_all(m, sizes, W):
    """{G: mean union of the greedy groups of G inside windows of W tokens} for every G in sizes,
    in one pass over the windows"""
    G_, T, nb = m.shape
    tot = {g: 0 for g in sizes}
    cnt = {g: 0 for g in sizes}
    for h in range(G_):
        for w0 in range(0, T - W + 1, W):
            win = m[h, w0:w0 + W]
            for gs in sizes:
                for grp in greedy_groups(win, gs):
                    tot[gs] += int(win[grp].any(axis=0).sum())
                    cnt[gs] += 1
    return {g: tot[g] / max(cnt[g], 1) for g in sizes}


def greedy_groups(win, gs):
    """the greedy grouping of one window's masks [W, nb] into groups of gs (lists of rows)"""
    W = win.shape[0]
    free = np.ones(W, bool)
    groups = []
    for _ in range(W // gs):
        seed = int(np.argmax(free))
        free[seed] = False
        u = win[seed].copy()
        grp = [seed]
        for _ in range(gs - 1):
            cand = np.flatnonzero(free)
            j = int(cand[np.argmin((win[cand] & ~u).sum(axis=1))])
            free[j] = False
            u |= win[j]
            grp.append(j)
        groups.append(grp)
    return groups


def pair_groups(win, groups):
    """groups (lists of rows of win) paired greedily: the lowest unpaired group takes the partner
    whose union grows its own least; an odd one out stays alone"""
    free = list(range(len(groups)))
    pairs = []
    while free:
        a = free.pop(0)
        if not free:
            pairs.append((groups[a], []))
            break
        ua = win[groups[a]].any(axis=0)
        grow = [int((win[groups[b]].any(axis=0) & ~ua).sum()) for b in free]
        b = free.pop(int(np.argmin(grow)))
        pairs.append((groups[a], groups[b]))
    return pairs


def tile_work(m, W):
    """k_flash90's work per 8-token tile of two 4-token warpgroups, for three tilings: (CTA
    iterations = the 8 tokens' union, warpgroup chunks = the two 4-token unions summed), means over
    the tiles. Since a3011a5 a warp (one token at G 16) skips the softmax of every chunk its token
    did not select, so the softmax work (the chunks the tokens selected) is the same in every tiling;
    what a tiling changes is the iterations and the warpgroup MMAs.
      consecutive   tokens 8c..8c+7, warpgroups 8c..8c+3 and 8c+4..8c+7
      greedy 8      k_group_tokens: greedy 8-token groups inside windows of W tokens, warpgroup 0 =
                    the first four picked, warpgroup 1 = the last four
      greedy 4+4    greedy 4-token groups inside the windows, then paired greedily (not built)"""
    G, T, nb = m.shape
    out = {"consecutive": [0, 0, 0], "greedy 8": [0, 0, 0], "greedy 4+4": [0, 0, 0]}

    def add(key, win, wa, wb):
        ua, ub = win[wa].any(axis=0), win[wb].any(axis=0) if wb else np.zeros(nb, bool)
        out[key][0] += int((ua | ub).sum())
        out[key][1] += int(ua.sum()) + int(ub.sum())
        out[key][2] += 1

    for g in range(G):
        for w0 in range(0, T - W + 1, W):
            win = m[g, w0:w0 + W]
            for c in range(0, W - 7, 8):
                add("consecutive", win, list(range(c, c + 4)), list(range(c + 4, c + 8)))
            for grp in greedy_groups(win, 8):
                add("greedy 8", win, grp[:4], grp[4:])
            for a, b in pair_groups(win, greedy_groups(win, 4)):
                add("greedy 4+4", win, a, b)
    return {k: (v[0] / max(v[2], 1), v[1] / max(v[2], 1)) for k, v in out.items()}


def chunk_counts(m, W):
    """share of a warpgroup's chunks (the union of its 4 tokens) that 1, 2, 3 and 4 of its tokens
    selected, for consecutive warpgroups (tokens 4c..4c+3) and for k_group_tokens' (greedy 8-token
    groups inside windows of W tokens, warpgroups = the first and last four picked). A chunk that
    one token selected costs k_flash90 a full M = 64 product pair for 16 useful rows."""
    G, T, nb = m.shape
    out = {"consecutive": np.zeros(5), "greedy 8": np.zeros(5)}
    for g in range(G):
        for w0 in range(0, T - W + 1, W):
            win = m[g, w0:w0 + W]
            groups = [list(range(c, c + 4)) for c in range(0, W - 3, 4)]
            out["consecutive"] += np.bincount(win[groups].sum(axis=1).ravel(), minlength=5)[:5]
            gg = [h for grp in greedy_groups(win, 8) for h in (grp[:4], grp[4:])]
            out["greedy 8"] += np.bincount(win[gg].sum(axis=1).ravel(), minlength=5)[:5]
    return {k: v[1:] / max(v[1:].sum(), 1) for k, v in out.items()}


def union_refined(m, gs, W, sample, seed):
    """(greedy, greedy + swaps) mean unions over a random sample of the windows"""
    G, T, nb = m.shape
    rng = np.random.default_rng(seed)
    greedy_tot, refined_tot, cnt = 0, 0, 0
    for g in range(G):
        for w0 in range(0, T - W + 1, W):
            if rng.random() >= sample:
                continue
            win = m[g, w0:w0 + W]
            groups = greedy_groups(win, gs)
            unions = [win[grp].any(axis=0) for grp in groups]
            greedy_tot += sum(int(u.sum()) for u in unions)
            improved = True
            while improved:
                improved = False
                for a in range(len(groups)):
                    for b in range(a + 1, len(groups)):
                        for i in range(gs):
                            for j in range(gs):
                                ga, gb = groups[a][:], groups[b][:]
                                ga[i], gb[j] = gb[j], ga[i]
                                ua, ub = win[ga].any(axis=0), win[gb].any(axis=0)
                                if int(ua.sum()) + int(ub.sum()) < int(unions[a].sum()) + int(unions[b].sum()):
                                    groups[a], groups[b], unions[a], unions[b] = ga, gb, ua, ub
                                    improved = True
            refined_tot += sum(int(u.sum()) for u in unions)
            cnt += len(groups)
    return greedy_tot / max(cnt, 1), refined_tot / max(cnt, 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", default="build-cpu/libinfllm.so")
    ap.add_argument("--T", type=int, default=32768)
    ap.add_argument("--random", action="store_true", help="plain N(0,1) inputs (no segment structure)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--windows", default="16,64,256")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--csv", action="store_true")
    ap.add_argument("--refine", action="store_true",
                    help="also greedy + pairwise swaps (8-token groups, the first window size; slow)")
    ap.add_argument("--sample", type=float, default=0.15, help="fraction of the windows --refine visits")
    ap.add_argument("--tiles", action="store_true",
                    help="also k_flash90's work per 8-token tile (CTA iterations, warpgroup chunks) for three "
                         "tilings, in windows of the first --windows entry (>= 8)")
    ap.add_argument("--counts", action="store_true",
                    help="also how many of a warpgroup's 4 tokens selected each chunk of its union (windows of the "
                         "first --windows entry, >= 8)")
    a = ap.parse_args()
    wins = [int(x) for x in a.windows.split(",") if x]
    if a.T < 64 or a.T > 262144:
        sys.exit("stage2_union: --T must be in [64, 262144] (the scores of all T x T/16 pairs are held in memory)")
    if any(w < 1 or w > a.T for w in wins):
        sys.exit("stage2_union: every --windows entry must be in [1, T]")
    if (a.tiles or a.counts) and (not wins or wins[0] < 8):
        sys.exit("stage2_union: --tiles and --counts need a first --windows entry >= 8")
    if a.refine and (not wins or wins[0] < 8 or not 0.0 < a.sample <= 1.0):
        sys.exit("stage2_union: --refine needs a first --windows entry >= 8 and --sample in (0, 1]")
    lib = load_lib(a.lib)
    topk, nb = selections(lib, a.T, not a.random, a.seed, a.threads)
    K = int((topk >= 0).sum(axis=2).mean())
    m = masks(topk, nb)
    cols = ["consecutive"] + [f"greedy W={w}" for w in wins]
    rows = []
    for gs in (1, 2, 4, 8, 16):
        if gs > a.T:
            break
        r = [union_consecutive(m, gs)] + [union_greedy(m, gs, w) if w >= gs else float("nan") for w in wins]
        rows.append((gs, r))
    inp = "random" if a.random else "structured"
    print(f"# stage-2 unions: T={a.T}, {inp} inputs, {nb} blocks of 64, {K} selected per token (mean), "
          f"Hq {HQ}, Hkv {HKV}")
    refined = union_refined(m, 8, wins[0], a.sample, a.seed) if a.refine else None
    tiles = tile_work(m, wins[0]) if a.tiles else None
    counts = chunk_counts(m, wins[0]) if a.counts else None
    if a.csv:
        print("tokens," + ",".join(cols))
        for gs, r in rows:
            print(f"{gs}," + ",".join(f"{x:.1f}" for x in r))
        if refined:
            print(f"# 8-token groups, windows of {wins[0]}, {a.sample:.0%} of the windows: greedy,greedy+swaps\n"
                  f"8,{refined[0]:.1f},{refined[1]:.1f}")
        if tiles:
            print(f"# 8-token tiles of two 4-token warpgroups, windows of {wins[0]}: tiling,cta_iterations,warpgroup_chunks")
            for k, (it, wgc) in tiles.items():
                print(f"{k},{it:.1f},{wgc:.1f}")
        if counts:
            print(f"# warpgroup chunks by how many of its 4 tokens selected them, windows of {wins[0]}: tiling,1,2,3,4")
            for k, v in counts.items():
                print(f"{k}," + ",".join(f"{x:.4f}" for x in v))
        return
    print("| tokens per group | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for gs, r in rows:
        cells = [f"{x:.1f} ({x / K:.2f})" for x in r]
        print(f"| {gs} | " + " | ".join(cells) + " |")
    print(f"(mean union in blocks; in parentheses union / {K}: MMA work per useful MMA when a group's rows share one walk)")
    if refined:
        gr, rf = refined
        print(f"8-token groups, windows of {wins[0]}, {a.sample:.0%} of the windows: greedy {gr:.1f}, "
              f"greedy + swaps {rf:.1f} ({(1 - rf / gr) * 100:.1f}% less)")
    if tiles:
        print(f"\nk_flash90's work per 8-token tile (two warpgroups of 4 tokens), windows of {wins[0]} tokens:")
        print("| tiling | CTA iterations (8-token union) | warpgroup chunks (two 4-token unions) |")
        print("|---|---|---|")
        for k, (it, wgc) in tiles.items():
            print(f"| {k} | {it:.1f} | {wgc:.1f} |")
    if counts:
        print(f"\nwarpgroup chunks (4 tokens) by how many of the tokens selected them, windows of {wins[0]} tokens:")
        print("| tiling | 1 | 2 | 3 | 4 | token-chunks per union chunk |")
        print("|---|---|---|---|---|---|")
        for k, v in counts.items():
            print(f"| {k} | " + " | ".join(f"{100 * x:.1f}%" for x in v) + f" | {float((v * np.arange(1, 5)).sum()):.2f} |")


if __name__ == "__main__":
    main()
