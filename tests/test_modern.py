"""Issue 17: the airbench-style teacher family, and online (consistent) distillation."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from mimicnet.core import artifacts
from mimicnet.core.errors import ConfigError
from mimicnet.core.index import RunKind
from mimicnet.data.splits import load_train_data
from mimicnet.distill.online import OnlineBatches, mix_images
from mimicnet.distill.student import Teachers, train_run
from mimicnet.models.checkpoint import model_from_checkpoint
from mimicnet.models.families import FAMILIES, build_model, count_params, describe
from mimicnet.models.modern import WHITEN_CHANNELS, whiten_from_data
from mimicnet.train.batches import epoch_generator
from mimicnet.train.config import TrainConfig

from synth import kill_after_epochs, write_archive


def _hand_count(w1, w2, w3, classes=10, batchnorm=True):
    convs = 9 * (WHITEN_CHANNELS * w1 + w1 * w1 + w1 * w2 + w2 * w2 + w2 * w3 + w3 * w3)
    per_channel = 4 if batchnorm else 2  # BN: 2 per channel, 2 convs a block; else one bias per conv channel
    return convs + per_channel * (w1 + w2 + w3) + w3 * classes + classes


@pytest.mark.parametrize("widths", [(64, 256, 256), (32, 128, 128), (4, 6, 8)])
def test_airbench_counts_its_trainable_parameters_by_hand(widths):
    assert count_params("airbench", widths, batchnorm=True) == _hand_count(*widths)
    assert count_params("airbench", widths, batchnorm=True, num_classes=100) == _hand_count(*widths, classes=100)
    assert count_params("airbench", widths) == _hand_count(*widths, batchnorm=False)
    assert count_params("airbench", (64, 256, 256), batchnorm=True) == 1_972_490  # airbench's widths: ~2M


def test_airbench_shapes_backward_and_fixed_whitening():
    m = build_model("airbench", (8, 16, 16), batchnorm=True)
    rows = {r["name"]: r["shape"] for r in describe(m)}
    assert rows["whiten"] == (24, 31, 31) and rows["pool1"] == (8, 15, 15)
    assert rows["pool2"] == (16, 7, 7) and rows["pool3"] == (16, 3, 3) and rows["out"] == (10,)
    x = torch.randn(6, 3, 32, 32)
    out = m(x)
    assert out.shape == (6, 10)
    out.square().mean().backward()
    assert m.whiten.weight.grad is None, "the whitening filters are not trained"
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters() if p.requires_grad)


def test_whitening_decorrelates_patches_and_eval_averages_the_mirror_image():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 32, 32, generator=g)
    x = x + 0.8 * x.roll(1, dims=-1) + 0.5 * x[:, :1]  # correlated neighbours and channels
    m = build_model("airbench", (4, 4, 4))
    whiten_from_data(m, x)
    with torch.no_grad():
        f = torch.nn.functional.conv2d(x, m.whiten.weight[:12])  # the 12 eigen-filters
    f = f.permute(1, 0, 2, 3).reshape(12, -1)
    cov = torch.cov(f)
    assert torch.allclose(cov, torch.diag(cov.diag()), atol=0.05)  # decorrelated
    assert torch.allclose(cov.diag(), torch.ones(12), atol=0.05)    # unit variance (eps aside)
    assert torch.equal(m.whiten.weight[12:], -m.whiten.weight[:12])
    m.eval()
    with torch.no_grad():
        a, b = m(x[:4]), m(x[:4].flip(-1))
    torch.testing.assert_close(a, b)  # flip-averaged: an image and its mirror get the same logits


def test_airbench_trains_as_a_teacher_with_data_initialised_whitening(tmp_path):
    archive = write_archive(tmp_path / "a.tar.gz", n_train=200, n_test=60)
    cfg = TrainConfig.of(family="airbench", widths=(4, 8, 8), batchnorm=True, data=str(archive), max_epochs=2,
                         batch_size=32, lr=0.05, schedule="onecycle", device="cpu")
    assert cfg.kind() == RunKind.TEACHER and FAMILIES["airbench"].teacher
    res = train_run(cfg, tmp_path / "t", log=lambda s: None)
    assert res["params"] == _hand_count(4, 8, 8)
    model, meta = model_from_checkpoint(tmp_path / "t")
    w = model.whiten.weight
    assert not w.requires_grad and w.abs().sum() > 0
    assert not torch.allclose(w, build_model("airbench", (4, 8, 8), generator=torch.Generator().manual_seed(0)).whiten.weight)


# ------------------------------------------------------------------------------------------ online mode

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("online")
    archive = write_archive(d / "a.tar.gz", n_train=300, n_test=100)
    teacher = d / "teacher"
    train_run(TrainConfig.of(family="conv2", widths=(8, 8, 32), data=str(archive), max_epochs=2, batch_size=32,
                             lr=0.02, device="cpu"), teacher, log=lambda s: None)
    return archive, teacher


def online(archive, teacher_dir, **kw) -> TrainConfig:
    base = dict(family="conv1", widths=(6, 8, 32), data=str(archive), loss="l2-logits", distill_mode="online",
                teacher=str(teacher_dir), max_epochs=3, batch_size=32, lr=0.002, momentum=0.9, device="cpu",
                schedule="onecycle")
    return TrainConfig.of(**{**base, **kw})


class Recording(torch.nn.Module):
    """Wraps a model and keeps every input it is given."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.seen = inner, []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.inner(x)


@pytest.mark.parametrize("mix", ["none", "mixup", "cutmix"])
def test_the_teacher_sees_exactly_the_students_batch(world, tmp_path, mix, monkeypatch):
    archive, teacher = world
    teachers = Teachers()
    t = teachers.teacher(str(teacher), torch.device("cpu"))
    t.model = Recording(t.model)
    student_inputs = []
    real = OnlineBatches.__call__

    def spy(self, epoch):
        for xb, (z, y) in real(self, epoch):
            student_inputs.append(xb.clone())
            yield xb, (z, y)
    monkeypatch.setattr(OnlineBatches, "__call__", spy)
    monkeypatch.setattr(Teachers, "teacher", lambda self, *a, **k: t)
    res = train_run(online(archive, teacher, mix=mix, max_epochs=2), tmp_path / "s", teachers=teachers,
                    log=lambda s: None)
    seen = t.model.seen[:len(student_inputs)]  # then the test-set logits for the mimic metrics
    n = len(load_train_data(str(archive)).train.y)
    assert len(student_inputs) == 2 * -(-n // 32)  # every image once per epoch: a transfer set's steps
    assert all(torch.equal(a, b) for a, b in zip(seen, student_inputs))
    assert res["teacher_ms_per_step"] > 0
    rows = [json.loads(line) for line in (tmp_path / "s" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["teacher_ms_per_step"] > 0 for r in rows)


def test_online_batches_are_fresh_each_epoch_and_reproducible(world):
    archive, teacher = world
    data = load_train_data(str(archive))
    model = Teachers().teacher(str(teacher), torch.device("cpu")).model
    cfg = online(archive, teacher, mix="mixup")
    a = list(OnlineBatches(cfg, data.train, model, torch.device("cpu"))(0))
    b = list(OnlineBatches(cfg, data.train, model, torch.device("cpu"))(0))
    c = list(OnlineBatches(cfg, data.train, model, torch.device("cpu"))(1))
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1][0], q[1][0]) for p, q in zip(a, b))
    assert not torch.equal(a[0][0], c[0][0])


def test_mixup_and_cutmix_mix_within_the_batch():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(8, 3, 32, 32, generator=g)
    assert torch.equal(mix_images(x, "none", 1.0, g), x)
    m = mix_images(x, "mixup", 1.0, epoch_generator(0, 0))
    assert m.shape == x.shape and not torch.equal(m, x)
    c = mix_images(x, "cutmix", 1.0, epoch_generator(0, 0))
    changed = (c != x).any(1)  # cutmix changes a box and keeps every other pixel
    assert changed.any() and (~changed).any()
    assert torch.equal(mix_images(x, "cutmix", 1.0, epoch_generator(0, 0)), c)


def test_online_students_learn_and_record_the_teacher(world, tmp_path):
    archive, teacher = world
    res = train_run(online(archive, teacher, max_epochs=4), tmp_path / "s", log=lambda s: None)
    rows = [json.loads(line) for line in (tmp_path / "s" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert 0 <= res["mimic_agreement"] <= 1 and res["teacher_test_acc"] is not None
    _, meta = artifacts.load_checkpoint(tmp_path / "s" / "best.safetensors")
    assert meta["teacher"]["sha256"] and meta["config"]["distill_mode"] == "online"


@pytest.mark.parametrize("fields, message", [
    (dict(teacher=""), "needs --teacher"),
    (dict(transfer="x"), "not --transfer"),
    (dict(loss="ce"), "mimic loss"),
    (dict(normalize_logits=True), "normalize-logits"),
    (dict(mix="mixup", hard_weight=0.5), "hard-weight"),
    (dict(distill_mode="fixed", mix="cutmix", transfer="x"), "online distillation"),
])
def test_online_configs_that_cannot_work_are_refused_before_any_write(world, tmp_path, fields, message):
    archive, teacher = world
    with pytest.raises(ConfigError, match=message):
        train_run(online(archive, teacher, **fields), tmp_path / "s", log=lambda s: None)
    assert not (tmp_path / "s").exists()


def test_an_online_teacher_with_the_wrong_classes_or_missing_is_one_clear_error(world, tmp_path):
    archive, teacher = world
    with pytest.raises(ConfigError, match="--teacher .*nope"):
        train_run(online(archive, tmp_path / "nope"), tmp_path / "s", log=lambda s: None)
    assert not (tmp_path / "s").exists()


def _cmd(archive, teacher, out):
    return [sys.executable, "-m", "mimicnet.cli", "train", "--data", str(archive), "--family", "conv1",
            "--widths", "6,8,32", "--loss", "l2-logits", "--distill", "online", "--teacher", str(teacher),
            "--mix", "mixup", "--batch-size", "32", "--lr", "0.002", "--max-epochs", "6", "--seed", "3",
            "--device", "cpu", "--out", str(out)]


def _metrics(run):
    return [{k: r[k] for k in ("epoch", "loss", "val_acc", "lr")}
            for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


def test_a_killed_online_run_resumes_to_the_same_result(world, tmp_path):
    archive, teacher = world
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full = tmp_path / "full"
    subprocess.run(_cmd(archive, teacher, full), check=True, env=env, capture_output=True)
    cut = tmp_path / "cut"
    kill_after_epochs(_cmd(archive, teacher, cut), cut, env)
    out = subprocess.run(_cmd(archive, teacher, cut), check=True, env=env, capture_output=True, text=True)
    assert "resuming" in out.stdout
    assert _metrics(cut) == _metrics(full)
    ta, _ = artifacts.load_checkpoint(full / "best.safetensors")
    tb, _ = artifacts.load_checkpoint(cut / "best.safetensors")
    assert all(torch.equal(ta[k], tb[k]) for k in ta)


def test_bad_distill_flags_are_one_line_and_exit_2(world, tmp_path):
    archive, teacher = world
    cmd = _cmd(archive, teacher, tmp_path / "o")
    bad = cmd[:cmd.index("online")] + ["sideways"] + cmd[cmd.index("online") + 1:]
    p = subprocess.run(bad, capture_output=True, text=True)
    assert p.returncode == 2 and "distill_mode must be one of fixed, online" in p.stderr
    assert "Traceback" not in p.stderr and not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------ the modern study

def test_modern_preset_covers_every_cell_source_and_the_curve():
    from mimicnet.studies import modern as M
    from mimicnet.studies.catalog import STUDY_PRESETS
    from mimicnet.studies.fixed import check_preset, is_online
    p = STUDY_PRESETS["modern"]
    check_preset(p)
    check_preset(STUDY_PRESETS["modern-smoke"])
    names = {a.name for a in p.arms}
    for b in M.BUDGETS:
        for f in M.FAMILIES:
            assert {M.arm_name(f, b, s) for s in M.SOURCES} <= names
            n = count_params(f, M.WIDTHS[f, b])
            assert abs(n - b) / b < 0.02, (f, b, n)  # the cpu budgets
    online_arms = [a for a in p.arms if is_online(a)]
    assert len(online_arms) == 20 + 2 * len(M.PLAIN_CELLS)
    assert sum(a.train.get("mix") == "mixup" for a in online_arms) == 20
    assert {a.teacher for a in online_arms} == {M.S2, M.MODERN}
    assert all(p.teachers[t].get("label_smoothing", p.teacher_base.get("label_smoothing")) == 0.0 for t in p.teachers)
    assert {a.teacher for a in p.arms if a.model == M.cell_name(*M.CURVE_CELL) and a.teacher} == \
        {M.S2, M.MODERN, *(M.curve_teacher(e) for e in M.CURVE_EPOCHS)}


def test_modern_study_runs_online_arms_without_a_transfer_set_and_reports(tmp_path):
    """A trimmed modern-smoke (two cells, every source, one curve arm): online arms get their teacher's folder
    in their config and no transfer set is made for a teacher only online arms use; the report has the
    study's own table and figure."""
    import dataclasses
    from mimicnet.report.study import build_study_report
    from mimicnet.studies import modern as M
    from mimicnet.studies.catalog import STUDY_PRESETS
    from mimicnet.studies.fixed import run_study
    smoke = STUDY_PRESETS["modern-smoke"]
    keep = {M.cell_name("conv0", 100_000), M.cell_name("conv1", 100_000)}
    curve = M.arm_name(*M.CURVE_CELL, (M.curve_teacher(M.CURVE_EPOCHS[-1]), "fixed"))
    arms = [a for a in smoke.arms if a.model in keep and a.name != curve] + [a for a in smoke.arms if a.name == curve]
    online_only = "airbench-online-only"
    teachers = {k: v for k, v in smoke.teachers.items() if k in ("S2 t0", "S2 t1", M.MODERN,
                                                                    M.curve_teacher(M.CURVE_EPOCHS[-1]))}
    teachers[online_only] = dict(teachers[M.MODERN], seed=1)
    online_arm = next(a for a in arms if a.name == M.arm_name("conv0", 100_000, (M.MODERN, M.ONLINE)))
    arms.append(dataclasses.replace(online_arm, name="online only", teacher=online_only))
    archive = write_archive(tmp_path / "a.tar.gz", n_train=300, n_test=60)
    p = dataclasses.replace(smoke, data=str(archive), device="cpu", max_train=200, teachers=teachers, arms=arms)
    rec = run_study(p, tmp_path / "out")
    out = tmp_path / "out"
    # an online arm runs every seed at the rate its fixed-set twin chose on validation (shared_lrs)
    twin = M.arm_name("conv0", 100_000, (M.MODERN, "fixed"))
    online_name = M.arm_name("conv0", 100_000, (M.MODERN, M.ONLINE))
    assert p.shared_lrs[online_name] == twin
    lr = rec["chosen_lr"][twin]
    assert rec["chosen_lr"][online_name] == lr
    from mimicnet.studies.fixed import build_tables, slug
    assert sorted(d.name for d in (out / "arms" / slug(online_name)).iterdir()) == [f"lr{lr:g}-s0", f"lr{lr:g}-s1"]
    assert {r.name: r for r in build_tables(out, p)}[online_name].lr == lr
    assert not (out / "transfer" / "airbench-online-only").exists()
    cfg = json.loads((out / "arms" / "online-only" / "lr0.01-s0" / "config.json").read_text())["config"]
    assert cfg["distill_mode"] == "online" and cfg["teacher"].endswith("teachers/airbench-online-only")
    assert "transfer" not in cfg or cfg["transfer"] == ""
    res = json.loads((out / "arms" / "online-only" / "lr0.01-s0" / "results.json").read_text())
    assert res["teacher_ms_per_step"] > 0
    html = build_study_report(out, p)
    assert (out / "report" / "figure2.png").exists() and "Teacher → student" in (out / "report" / "table2.md").read_text()
    text = html.read_text()
    assert "Students by depth and by teacher" in text and "online mixup, airbench" in text


def test_a_fixed_study_continues_with_more_arms_and_from_an_older_record(tmp_path):
    """More arms (like a wider lr grid) continue a study's folder; a record written when the arms were part of
    the key is continued and re-keyed; another teacher config is another study."""
    import dataclasses
    from mimicnet.studies.catalog import STUDY_PRESETS
    from mimicnet.studies.fixed import NOT_IDENTITY, _older_identity, identity
    from mimicnet.studies.main import Study
    p = STUDY_PRESETS["modern-smoke"]
    fewer = dataclasses.replace(p, arms=p.arms[:3])
    # an older record: keyed by the arms
    # (a Study writes its record once its data is checked: save() stands for that here)
    old = Study(fewer, tmp_path, "cmd", not_identity=NOT_IDENTITY, identity=_older_identity(fewer))
    old.save()
    old_key = old.record["config_hash"]
    st = Study(fewer, tmp_path, "cmd", not_identity=NOT_IDENTITY, identity=identity(fewer),
               older_identities=(_older_identity(fewer),))
    st.save()
    assert st.record["config_hash"] != old_key  # re-keyed
    more = Study(p, tmp_path, "cmd", not_identity=NOT_IDENTITY, identity=identity(p),
                 older_identities=(_older_identity(p),))
    more.save()
    assert more.record["config_hash"] == st.record["config_hash"]
    other = dataclasses.replace(p, teacher_base=dict(p.teacher_base, lr=0.123))
    with pytest.raises(ConfigError, match="another config"):
        Study(other, tmp_path, "cmd", not_identity=NOT_IDENTITY, identity=identity(other),
              older_identities=(_older_identity(other),))
