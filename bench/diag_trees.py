#!/usr/bin/env python3
"""diag_trees.py: the diagnostic source trees of bench/stage2_diag.sh and bench/select_diag.sh.

    diag_trees.py TOOL TREE TREES_DIR FILE < EDITS

EDITS (stdin) is a Python literal {variant: [(anchor, replacement), ...], ...}. TREES_DIR/variants lists the
variants, one a line, in the literal's order (bench/diag_ab.sh times them in it). For each variant, TREES_DIR/variant
becomes a copy of TREE (tracked and untracked, not ignored, files when TREE is a git checkout; else everything but
build*, .devcarry and models) in which every anchor of FILE, which must occur exactly once, is replaced. Exit status
1 (with TOOL's name and the anchor) when an anchor does not occur exactly once: the kernel changed, so the edits in
TOOL need updating."""
import ast
import os
import shutil
import subprocess
import sys


def copy_tree(tree, dst):
    if os.path.isdir(dst):
        shutil.rmtree(dst)
    os.makedirs(dst)
    git = subprocess.run(["git", "-C", tree, "rev-parse", "--is-inside-work-tree"], capture_output=True, text=True)
    if git.returncode == 0:
        names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=tree,
                               capture_output=True, check=True).stdout.split(b"\0")
        for n in names:
            if not n:
                continue
            src = os.path.join(tree.encode(), n)
            if not os.path.isfile(src):  # deleted but still in the index
                continue
            out = os.path.join(dst.encode(), n)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            shutil.copy2(src, out)
    else:
        ignore = shutil.ignore_patterns("build*", ".devcarry", "models")
        shutil.rmtree(dst)
        shutil.copytree(tree, dst, ignore=ignore, symlinks=True)


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    tool, tree, trees_dir, rel = sys.argv[1:]
    edits = ast.literal_eval(sys.stdin.read())
    for variant, subs in edits.items():
        dst = os.path.join(trees_dir, variant)
        copy_tree(tree, dst)
        path = os.path.join(dst, rel)
        text = open(path).read()
        for anchor, replacement in subs:
            n = text.count(anchor)
            if n != 1:
                print(f"{tool}: {variant}: the anchor {anchor.splitlines()[0].strip()!r} occurs {n} times in {rel} "
                      f"(want 1): update bench/{tool}.sh with the kernel")
                sys.exit(1)
            text = text.replace(anchor, replacement)
        open(path, "w").write(text)
        print(f"# {variant}: {len(subs)} edit(s) of {rel}")
    with open(os.path.join(trees_dir, "variants"), "w") as f:
        f.write("".join(f"{v}\n" for v in edits))


if __name__ == "__main__":
    main()
