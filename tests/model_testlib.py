"""Shared helpers of the py_model_* tests (not a test itself): tiny random llama/minicpm checkpoints written as
GGUF (with the `gguf` package) and as Hugging Face safetensors folders, an independent numpy
float64 forward pass, and running `infllm run --dump-logits`."""
import contextlib
import json
import os
import struct
import subprocess
import sys

from check_counter import Counter, need_modules  # noqa: E402,F401  (the py_model_* tests import them from here)

np, gguf = need_modules("numpy", "gguf")
from gguf.quants import dequantize, quantize  # noqa: E402

Q8, F16, F32 = gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.F32
Q5_0, Q5_1 = gguf.GGMLQuantizationType.Q5_0, gguf.GGMLQuantizationType.Q5_1
Q2K, Q3K = gguf.GGMLQuantizationType.Q2_K, gguf.GGMLQuantizationType.Q3_K
Q4K, Q5K, Q6K = gguf.GGMLQuantizationType.Q4_K, gguf.GGMLQuantizationType.Q5_K, gguf.GGMLQuantizationType.Q6_K
IQ4NL, IQ4XS = gguf.GGMLQuantizationType.IQ4_NL, gguf.GGMLQuantizationType.IQ4_XS
RANDOM_CODE_TYPES = (Q2K, Q3K, Q4K, Q5K, Q6K, IQ4NL, IQ4XS)


def random_codes(arr, t, rng):
    """Raw rows of a type in RANDOM_CODE_TYPES for a [rows, cols] matrix (cols a multiple of the
    block; the gguf package dequantizes these types but cannot quantize to them): random codes and
    scales, the f16 block scale d (and Q2_K's dmin) sized so that the values spread like arr's."""
    rows, cols = arr.shape
    qk, bs = gguf.GGML_QUANT_SIZES[t]
    nb = cols // qk
    raw = rng.integers(0, 256, (rows, nb, bs), dtype=np.uint8)
    sd = float(arr.std())

    def f16(v):
        return np.frombuffer(np.float16(v).tobytes(), np.uint8)

    if t == Q2K:  # d * (sc & 15) * q - dmin * (sc >> 4), q in 0..3: mean 11.25 d - 7.5 dmin = 0
        raw[:, :, 80:82] = f16(sd / 8)
        raw[:, :, 82:84] = f16(sd * 3 / 16)
    elif t == Q3K:  # d * (sc6 - 32) * (q3 - 4)
        raw[:, :, 108:110] = f16(sd / 32)
    elif t == Q4K:  # d * sc6 * q4 - dmin * m6: mean 236 d - 31.5 dmin = 0 at dmin = 7.5 d; sd ~245 d
        raw[:, :, 0:2] = f16(sd / 245)
        raw[:, :, 2:4] = f16(sd * 7.5 / 245)
    elif t == Q5K:  # d * sc6 * q5 - dmin * m6: zero mean at dmin = 15.5 d; sd ~528 d
        raw[:, :, 0:2] = f16(sd / 528)
        raw[:, :, 2:4] = f16(sd * 15.5 / 528)
    elif t == Q6K:  # d * sc8 * (q6 - 32), sc8 signed: sd ~1366 d
        raw[:, :, 208:210] = f16(sd / 1366)
    elif t == IQ4NL:  # d * table[code], |table| ~ 60
        raw[:, :, 0:2] = f16(sd / 60)
    else:  # IQ4_XS: d * (sc6 - 32) * table[code]
        raw[:, :, 0:2] = f16(sd / 960)
    return raw.reshape(rows, nb * bs)


@contextlib.contextmanager
def patched(obj, attr, make):
    """obj.attr replaced by make(original) while the block runs, the original back after it: e.g. a GGUFWriter
    method wrapped so that the files written inside the block carry an extra key or tensor"""
    orig = getattr(obj, attr)
    setattr(obj, attr, make(orig))
    try:
        yield
    finally:
        setattr(obj, attr, orig)


class Tiny:
    """Random weights, stored the way GGUF stores them: for llama / minicpm Q/K rows permuted for the
    interleaved RoPE pairing, for qwen2 / qwen3 (NEOX RoPE) as in the HF checkpoint."""

    def __init__(self, arch="llama", seed=0, n_embd=128, n_head=4, n_kv=2, n_ff=256, n_layer=2, n_vocab=96,
                 theta=10000.0, eps=1e-5, longrope=False, head_dim=None, tied=False, rope_freqs=False, rope_linear=None, rope_llama3=None,
                 fused=True, sliding_window=None):
        r = np.random.default_rng(seed)
        self.arch, self.E, self.H, self.KV, self.F, self.L, self.V = arch, n_embd, n_head, n_kv, n_ff, n_layer, n_vocab
        self.D = head_dim or n_embd // n_head
        # qwen2 / qwen3: llama.cpp's NEOX rope (pairs i, i + D/2), Q/K rows as in the HF checkpoint;
        # qwen2 has q/k/v biases, qwen3 a per-head RMSNorm of q and k before RoPE
        self.neox = arch in ("qwen2", "qwen3", "phi3")
        # phi3: q / k / v in one matrix (attn_qkv, HF qkv_proj) and gate / up in one (ffn_up of 2 n_ff rows, HF
        # gate_up_proj), as llama.cpp's converter and transformers store them (fused=False: separate GGUF tensors,
        # which llama.cpp also takes); sliding_window: the config's (phi3.attention.sliding_window, HF sliding_window)
        self.fused = arch == "phi3" and fused
        self.sliding_window = sliding_window
        # each layer's window in the numpy forward (query - key < window; 0: full causal): every layer's the model's
        # by default (Phi-3, Mistral); a test of Qwen2's layer_types / max_window_layers sets its own
        self.windows = [sliding_window or 0] * n_layer
        self.tied = tied  # no output.weight: the logits use token_embd
        self.theta, self.eps = theta, eps
        s = 0.08
        self.emb = r.normal(0, 1.0, (n_vocab, n_embd)).astype(np.float32)
        self.out = r.normal(0, s, (n_vocab, n_embd)).astype(np.float32)
        self.out_norm = (1 + 0.1 * r.normal(size=n_embd)).astype(np.float32)
        self.layers = []
        for _ in range(n_layer):
            extra = {}
            if arch == "qwen2":
                extra = dict(bq=r.normal(0, 0.1, n_head * self.D).astype(np.float32),
                             bk=r.normal(0, 0.1, n_kv * self.D).astype(np.float32),
                             bv=r.normal(0, 0.1, n_kv * self.D).astype(np.float32))
            elif arch == "qwen3":
                extra = dict(q_norm=(1 + 0.1 * r.normal(size=self.D)).astype(np.float32),
                             k_norm=(1 + 0.1 * r.normal(size=self.D)).astype(np.float32))
            self.layers.append(dict(**extra,
                attn_norm=(1 + 0.1 * r.normal(size=n_embd)).astype(np.float32),
                ffn_norm=(1 + 0.1 * r.normal(size=n_embd)).astype(np.float32),
                q=r.normal(0, s * 2, (n_head * self.D, n_embd)).astype(np.float32),
                k=r.normal(0, s * 2, (n_kv * self.D, n_embd)).astype(np.float32),
                v=r.normal(0, s, (n_kv * self.D, n_embd)).astype(np.float32),
                o=r.normal(0, s, (n_embd, n_head * self.D)).astype(np.float32),
                gate=r.normal(0, s, (n_ff, n_embd)).astype(np.float32),
                up=r.normal(0, s, (n_ff, n_embd)).astype(np.float32),
                down=r.normal(0, s, (n_embd, n_ff)).astype(np.float32)))
        self.escale, self.rscale, self.lscale = 1.0, 1.0, 1.0
        if arch == "minicpm":
            self.scale_emb, self.scale_depth, self.dim_model_base = 12.0, 1.4, 32
            self.escale = self.scale_emb
            self.rscale = self.scale_depth / np.sqrt(n_layer)
            self.lscale = n_embd / self.dim_model_base
        self.factors = None
        self.rope_mscale = 1.0  # cos / sin multiplier (LongRoPE's attention factor; write_hf's rope_extra sets it)
        if longrope:
            self.factors = (1.0 + 3.0 * r.random(self.D // 2)).astype(np.float32)
        # llama3-style frequency divisors (GGUF rope_freqs.weight) and linear RoPE scaling (positions / factor)
        self.rope_freqs = (1.0 + 7.0 * r.random(self.D // 2)).astype(np.float32) if rope_freqs else None
        self.rope_linear = rope_linear
        # Llama 3.1 scaling (dict factor, low_freq_factor, high_freq_factor, original_max_position_embeddings):
        # config.json's rope_scaling, and the divisors llama.cpp's converter writes as rope_freqs.weight
        self.rope_llama3 = rope_llama3
        if rope_llama3:
            f, lo, hi, old = (rope_llama3[k] for k in ("factor", "low_freq_factor", "high_freq_factor",
                                                       "original_max_position_embeddings"))
            div = []
            for i in range(self.D // 2):
                wavelen = 2 * np.pi * theta ** (2.0 * i / self.D)
                if wavelen < old / hi:
                    div.append(1.0)
                elif wavelen > old / lo:
                    div.append(f)
                else:
                    sm = (old / wavelen - lo) / (hi - lo)
                    div.append(1.0 / ((1 - sm) / f + sm))
            self.rope_freqs = np.array(div, dtype=np.float32)

    # -- GGUF --------------------------------------------------------------------------
    def write_gguf(self, path, types, tokenizer=False):
        """types: dict name->GGMLQuantizationType for the matrices ('emb','out','q',...).
        tokenizer: also a byte-level gpt2 tokenizer (byte_tokenizer; needs n_vocab >= 260; "chat":
        with a ChatML template)."""
        w = gguf.GGUFWriter(path, self.arch)
        if tokenizer:
            byte_tokenizer(w, self.V, chat=tokenizer == "chat")
        a = self.arch
        w.add_uint32(f"{a}.block_count", self.L)
        w.add_uint32(f"{a}.context_length", 4096)
        w.add_uint32(f"{a}.embedding_length", self.E)
        w.add_uint32(f"{a}.feed_forward_length", self.F)
        w.add_uint32(f"{a}.attention.head_count", self.H)
        w.add_uint32(f"{a}.attention.head_count_kv", self.KV)
        w.add_float32(f"{a}.rope.freq_base", self.theta)
        w.add_float32(f"{a}.attention.layer_norm_rms_epsilon", self.eps)
        w.add_uint32(f"{a}.rope.dimension_count", self.D)
        if self.D != self.E // self.H:
            w.add_uint32(f"{a}.attention.key_length", self.D)
            w.add_uint32(f"{a}.attention.value_length", self.D)
        if self.rope_linear is not None:
            w.add_string(f"{a}.rope.scaling.type", "linear")
            w.add_float32(f"{a}.rope.scaling.factor", self.rope_linear)
        if self.sliding_window is not None:
            w.add_uint32(f"{a}.attention.sliding_window", self.sliding_window)
        if a == "minicpm":
            w.add_float32("minicpm.embedding_scale", self.escale)
            w.add_float32("minicpm.residual_scale", self.rscale)
            w.add_float32("minicpm.logit_scale", self.lscale)
        self.stored, self.types = {}, {}
        self.qrng = np.random.default_rng(12345)  # raw codes (random_codes)

        def add(name, key, arr):
            t = types.get(key, F32)
            self.types[name] = t
            if t == F32:
                w.add_tensor(name, arr.astype(np.float32))
                self.stored[name] = arr.astype(np.float32)
            elif t == F16:
                w.add_tensor(name, arr.astype(np.float16))
                self.stored[name] = arr.astype(np.float16).astype(np.float32)
            elif t in RANDOM_CODE_TYPES:
                q = random_codes(arr, t, self.qrng)
                w.add_tensor(name, q, raw_dtype=t)
                self.stored[name] = dequantize(q, t).reshape(arr.shape).astype(np.float32)
            else:
                q = quantize(arr.astype(np.float32), t)
                w.add_tensor(name, q, raw_dtype=t)
                self.stored[name] = dequantize(q, t).reshape(arr.shape).astype(np.float32)

        add("token_embd.weight", "emb", self.emb)
        if self.tied:
            self.stored["output.weight"] = self.stored["token_embd.weight"]
            self.types["output.weight"] = self.types["token_embd.weight"]
        else:
            add("output.weight", "out", self.out)
        add("output_norm.weight", "norm", self.out_norm)
        if self.factors is not None:
            add("rope_factors_long.weight", "norm", self.factors)
            add("rope_factors_short.weight", "norm", self.factors)
        if self.rope_freqs is not None:
            add("rope_freqs.weight", "norm", self.rope_freqs)
        for i, l in enumerate(self.layers):
            add(f"blk.{i}.attn_norm.weight", "norm", l["attn_norm"])
            add(f"blk.{i}.ffn_norm.weight", "norm", l["ffn_norm"])
            for k, g in (("bq", "attn_q.bias"), ("bk", "attn_k.bias"), ("bv", "attn_v.bias"),
                         ("q_norm", "attn_q_norm.weight"), ("k_norm", "attn_k_norm.weight")):
                if k in l:
                    add(f"blk.{i}.{g}", "norm", l[k])
            if self.fused:
                add(f"blk.{i}.attn_qkv.weight", "q", np.concatenate([l["q"], l["k"], l["v"]]))
                add(f"blk.{i}.ffn_up.weight", "up", np.concatenate([l["gate"], l["up"]]))
                # the parts under the separate names, as the numpy forward and write_hf read them
                qkv, gu = self.stored.pop(f"blk.{i}.attn_qkv.weight"), self.stored.pop(f"blk.{i}.ffn_up.weight")
                nq, nk = self.H * self.D, self.KV * self.D
                for g, part, key in (("attn_q", qkv[:nq], "q"), ("attn_k", qkv[nq:nq + nk], "q"),
                                     ("attn_v", qkv[nq + nk:], "q"), ("ffn_gate", gu[:self.F], "up"),
                                     ("ffn_up", gu[self.F:], "up")):
                    self.stored[f"blk.{i}.{g}.weight"] = part
                    self.types[f"blk.{i}.{g}.weight"] = types.get(key, F32)
            for k, g in (("q", "attn_q"), ("k", "attn_k"), ("v", "attn_v"), ("o", "attn_output"),
                         ("gate", "ffn_gate"), ("up", "ffn_up"), ("down", "ffn_down")):
                if not (self.fused and g in ("attn_q", "attn_k", "attn_v", "ffn_gate", "ffn_up")):
                    add(f"blk.{i}.{g}.weight", k, l[k])
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()

    # -- HF safetensors twin -------------------------------------------------------------
    @staticmethod
    def unpermute(wt, n_head):
        """Inverse of llama.cpp's convert permute: GGUF (interleaved) rows -> HF rows."""
        out, inn = wt.shape
        return wt.reshape(n_head, out // n_head // 2, 2, inn).swapaxes(1, 2).reshape(out, inn)

    def write_hf(self, folder, dtype="F32", layout="v4", rope_extra=None, cfg_extra=None):
        """The same model as an HF checkpoint (rotate_half RoPE, unpermuted Q/K), from the
        values stored in the GGUF (so both hold identical numbers). layout "v4": config.json as transformers 4.x
        writes it (top-level rope_theta, rope_scaling); "v5": as transformers 5 does (one rope_parameters object
        with rope_theta, rope_type and the scaling fields). rope_extra: more keys of that RoPE section;
        cfg_extra: more top-level keys."""
        os.makedirs(folder, exist_ok=True)
        st = self.stored
        tensors = {
            "model.embed_tokens.weight": st["token_embd.weight"],
            "model.norm.weight": st["output_norm.weight"],
        }
        if not self.tied:
            tensors["lm_head.weight"] = st["output.weight"]
        qk = (lambda w, nh: w) if self.neox else self.unpermute
        for i in range(self.L):
            p = f"model.layers.{i}."
            tensors[p + "input_layernorm.weight"] = st[f"blk.{i}.attn_norm.weight"]
            tensors[p + "post_attention_layernorm.weight"] = st[f"blk.{i}.ffn_norm.weight"]
            if self.arch == "phi3":  # transformers' Phi3: qkv_proj and gate_up_proj (fused or not in the GGUF)
                tensors[p + "self_attn.qkv_proj.weight"] = np.concatenate(
                    [st[f"blk.{i}.attn_{x}.weight"] for x in ("q", "k", "v")])
                tensors[p + "mlp.gate_up_proj.weight"] = np.concatenate(
                    [st[f"blk.{i}.ffn_gate.weight"], st[f"blk.{i}.ffn_up.weight"]])
                tensors[p + "self_attn.o_proj.weight"] = st[f"blk.{i}.attn_output.weight"]
                tensors[p + "mlp.down_proj.weight"] = st[f"blk.{i}.ffn_down.weight"]
                continue
            tensors[p + "self_attn.q_proj.weight"] = qk(st[f"blk.{i}.attn_q.weight"], self.H)
            tensors[p + "self_attn.k_proj.weight"] = qk(st[f"blk.{i}.attn_k.weight"], self.KV)
            for g, h in (("attn_q.bias", "self_attn.q_proj.bias"), ("attn_k.bias", "self_attn.k_proj.bias"),
                         ("attn_v.bias", "self_attn.v_proj.bias"), ("attn_q_norm.weight", "self_attn.q_norm.weight"),
                         ("attn_k_norm.weight", "self_attn.k_norm.weight")):
                if f"blk.{i}.{g}" in st:
                    tensors[p + h] = st[f"blk.{i}.{g}"]
            tensors[p + "self_attn.v_proj.weight"] = st[f"blk.{i}.attn_v.weight"]
            tensors[p + "self_attn.o_proj.weight"] = st[f"blk.{i}.attn_output.weight"]
            tensors[p + "mlp.gate_proj.weight"] = st[f"blk.{i}.ffn_gate.weight"]
            tensors[p + "mlp.up_proj.weight"] = st[f"blk.{i}.ffn_up.weight"]
            tensors[p + "mlp.down_proj.weight"] = st[f"blk.{i}.ffn_down.weight"]
        write_safetensors(os.path.join(folder, "model.safetensors"), tensors, dtype)
        cfg = {
            "model_type": self.arch, "hidden_size": self.E, "num_hidden_layers": self.L,
            "num_attention_heads": self.H, "num_key_value_heads": self.KV, "intermediate_size": self.F,
            "vocab_size": self.V, "rms_norm_eps": self.eps, "rope_theta": self.theta,
            "max_position_embeddings": 4096, "tie_word_embeddings": self.tied, "head_dim": self.D,
        }
        if self.arch == "minicpm":
            cfg.update(scale_emb=self.scale_emb, scale_depth=self.scale_depth, dim_model_base=self.dim_model_base)
        if self.sliding_window is not None:
            cfg["sliding_window"] = self.sliding_window
        if self.factors is not None:
            f = [float(x) for x in self.factors]
            cfg["rope_scaling"] = {"rope_type": "longrope", "long_factor": f, "short_factor": f,
                                   "original_max_position_embeddings": 4096}
        assert self.rope_freqs is None or self.rope_llama3, "write_hf: random rope_freqs have no config.json form"
        if self.rope_llama3:
            cfg["rope_scaling"] = {"rope_type": "llama3", **self.rope_llama3}
        if self.rope_linear is not None:
            cfg["rope_scaling"] = {"rope_type": "linear", "factor": self.rope_linear}
        if rope_extra:
            cfg["rope_scaling"] = {**cfg.get("rope_scaling", {"rope_type": "default"}), **rope_extra}
        if layout == "v5":
            cfg["rope_parameters"] = {"rope_type": "default", **cfg.pop("rope_scaling", {}),
                                      "rope_theta": cfg.pop("rope_theta")}
        cfg.update(cfg_extra or {})
        with open(os.path.join(folder, "config.json"), "w") as fh:
            json.dump(cfg, fh)

    # -- numpy reference ---------------------------------------------------------------
    def forward(self, toks, collect=None, int8_act=False):
        """float64 forward over the GGUF-stored values with llama.cpp's RoPE (interleaved; NEOX for qwen);
        collect (a dict) receives each layer's post-RoPE (q, k, v), [T, heads, D] each. int8_act:
        the input of every product with a quantized weight is first quantized the way infllm does
        (quantize_act, the scheme of the weight's type), so that what remains is rounding."""
        st = {k: v.astype(np.float64) for k, v in self.stored.items()}

        def mm(v, name):
            t = self.types.get(name, F32)
            if int8_act and t not in (F32, F16):
                v = quantize_act(v, act_mode(t))
            return v @ st[name].T

        T, D, H, KV = len(toks), self.D, self.H, self.KV
        x = st["token_embd.weight"][np.array(toks)] * self.escale
        inv = self.theta ** (-2.0 * np.arange(D // 2) / D)
        if self.factors is not None:
            inv = inv / self.factors.astype(np.float64)
        if self.rope_freqs is not None:
            inv = inv / self.rope_freqs.astype(np.float64)
        if self.rope_linear is not None:
            inv = inv / self.rope_linear
        ang = np.arange(T)[:, None] * inv[None, :]
        cos, sin = np.cos(ang) * self.rope_mscale, np.sin(ang) * self.rope_mscale

        def rms(v, w):
            return v / np.sqrt((v * v).mean(-1, keepdims=True) + self.eps) * w

        def rope(v):  # [T, h, D], pairs (2i, 2i+1), or (i, i + D/2) for NEOX
            lo, hi = (slice(0, D // 2), slice(D // 2, D)) if self.neox else (slice(0, None, 2), slice(1, None, 2))
            a, b = v[..., lo], v[..., hi]
            c, s = cos[:, None, :], sin[:, None, :]
            out = np.empty_like(v)
            out[..., lo] = a * c - b * s
            out[..., hi] = a * s + b * c
            return out

        def opt(name):
            return st.get(name)

        def qk_prep(v, i, which, nh):  # bias, then qwen3's per-head norm, then RoPE
            b = opt(f"blk.{i}.attn_{which}.bias")
            if b is not None:
                v = v + b
            v = v.reshape(T, nh, D)
            w = opt(f"blk.{i}.attn_{which}_norm.weight")
            if w is not None:
                v = rms(v, w)
            return rope(v)

        for i in range(self.L):
            g = lambda n: st[f"blk.{i}.{n}.weight"]  # noqa: E731
            h = rms(x, g("attn_norm"))
            q = qk_prep(mm(h, f"blk.{i}.attn_q.weight"), i, "q", H)
            k = qk_prep(mm(h, f"blk.{i}.attn_k.weight"), i, "k", KV)
            v = mm(h, f"blk.{i}.attn_v.weight")
            if opt(f"blk.{i}.attn_v.bias") is not None:
                v = v + st[f"blk.{i}.attn_v.bias"]
            v = v.reshape(T, KV, D)
            if collect is not None:
                collect[i] = (q, k, v)
            o = np.zeros((T, H, D))
            mask = np.triu(np.ones((T, T), bool), 1)
            if self.windows[i]:  # the sliding window: key j of query t only where t - j < window
                mask |= np.tril(np.ones((T, T), bool), -self.windows[i])
            for hh in range(H):
                kk = hh // (H // KV)
                sc = q[:, hh, :] @ k[:, kk, :].T / np.sqrt(D)
                sc[mask] = -np.inf
                p = np.exp(sc - sc.max(-1, keepdims=True))
                p /= p.sum(-1, keepdims=True)
                o[:, hh, :] = p @ v[:, kk, :]
            x = x + self.rscale * mm(o.reshape(T, H * D), f"blk.{i}.attn_output.weight")
            h = rms(x, g("ffn_norm"))
            a = mm(h, f"blk.{i}.ffn_gate.weight")
            x = x + self.rscale * mm((a / (1 + np.exp(-a))) * mm(h, f"blk.{i}.ffn_up.weight"), f"blk.{i}.ffn_down.weight")
        return mm(rms(x, st["output_norm.weight"]), "output.weight") / self.lscale


def byte_tokenizer(w, n_vocab, chat=False):
    """A gpt2 (byte-level BPE) tokenizer in the GGUF metadata: the 256 byte tokens (GPT-2's
    bytes_to_unicode spelling), one merge ("T" "h"), <|endoftext|> (EOS), <|im_start|>, <|im_end|>,
    then unused control tokens up to n_vocab; chat: a ChatML chat template."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    cs, k = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + k)
            k += 1
    byte_tok = {b: chr(c) for b, c in zip(bs, cs)}
    toks = [byte_tok[b] for b in range(256)] + ["Th", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    types = [1] * 257 + [3, 3, 3]
    while len(toks) < n_vocab:
        toks.append(f"<|unused{len(toks)}|>")
        types.append(3)
    assert len(toks) == n_vocab, "byte_tokenizer: n_vocab must be >= 260"
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(toks)
    w.add_token_types(types)
    w.add_token_merges(["T h"])
    w.add_eos_token_id(257)
    if chat:
        w.add_chat_template("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
                            "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
                            "{{ '<|im_start|>assistant\n' }}{% endif %}")


# A byte-level tokenizer.json with the chat markers of the styles `infllm run --chat` writes as special tokens (ids
# 256 on, in this order; Phi-3's take the whitespace after them, rstrip, as Phi-3's tokenizer.json has them), for
# a Hugging Face folder of a Tiny model of at least 256 + len(CHAT_SPECIALS) tokens; chat_fixture_ids tokenizes as it
CHAT_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|begin_of_text|>", "<|start_header_id|>",
                 "<|end_header_id|>", "<|eot_id|>", "<|user|>", "<|assistant|>", "<|end|>", "<|system|>",
                 # Mistral's (control tokens in its v3 / tekken tokenizers), after the others to keep their ids
                 "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]"]
CHAT_RSTRIP = {"<|user|>", "<|assistant|>", "<|end|>", "<|system|>"}
CHAT_ID = {t: 256 + i for i, t in enumerate(CHAT_SPECIALS)}


def write_chat_tokenizer(folder):
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    spell = {b: chr(b) for b in bs}
    spell.update({b: chr(256 + i) for i, b in enumerate(x for x in range(256) if x not in bs)})
    added = [{"id": CHAT_ID[t], "content": t, "single_word": False, "lstrip": False, "rstrip": t in CHAT_RSTRIP,
              "normalized": False, "special": True} for t in CHAT_SPECIALS]
    bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    with open(os.path.join(folder, "tokenizer.json"), "w") as f:
        json.dump({"version": "1.0", "added_tokens": added, "normalizer": None, "pre_tokenizer": bl,
                   "post_processor": None, "decoder": bl,
                   "model": {"type": "BPE", "vocab": {**{spell[b]: b for b in range(256)}, **CHAT_ID}, "merges": []}},
                  f)


def chat_fixture_ids(text, bos=False):
    """write_chat_tokenizer's ids of text: bytes (UTF-8, surrogate escapes as their bytes) are their own ids, the
    special tokens theirs (longest first), an rstrip one taking the whitespace after it; bos: <|begin_of_text|> first"""
    out, i = ([CHAT_ID["<|begin_of_text|>"]] if bos else []), 0
    longest = sorted(CHAT_SPECIALS, key=len, reverse=True)
    while i < len(text):
        hit = next((t for t in longest if text.startswith(t, i)), None)
        if hit:
            out.append(CHAT_ID[hit])
            i += len(hit)
            while hit in CHAT_RSTRIP and i < len(text) and text[i] in " \t\n\r\v\f":
                i += 1
        else:
            out.extend(text[i].encode("utf-8", "surrogateescape"))
            i += 1
    return out


def act_mode(t):
    """infllm's activation scheme for weights of type t (quant_act_mode): 'q8_1', 'q8_0', 'q8_k' or 'f32'"""
    if t in (gguf.GGMLQuantizationType.Q4_1, Q5_1):
        return "q8_1"
    if t in (Q2K, Q3K, Q4K, Q5K, Q6K, IQ4XS):
        return "q8_k"
    if t in (gguf.GGMLQuantizationType.Q4_0, Q5_0, Q8, IQ4NL):
        return "q8_0"
    return "f32"


def quantize_act(v, mode):
    """[T, n] activations through infllm's int8 quantization (quant_act_row_mode) and back, in
    float32 like the C code: per 32 values, amax / 127 the scale (f16-rounded in the q8 modes),
    values rint(x * id), id = 1 / scale (f32 mode) or 127 / amax, clamped to +-127; q8_k: one f32 scale
    per 256 values (the row a multiple of 256). (The q8_1 mode's f16 sum term is not modelled: Q4_1 / Q5_1
    products differ by its rounding.)"""
    x = np.asarray(v, np.float32).reshape(v.shape[0], -1, 256 if mode == "q8_k" else 32)
    amax = np.abs(x).max(-1)
    dd = amax / np.float32(127)
    with np.errstate(divide="ignore"):
        if mode == "f32":
            inv = np.where(dd > 0, np.float32(1) / dd, np.float32(0)).astype(np.float32)
        else:
            inv = np.where(amax != 0, np.float32(127) / amax, np.float32(0)).astype(np.float32)
    q = np.clip(np.rint(x * inv[..., None]), -127, 127)
    d = dd if mode in ("f32", "q8_k") else dd.astype(np.float16).astype(np.float32)
    return (q.astype(np.float64) * d[..., None].astype(np.float64)).reshape(v.shape)


def write_safetensors(path, tensors, dtype="F32"):
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name], dtype=np.float32)
        if dtype == "F32":
            b = a.tobytes()
        elif dtype == "F16":
            b = a.astype(np.float16).tobytes()
        else:  # BF16 (round to nearest even)
            u = a.view(np.uint32).astype(np.uint64)
            b = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16).tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def run_logits(exe, model, toks, tmp, extra=(), env=None):
    """the logits of `infllm run` over toks; env: extra environment variables for the run"""
    out = os.path.join(tmp, "logits.npy")
    if os.path.exists(out):
        os.remove(out)
    cmd = [exe, "run", "-m", model, "--tokens", ",".join(map(str, toks)), "-n", "0", "-q", "--ctx", "1024",
           "--dump-logits", out, *extra]
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()}")
    return np.load(out).astype(np.float64)


def rel_err(a, b):
    return float(np.abs(a - b).max() / (np.abs(b).max() + 1e-30))
