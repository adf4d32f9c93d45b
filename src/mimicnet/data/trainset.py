"""What every stage trains and evaluates on: the splits of one data set (Split, TrainData), wherever they came from
(a CIFAR archive or folder, a folder of images: data/splits.py)."""
from __future__ import annotations

from dataclasses import dataclass, field
from numbers import Integral

import torch

from .cifar import DataError, check_labels, no_labels_error


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
    # Keyword-only (after the fields subclasses add): which label set y holds ("fine": CIFAR-10's classes,
    # CIFAR-100's 100, a feature file's; "coarse": CIFAR-100's 20), what the data are, and every label set
    # the source has, {name: (y train, y val, y test or None, number of classes)}, for `with_labels`.
    labels: str = field(default="fine", kw_only=True)
    dataset: str = field(default="", kw_only=True)  # "cifar10" | "cifar100" | "" (a feature file)
    label_sets: dict = field(default_factory=dict, kw_only=True, repr=False, compare=False)
    # an image folder's splits by file name and their rule (data.images); {} for an archive
    files: dict = field(default_factory=dict, kw_only=True, repr=False, compare=False)

    def limited(self, max_train: int | None) -> "TrainData":
        """The same data with only the first `max_train` training rows (validation and test unchanged)."""
        if max_train is None:
            return self
        if isinstance(max_train, bool) or not isinstance(max_train, Integral) or max_train < 1:
            raise DataError(f"max_train must be an integer >= 1 (or none: all images), got {max_train!r}")
        sets = {k: (y_tr[:max_train], y_val, y_te, n) for k, (y_tr, y_val, y_te, n) in self.label_sets.items()}
        return TrainData(Split(self.train.x[:max_train], self.train.y[:max_train]), self.val, self.test,
                         self.num_classes, self.sha256, self.in_shape, self.source, labels=self.labels,
                         dataset=self.dataset, label_sets=sets,
                         files={**self.files, "train": self.files["train"][:max_train]} if self.files else {})

    def with_labels(self, labels: str) -> "TrainData":
        """The same images with the labels of set `labels` (fine | coarse) and its number of classes: a
        one-line DataError when the data have no such set (coarse labels of CIFAR-10, of a feature file)."""
        check_labels(labels)
        if labels == self.labels:
            return self
        if labels not in self.label_sets:
            raise no_labels_error(self.source or "the data", self.dataset or "a feature file", labels,
                                  tuple(self.label_sets) or (self.labels,))
        y_tr, y_val, y_te, n = self.label_sets[labels]
        test = None if self.test is None else Split(self.test.x, y_te)
        return TrainData(Split(self.train.x, y_tr), Split(self.val.x, y_val), test, n, self.sha256, self.in_shape,
                         self.source, labels=labels, dataset=self.dataset, label_sets=self.label_sets,
                         files=self.files)
