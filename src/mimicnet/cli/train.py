"""`mimicnet train`: one run of any kind (teacher, hard-target baseline, or a mimic student with --loss and
--transfer)."""
from __future__ import annotations

import json
from pathlib import Path

from ..core.lock import folder_lock
from ..data.features import load_features
from ..data.splits import load_train_data
from ..distill.student import train_run
from ..models.inference import resolve_device
from ..train.config import resolve_widths
from .common import add_train_flags, check_out_folder, out_folder, train_config_from_args


def default_run_name(cfg) -> str:
    """FAMILY-CONFIGHASH of the config with its paths resolved: `--data a.tar.gz`, `--data ./a.tar.gz` and
    `--data /abs/a.tar.gz` (and so --transfer, --teacher) name one run folder (the run in it accepts any spelling: train.run.same_run)."""
    def canon(p: str) -> str:
        return str(Path(p).resolve()) if p else p
    return cfg.replace(data=canon(cfg.data.path), transfer=canon(cfg.distill.transfer),
                       teacher=canon(cfg.distill.teacher)).run_id()


def default_out(cfg) -> Path:
    """runs/train/<default_run_name>; a folder that code before it named runs/train/<run_id> as spelled is
    still continued when it is there (its run accepts any spelling of the paths)."""
    old = Path("runs") / "train" / cfg.run_id()
    return old if old.is_dir() else Path("runs") / "train" / default_run_name(cfg)


def cmd_train(args) -> int:
    cfg = train_config_from_args(args)
    out = args.out or default_out(cfg)
    check_out_folder(out)
    resolve_device(cfg.execution.device)  # a device this machine lacks: said before the data are read
    d = cfg.data
    data = load_features(d.path) if str(d.path).endswith(".npz") else load_train_data(d.path, d.max_train, d.labels)
    data = data.with_labels(d.labels)  # coarse labels on CIFAR-10 (or a feature file): said before any folder
    resolve_widths(cfg, data.num_classes)  # constants that do not fit the family or budget: before the folder
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
    t.add_argument("--out", type=out_folder, help="run folder (default runs/train/FAMILY-CONFIGHASH)")
    t.set_defaults(func=cmd_train)
