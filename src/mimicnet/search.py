"""Bayesian hyperparameter search (SPEC S2, S4): Optuna with a Gaussian-process sampler.

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
- lost: a worker killed mid-trial. Its heartbeat stops; after the grace period any worker marks the trial
  FAILED and ``RetryHeartbeatStaleTrialCallback`` queues one retry with the same parameters and the same run
  folder, so the retry resumes the run from its last checkpoint. Ctrl-C queues such a retry at once.

``run_search`` returns when the study holds ``trials`` finished trials (complete, infeasible, diverged or
pruned; lost trials do not count, their retries do), counted before every trial so a finished study runs
nothing more and several workers stop at N together. A worker with nothing left to start waits while other
workers' trials run, so a study whose other workers die is still finished by the survivors (their trials go
stale and come back as retries).

Many workers: run the same command on every GPU or machine with ``--storage postgresql://...``. The default
storage is a SQLite file ``OUT/study.db`` (fine for one machine).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import re
import socket
import sys
import time
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import artifacts, models, train
from .models import BudgetError
from .train import ConfigError, Diverged, TrainConfig

__all__ = ["Param", "Space", "SPACES", "get_space", "make_space", "space_names", "budget_name", "apply",
           "budget_violation", "run_search", "open_storage", "load_study", "summary", "report", "SearchError",
           "register_cli", "SAMPLERS"]

SAMPLERS = ("gp", "tpe", "random")
CHANCE = 0.1                 # value of an infeasible trial before any feasible one (chance on 10 classes)
HEARTBEAT_INTERVAL = 15      # seconds between a running trial's heartbeats
GRACE_PERIOD = 60            # a running trial without a heartbeat for this long is failed (and retried)


class SearchError(ConfigError):
    """A search that cannot run as asked (bad space name, storage, study mismatch, ...)."""


# ---------------------------------------------------------------------------------------------------
# Spaces (data)
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    """One searched hyperparameter: uniform on [low, high], or log-uniform when ``log``.

    ``target`` names the TrainConfig field it sets, with ``.i`` for one element of a tuple field
    (``dropout.2``, ``hsv.0``, ``constants.1``); default: the field called ``name``."""
    name: str
    low: float
    high: float
    log: bool = False
    kind: str = "float"
    target: str = ""

    @property
    def field(self) -> str:
        return (self.target or self.name).split(".")[0]

    @property
    def index(self) -> int | None:
        t = self.target or self.name
        return int(t.split(".")[1]) if "." in t else None


@dataclass(frozen=True)
class Space:
    name: str
    kind: str                                   # teacher | baseline | student
    family: str
    budget: int | None                          # parameter budget (None: teacher, widths are free)
    params: tuple[Param, ...]
    fixed: dict = field(default_factory=dict)   # TrainConfig fields every trial gets
    bounds: tuple[tuple[int, int], ...] = ()    # (lo, hi) width per constant C1, C2, ...

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def controlled_fields(self) -> set[str]:
        """TrainConfig fields this space sets (a base config's values for them are replaced)."""
        widths = {"family", "widths", "constants", "budget", "bounds"}
        return widths | {p.field for p in self.params} | set(self.fixed)

    def describe(self) -> list[str]:
        fam = models.get_family(self.family)
        budget = "free widths" if self.budget is None else f"budget {self.budget:,} parameters"
        lines = [f"{self.name}: {self.kind} search, family {self.family} ({fam.description}), {budget}",
                 f"  {len(self.params)} searched hyperparameters:",
                 f"  {'name':14s} {'low':>9s} {'high':>9s}  {'scale':6s} sets"]
        const_names = [p.name for p in self.params if p.field == "constants"]
        for p in self.params:
            sets = p.target or p.name
            if p.field == "constants":
                i = p.index
                lo, hi = self.bounds[i]
                widths = ",".join(fam.width_names[j] for j in fam.constants[i])
                sets = f"{widths} in [{lo}, {hi}]"
            lines.append(f"  {p.name:14s} {p.low:>9g} {p.high:>9g}  {'log' if p.log else 'linear':6s} {sets}")
        if fam.dependent is not None:
            dep = fam.width_names[fam.dependent]
            what = "linear bottleneck" if self.family in ("conv0", "conv1") else "ReLU fc layer"
            lines.append(f"  dependent width: {dep} ({what}), solved so the model has as close to {self.budget:,} "
                         f"parameters as integer widths allow (models.solve_budget); constants "
                         f"{', '.join(const_names)} whose other layers leave no room are infeasible")
        else:
            lines.append("  dependent width: none")
        if self.fixed:
            lines.append("  fixed: " + ", ".join(f"{k}={v!r}" for k, v in self.fixed.items()))
        return lines


def budget_name(budget: int) -> str:
    """1M, 3.16M, 31.6M, 100k (the same spelling as reproduce's folders)."""
    return f"{budget / 1e6:g}M" if budget >= 1_000_000 else f"{budget / 1e3:g}k"


def _parse_budget(s: str) -> int:
    t = s.strip().lower().replace("_", "")
    mult = {"k": 1e3, "m": 1e6}.get(t[-1:], 1)
    try:
        b = int(round(float(t.rstrip("km")) * mult))
    except ValueError:
        raise SearchError(f"budget must look like 1M, 3.16M, 100k or 0.1M, got {s!r}") from None
    if b <= 0:
        raise SearchError(f"budget must be positive, got {s!r}")
    return b


def _constants(n: int) -> tuple[Param, ...]:
    return tuple(Param(f"C{i + 1}", 0.0, 1.0, target=f"constants.{i}") for i in range(n))


def _teacher_space() -> Space:
    # S2: the 18 hyperparameters of the teachers, in the paper's order.
    p = (Param("C1", 0.0, 1.0, target="constants.0"), Param("C2", 0.0, 1.0, target="constants.1"),
         Param("C3", 0.0, 1.0, target="constants.2"), Param("H1", 0.0, 1.0, target="constants.3"),
         Param("DOc1", 0.1, 0.3, target="dropout.0"), Param("DOc2", 0.25, 0.35, target="dropout.1"),
         Param("DOc3", 0.3, 0.44, target="dropout.2"),
         Param("DOf1", 0.2, 0.65, target="dropout.3"), Param("DOf2", 0.2, 0.65, target="dropout.4"),
         Param("init_scale", 0.8, 1.35),
         Param("lr", 0.01, 0.05, log=True), Param("momentum", 0.80, 0.91, log=True),
         Param("weight_decay", 5e-5, 4e-4),
         Param("Dh", 0.03, 0.11, target="hsv.0"), Param("Ds", 0.2, 0.3, target="hsv.1"),
         Param("Dv", 0.0, 0.2, target="hsv.2"), Param("As", 0.2, 0.3, target="hsv.3"),
         Param("Av", 0.03, 0.2, target="hsv.4"))
    return Space("teacher", "teacher", "teacher", None, p, {}, models.TEACHER_BOUNDS)


# S4 hard-target baselines: dropout after every pool, then after the fc layer (one range per position).
_BASELINE_DROPOUT = (("DOc1", 0.05, 0.4), ("DOc2", 0.1, 0.6), ("DOc3", 0.1, 0.7))


def _baseline_bounds(family: str, budget: int) -> tuple[tuple[int, int], ...]:
    """S4's bounds at 10M; at another budget every width scaled by sqrt(budget / 10M), floored at 4
    (the rule of models.scaled_bounds, from the baselines' own 10M row)."""
    b = models.BASELINE_BOUNDS[family]
    if budget == models.BASELINE_BUDGET:
        return b
    s = math.sqrt(budget / models.BASELINE_BUDGET)
    return tuple((max(4, models._round(lo * s)), max(4, models._round(hi * s))) for lo, hi in b)


def make_space(kind: str, family: str | None = None, budget: int | None = None) -> Space:
    """The search space of a kind (teacher | baseline | student), family and budget. Baselines default to
    10M; students need a budget (a table budget of S4, or any other: bounds from models.scaled_bounds)."""
    if kind == "teacher":
        if family not in (None, "teacher") or budget is not None:
            raise SearchError("the teacher space has no family or budget to choose (S2: widths are free)")
        return _teacher_space()
    if kind not in ("baseline", "student"):
        raise SearchError(f"space kind must be teacher, baseline or student, not {kind!r}")
    fam = models.get_family(family or "")
    if kind == "baseline":
        if fam.name not in models.BASELINE_BOUNDS:
            raise SearchError(f"no hard-target baseline for {fam.name!r}; baselines: "
                              f"{', '.join(models.BASELINE_BOUNDS)}")
        budget = int(budget or models.BASELINE_BUDGET)
        n_pools = fam.n_dropout - 1
        drop = tuple(Param(n, lo, hi, target=f"dropout.{i}")
                     for i, (n, lo, hi) in enumerate(_BASELINE_DROPOUT[:n_pools]))
        p = (Param("lr", 0.0015, 0.025, log=True), Param("momentum", 0.68, 0.97, log=True), *drop,
             Param("DOf1", 0.1, 0.7, target=f"dropout.{n_pools}"), *_constants(fam.n_constants))
        return Space(f"baseline-{fam.name}" + ("" if budget == models.BASELINE_BUDGET else f"-{budget_name(budget)}"),
                     "baseline", fam.name, budget, p, {"weight_decay": 2e-4}, _baseline_bounds(fam.name, budget))
    if fam.name not in models.STUDENT_BOUNDS:
        raise SearchError(f"no student family {fam.name!r}; students: {', '.join(models.STUDENT_BOUNDS)}")
    if budget is None:
        raise SearchError(f"a student space needs a budget (e.g. student-{fam.name}-1M)")
    budget = int(budget)
    p = (Param("lr", 0.0013, 0.016, log=True), Param("momentum", 0.68, 0.97, log=True),
         Param("input_scale", 0.8, 1.25), Param("init_scale", 0.4, 2.0), *_constants(fam.n_constants))
    # S4: students have no dropout and no weight decay.
    return Space(f"student-{fam.name}-{budget_name(budget)}", "student", fam.name, budget, p,
                 {"dropout": (), "weight_decay": 0.0}, models.scaled_bounds(fam.name, budget))


def _all_spaces() -> dict[str, Space]:
    out = {"teacher": make_space("teacher")}
    for fam in models.BASELINE_BOUNDS:
        s = make_space("baseline", fam)
        out[s.name] = s
    for fam in models.STUDENT_BOUNDS:
        for b in models.BUDGETS:
            s = make_space("student", fam, b)
            out[s.name] = s
    return out


SPACES: dict[str, Space] = _all_spaces()


def space_names() -> list[str]:
    return list(SPACES)


def get_space(name: str | Space) -> Space:
    """A space by name: teacher, baseline-convK[-BUDGET], student-convK-BUDGET (BUDGET like 1M, 3.16M,
    100k, 0.1M; any budget works, the S4 ones are listed by `mimicnet search show`)."""
    if isinstance(name, Space):
        return name
    if name in SPACES:
        return SPACES[name]
    m = re.fullmatch(r"(baseline|student)-(conv\d)(?:-([0-9.]+[kKmM]?))?", name.strip())
    if not m:
        raise SearchError(f"unknown search space {name!r}; spaces: teacher, baseline-convK[-BUDGET], "
                          f"student-convK-BUDGET (e.g. {', '.join(list(SPACES)[:3])}, student-conv2-0.1M)")
    kind, fam, b = m.groups()
    try:
        return make_space(kind, fam, _parse_budget(b) if b else None)
    except models.ModelError as e:
        raise SearchError(str(e)) from None


# ---------------------------------------------------------------------------------------------------
# One sampled point -> TrainConfig
# ---------------------------------------------------------------------------------------------------
def apply(space: Space, params: dict, base: TrainConfig) -> TrainConfig:
    """The config of one trial: ``base`` (data, epochs, schedule, batch size, loss, transfer set, ...) with
    the space's fixed fields and the sampled ``params`` put in. Raises ``models.BudgetError`` when the width
    constants cannot meet the budget (the trial is infeasible)."""
    space = get_space(space)
    names = {p.name for p in space.params}
    if set(params) != names:
        raise SearchError(f"space {space.name}: params must be exactly {sorted(names)}; "
                          f"missing {sorted(names - set(params))}, unknown {sorted(set(params) - names)}")
    changes: dict[str, Any] = {"family": space.family, **space.fixed}
    tuples: dict[str, dict[int, float]] = {}
    for p in space.params:
        v = float(params[p.name])
        if p.index is None:
            changes[p.field] = v
        else:
            tuples.setdefault(p.field, {})[p.index] = v
    for name, items in tuples.items():
        old = list(getattr(base, name) or ()) if name == "hsv" else []
        n = max(max(items) + 1, len(old))
        vals = old + [0.0] * (n - len(old))
        for i, v in items.items():
            vals[i] = v
        changes[name] = tuple(vals)
    constants = changes.pop("constants")
    if space.kind == "teacher":
        changes.update(constants=constants, widths=None, budget=None)
    elif space.kind == "student":
        changes.update(constants=constants, widths=None, budget=space.budget)
    else:
        # Baselines have their own bounds (S4), carried in the config so the run records its budget.
        changes.update(constants=constants, budget=space.budget, bounds=tuple(map(tuple, space.bounds)), widths=None)
    cfg = dataclasses.replace(base, **changes)
    train.resolve_widths(cfg)  # raises BudgetError exactly where fit() would
    return cfg


def budget_violation(space: Space, params: dict) -> float:
    """How far the constants are from infeasible, relative to the budget: (parameters at dependent width
    1/2) / budget - 1. models.solve_budget rounds the solved width to the nearest integer and fails when
    that is 0, i.e. exactly when this is > 0. It grows smoothly with the overshoot of the fixed layers, so
    the sampler can model the boundary; feasibility itself is always decided by the solver (apply())."""
    fam = models.get_family(space.family)
    consts = tuple(float(params[p.name]) for p in sorted((p for p in space.params if p.field == "constants"),
                                                          key=lambda p: p.index))
    widths = list(models.widths_from_constants(fam, consts, space.bounds))

    def count(w: int) -> int:
        widths[fam.dependent] = w
        return models.count_params(fam, tuple(widths))

    p1, p2 = count(1), count(2)  # the count is affine in the dependent width (models.py)
    return (p1 - (p2 - p1) / 2) / space.budget - 1.0


# ---------------------------------------------------------------------------------------------------
# Samplers
# ---------------------------------------------------------------------------------------------------
def _distributions(space: Space) -> dict:
    from optuna.distributions import FloatDistribution
    return {p.name: FloatDistribution(p.low, p.high, log=p.log) for p in space.params}


@contextlib.contextmanager
def _quiet():
    """Optuna marks heartbeats, QMC and retries experimental, and deprecates aliases: not our users' news."""
    import optuna
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


@functools.cache
def _make_samplers():
    # Classes built on first use: importing optuna costs every `mimicnet` command a second otherwise.
    import optuna
    from optuna.samplers import BaseSampler, RandomSampler
    from optuna.trial import TrialState

    class TrialSeededRandomSampler(RandomSampler):
        """Uniform draws seeded by (seed, trial number, parameter): reproducible whichever worker runs
        the trial, and two workers started with one seed never draw the same point."""

        def __init__(self, seed: int = 0):
            super().__init__(seed=seed)
            self._base_seed = int(seed)

        def sample_independent(self, study, trial, param_name, param_distribution):
            s = zlib.crc32(f"{self._base_seed}/{trial.number}/{param_name}".encode())
            return RandomSampler(seed=s).sample_independent(study, trial, param_name, param_distribution)

    class QMCStartupSampler(BaseSampler):
        """Scrambled-Sobol points until `n_startup` trials are complete, then `model`'s (relative) points.
        The search space is the space's, known before the first trial (QMCSampler alone infers it from a
        first, random trial)."""

        def __init__(self, distributions: dict, model: BaseSampler, n_startup: int, seed: int):
            self._dists = dict(distributions)
            self._model = model
            self._n_startup = int(n_startup)
            with _quiet():
                self._qmc = optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed,
                                                       warn_independent_sampling=False)
            self._fallback = TrialSeededRandomSampler(seed)
            self.name = "gp" if isinstance(model, optuna.samplers.GPSampler) else "tpe"
            self.phase: dict[int, str] = {}  # trial number -> qmc | gp | tpe | retry (the trial's user attr)

        def reseed_rng(self) -> None:
            self._model.reseed_rng()

        def infer_relative_search_space(self, study, trial):
            return dict(self._dists)

        def sample_relative(self, study, trial, search_space):
            if "fixed_params" in trial.system_attrs or trial.params:
                self.phase[trial.number] = "retry"
                return {}  # a queued retry: its parameters are given, spend no QMC point or GP fit on it
            n_complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
            if n_complete < self._n_startup:
                self.phase[trial.number] = "qmc"
                return self._qmc.sample_relative(study, trial, search_space)
            self.phase[trial.number] = self.name
            return self._model.sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self._fallback.sample_independent(study, trial, param_name, param_distribution)

        def before_trial(self, study, trial) -> None:
            self._model.before_trial(study, trial)

        def after_trial(self, study, trial, state, values) -> None:
            self._model.after_trial(study, trial, state, values)

    return TrialSeededRandomSampler, QMCStartupSampler


def make_sampler(space: Space, sampler: str = "gp", n_startup: int = 4, seed: int = 0):
    import optuna
    seeded_random, startup = _make_samplers()
    if sampler == "random":
        return seeded_random(seed)
    with _quiet():
        if sampler == "gp":
            model = optuna.samplers.GPSampler(n_startup_trials=n_startup, seed=seed, deterministic_objective=False,
                                              warn_independent_sampling=False)
        elif sampler == "tpe":
            model = optuna.samplers.TPESampler(n_startup_trials=n_startup, seed=seed, multivariate=True,
                                               constant_liar=True, warn_independent_sampling=False)
        else:
            raise SearchError(f"sampler must be one of {', '.join(SAMPLERS)}, not {sampler!r}")
    return startup(_distributions(space), model, n_startup, seed)


# ---------------------------------------------------------------------------------------------------
# Storage and studies
# ---------------------------------------------------------------------------------------------------
def default_storage(out_dir) -> str:
    return f"sqlite:///{Path(out_dir).resolve() / 'study.db'}"


def _safe_url(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only for messages
        return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def _with_driver(url: str) -> str:
    """postgresql://... -> postgresql+psycopg2://... when psycopg2 (our `postgres` extra) is what is installed:
    SQLAlchemy 2.1 picks psycopg 3 for a bare postgresql:// URL. An explicit +driver is left alone."""
    import importlib.util
    m = re.match(r"(postgresql|postgres)://", url)
    if m and importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url[m.end():]
    return url


def open_storage(url: str, heartbeat_interval: int = HEARTBEAT_INTERVAL, grace_period: int | None = GRACE_PERIOD):
    """An RDBStorage with heartbeats (a dead worker's RUNNING trial becomes FAIL after ``grace_period`` s)
    and one retry of such a trial. Workers starting together may race to create the schema; that is retried."""
    import optuna
    import sqlalchemy.exc
    url = _with_driver(url)
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        # several local workers share one file: wait for its lock instead of failing at once
        engine_kwargs = {"connect_args": {"timeout": 120}}
    else:
        engine_kwargs = {"pool_pre_ping": True}  # a server restart must not leave dead pooled connections
    last: Exception | None = None
    for attempt in range(6):
        try:
            with _quiet():
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine_kwargs, heartbeat_interval=int(heartbeat_interval),
                    grace_period=None if grace_period is None else int(grace_period),
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1))
        except ImportError as e:
            raise SearchError(f"storage {_safe_url(url)}: the database driver is missing ({e}); for "
                              f"PostgreSQL: pip install -e '.[postgres]' (psycopg2-binary)") from None
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError, sqlalchemy.exc.OperationalError) as e:
            last = e
            time.sleep(0.5 * (attempt + 1))
        except sqlalchemy.exc.ArgumentError as e:
            raise SearchError(f"storage {_safe_url(url)}: not a database URL ({e})") from None
    msg = str(last).strip().splitlines()[0] if last else "unknown error"
    raise SearchError(f"cannot open storage {_safe_url(url)}: {msg}")


def load_study(storage: str, study_name: str | None = None, sampler=None, **storage_kw):
    """An existing study; without a name, the storage's only study."""
    import optuna
    st = open_storage(storage, **storage_kw)
    names = [s.study_name for s in optuna.study.get_all_study_summaries(st, include_best_trial=False)]
    if study_name is None:
        if len(names) != 1:
            raise SearchError(f"storage {_safe_url(storage)} holds {len(names)} studies "
                              f"({', '.join(names) or 'none'}); pass --study NAME")
        study_name = names[0]
    if study_name not in names:
        raise SearchError(f"no study {study_name!r} in {_safe_url(storage)} (studies: {', '.join(names) or 'none'})")
    return optuna.load_study(study_name=study_name, storage=st, sampler=sampler)


# ---------------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------------
def _retried_numbers(trials) -> set[int]:
    return {n for t in trials for n in t.system_attrs.get("retry_history", ())}


def _is_finished(t, retried: set[int]) -> bool:
    """A trial that counts towards N: a result (complete, infeasible, pruned, or diverged). A FAIL without
    a fail_reason is a lost trial (killed worker, Ctrl-C, crash): it does not count, its retry does."""
    from optuna.trial import TrialState
    if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return t.state == TrialState.FAIL and "fail_reason" in t.user_attrs and t.number not in retried


def progress(study) -> dict:
    """Counts: finished (towards N), running, waiting (queued retries)."""
    from optuna.trial import TrialState
    trials = study.get_trials(deepcopy=False)
    retried = _retried_numbers(trials)
    return {"finished": sum(_is_finished(t, retried) for t in trials),
            "running": sum(t.state == TrialState.RUNNING for t in trials),
            "waiting": sum(t.state == TrialState.WAITING for t in trials)}


def _is_feasible(t) -> bool:
    return all(v <= 0 for v in t.constraints.values())


def _worst_feasible(study) -> float:
    from optuna.trial import TrialState
    vals = [t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if _is_feasible(t)]
    return min(vals) if vals else CHANCE


def _fmt_params(params: dict) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in params.items())


def _index_failed(index, cfg: TrainConfig, run_dir: Path, study_name: str, number: int, space: Space) -> None:
    train.index_failed_run(index, cfg, run_dir, budget=space.budget, study=study_name, trial=number)


def _other_run(run_dir: Path, cfg: TrainConfig) -> bool:
    """Does run_dir hold a run (config.json) of a config other than cfg?"""
    try:
        return artifacts.read_json(run_dir / "config.json").get("run_id") != cfg.run_id()
    except (OSError, ValueError):
        return False


def _base_record(base: TrainConfig, space: Space) -> str:
    """The base config as the study remembers it: without the fields the space sets, the execution options
    (device, amp, ...) and paths: workers on different machines may use different GPUs and mount the data
    elsewhere (the data's sha256 is in every run's results)."""
    d = artifacts.to_jsonable(base)
    execution = set(getattr(train, "EXECUTION_FIELDS", ("device",)))
    for k in space.controlled_fields() | execution | {"data", "transfer"}:
        d.pop(k, None)
    return json.dumps(d, sort_keys=True)


def _config_diff(old: dict, new: dict) -> list[str]:
    """Fields whose values differ; a field one side lacks counts as its TrainConfig default, so a field added
    to TrainConfig later (at its default) does not orphan the studies started before it."""
    defaults = {f.name: artifacts.to_jsonable(f.default) for f in dataclasses.fields(TrainConfig)
                if f.default is not dataclasses.MISSING}
    return sorted(k for k in old.keys() | new.keys() if old.get(k, defaults.get(k)) != new.get(k, defaults.get(k)))


def create_or_load(space: Space, base: TrainConfig, storage: str, study_name: str, sampler, storage_kw: dict):
    """The study (created by the first worker), checked to be a search of this space and base config."""
    import optuna
    st = open_storage(storage, **storage_kw)
    study = optuna.create_study(study_name=study_name, storage=st, sampler=sampler, direction="maximize",
                                load_if_exists=True)
    record = _base_record(base, space)
    attrs = study.user_attrs
    if "space" not in attrs:
        study.set_user_attr("space", space.name)
        study.set_user_attr("base_config", record)
        attrs = study.user_attrs
    if attrs.get("space") != space.name:
        raise SearchError(f"study {study_name!r} in {_safe_url(storage)} searches {attrs.get('space')}, not "
                          f"{space.name}; choose another --study")
    diff = _config_diff(json.loads(attrs["base_config"]), json.loads(record))
    if diff:
        raise SearchError(f"study {study_name!r} was started with another base config (differs in: "
                          f"{', '.join(diff)}); run the same command on every worker, or choose another --study")
    return study


def run_search(space: Space | str, base_cfg: TrainConfig, out_dir, trials: int, storage: str | None = None,
               study_name: str | None = None, sampler: str = "gp", n_startup: int = 4, seed: int = 0, index=None,
               train_fn: Callable[..., dict] = train.fit, heartbeat_interval: int = HEARTBEAT_INTERVAL,
               grace_period: int | None = GRACE_PERIOD, log: Callable[[str], None] = print):
    """Run (or continue, or join) the study until it holds ``trials`` finished trials; returns the study.

    Every worker runs the same call. ``train_fn(cfg, run_dir, index=, extra_meta=)`` trains one trial and
    returns its results (``val_acc`` is the objective); ``train.fit`` by default."""
    import optuna
    space = get_space(space)
    if trials < 1:
        raise SearchError(f"--trials must be >= 1, got {trials}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    storage = storage or default_storage(out_dir)
    study_name = study_name or space.name
    study = create_or_load(space, base_cfg, storage, study_name,
                           make_sampler(space, sampler, n_startup, seed),
                           {"heartbeat_interval": heartbeat_interval, "grace_period": grace_period})
    worker = f"{socket.gethostname()}:{os.getpid()}"
    constrained = space.budget is not None
    phases = getattr(study.sampler, "phase", {})

    def objective(trial) -> float:
        params = {p.name: trial.suggest_float(p.name, p.low, p.high, log=p.log) for p in space.params}
        trial.set_user_attr("worker", worker)
        if "sampled_by" not in trial.user_attrs:  # a retry keeps the original's
            trial.set_user_attr("sampled_by", phases.get(trial.number, sampler))
        try:
            cfg = apply(space, params, base_cfg)
        except BudgetError as e:
            v = max(budget_violation(space, params), 1e-6)
            if "budget" not in trial.constraints:
                trial.set_constraint("budget", v)
            trial.set_user_attr("infeasible", str(e))
            value = _worst_feasible(study)
            log(f"trial {trial.number}: infeasible ({_fmt_params(params)}): the fixed layers alone overshoot the "
                f"budget by {100 * v:.1f}%; told the sampler, value {value:.4f}")
            return value
        if constrained and "budget" not in trial.constraints:
            trial.set_constraint("budget", min(budget_violation(space, params), 0.0))
        # a retry (after a lost worker or Ctrl-C) inherits run_dir and resumes that run's checkpoint
        run_dir = Path(trial.user_attrs.get("run_dir") or (out_dir / "trials" / str(trial.number)).resolve())
        if _other_run(run_dir, cfg):
            # e.g. the code's config gained a field since the lost trial began: its checkpoint cannot be
            # resumed as this config, so the retry starts over in its own folder
            log(f"trial {trial.number}: {run_dir} holds a run of another config; starting afresh")
            run_dir = (out_dir / "trials" / str(trial.number)).resolve()
        trial.set_user_attr("run_dir", str(run_dir))
        log(f"trial {trial.number}: {_fmt_params(params)} -> {run_dir}")
        try:
            res = train_fn(cfg, run_dir, index=index, extra_meta={"study": study_name, "trial": trial.number})
        except Diverged as e:
            trial.set_user_attr("fail_reason", f"diverged: {e}")
            if index is not None:
                _index_failed(index, cfg, run_dir, study_name, trial.number, space)
            log(f"trial {trial.number}: failed, diverged: {e}")
            raise
        except KeyboardInterrupt:
            study.enqueue_trial(params, user_attrs=trial.user_attrs)  # the next run resumes its run folder
            raise
        for k in ("test_acc", "params", "widths", "epochs", "best_epoch", "seconds"):
            if k in res:
                trial.set_user_attr(k, res[k])
        val = float(res["val_acc"])
        if not math.isfinite(val):
            trial.set_user_attr("fail_reason", f"validation accuracy is {val}")
            raise Diverged(f"{run_dir}: validation accuracy is {val}")
        log(f"trial {trial.number}: val {val:.4f}")
        return val

    waiting_logged = False
    while True:
        with _quiet():
            optuna.storages.fail_stale_trials(study)  # a dead worker's trial -> FAIL + queued retry
        n = progress(study)
        if n["finished"] >= trials:
            break
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
    return study


# ---------------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------------
def _complete_feasible(study) -> list:
    from optuna.trial import TrialState
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if _is_feasible(t)]


def _mean_std(xs: list[float]) -> tuple[float | None, float | None]:
    if not xs:
        return None, None
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, sd


def _trial_row(t) -> dict:
    return {"number": t.number, "val_acc": t.value, "test_acc": t.user_attrs.get("test_acc"),
            "params": dict(t.params), "n_params": t.user_attrs.get("params"), "widths": t.user_attrs.get("widths"),
            "run_dir": t.user_attrs.get("run_dir")}


def summary(study, top: int = 5) -> dict:
    """Best trial, the top-`top` trials by validation accuracy (mean, sample std, best and last of them,
    and the test accuracy of the same trials for the report), and counts by outcome."""
    from optuna.trial import TrialState
    trials = study.get_trials(deepcopy=False)
    retried = _retried_numbers(trials)
    ok = sorted(_complete_feasible(study), key=lambda t: -t.value)
    n_complete = sum(t.state == TrialState.COMPLETE for t in trials)
    best = ok[:top]
    val_mean, val_std = _mean_std([t.value for t in best])
    tests = [t.user_attrs["test_acc"] for t in best if t.user_attrs.get("test_acc") is not None]
    test_mean, test_std = _mean_std(tests) if len(tests) == len(best) else (None, None)
    return {
        "study": study.study_name, "space": study.user_attrs.get("space"),
        "n_trials": len(trials), "n_finished": sum(_is_finished(t, retried) for t in trials),
        "n_complete": len(ok), "n_infeasible": n_complete - len(ok),
        "n_failed": sum(t.state == TrialState.FAIL and "fail_reason" in t.user_attrs for t in trials),
        "n_lost": sum(t.state == TrialState.FAIL and "fail_reason" not in t.user_attrs for t in trials),
        "n_pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "n_running": sum(t.state == TrialState.RUNNING for t in trials),
        "best": _trial_row(ok[0]) if ok else None,
        "top": [_trial_row(t) for t in best], "top_k": top,
        "top_val_mean": val_mean, "top_val_std": val_std,
        "top_val_best": best[0].value if best else None, "top_val_last": best[-1].value if best else None,
        "top_test_mean": test_mean, "top_test_std": test_std,
        # did the model-based phase beat the quasi-random start-up?
        "best_startup": max((t.value for t in ok if t.user_attrs.get("sampled_by") == "qmc"), default=None),
    }


def importances(study) -> dict[str, float]:
    """PED-ANOVA importances over the complete, feasible trials (needs >= 2; Optuna's default evaluator,
    no scikit-learn). Infeasible trials carry an imputed value, so they are left out."""
    import optuna
    ok = _complete_feasible(study)
    if len(ok) < 2:
        return {}
    tmp = optuna.create_study(direction="maximize")
    tmp.add_trials(ok)
    varying = [n for n in ok[0].params if len({t.params.get(n) for t in ok}) > 1]
    if not varying:
        return {}
    try:
        with _quiet():
            return dict(optuna.importance.get_param_importances(
                tmp, params=varying, evaluator=optuna.importance.PedAnovaImportanceEvaluator()))
    except (ValueError, RuntimeError, ZeroDivisionError):
        return {}


def plot_history(study, path) -> Path:
    """Validation accuracy of every trial and the best so far, against trial number (matplotlib, no
    plotly). Infeasible trials are open grey circles at their imputed value, failed ones x's at the bottom."""
    from matplotlib.figure import Figure
    from optuna.trial import TrialState
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    fig = Figure(figsize=(7, 4.2))
    ax = fig.subplots()
    ok = [t for t in trials if t.state == TrialState.COMPLETE and _is_feasible(t)]
    inf = [t for t in trials if t.state == TrialState.COMPLETE and not _is_feasible(t)]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    qmc = [t for t in ok if t.user_attrs.get("sampled_by") == "qmc"]
    rest = [t for t in ok if t.user_attrs.get("sampled_by") != "qmc"]
    if qmc:
        ax.scatter([t.number for t in qmc], [100 * t.value for t in qmc], s=18, color="C2", zorder=3,
                   label="quasi-random start-up")
    ax.scatter([t.number for t in rest], [100 * t.value for t in rest], s=18, color="C0", zorder=3,
               label="trial (validation)")
    xs, ys, best = [], [], -math.inf
    for t in trials:
        if t in ok:
            best = max(best, t.value)
        if best > -math.inf:
            xs.append(t.number)
            ys.append(100 * best)
    if xs:
        ax.step(xs, ys, where="post", color="C1", label="best so far")
    if inf:
        ax.scatter([t.number for t in inf], [100 * t.value for t in inf], s=18, facecolors="none",
                   edgecolors="0.6", label="infeasible (budget)")
    lo = min([100 * t.value for t in ok + inf] or [0.0])
    if failed:
        ax.scatter([t.number for t in failed], [lo] * len(failed), marker="x", color="C3", label="failed / lost")
    ax.set_xlabel("trial")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(f"{study.study_name}: optimisation history")
    ax.grid(alpha=0.3)
    if ok or inf or failed:
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def report(study, out_dir, top: int = 5) -> dict:
    """Write OUT/report/{summary.json, trials.csv, history.png}; returns the summary (+ importances)."""
    import csv
    import io
    out = Path(out_dir) / "report"
    s = summary(study, top)
    s["importances"] = importances(study)
    s["history_png"] = str(plot_history(study, out / "history.png"))
    artifacts.write_json(out / "summary.json", s)
    buf = io.StringIO()
    names = [p for t in study.get_trials(deepcopy=False) for p in t.params]
    names = list(dict.fromkeys(names))
    w = csv.writer(buf)
    w.writerow(["number", "state", "feasible", "value", "test_acc", *names, "fail_reason", "run_dir"])
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        w.writerow([t.number, t.state.name, _is_feasible(t), "" if t.value is None else t.value,
                    t.user_attrs.get("test_acc", ""), *[t.params.get(n, "") for n in names],
                    t.user_attrs.get("fail_reason", t.user_attrs.get("infeasible", "")),
                    t.user_attrs.get("run_dir", "")])
    artifacts.write_text(out / "trials.csv", buf.getvalue())
    return s


def format_report(s: dict, show: int = 10) -> str:
    pct = lambda v: "-" if v is None else f"{100 * v:.2f}"  # noqa: E731
    lines = [f"study {s['study']} ({s['space']}): {s['n_trials']} trials: {s['n_complete']} complete, "
             f"{s['n_infeasible']} infeasible, {s['n_failed']} failed (diverged), {s['n_lost']} lost "
             f"(retried or replaced), {s['n_pruned']} pruned, {s['n_running']} running"]
    if s["best"] is None:
        return "\n".join(lines + ["no complete feasible trial yet"])
    if s.get("best_startup") is not None:
        lines.append(f"best of the quasi-random start-up {pct(s['best_startup'])}%, best overall "
                     f"{pct(s['best']['val_acc'])}%")
    if s["top_val_mean"] is not None:
        k = len(s["top"])
        line = (f"top-{k} by validation: mean {pct(s['top_val_mean'])}% ± {pct(s['top_val_std'])} "
                f"(best {pct(s['top_val_best'])}, #{k} {pct(s['top_val_last'])})")
        if s["top_test_mean"] is not None:
            line += f"; their test accuracy {pct(s['top_test_mean'])}% ± {pct(s['top_test_std'])}"
        lines.append(line)
    lines.append(f"{'#':>4s} {'val %':>6s} {'test %':>6s}  params / run folder")
    for r in s["top"][:show]:
        lines.append(f"{r['number']:>4d} {pct(r['val_acc']):>6s} {pct(r['test_acc']):>6s}  {_fmt_params(r['params'])}")
        lines.append(f"{'':18s}{r['run_dir']}")
    if s.get("importances"):
        lines.append("parameter importances (PED-ANOVA): " +
                     ", ".join(f"{k} {v:.2f}" for k, v in s["importances"].items()))
    if s.get("history_png"):
        lines.append(f"optimisation history: {s['history_png']}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------
def cmd_show(args) -> int:
    if args.space in (None, "list"):
        for name, sp in SPACES.items():
            print(f"{name:24s} {sp.kind:8s} {len(sp.params):2d} params")
        print("any other budget: student-convK-BUDGET, baseline-convK-BUDGET (e.g. student-conv2-0.1M)")
        return 0
    print("\n".join(get_space(args.space).describe()))
    return 0


def _search_base(args, space: Space) -> TrainConfig:
    from .cli import train_config_from_args
    given = {f.name for f in dataclasses.fields(TrainConfig) if getattr(args, f.name, None) is not None}
    clash = sorted(given & space.controlled_fields())
    if args.family == space.family:
        clash.remove("family")  # naming the space's own family is harmless
    if clash:
        raise SearchError(f"space {space.name} sets {', '.join('--' + c.replace('_', '-') for c in clash)}; "
                          "leave them out (see `mimicnet search show`)")
    args.family = None
    cfg = train_config_from_args(args)
    return dataclasses.replace(cfg, family=space.family, widths=None, constants=None, budget=None)


def cmd_run(args) -> int:
    import optuna
    space = get_space(args.space)
    base = _search_base(args, space)
    if space.kind == "student" and base.loss == "ce":
        print(f"note: {space.name} with hard labels (no --loss/--transfer): the students' space, trained on labels",
              file=sys.stderr)
    study_name = args.study or space.name
    out = args.out or Path("runs") / "search" / study_name
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own one line per trial instead
    study = run_search(space, base, out, args.trials, storage=args.storage, study_name=study_name,
                       sampler=args.sampler, n_startup=args.startup, seed=args.search_seed,
                       index=args.index or out / "index.csv", heartbeat_interval=args.heartbeat,
                       grace_period=args.grace)
    print(format_report(summary(study), show=3))
    print(f"study {study_name} in {_safe_url(args.storage or default_storage(out))}; run folders in {out / 'trials'}")
    return 0


def cmd_report(args) -> int:
    import optuna
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.out is None and args.study is None:
        raise SearchError("give --out DIR (a search's folder) or --study NAME")
    out = args.out or Path("runs") / "search" / args.study
    storage = args.storage or default_storage(out)
    if storage.startswith("sqlite:///") and not Path(storage[len("sqlite:///"):]).exists():
        raise SearchError(f"no study database at {storage[len('sqlite:///'):]}; give --out of a search or --storage")
    study = load_study(storage, args.study)
    s = report(study, out, top=args.top)
    print(format_report(s, show=args.show))
    print(f"report: {out / 'report'}")
    return 0


def register_cli(subparsers) -> None:
    from .cli import add_train_flags  # run takes every `mimicnet train` flag for its base config
    s = subparsers.add_parser("search", help="Bayesian hyperparameter search: show, run, report").add_subparsers(
        dest="search_cmd", required=True)

    sh = s.add_parser("show", help="print a search space (S2/S4 ranges), or list them",
                      description="Print each searched hyperparameter's range and scale, the width bounds per "
                      "constant and the dependent width. Without SPACE, list the spaces.")
    sh.add_argument("space", nargs="?", help="teacher, baseline-convK, student-convK-BUDGET (e.g. student-conv2-1M)")
    sh.set_defaults(func=cmd_show)

    r = s.add_parser("run", help="run or join a search (one worker)",
                     description="Run trials until the study holds --trials finished ones. Every trial is a normal "
                     "run folder OUT/trials/N; the objective is its validation accuracy. For many workers run the "
                     "same command on every GPU or machine with --storage postgresql://USER@HOST/DB. Training "
                     "flags set the base config (data, epochs, schedule, loss, transfer set, ...); the space sets "
                     "the rest.")
    r.add_argument("space")
    r.add_argument("--trials", type=int, required=True, help="finished trials the study should hold")
    r.add_argument("--storage", help="database URL (default: sqlite:///OUT/study.db)")
    r.add_argument("--study", help="study name (default: the space's name)")
    r.add_argument("--out", type=Path, help="folder for trial runs (default runs/search/STUDY)")
    r.add_argument("--sampler", choices=SAMPLERS, default="gp", help="gp (default), tpe or random")
    r.add_argument("--startup", type=int, default=4, help="quasi-random start-up trials before gp/tpe (4)")
    r.add_argument("--search-seed", dest="search_seed", type=int, default=0, help="sampler seed (0)")
    r.add_argument("--index", type=Path, help="run-index CSV (default OUT/index.csv)")
    r.add_argument("--heartbeat", type=int, default=HEARTBEAT_INTERVAL,
                   help=f"seconds between a running trial's heartbeats ({HEARTBEAT_INTERVAL})")
    r.add_argument("--grace", type=int, default=GRACE_PERIOD,
                   help=f"a trial silent this long is failed and retried once ({GRACE_PERIOD} s)")
    add_train_flags(r)
    r.set_defaults(func=cmd_run)

    rp = s.add_parser("report", help="best trials, top-5 mean, importances, optimisation history plot",
                      description="Summarise a study: best trials, mean ± std of the top 5 by validation accuracy "
                      "(and their test accuracy), parameter importances, and OUT/report/history.png.")
    rp.add_argument("--out", type=Path, help="the search's folder (holds study.db; the report goes to OUT/report)")
    rp.add_argument("--storage", help="database URL (default sqlite:///OUT/study.db)")
    rp.add_argument("--study", help="study name (default: the storage's only study)")
    rp.add_argument("--top", type=int, default=5, help="trials in the top-k mean (5, as Figure 1)")
    rp.add_argument("--show", type=int, default=10, help="trials to list")
    rp.set_defaults(func=cmd_report)
