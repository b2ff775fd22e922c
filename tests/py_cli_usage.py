#!/usr/bin/env python3
"""Usage errors of every infllm command that parses an option table (tools/opts.c opts_parse): run, attn, eval ppl,
eval passkey, bench attn / backward / peak / run. Each kind of error (a missing value, a value given to a flag, a
value that does not parse, an unknown option, a stray argument) exits 2 with nothing on stdout and, on stderr, a
message headed by the command's name that names the option, then the command's usage. "needs a value" and "takes
no value" printed no usage, and a bad value neither, where an unknown option did. And --help prints the usage on
stdout, exit 0. Errors after parsing (a check of the options, a model that does not load, a run out of memory)
are headed by the command's name too, and those that are usage errors (exit 2) print the usage after the message.
`infllm version` takes no arguments, and `infllm help COMMAND` is the command's --help. No model or input is needed.

argv[1] is the infllm binary.
"""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_counter import Counter  # noqa: E402

INFLLM = sys.argv[1]
c = Counter("py_cli_usage")


def run(*args):
    return subprocess.run([INFLLM, *args], capture_output=True, text=True, timeout=60)


# (the command's words, its name in messages, an integer option, a flag or None where it has none)
COMMANDS = (
    (["run"], "infllm run", "--threads", "--chat"),
    (["attn"], "infllm attn", "--threads", "--exact-lse"),
    (["eval", "ppl"], "infllm eval ppl", "--window", "--quiet"),
    (["eval", "passkey"], "infllm eval passkey", "--seed", "--quiet"),
    (["bench", "attn"], "infllm bench attn", "--heads", "--exact-lse"),
    (["bench", "backward"], "infllm bench backward", "--reps", "--no-warmup"),
    (["bench", "peak"], "infllm bench peak", "--threads", None),
    (["bench", "run"], "infllm bench run", "--gen", None),
)

for words, prog, intopt, flag in COMMANDS:
    cases = [
        ([intopt], f"{prog}: {intopt} needs a value"),
        ([intopt, "4x"], f"{prog}: {intopt} expects an integer"),
        ([f"{intopt}=-2147483648"], f"{prog}: {intopt} expects an integer"),  # INT_MIN: the tools' "not given" mark
        (["--frobnicate"], f"{prog}: unknown option '--frobnicate'"),
        (["stray"], f"{prog}: unexpected argument 'stray'"),
    ]
    if flag:
        cases.append(([f"{flag}=1"], f"{prog}: {flag} takes no value"))
    for args, msg in cases:
        p = run(*words, *args)
        check_usage = f"usage: {prog} [options]"
        c.check(p.returncode == 2 and p.stdout == "" and p.stderr.startswith(msg) and check_usage in p.stderr,
                f"{' '.join(words + args)}: exit {p.returncode}, stdout {p.stdout[:80]!r}, want '{msg}' then "
                f"'{check_usage}' on stderr: {p.stderr[:300]!r}")
    p = run(*words, "--help")
    c.check(p.returncode == 0 and p.stdout.startswith(f"usage: {prog} [options]") and intopt in p.stdout
            and p.stderr == "", f"{' '.join(words)} --help: exit {p.returncode}, usage on stdout: {p.stdout[:120]!r}, "
            f"stderr {p.stderr[:120]!r}")

# the dispatchers (infllm, infllm bench, infllm eval): --help on stdout with exit 0; alone, the usage on stderr with
# exit 2; an unknown word named, then the usage, exit 2. 'eval --help' printed on stderr, and 'eval nosuch' printed
# the usage without naming 'nosuch'
for words, unknown in (([], "infllm: unknown command 'nosuch'"), (["bench"], "infllm bench: unknown benchmark 'nosuch'"),
                       (["eval"], "infllm eval: unknown evaluation 'nosuch'")):
    name = " ".join(["infllm", *words])
    p = run(*words, "--help")
    c.check(p.returncode == 0 and p.stdout.startswith("usage: ") and p.stderr == "",
            f"{name} --help: exit {p.returncode}, usage on stdout {p.stdout[:80]!r}, stderr {p.stderr[:80]!r}")
    if words:  # 'infllm' alone
        p = run(*words)
        c.check(p.returncode == 2 and p.stdout == "" and p.stderr.startswith("usage: "),
                f"{name} alone: exit {p.returncode}, usage on stderr {p.stderr[:80]!r}, stdout {p.stdout[:80]!r}")
    p = run(*words, "nosuch")
    c.check(p.returncode == 2 and p.stdout == "" and p.stderr.startswith(unknown) and "usage: " in p.stderr,
            f"{name} nosuch: exit {p.returncode}, want '{unknown}' then the usage on stderr: {p.stderr[:200]!r}")
p = run()
c.check(p.returncode == 2 and p.stdout == "" and p.stderr.startswith("usage: "), f"infllm alone: exit {p.returncode}")

# errors after the options are parsed name the command too: bench attn's said 'infllm bench:', and the model
# commands' shared checks and loader ('--kv-type must be ...', 'infllm: cannot load model ...') named none or
# 'infllm' alone
import resource  # noqa: E402


def small_address_space():
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))  # the tensors of a million tokens cannot be had


probe = subprocess.run([INFLLM, "version"], capture_output=True, preexec_fn=small_address_space)
for words in (["bench", "attn", "--peak", "100"], ["bench", "backward"]) if probe.returncode == 0 else ():
    # 16 KV heads: q, k, v and out of 4 GB each, none allocated (nothing filled before the error)
    p = subprocess.run([INFLLM, *words, "--seqlen", "1000000", "--heads", "16", "--kv-heads", "16", "--threads", "1",
                        "--no-warmup", "--format", "json"], capture_output=True, text=True, timeout=120,
                       preexec_fn=small_address_space)
    want = f"infllm {' '.join(words[:2])}: out of memory for T=1000000"
    c.check(p.returncode == 1 and p.stderr.startswith(want), f"{' '.join(words)} --seqlen 1000000 under a 2 GiB "
            f"address space: exit {p.returncode}, want '{want}': {p.stderr[:200]!r}")
if probe.returncode:  # sanitizer builds reserve more address space than that
    print("skip: bench attn / backward out of memory (the binary does not start under a 2 GiB address space)")
missing = os.path.join(os.path.dirname(os.path.abspath(__file__)), "no-such-model.gguf")
for words, prog in ((["run", "-p", "hi"], "infllm run"), (["eval", "ppl", "--tokens", "1,2,3"], "infllm eval ppl"),
                    (["eval", "passkey"], "infllm eval passkey"), (["bench", "run"], "infllm bench run")):
    p = run(*words, "-m", missing, "-q") if prog != "infllm bench run" else run(*words, "-m", missing)
    c.check(p.returncode == 1 and p.stderr.startswith(f"{prog}: cannot load model '{missing}'"),
            f"{' '.join(words)} -m MISSING: exit {p.returncode}, the message names {prog}: {p.stderr[:200]!r}")
    p = run(*words, "-m", missing, "--kv-type", "q4")
    c.check(p.returncode == 2 and p.stderr.startswith(f"{prog}: --kv-type must be f32, f16 or bf16"),
            f"{' '.join(words)} --kv-type q4: exit {p.returncode}, the message names {prog}: {p.stderr[:200]!r}")


# a usage error found after the options are parsed (a value of the right syntax that the command's own checks refuse,
# options that conflict, a required one missing) prints the command's usage after its message, as opts_parse's errors
# do (tools/opts.c opts_usage_error): these printed the message alone
POST_PARSE = (
    (["run", "-m", missing, "-p", "a", "--tokens", "1"], "infllm run", "give the prompt once"),
    (["run", "-m", missing, "-p", "a", "--system", "s"], "infllm run", "--system applies to --chat only"),
    (["attn", "--q", "q.npy"], "infllm attn", "--q, --k and --v are required"),
    (["attn", "--q", "q.npy", "--k", "k.npy", "--v", "v.npy", "--mode", "fast"], "infllm attn", "--mode must be"),
    # a parameter the library refuses, before any file is read and naming the option (exit 1 after the reads, naming
    # the library's field alone, until session 50)
    (["attn", "--q", "q.npy", "--k", "k.npy", "--v", "v.npy", "--threads", "-1"], "infllm attn", "(--threads)"),
    (["attn", "--q", "q.npy", "--k", "k.npy", "--v", "v.npy", "--block-size", "40"], "infllm attn",
     "(--block-size, --kernel-stride)"),
    (["eval", "ppl", "-m", missing, "-f", "a.txt", "--tokens", "1,2"], "infllm eval ppl", "give the text with"),
    (["eval", "ppl", "-m", missing, "--tokens", "1,,2"], "infllm eval ppl", "--tokens: bad token id list"),
    (["eval", "passkey", "-m", missing, "--ctx", "100"], "infllm eval passkey", "--ctx does not apply"),
    (["bench", "attn", "--block-size", "0"], "infllm bench attn", "infllm bench attn: "),
    (["bench", "attn", "--device", "cuda", "--peak", "5"], "infllm bench attn", "--peak (the CPU's FMA peak) does not"),
    (["bench", "backward", "--heads", "6", "--kv-heads", "4"], "infllm bench backward", "--heads must be a multiple"),
    (["bench", "backward", "--peak", "5"], "infllm bench backward", "--peak does not apply"),
    (["bench", "peak", "--seconds", "0"], "infllm bench peak", "--seconds must be > 0"),
    (["bench", "run"], "infllm bench run", "-m MODEL is required"),
    (["bench", "run", "-m", missing, "--gen", "0"], "infllm bench run", "--gen and --reps must be >= 1"),
    (["run", "-m", missing, "-p", "a", "--kv-type", "q4"], "infllm run", "--kv-type must be"),
    # an InfLLM-V2 option wrong whatever the model says, before the model loads (exit 1 after the load until session 50)
    (["run", "-m", missing, "-p", "a", "--topk", "-1"], "infllm run", "--topk must be >= 0 (got -1)"),
    (["bench", "run", "-m", missing, "--block-size", "0"], "infllm bench run", "--block-size must be >= 1"),
    (["eval", "ppl", "-m", missing, "--tokens", "1,2", "--dense-len", "-2"], "infllm eval ppl", "--dense-len must be >= -1"),
)
for args, prog, msg in POST_PARSE:
    p = run(*args)
    head = p.stderr.split("\n", 1)[0]
    c.check(p.returncode == 2 and p.stdout == "" and head.startswith(f"{prog}: ") and msg in head and
            f"\nusage: {prog} [options]\n" in p.stderr,
            f"{' '.join(args)}: exit {p.returncode}, the message then the usage on stderr: {p.stderr[:300]!r}")

# infllm version / --version take no arguments ('version --json' printed the version and exited 0); 'help COMMAND'
# is COMMAND's --help (it printed the command list whatever followed), and a word the command does not take, or a
# command that does not exist, is refused
for words in (["version", "--json"], ["--version", "extra"], ["-v", "x"]):
    p = run(*words)
    c.check(p.returncode == 2 and p.stdout == "" and "takes no arguments" in p.stderr and "usage: infllm" in p.stderr,
            f"infllm {' '.join(words)}: exit {p.returncode}, refused: {p.stderr[:200]!r}, stdout {p.stdout[:80]!r}")
p = run("version")
c.check(p.returncode == 0 and p.stdout.startswith("infllm "), f"infllm version: exit {p.returncode}")
for words, head in ((["help", "run"], "usage: infllm run [options]"), (["help", "attn"], "usage: infllm attn [options]"),
                    (["help", "bench", "attn"], "usage: infllm bench attn [options]"),
                    (["--help", "bench", "peak"], "usage: infllm bench peak [options]"),
                    (["help", "eval", "ppl"], "usage: infllm eval ppl [options]"), (["help", "bench"], "usage: infllm bench"),
                    (["help", "version"], "usage: infllm version"), (["help", "help"], "usage: infllm <command>")):
    p = run(*words)
    c.check(p.returncode == 0 and p.stdout.startswith(head) and p.stderr == "",
            f"infllm {' '.join(words)}: exit {p.returncode}, '{head}' on stdout: {p.stdout[:100]!r}, {p.stderr[:100]!r}")
for words, msg in ((["help", "nosuch"], "infllm help: unknown command 'nosuch'"),
                   (["help", "run", "extra"], "infllm run: unexpected argument 'extra'"),
                   (["help", "version", "extra"], "infllm help: 'version' takes no further words")):
    p = run(*words)
    c.check(p.returncode == 2 and p.stdout == "" and p.stderr.startswith(msg) and "usage: " in p.stderr,
            f"infllm {' '.join(words)}: exit {p.returncode}, want '{msg}' and a usage on stderr: {p.stderr[:200]!r}")

c.finish()
