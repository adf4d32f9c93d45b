"""`mimicnet evaluate RESULTS_DIR --data ARCHIVE`: every run of a results folder on another test set (issue
#13), and CIFAR-10.1's .npy pair as a test set. A tiny results folder (two 1-epoch runs, a failed row, an
ensemble of the two) is scored on a .npy pair holding its own test images, so every new accuracy must equal
the reported one exactly."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mimicnet.cli import main
from mimicnet.core.errors import UserError
from mimicnet.core.index import IndexRow, RunKind, append_index, read_index
from mimicnet.data.cifar import load_cifar
from mimicnet.data.cifar101 import load_npy_pair, load_test_source
from mimicnet.data.splits import load_train_data
from mimicnet.distill.ensemble import build_ensemble
from mimicnet.report.evaluate import EvaluateError, evaluate_results, read_run_index, results_table
from mimicnet.train.config import TrainConfig
from mimicnet.train.loop import fit
from mimicnet.train.run import RunInfo

from synth import synth_images, write_archive

pytestmark = pytest.mark.usefixtures("one_thread")

N_TEST = 60


def _cfg(archive, family, widths, seed):
    return TrainConfig.of(family=family, widths=widths, data=str(archive), batch_size=32, lr=0.02, momentum=0.9,
                          max_epochs=1, schedule="onecycle", device="cpu", seed=seed, scale_min=32)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """(archive, results folder, .npy data path): two runs, one failed row and an ensemble, in one index."""
    d = tmp_path_factory.mktemp("ev")
    archive = write_archive(d / "a.tar.gz", n_train=200, n_test=N_TEST, seed=4)
    res = d / "results"
    index = res / "index.csv"
    data = load_train_data(archive)
    quiet = lambda s: None  # noqa: E731
    runs = [res / "teachers" / "t0", res / "students" / "conv2-s1"]
    fit(_cfg(archive, "conv1", (6, 8, 16), 1), runs[0], data, info=RunInfo(kind=RunKind.TEACHER), index=index,
        log=quiet)
    fit(_cfg(archive, "conv2", (4, 8, 16), 2), runs[1], data, index=index, log=quiet)
    append_index(index, IndexRow(kind="baseline", family="conv3", budget=30_000, status="failed",
                                 path=str(res / "students" / "broken")))
    build_ensemble(runs, res / "ensembles" / "e2", data, method="topk", size=2, index=index, log=quiet)
    # the same test images as a CIFAR-10.1-style pair: uint8 N×32×32×3 (channels last), int64 labels
    x, y = synth_images(N_TEST, 5)
    npy = d / "npy"
    npy.mkdir()
    np.save(npy / "cifar10.1_v6_data.npy", x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy())
    np.save(npy / "cifar10.1_v6_labels.npy", np.array(y, dtype=np.int64))
    return archive, res, npy / "cifar10.1_v6_data.npy"


def test_npy_pair_reads_as_the_archive_test_split(results):
    archive, _, data_npy = results
    c = load_cifar(archive)
    for given in (data_npy, data_npy.with_name("cifar10.1_v6_labels.npy"), data_npy.parent):
        d = load_test_source(given)
        assert d.x_train is None and d.x_test.shape == (N_TEST, 3, 32, 32) and d.x_test.dtype == c.x_test.dtype
        assert (d.x_test == c.x_test).all() and (d.y_test == c.y_test).all()
        assert len(d.sha256) == 64 and d.source == str(data_npy.resolve())
    assert load_test_source(archive).sha256 == c.sha256   # CIFAR archives are read as before


def test_results_folder_scores_every_finished_run_as_reported(results, tmp_path, capsys):
    _, res, data_npy = results
    out = tmp_path / "ev.json"
    assert main(["evaluate", str(res), "--data", str(data_npy), "--json", str(out), "--device", "cpu"]) == 0
    table = capsys.readouterr().out
    print(table)
    rows = {r["path"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"teachers/t0", "students/conv2-s1", "ensembles/e2"}
    assert [rows[p]["kind"] for p in ("teachers/t0", "students/conv2-s1", "ensembles/e2")] == \
        ["teacher", "baseline", "ensemble"]
    index = {r["path"]: r for r in read_index(res / "index.csv")}
    for path, r in rows.items():
        # the same images and labels as the archive's test batch: the new accuracy is the reported one
        assert r["accuracy"] == pytest.approx(float(index[str(res / path)]["test_acc"]), abs=1e-12), path
        assert r["difference"] == pytest.approx(0.0, abs=1e-12)
    assert rows["ensembles/e2"]["members"] == 2 and rows["teachers/t0"]["family"] == "conv1"
    doc = json.loads(out.read_text())
    assert doc["n"] == N_TEST and doc["split"] == "test" and doc["code_version"] and len(doc["data_sha256"]) == 64
    assert doc["data_sha256"] == load_npy_pair(data_npy).sha256
    assert [s["reason"] for s in doc["skipped"]] == ["status failed"]
    # the table: a header, one line per run with reported, new and difference, the skipped row named
    lines = table.splitlines()
    assert lines[1].split()[:4] == ["run", "kind", "family", "budget"]
    t0 = next(l for l in lines if l.startswith("teachers/t0"))
    rep = f"{100 * rows['teachers/t0']['accuracy']:.2f}"
    assert t0.split()[1:3] == ["teacher", "conv1"] and t0.split()[-3:] == [rep, rep, "+0.00"]
    assert any(l.startswith("skipped ") and "broken" in l and "status failed" in l for l in lines)
    # a budgeted run shows its budget beside its parameters; no reported accuracy is a dash, not a number
    row = {**rows["students/conv2-s1"], "budget": 1_000_000, "params": 998_765, "reported_test_acc": None,
           "difference": None}
    assert results_table({"rows": [row], "skipped": []}, "new").splitlines()[2].split()[3:] == \
        ["1M", "/", "998,765", "—", f"{100 * row['accuracy']:.2f}", "—"]


def _absolute_index(folder, old):
    """Rewrite folder/index.csv with every path absolute, under `old` (as older versions wrote them)."""
    rows = read_index(folder / "index.csv")  # paths come back usable: absolute
    header = (folder / "index.csv").read_text().split("\n", 1)[0].split(",")
    with open(folder / "index.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({**r, "path": str(old / Path(r["path"]).relative_to(folder)) if r["path"] else ""})


def test_moved_results_folder_is_found_under_its_new_place(results, tmp_path):
    archive, res, _ = results
    data = load_cifar(archive)
    before = evaluate_results(res, data.x_test, data.y_test)
    moved = tmp_path / "elsewhere" / "results"
    shutil.copytree(res, moved)
    # the index names the runs by the absolute paths they had in a folder that is gone (and the ensemble's
    # members are absolute paths under `res`, hidden below)
    _absolute_index(moved, tmp_path / "gone" / "results")
    hidden = tmp_path / "hidden"
    res.rename(hidden)
    try:
        r = evaluate_results(moved, data.x_test, data.y_test)
    finally:
        hidden.rename(res)
    assert [x["path"] for x in r["rows"]] == ["teachers/t0", "students/conv2-s1", "ensembles/e2"]
    assert all(x["checkpoint"].startswith(str(moved.resolve())) for x in r["rows"])
    assert [x["accuracy"] for x in r["rows"]] == [x["accuracy"] for x in before["rows"]]
    assert [x["path"] for x in r["skipped"]] == [str(tmp_path / "gone" / "results" / "students" / "broken")]
    # paths relative to the index folder work too
    rel = tmp_path / "rel"
    shutil.copytree(res, rel)
    text = (rel / "index.csv").read_text()
    (rel / "index.csv").write_text(text.replace(str(res) + "/", ""))
    r = evaluate_results(rel, data.x_test, data.y_test)
    assert [x["path"] for x in r["rows"]] == ["teachers/t0", "students/conv2-s1", "ensembles/e2"]
    assert all(x["checkpoint"].startswith(str(rel.resolve())) for x in r["rows"][:2])


def test_single_checkpoint_mode_still_works_and_takes_the_npy_pair(results, tmp_path, capsys):
    archive, res, data_npy = results
    run = res / "teachers" / "t0"
    for data in (archive, data_npy):
        out = tmp_path / "one.json"
        assert main(["evaluate", str(run), "--data", str(data), "--json", str(out), "--device", "cpu"]) == 0
        assert f"({N_TEST} images)" in capsys.readouterr().out
        assert json.loads(out.read_text())["family"] == "conv1"
    # a folder that is neither kind
    _one_line_error(["evaluate", tmp_path, "--data", archive], capsys, str(tmp_path), "neither a results folder")
    # the .npy pair is a test set only
    assert main(["evaluate", str(run), "--data", str(data_npy), "--split", "val"]) == 2
    assert "split 'val' is not available" in capsys.readouterr().err


def _one_line_error(argv, capsys, *phrases):
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(p in err[0] for p in phrases), err
    return err[0]


def test_json_to_a_folder_is_one_line_in_both_modes(results, tmp_path):
    archive, res, _ = results
    for target in (res, res / "teachers" / "t0"):
        r = subprocess.run([sys.executable, "-m", "mimicnet.cli", "evaluate", str(target), "--data", str(archive),
                            "--json", str(tmp_path)], capture_output=True, text=True)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and str(tmp_path) in lines[0] and "is a folder" in lines[0], lines


def test_bad_npy_pairs_are_one_line_naming_the_file(results, tmp_path, capsys):
    _, res, data_npy = results
    x = np.load(data_npy)
    y = np.load(data_npy.with_name("cifar10.1_v6_labels.npy"))

    def pair(name, xs, ys):
        d = tmp_path / name
        d.mkdir()
        if xs is not None:
            np.save(d / "set_data.npy", xs)
        if ys is not None:
            np.save(d / "set_labels.npy", ys)
        return d / "set_data.npy"

    cases = [
        (pair("nolabels", x, None), "set_labels.npy", "no such file"),
        (pair("short", x, y[:-1]), "set_labels.npy", f"{N_TEST - 1} labels for the {N_TEST} images"),
        (pair("chw", x.transpose(0, 3, 1, 2), y), "set_data.npy", "expected (N, 32, 32, 3)"),
        (pair("float", x.astype(np.float32) / 255, y), "set_data.npy", "dtype float32"),
        (pair("floatlabels", x, y.astype(np.float64)), "set_labels.npy", "expected integers"),
        (pair("range", x, y + 5), "set_labels.npy", "outside 0..9"),
        (pair("objects", x, np.array([None] * N_TEST, dtype=object)), "set_labels.npy", "Python objects"),
    ]
    for data, file, phrase in cases:
        _one_line_error(["evaluate", res, "--data", data], capsys, file, phrase)
    # the labels file given, its data file missing
    labels_only = pair("nodata", None, y).with_name("set_labels.npy")
    _one_line_error(["evaluate", res, "--data", labels_only], capsys, "set_data.npy", "no such file",
                    "needed beside set_labels.npy")
    garbage = tmp_path / "garbage_data.npy"
    garbage.write_bytes(b"not numpy at all")
    np.save(tmp_path / "garbage_labels.npy", y)
    _one_line_error(["evaluate", res, "--data", garbage], capsys, "garbage_data.npy", "not a readable .npy")
    # a folder of two sets: which one is meant is not guessed
    two = pair("two", x, y).parent
    np.save(two / "other_data.npy", x)
    np.save(two / "other_labels.npy", y)
    _one_line_error(["evaluate", res, "--data", two], capsys, str(two), "several .npy test sets")


def test_damaged_or_empty_index_is_one_line(results, tmp_path, capsys):
    archive, res, _ = results
    good = (res / "index.csv").read_text()
    cases = {
        "cut": good.rstrip("\n").rsplit(",", 5)[0] + "\n",   # the last row cut short
        "header": "a,b,c\n1,2,3\n",
        "binary": b"kind,path\n\xff\xfe\x80,x\n",
        "empty": "",
    }
    for name, text in cases.items():
        d = tmp_path / name
        d.mkdir()
        (d / "index.csv").write_bytes(text if isinstance(text, bytes) else text.encode())
        _one_line_error(["evaluate", d, "--data", archive], capsys, str(d / "index.csv"), "damaged")
    # an index of nothing that can be scored: one line too
    d = tmp_path / "nothing"
    d.mkdir()
    (d / "index.csv").write_text(good.split("\n", 1)[0] + "\n")
    _one_line_error(["evaluate", d, "--data", archive], capsys, str(d / "index.csv"), "none of its 0 row(s)")
    with pytest.raises(EvaluateError, match="no such file"):
        read_run_index(tmp_path / "nosuch")
    assert issubclass(EvaluateError, UserError)


def test_a_damaged_checkpoint_is_listed_as_skipped_not_fatal(results, tmp_path):
    archive, res, _ = results
    d = tmp_path / "res"
    shutil.copytree(res, d)
    _absolute_index(d, res)
    (d / "students" / "conv2-s1" / "best.safetensors").write_bytes(b"\x00" * 64)
    data = load_cifar(archive)
    hidden = tmp_path / "hidden"
    res.rename(hidden)  # so that the copy is what the index and the ensemble's members are found as
    try:
        r = evaluate_results(d, data.x_test, data.y_test)
    finally:
        hidden.rename(res)
    assert [x["path"] for x in r["rows"]] == ["teachers/t0"]
    reasons = {s["path"]: s["reason"] for s in r["skipped"]}
    assert "not a readable safetensors checkpoint" in reasons["students/conv2-s1"]
    assert "changed since the ensemble was built" in reasons["ensembles/e2"]


def test_runs_with_another_number_of_outputs_are_skipped_not_scored(results):
    # a CIFAR-10 results folder scored against 100-class data: every row is skipped with the reason
    archive, res, _ = results
    data = load_cifar(archive)
    r = evaluate_results(res, data.x_test, data.y_test)
    assert r["rows"]
    r100 = evaluate_results(res, data.x_test, data.y_test, num_classes=100)
    assert not r100["rows"]
    assert sum("10 outputs, the data 100 classes" in s["reason"] for s in r100["skipped"]) == len(r["rows"])
