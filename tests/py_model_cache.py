"""`infllm run --prompt-cache FILE`: a prompt's K / V saved after its prefill and reused by a later run whose prompt
starts with the same tokens. The runs with the cache generate what the runs without it generate (greedy and seeded
sampling, dense f16 / f32 / bf16 caches, sparse attention), from the whole cached prompt, a longer prompt (its
prefix), a prompt that parts from it; --prompt-cache-ro leaves the file as it was; a file made with another model,
KV type or attention parameters, a file that is not a prompt cache, a truncated one, the model itself or with
--dump-logits are refused (the file left intact)."""
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model_testlib import F16, F32, Q8, Counter, Tiny, np  # noqa: E402

exe = sys.argv[1]
c = Counter("py_model_cache")


def run(model, toks, *extra, n=12):
    """generated ids (greedy unless extra says otherwise), the process"""
    p = subprocess.run([exe, "run", "-m", model, "--tokens", ",".join(map(str, toks)), "-n", str(n), "--print-ids",
                        "--ignore-eos", "--ctx", "1024", *extra], capture_output=True, text=True)
    line = [x for x in p.stderr.splitlines() if x.startswith("generated ids:")]
    return ([int(x) for x in line[0].split(":")[1].split()] if line and p.returncode == 0 else None), p


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def last(p):
    return p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ""


with tempfile.TemporaryDirectory() as tmp:
    rng = np.random.default_rng(7)
    m = Tiny("llama", seed=31, n_vocab=200)
    g = os.path.join(tmp, "m.gguf")
    m.write_gguf(g, {"q": Q8, "k": Q8, "v": Q8, "o": Q8, "gate": Q8, "up": Q8, "down": Q8, "emb": F16, "out": F32})
    P = [int(t) for t in rng.integers(0, 200, 300)]
    pc = os.path.join(tmp, "prompt.cache")
    modes = (("dense f16", ["--attn", "dense"]), ("dense f32", ["--attn", "dense", "--kv-type", "f32"]),
             ("dense bf16", ["--attn", "dense", "--kv-type", "bf16"]),
             ("sparse", ["--attn", "sparse", "--block-size", "16", "--topk", "3", "--local-blocks", "2"]),
             ("sampled", ["--temp", "0.9", "--seed", "5"]))
    for label, args in modes:
        if os.path.exists(pc):
            os.remove(pc)
        want, _ = run(g, P, *args)
        got, p = run(g, P, *args, "--prompt-cache", pc)
        c.check(want is not None and got == want and os.path.exists(pc) and "saved the prompt's 300 tokens" in p.stderr,
                f"{label}: a run that makes the cache generates what a run without it does ({p.stderr.strip()[-80:]})")
        got, p = run(g, P, *args, "--prompt-cache", pc)
        c.check(got == want and "299 of the prompt's 300 tokens" in p.stderr and "saved" not in p.stderr,
                f"{label}: the same prompt again: 299 tokens from the cache, the same tokens, the file not rewritten")
        longer = P + [int(t) for t in rng.integers(0, 200, 57)]
        want2, _ = run(g, longer, *args)
        got2, p = run(g, longer, *args, "--prompt-cache", pc)
        c.check(want2 is not None and got2 == want2 and "300 of the prompt's 357 tokens" in p.stderr and
                "saved the prompt's 357" in p.stderr,
                f"{label}: a longer prompt takes the cached 300, generates as without the cache, saves 357")
        parted = P[:123] + [(P[123] + 1) % 200] + P[124:200]
        want3, _ = run(g, parted, *args)
        got3, p = run(g, parted, *args, "--prompt-cache", pc)
        c.check(want3 is not None and got3 == want3 and "123 of the prompt's 200 tokens" in p.stderr,
                f"{label}: a prompt that parts from the cached one at 123 takes those 123 ({last(p)[-60:]})")
    # --prompt-cache-ro: read, never written
    before = digest(pc)
    got, p = run(g, P + [1, 2, 3], "--temp", "0.9", "--seed", "5", "--prompt-cache", pc, "--prompt-cache-ro")
    want, _ = run(g, P + [1, 2, 3], "--temp", "0.9", "--seed", "5")
    c.check(got == want and digest(pc) == before and "saved" not in p.stderr,
            "--prompt-cache-ro: the cache read, the file unchanged")
    got, p = run(g, P, "--prompt-cache", os.path.join(tmp, "none.cache"), "--prompt-cache-ro")
    c.check(got is not None and not os.path.exists(os.path.join(tmp, "none.cache")),
            "--prompt-cache-ro with no file: runs, makes none")
    # refusals leave the file as it was
    before = digest(pc)  # the "sampled" runs' file: default attention and KV type, 200 tokens
    for label, args, words in (("another KV type", ["--kv-type", "f32"], ["KV cache", "f16", "f32"]),
                               ("other attention parameters", ["--attn", "sparse"], ["attention parameters"]),
                               ("another top-k", ["--topk", "5"], ["attention parameters"])):
        got, p = run(g, P, *args, "--prompt-cache", pc)
        c.check(got is None and p.returncode == 1 and all(w in last(p) for w in words) and digest(pc) == before,
                f"{label}: refused, the file intact ({last(p)[-110:]})")
    # the products' activations (INFLLM_FLOAT_ACT=1: float instead of the int8 schemes) shape every K / V too
    fa = os.path.join(tmp, "float-act.cache")
    p = subprocess.run([exe, "run", "-m", g, "--tokens", ",".join(map(str, P)), "-n", "1", "-q", "--prompt-cache", fa],
                       capture_output=True, text=True, env={**os.environ, "INFLLM_FLOAT_ACT": "1"})
    got, p2 = run(g, P, "--prompt-cache", fa)
    c.check(p.returncode == 0 and got is None and "INFLLM_FLOAT_ACT" in last(p2),
            f"a cache made with float activations, read with int8 ones: refused ({last(p2)[-70:]})")
    m2 = Tiny("llama", seed=32, n_vocab=200)
    g2 = os.path.join(tmp, "other.gguf")
    m2.write_gguf(g2, {})
    got, p = run(g2, P, "--prompt-cache", pc)
    c.check(got is None and p.returncode == 1 and "another model" in last(p) and digest(pc) == before,
            f"another model: refused, the file intact ({last(p)[-90:]})")
    # a file that is not a prompt cache is neither read nor replaced; the model itself is refused
    txt = os.path.join(tmp, "notes.txt")
    with open(txt, "w") as f:
        f.write("my notes\n")
    got, p = run(g, P, "--prompt-cache", txt)
    c.check(got is None and p.returncode == 1 and "not an infllm prompt cache" in last(p) and
            open(txt).read() == "my notes\n", f"a text file as the cache: refused, kept ({last(p)[-90:]})")
    got, p = run(g, P, "--prompt-cache", g)
    c.check(got is None and p.returncode == 2 and "model" in p.stderr, "the model file as the cache: refused")
    got, p = run(g, P, "--prompt-cache", pc, "--dump-logits", os.path.join(tmp, "l.npy"))
    c.check(got is None and p.returncode == 2 and "--dump-logits" in p.stderr, "with --dump-logits: a usage error")
    got, p = run(g, P, "--prompt-cache-ro")
    c.check(got is None and p.returncode == 2, "--prompt-cache-ro alone: a usage error")
    got, p = run(g, P, "--prompt-cache", tmp)
    c.check(got is None and p.returncode == 2, "a folder as the cache: a usage error")
    # a truncated or grown file: its header's sizes do not hold
    for label, cut in (("truncated", -100), ("grown", 7)):
        bad = os.path.join(tmp, f"{label}.cache")
        data = open(pc, "rb").read()
        open(bad, "wb").write(data[:cut] if cut < 0 else data + b"\0" * cut)
        got, p = run(g, P, "--prompt-cache", bad)
        c.check(got is None and p.returncode == 1 and "not what its header describes" in last(p),
                f"a {label} cache: refused ({last(p)[-80:]})")
    # Phi-3 (fused products); a cache follows the model's numbers, not its file: the phi3 GGUF's safetensors twin
    # holds the same bytes (NEOX RoPE, rows unpermuted: bitwise the same logits) and takes its cache, a llama GGUF's
    # twin (Q / K rows permuted back, rotate_half) does not
    mp = Tiny("phi3", seed=33, n_vocab=200)
    gp = os.path.join(tmp, "phi3.gguf")
    mp.write_gguf(gp, {})
    hf = os.path.join(tmp, "phi3-hf")
    mp.write_hf(hf)
    pc2 = os.path.join(tmp, "phi3.cache")
    want, _ = run(gp, P)
    run(gp, P[:250], "--prompt-cache", pc2)
    got, p = run(gp, P, "--prompt-cache", pc2)
    c.check(want is not None and got == want and "250 of the prompt's 300" in p.stderr,
            "phi3: 250 cached tokens, then the rest: as without the cache")
    got, p = run(hf, P, "--prompt-cache", pc2)
    c.check(got == want and "299 of the prompt's 300" in p.stderr,
            f"phi3: the GGUF's cache serves its bitwise-identical safetensors twin ({last(p)[-60:]})")
    hl = os.path.join(tmp, "llama-hf")
    m.write_hf(hl)
    before = digest(pc)
    got, p = run(hl, P, "--prompt-cache", pc)
    c.check(got is None and "another model" in last(p) and digest(pc) == before,
            f"llama: the GGUF's cache with its safetensors twin (permuted Q / K rows): another model, kept")
    shutil.rmtree(hf)
c.finish()
