"""Shared pytest fixtures.

Data fixtures write tiny synthetic CIFAR-10 archives in the official format (protocol-2 pickles with
bytes keys, inside cifar-10-batches-py/ in a .tar.gz), so every test exercises the real loader without
the 170 MB download. `cifar_subset_path` points at the real 4,068-image subset when it is there.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from synth import write_cifar_archive as _write_cifar_archive

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
