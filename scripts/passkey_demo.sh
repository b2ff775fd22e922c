#!/usr/bin/env bash
# passkey_demo.sh: plants a passkey in a ~6K-token haystack of real text (the Debian
# 'anarchism' package's FAQ, tags stripped) and asks SmolLM2-135M-Instruct for it, once with
# dense attention and once with InfLLM-V2 sparse attention (block 64, top-k 56 + 8 local blocks
# incl. the init block, i.e. 64 of the prompt's 91 blocks per late query: sparsity is active),
# printing both answers and the timings. SmolLM2 was trained dense: with fewer blocks its
# selection misses the needle. Under llama.cpp's numerics (the default since 85e04de) top-k 40 + 8
# misses it for passkeys 68317 and 41952 and finds 90210. 48 + 8 (the default until session 29) is
# a near-tie for 68317: with "The pass key is" given, the next token's logit margin " " over " a"
# is -0.09 there, against +0.58 at 56 + 8 and +0.39 dense, so rounding differences of 1 f16 ulp in
# ~2% of the attention rows (the AVX2 against the scalar attention kernels: the same selections)
# decided the answer, and the AVX2 build answered wrong. 56 + 8 finds 68317, 41952, 90210 and
# 50831 (AVX2, f16 cache) and 68317 with the scalar attention kernels; 12345 is missed by dense
# attention too. TOPK=12 LOCAL=4 shows a miss.
# The needle sits at DEPTH (0.9: 90% into the haystack, ~590 tokens before the question, beyond
# the local window; SmolLM2-135M stops finding a needle in the middle of contexts beyond ~3K
# tokens even with dense attention). THREADS=N sets -t (0: all cores).
#   usage: scripts/passkey_demo.sh [MODEL.gguf] [INFLLM_BINARY]   (either order; both optional)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
model="$here/models/SmolLM2-135M-Instruct.Q4_1.gguf"
bin=""
for a in "$@"; do
  if [ -f "$a" ] && [ -x "$a" ] && [ "${a%.gguf}" = "$a" ]; then bin="$a"; else model="$a"; fi
done
passkey="${PASSKEY:-68317}"
target_chars="${HAYSTACK_CHARS:-26000}"
depth="${DEPTH:-0.9}"
threads="${THREADS:-0}"
topk="${TOPK:-56}"
local_blocks="${LOCAL:-8}"
if [ ! -e "$model" ]; then "$here/scripts/fetch_model.sh"; fi
if [ -z "$bin" ]; then
  bin="$here/build/infllm"
  if [ ! -x "$bin" ]; then
    cmake -S "$here" -B "$here/build" -DINFLLM_CUDA=OFF >/dev/null
    cmake --build "$here/build" -j"$(nproc)" --target infllm >/dev/null
  fi
fi
doc=/usr/share/doc/anarchism/html
if [ ! -d "$doc" ]; then
  echo "installing the 'anarchism' package for the haystack text..." >&2
  (apt-get install -y -qq anarchism || (apt-get update -qq && apt-get install -y -qq anarchism)) >/dev/null
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 - "$doc" "$passkey" "$target_chars" "$depth" > "$tmp/prompt.txt" <<'PY'
import html, os, re, sys
doc, key, target, depth = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
text = []
for name in ["secA1.html", "secA2.html", "secA3.html", "secA4.html", "secA5.html", "secB1.html", "secB2.html"]:
    p = os.path.join(doc, name)
    if not os.path.exists(p):
        continue
    s = open(p, encoding="utf-8", errors="replace").read()
    s = re.sub(r"(?is)<(script|style|head).*?</\1>", " ", s)
    s = re.sub(r"(?s)<[^>]+>", " ", s)
    s = html.unescape(s)
    s = re.sub(r"[ \t\r\f\v]+", " ", s)
    s = re.sub(r"\s*\n\s*", "\n", s)
    text.append(s.strip())
hay = "\n".join(text)
hay = hay[:target]
hay = hay[: hay.rfind(". ") + 1]
needle = f"\nThe pass key is {key}. Remember it. {key} is the pass key.\n"
mid = hay.find(". ", int(len(hay) * depth)) + 1
hay = hay[:mid] + needle + hay[mid:]
print("There is a pass key hidden inside a lot of irrelevant text. Find it and memorize it. "
      "I will quiz you about the pass key.\n\n" + hay +
      "\n\nWhat is the pass key?", end="")
PY
common=(-m "$model" -f "$tmp/prompt.txt" --chat --ctx 8192 -n 12 --temp 0 -t "$threads")
ok=0
for mode in dense sparse; do
  if [ "$mode" = dense ]; then extra=(--attn dense); else
    extra=(--attn sparse --block-size 64 --topk "$topk" --local-blocks "$local_blocks" --init-blocks 1 --dense-len -1); fi
  echo "=== $mode attention ==="
  "$bin" run "${common[@]}" "${extra[@]}" > "$tmp/$mode.out" 2> "$tmp/$mode.err"
  answer="$(cat "$tmp/$mode.out")"
  echo "answer: $answer"
  grep -E "^(prompt|first|decode|attention:)" "$tmp/$mode.err" || true
  if grep -q "$passkey" "$tmp/$mode.out"; then echo "CORRECT ($passkey)"; ok=$((ok + 1)); else echo "WRONG (expected $passkey)"; fi
done
echo "passkey demo: $ok of 2 answers correct"
[ "$ok" = 2 ]
