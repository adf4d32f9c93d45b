"""Learning-rate schedules, registered by name: small state machines stored in every checkpoint (so a
resumed run continues the same schedule). `lr_at(epoch, frac)` gives the rate inside an epoch, `step(epoch,
val_err)` records a finished epoch and says whether to stop."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from ..core.errors import ConfigError

SCHEDULES: dict[str, Callable] = {}      # name -> make(cfg) -> schedule
SCHEDULE_TYPES: dict[str, type] = {}     # name -> class (to restore one from a checkpoint)


def register_schedule(name: str):
    def deco(cls):
        SCHEDULE_TYPES[name] = cls
        SCHEDULES[name] = cls.from_config
        return cls
    return deco


@register_schedule("plateau")
@dataclass
class PlateauSchedule:
    """Halve lr when val error has not improved for `patience` epochs, never within `cooldown` epochs
    after a halving; stop after `stop_patience` epochs without improvement or once lr0/lr > max_decay."""
    lr0: float
    patience: int = 10
    cooldown: int = 8
    stop_patience: int = 30
    max_decay: float = 2000.0
    factor: float = 0.5
    lr: float = field(default=float("nan"))
    best_err: float = float("inf")
    best_epoch: int = -1
    last_cut: int = -(10 ** 9)

    @classmethod
    def from_config(cls, cfg) -> "PlateauSchedule":  # S3 exactly
        return cls(cfg.optim.lr, cfg.optim.patience, cfg.optim.cooldown, cfg.optim.stop_patience, cfg.optim.max_decay)

    @staticmethod
    def warmup_epochs(cfg) -> float:
        return 0.0

    def __post_init__(self):
        if math.isnan(self.lr):
            self.lr = self.lr0

    def step(self, epoch: int, val_err: float) -> bool:
        """Record the val error of a finished epoch; update lr; return True when training should stop."""
        if val_err < self.best_err:
            self.best_err, self.best_epoch = val_err, epoch
        stale = epoch - self.best_epoch
        if stale >= self.stop_patience:
            return True
        if stale >= self.patience and epoch - self.last_cut > self.cooldown:
            self.lr *= self.factor
            self.last_cut = epoch
        return self.lr0 / self.lr > self.max_decay

    def lr_at(self, epoch: int, frac: float) -> float:
        return self.lr


@register_schedule("onecycle")
@dataclass
class OneCycleSchedule:
    """Linear warm-up to lr0 over the first 20% of max_epochs, then linear decay to zero: for short
    fixed-length runs (cpu presets), where a plateau schedule never gets to cut. Stops at max_epochs."""
    lr0: float
    max_epochs: int
    warmup: float = 0.2
    best_err: float = float("inf")
    best_epoch: int = -1

    @classmethod
    def from_config(cls, cfg) -> "OneCycleSchedule":
        return cls(cfg.optim.lr, cfg.optim.max_epochs)

    @staticmethod
    def warmup_epochs(cfg) -> float:
        return OneCycleSchedule.warmup * cfg.optim.max_epochs  # the field's default: what from_config builds

    def lr_at(self, epoch: int, frac: float) -> float:
        t = (epoch + frac) / self.max_epochs
        if t < self.warmup:
            return self.lr0 * (0.1 + 0.9 * t / self.warmup)
        return self.lr0 * max(0.0, (1 - t) / (1 - self.warmup))

    def step(self, epoch: int, val_err: float) -> bool:
        if val_err < self.best_err:
            self.best_err, self.best_epoch = val_err, epoch
        return epoch + 1 >= self.max_epochs

    @property
    def lr(self) -> float:
        return self.lr_at(self.best_epoch, 0)


def warmup_epochs(cfg) -> float:
    """Epochs before a config's schedule reaches its peak rate (0 for a schedule without warm-up): a search
    that prunes must judge trials after it, not on how fast they start."""
    try:
        return SCHEDULE_TYPES[cfg.optim.schedule].warmup_epochs(cfg)
    except KeyError:
        raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, not {cfg.optim.schedule!r}") from None


def make_schedule(cfg):
    try:
        return SCHEDULES[cfg.optim.schedule](cfg)
    except KeyError:
        raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, not {cfg.optim.schedule!r}") from None
