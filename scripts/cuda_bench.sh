#!/usr/bin/env bash
# cuda_bench.sh: builds libinfllm with CUDA and runs bench/cuda_bench.py (our pipeline and each
# stage vs PyTorch SDPA cuDNN/flash and FlexAttention, 8K..128K, dense causal, decode with graph
# replay). Extra arguments go to the Python driver (e.g. --no-flex, --sizes 32768).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-gpu}
ARCHS=${INFLLM_CUDA_ARCHS:-90}
if [ ! -f "$BUILD/libinfllm.so" ]; then
  cmake -S . -B "$BUILD" -DINFLLM_CUDA_ARCHS="$ARCHS" -DCMAKE_BUILD_TYPE=Release >"$BUILD.configure.log" 2>&1
  cmake --build "$BUILD" -j"$(nproc)" --target infllm_shared 2>&1 | grep -E "error|warning" || true
fi
PYTHONUNBUFFERED=1 python3 bench/cuda_bench.py --lib "$BUILD/libinfllm.so" "$@"
