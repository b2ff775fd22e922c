"""The sparse path's selection stage by stage, for looking at what it decides (SPEC B 4-7; the library's
stage ops, as `infllm attn --dump` writes them):

    s = infllm.stages.selection_stages(q, k)     # or with cu_seqlens_q / cu_seqlens_k, params, backend
    s.c1, s.c2                  compressed keys [total_n1 / total_n2, Hkv, D] (q's dtype), s.cu_seqlens_c1 / _c2
    s.stage1_scores             [Hkv, total_q, max_n1] float32: the group's summed softmax scores of the c1 kernels
    s.block_scores              [Hkv, total_q, nblocks] float32: max-pooled, +inf for forced blocks
    s.topk_idx                  [Hkv, total_q, topk_out] int32: the selection (== infllm.select_blocks' but
                                for near-ties that another summation order rounds the other way)

stage1_scores and block_scores grow with total_q x the keys: this is for inspection at moderate lengths, the
fused infllm.select_blocks is what runs at scale. Mode and dense_len are not applied (every sequence is sparse).
"""
import collections
import ctypes as C

from . import _capi, _Call, _check, _empty, _lib, _params, _ptr

Stages = collections.namedtuple("Stages", "c1 c2 cu_seqlens_c1 cu_seqlens_c2 stage1_scores block_scores topk_idx")


def selection_stages(q, k, cu_seqlens_q=None, cu_seqlens_k=None, max_seqlen_q=None, max_seqlen_k=None, *,
                     params=None, backend=None, **overrides):
    p = _params(params, overrides)
    c = _Call(q, k, None, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, p, backend, need_host_lengths=True)
    if c.batched:
        raise ValueError("selection_stages takes the varlen layout (q [total_q, Hq, D] with cu_seqlens), "
                         "not batched [B, T, H, D] tensors")
    # the sizes from the host lengths (infllm_get_sizes reads host offsets; the CUDA layout has device ones)
    np = __import__("numpy")
    hq, hk = np.asarray(c.host_q, dtype=np.int32), np.asarray(c.host_k, dtype=np.int32)
    hp = p._c(_capi.BACKEND_CPU)
    hl = _capi.LayoutC.from_buffer_copy(c.l)
    if c.num_seqs > 1:
        hl.cu_seqlens_q, hl.cu_seqlens_k = hq.ctypes.data, hk.ctypes.data
    s = _capi.SizesC()
    _check(_lib.infllm_get_sizes(C.byref(hp), C.byref(hl), C.byref(s)), "infllm_get_sizes")
    n, dt = c.num_seqs + 1, c.q.dtype
    c1 = _empty(c.q, (s.total_n1, c.Hkv, c.D), dt)
    c2 = _empty(c.q, (s.total_n2, c.Hkv, c.D), dt)
    cu1, cu2 = _empty(c.q, (n,), "i32"), _empty(c.q, (n,), "i32")
    c.run(_lib.infllm_compress_keys, c.k.ptr, _ptr(c1), _ptr(c2), _ptr(cu1), _ptr(cu2))
    scores = _empty(c.q, (c.Hkv, c.total_q, s.max_n1), _capi.DTYPE_F32)
    c.run(_lib.infllm_stage1_scores, c.q.ptr, _ptr(c1), _ptr(c2), _ptr(cu1), _ptr(cu2), _ptr(scores))
    blocks = _empty(c.q, (c.Hkv, c.total_q, s.nblocks_out), _capi.DTYPE_F32)
    c.run(_lib.infllm_block_scores, _ptr(scores), _ptr(blocks))
    idx = _empty(c.q, (c.Hkv, c.total_q, s.topk_out), "i32")
    c.run(_lib.infllm_topk_select, _ptr(blocks), _ptr(idx))
    return Stages(c1, c2, cu1, cu2, scores, blocks, idx)
