"""The config of one training run (teacher, hard-target baseline or mimic student) and what follows from
it alone: its identity (a hash of the fields that say what is trained, stored in config.json and every
checkpoint), its kind, its widths."""
from __future__ import annotations

from dataclasses import dataclass

from ..core import artifacts
from ..core.errors import ConfigError
from ..core.index import RunKind
from ..data.augment import AugmentConfig
from ..models.families import solve_budget, teacher_widths
from .losses import get_loss

# Fields that say how a run computes, not what it trains: a run may resume on another device.
EXECUTION_FIELDS = ("device", "amp", "channels_last", "compile")


@dataclass
class TrainConfig:
    # --- the model ---
    family: str = "teacher"
    widths: tuple[int, ...] | None = None         # explicit layer widths, or
    constants: tuple[float, ...] | None = None    # width constants in [0,1] (teacher: C1,C2,C3,H1; students with a budget)
    budget: int | None = None                     # parameter budget: the dependent width is solved to meet it
    bounds: tuple | None = None                   # (lo, hi) per width constant; None: the student table of S4
                                                  # (hard-target baselines bring their own, S4)
    dropout: tuple[float, ...] = ()               # family's dropout rates, in layer order (empty = none)
    batchnorm: bool = False
    # --- the data ---
    data: str = ""                                # CIFAR archive (.tar.gz) or extracted folder
    max_train: int | None = None                  # use only the first N training images (after the val split)
    augment: bool = True
    hsv: tuple[float, float, float, float, float] = (0.06, 0.26, 0.20, 0.21, 0.13)  # Dh, Ds, Dv, As, Av (S1)
    scale_min: int = 24                           # scale jitter S ~ U{scale_min..32}
    mirror: bool = True
    # --- optimisation (S3) ---
    loss: str = "ce"                              # "ce": hard labels (teachers, baselines); mimic losses below
    label_smoothing: float = 0.0
    # --- mimic learning (students read a transfer set instead of the archive's training images) ---
    transfer: str = ""                            # transfer-set folder (`mimicnet transfer`)
    temperature: float = 1.0                      # for "kl" and "softmax-mse"
    hard_weight: float = 0.0                      # weight of a cross-entropy term on the true labels (Hinton)
    normalize_logits: bool = False                # regress per-logit standardised teacher logits (Ba & Caruana)
    preprocess: str = "standardize"               # "standardize" (per image) | "gcn-zca" (+ ZCA fitted on train; S5)
    lr: float = 0.01
    optimizer: str = "sgd"                        # "sgd" (Nesterov momentum, S3) | "adam" (Ratusznik et al., S6)
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 128
    init_scale: float = 1.0                       # multiplies the Glorot-initialised weights
    input_scale: float = 1.0                      # multiplies the standardised pixels
    schedule: str = "plateau"                     # "plateau" = S3 exactly; "onecycle" for short fixed-length runs
    max_epochs: int = 500
    patience: int = 10                            # halve lr after this many epochs without a better val error
    cooldown: int = 8                             # ... but not within this many epochs after a halving
    stop_patience: int = 30                       # stop after this many epochs without improvement
    max_decay: float = 2000.0                     # ... or once lr has been cut by more than this factor
    seed: int = 0
    device: str = "auto"                          # not part of the run's identity
    # --- speed on a GPU (no effect on the CPU; how a run computes, not what it trains) ---
    amp: bool = True                              # bf16 autocast for forward and loss on CUDA
    channels_last: bool = True                    # NHWC memory format on CUDA (tensor cores like it)
    compile: bool = False                         # torch.compile the model (pays off on long GPU runs)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return artifacts.dataclass_from_dict(cls, d, ConfigError)

    def augment_config(self) -> AugmentConfig | None:
        if not self.augment:
            return None
        dh, ds, dv, as_, av = self.hsv
        return AugmentConfig(dh=dh, ds=ds, dv=dv, as_=as_, av=av, scale_min=self.scale_min, mirror=self.mirror)

    def config_hash(self) -> str:
        """Hash of the fields that say what is trained (not the execution fields); names the run folder."""
        return artifacts.config_hash(self, exclude=EXECUTION_FIELDS)

    def run_id(self) -> str:
        return f"{self.family}-{self.config_hash()}"

    @property
    def mimics(self) -> bool:
        """Does this run learn from a teacher's outputs (a mimic loss) rather than from the labels?"""
        return get_loss(self.loss).mimic

    def kind(self) -> RunKind:
        """teacher | baseline (a student family on the labels) | student (mimics a teacher)."""
        if self.mimics:
            return RunKind.STUDENT
        return RunKind.TEACHER if self.family == "teacher" else RunKind.BASELINE


def resolve_widths(cfg: TrainConfig) -> tuple[int, ...]:
    if cfg.widths is not None:
        if cfg.budget is not None or cfg.constants is not None:
            raise ConfigError("give either widths, or constants (with a budget for students), not both")
        return tuple(int(w) for w in cfg.widths)
    if cfg.constants is None:
        raise ConfigError(f"family {cfg.family}: give widths, or width constants (and a budget for students)")
    if cfg.budget is not None:
        return tuple(solve_budget(cfg.family, cfg.budget, cfg.constants, bounds=cfg.bounds))
    if cfg.family == "teacher":
        return teacher_widths(*cfg.constants)
    raise ConfigError(f"family {cfg.family}: width constants need a --budget to solve the dependent width")


