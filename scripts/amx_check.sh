#!/usr/bin/env bash
# amx_check.sh: the CPU attention's AMX-BF16 kernels (src/attn/kern_dot16_amx.c) on a machine that has AMX (Intel
# Sapphire / Emerald / Granite Rapids under Linux): checked, then timed against the f32 FMA kernels and vdpbf16ps.
#
# They are the default there (CPU_AMX_DEFAULT in src/attn/cpu_attn.c, since session 70's run of this script on a
# device host's Xeon); CI and machines without AMX run their source under emulation only (test_amx_host,
# test_diff_amxemu, test_cache_amxemu). This script:
#   1. builds the CPU library, the command and the tests that take INFLLM_BF16_DOT (BUILD, default build-amx);
#   2. runs test_amx_host, test_diff (quick grid), test_cache, test_golden and test_backward with INFLLM_BF16_DOT=amx;
#   3. times the kernels alone (bench/kern_rate.c: qk16 / pv16 GFLOP/s at 16 and 48 rows) for vdpbf16ps and AMX, and
#      `infllm bench attn` (LEN tokens, default 16384; THREADS, default all) with the f32 FMA kernels, vdpbf16ps and
#      AMX, alternated (ROUNDS, default 2): the dense and sparse milliseconds of each.
# Exit 0 when every check passed (the timings are for reading), 1 on a failed check, 77 where the CPU has no AMX.
# MORE=1 also times one thread (bench attn at 8K), a decode step (bench decode, 32 / 2 heads, 8K-128K, one and
# THREADS threads) and the backward (bench backward at 8K), each with the f32 FMA kernels and AMX.
#   BUILD=...  LEN=16384  THREADS=0  ROUNDS=2  DOTS="0 avx512bf16 amx" (the timed INFLLM_BF16_DOT values)  INFLLM_GOLDEN_DIR=... (test_golden; skipped without the data)
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-amx}
LEN=${LEN:-16384}
THREADS=${THREADS:-0}
ROUNDS=${ROUNDS:-2}
DOTS=${DOTS:-0 avx512bf16 amx}
lscpu | grep -E "Model name|^CPU\(s\)" || true
if ! grep -q amx_bf16 /proc/cpuinfo 2>/dev/null; then
  echo "amx_check: SKIP (no amx_bf16 in /proc/cpuinfo)"
  exit 77
fi
gold=()
[ -n "${INFLLM_GOLDEN_DIR:-}" ] && gold=(-DINFLLM_GOLDEN_DIR="$INFLLM_GOLDEN_DIR")
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DINFLLM_CUDA=OFF "${gold[@]}" >"$BUILD.configure.log" 2>&1 ||
  { cat "$BUILD.configure.log"; exit 1; }
cmake --build "$BUILD" -j"$(nproc)" --target infllm infllm_static test_amx_host test_diff test_cache test_golden \
  test_backward >"$BUILD.build.log" 2>&1 || { tail -30 "$BUILD.build.log"; exit 1; }
fail=0
run() { # a check: its summary lines, and a failure counted (77: skipped)
  local name=$1
  shift
  local out rc
  out=$("$@" 2>&1)
  rc=$?
  echo "$out" | grep -E "cpu kernels|passed|checks|FAIL|SKIP" | head -6
  if [ $rc -ne 0 ] && [ $rc -ne 77 ]; then
    echo "amx_check: FAIL: $name (exit $rc)"
    fail=1
  fi
}
line=$(INFLLM_BF16_DOT=amx "$BUILD/infllm" version | grep "^bf16 attention")
echo "amx_check: INFLLM_BF16_DOT=amx: $line"
case "$line" in
  *AMX*) ;;
  *) echo "amx_check: FAIL: the AMX kernels do not run (is the tile state granted? Linux 5.16+)"; exit 1 ;;
esac
run test_amx_host "$BUILD/tests/test_amx_host"
INFLLM_BF16_DOT=amx INFLLM_DIFF_QUICK=1 run test_diff "$BUILD/tests/test_diff"
for t in test_cache test_golden test_backward; do INFLLM_BF16_DOT=amx run "$t" "$BUILD/tests/$t"; done
echo "== kernels alone (bench/kern_rate.c: one thread, one 64-key tile hot, d 128)"
if gcc -O2 -std=c11 -Iinclude -Isrc/attn bench/kern_rate.c "$BUILD/libinfllm.a" -lm -fopenmp -o "$BUILD/kern_rate"; then
  for d in avx512bf16 amx; do
    echo "-- INFLLM_BF16_DOT=$d"
    INFLLM_BF16_DOT=$d "$BUILD/kern_rate" 16 48 | grep -v "^|---" | tail -4
  done
fi
echo "== infllm bench attn --seqlen $LEN --threads $THREADS (16 / 1 heads, d 128, bf16): dense / sparse ms"
for i in $(seq "$ROUNDS"); do
  for d in $DOTS; do
    printf '%-12s' "$d"
    INFLLM_BF16_DOT=$d "$BUILD/infllm" bench attn --seqlen "$LEN" --threads "$THREADS" \
      --reps 2 --peak 1000 --format csv 2>&1 | awk -F, 'NR > 1 && ($1 == "dense" || $1 == "sparse") {printf " %s %s ms", $1, $11} END {print ""}'
  done
done
if [ "${MORE:-0}" = 1 ]; then
  # the paths session 70 did not time: one thread, a decode step (1 and THREADS threads), the backward
  echo "== MORE: infllm bench attn --seqlen 8192 --threads 1: dense / sparse ms"
  for d in 0 amx; do
    printf '%-12s' "$d"
    INFLLM_BF16_DOT=$d "$BUILD/infllm" bench attn --seqlen 8192 --threads 1 --reps 2 --peak 1000 --format csv 2>&1 |
      awk -F, 'NR > 1 && ($1 == "dense" || $1 == "sparse") {printf " %s %s ms", $1, $11} END {print ""}'
  done
  for th in 1 "$THREADS"; do
    echo "== MORE: infllm bench decode --seqlen 8192,32768,131072 --heads 32 --kv-heads 2 --threads $th --reps 20"
    for d in 0 amx; do
      echo "-- INFLLM_BF16_DOT=$d"
      INFLLM_BF16_DOT=$d "$BUILD/infllm" bench decode --seqlen 8192,32768,131072 --heads 32 --kv-heads 2 \
        --threads "$th" --reps 20 2>&1 | grep -E "^\|" | grep -v "^|---"
    done
  done
  echo "== MORE: infllm bench backward --seqlen 8192 --threads $THREADS --reps 3"
  for d in 0 amx; do
    echo "-- INFLLM_BF16_DOT=$d"
    INFLLM_BF16_DOT=$d "$BUILD/infllm" bench backward --seqlen 8192 --threads "$THREADS" --reps 3 2>&1 |
      grep -E "^\|" | grep -v "^|---"
  done
fi
[ $fail = 0 ] && echo "amx_check: all checks passed" || echo "amx_check: FAILED"
exit $fail
