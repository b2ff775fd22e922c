#!/usr/bin/env python3
"""Generates the tokenizer test fixtures with the Hugging Face `tokenizers` library:
  tok_bpe.json  byte-level BPE (Digits + ByteLevel, like SmolLM2) with ChatML specials
  tok_spm.json  SentencePiece-style BPE (Metaspace, byte_fallback, <0xNN> byte tokens)
  tok_llama.json  the same vocabulary in the Llama-2 tokenizer.json style (normalizer
                Prepend("▁") + Replace(" ", "▁"), no pre-tokenizer, Replace/ByteFallback/Fuse/Strip
                decoder): the prefix is added unconditionally, as llama.cpp does for GGUF "llama"
  tok_expected.jsonl  one JSON array a line: [fixture, parse_special, text, [ids], decode(skip_special)]
Run from anywhere: python3 tests/data/gen_tok_fixtures.py (pip install tokenizers==0.23.*)."""
import json
import os
import random
import sys

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

HERE = os.path.dirname(os.path.abspath(__file__))

CORPUS = """The quick brown fox jumps over the lazy dog. I'm sure they'll say it's fine; we've done it.
Don't worry, you'd be surprised: the café serves crème brûlée and naïve piñatas in São Paulo.
Καλημέρα κόσμε, η γλώσσα είναι ελληνική. Привет, мир! Это тестовая строка на русском языке.
你好，世界。这是一个测试。日本語のテキストもあります。한국어 문장도 있습니다.
Numbers: 12345, 3.14159, 2026-11-28, 1,000,000 and 0x1F. Emoji: 😀 👍🏽 🚀 ❤️ 🇫🇷.
def main():\n    return foo(bar, baz) + 42  # code\n\tif x == y: print("hello world")
The model uses sparse attention over long contexts with blocks, tokens, and kernels.
Tokenization splits text into pieces; byte-level BPE merges frequent byte pairs by rank.
"""


def corpus_lines():
    lines = CORPUS.split("\n")
    rnd = random.Random(1)
    words = CORPUS.split()
    for _ in range(400):
        lines.append(" ".join(rnd.choice(words) for _ in range(rnd.randint(3, 12))))
    return lines


SPECIALS_BPE = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
SPECIALS_SPM = ["<unk>", "<s>", "</s>"]


def build_bpe():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=700, special_tokens=SPECIALS_BPE,
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus_lines(), tr)
    # an added token that absorbs the whitespace around it, and a non-special added word
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=True, special=True)])
    tok.add_tokens([AddedToken("foobar", special=False)])
    return tok


def build_spm():
    # train to get merges, then rebuild with byte tokens <0x00>..<0xFF> right after the specials
    base = Tokenizer(models.BPE(unk_token="<unk>"))
    base.pre_tokenizer = pre_tokenizers.Metaspace()
    tr = trainers.BpeTrainer(vocab_size=500, special_tokens=SPECIALS_SPM, show_progress=False,
                             limit_alphabet=120)
    base.train_from_iterator(corpus_lines(), tr)
    v = base.get_vocab()
    order = sorted(v.items(), key=lambda kv: kv[1])
    vocab = {}
    for s in SPECIALS_SPM:
        vocab[s] = len(vocab)
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    for s, _ in order:
        if s not in vocab:
            vocab[s] = len(vocab)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" "))
              for m in json.loads(base.to_str())["model"]["merges"]]
    tok = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.add_special_tokens(SPECIALS_SPM)
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace()])
    return tok


FIXED = [
    "", " ", "  ", "a", "Hello world", "Hello, world!", " leading space", "trailing space ",
    "I'm here, you're there; it's 'quoted' and they'll've we'd", "DON'T SHOUT'S", "a  b   c\t\td\n\n e  ",
    "\n", "\n\n\n", "   \n  x", "tab\tseparated\tvalues", "line1\r\nline2\r\n",
    "café naïve crème brûlée São Paulo", "Καλημέρα κόσμε", "Привет, мир!", "你好，世界。", "日本語のテキスト",
    "한국어 문장", "😀 👍🏽 🚀 ❤️ 🇫🇷", "12345 3.14159 2026-11-28 1,000,000", "x=1+2*3/4-5", "0x1F ½ ² ٣ ४",
    "def main():\n    return foo(bar) + 42", "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|><|im_end|><|endoftext|>", "<|im_star", "text<|endoftext|>more", "<s>hello</s> <unk>",
    "Ω≈ç√∫˜µ≤≥÷ åß∂ƒ©˙∆˚¬…æ", "ʻOkina ʼapostrophe", "mixed123abc456", "a1b2c3", "...!!!???",
    "  multiple   spaces   inside  ", "a <mask> b", "x<mask>y", "  <mask>\n\nz", "foobar foobarx", "\u00a0nbsp\u2003emsp\u3000ideographic", "e\u0301 combining",
]


def random_strings(n, seed):
    rnd = random.Random(seed)
    pool = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 \t\n.,;:'\"!?()-_/\\")
    pool += list("éèüñçßøåæœ") + list("αβγδεζηθ") + list("абвгдежз") + list("你好世界中文") + ["😀", "🚀", "👍🏽"]
    pool += ["<mask>", "foobar", "'s", "'ll", " ", "  ", "<|im_start|>", "<|im_end|>", "<s>", "</s>", "\u2581", "\u00a0"]
    return ["".join(rnd.choice(pool) for _ in range(rnd.randint(1, 40))) for _ in range(n)]


def main():
    bpe = build_bpe()
    spm = build_spm()
    llama = Tokenizer.from_str(spm.to_str())
    llama.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    llama.pre_tokenizer = None
    llama.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                       decoders.Strip(" ", 1, 0)])
    bpe.save(os.path.join(HERE, "tok_bpe.json"), pretty=False)
    spm.save(os.path.join(HERE, "tok_spm.json"), pretty=False)
    llama.save(os.path.join(HERE, "tok_llama.json"), pretty=False)
    texts = FIXED + random_strings(40, 7)
    out = []
    for name, tok in (("bpe", bpe), ("spm", spm), ("llama", llama)):
        for parse_special in (1, 0):
            tok.encode_special_tokens = not parse_special
            for t in texts:
                ids = tok.encode(t, add_special_tokens=False).ids
                dec = tok.decode(ids, skip_special_tokens=True)
                out.append(json.dumps([name, parse_special, t, ids, dec], ensure_ascii=False))
    with open(os.path.join(HERE, "tok_expected.jsonl"), "w") as f:
        f.write("\n".join(out) + "\n")
    print("wrote", len(out), "cases", file=sys.stderr)


if __name__ == "__main__":
    main()
