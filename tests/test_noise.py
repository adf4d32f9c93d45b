"""Seeds as an axis: core.noise's rule, and the report's cells and claims on seed reruns."""
from __future__ import annotations

import math

import pytest

from mimicnet.core import noise
from mimicnet.core.index import IndexRow, append_index
from mimicnet.report.report import build_cells, headline, load_runs, table1, table2


def test_the_rule_by_hand():
    d = noise.difference([64.0, 65.0, 66.0], [60.0, 61.0, 62.0])   # sd 1 each, n 3: SE = sqrt(2/3) = 0.816
    assert d.diff == pytest.approx(4.0) and d.se == pytest.approx(math.sqrt(2 / 3))
    assert d.verdict(+1) == noise.HOLDS and d.verdict(-1) == noise.DIFFERS
    close = noise.difference([64.0, 65.0, 66.0], [63.0, 64.5, 66.0])  # 0.5 apart, 2 SE = 1.83
    assert close.verdict(+1) == close.verdict(-1) == noise.NOISE
    assert noise.difference([70.0], [60.0]).verdict() == noise.NO_SPREAD            # nothing known of the noise
    one = noise.difference([70.0], [60.0, 62.0])   # the single run borrows sd 1.41: SE = sqrt(2 + 1) = 1.73
    assert one.se == pytest.approx(math.sqrt(2 / 1 + 2 / 2)) and one.verdict() == noise.HOLDS
    assert noise.difference([], [1.0]) is None
    tie = noise.difference([60.0, 60.0], [59.0, 61.0])   # a tie is no spread: it borrows the other side's
    assert tie.se == pytest.approx(math.sqrt(2 / 2 + 2 / 2)) and tie.verdict() == noise.NOISE
    assert noise.difference([60.0, 60.0], [58.0, 58.0]).verdict() == noise.NO_SPREAD
    assert noise.combine([noise.HOLDS, noise.NOISE]) == noise.NOISE
    assert noise.combine([noise.HOLDS, noise.DIFFERS]) == noise.DIFFERS
    assert noise.combine([noise.HOLDS, noise.HOLDS]) == noise.HOLDS


def _row(**kw):
    base = dict(kind="student", loss="l2-logits", teacher="ens", teacher_test_acc=.80, epochs=5, max_epochs=5,
                status="complete", data_sha256="ab" * 32, code_version="0")
    return IndexRow(**{**base, **kw})


@pytest.fixture
def seeded(tmp_path):
    """Two student cells at 100k: conv1 (search best 0.62 test, seeds 0.60 ± 0.01) and conv2 (search best 0.70
    test, seeds ~0.605 ± 0.02: its search winner was lucky); seed runs of an older best trial of conv2 too."""
    idx = tmp_path / "index.csv"
    for fam, trials, seeds, older in (("conv1", [(.61, .62), (.55, .58)], [.59, .60, .61], []),
                                      ("conv2", [(.66, .70), (.60, .61)], [.59, .60, .625], [.90])):
        for i, (v, t) in enumerate(trials):
            append_index(idx, _row(family=fam, budget=100_000, params=99_000, val_acc=v, test_acc=t, trial=i,
                                   study=f"student-{fam}-100k", path=str(tmp_path / fam / f"t{i}")))
        for k, t in enumerate(seeds):
            append_index(idx, _row(family=fam, budget=100_000, params=99_000, val_acc=.6, test_acc=t, seed=k + 1,
                                   repeat_of=0, study=f"student-{fam}-100k", path=str(tmp_path / fam / f"s{k}")))
        for k, t in enumerate(older):  # seed runs of trial 1, once the best: not this cell's numbers
            append_index(idx, _row(family=fam, budget=100_000, params=99_000, val_acc=.6, test_acc=t, seed=k + 1,
                                   repeat_of=1, study=f"student-{fam}-100k", path=str(tmp_path / fam / f"o{k}")))
    return tmp_path


def test_cells_separate_seed_runs_and_claims_use_them(seeded):
    runs = load_runs(seeded)
    cells = build_cells(runs, ("student",), {})
    c2 = cells[("student", "conv2", 100_000)]
    assert c2.n == 2 and c2.best_test == pytest.approx(70.0)            # the search: seed runs are not trials
    assert c2.seed_tests == pytest.approx([59.0, 60.0, 62.5])           # the current best's seeds only
    s = c2.stats()
    assert s["seed_n"] == 3 and s["seed_test_mean"] == pytest.approx(60.5)
    t2 = table2(runs, {}, None)
    claims = {c["claim"].split(":")[0]: c for c in headline(t2, table1(runs, {}, None, "ens"), ("ens", 80.0))}
    deeper = claims["Deeper students are better"]
    # on the search's best alone conv2 "beats" conv1 by 8 points; on seeds it is 60.5 vs 60.0: within noise
    assert deeper["verdict"] == noise.NOISE and "conv1→conv2@100k +0.50" in deeper["ours"]
    gap = claims["Teacher − student gap"]
    assert gap["verdict"] == noise.HOLDS        # 80 vs ~60: far beyond the seed spread
