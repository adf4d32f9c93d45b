"""The transfer set (SPEC S1): N epochs of augmented training images, each labelled ONCE with the teacher's
(ensemble-averaged) logits, stored so every student sees the same data in the same order.

A transfer set is one folder of raw little-endian arrays, epoch-major (row e*n + i is the i-th image the
student sees in epoch e):

    images.u8         rows × 3×32×32 uint8   the augmented images, exactly as the teacher saw them
                                             (absent in replay mode: rebuilt from the params)
    logits.f16|.f32   rows × C               the teacher's logits for those images
    source.i32        rows                   index of the source image in the training split
    params.f32        rows × 9               augmentation params (augment.PARAM_KEYS order: hue, sat_scale,
                                             sat_shift, val_scale, val_shift, size, x0, y0, flip)
    train_labels.i32  n                      true labels of the training split (labels of row r are
                                             train_labels[source[r]]; for a hard-label term)
    manifest.json     written LAST: config, counts, shapes, dtypes, sha256 of every file, teacher identity,
                      data sha256, code version, seconds. Without it the set is incomplete.

While generating, the arrays live under `*.partial` names next to `progress.json` (epochs finished, written
atomically after that epoch's data is fsynced). Running the same command again continues at the first
unfinished epoch; nothing random is carried between epochs (epoch e draws its permutation and augmentation
from a generator seeded by (seed, e)), so a resumed set is byte-identical to an uninterrupted one, and the
first k epochs of a longer set are the k-epoch set.

Shards (many workers, studies/work.py): `generate_shard` makes epochs a..b-1 as a set of their own in
OUT/shards/e{a}-{b} (the same bytes those epochs have in the whole set: epoch e is drawn from (seed, e)),
and `merge_shards` checks every shard against its manifest's checksums, concatenates them in epoch order
into the whole set's files and writes its manifest: the set one `generate` would have made.

Memory does not grow with the number of epochs: each chunk is written with os.pwrite at its offset. (Writing
through np.memmap would keep every dirty page in the process's RSS until it is flushed.)
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from tqdm import tqdm

from ..core import artifacts
from ..core.errors import UserError
from ..data.augment import IMAGE_SIZE, PARAM_KEYS, AugmentConfig, apply_params, sample_params, to_uint8
from ..data.cifar import LABELS
from ..data.splits import TrainData, load_train_data
from ..models.inference import predict_logits, resolve_device
from ..train.batches import epoch_generator
from .ensemble import load_teacher, teacher_info

__all__ = ["TransferError", "TransferConfig", "TransferSet", "generate", "verify"]

FORMAT = "mimicnet-transfer-1"
# Replay sets rebuild their images from params through data.augment's resize: a set made with another
# resize (mimicnet 0.1's bicubic) would rebuild other images than its teacher labelled, so replay sets
# name theirs, in their identity and manifest, and one without it is refused.
REPLAY_RESIZE = "spline3"
IMAGE_BYTES = 3 * IMAGE_SIZE * IMAGE_SIZE
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

def _layout(mode: str, logits_dtype: str, rows: int, n: int, num_classes: int) -> dict[str, dict]:
    """{key: {name, dtype, shape}} of the files of a set; shape[0] is the number of rows in the file."""
    files = {}
    if mode == "images":
        files["images"] = {"name": "images.u8", "dtype": "uint8", "shape": [rows, 3, IMAGE_SIZE, IMAGE_SIZE]}
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


def _on_chunk(epoch: int, start: int) -> None:
    """Called after each chunk is written (a test hook: raising here simulates a crash mid-epoch)."""


# ----------------------------------------------------------------------------------------------
# Generation

def generate(cfg: TransferConfig, teacher_dir, out_dir, log: Callable[[str], None] = print,
             progress: bool | None = None, data: TrainData | None = None, first_epoch: int = 0) -> dict:
    """Generate (or finish, or return the finished) transfer set in `out_dir`; returns manifest.json's content.

    `teacher_dir`: an ensemble folder (ensemble.json) or a training run folder / checkpoint (a single teacher),
    or an external teacher folder (teacher.json: a TorchScript or torch.export model, distill.external).
    Only the training split is used (validation removed, capped by max_train). `first_epoch`: the set holds
    epochs first_epoch..first_epoch+cfg.epochs-1 of a longer one (a shard)."""
    plan = _plan(cfg, teacher_dir, out_dir, data, first_epoch)
    finished = _finished_manifest(plan, log)
    if finished is not None:
        return finished
    done, seconds = _resume_point(plan, log)
    plan.out.mkdir(parents=True, exist_ok=True)
    t_run, made = time.perf_counter(), 0
    if done < plan.epochs:
        seconds, made = _make_epochs(plan, done, seconds, progress)
    return _finish(plan, seconds, made, run_seconds=time.perf_counter() - t_run)


@dataclass
class _Plan:
    """Everything one generate() call knows before it writes anything: the config, the training split, the
    teacher's identity, the set's identity and its file layout."""
    cfg: TransferConfig
    teacher_dir: object
    out: Path
    device: torch.device
    x: torch.Tensor
    y: torch.Tensor
    data_sha: str
    tinfo: dict
    ident: str
    files: dict[str, dict]
    first: int = 0           # a shard's first epoch in the whole set

    @property
    def n(self) -> int:
        return len(self.x)

    @property
    def epochs(self) -> int:
        return self.cfg.epochs

    @property
    def rows(self) -> int:
        return self.epochs * self.n

    @property
    def num_classes(self) -> int:
        return self.tinfo["num_classes"]

    @property
    def manifest_path(self) -> Path:
        return self.out / "manifest.json"

    @property
    def progress_path(self) -> Path:
        return self.out / "progress.json"

    def write_progress(self, k: int, secs: float) -> None:
        artifacts.write_json(self.progress_path, {"format": FORMAT + "-progress", "identity": self.ident,
                                                  "epochs_done": k, "epochs": self.epochs, "n": self.n,
                                                  "seconds": round(secs, 3), "config": self.cfg,
                                                  "teacher": self.tinfo})


def _plan(cfg: TransferConfig, teacher_dir, out_dir, data: TrainData | None, first: int = 0) -> _Plan:
    """Validate the config, read the training split and the teacher's identity (not its weights)."""
    cfg.validate()
    out = Path(out_dir)
    device = resolve_device(cfg.device)
    x, y, data_sha, data_classes = _train_split(cfg.data, cfg.max_train, data, cfg.labels)
    tinfo = teacher_info(teacher_dir)  # its weights are loaded only when there is work to do
    if tinfo["num_classes"] != data_classes:
        raise TransferError(f"{teacher_dir}: teacher has {tinfo['num_classes']} outputs, {cfg.data} {data_classes} "
                            f"classes ({cfg.labels} labels)")
    ident = _shard_identity(_identity(cfg, tinfo["sha256"], data_sha), first)
    files = _layout(cfg.mode, cfg.logits_dtype, cfg.epochs * len(x), len(x), tinfo["num_classes"])
    return _Plan(cfg, teacher_dir, out, device, x, y, data_sha, tinfo, ident, files, first)


def _shard_identity(ident: str, first: int) -> str:
    """A shard's identity: that of a set of its epochs, and where they start (a whole set's is unchanged)."""
    return ident if first == 0 else hashlib.sha256(f"{ident}:from-epoch:{first}".encode()).hexdigest()[:16]


def _finished_manifest(plan: _Plan, log: Callable[[str], None]) -> dict | None:
    """The manifest of a set already finished in plan.out (None if there is none); another set's is an error."""
    if not plan.manifest_path.exists():
        return None
    man = artifacts.read_json(plan.manifest_path)
    if isinstance(man, dict) and man.get("identity") == plan.ident:
        plan.progress_path.unlink(missing_ok=True)  # left behind by a kill right after the manifest was written
        verify(plan.out)  # reused only if every file is the one the manifest describes
        log(f"{plan.out}: transfer set already complete (files verified)")
        return man
    raise TransferError(f"{plan.out}: holds another transfer set (config, teacher or data differ); "
                        "choose another --out")


def _resume_point(plan: _Plan, log: Callable[[str], None]) -> tuple[int, float]:
    """(epochs done, seconds spent on them) of an unfinished set of the same identity; (0, 0.0) for a new one."""
    if not plan.progress_path.exists():
        log(f"transfer set: {plan.epochs} epochs × {plan.n} images ({plan.cfg.mode}) from {plan.tinfo['kind']} "
            f"{plan.tinfo['path']} -> {plan.out}")
        return 0, 0.0
    prog = artifacts.read_json(plan.progress_path)
    if prog.get("identity") != plan.ident:
        raise TransferError(f"{plan.out}: holds an unfinished transfer set of another config, teacher or data; "
                            "choose another --out")
    log(f"resuming {plan.out} at epoch {prog['epochs_done']}/{plan.epochs}")
    return prog["epochs_done"], prog["seconds"]


def _make_epochs(plan: _Plan, done: int, seconds: float, progress: bool | None) -> tuple[float, int]:
    """Label and write epochs done..epochs-1 into the *.partial files; returns (total seconds, images made)."""
    if not plan.progress_path.exists():
        plan.write_progress(0, 0.0)  # before any data: a folder with partial files always has a progress.json
    teacher, _ = load_teacher(plan.teacher_dir, plan.device)
    fds = {k: os.open(plan.out / (f["name"] + ".partial"), os.O_WRONLY | os.O_CREAT, 0o666)
           for k, f in plan.files.items()}
    try:
        with artifacts.naming(plan.out / (plan.files[next(iter(plan.files))]["name"] + ".partial")):
            _reset_partials(plan, fds, done)   # a full disk on pwrite/fsync: named (the images file, the largest)
            return _Labeller(plan, teacher, fds).run(done, seconds, progress)
    finally:
        for fd in fds.values():
            os.close(fd)


def _reset_partials(plan: _Plan, fds: dict[str, int], done: int) -> None:
    """Cut the partial files back to the last finished epoch; (re)write the true labels."""
    for k, f in plan.files.items():
        if k != "train_labels":  # drop whatever a killed run wrote past the last finished epoch
            os.ftruncate(fds[k], done * plan.n * f["row_bytes"])
    _pwrite(fds["train_labels"], plan.y.numpy().astype(np.int32), 0)
    os.ftruncate(fds["train_labels"], plan.files["train_labels"]["bytes"])


class _Labeller:
    """Labels epochs with the teacher and writes them at their offsets in the open *.partial files."""

    def __init__(self, plan: _Plan, teacher, fds: dict[str, int]):
        cfg, n = plan.cfg, plan.n
        self.plan, self.cfg, self.n, self.teacher, self.fds = plan, cfg, n, teacher, fds
        self.aug = cfg.augment_config()
        self.x_dev = plan.x.to(plan.device)
        np_logits = _LOGITS[cfg.logits_dtype][1]
        # One chunk's images and logits, reused for every chunk: no per-chunk allocation churn on the host.
        self.img_buf = np.empty((min(cfg.chunk, n), 3, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
        self.logit_buf = np.empty((min(cfg.chunk, n), plan.num_classes), np_logits)
        self.made = 0

    def run(self, done: int, seconds: float, progress: bool | None) -> tuple[float, int]:
        """Epochs done..epochs-1, each fsynced before progress.json says so; returns (total seconds, images made)."""
        self.bar = tqdm(total=self.plan.rows, initial=done * self.n, unit="img", unit_scale=True,
                        desc="transfer set", disable=None if progress is None else not progress)
        for e in range(done, self.plan.epochs):
            t0 = time.perf_counter()
            self.epoch(e)
            for fd in self.fds.values():
                os.fsync(fd)  # the epoch's data is on disk before progress says so
            seconds += time.perf_counter() - t0
            self.plan.write_progress(e + 1, seconds)
        self.bar.close()
        return seconds, self.made

    def epoch(self, e: int) -> None:
        """Epoch e, chunk by chunk; its permutation and augmentation come from a generator seeded by (seed, e)."""
        g = epoch_generator(self.cfg.seed, self.plan.first + e, _STREAM)  # a shard's e-th: the whole set's
        perm = torch.randperm(self.n, generator=g)
        params = sample_params(self.n, self.aug, g)  # CPU draws: the same params whatever the device
        for a in range(0, self.n, self.cfg.chunk):
            b = min(a + self.cfg.chunk, self.n)
            z = self.label_chunk(perm, params, a, b)
            if not np.isfinite(z).all():
                raise TransferError(f"{self.plan.out}: teacher logits are not finite in {self.cfg.logits_dtype} at "
                                    f"epoch {e} (overflow? try --logits-dtype float32)")
            self.write_chunk(e * self.n + a, z, perm[a:b], {k: v[a:b] for k, v in params.items()})
            self.made += b - a
            self.bar.update(b - a)
            _on_chunk(e, a)

    def label_chunk(self, perm: torch.Tensor, params: dict[str, torch.Tensor], a: int, b: int) -> np.ndarray:
        """Rows a:b of the epoch into the buffers, one teacher batch at a time; returns the chunk's logits."""
        cfg, device = self.cfg, self.plan.device
        for c in range(a, b, cfg.batch_size):  # one teacher batch
            d = min(c + cfg.batch_size, b)
            imgs = _augment(self.x_dev, perm[c:d].to(device), {k: v[c:d] for k, v in params.items()})
            # the teacher labels exactly the uint8 images that are stored (or replayed)
            self.logit_buf[c - a:d - a] = predict_logits(self.teacher, imgs, 1.0, device, cfg.batch_size).numpy()
            if "images" in self.fds:
                self.img_buf[c - a:d - a] = imgs.cpu().numpy()
        return self.logit_buf[:b - a]

    def write_chunk(self, r: int, z: np.ndarray, idx: torch.Tensor, params: dict[str, torch.Tensor]) -> None:
        """The chunk's rows at row offset r of every file."""
        fds, files = self.fds, self.plan.files
        if "images" in fds:
            _pwrite(fds["images"], self.img_buf[:len(z)], r * IMAGE_BYTES)
        _pwrite(fds["logits"], z, r * files["logits"]["row_bytes"])
        _pwrite(fds["source"], idx.numpy().astype(np.int32), r * 4)
        _pwrite(fds["params"], _params_to_array(params), r * files["params"]["row_bytes"])


def _finish(plan: _Plan, seconds: float, made: int, run_seconds: float) -> dict:
    """Final names, checksums, then the manifest, last. Each step is redone safely after a kill."""
    out, files = plan.out, plan.files
    for f in files.values():
        partial, final = out / (f["name"] + ".partial"), out / f["name"]
        if partial.exists():
            os.replace(partial, final)
        if not final.exists() or final.stat().st_size != f["bytes"]:
            raise TransferError(f"{final}: missing or of the wrong size after generation; delete {out} and regenerate")
    _fsync_dir(out)
    t_hash = time.perf_counter()
    shas = _hash_files([out / f["name"] for f in files.values()])
    for f, sha in zip(files.values(), shas):
        f["sha256"] = sha
    manifest = _manifest(plan, seconds, time.perf_counter() - t_hash, made, run_seconds)
    artifacts.write_json(plan.manifest_path, manifest)
    plan.progress_path.unlink(missing_ok=True)
    return artifacts.read_json(plan.manifest_path)  # exactly what a later call or TransferSet sees


def _manifest(plan: _Plan, seconds: float, hash_seconds: float, made: int, run_seconds: float) -> dict:
    cfg, rows = plan.cfg, plan.rows
    data_path = Path(cfg.data).expanduser().resolve()
    return {
        "format": FORMAT, "identity": plan.ident, "config": cfg, "mode": cfg.mode,
        **({"resize": REPLAY_RESIZE} if cfg.mode == "replay" else {}),
        "epochs": plan.epochs, **({"first_epoch": plan.first} if plan.first else {}),
        "n": plan.n, "rows": rows, "num_classes": plan.num_classes,
        "layout": "epoch-major: row e*n + i is the i-th image of epoch e; little-endian",
        "params_columns": list(PARAM_KEYS), "files": plan.files, "teacher": plan.tinfo,
        "data": {"path": str(data_path), "sha256": plan.data_sha, "n_train": plan.n, "max_train": cfg.max_train},
        "device": str(plan.device), "seconds": round(seconds, 3), "hash_seconds": round(hash_seconds, 3),
        "images_per_second": round(rows / seconds, 1) if seconds > 0 else None,
        "this_run": {"images": made, "seconds": round(run_seconds, 3)},
        "code_version": artifacts.code_version(),
    }


# ----------------------------------------------------------------------------------------------
# Shards

def shard_ranges(epochs: int, most: int = 32) -> list[tuple[int, int]]:
    """The epoch ranges [a, b) a set of `epochs` is made in by many workers: at most `most`, equal but the last."""
    size = -(-epochs // most)
    return [(a, min(a + size, epochs)) for a in range(0, epochs, size)]


def _shard_dir(out_dir, a: int, b: int) -> Path:
    return Path(out_dir) / "shards" / f"e{a}-{b}"


def generate_shard(cfg: TransferConfig, teacher_dir, out_dir, first: int, last: int,
                   log: Callable[[str], None] = print, data: TrainData | None = None) -> dict | None:
    """Epochs first..last-1 of the set `cfg` describes (cfg.epochs: the whole set's) as a set of their own in
    OUT/shards/e{first}-{last}; resumable like any set. Nothing when the whole set is already finished in OUT
    (its manifest names its identity; merge_shards checks its files)."""
    whole = _plan(cfg, teacher_dir, out_dir, data)
    if whole.manifest_path.exists() and artifacts.read_json(whole.manifest_path).get("identity") == whole.ident:
        return None
    return generate(dataclasses.replace(cfg, epochs=last - first), teacher_dir, _shard_dir(out_dir, first, last),
                    log=log, data=data, first_epoch=first)


def merge_shards(cfg: TransferConfig, teacher_dir, out_dir, log: Callable[[str], None] = print,
                 data: TrainData | None = None, ranges: list[tuple[int, int]] | None = None) -> dict:
    """The whole set from its shards (`ranges`, by default shard_ranges(cfg.epochs)): each checked against its manifest (identity, epochs,
    every file's sha256), concatenated in epoch order into the *.partial files, then finished like a
    generated set (checksums, manifest last); the shards are deleted after. A finished set is returned."""
    plan = _plan(cfg, teacher_dir, out_dir, data)
    finished = _finished_manifest(plan, log)
    if finished is not None:
        return finished
    t0, seconds, parts = time.perf_counter(), 0.0, []
    for a, b in ranges or shard_ranges(cfg.epochs):
        d = _shard_dir(plan.out, a, b)
        man = verify(d)
        want = _shard_identity(_identity(dataclasses.replace(cfg, epochs=b - a), plan.tinfo["sha256"], plan.data_sha), a)
        if man.get("identity") != want or man.get("epochs") != b - a:
            raise TransferError(f"{d}: not epochs {a}..{b - 1} of this transfer set; delete it and run again")
        seconds += float(man.get("seconds") or 0.0)
        parts.append((d, man))
    log(f"transfer set: merging {len(parts)} shard(s) -> {plan.out}")
    for key, f in plan.files.items():
        with artifacts.naming(plan.out / (f["name"] + ".partial")), \
                open(plan.out / (f["name"] + ".partial"), "wb") as dst:
            for d, man in (parts[:1] if key == "train_labels" else parts):  # the true labels: once
                with open(d / man["files"][key]["name"], "rb") as src:
                    shutil.copyfileobj(src, dst, 1 << 24)
            dst.flush()
            os.fsync(dst.fileno())
    result = _finish(plan, seconds, 0, run_seconds=time.perf_counter() - t0)
    shutil.rmtree(plan.out / "shards", ignore_errors=True)
    return result


# ----------------------------------------------------------------------------------------------
# Reading

def _read_manifest(path: Path) -> dict:
    man_path = path / "manifest.json"
    if not man_path.exists():
        prog_path = path / "progress.json"
        if prog_path.exists():
            try:
                prog = json.loads(prog_path.read_text())
                state = f"{prog['epochs_done']}/{prog['epochs']} epochs"
            except (OSError, ValueError, KeyError):
                state = "unreadable progress.json"
            raise TransferError(f"{path}: incomplete transfer set ({state}); run the same `mimicnet transfer` "
                                "command to finish it")
        if not path.is_dir():
            raise TransferError(f"{path}: no such transfer set folder")
        raise TransferError(f"{path}: not a transfer set (no manifest.json)")
    try:
        man = json.loads(man_path.read_text())
    except ValueError as e:
        raise TransferError(f"{man_path}: not valid JSON ({e})") from None
    if not isinstance(man, dict) or man.get("format") != FORMAT:
        raise TransferError(f"{man_path}: not a mimicnet transfer set manifest")
    return man


class TransferSet:
    """A finished transfer set, read in contiguous row ranges (never loaded whole).

    `read(start, stop)` -> (images uint8 [k,3,32,32], teacher logits float32 [k,C], true labels int64 [k]),
    all on `device`. In replay mode the images are rebuilt from the source images and the stored params,
    bit-identical to what the teacher saw when read on the device type the set was generated on."""

    def __init__(self, path, device="cpu", data=None):
        self.path = Path(path)
        self.device = torch.device(device)
        self.manifest = man = _read_manifest(self.path)
        self.epochs, self.n, self.rows = man["epochs"], man["n"], man["rows"]
        self.num_classes, self.mode, self.teacher = man["num_classes"], man["mode"], man["teacher"]
        self.files = man["files"]
        for f in self.files.values():
            p = self.path / f["name"]
            size = p.stat().st_size if p.exists() else None
            if size != f["bytes"]:
                raise TransferError(f"{p}: {'missing' if size is None else f'{size} bytes'}, the manifest says "
                                    f"{f['bytes']}; the set is damaged")
        self.train_labels = torch.from_numpy(self._read("train_labels", 0, self.n).astype(np.int64)).to(self.device)
        self._x = None
        if self.mode == "replay":
            if man.get("resize") != REPLAY_RESIZE:
                raise TransferError(f"{self.path}: a replay set made with another resize ({man.get('resize', 'bicubic')}"
                                    f", not {REPLAY_RESIZE}): its images cannot be rebuilt; delete it and run again")
            self._x = self._source_images(data).to(self.device)

    def _source_images(self, data) -> torch.Tensor:
        d = self.manifest["data"]
        path = data or d["path"]
        if not Path(path).exists():
            raise TransferError(f"{self.path}: replay needs the training images of {d['path']} (sha256 "
                                f"{d['sha256'][:12]}…), which are not there; pass data=… to point at a copy")
        x, _, sha, _ = _train_split(str(path), d["max_train"])
        if sha != d["sha256"]:
            raise TransferError(f"{path}: sha256 {sha[:12]}… is not the data this replay set was made from "
                                f"({d['sha256'][:12]}…)")
        return x

    def _read(self, key: str, start: int, count: int) -> np.ndarray:
        f = self.files[key]
        items = math.prod(f["shape"][1:])
        a = np.fromfile(self.path / f["name"], dtype=np.dtype(f["dtype"]).newbyteorder("<"), count=count * items,
                        offset=start * f["row_bytes"])
        if len(a) != count * items:
            raise TransferError(f"{self.path / f['name']}: short read at row {start}; the set is damaged")
        return a.reshape(count, *f["shape"][1:])

    def __len__(self) -> int:
        return self.rows

    def epoch_rows(self, e: int) -> tuple[int, int]:
        if not 0 <= e < self.epochs:
            raise IndexError(f"epoch {e} out of range (set has {self.epochs})")
        return e * self.n, (e + 1) * self.n

    def read(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not 0 <= start <= stop <= self.rows:
            raise IndexError(f"rows {start}:{stop} out of range (set has {self.rows})")
        k = stop - start
        src = torch.from_numpy(self._read("source", start, k).astype(np.int64)).to(self.device)
        logits = torch.from_numpy(self._read("logits", start, k).astype(np.float32)).to(self.device)
        if self.mode == "images":
            imgs = torch.from_numpy(self._read("images", start, k)).to(self.device)
        else:
            p = _array_to_params(torch.from_numpy(self._read("params", start, k)).to(self.device))
            imgs = _augment(self._x, src, p)
        return imgs, logits, self.train_labels[src]


# Sets verified by this process: resolved folder -> (size, mtime_ns, inode) of each file when it was hashed.
# A process hashes a set once (generate's reuse, then every student that reads it), and again if a file changed.
_VERIFIED: dict[str, tuple] = {}


def _repair(path: Path) -> str:
    return (f"the set is damaged: delete {path} and run the same command again (`mimicnet reproduce` or "
            "`mimicnet transfer` regenerates it)")


def verify(path) -> dict:
    """Check every file against the manifest -- its size, then its sha256 -- before a set is used; returns the
    manifest, a TransferError naming the damaged file and how to repair it otherwise."""
    path = Path(path)
    man = _read_manifest(path)
    files = list(man["files"].values())
    stats = []
    for f in files:
        p = path / f["name"]
        if not p.exists():
            raise TransferError(f"{p}: missing; {_repair(path)}")
        st = p.stat()
        if st.st_size != f["bytes"]:
            raise TransferError(f"{p}: {st.st_size} bytes, the manifest says {f['bytes']} (truncated?); {_repair(path)}")
        stats.append((st.st_size, st.st_mtime_ns, st.st_ino))
    key = str(path.resolve())
    if _VERIFIED.get(key) == tuple(stats):
        return man
    bad = [f["name"] for f, sha in zip(files, _hash_files([path / f["name"] for f in files])) if sha != f["sha256"]]
    if bad:
        raise TransferError(f"{path / bad[0]}: checksum mismatch in {', '.join(bad)} (sha256 differs from the "
                            f"manifest); {_repair(path)}")
    _VERIFIED[key] = tuple(stats)
    return man


# ----------------------------------------------------------------------------------------------
# CLI

def _human(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if nbytes < 1000 or unit == "TB":
            return f"{nbytes:.1f} {unit}" if unit != "B" else f"{int(nbytes)} B"
        nbytes /= 1000
