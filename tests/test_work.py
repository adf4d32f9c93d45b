"""Units of work shared through Optuna's storage (studies/work.py, issue 25): many workers, one study.

Fast tests drive the worker loop with toy units (files written, no training); the smoke-preset tests run
`mimicnet reproduce` as two workers through the journal file backend and through PostgreSQL, and a worker
SIGKILLed at seeded moments beside another, and compare with one uninterrupted worker's table and index.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from mimicnet import cli
from mimicnet.core.errors import ConfigError
from mimicnet.data.splits import load_train_data
from mimicnet.studies.main import PRESETS, Study
from mimicnet.search import recovery as search_run
from mimicnet.studies.work import Unit, Worker, open_work_study, progress_by_stage, unit_states, worker_slots

from conftest import ONE_THREAD, same_as_ref, smoke_cmd
from synth import write_archive
from test_search import finish, pg_url  # noqa: F401  (pg_url: MIMICNET_TEST_POSTGRES or a throwaway server)

# A worker over toy units: unit u writes OUT/u.<pid> after sleeping, and checks that what it needs is done.
TOY = r"""
import os, sys, time
from pathlib import Path
from mimicnet.studies.work import Unit, Worker, open_work_study
storage, out = sys.argv[1], Path(sys.argv[2])
def make(name, needs=()):
    def run():
        for d in needs:
            assert list(out.glob(d + ".*")), f"{name} ran before {d}"
        time.sleep(float(os.environ.get("TOY_SLEEP", "0.3")))
        (out / f"{name}.{os.getpid()}").write_text(name)
    return Unit(name, name.rstrip("0123456789"), run, needs=tuple(needs))
units = [make("a0"), make("a1"), make("b0", ["a0", "a1"]), make("c0", ["b0"]), make("c1", ["b0"]),
         make("c2", ["b0"]), make("d0", ["c0", "c1", "c2"])]
Worker(units, open_work_study(storage, heartbeat_interval=1, grace_period=3), poll=0.2).run()
print("done", flush=True)
"""


def toy_worker(storage: str, out: Path, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", TOY, storage, str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **{k: str(v) for k, v in env.items()}})


NAMES = ["a0", "a1", "b0", "c0", "c1", "c2", "d0"]


def ran(out: Path) -> dict[str, list[str]]:
    return {n: sorted(p.suffix[1:] for p in out.glob(n + ".*")) for n in NAMES}


def test_two_workers_share_units_each_runs_once_after_what_it_needs(tmp_path, capsys):
    storage = str(tmp_path / "work.log")  # a path: Optuna's journal file
    out = tmp_path / "out"
    out.mkdir()
    a, b = toy_worker(storage, out), toy_worker(storage, out)
    finish(a), finish(b)
    runs = ran(out)
    assert all(len(v) == 1 for v in runs.values()), runs        # every unit once, none missing
    assert len({v[0] for v in runs.values()}) == 2                # both workers took units
    study = open_work_study(storage)
    states = unit_states(study.get_trials())
    assert {n: s for n, (s, _) in states.items()} == {n: "done" for n in NAMES}
    assert not [t for t in study.get_trials() if t.state == TrialState.RUNNING]
    rows = {r["stage"]: r for r in progress_by_stage(study)}
    assert rows["c"]["units"] == rows["c"]["done"] == 3 and not rows["c"]["running"]
    # a worker started on a finished study goes through every unit once more itself, unclaimed (each unit of
    # reproduce then finds its artifact finished and checks it), claiming nothing
    n_trials = len(study.get_trials())
    c = toy_worker(storage, out)
    finish(c)
    assert ran(out) == {n: sorted(v + [str(c.pid)]) for n, v in runs.items()}
    assert len(study.get_trials()) == n_trials
    assert cli.main(["status", "--storage", storage]) == 0
    shown = capsys.readouterr().out
    assert "7/7 units done; finished" in shown and "  c " in shown


def test_status_of_a_study_under_way(tmp_path, capsys):
    """Per stage done / running (worker, since) / waiting, and an ETA from the finished units' rate."""
    storage = str(tmp_path / "work.log")
    study = open_work_study(storage)
    study.set_user_attr("units", ["a0", "a1", "b0"])
    for name, state in (("a0", TrialState.COMPLETE), ("a1", TrialState.RUNNING)):
        study.enqueue_trial({}, user_attrs={"unit": name, "stage": "a", "worker": "h:1"})
        t = study.ask()
        if state == TrialState.COMPLETE:
            time.sleep(0.2)
            study.tell(t, 1.0)
    assert cli.main(["status", "--storage", storage]) == 0
    shown = capsys.readouterr().out
    assert "a1 on h:1 since" in shown and "1/3 units done" in shown and "not yet measured" in shown
    assert cli.main(["status", str(tmp_path)]) == 2  # no reproduce.json there


def test_a_killed_workers_unit_is_run_again_by_the_other(tmp_path):
    """SIGKILL one worker inside a unit: the other (same machine) sees its host:pid gone, fails the claim and
    runs the unit itself; every unit ends done once, nothing RUNNING."""
    storage = str(tmp_path / "work.log")
    out = tmp_path / "out"
    out.mkdir()
    a = toy_worker(storage, out, TOY_SLEEP=30)  # stuck in its first unit until killed
    study = open_work_study(storage)
    deadline = time.time() + 120
    while time.time() < deadline and not [t for t in study.get_trials() if t.state == TrialState.RUNNING
                                          and t.user_attrs.get("unit")]:
        time.sleep(0.2)
    a.send_signal(signal.SIGKILL)
    a.communicate()
    b = toy_worker(storage, out)
    finish(b)
    runs = ran(out)
    assert all(v == [str(b.pid)] for v in runs.values()), runs
    states = unit_states(study.get_trials())
    assert all(s == "done" for s, _ in states.values()) and len(states) == len(NAMES)
    assert not [t for t in study.get_trials() if t.state == TrialState.RUNNING]


@pytest.mark.parametrize("backend", ["journal", "sqlite"])
def test_a_claim_killed_before_it_named_its_worker_is_recovered(tmp_path, monkeypatch, backend):
    """A kill between Optuna's claim (WAITING -> RUNNING) and the worker's first write leaves a RUNNING unit
    that names no worker; the work study has no heartbeats, so before this it stayed RUNNING and every later
    worker waited for it for ever (seen: the resumed smoke run of test_reproduce hung). Once it is
    UNCLAIMED_GRACE seconds old it is failed and retried, and the next worker runs it."""
    storage = str(tmp_path / "work.log") if backend == "journal" else f"sqlite:///{tmp_path / 'work.db'}"
    study = open_work_study(storage)
    study.enqueue_trial({}, user_attrs={"unit": "u", "stage": "s"})
    study.ask()  # claimed by a process that dies before it names itself
    monkeypatch.setattr(search_run, "UNCLAIMED_GRACE", 3600)
    search_run.recover_lost(study)
    assert [t.state for t in study.get_trials()] == [TrialState.RUNNING]        # a fresh claim: left alone
    monkeypatch.setattr(search_run, "UNCLAIMED_GRACE", -1)
    done = []
    Worker([Unit("u", "s", lambda: done.append(1))], study, poll=0.05).run()
    assert done == [1]
    assert unit_states(study.get_trials())["u"][0] == "done"
    assert not [t for t in study.get_trials() if t.state == TrialState.RUNNING]


def test_worker_slots_split_threads_and_pin_gpus():
    assert worker_slots(None, None, cpus=2) == [] and worker_slots(1, None, cpus=2) == []
    two = worker_slots(2, None, cpus=2)
    assert [s["OMP_NUM_THREADS"] for s in two] == ["1", "1"] and not any("CUDA_VISIBLE_DEVICES" in s for s in two)
    assert worker_slots(4, None, cpus=16)[0]["OMP_NUM_THREADS"] == "4"
    assert worker_slots(4, None, cpus=16, threads="1")[0]["OMP_NUM_THREADS"] == "1"  # as the user set it
    gpu = worker_slots(None, "0,3", per_gpu=2, cpus=16)
    assert [s["CUDA_VISIBLE_DEVICES"] for s in gpu] == ["0", "0", "3", "3"]
    assert {s["OMP_NUM_THREADS"] for s in gpu} == {"4"} and len({s["MIMICNET_WORKER"] for s in gpu}) == 4
    for bad in (dict(workers=0, gpus=None), dict(workers=None, gpus="0,0"), dict(workers=None, gpus="a")):
        with pytest.raises(ConfigError):
            worker_slots(**bad)


# ------------------------------------------------------------------------------ the smoke preset, many workers

def test_two_workers_through_the_journal_file(smoke_ref, tmp_path, capsys):
    archive, ref, _ = smoke_ref
    out = tmp_path / "two"
    r = subprocess.run(smoke_cmd(archive, out, "--workers", "2", "--storage", str(tmp_path / "journal.log")),
                       capture_output=True, text=True, timeout=900, env=ONE_THREAD)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    same_as_ref(out, ref)
    study = open_work_study(str(tmp_path / "journal.log"), _work_name(out))
    done = [t for t in study.get_trials() if t.state == TrialState.COMPLETE and not t.user_attrs.get("noop")]
    assert len({t.user_attrs["worker"] for t in done}) == 2          # both workers took units
    assert not [t for t in study.get_trials() if t.state == TrialState.RUNNING]
    assert cli.main(["status", str(out)]) == 0                        # the journal file its record names
    shown = capsys.readouterr().out
    assert f"{len(study.user_attrs['units'])}/{len(study.user_attrs['units'])} units done; finished" in shown
    assert all(f"  {stage} " in shown for stage in ("teachers", "ensemble", "transfer", "students", "seeds"))
    # a plain `reproduce` on their folder joins them through the journal file (not a work.db of its own), from
    # another folder: the record names the journal by its absolute path
    n = len(study.get_trials())
    r = subprocess.run(smoke_cmd(archive, out.resolve()), capture_output=True, text=True, timeout=300,
                       env=ONE_THREAD, cwd=tmp_path.parent)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "joining the workers of" in r.stdout and not (out / "work.db").exists()
    assert len(open_work_study(str(tmp_path / "journal.log"), _work_name(out)).get_trials()) == n  # all done
    same_as_ref(out, ref)


def test_workers_that_open_a_new_folder_together_share_one_work_study(tmp_path):
    """Two workers started at one moment both open the folder before either has written its record (the record
    is written once the data is checked): the second to write takes the first's work study, never its own."""
    archive = write_archive(tmp_path / "a.tar.gz", n_train=200, n_test=50)
    p = dataclasses.replace(PRESETS["smoke"], data=str(archive))
    a, b = Study(p, tmp_path / "out", "a"), Study(p, tmp_path / "out", "b")
    assert a.work_name != b.work_name and not (tmp_path / "out" / "reproduce.json").exists()
    data = load_train_data(p.data, p.max_train)
    a.save_checked(data)
    b.save_checked(data)
    assert a.work_name == b.work_name == _work_name(tmp_path / "out")
    other = write_archive(tmp_path / "b.tar.gz", n_train=200, n_test=50, seed=1)
    c = Study(dataclasses.replace(p, data=str(other)), tmp_path / "out", "c")
    with pytest.raises(ConfigError, match="the data changed"):
        c.save_checked(load_train_data(str(other), p.max_train))


def test_a_plain_worker_takes_the_storage_its_folders_record_names(tmp_path, monkeypatch):
    """Workers through a journal file or a database: a later command without --storage on their folder uses the
    journal file the record names (by its absolute path, whatever folder it runs in), asks for a database URL
    whose password the record hid, and another storage than the record's is refused."""
    archive = write_archive(tmp_path / "a.tar.gz", n_train=200, n_test=50)
    p = dataclasses.replace(PRESETS["smoke"], data=str(archive))
    data = load_train_data(p.data, p.max_train)
    monkeypatch.chdir(tmp_path)
    Study(p, tmp_path / "j", "a", storage="work.journal").save_checked(data)
    assert json.loads((tmp_path / "j" / "reproduce.json").read_text())["storage"] == str(tmp_path / "work.journal")
    monkeypatch.chdir(tmp_path / "j")
    assert Study(p, tmp_path / "j", "b").storage == str(tmp_path / "work.journal")
    for same in ("../work.journal", f"journal:{tmp_path / 'work.journal'}"):  # the same file, spelled otherwise
        assert Study(p, tmp_path / "j", "c", storage=same).storage == same
    for other in ("other.journal", "postgresql://u@db.example/mimicnet"):
        with pytest.raises(ConfigError, match=r"--storage .*: the workers of .* share .*work.journal"):
            Study(p, tmp_path / "j", "d", storage=other)
    url = "postgresql://u:s3cret@db.example/mimicnet"
    Study(p, tmp_path / "pg", "a", storage=url).save_checked(data)
    with pytest.raises(ConfigError, match=r"share postgresql://u:\*\*\*@db.example/mimicnet; give it with --storage"):
        Study(p, tmp_path / "pg", "b")
    # the same database with its password, without it (~/.pgpass), or with psycopg2 named; not another database
    for same in (url, "postgresql://u@db.example/mimicnet", "postgresql+psycopg2://u:s3cret@db.example/mimicnet"):
        assert Study(p, tmp_path / "pg", "c", storage=same).storage == same
    with pytest.raises(ConfigError, match="a second storage"):
        Study(p, tmp_path / "pg", "d", storage="postgresql://u:s3cret@db.example/other")
    Study(p, tmp_path / "trust", "a", storage="postgresql://u@db.example/mimicnet").save_checked(data)
    assert Study(p, tmp_path / "trust", "b").storage == "postgresql://u@db.example/mimicnet"  # no password to hide
    # a record of older code kept a journal path relative to a folder it does not name: asked for, not guessed
    rec = json.loads((tmp_path / "j" / "reproduce.json").read_text())
    (tmp_path / "j" / "reproduce.json").write_text(json.dumps({**rec, "storage": "work.journal"}))
    with pytest.raises(ConfigError, match="give it with --storage"):
        Study(p, tmp_path / "j", "e")
    assert Study(p, tmp_path / "j", "f", storage="../work.journal").storage == "../work.journal"
    # workers that share the folder's own work.db (no --storage): a worker given a storage would not meet them
    Study(p, tmp_path / "local", "a").save_checked(data)
    assert Study(p, tmp_path / "local", "b", storage="work.journal").storage == "work.journal"  # nothing ran yet
    (tmp_path / "local" / "work.db").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"--storage work.journal: the workers of .*local share its own work.db"):
        Study(p, tmp_path / "local", "c", storage="work.journal")
    assert Study(p, tmp_path / "local", "d").storage is None


def _work_name(out: Path) -> str:
    rec = json.loads((out / "reproduce.json").read_text())
    return f"mimicnet-{rec['preset']}-{rec['work_id']}"


def test_two_workers_through_postgres_never_record_its_password(smoke_ref, pg_url, tmp_path, capsys):
    """Two `reproduce` processes with one PostgreSQL URL (two machines sharing a folder): the runs of one
    worker; the URL's password (one is added: a trust server ignores it) is in no record."""
    from sqlalchemy.engine import make_url
    archive, ref, _ = smoke_ref
    url = make_url(pg_url)
    secret = url.password or "s3cret-pw"
    url = url.set(password=secret).render_as_string(hide_password=False)
    out = tmp_path / "pg"
    a, b = (subprocess.Popen(smoke_cmd(archive, out, "--storage", url), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env=ONE_THREAD) for _ in range(2))
    logs = finish(a, timeout=900) + finish(b, timeout=900)
    same_as_ref(out, ref)
    rec = (out / "reproduce.json").read_text()
    assert secret not in rec and "***" in json.loads(rec)["storage"] and secret not in logs
    study = open_work_study(url, _work_name(out))
    done = [t for t in study.get_trials() if t.state == TrialState.COMPLETE and not t.user_attrs.get("noop")]
    assert len({t.user_attrs["worker"] for t in done}) == 2 and len(done) == len(study.user_attrs["units"])
    assert cli.main(["status", str(out)]) == 2                        # the record keeps no password: say so
    assert "--storage" in capsys.readouterr().err
    assert cli.main(["status", str(out), "--storage", url]) == 0 and "units done; finished" in capsys.readouterr().out


def test_a_worker_killed_at_seeded_moments_beside_another_leaves_the_uninterrupted_table(smoke_ref, tmp_path):
    """Worker A runs to the end; worker B is SIGKILLed at 2 seeded random moments (restarted each time) and once
    more after A finished: the same table and runs as one uninterrupted worker, nothing left RUNNING."""
    _killed_beside_another(smoke_ref, tmp_path, kills=2)


@pytest.mark.long  # 3-4 minutes: the 2-kill test above runs in the default suite
def test_a_worker_killed_at_five_seeded_moments(smoke_ref, tmp_path):
    _killed_beside_another(smoke_ref, tmp_path, kills=5)


def _killed_beside_another(smoke_ref, tmp_path, kills: int) -> None:
    archive, ref, _ = smoke_ref
    out = tmp_path / "killed"
    a = subprocess.Popen(smoke_cmd(archive, out), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env=ONE_THREAD)
    rng = random.Random(25)
    for k in range(kills):
        b = subprocess.Popen(smoke_cmd(archive, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env=ONE_THREAD)
        try:
            b.wait(timeout=rng.uniform(5.0, 25.0))
        except subprocess.TimeoutExpired:
            b.send_signal(signal.SIGKILL)
            b.wait()
    finish(a, timeout=900)
    r = subprocess.run(smoke_cmd(archive, out), capture_output=True, text=True, timeout=900, env=ONE_THREAD)
    assert r.returncode == 0, r.stderr[-2000:]
    same_as_ref(out, ref)
    study = open_work_study(f"sqlite:///{out / 'work.db'}", _work_name(out))
    assert not [t for t in study.get_trials() if t.state == TrialState.RUNNING]
    done = [t.user_attrs["unit"] for t in study.get_trials()
            if t.state == TrialState.COMPLETE and not t.user_attrs.get("noop")]
    assert sorted(done) == sorted(study.user_attrs["units"])         # each unit done once: nothing trained twice


# ------------------------------------------------------------------------------ Slurm, through submitit's local executor

def test_launch_time_limits_and_refusals(capsys):
    from mimicnet.cli.launch import parse_time
    assert [parse_time(s) for s in ("8h", "90m", "1h30m", "2d", "08:00:00", "1-00:00", "0:10:30")] == \
        [480, 90, 90, 2880, 480, 1440, 11]
    with pytest.raises(ConfigError):
        parse_time("eight hours")
    assert cli.main(["launch", "slurm", "--preset", "smoke", "--gpus", "2"]) == 2      # no --storage
    assert "--storage" in capsys.readouterr().err
    assert cli.main(["launch", "slurm", "--preset", "smok", "--gpus", "2", "--storage", "j.log"]) == 2
    assert "--preset 'smok'" in capsys.readouterr().err


def test_launch_without_out_gives_every_task_results_preset_as_an_absolute_path(tmp_path, monkeypatch):
    """No --out: each task is told the same absolute folder (Slurm may start it elsewhere), results/PRESET, and
    a journal file by its absolute path."""
    from mimicnet.cli import launch

    class Executor:  # submitit's, stood in for: what the tasks would be given
        def map_array(self, fn, tasks):
            self.argv, self.tasks = fn.argv, list(tasks)
            return [type("Job", (), {"job_id": i})() for i in self.tasks]
    ex = Executor()
    monkeypatch.setattr(launch, "make_executor", lambda args: ex)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["launch", "slurm", "--preset", "smoke", "--tasks", "2", "--storage", "j.log"]) == 0
    assert ex.tasks == [0, 1] and ex.argv[ex.argv.index("--out") + 1] == str(tmp_path / "results" / "smoke")
    assert ex.argv[ex.argv.index("--storage") + 1] == str(tmp_path / "j.log")  # a journal file: the same for all


def test_launch_slurm_array_through_submitits_local_executor(tmp_path):
    """Two array tasks (submitit's local executor runs them as processes), one study: every unit done once,
    by both tasks, and the table written. The smoke preset cut to one student family to stay small."""
    archive = write_archive(tmp_path / "a.tar.gz", n_train=500, n_test=100)
    out, journal = tmp_path / "out", tmp_path / "journal.log"
    r = subprocess.run([sys.executable, "-m", "mimicnet.cli", "launch", "slurm", "--executor", "local",
                        "--preset", "smoke", "--tasks", "2", "--storage", str(journal), "--out", str(out),
                        "--data", str(archive), "--device", "cpu", "--set", 'student_families=["conv1"]',
                        "--set", "report=false", "--time", "20m", "--wait"],
                       capture_output=True, text=True, timeout=900, env=ONE_THREAD)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "submitted 2 worker task(s) (local)" in r.stdout
    assert "conv1" in (out / "results.txt").read_text()
    study = open_work_study(str(journal), _work_name(out))
    done = [t for t in study.get_trials() if t.state == TrialState.COMPLETE and not t.user_attrs.get("noop")]
    assert len(done) == len(study.user_attrs["units"])               # every unit once
    assert len(list((out / "slurm").glob("*/*_log.out"))) == 2       # submitit's own log of each task


# ------------------------------------------------------------------------------ estimate --workers: the makespan

def test_makespan_keeps_the_stages_dependencies():
    from mimicnet.studies.estimate import Job, critical_path, makespan, scaling, work_jobs
    m = {"teacher": {"trials": 4, "trial_seconds": 10.0, "seed_seconds": 0.0},
         "ensemble": {"seconds": 5.0}, "transfer": {"seconds": 20.0, "epochs": 64},  # 32 shards of 2 epochs
         "baseline/conv1/100": {"trials": 2, "trial_seconds": 3.0, "seed_seconds": 6.0},
         "student/conv1/100": {"trials": 4, "trial_seconds": 2.0, "seed_seconds": 4.0}}
    jobs = work_jobs({"measured": m})
    total = 4 * 10 + 5 + 20 + 2 * 3 + 6 + 4 * 2 + 4
    assert makespan(jobs, 1) == pytest.approx(total)                  # one worker: the sum
    # the chain teacher -> ensemble -> a transfer shard -> student trial -> its seeds bounds any number of workers
    assert critical_path(jobs) == pytest.approx(10 + 5 + 20 / 32 + 2 + 4)
    assert makespan(jobs, 64) == pytest.approx(critical_path(jobs))
    assert makespan(jobs, 2) < makespan(jobs, 1) and makespan(jobs, 2) > total / 2 - 1e-9
    sc = scaling(jobs)
    secs = {r["workers"]: r["seconds"] for r in sc["rows"]}
    assert list(secs) == [1, 2, 4, 8, 16, 64] and sc["stops_helping_at"] == 8     # 8 -> 16 saves < 10%
    assert secs[16] > 0.9 * secs[8] and secs[8] < 0.9 * secs[4]
    assert makespan([Job("a", 1.0), Job("b", 1.0, ("a",))], 8) == pytest.approx(2.0)
