"""`mimicnet reproduce --preset NAME`: a whole study, then its table and report."""
from __future__ import annotations

import json
from contextlib import contextmanager
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna

from ..core.artifacts import write_text
from ..core.lock import folder_lock
from ..core.errors import ConfigError, UserError
from ..report.report import build_report
from ..report.tables import results_table
from ..report.study import tables_markdown
from ..studies.catalog import STUDY_PRESETS
from ..studies.fixed import build_tables, check_preset as check_study_preset, run_study
from ..search.storage import _safe_url as safe_url
from ..studies.main import PRESETS, apply_overrides, check_preset, record_stage_time, reproduce
from ..studies.work import worker_slots
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
    # the command as run, a storage URL's password taken out (reproduce.json is a record others read)
    command = " ".join(shlex.quote(safe_url(a) if "://" in a else a) for a in ["mimicnet", *sys.argv[1:]])
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the search prints its own one line per trial
    if args.preset in STUDY_PRESETS:
        if args.storage or args.workers or args.gpus:
            raise ConfigError(f"--preset {args.preset}: a fixed study runs as one process (--storage, --workers "
                              "and --gpus are for smoke, cpu and paper)")
        with _as_it_was_if_refused(out), folder_lock(out, f"mimicnet reproduce --preset {p.name}"):
            run_study(p, out, command=command)  # (the folder lock: one writer per results folder)
            return _finish(out, tables_markdown(p, build_tables(out, p)), p.report, timed=True)
    slots = worker_slots(args.workers, args.gpus, args.workers_per_gpu, threads=os.environ.get("OMP_NUM_THREADS"))
    if slots:
        return _launch(slots, args, out)
    storage = args.storage

    ran = []

    def finish():  # the report unit: the table and the report, once, by whichever worker gets there
        ran.append(_finish(out, results_table(out), p.report, timed=False))
    with _as_it_was_if_refused(out):
        reproduce(p, out, command=command, storage=storage, finish=finish)
    if not ran:  # another worker wrote them (or an earlier run): the table, as every worker ends with it
        print("\n" + results_table(out))
    return 0


@contextmanager
def _as_it_was_if_refused(out: Path):
    """A run refused with a one-line error (bad data, another config's folder) leaves the folder as it found it:
    no record lock it made, no folder it made (one that holds anything, real work, stays)."""
    made = [d for d in (out, *out.parents) if not d.exists()]
    lock = out / "reproduce.json.lock"
    had_lock = lock.exists()
    try:
        yield
    except UserError:
        if not had_lock:
            lock.unlink(missing_ok=True)
        for d in made:  # deepest first
            try:
                d.rmdir()
            except OSError:
                break
        raise


def _launch(slots: list[dict], args, out: Path) -> int:
    """Start one `mimicnet reproduce` worker per slot (its environment: threads, GPU), wait for all; the
    status is the worst of theirs."""
    argv = [sys.executable, "-m", "mimicnet.cli", "reproduce", "--preset", args.preset, "--out", str(out)]
    for flag in ("data", "device", "max_train", "seed", "storage"):
        if getattr(args, flag) is not None:
            argv += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    for s in args.set or []:
        argv += ["--set", s]
    print(f"{len(slots)} workers: " + "; ".join(" ".join(f"{k}={v}" for k, v in s.items()) for s in slots),
          flush=True)
    procs = [subprocess.Popen(argv, env={**os.environ, **s}) for s in slots]
    try:
        return max(p.wait() for p in procs)
    except KeyboardInterrupt:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            p.wait()
        raise


def _finish(out: Path, table: str, report: bool, timed: bool) -> int:
    write_text(out / "results.txt", table + "\n")
    print("\n" + table)
    if report:
        t0 = time.perf_counter()
        if timed:
            print("\n== report", flush=True)
        path = build_report(out)
        if timed:
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
    w = r.add_argument_group("many workers", "every stage's units of work are shared through Optuna's storage: "
                             "start the same command on any number of machines, or several workers here")
    w.add_argument("--storage", help="the database all workers share: postgresql://USER:PASS@HOST/DB (a cluster), "
                   "a file path (Optuna's journal file, a shared filesystem without a database server); default "
                   "SQLite files in --out (workers of one machine)")
    w.add_argument("--workers", type=int, help="K worker processes here, the CPU threads split between them")
    w.add_argument("--gpus", help="GPU numbers, e.g. 0,1,2,3: --workers-per-gpu worker processes on each")
    w.add_argument("--workers-per-gpu", dest="workers_per_gpu", type=int, default=1,
                   help="worker processes per GPU (small students leave a GPU idle; default 1)")
    r.set_defaults(func=cmd_reproduce)
