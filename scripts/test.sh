#!/usr/bin/env bash
# test.sh: the whole test suite. Builds infllm twice (release with -Werror, and ASan + UBSan)
# and runs every ctest test in both, then test_threads under ThreadSanitizer; a clang build without
# OpenMP (-Werror) with its quick tests; on x86 an aarch64 cross build with its quick tests under qemu
# (INFLLM_SKIP_CROSS=1: not); a Windows (MinGW-w64) cross build with the library's tests under wine
# (INFLLM_SKIP_WINDOWS=1: not); a short fuzz run of the parsers when available.
# The Python package's torch and transformers tests run against a CPU build in a venv of their own (build-torch).
# Exits non-zero on any failure. GPU tests print SKIP when no GPU is present.
set -uo pipefail
cd "$(dirname "$0")/.."
INFLLM_WITH_FUZZ=1 bash scripts/deps.sh || exit 1
JOBS=$(nproc 2>/dev/null || echo 2)
rc=0

echo "=== release build (-Werror) ==="
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DINFLLM_WERROR=ON >/dev/null || exit 1
cmake --build build -j"$JOBS" || exit 1
LOG=$(mktemp)
ctest --test-dir build --output-on-failure -j"$JOBS" 2>&1 | tee "$LOG" || rc=1

echo "=== the Python package with torch and transformers (CPU) ==="
# py_binding's torch part (autograd, torch.compile, CUDA where there is a GPU) and py_binding_hf (the transformers
# attention) skip without torch / transformers, which the system Python does not have: here they get a venv of their
# own (build-torch/venv, ~6 GB; PyPI's torch wheel) and a CPU-only build of the library and command, and run under
# ctest. Skipped, with a line, where the venv cannot be made (no network, an install past 15 minutes, under 16 GB of
# free disk; INFLLM_SKIP_TORCH=1)
TV=build-torch/venv
avail_gb=$(df -Pk . | awk 'NR == 2 {print int($4 / 1048576)}')
if [ "${INFLLM_SKIP_TORCH:-0}" = 1 ]; then
  echo "SKIP: INFLLM_SKIP_TORCH=1: the package's torch / transformers parts not run"
elif [ ! -x "$TV/bin/python" ] && [ "${avail_gb:-0}" -lt 16 ]; then
  echo "SKIP: ${avail_gb} GB of free disk, under the 16 GB that torch's venv needs: the package's torch / transformers parts not run"
elif { [ -x "$TV/bin/python" ] || python3 -m venv "$TV"; } &&
     timeout 900 "$TV/bin/python" -m pip install -q --no-cache-dir --disable-pip-version-check torch transformers \
       numpy >/dev/null; then
  cmake -S . -B build-torch -DCMAKE_BUILD_TYPE=Release -DINFLLM_CUDA=OFF -DINFLLM_WERROR=ON \
        -DPython3_EXECUTABLE="$PWD/$TV/bin/python" >/dev/null || exit 1
  cmake --build build-torch -j"$JOBS" --target infllm infllm_shared || exit 1
  "$TV/bin/python" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
  ctest --test-dir build-torch --output-on-failure -R '^py_binding(_hf)?$' 2>&1 | tee -a "$LOG" || rc=1
else
  echo "SKIP: torch / transformers could not be installed into $TV (network?): the package's torch / transformers parts not run"
fi

echo "=== sanitizer build (ASan + UBSan) ==="
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DINFLLM_SANITIZE=ON -DINFLLM_CUDA=OFF \
      -DINFLLM_WERROR=ON >/dev/null || exit 1
cmake --build build-asan -j"$JOBS" || exit 1
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j"$JOBS" 2>&1 | tee -a "$LOG" || rc=1

echo "=== thread sanitizer build (test_threads) ==="
# the public API from several host threads at once; OpenMP teams of 1 (TSan does not understand
# libgomp's barriers); without address-space randomisation where setarch can, which some kernels'
# randomisation ranges need for TSan's fixed memory layout
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DINFLLM_CUDA=OFF -DINFLLM_WERROR=ON \
      -DCMAKE_C_FLAGS=-fsanitize=thread -DCMAKE_EXE_LINKER_FLAGS=-fsanitize=thread \
      -DCMAKE_SHARED_LINKER_FLAGS=-fsanitize=thread >/dev/null || exit 1
cmake --build build-tsan -j"$JOBS" --target test_threads || exit 1
NORAND=()
setarch "$(uname -m)" -R true 2>/dev/null && NORAND=(setarch "$(uname -m)" -R)
TLOG=$(mktemp)
TSAN_OPTIONS=halt_on_error=1 INFLLM_THREADS_TEST_OMP=1 INFLLM_THREADS_TEST_REPS=1 \
  "${NORAND[@]}" ctest --test-dir build-tsan --output-on-failure -R '^test_threads$' >"$TLOG" 2>&1; trc=$?
cat "$TLOG"
if [ $trc -ne 0 ] && grep -q "FATAL: ThreadSanitizer: unexpected memory mapping" "$TLOG"; then
  # TSan's fixed shadow layout does not fit this kernel's address-space randomisation (and setarch
  # could not turn it off): the runtime cannot start, which says nothing about the library
  echo "SKIP: ThreadSanitizer cannot run on this kernel (unexpected memory mapping); test_threads ran in the other builds"
else
  cat "$TLOG" >>"$LOG"
  [ $trc -eq 0 ] || rc=1
fi
rm -f "$TLOG"

if command -v clang >/dev/null 2>&1; then
  echo "=== clang build without OpenMP (-Werror) and its quick tests ==="
  # the library and tools must build with another compiler than GCC (session 38: clang 14 refused the SIMD
  # dispatch's __builtin_cpu_supports names, so nothing built) and without OpenMP (Apple's clang, minimal
  # toolchains: the omp pragmas then warned, an error under -Werror); deps.sh installs clang for the fuzz run
  CC=clang CXX=clang++ cmake -S . -B build-clang -DCMAKE_BUILD_TYPE=Release -DINFLLM_CUDA=OFF -DINFLLM_WERROR=ON \
    -DCMAKE_DISABLE_FIND_PACKAGE_OpenMP=ON >/dev/null || exit 1
  cmake --build build-clang -j"$JOBS" || exit 1
  INFLLM_DIFF_QUICK=1 ctest --test-dir build-clang --output-on-failure -j"$JOBS" \
    -R '^(test_diff|test_dtype|test_ref_semantics|test_errors|test_cache|test_quant|test_json|test_safetensors|test_tokenizer|example_quickstart)$' \
    2>&1 | tee -a "$LOG" || rc=1
else
  echo "SKIP: no clang (apt-get install clang)"
fi

if [ "$(uname -m)" = x86_64 ] && [ "${INFLLM_SKIP_CROSS:-0}" != 1 ]; then
  echo "=== aarch64 cross build (-Werror) and its quick tests under qemu ==="
  # the x86 SIMD files must stay out of other CPUs' builds (session 35: no aarch64 build compiled), and the NEON
  # attention kernels (kern_neon.c, session 38) run test_diff's quick grid and the golden case here, and the model
  # runtime and the CLI their end-to-end tests (the py_ scripts start the command under qemu); the
  # toolchain and qemu come from Debian's packages, and where they cannot be installed this stage is skipped
  if ! command -v aarch64-linux-gnu-g++ >/dev/null 2>&1 || ! command -v qemu-aarch64 >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq g++-aarch64-linux-gnu \
        qemu-user; } >/dev/null 2>&1 || true
  fi
  if command -v aarch64-linux-gnu-g++ >/dev/null 2>&1 && command -v qemu-aarch64 >/dev/null 2>&1; then
    cmake -S . -B build-aarch64 -DCMAKE_SYSTEM_NAME=Linux -DCMAKE_SYSTEM_PROCESSOR=aarch64 \
          -DCMAKE_C_COMPILER=aarch64-linux-gnu-gcc -DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++ -DINFLLM_CUDA=OFF \
          -DCMAKE_BUILD_TYPE=Release -DINFLLM_WERROR=ON \
          "-DCMAKE_CROSSCOMPILING_EMULATOR=qemu-aarch64;-L;/usr/aarch64-linux-gnu" >/dev/null || exit 1
    cmake --build build-aarch64 -j"$JOBS" || exit 1
    INFLLM_DIFF_QUICK=1 ctest --test-dir build-aarch64 --output-on-failure -j"$JOBS" \
      -R '^(test_diff|test_dtype|test_ref_semantics|test_errors|test_golden|test_cache|test_quant|test_json|test_safetensors|test_tokenizer|py_model_llama|py_model_qwen|py_model_minicpm|py_model_phi3|py_model_cache|py_model_cli|py_model_dump|py_cli_attn)$' \
      2>&1 | tee -a "$LOG" || rc=1
  else
    echo "SKIP: no aarch64 cross toolchain / qemu-user (apt-get install g++-aarch64-linux-gnu qemu-user)"
  fi
fi

if [ "$(uname -m)" = x86_64 ] && [ "${INFLLM_SKIP_WINDOWS:-0}" != 1 ]; then
  echo "=== Windows (MinGW-w64) cross build (-Werror) and its tests under wine ==="
  # the library, the model runtime and the command build for Windows (session 52: POSIX's M_LOG2E, msvcrt's printf,
  # mmap, open's text mode, a rename that does not replace, inode numbers, '\\' separators had kept it from
  # compiling or running right; src/util/portable.c) and run under wine: the library's tests with the golden data,
  # the model runtime's and the command's end-to-end tests (those of the aarch64 stage). Debian's packages; skipped
  # where they cannot be installed
  WCC=x86_64-w64-mingw32-gcc-posix
  WINE=$(command -v wine64 || ls /usr/lib/wine/wine64 2>/dev/null || true)
  if ! command -v "$WCC" >/dev/null 2>&1 || [ -z "$WINE" ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        gcc-mingw-w64-x86-64-posix wine64; } >/dev/null 2>&1 || true
    WINE=$(command -v wine64 || ls /usr/lib/wine/wine64 2>/dev/null || true)
  fi
  if command -v "$WCC" >/dev/null 2>&1 && [ -n "$WINE" ]; then
    cmake -S . -B build-win -DCMAKE_SYSTEM_NAME=Windows -DCMAKE_SYSTEM_PROCESSOR=x86_64 -DCMAKE_C_COMPILER="$WCC" \
          -DINFLLM_CUDA=OFF -DCMAKE_BUILD_TYPE=Release -DINFLLM_WERROR=ON -DCMAKE_CROSSCOMPILING_EMULATOR="$WINE" \
          >/dev/null || exit 1
    cmake --build build-win -j"$JOBS" || exit 1
    # the MinGW runtime's DLLs (OpenMP, winpthreads) from the cross compiler's folders; a prefix of the build's own
    export WINEDEBUG=-all WINEPREFIX="$PWD/build-win/wineprefix"
    WINEPATH="$(dirname "$("$WCC" -print-file-name=libgomp-1.dll)");$(dirname "$("$WCC" -print-file-name=libwinpthread-1.dll)")"
    export WINEPATH
    WSRV="$(dirname "$WINE")/wineserver"
    [ -x "$WSRV" ] || WSRV=$(command -v wineserver || true)
    # a probe first (it also creates the prefix): where wine cannot run a Windows program at all, the stage is
    # skipped with a line rather than read as the tests' failure
    printf '#include <stdio.h>\nint main(void) { puts("probe"); return 0; }\n' >build-win/probe.c
    if "$WCC" build-win/probe.c -o build-win/probe.exe 2>/dev/null &&
       "$WINE" build-win/probe.exe 2>/dev/null | grep -q probe; then
      # then one wine server for the whole run (persistent: a server that exits when idle while the next test starts
      # resets that test's connection, "wine client error: recvmsg", as in CI at f3462fc). Only once the probe has
      # created the prefix: `wineserver -p` cannot chdir to a prefix that does not exist and exits (before session
      # 56 it ran first, failed silently, and every test had the 3-second server); -w waits out the probe's server.
      # Then wine's system processes (services.exe, winedevice.exe, ...) started by a run whose output goes nowhere:
      # under a persistent server they live on, and started by a test they would hold ctest's pipe to that test
      # open, so ctest would wait on it forever (session 56's first try hung so)
      if [ -n "$WSRV" ] && timeout 120 "$WSRV" -w 2>/dev/null && "$WSRV" -p 2>/dev/null &&
         timeout 120 "$WINE" build-win/probe.exe </dev/null >/dev/null 2>&1; then
        echo "wine: one persistent server for the run"
      else
        [ -n "$WSRV" ] && "$WSRV" -k 2>/dev/null
        echo "wine: no persistent server (each test starts its own)"
      fi
      # bounded: should a wine process still hold a test's pipe, the stage (~2 minutes) stops at 15 rather than run
      # into CI's limit
      INFLLM_DIFF_QUICK=1 timeout 900 ctest --test-dir build-win --output-on-failure -j"$JOBS" 2>&1 | tee -a "$LOG"
      wrc=${PIPESTATUS[0]}
      [ "$wrc" -eq 124 ] && echo "FAIL: the Windows tests ran past 15 minutes (a wine process holding a test's output?)"
      [ "$wrc" -eq 0 ] || rc=1
    else
      echo "SKIP: wine cannot run a Windows program here: the Windows build's tests not run (it compiled)"
    fi
    [ -n "$WSRV" ] && "$WSRV" -k 2>/dev/null
    unset WINEDEBUG WINEPREFIX WINEPATH
  else
    echo "SKIP: no MinGW-w64 cross compiler / wine (apt-get install gcc-mingw-w64-x86-64-posix wine64)"
  fi
fi

if [ -x scripts/fuzz.sh ] || [ -f scripts/fuzz.sh ]; then
  echo "=== short fuzz run ==="
  # exit 2: clang/libFuzzer unavailable (test_fuzz_parsers runs the same targets under ctest)
  bash scripts/fuzz.sh "${FUZZ_SECONDS:-10}"; frc=$?
  [ "$frc" -eq 0 ] || [ "$frc" -eq 2 ] || rc=1
fi

# one closing line over both ctest runs (ctest prints "N% tests passed, F tests failed out of T")
read -r total failed skipped < <(awk '/tests failed out of/ {f += $4; t += $NF} /\(Skipped\)/ {s++}
                                     END {print t+0, f+0, s+0}' "$LOG")
rm -f "$LOG"
[ "$total" -gt 0 ] || rc=1
[ "$failed" -eq 0 ] || rc=1
echo "tests: $((total - failed - skipped)) passed, $failed failed, $skipped skipped"
exit "$rc"
