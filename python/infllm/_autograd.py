"""The differentiable infllm.attention for torch tensors: the forward selects blocks (no gradient flows
through compression or top-k, as in InfLLM-V2 training) and runs stage 2 or dense attention, saving what
the library's backward needs; an AUTO batch whose sequences fall on both sides of dense_len is split into
its dense and its sparse sequences (rows gathered and scattered back by differentiable torch indexing)."""
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


def attention(q, k, v, cu_q, cu_k, max_q, max_k, p, backend):
    # the lengths on the host (a sync for CUDA offsets), the shapes checked once
    c = _Call(*(x.detach() if isinstance(x, torch.Tensor) else x for x in (q, k, v)), cu_q, cu_k, max_q, max_k, p,
              backend, need_host_lengths=True)  # (a NumPy argument among them: _Call's message)
    if c.batched:
        B, Tq = c.batch_shape
        out, lse = attention(q.reshape(c.total_q, c.Hq, c.D), k.reshape(c.total_k, c.Hkv, c.D),
                             v.reshape(c.total_k, c.Hkv, c.D), c.host_q, c.host_k, None, None, p, backend)
        return out.reshape(B, Tq, c.Hq, c.D), lse.reshape(B, Tq, c.Hq)
    lk = [b - a for a, b in zip(c.host_k, c.host_k[1:])]
    if p.mode == "dense":
        sparse = [False] * len(lk)
    elif p.mode == "sparse":
        sparse = [True] * len(lk)
    else:
        sparse = [p.dense_len < 0 or n >= p.dense_len for n in lk]
    lay = (c.cu_q, c.cu_k, c.max_q, c.max_k)
    if all(sparse) or not any(sparse):
        return _run(q, k, v, lay, p, backend, sparse[0])
    # mixed AUTO batch: each part gathered into its own varlen batch
    out = q.new_zeros(q.shape)
    lse = torch.empty(c.total_q, c.Hq, dtype=torch.float32, device=q.device)
    for want in (False, True):
        seqs = [b for b, s in enumerate(sparse) if s == want]
        rq = [i for b in seqs for i in range(c.host_q[b], c.host_q[b + 1])]
        rk = [i for b in seqs for i in range(c.host_k[b], c.host_k[b + 1])]
        cq, ck = [0], [0]
        for b in seqs:
            cq.append(cq[-1] + c.host_q[b + 1] - c.host_q[b])
            ck.append(ck[-1] + c.host_k[b + 1] - c.host_k[b])
        iq = torch.tensor(rq, dtype=torch.long, device=q.device)
        ik = torch.tensor(rk, dtype=torch.long, device=q.device)
        o, l = _run(q.index_select(0, iq), k.index_select(0, ik), v.index_select(0, ik), (cq, ck, None, None), p,
                    backend, want)
        out = out.index_copy(0, iq, o)
        lse[iq] = l
    return out, lse

