"""The Ba & Caruana (S5) and Ratusznik et al. (S6) presets: definitions, the run, resume, the report."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from mimicnet.core import artifacts
from mimicnet.core.index import read_index
from mimicnet.studies import published as P
from mimicnet.cli import main
from mimicnet.models.families import count_params
from mimicnet.studies.ba_caruana import BA_CARUANA
from mimicnet.studies.catalog import STUDY_PRESETS, preset_from_record
from mimicnet.studies.fixed import Arm, Row, build_tables, check_preset, model_widths, study_claims
from mimicnet.studies.ratusznik import RATUSZNIK
from mimicnet.studies.fixed import slug as _slug
from mimicnet.core.errors import ConfigError
from mimicnet.models.checkpoint import model_from_checkpoint

from synth import write_archive


def test_presets_are_the_papers_studies():
    check_preset(BA_CARUANA)
    check_preset(RATUSZNIK)
    # Ba & Caruana: 4 teachers, an ensemble of all 4, SNN students on L2 logits / L2 probs / KL / labels
    assert len(BA_CARUANA.teachers) == 4 and BA_CARUANA.ensembles["ensemble of 4"].size == 4
    losses = {(a.teacher, a.train.get("loss"), a.train.get("normalize_logits", False)) for a in BA_CARUANA.arms}
    assert {("", "ce", False), ("ensemble of 4", "l2-logits", False), ("ensemble of 4", "l2-logits", True),
            ("ensemble of 4", "l2-probs", False), ("ensemble of 4", "kl", False)} <= losses
    assert {BA_CARUANA.models[a.model].family for a in BA_CARUANA.arms} == {"snn"}
    assert BA_CARUANA.teacher_base["preprocess"] == "gcn-zca" == BA_CARUANA.student_base["preprocess"]
    # Ratusznik: each of the 5 students without distillation and distilled from each of the 2 teachers
    for s in P.RATUSZNIK_STUDENTS:
        arms = [a for a in RATUSZNIK.arms if a.model == s["name"]]
        assert sorted(a.teacher for a in arms) == ["", "Deep-ResNet", "Teacher-1"]
        assert {a.train["loss"] for a in arms if a.teacher} == {"softmax-mse"}
    assert RATUSZNIK.student_base["optimizer"] == "adam" and RATUSZNIK.student_base["batchnorm"]
    assert RATUSZNIK.teachers["Teacher-1"]["dropout"] == (0.2, 0.3, 0.37, 0.0, 0.42)
    # every student at the preset's budget through the one parameter counter
    for name in RATUSZNIK.models:
        ws = model_widths(RATUSZNIK, name, batchnorm=True)
        n = count_params(RATUSZNIK.models[name].family, ws, batchnorm=True)
        assert abs(n - RATUSZNIK.budget) / RATUSZNIK.budget < 0.03, (name, ws, n)


def test_check_preset_names_the_problem():
    bad = BA_CARUANA.arms + [Arm("x", "no such model")]
    with pytest.raises(ConfigError, match="unknown model 'no such model'"):
        check_preset(STUDY_PRESETS["ba-caruana"].__class__(**{**BA_CARUANA.__dict__, "arms": bad}))
    bad = [Arm("y", BA_CARUANA.arms[0].model, "nobody", {"loss": "kl"})]
    with pytest.raises(ConfigError, match="unknown teacher 'nobody'"):
        check_preset(BA_CARUANA.__class__(**{**BA_CARUANA.__dict__, "arms": bad}))
    bad = [Arm("z", BA_CARUANA.arms[0].model, "ensemble of 4", {"loss": "ce"})]
    with pytest.raises(ConfigError, match="needs a mimic loss"):
        check_preset(BA_CARUANA.__class__(**{**BA_CARUANA.__dict__, "arms": bad}))
    bad = [Arm("w", BA_CARUANA.arms[0].model, "", {"loss": "ce", "momentun": 0.9})]
    with pytest.raises(ConfigError, match="arm 'w': unknown config field.*momentun"):
        check_preset(BA_CARUANA.__class__(**{**BA_CARUANA.__dict__, "arms": bad}))


def _cmd(preset, archive, out):
    return [sys.executable, "-m", "mimicnet.cli", "reproduce", "--preset", preset, "--data", str(archive),
            "--out", str(out), "--device", "cpu"]


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return write_archive(tmp_path_factory.mktemp("st") / "a.tar.gz", n_train=500, n_test=100)


def test_ba_caruana_smoke_end_to_end_resume_and_report(archive, tmp_path):
    out = tmp_path / "ba"
    # kill it once the first arm run is done, then run the same command again
    proc = subprocess.Popen(_cmd("ba-caruana-smoke", archive, out), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    first = out / "arms" / "hard-labels-snn-30k" / "lr0.003-s0" / "results.json"
    while time.time() < deadline and not first.exists():
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = json.loads(first.read_text())
    r = subprocess.run(_cmd("ba-caruana-smoke", archive, out), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(first.read_text()) == done                     # not trained again
    rows = read_index(out / "index.csv")
    p = STUDY_PRESETS["ba-caruana-smoke"]
    # every arm: seed 0 at each lr, then the other seed once, at one lr; nothing duplicated by the resume
    for a in p.arms:
        mine = [x for x in rows if x["study"] == a.name]
        assert len(mine) == len(a.lrs or p.lrs) + len(p.seeds) - 1, a.name  # failed runs have a row too
        assert all(x["kind"] == ("baseline" if not a.teacher else "student") for x in mine)
    assert len([x for x in rows if x["kind"] == "teacher"]) == 4
    assert len([x for x in rows if x["kind"] == "ensemble"]) == 2
    # the student mimicked the ensemble's transfer set; its ZCA was fitted on the training split
    run = out / "arms" / "l2-on-logits-ensemble-snn-ecnn-mimic" / "lr0.003-s0"
    res = json.loads((run / "results.json").read_text())
    assert res["teacher"].endswith("ensembles/ensemble-of-4")
    _, zmeta = artifacts.load_checkpoint(run / "zca.safetensors")
    assert zmeta["fitted_on"] == "train"
    # tables: the chosen lr is the best on validation of the first seed, and its seeds are the ones reported
    tables = {t.name: t for t in build_tables(out, p)}
    for a in p.arms:
        t = tables[a.name]
        seed0 = {}
        for lr in a.lrs or p.lrs:
            run = out / "arms" / _slug(a.name) / f"lr{lr:g}-s0"
            if (run / "failed.json").exists():  # diverged (1-epoch teachers, tiny nets): never chosen
                assert any(x["status"] == "failed" and x["path"] == str(run) for x in rows)
                continue
            seed0[lr] = json.loads((run / "results.json").read_text())["val_acc"]
        assert t.lr == max(seed0, key=lambda lr: (seed0[lr], -list(seed0).index(lr)))
        assert (out / "arms" / _slug(a.name) / f"lr{t.lr:g}-s1" / "results.json").exists()
        chose = json.loads((out / "arms" / _slug(a.name) / f"lr{t.lr:g}-s0" / "results.json").read_text())
        if len(a.lrs or p.lrs) > 1:  # the run that chose the rate won a selection: it is set aside, not averaged
            assert t.seeds == [1] and len(t.tests) == 1 and t.selection == [pytest.approx(100 * chose["test_acc"])]
        else:
            assert t.seeds == [0, 1] and len(t.tests) == 2 and t.selection == []
    assert tables["ensemble of 4"].paper == 89.0 and tables["hard labels (SNN-30k)"].paper == 78.2
    for name in ("results.txt", "report/report.html", "report/table.md", "report/table.csv", "report/table.tex",
                 "report/figure.png"):
        assert (out / name).exists(), name
    html = (out / "report" / "report.html").read_text()
    assert "claims, checked" in html and "SNN-ECNN-MIMIC" in html and "85.80" in html
    # the report rebuilds from the folder alone, and the stored preset round-trips
    rec = json.loads((out / "reproduce.json").read_text())
    back = preset_from_record(rec)
    assert list(back.arms) == list(p.arms) and artifacts.to_jsonable(back) == rec["config"]
    assert main(["report", str(out)]) == 0
    # a third run has nothing left to do
    before = (out / "index.csv").read_text()
    assert subprocess.run(_cmd("ba-caruana-smoke", archive, out), capture_output=True, timeout=300).returncode == 0
    assert (out / "index.csv").read_text() == before


def test_ratusznik_smoke_runs_every_arm(archive, tmp_path):
    out = tmp_path / "rat"
    assert main(_cmd("ratusznik-smoke", archive, out)[3:]) == 0
    p = STUDY_PRESETS["ratusznik-smoke"]
    tables = {t.name: t for t in build_tables(out, p)}
    assert all(len(tables[a.name].tests) == len(p.seeds) for a in p.arms)
    assert tables["Teacher-1"].model.startswith("4c²-mp-7c²-mp-9c⁴") and tables["Deep-ResNet"].tests
    # the deep linear net both ways: with ReLUs (their §4.6) and without any activation
    assert tables["Deep-linear (ReLU), no distillation"].model.startswith("5fc⁸")
    assert tables["Deep-linear (no activation), no distillation"].model.startswith("5lin⁸")
    # a distilled student's results name its teacher and its agreement with it
    rows = [r for r in read_index(out / "index.csv") if r["loss"] == "softmax-mse"]
    assert rows and all(r["teacher"] and r["mimic_agreement"] != "" for r in rows)
    assert "Shallow-ResNet" in (out / "report" / "table.md").read_text()


def test_fold_command_writes_a_checkpoint_with_the_same_outputs(archive, tmp_path):
    run = tmp_path / "snn"
    assert main(["train", "--data", str(archive), "--family", "snn", "--widths", "4,16,64", "--max-epochs", "1",
                 "--schedule", "onecycle", "--device", "cpu", "--out", str(run)]) == 0
    out = tmp_path / "folded.safetensors"
    assert main(["model", "fold", str(run), "--out", str(out)]) == 0
    a, _ = model_from_checkpoint(run)
    b, meta = model_from_checkpoint(out)
    assert meta["folded"] and meta["params"] == count_params(b) and meta["params_unfolded"] == count_params(a)
    assert "lfc" not in dict(b.named_children())
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(a.eval()(x), b.eval()(x), atol=1e-4, rtol=1e-4)
    assert main(["evaluate", str(out), "--data", str(archive)]) == 0
    # a family without a bottleneck: one line, exit 2
    run2 = tmp_path / "c2"
    assert main(["train", "--data", str(archive), "--family", "conv2", "--widths", "4,4,8", "--max-epochs", "1",
                 "--schedule", "onecycle", "--device", "cpu", "--out", str(run2)]) == 0
    assert main(["model", "fold", str(run2), "--out", str(tmp_path / "x.safetensors")]) == 2
    assert not (tmp_path / "x.safetensors").exists()


def test_features_study_on_an_npz_end_to_end(archive, tmp_path):
    """Ba & Caruana's TIMIT recipe on any .npz: deep MLP teachers, their ensemble, shallow bottleneck mimics
    labelled directly on x_transfer, the same tables and report."""
    npz = tmp_path / "f.npz"
    assert main(["features", "make-npz", "--from", str(archive), "--out", str(npz), "--size", "4",
                 "--transfer-mirror"]) == 0
    out = tmp_path / "feat"
    assert main(["reproduce", "--preset", "features-smoke", "--data", str(npz), "--out", str(out),
                 "--device", "cpu"]) == 0
    p = STUDY_PRESETS["features-smoke"]
    rows = read_index(out / "index.csv")
    students = [r for r in rows if r["kind"] == "student" and r["status"] != "failed"]
    assert students and all(r["teacher"].endswith(("ensemble-of-3", "best-single-mlp")) for r in students)
    assert all(r["mimic_agreement"] != "" and r["teacher_test_acc"] != "" for r in students)
    assert {r["family"] for r in students} == {"mlp_lin"} and not (out / "transfer").exists()
    tables = {t.name: t for t in build_tables(out, p)}
    assert all(tables[a.name].tests for a in p.arms if a.name != "L2 on probabilities, ensemble")
    assert (out / "report" / "report.html").exists()
    # images are not features: the preset says what it needs
    assert main(["reproduce", "--preset", "features-smoke", "--data", str(archive), "--out",
                 str(tmp_path / "x"), "--device", "cpu"]) == 2


def test_claims_name_their_rows_whatever_order_the_record_keeps():
    """reproduce.json is written with sorted keys, so its ensembles come back alphabetically ('best single
    CNN' first): the claims must still compare the ensemble of 4, found by name, never by position."""
    rec = json.loads(json.dumps({"preset": "ba-caruana", "config": artifacts.to_jsonable(BA_CARUANA)},
                                sort_keys=True))
    for old_field in ("study", "inputs"):   # a record written before presets named their study
        del rec["config"][old_field]
    p = preset_from_record(rec)             # a known preset gets its order back (the table's row order)
    assert list(p.ensembles) == ["ensemble of 4", "best single CNN"] and p.study == "ba-caruana"
    rec["config"].update(name="my-ba-caruana", study="ba-caruana")   # a user's variant: no order to restore
    p = preset_from_record(rec)
    assert next(iter(p.ensembles)) == "best single CNN"
    rows = [Row("teacher", "CNN 0", tests=[67.9], vals=[66.0]), Row("teacher", "CNN 1", tests=[66.0], vals=[65.0]),
            Row("ensemble", "best single CNN", tests=[67.9], vals=[66.0]),
            Row("ensemble", "ensemble of 4", tests=[71.4], vals=[70.0])]
    first = study_claims(p, rows)[0]
    assert first["claim"] == "the ensemble of 4 beats its best single teacher"
    assert first["ours"].startswith("vs its best member by validation (CNN 0, 67.9) and that config's 2 seeds "
                                    "+4.45 (71.40 vs 66.95, n 1/2, p 0.225")
    # one ensemble against two seeds: t = 4.45 / (1.34 * sqrt(1 + 1/2)) = 2.71 on 1 df, p 0.225 (the old rule,
    # 4.45 > 2 SE = 3.29, called it real)
    assert first["verdict"] in ("too few seeds", "within noise")
    assert study_claims(STUDY_PRESETS["ratusznik-smoke"], rows)[0]["verdict"] == "not measured"


def test_transfer_hsv_is_the_best_teachers_by_validation(tmp_path):
    """The transfer set's HSV ranges come from the teacher with the best validation accuracy (Urban et al.
    §2.5), named; an unreadable teacher is passed over; none readable: S1's ranges, and no name."""
    from mimicnet.core import artifacts
    from mimicnet.distill.transfer import TransferConfig
    from mimicnet.studies.main import best_teacher_hsv
    from mimicnet.train.config import TrainConfig
    dirs = []
    for name, val, dh in (("t0", 0.60, 0.01), ("t1", 0.70, 0.02), ("t2", 0.65, 0.03)):
        d = tmp_path / name
        d.mkdir()
        artifacts.write_json(d / "results.json", {"val_acc": val})
        artifacts.write_json(d / "config.json", {"config": TrainConfig.of(dh=dh).to_dict()})
        dirs.append(d)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "results.json").write_text("{")
    hsv, src = best_teacher_hsv([tmp_path / "broken", *dirs])
    assert src == "t1" and hsv[0] == 0.02
    assert best_teacher_hsv([tmp_path / "broken"]) == (tuple(TransferConfig.hsv), None)
