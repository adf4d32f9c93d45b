"""bench/gpu_check.py, the one-call GPU check (issue 29), run whole on the CPU with tiny sizes: every step's
code runs here before a GPU ever sees it. A budget too small for the steps skips them with a line and still
writes gpu.json and gpu.md; bad flags are one line and exit status 2."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from synth import write_archive

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.py"
STEPS = ["env", "pytest", "teacher", "students", "label", "trials", "epoch", "estimate"]


def _run(*args, timeout=240):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return write_archive(tmp_path_factory.mktemp("gc") / "a.tar.gz", n_train=300, n_test=50)


def _gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gpu_check", mod)  # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_every_step_runs_tiny_on_the_cpu(archive, tmp_path):
    out = tmp_path / "out"
    p = _run("--device", "cpu", "--tiny", "--out", out, "--data", archive, "--work", tmp_path, "--note", "ci")
    assert p.returncode == 0, p.stderr[-3000:]
    rec = json.loads((out / "gpu.json").read_text())
    assert sorted(rec["steps"]) == sorted(STEPS) and rec["finished"] and rec["tiny"] and rec["note"] == "ci"
    assert {k: s["status"] for k, s in rec["steps"].items()} == {k: "ok" for k in STEPS}, \
        {k: s["line"] for k, s in rec["steps"].items()}
    st = rec["steps"]

    env = st["env"]["results"]
    assert env["torch"] and env["mimicnet"]["version"] and None not in env["dependencies"].values()
    assert "pytest -m gpu" in st["pytest"]["results"]["command"] and (out / "pytest-gpu.txt").is_file()
    assert st["pytest"]["results"]["returncode"] == 0          # on a CPU every GPU test is skipped

    # teacher 8-8-16-32 (3x3 convs, 32/16/8 px): 1,631,552 multiply-adds forward = 3,263,104 FLOPs; a training
    # step is 3x that less the first conv's input gradient (2 x 221,184), as FlopCounterMode counts it
    t = st["teacher"]
    assert t["results"]["gflop_per_image_step"] * 1e9 == 9_346_944
    assert [r["mode"] for r in t["rows"]] == ["fp32 eager", "bf16 + channels_last", "bf16 + channels_last + compile"]
    for r in t["rows"]:
        assert r["images_per_s"] > 0 and r["tflops"] == pytest.approx(r["images_per_s"] * 9_346_944 / 1e12)
        assert r["peak_pct"] is None                            # no bf16 peak for a CPU

    models = st["students"]["results"]["models"]
    assert [m["family"] for m in models] == ["conv0", "conv1", "conv2", "conv3", "conv4"]
    assert len(st["students"]["rows"]) == 15 and all(r.get("images_per_s") for r in st["students"]["rows"])

    label = st["label"]["rows"]
    assert len(label) == 2 and all(r["member_images_per_s"] == pytest.approx(16 * r["images_per_s"]) for r in label)
    assert set(st["trials"]["results"]["per_k"]) == {"1", "2"}

    ep = st["epoch"]["results"]
    assert ep["archive"]["images"] == 1000 and ep["archive"]["copies"] == 4
    assert (ep["archive"]["train"], ep["archive"]["val"]) == (800, 200)     # the subset's 80/20 split
    assert ep["teacher"]["images"] == ep["transfer"]["images"] == ep["student"]["images"] == 800
    assert ep["student"]["params"] == pytest.approx(20_000, rel=0.02)
    assert "acc" not in json.dumps(st["epoch"])                 # sizes and timings, never an accuracy

    est = st["estimate"]["results"]
    assert est["hours"] > 0 and est["target_hours"] == 24 and set(est["stages_hours"]) == {
        "teachers", "transfer", "baselines", "students"}
    assert est["estimate_vs_step4"]                             # the estimate's student rates beside step 4's

    md = (out / "gpu.md").read_text()
    rows = [l for l in md.splitlines() if l.startswith("| ") and not l.startswith("| #")]
    assert len(rows) == sum(len(s["rows"]) for s in st.values())
    assert md.startswith("# GPU check") and "TINY sizes" in md and "| 8 | estimate |" in md


def test_a_budget_too_small_skips_every_step_with_a_line(archive, tmp_path):
    out = tmp_path / "out"
    p = _run("--device", "cpu", "--tiny", "--budget-s", "0.5", "--out", out, "--data", archive)
    assert p.returncode == 0, p.stderr
    rec = json.loads((out / "gpu.json").read_text())
    assert sorted(s["status"] for s in rec["steps"].values()) == ["skipped"] * 8 and rec["finished"]
    assert all(s["line"].startswith("skipped: 0 s of the budget left") for s in rec["steps"].values())
    md = (out / "gpu.md").read_text()
    assert md.count("skipped:") == 8 and not (out / "pytest-gpu.txt").exists()


@pytest.mark.parametrize("args, flag", [(["--budget-s", "0"], "--budget-s"), (["--only", "9"], "--only"),
                                        (["--only", "epoch", "--data", "nope.tar.gz"], "--data")])
def test_bad_flags_are_one_line_and_status_2(tmp_path, args, flag):
    p = _run("--device", "cpu", "--tiny", "--out", tmp_path / "out", *args)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and flag in p.stderr, p.stderr
    assert not (tmp_path / "out" / "gpu.json").exists()


def test_rehearsal_archive_tiles_shifted_and_mirrored_copies(archive, tmp_path):
    from mimicnet.data.cifar import load_cifar
    gc = _gpu_check()
    made = gc.write_rehearsal(archive, 1000, tmp_path / "r.tar", tile_from=300)
    assert (made["images"], made["copies"], made["test_images"]) == (1000, 4, 50)
    src, r = load_cifar(archive), load_cifar(tmp_path / "r.tar")
    x, y = src.x_train[:300].numpy(), src.y_train[:300].numpy()
    rx, ry = r.x_train.numpy(), r.y_train.numpy()
    assert rx.shape == (1000, 3, 32, 32) and (ry == np.concatenate([y, y, y, y])[:1000]).all()
    assert (rx[:300] == x).all() and (rx[300:600] == x[..., ::-1]).all()
    dy, dx = gc.SHIFTS[1]                                       # copy 2: shifted by (2, 0), edge rows repeated
    assert (dy, dx) == (2, 0)
    assert (rx[600:900, :, :30] == x[:, :, 2:]).all() and (rx[600:900, :, 30:] == x[:, :, 31:]).all()
    assert (rx[900:] == rx[600:700][..., ::-1]).all()           # copy 3: copy 2 mirrored, cut at 1,000
    assert (r.x_test == src.x_test).all()
