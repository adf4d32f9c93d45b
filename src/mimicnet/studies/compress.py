"""`mimicnet compress`: distil any teacher into the best shallow student at a parameter, FLOPs or latency budget.

    check the teacher -> teacher record -> transfer set -> search per family -> seed reruns -> export -> latency

The teacher is a mimicnet run or ensemble folder, a TorchScript file or a torch.export program (distill.external:
its kind is read from its content, its input normalisation from flags or its metadata). It is run on the
validation split before anything is written: an output that is not N×K logits with K the data's number of
classes, or that is not finite, is a one-line error.

Everything lands in OUT:

    compress.json      the exact config, its hash, the code version, the teacher's and the data's identity, stage times
    teacher/           an external teacher's record (teacher.json: file, sha256, normalisation, accuracies)
    transfer/          the transfer set the teacher labelled (its manifest names the teacher file's sha256)
    studies/<space>/   one search per family at the budget (student-conv2-1M, ...), trials/<n> its runs
    seeds/<space>/     the family's best trial (by validation) trained again with `seeds` other seeds
    index.csv          one row per finished run
    student/           the best student: best.safetensors + config.json (a mimicnet checkpoint: `mimicnet evaluate`),
                       student.ts, student.pt2 and student.onnx (standalone: models.export; ONNX when onnx and
                       onnxscript are installed, checked in onnxruntime in a fresh process when that is),
                       student.json (what, from where, checks).
                       A conv0/conv1 linear bottleneck is folded into the next layer only when that lowers the
                       parameter count (a narrow bottleneck folded would add parameters: it is kept, and
                       student.json says so); batch norm is always folded in the exports.
    latency.json       measured latencies (ms per batch), cached per model so a rerun prints the same numbers
    shapes.json        per architecture as shipped: parameters, multiply-adds, latency at the run's latency setting
                       (ShapeCosts: what --flops and --latency are checked against before any epoch, and the front)
    split.json         an image folder's splits by file name (data.images)
    results.json       the summary the table and the report are made from (written last), with the front: every
                       trained family and budget as validation against latency and parameters (report.compress
                       writes front.csv and the figure from it)

Every stage is skipped when its artifact is complete, so a killed `compress` continues when run again, and a
finished one trains nothing more. More --trials extend each search, more --seeds add seed runs, more families
add searches: those fields are not part of the run's identity; everything else is (another teacher, other data,
another budget or epoch count needs another --out).

Several --budget values search every family at each. --flops and --latency are ceilings checked on each
config's architecture before it trains (search.run's ceiling), like the parameter budget.

The best family is chosen on validation only: the mean validation accuracy of its seed reruns (seeds > 0), else
its search's best trial (--pick smallest-within=D: the smallest within D points of that). The exported student is that family's run (search trial or seed rerun) with the best
validation accuracy. Test accuracy and teacher agreement are reported, never used to choose.
"""
from __future__ import annotations

import json
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from optuna.trial import TrialState

from ..core import artifacts
from ..core.errors import ConfigError
from ..core.hardware import hardware
from ..core.lock import folder_lock
from ..core.units import budget_name
from ..data.cifar import LABELS
from ..data.preprocess import OLD_NAMES, STANDARDIZE
from ..data.splits import TrainData, load_train_data
from ..distill import external
from ..distill.ensemble import load_teacher, teacher_info
from ..distill.student import Teachers
from ..distill.transfer import TransferConfig, generate
from ..models.checkpoint import fold_checkpoint, model_from_checkpoint
from ..models.export import (INPUT_CONTRACT, OnnxError, Standalone, load_exported, load_torchscript,
                             onnx_missing, onnxruntime_missing, run_onnx_fresh, save_exported, save_onnx,
                             save_torchscript)
from ..models.cost import count_macs, shipped
from ..models.families import STUDENT_BOUNDS, ModelError, count_params, student_families
from ..models.inference import check_device_name, predict_logits, resolve_device
from ..models.families import build_model
from ..models.latency import BATCHES, METHOD, latency_ms, measure, onnx_latency_ms
from ..search.pruners import check_pruner
from ..search.run import best_trial, check_rungs_after_warmup, progress, run_search, trial_run_dir
from ..search.samplers import SAMPLERS
from ..search.spaces import SearchError, budget_violation, make_space
from ..train.config import TrainConfig, resolve_widths
from .main import pruning_kwargs, rerun_best

__all__ = ["CompressConfig", "check_config", "compress", "open_teacher", "OpenedTeacher", "FAMILIES"]

FAMILIES = student_families()  # conv0 ... conv4, from the registry
EXPORT_FORMAT = "mimicnet-student-export-1"


@dataclass
class CompressConfig:
    teacher: str = ""                       # run/ensemble folder, TorchScript file or .pt2 program
    data: str = ""                          # CIFAR-10 or CIFAR-100 archive or folder, or a folder of class
                                            # subfolders of PNG/JPEG images (data.images)
    image_size: int = 32                    # such images resized to this (32 only, for now: see check_config)
    budget: int = 1_000_000                 # parameters of every student
    families: tuple = FAMILIES
    trials: int = 8                         # per family
    seeds: int = 2                          # reruns of each family's best config
    labels: str = "fine"                    # CIFAR-100: fine (100) or coarse (20)
    max_train: int | None = None
    max_epochs: int = 20
    transfer_epochs: int = 20
    batch_size: int = 128
    schedule: str = "onecycle"
    sampler: str = "tpe"
    n_startup: int = 4
    pruner: str = "sha"                     # none | median | sha | hyperband
    pruner_min_epochs: int = 5                # the first rung after the one-cycle warm-up (4 of 20 epochs)
    pruner_eta: int = 3
    # the gradient's global norm clipped before each step, as the cpu preset's students (studies.main): measured
    # there, 5 of 6 conv4 configs had a seed collapse or diverge without it (bench/bench_stability.py)
    grad_clip: float = 20.0
    seed: int = 0
    logits_dtype: str = "float16"
    # regress per-logit standardised teacher logits (Ba & Caruana; the saved student outputs plain logits): a
    # teacher of one's own may give logits at any scale, and the searched learning rates assume moderate ones
    normalize_logits: bool = True
    teacher_mean: tuple | None = None       # the teacher's normalisation (distill.external), or from its metadata
    teacher_std: tuple | None = None
    teacher_normalize: str | None = None    # standardize | none
    device: str = "auto"
    latency: bool = True
    onnx: bool = True                       # also export student.onnx (needs onnx + onnxscript; --no-onnx: not)
    # Deployment ceilings, beside the parameter budget (several may be given): multiply-adds of one forward pass
    # of the shipped student (models.cost), and its median latency on `latency_device` (auto: the run's device)
    # at `latency_batch` images with `latency_threads` CPU threads. A width whose architecture overshoots one is
    # infeasible before any epoch (search.run's ceiling); measured once per architecture (OUT/shapes.json).
    max_flops: int | None = None
    max_latency_ms: float | None = None
    latency_device: str = "auto"
    latency_batch: int = 1
    latency_threads: int = 1
    # the exported student: "best" (the highest validation mean) or "smallest-within=D" (the fewest parameters,
    # or the lowest latency when max_latency_ms is set, among those within D points of the best's validation)
    pick: str = "best"


# Fields that say how much, where or how to compute, not what: a rerun with other values continues the same
# run (the teacher and data paths: their content is checked instead, by sha256).
NOT_IDENTITY = ("teacher", "data", "device", "trials", "seeds", "families", "latency", "teacher_mean",
                "teacher_std", "teacher_normalize", "pick", "onnx")


def budgets(cfg: CompressConfig) -> tuple[int, ...]:
    """The parameter budgets searched: one (an int) or several (a tuple; --budget given more than once)."""
    return tuple(cfg.budget) if isinstance(cfg.budget, (tuple, list)) else (cfg.budget,)


def pick_within(pick: str) -> float | None:
    """None for "best"; D for "smallest-within=D" (validation points); a ConfigError otherwise."""
    if pick == "best":
        return None
    head, _, d = str(pick).partition("=")
    try:
        v = float(d)
    except ValueError:
        v = -1.0
    if head != "smallest-within" or not 0 <= v <= 100:
        raise ConfigError(f"--pick must be best or smallest-within=D (D validation points, 0 to 100), not {pick!r}")
    return v


def _int(cfg: CompressConfig, name: str, lo: int, flag: str | None = None) -> None:
    v = getattr(cfg, name)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ConfigError(f"{flag or '--' + name.replace('_', '-')} must be an integer >= {lo}, got {v!r}")


def check_config(cfg: CompressConfig) -> None:
    """Every flag, before anything is read or written: a one-line ConfigError naming the flag."""
    if not cfg.teacher:
        raise ConfigError("--teacher is required (a mimicnet run or ensemble folder, a TorchScript file or a .pt2)")
    if not cfg.data:
        raise ConfigError("--data is required (a CIFAR-10 or CIFAR-100 archive or folder)")
    bs = budgets(cfg)
    if not bs:
        raise ConfigError("--budget: give at least one parameter budget")
    for b in bs:
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise ConfigError(f"--budget must be an integer >= 1, got {b!r}")
    if len(set(bs)) != len(bs):
        raise ConfigError(f"--budget: {', '.join(budget_name(b) for b in bs)} names a budget twice")
    if cfg.max_flops is not None:
        _int(cfg, "max_flops", 1, "--flops")
    if cfg.max_latency_ms is not None and (isinstance(cfg.max_latency_ms, bool) or not isinstance(
            cfg.max_latency_ms, (int, float)) or not 0 < cfg.max_latency_ms < float("inf")):
        raise ConfigError(f"--latency must be a positive time, got {cfg.max_latency_ms!r}")
    _int(cfg, "latency_batch", 1)
    _int(cfg, "latency_threads", 1)
    pick_within(cfg.pick)
    _int(cfg, "image_size", 1)
    if cfg.image_size != 32:
        raise ConfigError(f"--image-size {cfg.image_size}: this version trains students on 32×32 images only (its "
                          "augmentation crops and resizes 32×32 images); use --image-size 32: larger images are "
                          "resized to it")
    _int(cfg, "trials", 1)
    _int(cfg, "seeds", 0)
    _int(cfg, "max_epochs", 1, "--epochs")
    _int(cfg, "transfer_epochs", 1)
    _int(cfg, "batch_size", 1)
    _int(cfg, "pruner_min_epochs", 1)
    if isinstance(cfg.grad_clip, bool) or not isinstance(cfg.grad_clip, (int, float)) or not cfg.grad_clip >= 0 \
            or cfg.grad_clip == float("inf"):
        raise ConfigError(f"--grad-clip must be a number >= 0 (0: no clipping), got {cfg.grad_clip!r}")
    if cfg.max_train is not None:
        _int(cfg, "max_train", 1)
    fams = tuple(cfg.families)
    if not fams:
        raise ConfigError("--families: give at least one of " + ", ".join(FAMILIES))
    bad = [f for f in fams if f not in STUDENT_BOUNDS]
    if bad:
        raise ConfigError(f"--families: unknown student family {bad[0]!r}; families: {', '.join(FAMILIES)}")
    if len(set(fams)) != len(fams):
        raise ConfigError(f"--families: {', '.join(fams)} names a family twice")
    if cfg.labels not in LABELS:
        raise ConfigError(f"--labels must be one of {', '.join(LABELS)}, not {cfg.labels!r}")
    if cfg.sampler not in SAMPLERS:
        raise ConfigError(f"--sampler must be one of {', '.join(SAMPLERS)}, not {cfg.sampler!r}")
    try:
        check_pruner(cfg.pruner, cfg.pruner_min_epochs, cfg.pruner_eta)
        check_device_name(cfg.device)
        if cfg.latency_device not in ("auto", "cpu") and not str(cfg.latency_device).startswith("cuda"):
            raise ConfigError(f"--latency-device must be auto, cpu or cuda[:N], not {cfg.latency_device!r}")
        check_device_name(cfg.latency_device)
        for fam in fams:
            student_config(cfg, "", fam)
        check_rungs_after_warmup(cfg.pruner, cfg.pruner_min_epochs, student_config(cfg, "", fams[0]))
        check_budget(cfg, 10)  # again with the data's classes once it is read (compress())
    except (SearchError, ModelError) as e:
        raise ConfigError(str(e)) from None
    if cfg.teacher_mean is not None or cfg.teacher_std is not None or cfg.teacher_normalize is not None:
        try:
            external.normalization(cfg.teacher_normalize, cfg.teacher_mean, cfg.teacher_std,
                                   "--teacher-mean/--teacher-std/--teacher-normalize")
        except external.TeacherError as e:
            raise ConfigError(str(e)) from None


def check_budget(cfg: CompressConfig, num_classes: int) -> None:
    """Every family fits every budget at its narrowest fixed layers, with `num_classes` outputs."""
    for budget in budgets(cfg):
        for fam in cfg.families:
            _check_one_budget(budget, fam, num_classes)


def _check_one_budget(budget: int, fam: str, num_classes: int) -> None:
    space = make_space("student", fam, budget)
    if budget_violation(space, {p.name: 0.0 for p in space.params}, num_classes) > 0:
        raise ConfigError(f"--budget {budget:,}: too small for a {fam} student with {num_classes} classes "
                          "(its fixed layers alone, at their narrowest, have more parameters); give a larger "
                          "--budget or leave the family out")


def student_config(cfg: CompressConfig, transfer, family: str, budget: int | None = None) -> TrainConfig:
    """The base config of a family's search (the space sets lr, momentum, scales and widths)."""
    return TrainConfig.from_dict({
        "data": cfg.data, "max_train": cfg.max_train, "labels": cfg.labels, "device": cfg.device, "seed": cfg.seed,
        "schedule": cfg.schedule, "max_epochs": cfg.max_epochs, "batch_size": cfg.batch_size, "loss": "l2-logits",
        "normalize_logits": cfg.normalize_logits, "transfer": str(transfer), "family": family,
        "budget": budgets(cfg)[0] if budget is None else budget,
        "grad_clip": cfg.grad_clip})


# ----------------------------------------------------------------------------------------------
# The teacher

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


# ----------------------------------------------------------------------------------------------
# Search and seeds

def search_families(cfg: CompressConfig, out: Path, tdir: Path, data: TrainData, teachers: Teachers,
                    log: Callable[[str], None], costs: "ShapeCosts | None" = None) -> list[tuple]:
    """One search per budget and family; returns (family, space, base config, study) per search. With ceilings
    (--flops, --latency) every config is priced by `costs` before it trains."""
    cells = []
    ceiling = costs.ceiling(data) if costs is not None and costs.limited else None
    for budget in budgets(cfg):
        for fam in cfg.families:
            space = make_space("student", fam, budget)
            base = student_config(cfg, tdir, fam, budget)
            log(f"-- {space.name}: {cfg.trials} trial(s)")
            study = run_search(space, base, out / "studies" / space.name, cfg.trials, sampler=cfg.sampler,
                               n_startup=cfg.n_startup, seed=cfg.seed, index=out / "index.csv", data=data,
                               teachers=teachers, log=log, ceiling=ceiling, **pruning_kwargs(cfg))
            cells.append((fam, space, base, study))
    return cells


# ----------------------------------------------------------------------------------------------
# What an architecture costs: multiply-adds and latency, once per shape

class ShapeCosts:
    """OUT/shapes.json: per architecture (family, widths, classes, input shape) as shipped (models.cost.shipped),
    its parameters, multiply-adds and latency at the run's latency setting (device, batch, threads), measured
    once (models.latency's method). Written whole under a temporary name; on load every entry is checked (its
    key's setting, finite positive numbers) and one that is not is measured again."""

    FORMAT = "mimicnet-shape-costs-1"

    def __init__(self, cfg: CompressConfig, path: Path, device: torch.device, log: Callable[[str], None] = print):
        self.cfg, self.path, self.log = cfg, path, log
        dev = device if cfg.latency_device == "auto" else torch.device(cfg.latency_device)
        self.device = str(dev)
        self.setting = {"device": self.device, "batch": cfg.latency_batch, "threads": cfg.latency_threads,
                        "method": f"{METHOD} (3 warm-up, up to 20 timed, at least 3, about 1 s)",
                        "torch": torch.__version__}
        self.limited = cfg.max_flops is not None or cfg.max_latency_ms is not None
        self.d: dict = {}
        try:
            raw = artifacts.read_json(path) if path.exists() else None
        except artifacts.CheckpointError as e:  # a cache: what cannot be read is measured again
            raw = str(e)
        if raw is not None:
            shapes = raw.get("shapes") if isinstance(raw, dict) and raw.get("format") == self.FORMAT else None
            if not isinstance(shapes, dict):
                log(f"{path}: not a shape-cost record of this version; measuring again")
                shapes = {}
            self.d = {k: v for k, v in shapes.items() if self._valid(k, v)}
            if len(self.d) < len(shapes):
                log(f"{path}: {len(shapes) - len(self.d)} entr(ies) malformed or of another setting; measuring again")

    def _key(self, family: str, widths, num_classes: int, in_shape) -> str:
        return (f"{family}:{'x'.join(map(str, widths))}:k{num_classes}:{'x'.join(map(str, in_shape))}:"
                f"{self.device}:b{self.cfg.latency_batch}:t{self.cfg.latency_threads}")

    def _valid(self, key: str, v) -> bool:
        tail = f":{self.device}:b{self.cfg.latency_batch}:t{self.cfg.latency_threads}"
        return (isinstance(v, dict) and key.endswith(tail) and all(
            isinstance(v.get(f), (int, float)) and not isinstance(v.get(f), bool) and 0 < v[f] < float("inf")
            for f in ("params", "macs", "latency_ms")))

    def of(self, family: str, widths, num_classes: int, in_shape, input_scale: float = 1.0) -> dict:
        """{params, macs, latency_ms} of the architecture as shipped (a freshly built model: the costs depend on
        the shapes alone)."""
        key = self._key(family, widths, num_classes, in_shape)
        if key not in self.d:
            model = build_model(family, tuple(widths), num_classes=num_classes, in_shape=tuple(in_shape))
            net, _ = shipped(model, input_scale, tuple(in_shape))
            self.d[key] = {"params": count_params(net), "macs": count_macs(net, tuple(in_shape)),
                           "latency_ms": round(latency_ms(net, self.device, self.cfg.latency_batch,
                                                          threads=self.cfg.latency_threads, in_shape=tuple(in_shape)), 5)}
            artifacts.write_json(self.path, {"format": self.FORMAT, "setting": self.setting, "shapes": self.d})
        return self.d[key]

    def ceiling(self, data: TrainData) -> Callable[[TrainConfig], tuple[float, str]]:
        """search.run's ceiling: (relative overshoot of the worst ceiling, what overshoots) of a trial's config."""
        cfg = self.cfg

        def check(tc: TrainConfig) -> tuple[float, str]:
            widths = resolve_widths(tc, data.num_classes)
            c = self.of(tc.model.family, widths, data.num_classes, data.in_shape, tc.data.input_scale)
            over = []
            if cfg.max_flops is not None:
                over.append((c["macs"] / cfg.max_flops - 1, f"{c['macs']:,} multiply-adds, ceiling {cfg.max_flops:,}"))
            if cfg.max_latency_ms is not None:
                over.append((c["latency_ms"] / cfg.max_latency_ms - 1,
                             f"{c['latency_ms']:.3f} ms at batch {cfg.latency_batch} on {self.device} "
                             f"({cfg.latency_threads} thread(s)), ceiling {cfg.max_latency_ms:g} ms"))
            v, what = max(over)
            return v, f"widths {widths}: {what}"
        return check


# ----------------------------------------------------------------------------------------------
# Summary

def _run_row(run_dir: Path, what: str) -> dict | None:
    p = run_dir / "results.json"
    if not p.exists():
        return None
    r = artifacts.read_json(p)
    return {"what": what, "path": str(run_dir), "seed": (artifacts.read_json(run_dir / "config.json")
                                                         .get("config", {}).get("seed")),
            "val_acc": r["val_acc"], "test_acc": r.get("test_acc"), "agreement": r.get("mimic_agreement"),
            "params": r["params"], "widths": r["widths"], "best_sha256": r.get("best_sha256")}


def _mean_sd(vals: list) -> tuple[float | None, float | None]:
    vals = [v for v in vals if v is not None]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else None)


def family_summary(cfg: CompressConfig, out: Path, cell: tuple) -> dict:
    """One family: its search, its best trial's run and seed reruns; the statistics over the seed reruns
    (or over the best trial's run when there are none)."""
    fam, space, _, study = cell
    row = {"family": fam, "space": space.name, "budget": space.budget, "trials": progress(study)["finished"],
           "pruned": sum(t.state == TrialState.PRUNED for t in study.get_trials(deepcopy=False)),
           "best_trial": None, "runs": [], "n_failed": 0}
    best = best_trial(study)
    if best is None:
        return row
    row["best_trial"] = best.number
    trial_dir = trial_run_dir(best, out / "studies" / space.name)
    trial = _run_row(trial_dir, f"trial {best.number}") if trial_dir is not None else None
    seeds = []
    for k in range(1, cfg.seeds + 1):
        run_dir = out / "seeds" / space.name / f"t{best.number}-s{cfg.seed + k}"
        r = _run_row(run_dir, f"seed {cfg.seed + k}")
        if r is None:
            row["n_failed"] += 1
        else:
            seeds.append(r)
    row["runs"] = ([trial] if trial else []) + seeds
    # with seed reruns asked for, only they count: a family whose every rerun diverged is not ranked by its
    # search's maximum (an optimistic number beside the others' seed means)
    stats = seeds if cfg.seeds > 0 else ([trial] if trial else [])
    row["stats_over"] = ("seed reruns" if seeds else "no seed rerun finished") if cfg.seeds > 0 \
        else "search's best trial"
    row["n"] = len(stats)
    for key, name in (("val_acc", "val"), ("test_acc", "test"), ("agreement", "agree")):
        row[f"{name}_mean"], row[f"{name}_sd"] = _mean_sd([r[key] for r in stats])
    if row["runs"]:
        row["params"], row["widths"] = row["runs"][0]["params"], row["runs"][0]["widths"]
        row["student"] = max(row["runs"], key=lambda r: r["val_acc"])  # the family's best by validation
    return row


def best_family(rows: list[dict], pick: str = "best", by_latency: bool = False) -> dict | None:
    """By validation only. "best": the highest seed mean (or search's best), ties to fewer parameters, then the
    order given. "smallest-within=D": among the rows within D points of that, the fewest parameters (the lowest
    latency when `by_latency`: a --latency run), ties to the higher validation."""
    done = [r for r in rows if r.get("val_mean") is not None]
    if not done:
        return None
    best = max(done, key=lambda r: (r["val_mean"], -r["params"], -rows.index(r)))
    within = pick_within(pick)
    if within is None:
        return best
    near = [r for r in done if r["val_mean"] >= best["val_mean"] - within / 100 - 1e-12]
    size = (lambda r: (r.get("costs") or {}).get("latency_ms", float("inf"))) if by_latency else \
        (lambda r: r["params"])
    return min(near, key=lambda r: (size(r), -r["val_mean"], rows.index(r)))


def pareto(points: list[tuple[float, float]]) -> list[bool]:
    """Which (cost, accuracy) points are on the front: no other point has cost <= and accuracy >= with one
    strictly better."""
    return [not any(c2 <= c and a2 >= a and (c2 < c or a2 > a) for c2, a2 in points) for c, a in points]


def front_rows(rows: list[dict], chosen: dict) -> list[dict]:
    """One point per trained family and budget: validation (mean) against latency and against parameters, each
    front marked, the exported one named; the content of OUT/front.csv and the report's front."""
    pts = [r for r in rows if r.get("val_mean") is not None and r.get("costs")]
    on_lat = pareto([(r["costs"]["latency_ms"], r["val_mean"]) for r in pts])
    on_par = pareto([(r["params"], r["val_mean"]) for r in pts])
    return [{"family": r["family"], "budget": r["budget"], "space": r["space"], "params": r["params"],
             "macs": r["costs"]["macs"], "latency_ms": r["costs"]["latency_ms"], "val_mean": r["val_mean"],
             "val_sd": r.get("val_sd"), "test_mean": r.get("test_mean"), "n": r.get("n"),
             "front_latency": fl, "front_params": fp, "exported": r["space"] == chosen["space"]}
            for r, fl, fp in zip(pts, on_lat, on_par)]





# ----------------------------------------------------------------------------------------------
# The student, standalone

def deployable(ckpt: Path) -> tuple[torch.nn.Module, dict, dict]:
    """(the checkpoint's model as shipped (models.cost.shipped: bottleneck folded when that makes it smaller,
    batch norm folded, preprocessing inside); its checkpoint metadata; what was folded and why)."""
    model, meta = model_from_checkpoint(ckpt)
    name = meta.get("preprocess", STANDARDIZE)
    if OLD_NAMES.get(name, name) != STANDARDIZE:
        raise ModelError(f"{ckpt}: preprocess {meta.get('preprocess')!r}: only per-image standardisation exports")
    net, fold = shipped(model, meta.get("input_scale", 1.0), tuple(meta.get("in_shape", (3, 32, 32))),
                        already_folded=bool(meta.get("folded")))
    return net, meta, fold


def _copy(src: Path, dest: Path) -> None:
    artifacts.atomic_write(dest, lambda tmp: shutil.copyfile(src, tmp))


def export_student(run: dict, dest: Path, data: TrainData, teacher: dict, log: Callable[[str], None],
                   onnx: bool = True) -> dict:
    """DEST/best.safetensors (+ config.json), student.ts, student.pt2, student.onnx (with `onnx`, where onnx and
    onnxscript are installed) and, last, student.json, from the run `run` (a family_summary run row); kept as
    they are when student.json says they are this run's (and holds the ONNX file when one is wanted)."""
    want_onnx = onnx and not onnx_missing()
    src_dir = Path(run["path"])
    src = src_dir / "best.safetensors"
    src_sha = artifacts.file_sha256(src)
    done = dest / "student.json"
    if done.exists():
        rec = artifacts.read_json(done)
        if isinstance(rec, dict) and rec.get("source_sha256") == src_sha and all(
                (dest / n).is_file() and artifacts.file_sha256(dest / n) == sha for n, sha in rec.get("files", {}).items()) \
                and (not want_onnx or "student.onnx" in rec.get("files", {})):
            log(f"{dest}: the student is already exported")
            return rec
    dest.mkdir(parents=True, exist_ok=True)
    _, meta, fold = deployable(src)
    if fold["bottleneck"] == "folded" and not meta.get("folded"):
        fold_checkpoint(src, dest / "best.safetensors")   # a checkpoint of the folded net (+ its best.json)
    else:
        _copy(src, dest / "best.safetensors")
        if (src_dir / "best.json").exists():
            _copy(src_dir / "best.json", dest / "best.json")
    _copy(src_dir / "config.json", dest / "config.json")
    standalone, meta, _ = deployable(dest / "best.safetensors")    # what `mimicnet evaluate` loads, as shipped
    params = count_params(standalone)
    metadata = {"format": EXPORT_FORMAT, "normalize": "none", "input": INPUT_CONTRACT,
                "num_classes": meta["num_classes"], "family": meta["family"], "widths": meta["widths"],
                "params": params, "val_acc": run["val_acc"], "test_acc": run["test_acc"],
                "teacher_agreement": run["agreement"], "code_version": artifacts.code_version()}
    save_torchscript(standalone, dest / "student.ts", metadata)
    save_exported(standalone, dest / "student.pt2", metadata)
    files = ["best.safetensors", "config.json", "student.ts", "student.pt2"]
    orec = {"file": "student.onnx"}
    why = onnx_missing() if onnx else "not asked for (--no-onnx)"
    if why:
        orec["written"] = f"no: {why}"
        (dest / "student.onnx").unlink(missing_ok=True)  # not an earlier student's
    else:
        save_onnx(standalone, dest / "student.onnx", metadata, tuple(meta.get("in_shape", (3, 32, 32))))
        orec["written"] = "yes"
        files.append("student.onnx")
    diffs, orec["check"], scale = _check_exports(dest, data, "student.onnx" in files)
    rec = {**metadata, "source": str(src_dir), "source_sha256": src_sha, "run": run["what"], "fold": fold,
           "max_abs_diff": diffs, "max_abs_logit": scale, "onnx": orec, "teacher": teacher,
           "files": {n: artifacts.file_sha256(dest / n) for n in files}}
    artifacts.write_json(done, rec)
    log(f"student: {meta['family']} {meta['widths']}, {params:,} parameters -> {dest} (exports match the checkpoint "
        f"to {max(diffs.values()):.1e}{'' if 'student.onnx' in diffs else '; ONNX: ' + orec['check']})")
    return rec


@torch.no_grad()
def _check_exports(dest: Path, data: TrainData, onnx: bool = False) -> tuple[dict, str, float]:
    """The exports, loaded back, against the checkpoint as mimicnet runs it, on validation images: ({file: max
    |difference|}, how the ONNX file was checked, the largest |logit|). The ONNX file is run by onnxruntime in a
    fresh process (models.export.run_onnx_fresh), on the images as a batch and on the first alone (its batch is
    dynamic). The tolerance is 1e-4 of the largest |logit| (at least 1e-4): onnxruntime sums a convolution in
    another order than torch, which moves float32 logits of size 50 by about 1e-6 of their size."""
    model, meta = model_from_checkpoint(dest / "best.safetensors")
    x = data.val.x[:256]
    ref = predict_logits(model, x, meta.get("input_scale", 1.0), torch.device("cpu"))
    diffs = {}
    for name, load in (("student.ts", load_torchscript), ("student.pt2", load_exported)):
        m, _ = load(dest / name)
        diffs[name] = float((m(x.float() / 255.0).float() - ref).abs().max()) if len(x) else 0.0
    check = "not written"
    if onnx and onnxruntime_missing():
        check = f"not checked: {onnxruntime_missing()}"
    elif onnx and len(x):
        try:
            y, said = run_onnx_fresh(dest / "student.onnx", x.float() / 255.0)
        except OnnxError as e:
            raise ModelError(str(e)) from None
        diffs["student.onnx"] = float((y - torch.cat([ref, ref[:1]])).abs().max())
        check = (f"onnxruntime {said['onnxruntime']} in a fresh process (no torch, no mimicnet), {len(x)} validation "
                 f"images as one batch and the first alone, input {said['input']} {said['shape']}")
    tol = 1e-4 * max(1.0, float(ref.abs().max()) if len(x) else 1.0)
    bad = {k: v for k, v in diffs.items() if not v <= tol}
    if bad:
        name, v = next(iter(bad.items()))
        raise ModelError(f"{dest / name}: its outputs differ from the checkpoint's by {v:g} (tolerance {tol:g})")
    return diffs, check, float(ref.abs().max()) if len(x) else 0.0


# ----------------------------------------------------------------------------------------------
# Latency

class LatencyCache:
    """OUT/latency.json: {model key: {device: {batch: ms}}}, measured once per model and device, with `threads`
    CPU threads (the run's --latency-threads; part of the key)."""

    def __init__(self, path: Path, threads: int | None = None):
        self.path, self.threads = path, threads
        d = artifacts.read_json(path) if path.exists() else {}
        self.d = d if isinstance(d, dict) else {}

    def get(self, key: str, model_fn: Callable[[], torch.nn.Module], devices: list[str],
            log: Callable[[str], None]) -> dict:
        key = key if self.threads is None else f"{key}-t{self.threads}"
        have = self.d.get(key, {})
        missing = [dev for dev in devices
                   if "error" not in have.get(dev, {}) and not all(str(b) in have.get(dev, {}) for b in BATCHES)]
        if missing:
            model = model_fn()
            for dev in missing:
                try:
                    have[dev] = {str(b): ms for b, ms in measure(model, dev, threads=self.threads).items()}
                except (RuntimeError, ValueError, TypeError) as e:
                    # e.g. a traced teacher with a device baked in, or out of memory at batch 256: a timing
                    # is not worth the run; recorded (the page shows "—") and not tried again
                    have[dev] = {"error": str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__}
            self.d[key] = have
            artifacts.write_json(self.path, self.d)
            log(f"   latency of {key[:40]}: " + ", ".join(
                f"{dev} failed: {have[dev]['error']}" if "error" in have[dev] else
                ", ".join(f"{dev} b{b} {ms:.2f} ms" for b, ms in have[dev].items()) for dev in missing))
        return {dev: have[dev] for dev in devices}


def latency_devices(device: torch.device) -> list[str]:
    """The CPU, and the run's own GPU when it runs on one (the device the teacher was checked on)."""
    return ["cpu"] + (["cuda"] if device.type == "cuda" else [])


def measure_latencies(out: Path, teacher: OpenedTeacher, rows: list[dict], device: torch.device,
                      log: Callable[[str], None], threads: int | None = None) -> None:
    """Latency of the teacher and of every family's best student (as exported), into the rows and teacher, with
    `threads` CPU threads."""
    cache, devices = LatencyCache(out / "latency.json", threads), latency_devices(device)

    def teacher_model():
        m = teacher.model
        return m if getattr(m, "takes_images", False) else Standalone(m, 1.0)  # a mimicnet teacher: standardised
    teacher.info["latency"] = cache.get(f"teacher-{teacher.identity}", teacher_model, devices, log)
    for row in rows:
        if row.get("student"):
            ckpt = Path(row["student"]["path"]) / "best.safetensors"
            row["latency"] = cache.get(f"student-{row['student']['best_sha256']}", lambda: deployable(ckpt)[0],
                                       devices, log)


def onnx_latencies(out: Path, student: dict, cfg: CompressConfig, log: Callable[[str], None]) -> dict | None:
    """The exported student.onnx timed in onnxruntime on the CPU (models.latency's method, `latency_threads`
    threads) at batch 1, 256 and the run's --latency-batch; cached in OUT/latency.json by the file's sha256.
    None without the file or without onnxruntime."""
    sha = (student.get("files") or {}).get("student.onnx")
    if not sha or onnxruntime_missing():
        return None
    cache = LatencyCache(out / "latency.json")
    key = f"student-onnx-{sha}-t{cfg.latency_threads}"
    have = cache.d.get(key)
    batches = sorted({*BATCHES, cfg.latency_batch})
    if not (isinstance(have, dict) and all(isinstance(have.get(str(b)), (int, float)) for b in batches)):
        have = {str(b): round(onnx_latency_ms(out / "student" / "student.onnx", b, cfg.latency_threads,
                                              tuple(student.get("in_shape") or (3, 32, 32))), 4) for b in batches}
        have["threads"] = cfg.latency_threads
        cache.d[key] = have
        artifacts.write_json(cache.path, cache.d)
        log("   latency of student.onnx in onnxruntime (cpu, "
            f"{cfg.latency_threads} thread(s)): " + ", ".join(f"b{b} {have[str(b)]:.3f} ms" for b in batches))
    return have


# ----------------------------------------------------------------------------------------------
# The whole run

def compress(cfg: CompressConfig, out, command: str = "", log: Callable[[str], None] = print) -> dict:
    """Run (or continue, or return the finished) compress into `out`; returns results.json's content."""
    check_config(cfg)
    out = Path(out)
    device = resolve_device(cfg.device)
    data = load_train_data(cfg.data, cfg.max_train, cfg.labels)  # once: every stage and trial shares it
    check_budget(cfg, data.num_classes)                            # the output layer counts: K classes
    teacher = open_teacher(cfg, data, device, log)                  # checked before anything is written
    with folder_lock(out, "mimicnet compress"):
        return _compress(cfg, out, command, data, teacher, log)


def _compress(cfg: CompressConfig, out: Path, command: str, data: TrainData, teacher: OpenedTeacher,
              log: Callable[[str], None]) -> dict:
    run = CompressRun(cfg, out, command, teacher, data)
    tpath = teacher_folder(teacher, out, data)
    tdir = out / "transfer"
    tcfg = TransferConfig(data=cfg.data, max_train=cfg.max_train, labels=cfg.labels, epochs=cfg.transfer_epochs,
                          seed=cfg.seed, logits_dtype=cfg.logits_dtype, device=cfg.device)
    run.stage("transfer", lambda: generate(tcfg, tpath, tdir, data=data, log=log), log)
    teachers = Teachers()
    costs = ShapeCosts(cfg, out / "shapes.json", resolve_device(cfg.device), log)
    cells = run.stage("search", lambda: search_families(cfg, out, tdir, data, teachers, log, costs), log)
    run.stage("seeds", lambda: [rerun_best(space, base, study, cfg.seeds, cfg.seed, out, data, out / "index.csv",
                                           teachers, log) for _, space, base, study in cells], log)
    rows = [family_summary(cfg, out, c) for c in cells]
    for r in rows:
        if r.get("widths"):
            r["costs"] = costs.of(r["family"], r["widths"], data.num_classes, data.in_shape)
    best = best_family(rows, cfg.pick, by_latency=cfg.max_latency_ms is not None)
    if best is None:
        raise ConfigError(f"{out}: no family has a trained student at {', '.join(map(budget_name, budgets(cfg)))} "
                          "(every trial infeasible or diverged); give more --trials, a larger --budget or looser "
                          "--flops/--latency")
    front = front_rows(rows, best)  # OUT/front.csv and its figure: report.compress, from results.json
    tinfo = {"kind": teacher.kind, "path": str(teacher.path), "identity": teacher.identity,
             "val_acc": teacher.val_acc, "test_acc": teacher.test_acc}
    student = run.stage("export", lambda: export_student(best["student"], out / "student", data, tinfo, log,
                                                         cfg.onnx), log)
    if cfg.latency:
        run.stage("latency", lambda: measure_latencies(out, teacher, rows, resolve_device(cfg.device), log,
                                                       cfg.latency_threads), log)
        student["latency_onnx"] = onnx_latencies(out, student, cfg, log)
    result = {"format": "mimicnet-compress-results-1", "out": str(out), "budget": best["budget"],
              "teacher": {**tinfo, "num_classes": teacher.num_classes, "params": teacher.params,
                          "description": teacher.describe(), "latency": teacher.info.get("latency")},
              "families": rows, "best_family": best["family"], "best_space": best["space"], "student": student,
              "budgets": list(budgets(cfg)), "pick": cfg.pick, "front": front,
              "ceilings": {"flops": cfg.max_flops, "latency_ms": cfg.max_latency_ms, **costs.setting},
              "data": run.record["data"], "config": run.record["config"], "command": command,
              "hardware": run.record["hardware"], "stages": run.record["stages"],
              "code_version": artifacts.code_version()}
    artifacts.write_json(out / "results.json", result)
    return json.loads(json.dumps(artifacts.to_jsonable(result)))
