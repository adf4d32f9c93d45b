"""The `mimicnet` command line: one module per command group, each with `register(subparsers)` and its
`cmd_*` functions. The only layer that imports argparse.

User errors (bad archive, impossible budget, corrupt checkpoint, ...) end with one line on stderr and exit
status 2, never a traceback: everything already computed stays on disk, and the same command resumes.
"""
from __future__ import annotations

import argparse
import errno
import os
import shlex
import sys

import sqlalchemy.exc
import torch

from .. import __version__
from ..core.errors import Diverged, UserError
from .common import check_paths
from . import (compress, data, docs, ensemble, estimate, evaluate, features, launch, model, report, reproduce, search,
               status, train, transfer)

# OSErrors that are the machine's state, not a bug: one line naming the file (e.filename), and what to do.
RESOURCE_ERRNOS = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space (disk quota)",
                   errno.EACCES: "fix its permissions or choose another --out",
                   errno.EPERM: "fix its permissions or choose another --out",
                   errno.EROFS: "choose a writable --out", errno.ENOMEM: "free some memory"}
# torch >= 2.5 names it torch.OutOfMemoryError; torch.cuda.OutOfMemoryError is the same class (older: the only one)
OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)

# OperationalErrors of a study database that are the machine's, not a bug: one line each
DATABASE_TROUBLE = ("disk is full", "disk i/o error", "readonly database", "read-only", "no space left",
                    "could not connect", "connection refused", "server closed the connection")

COMMANDS = (train, evaluate, model, data, ensemble, transfer, search, reproduce, status, launch, compress, report, docs,
            estimate, features)


class Parser(argparse.ArgumentParser):
    """argparse with a usage error as one line (which flag, what is wrong, where the flags are listed) and
    exit status 2, like every other user error; subcommands' parsers are of this class too."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` lists the arguments)\n")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="mimicnet", description="How deep and how convolutional must a network be? "
                                "Train teachers, distil them into budgeted students, measure the frontier.")
    p.add_argument("--version", action="version", version=f"mimicnet {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # what to run to continue, said with every error of the machine's state (full disk, out of memory)
    again = "then run the same command again (finished work is kept): mimicnet " + shlex.join(
        sys.argv[1:] if argv is None else [str(a) for a in argv])
    try:
        check_paths(parser, args)  # every path given: one line naming it and why, before any work
        return args.func(args)
    except (UserError, Diverged) as e:
        print(f"mimicnet: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # any errno: the machine's state or a path, not a bug; one line naming the file
        where = f"{e.filename}: " if e.filename else ""
        why = e.strerror or (os.strerror(e.errno) if e.errno else str(e))
        if e.errno in RESOURCE_ERRNOS:
            print(f"mimicnet: error: {where or 'a file: '}{why}; {RESOURCE_ERRNOS[e.errno]}, {again}", file=sys.stderr)
        else:
            print(f"mimicnet: error: {where}{why}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as e:
        asked = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        if isinstance(e, RuntimeError) and not isinstance(e, OUT_OF_MEMORY) and "can't allocate memory" not in asked:
            raise
        where = "GPU" if isinstance(e, OUT_OF_MEMORY) and "CUDA" in asked else "host"
        batch = getattr(e, "batch_size", None) or getattr(args, "batch_size", None)
        print(f"mimicnet: error: out of {where} memory{f' at batch size {batch}' if batch else ''}"
              f"{f' ({asked})' if asked else ''}; use a smaller --batch-size or model, or free memory, {again}",
              file=sys.stderr)
        return 2
    except sqlalchemy.exc.OperationalError as e:
        # a study database that cannot be written: full disk, read-only file, lost server
        why = str(e.orig if e.orig is not None else e).strip().splitlines()[0][:200]
        if not any(k in why.lower() for k in DATABASE_TROUBLE):
            raise
        print(f"mimicnet: error: the study database: {why}; free some space or fix the database, {again}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mimicnet: interrupted; run the same command again to continue", file=sys.stderr)
        return 130
