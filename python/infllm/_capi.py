"""ctypes declarations of include/infllm.h (structs, enums, the entry points the package calls) and the
loading of libinfllm.so. Keep in step with the header: tests/py_binding.py checks the structs' sizes and field
offsets against the C compiler's layout of include/infllm.h, and the defaults against the library. No package
imports here: bench/infllm_ctypes.py loads this file on its own."""
import ctypes as C
import ctypes.util
import os
import sys

# enums (include/infllm.h)
DTYPE_F32, DTYPE_F16, DTYPE_BF16 = 0, 1, 2
BACKEND_CPU, BACKEND_REF, BACKEND_CUDA = 0, 1, 2
MODE_AUTO, MODE_DENSE, MODE_SPARSE = 0, 1, 2
ERR_NOMEM = 8

BACKENDS = {"cpu": BACKEND_CPU, "ref": BACKEND_REF, "cuda": BACKEND_CUDA}
MODES = {"auto": MODE_AUTO, "dense": MODE_DENSE, "sparse": MODE_SPARSE}


class ParamsC(C.Structure):  # infllm_params
    _fields_ = [("block_size", C.c_int32), ("kernel_size", C.c_int32), ("kernel_stride", C.c_int32),
                ("init_blocks", C.c_int32), ("local_blocks", C.c_int32), ("topk", C.c_int32),
                ("dense_len", C.c_int32), ("exact_lse", C.c_int32), ("window", C.c_int32), ("softmax_scale", C.c_float),
                ("mode", C.c_int), ("backend", C.c_int), ("num_threads", C.c_int32),
                ("cuda_stream", C.c_void_p), ("workspace", C.c_void_p), ("workspace_bytes", C.c_size_t)]


class LayoutC(C.Structure):  # infllm_layout
    _fields_ = [("dtype", C.c_int), ("num_seqs", C.c_int32), ("cu_seqlens_q", C.c_void_p),
                ("cu_seqlens_k", C.c_void_p), ("total_q", C.c_int64), ("total_k", C.c_int64),
                ("num_q_heads", C.c_int32), ("num_kv_heads", C.c_int32), ("head_dim", C.c_int32),
                ("max_seqlen_q", C.c_int32), ("max_seqlen_k", C.c_int32)]


class SizesC(C.Structure):  # infllm_sizes
    _fields_ = [("total_n1", C.c_int64), ("total_n2", C.c_int64), ("max_n1", C.c_int32),
                ("nblocks_out", C.c_int32), ("topk_out", C.c_int32)]


_vp, _P, _L = C.c_void_p, C.POINTER(ParamsC), C.POINTER(LayoutC)
_i32, _i64, _int = C.c_int32, C.c_int64, C.c_int

# name: (restype, argtypes); every status-returning call is checked by the package
_SIGNATURES = {
    "infllm_last_error": (C.c_char_p, []),
    "infllm_status_str": (C.c_char_p, [_int]),
    "infllm_version": (C.c_char_p, []),
    "infllm_build_commit": (C.c_char_p, []),
    "infllm_cpu_simd_level": (C.c_char_p, []),
    "infllm_cpu_bf16_dot": (_int, []),
    "infllm_cpu_num_threads": (_int, []),
    "infllm_cuda_available": (_int, []),
    "infllm_cuda_built": (_int, []),
    "infllm_cuda_device_info": (_int, [C.c_char_p, C.c_size_t]),
    "infllm_params_default": (None, [_P]),
    "infllm_params_topk_total": (_i32, [_P]),
    "infllm_get_sizes": (_int, [_P, _L, C.POINTER(SizesC)]),
    "infllm_compress_keys": (_int, [_P, _L, _vp, _vp, _vp, _vp, _vp]),
    "infllm_stage1_scores": (_int, [_P, _L, _vp, _vp, _vp, _vp, _vp, _vp]),
    "infllm_block_scores": (_int, [_P, _L, _vp, _vp]),
    "infllm_topk_select": (_int, [_P, _L, _vp, _vp]),
    "infllm_attention": (_int, [_P, _L, _vp, _vp, _vp, _vp, _vp]),
    "infllm_attention_workspace_size": (_int, [_P, _L, C.POINTER(C.c_size_t)]),
    "infllm_select_blocks": (_int, [_P, _L, _vp, _vp, _vp]),
    "infllm_select_blocks_workspace_size": (_int, [_P, _L, C.POINTER(C.c_size_t)]),
    "infllm_sparse_attention": (_int, [_P, _L, _vp, _vp, _vp, _vp, _i32, _vp, _vp]),
    "infllm_sparse_attention_workspace_size": (_int, [_P, _L, _i32, C.POINTER(C.c_size_t)]),
    "infllm_dense_attention": (_int, [_P, _L, _vp, _vp, _vp, _vp, _vp]),
    "infllm_dense_attention_workspace_size": (_int, [_P, _L, C.POINTER(C.c_size_t)]),
    "infllm_sparse_attention_backward_out": (_int, [_P, _L, _vp, _vp, _vp, _vp, _i32, _vp, _vp, _vp,
                                                    _vp, _vp, _vp]),
    "infllm_sparse_attention_backward_workspace_size": (_int, [_P, _L, _i32, C.POINTER(C.c_size_t)]),
    "infllm_dense_attention_backward_out": (_int, [_P, _L, _vp, _vp, _vp, _vp, _vp, _vp, _vp, _vp, _vp]),
    "infllm_dense_attention_backward_workspace_size": (_int, [_P, _L, C.POINTER(C.c_size_t)]),
    "infllm_cache_create": (_int, [_P, _int, _i32, _i32, _i64, C.POINTER(_vp)]),
    "infllm_cache_free": (None, [_vp]),
    "infllm_cache_append": (_int, [_vp, _vp, _vp, _i64]),
    "infllm_cache_attend": (_int, [_vp, _P, _vp, _i64, _i32, _vp, _vp]),
    "infllm_cache_workspace_size": (_int, [_vp, _P, _i64, _i32, C.POINTER(C.c_size_t)]),
    "infllm_cache_truncate": (_int, [_vp, _i64]),
    "infllm_cache_length": (_i64, [_vp]),
    "infllm_cache_capacity": (_i64, [_vp]),
    "infllm_cache_memory_bytes": (C.c_size_t, [_vp]),
}


# the shared library's file name as CMake names it on this platform (MinGW: libinfllm.dll; macOS: .dylib); only the
# Linux one is tested
LIB_FILE = {"win32": "libinfllm.dll", "cygwin": "libinfllm.dll", "darwin": "libinfllm.dylib"}.get(sys.platform,
                                                                                                  "libinfllm.so")


def _candidates():
    """where libinfllm.so may be: $INFLLM_LIB, the package's own copy (infllm/lib/, what `pip install ./python`
    builds), the source tree's build folders (this file is python/infllm/_capi.py of a checkout), then the
    loader's search path"""
    env = os.environ.get("INFLLM_LIB")
    if env:
        return [env]
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    found = [os.path.join(here, "lib", LIB_FILE)]
    found += [os.path.join(root, b, LIB_FILE) for b in ("build", "build-gpu", "build-cpu")]
    found = [f for f in found if os.path.exists(f)]
    sys_lib = ctypes.util.find_library("infllm")
    return found + ([sys_lib] if sys_lib else []) + [LIB_FILE]


def load():
    errors = []
    for path in _candidates():
        try:
            lib = C.CDLL(path)
        except OSError as e:
            errors.append(f"{path}: {e}")
            continue
        for name, (res, args) in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = res, args
        lib.path = path
        return lib
    raise ImportError(f"infllm: {LIB_FILE} not found (build it with cmake, or set INFLLM_LIB to its path); tried "
                      + "; ".join(errors))
