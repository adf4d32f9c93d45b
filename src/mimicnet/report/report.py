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

The cells and their statistics: report/cells.py; Tables 1 and 2: tables.py; the claims: claims.py; the
figures: figures.py. This module builds the page and writes every file.
"""
from __future__ import annotations

import datetime as _dt
import json
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from ..core import noise
from ..core.artifacts import write_text
from ..core.hardware import hardware
from ..core.index import RunKind
from ..core.index import num as _float
from ..studies import published as P
from ..studies.catalog import is_study_record
from ..studies.deviations import deviations
from ..studies.reindex import index_differences
from .cells import CUT, Cell, Run, _Schedules, load_runs, planned_trials, runs_by_name
from .claims import headline
from .common import MISSING, ReportError, _save_figure, _write_csv, load_reproduce, render
from .figures import figure1, teacher_student_figure, teacher_student_points
from .study import build_study_report, study_record_claims, study_record_table
from .tables import (T2, T1Row, _cell_name, _cell_summary, _delta, _f, _footnotes, _md, _paper, family_label,
    paper_for_student, paper_table2_markdown, table1, table1_latex, table1_markdown, table2, table2_latex,
    table2_markdown, table2_rows)

T2_COLUMNS = ["kind", "family", "budget", "params", "n", "n_failed", "n_collapsed", "n_pruned", "planned", "best_test",
              "best_val", "seed_n", "seed_test_mean", "seed_test_std", "seed_failed", "top_k", "top_test_mean", "top_test_std",
              "top_test_min", "top_test_max", "top_val_mean", "top_val_std", "teacher", "other_teacher_runs", "paper_budget",
              "paper_test_acc", "paper_exact", "diff_best_vs_paper", "cut_short", "status", "note"]


T1_COLUMNS = ["section", "model", "kind", "family", "budget", "architecture", "params", "n", "n_failed",
              "n_collapsed", "n_pruned", "planned", "best_test", "best_val", "seed_n", "seed_test_mean", "seed_test_std",
              "seed_failed", "top_k", "top_test_mean", "top_test_std",
              "top_val_mean", "paper_model", "paper_params", "paper_test_acc", "paper_exact",
              "diff_best_vs_paper", "cut_short", "status", "note"]

AGREE_PTS, CLOSE_PTS = 1.0, 3.0          # |Δ| thresholds (percentage points) for the colour of a difference


def hardware_now() -> dict:
    """What the report-building machine is (the runs' own hardware comes from reproduce.json when present)."""
    return hardware()


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


@dataclass
class MainReport:
    """What one main-study report computed from its folder, before anything is drawn or written."""
    results_dir: Path
    runs: list[Run]
    repro: dict
    t2: T2
    t1: list[T1Row]
    teacher_ref: tuple[str, float | None]
    claims: list[dict]
    notes2: list[str]
    notes1: list[str]

    @classmethod
    def compute(cls, results_dir: Path, teacher: str | None = None) -> "MainReport":
        repro = load_reproduce(results_dir)
        runs = load_runs(results_dir)
        planned = planned_trials(repro)
        sched = _Schedules(results_dir, repro)
        t2 = table2(runs, planned, sched, teacher)
        t1 = table1(runs, planned, sched, t2.main_teacher)
        teacher_ref = _teacher_reference(runs, t2.main_teacher)
        return cls(results_dir, runs, repro, t2, t1, teacher_ref, headline(t2, t1, teacher_ref, runs, repro),
                   notes2=_footnotes([(_cell_name(c), c) for c in t2.cells.values()]),
                   notes1=_footnotes([(r.model, r.cell) for r in t1 if r.cell is not None]))


def render_html(rep: MainReport, fig1_png: bytes, ts_png: bytes | None, ts_points) -> str:
    """report.html from templates/main.html.j2: the numbers and strings are made here, the markup there."""
    results_dir, runs, repro, t2, t1 = rep.results_dir, rep.runs, rep.repro, rep.t2, rep.t1
    claims, teacher_ref, notes2, notes1 = rep.claims, rep.teacher_ref, rep.notes2, rep.notes1
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


def _teacher_reference(runs: list[Run], main_teacher: str | None) -> tuple[str, float | None]:
    """The horizontal line of Figure 1: the teacher the students mimicked (an ensemble, normally)."""
    find = runs_by_name(runs, keep=lambda r: r.test is not None and r.kind in (RunKind.ENSEMBLE, RunKind.TEACHER))
    if main_teacher:
        r = find(main_teacher)
        if r is not None:
            return f"{r.kind} {r.label}", r.test
        accs = [s.teacher_test for s in runs if s.kind == RunKind.STUDENT and s.teacher == main_teacher
                and s.teacher_test is not None]
        if accs:
            return f"teacher {Path(main_teacher).name}", statistics.median(accs)
    for kind in (RunKind.ENSEMBLE, RunKind.TEACHER):
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
    rep = MainReport.compute(results_dir, teacher)
    t2, t1, notes1, notes2 = rep.t2, rep.t1, rep.notes1, rep.notes2
    base_cells = [r.cell for r in t1 if r.section == "hard targets" and r.cell is not None]

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

    fig1 = _save_figure(figure1(t2, base_cells, rep.teacher_ref), out / "figure1")
    ts_points = teacher_student_points(rep.runs, t2)
    ts_png = None
    if ts_points:
        ts_png = _save_figure(teacher_student_figure(ts_points), out / "teacher_student")
    else:  # a stale figure from an earlier report must not outlive the data it showed
        for ext in (".png", ".svg"):
            (out / f"teacher_student{ext}").unlink(missing_ok=True)

    page = render_html(rep, fig1, ts_png, ts_points)
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
    return MainReport.compute(results_dir, teacher).claims


def record_table(results_dir: Path, teacher: str | None = None) -> str:
    """A record's main table as Markdown: Table 2 (compact) for the main study, the arms table for a study."""
    results_dir = Path(results_dir)
    repro = load_reproduce(results_dir)
    if is_study_record(repro):
        return study_record_table(results_dir, repro)
    runs = load_runs(results_dir)
    return table2_markdown(table2(runs, planned_trials(repro), _Schedules(results_dir, repro), teacher), compact=True)
