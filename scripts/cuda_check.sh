#!/usr/bin/env bash
# cuda_check.sh: builds infllm with CUDA (cmake) on a GPU machine and runs tests/test_cuda.c,
# the differential grid of the CUDA backend vs the float64 REF backend and the golden data.
# Prints one "CUDA SUMMARY" line; exit status non-zero on any failure. Without a GPU the test
# prints SKIP and passes.
#   BUILD=build-gpu  INFLLM_CUDA_ARCHS=90a  INFLLM_GOLDEN_DIR=<dir holding pub1/>
# With 90a (the default) the grid runs on the wgmma kernels, then on the mma.sync kernels that
# sm_80 / plain sm_90 builds use (INFLLM_CUDA_NO_WGMMA=1) in both tile configurations.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-gpu}
ARCHS=${INFLLM_CUDA_ARCHS:-90a}
if [ -z "${INFLLM_GOLDEN_DIR:-}" ]; then
  for d in .devcarry/golden ../shared/golden shared/golden; do
    if [ -d "$d/pub1" ]; then export INFLLM_GOLDEN_DIR=$(cd "$d" && pwd); break; fi
  done
fi
cmake -S . -B "$BUILD" -DINFLLM_CUDA_ARCHS="$ARCHS" -DCMAKE_BUILD_TYPE=Release >"$BUILD.configure.log" 2>&1 ||
  { cat "$BUILD.configure.log"; exit 1; }
grep "infllm: CUDA" "$BUILD.configure.log" || true
cmake --build "$BUILD" -j"$(nproc)" --target test_cuda infllm_shared 2>&1 | grep -E "error|warning" || true
test -x "$BUILD/tests/test_cuda" || { echo "cuda_check: build failed"; exit 1; }
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"$BUILD/tests/test_cuda"
if [ "${CUDA_CHECK_ALT:-1}" = 1 ]; then
  echo "--- again on the mma.sync kernels (INFLLM_CUDA_NO_WGMMA=1), default 4-warp tiles"
  INFLLM_CUDA_NO_WGMMA=1 "$BUILD/tests/test_cuda"
  echo "--- again with the alternative kernel configurations (mma.sync, fused decode selection, 8-warp sparse and dense tiles)"
  INFLLM_CUDA_NO_WGMMA=1 INFLLM_CUDA_NO_DEC=1 INFLLM_CUDA_SPARSE_NW=8 INFLLM_CUDA_DENSE_NW=8 "$BUILD/tests/test_cuda"
fi
cmake --build "$BUILD" -j"$(nproc)" --target test_cuda_cache 2>&1 | grep -E "error|warning" || true; "$BUILD/tests/test_cuda_cache" && INFLLM_CUDA_NO_PDL=1 "$BUILD/tests/test_cuda_cache"
