"""The differentiable infllm.attention for torch tensors: the forward selects blocks (no gradient flows
through compression or top-k, as in InfLLM-V2 training) and runs stage 2 or dense attention, saving what
the library's backward needs; an AUTO batch whose sequences fall on both sides of dense_len is split into
its dense and its sparse sequences (rows gathered and scattered back by differentiable torch indexing).
Under torch.compile the same steps run as the operators of _ops; split_backward is the gradient of this path
for infllm::attention_split (offsets as tensors, so the split is decided inside an operator)."""
import torch

from . import dense_attention, dense_attention_backward, select_blocks, sparse_attention, \
    sparse_attention_backward, _Call


def _first_order_only():
    """the library's backward is not differentiable: a backward that would build a graph (create_graph=True, for a
    double backward) raises rather than return gradients without one, which a second-order loss would silently
    take as having no attention terms (once_differentiable is not enough: torch.autograd.grad(..., inputs) skips its
    error node when the inputs are reached another way)"""
    if torch.is_grad_enabled():
        raise RuntimeError("infllm: the attention's backward is not differentiable (create_graph=True, a double "
                           "backward or a gradient penalty through it, is not supported)")


class _Attn(torch.autograd.Function):
    """stage 2 on the selection topk_idx, or dense causal attention when it is None: (out, lse), lse not
    differentiable; the backward is the library's (the _out entry points: CUDA takes the saved output)"""

    @staticmethod
    def forward(ctx, q, k, v, topk_idx, lay, p, backend):
        if topk_idx is None:
            out, lse = dense_attention(q, k, v, *lay, params=p, backend=backend)
        else:
            out, lse = sparse_attention(q, k, v, topk_idx, *lay, params=p, backend=backend)
        ctx.save_for_backward(q, k, v, topk_idx, out, lse)
        ctx.lay, ctx.p, ctx.backend = lay, p, backend
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout, _dlse):
        _first_order_only()
        q, k, v, topk_idx, out, lse = ctx.saved_tensors
        kw = dict(out=out, params=ctx.p, backend=ctx.backend)
        if topk_idx is None:
            dq, dk, dv = dense_attention_backward(q, k, v, lse, dout.contiguous(), *ctx.lay, **kw)
        else:
            dq, dk, dv = sparse_attention_backward(q, k, v, topk_idx, lse, dout.contiguous(), *ctx.lay, **kw)
        return dq, dk, dv, None, None, None, None


def _run(q, k, v, lay, p, backend, sparse):
    idx = None
    if sparse:
        with torch.no_grad():
            idx = select_blocks(q, k, *lay, params=p, backend=backend)
    return _Attn.apply(q, k, v, idx, lay, p, backend)


def sparse_seqs(mode, dense_len, host_k):
    """which sequences run sparse: every one in mode sparse, none in dense, in AUTO those of dense_len keys or
    more (dense_len < 0: all); host_k None (lengths unknown): one entry for all, where the mode decides alone"""
    if host_k is None:
        return [mode == "sparse" or (mode == "auto" and dense_len < 0)]
    return [mode == "sparse" or (mode == "auto" and (dense_len < 0 or b - a >= dense_len))
            for a, b in zip(host_k, host_k[1:])]


def parts(host_q, host_k, sparse):
    """a mixed batch's dense then sparse part: (sparse, its sequences, cu_seqlens_q, cu_seqlens_k) of each"""
    for want in (False, True):
        seqs = [b for b, s in enumerate(sparse) if s == want]
        cq, ck = [0], [0]
        for b in seqs:
            cq.append(cq[-1] + host_q[b + 1] - host_q[b])
            ck.append(ck[-1] + host_k[b + 1] - host_k[b])
        yield want, seqs, cq, ck


def rows(host, seqs, device):
    """the rows of those sequences (seqs non-empty), in order, as an index tensor: an arange a sequence (a list of
    every row cost Python work per token, and torch.compile traces such a list element by element)"""
    return torch.cat([torch.arange(host[b], host[b + 1], dtype=torch.long, device=device) for b in seqs])


def _host_call(q, k, v, cu_q, cu_k, max_q, max_k, p, backend):
    """the lengths on the host (a sync for CUDA offsets), the shapes checked once"""
    return _Call(*(x.detach() if isinstance(x, torch.Tensor) else x for x in (q, k, v)), cu_q, cu_k, max_q, max_k, p,
                 backend, need_host_lengths=True)  # (a NumPy argument among them: _Call's message)


def attention(q, k, v, cu_q, cu_k, max_q, max_k, p, backend):
    c = _host_call(q, k, v, cu_q, cu_k, max_q, max_k, p, backend)
    if c.batched:
        B, Tq = c.batch_shape
        out, lse = attention(q.reshape(c.total_q, c.Hq, c.D), k.reshape(c.total_k, c.Hkv, c.D),
                             v.reshape(c.total_k, c.Hkv, c.D), c.host_q, c.host_k, None, None, p, backend)
        return out.reshape(B, Tq, c.Hq, c.D), lse.reshape(B, Tq, c.Hq)
    sparse = sparse_seqs(p.mode, p.dense_len, c.host_k)
    lay = (c.cu_q, c.cu_k, c.max_q, c.max_k)
    if all(sparse) or not any(sparse):
        return _run(q, k, v, lay, p, backend, sparse[0])
    # mixed AUTO batch: each part gathered into its own varlen batch
    out = q.new_zeros(q.shape)
    lse = torch.empty(c.total_q, c.Hq, dtype=torch.float32, device=q.device)
    for want, seqs, cq, ck in parts(c.host_q, c.host_k, sparse):
        iq, ik = rows(c.host_q, seqs, q.device), rows(c.host_k, seqs, q.device)
        o, l = _run(q.index_select(0, iq), k.index_select(0, ik), v.index_select(0, ik), (cq, ck, None, None), p,
                    backend, want)
        out = out.index_copy(0, iq, o)
        lse[iq] = l
    return out, lse


def split_backward(q, k, v, out, lse, dout, cu_q, cu_k, max_q, max_k, p, backend):
    """dq, dk, dv of attention's (out, lse) with the selection made again: the gradients autograd gives the path
    above, bit for bit (a mixed batch's parts scattered into zeros by index_add, as index_select's backward does)"""
    c = _host_call(q, k, v, cu_q, cu_k, max_q, max_k, p, backend)
    if c.batched:
        raise ValueError("infllm::attention_split takes the varlen layout")
    sparse = sparse_seqs(p.mode, p.dense_len, c.host_k)

    def part(q, k, v, out, lse, dout, lay, want):
        kw = dict(out=out, params=p, backend=backend)
        if not want:
            return dense_attention_backward(q, k, v, lse, dout, *lay, **kw)
        idx = select_blocks(q, k, *lay, params=p, backend=backend)
        return sparse_attention_backward(q, k, v, idx, lse, dout, *lay, **kw)

    with torch.no_grad():
        if all(sparse) or not any(sparse):
            return part(q, k, v, out, lse, dout, (c.cu_q, c.cu_k, c.max_q, c.max_k), sparse[0])
        grads = [torch.zeros_like(x) for x in (q, k, v)]
        for want, seqs, cq, ck in parts(c.host_q, c.host_k, sparse):
            iq, ik = rows(c.host_q, seqs, q.device), rows(c.host_k, seqs, q.device)
            g = part(q.index_select(0, iq), k.index_select(0, ik), v.index_select(0, ik), out.index_select(0, iq),
                     lse.index_select(0, iq), dout.index_select(0, iq), (cq, ck, None, None), want)
            for acc, r, x in zip(grads, (iq, ik, ik), g):
                acc.index_add_(0, r, x)
        return tuple(grads)
