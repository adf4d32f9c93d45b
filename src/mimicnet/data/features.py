"""Any fixed-length feature data (SPEC S5: TIMIT is licensed, so the mimic recipe must run on any vectors).

A feature file is an ``.npz`` with ``x_train, y_train, x_test, y_test`` (N×D features, integer labels),
optionally ``x_val, y_val`` (else the last 20% of train is validation, as for the CIFAR subsets) and an
unlabeled ``x_transfer`` (the mimic transfer set; else the students read x_train). Any D, any number of
classes (``num_classes`` in the file, else 1 + the largest training label).

Features are standardised per feature with the *training split's* mean and std (as speech features are);
the pipeline then standardises each vector too (``train.preprocess``, which all runs share). The models
are the fixed-length families (``mlp`` deep teachers, ``mlp_lin`` 250L-8k mimics, ``conv0``, ``linear``)
and training is ``train.fit`` itself, given the data and, for mimics, the batches and the loss; image
augmentation does not apply (``augment=False``).

    mimicnet features make-npz --from cifar-10-subset-python.tar.gz --out cifar8.npz --size 8
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..core.artifacts import file_sha256
from ..core.errors import ConfigError
from .cifar import load_cifar, split_train_val
from .splits import Split, TrainData

__all__ = ["FeatureError", "FeatureData", "load_features", "make_npz"]

REQUIRED = ("x_train", "y_train", "x_test", "y_test")


class FeatureError(ConfigError):
    """A feature file that cannot be used; str(e) is one line naming the file."""


@dataclass
class FeatureData(TrainData):
    x_transfer: torch.Tensor | None = None     # unlabeled transfer rows (standardised like the rest)


def _err(path, problem: str) -> FeatureError:
    return FeatureError(" ".join(f"{path}: {problem}".split()))


def load_features(path, val_fraction: float = 0.2) -> FeatureData:
    """Read, check and standardise a feature file (see the module docstring)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise _err(path, "file not found") from None
    except (OSError, ValueError) as e:
        raise _err(path, f"not a readable .npz file ({str(e).splitlines()[0][:100]})") from None
    missing = [k for k in REQUIRED if k not in arrays]
    if ("x_val" in arrays) != ("y_val" in arrays):
        missing.append("y_val" if "x_val" in arrays else "x_val")
    if missing:
        raise _err(path, f"missing array(s) {', '.join(missing)} (needs {', '.join(REQUIRED)}; "
                         f"x_val/y_val together; x_transfer optional)")
    xs = {k: v for k, v in arrays.items() if k.startswith("x_")}
    for k, v in xs.items():
        if v.ndim != 2:
            raise _err(path, f"{k} must be N×D feature rows, has shape {v.shape}")
        if not (np.issubdtype(v.dtype, np.number) and np.isfinite(v).all()):
            raise _err(path, f"{k} must hold finite numbers ({v.dtype})")
    width = xs["x_train"].shape[1]
    for k, v in xs.items():
        if v.shape[1] != width:
            raise _err(path, f"{k} has {v.shape[1]} features but x_train has {width}")
    for split in ("train", "val", "test"):
        if f"y_{split}" not in arrays:
            continue
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if y.ndim != 1 or len(y) != len(x):
            raise _err(path, f"y_{split} must be {len(x)} labels (one per row of x_{split}), has shape {y.shape}")
        if not np.issubdtype(y.dtype, np.integer):
            raise _err(path, f"y_{split} must be integer class labels, not {y.dtype}")
    num_classes = int(arrays["num_classes"]) if "num_classes" in arrays else int(arrays["y_train"].max()) + 1
    for split in ("train", "val", "test"):
        y = arrays.get(f"y_{split}")
        if y is not None and len(y) and (y.min() < 0 or y.max() >= num_classes):
            raise _err(path, f"y_{split} has labels out of range [0, {num_classes}): min {y.min()}, max {y.max()}")
    if len(arrays["x_train"]) < 2:
        raise _err(path, "x_train needs at least 2 rows")

    x_tr, y_tr = arrays["x_train"], arrays["y_train"]
    if "x_val" in arrays:
        x_val, y_val = arrays["x_val"], arrays["y_val"]
    else:  # the last 20%, unshuffled, like data.split_train_val on the subsets
        cut = len(x_tr) - round(len(x_tr) * val_fraction)
        x_tr, y_tr, x_val, y_val = x_tr[:cut], y_tr[:cut], x_tr[cut:], y_tr[cut:]
    mean = x_tr.astype(np.float64).mean(0)
    std = x_tr.astype(np.float64).std(0)
    std[std < 1e-8] = 1.0  # constant features stay constant (zero) rather than blowing up

    def t(x):
        return torch.from_numpy(((x.astype(np.float64) - mean) / std).astype(np.float32))

    def lab(y):
        return torch.from_numpy(y.astype(np.int64))

    sha = file_sha256(path)
    return FeatureData(Split(t(x_tr), lab(y_tr)), Split(t(x_val), lab(y_val)),
                       Split(t(arrays["x_test"]), lab(arrays["y_test"])), num_classes, sha, (width,), str(path),
                       t(arrays["x_transfer"]) if "x_transfer" in arrays else None)


# ----------------------------------------------------------------------------------------------
# A feature file from a CIFAR archive, for tests and demos: downsampled pixels.

def make_npz(archive, out, size: int = 8, grey: bool = False, transfer_mirror: bool = False) -> dict:
    """Area-downsample every image to size×size (grey: mean of the channels), flatten to [0,1] floats, keep
    the archive's own train/validation split (x_val, y_val) and test set. ``transfer_mirror``: add an
    unlabeled x_transfer = the training rows plus their left-right mirrors."""
    if size < 1 or 32 % size:
        raise ConfigError(f"--size must divide 32 (1, 2, 4, 8, 16, 32), not {size}")
    c = load_cifar(archive)
    if c.x_train is None or c.x_test is None:
        raise ConfigError(f"{archive}: needs both training and test batches to make a feature file")

    def feats(x: torch.Tensor, mirror: bool = False) -> np.ndarray:
        x = x.float() / 255.0
        if mirror:
            x = x.flip(-1)
        x = F.avg_pool2d(x, 32 // size)
        if grey:
            x = x.mean(1, keepdim=True)
        return x.reshape(len(x), -1).numpy().astype(np.float32)

    x_tr, y_tr, x_val, y_val = split_train_val(c.x_train, c.y_train)
    arrays = {"x_train": feats(x_tr), "y_train": y_tr.numpy(), "x_val": feats(x_val), "y_val": y_val.numpy(),
              "x_test": feats(c.x_test), "y_test": c.y_test.numpy(), "num_classes": np.int64(len(c.classes))}
    if transfer_mirror:
        arrays["x_transfer"] = np.concatenate([arrays["x_train"], feats(x_tr, mirror=True)])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    return {k: tuple(v.shape) for k, v in arrays.items()}
