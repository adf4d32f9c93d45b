"""Issue #12, never a wrong table with exit 0: the run index is a set (one row per run, rebuilt or refused
when damaged, never read short), one writer per results folder, data identified by content (not by how its
path is spelled or where the results folder lives), artifacts verified before they are reused, and a full
disk or exhausted memory as one line naming the file or the size."""
from __future__ import annotations

import csv
import errno
import multiprocessing
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy.exc
import torch
from safetensors import SafetensorError

from mimicnet import cli
from mimicnet.cli import search as search_run
from mimicnet.core import artifacts
from mimicnet.core.errors import ConfigError
from mimicnet.core.index import IndexFileError, IndexRow, append_index, read_index
from mimicnet.core.lock import FolderLocked, folder_lock
from mimicnet.distill.student import Teachers
from mimicnet.distill.transfer import TransferError
from mimicnet.search.spaces import SearchError
from mimicnet.search.storage import open_storage
from mimicnet.train import loop
from mimicnet.train.config import TrainConfig
from mimicnet.train.loop import fit

from conftest import run_here
from synth import write_archive

QUIET = dict(log=lambda s: None)


def small_cfg(archive, **kw):
    base = dict(family="conv2", widths=(8, 8, 32), data=str(archive), max_train=120, batch_size=32, lr=0.02,
                max_epochs=1, schedule="onecycle", device="cpu", seed=3, augment=False)
    base.update(kw)
    return TrainConfig.of(**base)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return write_archive(tmp_path_factory.mktemp("data") / "a.tar.gz", n_train=300, n_test=60)


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mimicnet: error: "), err
    assert "Traceback" not in err
    return lines[0]


# ============================================================================================ the index

def test_index_is_a_set_of_runs_with_relative_paths(tmp_path):
    idx = tmp_path / "res" / "index.csv"
    run = tmp_path / "res" / "teachers" / "t0"
    append_index(idx, IndexRow(kind="teacher", family="teacher", val_acc=0.5, path=str(run), run_id="a"))
    append_index(idx, IndexRow(kind="teacher", family="teacher", val_acc=0.6, path=str(run), run_id="a"))
    trial = tmp_path / "res" / "studies" / "s" / "trials" / "0"
    append_index(idx, IndexRow(kind="student", family="conv2", status="failed", path=str(trial), trial=0))
    append_index(idx, IndexRow(kind="student", family="conv2", val_acc=0.4, path=str(trial), trial=0))
    append_index(idx, IndexRow(kind="student", family="conv2", val_acc=0.1, path=str(trial)), replace=False)
    for _ in range(2):   # rows without a path (synthetic indexes) are never merged
        append_index(idx, IndexRow(kind="baseline", family="conv2", val_acc=0.3))
    rows = read_index(idx)
    assert [(r["kind"], r["val_acc"], r["status"]) for r in rows] == [
        ("teacher", "0.6", ""), ("student", "0.4", ""), ("baseline", "0.3", ""), ("baseline", "0.3", "")]
    text = idx.read_text()
    assert str(tmp_path) not in text and "teachers/t0" in text          # stored relative to the index
    assert rows[0]["path"] == str(run)                                   # read back as a usable path
    # a moved results folder: its paths move with it
    shutil.move(tmp_path / "res", tmp_path / "moved")
    assert read_index(tmp_path / "moved" / "index.csv")[0]["path"] == str(tmp_path / "moved" / "teachers" / "t0")


def test_an_old_log_index_reads_as_a_set_and_absolute_paths_still_work(tmp_path):
    idx = tmp_path / "index.csv"
    cols = [f for f in IndexRow.__dataclass_fields__]
    old = "/elsewhere/results/teachers/t0"
    lines = [",".join(cols)]
    for v in ("0.5", "0.7"):   # an index written by the appending versions: the same run twice
        lines.append(",".join({"kind": "teacher", "family": "teacher", "val_acc": v, "path": old}.get(c, "")
                              for c in cols))
    idx.write_text("\r\n".join(lines) + "\r\n")
    (row,) = read_index(idx)
    assert row["val_acc"] == "0.7" and row["path"] == old
    append_index(idx, IndexRow(kind="teacher", family="teacher", val_acc=0.8, path=old))
    assert [r["val_acc"] for r in read_index(idx)] == ["0.8"]            # and writes do not grow it
    # that results folder, moved here since: its run folders are the rows' runs
    (tmp_path / "teachers" / "t0").mkdir(parents=True)
    append_index(idx, IndexRow(kind="teacher", family="teacher", val_acc=0.9, path=str(tmp_path / "teachers" / "t0")),
                 replace=False)
    assert [r["val_acc"] for r in read_index(idx)] == ["0.8"]


def _append_many(idx, worker):
    for i in range(10):
        append_index(idx, IndexRow(kind="student", family="conv2", trial=i, path=str(idx.parent / f"w{worker}-{i}")))


def test_concurrent_writers_lose_no_row(tmp_path):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(tmp_path / "index.csv", w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert sorted(Path(r["path"]).name for r in read_index(tmp_path / "index.csv")) == \
        sorted(f"w{w}-{i}" for w in range(4) for i in range(10))


@pytest.mark.parametrize("damage", ["truncated", "no-header", "garbled-header", "empty"])
def test_a_damaged_index_is_an_error_never_a_short_table(tmp_path, damage, capsys):
    idx = tmp_path / "index.csv"
    for i in range(3):
        append_index(idx, IndexRow(kind="student", family="conv2", budget=20_000, val_acc=0.5 + i / 100,
                                   test_acc=0.5, loss="l2-logits", path=str(tmp_path / f"t{i}")))
    text = idx.read_text()
    header, body = text.split("\n", 1)
    idx.write_text({"truncated": text[:-25], "no-header": body, "garbled-header": "kind,fa\x07mily" + text[11:],
                    "empty": ""}[damage])
    with pytest.raises(IndexFileError, match="index.csv: damaged run index .*--rebuild-index"):
        read_index(idx)
    with pytest.raises(IndexFileError):   # nor is a row added to it (which would hide the damage)
        append_index(idx, IndexRow(kind="teacher", path=str(tmp_path / "x")))
    assert cli.main(["report", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert "|" not in out                                                # no table printed
    assert str(idx) in one_line(err)


def test_a_rerun_replaces_its_row_and_a_lost_row_comes_back(archive, tmp_path):
    idx, run = tmp_path / "index.csv", tmp_path / "teachers" / "t0"
    fit(small_cfg(archive), run, index=idx, **QUIET)
    (run / "results.json").unlink()                      # deleted: the rerun finishes it again
    fit(small_cfg(archive), run, index=idx, **QUIET)
    assert len(read_index(idx)) == 1
    idx.unlink()                                         # killed between results.json and its row
    fit(small_cfg(archive), run, index=idx, **QUIET)
    assert [r["path"] for r in read_index(idx)] == [str(run)]


def test_rebuild_index_from_the_run_folders(archive, tmp_path, capsys):
    res = tmp_path / "res"
    for seed in (1, 2):
        fit(small_cfg(archive, seed=seed), res / "teachers" / f"t{seed}", index=res / "index.csv", **QUIET)
    (res / "failed").mkdir()
    artifacts.write_json(res / "failed" / "config.json", {"config": small_cfg(archive, seed=9).to_dict()})
    artifacts.write_json(res / "failed" / "failed.json", {"reason": "diverged"})
    before = read_index(res / "index.csv")
    (res / "index.csv").write_text((res / "index.csv").read_text()[:-30])   # truncated mid-row
    assert cli.main(["report", str(res)]) == 2
    capsys.readouterr()
    assert cli.main(["report", str(res), "--rebuild-index"]) == 0
    rows = read_index(res / "index.csv")
    key = ("kind", "family", "widths", "seed", "val_acc", "test_acc", "run_id", "path", "data_sha256")
    assert [tuple(r[k] for k in key) for r in rows if r["status"] != "failed"] == \
        [tuple(r[k] for k in key) for r in before]
    assert [r["seed"] for r in rows if r["status"] == "failed"] == ["9"]
    assert (res / "index.csv.old").exists()


# ============================================================================================ the lock

def _hold(folder: Path) -> subprocess.Popen:
    code = ("import sys, time; from mimicnet.core.lock import folder_lock\n"
            f"with folder_lock({str(folder)!r}, 'mimicnet reproduce --preset smoke'):\n"
            "    print('held', flush=True); time.sleep(120)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_one_writer_per_results_folder(archive, tmp_path, capsys):
    """`train` holds its folder; (`reproduce` no longer does: a second one joins as a worker, its units of work
    claimed through the work study, tests/test_work.py)."""
    out = tmp_path / "out"
    holder = _hold(out)
    try:
        assert cli.main(["train", "--data", str(archive), "--family", "conv2", "--widths", "8,8,32",
                         "--max-epochs", "1", "--device", "cpu", "--out", str(out)]) == 2
        assert f":{holder.pid}" in one_line(capsys.readouterr().err)
        with pytest.raises(FolderLocked):
            with folder_lock(out):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with folder_lock(out, "test"):   # the lock of a dead process is free again
        with folder_lock(out):       # and re-entrant within a process
            assert "test" in (out / ".lock").read_text()


# ============================================================================================ data identity

def test_a_run_resumes_whatever_the_spelling_of_the_data_path(archive, tmp_path, monkeypatch):
    monkeypatch.chdir(archive.parent)
    run = tmp_path / "run"
    rel = small_cfg(os.path.relpath(archive), max_epochs=2)
    first = fit(rel, run, **QUIET)
    (run / "results.json").unlink()                       # killed after its last epoch's checkpoint
    logs = []
    again = fit(small_cfg(archive.resolve(), max_epochs=2), run, log=logs.append)
    assert any(s.startswith("resuming") for s in logs) and not any(s.startswith("epoch") for s in logs)
    assert again["val_acc"] == first["val_acc"] and again["run_id"] == first["run_id"]


def test_another_archive_at_the_same_path_is_refused_on_resume(tmp_path):
    data = write_archive(tmp_path / "d.tar.gz", n_train=300, n_test=60, seed=0)
    run = tmp_path / "run"
    fit(small_cfg(data), run, **QUIET)
    (run / "results.json").unlink()
    write_archive(data, n_train=300, n_test=60, seed=1)   # replaced between a kill and the rerun
    with pytest.raises(ConfigError, match=r"the data changed since this run began: .* has sha256 \w{12}…, the "
                       r"run was trained on \w{12}…"):
        fit(small_cfg(data), run, **QUIET)


# ============================================================================================ artifacts

@pytest.fixture
def finished_run(archive, tmp_path):
    run = tmp_path / "run"
    fit(small_cfg(archive, max_epochs=2), run, **QUIET)
    return run


def test_a_finished_run_with_damaged_weights_is_not_reported(archive, finished_run):
    best = finished_run / "best.safetensors"
    raw = bytearray(best.read_bytes())
    raw[-10] ^= 0xFF                                      # one byte of a weight
    best.write_bytes(bytes(raw))
    with pytest.raises(artifacts.CheckpointError, match=r"best.safetensors: damaged \(sha256 .*delete .*run"):
        fit(small_cfg(archive, max_epochs=2), finished_run, **QUIET)
    best.write_bytes(b"garbage")
    with pytest.raises(artifacts.CheckpointError, match="best.safetensors: damaged"):
        fit(small_cfg(archive, max_epochs=2), finished_run, **QUIET)


def test_results_json_holding_null_is_one_line(archive, finished_run, capsys):
    (finished_run / "results.json").write_text("null\n")
    with pytest.raises(artifacts.CheckpointError, match=r"results.json: not the results of a run \(holds null\)"):
        fit(small_cfg(archive, max_epochs=2), finished_run, **QUIET)


def test_a_best_checkpoint_copied_over_last_is_one_line(archive, finished_run, capsys):
    (finished_run / "results.json").unlink()
    shutil.copy(finished_run / "best.safetensors", finished_run / "last.safetensors")
    with pytest.raises(artifacts.CheckpointError, match="last.safetensors: not a resume point .*schedule"):
        fit(small_cfg(archive, max_epochs=2), finished_run, **QUIET)
    assert cli.main(["train", "--data", str(archive), "--family", "conv2", "--widths", "8,8,32", "--max-train",
                     "120", "--batch-size", "32", "--lr", "0.02", "--max-epochs", "2", "--schedule", "onecycle",
                     "--seed", "3", "--no-augment", "--device", "cpu", "--out", str(finished_run)]) == 2
    assert "last.safetensors: not a resume point" in one_line(capsys.readouterr().err)


def test_a_damaged_study_db_is_one_line_naming_it(tmp_path):
    db = tmp_path / "study.db"
    db.write_bytes(os.urandom(4096))
    with pytest.raises(SearchError, match=f"{db}: not a readable study database"):
        open_storage(f"sqlite:///{db}")


# ============================================================================================ resources

TRAIN = ["train", "--family", "conv2", "--widths", "8,8,32", "--max-train", "120", "--max-epochs", "1",
         "--no-augment", "--device", "cpu"]


@pytest.mark.parametrize("full_disk", [
    OSError(errno.ENOSPC, "No space left on device"),   # as write() raises it: no file name
    SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"),  # save_file's
])
def test_a_full_disk_names_the_file(archive, tmp_path, monkeypatch, capsys, full_disk):
    def full(*a, **k):
        raise full_disk
    monkeypatch.setattr(artifacts, "save_file", full)
    assert cli.main([*TRAIN, "--data", str(archive), "--out", str(tmp_path / "r")]) == 2
    line = one_line(capsys.readouterr().err)
    assert f"{tmp_path / 'r'}/" in line and ".safetensors: No space left on device; free some space" in line

    def denied(*a, **k):
        raise OSError(errno.EACCES, "Permission denied", str(tmp_path / "r" / "metrics.jsonl"))
    monkeypatch.setattr(loop, "fit", denied)
    monkeypatch.setattr(sys.modules["mimicnet.distill.student"], "fit", denied)
    assert cli.main([*TRAIN, "--data", str(archive), "--out", str(tmp_path / "r")]) == 2
    assert "metrics.jsonl: Permission denied; fix its permissions" in one_line(capsys.readouterr().err)


@pytest.mark.parametrize("error", [
    torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
                                "79.19 GiB of which 1.2 GiB is free.\nOf the allocated memory ..."),
    MemoryError("Unable to allocate 3.00 GiB for an array with shape (1000000, 3, 32, 32) and data type uint8"),
])
def test_out_of_memory_is_one_line_with_the_size(archive, tmp_path, monkeypatch, capsys, error):
    def oom(*a, **k):
        raise error
    monkeypatch.setattr(loop, "train_epoch", oom)
    assert cli.main([*TRAIN, "--data", str(archive), "--out", str(tmp_path / "r")]) == 2
    line = one_line(capsys.readouterr().err)
    assert "out of" in line and ("2.00 GiB" in line or "3.00 GiB" in line)


def test_a_full_study_database_is_one_line(tmp_path, monkeypatch, capsys):
    """A SQLite study that cannot grow ("database or disk is full") is the machine's trouble: one line, exit 2;
    any other OperationalError stays a traceback (a bug to report)."""
    def full(*a, **k):
        raise sqlalchemy.exc.OperationalError("INSERT INTO trials ...", {}, sqlite3.OperationalError(
            "database or disk is full"))
    monkeypatch.setattr(search_run, "run_search", full)
    argv = ["search", "run", "baseline-conv2-300k", "--trials", "1", "--out", str(tmp_path / "s")]
    assert cli.main(argv) == 2
    line = one_line(capsys.readouterr().err)
    assert "the study database: database or disk is full; free some space" in line

    def bug(*a, **k):
        raise sqlalchemy.exc.OperationalError("SELECT", {}, sqlite3.OperationalError("no such column: x"))
    monkeypatch.setattr(search_run, "run_search", bug)
    with pytest.raises(sqlalchemy.exc.OperationalError):
        cli.main(argv)


def test_atomic_writes_name_the_file_they_could_not_write(tmp_path):
    def full(tmp):
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(OSError) as e:
        artifacts.atomic_write(tmp_path / "x.json", full)
    assert e.value.filename == str(tmp_path / "x.json") and not list(tmp_path.iterdir())


# ============================================================================================ reproduce

def _reproduce(archive, out, **kw):
    return subprocess.run([sys.executable, "-m", "mimicnet.cli", "reproduce", "--preset", "smoke", "--data",
                           str(archive), "--out", str(out), "--device", "cpu"], capture_output=True, text=True,
                          timeout=600, **kw)


def _reproduce_here(archive, out, capsys):
    return run_here(capsys, "reproduce", "--preset", "smoke", "--data", archive, "--out", out, "--device", "cpu")


def _unchanged(out: Path, index: str):
    def unchanged(r):
        assert r.returncode == 0, r.stderr[-2000:]
        assert "epoch " not in r.stdout and "training conv" not in r.stdout    # nothing trained again
        assert (out / "index.csv").read_text() == index                         # nor indexed twice
    return unchanged


@pytest.mark.slow
def test_smoke_study_identity_by_content_and_verified_reuse(smoke_ref, tmp_path, capsys):
    """The shared uninterrupted smoke study (conftest.smoke_ref), copied: the archive copied too, so its path
    differs from the one the record names (identity by content)."""
    archive, ref, _ = smoke_ref
    data = tmp_path / "a.tar.gz"
    shutil.copyfile(archive, data)
    out = tmp_path / "smoke"
    shutil.copytree(ref, out)
    index = (out / "index.csv").read_text()
    with open(out / "index.csv", newline="") as f:                      # run paths relative to the folder
        assert not [r["path"] for r in csv.DictReader(f) if os.path.isabs(r["path"])]
    unchanged = _unchanged(out, index)
    # a results folder copied (the reference's, elsewhere) with its archive at another path: resumed where it
    # is, nothing retrained; then the same archive as a relative path: the same study
    unchanged(_reproduce(data, out))
    unchanged(_reproduce("a.tar.gz", out, cwd=tmp_path))

    def probe(path: Path, damage: bytes | None, expect: str):
        """Damage a file, check the one line (exit 2), put it back."""
        keep = path.read_bytes()
        path.write_bytes(damage if damage is not None else keep[:len(keep) // 2])
        r = _reproduce_here(data, out, capsys)
        path.write_bytes(keep)
        assert r.returncode == 2, r.stderr[-2000:]
        line = one_line(r.stderr)
        assert expect in line, line
        return line

    logits = out / "transfer" / "logits.f16"
    probe(logits, os.urandom(logits.stat().st_size), f"{logits}: checksum mismatch in logits.f16")
    keep = logits.read_bytes()
    logits.write_bytes(bytes(len(keep)))      # a student's start verifies its transfer set too
    with pytest.raises(TransferError, match="logits.f16: checksum mismatch"):
        Teachers().transfer_set(out / "transfer", "cpu")
    logits.write_bytes(keep)
    probe(out / "transfer" / "images.u8", None, f"{out / 'transfer' / 'images.u8'}: ")
    best = out / "teachers" / "t0" / "best.safetensors"
    probe(best, b"\0" * best.stat().st_size, f"{best}: damaged")
    probe(out / "teachers" / "t1" / "results.json", b"null\n", "results.json: not the results of a run (holds null)")
    probe(data, write_archive(tmp_path / "b.tar.gz", n_train=500, n_test=100, seed=7).read_bytes(),
          "the data changed")
    unchanged(_reproduce_here(data, out, capsys))
