"""The py_* tests' pass/fail counter (not a test itself; no third-party imports, so that tests
without numpy can use it): check() prints each result, finish() prints "NAME: N passed, N failed"
and exits non-zero on any failure."""
import sys


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
