"""Samplers: scrambled-Sobol start-up, then GPSampler (default), multivariate TPE, or seeded random draws."""
from __future__ import annotations

import contextlib
import warnings
import zlib

import optuna
from optuna.distributions import FloatDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.trial import TrialState

from .spaces import SearchError, Space

SAMPLERS = ("gp", "tpe", "random")


# ---------------------------------------------------------------------------------------------------
# Samplers
# ---------------------------------------------------------------------------------------------------
def _distributions(space: Space) -> dict:
    return {p.name: FloatDistribution(p.low, p.high, log=p.log) for p in space.params}


@contextlib.contextmanager
def _quiet():
    """Optuna marks heartbeats, QMC and retries experimental, and deprecates aliases: not our users' news."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


def is_retry(t) -> bool:
    """A trial queued to run a lost trial again (its parameters and run folder): a heartbeat retry carries
    Optuna's "failed_trial", a Ctrl-C retry our "retry_of". Both are set when the trial is created."""
    return "failed_trial" in t.system_attrs or "retry_of" in t.user_attrs


def draw_number(study, trial) -> int:
    """The trial's number among fresh (non-retry) trials: what seeds its draws. A retry takes a trial number
    of its own, so seeding by the number would give every later trial of a study in which a worker was
    killed other parameters than the same study run uninterrupted; the fresh trials' order is the same."""
    return trial.number - sum(1 for t in study.get_trials(deepcopy=False) if t.number < trial.number and is_retry(t))


class TrialSeededRandomSampler(RandomSampler):
    """Uniform draws seeded by (seed, fresh trial number, parameter): reproducible whichever worker runs
    the trial, and two workers started with one seed never draw the same point."""

    def __init__(self, seed: int = 0):
        super().__init__(seed=seed)
        self._base_seed = int(seed)

    def sample_independent(self, study, trial, param_name, param_distribution):
        s = zlib.crc32(f"{self._base_seed}/{draw_number(study, trial)}/{param_name}".encode())
        return RandomSampler(seed=s).sample_independent(study, trial, param_name, param_distribution)


class TrialNumberedQMC(optuna.samplers.QMCSampler):
    """Sobol point number = the trial's fresh number (set by QMCStartupSampler before each draw). QMCSampler's own
    point counter is read and written without a transaction, so two workers starting together on one study
    drew the same point; trial numbers are handed out atomically by the storage."""

    point = 0

    def _find_sample_id(self, study, search_space) -> int:
        return self.point


class QMCStartupSampler(BaseSampler):
    """Scrambled-Sobol points until `n_startup` trials are complete, then `model`'s (relative) points.
    The search space is the space's, known before the first trial (QMCSampler alone infers it from a
    first, random trial)."""

    def __init__(self, distributions: dict, model: BaseSampler, n_startup: int, seed: int):
        self._dists = dict(distributions)
        self._model = model
        self._n_startup = int(n_startup)
        with _quiet():
            self._qmc = TrialNumberedQMC(qmc_type="sobol", scramble=True, seed=seed, warn_independent_sampling=False)
        self._seed = int(seed)
        self._fallback = TrialSeededRandomSampler(seed)
        self.name = "gp" if isinstance(model, optuna.samplers.GPSampler) else "tpe"
        # the trials the model learns from end the start-up phase: GPSampler fits COMPLETE trials only, TPE
        # also ranks PRUNED ones (by the step they reached). Counting only COMPLETE ones under a pruner that
        # stops most trials would keep a TPE study on Sobol points for good.
        self._learns_from = (TrialState.COMPLETE,) if self.name == "gp" else (TrialState.COMPLETE, TrialState.PRUNED)
        self.phase: dict[int, str] = {}  # trial number -> qmc | gp | tpe | retry (the trial's user attr)

    def reseed_rng(self) -> None:
        self._model.reseed_rng()

    def infer_relative_search_space(self, study, trial):
        return dict(self._dists)

    def sample_relative(self, study, trial, search_space):
        if "fixed_params" in trial.system_attrs or trial.params:
            self.phase[trial.number] = "retry"
            return {}  # a queued retry: its parameters are given, spend no QMC point or GP fit on it
        if len(study.get_trials(deepcopy=False, states=self._learns_from)) < self._n_startup:
            self.phase[trial.number] = "qmc"
            self._qmc.point = draw_number(study, trial)
            return self._qmc.sample_relative(study, trial, search_space)
        self.phase[trial.number] = self.name
        # the model's random draws seeded by (seed, trial number), like TrialSeededRandomSampler's: two workers
        # with one seed and the same history would otherwise propose the same point at the same moment
        rng = getattr(self._model, "_rng", None)
        if rng is not None and hasattr(rng, "rng"):
            rng.rng.seed(zlib.crc32(f"{self._seed}/{draw_number(study, trial)}".encode()))
        return self._model.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial) -> None:
        self._model.before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        self._model.after_trial(study, trial, state, values)


def make_sampler(space: Space, sampler: str = "gp", n_startup: int = 4, seed: int = 0):
    if sampler == "random":
        return TrialSeededRandomSampler(seed)
    with _quiet():
        if sampler == "gp":
            model = optuna.samplers.GPSampler(n_startup_trials=n_startup, seed=seed, deterministic_objective=False,
                                              warn_independent_sampling=False)
        elif sampler == "tpe":
            model = optuna.samplers.TPESampler(n_startup_trials=n_startup, seed=seed, multivariate=True,
                                               constant_liar=True, warn_independent_sampling=False)
        else:
            raise SearchError(f"sampler must be one of {', '.join(SAMPLERS)}, not {sampler!r}")
    return QMCStartupSampler(_distributions(space), model, n_startup, seed)

