"""Figure 1 (accuracy against parameters, this run beside the paper) and the teacher → student figure."""
from __future__ import annotations

import statistics
import textwrap
from collections import defaultdict

from ..core.index import RunKind
from ..core.lazy import lazy_module
from ..studies import published as P
from .cells import CUT, Cell, Run, _family_key, _mean, _std, runs_by_name
from .claims import compression_gaps, convolutional_gaps
from .common import mpl_figure
from .tables import T2, family_label

ticker = lazy_module("matplotlib.ticker")  # loaded when a report draws (core/lazy.py)

FAMILY_COLORS = {"conv0": "#7f7f7f", "conv1": "#1f77b4", "conv2": "#2ca02c", "conv3": "#ff7f0e",
                 "conv4": "#d62728"}


DODGE = 1.045   # Figure 1: the x factor between neighbouring families at one budget


_EXTRA_COLORS = ("#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")


def _family_color(f: str, extra: dict) -> str:
    if f in FAMILY_COLORS:
        return FAMILY_COLORS[f]
    return extra.setdefault(f, _EXTRA_COLORS[len(extra) % len(_EXTRA_COLORS)])


def _param_formatter():
    return ticker.FuncFormatter(lambda x, _pos: P.budget_label(x))


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
    if c.top_test and not c.seed_failures:  # every seed rerun failed: no point for a config that does not train
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
        a.xaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 3.16)))
        a.xaxis.set_major_formatter(_param_formatter())
        a.xaxis.set_minor_formatter(ticker.NullFormatter())
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
    fig = mpl_figure.Figure(figsize=(9, 4), layout="constrained")
    ax, axp = fig.subplots(1, 2)
    extra: dict = {}   # colours of families beyond conv0-4, shared so both panels agree
    ys = _figure1_this_run(ax, t, baselines, teacher_ref, extra)
    _figure1_paper(axp, extra)
    _figure1_axes(ax, axp, ys)
    fig.suptitle("Figure 1: accuracy vs parameters, students by number of conv layers", fontsize=10)
    return fig


def teacher_student_points(runs: list[Run], t: T2) -> dict[tuple[str, int | None], list[dict]]:
    """Per student cell (family, budget) with >= 2 teachers of known accuracy: one point per teacher."""
    find = runs_by_name(runs, keep=lambda r: r.test is not None)
    by = defaultdict(lambda: defaultdict(list))
    for r in runs:
        if r.kind == RunKind.STUDENT and r.finished and r.test is not None:
            by[(r.family, r.budget)][r.teacher].append(r)
    out = {}
    for key, groups in by.items():
        pts = []
        for teacher, rs in groups.items():
            ta = [r.teacher_test for r in rs if r.teacher_test is not None]
            t_run = find(teacher)
            tacc = statistics.median(ta) if ta else (t_run.test if t_run is not None else None)
            if tacc is None:
                continue
            c = Cell("student", key[0], key[1], runs=rs)
            is_ens = t_run is not None and t_run.kind == RunKind.ENSEMBLE
            pts.append({"teacher": teacher, "teacher_acc": tacc, "ensemble": is_ens, "n": c.n,
                        "mean": _mean(c.top_test), "lo": min(c.top_test), "hi": max(c.top_test),
                        "best": c.best_test})
        if len(pts) >= 2:
            out[key] = sorted(pts, key=lambda p: p["teacher_acc"])
    return dict(sorted(out.items(), key=lambda kv: (_family_key(kv[0][0]), kv[0][1] or 0)))


def teacher_student_figure(points):
    fig = mpl_figure.Figure(figsize=(9, 4), layout="constrained")
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
        axp.plot([s["teacher_test_acc"]], [s["test_acc"]], marker="s" if s["teacher_kind"] == RunKind.ENSEMBLE else "o",
                 ms=6, ls="none", color="#1f77b4", mfc="white" if s["teacher_kind"] == RunKind.ENSEMBLE else "#1f77b4")
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
