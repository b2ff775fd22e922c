#!/usr/bin/env bash
# cuda_jit_check.sh: the route of a GPU newer than the build's architectures, run on this GPU.
#
# A default build holds sm_80 / sm_90 (or sm_90a) code and PTX; on a compute capability 10.x / 12.x part
# (Blackwell) the driver JIT-compiles that PTX at the first launch, and an 80;90a build (configured on a
# Hopper) leaves it only the compute_80 PTX: the mma.sync kernels, with no sm_90 instructions (no
# griddepcontrol, so the decode cache must not launch with PDL there). This script builds the library
# with compute_80 PTX alone (INFLLM_CUDA_ARCHS=80-virtual), so that the driver JIT-compiles it here too,
# checks that `infllm version` says so, times a first CUDA call with an empty JIT cache and with a warm
# one, and runs the test grid, the decode-cache tests (with and without PDL), the graph-capture, thread
# and workspace tests on that build (scripts/cuda_check.sh with BUILD / INFLLM_CUDA_ARCHS set).
#   BUILD=build-gpu-jit  CUDA_CHECK_TIMEOUT=...  (passed on to cuda_check.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-gpu-jit}
export BUILD INFLLM_CUDA_ARCHS=80-virtual
cmake -S . -B "$BUILD" -DINFLLM_CUDA_ARCHS="$INFLLM_CUDA_ARCHS" -DCMAKE_BUILD_TYPE=Release >"$BUILD.configure.log" 2>&1 ||
  { cat "$BUILD.configure.log"; exit 1; }
grep "infllm: CUDA" "$BUILD.configure.log" || true
cmake --build "$BUILD" -j"$(nproc)" --target infllm infllm_shared test_cuda test_cuda_cache test_cuda_capture test_cuda_threads test_cuda_ws 2>&1 | grep -E "error|warning" || true
test -x "$BUILD/infllm" || { echo "cuda_jit_check: build failed"; exit 1; }
# an empty JIT cache for this run's first call, kept for the runs after it
CUDA_CACHE_PATH=$(mktemp -d)
export CUDA_CACHE_PATH
trap 'rm -rf "$CUDA_CACHE_PATH"' EXIT
line=$("$BUILD/infllm" version | grep "^cuda:" || true)
echo "cuda_jit_check: $line"
case "$line" in
  *"JIT-compiled"*) ;;
  *) echo "cuda_jit_check: FAIL: the kernels are not JIT-compiled from PTX here"; exit 1 ;;
esac
fail=0
for run in "empty JIT cache" "warm JIT cache"; do
  start=$(date +%s%N)
  if ! "$BUILD/infllm" bench attn --device cuda --seqlen 16384 --heads 32 --kv-heads 2 --head-dim 128 --reps 1 \
      --no-warmup >"$BUILD.bench.log" 2>&1; then
    cat "$BUILD.bench.log"
    echo "cuda_jit_check: FAIL: bench attn --device cuda"
    fail=1
  fi
  end=$(date +%s%N)
  echo "cuda_jit_check: bench attn --device cuda, 16K, one rep ($run): $(( (end - start) / 1000000 )) ms in all"
  grep "^| " "$BUILD.bench.log" || true
done
echo "cuda_jit_check: JIT cache $(du -sh "$CUDA_CACHE_PATH" | cut -f1)"
CUDA_CHECK_ALT=0 CUDA_CHECK_EMULATE=0 CUDA_CHECK_LONG=0 bash scripts/cuda_check.sh || fail=1
if [ $fail = 0 ]; then echo "cuda_jit_check: all passed"; else echo "cuda_jit_check: FAILED"; fi
exit $fail
