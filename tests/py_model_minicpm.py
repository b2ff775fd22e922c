"""Tiny random MiniCPM (muP scales, LongRoPE factors) as a GGUF the way llama.cpp writes it
(minicpm.embedding_scale/residual_scale/logit_scale, rope_factors_long/short tensors) and as
its HF safetensors twin (scale_emb, scale_depth, dim_model_base, rope_scaling longrope):
both agree with the numpy float64 forward pass and with each other."""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model_testlib import F16, F32, Counter, Tiny, np, rel_err, run_logits  # noqa: E402

exe = sys.argv[1]
c = Counter("py_model_minicpm")
rng = np.random.default_rng(11)
with tempfile.TemporaryDirectory() as tmp:
    m = Tiny("minicpm", seed=3, longrope=True)
    toks = [int(t) for t in rng.integers(0, m.V, 130)]
    g = os.path.join(tmp, "minicpm.gguf")
    m.write_gguf(g, {"emb": F16, "q": F16, "down": F16})
    ref = m.forward(toks)
    got = run_logits(exe, g, toks, tmp, ["--attn", "dense"])
    e = rel_err(got, ref)
    c.check(e < 1e-4, f"MiniCPM GGUF vs numpy float64: rel err {e:.2e}")
    for dt in ("F32", "BF16"):
        hf = os.path.join(tmp, "hf_" + dt)
        m.write_hf(hf, dt)
        got_hf = run_logits(exe, hf, toks, tmp, ["--attn", "dense"])
        e = rel_err(got_hf, got)
        tol = 1e-5 if dt == "F32" else 3e-2
        c.check(e < tol, f"MiniCPM HF safetensors twin ({dt}) vs GGUF: rel err {e:.2e}")
    # sparse_config in config.json drives the InfLLM-V2 parameters (window_size / block_size = local blocks)
    import json
    hf = os.path.join(tmp, "hf_F32")
    cfg_path = os.path.join(hf, "config.json")
    cfg = json.load(open(cfg_path))
    cfg["sparse_config"] = {"kernel_size": 32, "kernel_stride": 16, "init_blocks": 1, "block_size": 16,
                            "window_size": 16, "topk": 2, "use_nope": False, "dense_len": 64}
    json.dump(cfg, open(cfg_path, "w"))
    dense = run_logits(exe, hf, toks, tmp, ["--attn", "dense"])
    auto = run_logits(exe, hf, toks, tmp, ["--attn", "auto"])
    flags = run_logits(exe, hf, toks, tmp, ["--attn", "sparse", "--block-size", "16", "--topk", "2", "--local-blocks",
                                            "1", "--init-blocks", "1", "--dense-len", "64"])
    e1, e2 = rel_err(auto, flags), rel_err(auto, dense)
    c.check(e1 < 1e-6 and e2 > 1e-3, f"sparse_config (block 16, topk 2, window 16, dense_len 64) is applied: "
            f"auto == explicit flags ({e1:.1e}), differs from dense ({e2:.1e})")
    # use_nope true (selection on pre-RoPE q / k) is not what the caches compute: refused, not run as false
    for val, want in ((True, "use_nope"), ("yes", "use_nope")):
        cfg["sparse_config"]["use_nope"] = val
        json.dump(cfg, open(cfg_path, "w"))
        try:
            run_logits(exe, hf, toks, tmp, ["--attn", "dense"])
            c.check(False, f"sparse_config.use_nope {val!r}: refused")
        except RuntimeError as err:
            last = str(err).splitlines()[-1]
            c.check(want in last, f"sparse_config.use_nope {val!r}: refused ({last[-110:]})")
    cfg["sparse_config"]["use_nope"] = False
    json.dump(cfg, open(cfg_path, "w"))
    # no muP (plain llama numbers) must give different logits: the scales are really applied
    m.escale, m.rscale, m.lscale = 1.0, 1.0, 1.0
    e = rel_err(m.forward(toks), got)
    c.check(e > 1e-2, f"muP scales matter (unscaled numpy differs by {e:.2e})")
c.finish()
