"""Tiny random Phi-3 and Mistral models against the numpy float64 forward pass.

phi3: q / k / v in one matrix and the MLP's gate / up in one (GGUF attn_qkv and an ffn_up of 2 n_ff rows, as
llama.cpp's converter writes them; HF qkv_proj and gate_up_proj, as transformers' Phi3 stores them), llama.cpp's NEOX
RoPE, LongRoPE factors (config.json's rope type "su", which Phi3Config renames to longrope), also a GGUF with separate
q / k / v tensors; mistral: a llama model as a MistralForCausalLM folder (model_type "mistral", head_dim other than
hidden / heads). Sliding windows (Phi-3's phi3.attention.sliding_window / sliding_window, Mistral's sliding_window,
4096 where the key is absent): a context within the window runs the full causal model, a longer one is refused with
a message."""
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

    # sliding windows: within the window the model is the full causal one; past it refused
    m = Tiny("phi3", seed=23, sliding_window=200)
    g = os.path.join(tmp, "phi3-swa.gguf")
    m.write_gguf(g, FLOAT)
    hf = os.path.join(tmp, "phi3-swa-hf")
    m.write_hf(hf)
    ref = m.forward(toks)
    for path, kind in ((g, "GGUF"), (hf, "safetensors")):
        e = rel_err(run_logits(exe, path, toks, tmp, ["--attn", "dense", *KV32, "--ctx", "200"]), ref)
        c.check(e < 1e-4, f"phi3 {kind} with sliding_window 200, context 200 vs numpy float64: rel err {e:.2e}")
        refused(path, toks, tmp, ["--ctx", "201"], f"phi3 {kind} with sliding_window 200, context 201",
                ["sliding_window", "200", "201"])

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
    e = rel_err(run_logits(exe, hf, toks, tmp, ["--attn", "dense", *KV32, "--ctx", "4096"]), got)
    c.check(e < 1e-5, f"mistral without sliding_window (4096 by default), context 4096: rel err {e:.2e}")
    refused(hf, toks, tmp, ["--ctx", "4097"], "mistral without sliding_window, context 4097", ["4096", "4097"])
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
