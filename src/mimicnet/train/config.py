"""The config of one training run (teacher, hard-target baseline or mimic student) and what follows from
it alone: its identity, its kind, its widths.

In code the config is nested by concern: what model (``cfg.model``), on what data and augmentation
(``cfg.data``, one ``AugmentConfig``), optimised how (``cfg.optim``), mimicking what (``cfg.distill``),
computed where (``cfg.execution``: device, amp, compile: never part of identity). On disk, on the command
line and in search spaces it is one flat dict of unique field names (``lr``, ``family``, ``hsv``, ...): the
format every run folder since the first release holds. ``FLAT`` is the one table between the two, so the
identity of every run is the hash of the same flat dict it always was.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any, Callable

from ..core import artifacts
from ..core.errors import ConfigError
from ..core.index import RunKind
from ..core.units import MAX_BUDGET, budget_name, parse_budget
from ..data.augment import AugmentConfig
from ..data.cifar import LABELS
from ..models.families import FAMILIES, solve_budget, teacher_widths
from ..models.inference import check_device_name
from .losses import LOSSES, get_loss
from .optim import OPTIMIZERS
from .schedules import SCHEDULES


@dataclass(frozen=True)
class ModelConfig:
    family: str = "teacher"
    widths: tuple[int, ...] | None = None         # explicit layer widths, or
    constants: tuple[float, ...] | None = None    # width constants in [0,1] (teacher: C1,C2,C3,H1; students with a budget)
    budget: int | None = None                     # parameter budget: the dependent width is solved to meet it
    bounds: tuple | None = None                   # (lo, hi) per width constant; None: the student table of S4
                                                  # (hard-target baselines bring their own, S4)
    dropout: tuple[float, ...] = ()               # family's dropout rates, in layer order (empty = none)
    batchnorm: bool = False
    init_scale: float = 1.0                       # multiplies the Glorot-initialised weights


@dataclass(frozen=True)
class DataConfig:
    path: str = ""                                # CIFAR archive (.tar.gz) or extracted folder (flat name: data)
    max_train: int | None = None                  # use only the first N training images (after the val split)
    labels: str = "fine"                          # label set: "fine" (CIFAR-10's 10, CIFAR-100's 100 classes) |
                                                  # "coarse" (CIFAR-100's 20 superclasses)
    augment: bool = True                          # augment the training images with `augmentation` (S1)
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)
    preprocess: str = "standardize"               # "standardize" (per image) | "gcn-zca" (+ ZCA fitted on train; S5)
    input_scale: float = 1.0                      # multiplies the standardised pixels


@dataclass(frozen=True)
class OptimConfig:
    loss: str = "ce"                              # "ce": hard labels (teachers, baselines); mimic losses: distill
    label_smoothing: float = 0.0
    lr: float = 0.01
    optimizer: str = "sgd"                        # "sgd" (Nesterov momentum, S3) | "adam" (Ratusznik et al., S6)
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 128
    schedule: str = "plateau"                     # "plateau" = S3 exactly; "onecycle" for short fixed-length runs
    max_epochs: int = 500
    patience: int = 10                            # halve lr after this many epochs without a better val error
    cooldown: int = 8                             # ... but not within this many epochs after a halving
    stop_patience: int = 30                       # stop after this many epochs without improvement
    max_decay: float = 2000.0                     # ... or once lr has been cut by more than this factor
    grad_clip: float = 0.0                        # clip the gradient's global norm to this (0: never)


@dataclass(frozen=True)
class DistillConfig:
    """Mimic learning: students read a transfer set's teacher logits instead of the archive's labels."""
    transfer: str = ""                            # transfer-set folder (`mimicnet transfer`)
    temperature: float = 1.0                      # for "kl" and "softmax-mse"
    hard_weight: float = 0.0                      # weight of a cross-entropy term on the true labels (Hinton)
    normalize_logits: bool = False                # regress per-logit standardised teacher logits (Ba & Caruana)
    distill_mode: str = "fixed"                   # "fixed": read `transfer` (the papers' method); "online": the
                                                  # teacher labels each augmented batch as the student sees it
    teacher: str = ""                             # online: the teacher (run, ensemble or external teacher folder)
    mix: str = "none"                             # online: "none" | "mixup" | "cutmix" of the augmented batch
    mix_alpha: float = 1.0                        # online: λ ~ Beta(mix_alpha, mix_alpha)


@dataclass(frozen=True)
class ExecutionConfig:
    """How a run computes, not what it trains: a run may resume on another device."""
    device: str = "auto"
    amp: bool = True                              # bf16 autocast for forward and loss on CUDA
    channels_last: bool = True                    # NHWC memory format on CUDA (tensor cores like it)
    compile: bool = False                         # torch.compile the model (pays off on long GPU runs)


# The HSV jitter's five ranges: one 5-tuple `hsv` in the flat format (Dh, Ds, Dv, As, Av; S1), five fields
# of AugmentConfig in code. A search space may target each by its AugmentConfig name.
HSV_FIELDS = ("dh", "ds", "dv", "as_", "av")
_AUG_FIELDS = ("scale_min", "mirror")          # flat name = AugmentConfig field


def _flat_table() -> dict[str, tuple[str, str]]:
    """flat name -> (section, field) for every flat field but hsv and the AugmentConfig ones."""
    table = {}
    for section, cls in (("model", ModelConfig), ("data", DataConfig), ("optim", OptimConfig),
                         ("distill", DistillConfig), ("execution", ExecutionConfig)):
        for f in dataclasses.fields(cls):
            if f.name != "augmentation":
                table["data" if (section, f.name) == ("data", "path") else f.name] = (section, f.name)
    return table


FLAT = _flat_table()
# Every name of the on-disk format, in the order config.json and checkpoint metadata have always had (the
# bytes of a checkpoint, and so the sha256 an ensemble identifies its members by, do not change).
FLAT_FIELDS = ("family", "widths", "constants", "budget", "bounds", "dropout", "batchnorm", "data", "max_train",
               "labels", "augment", "hsv", "scale_min", "mirror", "loss", "label_smoothing", "transfer", "temperature",
               "hard_weight", "normalize_logits", "distill_mode", "teacher", "mix", "mix_alpha", "preprocess", "lr", "optimizer", "momentum", "weight_decay",
               "batch_size", "init_scale", "input_scale", "schedule", "max_epochs", "patience", "cooldown",
               "stop_patience", "max_decay", "grad_clip", "seed", "device", "amp", "channels_last", "compile")
assert sorted(FLAT_FIELDS) == sorted(("seed", *FLAT, "hsv", *_AUG_FIELDS)), "FLAT_FIELDS must list every field"
EXECUTION_FIELDS = tuple(f.name for f in dataclasses.fields(ExecutionConfig))
# Fields added after the flat format was fixed, with their defaults: written (config.json, checkpoint metadata)
# only when set otherwise, so the files of every run that does not use them keep their exact bytes. (The
# config hash leaves out every field at its default anyway: run ids do not change either way.)
LATE_DEFAULTS = {"labels": "fine", "distill_mode": "fixed", "teacher": "", "mix": "none", "mix_alpha": 1.0,
                 "grad_clip": 0.0}


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    seed: int = 0                                 # init, shuffling, augmentation, dropout

    # ---- the flat format (disk, flags, search spaces)
    @classmethod
    def of(cls, **flat) -> "TrainConfig":
        """A config from flat field names: TrainConfig.of(family="conv2", budget=100_000, lr=0.01)."""
        return cls().replace(**flat)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """From a config.json's flat dict (JSON lists become tuples); unknown fields are a ConfigError."""
        if not isinstance(d, dict):
            raise ConfigError(f"a config is a JSON object of fields, got {type(d).__name__}")
        return cls().replace(**artifacts.tuples_from_lists(d))

    def replace(self, **flat) -> "TrainConfig":
        """A copy with flat fields changed; also takes the AugmentConfig names (dh, ..., av) one by one.
        Every value is checked (type and range, `check_field`): every way into a config (flags, a JSON
        --config, preset fields, search trials, a run's config.json) meets the same rules, before anything
        is written."""
        unknown = sorted(set(flat) - set(FLAT_FIELDS) - set(HSV_FIELDS))
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(unknown)}")
        if isinstance(flat.get("budget"), str) or (isinstance(flat.get("budget"), float) and flat["budget"].is_integer()):
            flat["budget"] = parse_budget(flat["budget"])  # "1M" or 1e6 in a JSON config, as --budget 1M
        for name, v in flat.items():
            check_field(name, v)
        sections: dict[str, dict[str, Any]] = {}
        aug: dict[str, Any] = {}
        for name, v in flat.items():
            if name == "hsv":
                if not isinstance(v, (tuple, list)) or len(v) != len(HSV_FIELDS):
                    raise ConfigError(f"hsv takes {len(HSV_FIELDS)} numbers (Dh,Ds,Dv,As,Av), got {v!r}")
                aug.update(zip(HSV_FIELDS, v))
            elif name in HSV_FIELDS or name in _AUG_FIELDS:
                aug[name] = v
            elif name in FLAT:
                section, fname = FLAT[name]
                sections.setdefault(section, {})[fname] = v
        if aug:
            try:
                augmentation = dataclasses.replace(self.data.augmentation, **aug)
            except ValueError as e:  # AugmentConfig checks its own fields (scale_min in 1..32, ...)
                raise ConfigError(str(e).replace("AugmentConfig.", "")) from None
            sections.setdefault("data", {})["augmentation"] = augmentation
        new = {s: dataclasses.replace(getattr(self, s), **changes) for s, changes in sections.items()}
        if "seed" in flat:
            new["seed"] = flat["seed"]
        return dataclasses.replace(self, **new)

    def to_dict(self) -> dict:
        """The flat dict of config.json (and of every checkpoint's meta)."""
        a = self.data.augmentation
        d: dict[str, Any] = {"hsv": [getattr(a, k) for k in HSV_FIELDS], "scale_min": a.scale_min,
                             "mirror": a.mirror, "seed": self.seed}
        for name, (section, fname) in FLAT.items():
            d[name] = artifacts.to_jsonable(getattr(getattr(self, section), fname))
        return {name: d[name] for name in FLAT_FIELDS if name not in LATE_DEFAULTS or d[name] != LATE_DEFAULTS[name]}

    def augment_config(self) -> AugmentConfig | None:
        return self.data.augmentation if self.data.augment else None

    # ---- identity and kind
    def config_hash(self) -> str:
        """Hash of the fields that say what is trained (not the execution fields), over the flat dict, as
        run folders were always named."""
        return artifacts.config_hash(self, exclude=EXECUTION_FIELDS)

    def run_id(self) -> str:
        return f"{self.model.family}-{self.config_hash()}"

    @property
    def mimics(self) -> bool:
        """Does this run learn from a teacher's outputs (a mimic loss) rather than from the labels?"""
        return get_loss(self.optim.loss).mimic

    def kind(self) -> RunKind:
        """teacher | baseline (a student family on the labels) | student (mimics a teacher)."""
        if self.mimics:
            return RunKind.STUDENT
        return RunKind.TEACHER if FAMILIES[self.model.family].teacher else RunKind.BASELINE


# ---- the rules of each flat field (the AugmentConfig ones: AugmentConfig itself). A rule is (test, what the
# value must be); JSON lists arrive as tuples (from_dict) or lists (code), both are taken.
PREPROCESS = ("standardize", "gcn-zca")
DISTILL_MODES = ("fixed", "online")
MIXES = ("none", "mixup", "cutmix")


def _int(v) -> bool:
    return isinstance(v, Integral) and not isinstance(v, bool)


def _num(v) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v)


def _seq(v, item: Callable[[Any], bool]) -> bool:
    return isinstance(v, (tuple, list)) and all(item(x) for x in v)


def _choice(options: Callable[[], Any]) -> tuple[Callable[[Any], bool], Callable[[], str]]:
    return (lambda v: isinstance(v, str) and v in options()), lambda: "one of " + ", ".join(options())


def _rule(test: Callable[[Any], bool], what: str) -> tuple[Callable[[Any], bool], Callable[[], str]]:
    return test, lambda: what


_RULES: dict[str, tuple[Callable[[Any], bool], Callable[[], str]]] = {
    "family": _choice(lambda: sorted(FAMILIES)),
    "widths": _rule(lambda v: v is None or _seq(v, lambda w: _int(w) and w >= 1), "a list of integers >= 1, or null"),
    "constants": _rule(lambda v: v is None or _seq(v, lambda c: _num(c) and 0 <= c <= 1),
                       "a list of numbers in [0, 1], or null"),
    "budget": _rule(lambda v: v is None or (_int(v) and 1 <= v <= MAX_BUDGET),
                    f"an integer from 1 to {MAX_BUDGET:,} ({budget_name(MAX_BUDGET)}) parameters, or null"),
    "bounds": _rule(lambda v: v is None or _seq(v, lambda b: _seq(b, _num) and len(b) == 2 and b[0] <= b[1]),
                    "a list of [lo, hi] width pairs with lo <= hi, or null"),
    "dropout": _rule(lambda v: _seq(v, lambda r: _num(r) and 0 <= r < 1), "a list of rates in [0, 1)"),
    "batchnorm": _rule(lambda v: isinstance(v, bool), "true or false"),
    "data": _rule(lambda v: isinstance(v, str), "a path (a string)"),
    "max_train": _rule(lambda v: v is None or (_int(v) and v >= 1), "an integer >= 1, or null (all images)"),
    "labels": _choice(lambda: LABELS),
    "augment": _rule(lambda v: isinstance(v, bool), "true or false"),
    "loss": _choice(lambda: list(LOSSES)),
    "label_smoothing": _rule(lambda v: _num(v) and 0 <= v < 1, "a number in [0, 1)"),
    "transfer": _rule(lambda v: isinstance(v, str), "a path (a string)"),
    "temperature": _rule(lambda v: _num(v) and v > 0, "a number > 0"),
    "hard_weight": _rule(lambda v: _num(v) and v >= 0, "a number >= 0"),
    "normalize_logits": _rule(lambda v: isinstance(v, bool), "true or false"),
    "distill_mode": _choice(lambda: DISTILL_MODES),
    "teacher": _rule(lambda v: isinstance(v, str), "a path (a string)"),
    "mix": _choice(lambda: MIXES),
    "mix_alpha": _rule(lambda v: _num(v) and v > 0, "a number > 0"),
    "preprocess": _choice(lambda: PREPROCESS),
    "lr": _rule(lambda v: _num(v) and v > 0, "a number > 0"),
    "optimizer": _choice(lambda: list(OPTIMIZERS)),
    "momentum": _rule(lambda v: _num(v) and 0 <= v < 1, "a number in [0, 1)"),
    "weight_decay": _rule(lambda v: _num(v) and v >= 0, "a number >= 0"),
    "batch_size": _rule(lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "init_scale": _rule(lambda v: _num(v) and v > 0, "a number > 0"),
    "input_scale": _rule(lambda v: _num(v) and v > 0, "a number > 0"),
    "schedule": _choice(lambda: list(SCHEDULES)),
    "max_epochs": _rule(lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "patience": _rule(lambda v: _int(v) and v >= 0, "an integer >= 0"),
    "cooldown": _rule(lambda v: _int(v) and v >= 0, "an integer >= 0"),
    "stop_patience": _rule(lambda v: _int(v) and v >= 0, "an integer >= 0"),
    "max_decay": _rule(lambda v: _num(v) and v >= 1, "a number >= 1"),
    "grad_clip": _rule(lambda v: _num(v) and v >= 0 and math.isfinite(v), "a number >= 0 (0: no clipping)"),
    "seed": _rule(lambda v: _int(v) and v >= 0, "an integer >= 0"),
    "amp": _rule(lambda v: isinstance(v, bool), "true or false"),
    "channels_last": _rule(lambda v: isinstance(v, bool), "true or false"),
    "compile": _rule(lambda v: isinstance(v, bool), "true or false"),
}
assert set(_RULES) == set(FLAT_FIELDS) - {"hsv", "scale_min", "mirror", "device"}, "every flat field has a rule"


def check_field(name: str, v: Any) -> None:
    """ConfigError naming the flat field and what its value must be, unless `v` is a valid value of it.
    `device` is checked for its spelling only: whether this machine has it is resolve_device's question."""
    if name == "device":
        check_device_name(v)
        return
    rule = _RULES.get(name)
    if rule is not None and not rule[0](v):
        raise ConfigError(f"{name} must be {rule[1]()}, got {_show(v)}")


def _show(v: Any) -> str:
    """A value as the user wrote it: JSON for JSON values (null, true, "2", [1, 2]), repr otherwise."""
    try:
        return json.dumps(artifacts.to_jsonable(v))
    except (TypeError, ValueError):
        return repr(v)


def check_distill(cfg: TrainConfig) -> None:
    """The distillation fields that only make sense together (each field alone is checked by `check_field`)."""
    d = cfg.distill
    if d.distill_mode == "fixed":
        if d.teacher or d.mix != "none":
            what = "--teacher" if d.teacher else f"--mix {d.mix}"
            raise ConfigError(f"{what} is for online distillation (--distill online); a fixed-set student reads "
                              "its teacher's logits from --transfer")
        return
    if not cfg.mimics:
        raise ConfigError(f"--distill online trains a student: give a mimic loss (--loss l2-logits, kl, ...), "
                          f"not {cfg.optim.loss!r}")
    if not d.teacher:
        raise ConfigError("--distill online needs --teacher (a run, ensemble or external teacher folder)")
    if d.transfer:
        raise ConfigError("--distill online labels its own batches: give --teacher, not --transfer")
    if d.normalize_logits:
        raise ConfigError("--normalize-logits needs a transfer set's logit statistics: not with --distill online")
    if d.mix == "none" and d.mix_alpha != 1.0:
        raise ConfigError("--mix-alpha sets the mixing of --mix mixup or cutmix: give one, or leave --mix-alpha out")
    if d.mix != "none" and d.hard_weight > 0:
        raise ConfigError(f"--hard-weight with --mix {d.mix}: a mixed image has no single true label")


def resolve_widths(cfg: TrainConfig, num_classes: int = 10) -> tuple[int, ...]:
    """The layer widths of `cfg`'s model: given, or solved from its constants (and budget). A budget counts
    the output layer, so it is solved for the data's `num_classes` (a fit passes its data's)."""
    m = cfg.model
    if m.widths is not None:
        if m.budget is not None or m.constants is not None:
            raise ConfigError("give either widths, or constants (with a budget for students), not both")
        return tuple(int(w) for w in m.widths)
    if m.constants is None:
        raise ConfigError(f"family {m.family}: give widths, or width constants (and a budget for students)")
    if m.budget is not None:
        opts = {} if num_classes == 10 else {"num_classes": num_classes}  # 10: the builders' default, as always
        return tuple(solve_budget(m.family, m.budget, m.constants, bounds=m.bounds, **opts))
    if m.family == "teacher":
        return teacher_widths(*m.constants)
    raise ConfigError(f"family {m.family}: width constants need a --budget to solve the dependent width")
