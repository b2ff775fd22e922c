#!/usr/bin/env python3
"""real_union.py: stage-2 unions (bench/stage2_union.py's statistics) on a real model's attention
inputs, next to synthetic inputs of the same shape.

Reads the dump of `infllm run --dump-qkv DIR` (q_layer<L>.npy [T, Hq, D], k_layer<L>.npy
[T, Hkv, D], post-RoPE, f32), selects each token's blocks with the CPU backend as
stage2_union.py does (bf16 inputs, infllm_params_default: blocks of 64, 96 blocks a token with
1 init + 32 local, c1 window 32 / stride 16, c2 128 / 64), and prints, for each prefix length T
and layer, the mean union in blocks (averaged over the KV heads) of

  consecutive G   groups of G consecutive tokens (tokens 0..G-1, G..2G-1, ...)
  greedy W/G      groups of G formed greedily inside windows of W consecutive tokens (what
                  k_group_tokens does; stage2_union.greedy_groups)

with union / K in parentheses (K = the mean number of blocks a token selects). The rows
`synthetic` and `random` are stage2_union.make_inputs with the dump's Hq, Hkv, D and T
(N(0,1) plus a per-256-token segment component, and plain N(0,1)), so real and synthetic are
compared like for like. The dump's prefixes stand for shorter prompts: the model is causal and
its chunked prefill starts at position 0, so the first T rows of a long dump are exactly the
dump of its first T tokens.

    python3 bench/real_union.py --lib build-cpu/libinfllm.so --dump DIR [--layers 0,15,29]
                                [--T 8192,16384,32768] [--groups 4,8,16] [--window 64]
                                [--no-synthetic] [--seed 0] [--threads N] [--csv] [--save-topk DIR]

Measured (SmolLM2-135M-Instruct Q4_1, dense prefill of 32878 tokens of the Python docs'
prose from scripts/real_text.sh, layers 0, 2, 8, 15, 22, 29; union / K of 4 consecutive
tokens at 32K): real 1.12-1.24 (greedy W=64: 1.08-1.12), synthetic 1.52 (1.40), random 1.93
(1.80); at 16K real 1.07-1.12, synthetic 1.28, random 1.48. The model was trained to 8K
positions; at 8K all inputs are near 1.0 (K = 96 of 128 blocks).
"""
import argparse
import glob
import os
import re
import sys

import numpy as np

from stage2_union import bf16_bits, load_lib, make_inputs, masks, select_blocks, union_consecutive, union_greedy_all


def stats(lib, q, k, sizes, W, threads, save=None):
    """(K, {('consecutive', G): union}, {('greedy', G): union}) of one input; save: a path to write
    the selection to (compressed .npz, key topk: int16 or int32 [Hkv, T, K], -1 padded)"""
    topk, nb = select_blocks(lib, q, k, threads)
    if save:
        np.savez_compressed(save, topk=topk.astype(np.int16 if nb < 32768 else np.int32))
    K = float((topk >= 0).sum(axis=2).mean())
    m = masks(topk, nb)
    del topk
    out = {("consecutive", g): float(union_consecutive(m, g)) for g in sizes}
    for g, u in union_greedy_all(m, [g for g in sizes if g <= W], W).items():
        out[("greedy", g)] = u
    return K, nb, out


def dump_layers(d):
    """the layers that have both q_layer<L>.npy and k_layer<L>.npy in d, sorted"""
    found = []
    for p in glob.glob(os.path.join(d, "q_layer*.npy")):
        mm = re.fullmatch(r"q_layer(\d+)\.npy", os.path.basename(p))
        if mm and os.path.exists(os.path.join(d, f"k_layer{mm.group(1)}.npy")):
            found.append(int(mm.group(1)))
    return sorted(found)


def int_list(s, what):
    try:
        v = [int(x[:-1]) * 1024 if x[-1:] in "kK" else int(x) for x in s.split(",") if x]
    except ValueError:
        sys.exit(f"real_union: {what} expects comma-separated integers, got '{s}'")
    if not v:
        sys.exit(f"real_union: {what} is empty")
    return v


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", default="build-cpu/libinfllm.so")
    ap.add_argument("--dump", required=True, help="directory written by `infllm run --dump-qkv`")
    ap.add_argument("--layers", default="", help="comma-separated layers (default: every layer in the dump)")
    ap.add_argument("--T", default="", help="prefix lengths, e.g. 8192,16384,32768 or 8k,16k (default: the dump's T)")
    ap.add_argument("--groups", default="4,8,16", help="group sizes G")
    ap.add_argument("--window", type=int, default=64, help="greedy grouping window W in tokens")
    ap.add_argument("--no-synthetic", action="store_true", help="real rows only")
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthetic inputs")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--csv", action="store_true")
    ap.add_argument("--save-topk", default="", metavar="DIR",
                    help="also write each real row's selection to DIR/topk_T<T>_layer<L>.npz (for "
                         "bench/cuda_bench.py --topk-npy: stage 2 timed on real selection patterns)")
    a = ap.parse_args()
    if not os.path.isdir(a.dump):
        sys.exit(f"real_union: --dump {a.dump} is not a directory")
    have = dump_layers(a.dump)
    if not have:
        sys.exit(f"real_union: no q_layer<L>.npy / k_layer<L>.npy pairs in {a.dump} (write them with "
                 "`infllm run ... --dump-qkv DIR`)")
    layers = int_list(a.layers, "--layers") if a.layers else have
    missing = [x for x in layers if x not in have]
    if missing:
        sys.exit(f"real_union: layer(s) {missing} are not in {a.dump} (it has {have})")
    sizes = int_list(a.groups, "--groups")
    if any(g < 1 for g in sizes) or a.window < 1:
        sys.exit("real_union: --groups entries and --window must be >= 1")
    # shapes from the first layer; every layer must agree
    shp = {}
    for layer in layers:
        q = np.load(os.path.join(a.dump, f"q_layer{layer}.npy"), mmap_mode="r")
        k = np.load(os.path.join(a.dump, f"k_layer{layer}.npy"), mmap_mode="r")
        if q.ndim != 3 or k.ndim != 3 or q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2] or \
                q.shape[1] % k.shape[1]:
            sys.exit(f"real_union: layer {layer}: q {q.shape} and k {k.shape} are not [T, Hq, D] and [T, Hkv, D]")
        shp[layer] = (q.shape, k.shape)
    (Tmax, hq, d), (_, hkv, _) = shp[layers[0]]
    if any(s != shp[layers[0]] for s in shp.values()):
        sys.exit(f"real_union: the layers' shapes differ: {shp}")
    Ts = int_list(a.T, "--T") if a.T else [Tmax]
    bad = [t for t in Ts if t < 64 or t > Tmax]
    if bad:
        sys.exit(f"real_union: --T {bad}: must be in [64, {Tmax}] (the dump's length)")
    if a.save_topk:
        try:
            os.makedirs(a.save_topk, exist_ok=True)
        except OSError as e:
            sys.exit(f"real_union: --save-topk {a.save_topk}: {e}")
    lib = load_lib(a.lib, "real_union")
    sizes_w = [g for g in sizes if g <= a.window]
    cols = [("consecutive", g) for g in sizes] + [("greedy", g) for g in sizes_w]
    names = [f"consecutive {g}" for g in sizes] + [f"greedy W={a.window} / {g}" for g in sizes_w]
    print(f"# stage-2 unions of {a.dump}: Hq {hq}, Hkv {hkv}, D {d}; MiniCPM4.1 selection "
          f"(blocks of 64, 96 a token incl. 1 init + 32 local); mean over the KV heads")
    if a.csv:
        print(",".join(["T,input,layer,nblocks,K"] + [f"consecutive_{g}" for g in sizes] +
                       [f"greedy_w{a.window}_{g}" for g in sizes_w]))
    else:
        print("| T | input | layer | K | " + " | ".join(names) + " |")
        print("|---" * (len(names) + 4) + "|")

    def emit(T, inp, layer, K, nb, r):
        if a.csv:
            print(f"{T},{inp},{layer},{nb},{K:.1f}," + ",".join(f"{r[c]:.1f}" for c in cols), flush=True)
        else:
            cells = [f"{r[c]:.1f} ({r[c] / K:.2f})" for c in cols]
            print(f"| {T} | {inp} | {layer} | {K:.1f} | " + " | ".join(cells) + " |", flush=True)

    for T in Ts:
        for layer in layers:
            q = np.load(os.path.join(a.dump, f"q_layer{layer}.npy"), mmap_mode="r")[:T]
            k = np.load(os.path.join(a.dump, f"k_layer{layer}.npy"), mmap_mode="r")[:T]
            save = os.path.join(a.save_topk, f"topk_T{T}_layer{layer}.npz") if a.save_topk else None
            K, nb, r = stats(lib, bf16_bits(q), bf16_bits(k), sizes, a.window, a.threads, save)
            emit(T, "real", layer, K, nb, r)
        if not a.no_synthetic:
            for inp, structured in (("synthetic", True), ("random", False)):
                q, k = make_inputs(T, structured, a.seed, hq, hkv, d)
                K, nb, r = stats(lib, q, k, sizes, a.window, a.threads)
                emit(T, inp, "-", K, nb, r)
    if not a.csv:
        print("(mean union in blocks; in parentheses union / K, K = the mean number of blocks a token selects; "
              "synthetic: N(0,1) + per-256-token segments, random: N(0,1), both stage2_union.make_inputs)")


if __name__ == "__main__":
    main()
