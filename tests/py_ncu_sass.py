#!/usr/bin/env python3
"""Tests of bench/ncu_sass.py (the stall summary of an Nsight Compute source page) on small
hand-made CSVs in ncu's layout: reason shares, the top list's order, address ranges, the opcode
mix, and clear errors with a non-zero exit for files that are not such a page. argv[1] (the
infllm binary, as for every py_* test) is not used.
"""
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TOOL = os.path.join(HERE, "..", "bench", "ncu_sass.py")
sys.path.insert(0, HERE)
from check_counter import Counter  # noqa: E402

c = Counter("py_ncu_sass")
check = c.check

HEADER = ["Address", "Source", "Warp Stall Sampling (All Samples)", "Warp Stall Sampling (Not-issued Samples)",
          "# Samples", "Instructions Executed", "stall_barrier", "stall_wait", "stall_short_sb",
          "stall_barrier (Not Issued)", "stall_wait (Not Issued)", "stall_short_sb (Not Issued)"]
# address, source, samples, executed, barrier, wait, short_sb (the rest of a sample has no reason)
ROWS = [
    ("0x7f00000a0100", "      LDS R12, [UR9+0x18000]", 100, 1000, 0, 60, 40),
    ("0x7f00000a0110", "@!P1  BRA 0x7f00000a0100", 300, 1000, 0, 300, 0),
    ("0x7f00000a0200", "      HGMMA.64x64x16.F32.BF16 R88, gdesc[UR8], RZ, !UPT", 200, 500, 0, 0, 0),
    ("0x7f00000a0300", "      BAR.SYNC.DEFER_BLOCKING 0x0", 400, 1000, 400, 0, 0),
    ("0x7f00000a0310", "      FFMA R1, R2, R3, R4", 0, 2000, 0, 0, 0),
]


def write_csv(path, rows=ROWS, header=HEADER, kernel="void k_test<128>(P)"):
    def q(x):
        return '"' + str(x) + '"'
    with open(path, "w") as f:
        f.write(f'"Kernel Name",{q(kernel)},\n')
        f.write(",".join(q(h) for h in header) + "\n")
        for a, src, smp, ex, bar, wait, ssb in rows:
            vals = [a, src, f"{smp:,}", smp, smp, f"{ex:,}", bar, wait, ssb, bar, wait, ssb]
            f.write(",".join(q(v) for v in vals) + "\n")


def run(*args):
    p = subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


def parse_csv_out(out):
    res = {}
    for line in out.splitlines()[1:]:
        sec, key, rest = line.split(",", 2)
        res.setdefault(sec, []).append((key, rest))
    return res


with tempfile.TemporaryDirectory() as tmp:
    good = os.path.join(tmp, "k.csv")
    write_csv(good)

    # shares over all 1000 samples: barrier 400, wait 360, short_sb 40, unattributed 200 (the HGMMA)
    rc, out, err = run(good, "--csv", "--top", "3", "--mix", "--range", "a0100:a0110", "--range", "0x7f00000a0200:0x7f00000a0310")
    check(rc == 0, f"--csv run: rc {rc}, stderr {err}")
    r = parse_csv_out(out)
    reasons = dict(r.get("reason", []))
    check(abs(float(reasons.get("barrier", -1)) - 0.4) < 1e-9, f"barrier share {reasons.get('barrier')}")
    check(abs(float(reasons.get("wait", -1)) - 0.36) < 1e-9, f"wait share {reasons.get('wait')}")
    check(abs(float(reasons.get("short_sb", -1)) - 0.04) < 1e-9, f"short_sb share {reasons.get('short_sb')}")
    check(abs(float(reasons.get("unattributed", -1)) - 0.2) < 1e-9, f"unattributed share {reasons.get('unattributed')}")
    check([k for k, _ in r.get("reason", [])][:3] == ["barrier", "wait", "short_sb"], "reasons ordered by share")
    top = r.get("top", [])
    check(len(top) == 3, f"--top 3 gives 3 rows, got {len(top)}")
    check([k for k, _ in top] == ["0x7f00000a0300", "0x7f00000a0110", "0x7f00000a0200"], f"top order {top}")
    check(top and top[0][1].startswith("0.4000,1000,"), f"top row values {top[:1]}")
    ranges = dict(r.get("range", []))
    check(abs(float(ranges.get("a0100:a0110", -1)) - 0.4) < 1e-9, f"suffix range share {ranges}")
    check(abs(float(ranges.get("0x7f00000a0200:0x7f00000a0310", -1)) - 0.6) < 1e-9, f"full-address range {ranges}")
    mix = dict(r.get("mix", []))
    check(abs(float(mix.get("FFMA", -1)) - 2000 / 5500) < 1e-4, f"FFMA share of the mix {mix.get('FFMA')}")
    check(abs(float(mix.get("BRA", -1)) - 1000 / 5500) < 1e-4, f"predicated BRA counted as BRA {mix.get('BRA')}")
    check(abs(float(mix.get("HGMMA", -1)) - 500 / 5500) < 1e-4, f"HGMMA.64x64x16... counted as HGMMA {mix.get('HGMMA')}")

    rc, out, err = run(good, "--top", "2")
    check(rc == 0 and "k_test" in out and "barrier" in out and "40.0%" in out, f"table output: rc {rc}\n{out}")

    # errors: a message naming the problem, a non-zero exit, no traceback
    def bad(args, needle, what):
        rc, out, err = run(*args)
        check(rc != 0 and needle in err and "Traceback" not in err, f"{what}: rc {rc}, stderr {err!r}")

    bad([os.path.join(tmp, "missing.csv")], "cannot read", "missing file")
    notcsv = os.path.join(tmp, "notes.txt")
    with open(notcsv, "w") as f:
        f.write("just some text\nno header here\n")
    bad([notcsv], "no 'Address' header", "not an ncu page")
    nosamp = os.path.join(tmp, "nosamp.csv")
    write_csv(nosamp, header=[h.replace("Warp Stall Sampling (All Samples)", "Something Else") for h in HEADER])
    bad([nosamp], "Warp Stall Sampling", "no samples column")
    zero = os.path.join(tmp, "zero.csv")
    write_csv(zero, rows=[(a, s, 0, e, 0, 0, 0) for a, s, _, e, _, _, _ in ROWS])
    bad([zero], "no warp samples", "all-zero samples")
    empty = os.path.join(tmp, "empty.csv")
    write_csv(empty, rows=[])
    bad([empty], "no instruction rows", "header only")
    bad([good, "--range", "zz:10"], "--range", "non-hex range")
    bad([good, "--range", "20:10"], "LO <= HI", "reversed range")
    bad([good, "--range", "10"], "want LO:HI", "range without colon")

c.finish()
