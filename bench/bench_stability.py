"""Do seeds of one student config agree? Student configs from the search space, each trained with several seeds,
with and without a change to training (gradient clipping, normalised logits).

    python bench/bench_stability.py --transfer RESULTS/transfer --data ARCHIVE [--cells conv4-100k,conv3-100k]
        [--configs 6] [--seeds 2] [--set grad_clip=20] [--name clip20] [--out DIR]

RESULTS is a cpu-preset run (`mimicnet reproduce --preset cpu`, its transfer/ folder). Per cell, the configs are
the first points of one scrambled Sobol sequence (seed 123) over the cell's search space that meet the budget,
so every variant sees the same configs; each is trained with seeds 0, 1, ... for the cpu preset's 20 one-cycle
epochs. Printed per config: the seeds' test accuracies, the lowest validation accuracy after epoch 2 (a dip
towards chance), and diverged or collapsed runs; per cell, the largest gap between two seeds of one config.
Numbers go to bench/results/stability-{cpu,gpu}.json under --name (one file holds every variant run so far).
The baseline is the same configs without the change: run it with --name base and no --set.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
from scipy.stats import qmc

from common import RESULTS, save
from mimicnet.core.errors import Diverged
from mimicnet.core.units import parse_budget
from mimicnet.data.splits import load_train_data
from mimicnet.distill.student import Teachers, train_run
from mimicnet.models.families import BudgetError
from mimicnet.search.spaces import apply, make_space
from mimicnet.train.config import TrainConfig


def configs(space, base: TrainConfig, n: int) -> list[tuple[dict, TrainConfig]]:
    """The first `n` points of the Sobol sequence that meet the budget, as (params, config)."""
    out = []
    for u in qmc.Sobol(len(space.params), scramble=True, seed=123).random(64):
        params = {p.name: (math.exp(math.log(p.low) + x * (math.log(p.high) - math.log(p.low))) if p.log
                           else p.low + x * (p.high - p.low)) for p, x in zip(space.params, u)}
        try:
            out.append((params, apply(space, params, base)))
        except BudgetError:
            continue
        if len(out) == n:
            break
    return out


def run_cell(cell: str, args, sets: dict, data, teachers: Teachers) -> dict:
    family, budget = cell.split("-")
    space = make_space("student", family, parse_budget(budget))
    base = TrainConfig.from_dict(dict(data=args.data, max_train=args.max_train, schedule="onecycle", max_epochs=20,
                                      batch_size=128, family=family, budget=parse_budget(budget), loss="l2-logits",
                                      transfer=args.transfer, **sets))
    rows = []
    for k, (params, cfg) in enumerate(configs(space, base, args.configs)):
        seeds = []
        for s in range(args.seeds):
            d = Path(args.out) / args.name / cell / f"c{k}-s{s}"
            try:
                r = train_run(cfg.replace(seed=s), d, data, teachers=teachers, log=lambda *_: None)
                curve = [json.loads(line)["val_acc"] for line in (d / "metrics.jsonl").read_text().splitlines()]
                seeds.append({"test": r["test_acc"], "val": r["val_acc"], "min_val_after_2": min(curve[2:])})
            except Diverged as e:
                seeds.append({"failed": e.status, "reason": str(e).split(": ", 1)[-1]})
        tests = [x["test"] for x in seeds if "test" in x]
        row = {"params": {n: round(v, 4) for n, v in params.items()}, "seeds": seeds,
               "gap": (max(tests) - min(tests)) if len(tests) > 1 else None,
               "failed": sum("failed" in x for x in seeds)}
        print(f"{cell} config {k}: " + ", ".join(f"{100 * x['test']:.1f} (min val {100 * x['min_val_after_2']:.0f})"
                                                  if "test" in x else x["failed"] for x in seeds), flush=True)
        rows.append(row)
    gaps = [r["gap"] for r in rows if r["gap"] is not None]
    return {"configs": rows, "largest_gap": max(gaps) if gaps else None,
            "configs_with_a_failed_seed": sum(r["failed"] > 0 for r in rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--transfer", required=True)
    ap.add_argument("--cells", default="conv4-100k")
    ap.add_argument("--configs", type=int, default=6)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="a TrainConfig field, e.g. grad_clip=20")
    ap.add_argument("--name", default="base")
    ap.add_argument("--max-train", dest="max_train", type=int, default=5000)
    ap.add_argument("--out", default="runs/bench-stability")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    sets = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    data = load_train_data(args.data, args.max_train)
    teachers = Teachers()
    result = {cell: run_cell(cell, args, sets, data, teachers) for cell in args.cells.split(",")}
    for cell, r in result.items():
        print(f"{args.name} {cell}: largest gap between two seeds of a config "
              f"{100 * r['largest_gap']:.1f} points; configs with a failed seed {r['configs_with_a_failed_seed']}"
              if r["largest_gap"] is not None else f"{args.name} {cell}: no config finished two seeds")
    old = RESULTS / f"stability-{'gpu' if torch.cuda.is_available() else 'cpu'}.json"
    variants = json.loads(old.read_text()).get("variants", {}) if old.exists() else {}
    variants[args.name] = {"set": sets, "configs": args.configs, "seeds": args.seeds, "cells": result}
    print(save("stability", {"variants": variants}))


if __name__ == "__main__":
    main()
