"""`infllm run` and `infllm bench run` end to end on a tiny random GGUF: greedy generation is
deterministic and equals the argmax of the dumped logits, seeded sampling is reproducible,
--ctx overflow and bad flags give clear errors, bench run writes md/csv/json and adds llama.cpp's
row when llama-cpp-python is installed."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model_testlib import CHAT_ID, CHAT_SPECIALS, F32, Q8, Counter, Tiny, chat_fixture_ids, np, patched, run_logits, \
    write_chat_tokenizer  # noqa: E402

exe = sys.argv[1]
# a Windows build of the command under wine (test.sh's Windows stage): no FIFOs, no llama.cpp comparison
WINDOWS = os.environ.get("INFLLM_TEST_TARGET_OS") == "windows"
LCPP_ABSENT = "not available on Windows" if WINDOWS else "not installed"
c = Counter("py_model_cli")


def run(*args):
    return subprocess.run([exe, *args], capture_output=True, text=True)


with tempfile.TemporaryDirectory() as tmp:
    m = Tiny("llama", seed=5)
    g = os.path.join(tmp, "t.gguf")
    m.write_gguf(g, {"q": Q8, "k": Q8, "v": Q8, "o": Q8, "gate": Q8, "up": Q8, "down": Q8})
    toks = "3,14,15,92,65,35,89,79"
    p = run("run", "-m", g, "--tokens", toks, "-n", "6", "--temp", "0", "--print-ids", "-q", "--ignore-eos")
    c.check(p.returncode == 0, f"greedy run exits 0 ({p.stderr.strip()[:200]})")
    gen = [int(x) for x in p.stderr.split("generated ids:")[1].split()] if p.returncode == 0 else []
    c.check(len(gen) == 6, f"6 tokens generated: {gen}")
    # the first generated token is the argmax of the last prompt position's logits, and feeding
    # prompt + generated tokens reproduces each greedy choice
    full = [int(x) for x in toks.split(",")] + gen
    lg = run_logits(exe, g, full, tmp)
    n0 = len(toks.split(","))
    ok = all(int(lg[n0 - 1 + i].argmax()) == gen[i] for i in range(len(gen)))
    c.check(ok, "greedy decode (cache, one token at a time) == argmax of the prefill logits")
    a = run("run", "-m", g, "--tokens", toks, "-n", "8", "--temp", "0.9", "--seed", "42", "--print-ids", "-q",
            "--ignore-eos")
    b = run("run", "-m", g, "--tokens", toks, "-n", "8", "--temp", "0.9", "--seed", "42", "--print-ids", "-q",
            "--ignore-eos")
    c.check(a.returncode == 0 and a.stderr == b.stderr, "seeded sampling is reproducible")
    p = run("run", "-m", g, "--tokens", toks, "--ctx", "4")
    c.check(p.returncode == 2 and "--ctx" in p.stderr, f"prompt longer than --ctx: exit 2, '{p.stderr.strip()}'")
    # ids past int32 were cast: 4294967301 ran as token 5, 99999999999999999999 as -1
    for bad_ids in ("4294967301,2", "99999999999999999999"):
        p = run("run", "-m", g, "--tokens", bad_ids, "-n", "0", "-q")
        c.check(p.returncode == 2 and "--tokens" in p.stderr, f"--tokens {bad_ids}: exit 2 ({p.stderr.strip()[:100]})")
    # an id past the vocabulary was found only in the forward pass (exit 1, after the session was made); eval ppl
    # already called it a bad argument
    p = run("run", "-m", g, "--tokens", f"1,{m.V}", "-n", "1", "-q")
    c.check(p.returncode == 2 and "vocabulary" in p.stderr, f"--tokens 1,{m.V} (vocab {m.V}): exit 2 ({p.stderr.strip()[:100]})")
    # --dump-logits into a missing folder, or onto a folder, failed only after the prefill (exit 1)
    for bad, what in ((os.path.join(tmp, "no", "such", "l.npy"), "does not exist"), (tmp, "folder")):
        p = run("run", "-m", g, "--tokens", toks, "-n", "0", "-q", "--dump-logits", bad)
        c.check(p.returncode == 2 and what in p.stderr, f"--dump-logits {bad}: exit 2 before loading ({p.stderr.strip()[:100]})")
    # -n sized the token buffer although at most --ctx tokens are generated: -n 2147483647 asked for 8 GiB, and
    # under a 3 GiB address-space limit failed as "the prompt is empty" (--tokens) or "out of memory" (-p)
    import resource

    def as_limit():
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
    probe = subprocess.run([exe, "version"], capture_output=True, text=True, preexec_fn=as_limit)
    if probe.returncode == 0:  # sanitizer builds reserve more address space than that: they skip this check
        p = subprocess.run([exe, "run", "-m", g, "--tokens", toks, "-n", "2147483647", "--ctx", "16", "--temp", "0",
                            "-q", "--print-ids", "--ignore-eos"], capture_output=True, text=True, preexec_fn=as_limit)
        gen = p.stderr.split("generated ids:")[1].split() if p.returncode == 0 else []
        c.check(p.returncode == 0 and len(gen) == 16 - 8, f"-n 2147483647 --ctx 16 under a 3 GiB limit: 8 tokens "
                f"({p.returncode}, {p.stderr.strip()[:100]})")
    else:
        print("skip -n 2147483647 under a 3 GiB address-space limit (the binary does not start under it)")
    p = run("run", "-m", g, "--tokens", toks, "--attn", "bogus")
    c.check(p.returncode == 2, "bad --attn: exit 2")
    # a usage error about the options prints the usage after its message (it printed the message alone); one about
    # the inputs, found once the model is loaded (a prompt longer than --ctx, a layer the model lacks), does not:
    # the usage says nothing about them
    for args, msg, usage in ((["--attn", "bogus"], "--attn must be", True),
                             (["--dump-layers", "0"], "--dump-layers needs --dump-qkv", True),
                             (["--ctx", "4"], "more than the context", False),
                             (["--dump-qkv", os.path.join(tmp, "dq"), "--dump-layers", "7"], "--dump-layers: layer 7", False)):
        p = run("run", "-m", g, "--tokens", toks, "-q", *args)
        c.check(p.returncode == 2 and p.stderr.startswith("infllm run: ") and msg in p.stderr.split("\n")[0] and
                ("\nusage: infllm run [options]\n" in p.stderr) == usage and p.stdout == "",
                f"run {' '.join(args)}: exit 2, {'the message then the usage' if usage else 'the message alone'}: "
                f"{p.stderr[:160]!r}")
    # two prompt sources: -f won over -p and --tokens over both, silently
    for extra in (["-p", "x", "--tokens", toks], ["-p", "x", "-f", __file__], ["-f", __file__, "--tokens", toks]):
        p = run("run", "-m", g, "-n", "1", *extra)
        c.check(p.returncode == 2 and "once" in p.stderr, f"run {' '.join(extra[::2])}: exit 2 ({p.stderr.strip()[:100]})")
    # --system / --answer-prefix without --chat, and --chat with --tokens, were silently ignored
    for extra, what in ((["--tokens", toks, "--system", "be brief"], "--system"), (["-p", "x", "--answer-prefix", "A:"], "--answer-prefix"),
                        (["--tokens", toks, "--chat"], "--chat")):
        p = run("run", "-m", g, "-n", "1", *extra)
        c.check(p.returncode == 2 and what in p.stderr, f"run {' '.join(extra[::2])}: exit 2 ({p.stderr.strip()[:100]})")
    # --chat -f FILE with a NUL byte: the chat template took the text up to it, without a word
    pn = os.path.join(tmp, "nul-prompt.txt")
    with open(pn, "wb") as f:
        f.write(b"first part\x00second part")
    p = run("run", "-m", g, "-f", pn, "--chat", "-n", "1")
    c.check(p.returncode == 2 and "NUL" in p.stderr, f"run --chat -f with a NUL byte: exit 2 ({p.stderr.strip()[:100]})")
    # sampling options outside their domain were accepted: --repeat-penalty 0 divided the logits by zero
    for opt, val in (("--repeat-penalty", "0"), ("--repeat-penalty", "-1"), ("--top-p", "-0.5"), ("--top-p", "1.5"),
                     ("--temp", "-1"), ("--top-k", "-3")):
        p = run("run", "-m", g, "--tokens", toks, "-n", "2", opt, val)
        c.check(p.returncode == 2 and "sampling" in p.stderr, f"{opt} {val}: exit 2 ({p.stderr.strip()[:100]})")
    # --threads past the library's bound failed only after the model had loaded (attention cache creation)
    p = run("run", "-m", g, "--tokens", toks, "-n", "1", "--threads", "5000")
    c.check(p.returncode == 2 and "--threads" in p.stderr, f"--threads 5000: exit 2 before loading ({p.stderr.strip()[:100]})")
    # the sparse options' "not given" mark was -9, a value they take: --topk -9 (and --block-size, --dense-len, ...
    # -9) ran silently with the model's value; INT_MIN, the mark now, is refused by the option parser itself
    for opt in ("--topk", "--block-size", "--local-blocks", "--init-blocks", "--dense-len", "--kernel-size",
                "--kernel-stride"):
        for val in ("-9", "-2147483648"):
            p = run("run", "-m", g, "--tokens", toks, "-n", "1", "-q", opt, val)
            name = opt[2:].replace("-", "_")
            c.check(p.returncode != 0 and (name in p.stderr or opt in p.stderr),
                    f"{opt} {val}: refused naming it (exit {p.returncode}, {p.stderr.strip()[:100]})")
    p = run("run", "-m", os.path.join(tmp, "missing.gguf"), "-p", "x")
    c.check(p.returncode == 1 and "missing.gguf" in p.stderr, "missing model: exit 1 with the path")
    # the prompt file and a --tokens list were read only after the model had loaded (seconds to minutes for a real
    # model): now first, so that with a model that cannot load either the prompt's error comes alone
    nofile = os.path.join(tmp, "no-such-prompt.txt")
    for cmd, code, what in ((["run", "-f", nofile], 1, "no-such-prompt.txt"), (["run", "--tokens", "1,x"], 2, "--tokens"),
                            (["eval", "ppl", "-f", nofile], 1, "no-such-prompt.txt"), (["eval", "ppl", "--tokens", "1,x"], 2, "x")):
        p = run(*cmd, "-m", os.path.join(tmp, "missing.gguf"))
        c.check(p.returncode == code and what in p.stderr and "missing.gguf" not in p.stderr,
                f"{' '.join(cmd[:-1])} with a model that cannot load: exit {code} on the input first ({p.returncode}, {p.stderr.strip()[:120]})")
    # a path that is neither a .gguf nor a folder was read as a Hugging Face folder ('X/config.json: cannot open')
    p = run("run", "-m", os.path.join(tmp, "missing"), "-p", "x")
    c.check(p.returncode == 1 and "No such file" in p.stderr and "config.json" not in p.stderr,
            f"missing model without .gguf: exit 1 naming it ({p.stderr.strip()[:120]})")
    # a folder without config.json said "cannot open: ... (offset 0)", a byte offset that means nothing for a file
    # that is not there; a config.json that is not JSON says where
    emptydir = os.path.join(tmp, "emptydir")
    os.makedirs(emptydir, exist_ok=True)
    p = run("run", "-m", emptydir, "-p", "x")
    c.check(p.returncode == 1 and "config.json: cannot open" in p.stderr and "offset" not in p.stderr,
            f"a folder without config.json: exit 1 naming the file ({p.stderr.strip()[:160]})")
    with open(os.path.join(emptydir, "config.json"), "w") as f:
        f.write('{"model_type":')
    p = run("run", "-m", emptydir, "-p", "x")
    c.check(p.returncode == 1 and "config.json: JSON error at byte 14" in p.stderr,
            f"a config.json cut short: exit 1 with the byte ({p.stderr.strip()[:160]})")
    renamed = os.path.join(tmp, "model.bin")
    shutil.copyfile(g, renamed)
    p = run("run", "-m", renamed, "--tokens", toks, "-n", "2", "--temp", "0", "-q")
    c.check(p.returncode == 0, f"a GGUF file under another name loads ({p.stderr.strip()[-120:]})")
    # a tokenizer that fails to load was reported with its prefix repeated ("no tokenizer: tokenizer: tokenizer:
    # unsupported ...") and without the file: now one prefix, naming the file
    import gguf as _gguf
    gt_bad = os.path.join(tmp, "badtok.gguf")

    def with_bert_tokenizer(orig):
        def hdr(self, *a, **k):
            self.add_tokenizer_model("bert")
            self.add_token_list([f"t{i}" for i in range(m.V)])
            return orig(self, *a, **k)
        return hdr
    with patched(_gguf.GGUFWriter, "write_header_to_file", with_bert_tokenizer):
        Tiny("llama", seed=5).write_gguf(gt_bad, {})
    hf_tok = os.path.join(tmp, "hf-badtok")
    m.write_hf(hf_tok)
    with open(os.path.join(hf_tok, "tokenizer.json"), "w") as f:
        json.dump({"model": {"type": "WordPiece", "vocab": {}}}, f)
    text_file = os.path.join(tmp, "text.txt")
    with open(text_file, "w") as f:
        f.write("hello there, a short text")
    for model, names, what in ((gt_bad, gt_bad, "bert"), (g, g, "tokenizer.ggml.model"),
                               (hf_tok, os.path.join(hf_tok, "tokenizer.json"), "WordPiece")):
        for cmd in (["run", "-m", model, "-p", "hi", "-n", "1", "-q"], ["eval", "ppl", "-m", model, "-f", text_file]):
            p = run(*cmd)
            line = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ""
            c.check(p.returncode == 1 and what in line and f"no tokenizer: {names}: " in line and line.count("tokenizer:") == 1,
                    f"{' '.join(cmd[:2]) if cmd[0] == 'eval' else 'run'} -m {os.path.basename(model)} without a usable tokenizer: one prefix, the file ({line[:160]})")
    bad = os.path.join(tmp, "bad.gguf")
    with open(g, "rb") as f, open(bad, "wb") as h:
        h.write(f.read()[: os.path.getsize(g) // 2])
    p = run("run", "-m", bad, "--tokens", toks)
    c.check(p.returncode == 1 and "truncated" in p.stderr, f"truncated GGUF: '{p.stderr.strip()[:120]}'")
    # --dump-logits onto the model or the prompt file replaced it with the logits
    gv = os.path.join(tmp, "victim.gguf")
    with open(g, "rb") as f, open(gv, "wb") as h:
        h.write(f.read())
    p = run("run", "-m", gv, "--tokens", toks, "-n", "0", "-q", "--dump-logits", gv)
    with open(g, "rb") as f, open(gv, "rb") as h:
        same = f.read() == h.read()
    c.check(p.returncode == 2 and "model" in p.stderr and same, f"--dump-logits MODEL: refused, model kept ({p.stderr.strip()[:120]})")
    pf = os.path.join(tmp, "prompt.txt")
    with open(pf, "w") as f:
        f.write("hello")
    p = run("run", "-m", g, "-f", pf, "-n", "0", "-q", "--dump-logits", pf)
    c.check(p.returncode == 2 and "prompt file" in p.stderr and open(pf).read() == "hello",
            f"--dump-logits PROMPT_FILE: refused, prompt kept ({p.stderr.strip()[:120]})")
    # --dump-qkv DIR writes tokens.npy and {q,k,v}_layer<L>.npy there: a prompt file or a --dump-logits file of
    # one of those names was overwritten
    dq = os.path.join(tmp, "dq")
    os.makedirs(dq, exist_ok=True)
    pq = os.path.join(dq, "tokens.npy")
    with open(pq, "w") as f:
        f.write("hello")
    p = run("run", "-m", g, "-f", pq, "-n", "0", "-q", "--dump-qkv", dq)
    c.check(p.returncode == 2 and "prompt file" in p.stderr and open(pq).read() == "hello",
            f"--dump-qkv onto the prompt file: refused, prompt kept ({p.stderr.strip()[:120]})")
    p = run("run", "-m", g, "--tokens", toks, "-n", "0", "-q", "--dump-qkv", dq, "--dump-logits",
            os.path.join(dq, "v_layer12.npy"))
    c.check(p.returncode == 2 and "--dump-logits" in p.stderr, f"--dump-logits DIR/v_layer12.npy: refused ({p.stderr.strip()[:120]})")
    p = run("run", "-m", g, "--tokens", toks, "-n", "0", "-q", "--dump-qkv", dq, "--dump-layers", "0", "--dump-logits",
            os.path.join(dq, "logits.npy"))
    c.check(p.returncode == 0 and os.path.exists(os.path.join(dq, "q_layer0.npy")) and os.path.exists(os.path.join(dq, "logits.npy")),
            f"--dump-qkv with --dump-logits under another name still writes both ({p.stderr.strip()[-120:]})")
    # NaN weights make every logit NaN: the sampler read past its (empty) candidate list and
    # crashed (temperature > 0), or greedy printed token 0; now a clear error, exit 1
    mn = Tiny("llama", seed=5)
    mn.out[:] = np.nan
    gn = os.path.join(tmp, "nan.gguf")
    mn.write_gguf(gn, {})
    for temp in ("0.8", "0"):
        p = run("run", "-m", gn, "--tokens", toks, "-n", "3", "--temp", temp, "-q")
        c.check(p.returncode == 1 and "NaN" in p.stderr,
                f"all-NaN logits, --temp {temp}: exit 1 with a message ({p.returncode}, '{p.stderr.strip()[:120]}')")
    # config values outside their domain loaded and gave NaN or meaningless logits (rms_norm_eps -1
    # crashed the sampler): now refused at load, naming the value
    hf = os.path.join(tmp, "hf")
    m.write_hf(hf)
    cfg0 = json.load(open(os.path.join(hf, "config.json")))
    hd = cfg0.get("head_dim") or cfg0["hidden_size"] // cfg0["num_attention_heads"]
    for upd, what in (({"rms_norm_eps": -1}, "epsilon"), ({"rope_theta": 0}, "RoPE base"),
                      ({"model_type": "minicpm", "dim_model_base": 0}, "logit")):
        with open(os.path.join(hf, "config.json"), "w") as f:
            json.dump({**cfg0, **upd}, f)
        p = run("run", "-m", hf, "--tokens", toks, "-n", "2", "-q")
        c.check(p.returncode == 1 and what in p.stderr, f"config {upd}: exit 1, '{p.stderr.strip()[:160]}'")
    # integers past int32 were cast: hidden_size 2^32 + E loaded as E (a model that is not the one described)
    for key in ("hidden_size", "num_attention_heads", "intermediate_size"):
        with open(os.path.join(hf, "config.json"), "w") as f:
            json.dump({**cfg0, key: 2**32 + cfg0[key]}, f)
        p = run("run", "-m", hf, "--tokens", toks, "-n", "2", "-q")
        c.check(p.returncode == 1 and p.stderr.strip(), f"config {key} 2^32 + {cfg0[key]}: exit 1, '{p.stderr.strip()[:160]}'")
    # a value of the wrong JSON type fell back to its default silently ("rope_theta": "x" ran at 10000,
    # "num_hidden_layers": "4" as 'missing hyper-parameters', a rope_type 7 unscaled): now refused naming the key
    for upd, key in (({"rope_theta": "x"}, "rope_theta"), ({"num_hidden_layers": "4"}, "num_hidden_layers"),
                     ({"head_dim": 32.5}, "head_dim"), ({"num_key_value_heads": 2 ** 70}, "num_key_value_heads"),
                     ({"tie_word_embeddings": "false"}, "tie_word_embeddings"), ({"model_type": ["llama"]}, "model_type"),
                     ({"rope_scaling": {"rope_type": 7}}, "rope_scaling.rope_type"), ({"rope_scaling": "linear"}, "rope_scaling"),
                     ({"rope_scaling": {"rope_type": "linear", "factor": "2"}}, "rope_scaling.factor"),
                     ({"sparse_config": {"topk": "8"}}, "sparse_config.topk"), ({"sparse_config": [64]}, "sparse_config"),
                     # LongRoPE factors: a message that named neither the key nor the element ("bad rope factor"), and
                     # a 0 factor (an infinite wavelength divisor) was taken
                     ({"rope_scaling": {"rope_type": "longrope", "long_factor": [1.0], "short_factor": [1.0]}},
                      "rope_scaling.long_factor"),
                     ({"rope_scaling": {"rope_type": "longrope", "long_factor": [1.0] * (hd // 2),
                                        "short_factor": [1.0] * (hd // 2 - 1) + ["2"]}}, f"rope_scaling.short_factor[{hd // 2 - 1}]"),
                     ({"rope_scaling": {"rope_type": "longrope", "long_factor": [0.0] * (hd // 2),
                                        "short_factor": [1.0] * (hd // 2)}}, "rope_scaling.long_factor[0]")):
        with open(os.path.join(hf, "config.json"), "w") as f:
            json.dump({**cfg0, **upd}, f)
        p = run("run", "-m", hf, "--tokens", toks, "-n", "2", "-q")
        c.check(p.returncode == 1 and (f"{key} must be" in p.stderr or f"{key} is not" in p.stderr),
                f"config {upd}: exit 1 naming {key} ({p.stderr.strip()[:160]})")
    # JSON null where HF writes it keeps the default, and integral numbers are integers: the same logits
    with open(os.path.join(hf, "config.json"), "w") as f:
        json.dump(cfg0, f)
    base_logits = run_logits(exe, hf, [3, 1, 4], tmp)

    def same_logits(upd):
        """config.json updated by upd loads and gives base_logits bitwise: (same, why)"""
        with open(os.path.join(hf, "config.json"), "w") as f:
            json.dump({**cfg0, **upd}, f)
        try:
            return np.array_equal(run_logits(exe, hf, [3, 1, 4], tmp), base_logits), ""
        except RuntimeError as err:
            return False, str(err)[-140:]
    for upd in ({"head_dim": None, "rope_scaling": None, "sparse_config": None, "rope_theta": None, "tie_word_embeddings": None},
                {"rope_scaling": {"rope_type": None, "type": "default"}}, {"max_position_embeddings": 4096.0, "hidden_size": float(m.E)}):
        same, why = same_logits(upd)
        c.check(same, f"config {upd}: loads with the defaults, same logits {why}")
    # fields that make transformers run another model than this forward computes ran as plain full-attention SiLU
    # with full RoPE (scripts/hf_check.py against transformers 5.24): now refused naming them
    FULL = ["full_attention"] * m.L
    for upd, what in (({"hidden_act": "gelu"}, "hidden_act"), ({"partial_rotary_factor": 0.5}, "partial_rotary_factor"),
                      ({"rope_parameters": {"rope_type": "default", "partial_rotary_factor": 0.5}}, "partial_rotary_factor"),
                      ({"rope_parameters": {"full_attention": {"rope_type": "default"}}}, "per layer type"),
                      # a sliding_attention layer without a window (transformers refuses it too), a kind of layer
                      # this runtime does not have, a list of another length
                      ({"model_type": "qwen2", "layer_types": FULL[:-1] + ["sliding_attention"]}, "sliding_attention"),
                      ({"model_type": "qwen2", "layer_types": FULL[:-1] + ["chunked_attention"]}, "chunked_attention"),
                      ({"model_type": "qwen2", "layer_types": FULL + FULL}, "entries"),
                      ({"model_type": "qwen2", "layer_types": "full_attention"}, "layer_types must be")):
        with open(os.path.join(hf, "config.json"), "w") as f:
            json.dump({**cfg0, **upd}, f)
        p = run("run", "-m", hf, "--tokens", toks, "-n", "2", "-q")
        c.check(p.returncode == 1 and what in p.stderr, f"config {upd}: exit 1 naming {what} ({p.stderr.strip()[-150:]})")
    # ... and what transformers also runs as full attention / SiLU loads (a sliding window of 8 or 4096 tokens, from
    # layer 0 or 1 on, over 3 tokens is the full attention; py_model_qwen runs windows that reach)
    for upd in ({"hidden_act": "silu"}, {"hidden_act": "swish"}, {"partial_rotary_factor": 1.0},
                {"model_type": "qwen2", "use_sliding_window": True, "sliding_window": 8, "max_window_layers": 1},
                {"model_type": "qwen2", "use_sliding_window": True, "max_window_layers": 0},
                {"model_type": "qwen2", "use_sliding_window": True, "sliding_window": 8,
                 "layer_types": FULL[:-1] + ["sliding_attention"]},
                {"model_type": "qwen2", "use_sliding_window": True, "sliding_window": 8, "max_window_layers": m.L},
                {"model_type": "qwen2", "use_sliding_window": True, "sliding_window": None, "max_window_layers": 0},
                {"model_type": "qwen2", "use_sliding_window": False, "sliding_window": 8, "max_window_layers": 0},
                {"model_type": "qwen2", "layer_types": FULL}, {"use_sliding_window": True, "max_window_layers": 0}):
        same, why = same_logits(upd)
        c.check(same, f"config {upd}: loads, same logits {why}")
    with open(os.path.join(hf, "config.json"), "w") as f:
        json.dump(cfg0, f)
    p = run("run", "-m", hf, "--tokens", toks, "-n", "2", "-q")
    c.check(p.returncode == 0, f"the HF folder with its own config still runs ({p.stderr.strip()[-160:]})")
    # a file of the folder given as the model was read as a GGUF with no hint
    p = run("run", "-m", os.path.join(hf, "config.json"), "--tokens", toks, "-n", "1", "-q")
    c.check(p.returncode == 1 and "loaded from its folder" in p.stderr and hf in p.stderr,
            f"-m HF/config.json: exit 1 naming the folder ({p.stderr.strip()[:160]})")
    # --dump-logits onto a Hugging Face folder's own files (config.json, the weights) replaced them
    for name in ("config.json", "model.safetensors"):
        victim = os.path.join(hf, name)
        before = open(victim, "rb").read()
        p = run("run", "-m", hf, "--tokens", toks, "-n", "0", "-q", "--dump-logits", victim)
        c.check(p.returncode == 2 and "model" in p.stderr and open(victim, "rb").read() == before,
                f"--dump-logits HF/{name}: refused, file kept ({p.stderr.strip()[:120]})")
    p = run("run", "-m", hf, "--tokens", toks, "-n", "0", "-q", "--dump-logits", os.path.join(hf, "logits.npy"))
    c.check(p.returncode == 0 and os.path.exists(os.path.join(hf, "logits.npy")),
            f"--dump-logits into the HF folder under a new name still writes ({p.stderr.strip()[-120:]})")
    # tensors that change the result but that the forward does not apply were silently dropped: an o_proj or MLP
    # bias (llama's attention_bias / mlp_bias), and a config with tie_word_embeddings false but no lm_head ran on the
    # embedding instead
    from safetensors.numpy import load_file, save_file
    st_path = os.path.join(hf, "model.safetensors")
    st0 = load_file(st_path)
    for extra in ("model.layers.1.self_attn.o_proj.bias", "model.layers.0.mlp.down_proj.bias", "lm_head.bias"):
        save_file({**st0, extra: np.ones(m.E if "lm_head" not in extra else m.V, np.float32)}, st_path)
        p = run("run", "-m", hf, "--tokens", toks, "-n", "1", "-q")
        c.check(p.returncode == 1 and extra in p.stderr, f"HF checkpoint with {extra}: exit 1 naming it ({p.stderr.strip()[-120:]})")
    # q/k/v biases where the config's attention has none (llama with attention_bias false) and q/k norms outside
    # qwen3: transformers leaves them unread, the forward applied them
    KVD = m.KV * m.D
    for extra, n, what in (("model.layers.0.self_attn.k_proj.bias", KVD, "attention_bias is false"),
                           ("model.layers.1.self_attn.q_norm.weight", m.D, "q_norm")):
        save_file({**st0, extra: np.ones(n, np.float32)}, st_path)
        p = run("run", "-m", hf, "--tokens", toks, "-n", "1", "-q")
        c.check(p.returncode == 1 and what in p.stderr, f"llama checkpoint with {extra}: exit 1 ({p.stderr.strip()[-120:]})")
    with open(os.path.join(hf, "config.json"), "w") as f:
        json.dump({**cfg0, "attention_bias": True}, f)
    save_file({**st0, "model.layers.0.self_attn.k_proj.bias": np.ones(KVD, np.float32)}, st_path)
    p = run("run", "-m", hf, "--tokens", toks, "-n", "1", "-q")
    c.check(p.returncode == 0, f"... with attention_bias true a k_proj bias loads ({p.stderr.strip()[-120:]})")
    with open(os.path.join(hf, "config.json"), "w") as f:
        json.dump(cfg0, f)
    save_file({k: v for k, v in st0.items() if k != "lm_head.weight"}, st_path)
    p = run("run", "-m", hf, "--tokens", toks, "-n", "1", "-q")
    c.check(p.returncode == 1 and "lm_head" in p.stderr, f"tie_word_embeddings false without lm_head: exit 1 ({p.stderr.strip()[-120:]})")
    with open(os.path.join(hf, "config.json"), "w") as f:
        json.dump({**cfg0, "tie_word_embeddings": True}, f)
    p = run("run", "-m", hf, "--tokens", toks, "-n", "1", "-q")
    c.check(p.returncode == 0, f"... and with tie_word_embeddings true it runs tied ({p.stderr.strip()[-120:]})")
    save_file(st0, st_path)
    with open(os.path.join(hf, "config.json"), "w") as f:
        json.dump(cfg0, f)
    import gguf as _gguf

    def with_tensors(**extra):  # GGUFWriter.write_header_to_file adding these tensors first
        def make(orig):
            def hdr(self, *a, **k):
                for name, arr in extra.items():
                    self.add_tensor(name, arr)
                return orig(self, *a, **k)
            return hdr
        return make
    gb = os.path.join(tmp, "bo.gguf")
    with patched(_gguf.GGUFWriter, "write_header_to_file",
                 with_tensors(**{"blk.0.attn_output.bias": np.ones(m.E, np.float32)})):
        Tiny("llama", seed=5).write_gguf(gb, {})
    p = run("run", "-m", gb, "--tokens", toks, "-n", "1", "-q")
    c.check(p.returncode == 1 and "blk.0.attn_output.bias" in p.stderr,
            f"GGUF with blk.0.attn_output.bias: exit 1 naming it ({p.stderr.strip()[-120:]})")
    # a GGUF tensor of a type the runtime does not compute with (I32, F64, ...) made the whole file unreadable, even
    # in a role the model never reads; now only a tensor the model uses is refused for its type
    ge = os.path.join(tmp, "extra.gguf")
    with patched(_gguf.GGUFWriter, "write_header_to_file",
                 with_tensors(**{"extra.token_ids": np.arange(7, dtype=np.int32),
                                 "extra.f64": np.ones((3, 2), np.float64)})):
        Tiny("llama", seed=5).write_gguf(ge, {})
    g0 = os.path.join(tmp, "plain.gguf")
    Tiny("llama", seed=5).write_gguf(g0, {})
    try:
        same = np.array_equal(run_logits(exe, ge, [3, 1, 4], tmp), run_logits(exe, g0, [3, 1, 4], tmp))
        why = ""
    except RuntimeError as err:
        same, why = False, str(err)[-120:]
    c.check(same, f"GGUF with unused I32 / F64 tensors loads, same logits as without them {why}")
    mi = Tiny("llama", seed=5)

    def q_as_i8(orig):
        def add(self, name, arr, *a, **k):
            if name == "blk.0.attn_q.weight":
                return orig(self, name, np.zeros(arr.shape, np.int8))
            return orig(self, name, arr, *a, **k)
        return add
    gi = os.path.join(tmp, "i8q.gguf")
    with patched(_gguf.GGUFWriter, "add_tensor", q_as_i8):
        mi.write_gguf(gi, {})
    p = run("run", "-m", gi, "--tokens", toks, "-n", "1", "-q")
    c.check(p.returncode == 1 and "blk.0.attn_q.weight" in p.stderr and "I8" in p.stderr,
            f"GGUF with an I8 attn_q: exit 1 naming the tensor and type ({p.stderr.strip()[-120:]})")
    # a FIFO as the model (or as a file of an HF folder) blocked the open forever, and a config.json linked to
    # /dev/zero was read until memory ran out: each is now 'not a regular file', exit 1 (POSIX only: a Windows
    # build of the command, run under wine, sees neither)
    fifo_dir = os.path.join(tmp, "fifo")
    hf_fifo, hf_zero = os.path.join(fifo_dir, "hf-st"), os.path.join(fifo_dir, "hf-cfg")
    if WINDOWS:
        print("SKIP: FIFO / /dev/zero models (the command is a Windows build)")
    else:
        os.makedirs(fifo_dir)
        os.mkfifo(os.path.join(fifo_dir, "m.gguf"))
        shutil.copytree(hf, hf_fifo)
        os.remove(os.path.join(hf_fifo, "model.safetensors"))
        os.mkfifo(os.path.join(hf_fifo, "model.safetensors"))
        shutil.copytree(hf, hf_zero)
        os.remove(os.path.join(hf_zero, "config.json"))
        os.symlink("/dev/zero", os.path.join(hf_zero, "config.json"))
    for model in () if WINDOWS else (os.path.join(fifo_dir, "m.gguf"), hf_fifo, hf_zero):
        try:
            p = subprocess.run([exe, "run", "-m", model, "--tokens", toks, "-n", "1", "-q"], capture_output=True,
                               text=True, timeout=30)
            ok, why = p.returncode == 1 and "regular file" in p.stderr, p.stderr.strip()[-100:]
        except subprocess.TimeoutExpired:
            ok, why = False, "still running after 30 s"
        c.check(ok, f"-m {os.path.relpath(model, tmp)} (a FIFO or /dev/zero inside): exit 1 ({why})")
    mt = Tiny("llama", seed=5)
    mt.theta = -10000.0
    gt = os.path.join(tmp, "theta.gguf")
    mt.write_gguf(gt, {})
    p = run("run", "-m", gt, "--tokens", toks, "-n", "2", "-q")
    c.check(p.returncode == 1 and "RoPE base" in p.stderr, f"GGUF rope.freq_base -10000: exit 1, '{p.stderr.strip()[:160]}'")
    for fmt in ("md", "csv", "json"):
        p = run("bench", "run", "-m", g, "--lengths", "64,128", "--gen", "2", "--format", fmt, "--llamacpp", "off")
        ok = p.returncode == 0
        if ok and fmt == "json":
            rows = json.loads(p.stdout)
            ok = len(rows) == 4 and all(r["prefill_tok_s"] > 0 and r["decode_tok_s"] > 0 for r in rows)
        elif ok and fmt == "csv":
            ok = len(p.stdout.strip().splitlines()) == 5
        elif ok:
            ok = "| 128 | sparse |" in p.stdout
        c.check(ok, f"bench run --format {fmt}")
    p = run("bench", "run", "-m", g, "--lengths", "64", "--gen", "2", "--llamacpp", "sometimes")
    c.check(p.returncode == 2 and "--llamacpp must be auto, on or off" in p.stderr, "bad --llamacpp: exit 2")
    p = run("bench", "run", "-m", g, "--lengths", "64", "--gen", "2", "--format", "xml")
    c.check(p.returncode == 2 and "--format must be md, csv or json" in p.stderr, f"bad --format: exit 2 ({p.stderr!r})")
    # 2^62 tokens: the token buffer's byte count wrapped to 8 and filling it overflowed the heap (ASan)
    p = run("bench", "run", "-m", g, "--lengths", "4611686018427387904", "--gen", "1", "--llamacpp", "off")
    c.check(p.returncode == 2 and "--lengths" in p.stderr, f"bench run --lengths 2^62: exit 2 ({p.stderr.strip()[-120:]})")
    # --modes was matched by substring: 'dense,sprase' ran dense alone, exit 0
    for modes in ("dense,sprase", "", "dense,"):
        p = run("bench", "run", "-m", g, "--lengths", "64", "--gen", "1", "--modes", modes, "--llamacpp", "off")
        c.check(p.returncode == 2 and "--modes" in p.stderr, f"bench run --modes '{modes}': exit 2 ({p.stderr.strip()[-100:]})")
    # --attn and --ctx were accepted and silently ignored (--modes and --lengths decide)
    # (-1 was the mark of "--ctx not given", so --ctx -1 still ran)
    for opt, val in (("--attn", "sparse"), ("--ctx", "100000"), ("-c", "8"), ("--ctx", "-1")):
        p = run("bench", "run", "-m", g, "--lengths", "64", "--gen", "1", "--llamacpp", "off", opt, val)
        c.check(p.returncode == 2 and "does not apply" in p.stderr, f"bench run {opt} {val}: exit 2 ({p.stderr.strip()[-100:]})")
    # --help listed those two refused options, and the shared options' defaults ('--topk (model config or 64)',
    # '--local-blocks (32)') where bench run sets 12 top-k + 4 local blocks of 64 whatever the model says
    p = run("bench", "run", "--help")
    h = p.stdout
    c.check(p.returncode == 0 and "--attn" not in h and "--ctx" not in h and "--modes" in h,
            "bench run --help: no --attn / --ctx (refused), --modes listed")
    hl = {ln.split()[0]: ln for ln in h.splitlines() if ln.strip().startswith("--")}
    c.check(hl["--topk"].endswith("(12)") and hl["--local-blocks"].endswith("(4)") and hl["--block-size"].endswith("(64)")
            and hl["--init-blocks"].endswith("(1)"), "bench run --help: its own defaults, 12 top-k + 4 local of 64, 1 init")
    # the llama.cpp comparison: rows when llama-cpp-python can run the file, else a clear skip
    # (auto) or an error (on)
    try:
        import llama_cpp  # noqa: F401
        have_lcpp = True
    except Exception:
        have_lcpp = False
    p = run("bench", "run", "-m", g, "--lengths", "64", "--gen", "2", "--format", "json", "--llamacpp", "auto")
    ok = p.returncode == 0
    if ok:
        rows = json.loads(p.stdout)
        lc = [r for r in rows if r["attention"] == "llama.cpp"]
        ok = (len(rows) == 3 and len(lc) == 1 and lc[0]["prefill_tok_s"] > 0) or (
            len(rows) == 2 and "llama.cpp comparison skipped" in p.stderr)
        ok = ok and ((have_lcpp and not WINDOWS) or LCPP_ABSENT in p.stderr)
    c.check(ok, f"bench run --llamacpp auto: llama.cpp row or a skip message ({p.stderr.strip()[-160:]})")
    if not have_lcpp or WINDOWS:
        p = run("bench", "run", "-m", g, "--lengths", "64", "--gen", "2", "--llamacpp", "on")
        c.check(p.returncode == 1 and LCPP_ABSENT in p.stderr,
                f"--llamacpp on without llama-cpp-python (or on Windows): exit 1, '{LCPP_ABSENT}'")
    # logits partly NaN / inf (a NaN and an inf weight in two rows of the output head): run sampled among the rest
    # without a word; now one warning naming the position and the counts (all NaN: exit 1, tested above)
    mw = Tiny("llama", seed=4)
    mw.out[7, 3] = np.nan
    mw.out[9, 1] = np.inf
    gw = os.path.join(tmp, "partial_nan.gguf")
    mw.write_gguf(gw, {"emb": F32, "out": F32})
    p = run("run", "-m", gw, "--tokens", "1,2,3", "-n", "4", "-q", "--temp", "0")
    c.check(p.returncode == 0 and len(p.stdout.split()) == 4 and p.stderr.count("warning:") == 1 and
            "logits at position 2 are not all finite (1 NaN, 1 inf of 96)" in p.stderr,
            f"run on partly NaN / inf logits: 4 tokens, one warning ({p.stderr.strip()[-200:]!r})")
    # a llama.cpp run that reports a time of 0 (a stand-in llama_cpp module whose clock stands still): its rates
    # were printed as 'inf' in json (json.loads refused the file) and csv; now null and empty fields
    fake = os.path.join(tmp, "fake_llama", "llama_cpp")
    os.makedirs(fake)
    with open(os.path.join(fake, "__init__.py"), "w") as fh:
        fh.write("import time\ntime.perf_counter = lambda: 0.0\n\n\nclass Llama:\n"
                 "    def __init__(self, **kw): pass\n    def reset(self): pass\n    def eval(self, ids): pass\n")
    env = {**os.environ, "PYTHONPATH": os.path.dirname(fake)}

    def no_constant(x):
        raise ValueError(f"non-standard JSON constant {x}")
    if WINDOWS:
        print("SKIP: a llama.cpp time of 0 (no llama.cpp comparison on Windows)")
    for fmt in () if WINDOWS else ("json", "csv"):
        p = subprocess.run([exe, "bench", "run", "-m", g, "--lengths", "16", "--gen", "1", "--format", fmt,
                            "--llamacpp", "on"], capture_output=True, text=True, env=env)
        try:
            if fmt == "json":
                rows = json.loads(p.stdout, parse_constant=no_constant)
            else:
                import csv
                import io
                t = list(csv.reader(io.StringIO(p.stdout)))
                rows = [dict(zip(t[0], r)) for r in t[1:] if len(r) == len(t[0])] if len(t) == 4 else []
            lc = [r for r in rows if r["attention"] == "llama.cpp"]
            want = None if fmt == "json" else ""
            ok = p.returncode == 0 and len(rows) == 3 and len(lc) == 1 and lc[0]["prefill_tok_s"] == want and \
                lc[0]["decode_tok_s"] == want
        except ValueError as e:
            ok, rows = False, str(e)
        c.check(ok, f"bench run --format {fmt} with a llama.cpp time of 0: rates {'null' if fmt == 'json' else 'empty'} "
                f"(exit {p.returncode}) {p.stdout.strip()[-140:]!r}")
    # --interactive (-i): turns from stdin, a line each, over the same caches; the last turn's tokens equal a one-shot
    # run over everything the conversation fed (each turn's prompt ids and the generated tokens but the last, which
    # the next turn carries or, an end-of-generation token other than <|im_end|>, drops)
    gi = os.path.join(tmp, "chat-i.gguf")
    Tiny("llama", seed=8, n_vocab=300).write_gguf(gi, {}, tokenizer="chat")

    def interactive(model, stdin, *extra):
        p = subprocess.run([exe, "run", "-m", model, "-i", "-n", "6", "--temp", "0", "--print-ids", "-q", *extra],
                           input=stdin.encode(), capture_output=True)
        err = p.stderr.decode(errors="replace")
        turns = [[int(x) for x in ln.split(":")[1].split()] for ln in err.splitlines()
                 if ln.startswith(("prompt ids:", "generated ids:"))]
        return p, err, list(zip(turns[0::2], turns[1::2]))

    for label, stdin, extra in (("--chat", "hello\n\nhow are you\r\nbye", ["--chat"]),
                                ("--chat -p", "and then?\n", ["--chat", "-p", "hi there"]),
                                ("raw text -p", "more words\nand more\n", ["-p", "Once upon a time"])):
        p, err, turns = interactive(gi, stdin, *extra)
        fed = [t for pr, ge in turns[:-1] for t in pr + ge[:-1]] + (turns[-1][0] if turns else [])
        want = []
        if turns:
            q = subprocess.run([exe, "run", "-m", gi, "--tokens", ",".join(map(str, fed)), "-n", "6", "--temp", "0",
                                "--print-ids", "-q"], capture_output=True)  # (random bytes on stdout)
            line = [x for x in q.stderr.decode().splitlines() if x.startswith("generated ids:")]
            want = [int(x) for x in line[0].split(":")[1].split()] if line else None
        n_turns = ("-p" in extra) + len([x for x in stdin.split("\n") if x.strip()])
        c.check(p.returncode == 0 and len(turns) == n_turns and turns[-1][1] == want,
                f"-i {label}: {len(turns)} turns (empty lines skipped, CR LF read as LF), the last one's tokens as a "
                f"one-shot run over the {len(fed)} tokens fed ({err.strip()[-80:]!r})")
        if label == "--chat":
            im_end, im_start = 259, 258
            second = turns[1][0] if len(turns) > 1 else []
            c.check(im_start in second and second.count(im_end) >= 2,
                    f"-i --chat: a later turn closes the answer and opens a user message ({second[:8]})")
    # an end-of-generation token other than <|im_end|> ends the answer and is left out of the conversation: the same
    # model with its EOS id set to the token it answers "hello" with stops there at once, and the next turn opens
    # with <|im_end|> instead of that token
    _, _, turns = interactive(gi, "hello\n", "--chat")
    first = turns[0][1][0] if turns and turns[0][1] else None
    if first is not None and first != 259:
        ge = os.path.join(tmp, "chat-eos.gguf")
        with patched(_gguf.GGUFWriter, "add_eos_token_id", lambda orig: lambda self, _id: orig(self, first)):
            Tiny("llama", seed=8, n_vocab=300).write_gguf(ge, {}, tokenizer="chat")
        p, err, turns = interactive(ge, "hello\nagain\n", "--chat")
        fed = [t for pr, g2 in turns[:-1] for t in pr + g2[:-1]] + (turns[-1][0] if turns else [])
        q = subprocess.run([exe, "run", "-m", ge, "--tokens", ",".join(map(str, fed)), "-n", "6", "--temp", "0",
                            "--print-ids", "-q"], capture_output=True)
        line = [x for x in q.stderr.decode().splitlines() if x.startswith("generated ids:")]
        want = [int(x) for x in line[0].split(":")[1].split()] if line else None
        c.check(p.returncode == 0 and len(turns) == 2 and turns[0][1] == [first] and turns[1][0][:1] == [259] and
                first not in turns[1][0][:1] and turns[1][1] == want,
                f"-i --chat: an answer ended by EOS ({first}, not <|im_end|>) leaves it out; the next turn opens with "
                f"<|im_end|> and generates as a one-shot run ({turns[1][0][:4] if len(turns) > 1 else None})")
    else:
        c.check(False, f"-i --chat: the EOS fixture needs a first answer token other than <|im_end|> (got {first})")
    # a GGUF named Phi-3 (general.name): llama.cpp's rule, its special tokens but <|endoftext|> take the whitespace
    # after them (as Phi-3's tokenizer.json marks them rstrip): the newline after <|im_end|> goes, the rest is as a
    # model of another name tokenizes it
    gp = os.path.join(tmp, "chat-phi3-named.gguf")
    with patched(_gguf.GGUFWriter, "add_token_list",
                 lambda orig: lambda self, toks: (self.add_name("Phi-3 tiny test"), orig(self, toks))[1]):
        Tiny("llama", seed=8, n_vocab=300).write_gguf(gp, {}, tokenizer="chat")

    def prompt_ids(model):
        q = subprocess.run([exe, "run", "-m", model, "-p", "hi", "--chat", "-n", "1", "--temp", "0", "--print-ids",
                            "-q"], capture_output=True)
        line = [x for x in q.stderr.decode(errors="replace").splitlines() if x.startswith("prompt ids:")]
        return [int(x) for x in line[0].split(":")[1].split()] if line else []
    plain, named = prompt_ids(gi), prompt_ids(gp)
    c.check(plain and named == [t for i, t in enumerate(plain) if not (t == 10 and i and plain[i - 1] == 259)]
            and len(named) < len(plain), f"a GGUF named Phi-3: <|im_end|> takes the newline after it ({named[:12]} "
            f"vs {plain[:12]})")
    p, err, turns = interactive(gi, "")
    c.check(p.returncode == 0 and not turns and not p.stdout, "-i with no prompt and empty input: nothing, exit 0")
    p, err, turns = interactive(gi, "hello\n" * 40, "--chat", "--ctx", "120")
    c.check(p.returncode == 0 and "context is full" in err and len(turns) >= 2,
            f"-i --chat until the context is full: a message, exit 0 ({len(turns)} turns)")
    p, err, turns = interactive(gi, "a\0b\nok\n", "--chat")
    c.check(p.returncode == 0 and "NUL" in err and len(turns) == 1, "-i --chat: a line with a NUL byte skipped")
    for extra, what in ((["--tokens", "1,2"], "--tokens"), (["-p", "x", "--dump-logits", os.path.join(tmp, "l.npy")],
                                                             "--dump-logits"),
                        (["--chat", "-p", "x", "--answer-prefix", "Sure"], "--answer-prefix")):
        q = subprocess.run([exe, "run", "-m", gi, "-i", *extra], capture_output=True, text=True, input="")
        c.check(q.returncode == 2 and what in q.stderr, f"-i with {what}: a usage error")
    # --chat with a Hugging Face folder: its chat template was not read (ChatML was assumed for any model, a Llama 3
    # or Phi-3 instruct model got another model's format without a word). Now chat_template.jinja, else
    # chat_template.json's or tokenizer_config.json's chat_template (a string or a list with a "default" one), is
    # read as a GGUF's and written in its style (session 54: ChatML, Llama 3, Phi-3; others refused). The expected
    # prompts below are what transformers renders from these templates (scripts/chat_check.py holds infllm to the
    # real ones of Llama 3.1 / 3.2 / 3.3, Phi-3.5, Qwen2.5 / 3, SmolLM3, ...), tokenized here by a model of the fixture
    # tokenizer: bytes are their own ids, the special tokens theirs, Phi-3's taking the whitespace after them (rstrip)
    mc = Tiny("llama", seed=5, n_vocab=256 + len(CHAT_SPECIALS) + 5)
    hfc = os.path.join(tmp, "hf-chat")
    mc.write_gguf(os.path.join(tmp, "chat.gguf"), {})  # (write_hf takes the values the GGUF stores)
    mc.write_hf(hfc)
    write_chat_tokenizer(hfc)
    sid, fixture_ids = CHAT_ID, chat_fixture_ids
    LLAMA3 = ("{{- bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
              "'<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if "
              "add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
    LLAMA31 = ("{{- bos_token }}{%- if not date_string is defined %}{%- set date_string = \"26 Jul 2024\" %}{%- endif %}"
               "{{- '<|start_header_id|>system<|end_header_id|>\n\n' }}{{- 'Cutting Knowledge Date: December 2023\n' }}"
               "{{- 'Today Date: ' + date_string + '\n\n' }}{{- system_message }}{{- '<|eot_id|>' }}"
               "{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ "
               "message['content'] | trim + '<|eot_id|>' }}{%- endfor %}{%- if add_generation_prompt %}"
               "{{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{%- endif %}")
    PHI3 = ("{% for message in messages %}{% if message['role'] == 'system' and message['content'] %}{{'<|system|>\n' "
            "+ message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content']"
            " + '<|end|>\n'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}")
    CHATML = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>"
              "system\nYou are tiny.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
              "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}")
    # Qwen2.5's shape, as a .jinja file holds it: the escapes written out, a system message of the caller's first
    QWEN = ("{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + "
            "'<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are \\'Qwen\\'.<|im_end|>\\n' }}{%- endif %}"
            "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + "
            "'\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")
    # templates with a style's markers but more than it: a thinking generation prompt (QwQ's), another message layout
    QWQ = ("{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + "
           "'\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n<think>\\n' }}{%- endif %}")
    PHI_OTHER = ("{% for message in messages %}{{ '<|user|>\n' + message['content'] + '\n<|end|>' }}{% endfor %}"
                 "{{ '<|assistant|>' }}")
    GEMMA = "{{ bos_token }}{% for message in messages %}<start_of_turn>{{ message['role'] }}\n{% endfor %}"

    def chat_ids(*extra, prompt="hi"):
        src = ["-p", prompt]
        if not prompt.isascii():  # by file: wine hands a non-ASCII argument over in its code page
            pf = os.path.join(tmp, "chat-prompt.txt")
            with open(pf, "wb") as f:
                f.write(prompt.encode())
            src = ["-f", pf]
        p = subprocess.run([exe, "run", "-m", hfc, *src, "--chat", "-n", "1", "--temp", "0", "--print-ids",
                            "-q", *extra], capture_output=True)  # (the generated byte may not be UTF-8)
        p.stderr = p.stderr.decode(errors="replace")
        line = [x for x in p.stderr.splitlines() if x.startswith("prompt ids:")]
        return p, [int(x) for x in line[0].split(":")[1].split()] if line else []

    def as_bytes(ids):
        return bytes(i for i in ids if i < 256).decode("latin-1")
    p, ids = chat_ids()
    c.check(p.returncode == 0 and ids == fixture_ids("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"),
            f"--chat, HF folder without a chat template: ChatML ({p.stderr.strip()[-100:]})")
    cfgp = os.path.join(hfc, "tokenizer_config.json")
    L3 = "<|start_header_id|>{}<|end_header_id|>\n\n{}<|eot_id|>"
    L3GEN = "<|start_header_id|>assistant<|end_header_id|>\n\n"
    for label, cfg, extra, prompt, want in (
            ("tokenizer_config.json's Llama 3 template", {"chat_template": LLAMA3}, [], "  hi \n",
             fixture_ids(L3.format("user", "hi") + L3GEN, bos=True)),
            ("a Llama 3 template, content in Unicode spaces (Python's strip)", {"chat_template": LLAMA3}, [],
             "\u3000\u00a0h\u2009i\u2028\u0085 ", fixture_ids(L3.format("user", "h\u2009i") + L3GEN, bos=True)),
            ("tokenizer_config.json's template list, Llama 3 by default, --system",
             {"chat_template": [{"name": "tool_use", "template": CHATML}, {"name": "default", "template": LLAMA3}]},
             ["--system", " Be brief. "], "hi", fixture_ids(L3.format("system", "Be brief.") + L3.format("user", "hi")
                                                           + L3GEN, bos=True)),
            ("a Llama 3.1 template: the dated system message first", {"chat_template": LLAMA31}, [], "hi",
             fixture_ids(L3.format("system", "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n")
                         + L3.format("user", "hi") + L3GEN, bos=True)),
            ("a Llama 3.1 template, --system", {"chat_template": LLAMA31}, ["--system", "Be brief."], "hi",
             fixture_ids(L3.format("system", "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
                                   "Be brief.") + L3.format("user", "hi") + L3GEN, bos=True)),
            ("a Phi-3 template (its tokens rstrip)", {"chat_template": PHI3}, ["--system", "Be brief."], " hi",
             fixture_ids("<|system|>\nBe brief.<|end|>\n<|user|>\n hi<|end|>\n<|assistant|>\n")),
            ("a Phi-3 template, --system ''", {"chat_template": PHI3}, ["--system", ""], "hi",
             fixture_ids("<|user|>\nhi<|end|>\n<|assistant|>\n")),
            ("a ChatML template with escapes and a quoted default system prompt (Qwen2.5's shape)",
             {"chat_template": QWEN}, [], "hi",
             fixture_ids("<|im_start|>system\nYou are 'Qwen'.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
                         "<|im_start|>assistant\n"))):
        with open(cfgp, "w") as f:
            json.dump({"bos_token": "<|begin_of_text|>", **cfg}, f)
        p, ids = chat_ids(*extra, prompt=prompt)
        c.check(p.returncode == 0 and ids == want, f"--chat, {label}: as transformers renders it "
                f"({p.stderr.strip()[-90:] if p.returncode else ids[:24]} vs {want[:24]})")
    with open(cfgp, "w") as f:  # the style taken is named on stderr (without -q)
        json.dump({"bos_token": "<|begin_of_text|>", "chat_template": LLAMA31}, f)
    q = subprocess.run([exe, "run", "-m", hfc, "-p", "hi", "--chat", "-n", "1", "--temp", "0"], capture_output=True)
    qerr = q.stderr.decode(errors="replace")
    said = [x for x in qerr.splitlines() if x.startswith("chat:")]
    # (exit status and stderr in the message: a Windows run under wine once printed no chat: line, cause unknown)
    ok = q.returncode == 0 and said == ["chat: Llama 3 (the model's template), dated 26 Jul 2024"]
    c.check(ok, f"--chat names the style it took: {said}" + ("" if ok else f" (exit {q.returncode}, stderr "
                                                                   f"{qerr[-300:]!r})"))
    for label, tpl, words in (("of another style (Gemma's)", GEMMA, "none of the styles"),
                              ("with a thinking generation prompt (QwQ's)", QWQ, "generation prompt"),
                              ("with Phi-3's markers in another layout", PHI_OTHER, "another way")):
        with open(cfgp, "w") as f:
            json.dump({"chat_template": tpl}, f)
        p, _ = chat_ids()
        c.check(p.returncode == 1 and words in p.stderr, f"--chat, a template {label}: refused ({p.stderr.strip()[-90:]})")
    # Mistral's [INST] templates (real ones: Mistral-7B-Instruct-v0.2's original and 2024 ones, Large-2411's; Large-2407's
    # and Small-3.2's from tests/data): each spells [INST] / [/INST] its way and puts the system prompt elsewhere (none:
    # refused as transformers raises; the first user message; the last one: a conversation with one refused; a
    # [SYSTEM_PROMPT] with the template's default, Small 3.2's dated by strftime_now); no generation prompt
    M_V02 = ("{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
             "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
             "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] "
             "== 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant "
             "roles are supported!') }}{% endif %}{% endfor %}")
    M_V1 = ("{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content'] %}\n    "
            "{%- set loop_messages = messages[1:] %}\n{%- else %}\n    {%- set loop_messages = messages %}\n{%- endif %}"
            "\n\n{{- bos_token }}\n{%- for message in loop_messages %}\n    {%- if (message['role'] == 'user') != "
            "(loop.index0 % 2 == 0) %}\n        {{- raise_exception('After the optional system message, conversation "
            "roles must alternate user/assistant/user/assistant/...') }}\n    {%- endif %}\n    {%- if message['role'] "
            "== 'user' %}\n        {%- if loop.first and system_message is defined %}\n            {{- ' [INST] ' + "
            "system_message + '\\n\\n' + message['content'] + ' [/INST]' }}\n        {%- else %}\n            {{- ' "
            "[INST] ' + message['content'] + ' [/INST]' }}\n        {%- endif %}\n    {%- elif message['role'] == "
            "'assistant' %}\n        {{- ' ' + message['content'] + eos_token}}\n    {%- else %}\n        {{- "
            "raise_exception('Only user and assistant roles are supported, with the exception of an initial optional "
            "system message!') }}\n    {%- endif %}\n{%- endfor %}\n")
    M_V7 = ("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + "
            "message['content'] + '[/INST]' }}{% elif message['role'] == 'system' %}{{ '[SYSTEM_PROMPT] ' + "
            "message['content'] + '[/SYSTEM_PROMPT]' }}{% elif message['role'] == 'assistant' %}{{ ' ' + "
            "message['content'] + eos_token }}{% else %}{{ raise_exception('Only user, system and assistant roles are "
            "supported!') }}{% endif %}{% endfor %}")
    data = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
    with open(os.path.join(data, "chat_tpl_mistral_v3.jinja")) as f:
        M_V3 = f.read()
    with open(os.path.join(data, "chat_tpl_mistral_v7.jinja")) as f:
        M_SMALL = f.read()
    # [INST] markers in other layouts: Mixtral-8x22B's (a space before the EOS, which a sampled EOS cannot have fed
    # before it) and a Llama 2 one (<<SYS>>, user messages by index)
    M_8X22 = M_V02.replace("{{ '[INST] '", "{{ ' [INST] '").replace("{{ message['content'] + eos_token}}",
                                                                    "{{ ' ' + message['content'] + ' ' + eos_token}}")
    LLAMA2 = ("{%- for idx in range(0, messages|length) -%}\n{%- if messages[idx]['role'] == 'user' -%}\n{%- if idx > 1 "
              "-%}\n{{- bos_token + '[INST] ' + messages[idx]['content'] + ' [/INST]' -}}\n{%- else -%}\n{{- "
              "messages[idx]['content'] + ' [/INST]' -}}\n{%- endif -%}\n{% elif messages[idx]['role'] == 'system' %}"
              "\n{{- '[INST] <<SYS>>\\n' + messages[idx]['content'] + '\\n<</SYS>>\\n\\n' -}}\n{%- elif "
              "messages[idx]['role'] == 'assistant' -%}\n{{- ' '  + messages[idx]['content'] + ' ' + eos_token -}}\n"
              "{% endif %}\n{% endfor %}")
    MCFG = {"bos_token": "<|begin_of_text|>", "eos_token": "<|endoftext|>"}
    for label, tpl, extra, want in (
            ("Mistral v0.2's original", M_V02, [], fixture_ids("[INST] hi [/INST]", bos=True)),
            ("Mistral v0.2's of 2024, --system (in the first user message)", M_V1, ["--system", "Be brief."],
             fixture_ids(" [INST] Be brief.\n\nhi [/INST]", bos=True)),
            ("Mistral Large-2407's (v3), --system (in the last user message)", M_V3, ["--system", "Be brief."],
             fixture_ids("[INST] Be brief.\n\nhi[/INST]", bos=True)),
            ("Mistral Large-2407's (v3), --system ''", M_V3, ["--system", ""], fixture_ids("[INST] \n\nhi[/INST]",
                                                                                              bos=True)),
            ("Mistral Large-2411's (v7), --system", M_V7, ["--system", "Be brief."],
             fixture_ids("[SYSTEM_PROMPT] Be brief.[/SYSTEM_PROMPT][INST] hi[/INST]", bos=True)),
            ("Mistral Small 3.2's, --system ''", M_SMALL, ["--system", ""],
             fixture_ids("[SYSTEM_PROMPT][/SYSTEM_PROMPT][INST]hi[/INST]", bos=True))):
        with open(cfgp, "w") as f:
            json.dump({**MCFG, "chat_template": tpl}, f)
        p, ids = chat_ids(*extra)
        c.check(p.returncode == 0 and ids == want, f"--chat, {label}: as transformers renders it "
                f"({p.stderr.strip()[-90:] if p.returncode else ids[:24]} vs {want[:24]})")
    # Small 3.2's default system prompt: its literals around strftime_now("%Y-%m-%d"), today's date
    with open(cfgp, "w") as f:
        json.dump({**MCFG, "chat_template": M_SMALL}, f)
    p, ids = chat_ids()
    today = __import__("datetime").date.today().isoformat()
    text = as_bytes(ids)
    c.check(p.returncode == 0 and ids[:2] == [sid["<|begin_of_text|>"], sid["[SYSTEM_PROMPT]"]]
            and f"The current date is {today}.\n\nWhen you're not sure" in text
            and "(e.g. \"What are some good restaurants around me?\"" in text
            and ids[-5:] == [sid["[/SYSTEM_PROMPT]"], sid["[INST]"], ord("h"), ord("i"), sid["[/INST]"]],
            f"--chat, Mistral Small 3.2's default system prompt, dated {today} ({text[:60]!r}...{ids[-5:]})")
    for label, tpl, extra, words in (
            ("a Mistral template without a system role, --system", M_V02, ["--system", "x"], "takes no system prompt"),
            ("a Mistral template without a system role, --system ''", M_V02, ["--system", ""], "takes no system prompt"),
            ("Mixtral-8x22B's (a space before the EOS)", M_8X22, [], "writes its answers another way"),
            ("a Llama 2 one ([INST] <<SYS>>)", LLAMA2, [], "writes its user messages another way")):
        with open(cfgp, "w") as f:
            json.dump({**MCFG, "chat_template": tpl}, f)
        p, _ = chat_ids(*extra)
        c.check(p.returncode == 1 and words in p.stderr, f"--chat, {label}: refused ({p.stderr.strip()[-90:]})")
    # -i --chat with Mistral: a later turn closes the answer with the tokenizer's EOS (unless the model sampled it)
    # and opens a user message; -i with a system prompt that the template moves to the last user message: refused
    # before the first turn
    for label, tpl, extra, first, later in (
            ("v0.2's original", M_V02, [], "[INST] hi [/INST]", "[INST] and you? [/INST]"),
            ("Large-2407's (v3)", M_V3, [], "[INST] hi[/INST]", "[INST] and you?[/INST]"),
            ("Small 3.2's, --system", M_SMALL, ["--system", "S"], "[SYSTEM_PROMPT]S[/SYSTEM_PROMPT][INST]hi[/INST]",
             "[INST]and you?[/INST]")):
        with open(cfgp, "w") as f:
            json.dump({**MCFG, "chat_template": tpl}, f)
        q = subprocess.run([exe, "run", "-m", hfc, "-i", "--chat", "-n", "3", "--temp", "0", "--print-ids", "-q",
                            *extra], input=b"hi\nand you?\n", capture_output=True)
        turns = [[int(x) for x in ln.split(":")[1].split()] for ln in q.stderr.decode(errors="replace").splitlines()
                 if ln.startswith(("prompt ids:", "generated ids:"))]
        if len(turns) == 4:
            closed = turns[1][-1] == sid["<|endoftext|>"]
            want2 = turns[1][-1:] + fixture_ids(("" if closed else "<|endoftext|>") + later)
            c.check(q.returncode == 0 and turns[0] == fixture_ids(first, bos=True) and turns[2] == want2,
                    f"-i --chat, Mistral {label}: the second turn {turns[2][:12]} (want {want2[:12]})")
        else:
            c.check(False, f"-i --chat, Mistral {label}: two turns ({q.stderr.decode(errors='replace')[-200:]})")
    with open(cfgp, "w") as f:
        json.dump({**MCFG, "chat_template": M_V3}, f)
    q = subprocess.run([exe, "run", "-m", hfc, "-i", "--chat", "-n", "3", "--temp", "0", "--print-ids", "-q",
                        "--system", "Be brief."], input=b"hi\nand you?\n", capture_output=True)
    err = q.stderr.decode(errors="replace")
    c.check(q.returncode == 1 and "moving it on each turn" in err and "prompt ids:" not in err,
            f"-i --chat --system, Mistral v3 (the system prompt in the last user message): refused ({err[-90:]})")
    # -i --chat with Llama 3: a later turn closes the answer with <|eot_id|> (unless the model sampled it) and opens
    # a user message, trimmed
    with open(cfgp, "w") as f:
        json.dump({"bos_token": "<|begin_of_text|>", "chat_template": LLAMA3}, f)
    q = subprocess.run([exe, "run", "-m", hfc, "-i", "--chat", "-n", "3", "--temp", "0", "--print-ids", "-q"],
                       input=b"hi\n  and you? \n", capture_output=True)
    turns = [[int(x) for x in ln.split(":")[1].split()] for ln in q.stderr.decode(errors="replace").splitlines()
             if ln.startswith(("prompt ids:", "generated ids:"))]
    eot = sid["<|eot_id|>"]
    if len(turns) == 4:
        closed = turns[1][-1] == eot  # (the answer's last token opens the next turn's ids: it was not fed yet)
        want2 = turns[1][-1:] + fixture_ids(("" if closed else "<|eot_id|>") + L3.format("user", "and you?") + L3GEN)
        c.check(q.returncode == 0 and turns[0] == fixture_ids(L3.format("user", "hi") + L3GEN, bos=True)
                and turns[2] == want2, f"-i --chat, Llama 3: the second turn {turns[2][:12]} (want {want2[:12]})")
    else:
        c.check(False, f"-i --chat, Llama 3: two turns ({q.stderr.decode(errors='replace')[-200:]})")
    os.remove(cfgp)
    with open(os.path.join(hfc, "chat_template.jinja"), "w") as f:
        f.write(CHATML)
    p, ids = chat_ids()
    c.check(p.returncode == 0 and "system\nYou are tiny." in as_bytes(ids) and "user\nhi" in as_bytes(ids),
            f"--chat, chat_template.jinja (ChatML): its default system prompt ({as_bytes(ids)[:60]!r})")
    with open(cfgp, "w") as f:
        json.dump({"chat_template": LLAMA3}, f)
    p, ids = chat_ids()
    c.check(p.returncode == 0 and "system\nYou are tiny." in as_bytes(ids),
            f"--chat, chat_template.jinja over tokenizer_config.json's (Llama 3) ({as_bytes(ids)[:60]!r})")
    os.remove(cfgp)
    # a chat_template.jinja that is a FIFO blocked the open forever (fopen); it is refused as not a regular file
    if not WINDOWS:
        jin = os.path.join(hfc, "chat_template.jinja")
        os.rename(jin, jin + ".keep")
        os.mkfifo(jin)
        try:
            q = subprocess.run([exe, "run", "-m", hfc, "-p", "hi", "--chat", "-n", "1", "-q"], capture_output=True,
                               text=True, timeout=30)
            ok, why = q.returncode == 1 and "not a regular file" in q.stderr, q.stderr.strip()[-90:]
        except subprocess.TimeoutExpired:
            ok, why = False, "still running after 30 s"
        c.check(ok, f"--chat with chat_template.jinja a FIFO: exit 1 ({why})")
        os.remove(jin)
        os.rename(jin + ".keep", jin)
    p, ids = chat_ids("--system", "Be brief.")
    c.check(p.returncode == 0 and "Be brief." in as_bytes(ids) and "tiny" not in as_bytes(ids),
            f"--chat --system with chat_template.jinja: the given system prompt ({as_bytes(ids)[:50]!r})")
c.finish()
