"""Hyperparameter search (issue 4): the S2/S4 spaces range for range, apply(), infeasible and diverged trials,
samplers, a tiny real search end to end, the command line, and two workers on one PostgreSQL study with one
of them killed mid-trial."""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
from optuna.trial import TrialState  # noqa: E402

from mimicnet.core import artifacts
from mimicnet.core.index import read_index
from mimicnet.models import families as models
from mimicnet import search
from mimicnet.cli import main as cli_main
from mimicnet.cli import search as cli_search
from mimicnet.distill.student import train_run
from mimicnet.studies.estimate import searched_epochs
from mimicnet.train.loop import fit as train_fit
from mimicnet.core.errors import Diverged  # noqa: E402
from mimicnet.train.config import TrainConfig, resolve_widths  # noqa: E402
from synth import write_archive  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)


def ranges(space) -> dict:
    return {p.name: (p.low, p.high, "log" if p.log else "linear") for p in space.params}


def silent(*_a, **_k):
    pass


def cli(*argv):
    """`mimicnet search ...` through register_cli, as the lead wires it into cli.py."""
    p = argparse.ArgumentParser(prog="mimicnet")
    sub = p.add_subparsers(dest="command", required=True)
    cli_search.register(sub)
    args = p.parse_args(["search", *map(str, argv)])
    return args.func(args)


# ----------------------------------------------------------------------------------- spaces (S2, S4)

def test_teacher_space_is_S2_range_for_range(capsys):
    s = search.get_space("teacher")
    assert ranges(s) == {
        "C1": (0, 1, "linear"), "C2": (0, 1, "linear"), "C3": (0, 1, "linear"), "H1": (0, 1, "linear"),
        "DOc1": (0.1, 0.3, "linear"), "DOc2": (0.25, 0.35, "linear"), "DOc3": (0.3, 0.44, "linear"),
        "DOf1": (0.2, 0.65, "linear"), "DOf2": (0.2, 0.65, "linear"), "init_scale": (0.8, 1.35, "linear"),
        "lr": (0.01, 0.05, "log"), "momentum": (0.80, 0.91, "log"), "weight_decay": (5e-5, 4e-4, "linear"),
        "Dh": (0.03, 0.11, "linear"), "Ds": (0.2, 0.3, "linear"), "Dv": (0.0, 0.2, "linear"),
        "As": (0.2, 0.3, "linear"), "Av": (0.03, 0.2, "linear")}
    assert len(s.params) == 18 and s.budget is None and s.fixed == {}
    assert s.bounds == ((32, 96), (64, 192), (128, 384), (512, 1536))
    assert cli("show", "teacher") == 0
    out = capsys.readouterr().out
    for line in ("C1 0 1 linear g1 in [32, 96]", "H1 0 1 linear h in [512, 1536]", "lr 0.01 0.05 log lr",
                 "momentum 0.8 0.91 log", "weight_decay 5e-05 0.0004 linear", "Av 0.03 0.2 linear av",
                 "DOf2 0.2 0.65 linear dropout.4", "init_scale 0.8 1.35 linear", "dependent width: none"):
        assert line in " ".join(out.split()), line


def test_baseline_spaces_are_S4_range_for_range(capsys):
    common = {"lr": (0.0015, 0.025, "log"), "momentum": (0.68, 0.97, "log"), "DOf1": (0.1, 0.7, "linear"),
              "C1": (0, 1, "linear"), "C2": (0, 1, "linear")}
    doc = {"DOc1": (0.05, 0.4, "linear"), "DOc2": (0.1, 0.6, "linear"), "DOc3": (0.1, 0.7, "linear")}
    pools = {"conv1": 1, "conv2": 2, "conv3": 3, "conv4": 3}
    bounds = {"conv1": ((50, 500), (200, 2000)), "conv2": ((50, 500), (100, 400)),
              "conv3": ((50, 500), (100, 300)), "conv4": ((50, 300), (100, 300))}
    for fam, n in pools.items():
        s = search.get_space(f"baseline-{fam}")
        assert ranges(s) == {**common, **dict(list(doc.items())[:n])}, fam
        assert s.budget == 10_000_000 and s.fixed == {"weight_decay": 2e-4} and s.bounds == bounds[fam]
        # dropout targets in layer order: pools first, then the fc layer
        assert [s.param(f"DOc{i + 1}").target for i in range(n)] + [s.param("DOf1").target] == \
            [f"dropout.{i}" for i in range(n + 1)]
    assert "baseline-conv0" not in search.SPACES
    assert cli("show", "baseline-conv4") == 0
    out = " ".join(capsys.readouterr().out.split())
    for line in ("lr 0.0015 0.025 log", "momentum 0.68 0.97 log", "DOc1 0.05 0.4 linear", "DOc2 0.1 0.6 linear",
                 "DOc3 0.1 0.7 linear", "DOf1 0.1 0.7 linear", "C1 0 1 linear c1,c2 in [50, 300]",
                 "C2 0 1 linear c3,c4 in [100, 300]", "dependent width: h", "10,000,000", "weight_decay=0.0002"):
        assert line in out, line


def test_student_spaces_are_S4_range_for_range(capsys):
    want = {"lr": (0.0013, 0.016, "log"), "momentum": (0.68, 0.97, "log"), "input_scale": (0.8, 1.25, "linear"),
            "init_scale": (0.4, 2.0, "linear")}
    names = []
    for fam, per_budget in models.STUDENT_BOUNDS.items():
        n_const = models.get_family(fam).n_constants
        for budget, bounds in per_budget.items():
            s = search.make_space("student", fam, budget)
            names.append(s.name)
            assert ranges(s) == {**want, **{f"C{i + 1}": (0, 1, "linear") for i in range(n_const)}}
            assert s.bounds == bounds and s.budget == budget
            assert s.fixed == {"dropout": (), "weight_decay": 0.0}  # S4: no dropout, no weight decay
    assert sorted(names) == sorted(n for n in search.SPACES if n.startswith("student-"))
    assert len(search.SPACES) == 1 + 4 + 20
    # a few table cells spelled out (Table 3 via SPEC S4)
    assert search.get_space("student-conv1-31.6M").bounds == ((200, 600), (1000, 41000))
    assert search.get_space("student-conv0-10M").bounds == ((5000, 30000),)
    assert search.get_space("student-conv4-3.16M").bounds == ((50, 150), (50, 200))
    assert cli("show", "student-conv1-1M") == 0
    out = " ".join(capsys.readouterr().out.split())
    for line in ("lr 0.0013 0.016 log", "momentum 0.68 0.97 log", "input_scale 0.8 1.25 linear",
                 "init_scale 0.4 2 linear", "C1 0 1 linear c in [40, 150]", "C2 0 1 linear h in [200, 1600]",
                 "dependent width: k (linear bottleneck)", "1,000,000", "dropout=()", "weight_decay=0.0"):
        assert line in out, line


def test_space_names_parse_any_budget():
    a = search.get_space("student-conv2-0.1M")
    assert a == search.get_space("student-conv2-100k") == search.make_space("student", "conv2", 100_000)
    assert a.name == "student-conv2-100k" and a.bounds == models.scaled_bounds("conv2", 100_000)
    assert search.get_space("student-conv3-3.16M") is search.SPACES["student-conv3-3.16M"]
    b = search.get_space("baseline-conv2-1M")
    assert b.budget == 1_000_000 and b.bounds == ((16, 158), (32, 126))  # 10M bounds x sqrt(0.1)
    for bad in ("student-conv2", "student-conv9-1M", "teacher-1M", "baseline-conv0", "nonsense"):
        with pytest.raises(search.SearchError):
            search.get_space(bad)


# ----------------------------------------------------------------------------------- apply()

def test_apply_teacher_sets_every_field_and_keeps_the_base():
    s = search.get_space("teacher")
    params = {p.name: (p.low + p.high) / 2 for p in s.params}
    base = TrainConfig.of(data="x.tar.gz", max_epochs=7, batch_size=64, widths=(8, 8, 8, 8), batchnorm=True,
                       schedule="onecycle")
    cfg = search.apply(s, params, base)
    assert cfg.model.family == "teacher" and cfg.model.widths is None and cfg.model.budget is None
    assert cfg.model.constants == (0.5, 0.5, 0.5, 0.5)
    assert cfg.model.dropout == pytest.approx((0.2, 0.3, 0.37, 0.425, 0.425))
    assert cfg.to_dict()["hsv"] == pytest.approx((0.07, 0.25, 0.1, 0.25, 0.115))
    assert cfg.optim.lr == pytest.approx(0.03) and cfg.optim.momentum == pytest.approx(0.855)
    assert cfg.optim.weight_decay == pytest.approx(2.25e-4) and cfg.model.init_scale == pytest.approx(1.075)
    assert (cfg.data.path, cfg.optim.max_epochs, cfg.optim.batch_size, cfg.model.batchnorm, cfg.optim.schedule) == \
        ("x.tar.gz", 7, 64, True, "onecycle")
    assert resolve_widths(cfg) == (64, 128, 256, 1024)
    with pytest.raises(search.SearchError):
        search.apply(s, {"lr": 0.02}, base)


def test_apply_student_and_baseline_meet_the_budget_within_1pct():
    base = TrainConfig.of(data="x", max_epochs=3, dropout=(0.5,), weight_decay=0.1)
    s = search.get_space("student-conv3-1M")
    cfg = search.apply(s, {"lr": 0.005, "momentum": 0.9, "input_scale": 1.1, "init_scale": 0.7, "C1": 0.3,
                           "C2": 0.6}, base)
    assert (cfg.model.family, cfg.model.budget, cfg.model.constants, cfg.model.dropout, cfg.optim.weight_decay) == \
        ("conv3", 1_000_000, (0.3, 0.6), (), 0.0)
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.data.input_scale, cfg.model.init_scale, cfg.optim.max_epochs) == (0.005, 0.9, 1.1, 0.7, 3)
    n = models.count_params("conv3", resolve_widths(cfg))
    assert abs(n - 1_000_000) <= 10_000
    b = search.get_space("baseline-conv2")
    cfg = search.apply(b, {"lr": 0.01, "momentum": 0.9, "DOc1": 0.1, "DOc2": 0.2, "DOf1": 0.3, "C1": 1.0,
                           "C2": 0.0}, base)
    w = resolve_widths(cfg)
    assert w[:2] == (500, 100)  # the baselines' own bounds (S4), beyond the 10M students' 50-350
    assert abs(models.count_params("conv2", w) - 10_000_000) <= 100_000
    assert cfg.model.dropout == (0.1, 0.2, 0.3) and cfg.optim.weight_decay == 2e-4
    # constants whose fixed layers alone exceed the budget: BudgetError, and a positive violation
    tiny = search.get_space("student-conv3-1k")  # its convolutions alone hold more than 1,000 parameters
    p = {"lr": 0.005, "momentum": 0.9, "input_scale": 1.0, "init_scale": 1.0, "C1": 1.0, "C2": 1.0}
    with pytest.raises(models.BudgetError):
        search.apply(tiny, p, base)
    assert search.budget_violation(tiny, p) > 0
    assert search.budget_violation(s, {"C1": 0.3, "C2": 0.6}) <= 0


# ----------------------------------------------------------------------------------- trials

def quadratic_fit(calls=None, diverge_lr=None):
    """A fake train.fit: val accuracy peaks at lr 0.004; lr above `diverge_lr` diverges."""
    def fit(cfg, run_dir, index=None, info=None):
        resolve_widths(cfg)  # never called with an infeasible config
        if calls is not None:
            calls.append((cfg, Path(run_dir), info))
        if diverge_lr is not None and cfg.optim.lr > diverge_lr:
            raise Diverged(f"{run_dir}: training loss is nan at epoch 0")
        v = 0.9 - 0.05 * math.log(cfg.optim.lr / 0.004) ** 2 - (cfg.optim.momentum - 0.9) ** 2
        return {"val_acc": v, "test_acc": v - 0.01, "params": 1}
    return fit


def test_infeasible_constants_are_told_to_the_sampler_not_crashed(tmp_path):
    calls = []
    # A budget so small that a wide fc layer leaves no room for the bottleneck. One infeasible and one
    # feasible point go first (queued), then quasi-random start-up, then the GP with a constraint model.
    space = search.get_space("student-conv1-1k")
    study = search.create_or_load(space, TrainConfig.of(), search.default_storage(tmp_path), space.name, None, {})
    for c2 in (1.0, 0.0):
        study.enqueue_trial({"lr": 0.004, "momentum": 0.9, "input_scale": 1.0, "init_scale": 1.0, "C1": 0.5, "C2": c2})
    st = search.run_search(space, TrainConfig.of(), tmp_path, trials=6,
                           strategy=search.Strategy(sampler="gp", n_startup=3), train_fn=quadratic_fit(calls),
                           log=silent)
    trials = st.get_trials()
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials)
    infeasible = [t for t in trials if t.constraints["budget"] > 0]
    feasible = [t for t in trials if t.constraints["budget"] <= 0]
    assert infeasible and feasible, [t.params for t in trials]
    for t in infeasible:
        assert "run_dir" not in t.user_attrs and "budget" in t.user_attrs["infeasible"]
    assert len(calls) == len(feasible)
    for t in feasible:
        assert t.user_attrs["run_dir"] == f"trials/{t.number}"  # relative: a moved search folder finds it
        assert search.trial_run_dir(t, tmp_path) == (tmp_path / "trials" / str(t.number)).resolve()
    assert st.best_trial.constraints["budget"] <= 0  # never an infeasible trial as the best
    # an infeasible trial's value stays inside the feasible values seen (does not stretch the GP)
    lo = min(t.value for t in feasible)
    assert all(t.value >= lo - 1e-12 or t.value == search.CHANCE for t in infeasible)
    s = search.summary(st)
    assert s["n_infeasible"] == len(infeasible) and s["n_complete"] == len(feasible)


def test_diverged_trial_fails_with_its_reason_and_the_study_goes_on(tmp_path):
    index = tmp_path / "index.csv"
    st = search.run_search("student-conv2-100k", TrainConfig.of(), tmp_path, trials=6,
                           strategy=search.Strategy(sampler="random", seed=3), index=index,
                           train_fn=quadratic_fit(diverge_lr=0.004), log=silent)
    trials = st.get_trials()
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert failed and len(trials) == 6  # a diverged trial counts towards N: it is a result
    for t in failed:
        assert t.params["lr"] > 0.004 and t.user_attrs["fail_reason"].startswith("diverged: ")
        assert "nan" in t.user_attrs["fail_reason"]
    assert any(t.state == TrialState.COMPLETE for t in trials)
    rows = read_index(index)
    assert sorted(int(r["trial"]) for r in rows if r["status"] == "failed") == [t.number for t in failed]
    assert all(r["study"] == "student-conv2-100k" and r["kind"] == "baseline" for r in rows)
    s = search.summary(st)
    assert s["n_failed"] == len(failed) and s["n_finished"] == 6


def test_samplers_qmc_startup_then_gp_tpe_and_seeded_random(tmp_path):
    gp = search.run_search("student-conv2-100k", TrainConfig.of(), tmp_path / "gp", trials=6,
                           strategy=search.Strategy(sampler="gp", n_startup=3), train_fn=quadratic_fit(), log=silent)
    trials = sorted(gp.get_trials(), key=lambda t: t.number)
    # start-up trials come from the scrambled Sobol sequence (a counter in the study), the rest from the GP
    assert not any(k.startswith("gp:") for t in trials[:3] for k in t.system_attrs)
    assert all(any(k.startswith("gp:relative_params") for k in t.system_attrs) for t in trials[3:])
    assert [t.user_attrs["sampled_by"] for t in trials] == ["qmc"] * 3 + ["gp"] * 3
    assert search.summary(gp)["best_startup"] == max(t.value for t in trials[:3])
    space = search.get_space("student-conv2-100k")

    def sample_only(trial):
        for p in space.params:
            trial.suggest_float(p.name, p.low, p.high, log=p.log)
        return 0.0

    ref = optuna.create_study(sampler=search.make_sampler(space, "gp", 3, 0))
    ref.optimize(sample_only, n_trials=3)
    assert [t.params for t in ref.trials] == [t.params for t in trials[:3]]  # reproducible from the seed

    tpe = search.run_search("student-conv2-100k", TrainConfig.of(), tmp_path / "tpe", trials=5,
                            strategy=search.Strategy(sampler="tpe", n_startup=2), train_fn=quadratic_fit(), log=silent)
    assert len(tpe.get_trials(states=(TrialState.COMPLETE,))) == 5

    # random: each trial's draw depends only on (seed, trial number), whichever worker runs it
    r1 = search.run_search("student-conv2-100k", TrainConfig.of(), tmp_path / "r1", trials=4,
                           strategy=search.Strategy(sampler="random", seed=7), train_fn=quadratic_fit(), log=silent)
    r2 = search.run_search("student-conv2-100k", TrainConfig.of(), tmp_path / "r2", trials=4,
                           strategy=search.Strategy(sampler="random", seed=7), train_fn=quadratic_fit(), log=silent)
    assert [t.params for t in r1.trials] == [t.params for t in r2.trials]
    assert len({tuple(t.params.values()) for t in r1.trials}) == 4
    assert {t.user_attrs["sampled_by"] for t in r1.trials} == {"random"}
    with pytest.raises(search.SearchError):
        search.make_sampler(search.get_space("teacher"), "cmaes")


def test_rerun_runs_nothing_more_extends_and_refuses_another_base(tmp_path):
    calls = []
    fit = quadratic_fit(calls)
    search.run_search("student-conv2-100k", TrainConfig.of(), tmp_path, trials=3,
                      strategy=search.Strategy(sampler="random"), train_fn=fit, log=silent)
    st = search.run_search("student-conv2-100k", TrainConfig.of(), tmp_path, trials=3,
                           strategy=search.Strategy(sampler="random"), train_fn=fit, log=silent)
    assert len(st.trials) == 3 and len(calls) == 3  # finished: the same command again trains nothing
    st = search.run_search("student-conv2-100k", TrainConfig.of(), tmp_path, trials=5,
                           strategy=search.Strategy(sampler="random"), train_fn=fit, log=silent)
    assert len(st.trials) == 5
    with pytest.raises(search.SearchError, match="max_epochs"):
        search.run_search("student-conv2-100k", TrainConfig.of(max_epochs=3), tmp_path, trials=6, train_fn=fit,
                          log=silent)
    with pytest.raises(search.SearchError, match="searches"):
        search.run_search("student-conv3-100k", TrainConfig.of(), tmp_path, trials=6,
                          sharing=search.Sharing(study_name="student-conv2-100k"), train_fn=fit, log=silent)


def test_a_moved_search_folder_resumes_its_interrupted_trial_in_the_new_place(tmp_path):
    def interrupted(cfg, run_dir, index=None, info=None):
        (Path(run_dir) / "partial").parent.mkdir(parents=True, exist_ok=True)
        (Path(run_dir) / "partial").write_text("epoch 3")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        search.run_search("student-conv2-100k", TrainConfig.of(), tmp_path / "a", trials=1,
                          strategy=search.Strategy(sampler="random"), train_fn=interrupted, log=silent)
    shutil.move(tmp_path / "a", tmp_path / "b")
    calls = []
    st = search.run_search("student-conv2-100k", TrainConfig.of(), tmp_path / "b", trials=1,
                           strategy=search.Strategy(sampler="random"), train_fn=quadratic_fit(calls), log=silent)
    assert len(calls) == 1 and calls[0][1] == (tmp_path / "b" / "trials" / "0").resolve()
    assert (calls[0][1] / "partial").read_text() == "epoch 3"   # the retry continues the moved folder's work
    assert not (tmp_path / "a").exists()
    assert search.trial_run_dir(search.best_trial(st), tmp_path / "b") == calls[0][1]


def test_a_damaged_transfer_set_stops_a_search_before_any_trial(tmp_path):
    # the set is checked against its manifest before the study is created: no failed trial left behind
    from mimicnet.distill.transfer import TransferError
    tset = tmp_path / "t"
    tset.mkdir()
    (tset / "manifest.json").write_text("{}")
    base = TrainConfig.of(data=str(write_archive(tmp_path / "a.tar.gz", n_train=120, n_test=20)), loss="l2-logits",
                          transfer=str(tset), device="cpu")
    with pytest.raises(TransferError):
        search.run_search("student-conv1-20k", base, tmp_path / "s", trials=1,
                          strategy=search.Strategy(sampler="random"), log=silent)
    assert not (tmp_path / "s" / "study.db").exists()


def test_ctrl_c_queues_the_trial_again_and_the_rerun_resumes_its_folder(tmp_path):
    def interrupted(cfg, run_dir, index=None, info=None):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        search.run_search("student-conv2-100k", TrainConfig.of(), tmp_path, trials=2,
                          strategy=search.Strategy(sampler="random"), train_fn=interrupted, log=silent)
    calls = []
    st = search.run_search("student-conv2-100k", TrainConfig.of(), tmp_path, trials=2,
                           strategy=search.Strategy(sampler="random"), train_fn=quadratic_fit(calls), log=silent)
    t0, t1, t2 = sorted(st.trials, key=lambda t: t.number)
    assert t0.state == TrialState.FAIL and "fail_reason" not in t0.user_attrs  # lost, not a result
    assert t1.params == t0.params and t1.user_attrs["run_dir"] == t0.user_attrs["run_dir"]
    assert search.trial_run_dir(t1, tmp_path) == calls[0][1]
    assert t1.state == t2.state == TrialState.COMPLETE and search.progress(st)["finished"] == 2


def test_a_retry_whose_folder_holds_another_config_starts_afresh(tmp_path):
    old = tmp_path / "old-run"
    old.mkdir()
    artifacts.write_json(old / "config.json", {"run_id": "conv2-0123456789"})  # e.g. made by older code
    st = search.run_search("student-conv2-100k", TrainConfig.of(), tmp_path, trials=1,
                           strategy=search.Strategy(sampler="random"), train_fn=quadratic_fit(), log=silent)
    st.enqueue_trial(st.trials[0].params, user_attrs={"run_dir": str(old)})
    st = search.run_search("student-conv2-100k", TrainConfig.of(), tmp_path, trials=2,
                           strategy=search.Strategy(sampler="random"), train_fn=quadratic_fit(), log=silent)
    assert st.trials[1].state == TrialState.COMPLETE
    assert st.trials[1].user_attrs["run_dir"] == "trials/1"


def curve_fit(max_epochs=9, calls=None):
    """A fake fit with a learning curve: val(epoch) = peak(lr) * epoch / max_epochs, reported every epoch."""
    def fit(cfg, run_dir, index=None, info=None, on_epoch=None):
        peak = 0.9 - 0.05 * math.log(cfg.optim.lr / 0.004) ** 2
        for e in range(1, max_epochs):
            if calls is not None:
                calls.append(e)
            on_epoch(e, peak * e / max_epochs)
        return {"val_acc": peak, "test_acc": peak - 0.01, "params": 1, "epochs": max_epochs}
    return fit


@pytest.mark.parametrize("pruner", ["median", "sha", "hyperband"])
def test_a_pruner_stops_poor_trials_records_them_and_counts_them(tmp_path, pruner):
    index, calls = tmp_path / "index.csv", []
    strategy = search.Strategy(sampler="tpe", n_startup=3, pruner=pruner, pruner_min_epochs=1, pruner_eta=3)
    st = search.run_search("student-conv2-100k", TrainConfig.of(max_epochs=9), tmp_path, trials=12, strategy=strategy,
                           index=index, train_fn=curve_fit(calls=calls), log=silent)
    pruned = st.get_trials(states=(TrialState.PRUNED,))
    assert pruned and search.progress(st)["finished"] == 12
    assert len(calls) < 12 * 8  # epochs were saved
    rows = [r for r in read_index(index) if r["status"] == "pruned"]
    assert sorted(int(r["trial"]) for r in rows) == sorted(t.number for t in pruned)
    for r in rows:  # the epochs it ran and its last validation accuracy
        t = next(t for t in pruned if t.number == int(r["trial"]))
        last = max(t.intermediate_values)
        assert int(r["epochs"]) == last == t.user_attrs["pruned_at_epoch"]
        assert float(r["val_acc"]) == pytest.approx(t.intermediate_values[last])
    best = search.best_trial(st)
    assert best.state == TrialState.COMPLETE and best.value == max(t.value for t in st.get_trials(
        states=(TrialState.COMPLETE,)))


def test_a_pruned_trial_keeps_a_resumable_run_folder(tmp_path):
    """A real trial pruned after its first epoch: no results.json, its last checkpoint stays, and training its
    config.json in that folder continues from there to the end of its schedule."""
    archive = write_archive(tmp_path / "a.tar.gz", n_train=200, n_test=40)
    base = TrainConfig.of(data=str(archive), max_epochs=3, batch_size=50, schedule="onecycle", device="cpu")
    sha = search.Strategy(sampler="random", pruner="sha", pruner_min_epochs=1, pruner_eta=3)
    st = search.run_search("student-conv1-20k", base, tmp_path / "s", trials=1, strategy=sha, log=silent)
    st.enqueue_trial(st.trials[0].params)   # the same point again: a worse-or-equal first epoch...
    calls = []

    def stop_after_one(cfg, run_dir, index=None, info=None, on_epoch=None):
        # ...reported lower than the first trial's first epoch, which successive halving then prunes
        calls.append(run_dir)
        return train_run(cfg, run_dir, info=info, index=index, on_epoch=lambda e, v: on_epoch(e, v - 0.5))
    st = search.run_search("student-conv1-20k", base, tmp_path / "s", trials=2, strategy=sha, log=silent,
                           train_fn=stop_after_one, index=tmp_path / "s" / "index.csv")
    t = st.trials[1]
    assert t.state == TrialState.PRUNED and t.user_attrs["pruned_at_epoch"] == 1
    run_dir = search.trial_run_dir(t, tmp_path / "s")
    assert (run_dir / "last.safetensors").exists() and not (run_dir / "results.json").exists()
    cfg = TrainConfig.from_dict(artifacts.read_json(run_dir / "config.json")["config"])
    log = []
    res = train_fit(cfg, run_dir, log=log.append)
    assert res["epochs"] == 3 and any("resuming" in line and "epoch 1" in line for line in log)


def test_bad_pruner_values_are_one_line_errors(tmp_path, capsys):
    for argv, msg in ((["--pruner", "asha"], "invalid choice"), (["--pruner", "sha", "--pruner-min-epochs", "0"],
                      "--pruner-min-epochs must be"), (["--pruner", "sha", "--pruner-eta", "1"], "--pruner-eta must be")):
        try:
            code = cli_main(["search", "run", "student-conv2-100k", "--trials", "1", "--out", str(tmp_path / "o"),
                             *argv])
        except SystemExit as e:  # argparse's own errors
            code = e.code
        err = capsys.readouterr().err
        assert code == 2 and msg in err.strip().splitlines()[-1] and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_tiny_real_search_end_to_end_with_report(tmp_path, capsys):
    archive = write_archive(tmp_path / "a.tar.gz", n_train=300, n_test=60)
    base = TrainConfig.of(data=str(archive), max_epochs=1, batch_size=32, schedule="onecycle", device="cpu")
    index = tmp_path / "index.csv"
    st = search.run_search("student-conv2-20k", base, tmp_path / "s", trials=4,
                           strategy=search.Strategy(sampler="gp", n_startup=2), index=index, log=silent)
    done = [t for t in st.trials if t.state == TrialState.COMPLETE and t.constraints["budget"] <= 0]
    assert done
    for t in done:
        run = search.trial_run_dir(t, tmp_path / "s")
        res = json.loads((run / "results.json").read_text())
        assert res["val_acc"] == t.value and res["study"] == "student-conv2-20k" and res["trial"] == t.number
        assert (run / "best.safetensors").exists() and t.user_attrs["test_acc"] == res["test_acc"]
        # at 20k one unit of the fc width costs a few % of the budget: the nearest integer width is the answer
        assert abs(res["params"] - 20_000) <= 0.05 * 20_000
    rows = read_index(index)
    assert sorted(int(r["trial"]) for r in rows) == sorted(t.number for t in done)
    s = search.report(st, tmp_path / "s")
    assert (tmp_path / "s" / "report" / "history.png").stat().st_size > 1000
    assert json.loads((tmp_path / "s" / "report" / "summary.json").read_text())["n_trials"] == 4
    with open(tmp_path / "s" / "report" / "trials.csv") as f:
        assert len(list(csv.DictReader(f))) == 4
    assert s["best"]["val_acc"] == max(t.value for t in done)
    text = search.format_report(s)
    assert "top-" in text and "history.png" in text


def test_cli_run_and_report(tmp_path, capsys):
    archive = write_archive(tmp_path / "a.tar.gz", n_train=200, n_test=40)
    out = tmp_path / "s"
    assert cli("run", "student-conv3-20k", "--trials", 2, "--sampler", "random", "--data", archive,
               "--max-epochs", 1, "--batch-size", 32, "--no-augment", "--device", "cpu", "--out", out) == 0
    text = capsys.readouterr().out
    assert "trial 0" in text and "study student-conv3-20k" in text
    assert cli("report", "--out", out) == 0
    text = capsys.readouterr().out
    assert "top-" in text and (out / "report" / "history.png").exists()
    assert len(read_index(out / "index.csv")) == 2
    with pytest.raises(search.SearchError, match="--lr"):
        cli("run", "student-conv3-20k", "--trials", 2, "--lr", 0.1, "--out", out)
    with pytest.raises(search.SearchError, match="no study database"):
        cli("report", "--out", tmp_path / "nothing")
    assert cli("show") == 0 and "student-conv4-31.6M" in capsys.readouterr().out


# ----------------------------------------------------------------------------------- many workers (PostgreSQL)

def _pg_bindir() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    cands = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return cands[-1].parent if cands else None


def _unavailable(why: str):
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {why}")
    pytest.skip(why)


@pytest.fixture(scope="module")
def pg_url():
    """MIMICNET_TEST_POSTGRES (.ci/run starts a server and sets it), else a throwaway server on loopback."""
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        _unavailable("psycopg2 is not installed: pip install -e '.[test]' installs it (psycopg2-binary), or "
                     "pip install psycopg2-binary; PostgreSQL itself must be installed too, or MIMICNET_TEST_POSTGRES set")
    url = os.environ.get("MIMICNET_TEST_POSTGRES")
    if url:
        yield url
        return
    bindir = _pg_bindir()
    if bindir is None:
        _unavailable("no PostgreSQL server installed (initdb not found)")
    prefix: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="mimicnet-pg-"))
    if os.geteuid() == 0:  # postgres refuses to run as root
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("running as root and there is no 'postgres' user to run the server as")
        os.chown(tmp, pw.pw_uid, pw.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tmp / "data"
    subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                    "--no-sync"], check=True, capture_output=True)
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {tmp} -c fsync=off -c synchronous_commit=off"
    r = subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(tmp / "log"), "-w", "-t", "60",
                        "-o", opts, "start"], capture_output=True, text=True)
    try:
        assert r.returncode == 0, f"{r.stdout}{r.stderr}{(tmp / 'log').read_text() if (tmp / 'log').exists() else ''}"
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


# A worker: run_search with a sleep-based train_fn (FAKE_HANG seconds in every trial if set, else FAKE_SLEEP).
WORKER = r"""
import math, os, sys, time
from pathlib import Path
from mimicnet import search
from mimicnet.cli import search as cli_search
from mimicnet.train.config import TrainConfig
url, name, out, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
PRUNER = os.environ.get("FAKE_PRUNER", "none")
def fake_fit(cfg, run_dir, index=None, info=None, on_epoch=None):
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / f"started.{os.getpid()}").write_text(str(info.trial))
    val = 1.0 - abs(math.log(cfg.optim.lr / 0.004)) / 10
    for e in range(1, 9 if on_epoch else 1):  # with a pruner: a learning curve of 9 epochs
        time.sleep(0.05)
        on_epoch(e, val * e / 9)
    time.sleep(float(os.environ.get("FAKE_HANG") or os.environ.get("FAKE_SLEEP", "0.5")))
    return {"val_acc": val}
strategy = search.Strategy(sampler="tpe" if PRUNER != "none" else "random", n_startup=2, seed=0, pruner=PRUNER,
                           pruner_min_epochs=1)
# a 3-s grace lets the kill test recover at once; the tests that kill nothing give a live worker's heartbeat
# more room (under a loaded CI machine a heartbeat thread once went 3 s without running: a live trial was failed)
sharing = search.Sharing(storage=url, study_name=name, heartbeat_interval=1,
                         grace_period=int(os.environ.get("FAKE_GRACE", "3")))
search.run_search("student-conv2-100k", TrainConfig.of(max_epochs=9), out, trials=n, strategy=strategy,
                  sharing=sharing, train_fn=fake_fit, index=Path(out) / "index.csv")
"""


def start_worker(url, name, out, n, **env):
    return subprocess.Popen([sys.executable, "-c", WORKER, url, name, str(out), str(n)],
                            env={**os.environ, **{k: str(v) for k, v in env.items()}},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(p: subprocess.Popen, timeout: float = 120) -> str:
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        pytest.fail(f"worker {p.pid} still running after {timeout} s:\n{out[-3000:]}")
    assert p.returncode == 0, out[-3000:]
    return out


def pg_study(url, name):
    return search.load_study(url, name, heartbeat_interval=1, grace_period=3)


def test_two_workers_share_one_postgres_study(pg_url, tmp_path):
    name = f"two-{uuid.uuid4().hex[:8]}"
    n = 8
    a = start_worker(pg_url, name, tmp_path, n, FAKE_SLEEP=1.0, FAKE_GRACE=30)
    b = start_worker(pg_url, name, tmp_path, n, FAKE_SLEEP=1.0, FAKE_GRACE=30)
    finish(a), finish(b)
    st = pg_study(pg_url, name)
    trials = st.get_trials()
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert n <= len(done) <= n + 1 and len(trials) == len(done)  # at most one extra, forced by concurrency
    assert len({t.number for t in done}) == len(done)
    assert len({t.user_attrs["run_dir"] for t in done}) == len(done)
    assert len({tuple(sorted(t.params.items())) for t in done}) == len(done)  # no duplicate points
    assert len({t.user_attrs["worker"] for t in done}) == 2  # both workers took trials


def test_two_workers_prune_on_one_postgres_study(pg_url, tmp_path):
    name = f"prune-{uuid.uuid4().hex[:8]}"
    n = 10
    a = start_worker(pg_url, name, tmp_path, n, FAKE_SLEEP=0.2, FAKE_PRUNER="sha", FAKE_GRACE=30)
    b = start_worker(pg_url, name, tmp_path, n, FAKE_SLEEP=0.2, FAKE_PRUNER="sha", FAKE_GRACE=30)
    finish(a), finish(b)
    trials = pg_study(pg_url, name).get_trials()
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert pruned, [t.state for t in trials]                   # at least one trial pruned
    assert n <= len(done) <= n + 1 and len(trials) == len(done)  # nothing RUNNING, WAITING or lost
    assert len({t.user_attrs["run_dir"] for t in done}) == len(done)  # none duplicated
    assert len({tuple(sorted(t.params.items())) for t in done}) == len(done)
    rows = [r for r in read_index(tmp_path / "index.csv") if r["status"] == "pruned"]
    assert sorted(int(r["trial"]) for r in rows) == sorted(t.number for t in pruned)


def test_killed_worker_leaves_a_usable_postgres_study(pg_url, tmp_path):
    name = f"kill-{uuid.uuid4().hex[:8]}"
    n = 4
    a = start_worker(pg_url, name, tmp_path, n, FAKE_HANG=300)  # every trial of A hangs: kill it mid-trial
    deadline = time.time() + 90
    while not list(tmp_path.glob(f"trials/*/started.{a.pid}")):
        assert a.poll() is None, a.communicate()[0][-3000:]
        assert time.time() < deadline, "worker A never started a trial"
        time.sleep(0.2)
    b = start_worker(pg_url, name, tmp_path, n, FAKE_SLEEP=0.3)
    st = pg_study(pg_url, name)
    while not st.get_trials(states=(TrialState.COMPLETE,)):  # B works while A is mid-trial
        assert b.poll() is None, b.communicate()[0][-3000:]
        assert time.time() < deadline + 60, "worker B never finished a trial"
        time.sleep(0.2)
    os.kill(a.pid, signal.SIGKILL)
    a.wait()
    lost_number = int(next(tmp_path.glob(f"trials/*/started.{a.pid}")).read_text())
    out = finish(b)  # B alone finishes the study, including the retry of A's trial
    trials = {t.number: t for t in pg_study(pg_url, name).get_trials()}
    assert not [t for t in trials.values() if t.state in (TrialState.RUNNING, TrialState.WAITING)], out[-2000:]
    lost = trials[lost_number]
    assert lost.state == TrialState.FAIL and "fail_reason" not in lost.user_attrs
    retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == lost_number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].user_attrs["sampled_by"] == "random"  # kept from the original
    assert retries[0].params == lost.params and retries[0].user_attrs["run_dir"] == lost.user_attrs["run_dir"]
    done = [t for t in trials.values() if t.state == TrialState.COMPLETE]
    assert len(done) == n and len({t.user_attrs["run_dir"] for t in done}) == n
    assert search.progress(pg_study(pg_url, name))["finished"] == n
    # the study stays usable: one more worker extends it, and a finished study runs nothing more
    c = start_worker(pg_url, name, tmp_path, n + 1, FAKE_SLEEP=0.1)
    finish(c)
    st = pg_study(pg_url, name)
    assert len(st.get_trials(states=(TrialState.COMPLETE,))) == n + 1
    assert search.summary(st)["n_lost"] == 1


def test_estimate_counts_the_epochs_a_pruned_search_spends():
    assert searched_epochs(8, 20) == 160                       # no pruner: every trial to the end
    # sha, rungs 2, 6, 18: 8 trials x 2 epochs, 8/3 x 4 more, 1 x 12 more, 1 x the last 2 (hand-counted)
    assert searched_epochs(8, 20, "sha", 2, 3) == pytest.approx(16 + 8 / 3 * 4 + 12 + 2)
    assert searched_epochs(8, 20, "median", 2, 3) == 160       # not modelled: counted as no pruning


@pytest.mark.parametrize("sampler,third", [("tpe", "tpe"), ("gp", "qmc")])
def test_pruned_trials_end_the_startup_phase_only_for_a_model_that_learns_from_them(sampler, third):
    # TPE ranks PRUNED trials, GPSampler fits COMPLETE ones only: two pruned trials end a 2-trial start-up
    # for TPE (else a pruned study would stay on Sobol points for good) but not for GP
    from mimicnet.search.samplers import make_sampler
    space = search.make_space("student", "conv1", 100_000)
    sampler_obj = make_sampler(space, sampler, n_startup=2, seed=0)
    study = optuna.create_study(direction="maximize", sampler=sampler_obj)

    def objective(trial):
        for p in space.params:
            trial.suggest_float(p.name, p.low, p.high, log=p.log)
        trial.report(0.1 * trial.number, 1)
        raise optuna.TrialPruned()
    study.optimize(objective, n_trials=3)
    assert [sampler_obj.phase[n] for n in range(3)] == ["qmc", "qmc", third]


def test_a_worker_joining_while_the_first_writes_the_study_record_waits_for_it(tmp_path):
    """Two workers starting together: the second may find the study between the first's two writes (the base
    config, then the space). It waits for the space and then checks its base config against the first's;
    before, it read a half-written record (KeyError 'base_config', seen on CI with PostgreSQL)."""
    import threading
    import optuna
    space = search.get_space("student-conv1-1k")
    storage = search.default_storage(tmp_path)
    first = TrainConfig.of(max_epochs=7)
    st = optuna.create_study(study_name="s", storage=search.open_storage(storage), direction="maximize")
    st.set_user_attr("base_config", search.run._base_record(first, space))  # the first worker, mid-write
    threading.Timer(0.3, lambda: st.set_user_attr("space", space.name)).start()
    assert search.create_or_load(space, first, storage, "s", None, {}).user_attrs["space"] == space.name
    # a worker with another base config is refused, not allowed to overwrite the first's record
    st2 = optuna.create_study(study_name="s2", storage=search.open_storage(storage), direction="maximize")
    st2.set_user_attr("base_config", search.run._base_record(first, space))
    threading.Timer(0.3, lambda: st2.set_user_attr("space", space.name)).start()
    with pytest.raises(search.SearchError, match="another base config"):
        search.create_or_load(space, TrainConfig.of(max_epochs=9), storage, "s2", None, {})


def test_collapsed_trial_fails_as_collapsed_with_its_epochs(tmp_path):
    from mimicnet.core.errors import Collapsed

    def fit(cfg, run_dir, index=None, info=None):
        if cfg.optim.lr > 0.004:
            raise Collapsed(f"{run_dir}: collapsed at epoch 5: validation accuracy 0.101 after 0.603", epochs=6)
        return {"val_acc": 0.6, "test_acc": 0.59, "params": 1}
    index = tmp_path / "index.csv"
    st = search.run_search("student-conv2-100k", TrainConfig.of(), tmp_path, trials=6,
                           strategy=search.Strategy(sampler="random", seed=3), index=index, train_fn=fit, log=silent)
    failed = [t for t in st.get_trials() if t.state == TrialState.FAIL]
    assert failed and all(t.user_attrs["fail_reason"].startswith("collapsed: ") for t in failed)
    rows = [r for r in read_index(index) if r["status"] == "collapsed"]
    assert sorted(int(r["trial"]) for r in rows) == [t.number for t in failed]
    assert all(r["epochs"] == "6" for r in rows)
