"""Pruners: stop a search's poor trials early, from their validation curves (multi-fidelity search).

Every trial reports its validation accuracy after each epoch (step = epochs done); the pruner compares it
with what other trials had at the same epoch. Rungs are in epochs: the first at ``min_epochs``, then every
``eta`` times further (``sha``, ``hyperband``). Registered by name, as plain functions.

    none        every trial runs its whole schedule (the paper's Spearmint search)
    median      stop a trial below the median of earlier trials at the same epoch (after min_epochs)
    sha         asynchronous successive halving: at each rung keep the best 1/eta of the trials so far
    hyperband   several successive-halving brackets with different first rungs (up to max_epochs)

The samplers and pruned trials: Optuna's GPSampler fits its Gaussian process to COMPLETE trials only
(optuna/samplers/_gp/sampler.py reads states=(COMPLETE,)), so it learns nothing from a pruned trial and may
propose the same poor region again; TPESampler ranks PRUNED trials by the epoch they reached and their last
value (optuna/samplers/_tpe/sampler.py), so it learns from them. With a pruner the presets therefore use
``tpe`` (multivariate, constant liar); ``gp`` with a pruner still works, on the completed trials alone.
"""
from __future__ import annotations

from typing import Callable

import optuna

from .spaces import SearchError

PRUNERS: dict[str, Callable[..., optuna.pruners.BasePruner]] = {}


def register_pruner(name: str):
    def add(fn):
        PRUNERS[name] = fn
        return fn
    return add


@register_pruner("none")
def _none(min_epochs: int, max_epochs: int, eta: int, n_startup: int) -> optuna.pruners.BasePruner:
    return optuna.pruners.NopPruner()


@register_pruner("median")
def _median(min_epochs: int, max_epochs: int, eta: int, n_startup: int) -> optuna.pruners.BasePruner:
    # no verdict before n_startup trials have finished, nor before a trial's min_epochs-th epoch
    return optuna.pruners.MedianPruner(n_startup_trials=n_startup, n_warmup_steps=min_epochs - 1)


@register_pruner("sha")
def _sha(min_epochs: int, max_epochs: int, eta: int, n_startup: int) -> optuna.pruners.BasePruner:
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=min_epochs, reduction_factor=eta,
                                                  min_early_stopping_rate=0)


@register_pruner("hyperband")
def _hyperband(min_epochs: int, max_epochs: int, eta: int, n_startup: int) -> optuna.pruners.BasePruner:
    return optuna.pruners.HyperbandPruner(min_resource=min_epochs, max_resource=max(max_epochs, min_epochs),
                                          reduction_factor=eta)


def check_pruner(name: str, min_epochs: int = 1, eta: int = 3) -> None:
    """A pruner's name and rungs, checked where they enter (flags, presets)."""
    if name not in PRUNERS:
        raise SearchError(f"--pruner must be one of {', '.join(PRUNERS)}, not {name!r}")
    if not isinstance(min_epochs, int) or isinstance(min_epochs, bool) or min_epochs < 1:
        raise SearchError(f"--pruner-min-epochs must be an integer >= 1, not {min_epochs!r}")
    if not isinstance(eta, int) or isinstance(eta, bool) or eta < 2:
        raise SearchError(f"--pruner-eta must be an integer >= 2, not {eta!r}")


def make_pruner(name: str = "none", min_epochs: int = 1, max_epochs: int = 1, eta: int = 3,
                n_startup: int = 4) -> optuna.pruners.BasePruner:
    check_pruner(name, min_epochs, eta)
    return PRUNERS[name](min_epochs, max_epochs, eta, n_startup)


def rungs(name: str, min_epochs: int, max_epochs: int, eta: int) -> list[int]:
    """The epochs at which `sha`/`hyperband` decide (for messages and the cost estimate)."""
    if name in ("none", "median"):
        return []
    out, r = [], min_epochs
    while r < max_epochs:
        out.append(r)
        r *= eta
    return out
