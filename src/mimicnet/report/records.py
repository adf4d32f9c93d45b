"""A results folder made into a record to commit (docs/results/NAME): its run index, its reproduce.json and the
records of its ensemble and transfer set, with every path of the machine that ran it taken out, and its report
built from those copies alone (so `mimicnet report RECORD` and `mimicnet docs` give the same tables later).

    index.csv                the run index (paths relative to the results folder, as in the folder itself)
    reproduce.json           the preset, command, stage times, hardware, data (the archive by name and sha256)
    ensemble.json            the ensemble's record, when the study made one
    transfer-manifest.json   the transfer set's manifest (its files' checksums, the teacher by sha256)
    report files             table*.md/.csv/.tex, figure*.png/.svg, report.html, as `mimicnet report` writes them

A path inside the results folder becomes relative to it; any other absolute path (the data archive, a
teacher file) becomes its file name: the sha256 beside it says which file it was.
"""
from __future__ import annotations

import csv
import io
import json
import re
import shutil
from pathlib import Path

from ..core.artifacts import read_json, write_text
from ..core.index import read_index
from .common import ReportError


def scrub(value, root: Path):
    """`value` (JSON-like) with absolute paths made relative to `root` (inside it) or cut to their name."""
    if isinstance(value, dict):
        return {k: scrub(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v, root) for v in value]
    if isinstance(value, str):
        return _scrub_text(value, root)
    return value


# a URL's password (a --storage postgresql://user:secret@host/db): never in a record
_URL_PASSWORD = re.compile(r"^([a-z][a-z0-9+.-]*://[^:/@\s]*):[^@/\s]*@", re.IGNORECASE)


def _scrub_text(s: str, root: Path) -> str:
    if " " in s:  # a command line: each word on its own
        return " ".join(_scrub_text(w, root) for w in s.split(" "))
    if "://" in s:
        return _URL_PASSWORD.sub(r"\1:***@", s)
    if s.startswith("journal:"):  # a --storage journal:/path/to/file
        return "journal:" + _scrub_text(s[len("journal:"):], root)
    if "=" in s and not s.startswith("/"):  # --data=/path, --set data=/path
        k, v = s.split("=", 1)
        return f"{k}={_scrub_text(v, root)}"
    if not s.startswith("/"):
        return s
    p = Path(s)
    for base in (root, root.resolve()):
        try:
            rel = p.relative_to(base)
            return str(rel) if str(rel) != "." else "."
        except ValueError:
            continue
    return p.name


def export_record(results_dir: Path, dest: Path, build) -> list[str]:
    """Copy a results folder's record files into `dest`, scrubbed, then `build(dest)` its report from them, into
    `dest` itself (report.build_report with out_dir=dest). Returns the record files copied."""
    results_dir, dest = Path(results_dir).resolve(), Path(dest)
    if not (results_dir / "index.csv").exists():
        raise ReportError(f"{results_dir}: no index.csv (not a results folder)")
    if dest.resolve() == results_dir:
        raise ReportError(f"--record {dest}: give a folder other than the results folder")
    read_index(results_dir / "index.csv")  # a damaged index: its one line, before anything is written
    rows = list(csv.reader(io.StringIO((results_dir / "index.csv").read_text())))
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([rows[0]] + [[_scrub_text(c, results_dir) for c in r]
                                                                for r in rows[1:]])
    files = {"index.csv": buf.getvalue()}
    for src, name in (("reproduce.json", "reproduce.json"), ("ensemble/ensemble.json", "ensemble.json"),
                      ("transfer/manifest.json", "transfer-manifest.json")):
        f = results_dir / src
        if f.exists():
            files[name] = json.dumps(scrub(read_json(f), results_dir), indent=1) + "\n"
    new = not dest.exists()
    try:
        for name, text in files.items():
            write_text(dest / name, text)
        build(dest)
    except BaseException:
        if new:  # a record that could not be built is not left half made
            shutil.rmtree(dest, ignore_errors=True)
        raise
    return list(files)
