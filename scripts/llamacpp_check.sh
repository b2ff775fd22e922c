#!/usr/bin/env bash
# llamacpp_check.sh (opt-in, not in CI): compares infllm with llama.cpp (llama-cpp-python) on
# SmolLM2-135M-Instruct Q4_1 in dense mode: prompt logits, the first 32 greedy tokens, and
# prefill/decode speed at a 2K context. Prints a markdown block; with --record appends it to
# BENCHMARKS.md ("Model runtime" section).
#   usage: scripts/llamacpp_check.sh [--record] [INFLLM_BINARY]
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
record=0
if [ "${1:-}" = "--record" ]; then record=1; shift; fi
bin="${1:-$here/build/infllm}"
model="$here/models/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -f "$model" ] || "$here/scripts/fetch_model.sh"
if [ ! -x "$bin" ]; then
  cmake -S "$here" -B "$here/build" -DINFLLM_CUDA=OFF >/dev/null
  cmake --build "$here/build" -j"$(nproc)" --target infllm >/dev/null
fi
python3 -c "import llama_cpp" 2>/dev/null || python3 -m pip install --quiet llama-cpp-python numpy
threads="${THREADS:-$(nproc)}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
python3 - "$bin" "$model" "$out" "$threads" > "$out/report.md" <<'PY'
import os, subprocess, sys, time
import numpy as np
from llama_cpp import Llama, __version__ as lcpp_version

exe, model, tmp, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
prompt = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
          "<|im_start|>user\nWrite a short story about a robot who learns to paint.<|im_end|>\n<|im_start|>assistant\n")
llm = Llama(model_path=model, n_ctx=4096, n_batch=512, logits_all=True, n_threads=threads, verbose=False)
toks = llm.tokenize(prompt.encode(), add_bos=False, special=True)
llm.eval(toks)
ref = np.array(llm.scores[: len(toks)], dtype=np.float64)
gen_ref = []
for _ in range(32):
    t = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    gen_ref.append(t)
    llm.eval([t])

def run(args):
    p = subprocess.run([exe, "run", "-m", model, "--attn", "dense", "-t", str(threads), *args],
                       capture_output=True, text=True)
    if p.returncode:
        sys.exit(f"infllm failed: {p.stderr}")
    return p

lp = os.path.join(tmp, "l.npy")
run(["--tokens", ",".join(map(str, toks)), "-n", "0", "-q", "--dump-logits", lp])
got = np.load(lp).astype(np.float64)
p = run(["--tokens", ",".join(map(str, toks)), "-n", "32", "--temp", "0", "--ignore-eos", "--print-ids", "-q"])
gen = [int(x) for x in p.stderr.split("generated ids:")[1].split()]
p2 = run(["-p", prompt, "-n", "0", "-q", "--print-ids", "--chat"] if False else
         ["-p", "Write a short story about a robot who learns to paint.", "--chat", "-n", "0", "-q", "--print-ids"])
our_toks = [int(x) for x in p2.stderr.split("prompt ids:")[1].split("\n")[0].split()]
rel = float(np.abs(got - ref).max() / np.abs(ref).max())
agree = float((got.argmax(-1) == ref.argmax(-1)).mean())
same = 0
for a, b in zip(gen, gen_ref):
    if a != b:
        break
    same += 1

# speed at 2K: prefill 2048 tokens, then 32 decode steps
rng = np.random.default_rng(0)
ids = [int(x) for x in rng.integers(256, 49152, 2048 + 32)]
llm2 = Llama(model_path=model, n_ctx=4096, n_batch=512, logits_all=False, n_threads=threads, verbose=False)
t0 = time.perf_counter(); llm2.eval(ids[:2048]); t1 = time.perf_counter()
for t in ids[2048:]:
    llm2.eval([t])
t2 = time.perf_counter()
lc_pf, lc_dec = 2048 / (t1 - t0), 32 / (t2 - t1)
b = subprocess.run([exe, "bench", "run", "-m", model, "--lengths", "2048", "--gen", "32", "--modes", "dense",
                    "--format", "csv", "-t", str(threads)], capture_output=True, text=True)
row = b.stdout.strip().splitlines()[-1].split(",")
our_pf, our_dec = float(row[2]), float(row[3])
print(f"### llama.cpp check ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, llama-cpp-python {lcpp_version}, "
      f"{threads} threads)\n")
print(f"SmolLM2-135M-Instruct Q4_1, chat prompt of {len(toks)} tokens, infllm --attn dense:\n")
print(f"- prompt tokenization identical to llama.cpp: {'yes' if our_toks == list(toks) else 'NO'}")
print(f"- prompt logits: max |diff| / max |logit| = {rel:.3e}; argmax agrees at {agree * 100:.1f}% of positions")
print(f"- first 32 greedy tokens: {same} of 32 identical before the first difference")
print(f"  - llama.cpp: {gen_ref}\n  - infllm:    {gen}")
print(f"\n| 2K context, dense | prefill tok/s | decode tok/s |\n| --- | ---: | ---: |")
print(f"| llama.cpp | {lc_pf:.1f} | {lc_dec:.1f} |\n| infllm | {our_pf:.1f} | {our_dec:.1f} |")
PY
cat "$out/report.md"
if [ "$record" = 1 ]; then
  f="$here/BENCHMARKS.md"
  grep -q "^## Model runtime" "$f" 2>/dev/null || printf '\n## Model runtime\n' >> "$f"
  { echo; cat "$out/report.md"; } >> "$f"
  echo "appended to $f"
fi
