#!/usr/bin/env python3
"""Usage errors of every infllm command that parses an option table (tools/opts.c opts_parse): run, attn, eval ppl,
eval passkey, bench attn / backward / peak / run. Each kind of error (a missing value, a value given to a flag, a
value that does not parse, an unknown option, a stray argument) exits 2 with nothing on stdout and, on stderr, a
message headed by the command's name that names the option, then the command's usage. "needs a value" and "takes
no value" printed no usage, and a bad value neither, where an unknown option did. And --help prints the usage on
stdout, exit 0. No model or input is needed: every case fails while parsing.

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

c.finish()
