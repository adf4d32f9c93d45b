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

import argparse
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .train import (ConfigError, Split, TrainConfig, TrainData, epoch_generator, fit, mimic_loss, predict_teacher,
                    preprocess, resolve_device)

__all__ = ["FeatureError", "FeatureData", "load_features", "make_npz", "mimic_features", "teacher_logits"]

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

    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return FeatureData(Split(t(x_tr), lab(y_tr)), Split(t(x_val), lab(y_val)),
                       Split(t(arrays["x_test"]), lab(arrays["y_test"])), num_classes, sha, (width,),
                       t(arrays["x_transfer"]) if "x_transfer" in arrays else None)


# ----------------------------------------------------------------------------------------------
# Mimic learning on features: teacher logits on the transfer rows, then train.fit with those targets.

def teacher_logits(teacher, x: torch.Tensor, device) -> torch.Tensor:
    """Logits of a teacher (run folder, checkpoint or ensemble folder) on standardised feature rows."""
    return predict_teacher(teacher, x, device)


def mimic_features(cfg: TrainConfig, teacher, data: FeatureData, run_dir, log=print, index=None,
                   extra_meta: dict | None = None) -> dict:
    """Train a student on ``teacher``'s logits over x_transfer (or x_train when the file has none) with
    ``cfg.loss`` (l2-logits, l2-probs, kl, softmax-mse), through ``train.fit``. Returns fit's results, which
    include the test-set mimic metrics (mse, agreement with the teacher) and the teacher's accuracy."""
    if cfg.loss == "ce":
        raise ConfigError("mimic_features trains on a teacher's outputs: choose a mimic loss, not 'ce'")
    if cfg.augment:
        raise ConfigError("image augmentation does not apply to feature data: set augment=False")
    device = resolve_device(cfg.device)
    x = data.x_transfer if data.x_transfer is not None else data.train.x
    y = torch.full((len(x),), -1, dtype=torch.long) if data.x_transfer is not None else data.train.y
    if cfg.hard_weight > 0 and data.x_transfer is not None:
        raise ConfigError("hard_weight needs labels, but x_transfer is unlabeled")
    z = teacher_logits(teacher, x, device)
    xd, zd, yd = x.to(device), z.to(device), y.to(device)
    norm = None
    if cfg.normalize_logits:  # Ba & Caruana: regress each logit standardised over the transfer rows
        norm = (zd.mean(0), zd.std(0, unbiased=False).clamp_min(1e-6))
        zd = (zd - norm[0]) / norm[1]

    def batches(epoch: int):
        perm = torch.randperm(len(xd), generator=epoch_generator(cfg.seed, epoch)).to(device)
        for i in range(0, len(xd), cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            yield preprocess(xd[idx], cfg.input_scale), (zd[idx], yd[idx])
    batches.steps_per_epoch = -(-len(xd) // cfg.batch_size)

    teacher_meta = {**(extra_meta or {}), "teacher": str(teacher), "teacher_rows": len(x),
                    "teacher_source": "x_transfer" if data.x_transfer is not None else "x_train"}
    # fit() scores the student against this teacher on the test set (mimic error, agreement) and records
    # it in results.json and the index row, as for image students
    return fit(cfg, run_dir, data=data, batches=batches, loss_fn=mimic_loss(cfg), extra_meta=teacher_meta,
               index=index, log=log, logit_norm=norm)


# ----------------------------------------------------------------------------------------------
# A feature file from a CIFAR archive, for tests and demos: downsampled pixels.

def make_npz(archive, out, size: int = 8, grey: bool = False, transfer_mirror: bool = False) -> dict:
    """Area-downsample every image to size×size (grey: mean of the channels), flatten to [0,1] floats, keep
    the archive's own train/validation split (x_val, y_val) and test set. ``transfer_mirror``: add an
    unlabeled x_transfer = the training rows plus their left-right mirrors."""
    from .data import load_cifar, split_train_val
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


def cmd_make_npz(args) -> int:
    shapes = make_npz(args.source, args.out, args.size, args.grey, args.transfer_mirror)
    print(" ".join(f"{k} {'x'.join(map(str, s)) or '()'}" for k, s in shapes.items()))
    print(f"wrote {args.out}")
    return 0


def register_cli(subparsers) -> None:
    p = subparsers.add_parser("features", help="fixed-length feature data (.npz): make one from CIFAR")
    sub = p.add_subparsers(dest="features_cmd", required=True)
    m = sub.add_parser("make-npz", help="a feature .npz of downsampled pixels from a CIFAR archive",
                       description="Write x_train/y_train, x_val/y_val (the archive's own split), x_test/y_test "
                       "of area-downsampled, flattened pixels: a stand-in for licensed speech features.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    m.add_argument("--from", dest="source", required=True, help="CIFAR archive (.tar.gz) or folder")
    m.add_argument("--out", required=True, type=Path, help="the .npz to write")
    m.add_argument("--size", type=int, default=8, help="downsample to SIZE×SIZE pixels")
    m.add_argument("--grey", action="store_true", help="one grey channel instead of three colours")
    m.add_argument("--transfer-mirror", action="store_true",
                   help="add an unlabeled x_transfer: the training rows and their mirror images")
    m.set_defaults(func=cmd_make_npz)
