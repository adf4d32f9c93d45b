"""Bad input, wherever it enters (flags, a JSON --config, `reproduce --set`, an --out that cannot be a folder),
gets one line naming the field and what is wrong, exit status 2, no traceback, and nothing written."""
from __future__ import annotations

import json
import os
from pathlib import Path
import pickle

import pytest
import torch

from mimicnet.cli import build_parser, main
from mimicnet.cli.common import train_config_from_args
from mimicnet.core.errors import ConfigError
from mimicnet.data.cifar import CLASSES, load_cifar
from mimicnet.data.splits import load_train_data
from mimicnet.models.families import ModelError
from mimicnet.studies.catalog import STUDY_PRESETS
from mimicnet.studies.fixed import ModelSpec
from mimicnet.studies.main import PRESETS, apply_overrides
from mimicnet.train.config import TrainConfig
from mimicnet.train.loop import fit
from synth import synth_images, write_archive, write_cifar_archive


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return write_archive(tmp_path_factory.mktemp("data") / "a.tar.gz", n_train=100, n_test=20)


def cli(capsys, *argv) -> tuple[int, str]:
    """main(argv) in this process: (exit status, stderr); argparse's exits included."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    return rc, capsys.readouterr().err


def one_line(rc: int, err: str) -> str:
    assert rc == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def train_argv(archive, out, *extra):
    return ["train", "--data", archive, "--family", "conv1", "--widths", "4,4,4", "--max-epochs", "1",
            "--batch-size", "32", "--device", "cpu", "--out", out, *extra]


# ---- flags

@pytest.mark.parametrize("flags, phrase", [
    (["--budget", "-5"], "budget must be positive"),
    (["--budget", "inf"], "budget must look like"),
    (["--budget", "1e12"], "budget must be at most 1000M parameters"),
    (["--device", "tpu"], "device must be one of auto, cpu, cuda, cuda:N or mps, got 'tpu'"),
    (["--batch-size", "0"], "batch_size must be an integer >= 1, got 0"),
    (["--batch-size", "-4"], "batch_size must be an integer >= 1, got -4"),
    (["--lr", "-1"], "lr must be a number > 0, got -1.0"),
    (["--lr", "nan"], "lr must be a number > 0"),
    (["--scale-min", "40"], "scale_min must be an int in 1..32, got 40"),
    (["--scale-min", "0"], "scale_min must be an int in 1..32, got 0"),
    (["--hsv", "0.1,0.2"], "hsv takes 5 numbers"),
    (["--label-smoothing", "2"], "label_smoothing must be a number in [0, 1), got 2.0"),
    (["--max-train", "-5"], "max_train must be an integer >= 1"),
    (["--max-train", "0"], "max_train must be an integer >= 1"),
    (["--dropout", "1.5,0,0"], "dropout must be a list of rates in [0, 1)"),
    (["--momentum", "1"], "momentum must be a number in [0, 1)"),
    (["--max-epochs", "0"], "max_epochs must be an integer >= 1"),
    (["--widths", "4.5,4,4"], "expected comma-separated integers"),
    (["--widths", "inf,4,4"], "expected comma-separated integers"),
    (["--schedule", "cosine"], "schedule must be one of plateau, onecycle"),
    (["--loss", "mse"], "loss must be one of ce"),
    (["--family", "conv9"], "family must be one of"),
])
def test_bad_train_flags_are_one_line_and_write_nothing(archive, tmp_path, capsys, flags, phrase):
    out = tmp_path / "run"
    argv = train_argv(archive, out, *flags)
    if flags[0] == "--budget":  # a budget needs constants instead of widths
        i = argv.index("--widths")
        argv[i:i + 2] = ["--constants", "0.5,0.5"]
    line = one_line(*cli(capsys, *argv))
    assert phrase in line, line
    assert not out.exists()


@pytest.mark.parametrize("device, available", [("mps", torch.backends.mps.is_available()),
                                               ("cuda", torch.cuda.is_available())])
def test_a_device_this_machine_lacks_is_one_line(archive, tmp_path, capsys, device, available):
    if available:
        pytest.skip(f"this machine has {device}")
    out = tmp_path / "run"
    line = one_line(*cli(capsys, *train_argv(archive, out, "--device", device)))
    assert f"--device {device} asked for, but torch sees no" in line, line
    assert not out.exists()


# ---- --config files

@pytest.mark.parametrize("content, phrase", [
    ({"max_epochs": "2"}, 'max_epochs must be an integer >= 1, got "2"'),
    ({"max_epochs": 2.5}, "max_epochs must be an integer >= 1, got 2.5"),
    ({"lr": "fast"}, 'lr must be a number > 0, got "fast"'),
    ({"dropout": None}, "dropout must be a list of rates in [0, 1), got null"),
    ({"augment": "no"}, 'augment must be true or false, got "no"'),
    ({"batchnorm": 1}, "batchnorm must be true or false, got 1"),
    ({"widths": [4, 0, 4]}, "widths must be a list of integers >= 1"),
    ({"hsv": 5}, "hsv takes 5 numbers"),
    ({"budget": 2e12}, "budget must be at most 1000M parameters"),
    ({"budget": 1500000.5}, "budget must be an integer from 1 to 1,000,000,000"),
    ({"device": "tpu"}, "device must be one of"),
    ({"config": {"seed": -1}}, "seed must be an integer >= 0, got -1"),  # a run's config.json
    ({"nope": 1}, "unknown config field(s): nope"),
    ([1, 2], "a config file holds one JSON object of config fields, not a list"),
    ("just a string", "a config file holds one JSON object of config fields, not a string"),
])
def test_bad_config_files_are_one_line_naming_the_file(archive, tmp_path, capsys, content, phrase):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(content))
    out = tmp_path / "run"
    line = one_line(*cli(capsys, *train_argv(archive, out, "--config", cfg)))
    assert str(cfg) in line and phrase in line, line
    assert not out.exists()


def test_config_that_is_a_folder_or_not_json(archive, tmp_path, capsys):
    out = tmp_path / "run"
    folder = tmp_path / "cfgdir"
    folder.mkdir()
    line = one_line(*cli(capsys, *train_argv(archive, out, "--config", folder)))
    assert str(folder) in line and "is a folder" in line, line
    bad = tmp_path / "bad.json"
    bad.write_text("{max_epochs: 2")
    line = one_line(*cli(capsys, *train_argv(archive, out, "--config", bad)))
    assert str(bad) in line and "not valid JSON" in line, line
    assert not out.exists()


def test_flags_override_a_config_file(tmp_path):
    cfg = tmp_path / "config.json"  # a run's config.json is a config file too
    cfg.write_text(json.dumps({"config": {"lr": 0.5, "max_epochs": 3}, "run_id": "x"}))
    c = train_config_from_args(build_parser().parse_args(["train", "--config", str(cfg), "--lr", "0.02"]))
    assert (c.optim.lr, c.optim.max_epochs) == (0.02, 3)


# ---- --out

def test_out_with_a_file_in_the_way_is_one_line(archive, tmp_path, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    out = blocker / "run"
    line = one_line(*cli(capsys, *train_argv(archive, out)))
    assert str(out) in line and ("not a directory" in line or f"{blocker} is a file, not a folder" in line), line
    assert blocker.read_text() == "x"


def test_out_under_a_read_only_folder_is_one_line(archive, tmp_path, capsys, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # root may write anywhere (CI containers run as root): the permission the check asks for is denied
        # here instead, so the test still runs there
        real = os.mkdir

        def denied(p, *a, **k):
            if Path(p).parent == ro:
                raise PermissionError(13, "Permission denied", str(p))
            return real(p, *a, **k)
        monkeypatch.setattr(os, "mkdir", denied)
    try:
        out = ro / "run"
        line = one_line(*cli(capsys, *train_argv(archive, out)))
        assert str(out) in line and "ermission denied" in line, line
        assert not out.exists()
    finally:
        ro.chmod(0o755)


# ---- nothing is written before everything is checked

def test_a_refused_run_writes_no_config_and_its_fix_trains_in_the_same_folder(archive, tmp_path, capsys, one_thread):
    out = tmp_path / "run"
    base = ["train", "--data", archive, "--family", "conv1", "--budget", "20k", "--max-epochs", "1",
            "--batch-size", "32", "--device", "cpu", "--out", out]
    line = one_line(*cli(capsys, *base, "--constants", "0.5"))  # conv1 takes two constants
    assert "takes 2 width constants" in line, line
    assert not (out / "config.json").exists()
    rc, err = cli(capsys, *base, "--constants", "0.5,0.5")
    assert rc == 0, err
    assert (out / "results.json").exists()


@pytest.mark.parametrize("cfg, error", [
    (dict(family="conv1", widths=(4, 4)), ModelError),            # conv1 takes three widths
    (dict(family="conv1", widths=(4, 4, 4), constants=(0.5, 0.5)), ConfigError),
    (dict(family="conv1", widths=(4, 4, 4), device="mps"), ConfigError),
])
def test_fit_checks_everything_before_it_claims_the_folder(archive, tmp_path, cfg, error):
    if cfg.get("device") == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has mps")
    data = load_train_data(archive)
    out = tmp_path / "run"
    with pytest.raises(error):
        fit(TrainConfig.of(max_epochs=1, **{"device": "cpu", **cfg}), out, data, log=lambda s: None)
    assert not (out / "config.json").exists()


# ---- TrainConfig: one check for every way in

@pytest.mark.parametrize("field, value", [
    ("max_epochs", "2"), ("max_epochs", 2.5), ("max_epochs", True), ("lr", "fast"), ("lr", float("inf")),
    ("dropout", None), ("dropout", 0.5), ("augment", "no"), ("augment", 1), ("budget", 0), ("budget", 1500000.5), ("budget", -3),
    ("constants", (0.5, 1.5)), ("bounds", ((10, 5),)), ("temperature", 0), ("hard_weight", -1),
    ("weight_decay", -1e-4), ("max_decay", 0.5), ("patience", -1), ("optimizer", "rmsprop"),
    ("preprocess", "zca"), ("data", 5), ("transfer", None), ("device", "cuda:x"), ("amp", "true"),
])
def test_train_config_refuses_bad_values_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=f"^{field} must be"):
        TrainConfig.from_dict({field: value})
    with pytest.raises(ConfigError, match=f"^{field} must be"):
        TrainConfig.of(**{field: value})


def test_train_config_takes_valid_values_unchanged():
    d = {"family": "conv2", "budget": 100_000, "constants": [0.3, 0.7], "bounds": [[4, 20], [4, 40]],
         "dropout": [0.1, 0.2, 0.3], "lr": 1, "max_train": 5, "device": "cuda:1", "momentum": 0,
         "label_smoothing": 0.1, "seed": 3}
    cfg = TrainConfig.from_dict(d)
    assert cfg.optim.lr == 1 and cfg.model.bounds == ((4, 20), (4, 40)) and cfg.execution.device == "cuda:1"
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert TrainConfig.from_dict({"budget": "1M"}) == TrainConfig.from_dict({"budget": 1e6}) == TrainConfig.of(budget=10**6)
    # search trials put floats where floats go, and the presets' configs are all valid
    assert TrainConfig.of(lr=0.01, dh=0.1, scale_min=24).data.augmentation.dh == 0.1


# ---- reproduce --set

@pytest.mark.parametrize("preset, setting, phrase", [
    ("smoke", "teacher_base=[1,2]", "--set teacher_base: must be a JSON object, got [1, 2]"),
    ("smoke", "teachers=5", "--set teachers: must be a list of JSON objects, got 5"),
    ("smoke", "teachers=[5]", "--set teachers[0]: must be a JSON object, got 5"),
    ("smoke", "student_trials=2.5", "--set student_trials: must be an integer >= 0, got 2.5"),
    ("smoke", "student_budgets=5", "--set student_budgets: must be a list of parameter budgets"),
    ("smoke", "student_budgets=[1e13]", "--set student_budgets[0]: budget must be at most"),
    ("smoke", "student_families=[\"conv9\"]", "--set student_families[0]: must be one of conv0"),
    ("smoke", "sampler=bayes", "--set sampler: must be one of gp, tpe, random"),
    ("smoke", "ensemble_method=best", "--set ensemble_method: must be one of greedy, topk"),
    ("smoke", "transfer_mode=video", "--set transfer_mode: must be one of images, replay"),
    ("smoke", "teacher_mode=grid", "--set teacher_mode: must be one of fixed, search"),
    ("smoke", "report=yes", "--set report: must be true or false"),
    ("smoke", "nope=1", "--set nope: no such preset field"),
    ("smoke", "teacher_base={\"lr\": -1}", "preset smoke: teacher config: lr must be a number > 0, got -1"),
    ("smoke", "student_base={\"max_epochs\": \"2\"}", 'student config: max_epochs must be an integer >= 1, got "2"'),
    ("ba-caruana", "seeds=[0,\"x\"]", "--set seeds[1]: must be an integer >= 0"),
    ("ba-caruana", "teachers=[1]", "--set teachers: must be a JSON object"),
    ("ba-caruana", "models={\"m\": {\"family\": \"mlp\"}}", "--set models.m: must be a JSON object of ModelSpec fields"),
    ("ba-caruana", "ensembles={\"e\": {\"members\": [\"a\"], \"method\": \"x\"}}",
     "--set ensembles.e.method: must be one of greedy, topk"),
    ("ba-caruana", "arms=[{\"name\": \"x\"}]", "--set arms[0]: must be a JSON object of Arm fields"),
    ("ba-caruana", "lrs=[\"fast\"]", "--set lrs[0]: must be a number"),
    ("ba-caruana", "inputs=audio", "--set inputs: must be one of images, features"),
])
def test_bad_preset_settings_are_one_line_and_write_nothing(archive, tmp_path, capsys, preset, setting, phrase):
    out = tmp_path / "results"
    line = one_line(*cli(capsys, "reproduce", "--preset", preset, "--data", archive, "--out", out,
                         "--device", "cpu", "--set", setting))
    assert phrase in line, line
    assert not out.exists()


def test_preset_settings_are_converted_to_their_field_types():
    p = apply_overrides(PRESETS["cpu"], ["student_budgets=[100000, \"0.3M\"]", "student_trials=5", "sampler=tpe",
                                         "data=2024", "teachers=[{\"seed\": 4}]", "max_train=null"])
    assert p.student_budgets == (100_000, 300_000) and p.student_trials == 5 and p.sampler == "tpe"
    assert p.data == "2024" and p.teachers == [{"seed": 4}] and p.max_train is None
    s = apply_overrides(STUDY_PRESETS["ba-caruana"], ["seeds=[0,1,2]", "lrs=[0.01,1]", "budget=\"1M\"",
                                                      "models={\"m\": {\"family\": \"mlp\", \"widths\": [8, 8]}}"])
    assert s.seeds == (0, 1, 2) and s.lrs == (0.01, 1) and s.budget == 1_000_000
    assert s.models == {"m": ModelSpec("mlp", (8, 8))}


# ---- data

def test_a_cifar_archive_pickled_with_protocol_5_is_read(tmp_path):
    def batch(n, seed):
        x, y = synth_images(n, seed)
        return {b"data": x, b"labels": y, b"batch_label": b"b"}

    members = {"data_batch_1": batch(30, 1), "test_batch": batch(10, 2),
               "batches.meta": {b"label_names": [c.encode() for c in CLASSES], b"num_vis": 3072}}
    old = load_cifar(write_cifar_archive(tmp_path / "p2.tar.gz", members))
    raw = {k: pickle.dumps(v, protocol=5) for k, v in members.items()}
    new = load_cifar(write_cifar_archive(tmp_path / "p5.tar.gz", raw))
    assert torch.equal(new.x_train, old.x_train) and torch.equal(new.y_train, old.y_train)
    assert torch.equal(new.x_test, old.x_test) and new.classes == CLASSES
