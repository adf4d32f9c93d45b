"""The training loop: one flat loop over epochs, given the data, the batch source and the loss.

Resuming is exact because nothing random is carried between epochs: epoch e draws its shuffle, its
augmentation (batches.py) and its dropout masks (below) from generators seeded by (seed, e). So a run
killed at any moment and started again from `last` replays the same numbers as one that never stopped.
Validation accuracy (true labels) drives the schedule and the choice of the best epoch; the test set is
evaluated once, on the best weights, for the report.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from ..core import artifacts
from ..core.errors import Collapsed, ConfigError, Diverged
from ..core.index import append_index
from ..data.augment import IMAGE_SHAPE, is_image_shape
from ..data import preprocess as prep
from ..data.splits import TrainData, load_train_data
from ..models.checkpoint import model_from_checkpoint
from ..models.families import build_model, count_params, get_family, init_weights
from ..models.inference import accuracy, predict_logits, resolve_device
from ..models.inference import preprocess as prep_images
from .batches import hard_label_batches
from .config import TrainConfig, resolve_widths
from .losses import make_loss, mimic_metrics
from .optim import make_optimizer, restore, state_tensors
from .run import RunFolder, RunInfo, Teacher, index_row, model_meta, read_metrics
from .schedules import make_schedule

# Device types on which `amp` (bf16 autocast) and `channels_last` take effect. Not the CPU: most CPUs run
# bf16 convolutions slower than fp32. The suite adds "cpu" to run this code path without a GPU.
FAST_PATH_DEVICES = ("cuda",)


@dataclass
class Setup:
    model: torch.nn.Module        # the network whose weights are saved
    net: torch.nn.Module          # what is evaluated: `model`, or Whitened(model) for gcn-zca
    step_model: torch.nn.Module   # what is trained: `net`, maybe torch.compile'd (shares parameters)
    opt: torch.optim.Optimizer
    sched: object
    widths: tuple[int, ...]
    n_params: int
    meta: dict                    # checkpoint metadata (model description, config, run info)
    autocast: Callable


def fit(cfg: TrainConfig, run_dir, data: TrainData | None = None, *, batches=None, loss_fn=None, teacher: Teacher | None = None,
        logit_norm: tuple[torch.Tensor, torch.Tensor] | None = None, info: RunInfo = RunInfo(), index=None,
        log: Callable[[str], None] = print, on_epoch: Callable[[int, float], None] | None = None,
        sources: dict[str, str] | None = None) -> dict:
    """Train (or resume, or return the finished result of) the run in `run_dir`. Returns results.json's content.

    `batches(epoch)` yields (inputs, targets) and `loss_fn(outputs, targets)` scores them; both default to
    hard labels from `data.train` (distill.student builds them for a student). `teacher`: the model a
    student mimics, scored against on the test set. `logit_norm`: (mean, std) per logit when `batches`
    yield standardised teacher logits (normalize_logits); the saved model outputs plain logits.
    `data`: the data (loaded once by the caller; read from cfg.data.path when not given).
    `sources`: what a student learns from besides the data, by content ({"transfer": id} or {"teacher": id},
    distill.student.run_sources): with the data's sha256, they name the run (TrainConfig.run_id).
    `index`: a run-index CSV to which the finished run appends its row.
    `on_epoch(epochs_done, val_acc)`: called once per finished epoch, after its checkpoint is written (and on
    resume for the epochs already run), so a search can report the curve to its pruner; whatever it raises
    stops the run there, resumable."""
    meta = {**info.meta(), **(teacher.meta if teacher is not None else {})}
    data = data if data is not None else load_train_data(cfg.data.path, cfg.data.max_train, cfg.data.labels)
    data = data.with_labels(cfg.data.labels)  # the caller's data may hold another label set (CIFAR-100)
    run = RunFolder(cfg, run_dir, meta, {"data": data.sha256, **(sources or {})})
    if (done := run.finished()) is not None:
        run.check_input("data", done.get("data_sha256"), data.sha256)
        if index is not None:  # its row, if a kill came between results.json and the index (kept if there)
            append_index(index, index_row(cfg, done, info, run.path), replace=False)
        return done
    device = resolve_device(cfg.execution.device)
    s = setup(cfg, data, run, device)  # everything a config can be refused for is checked before its first write
    if teacher is not None and teacher.record is not None:
        s.meta["teacher"] = teacher.record
    batches = batches or hard_label_batches(cfg, data.train, device)
    loss_fn = loss_fn or make_loss(cfg)
    norm = logit_norm
    # what the network's raw outputs mean: standardised logits when normalize_logits, else plain logits
    to_logits = (lambda g: g) if norm is None else (lambda g: g * norm[1] + norm[0])  # noqa: E731
    start, best_acc, best_epoch, elapsed = resume(run, s, device, log)
    done_rows = read_metrics(run.metrics, start - 1)
    if on_epoch is not None:
        for row in done_rows:
            on_epoch(row["epoch"] + 1, row["val_acc"])
    chance = majority_rate(data.val.y, data.num_classes)
    low = bool(done_rows) and collapsed(best_acc, done_rows[-1]["val_acc"], chance)  # the epoch before, on resume

    stop, epoch = start >= cfg.optim.max_epochs, start - 1
    for epoch in range(start, cfg.optim.max_epochs):
        if stop:
            break
        t0 = time.perf_counter()
        try:
            train_loss, lr = train_epoch(cfg, s, batches, loss_fn, epoch, device)
        except (MemoryError, RuntimeError) as e:  # out of memory: the command line names the batch size
            e.batch_size = cfg.optim.batch_size
            raise
        if not math.isfinite(train_loss) or train_loss > 1e6:
            raise Diverged(f"{run.path}: training loss is {train_loss} at epoch {epoch} (lr {lr:g})", epochs=epoch)
        val_acc = accuracy(to_logits(predict_logits(s.net, data.val.x, cfg.data.input_scale, device)), data.val.y)
        now_low = collapsed(best_acc, val_acc, chance)
        if val_acc > best_acc:
            best_acc, best_epoch = val_acc, epoch
            state = s.model.state_dict() if norm is None else fold_output_affine(s.model.state_dict(), *norm)
            run.save_best(state, {**s.meta, "epoch": epoch, "val_acc": val_acc})
        stop = s.sched.step(epoch, 1.0 - val_acc)
        # two epochs in a row at chance, or the last one: one bad epoch at a high rate may still come back
        if now_low and (low or stop or epoch + 1 == cfg.optim.max_epochs):
            raise Collapsed(f"{run.path}: collapsed at epoch {epoch}: validation accuracy {val_acc:.3f} after "
                            f"{best_acc:.3f} at epoch {best_epoch} (chance {chance:.3f}: the largest class's share "
                            f"of the validation set; lr {lr:g})", epochs=epoch + 1)
        low = now_low
        elapsed += time.perf_counter() - t0
        row = {"epoch": epoch, "loss": train_loss, "val_acc": val_acc, "lr": lr,
               "seconds": round(time.perf_counter() - t0, 3),
               **(batches.epoch_stats() if hasattr(batches, "epoch_stats") else {})}  # e.g. online: teacher cost
        run.end_epoch(row, state_tensors(s.model, s.opt),
                      {**s.meta, "epoch": epoch, "best_val_acc": best_acc, "best_epoch": best_epoch,
                       "seconds": elapsed, "schedule": dataclasses.asdict(s.sched)})
        log(f"epoch {epoch:3d}  loss {train_loss:.4f}  val {val_acc:.4f}  lr {lr:.3g}  {row['seconds']:.1f}s")
        if on_epoch is not None and not stop and epoch + 1 < cfg.optim.max_epochs:  # a run that ends now is kept
            on_epoch(epoch + 1, val_acc)

    if best_epoch < 0:
        raise ConfigError(f"{run.path}: no epoch finished (max_epochs={cfg.optim.max_epochs})")
    results = finish(cfg, run, data, s, best_epoch=best_epoch, epochs=epoch + 1, elapsed=elapsed, teacher=teacher,
                     device=device, measured=epoch_means(run))
    if index is not None:
        append_index(index, index_row(cfg, results, info, run.path))
    log(f"done: best epoch {best_epoch}, val {results['val_acc']:.4f}, test {results['test_acc']}")
    return results


# A run has collapsed when its validation accuracy, after rising at least COLLAPSE_RISE above chance, falls back
# to within COLLAPSE_KEEP of its best gain over chance. Healthy runs wobble by a few points; a collapsed one
# (dead ReLUs after one huge step, a blown-up deep net) sits at chance and does not come back, and keeping its
# early best checkpoint would report the config as trained when it is not. fit() calls a run collapsed when two
# epochs in a row are at that level, or its last epoch is (a run cannot end collapsed and be kept).
COLLAPSE_RISE = 0.15
COLLAPSE_KEEP = 0.25


def majority_rate(y: torch.Tensor, num_classes: int) -> float:
    """Chance for the collapse rule: what predicting the validation set's largest class scores (a collapsed
    net predicts one class), not 1/classes, which an unbalanced split's one-class net beats."""
    return torch.bincount(y.long().cpu(), minlength=num_classes).max().item() / max(len(y), 1)


def collapsed(best: float, now: float, chance: float) -> bool:
    return best >= chance + COLLAPSE_RISE and now <= chance + COLLAPSE_KEEP * (best - chance)


def train_epoch(cfg: TrainConfig, s: Setup, batches, loss_fn, epoch: int, device) -> tuple[float, float]:
    """One pass over `batches(epoch)`; returns (mean training loss, the last learning rate used)."""
    torch.manual_seed(cfg.seed * 1_000_003 + epoch * 7919 + 1)  # dropout masks: reproducible per epoch
    s.model.train()
    steps = getattr(batches, "steps_per_epoch", None)
    total, count, lr = torch.zeros((), device=device), 0, s.sched.lr_at(epoch, 0.0)
    for i, (xb, tb) in enumerate(tqdm(batches(epoch), total=steps, desc=f"epoch {epoch}", leave=False, disable=None)):
        lr = s.sched.lr_at(epoch, i / steps if steps else 0.0)
        for g in s.opt.param_groups:
            g["lr"] = lr
        with s.autocast():
            loss = loss_fn(s.step_model(xb), tb)
        s.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.optim.grad_clip > 0:  # bounds one step's size: a huge early gradient cannot kill every ReLU at once
            torch.nn.utils.clip_grad_norm_(s.model.parameters(), cfg.optim.grad_clip)
        s.opt.step()
        total += loss.detach() * len(xb)  # summed on the device: one host sync per epoch, not per step
        count += len(xb)
    return (total / max(count, 1)).item(), lr


def setup(cfg: TrainConfig, data: TrainData, run: RunFolder, device) -> Setup:
    """Model (Glorot init seeded by the run's seed), preprocessing, optimizer and schedule of a fresh run. The
    run folder is claimed (config.json) only once all of it could be built, before the preprocessing's files."""
    widths = resolve_widths(cfg, data.num_classes, data.in_shape)
    if not is_image_shape(data.in_shape) and cfg.data.augment:
        raise ConfigError(f"data of shape {tuple(data.in_shape)} are not images: image augmentation does not "
                          f"apply (set augment=False / --no-augment)")
    model = build_model(cfg.model.family, widths, num_classes=data.num_classes, dropout=cfg.model.dropout,
                        batchnorm=cfg.model.batchnorm, in_shape=data.in_shape)
    init_weights(model, cfg.model.init_scale, generator=torch.Generator().manual_seed(cfg.seed))
    if (data_init := get_family(cfg.model.family).data_init) is not None:  # e.g. airbench's whitening filters
        data_init(model, prep_images(data.train.x, cfg.data.input_scale))
    model.to(device)
    n_params = count_params(model)
    fast = device.type in FAST_PATH_DEVICES
    if fast and cfg.execution.channels_last:
        model = model.to(memory_format=torch.channels_last)
    meta = {**model_meta(cfg, widths, data.num_classes, n_params), **run.meta, "data_sha256": data.sha256}
    if tuple(data.in_shape) != IMAGE_SHAPE:  # only then, so CIFAR checkpoints keep exactly their old meta
        meta["in_shape"] = list(data.in_shape)
    opt, sched = make_optimizer(model.parameters(), cfg), make_schedule(cfg)
    run.claim()  # the first write: config.json (a config refused above leaves no folder that refuses its fix)
    net = with_preprocess(cfg, model, data, run.path, meta, device)  # `model` itself, unless gcn-zca
    compiled = torch.compile(net) if cfg.execution.compile else net
    return Setup(model, net, compiled, opt, sched, widths, n_params, meta,
                 lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast and cfg.execution.amp))


def resume(run: RunFolder, s: Setup, device, log) -> tuple[int, float, int, float]:
    """(first epoch to run, best val acc, its epoch, seconds so far); restores weights, optimizer, schedule."""
    last = run.load_last()
    if last is None:
        log(f"training {run.cfg.model.family} {'x'.join(map(str, s.widths))} ({s.n_params:,} params) on {device} "
            f"-> {run.path}")
        return 0, -1.0, -1, 0.0
    tensors, m = last
    run.check_input("data", m.get("data_sha256"), s.meta.get("data_sha256"))
    was, now = m.get("teacher") or {}, s.meta.get("teacher") or {}
    key = "content_id" if was.get("content_id") and now.get("content_id") else "sha256"  # by content when known
    old_t, new_t = was.get(key), now.get(key)
    if old_t and new_t and old_t != new_t:
        raise ConfigError(f"{run.path}: the teacher changed since this run began ({key} {old_t[:12]}… in "
                          f"{run.last.name}, {new_t[:12]}… now); delete {run.path} to train it anew on this teacher")
    restore(s.model, s.opt, {k: v.to(device) for k, v in tensors.items()})
    s.sched = type(s.sched)(**m["schedule"])
    log(f"resuming {run.path} at epoch {m['epoch'] + 1} (best val {m['best_val_acc']:.4f} at epoch {m['best_epoch']})")
    return m["epoch"] + 1, m["best_val_acc"], m["best_epoch"], m["seconds"]


def epoch_means(run: RunFolder) -> dict:
    """The mean over every epoch's metrics row of what a batch source measured (`epoch_stats`: an online
    student's teacher_ms_per_step), for results.json; {} for a run whose rows have none."""
    rows = read_metrics(run.metrics, 10**9)
    keys = [k for k in ("teacher_ms_per_step",) if rows and all(k in r for r in rows)]
    return {k: round(sum(r[k] for r in rows) / len(rows), 3) for k in keys}


def finish(cfg: TrainConfig, run: RunFolder, data: TrainData, s: Setup, *, best_epoch: int, epochs: int,
           elapsed: float, teacher: Teacher | None, device, measured: dict | None = None) -> dict:
    """Reload the best weights, evaluate them (test once), score the mimic; write results.json."""
    model, _ = model_from_checkpoint(run.best, device)
    test_logits = predict_logits(model, data.test.x, cfg.data.input_scale, device) if data.test is not None else None
    mimic = {}
    if teacher is not None and test_logits is not None:
        mimic = {**mimic_metrics(test_logits, teacher.test_logits(data.test.x, device)), "teacher": teacher.path,
                 "teacher_val_acc": teacher.val_acc, "teacher_test_acc": teacher.test_acc}
    results = {"run_id": run.run_id, "family": cfg.model.family, "widths": list(s.widths), "params": s.n_params,
               "budget": cfg.model.budget, "best_epoch": best_epoch, "epochs": epochs, "seconds": round(elapsed, 2),
               "val_acc": accuracy(predict_logits(model, data.val.x, cfg.data.input_scale, device), data.val.y),
               "test_acc": accuracy(test_logits, data.test.y) if test_logits is not None else None,
               "loss": cfg.optim.loss, **mimic, **(measured or {}), "data_sha256": data.sha256, "code_version": artifacts.code_version(),
               **run.meta, "best_sha256": artifacts.file_sha256(run.best)}
    artifacts.write_json(run.results_path, results)
    return results


def with_preprocess(cfg: TrainConfig, model, data: TrainData, run_dir: Path, meta: dict, device):
    """The network the loop trains: `model`, or for gcn-zca `Whitened(model)` with the ZCA state fitted on
    `data.train` only (never val, test or a transfer set), saved once in the run folder and reused on resume."""
    if cfg.data.preprocess == prep.STANDARDIZE:
        return model
    if cfg.data.preprocess != prep.GCN_ZCA:
        raise ConfigError(f"preprocess must be one of {', '.join(prep.PREPROCESS)}, not {cfg.data.preprocess!r}")
    path = run_dir / prep.ZCA_FILE
    if path.exists():
        state = prep.load_zca(path)
    else:
        state = prep.fit_zca(data.train.x)
        prep.save_zca(path, state, {"fitted_on": "train", "n": len(data.train.x), "data_sha256": data.sha256})
    meta.update(preprocess="gcn-zca", zca=prep.ZCA_FILE)
    return prep.Whitened(model, state, cfg.data.input_scale).to(device)


def fold_output_affine(state: dict, mean: torch.Tensor, std: torch.Tensor) -> dict:
    """A student trained on standardised logits z' = (z - mean) / std predicts z = std * g + mean:
    fold that into the output layer, so the saved model outputs plain logits like any other."""
    state = dict(state)
    state["out.weight"] = state["out.weight"] * std.to(state["out.weight"])[:, None]
    state["out.bias"] = state["out.bias"] * std.to(state["out.bias"]) + mean.to(state["out.bias"])
    return state
