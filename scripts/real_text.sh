#!/usr/bin/env bash
# real_text.sh: a long real English text for bench/real_union.py (the dumps of `infllm run
# --dump-qkv`): the prose of the Python documentation's reStructuredText sources (Debian's
# python3-doc: the tutorial, the HOWTOs, the FAQ, the language reference, in that order, files
# sorted by name), with directives, labels, heading underlines, code and doctest blocks dropped and
# inline markup reduced to its text; paragraphs are kept whole and the text stops before CHARS.
# Deterministic for a given python3-doc version (the version is printed).
#
#   bash scripts/real_text.sh OUT.txt [CHARS]       # CHARS: 400000 (about 90K SmolLM2 tokens)
set -euo pipefail
out=${1:?usage: real_text.sh OUT.txt [CHARS]}
chars=${2:-400000}
src=$(ls -d /usr/share/doc/python3.*/html/_sources 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$src" ]; then
  SUDO=; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-doc >/dev/null
  src=$(ls -d /usr/share/doc/python3.*/html/_sources | sort -V | tail -1)
fi
ver=$(dpkg-query -W -f '${Package} ${Version}' "$(basename "$(dirname "$(dirname "$src")")")-doc" 2>/dev/null || echo unknown)
python3 - "$src" "$out" "$chars" "$ver" <<'PY'
import os, re, sys
src, out, limit, ver = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
ROLE = re.compile(r":[\w:+.-]+:`([^`]*?)`")
def inline(s):
    s = ROLE.sub(lambda m: re.sub(r"\s*<[^>]*>$", "", m.group(1)).lstrip("~!"), s)
    s = re.sub(r"\s*\[#\w*\]_", "", s)
    s = re.sub(r"``([^`]*)``", r"\1", s)
    s = re.sub(r"`([^`<]*?)(\s*<[^>]*>)?`_{0,2}", r"\1", s)
    s = re.sub(r"\*\*([^*]+)\*\*", r"\1", s)
    return re.sub(r"(?<![\w*])\*([^*\s][^*]*)\*", r"\1", s)
def prose(text):
    paras, cur, skip_indent, literal, prev_indent = [], [], None, False, 0
    ind = lambda l: len(l) - len(l.lstrip(" "))
    def flush():
        if cur:
            paras.append(" ".join(cur))
            cur.clear()
    for line in text.splitlines():
        line = line.rstrip().replace("\t", "    ")
        if skip_indent is not None:  # inside a directive or a literal block
            if not line or ind(line) > skip_indent:
                continue
            skip_indent = None
        if not line:
            flush()
            if literal:  # the paragraph ended with '::': skip the indented block after it
                skip_indent, literal = prev_indent, False
            continue
        s = line.strip()
        if s.startswith(".. ") or s == "..":
            flush()
            skip_indent = ind(line)
            continue
        if re.fullmatch(r"([=\-~^\"'`#*+<>:.])\1{2,}", s) or s.startswith((">>>", "... ", "$ ", "|")):
            flush()
            continue
        if ind(line) >= 3 and not cur:  # block quote / option lists / leftover code: dropped
            continue
        cur.append(inline(s))
        prev_indent = ind(line)
        if s.endswith("::"):
            cur[-1] = cur[-1][:-2].rstrip() + (":" if not cur[-1][:-2].endswith(" ") else "")
            if cur[-1] in ("", ":"):
                cur.pop()
            literal = True
    flush()
    return [p for p in paras if len(p) > 40 and re.search(r"[a-z]{3,} [a-z]{3,}", p)]
def paragraphs():
    for sub in ("tutorial", "howto", "faq", "reference"):
        d = os.path.join(src, sub)
        for f in sorted(os.listdir(d)):
            if f.endswith(".rst.txt") and f != "index.rst.txt":
                yield from prose(open(os.path.join(d, f), encoding="utf-8").read())
parts, n = [], 0
for p in paragraphs():  # a smaller CHARS gives a prefix of a larger one's text
    if n + len(p) + 2 > limit:
        break
    parts.append(p)
    n += len(p) + 2
with open(out, "w", encoding="utf-8") as fh:
    fh.write("\n\n".join(parts) + "\n")
print(f"real_text: {out}: {n} characters, {len(parts)} paragraphs from {src} ({ver})")
PY
