"""Tiny, learnable CIFAR-format archives for tests (no real data needed).

Each class gets its own mean colour and a stripe orientation, plus noise, so a small net learns it in a
few epochs and accuracy is a meaningful number rather than chance."""
from __future__ import annotations

import contextlib
import io
import pickle
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import numpy as np


def synth_images(n: int, seed: int, num_classes: int = 10) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n)
    colours = np.random.default_rng(1234).uniform(40, 215, (num_classes, 3))
    yy, xx = np.mgrid[0:32, 0:32]
    imgs = np.empty((n, 3, 32, 32), np.float32)
    for i, c in enumerate(labels):
        stripe = np.sin((xx * np.cos(c) + yy * np.sin(c)) * 0.6) * 30
        imgs[i] = colours[c][:, None, None] + stripe + rng.normal(0, 25, (3, 32, 32))
    return np.clip(imgs, 0, 255).astype(np.uint8).reshape(n, 3072), [int(c) for c in labels]


def write_cifar_archive(path: Path, members: dict, folder: str = "cifar-10-batches-py") -> Path:
    """Write members {basename: dict (pickled, protocol 2, like the official files) or raw bytes} into a
    .tar.gz (or plain .tar, by the name) at path, under `folder` (empty: at the top level)."""
    path = Path(path)
    mode = "w:gz" if path.name.endswith((".gz", ".tgz")) else "w"
    with tarfile.open(path, mode) as tf:
        if folder:
            d = tarfile.TarInfo(folder)
            d.type, d.mode = tarfile.DIRTYPE, 0o755
            tf.addfile(d)
        for name, obj in members.items():
            raw = obj if isinstance(obj, bytes) else pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"{folder}/{name}" if folder else name)
            info.size = len(raw)
            tf.addfile(info, io.BytesIO(raw))
    return path


def write_archive(path: Path, n_train: int = 200, n_test: int = 100, n_batches: int = 2, seed: int = 0,
                  train: bool = True) -> Path:
    """A learnable CIFAR-10 archive: `n_batches` data batches (n_train images in all) and a test batch."""
    members = {"batches.meta": {b"label_names": [f"class{i}".encode() for i in range(10)], b"num_vis": 3072}}
    if train:
        x, y = synth_images(n_train, seed)
        for b, (xs, ys) in enumerate(zip(np.array_split(x, n_batches), np.array_split(np.array(y), n_batches))):
            members[f"data_batch_{b + 1}"] = {b"data": xs, b"labels": ys.tolist(), b"batch_label": b"x"}
    xt, yt = synth_images(n_test, seed + 1)
    members["test_batch"] = {b"data": xt, b"labels": yt, b"batch_label": b"test"}
    return write_cifar_archive(path, members)


def write_cifar100_archive(path: Path, n_train: int = 300, n_test: int = 60, seed: int = 0, train: bool = True,
                           test: bool = True, meta: bool = True, folder: str = "cifar-100-python") -> Path:
    """A learnable CIFAR-100 archive in the official format: `train` and `test` (b'data', b'fine_labels' 0..99,
    b'coarse_labels' 0..19, b'filenames', b'batch_label') and `meta` (100 b'fine_label_names' fine0..fine99,
    20 b'coarse_label_names' coarse0..coarse19). The superclass of fine class f is f // 5 here."""
    def batch(n, s, name):
        x, fine = synth_images(n, s, num_classes=100)
        return {b"data": x, b"fine_labels": fine, b"coarse_labels": [f // 5 for f in fine],
                b"filenames": [f"img_{i}.png".encode() for i in range(n)], b"batch_label": name.encode()}
    members = {}
    if train:
        members["train"] = batch(n_train, seed, "training batch 1 of 1")
    if test:
        members["test"] = batch(n_test, seed + 1, "testing batch 1 of 1")
    if meta:
        members["meta"] = {b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
                           b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]}
    return write_cifar_archive(path, members, folder)


def kill_after_epochs(cmd: list[str], run: Path, env: dict, epochs: int = 2) -> None:
    """Start `cmd` (a training command writing into `run`) and SIGKILL it once `epochs` epochs are on disk;
    fails when it finished before it could be killed."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        if (run / "metrics.jsonl").exists() and len((run / "metrics.jsonl").read_text().splitlines()) >= epochs:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "results.json").exists(), "the run finished before it could be killed"


# ---- the command line in this process

def run(argv) -> tuple[int, str, str]:
    """`mimicnet ARGV` in this process: (exit status, stdout, stderr); a usage error's SystemExit is its status."""
    from mimicnet.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as e:  # a usage error (argparse): one line, status 2
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


def one_line_error(argv, *phrases) -> str:
    """`mimicnet ARGV` ends with exit status 2 and one line on stderr holding every phrase, no traceback."""
    rc, _, err = run(argv)
    err = err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for p in phrases:
        assert p in err, err
    return err
