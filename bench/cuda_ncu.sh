#!/usr/bin/env bash
# cuda_ncu.sh: one device call's Nsight Compute profile of the CUDA pipeline's kernels at one length,
# the way session 12 found where stage 2's and select's cycles go. For each kernel asked for it
# runs `ncu --set full` on one launch of `bench/cuda_bench.py --profile T` (one selection, one
# sparse stage 2, one dense call), saves the report, its details page and its per-SASS source page
# (CSV), and prints the headline metrics and bench/ncu_sass.py's stall summary, so that a device
# call's output tail holds the result even when only a few files come back.
#
#   bench/cuda_ncu.sh [-T LENGTH] [-k KERNELS] [--lib LIB | --build DIR] [--out DIR] [--top N]
#
#   -T LENGTH    sequence length (default 131072)
#   -k KERNELS   comma list of: sparse (k_flash90's sparse launch), dense (its dense launch),
#                select (k_select90), group (k_group_tokens); bwdkv (the sparse backward's k_bwd_kv) and
#                bwddq (its dq pass, k_flash90's DQ instance), both from one sparse backward with the
#                forward's out given (bench/cuda_bwd_bench.py --profile T); default sparse,select
#   --lib LIB    profile this libinfllm.so (default: build DIR with cmake first)
#   --build DIR  build directory for the default build (default build-ncu; -DINFLLM_CUDA_ARCHS=90a)
#   --out DIR    reports and CSVs (default /tmp/cuda_ncu; a device call returns at most 8 files of
#                its $OUT, so copy there the few you want, e.g. the .sass.csv files, ~1.6 MB each)
#   --top N      instructions in each stall summary (default 25)
#   --topk FILE  stage 2 (the sparse kernel) on this selection of LENGTH tokens (.npy / .npz, e.g. a real
#                model's from bench/real_union.py --save-topk) instead of the synthetic one
# ncu runs with --clock-control none (METHOD.md: leave the clocks alone); each kernel costs ~30-60 s
# at 128K (38 replay passes). Needs the device machine (ncu, PyTorch, nvcc). Exit status non-zero
# if the build or a profile failed.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
T=131072 KERNELS=sparse,select LIB="" BUILD=build-ncu OUTDIR=/tmp/cuda_ncu TOP=25 TOPK=""
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit "${1:-2}"; }
while [ $# -gt 0 ]; do
  case "$1" in
  -T) T=${2:?}; shift 2 ;;
  -k) KERNELS=${2:?}; shift 2 ;;
  --lib) LIB=${2:?}; shift 2 ;;
  --build) BUILD=${2:?}; shift 2 ;;
  --out) OUTDIR=${2:?}; shift 2 ;;
  --top) TOP=${2:?}; shift 2 ;;
  --topk) TOPK=${2:?}; shift 2 ;;
  -h | --help) usage 0 ;;
  *) echo "cuda_ncu: unknown argument $1" >&2; usage ;;
  esac
done
case "$T" in '' | *[!0-9]*) echo "cuda_ncu: -T wants a length, got '$T'" >&2; exit 2 ;; esac
case "$TOP" in '' | *[!0-9]*) echo "cuda_ncu: --top wants a number, got '$TOP'" >&2; exit 2 ;; esac
[ -z "$TOPK" ] || [ -f "$TOPK" ] || { echo "cuda_ncu: --topk: no file $TOPK" >&2; exit 2; }
command -v ncu >/dev/null || { echo "cuda_ncu: ncu not found (run this on the GPU machine)" >&2; exit 1; }
mkdir -p "$OUTDIR" || exit 1
if [ -z "$LIB" ]; then
  cmake -S "$ROOT" -B "$ROOT/$BUILD" -DINFLLM_CUDA_ARCHS=90a -DCMAKE_BUILD_TYPE=Release >"$OUTDIR/configure.log" 2>&1 &&
    cmake --build "$ROOT/$BUILD" -j"$(nproc)" --target infllm_shared >"$OUTDIR/build.log" 2>&1 ||
    { tail -20 "$OUTDIR/configure.log" "$OUTDIR/build.log"; echo "cuda_ncu: build failed"; exit 1; }
  LIB=$ROOT/$BUILD/libinfllm.so
fi
[ -f "$LIB" ] || { echo "cuda_ncu: no library at $LIB" >&2; exit 1; }
echo "# cuda_ncu $(date -u +%T): T=$T, kernels $KERNELS, lib $LIB, reports in $OUTDIR${TOPK:+, stage 2 on $TOPK}"
ncu --version | tail -1
fail=0
for kn in ${KERNELS//,/ }; do
  case "$kn" in
  sparse) filt=(-k regex:k_flash90 -c 1) ;;             # cuda_bench --profile: sparse stage 2 first
  dense) filt=(-k regex:k_flash90 --launch-skip 1 -c 1) ;; # then the dense call
  select) filt=(-k regex:k_select90 -c 1) ;;
  group) filt=(-k regex:k_group_tokens -c 1) ;;
  bwdkv) filt=(-k regex:k_bwd_kv -c 1) ;;                  # cuda_bwd_bench --profile: the one backward's
  bwddq) filt=(-k regex:k_flash90 --launch-skip 1 -c 1) ;; # the forward, then the backward's dq pass
  *) echo "cuda_ncu: unknown kernel '$kn' (sparse, dense, select, group, bwdkv, bwddq)" >&2; fail=1; continue ;;
  esac
  case "$kn" in
  bwd*) prog=(python3 "$ROOT/bench/cuda_bwd_bench.py" --lib "$LIB" --profile "$T") ;;
  *) prog=(python3 "$ROOT/bench/cuda_bench.py" --lib "$LIB" --profile "$T" ${TOPK:+--topk-npy "$TOPK"}) ;;
  esac
  rep=$OUTDIR/$kn
  echo "## $kn"
  if ! ncu --clock-control none "${filt[@]}" --set full -f -o "$rep" "${prog[@]}" >"$OUTDIR/$kn.ncu.log" 2>&1 ||
    [ ! -f "$rep.ncu-rep" ]; then
    tail -15 "$OUTDIR/$kn.ncu.log"
    echo "cuda_ncu: profile of $kn failed"
    fail=1
    continue
  fi
  ncu -i "$rep.ncu-rep" --page details >"$rep.details.txt" 2>&1
  ncu -i "$rep.ncu-rep" --page source --csv --print-source sass >"$rep.sass.csv" 2>"$rep.sass.err"
  grep -E "^  [a-zA-Z].*\(|Duration|Compute \(SM\) Throughput|Memory Throughput +%|DRAM Throughput|L2 Hit Rate|Issue Slots Busy|Issued Ipc Active|Eligible Warps Per Scheduler|Registers Per Thread|Achieved Occupancy|highest-utilized pipeline" \
    "$rep.details.txt" | sed 's/  */ /g' | head -20
  python3 "$ROOT/bench/ncu_sass.py" "$rep.sass.csv" --top "$TOP" --mix || fail=1
done
echo "# cuda_ncu done $(date -u +%T)"
exit $fail
