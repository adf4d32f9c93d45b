"""`mimicnet reproduce --preset NAME`: a whole study, then its table and report."""
from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import optuna

from ..core.artifacts import write_text
from ..core.lock import folder_lock
from ..core.errors import ConfigError
from ..report.report import build_report
from ..report.tables import results_table
from ..report.study import tables_markdown
from ..studies.catalog import STUDY_PRESETS
from ..studies.fixed import build_tables, check_preset as check_study_preset, run_study
from ..studies.main import PRESETS, apply_overrides, check_preset, record_stage_time, reproduce
from .common import check_out_folder, in_path, out_folder


def cmd_reproduce(args) -> int:
    if args.preset not in PRESETS and args.preset not in STUDY_PRESETS:
        raise ConfigError(f"unknown preset {args.preset!r}; presets: {', '.join([*PRESETS, *STUDY_PRESETS])}")
    p = PRESETS.get(args.preset) or STUDY_PRESETS[args.preset]
    p = apply_overrides(p, list(args.set or []))
    for flag in ("data", "device", "max_train", "seed"):  # the flags override --set
        v = getattr(args, flag)
        if v is None:
            continue
        field, v = ("seeds", f"[{v}]") if flag == "seed" and args.preset in STUDY_PRESETS else (flag, v)
        try:  # a fixed study runs every arm once per seed
            p = apply_overrides(p, [f"{field}={json.dumps(v) if not isinstance(v, str) else v}"])
        except ConfigError as e:  # named as the user typed it: --max-train, not --set max_train
            raise ConfigError(str(e).replace(f"--set {field}", "--" + flag.replace("_", "-"), 1)) from None
    (check_study_preset if args.preset in STUDY_PRESETS else check_preset)(p)  # every config, before any write
    out = args.out or Path("results") / p.name
    check_out_folder(out)
    command = " ".join(shlex.quote(a) for a in ["mimicnet", *sys.argv[1:]])
    with folder_lock(out, f"mimicnet reproduce --preset {p.name}"):  # one writer per results folder
        return _reproduce(args, p, out, command)


def _reproduce(args, p, out: Path, command: str) -> int:
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the search prints its own one line per trial
    if args.preset in STUDY_PRESETS:
        run_study(p, out, command=command)
        table = tables_markdown(p, build_tables(out, p))
    else:
        reproduce(p, out, command=command)
        table = results_table(out)
    write_text(out / "results.txt", table + "\n")
    print("\n" + table)
    if p.report:
        t0 = time.perf_counter()
        print("\n== report", flush=True)
        path = build_report(out)
        record_stage_time(out, "report", time.perf_counter() - t0)
        print(f"\nreport: {path}")
    return 0


def register(sub) -> None:
    r = sub.add_parser("reproduce", help="the whole study: teachers, ensemble, transfer set, baselines, students, report",
                       description="Run a preset of the study end to end. Each stage is skipped when its artifact "
                       "is already complete, so a killed run continues when the same command is run again. "
                       "Presets: " + "; ".join([*PRESETS, *STUDY_PRESETS]) + ". "
                       "smoke: minutes on CPU; cpu: the subset on 2 cores in about an hour; paper: S2-S4 as "
                       "written, for a GPU.")
    studies = [k for k in STUDY_PRESETS if not k.endswith("-smoke")]
    r.add_argument("--preset", default="cpu", help=" | ".join(PRESETS) + " (the main study), " + " | ".join(studies)
                   + " (the other studies, each also as NAME-smoke) (default cpu)")
    r.add_argument("--data", type=in_path, help="local CIFAR archive (default: download the official one into the cache)")
    r.add_argument("--out", type=out_folder, help="results folder (default results/PRESET)")
    r.add_argument("--max-train", dest="max_train", type=int, help="cap on training images")
    r.add_argument("--seed", type=int)
    r.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="override any preset field (JSON values), e.g. --set student_trials=4")
    r.add_argument("--device", default=None, help="auto | cpu | cuda")
    r.set_defaults(func=cmd_reproduce)
