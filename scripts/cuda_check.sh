#!/usr/bin/env bash
# cuda_check.sh: builds infllm with CUDA (cmake) on a GPU machine and runs tests/test_cuda.c,
# the differential grid of the CUDA backend vs the float64 REF backend and the golden data.
# Prints one "CUDA SUMMARY" line; exit status non-zero on any failure. Without a GPU the test
# prints SKIP and passes.
#   BUILD=build-gpu  INFLLM_CUDA_ARCHS=90a  INFLLM_GOLDEN_DIR=<dir holding pub1/>
# With 90a (the default) the grid runs on the wgmma kernels, then on the mma.sync kernels that
# sm_80 / plain sm_90 builds use (INFLLM_CUDA_NO_WGMMA=1) in both tile configurations (k_select's
# rows of groups below 16 unpadded in one, padded to 16 in the other), then on the
# wgmma kernels with K/V chunks by cp.async only and k_select90 in segments, and on their other tile shapes (k_select90's
# 256-kernel tiles, its 2-stage ring of 128-kernel tiles, its unordered warpgroups, ungrouped stage-2 tiles, the 3-stage compression
# ring of devices with less shared memory, token grouping in 16-tile windows, kept consecutive where it gains little), and with the few-query calls
# (one sequence, <= 16 queries) on the shared kernels instead of the decode cache's.
# test_cuda_ws holds the cache's workspace query to every attend's need with this device's SM count.
# test_cuda_backward (sessions 40-41) holds the attention backward to REF's float64 gradients (its grid and 12 random
# cases; again as planned for a 16-SM Orin when the emulated runs are on: other dk / dv pieces; and on the mma.sync
# kernels, INFLLM_CUDA_NO_WGMMA=1: pass 1 by k_flash and dq by k_bwd_q instead of k_flash90's).
# Then, when PyTorch is there (CUDA_CHECK_LONG=0: not), bench/long_check.py runs 1M tokens (G 16) and 768K
# (G 4), past 2^31 query elements, as one sequence and as a batch of 3, cuda_bench.py's digests hold
# k_select90's two tile widths to the same top-k and output, and bench/emulate_check.py sweeps every entry
# point to 768K tokens as planned for a T4 (refused), an A100, a 99 KB cc 8.6 part and a 16-SM Orin.
# The grid also runs as planned for those GPUs (INFLLM_CUDA_EMULATE; CUDA_CHECK_EMULATE=0: not).
# The runs are independent processes whose time was the single-threaded float64 reference; since session 34
# test_cuda's references are computed once, a process a core, and read by its runs (CUDA_CHECK_REF_SHARE=0: not).
# The runs go side by side (CUDA_CHECK_SERIAL=1: one after the other); each one's output is printed
# in order once all have finished, with its seconds. Each run has CUDA_CHECK_TIMEOUT seconds (default 480; with the
# shared references a test_cuda run takes ~10 s after a ~60 s precompute and test_cuda_cache ~100 s, the whole check
# 226 s with a cold build on the H200 in session 35; without them, CUDA_CHECK_REF_SHARE=0, 380-400 s side by side): a
# kernel that hangs fails its run (exit 124, "timed out")
# instead of holding the device call to its limit with nothing printed.
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
cmake --build "$BUILD" -j"$(nproc)" --target test_cuda test_cuda_cache test_cuda_capture test_cuda_threads test_cuda_ws test_cuda_backward test_cuda_window infllm_shared 2>&1 | grep -E "error|warning" || true
test -x "$BUILD/tests/test_cuda" || { echo "cuda_check: build failed"; exit 1; }
test -x "$BUILD/tests/test_cuda_cache" || { echo "cuda_check: build failed"; exit 1; }
test -x "$BUILD/tests/test_cuda_capture" || { echo "cuda_check: build failed"; exit 1; }
test -x "$BUILD/tests/test_cuda_threads" || { echo "cuda_check: build failed"; exit 1; }
test -x "$BUILD/tests/test_cuda_ws" || { echo "cuda_check: build failed"; exit 1; }
test -x "$BUILD/tests/test_cuda_backward" || { echo "cuda_check: build failed"; exit 1; }
test -x "$BUILD/tests/test_cuda_window" || { echo "cuda_check: build failed"; exit 1; }
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
LOGS=$(mktemp -d)
trap 'rm -rf "$LOGS"' EXIT
RUNS=("test_cuda: wgmma kernels (default)|$BUILD/tests/test_cuda")
if [ "${CUDA_CHECK_ALT:-1}" = 1 ]; then
  RUNS+=("test_cuda: mma.sync kernels (INFLLM_CUDA_NO_WGMMA=1), default 4-warp tiles, few-query calls on the shared kernels (INFLLM_CUDA_NO_FEWQ_CD=1), k_select's rows never padded (INFLLM_CUDA_NO_SEL_PAD16=1)|env INFLLM_CUDA_NO_WGMMA=1 INFLLM_CUDA_NO_FEWQ_CD=1 INFLLM_CUDA_NO_SEL_PAD16=1 $BUILD/tests/test_cuda")
  RUNS+=("test_cuda: alternative kernel configurations (mma.sync, fused decode selection, 8-warp sparse and dense tiles, few-query calls on the shared kernels, k_select's rows padded to 16 for groups below 16)|env INFLLM_CUDA_NO_WGMMA=1 INFLLM_CUDA_NO_DEC=1 INFLLM_CUDA_NO_FEWQ_CD=1 INFLLM_CUDA_SPARSE_NW=8 INFLLM_CUDA_DENSE_NW=8 INFLLM_CUDA_SEL_PAD16=1 $BUILD/tests/test_cuda")
  RUNS+=("test_cuda: wgmma kernels, few-query calls on the shared kernels, compression a warp a window, k_select90's 3-stage ring of 128-kernel tiles at d 128 (the 2-stage ring's place by default), k_flash90's sorted block lists on every sparse launch (INFLLM_CUDA_NO_FEWQ_CD=1 INFLLM_CUDA_NO_COMPRESS_GROUP=1 INFLLM_CUDA_SEL90_NO_RING2=1 INFLLM_CUDA_FLASH_LIST=2)|env INFLLM_CUDA_NO_FEWQ_CD=1 INFLLM_CUDA_NO_COMPRESS_GROUP=1 INFLLM_CUDA_SEL90_NO_RING2=1 INFLLM_CUDA_FLASH_LIST=2 $BUILD/tests/test_cuda")
  RUNS+=("test_cuda: wgmma kernels with every K/V chunk by cp.async and the thread-a-column compression (INFLLM_CUDA_NO_TMA=1 INFLLM_CUDA_NO_COMPRESS16=1, the paths of misaligned or tiny K/V), k_select90 in segments of one tile (INFLLM_CUDA_SEL90_SEG=1, the path past its whole rows' limit)|env INFLLM_CUDA_NO_TMA=1 INFLLM_CUDA_NO_COMPRESS16=1 INFLLM_CUDA_SEL90_SEG=1 $BUILD/tests/test_cuda")
  RUNS+=("test_cuda: wgmma kernels with k_select90's 256-kernel tiles, stage-2 tiles of consecutive tokens and token bitmaps for every group size (INFLLM_CUDA_SEL90_TILES=256 INFLLM_CUDA_NO_GROUP=1 INFLLM_CUDA_NO_FLASH_LIST=1)|env INFLLM_CUDA_SEL90_TILES=256 INFLLM_CUDA_NO_GROUP=1 INFLLM_CUDA_NO_FLASH_LIST=1 $BUILD/tests/test_cuda")
  RUNS+=("test_cuda: wgmma kernels with k_select90's warpgroups coupled by a tile barrier and issuing unordered, the 3-stage compression ring of devices with less shared memory, and stage-2 token grouping in the largest windows that fit, kept consecutive where it gains under 10% (INFLLM_CUDA_SEL90_COUPLED=1 INFLLM_CUDA_SEL90_NO_ORDER=1 INFLLM_CUDA_COMPRESS_RING=3 INFLLM_CUDA_GROUP_TILES=16 INFLLM_CUDA_GROUP_MIN_GAIN=10)|env INFLLM_CUDA_SEL90_COUPLED=1 INFLLM_CUDA_SEL90_NO_ORDER=1 INFLLM_CUDA_COMPRESS_RING=3 INFLLM_CUDA_GROUP_TILES=16 INFLLM_CUDA_GROUP_MIN_GAIN=10 $BUILD/tests/test_cuda")
fi
# the launch planning of other GPUs on this one (INFLLM_CUDA_EMULATE, src/cuda/cuda_pipeline.cu): a 99 KB cc 8.6
# part (RTX 3090: the mma.sync kernels in 99 KB a block; cc 8.9 and 12.0 have the same limits) and a 16-SM Jetson
# AGX Orin (cc 8.7, 163 KB); an A100's planning is the mma.sync runs' above but for its SM count and limits, which
# bench/emulate_check.py sweeps
if [ "${CUDA_CHECK_EMULATE:-1}" = 1 ]; then
  RUNS+=("test_cuda: as planned for a 99 KB cc 8.6 part (INFLLM_CUDA_EMULATE=rtx3090)|env INFLLM_CUDA_EMULATE=rtx3090 $BUILD/tests/test_cuda")
  for t in test_cuda_cache test_cuda_ws test_cuda_capture test_cuda_backward; do
    RUNS+=("$t: as planned for a 16-SM Jetson AGX Orin (INFLLM_CUDA_EMULATE=orin)|env INFLLM_CUDA_EMULATE=orin $BUILD/tests/$t")
  done
fi
RUNS+=("test_cuda_window: the sliding key window on the wgmma kernels (default)|$BUILD/tests/test_cuda_window")
RUNS+=("test_cuda_window: on the mma.sync kernels (INFLLM_CUDA_NO_WGMMA=1)|env INFLLM_CUDA_NO_WGMMA=1 $BUILD/tests/test_cuda_window")
RUNS+=("test_cuda_window: on the mma.sync kernels' 8-warp tiles (INFLLM_CUDA_SPARSE_NW=8 INFLLM_CUDA_DENSE_NW=8)|env INFLLM_CUDA_NO_WGMMA=1 INFLLM_CUDA_SPARSE_NW=8 INFLLM_CUDA_DENSE_NW=8 $BUILD/tests/test_cuda_window")
RUNS+=("test_cuda_window: the wgmma kernels with every K/V chunk by cp.async (INFLLM_CUDA_NO_TMA=1)|env INFLLM_CUDA_NO_TMA=1 $BUILD/tests/test_cuda_window")
# the selection kernels' window (sessions 56-57): k_select90 in segments of one tile, the fused k_select instead of
# the small-batch kernels (k_dec_topk); k_select itself in the mma.sync runs above
RUNS+=("test_cuda_window: the selection's window on k_select90 in segments of one tile (INFLLM_CUDA_SEL90_SEG=1)|env INFLLM_CUDA_SEL90_SEG=1 $BUILD/tests/test_cuda_window")
RUNS+=("test_cuda_window: the selection's window without the small-batch kernels (INFLLM_CUDA_NO_DEC=1)|env INFLLM_CUDA_NO_DEC=1 $BUILD/tests/test_cuda_window")
# the decode kernels (k_cd_*) under the window (session 59) in the default run; the shared kernels' windowed few-query
# path instead of them
RUNS+=("test_cuda_window: the few-query calls on the shared kernels (INFLLM_CUDA_NO_FEWQ_CD=1)|env INFLLM_CUDA_NO_FEWQ_CD=1 $BUILD/tests/test_cuda_window")
# pass 2 of the selections from the window's first kernel's tile (session 58) on k_select90's 256-kernel tiles and
# on its one-tile segments in place of the small-batch kernels (the runs above take its other kernels)
RUNS+=("test_cuda_window: k_select90's 256-kernel tiles (INFLLM_CUDA_SEL90_TILES=256)|env INFLLM_CUDA_SEL90_TILES=256 $BUILD/tests/test_cuda_window")
RUNS+=("test_cuda_window: k_select90 in one-tile segments without the small-batch kernels (INFLLM_CUDA_SEL90_SEG=1 INFLLM_CUDA_NO_DEC=1)|env INFLLM_CUDA_SEL90_SEG=1 INFLLM_CUDA_NO_DEC=1 $BUILD/tests/test_cuda_window")
RUNS+=("test_cuda_cache: PDL (default)|$BUILD/tests/test_cuda_cache")
RUNS+=("test_cuda_cache: no PDL (INFLLM_CUDA_NO_PDL=1)|env INFLLM_CUDA_NO_PDL=1 $BUILD/tests/test_cuda_cache")
RUNS+=("test_cuda_capture: first calls inside a global-mode graph capture|$BUILD/tests/test_cuda_capture")
RUNS+=("test_cuda_threads: 4 host threads on their own streams, first launches concurrent|$BUILD/tests/test_cuda_threads")
RUNS+=("test_cuda_ws: the cache workspace query against every attend's need, with this device's SM count and kernels|$BUILD/tests/test_cuda_ws")
RUNS+=("test_cuda_backward: the attention backward against REF's float64, its grid and 12 random cases (INFLLM_CUDA_BWD_RANDOM=12)|env INFLLM_CUDA_BWD_RANDOM=12 $BUILD/tests/test_cuda_backward")
RUNS+=("test_cuda_backward: on the mma.sync kernels of sm_80 / plain sm_90 builds (pass 1 by k_flash, dq by k_bwd_q: INFLLM_CUDA_NO_WGMMA=1), 4 random cases|env INFLLM_CUDA_NO_WGMMA=1 INFLLM_CUDA_BWD_RANDOM=4 INFLLM_CUDA_BWD_SEED=77 $BUILD/tests/test_cuda_backward")
TMO=${CUDA_CHECK_TIMEOUT:-480}
HAVE_TORCH=0
# PyTorch serves long_check and the emulate_check sweep (either switch asks for it)
if { [ "${CUDA_CHECK_LONG:-1}" = 1 ] || [ "${CUDA_CHECK_EMULATE:-1}" = 1 ]; } && python3 -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  HAVE_TORCH=1
fi
# the planning of other GPUs up to 768K tokens (bench/emulate_check.py, PyTorch), one profile after another,
# beside the runs below (they are bound by their float64 references on the CPU, the sweep by the GPU)
emu_sweep() {
  for prof in t4 a100 rtx3090 orin; do
    echo "--- emulate_check --profile $prof"
    timeout -k 10 "$TMO" python3 bench/emulate_check.py --lib "$BUILD/libinfllm.so" --profile $prof || echo "emulate_check $prof: exit $?"
  done
}
# needs PyTorch: sequences past 2^31 query elements (bench/long_check.py: prefix, selection + stage 2, late rows
# against float64, the last queries as a few-query call, a batch of 3), where the grid's short cases cannot
# reach, and k_select90's two tile widths against each other (~1.5 minutes in all on the H200). Beside the runs
# below, as the emulate_check sweep (after them, a whole check on a cold machine came to ~590 s: more than one
# device call may take); a failure prints "long_check: FAILED" into its log.
long_sweep() {
    lfail=0
    for args in "--T 1048576" "--T 786432 --shape 32,8,128"; do
      echo "--- long_check $args"
      # shellcheck disable=SC2086
      timeout -k 10 "$TMO" python3 bench/long_check.py --lib "$BUILD/libinfllm.so" $args || lfail=1
    done
    # k_select90's tiles of 128 and 256 kernels select the same blocks, bit for bit (the width follows the
    # call's longest sequence, so a sequence's selection must not depend on it)
    for shape in 32,2,128 16,2,64; do
      dig=()
      for w in 128 256; do
        dig+=("$(INFLLM_CUDA_SEL90_TILES=$w timeout -k 10 300 python3 bench/cuda_bench.py --lib "$BUILD/libinfllm.so" \
          --shape $shape --profile 65536 --digest 2>&1 | grep "^digest" || true)")
      done
      echo "--- select tiles of 128 / 256 kernels, $shape, 64K: '${dig[0]}' / '${dig[1]}'"
      if [ -z "${dig[0]}" ] || [ "${dig[0]}" != "${dig[1]}" ]; then echo "FAIL: the tile widths differ"; lfail=1; fi
    done
    if [ $lfail != 0 ]; then echo "long_check: FAILED"; fi
}
# Both hold tens of GB of device memory at their largest (37 GB in long_check at 1M tokens, 27 GB in an emulate
# profile): side by side where the GPU has room (the H200's 141 GB), one after the other below ~100 GB (an H100's
# 80: session 71's whole check ran them side by side there and emulate_check a100 ran out of memory).
emu=""
long=""
want_long=0
want_emu=0
[ "${CUDA_CHECK_LONG:-1}" = 1 ] && [ $HAVE_TORCH = 1 ] && want_long=1
[ "${CUDA_CHECK_EMULATE:-1}" = 1 ] && [ $HAVE_TORCH = 1 ] && want_emu=1
gpu_gb=0
if [ $HAVE_TORCH = 1 ]; then
  gpu_gb=$(python3 -c "import torch; print(torch.cuda.get_device_properties(0).total_memory >> 30)" 2>/dev/null || echo 0)
fi
if [ $want_long = 1 ] && [ $want_emu = 1 ] && [ "$gpu_gb" -lt 100 ]; then
  echo "--- long_check, then the emulate_check sweep, one after the other (${gpu_gb} GiB on the GPU)"
  ( long_sweep >"$LOGS/long" 2>&1; emu_sweep >"$LOGS/emulate" 2>&1 ) &
  long=$!
  emu=$long
else
  if [ $want_emu = 1 ]; then
    emu_sweep >"$LOGS/emulate" 2>&1 &
    emu=$!
  fi
  if [ $want_long = 1 ]; then
    long_sweep >"$LOGS/long" 2>&1 &
    long=$!
  fi
fi
# one run: its output line-buffered (a run killed by its timeout still shows how far it got), its exit status
# and its seconds
one_run() {
  local i=$1 t0=$SECONDS rc=0
  # shellcheck disable=SC2086
  timeout -k 10 "$TMO" stdbuf -oL -eL ${RUNS[$i]#*|} >"$LOGS/$i" 2>&1 || rc=$?
  echo "$rc $((SECONDS - t0))" >"$LOGS/$i.rc"
}
# launches the runs of test_cuda (uses_refs 1) or of the other tests (0)
pids=()
launch_runs() {
  local i uses
  for i in "${!RUNS[@]}"; do
    uses=0
    case "${RUNS[$i]#*|}" in */tests/test_cuda) uses=1 ;; esac
    [ "$uses" = "$1" ] || continue
    if [ "${CUDA_CHECK_SERIAL:-0}" = 1 ]; then
      one_run "$i"
    else
      one_run "$i" &
      pids+=($!)
    fi
  done
}
# the other tests first (they need no references), then test_cuda's references, then its runs
launch_runs 0
# test_cuda's references (REF selection, REF attention, the naive error: most of a run's time, the same in every
# configuration) computed once, a process a core, into a folder its runs read (INFLLM_TEST_REF_DIR, removed with
# $LOGS at the end; a file missing or damaged is computed by the run that needs it). CUDA_CHECK_REF_SHARE=0: each
# run computes its own, as before session 34.
ref_fail=0
if [ "${CUDA_CHECK_REF_SHARE:-1}" = 1 ]; then
  export INFLLM_TEST_REF_DIR="$LOGS/ref"
  mkdir -p "$INFLLM_TEST_REF_DIR"
  t0=$SECONDS
  if INFLLM_TEST_REF_ONLY=1 timeout -k 10 "$TMO" "$BUILD/tests/test_cuda" >"$LOGS/refs" 2>&1; then
    echo "--- $(tail -n 1 "$LOGS/refs"), $((SECONDS - t0)) s"
  else
    echo "--- test_cuda's shared references: FAILED, $((SECONDS - t0)) s"
    cat "$LOGS/refs"
    ref_fail=1
  fi
fi
launch_runs 1
for p in "${pids[@]}"; do wait "$p"; done
fail=$ref_fail
for i in "${!RUNS[@]}"; do
  read -r rc secs <"$LOGS/$i.rc"
  tmo=""
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then tmo=" (timed out after ${TMO} s: a hung kernel, or raise CUDA_CHECK_TIMEOUT)"; fi
  echo "--- ${RUNS[$i]%%|*}: exit $rc$tmo, ${secs} s"
  cat "$LOGS/$i"
  [ "$rc" = 0 ] || [ "$rc" = 77 ] || fail=1 # 77: skipped (no CUDA device)
done
if [ "${CUDA_CHECK_LONG:-1}" = 1 ]; then
  if [ -n "$long" ]; then
    wait "$long" || true
    cat "$LOGS/long"
    if grep -q "^long_check: FAILED" "$LOGS/long"; then fail=1; fi
  else
    echo "--- long_check: skipped (needs PyTorch with a CUDA device; CUDA_CHECK_LONG=0 turns it off)"
  fi
fi
if [ -n "$emu" ]; then
  wait "$emu" || true
  cat "$LOGS/emulate"
  if grep -q "^emulate_check .*: exit" "$LOGS/emulate"; then fail=1; fi
fi
if [ $fail = 0 ]; then echo "cuda_check: all passed"; else echo "cuda_check: FAILED"; fi
exit $fail
