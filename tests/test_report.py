"""The report, built from a synthetic run index whose every number is known: cells recomputed by hand."""
from __future__ import annotations

import argparse
import csv
import html
import importlib.resources
import json
import random
import re
import shutil
import statistics
from pathlib import Path

import pytest

from mimicnet.studies import published as P
from mimicnet.core.index import IndexRow, append_index
from mimicnet.report.common import ReportError
from mimicnet.cli import report as cli_report
from mimicnet.report.report import build_report

ENS = "ens16-abc"
DOCS_RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"
HOSTILE = '<script>alert("x")</script>'
# (val, test) fractions per trial, as fit() writes them. Top-5 by val differs from top-5 by test on purpose.
STUDENTS = {
    ("conv0", 100_000): [(.40, .41), (.43, .40), (.45, .44), (.42, .46), (.44, .39), (.41, .42)],
    ("conv0", 1_000_000): [(.47, .48), (.50, .49), (.49, .51), (.46, .50), (.48, .47), (.51, .46), (.45, .52)],
    ("conv2", 100_000): [(.55, .54), (.58, .56), (.57, .59), (.56, .55), (.60, .57), (.54, .60), (.59, .58)],
    ("conv2", 1_000_000): [(.62, .61), (.64, .65), (.63, .62), (.66, .63), (.61, .66), (.65, .64)],
    ("conv4", 100_000): [(.60, .61), (.63, .62), (.62, .64), (.61, .60), (.64, .63), (.65, .59)],
    # (conv4, 1M) is planned but never ran: a missing cell
}
PLANNED = {"student/conv2/100000": 10, "student/conv4/1000000": 6, "student/conv0/100000": 6}


def _row(**kw):
    base = {"params": 0, "seed": 0, "epochs": 12, "max_epochs": 30, "seconds": 5.0, "loss": "ce",
            "data_sha256": "ab" * 32, "code_version": "0.1.0"}
    return IndexRow(**{**base, **kw})


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    d = tmp_path_factory.mktemp("results")
    idx = d / "index.csv"
    append_index(idx, _row(kind="ensemble", family="ensemble", params=2_400_000, val_acc=.80, test_acc=.79,
                           run_id=ENS, path=str(d / "ensembles" / ENS), widths="16"))
    for i, (v, t) in enumerate([(.74, .73), (.77, .76), (.75, .77), (.72, .71)]):
        append_index(idx, _row(kind="teacher", family="teacher", params=600_000 + i, widths="32x64x128x256",
                               val_acc=v, test_acc=t, seed=i, run_id=f"teacher-{i}"))
    for (fam, budget), trials in STUDENTS.items():
        for i, (v, t) in enumerate(trials):
            extra = {}
            if (fam, budget) == ("conv2", 1_000_000) and i == 2:
                extra = {"epochs": 30, "path": str(d / "no-such-run")}  # hit the cap, schedule unknown: capped
            append_index(idx, _row(kind="student", family=fam, budget=budget, params=budget - 10 * i, seed=i,
                                   val_acc=v, test_acc=t, teacher=ENS, teacher_val_acc=.80, teacher_test_acc=.79,
                                   loss="l2-logits", study=f"s-{fam}-{budget}", trial=i, status="complete",
                                   **extra))
    # a diverged trial with (bogus) accuracies that would top the cell if it were counted
    append_index(idx, _row(kind="student", family="conv2", budget=100_000, params=100_000, val_acc=.99,
                           test_acc=.99, teacher=ENS, teacher_test_acc=.79, loss="l2-logits", status="failed",
                           study="s-conv2-100000", trial=7))
    # a second, weaker teacher for conv2 @ 1M: not in Table 2 (fewer rows), but on the teacher -> student curve
    for i, (v, t) in enumerate([(.57, .56), (.58, .57), (.56, .58)]):
        append_index(idx, _row(kind="student", family="conv2", budget=1_000_000, params=1_000_000, val_acc=v,
                               test_acc=t, teacher="teacher-1", teacher_test_acc=.76, loss="l2-logits", seed=i))
    # a fixed-length (onecycle) run ends at max_epochs by design: not cut short
    run = d / "runs" / "conv0-onecycle"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"config": {"schedule": "onecycle", "max_epochs": 30}}))
    append_index(idx, _row(kind="student", family="conv0", budget=1_000_000, params=1_000_000, val_acc=.30,
                           test_acc=.30, teacher=ENS, teacher_test_acc=.79, loss="l2-logits", epochs=30,
                           path=str(run)))
    # hard-target baselines
    for fam, accs in {"conv2": [(.52, .51), (.53, .54), (.50, .52)], "conv4": [(.55, .56), (.57, .55)]}.items():
        for i, (v, t) in enumerate(accs):
            append_index(idx, _row(kind="baseline", family=fam, budget=1_000_000, params=999_000, val_acc=v,
                                   test_acc=t, seed=i))
    (d / "reproduce.json").write_text(json.dumps({
        "command": "mimicnet reproduce --preset cpu", "preset": "cpu", "planned_trials": PLANNED,
        "config": {"budgets": [100_000, 1_000_000]}, "stages": {"teachers": 120.5, "students": 900},
        "data": {"path": "/data/cifar-10-subset-python.tar.gz", "sha256": "ab" * 32, "n_train": 3254,
                 "n_val": 814, "n_test": 1017}}))
    html_path = build_report(d)
    return d, html_path


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _by_hand(fam, budget):
    """Recompute a Table 2 cell from the trials above: selection on val, statistics on test, in percent."""
    trials = STUDENTS[(fam, budget)]
    if (fam, budget) == ("conv0", 1_000_000):
        trials = trials + [(.30, .30)]  # the onecycle run belongs to the cell
    top = sorted(trials, key=lambda vt: -vt[0])[:5]  # stable: index order breaks ties
    tests = [t * 100 for _, t in top]
    return {"n": len(trials), "best_test": top[0][1] * 100, "best_val": max(v for v, _ in trials) * 100,
            "top_test_mean": statistics.fmean(tests), "top_test_std": statistics.stdev(tests),
            "top_val_mean": statistics.fmean(v * 100 for v, _ in top)}


def test_three_random_cells_match_a_hand_computation(results):
    d, _ = results
    rows = {(r["family"], int(r["budget"])): r for r in _csv(d / "report" / "table2.csv")}
    for cell in random.Random(5).sample(sorted(STUDENTS), 3):
        r, want = rows[cell], _by_hand(*cell)
        assert int(r["n"]) == want["n"], cell
        for k in ("best_test", "best_val", "top_test_mean", "top_test_std", "top_val_mean"):
            assert float(r[k]) == round(want[k], 4), (cell, k)
        assert r["top_k"] == "5"


def test_failed_trials_are_counted_not_averaged(results):
    d, _ = results
    r = next(r for r in _csv(d / "report" / "table2.csv") if (r["family"], r["budget"]) == ("conv2", "100000"))
    assert r["n"] == "7" and r["n_failed"] == "1"
    assert float(r["best_test"]) == 57.0 and float(r["best_val"]) == 60.0   # the failed 99% is excluded
    assert "1 failed" in (d / "report" / "table2.md").read_text()


def test_missing_cell_is_missing_not_zero(results):
    d, _ = results
    r = next(r for r in _csv(d / "report" / "table2.csv") if (r["family"], r["budget"]) == ("conv4", "1000000"))
    assert r["status"] == "missing" and r["n"] == "0"
    assert r["best_test"] == "" and r["top_test_mean"] == "" and r["params"] == ""
    assert r["cut_short"] == "yes" and "0 of 6 planned" in r["note"]
    md = (d / "report" / "table2.md").read_text()
    conv4 = next(line for line in md.splitlines() if line.startswith("| conv4 |"))
    assert "—" in conv4.split("|")[3]          # the 1M column of conv4
    assert "0.00" not in conv4


def test_cut_short_cells_say_so_and_onecycle_is_not_capped(results):
    d, _ = results
    rows = {(r["family"], r["budget"]): r for r in _csv(d / "report" / "table2.csv")}
    assert rows[("conv2", "100000")]["cut_short"] == "yes"                 # 8 of 10 planned ran
    assert "8 of 10 planned" in rows[("conv2", "100000")]["note"]
    assert rows[("conv2", "1000000")]["cut_short"] == "yes"                # a run hit max_epochs
    assert "max_epochs" in rows[("conv2", "1000000")]["note"]
    assert rows[("conv0", "1000000")]["cut_short"] == "no"                 # onecycle ends at max_epochs by design
    assert rows[("conv0", "100000")]["cut_short"] == "no"                  # 6 of 6 planned
    md = (d / "report" / "table2.md").read_text()
    assert "†" in md and "8 of 10 planned trials ran" in md


def test_main_teacher_and_paper_values(results):
    d, _ = results
    rows = {(r["family"], r["budget"]): r for r in _csv(d / "report" / "table2.csv")}
    r = rows[("conv2", "1000000")]
    assert r["teacher"] == ENS and r["other_teacher_runs"] == "3" and r["n"] == "6"
    # 1M is a paper budget: value and difference; 100k is not: nothing (no neighbour within a paper step)
    assert float(r["paper_test_acc"]) == P.STUDENTS["conv2"][1_000_000] and r["paper_exact"] == "yes"
    assert float(r["diff_best_vs_paper"]) == round(63.0 - 87.9, 4)   # test of the best by val (.66 -> .63)
    r = rows[("conv2", "100000")]
    assert r["paper_test_acc"] == "" and r["diff_best_vs_paper"] == ""


def test_table1_rows(results):
    d, _ = results
    rows = _csv(d / "report" / "table1.csv")
    base = {r["family"]: r for r in rows if r["section"] == "hard targets"}
    assert base["conv2"]["n"] == "3" and float(base["conv2"]["best_test"]) == 54.0
    assert float(base["conv2"]["paper_test_acc"]) == 88.9 and base["conv2"]["diff_best_vs_paper"] == ""  # 1M ≠ 10M
    assert base["conv1"]["status"] == "missing"         # the paper has it, this run does not
    teachers = [r for r in rows if r["section"] == "teachers"]
    assert [float(r["best_test"]) for r in teachers[:3]] == [76.0, 77.0, 73.0]   # ranked by val, not test
    assert [float(r["paper_test_acc"]) for r in teachers[:3]] == [92.78, 92.77, 92.67]
    ens = next(r for r in rows if r["section"] == "ensembles")
    # no Δ to the paper at sizes the paper never trained (its ensemble: 83.4M; its teachers 2.5-5.8M)
    assert float(ens["best_test"]) == 79.0 and ens["diff_best_vs_paper"] == "" and ens["paper_exact"] == "no"
    assert all(r["diff_best_vs_paper"] == "" for r in teachers)


def test_markdown_and_latex(results):
    d, _ = results
    rep = d / "report"
    for name in ("table1", "table2"):
        md = rep.joinpath(f"{name}.md").read_text()
        assert re.search(r"^\|---", md, re.M)
        tex = rep.joinpath(f"{name}.tex").read_text()
        assert tex.count("\\begin{tabular}") == tex.count("\\end{tabular}") >= 1
        assert "²" not in tex and "—" not in tex        # unicode turned into LaTeX
    assert "87.9" in rep.joinpath("table2.md").read_text()  # the paper's Table 2 beside


def test_html_is_one_self_contained_file(results):
    d, html_path = results
    page = html_path.read_text()
    assert html_path == d / "report" / "report.html"
    assert 'src="http' not in page and 'href="http' not in page and "<link" not in page and "<script" not in page
    srcs = re.findall(r'src="([^"]*)"', page)
    assert len(srcs) >= 2 and all(s.startswith("data:image/png;base64,") for s in srcs)  # fig 1 + teacher->student
    for number in ("93.8", "92.78", "87.9", "84.6", "85.8"):
        assert number in page
    assert "cifar-10-subset-python.tar.gz" in page and "mimicnet reproduce --preset cpu" in page
    assert "torch" in page and "1017" in page


def test_figures_written(results):
    d, _ = results
    rep = d / "report"
    for stem in ("figure1", "teacher_student"):
        png = rep.joinpath(f"{stem}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
        assert "<svg" in rep.joinpath(f"{stem}.svg").read_text()[:2000]


def test_cli_and_an_empty_results_folder(tmp_path, capsys):
    p = argparse.ArgumentParser()
    cli_report.register(p.add_subparsers(dest="command"))
    args = p.parse_args(["report", str(tmp_path)])
    assert args.func(args) == 0                                    # no index yet: a report that says so
    out = capsys.readouterr().out
    assert "report.html" in out and "No student runs" in out
    assert not (tmp_path / "report" / "teacher_student.png").exists()
    page = (tmp_path / "report" / "report.html").read_text()
    assert "not measured" in page and "93.8" in page
    args = p.parse_args(["report", str(tmp_path / "nope")])
    assert args.func(args) == 2 and "not found" in capsys.readouterr().err
    with pytest.raises(ReportError):
        build_report(tmp_path / "nope")


def test_html_escapes_what_the_user_wrote(tmp_path):
    """Folder names, presets, commands, run ids and teachers come from the user: text on the page, never markup
    (the main page and a fixed study's page)."""
    main = tmp_path / "x<script>alert(1)&"          # a folder name cannot hold the "/" of </script>
    main.mkdir()
    append_index(main / "index.csv", _row(kind="teacher", family="teacher", val_acc=.7, test_acc=.7, run_id=HOSTILE))
    append_index(main / "index.csv", _row(kind="student", family="conv2", budget=100_000, params=100_000, val_acc=.6,
                                          test_acc=.6, teacher=HOSTILE, loss="l2-logits"))
    (main / "reproduce.json").write_text(json.dumps({"preset": HOSTILE, "command": HOSTILE,
                                                     "data": {"path": HOSTILE}, "stages": {HOSTILE: 1}}))
    study = tmp_path / "s<script>alert(1)&"
    shutil.copytree(DOCS_RESULTS / "ba-caruana-2026-11-24", study)
    repro = json.loads((study / "reproduce.json").read_text())
    (study / "reproduce.json").write_text(json.dumps({**repro, "command": HOSTILE}))
    for d in (main, study):
        page = build_report(d).read_text()
        assert "<script" not in page and "&lt;script&gt;alert(" in page, d.name
        text = html.unescape(page)
        assert HOSTILE in text and str(d) in text, d.name     # escaped, not dropped


def test_templates_ship_with_the_package():
    templates = importlib.resources.files("mimicnet.report") / "templates"
    for name in ("base.html.j2", "macros.html.j2", "main.html.j2", "study.html.j2"):
        assert (templates / name).is_file(), name
    for page in ("main.html.j2", "study.html.j2"):           # one base for every page
        assert '{% extends "base.html.j2" %}' in (templates / page).read_text()


def test_no_headline_number_is_chosen_by_the_test_set(results, tmp_path):
    """Permute the test accuracies among each cell's trials: every cell ships the same trial (chosen on
    validation), and its headline is that trial's test accuracy, whatever the permutation."""
    d, _ = results
    rows = list(csv.DictReader(open(d / "index.csv", newline="")))
    cells: dict = {}
    for r in rows:
        cells.setdefault((r["kind"], r["family"], r["budget"], r["teacher"]), []).append(r)
    rng = random.Random(3)
    for trials in cells.values():
        tests = [r["test_acc"] for r in trials]
        rng.shuffle(tests)
        for r, t in zip(trials, tests):
            r["test_acc"] = t
    perm = tmp_path / "permuted"
    perm.mkdir()
    with open(perm / "index.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    shutil.copy(d / "reproduce.json", perm / "reproduce.json")
    build_report(perm)
    for name in ("table2.csv", "table1.csv"):
        before = {(r.get("family"), r.get("budget"), r.get("model")): r for r in _csv(d / "report" / name)}
        after = {(r.get("family"), r.get("budget"), r.get("model")): r for r in _csv(perm / "report" / name)}
        assert before.keys() == after.keys()
        for key, b in before.items():
            a = after[key]
            assert a["best_val"] == b["best_val"], key       # the same trial is chosen ...
    by_val = {}
    for r in rows:  # ... and the headline is its (permuted) test accuracy
        if r["kind"] == "student" and r["teacher"] == ENS and r["status"] in ("", "complete"):
            k = (r["family"], r["budget"])
            if k not in by_val or float(r["val_acc"]) > float(by_val[k]["val_acc"]):
                by_val[k] = r
    t2 = {(r["family"], r["budget"]): r for r in _csv(perm / "report" / "table2.csv")}
    for k, r in by_val.items():
        assert float(t2[k]["best_test"]) == round(float(r["test_acc"]) * 100, 4), k


def test_a_config_whose_seed_reruns_all_failed_is_not_its_lucky_trial():
    """Every seed rerun of the best config collapsed or failed: the cell has nothing for the claims to compare
    (its search trial alone would stand in for seeds that did not train) and says so."""
    from mimicnet.report.cells import Cell, Run
    from mimicnet.report.figures import _cell_point
    from mimicnet.report.tables import _seed_text

    def run(status, test, trial=None, repeat_of=None):
        return Run(row={}, order=0, kind="student", family="conv4", budget=100_000, params=99_000,
                   val=0.60 if trial is not None else None, test=test, status=status, teacher=ENS,
                   teacher_test=None, epochs=20, max_epochs=20, seconds=1.0, trial=trial, repeat_of=repeat_of)

    c = Cell(kind="student", family="conv4", budget=100_000, runs=[run("complete", 0.62, trial=0)],
             seed_runs=[run("collapsed", 0.10, repeat_of=0), run("collapsed", 0.11, repeat_of=0),
                        run("failed", None, repeat_of=0)])
    assert c.samples == []
    assert _seed_text(c) == "— (all 3 seeds failed: 2 collapsed, 1 failed)"
    assert _cell_point(c) is None
    c.seed_runs[0] = run("complete", 0.58, repeat_of=0)  # one seed trained: it alone is the sample
    assert c.samples == [0.58]
    c.seed_runs = []  # no seed reruns at all: the best trial stands for the cell, as before
    assert c.samples == [0.62]


def test_best_teacher_is_its_configs_seed_reruns_and_studies_do_not_mix():
    """The ensemble's claim compares with the best teacher config by validation as a seed sample: its seed
    reruns, not the trial that won the search; trial 0 of another teacher search is another config."""
    from mimicnet.report.cells import Run
    from mimicnet.report.claims import best_teacher, teacher_groups

    def run(study, val, trial=None, repeat_of=None):
        return Run(row={"study": study}, order=0, kind="teacher", family="teacher", budget=None, params=1,
                   val=val, test=val, status="complete", teacher="", teacher_test=None, epochs=1, max_epochs=1,
                   seconds=1.0, trial=trial, repeat_of=repeat_of)

    runs = [run("teachers", 0.70, trial=0), run("teachers", 0.60, trial=1), run("wide", 0.65, trial=0),
            run("teachers", 0.66, repeat_of=0), run("teachers", 0.67, repeat_of=0)]
    assert sorted(len(g) for g in teacher_groups(runs)) == [1, 1, 3]
    assert [r.val for r in best_teacher(runs)] == [0.67, 0.66]
    assert [r.val for r in best_teacher(runs[:3])] == [0.70]  # no reruns: the trial is all there is
