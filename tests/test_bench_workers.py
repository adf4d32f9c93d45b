"""bench/bench_workers.py's times for a run stopped and continued (`--resume`): the stop is left out, the work a
killed claim did before its last heartbeat is counted, a run that went through keeps its wall clock."""
import json
import sqlite3
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from bench_workers import busy_seconds, markdown, unit_seconds  # noqa: E402

T0 = datetime(2026, 12, 7, 16, 0, 0)


def _run(out: Path, claims: list, heartbeats: dict | None = None) -> Path:
    """A results folder whose work study holds `claims`: (unit, stage, state, start s, end s) after T0."""
    out.mkdir()
    (out / "reproduce.json").write_text(json.dumps({"preset": "cpu", "work_id": "abc"}))
    study = optuna.create_study(study_name="mimicnet-cpu-abc", storage=f"sqlite:///{out / 'work.db'}")
    study.set_user_attr("units", sorted({c[0] for c in claims}))
    for unit, stage, state, a, b in claims:
        t = create_trial(state=state, value=0.0 if state == TrialState.COMPLETE else None, params={"x": 0.0},
                         distributions={"x": FloatDistribution(0, 1)}, user_attrs={"unit": unit, "stage": stage})
        t.datetime_start, t.datetime_complete = T0 + timedelta(seconds=a), T0 + timedelta(seconds=b)
        study.add_trial(t)
    with sqlite3.connect(out / "work.db") as con:  # Optuna's table, in UTC as its heartbeat thread fills it
        for number, s in (heartbeats or {}).items():
            tid = con.execute("select trial_id from trials where number = ?", (number,)).fetchone()[0]
            con.execute("insert into trial_heartbeats (trial_id, heartbeat) values (?, ?)",
                        (tid, str((T0 + timedelta(seconds=s)).astimezone(timezone.utc).replace(tzinfo=None))))
    return out


def test_a_run_that_went_through_keeps_its_wall_clock(tmp_path):
    C = TrialState.COMPLETE
    out = _run(tmp_path / "r", [("teachers/t0", "teachers", C, 0, 100), ("teachers/t1", "teachers", C, 101, 200),
                                ("ensemble", "ensemble", C, 200.5, 210), ("seeds/a", "seeds", C, 211, 300),
                                ("baselines/b", "baselines", C, 50, 150)])  # beside the teachers (two workers)
    stages, total, stopped = busy_seconds(out)
    assert stages == {"teachers": 200, "ensemble": 9.5, "seeds": 89, "baselines": 100}
    assert (total, stopped) == (300, 0)


def test_a_stopped_run_leaves_the_stop_out_and_counts_the_killed_claim_to_its_heartbeat(tmp_path):
    C, F = TrialState.COMPLETE, TrialState.FAIL
    # seeds/b was claimed at 300, its worker killed (last heartbeat at 400); the bench was run again at 5,000: the
    # claim was failed then and seeds/b claimed again, continuing its run folder
    out = _run(tmp_path / "r", [("teachers/t0", "teachers", C, 0, 100), ("seeds/a", "seeds", C, 101, 300),
                                ("seeds/b", "seeds", F, 300, 5000), ("seeds/b", "seeds", C, 5000, 5200),
                                ("report", "report", C, 5200, 5210)], heartbeats={2: 400})
    stages, total, stopped = busy_seconds(out)
    assert stopped == 4600
    assert stages == {"teachers": 100, "seeds": 5200 - 101 - 4600, "report": 10}
    assert total == 5210 - 4600


def test_unit_seconds_are_those_of_units_done_in_one_claim(tmp_path):
    C, F = TrialState.COMPLETE, TrialState.FAIL
    out = _run(tmp_path / "r", [("teachers/t0", "teachers", C, 0, 100), ("seeds/a", "seeds", C, 101, 300),
                                ("seeds/b", "seeds", F, 300, 5000), ("seeds/b", "seeds", C, 5000, 5200)])
    assert unit_seconds(out) == {"teachers/t0": 100, "seeds/a": 199}  # seeds/b's time is split between two claims


def test_results_md_shows_each_workers_entry_as_its_record_prints_it():
    """bench/RESULTS.md's tables are generated from bench/results/workers-cpu.json: one edited by hand, or a record
    re-measured without regenerating them, fails here."""
    root = Path(__file__).resolve().parents[1] / "bench"
    text = (root / "RESULTS.md").read_text()
    for name, entry in json.loads((root / "results" / "workers-cpu.json").read_text())["runs"].items():
        assert markdown(entry) in text, name
