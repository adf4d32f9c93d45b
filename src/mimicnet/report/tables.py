"""Tables 1 and 2 of the main study (Urban et al.): the rows computed from cells, and their Markdown, LaTeX
and printed forms (the CSV and HTML views are built from the same rows)."""
from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..core.index import RunKind
from ..core.units import budget_name
from ..studies import published as P
from .cells import CUT, Cell, Run, _family_key, _mean, _same_teacher, _std, build_cells, capped_runs, load_runs
from .common import MISSING, tex


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
    st, fails = c.seed_tests, c.seed_failures
    if not st:
        n = sum(fails.values())
        return (f"— (all {n} seeds failed: " + ", ".join(f"{k} {v}" for v, k in sorted(fails.items())) + ")"
                if n else "")
    sd = _std(st)
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
    seeded = bool(c.seed_tests or c.seed_failures)
    parts = [f"best trial {_f(c.best_test)}"] if seeded else []
    parts += [f"top-{len(top)} {_f(_mean(top))}" + (f" ± {sd:.2f}" if sd is not None else "")] if top else []
    parts.append(f"n={c.n}" + (", " + ", ".join(extra) if extra else ""))
    head = _seed_text(c) if seeded else _f(c.best_test)
    return head + cut, " · ".join(parts)


def _paper_text(p: dict, best) -> str:
    if p["paper_test_acc"] is None:
        return ""
    if p["paper_exact"]:  # the paper's number is its best trial: the Δ is our best trial's, like for like
        d = _delta(best, p["paper_test_acc"])
        return f"paper {_paper(p['paper_test_acc'])}" + (f" (best trial Δ {d:+.2f})" if d is not None else "")
    return f"paper@{P.budget_label(p['paper_budget'])} {_paper(p['paper_test_acc'])} (other budget, no Δ)"


def _cell_texts(t: T2, f: str, b: int) -> tuple[str, str, str]:
    """(headline, detail, the paper's value and Δ) of one Table 2 cell, as every form of the table shows it."""
    c = t.cell(f, b)
    return (*_cell_summary(c), _paper_text(paper_for_student(f, b), c.best_test))


def table2_markdown(t: T2, compact: bool = False) -> str:
    if not t.families:
        return "_No student runs in the index yet._\n"
    head = "| family | " + " | ".join(P.budget_label(b) for b in t.budgets) + " |"
    lines = [head, "|---|" + "---|" * len(t.budgets)]
    for f in t.families:
        cells = []
        for b in t.budgets:
            best, rest, ptxt = _cell_texts(t, f, b)
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
            best, rest, ptxt = _cell_texts(t, f, b)
            lines = [f"\\textbf{{{tex(best)}}}"] + [f"\\scriptsize {tex(x)}" for x in (rest, ptxt) if x]
            cells.append("\\begin{tabular}[c]{@{}c@{}}" + " \\\\ ".join(lines) + "\\end{tabular}")
        out.append(tex(f) + " & " + " & ".join(cells) + " \\\\")
    out += ["\\hline", "\\end{tabular}", ""]
    return "\n".join(out)


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
        one.capped = capped_runs(one.runs, schedules)
        rows.append(T1Row("teachers", f"Teacher, {('1st', '2nd', '3rd')[i]} by val"
                          + (f" ({r.label})" if r else ""), one, single=True, architecture=_widths_arch(r),
                          paper_model=pt["architecture"], paper_params=pt["params"], paper_acc=pt["test_acc"],
                          paper_exact=_paper_size(r.params if r else None, pt["params"])))
    whole = Cell("teacher", "teacher", None, runs=all_t,
                 planned=sum(n for k, n in planned.items() if k[0] == RunKind.TEACHER) or None,
                 capped=[r for c in tcells.values() for r in c.capped])
    rows.append(T1Row("teachers", "Teacher search, all trials", whole,
                      paper_model=f"{P.TEACHER_SEARCH['trials']} trials; 5th best "
                                  f"{P.TEACHER_SEARCH['fifth_best_test_acc']:g}",
                      paper_acc=P.TEACHER_SEARCH["best_test_acc"],
                      paper_exact=bool(ranked) and _paper_size(ranked[0].params, P.TEACHERS[0]["params"])))
    # -- ensembles: every ensemble run is a row of its own; the one the students mimicked is marked
    ens = [r for r in runs if r.kind == RunKind.ENSEMBLE]
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
        seeds = (f"- (0 of {failed})" if failed else "-") if not st else f"{statistics.fmean(st):.1f}" + (
            f" ± {statistics.stdev(st):.1f}" if len(st) > 1 else "") + (
            f" ({len(st)} of {len(st) + failed})" if failed else f" ({len(st)})")
        lines.append(f"{kind:9s} {fam:9s} {b:>8s} {top[0].params or 0:>9,d} {c.n:>3d} "
                     f"{top[0].val:>9.1f} {top[0].test:>9.1f} {spread:>15s} {seeds:>17s}")
    return "\n".join(lines)
