"""The transfer set's format: its constants, config and identity, the layout and checksums of its files, and the
augmentation its replay mode stores as parameters; shared by the writer (transfer.py) and the reader
(transfer_read.py)."""
from __future__ import annotations

import hashlib
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


from ..core import artifacts
from ..core.errors import UserError
from ..data.augment import IMAGE_SIZE, PARAM_KEYS, AugmentConfig, apply_params, to_uint8
from ..data.cifar import LABELS
from ..data.splits import TrainData, load_train_data



FORMAT = "mimicnet-transfer-1"
# Replay sets rebuild their images from params through data.augment's resize: a set made with another
# resize (mimicnet 0.1's bicubic) would rebuild other images than its teacher labelled, so replay sets
# name theirs, in their identity and manifest, and one without it is refused.
REPLAY_RESIZE = "spline3"
_STREAM = 17  # generator stream of the transfer set: independent of the teachers' own epoch-e augmentation
_LOGITS = {"float16": ("logits.f16", np.float16), "float32": ("logits.f32", np.float32)}


class TransferError(UserError, ValueError):
    """A transfer set (or its config) that cannot be used as asked; the message names the folder and why."""


@dataclass
class TransferConfig:
    data: str = ""                                 # CIFAR archive (.tar.gz) or folder
    max_train: int | None = None                   # use only the first N training images (after the val split)
    labels: str = "fine"                           # label set of the true labels stored (CIFAR-100: or "coarse")
    epochs: int = 160                              # S1: 160 epochs of the 40k training images
    seed: int = 0
    hsv: tuple[float, float, float, float, float] = (0.06, 0.26, 0.20, 0.21, 0.13)  # S1's fixed setting
    scale_min: int = 24
    mirror: bool = True
    logits_dtype: str = "float16"                  # float16 halves the size; its 3 significant digits are
                                                   # finer than the teacher's own run-to-run noise
    chunk: int = 4096                              # images per write
    batch_size: int = 1000                         # teacher inference batch
    mode: str = "images"                           # images: store them; replay: rebuild from params on read
    device: str = "auto"                           # not part of the set's identity

    @classmethod
    def from_dict(cls, d: dict) -> "TransferConfig":
        return artifacts.dataclass_from_dict(cls, d, TransferError, "transfer config")

    def validate(self) -> None:
        def positive_int(name):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise TransferError(f"transfer config: {name} must be an integer >= 1, got {v!r}")
        for name in ("epochs", "chunk", "batch_size"):
            positive_int(name)
        if self.max_train is not None:
            positive_int("max_train")
        if not self.data:
            raise TransferError("transfer config: no data; pass --data ARCHIVE (a CIFAR-10 or CIFAR-100 .tar.gz or "
                                "folder)")
        if self.labels not in LABELS:
            raise TransferError(f"transfer config: labels must be one of {', '.join(LABELS)}, not {self.labels!r}")
        if self.logits_dtype not in _LOGITS:
            raise TransferError(f"transfer config: logits_dtype must be float16 or float32, not {self.logits_dtype!r}")
        if self.mode not in ("images", "replay"):
            raise TransferError(f"transfer config: mode must be images or replay, not {self.mode!r}")
        if len(self.hsv) != 5:
            raise TransferError(f"transfer config: hsv takes 5 numbers (Dh,Ds,Dv,As,Av), got {len(self.hsv)}")
        try:
            self.augment_config()
        except ValueError as e:
            raise TransferError(f"transfer config: {e}") from None

    def augment_config(self) -> AugmentConfig:
        dh, ds, dv, as_, av = (float(v) for v in self.hsv)
        return AugmentConfig(dh=dh, ds=ds, dv=dv, as_=as_, av=av, scale_min=self.scale_min, mirror=self.mirror)


# ----------------------------------------------------------------------------------------------
# File layout

def _layout(mode: str, logits_dtype: str, rows: int, n: int, num_classes: int, side: int = IMAGE_SIZE) -> dict[str, dict]:
    """{key: {name, dtype, shape}} of the files of a set; shape[0] is the number of rows in the file. `side`:
    the images' (32 for CIFAR; an image folder's --image-size), which readers take from the shape."""
    files = {}
    if mode == "images":
        files["images"] = {"name": "images.u8", "dtype": "uint8", "shape": [rows, 3, side, side]}
    files["logits"] = {"name": _LOGITS[logits_dtype][0], "dtype": logits_dtype, "shape": [rows, num_classes]}
    files["source"] = {"name": "source.i32", "dtype": "int32", "shape": [rows]}
    files["params"] = {"name": "params.f32", "dtype": "float32", "shape": [rows, len(PARAM_KEYS)]}
    files["train_labels"] = {"name": "train_labels.i32", "dtype": "int32", "shape": [n]}
    for f in files.values():
        f["row_bytes"] = int(np.dtype(f["dtype"]).itemsize * math.prod(f["shape"][1:]))
        f["bytes"] = f["row_bytes"] * f["shape"][0]
    return files


def _pwrite(fd: int, arr: np.ndarray, offset: int) -> None:
    """Write an array's bytes at `offset` (little-endian; pwrite may write less than asked, so loop)."""
    mv = memoryview(np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False)).cast("B")
    while mv.nbytes:
        k = os.pwrite(fd, mv, offset)
        mv, offset = mv[k:], offset + k


def _sha256(path: Path) -> str:
    # 16 MB reads: hashlib releases the GIL on large buffers, so the files hash in parallel threads
    return artifacts.file_sha256(path, chunk=1 << 24)


def _hash_files(paths: list[Path]) -> list[str]:
    with ThreadPoolExecutor(max_workers=max(1, min(len(paths), os.cpu_count() or 1))) as pool:
        return list(pool.map(_sha256, paths))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _identity(cfg: TransferConfig, teacher_sha: str, data_sha: str) -> str:
    """What makes two sets the same set: the config, the teacher and the data, by content (so neither the
    device nor the spelling of the data's path matter; chunk and batch_size do: they set the teacher's batches)."""
    # (labels at its default, "fine", is left out: the sets made before it existed keep their identity)
    d = {"config": {k: v for k, v in artifacts.to_jsonable(cfg).items()
                    if k not in ("device", "data") and not (k == "labels" and v == "fine")},
         "teacher_sha256": teacher_sha, "data_sha256": data_sha}
    if cfg.mode == "replay":  # (image sets store their images: their identity stays what it was)
        d["resize"] = REPLAY_RESIZE
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _train_split(data: str, max_train: int | None, loaded: TrainData | None = None, labels: str = "fine"):
    """The training split the set is made from (with the labels of set `labels`): `loaded` (the caller's data,
    already read) or the archive."""
    d = loaded.with_labels(labels).limited(max_train) if loaded is not None else \
        load_train_data(data, max_train, labels)
    return d.train.x, d.train.y, d.sha256, d.num_classes


def _params_to_array(p: dict[str, torch.Tensor]) -> np.ndarray:
    # every value is exact in float32: the five HSV params are float32, size/x0/y0 <= 32, flip is 0/1
    return torch.stack([p[k].float().cpu() for k in PARAM_KEYS], dim=1).numpy()


def _array_to_params(a: torch.Tensor) -> dict[str, torch.Tensor]:
    cols = dict(zip(PARAM_KEYS, a.unbind(1)))
    return {k: (v.long() if k in ("size", "x0", "y0") else v.bool() if k == "flip" else v) for k, v in cols.items()}


# Images augmented per call. Augmentation's float intermediates (float64 resize) are ~25x the uint8 images;
# in small pieces they stay small, and host peak memory stays flat from epoch to epoch (with 1000-image
# pieces, heap fragmentation let the peak drift by ~10% over 20 epochs on CPU; with 256, ~2%). The images
# do not depend on it: augmentation is per image.
_AUG_BATCH = 256


def _augment(x: torch.Tensor, src: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """uint8 augmented images x[src] under per-row params, computed _AUG_BATCH images at a time."""
    if len(src) == 0:
        return to_uint8(apply_params(x[src], params))
    step = _AUG_BATCH if x.device.type == "cpu" else 4 * _AUG_BATCH  # fewer kernel launches on a GPU
    return torch.cat([to_uint8(apply_params(x[src[i:i + step]], {k: v[i:i + step] for k, v in params.items()}))
                      for i in range(0, len(src), step)])




def _human(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if nbytes < 1000 or unit == "TB":
            return f"{nbytes:.1f} {unit}" if unit != "B" else f"{int(nbytes)} B"
        nbytes /= 1000
