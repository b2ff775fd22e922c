#!/usr/bin/env python3
"""End-to-end tests of `infllm bench attn`, `infllm bench backward` and `infllm bench decode` (CPU, and CUDA where there
is a GPU) on
small shapes: each output format parses and holds the rows asked for with sane values, and bad
flags give a clear message and exit status 2.

argv[1] is the infllm binary.
"""
import csv
import io
import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_counter import Counter  # noqa: E402

INFLLM = sys.argv[1]
SMALL = ["--seqlen", "256,384", "--heads", "4", "--kv-heads", "2", "--head-dim", "64", "--reps", "1",
         "--threads", "2", "--block-size", "16", "--topk", "4", "--local-blocks", "2", "--no-warmup"]

c = Counter("py_cli_bench")
check = c.check


def run(*args):
    return subprocess.run([INFLLM, *args], capture_output=True, text=True, timeout=600)


def positive(x):
    return isinstance(x, (int, float)) and x > 0


def no_constant(x):
    raise ValueError(f"non-standard JSON constant {x}")


def json_rows(p, what):
    """the rows of a --format json run, [] (and a failed check) when its output does not parse as strict JSON
    (NaN / Infinity refused) or when python3 -m json.tool refuses it"""
    try:
        rows = json.loads(p.stdout, parse_constant=no_constant)
    except ValueError as e:
        check(False, f"{what} json does not parse: {e}: {p.stdout[:300]}")
        return []
    t = subprocess.run([sys.executable, "-m", "json.tool"], input=p.stdout, capture_output=True, text=True)
    check(t.returncode == 0, f"{what} json: python3 -m json.tool takes it ({t.stderr.strip()[:200]})")
    return rows


# a value that does not apply to a row (a dense row's stages and selection, "vs dense" without a dense row beside
# it, what the GPU does not measure) is null in json and an empty field in csv: it was 0, which reads as a time or
# a ratio
ATTN_DENSE_NA = ("compress_ms", "stage1_ms", "stage2_ms", "stage1_share", "vs_dense", "vs_dense_cpu", "stage1_tokens")


# bench backward: json, csv and md rows for dense and sparse at both lengths
p = run("bench", "backward", *SMALL, "--format", "json")
check(p.returncode == 0, f"bench backward --format json: exit {p.returncode}: {p.stderr[-300:]}")
rows = json_rows(p, "bench backward")
check([(r["mode"], r["seqlen"]) for r in rows] == [("dense", 256), ("sparse", 256), ("dense", 384), ("sparse", 384)],
      f"bench backward rows: {[(r.get('mode'), r.get('seqlen')) for r in rows]}")
for r in rows:
    ok = all(positive(r[k]) for k in ("forward_ms", "backward_ms", "bwd_over_fwd", "forward_gflops", "backward_gflops",
                                      "pairs"))
    check(ok, f"bench backward row values: {r}")
    # at 256 / 384 tokens with 4 + 2 blocks of 16 the sparse rows attend fewer keys than the dense ones
dense = {r["seqlen"]: r["pairs"] for r in rows if r["mode"] == "dense"}
sparse = {r["seqlen"]: r["pairs"] for r in rows if r["mode"] == "sparse"}
check(all(sparse[t] < dense[t] for t in dense), f"sparse attends fewer (row, key) pairs: {dense} vs {sparse}")
# dense pairs are exact: Hq * T (T + 1) / 2
check(all(dense[t] == 4 * t * (t + 1) // 2 for t in dense), f"dense pairs = Hq T (T + 1) / 2: {dense}")

check(all((r["select_ms"] is None) == (r["mode"] == "dense") and (r["mode"] == "dense" or positive(r["select_ms"]))
          for r in rows), f"bench backward json select_ms: null for dense (no selection), > 0 for sparse: {rows}")

p = run("bench", "backward", *SMALL, "--format", "csv", "--modes", "sparse")
check(p.returncode == 0, f"bench backward --format csv: exit {p.returncode}")
recs = list(csv.DictReader(io.StringIO(p.stdout)))
check(len(recs) == 2 and all(r["mode"] == "sparse" for r in recs), f"bench backward csv rows: {p.stdout[:300]}")
p = run("bench", "backward", *SMALL, "--format", "csv", "--modes", "dense", "--seqlen", "256")
recs = list(csv.DictReader(io.StringIO(p.stdout)))
check(p.returncode == 0 and len(recs) == 1 and recs[0]["select_ms"] == "" and float(recs[0]["forward_ms"]) > 0,
      f"bench backward csv: a dense row's select_ms is an empty field: {p.stdout[:300]}")

p = run("bench", "backward", *SMALL)
check(p.returncode == 0 and p.stdout.count("\n| dense |") + p.stdout.count("\n| sparse |") == 4,
      f"bench backward md table: {p.stdout[-400:]}")
# md marks what does not apply with "-", as json null and csv an empty field: a dense row's select ms
md = [ln.split("|")[1:-1] for ln in p.stdout.splitlines() if ln.startswith("| dense |") or ln.startswith("| sparse |")]
check(len(md) == 4 and all((m[2].strip() == "-") == (m[0].strip() == "dense") for m in md),
      f"bench backward md: select ms '-' on dense rows only: {md}")
p = run("bench", "attn", *SMALL, "--seqlen", "256", "--peak", "100")
md = [[c.strip() for c in ln.split("|")[1:-1]] for ln in p.stdout.splitlines() if ln.startswith("| dense |")
      or ln.startswith("| sparse |")]
# columns: mode seqlen ms, cpu ms, compress, stage-1, stage-2, share, GFLOP, GFLOP/s, frac, frac cpu, vs dense (12),
# vs dense cpu, io, work, mem ratio
check(p.returncode == 0 and len(md) == 2 and md[0][4:8] == ["-"] * 4 and md[0][12:14] == ["-"] * 2 and
      "-" not in md[1] and "-" not in md[0][:4] + md[0][8:12] + md[0][14:], f"bench attn md: '-' where it does not apply: {md}")
p = run("bench", "attn", *SMALL, "--seqlen", "256", "--peak", "100", "--modes", "sparse")
md = [[c.strip() for c in ln.split("|")[1:-1]] for ln in p.stdout.splitlines() if ln.startswith("| sparse |")]
check(p.returncode == 0 and len(md) == 1 and md[0][12:14] == ["-"] * 2 and "-" not in md[0][:12],
      f"bench attn --modes sparse md: vs dense '-': {md}")

# bench attn (the forward pipeline), json
p = run("bench", "attn", *SMALL, "--format", "json", "--peak", "100")
check(p.returncode == 0, f"bench attn --format json: exit {p.returncode}: {p.stderr[-300:]}")
rows = json_rows(p, "bench attn")
check(len(rows) == 4 and all(positive(r["ms"]) for r in rows), f"bench attn rows: {p.stdout[:300]}")
for r in rows:
    if r["mode"] == "dense":
        check(all(r[k] is None for k in ATTN_DENSE_NA) and positive(r["frac_peak"]),
              f"bench attn json dense row: {ATTN_DENSE_NA} null: {r}")
    else:
        check(all(positive(r[k]) for k in ("compress_ms", "stage2_ms", "vs_dense", "vs_dense_cpu", "stage1_tokens"))
              and r["stage1_ms"] >= 0 and r["stage1_share"] >= 0, f"bench attn json sparse row values: {r}")
p = run("bench", "attn", *SMALL, "--seqlen", "256", "--format", "json", "--peak", "100", "--modes", "sparse")
rows = json_rows(p, "bench attn --modes sparse")
check(p.returncode == 0 and len(rows) == 1 and rows[0]["vs_dense"] is None and rows[0]["vs_dense_cpu"] is None
      and positive(rows[0]["stage2_ms"]), f"bench attn --modes sparse: vs_dense null without a dense row: {rows}")
p = run("bench", "attn", *SMALL, "--seqlen", "256", "--format", "csv", "--peak", "100")
recs = list(csv.DictReader(io.StringIO(p.stdout)))
check(p.returncode == 0 and [r["mode"] for r in recs] == ["dense", "sparse"] and
      all(recs[0][k] == "" for k in ("compress_ms", "stage1_ms", "stage2_ms", "stage1_share", "vs_dense", "vs_dense_cpu"))
      and float(recs[1]["vs_dense"]) > 0, f"bench attn csv: a dense row's stages and vs_dense empty: {p.stdout[:500]}")

# --inputs structured (the q, and the k, of a 256-token segment share a component), csv with the device and inputs columns
p = run("bench", "attn", *SMALL, "--format", "csv", "--peak", "100", "--inputs", "structured", "--modes", "sparse")
check(p.returncode == 0, f"bench attn --inputs structured: exit {p.returncode}: {p.stderr[-300:]}")
recs = list(csv.DictReader(io.StringIO(p.stdout)))
check(len(recs) == 2 and all(r["device"] == "cpu" and r["inputs"] == "structured" and float(r["ms"]) > 0 for r in recs),
      f"bench attn csv rows (device, inputs): {p.stdout[:400]}")

# --device cuda: rows timed on the GPU where there is one, else a message and exit 1 with nothing on stdout
ver = run("version").stdout
cuda_usable = "\ncuda: on, " in "\n" + ver
GPU = ["--seqlen", "4096,8192", "--heads", "8", "--kv-heads", "2", "--head-dim", "64", "--reps", "2", "--no-warmup",
       "--block-size", "64", "--topk", "8", "--local-blocks", "4"]
p = run("bench", "attn", *GPU, "--device", "cuda", "--format", "json")
if cuda_usable:
    check(p.returncode == 0, f"bench attn --device cuda: exit {p.returncode}: {p.stderr[-300:]}")
    rows = json_rows(p, "bench attn --device cuda")
    check([(r["mode"], r["seqlen"]) for r in rows] == [("dense", 4096), ("sparse", 4096), ("dense", 8192),
                                                       ("sparse", 8192)], f"bench attn --device cuda rows: {rows}")
    for r in rows:
        check(r["device"] == "cuda" and positive(r["ms"]) and positive(r["gflops"]), f"cuda row values: {r}")
        # not measured on the GPU: null, not 0
        check(all(r[k] is None for k in ("cpu_ms", "vs_dense_cpu", "peak_gflops", "frac_peak", "peak_gflops_cpu_time",
                                         "frac_peak_cpu_time", "stage1_tokens")), f"cuda row: CPU-only values null: {r}")
        if r["mode"] == "dense":
            check(all(r[k] is None for k in ATTN_DENSE_NA), f"cuda dense row: {ATTN_DENSE_NA} null: {r}")
        if r["mode"] == "sparse":
            # stage 1 is select less compress: a few us at these sizes, so only >= 0 is certain
            check(positive(r["compress_ms"]) and r["stage1_ms"] >= 0 and positive(r["stage2_ms"]) and
                  positive(r["vs_dense"]) and r["stage2_ms"] < 1.5 * r["ms"], f"cuda sparse row stages: {r}")
    # lengths below a block, a kernel window and the top-k (1, 40, 100 tokens), f16, structured inputs
    p = run("bench", "attn", "--device", "cuda", "--seqlen", "1,40,100", "--heads", "4", "--kv-heads", "1",
            "--head-dim", "128", "--dtype", "f16", "--reps", "1", "--inputs", "structured", "--format", "csv")
    recs = list(csv.DictReader(io.StringIO(p.stdout)))
    check(p.returncode == 0 and len(recs) == 6 and all(float(r["ms"]) > 0 for r in recs),
          f"bench attn --device cuda at 1 / 40 / 100 tokens: exit {p.returncode}, {p.stderr[-300:]!r}, {p.stdout[:300]!r}")
    p = run("bench", "attn", *GPU, "--device", "cuda", "--dtype", "f32")
    # a runtime error names the benchmark (it said 'infllm bench:')
    check(p.returncode == 1 and "f32" in p.stderr.lower() and p.stdout.count("\n| ") <= 2 and
          "\ninfllm bench attn: " in "\n" + p.stderr, f"bench attn --device cuda --dtype f32: exit {p.returncode}, "
          f"{p.stderr[-300:]!r}")
else:
    print(f"py_cli_bench: no usable CUDA device ({ver.strip().splitlines()[-1]}): --device cuda checked for its message")
    check(p.returncode == 1 and "--device cuda" in p.stderr and p.stdout == "",
          f"bench attn --device cuda without a GPU: exit {p.returncode}, {p.stderr[-300:]!r}, stdout {p.stdout[:100]!r}")

# bench backward --device cuda: a training step's forward and backward timed on the GPU where there is one (dense
# and sparse rows, select timed for sparse, the bwd / fwd ratio), else a message and exit 1 with nothing on stdout
BWD = ["--seqlen", "1024,2048", "--heads", "8", "--kv-heads", "2", "--head-dim", "64", "--reps", "2", "--no-warmup",
       "--block-size", "64", "--topk", "8", "--local-blocks", "4"]
p = run("bench", "backward", *BWD, "--device", "cuda", "--format", "json")
if cuda_usable:
    check(p.returncode == 0, f"bench backward --device cuda: exit {p.returncode}: {p.stderr[-300:]}")
    rows = json_rows(p, "bench backward --device cuda")
    check([(r["mode"], r["seqlen"]) for r in rows] == [("dense", 1024), ("sparse", 1024), ("dense", 2048),
                                                       ("sparse", 2048)], f"bench backward --device cuda rows: {rows}")
    for r in rows:
        check(r["device"] == "cuda" and positive(r["forward_ms"]) and positive(r["backward_ms"]) and
              positive(r["bwd_over_fwd"]) and positive(r["backward_gflops"]) and positive(r["pairs"]) and
              (r["select_ms"] is None if r["mode"] == "dense" else positive(r["select_ms"])),
              f"bench backward cuda row values: {r}")
    # sparse attends fewer pairs than dense once the selection leaves blocks out (12 of 32 blocks at 2048)
    pairs = {(r["mode"], r["seqlen"]): r["pairs"] for r in rows}
    check(pairs[("sparse", 2048)] < pairs[("dense", 2048)], f"bench backward --device cuda pairs: {pairs}")
    p = run("bench", "backward", *BWD, "--device", "cuda", "--dtype", "f32")
    check(p.returncode == 1 and "f32" in p.stderr.lower() and "\ninfllm bench backward: " in "\n" + p.stderr,
          f"bench backward --device cuda --dtype f32: exit {p.returncode}, {p.stderr[-300:]!r}")
else:
    check(p.returncode == 1 and "--device cuda" in p.stderr and p.stdout == "",
          f"bench backward --device cuda without a GPU: exit {p.returncode}, {p.stderr[-300:]!r}, stdout {p.stdout[:100]!r}")

# bench decode: one decode step against a cache, dense and sparse rows per context; read MiB is the attend's K / V
# (dense: every causal key, the window's with --window; sparse: the selected blocks' keys + the compressed keys scored)
DEC = ["--seqlen", "300,1000", "--heads", "4", "--kv-heads", "2", "--head-dim", "64", "--reps", "3", "--threads", "2",
       "--block-size", "16", "--topk", "4", "--local-blocks", "2"]


def dec_read_mib(T, sparse, window=0, B=16, K=6, H=2, D=64, es=2):
    """decode_read_bytes restated (kernel 32 / 16, c2 128 / 64)"""
    pos, row = T - 1, H * D * es
    keys = window if 0 < window < pos + 1 else pos + 1
    if not sparse:
        return 2 * keys * row / 2**20
    qb, wb = pos // B, (max(pos - window + 1, 0) // B if window else 0)
    if qb - wb + 1 <= K:
        return 2 * keys * row / 2**20
    sel = min((K - 1) * B + pos - qb * B + 1, keys)

    def vis(l, s):
        n = (T - l) // s + 1 if T >= l else 0
        return min(n, (pos + 1 - l) // s + 1 if pos + 1 >= l else 0)
    return (2 * sel + vis(32, 16) + vis(128, 64)) * row / 2**20


p = run("bench", "decode", *DEC, "--format", "json")
check(p.returncode == 0, f"bench decode --format json: exit {p.returncode}: {p.stderr[-300:]}")
rows = json_rows(p, "bench decode")
check([(r.get("mode"), r.get("seqlen")) for r in rows] == [("dense", 300), ("sparse", 300), ("dense", 1000),
                                                           ("sparse", 1000)], f"bench decode rows: {rows}")
for r in rows:
    # (gbs >= 0: a step slowed to ms by a loaded machine rounds its rate to 0)
    check(all(positive(r[k]) for k in ("step_us", "append_us", "attend_us", "cpu_us", "read_mib", "cache_mib"))
          and r["gbs"] >= 0
          and r["step_us"] >= r["attend_us"] and r["graph_step_us"] is None and r["graph_attend_us"] is None and
          r["device"] == "cpu" and r["reps"] == 3, f"bench decode row values: {r}")
    want = dec_read_mib(r["seqlen"], r["mode"] == "sparse")
    check(abs(r["read_mib"] - want) <= 1e-5, f"bench decode read_mib {r['read_mib']} vs {want:.4f}: {r}")
    check((r["vs_dense"] is None) == (r["mode"] == "dense") and (r["mode"] == "dense" or positive(r["vs_dense"])),
          f"bench decode vs_dense: null on dense rows only: {r}")
# at 1000 tokens the sparse attend reads less than the dense one (selected blocks); the cache is the same
check(len(rows) == 4 and rows[3]["read_mib"] < rows[2]["read_mib"] and rows[3]["cache_mib"] == rows[2]["cache_mib"],
      f"bench decode: sparse reads less at 1000 tokens: {rows}")
# a window: the dense row reads the window's keys only
p = run("bench", "decode", *DEC, "--seqlen", "1000", "--window", "200", "--format", "csv", "--modes", "dense")
recs = list(csv.DictReader(io.StringIO(p.stdout)))
check(p.returncode == 0 and len(recs) == 1 and recs[0]["window"] == "200" and
      abs(float(recs[0]["read_mib"]) - dec_read_mib(1000, False, 200)) < 1e-3 and recs[0]["graph_step_us"] == "" and
      recs[0]["vs_dense"] == "", f"bench decode --window 200 csv: {p.stdout[:400]!r} {p.stderr[-200:]!r}")
p = run("bench", "decode", *DEC, "--seqlen", "64", "--dtype", "f32", "--inputs", "structured", "--no-warmup")
md = [[c.strip() for c in ln.split("|")[1:-1]] for ln in p.stdout.splitlines() if ln.startswith("| dense |")
      or ln.startswith("| sparse |")]
check(p.returncode == 0 and len(md) == 2 and md[0][8] == "-" and md[1][8] != "-" and "# infllm bench decode" in p.stdout,
      f"bench decode md (f32, structured): {p.stdout[-500:]!r} {p.stderr[-200:]!r}")
p = run("bench", "decode", *DEC, "--device", "cuda", "--format", "json")
if cuda_usable:
    check(p.returncode == 0, f"bench decode --device cuda: exit {p.returncode}: {p.stderr[-300:]}")
    rows = json_rows(p, "bench decode --device cuda")
    check(len(rows) == 4 and all(r["device"] == "cuda" and r["cpu_us"] is None and
                                 all(positive(r[k]) for k in ("step_us", "append_us", "attend_us", "graph_step_us",
                                                              "graph_attend_us", "read_mib", "gbs", "workspace_mib"))
                                 for r in rows), f"bench decode --device cuda rows: {rows}")
    p = run("bench", "decode", *DEC, "--device", "cuda", "--dtype", "f32")
    check(p.returncode == 1 and "\ninfllm bench decode: " in "\n" + p.stderr,
          f"bench decode --device cuda --dtype f32: exit {p.returncode}, {p.stderr[-300:]!r}")
else:
    check(p.returncode == 1 and "--device cuda" in p.stderr and p.stdout == "",
          f"bench decode --device cuda without a GPU: exit {p.returncode}, {p.stderr[-300:]!r}, stdout {p.stdout[:100]!r}")

# --threads 0 means all cores, as for infllm attn (it ran 1 thread): the row reports the default's count
p0 = run("bench", "attn", *SMALL, "--seqlen", "256", "--modes", "dense", "--threads", "0", "--format", "json")
ti = SMALL.index("--threads")
pd = run("bench", "attn", *(SMALL[:ti] + SMALL[ti + 2:]), "--seqlen", "256", "--modes", "dense", "--format", "json")
r0, rd = json_rows(p0, "--threads 0"), json_rows(pd, "default threads")
check(p0.returncode == 0 and r0 and rd and r0[0]["threads"] == rd[0]["threads"],
      f"--threads 0 runs the default (all cores): {r0[:1]} vs {rd[:1]}, {p0.stderr[-200:]!r}")

# accepted as before the option table: backward's --peak 0 (0: "measure it", nothing to refuse) and a fractional
# --seconds (OPT_DOUBLE); and --opt=value, as every table-driven command takes it
p = run("bench", "backward", *SMALL, "--seqlen", "256", "--modes", "dense", "--peak", "0", "--format=json")
check(p.returncode == 0 and len(json_rows(p, "backward --peak 0")) == 1, f"bench backward --peak 0: exit {p.returncode}, "
      f"{p.stderr[-200:]!r}")
p = run("bench", "peak", "--seconds", "0.05", "--threads=1", "--format", "csv")
check(p.returncode in (0, 1) and ("peak,1," in p.stdout if p.returncode == 0 else "no AVX2" in p.stderr),
      f"bench peak --seconds 0.05 --threads=1: exit {p.returncode}, {p.stdout[-200:]!r}, {p.stderr[-200:]!r}")

# bad input: a clear message, exit 2, nothing on stdout
for args, what in (
    (["bench", "backward", "--seqlen", "abc"], "--seqlen"),
    # a 'k' length past 2^63 / 1024 overflowed the multiplication (UBSan; 9007199254740993k ran 1024 tokens)
    (["bench", "attn", "--seqlen", "9007199254740993k"], "--seqlen"),
    # a trailing comma was taken as the end of the list ('256,' ran 256 alone)
    (["bench", "attn", "--seqlen", "256,"], "--seqlen"),
    # the list's own message (tools/opts.c opts_list): the option, the list and the item at fault
    (["bench", "attn", "--seqlen", "256,,512"], "--seqlen '256,,512': item 2 is empty"),
    (["bench", "attn", "--seqlen", "256,2x"], "--seqlen '256,2x': '2x' is not a positive integer"),
    (["bench", "backward", "--reps", "x"], "--reps"),
    (["bench", "backward", "--heads", "6", "--kv-heads", "4"], "multiple of --kv-heads"),
    (["bench", "backward", "--peak", "5"], "--peak"),
    (["bench", "decode", "--peak", "5"], "--peak"),
    (["bench", "decode", "--heads", "6", "--kv-heads", "4"], "multiple of --kv-heads"),
    (["bench", "decode", "--reps", "0"], "--reps"),
    (["bench", "decode", "--seconds", "1"], "--seconds"),
    (["bench", "decode", "--block-size", "0"], "block_size"),
    (["bench", "backward", "--frobnicate"], "--frobnicate"),
    (["bench", "nosuch"], "nosuch"),
    (["bench", "attn", "--device", "gpu"], "--device cpu|cuda"),
    (["bench", "attn", "--format", "xml"], "--format must be md, csv or json"),
    (["bench", "peak", "--format", "xml"], "--format must be md, csv or json"),
    (["bench", "attn", "--inputs", "zeros"], "--inputs random|structured"),
    (["bench", "peak", "--device", "cuda"], "--device"),
    # the FLOP counts divided by these before the library saw them: SIGFPE
    (["bench", "attn", "--block-size", "0"], "block_size"),
    (["bench", "attn", "--kernel-stride", "0"], "kernel_stride"),
    (["bench", "backward", "--block-size", "0"], "block_size"),
    # a mistyped mode benchmarked nothing and exited 0; reps <= 0 ran once and printed 'reps 0'
    (["bench", "attn", "--modes", "sprase"], "--modes"),
    (["bench", "attn", "--modes", "dense,foo"], "--modes"),
    (["bench", "backward", "--modes", ""], "--modes"),
    (["bench", "attn", "--reps", "0"], "--reps"),
    (["bench", "peak", "--seconds", "0"], "--seconds"),
    (["bench", "attn", "--peak", "-5"], "--peak"),
    (["bench", "attn", "--threads", "5000"], "--threads"),  # past the library's INFLLM_MAX_THREADS
    (["bench", "attn", "--threads", "-1"], "--threads"),  # was quietly taken for 1 thread
    (["bench", "peak", "--threads", "-3"], "--threads"),
    # --seconds (bench peak's measuring time) was taken by attn / backward and did nothing
    (["bench", "attn", *SMALL, "--seconds", "1"], "--seconds"),
    (["bench", "backward", *SMALL, "--seconds", "1"], "--seconds"),
    # the option table's messages (tools/opts.c), headed by the benchmark's name
    (["bench", "attn", "--heads", "4x"], "infllm bench attn: --heads expects an integer"),
    (["bench", "peak", "--seconds"], "infllm bench peak: --seconds needs a value"),
    (["bench", "attn", "--peak", "1e999"], "--peak 1e999 is outside"),
    (["bench", "attn", "--exact-lse=1"], "--exact-lse takes no value"),
    (["bench", "backward", "stray"], "unexpected argument 'stray'"),
):
    p = run(*args)
    check(p.returncode == 2 and what in p.stderr and p.stdout == "",
          f"{' '.join(args)}: exit {p.returncode}, stderr {p.stderr[-200:]!r}, stdout {p.stdout[:100]!r}")

# a bad --seconds / --peak names the benchmark's own option only: one message for both told bench peak (no --peak)
# "--seconds must be > 0 and --peak >= 0" and bench attn (no --seconds) the same; backward (no --peak) said it too
for args, want, other in ((["bench", "peak", "--seconds", "0"], "--seconds must be > 0", "--peak"),
                          (["bench", "attn", "--peak", "-5"], "--peak must be >= 0", "--seconds"),
                          (["bench", "backward", "--peak", "-5"], "--peak does not apply", "--seconds")):
    p = run(*args)
    msg = p.stderr.split("\n")[0]
    check(p.returncode == 2 and want in msg and other not in msg,
          f"{' '.join(args)}: exit {p.returncode}, want '{want}' without {other} in {msg!r}")

# --help went to stderr (every other command's goes to stdout, so 'infllm bench attn --help | less' showed nothing)
# bench peak's and bench backward's --help printed bench attn's usage, headed 'usage: infllm bench attn': each is headed
# by its own name and lists its own options (backward: bench attn's but --peak); 'bench --help' lists every one
helps = {}
for args in (["bench", "--help"], ["bench", "attn", "--help"], ["bench", "peak", "-h"], ["bench", "backward", "--help"]):
    p = run(*args)
    helps[args[1]] = p.stdout
    check(p.returncode == 0 and p.stdout.startswith("usage: infllm bench ") and p.stderr == "",
          f"{' '.join(args)}: exit {p.returncode}, usage on stdout ({len(p.stdout)} bytes), stderr {p.stderr[:80]!r}")
check(all(f"infllm bench {b}" in helps["--help"] for b in ("attn", "peak", "backward", "run")),
      f"bench --help lists attn, peak, backward and run: {helps['--help']!r}")
# each usage comes from the benchmark's option table (tools/opts.c opts_usage, as run, eval and bench run): it lists
# the options that benchmark parses, and only those
check(helps["attn"].startswith("usage: infllm bench attn [options]") and "--seqlen LIST" in helps["attn"]
      and "--peak GFLOPS" in helps["attn"] and "--seconds" not in helps["attn"] and "bench peak" not in helps["attn"],
      f"bench attn --help: its own usage: {helps['attn']!r}")
check(helps["peak"].startswith("usage: infllm bench peak [options]") and "--threads N" in helps["peak"]
      and "--seconds S" in helps["peak"] and "--format FMT" in helps["peak"] and "--seqlen" not in helps["peak"]
      and "bench attn" not in helps["peak"], f"bench peak --help: its own usage: {helps['peak']!r}")
check(helps["backward"].startswith("usage: infllm bench backward [options]") and "--inputs KIND" in helps["backward"]
      and "--peak" not in helps["backward"] and "--seconds" not in helps["backward"]
      and "bench attn" not in helps["backward"], f"bench backward --help: its own usage, without --peak: {helps['backward']!r}")
for b in ("peak", "backward"):  # beside an error, the same usage on stderr
    p = run("bench", b, "--frobnicate")
    check(p.returncode == 2 and f"usage: infllm bench {b} " in p.stderr and "bench attn" not in p.stderr,
          f"bench {b} --frobnicate: exit {p.returncode}, its own usage on stderr: {p.stderr[-300:]!r}")

# a benchmark that fails after some json rows were printed closes the array (stdout stays one JSON document) and exits
# 1 with its message on stderr: the array was left open ('[ {...}' parsed nowhere). The second length's tensors (4 GB
# each at 16 KV heads) cannot be had under a 2 GiB address space; the first one's run and print
import resource  # noqa: E402


def small_address_space():
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


probe = subprocess.run([INFLLM, "version"], capture_output=True, preexec_fn=small_address_space)
if probe.returncode:  # sanitizer builds reserve more address space than that
    print("skip: bench json after a failed length (the binary does not start under a 2 GiB address space)")
for words in (["attn", "--peak", "100"], ["backward"]) if probe.returncode == 0 else ():
    p = subprocess.run([INFLLM, "bench", *words, *SMALL, "--seqlen", "256,1000000", "--heads", "16", "--kv-heads",
                        "16", "--format", "json"], capture_output=True, text=True, timeout=300,
                       preexec_fn=small_address_space)
    try:
        rows = json.loads(p.stdout, parse_constant=no_constant)
    except ValueError as e:
        rows = f"does not parse: {e}"
    check(p.returncode == 1 and isinstance(rows, list) and [r["seqlen"] for r in rows] == [256, 256] and
          p.stderr.startswith(f"infllm bench {words[0]}: out of memory for T=1000000"),
          f"bench {words[0]} --format json failing at its second length: exit {p.returncode}, the first length's "
          f"rows as a closed array ({rows if isinstance(rows, str) else len(rows)}), the message {p.stderr[:200]!r}")

# the md header's peak: measured (wall and CPU time), given by --peak (one number: it printed it as both the wall
# and the CPU-time peak), or not measured (no peak kernel at simd scalar: it printed 'peak 0.0 GFLOP/s')
p = run("bench", "attn", *SMALL, "--seqlen", "256", "--peak", "123.5")
hdr = [ln for ln in p.stdout.splitlines() if ln.startswith("# Hq ")]
check(p.returncode == 0 and len(hdr) == 1 and "fp32 FMA peak 123.5 GFLOP/s (given by --peak" in hdr[0]
      and "by CPU time" not in hdr[0] and hdr[0].count("123.5") == 1, f"bench attn --peak 123.5 md header: {hdr}")
p = subprocess.run([INFLLM, "bench", "attn", *SMALL, "--seqlen", "256"], capture_output=True, text=True, timeout=600,
                   env={**os.environ, "INFLLM_SIMD": "scalar"})
hdr = [ln for ln in p.stdout.splitlines() if ln.startswith("# Hq ")]
md = [[c.strip() for c in ln.split("|")[1:-1]] for ln in p.stdout.splitlines() if ln.startswith("| dense |")]
check(p.returncode == 0 and len(hdr) == 1 and "peak not measured" in hdr[0] and "GFLOP/s" not in hdr[0] and
      len(md) == 1 and md[0][10:12] == ["-", "-"], f"bench attn at simd scalar (no peak kernel): md header says the peak "
      f"is not measured, the fractions '-': {hdr}, {md}")
if "peak not measured" not in (hdr or [""])[0] and os.uname().machine not in ("x86_64", "i686"):
    print("note: a CPU without the peak kernel (not x86) takes the 'not measured' path whatever INFLLM_SIMD says")

# the CPU's name (/proc/cpuinfo's "model name") went into json between quotes as it was, and into csv quoted
# without doubling its quotes: a name with a quote or a backslash made files json.loads / csv refused. Seen through
# a /proc/cpuinfo bind-mounted in a user and mount namespace (unshare -rm; skipped where that is not allowed)
import shutil  # noqa: E402
import tempfile  # noqa: E402

with tempfile.TemporaryDirectory() as tmp:
    name = 'Odd "Quoted" CPU, v2 \\ back'
    info = os.path.join(tmp, "cpuinfo")
    with open(info, "w") as f:
        f.write(f"processor\t: 0\nmodel name\t: {name}\n")
    ns = ["unshare", "-rm", "sh", "-c", f'mount --bind "{info}" /proc/cpuinfo && exec "$0" "$@"', INFLLM]
    usable = shutil.which("unshare") and subprocess.run([*ns, "version"], capture_output=True).returncode == 0
    if not usable:
        print("skip: no user / mount namespace here (unshare -rm) for a made-up /proc/cpuinfo")
    for args in ((["bench", "peak", "--seconds", "0.05", "--threads", "1"], ["bench", "attn", *SMALL, "--peak", "10"],
                  ["bench", "backward", *SMALL]) if usable else ()):
        for fmt in ("json", "csv"):
            p = subprocess.run([*ns, *args, "--format", fmt], capture_output=True, text=True, timeout=600)
            try:
                if fmt == "json":
                    rows = json.loads(p.stdout, parse_constant=no_constant)
                else:
                    t = list(csv.reader(io.StringIO(p.stdout)))
                    rows = [dict(zip(t[0], r)) for r in t[1:]] if all(len(r) == len(t[0]) for r in t) else []
                ok = p.returncode == 0 and rows and all(r["cpu"] == name for r in rows)
            except ValueError as e:
                ok = False
            check(ok, f"{' '.join(args[:2])} --format {fmt} with the cpu named {name!r}: {p.stdout.strip()[:200]!r}")

# --window: the dense rows count the keys of each query's window (16 heads x 128 dims x 4 FLOPs a key; 512 tokens, a
# window of 40: 40 x 41 / 2 + 472 x 40 = 19700 keys, 0.161 GFLOP; 1.076 without the window), the row says its window
p = run("bench", "attn", "--seqlen", "512", "--heads", "16", "--kv-heads", "2", "--head-dim", "128", "--reps", "1",
        "--threads", "2", "--no-warmup", "--peak", "10", "--window", "40", "--format", "json")
rows = json_rows(p, "bench attn --window 40") if p.returncode == 0 else []
dense = [r for r in rows if r["mode"] == "dense"]
want = 4 * 16 * 128 * 19700 / 1e9
check(len(dense) == 1 and dense[0]["window"] == 40 and abs(dense[0]["gflop"] - want) < 1e-3,
      f"bench attn --window 40: a dense row of {want:.3f} GFLOP with window 40: {dense or p.stderr}")

# csv's columns are json's keys, in json's order, with the same values: csv lacked six of bench attn's (block_size,
# topk_total, peak_gflops_cpu_time, stage1_tokens, reps, load_avg), named one frac_peak_cpu, and had no reps or
# load_avg in bench backward nor load_avg in bench peak
for args in (["bench", "attn", *SMALL, "--peak", "10"], ["bench", "backward", *SMALL],
             ["bench", "peak", "--seconds", "0.05", "--threads", "1"]):
    pj = run(*args, "--format", "json")
    pc = run(*args, "--format", "csv")
    if args[1] == "peak" and pj.returncode == 1 and "no AVX2" in pj.stderr:
        continue
    try:
        jrows = json.loads(pj.stdout)
    except ValueError:
        jrows = []
    crows = list(csv.reader(io.StringIO(pc.stdout))) if pc.returncode == 0 else []
    same_keys = bool(jrows) and len(crows) == len(jrows) + 1 and all(list(r) == crows[0] for r in jrows)
    check(same_keys, f"{' '.join(args[:2])}: csv's header is json's keys in order: csv {crows[:1]}, json "
          f"{list(jrows[0]) if jrows else pj.stdout[:200]}")
    # the values that do not depend on the run's timing are equal (null is an empty field)
    steady = ("mode", "seqlen", "heads", "kv_heads", "head_dim", "dtype", "threads", "block_size", "topk_total",
              "stage1_tokens", "pairs", "reps", "commit", "simd", "device", "inputs", "lanes", "bench")
    if same_keys:
        bad = [(k, jr[k], cr[i]) for jr, cr in zip(jrows, crows[1:]) for i, k in enumerate(crows[0])
               if k in steady and ("" if jr[k] is None else str(jr[k])) != cr[i].strip('"')]
        check(not bad, f"{' '.join(args[:2])}: csv and json agree on the steady values: {bad[:4]}")

# /proc/loadavg unreadable (here: bind-mounted over by an empty file): the load average is a value that does not
# apply, null in json, an empty field in csv and '-' in md (it printed -1.00, which reads as a load)
with tempfile.TemporaryDirectory() as tmp:
    empty = os.path.join(tmp, "loadavg")
    open(empty, "w").close()
    ns = ["unshare", "-rm", "sh", "-c", f'mount --bind "{empty}" /proc/loadavg && exec "$0" "$@"', INFLLM]
    usable = shutil.which("unshare") and subprocess.run([*ns, "version"], capture_output=True).returncode == 0
    if not usable:
        print("skip: no user / mount namespace here (unshare -rm) for an unreadable /proc/loadavg")
    for args in ((["bench", "peak", "--seconds", "0.05", "--threads", "1"], ["bench", "attn", *SMALL, "--peak", "10"],
                  ["bench", "backward", *SMALL]) if usable else ()):
        p = subprocess.run([*ns, *args, "--format", "json"], capture_output=True, text=True, timeout=600)
        if args[1] == "peak" and p.returncode == 1 and "no AVX2" in p.stderr:
            continue
        try:
            rows = json.loads(p.stdout, parse_constant=no_constant)
        except ValueError:
            rows = []
        check(p.returncode == 0 and rows and all(r["load_avg"] is None for r in rows),
              f"{' '.join(args[:2])} json without /proc/loadavg: load_avg null: {p.stdout.strip()[:300]!r}")
        p = subprocess.run([*ns, *args, "--format", "csv"], capture_output=True, text=True, timeout=600)
        rows = list(csv.DictReader(io.StringIO(p.stdout))) if p.returncode == 0 else []
        check(rows and all(r.get("load_avg") == "" for r in rows),
              f"{' '.join(args[:2])} csv without /proc/loadavg: load_avg an empty field: {p.stdout.strip()[:300]!r}")
        p = subprocess.run([*ns, *args], capture_output=True, text=True, timeout=600)
        if args[1] == "peak":
            t = [ln for ln in p.stdout.splitlines() if ln.startswith("| peak |")]
            ok = len(t) == 1 and t[0].split("|")[8].strip() == "-"
        else:
            ok = re.search(r"load avg -(,|$)", p.stdout.split("\n", 1)[0]) is not None
        check(p.returncode == 0 and ok and "-1.00" not in p.stdout,
              f"{' '.join(args[:2])} md without /proc/loadavg: load avg '-': {p.stdout[:300]!r}")

c.finish()
