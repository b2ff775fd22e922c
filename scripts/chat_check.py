#!/usr/bin/env python3
"""chat_check.py (opt-in, not in CI: needs transformers, which renders chat templates with jinja2): `infllm run
--chat` against transformers' rendering of real chat templates.

For each template file given (a folder of .jinja files, such as llama.cpp's models/templates, which holds Meta's
Llama 3.1 / 3.2 / 3.3, Microsoft's Phi-3.5, Qwen2.5 / Qwen3 and many more), it writes a tiny Hugging Face folder: a
random Llama model, a byte-level tokenizer.json whose special tokens are the chat markers of the styles infllm
writes (Phi-3's with rstrip, as Phi-3's tokenizer.json has them), tokenizer_config.json naming the BOS, and the
template as chat_template.jinja. Then for a user message without and with a system prompt (and an empty one) it
compares `infllm run --chat --print-ids` prompt ids with transformers' render_jinja_template(...,
add_generation_prompt=True, bos_token=...) tokenized by the same fixture (a model of it here: bytes are their own
ids, special tokens theirs, rstrip ones take the whitespace after them). A second turn (`-i`, one generated token)
is checked too: the ids infllm fed over the two turns against the rendering of [user, assistant = the generated
token's text, user] (skipped where that token is whitespace or special, which a template's trim or the tokenizer
would change). A template infllm refuses ("none of the styles") is listed as not formatted, not failed; a
template it formats differently from transformers is a failure. A system prompt infllm refuses where transformers
raises too (Mistral's original v0.1 / v0.2 templates) passes; one it refuses in a conversation only (Mistral v0.3 /
Nemo, which move it to the last user message) has its first turn checked alone (without -i) and its second listed.
Where a template writes an answer as ' ' + content (Mistral's SentencePiece models), the model's first answer piece
carries that space; the byte-level fixture model's cannot, so the second turn's answer is taken as the space + it.

  usage: python3 scripts/chat_check.py --templates DIR [--bin build/infllm] [--only SUBSTRING]
  llama.cpp's templates come with its sources (hf_check.py's --converter note: llama-cpp-python's PyPI sdist,
  vendor/llama.cpp/models/templates)
Exit status 0 when every formatted template matches, 1 otherwise."""
import argparse
import json
import os
import subprocess
import sys
import tempfile

here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(here, "tests"))
from model_testlib import CHAT_SPECIALS, Tiny, chat_fixture_ids, write_chat_tokenizer  # noqa: E402
from transformers.utils.chat_template_utils import render_jinja_template  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--templates", required=True, help="a folder of .jinja chat templates")
ap.add_argument("--bin", default=os.path.join(here, "build", "infllm"))
ap.add_argument("--only", default="", help="the templates whose file name contains this")
args = ap.parse_args()

BOS, EOS = "<|begin_of_text|>", "<|endoftext|>"
fixture_ids = chat_fixture_ids


def folder(tmp, template):
    d = os.path.join(tmp, "m")
    if not os.path.isdir(d):
        m = Tiny("llama", seed=3, n_vocab=256 + len(CHAT_SPECIALS) + 5)
        m.write_gguf(os.path.join(tmp, "m.gguf"), {})  # (write_hf takes the values the GGUF stores)
        m.write_hf(d)
        write_chat_tokenizer(d)
        with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
            json.dump({"bos_token": BOS, "eos_token": EOS}, f)
    with open(os.path.join(d, "chat_template.jinja"), "w") as f:
        f.write(template)
    return d


def render(template, messages):
    text = render_jinja_template([messages], chat_template=template, add_generation_prompt=True, bos_token=BOS,
                                 eos_token=EOS)[0][0]
    return text


def infllm_turns(d, system, stdin, interactive=True):
    # (--ctx: a long default system prompt, Devstral's, is 5.7K tokens of the byte-level fixture)
    cmd = [args.bin, "run", "-m", d, "--chat", "-n", "1", "--temp", "0", "--print-ids", "-q", "--ctx", "16384"]
    cmd += ["-i"] if interactive else ["-p", stdin.splitlines()[0]]
    if system is not None:
        cmd += ["--system", system]
    p = subprocess.run(cmd, input=stdin.encode() if interactive else b"", capture_output=True)
    err = p.stderr.decode(errors="replace")
    turns = [[int(x) for x in ln.split(":")[1].split()] for ln in err.splitlines()
             if ln.startswith(("prompt ids:", "generated ids:"))]
    return p.returncode, err, turns


passed = failed = refused = 0
names = sorted(n for n in os.listdir(args.templates) if n.endswith(".jinja") and args.only in n)
with tempfile.TemporaryDirectory() as tmp:
    for name in names:
        template = open(os.path.join(args.templates, name)).read()
        d = folder(tmp, template)
        results = []
        for system in (None, "Be brief.", ""):
            msgs = ([{"role": "system", "content": system}] if system is not None else []) + \
                [{"role": "user", "content": "hi there"}]
            rc, err, turns = infllm_turns(d, system, "hi there\nand you?\n")
            refusal = rc != 0 and ("none of the styles" in err or "not reproduced here" in err or
                                   "takes no system prompt" in err)
            if refusal and system is None:  # the template is not formatted
                results = None
                break
            try:
                want = fixture_ids(render(template, msgs))
            except Exception as e:  # a template transformers cannot render with these messages
                ok = True if refusal else None  # (both refusing it is right)
                results.append((f"system {system!r}", ok, f"transformers: {type(e).__name__}: {str(e)[:80]}" +
                                (", infllm refuses it too" if refusal else "")))
                continue
            turn2_refused = None
            if refusal:  # a system prompt refused in a conversation only (Mistral's in the last user message):
                turn2_refused = next((ln for ln in err.splitlines() if "chat:" in ln), err.strip())
                turn2_refused = turn2_refused.split("chat:")[-1].split(", which")[0].strip()[:110]
                rc, err, turns = infllm_turns(d, system, "hi there\n", interactive=False)  # the first turn alone
                if rc != 0:
                    results.append((f"system {system!r}", False, f"infllm refuses what transformers renders: "
                                    f"{err.strip()[-120:]}"))
                    continue
            got = turns[0] if turns else []
            results.append((f"system {system!r}", got == want, "" if got == want else
                            f"infllm {got[:40]} vs transformers {want[:40]} ({err.strip()[-120:]})"))
            if turn2_refused:
                results.append((f"system {system!r}, turn 2", None, f"refused: {turn2_refused}"))
            elif len(turns) >= 4:  # the second turn: the ids fed over both turns against [user, answer, user]
                ans = turns[1]
                text = bytes(ans).decode("utf-8", "surrogateescape") if all(t < 256 for t in ans) else None
                if text is None or not text.strip() or text != text.strip():
                    results.append((f"system {system!r}, turn 2", None, f"skipped (answer token {ans})"))
                    continue
                first = render(template, msgs)
                conv = render(template, msgs + [{"role": "assistant", "content": text},
                                                {"role": "user", "content": "and you?"}])
                # A template writing the answer as ' ' + content (Mistral v0.1 / v0.2 / v0.3 / v7) is one of a
                # SentencePiece model, whose first answer piece carries that space ("\u2581Hi", decoded "Hi"): the
                # byte-level fixture model cannot generate it, so the answer here is taken as the space + its token
                lead = [32] if conv.startswith(first + " " + text) and not conv.startswith(first + text) else []
                fed = turns[0] + lead + turns[1][:-1] + turns[2]
                want2 = fixture_ids(conv)
                results.append((f"system {system!r}, turn 2", fed == want2, ("(answer with its leading space) "
                                if lead else "") + ("" if fed == want2 else
                                                    f"infllm {fed[-40:]} vs transformers {want2[-40:]}")))
        if results is None:
            refused += 1
            why = next((ln for ln in err.splitlines() if "chat:" in ln), "")
            print(f"--   {name}: not formatted ({why.split('chat:')[-1].split(', which')[0].strip()[:110]})")
            continue
        for what, ok, why in results:
            if ok is None:
                print(f"--   {name} {what}: {why}")
                continue
            passed += ok
            failed += not ok
            print(f"{'ok  ' if ok else 'FAIL'} {name} {what}{': ' + why if why else ''}")
print(f"chat_check: {passed} passed, {failed} failed; {refused} templates not formatted")
sys.exit(1 if failed else 0)
