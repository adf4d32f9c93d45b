"""`mimicnet estimate --preset NAME`: time each stage of a preset would take on this device."""
from __future__ import annotations

import dataclasses

from ..core.artifacts import write_json
from ..core.errors import ConfigError
from ..models.inference import resolve_device
from ..studies import estimate as estimate_module
from ..studies.estimate import WORKER_COUNTS, Assumptions, estimate, scaling, work_jobs
from ..studies.main import PRESETS
from .common import out_file


def cmd_estimate(args) -> int:
    if args.preset not in PRESETS:
        raise ConfigError(f"unknown preset {args.preset!r}; presets: {', '.join(PRESETS)}")
    a = Assumptions(**{k: v for k, v in vars(args).items() if k in Assumptions.__dataclass_fields__ and v is not None})
    res = estimate(PRESETS[args.preset], resolve_device(args.device or "auto"), a, steps=args.steps)
    wp = res["with_pruner"]
    head = f"with pruner {wp['pruner']}"
    print(f"\n{'stage':12s} {'hours (pruner ' + res['pruner'] + ')':>22s} {head:>22s}")
    for k, v in res["stages_seconds"].items():
        print(f"{k:12s} {v / 3600:22.2f} {wp['stages_seconds'][k] / 3600:22.2f}")
    print(f"{'total':12s} {res['total_seconds'] / 3600:22.2f} {wp['total_seconds'] / 3600:22.2f}   on "
          f"{res['device_name']}")
    print("assumed epochs: " + ", ".join(f"{k}={v}" for k, v in res["assumptions"].items()))
    if args.workers is not None:
        if args.workers < 1:
            raise ConfigError(f"--workers {args.workers}: must be at least 1")
        res["workers"] = _print_scaling(res, args.workers)
    if args.json:
        write_json(args.json, res)
    return 0


TARGET_HOURS = 24  # the target: the paper preset in a day on one H100


def _print_scaling(res: dict, workers: int) -> dict:
    """The makespan with the stages' dependencies for 1, 2, 4, 8, 16, 64 (and `workers`) workers, each as fast
    as this device, beside the 24-hour target for one H100."""
    sc = scaling(work_jobs(res), sorted({*WORKER_COUNTS, workers}))
    print(f"\n{'workers':>8s} {'makespan':>12s} {'speedup':>8s} {'efficiency':>10s}   (each worker as fast as "
          f"{res['device_name']}; stages' dependencies kept)")
    for r in sc["rows"]:
        print(f"{r['workers']:8d} {r['seconds'] / 3600:10.2f} h {r['speedup']:8.2f} {r['efficiency']:10.0%}")
    cp = sc["critical_path_seconds"]
    print(f"critical path {cp / 3600:.2f} h (one teacher, the ensemble, one shard of the transfer set, one student "
          f"trial, its seeds): no number of workers finishes sooner")
    bound = sc["rows"][0]["seconds"] / cp if cp else float("inf")
    if sc["stops_helping_at"] is not None:
        print(f"more workers stop helping past {sc['stops_helping_at']} (the next count saves less than 10%)")
    else:
        print(f"every count up to {sc['rows'][-1]['workers']} still saves 10% or more")
    print(f"no number of workers is more than {bound:.1f}x faster than one (the critical path)")
    reach = next((r["workers"] for r in sc["rows"] if r["seconds"] <= TARGET_HOURS * 3600), None)
    print(f"target: {TARGET_HOURS} h on one H100; here one worker takes {sc['rows'][0]['seconds'] / 3600:.1f} h"
          + (f", {reach} worker(s) like this one reach it" if reach else
             ", no worker count in the table reaches it"))
    return sc


def register(sub) -> None:
    e = sub.add_parser("estimate", help="time each stage of a preset would take on this device (measured)",
                       description=estimate_module.__doc__.split("\n\n")[1])
    e.add_argument("--preset", default="paper")
    e.add_argument("--steps", type=int, default=5, help="timed steps per model")
    for f in dataclasses.fields(Assumptions):
        e.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=int, default=None,
                       help=f"assumption (default {f.default})")
    e.add_argument("--json", type=out_file, help="also write the numbers here")
    e.add_argument("--workers", type=int, help="also the wall clock with N workers (and 1, 2, 4, 8, 16, 64): the "
                   "makespan with the stages' dependencies, from the same measurements")
    e.add_argument("--device", default=None)
    e.set_defaults(func=cmd_estimate)
