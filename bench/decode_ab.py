#!/usr/bin/env python3
"""decode_ab.py: the device time of one decode attend (1 token, 128K cache, Hq 32 / Hkv 2 / d 128,
bf16, MiniCPM4.1 defaults) for several builds of libinfllm, or several settings of one build, in
one process, interleaved round by round, so that the machine's drift hits every configuration alike.

Each configuration gets its own cache (the same K/V, prefix appended once), a graph of one attend
and a graph of `--layers` attends (as a model's decode step would capture one attend per layer);
both are replayed `--calls` times back to back between two events, per round. The table gives the
median per attend over the rounds and the ratio to the first configuration; outputs are compared
bitwise with the first configuration's.

    python3 bench/decode_ab.py --lib main=build-a/libinfllm.so --lib cand=build-b/libinfllm.so
    python3 bench/decode_ab.py --lib x=build/libinfllm.so --env x2=build/libinfllm.so:INFLLM_CUDA_NO_PDL=1

--env NAME=LIB:VAR=VALUE[,VAR=VALUE] sets environment variables while that configuration's graphs
are captured (a library that reads them per call then bakes them into its graphs).
"""
import argparse
import ctypes as C
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cuda_bench import HKV, HQ, D, check, env_switches, load_lib, make_inputs, params, timeit  # noqa: E402
from infllm_ctypes import BF16, SPARSE  # noqa: E402


def b2b(fn, calls):
    """ms per call of `calls` calls back to back between two events (one round)"""
    return timeit(fn, warmup=10, reps=1, calls=calls)


class Config:
    def __init__(self, name, path, env, q, k, v, tk, layers, libs):
        self.name, self.env = name, env
        self.q_ptr = q.data_ptr()
        if path not in libs:
            libs[path] = load_lib(path)
        lib = self.lib = libs[path]
        self.stream = torch.cuda.Stream()
        pc = self.pc = params(lib, SPARSE)
        pc.cuda_stream = self.stream.cuda_stream
        cache = self.cache = C.c_void_p()
        check(lib, lib.infllm_cache_create(C.byref(pc), BF16, HKV, D, tk, C.byref(cache)), "cache_create")
        ws = C.c_size_t(0)
        check(lib, lib.infllm_cache_workspace_size(cache, C.byref(pc), 1, HQ, C.byref(ws)), "cache ws")
        self.ws = torch.empty(max(ws.value, 1), dtype=torch.uint8, device="cuda")
        pc.workspace, pc.workspace_bytes = self.ws.data_ptr(), ws.value
        self.out = torch.empty_like(q)
        self.lse = torch.empty(1, HQ, device="cuda", dtype=torch.float32)
        with env_switches(env):
            with torch.cuda.stream(self.stream):
                check(lib, lib.infllm_cache_append(cache, k.data_ptr(), v.data_ptr(), tk), "prefix append")
                self.attend()
                self.g1 = torch.cuda.CUDAGraph()
                with torch.cuda.graph(self.g1, stream=self.stream):
                    self.attend()
                self.gl = torch.cuda.CUDAGraph()
                with torch.cuda.graph(self.gl, stream=self.stream):
                    for _ in range(layers):
                        self.attend()
            torch.cuda.synchronize()
        self.t1, self.tl = [], []

    def attend(self):
        check(self.lib, self.lib.infllm_cache_attend(self.cache, C.byref(self.pc), self.q_ptr, 1, HQ,
                                                     self.out.data_ptr(), self.lse.data_ptr()), "cache attend")

    def free(self):
        self.lib.infllm_cache_free(self.cache)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lib", action="append", default=[], help="NAME=PATH of a libinfllm.so (repeatable)")
    ap.add_argument("--env", action="append", default=[], help="NAME=PATH:VAR=VAL[,VAR=VAL] (repeatable)")
    ap.add_argument("--tk", type=int, default=131072, help="cache length (default 131072)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=200, help="graph replays back to back per round")
    ap.add_argument("--layers", type=int, default=32, help="attends in the many-attend graph")
    ap.add_argument("--random", action="store_true", help="unstructured random inputs")
    ap.add_argument("--csv", action="store_true", help="also print the table as csv")
    a = ap.parse_args()
    specs = []
    for s in a.lib:
        name, _, path = s.partition("=")
        specs.append((name, path, {}))
    for s in a.env:
        name, _, rest = s.partition("=")
        path, _, kvs = rest.partition(":")
        env = dict(kv.split("=", 1) for kv in kvs.split(",") if kv)
        specs.append((name, path, env))
    if not specs:
        ap.error("give at least one --lib or --env")
    q, k, v = make_inputs(1, a.tk, structured=not a.random)  # q: the query of the last position
    libs, cfgs = {}, []
    for name, path, env in specs:
        cfgs.append(Config(name, path, env, q, k, v, a.tk, a.layers, libs))
    ref = cfgs[0].out
    for r in range(a.rounds):
        for c in cfgs:
            with torch.cuda.stream(c.stream):
                c.t1.append(b2b(c.g1.replay, a.calls))
                c.tl.append(b2b(c.gl.replay, max(1, a.calls // a.layers)) / a.layers)
    dev = torch.cuda.get_device_name()
    print(f"# decode attend, 1 token, {a.tk} keys, Hq {HQ} Hkv {HKV} d {D} bf16; {dev}; medians of {a.rounds} "
          f"rounds, {a.calls} replays of a one-attend graph back to back per round; a graph of {a.layers} attends")
    print("| config | us per attend (one-attend graph) | ratio | us per attend (graph of "
          f"{a.layers}) | ratio | output vs {cfgs[0].name} |")
    print("| --- | --- | --- | --- | --- | --- |")
    m0 = statistics.median(cfgs[0].t1) * 1000
    l0 = statistics.median(cfgs[0].tl) * 1000
    rows = []
    for c in cfgs:
        c.g1.replay()
        torch.cuda.synchronize()
        m = statistics.median(c.t1) * 1000
        lm = statistics.median(c.tl) * 1000
        same = "bitwise equal" if torch.equal(c.out, ref) else \
            f"max abs diff {(c.out.float() - ref.float()).abs().max().item():.3g}"
        rows.append((c.name, m, m / m0, lm, lm / l0, same))
        print(f"| {c.name} | {m:.2f} (min {min(c.t1) * 1000:.2f}) | {m / m0:.3f} | {lm:.2f} | {lm / l0:.3f} | {same} |")
    if a.csv:
        print("config,us_one,ratio_one,us_layers,ratio_layers,output")
        for r in rows:
            print(",".join([r[0], f"{r[1]:.3f}", f"{r[2]:.4f}", f"{r[3]:.3f}", f"{r[4]:.4f}", r[5]]))
    for c in cfgs:
        c.free()


if __name__ == "__main__":
    main()
