"""The `mimicnet` command line: one subcommand per pipeline stage.

User errors (bad archive, impossible budget, corrupt checkpoint, ...) end with one line on stderr and exit
status 2, never a traceback: everything already computed stays on disk, and the same command resumes.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from . import __version__


def _ints(s: str) -> tuple[int, ...]:
    try:
        return tuple(int(float(v)) for v in s.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}") from None


def _floats(s: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in s.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {s!r}") from None


def _budget(s: str) -> int:
    """1M, 3.16M, 100k, 31600000 ..."""
    t = s.strip().lower().replace("_", "")
    mult = {"k": 1e3, "m": 1e6}.get(t[-1:], 1)
    try:
        return int(round(float(t.rstrip("km")) * mult))
    except ValueError:
        raise argparse.ArgumentTypeError(f"budget must be a number like 1M, 316k or 1000000, got {s!r}") from None


def _device_arg(p):
    p.add_argument("--device", default=None, help="auto (default: cuda if present), cpu, cuda, cuda:1 ...")


# ------------------------------------------------------------------------------------------- train

# flag -> TrainConfig field, for flags that map one to one
_TRAIN_FLAGS = {
    "family": (str, "model family (see `mimicnet model list`)"),
    "widths": (_ints, "layer widths, comma-separated, e.g. 76,126,148,1200 for a teacher"),
    "constants": (_floats, "width constants in [0,1] (teacher: C1,C2,C3,H1; students: C1[,C2] with --budget)"),
    "budget": (_budget, "parameter budget (1M, 3.16M, ...): the dependent width is solved to meet it"),
    "dropout": (_floats, "dropout rates in layer order (teacher: doc1,doc2,doc3,dof1,dof2)"),
    "data": (str, "CIFAR archive (.tar.gz) or extracted folder"),
    "max_train": (int, "use only the first N training images"),
    "hsv": (_floats, "HSV jitter Dh,Ds,Dv,As,Av (default 0.06,0.26,0.20,0.21,0.13)"),
    "scale_min": (int, "scale jitter: crop size S ~ U{scale_min..32}; 32 disables it"),
    "label_smoothing": (float, "label smoothing for cross-entropy"),
    "lr": (float, "initial learning rate"),
    "momentum": (float, "Nesterov momentum"),
    "weight_decay": (float, "L2 weight decay"),
    "batch_size": (int, "minibatch size"),
    "init_scale": (float, "scale of the Glorot-initialised weights"),
    "input_scale": (float, "scale of the standardised input pixels"),
    "schedule": (str, "plateau (S3: halve on plateau, early stop) or onecycle (fixed length)"),
    "max_epochs": (int, "cap on epochs"),
    "patience": (int, "S3: epochs without improvement before halving lr (10)"),
    "cooldown": (int, "S3: no halving within this many epochs after one (8)"),
    "stop_patience": (int, "S3: stop after this many epochs without improvement (30)"),
    "max_decay": (float, "S3: stop once lr has been cut by more than this factor (2000)"),
    "seed": (int, "random seed (init, shuffling, augmentation, dropout)"),
    "optimizer": (str, "sgd (Nesterov, S3) or adam (S6)"),
    "preprocess": (str, "standardize (per image, default) or gcn-zca (S5: ZCA fitted on the training split)"),
}


def add_train_flags(p: argparse.ArgumentParser) -> None:
    for name, (typ, help_) in _TRAIN_FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=typ, default=None, help=help_)
    p.add_argument("--batchnorm", dest="batchnorm", action="store_true", default=None, help="batch norm after every layer")
    p.add_argument("--no-augment", dest="augment", action="store_false", default=None, help="no data augmentation")
    p.add_argument("--no-mirror", dest="mirror", action="store_false", default=None, help="no left-right mirroring")
    p.add_argument("--config", type=Path, help="JSON file of config fields; flags override it")
    _device_arg(p)


def train_config_from_args(args) -> "TrainConfig":
    from .train import ConfigError, TrainConfig
    from .artifacts import read_json
    d = {}
    if args.config is not None:
        d = read_json(args.config)
        d = d.get("config", d)  # accept a run's config.json as well as a bare config
    for f in dataclasses.fields(TrainConfig):
        v = getattr(args, f.name, None)
        if v is not None:
            d[f.name] = v
    cfg = TrainConfig.from_dict(d)
    if cfg.family != "teacher" and cfg.widths is None and cfg.budget is None:
        raise ConfigError(f"family {cfg.family}: give --widths, or --budget and --constants")
    return cfg


def cmd_train(args) -> int:
    from .train import fit
    cfg = train_config_from_args(args)
    out = args.out or Path("runs") / "train" / cfg.run_id()
    res = fit(cfg, out)
    print(json.dumps({k: res[k] for k in ("run_id", "params", "best_epoch", "val_acc", "test_acc")}))
    print(f"run folder: {out}")
    return 0


# ------------------------------------------------------------------------------------------- evaluate

def cmd_evaluate(args) -> int:
    import torch
    from .artifacts import code_version, write_json
    from .data import load_cifar, select_split
    from .train import accuracy, model_from_checkpoint, predict_logits, resolve_device
    device = resolve_device(args.device or "auto")
    model, meta = model_from_checkpoint(args.checkpoint, device)
    archive = load_cifar(args.data)
    x, y = select_split(archive, args.split)
    logits = predict_logits(model, x, meta.get("input_scale", 1.0), device)
    acc = accuracy(logits, y)
    pred = logits.argmax(1)
    per_class = {int(c): (pred[y == c] == c).float().mean().item() for c in torch.unique(y)}
    print(f"accuracy {acc:.4f} on the {args.split} split of {args.data} ({len(y)} images)")
    if args.json:
        write_json(args.json, {"checkpoint": str(args.checkpoint), "data": str(args.data),
                               "data_sha256": archive.sha256, "split": args.split, "n": len(y),
                               "accuracy": acc, "per_class_accuracy": per_class, "family": meta["family"],
                               "widths": meta["widths"], "params": meta.get("params"),
                               "code_version": code_version()})
        print(f"wrote {args.json}")
    return 0


# ------------------------------------------------------------------------------------------- model

def cmd_model_list(args) -> int:
    from .models import FAMILIES
    for f in FAMILIES.values():
        print(f"{f.name:10s} {f.description:32s} widths: {','.join(f.width_names)}")
    return 0


def cmd_model_describe(args) -> int:
    from .models import ModelError, count_params, describe, get_family, solve_budget, teacher_widths
    fam = get_family(args.family)
    if args.widths is not None:
        widths = args.widths
    elif args.budget is not None:
        widths = tuple(solve_budget(args.family, args.budget, args.constants or (0.5,) * fam.n_constants))
    elif args.constants is not None and args.family == "teacher":
        widths = teacher_widths(*args.constants)
    else:
        raise ModelError(f"{args.family}: give --widths, or --budget (and --constants)")
    if not fam.variable_widths and len(widths) != len(fam.width_names):
        raise ModelError(f"{args.family} takes {len(fam.width_names)} widths ({','.join(fam.width_names)}), got {len(widths)}")
    rows = describe(args.family, widths, batchnorm=args.batchnorm)
    print(f"{fam.name}: {fam.description}   widths " + ", ".join(f"{n}={w}" for n, w in zip(fam.width_names, widths)))
    print(f"{'layer':28s} {'output':>16s} {'params':>12s}")
    for r in rows:
        shape = "x".join(str(s) for s in r["shape"])
        print(f"{r['name'] + ' ' + r['type']:28s} {shape:>16s} {r['params']:>12,}")
    n = count_params(args.family, widths, batchnorm=args.batchnorm)
    print(f"{'total':28s} {'':>16s} {n:>12,}")
    if args.budget is not None:
        print(f"budget {args.budget:,}: {n - args.budget:+,} ({100 * (n - args.budget) / args.budget:+.3f}%)")
    return 0


def cmd_model_fold(args) -> int:
    from .train import fold_checkpoint
    r = fold_checkpoint(args.checkpoint, args.out)
    print(f"folded the linear bottleneck: {r['params_unfolded']:,} -> {r['params']:,} parameters; "
          f"max |output difference| {r['max_abs_diff']:.3g} on 64 random inputs (outputs up to "
          f"{r['max_abs_output']:.3g}); wrote {r['out']}")
    return 0


# ------------------------------------------------------------------------------------------- data

def cmd_data_download(args) -> int:
    from .data import download_cifar
    path = download_cifar(args.dir)
    print(path)
    return 0


def cmd_data_info(args) -> int:
    from .data import load_cifar, split_train_val
    c = load_cifar(args.path)
    n_tr = 0 if c.x_train is None else len(c.x_train)
    print(f"{c.source}\n  sha256 {c.sha256}\n  classes {', '.join(c.classes)}")
    if n_tr:
        x_tr, _, x_val, _ = split_train_val(c.x_train, c.y_train)
        print(f"  train {n_tr} images -> {len(x_tr)} train + {len(x_val)} validation")
    print(f"  test {0 if c.x_test is None else len(c.x_test)} images")
    return 0


# ------------------------------------------------------------------------------------------- main

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mimicnet", description="How deep and how convolutional must a network be? "
                                "Train teachers, distil them into budgeted students, measure the frontier.")
    p.add_argument("--version", action="version", version=f"mimicnet {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train one model on hard labels (teacher or baseline)",
                       description="Train one model with SGD+Nesterov and the S3 schedule. Running the same "
                       "command again resumes an interrupted run, or prints the finished one's result.")
    add_train_flags(t)
    t.add_argument("--out", type=Path, help="run folder (default runs/train/FAMILY-CONFIGHASH)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="accuracy of a checkpoint on any CIFAR archive",
                       description="Evaluate a checkpoint (best.safetensors or its run folder) on a split of a "
                       "CIFAR-format archive; an archive holding only test_batch works for --split test.")
    e.add_argument("checkpoint", type=Path)
    e.add_argument("--data", required=True, help="CIFAR archive (.tar.gz) or folder")
    e.add_argument("--split", choices=("test", "val", "train"), default="test")
    e.add_argument("--json", type=Path, help="also write the result as JSON here")
    _device_arg(e)
    e.set_defaults(func=cmd_evaluate)

    m = sub.add_parser("model", help="model families: list, describe, fold").add_subparsers(dest="model_cmd", required=True)
    ml = m.add_parser("list", help="list the registered model families")
    ml.set_defaults(func=cmd_model_list)
    md = m.add_parser("describe", help="layer shapes and parameter count of a model",
                      description="Print each layer's output shape and parameters. With --budget, solve the "
                      "dependent width from the width constants and show how close the count lands.")
    md.add_argument("family")
    md.add_argument("--widths", type=_ints)
    md.add_argument("--budget", type=_budget)
    md.add_argument("--constants", type=_floats)
    md.add_argument("--batchnorm", action="store_true")
    md.set_defaults(func=cmd_model_describe)
    mf = m.add_parser("fold", help="multiply a trained net's linear bottleneck into the next layer (S5)",
                      description="Ba & Caruana's linear bottleneck adds no representational power: W = W_H W_L. "
                      "Writes the folded net as a checkpoint that `mimicnet evaluate` reads, after checking that "
                      "it gives the same outputs. Families with a bottleneck: conv0, conv1, snn, mlp_lin.")
    mf.add_argument("checkpoint", help="best.safetensors or its run folder")
    mf.add_argument("--out", type=Path, required=True, help="the folded checkpoint (.safetensors)")
    mf.set_defaults(func=cmd_model_fold)

    d = sub.add_parser("data", help="CIFAR-10: download, inspect").add_subparsers(dest="data_cmd", required=True)
    dd = d.add_parser("download", help="fetch the official CIFAR-10 archive (md5-checked)")
    dd.add_argument("dir", type=Path)
    dd.set_defaults(func=cmd_data_download)
    di = d.add_parser("info", help="sizes, split and checksum of an archive")
    di.add_argument("path")
    di.set_defaults(func=cmd_data_info)

    # Later pipeline stages register their own subcommands.
    from . import ensemble, estimate, features, reproduce, report, search, transfer
    for module in (ensemble, transfer, search, reproduce, report, estimate, features):
        module.register_cli(sub)
    return p


def user_errors() -> tuple[type[BaseException], ...]:
    from .artifacts import CheckpointError
    from .data import DataError
    from .models import ModelError
    from .report import ReportError
    from .train import ConfigError, Diverged
    from .transfer import TransferError
    return (DataError, ModelError, ConfigError, CheckpointError, Diverged, TransferError, ReportError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except user_errors() as e:
        print(f"mimicnet: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mimicnet: interrupted; run the same command again to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
