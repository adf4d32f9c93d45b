"""What an architecture costs where it will be deployed: its multiply-adds and latency, priced once per shape
(ShapeCosts, OUT/shapes.json) before any trial trains, and the chosen students' latencies (LatencyCache)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from ..core import artifacts
from ..data.augment import IMAGE_SHAPE
from ..data.splits import TrainData
from ..models.export import (Standalone, onnxruntime_missing)
from ..models.cost import count_macs, shipped
from ..models.families import count_params
from ..models.families import build_model
from ..models.latency import BATCHES, METHOD, latency_ms, measure, onnx_latency_ms
from ..train.config import TrainConfig, resolve_widths
from .compress_config import CompressConfig
from .compress_export import deployable
from .compress_teacher import OpenedTeacher



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
            widths = resolve_widths(tc, data.num_classes, data.in_shape)
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
# Latency

class LatencyCache:
    """OUT/latency.json: {model key: {device: {batch: ms}}}, measured once per model and device, with `threads`
    CPU threads (the run's --latency-threads; part of the key)."""

    def __init__(self, path: Path, threads: int | None = None):
        self.path, self.threads = path, threads
        d = artifacts.read_json(path) if path.exists() else {}
        self.d = d if isinstance(d, dict) else {}

    def get(self, key: str, model_fn: Callable[[], torch.nn.Module], devices: list[str],
            log: Callable[[str], None], in_shape=IMAGE_SHAPE) -> dict:
        """{device: {batch: ms}} of the model on inputs of `in_shape` (part of the key unless CIFAR's)."""
        key = key if self.threads is None else f"{key}-t{self.threads}"
        key = key if tuple(in_shape) == IMAGE_SHAPE else f"{key}-{'x'.join(map(str, in_shape))}"
        have = self.d.get(key, {})
        missing = [dev for dev in devices
                   if "error" not in have.get(dev, {}) and not all(str(b) in have.get(dev, {}) for b in BATCHES)]
        if missing:
            model = model_fn()
            for dev in missing:
                try:
                    have[dev] = {str(b): ms for b, ms in measure(model, dev, threads=self.threads,
                                                                 in_shape=tuple(in_shape)).items()}
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
                      log: Callable[[str], None], threads: int | None = None, in_shape=IMAGE_SHAPE) -> None:
    """Latency of the teacher and of every family's best student (as exported), into the rows and teacher, with
    `threads` CPU threads, on inputs of the data's `in_shape`."""
    cache, devices = LatencyCache(out / "latency.json", threads), latency_devices(device)

    def teacher_model():
        m = teacher.model
        return m if getattr(m, "takes_images", False) else Standalone(m, 1.0, in_shape)  # mimicnet's: standardised
    teacher.info["latency"] = cache.get(f"teacher-{teacher.identity}", teacher_model, devices, log, in_shape)
    for row in rows:
        if row.get("student"):
            ckpt = Path(row["student"]["path"]) / "best.safetensors"
            row["latency"] = cache.get(f"student-{row['student']['best_sha256']}", lambda: deployable(ckpt)[0],
                                       devices, log, in_shape)


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
                                              tuple(student.get("in_shape") or IMAGE_SHAPE)), 4) for b in batches}
        have["threads"] = cfg.latency_threads
        cache.d[key] = have
        artifacts.write_json(cache.path, cache.d)
        log("   latency of student.onnx in onnxruntime (cpu, "
            f"{cfg.latency_threads} thread(s)): " + ", ".join(f"b{b} {have[str(b)]:.3f} ms" for b in batches))
    return have
