"""Every run of a results folder on another test set (issue #13, "check on a fresh test set").

`evaluate_results(RESULTS_DIR, data)` reads RESULTS_DIR/index.csv, takes each finished row (status complete
or blank) whose folder holds a best.safetensors, and scores that checkpoint's plain accuracy against the
true labels of `data` (students too: the labels, not their teacher); an ensemble row (its folder holds
ensemble.json) is scored on the weighted mean of its members' logits, exactly as `mimicnet ensemble` built
it. Each row stands beside the test accuracy the index reports for it.

The index records the paths runs had when they finished; a results folder that was moved or copied since
is found by the longest tail of that path that exists under RESULTS_DIR (teachers/t0, ensembles/e, ...).
Rows that cannot be scored (failed or pruned, no checkpoint, not image models) are listed as skipped with
the reason, never silently dropped.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..core import artifacts
from ..core.artifacts import CheckpointError, code_version, file_sha256
from ..core.errors import UserError
from ..core.index import RunKind, num, read_index
from ..core.units import budget_name
from ..distill.ensemble import FORMAT as ENSEMBLE_FORMAT
from ..distill.ensemble import combine
from ..models.checkpoint import model_from_checkpoint
from ..models.inference import accuracy, predict_logits

IMAGE_SHAPE = [3, 32, 32]
FINISHED = ("", "complete")


class EvaluateError(UserError, ValueError):
    """A results folder, index or output file `mimicnet evaluate` cannot use (message names the file)."""


# ---------------------------------------------------------------------------------------------------- index

def read_run_index(results_dir) -> list[dict]:
    """The rows of RESULTS_DIR/index.csv (core.index.read_index, which refuses a damaged file), with the
    checks `evaluate` needs on top: a file that is there, is text and CSV, has a path column and no row cut
    short. Any of those is an EvaluateError naming the file."""
    index = Path(results_dir) / "index.csv"
    if not index.is_file():
        raise EvaluateError(f"{index}: no such file (a results folder holds the run index index.csv)")
    try:
        if index.stat().st_size == 0:
            raise EvaluateError(f"{index}: damaged run index (empty file, no header)")
        rows = read_index(index)
    except (csv.Error, UnicodeDecodeError) as e:
        raise EvaluateError(f"{index}: damaged run index (not a readable CSV file: {type(e).__name__})") from None
    except OSError as e:
        raise EvaluateError(f"{index}: cannot read file ({e.strerror or e})") from None
    for n, r in enumerate(rows, start=1):
        if "path" not in r or "kind" not in r:
            raise EvaluateError(f"{index}: damaged run index (no 'kind' or 'path' column in its header)")
        if any(v is None for v in r.values()):
            raise EvaluateError(f"{index}: damaged run index (row {n} is cut short)")
    return [{k: (v or "").strip() for k, v in r.items() if k is not None} for r in rows]


def is_results_dir(path) -> bool:
    """A results folder is one that holds a run index (index.csv)."""
    path = Path(path)
    return path.is_dir() and (path / "index.csv").is_file()


def resolve_run_path(stored: str, results_dir: Path, marker: str) -> Path | None:
    """Where the run the index calls `stored` is now: the path itself (absolute, or relative to the results
    folder) when it holds `marker`, else the longest tail of it under `results_dir` that does; None if none."""
    p = Path(stored)
    first = p if p.is_absolute() else results_dir / p
    if (first / marker).is_file():
        return first
    parts = [q for q in p.parts if q not in (p.anchor, "")]
    for k in range(len(parts)):
        if ".." in parts[k:]:
            continue
        cand = results_dir.joinpath(*parts[k:])
        if (cand / marker).is_file():
            return cand
    return None


def _rel(path: Path, results_dir: Path) -> str:
    try:
        return str(path.resolve().relative_to(results_dir.resolve()))
    except ValueError:
        return str(path.resolve())


# ---------------------------------------------------------------------------------------------------- scoring

@dataclass
class _Scorer:
    """Logits of checkpoints on one image set, each computed once (ensemble members are usually runs of the
    same index)."""
    x: torch.Tensor
    device: torch.device | str
    cache: dict

    def logits(self, ckpt: Path) -> tuple[torch.Tensor, dict]:
        key = str(ckpt.resolve())
        if key not in self.cache:
            model, meta = model_from_checkpoint(ckpt, self.device)
            shape = list(meta.get("in_shape", IMAGE_SHAPE))
            if shape != IMAGE_SHAPE:
                raise _NotScorable(f"trained on inputs of shape {'x'.join(map(str, shape))}, not 3x32x32 images")
            self.cache[key] = (predict_logits(model, self.x, meta.get("input_scale", 1.0), self.device), meta)
        return self.cache[key]


class _NotScorable(Exception):
    """A row that is fine but cannot be evaluated on images (its reason goes in the skipped list)."""


def _ensemble_logits(folder: Path, results_dir: Path, scorer: _Scorer) -> tuple[torch.Tensor, dict]:
    """Weighted mean logits of an ensemble folder's members (members found like runs when the folder moved)."""
    path = folder / "ensemble.json"
    info = artifacts.read_json(path)
    fmt = info.get("format") if isinstance(info, dict) else None
    if fmt != ENSEMBLE_FORMAT:
        raise CheckpointError(f"{path}: not a mimicnet ensemble (format {fmt!r})")
    members = info.get("members")
    if not isinstance(members, list) or not all(isinstance(m, dict) and isinstance(m.get("path"), str)
                                                and isinstance(m.get("weight"), (int, float)) for m in members):
        raise CheckpointError(f"{path}: damaged ensemble (members must be a list of {{path, weight, sha256}})")
    logits, weights = [], []
    for m in members:
        if m["weight"] <= 0:
            continue
        stored = Path(m["path"])
        where = resolve_run_path(str(stored.parent), results_dir, stored.name)
        if where is None:
            raise _NotScorable(f"member {m['path']} not found (nor under {results_dir})")
        ckpt = where / stored.name
        if m.get("sha256") and file_sha256(ckpt) != m["sha256"]:
            raise _NotScorable(f"member {ckpt} changed since the ensemble was built (sha256 differs)")
        logits.append(scorer.logits(ckpt)[0])
        weights.append(m["weight"])
    if not logits:
        raise _NotScorable(f"{path} lists no member with weight > 0")
    return combine(logits, weights), info


def _int(s) -> int | None:
    try:
        return int(float(s))
    except (TypeError, ValueError):
        return None


def evaluate_results(results_dir, x: torch.Tensor, y: torch.Tensor, device="cpu",
                     log: Callable[[str], None] = lambda s: None, num_classes: int | None = None) -> dict:
    """Score every finished run and ensemble of RESULTS_DIR on images x (uint8 N×3×32×32), labels y (see the
    module docstring). Returns {"rows": [...], "skipped": [...]}: one row per scored run, in index order
    (a run listed twice is scored once), with its reported and new test accuracy (fractions) and their
    difference; one skipped entry (path, reason) per row not scored, a damaged checkpoint or one with
    another number of outputs than `num_classes` (when given) included. EvaluateError when the index is
    damaged or lists nothing that can be scored."""
    results_dir = Path(results_dir)
    entries = read_run_index(results_dir)
    index = results_dir / "index.csv"
    scorer = _Scorer(x, device, {})
    rows, skipped, seen = [], [], set()
    todo = []
    for r in entries:
        kind, status, stored = r.get("kind", ""), r.get("status", "").lower(), r.get("path", "")
        if status not in FINISHED:
            skipped.append({"path": _rel(Path(stored), results_dir) if stored else "", "reason": f"status {status}"})
            continue
        if not stored:
            skipped.append({"path": stored, "reason": "no path in the index"})
            continue
        ensemble = kind == RunKind.ENSEMBLE or r.get("family") == "ensemble"
        marker = "ensemble.json" if ensemble else "best.safetensors"
        if not ensemble and stored.endswith(".safetensors"):  # an index that names the checkpoint itself
            stored, marker = str(Path(stored).parent), Path(stored).name
        folder = resolve_run_path(stored, results_dir, marker)
        if folder is None:
            skipped.append({"path": stored, "reason": f"no {marker} there, nor under {results_dir}"})
            continue
        key = str((folder / marker).resolve())
        if key in seen:
            continue
        seen.add(key)
        todo.append((r, ensemble, folder, marker))
    if not todo:
        raise EvaluateError(f"{index}: none of its {len(entries)} row(s) is a finished run with a best.safetensors "
                            f"or ensemble.json at its path or under {results_dir}")
    for i, (r, ensemble, folder, marker) in enumerate(todo):
        rel = _rel(folder, results_dir)
        log(f"[{i + 1}/{len(todo)}] {rel}")
        try:
            if ensemble:
                z, info = _ensemble_logits(folder, results_dir, scorer)
                params, widths, n_members = _int(r.get("params")) or info.get("params"), None, info.get("n_members")
            else:
                z, meta = scorer.logits(folder / marker)
                params, widths, n_members = meta.get("params"), meta.get("widths"), None
        except (_NotScorable, CheckpointError) as e:  # one bad run is reported, it does not hide the rest
            skipped.append({"path": rel, "reason": str(e)})
            continue
        if num_classes is not None and z.shape[1] != num_classes:  # a number, but a meaningless one
            skipped.append({"path": rel, "reason": f"the model has {z.shape[1]} outputs, the data {num_classes} "
                                                   "classes"})
            continue
        acc = accuracy(z, y)
        reported = num(r.get("test_acc"))  # the index stores fractions; a value > 1 was written in percent
        reported = reported / 100.0 if reported is not None and reported > 1.0 else reported
        rows.append({"path": rel, "kind": r.get("kind") or ("ensemble" if ensemble else ""),
                     "family": r.get("family", ""), "budget": _int(r.get("budget")), "params": params,
                     "widths": widths, "members": n_members, "run_id": r.get("run_id") or None,
                     "study": r.get("study") or None, "trial": _int(r.get("trial")),
                     "reported_test_acc": reported, "accuracy": acc,
                     "difference": None if reported is None else acc - reported,
                     "checkpoint": str((folder / marker).resolve())})
    return {"rows": rows, "skipped": skipped}


# ---------------------------------------------------------------------------------------------------- output

def _pct_cell(v: float | None, signed: bool = False) -> str:
    if v is None:
        return "—"
    return f"{100 * v:+.2f}" if signed else f"{100 * v:.2f}"


def _size_cell(r: dict) -> str:
    params = f"{r['params']:,}" if isinstance(r.get("params"), int) else "—"
    return f"{budget_name(r['budget'])} / {params}" if r.get("budget") else params


def results_table(result: dict, data_label: str) -> str:
    """The rows as an aligned text table (accuracies in percent; difference = new − reported, in points),
    then one line per skipped row."""
    head = ("run", "kind", "family", "budget / params", "reported test %", f"{data_label} %", "diff")
    body = [(r["path"], r["kind"], r["family"], _size_cell(r), _pct_cell(r["reported_test_acc"]),
             _pct_cell(r["accuracy"]), _pct_cell(r["difference"], signed=True)) for r in result["rows"]]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body)]
    numeric = {3, 4, 5, 6}

    def line(cells):
        return "  ".join(str(c).rjust(w) if i in numeric else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    out = [line(head), line(["-" * w for w in widths])] + [line(b) for b in body]
    for s in result["skipped"]:
        out.append(f"skipped {s['path'] or '(a row without a path)'}: {s['reason']}")
    return "\n".join(out) + "\n"


def check_output_file(path) -> Path:
    """An output file path that can be written: not a folder, in a folder that exists (checked before any
    work is done, so a typo does not cost the whole evaluation)."""
    path = Path(path)
    if path.is_dir():
        raise EvaluateError(f"{path}: is a folder; --json needs a file name (e.g. {path / 'evaluate.json'})")
    if not path.parent.is_dir():
        raise EvaluateError(f"{path}: folder {path.parent} does not exist")
    return path


def write_output_json(path, obj: dict) -> None:
    """artifacts.write_json with the one-line errors of check_output_file (and of a failed write)."""
    path = check_output_file(path)
    try:
        artifacts.write_json(path, {**obj, "code_version": code_version()})
    except OSError as e:
        raise EvaluateError(f"{path}: cannot write ({e.strerror or e})") from None
