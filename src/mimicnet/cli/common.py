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


def out_folder(s: str) -> Path:
    """argparse type of a folder a command writes into: checked where it enters (core.paths)."""
    why = folder_problem(s)
    if why:
        raise argparse.ArgumentTypeError(f"{s}: {why}")
    return Path(s)


def out_file(s: str) -> Path:
    """argparse type of a file a command writes (--json, a .npz, a checkpoint): checked where it enters."""
    why = file_problem(s)
    if why:
        raise argparse.ArgumentTypeError(f"{s}: {why}")
    return Path(s)


def in_path(s: str) -> str:
    """argparse type of a file or folder a command reads (--data, --teacher, --transfer): it is there and
    can be read (what it holds is checked by its reader)."""
    why = input_problem(s)
    if why:
        raise argparse.ArgumentTypeError(f"{s}: {why}")
    return s


def in_path_p(s: str) -> Path:
    return Path(in_path(s))


def storage_url(s: str) -> str:
    """argparse type of --storage: a database URL; an SQLite file's path is checked like a file written."""
    if s.startswith("sqlite:///"):
        why = file_problem(s[len("sqlite:///"):])
        if why:
            raise argparse.ArgumentTypeError(f"{s}: {why}")
    return s


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
