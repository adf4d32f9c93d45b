"""Multi-fidelity search vs full-fidelity search, given the same number of training epochs.

    python bench/bench_search.py --data ARCHIVE --transfer RESULTS/transfer [--family conv2 --budget 100k]
        [--full-trials 4] [--seeds 0,1,2] [--arms full,sha-tpe,sha-gp] [--cells student,baseline] [--out DIR]
        [--max-epochs E --max-train N]   (a quick check; the figures use the cpu preset's 20 epochs, 5000)
    python bench/bench_search.py --resummarise bench/results/search-cpu.json   (the summary anew from its runs)

Two cells of the cpu preset at one family and budget: a student mimicking the transfer set of a cpu-preset
run (`mimicnet reproduce --preset cpu`, its transfer/ folder) and the hard-target baseline of the same
family and budget. Per cell and search seed, the arms are

    full      N trials to the preset's max_epochs, no pruner (TPE; its first n_startup points are Sobol)
    sha-tpe   successive halving (rungs at 2, 6, 18 epochs, keep 1/3), TPE: trials are added until the
              search has spent at least N x max_epochs epochs, the full search's cost
    sha-gp    the same with GPSampler, which fits COMPLETE trials only (search/pruners.py)

With one sampler seed the arms start from the same Sobol points, so the pruned arm sees the full arm's
first trials (cut short) plus the ones its saved epochs buy. Printed per cell and arm, mean ± sd over the
seeds: best validation accuracy, test accuracy of the best-by-validation trial (read only to report),
trials (complete/pruned), epochs spent, and the epochs the pruned search needed before its best completed
trial came within the seed spread (sd over seeds) of the full search's best of the same seed, as a
fraction of the full search's epochs. Numbers go to bench/results/search-{cpu,gpu}.json. Every search is a
study in OUT, so a killed run continues where it stopped.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from common import save
from mimicnet.core import noise
from mimicnet.core.units import parse_budget
from mimicnet.data.splits import load_train_data
from mimicnet.distill.student import Teachers
from mimicnet.search.run import Strategy, best_trial, run_search
from mimicnet.search.spaces import make_space
from mimicnet.studies.main import PRESETS, train_cfg

ARMS = {"full": ("tpe", "none"), "sha-tpe": ("tpe", "sha"), "sha-gp": ("gp", "sha")}


def trial_epochs(t) -> int:
    """Epochs a trial trained: all of a finished run, up to its rung for a pruned one."""
    if "epochs" in t.user_attrs:
        return int(t.user_attrs["epochs"])
    if "pruned_at_epoch" in t.user_attrs:
        return int(t.user_attrs["pruned_at_epoch"])
    return max(t.intermediate_values, default=0)


def curve(study) -> list[tuple[int, float | None]]:
    """(epochs spent so far, best validation accuracy of a completed trial so far) after each trial."""
    out, spent, best = [], 0, None
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        if not t.state.is_finished():
            continue
        spent += trial_epochs(t)
        if t.state == TrialState.COMPLETE and t.value is not None:
            best = t.value if best is None else max(best, t.value)
        out.append((spent, best))
    return out


def search(cell: str, arm: str, seed: int, args, data, teachers) -> dict:
    sampler, pruner = ARMS[arm]
    p = PRESETS["cpu"]
    if cell == "student":
        base = train_cfg(p, p.student_base, family=args.family, budget=args.budget, loss="l2-logits",
                         transfer=str(args.transfer), seed=seed)
    else:
        base = train_cfg(p, p.baseline_base, family=args.family, budget=args.budget, seed=seed)
    base = base.replace(data=str(args.data), max_train=args.max_train or p.max_train, **({"max_epochs": args.max_epochs} if args.max_epochs else {}))
    space = make_space(cell, args.family, args.budget)
    out = args.out / cell / arm / f"s{seed}"
    budget_epochs = args.full_trials * base.optim.max_epochs
    t0 = time.perf_counter()
    trials = args.full_trials if pruner == "none" else 1
    # the preset's start-up and rungs; the arm's sampler and pruner, this run's seed
    strategy = dataclasses.replace(Strategy.of(p), sampler=sampler, seed=seed, pruner=pruner)
    while True:
        study = run_search(space, base, out, trials=trials, strategy=strategy, data=data, teachers=teachers,
                           log=lambda s: None)
        c = curve(study)
        if pruner == "none" or (c and c[-1][0] >= budget_epochs):
            break
        trials = len(c) + 1
    best = best_trial(study)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    r = {"cell": cell, "arm": arm, "seed": seed, "sampler": sampler, "pruner": pruner,
         "best_val": best.value, "test_of_best": best.user_attrs.get("test_acc"), "best_trial": best.number,
         "complete": states.count(TrialState.COMPLETE), "pruned": states.count(TrialState.PRUNED),
         "epochs": c[-1][0], "curve": c, "seconds_this_call": round(time.perf_counter() - t0, 1)}
    print(f"{cell:8s} {arm:8s} seed {seed}: best val {r['best_val']:.4f}, test {r['test_of_best']:.4f}, "
          f"{r['complete']} complete + {r['pruned']} pruned, {r['epochs']} epochs", flush=True)
    return r


def epochs_to_match(c: list, target: float) -> int | None:
    return next((e for e, b in c if b is not None and b >= target), None)


def summarise(runs: list[dict], arms: list[str]) -> list[dict]:
    rows = []
    for cell in dict.fromkeys(r["cell"] for r in runs):
        full = {r["seed"]: r for r in runs if r["cell"] == cell and r["arm"] == "full"}
        full_vals = [r["best_val"] for r in full.values()]
        spread = statistics.stdev(full_vals) if len(full_vals) > 1 else 0.0
        for arm in arms:
            rs = [r for r in runs if r["cell"] == cell and r["arm"] == arm]
            if not rs:
                continue
            row = {"cell": cell, "arm": arm, "seeds": len(rs)}
            for k in ("best_val", "test_of_best", "complete", "pruned", "epochs"):
                v = [float(r[k]) for r in rs]
                row[k] = (statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0)
            if arm != "full" and full:
                fracs = []
                for r in rs:
                    f = full.get(r["seed"])
                    e = f and epochs_to_match(r["curve"], f["best_val"] - spread)
                    fracs.append(None if not e else e / f["epochs"])
                row["epochs_to_match_full"] = fracs
                j = noise.judge_one([100 * r["best_val"] for r in rs], [100 * v for v in full_vals])
                row["vs_full_best_val"] = {"text": j.text(), "verdict": j.verdict} if j.items else None
                row["epochs_ratio"] = row["epochs"][0] / statistics.fmean(r["epochs"] for r in full.values())
            rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    def ms(x, pct=False):
        m, s = x
        return f"{100 * m:.1f} ± {100 * s:.1f}" if pct else f"{m:.1f} ± {s:.1f}"
    lines = ["| cell | arm | best val % | test of best-by-val % | complete | pruned | epochs | epochs / full's "
             "| pruned reached full's best − sd after (fraction of full's epochs, per seed) | best val vs full |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        fr = r.get("epochs_to_match_full")
        fr = ", ".join("never" if f is None else f"{f:.2f}" for f in fr) if fr is not None else ""
        vs = r.get("vs_full_best_val")
        vs = f"{vs['text']}: {vs['verdict']}" if vs else ""
        ratio = f"{r['epochs_ratio']:.2f}" if "epochs_ratio" in r else "1"
        lines.append(f"| {r['cell']} | {r['arm']} | {ms(r['best_val'], True)} | {ms(r['test_of_best'], True)} | "
                     f"{ms(r['complete'])} | {ms(r['pruned'])} | {ms(r['epochs'])} | {ratio} | {fr} | {vs} |")
    return "\n".join(lines)


def resummarise(path: Path) -> None:
    """The summary and table of a finished run's JSON made anew from its runs (e.g. under today's judge)."""
    d = json.loads(path.read_text())
    arms = list(dict.fromkeys(r["arm"] for r in d["runs"]))
    d["summary"] = summarise(d["runs"], arms)
    path.write_text(json.dumps(d, indent=2) + "\n")
    print(table(d["summary"]))


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--resummarise":
        return resummarise(Path(sys.argv[2]))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--transfer", type=Path, required=True, help="a cpu-preset run's transfer/ folder")
    ap.add_argument("--family", default="conv2")
    ap.add_argument("--budget", type=parse_budget, default=100_000)
    ap.add_argument("--full-trials", type=int, default=4)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--arms", default="full,sha-tpe,sha-gp")
    ap.add_argument("--cells", default="student,baseline")
    ap.add_argument("--gp-cells", default="student", help="cells that also run the sha-gp arm")
    ap.add_argument("--max-epochs", type=int, default=None, help="default: the cpu preset's (20)")
    ap.add_argument("--max-train", type=int, default=None, help="default: the cpu preset's (5000)")
    ap.add_argument("--out", type=Path, default=Path("bench/search-runs"))
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per search is printed below
    seeds = [int(s) for s in args.seeds.split(",")]
    arms = args.arms.split(",")
    data = load_train_data(args.data, args.max_train or PRESETS["cpu"].max_train)
    teachers = Teachers()
    runs = []
    for cell in args.cells.split(","):
        for arm in arms:
            if arm == "sha-gp" and cell not in args.gp_cells.split(","):
                continue
            for seed in seeds:
                runs.append(search(cell, arm, seed, args, data, teachers))
    rows = summarise(runs, arms)
    print(table(rows))
    path = save("search", {"args": {k: str(v) for k, v in vars(args).items()}, "runs": runs, "summary": rows})
    print(f"wrote {path}")
    print(json.dumps({"note": "test accuracy is read only to report; every choice is by validation"}))


if __name__ == "__main__":
    main()
