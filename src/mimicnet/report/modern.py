"""The `modern` study's own table and figure (studies/modern.py): students by depth and by how they were taught,
and Ba & Caruana's teacher → student curve. Added to the fixed-study report by report/study.py."""
from __future__ import annotations

from ..core.units import budget_name
from ..studies import modern as M
from ..studies.fixed import Row
from .common import StudyExtra, subplots

_COLORS = {M.HARD: "#d62728", (M.S2, "fixed"): "#1f77b4", (M.MODERN, "fixed"): "#2ca02c",
           (M.S2, M.ONLINE): "#17becf", (M.MODERN, M.ONLINE): "#98df8a"}


def _ms(r: Row | None) -> str:
    if r is None or not r.tests:
        return "—"
    return f"{r.mean:.1f} ± {r.sd:.1f}" if r.sd is not None else f"{r.mean:.1f}"


def pivot(rows: list[Row]) -> tuple[list[str], list[list[str]]]:
    """(header, rows): one row per student cell, one column per way of training, test % mean ± sd over seeds."""
    by = {r.name: r for r in rows}
    sources = M.SOURCES + M.PLAIN_SOURCES
    header = ["student", "params"] + [M.source_name(s) for s in sources]
    out = []
    for b in M.BUDGETS:
        for f in M.FAMILIES:
            first = by.get(M.arm_name(f, b, M.HARD))
            params = f"{first.params:,}" if first is not None and first.params else ""
            out.append([M.cell_name(f, b), params] + [_ms(by.get(M.arm_name(f, b, s))) for s in sources])
    return header, out


def curve_points(rows: list[Row]) -> list[tuple[str, float, Row]]:
    """(teacher, its test %, the curve cell's student row) for every teacher the curve cell mimicked from a
    fixed transfer set, weakest teacher first."""
    by = {r.name: r for r in rows}
    t = M.teacher_rows(rows)
    pts = []
    for n in [M.curve_teacher(e) for e in M.CURVE_EPOCHS] + [M.S2, M.MODERN]:
        r = by.get(M.arm_name(*M.CURVE_CELL, (n, "fixed")))
        if n in t and r is not None and r.tests:
            pts.append((n, t[n], r))
    return sorted(pts, key=lambda p: p[1])


def pivot_markdown(rows: list[Row]) -> str:
    header, body = pivot(rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    pts = curve_points(rows)
    if pts:
        lines += ["", f"Teacher → student ({M.cell_name(*M.CURVE_CELL)}, fixed transfer set):", "",
                  "| teacher | teacher test % | student test % |", "|---|---:|---:|"]
        lines += [f"| {n} | {acc:.1f} | {_ms(r)} |" for n, acc, r in pts]
    return "\n".join(lines)


def figure(rows: list[Row]):
    """Left, middle: test accuracy against conv layers at each budget, one line per way of training (mean ± sd
    over seeds), the teachers as dashed lines. Right: the curve cell's accuracy against its teacher's."""
    by = {r.name: r for r in rows}
    t = M.teacher_rows(rows)
    fig, axes = subplots(1, 3, figsize=(16, 4.8))
    for ax, b in zip(axes[:2], M.BUDGETS):
        for s in M.SOURCES:
            xs, ys, es = [], [], []
            for depth, f in enumerate(M.FAMILIES):
                r = by.get(M.arm_name(f, b, s))
                if r is not None and r.tests:
                    xs.append(depth)
                    ys.append(r.mean)
                    es.append(r.sd or 0.0)
            if xs:
                ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, color=_COLORS[s], label=M.source_name(s))
        for name, style in ((M.S2, ":"), (M.MODERN, "--")):
            if name in t:
                ax.axhline(t[name], color="#555", ls=style, lw=1)
                ax.text(4.1, t[name], f"{name} {t[name]:.1f}", fontsize=7, va="bottom", ha="right")
        ax.set_xticks(range(len(M.FAMILIES)), [str(i) for i in range(len(M.FAMILIES))])
        ax.set_xlabel("conv layers of the student")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"students at {budget_name(b)} parameters", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    ax = axes[2]
    pts = curve_points(rows)
    if pts:
        ax.errorbar([p[1] for p in pts], [p[2].mean for p in pts], yerr=[p[2].sd or 0.0 for p in pts], marker="o",
                    capsize=3, color="#2ca02c")
        for n, acc, r in pts:
            ax.annotate(n, (acc, r.mean), textcoords="offset points", xytext=(4, -10), fontsize=7)
        lo = min(min(p[1] for p in pts), min(p[2].mean for p in pts)) - 3
        hi = max(max(p[1] for p in pts), max(p[2].mean for p in pts)) + 3
        ax.plot([lo, hi], [lo, hi], color="#bbb", lw=1, ls=":")  # student = teacher
    ax.set_xlabel("teacher test accuracy (%)")
    ax.set_ylabel("student test accuracy (%)")
    ax.set_title(f"teacher → student ({M.cell_name(*M.CURVE_CELL)}, fixed set; Ba & Caruana Fig. 3)", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


EXTRA = StudyExtra(pivot, pivot_markdown, figure, heading="Students by depth and by teacher",
                   caption="Left, middle: test accuracy (mean ± sd over seeds) against the student's conv layers, "
                   "one line per way of training; dashed: the teachers. Right: one student cell mimicking teachers "
                   "of several accuracies (Ba & Caruana's Fig. 3); dotted: student = teacher.")
