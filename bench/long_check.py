#!/usr/bin/env python3
"""long_check.py: the CUDA sparse pipeline on one sequence long enough that its query / output tensors pass
2^31 elements (T x Hq x D > 2^31: T > 512K at 32 heads of 128), where a 32-bit element offset would wrap.
No float64 reference runs at that length, so the checks are consistency checks that wrapped addressing,
a wrong segment plan or a size limit cannot pass:

  1. prefix: causal attention of the first T / 2 tokens does not depend on the rest, so infllm_attention on
     the first half gives the full run's first half (bitwise, or the same selections and outputs within
     rounding where a length-dependent kernel choice sums in another order);
  2. stage 2: infllm_select_blocks' selection, through infllm_sparse_attention, gives the pipeline's output;
  3. late rows against float64: for --rows query tokens spread over the second half (the last one
     included), each KV head's selected keys gathered and attended in float64 (torch), to the output and
     its lse;
  4. few queries: the last --few queries against the whole prefix (another layout: lq < lk, the few-query
     kernels) give the same selections and outputs;
  5. a batch: the T tokens as --seqs sequences of lengths in the ratio 1 : 2 : .. : seqs (cu_seqlens, one
     call; the later ones start past 2^31 query elements) give each sequence's selections and output alone.

    python3 bench/long_check.py [--lib build-gpu/libinfllm.so] [--T 1048576] [--shape 32,2,128] [--dtype bf16]
                                [--seqs 3] [--rows 8] [--few 16]

Prints one line per check and `long_check: all passed` (exit 0) or `long_check: FAILED` (exit 1).
"""
import argparse
import ctypes as C
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cuda_bench as cb  # noqa: E402  (its shape globals: set_shape)
from cuda_bench import SPARSE, check, layout, load_lib, params  # noqa: E402

failures = []


def verdict(name, ok, detail):
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
    if not ok:
        failures.append(name)


def batch_layout(lens):
    """one call's layout of sequences of the given lengths (queries = keys), cu_seqlens on the device (kept
    alive by the layout object)"""
    cu = torch.tensor([0] + list(torch.tensor(lens).cumsum(0).tolist()), dtype=torch.int32, device="cuda")
    lay = layout(sum(lens), sum(lens))
    lay.num_seqs = len(lens)
    lay.cu_seqlens_q = lay.cu_seqlens_k = cu.data_ptr()
    lay.max_seqlen_q = lay.max_seqlen_k = max(lens)
    lay.cu_keep = cu
    return lay


def attention(lib, q, k, v, lay=None):
    """infllm_attention (sparse) of one sequence of q.shape[0] queries against k.shape[0] keys (the queries
    the last ones), or of the sequences of `lay`: out, lse"""
    T, Tk = q.shape[0], k.shape[0]
    p = params(lib, SPARSE)
    lay = lay or layout(T, Tk)
    wsb = C.c_size_t(0)
    check(lib, lib.infllm_attention_workspace_size(C.byref(p), C.byref(lay), C.byref(wsb)), "workspace size")
    ws = torch.empty(max(wsb.value, 1), dtype=torch.uint8, device="cuda")
    p.workspace, p.workspace_bytes = ws.data_ptr(), wsb.value
    out = torch.empty_like(q)
    lse = torch.empty(T, cb.HQ, dtype=torch.float32, device="cuda")
    check(lib, lib.infllm_attention(C.byref(p), C.byref(lay), C.c_void_p(q.data_ptr()), C.c_void_p(k.data_ptr()),
                                    C.c_void_p(v.data_ptr()), C.c_void_p(out.data_ptr()), C.c_void_p(lse.data_ptr())),
          "attention")
    return out, lse


def select(lib, q, k, lay=None):
    """infllm_select_blocks: [Hkv, T, topk_out] int32"""
    T, Tk = q.shape[0], k.shape[0]
    p = params(lib, SPARSE)
    lay = lay or layout(T, Tk)
    K = lib.infllm_params_topk_total(C.byref(p))
    K = min(K, (lay.max_seqlen_k + p.block_size - 1) // p.block_size)
    topk = torch.full((cb.HKV, T, K), -7, dtype=torch.int32, device="cuda")
    check(lib, lib.infllm_select_blocks(C.byref(p), C.byref(lay), C.c_void_p(q.data_ptr()), C.c_void_p(k.data_ptr()),
                                        C.c_void_p(topk.data_ptr())), "select")
    return topk, p


def sparse(lib, q, k, v, topk):
    T, Tk = q.shape[0], k.shape[0]
    p = params(lib, SPARSE)
    lay = layout(T, Tk)
    out = torch.empty_like(q)
    lse = torch.empty(T, cb.HQ, dtype=torch.float32, device="cuda")
    check(lib, lib.infllm_sparse_attention(C.byref(p), C.byref(lay), C.c_void_p(q.data_ptr()), C.c_void_p(k.data_ptr()),
                                           C.c_void_p(v.data_ptr()), C.c_void_p(topk.data_ptr()), topk.shape[2],
                                           C.c_void_p(out.data_ptr()), C.c_void_p(lse.data_ptr())), "sparse")
    return out, lse


def make_long_inputs(T, seed):
    """cuda_bench.make_inputs' structured q, k, v (a 256-token segment's tokens share a component, so that
    neighbours select similar blocks), generated 64K tokens at a time: its float32 temporaries of the whole
    tensor would be ~16 bytes an element, 69 GB for q at 1M tokens and 32 heads of 128"""
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.empty(T, cb.HQ, cb.D, dtype=cb.TDT, device="cuda")
    k = torch.empty(T, cb.HKV, cb.D, dtype=cb.TDT, device="cuda")
    v = torch.empty_like(k)
    step = 1 << 16  # a multiple of the 256-token segments
    for t0 in range(0, T, step):
        n = min(step, T - t0)
        seg_of = torch.arange(n, device="cuda") // 256
        for x, structured in ((q, True), (k, True), (v, False)):
            r = torch.randn(n, x.shape[1], cb.D, device="cuda", generator=g)
            if structured:
                r = 0.6 * r + 0.8 * torch.randn((n + 255) // 256, x.shape[1], cb.D, device="cuda", generator=g)[seg_of]
            x[t0:t0 + n] = r.to(cb.TDT)
    return q, k, v


def rel_diff(a, b, rows_same=None):
    """max |a - b| / max |b| of [T, Hq, D] outputs, in float32 a chunk of tokens at a time (the outputs are
    gigabytes); with rows_same ([Hkv, T] bool: the two selections agree), over the (token, head) rows whose KV
    head's selections agree"""
    num, den, step = 0.0, 0.0, 1 << 14
    for t0 in range(0, a.shape[0], step):
        x, y = a[t0:t0 + step].float(), b[t0:t0 + step].float()
        d = (x - y).abs().amax(dim=2)  # [tokens, Hq]
        if rows_same is not None:
            d = d * rows_same[:, t0:t0 + step].t().repeat_interleave(cb.HQ // cb.HKV, dim=1)
        num, den = max(num, d.max().item()), max(den, y.abs().max().item())
    return num / max(den, 1e-30)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lib", default="build-gpu/libinfllm.so")
    ap.add_argument("--T", type=int, default=1 << 20)
    ap.add_argument("--shape", default="32,2,128")
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--rows", type=int, default=8, help="late query tokens checked against float64")
    ap.add_argument("--few", type=int, default=16, help="last queries run as a few-query call")
    ap.add_argument("--seqs", type=int, default=3, help="sequences of the batch check (1: none)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    cb.set_shape(a.shape, a.dtype)
    if a.T < 2 * 64 or a.rows < 1 or not 1 <= a.few <= a.T or not 1 <= a.seqs <= 64 or a.seqs * (a.seqs + 1) // 2 > a.T:
        sys.exit("long_check: needs --T >= 128, --rows >= 1, 1 <= --few <= T and 1 <= --seqs <= 64 (and <= T tokens)")
    if not torch.cuda.is_available():
        print("long_check: SKIP (no CUDA device)")
        return 0
    lib = load_lib(a.lib)
    lib.infllm_params_topk_total.restype = C.c_int32
    T, HQ, HKV, D = a.T, cb.HQ, cb.HKV, cb.D
    G = HQ // HKV
    print(f"long_check: T {T}, {HQ} / {HKV} / {D} {cb.DT_NAME}; q / out {T * HQ * D / 2**31:.2f} x 2^31 elements")
    # q, the output, a second output and the prefix's (2 bytes an element each, 7 in all), K / V, the
    # selections and the library's workspace: a device that cannot hold them skips, not fails
    need = 7 * T * HQ * D + 4 * T * HKV * D + 12 * HKV * T * 96 + (2 << 30)
    free = torch.cuda.mem_get_info()[0]
    if free < need:
        print(f"long_check: SKIP (needs ~{need / 2**30:.0f} GiB of device memory, {free / 2**30:.0f} GiB free; "
              "a smaller --T)")
        return 0
    q, k, v = make_long_inputs(T, a.seed)

    out, lse = attention(lib, q, k, v)
    torch.cuda.synchronize()
    finite = bool(torch.isfinite(out).all().item()) and bool(torch.isfinite(lse).all().item())
    verdict("pipeline", finite, "output and lse finite" if finite else "non-finite output or lse")

    # 2. the selection through stage 2 gives the pipeline's output
    topk, p = select(lib, q, k)
    K, B = topk.shape[2], p.block_size
    bad = ((topk < -1) | (topk >= (T + B - 1) // B)).sum().item()
    out2, lse2 = sparse(lib, q, k, v, topk)
    eq = torch.equal(out2, out) and torch.equal(lse2, lse)
    d2 = 0.0 if eq else rel_diff(out2, out)
    verdict("select + stage 2 = pipeline", bad == 0 and d2 <= 2.0**-7,
            f"{bad} entries out of range; output {'bitwise equal' if eq else f'max rel diff {d2:.2e}'}")
    del out2, lse2

    # 1. prefix
    Tp = T // 2
    outp, lsep = attention(lib, q[:Tp], k[:Tp], v[:Tp])
    topkp, _ = select(lib, q[:Tp], k[:Tp])
    rs = (topkp == topk[:, :Tp]).all(dim=2) if topkp.shape[2] == K else torch.zeros(HKV, Tp, dtype=torch.bool,
                                                                                   device="cuda")
    same = rs.float().mean().item()
    eq = torch.equal(outp, out[:Tp])
    dp = 0.0 if eq else rel_diff(outp, out[:Tp], rs)
    verdict(f"prefix of {Tp} tokens", same >= 0.99 and dp <= 2.0**-7,
            f"selections {same * 100:.4f}% identical rows, output {'bitwise equal' if eq else f'max rel diff {dp:.2e} on those rows'}")
    del outp, lsep, topkp

    # 3. late rows against float64 on their own selections
    rows = sorted({T - 1 - i * (T // 2 - 1) // max(a.rows - 1, 1) for i in range(a.rows)})
    scale = 1.0 / math.sqrt(D)
    worst, worst_lse, unit = 0.0, 0.0, 2.0**-8 if cb.DT_NAME == "bf16" else 2.0**-11
    for t in rows:
        for g in range(HKV):
            blocks = topk[g, t]
            blocks = blocks[blocks >= 0].long()
            keys = (blocks[:, None] * B + torch.arange(B, device="cuda")[None, :]).reshape(-1)
            keys = keys[keys <= t]
            kk, vv = k[keys, g].double(), v[keys, g].double()
            for h in range(g * G, (g + 1) * G):
                s = (kk @ q[t, h].double()) * scale
                ref_lse = torch.logsumexp(s, 0)
                ref = torch.softmax(s, 0) @ vv
                err = (out[t, h].double() - ref).abs().max().item() / ref.abs().max().clamp_min(1e-30).item()
                worst = max(worst, err)
                worst_lse = max(worst_lse, abs(lse[t, h].item() - ref_lse.item()))
    # a gross-error detector (wrapped addressing gives O(1) errors); the precision grid is test_cuda's
    verdict(f"{len(rows)} late rows vs float64 (tokens {rows[0]}..{rows[-1]})", worst <= 8 * unit and worst_lse <= 1e-2,
            f"max error {worst:.2e} of the row's max |out| ({worst / unit:.2f} units of the dtype), lse {worst_lse:.2e}")

    # 4. the last queries as a few-query call against the whole prefix
    F = a.few
    qf = q[T - F:].contiguous()
    outf, lsef = attention(lib, qf, k, v)
    topkf, _ = select(lib, qf, k)
    # other selection kernels: a near-tie may round the other way in a row or two (infllm.h), a wrapped
    # address in none
    rs = (topkf == topk[:, T - F:]).all(dim=2)
    same = rs.float().mean().item()
    df = rel_diff(outf, out[T - F:], rs)
    verdict(f"last {F} queries as a few-query call", same >= 0.9 and df <= 4 * unit,
            f"selections {rs.sum().item()} of {rs.numel()} rows identical, output max rel diff {df:.2e} on those rows")

    # 5. the tokens as a batch of sequences, each against itself alone
    if a.seqs > 1:
        del outf, lsef, topkf, qf
        w = a.seqs * (a.seqs + 1) // 2
        lens = [T * (i + 1) // w for i in range(a.seqs)]
        lens[-1] = T - sum(lens[:-1])
        lay = batch_layout(lens)
        outb, lseb = attention(lib, q, k, v, lay)
        topkb, _ = select(lib, q, k, lay)
        worst_same, worst_d, all_eq, t0 = 1.0, 0.0, True, 0
        for L in lens:
            o1, l1 = attention(lib, q[t0:t0 + L], k[t0:t0 + L], v[t0:t0 + L])
            s1, _ = select(lib, q[t0:t0 + L], k[t0:t0 + L])
            kc = s1.shape[2]
            # the batch's rows have max_seqlen's columns: a shorter sequence's extra columns are -1
            rs = (topkb[:, t0:t0 + L, :kc] == s1).all(dim=2) & (topkb[:, t0:t0 + L, kc:] == -1).all(dim=2)
            eq = torch.equal(o1, outb[t0:t0 + L]) and torch.equal(l1, lseb[t0:t0 + L])
            all_eq = all_eq and eq
            worst_same = min(worst_same, rs.float().mean().item())
            if not eq:
                worst_d = max(worst_d, rel_diff(outb[t0:t0 + L], o1, rs))
            t0 += L
            del o1, l1, s1
        verdict(f"batch of {a.seqs} sequences {lens}", worst_same >= 0.99 and worst_d <= 2.0**-7,
                f"selections {worst_same * 100:.4f}% identical rows (worst sequence), output "
                f"{'bitwise equal' if all_eq else f'max rel diff {worst_d:.2e} on those rows'}")

    print("long_check: all passed" if not failures else f"long_check: FAILED ({', '.join(failures)})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
