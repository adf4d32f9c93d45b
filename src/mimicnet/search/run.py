"""Running a search (SPEC S2, S4): Bayesian hyperparameter search (SPEC S2, S4): Optuna with a Gaussian-process sampler.

A *space* is data: one ``Space`` per family and budget, each a tuple of ``Param`` ranges plus the config
fields it fixes. ``apply(space, params, base)`` turns one sampled point into a ``TrainConfig``; every trial is
an ordinary run folder (``OUT/trials/<number>``) made by ``train.fit``, linked from the trial's
``run_dir`` user attribute. The objective is that run's **validation** accuracy (never test).

    mimicnet search show student-conv2-1M
    mimicnet search run student-conv2-1M --trials 30 --data ARCHIVE --transfer DIR --loss l2-logits
    mimicnet search report --out runs/search/student-conv2-1M

Samplers. ``gp`` (default): scrambled-Sobol (QMC) points until ``n_startup`` trials are complete, then
``GPSampler`` (logEI; constrained logEI once a budget constraint is recorded). Optuna's GPSampler does take
an ``independent_sampler``, but it only calls that sampler's ``sample_independent``, which for QMCSampler
falls back to plain random sampling; so the start-up phase is a small wrapper that asks QMCSampler for
*relative* (joint) points over the space, which is known up front. QMC indices come from a counter in the
study, so concurrent workers take different points. ``tpe``: the same start-up, then a multivariate TPE
(constant liar, so concurrent workers spread out). ``random``: independent uniform draws seeded by
(seed, trial number, parameter), so two workers with one seed never draw the same point.

Outcomes of a trial:
- complete: value = validation accuracy of the finished run.
- infeasible: width constants whose fixed layers alone exceed the parameter budget (``BudgetError``). No run
  is made. The trial is COMPLETE with ``trial.set_constraint("budget", v)``, ``v > 0`` the relative amount
  by which the smallest model these constants allow overshoots the budget (feasible trials record ``v <= 0``,
  the slack), so GPSampler fits a GP to the constraint and multiplies EI by P(feasible), and TPE ranks the
  trial below every feasible one. GPSampler still fits its objective GP to *all* complete trials, so the
  value we return for an infeasible one is the worst feasible value seen so far (chance, 0.1, before any):
  inside the observed range, so it neither becomes the incumbent (constrained EI's threshold is the best
  *feasible* value) nor stretches the standardisation the way 0 or -inf would. Pruning instead would hide
  the trial from the GP entirely, and it would keep proposing the same infeasible corner.
- diverged: ``train.Diverged`` (NaN or exploding loss) is a result, not a crash: the trial is FAILED with a
  ``fail_reason`` user attribute and an index row with status=failed; the study goes on.
- pruned: with a pruner (search/pruners.py) every trial reports its validation accuracy per epoch; a trial
  the pruner stops is PRUNED, with an index row status=pruned (the epochs it ran, its last validation
  accuracy). Its run folder keeps its last checkpoint, so a later, larger search or `mimicnet train` on its
  config.json can continue it.
- lost: a worker killed mid-trial. Its heartbeat stops; after the grace period any worker marks the trial
  FAILED and ``RetryHeartbeatStaleTrialCallback`` queues a retry with the same parameters and the same run
  folder, so the retry resumes the run from its last checkpoint -- however often it is killed. A worker
  that finds a RUNNING trial of a dead process of its own machine (host:pid in the trial) fails and retries
  it at once instead of waiting out the grace period. Ctrl-C queues such a retry at once.

``run_search`` returns when the study holds ``trials`` finished trials (complete, infeasible, diverged or
pruned; lost trials do not count, their retries do), counted before every trial so a finished study runs
nothing more and several workers stop at N together. A worker with nothing left to start waits while other
workers' trials run, so a study whose other workers die is still finished by the survivors (their trials go
stale and come back as retries).

Many workers: run the same command on every GPU or machine with ``--storage postgresql://...``. The default
storage is a SQLite file ``OUT/study.db`` (fine for one machine).
"""
from __future__ import annotations

import json
import logging
import math
import os
import socket
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

import optuna
from optuna.trial import TrialState

from ..core import artifacts
from ..core.errors import Diverged
from ..data.augment import IMAGE_SHAPE
from ..data.splits import TrainData, load_train_data
from ..distill.student import Teachers, index_failed, train_run
from ..models.families import BudgetError
from ..models.inference import resolve_device
from ..train.config import EXECUTION_FIELDS, TrainConfig
from ..train.run import RunInfo, same_run
from ..train.schedules import warmup_epochs
from .pruners import make_pruner
from .recovery import first_number, recover_lost
from .samplers import make_sampler
from .spaces import SearchError, Space, apply, budget_violation, get_space
from .storage import GRACE_PERIOD, HEARTBEAT_INTERVAL, _safe_url, default_storage, open_storage

CHANCE = 0.1                 # value of an infeasible trial before any feasible one: chance on 10 classes
                             # (a search that knows its data uses 1/num_classes)


# ---------------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------------
def _retried_numbers(trials) -> set[int]:
    return {n for t in trials for n in t.system_attrs.get("retry_history", ())}


def _is_finished(t, retried: set[int]) -> bool:
    """A trial that counts towards N: a result (complete, infeasible, pruned, or diverged). A FAIL without
    a fail_reason is a lost trial (killed worker, Ctrl-C, crash): it does not count, its retry does."""
    if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return t.state == TrialState.FAIL and "fail_reason" in t.user_attrs and t.number not in retried


def progress(study) -> dict:
    """Counts: finished (towards N), running, waiting (queued retries)."""
    trials = study.get_trials(deepcopy=False)
    retried = _retried_numbers(trials)
    return {"finished": sum(_is_finished(t, retried) for t in trials),
            "running": sum(t.state == TrialState.RUNNING for t in trials),
            "waiting": sum(t.state == TrialState.WAITING for t in trials)}


def _is_feasible(t) -> bool:
    return all(v <= 0 for v in t.constraints.values())


def _worst_feasible(study, chance: float = CHANCE) -> float:
    vals = [t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if _is_feasible(t)]
    return min(vals) if vals else chance


def _fmt_params(params: dict) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in params.items())




def _other_run(run_dir: Path, cfg: TrainConfig) -> bool:
    """Does run_dir hold a run (config.json) of a config other than cfg? By the path-free config that
    `train` resumes by (train.run.same_run): the data given as a relative or an absolute path, or through a
    symlink, is the same run (what the paths hold is checked by content when the run resumes)."""
    try:
        old = artifacts.read_json(run_dir / "config.json")
    except (OSError, ValueError):
        return False
    return isinstance(old, dict) and not same_run(old, cfg)


def _base_record(base: TrainConfig, space: Space) -> str:
    """The base config as the study remembers it: without the fields the space sets, the execution options
    (device, amp, ...) and paths: workers on different machines may use different GPUs and mount the data
    elsewhere (the data's sha256 is in every run's results)."""
    d = base.to_dict()
    execution = set(EXECUTION_FIELDS)
    for k in space.controlled_fields() | execution | {"data", "transfer"}:
        d.pop(k, None)
    return json.dumps(d, sort_keys=True)


def _config_diff(old: dict, new: dict) -> list[str]:
    """Fields whose values differ; a field one side lacks counts as its TrainConfig default, so a field added
    to TrainConfig later (at its default) does not orphan the studies started before it."""
    defaults = TrainConfig().to_dict()
    return sorted(k for k in old.keys() | new.keys() if old.get(k, defaults.get(k)) != new.get(k, defaults.get(k)))


def create_or_load(space: Space, base: TrainConfig, storage: str, study_name: str, sampler, storage_kw: dict,
                   pruner=None):
    """The study (created by the first worker), checked to be a search of this space and base config."""
    st = open_storage(storage, **storage_kw)
    study = optuna.create_study(study_name=study_name, storage=st, sampler=sampler, pruner=pruner,
                                direction="maximize", load_if_exists=True)
    record = _base_record(base, space)
    attrs = study.user_attrs
    for _ in range(100):  # another worker is writing them (base_config first, space last): wait for it
        if "space" in attrs or "base_config" not in attrs:
            break
        time.sleep(0.05)
        attrs = study.user_attrs
    if "space" not in attrs:  # the first worker (or one taking over from a creator killed between the writes)
        study.set_user_attr("base_config", record)
        study.set_user_attr("space", space.name)  # last: whoever sees it sees the base config too
        attrs = study.user_attrs
    if attrs.get("space") != space.name:
        raise SearchError(f"study {study_name!r} in {_safe_url(storage)} searches {attrs.get('space')}, not "
                          f"{space.name}; choose another --study")
    diff = _config_diff(json.loads(attrs["base_config"]), json.loads(record))
    if diff:
        raise SearchError(f"study {study_name!r} was started with another base config (differs in: "
                          f"{', '.join(diff)}); run the same command on every worker, or choose another --study")
    return study


@dataclass(frozen=True, kw_only=True)
class Strategy:
    """How a search proposes trials and stops them early. These options travel together (a preset's, a
    compress config's, the CLI's flags), so a caller passes them as one value: ``Strategy.of(preset)``."""
    sampler: str = "gp"                   # gp | tpe | random (samplers.py; the module docstring)
    n_startup: int = 4                    # scrambled-Sobol points before the gp or tpe model takes over
    seed: int = 0                         # the sampler's seed
    pruner: str = "none"                  # none | median | sha | hyperband (pruners.py); with one, train_fn is
                                          # also given on_epoch= (train.loop.fit's hook) to report each epoch
    pruner_min_epochs: int | None = None  # the first rung; None: the first epoch after the schedule's warm-up
                                          # (first_rung_after_warmup); one inside the warm-up is refused
    pruner_eta: int = 3                   # keep 1/eta of the trials at each rung

    @classmethod
    def of(cls, obj) -> Strategy:
        """The six fields read from any object that has them (a Preset, a CompressConfig, bench's preset)."""
        return cls(**{f.name: getattr(obj, f.name) for f in fields(cls)})


@dataclass(frozen=True, kw_only=True)
class Sharing:
    """Where the study lives and how the workers that run it share it (every worker gives the same)."""
    storage: str | None = None                    # a database URL (postgresql://... for many machines) or a
                                                  # journal file (storage.py); None: the SQLite file OUT/study.db
    study_name: str | None = None                 # None: the space's name
    heartbeat_interval: int = HEARTBEAT_INTERVAL  # seconds between a running trial's heartbeats
    grace_period: int | None = GRACE_PERIOD       # seconds without a heartbeat before a trial is lost (and
                                                  # retried); None: twice the heartbeat interval
    # join: a helper of the worker that owns the study (studies.work) starts a trial only while at least two
    # are left to start and none is queued, and returns instead of waiting; so helpers and owner together never
    # start more than ``trials`` (the owner alone starts the last one and picks up retries)
    join: bool = False


def run_search(space: Space | str, base_cfg: TrainConfig, out_dir, *, trials: int, strategy: Strategy = Strategy(),
               sharing: Sharing = Sharing(), data: TrainData | None = None, teachers: Teachers | None = None,
               train_fn: Callable[..., dict] | None = None, index=None,
               ceiling: Callable[[TrainConfig], tuple[float, str]] | None = None,
               log: Callable[[str], None] = print):
    """Run (or continue, or join) the study until it holds ``trials`` finished trials; returns the study.

    Every worker runs the same call. ``strategy`` (Strategy) proposes and prunes the trials; ``sharing``
    (Sharing) names the study's storage and how workers share it. ``train_fn(cfg, run_dir, index=, info=)``
    trains one trial and returns its results (``val_acc`` is the objective); by default
    ``distill.student.train_run`` on ``data`` (read once here when not given), with the teacher of a student
    space loaded once (``teachers``) for all trials; ``index``: the index.csv its runs are listed in.
    ``ceiling(cfg) -> (v, what)``: a deployment limit the architecture alone decides (compress's --flops and
    --latency), asked of every config that meets the parameter budget before it trains: ``v > 0`` (the relative
    overshoot) makes the trial infeasible like a budget overshoot (its "budget" constraint is v, `what` its
    reason); ``v <= 0`` is the slack."""
    space = get_space(space)
    if trials < 1:
        raise SearchError(f"--trials must be >= 1, got {trials}")
    min_epochs = strategy.pruner_min_epochs
    if min_epochs is None:
        min_epochs = first_rung_after_warmup(base_cfg)
    pruner_obj = make_pruner(strategy.pruner, min_epochs, base_cfg.optim.max_epochs, strategy.pruner_eta,
                             strategy.n_startup)
    check_rungs_after_warmup(strategy.pruner, min_epochs, base_cfg)
    if train_fn is None:
        d = base_cfg.data
        data = data if data is not None else load_train_data(d.path, d.max_train, d.labels)
        train_fn = _default_train_fn(base_cfg, data, teachers, log)
    num_classes = data.with_labels(base_cfg.data.labels).num_classes if data is not None else 10
    in_shape = tuple(data.in_shape) if data is not None else IMAGE_SHAPE
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    storage = sharing.storage or default_storage(out_dir)
    study_name = sharing.study_name or space.name
    study = create_or_load(space, base_cfg, storage, study_name,
                           make_sampler(space, strategy.sampler, strategy.n_startup, strategy.seed),
                           {"heartbeat_interval": sharing.heartbeat_interval, "grace_period": sharing.grace_period},
                           pruner_obj)
    objective = _Objective(space, base_cfg, study, study_name=study_name, out_dir=out_dir, sampler=strategy.sampler,
                           train_fn=train_fn, index=index, log=log, pruning=strategy.pruner != "none",
                           num_classes=num_classes, in_shape=in_shape, ceiling=ceiling)
    _optimize_until(study, objective, trials, study_name, sharing.heartbeat_interval, sharing.grace_period, log,
                    sharing.join)
    return study


def first_rung_after_warmup(cfg: TrainConfig) -> int:
    """The earliest first rung check_rungs_after_warmup accepts: the first epoch after the warm-up (1 without
    one, or when the warm-up is the whole run)."""
    w = warmup_epochs(cfg)
    return math.floor(w) + 1 if w < cfg.optim.max_epochs else 1


def check_rungs_after_warmup(pruner: str, min_epochs: int, cfg: TrainConfig) -> None:
    """A pruner's first rung must come after the schedule's warm-up: judged while the rate still rises, the
    configs that start fast survive, and those are the ones that blow up at the peak rate (measured: the cpu
    preset's conv4 students, a first rung at 2 of 20 one-cycle epochs)."""
    w = warmup_epochs(cfg)
    if pruner != "none" and min_epochs <= w < cfg.optim.max_epochs:
        raise SearchError(f"--pruner-min-epochs {min_epochs}: the first rung falls inside the {cfg.optim.schedule} "
                          f"schedule's warm-up ({w:g} of {cfg.optim.max_epochs} epochs); give at least "
                          f"{math.floor(w) + 1}")


def _default_train_fn(base_cfg: TrainConfig, data: TrainData, teachers: Teachers | None,
                      log: Callable[[str], None]) -> Callable[..., dict]:
    """``distill.student.train_run`` on data read once (by run_search) and teachers loaded once, for all trials."""
    teachers = teachers or Teachers()
    if base_cfg.mimics and base_cfg.distill.transfer:
        # checked (every file against its manifest) before the study exists: a damaged or missing set is one
        # line, not a failed trial left in the study by every attempt
        teachers.transfer_set(base_cfg.distill.transfer, resolve_device(base_cfg.execution.device))

    def train_fn(cfg, run_dir, index, info, on_epoch=None):
        return train_run(cfg, run_dir, data, info=info, index=index, teachers=teachers, log=log, on_epoch=on_epoch)
    return train_fn


def _optimize_until(study, objective, trials: int, study_name: str, heartbeat_interval: int,
                    grace_period: int | None, log: Callable[[str], None], join: bool = False) -> None:
    """One trial at a time until the study holds ``trials`` finished trials (counted before every trial)."""
    waiting_logged = False
    while True:
        recover_lost(study)
        n = progress(study)
        if n["finished"] >= trials or (join and (n["waiting"] or n["finished"] + n["running"] + 1 >= trials)):
            return
        if n["waiting"] == 0 and n["finished"] + n["running"] >= trials:
            # Nothing left to start: wait for the other workers' trials. If a worker died, its trial goes
            # stale after the grace period and comes back as a retry, which this worker then runs.
            if not waiting_logged:
                log(f"study {study_name}: {n['finished']}/{trials} finished, waiting for {n['running']} running "
                    f"trial(s) (another worker's, or a killed one: retried after "
                    f"{grace_period or 2 * heartbeat_interval} s without a heartbeat)")
                waiting_logged = True
            time.sleep(max(1, min(int(heartbeat_interval), 10)))
            continue
        waiting_logged = False
        study.optimize(objective, n_trials=1, catch=(Diverged,), gc_after_trial=False)


class _NoDivergedTraceback(logging.Filter):
    """Optuna logs a caught exception (catch=(Diverged,)) as a warning with its traceback: ~20 lines that read
    as a crash. A diverged trial is a result, already said in one line (_Objective.train): drop Optuna's."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], Diverged))


logging.getLogger("optuna.study._optimize").addFilter(_NoDivergedTraceback())  # the logger that says it


def trial_run_dir(trial, out_dir) -> Path | None:
    """A trial's run folder. Stored relative to the search's folder (trials/N), so a search folder that was
    moved or copied finds its runs; an older study's absolute path is taken while it exists, else the
    trial's own folder under out_dir when that exists (the same search, moved)."""
    v = trial.user_attrs.get("run_dir")
    if not v:
        return None
    p = Path(v)
    if not p.is_absolute():
        here = Path(out_dir).resolve() / p
        there = trial.user_attrs.get("run_dir_abs")  # where the worker that ran it put it (a shared disk)
        return Path(there) if not here.exists() and there and Path(there).exists() else here
    moved = Path(out_dir).resolve() / "trials" / str(trial.number)
    return moved if not p.exists() and moved.exists() else p


def best_trial(study):
    """The study's best trial by validation accuracy among those that trained (complete, feasible), or None.
    Ties go to the trial started first (first_number: a retry keeps its original's place)."""
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if _is_feasible(t) and "infeasible" not in t.user_attrs and t.value is not None]
    return max(done, key=lambda t: (t.value, -first_number(t))) if done else None


class _Objective:
    """The value of one trial: sample a point, train it as a run (or record it as infeasible), return its
    validation accuracy. See the module docstring for the outcomes."""

    def __init__(self, space: Space, base_cfg: TrainConfig, study, *, study_name: str, out_dir: Path, sampler: str,
                 train_fn: Callable[..., dict], index, log: Callable[[str], None], pruning: bool = False,
                 num_classes: int = 10, in_shape=IMAGE_SHAPE,
                 ceiling: Callable[[TrainConfig], tuple[float, str]] | None = None):
        self.space, self.base_cfg, self.study, self.study_name = space, base_cfg, study, study_name
        self.ceiling = ceiling
        self.pruning, self.num_classes, self.in_shape = pruning, num_classes, in_shape
        self.out_dir, self.sampler, self.train_fn, self.index, self.log = out_dir, sampler, train_fn, index, log
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.constrained = space.budget is not None
        self.phases = getattr(study.sampler, "phase", {})

    def __call__(self, trial) -> float:
        trial.set_user_attr("worker", self.worker)  # first: a kill from here on is seen as this process's
        params = {p.name: trial.suggest_float(p.name, p.low, p.high, log=p.log) for p in self.space.params}
        if "sampled_by" not in trial.user_attrs:  # a retry keeps the original's
            trial.set_user_attr("sampled_by", self.phases.get(trial.number, self.sampler))
        try:
            cfg = apply(self.space, params, self.base_cfg, self.num_classes, self.in_shape)
        except BudgetError as e:
            return self.infeasible(trial, params, e)
        # one constraint, "budget", for every trial (the samplers model one feasibility): the parameter budget's
        # slack, or a ceiling's overshoot (v > 0) or slack, whichever is nearer the boundary
        v, what = self.ceiling(cfg) if self.ceiling is not None else (-math.inf, "")
        if self.constrained and "budget" not in trial.constraints:
            slack = budget_violation(self.space, params, self.num_classes, self.in_shape)
            trial.set_constraint("budget", max(min(slack, 0.0), v))
        if v > 0:
            return self.over_ceiling(trial, params, what)
        run_dir = self.run_dir(trial, cfg)
        trial.set_user_attr("run_dir", self.stored(run_dir))
        trial.set_user_attr("run_dir_abs", str(run_dir.resolve()))
        self.log(f"trial {trial.number}: {_fmt_params(params)} -> {run_dir}")
        res = self.train(trial, cfg, params, run_dir)
        return self.record(trial, res, run_dir)

    def infeasible(self, trial, params: dict, e: BudgetError) -> float:
        """Tell the sampler by how much the point overshoots the budget; the value is the worst feasible one."""
        v = max(budget_violation(self.space, params, self.num_classes, self.in_shape), 1e-6)
        if "budget" not in trial.constraints:
            trial.set_constraint("budget", v)
        trial.set_user_attr("infeasible", str(e))
        value = _worst_feasible(self.study, 1.0 / self.num_classes)
        self.log(f"trial {trial.number}: infeasible ({_fmt_params(params)}): the fixed layers alone overshoot the "
                 f"budget by {100 * v:.1f}%; told the sampler, value {value:.4f}")
        return value

    def over_ceiling(self, trial, params: dict, what: str) -> float:
        """A config within the parameter budget whose architecture overshoots a deployment ceiling (FLOPs,
        latency): infeasible before any epoch, as a budget overshoot is; the value is the worst feasible one."""
        trial.set_user_attr("infeasible", what)
        value = _worst_feasible(self.study, 1.0 / self.num_classes)
        self.log(f"trial {trial.number}: infeasible ({_fmt_params(params)}): {what}; told the sampler, "
                 f"value {value:.4f}")
        return value

    def run_dir(self, trial, cfg: TrainConfig) -> Path:
        """The trial's run folder: OUT/trials/<number>, or the one a retried trial already ran in."""
        # a retry (after a lost worker or Ctrl-C) inherits run_dir and resumes that run's checkpoint
        run_dir = trial_run_dir(trial, self.out_dir) or self.own_dir(trial)
        if _other_run(run_dir, cfg):
            # e.g. the code's config gained a field since the lost trial began: its checkpoint cannot be
            # resumed as this config, so the retry starts over in its own folder
            self.log(f"trial {trial.number}: {run_dir} holds a run of another config; starting afresh")
            run_dir = self.own_dir(trial)
        return run_dir

    def own_dir(self, trial) -> Path:
        return (self.out_dir / "trials" / str(trial.number)).resolve()

    def stored(self, run_dir: Path) -> str:
        """run_dir as the trial keeps it: relative to the search's folder when inside it (trial_run_dir)."""
        try:
            return str(run_dir.resolve().relative_to(self.out_dir.resolve()))
        except ValueError:
            return str(run_dir)

    def train(self, trial, cfg: TrainConfig, params: dict, run_dir: Path) -> dict:
        """train_fn's results; a divergence is recorded as the trial's fail_reason, a pruned trial as its index
        row, Ctrl-C queues a retry."""
        info = RunInfo(study=self.study_name, trial=first_number(trial))
        curve: dict[int, float] = {}
        kw = {"on_epoch": self.reporter(trial, curve)} if self.pruning else {}
        try:
            return self.train_fn(cfg, run_dir, index=self.index, info=info, **kw)
        except optuna.TrialPruned:
            epochs = max(curve)
            trial.set_user_attr("pruned_at_epoch", epochs)
            if self.index is not None:
                index_failed(self.index, cfg, run_dir, info, status="pruned", epochs=epochs, val_acc=curve[epochs])
            self.log(f"trial {trial.number}: pruned after {epochs} epoch(s), val {curve[epochs]:.4f}")
            raise
        except Diverged as e:
            trial.set_user_attr("fail_reason", f"{'collapsed' if e.status == 'collapsed' else 'diverged'}: {e}")
            if self.index is not None:
                index_failed(self.index, cfg, run_dir, info, status=e.status, epochs=e.epochs)
            self.log(f"trial {trial.number}: failed, {e}")
            raise
        except KeyboardInterrupt:
            # the next run resumes its run folder
            self.study.enqueue_trial(params, user_attrs={**trial.user_attrs, "retry_of": first_number(trial)})
            raise

    def reporter(self, trial, curve: dict) -> Callable[[int, float], None]:
        """train.loop.fit's on_epoch: report the epoch's validation accuracy; raise TrialPruned if told to."""
        def on_epoch(epochs: int, val_acc: float) -> None:
            curve[epochs] = val_acc
            trial.report(val_acc, epochs)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after {epochs} epochs (val {val_acc:.4f})")
        return on_epoch

    def record(self, trial, res: dict, run_dir: Path) -> float:
        """Copy the run's results onto the trial; the objective is the validation accuracy."""
        for k in ("test_acc", "params", "widths", "epochs", "best_epoch", "seconds"):
            if k in res:
                trial.set_user_attr(k, res[k])
        val = float(res["val_acc"])
        if not math.isfinite(val):
            trial.set_user_attr("fail_reason", f"validation accuracy is {val}")
            raise Diverged(f"{run_dir}: validation accuracy is {val}")
        self.log(f"trial {trial.number}: val {val:.4f}")
        return val
