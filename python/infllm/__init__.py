"""infllm: InfLLM-V2 dense-sparse switchable attention from Python (ctypes over libinfllm.so).

Tensors are PyTorch tensors (CPU or CUDA; float32, float16, bfloat16) or NumPy arrays (host; float32,
float16, or uint16 holding raw bfloat16 bits as the project's .bf16.npy files do), in FlashAttention's varlen
layout (include/infllm.h):

    q [total_q, Hq, D]    k, v [total_k, Hkv, D]    out [total_q, Hq, D]    lse [total_q, Hq] float32

with `cu_seqlens_q` / `cu_seqlens_k` ([num_seqs + 1], int) for several sequences, or the batched layout
q [B, Tq, Hq, D], k / v [B, Tk, Hkv, D] (B sequences of equal lengths; outputs [B, Tq, ...]). A sequence's
queries are the last of its key positions (bottom-right causal alignment: a decode step has Tq 1).

    import infllm
    out = infllm.attention(q, k, v)                        # dense below dense_len (8192) keys, sparse above
    out, lse = infllm.attention(q, k, v, mode="sparse", topk=16, return_lse=True)
    idx = infllm.select_blocks(q, k)                       # [Hkv, total_q, topk_out] int32, -1 padded
    out, lse = infllm.sparse_attention(q, k, v, idx)       # stage 2 on a given selection
    dq, dk, dv = infllm.sparse_attention_backward(q, k, v, idx, lse, dout, out=out)

`infllm.attention`, `sparse_attention` and `dense_attention` are differentiable for torch tensors that require
grad: the selection is held fixed (no gradient flows through compression or top-k, as in InfLLM-V2 training) and
the backward is the library's (CPU or CUDA). Parameters: `params=infllm.Params(...)` and / or keyword overrides
of its fields (block_size, kernel_size, kernel_stride, init_blocks, local_blocks, topk, dense_len, exact_lse,
window (a sliding key window: CPU and REF only), softmax_scale, mode, num_threads); `backend` "cpu", "ref" (the
float64 reference) or "cuda" (default: where the tensors are). Errors raise `infllm.InfllmError` with the
library's message. CUDA calls run on torch's current stream, take their workspace from torch's allocator (so they
can be captured into CUDA graphs) and never synchronise, except to read cu_seqlens given as CUDA tensors without max_seqlen_q / max_seqlen_k (and, when
differentiating infllm.attention, to read the lengths that decide dense or sparse per sequence). Under
torch.compile (torch >= 2.4) the torch calls run as custom operators (infllm::*, _ops.py): fullgraph=True
traces them without graph breaks, and CUDA graphs (mode="reduce-overhead") capture them. A process
forked after a call (multiprocessing, DataLoader workers) runs its CPU calls on one thread: GCC's OpenMP does
not survive fork (the library's rule, include/infllm.h).
"""
import ctypes as C
import math
import numbers
import operator
import sys
import threading

from . import _capi
from ._capi import BACKEND_CPU, BACKEND_CUDA

__all__ = ["InfllmError", "Params", "attention", "select_blocks", "sparse_attention", "dense_attention",
           "sparse_attention_backward", "dense_attention_backward", "DecodeCache", "version", "build_commit",
           "cpu_simd_level", "cpu_bf16_dot", "cuda_available", "cuda_device_info", "library_path"]

_lib = _capi.load()

class InfllmError(RuntimeError):
    """A library call failed; `status` is the infllm_status code, the message the library's."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def _check(status, what):
    if status != 0:
        name = _lib.infllm_status_str(status).decode()
        msg = _lib.infllm_last_error().decode(errors="replace")
        raise InfllmError(status, f"{what}: {name}: {msg}" if msg else f"{what}: {name}")


def version():
    return _lib.infllm_version().decode()


def build_commit():
    return _lib.infllm_build_commit().decode()


def cpu_simd_level():
    return _lib.infllm_cpu_simd_level().decode()


def cpu_bf16_dot():
    """True if the CPU backend runs bf16 attention on its bf16 dot-product kernels (infllm_cpu_bf16_dot)"""
    return bool(_lib.infllm_cpu_bf16_dot())


def cuda_available():
    return bool(_lib.infllm_cuda_available())


def cuda_device_info():
    buf = C.create_string_buffer(512)
    _lib.infllm_cuda_device_info(buf, len(buf))
    return buf.value.decode(errors="replace")


def library_path():
    return _lib.path


# ------------------------------------------------------------------------------------------- params ----
_PARAM_FIELDS = ("block_size", "kernel_size", "kernel_stride", "init_blocks", "local_blocks", "topk",
                 "dense_len", "exact_lse", "window", "softmax_scale", "mode", "num_threads")
_MODE_NAMES = {v: k for k, v in _capi.MODES.items()}


def _default_c_params():
    p = _capi.ParamsC()
    _lib.infllm_params_default(C.byref(p))
    return p


def _defaults():
    c = _default_c_params()
    d = {f: getattr(c, f) for f in _PARAM_FIELDS}
    d["mode"] = _MODE_NAMES.get(c.mode, c.mode)
    d["exact_lse"] = bool(c.exact_lse)
    return d


_DEFAULTS = _defaults()


class Params:
    """The InfLLM-V2 parameters (infllm_params), MiniCPM4.1's by default: blocks of 64, c1 windows of 32 with
    stride 16 (c2: 128 / 64), 1 init block, 32 local blocks, topk 64 (96 blocks a query in all), dense below
    8192 keys, the c2 LSE approximation (exact_lse False), no sliding key window (window 0: a query at position
    p attends keys j > p - window otherwise), softmax_scale 0 = 1 / sqrt(D), mode "auto", all
    CPU threads (num_threads 0). Fields are plain attributes, checked when set; `replace(**kw)` returns a
    changed copy."""

    def __init__(self, **kw):
        self.__dict__.update(_DEFAULTS)
        for k, v in kw.items():
            setattr(self, k, v)

    def __setattr__(self, k, v):
        if k not in _PARAM_FIELDS:
            raise TypeError(f"infllm.Params has no field {k!r} (fields: {', '.join(_PARAM_FIELDS)})")
        if k == "mode":
            if isinstance(v, str):
                if v not in _capi.MODES:
                    raise ValueError(f"infllm.Params.mode: {v!r} is not one of auto, dense, sparse")
            elif not isinstance(v, bool) and isinstance(v, int) and v in _MODE_NAMES:
                v = _MODE_NAMES[v]
            else:
                raise ValueError(f"infllm.Params.mode: {v!r} is not one of auto, dense, sparse")
        elif k == "softmax_scale":
            v = float(v)
            f32 = C.c_float(v).value  # the struct's field: 0 there is the library's 1 / sqrt(head_dim)
            if (v != 0 and f32 == 0) or (math.isfinite(v) and not math.isfinite(f32)):
                raise ValueError(f"infllm.Params.softmax_scale = {v} is {f32} as a float32 (the library's field)"
                                 + (", which means 1 / sqrt(head_dim)" if f32 == 0 else ""))
        elif k == "exact_lse":
            if not isinstance(v, (bool, int)) or v not in (0, 1):  # bool("False") would be True
                raise TypeError(f"infllm.Params.exact_lse must be a bool (or 0 / 1), not {v!r}")
            v = bool(v)
        else:
            if isinstance(v, bool) or not isinstance(v, int) and not hasattr(v, "__index__"):
                raise TypeError(f"infllm.Params.{k} must be an integer, not {type(v).__name__}")
            v = int(v)
            if not -2**31 <= v < 2**31:
                raise ValueError(f"infllm.Params.{k} = {v} is outside the int32 range")
        self.__dict__[k] = v
        self.__dict__.pop("_cc", None)  # the C struct made from the old values

    def __getstate__(self):  # the fields alone: the cached C struct has pointer fields, which pickle refuses
        return {f: self.__dict__[f] for f in _PARAM_FIELDS}

    def __setstate__(self, state):
        self.__dict__.update(state)

    def replace(self, **kw):
        p = object.__new__(Params)
        p.__dict__.update({f: self.__dict__[f] for f in _PARAM_FIELDS})
        for k, v in kw.items():
            setattr(p, k, v)
        return p

    def __eq__(self, other):
        return isinstance(other, Params) and all(getattr(self, f) == getattr(other, f) for f in _PARAM_FIELDS)

    def __repr__(self):
        return "Params(" + ", ".join(f"{f}={getattr(self, f)!r}" for f in _PARAM_FIELDS) + ")"

    def topk_total(self):
        """blocks a query selects in all: topk + local_blocks, saturated to int32 (infllm_params_topk_total)"""
        return int(_lib.infllm_params_topk_total(C.byref(self._c(BACKEND_CPU))))

    def _c(self, backend, stream=None):
        """a fresh infllm_params (the call fills its workspace) from a struct made once per set of values"""
        cc = self.__dict__.get("_cc")
        if cc is None:
            cc = _capi.ParamsC()
            for f in _PARAM_FIELDS:
                if f != "mode":
                    setattr(cc, f, getattr(self, f))
            cc.mode = _capi.MODES[self.mode]
            cc.exact_lse = int(self.exact_lse)
            self.__dict__["_cc"] = cc
        c = _capi.ParamsC.from_buffer_copy(cc)
        c.backend = backend
        c.cuda_stream = stream
        return c


_DEFAULT_PARAMS = Params()  # what a call without params= or overrides runs with (never handed out)


def _params(params, overrides):
    if params is not None and not isinstance(params, Params):
        raise TypeError(f"params must be an infllm.Params, not {type(params).__name__}")
    p = params if params is not None else _DEFAULT_PARAMS
    return p.replace(**overrides) if overrides else p


# ------------------------------------------------------------------------------------------- arrays ----
_T = None  # the torch module, once the caller has imported it (the package never imports it itself)
_TORCH_CODES = None


def _torch():
    global _T, _TORCH_CODES
    if _T is None:
        _T = sys.modules.get("torch")
        if _T is not None:
            _TORCH_CODES = {_T.float32: _capi.DTYPE_F32, _T.float16: _capi.DTYPE_F16, _T.bfloat16: _capi.DTYPE_BF16,
                            _T.int32: "i32"}
    return _T


def _is_torch(x):
    t = _T or _torch()
    return t is not None and isinstance(x, t.Tensor)


_NUMPY_CODES = None


class _Arr:
    """one tensor argument: the object kept alive for the call, its pointer, dtype code and device"""
    __slots__ = ("obj", "torch", "cuda", "dtype", "shape", "ptr")

    def __init__(self, x, name, kinds):
        global _NUMPY_CODES
        if _is_torch(x):
            cuda = x.is_cuda
            if not cuda and x.device.type != "cpu":
                raise ValueError(f"{name}: tensors on {x.device} are not supported (cpu or cuda)")
            if x.layout != _T.strided:
                raise ValueError(f"{name}: {x.layout} tensors are not supported (dense, strided ones)")
            code = _TORCH_CODES.get(x.dtype)
            self.obj, self.torch, self.cuda = x if x.is_contiguous() else x.contiguous(), True, cuda
        else:
            np = _numpy()
            x = np.ascontiguousarray(x)
            if _NUMPY_CODES is None:
                _NUMPY_CODES = {np.dtype(np.float32): _capi.DTYPE_F32, np.dtype(np.float16): _capi.DTYPE_F16,
                                np.dtype(np.uint16): _capi.DTYPE_BF16, np.dtype(np.int32): "i32"}
            code = _NUMPY_CODES.get(x.dtype)
            self.obj, self.torch, self.cuda = x, False, False
        if code is None or code not in kinds:
            want = {("i32",): "int32", (_capi.DTYPE_F32,): "float32", (_capi.DTYPE_F16,): "float16, as q",
                    (_capi.DTYPE_BF16,): "bfloat16 (NumPy: uint16 bits), as q"}.get(
                tuple(kinds), "float32, float16 or bfloat16 (NumPy: uint16 holding bf16 bits)")
            raise TypeError(f"{name}: dtype {x.dtype} is not supported (expected {want})")
        self.dtype = code
        self.shape = tuple(self.obj.shape)
        self.ptr = _data_ptr(self.obj) if self.torch else self.obj.ctypes.data

    def device(self):
        return self.obj.device if self.torch else "cpu"

    def where(self):
        """(kind, device index) for comparing arguments' places"""
        return (self.torch, self.obj.get_device()) if self.torch else (False, -1)

    def elsewhere(self, cuda, device):
        """whether this array is not where a call of that kind (CUDA or host) on that CUDA device reads"""
        return self.cuda != cuda or (cuda and self.obj.device != device)


def _stream(device):
    """the raw cudaStream_t of torch's current stream on device (torch's private fast accessor where it has one)"""
    raw = getattr(_T._C, "_cuda_getCurrentRawStream", None)
    return raw(device.index) if raw is not None else _T.cuda.current_stream(device).cuda_stream


_FLOAT = (_capi.DTYPE_F32, _capi.DTYPE_F16, _capi.DTYPE_BF16)


def _numpy():
    import numpy
    return numpy


def _empty(like, shape, dtype):
    """an output of dtype (a storage dtype code, or "i32") on like's device and kind"""
    if like.torch:
        t = _torch()
        td = {_capi.DTYPE_F32: t.float32, _capi.DTYPE_F16: t.float16, _capi.DTYPE_BF16: t.bfloat16,
              "i32": t.int32}[dtype]
        return t.empty(shape, dtype=td, device=like.obj.device)
    np = _numpy()
    nd = {_capi.DTYPE_F32: np.float32, _capi.DTYPE_F16: np.float16, _capi.DTYPE_BF16: np.uint16,
          "i32": np.int32}[dtype]
    return np.empty(shape, dtype=nd)


_EMPTY_PTRS = {}  # device -> a small allocation whose address stands in for empty tensors' (never read or written)


def _data_ptr(t):
    """a torch tensor's data pointer. torch gives an empty tensor none (0), which the library refuses for every
    tensor argument, empty or not ("q is NULL"; NumPy's empty arrays have an address): those get the address of a
    small allocation on their device (the library neither reads nor writes an empty tensor, and never takes two
    empty ranges for overlapping)"""
    p = t.data_ptr()
    if p == 0:
        pad = _EMPTY_PTRS.get(t.device)
        if pad is None:
            pad = _EMPTY_PTRS.setdefault(t.device, _T.empty(256, dtype=_T.uint8, device=t.device))
        p = pad.data_ptr()
    return p


def _ptr(x):
    return None if x is None else (_data_ptr(x) if _is_torch(x) else x.ctypes.data)


class _Call:
    """the arrays, layout and params of one library call: shapes checked, cu_seqlens placed where the
    backend reads them, the batched [B, T, H, D] layout flattened, the CUDA stream and device chosen"""

    def __init__(self, q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, params, backend,
                 need_host_lengths=False, kv_name="k"):
        self.q = _Arr(q, "q", _FLOAT)
        self.k = _Arr(k, kv_name, _FLOAT)
        self.v = _Arr(v, "v", _FLOAT) if v is not None else None
        arrs = [a for a in (self.q, self.k, self.v) if a is not None]
        if len({a.dtype for a in arrs}) != 1:
            raise TypeError("q, k and v must have one dtype, got "
                            + ", ".join(str(a.obj.dtype) for a in arrs))
        if len({a.where() for a in arrs}) != 1:
            raise ValueError("q, k and v must be the same kind of array on one device, got "
                             + ", ".join(f"{type(a.obj).__name__} on {a.device()}" for a in arrs))
        self.cuda = self.q.cuda
        if backend is None:
            backend = "cuda" if self.cuda else "cpu"
        if backend not in _capi.BACKENDS:
            raise ValueError(f"backend {backend!r} is not one of cpu, ref, cuda")
        self.backend = _capi.BACKENDS[backend]
        if self.cuda != (self.backend == BACKEND_CUDA):
            raise ValueError(f"backend {backend!r} with {'CUDA' if self.cuda else 'host'} tensors: the "
                             + ("cuda backend takes CUDA tensors" if not self.cuda else
                                "cpu and ref backends take host tensors"))
        nd = len(self.q.shape)
        if nd not in (3, 4) or len(self.k.shape) != nd or (self.v and self.v.shape != self.k.shape):
            raise ValueError(f"q {self.q.shape}, {kv_name} {self.k.shape}"
                             + (f", v {self.v.shape}" if self.v else "") +
                             ": expected q [total_q, Hq, D] and k / v [total_k, Hkv, D] of one shape, or the batched "
                             "[B, Tq, Hq, D] and [B, Tk, Hkv, D]")
        self.batched = nd == 4
        if self.batched:
            if cu_seqlens_q is not None or cu_seqlens_k is not None:
                raise ValueError("cu_seqlens with batched [B, T, H, D] tensors: give one or the other")
            B, Tq, Tk = self.q.shape[0], self.q.shape[1], self.k.shape[1]
            if self.k.shape[0] != B:
                raise ValueError(f"q has {B} sequences, {kv_name} {self.k.shape[0]}")
            if B < 1:
                raise ValueError("batched [B, T, H, D] tensors need B >= 1 sequence")
            self.batch_shape = (B, Tq)
            for a in arrs:
                a.shape = (a.shape[0] * a.shape[1],) + a.shape[2:]
            cu_seqlens_q = [i * Tq for i in range(B + 1)]
            cu_seqlens_k = [i * Tk for i in range(B + 1)]
        self.total_q, self.Hq, self.D = self.q.shape
        self.total_k, self.Hkv = self.k.shape[0], self.k.shape[1]
        if self.k.shape[2] != self.D:
            raise ValueError(f"q has head_dim {self.D}, {kv_name} {self.k.shape[2]}")
        self.params = params
        self._lengths(cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, need_host_lengths)
        stream = None
        if self.cuda:
            self.device = self.q.obj.device
            stream = _stream(self.device)
        self.p = params._c(self.backend, stream)
        self.l = _capi.LayoutC(dtype=self.q.dtype, num_seqs=self.num_seqs, cu_seqlens_q=_ptr(self.cu_q),
                               cu_seqlens_k=_ptr(self.cu_k), total_q=self.total_q, total_k=self.total_k,
                               num_q_heads=self.Hq, num_kv_heads=self.Hkv, head_dim=self.D,
                               max_seqlen_q=self.max_q, max_seqlen_k=self.max_k)
        self.keep = []

    def _lengths(self, cu_q, cu_k, max_q, max_k, need_host):
        """cu_seqlens: None (one sequence), a list / tuple / NumPy array / torch tensor of int. The host
        backends read host int32 arrays, CUDA device int32 tensors (with max_seqlen_q / _k)."""
        if (cu_q is None) != (cu_k is None):
            raise ValueError("give both cu_seqlens_q and cu_seqlens_k, or neither (one sequence)")
        max_q = None if max_q is None else _int(max_q, "max_seqlen_q")
        max_k = None if max_k is None else _int(max_k, "max_seqlen_k")
        self.host_q = self.host_k = None
        if cu_q is None:
            self.num_seqs, self.cu_q, self.cu_k = 1, None, None
            self.host_q, self.host_k = [0, self.total_q], [0, self.total_k]
            self.max_q = max_q if max_q is not None else self.total_q
            self.max_k = max_k if max_k is not None else self.total_k
            return
        dev_q, dev_k = (_is_torch(x) and x.is_cuda for x in (cu_q, cu_k))
        if (dev_q or dev_k) and not self.cuda:
            raise ValueError("cu_seqlens on a CUDA device with host tensors")
        if need_host or max_q is None or max_k is None or not (dev_q and dev_k):
            # host copies (reading CUDA offsets is a sync; without them the CUDA layout needs the maxima given)
            self.host_q, self.host_k = _host_offsets(cu_q, "cu_seqlens_q"), _host_offsets(cu_k, "cu_seqlens_k")
        sizes = {len(cu_q) if not _is_torch(cu_q) else cu_q.numel(), len(cu_k) if not _is_torch(cu_k) else cu_k.numel()}
        if len(sizes) != 1 or min(sizes) < 2:
            raise ValueError(f"cu_seqlens_q and cu_seqlens_k need num_seqs + 1 >= 2 entries each, got {sorted(sizes)}")
        self.num_seqs = sizes.pop() - 1
        if self.host_q is not None:
            # the host backends check the offsets themselves; the GPU cannot read them first
            lq, lk = _offset_lengths(self.host_q, self.host_k, self.total_q, self.total_k, max_q, max_k, self.cuda)
            self.max_q = max_q if max_q is not None else max(max(lq), 0)
            self.max_k = max_k if max_k is not None else max(max(lk), 0)
        else:
            self.max_q, self.max_k = int(max_q), int(max_k)
        if self.cuda:
            t = _torch()
            self.cu_q, self.cu_k = ((x if dev else t.tensor(h)).to(device=self.q.obj.device, dtype=t.int32).contiguous()
                                    for x, dev, h in ((cu_q, dev_q, self.host_q), (cu_k, dev_k, self.host_k)))
        else:
            np = _numpy()
            self.cu_q = np.ascontiguousarray(self.host_q, dtype=np.int32)
            self.cu_k = np.ascontiguousarray(self.host_k, dtype=np.int32)

    def workspace(self, size_fn, *extra):
        """CUDA: p->workspace from torch's allocator (stream-ordered on the current stream), sized by the
        entry point's size function; nothing on the host backends"""
        if not self.cuda:
            return
        n = C.c_size_t()
        _check(size_fn(C.byref(self.p), C.byref(self.l), *extra, C.byref(n)), size_fn.__name__)
        if n.value:
            ws = _torch().empty(n.value, dtype=_torch().uint8, device=self.device)
            self.keep.append(ws)
            self.p.workspace, self.p.workspace_bytes = ws.data_ptr(), n.value

    def run(self, fn, *args):
        if self.cuda and _T.cuda.current_device() != self.device.index:  # the library runs on the current device
            with _T.cuda.device(self.device):
                _check(fn(C.byref(self.p), C.byref(self.l), *args), fn.__name__)
        else:
            _check(fn(C.byref(self.p), C.byref(self.l), *args), fn.__name__)

    def topk_out(self):
        """top-k columns of select_blocks: infllm_get_sizes on the host; on CUDA from max_seqlen_k, as the
        library sizes them there"""
        if not self.cuda:
            s = _capi.SizesC()
            _check(_lib.infllm_get_sizes(C.byref(self.p), C.byref(self.l), C.byref(s)), "infllm_get_sizes")
            return s.topk_out
        nblocks = (self.max_k + self.params.block_size - 1) // self.params.block_size if self.params.block_size > 0 else 0
        return min(self.params.topk_total(), nblocks)

    def out_shape(self, x):
        """an output [total_q, ...] in the caller's layout ([B, Tq, ...] when the call was batched)"""
        if not self.batched:
            return x
        return x.reshape(self.batch_shape + tuple(x.shape[1:]))


def _int(x, name, bits=32):
    """an integer argument (Python, NumPy or 0-d torch integer; not a bool, float or string) in the range of the C
    type of `bits` bits, which ctypes would otherwise wrap it to silently"""
    if isinstance(x, bool) or type(x).__name__ == "bool_":
        raise TypeError(f"{name} must be an integer, not {type(x).__name__}")
    try:
        v = operator.index(x)
    except TypeError:
        raise TypeError(f"{name} must be an integer, not {type(x).__name__}") from None
    if not -2**(bits - 1) <= v < 2**(bits - 1):
        raise ValueError(f"{name} = {v} is outside the int{bits} range")
    return v


def _offset_lengths(hq, hk, total_q, total_k, max_q, max_k, check):
    """the sequence lengths (lq, lk) of host offsets; with check, the offsets and given maxima checked as the
    CUDA backend needs them (it cannot read device offsets before its kernels run)"""
    lq = [b - a for a, b in zip(hq, hq[1:])]
    lk = [b - a for a, b in zip(hk, hk[1:])]
    if check:
        for name, off, lens, total in (("cu_seqlens_q", hq, lq, total_q), ("cu_seqlens_k", hk, lk, total_k)):
            if off[0] != 0 or min(lens) < 0 or off[-1] != total:
                raise ValueError(f"{name} {off[:8]}{'...' if len(off) > 8 else ''}: offsets must start at 0, "
                                 f"not decrease and end at {total}")
        if (max_q is not None and max_q < max(lq)) or (max_k is not None and max_k < max(lk)):
            raise ValueError(f"max_seqlen_q {max_q} / max_seqlen_k {max_k}: below the longest sequence's "
                             f"{max(lq)} queries / {max(lk)} keys")
    return lq, lk


def _host_offsets(cu, name):
    vals = cu.tolist() if _is_torch(cu) else list(cu)
    out = []
    for x in vals:
        # integers, or floats of integral value (NumPy's float32 is no Python float: int() truncated it silently)
        if isinstance(x, numbers.Real) and not isinstance(x, numbers.Integral) and float(x).is_integer():
            x = int(x)
        try:
            out.append(_int(x, name))
        except TypeError:
            raise TypeError(f"{name}: expected integers, got {x!r} in {vals[:4]!r}") from None
        except ValueError:
            raise ValueError(f"{name}: offsets outside the int32 range") from None
    return out


def _lse_out(c):
    return _empty(c.q, (c.total_q, c.Hq), _capi.DTYPE_F32)


def _grad_enabled(*xs):
    t = _torch()
    return t is not None and t.is_grad_enabled() and any(_is_torch(x) and x.requires_grad for x in xs)


def _compiling(*xs):
    """whether torch.compile is tracing this call with torch tensors: it then runs through the torch custom
    operators of _ops (torch >= 2.4; older torch keeps the plain path, a graph break)"""
    t = _T or _torch()
    if t is None or not all(isinstance(x, t.Tensor) for x in xs):
        return False
    comp = getattr(getattr(t, "compiler", None), "is_compiling", None)
    if comp is None or not comp():
        return False
    from . import _ops
    return _ops.AVAILABLE


# ------------------------------------------------------------------------------------------ forward ----
def attention(q, k, v, cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=None, max_seqlen_k=None, *,
              params=None, backend=None, return_lse=False, **overrides):
    """InfLLM-V2 attention with the dense / sparse switch per sequence (infllm_attention): out [total_q, Hq, D]
    (and lse [total_q, Hq] float32 with return_lse). Differentiable for torch tensors that require grad."""
    if _compiling(q, k, v):
        from . import _ops
        out, lse = _ops.attention(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, params, overrides,
                                  backend, return_lse)
        return (out, lse) if return_lse else out
    p = _params(params, overrides)
    if _grad_enabled(q, k, v):
        from . import _autograd
        out, lse = _autograd.attention(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, p, backend)
        return (out, lse) if return_lse else out
    return _attention_call(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, p, backend, return_lse)


def _attention_call(q, k, v, cu_q, cu_k, max_q, max_k, p, backend, return_lse):
    """one infllm_attention call (no autograd): out, or (out, lse)"""
    c = _Call(q, k, v, cu_q, cu_k, max_q, max_k, p, backend)
    out = _empty(c.q, (c.total_q, c.Hq, c.D), c.q.dtype)
    lse = _lse_out(c) if return_lse else None
    c.workspace(_lib.infllm_attention_workspace_size)
    c.run(_lib.infllm_attention, c.q.ptr, c.k.ptr, c.v.ptr, _ptr(out), _ptr(lse))
    return (c.out_shape(out), c.out_shape(lse)) if return_lse else c.out_shape(out)


def select_blocks(q, k, cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=None, max_seqlen_k=None, *,
                  params=None, backend=None, **overrides):
    """The blocks each query's sparse path attends (infllm_select_blocks: compression, stage 1, block scores,
    top-k; mode and dense_len not applied): topk_idx [Hkv, total_q, topk_out] int32, ascending, -1 padded."""
    if _compiling(q, k):
        from . import _ops
        return _ops.select_blocks(q, k, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, params, overrides,
                                  backend)
    p = _params(params, overrides)
    return _select_call(q, k, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, p, backend)


def _select_call(q, k, cu_q, cu_k, max_q, max_k, p, backend):
    c = _Call(q, k, None, cu_q, cu_k, max_q, max_k, p, backend)
    idx = _empty(c.q, (c.Hkv, c.total_q, c.topk_out()), "i32")
    c.workspace(_lib.infllm_select_blocks_workspace_size)
    c.run(_lib.infllm_select_blocks, c.q.ptr, c.k.ptr, _ptr(idx))
    return idx


def _topk_arg(c, topk_idx):
    t = _Arr(topk_idx, "topk_idx", ("i32",))
    if t.elsewhere(c.cuda, c.q.device()):
        raise ValueError(f"topk_idx on {t.device()} must be on the same device as q ({c.q.device()})")
    if len(t.shape) != 3 or t.shape[0] != c.Hkv or t.shape[1] != c.total_q:
        raise ValueError(f"topk_idx {t.shape}: expected [Hkv, total_q, cols] = [{c.Hkv}, {c.total_q}, cols]")
    c.keep.append(t)
    return t


def sparse_attention(q, k, v, topk_idx, cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=None,
                     max_seqlen_k=None, *, params=None, backend=None, **overrides):
    """Stage 2 on a given selection (infllm_sparse_attention): query t, head h attends its keys in the blocks
    listed in topk_idx[h // G][t] (-1 and out-of-range entries ignored). Returns (out, lse); out is
    differentiable for torch tensors that require grad (the selection fixed)."""
    if _compiling(q, k, v):
        from . import _ops
        return _ops.sparse_attention(q, k, v, topk_idx, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                                     params, overrides, backend)
    p = _params(params, overrides)
    if _grad_enabled(q, k, v):
        from . import _autograd
        dev = next(x.device for x in (q, k, v) if _is_torch(x))  # (a NumPy one among them: _Call's message)
        idx = topk_idx if _is_torch(topk_idx) else _T.as_tensor(topk_idx, device=dev)
        lay = (cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k)
        return _autograd._Attn.apply(q, k, v, idx, lay, p, backend)
    return _sparse_call(q, k, v, topk_idx, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, p, backend)


def _sparse_call(q, k, v, topk_idx, cu_q, cu_k, max_q, max_k, p, backend):
    c = _Call(q, k, v, cu_q, cu_k, max_q, max_k, p, backend)
    t = _topk_arg(c, topk_idx)
    out = _empty(c.q, (c.total_q, c.Hq, c.D), c.q.dtype)
    lse = _lse_out(c)
    c.workspace(_lib.infllm_sparse_attention_workspace_size, t.shape[2])
    c.run(_lib.infllm_sparse_attention, c.q.ptr, c.k.ptr, c.v.ptr, t.ptr, t.shape[2], _ptr(out), _ptr(lse))
    return c.out_shape(out), c.out_shape(lse)


def dense_attention(q, k, v, cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=None, max_seqlen_k=None, *,
                    params=None, backend=None, **overrides):
    """Dense causal attention, bottom-right aligned (infllm_dense_attention). Returns (out, lse); out is
    differentiable for torch tensors that require grad."""
    if _compiling(q, k, v):
        from . import _ops
        return _ops.dense_attention(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, params,
                                    overrides, backend)
    p = _params(params, overrides)
    if _grad_enabled(q, k, v):
        from . import _autograd
        lay = (cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k)
        return _autograd._Attn.apply(q, k, v, None, lay, p, backend)
    return _dense_call(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, p, backend)


def _dense_call(q, k, v, cu_q, cu_k, max_q, max_k, p, backend):
    c = _Call(q, k, v, cu_q, cu_k, max_q, max_k, p, backend)
    out = _empty(c.q, (c.total_q, c.Hq, c.D), c.q.dtype)
    lse = _lse_out(c)
    c.workspace(_lib.infllm_dense_attention_workspace_size)
    c.run(_lib.infllm_dense_attention, c.q.ptr, c.k.ptr, c.v.ptr, _ptr(out), _ptr(lse))
    return c.out_shape(out), c.out_shape(lse)


# ----------------------------------------------------------------------------------------- backward ----
def _backward(c, lse, dout, out, extra_fn_args, fn, size_fn, size_extra):
    """dq, dk, dv of one backward call (the _out entry points: CUDA takes the forward's out when given)"""
    lse_a = _Arr(lse, "lse", (_capi.DTYPE_F32,))
    d = _Arr(dout, "dout", (c.q.dtype,))
    o = _Arr(out, "out", (c.q.dtype,)) if out is not None else None
    want_q = (c.total_q, c.Hq, c.D)
    for a, name, shape in ((lse_a, "lse", (c.total_q, c.Hq)), (d, "dout", want_q), (o, "out", want_q)):
        if a is None:
            continue
        given, want = a.shape, (c.batch_shape + shape[1:] if c.batched else shape)  # the caller's layout
        if c.batched:
            a.shape = (a.shape[0] * a.shape[1],) + a.shape[2:] if len(a.shape) >= 2 else a.shape
        if a.shape != shape or a.elsewhere(c.cuda, c.q.device()):
            raise ValueError(f"{name} {given} on {a.device()}: expected {want} on {c.q.device()}")
    c.keep += [lse_a, d, o]
    dq = _empty(c.q, want_q, c.q.dtype)
    dk = _empty(c.q, (c.total_k, c.Hkv, c.D), c.q.dtype)
    dv = _empty(c.q, (c.total_k, c.Hkv, c.D), c.q.dtype)
    c.workspace(size_fn, *size_extra)
    c.run(fn, c.q.ptr, c.k.ptr, c.v.ptr, *extra_fn_args, o.ptr if o else None, lse_a.ptr, d.ptr,
          _ptr(dq), _ptr(dk), _ptr(dv))
    if c.batched:
        B = c.batch_shape[0]
        return c.out_shape(dq), dk.reshape((B, -1) + tuple(dk.shape[1:])), dv.reshape((B, -1) + tuple(dv.shape[1:]))
    return dq, dk, dv


def sparse_attention_backward(q, k, v, topk_idx, lse, dout, cu_seqlens_q=None, cu_seqlens_k=None,
                              max_seqlen_q=None, max_seqlen_k=None, *, out=None, params=None, backend=None,
                              **overrides):
    """Gradients of sparse_attention with the selection fixed (infllm_sparse_attention_backward_out):
    (dq, dk, dv). lse is the forward's; out (optional) lets CUDA skip recomputing the forward."""
    if _compiling(q, k, v):
        from . import _ops
        return _ops.backward(q, k, v, topk_idx, out, lse, dout, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                             max_seqlen_k, params, overrides, backend)
    p = _params(params, overrides)
    return _sparse_bwd_call(q, k, v, topk_idx, lse, dout, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                            out, p, backend)


def _sparse_bwd_call(q, k, v, topk_idx, lse, dout, cu_q, cu_k, max_q, max_k, out, p, backend):
    c = _Call(q, k, v, cu_q, cu_k, max_q, max_k, p, backend)
    t = _topk_arg(c, topk_idx)
    return _backward(c, lse, dout, out, (t.ptr, t.shape[2]), _lib.infllm_sparse_attention_backward_out,
                     _lib.infllm_sparse_attention_backward_workspace_size, (t.shape[2],))


def dense_attention_backward(q, k, v, lse, dout, cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=None,
                             max_seqlen_k=None, *, out=None, params=None, backend=None, **overrides):
    """Gradients of dense_attention (infllm_dense_attention_backward_out): (dq, dk, dv)."""
    if _compiling(q, k, v):
        from . import _ops
        return _ops.backward(q, k, v, None, out, lse, dout, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                             max_seqlen_k, params, overrides, backend)
    p = _params(params, overrides)
    return _dense_bwd_call(q, k, v, lse, dout, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, out, p,
                           backend)


def _dense_bwd_call(q, k, v, lse, dout, cu_q, cu_k, max_q, max_k, out, p, backend):
    c = _Call(q, k, v, cu_q, cu_k, max_q, max_k, p, backend)
    return _backward(c, lse, dout, out, (), _lib.infllm_dense_attention_backward_out,
                     _lib.infllm_dense_attention_backward_workspace_size, ())


# ------------------------------------------------------------------------------------- decode cache ----
_DTYPE_NAMES = {"f32": _capi.DTYPE_F32, "float32": _capi.DTYPE_F32, "f16": _capi.DTYPE_F16,
                "float16": _capi.DTYPE_F16, "bf16": _capi.DTYPE_BF16, "bfloat16": _capi.DTYPE_BF16}


class DecodeCache:
    """A KV cache for one sequence with its c1 / c2 compressed keys kept up to date as tokens arrive
    (infllm_cache): append(k, v) with k, v [n, Hkv, D], then attend(q) with q [n, Hq, D] for the n newest
    tokens (n 1: a decode step). dtype "f32", "f16" or "bf16"; device "cpu" or "cuda" (CUDA: tensors on the
    current CUDA device; appends run on the stream current at creation, attends on the one current at the
    call). Block size, kernel size / stride and the backend are fixed at creation; the other parameters are
    read at each attend. One cache may be used from several threads: its calls take turns (the C cache is not
    locked, and ctypes releases the GIL)."""

    def __init__(self, num_kv_heads, head_dim, capacity, dtype="bf16", device="cpu", *, params=None,
                 **overrides):
        self._c = None
        self._lock = threading.RLock()  # held around every call on the handle (close() included)
        self._ws_sizes = {}
        self.params = _params(params, overrides).replace()  # the cache's own copy
        key = str(dtype).replace("torch.", "")
        if key not in _DTYPE_NAMES:
            raise TypeError(f"DecodeCache dtype {dtype!r}: expected f32, f16 or bf16")
        self.dtype = _DTYPE_NAMES[key]
        device = str(device)
        if device.split(":")[0] not in ("cpu", "cuda"):
            raise ValueError(f"DecodeCache device {device!r}: expected cpu or cuda")
        self.cuda = device.startswith("cuda")
        stream = None
        if self.cuda:
            if _torch() is None:
                import torch  # noqa: F401 (the CUDA cache's tensors are torch tensors)
            t = _torch()
            self.device = t.device(device if ":" in device else f"cuda:{t.cuda.current_device()}")
            stream = _stream(self.device)
        self.num_kv_heads, self.head_dim = _int(num_kv_heads, "num_kv_heads"), _int(head_dim, "head_dim")
        capacity = _int(capacity, "capacity", 64)
        p = self.params._c(BACKEND_CUDA if self.cuda else BACKEND_CPU, stream)
        h = C.c_void_p()
        self._run(lambda: _lib.infllm_cache_create(C.byref(p), self.dtype, self.num_kv_heads, self.head_dim,
                                                   capacity, C.byref(h)), "infllm_cache_create")
        self._c = h.value

    def _run(self, call, what):
        if self.cuda and _T.cuda.current_device() != self.device.index:
            with _T.cuda.device(self.device):
                _check(call(), what)
        else:
            _check(call(), what)

    def _arg(self, x, name, heads):
        a = _Arr(x, name, _FLOAT)
        if a.elsewhere(self.cuda, self.device if self.cuda else None):
            raise ValueError(f"{name} on {a.device()} for a {'CUDA' if self.cuda else 'host'} cache"
                             + (f" on {self.device}" if self.cuda else ""))
        if a.dtype != self.dtype:
            raise TypeError(f"{name}: dtype {a.obj.dtype} for a cache of {infllm_dtype_name(self.dtype)}")
        if len(a.shape) != 3 or (heads is not None and a.shape[1] != heads) or a.shape[2] != self.head_dim:
            raise ValueError(f"{name} {a.shape}: expected [n, {heads if heads is not None else 'Hq'}, {self.head_dim}]")
        return a

    def _handle(self):
        if self._c is None:
            raise ValueError("DecodeCache is closed")
        return self._c

    def append(self, k, v):
        ka, va = self._arg(k, "k", self.num_kv_heads), self._arg(v, "v", self.num_kv_heads)
        if ka.shape != va.shape:
            raise ValueError(f"k {ka.shape} and v {va.shape} differ")
        with self._lock:
            h = self._handle()
            self._run(lambda: _lib.infllm_cache_append(h, ka.ptr, va.ptr, ka.shape[0]), "infllm_cache_append")

    def attend(self, q, *, return_lse=False, params=None, **overrides):
        with self._lock:
            return self._attend(q, return_lse, params, overrides)

    def _attend(self, q, return_lse, params, overrides):
        h = self._handle()
        p = _params(params if params is not None else self.params, overrides)
        qa = self._arg(q, "q", None)
        n, hq = qa.shape[0], qa.shape[1]
        pc = p._c(BACKEND_CUDA if self.cuda else BACKEND_CPU, _stream(self.device) if self.cuda else None)
        out = _empty(qa, qa.shape, self.dtype)
        lse = _empty(qa, (n, hq), _capi.DTYPE_F32) if return_lse else None
        keep = None
        if self.cuda:
            # the size depends on (n, Hq, the parameters) only: kept for the last parameter struct seen
            cc = p.__dict__["_cc"]
            hit = self._ws_sizes.get((n, hq))
            if hit is None or hit[0] is not cc:
                nb = C.c_size_t()
                self._run(lambda: _lib.infllm_cache_workspace_size(h, C.byref(pc), n, hq, C.byref(nb)),
                          "infllm_cache_workspace_size")
                hit = self._ws_sizes[(n, hq)] = (cc, nb.value)
            if hit[1]:
                keep = _T.empty(hit[1], dtype=_T.uint8, device=self.device)
                pc.workspace, pc.workspace_bytes = keep.data_ptr(), hit[1]
        self._run(lambda: _lib.infllm_cache_attend(h, C.byref(pc), qa.ptr, n, hq, _ptr(out), _ptr(lse)),
                  "infllm_cache_attend")
        del keep  # torch's allocator orders the reuse after the attend on this stream
        return (out, lse) if return_lse else out

    def truncate(self, new_length):
        new_length = _int(new_length, "new_length", 64)
        with self._lock:
            h = self._handle()
            self._run(lambda: _lib.infllm_cache_truncate(h, new_length), "infllm_cache_truncate")

    def __len__(self):
        with self._lock:
            return int(_lib.infllm_cache_length(self._handle()))

    @property
    def capacity(self):
        with self._lock:
            return int(_lib.infllm_cache_capacity(self._handle()))

    @property
    def memory_bytes(self):
        with self._lock:
            return int(_lib.infllm_cache_memory_bytes(self._handle()))

    def close(self):
        lock = self.__dict__.get("_lock")  # absent when __init__ failed before setting it
        if lock is None:
            return
        with lock:
            if self._c is not None:
                _lib.infllm_cache_free(self._c)
                self._c = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass


def infllm_dtype_name(code):
    return {_capi.DTYPE_F32: "f32", _capi.DTYPE_F16: "f16", _capi.DTYPE_BF16: "bf16"}.get(code, str(code))


from . import stages  # noqa: E402,F401 (infllm.stages.selection_stages without a separate import)
