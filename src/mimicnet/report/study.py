"""Reports of the fixed-arm studies (Ba & Caruana, Ratusznik et al., feature data): table.{md,csv,tex},
figure.{png,svg} and one self-contained report.html, from the index and the preset's arms."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt

from ..core import artifacts
from ..studies.fixed import STUDY_PRESETS, Row, StudyPreset, build_tables, preset_from_record, study_claims
from .common import _CSS, _e, _fmt_seconds, _img, _kv_table, _save_figure, _write_csv, load_reproduce, tex

matplotlib.use("Agg")


def _ms(row: Row) -> str:
    if not row.tests:
        return "—"
    return f"{row.mean:.1f} ± {row.sd:.1f}" if row.sd is not None else f"{row.mean:.1f}"


def tables_markdown(p: StudyPreset, rows: list[Row]) -> str:
    lines = [f"# {p.title}", "", f"Reproduces {p.paper}. Test accuracy (%): mean ± sd over seeds "
             f"{', '.join(map(str, p.seeds))} (arms) at the lr chosen on validation; the paper's value is for its "
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
    claims = study_claims(p, rows)
    if claims:
        lines += ["", "## The paper's claims, checked", "", "| claim | paper | this run | verdict |",
                  "|---|---|---|---|"]
        lines += [f"| {c['claim']} | {c['paper']} | {c['ours']} | {c['verdict']} |" for c in claims]
    return "\n".join(lines)





def study_figure(p: StudyPreset, rows: list[Row]):
    rows = [r for r in rows if r.section != "teacher" or r.tests]
    fig, (ax, axp) = plt.subplots(1, 2, figsize=(13, 0.42 * len(rows) + 1.6), sharey=True,
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
    claims = study_claims(p, rows)
    h = [f"<h1>mimicnet report: {_e(p.title)}</h1>",
         f'<div class="sub">preset <b>{_e(p.name)}</b> · reproduces {_e(p.paper)} · results folder '
         f"<code>{_e(results_dir)}</code></div>"]
    if claims:
        h.append("<h2>The paper's claims, checked</h2><table><tr><th>claim</th><th>paper</th><th>this run</th>"
                 "<th>verdict</th></tr>")
        for c in claims:
            v = c["verdict"]
            cls = "v-agrees" if v in ("holds", "holds (within seed noise)") else \
                "v-differs" if v.startswith("does not hold") else "v-not"
            h.append(f"<tr><td>{_e(c['claim'])}</td><td>{_e(c['paper'])}</td><td>{_e(c['ours'])}</td>"
                     f'<td class="{cls}">{_e(c["verdict"])}</td></tr>')
        h.append("</table><p class='foot'>Means over seeds; 'within seed noise': the difference is no larger "
                 "than the larger of the two seed standard deviations.</p>")
    h.append("<h2>Figure</h2>" + _img(png, "study figure"))
    h.append("<h2>Table</h2><table><tr><th></th><th>model</th><th>architecture (this run)</th><th>params</th>"
             "<th>teacher</th><th>loss</th><th>lr</th><th>n</th><th>test %</th><th>agree %</th><th>paper %</th>"
             "<th>paper's model</th></tr>")
    for r in rows:
        agree = f"{statistics.fmean(r.agreement):.1f}" if r.agreement else ""
        seeds = (f'<div class="sub">{" ".join(f"{t:.1f}" for t in r.tests)}</div>' if len(r.tests) > 1 else "")
        h.append(f"<tr><td>{r.section}</td><td>{_e(r.name)}</td><td>{_e(r.model)}</td>"
                 f"<td class='num'>{'' if not r.params else f'{r.params:,}'}</td><td>{_e(r.teacher)}</td>"
                 f"<td>{_e(r.loss)}</td><td class='num'>{'' if r.lr is None else f'{r.lr:g}'}</td>"
                 f"<td class='num'>{len(r.tests)}{f' (+{r.n_failed} failed)' if r.n_failed else ''}</td>"
                 f"<td class='cell'><div class='best'>{_ms(r)}</div>{seeds}</td><td class='num'>{agree}</td>"
                 f"<td class='num'>{'' if r.paper is None else f'{r.paper:.2f}'}</td><td>{_e(r.paper_model)}</td></tr>")
    h.append("</table><p class='foot'>Test accuracy: mean ± sd over seeds at the lr chosen on the first seed's "
             "validation accuracy (all rates tried are in the index). Agree: argmax agreement with the teacher on "
             "the test set. The paper's numbers are for full-size models on all of CIFAR-10: beside, not "
             "subtracted. Also written: table.md, table.csv, table.tex, figure.png/svg.</p>")
    h.append("<h2>How these numbers were made</h2><h3>Command</h3><pre>"
             + _e(repro.get("command", "")) + "\n" + _e(f"mimicnet report {results_dir}") + "</pre>")
    h.append("<h3>Preset</h3><pre>" + _e(json.dumps(repro.get("config", artifacts.to_jsonable(p)), indent=2))
             + "</pre>")
    if repro.get("data"):
        h.append("<h3>Data set</h3>" + _kv_table(repro["data"]))
    if repro.get("hardware"):
        h.append("<h3>Hardware</h3>" + _kv_table(repro["hardware"]))
    if repro.get("stages"):
        h.append("<h3>Stage times</h3><table>" + "".join(
            f"<tr><td>{_e(k)}</td><td class='num'>{_fmt_seconds(v)}</td></tr>" for k, v in repro["stages"].items())
            + "</table>")
    h.append(f"<p class='sub'>code version: {_e(artifacts.code_version())}</p>")
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>mimicnet {_e(p.name)}</title>'
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(h) + "\n</body></html>\n")
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


def is_study_record(repro: dict) -> bool:
    return repro.get("study") == "fixed" or (repro.get("preset") or "").split("-smoke")[0] in STUDY_PRESETS
