"""The data a run trains on, held as tensors (uint8 images or float feature rows): train / val / test.

Loaded once per process and passed to every run, search trial and stage that needs it: the archive is
parsed and hashed once, not once per trial.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path

import torch

from .cifar import DataError, check_labels, load_cifar, no_labels_error, split_train_val


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


def load_train_data(path, max_train: int | None = None, labels: str = "fine") -> TrainData:
    """A CIFAR-10 or CIFAR-100 archive or folder as train (first N after the validation split) / val / test
    splits, with the labels of set `labels` (fine | coarse: CIFAR-100's 20 superclasses); or a folder of class
    subfolders of PNG/JPEG images (data.images, 32×32)."""
    if not path:
        raise DataError("no data: pass --data ARCHIVE (a CIFAR-10 or CIFAR-100 .tar.gz or folder)")
    from .images import is_image_folder, load_image_folder  # images imports this module
    if is_image_folder(path):
        return load_image_folder(path).with_labels(labels).limited(max_train)
    c = load_cifar(path, labels)
    if c.x_train is None:
        what = "train" if c.dataset == "cifar100" else "data_batch_*"
        raise DataError(f"{path}: holds no training batches ({what}), only test data")
    sets = {}
    for name, (y_train, y_test, classes) in c.label_sets.items():
        _, y_tr, _, y_val = split_train_val(c.x_train, y_train)
        sets[name] = (y_tr, y_val, y_test, len(classes))
    x_tr, y_tr, x_val, y_val = split_train_val(c.x_train, c.y_train)
    test = Split(c.x_test, c.y_test) if c.x_test is not None else None
    data = TrainData(Split(x_tr, y_tr), Split(x_val, y_val), test, len(c.classes), c.sha256, source=str(Path(c.source)),
                     labels=c.labels, dataset=c.dataset, label_sets=sets)
    return data.limited(max_train)
