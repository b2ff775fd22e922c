"""infllm_ctypes.py: the C structs and enum values of include/infllm.h that the Python bench
scripts pass to libinfllm.so through ctypes (one definition for bench/cuda_bench.py and
bench/stage2_union.py; keep in step with the header)."""
import ctypes as C


class Params(C.Structure):  # infllm_params
    _fields_ = [("block_size", C.c_int32), ("kernel_size", C.c_int32), ("kernel_stride", C.c_int32),
                ("init_blocks", C.c_int32), ("local_blocks", C.c_int32), ("topk", C.c_int32),
                ("dense_len", C.c_int32), ("exact_lse", C.c_int32), ("softmax_scale", C.c_float),
                ("mode", C.c_int), ("backend", C.c_int), ("num_threads", C.c_int32),
                ("cuda_stream", C.c_void_p), ("workspace", C.c_void_p), ("workspace_bytes", C.c_size_t)]


class Layout(C.Structure):  # infllm_layout
    _fields_ = [("dtype", C.c_int), ("num_seqs", C.c_int32), ("cu_seqlens_q", C.c_void_p),
                ("cu_seqlens_k", C.c_void_p), ("total_q", C.c_int64), ("total_k", C.c_int64),
                ("num_q_heads", C.c_int32), ("num_kv_heads", C.c_int32), ("head_dim", C.c_int32),
                ("max_seqlen_q", C.c_int32), ("max_seqlen_k", C.c_int32)]


class Sizes(C.Structure):  # infllm_sizes
    _fields_ = [("total_n1", C.c_int64), ("total_n2", C.c_int64), ("max_n1", C.c_int32),
                ("nblocks_out", C.c_int32), ("topk_out", C.c_int32)]


F16, BF16 = 1, 2          # INFLLM_DTYPE_F16, INFLLM_DTYPE_BF16
CPU, CUDA = 0, 2         # INFLLM_BACKEND_CPU, INFLLM_BACKEND_CUDA
DENSE, SPARSE = 1, 2     # INFLLM_MODE_DENSE, INFLLM_MODE_SPARSE
