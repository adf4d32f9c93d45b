"""Reports of the fixed-arm studies (Ba & Caruana, Ratusznik et al., feature data): table.{md,csv,tex},
figure.{png,svg} and one self-contained report.html (templates/study.html.j2), from the index and the preset's
arms."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from ..core import artifacts, noise
from ..studies.catalog import preset_from_record
from ..studies.fixed import Row, StudyPreset, build_tables, study_claims
from . import modern
from .common import _save_figure, _write_csv, load_reproduce, render, subplots, tex

# A study's own table and figure beside the generic ones, where it has them (report/modern.py's EXTRA).
EXTRAS = {"modern": modern.EXTRA}


def _ms(row: Row) -> str:
    if not row.tests:
        return "—"
    return f"{row.mean:.1f} ± {row.sd:.1f}" if row.sd is not None else f"{row.mean:.1f}"


def tables_markdown(p: StudyPreset, rows: list[Row], claims: bool = True) -> str:
    lines = [f"# {p.title}", "", f"Reproduces {p.paper}. Test accuracy (%): mean ± sd over seeds "
             f"{', '.join(map(str, p.seeds))} (arms) at the lr chosen on validation; where an arm chose among several "
             "rates, n leaves out the run that chose it (a selection's winner). The paper's value is for its "
             "full-size model on all of CIFAR-10, shown beside, not subtracted.", "",
             "| | model | architecture (this run) | params | teacher | loss | lr | n | test % | agree % | paper % | paper's model |",
             "|---|---|---|---:|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        agree = f"{statistics.fmean(r.agreement):.1f}" if r.agreement else ""
        n = f"{len(r.tests)}" + (f" (+{r.n_failed} failed)" if r.n_failed else "")
        params = f"{r.params:,}" if r.params else "—"
        lines.append(f"| {r.section} | {r.name} | {r.model} | {params} | {r.teacher} | {r.loss} | "
                     f"{'' if r.lr is None else f'{r.lr:g}'} | {n} | {_ms(r)} | {agree} | "
                     f"{'' if r.paper is None else f'{r.paper:.2f}'} | {r.paper_model} |")
    claims = study_claims(p, rows) if claims else []
    if claims:
        lines += ["", "## The paper's claims, checked", "", "| claim | paper | this run | verdict |",
                  "|---|---|---|---|"]
        lines += [f"| {c['claim']} | {c['paper']} | {c['ours']} | {c['verdict']} |" for c in claims]
        lines += ["", f"The judge: {noise.RULE}."]
    return "\n".join(lines)





def study_record_claims(results_dir: Path, repro: dict) -> list[dict]:
    """A study record's claims with their verdicts, computed anew from its index."""
    p = preset_from_record(repro)
    return study_claims(p, build_tables(Path(results_dir), p))


def study_record_table(results_dir: Path, repro: dict) -> str:
    """A study record's arms table (Markdown), without its claims."""
    p = preset_from_record(repro)
    text = tables_markdown(p, build_tables(Path(results_dir), p), claims=False)
    return text.split("\n", 2)[2] if text.startswith("# ") else text


def study_record_pivot(results_dir: Path, repro: dict) -> str:
    """A study record's own summary table (the modern study's pivot), or '' for a study without one."""
    p = preset_from_record(repro)
    extra = EXTRAS.get(p.study or p.name)
    return extra.markdown(build_tables(Path(results_dir), p)) if extra is not None else ""


def study_figure(p: StudyPreset, rows: list[Row]):
    rows = [r for r in rows if r.section != "teacher" or r.tests]
    fig, (ax, axp) = subplots(1, 2, figsize=(13, 0.42 * len(rows) + 1.6), sharey=True,
                              gridspec_kw={"width_ratios": [3, 2]})
    ys = list(range(len(rows)))[::-1]
    colors = {"teacher": "#555", "ensemble": "#9467bd", "arm": "#1f77b4"}
    for y, r in zip(ys, rows):
        if r.tests:
            c = "#d62728" if r.section == "arm" and r.loss == "ce" else colors[r.section]
            ax.barh(y, r.mean, xerr=r.sd or 0, color=c, alpha=0.75)
            ax.plot(r.tests, [y] * len(r.tests), "k.", ms=4)
            ax.text(max(r.tests + [r.mean + (r.sd or 0)]) + 0.5, y, f"{r.mean:.1f}", va="center", fontsize=8)
        if r.paper is not None:
            axp.barh(y, r.paper, color="#bbb")
            axp.text(r.paper, y, f" {r.paper:.1f}", va="center", fontsize=8)
    ax.set_yticks(ys, [r.name for r in rows], fontsize=8)
    lo = min([t for r in rows for t in r.tests] or [0])
    ax.set_xlim(max(0, lo - 10), 100)
    axp.set_xlim(40, 100)
    ax.set_xlabel("test accuracy (%), this run: mean ± sd, dots = seeds")
    axp.set_xlabel("test accuracy (%), the paper (full size, all of CIFAR-10)")
    ax.set_title(f"{p.name}: this run (red = trained on the labels)", fontsize=10)
    axp.set_title(p.paper, fontsize=10)
    fig.tight_layout()
    return fig


def _verdict_class(v: str) -> str:
    """Green for a claim that holds (within seed noise too), red for one that does not, grey otherwise."""
    return "v-agrees" if v == noise.HOLDS else "v-differs" if v == noise.DIFFERS else "v-not"


def _row_view(r: Row) -> dict:
    """One row of the HTML table, every number as the page prints it."""
    return {"section": r.section, "name": r.name, "model": r.model, "params": f"{r.params:,}" if r.params else "",
            "teacher": r.teacher, "loss": r.loss, "lr": "" if r.lr is None else f"{r.lr:g}",
            "n": f"{len(r.tests)}" + (f" (+{r.n_failed} failed)" if r.n_failed else ""), "test": _ms(r),
            "seeds": " ".join(f"{t:.1f}" for t in r.tests) if len(r.tests) > 1 else "",
            "agree": f"{statistics.fmean(r.agreement):.1f}" if r.agreement else "",
            "paper": "" if r.paper is None else f"{r.paper:.2f}", "paper_model": r.paper_model}


def build_study_report(results_dir, p: StudyPreset | None = None, out_dir=None) -> Path:
    """report/ for a fixed study: table.{md,csv,tex}, figure.{png,svg}, report.html (self-contained)."""
    results_dir = Path(results_dir)
    repro = load_reproduce(results_dir)
    if p is None:
        p = preset_from_record(repro)
    out = Path(out_dir) if out_dir is not None else results_dir / "report"
    rows = build_tables(results_dir, p)
    md = tables_markdown(p, rows)
    artifacts.write_text(out / "table.md", md + "\n")
    cols = list(Row("", "").as_dict())
    _write_csv(out / "table.csv", [r.as_dict() for r in rows], cols)
    artifacts.write_text(out / "table.tex", table_latex(p, rows))
    png = _save_figure(study_figure(p, rows), out / "figure")
    extra = EXTRAS.get(p.study or p.name)
    pivot, png2 = None, None
    if extra is not None:
        artifacts.write_text(out / "table2.md", extra.markdown(rows) + "\n")
        png2 = _save_figure(extra.figure(rows), out / "figure2")
        pivot = extra.pivot(rows)
    page = render("study.html.j2", preset=p, results_dir=results_dir, png=png, png2=png2, pivot=pivot, rule=noise.RULE,
                  extra=extra,
                  rows=[_row_view(r) for r in rows],
                  claims=[{**c, "cls": _verdict_class(c["verdict"])} for c in study_claims(p, rows)],
                  command=str(repro.get("command", "")),
                  config_json=json.dumps(repro.get("config", artifacts.to_jsonable(p)), indent=2),
                  data=repro.get("data"), hardware=repro.get("hardware"), stages=repro.get("stages"),
                  code_version=artifacts.code_version())
    artifacts.write_text(out / "report.html", page)
    return out / "report.html"


def table_latex(p: StudyPreset, rows: list[Row]) -> str:
    lines = [r"\begin{tabular}{llrllrr}", r"\toprule",
             r"model & architecture & params & teacher & loss & test \% & paper \% \\", r"\midrule"]
    for r in rows:
        ms = "--" if not r.tests else (f"{r.mean:.1f} $\\pm$ {r.sd:.1f}" if r.sd is not None else f"{r.mean:.1f}")
        lines.append(f"{tex(r.name)} & {tex(r.model)} & {r.params or '--'} & {tex(r.teacher)} & {tex(r.loss)} & "
                     f"{ms} & {'--' if r.paper is None else f'{r.paper:.2f}'} \\\\")
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)
