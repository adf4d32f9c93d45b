"""The `mimicnet` command line: one module per command group, each with `register(subparsers)` and its
`cmd_*` functions. The only layer that imports argparse.

User errors (bad archive, impossible budget, corrupt checkpoint, ...) end with one line on stderr and exit
status 2, never a traceback: everything already computed stays on disk, and the same command resumes.
"""
from __future__ import annotations

import argparse
import sys

from .. import __version__
from ..core.errors import Diverged, UserError
from . import data, ensemble, estimate, evaluate, features, model, report, reproduce, search, train, transfer

COMMANDS = (train, evaluate, model, data, ensemble, transfer, search, reproduce, report, estimate, features)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mimicnet", description="How deep and how convolutional must a network be? "
                                "Train teachers, distil them into budgeted students, measure the frontier.")
    p.add_argument("--version", action="version", version=f"mimicnet {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UserError, Diverged) as e:
        print(f"mimicnet: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mimicnet: interrupted; run the same command again to continue", file=sys.stderr)
        return 130
