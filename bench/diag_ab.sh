#!/usr/bin/env bash
# diag_ab.sh: the driver that bench/select_diag.sh and bench/stage2_diag.sh share (not run directly): their
# options, the variant trees (bench/diag_trees.py, with the tool's edits on stdin) and the round-robin timing
# of the unmodified tree against every variant (bench/cuda_ab.sh, no dump comparison, no cuda_check).
#
#   diag_ab.sh TOOL_SCRIPT FILE DEFAULT_SIZES [-r ROUNDS] [-s SIZES] [--out DIR] [--dry-run] [TREE] < EDITS
#
# TOOL_SCRIPT is the calling script (its name names the tool and the default --out /tmp/<tool>; its header
# comment is the usage text), FILE the source file the edits change. Exit status: cuda_ab's, or non-zero if
# an option, the tree or an edit is wrong.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SCRIPT=${1:?} FILE=${2:?} SIZES=${3:?}
shift 3
TOOL=$(basename "$SCRIPT" .sh)
ROUNDS=2 OUTDIR=/tmp/$TOOL TREE=$ROOT DRY=()
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$SCRIPT"; exit "${1:-2}"; }
while [ $# -gt 0 ]; do
  case "$1" in
  -r) ROUNDS=${2:?}; shift 2 ;;
  -s) SIZES=${2:?}; shift 2 ;;
  --out) OUTDIR=${2:?}; shift 2 ;;
  --dry-run) DRY=(--dry-run); shift ;;
  -h | --help) usage 0 ;;
  -*) echo "$TOOL: unknown option $1" >&2; usage ;;
  *) TREE=$1; shift ;;
  esac
done
[ -f "$TREE/$FILE" ] || { echo "$TOOL: no $FILE under $TREE" >&2; exit 2; }
TREE=$(cd "$TREE" && pwd)
mkdir -p "$OUTDIR/trees" || exit 1
python3 "$ROOT/bench/diag_trees.py" "$TOOL" "$TREE" "$OUTDIR/trees" "$FILE" || exit 1
CONFIGS=(base="$TREE")
while read -r v; do CONFIGS+=("$v=$OUTDIR/trees/$v"); done <"$OUTDIR/trees/variants"
"$ROOT/bench/cuda_ab.sh" "${DRY[@]}" -r "$ROUNDS" --no-check --dump 0 -s "$SIZES" -d "" --out "$OUTDIR/ab" "${CONFIGS[@]}"
