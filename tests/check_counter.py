"""What the py_* tests share (not a test itself; no third-party imports at load, so that tests
without numpy can use it): the pass/fail counter (check() prints each result, finish() prints
"NAME: N passed, N failed" and exits non-zero on any failure) and need_modules(); under wine, one more try for a
run of the command that wine left without a word (see _retry_wine_silences)."""
import os
import subprocess
import sys

WINE_RETRIES = []  # the runs tried again under wine: (argv, exit status) each, named in Counter.finish's line


def _retry_wine_silences():
    """The Windows build's tests run the command under wine (scripts/test.sh's Windows stage sets
    INFLLM_TEST_TARGET_OS=windows). Twice in CI a run there ended with nothing on stderr at all (session 60: --chat's
    style line missing; session 62: a refused prompt cache, got is None and an empty stderr), and reruns of the same
    tests by hand (15 in session 60; 20 of py_model_cache and 8 of py_model_cli in session 62) never did it again. The command never ends without a word: it names its failures on stderr,
    and a run that is not -q names its tokens and times there. So a run of it with both streams captured and empty
    that failed, or that was not -q, is wine's, not ours: subprocess.run here runs it once more, prints that it did
    (with the first exit status, for whoever finds the cause) and the test's summary counts it. A second silence
    stands: the check on it fails as before."""
    real_run = subprocess.run

    def silent(p, argv):
        outs = [x for x in (p.stdout, p.stderr) if x is not None]
        return (len(outs) == 2 and not any(x.strip() for x in outs) and
                (p.returncode != 0 or "-q" not in argv))

    def run(*args, **kwargs):
        p = real_run(*args, **kwargs)
        argv = args[0] if args else kwargs.get("args")
        if (isinstance(argv, (list, tuple)) and argv and "infllm" in os.path.basename(str(argv[0])) and
                silent(p, [str(a) for a in argv])):
            what = " ".join(map(str, argv[1:3]))
            WINE_RETRIES.append((what, p.returncode))
            print(f"note: under wine, `infllm {what} ...` ended (exit {p.returncode}) with no output at all: wine's "
                  "silence, run once more")
            p = real_run(*args, **kwargs)
        return p

    subprocess.run = run


if os.environ.get("INFLLM_TEST_TARGET_OS") == "windows":
    _retry_wine_silences()


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
        retried = f" ({len(WINE_RETRIES)} runs of the command tried twice under wine)" if WINE_RETRIES else ""
        print(f"{self.name}: {self.passed} passed, {self.failed} failed{retried}")
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
