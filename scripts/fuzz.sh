#!/usr/bin/env bash
# fuzz.sh: builds the libFuzzer targets in tests/fuzz/ with clang -fsanitize=fuzzer,address,
# undefined and runs each for N seconds (default 20).
#   scripts/fuzz.sh [SECONDS] [TARGET...]     targets: json safetensors tokenizer tokenizer_json gguf npy
#                                            chat_template (default all)
# Environment: FUZZ_BUILD (build folder, default build-fuzz), CC (default clang),
# FUZZ_JOBS (parallel fuzz processes per target, default 1), FUZZ_EXTRA_CFLAGS (e.g.
# -fno-sanitize=float-cast-overflow to fuzz past a known finding).
# Exit status: 0 when every target ran without a crash, 1 on a crash (the reproducer is in
# $FUZZ_BUILD/artifacts/), 2 when clang/libFuzzer is unavailable (the deterministic fallback
# tests/test_fuzz_parsers.c runs under ctest instead).
set -u
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SECS="${1:-20}"
shift || true
TARGETS="${*:-json safetensors tokenizer tokenizer_json gguf npy chat_template}"
B="${FUZZ_BUILD:-$ROOT/build-fuzz}"
CC="${CC:-clang}"
mkdir -p "$B/artifacts" "$B/corpus"

if ! echo 'int LLVMFuzzerTestOneInput(const unsigned char*d, unsigned long n){(void)d;(void)n;return 0;}' \
    | "$CC" -x c -fsanitize=fuzzer - -o "$B/probe" 2>/dev/null; then
  echo "fuzz.sh: $CC with libFuzzer not available (apt-get install clang); skipping" >&2
  exit 2
fi

FLAGS="-g -O1 -std=c11 -D_DEFAULT_SOURCE -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined ${FUZZ_EXTRA_CFLAGS:-}"
M="$ROOT/src/model"
P="$ROOT/src/util/portable.c" # file mappings, open flags, replacing a file
srcs() {
  case "$1" in
    json) echo "$M/json.c $P" ;;
    safetensors) echo "$M/safetensors.c $M/json.c $P" ;;
    tokenizer|tokenizer_json) echo "$M/tokenizer.c $M/tok_unicode.c $M/json.c $P" ;;
    gguf) echo "$M/gguf.c $M/mcommon.c $P" ;;
    npy) echo "$ROOT/src/util/npy.c $P" ;;
    chat_template) echo "$M/mtok.c $M/tokenizer.c $M/tok_unicode.c $M/json.c $M/gguf.c $M/mcommon.c $P" ;;
  esac
}

# seed corpora
seed() {
  local t="$1" d="$B/corpus/$1"
  mkdir -p "$d"
  case "$t" in
    json)
      cp "$ROOT"/tests/data/tok_*.json "$d/" 2>/dev/null
      printf '{"a":[1,2.5e-3,"\\ud83d\\ude00",null,true,false,{}]}' > "$d/s1"
      printf '[[[[]]]]' > "$d/s2" ;;
    tokenizer)
      printf '\000Hello world, I'"'"'m here!  12345 caf\303\251 \344\275\240\345\245\275 \360\237\230\200' > "$d/s1"
      printf '\003<|im_start|>user\nhi<|im_end|>\n' > "$d/s2"
      printf '\001 hello  world\t\n<s></s>' > "$d/s3" ;;
    tokenizer_json)
      cp "$ROOT"/tests/data/tok_*.json "$d/" 2>/dev/null ;;
    chat_template)
      cp "$ROOT"/tests/data/chat_tpl_*.jinja "$d/" 2>/dev/null ;;
    npy)
      python3 - "$d" <<'PY' || true
import struct, sys
d = sys.argv[1]
for i, (descr, shape, nbytes, ver) in enumerate((("<f4", "(2, 3)", 24, 1), ("<u2", "(4,)", 8, 2), ("<i8", "()", 8, 1))):
    h = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape)
    pre = 12 if ver == 2 else 10
    h += " " * ((64 - (pre + len(h) + 1) % 64) % 64) + "\n"
    ln = struct.pack("<I", len(h)) if ver == 2 else struct.pack("<H", len(h))
    open("%s/s%d" % (d, i), "wb").write(b"\x93NUMPY" + bytes([ver, 0]) + ln + h.encode() + bytes(range(nbytes)))
PY
      ;;
    safetensors|gguf)
      python3 - "$t" "$d" <<'PY' || true
import struct, sys, json
t, d = sys.argv[1], sys.argv[2]
if t == "safetensors":
    h = json.dumps({"__metadata__": {"format": "pt"},
                    "a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
                    "b": {"dtype": "BF16", "shape": [3], "data_offsets": [16, 22]}}).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    open(d + "/s1", "wb").write(struct.pack("<Q", len(h)) + h + bytes(range(22)))
else:
    def s(x): x = x.encode(); return struct.pack("<Q", len(x)) + x
    kv = s("general.architecture") + struct.pack("<I", 8) + s("llama")
    kv += s("general.alignment") + struct.pack("<II", 4, 32)
    kv += s("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 2) + s("a") + s("b")
    ti = s("w") + struct.pack("<I", 2) + struct.pack("<QQ", 4, 2) + struct.pack("<I", 0) + struct.pack("<Q", 0)
    body = b"GGUF" + struct.pack("<IQQ", 3, 1, 3) + kv + ti
    body += b"\0" * ((32 - len(body) % 32) % 32)
    open(d + "/s1", "wb").write(body + bytes(32))
PY
      ;;
  esac
}

status=0
for t in $TARGETS; do
  src="$ROOT/tests/fuzz/fuzz_$t.c"
  if [ ! -f "$src" ] || { [ "$t" = gguf ] && [ ! -f "$M/gguf.c" ]; }; then
    echo "fuzz.sh: target $t not available, skipped"
    continue
  fi
  # shellcheck disable=SC2046
  if ! nice "$CC" $FLAGS -I"$M" -I"$ROOT/src/util" -I"$ROOT/include" -DFUZZ_DATA_DIR="\"$ROOT/tests/data\"" "$src" $(srcs "$t") -lm -o "$B/fuzz_$t" 2>"$B/build_$t.log"; then
    echo "fuzz.sh: building fuzz_$t failed:"; cat "$B/build_$t.log"; status=1; continue
  fi
  seed "$t"
  log="$B/fuzz_$t.log"
  par=""
  if [ "${FUZZ_JOBS:-1}" -gt 1 ]; then par="-jobs=$FUZZ_JOBS -workers=$FUZZ_JOBS"; fi
  # libFuzzer writes fuzz-N.log files into the current folder when running jobs: run in $B
  # shellcheck disable=SC2086
  (cd "$B" && nice "$B/fuzz_$t" "$B/corpus/$t" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 \
    -max_len=65536 -print_final_stats=1 $par -artifact_prefix="$B/artifacts/${t}_") >"$log" 2>&1
  rc=$?
  execs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{s+=$2} END {print s+0}')
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | awk '{print $2}')
  if [ $rc -ne 0 ]; then
    echo "fuzz_$t: CRASH (rc $rc) after $execs executions; see $log and $B/artifacts/"
    grep -E 'ERROR|SUMMARY|Test unit written' "$log" | head -5
    status=1
  else
    echo "fuzz_$t: ok, $execs executions in ${SECS}s, coverage ${cov:-?}, corpus $(ls "$B/corpus/$t" | wc -l) files"
  fi
done
exit $status
