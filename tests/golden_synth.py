#!/usr/bin/env python3
# golden_synth.py OUTDIR: writes two synthetic golden cases (a varlen decode batch "dec1" and a
# varlen prefill batch "var1") in the layout of shared/golden (README there), computed with a
# float64 numpy emulation of its rules. They are NOT official data: they exist to exercise
# test_golden's generic handling of batches and decode mode, e.g.
#   python3 tests/golden_synth.py /tmp/gsynth && INFLLM_GOLDEN_DIR=/tmp/gsynth build/tests/test_golden
import numpy as np, json, os, sys
def bf16(x):
    u = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7fff + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)
def f32(b): return (b.astype(np.uint32) << 16).view(np.float32)
def mk(name, mode, qlens, klens, Hkv=2, G=16, D=128, init=1, local=2, topk_total=8, seed=3, kernel_rule=False):
    rng = np.random.default_rng(seed)
    Hq = Hkv * G; B, l1, s1, l2, s2 = 64, 32, 16, 128, 64
    tq, tk = sum(qlens), sum(klens)
    q = bf16(rng.standard_normal((tq, Hq, D))); k = bf16(rng.standard_normal((tk, Hkv, D))); v = bf16(rng.standard_normal((tk, Hkv, D)))
    qf, kf, vf = f32(q).astype(np.float64), f32(k), f32(v).astype(np.float64)
    cuq = np.concatenate([[0], np.cumsum(qlens)]).astype(np.int32); cuk = np.concatenate([[0], np.cumsum(klens)]).astype(np.int32)
    n1s = [max(0, (L - l1) // s1 + 1) for L in klens]; n2s = [max(0, (L - l2) // s2 + 1) for L in klens]
    cu1 = np.concatenate([[0], np.cumsum(n1s)]).astype(np.int32); cu2 = np.concatenate([[0], np.cumsum(n2s)]).astype(np.int32)
    def pool(size, stride, ns):
        out = []
        for b, L in enumerate(klens):
            for j in range(ns[b]):
                acc = np.zeros((Hkv, D), np.float32)
                for u in range(size): acc = acc + kf[cuk[b] + stride * j + u]
                out.append(bf16(acc / np.float32(size)))
        return np.array(out, np.uint16).reshape(-1, Hkv, D)
    c1 = pool(l1, s1, n1s); c2 = pool(l2, s2, n2s)
    c1f, c2f = f32(c1).astype(np.float64), f32(c2).astype(np.float64)
    n1max = max(n1s); nbo = -(-max(klens) // B); K = min(topk_total, nbo)
    s = 1 / np.sqrt(D)
    S = np.zeros((Hkv, tq, n1max), np.float32); BS = np.zeros((Hkv, tq, nbo), np.float32); TK = np.zeros((Hkv, tq, K), np.int32)
    out = np.zeros((tq, Hq, D)); lse = np.zeros((tq, Hq)); dense = np.zeros((tq, Hq, D))
    for b in range(len(qlens)):
        for i in range(qlens[b]):
            t = cuq[b] + i; p = klens[b] - qlens[b] + i; qb = p // B
            nv1 = sum(1 for j in range(n1s[b]) if s1 * j + l1 - 1 <= p); nv2 = sum(1 for j in range(n2s[b]) if s2 * j + l2 - 1 <= p)
            if kernel_rule and mode == 'prefill':  # the official kernel's offset formula (SPEC B 5.3)
                def lim(n, st):
                    off = n - (qlens[b] - st + 1) // st
                    return min(n, max(0, (i + 1) // st - 1 + off))
                nv1, nv2 = lim(n1s[b], s1), lim(n2s[b], s2)
            for g in range(Hkv):
                acc = np.zeros(n1max)
                if nv2 > 0:
                    for h in range(g * G, g * G + G):
                        a2 = s * (c2f[cu2[b]:cu2[b] + nv2, g] @ qf[t, h]); m = a2.max(); L2 = m + np.log(np.exp(a2 - m).sum())
                        a1 = s * (c1f[cu1[b]:cu1[b] + nv1, g] @ qf[t, h]); acc[:nv1] += np.exp(a1 - L2)
                S[g, t] = f32(bf16(acc.astype(np.float32)))
                for bb in range(nbo):
                    if bb < init or (qb - local <= bb <= qb): BS[g, t, bb] = np.inf
                    else:
                        lo, hi = max(4 * bb - 1, 0), min(4 * bb + 4, n1s[b])
                        BS[g, t, bb] = S[g, t, lo:hi].max() if hi > lo else -np.inf
                order = sorted(range(nbo), key=lambda x: (-BS[g, t, x], x))[:K]
                sel = sorted(order); sel = [x if x <= qb else -1 for x in sel]; sel = sorted([x for x in sel if x >= 0]) + [x for x in sel if x < 0]
                TK[g, t] = sel
                keys = [j for j in range(p + 1) if (j // B) in set(x for x in sel if x >= 0)]
                for h in range(g * G, g * G + G):
                    for (dst, ks) in ((None, keys), ('d', list(range(p + 1)))):
                        kk = kf[cuk[b] + np.array(ks), g].astype(np.float64); w = s * (kk @ qf[t, h]); m = w.max(); e = np.exp(w - m)
                        o = (e @ vf[cuk[b] + np.array(ks), g]) / e.sum()
                        if dst is None: out[t, h] = o; lse[t, h] = m + np.log(e.sum())
                        else: dense[t, h] = o
    outb = bf16(out.astype(np.float32)); rel = np.linalg.norm(f32(outb) - out) / np.linalg.norm(out)
    d = os.path.join(sys.argv[1], name); os.makedirs(d, exist_ok=True)
    rows = np.arange(tq, dtype=np.int32)
    for fn, a in [('q.bf16', q), ('k.bf16', k), ('v.bf16', v), ('cu_seqlens_q', cuq), ('cu_seqlens_k', cuk), ('cu_seqlens_c1', cu1), ('cu_seqlens_c2', cu2),
                  ('c1.bf16', c1), ('c2.bf16', c2), ('stage1_scores', S), ('block_scores', BS), ('topk_idx', TK), ('out.bf16', outb),
                  ('stage2_lse_ref', lse.astype(np.float32)), ('ref_rows', rows), ('dense_ref', dense.astype(np.float32)), ('stage2_ref', out.astype(np.float32))]:
        np.save(os.path.join(d, fn + '.npy'), a)
    offs = lambda n, st, lq: (n - (lq - st + 1) // st) if (kernel_rule and mode == 'prefill') else 0
    js = {"name": name, "mode": mode, "params": {"head_dim": D, "num_q_heads": Hq, "num_kv_heads": Hkv, "c1_kernel_size": 32, "c1_kernel_stride": 16,
          "c2_kernel_size": 128, "c2_kernel_stride": 64, "block_size": 64, "init_blocks": init, "local_blocks": local, "topk_total": topk_total,
          "softmax_scale": s}, "sequences": [{"q_len": a, "kv_len": b2, "cache_len": b2 - a} for a, b2 in zip(qlens, klens)],
          "totals": {"total_q": int(tq), "total_k": int(tk), "total_n1": int(cu1[-1]), "total_n2": int(cu2[-1]), "n1max": int(n1max), "nblocks_out": int(nbo)},
          "checks": {"stage1": {"kernel_causal_offsets_per_sequence": [{"c1_offset": offs(n1s[b2], 16, qlens[b2]), "c2_offset": offs(n2s[b2], 64, qlens[b2])} for b2 in range(len(qlens))], "official_differs_from_clean_rule": bool(kernel_rule)},
                     "stage2_official_vs_float64_ref": {"rel_err_fro": float(rel) * 1.5}}}
    json.dump(js, open(os.path.join(d, 'case.json'), 'w'), indent=1)
    print(name, 'rel', rel)
if len(sys.argv) != 2: sys.exit('usage: golden_synth.py OUTDIR')
mk('dec1', 'decode', [1, 1, 1, 1], [700, 1000, 129, 64])
mk('var1', 'prefill', [300, 1, 200], [300, 1, 200], Hkv=1, seed=5)
mk('off1', 'prefill', [1023, 250], [1023, 250], Hkv=1, seed=7, kernel_rule=True)
