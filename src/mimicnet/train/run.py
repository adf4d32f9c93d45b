"""A run folder: identity, resume point, metrics, and the finished result.

    config.json        the exact TrainConfig (and code version) that made it
    metrics.jsonl      one line per finished epoch: loss, val acc, lr, seconds
    last.safetensors   model + optimizer + schedule state after the last finished epoch (resume point)
    best.safetensors   weights of the best-validation epoch (the result of the run)
    results.json       written last: final val and test accuracy. Its presence means "finished".
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core import artifacts
from ..core.errors import ConfigError
from ..core.index import IndexRow, RunKind, append_index
from ..data import preprocess as prep
from ..models.families import ModelError
from ..models.inference import predict_logits
from .config import TrainConfig, resolve_widths


@dataclass
class RunInfo:
    """What the caller knows about a run that its config does not say: its kind (default: the config's),
    and the study and trial it belongs to (or, for a seed rerun, the trial whose config it repeats). Stored in
    config.json, the checkpoints, results.json, the index."""
    kind: RunKind | None = None
    study: str | None = None
    trial: int | None = None
    repeat_of: int | None = None

    def meta(self) -> dict:
        return {k: (str(v) if isinstance(v, RunKind) else v) for k, v in dataclasses.asdict(self).items()
                if v is not None}


@dataclass
class Teacher:
    """The teacher a student mimics, as the end of a run needs it: for the test-set mimic metrics.
    Loaded once by the caller (a search or study) and shared by every student run of that teacher."""
    path: str
    model: torch.nn.Module
    val_acc: float | None = None
    test_acc: float | None = None
    meta: dict = field(default_factory=dict)   # more to record in the run's files (e.g. rows it labelled)
    record: dict | None = None                 # its identity (a transfer set's teacher record), in checkpoints
    _test_logits: torch.Tensor | None = field(default=None, repr=False)

    def test_logits(self, x: torch.Tensor, device) -> torch.Tensor:
        """Its logits on the test images, computed once (the same for every student of this teacher)."""
        if self._test_logits is None or len(self._test_logits) != len(x):
            self._test_logits = predict_logits(self.model, x, 1.0, device)  # members apply their own scales
        return self._test_logits


# A seed rerun that diverged leaves this file: the divergence is its result, and a rerun of the finished
# command does not train it again (search trials record theirs in the study instead).
DIVERGED = "diverged.json"

# What a resume point's metadata must hold (a best checkpoint copied over last.safetensors does not).
RESUME_KEYS = ("epoch", "best_val_acc", "best_epoch", "seconds", "schedule")
# results.json keys a finished run always has (a file holding null, or another JSON, is not a result).
RESULT_KEYS = ("run_id", "val_acc", "params", "widths", "best_epoch", "epochs")


def same_run(old: dict, cfg: TrainConfig, run_id: str | None = None) -> bool:
    """Is `old` (a config.json's content) the config of the run `cfg` names `run_id`: the same run id (which
    holds what it learns from, by content), or -- for a run named by older code, whose id held its paths as
    spelled, and when no run id is given -- the same config but for its paths? What such a run's paths hold is
    checked by content on resume (the data's sha256, the teacher's)."""
    if run_id is not None and old.get("run_id") == run_id:
        return True
    try:
        before = TrainConfig.from_dict(old["config"])
    except (ConfigError, KeyError, TypeError, ValueError):
        return False
    if run_id is not None and old.get("run_id") != before.legacy_run_id():
        return False  # a run named by content: another id is another run (e.g. another transfer set)
    return before.config_hash() == cfg.config_hash()


# What each of a run id's inputs is, where the config names it, and what to give back (for the line that says
# it changed).
_INPUTS = {"data": lambda c: ("data", c.data.path, "archive"),
           "transfer": lambda c: ("transfer set", c.distill.transfer, "transfer set"),
           "teacher": lambda c: ("teacher", c.distill.teacher, "teacher")}


class RunFolder:
    def __init__(self, cfg: TrainConfig, path, meta: dict, inputs: dict[str, str] | None = None):
        self.cfg, self.path, self.meta, self.inputs = cfg, Path(path), meta, inputs or {}
        self.results_path = self.path / "results.json"
        self.last = self.path / "last.safetensors"
        self.best = self.path / "best.safetensors"
        self.metrics = self.path / "metrics.jsonl"
        self.run_id = cfg.run_id(inputs)  # config.json's once claimed (a run of older code keeps its id)

    def finished(self) -> dict | None:
        """results.json of a finished run, checked: a dict of results, and a best checkpoint that is the one
        the run wrote (its sha256, or for older runs: it loads). None while the run is not finished."""
        if not self.results_path.exists():
            return None
        self.claimed()  # the finished run is this one (not a run of another config or transfer set)
        redo = f"delete {self.path} and run the same command again (it trains the run anew)"
        try:
            res = artifacts.read_json(self.results_path)
        except artifacts.CheckpointError as e:
            raise artifacts.CheckpointError(f"{e}; {redo}") from None
        if not isinstance(res, dict) or any(k not in res for k in RESULT_KEYS):
            what = f"holds {json.dumps(res)[:40]}" if not isinstance(res, dict) else \
                f"no {', '.join(k for k in RESULT_KEYS if k not in res)}"
            raise artifacts.CheckpointError(f"{self.results_path}: not the results of a run ({what}); {redo}")
        self.verify_best(res, redo)
        return res

    def verify_best(self, res: dict, redo: str) -> None:
        """The best checkpoint of a finished run is there and intact (never report a result whose weights
        are gone or damaged)."""
        if not self.best.is_file():
            raise artifacts.CheckpointError(f"{self.best}: missing, though {self.results_path.name} says the run "
                                            f"finished; {redo}")
        want = res.get("best_sha256")
        if want is not None:
            got = artifacts.file_sha256(self.best)
            if got != want:
                raise artifacts.CheckpointError(f"{self.best}: damaged (sha256 {got[:12]}…, results.json records "
                                                f"{want[:12]}…); {redo}")
            return
        try:
            artifacts.load_checkpoint(self.best)   # a run from before best_sha256: every tensor must load
        except artifacts.CheckpointError as e:
            raise artifacts.CheckpointError(f"{e}; {redo}") from None

    def claimed(self) -> bool:
        """Is the folder claimed by this run (its config.json names the same run; that run's id is kept)? False
        before any config.json; a run of another config (or of other inputs) is a ConfigError."""
        cfg_path = self.path / "config.json"
        if not cfg_path.exists():
            return False
        old = artifacts.read_json(cfg_path)
        if not isinstance(old, dict):
            raise artifacts.CheckpointError(f"{cfg_path}: not a run's config (holds {json.dumps(old)[:40]}); "
                                            f"delete {self.path} and run the same command again")
        if not same_run(old, self.cfg, self.run_id):
            self._say_changed_input(old)
            raise ConfigError(f"{self.path}: holds a run of another config or of other inputs ({old.get('run_id')}, "
                              f"this one is {self.run_id}); choose another --out")
        self.run_id = old.get("run_id") or self.run_id
        return True

    def _say_changed_input(self, old: dict) -> None:
        """The same config on another input (another archive at the same path, say): a ConfigError naming it."""
        was = old.get("inputs")
        if not isinstance(was, dict) or old.get("config_hash") != self.cfg.config_hash():
            return
        for key, now in self.inputs.items():
            self.check_input(key, was.get(key), now)

    def check_input(self, key: str, old: str | None, new: str | None) -> None:
        """A run continues (or is reused) only on the inputs it was trained on, by content (the data's sha256, a
        transfer set's or teacher's content id): the same archive at another path is the same data, another
        archive at the same path is not. A ConfigError naming what changed otherwise."""
        if old and new and old != new:
            what, path, give = _INPUTS[key](self.cfg)
            raise ConfigError(f"{self.path}: the {what} changed since this run began: {path or f'the {what}'} has "
                              f"{'sha256' if key == 'data' else 'content id'} {new[:12]}…, the run was trained on "
                              f"{old[:12]}…; give the {give} it was made from, or delete {self.path} to train it "
                              "anew")

    def claim(self) -> None:
        """Write config.json, or check that the one there is this run's (same identity)."""
        self.path.mkdir(parents=True, exist_ok=True)
        if not self.claimed():
            artifacts.write_json(self.path / "config.json", {
                "config": self.cfg.to_dict(), "run_id": self.run_id, "config_hash": self.cfg.config_hash(),
                "inputs": self.inputs, **self.meta, "code_version": artifacts.code_version()})

    def load_last(self) -> tuple[dict, dict] | None:
        """(tensors, meta) of the resume point, with metrics.jsonl cut back to it; None for a fresh run."""
        if not self.last.exists():
            self.metrics.unlink(missing_ok=True)
            return None
        restart = f"delete it to train the run from the start, or delete {self.path}"
        try:
            tensors, last = artifacts.load_checkpoint(self.last)
        except artifacts.CheckpointError as e:
            raise artifacts.CheckpointError(f"{e}; {restart}") from None
        missing = [k for k in RESUME_KEYS if k not in last]
        if missing:
            raise artifacts.CheckpointError(f"{self.last}: not a resume point (no {', '.join(missing)} in its "
                                            f"metadata: a best checkpoint copied over it?); {restart}")
        rows = read_metrics(self.metrics, last["epoch"])
        artifacts.write_text(self.metrics, "".join(json.dumps(r) + "\n" for r in rows))
        return tensors, last

    def end_epoch(self, row: dict, tensors: dict, meta: dict) -> None:
        with artifacts.naming(self.metrics), open(self.metrics, "a") as f:
            f.write(json.dumps(row) + "\n")
        artifacts.save_checkpoint(self.last, tensors, meta)

    def save_best(self, state: dict, meta: dict) -> None:
        artifacts.save_checkpoint(self.best, {f"model.{k}": v for k, v in state.items()}, meta)


def read_metrics(path: Path, upto_epoch: int) -> list[dict]:
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


def model_meta(cfg: TrainConfig, widths, num_classes: int, n_params: int) -> dict:
    """What a checkpoint needs to rebuild its model (models.checkpoint), plus the whole config."""
    m = cfg.model
    return {"family": m.family, "widths": list(widths), "dropout": list(m.dropout), "batchnorm": m.batchnorm,
            "num_classes": num_classes, "input_scale": cfg.data.input_scale, "preprocess": prep.CHECKPOINT_NAME,
            "params": n_params, "config": cfg.to_dict()}


def index_row(cfg: TrainConfig, results: dict, info: RunInfo, path) -> IndexRow:
    """The index row of a finished run, from its results.json content."""
    return IndexRow(
        kind=str(info.kind or cfg.kind()), family=cfg.model.family, budget=cfg.model.budget, params=results["params"],
        widths=tuple(results["widths"]), seed=cfg.seed, val_acc=results["val_acc"], test_acc=results["test_acc"],
        teacher=results.get("teacher"), teacher_val_acc=results.get("teacher_val_acc"),
        teacher_test_acc=results.get("teacher_test_acc"), loss=cfg.optim.loss, mimic_mse=results.get("mimic_mse"),
        mimic_agreement=results.get("mimic_agreement"), study=info.study, trial=info.trial,
        epochs=results["epochs"], best_epoch=results["best_epoch"], max_epochs=cfg.optim.max_epochs,
        seconds=results["seconds"], run_id=results["run_id"],
        config_hash=cfg.config_hash(), path=str(path), data_sha256=results.get("data_sha256"),
        code_version=results.get("code_version"), repeat_of=info.repeat_of)


def index_failed_run(index, cfg: TrainConfig, run_dir: Path, info: RunInfo = RunInfo(),
                     teacher: dict | None = None, status: str = "failed", epochs: int | None = None,
                     val_acc: float | None = None) -> None:
    """The index row of a run that did not finish -- it diverged (status=failed) or its search stopped it
    early (status=pruned, with the epochs it ran and its last validation accuracy) -- with what it was: its
    widths when they can be solved, and for a student the teacher it mimicked; reports count it in its cell
    without averaging it."""
    append_index(index, failed_row(cfg, run_dir, info, teacher, status, epochs, val_acc))


def _claimed_id(run_dir) -> str | None:
    """The run id its config.json records (with its inputs by content), or None before the run was claimed (its
    row then names it by its folder)."""
    try:
        rid = artifacts.read_json(Path(run_dir) / "config.json").get("run_id")
    except (OSError, ValueError, AttributeError, artifacts.CheckpointError):
        return None
    return rid if isinstance(rid, str) else None


def _trained_widths(run_dir) -> tuple[int, ...] | None:
    """The widths in the run's last checkpoint's metadata (last.json), or None when it has none."""
    try:
        w = artifacts.read_json(Path(run_dir) / "last.json").get("widths")
    except (OSError, ValueError, AttributeError, artifacts.CheckpointError):
        return None
    return tuple(int(x) for x in w) if isinstance(w, list) and all(isinstance(x, int) for x in w) else None


def failed_row(cfg: TrainConfig, run_dir: Path, info: RunInfo = RunInfo(), teacher: dict | None = None,
               status: str = "failed", epochs: int | None = None, val_acc: float | None = None) -> IndexRow:
    """The index row of a run that did not finish (see index_failed_run)."""
    widths = _trained_widths(run_dir)  # what it trained with (solved for its data's classes), when it began
    if widths is None:
        try:
            widths = resolve_widths(cfg)
        except (ConfigError, ModelError):
            widths = None
    t = teacher or {}
    return (IndexRow(
        kind=str(info.kind or cfg.kind()), family=cfg.model.family, budget=cfg.model.budget, widths=widths,
        seed=cfg.seed,
        loss=cfg.optim.loss, study=info.study, trial=info.trial, status=status, epochs=epochs, val_acc=val_acc,
        max_epochs=cfg.optim.max_epochs, repeat_of=info.repeat_of,
        run_id=_claimed_id(run_dir), config_hash=cfg.config_hash(), path=str(run_dir),
        code_version=artifacts.code_version(),
        teacher=t.get("path"), teacher_val_acc=t.get("val_acc"), teacher_test_acc=t.get("test_acc")))
