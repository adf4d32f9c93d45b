"""The page and the table of a `mimicnet compress` run (studies.compress): per family the test accuracy (mean ±
sd over its seed reruns), the agreement with the teacher's argmax on the test split, its parameters and its
latency on this machine, beside the teacher's; OUT/report.html (templates/compress.html.j2) and a short text
table for the terminal, both from results.json alone."""
from __future__ import annotations

import json
from pathlib import Path

from ..core import artifacts
from ..core.units import budget_name
from ..models.latency import BATCHES
from .common import MISSING, _data_uri, _save_figure, _write_csv, render, subplots

FRONT_COLUMNS = ["family", "budget", "params", "macs", "latency_ms", "val_mean", "val_sd", "test_mean", "n",
                 "front_latency", "front_params", "exported"]


def _pct(mean, sd=None) -> str:
    if mean is None:
        return MISSING
    return f"{100 * mean:.1f} ± {100 * sd:.1f}" if sd is not None else f"{100 * mean:.1f}"


def _ms(v) -> str:
    return MISSING if v is None else (f"{v:.2f}" if v < 100 else f"{v:.0f}")


def _devices(result: dict) -> list[str]:
    lat = (result.get("teacher") or {}).get("latency") or {}
    return list(lat) or ["cpu"]


def _latency_cells(lat: dict | None, devices: list[str]) -> list[str]:
    lat = lat or {}
    return [_ms((lat.get(dev) or {}).get(str(b))) for dev in devices for b in BATCHES]


def table_rows(result: dict) -> tuple[list[str], list[dict]]:
    """(latency column names, one row per teacher and family, every value a finished string)."""
    devices = _devices(result)
    lat_cols = [f"{dev} b{b} ms" for dev in devices for b in BATCHES]
    t = result["teacher"]
    rows = [{"name": "teacher", "model": t["kind"], "params": f"{t['params']:,}" if t.get("params") else MISSING,
             "test": _pct(t.get("test_acc")), "val": _pct(t.get("val_acc")), "agree": "100", "n": "",
             "latency": _latency_cells(t.get("latency"), devices), "best": False, "note": ""}]
    several = len(result.get("budgets") or [result["budget"]]) > 1
    best = result.get("best_space")
    for r in result["families"]:
        n = r.get("n") or 0
        note = "" if r.get("val_mean") is not None else "no trained student (all trials infeasible or failed)"
        if r.get("n_failed"):
            note = f"{r['n_failed']} seed run(s) diverged"
        rows.append({"name": r["family"] + (f" {budget_name(r['budget'])}" if several else ""), "model": "×".join(map(str, r["widths"])) if r.get("widths") else MISSING,
                     "params": f"{r['params']:,}" if r.get("params") else MISSING,
                     "test": _pct(r.get("test_mean"), r.get("test_sd")), "val": _pct(r.get("val_mean"), r.get("val_sd")),
                     "agree": _pct(r.get("agree_mean"), r.get("agree_sd")), "n": str(n) if n else "",
                     "latency": _latency_cells(r.get("latency"), devices),
                     "best": r.get("space") == best if best else r["family"] == result.get("best_family"),
                     "note": note})
    return lat_cols, rows


def _exported(student: dict) -> list[str]:
    """The student's files, in a fixed order (student.onnx only where it was written)."""
    return [n for n in ("best.safetensors", "student.ts", "student.pt2", "student.onnx")
            if n in (student.get("files") or ("best.safetensors", "student.ts", "student.pt2"))]


def compress_table(result: dict) -> str:
    """The terminal's table: accuracies in %, mean ± sd over seed reruns; * marks the family chosen (validation)."""
    lat_cols, rows = table_rows(result)
    head = ["model", "widths", "params", "test %", "val %", "agree %", "n", *lat_cols]
    body = [[("* " if r["best"] else "") + r["name"], r["model"], r["params"], r["test"], r["val"], r["agree"], r["n"],
             *r["latency"]] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    fmt = lambda cells: "  ".join(str(c).rjust(w) if i > 1 else str(c).ljust(w)  # noqa: E731
                                  for i, (c, w) in enumerate(zip(cells, widths)))
    s = result["student"]
    budgets = ", ".join(budget_name(b) for b in result.get("budgets") or [result["budget"]])
    pick = result.get("pick") or "best"
    lines = [f"budget {budgets}: test accuracy and agreement with the teacher on the test split, mean ± sd over seed "
             f"reruns; * = exported (--pick {pick}, by validation)", fmt(head), fmt(["-" * w for w in widths]),
             *[fmt(b) for b in body],
             f"student: {s['family']} {s['widths']}, {s['params']:,} parameters, test {_pct(s.get('test_acc'))} % -> "
             f"{Path(result['out']) / 'student'} ({', '.join(_exported(s))})"]
    front = result.get("front") or []
    c = result.get("ceilings") or {}
    for key, what in (("front_latency", f"latency (ms, batch {c.get('batch')}, {c.get('device')}, "
                                        f"{c.get('threads')} thread(s))"), ("front_params", "parameters")):
        on = sorted((r for r in front if r[key]), key=lambda r: r["latency_ms" if key == "front_latency" else "params"])
        if on:
            lines.append(f"front, validation against {what}: " + "; ".join(
                f"{r['family']} {budget_name(r['budget'])} {_pct(r['val_mean'])} % at "
                + (f"{r['latency_ms']:.3f}" if key == "front_latency" else f"{r['params']:,}") for r in on))
    return "\n".join(lines)


def _run_views(result: dict) -> list[dict]:
    out = []
    several = len(result.get("budgets") or [result["budget"]]) > 1
    for r in result["families"]:
        for run in r.get("runs", []):
            out.append({"family": r["family"] + (f" {budget_name(r['budget'])}" if several else ""), "what": run["what"], "val": _pct(run["val_acc"]),
                        "test": _pct(run.get("test_acc")), "agree": _pct(run.get("agreement")),
                        "path": run["path"], "exported": run["path"] == result["student"].get("source")})
    return out


def front_figure(front: list[dict], setting: dict):
    """Validation accuracy against latency (left) and parameters (right), one point per family and budget, each
    front joined by a line, the exported student circled."""
    fig, axes = subplots(1, 2, figsize=(11, 4.2))
    for ax, cost, mark, label in ((axes[0], "latency_ms", "front_latency",
                                   f"latency, ms (batch {setting.get('batch')}, {setting.get('device')}, "
                                   f"{setting.get('threads')} thread(s))"),
                                  (axes[1], "params", "front_params", "parameters")):
        for r in front:
            ax.scatter(r[cost], 100 * r["val_mean"], color="C0" if r[mark] else "0.6", zorder=3)
            ax.annotate(f"{r['family']} {budget_name(r['budget'])}", (r[cost], 100 * r["val_mean"]), fontsize=7,
                        xytext=(4, 3), textcoords="offset points")
            if r["exported"]:
                ax.scatter(r[cost], 100 * r["val_mean"], s=160, facecolors="none", edgecolors="C3", zorder=4)
        on = sorted((r[cost], 100 * r["val_mean"]) for r in front if r[mark])
        if on:
            ax.plot(*zip(*on), color="C0", lw=1, zorder=2, drawstyle="steps-post")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("validation accuracy, %")
        ax.grid(alpha=0.3)
    axes[0].set_title("the front: accuracy against latency")
    axes[1].set_title("accuracy against parameters")
    fig.tight_layout()
    return fig


def _front_view(front: list[dict]) -> list[dict]:
    return [{"name": f"{r['family']} {budget_name(r['budget'])}", "params": f"{r['params']:,}",
             "macs": f"{r['macs']:,}", "latency": f"{r['latency_ms']:.3f}", "val": _pct(r["val_mean"], r.get("val_sd")),
             "test": _pct(r.get("test_mean")), "front": " · ".join(
                 n for n, k in (("latency", "front_latency"), ("parameters", "front_params")) if r[k]),
             "exported": r["exported"]} for r in front]


def build_compress_report(out, result: dict | None = None) -> Path:
    """OUT/report.html from results.json (or `result`), with OUT/front.csv and OUT/front.png/.svg (the Pareto
    front of validation accuracy against latency and parameters)."""
    out = Path(out)
    result = result if result is not None else artifacts.read_json(out / "results.json")
    front = result.get("front") or []
    front_png = None
    if front:
        _write_csv(out / "front.csv", front, FRONT_COLUMNS)
        fig = front_figure(front, result.get("ceilings") or {})
        front_png = _data_uri(_save_figure(fig, out / "front"))
    lat_cols, rows = table_rows(result)
    s = result["student"]
    page = render("compress.html.j2", front=_front_view(front), front_png=front_png,
                  ceilings=result.get("ceilings") or {}, budgets=", ".join(
                      budget_name(b) for b in result.get("budgets") or [result["budget"]]),
                  onnx_latency=s.get("latency_onnx"), result=result, lat_cols=lat_cols, rows=rows, runs=_run_views(result),
                  budget=budget_name(result["budget"]), student=s, teacher=result["teacher"],
                  sv={"params": f"{s['params']:,}", "val": _pct(s.get("val_acc")), "test": _pct(s.get("test_acc")),
                      "agree": _pct(s.get("teacher_agreement"))},
                  diffs={k: f"{v:.1e}" for k, v in s.get("max_abs_diff", {}).items()},
                  student_dir=str(out / "student"), fold=s.get("fold", {}),
                  config_json=json.dumps(result.get("config", {}), indent=2), data=result.get("data"),
                  hardware=result.get("hardware"), stages=result.get("stages"), command=result.get("command", ""),
                  code_version=result.get("code_version", ""))
    artifacts.write_text(out / "report.html", page)
    return out / "report.html"
