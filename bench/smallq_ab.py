#!/usr/bin/env python3
"""smallq_ab.py: infllm_attention (sparse, or --mode dense; no cache) with a few query tokens
against a long prefix, for several builds of libinfllm (or settings of one), in one process,
interleaved round by round. This is the path of total_q <= 64 (one sequence of <= 16 queries: the
decode cache's k_cd_* kernels; else k_dec_lse / k_dec_score / k_dec_topk selection, then split
stage 2): decode or speculative verification through the stateless API, which recompresses the
prefix on every call. Prints, per configuration and query count, the median time per call and
the ratio to the first configuration, the per-kernel device times (torch.profiler, --kernels),
and whether outputs and LSE are bitwise equal to the first configuration's.

    python3 bench/smallq_ab.py --lib base=build-a/libinfllm.so --lib new=build-b/libinfllm.so
    python3 bench/smallq_ab.py --lib x=build/libinfllm.so --lib x_fused=build/libinfllm.so:INFLLM_CUDA_NO_DEC=1

The first configuration is the baseline. A configuration with switches (VAR=VALUE after a colon)
gets its own copy of the library, loaded while they are set (the library reads each switch once).

Shapes: Hq 32 / Hkv 2 / d 128, bf16 (--shape HQ,HKV,D and --dtype f16 as in cuda_bench.py), MiniCPM4.1
defaults, the bench's structured inputs; the queries are the last --lq tokens of a --tk token sequence.
Needs an NVIDIA GPU and PyTorch.
"""
import argparse
import ctypes as C
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cuda_bench  # noqa: E402  (its shape globals: set_shape)
from cuda_bench import check, env_switches, kernel_times, layout, load_lib, make_inputs, params, timeit  # noqa: E402
from infllm_ctypes import DENSE, SPARSE  # noqa: E402


def parse_configs(a):
    cfgs = []
    for spec in a.lib:
        name, _, rest = spec.partition("=")
        path, _, envs = rest.partition(":")
        if not name or not path:
            sys.exit(f"smallq_ab: --lib wants NAME=PATH[:VAR=VALUE,...], got {spec!r}")
        env = {}
        for kv in envs.split(",") if envs else []:
            k, eq, v = kv.partition("=")
            if not k or not eq:
                sys.exit(f"smallq_ab: bad VAR=VALUE {kv!r} in {spec!r}")
            env[k] = v
        cfgs.append((name, path, env))
    names = [c[0] for c in cfgs]
    if not cfgs or len(set(names)) != len(names):
        sys.exit("smallq_ab: give at least one configuration, each name once")
    return cfgs


class Call:
    """one configuration's infllm_attention of lq queries against tk keys, with its own workspace"""

    def __init__(self, lib, env, q, k, v, lq, tk, mode=SPARSE):
        self.lib, self.env = lib, env
        self.q, self.k, self.v = q, k, v
        self.out = torch.empty_like(q)
        self.lse = torch.empty(lq, cuda_bench.HQ, device="cuda", dtype=torch.float32)
        self.p = params(lib, mode)
        self.l = layout(lq, tk)
        wsb = C.c_size_t(0)
        check(lib, lib.infllm_attention_workspace_size(C.byref(self.p), C.byref(self.l), C.byref(wsb)), "ws size")
        self.ws = torch.empty(max(wsb.value, 1), dtype=torch.uint8, device="cuda")
        self.p.workspace, self.p.workspace_bytes = self.ws.data_ptr(), wsb.value

    def __call__(self):
        self.p.cuda_stream = torch.cuda.current_stream().cuda_stream
        check(self.lib, self.lib.infllm_attention(C.byref(self.p), C.byref(self.l), C.c_void_p(self.q.data_ptr()),
                                                  C.c_void_p(self.k.data_ptr()), C.c_void_p(self.v.data_ptr()),
                                                  C.c_void_p(self.out.data_ptr()),
                                                  C.c_void_p(self.lse.data_ptr())), "infllm_attention")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lib", action="append", default=[],
                    help="NAME=PATH[:VAR=VALUE,...]: a libinfllm.so, with switches (repeat; the first is the baseline)")
    ap.add_argument("--tk", type=int, default=131072, help="keys (prefix + queries), default 131072")
    ap.add_argument("--lq", default="1,16,64", help="query counts (comma list, each <= 64), default 1,16,64")
    ap.add_argument("--rounds", type=int, default=5, help="rounds (each times every configuration once)")
    ap.add_argument("--reps", type=int, default=20, help="calls per timing (back to back between two events)")
    ap.add_argument("--kernels", action="store_true", help="also the per-kernel device times")
    ap.add_argument("--mode", choices=("sparse", "dense"), default="sparse",
                    help="attention mode of the calls (default sparse, the MiniCPM4.1 path past dense_len)")
    ap.add_argument("--shape", default="32,2,128", metavar="HQ,HKV,D",
                    help="query heads, KV heads, head_dim (default 32,2,128: MiniCPM4's)")
    ap.add_argument("--dtype", default="bf16", choices=("bf16", "f16"))
    a = ap.parse_args()
    cuda_bench.set_shape(a.shape, a.dtype)
    cfgs = parse_configs(a)
    try:
        lqs = [int(x) for x in a.lq.split(",") if x]
    except ValueError:
        sys.exit(f"smallq_ab: --lq wants a comma list of numbers, got {a.lq!r}")
    if not lqs or any(x < 1 or x > a.tk for x in lqs):
        sys.exit("smallq_ab: each --lq must be in 1..tk")
    if not torch.cuda.is_available():
        print("smallq_ab: SKIP (no CUDA device)")
        return 0
    # the library reads each INFLLM_CUDA_* switch once per process, at its first use: a configuration
    # with switches gets its own copy of the .so (its own statics), every call of which runs under them
    import shutil
    import tempfile
    tmp = tempfile.mkdtemp(prefix="smallq_ab.")
    libs = {}
    for i, (name, path, env) in enumerate(cfgs):
        if env:
            copy = os.path.join(tmp, f"{i}-{os.path.basename(path)}")
            shutil.copyfile(path, copy)
            cfgs[i] = (name, copy, env)
            path = copy
        if path not in libs:
            libs[path] = load_lib(path)
    q_all, k, v = make_inputs(a.tk)
    print(f"# smallq_ab: {torch.cuda.get_device_name()}, {a.mode}, shape {a.shape} {a.dtype}, tk {a.tk}, rounds {a.rounds} x {a.reps} calls; "
          f"ms per infllm_attention call (median), ratio = first / this")
    for lq in lqs:
        q = q_all[a.tk - lq:].contiguous()
        calls = []
        for name, path, env in cfgs:
            with env_switches(env):
                c = Call(libs[path], env, q, k, v, lq, a.tk, SPARSE if a.mode == "sparse" else DENSE)
                c()
            calls.append((name, c))
        torch.cuda.synchronize()
        ts = {name: [] for name, _ in calls}
        for _ in range(a.rounds):
            for name, c in calls:
                with env_switches(c.env):
                    ts[name].append(timeit(c, warmup=2, reps=1, calls=a.reps))
        ref = calls[0][1]
        t0 = statistics.median(ts[calls[0][0]])
        print(f"\n| lq {lq} | ms | ratio | output vs {calls[0][0]} |")
        print("|---|---|---|---|")
        for name, c in calls:
            t = statistics.median(ts[name])
            same = torch.equal(c.out, ref.out) and torch.equal(c.lse, ref.lse)
            diff = "bitwise equal" if same else \
                f"max abs diff {(c.out.float() - ref.out.float()).abs().max().item():.3g}"
            print(f"| {name} | {t:.4f} | {t0 / t:.3f}x | {diff} |")
        if a.kernels:
            for name, c in calls:
                with env_switches(c.env):
                    kt = kernel_times(c)
                print(f"# kernels of {name}, lq {lq} (us per call): " +
                      ", ".join(f"{k_} {v_:.1f}" for k_, v_ in sorted(kt.items(), key=lambda x: -x[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
