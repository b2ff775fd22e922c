#!/usr/bin/env python3
"""ncu_sass.py: where a kernel's warps wait, from Nsight Compute's per-instruction source page.

Input: the CSV of `ncu -i REPORT --page source --csv --print-source sass > FILE.csv` (one row per
SASS instruction: address, source text, "Warp Stall Sampling (All Samples)", "Instructions
Executed", and one stall_* column per stall reason). Prints

  * the stall reasons' shares of all warp samples;
  * the instructions with the most samples (address, share, executions, text, main reasons);
  * with --mix, the executed instructions by opcode;
  * with --range LO:HI (hex address suffixes or full addresses, repeatable), the share of the
    samples in that address range (a loop's head, its softmax, ...).

    python3 bench/ncu_sass.py st2_sass.csv [--top 30] [--mix] [--range b100:b700] [--csv]

bench/cuda_ncu.sh writes such CSVs on the GPU machine and runs this on them. The HGMMA waits
(a warpgroup's warps meeting at a collective MMA) are not among the CSV's stall columns: their
samples count in the total but show no reason.
"""
import argparse
import csv
import sys
from collections import Counter

SAMPLES = "Warp Stall Sampling (All Samples)"
EXECUTED = "Instructions Executed"


def num(x):
    try:
        return float(x.replace(",", ""))
    except (ValueError, AttributeError):
        return 0.0


def load(path):
    """(kernel name, header, rows) of an ncu source-page CSV; exits with a message if it is not one"""
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except OSError as e:
        sys.exit(f"ncu_sass: cannot read {path}: {e}")
    # the page starts with a "Kernel Name" line, then the header
    start = next((i for i, r in enumerate(rows) if r and r[0] == "Address"), None)
    if start is None:
        sys.exit(f"ncu_sass: {path}: no 'Address' header row: not `ncu --page source --csv --print-source sass` output")
    hdr = rows[start]
    for col in (SAMPLES, EXECUTED):
        if col not in hdr:
            sys.exit(f"ncu_sass: {path}: no '{col}' column (profile with --set full or the SourceCounters section)")
    kernel = rows[start - 1][1] if start > 0 and len(rows[start - 1]) > 1 else "?"
    data = [r for r in rows[start + 1:] if len(r) == len(hdr)]
    if not data:
        sys.exit(f"ncu_sass: {path}: no instruction rows")
    return kernel, hdr, data


def addr_key(addr, ndigits):
    """an instruction's address (hex string) cut to its last ndigits hex digits, as an int"""
    a = addr.lower().removeprefix("0x")
    return int(a[-ndigits:], 16)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("csv_file")
    ap.add_argument("--top", type=int, default=30, help="instructions to list (most samples first)")
    ap.add_argument("--mix", action="store_true", help="also the executed instructions by opcode")
    ap.add_argument("--range", action="append", default=[], metavar="LO:HI",
                    help="also the samples between two addresses (inclusive; hex, full or last digits)")
    ap.add_argument("--csv", action="store_true", help="machine-readable output")
    a = ap.parse_args()
    ranges = []  # (spec, lo, hi, digits compared)
    for spec in a.range:
        lo_s, sep, hi_s = spec.partition(":")
        lo_s, hi_s = lo_s.lower().removeprefix("0x"), hi_s.lower().removeprefix("0x")
        try:
            lo, hi = int(lo_s, 16), int(hi_s, 16)
        except ValueError:
            sep = ""
        if not sep or lo > hi:
            sys.exit(f"ncu_sass: --range {spec}: want LO:HI, two hex addresses (or their last digits), LO <= HI")
        ranges.append((spec, lo, hi, max(len(lo_s), len(hi_s))))
    kernel, hdr, data = load(a.csv_file)
    ix = {h: i for i, h in enumerate(hdr)}
    stalls = [h for h in hdr if h.startswith("stall_") and "Not Issued" not in h]
    total = sum(num(r[ix[SAMPLES]]) for r in data)
    if total <= 0:
        sys.exit(f"ncu_sass: {a.csv_file}: no warp samples")
    reasons = sorted(((sum(num(r[ix[s]]) for r in data), s) for s in stalls), reverse=True)
    named = sum(v for v, _ in reasons)
    top = sorted(data, key=lambda r: -num(r[ix[SAMPLES]]))[:max(a.top, 0)]

    def main_reasons(r, n=2):
        rs = sorted(((num(r[ix[s]]), s[6:]) for s in stalls), reverse=True)[:n]
        return [(name, v) for v, name in rs if v > 0]

    if a.csv:
        print("section,key,value")
        for v, s in reasons:
            print(f"reason,{s[6:]},{v / total:.4f}")
        print(f"reason,unattributed,{(total - named) / total:.4f}")
        for r in top:
            print(f"top,{r[0]},{num(r[ix[SAMPLES]]) / total:.4f},{num(r[ix[EXECUTED]]):.0f},\"{r[1].strip()}\"")
    else:
        print(f"# {kernel}: {len(data)} instructions, {total:.0f} warp samples")
        print("stall reasons (share of all samples):")
        for v, s in reasons:
            if v / total >= 0.001:
                print(f"  {s[6:]:22s} {100 * v / total:5.1f}%")
        print(f"  {'(no reason: HGMMA..)':22s} {100 * (total - named) / total:5.1f}%")
        print(f"top {len(top)} instructions:")
        for r in top:
            rs = " ".join(f"{n}:{100 * v / total:.1f}" for n, v in main_reasons(r))
            print(f"  {r[0][-6:]:>6} {100 * num(r[ix[SAMPLES]]) / total:5.2f}%  x{num(r[ix[EXECUTED]]):<9.3g} "
                  f"{r[1].strip()[:64]:64s} {rs}")
    for spec, lo, hi, nd in ranges:
        sel = [r for r in data if lo <= addr_key(r[0], nd) <= hi]
        share = sum(num(r[ix[SAMPLES]]) for r in sel) / total
        if a.csv:
            print(f"range,{spec},{share:.4f}")
        else:
            print(f"range {spec}: {len(sel)} instructions, {100 * share:.1f}% of the samples")
    if a.mix:
        mix = Counter()
        for r in data:
            ops = [o for o in r[1].split() if not o.startswith("@")]
            if ops:
                mix[ops[0].split(".")[0]] += num(r[ix[EXECUTED]])
        n = sum(mix.values())
        if a.csv:
            for op, v in mix.most_common():
                print(f"mix,{op},{v / n:.4f}")
        else:
            print(f"executed warp instructions by opcode ({n:.3g} in all):")
            for op, v in mix.most_common(20):
                print(f"  {op:10s} {v:10.3g} {100 * v / n:5.1f}%")


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:  # output cut by `| head`
        sys.stderr.close()
