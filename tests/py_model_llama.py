"""Tiny random llama GGUF (Q8_0/Q5_0/Q5_1/Q2_K/Q3_K/Q4_K/Q5_K/Q6_K/IQ4_NL/IQ4_XS/F16/F32 tensors) written with the gguf package: infllm's
logits agree with an independent numpy float64 forward pass; its safetensors twin (HF
rotate_half RoPE, unpermuted Q/K) gives the same logits; sparse mode where every block is
selected equals dense; a genuinely sparse run stays close."""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model_testlib import (F16, F32, IQ4NL, IQ4XS, Q2K, Q3K, Q4K, Q5K, Q6K, Q5_0, Q5_1, Q8, Counter, Tiny, np,  # noqa: E402
                           patched, rel_err, run_logits)

exe = sys.argv[1]
c = Counter("py_model_llama")
KV32 = ["--kv-type", "f32"]  # float-exact comparisons: f32 cache through the attention library
rng = np.random.default_rng(7)


def check_mix(tmp, toks, label, seed, fmix, imix, ilabel):
    """a 256-wide Tiny llama written with the types fmix against numpy float64 over the gguf package's dequantization
    with float activations (INFLLM_FLOAT_ACT=1: within 1e-4), then written with imix and run on the SIMD kernels' int8
    activations against numpy quantizing each product's input the same way (within 4e-2, argmax >= 90%)"""
    m = Tiny("llama", seed=seed, n_embd=256, n_ff=512)
    g = os.path.join(tmp, f"mix{seed}.gguf")
    m.write_gguf(g, fmix)
    e = rel_err(run_logits(exe, g, toks, tmp, ["--attn", "dense", *KV32], env={"INFLLM_FLOAT_ACT": "1"}), m.forward(toks))
    c.check(e < 1e-4, f"{label} GGUF, float activations, vs numpy float64 over the gguf package's dequantization: "
            f"rel err {e:.2e}")
    m.write_gguf(g, imix)  # the same weights (seed), stored as imix's types
    got, ref = run_logits(exe, g, toks, tmp, ["--attn", "dense", *KV32]), m.forward(toks, int8_act=True)
    e = rel_err(got, ref)
    agree = float((got.argmax(-1) == ref.argmax(-1)).mean())
    c.check(e < 4e-2 and agree >= 0.9, f"{ilabel} with int8 activations (the SIMD kernels) vs numpy with the same "
            f"activation quantization: rel err {e:.2e}, argmax agrees at {agree * 100:.0f}%")


with tempfile.TemporaryDirectory() as tmp:
    # 1. float weights: exact comparison, GGUF vs numpy vs HF twin (f32 and bf16)
    m = Tiny("llama", seed=1)
    toks = [int(t) for t in rng.integers(0, m.V, 150)]
    g = os.path.join(tmp, "f.gguf")
    m.write_gguf(g, {"emb": F16, "out": F32, "q": F16, "k": F32, "v": F16, "o": F32, "gate": F16, "up": F32, "down": F16})
    ref = m.forward(toks)
    got = run_logits(exe, g, toks, tmp, ["--attn", "dense", *KV32])
    e = rel_err(got, ref)
    c.check(got.shape == ref.shape and e < 1e-4, f"F16/F32 GGUF vs numpy float64: rel err {e:.2e}")
    hf = os.path.join(tmp, "hf")
    m.write_hf(hf)
    got_hf = run_logits(exe, hf, toks, tmp, ["--attn", "dense", *KV32])
    e = rel_err(got_hf, got)
    c.check(e < 1e-5, f"HF safetensors twin (rotate_half) vs GGUF (interleaved): rel err {e:.2e}")
    argmax_same = float((got_hf.argmax(-1) == got.argmax(-1)).mean())
    c.check(argmax_same == 1.0, f"HF twin vs GGUF: same argmax at {argmax_same * 100:.0f}% of positions")
    # 2. Q8_0 weights vs numpy on the dequantized values (activations are int8-quantized inside)
    m2 = Tiny("llama", seed=2)
    g2 = os.path.join(tmp, "q.gguf")
    m2.write_gguf(g2, {"emb": Q8, "out": Q8, "q": Q8, "k": Q8, "v": Q8, "o": Q8, "gate": Q8, "up": Q8, "down": Q8})
    ref2 = m2.forward(toks)
    got2 = run_logits(exe, g2, toks, tmp, ["--attn", "dense", *KV32])
    e = rel_err(got2, ref2)
    agree = float((got2.argmax(-1) == ref2.argmax(-1)).mean())
    c.check(e < 4e-2 and agree >= 0.9,
            f"Q8_0 GGUF vs numpy float64 (dequantized weights; int8 activations inside): rel err {e:.2e}, "
            f"argmax agrees at {agree * 100:.0f}%")
    # 2b. Q5_0 / Q5_1 (quantized by the gguf package), Q2_K / Q3_K / IQ4_NL / IQ4_XS (random codes)
    # vs numpy on the values the gguf package dequantizes (row lengths multiples of 256 for the
    # K-quants). With float activations (INFLLM_FLOAT_ACT=1: weights dequantized per block) the bit
    # layouts must agree to rounding. With int8 activations this wider model amplifies the activation
    # rounding (Q8_0 weights: 7.1e-2, these types 0.35), so the reference quantizes each product's
    # input the same way (Tiny.forward(int8_act=True)); what is left is rounding-flip noise (Q8_0
    # weights: 5.1e-3, these types without Q5_1: 1.3e-2; Q5_1's f16 sum term is not modelled, so it
    # sits out of that run: tests/test_quant.c holds its kernel to 2e-5 of the exact product).
    mix = {"emb": Q5_0, "out": Q5_1, "q": Q3K, "k": Q2K, "v": IQ4NL, "o": Q2K, "gate": IQ4XS, "up": Q5_1, "down": Q3K}
    check_mix(tmp, toks, "Q5_0 / Q5_1 / Q2_K / Q3_K / IQ4_NL / IQ4_XS", 3, mix, {**mix, "out": Q5_0, "up": Q5_0},
              "the same but Q5_1")
    # 2c. Q4_K / Q5_K / Q6_K (random codes): the same two checks. Their products (and Q2_K / Q3_K / IQ4_XS's above)
    # take QACT_Q8_K activations (one scale per 256 values, the super-block's products summed in int32), which
    # Tiny.forward(int8_act=True) models.
    kmix = {"emb": Q5_0, "out": Q6K, "q": Q4K, "k": Q5K, "v": Q6K, "o": Q4K, "gate": Q5K, "up": Q6K, "down": Q4K}
    check_mix(tmp, toks, "Q4_K / Q5_K / Q6_K", 5, kmix, kmix, "the same")
    # 3. sparse with every block selected == dense; chunked prefill == one chunk
    got_s = run_logits(exe, g, toks, tmp, ["--attn", "sparse", *KV32])
    e = rel_err(got_s, got)
    c.check(e < 1e-5, f"sparse (all blocks selected at 150 tokens) vs dense: rel err {e:.2e}")
    got_c = run_logits(exe, g, toks, tmp, ["--attn", "dense", "--chunk", "37", *KV32])
    e = rel_err(got_c, got)
    c.check(e < 1e-5, f"chunked prefill (37-token chunks) vs one chunk: rel err {e:.2e}")
    # f16 cache (the default): dense attention with llama.cpp's numerics (f16 Q and probabilities)
    got_f16 = run_logits(exe, g, toks, tmp, ["--attn", "dense", "--kv-type", "f16"])
    e, e64 = rel_err(got_f16, got), rel_err(got_f16, ref)
    c.check(0 < e < 5e-3 and e64 < 5e-3, f"f16 KV cache (llama.cpp-order attention) vs f32 cache: rel err {e:.2e}, "
            f"vs numpy float64 {e64:.2e}")
    got_f16c = run_logits(exe, g, toks, tmp, ["--attn", "dense", "--kv-type", "f16", "--chunk", "37"])
    e = rel_err(got_f16c, got_f16)
    c.check(e == 0, f"f16 dense, 37-token chunks vs one chunk: rel err {e:.2e} (bitwise)")
    got_f16s = run_logits(exe, g, toks, tmp, ["--attn", "sparse", "--kv-type", "f16"])
    e = rel_err(got_f16s, got_f16)
    c.check(e < 5e-3, f"f16 sparse (library, all blocks) vs f16 dense (llama.cpp order): rel err {e:.2e}")
    # 4. genuinely sparse: block 16, K = topk 2 + local 1 = 3 blocks (init, local, current forced)
    got_sp = run_logits(exe, g, toks, tmp, ["--attn", "sparse", "--block-size", "16", "--topk", "2",
                                             "--local-blocks", "1", "--init-blocks", "1", *KV32])
    e = rel_err(got_sp, got)
    early = rel_err(got_sp[:48], got[:48])
    c.check(np.isfinite(got_sp).all() and early < 1e-5 and e > 1e-3,
            f"sparse (3 of up to 10 blocks): first 48 positions equal dense ({early:.1e}), later ones differ "
            f"(rel diff {e:.2e}: sparsity is active)")
    # 5. RoPE scaling that llama.cpp reads from a GGUF: rope_freqs.weight (Llama 3.1+ frequency divisors) and
    # linear scaling (rope.scaling.factor divides the positions; also a config.json rope_scaling of type linear);
    # both used to be ignored, running these models with unscaled RoPE. YaRN is refused, not run unscaled.
    for kw, what in ((dict(rope_freqs=True), "rope_freqs.weight"), (dict(rope_linear=4.0), "linear factor 4"),
                     (dict(rope_freqs=True, rope_linear=2.0), "rope_freqs.weight + linear factor 2")):
        mr = Tiny("llama", seed=8, n_layer=1, **kw)
        gr = os.path.join(tmp, "rope.gguf")
        mr.write_gguf(gr, {})
        got_r, ref_r = run_logits(exe, gr, toks, tmp, ["--attn", "dense", *KV32]), mr.forward(toks)
        e = rel_err(got_r, ref_r)
        c.check(e < 1e-4, f"GGUF with {what} vs numpy float64: rel err {e:.2e}")
        if "rope_freqs" not in kw:
            hr = os.path.join(tmp, "rope-hf")
            mr.write_hf(hr)
            e = rel_err(run_logits(exe, hr, toks, tmp, ["--attn", "dense", *KV32]), ref_r)
            c.check(e < 1e-4, f"config.json rope_scaling linear (factor {mr.rope_linear}) vs numpy float64: rel err {e:.2e}")
    # Llama 3.1's rope_scaling (type llama3) in config.json, and its GGUF twin's rope_freqs.weight: the three bands
    # (kept, blended, divided by factor) all occur at head_dim 32 with these lengths
    l3 = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 256}
    m3 = Tiny("llama", seed=9, n_layer=1, rope_llama3=l3)
    bands = (np.sum(m3.rope_freqs == 1.0), np.sum(m3.rope_freqs == 8.0))
    c.check(bands[0] > 0 and bands[1] > 0 and bands[0] + bands[1] < len(m3.rope_freqs),
            f"llama3 divisors take all three bands: {bands[0]} kept, {bands[1]} divided by 8, "
            f"{len(m3.rope_freqs) - bands[0] - bands[1]} blended")
    h3, g3 = os.path.join(tmp, "l3-hf"), os.path.join(tmp, "l3.gguf")
    m3.write_gguf(g3, {})
    m3.write_hf(h3)
    ref3 = m3.forward(toks)
    e_h = rel_err(run_logits(exe, h3, toks, tmp, ["--attn", "dense", *KV32]), ref3)
    e_g = rel_err(run_logits(exe, g3, toks, tmp, ["--attn", "dense", *KV32]), ref3)
    c.check(e_h < 1e-4 and e_g < 1e-4,
            f"config.json rope_scaling llama3 / GGUF rope_freqs twin vs numpy float64: rel err {e_h:.2e} / {e_g:.2e}")
    bad3 = dict(l3, high_freq_factor=0.5)
    m3.rope_llama3 = bad3  # the same weights, a config whose bands are reversed
    m3.write_hf(os.path.join(tmp, "l3-bad"))
    try:
        run_logits(exe, os.path.join(tmp, "l3-bad"), toks[:4], tmp)
        c.check(False, "rope_scaling llama3 with high_freq_factor < low_freq_factor: refused")
    except RuntimeError as err:
        c.check("llama3" in str(err), f"rope_scaling llama3 with high < low freq factor: refused ({str(err)[-90:]})")
    # transformers 5 writes config.json's RoPE as one rope_parameters object (rope_theta, rope_type, factors) and no
    # top-level rope_theta: the loader read only the 4.x keys and ran such checkpoints at theta 10000 unscaled
    # (scripts/hf_check.py found it against transformers 5.24)
    for kw, what in ((dict(theta=500000.0), "rope_theta 500000"), (dict(rope_linear=4.0), "linear factor 4"),
                     (dict(rope_llama3=l3, theta=50000.0), "llama3, rope_theta 50000")):
        mv = Tiny("llama", seed=10, n_layer=1, **kw)
        mv.write_gguf(os.path.join(tmp, "v5.gguf"), {})  # fills the stored weights write_hf saves
        hv = os.path.join(tmp, "v5-hf")
        mv.write_hf(hv, layout="v5")
        e = rel_err(run_logits(exe, hv, toks, tmp, ["--attn", "dense", *KV32]), mv.forward(toks))
        c.check(e < 1e-4, f"config.json rope_parameters (transformers 5) with {what} vs numpy float64: rel err {e:.2e}")
    mv.write_hf(hv, layout="v5", rope_extra={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64})
    try:
        run_logits(exe, hv, toks[:4], tmp)
        c.check(False, "rope_parameters of type yarn: refused")
    except RuntimeError as err:
        c.check("yarn" in str(err), f"rope_parameters of type yarn: refused ({str(err).splitlines()[-1][-80:]})")
    # LongRoPE's cos/sin factor as transformers computes it: attention_factor when given, else from factor when
    # given, else from max_position_embeddings / original (both keys used to be ignored: factor 1 here)
    ml = Tiny("llama", seed=11, n_layer=1, longrope=True)
    ml.write_gguf(os.path.join(tmp, "lr.gguf"), {})
    # (the last: no max_position_embeddings, so LlamaConfig's default 2048 over 512, where the loader assumed 4096)
    for extra, msc, cfg_x in (({"attention_factor": 1.3}, 1.3, None),
                              ({"factor": 4.0}, np.sqrt(1 + np.log(4.0) / np.log(4096)), None), ({}, 1.0, None),
                              ({"original_max_position_embeddings": 512}, np.sqrt(1 + np.log(4.0) / np.log(512)),
                               {"max_position_embeddings": None})):
        for layout in ("v4", "v5"):
            hl = os.path.join(tmp, "lr-hf")
            ml.write_hf(hl, layout=layout, rope_extra=extra, cfg_extra=cfg_x)
            ml.rope_mscale = msc
            e = rel_err(run_logits(exe, hl, toks, tmp, ["--attn", "dense", *KV32, "--ctx", "8192"]), ml.forward(toks))
            c.check(e < 1e-4, f"longrope {extra or 'without factor'} ({layout} config): cos/sin x {msc:.4f} as "
                    f"transformers, vs numpy float64: rel err {e:.2e}")
    # a top-level original_max_position_embeddings that differs from the section's: transformers 5 takes the
    # top-level one, 4.x the section's; refused rather than one of them picked
    ml.write_hf(hl, cfg_extra={"original_max_position_embeddings": 2048})
    try:
        run_logits(exe, hl, toks[:4], tmp)
        c.check(False, "two different original_max_position_embeddings: refused")
    except RuntimeError as err:
        c.check("differ" in str(err), f"two different original_max_position_embeddings: refused "
                f"({str(err).splitlines()[-1][-90:]})")
    import gguf as _gguf
    my = Tiny("llama", seed=8, n_layer=1)

    def yarn_init(orig):
        def init(self, *a, **k):
            orig(self, *a, **k)
            self.add_string("llama.rope.scaling.type", "yarn")
            self.add_float32("llama.rope.scaling.factor", 4.0)
        return init
    with patched(_gguf.GGUFWriter, "__init__", yarn_init):
        my.write_gguf(os.path.join(tmp, "yarn.gguf"), {})
    try:
        run_logits(exe, os.path.join(tmp, "yarn.gguf"), toks[:4], tmp)
        c.check(False, "GGUF with rope.scaling.type yarn: refused")
    except RuntimeError as err:
        c.check("yarn" in str(err), f"GGUF with rope.scaling.type yarn: refused ({str(err).splitlines()[-1][-80:]})")
    # llama.cpp's converter writes a LlamaForCausalLM checkpoint with longrope scaling as rope.scaling.type longrope
    # without the factor tensors (it writes them for Phi-3 / MiniCPM only): it ran unscaled (scripts/hf_check.py
    # --converter: 1.1 relative off transformers); refused now. With the factors (the MiniCPM test) it runs.

    def longrope_init(orig):
        def init(self, *a, **k):
            orig(self, *a, **k)
            self.add_string("llama.rope.scaling.type", "longrope")
        return init
    with patched(_gguf.GGUFWriter, "__init__", longrope_init):
        my.write_gguf(os.path.join(tmp, "lr-nofactors.gguf"), {})
        mlr = Tiny("llama", seed=12, n_layer=1, longrope=True)
        mlr.write_gguf(os.path.join(tmp, "lr-factors.gguf"), {})
    try:
        run_logits(exe, os.path.join(tmp, "lr-nofactors.gguf"), toks[:4], tmp)
        c.check(False, "GGUF with rope.scaling.type longrope and no factor tensors: refused")
    except RuntimeError as err:
        c.check("rope_factors_long" in str(err), f"GGUF with rope.scaling.type longrope and no factor tensors: refused "
                f"({str(err).splitlines()[-1][-80:]})")
    e = rel_err(run_logits(exe, os.path.join(tmp, "lr-factors.gguf"), toks, tmp, ["--attn", "dense", *KV32]),
                mlr.forward(toks))
    c.check(e < 1e-4, f"GGUF with rope.scaling.type longrope and its factor tensors vs numpy float64: rel err {e:.2e}")
c.finish()
