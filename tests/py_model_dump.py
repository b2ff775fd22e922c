"""`infllm run --dump-qkv DIR [--dump-layers LIST]` on a tiny random GGUF: the dumped post-RoPE
q, k, v of each layer have the shapes [T, heads, head_dim] and equal an independent numpy float64
forward pass (layer 0 directly from the weights, layer 1 after a whole attention + FFN layer);
a chunked prefill dumps the same values bit for bit; the default dumps every layer; generation
after the prompt does not change the dump; bad directories and layer lists give clear errors."""
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model_testlib import F16, F32, Counter, Tiny, np, rel_err  # noqa: E402

exe = sys.argv[1]
c = Counter("py_model_dump")


def run(*args):
    return subprocess.run([exe, *args], capture_output=True, text=True)


def load(d, layer):
    return [np.load(os.path.join(d, f"{n}_layer{layer}.npy")) for n in "qkv"]


with tempfile.TemporaryDirectory() as tmp:
    m = Tiny("llama", seed=11)  # 2 layers, 4 query heads, 2 KV heads, head_dim 32
    g = os.path.join(tmp, "t.gguf")
    m.write_gguf(g, {"emb": F16, "out": F32, "q": F16, "k": F32, "v": F16, "o": F32, "gate": F16, "up": F32,
                     "down": F16})
    rng = np.random.default_rng(3)
    toks = [int(t) for t in rng.integers(0, m.V, 100)]
    ref = {}
    m.forward(toks, collect=ref)
    T = len(toks)
    common = ["run", "-m", g, "--tokens", ",".join(map(str, toks)), "-q", "--kv-type", "f32", "--attn", "dense"]
    base = [*common, "-n", "0"]
    d1 = os.path.join(tmp, "d1")  # created by the run
    p = run(*base, "--dump-qkv", d1, "--dump-layers", "1,0")
    c.check(p.returncode == 0, f"--dump-qkv --dump-layers 1,0 exits 0 ({p.stderr.strip()[:200]})")
    if p.returncode == 0:
        shapes_ok, errs = True, []
        for layer in (0, 1):
            got = load(d1, layer)
            shapes_ok &= [a.shape for a in got] == [(T, m.H, m.D), (T, m.KV, m.D), (T, m.KV, m.D)]
            shapes_ok &= all(a.dtype == np.float32 for a in got)
            if shapes_ok:
                errs += [rel_err(a.astype(np.float64), r) for a, r in zip(got, ref[layer])]
        c.check(shapes_ok, "q [T, Hq, D], k and v [T, Hkv, D], float32, for layers 0 and 1")
        c.check(len(errs) == 6 and max(errs) < 1e-4,
                "dumped q, k, v (post-RoPE) == numpy float64: rel err layer 0 " +
                " ".join(f"{e:.1e}" for e in errs[:3]) + ", layer 1 " + " ".join(f"{e:.1e}" for e in errs[3:]))
        tk = np.load(os.path.join(d1, "tokens.npy"))
        c.check(tk.dtype == np.int32 and tk.tolist() == toks, "tokens.npy holds the prompt's ids (int32)")
        # another way to produce them: 37-token chunks and generation after the prompt (default
        # layer list: all layers)
        d2 = os.path.join(tmp, "d2")
        p = run(*common, "-n", "3", "--chunk", "37", "--ignore-eos", "--temp", "0", "--dump-qkv", d2)
        same = p.returncode == 0 and all(
            all(np.array_equal(a, b) for a, b in zip(load(d1, layer), load(d2, layer))) for layer in (0, 1))
        c.check(same, f"37-token chunks + 3 generated tokens, all layers by default: the same dump bit for bit "
                f"({p.stderr.strip()[:160]})")
    # errors: exit codes and messages, no files
    p = run(*base, "--dump-qkv", os.path.join(tmp, "d3"), "--dump-layers", "0,2")
    c.check(p.returncode == 2 and "layer 2 is out of range" in p.stderr and "0..1" in p.stderr,
            f"layer out of range: exit 2, '{p.stderr.strip()[-100:]}'")
    c.check(not os.path.exists(os.path.join(tmp, "d3", "q_layer0.npy")), "no files after a bad layer list")
    for bad in ("0,x", "-1", "1,", ""):
        p = run(*base, "--dump-qkv", os.path.join(tmp, "d4"), "--dump-layers", bad)
        c.check(p.returncode == 2 and "--dump-layers" in p.stderr, f"--dump-layers '{bad}': exit 2")
    # the list's own message (tools/opts.c opts_list): the option, the list and the item at fault
    p = run(*base, "--dump-qkv", os.path.join(tmp, "d4"), "--dump-layers", "0,x")
    c.check(p.returncode == 2 and "--dump-layers '0,x': 'x' is not a layer number" in p.stderr,
            f"--dump-layers '0,x': the item named ('{p.stderr.strip()[-120:]}')")
    blocker = os.path.join(tmp, "file")
    open(blocker, "w").close()
    for d in (blocker, os.path.join(blocker, "sub")):
        p = run(*base, "--dump-qkv", d)
        c.check(p.returncode == 1 and d in p.stderr and "Traceback" not in p.stderr,
                f"unusable --dump-qkv {os.path.relpath(d, tmp)}: exit 1, '{p.stderr.strip()}'")
    p = run(*base, "--dump-layers", "0")
    c.check(p.returncode == 2 and "--dump-qkv" in p.stderr, "--dump-layers without --dump-qkv: exit 2")
c.finish()
