"""Training loop: the S3 schedule, checkpoints, exact resume after a kill, learning at all."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mimicnet.core import artifacts
from mimicnet.core.errors import ConfigError
from mimicnet.train.schedules import OneCycleSchedule, PlateauSchedule
from mimicnet.train.config import TrainConfig, resolve_widths
from mimicnet.train.loop import fit
from mimicnet.models.checkpoint import model_from_checkpoint

from synth import kill_after_epochs, write_archive


# ---------------------------------------------------------------------------------------- S3 schedule

def run_schedule(errs, **kw):
    s = PlateauSchedule(lr0=0.1, **kw)
    lrs = []
    for e, err in enumerate(errs):
        stop = s.step(e, err)
        lrs.append(s.lr)
        if stop:
            return lrs, e
    return lrs, None


def test_schedule_halves_after_patience_respects_cooldown_and_stops():
    # val error never improves after epoch 0: halve at 10 (10 stale epochs), then not within 8 epochs of a
    # halving -> next at 19, then 28; stop at epoch 30 (30 stale epochs).
    lrs, stopped = run_schedule([0.5] * 100)
    cuts = [e for e in range(1, len(lrs)) if lrs[e] < lrs[e - 1]]
    assert cuts == [10, 19, 28]
    assert stopped == 30
    assert lrs[-1] == pytest.approx(0.1 / 8)


def test_schedule_improvement_resets_patience():
    errs = [1.0 - 0.01 * e for e in range(50)]      # improves every epoch
    lrs, stopped = run_schedule(errs)
    assert stopped is None and set(lrs) == {0.1}
    # an improvement at epoch 9 postpones the first halving to epoch 19
    errs = [0.5] * 9 + [0.4] + [0.45] * 40
    lrs, _ = run_schedule(errs)
    assert lrs[18] == 0.1 and lrs[19] == 0.05


def test_schedule_stops_when_lr_cut_more_than_max_decay():
    # cut every epoch from epoch 1: 2**11 = 2048 > 2000 -> stop right after the 11th cut (epoch 11)
    lrs, stopped = run_schedule([0.5] * 100, patience=1, cooldown=0, stop_patience=1000)
    assert stopped == 11 and 0.1 / lrs[-1] == pytest.approx(2048)


def test_onecycle_warms_up_and_ends_at_zero():
    s = OneCycleSchedule(lr0=1.0, max_epochs=10)
    assert s.lr_at(0, 0) == pytest.approx(0.1)
    assert s.lr_at(2, 0) == pytest.approx(1.0)
    assert s.lr_at(9, 1.0) == pytest.approx(0.0)
    assert not s.step(8, 0.5) and s.step(9, 0.5)


# ---------------------------------------------------------------------------------------- config

def test_config_round_trips_and_rejects_unknown_fields():
    cfg = TrainConfig.of(family="conv2", widths=(8, 8, 16), dropout=(0.1, 0.2, 0.3))
    again = TrainConfig.from_dict(json.loads(json.dumps(artifacts.to_jsonable(cfg))))
    assert again == cfg and again.run_id() == cfg.run_id()
    assert TrainConfig.of(family="conv2", widths=(8, 8, 16), device="cpu").run_id() == TrainConfig.of(
        family="conv2", widths=(8, 8, 16), device="cuda").run_id()
    with pytest.raises(ConfigError, match="nope"):
        TrainConfig.from_dict({"nope": 1})


def test_resolve_widths():
    assert resolve_widths(TrainConfig.of(family="teacher", constants=(0, 0, 0, 0))) == (32, 64, 128, 512)
    w = resolve_widths(TrainConfig.of(family="conv2", budget=1_000_000, constants=(0.5, 0.5)))
    assert len(w) == 3
    with pytest.raises(ConfigError):
        resolve_widths(TrainConfig.of(family="conv2"))
    with pytest.raises(ConfigError):
        resolve_widths(TrainConfig.of(family="conv2", constants=(0.5, 0.5)))


# ---------------------------------------------------------------------------------------- a real (tiny) run

@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return write_archive(tmp_path_factory.mktemp("data") / "tiny.tar.gz", n_train=400, n_test=200)


def small_cfg(archive, **kw):
    base = dict(family="conv2", widths=(8, 8, 32), data=str(archive), batch_size=32, lr=0.02, momentum=0.9,
                max_epochs=5, schedule="plateau", device="cpu", seed=3, scale_min=28)
    base.update(kw)
    return TrainConfig.of(**base)


def test_fit_learns_and_writes_a_complete_run_folder(archive, tmp_path):
    res = fit(small_cfg(archive), tmp_path / "run", log=lambda s: None)
    run = tmp_path / "run"
    for name in ("config.json", "metrics.jsonl", "best.safetensors", "best.json", "last.safetensors", "results.json"):
        assert (run / name).exists(), name
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(5))
    assert set(rows[0]) >= {"loss", "val_acc", "lr", "seconds"}
    assert rows[-1]["loss"] < rows[0]["loss"]            # it learns
    assert res["val_acc"] == max(r["val_acc"] for r in rows)  # best-val weights are the result
    assert res["test_acc"] > 0.3                          # 10 classes: chance is 0.1
    _, meta = artifacts.load_checkpoint(run / "best.safetensors")
    assert meta["config"]["widths"] == [8, 8, 32] and meta["code_version"] and meta["family"] == "conv2"
    model, _ = model_from_checkpoint(run)
    assert sum(p.numel() for p in model.parameters()) == res["params"]
    # a finished run is not trained again
    assert fit(small_cfg(archive), run, log=lambda s: None) == res


def test_run_folder_refuses_another_config(archive, tmp_path):
    fit(small_cfg(archive, max_epochs=1), tmp_path / "r", log=lambda s: None)
    (tmp_path / "r" / "results.json").unlink()
    with pytest.raises(ConfigError, match="another config"):
        fit(small_cfg(archive, max_epochs=1, lr=0.5), tmp_path / "r", log=lambda s: None)


def _train_cmd(archive, out, epochs=6):
    return [sys.executable, "-m", "mimicnet.cli", "train", "--data", str(archive), "--family", "conv2",
            "--widths", "8,8,32", "--batch-size", "32", "--lr", "0.02", "--max-epochs", str(epochs),
            "--dropout", "0.1,0.1,0.2", "--seed", "5", "--device", "cpu", "--out", str(out)]


def _metrics(run: Path):
    return [{k: r[k] for k in ("epoch", "loss", "val_acc", "lr")}
            for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


def test_killed_run_resumes_to_the_same_result(archive, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full = tmp_path / "full"
    subprocess.run(_train_cmd(archive, full), check=True, env=env, capture_output=True)

    cut = tmp_path / "cut"
    kill_after_epochs(_train_cmd(archive, cut), cut, env)  # kill it mid-run, once two epochs are on disk
    out = subprocess.run(_train_cmd(archive, cut), check=True, env=env, capture_output=True, text=True)
    assert "resuming" in out.stdout

    assert _metrics(cut) == _metrics(full)
    a, b = json.loads((full / "results.json").read_text()), json.loads((cut / "results.json").read_text())
    assert (a["val_acc"], a["test_acc"], a["best_epoch"]) == (b["val_acc"], b["test_acc"], b["best_epoch"])
    ta, _ = artifacts.load_checkpoint(full / "best.safetensors")
    tb, _ = artifacts.load_checkpoint(cut / "best.safetensors")
    assert all(torch.equal(ta[k], tb[k]) for k in ta)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "best.safetensors"
    bad.write_bytes(os.urandom(200))
    with pytest.raises(artifacts.CheckpointError, match="best.safetensors"):
        model_from_checkpoint(bad)
    with pytest.raises(artifacts.CheckpointError, match="not found"):
        model_from_checkpoint(tmp_path / "nope.safetensors")


# config.json of a smoke-preset baseline trial written before the config was nested (commit 4344780)
_RECORDED = {"amp": True, "augment": True, "batch_size": 64, "batchnorm": False, "bounds": [[4, 22], [4, 18]],
             "budget": 20000, "channels_last": True, "compile": False,
             "constants": [0.8780562848740305, 0.42983509969973277], "cooldown": 8,
             "data": "../shared/data/cifar-10-subset-python.tar.gz", "device": "auto",
             "dropout": [0.17970233093354637, 0.17222428376263274, 0.13223899723437343], "family": "conv2",
             "hard_weight": 0.0, "hsv": [0.06, 0.26, 0.2, 0.21, 0.13], "init_scale": 1.0, "input_scale": 1.0,
             "label_smoothing": 0.0, "loss": "ce", "lr": 0.02124650890593038, "max_decay": 2000.0, "max_epochs": 2,
             "max_train": 400, "mirror": True, "momentum": 0.8834392705597183, "normalize_logits": False,
             "optimizer": "sgd", "patience": 10, "preprocess": "standardize", "scale_min": 24,
             "schedule": "onecycle", "seed": 0, "stop_patience": 30, "temperature": 1.0, "transfer": "",
             "weight_decay": 0.0002, "widths": None}


def test_nested_config_keeps_the_flat_format_and_the_identity_of_old_runs():
    cfg = TrainConfig.from_dict(_RECORDED)
    assert cfg.legacy_run_id() == "conv2-860392f428"     # the folder name that run got (code of 2026-11)
    assert cfg.to_dict() == _RECORDED                    # config.json round-trips field for field
    assert (cfg.model.budget, cfg.optim.lr, cfg.data.max_train) == (20000, 0.02124650890593038, 400)
    assert cfg.data.augmentation.dh == 0.06 and cfg.augment_config() is cfg.data.augmentation
    hsv = cfg.replace(hsv=(0.1, 0.2, 0.3, 0.2, 0.1))
    assert hsv.data.augmentation.dv == 0.3 and hsv.replace(dv=0.2).to_dict()["hsv"] == [0.1, 0.2, 0.2, 0.2, 0.1]
    assert hsv.run_id() != cfg.run_id()
    assert TrainConfig.from_dict(_RECORDED | {"augment": False}).augment_config() is None
    with pytest.raises(ConfigError, match="unknown config field"):
        TrainConfig.from_dict(_RECORDED | {"lr_typo": 1})
    with pytest.raises(ConfigError, match="hsv takes 5"):
        cfg.replace(hsv=(0.1, 0.2))


def test_run_id_holds_what_the_paths_hold_not_how_they_are_spelled():
    cfg = TrainConfig.of(family="conv2", widths=(8, 8, 32), data="../shared/a.tar.gz", transfer="t/set",
                         loss="l2-logits")
    inputs = {"data": "d" * 64, "transfer": "f" * 16}
    moved = cfg.replace(data="/abs/elsewhere/a.tar.gz", transfer="/results/moved/set")
    assert moved.run_id(inputs) == cfg.run_id(inputs) and moved.config_hash() == cfg.config_hash()
    assert cfg.run_id(inputs | {"data": "e" * 64}) != cfg.run_id(inputs)          # other data
    assert cfg.run_id(inputs | {"transfer": "g" * 16}) != cfg.run_id(inputs)      # another transfer set
    assert cfg.replace(lr=0.5).run_id(inputs) != cfg.run_id(inputs)              # another config
    assert moved.legacy_run_id() != cfg.legacy_run_id()   # what older code did: the path as spelled named it
    assert cfg.run_id(inputs).startswith("conv2-") and len(cfg.run_id(inputs)) == len("conv2-") + 10


def test_run_identity_ignores_execution_fields_and_new_default_fields():
    cfg = TrainConfig.of(family="conv2", widths=(8, 8, 32), lr=0.02)
    assert cfg.run_id() == cfg.replace(device="cuda", amp=False, compile=True).run_id()
    assert cfg.run_id() != cfg.replace(lr=0.03).run_id()
    # a field at its default does not enter the hash: the identity of old runs survives new options
    @dataclasses.dataclass
    class Before:
        a: int = 1

    @dataclasses.dataclass
    class After:  # the same config after a release added an option `b`
        a: int = 1
        b: str = "new"

    assert artifacts.config_hash(Before(a=5)) == artifacts.config_hash(After(a=5))
    assert artifacts.config_hash(After(a=5, b="other")) != artifacts.config_hash(Before(a=5))
    assert TrainConfig.of(lr=0.01).run_id() == TrainConfig.of().run_id()  # 0.01 is the default lr


# ---------------------------------------------------------------------------------------- collapse

def test_collapse_rule_by_hand():
    from mimicnet.train.loop import collapsed
    assert collapsed(best=0.60, now=0.12, chance=0.1)        # rose 50 points, fell back to 2 above chance
    assert not collapsed(best=0.60, now=0.50, chance=0.1)    # a wobble
    assert not collapsed(best=0.20, now=0.10, chance=0.1)    # never rose far enough to tell
    assert collapsed(best=0.30, now=0.05, chance=0.01) and not collapsed(best=0.30, now=0.14, chance=0.01)


def test_a_run_that_falls_back_to_chance_is_collapsed_not_finished(archive, tmp_path):
    """Learn for 3 epochs, then train on one label only: validation falls to one class's share. The run is a
    failure (Collapsed), never a result reporting its epoch-2 checkpoint."""
    from mimicnet.core.errors import Collapsed, Diverged
    from mimicnet.data.splits import load_train_data
    from mimicnet.train.batches import hard_label_batches
    cfg = small_cfg(archive, max_epochs=8)
    data = load_train_data(str(archive))
    good = hard_label_batches(cfg, data.train, torch.device("cpu"))

    def batches(epoch):
        for x, y in good(epoch):
            yield x, (y if epoch < 3 else torch.zeros_like(y))
    batches.steps_per_epoch = getattr(good, "steps_per_epoch", None)
    with pytest.raises(Collapsed) as e:
        fit(cfg, tmp_path / "run", data, batches=batches, log=lambda s: None)
    assert isinstance(e.value, Diverged) and e.value.status == "collapsed" and 3 < e.value.epochs <= 8
    assert "collapsed at epoch" in str(e.value)
    assert not (tmp_path / "run" / "results.json").exists()


def test_pruner_rungs_must_come_after_the_warmup(tmp_path):
    from mimicnet.search.run import check_rungs_after_warmup
    from mimicnet.search.spaces import SearchError
    cfg = TrainConfig.of(schedule="onecycle", max_epochs=20)      # warm-up: 4 epochs
    with pytest.raises(SearchError, match="warm-up .4 of 20 epochs.; give at least 5"):
        check_rungs_after_warmup("sha", 2, cfg)
    check_rungs_after_warmup("sha", 5, cfg)
    check_rungs_after_warmup("none", 2, cfg)                        # no pruner, no rungs
    check_rungs_after_warmup("sha", 1, TrainConfig.of(schedule="plateau", max_epochs=20))  # no warm-up
    from mimicnet.search.run import first_rung_after_warmup  # search run's default first rung
    assert first_rung_after_warmup(cfg) == 5
    assert first_rung_after_warmup(TrainConfig.of(schedule="plateau", max_epochs=20)) == 1
    check_rungs_after_warmup("sha", first_rung_after_warmup(cfg), cfg)


def test_collapse_needs_two_epochs_at_chance_or_the_last_one(archive, tmp_path, monkeypatch):
    """One epoch at chance that recovers is a wobble (kept); two in a row, or a last epoch at chance, is a
    collapse. Validation accuracies are scripted; chance is the validation set's largest class share."""
    import mimicnet.train.loop as loop
    from mimicnet.core.errors import Collapsed
    from mimicnet.data.splits import load_train_data
    assert loop.majority_rate(torch.tensor([0, 0, 0, 1, 2]), 10) == pytest.approx(0.6)
    data = load_train_data(str(archive))

    def run(vals, name):
        it = iter(vals)
        monkeypatch.setattr(loop, "accuracy", lambda logits, y: next(it, 0.5))  # then the test set
        return fit(small_cfg(archive, max_epochs=len(vals)), tmp_path / name, data, log=lambda s: None)

    run([0.5, 0.9, 0.05, 0.8, 0.85], "wobble")
    assert (tmp_path / "wobble" / "results.json").exists()
    with pytest.raises(Collapsed, match="collapsed at epoch 3"):
        run([0.5, 0.9, 0.05, 0.05, 0.85], "twice")
    with pytest.raises(Collapsed, match="collapsed at epoch 3"):
        run([0.5, 0.9, 0.85, 0.05], "last")
    assert not (tmp_path / "last" / "results.json").exists()
