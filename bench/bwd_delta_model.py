#!/usr/bin/env python3
"""bwd_delta_model.py: a float model (numpy, no GPU) of where Delta comes from in the attention backward, made for
session 41's experiment of Delta from the forward's output, the CUDA backward's way since session 42
(docs/CUDA_NOTES.md "Sessions 40-41", "Session 42"; "ours" below is the statistics pass it replaced).

For random cases shaped like tests/test_cuda_backward.c's (bf16 inputs, q of sd 0.5-3, G 3 / 4 / 16, d 64 / 128,
sparse 64-key blocks at 30% plus the current one, or dense causal) it computes dq four ways and prints each one's
worst error against float64 as a multiple of the test's naive 16-bit backward error and as a fraction of the
test's bound (2 x naive + 4 bf16 unit roundoffs of the largest |dq|):
  naive      the test's naive: scores, scaled scores and P rounded to bf16, Delta = sum P dP in f32;
  ours       the CUDA backward's pass 1: P from f32 scores and the exact lse, Delta in double of unrounded P;
  fwdO_bf16  Delta = dout . O with O the forward's output (sum of bf16(P) v in f32, rounded to bf16);
  fwdO_f32   the same with O not rounded.
P and dS enter the dq product rounded to bf16 in the last three (the tensor cores' operands).

    python3 bench/bwd_delta_model.py [SEED]
    python3 bench/bwd_delta_model.py --sharp    (session 60: a row that one key dominates, f16; sharp_row)
"""
import numpy as np, sys
rng = np.random.default_rng(int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1] != "--sharp" else 1)
def bf16(x):
    x = np.asarray(x, np.float32)
    b = x.view(np.uint32).astype(np.uint64)
    b = (b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000
    return b.astype(np.uint32).view(np.float32)
def case(T, D, G, qsd, sparse):
    q = bf16(rng.normal(0, qsd, (T, G, D))); k = bf16(rng.normal(0, 1, (T, D))); v = bf16(rng.normal(0, 1, (T, D)))
    do = bf16(rng.normal(0, 1, (T, G, D)))
    scale = 1 / np.sqrt(D)
    B = 64
    mask = np.tril(np.ones((T, T), bool))
    if sparse:
        nb = (T + B - 1) // B
        sel = rng.random((T, nb)) < 0.3
        for i in range(T): sel[i, i // B] = True
        m2 = np.repeat(sel, B, axis=1)[:, :T]
        mask &= m2
    res = {}
    # float64 reference
    q64, k64, v64, do64 = (a.astype(np.float64) for a in (q, k, v, do))
    s = np.einsum('tgd,jd->tgj', q64, k64) * scale
    s = np.where(mask[:, None, :], s, -np.inf)
    P = np.exp(s - s.max(-1, keepdims=True)); P /= P.sum(-1, keepdims=True)
    dP = np.einsum('tgd,jd->tgj', do64, v64)
    Dl = (P * dP).sum(-1, keepdims=True)
    dq_ref = np.einsum('tgj,jd->tgd', P * (dP - Dl), k64) * scale
    # naive16 (the test's): scores rounded, scaled rounded, P rounded after normalising, Delta f32 of P as stored
    s32 = np.einsum('tgd,jd->tgj', q, k).astype(np.float32)
    sn = bf16(bf16(s32) * np.float32(scale))
    sn = np.where(mask[:, None, :], sn, -np.inf).astype(np.float32)
    e = np.exp(sn - sn.max(-1, keepdims=True)).astype(np.float32)
    Pn = bf16(e / e.sum(-1, keepdims=True))
    dP32 = np.einsum('tgd,jd->tgj', do, v).astype(np.float32)
    Dn = (Pn * dP32).sum(-1, keepdims=True, dtype=np.float32)
    dSn = bf16(Pn * (dP32 - Dn))
    dq_n = bf16(np.einsum('tgj,jd->tgd', dSn, k).astype(np.float32) * np.float32(scale))
    # ours now: P from f32 scores (exact lse), Delta from unrounded P and f32 dP, P / dS rounded for the MMA
    s32s = np.where(mask[:, None, :], s32 * np.float32(scale), -np.inf).astype(np.float32)
    m = s32s.max(-1, keepdims=True); l = np.exp(s32s - m).sum(-1, keepdims=True, dtype=np.float64)
    lse = (m + np.log(l)).astype(np.float32)
    Pf = np.exp(s32s - lse).astype(np.float32)
    D_ours = (Pf.astype(np.float64) * dP32).sum(-1, keepdims=True).astype(np.float32)
    dq_ours = bf16(np.einsum('tgj,jd->tgd', bf16(Pf * (dP32 - D_ours)), k).astype(np.float32) * np.float32(scale))
    # forward-O: O = sum bf16(P) v in f32, rounded to bf16 (forward output); Delta = dO . O in f32
    O = bf16(np.einsum('tgj,jd->tgd', bf16(Pf), v).astype(np.float32))
    D_fo = (do * O).sum(-1, keepdims=True, dtype=np.float32)
    dq_fo = bf16(np.einsum('tgj,jd->tgd', bf16(Pf * (dP32 - D_fo)), k).astype(np.float32) * np.float32(scale))
    Of = np.einsum('tgj,jd->tgd', bf16(Pf), v).astype(np.float32)
    D_fo32 = (do * Of).sum(-1, keepdims=True, dtype=np.float32)
    dq_fo32 = bf16(np.einsum('tgj,jd->tgd', bf16(Pf * (dP32 - D_fo32)), k).astype(np.float32) * np.float32(scale))
    err = lambda a: np.abs(a - dq_ref).max()
    en = err(dq_n)
    floor = 4 * 2.0**-8 * np.abs(dq_ref).max()
    return {k_: (err(a) / en, err(a) / (2 * en + floor)) for k_, a in [('ours', dq_ours), ('fwdO_bf16', dq_fo), ('fwdO_f32', dq_fo32)]}


def f16(x):
    return np.asarray(x, np.float32).astype(np.float16).astype(np.float32)


def sharp_row(seed, T=325, D=128, fac=3.3, qsd=1.5):
    """Session 60: one f16 query row over T keys at softmax_scale fac / sqrt(D) (test_cuda_backward's random case 8,
    whose dq / dk failed 4x the bound on the GPU with Delta from the rounded O). The forward as the flash kernels
    compute it: P~ = f16(exp(s - m)) unnormalised into O = P~ V / l. dq's error / the test's bound for Delta from
    O rounded to f16 (fwdO16, the CUDA backward until session 60; the _out calls still), from the f32 O (fwdO32,
    the recomputing backward since session 60), and sum P dP in double (exact)."""
    rng = np.random.default_rng(seed)
    q = f16(rng.normal(0, qsd, (1, D))); k = f16(rng.normal(0, 1, (T, D))); v = f16(rng.normal(0, 1, (T, D)))
    do = f16(rng.normal(0, 1, (1, D)))
    sc = np.float32(fac / np.sqrt(D))
    q64, k64, v64, do64 = (a.astype(np.float64) for a in (q, k, v, do))
    s = q64 @ k64.T * float(sc); P = np.exp(s - s.max()); P /= P.sum(); dP = do64 @ v64.T
    dq_ref = f16((P * (dP - (P * dP).sum())) @ k64 * float(sc))
    s32 = (q @ k.T).astype(np.float32); sn = f16(f16(s32) * sc); e = np.exp(sn - sn.max()); Pn = f16(e / e.sum())
    dP32 = (do @ v.T).astype(np.float32); Dn = np.float32((Pn * dP32).sum()); dq_n = f16((f16(Pn * (dP32 - Dn)) @ k) * sc)
    ss = s32 * sc; m = ss.max(); ef = np.exp(ss - m); l = ef.sum(); Of = (f16(ef) @ v) / l; Pf = np.exp(ss - (m + np.log(l)))
    err = lambda a: np.abs(a - dq_ref).max()
    bound = 2 * err(dq_n) + 4 * 2.0**-11 * np.abs(dq_ref).max()
    deltas = [('fwdO16', np.float32((do * f16(Of)).sum())), ('fwdO32', np.float32((do * Of).sum())),
              ('exact', np.float32((Pf.astype(np.float64) * dP32).sum()))]
    return {n: err(f16((f16(Pf * (dP32 - d)) @ k) * sc)) / bound for n, d in deltas}


if len(sys.argv) > 1 and sys.argv[1] == "--sharp":
    for fac in (1.0, 3.3):
        w = {}
        for sd in range(300):
            for n, x in sharp_row(sd, fac=fac).items():
                w.setdefault(n, []).append(x)
        print(f"scale {fac} / sqrt(D), 300 rows: dq error / bound, worst / 99th percentile / median:",
              {n: f"{max(x):.2f} / {np.percentile(x, 99):.2f} / {np.median(x):.2f}" for n, x in w.items()})
    sys.exit(0)
for (T, D, G, qsd, sp) in [(384, 128, 16, 1.5, True), (384, 64, 16, 1.5, True), (256, 128, 4, 1.5, False), (384, 128, 16, 0.5, True), (384, 64, 3, 3.0, True)]:
    r = case(T, D, G, qsd, sp)
    print(T, D, G, qsd, sp, {k_: f"{a:.2f}x naive, {b:.2f} of bound" for k_, (a, b) in r.items()})
