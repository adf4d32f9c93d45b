"""Lost trials and their retries. A trial is lost when its worker died: Optuna's heartbeat fails it after the
grace period (storages with heartbeats), and a dead process of this machine's trial, or a claim that never
named its worker, is failed here at once; each comes back as a queued retry with the same parameters and run
folder. A retry takes a trial number of its own; first_number names it by the trial it runs again."""
from __future__ import annotations

import os
import socket
from datetime import datetime

import optuna
from optuna.trial import FrozenTrial, TrialState

from .samplers import _quiet


def recover_lost(study) -> None:
    """Lost trials come back as queued retries: this machine's dead process's at once, another machine's
    once its heartbeat is older than the grace period (storages with heartbeats)."""
    with _quiet():
        _fail_dead_local_trials(study)            # this machine's dead process: at once
        optuna.storages.fail_stale_trials(study)  # a dead worker's trial -> FAIL + queued retry


# Seconds a RUNNING trial may go without naming its worker before it is taken as lost (_lost): a live worker
# names itself milliseconds after its claim; the margin covers clocks of machines that share one storage.
UNCLAIMED_GRACE = 30


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _lost(t, host: str, me: int, now: datetime) -> bool:
    """Is this RUNNING trial lost: its worker (host:pid) a process of this machine that no longer exists, or
    no worker named at all UNCLAIMED_GRACE seconds after it started? A live worker names itself in the first
    milliseconds of a claim (before anything else), so only a kill between Optuna's claim and that write
    leaves a trial that nobody would otherwise ever recover in a storage without heartbeats."""
    worker = t.user_attrs.get("worker")
    if worker is None:
        return t.datetime_start is not None and (now - t.datetime_start).total_seconds() > UNCLAIMED_GRACE
    h, _, pid = str(worker).rpartition(":")
    return h == host and pid.isdigit() and int(pid) != me and not _alive(int(pid))


def _fail_dead_local_trials(study) -> None:
    """A lost RUNNING trial (_lost) is failed and retried now, as the heartbeat check would after its grace
    period (a killed local `reproduce` must not make every rerun wait a minute; a storage without heartbeats
    would wait for ever)."""
    host, me, now = socket.gethostname(), os.getpid(), datetime.now()
    storage = study._storage
    # a storage without heartbeats (Optuna's journal file) has no callback of its own: the same retry
    callback = storage.get_heartbeat_stale_trial_callback() if hasattr(storage, "get_heartbeat_stale_trial_callback") \
        else optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=None)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _lost(t, host, me, now):
            continue
        try:
            if not storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got there first
        if callback is not None:
            callback(study, storage.get_trial(t._trial_id))


def first_number(trial) -> int:
    """The number of the trial a retry runs again (its run folder's, trials/N), however often it was retried;
    a trial's own number otherwise. Index rows, seed folders and ties name a trial by it, so a worker killed
    mid-trial leaves the names (and the choice among equal trials) of an uninterrupted run."""
    if "retry_of" in trial.user_attrs:
        return int(trial.user_attrs["retry_of"])
    if not isinstance(trial, FrozenTrial):  # a running trial keeps its system attrs in the storage only
        trial = trial.storage.get_trial(trial._trial_id)
    history = trial.system_attrs.get("retry_history")
    return int(history[0]) if history else trial.number
