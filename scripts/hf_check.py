#!/usr/bin/env python3
"""hf_check.py (opt-in, not in CI: needs torch and transformers): infllm's forward pass against the reference
implementation, Hugging Face transformers, instead of the numpy re-implementations of tests/py_model_*.

For every architecture the loader accepts in Hugging Face form (LlamaForCausalLM, MistralForCausalLM,
Qwen2ForCausalLM, Qwen3ForCausalLM, Phi3ForCausalLM; MiniCPM is remote code, not in transformers, so it is not
checked here) it builds tiny random
models with transformers itself (config -> model, every parameter redrawn from a seeded generator so that norms,
biases and q/k norms are not their trivial initial values), saves them with save_pretrained (safetensors; also
bf16 / f16 and sharded), reloads them with from_pretrained (so the reference is what transformers makes of the
same files), and compares the logits of every position of a fixed token list (`infllm run --tokens ...
--dump-logits F -n 0`):

  * dense attention, f32 KV cache (`--attn dense --kv-type f32`, also prefill in 1- and 7-token chunks) against
    transformers in float64, eager attention. The tolerance comes from float32 rounding noise, per case: noise =
    max |f32 - f64| / max |f64| of transformers' own float32 run; transformers keeps the RoPE angles in float32
    even in its float64 run, and infllm computes them by ggml's recurrence (pair i's angle carries up to i + 1
    float32 roundings), so a second term is the change of the float64 logits when inverse frequency i moves by
    i + 1 ulps (angle). Pass: err <= TOL_FACTOR x (noise + angle), TOL_FACTOR 4 for summation orders other than
    transformers'; each line reports err / (noise + angle) (0.2-1 on transformers 5.24).
  * greedy generation (16 tokens through the decode steps, f32 KV) equals transformers' float64 argmax, up to the
    first near-tie (top-2 margin within 2x the tolerance).
  * f16 / bf16 KV caches (some cases; f16 also in 1- and 7-token chunks): the noise term is how much transformers' float64 logits move when the
    attention's q / k / v (and for bf16 its output, as infllm's bf16 path stores it) are rounded to that type.
  * sensitivity: the float64 model with rope_theta x 1.01 / rms_norm_eps x 1.5 must move far outside the
    tolerance (it does by 260-720x), so a misread field cannot hide in it.
  * `--attn sparse` with every block selected (block 16, topk 64 >= blocks) equals dense within the tolerance.
  * configs with fields infllm does not implement (YaRN / dynamic RoPE, partial rotary, o_proj
    / MLP biases, activations other than SiLU) must be refused with a message and an exit status, no crash.
  * both config.json layouts: transformers 5's `rope_parameters` (what this transformers writes) and 4.x's
    top-level `rope_theta` + `rope_scaling` (what most published checkpoints have).
  * with --converter: the GGUF route, llama.cpp's convert_hf_to_gguf.py (--outtype f32 / f16 / bf16) on the same
    checkpoints (plus a tiny SentencePiece tokenizer, which the converter needs), infllm on the GGUF against
    transformers over the same rounded matrices. PyPI has the converter inside llama-cpp-python's sources:
      pip download --no-deps --no-binary :all: llama-cpp-python -d /tmp/lcpp
      tar xzf /tmp/lcpp/llama_cpp_python-*.tar.gz -C /tmp/lcpp   (vendor/llama.cpp/convert_hf_to_gguf.py with its
      conversion/ and gguf-py/ beside it); pip install sentencepiece protobuf

  usage: python3 scripts/hf_check.py [--bin build/infllm] [--only SUBSTRING] [--keep DIR] [--converter PATH]
  setup: python3 -m venv /tmp/hfvenv && /tmp/hfvenv/bin/pip install torch transformers numpy
         (then run it with /tmp/hfvenv/bin/python; ~2.5 minutes on 2 cores with --converter)
Exit status 0 when every case passes, 1 otherwise."""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

TOL_FACTOR = 4.0
here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--bin", default=os.path.join(here, "build", "infllm"))
ap.add_argument("--only", default="", help="run the cases whose name contains this")
ap.add_argument("--keep", default="", help="keep the checkpoints in this folder")
ap.add_argument("--converter", default="",
                help="llama.cpp's convert_hf_to_gguf.py (with its conversion/ and gguf-py/ beside it): also check "
                     "the GGUF route; without it that part is skipped")
args = ap.parse_args()
torch.set_num_threads(max(1, os.cpu_count() or 1))
transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()

CLS = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config, "qwen3": transformers.Qwen3Config,
       "mistral": transformers.MistralConfig, "phi3": transformers.Phi3Config}
# Phi3Config's token ids (pad 32000) are past the tiny vocabulary: its embedding's padding_idx would be out of range
PHI3 = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)
BASE = dict(vocab_size=160, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=4096, rms_norm_eps=1e-5)


def randomize(model, seed):
    """every parameter redrawn: matrices ~ N(0, 1/fan_in) (q/k twice that, so that attention is not uniform),
    the embedding N(0, 1), norm weights 1 + N(0, 0.2), biases N(0, 0.3)"""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g, dtype=torch.float64))
            elif name.endswith("bias"):
                p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=torch.float64))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
            else:
                s = 1 / math.sqrt(p.shape[1]) * (2.0 if any(k in name for k in ("q_proj", "k_proj")) else 1.0)
                p.copy_(s * torch.randn(p.shape, generator=g, dtype=torch.float64))


def v4_layout(cfg):
    """config.json as transformers 4.x writes it: rope_theta at the top, the scaling in rope_scaling"""
    rp = cfg.pop("rope_parameters", None) or {}
    rp = dict(rp)
    if "rope_theta" in rp:
        cfg["rope_theta"] = rp.pop("rope_theta")
    if rp.get("rope_type", "default") != "default":
        cfg["rope_scaling"] = rp
    elif len(rp) > 1:
        cfg["rope_scaling"] = rp
    cfg.pop("layer_types", None) if all(t == "full_attention" for t in cfg.get("layer_types", [])) else None
    return cfg


def v4_layout_drop_layer_types(cfg):
    """v4_layout, and no layer_types (4.x configs have none: the sliding-window keys decide)"""
    cfg = v4_layout(cfg)
    cfg.pop("layer_types", None)
    return cfg


def hf_logits(folder, toks, dtype):
    m = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation="eager")
    m.eval()
    with torch.no_grad():
        out = m(torch.tensor([toks])).logits[0].to(torch.float64).numpy()
    return m, out


def hf_logits_model(m, toks):
    with torch.no_grad():
        return m(torch.tensor([toks])).logits[0].to(torch.float64).numpy()


def rel(a, b):
    return float(np.abs(a - b).max() / (np.abs(b).max() + 1e-300))


def run_infllm(folder, toks, tmp, extra=(), ctx=1024):
    out = os.path.join(tmp, "logits.npy")
    if os.path.exists(out):
        os.remove(out)
    cmd = [args.bin, "run", "-m", folder, "--tokens", ",".join(map(str, toks)), "-n", "0", "-q", "--ctx", str(ctx),
           "--dump-logits", out, "-t", "2", *extra]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0 or not os.path.exists(out):
        return None, p
    return np.load(out).astype(np.float64), p


def angle_noise(m64, toks, ref64):
    """the change of the float64 logits when inverse frequency i moves by i + 1 float32 ulps (ggml's theta
    recurrence rounds once a pair: pair i's angle carries up to i + 1 roundings), the sign alternating over the
    pairs (the worst case of independent roundings would not line up better)"""
    saved = []
    for mod in m64.modules():
        for attr in ("inv_freq", "original_inv_freq", "long_inv_freq"):
            t = getattr(mod, attr, None)
            if isinstance(t, torch.Tensor):
                n = t.shape[0]
                f = torch.tensor([1 + (1 if i % 2 == 0 else -1) * (i + 1) * 2.0 ** -24 for i in range(n)],
                                 dtype=t.dtype)
                saved.append((t, t.clone()))
                t.mul_(f)
    try:
        return rel(hf_logits_model(m64, toks), ref64)
    finally:
        for t, old in saved:
            t.copy_(old)


def hf_logits_rounded(m64, toks, dt, round_out):
    """transformers' float64 logits with the attention's q, k, v rounded to dt (f16 / bf16: what infllm's 16-bit
    KV caches store; its f16 dense path rounds q too, its bf16 path q and the output), and the output when
    round_out: the noise scale of a 16-bit cache"""
    mod = sys.modules[type(m64).__module__]
    orig = mod.eager_attention_forward

    def wrapped(module, query, key, value, *a, **kw):
        r = lambda t: t.to(dt).to(t.dtype)  # noqa: E731
        out, w = orig(module, r(query), r(key), r(value), *a, **kw)
        return (r(out) if round_out else out), w
    mod.eager_attention_forward = wrapped
    try:
        return hf_logits_model(m64, toks)
    finally:
        mod.eager_attention_forward = orig


results = []


def report(name, ok, msg):
    results.append((name, ok))
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {msg}", flush=True)


def make(tmp, name, arch, cfg_kw, seed, edit=None, save_dtype=None, shard=None, extra_head=False):
    """a random checkpoint in tmp/name; edit(cfg dict) rewrites config.json after saving; save_dtype: the weights
    stored as bf16 / f16 (transformers' own rounding); shard: save_pretrained's max_shard_size (an index.json and
    several files); extra_head: an lm_head.weight of its own added to a tied checkpoint"""
    cfg = CLS[arch](**{**BASE, **cfg_kw})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager", dtype=torch.float32)
    randomize(model, seed)
    if save_dtype is not None:
        model = model.to(save_dtype)
    folder = os.path.join(tmp, name)
    model.save_pretrained(folder, **({"max_shard_size": shard} if shard else {}))
    if extra_head:
        from safetensors.torch import load_file, save_file
        st = os.path.join(folder, "model.safetensors")
        sd = load_file(st)
        g = torch.Generator().manual_seed(seed + 1)
        sd["lm_head.weight"] = torch.randn(sd["model.embed_tokens.weight"].shape, generator=g) / 8
        save_file(sd, st, metadata={"format": "pt"})
    if edit:
        p = os.path.join(folder, "config.json")
        with open(p) as f:
            c = json.load(f)
        c = edit(c)
        with open(p, "w") as f:
            json.dump(c, f, indent=1)
    return folder


def check_match(tmp, name, arch, cfg_kw, seed=0, T=96, edit=None, sparse=True, sensitivity=(), ctx=1024, kv16=False,
                chunks=(), gen=0, **make_kw):
    if args.only and args.only not in name:
        return
    folder = make(tmp, name, arch, cfg_kw, seed, edit, **make_kw)
    rng = np.random.default_rng(seed + 100)
    toks = [int(t) for t in rng.integers(0, BASE["vocab_size"] if "vocab_size" not in cfg_kw else cfg_kw["vocab_size"], T)]
    m32, ref32 = hf_logits(folder, toks, torch.float32)
    m64, ref64 = hf_logits(folder, toks, torch.float64)
    noise = rel(ref32, ref64)
    ang = angle_noise(m64, toks, ref64)
    tol = TOL_FACTOR * (noise + ang)
    got, p = run_infllm(folder, toks, tmp, ["--attn", "dense", "--kv-type", "f32"], ctx=ctx)
    if got is None:
        report(name, False, f"infllm refused a model transformers runs: {p.stderr.strip()[-300:]}")
        return
    if got.shape != ref64.shape:
        report(name, False, f"logits shape {got.shape}, transformers {ref64.shape}")
        return
    err = rel(got, ref64)
    agree = float((got.argmax(-1) == ref64.argmax(-1)).mean())
    report(name, err <= tol, f"dense f32 KV vs transformers f64: rel err {err:.2e}, tol {tol:.2e} "
           f"(f32 noise {noise:.1e} + angle {ang:.1e}; err/noise {err / (noise + ang):.1f}), argmax {agree * 100:.0f}%")
    # chunked prefill (--chunk 1: every token alone, as decode steps run; the f16 dense path then takes
    # llama.cpp's one-token order)
    t16 = TOL_FACTOR * (rel(hf_logits_rounded(m64, toks, torch.float16, False), ref64) + noise + ang) if chunks else 0
    for ch, kv in ((c, k) for c in chunks for k in ("f32", "f16")):
        gc, p = run_infllm(folder, toks, tmp, ["--attn", "dense", "--kv-type", kv, "--chunk", str(ch)], ctx=ctx)
        e, t = (rel(gc, ref64) if gc is not None else float("inf")), (tol if kv == "f32" else t16)
        report(f"{name} chunk {ch} {kv} KV", e <= t, f"prefill in {ch}-token chunks, {kv} KV, vs transformers f64: "
               f"rel err {e:.2e}, tol {t:.2e}" if gc is not None else f"failed: {p.stderr.strip()[-300:]}")
    if gen:  # greedy generation through the decode path, up to the first near-tie of transformers' float64 logits
        p = subprocess.run([args.bin, "run", "-m", folder, "--tokens", ",".join(map(str, toks)), "-n", str(gen),
                            "--temp", "0", "--ignore-eos", "--print-ids", "--attn", "dense", "--kv-type", "f32",
                            "--ctx", str(ctx), "-t", "2"], capture_output=True, text=True)
        line = [x for x in p.stderr.splitlines() if x.startswith("generated ids:")]
        ours = [int(x) for x in line[0].split(":")[1].split()] if line else []
        seq, want, sure = list(toks), [], 0
        with torch.no_grad():
            for _ in range(gen):
                lg = m64(torch.tensor([seq])).logits[0, -1].numpy()
                top = np.sort(lg)[-2:]
                if top[1] - top[0] <= 2 * tol * np.abs(lg).max():
                    break  # a near-tie: rounding may take either token
                want.append(int(lg.argmax()))
                seq.append(want[-1])
                sure += 1
        report(f"{name} greedy {gen}", p.returncode == 0 and sure > 0 and ours[:sure] == want,
               f"{sure} greedy tokens (f32 KV, decode steps) as transformers' f64 argmax: "
               f"{'identical' if ours[:sure] == want else f'ours {ours[:sure]} vs {want}'}")
    for kv, dt, round_out in (("f16", torch.float16, False), ("bf16", torch.bfloat16, True)) if kv16 else ():
        g16, p = run_infllm(folder, toks, tmp, ["--attn", "dense", "--kv-type", kv], ctx=ctx)
        n16 = rel(hf_logits_rounded(m64, toks, dt, round_out), ref64)
        t16 = TOL_FACTOR * (n16 + noise + ang)
        if g16 is None:
            report(f"{name} {kv} KV", False, f"failed: {p.stderr.strip()[-300:]}")
        else:
            e = rel(g16, ref64)
            report(f"{name} {kv} KV", e <= t16, f"dense {kv} KV vs transformers f64: rel err {e:.2e}, tol {t16:.2e} "
                   f"({kv}-rounded q/k/v{'/out' if round_out else ''} move transformers by {n16:.1e}; "
                   f"err/noise {e / (n16 + noise + ang):.1f})")
    if sparse:
        gs, p = run_infllm(folder, toks, tmp, ["--attn", "sparse", "--kv-type", "f32", "--block-size", "16",
                                               "--topk", "64", "--local-blocks", "2", "--init-blocks", "1"], ctx=ctx)
        if gs is None:
            report(name + " sparse", False, f"sparse run failed: {p.stderr.strip()[-300:]}")
        else:
            e = rel(gs, got)
            report(name + " sparse", e <= tol, f"sparse, all {math.ceil(T / 16)} blocks selected, vs dense: rel {e:.2e}")
    for field, mult in sensitivity:
        if True:
            c = json.load(open(os.path.join(folder, "config.json")))
            if field == "rope_theta":
                rp = c.get("rope_parameters") or {}
                if "rope_theta" in rp:
                    rp["rope_theta"] *= mult
                else:
                    c["rope_theta"] *= mult
            else:
                c[field] *= mult
            f2 = folder + "-" + field
            shutil.copytree(folder, f2)
            json.dump(c, open(os.path.join(f2, "config.json"), "w"))
            _, alt = hf_logits(f2, toks, torch.float64)
            d = rel(alt, ref64)
            report(f"{name}: {field} x {mult} is seen", d > 10 * tol,
                   f"transformers f64 moves by {d:.2e} = {d / tol:.0f}x the tolerance")


SPM = None


def spm_tokenizer(tmp):
    """a tiny SentencePiece model (llama.cpp's converter needs a tokenizer; the token ids used come from --tokens)"""
    global SPM
    if SPM is None:
        import random
        import sentencepiece as spm
        words = "the quick brown fox jumps over lazy dog a an of to in is was for on with as by at from it".split()
        rnd = random.Random(0)
        corpus = os.path.join(tmp, "corpus.txt")
        with open(corpus, "w") as f:
            f.write("\n".join(" ".join(rnd.choice(words) for _ in range(12)) for _ in range(3000)))
        spm.SentencePieceTrainer.train(input=corpus, model_prefix=os.path.join(tmp, "spm"), vocab_size=100,
                                       model_type="bpe", character_coverage=1.0, minloglevel=2)
        SPM = os.path.join(tmp, "spm.model")
    return SPM


def check_gguf(tmp, name, arch, cfg_kw, seed=0, T=96, outtypes=("f32", "f16", "bf16"), ctx=1024, refused=None):
    """the checkpoint through llama.cpp's converter (Q/K rows permuted for llama, rope_freqs for llama3, ...): infllm
    on the GGUF against transformers in float64 over the same values (the matrices rounded as the GGUF stores them:
    llama.cpp keeps 1-D tensors in F32), tolerance as check_match's"""
    if not args.converter or (args.only and args.only not in name):
        return
    folder = make(tmp, name, arch, cfg_kw, seed)
    shutil.copy(spm_tokenizer(tmp), os.path.join(folder, "tokenizer.model"))
    rng = np.random.default_rng(seed + 100)
    toks = [int(t) for t in rng.integers(0, BASE["vocab_size"], T)]
    m32, ref32 = hf_logits(folder, toks, torch.float32)
    m64, ref64 = hf_logits(folder, toks, torch.float64)
    noise, ang = rel(ref32, ref64), angle_noise(m64, toks, ref64)
    tol = TOL_FACTOR * (noise + ang)
    for ot in outtypes:
        g = os.path.join(tmp, f"{name}-{ot}.gguf")
        p = subprocess.run([sys.executable, args.converter, folder, "--outtype", ot, "--outfile", g],
                           capture_output=True, text=True)
        if p.returncode != 0:
            report(f"{name} GGUF {ot}", False, f"converter failed: {p.stderr.strip()[-300:]}")
            continue
        ref = ref64
        if ot != "f32":
            dt = torch.float16 if ot == "f16" else torch.bfloat16
            m_r, _ = hf_logits(folder, toks[:1], torch.float64)
            with torch.no_grad():
                for _, prm in m_r.named_parameters():
                    if prm.dim() == 2:
                        prm.copy_(prm.to(dt).to(torch.float64))
            ref = hf_logits_model(m_r, toks)
        got, p = run_infllm(g, toks, tmp, ["--attn", "dense", "--kv-type", "f32"], ctx=ctx)
        if refused:  # a file infllm must refuse (a message naming `refused`, an exit status, no crash)
            msg = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ""
            report(f"{name} GGUF {ot} refused", got is None and 0 < p.returncode < 128 and refused in msg,
                   f"exit {p.returncode}: {msg[-200:]}" if got is None else "RAN (not refused)")
            continue
        if got is None:
            report(f"{name} GGUF {ot}", False, f"infllm refused the converted file: {p.stderr.strip()[-300:]}")
            continue
        e = rel(got, ref)
        report(f"{name} GGUF {ot}", e <= tol, f"llama.cpp's converter --outtype {ot}, dense f32 KV vs transformers f64"
               f"{' (matrices ' + ot + '-rounded)' if ot != 'f32' else ''}: rel err {e:.2e}, tol {tol:.2e}")


def check_refused(tmp, name, arch, cfg_kw, want, seed=0, edit=None):
    """infllm must exit non-zero with a message naming `want` (a substring, case-insensitive)"""
    if args.only and args.only not in name:
        return
    folder = make(tmp, name, arch, cfg_kw, seed, edit)
    toks = list(range(1, 9))
    got, p = run_infllm(folder, toks, tmp, ["--attn", "dense", "--kv-type", "f32"])
    msg = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ""
    crashed = p.returncode < 0 or p.returncode > 128
    ok = got is None and not crashed and want.lower() in msg.lower()
    report(name, ok, f"exit {p.returncode}: {msg[-200:]}" if got is None else "RAN (not refused)")


def main():
    if not os.access(args.bin, os.X_OK):
        sys.exit(f"hf_check: {args.bin} is not an executable (build: cmake -S . -B build -DINFLLM_CUDA=OFF && "
                 "cmake --build build -j2)")
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, infllm {args.bin}")
    tmp = args.keep or tempfile.mkdtemp(prefix="hf_check_")
    os.makedirs(tmp, exist_ok=True)
    try:
        cases(tmp)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    bad = [n for n, ok in results if not ok]
    print(f"hf_check: {len(results) - len(bad)} passed, {len(bad)} failed" + (f" ({', '.join(bad)})" if bad else ""))
    return 1 if bad else 0


def cases(tmp):
    L3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 256, "rope_theta": 10000.0}
    # Llama: GQA group sizes, tied / untied, theta, eps, head_dim, RoPE scaling types
    check_match(tmp, "llama G2 untied", "llama", dict(rope_parameters={"rope_type": "default", "rope_theta": 500000.0}),
                sensitivity=(("rope_theta", 1.01),), kv16=True)
    check_match(tmp, "llama G2 untied v4 config", "llama",
                dict(rope_parameters={"rope_type": "default", "rope_theta": 500000.0}), edit=v4_layout)
    for hq, hkv in ((4, 4), (8, 2), (8, 1)):
        check_match(tmp, f"llama G{hq // hkv} ({hq}/{hkv} heads)", "llama",
                    dict(num_attention_heads=hq, num_key_value_heads=hkv), seed=hq * 10 + hkv, sparse=hkv == 1)
    check_match(tmp, "llama G3 (6/2 heads, hidden 96)", "llama", dict(num_attention_heads=6, hidden_size=96), seed=62)
    check_match(tmp, "llama G16 (16/1 heads, head_dim 16)", "llama", dict(num_attention_heads=16, num_key_value_heads=1,
                                                                         head_dim=16), seed=161)
    check_match(tmp, "llama G5, hidden 80, ff 72", "llama",
                dict(hidden_size=80, intermediate_size=72, num_attention_heads=5, num_key_value_heads=1), seed=63,
                kv16=True)
    check_match(tmp, "llama tied", "llama", dict(tie_word_embeddings=True), seed=3)
    # tie_word_embeddings true with an lm_head.weight of its own in the file: transformers 5 reads the lm_head
    # (4.x re-tied it to the embedding); infllm does as transformers 5
    check_match(tmp, "llama tied + own lm_head", "llama", dict(tie_word_embeddings=True), seed=3, extra_head=True,
                sparse=False)
    # checkpoints as transformers stores them in 16 bits, and sharded (model.safetensors.index.json)
    check_match(tmp, "llama bf16 checkpoint", "llama", {}, seed=50, save_dtype=torch.bfloat16, sparse=False)
    check_match(tmp, "qwen3 f16 checkpoint", "qwen3", dict(head_dim=32), seed=51, save_dtype=torch.float16,
                sparse=False)
    check_match(tmp, "qwen2 sharded checkpoint", "qwen2", {}, seed=52, shard="100KB", sparse=False)
    # chunked prefill and one-token steps, and a prompt past the default 512-token chunk
    check_match(tmp, "llama chunks", "llama", {}, seed=53, chunks=(1, 7), sparse=False, gen=16)
    check_match(tmp, "qwen3 chunks", "qwen3", dict(head_dim=64), seed=54, chunks=(1, 7), sparse=False, gen=16)
    check_match(tmp, "qwen2 generate", "qwen2", {}, seed=56, sparse=False, gen=16)
    check_match(tmp, "qwen2 600 tokens", "qwen2", {}, seed=55, T=600, kv16=True)
    check_match(tmp, "llama head_dim 64 (4 x 64 != 128)", "llama", dict(head_dim=64), seed=4)
    check_match(tmp, "llama eps 1e-2", "llama", dict(rms_norm_eps=1e-2), seed=5, sensitivity=(("rms_norm_eps", 1.5),))
    check_match(tmp, "llama rope linear 4", "llama", dict(rope_parameters={"rope_type": "linear", "factor": 4.0,
                                                                          "rope_theta": 10000.0}), seed=6)
    check_match(tmp, "llama rope linear 4 v4 config", "llama",
                dict(rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0}), seed=6,
                edit=v4_layout)
    check_match(tmp, "llama rope llama3", "llama", dict(rope_parameters=L3), seed=7)
    check_match(tmp, "llama rope llama3 v4 config", "llama", dict(rope_parameters=L3), seed=7, edit=v4_layout)
    rr = np.random.default_rng(8)
    short = [float(x) for x in 1 + rr.random(16)]
    long_ = [float(x) for x in 1 + 4 * rr.random(16)]
    LR = {"rope_type": "longrope", "short_factor": short, "long_factor": long_, "rope_theta": 10000.0,
          "original_max_position_embeddings": 64}
    # transformers takes the long factors when the sequence exceeds original_max_position_embeddings, infllm (as
    # llama.cpp) when --ctx does: 96 tokens and --ctx 96 > 64 take the long ones in both, 48 tokens and --ctx 64
    # the short ones
    check_match(tmp, "llama rope longrope long", "llama", dict(rope_parameters=LR, max_position_embeddings=256),
                seed=8, ctx=96)
    check_match(tmp, "llama rope longrope short", "llama", dict(rope_parameters=LR, max_position_embeddings=256),
                seed=8, T=48, ctx=64)
    check_match(tmp, "llama rope longrope long v4 config", "llama",
                dict(rope_parameters=LR, max_position_embeddings=256), seed=8, ctx=96, edit=v4_layout)
    check_match(tmp, "llama rope longrope factor 2", "llama",
                dict(rope_parameters={**LR, "factor": 2.0}, max_position_embeddings=256), seed=8, ctx=96)
    check_match(tmp, "llama rope longrope attention_factor 1.3", "llama",
                dict(rope_parameters={**LR, "attention_factor": 1.3}, max_position_embeddings=256), seed=8, ctx=96)
    # Qwen2: q/k/v biases (always), tied and untied
    check_match(tmp, "qwen2 G2 untied", "qwen2", dict(rope_parameters={"rope_type": "default", "rope_theta": 1e6}),
                seed=20, sensitivity=(("rope_theta", 1.01),), kv16=True)
    check_match(tmp, "qwen2 G4 tied v4 config", "qwen2", dict(num_attention_heads=8, tie_word_embeddings=True,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6}), seed=21, edit=v4_layout)
    # Qwen3: q/k norms, head_dim != hidden / heads
    check_match(tmp, "qwen3 head_dim 64", "qwen3", dict(head_dim=64, rope_parameters={"rope_type": "default",
                                                                                      "rope_theta": 1e6}),
                seed=30, sensitivity=(("rope_theta", 1.01),), kv16=True)
    check_match(tmp, "qwen3 head_dim 16 G4 tied v4 config", "qwen3",
                dict(head_dim=16, num_attention_heads=8, tie_word_embeddings=True), seed=31, edit=v4_layout)
    check_match(tmp, "qwen3 head_dim 80", "qwen3", dict(head_dim=80), seed=32, kv16=True)
    # Qwen3Config's head_dim defaults to 128, not hidden / heads (32 here)
    check_match(tmp, "qwen3 head_dim absent (128)", "qwen3", dict(head_dim=128), seed=33, sparse=False,
                edit=lambda c: {k: v for k, v in c.items() if k != "head_dim"})
    # use_sliding_window whose window starts at a layer past the last one: every layer is full attention
    check_match(tmp, "qwen2 use_sliding_window, max_window_layers 28 >= layers", "qwen2",
                dict(use_sliding_window=True, sliding_window=16, max_window_layers=28), seed=22, sparse=False,
                edit=v4_layout_drop_layer_types)
    # Mistral: Llama's numbers with a sliding window (4096 where config.json has no sliding_window, as MistralConfig;
    # within it the attention is the full causal one) and a head_dim of its own
    check_match(tmp, "mistral G2 head_dim 64, no window", "mistral", dict(head_dim=64, sliding_window=None),
                seed=70, sensitivity=(("rope_theta", 1.01),), kv16=True, gen=16)
    check_match(tmp, "mistral sliding_window absent (4096)", "mistral", dict(num_attention_heads=8), seed=71,
                sparse=False, edit=lambda c: {k: v for k, v in c.items() if k != "sliding_window"})
    check_match(tmp, "mistral sliding_window 96, context 96", "mistral", dict(sliding_window=96), seed=72, ctx=96)
    # Phi-3: fused qkv_proj / gate_up_proj, LongRoPE (long and short factors; the early checkpoints' "su" name)
    check_match(tmp, "phi3 G2", "phi3", dict(**PHI3), seed=80, sensitivity=(("rope_theta", 1.01),), kv16=True,
                chunks=(1, 7), gen=16)
    check_match(tmp, "phi3 G4 (8/2 heads) tied v4 config", "phi3", dict(**PHI3, num_attention_heads=8,
                tie_word_embeddings=True), seed=81, edit=v4_layout)
    PLR = dict(rope_parameters={k: v for k, v in LR.items() if k != "original_max_position_embeddings"},
               original_max_position_embeddings=64, max_position_embeddings=256)
    check_match(tmp, "phi3 rope longrope long", "phi3", dict(**PHI3, **PLR), seed=82, ctx=96)
    check_match(tmp, "phi3 rope longrope short", "phi3", dict(**PHI3, **PLR), seed=82, T=48, ctx=64)

    def su(c):  # a Phi-3 128K checkpoint's config.json: rope_scaling of type "su"
        c = v4_layout(c)
        c["rope_scaling"] = {**{k: v for k, v in c["rope_scaling"].items() if k != "rope_type"}, "type": "su"}
        return c
    check_match(tmp, "phi3 rope su v4 config", "phi3", dict(**PHI3, **PLR), seed=82, ctx=96, edit=su)
    check_match(tmp, "phi3 sliding_window 96, context 96", "phi3", dict(**PHI3, sliding_window=96), seed=83, ctx=96)
    # sliding windows that the 96 tokens reach (transformers' mask: query - key < window): every layer's (Mistral,
    # Phi-3), from max_window_layers on or as layer_types says (Qwen2 / Qwen3 with use_sliding_window)
    SW = dict(use_sliding_window=True, sliding_window=16, max_window_layers=1)
    check_match(tmp, "qwen2 sliding_window 16 from layer 1 (layer_types)", "qwen2", SW, seed=23, kv16=True,
                chunks=(1, 7), gen=8)
    check_match(tmp, "qwen3 sliding_window 16 from layer 1 (v4 config, no layer_types)", "qwen3", SW, seed=34,
                edit=v4_layout_drop_layer_types)
    check_match(tmp, "mistral sliding_window 16", "mistral", dict(sliding_window=16), seed=73, kv16=True,
                chunks=(1, 7), gen=16)
    check_match(tmp, "phi3 sliding_window 16", "phi3", dict(**PHI3, sliding_window=16), seed=84, kv16=True,
                chunks=(1,), gen=8)
    # the GGUF route: llama.cpp's converter, then infllm on the GGUF (--converter)
    check_gguf(tmp, "gguf llama G2", "llama", dict(rope_parameters={"rope_type": "default", "rope_theta": 500000.0}),
               seed=40)
    check_gguf(tmp, "gguf llama G4 tied", "llama", dict(num_attention_heads=8, tie_word_embeddings=True), seed=41,
               outtypes=("f32",))
    check_gguf(tmp, "gguf llama rope llama3", "llama", dict(rope_parameters=L3), seed=42, outtypes=("f32",))
    check_gguf(tmp, "gguf llama rope linear 4", "llama", dict(rope_parameters={"rope_type": "linear", "factor": 4.0,
                                                                              "rope_theta": 10000.0}), seed=43,
               outtypes=("f32",))
    # llama.cpp's converter writes llama + longrope as type longrope without the factors: refused, not run unscaled
    check_gguf(tmp, "gguf llama rope longrope", "llama", dict(rope_parameters=LR, max_position_embeddings=256),
               seed=44, outtypes=("f32",), ctx=96, refused="rope_factors_long")
    check_gguf(tmp, "gguf qwen2 tied", "qwen2", dict(tie_word_embeddings=True, rope_parameters={
        "rope_type": "default", "rope_theta": 1e6}), seed=45)
    check_gguf(tmp, "gguf qwen3 head_dim 64", "qwen3", dict(head_dim=64), seed=46)
    check_gguf(tmp, "gguf mistral head_dim 64", "mistral", dict(head_dim=64, sliding_window=None), seed=47,
               outtypes=("f32",))
    check_gguf(tmp, "gguf phi3", "phi3", dict(**PHI3), seed=48)
    check_gguf(tmp, "gguf phi3 rope longrope long", "phi3", dict(**PHI3, **PLR), seed=49, outtypes=("f32",), ctx=96)
    check_gguf(tmp, "gguf phi3 sliding_window 16", "phi3", dict(**PHI3, sliding_window=16), seed=50,
               outtypes=("f32", "f16"))
    # refused: what infllm does not implement
    check_refused(tmp, "refuse llama rope yarn", "llama", dict(rope_parameters={
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 1024, "rope_theta": 10000.0}), "yarn")
    check_refused(tmp, "refuse llama rope dynamic", "llama", dict(rope_parameters={
        "rope_type": "dynamic", "factor": 4.0, "rope_theta": 10000.0}), "dynamic")
    check_refused(tmp, "refuse llama attention_bias", "llama", dict(attention_bias=True), "bias")
    check_refused(tmp, "refuse llama mlp_bias", "llama", dict(mlp_bias=True), "bias")
    check_refused(tmp, "refuse qwen3 attention_bias", "qwen3", dict(attention_bias=True), "bias")
    check_refused(tmp, "refuse llama gelu", "llama", dict(hidden_act="gelu"), "hidden_act")
    # the attention library's limit (head_dim a multiple of 16, 16..256): a message, not a crash
    check_refused(tmp, "refuse llama head_dim 20", "llama", dict(hidden_size=80), "head_dim 20")
    check_refused(tmp, "refuse phi3 partial_rotary_factor 0.75", "phi3", dict(**PHI3, rope_parameters={
        "rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.75}), "partial_rotary_factor")
    check_refused(tmp, "refuse llama partial_rotary_factor 0.5", "llama", dict(rope_parameters={
        "rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}), "partial_rotary_factor")
    check_refused(tmp, "refuse qwen2 rope yarn v4 config", "qwen2", dict(rope_parameters={
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 1024, "rope_theta": 10000.0}), "yarn",
        edit=v4_layout)


if __name__ == "__main__":
    sys.exit(main())
