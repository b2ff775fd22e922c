"""infllm_ctypes.py: the C structs and enum values of include/infllm.h that the Python bench scripts pass to
libinfllm.so through ctypes, under the names those scripts use. The declarations themselves are the Python
package's (python/infllm/_capi.py, one copy kept in step with the header); that file is loaded on its own, so
that importing this one neither loads a library nor needs the package installed."""
import importlib.util
import os

_path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python", "infllm", "_capi.py")
_spec = importlib.util.spec_from_file_location("_infllm_capi", _path)
_capi = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_capi)

Params, Layout, Sizes = _capi.ParamsC, _capi.LayoutC, _capi.SizesC  # infllm_params, infllm_layout, infllm_sizes
F16, BF16 = _capi.DTYPE_F16, _capi.DTYPE_BF16
CPU, CUDA = _capi.BACKEND_CPU, _capi.BACKEND_CUDA
DENSE, SPARSE = _capi.MODE_DENSE, _capi.MODE_SPARSE
