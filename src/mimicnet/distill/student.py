"""Student wiring: a mimic run reads its targets from a transfer set and is scored against its teacher.

`train_run(cfg, run_dir, data, teachers=...)` is what every stage above calls to train one run: a hard-label
run goes straight to `train.fit`; a student (a mimic loss) gets the transfer set's batches, its loss, and
its teacher, loaded once per process from `teachers` (a `Teachers` cache) and shared by every trial.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import torch

from ..core.errors import ConfigError
from ..data.augment import IMAGE_SHAPE, is_image_shape
from ..data.splits import TrainData, load_train_data
from ..core.artifacts import CheckpointError, read_json
from ..models.inference import accuracy, predict_logits, preprocess, resolve_device
from ..train.config import TrainConfig, check_distill
from ..train.loop import fit
from ..train.losses import make_loss
from ..train.run import RunInfo, Teacher, index_failed_run
from .ensemble import load_teacher, teacher_content_id, teacher_info
from .online import OnlineBatches
from .transfer import TransferSet, verify
from .transfer_read import content_id


def transfer_batches(cfg: TrainConfig, ts, device: torch.device, logit_norm=None) -> Callable[[int], Iterator]:
    """epoch -> iterator of (inputs, (teacher logits, true labels)) in the transfer set's stored order:
    student epoch e reads transfer epoch e mod E, so every student sees the same images in the same order.
    Rows are read in large contiguous slices (several batches at a time) and cut into batches on device."""
    per_read = cfg.optim.batch_size * max(1, 8192 // cfg.optim.batch_size)
    mean, std = logit_norm if logit_norm is not None else (None, None)

    def batches(epoch: int):
        start, stop = ts.epoch_rows(epoch % ts.epochs)
        for lo in range(start, stop, per_read):
            x, z, y = ts.read(lo, min(lo + per_read, stop))
            x, z, y = x.to(device, non_blocking=True), z.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if mean is not None:
                z = (z - mean) / std
            for i in range(0, len(x), cfg.optim.batch_size):
                yield (preprocess(x[i:i + cfg.optim.batch_size], cfg.data.input_scale),
                       (z[i:i + cfg.optim.batch_size], y[i:i + cfg.optim.batch_size]))
    batches.steps_per_epoch = -(-ts.n // cfg.optim.batch_size)
    return batches


def logit_stats(ts) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-logit mean and std over the whole transfer set, streamed (for normalize_logits)."""
    s = s2 = None
    n = 0
    for e in range(ts.epochs):
        start, stop = ts.epoch_rows(e)
        for lo in range(start, stop, 65536):
            _, z, _ = ts.read(lo, min(lo + 65536, stop))
            z = z.double()
            s = z.sum(0) if s is None else s + z.sum(0)
            s2 = z.pow(2).sum(0) if s2 is None else s2 + z.pow(2).sum(0)
            n += len(z)
    mean = s / n
    std = (s2 / n - mean.pow(2)).clamp_min(1e-12).sqrt()
    return mean.float(), std.float()


class Teachers:
    """Teachers and transfer sets opened once per process: every trial of a search (and every arm of a
    study) that mimics the same teacher shares one loaded model, its test logits and one open transfer set."""

    def __init__(self):
        self._teachers: dict[tuple[str, str], Teacher] = {}
        self._sets: dict[tuple[str, str], TransferSet] = {}
        self._stats: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}

    def transfer_set(self, path, device) -> TransferSet:
        """The transfer set at `path`, its files checked against the manifest's sha256 before first use."""
        key = (str(Path(path).resolve()), str(device))
        if key not in self._sets:
            verify(path)
            self._sets[key] = TransferSet(path, device=device)
        return self._sets[key]

    def logit_stats(self, path, device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (str(Path(path).resolve()), str(device))
        if key not in self._stats:
            self._stats[key] = logit_stats(self.transfer_set(path, device))
        return self._stats[key]

    def teacher(self, path, device, info: dict | None = None, data: TrainData | None = None) -> Teacher:
        """The teacher at `path` (ensemble or run folder). Its accuracies come from `info` (a transfer set's
        record of it, kept in the students' checkpoints) or, when that has none, are measured on `data`'s
        validation and test splits."""
        key = (str(path), str(device))
        if key not in self._teachers:
            model, tinfo = load_teacher(path, device)
            info = info or {}
            val, test = info.get("val_acc"), info.get("test_acc")
            if val is None and data is not None:
                val = accuracy(predict_logits(model, data.val.x, 1.0, device), data.val.y)
                test = accuracy(predict_logits(model, data.test.x, 1.0, device), data.test.y) \
                    if data.test is not None else None
            self._teachers[key] = Teacher(str(path), model, val, test, record=info or None)
        return self._teachers[key]


def train_run(cfg: TrainConfig, run_dir, data: TrainData | None = None, *, info: RunInfo = RunInfo(), index=None,
              teachers: Teachers | None = None, log=print, on_epoch=None) -> dict:
    """Train one run of any kind (see the module docstring); returns its results.json content.
    `on_epoch`: see train.loop.fit (a search's pruner)."""
    data = data if data is not None else load_train_data(cfg.data.path, cfg.data.max_train, cfg.data.labels)
    data = data.with_labels(cfg.data.labels)  # the caller's data may hold another label set (CIFAR-100)
    check_distill(cfg)
    if not cfg.mimics:
        return fit(cfg, run_dir, data, info=info, index=index, log=log, on_epoch=on_epoch)
    teachers = teachers or Teachers()  # none shared: this call opens its own
    if cfg.distill.distill_mode == "online":
        return _train_online(cfg, run_dir, data, info=info, index=index, teachers=teachers, log=log,
                             on_epoch=on_epoch)
    if not cfg.distill.transfer:
        raise ConfigError(f"loss {cfg.optim.loss!r} mimics a teacher: pass --transfer DIR (a transfer set)")
    device = resolve_device(cfg.execution.device)
    ts = teachers.transfer_set(cfg.distill.transfer, device)
    if ts.num_classes != data.num_classes:
        labelled = ts.manifest.get("config", {}).get("labels", "fine")
        raise ConfigError(f"{cfg.distill.transfer}: its teacher has {ts.num_classes} outputs ({labelled} labels), "
                          f"the data {data.num_classes} classes ({cfg.data.labels} labels); give the --labels the "
                          "transfer set was made with")
    shape = tuple(ts.files["images"]["shape"][1:]) if "images" in ts.files else IMAGE_SHAPE  # replay: CIFAR's
    if shape != tuple(data.in_shape):
        raise ConfigError(f"{cfg.distill.transfer}: its images are {'×'.join(map(str, shape))}, the data's "
                          f"{'×'.join(map(str, data.in_shape))}; give the data (and image size) the set was made from")
    norm = teachers.logit_stats(cfg.distill.transfer, device) if cfg.distill.normalize_logits else None
    batches = transfer_batches(cfg, ts, device, None if norm is None else (norm[0].to(device), norm[1].to(device)))
    teacher = teachers.teacher(_teacher_path(ts), device, ts.teacher) if ts.teacher.get("path") else None
    return fit(cfg, run_dir, data, batches=batches, loss_fn=make_loss(cfg), teacher=teacher, logit_norm=norm,
               info=info, index=index, log=log, on_epoch=on_epoch, sources=run_sources(cfg))


def _train_online(cfg: TrainConfig, run_dir, data: TrainData, *, info, index, teachers: Teachers, log,
                  on_epoch) -> dict:
    """A student whose teacher labels each of its augmented batches (distill.online), checked first: the
    teacher must exist and have as many outputs as the data has classes."""
    if not is_image_shape(data.in_shape):
        raise ConfigError(f"--distill online augments and mixes images: the data is of shape {tuple(data.in_shape)}")
    device = resolve_device(cfg.execution.device)
    try:
        record = teacher_info(cfg.distill.teacher)
        record["content_id"] = teacher_content_id(cfg.distill.teacher, record)  # names the run; checked on resume
    except (CheckpointError, OSError) as e:
        raise ConfigError(f"--teacher {cfg.distill.teacher}: {e}") from None
    if record.get("num_classes") not in (None, data.num_classes):
        raise ConfigError(f"--teacher {cfg.distill.teacher}: it has {record['num_classes']} outputs, the data "
                          f"{data.num_classes} classes")
    teacher = teachers.teacher(cfg.distill.teacher, device, record, data)
    return fit(cfg, run_dir, data, batches=OnlineBatches(cfg, data.train, teacher.model, device),
               loss_fn=make_loss(cfg), teacher=teacher, info=info, index=index, log=log, on_epoch=on_epoch,
               sources={"teacher": record["content_id"]})


def run_sources(cfg: TrainConfig) -> dict[str, str]:
    """What a student learns from, by content, for its run id (TrainConfig.run_id, beside the data's sha256):
    its transfer set's content id, or its online teacher's; {} for a run on the labels."""
    if not cfg.mimics:
        return {}
    if cfg.distill.distill_mode == "online":
        return {"teacher": teacher_content_id(cfg.distill.teacher)}
    return {"transfer": content_id(read_json(Path(cfg.distill.transfer) / "manifest.json"))}


def _teacher_path(ts: TransferSet) -> str:
    """The transfer set's teacher where its manifest recorded it or, when that is gone (the results folder
    has moved), at the same place relative to a folder above the set's, if it is the same teacher (sha256)."""
    recorded = Path(ts.teacher["path"])
    if recorded.exists():
        return str(recorded)
    parts = recorded.parts
    for up in ts.path.resolve().parents[:3]:
        for k in range(min(len(parts) - 1, 4), 0, -1):
            cand = up.joinpath(*parts[-k:])
            try:
                if cand.exists() and teacher_info(cand)["sha256"] == ts.teacher.get("sha256"):
                    return str(cand)
            except CheckpointError:
                continue
    return str(recorded)


def teacher_record(cfg: TrainConfig) -> dict | None:
    """What a failed student's index row says of its teacher: its transfer set's record of it, or an online
    student's teacher's own record."""
    if cfg.mimics and cfg.distill.distill_mode == "online" and cfg.distill.teacher:
        try:
            return teacher_info(cfg.distill.teacher)
        except (CheckpointError, OSError):
            return None
    manifest = Path(cfg.distill.transfer) / "manifest.json" if cfg.mimics and cfg.distill.transfer else None
    if manifest is None or not manifest.exists():
        return None
    return read_json(manifest).get("teacher", {})


def index_failed(index, cfg: TrainConfig, run_dir, info: RunInfo, **kw) -> None:
    """The index row of a run that diverged (or was pruned: status=, epochs=, val_acc=; see
    train.run.index_failed_run), naming its teacher for a student."""
    index_failed_run(index, cfg, Path(run_dir), info, teacher_record(cfg), **kw)
