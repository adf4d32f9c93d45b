"""The teacher compress distils: a mimicnet run or ensemble, a TorchScript or .pt2 file, or a folder of one,
opened once, checked on the data (its accuracy, what it was trained on) and given a folder the transfer set
names it by."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..core import artifacts
from ..core.errors import ConfigError
from ..core.hardware import hardware
from ..data.splits import TrainData
from ..distill import external
from ..distill.ensemble import load_teacher, teacher_info
from .compress_config import NOT_IDENTITY, CompressConfig


# ----------------------------------------------------------------------------------------------
# The teacher

# ----------------------------------------------------------------------------------------------
# The run's record

class CompressRun:
    """OUT/compress.json: the config, its identity, the teacher's and the data's, stage times."""

    def __init__(self, cfg: CompressConfig, out: Path, command: str, teacher: OpenedTeacher, data: TrainData):
        self.cfg, self.out = cfg, out
        self.path = out / "compress.json"
        old = artifacts.read_json(self.path) if self.path.exists() else {}
        if not isinstance(old, dict):
            raise ConfigError(f"{self.path}: not a compress record; choose another --out")
        key = artifacts.config_hash(cfg, exclude=NOT_IDENTITY)
        if old and old.get("config_hash") != key:
            raise ConfigError(f"{out}: holds a compress run of another config (budget, epochs, ...: see "
                              f"{self.path.name}); choose another --out")
        old_t = (old.get("teacher") or {}).get("identity")
        if old_t and old_t != teacher.identity:
            raise ConfigError(f"{out}: made from another teacher (identity {old_t[:12]}…; {teacher.path} is "
                              f"{teacher.identity[:12]}…: another file or normalisation); choose another --out")
        old_d = (old.get("data") or {}).get("sha256")
        if old_d and old_d != data.sha256:
            raise ConfigError(f"{out}: made from other data (sha256 {old_d[:12]}…, {cfg.data} is {data.sha256[:12]}…); "
                              "give the archive it was made from, or choose another --out")
        self.record = {
            "format": "mimicnet-compress-1", "command": command, "config": artifacts.to_jsonable(cfg),
            "config_hash": key, "code_version": artifacts.code_version(), "hardware": hardware(),
            "teacher": {"identity": teacher.identity, "kind": teacher.kind, "path": str(teacher.path.resolve()),
                        "file_sha256": teacher.file_sha256 or None,
                        "normalize": teacher.norm.to_dict() if teacher.norm is not None else None,
                        "normalize_from": teacher.norm_source or None},
            "data": {"path": cfg.data, "sha256": data.sha256, "labels": data.labels, "num_classes": data.num_classes,
                     "n_train": len(data.train.y), "n_val": len(data.val.y),
                     "n_test": 0 if data.test is None else len(data.test.y)},
            "stages": old.get("stages", {})}
        if data.files:  # an image folder: its splits by file name (data.images)
            self.record["data"].update(kind="image folder", split_rule=data.files["rule"],
                                       classes=data.files["classes"], split_files="split.json")
            artifacts.write_json(out / "split.json", data.files)
        self.save()

    def save(self) -> None:
        artifacts.write_json(self.path, self.record)

    def stage(self, name: str, fn, log: Callable[[str], None] = print):
        t0 = time.perf_counter()
        log(f"\n== {name}")
        result = fn()
        self.record["stages"][name] = round(self.record["stages"].get(name, 0) + time.perf_counter() - t0, 1)
        self.save()
        return result


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
