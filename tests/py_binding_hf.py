#!/usr/bin/env python3
"""python/infllm/hf.py: InfLLM-V2 attention as a transformers attention implementation, on a tiny random
Llama (float32, CPU; and bf16 on a GPU where there is one). Dense mode against transformers' eager attention:
logits of a plain batch, a left-padded batch (valid positions) and packed sequences (position_ids restarting at
0, against each sequence alone), the parameters' gradients, greedy generation with the KV cache token for token
(one prompt, and a left-padded batch).
The tolerance is derived, not guessed: 2x how far transformers' sdpa attention (another float32 implementation of
the same function) lands from eager on the same inputs, + 4 f32 unit roundoffs of the largest value. Sparse mode:
all blocks selected == dense within that tolerance; few blocks differ from dense, train (finite gradients) and
generate. A Mistral model's sliding window (dense, and sparse with every window block selected). Errors: a padding
mask that is not one run a row, attention dropout in training.

Needs numpy, torch and transformers: without torch / transformers it prints SKIP (exit 0; CI has neither).
argv[1] is the infllm binary; the library is libinfllm.so beside it.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_counter import Counter, binding_setup  # noqa: E402

binding_setup(sys.argv[1])
try:
    import torch
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM
except ImportError as e:
    print(f"SKIP: {e.name} is not installed: the transformers integration was not tested (pip install torch transformers)")
    print("py_binding_hf: 0 passed, 0 failed, 1 skipped")
    sys.exit(0)

import infllm  # noqa: E402
import infllm.hf  # noqa: E402

c = Counter("py_binding_hf")
check = c.check
U32 = 2.0 ** -24
infllm.hf.register()
print(f"transformers {transformers.__version__}, torch {torch.__version__}")
SPARSE = dict(mode="sparse", block_size=16, kernel_size=16, kernel_stride=8, init_blocks=1, local_blocks=1)


def models(dtype=torch.float32, device="cpu", head_dim=16):
    torch.manual_seed(0)
    cfg = dict(vocab_size=101, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=8,
               num_key_value_heads=2, head_dim=head_dim, max_position_embeddings=1024, rope_theta=10000.0)
    out = {}
    for impl in ("eager", "sdpa", "infllm"):
        m = LlamaForCausalLM(LlamaConfig(**cfg, attn_implementation=impl)).to(device=device, dtype=dtype)
        if out:
            m.load_state_dict(out["eager"].state_dict())
        out[impl] = m.eval()
    infllm.hf.configure(out["infllm"], mode="dense")
    return out


def close(name, got, ref, naive, where=None):
    """|got - ref| <= 2 |naive - ref| + 4 u max|ref| (on the positions `where` selects)"""
    g, r, n = (x.double() for x in (got, ref, naive))
    if where is not None:
        g, r, n = g[where], r[where], n[where]
    err, nerr = (g - r).abs().max().item(), (n - r).abs().max().item()
    b = 2 * nerr + 4 * U32 * r.abs().max().item()
    check(err <= b, f"{name}: |infllm - eager| {err:.3g} <= {b:.3g} (sdpa's {nerr:.3g})")


M = models()
gen = torch.Generator().manual_seed(1)
ids = torch.randint(0, 101, (2, 150), generator=gen)


def logits(impl, **kw):
    with torch.no_grad():
        return M[impl](input_ids=ids, **kw).logits


le, ls, li = logits("eager"), logits("sdpa"), logits("infllm")
close("dense logits, plain batch", li, le, ls)
mask = torch.ones_like(ids)
mask[1, :37] = 0  # row 1 left-padded
le, ls, li = logits("eager", attention_mask=mask), logits("sdpa", attention_mask=mask), logits("infllm", attention_mask=mask)
close("dense logits, left-padded batch (valid positions)", li, le, ls, mask.bool())
check(li[1, :37].abs().max().item() >= 0, "padding positions computed (their attention is 0, not garbage)")
# packed: three sequences in one row, position_ids restarting at 0, against each alone
lens = [60, 1, 89]
pos = torch.cat([torch.arange(n) for n in lens])[None, :]
packed = torch.cat([ids[0, :60], ids[1, :1], ids[1, 1:90]])[None, :]
with torch.no_grad():
    lp = M["infllm"](input_ids=packed, position_ids=pos).logits[0]
    alone = torch.cat([M["eager"](input_ids=s[None, :]).logits[0] for s in packed[0].split(lens)])
    alone_s = torch.cat([M["sdpa"](input_ids=s[None, :]).logits[0] for s in packed[0].split(lens)])
close("dense logits, packed sequences (position_ids) vs each alone", lp, alone, alone_s)
# gradients of every parameter
grads = {}
for impl in ("eager", "sdpa", "infllm"):
    M[impl].zero_grad()
    out = M[impl](input_ids=ids, labels=ids)
    out.loss.backward()
    grads[impl] = torch.cat([p.grad.reshape(-1) for p in M[impl].parameters()])
close("dense gradients of all parameters", grads["infllm"], grads["eager"], grads["sdpa"])
# greedy generation with the KV cache: the same tokens
prompt = ids[:1, :40]
with torch.no_grad():
    ge = M["eager"].generate(prompt, max_new_tokens=12, do_sample=False)
    gi = M["infllm"].generate(prompt, max_new_tokens=12, do_sample=False)
check(torch.equal(ge, gi), f"greedy generation with the KV cache == eager's ({gi[0, 40:].tolist()})")

# a left-padded batch generating with the KV cache (each step's mask has the padding run)
pmask = torch.ones(2, 40, dtype=torch.long)
pmask[0, :9] = 0
pids = ids[:, :40].clone()
pids[0, :9] = 0
with torch.no_grad():
    ge = M["eager"].generate(pids, attention_mask=pmask, max_new_tokens=8, do_sample=False)
    gi = M["infllm"].generate(pids, attention_mask=pmask, max_new_tokens=8, do_sample=False)
check(torch.equal(ge, gi), f"left-padded batch generation == eager's ({gi[:, 40:].tolist()})")
# a static cache (cache_implementation="static"): keys come allocated to the cache's length, the slots past the tokens
# seen not yet written; attending them (bottom-right aligned at the end of the cache) gave other tokens silently
with torch.no_grad():
    for name, kw in (("one prompt", dict(inputs=prompt)), ("a left-padded batch", dict(inputs=pids, attention_mask=pmask))):
        ge = M["eager"].generate(**kw, max_new_tokens=6, do_sample=False)
        try:
            gi = M["infllm"].generate(**kw, max_new_tokens=6, do_sample=False, cache_implementation="static")
            check(torch.equal(ge, gi), f"static-cache generation, {name}: == eager's ({gi[:, -6:].tolist()})")
        except ValueError as e:
            check(False, f"static-cache generation, {name}: raised {e}")

# sparse
infllm.hf.configure(M["infllm"], topk=1000, **SPARSE)
le, ls, li = logits("eager"), logits("sdpa"), logits("infllm")
close("sparse with every block selected == dense", li, le, ls)
infllm.hf.configure(M["infllm"], topk=2, **SPARSE)  # 3 blocks a query (topk 2 + 1 local) of up to 10
lsp = logits("infllm")
d = (lsp - le).abs().max().item()
check(d > 1e-3, f"sparse with 3 of 10 blocks differs from dense ({d:.3g})")
check(torch.equal(lsp[:, :48], li[:, :48]), "the first 3 blocks' tokens (all their blocks selected) unchanged")
M["infllm"].zero_grad()
M["infllm"].train()
loss = M["infllm"](input_ids=ids, labels=ids).loss
loss.backward()
g = torch.cat([p.grad.reshape(-1) for p in M["infllm"].parameters()])
check(torch.isfinite(g).all().item() and g.abs().max().item() > 0, f"sparse training step: finite gradients, loss {loss.item():.4f}")
M["infllm"].eval()
with torch.no_grad():
    gs = M["infllm"].generate(prompt, max_new_tokens=12, do_sample=False)
check(gs.shape == (1, 52), "sparse generation runs")

# the parameters travel with save_pretrained / from_pretrained (config.json)
import tempfile  # noqa: E402

with tempfile.TemporaryDirectory() as d:
    M["infllm"].save_pretrained(d)
    back = LlamaForCausalLM.from_pretrained(d, attn_implementation="infllm").eval()
    with torch.no_grad():
        lb = back(input_ids=ids).logits
check(back.config.infllm_params == M["infllm"].config.infllm_params and torch.equal(lb, lsp),
      f"save_pretrained / from_pretrained keep the parameters ({back.config.infllm_params})")

# errors
q = torch.randn(1, 8, 5, 16)
kv = torch.randn(1, 2, 5, 16)
try:
    infllm.hf.infllm_attention_forward(M["infllm"].model.layers[0].self_attn, q, kv, kv, torch.tensor([[1, 0, 1, 1, 1]]))
    check(False, "a mask with a hole: refused")
except ValueError as e:
    check("contiguous" in str(e), f"a mask with a hole refused ({e})")
att = M["infllm"].model.layers[0].self_attn
# a direct caller's float masks: additive (0 kept, finfo.min / -inf masked) was read as 0 / 1, inverted, before
keep = torch.tensor([[0, 0, 1, 1, 1]])  # left padding: keys 2..4
want, _ = infllm.hf.infllm_attention_forward(att, q, kv, kv, keep)
for name, m in (("an additive (finfo.min)", (1 - keep.float()) * torch.finfo(torch.float32).min),
                ("an additive (-inf)", torch.where(keep.bool(), 0.0, float("-inf"))),
                ("a float 0 / 1", keep.float()), ("a bool", keep.bool())):
    got, _ = infllm.hf.infllm_attention_forward(att, q, kv, kv, m)
    check(torch.equal(got, want), f"{name} padding mask gives the 0 / 1 mask's output")
for name, m in (("a bias", torch.tensor([[0.0, -0.5, 0.0, 0.0, 0.0]])), ("0 / 1 / 2", torch.tensor([[0.0, 1, 2, 1, 1]]))):
    try:
        infllm.hf.infllm_attention_forward(att, q, kv, kv, m)
        check(False, f"a float mask of {name}: refused")
    except ValueError as e:
        check("mask" in str(e), f"a float mask of {name} refused ({e})")
try:  # one of the two packed-sequence offsets raised TypeError: 'NoneType' object is not iterable
    infllm.hf.infllm_attention_forward(att, q, kv, kv, None, cu_seq_lens_q=torch.tensor([0, 2, 5], dtype=torch.int32))
    check(False, "cu_seq_lens_q without cu_seq_lens_k: refused")
except ValueError as e:
    check("cu_seq_lens_k" in str(e), f"cu_seq_lens_q without cu_seq_lens_k refused ({e})")
# a layer that is not causal (an encoder's, cross-attention: module.is_causal False, or is_causal=False passed) was
# computed causal, silently
for name, kw in (("is_causal=False passed", dict(is_causal=False)), ("module.is_causal False", {})):
    att.is_causal = bool(kw)  # causal module, is_causal=False passed; or the module not causal
    try:
        infllm.hf.infllm_attention_forward(att, q, kv, kv, None, **kw)
        check(False, f"a non-causal layer ({name}): refused")
    except ValueError as e:
        check("causal" in str(e), f"a non-causal layer ({name}) refused ({e})")
att.is_causal = True
att.train()
try:
    infllm.hf.infllm_attention_forward(att, q, kv, kv, None, dropout=0.1)
    check(False, "attention dropout in training: refused")
except ValueError as e:
    check("dropout" in str(e), f"attention dropout in training refused ({e})")
att.eval()

# a sliding window (Mistral's, 24 keys over 150 tokens): the layer's sliding_window reaches infllm's window (dense, and
# sparse with every window block selected); the same weights without a window land far from it (what is compared is
# the window)
from transformers import MistralConfig, MistralForCausalLM  # noqa: E402
MW = {}
for impl, win in (("eager", 24), ("sdpa", 24), ("infllm", 24), ("full", None)):
    m = MistralForCausalLM(MistralConfig(vocab_size=101, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                         num_attention_heads=8, num_key_value_heads=2, head_dim=16,
                                         max_position_embeddings=1024, sliding_window=win,
                                         attn_implementation="eager" if impl == "full" else impl))
    if MW:
        m.load_state_dict(MW["eager"].state_dict())
    MW[impl] = m.eval()
with torch.no_grad():
    we, ws_, wfull = (MW[i](input_ids=ids).logits for i in ("eager", "sdpa", "full"))
    infllm.hf.configure(MW["infllm"], mode="dense")
    wi = MW["infllm"](input_ids=ids).logits
    infllm.hf.configure(MW["infllm"], topk=2, **SPARSE)  # 24 keys span at most 3 blocks of 16: topk 2 + local 1
    wsp = MW["infllm"](input_ids=ids).logits
close("Mistral sliding_window 24, dense", wi, we, ws_)
close("Mistral sliding_window 24, sparse (every window block selected)", wsp, we, ws_)
d = (wfull - we).abs().max().item()
check(d > 1e-2, f"the same weights without the window are {d:.3g} away: the window is what agrees")
infllm.hf.configure(MW["infllm"], mode="dense")
with torch.no_grad():  # the KV cache of a windowed layer keeps the last window's keys: short calls take no window
    ge = MW["eager"].generate(ids[:1, :40], max_new_tokens=12, do_sample=False)
    gi = MW["infllm"].generate(ids[:1, :40], max_new_tokens=12, do_sample=False)
check(torch.equal(ge, gi), f"Mistral sliding_window 24: greedy generation with the KV cache == eager's "
      f"({gi[0, 40:].tolist()})")

if torch.cuda.is_available() and infllm.cuda_available():
    M = models(torch.bfloat16, "cuda", head_dim=64)  # the CUDA backend takes head_dim 64 / 128
    ids = ids.cuda()
    le, ls, li = logits("eager"), logits("sdpa"), logits("infllm")
    close("CUDA bf16 dense logits", li, le, ls)
    infllm.hf.configure(M["infllm"], topk=1000, **SPARSE)
    close("CUDA bf16 sparse, every block selected", logits("infllm"), le, ls)
else:
    print(f"SKIP: no GPU for the CUDA part ({infllm.cuda_device_info()})")
c.finish()
