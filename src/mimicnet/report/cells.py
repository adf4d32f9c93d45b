"""The report's cells: the run index parsed into runs (Run), grouped into cells (kind, family, budget) with
their statistics (Cell), and the one place that resolves a run by the name a row gives it (find_run).

Statistics of a *cell* = (kind, family, budget), over its finished rows (status blank or "complete"):
  * n: finished trials; failed / pruned trials are counted and shown but never enter a statistic;
  * best: the test accuracy of the trial with the best VALIDATION accuracy (ties: index order), the model a
    selection on validation would ship; no number here is the maximum over test accuracies;
  * top-5: the five trials with the highest VALIDATION accuracy (ties: index order), so the choice never
    looks at the test set; their test accuracy's mean ± sample standard deviation (n-1), min and max;
  * params: the median parameter count (the x of Figure 1: real counts, not nominal budgets);
  * seeds: the best-by-validation trial's config trained again with other seeds (reproduce's seeds stage;
    index rows with repeat_of = that trial): their test accuracy's mean ± sd is the cell's unbiased number
    (the search's best is the luckiest of its trials), and what every claim compares (core.noise's judge).
    A record without seed runs falls back to the best trial alone; a config whose seed reruns all failed
    compares nothing.
Accuracies are fractions in the index and percent everywhere in the report (a value <= 1 is a fraction).

A cell is *cut short* (marker †) when fewer trials ran than reproduce.json planned, or when a run stopped
because it reached max_epochs while its schedule would have gone on (a fixed-length "onecycle" run ends at
max_epochs by design; the schedule is read from the run's config.json when it is there, otherwise the run
counts as capped). A cell with no finished trial is missing ("—"), never 0 and never filled from the paper.
"""
from __future__ import annotations

import json
import math
import os
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from ..core.errors import ConfigError
from ..core.index import RunKind, read_index
from ..core.index import num as _float
from ..core.index import pct as _pct
from ..core.units import parse_budget
from ..models.families import FAMILIES, student_families

CUT = "†"            # cell's trials were cut short


TOP_K = 5




FINISHED_STATUSES = ("", "complete", "completed", "finished", "ok")


FIXED_LENGTH_SCHEDULES = ("onecycle",)   # these end at max_epochs by design


def _int(s) -> int | None:
    v = _float(s)
    return None if v is None else int(round(v))


def _budget(s) -> int | None:
    """An index row's budget ('1000000', '1e6', '1M', '100k', core.units' spelling) -> int; blank or unreadable
    -> None (a row is shown, not refused, for a field the report only groups by)."""
    if s is None or str(s).strip().lower() in ("", "-", "none", "null"):
        return None
    try:
        return parse_budget(s)
    except ConfigError:
        return None


@dataclass
class Run:
    """One index row, parsed (the raw strings stay in `row`)."""
    row: dict
    order: int
    kind: str
    family: str
    budget: int | None
    params: int | None
    val: float | None
    test: float | None
    status: str
    teacher: str
    teacher_test: float | None
    epochs: int | None
    max_epochs: int | None
    seconds: float | None
    trial: int | None = None       # search trials: the trial number
    repeat_of: int | None = None   # seed reruns: the trial whose config they train again

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    @property
    def label(self) -> str:
        r = self.row
        return r.get("run_id") or (Path(r["path"]).name if r.get("path") else f"row {self.order + 2}")

    @property
    def names(self) -> set[str]:
        """Every name another row may give this run by (a student's teacher field): its label, run id, path,
        and the path's last part (a moved or scrubbed record keeps that)."""
        p = self.row.get("path", "")
        return {self.label, p, self.row.get("run_id", ""), Path(p).name if p else ""} - {""}


def runs_by_name(runs: Iterable[Run], keep=lambda r: True) -> Callable[[str], Run | None]:
    """The one lookup of a run by the name a row gives it (run id, label, path or the path's last part): the
    first kept run of each name; the returned function also tries the last part of the name it is given."""
    by: dict[str, Run] = {}
    for r in runs:
        if keep(r):
            for n in r.names:
                by.setdefault(n, r)
    return lambda name: (by.get(name) or by.get(Path(name).name)) if name else None


def capped_runs(runs: Iterable[Run], schedules: _Schedules | None) -> list[Run]:
    """Runs stopped by the max_epochs cap while their schedule would have gone on (a fixed-length schedule
    ends at max_epochs by design)."""
    if schedules is None:
        return []
    return [r for r in runs if r.epochs is not None and r.max_epochs is not None and r.epochs >= r.max_epochs
            and not schedules.fixed_length(r)]


def _infer_kind(row: dict) -> str:
    """Rows written as kind 'trial' (search trials) are sorted into teacher / baseline / student."""
    kind = (row.get("kind") or "").strip().lower()
    if kind in tuple(RunKind):
        return RunKind(kind)
    fam = (row.get("family") or "").strip()
    if fam == "ensemble" or "ensemble" in kind:
        return "ensemble"
    if fam in FAMILIES and FAMILIES[fam].teacher:  # S2's teacher, airbench
        return "teacher"
    if (row.get("loss") or "ce") not in ("", "ce") or row.get("teacher"):
        return "student"
    return "baseline" if kind in ("trial", "") else kind


def load_runs(results_dir) -> list[Run]:
    """Every row of RESULTS_DIR/index.csv, parsed; [] when there is no index yet."""
    runs = []
    for i, r in enumerate(read_index(Path(results_dir) / "index.csv")):
        r = {k: (v or "").strip() for k, v in r.items() if k is not None}
        runs.append(Run(row=r, order=i, kind=_infer_kind(r), family=r.get("family", "") or "?",
                        budget=_budget(r.get("budget")), params=_int(r.get("params")),
                        val=_pct(r.get("val_acc")), test=_pct(r.get("test_acc")),
                        status=(r.get("status") or "").lower(), teacher=r.get("teacher", ""),
                        teacher_test=_pct(r.get("teacher_test_acc")), epochs=_int(r.get("epochs")),
                        max_epochs=_int(r.get("max_epochs")), seconds=_float(r.get("seconds")),
                        trial=_int(r.get("trial")), repeat_of=_int(r.get("repeat_of"))))
    return runs


def planned_trials(repro: dict) -> dict[tuple[str, str, int | None], int]:
    """{"student/conv2/100000": 8, "teacher/teacher/": 20} -> {(kind, family, budget): n}."""
    out = {}
    for key, n in (repro.get("planned_trials") or {}).items():
        parts = str(key).split("/")
        if len(parts) < 2 or _int(n) is None:
            continue
        out[(parts[0], parts[1], _budget(parts[2]) if len(parts) > 2 else None)] = _int(n)
    return out


def _mean(v):
    return statistics.fmean(v) if v else None


def _std(v):
    return statistics.stdev(v) if len(v) >= 2 else None


@dataclass
class Cell:
    kind: str
    family: str
    budget: int | None
    runs: list[Run] = field(default_factory=list)       # rows used (after the teacher choice), any status
    planned: int | None = None
    teacher: str | None = None                           # students: the teacher these rows mimicked
    other_teacher_runs: int = 0                          # students of this cell that mimicked another teacher
    capped: list[Run] = field(default_factory=list)      # runs stopped by max_epochs, not by their schedule
    seed_runs: list[Run] = field(default_factory=list)   # seed reruns of a trial's config (any status)

    # ---- counts
    @property
    def finished(self) -> list[Run]:
        return [r for r in self.runs if r.finished]

    @property
    def n(self) -> int:
        return len(self.finished)

    @property
    def n_failed(self) -> int:
        return sum(r.status == "failed" for r in self.runs)

    @property
    def n_pruned(self) -> int:
        return sum(r.status == "pruned" for r in self.runs)

    @property
    def n_collapsed(self) -> int:
        return sum(r.status == "collapsed" for r in self.runs)

    @property
    def missing(self) -> bool:
        return not any(r.test is not None or r.val is not None for r in self.finished)

    # ---- statistics (None when not measured)
    @property
    def best_test(self):
        """Test accuracy of the best trial by validation (the test set chooses nothing)."""
        t = self.top
        return t[0].test if t else None

    @property
    def best_val(self):
        v = [r.val for r in self.finished if r.val is not None]
        return max(v) if v else None

    @property
    def top(self) -> list[Run]:
        """The TOP_K finished runs with the best validation accuracy. Ties go to the lower trial number (search's
        own choice, search.run.best_trial; index order is the order runs finished, which differs between
        workers), then index order."""
        ranked = sorted((r for r in self.finished if r.val is not None),
                        key=lambda r: (-r.val, math.inf if r.trial is None else r.trial))
        return ranked[:TOP_K]

    @property
    def top_test(self) -> list[float]:
        return [r.test for r in self.top if r.test is not None]

    @property
    def top_val(self) -> list[float]:
        return [r.val for r in self.top]

    @property
    def params(self):
        v = [r.params for r in self.finished if r.params is not None]
        return int(statistics.median(v)) if v else None

    # ---- seeds
    @property
    def seeds(self) -> list[Run]:
        """Finished seed reruns of the current best-by-validation trial (a longer search that found another
        best leaves the older trial's seed runs out)."""
        top = self.top
        best = top[0].trial if top else None
        return [r for r in self.seed_runs if r.finished and r.test is not None
                and (best is None or r.repeat_of == best)]

    @property
    def seed_failures(self) -> Counter:
        """Seed reruns of the current best trial that failed, by status (collapsed, failed)."""
        top = self.top
        best = top[0].trial if top else None
        return Counter(r.status for r in self.seed_runs if not r.finished and r.status != "pruned"
                       and (best is None or r.repeat_of == best))

    @property
    def seed_tests(self) -> list[float]:
        return [r.test for r in self.seeds]

    @property
    def samples(self) -> list[float]:
        """What claims compare: the seed runs' test accuracies, or the best trial's alone without them. When
        every seed rerun failed or collapsed, nothing: the config does not train reliably, and its lucky search
        trial alone would stand in for the seeds that did not finish."""
        if self.seed_tests or self.seed_failures:
            return self.seed_tests
        return [self.best_test] if self.best_test is not None else []

    # ---- cut short
    @property
    def cut_reasons(self) -> list[str]:
        out = []
        ran = len(self.runs) + self.other_teacher_runs
        if self.planned is not None and ran < self.planned:
            out.append(f"{ran} of {self.planned} planned trials ran")
        if self.capped:
            caps = sorted({r.max_epochs for r in self.capped})
            out.append(f"{len(self.capped)} run(s) stopped at the max_epochs cap "
                       f"({', '.join(map(str, caps))}) before the schedule ended")
        return out

    @property
    def cut_short(self) -> bool:
        return bool(self.cut_reasons)

    def stats(self) -> dict:
        """The numbers of one cell, as written to the CSV (percent; None = not measured)."""
        tt, tv = self.top_test, self.top_val
        return {"n": self.n, "n_failed": self.n_failed, "n_collapsed": self.n_collapsed, "n_pruned": self.n_pruned,
                "planned": self.planned,
                "params": self.params, "best_test": self.best_test, "best_val": self.best_val,
                "top_k": len(self.top), "top_test_mean": _mean(tt), "top_test_std": _std(tt),
                "top_test_min": min(tt) if tt else None, "top_test_max": max(tt) if tt else None,
                "top_val_mean": _mean(tv), "top_val_std": _std(tv), "seed_n": len(self.seed_tests),
                "seed_test_mean": _mean(self.seed_tests), "seed_test_std": _std(self.seed_tests),
                "seed_failed": sum(self.seed_failures.values())}


class _Schedules:
    """Reads the schedule of a run from its config.json once (to tell a capped run from a fixed-length one).
    A record without its run folders (a copied index, as in docs/results) falls back to the schedule its
    preset gave that kind of run (reproduce.json: teacher_base / baseline_base / student_base)."""

    def __init__(self, results_dir: Path, repro: dict | None = None):
        self.results_dir, self.cache = results_dir, {}
        preset = (repro or {}).get("config") or {}
        self.by_kind = {kind: (preset.get(f"{kind}_base") or {}).get("schedule")
                        for kind in (RunKind.TEACHER, RunKind.BASELINE, RunKind.STUDENT)} if isinstance(preset, dict) else {}

    def fixed_length(self, run: Run) -> bool:
        p = run.row.get("path")
        if not p:
            return False
        if p not in self.cache:
            sched = self.by_kind.get(run.kind)
            for cand in (Path(p), self.results_dir / p):
                try:
                    d = json.loads((cand / "config.json").read_text())
                    sched = (d.get("config") or d).get("schedule")
                    break
                except (OSError, ValueError, AttributeError):
                    continue
            self.cache[p] = sched in FIXED_LENGTH_SCHEDULES
        return self.cache[p]


def _family_key(f: str):
    order = student_families()  # the registry's order: conv0 ... conv4, then any other family by name
    return (order.index(f) if f in order else len(order), f)


def _same_teacher(t: str, want: str) -> bool:
    """One teacher, however the index names it: its id, its folder relative to the results folder (a record,
    an index written since issue 27) or the absolute path an older index recorded (a folder moved or copied
    since: the same folder by name)."""
    if t == want or (t and Path(t).name == want) or (want and Path(want).name == t):
        return True
    return bool(t and want and os.path.isabs(t) and os.path.isabs(want) and Path(t).name == Path(want).name)


def build_cells(runs: list[Run], kinds: Iterable[str], planned: dict, schedules: _Schedules | None = None,
                teacher: str | None = None) -> dict[tuple, Cell]:
    """Group runs into cells (kind, family, budget), add planned-but-empty cells, pick students' teacher."""
    kinds = tuple(kinds)
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for r in runs:
        if r.kind in kinds:
            groups[(r.kind, r.family, r.budget)].append(r)
    for key in planned:
        if key[0] in kinds:
            groups.setdefault(key, [])
    overall = Counter(r.teacher for r in runs if r.kind == RunKind.STUDENT)
    cells = {}
    for key, rs in groups.items():
        c = Cell(*key, planned=planned.get(key))
        if key[0] == RunKind.STUDENT and rs:
            # A row without a teacher (a trial that failed before it recorded one) stays in its cell: it is
            # a failed trial of this cell, not a run of another teacher.
            counts = Counter(r.teacher for r in rs if r.teacher) or Counter(r.teacher for r in rs)
            if teacher is not None:
                c.teacher = teacher
            else:  # the teacher most rows of this cell used (ties: most used overall, then by name)
                c.teacher = max(counts, key=lambda t: (counts[t], overall[t], t or ""))
            c.runs = [r for r in rs if not r.teacher or _same_teacher(r.teacher, c.teacher)]
            c.other_teacher_runs = len(rs) - len(c.runs)
        else:
            c.runs = list(rs)
        c.seed_runs = [r for r in c.runs if r.repeat_of is not None]
        c.runs = [r for r in c.runs if r.repeat_of is None]
        c.capped = capped_runs(c.runs, schedules)
        cells[key] = c
    return dict(sorted(cells.items(), key=lambda kv: (kv[0][0], _family_key(kv[0][1]), kv[0][2] or 0)))
