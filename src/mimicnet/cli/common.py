"""Flags shared by several commands: numbers, budgets, devices, and every TrainConfig field as a flag."""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from ..core.artifacts import read_json
from ..core.errors import ConfigError, UserError
from ..core.units import parse_budget
from ..data.cifar import LABELS
from ..train.config import FLAGS, FLAT_FIELDS, LATE_DEFAULTS, TrainConfig, check_distill


def _ints(s: str) -> tuple[int, ...]:
    try:
        vals = tuple(float(v) for v in s.split(","))
    except ValueError:
        vals = ()
    if not vals or not all(math.isfinite(v) and v.is_integer() for v in vals):  # 1e3 is 1000; 4.5 is no width
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {s!r}")
    return tuple(int(v) for v in vals)


def _floats(s: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in s.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {s!r}") from None


def _budget(s: str) -> int:
    """1M, 3.16M, 100k, 31600000 ..."""
    try:
        return parse_budget(s)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _device_arg(p):
    p.add_argument("--device", default=None, help="auto (default: cuda if present), cpu, cuda, cuda:1 ...")


def labels_arg(p) -> None:
    """--labels for a command that reads data but takes no training flags (data info, evaluate, transfer, ...)."""
    p.add_argument("--labels", choices=LABELS, default="fine",
                   help="label set: fine (default: CIFAR-10's 10 classes, CIFAR-100's 100) or coarse (CIFAR-100's "
                   "20 superclasses)")


# How a flag's text becomes a value, where the field's default does not say (a tuple, a budget); every other
# flag is parsed as its default's type. The help and the switches come from the fields' declarations
# (train.config.opt); the flags below are those of values that are not one config field each.
_PARSERS = {"widths": _ints, "constants": _floats, "budget": _budget, "dropout": _floats, "max_train": int}
_OTHER_FLAGS = {
    "hsv": (_floats, "HSV jitter Dh,Ds,Dv,As,Av (default 0.06,0.26,0.20,0.21,0.13)"),
    "scale_min": (int, "scale jitter: crop size S ~ U{scale_min..32}; 32 disables it"),
    "seed": (int, "random seed (init, shuffling, augmentation, dropout)"),
}


def add_train_flags(p: argparse.ArgumentParser) -> None:
    """Every TrainConfig field with a flag (train.config.FLAGS), in the flat format's order."""
    defaults = TrainConfig().to_dict() | LATE_DEFAULTS
    for name in FLAT_FIELDS:
        if name in _OTHER_FLAGS:
            typ, help_ = _OTHER_FLAGS[name]
            p.add_argument("--" + name.replace("_", "-"), dest=name, type=typ, default=None, help=help_)
        elif name in FLAGS:
            help_, switch = FLAGS[name]
            if switch is not None:  # a bool: the switch turns its default over
                p.add_argument(switch, dest=name, action="store_false" if defaults[name] else "store_true",
                               default=None, help=help_)
            else:
                typ = _PARSERS.get(name) or type(defaults[name])
                p.add_argument("--" + name.replace("_", "-"), dest=name, type=typ, default=None, help=help_)
    p.add_argument("--no-mirror", dest="mirror", action="store_false", default=None, help="no left-right mirroring")
    p.add_argument("--distill", dest="distill_mode", default=None, metavar="{fixed,online}",
                   help="fixed (default): mimic the logits of --transfer, labelled once; online: --teacher labels "
                        "every augmented batch as the student sees it (Beyer et al. 2022)")
    p.add_argument("--config", type=Path, help="JSON file of config fields; flags override it")
    _device_arg(p)


_JSON_TYPES = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "true/false",
               type(None): "null"}


def config_file(path: Path) -> dict:
    """The flat config fields of a --config file (a bare config, or a run's config.json), each checked: a
    ConfigError naming the file and the field."""
    d = read_json(path)
    if isinstance(d, dict) and isinstance(d.get("config"), dict):
        d = d["config"]  # accept a run's config.json as well as a bare config
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: a config file holds one JSON object of config fields, not "
                          f"{_JSON_TYPES.get(type(d), type(d).__name__)}")
    try:
        TrainConfig.from_dict(d)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return dict(d)


def check_out_folder(path: Path) -> None:
    """A folder the command will write into (--out): a UserError naming it before any work is done when it
    cannot be one (a file in the way, no permission to write)."""
    path = Path(path)
    here = next((p for p in (path, *path.parents) if p.exists()), Path.cwd())  # what exists of it
    if not here.is_dir():
        raise UserError(f"--out {path}: {here} is a file, not a folder")
    if not os.access(here, os.W_OK | os.X_OK):
        raise UserError(f"--out {path}: cannot write in {here} (permission denied)")


def train_config_from_args(args) -> TrainConfig:
    d = config_file(args.config) if args.config is not None else {}
    for name in FLAT_FIELDS:
        v = getattr(args, name, None)
        if v is not None:
            d[name] = v
    cfg = TrainConfig.from_dict(d)
    check_distill(cfg)
    if cfg.model.family != "teacher" and cfg.model.widths is None and cfg.model.budget is None:
        raise ConfigError(f"family {cfg.model.family}: give --widths, or --budget and --constants")
    return cfg
