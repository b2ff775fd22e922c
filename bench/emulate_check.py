#!/usr/bin/env python3
"""emulate_check.py: the CUDA backend's launch planning for other GPUs, run on this one.

With INFLLM_CUDA_EMULATE=NAME the library plans every launch as it would on that GPU (its compute
capability, SM count and shared-memory limits, each only lowered: src/cuda/cuda_pipeline.cu) and the kernels
it picks run here. test_cuda's grid checks those kernels' numbers at up to a few thousand tokens; this
script sweeps what grows with the length (shared memory of selections, bitmaps and score rows; splits;
workspaces) for several layouts through every entry point, to 768K tokens at G 16 (the decode cache's
kernels take up to 786,432 keys), 512K at G 8 / d 64 and 128K for the others:

  prefill   infllm_attention, sparse, one sequence (queries = keys)
  dense     infllm_attention, dense (to 128K)
  few       the last 40 queries of one sequence (the few-query kernels)
  decode    3 sequences of one query each against L, L/2 + 1 and L/3 + 7 keys (varlen)
  cache     a decode cache of L - 1 tokens, then a step (append 1, attend 1) and an attend of 5 queries,
            each against the same call made stateless (the same kernels; the line names them: the decode
            cache's k_cd_*, or the shared ones where those do not fit the device's shared memory)

Each call must return INFLLM_OK with finite outputs whose sampled rows match a float64 attention over the
blocks infllm_select_blocks selects for the same call (a gross-error detector: within 8 units of the
dtype), or refuse with INFLLM_ERR_UNSUPPORTED and a message on a shape that no kernel of that device holds
(listed, not failed). A refusal by cuda_func_smem (a tile the planning chose that the device cannot hold),
another status, a CUDA error or a mismatch fails. Profile t4 (cc 7.5) checks that every call is refused by
its compute capability.

    python3 bench/emulate_check.py [--lib build-gpu/libinfllm.so] --profile h200|a100|rtx3090|l4|orin|t4|none
                                   [--lengths 16384,131072,524288,786432] [--seed 0]

Prints a line per call and `emulate_check PROFILE: all passed` (exit 0) or `... FAILED` (exit 1).
"""
import argparse
import ctypes as C
import math
import os
import sys

PROFILES = {  # name: (cc, SMs), as src/cuda/cuda_pipeline.cu's table: what the library must report under it
    "h200": (90, 132), "a100": (80, 108), "rtx3090": (86, 82), "l4": (89, 58), "orin": (87, 16), "t4": (75, 40),
    "none": (None, None)}
# (HQ, HKV, D, dtype, longest length): MiniCPM4 (G 16), Llama-3-like G 4, G 1 (MHA), G 8 at d 64 in f16,
# Qwen2.5-7B-like G 7, G 32
LAYOUTS = [(32, 2, 128, "bf16", 786432), (32, 8, 128, "bf16", 1 << 17), (32, 32, 128, "bf16", 1 << 17),
           (16, 2, 64, "f16", 1 << 19), (28, 4, 128, "bf16", 1 << 17), (64, 2, 128, "bf16", 1 << 17)]
OK, UNSUPPORTED = 0, 9  # INFLLM_OK, INFLLM_ERR_UNSUPPORTED (include/infllm.h)
LAUNCH_REFUSAL = "a block; this device allows"  # cuda_func_smem's message: the planning chose too much

failures, refusals = [], []


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lib", default="build-gpu/libinfllm.so")
    ap.add_argument("--profile", required=True, choices=sorted(PROFILES))
    ap.add_argument("--lengths", default="16384,131072,524288,786432",
                    help="key lengths; each layout runs those up to its own longest")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.profile != "none":
        os.environ["INFLLM_CUDA_EMULATE"] = a.profile  # read with the device's properties, at the first call
    import torch
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import cuda_bench as cb
    from infllm_ctypes import DENSE, SPARSE

    if not torch.cuda.is_available():
        print("emulate_check: SKIP (no CUDA device)")
        return 0
    lib = cb.load_lib(a.lib)
    lib.infllm_params_topk_total.restype = C.c_int32
    lib.cuda_emulated_name.restype = C.c_char_p
    name = lib.cuda_emulated_name().decode()
    cc = lib.cuda_device_cc()
    sms = lib.cuda_sm_count()
    props = torch.cuda.get_device_properties(0)
    want_cc, want_sms = PROFILES[a.profile]
    real_cc = 10 * props.major + props.minor
    print(f"emulate_check {a.profile}: {props.name} (cc {real_cc}, {props.multi_processor_count} SMs) planned as "
          f"cc {cc}, {sms} SMs (profile '{name}')")
    if a.profile != "none" and (name != a.profile or cc != min(want_cc, real_cc) or
                                sms != min(want_sms, props.multi_processor_count)):
        print(f"emulate_check {a.profile}: FAILED (the library does not emulate the profile)")
        return 1
    lengths = [int(x) for x in a.lengths.split(",")]

    def status_class(what, st):
        """None when OK; 'refused' for a planned refusal (recorded); else records a failure"""
        if st == OK:
            return None
        msg = lib.infllm_last_error().decode()
        if st == UNSUPPORTED and LAUNCH_REFUSAL not in msg:
            refusals.append(f"{what}: {msg}")
            print(f"ref  {what}: refused: {msg}")
            return "refused"
        failures.append(what)
        print(f"FAIL {what}: status {st}: {msg}")
        return "failed"

    def verdict(what, ok, detail):
        print(f"{'ok  ' if ok else 'FAIL'} {what}: {detail}")
        if not ok:
            failures.append(what)

    def make_layout(lq, lk):
        """(queries, keys) pairs as one call's layout: cuda_bench's one-sequence layout of the totals, with
        the counts, the longest lengths and (several sequences) cu_seqlens on the device"""
        lay = cb.layout(sum(lq), sum(lk))
        lay.num_seqs = len(lq)
        lay.max_seqlen_q, lay.max_seqlen_k = max(lq), max(lk)
        if len(lq) > 1:
            cq = torch.tensor([0] + torch.tensor(lq).cumsum(0).tolist(), dtype=torch.int32, device="cuda")
            ck = torch.tensor([0] + torch.tensor(lk).cumsum(0).tolist(), dtype=torch.int32, device="cuda")
            lay.cu_seqlens_q, lay.cu_seqlens_k = cq.data_ptr(), ck.data_ptr()
            lay.keep = (cq, ck)
        return lay

    def attention(q, k, v, lay, mode):
        p = cb.params(lib, mode)
        wsb = C.c_size_t(0)
        st = lib.infllm_attention_workspace_size(C.byref(p), C.byref(lay), C.byref(wsb))
        if st:
            return st, None, None
        ws = torch.empty(max(wsb.value, 1), dtype=torch.uint8, device="cuda")
        p.workspace, p.workspace_bytes = ws.data_ptr(), wsb.value
        out = torch.full_like(q, float("nan"))
        lse = torch.full((q.shape[0], cb.HQ), float("nan"), dtype=torch.float32, device="cuda")
        st = lib.infllm_attention(C.byref(p), C.byref(lay), C.c_void_p(q.data_ptr()), C.c_void_p(k.data_ptr()),
                                  C.c_void_p(v.data_ptr()), C.c_void_p(out.data_ptr()), C.c_void_p(lse.data_ptr()))
        torch.cuda.synchronize()
        return st, out, lse

    def select(q, k, lay):
        p = cb.params(lib, SPARSE)
        K = min(lib.infllm_params_topk_total(C.byref(p)), (lay.max_seqlen_k + p.block_size - 1) // p.block_size)
        topk = torch.full((cb.HKV, q.shape[0], K), -7, dtype=torch.int32, device="cuda")
        st = lib.infllm_select_blocks(C.byref(p), C.byref(lay), C.c_void_p(q.data_ptr()), C.c_void_p(k.data_ptr()),
                                      C.c_void_p(topk.data_ptr()))
        torch.cuda.synchronize()
        return st, topk, p.block_size

    def unit():
        """the dtype's unit: the spacing of values just below 1 (the current layout's dtype)"""
        return 2.0**-8 if cb.DT_NAME == "bf16" else 2.0**-11

    def row_error(out, lse, q, k, v, t, k0, pos, blocks, B):
        """the worst error of query row t (its sequence's keys from k0, position pos) against float64 over
        the keys of `blocks` ([HKV, K] block indices, -1 unused; None: every causal key), in units of the
        row's max |out|, and the worst lse difference"""
        worst, worst_lse = 0.0, 0.0
        G, scale = cb.HQ // cb.HKV, 1.0 / math.sqrt(cb.D)
        for g in range(cb.HKV):
            if blocks is None:
                keys = torch.arange(pos + 1, device="cuda")
            else:
                b = blocks[g]
                b = b[b >= 0].long()
                keys = (b[:, None] * B + torch.arange(B, device="cuda")[None, :]).reshape(-1)
                keys = keys[keys <= pos]
            kk, vv = k[k0 + keys, g].double(), v[k0 + keys, g].double()
            qq = q[t, g * G:(g + 1) * G].double()                    # [G, D]
            s = (qq @ kk.t()) * scale                                 # [G, keys]
            ref = torch.softmax(s, 1) @ vv                            # [G, D]
            ref_lse = torch.logsumexp(s, 1)
            o = out[t, g * G:(g + 1) * G].double()
            err = ((o - ref).abs().amax(1) / ref.abs().amax(1).clamp_min(1e-30)).max().item()
            worst = max(worst, err / unit())
            worst_lse = max(worst_lse, (lse[t, g * G:(g + 1) * G].double() - ref_lse).abs().max().item())
        return worst, worst_lse

    def check_rows(what, st, out, lse, q, k, v, rows, dense=False, sel=None):
        """rows: (t, k0, pos) of the call's query rows to check (query index, its sequence's first key, its
        position); sel: the call's selection (topk, B) from infllm_select_blocks, None when that refused
        (then the output is only checked finite)"""
        if status_class(what, st):
            return
        fin = bool(torch.isfinite(out).all().item()) and bool(torch.isfinite(lse).all().item())
        if not fin or (not dense and sel is None):
            verdict(what, fin, "finite (select_blocks refused: no reference)" if fin else "non-finite output or lse")
            return
        worst, worst_lse = 0.0, 0.0
        for t, k0, pos in rows:
            blocks = None if dense else sel[0][:, t]
            w, wl = row_error(out, lse, q, k, v, t, k0, pos, blocks, sel[1] if sel else 0)
            worst, worst_lse = max(worst, w), max(worst_lse, wl)
        verdict(what, worst <= 8 and worst_lse <= 1e-2,
                f"{len(rows)} rows vs float64: {worst:.2f} units of the dtype, lse {worst_lse:.1e}")

    if a.profile == "t4":  # every entry refuses by the compute capability, before any kernel
        cb.set_shape("32,2,128", "bf16")
        q, k, v = cb.make_inputs(64, 4096)
        lay = make_layout([64], [4096])
        st, _, _ = attention(q, k, v, lay, SPARSE)
        msg = lib.infllm_last_error().decode()
        verdict("t4: attention refused", st == UNSUPPORTED and "compute capability 7.5" in msg, msg)
        st, _, _ = select(q, k, lay)
        msg = lib.infllm_last_error().decode()
        verdict("t4: select_blocks refused", st == UNSUPPORTED and "compute capability" in msg, msg)
        p = cb.params(lib, SPARSE)
        cache = C.c_void_p()
        st = lib.infllm_cache_create(C.byref(p), cb.DT, cb.HKV, cb.D, 4096, C.byref(cache))
        msg = lib.infllm_last_error().decode()
        verdict("t4: cache_create refused", st == UNSUPPORTED and "compute capability" in msg, msg)
        print(f"emulate_check {a.profile}: " + ("all passed" if not failures else f"FAILED ({', '.join(failures)})"))
        return 1 if failures else 0

    for hq, hkv, d, dt, longest in LAYOUTS:
        cb.set_shape(f"{hq},{hkv},{d}", dt)
        for L in [x for x in lengths if x <= longest]:
            tag = f"{hq}/{hkv}/{d} {dt} L {L}"
            q, k, v = cb.make_inputs(L, L, seed=a.seed)
            # prefill, and its selection
            lay = make_layout([L], [L])
            sst, topk, B = select(q, k, lay)
            sel = (topk, B) if status_class(f"{tag} select_blocks", sst) is None else None
            st, out, lse = attention(q, k, v, lay, SPARSE)
            rows = [(t, 0, t) for t in (L - 1, L - 1 - L // 3, L // 2, 100)]
            check_rows(f"{tag} prefill", st, out, lse, q, k, v, rows, sel=sel)
            del out, lse, topk, sel
            if L <= (1 << 17):
                st, out, lse = attention(q, k, v, lay, DENSE)
                check_rows(f"{tag} dense", st, out, lse, q, k, v, [(L - 1, 0, L - 1), (L // 2, 0, L // 2)], dense=True)
                del out, lse
            # few queries: the last 40
            F = 40
            qf = q[L - F:].contiguous()
            lay = make_layout([F], [L])
            sst, topk, B = select(qf, k, lay)
            sel = (topk, B) if status_class(f"{tag} few select_blocks", sst) is None else None
            st, out, lse = attention(qf, k, v, lay, SPARSE)
            check_rows(f"{tag} few ({F} queries)", st, out, lse, qf, k, v, [(F - 1, 0, L - 1), (0, 0, L - F)], sel=sel)
            # decode: 3 sequences, a query each, on prefixes of the same keys laid one after another
            lks = [L, L // 2 + 1, L // 3 + 7]
            kd = torch.cat([k[:n] for n in lks]).contiguous()
            vd = torch.cat([v[:n] for n in lks]).contiguous()
            qd = torch.stack([q[n - 1] for n in lks]).contiguous()
            lay = make_layout([1, 1, 1], lks)
            sst, topk, B = select(qd, kd, lay)
            sel = (topk, B) if status_class(f"{tag} decode select_blocks", sst) is None else None
            st, out, lse = attention(qd, kd, vd, lay, SPARSE)
            k0s = [0, lks[0], lks[0] + lks[1]]
            check_rows(f"{tag} decode (3 sequences)", st, out, lse, qd, kd, vd,
                       [(i, k0s[i], lks[i] - 1) for i in range(3)], sel=sel)
            del kd, vd, qd
            # the decode cache against the same calls stateless
            p = cb.params(lib, SPARSE)
            cache = C.c_void_p()
            st = lib.infllm_cache_create(C.byref(p), cb.DT, cb.HKV, cb.D, L, C.byref(cache))
            if status_class(f"{tag} cache_create", st) is None:
                wsb = C.c_size_t(0)
                st = lib.infllm_cache_workspace_size(cache, C.byref(p), 5, cb.HQ, C.byref(wsb))
                if status_class(f"{tag} cache workspace", st) is None:
                    ws = torch.empty(max(wsb.value, 1), dtype=torch.uint8, device="cuda")
                    p.workspace, p.workspace_bytes = ws.data_ptr(), wsb.value
                    rowb = cb.HKV * cb.D * 2
                    st = lib.infllm_cache_append(cache, k.data_ptr(), v.data_ptr(), L - 1)
                    if not st:
                        st = lib.infllm_cache_append(cache, k.data_ptr() + (L - 1) * rowb, v.data_ptr() + (L - 1) * rowb, 1)
                    if status_class(f"{tag} cache append", st) is None:
                        for n in (1, 5):
                            co = torch.full_like(q[:n], float("nan"))
                            cl = torch.full((n, cb.HQ), float("nan"), dtype=torch.float32, device="cuda")
                            qn = q[L - n:].contiguous()
                            def attend():
                                return lib.infllm_cache_attend(cache, C.byref(p), qn.data_ptr(), n, cb.HQ, co.data_ptr(),
                                                               cl.data_ptr())
                            st = attend()
                            torch.cuda.synchronize()
                            what = f"{tag} cache attend of {n}"
                            if status_class(what, st):
                                continue
                            # which kernels took it: the decode cache's (k_cd_*) or, where their shared memory
                            # does not fit the device, the shared few-query ones
                            names = sorted({x.split()[-1] for x in cb.kernel_times(attend, reps=1)})
                            path = ("the decode cache's kernels" if any(x.startswith("k_cd_") for x in names) else
                                    "the shared kernels") + f" ({', '.join(names) or 'none profiled'})"
                            st2, so, sl = attention(qn, k, v, make_layout([n], [L]), SPARSE)
                            if status_class(f"{what}, stateless", st2):
                                continue
                            fin = bool(torch.isfinite(co).all().item()) and bool(torch.isfinite(cl).all().item())
                            diff = ((co.float() - so.float()).abs().max() / so.float().abs().max().clamp_min(1e-30)).item()
                            verdict(what, fin and diff <= 4 * unit(),
                                    f"on {path}, {'finite' if fin else 'NON-FINITE'}, against the stateless call "
                                    f"{'bitwise equal' if torch.equal(co, so) else f'{diff / unit():.2f} units'}")
                lib.infllm_cache_free(cache)
            del q, k, v
            torch.cuda.empty_cache()
    print(f"emulate_check {a.profile}: {len(refusals)} calls refused on this device's limits")
    print(f"emulate_check {a.profile}: " + ("all passed" if not failures else f"FAILED ({', '.join(failures)})"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
