#!/usr/bin/env python3
"""Metaspace variants (prepend_scheme first/never/always x split) of the committed SPM fixture,
then the tokenizer on a real vocabulary (SmolLM2-135M's 49152-token byte-level BPE from the GGUF
in models/) against the Hugging Face `tokenizers` library.

argv[1] is the infllm binary; the C side is build/tests/test_tokenizer in its --encode tool
mode. Ground truth: a `tokenizers` BPE built from the GGUF's tokens and merges with SmolLM2's
pre-tokenizer (Digits(individual) + ByteLevel) and its special tokens. Both constructors are
compared: tok_load_gguf (GGUF arrays, pre "smollm") and tok_load_hf_json (the same vocabulary
saved as tokenizer.json); then the Llama-3 and Qwen2 split regexes on the same vocabulary
(Split + ByteLevel, through tokenizer.json). Skips (exit 0) without `tokenizers` or the GGUF.
Before the GGUF part and without it: Mistral's tekken split pattern (words by Unicode case, single digits, no
contractions, punctuation runs taking [\r\n/]*) and OpenAI's o200k one (GPT-4o: tekken's words with contractions,
digits in threes), each on a byte-level BPE trained here with it, through tokenizer.json and as GGUF arrays with pre
"tekken" / "gpt-4o".
"""
import glob
import json
import os
import random
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def skip(msg):
    print("SKIP py_tokenizer:", msg)
    print("py_tokenizer: 0 passed, 0 failed")
    sys.exit(0)


try:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
except ImportError:
    skip("`tokenizers` not installed (pip install tokenizers)")

INFLLM = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "infllm")
TOOL = os.path.join(os.path.dirname(os.path.abspath(INFLLM)), "tests", "test_tokenizer")
if not os.path.exists(TOOL):
    print("py_tokenizer: missing", TOOL)
    sys.exit(1)


# ------------------------------------------------------------ GGUF metadata reader --
def read_gguf_kv(path):
    import struct
    f = open(path, "rb")
    data = f.read(64 << 20)  # metadata is at the front; 64 MB is plenty for a 49K vocab
    pos = 0

    def rd(fmt):
        nonlocal pos
        v = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return v[0]

    def rstr():
        nonlocal pos
        n = rd("Q")
        s = data[pos:pos + n]
        pos += n
        return s

    scal = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}

    def val(t):
        if t == 8:
            return rstr()
        if t == 9:
            at = rd("I")
            n = rd("Q")
            return [val(at) for _ in range(n)]
        return rd(scal[t])

    if data[:4] != b"GGUF":
        raise ValueError("not a GGUF file")
    pos = 4
    rd("I")
    rd("Q")
    n_kv = rd("Q")
    kv = {}
    for _ in range(n_kv):
        k = rstr().decode()
        t = rd("I")
        kv[k] = val(t)
    return kv


def find_gguf():
    for p in sorted(glob.glob(os.path.join(ROOT, "models", "*.gguf"))):
        try:
            kv = read_gguf_kv(p)
        except Exception:
            continue
        if kv.get("tokenizer.ggml.model", b"") == b"gpt2":
            return p, kv
    return None, None


TEXTS = [
    "", " ", "Hello world", "Hello, world!", "I'm here, you're there; it's fine. DON'T", "a  b   c\t\td\n\n e  ",
    "\n\n\n", "   \n  x", "line1\r\nline2\r\n", "café naïve crème brûlée São Paulo", "Καλημέρα κόσμε",
    "Привет, мир!", "你好，世界。", "日本語のテキスト", "한국어 문장", "😀 👍🏽 🚀 ❤️ 🇫🇷",
    "12345 3.14159 2026-11-28 1,000,000", "0x1F ½ ² ٣ ४", "def main():\n    return foo(bar) + 42\n",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|><|im_end|><|endoftext|>", "<|im_star", "text<|endoftext|>more", "\u00a0nbsp\u2003emsp\u3000x",
    "e\u0301 combining", "  multiple   spaces   inside  ", "mixed123abc456 a1b2c3 ...!!!???",
    # \s / \p{L} / \p{N} edges: C0 separators, NEL, line/paragraph separators, zero-width and
    # BOM (not spaces), marks, Nl/No numbers, modifier letters, math alphanumerics
    "a\x1cb c", "a\x1d\x1e\x1fb", "x\x85y  \x85z", "p\u2028q\u2029r", "zero\u200bwidth", "bom\ufeffx",
    "e\u0301\u0302 q", "\u216b \u00b2 \u0663 \u2153 \u2460 \u3251", "\u3000\u3000a", "\x0b\x0cv",
    "\u01c5 \u02b0 \u02c6 \u309b \u3005 \u3006", "\U0001d518\U0001d52b \U0001d7d8\U0001d7d9", "\u00df \u1e9e \ufb01",
]


def random_texts(n, seed):
    rnd = random.Random(seed)
    pool = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 \t\n.,;:'\"!?()-_/\\<>|")
    pool += list("éèüñçßøåæœ") + list("αβγδεζηθ") + list("абвгдежз") + list("你好世界中文") + ["😀", "🚀", "👍🏽"]
    pool += ["'s", "'ll", "'RE", " ", "  ", "<|im_start|>", "<|im_end|>", "\u2581", "\u00a0", "the", " the"]
    return ["".join(rnd.choice(pool) for _ in range(rnd.randint(1, 60))) for _ in range(n)]


def run_tool(args, texts):
    inp = "".join(json.dumps(t) + "\n" for t in texts)
    t0 = time.time()
    r = subprocess.run([TOOL, "--encode"] + args, input=inp.encode(), capture_output=True, timeout=600)
    dt = time.time() - t0
    if r.returncode != 0:
        raise RuntimeError("tool failed: %s" % r.stderr.decode(errors="replace"))
    out = []
    for line in r.stdout.decode().split("\n")[: len(texts)]:
        ids, _, dec = line.partition("\t")
        out.append(([int(x) for x in ids.split()] if ids else [], bytes.fromhex(dec)))
    return out, dt


def compare(label, args, texts, want):
    got, dt = run_tool(args, texts)
    bad = 0
    for t, (gi, gd), (wi, wd) in zip(texts, got, want):
        if gi != wi or gd != wd:
            bad += 1
            if bad <= 5:
                print("MISMATCH [%s] %r\n  got  %s %r\n  want %s %r" % (label, t[:80], gi[:30], gd[:60], wi[:30], wd[:60]))
    ntok = sum(len(w[0]) for w in want)
    print("%s: %d/%d strings identical (%d tokens; C tool %.2fs incl. load)" % (label, len(texts) - bad, len(texts),
                                                                             ntok, dt))
    return bad == 0


def hf_want(tok, texts):
    out = []
    for t in texts:
        ids = tok.encode(t, add_special_tokens=False).ids
        out.append((ids, tok.decode(ids, skip_special_tokens=True).encode()))
    return out


def metaspace_variants(texts):
    """Metaspace prepend_scheme first/never and split=False on the committed SPM fixture."""
    results = []
    tmp = tempfile.mkdtemp(prefix="py_tok_ms_")
    base = Tokenizer.from_file(os.path.join(HERE, "data", "tok_spm.json"))
    for scheme in ("first", "never", "always"):
        for split in (False, True):
            v = Tokenizer.from_str(base.to_str())
            v.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme=scheme, split=split)
            v.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace(prepend_scheme=scheme,
                                                                                       split=split)])
            p = os.path.join(tmp, "ms_%s_%d.json" % (scheme, split))
            v.save(p)
            results.append(compare("Metaspace %s split=%s" % (scheme, split), [p], texts, hf_want(v, texts)))
    return results


TEKKEN = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?"
          r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|"
          r"\s+(?!\S)|\s+")
CONTRACTION = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
          r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")
O200K = TEKKEN.replace(r"\p{M}]+|", r"\p{M}]+" + CONTRACTION + "|", 1).replace(
    r"\p{M}]*|\p{N}|", r"\p{M}]*" + CONTRACTION + r"|\p{N}{1,3}|", 1)


def split_variant(label, pattern, pre, ignore_merges):
    """a split pattern of the case-class family (Mistral's tekken: Nemo, Small 3, Ministral; o200k: GPT-4o), the real
    tokenizer.json's, on a byte-level BPE of 3000 tokens trained here with it, so that its merges span what the pattern
    keeps together (mixed case, marks after letters, titlecase, CJK next to Latin, contractions): through
    tokenizer.json, and as GGUF arrays with the pre name (tekken's tokenizer.json sets ignore_merges, as llama.cpp does
    for that type)"""
    rnd = random.Random(23)
    words = ["Hello", "HELLO", "hello", "helloWorld", "HTTPServer", "camelCaseWords", "ÑANDÚ", "ñandú", "Straße",
             "e\u0301cole", "\u01c5ungla", "\u02b0ello", "x\u0300\u0301y", "中文English", "日本語", "ΕΛΛΗΝΙΚΑ",
             "Ελληνικά", "КИРИЛЛИЦА", "кириллица", "path/to/file", "a//b", "don't", "DON'T", "12345", "3.14"]
    corpus = [" ".join(rnd.choice(words) for _ in range(12)) for _ in range(400)] + TEXTS + random_texts(400, 29)
    v = Tokenizer(models.BPE())
    v.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
                                               pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    v.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=3000, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<unk>", "<s>", "</s>", "[INST]", "[/INST]"], show_progress=False)
    v.train_from_iterator(corpus, trainer)
    doc = json.loads(v.to_str())
    doc["model"]["ignore_merges"] = ignore_merges
    # a word in the vocabulary that no merge makes: ignore_merges takes it whole, the merges spell it out
    doc["model"]["vocab"]["\u0120zqxvk"] = len(doc["model"]["vocab"])
    v = Tokenizer.from_str(json.dumps(doc))
    tmp = tempfile.mkdtemp(prefix="py_tok_%s_" % pre)
    hj = os.path.join(tmp, "tokenizer.json")
    v.save(hj)
    vocab = v.get_vocab()
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda x: x[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in doc["model"]["merges"]]
    special = {"<unk>", "<s>", "</s>", "[INST]", "[/INST]"}
    gj = os.path.join(tmp, "gguf_vocab.json")
    with open(gj, "w") as f:
        json.dump({"model": "gpt2", "pre": pre, "tokens": tokens,
                   "token_type": [3 if t in special else 1 for t in tokens], "merges": merges,
                   "bos": vocab["<s>"], "eos": vocab["</s>"], "unk": vocab["<unk>"], "pad": -1}, f)
    texts = TEXTS + words + [" ".join(rnd.choice(words) for _ in range(rnd.randint(1, 9))) for _ in range(300)] + \
        random_texts(300, 31) + ["[INST] hi [/INST]", "a[INST]B", "\u0301a", "!\u0301a", " \u0301", "中A!", "ʰE.",
                                 "IT'S it's It'Ll WE'RE you'VE 12345678 a/b\n/", "a zqxvk b", " zqxvkq"]
    want = hf_want(v, texts)
    return [compare("%s regex, tokenizer.json" % label, [hj], texts, want),
            compare("%s regex, GGUF arrays (pre %s)" % (label, pre), [gj, "--gguf-json"], texts, want)]


def main():
    texts0 = TEXTS + ["<s>hello</s> world", " <s> x", "a<s>b"] + random_texts(100, 5)
    ms = metaspace_variants(texts0) + split_variant("tekken", TEKKEN, "tekken", True) + \
        split_variant("o200k", O200K, "gpt-4o", False) + split_variant("llama3 + ignore_merges", LLAMA3, "falcon3", True) + \
        split_variant("qwen2", QWEN2, "qwen2", False)
    path, kv = find_gguf()
    if not path:
        ok = sum(ms)
        print("SKIP SmolLM2 part: no byte-level BPE GGUF in models/ (scripts/fetch_model.sh)")
        print("py_tokenizer: %d passed, %d failed" % (ok, len(ms) - ok))
        sys.exit(0 if ok == len(ms) else 1)
    tokens = [t.decode("utf-8") for t in kv["tokenizer.ggml.tokens"]]
    types = list(kv.get("tokenizer.ggml.token_type", [1] * len(tokens)))
    merges = [m.decode("utf-8") for m in kv["tokenizer.ggml.merges"]]
    pre = kv.get("tokenizer.ggml.pre", b"default").decode()
    print("vocab %s: %d tokens, %d merges, pre=%s" % (os.path.basename(path), len(tokens), len(merges), pre))

    vocab = {t: i for i, t in enumerate(tokens)}
    hf = Tokenizer(models.BPE(vocab, [tuple(m.split(" ", 1)) for m in merges]))
    pres = [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    if pre in ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone"):
        pres.insert(0, pre_tokenizers.Digits(individual_digits=True))
    elif pre not in ("gpt2", "default"):
        skip("pre-tokenizer %s has no ground-truth recipe here" % pre)
    hf.pre_tokenizer = pre_tokenizers.Sequence(pres)
    hf.decoder = decoders.ByteLevel()
    hf.add_special_tokens([t for t, ty in zip(tokens, types) if ty == 3])

    long_text = " ".join(TEXTS[1:]) * 60  # about 10K tokens
    texts = TEXTS + random_texts(300, 11) + [long_text]
    want = []
    t0 = time.time()
    for t in texts:
        ids = hf.encode(t, add_special_tokens=False).ids
        want.append((ids, hf.decode(ids, skip_special_tokens=True).encode()))
    t_hf = time.time() - t0

    tmp = tempfile.mkdtemp(prefix="py_tok_")
    gj = os.path.join(tmp, "gguf_vocab.json")
    with open(gj, "w") as f:
        json.dump({"model": "gpt2", "pre": pre, "tokens": tokens, "token_type": types, "merges": merges,
                   "bos": kv.get("tokenizer.ggml.bos_token_id", -1), "eos": kv.get("tokenizer.ggml.eos_token_id", -1),
                   "unk": kv.get("tokenizer.ggml.unknown_token_id", -1),
                   "pad": kv.get("tokenizer.ggml.padding_token_id", -1)}, f)
    hj = os.path.join(tmp, "tokenizer.json")
    hf.save(hj)

    # the Llama-3 and Qwen2 split regexes (Split + ByteLevel without its own regex) on the same vocab
    variants = []
    for name, rx in (("llama3 regex", LLAMA3), ("qwen2 regex", QWEN2)):
        v = Tokenizer.from_str(hf.to_str())
        v.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(rx), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        p = os.path.join(tmp, name.split()[0] + ".json")
        v.save(p)
        w = []
        for t in texts:
            ids = v.encode(t, add_special_tokens=False).ids
            w.append((ids, v.decode(ids, skip_special_tokens=True).encode()))
        variants.append((name, [p], w))

    passed, failed = sum(ms), len(ms) - sum(ms)
    for label, args, want in [("gguf arrays", [gj, "--gguf-json"], want), ("tokenizer.json", [hj], want)] + variants:
        got, dt = run_tool(args, texts)
        bad = 0
        for t, (gi, gd), (wi, wd) in zip(texts, got, want):
            if gi != wi or gd != wd:
                bad += 1
                if bad <= 5:
                    print("MISMATCH [%s] %r\n  got  %s %r\n  want %s %r" % (label, t[:80], gi[:30], gd[:60], wi[:30], wd[:60]))
        ntok = sum(len(w[0]) for w in want)
        print("%s: %d/%d strings identical (%d tokens; C tool %.2fs incl. load, HF %.2fs)" %
              (label, len(texts) - bad, len(texts), ntok, dt, t_hf))
        if bad:
            failed += 1
        else:
            passed += 1
    print("py_tokenizer: %d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
