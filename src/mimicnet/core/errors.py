"""One base class for every error a user can cause (bad file, flag, config): the command line prints its
message as one line and exits with status 2. Each layer subclasses it where its errors are raised."""
from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input, not a bug: the message names the file or flag and what is wrong."""


class ConfigError(UserError, ValueError):
    """A config that cannot describe a run (message says which field and why)."""


class Diverged(RuntimeError):
    """The loss became NaN/inf or exploded: a result of these hyperparameters, not a bug. `status` is what the
    run index records for it."""
    status = "failed"

    def __init__(self, message: str = "", epochs: int | None = None):
        super().__init__(message)
        self.epochs = epochs   # epochs the run had finished when it failed, when known


class Collapsed(Diverged):
    """Validation accuracy rose, then fell back towards chance (dead units, a blown-up step): the run failed,
    and its early best checkpoint is not a result of its config (train.loop.collapsed)."""
    status = "collapsed"
