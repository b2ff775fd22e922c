#!/usr/bin/env bash
# cuda_ab.sh: one device call's A/B of libinfllm builds or switches, the way every CUDA change of
# sessions 5-10 was measured: build each source tree once (in parallel), run scripts/cuda_check.sh
# on every candidate tree, compare each configuration's top-k and outputs with the baseline's at
# one size (bitwise first, then how far), then time all configurations round-robin (so drift hits
# them alike) and print the medians with ratios to the baseline. Needs an NVIDIA GPU, PyTorch and
# nvcc (the device machine); nothing is installed.
#
#   bench/cuda_ab.sh [options] NAME=TREE[:VAR=VALUE,...] NAME=TREE[:...] ...
#
# The first configuration is the baseline. TREE is a source tree (a checkout, or a `git archive`
# snapshot); configurations may share a tree and differ by environment switches, e.g.
#   bench/cuda_ab.sh base=../parent new=. unordered=.:INFLLM_CUDA_SEL90_NO_ORDER=1
# Options:
#   -r N          rounds of timing (default 2)
#   -s SIZES      sequence lengths of the sparse rows (default 32768,65536,131072)
#   -d SIZES      dense causal lengths, "" for none (default "")
#   --dump T      compare top-k / sparse / dense outputs with the baseline's at T (default 32768; 0: off)
#   --digest      compare at --dump's T by SHA-256 digests of the top-k and the sparse output (cuda_bench.py
#                 --digest: no dense call, no dump files; bitwise equal or not, no distances): for lengths
#                 whose outputs take GBs (256K tokens)
#   --no-check    skip scripts/cuda_check.sh
#   --check NAMES run scripts/cuda_check.sh only on the trees of these configurations (comma list;
#                 default: every tree other than the baseline's)
#   --table NAME  also the full table (every baseline, FlexAttention, decode) of configuration NAME
#   --smallq LQS  also bench/smallq_ab.py --kernels over every configuration: infllm_attention of a
#                 few queries (comma list, e.g. 1,16,64) against 128K keys, the total_q <= 64 path
#   --bench-args ARGS
#                 more options for every bench/cuda_bench.py run (dump, timing, table), e.g. another layout:
#                 --bench-args "--shape 32,8,128 --dtype f16"; or a sliding window's pipeline:
#                 --bench-args "--window 16384" (cuda_bench.py --window: the dump and digest runs take it too)
#   --out DIR     logs and JSON (default /tmp/cuda_ab; the summary goes to stdout, so that a device
#                 call's output tail has it even when the call returns only a few files)
#   --dry-run     print the commands instead of running them
# The cuda_check exit lines and the output comparison are printed again after the timing tables ("# recap"),
# so that a device call's output tail holds them.
# Builds go to build-ab-<tree index> under this repository's root (kept between calls: cmake
# rebuilds only what changed; one configured for another tree is removed first). cuda_check runs
# on each tree other than the baseline's (the baseline is taken as checked; configurations that
# differ from it by switches only are not checked again). Exit status: non-zero if a build, a check, a dump or a timing run failed.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=2 SIZES=32768,65536,131072 DSIZES="" DUMP=32768 CHECK=1 CHECK_NAMES="" TABLE="" SMALLQ="" DRY=0 BARGS="" DIGEST=0
OUTDIR=/tmp/cuda_ab
CONFIGS=()
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit "${1:-2}"; }
while [ $# -gt 0 ]; do
  case "$1" in
  -r) ROUNDS=${2:?}; shift 2 ;;
  -s) SIZES=${2?}; shift 2 ;;
  -d) DSIZES=${2?}; shift 2 ;;
  --dump) DUMP=${2:?}; shift 2 ;;
  --digest) DIGEST=1; shift ;;
  --no-check) CHECK=0; shift ;;
  --check) CHECK_NAMES=${2:?}; shift 2 ;;
  --table) TABLE=${2:?}; shift 2 ;;
  --smallq) SMALLQ=${2:?}; shift 2 ;;
  --out) OUTDIR=${2:?}; shift 2 ;;
  --bench-args) BARGS=${2?}; shift 2 ;;
  --dry-run) DRY=1; shift ;;
  -h | --help) usage 0 ;;
  -*) echo "cuda_ab: unknown option $1" >&2; usage ;;
  *) CONFIGS+=("$1"); shift ;;
  esac
done
[ ${#CONFIGS[@]} -ge 1 ] || { echo "cuda_ab: no configuration given" >&2; usage; }
case "$ROUNDS" in '' | *[!0-9]*) echo "cuda_ab: -r wants a number, got '$ROUNDS'" >&2; exit 2 ;; esac
case "$DUMP" in '' | *[!0-9]*) echo "cuda_ab: --dump wants a length (0: off), got '$DUMP'" >&2; exit 2 ;; esac

# parse NAME=TREE[:VAR=VALUE,...]
NAMES=() TREES=() ENVS=()
for c in "${CONFIGS[@]}"; do
  name=${c%%=*} rest=${c#*=}
  if [ "$name" = "$c" ] || [ -z "$name" ] || [ -z "$rest" ]; then
    echo "cuda_ab: '$c' is not NAME=TREE[:VAR=VALUE,...]" >&2; exit 2
  fi
  case "$name" in *[!A-Za-z0-9_.-]*) echo "cuda_ab: configuration name '$name': letters, digits, _ . - only" >&2; exit 2 ;; esac
  for n in "${NAMES[@]}"; do [ "$n" = "$name" ] && { echo "cuda_ab: configuration '$name' given twice" >&2; exit 2; }; done
  tree=${rest%%:*} envs=""
  [ "$tree" != "$rest" ] && envs=${rest#*:}
  [ -f "$tree/CMakeLists.txt" ] || { echo "cuda_ab: $tree (configuration $name) is not a source tree" >&2; exit 2; }
  NAMES+=("$name") TREES+=("$(cd "$tree" && pwd)") ENVS+=("${envs//,/ }")
done
CHECK_TREES=() # trees to check when --check names them
if [ -n "$CHECK_NAMES" ]; then
  for cn in ${CHECK_NAMES//,/ }; do
    found=0
    for i in "${!NAMES[@]}"; do [ "${NAMES[$i]}" = "$cn" ] && { found=1; CHECK_TREES+=("${TREES[$i]}"); }; done
    [ $found = 1 ] || { echo "cuda_ab: --check $cn names no configuration" >&2; exit 2; }
  done
fi
if [ -n "$TABLE" ]; then
  found=0
  for n in "${NAMES[@]}"; do [ "$n" = "$TABLE" ] && found=1; done
  [ $found = 1 ] || { echo "cuda_ab: --table $TABLE names no configuration" >&2; exit 2; }
fi

# distinct trees -> build directories
UTREES=()
tree_index() { local i; for i in "${!UTREES[@]}"; do [ "${UTREES[$i]}" = "$1" ] && { echo "$i"; return; }; done; echo -1; }
for t in "${TREES[@]}"; do [ "$(tree_index "$t")" = -1 ] && UTREES+=("$t"); done
build_of() { echo "$ROOT/build-ab-$(tree_index "$1")"; }

run() { # echo or run a command line
  if [ $DRY = 1 ]; then echo "+ $*"; else eval "$@"; fi
}
mkdir -p "$OUTDIR"
rm -f "$OUTDIR/recap.txt"
BENCH="$ROOT/bench/cuda_bench.py"
fail=0
stamp() { date -u +%T; }

echo "# cuda_ab $(stamp): ${#NAMES[@]} configurations, ${#UTREES[@]} trees, rounds $ROUNDS, sizes $SIZES, logs in $OUTDIR"
for i in "${!NAMES[@]}"; do echo "#   ${NAMES[$i]}: ${TREES[$i]} (build $(build_of "${TREES[$i]}"))${ENVS[$i]:+ env ${ENVS[$i]}}"; done

# ---- build (in parallel, jobs split over the trees)
jobs=$(( $(nproc) / ${#UTREES[@]} )); [ $jobs -ge 2 ] || jobs=2
pids=()
for t in "${UTREES[@]}"; do
  b=$(build_of "$t") i=$(tree_index "$t")
  targets=infllm_shared
  [ $CHECK = 1 ] && targets="infllm_shared test_cuda test_cuda_cache"
  # a build directory kept from an earlier call for another tree: cmake refuses it, so start it afresh
  src=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$b/CMakeCache.txt" 2>/dev/null)
  if [ -n "$src" ] && [ "$(cd "$src" 2>/dev/null && pwd -P)" != "$(cd "$t" && pwd -P)" ]; then
    if [ $DRY = 1 ]; then echo "+ rm -rf $b  # configured for $src"; else echo "# $b was configured for $src: removed"; rm -rf "$b"; fi
  fi
  if [ $DRY = 1 ]; then
    echo "+ cmake -S $t -B $b -DINFLLM_CUDA_ARCHS=90a -DCMAKE_BUILD_TYPE=Release && cmake --build $b -j$jobs --target $targets"
  else
    ( cmake -S "$t" -B "$b" -DINFLLM_CUDA_ARCHS=90a -DCMAKE_BUILD_TYPE=Release >"$OUTDIR/cfg-$i.log" 2>&1 &&
      cmake --build "$b" -j$jobs --target $targets >"$OUTDIR/build-$i.log" 2>&1 ) &
    pids+=($!)
  fi
done
for i in "${!pids[@]}"; do
  if ! wait "${pids[$i]}"; then
    echo "cuda_ab: build of ${UTREES[$i]} failed (log: $OUTDIR/cfg-$i.log, $OUTDIR/build-$i.log):"
    tail -n 20 "$OUTDIR/build-$i.log" 2>/dev/null || tail -n 20 "$OUTDIR/cfg-$i.log"
    fail=1
  fi
done
[ $fail = 0 ] || exit 1
echo "# built $(stamp)"

# ---- correctness: cuda_check on every tree other than the baseline's, run from inside that tree
if [ $CHECK = 1 ]; then
  for t in "${UTREES[@]}"; do
    if [ ${#CHECK_TREES[@]} -gt 0 ]; then
      want=0
      for ct in "${CHECK_TREES[@]}"; do [ "$ct" = "$t" ] && want=1; done
      [ $want = 1 ] || continue
    else
      [ "$t" = "${TREES[0]}" ] && continue
    fi
    i=$(tree_index "$t")
    if [ $DRY = 1 ]; then echo "+ (cd $t && BUILD=$(build_of "$t") scripts/cuda_check.sh)"; continue; fi
    ( cd "$t" && BUILD=$(build_of "$t") scripts/cuda_check.sh ) >"$OUTDIR/check-$i.log" 2>&1
    rc=$?
    echo "# cuda_check of $t: exit $rc ($(stamp))" | tee -a "$OUTDIR/recap.txt"
    grep -E "SUMMARY|passed, |FAIL|cuda_check:" "$OUTDIR/check-$i.log" | sed 's/^/#   /'
    [ $rc = 0 ] || fail=1
  done
fi

# ---- outputs against the baseline's
if [ "$DUMP" != 0 ] && [ $DIGEST = 1 ]; then
  for i in "${!NAMES[@]}"; do
    run "env ${ENVS[$i]} python3 '$BENCH' --lib '$(build_of "${TREES[$i]}")/libinfllm.so' $BARGS --profile $DUMP --digest >'$OUTDIR/digest-${NAMES[$i]}.log' 2>&1 || { echo 'cuda_ab: digest of ${NAMES[$i]} failed (log: $OUTDIR/digest-${NAMES[$i]}.log)'; fail=1; }"
  done
  if [ $DRY = 0 ]; then
    base=$(grep -o "topk [0-9a-f]* sparse [0-9a-f]*" "$OUTDIR/digest-${NAMES[0]}.log" 2>/dev/null)
    for i in "${!NAMES[@]}"; do
      [ "$i" = 0 ] && continue
      d=$(grep -o "topk [0-9a-f]* sparse [0-9a-f]*" "$OUTDIR/digest-${NAMES[$i]}.log" 2>/dev/null)
      if [ -z "$base" ] || [ -z "$d" ]; then
        echo "# outputs ${NAMES[$i]} vs ${NAMES[0]} at $DUMP: no digest"
      else
        r=""
        [ "${d%% sparse*}" = "${base%% sparse*}" ] && r="topk bitwise equal" || r="topk DIFFERS"
        [ "${d##*sparse }" = "${base##*sparse }" ] && r="$r; sparse bitwise equal" || r="$r; sparse DIFFERS"
        echo "# outputs ${NAMES[$i]} vs ${NAMES[0]} at $DUMP (SHA-256 digests): $r"
      fi
    done | tee -a "$OUTDIR/recap.txt"
  fi
elif [ "$DUMP" != 0 ]; then
  for i in "${!NAMES[@]}"; do
    run "env ${ENVS[$i]} python3 '$BENCH' --lib '$(build_of "${TREES[$i]}")/libinfllm.so' $BARGS --profile $DUMP --dump '$OUTDIR/dump-${NAMES[$i]}.pt' >'$OUTDIR/dump-${NAMES[$i]}.log' 2>&1 || { echo 'cuda_ab: dump of ${NAMES[$i]} failed (log: $OUTDIR/dump-${NAMES[$i]}.log)'; fail=1; }"
  done
  if [ $DRY = 0 ]; then
    ( python3 - "$OUTDIR" "${NAMES[@]}" <<'PY'
import os, sys
try:
    import torch
except ImportError:
    print("# outputs: no PyTorch here, not compared"); sys.exit(0)
out, names = sys.argv[1], sys.argv[2:]
def load(n):
    f = os.path.join(out, f"dump-{n}.pt")
    return torch.load(f) if os.path.exists(f) else None
base = load(names[0])
for n in names[1:]:
    d = load(n)
    if base is None or d is None:
        print(f"# outputs {n} vs {names[0]}: no dump"); continue
    parts = []
    for k in ("topk", "sparse", "dense"):
        a, b = base[k], d[k]
        if torch.equal(a, b):
            parts.append(f"{k} bitwise equal"); continue
        if k == "topk":
            sa, sb = torch.sort(a, -1).values, torch.sort(b, -1).values
            rows = (sa != sb).any(-1)
            parts.append(f"topk sets differ in {int(rows.sum())} of {rows.numel()} rows ({100 * rows.float().mean():.4f}%)")
        else:
            parts.append(f"{k} max abs diff {float((a.float() - b.float()).abs().max()):.3g}")
    print(f"# outputs {n} vs {names[0]}: " + "; ".join(parts))
PY
    ) | tee -a "$OUTDIR/recap.txt"
    rm -f "$OUTDIR"/dump-*.pt
  fi
fi

# ---- timing, round-robin
echo "# timing $(stamp)"
for r in $(seq 1 "$ROUNDS"); do
  for i in "${!NAMES[@]}"; do
    n=${NAMES[$i]}
    run "env ${ENVS[$i]} python3 '$BENCH' --lib '$(build_of "${TREES[$i]}")/libinfllm.so' $BARGS --no-decode --no-flex --no-dense-baselines --sizes '$SIZES' --dense-sizes '$DSIZES' --json '$OUTDIR/t-$n-$r.json' >'$OUTDIR/t-$n-$r.log' 2>&1 || { echo 'cuda_ab: timing of $n (round $r) failed (log: $OUTDIR/t-$n-$r.log)'; fail=1; }"
  done
done
if [ $DRY = 0 ]; then
  python3 - "$OUTDIR" "$ROUNDS" "${NAMES[@]}" <<'PY'
import json, os, statistics, sys
out, rounds, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
rows = {}  # (name, kind, T) -> [values]
for n in names:
    for r in range(1, rounds + 1):
        f = os.path.join(out, f"t-{n}-{r}.json")
        if not os.path.exists(f):
            continue
        d = json.load(open(f))
        for p in d.get("pipeline", []):
            for k in ("pipeline_ms", "select_ms", "stage2_ms"):
                rows.setdefault((n, k, p["T"]), []).append(p[k])
        for p in d.get("dense", []):
            rows.setdefault((n, "dense_ms", p["T"]), []).append(p["ours_ms"])
Ts = sorted({t for (_, _, t) in rows})
for k in ("select_ms", "stage2_ms", "pipeline_ms", "dense_ms"):
    if not any(kk == k for (_, kk, _) in rows):
        continue
    print(f"\n{k[:-3]} ms, median of {rounds} (every value), ratio = baseline / this (> 1: faster)")
    print("| config | " + " | ".join(f"{t // 1024}K" for t in Ts) + " |")
    print("|---|" + "---|" * len(Ts))
    for n in names:
        cells = []
        for t in Ts:
            v = rows.get((n, k, t))
            if not v:
                cells.append("-"); continue
            m = statistics.median(v)
            b = rows.get((names[0], k, t))
            ratio = f" ({statistics.median(b) / m:.3f}x)" if b and n != names[0] else ""
            cells.append(f"{m:.3f}{ratio} [" + ", ".join(f"{x:.3f}" for x in v) + "]")
        print(f"| {n} | " + " | ".join(cells) + " |")
PY
fi

# ---- the few-query path, every configuration in one process (switches: its own copy of the .so)
if [ -n "$SMALLQ" ]; then
  echo "# smallq_ab $(stamp)"
  args=()
  for i in "${!NAMES[@]}"; do
    lib="$(build_of "${TREES[$i]}")/libinfllm.so"
    e=${ENVS[$i]}
    if [ -z "$e" ]; then args+=(--lib "${NAMES[$i]}=$lib"); else args+=(--lib "${NAMES[$i]}=$lib:${e// /,}"); fi
  done
  run "python3 '$ROOT/bench/smallq_ab.py' --lq '$SMALLQ' --kernels $(printf "'%s' " "${args[@]}") 2>&1 | grep -v -e UserWarning -e _warn_once || { echo 'cuda_ab: smallq_ab failed'; fail=1; }"
fi

# ---- the full table of one configuration
if [ -n "$TABLE" ]; then
  for i in "${!NAMES[@]}"; do
    [ "${NAMES[$i]}" = "$TABLE" ] || continue
    echo "# full table of $TABLE $(stamp)"
    run "env ${ENVS[$i]} python3 '$BENCH' --lib '$(build_of "${TREES[$i]}")/libinfllm.so' $BARGS --json '$OUTDIR/table-$TABLE.json' >'$OUTDIR/table-$TABLE.log' 2>&1 || { echo 'cuda_ab: the full table failed (log: $OUTDIR/table-$TABLE.log)'; fail=1; }"
    [ $DRY = 1 ] || sed -n '/^| T | pipeline/,$p' "$OUTDIR/table-$TABLE.log"
  done
fi
# the checks' and the output comparison's lines again, after the tables (a call's output tail keeps them)
if [ $DRY = 0 ] && [ -s "$OUTDIR/recap.txt" ]; then
  echo "# recap"
  cat "$OUTDIR/recap.txt"
fi
echo "# done $(stamp)"
exit $fail
