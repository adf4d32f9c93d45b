"""What a search found: best trials, the top-k by validation, parameter importances, the optimisation
history plot, and OUT/report/{summary.json, trials.csv, history.png}."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import optuna
from optuna.trial import TrialState

from ..core import artifacts
from ..core.lazy import lazy_module
from .run import _fmt_params, _is_feasible, _is_finished, _retried_numbers
from .samplers import _quiet

mpl_figure = lazy_module("matplotlib.figure")  # loaded when a search draws (core/lazy.py)


# ---------------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------------
def _complete_feasible(study) -> list:
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if _is_feasible(t)]


def _mean_std(xs: list[float]) -> tuple[float | None, float | None]:
    if not xs:
        return None, None
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, sd


def _trial_row(t) -> dict:
    return {"number": t.number, "val_acc": t.value, "test_acc": t.user_attrs.get("test_acc"),
            "params": dict(t.params), "n_params": t.user_attrs.get("params"), "widths": t.user_attrs.get("widths"),
            "run_dir": t.user_attrs.get("run_dir")}


def summary(study, top: int = 5) -> dict:
    """Best trial, the top-`top` trials by validation accuracy (mean, sample std, best and last of them,
    and the test accuracy of the same trials for the report), and counts by outcome."""
    trials = study.get_trials(deepcopy=False)
    retried = _retried_numbers(trials)
    ok = sorted(_complete_feasible(study), key=lambda t: -t.value)
    n_complete = sum(t.state == TrialState.COMPLETE for t in trials)
    best = ok[:top]
    val_mean, val_std = _mean_std([t.value for t in best])
    tests = [t.user_attrs["test_acc"] for t in best if t.user_attrs.get("test_acc") is not None]
    test_mean, test_std = _mean_std(tests) if len(tests) == len(best) else (None, None)
    return {
        "study": study.study_name, "space": study.user_attrs.get("space"),
        "n_trials": len(trials), "n_finished": sum(_is_finished(t, retried) for t in trials),
        "n_complete": len(ok), "n_infeasible": n_complete - len(ok),
        "n_failed": sum(t.state == TrialState.FAIL and "fail_reason" in t.user_attrs for t in trials),
        "n_lost": sum(t.state == TrialState.FAIL and "fail_reason" not in t.user_attrs for t in trials),
        "n_pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "n_running": sum(t.state == TrialState.RUNNING for t in trials),
        "best": _trial_row(ok[0]) if ok else None,
        "top": [_trial_row(t) for t in best], "top_k": top,
        "top_val_mean": val_mean, "top_val_std": val_std,
        "top_val_best": best[0].value if best else None, "top_val_last": best[-1].value if best else None,
        "top_test_mean": test_mean, "top_test_std": test_std,
        # did the model-based phase beat the quasi-random start-up?
        "best_startup": max((t.value for t in ok if t.user_attrs.get("sampled_by") == "qmc"), default=None),
    }


def importances(study) -> dict[str, float]:
    """PED-ANOVA importances over the complete, feasible trials (needs >= 2; Optuna's default evaluator,
    no scikit-learn). Infeasible trials carry an imputed value, so they are left out."""
    ok = _complete_feasible(study)
    if len(ok) < 2:
        return {}
    tmp = optuna.create_study(direction="maximize")
    tmp.add_trials(ok)
    varying = [n for n in ok[0].params if len({t.params.get(n) for t in ok}) > 1]
    if not varying:
        return {}
    try:
        with _quiet():
            return dict(optuna.importance.get_param_importances(
                tmp, params=varying, evaluator=optuna.importance.PedAnovaImportanceEvaluator()))
    except (ValueError, RuntimeError, ZeroDivisionError):
        return {}


def plot_history(study, path) -> Path:
    """Validation accuracy of every trial and the best so far, against trial number (matplotlib, no
    plotly). Infeasible trials are open grey circles at their imputed value, failed ones x's at the bottom."""
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    fig = mpl_figure.Figure(figsize=(7, 4.2))
    ax = fig.subplots()
    ok = [t for t in trials if t.state == TrialState.COMPLETE and _is_feasible(t)]
    inf = [t for t in trials if t.state == TrialState.COMPLETE and not _is_feasible(t)]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    qmc = [t for t in ok if t.user_attrs.get("sampled_by") == "qmc"]
    rest = [t for t in ok if t.user_attrs.get("sampled_by") != "qmc"]
    if qmc:
        ax.scatter([t.number for t in qmc], [100 * t.value for t in qmc], s=18, color="C2", zorder=3,
                   label="quasi-random start-up")
    ax.scatter([t.number for t in rest], [100 * t.value for t in rest], s=18, color="C0", zorder=3,
               label="trial (validation)")
    xs, ys, best = [], [], -math.inf
    for t in trials:
        if t in ok:
            best = max(best, t.value)
        if best > -math.inf:
            xs.append(t.number)
            ys.append(100 * best)
    if xs:
        ax.step(xs, ys, where="post", color="C1", label="best so far")
    if inf:
        ax.scatter([t.number for t in inf], [100 * t.value for t in inf], s=18, facecolors="none",
                   edgecolors="0.6", label="infeasible (budget)")
    lo = min([100 * t.value for t in ok + inf] or [0.0])
    if failed:
        ax.scatter([t.number for t in failed], [lo] * len(failed), marker="x", color="C3", label="failed / lost")
    ax.set_xlabel("trial")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(f"{study.study_name}: optimisation history")
    ax.grid(alpha=0.3)
    if ok or inf or failed:
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def report(study, out_dir, top: int = 5) -> dict:
    """Write OUT/report/{summary.json, trials.csv, history.png}; returns the summary (+ importances)."""
    out = Path(out_dir) / "report"
    s = summary(study, top)
    s["importances"] = importances(study)
    s["history_png"] = str(plot_history(study, out / "history.png"))
    artifacts.write_json(out / "summary.json", s)
    buf = io.StringIO()
    names = [p for t in study.get_trials(deepcopy=False) for p in t.params]
    names = list(dict.fromkeys(names))
    w = csv.writer(buf)
    w.writerow(["number", "state", "feasible", "value", "test_acc", *names, "fail_reason", "run_dir"])
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        w.writerow([t.number, t.state.name, _is_feasible(t), "" if t.value is None else t.value,
                    t.user_attrs.get("test_acc", ""), *[t.params.get(n, "") for n in names],
                    t.user_attrs.get("fail_reason", t.user_attrs.get("infeasible", "")),
                    t.user_attrs.get("run_dir", "")])
    artifacts.write_text(out / "trials.csv", buf.getvalue())
    return s


def format_report(s: dict, show: int = 10) -> str:
    pct = lambda v: "-" if v is None else f"{100 * v:.2f}"  # noqa: E731
    lines = [f"study {s['study']} ({s['space']}): {s['n_trials']} trials: {s['n_complete']} complete, "
             f"{s['n_infeasible']} infeasible, {s['n_failed']} failed (diverged), {s['n_lost']} lost "
             f"(retried or replaced), {s['n_pruned']} pruned, {s['n_running']} running"]
    if s["best"] is None:
        return "\n".join(lines + ["no complete feasible trial yet"])
    if s.get("best_startup") is not None:
        lines.append(f"best of the quasi-random start-up {pct(s['best_startup'])}%, best overall "
                     f"{pct(s['best']['val_acc'])}%")
    if s["top_val_mean"] is not None:
        k = len(s["top"])
        line = (f"top-{k} by validation: mean {pct(s['top_val_mean'])}% ± {pct(s['top_val_std'])} "
                f"(best {pct(s['top_val_best'])}, #{k} {pct(s['top_val_last'])})")
        if s["top_test_mean"] is not None:
            line += f"; their test accuracy {pct(s['top_test_mean'])}% ± {pct(s['top_test_std'])}"
        lines.append(line)
    lines.append(f"{'#':>4s} {'val %':>6s} {'test %':>6s}  params / run folder")
    for r in s["top"][:show]:
        lines.append(f"{r['number']:>4d} {pct(r['val_acc']):>6s} {pct(r['test_acc']):>6s}  {_fmt_params(r['params'])}")
        lines.append(f"{'':18s}{r['run_dir']}")
    if s.get("importances"):
        lines.append("parameter importances (PED-ANOVA): " +
                     ", ".join(f"{k} {v:.2f}" for k, v in s["importances"].items()))
    if s.get("history_png"):
        lines.append(f"optimisation history: {s['history_png']}")
    return "\n".join(lines)

