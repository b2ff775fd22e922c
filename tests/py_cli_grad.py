#!/usr/bin/env python3
"""`infllm attn --dout ... --grad-dir DIR`: the attention backward from the command line, against a
float64 numpy backward of the same attention (dense causal, and sparse with the blocks the command's
own --dump reports), on the CPU and REF devices, f32 and bf16; then its error paths.

argv[1] is the infllm binary.
"""
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_counter import Counter, need_modules  # noqa: E402

(np,) = need_modules("numpy")

INFLLM = sys.argv[1]
c = Counter("py_cli_grad")
check = c.check


def run(*args):
    return subprocess.run([INFLLM, "attn", *args], capture_output=True, text=True, timeout=600)


def bf16_bits(x):
    """float32 -> bf16 bits (round to nearest even), as uint16"""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def bf16_float(b):
    return (b.astype(np.uint32) << 16).view(np.float32)


def reference(q, k, v, dout, allowed):
    """float64 forward and backward of one sequence: q [T, Hq, D], k / v [T, Hkv, D], allowed [Hkv, T, T]
    (query, key); returns dq, dk, dv"""
    T, Hq, D = q.shape
    Hkv = k.shape[1]
    G = Hq // Hkv
    scale = 1.0 / np.sqrt(D)
    dq = np.zeros_like(q)
    dk = np.zeros_like(k)
    dv = np.zeros_like(v)
    for h in range(Hq):
        g = h // G
        s = scale * q[:, h, :] @ k[:, g, :].T
        s = np.where(allowed[g], s, -np.inf)
        p = np.exp(s - s.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        o = p @ v[:, g, :]
        dp = dout[:, h, :] @ v[:, g, :].T
        delta = (dout[:, h, :] * o).sum(axis=1, keepdims=True)
        ds = p * (dp - delta)
        dq[:, h, :] = scale * ds @ k[:, g, :]
        dk[:, g, :] += scale * ds.T @ q[:, h, :]
        dv[:, g, :] += p.T @ dout[:, h, :]
    return dq, dk, dv


def rel_err(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


rng = np.random.default_rng(5)
T, Hq, Hkv, D = 96, 4, 2, 32
q = rng.standard_normal((T, Hq, D)).astype(np.float32)
k = rng.standard_normal((T, Hkv, D)).astype(np.float32)
v = rng.standard_normal((T, Hkv, D)).astype(np.float32)
dout = rng.standard_normal((T, Hq, D)).astype(np.float32)
causal = np.tril(np.ones((T, T), dtype=bool))
SPARSE = ["--mode", "sparse", "--block-size", "16", "--topk", "2", "--local-blocks", "1"]

with tempfile.TemporaryDirectory() as tmp:
    f = {n: os.path.join(tmp, n + ".npy") for n in ("q", "k", "v", "dout")}
    for n, a in (("q", q), ("k", k), ("v", v), ("dout", dout)):
        np.save(f[n], a)
    base = ["--q", f["q"], "--k", f["k"], "--v", f["v"], "--dout", f["dout"]]

    # dense, f32, cpu and ref
    want = reference(q.astype(np.float64), k.astype(np.float64), v.astype(np.float64), dout.astype(np.float64),
                     np.broadcast_to(causal, (Hkv, T, T)))
    for dev, tol in (("cpu", 2e-5), ("ref", 1e-6)):
        g = os.path.join(tmp, "dense-" + dev)
        p = run(*base, "--mode", "dense", "--device", dev, "--grad-dir", g)
        check(p.returncode == 0, f"dense --device {dev}: exit {p.returncode}: {p.stderr[-300:]}")
        check("dense backward" in p.stdout, f"dense --device {dev}: the summary names the backward: {p.stdout!r}")
        for name, w in zip(("dq", "dk", "dv"), want):
            path = os.path.join(g, name + ".npy")
            if not os.path.exists(path):
                check(False, f"dense --device {dev}: {path} missing")
                continue
            got = np.load(path)
            check(got.dtype == np.float32 and got.shape == w.shape, f"dense {dev} {name}: {got.dtype} {got.shape}")
            e = rel_err(got.astype(np.float64), w)
            check(e < tol, f"dense --device {dev} {name}: relative error {e:.3g} >= {tol}")

    # sparse, f32: the mask from the blocks the command reports (--dump DIR/topk_idx.npy)
    for dev, tol in (("cpu", 2e-5), ("ref", 1e-6)):
        g = os.path.join(tmp, "sparse-" + dev)
        dump = os.path.join(tmp, "dump-" + dev)
        p = run(*base, *SPARSE, "--device", dev, "--grad-dir", g, "--dump", dump)
        check(p.returncode == 0, f"sparse --device {dev}: exit {p.returncode}: {p.stderr[-300:]}")
        topk = np.load(os.path.join(dump, "topk_idx.npy"))  # [Hkv, T, K]
        allowed = np.zeros((Hkv, T, T), dtype=bool)
        for gh in range(Hkv):
            for i in range(T):
                for b in topk[gh, i]:
                    if b >= 0:
                        allowed[gh, i, 16 * b:16 * b + 16] = True
        allowed &= causal
        check(allowed.sum() < Hkv * causal.sum(), "the sparse case attends fewer keys than dense")
        want = reference(q.astype(np.float64), k.astype(np.float64), v.astype(np.float64), dout.astype(np.float64),
                         allowed)
        check("sparse backward" in p.stdout, f"sparse --device {dev}: the summary names the backward: {p.stdout!r}")
        for name, w in zip(("dq", "dk", "dv"), want):
            got = np.load(os.path.join(g, name + ".npy"))
            e = rel_err(got.astype(np.float64), w)
            check(e < tol, f"sparse --device {dev} {name}: relative error {e:.3g} >= {tol}")

    # bf16 (raw bits in <u2 .bf16.npy files): gradients rounded to bf16, within a few bf16 ulps
    fb = {n: os.path.join(tmp, n + ".bf16.npy") for n in ("q", "k", "v", "dout")}
    arrs = {n: bf16_bits(a) for n, a in (("q", q), ("k", k), ("v", v), ("dout", dout))}
    for n in fb:
        np.save(fb[n], arrs[n])
    g = os.path.join(tmp, "bf16")
    p = run("--q", fb["q"], "--k", fb["k"], "--v", fb["v"], "--dout", fb["dout"], "--mode", "dense", "--grad-dir", g)
    check(p.returncode == 0, f"bf16: exit {p.returncode}: {p.stderr[-300:]}")
    want = reference(*(bf16_float(arrs[n]).astype(np.float64) for n in ("q", "k", "v", "dout")),
                     np.broadcast_to(causal, (Hkv, T, T)))
    for name, w in zip(("dq", "dk", "dv"), want):
        path = os.path.join(g, name + ".bf16.npy")
        got = np.load(path) if os.path.exists(path) else None
        check(got is not None and got.dtype == np.uint16, f"bf16 {name}: {path} as uint16")
        if got is not None:
            e = rel_err(bf16_float(got).astype(np.float64), w)
            check(e < 2 ** -7, f"bf16 {name}: relative error {e:.3g}")

    # error paths: a message naming the problem, a non-zero exit, no gradient files
    bad = os.path.join(tmp, "bad")
    np.save(os.path.join(tmp, "short.npy"), dout[:10])
    np.save(os.path.join(tmp, "f64.npy"), dout.astype(np.float64))
    for args, code, what in (
        ([*base], 2, "--grad-dir"),
        (["--q", f["q"], "--k", f["k"], "--v", f["v"], "--grad-dir", bad], 2, "--dout"),
        (["--q", f["q"], "--k", f["k"], "--v", f["v"], "--dout", os.path.join(tmp, "short.npy"), "--grad-dir", bad],
         1, "like the output"),
        (["--q", f["q"], "--k", f["k"], "--v", f["v"], "--dout", os.path.join(tmp, "f64.npy"), "--grad-dir", bad],
         1, "dtype"),
        (["--q", f["q"], "--k", f["k"], "--v", f["v"], "--dout", os.path.join(tmp, "nosuch.npy"), "--grad-dir", bad],
         1, "nosuch.npy"),
    ):
        p = run(*args)
        check(p.returncode == code and what in p.stderr,
              f"{args[-4:]}: exit {p.returncode} (want {code}), stderr {p.stderr[-200:]!r} (want '{what}')")
        check(not os.path.exists(os.path.join(bad, "dq.npy")), f"{args[-4:]}: no dq.npy after an error")
    # --device cuda on these f32 D 32 inputs: refused with a message about CUDA (no device here, or f32 / head_dim 32
    # unsupported on a GPU machine), exit 1, no gradient files (until session 40 the backward was refused on CUDA)
    p = run(*base, "--grad-dir", bad, "--device", "cuda")
    check(p.returncode == 1 and "cuda" in p.stderr.lower(), f"--device cuda f32: exit {p.returncode}, {p.stderr[-200:]!r}")
    check(not os.path.exists(os.path.join(bad, "dq.npy")), "--device cuda f32: no dq.npy after an error")
    # a FIFO (no writer) as --dout or --q: opening it blocked forever (the reader seeks, so no pipe could be read
    # anyway); refused as not a regular file, exit 1, no gradient files
    if hasattr(os, "mkfifo"):
        fifo = os.path.join(tmp, "fifo.npy")
        os.mkfifo(fifo)
        for flag in ("--dout", "--q"):
            args = ["--q", f["q"], "--k", f["k"], "--v", f["v"], "--dout", f["dout"], "--grad-dir", bad]
            args[args.index(flag) + 1] = fifo
            try:
                p = subprocess.run([INFLLM, "attn", *args], capture_output=True, text=True, timeout=30)
                check(p.returncode == 1 and "regular file" in p.stderr and fifo in p.stderr,
                      f"{flag} FIFO: exit {p.returncode} (want 1), stderr {p.stderr[-200:]!r} (want 'regular file')")
            except subprocess.TimeoutExpired:
                check(False, f"{flag} FIFO: hung (killed after 30 s)")
            check(not os.path.exists(os.path.join(bad, "dq.npy")), f"{flag} FIFO: no dq.npy after an error")

    # the CUDA backward (bf16, head_dim 64), dense and sparse, against float64 on the bf16-rounded inputs; SKIP
    # without a GPU
    D2 = 64
    q2, k2, v2, o2 = (bf16_bits(rng.standard_normal((T, H, D2)).astype(np.float32)) for H in (Hq, Hkv, Hkv, Hq))
    f2 = {n: os.path.join(tmp, n + "64.bf16.npy") for n in ("q", "k", "v", "dout")}
    for n, a in zip(("q", "k", "v", "dout"), (q2, k2, v2, o2)):
        np.save(f2[n], a)
    base2 = ["--q", f2["q"], "--k", f2["k"], "--v", f2["v"], "--dout", f2["dout"], "--device", "cuda"]
    probe = run(*base2, "--mode", "dense", "--grad-dir", os.path.join(tmp, "cuda-probe"))
    if probe.returncode != 0 and ("no CUDA device" in probe.stderr or "without CUDA" in probe.stderr):
        print(f"SKIP the CUDA backward checks: {probe.stderr.strip()[-120:]}")
    else:
        ins = [bf16_float(a).astype(np.float64) for a in (q2, k2, v2, o2)]
        for mode in ("dense", "sparse"):
            g = os.path.join(tmp, "cuda-" + mode)
            dump = os.path.join(tmp, "cuda-dump-" + mode)
            extra = SPARSE + ["--dump", dump] if mode == "sparse" else ["--mode", "dense"]
            p = run(*base2, *extra, "--grad-dir", g)
            check(p.returncode == 0, f"cuda {mode}: exit {p.returncode}: {p.stderr[-300:]}")
            if p.returncode:
                continue
            allowed = np.broadcast_to(causal, (Hkv, T, T))
            if mode == "sparse":
                topk = np.load(os.path.join(dump, "topk_idx.npy"))
                allowed = np.zeros((Hkv, T, T), dtype=bool)
                for gh in range(Hkv):
                    for i in range(T):
                        for b in topk[gh, i]:
                            if b >= 0:
                                allowed[gh, i, 16 * b:16 * b + 16] = True
                allowed &= causal
            want = reference(*ins, allowed)
            for name, w in zip(("dq", "dk", "dv"), want):
                got = np.load(os.path.join(g, name + ".bf16.npy"))
                e = rel_err(bf16_float(got).astype(np.float64), w)
                # bf16 intermediates (P, dS) and the rounded result: a few bf16 ulps of the largest value
                check(e < 2 ** -6, f"cuda {mode} {name}: relative error {e:.3g}")

    # an input named like one of the --grad-dir / --dump outputs was refused only when that file's turn came: dq.npy
    # (or c1.npy ... of --dump) had been written by then; and --out DIR/dq.npy was silently replaced by the gradient.
    # Every output path is now checked before anything is written: exit 2, nothing new in the folder
    qo = os.path.join(tmp, "qo")
    os.makedirs(qo)
    np.save(os.path.join(qo, "out.npy"), q)
    od = os.path.join(tmp, "od")
    os.makedirs(od)
    ki = os.path.join(tmp, "ki")
    os.makedirs(ki)
    np.save(os.path.join(ki, "dk.npy"), k)
    for args, what, folder in (
        (["--q", f["q"], "--k", os.path.join(ki, "dk.npy"), "--v", f["v"], "--dout", f["dout"], "--grad-dir", ki],
         "--k input", ki),  # dq.npy was written, then dk.npy refused
        (["--q", os.path.join(qo, "out.npy"), "--k", f["k"], "--v", f["v"], *SPARSE, "--dump", qo], "--q input", qo),
        ([*base, "--grad-dir", od, "--out", os.path.join(od, "dk.npy")], "--out", od),
    ):
        before = sorted(os.listdir(folder))
        p = run(*args)
        check(p.returncode == 2 and what in p.stderr and sorted(os.listdir(folder)) == before,
              f"{' '.join(os.path.basename(a) for a in args[-4:])}: exit {p.returncode} (want 2), nothing written "
              f"({sorted(set(os.listdir(folder)) - set(before))} new), stderr {p.stderr[-160:]!r} (want '{what}')")
    # the same with a --grad-dir / --dump folder the command creates: --out NEW/dq.npy (or NEW/lse.npy) was taken for
    # a path outside the folder (it did not exist when checked), so --out was written and then silently replaced by
    # the gradient (or the dump's lse), exit 0
    for flag, name, extra in (("--grad-dir", "dq.npy", []), ("--dump", "lse.npy", SPARSE),
                              ("--grad-dir", "dv.npy", ["--dump", os.path.join(tmp, "new-dump")])):
        new = os.path.join(tmp, "new-" + name)
        args = [*base, "--grad-dir", os.path.join(tmp, "new-grads")] if flag == "--dump" else list(base)
        p = run(*args, *extra, flag, new + "/", "--out", os.path.join(new, name))
        check(p.returncode == 2 and "--out" in p.stderr and not os.path.exists(os.path.join(new, name)),
              f"--out {name} in a new {flag} folder: exit {p.returncode} (want 2), stderr {p.stderr[-160:]!r}, "
              f"{name} {'written' if os.path.exists(os.path.join(new, name)) else 'not written'}")
    # a --grad-dir / --dump that names a file (an input here) or nothing: refused before the work with a message
    # naming the option (it ran the forward, wrote --out, then failed on "q.npy/dq.npy.tmp.N: cannot create")
    for flag, val, extra in (("--grad-dir", f["q"], []), ("--dump", f["k"], ["--grad-dir", bad]), ("--grad-dir", "", []),
                             ("--dump", "", ["--grad-dir", bad])):
        outp = os.path.join(tmp, "early-out.npy")
        if os.path.exists(outp):
            os.remove(outp)
        p = run(*base, *extra, flag, val, "--out", outp)
        check(p.returncode == 2 and flag in p.stderr and not os.path.exists(outp),
              f"{flag} '{os.path.basename(val)}': exit {p.returncode} (want 2), stderr {p.stderr[-160:]!r}, --out "
              f"{'written' if os.path.exists(outp) else 'not written'}")
    check(np.array_equal(np.load(f["q"]), q) and np.array_equal(np.load(f["k"]), k), "the inputs named as folders intact")
    # an --out beside (not in) a new folder is fine
    p = run(*base, "--grad-dir", os.path.join(tmp, "new-g2"), "--out", os.path.join(tmp, "dq.npy"))
    check(p.returncode == 0, f"--out beside a new --grad-dir: exit {p.returncode}: {p.stderr[-200:]}")
    # a batch with one dense and one sparse sequence under --mode auto: one mode a call
    cu = os.path.join(tmp, "cu.npy")
    np.save(cu, np.array([0, 40, 96], dtype=np.int32))
    p = run(*base, "--cu-seqlens", cu, "--dense-len", "50", "--grad-dir", bad)
    check(p.returncode != 0 and "one mode" in p.stderr, f"mixed batch: exit {p.returncode}, {p.stderr[-200:]!r}")
    # the same batch with --mode sparse works (two sequences, varlen)
    p = run(*base, "--cu-seqlens", cu, *SPARSE, "--grad-dir", os.path.join(tmp, "varlen"))
    check(p.returncode == 0 and os.path.exists(os.path.join(tmp, "varlen", "dk.npy")),
          f"varlen sparse: exit {p.returncode}: {p.stderr[-200:]}")

c.finish()
