"""`mimicnet report RESULTS_DIR`: the main study's tables and figures, from the run index, beside the paper.

Everything is computed from RESULTS_DIR/index.csv (artifacts.INDEX_COLUMNS, one row per finished run) plus
the optional RESULTS_DIR/reproduce.json (planned trials, command, config, stage times, hardware, data);
logs are never parsed. Outputs go to RESULTS_DIR/report/:

    table1.{md,csv,tex}        hard-target baselines, teachers, ensembles (Urban et al. Table 1)
    table2.{md,csv,tex}        students, family × budget (Urban et al. Table 2)
    figure1.{png,svg}          accuracy vs parameters, this run | the paper (Urban et al. Figure 1)
    teacher_student.{png,svg}  student vs teacher accuracy (Ba & Caruana Fig. 3), only when measured
    report.html                one self-contained page (templates/main.html.j2): all of the above, configs,
                               data, hardware, times

Statistics of a *cell* = (kind, family, budget), over its finished rows (status blank or "complete"):
  * n: finished trials; failed / pruned trials are counted and shown but never enter a statistic;
  * best: the test accuracy of the trial with the best VALIDATION accuracy (ties: index order), the model a
    selection on validation would ship; no number here is the maximum over test accuracies;
  * top-5: the five trials with the highest VALIDATION accuracy (ties: index order), so the choice never
    looks at the test set; their test accuracy's mean ± sample standard deviation (n-1), min and max.
    Figure 1 plots that mean, with a bar from the lowest to the highest of those five (5th best .. best);
  * params: the median parameter count (the x of Figure 1: real counts, not nominal budgets);
  * seeds: the best-by-validation trial's config trained again with other seeds (reproduce's seeds stage;
    index rows with repeat_of = that trial): their test accuracy's mean ± sd is the cell's unbiased number
    (the search's best is the luckiest of its trials). Figure 1 plots it with a bar of ± one sd, and every
    claim compares seed samples by core.noise's rule (a difference counts beyond twice its standard error).
    A record without seed runs falls back to the best trial alone and its claims say "no spread".
Accuracies are fractions in the index and percent everywhere in the report (a value <= 1 is a fraction).

A cell is *cut short* (marker †, explained in a footnote) when fewer trials ran than reproduce.json
planned, or when a run stopped because it reached max_epochs while its schedule would have gone on
(a fixed-length "onecycle" run ends at max_epochs by design and is not cut short; the schedule is read
from the run's config.json when it is there, otherwise the run counts as capped).
A cell with no finished trial is shown as missing ("—"), never as 0 and never filled from the paper.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import statistics
import textwrap
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from ..core import noise
from ..core.artifacts import write_text
from ..core.hardware import hardware
from ..core.units import budget_name
from ..core.index import num as _float, pct as _pct, read_index
from ..models.families import FAMILIES
from ..studies import published as P
from .common import MISSING, ReportError, _save_figure, _write_csv, load_reproduce, render, tex
from ..studies.catalog import is_study_record
from ..studies.deviations import deviations
from ..studies.reindex import index_differences
from .study import build_study_report, study_record_claims, study_record_table

CUT = "†"            # cell's trials were cut short
TOP_K = 5
FAMILY_ORDER = ("conv0", "conv1", "conv2", "conv3", "conv4")
FAMILY_COLORS = {"conv0": "#7f7f7f", "conv1": "#1f77b4", "conv2": "#2ca02c", "conv3": "#ff7f0e",
                 "conv4": "#d62728"}
DODGE = 1.045   # Figure 1: the x factor between neighbouring families at one budget
_EXTRA_COLORS = ("#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
FINISHED_STATUSES = ("", "complete", "completed", "finished", "ok")
FIXED_LENGTH_SCHEDULES = ("onecycle",)   # these end at max_epochs by design
AGREE_PTS, CLOSE_PTS = 1.0, 3.0          # |Δ| thresholds (percentage points) for the colour of a difference


# ============================================================================================ index rows

def _int(s) -> int | None:
    v = _float(s)
    return None if v is None else int(round(v))


def parse_budget(s) -> int | None:
    """'1000000', '1e6', '1M', '3.16M', '100k' -> int; blank -> None."""
    if s is None:
        return None
    t = str(s).strip().lower().replace("_", "").replace(",", "")
    if t in ("", "-", "none", "null"):
        return None
    mult = {"k": 1e3, "m": 1e6}.get(t[-1:], 1)
    try:
        return int(round(float(t.rstrip("km")) * mult))
    except ValueError:
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


def _infer_kind(row: dict) -> str:
    """Rows written as kind 'trial' (search trials) are sorted into teacher / baseline / student."""
    kind = (row.get("kind") or "").strip().lower()
    if kind in ("teacher", "baseline", "student", "ensemble"):
        return kind
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
                        budget=parse_budget(r.get("budget")), params=_int(r.get("params")),
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
        out[(parts[0], parts[1], parse_budget(parts[2]) if len(parts) > 2 else None)] = _int(n)
    return out


# ============================================================================================ statistics

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
        """The TOP_K finished runs with the best validation accuracy (stable: index order breaks ties)."""
        ranked = sorted((r for r in self.finished if r.val is not None), key=lambda r: -r.val)
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
        """What claims compare: the seed runs' test accuracies, or the best trial's alone without them."""
        return self.seed_tests or ([self.best_test] if self.best_test is not None else [])

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
                        for kind in ("teacher", "baseline", "student")} if isinstance(preset, dict) else {}

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
    return (FAMILY_ORDER.index(f) if f in FAMILY_ORDER else len(FAMILY_ORDER), f)


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
    overall = Counter(r.teacher for r in runs if r.kind == "student")
    cells = {}
    for key, rs in groups.items():
        c = Cell(*key, planned=planned.get(key))
        if key[0] == "student" and rs:
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
        if schedules is not None:
            c.capped = [r for r in c.runs if r.epochs is not None and r.max_epochs is not None
                        and r.epochs >= r.max_epochs and not schedules.fixed_length(r)]
        cells[key] = c
    return dict(sorted(cells.items(), key=lambda kv: (kv[0][0], _family_key(kv[0][1]), kv[0][2] or 0)))


# ============================================================================================ formatting

def _f(v, nd=2) -> str:
    return MISSING if v is None else f"{v:.{nd}f}"


def _paper(v) -> str:
    """As the paper prints it: at least one decimal (90.0, 88.0), two where it gives two (91.75)."""
    if v is None:
        return MISSING
    return f"{v:.1f}" if abs(v * 10 - round(v * 10)) < 1e-9 else f"{v:.2f}"


def _delta(ours, paper) -> float | None:
    return None if ours is None or paper is None else ours - paper


def _md(s) -> str:
    return str(s).replace("|", "\\|")


def family_label(f: str) -> str:
    return P.FAMILY_LABELS.get(f, f)


# ============================================================================================ Table 2

@dataclass
class T2:
    """Table 2's content: the cells and the grid they sit in."""
    cells: dict[tuple, Cell]
    families: list[str]
    budgets: list[int | None]
    main_teacher: str | None

    def cell(self, family, budget) -> Cell | None:
        return self.cells.get(("student", family, budget))


def table2(runs, planned, schedules, teacher=None) -> T2:
    cells = build_cells(runs, ("student",), planned, schedules, teacher)
    fams = sorted({k[1] for k in cells}, key=_family_key)
    budgets = sorted({k[2] for k in cells}, key=lambda b: (b is None, b or 0))
    # the grid is families × budgets: a combination nobody ran is an explicit missing cell
    for f in fams:
        for b in budgets:
            cells.setdefault(("student", f, b), Cell("student", f, b))
    cells = dict(sorted(cells.items(), key=lambda kv: (_family_key(kv[0][1]), kv[0][2] or 0)))
    used = Counter(c.teacher for c in cells.values() if c.teacher is not None for _ in c.runs)
    return T2(cells, fams, budgets, teacher or (used.most_common(1)[0][0] if used else None))


def paper_for_student(family, budget) -> dict:
    """The paper's number for this cell: exact (with Δ), or the nearest paper budget labelled (no Δ)."""
    exact = P.student_paper_acc(family, budget)
    if exact is not None:
        return {"paper_budget": P.matching_paper_budget(budget), "paper_test_acc": exact, "paper_exact": True}
    nb = P.nearest_paper_budget(budget)
    # only a neighbour within one paper step (×√10) is worth showing; further away it invites a false comparison
    if nb is not None and family in P.STUDENTS and abs(math.log10(budget / nb)) <= 0.5 + 1e-9:
        return {"paper_budget": nb, "paper_test_acc": P.STUDENTS[family][nb], "paper_exact": False}
    return {"paper_budget": None, "paper_test_acc": None, "paper_exact": False}


T2_COLUMNS = ["kind", "family", "budget", "params", "n", "n_failed", "n_collapsed", "n_pruned", "planned", "best_test",
              "best_val", "seed_n", "seed_test_mean", "seed_test_std", "seed_failed", "top_k", "top_test_mean", "top_test_std",
              "top_test_min", "top_test_max", "top_val_mean", "top_val_std", "teacher", "other_teacher_runs", "paper_budget",
              "paper_test_acc", "paper_exact", "diff_best_vs_paper", "cut_short", "status", "note"]


def table2_rows(t: T2) -> list[dict]:
    rows = []
    for f in t.families:
        for b in t.budgets:
            c = t.cell(f, b)
            p = paper_for_student(f, b)
            s = c.stats()
            rows.append({"kind": "student", "family": f, "budget": b, **s, "teacher": c.teacher,
                         "other_teacher_runs": c.other_teacher_runs, **p,
                         "diff_best_vs_paper": _delta(s["best_test"], p["paper_test_acc"]) if p["paper_exact"] else None,
                         "cut_short": c.cut_short, "status": "missing" if c.missing else "measured",
                         "note": "; ".join(c.cut_reasons)})
    return rows


def _seed_text(c: Cell) -> str:
    """'90.84 ± 0.31 (3 seeds)': the best config trained again with other seeds; '(3 of 4 seeds; 1 collapsed)'
    when some of them failed."""
    st = c.seed_tests
    if not st:
        return ""
    sd = _std(st)
    fails = c.seed_failures
    n = f"{len(st)} of {len(st) + sum(fails.values())} seeds; " + ", ".join(f"{k} {v}" for v, k in sorted(
        fails.items())) if fails else f"{len(st)} seeds"
    return f"{_mean(st):.2f}" + (f" ± {sd:.2f}" if sd is not None else "") + f" ({n})"


def _cell_summary(c: Cell, single: bool = False) -> tuple[str, str]:
    """(headline, detail) of a cell: the headline is what Figure 1 draws and the claims compare, the seed mean ±
    sd of the best config (its number of seeds, and how many failed) where it has seed runs, else the test
    accuracy of the best trial by validation; the detail gives the best trial, the top-5 and the trial counts.
    † when cut short."""
    cut = CUT if c.cut_short else ""
    extra = []
    for what, k in (("failed", c.n_failed), ("collapsed", c.n_collapsed), ("pruned", c.n_pruned)):
        if k:
            extra.append(f"{k} {what}")
    if c.missing:
        return MISSING + cut, (f"n=0, {', '.join(extra)}" if extra else "")
    if single:
        return _f(c.best_test) + cut, ""
    top = c.top_test
    sd = _std(top)
    parts = [f"best trial {_f(c.best_test)}"] if c.seed_tests else []
    parts += [f"top-{len(top)} {_f(_mean(top))}" + (f" ± {sd:.2f}" if sd is not None else "")] if top else []
    parts.append(f"n={c.n}" + (", " + ", ".join(extra) if extra else ""))
    head = _seed_text(c) if c.seed_tests else _f(c.best_test)
    return head + cut, " · ".join(parts)


def _paper_text(p: dict, best) -> str:
    if p["paper_test_acc"] is None:
        return ""
    if p["paper_exact"]:  # the paper's number is its best trial: the Δ is our best trial's, like for like
        d = _delta(best, p["paper_test_acc"])
        return f"paper {_paper(p['paper_test_acc'])}" + (f" (best trial Δ {d:+.2f})" if d is not None else "")
    return f"paper@{P.budget_label(p['paper_budget'])} {_paper(p['paper_test_acc'])} (other budget, no Δ)"


def table2_markdown(t: T2, compact: bool = False) -> str:
    if not t.families:
        return "_No student runs in the index yet._\n"
    head = "| family | " + " | ".join(P.budget_label(b) for b in t.budgets) + " |"
    lines = [head, "|---|" + "---|" * len(t.budgets)]
    for f in t.families:
        cells = []
        for b in t.budgets:
            c = t.cell(f, b)
            best, rest = _cell_summary(c)
            ptxt = _paper_text(paper_for_student(f, b), c.best_test)
            if compact:
                txt = best + (f" ({rest})" if rest else "") + (f" [{ptxt}]" if ptxt else "")
            else:
                txt = f"**{best}**" + (f"<br>{rest}" if rest else "") + (f"<br>_{ptxt}_" if ptxt else "")
            cells.append(_md(txt))
        lines.append(f"| {_md(f)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _footnotes(named: Iterable[tuple[str, Cell]]) -> list[str]:
    """One line per reason a cell was cut short, and per cell with trials of another teacher (deduplicated)."""
    out = []
    for name, c in named:
        for reason in c.cut_reasons:
            out.append(f"{CUT} {name}: {reason}.")
        if c.other_teacher_runs:
            out.append(f"{name}: {c.other_teacher_runs} more trial(s) mimicked another teacher "
                       f"(not in this cell; see the teacher → student curve).")
    return list(dict.fromkeys(out))


def _cell_name(c: Cell) -> str:
    return f"{c.kind} {c.family}" + (f" @ {P.budget_label(c.budget)}" if c.budget else "")


def paper_table2_markdown() -> str:
    lines = ["| family | " + " | ".join(P.budget_label(b) for b in P.PAPER_BUDGETS) + " | hard targets, 10M |",
             "|---|" + "---|" * (len(P.PAPER_BUDGETS) + 1)]
    for f, row in P.STUDENTS.items():
        lines.append(f"| {f} | " + " | ".join(_paper(row[b]) for b in P.PAPER_BUDGETS)
                     + f" | {_paper(P.BASELINES.get(f))} |")
    return "\n".join(lines) + "\n"


def table2_latex(t: T2) -> str:
    cols = "l" + "c" * max(len(t.budgets), 1)
    out = ["% Table 2 (students). Cell: the best-by-validation trial's config trained again with other seeds, test acc",
           "% mean ± sd (seeds; failed ones named), else that trial's test acc; then the best trial, the mean ± sd of",
           "% the 5 best-by-validation trials, n trials; last line: the paper's value at that budget and the best",
           "% trial's difference to it. Generated by mimicnet report.",
           "\\begin{tabular}{" + cols + "}", "\\hline",
           "family & " + " & ".join(tex(P.budget_label(b)) for b in t.budgets) + " \\\\", "\\hline"]
    for f in t.families:
        cells = []
        for b in t.budgets:
            c = t.cell(f, b)
            best, rest = _cell_summary(c)
            ptxt = _paper_text(paper_for_student(f, b), c.best_test)
            lines = [f"\\textbf{{{tex(best)}}}"] + [f"\\scriptsize {tex(x)}" for x in (rest, ptxt) if x]
            cells.append("\\begin{tabular}[c]{@{}c@{}}" + " \\\\ ".join(lines) + "\\end{tabular}")
        out.append(tex(f) + " & " + " & ".join(cells) + " \\\\")
    out += ["\\hline", "\\end{tabular}", ""]
    return "\n".join(out)


# ============================================================================================ Table 1

T1_COLUMNS = ["section", "model", "kind", "family", "budget", "architecture", "params", "n", "n_failed",
              "n_collapsed", "n_pruned", "planned", "best_test", "best_val", "seed_n", "seed_test_mean", "seed_test_std",
              "seed_failed", "top_k", "top_test_mean", "top_test_std",
              "top_val_mean", "paper_model", "paper_params", "paper_test_acc", "paper_exact",
              "diff_best_vs_paper", "cut_short", "status", "note"]


def _widths_arch(r: Run | None) -> str:
    if r is None:
        return ""
    w = r.row.get("widths", "")
    if r.family == "teacher" and w.count("x") == 3:
        g1, g2, g3, h = w.split("x")
        return f"{g1}c²-mp-{g2}c²-mp-{g3}c⁴-mp-{h}fc²"
    return (P.FAMILY_ARCHITECTURES.get(r.family, r.family) + (f" ({w})" if w else ""))


def _ensemble_arch(r: Run) -> str:
    w = r.row.get("widths", "")
    return f"{w} members" if w.isdigit() else w


@dataclass
class T1Row:
    section: str
    model: str
    cell: Cell | None             # None for reference-only rows
    single: bool = False          # one run (a ranked teacher, an ensemble): show its accuracy alone
    architecture: str = ""
    paper_model: str = ""
    paper_params: int | None = None
    paper_acc: float | None = None
    paper_exact: bool = True
    note: str = ""
    mimicked: bool = False        # an ensemble row: the teacher the students mimicked

    def as_dict(self) -> dict:
        c = self.cell
        s = c.stats() if c is not None else {}
        if self.single and c is not None:
            s = {**s, "top_k": None, "top_test_mean": None, "top_test_std": None, "top_val_mean": None,
                 "top_val_std": None}
        best = s.get("best_test")
        return {"section": self.section, "model": self.model, "kind": c.kind if c else "",
                "family": c.family if c else "", "budget": c.budget if c else None,
                "architecture": self.architecture, **s, "paper_model": self.paper_model,
                "paper_params": self.paper_params, "paper_test_acc": self.paper_acc, "paper_exact": self.paper_exact,
                "diff_best_vs_paper": _delta(best, self.paper_acc) if self.paper_exact else None,
                "cut_short": c.cut_short if c else None,
                "status": ("reference" if c is None else "missing" if c.missing else "measured"),
                "note": "; ".join(filter(None, [self.note] + (c.cut_reasons if c else [])))}


def table1(runs, planned, schedules, main_teacher: str | None) -> list[T1Row]:
    rows: list[T1Row] = []
    # -- hard-target baselines: one row per (family, budget) cell; the paper has them at 10M only
    base = build_cells(runs, ("baseline",), planned, schedules)
    fams = {k[1] for k in base} | set(P.BASELINES)
    # the grid: every family (the paper's and this run's) at every budget this run trained baselines at
    # (the paper's 10M when it trained none); a combination not run is an explicit missing row
    budgets = sorted({k[2] for k in base}, key=lambda b: (b is None, b or 0)) or [P.BASELINE_BUDGET]
    for f in sorted(fams, key=_family_key):
        for b in budgets:
            c = base.get(("baseline", f, b)) or Cell("baseline", f, b)
            exact = P.baseline_paper_acc(f, c.budget)
            rows.append(T1Row("hard targets", f"{family_label(f)}, {P.budget_label(c.budget)}", c,
                              architecture=P.FAMILY_ARCHITECTURES.get(f, f),
                              paper_model=f"{P.FAMILY_ARCHITECTURES.get(f, f)}, 10M" if f in P.BASELINES else "",
                              paper_params=P.BASELINE_BUDGET if f in P.BASELINES else None,
                              paper_acc=P.BASELINES.get(f), paper_exact=exact is not None))
    # -- teachers: the three best by validation (the paper lists its three best), then the whole search
    tcells = build_cells(runs, ("teacher",), planned, schedules)
    all_t = [r for c in tcells.values() for r in c.runs]
    ranked = sorted((r for r in all_t if r.finished and r.val is not None), key=lambda r: -r.val)
    for i, pt in enumerate(P.TEACHERS):
        r = ranked[i] if i < len(ranked) else None
        one = Cell("teacher", r.family if r else "teacher", r.budget if r else None, runs=[r] if r else [])
        if r is not None and schedules is not None and r.epochs is not None and r.max_epochs is not None \
                and r.epochs >= r.max_epochs and not schedules.fixed_length(r):
            one.capped = [r]
        rows.append(T1Row("teachers", f"Teacher, {('1st', '2nd', '3rd')[i]} by val"
                          + (f" ({r.label})" if r else ""), one, single=True, architecture=_widths_arch(r),
                          paper_model=pt["architecture"], paper_params=pt["params"], paper_acc=pt["test_acc"],
                          paper_exact=_paper_size(r.params if r else None, pt["params"])))
    whole = Cell("teacher", "teacher", None, runs=all_t,
                 planned=sum(n for k, n in planned.items() if k[0] == "teacher") or None,
                 capped=[r for c in tcells.values() for r in c.capped])
    rows.append(T1Row("teachers", "Teacher search, all trials", whole,
                      paper_model=f"{P.TEACHER_SEARCH['trials']} trials; 5th best "
                                  f"{P.TEACHER_SEARCH['fifth_best_test_acc']:g}",
                      paper_acc=P.TEACHER_SEARCH["best_test_acc"],
                      paper_exact=bool(ranked) and _paper_size(ranked[0].params, P.TEACHERS[0]["params"])))
    # -- ensembles: every ensemble run is a row of its own; the one the students mimicked is marked
    ens = [r for r in runs if r.kind == "ensemble"]
    for r in sorted(ens, key=lambda r: -(r.val or -1)):
        mimicked = main_teacher is not None and _same_teacher(main_teacher, r.label) or \
            (main_teacher is not None and _same_teacher(main_teacher, r.row.get("path", "")))
        rows.append(T1Row("ensembles", f"Ensemble {r.label}", Cell("ensemble", r.family, r.budget, runs=[r]),
                          single=True, architecture=_ensemble_arch(r),
                          paper_model=f"ensemble of {P.ENSEMBLE['members']} CNNs", paper_params=P.ENSEMBLE["params"],
                          paper_acc=P.ENSEMBLE["test_acc"], paper_exact=_paper_size(r.params, P.ENSEMBLE["params"]),
                          note="the students' teacher" if mimicked else "", mimicked=bool(mimicked)))
    if not ens:
        rows.append(T1Row("ensembles", "Ensemble", Cell("ensemble", "ensemble", None), single=True,
                          paper_model=f"ensemble of {P.ENSEMBLE['members']} CNNs", paper_params=P.ENSEMBLE["params"],
                          paper_acc=P.ENSEMBLE["test_acc"]))
    # -- the (*) rows of the paper's Table 1: Ba & Caruana's models, for reference only
    for name, d in (("Teacher CNN (*)", P.BA_TEACHER_CNN), ("Ensemble, 4 CNNs (*)", P.BA_ENSEMBLE)):
        rows.append(T1Row("Ba & Caruana (*)", name, None, paper_model=d["architecture"], paper_params=d["params"],
                          paper_acc=d["test_acc"], paper_exact=False, note="published reference, not run here"))
    return rows


def _paper_size(params: int | None, paper_params: int) -> bool:
    """Is a teacher or ensemble of `params` parameters the paper's size (within 10%)? Only then is a Δ to the
    paper's accuracy shown: a 1M-parameter teacher is not the paper's 5.3M one, whatever it scores."""
    return params is not None and abs(params / paper_params - 1) <= 0.10


def _t1_texts(row: T1Row) -> tuple[str, str, str, str, str]:
    """(ours best, ours detail, params, paper, Δ) as plain text."""
    c = row.cell
    if c is None:
        ours, detail, params = "n/a", "", ""
    else:
        ours, detail = _cell_summary(c, single=row.single)
        params = P.budget_label(c.params) if c.params else MISSING
    paper = ""
    if row.paper_acc is not None:
        paper = _paper(row.paper_acc) + (f" ({P.budget_label(row.paper_params)})" if row.paper_params else "")
        if row.cell is not None and not row.paper_exact:
            paper += " (other budget, no Δ)"
    d = _delta(c.best_test if c else None, row.paper_acc) if row.paper_exact else None
    return ours, detail, params, paper, ("" if d is None else f"{d:+.2f}")


def table1_markdown(rows: list[T1Row]) -> str:
    lines = ["| | model | architecture | params | test acc (best) | top-5 / trials | paper | Δ |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ours, detail, params, paper, d = _t1_texts(r)
        lines.append("| " + " | ".join(_md(x) for x in (r.section, r.model, r.architecture, params, f"**{ours}**",
                                                          detail, paper, d)) + " |")
    return "\n".join(lines) + "\n"


def table1_latex(rows: list[T1Row]) -> str:
    out = ["% Table 1 (hard targets, teachers, ensembles). Generated by mimicnet report.",
           "\\begin{tabular}{lllrrlrr}", "\\hline",
           "section & model & architecture & params & best & top-5 / trials & paper & $\\Delta$ \\\\", "\\hline"]
    for r in rows:
        ours, detail, params, paper, d = _t1_texts(r)
        out.append(" & ".join(tex(x) for x in (r.section, r.model, r.architecture, params, ours, detail, paper, d))
                   + " \\\\")
    out += ["\\hline", "\\end{tabular}", ""]
    return "\n".join(out)


# ============================================================================================ headline checks

def _conv_depth(f: str) -> int | None:
    return int(f[4:]) if f.startswith("conv") and f[4:].isdigit() else None


def _measured(t: T2) -> dict[str, dict[int, Cell]]:
    """family -> budget -> student cell, for cells with a number."""
    out: dict[str, dict[int, Cell]] = defaultdict(dict)
    for (_, f, b), c in t.cells.items():
        if c.samples and b is not None:
            out[f][b] = c
    return out


def _paper_pairs(table: dict[str, dict[int, float]], by: str) -> tuple[int, int]:
    """(pairs where the paper's Table 2 rises, pairs): deeper at each budget (by='depth'), or larger within a
    family (by='budget'). The paper gives one number per cell (its best trial), no spread."""
    up = tot = 0
    if by == "depth":
        for b in sorted({b for v in table.values() for b in v}):
            seq = [table[f][b] for f in sorted(table, key=lambda f: _conv_depth(f) or 0) if b in table[f]]
            up += sum(y > x for x, y in zip(seq, seq[1:]))
            tot += max(len(seq) - 1, 0)
    else:
        for v in table.values():
            seq = [v[b] for b in sorted(v)]
            up += sum(y > x for x, y in zip(seq, seq[1:]))
            tot += max(len(seq) - 1, 0)
    return up, tot


def depth_pairs(t: T2) -> list[tuple[str, list[float], list[float]]]:
    """Each added conv layer at a fixed budget: (label, deeper's samples, shallower's samples)."""
    m = _measured(t)
    out = []
    for b in sorted({b for v in m.values() for b in v}):
        fams = sorted((f for f in m if b in m[f] and _conv_depth(f) is not None), key=_conv_depth)
        out += [(f"{lo}→{hi}@{P.budget_label(b)}", m[hi][b].samples, m[lo][b].samples)
                for lo, hi in zip(fams, fams[1:])]
    return out


def budget_pairs(t: T2) -> list[tuple[str, list[float], list[float]]]:
    m = _measured(t)
    out = []
    for f, v in m.items():
        bs = sorted(v)
        out += [(f"{f} {P.budget_label(lo)}→{P.budget_label(hi)}", v[hi].samples, v[lo].samples)
                for lo, hi in zip(bs, bs[1:])]
    return out


def compression_gaps(t: T2, baselines: dict[tuple[str, int | None], Cell]) -> list[dict]:
    """Urban et al. §3 / Figure 1's "compression gaps": a mimic student minus the same family trained on the
    hard targets at the same budget, per family."""
    out = []
    for f, v in sorted(_measured(t).items(), key=lambda kv: _family_key(kv[0])):
        for b, c in sorted(v.items()):
            base = baselines.get((f, b))
            if base is not None and base.samples:
                out.append({"family": f, "budget": b, "student": c, "baseline": base})
    return out


def convolutional_gaps(t: T2) -> list[dict]:
    """Figure 1's "convolutional gap": the 1-conv student minus the 0-conv student (an MLP) at the same budget,
    the step from no convolution to one."""
    m = _measured(t)
    out = []
    for b in sorted(set(m.get("conv0", {})) & set(m.get("conv1", {}))):
        out.append({"budget": b, "conv0": m["conv0"][b], "conv1": m["conv1"][b]})
    return out


def best_student(t: T2) -> Cell | None:
    """The student cell a user would ship: the one whose best trial has the highest VALIDATION accuracy."""
    cells = [c for v in _measured(t).values() for c in v.values() if c.best_val is not None]
    return max(cells, key=lambda c: c.best_val) if cells else None


def _claim_from(pairs, paper_txt: str, claim: str) -> dict:
    """A claim over [(label, a's samples, b's samples)], each 'a beats b', by core.noise's judge."""
    return noise.claim_row(claim, paper_txt, noise.judge(pairs))


def teacher_groups(runs: list[Run], repro: dict | None = None) -> list[list[Run]]:
    """Finished teacher runs grouped by config (the seeds of one config together): a search trial with its
    seed reruns (repeat_of), and fixed teachers (reproduce's teachers/tN) whose preset entries differ only in
    their seed. Each group is ordered best validation first."""
    fixed = ((repro or {}).get("config") or {}).get("teachers") if isinstance((repro or {}).get("config"), dict) else None
    groups: dict[object, list[Run]] = defaultdict(list)
    for r in runs:
        if r.kind != "teacher" or not r.finished or r.val is None:
            continue
        if r.repeat_of is not None or r.trial is not None:
            key: object = ("trial", r.repeat_of if r.repeat_of is not None else r.trial)
        else:
            name = Path(r.row.get("path", "")).name
            i = int(name[1:]) if name[:1] == "t" and name[1:].isdigit() else None
            if isinstance(fixed, list) and i is not None and i < len(fixed) and isinstance(fixed[i], dict):
                key = ("fixed", json.dumps({k: v for k, v in fixed[i].items() if k != "seed"}, sort_keys=True))
            else:
                key = ("run", r.label)
        groups[key].append(r)
    return [sorted(g, key=lambda r: -r.val) for g in groups.values()]


def best_teacher(runs: list[Run], repro: dict | None = None) -> list[Run]:
    """The best single teacher by validation, as a seed sample: the group (teacher_groups) of the teacher run
    with the best validation accuracy; [] when there is none."""
    groups = teacher_groups(runs, repro)
    if not groups:
        return []
    return max(groups, key=lambda g: (g[0].val, -g[0].order))


def headline(t: T2, t1: list[T1Row], teacher_ref: tuple[str, float | None], runs: list[Run] | None = None,
             repro: dict | None = None) -> list[dict]:
    """The paper's claims on this run's seed samples, each with a verdict by core.noise's judge (holds /
    differs / within noise / too few seeds / not measured)."""
    out = []
    up, tot = _paper_pairs(P.STUDENTS, "depth")
    out.append(_claim_from(depth_pairs(t), f"rises at {up} of {tot} steps (Table 2)",
                           "Deeper students are better: each added conv layer, at a fixed budget"))
    up, tot = _paper_pairs(P.STUDENTS, "budget")
    out.append(_claim_from(budget_pairs(t), f"rises at {up} of {tot} steps (Table 2)",
                           "More parameters help within a family"))
    baselines = {(r.cell.family, r.cell.budget): r.cell for r in t1 if r.section == "hard targets" and r.cell}
    comp = compression_gaps(t, baselines)
    ptxt = ", ".join(f"{f} {g:+.1f}" + (" (§3)" if f in P.COMPRESSION_GAPS_STATED else " (from Tables 1–2)")
                     for f, g in P.compression_gaps().items()) + " at 10M"
    out.append(_claim_from([(f"{g['family']}@{P.budget_label(g['budget'])}", g["student"].samples,
                             g["baseline"].samples) for g in comp], ptxt,
                           "Compression gap: mimic student − the same family on hard targets, same budget"))
    conv = convolutional_gaps(t)
    out.append(_claim_from([(f"@{P.budget_label(g['budget'])}", g["conv1"].samples, g["conv0"].samples)
                            for g in conv],
                           ", ".join(f"{g:+.1f} at {P.budget_label(b)}" for b, g in P.convolutional_gaps().items())
                           + " (from Table 2)",
                           "Convolutional gap: 1-conv student − 0-conv student (MLP), same budget"))
    name, tacc = teacher_ref
    best = best_student(t)
    pb = P.teacher_student_gap()
    claim = f"Teacher − student gap: the teacher ({name}) beats the best student (chosen on validation)"
    ptxt = f"{pb:+.1f} (from Tables 1–2: {P.ENSEMBLE['test_acc']:g} − {P.ENSEMBLE['test_acc'] - pb:g})"
    if best is not None and tacc is not None:
        out.append(_claim_from([(f"vs {best.family}@{P.budget_label(best.budget)}", [tacc], best.samples)], ptxt, claim))
    else:
        out.append(noise.claim_row(claim, ptxt, None))
    # like the paper (93.8 vs its best teacher, 92.78): the ensemble against the best single teacher by
    # validation, that teacher's config as a seed sample where it was trained with several seeds
    single = best_teacher(runs or [], repro)
    ens = [r.cell.best_test for r in t1 if r.mimicked and r.cell and r.cell.best_test is not None]
    pd_ = P.ENSEMBLE["test_acc"] - P.TEACHERS[0]["test_acc"]
    claim = "The ensemble beats its best single teacher (chosen on validation)"
    ptxt = f"{pd_:+.2f} ({P.ENSEMBLE['test_acc']:g} vs the best of 129 by validation, {P.TEACHERS[0]['test_acc']:g})"
    if single and ens:
        seeds = f"{single[0].label}" + (f" and its {len(single) - 1} other seed(s)" if len(single) > 1 else "")
        out.append(_claim_from([(f"vs {seeds}", ens[:1], [r.test for r in single if r.test is not None])], ptxt,
                               claim))
    else:
        out.append(noise.claim_row(claim, ptxt, None))
    return out


# ============================================================================================ figures

def _family_color(f: str, extra: dict) -> str:
    if f in FAMILY_COLORS:
        return FAMILY_COLORS[f]
    return extra.setdefault(f, _EXTRA_COLORS[len(extra) % len(_EXTRA_COLORS)])


def _param_formatter():
    return FuncFormatter(lambda x, _pos: P.budget_label(x))


def _gap_arrow(ax, x, y_lo, y_hi, text, color="k", side="right", above=False):
    """A double arrow from y_lo to y_hi at x, named beside it (or above it, for a gap too small to hold text;
    not at all when `text` is a short tag, drawn at the arrow's end, its meaning given elsewhere)."""
    ax.annotate("", xy=(x, y_hi), xytext=(x, y_lo),
                arrowprops=dict(arrowstyle="<->", color=color, lw=1.1, shrinkA=0, shrinkB=0))
    if len(text) <= 2:  # a tag: named in the panel's caption, so no label covers the curves
        ax.annotate(text, xy=(x, max(y_lo, y_hi)), xytext=(0, 2), textcoords="offset points", ha="center",
                    va="bottom", fontsize=7, color=color, weight="bold")
    elif above:
        ax.annotate(text.replace("\n", " "), xy=(x, y_hi), xytext=(0, 3), textcoords="offset points",
                    ha="right" if side == "left" else "left", va="bottom", fontsize=7, color=color, style="italic")
    else:
        ax.annotate(text, xy=(x, (y_lo + y_hi) / 2), xytext=(4 if side == "right" else -4, 0),
                    textcoords="offset points", ha="left" if side == "right" else "right", va="center",
                    fontsize=7, color=color, style="italic")


def _cell_point(c: Cell) -> tuple[float, float, float, str] | None:
    """(y, y_low, y_high, what) of a cell in Figure 1: its seed mean ± sd, or without seed runs the mean of the
    top-5 trials by validation with a bar from the 5th best to the best (the paper's own drawing)."""
    if c.seed_tests:
        m, sd = _mean(c.seed_tests), _std(c.seed_tests) or 0.0
        return m, m - sd, m + sd, "seeds"
    if c.top_test:
        return _mean(c.top_test), min(c.top_test), max(c.top_test), "top-5"
    return None


def _figure1_this_run(ax, t: T2, baselines: list[Cell], teacher_ref: tuple[str, float | None],
                      extra: dict) -> list[float]:
    """Figure 1's left panel: a curve per family (seed mean ± sd), the hard-target marks, the teacher's line,
    and the gaps as the paper draws them (compression: student over its hard-target mark; convolutional:
    1-conv over 0-conv). Returns every y drawn, for the axis limits."""
    ys: list[float] = []
    kinds = set()
    # families side by side at one budget (a few % apart on the log axis), so their bars do not overlap
    dodge = {f: DODGE ** (i - (len(t.families) - 1) / 2) for i, f in enumerate(t.families)}
    for f in t.families:
        pts = []
        for b in t.budgets:
            c = t.cell(f, b)
            pt = _cell_point(c) if c is not None and c.params else None
            if pt is not None:
                pts.append((c.params * dodge[f], *pt[:3], c.cut_short))
                kinds.add(pt[3])
        if not pts:
            continue
        pts.sort()
        col = _family_color(f, extra)
        x, m, lo, hi, cut = zip(*pts)
        ax.errorbar(x, m, yerr=[[a - b for a, b in zip(m, lo)], [b - a for a, b in zip(m, hi)]], color=col,
                    marker="o", ms=4, lw=1.4, capsize=3, elinewidth=0.9, label=family_label(f))
        for xi, mi, ci in zip(x, m, cut):
            if ci:
                ax.annotate(CUT, (xi, mi), xytext=(3, 3), textcoords="offset points", fontsize=8, color=col)
        ys += list(lo) + list(hi)
    marks = {}
    for c in baselines:
        pt = _cell_point(c) if c.params else None
        if pt is not None:
            ax.hlines(pt[0], c.params / 1.25, c.params * 1.25, color=_family_color(c.family, extra), lw=3)
            marks[(c.family, c.budget)] = pt[0]
            ys.append(pt[0])
    if marks:  # one neutral legend entry: the mark's colour is its family's
        ax.plot([], [], color="0.35", lw=3, label="hard targets (family colour)")
    tname, tacc = teacher_ref
    if tacc is not None:
        ax.axhline(tacc, color="k", ls="--", lw=1, label=f"{tname} {tacc:.2f}")
        ys.append(tacc)
    comp = [g for g in compression_gaps(t, {(c.family, c.budget): c for c in baselines})
            if (g["family"], g["budget"]) in marks]
    named = []  # the arrows carry a tag; what each tag measures is said under the panel's title
    for g in (comp[:1] + comp[-1:]) if len(comp) > 1 else comp:  # the shallowest and deepest, as the paper
        c = g["student"]
        y0, y1 = marks[(g["family"], g["budget"])], _cell_point(c)[0]
        tag = "abcdef"[len(named)]
        _gap_arrow(ax, c.params * dodge.get(g["family"], 1.0) * 1.3, y0, y1, tag)
        named.append(f"{tag}: compression gap {g['family']} {y1 - y0:+.1f}")
    conv = [g for g in convolutional_gaps(t) if g["conv0"].params and g["conv1"].params]
    if conv:
        g = conv[-1]  # at the largest budget both were measured at
        y0, y1 = _cell_point(g["conv0"])[0], _cell_point(g["conv1"])[0]
        tag = "abcdef"[len(named)]
        _gap_arrow(ax, g["conv0"].params * dodge.get("conv0", 1.0) / 1.3, y0, y1, tag)
        named.append(f"{tag}: convolutional gap {y1 - y0:+.1f}")
    if not t.families:
        ax.text(0.5, 0.5, "no student runs yet", transform=ax.transAxes, ha="center", va="center", color="0.4")
    what = "seed mean ± sd of each cell's best config" if kinds == {"seeds"} else \
        "mean of top-5 (by val); bars 5th best … best" if kinds == {"top-5"} else \
        "seed mean ± sd (cells with seed runs), else top-5 mean"
    ax.set_title(f"This run: {what}" + "".join(f"\n{x}" for x in textwrap.wrap("; ".join(named), 70)), fontsize=8)
    return ys


def _figure1_paper(axp, extra: dict) -> None:
    """Figure 1's right panel: the paper's Table 2 drawn like the left one, with its baselines, ensemble, Ba &
    Caruana's SNN-MIMIC and its gaps (compression: conv1 and conv4 at 10M, stated in §3; convolutional:
    computed from Table 2)."""
    for f, row in P.STUDENTS.items():
        bs = sorted(row)
        axp.plot(bs, [row[b] for b in bs], marker="o", ms=4, lw=1.4, color=_family_color(f, extra),
                 label=family_label(f))
    for f, acc in P.BASELINES.items():
        axp.hlines(acc, P.BASELINE_BUDGET / 1.25, P.BASELINE_BUDGET * 1.25, color=_family_color(f, extra), lw=3)
    axp.plot([], [], color="0.35", lw=3, label="hard targets, 10M (family colour)")
    axp.axhline(P.ENSEMBLE["test_acc"], color="k", ls="--", lw=1, label=f"ensemble of 16 {P.ENSEMBLE['test_acc']:g}")
    s = P.BA_SNN_MIMIC
    axp.plot([s["params"]], [s["test_acc"]], marker="*", ms=9, color=_family_color("conv1", extra), ls="none",
             label=f"Ba & Caruana SNN-MIMIC {s['test_acc']:g}")
    named = []
    for f, g in P.COMPRESSION_GAPS_STATED.items():
        tag = "abcdef"[len(named)]
        _gap_arrow(axp, P.BASELINE_BUDGET * 1.3, P.BASELINES[f], P.STUDENTS[f][P.BASELINE_BUDGET], tag)
        named.append(f"{tag}: compression gap {f} {g:+.1f}")
    pb = max(P.PAPER_BUDGETS)
    tag = "abcdef"[len(named)]
    _gap_arrow(axp, pb * 1.12, P.STUDENTS["conv0"][pb], P.STUDENTS["conv1"][pb], tag)
    named.append(f"{tag}: convolutional gap {P.convolutional_gaps()[pb]:+.1f}")
    axp.set_title("Paper (Urban et al. Table 2: best trial per cell)"
                  + "".join(f"\n{x}" for x in textwrap.wrap("; ".join(named), 70)), fontsize=8)


def _figure1_axes(ax, axp, ys: list[float]) -> None:
    """Both panels' log parameter axis, labels, grid and legend; the limits leave room for legend and labels."""
    for a in (ax, axp):
        a.set_xscale("log")
        # labels at 1, 3 × 10^k only (the paper's budgets are half-decades); unlabelled minor ticks between
        a.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 3.16)))
        a.xaxis.set_major_formatter(_param_formatter())
        a.xaxis.set_minor_formatter(NullFormatter())
        a.tick_params(labelsize=7)
        a.set_xlabel("parameters (log scale)", fontsize=8)
        a.set_ylabel("test accuracy (%)", fontsize=8)
        a.grid(True, which="major", alpha=0.3)
        if a.get_legend_handles_labels()[0]:  # two columns: the free band kept below the curves holds it
            a.legend(fontsize=6, loc="lower right", framealpha=0.85, ncol=2)
    xmin, xmax = axp.get_xlim()
    axp.set_xlim(xmin, xmax * 1.6)           # room for the gap labels right of the last point
    if ys:
        lo, hi = min(ys), max(ys)
        pad = max(1.0, 0.08 * (hi - lo))
        ax.set_ylim(lo - 4 * pad, hi + pad)  # room below for the legend
        x0, x1 = ax.get_xlim()
        ax.set_xlim(x0 / 1.3, x1 * 1.6)
    axp.set_ylim(45, 97)


def figure1(t: T2, baselines: list[Cell], teacher_ref: tuple[str, float | None]):
    """Accuracy vs parameters: this run (left), the paper's Table 2 drawn the same way (right)."""
    fig = Figure(figsize=(9, 4), layout="constrained")
    ax, axp = fig.subplots(1, 2)
    extra: dict = {}   # colours of families beyond conv0-4, shared so both panels agree
    ys = _figure1_this_run(ax, t, baselines, teacher_ref, extra)
    _figure1_paper(axp, extra)
    _figure1_axes(ax, axp, ys)
    fig.suptitle("Figure 1: accuracy vs parameters, students by number of conv layers", fontsize=10)
    return fig


def teacher_student_points(runs: list[Run], t: T2) -> dict[tuple[str, int | None], list[dict]]:
    """Per student cell (family, budget) with >= 2 teachers of known accuracy: one point per teacher."""
    ens_ids = set()
    acc_of = {}
    for r in runs:
        for key in {r.label, r.row.get("path", ""), r.row.get("run_id", ""), Path(r.row.get("path", "")).name} - {""}:
            if r.test is not None:
                acc_of.setdefault(key, r.test)
            if r.kind == "ensemble":
                ens_ids.add(key)
    by = defaultdict(lambda: defaultdict(list))
    for r in runs:
        if r.kind == "student" and r.finished and r.test is not None:
            by[(r.family, r.budget)][r.teacher].append(r)
    out = {}
    for key, groups in by.items():
        pts = []
        for teacher, rs in groups.items():
            ta = [r.teacher_test for r in rs if r.teacher_test is not None]
            tacc = statistics.median(ta) if ta else acc_of.get(teacher, acc_of.get(Path(teacher).name))
            if tacc is None:
                continue
            c = Cell("student", key[0], key[1], runs=rs)
            is_ens = teacher in ens_ids or Path(teacher).name in ens_ids or "ens" in teacher.lower()
            pts.append({"teacher": teacher, "teacher_acc": tacc, "ensemble": is_ens, "n": c.n,
                        "mean": _mean(c.top_test), "lo": min(c.top_test), "hi": max(c.top_test),
                        "best": c.best_test})
        if len(pts) >= 2:
            out[key] = sorted(pts, key=lambda p: p["teacher_acc"])
    return dict(sorted(out.items(), key=lambda kv: (_family_key(kv[0][0]), kv[0][1] or 0)))


def teacher_student_figure(points):
    fig = Figure(figsize=(9, 4), layout="constrained")
    ax, axp = fig.subplots(1, 2)
    extra: dict = {}
    xs, ys = [], []
    for (f, b), pts in points.items():
        col = _family_color(f, extra)
        x = [p["teacher_acc"] for p in pts]
        m = [p["mean"] for p in pts]
        ax.errorbar(x, m, yerr=[[mi - p["lo"] for mi, p in zip(m, pts)], [p["hi"] - mi for mi, p in zip(m, pts)]],
                    color=col, lw=1.2, capsize=3, elinewidth=0.9, label=f"{f} @ {P.budget_label(b)}")
        for p, mi in zip(pts, m):
            ax.plot([p["teacher_acc"]], [mi], marker="s" if p["ensemble"] else "o", ms=5, color=col,
                    mfc="white" if p["ensemble"] else col, ls="none")
        # slope 1 through the weakest teacher's point: "the student gains what the teacher gains"
        ax.plot([x[0], x[-1]], [m[0], m[0] + x[-1] - x[0]], ls=":", color=col, lw=1)
        xs += x
        ys += [p["lo"] for p in pts] + [p["hi"] for p in pts] + [m[0] + x[-1] - x[0]]
    ax.plot([], [], "o", color="0.3", label="single teacher")
    ax.plot([], [], "s", color="0.3", mfc="white", label="ensemble teacher")
    ax.set_title("This run: student (top-5 mean; bars 5th … best) vs its teacher", fontsize=9)
    for s in P.BA_STUDENTS:
        axp.plot([s["teacher_test_acc"]], [s["test_acc"]], marker="s" if s["teacher_kind"] == "ensemble" else "o",
                 ms=6, ls="none", color="#1f77b4", mfc="white" if s["teacher_kind"] == "ensemble" else "#1f77b4")
        axp.annotate(f"{s['name']}\n{s['test_acc']:g}", (s["teacher_test_acc"], s["test_acc"]), xytext=(5, -3),
                     textcoords="offset points", fontsize=6)
    ref = P.BA_STUDENTS[1]  # the 128c student of a single CNN; the ensemble's student has the same architecture
    axp.plot([87.5, 90.5], [ref["test_acc"] - 0.5, ref["test_acc"] + 2.5], ls=":", color="#1f77b4", lw=1,
             label="slope 1 through the 128c single-teacher student")
    axp.legend(fontsize=6, loc="lower right")
    axp.set_xlim(87.5, 90.5)
    axp.set_ylim(84, 86.5)
    axp.set_title("Ba & Caruana (CIFAR-10, Table 2): 1-conv mimic students", fontsize=9)
    ax.plot([], [], ls=":", color="0.3", label="slope 1 (student gains what teacher gains)")
    for a in (ax, axp):
        a.set_xlabel("teacher test accuracy (%)", fontsize=8)
        a.set_ylabel("student test accuracy (%)", fontsize=8)
        a.tick_params(labelsize=7)
        a.grid(True, alpha=0.3)
    ax.legend(fontsize=6, loc="best")
    if ys:
        pad = max(0.5, 0.1 * (max(ys) - min(ys)))
        ax.set_ylim(min(ys) - pad, max(ys) + pad)
    fig.suptitle("Teacher → student: does a better teacher make a better student?", fontsize=10)
    return fig


# ============================================================================================ environment

def hardware_now() -> dict:
    """What the report-building machine is (the runs' own hardware comes from reproduce.json when present)."""
    return hardware()


# ============================================================================================ HTML


def _dclass(d) -> str:
    a = abs(d)
    return "d-ok" if a <= AGREE_PTS else "d-mid" if a <= CLOSE_PTS else "d-bad"


def _delta_view(d) -> dict | None:
    return None if d is None else {"cls": _dclass(d), "text": f"Δ {d:+.2f}"}


def _cell_view(c: Cell, paper: dict | None, single=False) -> dict:
    """A cell of Table 1 or 2 as macros.html.j2's cell() draws it: every string ready, the cut-short mark apart
    (it gets its own colour and the reasons on hover)."""
    best, rest = _cell_summary(c, single)
    cut = "; ".join(c.cut_reasons) if best.endswith(CUT) else ""
    v = {"best": best[:-len(CUT)] if cut else best, "cut": cut, "mark": CUT,
         "cls": "missing" if c.missing else "best", "rest": rest, "paper": None}
    if paper and paper.get("paper_test_acc") is not None:
        acc = _paper(paper["paper_test_acc"])
        v["paper"] = ({"exact": True, "text": f"paper {acc}",
                       "delta": _delta_view(_delta(c.best_test, paper["paper_test_acc"]))} if paper["paper_exact"] else
                      {"exact": False, "text": f"paper@{P.budget_label(paper['paper_budget'])} {acc} (other budget)"})
    return v


def _t2_view(t2: T2, results_dir: Path) -> dict:
    return {"teacher": None if t2.main_teacher is None else _shown_path(t2.main_teacher, results_dir)
            or "(teacher not recorded)",
            "budgets": [P.budget_label(b) for b in t2.budgets],
            "rows": [{"family": family_label(f),
                      "cells": [_cell_view(t2.cell(f, b), paper_for_student(f, b)) for b in t2.budgets]}
                     for f in t2.families]}


def _paper_t2_view() -> dict:
    return {"budgets": [P.budget_label(b) for b in P.PAPER_BUDGETS],
            "rows": [{"family": family_label(f), "accs": [_paper(row[b]) for b in P.PAPER_BUDGETS],
                      "baseline": _paper(P.BASELINES.get(f))} for f, row in P.STUDENTS.items()],
            "snn_mimic": _paper(P.BA_SNN_MIMIC["test_acc"])}


def _t1_view(r: T1Row) -> dict:
    c = r.cell
    has_paper = r.paper_acc is not None
    return {"section": r.section, "model": r.model, "note": r.note, "architecture": r.architecture,
            "params": P.budget_label(c.params) if c is not None and c.params else MISSING,
            "cell": _cell_view(c, None, single=r.single) if c is not None else None,
            "paper": _paper(r.paper_acc) + (f" ({P.budget_label(r.paper_params)})" if r.paper_params else "")
            if has_paper else "",
            "paper_model": r.paper_model if has_paper else "",
            "other_budget": c is not None and has_paper and not r.paper_exact,
            "delta": _delta_view(_delta(c.best_test if c else None, r.paper_acc) if r.paper_exact else None)}


def _ts_rows(ts_points) -> list[dict]:
    return [{"cell": f"{f} @ {P.budget_label(b)}", "teacher": p["teacher"], "ensemble": p["ensemble"],
             "teacher_acc": f"{p['teacher_acc']:.2f}", "best": _f(p["best"]), "mean": _f(p["mean"]), "n": p["n"]}
            for (f, b), pts in ts_points.items() for p in pts]


def _provenance(repro: dict, runs: list[Run]) -> dict:
    """The 'How these numbers were made' section: command, config, data, hardware, run times, code versions."""
    cmd = repro.get("command")
    data, stages = repro.get("data"), repro.get("stages")
    shas = Counter(r.row.get("data_sha256", "") for r in runs if r.row.get("data_sha256"))
    per = defaultdict(list)
    for r in runs:
        if r.seconds is not None:
            per[r.kind].append(r.seconds)
    stages = {k: _float(v) for k, v in stages.items()} if isinstance(stages, dict) and stages else None
    return {"command": (" ".join(cmd) if isinstance(cmd, list) else str(cmd)) if cmd else "",
            "config_json": None if repro.get("config") is None else json.dumps(repro["config"], indent=2,
                                                                               sort_keys=True),
            # the archive's name leads: the full path is that of the machine the runs were made on
            "data": {"name": Path(str(data.get("path", ""))).name or MISSING, **data}
            if isinstance(data, dict) and data else None,
            "shas": {f"sha256 {s}": f"{n} runs" for s, n in shas.items()},
            "hardware": repro.get("hardware"), "hardware_now": hardware_now(),
            "stages": stages, "stages_total": sum(v or 0 for v in stages.values()) if stages else None,
            "per_kind": [{"kind": k, "runs": len(v), "total": sum(v), "median": statistics.median(v)}
                         for k, v in sorted(per.items())],
            "no_run_times": not per and not repro.get("stages"),
            "code_versions": ", ".join(sorted({r.row.get("code_version", "") for r in runs} - {""}))}


INDEX_HTML_COLUMNS = ["kind", "family", "budget", "params", "seed", "val_acc", "test_acc", "status", "teacher",
                      "teacher_test_acc", "study", "trial", "epochs", "max_epochs", "seconds", "run_id", "path"]


def render_html(*, results_dir: Path, runs: list[Run], repro: dict, t2: T2, t1: list[T1Row], claims: list[dict],
                teacher_ref, fig1_png: bytes, ts_png: bytes | None, ts_points, notes2: list[str],
                notes1: list[str]) -> str:
    """report.html from templates/main.html.j2: the numbers and strings are made here, the markup there."""
    kinds = Counter(r.kind for r in runs)
    status = Counter(r.status or "complete" for r in runs)
    verdict_cls = {noise.HOLDS: "v-agrees", noise.DIFFERS: "v-differs"}
    return render(
        "main.html.j2", results_dir=results_dir, built=_dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        n_runs=len(runs), kinds=", ".join(f"{n} {k}" for k, n in sorted(kinds.items())),
        statuses=", ".join(f"{n} {s}" for s, n in sorted(status.items()) if s != "complete")
        if len(status) > 1 or "complete" not in status else None,
        preset=repro.get("preset"), claims=[{**c, "cls": verdict_cls.get(c["verdict"], "v-not")} for c in claims],
        rule=noise.RULE, deviations=deviations(repro.get("preset")) if repro.get("preset") else deviations(),
        agree_pts=f"{AGREE_PTS:g}", close_pts=f"{CLOSE_PTS:g}", fig1_png=fig1_png, teacher_name=teacher_ref[0],
        cut_mark=CUT, t2=_t2_view(t2, results_dir), notes2=notes2, paper_t2=_paper_t2_view(), t1=[_t1_view(r) for r in t1],
        notes1=notes1, ts_png=ts_png, ts_rows=_ts_rows(ts_points),
        ba_students=[f"{s['name']} {_paper(s['test_acc'])} from a teacher at {_paper(s['teacher_test_acc'])}"
                     for s in P.BA_STUDENTS],
        **_provenance(repro, runs), index_columns=INDEX_HTML_COLUMNS,
        index_rows=[[_shown_path(r.row.get(c, ""), results_dir) if c in ("path", "teacher") else r.row.get(c, "")
                     for c in INDEX_HTML_COLUMNS] for r in runs])


def _shown_path(p: str, results_dir: Path) -> str:
    """A path as the page shows it: relative to the results folder when inside it, else its name (the page is
    read on other machines; the index keeps what it recorded)."""
    if not p or not p.startswith("/"):
        return p
    try:
        return str(Path(p).resolve().relative_to(Path(results_dir).resolve()))
    except ValueError:
        return Path(p).name


# ============================================================================================ build

def _teacher_reference(runs: list[Run], main_teacher: str | None) -> tuple[str, float | None]:
    """The horizontal line of Figure 1: the teacher the students mimicked (an ensemble, normally)."""
    by_id = {}
    for r in runs:
        for key in (r.label, r.row.get("path", ""), r.row.get("run_id", ""), Path(r.row.get("path", "")).name):
            if key and r.test is not None and r.kind in ("ensemble", "teacher"):
                by_id.setdefault(key, r)
    if main_teacher:
        r = by_id.get(main_teacher) or by_id.get(Path(main_teacher).name)
        if r is not None:
            return f"{'ensemble' if r.kind == 'ensemble' else 'teacher'} {r.label}", r.test
        accs = [s.teacher_test for s in runs if s.kind == "student" and s.teacher == main_teacher
                and s.teacher_test is not None]
        if accs:
            return f"teacher {Path(main_teacher).name}", statistics.median(accs)
    for kind in ("ensemble", "teacher"):
        cands = [r for r in runs if r.kind == kind and r.finished and r.test is not None]
        if cands:
            r = max(cands, key=lambda r: (r.val or -1, -r.order))
            return f"best {kind} {r.label}", r.test
    return "teacher", None


def check_index(results_dir) -> None:
    """The index is a view of the run folders: a ReportError saying what differs (finished run folders without
    a row, rows without a folder) and how to mend it, never a partial table."""
    diff = index_differences(results_dir)
    if diff["no_row"] or diff["no_folder"]:
        said = [f"{len(v)} {what} (e.g. {_shown_path(v[0], Path(results_dir))})" for what, v in
                (("finished run folder(s) without a row", diff["no_row"]), ("row(s) without a run folder",
                                                                            diff["no_folder"])) if v]
        raise ReportError(f"{Path(results_dir) / 'index.csv'} does not match its run folders: {'; '.join(said)}; "
                          f"`mimicnet report {results_dir} --rebuild-index` writes it anew from the run folders")


def build_report(results_dir, teacher: str | None = None, out_dir=None) -> Path:
    """Write every table and figure of the report into RESULTS_DIR/report/ and return report.html's path."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise ReportError(f"{results_dir}: results folder not found")
    check_index(results_dir)
    repro = load_reproduce(results_dir)
    if is_study_record(repro):  # Ba & Caruana or Ratusznik et al.: their own tables (studies.py)
        return build_study_report(results_dir, out_dir=out_dir)
    out = Path(out_dir) if out_dir is not None else results_dir / "report"
    runs = load_runs(results_dir)
    planned = planned_trials(repro)
    sched = _Schedules(results_dir, repro)

    t2 = table2(runs, planned, sched, teacher)
    t1 = table1(runs, planned, sched, t2.main_teacher)
    teacher_ref = _teacher_reference(runs, t2.main_teacher)
    claims = headline(t2, t1, teacher_ref, runs, repro)
    base_cells = [r.cell for r in t1 if r.section == "hard targets" and r.cell is not None]
    notes2 = _footnotes([(_cell_name(c), c) for c in t2.cells.values()])
    notes1 = _footnotes([(r.model, r.cell) for r in t1 if r.cell is not None])

    legend = ("Cell, in bold: the test accuracy (%) that Figure 1 draws and the claims compare: the cell's best "
              "trial by *validation* trained again with other seeds, mean ± sample sd (how many seeds, and how many "
              "of them failed or collapsed), or, for a cell without seed runs, that best trial's own. Then the best "
              "trial's test accuracy, the mean ± sd of the 5 trials with the best validation accuracy, and n = "
              "finished trials (failed, collapsed or pruned ones are counted, never averaged). The paper's value "
              "is its best trial: the Δ beside it is our best trial's, only at the paper's own budgets; "
              f"'{MISSING}' = not measured; {CUT} = cut short (see notes).\n")
    write_text(out / "table2.md", "# Table 2: students\n\n" + (f"Teacher: `{_shown_path(t2.main_teacher, results_dir)}`\n\n"
               if t2.main_teacher else "") + legend + "\n" + table2_markdown(t2) + "".join(f"\n- {x}" for x in notes2)
               + "\n\n## The paper's Table 2 (Urban et al.)\n\n" + paper_table2_markdown())
    _write_csv(out / "table2.csv", table2_rows(t2), T2_COLUMNS)
    write_text(out / "table2.tex", table2_latex(t2))
    write_text(out / "table1.md", "# Table 1: hard-target models, teachers, ensembles\n\n" + legend + "\n"
               + table1_markdown(t1) + "".join(f"\n- {x}" for x in notes1) + "\n")
    _write_csv(out / "table1.csv", [r.as_dict() for r in t1], T1_COLUMNS)
    write_text(out / "table1.tex", table1_latex(t1))

    fig1 = _save_figure(figure1(t2, base_cells, teacher_ref), out / "figure1")
    ts_points = teacher_student_points(runs, t2)
    ts_png = None
    if ts_points:
        ts_png = _save_figure(teacher_student_figure(ts_points), out / "teacher_student")
    else:  # a stale figure from an earlier report must not outlive the data it showed
        for ext in (".png", ".svg"):
            (out / f"teacher_student{ext}").unlink(missing_ok=True)

    page = render_html(results_dir=results_dir, runs=runs, repro=repro, t2=t2, t1=t1, claims=claims,
                       teacher_ref=teacher_ref, fig1_png=fig1, ts_png=ts_png, ts_points=ts_points,
                       notes2=notes2, notes1=notes1)
    write_text(out / "report.html", page)
    return out / "report.html"


def deviations_markdown(devs) -> str:
    """studies.deviations as a Markdown table."""
    lines = ["| what | the paper | mimicnet | why |", "|---|---|---|---|"]
    lines += [f"| {_md(d.topic)} | {_md(d.paper)} | {_md(d.ours)} | {_md(d.why)} |" for d in devs]
    return "\n".join(lines)


def record_claims(results_dir: Path, teacher: str | None = None) -> list[dict]:
    """The claims a record's report states, each with its verdict (what report.html shows), computed anew."""
    results_dir = Path(results_dir)
    repro = load_reproduce(results_dir)
    if is_study_record(repro):
        return study_record_claims(results_dir, repro)
    runs = load_runs(results_dir)
    planned, sched = planned_trials(repro), _Schedules(results_dir, repro)
    t2 = table2(runs, planned, sched, teacher)
    t1 = table1(runs, planned, sched, t2.main_teacher)
    return headline(t2, t1, _teacher_reference(runs, t2.main_teacher), runs, repro)


def record_table(results_dir: Path, teacher: str | None = None) -> str:
    """A record's main table as Markdown: Table 2 (compact) for the main study, the arms table for a study."""
    results_dir = Path(results_dir)
    repro = load_reproduce(results_dir)
    if is_study_record(repro):
        return study_record_table(results_dir, repro)
    runs = load_runs(results_dir)
    return table2_markdown(table2(runs, planned_trials(repro), _Schedules(results_dir, repro), teacher), compact=True)


def results_table(results_dir: Path) -> str:
    """Per cell (kind, family, budget) of the run index: trials, the best-by-validation trial's val and test
    accuracy, mean ± sd of the test accuracy of the five best by validation, and of the best config's seed
    reruns (report.Cell's numbers)."""
    cells = build_cells(load_runs(results_dir), ("teacher", "ensemble", "baseline", "student"), planned={})
    order = {"teacher": 0, "ensemble": 1, "baseline": 2, "student": 3}
    lines = [f"{'kind':9s} {'family':9s} {'budget':>8s} {'params':>9s} {'n':>3s} {'best val':>9s} {'test@best':>9s} "
             f"{'top5 test':>15s} {'seeds test':>17s}"]
    for (kind, fam, budget), c in sorted(cells.items(), key=lambda kv: (order[kv[0][0]], kv[0][2] or 0, kv[0][1])):
        top, tt = c.top, c.top_test
        if not top or top[0].test is None:
            continue
        spread = f"{statistics.fmean(tt):.1f} ± {statistics.stdev(tt):.1f}" if len(tt) > 1 else f"{tt[0]:.1f}"
        b = budget_name(budget) if budget else "-"
        st, failed = c.seed_tests, sum(c.seed_failures.values())
        seeds = "-" if not st else f"{statistics.fmean(st):.1f}" + (
            f" ± {statistics.stdev(st):.1f}" if len(st) > 1 else "") + (
            f" ({len(st)} of {len(st) + failed})" if failed else f" ({len(st)})")
        lines.append(f"{kind:9s} {fam:9s} {b:>8s} {top[0].params or 0:>9,d} {c.n:>3d} "
                     f"{top[0].val:>9.1f} {top[0].test:>9.1f} {spread:>15s} {seeds:>17s}")
    return "\n".join(lines)
