"""`mimicnet status RESULTS_DIR | --storage URL`: where a study's units of work stand (studies/work.py)."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

import optuna

from ..core.artifacts import read_json
from ..core.errors import ConfigError
from ..search.storage import from_record
from ..studies.work import eta_seconds, find_work_studies, open_work_study, progress_by_stage


def _hours(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.1f} min"


def cmd_status(args) -> int:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    names: list[str]
    if args.results_dir is not None:
        rec_path = Path(args.results_dir) / "reproduce.json"
        if not rec_path.exists():
            raise ConfigError(f"{args.results_dir}: no reproduce.json (not a results folder of mimicnet reproduce)")
        rec = read_json(rec_path)
        if "work_id" not in rec:
            raise ConfigError(f"{rec_path}: written before units of work were recorded; run reproduce again")
        recorded = rec.get("storage")
        storage = args.storage or (f"sqlite:///{Path(args.results_dir).resolve() / 'work.db'}" if not recorded
                                   else from_record(recorded))  # None: a hidden password or a relative path
        if storage is None:
            raise ConfigError(f"{args.results_dir}: its workers share {rec['storage']}; give it with --storage "
                              "(the record keeps no password, and older records a path relative to the folder "
                              "they ran in)")
        names = [f"mimicnet-{rec['preset']}-{rec['work_id']}"]
    elif args.storage:
        storage = args.storage
        names = find_work_studies(storage)
        if not names:
            raise ConfigError("--storage: holds no mimicnet study")
    else:
        raise ConfigError("give a results folder or --storage URL")
    now = datetime.now()
    for name in names:
        rows = progress_by_stage(open_work_study(storage, name))
        print(f"{name}")
        print(f"  {'stage':10s} {'units':>5s} {'done':>5s} {'waiting':>7s} {'failed':>6s}  running")
        for r in rows:
            running = "; ".join(f"{n} on {w} since {t:%H:%M:%S} ({_hours((now - t).total_seconds())})"
                                for n, w, t in r["running"] if t) or "-"
            print(f"  {r['stage']:10s} {r['units']:5d} {r['done']:5d} {r['waiting']:7d} {r['failed']:6d}  {running}")
        eta = eta_seconds(rows)
        total, done = sum(r["units"] for r in rows), sum(r["done"] for r in rows)
        print(f"  {done}/{total} units done; " + ("finished" if done == total else
              f"ETA {_hours(eta)} at the measured rates" if eta is not None else
              "ETA: not yet measured (a stage with work left has no finished unit)"))
    return 0


def register(sub) -> None:
    s = sub.add_parser("status", help="a study's units of work: done, running (worker, since), waiting, failed, ETA")
    s.add_argument("results_dir", nargs="?", type=Path, help="a results folder of mimicnet reproduce")
    s.add_argument("--storage", help="the storage its workers share (a database URL or a journal file)")
    s.set_defaults(func=cmd_status)
