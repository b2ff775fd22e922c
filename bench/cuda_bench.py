#!/usr/bin/env python3
"""cuda_bench.py: times the infllm CUDA backend (through libinfllm.so and ctypes, on PyTorch's
stream) against PyTorch SDPA (cuDNN and flash backends) and FlexAttention in the same process.

Shapes: batch 1, 32 query heads, 2 KV heads, head_dim 128, bf16, 96 blocks of 64 (MiniCPM4.1
defaults: init 1, local 32, topk 64); --shape HQ,HKV,D and --dtype f16 time other layouts the API takes
(any group size HQ / HKV, head_dim 64 or 128). Every number is the median of CUDA-event timings after a
warm-up. FLOP formulas: dense causal 4 * Hq * D * T^2 / 2; sparse stage 2 4 * Hq * D * (keys per
query), keys per query counted from the selection.

    python3 bench/cuda_bench.py --lib build-gpu/libinfllm.so [--sizes 8192,32768,65536,131072]
                                [--topk-npy SEL.npz,...] [--json FILE] [--no-flex] [--no-decode]
                                [--shape 32,2,128] [--dtype bf16|f16] [--stage2-profile] [--window W]

--stage2-profile prints, under each --topk-npy row, the device time of each kernel of that stage-2 call
(torch.profiler): k_group_tokens' share of a grouped stage 2, for one.

--window W gives every infllm call a sliding key window of W keys (infllm_params.window): the pipeline selects in
each token's window, stage 2 and the dense row attend it. PyTorch's SDPA and FlexAttention baselines are causal,
not windowed, so a windowed run leaves them out (the dense row's FLOPs count each query's min(pos + 1, W) keys);
bench/cuda_ab.sh --bench-args "--window W" compares builds or switches on it.
"""
import argparse
import contextlib
import ctypes as C
import hashlib
import os
import statistics
import subprocess
import sys

import torch
import torch.nn.functional as F


from infllm_ctypes import BF16, CUDA, DENSE, F16, SPARSE, Layout, Params

HQ, HKV, D = 32, 2, 128                      # --shape
DT, TDT, DT_NAME = BF16, torch.bfloat16, "bf16"  # --dtype: the API's dtype, torch's, and its name
WINDOW = 0                                   # --window: every call's sliding key window (0: none)


def set_shape(shape, dtype):
    """the module's shape and dtype from --shape "HQ,HKV,D" and --dtype (bf16 or f16)"""
    global HQ, HKV, D, DT, TDT, DT_NAME
    try:
        hq, hkv, d = (int(x) for x in shape.split(","))
    except ValueError:
        sys.exit(f"cuda_bench: --shape {shape!r}: expected HQ,HKV,D (e.g. 32,2,128)")
    if hq < 1 or hkv < 1 or hq % hkv or d not in (64, 128):
        sys.exit(f"cuda_bench: --shape {shape!r}: needs HQ a multiple of HKV and D 64 or 128")
    if dtype not in ("bf16", "f16"):
        sys.exit(f"cuda_bench: --dtype {dtype!r}: bf16 or f16")
    HQ, HKV, D = hq, hkv, d
    DT, TDT, DT_NAME = (BF16, torch.bfloat16, "bf16") if dtype == "bf16" else (F16, torch.float16, "f16")


def load_lib(path):
    lib = C.CDLL(path)
    lib.infllm_last_error.restype = C.c_char_p
    lib.infllm_build_commit.restype = C.c_char_p
    vp = C.c_void_p
    lib.infllm_cache_create.argtypes = [vp, C.c_int, C.c_int32, C.c_int32, C.c_int64, vp]
    lib.infllm_cache_append.argtypes = [vp, vp, vp, C.c_int64]
    lib.infllm_cache_attend.argtypes = [vp, vp, vp, C.c_int64, C.c_int32, vp, vp]
    lib.infllm_cache_truncate.argtypes = [vp, C.c_int64]
    lib.infllm_cache_workspace_size.argtypes = [vp, vp, C.c_int64, C.c_int32, vp]
    lib.infllm_cache_memory_bytes.argtypes = [vp]
    lib.infllm_cache_memory_bytes.restype = C.c_size_t
    lib.infllm_cache_free.argtypes = [vp]
    lib.infllm_cache_free.restype = None
    if hasattr(lib, "cuda_debug_fused_topk"):  # libraries before session 18: the selection's test hook
        lib.cuda_debug_fused_topk.argtypes = [vp, C.c_int, C.c_int32, C.c_int32, C.c_int32, C.c_int64, C.c_int64, vp,
                                              vp, vp]
    return lib


def select_fn(lib, p, l, q, k, topk, T):
    """compress + fused stage 1 + top-k of one T-token sequence into topk [HKV, T, K]: infllm_select_blocks
    (CUDA since session 18), or the test hook of older libraries (cuda_ab.sh runs this script on old trees).
    Both allocate their workspace per call (cudaMallocAsync), so the select column compares like with like."""
    if hasattr(lib, "infllm_select_blocks_workspace_size"):
        ps = Params.from_buffer_copy(p)
        ps.workspace, ps.workspace_bytes = None, 0
        return lambda: check(lib, lib.infllm_select_blocks(C.byref(ps), C.byref(l), C.c_void_p(q.data_ptr()),
                                                           C.c_void_p(k.data_ptr()), C.c_void_p(topk.data_ptr())),
                             "select")
    return lambda: check(lib, lib.cuda_debug_fused_topk(C.byref(p), DT, HQ, HKV, D, T, T, q.data_ptr(), k.data_ptr(),
                                                        topk.data_ptr()), "select")


@contextlib.contextmanager
def env_switches(env):
    """the environment variables of env (a dict) set while the block runs, the old values back after
    it (the library reads an INFLLM_CUDA_* switch at its first use)"""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def check(lib, st, what):
    if st != 0:
        raise RuntimeError(f"{what}: status {st}: {lib.infllm_last_error().decode()}")


def timeit(fn, warmup=3, reps=10, calls=1):
    """median over reps of the per-call time of `calls` calls enqueued back to back between two
    events; calls > 1 gives the device time of a step when the host runs ahead (no launch latency
    per measurement)"""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(reps):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(calls):
            fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) / calls)
    return statistics.median(ts)


def make_inputs(T, Tk=None, structured=True, seed=0):
    """q, k, v token-major [T, H, D] in --dtype. structured: tokens of one 256-token segment share a
    component, so that neighbouring queries select similar blocks, as in real text."""
    Tk = Tk or T
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(T, HQ, D, device="cuda", generator=g)
    k = torch.randn(Tk, HKV, D, device="cuda", generator=g)
    v = torch.randn(Tk, HKV, D, device="cuda", generator=g)
    if structured:
        segq = torch.randn((Tk + 255) // 256, HQ, D, device="cuda", generator=g)
        segk = torch.randn((Tk + 255) // 256, HKV, D, device="cuda", generator=g)
        pos_q = torch.arange(Tk - T, Tk, device="cuda") // 256
        pos_k = torch.arange(Tk, device="cuda") // 256
        q = 0.6 * q + 0.8 * segq[pos_q]
        k = 0.6 * k + 0.8 * segk[pos_k]
    return q.to(TDT).contiguous(), k.to(TDT).contiguous(), v.to(TDT).contiguous()


def params(lib, mode=SPARSE):
    p = Params()
    lib.infllm_params_default(C.byref(p))
    p.backend = CUDA
    p.mode = mode
    p.window = WINDOW
    p.cuda_stream = torch.cuda.current_stream().cuda_stream
    return p


def layout(T, Tk):
    l = Layout()
    l.dtype = DT
    l.num_seqs = 1
    l.total_q, l.total_k = T, Tk
    l.num_q_heads, l.num_kv_heads, l.head_dim = HQ, HKV, D
    l.max_seqlen_q, l.max_seqlen_k = T, Tk
    return l


def sdpa_fn(q, k, v, backend):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    qq = q.transpose(0, 1).unsqueeze(0)
    kk = k.transpose(0, 1).unsqueeze(0)
    vv = v.transpose(0, 1).unsqueeze(0)
    be = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}[backend]
    try:
        with sdpa_kernel(be):
            F.scaled_dot_product_attention(qq, kk, vv, is_causal=True, enable_gqa=True)

        def run():
            with sdpa_kernel(be):
                F.scaled_dot_product_attention(qq, kk, vv, is_causal=True, enable_gqa=True)
        return run
    except Exception:
        kx = kk.repeat_interleave(HQ // HKV, dim=1)
        vx = vv.repeat_interleave(HQ // HKV, dim=1)

        def run2():
            with sdpa_kernel(be):
                F.scaled_dot_product_attention(qq, kx, vx, is_causal=True)
        return run2


def stage2_fn(lib, p, l, q, k, v, topk, K, out, lse):
    """one infllm_sparse_attention call (stage 2 on the given selection [HKV, T, K]); lse may be None"""
    def run():
        check(lib, lib.infllm_sparse_attention(C.byref(p), C.byref(l), C.c_void_p(q.data_ptr()),
                                               C.c_void_p(k.data_ptr()), C.c_void_p(v.data_ptr()),
                                               C.c_void_p(topk.data_ptr()), K, C.c_void_p(out.data_ptr()),
                                               C.c_void_p(lse.data_ptr()) if lse is not None else None), "sparse")
    return run


def kernel_times(fn, reps=20):
    """device us per call of each CUDA kernel that fn launches, summed over the instances of a template
    (torch.profiler; bench/smallq_ab.py --kernels, and --stage2-profile here)"""
    from torch.profiler import ProfilerActivity, profile
    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    acc = {}
    for e in prof.key_averages():
        if e.device_type.name == "CUDA" or getattr(e, "self_device_time_total", 0) > 0:
            t = getattr(e, "self_device_time_total", None)
            if t is None:
                t = e.self_cuda_time_total
            if t > 0:
                # instances of one template (their keys differ) add up under the template's name
                name = e.key.split("<")[0].split("(")[0]
                acc[name] = acc.get(name, 0.0) + t / reps
    return acc


def write_json(path, lib, gpu, drv, a, rows, drows, srows, dec):
    """every row of the run, times in ms (decode in us), NaN (not measured) as null"""
    import json

    def num(x):
        return None if x != x else x
    doc = {
        "gpu": gpu, "driver": drv, "torch": torch.__version__, "commit": lib.infllm_build_commit().decode(),
        "inputs": "random" if a.random else "structured", "reps": a.reps, "window": WINDOW,
        "shape": {"num_q_heads": HQ, "num_kv_heads": HKV, "head_dim": D, "dtype": DT_NAME},
        "pipeline": [dict(zip(("T", "pipeline_ms", "compress_ms", "select_ms", "stage2_ms", "stage2_tflops",
                               "union_blocks_4tok", "cudnn_dense_ms", "flash_dense_ms", "flex_sparse_ms",
                               "flex_folded_ms"),
                              map(num, r))) for r in rows],
        "dense": [dict(zip(("T", "ours_ms", "cudnn_ms", "ours_tflops", "cudnn_tflops"), map(num, r))) for r in drows],
        "given_selection": [dict(zip(("file", "T", "K", "stage2_ms", "stage2_tflops", "union_blocks_4tok",
                                      "union_blocks_8tok", "flex_folded_ms", "compress_select_ms",
                                      "select_plus_stage2_ms"), map(num, r))) for r in srows],
        "decode_us": None if not dec else dict(zip(("old_eager", "old_graph", "cache_eager", "cache_graph",
                                                     "cache_graph_back_to_back"), map(num, dec))),
    }
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)


def ratio(a, b):
    """a / b as '1.23x', '-' when either is missing (nan)"""
    return "-" if a != a or b != b or b == 0 else f"{a / b:.2f}x"


def stage2_flop(topk, T):
    """useful stage-2 FLOP of a selection [HKV, T, K]: 4 Hq D (keys per query) T, keys per query
    counted from the selected blocks (64 keys each)"""
    keys_per_q = (topk >= 0).sum(-1).float().mean().item() * 64
    return 4.0 * HQ * D * keys_per_q * T


def union_per_tile(topk, T, tokens=4):
    """mean union in blocks of the selections of `tokens` consecutive tokens (a sample of tiles)"""
    tk = topk.long()
    samp = torch.arange(0, T - tokens, max(1, T // 512), device="cuda")
    uni = []
    for g in range(tk.shape[0]):
        blocks = tk[g][samp.unsqueeze(1) + torch.arange(tokens, device="cuda")].reshape(len(samp), -1)
        onehot = torch.zeros(len(samp), (T + 63) // 64 + 1, device="cuda")
        onehot.scatter_(1, (blocks + 1).clamp(min=0), 1.0)
        uni.append((onehot[:, 1:].sum(1)).mean().item())
    return sum(uni) / len(uni)


def load_selection(path):
    """a block selection saved as an integer .npy, or .npz with key topk, [heads, T, K] (-1 padded,
    causal; bench/real_union.py --save-topk writes them from a real model's activations) ->
    [HKV, T, K] int32 on the GPU: KV head g takes the file's head g % heads"""
    import numpy as np
    sel = np.load(path)
    if path.endswith(".npz"):
        if "topk" not in sel:
            raise ValueError(f"{path}: no array named topk")
        sel = sel["topk"]
    if sel.ndim != 3 or sel.dtype.kind not in "iu":
        raise ValueError(f"{path}: expected an integer array [heads, T, K], got {sel.dtype} {sel.shape}")
    h, T, K = sel.shape
    blocks = np.arange(T) // 64
    if (sel >= 0).any() and (sel > blocks[None, :, None]).any():
        raise ValueError(f"{path}: a selected block lies after its token (not causal, or not blocks of 64)")
    t = torch.from_numpy(sel.astype(np.int32))
    return t[[g % h for g in range(HKV)]].contiguous().cuda(), T, K


def flex_inputs(q, k, v, topk, T, folded=True):
    """flex_fn's BlockMask and Flex-layout q / k / v (and flex_attention's extra keywords): (bm, qq, kk, vv, kw).
    Also used by bench/cuda_bwd_bench.py, which times the backward of the same call.

    FlexAttention over the same blocks, one selection per 64-token query block (the last token's
    selection of the block, per KV head; every earlier token of the block may attend those blocks too,
    which only adds keys). Blocks before the query block go in as full blocks (no mask_mod), the
    diagonal block as a partial one (causal mask_mod), Flex's fastest form of this mask.

    folded=True (issue 3's baseline): the 16 query heads of a KV head are folded into the rows, q viewed
    as [Hkv, T x 16, D] with row t * 16 + h, so a 64-token query block is 1024 rows sharing one block
    list and each K / V block loaded serves 16 heads (the issue measured this at ~410 effective TFLOP/s,
    31.5 ms at 128K, 1.7x its head-major form). The output stays folded (the transposes are outside the
    timing, in Flex's favour).
    folded=False: head-major, [1, Hq, T, D] with enable_gqa (this script's baseline through session 17)."""
    from torch.nn.attention.flex_attention import BlockMask
    if T % 64:
        raise ValueError(f"flex_fn: T = {T} is not a multiple of 64 (the per-64-token block lists)")
    nqb = T // 64
    nkb = (T + 63) // 64
    G = HQ // HKV
    sel = topk[:, 63::64, :][:, :nqb, :].long()  # [Hkv, nqb, K]
    qblk = torch.arange(nqb, device=sel.device).view(1, nqb, 1)
    valid = sel >= 0

    def pack(m):
        """the entries of sel where m holds, moved to the front of each row: (counts, indices [.., nkb])"""
        order = torch.sort((~m).to(torch.int8), dim=-1, stable=True).indices
        idx = torch.gather(torch.where(m, sel, torch.zeros_like(sel)), -1, order)
        ind = torch.zeros(1, HKV, nqb, nkb, dtype=torch.int32, device=sel.device)
        ind[0, :, :, :idx.shape[-1]] = idx.to(torch.int32)
        return m.sum(-1).to(torch.int32).unsqueeze(0).contiguous(), ind

    num_p, ind_p = pack(valid & (sel == qblk))  # the diagonal block: causal inside
    num_f, ind_f = pack(valid & (sel < qblk))   # earlier blocks: every key visible
    # every (T, layout, tile shape, selection) is its own compiled graph: past dynamo's default limit of
    # 8 recompiles (a full table with --flex-sizes 32K,64K,128K and --topk-npy files reaches it) flex_attention
    # silently falls back to its unfused form, which materializes the T x T scores (2 TB at 128K: OOM)
    import torch._dynamo as dynamo  # (as a plain `import torch._dynamo` it would make torch local to this function)
    for knob in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit", "accumulated_cache_size_limit"):
        if hasattr(dynamo.config, knob):
            setattr(dynamo.config, knob, max(getattr(dynamo.config, knob), 256))
    if folded:
        def causal(b, h, qi, ki):
            return qi // G >= ki
        bm = BlockMask.from_kv_blocks(num_p, ind_p, num_f, ind_f, BLOCK_SIZE=(64 * G, 64), mask_mod=causal,
                                      seq_lengths=(T * G, T))
        qq = q.view(T, HKV, G, D).permute(1, 0, 2, 3).reshape(1, HKV, T * G, D).contiguous()
        kk = k.transpose(0, 1).unsqueeze(0).contiguous()
        vv = v.transpose(0, 1).unsqueeze(0).contiguous()
        kw = {}
    else:
        def causal(b, h, qi, ki):
            return qi >= ki
        rep = lambda x: x.repeat_interleave(G, dim=1).contiguous()  # noqa: E731
        bm = BlockMask.from_kv_blocks(rep(num_p), rep(ind_p), rep(num_f), rep(ind_f), BLOCK_SIZE=(64, 64),
                                      mask_mod=causal, seq_lengths=(T, T))
        qq = q.transpose(0, 1).unsqueeze(0)
        kk = k.transpose(0, 1).unsqueeze(0)
        vv = v.transpose(0, 1).unsqueeze(0)
        kw = {"enable_gqa": True}
    return bm, qq, kk, vv, kw


def flex_fn(q, k, v, topk, T, folded=True):
    """FlexAttention's forward over the selection topk [HKV, T, K] (flex_inputs' mask and layout), compiled,
    with the fastest of a few tile shapes; returns the call"""
    from torch.nn.attention.flex_attention import flex_attention
    bm, qq, kk, vv, kw = flex_inputs(q, k, v, topk, T, folded)
    G = HQ // HKV
    fa = torch.compile(flex_attention, dynamic=False)
    # Flex's tile sizes: the fastest of a few, picked on this input (its autotuning, done by hand)
    best, best_t = None, float("inf")
    for bm_, bn in ((128, 64), (64, 64)) if folded else ((64, 64),):
        if folded and (64 * G) % bm_:
            continue
        ko = {"BLOCK_M": bm_, "BLOCK_N": bn}
        try:
            fa(qq, kk, vv, block_mask=bm, kernel_options=ko, **kw)
            t = timeit(lambda: fa(qq, kk, vv, block_mask=bm, kernel_options=ko, **kw), reps=3)
        except Exception as e:  # noqa: a tile shape Flex refuses
            print(f"# flex {'folded' if folded else 'head-major'} BLOCK_M {bm_} BLOCK_N {bn}: {type(e).__name__}: "
                  f"{str(e)[:120]}")
            continue
        if t < best_t:
            best, best_t = ko, t
    if best is None:
        raise RuntimeError("no Flex tile shape ran")
    print(f"# flex {'folded' if folded else 'head-major'} at {T}: BLOCK_M {best['BLOCK_M']} BLOCK_N {best['BLOCK_N']} "
          f"({best_t:.3f} ms in the pick)", flush=True)

    def run():
        return fa(qq, kk, vv, block_mask=bm, kernel_options=best, **kw)
    return run


def flex_out_tokens(o, T, folded):
    """a flex_fn output as [T, Hq, D] (token-major, like ours)"""
    if folded:
        return o.view(HKV, T, HQ // HKV, D).permute(1, 0, 2, 3).reshape(T, HQ, D)
    return o[0].transpose(0, 1)


def decode_rows(a, lib):
    """eager and graph-replay times of one decode step (old path and device cache); None on failure"""
    # old: infllm_attention on the whole 128K prefix (recompresses it every call);
    # new: the device decode cache, one step = append 1 token (K/V copy + the c1/c2 kernels that
    # complete) + attend 1 query, captured into a CUDA graph with caller workspace.
    dec = None
    try:
        Tk = 131072
        q, k, v = make_inputs(1, Tk, structured=not a.random)
        out = torch.empty_like(q)
        lse = torch.empty(1, HQ, device="cuda", dtype=torch.float32)
        s = torch.cuda.Stream()
        with torch.cuda.stream(s):
            p = params(lib, SPARSE)
            l = layout(1, Tk)
            wsb = C.c_size_t(0)
            check(lib, lib.infllm_attention_workspace_size(C.byref(p), C.byref(l), C.byref(wsb)), "ws")
            ws = torch.empty(max(wsb.value, 1), dtype=torch.uint8, device="cuda")
            p.workspace, p.workspace_bytes = ws.data_ptr(), wsb.value

            def step():
                check(lib, lib.infllm_attention(C.byref(p), C.byref(l), C.c_void_p(q.data_ptr()),
                                                C.c_void_p(k.data_ptr()), C.c_void_p(v.data_ptr()),
                                                C.c_void_p(out.data_ptr()), C.c_void_p(lse.data_ptr())), "decode")
            step()
            step()
        torch.cuda.synchronize()
        with torch.cuda.stream(s):
            t_eager = timeit(step, reps=50)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, stream=s):
            p.cuda_stream = torch.cuda.current_stream().cuda_stream
            step()
        with torch.cuda.stream(s):
            t_graph = timeit(g.replay, warmup=5, reps=200)
        # the parts: compress of the 128K keys, and the rest (selection + stage 2) on given c1/c2
        c1d = torch.empty(Tk // 16, HKV, D, dtype=TDT, device="cuda")
        c2d = torch.empty(Tk // 64, HKV, D, dtype=TDT, device="cuda")
        with torch.cuda.stream(s):
            def comp_dec():
                check(lib, lib.infllm_compress_keys(C.byref(p), C.byref(l), C.c_void_p(k.data_ptr()),
                                                    C.c_void_p(c1d.data_ptr()), C.c_void_p(c2d.data_ptr()), None,
                                                    None), "compress")
            t_comp_dec = timeit(comp_dec, reps=50)
        print(f"decode parts: compress of 128K keys {t_comp_dec * 1000:.1f} us")
        print(f"decode 1 x 128K, old path (infllm_attention, recompresses the 128K keys): eager {t_eager * 1000:.1f} us, "
              f"graph replay {t_graph * 1000:.1f} us", flush=True)
        ref_out = out.clone()

        # ---- the device decode cache ----
        s2 = torch.cuda.Stream()
        pc = params(lib, SPARSE)
        pc.cuda_stream = s2.cuda_stream
        cache = C.c_void_p()
        check(lib, lib.infllm_cache_create(C.byref(pc), DT, HKV, D, Tk, C.byref(cache)), "cache_create")
        cws = C.c_size_t(0)
        check(lib, lib.infllm_cache_workspace_size(cache, C.byref(pc), 1, HQ, C.byref(cws)), "cache ws")
        cwsb = torch.empty(max(cws.value, 1), dtype=torch.uint8, device="cuda")
        pc.workspace, pc.workspace_bytes = cwsb.data_ptr(), cws.value
        cout = torch.empty_like(q)
        clse = torch.empty(1, HQ, device="cuda", dtype=torch.float32)
        rowb = HKV * D * 2  # 16-bit elements
        kl, vl = k.data_ptr() + (Tk - 1) * rowb, v.data_ptr() + (Tk - 1) * rowb
        with torch.cuda.stream(s2):
            t0 = torch.cuda.Event(enable_timing=True)
            t1 = torch.cuda.Event(enable_timing=True)
            t0.record()
            check(lib, lib.infllm_cache_append(cache, k.data_ptr(), v.data_ptr(), Tk - 1), "prefix append")
            t1.record()
            torch.cuda.synchronize()
            t_prefix = t0.elapsed_time(t1)

            def c_append():
                check(lib, lib.infllm_cache_append(cache, kl, vl, 1), "cache append")

            def c_attend():
                check(lib, lib.infllm_cache_attend(cache, C.byref(pc), q.data_ptr(), 1, HQ, cout.data_ptr(),
                                                   clse.data_ptr()), "cache attend")

            def c_step():  # back to Tk - 1 tokens (host bookkeeping only), then one decode step
                check(lib, lib.infllm_cache_truncate(cache, Tk - 1), "truncate")
                c_append()
                c_attend()
            c_step()
            c_step()
        torch.cuda.synchronize()
        same = torch.equal(cout, ref_out)
        maxdiff = (cout.float() - ref_out.float()).abs().max().item()
        with torch.cuda.stream(s2):
            t_c_eager = timeit(c_step, reps=50)
        # captured graphs replay the captured step as it was (same position: the host-side length
        # does not move on replay), so every replay is the step from Tk - 1 to Tk tokens
        graphs = {}
        for name, body, start in (("step", (c_append, c_attend), Tk - 1), ("append", (c_append,), Tk - 1),
                                  ("attend", (c_attend,), Tk)):
            check(lib, lib.infllm_cache_truncate(cache, start), "truncate")
            gg = torch.cuda.CUDAGraph()
            with torch.cuda.graph(gg, stream=s2):
                for f in body:
                    f()
            graphs[name] = gg
        with torch.cuda.stream(s2):
            t_c = {name: timeit(gg.replay, warmup=10, reps=300) for name, gg in graphs.items()}
            t_b2b = {name: timeit(gg.replay, warmup=10, reps=5, calls=200) for name, gg in graphs.items()}
            # the floor of that measure: a graph of one trivial kernel
            tiny = torch.zeros(1, device="cuda")
            g0 = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g0, stream=s2):
                tiny.add_(1)
            t_floor = timeit(g0.replay, warmup=10, reps=300)
        torch.cuda.synchronize()
        graphs["step"].replay()
        torch.cuda.synchronize()
        same_g = torch.equal(cout, ref_out)
        mem = lib.infllm_cache_memory_bytes(cache)
        print(f"decode cache: prefix append of {Tk - 1} tokens {t_prefix * 1000:.0f} us; step output "
              f"{'bitwise equal to' if same and same_g else f'max abs diff {maxdiff:.3g} vs'} the old path; "
              f"cache {mem / 2**20:.1f} MiB, workspace {cws.value} bytes")
        print(f"decode 1 x 128K, device cache (append 1 + attend): eager {t_c_eager * 1000:.1f} us, graph replay "
              f"{t_c['step'] * 1000:.1f} us (append alone {t_c['append'] * 1000:.1f}, attend alone "
              f"{t_c['attend'] * 1000:.1f})", flush=True)
        print(f"decode 1 x 128K, device cache, graph replays back to back (200 per event pair): "
              f"{t_b2b['step'] * 1000:.1f} us per step (append {t_b2b['append'] * 1000:.1f}, attend "
              f"{t_b2b['attend'] * 1000:.1f}); one replay of a one-kernel graph between events: "
              f"{t_floor * 1000:.1f} us", flush=True)
        if a.decode_profile:
            from torch.profiler import ProfilerActivity, profile
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(20):
                    graphs["step"].replay()
                torch.cuda.synchronize()
            print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=15))
        dec = (t_eager * 1000, t_graph * 1000, t_c_eager * 1000, t_c["step"] * 1000, t_b2b["step"] * 1000)
        lib.infllm_cache_free(cache)
    except Exception as e:  # noqa
        print(f"# decode: {type(e).__name__}: {e}")
    return dec


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", default="build-gpu/libinfllm.so")
    ap.add_argument("--sizes", default="8192,16384,32768,65536,131072")
    ap.add_argument("--dense-sizes", default="8192,16384,32768")
    ap.add_argument("--no-flex", action="store_true")
    ap.add_argument("--no-decode", action="store_true", help="skip the decode rows")
    ap.add_argument("--no-dense-baselines", action="store_true",
                    help="skip the cuDNN / flash dense columns of the sparse rows (for A/B runs of our kernels)")
    ap.add_argument("--flex-sizes", default="8192,16384,32768,65536,131072",
                    help="the --sizes at which FlexAttention runs (issue 3 asks for 8K to 128K; each size compiles "
                         "its own Flex kernels, ~10-20 s)")
    ap.add_argument("--no-flex-head-major", action="store_true",
                    help="time FlexAttention in the folded form only (the baseline; the head-major form compiles its own "
                         "kernels, ~10-20 s a size)")
    ap.add_argument("--random", action="store_true", help="plain N(0,1) inputs (no segment structure)")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--json", default="", metavar="FILE",
                    help="also write every row (pipeline, dense, given selections, decode) to FILE as JSON")
    ap.add_argument("--topk-npy", default="",
                    help="comma-separated .npy / .npz selections [heads, T, K] (e.g. from a real model, "
                         "bench/real_union.py --save-topk): stage 2 and FlexAttention timed on each, "
                         "on this script's synthetic q/k/v of the same T")
    ap.add_argument("--decode-profile", action="store_true",
                    help="per-kernel device times of the cache decode step (torch.profiler over graph replays)")
    ap.add_argument("--stage2-profile", action="store_true",
                    help="per-kernel device times of stage 2 on each --topk-npy selection (torch.profiler)")
    ap.add_argument("--profile", type=int, default=0,
                    help="one selection, one sparse stage-2 and one dense call at this T, then exit (for ncu); "
                         "with --topk-npy, stage 2 takes the first file's selection (of T tokens) instead")
    ap.add_argument("--dump", default="",
                    help="with --profile: save the sparse and dense outputs and the top-k to this file (torch.save), to compare "
                         "two builds or kernel switches on the same inputs")
    ap.add_argument("--digest", action="store_true",
                    help="with --profile: print SHA-256 digests of the top-k and the sparse output instead of "
                         "running dense (outputs of GBs at 256K tokens: two builds or switches compare by digest)")
    ap.add_argument("--shape", default="32,2,128", metavar="HQ,HKV,D",
                    help="query heads, KV heads, head_dim (default: issue 3's 32,2,128)")
    ap.add_argument("--dtype", default="bf16", choices=("bf16", "f16"))
    ap.add_argument("--window", type=int, default=0, metavar="W",
                    help="a sliding key window of W keys for every infllm call (0: none); leaves out the causal "
                         "SDPA / FlexAttention baselines")
    a = ap.parse_args()
    set_shape(a.shape, a.dtype)
    global WINDOW
    if a.window < 0:
        sys.exit(f"cuda_bench: --window {a.window}: must be >= 0")
    WINDOW = a.window
    if WINDOW:  # the PyTorch baselines attend causally, not in the window: no like-for-like comparison
        a.no_flex = a.no_dense_baselines = True
    lib = load_lib(a.lib)
    if a.profile:
        T = a.profile
        q, k, v = make_inputs(T, structured=not a.random)
        out = torch.empty_like(q)
        p = params(lib, SPARSE)
        l = layout(T, T)
        K = min(96, (T + 63) // 64)
        topk = torch.empty(HKV, T, K, dtype=torch.int32, device="cuda")
        select_fn(lib, p, l, q, k, topk, T)()
        if a.topk_npy:  # stage 2 on a given selection instead (the launches stay in the same order for ncu)
            path = a.topk_npy.split(",")[0]
            topk, Tsel, K = load_selection(path)
            if Tsel != T:
                sys.exit(f"cuda_bench: --profile {T} with --topk-npy {path}, a selection of {Tsel} tokens")
        stage2_fn(lib, p, l, q, k, v, topk, K, out, None)()
        if a.digest:
            torch.cuda.synchronize()
            dig = [hashlib.sha256(t.contiguous().view(torch.uint8).cpu().numpy().tobytes()).hexdigest()[:16]
                   for t in (topk, out)]
            print(f"digest T={T} shape={a.shape}: topk {dig[0]} sparse {dig[1]}")
            return
        out_dense = torch.empty_like(q)
        check(lib, lib.infllm_dense_attention(C.byref(p), C.byref(l), C.c_void_p(q.data_ptr()),
                                              C.c_void_p(k.data_ptr()), C.c_void_p(v.data_ptr()),
                                              C.c_void_p(out_dense.data_ptr()), None), "dense")
        torch.cuda.synchronize()
        if a.dump:
            torch.save({"sparse": out.cpu(), "dense": out_dense.cpu(), "topk": topk.cpu()}, a.dump)
        return
    name = torch.cuda.get_device_name()
    drv = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip()
    print(f"# infllm CUDA bench: {name}, driver {drv}, torch {torch.__version__}, "
          f"commit {lib.infllm_build_commit().decode()}, inputs {'random' if a.random else 'structured'}, "
          f"Hq {HQ} / Hkv {HKV} / d {D}, {DT_NAME}" + (f", window {WINDOW}" if WINDOW else ""))
    rows = []

    # ---------------- sparse pipeline per size ----------------
    for T in [int(x) for x in a.sizes.split(",") if x]:
        q, k, v = make_inputs(T, structured=not a.random)
        out = torch.empty_like(q)
        lse = torch.empty(T, HQ, device="cuda", dtype=torch.float32)
        p = params(lib, SPARSE)
        l = layout(T, T)
        wsb = C.c_size_t(0)
        check(lib, lib.infllm_attention_workspace_size(C.byref(p), C.byref(l), C.byref(wsb)), "ws")
        ws = torch.empty(wsb.value, dtype=torch.uint8, device="cuda")
        p.workspace, p.workspace_bytes = ws.data_ptr(), wsb.value
        K = min(96, (T + 63) // 64)
        topk = torch.empty(HKV, T, K, dtype=torch.int32, device="cuda")
        n1, n2 = T // 16 - 1, T // 64 - 1
        c1 = torch.empty(max(n1, 1), HKV, D, dtype=TDT, device="cuda")
        c2 = torch.empty(max(n2, 1), HKV, D, dtype=TDT, device="cuda")

        def pipe():
            check(lib, lib.infllm_attention(C.byref(p), C.byref(l), C.c_void_p(q.data_ptr()), C.c_void_p(k.data_ptr()),
                                            C.c_void_p(v.data_ptr()), C.c_void_p(out.data_ptr()),
                                            C.c_void_p(lse.data_ptr())), "attention")

        def comp():
            check(lib, lib.infllm_compress_keys(C.byref(p), C.byref(l), C.c_void_p(k.data_ptr()),
                                                C.c_void_p(c1.data_ptr()), C.c_void_p(c2.data_ptr()), None, None),
                  "compress")

        sel = select_fn(lib, p, l, q, k, topk, T)  # compress + fused stage 1 + top-k

        st2 = stage2_fn(lib, p, l, q, k, v, topk, K, out, lse)
        t_pipe = timeit(pipe, reps=a.reps)
        t_comp = timeit(comp, reps=a.reps)
        t_sel = timeit(sel, reps=a.reps) - t_comp
        t_st2 = timeit(st2, reps=a.reps)
        print(f"# T={T}: stage2 with INFLLM_CUDA_SPARSE_NW={os.environ.get('INFLLM_CUDA_SPARSE_NW', '4')}: {t_st2:.3f} ms")
        # keys per query and union per 4-token tile from the selection
        fl2 = stage2_flop(topk, T)
        union = union_per_tile(topk, T)
        # a wgmma warpgroup's 64 rows hold 64 / G tokens (4 at G 16): the union it computes
        wg_tok = max(1, 64 // (HQ // HKV))
        union_wg = union if wg_tok == 4 else union_per_tile(topk, T, wg_tok)
        t_cudnn = t_flash = float("nan")
        if not a.no_dense_baselines:
            t_cudnn = timeit(sdpa_fn(q, k, v, "cudnn"), reps=a.reps)
            try:
                t_flash = timeit(sdpa_fn(q, k, v, "flash"), reps=a.reps)
            except Exception:  # the flash backend refuses some shapes: nan
                pass
        t_flex = t_flex_h = float("nan")
        if not a.no_flex and str(T) in a.flex_sizes.split(","):
            sel()
            outs = {}
            for folded in (True,) if a.no_flex_head_major else (True, False):
                try:
                    fn = flex_fn(q, k, v, topk, T, folded)
                    t = timeit(fn, reps=a.reps)
                    outs[folded] = flex_out_tokens(fn(), T, folded).float()
                    if folded:
                        t_flex = t
                    else:
                        t_flex_h = t
                except Exception as e:  # noqa
                    print(f"# flex ({'folded' if folded else 'head-major'}) at {T}: {type(e).__name__}: "
                          f"{str(e)[:200]}")
            if len(outs) == 2:  # the two forms attend the same keys: their outputs agree to bf16 rounding
                d = (outs[True] - outs[False]).abs().max().item()
                print(f"# flex at {T}: folded vs head-major output max abs diff {d:.3e}", flush=True)
                if not d < 0.05:
                    print(f"# flex at {T}: WARNING: the folded and head-major Flex outputs differ", flush=True)
            del outs
        rows.append((T, t_pipe, t_comp, t_sel, t_st2, fl2 / t_st2 / 1e9, union, t_cudnn, t_flash, t_flex_h, t_flex))
        print(f"T={T}: pipeline {t_pipe:.3f} ms, compress {t_comp:.3f}, select {t_sel:.3f}, stage2 {t_st2:.3f} "
              f"({fl2 / t_st2 / 1e9:.0f} TFLOP/s useful, union {union:.0f} blocks/4 tokens, {union_wg:.0f} / {wg_tok} "
              f"consecutive tokens = a warpgroup's at this G), cuDNN dense "
              f"{t_cudnn:.3f}, flash dense {t_flash:.3f}, flex sparse folded {t_flex:.3f} "
              f"({fl2 / t_flex / 1e9:.0f} TFLOP/s), head-major {t_flex_h:.3f}", flush=True)
        del ws, q, k, v, out, lse, topk, c1, c2
        torch.cuda.empty_cache()

    # ---------------- dense causal ----------------
    drows = []
    for T in [int(x) for x in a.dense_sizes.split(",") if x]:
        q, k, v = make_inputs(T, structured=False)
        out = torch.empty_like(q)
        p = params(lib, DENSE)
        l = layout(T, T)

        def dense():
            check(lib, lib.infllm_dense_attention(C.byref(p), C.byref(l), C.c_void_p(q.data_ptr()),
                                                  C.c_void_p(k.data_ptr()), C.c_void_p(v.data_ptr()),
                                                  C.c_void_p(out.data_ptr()), None), "dense")
        t_ours = timeit(dense, reps=a.reps)
        t_cudnn = float("nan") if a.no_dense_baselines and WINDOW else timeit(sdpa_fn(q, k, v, "cudnn"), reps=a.reps)
        # keys per query summed: T^2 / 2 causal (as before); min(pos + 1, W) under a window
        keys = T * T / 2 if not WINDOW or WINDOW >= T else WINDOW * (WINDOW + 1) / 2 + (T - WINDOW) * WINDOW
        fl = 4.0 * HQ * D * keys
        drows.append((T, t_ours, t_cudnn, fl / t_ours / 1e9, fl / t_cudnn / 1e9))
        print(f"dense T={T}: ours {t_ours:.3f} ms ({fl / t_ours / 1e9:.0f} TFLOP/s), cuDNN {t_cudnn:.3f} ms "
              f"({fl / t_cudnn / 1e9:.0f} TFLOP/s), ratio {t_cudnn / t_ours:.2f}x", flush=True)
        del q, k, v, out
        torch.cuda.empty_cache()

    # ---------------- stage 2 on a given selection (e.g. from a real model) ----------------
    srows = []
    sel_ms = {}  # T -> compress + select ms on the synthetic q / k of that T
    for path in [x for x in a.topk_npy.split(",") if x]:
        topk, T, K = load_selection(path)
        q, k, v = make_inputs(T, structured=not a.random)
        out = torch.empty_like(q)
        p = params(lib, SPARSE)
        l = layout(T, T)

        t_st2 = timeit(stage2_fn(lib, p, l, q, k, v, topk, K, out, None), reps=a.reps)
        fl2 = stage2_flop(topk, T)
        t_flex = float("nan")
        if not a.no_flex:
            try:
                t_flex = timeit(flex_fn(q, k, v, topk, T, True), reps=a.reps)
            except Exception as e:  # noqa
                print(f"# flex (folded) on {path}: {type(e).__name__}: {str(e)[:200]}")
        # compress + select on this T's synthetic q / k (their time depends on the shapes, not on which blocks
        # win, up to the top-k's few passes), so that select + this selection's stage 2 estimates the whole
        # pipeline on such inputs in one run; infllm_attention itself always selects from its own q / k.
        # Timed once per T: make_inputs is seeded, so selections of one T share these inputs
        if T not in sel_ms:
            sel_ms[T] = float("nan")
            try:
                topk_s = torch.empty(HKV, T, min(96, (T + 63) // 64), dtype=torch.int32, device="cuda")
                sel_ms[T] = timeit(select_fn(lib, p, l, q, k, topk_s, T), reps=a.reps)
                del topk_s
            except Exception as e:  # noqa
                print(f"# select at {T} for {path}: {type(e).__name__}: {str(e)[:200]}")
        t_sel = sel_ms[T]
        un4, un8 = union_per_tile(topk, T, 4), union_per_tile(topk, T, 8)
        srows.append((os.path.basename(path), T, K, t_st2, fl2 / t_st2 / 1e9, un4, un8, t_flex, t_sel, t_sel + t_st2))
        print(f"given selection {path}: T={T} K={K}: stage2 {t_st2:.3f} ms ({fl2 / t_st2 / 1e9:.0f} TFLOP/s useful, "
              f"union {un4:.0f} blocks / 4 tokens, {un8:.0f} / 8), flex sparse folded {t_flex:.3f}, compress + "
              f"select {t_sel:.3f} (synthetic q / k), + stage 2 = {t_sel + t_st2:.3f}", flush=True)
        if a.stage2_profile:
            try:
                per = kernel_times(stage2_fn(lib, p, l, q, k, v, topk, K, out, None), reps=5)
                print("  stage 2 kernels, ms a call: " + ", ".join(f"{n.replace('void ', '')} {t / 1000:.3f}" for n, t in
                                                               sorted(per.items(), key=lambda x: -x[1])), flush=True)
            except Exception as e:  # noqa
                print(f"# stage-2 profile on {path}: {type(e).__name__}: {str(e)[:200]}")
        del q, k, v, out, topk
        torch.cuda.empty_cache()

    dec = None if a.no_decode else decode_rows(a, lib)

    # ---------------- table ----------------
    print()
    print("| T | pipeline ms | compress | select (stage 1 + top-k) | stage 2 | stage-2 TFLOP/s | union blocks / 4 tok"
          " | cuDNN dense ms | flash dense ms | flex sparse ms (head-major) | flex sparse ms (folded) "
          "| pipeline vs cuDNN | stage 2 vs flex folded | select share |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (T, tp, tc, ts, t2, tf, un, tcu, tfl, tfh, tfx) in rows:
        print(f"| {T // 1024}K | {tp:.2f} | {tc:.2f} | {ts:.2f} | {t2:.2f} | {tf:.0f} | {un:.0f} | {tcu:.2f} | "
              f"{tfl:.2f} | {tfh:.2f} | {tfx:.2f} | {ratio(tcu, tp)} | {ratio(tfx, t2)} | {100 * ts / tp:.1f}% |")
    print()
    print("| T | dense ours ms | cuDNN ms | ours TFLOP/s | cuDNN TFLOP/s | ours / cuDNN speed |")
    print("|---|---|---|---|---|---|")
    for (T, to, tcu, fo, fc) in drows:
        print(f"| {T // 1024}K | {to:.2f} | {tcu:.2f} | {fo:.0f} | {fc:.0f} | {ratio(tcu, to)} |")
    if srows:
        print()
        print("| given selection | T | K | stage 2 ms | stage-2 TFLOP/s | union blocks / 4 tok | union / 8 tok "
              "| flex sparse ms (folded) | flex / ours | compress + select ms (synthetic q / k) "
              "| + stage 2 = pipeline estimate |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for (fname, T, K, t2, tf, u4, u8, tfx, tsl, tpe) in srows:
            print(f"| {fname} | {T // 1024}K | {K} | {t2:.2f} | {tf:.0f} | {u4:.0f} | {u8:.0f} | {tfx:.2f} | "
                  f"{ratio(tfx, t2)} | {tsl:.2f} | {tpe:.2f} |")
    if dec:
        print("\n| decode, 1 token, 128K cache | eager us | CUDA graph replay us | graph replays back to back, us per step |")
        print("|---|---|---|---|")
        print(f"| old: infllm_attention (recompresses the prefix) | {dec[0]:.1f} | {dec[1]:.1f} | |")
        print(f"| device cache: append 1 + attend | {dec[2]:.1f} | {dec[3]:.1f} | {dec[4]:.1f} |")
    if a.json:
        write_json(a.json, lib, name, drv, a, rows, drows, srows, dec)


if __name__ == "__main__":
    main()
