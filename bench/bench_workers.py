"""Two local workers against one: the same study, one after the other, on this machine (issue 25).

    python bench/bench_workers.py --data ARCHIVE [--preset cpu] [--set sampler=random] [--out DIR] [--name NAME]
                                  [--resume]

Run 1: `mimicnet reproduce --preset P` as one worker with all the cores' threads (OMP_NUM_THREADS = cores).
Run 2: `mimicnet reproduce --preset P --workers 2`, the threads split (cores / 2 each). Printed: wall clock per
stage (from its first unit's claim to its last unit's end, read from each run's work study) and in all, the
ratio one/two (with `--resume`, a bench stopped midway continues its runs, and the stop is left out of the
times: see busy_seconds); whether both indexes hold the same runs (kind, family, budget, folder, status: no
duplicate, none missing), and whether the tables are identical. A TPE search's points depend on the order
its trials finish in; `--set sampler=random` makes them the trial number's, for the table check. The
accuracies themselves depend on the thread count (float reductions in another order), so with 1 against 2
threads the tables can differ in their numbers while the runs are the same.
Numbers go to bench/results/workers-{cpu,gpu}.json under --name, with how far apart the two runs' accuracies are
(run by run, in points). `--markdown` prints an entry of that file as bench/RESULTS.md's table, so the table there is
generated from the record, never retyped:

    python bench/bench_workers.py --markdown cpu [--diff DIR]

(`--diff DIR` first reads the stage times, the units' own times and the run-by-run accuracies of DIR/one and
DIR/two again into the entry, for a record made by an older bench.)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sqlite3
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from optuna.trial import TrialState

from common import RESULTS, save
from mimicnet.core.index import read_index
from mimicnet.studies.work import open_work_study, progress_by_stage, stage_of


def run(args, out: Path, workers: int) -> dict:
    cmd = [sys.executable, "-m", "mimicnet.cli", "reproduce", "--preset", args.preset, "--out", str(out),
           "--device", "cpu", *(["--data", args.data] if args.data else [])]
    for s in args.set or []:
        cmd += ["--set", s]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    if workers == 1:
        env.update(OMP_NUM_THREADS=str(os.cpu_count()), MKL_NUM_THREADS=str(os.cpu_count()))
    else:
        cmd += ["--workers", str(workers)]  # the cores split between them
    resumed = (out / "reproduce.json").exists()
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    total = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    stages, busy, stopped = busy_seconds(out)
    runs = sorted((r["kind"], r["family"], r["budget"], os.path.relpath(r["path"], out), r["status"])
                  for r in read_index(out / "index.csv"))  # no run ids: students' and ensembles' hash paths
    return {"workers": workers, "seconds": round(busy, 1), "process_seconds": round(total, 1), "resumed": resumed,
            "stopped_seconds": round(stopped, 1),
            "stages": {k: round(v, 1) for k, v in stages.items()}, "unit_seconds": unit_seconds(out), "runs": runs,
            "table": (out / "results.txt").read_text()}


STOP = 120  # seconds with no unit running anywhere that count as a stop (between units a worker takes seconds)


def _stops(spans) -> list:
    """The stretches longer than STOP during which none of the spans ran: where the bench was stopped."""
    out, reach = [], None
    for a, b in sorted(spans):
        if reach is not None and (a - reach).total_seconds() > STOP:
            out.append((reach, a))
        reach = b if reach is None else max(reach, b)
    return out


def _local(utc: str) -> datetime:
    """A heartbeat as SQLite stores it (CURRENT_TIMESTAMP: UTC) in the naive local time of Optuna's trial times."""
    return datetime.fromisoformat(str(utc)).replace(tzinfo=timezone.utc).astimezone().replace(tzinfo=None)


def busy_seconds(out: Path) -> tuple[dict, float, float]:
    """Per stage, from its first unit's claim to its last unit's end, and in all, from the first claim to the last
    end, less the stops: stretches of more than STOP seconds in which no unit of the run was running, a claim whose
    worker was killed counting to its last heartbeat. A run that went through has no stop; for a run stopped and
    continued (`--resume`) the stop is left out, and the work a killed claim lost since its last checkpoint is
    counted, as it was spent. Returns (stages, total, stopped seconds)."""
    rec = json.loads((out / "reproduce.json").read_text())
    db = out.resolve() / "work.db"
    study = open_work_study(f"sqlite:///{db}", f"mimicnet-{rec['preset']}-{rec['work_id']}")
    with sqlite3.connect(db) as con:  # Optuna keeps heartbeats in this table of its RDB schema
        beats = dict(con.execute("select trial_id, heartbeat from trial_heartbeats"))
    spans: dict[str, list] = {}
    for t in study.get_trials(deepcopy=False):
        if "unit" not in t.user_attrs or t.user_attrs.get("noop") or not t.datetime_start:
            continue
        end = t.datetime_complete if t.state in (TrialState.COMPLETE, TrialState.FAIL) else None
        if t.state == TrialState.FAIL and t._trial_id in beats:
            end = min(filter(None, (end, _local(beats[t._trial_id]))))
        if end:
            spans.setdefault(stage_of(t.user_attrs["unit"], t.user_attrs.get("stage", "")), []).append(
                (t.datetime_start, end))
    every = [x for v in spans.values() for x in v]
    stops = _stops(every)

    def window(v) -> float:
        a, b = min(x for x, _ in v), max(y for _, y in v)
        less = sum(max(0.0, (min(b, d) - max(a, c)).total_seconds()) for c, d in stops)
        return (b - a).total_seconds() - less
    stages = {s: window(spans[s]) for s in (r["stage"] for r in progress_by_stage(study)) if s in spans}
    return stages, window(every), sum((d - c).total_seconds() for c, d in stops)


def unit_seconds(out: Path) -> dict:
    """Each unit's seconds from its claim to its end, for the units completed in one claim (a unit whose worker was
    killed is left out: its time is split between claims)."""
    rec = json.loads((out / "reproduce.json").read_text())
    study = open_work_study(f"sqlite:///{out.resolve() / 'work.db'}", f"mimicnet-{rec['preset']}-{rec['work_id']}")
    trials = [t for t in study.get_trials(deepcopy=False) if "unit" in t.user_attrs and not t.user_attrs.get("noop")]
    claims = Counter(t.user_attrs["unit"] for t in trials)
    return {t.user_attrs["unit"]: round((t.datetime_complete - t.datetime_start).total_seconds(), 1)
            for t in trials if t.state == TrialState.COMPLETE and claims[t.user_attrs["unit"]] == 1}


def units_not_done_once(out: Path) -> dict:
    """Units of the run's work study completed other than exactly once (none: nothing was done twice)."""
    rec = json.loads((out / "reproduce.json").read_text())
    study = open_work_study(f"sqlite:///{out.resolve() / 'work.db'}", f"mimicnet-{rec['preset']}-{rec['work_id']}")
    done = Counter(t.user_attrs["unit"] for t in study.get_trials()
                   if t.state == TrialState.COMPLETE and not t.user_attrs.get("noop"))
    return {u: done[u] for u in study.user_attrs["units"] if done[u] != 1}


def accuracy_diff(one: Path, two: Path) -> dict:
    """Run by run (matched by kind, family, budget and folder): how many ended otherwise (a trial pruned in one
    run, complete in the other: successive halving judges a trial against those that reached its rung before
    it, and two workers can change that order) and how far the accuracies of those with a result in both
    are apart, in points."""
    def rows(out):
        return {(r["kind"], r["family"], r["budget"], os.path.relpath(r["path"], out)): r
                for r in read_index(out / "index.csv")}
    a, b = rows(one), rows(two)
    common = sorted(set(a) & set(b))
    both = [k for k in common if a[k]["status"] in ("", "complete") and b[k]["status"] in ("", "complete")
            and a[k]["val_acc"] and b[k]["val_acc"]]
    out = {"runs": len(both), "same_folders": set(a) == set(b),
           "units_not_done_once": {arm: units_not_done_once(d) for arm, d in (("one", one), ("two", two))},
           "status_differs": sorted(
        f"{'/'.join(k[3:])}: {a[k]['status'] or 'run'} vs {b[k]['status'] or 'run'}"
        for k in common if a[k]["status"] != b[k]["status"])}
    for col in ("val_acc", "test_acc"):
        d = sorted(abs(float(a[k][col]) - float(b[k][col])) * 100 for k in both)
        out[col] = {"identical": sum(x == 0 for x in d), "max_points": round(d[-1], 2) if d else None,
                    "median_points": round(d[len(d) // 2], 2) if d else None}
    return out


def ratios(one: dict, two: dict) -> dict:
    """One worker's seconds over two workers', in all and per stage (a stage only one run has is left out)."""
    return {"ratio_total": round(one["seconds"] / two["seconds"], 3),
            "ratio_stages": {k: round(v / two["stages"][k], 3) for k, v in one["stages"].items()
                             if two["stages"].get(k)}}


def markdown(entry: dict) -> str:
    """An entry of workers-cpu.json as the table in bench/RESULTS.md."""
    one, two = entry["one"], entry["two"]
    lines = ["| stage | 1 worker, 2 threads (s) | 2 workers, 1 thread each (s) | ratio |", "|---|---|---|---|"]
    for k, a in one["stages"].items():
        b = two["stages"].get(k)
        lines.append(f"| {k} | {a:,.1f} | {b:,.1f} | {a / b:.2f} |" if b else f"| {k} | {a:,.1f} | - | - |")
    lines.append(f"| **total** | **{one['seconds']:,.1f}** | **{two['seconds']:,.1f}** | "
                 f"**{entry['ratio_total']:.2f}** |")
    lines.append("")
    for arm, who in (("one", "The one-worker run"), ("two", "The two-worker run")):
        if entry[arm].get("stopped_seconds"):
            lines.append(f"{who} was stopped and continued (`--resume`): {entry[arm]['stopped_seconds']:,.1f} s in "
                         "which no unit ran are left out of its times.")
    if "unit_seconds" in one and "unit_seconds" in two:  # why a stage is slower or faster: its units' own times
        a, b = one["unit_seconds"], two["unit_seconds"]
        r = sorted(b[u] / a[u] for u in set(a) & set(b) if a[u] >= 10)  # seconds-long units: start-up, not compute
        if r:
            lines.append(f"A unit's own time with two workers over one worker's, for the {len(r)} units of 10 s or "
                         f"more done in one claim in both: median {r[len(r) // 2]:.2f}, from {r[0]:.2f} to "
                         f"{r[-1]:.2f}.")
    yes = {True: "yes", False: "no"}
    lines.append(f"Runs in both indexes: {entry['n_runs']}; the same runs ending the same way (kind, family, budget, "
                 f"folder and status alike, none twice, none missing): {yes[entry['same_runs']]}; identical table: "
                 f"{yes[entry['identical_table']]}.")
    if d := entry.get("accuracy_diff"):
        units = d["units_not_done_once"]
        lines.append(f"The same run folders in both: {yes[d['same_folders']]}; units of the work study done other "
                     f"than exactly once (one worker, two): {len(units['one'])}, {len(units['two'])}. Trials that "
                     f"ended otherwise (pruned in one run, complete in the other): {len(d['status_differs'])}"
                     + (f" ({'; '.join(d['status_differs'])})." if d["status_differs"] else "."))
        for col, what in (("val_acc", "validation"), ("test_acc", "test")):
            c = d[col]
            lines.append(f"{what.capitalize()} accuracy, run by run ({d['runs']} finished runs): {c['identical']} "
                         f"identical, median difference {c['median_points']} points, largest {c['max_points']}.")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--data", help="CIFAR archive (default: the preset's download)")
    ap.add_argument("--set", action="append", help="preset overrides for both runs, e.g. sampler=random")
    ap.add_argument("--out", default=str(RESULTS.parent / "runs-workers"))
    ap.add_argument("--name", default=None, help="key in the results file (default: the preset)")
    ap.add_argument("--resume", action="store_true",
                    help="continue the runs already in --out (a stopped bench): the stop is left out of the times")
    ap.add_argument("--markdown", metavar="NAME", help="print entry NAME of the results file as a table; run nothing")
    ap.add_argument("--diff", metavar="DIR", help="with --markdown: first measure the times and accuracies of DIR/one "
                    "and DIR/two again (the entry keeps its date, command and process seconds)")
    args = ap.parse_args()
    if args.markdown:
        path = RESULTS / "workers-cpu.json"
        rec = json.loads(path.read_text())
        entry = rec["runs"][args.markdown]
        if args.diff:
            for arm in ("one", "two"):
                stages, total, stopped = busy_seconds(Path(args.diff) / arm)
                entry[arm].update(stages={k: round(v, 1) for k, v in stages.items()}, seconds=round(total, 1),
                                  stopped_seconds=round(stopped, 1), unit_seconds=unit_seconds(Path(args.diff) / arm))
            entry.update(ratios(entry["one"], entry["two"]))
            entry["accuracy_diff"] = accuracy_diff(Path(args.diff) / "one", Path(args.diff) / "two")
            path.write_text(json.dumps(rec, indent=2) + "\n")  # the record's hardware and time stay as measured
        print(markdown(entry))
        return
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.resume:
        sys.exit(f"{out}: not empty; both runs must start from nothing (give another --out, or --resume)")
    one, two = run(args, out / "one", 1), run(args, out / "two", 2)
    print(f"{'stage':10s} {'1 worker s':>11s} {'2 workers s':>12s} {'ratio':>6s}")
    for k in one["stages"]:
        a, b = one["stages"][k], two["stages"].get(k)
        print(f"{k:10s} {a:11.1f} {b if b is not None else float('nan'):12.1f} {a / b if b else float('nan'):6.2f}")
    print(f"{'total':10s} {one['seconds']:11.1f} {two['seconds']:12.1f} {one['seconds'] / two['seconds']:6.2f}")
    same_runs = one["runs"] == two["runs"] and len({r[3] for r in two["runs"]}) == len(two["runs"])
    same_table = one["table"] == two["table"]
    print(f"same runs in the index: {same_runs} ({len(one['runs'])} vs {len(two['runs'])}); identical table: "
          f"{same_table}")
    name = args.name or args.preset
    path = RESULTS / f"workers-{'cpu'}.json"
    old = json.loads(path.read_text()).get("runs", {}) if path.exists() else {}
    old[name] = {"preset": args.preset, "sets": args.set or [], "cores": os.cpu_count(),
                 "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
                 "one": {k: v for k, v in one.items() if k not in ("runs", "table")},
                 "two": {k: v for k, v in two.items() if k not in ("runs", "table")},
                 **ratios(one, two),
                 "same_runs": same_runs, "identical_table": same_table, "n_runs": len(one["runs"]),
                 "accuracy_diff": accuracy_diff(out / "one", out / "two"),
                 "command": " ".join(["python", "bench/bench_workers.py", *sys.argv[1:]])}
    print(f"-> {save('workers', {'runs': old})}")


if __name__ == "__main__":
    main()
