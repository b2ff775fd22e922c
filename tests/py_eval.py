"""`infllm eval ppl` end to end on a tiny random llama GGUF (no tokenizer: --tokens): its dense mean
NLL equals an independent numpy float64 forward over the same windows and scored positions;
sparse with every block selected equals dense exactly; genuinely sparse selection changes the NLL;
md / csv / json agree; bad arguments give exit status 2 with a message, a missing file 1.
`infllm eval passkey` on a tiny model with a byte-level tokenizer: the grid of cells, prompt
lengths near the targets, ChatML and plain prompts, and its bad arguments. (A random model never
finds the key; finding it is shown on SmolLM2 in BENCHMARKS.)"""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model_testlib import F16, F32, Counter, Tiny, np  # noqa: E402

exe = sys.argv[1]
c = Counter("py_eval")


def run(*args):
    p = subprocess.run([exe, "eval", "ppl", *args], capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def csv_rows(out):
    lines = out.strip().splitlines()
    head = lines[0].split(",")
    return {r.split(",")[0]: dict(zip(head, r.split(","))) for r in lines[1:]}


with tempfile.TemporaryDirectory() as tmp:
    m = Tiny("llama", seed=4)
    g = os.path.join(tmp, "m.gguf")
    m.write_gguf(g, {"emb": F16, "out": F32, "q": F16, "k": F32, "v": F16, "o": F32, "gate": F16, "up": F32, "down": F16})
    rng = np.random.default_rng(3)
    toks = [int(t) for t in rng.integers(0, m.V, 300)]
    ids = ",".join(map(str, toks))
    W, S = 96, 20
    base = ["-m", g, "--tokens", ids, "--kv-type", "f32", "-q", "--window", str(W), "--score-from", str(S)]
    # numpy: windows [w W, (w+1) W), positions S..W-2 predict the next token of the window
    nll = []
    for w in range(len(toks) // W):
        win = toks[w * W:(w + 1) * W]
        lg = m.forward(win)
        for p in range(S, W - 1):
            row = lg[p]
            mx = row.max()
            nll.append(mx + np.log(np.exp(row - mx).sum()) - row[win[p + 1]])
    ref = float(np.mean(nll))
    rc, out, err = run(*base, "--format", "csv", "--modes", "dense,sparse")
    c.check(rc == 0, f"eval ppl runs (exit {rc}) {err.strip()[-200:]}")
    rows = csv_rows(out) if rc == 0 else {}
    if rows:
        d, s = rows["dense"], rows["sparse"]
        got = float(d["mean_nll"])
        c.check(abs(got - ref) < 1e-5 * abs(ref) and int(d["scored_tokens"]) == len(nll) and d["windows"] == "3",
                f"dense mean NLL {got:.6f} vs numpy float64 {ref:.6f} over {len(nll)} scored tokens in {d['windows']} "
                f"windows")
        c.check(abs(float(d["ppl"]) - np.exp(got)) < 1e-4 * np.exp(got), f"PPL = exp(mean NLL): {d['ppl']}")
        # the window's 96 tokens are 2 blocks of 64: every block selected, sparse == dense
        c.check(s["mean_nll"] == d["mean_nll"] and float(s["top1_same_as_dense"]) == 1.0 and
                float(s["kl_vs_dense"]) == 0.0,
                f"sparse with every block selected: mean NLL {s['mean_nll']} == dense, top-1 agreement "
                f"{s['top1_same_as_dense']}, KL {s['kl_vs_dense']}")
    # genuinely sparse: blocks of 16, 1 top-k + 1 local + 1 init of up to 6 blocks
    sp = ["--block-size", "16", "--topk", "1", "--local-blocks", "1", "--init-blocks", "1"]
    rc, out, err = run(*base, *sp, "--format", "json", "--modes", "sparse,dense")
    js = json.loads(out) if rc == 0 else []
    c.check(rc == 0 and [r["attention"] for r in js] == ["dense", "sparse"], "json, dense listed first")
    if rc == 0:
        d, s = js
        c.check(abs(d["mean_nll"] - ref) < 1e-5 * abs(ref), "the block size does not change dense")
        c.check(np.isfinite(s["mean_nll"]) and abs(s["mean_nll"] - d["mean_nll"]) > 1e-4 and
                0 < s["top1_same_as_dense"] < 1 and s["kl_vs_dense"] > 1e-4 and d["kl_vs_dense"] == 0,
                f"sparse (3 of up to 6 blocks): mean NLL {s['mean_nll']:.5f} vs dense {d['mean_nll']:.5f}, top-1 "
                f"agreement {s['top1_same_as_dense']:.3f}, KL(dense || sparse) {s['kl_vs_dense']:.5f} nats/token")
        # the KL against numpy: the dense logits are numpy's (checked above), so KL(numpy dense || infllm
        # sparse) recomputed from infllm's own sparse logits (run --dump-logits) must match
        kls = []
        for w in range(len(toks) // W):
            win = toks[w * W:(w + 1) * W]
            ld = m.forward(win)[S:W - 1]
            out_np = os.path.join(tmp, "sp.npy")
            subprocess.run([exe, "run", "-m", g, "--tokens", ",".join(map(str, win[:W - 1])), "-n", "0", "-q",
                            "--ctx", str(W), "--kv-type", "f32", "--attn", "sparse", "--dense-len", "-1", *sp,
                            "--dump-logits", out_np], check=True, capture_output=True)
            ls = np.load(out_np).astype(np.float64)[S:W - 1]
            lpd = ld - (ld.max(-1, keepdims=True) + np.log(np.exp(ld - ld.max(-1, keepdims=True)).sum(-1, keepdims=True)))
            lps = ls - (ls.max(-1, keepdims=True) + np.log(np.exp(ls - ls.max(-1, keepdims=True)).sum(-1, keepdims=True)))
            kls.extend((np.exp(lpd) * (lpd - lps)).sum(-1))
        kl_ref = float(np.mean(kls))
        c.check(abs(s["kl_vs_dense"] - kl_ref) < 1e-3 * kl_ref + 1e-7,
                f"KL(dense || sparse) {s['kl_vs_dense']:.6f} vs numpy over infllm run's sparse logits {kl_ref:.6f}")
    rc, out, err = run(*base, *sp)
    c.check(rc == 0 and "| sparse |" in out and "sparse/dense: PPL" in out, "markdown table and the ratio line")
    rc, out, err = run(*base, "--max-windows", "1", "--format", "csv", "--modes", "dense")
    c.check(rc == 0 and csv_rows(out)["dense"]["windows"] == "1", "--max-windows 1")
    # bad input: usage errors exit 2 with a message, a missing file 1
    bad = [
        (["-m", g, "-q"], 2, "-f FILE"),
        (["-m", g, "--tokens", ids, "-f", "x.txt"], 2, "one of them"),
        (["-m", g, "--tokens", ids, "--window", "1"], 2, "--window"),
        (["-m", g, "--tokens", ids, "--window", "10", "--score-from", "9"], 2, "--score-from"),
        # -1 and 0 were the "not given" marks: --score-from -5 scored from the window's middle, --window 0 ran
        # windows of --ctx, both without a word
        (["-m", g, "--tokens", ids, "--window", "96", "--score-from", "-5"], 2, "--score-from"),
        (["-m", g, "--tokens", ids, "--window", "96", "--score-from", "-1"], 2, "--score-from"),
        (["-m", g, "--tokens", ids, "-c", "128", "--window", "0"], 2, "--window"),
        # --window sets the context: a different --ctx beside it was ignored without a word
        (["-m", g, "--tokens", ids, "-c", "128", "--window", "96"], 2, "--ctx"),
        (["-m", g, "--tokens", "1,2,3", "--window", "64"], 2, "fewer than one window"),
        (["-m", g, "--tokens", ids, "--modes", "dense,bogus"], 2, "--modes"),
        (["-m", g, "--tokens", ids, "--modes", "dense,dense"], 2, "--modes"),
        (["-m", g, "--tokens", ids, "--modes", "dense,"], 2, "--modes"),  # empty items were skipped (strtok)
        (["-m", g, "--tokens", ids, "--modes", "dense,,sparse"], 2, "--modes"),
        (["-m", g, "--tokens", ids, "--attn", "sparse"], 2, "--modes"),
        (["-m", g, "--tokens", f"{m.V},1,2", "--window", "2"], 2, "outside the vocabulary"),
        (["-m", g, "--tokens", "1,x", "--window", "2"], 2, "bad token id"),
        (["-m", g, "--tokens", ids, "--window", "96", "--bos", "on"], 2, "BOS"),
        (["-m", g, "--tokens", ids, "--format", "xml"], 2, "--format"),
        (["-m", g, "-f", os.path.join(tmp, "missing.txt")], 1, "cannot open"),
    ]
    for args, want, msg in bad:
        rc, out, err = run(*args)
        c.check(rc == want and msg in err, f"{' '.join(a if len(a) < 30 else a[:12] + '...' for a in args[2:])}: "
                f"exit {rc} (want {want}), message has '{msg}'")
    p = subprocess.run([exe, "eval"], capture_output=True, text=True)
    c.check(p.returncode == 2 and "usage" in p.stderr, "'infllm eval' alone: usage, exit 2")
    rc, out, err = run("-m", g, "--tokens", ids, "-c", "128", "--format", "csv", "-q")
    c.check(rc == 0 and csv_rows(out)["dense"]["windows"] == "2" and csv_rows(out)["dense"]["scored_tokens"] == "126",
            "the window defaults to --ctx (128: 2 windows of the 300 tokens), scoring from its middle (2 x 63)")
    # eval passkey: a byte-level tokenizer (one token a byte) with ChatML markers and template
    mt = Tiny("llama", seed=8, n_vocab=300)
    gt = os.path.join(tmp, "tok.gguf")
    mt.write_gguf(gt, {}, tokenizer="chat")
    pk = [exe, "eval", "passkey", "-m", gt, "-q", "--block-size", "16", "--topk", "2", "--local-blocks", "1"]

    def pk_run(*args):
        p = subprocess.run([*pk, *args], capture_output=True, text=True, errors="replace")
        return p.returncode, p.stdout, p.stderr

    rc, out, err = pk_run("--lengths", "700,1300", "--depths", "0.1,0.9", "--trials", "2", "--format", "json")
    cells = json.loads(out) if rc == 0 else []
    c.check(rc == 0 and len(cells) == 8 and all(x["trials"] == 2 and 0 <= x["found"] <= 2 for x in cells) and
            [x["attention"] for x in cells[:4]] == ["dense"] * 4,
            f"passkey: 2 modes x 2 lengths x 2 depths, 2 trials each (exit {rc}) {err.strip()[-160:]}")
    c.check(all(abs(x["tokens_mean"] - x["length"]) <= 60 for x in cells),
            "passkey prompts within half a filler sentence (46 tokens here) of the target length: " +
            ", ".join(f"{x['tokens_mean']:.0f}/{x['length']}" for x in cells[:4]))
    rc2, out2, _ = pk_run("--lengths", "700", "--depths", "0.5", "--chat", "off", "--modes", "dense", "--format", "csv")
    rc3, out3, _ = pk_run("--lengths", "700", "--depths", "0.5", "--chat", "on", "--modes", "dense", "--format", "csv")
    c.check(rc2 == 0 and rc3 == 0 and len(out2.strip().splitlines()) == 2 and len(out3.strip().splitlines()) == 2,
            "passkey --chat off / on, csv")
    rc, out, err = pk_run("--lengths", "700", "--depths", "0.5")
    c.check(rc == 0 and "| dense | 700 |" in out and "dense: 0 of 1 found" in out, "passkey markdown and summary")
    for args, want, msg in [
        (["--depths", "1.5"], 2, "--depths"),
        # a trailing comma was taken as the end of the list
        (["--depths", "0.5,"], 2, "--depths"),
        (["--lengths", "700,"], 2, "--lengths"),
        (["--lengths", "100"], 2, "too short"),
        (["--gen", "0"], 2, "--gen"),
        (["--attn", "dense"], 2, "--modes"),
        (["--chat", "maybe"], 2, "--chat"),
        # the context follows --lengths: a given --ctx was ignored without a word
        (["--lengths", "700", "-c", "100"], 2, "--ctx"),
        # the context (length * 9/8 + 256 + gen) overflowed: an int64 overflow (UBSan) past 8e18, and a
        # negative --ctx, reported as '--ctx must be >= 1', at 2e9
        (["--lengths", "2000000000"], 2, "--lengths"),
        (["--lengths", "9000000000000000000"], 2, "--lengths"),
    ]:
        rc, out, err = pk_run(*args)
        c.check(rc == want and msg in err, f"passkey {' '.join(args)}: exit {rc} (want {want}), message has '{msg}'")
    # --help listed the options each command refuses (--attn; passkey also --ctx)
    for sub, gone, kept in (("ppl", ("--attn",), ("--ctx", "--modes")), ("passkey", ("--attn", "--ctx"), ("--modes",))):
        p = subprocess.run([exe, "eval", sub, "--help"], capture_output=True, text=True)
        c.check(p.returncode == 0 and all(o not in p.stdout for o in gone) and all(o in p.stdout for o in kept),
                f"eval {sub} --help: no {', '.join(gone)} (refused), {', '.join(kept)} listed")
    # eval ppl runs its modes in lockstep steps of at most 128 positions: its --help said the shared options'
    # "prefill chunk in tokens (512)", and a --chunk above 128 changed nothing
    p = subprocess.run([exe, "eval", "ppl", "--help"], capture_output=True, text=True)
    chunk = [ln for ln in p.stdout.splitlines() if ln.strip().startswith("--chunk")]
    c.check(p.returncode == 0 and len(chunk) == 1 and "512" not in chunk[0] and "128" in chunk[0],
            f"eval ppl --help: --chunk's default is the 128-position step: {chunk}")
    p = subprocess.run([exe, "eval", "passkey", "-m", g, "-q", "--lengths", "700"], capture_output=True, text=True)
    c.check(p.returncode == 1 and "tokenizer" in p.stderr, f"passkey on a model without a tokenizer: exit {p.returncode}")
    # -f /dev/zero (run and eval ppl) was read until memory ran out: a text input now stops at 256 MiB (a regular
    # file by its size, before reading; a pipe or device once it gave more); pipes still work (-f /dev/stdin).
    # Under a 3 GiB address-space limit where the binary starts in it (not the sanitizer builds), so that a
    # regression fails with 'out of memory' instead of taking the machine's memory
    import resource

    def as_limit():
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
    limited = subprocess.run([exe, "version"], capture_output=True, preexec_fn=as_limit).returncode == 0
    big = os.path.join(tmp, "big.txt")
    with open(big, "wb") as f:
        f.truncate((256 << 20) + 1)  # sparse: no disk
    for cmd in (["run", "-m", gt, "-n", "1", "-q"], ["eval", "ppl", "-m", gt, "-q"]):
        for path, what in (("/dev/zero", "not a regular file and gave more than the 256 MiB"),
                           (big, f"holds {(256 << 20) + 1} bytes, more than the 256 MiB"), (tmp, "is a folder")):
            try:
                p = subprocess.run([exe, *cmd, "-f", path], capture_output=True, text=True, errors="replace", timeout=60,
                                   preexec_fn=as_limit if limited else None)
                ok, why = p.returncode == 1 and what in p.stderr, p.stderr.strip()[-140:]
            except subprocess.TimeoutExpired:
                ok, why = False, "still running after 60 s"
            c.check(ok, f"{' '.join(cmd[:2]) if cmd[0] == 'eval' else 'run'} -f {os.path.basename(path)}: exit 1 ({why})")
    p = subprocess.run([exe, "run", "-m", gt, "-f", "/dev/stdin", "-n", "1", "-q", "--temp", "0", "--print-ids"],
                       input="hello there", capture_output=True, text=True, errors="replace")
    c.check(p.returncode == 0 and "generated ids:" in p.stderr, f"run -f /dev/stdin (a pipe) still reads the prompt "
            f"({p.stderr.strip()[-120:]})")
    # a model whose forward gives NaN / inf logits: the NLLs summed to NaN and eval ppl printed 'nan' (exit 0), and
    # passkey's argmax over NaN logits answered token 0 (exit 0); both now stop (exit 1, nothing on stdout) naming
    # the mode, the window or prompt, and the first position whose logits are not finite
    tn = [78 if t == 77 else t for t in toks]
    tn[W + 10] = 77  # first seen at window 2, position 10: the NaN embedding row reaches no earlier logits
    mn = Tiny("llama", seed=4)
    mn.emb[77] = np.nan
    gn = os.path.join(tmp, "nan_emb.gguf")
    mn.write_gguf(gn, {"emb": F32, "out": F32})
    # position 10 is the first, one position a step (--chunk 1) or several (until session 64 the CPU attention spread
    # a NaN value row to a step's earlier rows, 0 x NaN of a masked key, and only the window was sure)
    for extra, at in (([], "position 10:"), (["--chunk", "1"], "position 10:")):
        rc, out, err = run("-m", gn, "--tokens", ",".join(map(str, tn)), "--kv-type", "f32", "-q", "--window", str(W),
                           "--score-from", str(S), "--format", "json", *extra)
        c.check(rc == 1 and out == "" and "dense logits are not finite (NaN) at window 2 of 3" in err and at in err,
                f"eval ppl {' '.join(extra)} on a NaN embedding row: exit {rc} (want 1), stdout {out[:60]!r}, "
                f"{err.strip()[-200:]}")
    # activations that overflow (gate and up x 1e19: the SwiGLU product is inf) in a safetensors checkpoint
    mo = Tiny("llama", seed=4)
    for L in mo.layers:
        L["gate"] *= 1e19
        L["up"] *= 1e19
    mo.write_gguf(os.path.join(tmp, "ovf.gguf"), {})
    ho = os.path.join(tmp, "ovf_hf")
    mo.write_hf(ho)
    rc, out, err = run("-m", ho, "--tokens", ids, "-q", "--window", str(W), "--format", "csv", "--modes", "sparse")
    c.check(rc == 1 and out == "" and "sparse logits are not finite" in err and "window 1 of 3" in err,
            f"eval ppl on a safetensors model whose activations overflow: exit {rc}, {err.strip()[-200:]}")
    # finite logits large enough that PPL = exp(mean NLL) passes double's range: json printed 'inf' (json.loads
    # refused the file) and csv 'inf'; now null and an empty field, the mean NLL still given
    mb = Tiny("llama", seed=4)
    mb.out *= 3e4
    gb = os.path.join(tmp, "big_logits.gguf")
    mb.write_gguf(gb, {"emb": F32, "out": F32})
    rc, out, err = run("-m", gb, "--tokens", ids, "-q", "--window", str(W), "--format", "json")

    def no_constant(x):
        raise ValueError(f"non-standard JSON constant {x}")
    try:
        js = json.loads(out, parse_constant=no_constant) if rc == 0 else []
    except ValueError as e:
        js = [{"error": str(e)}]
    c.check(rc == 0 and len(js) == 2 and all(r.get("ppl", 0) is None and r["mean_nll"] > 709 for r in js),
            f"eval ppl json with a PPL past double's range: ppl null, mean NLL kept ({out.strip()[:160]!r})")
    rc, out, err = run("-m", gb, "--tokens", ids, "-q", "--window", str(W), "--format", "csv")
    import csv
    import io
    rows = list(csv.reader(io.StringIO(out))) if rc == 0 else [[]]
    c.check(rc == 0 and len(rows) == 3 and all(len(r) == len(rows[0]) for r in rows) and
            [r[rows[0].index("ppl")] for r in rows[1:]] == ["", ""],
            f"eval ppl csv with a PPL past double's range: an empty ppl field ({out.strip()[-120:]!r})")
    mp = Tiny("llama", seed=8, n_vocab=300)
    mp.layers[1]["down"][3, 5] = np.nan
    gp = os.path.join(tmp, "nan_tok.gguf")
    mp.write_gguf(gp, {}, tokenizer="chat")
    p = subprocess.run([exe, "eval", "passkey", "-m", gp, "-q", "--lengths", "700", "--depths", "0.5", "--format",
                        "json"], capture_output=True, text=True, errors="replace")
    c.check(p.returncode == 1 and p.stdout == "" and "dense logits are not finite (NaN) at length 700, depth 0.50" in
            p.stderr and "the prompt's last token" in p.stderr,
            f"eval passkey on a NaN weight: exit {p.returncode} (want 1), stdout {p.stdout[:60]!r}, "
            f"{p.stderr.strip()[-200:]}")
c.finish()
