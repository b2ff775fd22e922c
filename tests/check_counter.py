"""What the py_* tests share (not a test itself; no third-party imports at load, so that tests
without numpy can use it): the pass/fail counter (check() prints each result, finish() prints
"NAME: N passed, N failed" and exits non-zero on any failure) and need_modules()."""
import os
import sys


def need_modules(*names):
    """Imports the modules or SKIPs (exit 0) when CI is not set; fails under CI=true."""
    mods = []
    for n in names:
        try:
            mods.append(__import__(n))
        except ImportError:
            if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
                print(f"FAIL: python module '{n}' is missing under CI")
                print("0 passed, 1 failed")
                sys.exit(1)
            print(f"SKIP: python module '{n}' is missing (pip install numpy gguf safetensors)")
            print("0 passed, 0 failed, 1 skipped")
            sys.exit(0)
    return mods


class Counter:
    def __init__(self, name):
        self.name, self.passed, self.failed = name, 0, 0

    def check(self, ok, msg):
        if ok:
            self.passed += 1
            print("ok  ", msg)
        else:
            self.failed += 1
            print("FAIL", msg)

    def finish(self):
        print(f"{self.name}: {self.passed} passed, {self.failed} failed")
        sys.exit(1 if self.failed else 0)


def binding_setup(argv1):
    """For the tests of the Python package (python/infllm): where INFLLM_BINDING_SKIP says why it cannot run, SKIP
    with exit 77 (ctest's skip code for them); else point the package at the libinfllm.so beside the infllm binary
    argv1 and put python/ on the import path."""
    if os.environ.get("INFLLM_BINDING_SKIP"):
        print(f"SKIP: {os.environ['INFLLM_BINDING_SKIP']}")
        print("0 passed, 0 failed, 1 skipped")
        sys.exit(77)
    os.environ["INFLLM_LIB"] = os.path.join(os.path.dirname(os.path.abspath(argv1)), "libinfllm.so")
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))
