"""Tiny random qwen2 / qwen3 models (GGUF written with the gguf package, and their safetensors
twins): infllm's logits agree with an independent numpy float64 forward pass. qwen2: q/k/v biases,
llama.cpp's NEOX RoPE (pairs i, i + d/2, Q/K rows unpermuted), tied output embedding; qwen3: a
per-head RMSNorm of q and k before RoPE and a head_dim other than n_embd / n_head. Sparse attention
with every block selected equals dense on both. Sliding-window layers (use_sliding_window with max_window_layers or
layer_types) against the numpy forward with the same windows.""" 
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model_testlib import F16, F32, Q8, Counter, Tiny, np, rel_err, run_logits  # noqa: E402

exe = sys.argv[1]
c = Counter("py_model_qwen")
KV32 = ["--kv-type", "f32"]
rng = np.random.default_rng(11)
FLOAT = {"emb": F16, "out": F32, "q": F16, "k": F32, "v": F16, "o": F32, "gate": F16, "up": F32, "down": F16}
with tempfile.TemporaryDirectory() as tmp:
    for arch, kw in (("qwen2", dict(tied=True)), ("qwen3", dict(head_dim=64))):
        m = Tiny(arch, seed=5, **kw)
        toks = [int(t) for t in rng.integers(0, m.V, 140)]
        g = os.path.join(tmp, f"{arch}.gguf")
        m.write_gguf(g, FLOAT)
        ref = m.forward(toks)
        got = run_logits(exe, g, toks, tmp, ["--attn", "dense", *KV32])
        e = rel_err(got, ref)
        c.check(got.shape == ref.shape and e < 1e-4, f"{arch} GGUF (F16/F32) vs numpy float64: rel err {e:.2e}")
        hf = os.path.join(tmp, f"{arch}-hf")
        m.write_hf(hf)
        got_hf = run_logits(exe, hf, toks, tmp, ["--attn", "dense", *KV32])
        e = rel_err(got_hf, got)
        c.check(e < 1e-5, f"{arch} safetensors twin vs GGUF: rel err {e:.2e}")
        got_s = run_logits(exe, g, toks, tmp, ["--attn", "sparse", *KV32])
        e = rel_err(got_s, got)
        c.check(e < 1e-5, f"{arch} sparse (all blocks selected at 140 tokens) vs dense: rel err {e:.2e}")
        # quantized weights, int8 activations: numpy with the same activation quantization
        mq = Tiny(arch, seed=6, **kw)
        gq = os.path.join(tmp, f"{arch}-q8.gguf")
        mq.write_gguf(gq, {k: Q8 for k in FLOAT})
        gotq, refq = run_logits(exe, gq, toks, tmp, ["--attn", "dense", *KV32]), mq.forward(toks, int8_act=True)
        e = rel_err(gotq, refq)
        c.check(e < 4e-2, f"{arch} Q8_0 GGUF vs numpy with the same activation quantization: rel err {e:.2e}")
    # sliding-window layers (use_sliding_window): from max_window_layers on, or as layer_types says; windows of 25
    # and 9 tokens over 60 against the numpy forward with the same windows, GGUF-less (config.json only)
    import json
    toks = toks[:60]
    for arch in ("qwen2", "qwen3"):
        m = Tiny(arch, seed=8, n_layer=3)
        m.write_gguf(os.path.join(tmp, "sw.gguf"), FLOAT)
        sw = os.path.join(tmp, f"{arch}-sw")
        m.write_hf(sw)
        cfg_path = os.path.join(sw, "config.json")
        cfg = json.load(open(cfg_path))
        for upd, windows in (({"use_sliding_window": True, "sliding_window": 25, "max_window_layers": 1}, [0, 25, 25]),
                             ({"use_sliding_window": True, "sliding_window": 9,
                               "layer_types": ["sliding_attention", "full_attention", "sliding_attention"]}, [9, 0, 9]),
                             ({"use_sliding_window": False, "sliding_window": 9, "max_window_layers": 0}, [0, 0, 0])):
            json.dump({**cfg, **upd}, open(cfg_path, "w"))
            m.windows = windows
            ref = m.forward(toks)
            got = run_logits(exe, sw, toks, tmp, ["--attn", "dense", *KV32])
            e = rel_err(got, ref)
            c.check(e < 1e-4, f"{arch} {upd}: layer windows {windows} vs numpy float64: rel err {e:.2e}")
            if any(windows):
                m.windows = [0, 0, 0]
                far = rel_err(m.forward(toks), ref)
                c.check(far > 1e-2, f"{arch} windows {windows} change the numpy logits ({far:.2e} from full attention)")
    # a qwen3 config.json without head_dim: Qwen3Config's default is 128, not hidden / heads (32 here), which the
    # loader took and then refused the q_proj shape
    m = Tiny("qwen3", seed=9, head_dim=128, n_layer=1)
    m.write_gguf(os.path.join(tmp, "hd.gguf"), FLOAT)
    hd = os.path.join(tmp, "qwen3-hd")
    m.write_hf(hd)
    cfg = json.load(open(os.path.join(hd, "config.json")))
    del cfg["head_dim"]
    json.dump(cfg, open(os.path.join(hd, "config.json"), "w"))
    toks = toks[:40]
    try:
        e = rel_err(run_logits(exe, hd, toks, tmp, ["--attn", "dense", *KV32]), m.forward(toks))
    except RuntimeError as err:
        e = float("inf")
        print(str(err).splitlines()[-1][-160:])
    c.check(e < 1e-4, f"qwen3 config.json without head_dim (128 by Qwen3Config's default) vs numpy float64: rel err {e:.2e}")
    # a qwen3 file without its q/k norms is refused with a message naming the tensor
    m = Tiny("qwen3", seed=7)
    for l in m.layers:
        del l["q_norm"]
    g = os.path.join(tmp, "bad-qwen3.gguf")
    m.write_gguf(g, FLOAT)
    try:
        run_logits(exe, g, [1, 2, 3], tmp, ["--attn", "dense"])
        c.check(False, "qwen3 GGUF without attn_q_norm: refused")
    except RuntimeError as err:
        c.check("attn_q_norm" in str(err), f"qwen3 GGUF without attn_q_norm: refused ({str(err).splitlines()[-1][-90:]})")
c.finish()
