"""The package's torch calls as torch custom operators (torch.library.custom_op, torch >= 2.4), so that
torch.compile(fullgraph=True) traces infllm.attention, select_blocks, sparse_attention, dense_attention and the
two backwards without a graph break, and CUDA graphs (mode="reduce-overhead") capture them. The public functions
come here only while torch.compile traces them (infllm._compiling); eager calls keep the plain path, and each op
runs that path's ctypes call, so a compiled result is the eager one bit for bit.

    infllm::select_blocks              (q, k, LAYOUT, cols, P) -> topk_idx [Hkv, total_q, topk_out] int32
    infllm::sparse_attention           (q, k, v, topk_idx, LAYOUT, P) -> out [total_q, Hq, D], lse [total_q, Hq] f32
    infllm::dense_attention            (q, k, v, LAYOUT, P) -> out, lse
    infllm::sparse_attention_backward  (q, k, v, topk_idx, out, lse, dout, LAYOUT, P) -> dq, dk, dv
    infllm::dense_attention_backward   (q, k, v, out, lse, dout, LAYOUT, P) -> dq, dk, dv
    infllm::attention                  (q, k, v, LAYOUT, return_lse, P) -> out, lse (empty without return_lse):
                                       the library's pipeline, not differentiable (no grad wanted)
    infllm::attention_split            (q, k, v, LAYOUT, P) -> out, lse: the differentiable AUTO switch where
                                       cu_seqlens are tensors (the lengths that decide it are data); its backward
    infllm::attention_split_backward   (q, k, v, out, lse, dout, LAYOUT, P) -> dq, dk, dv selects again

LAYOUT is cu_seqlens_q, cu_seqlens_k (int tensors or None), max_seqlen_q, max_seqlen_k (int or None); P is an
infllm.Params flattened: its integer fields (_INTS' order) as a list, exact_lse, softmax_scale, mode, and the
backend name (None: where the tensors are). q, k, v may be batched [B, T, H, D] (outputs [B, Tq, ...]). The
sparse and dense forwards are differentiable (the selection is not), first order only, as in _autograd.
"""
import operator
from typing import List, Optional, Tuple

import torch

from . import _PARAM_FIELDS, Params, _attention_call, _dense_bwd_call, _dense_call, _offset_lengths, _params, \
    _select_call, _sparse_bwd_call, _sparse_call
from . import _autograd

AVAILABLE = all(hasattr(torch.library, n) for n in ("custom_op", "register_fake", "register_autograd")) and \
    hasattr(torch.compiler, "assume_constant_result")

_INTS = ("block_size", "kernel_size", "kernel_stride", "init_blocks", "local_blocks", "topk", "dense_len",
         "num_threads", "window")
# the annotations custom_op reads for the schemas (typing's forms: torch 2.4 does not read _OI strings)
_T, _OT, _OI, _OS, _LI = torch.Tensor, Optional[torch.Tensor], Optional[int], Optional[str], List[int]
_T2, _T3 = Tuple[torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor, torch.Tensor]


# ------------------------------------------------------------------------------------- params, layout ----
def _flat_values(fields, overrides):
    """(ints, exact_lse, softmax_scale, mode) of the Params with these field values (None: the defaults) and
    keyword overrides, checked as infllm.Params checks them"""
    base = None if fields is None else Params(**dict(zip(_PARAM_FIELDS, fields)))
    p = _params(base, dict(overrides))
    return tuple(getattr(p, f) for f in _INTS), p.exact_lse, p.softmax_scale, p.mode


if AVAILABLE:
    # a constant to dynamo: it runs once while tracing (Params' checks use ctypes, which dynamo cannot trace)
    _flat_const = torch.compiler.assume_constant_result(_flat_values)


def flat(params, overrides):
    """P's first four arguments from params= and the keyword overrides"""
    if params is not None and not isinstance(params, Params):
        raise TypeError(f"params must be an infllm.Params, not {type(params).__name__}")
    fields = None if params is None else tuple(_spec(getattr(params, f)) for f in _PARAM_FIELDS)
    over = tuple(sorted((k, _spec(v)) for k, v in overrides.items()))
    ints, exact, scale, mode = _flat_const(fields, over)
    return list(ints), exact, scale, mode


def _spec(x):
    """x as a constant to dynamo: a number field that changed between calls of a compiled function is a symbol
    there (automatic dynamic), which the constant function cannot take; operator.index / __float__ specialize it
    again (a guard on its value: another value recompiles)"""
    if isinstance(x, (bool, str)):
        return x
    if isinstance(x, float):
        return x.__float__()
    return operator.index(x) if isinstance(x, int) else x


_UNFLAT = {}  # (ints, exact_lse, softmax_scale, mode) -> the Params (its C struct made once)


def _unflat(ints, exact_lse, softmax_scale, mode):
    key = (tuple(ints), exact_lse, softmax_scale, mode)
    p = _UNFLAT.get(key)
    if p is None:
        if len(_UNFLAT) > 256:
            _UNFLAT.clear()
        p = _UNFLAT[key] = Params(**dict(zip(_INTS, ints)), exact_lse=exact_lse, softmax_scale=softmax_scale,
                                  mode=mode)
    return p


def _host_lengths(q, k, cu_q, cu_k, max_q, max_k):
    """LAYOUT for the ops, and the host offsets (host_q, host_k) where known while tracing (None where cu_seqlens
    are tensors: their values are data). Lists / tuples of offsets become int32 tensors on q's device with their
    maxima (the ops then never read offsets back from a GPU), checked here as _Call checks host offsets for CUDA"""
    if cu_q is None and cu_k is None:
        if q.dim() == 4:
            B, Tq, Tk = q.shape[0], q.shape[1], k.shape[1]
            return (None, None, max_q, max_k), ([i * Tq for i in range(B + 1)], [i * Tk for i in range(B + 1)])
        return (None, None, max_q, max_k), ([0, q.shape[0]], [0, k.shape[0]])
    if not (isinstance(cu_q, (list, tuple)) and isinstance(cu_k, (list, tuple))):
        cu_q, cu_k = (x if x is None or isinstance(x, torch.Tensor) else torch.as_tensor(x) for x in (cu_q, cu_k))
        return (cu_q, cu_k, max_q, max_k), None
    hq, hk = [int(x) for x in cu_q], [int(x) for x in cu_k]
    if len(hq) != len(hk) or len(hq) < 2:
        raise ValueError(f"cu_seqlens_q and cu_seqlens_k need num_seqs + 1 >= 2 entries each, got "
                         f"{sorted({len(hq), len(hk)})}")
    lq, lk = _offset_lengths(hq, hk, q.shape[0], k.shape[0], max_q, max_k, q.is_cuda)
    max_q = max_q if max_q is not None else max(max(lq), 0)
    max_k = max_k if max_k is not None else max(max(lk), 0)
    tq, tk = (torch.tensor(h, dtype=torch.int32, device=q.device) for h in (hq, hk))
    return (tq, tk, max_q, max_k), (hq, hk)


def _longest_k(host):
    hk = host[1]
    return max([b - a for a, b in zip(hk, hk[1:])] + [0])


def _topk_out(ints, longest_k):
    """select_blocks' columns: min(topk + local_blocks (int32-saturated), blocks of the longest sequence)"""
    bs, tt = ints[0], min(max(ints[5] + ints[4], -2**31), 2**31 - 1)
    nblocks = (longest_k + bs - 1) // bs if bs > 0 else 0
    return max(min(tt, nblocks), 0)


def _fake_cols(q, k, cu_k, max_k, ints):
    """topk_out as _Call.topk_out gives it where the shapes and arguments decide it (None where the offsets'
    values do: host offsets as tensors, or CUDA ones without max_seqlen_k)"""
    if q.is_cuda and max_k is not None:
        return _topk_out(ints, max_k)  # the CUDA sizes come from max_seqlen_k
    if cu_k is None:
        return _topk_out(ints, k.shape[1] if k.dim() == 4 else k.shape[0])
    return None


def _rows(x):
    """tokens of a [total, H, D] or batched [B, T, H, D] tensor"""
    return x.shape[0] * x.shape[1] if x.dim() == 4 else x.shape[0]


# ----------------------------------------------------------------------------------------------- ops ----
if AVAILABLE:
    from torch.library import custom_op, register_autograd, register_fake

    @custom_op("infllm::select_blocks", mutates_args=())
    def _select_op(q: _T, k: _T, cu_q: _OT, cu_k: _OT, max_q: _OI, max_k: _OI,
                   cols: _OI, ints: _LI, exact_lse: bool, softmax_scale: float, mode: str,
                   backend: _OS) -> _T:
        idx = _select_call(q, k, cu_q, cu_k, max_q, max_k, _unflat(ints, exact_lse, softmax_scale, mode), backend)
        if cols is not None and idx.shape[2] != cols:  # the columns the trace was given: a package bug otherwise
            raise RuntimeError(f"infllm::select_blocks: {idx.shape[2]} columns, {cols} traced")
        return idx

    @register_fake("infllm::select_blocks")
    def _(q, k, cu_q, cu_k, max_q, max_k, cols, ints, exact_lse, softmax_scale, mode, backend):
        if cols is None:
            cols = _fake_cols(q, k, cu_k, max_k, ints)
        if cols is None:
            cols = torch.library.get_ctx().new_dynamic_size()
        return q.new_empty((k.shape[-2], _rows(q), cols), dtype=torch.int32)

    @custom_op("infllm::sparse_attention", mutates_args=())
    def _sparse_op(q: _T, k: _T, v: _T, topk_idx: _T, cu_q: _OT, cu_k: _OT, max_q: _OI,
                   max_k: _OI, ints: _LI, exact_lse: bool, softmax_scale: float, mode: str,
                   backend: _OS) -> _T2:
        return _sparse_call(q, k, v, topk_idx, cu_q, cu_k, max_q, max_k, _unflat(ints, exact_lse, softmax_scale, mode),
                            backend)

    def _fake_out_lse(q):
        return q.new_empty(q.shape), q.new_empty(q.shape[:-1], dtype=torch.float32)

    @register_fake("infllm::sparse_attention")
    def _(q, k, v, topk_idx, *rest):
        return _fake_out_lse(q)

    @custom_op("infllm::dense_attention", mutates_args=())
    def _dense_op(q: _T, k: _T, v: _T, cu_q: _OT, cu_k: _OT, max_q: _OI, max_k: _OI,
                  ints: _LI, exact_lse: bool, softmax_scale: float, mode: str,
                  backend: _OS) -> _T2:
        return _dense_call(q, k, v, cu_q, cu_k, max_q, max_k, _unflat(ints, exact_lse, softmax_scale, mode), backend)

    @register_fake("infllm::dense_attention")
    def _(q, k, v, *rest):
        return _fake_out_lse(q)

    @custom_op("infllm::sparse_attention_backward", mutates_args=())
    def _sparse_bwd_op(q: _T, k: _T, v: _T, topk_idx: _T, out: _OT, lse: _T, dout: _T, cu_q: _OT, cu_k: _OT,
                       max_q: _OI, max_k: _OI, ints: _LI, exact_lse: bool,
                       softmax_scale: float, mode: str,
                       backend: _OS) -> _T3:
        return _sparse_bwd_call(q, k, v, topk_idx, lse, dout, cu_q, cu_k, max_q, max_k, out,
                                _unflat(ints, exact_lse, softmax_scale, mode), backend)

    def _fake_grads(q, k, v):
        return q.new_empty(q.shape), q.new_empty(k.shape), q.new_empty(v.shape)

    @register_fake("infllm::sparse_attention_backward")
    def _(q, k, v, *rest):
        return _fake_grads(q, k, v)

    @custom_op("infllm::dense_attention_backward", mutates_args=())
    def _dense_bwd_op(q: _T, k: _T, v: _T, out: _OT, lse: _T, dout: _T, cu_q: _OT, cu_k: _OT,
                      max_q: _OI, max_k: _OI, ints: _LI, exact_lse: bool,
                      softmax_scale: float, mode: str,
                      backend: _OS) -> _T3:
        return _dense_bwd_call(q, k, v, lse, dout, cu_q, cu_k, max_q, max_k, out,
                               _unflat(ints, exact_lse, softmax_scale, mode), backend)

    @register_fake("infllm::dense_attention_backward")
    def _(q, k, v, *rest):
        return _fake_grads(q, k, v)

    @custom_op("infllm::attention", mutates_args=())
    def _attention_op(q: _T, k: _T, v: _T, cu_q: _OT, cu_k: _OT, max_q: _OI, max_k: _OI,
                      return_lse: bool, ints: _LI, exact_lse: bool, softmax_scale: float, mode: str,
                      backend: _OS) -> _T2:
        p = _unflat(ints, exact_lse, softmax_scale, mode)
        if return_lse:
            return _attention_call(q, k, v, cu_q, cu_k, max_q, max_k, p, backend, True)
        out = _attention_call(q, k, v, cu_q, cu_k, max_q, max_k, p, backend, False)
        return out, q.new_empty(0, dtype=torch.float32)

    @register_fake("infllm::attention")
    def _(q, k, v, cu_q, cu_k, max_q, max_k, return_lse, *rest):
        out, lse = _fake_out_lse(q)
        return out, lse if return_lse else q.new_empty(0, dtype=torch.float32)

    @custom_op("infllm::attention_split", mutates_args=())
    def _split_op(q: _T, k: _T, v: _T, cu_q: _OT, cu_k: _OT, max_q: _OI, max_k: _OI,
                  ints: _LI, exact_lse: bool, softmax_scale: float, mode: str,
                  backend: _OS) -> _T2:
        with torch.no_grad():  # the eager differentiable path's forward, run without its graph
            return _autograd.attention(q, k, v, cu_q, cu_k, max_q, max_k, _unflat(ints, exact_lse, softmax_scale, mode),
                                       backend)

    @register_fake("infllm::attention_split")
    def _(q, k, v, *rest):
        return _fake_out_lse(q)

    @custom_op("infllm::attention_split_backward", mutates_args=())
    def _split_bwd_op(q: _T, k: _T, v: _T, out: _T, lse: _T, dout: _T, cu_q: _OT, cu_k: _OT, max_q: _OI,
                      max_k: _OI, ints: _LI, exact_lse: bool, softmax_scale: float, mode: str,
                      backend: _OS) -> _T3:
        return _autograd.split_backward(q, k, v, out, lse, dout, cu_q, cu_k, max_q, max_k,
                                        _unflat(ints, exact_lse, softmax_scale, mode), backend)

    @register_fake("infllm::attention_split_backward")
    def _(q, k, v, *rest):
        return _fake_grads(q, k, v)

    # autograd: q, k, v differentiable, lse not; the backward ops take the forward's out (the _out entry points)
    def _autograd_of(n, bwd_op):
        """setup_context and backward of a forward whose first n inputs are tensors before cu_q, cu_k"""
        def setup_context(ctx, inputs, output):
            ctx.tail = inputs[n + 2:]  # max_q, max_k, P
            ctx.save_for_backward(*inputs[:n + 2], *output)  # q, k, v, [topk_idx], cu_q, cu_k, out, lse
            ctx.mark_non_differentiable(output[1])

        def backward(ctx, dout, _dlse):
            _autograd._first_order_only()
            *qkv, cu_q, cu_k, out, lse = ctx.saved_tensors
            grads = bwd_op(*qkv, out, lse, dout.contiguous(), cu_q, cu_k, *ctx.tail)
            return (*grads,) + (None,) * (n - 3 + 2 + len(ctx.tail))
        return backward, setup_context

    for name, n in (("sparse_attention", 4), ("dense_attention", 3), ("attention_split", 3)):
        bwd, setup = _autograd_of(n, getattr(torch.ops.infllm, name + "_backward"))
        register_autograd("infllm::" + name, bwd, setup_context=setup)


# ------------------------------------------------------------------ the public functions while traced ----
def _grad(*xs):
    return torch.is_grad_enabled() and any(x.requires_grad for x in xs)


def select_blocks(q, k, cu_q, cu_k, max_q, max_k, params, overrides, backend):
    f = flat(params, overrides)
    lay, host = _host_lengths(q, k, cu_q, cu_k, max_q, max_k)
    return _select(q, k, lay, host, f, backend)


def _select(q, k, lay, host, f, backend):
    cols = None
    if host is not None and not (q.is_cuda and lay[3] is not None):  # (CUDA: from max_seqlen_k, in the fake)
        cols = _topk_out(f[0], _longest_k(host))
    return torch.ops.infllm.select_blocks(q.detach(), k.detach(), *lay, cols, *f, backend)


def sparse_attention(q, k, v, topk_idx, cu_q, cu_k, max_q, max_k, params, overrides, backend):
    f = flat(params, overrides)
    lay, _ = _host_lengths(q, k, cu_q, cu_k, max_q, max_k)
    idx = topk_idx if isinstance(topk_idx, torch.Tensor) else torch.as_tensor(topk_idx, device=q.device)
    return torch.ops.infllm.sparse_attention(q, k, v, idx, *lay, *f, backend)


def dense_attention(q, k, v, cu_q, cu_k, max_q, max_k, params, overrides, backend):
    f = flat(params, overrides)
    lay, _ = _host_lengths(q, k, cu_q, cu_k, max_q, max_k)
    return torch.ops.infllm.dense_attention(q, k, v, *lay, *f, backend)


def backward(q, k, v, topk_idx, out, lse, dout, cu_q, cu_k, max_q, max_k, params, overrides, backend):
    """sparse_attention_backward (topk_idx given) or dense_attention_backward"""
    f = flat(params, overrides)
    lay, _ = _host_lengths(q, k, cu_q, cu_k, max_q, max_k)
    if topk_idx is None:
        return torch.ops.infllm.dense_attention_backward(q, k, v, out, lse, dout, *lay, *f, backend)
    return torch.ops.infllm.sparse_attention_backward(q, k, v, topk_idx, out, lse, dout, *lay, *f, backend)


def attention(q, k, v, cu_q, cu_k, max_q, max_k, params, overrides, backend, return_lse):
    """(out, lse) as infllm.attention gives them (lse empty when neither wanted nor differentiated): without grad
    the library's pipeline (one op); with grad the eager differentiable path's steps (_autograd.attention),
    decided here where the lengths are known while tracing (shapes, offsets as lists), else in attention_split"""
    f = flat(params, overrides)
    lay, host = _host_lengths(q, k, cu_q, cu_k, max_q, max_k)
    if not _grad(q, k, v):
        return torch.ops.infllm.attention(q, k, v, *lay, return_lse, *f, backend)
    ints, mode = f[0], f[3]
    if host is None:
        if mode == "auto" and ints[6] >= 0:
            return torch.ops.infllm.attention_split(q, k, v, *lay, *f, backend)
        host = None, None
    sparse = _autograd.sparse_seqs(mode, ints[6], host[1])
    if all(sparse) or not any(sparse):
        if sparse[0]:
            idx = _select(q, k, lay, host if host[0] is not None else None, f, backend)
            return torch.ops.infllm.sparse_attention(q, k, v, idx, *lay, *f, backend)
        return torch.ops.infllm.dense_attention(q, k, v, *lay, *f, backend)
    # a mixed AUTO batch whose lengths are known: its parts as _autograd.attention runs them, as ops
    out = q.new_zeros(q.shape)
    lse = torch.empty(q.shape[0], q.shape[1], dtype=torch.float32, device=q.device)
    for want, seqs, cq, ck in _autograd.parts(host[0], host[1], sparse):
        iq, ik = _autograd.rows(host[0], seqs, q.device), _autograd.rows(host[1], seqs, q.device)
        qp, kp, vp = q.index_select(0, iq), k.index_select(0, ik), v.index_select(0, ik)
        play, phost = _host_lengths(qp, kp, cq, ck, None, None)
        if want:
            idx = _select(qp, kp, play, phost, f, backend)
            o, l_ = torch.ops.infllm.sparse_attention(qp, kp, vp, idx, *play, *f, backend)
        else:
            o, l_ = torch.ops.infllm.dense_attention(qp, kp, vp, *play, *f, backend)
        out = out.index_copy(0, iq, o)
        lse[iq] = l_
    return out, lse
