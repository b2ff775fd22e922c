#!/usr/bin/env python3
"""`pip install ./python` on a copy of python/ into a fresh virtual environment, offline (--no-build-isolation,
--no-index, this interpreter's setuptools / wheel / numpy through a .pth file, the library built
CPU-only by setup.py's CMake step): the installed package loads its own libinfllm.so from site-packages with no
INFLLM_LIB set, and its attention is bitwise the build's library on the same inputs. SKIP where the interpreter
cannot make a venv or lacks setuptools >= 61 / wheel (scripts/deps.sh installs wheel).

argv[1] is the infllm binary; the reference library is libinfllm.so beside it.
"""
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_counter import Counter, binding_setup, need_modules  # noqa: E402

binding_setup(sys.argv[1])
(np,) = need_modules("numpy")
c = Counter("py_binding_install")
check = c.check
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def skip(why):
    print(f"SKIP: {why}")
    c.finish()


try:
    import setuptools
    import wheel  # noqa: F401
    if int(setuptools.__version__.split(".")[0]) < 61:
        skip(f"setuptools {setuptools.__version__} < 61 (pyproject metadata)")
except ImportError as e:
    skip(f"{e.name} is not installed (pip install setuptools wheel)")

PROG = r'''
import sys, numpy as np, infllm
rng = np.random.default_rng(7)
q = rng.standard_normal((333, 6, 64)).astype(np.float32)
k = rng.standard_normal((333, 2, 64)).astype(np.float32)
out = infllm.attention(q, k, k, mode="sparse", topk=2, local_blocks=1, block_size=32, kernel_size=32, kernel_stride=16)
np.save(sys.argv[1], out)
print(infllm.library_path())
'''
with tempfile.TemporaryDirectory() as tmp:
    venv = os.path.join(tmp, "venv")
    r = subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv], capture_output=True, text=True)
    if r.returncode:
        skip(f"this python cannot make a venv ({r.stderr.strip()[-200:]})")
    vpy = os.path.join(venv, "bin", "python")
    # the new venv sees this interpreter's packages (numpy, setuptools, wheel): --system-site-packages reaches only
    # the base interpreter's, not those of a venv this test may itself run in (the device machine's python is one)
    import site
    vsite = subprocess.run([vpy, "-c", "import site; print(site.getsitepackages()[0])"], capture_output=True,
                           text=True).stdout.strip()
    parents = [p for p in site.getsitepackages() + [site.getusersitepackages()] if os.path.isdir(p)]
    if vsite and os.path.isdir(vsite):
        with open(os.path.join(vsite, "_infllm_test_parent.pth"), "w") as f:
            f.write("\n".join(parents) + "\n")
    src = os.path.join(tmp, "src")
    shutil.copytree(os.path.join(root, "python"), src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    env = dict(os.environ, INFLLM_SOURCE_DIR=root, INFLLM_PIP_CUDA="0")
    env.pop("INFLLM_LIB", None)
    r = subprocess.run([vpy, "-m", "pip", "install", "-q", "--no-build-isolation", "--no-index", "--no-deps", src],
                       capture_output=True, text=True, env=env, timeout=900)
    check(r.returncode == 0, "pip install ./python (the library built by setup.py's CMake step)"
          + ("" if r.returncode == 0 else f": {(r.stdout + r.stderr)[-1500:]}"))
    if r.returncode == 0:
        got = os.path.join(tmp, "got.npy")
        r = subprocess.run([vpy, "-c", PROG, got], capture_output=True, text=True, env=env, cwd=tmp, timeout=300)
        lib = r.stdout.strip()
        check(r.returncode == 0 and lib.startswith(venv) and lib.endswith(os.path.join("infllm", "lib", "libinfllm.so")),
              f"the installed package loads its own library ({lib or r.stderr[-800:]})")
        want = os.path.join(tmp, "want.npy")
        r2 = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[2]); " +
                             PROG.replace("sys.argv[1]", "sys.argv[1]"), want, os.path.join(root, "python")],
                            capture_output=True, text=True, timeout=300)
        check(r.returncode == 0 and r2.returncode == 0 and np.array_equal(np.load(got), np.load(want)),
              "its attention == the build's library's, bitwise" + ("" if r2.returncode == 0 else f": {r2.stderr[-800:]}"))
c.finish()
