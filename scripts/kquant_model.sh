#!/usr/bin/env bash
# kquant_model.sh (opt-in, not in CI): a Llama-shaped GGUF with llama.cpp's own K-quant mix, for timing the model
# runtime's K-quant kernels against llama.cpp (`infllm bench run -m OUT --llamacpp on`). SmolLM2's 576-wide rows make
# llama.cpp's Q4_K_M mix fall back to Q5_0, so its files barely exercise Q4_K / Q6_K (BENCHMARKS "Session 71").
# Random weights (tests/model_testlib.py's Tiny: 16 layers, 1024 wide, FFN 2816, 16 / 4 heads, a 32,000-token byte
# tokenizer) written as F16, then quantized by llama-cpp-python's llama_model_quantize.
#   usage: scripts/kquant_model.sh [OUT.gguf] [FTYPE]   (default /tmp/km/q4km.gguf, 15 = Q4_K_M; 17 = Q5_K_M, 18 = Q6_K)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-/tmp/km/q4km.gguf}"
ftype="${2:-15}"
mkdir -p "$(dirname "$out")"
python3 -c "import gguf, numpy, llama_cpp" 2>/dev/null || python3 -m pip install --quiet gguf numpy llama-cpp-python
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 - "$here" "$tmp/f16.gguf" "$out" "$ftype" <<'PY'
import ctypes, sys
here, f16, out, ftype = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
sys.path.insert(0, here + "/tests")
import gguf
import llama_cpp
import model_testlib as ml
F16 = gguf.GGMLQuantizationType.F16
t = ml.Tiny(arch="llama", seed=3, n_embd=1024, n_head=16, n_kv=4, n_ff=2816, n_layer=16, n_vocab=32000)
t.write_gguf(f16, {k: F16 for k in ("emb", "out", "q", "k", "v", "o", "gate", "up", "down")}, tokenizer=True)
p = llama_cpp.llama_model_quantize_default_params()
p.ftype = ftype
rc = llama_cpp.llama_model_quantize(f16.encode(), out.encode(), ctypes.byref(p))
if rc != 0:
    sys.exit(f"kquant_model: llama_model_quantize failed ({rc})")
print(f"kquant_model: {out} (ftype {ftype})")
PY
