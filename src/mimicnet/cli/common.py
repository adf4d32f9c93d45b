"""Flags shared by several commands: numbers, budgets, devices, and every TrainConfig field as a flag."""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..core.artifacts import read_json
from ..core.errors import ConfigError, UserError
from ..core.paths import file_problem, folder_problem, input_problem
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


# Paths a user gives: argparse converts them (so README's commands parse as written, placeholders and all), and
# check_paths says what is wrong with any of them, in one line, before the command reads or writes anything.
def _checked(convert, problem, doc: str):
    def arg(s: str):
        return convert(s)
    arg.problem, arg.__doc__ = problem, doc
    return arg


def _storage_problem(s: str) -> str | None:
    return file_problem(s[len("sqlite:///"):]) if s.startswith("sqlite:///") else None


out_folder = _checked(Path, folder_problem, "a folder a command writes into (--out)")
out_file = _checked(Path, file_problem, "a file a command writes (--json, a .npz, a checkpoint)")
in_path = _checked(str, input_problem, "a file or folder a command reads (--data, --teacher, --transfer)")
in_path_p = _checked(Path, input_problem, "a file or folder a command reads, as a Path")
storage_url = _checked(str, _storage_problem, "--storage: a database URL; an SQLite file is checked as written")


def check_paths(parser: argparse.ArgumentParser, args) -> None:
    """Every path argument of the command chosen (its parser, and its subcommand's): a UserError naming the flag,
    the path and why it cannot be used (core.paths: any errno), before the command starts."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices.get(getattr(args, action.dest, None) or "")
            if chosen is not None:
                check_paths(chosen, args)
            continue
        problem = getattr(action.type, "problem", None)
        value = getattr(args, action.dest, None)
        if problem is None or value is None or value == action.default:
            continue
        for v in value if isinstance(value, list) else [value]:
            why = problem(str(v))
            if why:
                name = action.option_strings[-1] if action.option_strings else action.metavar or action.dest
                raise UserError(f"{name} {v}: {why}")


# How a flag's text becomes a value, where the field's default does not say (a tuple, a budget); every other
# flag is parsed as its default's type. The help and the switches come from the fields' declarations
# (train.config.opt); the flags below are those of values that are not one config field each.
_PARSERS = {"widths": _ints, "constants": _floats, "budget": _budget, "dropout": _floats, "max_train": int,
            "data": in_path, "transfer": in_path, "teacher": in_path}
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
    p.add_argument("--config", type=in_path_p, help="JSON file of config fields; flags override it")
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


def check_out_folder(path: Path, flag: str = "--out") -> None:
    """A folder the command will write into (--out): a UserError naming it and why before any work is done
    when it cannot be one (a file in the way, no permission, a read-only or virtual filesystem, a name too
    long, a symlink loop: core.paths)."""
    why = folder_problem(path)
    if why:
        raise UserError(f"{flag} {path}: {why}")


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
