"""Transfer sets: layout and order, teacher labels, determinism, kill-and-resume, replay, flat memory."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from mimicnet.cli import transfer as cli_transfer
from mimicnet.distill import transfer, transfer_format
from mimicnet.data.augment import apply_params, to_uint8
from mimicnet.distill.ensemble import build_ensemble, load_teacher
from mimicnet.train.config import TrainConfig
from mimicnet.train.loop import fit
from mimicnet.data.splits import load_train_data
from mimicnet.models.inference import predict_logits
from mimicnet.distill.transfer import TransferConfig, TransferError, TransferSet, generate, verify

from synth import write_archive

QUIET = dict(log=lambda s: None, progress=False)
CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A 200-image training split (250 - 20% validation) and an ensemble teacher of two tiny runs."""
    d = tmp_path_factory.mktemp("transfer")
    archive = write_archive(d / "a.tar.gz", n_train=250, n_test=50)
    runs = []
    for seed, scale in ((1, 1.0), (2, 1.1)):
        cfg = TrainConfig.of(family="conv2", widths=(4, 6, 16), data=str(archive), batch_size=50, lr=0.02,
                          max_epochs=1, device="cpu", seed=seed, input_scale=scale, scale_min=28)
        fit(cfg, d / f"run{seed}", log=lambda s: None)
        runs.append(d / f"run{seed}")
    data = load_train_data(str(archive))
    build_ensemble(runs, d / "ens", data, "topk", 2, "cpu", log=lambda s: None)
    return archive, d / "ens", runs, data


def cfg_for(archive, **kw):
    base = dict(data=str(archive), epochs=3, seed=5, chunk=64, batch_size=50, device="cpu")  # 64 does not divide 200
    base.update(kw)
    return TransferConfig(**base)


@pytest.fixture(scope="module")
def images_set(setup, tmp_path_factory):
    archive, teacher, _, _ = setup
    out = tmp_path_factory.mktemp("set") / "images"
    generate(cfg_for(archive), teacher, out, **QUIET)
    return out


def file_bytes(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.name != "manifest.json"}


def test_layout_order_and_teacher_labels(setup, images_set):
    archive, teacher_dir, _, data = setup
    ts = TransferSet(images_set)
    n, C = 200, 10
    assert (ts.epochs, ts.n, ts.rows, ts.num_classes, ts.mode) == (3, n, 3 * n, C, "images")
    assert ts.teacher["kind"] == "ensemble" and ts.teacher["val_acc"] is not None
    sizes = {p.name: p.stat().st_size for p in images_set.iterdir()}
    assert sizes["images.u8"] == 3 * n * 3072 and sizes["logits.f16"] == 3 * n * C * 2
    assert sizes["source.i32"] == 3 * n * 4 and sizes["params.f32"] == 3 * n * 9 * 4
    assert sizes["train_labels.i32"] == n * 4
    assert not any(name.endswith(".partial") for name in sizes) and "progress.json" not in sizes

    # epoch-major; every epoch is a (different) permutation of the training split
    src = np.fromfile(images_set / "source.i32", dtype="<i4").reshape(3, n)
    for e in range(3):
        assert sorted(src[e]) == list(range(n))
        assert ts.epoch_rows(e) == (e * n, (e + 1) * n)
    assert not (src[0] == src[1]).all()

    imgs, logits, labels = ts.read(*ts.epoch_rows(1))
    assert imgs.dtype == torch.uint8 and imgs.shape == (n, 3, 32, 32)
    assert logits.dtype == torch.float32 and logits.shape == (n, C)
    assert labels.dtype == torch.int64 and torch.equal(labels, data.train.y[torch.from_numpy(src[1]).long()])
    # stored images are the stored params applied to the source images (what replay relies on) ...
    params = transfer_format._array_to_params(torch.from_numpy(np.fromfile(images_set / "params.f32", "<f4").reshape(-1, 9)))
    rows = slice(n, 2 * n)
    rebuilt = to_uint8(apply_params(data.train.x[torch.from_numpy(src[1]).long()], {k: v[rows] for k, v in params.items()}))
    assert torch.equal(rebuilt, imgs)
    assert not torch.equal(imgs, data.train.x[torch.from_numpy(src[1]).long()])   # ... and really augmented
    # ... and the logits are the teacher's on exactly those images (float16 storage: ~3 significant digits)
    teacher, _ = load_teacher(teacher_dir)
    some = imgs[[0, 7, 63, 64, 199]]
    want = predict_logits(teacher, some, 1.0, CPU)
    assert torch.allclose(logits[[0, 7, 63, 64, 199]], want, rtol=2e-3, atol=2e-3)
    # a range that straddles an epoch boundary and a chunk boundary reads the same as the pieces
    a = ts.read(190, 260)
    b0, b1 = ts.read(190, 200), ts.read(200, 260)
    for x, y0, y1 in zip(a, b0, b1):
        assert torch.equal(x, torch.cat([y0, y1]))
    assert [len(t) for t in ts.read(3 * n, 3 * n)] == [0, 0, 0]
    with pytest.raises(IndexError):
        ts.read(0, 3 * n + 1)


def test_float32_logits_match_the_teacher(setup, tmp_path):
    archive, _, runs, _ = setup
    out = tmp_path / "f32"
    man = generate(cfg_for(archive, epochs=1, logits_dtype="float32"), runs[1], out, **QUIET)
    assert man["teacher"]["kind"] == "run" and (out / "logits.f32").exists()
    ts = TransferSet(out)
    imgs, logits, _ = ts.read(0, 50)
    teacher, _ = load_teacher(runs[1])
    assert torch.allclose(logits, predict_logits(teacher, imgs, 1.0, CPU), atol=1e-5)


def test_same_seed_same_files_other_seed_other_files(setup, images_set, tmp_path, monkeypatch):
    archive, teacher, _, _ = setup
    generate(cfg_for(archive), teacher, tmp_path / "again", **QUIET)
    assert file_bytes(tmp_path / "again") == file_bytes(images_set)
    a, b = json.loads((images_set / "manifest.json").read_text()), json.loads((tmp_path / "again" / "manifest.json").read_text())
    assert a["identity"] == b["identity"] and a["files"] == b["files"]
    generate(cfg_for(archive, seed=6), teacher, tmp_path / "other", **QUIET)
    assert (tmp_path / "other" / "source.i32").read_bytes() != (images_set / "source.i32").read_bytes()
    # epoch e depends on (seed, e) only: a 1-epoch set is the first epoch of the 3-epoch set
    generate(cfg_for(archive, epochs=1), teacher, tmp_path / "one", **QUIET)
    for name in ("images.u8", "logits.f16", "source.i32", "params.f32"):
        one = (tmp_path / "one" / name).read_bytes()
        assert one == (images_set / name).read_bytes()[:len(one)]
    # a finished set is returned as is, without even loading the teacher's weights;
    # another config into the same folder is refused
    def no_weights(*a, **k):
        raise AssertionError("teacher loaded")
    monkeypatch.setattr(transfer, "load_teacher", no_weights)
    assert generate(cfg_for(archive), teacher, tmp_path / "again", **QUIET) == b
    with pytest.raises(TransferError, match="another transfer set"):
        generate(cfg_for(archive, epochs=4), teacher, tmp_path / "again", **QUIET)


class Crash(Exception):
    pass


@pytest.mark.parametrize("crash_at", [(1, 64), (0, 0)])
def test_killed_generation_resumes_to_identical_files(setup, images_set, tmp_path, monkeypatch, crash_at):
    archive, teacher, _, _ = setup
    out = tmp_path / "cut"

    def hook(epoch, start):
        if (epoch, start) == crash_at:   # mid-epoch: part of that epoch's rows are already written
            raise Crash
    monkeypatch.setattr(transfer, "_on_chunk", hook)
    with pytest.raises(Crash):
        generate(cfg_for(archive), teacher, out, **QUIET)
    assert not (out / "manifest.json").exists() and not (out / "images.u8").exists()
    prog = json.loads((out / "progress.json").read_text())
    assert prog["epochs_done"] == crash_at[0]
    with pytest.raises(TransferError, match=rf"incomplete transfer set \({crash_at[0]}/3 epochs\); run the same "
                       "`mimicnet transfer` command to finish it"):
        TransferSet(out)

    monkeypatch.setattr(transfer, "_on_chunk", lambda e, a: None)
    logs = []
    man = generate(cfg_for(archive), teacher, out, log=logs.append, progress=False)
    assert any("resuming" in line for line in logs)
    assert file_bytes(out) == file_bytes(images_set)
    assert man["this_run"]["images"] == (3 - crash_at[0]) * 200
    assert not (out / "progress.json").exists()
    TransferSet(out)


def test_kill_while_finishing_is_finished_by_a_rerun(setup, images_set, tmp_path, monkeypatch):
    archive, teacher, _, _ = setup
    out = tmp_path / "fin"
    real = transfer._hash_files

    def crash(paths):
        raise Crash
    monkeypatch.setattr(transfer, "_hash_files", crash)       # all data written and renamed, no manifest yet
    with pytest.raises(Crash):
        generate(cfg_for(archive), teacher, out, **QUIET)
    assert (out / "images.u8").exists() and not (out / "manifest.json").exists()
    with pytest.raises(TransferError, match=r"incomplete transfer set \(3/3 epochs\)"):
        TransferSet(out)
    monkeypatch.setattr(transfer, "_hash_files", real)
    man = generate(cfg_for(archive), teacher, out, **QUIET)
    assert man["this_run"]["images"] == 0 and file_bytes(out) == file_bytes(images_set)


def test_replay_mode_is_bit_identical_to_stored_images(setup, images_set, tmp_path):
    archive, teacher, _, _ = setup
    out = tmp_path / "replay"
    generate(cfg_for(archive, mode="replay"), teacher, out, **QUIET)
    assert not (out / "images.u8").exists()
    for name in ("logits.f16", "source.i32", "params.f32"):      # the teacher saw the same images
        assert (out / name).read_bytes() == (images_set / name).read_bytes()
    rep, ref = TransferSet(out), TransferSet(images_set)
    assert rep.mode == "replay"
    for start, stop in ((0, 600), (0, 1), (13, 77), (199, 401), (555, 600)):   # windows unlike the chunks
        for a, b in zip(rep.read(start, stop), ref.read(start, stop)):
            assert torch.equal(a, b)
    with pytest.raises(TransferError, match="not the data"):
        TransferSet(out, data=str(write_archive(tmp_path / "x.tar.gz", n_train=250, n_test=10, seed=9)))
    # a replay set from before the spline resize (no "resize" in its manifest) is refused, not misread
    man = json.loads((out / "manifest.json").read_text())
    del man["resize"]
    (out / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(TransferError, match="another resize \\(bicubic"):
        TransferSet(out)


def test_verify_detects_damage_and_set_refuses_wrong_sizes(images_set, tmp_path):
    import shutil
    d = tmp_path / "copy"
    shutil.copytree(images_set, d)
    assert verify(d)["rows"] == 600
    with open(d / "logits.f16", "r+b") as f:
        f.seek(100)
        b = f.read(1)
        f.seek(100)
        f.write(bytes([b[0] ^ 1]))
    with pytest.raises(TransferError, match="checksum mismatch in logits.f16"):
        verify(d)
    with open(d / "source.i32", "ab") as f:
        f.write(b"\0")
    with pytest.raises(TransferError, match="source.i32"):
        TransferSet(d)
    with pytest.raises(TransferError, match="not a transfer set"):
        TransferSet(tmp_path)


def test_cli(setup, tmp_path, capsys):
    archive, teacher, _, _ = setup
    p = argparse.ArgumentParser()
    cli_transfer.register(p.add_subparsers(dest="command"))
    out = tmp_path / "cli"
    args = p.parse_args(["transfer", "--teacher", str(teacher), "--data", str(archive), "--epochs", "2", "--out",
                         str(out), "--mode", "replay", "--logits-dtype", "float32", "--seed", "1", "--device", "cpu"])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "2 epochs × 200 images = 400 rows" in text and "images/s" in text and "disk" in text
    args = p.parse_args(["transfer", "--verify", str(out)])
    assert args.func(args) == 0 and "OK" in capsys.readouterr().out
    with pytest.raises(TransferError, match="--teacher"):
        args = p.parse_args(["transfer", "--data", str(archive)])
        args.func(args)
    with pytest.raises(TransferError, match="epochs must be"):
        generate(cfg_for(archive, epochs=0), teacher, tmp_path / "bad", **QUIET)


# ---------------------------------------------------------------------------------------- memory

CHILD = textwrap.dedent("""
    import resource, sys
    from mimicnet.distill.transfer import TransferConfig, generate
    data, teacher, out, epochs = sys.argv[1:]
    generate(TransferConfig(data=data, epochs=int(epochs), chunk=250, batch_size=250, device="cpu"), teacher, out,
             log=lambda s: None, progress=False)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)  # Linux: KiB
""")


def test_peak_memory_does_not_grow_with_epochs(setup, tmp_path):
    """2 vs 12 epochs of 500 images: the larger set writes 10 × 500 × 3 KiB = 15.4 MB more images. Writing
    through np.memmap keeps those dirty pages in RSS; plain pwrite must not, so peak RSS barely moves."""
    _, teacher, _, _ = setup
    archive = write_archive(tmp_path / "m.tar.gz", n_train=625, n_test=10)   # 500 training images
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    peak = {}
    for epochs in (2, 12):
        r = subprocess.run([sys.executable, "-c", CHILD, str(archive), str(teacher), str(tmp_path / f"e{epochs}"),
                            str(epochs)], capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        peak[epochs] = int(r.stdout.split()[-1])
    extra_bytes = 10 * 500 * (3072 + 10 * 2 + 4 + 36)
    growth = peak[12] - peak[2]
    assert growth < 0.25 * extra_bytes, (peak, extra_bytes)   # memmap-style writing would grow by ~all of it
    assert abs(growth) < 0.10 * peak[2], peak


def test_shards_merged_are_the_whole_set(setup, images_set, tmp_path):
    """Epochs made as shards (each a set of its own, as many workers make them) and merged after a check of
    every shard's checksums: the same files, byte for byte, and the same identity as one generate; a damaged
    shard is refused, and the shards are gone once the set is finished."""
    archive, teacher, _, _ = setup
    cfg, out = cfg_for(archive), tmp_path / "sharded"
    ranges = transfer.shard_ranges(cfg.epochs, most=2)
    assert ranges == [(0, 2), (2, 3)]
    for a, b in reversed(ranges):  # in any order
        transfer.generate_shard(cfg, teacher, out, a, b, log=lambda s: None)
    shard = out / "shards" / "e2-3" / "source.i32"
    keep = shard.read_bytes()
    shard.write_bytes(keep[::-1])
    with pytest.raises(TransferError, match="checksum mismatch"):
        transfer.merge_shards(cfg, teacher, out, log=lambda s: None, ranges=ranges)
    shard.write_bytes(keep)
    man = transfer.merge_shards(cfg, teacher, out, log=lambda s: None, ranges=ranges)
    assert file_bytes(out) == file_bytes(images_set) and not (out / "shards").exists()
    assert man["identity"] == json.loads((images_set / "manifest.json").read_text())["identity"]
    assert transfer.generate_shard(cfg, teacher, out, 0, 2, log=lambda s: None) is None  # the set is finished
