"""setup.py: `pip install ./python` builds libinfllm.so from this checkout with CMake and installs it inside the
package (infllm/lib/), so that the installed package needs nothing else. Metadata is in pyproject.toml.

Environment: INFLLM_PIP_CUDA=auto (default: the CUDA backend when nvcc is on the PATH, as the main build) | 1 | 0;
INFLLM_SOURCE_DIR names the checkout when this folder is a copy; INFLLM_PIP_SKIP_LIB=1 installs the Python files alone (the package then finds the library through INFLLM_LIB or the
loader's path). An editable install (`pip install -e ./python`) builds nothing: it uses the checkout's build/."""
import importlib.util
import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

# the project's checkout: python/'s parent, or INFLLM_SOURCE_DIR (a copy of python/ built elsewhere, as the test does)
ROOT = os.environ.get("INFLLM_SOURCE_DIR") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _capi_lib_file():
    """the shared library's file name on this platform, as the package's loader looks for it (infllm/_capi.py,
    loaded on its own: it imports nothing of the package and loads no library)"""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "infllm", "_capi.py")
    spec = importlib.util.spec_from_file_location("_infllm_capi", path)
    capi = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(capi)
    return capi.LIB_FILE


class BuildPyWithLibrary(build_py):
    def run(self):
        super().run()
        if self.editable_mode or os.environ.get("INFLLM_PIP_SKIP_LIB") == "1":
            return
        if not os.path.exists(os.path.join(ROOT, "CMakeLists.txt")):
            raise RuntimeError(f"infllm: no CMakeLists.txt in {ROOT}: install from the project's checkout "
                               "(pip install ./python), or set INFLLM_PIP_SKIP_LIB=1 and INFLLM_LIB at run time")
        if not shutil.which("cmake"):
            raise RuntimeError("infllm: cmake is needed to build libinfllm.so (apt-get install cmake; "
                               "or INFLLM_PIP_SKIP_LIB=1 with INFLLM_LIB set at run time)")
        cuda = os.environ.get("INFLLM_PIP_CUDA", "auto")
        if cuda not in ("auto", "0", "1"):
            raise RuntimeError(f"infllm: INFLLM_PIP_CUDA must be auto, 0 or 1 (got {cuda!r})")
        use_cuda = cuda == "1" or (cuda == "auto" and shutil.which("nvcc") is not None)
        bdir = os.path.join(os.path.abspath(self.build_lib), "..", "infllm-cmake")
        subprocess.check_call(["cmake", "-S", ROOT, "-B", bdir, "-DCMAKE_BUILD_TYPE=Release",
                               f"-DINFLLM_CUDA={'ON' if use_cuda else 'OFF'}"])
        subprocess.check_call(["cmake", "--build", bdir, "-j", str(os.cpu_count() or 2), "--target", "infllm_shared"])
        dest = os.path.join(self.build_lib, "infllm", "lib")
        os.makedirs(dest, exist_ok=True)
        name = _capi_lib_file()
        shutil.copyfile(os.path.realpath(os.path.join(bdir, name)), os.path.join(dest, name))


setup(cmdclass={"build_py": BuildPyWithLibrary})
