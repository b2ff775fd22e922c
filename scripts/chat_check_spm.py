#!/usr/bin/env python3
"""chat_check_spm.py (opt-in, not in CI): `infllm run --chat` on Mistral's real SentencePiece vocabularies against
transformers' apply_chat_template, the tokenizer's handling of the [INST] markers included (what
scripts/chat_check.py's byte-level fixture cannot show: SentencePiece's spaces decide the ids).

Mistral's tokenizer models come with the mistral-common wheel on PyPI (mistral_common/data: tokenizer.model.v1, the
32000-piece vocabulary of Mistral-7B v0.1 / v0.2 and Mixtral-8x7B, where [INST] is plain text; the v3 one of 32768
pieces, where [INST] / [/INST] are control tokens; tekken_240718.json, Nemo's 131072-token byte-level BPE); pip
downloads it unless --spm names files. A .model is written as a Hugging Face tokenizer.json in the layout of the hub's
Mistral files of 2023-24 (BPE with byte fallback, a Prepend "\u2581" + Replace normalizer, no pre-tokenizer, the control
pieces as special added tokens); a tekken .json by transformers' own converter (convert_tekken_tokenizer, which needs
the mistral-common package installed: skipped without it). Each goes beside a tiny random llama of that vocabulary
(tests/model_testlib.py). For every template given (default: tests/data's and the Mistral
templates of tests/py_model_cli.py) and a user message without and with a system prompt:
  turn 1  `infllm run --chat --print-ids` prompt ids == apply_chat_template(messages, add_generation_prompt=True)
  turn 2  (-i, two generated tokens) the ids infllm fed after its answer (the answer's end and the next user
          message) == those of apply_chat_template([... user, assistant = the answer's text, user]) after the
          answer. The answer itself is fed as generated, which re-tokenizing its text may split otherwise (a
          template's ' ' + content, a leading piece): that part is reported, not failed, as every incremental chat
          runtime feeds the model's own tokens.
A combination transformers refuses (a system message to a template without a system role) must be refused by
infllm too; one infllm refuses for a conversation only (-i with a system prompt the template moves) is listed.

  usage: python3 scripts/chat_check_spm.py [--bin build/infllm] [--spm A.model,B.model] [--templates T.jinja,...]
  needs: transformers, tokenizers, sentencepiece, protobuf, numpy, gguf, safetensors (a venv of hf_check.py's kind)
Exit status 0 when every check passes, 1 otherwise."""
import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import zipfile

here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(here, "tests"))
from model_testlib import Tiny  # noqa: E402
from tokenizers import Tokenizer, decoders, models, normalizers  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402
from transformers.convert_slow_tokenizer import SentencePieceExtractor  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--bin", default=os.path.join(here, "build", "infllm"))
ap.add_argument("--spm", default="", help="SentencePiece .model / tekken .json files, comma-separated (default: "
                                         "mistral-common's v1, v3 and tekken_240718)")
ap.add_argument("--templates", default="", help="chat templates (.jinja), comma-separated (default: the Mistral ones "
                                                "of tests/data and tests/py_model_cli.py)")
args = ap.parse_args()


def mistral_common_models(tmp):
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, "mistral-common"],
                   check=True)
    whl = sorted(glob.glob(os.path.join(tmp, "mistral_common-*.whl")))[-1]
    out = []
    with zipfile.ZipFile(whl) as z:
        for name in ("mistral_common/data/tokenizer.model.v1",
                     "mistral_common/data/mistral_instruct_tokenizer_240323.model.v3",
                     "mistral_common/data/tekken_240718.json"):
            z.extract(name, tmp)
            out.append(os.path.join(tmp, name))
    return out


def hf_tokenizer(spm_path, out):
    """the .model as the hub's Mistral tokenizer.json files lay it out; a tekken .json by transformers' converter"""
    if spm_path.endswith(".json"):
        from transformers.integrations.mistral import convert_tekken_tokenizer  # (needs mistral-common)
        convert_tekken_tokenizer(spm_path, chat_template="").save_pretrained(out)
        for f in ("chat_template.jinja", "chat_template.json"):  # (the templates go to tokenizer_config.json)
            if os.path.exists(os.path.join(out, f)):
                os.remove(os.path.join(out, f))
        return PreTrainedTokenizerFast.from_pretrained(out)
    kw = SentencePieceExtractor(spm_path).extract(None)
    tk = Tokenizer(models.BPE(vocab=kw["vocab"], merges=kw["merges"], unk_token="<unk>", fuse_unk=True,
                              byte_fallback=True))
    tk.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tk.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                    decoders.Strip(" ", 1, 0)])
    tk.add_special_tokens(list(kw["additional_special_tokens"]))
    t = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    t.save_pretrained(out)
    return PreTrainedTokenizerFast.from_pretrained(out)


def default_templates():
    tpls = {os.path.basename(p): open(p).read() for p in sorted(glob.glob(os.path.join(here, "tests", "data",
                                                                                      "chat_tpl_mistral_*.jinja")))}
    src = open(os.path.join(here, "tests", "py_model_cli.py")).read()
    i, j = src.find("    M_V02 = ("), src.find("    data = os.path.join")
    if i >= 0 and j > i:  # the literal templates written there (v0.2's original and 2024 ones, Large-2411's)
        ns = {}
        exec("\n".join(line[4:] for line in src[i:j].splitlines()), ns)  # (string literals only)
        for name in ("M_V02", "M_V1", "M_V7"):
            if name in ns:
                tpls[f"py_model_cli {name}"] = ns[name]
    return tpls


def ids_of(enc):
    return list(enc["input_ids"]) if hasattr(enc, "keys") else list(enc)


def run(d, extra, stdin):
    cmd = [args.bin, "run", "-m", d, "--chat", "-n", "2", "--temp", "0", "--print-ids", "-q", "--ctx", "8192"] + extra
    p = subprocess.run(cmd, input=stdin.encode(), capture_output=True)
    err = p.stderr.decode(errors="replace")
    turns = [[int(x) for x in ln.split(":")[1].split()] for ln in err.splitlines()
             if ln.startswith(("prompt ids:", "generated ids:"))]
    return p.returncode, err, turns


passed = failed = 0


def report(ok, what, why=""):
    global passed, failed
    if ok is None:
        print(f"--   {what}{': ' + why if why else ''}")
        return
    passed += ok
    failed += not ok
    print(f"{'ok  ' if ok else 'FAIL'} {what}{': ' + why if why else ''}")


with tempfile.TemporaryDirectory() as tmp:
    spms = [x for x in args.spm.split(",") if x] or mistral_common_models(tmp)
    if args.templates:
        templates = {os.path.basename(p): open(p).read() for p in args.templates.split(",") if p}
    else:
        templates = default_templates()
    for si, spm_path in enumerate(spms):
        d = os.path.join(tmp, f"m{si}")
        try:
            tok = hf_tokenizer(spm_path, d)
        except ImportError as e:
            report(None, os.path.basename(spm_path), f"skipped: {str(e).strip().splitlines()[0][:100]}")
            continue
        m = Tiny("llama", seed=3, n_vocab=len(tok))
        m.write_gguf(os.path.join(tmp, f"m{si}.gguf"), {})  # (write_hf takes the values the GGUF stores)
        m.write_hf(d)
        vname = os.path.basename(spm_path)
        for tname, tpl in templates.items():
            with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
                json.dump({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True,
                           "chat_template": tpl}, f)
            tok.chat_template = tpl
            for system in (None, "Be brief."):
                what = f"{vname} / {tname} / system {system!r}"
                msgs = ([{"role": "system", "content": system}] if system is not None else []) + \
                    [{"role": "user", "content": "hi there"}]
                sysarg = ["--system", system] if system is not None else []
                rc, err, turns = run(d, sysarg + ["-p", "hi there"], "")
                try:
                    want = ids_of(tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True))
                except Exception as e:  # transformers refuses the messages: so must infllm
                    report(rc != 0, f"{what}, turn 1", f"transformers: {type(e).__name__}; infllm "
                           + ("refuses it too" if rc != 0 else "takes it"))
                    continue
                got = turns[0] if rc == 0 and turns else None
                report(got == want, f"{what}, turn 1", "" if got == want else
                       f"infllm {tok.convert_ids_to_tokens(got) if got else err.strip()[-120:]} vs transformers "
                       f"{tok.convert_ids_to_tokens(want)}")
                rc, err, turns = run(d, sysarg + ["-i"], "hi there\nand you?\n")
                if rc != 0 and "conversation (-i)" in err:
                    report(None, f"{what}, turn 2", "refused for a conversation (the template moves the system prompt)")
                    continue
                if rc != 0 or len(turns) < 3:
                    report(False, f"{what}, turn 2", err.strip()[-160:])
                    continue
                ans = turns[1]
                text = tok.decode([x for x in ans if x != tok.eos_token_id])
                conv = msgs + [{"role": "assistant", "content": text}, {"role": "user", "content": "and you?"}]
                want2 = ids_of(tok.apply_chat_template(conv, add_generation_prompt=True, tokenize=True))
                # run.c feeds the answer's last token with the next turn unless it was the EOS: the ids after it
                # are the turn's own (the EOS it adds, the user message)
                fed_after = turns[2][1:] if ans and ans[-1] != tok.eos_token_id else turns[2]
                eos_at = len(want2) - len(fed_after)
                ok = eos_at >= len(turns[0]) and want2[eos_at:] == fed_after and want2[:len(turns[0])] == turns[0]
                same_answer = ok and want2[len(turns[0]):eos_at] == [x for x in ans if x != tok.eos_token_id]
                retok = tok.convert_ids_to_tokens(want2[len(turns[0]):eos_at])
                note = "" if same_answer or not ok else \
                    f"(the answer re-tokenizes as {retok}; fed as generated, {tok.convert_ids_to_tokens(ans)})"
                report(ok, f"{what}, turn 2", note if ok else
                       f"infllm fed {tok.convert_ids_to_tokens(fed_after)} after the answer, transformers "
                       f"{tok.convert_ids_to_tokens(want2[len(turns[0]):])}")
print(f"chat_check_spm: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
