"""The run index: one CSV row per finished run (teacher, baseline, student, ensemble, search trial).

Reports are built from it, never by re-parsing logs. Every row is an ``IndexRow`` (one dataclass, so a row
cannot be assembled with a misspelt column). The index is a set of runs: one row per run folder (a rerun
replaces its row), written read-modify-write under an exclusive lock (many workers share one index) and
replaced atomically, with paths relative to the index's folder. A damaged index is an error, never a
shorter table.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from .artifacts import write_text
from .lock import held
from .errors import UserError


class RunKind(str, Enum):
    """What a run is for. Stored in the index as its value (the CSV format is unchanged)."""
    TEACHER = "teacher"      # a deep net trained on the labels (S2)
    BASELINE = "baseline"    # a student family trained on the labels (hard-target baseline, S4)
    STUDENT = "student"      # a student family trained to mimic a teacher's logits
    ENSEMBLE = "ensemble"    # an average of teachers (no training)

    def __str__(self) -> str:
        return self.value


@dataclass
class IndexRow:
    kind: str = ""                     # RunKind value
    family: str = ""
    budget: int | None = None
    params: int | None = None
    widths: tuple | str | None = None  # written as 12x34x56
    seed: int | None = None
    val_acc: float | None = None
    test_acc: float | None = None
    teacher: str | None = None         # students: what they mimicked (path), its accuracies
    teacher_val_acc: float | None = None
    teacher_test_acc: float | None = None
    loss: str | None = None            # ce | l2-logits | kl | l2-probs | softmax-mse
    mimic_mse: float | None = None     # students: on the test set, vs the teacher
    mimic_agreement: float | None = None
    study: str | None = None           # search trials: study name, number, complete|failed|pruned
    trial: int | None = None
    status: str | None = None
    epochs: int | None = None
    best_epoch: int | None = None
    max_epochs: int | None = None
    seconds: float | None = None
    run_id: str | None = None
    config_hash: str | None = None
    path: str | None = None
    data_sha256: str | None = None
    code_version: str | None = None
    finished_at: str | None = None
    repeat_of: int | None = None       # a seed rerun: the search trial whose config it trains with another seed


INDEX_COLUMNS = tuple(f.name for f in dataclasses.fields(IndexRow))


class IndexFileError(UserError, ValueError):
    """A run index that cannot be read as one (truncated, header missing or garbled): the message names the
    file and how to rebuild it. Never read as an empty or partial table."""


LOCK_SUFFIX = ".lock"   # index.csv.lock: the file writers flock (index.csv itself is replaced on every write)


def row_key(path: str | None, index_dir: Path) -> str | None:
    """What makes two rows the same run: its folder, relative to the index's folder when it lies inside it
    (absolute otherwise). A rerun of a run (a deleted results.json, a second reproduce, a retried search
    trial) writes the same key, and so replaces its row. Rows without a path are never merged."""
    if not path:
        return None
    rel = _rel_path(path, index_dir)
    if os.path.isabs(rel) and not os.path.exists(rel):
        # an older index's absolute path, of a results folder that has moved since: the run folder at the same
        # place under this index's folder (teachers/t0, studies/S/trials/3), if there is one
        parts = Path(rel).parts
        for k in range(min(4, len(parts) - 1), 0, -1):
            if (index_dir / Path(*parts[-k:])).is_dir():
                return str(Path(*parts[-k:]))
    return rel


def _rel_path(path: str, index_dir: Path) -> str:
    """`path` (absolute, or as stored: relative to the index's folder) relative to `index_dir` when it lies
    inside it (so a moved results folder still works); else as it was given."""
    p = Path(path)
    try:
        rel = os.path.relpath(p.resolve() if p.is_absolute() else (index_dir / p).resolve(), index_dir.resolve())
    except ValueError:
        return str(path)
    return str(path) if rel == ".." or rel.startswith(".." + os.sep) or os.path.isabs(rel) else rel


def _row_values(row: IndexRow, index_dir: Path) -> dict:
    if not isinstance(row, IndexRow):
        raise TypeError(f"append_index takes an IndexRow, not {type(row).__name__}")
    values = dataclasses.asdict(row)
    values["kind"] = str(values["kind"])
    values["finished_at"] = values["finished_at"] or time.strftime("%Y-%m-%dT%H:%M:%S")
    if isinstance(values.get("widths"), (list, tuple)):
        values["widths"] = "x".join(map(str, values["widths"]))
    if values.get("path"):
        values["path"] = _rel_path(os.path.abspath(values["path"]), index_dir)  # a new row's path: from the cwd
    if values.get("teacher") and os.path.isabs(values["teacher"]):
        # a student's teacher inside the results folder (its ensemble) by its place in it, as a record keeps
        # it: a moved or copied results folder still knows which ensemble its students mimicked
        values["teacher"] = _rel_path(values["teacher"], index_dir)
    return {k: ("" if v is None else str(v) if not isinstance(v, str) else v) for k, v in values.items()}


@contextmanager
def _locked(index_path: Path):
    """An exclusive flock on index.csv.lock (not on index.csv, which os.replace swaps for a new file)."""
    with held(index_path.with_name(index_path.name + LOCK_SUFFIX)):
        yield


def append_index(index_path, row: IndexRow, replace: bool = True) -> None:
    """Add the row of a run, or replace the row of the same run (same folder, see row_key): the index is a
    set of runs, not a log. `replace=False`: keep a row already there (re-indexing a finished run that was
    skipped). Read-modify-write under an exclusive lock shared by every worker, then an atomic replace."""
    index_path = Path(index_path)
    values = _row_values(row, index_path.parent)
    with _locked(index_path):
        rows = _read_raw(index_path) if index_path.exists() else []
        key = row_key(values.get("path"), index_path.parent)
        same = [i for i, r in enumerate(rows) if key is not None and row_key(r.get("path"), index_path.parent) == key]
        if same and not replace:
            return
        if same:
            rows[same[0]] = values
            rows = [r for i, r in enumerate(rows) if i not in same[1:]]
        else:
            rows.append(values)
        _write_rows(index_path, rows)


def write_index(index_path, rows: list[IndexRow]) -> None:
    """The whole index at once (rebuilt from the run folders): one row per run, later rows win."""
    index_path = Path(index_path)
    values = _dedupe([_row_values(r, index_path.parent) for r in rows], index_path.parent)
    with _locked(index_path):
        _write_rows(index_path, values)


def _write_rows(index_path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=INDEX_COLUMNS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k) or "" for k in INDEX_COLUMNS})
    write_text(index_path, buf.getvalue())


def _dedupe(rows: list[dict], index_dir: Path) -> list[dict]:
    """One row per run key: the later row's values, at the place of the first (older indexes were logs)."""
    out: list[dict] = []
    where: dict[str, int] = {}
    for r in rows:
        key = row_key(r.get("path"), index_dir)
        if key is not None and key in where:
            out[where[key]] = r
        else:
            if key is not None:
                where[key] = len(out)
            out.append(r)
    return out


def _damaged(index_path: Path, what: str) -> IndexFileError:
    return IndexFileError(f"{index_path}: damaged run index ({what}); rebuild it from the run folders with "
                          f"`mimicnet report {index_path.parent} --rebuild-index`")


def _read_raw(index_path: Path) -> list[dict]:
    """Every row as written (paths as stored), checked: a header of known columns, every row complete, the
    file ending with a newline. Anything else is an IndexFileError, never a shorter table."""
    try:
        with open(index_path, newline="") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise _damaged(index_path, "not text") from None
    if not text:
        raise _damaged(index_path, "empty file, no header")
    try:
        lines = list(csv.reader(io.StringIO(text)))
    except csv.Error as e:
        raise _damaged(index_path, f"unreadable CSV: {e}") from None
    header = lines[0] if lines else []
    unknown = [c for c in header if c not in INDEX_COLUMNS]
    if not header or unknown or len(set(header)) != len(header) or "kind" not in header:
        shown = ",".join(header)[:60]
        raise _damaged(index_path, f"line 1 is not the index header: {shown!r}")
    if not text.endswith("\n"):
        raise _damaged(index_path, f"line {len(lines)} is cut short, no newline at its end: truncated?")
    rows = []
    for n, fields in enumerate(lines[1:], start=2):
        if len(fields) != len(header):
            raise _damaged(index_path, f"line {n} has {len(fields)} of {len(header)} fields")
        rows.append(dict(zip(header, fields)))
    return rows


def read_index(index_path) -> list[dict]:
    """Rows as dicts of strings ('' for blank); numbers are left to the reader (pandas-free on purpose).

    One row per run (an index written as a log by older versions is read as the set it means: later rows
    win), with `path` as a usable path (stored relative to the index's folder, read back joined to it, so a
    moved results folder still works; absolute paths of older indexes are kept). A damaged file is an
    IndexFileError naming it and how to rebuild it."""
    index_path = Path(index_path)
    if not index_path.exists():
        return []
    base = Path(os.path.abspath(index_path.parent))
    rows = _dedupe(_read_raw(index_path), index_path.parent)
    for r in rows:
        for k in INDEX_COLUMNS:
            r.setdefault(k, "")
        if r.get("path") and not os.path.isabs(r["path"]):
            r["path"] = os.path.normpath(base / r["path"])
    return rows


def num(s) -> float | None:
    """An index cell as a finite float; blank, unparsable or infinite -> None."""
    try:
        v = float(s)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def pct(s) -> float | None:
    """Accuracy in percent; the index stores fractions (fit() writes 0..1), a value > 1 is already percent."""
    v = num(s)
    if v is None:
        return None
    return v * 100.0 if v <= 1.0 else v
