#!/usr/bin/env python3
"""py_binding_bench.py: what the Python package (python/infllm) adds to a call, on the GPU.

For each case the same work runs through the package and through the C entry point called by ctypes
directly with a preallocated output and workspace (the least a Python caller can do), both on torch's
current stream, timed two ways:
  gpu us   CUDA events around N back-to-back calls (the stream's time per call)
  host us  time.perf_counter around the same N calls without a sync (what a call costs the CPU; when it is
           above the GPU's time, the GPU waits for Python)
Each is timed twice in turn with the other (package, direct, package, direct) and the better kept.
Cases (bf16, 32 query heads / 2 KV heads, d 128, MiniCPM4.1 parameters): the sparse pipeline
infllm.attention at 32K and 128K tokens, one query against 128K keys (infllm.attention, stateless), a decode
step DecodeCache.attend on a 128K cache, and the differentiable forward + backward at 32K.

    python3 bench/py_binding_bench.py [--lib build-gpu/libinfllm.so] [--reps N] [--format md|csv]
"""
import argparse
import ctypes as C
import os
import sys
import time

import torch

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--lib", default=None, help="libinfllm.so (default: $INFLLM_LIB or the checkout's build folders)")
ap.add_argument("--reps", type=int, default=20)
ap.add_argument("--format", choices=("md", "csv"), default="md")
a = ap.parse_args()
if a.lib:
    os.environ["INFLLM_LIB"] = os.path.abspath(a.lib)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))
import infllm  # noqa: E402
from infllm import _capi  # noqa: E402

if not (torch.cuda.is_available() and infllm.cuda_available()):
    sys.exit(f"py_binding_bench: no GPU ({infllm.cuda_device_info()})")
lib = infllm._lib
dev = torch.device("cuda")
HQ, HKV, D = 32, 2, 128
gen = torch.Generator(device=dev).manual_seed(0)


def randn(*shape):
    return torch.randn(*shape, device=dev, dtype=torch.bfloat16, generator=gen)


def timed(fn, reps):
    """(gpu us, host us) per call of fn over reps back-to-back calls, after 3 warm-ups"""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    e0.record()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    host = (time.perf_counter() - t0) / reps * 1e6
    e1.record()
    torch.cuda.synchronize()
    return e0.elapsed_time(e1) * 1e3 / reps, host


def direct_attention(q, k, v):
    """infllm_attention through ctypes with everything prepared once"""
    p = _capi.ParamsC()
    lib.infllm_params_default(C.byref(p))
    p.backend, p.cuda_stream = _capi.BACKEND_CUDA, torch.cuda.current_stream().cuda_stream
    lay = _capi.LayoutC(dtype=_capi.DTYPE_BF16, num_seqs=1, total_q=q.shape[0], total_k=k.shape[0], num_q_heads=HQ,
                        num_kv_heads=HKV, head_dim=D)
    n = C.c_size_t()
    lib.infllm_attention_workspace_size(C.byref(p), C.byref(lay), C.byref(n))
    ws = torch.empty(max(n.value, 1), dtype=torch.uint8, device=dev)
    p.workspace, p.workspace_bytes = ws.data_ptr(), n.value
    out = torch.empty_like(q)
    args = (C.byref(p), C.byref(lay), q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), None)

    def call():
        if lib.infllm_attention(*args):
            raise RuntimeError(lib.infllm_last_error().decode())
    call.keep = (ws, out)
    return call


def pair(pkg, direct, reps):
    """both timed in turn, twice, the better of each kept (the machine drifts; neither goes first always)"""
    runs = [timed(f, reps) for _ in range(2) for f in ((pkg, direct) if direct else (pkg,))]
    if not direct:
        return min(runs), None
    return min(runs[0::2]), min(runs[1::2])


rows = []
for T in (32768, 131072):
    q, k, v = randn(T, HQ, D), randn(T, HKV, D), randn(T, HKV, D)
    reps = max(3, a.reps // (4 if T > 65536 else 1))
    rows.append((f"attention, {T // 1024}K tokens",) + pair(lambda: infllm.attention(q, k, v), direct_attention(q, k, v), reps))
K = 131072
k, v = randn(K, HKV, D), randn(K, HKV, D)
q1 = randn(1, HQ, D)
rows.append(("attention, 1 query x 128K keys",) + pair(lambda: infllm.attention(q1, k, v), direct_attention(q1, k, v),
                                                       a.reps * 10))
cache = infllm.DecodeCache(HKV, D, K, "bf16", "cuda")
cache.append(k, v)
rows.append(("DecodeCache.attend, 128K cache",) + pair(lambda: cache.attend(q1), None, a.reps * 10))
T = 32768
q, k, v = (randn(T, h, D).requires_grad_() for h in (HQ, HKV, HKV))
dout = randn(T, HQ, D)
rows.append(("attention forward + backward, 32K",) + pair(lambda: infllm.attention(q, k, v).backward(dout), None, a.reps))

print(f"# {torch.cuda.get_device_name()}, library {infllm.build_commit()}, torch {torch.__version__}")
if a.format == "csv":
    print("case,package_gpu_us,package_host_us,direct_gpu_us,direct_host_us")
    for name, pk, dr in rows:
        print(f"{name},{pk[0]:.1f},{pk[1]:.1f},{'' if dr is None else f'{dr[0]:.1f}'},"
              f"{'' if dr is None else f'{dr[1]:.1f}'}")
else:
    print("| case | package: gpu us / call | package: host us / call | ctypes direct: gpu us | direct: host us | package / direct (gpu) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, pk, dr in rows:
        d = ("-", "-", "-") if dr is None else (f"{dr[0]:.1f}", f"{dr[1]:.1f}", f"{pk[0] / dr[0]:.3f}")
        print(f"| {name} | {pk[0]:.1f} | {pk[1]:.1f} | {d[0]} | {d[1]} | {d[2]} |")
