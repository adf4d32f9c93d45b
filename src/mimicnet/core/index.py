"""The run index: one CSV row per finished run (teacher, baseline, student, ensemble, search trial).

Reports are built from it, never by re-parsing logs. Every row is an ``IndexRow`` (one dataclass, so a row
cannot be assembled with a misspelt column); appends take an exclusive lock so many workers share one index.
"""
from __future__ import annotations

import csv
import dataclasses
import fcntl
import io
import math
import os
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path


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


def append_index(index_path, row: IndexRow) -> None:
    """Append one row (the header first, if the file is new), under an exclusive lock, fsync'd."""
    if not isinstance(row, IndexRow):
        raise TypeError(f"append_index takes an IndexRow, not {type(row).__name__}")
    values = dataclasses.asdict(row)
    values["kind"] = str(values["kind"])
    values["finished_at"] = values["finished_at"] or time.strftime("%Y-%m-%dT%H:%M:%S")
    if isinstance(values.get("widths"), (list, tuple)):
        values["widths"] = "x".join(map(str, values["widths"]))
    index_path = Path(index_path)
    index_path.parent.mkdir(parents=True, exist_ok=True)
    with open(index_path, "a+", newline="") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            f.seek(0, os.SEEK_END)
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=INDEX_COLUMNS)
            if f.tell() == 0:
                w.writeheader()
            w.writerow({k: ("" if v is None else v) for k, v in values.items()})
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_index(index_path) -> list[dict]:
    """Rows as dicts of strings ('' for blank); numbers are left to the reader (pandas-free on purpose)."""
    index_path = Path(index_path)
    if not index_path.exists():
        return []
    with open(index_path, newline="") as f:
        return list(csv.DictReader(f))


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
