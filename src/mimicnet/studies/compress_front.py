"""compress's results: each family's summary over its seed reruns, the Pareto fronts (validation accuracy
against parameters and latency) and the pick of the student to export, by validation only."""
from __future__ import annotations

import statistics
from pathlib import Path

from optuna.trial import TrialState

from ..core import artifacts
from ..search.recovery import first_number
from ..search.run import best_trial, progress, trial_run_dir
from .compress_config import CompressConfig, pick_within



# ----------------------------------------------------------------------------------------------
# Summary

def _run_row(run_dir: Path, what: str) -> dict | None:
    p = run_dir / "results.json"
    if not p.exists():
        return None
    r = artifacts.read_json(p)
    return {"what": what, "path": str(run_dir), "seed": (artifacts.read_json(run_dir / "config.json")
                                                         .get("config", {}).get("seed")),
            "val_acc": r["val_acc"], "test_acc": r.get("test_acc"), "agreement": r.get("mimic_agreement"),
            "params": r["params"], "widths": r["widths"], "best_sha256": r.get("best_sha256")}


def _mean_sd(vals: list) -> tuple[float | None, float | None]:
    vals = [v for v in vals if v is not None]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)


def family_summary(cfg: CompressConfig, out: Path, cell: tuple) -> dict:
    """One family: its search, its best trial's run and seed reruns; the statistics over the seed reruns
    (or over the best trial's run when there are none)."""
    fam, space, _, study = cell
    row = {"family": fam, "space": space.name, "budget": space.budget, "trials": progress(study)["finished"],
           "pruned": sum(t.state == TrialState.PRUNED for t in study.get_trials(deepcopy=False)),
           "best_trial": None, "runs": [], "n_failed": 0}
    best = best_trial(study)
    if best is None:
        return row
    row["best_trial"] = number = first_number(best)  # a retried best trial keeps its original's name
    trial_dir = trial_run_dir(best, out / "studies" / space.name)
    trial = _run_row(trial_dir, f"trial {number}") if trial_dir is not None else None
    seeds = []
    for k in range(1, cfg.seeds + 1):
        run_dir = out / "seeds" / space.name / f"t{number}-s{cfg.seed + k}"
        r = _run_row(run_dir, f"seed {cfg.seed + k}")
        if r is None:
            row["n_failed"] += 1
        else:
            seeds.append(r)
    row["runs"] = ([trial] if trial else []) + seeds
    # with seed reruns asked for, only they count: a family whose every rerun diverged is not ranked by its
    # search's maximum (an optimistic number beside the others' seed means)
    stats = seeds if cfg.seeds > 0 else ([trial] if trial else [])
    row["stats_over"] = ("seed reruns" if seeds else "no seed rerun finished") if cfg.seeds > 0 \
        else "search's best trial"
    row["n"] = len(stats)
    for key, name in (("val_acc", "val"), ("test_acc", "test"), ("agreement", "agree")):
        row[f"{name}_mean"], row[f"{name}_sd"] = _mean_sd([r[key] for r in stats])
    if row["runs"]:
        row["params"], row["widths"] = row["runs"][0]["params"], row["runs"][0]["widths"]
        row["student"] = max(row["runs"], key=lambda r: r["val_acc"])  # the family's best by validation
    return row


def best_family(rows: list[dict], pick: str = "best", by_latency: bool = False) -> dict | None:
    """By validation only. "best": the highest seed mean (or search's best), ties to fewer parameters, then the
    order given. "smallest-within=D": among the rows within D points of that, the fewest parameters (the lowest
    latency when `by_latency`: a --latency run), ties to the higher validation."""
    done = [r for r in rows if r.get("val_mean") is not None]
    if not done:
        return None
    best = max(done, key=lambda r: (r["val_mean"], -r["params"], -rows.index(r)))
    within = pick_within(pick)
    if within is None:
        return best
    near = [r for r in done if r["val_mean"] >= best["val_mean"] - within / 100 - 1e-12]
    size = (lambda r: (r.get("costs") or {}).get("latency_ms", float("inf"))) if by_latency else \
        (lambda r: r["params"])
    return min(near, key=lambda r: (size(r), -r["val_mean"], rows.index(r)))


def pareto(points: list[tuple[float, float]]) -> list[bool]:
    """Which (cost, accuracy) points are on the front: no other point has cost <= and accuracy >= with one
    strictly better."""
    return [not any(c2 <= c and a2 >= a and (c2 < c or a2 > a) for c2, a2 in points) for c, a in points]


def front_rows(rows: list[dict], chosen: dict) -> list[dict]:
    """One point per trained family and budget: validation (mean) against latency and against parameters, each
    front marked, the exported one named; the content of OUT/front.csv and the report's front."""
    pts = [r for r in rows if r.get("val_mean") is not None and r.get("costs")]
    on_lat = pareto([(r["costs"]["latency_ms"], r["val_mean"]) for r in pts])
    on_par = pareto([(r["params"], r["val_mean"]) for r in pts])
    return [{"family": r["family"], "budget": r["budget"], "space": r["space"], "params": r["params"],
             "macs": r["costs"]["macs"], "latency_ms": r["costs"]["latency_ms"], "val_mean": r["val_mean"],
             "val_sd": r.get("val_sd"), "test_mean": r.get("test_mean"), "n": r.get("n"),
             "front_latency": fl, "front_params": fp, "exported": r["space"] == chosen["space"]}
            for r, fl, fp in zip(pts, on_lat, on_par)]
