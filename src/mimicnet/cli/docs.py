"""`mimicnet docs FILE...`: rewrite the generated blocks of Markdown files from the records they name."""
from __future__ import annotations

import sys
from pathlib import Path

from ..report.common import ReportError
from ..report.docs import stale, stray_verdicts, sync


def cmd_docs(args) -> int:
    problems = []
    for f in args.files:
        if not f.is_file():
            print(f"mimicnet: error: {f}: no such Markdown file", file=sys.stderr)
            return 2
        try:
            if args.check:
                problems += stale(f) + stray_verdicts(f)
            elif sync(f):
                print(f"rewrote the generated blocks of {f}")
        except ReportError as e:
            print(f"mimicnet: error: {f}: {e}", file=sys.stderr)
            return 2
    for p in problems:
        print(p)
    return 1 if problems else 0


def register(sub) -> None:
    d = sub.add_parser("docs", help="rewrite the generated blocks (results, verdicts) of Markdown files from their records",
                       description="Every block between '<!-- mimicnet: KIND [RECORD] -->' and '<!-- /mimicnet -->' "
                       "is made anew from the record it names (a results folder with index.csv, relative to the "
                       "file): kinds claims (each claim with the judge's verdict), table, stages, rule. --check "
                       "changes nothing: it lists blocks that differ from their records and lines outside blocks "
                       "that state a verdict, and exits 1 when there are any.")
    d.add_argument("files", type=Path, nargs="+", metavar="FILE", help="Markdown files (README.md, docs/results/*/README.md)")
    d.add_argument("--check", action="store_true", help="change nothing; list what is stale (exit 1 if anything)")
    d.set_defaults(func=cmd_docs)
