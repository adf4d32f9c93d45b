"""Seeds as an axis: core.noise's rule, and the report's cells and claims on seed reruns."""
from __future__ import annotations

import math

import pytest
from scipy import stats

from mimicnet.core import noise
from mimicnet.core.index import IndexRow, append_index
from mimicnet.report.cells import build_cells, load_runs
from mimicnet.report.claims import headline
from mimicnet.report.tables import table1, table2


def test_welch_known_answers_against_scipy():
    # sd 1 each, n 3: SE = sqrt(2/3), t = 4 / 0.816 = 4.899 on 4 degrees of freedom, p = 0.00805
    c = noise.compare([64.0, 65.0, 66.0], [60.0, 61.0, 62.0])
    assert c.test == "welch" and c.diff == pytest.approx(4.0) and c.se == pytest.approx(math.sqrt(2 / 3))
    assert c.t == pytest.approx(4.898979, abs=1e-6) and c.df == pytest.approx(4.0) and c.p == pytest.approx(0.008050, abs=1e-6)
    for a, b in (([61.9, 28.9, 63.4], [55.1, 57.3]), ([46.3, 45.9, 46.8, 44.2], [58.3, 56.1, 60.0]),
                 ([1.0, 2.0, 3.0, 4.0, 9.0], [2.0, 2.5, 2.7])):
        ref = stats.ttest_ind(a, b, equal_var=False)
        c = noise.compare(a, b)
        assert c.t == pytest.approx(float(ref.statistic)) and c.p == pytest.approx(float(ref.pvalue))
        assert c.df == pytest.approx(float(ref.df))   # Welch-Satterthwaite
    # unequal spreads: df = (va + vb)^2 / (va^2/(na-1) + vb^2/(nb-1)) with va = 2/2, vb = 0.5/2 -> 1.47
    c = noise.compare([63.0, 65.0], [60.0, 61.0])
    assert c.df == pytest.approx(1.5625 / 1.0625) and c.p == pytest.approx(0.1290, abs=1e-4)


def test_single_case_and_untestable():
    # Crawford & Howell: t = (70 - 61) / (1.414 * sqrt(1 + 1/2)) = 5.196 on 1 df, two-sided p = 0.121
    c = noise.compare([70.0], [60.0, 62.0])
    assert c.test == "single-case" and c.t == pytest.approx(5.196152, abs=1e-6) and c.df == 1
    assert c.p == pytest.approx(0.121038, abs=1e-6)
    assert noise.compare([60.0, 62.0], [70.0]).p == pytest.approx(c.p)     # either side may be the single one
    assert noise.compare([70.0], [60.0]).test == "" and noise.compare([70.0], [60.0]).p is None
    assert noise.compare([60.0, 60.0], [58.0, 58.0]).test == ""              # no spread anywhere: nothing to test
    assert noise.compare([], [1.0]) is None
    j = noise.judge_one([70.0], [60.0])
    assert j.verdict == noise.TOO_FEW and "no spread to test" in j.text()


def test_a_p_of_0_13_no_longer_holds():
    # the old rule (|diff| > 2 SE) called this real: 3.5 > 2 * 1.118. Welch on 1.5 df says p = 0.129.
    j = noise.judge_one([63.0, 65.0], [60.0, 61.0])
    assert j.verdict in (noise.TOO_FEW, noise.NOISE) and j.verdict != noise.HOLDS
    assert j.items[0].seeds is not None and j.items[0].seeds > 2          # it says how many seeds would decide
    assert noise.judge_one([64.0, 65.0, 66.0], [60.0, 61.0, 62.0]).verdict == noise.HOLDS
    assert noise.judge_one([64.0, 65.0, 66.0], [60.0, 61.0, 62.0], sign=-1).verdict == noise.DIFFERS


def test_holm_over_a_claims_comparisons():
    adj = noise.holm([0.01, 0.04, 0.03, None])
    assert adj[:3] == pytest.approx([0.03, 0.06, 0.06]) and adj[3] is None
    # alone, p = 0.016 holds; beside a second comparison it is corrected to 0.032 and still holds; beside two
    # more (p 0.016 x 3 = 0.048) it holds, and with a fourth (x 4 = 0.064) it does not
    strong = ("s", [64.0, 65.0, 66.0], [60.5, 61.0, 61.5])
    c = noise.compare(strong[1], strong[2])
    weak = [(f"w{i}", [60.0, 61.0, 62.0], [60.1, 61.1, 61.9]) for i in range(3)]
    assert noise.judge([strong]).verdict == noise.HOLDS
    raw = c.p
    for k in range(4):
        j = noise.judge([strong, *weak[:k]])
        assert j.items[0].p_adj == pytest.approx(min(1.0, (k + 1) * raw))
        assert (j.items[0].verdict == noise.HOLDS) == ((k + 1) * raw < noise.ALPHA)


def test_seeds_needed_known_answer_and_power():
    # d = 1 sd, alpha 0.05 two-sided, 80% power: 17 a side (the textbook number for Student's t)
    half = 1 / math.sqrt(2)
    c = noise.Comparison((1 + half, 1 - half), (half, -half))
    assert c.sd_a == pytest.approx(1.0) and c.sd_b == pytest.approx(1.0) and c.diff == pytest.approx(1.0)
    assert c.seeds_needed() == 17
    assert noise.Comparison((2 + half, 2 - half), (half, -half)).seeds_needed() == 6   # d = 2: 6 a side


def test_claim_verdicts_combine():
    assert noise.combine([noise.HOLDS, noise.HOLDS]) == noise.HOLDS
    assert noise.combine([noise.HOLDS, noise.DIFFERS]) == noise.DIFFERS
    assert noise.combine([noise.HOLDS, noise.NOISE]) == noise.NOISE
    assert noise.combine([noise.HOLDS, noise.TOO_FEW, noise.NOISE]) == noise.TOO_FEW
    assert noise.combine([]) == noise.NOT_MEASURED
    j = noise.judge([("a", [64.0, 65.0, 66.0], [60.0, 61.0, 62.0]), ("b", [60.0, 62.0, 61.0], [60.2, 61.1, 61.8])])
    assert j.verdict != noise.HOLDS and j.tally().startswith("1 holds")
    assert "Holm" in noise.RULE and "Welch" in noise.RULE


def test_equivalence_by_tost():
    tight = noise.equivalent([61.3, 61.7, 61.5, 61.4], [61.2, 61.6, 61.1, 61.5], margin=1.0)
    assert tight.verdict == noise.HOLDS
    far = noise.equivalent([65.0, 65.2, 64.9, 65.1], [61.2, 61.6, 61.1, 61.5], margin=1.0)
    assert far.verdict == noise.DIFFERS
    # two runs a side 1.8 apart: not shown equivalent (the old rule's "within noise counts as equal" is gone)
    assert noise.equivalent([61.3, 61.7], [59.2, 59.6], margin=1.0).verdict != noise.HOLDS


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


def test_seeds_needed_for_a_single_run_against_seeds():
    # one ensemble against 3 teacher seeds 3.2 points below it (sd 1): the ensemble stays one run, the
    # teachers' side needs more seeds; the power of the single-case t grows with them and is checked here
    c = noise.compare([70.0], [66.0, 67.0, 67.5])
    n = c.seeds_needed()
    assert c.test == "single-case" and n is not None and 3 < n <= 10
    sd, d = c.sd_b, c.diff
    for k, want in ((n, True), (n - 1, False)):
        delta = d / (sd * math.sqrt(1 + 1 / k))
        crit = stats.t.isf(0.025, k - 1)
        assert (stats.nct.sf(crit, k - 1, delta) + stats.nct.cdf(-crit, k - 1, delta) >= 0.8) == want
    assert "on the side of several" in noise.judge_one([70.0], [66.0, 67.0, 67.5]).text()
