"""compress's config (CompressConfig), checked where it enters (check_config), and the student config of a
family and budget it searches."""
from __future__ import annotations

from dataclasses import dataclass


from ..core.errors import ConfigError
from ..core.units import budget_name
from ..data.augment import IMAGE_SHAPE
from ..data.cifar import LABELS
from ..distill import external
from ..models.families import STUDENT_BOUNDS, ModelError, count_params, get_family, student_families
from ..models.inference import check_device_name
from ..search.pruners import check_pruner
from ..search.run import check_rungs_after_warmup
from ..search.samplers import SAMPLERS
from ..search.spaces import SearchError, budget_violation, make_space
from ..train.config import TrainConfig



FAMILIES = student_families()  # conv0 ... conv4, from the registry
EXPORT_FORMAT = "mimicnet-student-export-1"


@dataclass
class CompressConfig:
    teacher: str = ""                       # run/ensemble folder, TorchScript file or .pt2 program
    data: str = ""                          # CIFAR-10 or CIFAR-100 archive or folder, or a folder of class
                                            # subfolders of PNG/JPEG images (data.images)
    image_size: int = 32                    # such images resized to this side (CIFAR archives: 32 only)
    budget: int = 1_000_000                 # parameters of every student
    families: tuple = FAMILIES
    trials: int = 8                         # per family
    seeds: int = 2                          # reruns of each family's best config
    labels: str = "fine"                    # CIFAR-100: fine (100) or coarse (20)
    max_train: int | None = None
    max_epochs: int = 20
    transfer_epochs: int = 20
    batch_size: int = 128
    schedule: str = "onecycle"
    sampler: str = "tpe"
    n_startup: int = 4
    pruner: str = "sha"                     # none | median | sha | hyperband
    pruner_min_epochs: int = 5                # the first rung after the one-cycle warm-up (4 of 20 epochs)
    pruner_eta: int = 3
    # the gradient's global norm clipped before each step, as the cpu preset's students (studies.main): measured
    # there, 5 of 6 conv4 configs had a seed collapse or diverge without it (bench/bench_stability.py)
    grad_clip: float = 20.0
    seed: int = 0
    logits_dtype: str = "float16"
    # regress per-logit standardised teacher logits (Ba & Caruana; the saved student outputs plain logits): a
    # teacher of one's own may give logits at any scale, and the searched learning rates assume moderate ones
    normalize_logits: bool = True
    teacher_mean: tuple | None = None       # the teacher's normalisation (distill.external), or from its metadata
    teacher_std: tuple | None = None
    teacher_normalize: str | None = None    # standardize | none
    device: str = "auto"
    latency: bool = True
    onnx: bool = True                       # also export student.onnx (needs onnx + onnxscript; --no-onnx: not)
    # Deployment ceilings, beside the parameter budget (several may be given): multiply-adds of one forward pass
    # of the shipped student (models.cost), and its median latency on `latency_device` (auto: the run's device)
    # at `latency_batch` images with `latency_threads` CPU threads. A width whose architecture overshoots one is
    # infeasible before any epoch (search.run's ceiling); measured once per architecture (OUT/shapes.json).
    max_flops: int | None = None
    max_latency_ms: float | None = None
    latency_device: str = "auto"
    latency_batch: int = 1
    latency_threads: int = 1
    # the exported student: "best" (the highest validation mean) or "smallest-within=D" (the fewest parameters,
    # or the lowest latency when max_latency_ms is set, among those within D points of the best's validation)
    pick: str = "best"


# Fields that say how much, where or how to compute, not what: a rerun with other values continues the same
# run (the teacher and data paths: their content is checked instead, by sha256).
NOT_IDENTITY = ("teacher", "data", "device", "trials", "seeds", "families", "latency", "teacher_mean",
                "teacher_std", "teacher_normalize", "pick", "onnx")


def budgets(cfg: CompressConfig) -> tuple[int, ...]:
    """The parameter budgets searched: one (an int) or several (a tuple; --budget given more than once)."""
    return tuple(cfg.budget) if isinstance(cfg.budget, (tuple, list)) else (cfg.budget,)


def pick_within(pick: str) -> float | None:
    """None for "best"; D for "smallest-within=D" (validation points); a ConfigError otherwise."""
    if pick == "best":
        return None
    head, _, d = str(pick).partition("=")
    try:
        v = float(d)
    except ValueError:
        v = -1.0
    if head != "smallest-within" or not 0 <= v <= 100:
        raise ConfigError(f"--pick must be best or smallest-within=D (D validation points, 0 to 100), not {pick!r}")
    return v


def _int(cfg: CompressConfig, name: str, lo: int, flag: str | None = None) -> None:
    v = getattr(cfg, name)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ConfigError(f"{flag or '--' + name.replace('_', '-')} must be an integer >= {lo}, got {v!r}")


def check_config(cfg: CompressConfig) -> None:
    """Every flag, before anything is read or written: a one-line ConfigError naming the flag."""
    if not cfg.teacher:
        raise ConfigError("--teacher is required (a mimicnet run or ensemble folder, a TorchScript file or a .pt2)")
    if not cfg.data:
        raise ConfigError("--data is required (a CIFAR-10 or CIFAR-100 archive or folder)")
    bs = budgets(cfg)
    if not bs:
        raise ConfigError("--budget: give at least one parameter budget")
    for b in bs:
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise ConfigError(f"--budget must be an integer >= 1, got {b!r}")
    if len(set(bs)) != len(bs):
        raise ConfigError(f"--budget: {', '.join(budget_name(b) for b in bs)} names a budget twice")
    if cfg.max_flops is not None:
        _int(cfg, "max_flops", 1, "--flops")
    if cfg.max_latency_ms is not None and (isinstance(cfg.max_latency_ms, bool) or not isinstance(
            cfg.max_latency_ms, (int, float)) or not 0 < cfg.max_latency_ms < float("inf")):
        raise ConfigError(f"--latency must be a positive time, got {cfg.max_latency_ms!r}")
    _int(cfg, "latency_batch", 1)
    _int(cfg, "latency_threads", 1)
    pick_within(cfg.pick)
    _int(cfg, "image_size", 1)
    _int(cfg, "trials", 1)
    _int(cfg, "seeds", 0)
    _int(cfg, "max_epochs", 1, "--epochs")
    _int(cfg, "transfer_epochs", 1)
    _int(cfg, "batch_size", 1)
    _int(cfg, "pruner_min_epochs", 1)
    if isinstance(cfg.grad_clip, bool) or not isinstance(cfg.grad_clip, (int, float)) or not cfg.grad_clip >= 0 \
            or cfg.grad_clip == float("inf"):
        raise ConfigError(f"--grad-clip must be a number >= 0 (0: no clipping), got {cfg.grad_clip!r}")
    if cfg.max_train is not None:
        _int(cfg, "max_train", 1)
    fams = tuple(cfg.families)
    if not fams:
        raise ConfigError("--families: give at least one of " + ", ".join(FAMILIES))
    bad = [f for f in fams if f not in STUDENT_BOUNDS]
    if bad:
        raise ConfigError(f"--families: unknown student family {bad[0]!r}; families: {', '.join(FAMILIES)}")
    if len(set(fams)) != len(fams):
        raise ConfigError(f"--families: {', '.join(fams)} names a family twice")
    if cfg.labels not in LABELS:
        raise ConfigError(f"--labels must be one of {', '.join(LABELS)}, not {cfg.labels!r}")
    if cfg.sampler not in SAMPLERS:
        raise ConfigError(f"--sampler must be one of {', '.join(SAMPLERS)}, not {cfg.sampler!r}")
    try:
        check_pruner(cfg.pruner, cfg.pruner_min_epochs, cfg.pruner_eta)
        check_device_name(cfg.device)
        if cfg.latency_device not in ("auto", "cpu") and not str(cfg.latency_device).startswith("cuda"):
            raise ConfigError(f"--latency-device must be auto, cpu or cuda[:N], not {cfg.latency_device!r}")
        check_device_name(cfg.latency_device)
        for fam in fams:
            student_config(cfg, "", fam)
        check_rungs_after_warmup(cfg.pruner, cfg.pruner_min_epochs, student_config(cfg, "", fams[0]))
        check_budget(cfg, 10)  # again with the data's classes once it is read (compress())
    except (SearchError, ModelError) as e:
        raise ConfigError(str(e)) from None
    if cfg.teacher_mean is not None or cfg.teacher_std is not None or cfg.teacher_normalize is not None:
        try:
            external.normalization(cfg.teacher_normalize, cfg.teacher_mean, cfg.teacher_std,
                                   "--teacher-mean/--teacher-std/--teacher-normalize")
        except external.TeacherError as e:
            raise ConfigError(str(e)) from None


def check_budget(cfg: CompressConfig, num_classes: int, in_shape=IMAGE_SHAPE) -> None:
    """Every family takes the images (its pools leave at least one pixel) and fits every budget at its narrowest
    fixed layers, with `num_classes` outputs."""
    for fam in cfg.families:
        try:
            count_params(fam, (1,) * len(get_family(fam).width_names), num_classes=num_classes, in_shape=tuple(in_shape))
        except (ModelError, RuntimeError, ValueError) as e:
            raise ConfigError(f"--families {fam}: does not take {'×'.join(map(str, in_shape))} images "
                              f"({str(e).splitlines()[0][:120]}); give a larger --image-size or leave the family "
                              "out") from None
        for budget in budgets(cfg):
            _check_one_budget(budget, fam, num_classes, in_shape)


def _check_one_budget(budget: int, fam: str, num_classes: int, in_shape) -> None:
    space = make_space("student", fam, budget)
    if budget_violation(space, {p.name: 0.0 for p in space.params}, num_classes, in_shape) > 0:
        raise ConfigError(f"--budget {budget:,}: too small for a {fam} student with {num_classes} classes "
                          f"on {'×'.join(map(str, in_shape))} images (its fixed layers alone, at their narrowest, "
                          "have more parameters); give a larger --budget or leave the family out")


def student_config(cfg: CompressConfig, transfer, family: str, budget: int | None = None) -> TrainConfig:
    """The base config of a family's search (the space sets lr, momentum, scales and widths)."""
    return TrainConfig.from_dict({
        "data": cfg.data, "max_train": cfg.max_train, "labels": cfg.labels, "device": cfg.device, "seed": cfg.seed,
        "schedule": cfg.schedule, "max_epochs": cfg.max_epochs, "batch_size": cfg.batch_size, "loss": "l2-logits",
        "normalize_logits": cfg.normalize_logits, "transfer": str(transfer), "family": family,
        "budget": budgets(cfg)[0] if budget is None else budget,
        "grad_clip": cfg.grad_clip})
