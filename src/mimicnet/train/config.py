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
import hashlib
import json
import math
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any, Callable

from ..core import artifacts
from ..core.errors import ConfigError
from ..core.index import RunKind
from ..core.units import MAX_BUDGET, budget_name, parse_budget
from ..data.augment import IMAGE_SHAPE, AugmentConfig
from ..data.cifar import LABELS
from ..data.preprocess import PREPROCESS
from ..models.families import FAMILIES, solve_budget, teacher_widths
from ..models.inference import check_device_name
from .losses import LOSSES, get_loss
from .optim import OPTIMIZERS
from .schedules import SCHEDULES


# ---- the rules a flat field's value must meet. A rule is (test, what the value must be); JSON lists arrive as
# tuples (from_dict) or lists (code), both are taken.
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


_BOOL = _rule(lambda v: isinstance(v, bool), "true or false")
_PATH = _rule(lambda v: isinstance(v, str), "a path (a string)")
_POS = _rule(lambda v: _num(v) and v > 0, "a number > 0")
_NONNEG = _rule(lambda v: _num(v) and v >= 0, "a number >= 0")
_COUNT = _rule(lambda v: _int(v) and v >= 0, "an integer >= 0")
_UNIT = _rule(lambda v: _num(v) and 0 <= v < 1, "a number in [0, 1)")
DISTILL_MODES = ("fixed", "online")
MIXES = ("none", "mixup", "cutmix")


def opt(default: Any = dataclasses.MISSING, *, rule, help: str | None = None, flag: str | None = None,
        late: bool = False, default_factory: Any = dataclasses.MISSING):
    """A config field, declared once: its default, its rule (checked on every way into a config), the help of
    its command-line flag (None: no flag; `flag` names a switch, e.g. --no-augment, for a bool), and `late`:
    added after the flat format was fixed, so written to config.json only when set otherwise (the files of
    every run that does not use it keep their exact bytes). A new field is this one declaration."""
    return field(default=default, default_factory=default_factory,
                 metadata={"rule": rule, "help": help, "flag": flag, "late": late})


@dataclass(frozen=True)
class ModelConfig:
    family: str = opt("teacher", rule=_choice(lambda: sorted(FAMILIES)), help="model family (see `mimicnet model list`)")
    widths: tuple[int, ...] | None = opt(  # explicit layer widths, or
        None, rule=_rule(lambda v: v is None or _seq(v, lambda w: _int(w) and w >= 1), "a list of integers >= 1, or null"),
        help="layer widths, comma-separated, e.g. 76,126,148,1200 for a teacher")
    constants: tuple[float, ...] | None = opt(  # width constants in [0,1] (teacher: C1,C2,C3,H1; students with a budget)
        None, rule=_rule(lambda v: v is None or _seq(v, lambda c: _num(c) and 0 <= c <= 1),
                         "a list of numbers in [0, 1], or null"),
        help="width constants in [0,1] (teacher: C1,C2,C3,H1; students: C1[,C2] with --budget)")
    budget: int | None = opt(  # parameter budget: the dependent width is solved to meet it
        None, rule=_rule(lambda v: v is None or (_int(v) and 1 <= v <= MAX_BUDGET),
                         f"an integer from 1 to {MAX_BUDGET:,} ({budget_name(MAX_BUDGET)}) parameters, or null"),
        help="parameter budget (1M, 3.16M, ...): the dependent width is solved to meet it")
    bounds: tuple | None = opt(  # (lo, hi) per width constant; None: the student table of S4 (baselines bring theirs)
        None, rule=_rule(lambda v: v is None or _seq(v, lambda b: _seq(b, _num) and len(b) == 2 and b[0] <= b[1]),
                         "a list of [lo, hi] width pairs with lo <= hi, or null"))
    dropout: tuple[float, ...] = opt(  # family's dropout rates, in layer order (empty = none)
        (), rule=_rule(lambda v: _seq(v, lambda r: _num(r) and 0 <= r < 1), "a list of rates in [0, 1)"),
        help="dropout rates in layer order (teacher: doc1,doc2,doc3,dof1,dof2)")
    batchnorm: bool = opt(False, rule=_BOOL, help="batch norm after every layer", flag="--batchnorm")
    init_scale: float = opt(1.0, rule=_POS, help="scale of the Glorot-initialised weights")


@dataclass(frozen=True)
class DataConfig:
    path: str = opt("", rule=_PATH,  # flat name: data
                    help="CIFAR-10 or CIFAR-100 archive (.tar.gz) or extracted folder")
    max_train: int | None = opt(None, rule=_rule(lambda v: v is None or (_int(v) and v >= 1),
                                                 "an integer >= 1, or null (all images)"),
                                help="use only the first N training images")
    labels: str = opt("fine", rule=_choice(lambda: LABELS), late=True,
                      help="label set: fine (default: CIFAR-10's 10 classes, CIFAR-100's 100) or coarse (CIFAR-100's "
                           "20 superclasses)")
    augment: bool = opt(True, rule=_BOOL, help="no data augmentation", flag="--no-augment")  # S1's augmentation
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)
    preprocess: str = opt("standardize", rule=_choice(lambda: PREPROCESS),
                          help="standardize (per image, default) or gcn-zca (S5: ZCA fitted on the training split)")
    input_scale: float = opt(1.0, rule=_POS, help="scale of the standardised input pixels")


@dataclass(frozen=True)
class OptimConfig:
    loss: str = opt("ce", rule=_choice(lambda: list(LOSSES)),
                    help="ce (hard labels, default) or a mimic loss: l2-logits, kl, l2-probs, softmax-mse (needs "
                         "--transfer)")
    label_smoothing: float = opt(0.0, rule=_UNIT, help="label smoothing for cross-entropy")
    lr: float = opt(0.01, rule=_POS, help="initial learning rate")
    optimizer: str = opt("sgd", rule=_choice(lambda: list(OPTIMIZERS)), help="sgd (Nesterov, S3) or adam (S6)")
    momentum: float = opt(0.9, rule=_UNIT, help="Nesterov momentum")
    weight_decay: float = opt(0.0, rule=_NONNEG, help="L2 weight decay")
    batch_size: int = opt(128, rule=_rule(lambda v: _int(v) and v >= 1, "an integer >= 1"), help="minibatch size")
    schedule: str = opt("plateau", rule=_choice(lambda: list(SCHEDULES)),
                        help="plateau (S3: halve on plateau, early stop) or onecycle (fixed length)")
    max_epochs: int = opt(500, rule=_rule(lambda v: _int(v) and v >= 1, "an integer >= 1"), help="cap on epochs")
    patience: int = opt(10, rule=_COUNT, help="S3: epochs without improvement before halving lr (10)")
    cooldown: int = opt(8, rule=_COUNT, help="S3: no halving within this many epochs after one (8)")
    stop_patience: int = opt(30, rule=_COUNT, help="S3: stop after this many epochs without improvement (30)")
    max_decay: float = opt(2000.0, rule=_rule(lambda v: _num(v) and v >= 1, "a number >= 1"),
                           help="S3: stop once lr has been cut by more than this factor (2000)")
    grad_clip: float = opt(0.0, rule=_rule(lambda v: _num(v) and v >= 0, "a number >= 0 (0: no clipping)"), late=True,
                           help="clip the gradient's global L2 norm to this before each step (default 0: never)")


@dataclass(frozen=True)
class DistillConfig:
    """Mimic learning: students read a transfer set's teacher logits instead of the archive's labels."""
    transfer: str = opt("", rule=_PATH,
                        help="transfer set folder (`mimicnet transfer`) whose teacher logits a student mimics")
    temperature: float = opt(1.0, rule=_POS, help="temperature of kl and softmax-mse (1)")
    hard_weight: float = opt(0.0, rule=_NONNEG,
                             help="weight of cross-entropy on the true labels added to a mimic loss (0)")
    normalize_logits: bool = opt(False, rule=_BOOL, flag="--normalize-logits",
                                 help="regress per-logit standardised teacher logits (Ba & Caruana)")
    # "fixed": read `transfer` (the papers' method); "online": the teacher labels each augmented batch
    distill_mode: str = opt("fixed", rule=_choice(lambda: DISTILL_MODES), late=True)
    teacher: str = opt("", rule=_PATH, late=True,
                       help="--distill online: the teacher (a run, ensemble or external teacher folder)")
    mix: str = opt("none", rule=_choice(lambda: MIXES), late=True,
                   help="--distill online: none (default), mixup or cutmix of each augmented batch")
    mix_alpha: float = opt(1.0, rule=_POS, late=True,
                           help="--distill online: mixing weight λ ~ Beta(alpha, alpha) (1)")


@dataclass(frozen=True)
class ExecutionConfig:
    """How a run computes, not what it trains: a run may resume on another device."""
    device: str = opt("auto", rule=None)                    # checked by check_device_name (its own flag)
    amp: bool = opt(True, rule=_BOOL)                       # bf16 autocast for forward and loss on CUDA
    channels_last: bool = opt(True, rule=_BOOL)             # NHWC memory format on CUDA (tensor cores like it)
    compile: bool = opt(False, rule=_BOOL)                  # torch.compile the model (pays off on long GPU runs)


# The HSV jitter's five ranges: one 5-tuple `hsv` in the flat format (Dh, Ds, Dv, As, Av; S1), five fields
# of AugmentConfig in code. A search space may target each by its AugmentConfig name.
HSV_FIELDS = ("dh", "ds", "dv", "as_", "av")
_AUG_FIELDS = ("scale_min", "mirror")          # flat name = AugmentConfig field
SECTIONS = (("model", ModelConfig), ("data", DataConfig), ("optim", OptimConfig), ("distill", DistillConfig),
            ("execution", ExecutionConfig))


def _flat_table() -> tuple[dict[str, tuple[str, str]], dict[str, dataclasses.Field]]:
    """flat name -> (section, field), and flat name -> its declaration (opt), for every flat field but hsv
    and the AugmentConfig ones."""
    table, decl = {}, {}
    for section, cls in SECTIONS:
        for f in dataclasses.fields(cls):
            if f.name != "augmentation":
                name = "data" if (section, f.name) == ("data", "path") else f.name
                table[name], decl[name] = (section, f.name), f
    return table, decl


FLAT, _DECL = _flat_table()
# The on-disk order of the flat format, as config.json and checkpoint metadata have always had it (the bytes of
# a checkpoint, and so the sha256 an ensemble identifies its members by, do not change); a field added later
# comes after these, in declaration order.
_FORMAT_ORDER = ("family", "widths", "constants", "budget", "bounds", "dropout", "batchnorm", "data", "max_train",
                 "labels", "augment", "hsv", "scale_min", "mirror", "loss", "label_smoothing", "transfer",
                 "temperature", "hard_weight", "normalize_logits", "distill_mode", "teacher", "mix", "mix_alpha",
                 "preprocess", "lr", "optimizer", "momentum", "weight_decay", "batch_size", "init_scale", "input_scale",
                 "schedule", "max_epochs", "patience", "cooldown", "stop_patience", "max_decay", "grad_clip", "seed",
                 "device", "amp", "channels_last", "compile")
FLAT_FIELDS = _FORMAT_ORDER + tuple(n for n in FLAT if n not in _FORMAT_ORDER)
EXECUTION_FIELDS = tuple(f.name for f in dataclasses.fields(ExecutionConfig))
# The flat fields that are paths (the archive, the transfer set, an online teacher): a run's identity holds what
# they point to, by content (run_id's inputs), never how they are spelled or where the results folder lives.
PATH_FIELDS = ("data", "transfer", "teacher")
# Fields added after the flat format was fixed (opt(late=True)), with their defaults: written only when set
# otherwise. (The config hash leaves out every field at its default anyway: run ids do not change either way.)
LATE_DEFAULTS = {name: f.default for name, f in _DECL.items() if f.metadata.get("late")}
# The flags of the training commands (cli/common.add_train_flags): flat name -> (help, switch or None)
FLAGS = {name: (f.metadata["help"], f.metadata["flag"]) for name, f in _DECL.items() if f.metadata.get("help")}


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    seed: int = 0                                 # init, shuffling, augmentation, dropout (rule: _RULES["seed"])

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
        """Hash of the fields that say how a run is trained, over the flat dict: not the execution fields, and
        not the paths (what they hold enters run_id by content)."""
        return artifacts.config_hash(self, exclude=EXECUTION_FIELDS + PATH_FIELDS)

    def run_id(self, inputs: dict[str, str] | None = None) -> str:
        """FAMILY-HASH: the config (config_hash) and what the run learns from, by content: `inputs` maps
        "data" to the data's sha256 and, for a student, "transfer" or "teacher" to its transfer set's or
        teacher's content id (distill.student.run_sources). The same run whether a path is relative, absolute
        or through a symlink, and wherever the results folder lives. Without inputs: the config alone."""
        if not inputs:
            return f"{self.model.family}-{self.config_hash()}"
        key = json.dumps({"config": self.config_hash(), "inputs": inputs}, sort_keys=True)
        return f"{self.model.family}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"

    def legacy_run_id(self) -> str:
        """The run id code before 2026-12-07 gave (its paths as spelled inside the hash): folders it named
        (runs/train/<id>) are still found, and its runs keep the id their config.json records."""
        return f"{self.model.family}-{artifacts.config_hash(self, exclude=EXECUTION_FIELDS)}"

    @property
    def mimics(self) -> bool:
        """Does this run learn from a teacher's outputs (a mimic loss) rather than from the labels?"""
        return get_loss(self.optim.loss).mimic

    def kind(self) -> RunKind:
        """teacher | baseline (a student family on the labels) | student (mimics a teacher)."""
        if self.mimics:
            return RunKind.STUDENT
        return RunKind.TEACHER if FAMILIES[self.model.family].teacher else RunKind.BASELINE


_RULES = {name: f.metadata["rule"] for name, f in _DECL.items() if f.metadata.get("rule") is not None}
_RULES["seed"] = _rule(lambda v: _int(v) and v >= 0, "an integer >= 0")


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


def resolve_widths(cfg: TrainConfig, num_classes: int = 10, in_shape=IMAGE_SHAPE) -> tuple[int, ...]:
    """The layer widths of `cfg`'s model: given, or solved from its constants (and budget). A budget counts
    the output layer and the layers whose size follows the input's, so it is solved for the data's
    `num_classes` and `in_shape` (a fit passes its data's; 3×32×32 for CIFAR)."""
    m = cfg.model
    if m.widths is not None:
        if m.budget is not None or m.constants is not None:
            raise ConfigError("give either widths, or constants (with a budget for students), not both")
        return tuple(int(w) for w in m.widths)
    if m.constants is None:
        raise ConfigError(f"family {m.family}: give widths, or width constants (and a budget for students)")
    if m.budget is not None:
        opts = {} if num_classes == 10 else {"num_classes": num_classes}  # 10: the builders' default, as always
        if tuple(in_shape) != IMAGE_SHAPE:
            opts["in_shape"] = tuple(in_shape)
        return tuple(solve_budget(m.family, m.budget, m.constants, bounds=m.bounds, **opts))
    if m.family == "teacher":
        return teacher_widths(*m.constants)
    raise ConfigError(f"family {m.family}: width constants need a --budget to solve the dependent width")
