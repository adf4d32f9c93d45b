"""`mimicnet train`: one run of any kind (teacher, hard-target baseline, or a mimic student with --loss and
--transfer)."""
from __future__ import annotations

import json
from pathlib import Path

from ..core.artifacts import CheckpointError
from ..core.lock import folder_lock
from ..data.features import load_features
from ..data.splits import load_train_data
from ..distill.student import run_sources, train_run
from ..models.inference import resolve_device
from ..train.config import resolve_widths
from .common import add_train_flags, check_out_folder, out_folder, train_config_from_args


def default_run_name(cfg, data) -> str:
    """The run id (TrainConfig.run_id): the config and what the run learns from, by content; `--data a.tar.gz`,
    `--data ./a.tar.gz` and `--data /abs/a.tar.gz` (and so --transfer, --teacher) name one run folder."""
    try:
        sources = run_sources(cfg)
    except (OSError, CheckpointError, KeyError, TypeError, ValueError):
        sources = {}  # an unreadable transfer set or teacher: train_run says so in one line, before any folder
    return cfg.run_id({"data": data.sha256, **sources})


def default_out(cfg, data) -> Path:
    """runs/train/<default_run_name>; a folder that older code named is still continued when it is there: its
    run id as spelled, or with its paths resolved (code of 2026-11 and 12; its run accepts any spelling)."""
    def canon(p: str) -> str:
        return str(Path(p).resolve()) if p else p
    resolved = cfg.replace(data=canon(cfg.data.path), transfer=canon(cfg.distill.transfer),
                           teacher=canon(cfg.distill.teacher))
    for name in (cfg.legacy_run_id(), resolved.legacy_run_id()):
        if (Path("runs") / "train" / name).is_dir():
            return Path("runs") / "train" / name
    return Path("runs") / "train" / default_run_name(cfg, data)


def cmd_train(args) -> int:
    cfg = train_config_from_args(args)
    if args.out:
        check_out_folder(args.out)
    resolve_device(cfg.execution.device)  # a device this machine lacks: said before the data are read
    d = cfg.data
    data = load_features(d.path) if str(d.path).endswith(".npz") else load_train_data(d.path, d.max_train, d.labels)
    data = data.with_labels(d.labels)  # coarse labels on CIFAR-10 (or a feature file): said before any folder
    resolve_widths(cfg, data.num_classes)  # constants that do not fit the family or budget: before the folder
    out = args.out or default_out(cfg, data)
    check_out_folder(out)
    with folder_lock(out, "mimicnet train"):  # one writer per run folder
        res = train_run(cfg, out, data)
    print(json.dumps({k: res[k] for k in ("run_id", "params", "best_epoch", "val_acc", "test_acc")}))
    print(f"run folder: {out}")
    return 0


def register(sub) -> None:
    t = sub.add_parser("train", help="train one model: a teacher, a baseline, or a student (--loss, --transfer)",
                       description="Train one model with SGD+Nesterov and the S3 schedule. Running the same "
                       "command again resumes an interrupted run, or prints the finished one's result.")
    add_train_flags(t)
    t.add_argument("--out", type=out_folder, help="run folder (default runs/train/RUN_ID: the family and a hash "
                   "of the config and of what it learns from, by content)")
    t.set_defaults(func=cmd_train)
