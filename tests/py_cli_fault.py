#!/usr/bin/env python3
"""The infllm command when a heap allocation fails: under tests/fault_shim.c (LD_PRELOAD; INFLLM_FAULT_SHIM says which
allocations fail) every command must either finish as without the failure (a buffer libc can do without) or exit 1
with a message on stderr that says memory ran out, never die by a signal, exit 0 with other output (a silent 0, a
row of zeros) or exit 2 (a usage error). Each command runs once to count its allocations, then once with each of
them failing in turn (nth=K; evenly spaced when there are many), single-threaded so that the count is exact; and
with every allocation above a size failing (min=BYTES: the tensors).

argv[1] is the infllm binary; the shim comes in INFLLM_FAULT_SHIM_LIB (tests/CMakeLists.txt), or as argv[2]. Where
the shim is not built (not glibc on Linux, a sanitizer or a cross build: INFLLM_FAULT_SHIM_SKIP says why) the test
prints SKIP and exits 77, which ctest lists as skipped.
"""
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_counter import Counter  # noqa: E402

INFLLM = sys.argv[1]
SHIM = os.environ.get("INFLLM_FAULT_SHIM_LIB") or (sys.argv[2] if len(sys.argv) > 2 else "")
why = os.environ.get("INFLLM_FAULT_SHIM_SKIP") or ("" if SHIM else "no shim given (INFLLM_FAULT_SHIM_LIB or argv[2])")
if why:
    print(f"SKIP: py_cli_fault: {why}")
    sys.exit(77)

c = Counter("py_cli_fault")
MAX_RUNS = int(os.environ.get("INFLLM_FAULT_MAX_RUNS", "1000"))  # allocations failed in turn, at most, a command
# what a message about memory says: the tools' own ("out of memory", "out of host memory"), strerror(ENOMEM) through
# a failed fopen ("Cannot allocate memory"), libgomp's ("libgomp: Out of memory allocating N bytes", and on more than
# one thread "libgomp: Thread creation failed: Resource temporarily unavailable": pthread_create's EAGAIN when the
# allocation for a new thread fails; libgomp exits 1 there, before our code can see it)
WATCH = []  # folders whose temporary files a run must not leave behind
OOM = re.compile(r"out of (host )?memory|cannot allocate memory|libgomp: thread creation failed", re.I)


def run(args, spec, threads=1):
    """the command under the shim; with threads > 1 a run past HANG_S seconds is killed and returned with returncode
    None (a hang: a thread whose allocation failed skipped a barrier the others wait at)"""
    env = {**os.environ, "LD_PRELOAD": SHIM, "INFLLM_FAULT_SHIM": spec, "OMP_NUM_THREADS": str(threads)}
    try:
        return subprocess.run([INFLLM, *args], capture_output=True, text=True, errors="replace",
                              timeout=300 if threads == 1 else HANG_S, env=env)
    except subprocess.TimeoutExpired as e:
        if threads == 1:
            raise
        return subprocess.CompletedProcess(e.cmd, None, "", "")


HANG_S = 30  # seconds a threaded run may take (each takes well under one)


def count(args, threads=1):
    """the command's output without a failure and its allocations (the shim's report on stderr)"""
    p = run(args, "report=2", threads)
    m = re.search(r"allocations (\d+)\n?$", p.stderr)
    return p, int(m.group(1)) if m else 0


def judge(p, what, same):
    """no signal; exit 1 with a message about memory, or exit 0 with the output same() accepts"""
    if p.returncode is None:
        return f"{what}: still running after {HANG_S} s (a hang), killed"
    if p.returncode < 0:
        return f"{what}: killed by signal {-p.returncode}: {p.stderr[-300:]!r}"
    if p.returncode == 1:
        return None if OOM.search(p.stderr) else f"{what}: exit 1 without a message about memory: {p.stderr[-300:]!r}"
    if p.returncode == 0:
        return None if same(p) else f"{what}: exit 0 with other output: {p.stdout[:300]!r}"
    return f"{what}: exit {p.returncode}: {p.stderr[-300:]!r}"


def sweep(name, args, same, before=None, threads=1):
    """every allocation of the command failing in turn (at most MAX_RUNS of them, evenly spaced); before() runs
    before each run (it removes the outputs, so that a run that exits 0 without writing them cannot pass on the
    files of an earlier run). threads > 1: the command on that many OpenMP threads (its --threads too), where the
    Kth allocation falls in one thread or another (the count is not exact): no run may hang, and the first hang
    ends the sweep"""
    if before:
        before()
    base, n = count(args, threads)
    c.check(base.returncode == 0 and n > 0, f"{name}: runs under the shim, {n} allocations counted "
            f"(exit {base.returncode}, {base.stderr[-200:]!r})")
    if base.returncode or not n:
        return
    ks = range(1, n + 1) if n <= MAX_RUNS else sorted({1 + (n - 1) * i // (MAX_RUNS - 1) for i in range(MAX_RUNS)})
    bad, fails, done = [], 0, 0
    for k in ks:
        done += 1
        if before:
            before()
        p = run(args, f"nth={k}", threads)
        fails += p.returncode == 1
        b = judge(p, f"nth={k}", same)
        if p.returncode is None:
            bad.append(b)
            break
        # a failed write leaves no temporary file behind (npy_write writes PATH.tmp.PID, then renames)
        left = [f for d in WATCH for f in glob.glob(os.path.join(d, "**", "*.tmp.*"), recursive=True)]
        for f in left:
            os.remove(f)
        if left and not b:
            b = f"nth={k}: exit {p.returncode} left {[os.path.basename(f) for f in left]}"
        if b:
            bad.append(b)
    c.check(not bad, f"{name}: {done} of {n} allocations failed in turn: {fails} exit 1 with a message about "
            f"memory, the others as without the failure" + ("".join("\n    " + b for b in bad[:8])))


def on_threads(args, n):
    """args with its `--threads 1` made `--threads n`"""
    return [str(n) if i and args[i - 1] == "--threads" else x for i, x in enumerate(args)]


def json_rows(p):
    try:
        return json.loads(p.stdout)
    except ValueError:
        return None


# the shim is loaded (it counts the allocations; that it makes them fail, the min= runs below show: a shim that did
# nothing would pass every sweep)
p, n = count(["version"])
c.check(p.returncode == 0 and n >= 1, f"the shim is loaded: 'infllm version' counted {n} allocations ({p.stderr!r})")

SMALL = ["--seqlen", "256", "--heads", "4", "--kv-heads", "2", "--head-dim", "64", "--reps", "1", "--threads", "1",
         "--block-size", "16", "--topk", "4", "--local-blocks", "2", "--no-warmup", "--format", "json"]

# bench attn / backward / decode: the tensors (min=100000: each is 131072 or 65536 bytes here) and every allocation in turn; a
# run that succeeds prints the same rows (backward: the same attended pairs, which a failed allocation in their count
# made 0)
for words in (["attn", "--peak", "10"], ["backward"], ["decode"]):
    args = ["bench", *words, *SMALL]
    base, _ = count(args)
    rows0 = json_rows(base) or []
    key = [(r.get("mode"), r.get("seqlen"), r.get("pairs")) for r in rows0]
    p = run(args, "min=60000")
    c.check(p.returncode == 1 and p.stderr.startswith(f"infllm bench {words[0]}: out of memory") and p.stdout == "",
            f"bench {words[0]} with its tensors' allocations failing: exit {p.returncode}, {p.stderr[-200:]!r}")
    sweep(f"bench {words[0]}", args,
          lambda q: [(r.get("mode"), r.get("seqlen"), r.get("pairs")) for r in (json_rows(q) or [])] == key)
# a decode step on 4 threads: the few-token path (1 token x 1 KV head < 4 threads; 4096 keys are 8 segments of 512 for
# the threads), whose regions every thread enters whatever the work
args = ["bench", "decode", "--seqlen", "4096", "--heads", "4", "--kv-heads", "1", "--head-dim", "64", "--reps", "1",
        "--threads", "4", "--no-warmup", "--format", "json"]
base, _ = count(args, 4)
key = [(r.get("mode"), r.get("seqlen")) for r in (json_rows(base) or [])]
c.check(len(key) == 2, f"bench decode on 4 threads: runs under the shim ({base.stderr[-200:]!r})")
sweep("bench decode, 4 threads", args, lambda q: [(r.get("mode"), r.get("seqlen")) for r in (json_rows(q) or [])] == key,
      threads=4)
p, n = count(["bench", "peak", "--seconds", "0.05", "--threads", "1", "--format", "json"])
if p.returncode == 0:
    sweep("bench peak", ["bench", "peak", "--seconds", "0.05", "--threads", "1", "--format", "json"],
          lambda q: json_rows(q) is not None and len(json_rows(q)) == 1)

try:
    import numpy as np
except ImportError:
    np = None
    print("skip: infllm attn, run, eval and bench run (no numpy)")

with tempfile.TemporaryDirectory() as tmp:
    WATCH.append(tmp)
    if np is not None:
        rng = np.random.default_rng(3)
        for name, h in (("q", 4), ("k", 2), ("v", 2)):
            np.save(os.path.join(tmp, f"{name}.npy"), rng.standard_normal((96, h, 32)).astype(np.float32))
        out = os.path.join(tmp, "out.npy")
        dump = os.path.join(tmp, "dump")
        grads = os.path.join(tmp, "grads")

        def clear():
            for path in (out, dump, grads):
                if os.path.isdir(path):
                    shutil.rmtree(path)
                elif os.path.exists(path):
                    os.remove(path)

        args = ["attn", "--q", os.path.join(tmp, "q.npy"), "--k", os.path.join(tmp, "k.npy"), "--v",
                os.path.join(tmp, "v.npy"), "--block-size", "16", "--topk", "2", "--local-blocks", "1",
                "--kernel-size", "16", "--kernel-stride", "8", "--threads", "1", "--mode", "sparse", "--out", out]
        base, _ = count(args)
        ref = np.load(out) if base.returncode == 0 else None

        def same_out(q):
            try:
                return ref is not None and np.array_equal(np.load(out), ref)
            except (OSError, ValueError):
                return False

        sweep("attn", args, same_out, clear)
        # on 3 threads (each result the same bits as on one): a thread whose scratch allocation failed used to skip
        # the region's worksharing loop, and the others waited at its barrier for ever (session 62: nth=64..70 of
        # 120 hung this command on 2 threads)
        sweep("attn, 3 threads", on_threads(args, 3), same_out, clear, threads=3)
        # one query a sequence's last --cache-len rows (the query offsets and the gathered rows are allocated)
        args = args[:-2] + ["--cache-len", "90", "--out", out]
        base, _ = count(args)
        ref = np.load(out) if base.returncode == 0 else None
        sweep("attn --cache-len", args, same_out, clear)
        # --dump (every intermediate of the pipeline as .npy files) and --dout (the backward: dq, dk, dv), whose
        # allocations the plain run does not make
        args = args[:-4] + ["--out", out, "--dump", dump]
        base, _ = count(args)
        dumped = sorted(os.listdir(dump)) if base.returncode == 0 else None

        def same_dump(q):
            return same_out(q) and os.path.isdir(dump) and sorted(os.listdir(dump)) == dumped

        ref = np.load(out) if base.returncode == 0 else None
        sweep("attn --dump", args, same_dump, clear)
        # the explicit ops (stage-1 scores, block scores, top-k) on 3 threads
        sweep("attn --dump, 3 threads", on_threads(args, 3), same_dump, clear, threads=3)
        np.save(os.path.join(tmp, "dout.npy"), rng.standard_normal((96, 4, 32)).astype(np.float32))
        args = args[:-2] + ["--dout", os.path.join(tmp, "dout.npy"), "--grad-dir", grads]
        base, _ = count(args)
        gref = {n: np.load(os.path.join(grads, n + ".npy")) for n in ("dq", "dk", "dv")} if base.returncode == 0 else None

        def same_grads(q):
            try:
                return same_out(q) and gref is not None and all(
                    np.array_equal(np.load(os.path.join(grads, n + ".npy")), gref[n]) for n in gref)
            except (OSError, ValueError):
                return False

        ref = np.load(out) if base.returncode == 0 else None
        sweep("attn --dout", args, same_grads, clear)

    try:
        from model_testlib import Q8, Tiny  # noqa: E402  (numpy and gguf; SKIPs the whole test without them)
        have_model = np is not None
    except SystemExit:
        have_model = False
        print("skip: infllm run, eval and bench run (no gguf module)")
    if have_model:
        g = os.path.join(tmp, "t.gguf")
        Tiny("llama", seed=5).write_gguf(g, {"q": Q8, "k": Q8, "v": Q8, "o": Q8, "gate": Q8, "up": Q8, "down": Q8})
        toks = "3,14,15,92,65,35,89,79"
        args = ["run", "-m", g, "--tokens", toks, "-n", "3", "--temp", "0", "--print-ids", "-q", "--ignore-eos",
                "-t", "1"]
        base, _ = count(args)
        ids = base.stderr[base.stderr.find("generated ids:"):].split("\n")[0]
        sweep("run", args, lambda q: ids in q.stderr and q.stdout == base.stdout)
        # --prompt-cache: made (the file removed before each run), then read and rewritten for a longer prompt (a
        # fresh copy before each run); a run that succeeds generates the same tokens, a failed save leaves no
        # temporary file (WATCH)
        pcf, pc0 = os.path.join(tmp, "p.cache"), os.path.join(tmp, "p0.cache")
        if tmp not in WATCH:
            WATCH.append(tmp)
        args = ["run", "-m", g, "--tokens", toks, "-n", "3", "--temp", "0", "--print-ids", "-q", "--ignore-eos",
                "-t", "1", "--prompt-cache", pcf]
        sweep("run --prompt-cache (made)", args, lambda q: ids in q.stderr and q.stdout == base.stdout,
              before=lambda: os.path.exists(pcf) and os.remove(pcf))
        count(args)
        shutil.copy(pcf, pc0)
        args2 = ["run", "-m", g, "--tokens", toks + ",7,7", "-n", "3", "--temp", "0", "--print-ids", "-q",
                 "--ignore-eos", "-t", "1", "--prompt-cache", pcf]
        base2, _ = count(args2)
        ids2 = base2.stderr[base2.stderr.find("generated ids:"):].split("\n")[0]
        sweep("run --prompt-cache (read, rewritten)", args2, lambda q: ids2 in q.stderr and q.stdout == base2.stdout,
              before=lambda: shutil.copy(pc0, pcf))
        args = ["eval", "ppl", "-m", g, "--tokens", toks + "," + toks, "--window", "8", "--format", "json", "-q",
                "-t", "1"]
        base, _ = count(args)

        def no_time(text):  # the rows without their "seconds"
            return [{k: v for k, v in r.items() if k != "seconds"} for r in (json.loads(text) if text else [])]

        sweep("eval ppl", args, lambda q: no_time(q.stdout) == no_time(base.stdout))
        args = ["bench", "run", "-m", g, "--lengths", "16", "--gen", "2", "--llamacpp", "off", "--format", "json",
                "-t", "1"]
        base, _ = count(args)
        sweep("bench run", args, lambda q: [r["context"] for r in (json_rows(q) or [])] == [16, 16])
        # a text prompt through a byte-level tokenizer and the chat template with --answer-prefix (the prompt's copy
        # and its realloc), and eval passkey's prompts (its text and chat realloc)
        gt = os.path.join(tmp, "tok.gguf")
        Tiny("llama", seed=8, n_vocab=300).write_gguf(gt, {}, tokenizer="chat")
        args = ["run", "-m", gt, "-p", "hello", "--chat", "--answer-prefix", "Sure", "-n", "2", "--temp", "0", "-q",
                "--ignore-eos", "-t", "1"]
        base, _ = count(args)
        sweep("run --chat", args, lambda q: q.stdout == base.stdout)
        args = ["eval", "passkey", "-m", gt, "-q", "--block-size", "16", "--topk", "2", "--local-blocks", "1",
                "--lengths", "700", "--depths", "0.5", "--gen", "2", "--chat", "on", "--format", "json", "-t", "1"]
        base, _ = count(args)
        sweep("eval passkey", args, lambda q: no_time(q.stdout) == no_time(base.stdout))
        # a Mistral chat template read off its tags (mtok.c's mistral_read: a normalised copy of each tag, the message
        # expressions built up, Small 3.2's default system prompt evaluated) in a Hugging Face folder
        from model_testlib import CHAT_SPECIALS, write_chat_tokenizer  # noqa: E402
        hm = os.path.join(tmp, "hf-mistral")
        mm = Tiny("llama", seed=8, n_vocab=256 + len(CHAT_SPECIALS) + 5)
        mm.write_gguf(os.path.join(tmp, "mm.gguf"), {})  # (write_hf takes the values the GGUF stores)
        mm.write_hf(hm)
        write_chat_tokenizer(hm)
        shutil.copy(os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "chat_tpl_mistral_v7.jinja"),
                    os.path.join(hm, "chat_template.jinja"))
        with open(os.path.join(hm, "tokenizer_config.json"), "w") as f:
            json.dump({"bos_token": "<|begin_of_text|>", "eos_token": "<|endoftext|>"}, f)
        args = ["run", "-m", hm, "-p", "hello", "--chat", "-n", "2", "--temp", "0", "-q", "--ignore-eos", "-t", "1",
                "--ctx", "4096"]
        base, _ = count(args)
        c.check(base.returncode == 0, f"run --chat, Mistral Small 3.2's template: runs ({base.stderr[-200:]!r})")
        sweep("run --chat (Mistral)", args, lambda q: q.stdout == base.stdout)

c.finish()
