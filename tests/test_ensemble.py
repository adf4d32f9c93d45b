"""Ensembles: Caruana selection on hand-made logits, the averaged module, and a real (tiny) end-to-end build."""
from __future__ import annotations

import argparse
import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from mimicnet.core import artifacts
from mimicnet.core.index import read_index
from mimicnet.cli import ensemble as cli_ensemble
from mimicnet.distill import ensemble
from mimicnet.core.artifacts import CheckpointError
from mimicnet.distill.ensemble import Ensemble, build_ensemble, combine, load_ensemble, load_teacher, select
from mimicnet.models.families import build_model
from mimicnet.core.errors import ConfigError
from mimicnet.train.config import TrainConfig
from mimicnet.train.loop import fit
from mimicnet.data.splits import load_train_data
from mimicnet.models.checkpoint import model_from_checkpoint
from mimicnet.models.inference import predict_logits

from synth import write_archive


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------- selection

def margin_logits(margins):
    """Two classes, every true label 0: a positive margin is a correct prediction, and the averaged
    prediction is correct exactly when the (weighted) sum of margins is positive."""
    m = torch.tensor(margins, dtype=torch.float32)
    return torch.stack((m / 2, -m / 2), dim=1)


# A is the best single model (6/8), C the second best (5/8), B the worst (4/8). But B is right exactly where
# A is wrong or unsure: A+B gets 7/8 (A+C only 6/8), and 2A+B -- A picked a second time -- gets 8/8.
A = [1, 3, 5, -1, 5, 4, 4, -1]
B = [1, -2, -3, 3, 2, -1, -5, 5]
C = [1, 2, 1, -3, 3, -5, -1, 2]
Y8 = torch.zeros(8, dtype=torch.long)


def test_greedy_prefers_a_complementary_member_and_repeats_one_when_that_helps():
    z = [margin_logits(v) for v in (A, B, C)]
    assert select(z, Y8, "greedy", size=1) == [1, 0, 0]          # step 1: the best single model
    assert select(z, Y8, "greedy", size=2) == [1, 1, 0]          # step 2: B, not the second-best C
    assert select(z, Y8, "greedy", size=3) == [2, 1, 0]          # step 3: A again
    # later steps cannot beat 8/8, so the best prefix (the shorter one on ties) stays the answer
    assert select(z, Y8, "greedy", size=10) == [2, 1, 0]
    ens = combine(z, [2, 1, 0])
    assert (ens.argmax(1) == Y8).all()
    # topk ignores complementarity: the two best singles
    assert select(z, Y8, "topk", size=2) == [1, 0, 1]
    assert select(z, Y8, "topk", size=9) == [1, 1, 1]          # fewer candidates than asked: all of them


def test_greedy_ties_go_to_lower_nll_and_to_the_shorter_prefix():
    # same accuracy (all correct), the second is more confident: lower NLL wins the tie
    z = [margin_logits([1] * 8), margin_logits([4] * 8)]
    assert select(z, Y8, "greedy", size=1) == [0, 1]
    # a perfect model picked five times scores the same at every prefix: the shortest is returned
    assert select(z, Y8, "greedy", size=5) == [0, 1]
    with pytest.raises(ConfigError, match="method"):
        select(z, Y8, "bagging", size=2)
    with pytest.raises(ConfigError, match="size"):
        select(z, Y8, "greedy", size=0)


def test_ensemble_forward_is_the_weighted_mean_with_each_members_input_scale():
    torch.manual_seed(0)
    m1, m2 = build_model("conv0", (4, 16)).eval(), build_model("conv2", (4, 4, 8)).eval()
    ens = Ensemble([m1, m2], [2, 1], [1.0, 1.3]).eval()
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        want = (2 * m1(x) + m2(x * 1.3)) / 3
        assert torch.allclose(ens(x), want, atol=1e-6)
    # predict_logits with input_scale 1 standardises once; each member then applies its own scale
    xu = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    got = predict_logits(ens, xu, 1.0, torch.device("cpu"))
    want = (2 * predict_logits(m1, xu, 1.0, torch.device("cpu")) + predict_logits(m2, xu, 1.3, torch.device("cpu"))) / 3
    assert torch.allclose(got, want, atol=1e-5)


# ---------------------------------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("ens")
    archive = write_archive(d / "a.tar.gz", n_train=300, n_test=100)
    dirs = []
    for seed, scale in ((1, 1.0), (2, 1.2), (3, 0.9)):
        cfg = TrainConfig.of(family="conv2", widths=(6, 8, 24), data=str(archive), batch_size=32, lr=0.02,
                          max_epochs=2, device="cpu", seed=seed, input_scale=scale, scale_min=28)
        fit(cfg, d / f"run{seed}", log=lambda s: None)
        dirs.append(d / f"run{seed}")
    data = load_train_data(str(archive))
    return archive, dirs, data


def test_build_ensemble_end_to_end_and_rerun_is_skipped(runs, tmp_path, monkeypatch):
    archive, dirs, data = runs
    out, index = tmp_path / "ens", tmp_path / "index.csv"
    res = build_ensemble(dirs, out, data, "greedy", 5, "cpu", index=index, log=lambda s: None)

    assert (out / "ensemble.json").exists() and (out / "logits.safetensors").exists()
    assert [m["path"] for m in res["members"]] == [str((d / "best.safetensors").resolve()) for d in dirs]
    assert sum(m["weight"] for m in res["members"]) >= 1
    singles = [m["val_acc"] for m in res["members"]]
    assert res["single_best"]["val_acc"] == max(singles)
    assert res["val_acc"] >= max(singles)                 # greedy starts from the best single model
    for m, d in zip(res["members"], dirs):                # member accuracies match their own runs
        r = json.loads((d / "results.json").read_text())
        assert m["val_acc"] == pytest.approx(r["val_acc"]) and m["test_acc"] == pytest.approx(r["test_acc"])
        assert m["run_id"] == r["run_id"]
    assert res["params"] == sum(m["params"] for m in res["members"] if m["weight"] > 0)

    # the loaded module reproduces the stored ensemble logits, and they are the weighted mean of the members'
    ens, info = load_ensemble(out)
    assert info == res
    stored = load_file(str(out / "logits.safetensors"))
    got = predict_logits(ens, data.test.x, 1.0, torch.device("cpu"))
    assert torch.allclose(got, stored["test"], atol=1e-5)
    members = [(m["weight"], *model_from_checkpoint(m["path"])) for m in res["members"] if m["weight"] > 0]
    manual = sum(w * predict_logits(mod, data.test.x, meta["input_scale"], torch.device("cpu")) for w, mod, meta in members)
    assert torch.allclose(stored["test"], manual / sum(w for w, _, _ in members), atol=1e-5)
    assert res["test_acc"] == pytest.approx((stored["test"].argmax(1) == data.test.y).float().mean().item())

    rows = read_index(index)
    assert len(rows) == 1 and rows[0]["kind"] == "ensemble" and rows[0]["family"] == "ensemble"
    assert int(rows[0]["params"]) == res["params"] and float(rows[0]["val_acc"]) == pytest.approx(res["val_acc"])

    # rerun: nothing is computed again, nothing appended
    def boom(*a, **k):
        raise AssertionError("recomputed")
    monkeypatch.setattr(ensemble, "predict_logits", boom)
    assert build_ensemble(dirs, out, data, "greedy", 5, "cpu", index=index, log=lambda s: None) == res
    assert len(read_index(index)) == 1
    # without ensemble.json the member logits still come from the cache
    (out / "ensemble.json").unlink()
    again = build_ensemble(dirs, out, data, "greedy", 5, "cpu", log=lambda s: None)
    assert {k: v for k, v in again.items() if k != "code_version"} == {k: v for k, v in res.items() if k != "code_version"}
    # other inputs into the same folder: refused
    with pytest.raises(ConfigError, match="other inputs"):
        build_ensemble(dirs, out, data, "topk", 2, "cpu", log=lambda s: None)


def test_an_ensemble_is_named_by_content_wherever_it_and_its_members_live(runs, tmp_path):
    """Its run id (and its content id as a teacher: a student's run id holds it) come from its members' sha256,
    data, method and size; ensemble.json records their paths, so its own sha256 would differ elsewhere."""
    import shutil
    from mimicnet.distill.ensemble import ensemble_row, teacher_content_id
    archive, dirs, data = runs
    first = build_ensemble(dirs, tmp_path / "a" / "ens", data, "greedy", 5, "cpu", log=lambda s: None)
    copies = []
    for d in dirs:  # the members copied to another folder: the same checkpoints at other paths
        shutil.copytree(d, tmp_path / "b" / d.name)
        copies.append(tmp_path / "b" / d.name)
    second = build_ensemble(copies, tmp_path / "b" / "ens", data, "greedy", 5, "cpu", log=lambda s: None)
    assert first["members"][0]["path"] != second["members"][0]["path"]
    assert (tmp_path / "a" / "ens" / "ensemble.json").read_bytes() != (tmp_path / "b" / "ens" / "ensemble.json").read_bytes()
    assert ensemble_row(first, tmp_path / "a" / "ens").run_id == ensemble_row(second, tmp_path / "b" / "ens").run_id
    assert teacher_content_id(tmp_path / "a" / "ens") == teacher_content_id(tmp_path / "b" / "ens")
    top = build_ensemble(dirs, tmp_path / "top", data, "topk", 2, "cpu", log=lambda s: None)
    assert ensemble_row(top, tmp_path / "top").run_id != ensemble_row(first, tmp_path / "a" / "ens").run_id
    assert teacher_content_id(dirs[0]) == json.loads((dirs[0] / "results.json").read_text())["best_sha256"]


def test_topk_and_single_run_teacher(runs, tmp_path):
    archive, dirs, data = runs
    res = build_ensemble(dirs, tmp_path / "top", data, "topk", 2, "cpu", log=lambda s: None)
    assert sorted(m["weight"] for m in res["members"]) == [0, 1, 1]
    best2 = sorted(res["members"], key=lambda m: -m["val_acc"])[:2]
    assert all(m["weight"] == 1 for m in best2) or best2[0]["val_acc"] == best2[1]["val_acc"]
    # a single run is a teacher too: an ensemble of one, with the run's own accuracy
    t, info = load_teacher(dirs[1])
    assert info["kind"] == "run" and len(t.members) == 1 and t.input_scales == [1.2]
    ref, meta = model_from_checkpoint(dirs[1])
    assert torch.equal(predict_logits(t, data.val.x, 1.0, torch.device("cpu")),
                       predict_logits(ref, data.val.x, meta["input_scale"], torch.device("cpu")))
    t2, info2 = load_teacher(tmp_path / "top")
    assert info2["kind"] == "ensemble" and info2["val_acc"] == res["val_acc"] and len(t2.members) == 2


def test_bad_members_are_one_line_errors(runs, tmp_path):
    archive, dirs, data = runs
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        build_ensemble([tmp_path / "nothing"], tmp_path / "e", data, log=lambda s: None)
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "best.safetensors").write_bytes((dirs[0] / "best.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="not finished"):
        build_ensemble([unfinished], tmp_path / "e", data, log=lambda s: None)
    other = load_train_data(str(write_archive(tmp_path / "o.tar.gz", n_train=100, n_test=20, seed=7)))
    with pytest.raises(ConfigError, match="trained on other data") as e:
        build_ensemble(dirs, tmp_path / "e", other, log=lambda s: None)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="given twice"):
        build_ensemble([dirs[0], dirs[0]], tmp_path / "e", data, log=lambda s: None)
    # a member that changed after the build is refused when the ensemble is loaded
    res_dir = tmp_path / "ens"
    build_ensemble(dirs[:1], res_dir, data, "greedy", 1, "cpu", log=lambda s: None)
    info = json.loads((res_dir / "ensemble.json").read_text())
    info["members"][0]["sha256"] = "0" * 64
    (res_dir / "ensemble.json").write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="changed since"):
        load_ensemble(res_dir)


def test_cli_prints_the_table(runs, tmp_path, capsys):
    archive, dirs, data = runs
    p = argparse.ArgumentParser()
    cli_ensemble.register(p.add_subparsers(dest="command"))
    args = p.parse_args(["ensemble", *map(str, dirs), "--data", str(archive), "--out", str(tmp_path / "e"),
                         "--method", "greedy", "--size", "3", "--device", "cpu"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "single best" in out and "ensemble (greedy" in out and out.count("run") >= 3


@pytest.mark.parametrize("method", ["greedy", "topk"])
def test_permuting_the_test_labels_changes_no_member(runs, tmp_path, method):
    """Members are chosen on validation only: the same runs with their test labels shuffled give the same
    members and weights (and another test accuracy, so the shuffle did reach the test set)."""
    _, dirs, data = runs
    a = build_ensemble(dirs, tmp_path / "a", data, method, 2, "cpu", log=lambda s: None)
    perm = torch.randperm(len(data.test.y), generator=torch.Generator().manual_seed(0))
    shuffled = dataclasses.replace(data, test=dataclasses.replace(data.test, y=data.test.y[perm]))
    b = build_ensemble(dirs, tmp_path / "b", shuffled, method, 2, "cpu", log=lambda s: None)
    assert [m["weight"] for m in a["members"]] == [m["weight"] for m in b["members"]]
    assert a["val_acc"] == b["val_acc"]
    assert [m["test_acc"] for m in a["members"]] != [m["test_acc"] for m in b["members"]]
