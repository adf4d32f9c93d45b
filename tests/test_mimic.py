"""Mimic training: students regress a transfer set's teacher logits (every loss of S5/S6), and say how
well they mimic."""
from __future__ import annotations

import json

import pytest
import torch

from mimicnet.core import artifacts
from mimicnet.core.index import read_index
from mimicnet.core.errors import ConfigError
from mimicnet.train.config import TrainConfig
from mimicnet.distill.student import train_run as fit
from mimicnet.train.loop import fold_output_affine
from mimicnet.train.losses import make_loss as mimic_loss
from mimicnet.models.checkpoint import model_from_checkpoint
from mimicnet.distill.transfer import TransferConfig, TransferSet, generate

from synth import write_archive


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("mimic")
    archive = write_archive(d / "a.tar.gz", n_train=300, n_test=100)
    teacher = d / "teacher"
    fit(TrainConfig.of(family="conv2", widths=(8, 8, 32), data=str(archive), max_epochs=3, batch_size=32, lr=0.02,
                    device="cpu"), teacher, log=lambda s: None)
    tdir = d / "transfer"
    generate(TransferConfig(data=str(archive), epochs=2, seed=0, device="cpu"), teacher, tdir, log=lambda s: None)
    return archive, teacher, tdir


def student(archive, tdir, **kw):
    base = dict(family="conv1", widths=(6, 8, 32), data=str(archive), transfer=str(tdir), loss="l2-logits",
                max_epochs=3, batch_size=32, lr=0.001, momentum=0.9, device="cpu", augment=False)
    base.update(kw)
    return TrainConfig.of(**base)


@pytest.mark.parametrize("loss", ["l2-logits", "kl", "l2-probs", "softmax-mse"])
def test_students_learn_from_the_teacher_and_report_mimicry(world, tmp_path, loss):
    archive, teacher, tdir = world
    idx = tmp_path / "index.csv"
    res = fit(student(archive, tdir, loss=loss, lr={"l2-logits": 0.001, "kl": 0.01}.get(loss, 0.05)), tmp_path / "s",
              index=idx, log=lambda s: None)
    rows = [json.loads(l) for l in (tmp_path / "s" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert 0 <= res["mimic_mse"] and 0 <= res["mimic_agreement"] <= 1
    assert res["mimic_agreement"] > 0.2     # far above chance agreement with a 10-way teacher
    assert res["teacher"] and res["teacher_test_acc"] is not None
    (row,) = read_index(idx)
    assert row["kind"] == "student" and row["loss"] == loss and float(row["mimic_agreement"]) == res["mimic_agreement"]


def test_students_read_the_transfer_set_in_stored_order(world):
    """Student epoch e reads transfer epoch e mod E, rows in order: compare with TransferSet directly."""
    from mimicnet.models.inference import preprocess
    from mimicnet.distill.student import transfer_batches
    archive, _, tdir = world
    ts = TransferSet(tdir)
    cfg = student(archive, tdir, batch_size=50)
    b = transfer_batches(cfg, ts, torch.device("cpu"))
    x0, (z0, _) = next(iter(b(1)))
    x, z, _ = ts.read(*ts.epoch_rows(1))
    assert torch.equal(x0, preprocess(x[:50], cfg.data.input_scale)) and torch.equal(z0, z[:50])
    x2, (z2, _) = next(iter(b(1 + ts.epochs)))          # wraps around
    assert torch.equal(z2, z0)


def test_l2_logits_is_half_sum_of_squares_over_logits_mean_over_batch():
    loss = mimic_loss(TrainConfig.of(loss="l2-logits"))
    g = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    z = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    # (1/2T) * sum ||g - z||^2 = (1/4) * (1 + 4 + 9)
    assert loss(g, (z, torch.zeros(2, dtype=torch.long))).item() == pytest.approx(14 / 4)
    hard = mimic_loss(TrainConfig.of(loss="l2-logits", hard_weight=1.0))
    y = torch.tensor([1, 0])
    assert hard(g, (z, y)).item() == pytest.approx(torch.nn.functional.cross_entropy(g, y).item())
    with pytest.raises(ConfigError):
        mimic_loss(TrainConfig.of(loss="nope"))


def test_normalized_logits_are_folded_into_the_saved_model(world, tmp_path):
    archive, _, tdir = world
    res = fit(student(archive, tdir, normalize_logits=True), tmp_path / "n", log=lambda s: None)
    _, meta = artifacts.load_checkpoint(tmp_path / "n" / "best.safetensors")
    # the saved model outputs plain logits: its val accuracy on reload equals the one recorded in training
    assert res["val_acc"] == pytest.approx(meta["val_acc"])
    # and folding is exact: std * (W h + b) + mean == (std W) h + (std b + mean)
    lin = torch.nn.Linear(4, 3)
    mean, std = torch.randn(3), torch.rand(3) + 0.5
    folded = fold_output_affine({"out.weight": lin.weight.data, "out.bias": lin.bias.data}, mean, std)
    h = torch.randn(5, 4)
    assert torch.allclose(h @ folded["out.weight"].T + folded["out.bias"], lin(h) * std + mean, atol=1e-6)


def test_mimic_loss_needs_a_transfer_set(world, tmp_path):
    archive, _, _ = world
    with pytest.raises(ConfigError, match="transfer"):
        fit(student(archive, ""), tmp_path / "x", log=lambda s: None)


def test_a_students_run_id_holds_its_transfer_set_and_data_by_content(world, tmp_path):
    """The same student trained from a copy of its transfer set and archive, elsewhere: one run id (the ids
    used to hash the paths as given); another transfer set: another id."""
    import shutil
    archive, teacher, tdir = world
    first = fit(student(archive, tdir, max_epochs=1), tmp_path / "s1", log=lambda s: None)
    shutil.copytree(tdir, tmp_path / "moved" / "set")
    shutil.copyfile(archive, tmp_path / "moved" / "b.tar.gz")
    second = fit(student(tmp_path / "moved" / "b.tar.gz", tmp_path / "moved" / "set", max_epochs=1), tmp_path / "s2",
                 log=lambda s: None)
    assert first["run_id"] == second["run_id"] and first["val_acc"] == second["val_acc"]
    other = tmp_path / "other"
    generate(TransferConfig(data=str(archive), epochs=2, seed=1, device="cpu"), teacher, other, log=lambda s: None)
    assert fit(student(archive, other, max_epochs=1), tmp_path / "s3", log=lambda s: None)["run_id"] != first["run_id"]


def test_a_folder_of_a_student_from_another_transfer_set_is_refused_and_older_ids_still_resume(world, tmp_path):
    """A run is named by what it learns from: the same config on another transfer set (same teacher, same data)
    into the same folder is another run, refused in one line, finished or not; a run recorded by older code (its
    id held the paths as spelled) is still this run when only its paths are spelled otherwise."""
    archive, teacher, tdir = world
    other = tmp_path / "other"
    generate(TransferConfig(data=str(archive), epochs=2, seed=3, device="cpu"), teacher, other, log=lambda s: None)
    done = fit(student(archive, tdir, max_epochs=1), tmp_path / "s", log=lambda s: None)
    with pytest.raises(ConfigError, match="the transfer set changed since this run began: .* content id"):
        fit(student(archive, other, max_epochs=1), tmp_path / "s", log=lambda s: None)
    # the same folder as older code left it: config.json with the legacy id of the config as then spelled
    cfg_json = tmp_path / "s" / "config.json"
    rec = json.loads(cfg_json.read_text())
    older = student(f"./{archive.name}", tdir, max_epochs=1)
    rec.update(config=older.to_dict(), run_id=older.legacy_run_id())
    cfg_json.write_text(json.dumps(rec))
    again = fit(student(archive, tdir, max_epochs=1), tmp_path / "s", log=lambda s: None)
    assert again["val_acc"] == done["val_acc"]
