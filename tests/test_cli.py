"""The command line as a user meets it: one-line errors, evaluate on a foreign archive, describe."""
from __future__ import annotations

import json
from pathlib import Path
import os
import subprocess
import sys

import pytest

from mimicnet.cli import main
from conftest import run_here
from synth import write_archive


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "mimicnet.cli", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    archive = write_archive(d / "a.tar.gz", n_train=200, n_test=50)
    run = d / "run"
    assert main(["train", "--data", str(archive), "--family", "conv1", "--widths", "6,8,16", "--max-epochs", "2",
                 "--batch-size", "32", "--device", "cpu", "--out", str(run)]) == 0
    return archive, run


def test_evaluate_on_a_test_only_archive_writes_json(trained, tmp_path):
    _, run = trained
    other = write_archive(tmp_path / "other.tar.gz", n_test=40, seed=9, train=False)
    out = tmp_path / "ev.json"
    r = run_cli("evaluate", run / "best.safetensors", "--data", other, "--json", out, "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert "accuracy" in r.stdout and "40 images" in r.stdout
    ev = json.loads(out.read_text())
    assert ev["n"] == 40 and 0 <= ev["accuracy"] <= 1 and ev["family"] == "conv1" and len(ev["data_sha256"]) == 64
    # that archive has no training data: asking for val is a clear error
    r = run_cli("evaluate", run, "--data", other, "--split", "val")
    assert r.returncode == 2 and "split 'val' is not available" in r.stderr


@pytest.mark.parametrize("make, phrase", [
    (lambda p: p.write_bytes(os.urandom(4000)), "not a gzip/tar archive"),
    (lambda p: p.write_bytes(write_archive(p.with_name("ok.tar.gz")).read_bytes()[:3000]), "truncated"),
    (lambda p: None, "no such file"),
])
def test_bad_archives_give_one_line_and_exit_2(trained, tmp_path, make, phrase, capsys, monkeypatch):
    _, run = trained
    bad = tmp_path / "bad.tar.gz"
    make(bad)
    monkeypatch.chdir(tmp_path)  # train's default folder, were it made, is under the working directory
    for cmd in (["evaluate", run, "--data", bad], ["train", "--data", bad, "--family", "conv2", "--widths", "4,4,4"],
                ["data", "info", bad]):
        r = run_here(capsys, *cmd)
        assert r.returncode == 2, (cmd, r.stderr)
        assert "Traceback" not in r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "bad.tar.gz" in lines[0] and phrase in lines[0], lines


def test_corrupt_checkpoint_and_bad_model_args_are_one_line(trained, tmp_path, capsys):
    archive, _ = trained
    ck = tmp_path / "best.safetensors"
    ck.write_bytes(b"\x00" * 64)
    for cmd in (["evaluate", ck, "--data", archive],
                ["model", "describe", "conv0", "--budget", "1M", "--constants", "0.5,0.5"],
                ["model", "describe", "nonesuch", "--widths", "3"],
                ["model", "describe", "conv0", "--budget", "100", "--constants", "0.5"]):
        r = run_here(capsys, *cmd)
        assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_describe_prints_layers_and_budget_distance(capsys):
    assert main(["model", "describe", "teacher", "--widths", "76,126,148,1200"]) == 0
    out = capsys.readouterr().out
    assert "5,339,350" in out and "conv8" in out
    assert main(["model", "describe", "conv2", "--budget", "1M", "--constants", "0.5,0.5"]) == 0
    out = capsys.readouterr().out
    assert "budget 1,000,000" in out and "%" in out


def test_train_config_file_and_flag_override(trained, tmp_path):
    archive, _ = trained
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"family": "conv2", "widths": [4, 4, 8], "data": str(archive), "max_epochs": 1,
                               "lr": 0.5, "batch_size": 50}))
    out = tmp_path / "r"
    assert main(["train", "--config", str(cfg), "--lr", "0.01", "--device", "cpu", "--out", str(out)]) == 0
    saved = json.loads((out / "config.json").read_text())["config"]
    assert saved["lr"] == 0.01 and saved["batch_size"] == 50 and saved["widths"] == [4, 4, 8]


def test_train_names_one_default_folder_however_the_data_path_is_spelled(tmp_path, monkeypatch):
    # the run id holds the data by content (its sha256), not the path as typed
    from types import SimpleNamespace

    from mimicnet.cli.train import default_run_name
    from mimicnet.train.config import TrainConfig
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    a, b = SimpleNamespace(sha256="a" * 64), SimpleNamespace(sha256="b" * 64)
    names = {default_run_name(TrainConfig.of(data=d, max_epochs=2), a)
             for d in ("a.tar.gz", "./a.tar.gz", str(tmp_path / "a.tar.gz"), "sub/../a.tar.gz", "/elsewhere/a.tgz")}
    assert len(names) == 1
    assert default_run_name(TrainConfig.of(data="a.tar.gz", max_epochs=2), b) not in names  # other data
    assert default_run_name(TrainConfig.of(data="a.tar.gz", max_epochs=3), a) not in names  # other config


def test_train_continues_a_default_folder_named_by_older_code(tmp_path, monkeypatch):
    # older code named the folder runs/train/<run id with the paths as spelled>, then <... paths resolved>
    from types import SimpleNamespace

    from mimicnet.cli.train import default_out, default_run_name
    from mimicnet.train.config import TrainConfig
    monkeypatch.chdir(tmp_path)
    cfg, data = TrainConfig.of(data="a.tar.gz", max_epochs=2), SimpleNamespace(sha256="a" * 64)
    assert default_out(cfg, data) == Path("runs") / "train" / default_run_name(cfg, data)
    resolved = cfg.replace(data=str(tmp_path / "a.tar.gz")).legacy_run_id()
    (tmp_path / "runs" / "train" / resolved).mkdir(parents=True)
    assert default_out(cfg, data) == Path("runs") / "train" / resolved
    (tmp_path / "runs" / "train" / cfg.legacy_run_id()).mkdir(parents=True)
    assert default_out(cfg, data) == Path("runs") / "train" / cfg.legacy_run_id()
