"""Tiny random Phi-3 and Mistral models against the numpy float64 forward pass.

phi3: q / k / v in one matrix and the MLP's gate / up in one (GGUF attn_qkv and an ffn_up of 2 n_ff rows, as
llama.cpp's converter writes them; HF qkv_proj and gate_up_proj, as transformers' Phi3 stores them), llama.cpp's NEOX
RoPE, LongRoPE factors (config.json's rope type "su", which Phi3Config renames to longrope), also a GGUF with separate
q / k / v tensors; mistral: a llama model as a MistralForCausalLM folder (model_type "mistral", head_dim other than
hidden / heads). Sliding windows (Phi-3's phi3.attention.sliding_window / sliding_window, Mistral's sliding_window,
4096 where the key is absent): every layer's attention over the last `window` positions, against the windowed numpy
forward, in chunks, with an f16 cache, and sparse (every window block selected: the dense result)."""
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model_testlib import F32, Q8, F16, Counter, Tiny, gguf, np, patched, rel_err, run_logits  # noqa: E402

exe = sys.argv[1]
c = Counter("py_model_phi3")
KV32 = ["--kv-type", "f32"]
rng = np.random.default_rng(13)
FLOAT = {"emb": F16, "out": F32, "q": F16, "o": F32, "up": F16, "down": F32}


def refused(path, toks, tmp, args, what, words):
    """runs infllm on the model and expects a failure whose message holds every one of words"""
    try:
        run_logits(exe, path, toks, tmp, args)
        c.check(False, f"{what}: refused")
    except RuntimeError as err:
        last = str(err).splitlines()[-1]
        c.check(all(w in last for w in words), f"{what}: refused ({last[-150:]})")


with tempfile.TemporaryDirectory() as tmp:
    toks = [int(t) for t in rng.integers(0, 96, 150)]
    for label, kw in (("phi3", {}), ("phi3 LongRoPE", dict(longrope=True)), ("phi3 separate q/k/v", dict(fused=False))):
        m = Tiny("phi3", seed=21, **kw)
        g = os.path.join(tmp, "phi3.gguf")
        m.write_gguf(g, FLOAT)
        ref = m.forward(toks)
        got = run_logits(exe, g, toks, tmp, ["--attn", "dense", *KV32])
        e = rel_err(got, ref)
        c.check(got.shape == ref.shape and e < 1e-4, f"{label} GGUF (F16/F32) vs numpy float64: rel err {e:.2e}")
        hf = os.path.join(tmp, "phi3-hf")
        # Phi-3's 128K checkpoints say "su" (transformers renames it longrope)
        m.write_hf(hf, rope_extra={"rope_type": "su"} if m.factors is not None else None)
        e = rel_err(run_logits(exe, hf, toks, tmp, ["--attn", "dense", *KV32]), got)
        c.check(e < 1e-5, f"{label} safetensors twin (qkv_proj, gate_up_proj) vs GGUF: rel err {e:.2e}")
        if label == "phi3":
            e = rel_err(run_logits(exe, g, toks, tmp, ["--attn", "sparse", *KV32]), got)
            c.check(e < 1e-5, f"{label} sparse (all blocks selected at 150 tokens) vs dense: rel err {e:.2e}")
            # the fused matrices' row order is what the agreement above rests on: with gate and up (or k and v)
            # swapped the numpy model must move far outside its tolerance
            for a, b in (("ffn_gate", "ffn_up"), ("attn_k", "attn_v")):
                st = m.stored
                st[f"blk.0.{a}.weight"], st[f"blk.0.{b}.weight"] = st[f"blk.0.{b}.weight"], st[f"blk.0.{a}.weight"]
                e = rel_err(m.forward(toks), got)
                st[f"blk.0.{a}.weight"], st[f"blk.0.{b}.weight"] = st[f"blk.0.{b}.weight"], st[f"blk.0.{a}.weight"]
                c.check(e > 1e-2, f"{label}: {a} and {b} swapped in numpy differ by {e:.2e}")
    # quantized fused matrices (Q8_0 rows), int8 activations in numpy as in infllm
    mq = Tiny("phi3", seed=22)
    gq = os.path.join(tmp, "phi3-q8.gguf")
    mq.write_gguf(gq, {k: Q8 for k in FLOAT})
    e = rel_err(run_logits(exe, gq, toks, tmp, ["--attn", "dense", *KV32]), mq.forward(toks, int8_act=True))
    c.check(e < 4e-2, f"phi3 Q8_0 GGUF vs numpy with the same activation quantization: rel err {e:.2e}")

    # sliding windows: a query attends the keys of the last `window` positions (transformers' rule), every layer
    m = Tiny("phi3", seed=23, sliding_window=40)
    g = os.path.join(tmp, "phi3-swa.gguf")
    m.write_gguf(g, FLOAT)
    hf = os.path.join(tmp, "phi3-swa-hf")
    m.write_hf(hf)
    ref = m.forward(toks)
    m.windows = [0] * m.L
    full = m.forward(toks)
    m.windows = [40] * m.L
    c.check(rel_err(full, ref) > 1e-2, f"phi3 with sliding_window 40: the window changes the numpy logits "
            f"({rel_err(full, ref):.2e} from full attention)")
    for path, kind in ((g, "GGUF"), (hf, "safetensors")):
        got = run_logits(exe, path, toks, tmp, ["--attn", "dense", *KV32])
        e = rel_err(got, ref)
        c.check(e < 1e-4, f"phi3 {kind} with sliding_window 40, 150 tokens vs numpy float64: rel err {e:.2e}")
        # prefill chunks of 16 (windows across the chunk edges), one token at a time past 120, an f16 cache
        e = rel_err(run_logits(exe, path, toks, tmp, ["--attn", "dense", *KV32, "--chunk", "16"]), got)
        c.check(e < 1e-6, f"phi3 {kind} sliding_window 40, chunks of 16 vs one chunk: rel err {e:.2e}")
        e = rel_err(run_logits(exe, path, toks, tmp, ["--attn", "dense", "--kv-type", "f16"]), ref)
        c.check(e < 5e-3, f"phi3 {kind} sliding_window 40, f16 cache vs numpy float64: rel err {e:.2e}")
        # sparse: blocks of 16 with 2 + 2 a query: a window of 40 keys spans at most 4 blocks, so every block in it
        # is selected and the result is the dense one; with 1 + 1 it selects inside the window
        sp = ["--block-size", "16", "--kernel-size", "16", "--kernel-stride", "8", "--dense-len", "-1"]
        e = rel_err(run_logits(exe, path, toks, tmp, ["--attn", "sparse", *KV32, *sp, "--topk", "2",
                                                      "--local-blocks", "2"]), got)
        c.check(e == 0, f"phi3 {kind} sliding_window 40 sparse (4 of 4 window blocks) vs dense: rel err {e:.2e}")
        # (the selection inside the window itself: test_diff's window cases, against the float64 reference)
        few = run_logits(exe, path, toks, tmp, ["--attn", "sparse", *KV32, *sp, "--topk", "1", "--local-blocks", "1"])
        e = rel_err(few, got)
        c.check(np.isfinite(few).all() and e > 0, f"phi3 {kind} sliding_window 40 sparse (2 of 4 window blocks): "
                f"finite, other than dense ({e:.2e})")
    # mistral: a llama model in a MistralForCausalLM folder (explicit head_dim 64 with hidden 128 / 4 heads)
    m = Tiny("llama", seed=24, head_dim=64)
    g = os.path.join(tmp, "llama.gguf")
    m.write_gguf(g, FLOAT)
    ref = m.forward(toks)
    got = run_logits(exe, g, toks, tmp, ["--attn", "dense", *KV32])
    e = rel_err(got, ref)
    c.check(e < 1e-4, f"llama GGUF (head_dim 64) vs numpy float64: rel err {e:.2e}")
    hf = os.path.join(tmp, "mistral-hf")
    m.write_hf(hf, cfg_extra={"model_type": "mistral", "architectures": ["MistralForCausalLM"], "sliding_window": None})
    e = rel_err(run_logits(exe, hf, toks, tmp, ["--attn", "dense", *KV32, "--ctx", "8192"]), got)
    c.check(e < 1e-5, f"mistral safetensors (sliding_window null) vs the llama GGUF: rel err {e:.2e}")
    cfg_path = os.path.join(hf, "config.json")
    cfg = json.load(open(cfg_path))
    del cfg["sliding_window"]  # MistralConfig's default: 4096
    json.dump(cfg, open(cfg_path, "w"))
    e = rel_err(run_logits(exe, hf, toks, tmp, ["--attn", "dense", *KV32, "--ctx", "8192"]), got)
    c.check(e < 1e-5, f"mistral without sliding_window (4096 by default), 150 tokens: rel err {e:.2e}")
    cfg["sliding_window"] = 33
    json.dump(cfg, open(cfg_path, "w"))
    m.windows = [33] * m.L
    e = rel_err(run_logits(exe, hf, toks, tmp, ["--attn", "dense", *KV32]), m.forward(toks))
    c.check(e < 1e-4, f"mistral sliding_window 33, 150 tokens vs numpy float64: rel err {e:.2e}")
    m.windows = [0] * m.L
    cfg["sliding_window"] = "wide"
    json.dump(cfg, open(cfg_path, "w"))
    refused(hf, toks, tmp, [], "mistral with a string sliding_window", ["sliding_window", "integer"])
    # a phi3 GGUF with both attn_qkv and attn_q is ambiguous
    m = Tiny("phi3", seed=25, n_layer=1)

    def extra_q(orig):  # one more tensor, blk.0.attn_q.weight beside attn_qkv, before the header is written
        def write_header(self, *a, **k):
            self.add_tensor("blk.0.attn_q.weight", np.zeros((m.H * m.D, m.E), np.float32))
            return orig(self, *a, **k)
        return write_header
    with patched(gguf.GGUFWriter, "write_header_to_file", extra_q):
        m.write_gguf(os.path.join(tmp, "both.gguf"), FLOAT)
    refused(os.path.join(tmp, "both.gguf"), toks[:10], tmp, [], "phi3 GGUF with attn_qkv and attn_q",
            ["attn_qkv", "attn_q"])
c.finish()
