#!/usr/bin/env python3
"""The Python package (python/infllm) against float64 NumPy references written here: dense, sparse (on the
package's own selection) and the per-sequence AUTO switch; the backward; the batched [B, T, H, D] layout;
bf16 as uint16 bits; the decode cache bitwise against infllm.attention on each prefix; parameters and
errors. Then, where PyTorch is installed, the differentiable infllm.attention on CPU tensors (gradients
against the references, a mixed dense / sparse AUTO batch), and on a GPU the CUDA backend (bf16 forward
and backward within 2x a naive bf16 computation's error, a CUDA-graph capture bitwise as eager, the decode
cache). Tolerances: 2x the error of a naive same-precision computation (done here) + 4 unit roundoffs of
the largest value (the C tests' rule). The ctypes structs' sizes and field offsets against the C compiler's.

argv[1] is the infllm binary; the library is libinfllm.so beside it.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_counter import Counter, binding_setup, need_modules  # noqa: E402

binding_setup(sys.argv[1])
(np,) = need_modules("numpy")
import infllm  # noqa: E402

c = Counter("py_binding")
check = c.check
rng = np.random.default_rng(4)
U32 = 2.0 ** -24  # f32 unit roundoff
SMALL = dict(block_size=32, kernel_size=16, kernel_stride=8, init_blocks=1, local_blocks=2, topk=2)  # 4 blocks a query


# ------------------------------------------------------------------------------------------ references ----
def seqs_of(cu_q, cu_k):
    return [(cu_q[b], cu_q[b + 1], cu_k[b], cu_k[b + 1]) for b in range(len(cu_q) - 1)]


def allowed(lq, lk, sel_rows, B):
    """[lq, lk] bool: causal (bottom-right), and in a selected block when sel_rows ([lq, cols]) is given"""
    pos = lk - lq + np.arange(lq)
    a = np.arange(lk)[None, :] <= pos[:, None]
    if sel_rows is not None:
        blk = np.arange(lk) // B
        pick = np.zeros((lq, (lk + B - 1) // B + 1), dtype=bool)
        for r in range(lq):
            ok = sel_rows[r][(sel_rows[r] >= 0) & (sel_rows[r] < pick.shape[1])]
            pick[r, ok] = True
        a &= pick[:, blk]
    return a


def forward_ref(q, k, v, cu_q, cu_k, sel, B, scale, dt=np.float64, p_round=None):
    """out, lse of attention in dtype dt (float64: the reference; float32: the naive f32 computation);
    sel [Hkv, total_q, cols] or None (dense). p_round rounds P before P V (a 16-bit naive computation)."""
    q, k, v = q.astype(dt), k.astype(dt), v.astype(dt)
    Hq, Hkv = q.shape[1], k.shape[1]
    G = Hq // Hkv
    out = np.zeros(q.shape, dt)
    lse = np.full(q.shape[:2], -np.inf, np.float64)
    for q0, q1, k0, k1 in seqs_of(cu_q, cu_k):
        for h in range(Hq):
            g = h // G
            a = allowed(q1 - q0, k1 - k0, None if sel is None else sel[g, q0:q1], B)
            s = (q[q0:q1, h] @ k[k0:k1, g].T) * dt(scale)
            s = np.where(a, s, -np.inf)
            m = s.max(axis=1, initial=-np.inf)
            has = np.isfinite(m)
            e = np.where(a, np.exp(s - np.where(has, m, 0)[:, None]), 0)
            tot = e.sum(axis=1)
            pr = e / np.where(has, tot, 1)[:, None]
            if p_round:
                pr = p_round(pr)
            out[q0:q1, h] = pr @ v[k0:k1, g]
            lse[q0:q1, h] = np.where(has, m + np.log(np.where(has, tot, 1)), -np.inf)
    return out, lse


def backward_ref(q, k, v, dout, cu_q, cu_k, sel, B, scale, dt=np.float64):
    """dq, dk, dv; in float32 (dt) the long sums run in order, one term at a time, as a naive backward's loops
    do (dq over the keys, dk / dv over the rows): BLAS's blocked sums would be more accurate than naive"""
    q, k, v, dout = q.astype(dt), k.astype(dt), v.astype(dt), dout.astype(dt)
    Hq, Hkv = q.shape[1], k.shape[1]
    G = Hq // Hkv
    dq, dk, dv = np.zeros(q.shape, dt), np.zeros(k.shape, dt), np.zeros(v.shape, dt)
    naive = dt != np.float64
    for q0, q1, k0, k1 in seqs_of(cu_q, cu_k):
        for h in range(Hq):
            g = h // G
            a = allowed(q1 - q0, k1 - k0, None if sel is None else sel[g, q0:q1], B)
            s = np.where(a, (q[q0:q1, h] @ k[k0:k1, g].T) * dt(scale), -np.inf)
            m = s.max(axis=1, initial=-np.inf)
            has = np.isfinite(m)
            e = np.where(a, np.exp(s - np.where(has, m, 0)[:, None]), 0)
            pr = e / np.where(has, e.sum(axis=1), 1)[:, None]
            dp = dout[q0:q1, h] @ v[k0:k1, g].T
            delta = (pr * dp).sum(axis=1, keepdims=True)
            ds = dt(scale) * pr * (dp - delta)
            if not naive:
                dq[q0:q1, h] = ds @ k[k0:k1, g]
                dk[k0:k1, g] += ds.T @ q[q0:q1, h]
                dv[k0:k1, g] += pr.T @ dout[q0:q1, h]
                continue
            for j in range(k1 - k0):
                dq[q0:q1, h] += ds[:, j:j + 1] * k[k0 + j, g][None, :]
            for r in range(q1 - q0):
                dk[k0:k1, g] += ds[r][:, None] * q[q0 + r, h][None, :]
                dv[k0:k1, g] += pr[r][:, None] * dout[q0 + r, h][None, :]
    return dq, dk, dv


def bound(naive_err, ref):
    """2x the naive same-precision error + 4 f32 unit roundoffs (two ulps) of the largest value, the C tests' rule"""
    return 2 * naive_err + 4 * U32 * float(np.abs(ref).max())


def within(name, got, ref, naive):
    e = np.abs(got.astype(np.float64) - ref)
    err = float(e.max())
    nerr = float(np.abs(naive.astype(np.float64) - ref).max())
    b = bound(nerr, ref)
    check(err <= b, f"{name}: error {err:.3g} <= {b:.3g} (naive f32 {nerr:.3g})")
    if os.environ.get("INFLLM_TEST_VERBOSE"):
        i = np.unravel_index(int(e.argmax()), e.shape)
        print(f"     worst at {tuple(int(x) for x in i)}: got {got[i]!r}, naive {naive[i]!r}, ref {ref[i]!r}")


def bf16_bits(x):
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_float(b):
    return (b.astype(np.uint32) << 16).view(np.float32)


def inputs(Tq, Tk, Hq, Hkv, D, dt=np.float32):
    return (rng.standard_normal((Tq, Hq, D)).astype(dt), rng.standard_normal((Tk, Hkv, D)).astype(dt),
            rng.standard_normal((Tk, Hkv, D)).astype(dt))


def raises(fn, exc, text, name):
    try:
        fn()
    except exc as e:
        check(text in str(e), f"{name}: {type(e).__name__} naming '{text}' ({e})")
        return e
    except Exception as e:  # noqa: BLE001 (the wrong kind of error is a failure to report)
        check(False, f"{name}: expected {exc.__name__}, got {type(e).__name__}: {e}")
        return None
    check(False, f"{name}: expected {exc.__name__}, nothing raised")
    return None


# ------------------------------------------------------------------------------------------- library ----
check(infllm.library_path() == os.environ["INFLLM_LIB"], f"loaded {infllm.library_path()}")
check(infllm.version() == "0.1.0" and len(infllm.build_commit()) > 0,
      f"version {infllm.version()}, commit {infllm.build_commit()}, SIMD {infllm.cpu_simd_level()}, bf16 dot {infllm.cpu_bf16_dot()}")


def c_layout():
    """sizeof and every field's offset of the three structs as the C compiler lays them out (None without one)"""
    import shutil
    import subprocess
    import tempfile
    from infllm import _capi
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        return None
    structs = (("infllm_params", _capi.ParamsC), ("infllm_layout", _capi.LayoutC), ("infllm_sizes", _capi.SizesC))
    lines = []
    for cname, py in structs:
        lines.append(f'printf("{cname} sizeof %zu\\n", sizeof({cname}));')
        lines += [f'printf("{cname} {f} %zu\\n", offsetof({cname}, {f}));' for f, _ in py._fields_]
    src = "#include <stddef.h>\n#include <stdio.h>\n#include <infllm.h>\nint main(void) {\n" + "\n".join(lines) + \
          "\nreturn 0;\n}\n"
    inc = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "include")
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "l.c"), "w") as f:
            f.write(src)
        r = subprocess.run([cc, "-I", inc, os.path.join(d, "l.c"), "-o", os.path.join(d, "l")], capture_output=True,
                           text=True)
        if r.returncode:
            return f"compile failed: {r.stderr[-400:]}"
        out = subprocess.run([os.path.join(d, "l")], capture_output=True, text=True).stdout
    got = {tuple(line.split()[:2]): int(line.split()[2]) for line in out.splitlines()}
    bad = []
    for cname, py in structs:
        if got.get((cname, "sizeof")) != C.sizeof(py):
            bad.append(f"sizeof({cname}) C {got.get((cname, 'sizeof'))} ctypes {C.sizeof(py)}")
        bad += [f"{cname}.{f} C {got.get((cname, f))} ctypes {getattr(py, f).offset}" for f, _ in py._fields_
                if got.get((cname, f)) != getattr(py, f).offset]
    return bad


import ctypes as C  # noqa: E402

lay_bad = c_layout()
if lay_bad is None:
    print("SKIP: no C compiler for the struct layout check")
else:
    check(lay_bad == [], f"ctypes structs laid out as the C compiler lays out include/infllm.h's ({lay_bad or 'sizes and offsets'})")
p0 = infllm.Params()
want = dict(block_size=64, kernel_size=32, kernel_stride=16, init_blocks=1, local_blocks=32, topk=64, dense_len=8192,
            exact_lse=False, window=0, softmax_scale=0.0, mode="auto", num_threads=0)
check(all(getattr(p0, f) == v for f, v in want.items()), f"Params() is MiniCPM4.1's: {p0}")
check(p0.topk_total() == 96 and infllm.Params(topk=5, local_blocks=7).topk_total() == 12,
      "topk_total reads topk and local_blocks from the struct")
check(p0.replace(topk=3).topk == 3 and p0.topk == 64, "replace copies")
# Params used in a call keep its C struct, which has pointer fields: pickle and copy.deepcopy (DataLoader workers,
# multiprocessing, copied training configs) raised "ctypes objects containing pointers cannot be pickled"
import copy  # noqa: E402
import pickle  # noqa: E402

try:
    pp = [pickle.loads(pickle.dumps(p0)), copy.deepcopy(p0)]
    check(all(x == p0 and x.topk_total() == 96 for x in pp), "a used Params pickles and deep-copies")
except ValueError as e:
    check(False, f"a used Params pickles and deep-copies: {e}")
raises(lambda: infllm.Params(topk_blocks=3), TypeError, "topk_blocks", "unknown field")
raises(lambda: infllm.Params(mode="fast"), ValueError, "fast", "bad mode")
raises(lambda: infllm.Params(topk=2.5), TypeError, "topk", "float topk")
raises(lambda: infllm.Params(topk=2**31), ValueError, "int32", "topk past int32")
raises(lambda: infllm.Params(mode=True), ValueError, "True", "mode True (not a mode)")
raises(lambda: infllm.Params(exact_lse="False"), TypeError, "exact_lse", "exact_lse given a string")
check(infllm.Params(mode=2).mode == "sparse" and infllm.Params(exact_lse=1).exact_lse is True,
      "mode by its C value, exact_lse by 0 / 1")
# softmax_scale is a C float: one that rounds to 0 there ran as the library's 0 = 1 / sqrt(head_dim), silently
raises(lambda: infllm.Params(softmax_scale=1e-50), ValueError, "softmax_scale", "softmax_scale 1e-50 (0 in float32)")
raises(lambda: infllm.Params(softmax_scale=1e39), ValueError, "softmax_scale", "softmax_scale 1e39 (inf in float32)")
check(infllm.Params(softmax_scale=1e-40).softmax_scale == 1e-40, "softmax_scale 1e-40 (a float32 subnormal) kept")

# ------------------------------------------------------------------------------------- host forward ----
Hq, Hkv, D = 6, 2, 32
cu_q, cu_k = [0, 150, 151, 411], [0, 150, 340, 700]  # a prefill, a decode step, a chunk of 260 of 360 keys
q, k, v = inputs(cu_q[-1], cu_k[-1], Hq, Hkv, D)
scale = 1 / np.sqrt(D)
lay = (cu_q, cu_k)

ref_d, ref_dl = forward_ref(q, k, v, cu_q, cu_k, None, 32, scale)
nv_d, _ = forward_ref(q, k, v, cu_q, cu_k, None, 32, scale, np.float32)
out, lse = infllm.dense_attention(q, k, v, *lay)
within("dense f32 out (CPU)", out, ref_d, nv_d)
check(float(np.abs(lse - ref_dl).max()) < 1e-5, "dense lse (CPU)")
out_r, _ = infllm.dense_attention(q, k, v, *lay, backend="ref")
within("dense f32 out (REF backend)", out_r, ref_d, nv_d)
check(not np.array_equal(out_r, out), "the backend field reaches the library (REF's f64 rounding differs from CPU's)")

idx = infllm.select_blocks(q, k, *lay, **SMALL)
idx_r = infllm.select_blocks(q, k, *lay, backend="ref", **SMALL)
check(idx.shape == (Hkv, cu_q[-1], 4) and idx.dtype == np.int32, f"select_blocks {idx.shape} {idx.dtype}")
same = np.mean(np.all(idx == idx_r, axis=2))
check(same >= 0.99, f"CPU selection == REF's on {same:.2%} of rows")
nsel = np.sum(idx >= 0, axis=2)
check(nsel.max() == 4 and nsel.min() >= 1, f"rows select 1..4 blocks ({nsel.min()}..{nsel.max()}) of up to 12: sparse is not dense")
ref_s, ref_sl = forward_ref(q, k, v, cu_q, cu_k, idx, 32, scale)
nv_s, _ = forward_ref(q, k, v, cu_q, cu_k, idx, 32, scale, np.float32)
out_s, lse_s = infllm.sparse_attention(q, k, v, idx, *lay, **SMALL)
within("sparse f32 out on the package's selection", out_s, ref_s, nv_s)
check(float(np.abs(lse_s - ref_sl).max()) < 1e-5, "sparse lse")
out_a, lse_a = infllm.attention(q, k, v, *lay, mode="sparse", return_lse=True, **SMALL)
check(np.array_equal(out_a, out_s) and np.array_equal(lse_a, lse_s), "attention(mode=sparse) == select + sparse bitwise")
check(np.array_equal(infllm.attention(q, k, v, *lay, mode="dense"), out), "attention(mode=dense) == dense bitwise")
# AUTO with dense_len between the lengths: sequence 0 (150 keys) dense, 1 and 2 (190, 360 keys) sparse
out_m = infllm.attention(q, k, v, *lay, dense_len=170, **SMALL)
check(np.array_equal(out_m[:150], out[:150]) and np.array_equal(out_m[150:], out_s[150:]),
      "AUTO switches per sequence (dense below dense_len, sparse from it)")
pm = infllm.Params(**SMALL).replace(dense_len=-1)
check(np.array_equal(infllm.attention(q, k, v, *lay, params=pm), out_s), "params= and dense_len -1 (always sparse)")
out_t = infllm.attention(q, k, v, *lay, mode="dense", num_threads=1)
check(np.array_equal(out_t, out), "num_threads 1 bitwise as all threads")
# a sliding key window (params.window, keys j > position - 40): the CPU's as REF's, not the full attention; sparse with
# a window that its 4 blocks of 32 a query cover (at most 3 blocks of the window) is the windowed dense
out_w, _ = infllm.dense_attention(q, k, v, *lay, window=40)
out_wr, _ = infllm.dense_attention(q, k, v, *lay, window=40, backend="ref")
check(float(np.abs(out_w - out_wr).max()) < 1e-5 and float(np.abs(out_w - out).max()) > 1e-2,
      "window 40: CPU as REF, other than the full attention")
check(np.array_equal(infllm.attention(q, k, v, *lay, mode="sparse", window=40, **SMALL), out_w),
      "window 40, sparse with every window block selected == windowed dense bitwise")
raises(lambda: infllm.dense_attention(q, k, v, *lay, window=-1), infllm.InfllmError, "window", "window -1")

# the batched layout: B sequences of one length
qb, kb, vb = inputs(2 * 96, 2 * 200, Hq, Hkv, D)
ob, lb = infllm.attention(qb.reshape(2, 96, Hq, D), kb.reshape(2, 200, Hkv, D), vb.reshape(2, 200, Hkv, D),
                          mode="sparse", return_lse=True, **SMALL)
ov, lv = infllm.attention(qb, kb, vb, [0, 96, 192], [0, 200, 400], mode="sparse", return_lse=True, **SMALL)
check(ob.shape == (2, 96, Hq, D) and lb.shape == (2, 96, Hq) and np.array_equal(ob.reshape(ov.shape), ov)
      and np.array_equal(lb.reshape(lv.shape), lv), "batched [B, T, H, D] == varlen with uniform cu_seqlens")

# bf16 as uint16 bits: against REF on the same bf16 inputs, and the f64 reference of the rounded inputs
qh, kh, vh = bf16_bits(q), bf16_bits(k), bf16_bits(v)
ob16 = infllm.attention(qh, kh, vh, *lay, mode="sparse", **SMALL)
ob16r = infllm.attention(qh, kh, vh, *lay, mode="sparse", backend="ref", **SMALL)
check(ob16.dtype == np.uint16, "bf16 in, bf16 (uint16 bits) out")
ref16, _ = forward_ref(bf16_float(qh), bf16_float(kh), bf16_float(vh), cu_q, cu_k,
                       infllm.select_blocks(qh, kh, *lay, **SMALL), 32, scale)
nv16 = bf16_float(bf16_bits(forward_ref(bf16_float(qh), bf16_float(kh), bf16_float(vh), cu_q, cu_k,
                                        infllm.select_blocks(qh, kh, *lay, **SMALL), 32, scale, np.float32,
                                        lambda x: bf16_float(bf16_bits(x)))[0]))
within("bf16 sparse out", bf16_float(ob16), ref16, nv16)
check(float(np.abs(bf16_float(ob16) - bf16_float(ob16r)).max()) <= 2 * 2**-8 * float(np.abs(ref16).max()),
      "bf16 CPU within 2 bf16 ulps of REF's")

# ------------------------------------------------------------------------------------ host backward ----
dout = rng.standard_normal(q.shape).astype(np.float32)
for name, sel, fn in (("sparse", idx, lambda: infllm.sparse_attention_backward(q, k, v, idx, lse_s, dout, *lay, **SMALL)),
                      ("dense", None, lambda: infllm.dense_attention_backward(q, k, v, lse, dout, *lay))):
    got = fn()
    refg = backward_ref(q, k, v, dout, cu_q, cu_k, sel, 32, scale)
    nvg = backward_ref(q, k, v, dout, cu_q, cu_k, sel, 32, scale, np.float32)
    for gname, g, r, n in zip(("dq", "dk", "dv"), got, refg, nvg):
        within(f"{name} backward {gname}", g, r, n)
gb = infllm.sparse_attention_backward(qb.reshape(2, 96, Hq, D), kb.reshape(2, 200, Hkv, D), vb.reshape(2, 200, Hkv, D),
                                      infllm.select_blocks(qb, kb, [0, 96, 192], [0, 200, 400], **SMALL), lb,
                                      rng.standard_normal((2, 96, Hq, D)).astype(np.float32), **SMALL)
check([x.shape for x in gb] == [(2, 96, Hq, D), (2, 200, Hkv, D), (2, 200, Hkv, D)], "batched backward shapes")
# a varlen lse in a batched call: the message showed the flattened shape, (1152,), as what was given
raises(lambda: infllm.dense_attention_backward(qb.reshape(2, 96, Hq, D), kb.reshape(2, 200, Hkv, D),
                                               vb.reshape(2, 200, Hkv, D), lb.reshape(192, Hq), qb.reshape(2, 96, Hq, D)),
       ValueError, f"lse (192, {Hq}) on cpu: expected (2, 96, {Hq})", "batched backward: the lse's shape as given")

# -------------------------------------------------------------------------------------- decode cache ----
T = 300
qc, kc, vc = inputs(T, T, Hq, Hkv, D)
with infllm.DecodeCache(Hkv, D, T, "f32", dense_len=200, **SMALL) as cache:
    ok = True
    pos = 0
    for n in (100, 57, 1, 1, 41, 1, 99):
        cache.append(kc[pos:pos + n], vc[pos:pos + n])
        pos += n
        got, gl = cache.attend(qc[pos - n:pos], return_lse=True)
        want_o, want_l = infllm.attention(qc[pos - n:pos], kc[:pos], vc[:pos], dense_len=200, return_lse=True, **SMALL)
        ok &= np.array_equal(got, want_o) and np.array_equal(gl, want_l)
    check(ok and len(cache) == T, "cache attends (chunks, decode steps, the dense -> sparse switch) == attention on "
                                  "each prefix, bitwise")
    check(cache.capacity == T and cache.memory_bytes > 2 * T * Hkv * D * 4, f"capacity, {cache.memory_bytes} bytes")
    e = raises(lambda: cache.append(kc[:1], vc[:1]), infllm.InfllmError, "capacity", "append past the capacity")
    check(e is not None and e.status == 7, "InfllmError.status is INFLLM_ERR_CAPACITY")
    cache.truncate(250)
    check(len(cache) == 250, "truncate")
    raises(lambda: cache.append(bf16_bits(kc[:1]), bf16_bits(vc[:1])), TypeError, "f32", "cache dtype mismatch")
    raises(lambda: cache.attend(qc[:1, :, :16]), ValueError, "expected [n", "cache head_dim mismatch")
raises(lambda: len(cache), ValueError, "closed", "closed cache")
raises(lambda: infllm.DecodeCache(Hkv, D, 10, "int8"), TypeError, "int8", "cache dtype name")

# one cache used from several threads (ctypes releases the GIL; the C cache is not locked): calls serialise, close()
# during another thread's attend does not free the storage under it (it crashed the interpreter)
import threading  # noqa: E402

Tt = 4096
qc, kc, vc = inputs(Tt, Tt, 8, 2, 128)
got_t = []
first = threading.Event()


def attend_loop(cache):
    try:
        for _ in range(4):
            got_t.append(cache.attend(qc[-64:]).shape)
            first.set()  # the next attend starts now: close() lands inside it
    except ValueError as e:
        got_t.append(str(e))


for _ in range(3):
    # storage past malloc's mmap threshold: close() unmaps it
    cache = infllm.DecodeCache(2, 128, 1 << 17, "f32", mode="dense", num_threads=1)
    cache.append(kc, vc)
    first.clear()
    th = threading.Thread(target=attend_loop, args=(cache,))
    th.start()
    first.wait()
    cache.close()
    th.join()
check(all(g == (64, 8, 128) or "closed" in str(g) for g in got_t),
      f"close() while another thread attends: no crash, the attend finishes or sees 'closed' ({len(got_t)} calls)")
with infllm.DecodeCache(2, 128, 1600, "f32") as cache:
    ths = [threading.Thread(target=lambda: [cache.append(kc[:1], vc[:1]) for _ in range(200)]) for _ in range(8)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    check(len(cache) == 1600, f"8 threads appending 200 tokens each to one cache: length {len(cache)} == 1600")

# a process forked after the library ran threaded (multiprocessing's fork, DataLoader workers): GCC's OpenMP runtime
# hangs the child's first parallel region (its pool's threads are not copied); the package runs such a child's calls
# on one thread, which gives the same bits
if hasattr(os, "fork") and infllm._lib.infllm_cpu_num_threads() > 1:
    import multiprocessing  # noqa: E402

    lay3 = (cu_q, cu_k)
    want3 = (infllm.attention(q, k, v, *lay3, mode="sparse", **SMALL),
             infllm.dense_attention_backward(q, k, v, lse, dout, *lay3)[1])

    def forked_child(_):
        got = (infllm.attention(q, k, v, *lay3, mode="sparse", **SMALL),
               infllm.dense_attention_backward(q, k, v, lse, dout, *lay3)[1])
        return all(np.array_equal(g, w) for g, w in zip(got, want3))

    with multiprocessing.get_context("fork").Pool(1) as pool:
        job = pool.map_async(forked_child, range(2))
        try:
            check(all(job.get(timeout=30)), "a forked child's calls (threaded in the parent) == the parent's, bitwise")
        except multiprocessing.TimeoutError:
            check(False, "a forked child's calls (threaded in the parent): hung (30 s)")
else:
    print("SKIP: no fork, or one CPU thread: the forked-child check did not run")

# ------------------------------------------------------------------------------------------- errors ----
raises(lambda: infllm.attention(q, k, v, [0, 150, 411], [0, 150, 699]), infllm.InfllmError, "total_k",
       "cu_seqlens_k not ending at total_k (the library's message)")
raises(lambda: infllm.attention(q.astype(np.float64), k, v), TypeError, "float64", "float64 q")
raises(lambda: infllm.attention(q, k.astype(np.float16), v), TypeError, "one dtype", "mixed dtypes")
raises(lambda: infllm.attention(q, k, v, [0, 411], None), ValueError, "both", "one cu_seqlens")
# integer arguments: ctypes wraps an int to the C type and int() truncates, silently (cu_seqlens of NumPy float32
# 150.5 ran as 150, strings were parsed, max_seqlen 2**32 became 0 = "compute them", a cache capacity 2**64 + 10
# became 10); integral floats stay accepted in cu_seqlens
check(np.array_equal(infllm.attention(q, k, v, [0., 150., 151., 411.], cu_k, mode="dense"), out),
      "cu_seqlens of integral floats accepted")
raises(lambda: infllm.attention(q, k, v, np.array([0, 150.5, 151, 411], np.float32), cu_k), TypeError, "cu_seqlens_q",
       "cu_seqlens of NumPy float32 150.5")
raises(lambda: infllm.attention(q, k, v, cu_q, ["0", "150", "340", "700"]), TypeError, "cu_seqlens_k",
       "cu_seqlens of strings")
raises(lambda: infllm.attention(q, k, v, cu_q, cu_k, 2**32, 2**32), ValueError, "max_seqlen_q", "max_seqlen 2**32")
raises(lambda: infllm.attention(q, k, v, cu_q, cu_k, 260, 360.0), TypeError, "max_seqlen_k", "max_seqlen_k a float")
raises(lambda: infllm.DecodeCache(Hkv, D, 2**64 + 10, "f32"), ValueError, "capacity", "cache capacity 2**64 + 10")
raises(lambda: infllm.DecodeCache(Hkv, D, 10.5, "f32"), TypeError, "capacity", "cache capacity 10.5")
raises(lambda: infllm.DecodeCache(2**32 + Hkv, D, 10, "f32"), ValueError, "num_kv_heads", "cache heads 2**32 + Hkv")
with infllm.DecodeCache(Hkv, D, 10, "f32") as cache:
    cache.append(k[:4], v[:4])
    raises(lambda: cache.truncate(2.7), TypeError, "new_length", "cache truncate(2.7)")
raises(lambda: infllm.attention(q, k, v, mode="sparse", topk=-1), infllm.InfllmError, "topk", "topk -1")
raises(lambda: infllm.attention(q, k, v, backend="cuda"), ValueError, "cuda backend takes CUDA", "cuda on host arrays")
raises(lambda: infllm.attention(q, k, v, backend="gpu"), ValueError, "gpu", "unknown backend")
raises(lambda: infllm.sparse_attention(q, k, v, idx[:, :10], *lay), ValueError, "topk_idx", "topk_idx rows")
raises(lambda: infllm.sparse_attention_backward(q, k, v, idx, lse_s[:5], dout, *lay), ValueError, "lse",
       "lse shape in the backward")
raises(lambda: infllm.attention(q[:, :5], k, v), infllm.InfllmError, "multiple", "Hq not a multiple of Hkv")
raises(lambda: infllm.attention(q[:0].reshape(0, 1, Hq, D), k[:0].reshape(0, 1, Hkv, D), v[:0].reshape(0, 1, Hkv, D)),
       ValueError, "B >= 1", "batched B = 0")
e0 = infllm.attention(q[:0], k, v, return_lse=True)
check(e0[0].shape == (0, Hq, D) and e0[1].shape == (0, Hq), "no queries: empty outputs")
eb = infllm.dense_attention_backward(q[:0], k, v, np.zeros((0, Hq), np.float32), q[:0])
check(eb[1].shape == k.shape and not eb[1].any() and not eb[2].any(), "no queries: dk, dv of zeros")

# -------------------------------------------------------------------------------- selection stages ----
import infllm.stages  # noqa: E402

st = infllm.stages.selection_stages(q, k, *lay, **SMALL)
st_r = infllm.stages.selection_stages(q, k, *lay, backend="ref", **SMALL)
lk_ = np.diff(cu_k)
n1 = [max((n - 16) // 8 + 1, 0) for n in lk_]
n2 = [max((n - 64) // 32 + 1, 0) for n in lk_]
check(list(st.cu_seqlens_c1) == list(np.cumsum([0] + n1)) and list(st.cu_seqlens_c2) == list(np.cumsum([0] + n2)),
      f"stages: c1 / c2 offsets ({st.cu_seqlens_c1.tolist()}, {st.cu_seqlens_c2.tolist()})")
c1_ref = np.concatenate([np.stack([k[a + 8 * j:a + 8 * j + 16].astype(np.float64).mean(axis=0) for j in range(m)])
                         for a, m in zip(cu_k[:-1], n1) if m])
check(float(np.abs(st.c1 - c1_ref).max()) <= 4 * U32 * float(np.abs(c1_ref).max()) * 16,
      "stages: c1 = the means of k over windows of 16, stride 8 (f32 sums of 16)")
# test_diff's stage-1 rule: a score is the exp of an f32 logit, so its relative error is about the logit's absolute
# one: 4 x the largest logit x u (relative), + 2 u of the largest score
logit = float(np.abs(np.einsum("thd,ngd->thn", q.astype(np.float64), st_r.c1.astype(np.float64))).max()) * scale


def stage1_close(got, ref):
    fin = np.isfinite(ref)
    b = 4 * logit * U32 * np.abs(ref[fin]) + 2 * U32 * float(np.abs(ref[fin]).max())
    return np.array_equal(np.isinf(got), np.isinf(ref)) and bool(np.all(np.abs(got[fin] - ref[fin]) <= b))


check(stage1_close(st.stage1_scores, st_r.stage1_scores), f"stages: stage-1 scores CPU vs REF (largest logit {logit:.3g})")
check(stage1_close(st.block_scores, st_r.block_scores), "stages: block scores CPU vs REF (forced blocks +inf in both)")
same = np.mean(np.all(st.topk_idx == idx, axis=2))
check(same >= 0.99, f"stages: top-k == select_blocks' on {same:.2%} of rows")
raises(lambda: infllm.stages.selection_stages(qb.reshape(2, 96, Hq, D), kb.reshape(2, 200, Hkv, D)), ValueError,
       "varlen", "stages: batched tensors refused")

# ---------------------------------------------------------------------------------------------- torch ----
try:
    import torch
except ImportError:
    torch = None
if torch is None:
    print("SKIP: torch is not installed: the autograd and CUDA checks did not run (pip install torch)")
    c.finish()

qt, kt, vt = (torch.from_numpy(x).requires_grad_() for x in (q, k, v))
ot = infllm.attention(qt, kt, vt, *lay, mode="sparse", **SMALL)
check(torch.equal(ot.detach(), torch.from_numpy(out_s)), "torch CPU forward == the NumPy call bitwise")
ot.backward(torch.from_numpy(dout))
refg = backward_ref(q, k, v, dout, cu_q, cu_k, idx, 32, scale)
nvg = backward_ref(q, k, v, dout, cu_q, cu_k, idx, 32, scale, np.float32)
for gname, t, r, n in zip(("dq", "dk", "dv"), (qt, kt, vt), refg, nvg):
    within(f"torch autograd sparse {gname}", t.grad.numpy(), r, n)
# sparse_attention / dense_attention are differentiable too (a NumPy selection taken as a tensor)
for name, fwd, bwd in (("sparse_attention", lambda *x: infllm.sparse_attention(*x, idx, *lay, **SMALL),
                        lambda *x: infllm.sparse_attention_backward(*x, idx, lse_s, dout, *lay, **SMALL)),
                       ("dense_attention", lambda *x: infllm.dense_attention(*x, *lay),
                        lambda *x: infllm.dense_attention_backward(*x, lse, dout, *lay))):
    xs = [torch.from_numpy(x).requires_grad_() for x in (q, k, v)]
    o, l_ = fwd(*xs)
    o.backward(torch.from_numpy(dout))
    want = bwd(q, k, v)
    check(not l_.requires_grad and all(np.array_equal(x.grad.numpy(), w) for x, w in zip(xs, want)),
          f"{name} under autograd: gradients == the explicit backward bitwise, lse not differentiable")
# a mixed AUTO batch: the dense and the sparse sequences run apart, their gradients land in place
for t in (qt, kt, vt):
    t.grad = None
om = infllm.attention(qt, kt, vt, torch.tensor(cu_q), torch.tensor(cu_k), dense_len=170, **SMALL)
check(torch.equal(om.detach(), torch.from_numpy(out_m)), "mixed AUTO batch forward == the one-call AUTO result")
om.backward(torch.from_numpy(dout))
sel_m = np.full((Hkv, cu_q[-1], 5), -1, np.int32)
sel_m[:, :, :4] = idx
sel_m[:, :150] = np.arange(5)[None, None, :]  # sequence 0 (150 keys, 5 blocks of 32) dense: every block
refg = backward_ref(q, k, v, dout, cu_q, cu_k, sel_m, 32, scale)
nvg = backward_ref(q, k, v, dout, cu_q, cu_k, sel_m, 32, scale, np.float32)
for gname, t, r, n in zip(("dq", "dk", "dv"), (qt, kt, vt), refg, nvg):
    within(f"torch autograd mixed AUTO {gname}", t.grad.numpy(), r, n)
# misleading errors: a torch q that requires grad with NumPy k / v raised AttributeError ('detach'), a sparse tensor
# torch's "unsupported memory format option Contiguous"
raises(lambda: infllm.attention(torch.from_numpy(q).requires_grad_(), k, v), ValueError, "same kind",
       "autograd: a torch q with NumPy k / v")
raises(lambda: infllm.attention(torch.from_numpy(q).to_sparse(), kt.detach(), vt.detach()), ValueError, "strided",
       "a sparse torch tensor")
# empty torch tensors: torch gives them a NULL data pointer, which the library refuses for every tensor ("q is NULL");
# NumPy's empty arrays have one. An AUTO batch under autograd whose dense part has no query ran one such call
q0 = torch.empty(0, Hq, D)
try:
    e0 = infllm.attention(q0, kt.detach(), vt.detach(), return_lse=True)
    check(e0[0].shape == (0, Hq, D) and e0[1].shape == (0, Hq), "torch: no queries, empty outputs")
    eb = infllm.dense_attention_backward(q0, kt.detach(), vt.detach(), torch.empty(0, Hq), q0)
    check(not eb[1].any() and not eb[2].any(), "torch: no queries, dk and dv of zeros")
except infllm.InfllmError as e:
    check(False, f"torch: no queries: {e}")
cq0, ck0 = [0, 0, 1, 261], [0, 150, 340, 700]  # sequence 0: keys only (dense at dense_len 170), 1 and 2 sparse
x = torch.from_numpy(q[150:]).requires_grad_()
y = torch.from_numpy(k).requires_grad_()
try:
    o0 = infllm.attention(x, y, vt.detach(), cq0, ck0, dense_len=170, **SMALL)
    o0.sum().backward()
    check(torch.equal(o0.detach(), torch.from_numpy(infllm.attention(q[150:], k, v, cq0, ck0, dense_len=170, **SMALL)))
          and not y.grad[:150].any(), "autograd AUTO batch with a query-less dense sequence == the plain call")
except infllm.InfllmError as e:
    check(False, f"autograd AUTO batch with a query-less dense sequence: {e}")
ob, lb = infllm.attention(torch.from_numpy(qb).view(2, 96, Hq, D).requires_grad_(), torch.from_numpy(kb).view(2, 200, Hkv, D),
                          torch.from_numpy(vb).view(2, 200, Hkv, D), mode="sparse", return_lse=True, **SMALL)
check(ob.shape == (2, 96, Hq, D) and ob.requires_grad and torch.equal(ob.detach().reshape(ov.shape),
      torch.from_numpy(ov)), "torch batched layout under autograd")
# double backward (create_graph=True, a gradient penalty): the library's backward is not differentiable; the gradient
# came back without a graph, so a second-order loss silently lost the attention's terms (here: gave 2 q alone)
for name, fn in (("attention", lambda x: infllm.attention(x, kt, vt, *lay, mode="sparse", **SMALL)),
                 ("dense_attention", lambda x: infllm.dense_attention(x, kt, vt, *lay)[0])):
    x = torch.from_numpy(q).requires_grad_()
    raises(lambda: torch.autograd.grad(fn(x).pow(2).sum(), x, create_graph=True), RuntimeError, "not differentiable",
           f"create_graph=True through {name}: refused, not a gradient without the attention's second-order terms")

# ------------------------------------------------------------------------------------- torch.compile ----
# the public functions under torch.compile(fullgraph=True) run as torch custom operators (python/infllm/_ops.py):
# outputs and gradients bitwise as eager, on the eager backend and on inductor, one graph without breaks
from infllm import _ops  # noqa: E402

if not _ops.AVAILABLE:
    print(f"SKIP: torch {torch.__version__} has no torch.library.custom_op (2.4+): the torch.compile checks did not run")
else:
    T = torch.from_numpy
    cuq_t, cuk_t = torch.tensor(cu_q), torch.tensor(cu_k)
    idx_t = T(idx)
    DIFF = ("sparse_attention", "dense_attention", "attention sparse", "attention AUTO mixed (list offsets)",
            "attention AUTO mixed (tensor offsets)", "attention batched")  # cases whose (out, lse) are differentiable

    def leaves():
        """each case's own q, k, v (gradients apart): varlen ones, then the batched [2, 96 / 200, H, D] case's"""
        xs = [[T(x).clone().requires_grad_() for x in (q, k, v)] for _ in DIFF[:-1]]
        xs.append([T(x).reshape(2, -1, x.shape[1], D).clone().requires_grad_() for x in (qb, kb, vb)])
        return xs

    def cases(xs, cuq_t, cuk_t, idx_t):
        """every public function on the CPU; the differentiable ones (DIFF) each on its own leaves"""
        o = {}
        xd = [x.detach() for x in xs[0]]
        o["select_blocks"] = (infllm.select_blocks(*xd[:2], *lay, **SMALL),)
        o["select_blocks (tensor offsets: columns from the data)"] = (
            infllm.select_blocks(*xd[:2], cuq_t, cuk_t, **SMALL),)
        o["sparse_attention"] = infllm.sparse_attention(*xs[0], idx_t, *lay, **SMALL)
        o["dense_attention"] = infllm.dense_attention(*xs[1], *lay)
        o["attention sparse"] = infllm.attention(*xs[2], *lay, mode="sparse", return_lse=True, **SMALL)
        o["attention AUTO mixed (list offsets)"] = infllm.attention(*xs[3], *lay, dense_len=170, return_lse=True,
                                                                    **SMALL)
        o["attention AUTO mixed (tensor offsets)"] = infllm.attention(*xs[4], cuq_t, cuk_t, dense_len=170,
                                                                      return_lse=True, **SMALL)
        o["attention batched"] = infllm.attention(*xs[5], mode="sparse", return_lse=True, **SMALL)
        with torch.no_grad():
            o["attention without grad (the library's pipeline)"] = (
                infllm.attention(*xd, cuq_t, cuk_t, dense_len=170, return_lse=True, **SMALL))
            o["attention without grad, one sequence"] = (infllm.attention(*xd, mode="sparse", **SMALL),)
        so, sl = infllm.sparse_attention(*xd, idx_t, *lay, **SMALL)
        dd = T(dout)
        o["sparse_attention_backward"] = infllm.sparse_attention_backward(*xd, idx_t, sl, dd, *lay, out=so, **SMALL)
        do_, dl = infllm.dense_attention(*xd, *lay)
        o["dense_attention_backward"] = infllm.dense_attention_backward(*xd, dl, dd, *lay, out=do_)
        return o

    def run_cases(fn):
        """outputs of fn(cases) and the gradients of the differentiable cases for dout"""
        xs = leaves()
        o = fn(xs, cuq_t, cuk_t, idx_t)
        douts = [T(dout) if n != "attention batched" else torch.ones_like(o[n][0]) * 0.5 for n in DIFF]
        gs = torch.autograd.grad([o[n][0] for n in DIFF], [x for c_ in xs for x in c_], douts)
        return o, {n: gs[3 * i:3 * i + 3] for i, n in enumerate(DIFF)}

    want_o, want_g = run_cases(cases)
    graphs = []

    def record(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    for bname, kw in (("eager", dict(backend="eager")), ("inductor", {}), ("recording", dict(backend=record))):
        try:
            got_o, got_g = run_cases(torch.compile(cases, fullgraph=True, **kw))
        except Exception as e:  # noqa: BLE001 (a graph break under fullgraph=True, or a failing compile)
            check(False, f"torch.compile(fullgraph=True, backend {bname}) of every public function: "
                         f"{type(e).__name__}: {str(e)[:600]}")
            continue
        bad = [n for n in want_o if len(got_o[n]) != len(want_o[n])
               or not all(torch.equal(a, b) for a, b in zip(got_o[n], want_o[n]))]
        check(not bad, f"torch.compile(fullgraph=True), {bname}: the outputs of {len(want_o)} calls bitwise eager's"
                       + (f" (differ: {bad})" if bad else ""))
        bad = [n for n in DIFF if not all(torch.equal(a, b) for a, b in zip(got_g[n], want_g[n]))]
        check(not bad, f"torch.compile, {bname}: dq, dk, dv of {len(DIFF)} differentiable calls bitwise eager's"
                       + (f" (differ: {bad})" if bad else ""))
        check(all(got_o[n][0].requires_grad and not got_o[n][1].requires_grad for n in DIFF),
              f"torch.compile, {bname}: out differentiable, lse not")
    ops_seen = {str(n.target).split(".")[1] for g in graphs for n in g.graph.nodes
                if n.op == "call_function" and str(n.target).startswith("infllm.")}
    want_ops = {"select_blocks", "sparse_attention", "dense_attention", "attention", "attention_split",
                "sparse_attention_backward", "dense_attention_backward"}
    check(len(graphs) == 1 and ops_seen == want_ops,
          f"one graph, the calls as infllm:: operators ({len(graphs)} graph(s), {sorted(ops_seen)})")
    def raises_first_line(fn, exc, text, name):
        """raises(), with the error's first line only (dynamo's messages run to pages)"""
        try:
            fn()
        except exc as e:
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
            check(text in str(e), f"{name}: {type(e).__name__} naming '{text}' ({first})")
            return
        except Exception as e:  # noqa: BLE001
            check(False, f"{name}: expected {exc.__name__}, got {type(e).__name__}: {str(e)[:300]}")
            return
        check(False, f"{name}: expected {exc.__name__}, nothing raised")

    # the check can fail: the plain ctypes path is what dynamo cannot trace (a graph break, an error here)
    raises_first_line(lambda: torch.compile(lambda x: infllm._dense_call(x, x[:, :Hkv], x[:, :Hkv], None, None, None,
                                                                         None, infllm._DEFAULT_PARAMS, None),
                                            fullgraph=True, backend="eager")(T(q)), Exception, "",
                      "the package's plain path under torch.compile(fullgraph=True) raises (what the operators avoid)")
    check(not infllm._compiling(T(q), T(k), T(v)), "eager torch calls keep the plain path")
    # a Params argument and changing keyword values recompile (their values are guarded), not a graph break
    cg = torch.compile(lambda x, y, z, p, n, s: infllm.attention(x, y, z, *lay, params=p, topk=n, softmax_scale=s),
                       fullgraph=True, backend="eager")
    pp = infllm.Params(**SMALL, mode="sparse")
    xd = [T(x) for x in (q, k, v)]
    try:
        ok = all(torch.equal(cg(*xd, pp.replace(local_blocks=lb), n, s),
                             infllm.attention(*xd, *lay, params=pp.replace(local_blocks=lb), topk=n, softmax_scale=s))
                 for lb, n, s in ((2, 2, 0.0), (1, 3, 0.2), (3, 1, 0.3)))
        check(ok, "compiled with params= and keyword values that change between calls: bitwise eager's")
    except Exception as e:  # noqa: BLE001
        check(False, f"compiled with params= and changing keyword values: {type(e).__name__}: {str(e)[:300]}")
    raises_first_line(lambda: torch.compile(lambda x: infllm.attention(x, x[:, :Hkv], x[:, :Hkv], topk=2.5),
                                            fullgraph=True, backend="eager")(T(q)), RuntimeError, "infllm.Params.topk",
                      "compiled: a bad keyword value refused while tracing, with Params' message")
    # double backward through the compiled calls: refused as in eager
    for name, fn in (("attention", lambda x: infllm.attention(x, T(k), T(v), *lay, mode="sparse", **SMALL)),
                     ("dense_attention", lambda x: infllm.dense_attention(x, T(k), T(v), *lay)[0])):
        x = T(q).clone().requires_grad_()
        cfn = torch.compile(fn, fullgraph=True, backend="eager")
        raises(lambda: torch.autograd.grad(cfn(x).pow(2).sum(), x, create_graph=True), RuntimeError,
               "not differentiable", f"compiled {name}: create_graph=True refused")
    # torch.library.opcheck on each operator (schema, fake tensors, autograd registration, AOT dispatch) on small
    # shapes: a varlen batch of 3 (offsets as tensors), one sequence, the batched layout
    qs, ks, vs = (T(x) for x in inputs(100, 160, 4, 2, 16))
    cs = (torch.tensor([0, 40, 41, 100], dtype=torch.int32), torch.tensor([0, 40, 90, 160], dtype=torch.int32), 59, 70)
    P = _ops.flat(None, SMALL)
    PM = _ops.flat(None, dict(SMALL, dense_len=45))  # sequences of 40 / 50 / 70 keys: dense, sparse, sparse
    ops = torch.ops.infllm
    g_ = [x.clone().requires_grad_() for x in (qs, ks, vs)]
    ids = ops.select_blocks(qs, ks, *cs, None, *P, None)
    os_, ls_ = ops.sparse_attention(qs, ks, vs, ids, *cs, *P, None)
    qb4, kb4, vb4 = (x.reshape(2, -1, x.shape[1], x.shape[2]) for x in (qs, ks[:100], vs[:100]))
    idb = ops.select_blocks(qb4, kb4, None, None, None, None, None, *P, None)
    dos = torch.randn_like(os_)
    for name, op, args in (
            ("select_blocks", ops.select_blocks, (qs, ks, *cs, None, *P, None)),
            ("select_blocks, one sequence", ops.select_blocks, (qs, ks, None, None, None, None, None, *P, None)),
            ("sparse_attention", ops.sparse_attention, (*g_, ids, *cs, *P, None)),
            ("sparse_attention, batched", ops.sparse_attention, (qb4, kb4, vb4, idb, None, None, None, None, *P, None)),
            ("dense_attention", ops.dense_attention, (*g_, *cs, *P, None)),
            ("sparse_attention_backward", ops.sparse_attention_backward,
             (qs, ks, vs, ids, os_, ls_, dos, *cs, *P, None)),
            ("dense_attention_backward", ops.dense_attention_backward, (qs, ks, vs, None, ls_, dos, *cs, *P, None)),
            ("attention", ops.attention, (qs, ks, vs, *cs, True, *PM, None)),
            ("attention_split", ops.attention_split, (*g_, *cs, *PM, None)),
            ("attention_split_backward", ops.attention_split_backward, (qs, ks, vs, os_, ls_, dos, *cs, *PM, None))):
        try:
            r = torch.library.opcheck(op.default, args)
            check(all(x == "SUCCESS" for x in r.values()), f"opcheck infllm::{name}: "
                  + ("all of " + ", ".join(r) if all(x == "SUCCESS" for x in r.values()) else str(r)))
        except Exception as e:  # noqa: BLE001
            check(False, f"opcheck infllm::{name}: {type(e).__name__}: {str(e)[:600]}")

if not (torch.cuda.is_available() and infllm.cuda_available()):
    print(f"SKIP: no GPU for the CUDA checks ({infllm.cuda_device_info()})")
    c.finish()

# ----------------------------------------------------------------------------------------------- CUDA ----
dev = torch.device("cuda")
Hq, Hkv, D = 32, 2, 128
cu_q, cu_k = [0, 1000, 1001, 1700], [0, 1000, 2500, 4100]
q, k, v = inputs(cu_q[-1], cu_k[-1], Hq, Hkv, D)
dout = rng.standard_normal(q.shape).astype(np.float32)
scale = 1 / np.sqrt(D)
P16 = dict(block_size=64, kernel_size=32, kernel_stride=16, init_blocks=1, local_blocks=4, topk=6)
q16, k16, v16, d16 = (torch.from_numpy(x).to(dev, torch.bfloat16) for x in (q, k, v, dout))
qf, kf, vf, df = (x.float().cpu().numpy() for x in (q16, k16, v16, d16))
lay = (torch.tensor(cu_q, device=dev, dtype=torch.int32), torch.tensor(cu_k, device=dev, dtype=torch.int32), 1000, 1600)
idx_g = infllm.select_blocks(q16, k16, *lay, **P16)
idx_c = infllm.select_blocks(q16.cpu(), k16.cpu(), cu_q, cu_k, **P16)
same = (idx_g.cpu() == idx_c).all(dim=2).float().mean().item()
check(same >= 0.99, f"CUDA selection == CPU's on {same:.2%} of rows")
sel = idx_g.cpu().numpy()


def r16(x):
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(torch.bfloat16).float().numpy()


ref_o, _ = forward_ref(qf, kf, vf, cu_q, cu_k, sel, 64, scale)
nv_o = r16(forward_ref(qf, kf, vf, cu_q, cu_k, sel, 64, scale, np.float32, r16)[0])
xq, xk, xv = (t.clone().requires_grad_() for t in (q16, k16, v16))
og = infllm.attention(xq, xk, xv, *lay, mode="sparse", **P16)
within("CUDA bf16 sparse forward (autograd)", og.detach().float().cpu().numpy(), ref_o, nv_o)
og.backward(d16)
refg = backward_ref(qf, kf, vf, df, cu_q, cu_k, sel, 64, scale)
nvg = [r16(x) for x in backward_ref(r16(qf), r16(kf), r16(vf), r16(df), cu_q, cu_k, sel, 64, scale, np.float32)]
for gname, t, r, n in zip(("dq", "dk", "dv"), (xq, xk, xv), refg, nvg):
    within(f"CUDA bf16 sparse backward {gname}", t.grad.float().cpu().numpy(), r, n)
ga = infllm.sparse_attention_backward(q16, k16, v16, idx_g, infllm.sparse_attention(q16, k16, v16, idx_g, *lay, **P16)[1],
                                      d16, *lay, **P16)
check(all(torch.equal(a, t.grad) for a, t in zip(ga, (xq, xk, xv))), "autograd == the explicit backward call, bitwise")
stg = infllm.stages.selection_stages(q16, k16, *lay, **P16)
stc = infllm.stages.selection_stages(q16.cpu(), k16.cpu(), cu_q, cu_k, **P16)
check(torch.equal(stg.c1.cpu(), stc.c1) and torch.equal(stg.cu_seqlens_c2.cpu(), stc.cu_seqlens_c2),
      "CUDA stages: c1 and the c2 offsets bitwise the CPU's")
same = (stg.topk_idx.cpu() == stc.topk_idx).all(dim=2).float().mean().item()
check(same >= 0.99, f"CUDA stages: top-k == the CPU stages' on {same:.2%} of rows")
# a CUDA graph: the workspace comes from torch's allocator, the calls run on the capturing stream
with torch.no_grad():
    eager_o = infllm.attention(q16, k16, v16, *lay, mode="sparse", **P16)
g = torch.cuda.CUDAGraph()
s = torch.cuda.Stream()
s.wait_stream(torch.cuda.current_stream())
with torch.cuda.stream(s):
    infllm.attention(q16, k16, v16, *lay, mode="sparse", **P16)  # warm-up on the side stream
    with torch.cuda.graph(g):
        static_o = infllm.attention(q16, k16, v16, *lay, mode="sparse", **P16)
torch.cuda.current_stream().wait_stream(s)
static_o.fill_(float("nan"))
g.replay()
torch.cuda.synchronize()
check(torch.equal(static_o, eager_o), "infllm.attention captured into a CUDA graph, replayed == eager bitwise")
check(torch.equal(eager_o, og.detach()), "the pipeline (infllm_attention) == select_blocks + sparse_attention bitwise")
# torch.compile with CUDA graphs (mode="reduce-overhead"): the operators run inside the graphs cudagraph trees record
# (offsets as CUDA tensors with their maxima: nothing synchronises), replays bitwise eager's, a training step's too
if _ops.AVAILABLE:
    from torch._dynamo.utils import counters
    counters["inductor"].clear()

    def sparse_step(q, k, v):
        return infllm.attention(q, k, v, *lay, mode="sparse", **P16)

    try:
        cf = torch.compile(sparse_step, mode="reduce-overhead", fullgraph=True)
        with torch.no_grad():
            outs = []
            for _ in range(3):  # warm-up, record, replay
                torch.compiler.cudagraph_mark_step_begin()
                outs.append(cf(q16, k16, v16).clone())
        ct = torch.compile(sparse_step, mode="reduce-overhead", fullgraph=True)
        steps = []
        for _ in range(3):
            torch.compiler.cudagraph_mark_step_begin()
            xs = [t.clone().requires_grad_() for t in (q16, k16, v16)]
            o = ct(*xs)
            steps.append((o.detach().clone(), [g.clone() for g in torch.autograd.grad(o, xs, d16)]))
        torch.cuda.synchronize()
        check(all(torch.equal(o, eager_o) for o in outs), "reduce-overhead: compiled infllm.attention (no grad), "
              "3 calls (CUDA graph recorded, replayed) == eager bitwise")
        check(all(torch.equal(o, og.detach()) and all(torch.equal(a, t.grad) for a, t in zip(g, (xq, xk, xv)))
                  for o, g in steps), "reduce-overhead: a compiled training step's out, dq, dk, dv == eager bitwise")
        skips = counters["inductor"].get("cudagraph_skips", 0)
        check(skips == 0, f"reduce-overhead: the graphs ran as CUDA graphs ({skips} cudagraph skips)")
    except Exception as e:  # noqa: BLE001
        check(False, f"reduce-overhead (CUDA graphs) with infllm.attention: {type(e).__name__}: {str(e)[:600]}")
else:
    print("SKIP: torch without torch.library.custom_op: torch.compile with CUDA graphs was not tried")
with torch.no_grad():
    o_mix = infllm.attention(q16, k16, v16, cu_q, lay[1], mode="sparse", **P16)
    o_host = infllm.attention(q16, k16, v16, cu_q, cu_k, mode="sparse", **P16)
check(torch.equal(o_mix, eager_o) and torch.equal(o_host, eager_o),
      "cu_seqlens as host lists, or one list and one CUDA tensor without the maxima: the same result")
# the decode cache on the GPU (dense: 4100 keys < dense_len, so no near-tie can make the selections differ)
T = 4100
qd, kd, vd = (torch.from_numpy(x).to(dev, torch.bfloat16) for x in inputs(T, T, Hq, Hkv, D))
with infllm.DecodeCache(Hkv, D, T, torch.bfloat16, "cuda") as cache:
    cache.append(kd[:T - 1], vd[:T - 1])
    cache.append(kd[T - 1:], vd[T - 1:])
    got = cache.attend(qd[T - 1:])
want_o = infllm.attention(qd[T - 1:], kd, vd)
err = (got.float() - want_o.float()).abs().max().item()
check(err <= 2 * 2**-8 * want_o.float().abs().max().item(),
      f"CUDA decode step within 2 bf16 ulps of attention on the prefix ({err:.3g}; another kernel sums in another order)")
raises(lambda: infllm.attention(q16.cpu(), k16, v16), ValueError, "one device", "a host q with CUDA k / v")
raises(lambda: infllm.attention(q16, k16, v16, backend="cpu"), ValueError, "host tensors", "cpu backend on CUDA tensors")
raises(lambda: infllm.attention(q16.float(), k16.float(), v16.float()), infllm.InfllmError, "dtype",
       "f32 on CUDA refused by the library")
# an argument on another GPU than q's (the library takes any device memory as readable: a kernel reading a peer's
# memory without peer access is an illegal address, which ends the process's CUDA context)
if torch.cuda.device_count() >= 2:
    d1 = torch.device("cuda:1")
    lse_g = infllm.sparse_attention(q16, k16, v16, idx_g, *lay, **P16)[1]
    raises(lambda: infllm.sparse_attention(q16, k16, v16, idx_g.to(d1), *lay, **P16), ValueError, "topk_idx",
           "topk_idx on another GPU")
    raises(lambda: infllm.sparse_attention_backward(q16, k16, v16, idx_g, lse_g.to(d1), d16, *lay, **P16), ValueError,
           "lse", "lse on another GPU")
    with infllm.DecodeCache(Hkv, D, 16, torch.bfloat16, "cuda:0") as cache:
        raises(lambda: cache.append(kd[:1].to(d1), vd[:1].to(d1)), ValueError, "cuda:1", "cache append from another GPU")
else:
    print("SKIP: one GPU: arguments on another GPU than q's were not tried")
c.finish()
