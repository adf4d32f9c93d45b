"""Rebuild a results folder's run index (index.csv) from what its run folders hold, for an index that was
damaged or deleted (`mimicnet report RESULTS_DIR --rebuild-index`).

Every finished run folder (config.json + results.json) gives its row exactly as `train.fit` wrote it, every
ensemble (ensemble.json) its row as `build_ensemble` did; a fixed study's diverged run (failed.json) and a
search's diverged or pruned trials (from its study.db) give their status=failed|pruned rows. Rows are in
the order the runs finished (by the time their files were written).
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from optuna.trial import TrialState

from ..core import artifacts
from ..core.artifacts import CheckpointError
from ..core.errors import ConfigError
from ..core.index import IndexRow, RunKind, read_index, write_index
from ..distill.ensemble import ensemble_row
from ..distill.student import teacher_record
from ..search.storage import default_storage, load_study
from ..search.recovery import first_number
from ..search.run import trial_run_dir
from ..train.config import TrainConfig
from ..train.run import RunInfo, failed_row, index_row

INFO_FIELDS = tuple(f.name for f in dataclasses.fields(RunInfo))


def _stamp(path: Path) -> tuple[float, str]:
    t = path.stat().st_mtime
    return t, time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t))


def _info(d: dict) -> RunInfo:
    """The RunInfo a run recorded in its config.json / results.json (kind, study, trial, ...)."""
    kw = {k: d.get(k) for k in INFO_FIELDS if d.get(k) is not None}
    if "kind" in kw:
        kw["kind"] = RunKind(kw["kind"])
    return RunInfo(**kw)


def _config(run_dir: Path) -> tuple[TrainConfig, dict]:
    d = artifacts.read_json(run_dir / "config.json")
    if not isinstance(d, dict) or not isinstance(d.get("config"), dict):
        raise CheckpointError(f"{run_dir / 'config.json'}: not a run's config")
    return TrainConfig.from_dict(d["config"]), d


def _finished_rows(root: Path, skipped: list[str]) -> list[tuple[float, IndexRow]]:
    rows = []
    for res_path in root.rglob("results.json"):
        run_dir = res_path.parent
        if not (run_dir / "config.json").exists():
            continue
        try:
            cfg, _ = _config(run_dir)
            results = artifacts.read_json(res_path)
            if not isinstance(results, dict):
                raise CheckpointError(f"{res_path}: not the results of a run")
            row = index_row(cfg, results, _info(results), run_dir)
        except (CheckpointError, ConfigError, KeyError, TypeError, ValueError) as e:
            skipped.append(f"{run_dir} ({str(e).splitlines()[0][:80]})")
            continue
        t, row.finished_at = _stamp(res_path)
        rows.append((t, row))
    return rows


def _failed_rows(root: Path, skipped: list[str]) -> list[tuple[float, IndexRow]]:
    """A fixed study's diverged runs: failed.json beside config.json."""
    rows = []
    for failed in root.rglob("failed.json"):
        run_dir = failed.parent
        try:
            cfg, d = _config(run_dir)
        except (CheckpointError, ConfigError, KeyError, TypeError, ValueError) as e:
            skipped.append(f"{run_dir} ({str(e).splitlines()[0][:80]})")
            continue
        row = failed_row(cfg, run_dir, _info(d), teacher_record(cfg))
        t, row.finished_at = _stamp(failed)
        rows.append((t, row))
    return rows


def _search_rows(root: Path, skipped: list[str]) -> list[tuple[float, IndexRow]]:
    """Search trials that ended without results.json: diverged (FAIL with a fail_reason) or pruned."""
    rows = []
    for db in root.rglob("study.db"):
        try:
            study = load_study(default_storage(db.parent))
        except Exception as e:  # noqa: BLE001 - a damaged study.db must not stop the rest of the rebuild
            skipped.append(f"{db} ({str(e).splitlines()[0][:80]})")
            continue
        for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL, TrialState.PRUNED)):
            if t.state == TrialState.FAIL and "fail_reason" not in t.user_attrs:
                continue  # a lost trial (killed worker): its retry is the run
            run_dir = trial_run_dir(t, db.parent)
            if run_dir is None or (run_dir / "results.json").exists() or not (run_dir / "config.json").exists():
                continue
            try:
                cfg, d = _config(run_dir)
            except (CheckpointError, ConfigError, KeyError, TypeError, ValueError):
                continue
            info = dataclasses.replace(_info(d), study=study.study_name, trial=first_number(t))
            kw = {}
            if t.state == TrialState.PRUNED and t.intermediate_values:
                epochs = max(t.intermediate_values)
                kw = {"status": "pruned", "epochs": epochs, "val_acc": t.intermediate_values[epochs]}
            row = failed_row(cfg, run_dir, info, teacher_record(cfg), **kw)
            when = t.datetime_complete or t.datetime_start
            stamp = when.timestamp() if when else (run_dir / "config.json").stat().st_mtime
            row.finished_at = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(stamp))
            rows.append((stamp, row))
    return rows


def _ensemble_rows(root: Path, skipped: list[str]) -> list[tuple[float, IndexRow]]:
    rows = []
    for path in root.rglob("ensemble.json"):
        try:
            result = artifacts.read_json(path)
            row = ensemble_row(result, path.parent)
        except (CheckpointError, KeyError, TypeError, AttributeError) as e:
            skipped.append(f"{path.parent} ({str(e).splitlines()[0][:80]})")
            continue
        t, row.finished_at = _stamp(path)
        rows.append((t, row))
    return rows


def rebuild_index(results_dir) -> dict:
    """Write RESULTS_DIR/index.csv anew from its run folders (the old one is kept as index.csv.old).
    Returns {"rows": n, "skipped": []}; a run folder that cannot be read is a ConfigError naming it, and the
    index is left as it was."""
    root = Path(results_dir)
    if not root.is_dir():
        raise ConfigError(f"{root}: no such results folder")
    skipped: list[str] = []
    found = (_finished_rows(root, skipped) + _ensemble_rows(root, skipped) + _failed_rows(root, skipped)
             + _search_rows(root, skipped))
    if skipped:  # an index without them would be a partial table: said before anything is written
        raise ConfigError(f"{root}: {len(skipped)} run folder(s) cannot be read, so a rebuilt index would leave them "
                          f"out: {skipped[0]}; mend or move them away, then --rebuild-index again")
    found.sort(key=lambda tr: tr[0])
    index = root / "index.csv"
    if index.exists():
        index.replace(root / "index.csv.old")
    write_index(index, [row for _, row in found])
    return {"rows": len(found), "skipped": skipped, "index": str(index)}


def _run_folders(root: Path) -> tuple[dict[tuple, Path], set[tuple]]:
    """(every run folder below `root` by its path's parts relative to it, those of them that are finished: a
    run's results.json beside its config.json, or an ensemble's ensemble.json). A record (docs/results: its
    ensemble.json at the top, no run folder) has none."""
    folders, finished = {}, set()
    for name in ("config.json", "ensemble.json"):
        for f in root.rglob(name):
            d = f.parent
            if d == root:
                continue
            key = d.relative_to(root).parts
            folders[key] = d
            if name == "ensemble.json" or (d / "results.json").exists():
                finished.add(key)
    return folders, finished


def index_differences(results_dir) -> dict[str, list[str]]:
    """How RESULTS_DIR/index.csv and its run folders differ: {"no_row": finished run folders without a row,
    "no_folder": rows whose run folder is not there}, both empty when they agree (or when the folder holds no
    finished run folder at all: a record, or an index made by hand). A row's path is matched by its last parts, so a moved or copied results
    folder, and paths relative to where the command ran, still find their folders."""
    root = Path(results_dir)
    folders, finished = _run_folders(root)
    if not finished or not (root / "index.csv").exists():
        return {"no_row": [], "no_folder": []}
    seen, no_folder = set(), []
    for row in read_index(root / "index.csv"):
        path = (row.get("path") or "").strip()
        if not path:
            continue
        parts = Path(path).parts
        key = next((parts[-k:] for k in range(len(parts), 0, -1) if parts[-k:] in folders), None)
        if key is None:
            no_folder.append(path)
        else:
            seen.add(key)
    no_row = sorted(str(Path(*k)) for k in finished - seen)
    return {"no_row": no_row, "no_folder": no_folder}
