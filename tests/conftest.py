"""Shared pytest fixtures.

Data fixtures write tiny synthetic CIFAR-10 archives in the official format (protocol-2 pickles with
bytes keys, inside cifar-10-batches-py/ in a .tar.gz), so every test exercises the real loader without
the 170 MB download. `cifar_subset_path` points at the real 4,068-image subset when it is there.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from filelock import FileLock

from mimicnet.cli import main as cli_main
from mimicnet.core.index import read_index
from synth import write_archive, write_cifar_archive as _write_cifar_archive

REPO_ROOT = Path(__file__).resolve().parents[1]
CIFAR_SUBSET = REPO_ROOT.parent / "shared" / "data" / "cifar-10-subset-python.tar.gz"


# ---- data

def _cifar_batch(n: int, seed: int = 0) -> dict:
    """A batch dict like the official ones: b'data' uint8 n×3072, b'labels' list of ints (i % 10)."""
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"synthetic",
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        b"labels": [i % 10 for i in range(n)],
    }


@pytest.fixture
def make_cifar_batch():
    """Factory: make_cifar_batch(n, seed=0) -> official-format batch dict (labels i % 10)."""
    return _cifar_batch


@pytest.fixture
def make_cifar_archive(tmp_path):
    """Factory: make_cifar_archive(members, name='cifar.tar.gz', folder='cifar-10-batches-py') -> Path.

    members maps a basename (data_batch_1, test_batch, batches.meta, ...) to a dict, pickled with
    protocol 2 like the official files, or to raw bytes written as they are.
    """
    def make(members: dict, name: str = "cifar.tar.gz", folder: str = "cifar-10-batches-py") -> Path:
        return _write_cifar_archive(tmp_path / name, members, folder)

    return make


@pytest.fixture
def tiny_cifar_archive(make_cifar_archive):
    """A valid 60-train (data_batch_1, _2 of 30 each) / 20-test CIFAR-10 .tar.gz with batches.meta."""
    from mimicnet.data.cifar import CLASSES

    return make_cifar_archive({
        "data_batch_1": _cifar_batch(30, seed=1),
        "data_batch_2": _cifar_batch(30, seed=2),
        "test_batch": _cifar_batch(20, seed=3),
        "batches.meta": {b"label_names": [c.encode() for c in CLASSES], b"num_vis": 3072},
    }, name="tiny-cifar.tar.gz")


@pytest.fixture
def cifar_subset_path() -> Path:
    """The real CIFAR-10 subset (4,068 train / 1,017 test). Required under CI, skipped elsewhere."""
    if not CIFAR_SUBSET.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but the real CIFAR-10 subset is missing: {CIFAR_SUBSET}")
        pytest.skip(f"real CIFAR-10 subset not present ({CIFAR_SUBSET})")
    return CIFAR_SUBSET


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a busy 2-core machine spinning OpenMP
    workers make tests 10x slower; restores the setting for the other test modules."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def run_here(capsys, *args) -> SimpleNamespace:
    """A command's (returncode, stdout, stderr) as a subprocess would give them, run in this process (no
    interpreter and imports to start: ~3 s a call). An exception would escape here, so "never a traceback"
    is still tested."""
    capsys.readouterr()
    rc = cli_main([str(a) for a in args])
    o = capsys.readouterr()
    return SimpleNamespace(returncode=rc, stdout=o.out, stderr=o.err)


# ---- one uninterrupted smoke study, shared: the reference every killed, moved or multi-worker run must equal

# One thread in every run compared with it: a worker's results depend on its thread count (the order of float
# reductions; measured: two teachers trained with 1 and with 2 threads end a few points apart on 400 images).
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def smoke_cmd(archive, out, *extra) -> list[str]:
    return [sys.executable, "-m", "mimicnet.cli", "reproduce", "--preset", "smoke", "--data", str(archive),
            "--out", str(out), "--device", "cpu", *extra]


def _runs(out: Path) -> list[tuple]:
    """The index as a set of runs: what each is and where, with its outcome and its run id (no timings). Run
    ids hold what a run learns from by content, so the same study in another folder has the same ids."""
    rows = read_index(out / "index.csv")  # paths come back absolute: compared relative to the results folder
    return sorted((r["kind"], r["family"], r["budget"], os.path.relpath(r["path"], out), r["status"], r["val_acc"],
                   r["test_acc"], r["run_id"]) for r in rows)


def same_as_ref(out: Path, ref: Path) -> None:
    assert (out / "results.txt").read_text() == (ref / "results.txt").read_text()
    runs = _runs(out)
    assert len(runs) == len(set((r[3] for r in runs))) == len(_runs(ref))   # one row per run, none missing
    assert runs == _runs(ref)
    assert (out / "report" / "report.html").exists()


@pytest.fixture(scope="session")
def smoke_ref(tmp_path_factory):
    """(archive, results folder, seconds): the smoke preset run once, uninterrupted, with one thread. Tests
    read it or copy it; none changes it. Under pytest-xdist it is made once for all workers (pytest-xdist's
    documented pattern: a file lock in the temporary folder the workers share; a worker that finds it made
    takes it, checked by its done.json)."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # every worker's basetemp sits in one session folder
    tmp = shared / "smoke-ref"
    done = tmp / "done.json"
    with FileLock(str(shared / "smoke-ref.lock")):
        if not done.exists():
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            archive = write_archive(tmp / "a.tar.gz", n_train=500, n_test=100)
            t0 = time.time()
            r = subprocess.run(smoke_cmd(archive, tmp / "ref"), capture_output=True, text=True, timeout=900,
                               env=ONE_THREAD)
            assert r.returncode == 0, r.stderr[-2000:]
            done.write_text(json.dumps({"seconds": time.time() - t0}))
    return tmp / "a.tar.gz", tmp / "ref", json.loads(done.read_text())["seconds"]
