"""The data a run trains on, held as tensors (uint8 images or float feature rows): train / val / test.

Loaded once per process and passed to every run, search trial and stage that needs it: the archive is
parsed and hashed once, not once per trial.
"""
from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral
from pathlib import Path

import torch

from .cifar import DataError, load_cifar, split_train_val


@dataclass
class Split:
    x: torch.Tensor          # uint8 N×3×32×32 (images) or float N×D (feature rows)
    y: torch.Tensor          # int64 N


@dataclass
class TrainData:
    train: Split
    val: Split
    test: Split | None
    num_classes: int = 10
    sha256: str = ""
    in_shape: tuple[int, ...] = (3, 32, 32)        # one example's shape: (D,) for feature vectors
    source: str = ""                               # resolved path it was read from

    def limited(self, max_train: int | None) -> "TrainData":
        """The same data with only the first `max_train` training rows (validation and test unchanged)."""
        if max_train is None:
            return self
        if isinstance(max_train, bool) or not isinstance(max_train, Integral) or max_train < 1:
            raise DataError(f"max_train must be an integer >= 1 (or none: all images), got {max_train!r}")
        return TrainData(Split(self.train.x[:max_train], self.train.y[:max_train]), self.val, self.test,
                         self.num_classes, self.sha256, self.in_shape, self.source)


def load_train_data(path, max_train: int | None = None) -> TrainData:
    """A CIFAR archive or folder as train (first N after the validation split) / val / test splits."""
    if not path:
        raise DataError("no data: pass --data ARCHIVE (a CIFAR-10 .tar.gz or folder)")
    c = load_cifar(path)
    if c.x_train is None:
        raise DataError(f"{path}: holds no training batches (data_batch_*), only test data")
    x_tr, y_tr, x_val, y_val = split_train_val(c.x_train, c.y_train)
    test = Split(c.x_test, c.y_test) if c.x_test is not None else None
    data = TrainData(Split(x_tr, y_tr), Split(x_val, y_val), test, len(c.classes), c.sha256, source=str(Path(c.source)))
    return data.limited(max_train)
