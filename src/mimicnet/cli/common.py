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
from ..train.config import FLAT_FIELDS, TrainConfig, check_distill


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


# flag -> TrainConfig field, for flags that map one to one
_TRAIN_FLAGS = {
    "family": (str, "model family (see `mimicnet model list`)"),
    "widths": (_ints, "layer widths, comma-separated, e.g. 76,126,148,1200 for a teacher"),
    "constants": (_floats, "width constants in [0,1] (teacher: C1,C2,C3,H1; students: C1[,C2] with --budget)"),
    "budget": (_budget, "parameter budget (1M, 3.16M, ...): the dependent width is solved to meet it"),
    "dropout": (_floats, "dropout rates in layer order (teacher: doc1,doc2,doc3,dof1,dof2)"),
    "data": (in_path, "CIFAR-10 or CIFAR-100 archive (.tar.gz) or extracted folder"),
    "max_train": (int, "use only the first N training images"),
    "labels": (str, "label set: fine (default: CIFAR-10's 10 classes, CIFAR-100's 100) or coarse (CIFAR-100's 20 "
                    "superclasses)"),
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
    "grad_clip": (float, "clip the gradient's global L2 norm to this before each step (default 0: never)"),
    "seed": (int, "random seed (init, shuffling, augmentation, dropout)"),
    "optimizer": (str, "sgd (Nesterov, S3) or adam (S6)"),
    "preprocess": (str, "standardize (per image, default) or gcn-zca (S5: ZCA fitted on the training split)"),
    "loss": (str, "ce (hard labels, default) or a mimic loss: l2-logits, kl, l2-probs, softmax-mse (needs --transfer)"),
    "transfer": (in_path, "transfer set folder (`mimicnet transfer`) whose teacher logits a student mimics"),
    "temperature": (float, "temperature of kl and softmax-mse (1)"),
    "hard_weight": (float, "weight of cross-entropy on the true labels added to a mimic loss (0)"),
    "teacher": (in_path, "--distill online: the teacher (a run, ensemble or external teacher folder)"),
    "mix": (str, "--distill online: none (default), mixup or cutmix of each augmented batch"),
    "mix_alpha": (float, "--distill online: mixing weight λ ~ Beta(alpha, alpha) (1)"),
}


def add_train_flags(p: argparse.ArgumentParser) -> None:
    for name, (typ, help_) in _TRAIN_FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=typ, default=None, help=help_)
    p.add_argument("--batchnorm", dest="batchnorm", action="store_true", default=None, help="batch norm after every layer")
    p.add_argument("--no-augment", dest="augment", action="store_false", default=None, help="no data augmentation")
    p.add_argument("--no-mirror", dest="mirror", action="store_false", default=None, help="no left-right mirroring")
    p.add_argument("--normalize-logits", dest="normalize_logits", action="store_true", default=None,
                   help="regress per-logit standardised teacher logits (Ba & Caruana)")
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
