#!/usr/bin/env python3
"""End-to-end tests of `infllm attn` and `infllm --version`.

argv[1] is the infllm binary. Runs every case folder of the golden data (INFLLM_GOLDEN_DIR or
../shared/golden beside the repo) through the command with --dump and checks the dumped
files against the golden ones (layouts exactly, values at the level the golden README asks),
then checks the error paths: malformed, truncated and mistyped .npy files, bad shapes and
flags must give a clear message naming the problem and a non-zero exit, and never a crash or
a partial output file.
"""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_counter import need_modules  # noqa: E402

(np,) = need_modules("numpy")

INFLLM = sys.argv[1]
HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.environ.get("INFLLM_GOLDEN_DIR", os.path.join(HERE, "..", "..", "shared", "golden"))

passed = 0
failed = 0


def check(cond, msg):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL:", msg, file=sys.stderr)


def run(args, expect_ok=True):
    r = subprocess.run([INFLLM] + args, capture_output=True, text=True, timeout=900)
    if expect_ok and r.returncode != 0:
        print("command failed:", " ".join(args), "\n", r.stdout, r.stderr, file=sys.stderr)
    return r


def bf16_to_f32(a):
    return (a.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(x):
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def rel_fro(a, b):
    return float(np.linalg.norm((a - b).ravel()) / max(np.linalg.norm(b.ravel()), 1e-30))


# ------------------------------------------------------------------ version --
r = run(["--version"])
check(r.returncode == 0, "--version exits 0")
for key in ("infllm ", "commit:", "simd:", "llama.cpp numerics:", "quantized products:", "threads:", "cuda:"):
    check(key in r.stdout, f"--version prints {key!r}: {r.stdout!r}")
# the llama.cpp build whose bits the model's dense f16 attention computes: INFLLM_LLAMA_ORDER names it
for want, says in (("avx2", "its AVX2 build's"), ("avx512", "its AVX-512 build's")):
    rv = subprocess.run([INFLLM, "--version"], capture_output=True, text=True, env={**os.environ, "INFLLM_LLAMA_ORDER": want})
    check(rv.returncode == 0 and f"llama.cpp numerics: {says}" in rv.stdout,
          f"--version under INFLLM_LLAMA_ORDER={want} says {says!r}: {rv.stdout!r}")

# the quantized products' kernels: INFLLM_SIMD=scalar keeps them portable, INFLLM_QUANT_AMX=0 off the AMX-INT8 tiles
# (and INFLLM_AVXVNNI=0 under INFLLM_SIMD=avx2 off the AVX-VNNI tiles)
for env, want, bad in ((("INFLLM_SIMD", "scalar"),), "quantized products: scalar", None), \
                      ((("INFLLM_QUANT_AMX", "0"),), "quantized products: ", "amx"), \
                      ((("INFLLM_SIMD", "avx2"), ("INFLLM_AVXVNNI", "0")), "quantized products: ", "vnni"):
    rv = subprocess.run([INFLLM, "--version"], capture_output=True, text=True, env={**os.environ, **dict(env)})
    line = next((l for l in rv.stdout.splitlines() if l.startswith("quantized products:")), "")
    check(rv.returncode == 0 and line.startswith(want) and (bad is None or bad not in line),
          f"--version under {dict(env)}: {line!r}")

# ------------------------------------------------------------------- golden --
cases = []
if os.path.isdir(GOLDEN):
    cases = sorted(d for d in os.listdir(GOLDEN) if os.path.isfile(os.path.join(GOLDEN, d, "case.json")))
if not cases:
    if os.environ.get("CI") == "true":
        check(False, f"golden data not found at {GOLDEN}")
    else:
        print(f"SKIP golden checks: no cases under {GOLDEN}")

for name in cases:
    cdir = os.path.join(GOLDEN, name)
    case = json.load(open(os.path.join(cdir, "case.json")))
    prm = case["params"]
    ld = lambda f: np.load(os.path.join(cdir, f))
    topk_total = int(prm["topk_total"])
    local = int(prm["local_blocks"])
    args = ["attn", "--q", os.path.join(cdir, "q.bf16.npy"), "--k", os.path.join(cdir, "k.bf16.npy"),
            "--v", os.path.join(cdir, "v.bf16.npy"),
            "--cu-seqlens", os.path.join(cdir, "cu_seqlens_k.npy"),
            "--cu-seqlens-q", os.path.join(cdir, "cu_seqlens_q.npy"),
            "--block-size", str(prm["block_size"]), "--kernel-size", str(prm["c1_kernel_size"]),
            "--kernel-stride", str(prm["c1_kernel_stride"]), "--init-blocks", str(prm["init_blocks"]),
            "--local-blocks", str(local), "--topk", str(topk_total - local), "--dense-len", "-1",
            "--scale", repr(float(prm["softmax_scale"]))]
    with tempfile.TemporaryDirectory() as tmp:
        dump = os.path.join(tmp, "dump")
        r = run(args + ["--dump", dump, "--out", os.path.join(tmp, "o.bf16.npy")])
        check(r.returncode == 0, f"{name}: infllm attn --dump exits 0 ({r.stderr.strip()})")
        if r.returncode != 0:
            continue
        for f in ("c1.bf16.npy", "c2.bf16.npy", "stage1_scores.npy", "block_scores.npy", "topk_idx.npy",
                  "out.bf16.npy", "lse.npy"):
            check(os.path.exists(os.path.join(dump, f)), f"{name}: --dump wrote {f}")
        mine = lambda f: np.load(os.path.join(dump, f))
        # layouts: the same dtype and shape as the golden files
        for f in ("c1.bf16.npy", "c2.bf16.npy", "stage1_scores.npy", "block_scores.npy", "topk_idx.npy",
                  "out.bf16.npy"):
            a, b = mine(f), ld(f)
            check(a.dtype == b.dtype and a.shape == b.shape,
                  f"{name}: {f} layout {a.dtype}{a.shape} vs golden {b.dtype}{b.shape}")
        lse_ref = ld("stage2_lse_ref.npy")
        check(mine("lse.npy").shape == lse_ref.shape and mine("lse.npy").dtype == np.float32, f"{name}: lse layout")
        check(np.array_equal(mine("out.bf16.npy"), np.load(os.path.join(tmp, "o.bf16.npy"))),
              f"{name}: --out equals the dumped out")
        # c1/c2: exact up to a very rare last bit (golden README)
        for f in ("c1.bf16.npy", "c2.bf16.npy"):
            a, b = mine(f), ld(f)
            if a.shape == b.shape:
                diff = np.abs(a.astype(np.int32) - b.astype(np.int32))
                check(diff.max() <= 1 and (diff > 0).mean() < 1e-3, f"{name}: {f} matches golden")
        # top-k: identical sets on >= 99% of (token, kv head) rows
        a, b = mine("topk_idx.npy"), ld("topk_idx.npy")
        if a.shape == b.shape:
            same = np.all(np.sort(a, axis=-1) == np.sort(b, axis=-1), axis=-1)
            check(same.mean() >= 0.99, f"{name}: top-k rows identical {same.mean():.4f} >= 0.99")
        # stage 2: error vs float64 reference within 2x the official kernel's own error
        rows = ld("ref_rows.npy")
        ref = ld("stage2_ref.npy").astype(np.float64)
        out = bf16_to_f32(mine("out.bf16.npy"))[rows].astype(np.float64)
        off = bf16_to_f32(ld("out.bf16.npy"))[rows].astype(np.float64)
        official = case["checks"]["stage2_official_vs_float64_ref"]["rel_err_fro"]
        e_mine, e_off = rel_fro(out, ref), rel_fro(off, ref)
        check(e_mine <= 2 * max(official, e_off), f"{name}: stage-2 rel error {e_mine:.3e} <= 2 x {official:.3e}")
        lse = mine("lse.npy").astype(np.float64)
        check(np.abs(lse - lse_ref).max() < 2e-2, f"{name}: lse within 2e-2 of the float64 lse "
                                                  f"(max diff {np.abs(lse - lse_ref).max():.3e})")
        print(f"{name}: stage-2 rel err {e_mine:.3e} (official {official:.3e}), "
              f"top-k identical rows {same.mean() * 100:.2f}%")

# ------------------------------------------------- a random case vs --device ref --
rng = np.random.default_rng(7)
with tempfile.TemporaryDirectory() as tmp:
    T, Hq, Hkv, D = 700, 6, 2, 64
    q = rng.standard_normal((T, Hq, D), dtype=np.float32)
    k = rng.standard_normal((T, Hkv, D), dtype=np.float32)
    v = rng.standard_normal((T, Hkv, D), dtype=np.float32)
    for n, a in (("q", q), ("k", k), ("v", v)):
        np.save(os.path.join(tmp, n + ".npy"), a)
        np.save(os.path.join(tmp, n + ".bf16.npy"), f32_to_bf16(a))
        np.save(os.path.join(tmp, n + ".f16.npy"), a.astype(np.float16))
    np.save(os.path.join(tmp, "cu.npy"), np.array([0, 300, 700], dtype=np.int32))
    common = ["--topk", "3", "--local-blocks", "1", "--dense-len", "-1"]
    for suffix, tol in ((".npy", 1e-5), (".bf16.npy", 2e-2), (".f16.npy", 3e-3)):
        files = ["--q", os.path.join(tmp, "q" + suffix), "--k", os.path.join(tmp, "k" + suffix),
                 "--v", os.path.join(tmp, "v" + suffix), "--cu-seqlens", os.path.join(tmp, "cu.npy")]
        for extra in ([], ["--cache-len", "250"], ["--exact-lse"], ["--window", "100"]):
            outs = {}
            for dev in ("cpu", "ref"):
                o = os.path.join(tmp, f"o_{dev}{suffix}")
                r = run(["attn"] + files + common + extra + ["--device", dev, "--out", o, "--quiet"])
                check(r.returncode == 0, f"attn {suffix} {extra} on {dev}: {r.stderr.strip()}")
                if r.returncode == 0:
                    a = np.load(o)
                    outs[dev] = bf16_to_f32(a) if suffix == ".bf16.npy" else a.astype(np.float32)
            if len(outs) == 2:
                expect_rows = T if not extra or extra[0] != "--cache-len" else (300 - 250) + (400 - 250)
                check(outs["cpu"].shape == (expect_rows, Hq, D), f"output rows {outs['cpu'].shape}")
                err = rel_fro(outs["cpu"].astype(np.float64), outs["ref"].astype(np.float64))
                check(err < tol, f"cpu vs ref {suffix} {extra}: rel err {err:.2e} < {tol}")
                if not extra:
                    plain = outs["cpu"]
                elif extra[0] == "--window":  # the option reaches the library: not the plain result
                    d = rel_fro(outs["cpu"].astype(np.float64), plain.astype(np.float64))
                    check(d > 1e-2, f"{suffix} --window 100 changes the output (rel {d:.2e} from none)")

    # ------------------------------------------------------------ bad input --
    good = ["--q", os.path.join(tmp, "q.npy"), "--k", os.path.join(tmp, "k.npy"), "--v", os.path.join(tmp, "v.npy")]
    raw = open(os.path.join(tmp, "q.npy"), "rb").read()
    bad_files = {
        "truncated.npy": raw[: len(raw) // 2],
        "badmagic.npy": b"NOTNUMPY" + raw[8:],
        "shortheader.npy": raw[:9],
        "empty.npy": b"",
    }
    # the shape tuple's grammar: dimensions without a separating comma were read as a 3-d shape
    qarr = np.load(os.path.join(tmp, "q.npy"))
    for fname, shape_text in (("nocomma.npy", "(%d %d %d)" % qarr.shape), ("twocommas.npy", "(%d,, %d, %d)" % qarr.shape),
                              ("leadcomma.npy", "(, %d, %d, %d)" % qarr.shape)):
        hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': %s, }" % shape_text
        hdr += " " * (63 - (10 + len(hdr)) % 64) + "\n"
        bad_files[fname] = b"\x93NUMPY\x01\x00" + len(hdr).to_bytes(2, "little") + hdr.encode() + qarr.tobytes()
    for fname, data in bad_files.items():
        path = os.path.join(tmp, fname)
        open(path, "wb").write(data)
        r = run(["attn", "--q", path] + good[2:], expect_ok=False)
        check(r.returncode not in (0,) and r.returncode > 0, f"{fname}: non-zero exit, no crash ({r.returncode})")
        check(fname in r.stderr, f"{fname}: the message names the file: {r.stderr.strip()!r}")
    np.save(os.path.join(tmp, "qi.npy"), np.zeros((T, Hq, D), dtype=np.int32))
    np.save(os.path.join(tmp, "q5.npy"), rng.standard_normal((T, 5, D), dtype=np.float32))
    np.save(os.path.join(tmp, "q2d.npy"), rng.standard_normal((T, Hq * D), dtype=np.float32))
    np.save(os.path.join(tmp, "qd.npy"), rng.standard_normal((T, Hq, 48), dtype=np.float32))
    np.save(os.path.join(tmp, "cu_bad.npy"), np.array([0, 500, 400, 700], dtype=np.int32))
    np.save(os.path.join(tmp, "cu_end.npy"), np.array([0, 300, 600], dtype=np.int32))
    np.save(os.path.join(tmp, "cu_f.npy"), np.array([0, 300, 700], dtype=np.float32))
    # one query a sequence (q of B rows) where a sequence has no keys: once blamed --cache-len -1, never given
    np.save(os.path.join(tmp, "q_two.npy"), rng.standard_normal((2, Hq, D), dtype=np.float32))
    np.save(os.path.join(tmp, "cu_empty.npy"), np.array([0, 0, T], dtype=np.int32))
    # an empty array may name any dimension: heads past int32 were truncated into another shape (2^32 + 2 -> 2)
    for n in ("qh", "kh", "vh"):
        np.save(os.path.join(tmp, n + ".npy"), np.zeros((0, 2**32 + 2, D), dtype=np.float32))
    cases_bad = [
        ([a for n in "qkv" for a in ("--" + n, os.path.join(tmp, n + "h.npy"))], "above 2147483647"),
        (["--q", os.path.join(tmp, "qi.npy")] + good[2:], "qi.npy"),
        (["--q", os.path.join(tmp, "q5.npy")] + good[2:], "multiple"),
        (["--q", os.path.join(tmp, "q2d.npy")] + good[2:], "q2d.npy"),
        (["--q", os.path.join(tmp, "qd.npy")] + good[2:], "head_dim"),
        (["--q", os.path.join(tmp, "q.bf16.npy")] + good[2:], "dtype"),
        (good + ["--cu-seqlens", os.path.join(tmp, "cu_bad.npy")], "cu_bad.npy"),
        (good + ["--cu-seqlens", os.path.join(tmp, "cu_end.npy")], "cu_end.npy"),
        (good + ["--cu-seqlens", os.path.join(tmp, "cu_f.npy")], "cu_f.npy"),
        (["--q", os.path.join(tmp, "q_two.npy")] + good[2:] + ["--cu-seqlens", os.path.join(tmp, "cu_empty.npy")],
         "has no keys"),
        (good + ["--block-size", "40"], "multiple of kernel_stride"),
        (good + ["--cache-len", "800"], "cache-len"),
        # a negative --cache-len was taken for "not given" and the run went ahead as a prefill (exit 0)
        (good + ["--cache-len", "-5"], "--cache-len must be >= 0"),
        (good + ["--cache-len", "-1"], "--cache-len must be >= 0"),
        (good + ["--mode", "fast"], "--mode"),
        # a float option past float32's range read as "expects a number"; 1e-50 underflowed to 0, the default scale
        (good + ["--scale", "1e39"], "outside float32's finite range"),
        (good + ["--scale", "1e-50"], "outside float32's finite range"),
        (good + ["--scale", "x1"], "expects a number"),
        (good + ["--device", "tpu"], "--device"),
        (["--k", os.path.join(tmp, "k.npy")], "required"),
        (good + ["--q", os.path.join(tmp, "missing.npy")], "missing.npy"),
        # a directory and an empty file both said "not a .npy file (bad magic)"
        (good + ["--q", tmp], "Is a directory"),
        (good + ["--q", os.path.join(tmp, "empty.npy")], "0 bytes"),
    ]
    open(os.path.join(tmp, "empty.npy"), "wb").close()
    for args, needle in cases_bad:
        r = run(["attn"] + args, expect_ok=False)
        check(r.returncode > 0, f"bad input {needle}: non-zero exit ({r.returncode})")
        check(needle in r.stderr, f"bad input {needle}: message mentions it: {r.stderr.strip()!r}")
    r = run(["attn", "--bogus"] + good, expect_ok=False)
    check(r.returncode == 2 and "unknown option" in r.stderr, "unknown flag: usage and exit 2")
    r = run(["attn", "--help"])
    check(r.returncode == 0 and "--cache-len" in r.stdout and "--dump" in r.stdout, "--help lists the options")
    # a failing run never leaves a partial output file, and never clobbers an existing one
    keep = os.path.join(tmp, "keep.npy")
    open(keep, "wb").write(b"precious")
    r = run(["attn", "--q", os.path.join(tmp, "qi.npy")] + good[2:] + ["--out", keep], expect_ok=False)
    check(r.returncode > 0 and open(keep, "rb").read() == b"precious", "failed run leaves --out untouched")
    r = run(["attn"] + good + ["--out", os.path.join(tmp, "nodir", "o.npy")], expect_ok=False)
    check(r.returncode > 0 and "nodir" in r.stderr, "unwritable --out: clear error")
    # an output path that is an input was silently replaced by the result
    qc = os.path.join(tmp, "qc.npy")
    open(qc, "wb").write(raw)
    r = run(["attn", "--q", qc] + good[2:] + ["--out", qc], expect_ok=False)
    check(r.returncode == 2 and "--q input" in r.stderr and open(qc, "rb").read() == raw,
          f"--out equal to --q: refused before the work (exit 2), input kept ({r.returncode}, {r.stderr.strip()!r})")
    gdir = os.path.join(tmp, "gdir")
    os.makedirs(gdir, exist_ok=True)
    gq = os.path.join(gdir, "dq.npy")
    open(gq, "wb").write(raw)
    r = run(["attn"] + good + ["--dout", gq, "--grad-dir", gdir], expect_ok=False)
    check(r.returncode > 0 and "--dout input" in r.stderr and open(gq, "rb").read() == raw,
          f"--grad-dir's dq.npy equal to --dout: refused, input kept ({r.returncode}, {r.stderr.strip()!r})")

print(f"py_cli_attn: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
