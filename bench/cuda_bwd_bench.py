#!/usr/bin/env python3
"""cuda_bwd_bench.py: times the infllm CUDA attention BACKWARD (infllm_sparse_attention_backward and
infllm_dense_attention_backward, through libinfllm.so and ctypes, on PyTorch's current stream) against the
backward of PyTorch's scaled_dot_product_attention (causal; cuDNN and flash backends) and of FlexAttention on
the same block selection, in one process. Only backward passes are timed.

For each T of --sizes (batch 1, one sequence, --shape HQ,HKV,D, --dtype; cuda_bench.make_inputs' structured
inputs, a random N(0, 1) dout):
 * selection: infllm_select_blocks on CUDA with MiniCPM4.1's defaults (96 blocks of 64: init 1, local 32,
   topk 64), as cuda_bench.py; one infllm_sparse_attention forward on it for the lse ([T, Hq] float32, natural
   log) and one infllm_dense_attention forward for the dense lse (both outside the timing);
 * ours sparse: infllm_sparse_attention_backward on that selection; ours dense: infllm_dense_attention_backward
   (causal). Each with p.workspace of the bytes infllm_sparse / dense_attention_backward_workspace_size return
   (allocated once, outside the timing), p.cuda_stream = torch's current stream;
 * ours sparse, out given: infllm_sparse_attention_backward_out with that forward's out and lse (no forward
   recomputed; its dv compared bitwise with the call's without out, a WARNING where it differs, and dq / dk's
   max difference printed: their Delta comes from out rounded to the dtype, the call's without out from the f32 O);
 * cuDNN / flash: F.scaled_dot_product_attention(is_causal=True) under torch.nn.attention.sdpa_kernel(backend):
   the forward runs once with requires_grad leaves, then torch.autograd.grad(out, (q, k, v), dout,
   retain_graph=True) is what is timed. GQA: enable_gqa=True where the backend takes it (forward and backward),
   its reduction of dk / dv over the group then inside the timing; else K / V expanded to Hq heads
   (repeat_interleave) BEFORE the timed region, the expanded copies being the leaves, so that reduction is NOT
   timed (in torch's favour). The gqa columns of the JSON / CSV and a line under the table say which ran;
 * flex: FlexAttention (torch.compile, static shapes) in issue 3's folded form with cuda_bench.flex_inputs'
   BlockMask (one block list per 64-token query block: that block's last token's selection; the G heads of a KV
   head folded into the rows), backward only, as above. Flex's own sm90 backward tiles for head_dim 128 have
   BLOCK_N1 = 128 (torch 2.11: 64 / 128 / 128 / 64, 3 stages, 8 warps), which its lowering skips for 64-key mask
   blocks (no kernel left: it does not compile); the script then tries 64 x 64 backward tiles (3 stages / 4 warps,
   Flex's own sm90 choice below head_dim 64; then 2 / 4) by patching InductorChoices.get_flex_attention_bwd_configs
   while it compiles, keeps the first that compiles for the later sizes, and prints each failure.

FLOP counts of the TFLOP/s columns:
 * dense causal backward: 2.5 x the forward's 4 Hq D T^2 / 2 = 5 Hq D T^2: five matmuls over the causal half
   (S = Q K^T recomputed, dP = dO V^T, dV = P^T dO, dQ = dS K, dK = dS^T Q), 2 D FLOP each per (query, key);
 * sparse backward: the same five matmuls over the keys each query attends, 10 D G sum_{g,t} keys(g, t), with
   keys(g, t) counted exactly from the selection (64 per selected block before t's own, t mod 64 + 1 in its
   own; cuda_bench.py's stage2_flop counts 64 for every selected block, ~31.5 keys more per query);
 * flex: the sparse count (its useful work; its per-64-token block lists attend more keys than that).

--kernels: after our two backward timings at each size, each of our kernels' device ms per call (torch.profiler over
3 calls; k_flash90's forward and dq instances apart by their template arguments), printed as a "kernels," line and kept
in the JSON rows (kernels_sparse_ms / kernels_dense_ms).

Every time is cuda_bench.timeit's median of CUDA-event timings (--reps, default 10) after warm-up (two untimed
calls, then timeit's one); where one call is slow (an early kernel), reps shrink so that one measurement stays
near --budget seconds (printed). A baseline that runs out of memory or fails is skipped at that size, with why.

Correctness first (--no-check skips it), on fresh random (unstructured) inputs, our gradients poisoned with NaN
before each checked call (an unwritten element shows as NaN, which fails):
 * dense, at the smallest --sizes: our dense backward's dq / dk / dv (and the forward's out) against SDPA's
   (flash backend; cuDNN against flash printed for scale), as max |ours - ref| / max |ref| per tensor; WARNING
   above --tol (default 2e-2 for bf16, 1e-2 for f16). Up to --check-ref-max tokens (16384) ours and SDPA's are
   also held to a float32 math SDPA backward (computed in 2048-row chunks): a WARNING when ours is off from it,
   and none for an ours-vs-SDPA gap where ours is within --tol of float32 (SDPA's bf16 dk / dv summed over the
   group can be the rounder one: on the CPU stand-in, torch's flash dk was 2.2e-2 off at G 16);
 * sparse, at --check-t tokens (2048) with a smaller selection (--check-topk 8 + --check-local 4 = 12 of 32
   blocks, so that it is sparse at that length; dense_len plays no part, infllm_select_blocks always selects):
   our sparse backward against a float32 SDPA backward (math backend, one KV head's group at a time) with the
   explicit token-level boolean mask built from topk_idx; printed the same way.

    python3 bench/cuda_bwd_bench.py --lib build-gpu/libinfllm.so [--sizes 8192,16384,32768,65536,131072]
        [--reps 10] [--shape 32,2,128] [--dtype bf16|f16] [--no-flex] [--flex-sizes ...] [--no-check]
        [--json FILE] [--csv FILE] [--kernels]
    BWD=1 bash scripts/cuda_bench.sh [ARGS]          # the same, after building build-gpu/libinfllm.so

Expected on an H200 with the defaults: ~3-5 minutes, about half of it FlexAttention compiling each size's forward
and backward (its first size also tries, and fails with, Flex's default tiles); --no-flex or --flex-sizes trim it.
Peak device memory at 128K: a few GiB beyond our backward's workspace (q, dout, dq 1 GiB each; SDPA's and Flex's
copies and gradients a few more).
"""
import argparse
import contextlib
import csv
import ctypes as C
import gc
import json
import os
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cuda_bench as cb  # noqa: E402  (shape globals HQ / HKV / D / TDT set by cb.set_shape: read them as cb.X)
from infllm_ctypes import DENSE, SPARSE  # noqa: E402

BS = 64  # the stage-2 block (MiniCPM4.1's; cuda_bench's Flex masks assume it)
VP = C.c_void_p
NAN = float("nan")
NOTES = []  # every skipped or failed measurement, for the JSON


def note(msg):
    print(f"# {msg}", flush=True)
    NOTES.append(msg)


def sync():
    torch.cuda.synchronize()


def ptr(t):
    return None if t is None else C.c_void_p(t.data_ptr())


def bind_backward(lib):
    """argtypes of the backward entry points (include/infllm.h); AttributeError from a library without them"""
    lib.infllm_sparse_attention_backward.argtypes = [VP] * 6 + [C.c_int32] + [VP] * 5
    lib.infllm_dense_attention_backward.argtypes = [VP] * 10
    lib.infllm_sparse_attention_backward_out.argtypes = [VP] * 6 + [C.c_int32] + [VP] * 6
    lib.infllm_dense_attention_backward_out.argtypes = [VP] * 11
    lib.infllm_sparse_attention_backward_workspace_size.argtypes = [VP, VP, C.c_int32, VP]
    lib.infllm_dense_attention_backward_workspace_size.argtypes = [VP, VP, VP]
    lib.infllm_params_topk_total.argtypes = [VP]
    lib.infllm_params_topk_total.restype = C.c_int32
    lib.infllm_cuda_device_info.argtypes = [C.c_char_p, C.c_size_t]


# ------------------------------------------------------------------------------------------------ ours ----

def select(lib, q, k, topk_n=None, local_n=None):
    """infllm_select_blocks (cuda_bench.select_fn) on one sequence: (topk [HKV, T, K] int32, K); MiniCPM4.1's
    defaults unless topk_n / local_n are given"""
    T = q.shape[0]
    p = cb.params(lib, SPARSE)
    if topk_n is not None:
        p.topk = topk_n
    if local_n is not None:
        p.local_blocks = local_n
    l = cb.layout(T, k.shape[0])
    K = min(lib.infllm_params_topk_total(C.byref(p)), (k.shape[0] + BS - 1) // BS)
    topk = torch.empty(cb.HKV, T, K, dtype=torch.int32, device=q.device)
    cb.select_fn(lib, p, l, q, k, topk, T)()
    return topk, K


def our_forward(lib, q, k, v, topk=None, K=0):
    """(out, lse) of our forward: stage 2 on topk when given, else dense causal (library-allocated workspace)"""
    T = q.shape[0]
    p = cb.params(lib, SPARSE if topk is not None else DENSE)
    l = cb.layout(T, k.shape[0])
    out = torch.empty_like(q)
    lse = torch.empty(T, cb.HQ, device=q.device, dtype=torch.float32)
    if topk is not None:
        cb.check(lib, lib.infllm_sparse_attention(C.byref(p), C.byref(l), ptr(q), ptr(k), ptr(v), ptr(topk), K,
                                                  ptr(out), ptr(lse)), "sparse forward")
    else:
        cb.check(lib, lib.infllm_dense_attention(C.byref(p), C.byref(l), ptr(q), ptr(k), ptr(v), ptr(out),
                                                 ptr(lse)), "dense forward")
    return out, lse


class OurBwd:
    """one backward call of ours (sparse on topk [HKV, T, K] when given, else dense causal): dq / dk / dv and
    the caller workspace (the backward workspace-size function's bytes) allocated once, here; with out (the
    forward's output, lse its lse) the _out entry points, which take Delta from it instead of a forward"""

    def __init__(self, lib, q, k, v, lse, dout, topk=None, K=0, out=None):
        self.lib, self.q, self.k, self.v, self.lse, self.dout, self.topk, self.K = lib, q, k, v, lse, dout, topk, K
        self.out = out
        self.sparse = topk is not None
        self.p = cb.params(lib, SPARSE if self.sparse else DENSE)
        self.l = cb.layout(q.shape[0], k.shape[0])
        self.dq, self.dk, self.dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        nb = C.c_size_t(0)
        if self.sparse:
            st = lib.infllm_sparse_attention_backward_workspace_size(C.byref(self.p), C.byref(self.l), K, C.byref(nb))
        else:
            st = lib.infllm_dense_attention_backward_workspace_size(C.byref(self.p), C.byref(self.l), C.byref(nb))
        cb.check(lib, st, "sparse backward workspace size" if self.sparse else "dense backward workspace size")
        self.ws_bytes = nb.value
        self.ws = torch.empty(max(nb.value, 16), dtype=torch.uint8, device=q.device)  # 16-byte aligned (torch: 512)
        self.p.workspace, self.p.workspace_bytes = self.ws.data_ptr(), nb.value

    def __call__(self):
        head = (C.byref(self.p), C.byref(self.l), ptr(self.q), ptr(self.k), ptr(self.v))
        tail = (ptr(self.lse), ptr(self.dout), ptr(self.dq), ptr(self.dk), ptr(self.dv))
        if self.out is not None:
            if self.sparse:
                st = self.lib.infllm_sparse_attention_backward_out(*head, ptr(self.topk), self.K, ptr(self.out), *tail)
            else:
                st = self.lib.infllm_dense_attention_backward_out(*head, ptr(self.out), *tail)
        elif self.sparse:
            st = self.lib.infllm_sparse_attention_backward(*head, ptr(self.topk), self.K, *tail)
        else:
            st = self.lib.infllm_dense_attention_backward(*head, *tail)
        cb.check(self.lib, st, "sparse backward" if self.sparse else "dense backward")

    def poison(self):
        for t in (self.dq, self.dk, self.dv):
            t.fill_(NAN)


def attended_keys(topk):
    """sum over KV heads g and queries t of the keys t attends under topk [HKV, T, K] (one prefill sequence:
    64 for each selected block before t's own, t % 64 + 1 in its own; -1 entries none)"""
    T = topk.shape[1]
    t = torch.arange(T, device=topk.device).view(1, T, 1)
    total = 0
    for g in range(topk.shape[0]):  # a KV head at a time: the int64 temporaries of 128K x 96 stay at ~100 MB
        b = topk[g:g + 1].long()
        n = (t - BS * b + 1).clamp(min=0, max=BS)
        total += int(torch.where(b >= 0, n, torch.zeros_like(n)).sum().item())
    return total


# ------------------------------------------------------------------------------------------- baselines ----

def bhsd(x):
    """[T, H, D] token-major -> the [1, H, T, D] view SDPA takes (no copy)"""
    return x.transpose(0, 1).unsqueeze(0)


def sdpa_bwd(q, k, v, dout, backend):
    """the backward of causal SDPA under one backend: (call, gqa, out). The forward has run once (and one
    backward, the probe); call() = torch.autograd.grad(out, (q, k, v), dout, retain_graph=True). gqa:
    'enable_gqa', or 'expanded K/V' (repeat_interleave'd copies as the leaves, made here, outside any timing)"""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    be = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}[backend]
    G = cb.HQ // cb.HKV
    qq = bhsd(q).detach().requires_grad_()
    do = bhsd(dout)  # token-major, as q and the backends' out
    err = None
    for gqa in ("enable_gqa", "expanded K/V"):
        try:
            if gqa == "enable_gqa":
                kk, vv, kw = bhsd(k).detach().requires_grad_(), bhsd(v).detach().requires_grad_(), {"enable_gqa": True}
            else:
                kk = bhsd(k).repeat_interleave(G, dim=1).detach().requires_grad_()
                vv = bhsd(v).repeat_interleave(G, dim=1).detach().requires_grad_()
                kw = {}
            with sdpa_kernel(be):
                out = F.scaled_dot_product_attention(qq, kk, vv, is_causal=True, **kw)
            torch.autograd.grad(out, (qq, kk, vv), do, retain_graph=True)  # the probe: the backward runs too
            sync()
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as e:  # noqa: this backend refuses this form: the next
            err = e
            continue

        def run(out=out, ins=(qq, kk, vv)):
            return torch.autograd.grad(out, ins, do, retain_graph=True)
        return run, gqa, out
    raise err


def grads_tokens(grads, gqa):
    """SDPA's (dq, dk, dv) [1, H, T, D] as float32 token-major [T, H, D]; expanded dk / dv summed over the group"""
    dq, dk, dv = (x[0].transpose(0, 1).float() for x in grads)
    if gqa != "enable_gqa":
        G = cb.HQ // cb.HKV
        dk = dk.reshape(dk.shape[0], cb.HKV, G, dk.shape[2]).sum(2)
        dv = dv.reshape(dv.shape[0], cb.HKV, G, dv.shape[2]).sum(2)
    return dq, dk, dv


# (label, (num_stages, num_warps) of 64 x 64 backward tiles, or None for Flex's own choice)
FLEX_TILES = (("Flex's default backward tiles", None),
              ("64x64 backward tiles, 3 stages, 4 warps", (3, 4)),
              ("64x64 backward tiles, 2 stages, 4 warps", (2, 4)))


def tiles64(c, stages, warps):
    """a Flex backward config with 64 x 64 tiles (BLOCK_M1 / N1 / M2 / N2), which divide the folded mask's blocks
    (64 keys, 64 G query rows), and these stages / warps"""
    import dataclasses
    if dataclasses.is_dataclass(c):
        names = {f.name for f in dataclasses.fields(c)}
        ch = {n: 64 for n in ("block_m1", "block_n1", "block_m2", "block_n2", "block_m", "block_n") if n in names}
        ch.update({n: x for n, x in (("num_stages", stages), ("num_warps", warps)) if n in names})
        return dataclasses.replace(c, **ch)
    if isinstance(c, tuple) and len(c) == 4:  # older torch: (BLOCK1, BLOCK2, num_warps, num_stages)
        return (64, 64, warps, stages)
    return c


@contextlib.contextmanager
def flex_tiles(sw):
    """Flex's own backward tiles (sw None), or 64 x 64 ones (sw = (num_stages, num_warps)) while the block runs.
    Patched on the InductorChoices class, not set as a handler (V.set_choices_handler is thread-local, and the
    backward compiles lazily on autograd's CUDA worker thread)"""
    if sw is None:
        yield
        return
    from torch._inductor.choices import InductorChoices
    orig = InductorChoices.get_flex_attention_bwd_configs

    def patched(self, head_dim, dtype, device_type="cuda"):
        return [tiles64(c, *sw) for c in orig(self, head_dim, dtype, device_type)]
    InductorChoices.get_flex_attention_bwd_configs = patched
    try:
        yield
    finally:
        InductorChoices.get_flex_attention_bwd_configs = orig


def flex_bwd(q, k, v, dout, topk, T, start=0):
    """the backward of FlexAttention in the folded form over topk (cuda_bench.flex_inputs): (call, index into
    FLEX_TILES of the tiles that compiled). The forward and one backward (the compile) have run; call() =
    torch.autograd.grad(out, (q, k, v), dout, retain_graph=True) on the folded tensors"""
    import torch._dynamo
    from torch.nn.attention.flex_attention import flex_attention
    bm, qq, kk, vv, kw = cb.flex_inputs(q, k, v, topk, T, folded=True)
    qq, kk, vv = (x.detach().requires_grad_() for x in (qq, kk, vv))
    G = cb.HQ // cb.HKV
    do = dout.view(T, cb.HKV, G, cb.D).permute(1, 0, 2, 3).reshape(1, cb.HKV, T * G, cb.D).contiguous()
    for i in range(start, len(FLEX_TILES)):
        label, sw = FLEX_TILES[i]
        torch._dynamo.reset()  # a fresh compile of forward and backward under these tiles
        fa = torch.compile(flex_attention, dynamic=False)
        try:
            with flex_tiles(sw):  # the backward compiles lazily, at its first call: inside
                out = fa(qq, kk, vv, block_mask=bm, **kw)
                torch.autograd.grad(out, (qq, kk, vv), do, retain_graph=True)
                sync()
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as e:  # noqa
            msg = " ".join(str(e).split())
            note(f"flex backward at T={T} with {label}: did not compile or run: {type(e).__name__}: {msg[:300]}")
            continue

        def run(out=out, ins=(qq, kk, vv)):
            return torch.autograd.grad(out, ins, do, retain_graph=True)
        return run, i
    raise RuntimeError("FlexAttention's backward compiled with none of the tile configurations")


# -------------------------------------------------------------------------------------------- timing -----

def measure(label, fn, reps, budget):
    """cb.timeit's median (ms) after two untimed calls (warm-up; the second estimates a call), reps cut so that
    the measurement stays near budget seconds; NaN with a note when fn fails (out of memory included)"""
    try:
        fn()
        sync()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        est = a.elapsed_time(b) / 1000.0
        r = reps
        if est * (reps + 1) > budget:
            r = max(3, int(budget / max(est, 1e-9)) - 1)
            if r < reps:
                print(f"# {label}: {est * 1000:.0f} ms a call: {r} reps (--budget {budget:g} s)", flush=True)
            else:
                r = reps
        return cb.timeit(fn, warmup=1, reps=r)
    except Exception as e:  # noqa
        what = "out of memory, skipped" if isinstance(e, torch.cuda.OutOfMemoryError) else type(e).__name__
        note(f"{label}: {what}: {' '.join(str(e).split())[:300]}")
        return NAN
    finally:
        gc.collect()
        torch.cuda.empty_cache()


def kernel_ms(fn, reps=3):
    """device ms per call of each kernel fn launches (torch.profiler), keyed by the kernel's name with its template
    arguments (so that k_flash90's forward and dq instances stay apart) and without its namespace or arguments"""
    from torch.profiler import ProfilerActivity, profile
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    acc = {}
    for e in prof.key_averages():
        t = getattr(e, "self_device_time_total", None)
        if t is None:
            t = getattr(e, "self_cuda_time_total", 0)
        if t > 0:
            name = e.key.replace("(anonymous namespace)::", "")
            depth, cut = 0, len(name)  # drop the argument list: the first "(" outside the template brackets
            for i, ch in enumerate(name):
                depth += ch == "<"
                depth -= ch == ">"
                if ch == "(" and depth == 0:
                    cut = i
                    break
            name = name[:cut].replace("void ", "").strip()
            acc[name] = acc.get(name, 0.0) + t / reps / 1e3
    return acc


def print_kernels(label, acc):
    total = sum(acc.values())
    parts = ", ".join(f"{k} {v:.3f}" for k, v in sorted(acc.items(), key=lambda kv: -kv[1]))
    print(f"kernels, {label}: {total:.3f} ms in all: {parts}", flush=True)


def tflops(flop, ms):
    return flop / ms / 1e9 if ms == ms and ms > 0 else NAN


def bwd_inputs(T):
    """q, k, v (cuda_bench.make_inputs' structured inputs) and a random N(0, 1) dout (seed 1) at T tokens"""
    q, k, v = cb.make_inputs(T, structured=True)
    gen = torch.Generator(device=q.device).manual_seed(1)
    dout = torch.randn(T, cb.HQ, cb.D, device=q.device, generator=gen).to(cb.TDT)
    return q, k, v, dout


def profile_once(lib, T):
    """--profile: one sparse backward (out given) at T, its inputs made and selected as run_size's"""
    q, k, v, dout = bwd_inputs(T)
    topk, K = select(lib, q, k)
    out_s, lse_s = our_forward(lib, q, k, v, topk, K)
    OurBwd(lib, q, k, v, lse_s, dout, topk, K, out=out_s)()
    sync()
    print(f"# profile: one sparse backward (out given) at T={T} ran", flush=True)


def run_size(lib, a, T, flex_state):
    """one row of the table: every backward at T"""
    G = cb.HQ // cb.HKV
    t0 = time.perf_counter()
    row = {"T": T}
    q, k, v, dout = bwd_inputs(T)
    fl_dense = 5.0 * cb.HQ * cb.D * T * T
    row["dense_bwd_flop"] = fl_dense

    # ---- ours: selection and the forwards' lse (untimed), then the two backward calls ----
    topk = None
    try:
        topk, K = select(lib, q, k)
        out_s, lse_s = our_forward(lib, q, k, v, topk, K)
        keys = attended_keys(topk)
        row["keys_per_query"] = keys / (cb.HKV * T)
        row["sparse_bwd_flop"] = 10.0 * cb.D * G * keys
    except Exception as e:  # noqa
        note(f"selection / sparse forward at T={T}: {type(e).__name__}: {e}")
        topk = None
    row["ours_sparse_ms"] = row["ours_sparse_out_ms"] = NAN
    if topk is not None:
        try:
            call = OurBwd(lib, q, k, v, lse_s, dout, topk, K)
            row["ws_sparse_bytes"] = call.ws_bytes
            row["ours_sparse_ms"] = measure(f"ours sparse backward at T={T}", call, a.reps, a.budget)
            if a.kernels:
                row["kernels_sparse_ms"] = kernel_ms(call)
                print_kernels(f"ours sparse backward at T={T}", row["kernels_sparse_ms"])
            # the same with the forward's out and lse given (infllm_sparse_attention_backward_out): no forward
            # recomputed; from our own forward its softmax is the call's without out, so dv (no Delta) should be
            # bitwise that call's; dq / dk differ by Delta's source (out rounded to the dtype, against the
            # recomputed forward's f32 O): their max |diff| / max |value| printed
            call_o = OurBwd(lib, q, k, v, lse_s, dout, topk, K, out=out_s)
            row["ours_sparse_out_ms"] = measure(f"ours sparse backward, out given, at T={T}", call_o, a.reps, a.budget)
            call()
            call_o()
            sync()
            same = torch.equal(call.dv, call_o.dv)
            row["sparse_out_dv_bitwise"] = same
            for nm, x, y in (("dq", call.dq, call_o.dq), ("dk", call.dk, call_o.dk)):
                row[f"sparse_out_{nm}_rel"] = float((x.float() - y.float()).abs().max() / x.float().abs().max())
            if not same:
                print(f"WARNING: T={T}: the sparse backward with out given has another dv than the one without",
                      flush=True)
            del call, call_o
        except Exception as e:  # noqa
            note(f"ours sparse backward at T={T}: {type(e).__name__}: {e}")
    out_s = None
    row["ours_dense_ms"] = NAN
    try:
        out, lse_d = our_forward(lib, q, k, v)
        del out
        call = OurBwd(lib, q, k, v, lse_d, dout)
        row["ws_dense_bytes"] = call.ws_bytes
        row["ours_dense_ms"] = measure(f"ours dense backward at T={T}", call, a.reps, a.budget)
        if a.kernels:
            row["kernels_dense_ms"] = kernel_ms(call)
            print_kernels(f"ours dense backward at T={T}", row["kernels_dense_ms"])
        del call, lse_d
    except Exception as e:  # noqa
        note(f"ours dense backward at T={T}: {type(e).__name__}: {e}")
    gc.collect()
    torch.cuda.empty_cache()

    # ---- SDPA (cuDNN, flash), backward only ----
    for be in ("cudnn", "flash"):
        row[f"{be}_ms"] = NAN
        try:
            run, gqa, _ = sdpa_bwd(q, k, v, dout, be)
            row[f"{be}_gqa"] = gqa
            row[f"{be}_ms"] = measure(f"SDPA {be} backward at T={T}", run, a.reps, a.budget)
            del run, _
        except Exception as e:  # noqa
            what = "out of memory, skipped" if isinstance(e, torch.cuda.OutOfMemoryError) else type(e).__name__
            note(f"SDPA {be} backward at T={T}: {what}: {' '.join(str(e).split())[:300]}")
        gc.collect()
        torch.cuda.empty_cache()

    # ---- FlexAttention (folded, same selection), backward only ----
    row["flex_ms"] = NAN
    if not a.no_flex and topk is not None and T in a.flex_sizes_list:
        try:
            run, i = flex_bwd(q, k, v, dout, topk, T, flex_state.get("start", 0))
            flex_state["start"] = i
            row["flex_config"] = FLEX_TILES[i][0]
            row["flex_ms"] = measure(f"flex backward at T={T}", run, a.reps, a.budget)
            del run
        except Exception as e:  # noqa
            what = "out of memory, skipped" if isinstance(e, torch.cuda.OutOfMemoryError) else type(e).__name__
            note(f"flex backward at T={T}: {what}: {' '.join(str(e).split())[:300]}")
        gc.collect()
        torch.cuda.empty_cache()

    fl_sparse = row.get("sparse_bwd_flop", NAN)
    row["ours_sparse_tflops"] = tflops(fl_sparse, row["ours_sparse_ms"])
    row["ours_dense_tflops"] = tflops(fl_dense, row["ours_dense_ms"])
    row["cudnn_tflops"] = tflops(fl_dense, row["cudnn_ms"])
    row["flash_tflops"] = tflops(fl_dense, row["flash_ms"])
    row["flex_tflops_useful"] = tflops(fl_sparse, row["flex_ms"])
    row["cudnn_over_ours_sparse"] = quot(row["cudnn_ms"], row["ours_sparse_ms"])
    row["cudnn_over_ours_sparse_out"] = quot(row["cudnn_ms"], row["ours_sparse_out_ms"])
    row["flex_over_ours_sparse"] = quot(row["flex_ms"], row["ours_sparse_ms"])
    row["cudnn_over_ours_dense"] = quot(row["cudnn_ms"], row["ours_dense_ms"])
    row["wall_s"] = time.perf_counter() - t0
    print(f"T={T}: backward ms: ours sparse {row['ours_sparse_ms']:.3f} ({row['ours_sparse_tflops']:.0f} TFLOP/s, "
          f"out given {row['ours_sparse_out_ms']:.3f}, its dv bitwise the same: {row.get('sparse_out_dv_bitwise', '-')}, "
          f"dq / dk max diff {row.get('sparse_out_dq_rel', NAN):.2g} / {row.get('sparse_out_dk_rel', NAN):.2g}, "
          f"{row.get('keys_per_query', NAN):.0f} keys / query, workspace {row.get('ws_sparse_bytes', 0)} B), "
          f"ours dense {row['ours_dense_ms']:.3f} ({row['ours_dense_tflops']:.0f} TFLOP/s, workspace "
          f"{row.get('ws_dense_bytes', 0)} B), cuDNN {row['cudnn_ms']:.3f} ({row['cudnn_tflops']:.0f}; "
          f"{row.get('cudnn_gqa', '-')}), flash {row['flash_ms']:.3f} ({row['flash_tflops']:.0f}; "
          f"{row.get('flash_gqa', '-')}), flex {row['flex_ms']:.3f} ({row['flex_tflops_useful']:.0f} useful; "
          f"{row.get('flex_config', '-')}); {row['wall_s']:.0f} s", flush=True)
    del q, k, v, dout, topk
    gc.collect()
    torch.cuda.empty_cache()
    return row


def quot(x, y):
    return x / y if x == x and y == y and y > 0 else NAN


# ---------------------------------------------------------------------------------------------- checks ----

def rel_err(x, ref):
    """max |x - ref| / max |ref| (NaN when x holds a NaN)"""
    x, ref = x.float(), ref.float()
    den = ref.abs().max().item()
    d = (x - ref).abs().max().item()
    if x.isnan().any().item():
        return NAN
    return d / den if den > 0 else (0.0 if d == 0 else float("inf"))


def ref_grads_masked(q, k, v, dout, mask_of, chunk=2048):
    """float32 SDPA (math backend) forward and backward with a boolean mask (True: attend), one KV head's group of
    query heads and `chunk` query rows at a time: mask_of(g, r0, r1) is the [r1 - r0, r1] mask of KV head g's rows
    r0 .. r1 - 1 over keys 0 .. r1 - 1 (a causal mask: no query of a one-sequence prefill sees a later key).
    (out, dq, dk, dv) float32 token-major. Peak memory ~5 x G x chunk x T x 4 bytes (5 GiB at G 16 / 8K)"""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    G = cb.HQ // cb.HKV
    T, D = q.shape[0], cb.D
    out = torch.empty(T, cb.HQ, D, device=q.device)
    dq = torch.empty_like(out)
    dk = torch.zeros(k.shape[0], cb.HKV, D, device=q.device)
    dv = torch.zeros_like(dk)
    for g in range(cb.HKV):
        hs = slice(g * G, (g + 1) * G)
        for r0 in range(0, T, chunk):
            r1 = min(T, r0 + chunk)
            qg = q[r0:r1, hs].float().permute(1, 0, 2).contiguous().requires_grad_()  # [G, rows, D]
            kg = k[:r1, g].float().contiguous().requires_grad_()  # [r1, D], shared by the G heads
            vg = v[:r1, g].float().contiguous().requires_grad_()
            with sdpa_kernel(SDPBackend.MATH):
                o = F.scaled_dot_product_attention(qg, kg.expand(G, r1, D), vg.expand(G, r1, D),
                                                   attn_mask=mask_of(g, r0, r1))
            gq, gk, gv = torch.autograd.grad(o, (qg, kg, vg), dout[r0:r1, hs].float().permute(1, 0, 2))
            out[r0:r1, hs] = o.detach().permute(1, 0, 2)
            dq[r0:r1, hs] = gq.permute(1, 0, 2)
            dk[:r1, g] += gk
            dv[:r1, g] += gv
            del qg, kg, vg, o, gq, gk, gv
    return out, dq, dk, dv


def causal_rows(device):
    """mask_of for ref_grads_masked: plain causal"""
    def mask_of(g, r0, r1):
        return torch.arange(r1, device=device).view(1, r1) <= torch.arange(r0, r1, device=device).view(-1, 1)
    return mask_of


def token_mask(topk, T):
    """[HKV, T, T] bool: query t attends key j iff block j // 64 is a non-negative entry of topk[g, t] and j <= t"""
    nb = (T + BS - 1) // BS
    blk = torch.zeros(topk.shape[0], T, nb + 1, dtype=torch.bool, device=topk.device)
    blk.scatter_(2, topk.long().clamp(min=-1) + 1, True)  # -1 -> column 0, dropped below
    m = blk[:, :, 1:].repeat_interleave(BS, dim=2)[:, :, :T]
    return m & torch.ones(T, T, dtype=torch.bool, device=topk.device).tril()


def verdict(name, errs, tol):
    """prints the errors of one check, and a WARNING line for each above tol (NaN included)"""
    bad = [f"{n} {e:.2e}" for n, e in errs.items() if not e <= tol]
    if bad:
        print(f"WARNING: check {name}: {', '.join(bad)} above {tol:g} (max |diff| / max |ref|; NaN: an unwritten "
              f"or non-finite gradient)", flush=True)
        NOTES.append(f"check {name} failed: {', '.join(bad)} above {tol:g}")
    return not bad


def fmt_errs(errs):
    return ", ".join(f"{n} {e:.2e}" for n, e in errs.items())


def ours_checked(lib, q, k, v, dout, topk=None, K=0):
    """(out, dq, dk, dv) of our forward and backward (sparse on topk when given), the gradients poisoned with NaN
    before the call (an unwritten element shows as NaN)"""
    out, lse = our_forward(lib, q, k, v, topk, K)
    call = OurBwd(lib, q, k, v, lse, dout, topk, K)
    call.poison()
    call()
    sync()
    return (out, call.dq, call.dk, call.dv)


def ours_failed(what, T, e, res):
    """a check whose own run failed: a WARNING, a note, the error in its JSON dict (returned)"""
    print(f"WARNING: check {what} at T={T}: ours failed: {type(e).__name__}: {e}", flush=True)
    NOTES.append(f"check {what} at T={T}: ours failed: {type(e).__name__}: {e}")
    res["error"] = str(e)
    return res


def check_dense(lib, T, tol, ref_max):
    """our dense backward against SDPA's at T (flash; cuDNN against flash for scale) and, where T <= ref_max,
    ours and SDPA's against a float32 math reference: a dict for the JSON"""
    res = {"T": T}
    q, k, v = cb.make_inputs(T, structured=False, seed=101)
    gen = torch.Generator(device=q.device).manual_seed(102)
    dout = torch.randn(T, cb.HQ, cb.D, device=q.device, generator=gen).to(cb.TDT)
    try:
        ours = ours_checked(lib, q, k, v, dout)
    except Exception as e:  # noqa
        return ours_failed("dense", T, e, res)
    refs = {}
    for be in ("flash", "cudnn"):
        try:
            run, gqa, o = sdpa_bwd(q, k, v, dout, be)
            refs[be] = (bhsd_tokens(o),) + grads_tokens(run(), gqa)
            res[f"{be}_gqa"] = gqa
            del run, o
        except Exception as e:  # noqa
            note(f"check dense at T={T}: SDPA {be}: {type(e).__name__}: {' '.join(str(e).split())[:200]}")
    names = ("out", "dq", "dk", "dv")
    f32 = None
    if T <= ref_max:
        f32 = ref_grads_masked(q, k, v, dout, causal_rows(q.device))
    elif not refs:
        note(f"check dense at T={T}: no reference (SDPA flash and cuDNN failed, T > --check-ref-max {ref_max})")
        res["error"] = "no reference"
        return res
    ok = True
    if refs:
        ref_name = "flash" if "flash" in refs else "cudnn"
        errs = {n: rel_err(x, r) for n, x, r in zip(names, ours, refs[ref_name])}
        res.update({"reference": f"SDPA {ref_name}", "ours_vs_sdpa": errs})
        line = f"check dense T={T}: ours vs SDPA {ref_name}: {fmt_errs(errs)} (max |diff| / max |ref|)"
        if "flash" in refs and "cudnn" in refs:
            scale = {n: rel_err(x, r) for n, x, r in zip(names, refs["cudnn"], refs["flash"])}
            res["cudnn_vs_flash"] = scale
            line += f"; SDPA cuDNN vs flash, for scale: {fmt_errs(scale)}"
        print(line, flush=True)
    if f32 is not None:
        e32 = {n: rel_err(x, r) for n, x, r in zip(names, ours, f32)}
        res["ours_vs_float32"] = e32
        line = f"check dense T={T}: against float32 math SDPA: ours {fmt_errs(e32)}"
        for be in refs:
            res[f"{be}_vs_float32"] = {n: rel_err(x, r) for n, x, r in zip(names, refs[be], f32)}
            line += f"; SDPA {be} {fmt_errs(res[be + '_vs_float32'])}"
        print(line, flush=True)
        ok = verdict(f"dense T={T} (ours vs float32)", e32, tol)
    if refs:
        above = {n: e for n, e in res["ours_vs_sdpa"].items() if not e <= tol}
        if above and f32 is not None and ok:  # SDPA's own rounding, not ours: say so, no WARNING
            print(f"note: check dense T={T}: ours vs SDPA {fmt_errs(above)} above {tol:g}, but ours is within {tol:g} of "
                  f"the float32 reference (the line above, SDPA's own error beside it): no WARNING", flush=True)
        else:
            ok = verdict(f"dense T={T} (ours vs SDPA {ref_name})", res["ours_vs_sdpa"], tol) and ok
    res["ok"] = ok
    return res


def bhsd_tokens(o):
    return o.detach()[0].transpose(0, 1).float()


def check_sparse(lib, T, topk_n, local_n, tol):
    """our sparse backward on a selection of infllm_select_blocks at T (topk_n + local_n blocks) against the
    float32 masked SDPA backward: a dict for the JSON"""
    res = {"T": T, "topk": topk_n, "local_blocks": local_n}
    q, k, v = cb.make_inputs(T, structured=False, seed=201)
    gen = torch.Generator(device=q.device).manual_seed(202)
    dout = torch.randn(T, cb.HQ, cb.D, device=q.device, generator=gen).to(cb.TDT)
    try:
        topk, K = select(lib, q, k, topk_n, local_n)
        ours = ours_checked(lib, q, k, v, dout, topk, K)
    except Exception as e:  # noqa
        return ours_failed("sparse", T, e, res)
    mask = token_mask(topk, T)
    causal_blocks = (torch.arange(T, device=q.device) // BS + 1).float()
    frac = ((topk >= 0).sum(-1).float() / causal_blocks).mean().item()
    keys = mask.sum().item() / (cb.HKV * T)
    ref = ref_grads_masked(q, k, v, dout, lambda g, r0, r1: mask[g, r0:r1, :r1])
    names = ("out", "dq", "dk", "dv")
    errs = {n: rel_err(x, r) for n, x, r in zip(names, ours, ref)}
    res.update({"K": K, "selected_fraction": frac, "keys_per_query": keys, "ours_vs_ref": errs,
                "reference": "float32 SDPA (math) with the token-level mask of topk_idx"})
    print(f"check sparse T={T} (select topk {topk_n} + local {local_n}: {K} columns, {100 * frac:.0f}% of a query's "
          f"causal blocks on average, {keys:.0f} keys / query): ours vs float32 masked SDPA: {fmt_errs(errs)} "
          f"(max |diff| / max |ref|)", flush=True)
    res["ok"] = verdict(f"sparse T={T}", errs, tol)
    return res


# ---------------------------------------------------------------------------------------------- output ----

COLS = ("T", "keys_per_query", "ours_sparse_ms", "ours_sparse_out_ms", "ours_dense_ms", "cudnn_ms", "flash_ms", "flex_ms",
        "cudnn_over_ours_sparse", "cudnn_over_ours_sparse_out", "flex_over_ours_sparse", "cudnn_over_ours_dense", "ours_sparse_tflops",
        "ours_dense_tflops", "cudnn_tflops", "flash_tflops", "flex_tflops_useful", "sparse_bwd_flop", "dense_bwd_flop",
        "ws_sparse_bytes", "ws_dense_bytes", "cudnn_gqa", "flash_gqa", "flex_config", "wall_s")


def num(x):
    return None if isinstance(x, float) and x != x else x


def print_table(rows):
    def ms(x):
        return "-" if x != x else f"{x:.2f}"

    def tf(x):
        return "-" if x != x else f"{x:.0f}"
    print()
    print("| T | keys / query | ours sparse bwd ms | ours sparse, out given, ms | ours dense bwd ms | cuDNN bwd ms "
          "| flash bwd ms | flex sparse bwd ms | cuDNN / ours sparse | cuDNN / ours sparse, out given | flex / ours sparse | cuDNN / ours dense | ours sparse TFLOP/s | ours dense TFLOP/s "
          "| cuDNN TFLOP/s | flash TFLOP/s | flex TFLOP/s (useful) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        T = r["T"]
        label = f"{T // 1024}K" if T % 1024 == 0 else str(T)
        print(f"| {label} | {tf(r.get('keys_per_query', NAN))} | {ms(r['ours_sparse_ms'])} "
              f"| {ms(r.get('ours_sparse_out_ms', NAN))} | {ms(r['ours_dense_ms'])} "
              f"| {ms(r['cudnn_ms'])} | {ms(r['flash_ms'])} | {ms(r['flex_ms'])} "
              f"| {cb.ratio(r['cudnn_ms'], r['ours_sparse_ms'])} "
              f"| {cb.ratio(r['cudnn_ms'], r.get('ours_sparse_out_ms', NAN))} "
              f"| {cb.ratio(r['flex_ms'], r['ours_sparse_ms'])} "
              f"| {cb.ratio(r['cudnn_ms'], r['ours_dense_ms'])} | {tf(r['ours_sparse_tflops'])} "
              f"| {tf(r['ours_dense_tflops'])} | {tf(r['cudnn_tflops'])} | {tf(r['flash_tflops'])} "
              f"| {tf(r['flex_tflops_useful'])} |")
    modes = {(be, r.get(f"{be}_gqa")) for r in rows for be in ("cudnn", "flash") if r.get(f"{be}_gqa")}
    if modes:
        print("SDPA GQA: " + "; ".join(f"{be}: {m}" for be, m in sorted(modes)) +
              " (enable_gqa: the dk / dv group reduction timed; expanded K/V: the expand and that reduction not timed)")
    flex = sorted({r["flex_config"] for r in rows if r.get("flex_config")})
    if flex:
        print("flex backward tiles: " + "; ".join(flex))
    print("FLOP: dense 5 Hq D T^2 (2.5x the forward's 4 Hq D T^2 / 2); sparse and flex 10 D G x (keys attended, "
          "counted from the selection); ratios > 1: ours faster")


def clean(x):
    """x for JSON: NaN (not measured, or a check's non-finite result) as null"""
    if isinstance(x, dict):
        return {k: clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [clean(v) for v in x]
    return num(x)


def write_json(path, meta, checks, rows):
    doc = dict(meta)
    doc["checks"] = clean(checks)
    doc["rows"] = [dict({c: num(r.get(c, NAN)) for c in COLS},
                        **{kk: r[kk] for kk in ("kernels_sparse_ms", "kernels_dense_ms") if kk in r}) for r in rows]
    doc["notes"] = NOTES
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLS)
        for r in rows:
            w.writerow(["" if num(r.get(c, NAN)) is None else r.get(c) for c in COLS])


# ------------------------------------------------------------------------------------------------ main ----

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="infllm CUDA attention backward vs PyTorch SDPA (cuDNN, flash) and "
                                             "FlexAttention; see the module docstring")
    ap.add_argument("--lib", default="build-gpu/libinfllm.so")
    ap.add_argument("--sizes", default="8192,16384,32768,65536,131072", help="comma-separated T (one sequence)")
    ap.add_argument("--reps", type=int, default=10, help="timed calls per measurement (median)")
    ap.add_argument("--budget", type=float, default=15.0,
                    help="seconds one measurement may take: reps shrink (to 3 at least) for slow calls")
    ap.add_argument("--shape", default="32,2,128", metavar="HQ,HKV,D")
    ap.add_argument("--dtype", default="bf16", choices=("bf16", "f16"))
    ap.add_argument("--no-flex", action="store_true", help="skip FlexAttention (each size compiles its own kernels)")
    ap.add_argument("--flex-sizes", default="", help="the --sizes at which FlexAttention runs (default: all)")
    ap.add_argument("--no-check", action="store_true", help="skip the correctness checks")
    ap.add_argument("--kernels", action="store_true",
                    help="also each of our kernels' device ms per call (torch.profiler, 3 calls; in the JSON's rows)")
    ap.add_argument("--check-t", type=int, default=2048, help="T of the sparse check")
    ap.add_argument("--check-topk", type=int, default=8, help="dynamic blocks of the sparse check's selection")
    ap.add_argument("--check-local", type=int, default=4, help="local blocks of the sparse check's selection")
    ap.add_argument("--check-ref-max", type=int, default=16384,
                    help="the dense check also compares with a float32 math reference up to this T")
    ap.add_argument("--tol", type=float, default=0.0, help="check tolerance (default 2e-2 bf16, 1e-2 f16)")
    ap.add_argument("--json", default="", metavar="FILE", help="write the checks, rows and notes as JSON")
    ap.add_argument("--csv", default="", metavar="FILE", help="write the rows as CSV")
    ap.add_argument("--profile", type=int, default=0, metavar="T",
                    help="for a profiler (bench/cuda_ncu.sh -k bwdkv,bwddq): at T tokens, the selection and the sparse "
                         "forward, then ONE sparse backward with the forward's out given (its kernels: k_bwd_bits, "
                         "the plan, k_bwd_delta, the dq pass, k_bwd_kv), then exit; nothing timed or checked")
    a = ap.parse_args(argv)
    try:
        a.sizes_list = [int(x) for x in a.sizes.split(",") if x.strip()]
        a.flex_sizes_list = [int(x) for x in a.flex_sizes.split(",") if x.strip()] if a.flex_sizes else a.sizes_list
    except ValueError:
        ap.error("--sizes / --flex-sizes: comma-separated integers")
    if any(T < 1 for T in a.sizes_list) or a.reps < 1 or a.budget <= 0 or a.profile < 0:
        ap.error("sizes and --reps must be positive, --budget > 0")
    if a.tol <= 0:
        a.tol = 2e-2 if a.dtype == "bf16" else 1e-2
    return a


def main(argv=None):
    a = parse_args(argv)
    cb.set_shape(a.shape, a.dtype)
    wall0 = time.perf_counter()
    lib = cb.load_lib(a.lib)
    try:
        bind_backward(lib)
    except AttributeError as e:
        sys.exit(f"cuda_bwd_bench: {a.lib} has no backward entry points ({e}): a library from before 56e51f9")
    name = torch.cuda.get_device_name()
    try:
        drv = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True).stdout.strip()
    except OSError:
        drv = "?"
    info = C.create_string_buffer(512)
    lib.infllm_cuda_device_info(info, 512)
    commit = lib.infllm_build_commit().decode()
    print(f"# infllm CUDA backward bench: {name}, driver {drv}, torch {torch.__version__}, commit {commit}, "
          f"Hq {cb.HQ} / Hkv {cb.HKV} / d {cb.D}, {cb.DT_NAME}, structured inputs, reps {a.reps}", flush=True)
    print(f"# {info.value.decode(errors='replace')}", flush=True)

    if a.profile:
        profile_once(lib, a.profile)
        return
    checks = {}
    if not a.no_check:
        if a.sizes_list:
            checks["dense"] = check_dense(lib, min(a.sizes_list), a.tol, a.check_ref_max)
        checks["sparse"] = check_sparse(lib, a.check_t, a.check_topk, a.check_local, a.tol)
        gc.collect()
        torch.cuda.empty_cache()

    rows, flex_state = [], {}
    for T in a.sizes_list:
        rows.append(run_size(lib, a, T, flex_state))
    print_table(rows)
    wall = time.perf_counter() - wall0
    print(f"# wall time {wall:.0f} s", flush=True)
    meta = {"gpu": name, "driver": drv, "torch": torch.__version__, "commit": commit,
            "device_info": info.value.decode(errors="replace"), "inputs": "structured", "reps": a.reps,
            "budget_s": a.budget, "shape": {"num_q_heads": cb.HQ, "num_kv_heads": cb.HKV, "head_dim": cb.D,
                                            "dtype": cb.DT_NAME},
            "flop": {"dense_bwd": "5 Hq D T^2", "sparse_bwd": "10 D (Hq / Hkv) x keys attended (from the selection)",
                     "flex": "the sparse count (useful work)"},
            "wall_s": wall}
    if a.json:
        write_json(a.json, meta, checks, rows)
    if a.csv:
        write_csv(a.csv, rows)


if __name__ == "__main__":
    main()
