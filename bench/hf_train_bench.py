#!/usr/bin/env python3
"""hf_train_bench.py: a training step (forward + backward) of a transformers Llama with InfLLM-V2 attention
(python/infllm/hf.py, sparse with MiniCPM4.1's parameters) against the same model with transformers' sdpa
attention (PyTorch's scaled_dot_product_attention: flash / cuDNN / efficient backends as it picks), on one GPU.

The model has MiniCPM4-8B's attention shape (hidden 4096, 32 query heads, 2 KV heads, head_dim 128), a shorter
MLP and few layers (the attention's share of a step is what the comparison is about; --layers, --ffn), bf16,
random weights and tokens, batch 1. Prints per length the step's milliseconds with each attention (median of
--reps after one warm-up) and their ratio: the end-to-end number a user sees, MLP and embeddings included.

    python3 bench/hf_train_bench.py [--lib build-gpu/libinfllm.so] [--seqlen 16384,32768,65536] [--layers 2]
                                    [--ffn 4096] [--reps 3] [--format md|csv]
"""
import argparse
import os
import sys
import time

import torch

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--lib", default=None)
ap.add_argument("--seqlen", default="16384,32768,65536")
ap.add_argument("--layers", type=int, default=2)
ap.add_argument("--ffn", type=int, default=4096)
ap.add_argument("--reps", type=int, default=3)
ap.add_argument("--format", choices=("md", "csv"), default="md")
a = ap.parse_args()
if a.lib:
    os.environ["INFLLM_LIB"] = os.path.abspath(a.lib)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))
import infllm  # noqa: E402
import infllm.hf  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

if not (torch.cuda.is_available() and infllm.cuda_available()):
    sys.exit(f"hf_train_bench: no GPU ({infllm.cuda_device_info()})")
infllm.hf.register()
cfg = dict(vocab_size=1024, hidden_size=4096, intermediate_size=a.ffn, num_hidden_layers=a.layers,
           num_attention_heads=32, num_key_value_heads=2, head_dim=128, max_position_embeddings=1 << 20)
torch.manual_seed(0)
models = {}
for impl in ("sdpa", "infllm"):
    m = LlamaForCausalLM(LlamaConfig(**cfg, attn_implementation=impl)).to("cuda", torch.bfloat16)
    if models:
        m.load_state_dict(models["sdpa"].state_dict())
    models[impl] = m.train()
infllm.hf.configure(models["infllm"], dense_len=-1)  # sparse at every length, MiniCPM4.1's 96 blocks of 64


def step_ms(model, ids):
    def step():
        model.zero_grad(set_to_none=True)
        model(input_ids=ids, labels=ids).loss.backward()
    step()
    torch.cuda.synchronize()
    times = []
    for _ in range(a.reps):
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)[len(times) // 2]


rows = []
for T in (int(x) for x in a.seqlen.split(",")):
    ids = torch.randint(0, cfg["vocab_size"], (1, T), device="cuda")
    t_s = step_ms(models["sdpa"], ids)
    t_i = step_ms(models["infllm"], ids)
    rows.append((T, t_s, t_i))
    torch.cuda.empty_cache()
print(f"# {torch.cuda.get_device_name()}, library {infllm.build_commit()}, torch {torch.__version__}, "
      f"{a.layers} layers, hidden 4096, 32 / 2 heads, d 128, ffn {a.ffn}, bf16, median of {a.reps}")
if a.format == "csv":
    print("seqlen,sdpa_step_ms,infllm_step_ms,speedup")
    for T, s, i in rows:
        print(f"{T},{s:.1f},{i:.1f},{s / i:.3f}")
else:
    print("| tokens | sdpa step ms | infllm (sparse) step ms | infllm / sdpa speed |")
    print("| ---: | ---: | ---: | ---: |")
    for T, s, i in rows:
        print(f"| {T} | {s:.1f} | {i:.1f} | {s / i:.2f}x |")
