"""`mimicnet estimate --preset NAME`: time each stage of a preset would take on this device."""
from __future__ import annotations

import dataclasses

from ..core.artifacts import write_json
from ..core.errors import ConfigError
from ..models.inference import resolve_device
from ..studies import estimate as estimate_module
from ..studies.estimate import Assumptions, estimate
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
    if args.json:
        write_json(args.json, res)
    return 0


def register(sub) -> None:
    e = sub.add_parser("estimate", help="time each stage of a preset would take on this device (measured)",
                       description=estimate_module.__doc__.split("\n\n")[1])
    e.add_argument("--preset", default="paper")
    e.add_argument("--steps", type=int, default=5, help="timed steps per model")
    for f in dataclasses.fields(Assumptions):
        e.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=int, default=None,
                       help=f"assumption (default {f.default})")
    e.add_argument("--json", type=out_file, help="also write the numbers here")
    e.add_argument("--device", default=None)
    e.set_defaults(func=cmd_estimate)
