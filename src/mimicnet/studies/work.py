"""Units of work shared through Optuna's storage: many workers, one study (issue 25).

A study's stages are split into *units* (the teachers, the ensemble, the transfer set, every baseline and
student cell's search, every cell's seed reruns, the report), each with the units it needs. Every worker
(`mimicnet reproduce` on any number of processes or machines, one storage) runs the same loop:

1. lost units come back: a RUNNING claim of a dead process of this machine is failed at once, a claim without
   a heartbeat for the grace period (another machine's, RDB storages) is failed by Optuna
   (`fail_stale_trials`), and is claimed again, its run folder continued;
2. all units done: stop;
3. the first unit, in the study's order, that is runnable (what it needs is done) and not claimed is queued
   (`enqueue_trial`), then the worker claims the oldest queued unit (Optuna's `ask` pops a WAITING trial
   atomically: the storage's compare-and-set from WAITING to RUNNING) and runs it inside `study.optimize`,
   which keeps its heartbeat;
4. nothing to claim: it joins a running search cell (`shared` units: `search.run_search` already shares a
   cell's trials between workers), or waits.

Claims are trials of one Optuna study, the *work study*, in the same storage as the searches: no scheduler,
queue or server of our own. Two workers that queue the same unit at once both hold a trial for it; the
lower-numbered live claim wins and the other is marked `noop` and ends at once. One worker alone runs the
units in the study's order, exactly the order `reproduce` has always had.
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

import optuna
from optuna.trial import TrialState

from ..core.errors import ConfigError
from ..search.recovery import recover_lost
from ..search.storage import open_storage

WORK_STUDY = "mimicnet-work"


@dataclass
class Unit:
    name: str                            # e.g. teachers/t0, ensemble, transfer, student-conv2-20k, seeds/..., report
    stage: str                           # teachers | ensemble | transfer | baselines | students | seeds | report
    run: Callable[[], object]
    needs: tuple[str, ...] = ()
    join: Callable[[], object] | None = None   # a search cell: how an idle worker helps while it runs


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


_RANK = {"done": 3, "running": 2, "waiting": 1, "failed": 0}


def unit_states(trials) -> dict[str, tuple[str, object]]:
    """unit name -> (done | running | waiting | failed, the trial that says so); units never claimed are absent.
    A unit is done once one claim of it completed; running while a claim runs; waiting while queued."""
    states: dict[str, tuple[str, object]] = {}
    for t in trials:
        u = t.user_attrs.get("unit")
        if not u or t.user_attrs.get("noop"):
            continue
        s = {TrialState.COMPLETE: "done", TrialState.RUNNING: "running", TrialState.WAITING: "waiting",
             TrialState.FAIL: "failed"}.get(t.state)
        if s is None:
            continue
        old = states.get(u)
        if old is None or _RANK[s] > _RANK[old[0]] or (s == old[0] == "failed"):
            states[u] = (s, t)
    return states


def open_work_study(storage: str, name: str = WORK_STUDY, heartbeat_interval: int | None = None,
                    grace_period: int | None = None):
    kw = {k: v for k, v in (("heartbeat_interval", heartbeat_interval), ("grace_period", grace_period)) if v}
    st = open_storage(storage, **kw)
    return optuna.create_study(study_name=name, storage=st, direction="maximize", load_if_exists=True)


class Worker:
    """One worker's loop over a plan of units (see the module docstring)."""

    def __init__(self, units: list[Unit], study, log: Callable[[str], None] = print, poll: float = 1.0,
                 on_unit: Callable[[Unit, float], None] | None = None):
        self.units, self.by_name, self.study, self.log = units, {u.name: u for u in units}, study, log
        self.poll, self.on_unit, self.me = poll, on_unit, worker_id()
        self.stage, self.joined = None, set()
        study.set_user_attr("units", [u.name for u in units])  # the latest plan (mimicnet status reads it)

    def run(self) -> None:
        if self.all_done(unit_states(self.study.get_trials(deepcopy=False))):
            # a finished study run again: every unit once more, unclaimed, as reproduce always did (each finds its
            # artifact finished and checks it: a damaged file is found; the table and report are rebuilt)
            for u in self.units:
                self.timed(u)
            return
        waiting_logged = False
        while True:
            recover_lost(self.study)
            states = unit_states(self.study.get_trials(deepcopy=False))
            if self.all_done(states):
                return
            nxt = self.next_runnable(states)
            if nxt is not None:
                self.study.enqueue_trial({}, user_attrs={"unit": nxt.name, "stage": nxt.stage}, skip_if_exists=False)
            if nxt is not None or any(s == "waiting" for s, _ in states.values()):
                self.study.optimize(self.claimed, n_trials=1, gc_after_trial=False)
                waiting_logged = False
                continue
            joinable = [u for u in self.units if u.join and states.get(u.name, ("",))[0] == "running"
                        and states[u.name][1].user_attrs.get("worker") != self.me and u.name not in self.joined]
            if joinable:
                self.joined.add(joinable[0].name)  # once: it returns when nothing is left to start there
                self.log(f"-- helping with {joinable[0].name} (its trials are shared)")
                self.timed(joinable[0], joinable[0].join)
                continue
            if not waiting_logged:
                running = [f"{n} ({t.user_attrs.get('worker', '?')})" for n, (s, t) in states.items() if s == "running"]
                self.log(f"waiting for {', '.join(running) or 'other workers'}")
                waiting_logged = True
            time.sleep(self.poll)

    def all_done(self, states) -> bool:
        return all(states.get(u.name, ("",))[0] == "done" for u in self.units)

    def next_runnable(self, states) -> Unit | None:
        for u in self.units:
            if u.name in states and states[u.name][0] != "failed":
                continue
            if all(states.get(d, ("",))[0] == "done" for d in u.needs):
                return u
        return None

    def claimed(self, trial) -> float:
        """The objective of a work trial: run the unit it claims (or nothing, if another claim holds it)."""
        trial.set_user_attr("worker", self.me)  # first: a kill from here on is seen as this process's
        name = trial.user_attrs.get("unit")
        if name not in self.by_name or self.taken_by_another(trial, name):  # (or a unit of an older plan)
            trial.set_user_attr("noop", True)
            return 0.0
        self.timed(self.by_name[name])
        return 1.0

    def taken_by_another(self, trial, name: str) -> bool:
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
            if t.number == trial.number or t.user_attrs.get("unit") != name or t.user_attrs.get("noop"):
                continue
            if t.state == TrialState.COMPLETE or t.number < trial.number:
                return True
        return False

    def timed(self, unit: Unit, fn: Callable[[], object] | None = None) -> None:
        if unit.stage != self.stage:
            print(f"\n== {unit.stage}", flush=True)
            self.stage = unit.stage
        t0 = time.perf_counter()
        (fn or unit.run)()
        if self.on_unit is not None:
            self.on_unit(unit, time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------------
# Progress (`mimicnet status`)
# ---------------------------------------------------------------------------------------------------
def stage_of(unit: str, stage: str = "") -> str:
    """The stage a unit belongs to: the one its trial recorded, else its name's first part (a unit not yet
    claimed, or one claimed by an older mimicnet that did not record it)."""
    return stage or unit.split("/")[0]


def progress_by_stage(study, now: datetime | None = None) -> list[dict]:
    """Per stage: units done / running (worker, since) / waiting / failed, in the plan's order, with the
    seconds its finished units took (for a rate) and its wall clock so far."""
    names = list(study.user_attrs.get("units") or [])
    trials = study.get_trials(deepcopy=False)
    states = unit_states(trials)
    recorded = {t.user_attrs["unit"]: t.user_attrs.get("stage", "") for t in trials if "unit" in t.user_attrs}
    rows: dict[str, dict] = {}
    for n in names:
        stage = stage_of(n, recorded.get(n, ""))
        r = rows.setdefault(stage, {"stage": stage, "units": 0, "done": 0, "running": [], "waiting": 0,
                                    "failed": 0, "seconds_done": 0.0, "start": None, "end": None})
        r["units"] += 1
        s, t = states.get(n, ("waiting", None))
        if s == "done":
            r["done"] += 1
            if t.datetime_start and t.datetime_complete:
                r["seconds_done"] += (t.datetime_complete - t.datetime_start).total_seconds()
                r["end"] = max(filter(None, (r["end"], t.datetime_complete)))
        elif s == "running":
            r["running"].append((n, t.user_attrs.get("worker", "?"), t.datetime_start))
        elif s == "failed":
            r["failed"] += 1
        else:
            r["waiting"] += 1
        if t is not None and t.datetime_start:
            r["start"] = min(filter(None, (r["start"], t.datetime_start)))
    return list(rows.values())


# ---------------------------------------------------------------------------------------------------
# Local workers (`--workers K`, `--gpus 0,1 --workers-per-gpu K`)
# ---------------------------------------------------------------------------------------------------
def worker_slots(workers: int | None, gpus: str | None, per_gpu: int = 1, cpus: int | None = None,
                 threads: str | None = None) -> list[dict]:
    """The environment of each local worker process; [] for one worker in this process. On CPU, K workers
    share the cores (cpus // K threads each, at least 1); with GPUs, `per_gpu` workers on each listed GPU
    (CUDA_VISIBLE_DEVICES, so each sees its GPU as cuda:0), the cores split over all of them. `threads`: each
    worker's threads as the user set them (OMP_NUM_THREADS), instead of the split."""
    cpus = cpus or os.cpu_count() or 1
    if gpus:
        ids = [g.strip() for g in str(gpus).split(",")]
        if not all(g.isdigit() for g in ids) or len(set(ids)) != len(ids):
            raise ConfigError(f"--gpus {gpus}: expected distinct GPU numbers, e.g. 0,1,2,3")
        if per_gpu < 1:
            raise ConfigError(f"--workers-per-gpu {per_gpu}: must be at least 1")
        slots = [{"CUDA_VISIBLE_DEVICES": g} for g in ids for _ in range(per_gpu)]
    elif workers is None or workers == 1:
        return []
    elif workers < 1:
        raise ConfigError(f"--workers {workers}: must be at least 1")
    else:
        slots = [{} for _ in range(workers)]
    threads = threads or str(max(1, cpus // len(slots)))
    return [{**s, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "MIMICNET_WORKER": str(i)}
            for i, s in enumerate(slots)]


def eta_seconds(rows: list[dict]) -> float | None:
    """Seconds left at the measured rates: each stage's units not done times its mean seconds per finished
    unit, over the workers now holding units (at least 1); None while a stage with work left has no
    finished unit to measure."""
    left = 0.0
    for r in rows:
        todo = r["units"] - r["done"]
        if todo == 0:
            continue
        if r["done"] == 0:
            return None
        left += todo * r["seconds_done"] / r["done"]
    workers = {w for r in rows for _, w, _ in r["running"]}
    return left / max(1, len(workers))


def find_work_studies(storage: str) -> list[str]:
    """The names of the work studies a storage holds (one per results folder)."""
    st = open_storage(storage)
    return sorted(s.study_name for s in optuna.study.get_all_study_summaries(st, include_best_trial=False)
                  if s.study_name.startswith("mimicnet-") and "/" not in s.study_name)
