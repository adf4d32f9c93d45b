"""`mimicnet reproduce --preset smoke`: the whole pipeline in about a minute, and a killed run continues."""
from __future__ import annotations

import json
import random
import signal
import subprocess
import sys

import pytest

from mimicnet.core.index import read_index
from mimicnet.studies.main import PRESETS, apply_overrides
from mimicnet.core.errors import ConfigError

from conftest import ONE_THREAD, same_as_ref, smoke_cmd


def test_presets_and_overrides():
    assert {"smoke", "cpu", "paper"} <= set(PRESETS)
    paper = PRESETS["paper"]
    assert paper.transfer_epochs == 160 and paper.student_budgets == (1_000_000, 3_160_000, 10_000_000, 31_600_000)
    assert paper.teacher_base["family"] == "teacher" and not paper.teacher_base.get("batchnorm")  # S2 as written
    p = apply_overrides(PRESETS["cpu"], ["student_trials=5", "student_budgets=[100000]", "sampler=tpe"])
    assert (p.student_trials, p.student_budgets, p.sampler) == (5, (100_000,), "tpe")
    with pytest.raises(ConfigError, match="no such preset field"):
        apply_overrides(PRESETS["cpu"], ["nope=1"])


def _cmd(archive, out):
    return [sys.executable, "-m", "mimicnet.cli", "reproduce", "--preset", "smoke", "--data", str(archive),
            "--out", str(out), "--device", "cpu"]


@pytest.mark.parametrize("kills", [3, pytest.param(10, marks=pytest.mark.long)])
def test_smoke_preset_killed_at_seeded_moments_ends_with_the_table_of_an_uninterrupted_run(smoke_ref, tmp_path,
                                                                                         kills):
    """SIGKILL at 3 (or, `-m long`, 10) seeded random moments, then run to the end: the same results table
    (every cell's trials, best-by-validation val and test, top-5 and seed statistics) and the same runs as the
    shared uninterrupted run (conftest.smoke_ref, one thread like these)."""
    archive, ref, total = smoke_ref
    out = tmp_path / "killed"
    rng = random.Random(12)
    moments = sorted(rng.uniform(2.0, max(3.0, total / 4)) for _ in range(kills))  # after start-up, spread out
    for k in moments:
        proc = subprocess.Popen(smoke_cmd(archive, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env=ONE_THREAD)
        try:
            proc.wait(timeout=k)       # finished before its kill time: nothing left to interrupt
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    r = subprocess.run(smoke_cmd(archive, out), capture_output=True, text=True, timeout=600, env=ONE_THREAD)
    assert r.returncode == 0, r.stderr[-2000:]
    same_as_ref(out, ref)   # nothing finished was trained or indexed again, nothing is missing
    for name in ("ensemble/ensemble.json", "transfer/manifest.json", "results.txt", "reproduce.json",
                 "report/report.html"):
        assert (out / name).exists(), name
    rows = read_index(out / "index.csv")
    kinds = {(r["kind"], r["family"]) for r in rows}
    assert {("teacher", "teacher"), ("ensemble", "ensemble"), ("baseline", "conv2")} <= kinds
    assert {f"conv{k}" for k in range(5)} <= {f for k, f in kinds if k == "student"}
    assert len([r for r in rows if r["kind"] == "teacher"]) == 2
    students = [r for r in rows if r["kind"] == "student"]
    assert all(r["teacher"] and r["mimic_agreement"] != "" for r in students)
    assert "student" in r.stdout and "conv4" in r.stdout and "report:" in r.stdout
    rec = json.loads((out / "reproduce.json").read_text())
    assert rec["preset"] == "smoke" and {"teachers", "transfer", "students"} <= set(rec["stages"])
    # a further run has nothing left to do and changes nothing
    before = (out / "index.csv").read_text()
    assert subprocess.run(smoke_cmd(archive, out), capture_output=True, timeout=300, env=ONE_THREAD).returncode == 0
    assert (out / "index.csv").read_text() == before
