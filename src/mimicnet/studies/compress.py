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

The parts, one module each: compress_config (the config and its checks), compress_teacher (opening the
teacher), compress_costs (FLOPs and latency of a shape, priced once), compress_front (summaries, fronts, the
pick), compress_export (the student standalone and its checks); this module runs them in order.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable


from ..core import artifacts
from ..core.errors import ConfigError
from ..core.hardware import hardware
from ..core.lock import folder_lock
from ..core.units import budget_name
from ..data.splits import TrainData, load_train_data
from ..distill.student import Teachers
from ..distill.transfer import TransferConfig, generate
from ..models.inference import resolve_device
from ..search.run import Strategy, run_search
from ..search.spaces import make_space
from .main import rerun_best
from .compress_config import (EXPORT_FORMAT, FAMILIES, NOT_IDENTITY, CompressConfig, budgets, check_budget,
                              check_config, pick_within, student_config)
from .compress_costs import LatencyCache, ShapeCosts, measure_latencies, onnx_latencies
from .compress_export import deployable, export_student
from .compress_front import best_family, family_summary, front_rows, pareto
from .compress_teacher import OpenedTeacher, open_teacher, teacher_folder

# the names the CLI, the tests and bench/ use, from the modules below (config, teacher, costs, front, export)
__all__ = ["CompressConfig", "check_config", "compress", "open_teacher", "OpenedTeacher", "FAMILIES", "EXPORT_FORMAT",
           "LatencyCache", "ShapeCosts", "deployable", "export_student", "best_family", "front_rows", "pareto",
           "pick_within", "family_summary", "budgets", "teacher_folder"]


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
            study = run_search(space, base, out / "studies" / space.name, trials=cfg.trials,
                               strategy=Strategy.of(cfg), data=data, teachers=teachers, index=out / "index.csv",
                               ceiling=ceiling, log=log)
            cells.append((fam, space, base, study))
    return cells


# ----------------------------------------------------------------------------------------------
# The whole run

def compress(cfg: CompressConfig, out, command: str = "", log: Callable[[str], None] = print) -> dict:
    """Run (or continue, or return the finished) compress into `out`; returns results.json's content."""
    check_config(cfg)
    out = Path(out)
    device = resolve_device(cfg.device)
    data = load_train_data(cfg.data, cfg.max_train, cfg.labels, cfg.image_size)  # once: every stage shares it
    check_budget(cfg, data.num_classes, data.in_shape)  # the output layer counts (K classes), and the image size
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
    run.stage("seeds", lambda: [rerun_best(space, base, study, seeds=cfg.seeds, seed=cfg.seed, root=out, data=data,
                                           index=out / "index.csv", teachers=teachers, log=log)
                                for _, space, base, study in cells], log)
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
                                                       cfg.latency_threads, data.in_shape), log)
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
