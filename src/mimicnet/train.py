"""Training: one flat loop, the S3 learning-rate schedule, checkpoints you can resume from.

A run is one folder:
    config.json        the exact TrainConfig (and code version) that made it
    metrics.jsonl      one line per finished epoch: loss, val acc, lr, seconds
    last.safetensors   model + optimizer + schedule state after the last finished epoch (resume point)
    best.safetensors   weights of the best-validation epoch (the result of the run)
    results.json       written last: final val and test accuracy. Its presence means "finished".

Resuming is exact because nothing random is carried between epochs: epoch e draws its shuffle, its
augmentation and its dropout masks from generators seeded by (seed, e). So a run killed at any moment
and started again from `last` replays the same numbers as one that never stopped.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import artifacts
from .augment import AugmentConfig, augment, standardize
from .models import build_model, count_params, init_weights, solve_budget, teacher_widths


class ConfigError(ValueError):
    """A config that cannot describe a run (message says which field and why)."""


class Diverged(RuntimeError):
    """The loss became NaN/inf or exploded: a result of these hyperparameters, not a bug."""


# Fields that say how a run computes, not what it trains: a run may resume on another device.
EXECUTION_FIELDS = ("device", "amp", "channels_last", "compile")
# Device types on which `amp` (bf16 autocast) and `channels_last` take effect. Not the CPU: most CPUs run
# bf16 convolutions slower than fp32. The suite adds "cpu" to run this code path without a GPU.
FAST_PATH_DEVICES = ("cuda",)


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

    def run_id(self) -> str:
        return f"{self.family}-{artifacts.config_hash(self, exclude=EXECUTION_FIELDS)}"


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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but torch sees no CUDA device")
    return torch.device(name)


# ----------------------------------------------------------------------------------------------
# The learning-rate schedule of S3, as a small state machine stored in every checkpoint.

@dataclass
class PlateauSchedule:
    """Halve lr when val error has not improved for `patience` epochs, never within `cooldown` epochs
    after a halving; stop after `stop_patience` epochs without improvement or once lr0/lr > max_decay."""
    lr0: float
    patience: int = 10
    cooldown: int = 8
    stop_patience: int = 30
    max_decay: float = 2000.0
    factor: float = 0.5
    lr: float = field(default=float("nan"))
    best_err: float = float("inf")
    best_epoch: int = -1
    last_cut: int = -(10 ** 9)

    def __post_init__(self):
        if math.isnan(self.lr):
            self.lr = self.lr0

    def step(self, epoch: int, val_err: float) -> bool:
        """Record the val error of a finished epoch; update lr; return True when training should stop."""
        if val_err < self.best_err:
            self.best_err, self.best_epoch = val_err, epoch
        stale = epoch - self.best_epoch
        if stale >= self.stop_patience:
            return True
        if stale >= self.patience and epoch - self.last_cut > self.cooldown:
            self.lr *= self.factor
            self.last_cut = epoch
        return self.lr0 / self.lr > self.max_decay

    def lr_at(self, epoch: int, frac: float) -> float:
        return self.lr


@dataclass
class OneCycleSchedule:
    """Linear warm-up to lr0 over the first 20% of max_epochs, then linear decay to zero: for short
    fixed-length runs (cpu presets), where a plateau schedule never gets to cut. Stops at max_epochs."""
    lr0: float
    max_epochs: int
    warmup: float = 0.2
    best_err: float = float("inf")
    best_epoch: int = -1

    def lr_at(self, epoch: int, frac: float) -> float:
        t = (epoch + frac) / self.max_epochs
        if t < self.warmup:
            return self.lr0 * (0.1 + 0.9 * t / self.warmup)
        return self.lr0 * max(0.0, (1 - t) / (1 - self.warmup))

    def step(self, epoch: int, val_err: float) -> bool:
        if val_err < self.best_err:
            self.best_err, self.best_epoch = val_err, epoch
        return epoch + 1 >= self.max_epochs

    @property
    def lr(self) -> float:
        return self.lr_at(self.best_epoch, 0)


def make_schedule(cfg: TrainConfig):
    if cfg.schedule == "plateau":
        return PlateauSchedule(cfg.lr, cfg.patience, cfg.cooldown, cfg.stop_patience, cfg.max_decay)
    if cfg.schedule == "onecycle":
        return OneCycleSchedule(cfg.lr, cfg.max_epochs)
    raise ConfigError(f"schedule must be 'plateau' or 'onecycle', not {cfg.schedule!r}")


# ----------------------------------------------------------------------------------------------
# Data held as uint8 tensors on the training device; batches are sliced, augmented and standardised there.

@dataclass
class Split:
    x: torch.Tensor          # uint8 N×3×32×32
    y: torch.Tensor          # int64 N


@dataclass
class TrainData:
    train: Split
    val: Split
    test: Split | None
    num_classes: int = 10
    sha256: str = ""
    in_shape: tuple[int, ...] = (3, 32, 32)        # one example's shape: (D,) for feature vectors (features.py)


def load_train_data(cfg: TrainConfig) -> TrainData:
    from .data import load_cifar, split_train_val
    if not cfg.data:
        raise ConfigError("no data: pass --data ARCHIVE (a CIFAR-10 .tar.gz or folder)")
    c = load_cifar(cfg.data)
    if c.x_train is None:
        raise ConfigError(f"{cfg.data}: holds no training batches (data_batch_*), only test data")
    x_tr, y_tr, x_val, y_val = split_train_val(c.x_train, c.y_train)
    if cfg.max_train is not None:
        x_tr, y_tr = x_tr[: cfg.max_train], y_tr[: cfg.max_train]
    test = Split(c.x_test, c.y_test) if c.x_test is not None else None
    return TrainData(Split(x_tr, y_tr), Split(x_val, y_val), test, len(c.classes), c.sha256)


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """An independent, reproducible random stream for one epoch (shuffle, augmentation, ...)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch * 7919 + stream)


def preprocess(x: torch.Tensor, input_scale: float) -> torch.Tensor:
    """uint8 or [0,1] float images -> what the network sees: per-image standardised, times input_scale."""
    return standardize(x) * input_scale


def hard_label_batches(cfg: TrainConfig, split: Split, device: torch.device) -> Callable[[int], Iterator]:
    """epoch -> iterator of (inputs, labels), shuffled and augmented on `device`. The last partial batch
    is dropped so every step has the same size (batch-norm statistics and step sizes stay comparable)."""
    x, y = split.x.to(device), split.y.to(device)
    aug = cfg.augment_config()

    def batches(epoch: int):
        g = epoch_generator(cfg.seed, epoch)
        perm = torch.randperm(len(x), generator=g).to(device)
        n = len(x) // cfg.batch_size if len(x) >= cfg.batch_size else 1
        for i in range(n):
            idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            xb = x[idx]
            xb = augment(xb, aug, g) if aug is not None else xb
            yield preprocess(xb, cfg.input_scale), y[idx]
    batches.steps_per_epoch = max(1, len(x) // cfg.batch_size)
    return batches


@torch.no_grad()
def predict_logits(model: torch.nn.Module, x: torch.Tensor, input_scale: float, device: torch.device,
                   batch_size: int = 1000) -> torch.Tensor:
    """Logits (float32, CPU) for uint8 images, in eval mode, in large batches."""
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        out.append(model(preprocess(x[i:i + batch_size].to(device), input_scale)).float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 10)


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return (logits.argmax(1) == y.cpu()).float().mean().item() if len(y) else float("nan")


# ----------------------------------------------------------------------------------------------
# Mimic learning: targets are the teacher's logits stored in a transfer set.

MIMIC_LOSSES = ("l2-logits", "kl", "l2-probs", "softmax-mse")


def transfer_batches(cfg: TrainConfig, ts, device: torch.device, logit_norm=None) -> Callable[[int], Iterator]:
    """epoch -> iterator of (inputs, (teacher logits, true labels)) in the transfer set's stored order:
    student epoch e reads transfer epoch e mod E, so every student sees the same images in the same order.
    Rows are read in large contiguous slices (several batches at a time) and cut into batches on device."""
    per_read = cfg.batch_size * max(1, 8192 // cfg.batch_size)
    mean, std = logit_norm if logit_norm is not None else (None, None)

    def batches(epoch: int):
        start, stop = ts.epoch_rows(epoch % ts.epochs)
        for lo in range(start, stop, per_read):
            x, z, y = ts.read(lo, min(lo + per_read, stop))
            x, z, y = x.to(device, non_blocking=True), z.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if mean is not None:
                z = (z - mean) / std
            for i in range(0, len(x), cfg.batch_size):
                yield preprocess(x[i:i + cfg.batch_size], cfg.input_scale), (z[i:i + cfg.batch_size], y[i:i + cfg.batch_size])
    batches.steps_per_epoch = -(-ts.n // cfg.batch_size)
    return batches


def mimic_loss(cfg: TrainConfig):
    """loss(student logits g, (teacher logits z, labels y)).

    l2-logits   (1/2T) sum ||g - z||^2 over the batch (Ba & Caruana; Urban et al.): the default
    l2-probs    the same on softmax probabilities
    kl          T^2 KL(softmax(z/T) || softmax(g/T))  (Hinton et al.)
    softmax-mse mean squared error between softmax(g/T) and softmax(z/T)  (Ratusznik et al.)
    Any of them plus hard_weight * cross-entropy on the true labels (the rest weighted 1 - hard_weight)."""
    T, a = cfg.temperature, cfg.hard_weight
    if cfg.loss == "l2-logits":
        soft = lambda g, z: 0.5 * (g - z).pow(2).sum(1).mean()  # noqa: E731
    elif cfg.loss == "l2-probs":
        soft = lambda g, z: 0.5 * (g.softmax(1) - z.softmax(1)).pow(2).sum(1).mean()  # noqa: E731
    elif cfg.loss == "kl":
        soft = lambda g, z: F.kl_div(F.log_softmax(g / T, 1), F.log_softmax(z / T, 1), log_target=True,  # noqa: E731
                                     reduction="batchmean") * T * T
    elif cfg.loss == "softmax-mse":
        soft = lambda g, z: F.mse_loss((g / T).softmax(1), (z / T).softmax(1))  # noqa: E731
    else:
        raise ConfigError(f"loss must be one of ce, {', '.join(MIMIC_LOSSES)}; not {cfg.loss!r}")

    def loss(g, target):
        z, y = target
        out = soft(g.float(), z.float())
        return out if a == 0 else (1 - a) * out + a * F.cross_entropy(g, y)
    return loss


def logit_stats(ts) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-logit mean and std over the whole transfer set, streamed (for normalize_logits)."""
    s = s2 = None
    n = 0
    for e in range(ts.epochs):
        start, stop = ts.epoch_rows(e)
        for lo in range(start, stop, 65536):
            _, z, _ = ts.read(lo, min(lo + 65536, stop))
            z = z.double()
            s = z.sum(0) if s is None else s + z.sum(0)
            s2 = z.pow(2).sum(0) if s2 is None else s2 + z.pow(2).sum(0)
            n += len(z)
    mean = s / n
    std = (s2 / n - mean.pow(2)).clamp_min(1e-12).sqrt()
    return mean.float(), std.float()


def fold_output_affine(state: dict, mean: torch.Tensor, std: torch.Tensor) -> dict:
    """A student trained on standardised logits z' = (z - mean) / std predicts z = std * g + mean:
    fold that into the output layer, so the saved model outputs plain logits like any other."""
    state = dict(state)
    state["out.weight"] = state["out.weight"] * std.to(state["out.weight"])[:, None]
    state["out.bias"] = state["out.bias"] * std.to(state["out.bias"]) + mean.to(state["out.bias"])
    return state


@torch.no_grad()
def mimic_metrics(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> dict:
    """How well a student mimics: mean squared logit error and argmax agreement (on the test set)."""
    return {"mimic_mse": (student_logits - teacher_logits).pow(2).mean().item(),
            "mimic_agreement": (student_logits.argmax(1) == teacher_logits.argmax(1)).float().mean().item()}


# ----------------------------------------------------------------------------------------------
# Checkpoints

def model_meta(cfg: TrainConfig, widths, num_classes: int, n_params: int) -> dict:
    return {"family": cfg.family, "widths": list(widths), "dropout": list(cfg.dropout), "batchnorm": cfg.batchnorm,
            "num_classes": num_classes, "input_scale": cfg.input_scale, "preprocess": "per-image-standardise",
            "params": n_params, "config": artifacts.to_jsonable(cfg)}


def model_from_checkpoint(path, device="cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild the model a checkpoint describes and load its weights."""
    tensors, meta = artifacts.load_checkpoint(path)
    try:
        model = build_model(meta["family"], tuple(meta["widths"]), num_classes=meta["num_classes"],
                            dropout=tuple(meta.get("dropout", ())), batchnorm=meta.get("batchnorm", False),
                            in_shape=tuple(meta.get("in_shape", (3, 32, 32))))
        if meta.get("folded"):  # `mimicnet model fold`: the same family with its bottleneck multiplied out
            from .models import fold_linear
            model = fold_linear(model)
        model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    except (KeyError, RuntimeError, ValueError) as e:
        raise artifacts.CheckpointError(f"{path}: weights do not match the model it describes ({str(e).splitlines()[0][:160]})") from None
    if meta.get("preprocess") == "gcn-zca":  # the run's saved ZCA state, from its folder (S5)
        from .preprocess import Whitened, load_zca
        folder = Path(path) if Path(path).is_dir() else Path(path).parent
        model = Whitened(model, load_zca(folder / meta["zca"]), meta.get("input_scale", 1.0))
    return model.to(device), meta


def fold_checkpoint(src, out) -> dict:
    """Write `src`'s model with its linear bottleneck folded away (models.fold_linear, S5) to `out`: a
    checkpoint that `evaluate` and `model_from_checkpoint` read like any other. The outputs are compared
    with the original's on 64 random inputs before anything is written; returns the summary."""
    from .models import fold_linear
    src, out = Path(src), Path(out)
    model, meta = model_from_checkpoint(src)
    inner = getattr(model, "net", model)  # a gcn-zca run: fold the network inside the whitening
    folded = fold_linear(inner).eval()
    inner.eval()
    x = torch.randn(64, *meta.get("in_shape", (3, 32, 32)), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = inner(x), folded(x)
    diff = (a - b).abs().max().item()
    scale = a.abs().max().item()
    if not diff <= 1e-4 * max(1.0, scale):
        raise ConfigError(f"{src}: the folded net differs from the original by {diff:g} (outputs up to {scale:g})")
    n_before, n_after = count_params(inner), count_params(folded)
    new_meta = {**{k: v for k, v in meta.items() if k not in ("epoch", "code_version", "format")},
                "folded": True, "folded_from": str(src), "params": n_after, "params_unfolded": n_before,
                "fold_max_abs_diff": diff}
    if meta.get("preprocess") == "gcn-zca":  # the whitening state travels with the folded weights
        from .preprocess import load_zca, save_zca
        folder = src if src.is_dir() else src.parent
        zca_name = f"{out.stem}.zca.safetensors"
        save_zca(out.parent / zca_name, load_zca(folder / meta["zca"]), {"copied_from": str(folder / meta["zca"])})
        new_meta["zca"] = zca_name
    artifacts.save_checkpoint(out, {f"model.{k}": v for k, v in folded.state_dict().items()}, new_meta)
    return {"out": str(out), "params_unfolded": n_before, "params": n_after, "max_abs_diff": diff,
            "max_abs_output": scale}


def _with_preprocess(cfg: TrainConfig, model, data: TrainData, run_dir: Path, meta: dict, device):
    """The network the loop trains: `model`, or for gcn-zca `Whitened(model)` with the ZCA state fitted on
    `data.train` only (never val, test or a transfer set), saved once in the run folder and reused on resume."""
    if cfg.preprocess == "standardize":
        return model
    if cfg.preprocess != "gcn-zca":
        raise ConfigError(f"preprocess must be 'standardize' or 'gcn-zca', not {cfg.preprocess!r}")
    from . import preprocess as prep
    path = run_dir / prep.ZCA_FILE
    if path.exists():
        state = prep.load_zca(path)
    else:
        state = prep.fit_zca(data.train.x)
        prep.save_zca(path, state, {"fitted_on": "train", "n": len(data.train.x), "data_sha256": data.sha256})
    meta.update(preprocess="gcn-zca", zca=prep.ZCA_FILE)
    return prep.Whitened(model, state, cfg.input_scale).to(device)


def predict_teacher(path, x: torch.Tensor, device) -> torch.Tensor:
    """Logits of a teacher (an ensemble folder, or a run folder / checkpoint) on uint8 images."""
    from .ensemble import load_teacher
    model, _ = load_teacher(path, device)
    return predict_logits(model, x, 1.0, device)  # ensemble members apply their own input scales


_ADAM_STATE = ("step", "exp_avg", "exp_avg_sq")  # saved too, so an Adam run resumes exactly


def _state_tensors(model, opt) -> dict[str, torch.Tensor]:
    t = {f"model.{k}": v for k, v in model.state_dict().items()}
    for i, p in enumerate(p for g in opt.param_groups for p in g["params"]):
        st = opt.state.get(p, {})
        buf = st.get("momentum_buffer")
        if buf is not None:
            t[f"optim.momentum.{i}"] = buf
        for k in _ADAM_STATE:
            if k in st:
                t[f"optim.adam.{k}.{i}"] = torch.as_tensor(st[k]).reshape(-1) if k == "step" else st[k]
    return t


def _restore(model, opt, tensors):
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    for i, p in enumerate(p for g in opt.param_groups for p in g["params"]):
        buf = tensors.get(f"optim.momentum.{i}")
        if buf is not None:
            opt.state[p]["momentum_buffer"] = buf.to(p.device).clone()
        for k in _ADAM_STATE:
            v = tensors.get(f"optim.adam.{k}.{i}")
            if v is not None:  # Adam keeps `step` as a float32 scalar tensor on the CPU
                opt.state[p][k] = v.reshape(()).float().cpu().clone() if k == "step" else v.to(p.device).clone()


def _read_metrics(path: Path, upto_epoch: int) -> list[dict]:
    """Metric lines of epochs <= upto_epoch (a line written after the last checkpoint is dropped on resume)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            break  # a torn last line from a kill
        if row["epoch"] <= upto_epoch:
            rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------
# The loop

def hard_label_loss(cfg: TrainConfig):
    if cfg.loss != "ce":
        raise ConfigError(f"loss {cfg.loss!r} needs targets from a transfer set; hard-label runs use 'ce'")
    return lambda out, y: F.cross_entropy(out, y, label_smoothing=cfg.label_smoothing)


def run_kind(cfg: TrainConfig) -> str:
    """teacher | baseline (hard labels, a student family) | student (mimics a teacher)."""
    if cfg.loss != "ce":
        return "student"
    return "teacher" if cfg.family == "teacher" else "baseline"


def index_failed_run(index, cfg: TrainConfig, run_dir: Path, **columns) -> None:
    """The index row of a run that did not finish (it diverged): status=failed, with what it was -- its
    widths when they can be solved, and for a student the teacher its transfer set was labelled by --
    so reports count it in its cell without averaging it. `columns`: study, trial, budget, ..."""
    try:
        widths = resolve_widths(cfg)
    except (ConfigError, ValueError):  # ModelError is a ValueError
        widths = None
    teacher = {}
    manifest = Path(cfg.transfer) / "manifest.json" if cfg.transfer else None
    if cfg.loss != "ce" and manifest is not None and manifest.exists():
        t = artifacts.read_json(manifest).get("teacher", {})
        teacher = {"teacher": t.get("path"), "teacher_val_acc": t.get("val_acc"), "teacher_test_acc": t.get("test_acc")}
    artifacts.append_index(index, {
        "kind": run_kind(cfg), "family": cfg.family, "budget": cfg.budget, "widths": widths, "seed": cfg.seed,
        "loss": cfg.loss, "status": "failed", "max_epochs": cfg.max_epochs, "run_id": cfg.run_id(),
        "config_hash": cfg.run_id().rsplit("-", 1)[1], "path": str(run_dir),
        "code_version": artifacts.code_version(), **teacher, **columns})


def fit(cfg: TrainConfig, run_dir, data: TrainData | None = None, batches=None, loss_fn=None,
        extra_meta: dict | None = None, index=None, log: Callable[[str], None] = print,
        logit_norm: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict:
    """Train (or resume, or return the finished result of) the run in `run_dir`. Returns results.json's content.

    `batches(epoch)` yields (inputs, targets) and `loss_fn(outputs, targets)` scores them; both default to
    hard labels from `data.train`. Validation accuracy (true labels) drives the schedule and the choice of
    the best epoch; the test set is evaluated once, on the best weights, for the report.
    `index`: a run-index CSV (artifacts.INDEX_COLUMNS) to which the finished run appends one row;
    `extra_meta` goes into config.json, the checkpoints, results.json and (known columns) that row.
    `logit_norm`: (mean, std) per logit when the caller's `batches` yield standardised teacher logits
    (normalize_logits with custom batches, e.g. feature data); the saved model outputs plain logits."""
    run_dir = Path(run_dir)
    results_path = run_dir / "results.json"
    if results_path.exists():
        return artifacts.read_json(results_path)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_json = {"config": artifacts.to_jsonable(cfg), "run_id": cfg.run_id(), **(extra_meta or {})}
    cfg_path = run_dir / "config.json"
    if cfg_path.exists():
        old = artifacts.read_json(cfg_path)
        if old.get("run_id") != cfg.run_id():
            raise ConfigError(f"{run_dir}: holds a run of another config ({old.get('run_id')}); choose another --out")
    else:
        artifacts.write_json(cfg_path, {**cfg_json, "code_version": artifacts.code_version()})

    device = resolve_device(cfg.device)
    data = data or load_train_data(cfg)
    widths = resolve_widths(cfg)
    images = tuple(data.in_shape) == (3, 32, 32)
    if not images and cfg.augment and batches is None:
        raise ConfigError(f"data of shape {tuple(data.in_shape)} are not images: image augmentation does not "
                          f"apply (set augment=False / --no-augment)")
    model = build_model(cfg.family, widths, num_classes=data.num_classes, dropout=cfg.dropout, batchnorm=cfg.batchnorm,
                        in_shape=data.in_shape)
    init_weights(model, cfg.init_scale, generator=torch.Generator().manual_seed(cfg.seed))
    model.to(device)
    n_params = count_params(model)
    fast = device.type in FAST_PATH_DEVICES
    if fast and cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    autocast = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast and cfg.amp)  # noqa: E731
    meta = {**model_meta(cfg, widths, data.num_classes, n_params), **(extra_meta or {}), "data_sha256": data.sha256}
    if not images:  # only then, so image checkpoints keep exactly their old meta
        meta["in_shape"] = list(data.in_shape)
    net = _with_preprocess(cfg, model, data, run_dir, meta, device)  # `model` itself, unless gcn-zca
    step_model = torch.compile(net) if cfg.compile else net  # shares parameters with `model`
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                              weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "adam":  # S6; momentum is unused (Adam's betas stay at torch's defaults)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        raise ConfigError(f"optimizer must be 'sgd' or 'adam', not {cfg.optimizer!r}")
    sched = make_schedule(cfg)
    ts, norm = None, logit_norm
    if cfg.loss != "ce" and batches is None:
        from .transfer import TransferSet
        if not cfg.transfer:
            raise ConfigError(f"loss {cfg.loss!r} mimics a teacher: pass --transfer DIR (a transfer set)")
        ts = TransferSet(cfg.transfer, device=device)
        norm = logit_stats(ts) if cfg.normalize_logits else None
        batches = transfer_batches(cfg, ts, device, None if norm is None else (norm[0].to(device), norm[1].to(device)))
        meta["teacher"] = ts.teacher
    batches = batches or hard_label_batches(cfg, data.train, device)
    loss_fn = loss_fn or (mimic_loss(cfg) if cfg.loss != "ce" else hard_label_loss(cfg))
    # what the network's raw outputs mean: standardised logits when normalize_logits, else plain logits
    to_logits = (lambda g: g) if norm is None else (lambda g: g * norm[1] + norm[0])  # noqa: E731
    steps = getattr(batches, "steps_per_epoch", None)

    start, best_acc, best_epoch, elapsed = 0, -1.0, -1, 0.0
    last_path, best_path, metrics_path = run_dir / "last.safetensors", run_dir / "best.safetensors", run_dir / "metrics.jsonl"
    if last_path.exists():
        tensors, last = artifacts.load_checkpoint(last_path)
        _restore(model, opt, {k: v.to(device) for k, v in tensors.items()})
        sched = type(sched)(**last["schedule"])
        start, best_acc, best_epoch, elapsed = last["epoch"] + 1, last["best_val_acc"], last["best_epoch"], last["seconds"]
        rows = _read_metrics(metrics_path, last["epoch"])
        artifacts.write_text(metrics_path, "".join(json.dumps(r) + "\n" for r in rows))
        log(f"resuming {run_dir} at epoch {start} (best val {best_acc:.4f} at epoch {best_epoch})")
    else:
        metrics_path.unlink(missing_ok=True)
        log(f"training {cfg.family} {'x'.join(map(str, widths))} ({n_params:,} params) on {device} -> {run_dir}")

    stop = start >= cfg.max_epochs
    epoch = start - 1
    for epoch in range(start, cfg.max_epochs):
        if stop:
            break
        t0 = time.perf_counter()
        torch.manual_seed(cfg.seed * 1_000_003 + epoch * 7919 + 1)  # dropout masks: reproducible per epoch
        model.train()
        total, count = torch.zeros((), device=device), 0
        bar = tqdm(batches(epoch), total=steps, desc=f"epoch {epoch}", leave=False, disable=None)
        for i, (xb, tb) in enumerate(bar):
            lr = sched.lr_at(epoch, i / steps if steps else 0.0)
            for g in opt.param_groups:
                g["lr"] = lr
            with autocast():
                loss = loss_fn(step_model(xb), tb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(xb)
            count += len(xb)
        train_loss = (total / max(count, 1)).item()
        if not math.isfinite(train_loss) or train_loss > 1e6:
            raise Diverged(f"{run_dir}: training loss is {train_loss} at epoch {epoch} (lr {lr:g})")
        val_acc = accuracy(to_logits(predict_logits(net, data.val.x, cfg.input_scale, device)), data.val.y)
        lr_used = lr
        if val_acc > best_acc:
            best_acc, best_epoch = val_acc, epoch
            state = model.state_dict() if norm is None else fold_output_affine(model.state_dict(), *norm)
            artifacts.save_checkpoint(best_path, {f"model.{k}": v for k, v in state.items()},
                                      {**meta, "epoch": epoch, "val_acc": val_acc})
        stop = sched.step(epoch, 1.0 - val_acc)
        elapsed += time.perf_counter() - t0
        row = {"epoch": epoch, "loss": train_loss, "val_acc": val_acc, "lr": lr_used,
               "seconds": round(time.perf_counter() - t0, 3)}
        with open(metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        artifacts.save_checkpoint(last_path, _state_tensors(model, opt),
                                  {**meta, "epoch": epoch, "best_val_acc": best_acc, "best_epoch": best_epoch,
                                   "seconds": elapsed, "schedule": dataclasses.asdict(sched)})
        log(f"epoch {epoch:3d}  loss {train_loss:.4f}  val {val_acc:.4f}  lr {lr_used:.3g}  {row['seconds']:.1f}s")

    if best_epoch < 0:
        raise ConfigError(f"{run_dir}: no epoch finished (max_epochs={cfg.max_epochs})")
    model, _ = model_from_checkpoint(best_path, device)
    test_logits = predict_logits(model, data.test.x, cfg.input_scale, device) if data.test is not None else None
    mimic = {}
    # the teacher a student mimicked: its transfer set's, or the one the caller names (feature data)
    teacher_path = ts.teacher.get("path") if ts is not None else \
        (extra_meta or {}).get("teacher") if cfg.loss != "ce" else None
    if teacher_path and test_logits is not None:
        z = predict_teacher(teacher_path, data.test.x, device)
        info = ts.teacher if ts is not None else {
            "val_acc": accuracy(predict_teacher(teacher_path, data.val.x, device), data.val.y),
            "test_acc": accuracy(z, data.test.y)}
        mimic = {**mimic_metrics(test_logits, z), "teacher": teacher_path,
                 "teacher_val_acc": info.get("val_acc"), "teacher_test_acc": info.get("test_acc")}
    results = {"run_id": cfg.run_id(), "family": cfg.family, "widths": list(widths), "params": n_params,
               "budget": cfg.budget, "best_epoch": best_epoch, "epochs": epoch + 1, "seconds": round(elapsed, 2),
               "val_acc": accuracy(predict_logits(model, data.val.x, cfg.input_scale, device), data.val.y),
               "test_acc": accuracy(test_logits, data.test.y) if test_logits is not None else None,
               "loss": cfg.loss, **mimic,
               "data_sha256": data.sha256, "code_version": artifacts.code_version(), **(extra_meta or {})}
    artifacts.write_json(results_path, results)
    if index is not None:
        row = {"kind": (extra_meta or {}).get("kind") or run_kind(cfg), "family": cfg.family, "budget": cfg.budget, "params": n_params, "widths": widths,
               "seed": cfg.seed, "val_acc": results["val_acc"], "test_acc": results["test_acc"], "loss": cfg.loss,
               "epochs": epoch + 1, "best_epoch": best_epoch, "max_epochs": cfg.max_epochs,
               "seconds": results["seconds"], "run_id": cfg.run_id(), "config_hash": cfg.run_id().rsplit("-", 1)[1],
               "path": str(run_dir), "data_sha256": data.sha256, "code_version": artifacts.code_version()}
        row.update({k: v for k, v in results.items() if k in artifacts.INDEX_COLUMNS and k not in row})
        artifacts.append_index(index, row)
    log(f"done: best epoch {best_epoch}, val {results['val_acc']:.4f}, test {results['test_acc']}")
    return results
