"""CIFAR-10.1 (Recht et al. 2018): a fresh CIFAR-10 test set, shipped as a pair of .npy files
(``cifar10.1_v6_data.npy``: uint8 N×32×32×3, channels last; ``cifar10.1_v6_labels.npy``: int N), and
`load_test_source`, which reads that pair or any CIFAR-format archive into the same `Cifar` object.

The pair is a test set only (x_train is None, so `select_split(d, 'val')` says the split is not there).
Its sha256 is that of the data file's bytes followed by the labels file's bytes. The .npy files are read
with allow_pickle=False: an object array cannot run code, it is refused like any other wrong dtype.
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import torch

from .cifar import (C100_TEST, C100_TRAIN, CIFAR100_FOLDER, CLASSES, FOLDER, TEST_BATCH, TRAIN_BATCHES, Cifar, _error,
                    check_labels, load_cifar, no_labels_error)
from .images import image_folder_as_cifar, is_image_folder

DATA_SUFFIX = "_data.npy"
LABELS_SUFFIX = "_labels.npy"


def is_npy_source(path) -> bool:
    """True when `path` names a .npy file, or a folder holding a *_data.npy / *_labels.npy pair and no CIFAR
    batches (a folder with both is read as the CIFAR archive it also is)."""
    path = Path(path).expanduser()
    if path.suffix.lower() == ".npy":
        return True
    if not path.is_dir():
        return False
    if (path / FOLDER).is_dir() or (path / CIFAR100_FOLDER).is_dir() or \
            any((path / b).is_file() for b in (*TRAIN_BATCHES, TEST_BATCH, C100_TRAIN, C100_TEST)):
        return False
    return any(path.glob("*" + DATA_SUFFIX)) or any(path.glob("*" + LABELS_SUFFIX))


def npy_pair(path) -> tuple[Path, Path]:
    """(data .npy, labels .npy) from either file of the pair or the folder that holds it."""
    path = Path(path).expanduser()
    if path.is_dir():
        stems = sorted({p.name[:-len(DATA_SUFFIX)] for p in path.glob("*" + DATA_SUFFIX)}
                       | {p.name[:-len(LABELS_SUFFIX)] for p in path.glob("*" + LABELS_SUFFIX)})
        if len(stems) > 1:
            names = ", ".join(s + DATA_SUFFIX for s in stems)
            raise _error(path, f"holds several .npy test sets ({names}); give the one to use as --data")
        if not stems:
            raise _error(path, f"no *{DATA_SUFFIX} / *{LABELS_SUFFIX} pair in this folder")
        return path / (stems[0] + DATA_SUFFIX), path / (stems[0] + LABELS_SUFFIX)
    name = path.name
    if name.endswith(DATA_SUFFIX):
        return path, path.with_name(name[:-len(DATA_SUFFIX)] + LABELS_SUFFIX)
    if name.endswith(LABELS_SUFFIX):
        return path.with_name(name[:-len(LABELS_SUFFIX)] + DATA_SUFFIX), path
    raise _error(path, f"a .npy test set must be named NAME{DATA_SUFFIX} with NAME{LABELS_SUFFIX} beside it "
                 "(as cifar10.1_v6_data.npy and cifar10.1_v6_labels.npy)")


def _load_npy(path: Path, partner: Path | None = None) -> tuple[np.ndarray, bytes]:
    """(array, the file's bytes): read once, so the bytes hashed are the bytes parsed. `partner`: the file
    of the pair the user named, when this one was found from its name."""
    if path.is_dir():
        raise _error(path, "is a folder, not a .npy file")
    if not path.exists():
        raise _error(path, "no such file" + (f" (needed beside {partner.name}: a .npy test set is a pair "
                                             f"NAME{DATA_SUFFIX} + NAME{LABELS_SUFFIX})" if partner else ""))
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise _error(path, f"cannot read file ({e.strerror or e})") from None
    if raw.startswith(b"PK\x03\x04"):
        raise _error(path, "is an .npz archive, not a single .npy array")
    if not raw.startswith(b"\x93NUMPY"):  # np.load would take anything else for a pickle
        raise _error(path, "not a readable .npy file (no NUMPY header)")
    try:
        arr = np.load(io.BytesIO(raw), allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise _error(path, "holds Python objects, not numbers (expected a plain uint8/int array)") from None
        raise _error(path, f"not a readable .npy file ({e})") from None
    except (OSError, EOFError) as e:
        raise _error(path, f"not a readable .npy file ({type(e).__name__}: {e})") from None
    return arr, raw


def load_npy_pair(path) -> Cifar:
    """A CIFAR-10.1-style test set (see module docstring) as a test-only `Cifar`, images N×3×32×32 uint8."""
    given = Path(path).expanduser()
    data_path, labels_path = npy_pair(given)
    named = None if given.is_dir() or not given.exists() else given  # the file the user gave, when it is there
    x, x_raw = _load_npy(data_path, partner=named if named != data_path else None)
    y, y_raw = _load_npy(labels_path, partner=named if named != labels_path else None)
    data_path, labels_path = data_path.resolve(), labels_path.resolve()
    if x.ndim != 4 or x.shape[1:] != (32, 32, 3):
        raise _error(data_path, f"images have shape {x.shape}, expected (N, 32, 32, 3) (channels last)")
    if x.dtype != np.uint8:
        if x.dtype.kind not in "iu" or (x.size and (x.min() < 0 or x.max() > 255)):
            raise _error(data_path, f"images have dtype {x.dtype} or values outside 0..255, expected uint8")
        x = x.astype(np.uint8)
    if y.ndim != 1 or (y.size and y.dtype.kind not in "iu"):
        raise _error(labels_path, f"labels have dtype {y.dtype} and shape {y.shape}, expected integers of shape (N,)")
    if len(y) != len(x):
        raise _error(labels_path, f"{len(y)} labels for the {len(x)} images of {data_path.name}")
    bad = y[(y < 0) | (y >= len(CLASSES))]
    if bad.size:
        raise _error(labels_path, f"labels outside 0..{len(CLASSES) - 1} (found {bad[0]})")
    sha = hashlib.sha256(x_raw)
    sha.update(y_raw)
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    return Cifar(None, None, images, torch.from_numpy(y.astype(np.int64)), CLASSES, str(data_path), sha.hexdigest())


def load_test_source(path, labels: str = "fine", image_size: int = 32) -> Cifar:
    """Any data `mimicnet evaluate` takes: a CIFAR-10 or CIFAR-100 archive or folder (`load_cifar`, with the
    labels of set `labels`), a .npy pair (CIFAR-10's classes: fine labels only), or a folder of class folders of
    images (data.images, resized to `image_size`: the model's)."""
    check_labels(labels)
    path = Path(path).expanduser()
    if not path.exists() and path.suffix.lower() != ".npy":
        raise _error(path, "no such file or directory")
    if is_npy_source(path):
        if labels != "fine":
            raise no_labels_error(path, "a CIFAR-10.1 .npy pair", labels)
        return load_npy_pair(path)
    if is_image_folder(path):  # class folders of PNG/JPEG (data.images): the same splits as a run on them
        if labels != "fine":
            raise no_labels_error(path, "a folder of images", labels)
        return image_folder_as_cifar(path, image_size)
    return load_cifar(path, labels)
