#!/usr/bin/env bash
# deps.sh: installs what building and testing infllm needs on a fresh Debian machine
# (apt packages only when missing; pip packages for the Python-driven tests).
set -euo pipefail
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-pip)
command -v unzip >/dev/null 2>&1 || missing+=(unzip)
# venvs (the test command's torch stage, py_binding_install): Debian's python3 has no ensurepip without python3-venv
if command -v python3 >/dev/null 2>&1 && ! python3 -c "import ensurepip, venv" >/dev/null 2>&1; then
  missing+=(python3-venv)
fi
command -v git >/dev/null 2>&1 || missing+=(git)
# the test command's ThreadSanitizer build needs gcc's TSan runtime (libtsan2 on Debian 12; gcc prints
# a bare name when the library is missing)
if command -v gcc >/dev/null 2>&1 && [ "$(gcc -print-file-name=libtsan.so)" = libtsan.so ]; then
  missing+=(libtsan2)
fi
# the test command's short fuzz run needs clang with libFuzzer
if [ "${INFLLM_WITH_FUZZ:-0}" = 1 ]; then
  command -v clang >/dev/null 2>&1 || missing+=(clang)
  ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1 || missing+=(libclang-rt-14-dev)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
if [ "${INFLLM_SKIP_PIP:-0}" != 1 ]; then
  py_missing=$(python3 - <<'PY'
import importlib.util
need = {"numpy": "numpy", "gguf": "gguf", "safetensors": "safetensors", "tokenizers": "tokenizers",
        "wheel": "wheel"}  # wheel: py_binding_install builds the Python package offline (--no-build-isolation)
print(" ".join(p for m, p in need.items() if importlib.util.find_spec(m) is None))
PY
)
  if [ -n "$py_missing" ]; then
    echo "deps: pip installing $py_missing"
    python3 -m pip install -q $py_missing || python3 -m pip install -q --break-system-packages $py_missing
  fi
fi
