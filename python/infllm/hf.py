"""InfLLM-V2 attention inside Hugging Face transformers models (Llama, Qwen2 / Qwen3, Mistral, ... : the models
that take `attn_implementation`).

    import infllm.hf
    infllm.hf.register()                                       # attn_implementation="infllm"
    model = AutoModelForCausalLM.from_pretrained(name, attn_implementation="infllm", dtype=torch.bfloat16)
    infllm.hf.configure(model, topk=64, dense_len=8192)       # the InfLLM-V2 parameters (MiniCPM4.1's by default;
                                                               # kept in config.json by save_pretrained)

Each attention layer then runs infllm.attention: dense below dense_len keys, sparse above, on the CPU or the GPU
where the model is, differentiable for training (the selection held fixed, as InfLLM-V2 trains). Batches may be
padded (left or right: each row's tokens one contiguous run, what tokenizers make), packed (position_ids that
restart at 0, or the cu_seq_lens_q / cu_seq_lens_k of DataCollatorWithFlattening) or plain; a padding mask given
directly may be 0 / 1 (bool, integer, float) or additive (0 kept, -inf or finfo.min masked). The model's own
softmax scale is used, and its layers' sliding windows (Mistral's, Qwen2's, Phi-3's: infllm's `window`, on the CPU
and the GPU, for inference and training). Not supported (ValueError): attention dropout
in training, soft-capping, masks other than padding, layers that are not causal (encoders', cross-attention). Generation works with the model's
KV cache (dynamic or static); each step recompresses the cached keys (the stateless call), so long generations are
better served by infllm.DecodeCache or the `infllm run` runtime.
"""
import torch

from . import _PARAM_FIELDS as _FIELDS
from . import Params, attention

NAME = "infllm"


def configure(model, params=None, **overrides):
    """Sets the InfLLM-V2 parameters the model's infllm attention layers use. They are kept on model.config as
    `infllm_params`, a plain dict of Params' fields, so that save_pretrained writes them to config.json and
    from_pretrained brings them back. Returns them as an infllm.Params."""
    p = params if params is not None else Params()
    if not isinstance(p, Params):
        raise TypeError(f"params must be an infllm.Params, not {type(p).__name__}")
    p = p.replace(**overrides)
    model.config.infllm_params = {f: getattr(p, f) for f in _FIELDS}
    return p


_made = {}  # Params made from a config's dict, by its items (a layer call must not rebuild them)


def _params_of(module):
    d = getattr(getattr(module, "config", None), "infllm_params", None)
    if d is None:
        return Params()
    if isinstance(d, Params):
        return d
    if not isinstance(d, dict):
        raise TypeError(f"config.infllm_params must be a dict of infllm.Params fields, not {type(d).__name__}")
    key = tuple(sorted(d.items()))
    p = _made.get(key)
    if p is None:
        p = _made[key] = Params(**d)
    return p


def _keep(mask):
    """a [B, Tk] padding mask as bool (True: the key exists). Bool and integer masks are 0 / 1 (transformers' and
    the tokenizer's); a floating mask is either 0 / 1 too (any value above 0: all must be 0 or 1) or additive (0 where
    kept, below -1e4 or -inf where masked, as transformers' finfo.min); other values (a bias) are refused"""
    if not mask.is_floating_point():
        return mask.to(torch.bool)
    if bool((mask > 0).any()):
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("infllm attention: a floating attention mask with values other than 0 and 1 (a 0 / 1 "
                             "padding mask, or an additive one of 0 and -inf, is taken)")
        return mask == 1
    if not bool(((mask == 0) | (mask < -1e4)).all()):
        raise ValueError("infllm attention: an additive attention mask with values other than 0 and large negatives "
                         "(a bias is not supported: only padding masks)")
    return mask == 0


def _runs(mask, tk):
    """[(start, end)] of each row's one contiguous run of kept keys in a [B, Tk] padding mask"""
    m = _keep(mask)
    n = m.sum(dim=1)
    first = torch.where(n > 0, m.float().argmax(dim=1), torch.zeros_like(n))
    pos = torch.arange(tk, device=m.device)[None, :]
    inside = (pos >= first[:, None]) & (pos < (first + n)[:, None])
    if not torch.equal(inside, m):
        raise ValueError("infllm attention: a padding mask row whose tokens are not one contiguous run")
    return [(int(a), int(a) + int(b)) for a, b in zip(first.tolist(), n.tolist())]


def infllm_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers' attention-function signature: query [B, Hq, Tq, D], key / value [B, Hkv, Tk, D] (after RoPE
    and the KV cache), attention_mask None or a [B, Tk] padding mask (the mask function registered with it; shorter
    than Tk for a static cache, whose keys past it are not written yet);
    returns ([B, Tq, Hq, D], None)"""
    if dropout and module.training:
        raise ValueError("infllm attention: attention dropout is not supported (set attention_dropout 0)")
    for k in ("softcap", "s_aux"):
        if kwargs.get(k) is not None:
            raise ValueError(f"infllm attention: {k} is not supported")
    is_causal = kwargs.get("is_causal")
    if not (is_causal if is_causal is not None else getattr(module, "is_causal", True)):
        raise ValueError("infllm attention is causal; this layer is not (is_causal False: an encoder's or "
                         "cross-attention)")
    p = _params_of(module)
    if scaling is not None:
        p = p.replace(softmax_scale=float(scaling))
    B, Hq, Tq, D = query.shape
    Tk = key.shape[2]
    if attention_mask is not None and attention_mask.dim() == 2 and attention_mask.shape[1] < Tk:
        # a static cache: its keys come allocated to its length, the slots past the mask's not yet written (the
        # queries are the mask's last positions, not the cache's); transformers' flash attention drops them too
        Tk = attention_mask.shape[1]
        key, value = key[:, :, :Tk], value[:, :, :Tk]
    window = kwargs.get("sliding_window")  # the layer's (Mistral, Qwen2, Phi-3): key - query < window
    if window is not None and int(window) < Tk:  # (one as long as the keys changes nothing)
        p = p.replace(window=int(window))
    q, k, v = (x.transpose(1, 2) for x in (query, key, value))  # [B, T, H, D]
    cu_q, cu_k = kwargs.get("cu_seq_lens_q"), kwargs.get("cu_seq_lens_k")
    if (cu_q is None) != (cu_k is None):
        raise ValueError("infllm attention: packed sequences need both cu_seq_lens_q and cu_seq_lens_k")
    if attention_mask is not None and attention_mask.dim() != 2:
        raise ValueError(f"infllm attention: a {attention_mask.dim()}-d attention mask (register() installs the "
                         "padding-mask function this attention takes; other masks are not supported)")
    if cu_q is None and attention_mask is None and B == 1 and Tq == Tk and kwargs.get("position_ids") is not None:
        pos = kwargs["position_ids"].reshape(-1)
        starts = torch.nonzero(pos == 0).reshape(-1).tolist()
        if len(starts) > 1 or (starts and starts[0] != 0):
            if not starts or starts[0] != 0:
                raise ValueError("infllm attention: packed position_ids must start at 0")
            cu_q = cu_k = starts + [Tq]
    if cu_q is not None:  # packed sequences in one row
        if B != 1:
            raise ValueError("infllm attention: packed sequences (cu_seq_lens / position_ids) need batch size 1")
        cu_q = [int(x) for x in (cu_q.tolist() if torch.is_tensor(cu_q) else cu_q)]
        cu_k = [int(x) for x in (cu_k.tolist() if torch.is_tensor(cu_k) else cu_k)]
        out = attention(q[0], k[0], v[0], cu_q, cu_k, params=p)
        return out.unsqueeze(0), None
    if attention_mask is None:
        return attention(q, k, v, params=p), None
    # padded rows: each row's run of keys [s, e), its queries those at key positions Tk - Tq + i inside the run
    # (bottom-right aligned: the last is at e - 1 when the run reaches the queries); rows without a query drop out
    runs = _runs(attention_mask[:, -Tk:], Tk)
    off = Tk - Tq
    rows_q, rows_k, cq, ck = [], [], [0], [0]
    for b, (s, e) in enumerate(runs):
        q0, q1 = max(s, off) - off, e - off
        if q1 <= q0:
            continue
        rows_q.append(torch.arange(b * Tq + q0, b * Tq + q1))
        rows_k.append(torch.arange(b * Tk + s, b * Tk + e))
        cq.append(cq[-1] + q1 - q0)
        ck.append(ck[-1] + e - s)
    qf, kf, vf = q.reshape(B * Tq, Hq, D), k.reshape(B * Tk, -1, D), v.reshape(B * Tk, -1, D)
    out = qf.new_zeros(B * Tq, Hq, D)  # padding queries: 0
    if rows_q:
        iq = torch.cat(rows_q).to(query.device)
        ik = torch.cat(rows_k).to(query.device)
        o = attention(qf.index_select(0, iq), kf.index_select(0, ik), vf.index_select(0, ik), cq, ck, params=p)
        out = out.index_copy(0, iq, o)
    return out.reshape(B, Tq, Hq, D), None


def padding_mask(batch_size, q_length, kv_length, q_offset=0, kv_offset=0, attention_mask=None, **kwargs):
    """the mask function: flash attention's 2-D [B, kv] padding mask (None when nothing is padded), except that
    where the keys will be longer than the tokens written (a static cache: kv_length is its size, q_offset the
    tokens seen) it is all-ones [B, written] rather than None, so that the attention knows which keys exist"""
    from transformers.masking_utils import flash_attention_mask
    m = flash_attention_mask(batch_size, q_length, kv_length, q_offset, kv_offset, attention_mask=attention_mask,
                             **kwargs)
    if m is None:
        written = int(q_offset) + q_length - int(kv_offset)
        if written < int(kv_length):
            m = torch.ones(batch_size, written, dtype=torch.bool, device=kwargs.get("device"))
    return m


def register(name=NAME):
    """Adds the attention function and its mask function (padding masks as 2-D [B, Tk], as flash-attention's)
    to transformers under `name`, so that models load with attn_implementation=name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
    AttentionInterface.register(name, infllm_attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(name, padding_mask)
    return name
