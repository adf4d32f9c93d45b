"""A hostile but fair user (issue 27): every path a user gives is checked where it enters, a failing command
leaves the folder as it found it, one line and exit status 2 on every path, never a traceback."""
from __future__ import annotations

import argparse
import errno
import io
import json
import logging
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from mimicnet.cli import build_parser
from mimicnet.core import paths
from synth import one_line_error, run, write_archive


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return write_archive(tmp_path_factory.mktemp("data") / "a.tar.gz", n_train=60, n_test=20)


TRAIN = ["train", "--family", "conv1", "--widths", "4,3,8", "--max-epochs", "1", "--max-train", "40"]


# ------------------------------------------------------------------------------- --help

def _subcommands(parser, prefix=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name)
                yield from _subcommands(sub, (*prefix, name))


@pytest.mark.parametrize("argv", list(_subcommands(build_parser())), ids=" ".join)
def test_help_of_every_subcommand(argv):
    rc, out, err = run([*argv, "--help"])
    assert rc == 0 and "usage: mimicnet " in out and not err, err


# ------------------------------------------------------------------------------- paths where they enter

def _hostile_outs(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "loop1").symlink_to("loop2")
    (tmp_path / "loop2").symlink_to("loop1")
    (tmp_path / "a-file").write_text("x")
    return {"under /proc": Path("/proc/mimicnet-nope/out"),
            "name too long": tmp_path / ("x" * 300) / "out",
            "symlink loop": tmp_path / "loop1" / "out",
            "through a file": tmp_path / "a-file" / "out"}


REASONS = {"under /proc": "no such file or directory", "name too long": "file name too long",
           "symlink loop": "too many levels of symbolic links", "through a file": "not a directory"}


@pytest.mark.parametrize("what", list(REASONS))
def test_an_out_that_cannot_be_made_is_one_line_before_any_write(what, tmp_path, archive):
    out = _hostile_outs(tmp_path)[what]
    before = files_under(tmp_path)
    for argv in ([*TRAIN, "--data", archive, "--out", out],
                 ["reproduce", "--preset", "smoke", "--data", archive, "--out", out],
                 ["compress", "--teacher", archive, "--data", archive, "--budget", "10k", "--out", out],
                 ["evaluate", archive, "--data", archive, "--json", out / "e.json"],
                 ["search", "run", "student-conv1-0.1M", "--data", archive, "--trials", "1", "--storage", f"sqlite:///{out}/s.db"],
                 ["report", tmp_path, "--out", out]):
        err = one_line_error(argv, str(out)[:40], REASONS[what])
        assert err.lower().count("error") == 1
    assert files_under(tmp_path) == before


@pytest.mark.parametrize("code", sorted(set(errno.errorcode) - {errno.EEXIST}), ids=lambda c: errno.errorcode[c])
def test_every_errno_of_an_out_folder_is_one_line_naming_it(code, tmp_path, monkeypatch, archive):
    """Whatever the kernel answers when the folder is made (EACCES, EROFS, EDQUOT, ... cannot all be made
    for real as root on one filesystem): one line naming the path and the reason, nothing written. (EEXIST
    is the one answer that is no problem: another process made the folder meanwhile.)"""
    def refuse(*a, **k):
        raise OSError(code, os.strerror(code))
    monkeypatch.setattr(paths.os, "mkdir", refuse)
    monkeypatch.setattr(paths.tempfile, "mkdtemp", refuse)
    out = tmp_path / "new" / "out"
    one_line_error([*TRAIN, "--data", archive, "--out", out], str(out), os.strerror(code)[1:])
    assert not (tmp_path / "new").exists()
    assert paths.folder_problem(tmp_path) == f"cannot create a folder in {tmp_path}: {paths.reason(OSError(code, os.strerror(code)))}"


def test_inputs_that_cannot_be_read_are_named(tmp_path, archive):
    (tmp_path / "loop1").symlink_to("loop2")
    (tmp_path / "loop2").symlink_to("loop1")
    one_line_error([*TRAIN, "--data", tmp_path / "loop1", "--out", tmp_path / "r"], "--data", "symbolic links")
    one_line_error([*TRAIN, "--data", archive, "--config", tmp_path / "no.json", "--out", tmp_path / "r"],
                   "--config", "no such file")
    one_line_error(["transfer", "--teacher", tmp_path / ("y" * 300), "--data", archive, "--out", tmp_path / "t"],
                   "--teacher", "file name too long")
    assert not (tmp_path / "r").exists() and not (tmp_path / "t").exists()


def test_a_failing_train_leaves_no_lock(tmp_path, archive):
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "manifest.json").write_text("{not json")
    (tmp_path / "not-a-teacher").mkdir()
    for extra in (["--loss", "l2-logits", "--transfer", tmp_path / "damaged"],
                  ["--distill", "online", "--loss", "l2-logits", "--teacher", tmp_path / "not-a-teacher"]):
        one_line_error([*TRAIN, "--data", archive, "--out", tmp_path / "run", *extra])
        assert not (tmp_path / "run").exists()
    (tmp_path / "there").mkdir()  # a folder that was there stays, without a lock it did not have
    one_line_error([*TRAIN, "--data", archive, "--out", tmp_path / "there", "--loss", "l2-logits", "--transfer",
                    tmp_path / "damaged"])
    assert files_under(tmp_path / "there") == set()


def test_reproduce_writes_nothing_before_its_data_is_checked(tmp_path, archive):
    out = tmp_path / "r"
    one_line_error(["reproduce", "--preset", "smoke", "--set", f"data={tmp_path / 'nope.tar.gz'}", "--out", out],
                   "nope.tar.gz", "no such file")
    assert not out.exists()
    one_line_error(["reproduce", "--preset", "smoke", "--max-train", "-5", "--out", out], "--max-train", "-5")
    assert not out.exists()
    err = one_line_error(["reproduce", "--preset", "ba-caruana", "--seed", "-1", "--out", out], "--seed")
    assert "--set" not in err and not out.exists()


def test_a_refused_reproduce_leaves_its_record_as_it_was(tmp_path, archive):
    out = tmp_path / "r"
    out.mkdir()
    record = json.dumps({"preset": "cpu", "config_hash": "0123456789", "stages": {"teachers": 1.0}})
    (out / "reproduce.json").write_text(record)
    one_line_error(["reproduce", "--preset", "smoke", "--data", archive, "--out", out], "another config")
    assert (out / "reproduce.json").read_text() == record and files_under(out) == {"reproduce.json"}


def test_evaluate_checks_its_json_before_evaluating(tmp_path, archive, monkeypatch):
    import mimicnet.cli.evaluate as ev
    monkeypatch.setattr(ev, "model_from_checkpoint", lambda *a: pytest.fail("evaluated before --json was checked"))
    (tmp_path / "ro").mkdir()
    one_line_error(["evaluate", archive, "--data", archive, "--json", tmp_path / "no" / "x" / ("j" * 300)],
                   "--json", "longer than the filesystem allows")
    one_line_error(["evaluate", archive, "--data", archive, "--json", tmp_path / "ro"], "--json", "is a folder")


class Raises(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 0:
            raise RuntimeError("this teacher refuses")
        return x.flatten(1)


def test_compress_with_a_torchscript_teacher_that_raises(tmp_path, archive):
    ts = tmp_path / "raises.ts"
    torch.jit.save(torch.jit.script(Raises()), str(ts))
    out = tmp_path / "out"
    one_line_error(["compress", "--teacher", ts, "--data", archive, "--out", out, "--budget", "10k",
                    "--teacher-normalize", "none"], "raises.ts", "this teacher refuses")


# ------------------------------------------------------------------------------- a diverged trial

def test_a_diverged_trial_is_one_line_not_a_traceback(tmp_path, capfd):
    """Optuna logs the exception of a caught trial with its traceback (~20 lines that read as a crash); the
    search says it in one line of its own."""
    from mimicnet import search
    from mimicnet.core.errors import Diverged
    from mimicnet.train.config import TrainConfig

    def fit(cfg, run_dir, index=None, info=None):
        if cfg.optim.lr > 0.004:
            raise Diverged(f"{run_dir}: training loss is nan at epoch 0")
        return {"val_acc": 0.5, "test_acc": 0.5, "params": 1}
    seen = io.StringIO()  # what Optuna's own handler (bound to the stderr of its import) would print
    handler = logging.StreamHandler(seen)
    logging.getLogger("optuna").addHandler(handler)
    try:
        st = search.run_search("student-conv2-100k", TrainConfig.of(), tmp_path, trials=6,
                               strategy=search.Strategy(sampler="random", seed=3), train_fn=fit, log=print)
    finally:
        logging.getLogger("optuna").removeHandler(handler)
    failed = [t for t in st.get_trials() if t.state.name == "FAIL"]
    out, err = capfd.readouterr()
    err += seen.getvalue()
    assert failed and "Traceback" not in out + err and "Diverged" not in out + err
    lines = [line for line in (out + err).splitlines() if "nan at epoch 0" in line]
    assert len(lines) == len(failed) and all(line.startswith(f"trial {t.number}: failed, ")
                                             for line, t in zip(lines, failed))


# ------------------------------------------------------------------------------- the umask

@pytest.mark.parametrize("umask", [0o002, 0o022, 0o077])
def test_files_are_written_as_the_umask_says(umask, tmp_path, archive):
    """Not owner-only (mkstemp's 0600): results on a cluster's shared filesystem can be read by the group."""
    old = os.umask(umask)
    try:
        rc, _, err = run([*TRAIN, "--data", archive, "--out", tmp_path / "run", "--device", "cpu"])
    finally:
        os.umask(old)
    assert rc == 0, err
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert any(p.name == "best.safetensors" for p in files) and any(p.suffix == ".json" for p in files)
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {p.name: oct(0o666 & ~umask) for p in files}


# ------------------------------------------------------------------------------- the index and its run folders

@pytest.fixture(scope="module")
def searched(archive, tmp_path_factory):
    """A search's folder: two finished trials (trials/0, trials/1), their index rows, its study.db."""
    out = tmp_path_factory.mktemp("search") / "s"
    rc, _, err = run(["search", "run", "baseline-conv1-10k", "--data", archive, "--max-train", "40", "--max-epochs",
                      "1", "--trials", "2", "--sampler", "random", "--out", out, "--device", "cpu"])
    assert rc == 0, err
    return out


def test_report_refuses_an_index_that_does_not_match_its_run_folders(searched, tmp_path):
    import shutil
    res = tmp_path / "res"
    shutil.copytree(searched, res)
    full = (res / "index.csv").read_text()
    assert run(["report", res])[0] == 0
    shutil.rmtree(res / "report")
    lines = full.splitlines(keepends=True)
    (res / "index.csv").write_text("".join(lines[:2]))  # cut at a line boundary: trials/1's row lost
    one_line_error(["report", res], "index.csv does not match its run folders",
                   "1 finished run folder(s) without a row (e.g. trials/1)", "--rebuild-index")
    one_line_error(["report", res, "--record", tmp_path / "rec"], "without a row")
    assert not (res / "report").exists() and not (tmp_path / "rec").exists()
    (res / "index.csv").write_text(full.replace("trials/1,", "trials/9,"))  # a row whose folder is gone
    one_line_error(["report", res], "1 row(s) without a run folder (e.g. trials/9)", "(e.g. trials/1)")
    rc, _, err = run(["report", res, "--rebuild-index"])
    assert rc == 0 and "2 row(s)" in err, err
    assert run(["report", res])[0] == 0
    rc, out, err = run(["report", res, "--record", tmp_path / "rec"])  # a mended index makes a record
    assert rc == 0 and (tmp_path / "rec" / "index.csv").read_text().count("\n") == 3, err
    assert str(res) not in (tmp_path / "rec" / "index.csv").read_text()
    mended = (res / "index.csv").read_text()
    (res / "trials" / "0" / "config.json").write_text("{damaged")  # a rebuild would leave trials/0 out
    one_line_error(["report", res, "--rebuild-index"], "1 run folder(s) cannot be read", "trials/0")
    assert (res / "index.csv").read_text() == mended


def test_a_moved_results_folder_still_matches_its_index(searched, tmp_path):
    import shutil
    moved = tmp_path / "elsewhere" / "moved"
    shutil.copytree(searched, moved)
    rc, _, err = run(["report", moved])
    assert rc == 0, err


# ------------------------------------------------------------------------------- run identity without paths

@pytest.mark.parametrize("spelling", ["relative", "symlink"])
def test_an_interrupted_trial_resumes_with_the_data_path_spelled_otherwise(spelling, tmp_path, archive,
                                                                          monkeypatch):
    """The search compared the exact run id (the path as typed): the interrupted trial was 'a run of another
    config' and restarted in a new folder, its epochs lost."""
    from mimicnet import search
    from mimicnet.core import artifacts
    from mimicnet.train.config import TrainConfig

    def interrupted(cfg, run_dir, index=None, info=None):
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        artifacts.write_json(Path(run_dir) / "config.json", {"config": cfg.to_dict(), "run_id": cfg.run_id()})
        (Path(run_dir) / "partial").write_text("epoch 3")
        raise KeyboardInterrupt

    calls = []

    def resumed(cfg, run_dir, index=None, info=None):
        calls.append(Path(run_dir))
        return {"val_acc": 0.5, "test_acc": 0.5, "params": 1}
    monkeypatch.chdir(archive.parent)
    with pytest.raises(KeyboardInterrupt):
        search.run_search("student-conv2-100k", TrainConfig.of(data=str(archive)), tmp_path / "s", trials=1,
                          strategy=search.Strategy(sampler="random"), train_fn=interrupted, log=print)
    if spelling == "symlink":
        (tmp_path / "link.tar.gz").symlink_to(archive)
        other = str(tmp_path / "link.tar.gz")
    else:
        other = archive.name
    st = search.run_search("student-conv2-100k", TrainConfig.of(data=other), tmp_path / "s", trials=1,
                           strategy=search.Strategy(sampler="random"), train_fn=resumed, log=print)
    assert calls == [(tmp_path / "s" / "trials" / "0").resolve()]  # the interrupted trial's own folder
    assert (calls[0] / "partial").read_text() == "epoch 3"
    assert sorted(p.name for p in (tmp_path / "s" / "trials").iterdir()) == ["0"]
    assert search.trial_run_dir(search.best_trial(st), tmp_path / "s") == calls[0]


@pytest.mark.parametrize("older", [False, True], ids=["index now", "older index (absolute teacher)"])
def test_a_copied_results_folder_keeps_the_students_teacher_marker(older, tmp_path):
    """Student rows named their teacher by the ensemble's absolute path: in a moved or copied results folder the
    ensemble's row (its path relative to the folder) no longer matched it, and Table 1 lost 'the students'
    teacher'. The index keeps it relative now, and an older index's absolute one is matched by name."""
    import csv
    import shutil
    from mimicnet.core.index import IndexRow, append_index
    from mimicnet.report.report import build_report

    src = tmp_path / "first" / "res"
    ens = str(src / "ensemble")
    common = {"seed": 0, "epochs": 2, "max_epochs": 2, "seconds": 1.0, "data_sha256": "ab" * 32}
    append_index(src / "index.csv", IndexRow(kind="ensemble", family="ensemble", params=1000, val_acc=.5,
                                             test_acc=.5, run_id="ensemble-0123456789", path=ens, widths="4",
                                             **common))
    for fam in ("conv1", "conv2"):
        append_index(src / "index.csv", IndexRow(kind="student", family=fam, budget=20000, params=20000,
                                                 val_acc=.4, test_acc=.4, teacher=ens, teacher_test_acc=.5,
                                                 loss="l2-logits", status="complete", study=f"s-{fam}", trial=0,
                                                 path=str(src / "studies" / fam / "0"), **common))
    text = (src / "index.csv").read_text()
    assert (ens not in text) and ",ensemble," in text  # the teacher as its place in the results folder
    if older:
        (src / "index.csv").write_text(text.replace(",ensemble,", f",{ens},"))
    copy = tmp_path / "second" / "copy"
    shutil.copytree(src, copy)
    for folder in (src, copy):
        build_report(folder)
        with open(folder / "report" / "table1.csv", newline="") as f:
            notes = [r for r in csv.DictReader(f) if "students' teacher" in json.dumps(r)]
        assert len(notes) == 1, folder


# ------------------------------------------------------------------------------- README's first command offline

def test_the_first_command_without_network_says_the_way_round_and_leaves_nothing(tmp_path, monkeypatch):
    import urllib.error
    import urllib.request

    def offline(*a, **k):
        raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setenv("MIMICNET_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    one_line_error(["reproduce", "--preset", "cpu"], "cannot download", "name resolution", "--data ARCHIVE")
    assert not (tmp_path / "results").exists()  # no results/cpu/.lock, no empty results/cpu


# ------------------------------------------------------------------------------- a full disk, out of memory

@pytest.fixture(scope="module")
def teacher_run(archive, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "run"
    rc, _, err = run([*TRAIN, "--data", archive, "--out", out, "--device", "cpu"])
    assert rc == 0, err
    return out


def test_a_full_disk_while_a_transfer_set_is_written_then_space_is_freed(teacher_run, archive, tmp_path,
                                                                        monkeypatch):
    """ENOSPC half way through the second epoch (a patched write: no small filesystem can be mounted here): one
    line naming the file being written and the command to continue; no manifest (the set is not taken as
    finished); once space is freed the same command continues and ends with the set an uninterrupted run
    makes, byte for byte."""
    from mimicnet.distill import transfer
    real, calls = transfer._pwrite, []

    def full(fd, arr, offset):
        calls.append(offset)
        if len(calls) > 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, arr, offset)
    argv = ["transfer", "--teacher", teacher_run, "--data", archive, "--max-train", "40", "--epochs", "3",
            "--chunk", "16", "--out", tmp_path / "set", "--device", "cpu"]
    monkeypatch.setattr(transfer, "_pwrite", full)
    err = one_line_error(argv, f"{tmp_path / 'set'}/", ".partial: No space left on device; free some space",
                         f"run the same command again (finished work is kept): mimicnet transfer --teacher {teacher_run}")
    assert not (tmp_path / "set" / "manifest.json").exists()
    monkeypatch.setattr(transfer, "_pwrite", real)  # space freed
    rc, _, err = run(argv)
    assert rc == 0, err
    rc, _, err = run(argv[:-4] + ["--out", tmp_path / "ref", "--device", "cpu"])  # uninterrupted
    assert rc == 0, err
    got, want = (json.loads((tmp_path / d / "manifest.json").read_text())["files"] for d in ("set", "ref"))
    assert got == want and run(["transfer", "--verify", tmp_path / "set"])[0] == 0


def test_out_of_memory_names_the_batch_size_and_the_run_continues(archive, tmp_path, monkeypatch):
    from mimicnet.train import loop
    from mimicnet.train.config import TrainConfig
    real = loop.train_epoch

    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB.\nmore")
    argv = [*TRAIN, "--max-epochs", "2", "--data", archive, "--out", tmp_path / "r", "--device", "cpu"]
    monkeypatch.setattr(loop, "train_epoch", oom)
    one_line_error(argv, f"out of GPU memory at batch size {TrainConfig.of().optim.batch_size}", "2.00 GiB",
                   "smaller --batch-size", "run the same command again (finished work is kept): mimicnet train")
    assert not (tmp_path / "r" / "results.json").exists()
    monkeypatch.setattr(loop, "train_epoch", real)
    rc, out, err = run(argv)
    assert rc == 0 and (tmp_path / "r" / "results.json").exists(), err
