"""Generated blocks in Markdown: every result that README.md or a record's README states comes from a record.

A block is a pair of HTML comments (invisible when the Markdown is rendered) around text this module writes:

    <!-- mimicnet: claims docs/results/cpu-preset-2026-12-07 -->
    | claim | paper | this run | verdict |
    ...
    <!-- /mimicnet -->

The first line names the kind and its argument (a record folder, relative to the Markdown file's folder).
`sync(path)` rewrites every block from the records; `stale(path)` returns the blocks whose text differs from
what the records give now (the suite fails on any: a verdict cannot outlive the judge that gave it), and
`stray_verdicts(path)` the lines outside blocks that use the judge's verdict words (a verdict typed by hand).

Kinds (each a plain function in KINDS, registered by name):

    claims RECORD    the claims of a record's report, each with its verdict and its numbers
    verdicts RECORD  the same claims, one line each: the verdict and the tally of its comparisons
    table RECORD     the record's table (the main study's Table 2, a study's arms table)
    pivot RECORD     a study's own summary table (the modern study's students by depth and training)
    printed RECORD   the table `mimicnet reproduce` prints at its end (per cell: trials, best, top-5, seeds)
    stages RECORD    the stage times of reproduce.json
    rule             the judge's rule (core.noise.RULE)
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from ..core import noise
from ..core.artifacts import write_text
from ..studies.deviations import deviations
from .common import ReportError, load_reproduce
from .report import deviations_markdown, record_claims, record_table
from .study import study_record_pivot
from .tables import results_table

OPEN = re.compile(r"^<!-- mimicnet: (\w+)(?: (\S+))? -->$")
CLOSE = "<!-- /mimicnet -->"

KINDS: dict[str, Callable[[Path, str | None], str]] = {}   # kind -> fn(the file's folder, argument) -> text


def register_block(name: str):
    def add(fn):
        KINDS[name] = fn
        return fn
    return add


# the pipeline's order (reproduce.json keeps its stages sorted by name)
STAGE_ORDER = ("teachers", "ensemble", "ensembles", "transfer", "baselines", "students", "arms", "seeds", "report")


def _record(base: Path, arg: str | None) -> Path:
    path = base / (arg or "")
    if arg is None or not (path / "index.csv").exists():
        raise ReportError(f"{arg}: not a record folder (no index.csv)")
    return path


@register_block("claims")
def claims_block(base: Path, arg: str | None) -> str:
    rows = record_claims(_record(base, arg))
    lines = ["| claim | paper | this run | verdict |", "|---|---|---|---|"]
    lines += [f"| {_cell(c['claim'])} | {_cell(c['paper'])} | {_cell(c['ours'])} | **{c['verdict']}** |" for c in rows]
    return "\n".join(lines)


@register_block("verdicts")
def verdicts_block(base: Path, arg: str | None) -> str:
    """The claims of a record, one line each: the verdict and how its comparisons came out (the numbers are in
    the record's own claims block and report)."""
    rows = record_claims(_record(base, arg))
    lines = ["| claim | verdict | comparisons |", "|---|---|---|"]
    lines += [f"| {_cell(c['claim'])} | **{c['verdict']}** | {_cell(c.get('tally', ''))} |" for c in rows]
    return "\n".join(lines)


@register_block("table")
def table_block(base: Path, arg: str | None) -> str:
    return record_table(_record(base, arg)).rstrip("\n")


@register_block("pivot")
def pivot_block(base: Path, arg: str | None) -> str:
    path = _record(base, arg)
    text = study_record_pivot(path, load_reproduce(path))
    if not text:
        raise ReportError(f"{arg}: this record's study has no summary table")
    return text.rstrip("\n")


@register_block("printed")
def printed_block(base: Path, arg: str | None) -> str:
    """The table `mimicnet reproduce` prints at its end (report.results_table), as a code block."""
    return "```\n" + results_table(_record(base, arg)) + "\n```"


@register_block("stages")
def stages_block(base: Path, arg: str | None) -> str:
    repro = load_reproduce(_record(base, arg))
    stages = repro.get("stages") or {}
    if not stages:
        return "_no stage times recorded_"
    order = {k: i for i, k in enumerate(STAGE_ORDER)}
    lines = ["| stage | minutes |", "|---|---:|"]
    lines += [f"| {k} | {float(v) / 60:.1f} |" for k, v in sorted(stages.items(), key=lambda kv: order.get(kv[0], 99))]
    lines.append(f"| total | {sum(float(v) for v in stages.values()) / 60:.1f} |")
    return "\n".join(lines)


@register_block("rule")
def rule_block(base: Path, arg: str | None) -> str:
    return f"The judge: {noise.RULE}."


@register_block("deviations")
def deviations_block(base: Path, arg: str | None) -> str:
    """The main study's deviations from the paper (those of preset `arg`, or all), as a table."""
    return deviations_markdown(deviations(arg))


def _cell(s) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _blocks(text: str) -> list[tuple[int, int, str, str | None]]:
    """(first line after the opening comment, the closing comment's line, kind, argument) of every block."""
    lines, out, open_at, fenced = text.split("\n"), [], None, False
    for i, line in enumerate(lines):
        if line.strip().startswith("```"):  # a marker shown in fenced code (how to write a block) is not a block
            fenced = not fenced
            continue
        if fenced:
            continue
        m = OPEN.match(line.strip())
        if m:
            if open_at is not None:
                raise ReportError(f"line {i + 1}: a block opens inside the block of line {open_at[0]}")
            open_at = (i + 1, m.group(1), m.group(2))
        elif line.strip() == CLOSE:
            if open_at is None:
                raise ReportError(f"line {i + 1}: {CLOSE} closes no block")
            out.append((open_at[0], i, open_at[1], open_at[2]))
            open_at = None
    if open_at is not None:
        raise ReportError(f"line {open_at[0]}: block never closed ({CLOSE})")
    return out


def render(path: Path) -> str:
    """The file's text with every block made anew from the records."""
    path = Path(path)
    text = path.read_text()
    lines = text.split("\n")
    out, last = [], 0
    for start, end, kind, arg in _blocks(text):
        if kind not in KINDS:
            raise ReportError(f"{path}:{start}: unknown block kind {kind!r} (kinds: {', '.join(KINDS)})")
        body = KINDS[kind](path.parent, arg)
        out += lines[last:start] + body.split("\n")
        last = end
    return "\n".join(out + lines[last:])


def sync(path: Path) -> bool:
    """Rewrite the file's blocks from the records; True when anything changed."""
    new = render(path)
    if new == Path(path).read_text():
        return False
    write_text(Path(path), new)
    return True


def stale(path: Path) -> list[str]:
    """The blocks (by kind, argument and first line) whose committed text is not what the records give now."""
    path = Path(path)
    text, new = path.read_text(), render(path)
    if text == new:
        return []
    old_blocks, new_blocks = _blocks(text), _blocks(new)
    old_lines, new_lines = text.split("\n"), new.split("\n")
    out = []
    for (s0, e0, kind, arg), (s1, e1, _, _) in zip(old_blocks, new_blocks):
        if old_lines[s0:e0] != new_lines[s1:e1]:
            out.append(f"{path}:{s0}: {kind} {arg or ''} differs from what the record gives now".replace("  ", " "))
    return out or [f"{path}: differs from its regenerated text"]


# The judge's verdict words: outside a generated block, a sentence that uses one states a verdict by hand.
VERDICT_WORDS = re.compile(r"\b(holds|hold|does not hold|differs|within (?:seed )?noise|too few seeds|no spread)\b",
                           re.IGNORECASE)


def stray_verdicts(path: Path) -> list[str]:
    """Lines outside generated blocks (and outside fenced code) that use a verdict word: 'file:line: text'."""
    path = Path(path)
    lines = path.read_text().split("\n")
    inside = set()
    for start, end, _, _ in _blocks("\n".join(lines)):
        inside.update(range(start - 1, end + 1))
    out, fenced = [], False
    for i, line in enumerate(lines):
        if line.strip().startswith("```"):
            fenced = not fenced
            continue
        if i in inside or fenced:
            continue
        if VERDICT_WORDS.search(line):
            out.append(f"{path}:{i + 1}: {line.strip()}")
    return out
