"""The teacher compress distils: a mimicnet run or ensemble, a TorchScript or .pt2 file, or a folder of one,
opened once, checked on the data (its accuracy, what it was trained on) and given a folder the transfer set
names it by."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..core import artifacts
from ..core.errors import ConfigError
from ..data.splits import TrainData
from ..distill import external
from ..distill.ensemble import load_teacher, teacher_info
from .compress_config import CompressConfig


@dataclass
class OpenedTeacher:
    """A teacher loaded and checked on the data; nothing of it written yet."""
    path: Path
    kind: str                                  # external.MIMICNET | TORCHSCRIPT | EXPORT | FOLDER
    model: torch.nn.Module
    identity: str                              # what compress.json pins (sha256)
    val_acc: float
    test_acc: float | None
    num_classes: int
    params: int | None
    norm: external.Normalization | None = None
    norm_source: str = ""
    file_sha256: str = ""
    info: dict = field(default_factory=dict)

    def describe(self) -> str:
        what = {external.MIMICNET: f"mimicnet {self.info.get('kind', 'run')}", external.TORCHSCRIPT: "TorchScript",
                external.EXPORT: "torch.export program", external.FOLDER: "teacher folder"}[self.kind]
        norm = f", input {self.norm.describe()} (from {self.norm_source})" if self.norm is not None else ""
        return f"{what} {self.path}{norm}"


def open_teacher(cfg: CompressConfig, data: TrainData, device, log: Callable[[str], None] = print) -> OpenedTeacher:
    """Detect, load and check the teacher on the validation split (shape, classes, finite); writes nothing."""
    path = Path(cfg.teacher)
    kind = external.detect(path)
    flags = any(v is not None for v in (cfg.teacher_mean, cfg.teacher_std, cfg.teacher_normalize))
    if kind in (external.MIMICNET, external.FOLDER):
        if flags:
            raise ConfigError(f"--teacher-mean/--teacher-std/--teacher-normalize: {path} is a mimicnet "
                              f"{'teacher folder' if kind == external.FOLDER else 'run or ensemble'}, which knows its "
                              "own preprocessing; these flags are for TorchScript and .pt2 teachers")
        info = teacher_info(path)
        if info["num_classes"] != data.num_classes:
            raise external.TeacherError(f"{path}: {info['num_classes']} outputs per image, the data have "
                                        f"{data.num_classes} classes ({data.labels} labels)")
        model, _ = load_teacher(path, device)
        norm, source, file_sha, ident = None, "", "", info["sha256"]
        if kind == external.FOLDER:
            n = info["normalize"]
            norm = external.normalization(n.get("normalize"), n.get("mean"), n.get("std"), str(path))
            source, file_sha = "teacher.json", info["file_sha256"]
        params = info.get("params")
    else:
        file_sha = artifacts.file_sha256(path)
        loaded, meta = external.load_external(path, kind, device)
        norm, source = external.resolve_normalization(path, meta, cfg.teacher_mean, cfg.teacher_std,
                                                      cfg.teacher_normalize)
        model = external.ExternalTeacher(loaded, norm, str(path)).to(device).eval()
        ident, info, params = external.identity(file_sha, kind, norm), {}, external.n_params(loaded)
    checked = external.check_teacher(model, data, path, device)
    t = OpenedTeacher(path, kind, model, ident, checked["val_acc"], checked["test_acc"], data.num_classes, params,
                      norm, source, file_sha, info)
    test = "" if t.test_acc is None else f", test {t.test_acc:.4f}"
    log(f"teacher: {t.describe()}: {t.num_classes} classes, validation accuracy {t.val_acc:.4f}{test}")
    return t


def teacher_folder(t: OpenedTeacher, out: Path, data: TrainData) -> Path:
    """The teacher as the pipeline loads it by path: a mimicnet folder as it is; an external file behind a
    teacher folder OUT/teacher (teacher.json)."""
    if t.kind in (external.MIMICNET, external.FOLDER):
        return t.path
    folder = out / "teacher"
    external.write_teacher_folder(folder, t.path, t.kind, t.norm, t.file_sha256, {
        "num_classes": t.num_classes, "val_acc": t.val_acc, "test_acc": t.test_acc, "params": t.params,
        "data_sha256": data.sha256, "labels": data.labels})
    return folder
