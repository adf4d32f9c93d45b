"""The README's commands are the command line's: every `mimicnet ...` it shows (code blocks, and commands in
backticks in tables and prose) parses with the real parser, so a documented flag that does not exist fails
here. Placeholders (ARCHIVE, DIR, N, …), optional parts [..] and alternatives a|b are expanded first."""
from __future__ import annotations

import contextlib
import io
import itertools
import re
import shlex
from pathlib import Path

import pytest

from mimicnet.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M)


def commands(text: str) -> list[str]:
    """Every `mimicnet ...` command line of the README, as written."""
    found = []
    for _, body in code_blocks(text):
        for line in body.replace("\\\n", " ").splitlines():  # continuation lines joined
            line = re.sub(r"\s#.*$", "", line)                 # shell comments
            for part in line.split("&&"):
                part = part.strip()
                if part.startswith("mimicnet "):
                    found.append(part)
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    for line in prose.splitlines():
        group = None
        for span in re.findall(r"`([^`]+)`", line):
            span = span.strip()
            if span.startswith("mimicnet "):
                found.append(span)
                group = span.split()[1]
            elif group and span.split()[0] == group and len(span.split()) > 1:
                found.append(f"mimicnet {span}")  # `mimicnet search show` / `search run SPACE` in one cell
    return found


PLACEHOLDER = re.compile(r"^(?:[A-Z][A-Z0-9_]*|[a-z])…?$")  # ARCHIVE, RESULTS_DIR, N, RUN…, a


def variants(command: str) -> list[list[str]]:
    """argv lists for one documented command line: `(A | B)` groups give one argv each, `[...]` parts are
    included, `x|y|z` values give one argv each, "…" (more of the same) is dropped, and a placeholder that is a
    flag's value becomes 1 (a valid int, float, budget, path and string)."""
    command = command.replace("\\|", "|")
    groups = [[command]]
    m = re.search(r"\(([^()]*)\)", command)
    if m:
        groups = [[command[:m.start()] + alt.strip() + command[m.end():]] for alt in m.group(1).split(" | ")]
    out = []
    for (cmd,) in groups:
        cmd = re.sub(r"\[([^\[\]]*)\]", r"\1", cmd)
        tokens = shlex.split(cmd)[1:]
        argv: list[list[str]] = []
        for i, tok in enumerate(tokens):
            after_flag = i > 0 and tokens[i - 1].startswith("--")
            if tok in ("…", "..."):
                if after_flag:
                    argv.append(["1"])
                continue
            tok = tok.rstrip("…")
            if after_flag and PLACEHOLDER.match(tok):
                argv.append(["1"])
            elif "|" in tok and not tok.startswith("|"):
                argv.append(tok.split("|"))
            else:
                argv.append([tok])
        out += [list(a) for a in itertools.product(*argv)]
    return out


def documented() -> list[tuple[str, list[str]]]:
    return [(c, argv) for c in commands(README.read_text()) for argv in variants(c)]


def test_the_readme_documents_commands():
    cmds = commands(README.read_text())
    assert len(cmds) >= 20, cmds
    heads = {c.split()[1] for c in cmds}
    assert {"train", "evaluate", "search", "reproduce", "report", "transfer", "ensemble"} <= heads


@pytest.mark.parametrize("command, argv", documented(), ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_every_documented_command_parses(command, argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            build_parser().parse_args(argv)
        except SystemExit as e:
            pytest.fail(f"README: `{command}` does not parse as {argv}: {err.getvalue().strip()} (exit {e.code})")


def test_the_parser_check_catches_a_flag_that_does_not_exist():
    with contextlib.redirect_stderr(io.StringIO()), pytest.raises(SystemExit):
        build_parser().parse_args(variants("mimicnet train --data ARCHIVE --no-such-flag 3")[0])


def test_mimic_and_search_flags_are_where_the_readme_says():
    args = build_parser().parse_args(["train", "--loss", "l2-logits", "--transfer", "t", "--temperature", "2",
                                      "--hard-weight", "0.5", "--normalize-logits"])
    assert (args.loss, args.transfer, args.temperature, args.hard_weight, args.normalize_logits) == \
        ("l2-logits", "t", 2.0, 0.5, True)
    args = build_parser().parse_args(["search", "run", "student-conv2-1M", "--trials", "3", "--transfer", "t",
                                      "--loss", "l2-logits"])
    assert (args.transfer, args.loss) == ("t", "l2-logits")


def test_the_first_command_needs_nothing_outside_the_checkout():
    lang, first = next((lang, body) for lang, body in code_blocks(README.read_text()) if lang == "bash")
    assert "../shared" not in first and "mimicnet reproduce" in first, first
    assert "--data ARCHIVE" in README.read_text().split("## ", 1)[0]  # how to use an archive already on disk
