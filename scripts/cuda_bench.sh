#!/usr/bin/env bash
# cuda_bench.sh: builds libinfllm with CUDA and runs bench/cuda_bench.py (our pipeline and each
# stage vs PyTorch SDPA cuDNN/flash and FlexAttention, 8K..128K, dense causal, and decode at 128K
# with CUDA graph replay: the old path (infllm_attention, recompresses the prefix) and the device
# decode cache (append 1 token + attend)). Extra arguments go to the Python driver (e.g. --no-flex,
# --sizes 32768, --decode-profile). DECODE_ONLY=1: the decode rows only. BWD=1: bench/cuda_bwd_bench.py
# instead (the attention backward, ours sparse / dense vs SDPA cuDNN / flash and FlexAttention; its own
# arguments, e.g. --sizes 8192,32768 --no-flex --json FILE).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-gpu}
ARCHS=${INFLLM_CUDA_ARCHS:-90a} # 90a: the wgmma kernels (as scripts/cuda_check.sh)
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
  cmake -S . -B "$BUILD" -DINFLLM_CUDA_ARCHS="$ARCHS" -DCMAKE_BUILD_TYPE=Release >"$BUILD.configure.log" 2>&1
fi
# incremental: a library left by an earlier build is rebuilt when the sources changed
cmake --build "$BUILD" -j"$(nproc)" --target infllm_shared 2>&1 | grep -E "error|warning" || true
if [ "${BWD:-0}" = 1 ]; then
  PYTHONUNBUFFERED=1 exec python3 bench/cuda_bwd_bench.py --lib "$BUILD/libinfllm.so" "$@"
fi
EXTRA=()
if [ "${DECODE_ONLY:-0}" = 1 ]; then EXTRA=(--sizes "" --dense-sizes "" --no-flex); fi
PYTHONUNBUFFERED=1 python3 bench/cuda_bench.py --lib "$BUILD/libinfllm.so" "${EXTRA[@]}" "$@"
