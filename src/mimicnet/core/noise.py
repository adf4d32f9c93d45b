"""When is a difference a finding? One statistical judge for every claim of every report.

Both sides of a comparison are samples over seeds (the test accuracy of one config trained with different
seeds). A claim ("deeper students are better") is made of one or more comparisons "a beats b" (each added
conv layer, at each budget). The judge:

- **Welch's t-test** on each comparison (unequal variances, Welch-Satterthwaite degrees of freedom,
  two-sided; `scipy.stats.ttest_ind(equal_var=False)`). A side with a single run (an ensemble, a teacher
  trained once) against a side with several is the single-case t-test of Crawford & Howell (1998):
  t = (x - mean) / (sd * sqrt(1 + 1/n)), n - 1 degrees of freedom, i.e. "is x outside the spread of the
  other side's seeds". A side whose seeds all score the same (a 1,000-image test set makes ties) takes the
  other side's sd: a tie is not the absence of seed noise. With one run on each side, or no spread on
  either, nothing can be tested.
- **Holm-Bonferroni** across the comparisons of one claim (the family-wise error of the claim stays at α).
- α = 0.05. The verdict of a comparison:

      holds          significant, in the claimed direction
      differs        significant, in the other direction
      too few seeds  not significant, but at most MAX_SEEDS seeds a side would detect the observed
                     difference with 80% power at the claim's strictest Holm level (the number is given); or a
                     side has one run (an ensemble, a teacher trained once: it is one draw, not a small effect,
                     and the seeds its other side would need are given); or nothing could be tested
      within noise   not significant, and even MAX_SEEDS seeds a side would not detect it: the difference
                     is small against the seed spread

- A claim **holds** when every one of its comparisons holds, **differs** when any differs; otherwise it is
  undecided: **too few seeds** when some comparison is, else **within noise**.

An equivalence claim ("normalising the logits is not crucial") is the two one-sided tests (TOST) of Welch
at the same α against a stated margin: it holds when the whole 1 - 2α interval of the difference lies
inside ±margin, differs when a one-sided test puts the difference beyond the margin.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from .lazy import lazy_module

stats = lazy_module("scipy.stats")  # loaded at the first test, not at every command's start

ALPHA = 0.05
POWER = 0.80
MAX_SEEDS = 10    # the most seeds a side we call a practical rerun (for "too few seeds")

HOLDS, DIFFERS, NOISE, TOO_FEW, NOT_MEASURED = "holds", "differs", "within noise", "too few seeds", "not measured"
VERDICTS = (HOLDS, DIFFERS, NOISE, TOO_FEW, NOT_MEASURED)

TEST_NAME = "Welch's t-test (two-sided), Holm-corrected over a claim's comparisons"
RULE = (f"each comparison: {TEST_NAME} at α = {ALPHA:g} on seed samples (a single run against several seeds: "
        f"Crawford-Howell's single-case t; a side whose seeds tie takes the other's spread); holds / differs when "
        f"significant in / against the claimed direction; otherwise too few seeds when ≤ {MAX_SEEDS} seeds a side "
        f"would detect the observed difference with {POWER:.0%} power at the claim's strictest Holm level, or "
        f"when a side has one run, else within noise. A claim holds when all its comparisons hold, differs when "
        f"any differs, else too few seeds when any is, else within noise")


@dataclass(frozen=True)
class Comparison:
    """a - b on two seed samples, with its test (no multiplicity correction: see `judge`)."""
    a: tuple[float, ...]
    b: tuple[float, ...]

    @property
    def n_a(self) -> int:
        return len(self.a)

    @property
    def n_b(self) -> int:
        return len(self.b)

    @property
    def mean_a(self) -> float:
        return statistics.fmean(self.a)

    @property
    def mean_b(self) -> float:
        return statistics.fmean(self.b)

    @property
    def diff(self) -> float:
        return self.mean_a - self.mean_b

    @property
    def sd_a(self) -> float | None:
        return statistics.stdev(self.a) if self.n_a > 1 else None

    @property
    def sd_b(self) -> float | None:
        return statistics.stdev(self.b) if self.n_b > 1 else None

    @property
    def _spreads(self) -> tuple[float | None, float | None]:
        """The sds the test uses: a side whose runs all tie (possible on a 1,000-image test set: a tie is not
        the absence of seed noise) takes the other side's, as does a side with one run; None: no spread."""
        sa, sb = self.sd_a or None, self.sd_b or None
        return (sa if sa is not None else sb), (sb if sb is not None else sa)

    @property
    def test(self) -> str:
        """'welch', 'single-case', or '' when nothing can be tested (one run a side, or no spread at all)."""
        sa, sb = self._spreads
        if sa is None:
            return ""
        if self.n_a > 1 and self.n_b > 1:
            return "welch"
        return "single-case" if max(self.n_a, self.n_b) > 1 else ""

    @property
    def se(self) -> float | None:
        """Standard error of the difference under the test used (None: no test)."""
        sa, sb = self._spreads
        if self.test == "welch":
            return math.sqrt(sa ** 2 / self.n_a + sb ** 2 / self.n_b)
        if self.test == "single-case":
            sd, n = (sb, self.n_b) if self.n_a == 1 else (sa, self.n_a)
            return sd * math.sqrt(1 + 1 / n)
        return None

    @property
    def df(self) -> float | None:
        sa, sb = self._spreads
        if self.test == "welch":
            va, vb = sa ** 2 / self.n_a, sb ** 2 / self.n_b
            return (va + vb) ** 2 / (va ** 2 / (self.n_a - 1) + vb ** 2 / (self.n_b - 1))
        if self.test == "single-case":
            return float(max(self.n_a, self.n_b) - 1)
        return None

    @property
    def t(self) -> float | None:
        return None if self.se is None else self.diff / self.se

    @property
    def p(self) -> float | None:
        """Two-sided p-value: the t distribution's tails at t on df (equal to scipy.stats.ttest_ind(
        equal_var=False) for two samples without ties; tests/test_noise.py compares)."""
        if self.se is None:
            return None
        return float(2 * stats.t.sf(abs(self.t), self.df))

    def power(self, n: int, alpha: float = ALPHA) -> float:
        """The test's power to detect the observed difference (two-sided, at `alpha`) with n seeds a side
        (Welch) or n on the side of several (single case), the observed sds taken as the truth."""
        sa, sb = self._spreads
        if self.test == "single-case":
            sd = sb if self.n_a == 1 else sa
            df, delta = n - 1, abs(self.diff) / (sd * math.sqrt(1 + 1 / n))
        else:
            s2 = sa ** 2 + sb ** 2
            df, delta = (n - 1) * s2 ** 2 / (sa ** 4 + sb ** 4), abs(self.diff) / math.sqrt(s2 / n)
        crit = stats.t.isf(alpha / 2, df)
        return float(stats.nct.sf(crit, df, delta) + stats.nct.cdf(-crit, df, delta))

    def seeds_needed(self, alpha: float = ALPHA, power: float = POWER, most: int = 1000) -> int | None:
        """The fewest seeds with which the test detects the observed difference with `power` (see `power`;
        it grows with n, so a doubling then a bisection finds it). None when no spread is known or the
        difference is 0; `most` + 1 when even `most` would not do."""
        if self.test == "" or self.diff == 0:
            return None
        if self.power(most, alpha) < power:
            return most + 1
        lo, hi = 1, 2                      # power(lo) < power <= power(hi)
        while self.power(hi, alpha) < power:
            lo, hi = hi, min(2 * hi, most)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if self.power(mid, alpha) < power else (lo, mid)
        return hi


def compare(a: Sequence[float], b: Sequence[float]) -> Comparison | None:
    """The comparison of two seed samples (None when a side is empty)."""
    a, b = tuple(float(x) for x in a), tuple(float(x) for x in b)
    return Comparison(a, b) if a and b else None


@dataclass(frozen=True)
class Judged:
    """One comparison of a claim, judged: its p-value after Holm's correction and its verdict."""
    label: str
    c: Comparison
    p_adj: float | None
    verdict: str
    seeds: int | None      # seeds a side that would detect the observed difference (not significant ones)

    def text(self, nd: int = 2) -> str:
        """'conv0→conv1@100k +18.45 (65.10 vs 46.65, n 3/3, p 0.0012)' plus, when undecided, the seeds needed."""
        c = self.c
        head = f"{self.label} " if self.label else ""
        if self.p_adj is None:
            stat = f"n {c.n_a}/{c.n_b}, no spread to test"
        else:
            stat = f"n {c.n_a}/{c.n_b}, p {_p(self.p_adj)}"
        more = ""
        if self.verdict in (TOO_FEW, NOISE) and self.seeds is not None:
            side = "on the side of several" if c.test == "single-case" else "a side"
            more = (f"; {self.seeds} seeds {side} would detect it" if self.seeds <= MAX_SEEDS
                    else f"; > {MAX_SEEDS} seeds {side} to detect it")
        return f"{head}{c.diff:+.{nd}f} ({c.mean_a:.{nd}f} vs {c.mean_b:.{nd}f}, {stat}{more})"


def _p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


@dataclass(frozen=True)
class Judgement:
    """A claim's verdict and its judged comparisons."""
    verdict: str
    items: tuple[Judged, ...]

    def tally(self) -> str:
        """'1 holds, 1 too few seeds' of the comparisons."""
        counts = {v: sum(j.verdict == v for j in self.items) for v in VERDICTS}
        return ", ".join(f"{n} {v}" for v, n in counts.items() if n)

    def text(self, describe: Callable[[Judged], str] | None = None) -> str:
        if not self.items:
            return "not measured"
        parts = [(describe or Judged.text)(j) for j in self.items]
        if len(self.items) == 1:
            return parts[0]
        return f"{self.tally()} of {len(self.items)}: " + "; ".join(parts)


def claim_row(claim: str, paper: str, j: Judgement | None,
              describe: Callable[[Judged], str] | None = None) -> dict:
    """One claim as every report shows it: {claim, paper, ours (its comparisons), verdict, tally}; `j` None
    (nothing to compare) is 'not measured'."""
    if j is None or not j.items:
        return {"claim": claim, "paper": paper, "ours": "not measured", "verdict": NOT_MEASURED, "tally": ""}
    return {"claim": claim, "paper": paper, "ours": j.text(describe), "verdict": j.verdict,
            "tally": f"{j.tally()} of {len(j.items)}"}


def holm(ps: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values (None stays None and does not count towards the number of tests)."""
    idx = sorted((i for i, p in enumerate(ps) if p is not None), key=lambda i: ps[i])
    m, out, running = len(idx), [None] * len(ps), 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * ps[i]))
        out[i] = running
    return out


def judge(pairs: Iterable[tuple[str, Sequence[float], Sequence[float]]], sign: int = +1,
          alpha: float = ALPHA) -> Judgement:
    """A claim made of comparisons "a beats b" (sign -1: "b beats a"), one per (label, a, b), judged together
    (Holm over those that can be tested). Pairs with an empty side are left out; none left: not measured."""
    cs = [(label, c) for label, a, b in pairs if (c := compare(a, b)) is not None]
    if not cs:
        return Judgement(NOT_MEASURED, ())
    adj = holm([c.p for _, c in cs])
    m = max(1, sum(p is not None for p in adj))
    items = []
    for (label, c), p in zip(cs, adj):
        seeds = c.seeds_needed(alpha / m)  # power at the strictest Holm level: what a rerun would have to pass
        if p is None:
            v = TOO_FEW
        elif p < alpha:
            v = HOLDS if sign * c.diff > 0 else DIFFERS
        elif c.test == "single-case":  # one run can only be placed against a spread: it is one draw, not small
            v = TOO_FEW
        else:
            v = TOO_FEW if seeds is not None and seeds <= MAX_SEEDS else NOISE
        items.append(Judged(label, c, p, v, seeds if p is None or p >= alpha else None))
    return Judgement(combine([j.verdict for j in items]), tuple(items))


def judge_one(a: Sequence[float], b: Sequence[float], sign: int = +1, label: str = "") -> Judgement:
    """A claim of a single comparison."""
    return judge([(label, a, b)], sign)


def combine(verdicts: Sequence[str]) -> str:
    """One verdict for a claim of several comparisons: holds if all hold, differs if any differs, else too
    few seeds if any is, else within noise (not measured ones left out)."""
    v = [x for x in verdicts if x != NOT_MEASURED]
    if not v:
        return NOT_MEASURED
    if DIFFERS in v:
        return DIFFERS
    if all(x == HOLDS for x in v):
        return HOLDS
    return TOO_FEW if TOO_FEW in v else NOISE


def equivalent(a: Sequence[float], b: Sequence[float], margin: float, alpha: float = ALPHA) -> Judgement:
    """Claim "a and b differ by less than `margin`" by Welch's two one-sided tests (TOST): holds when both
    one-sided tests reject at `alpha` (the 1 - 2α interval of a - b inside ±margin); differs when a two-sided
    test finds |a - b| beyond the margin; else undecided (too few seeds / within noise as in `judge`)."""
    c = compare(a, b)
    if c is None:
        return Judgement(NOT_MEASURED, ())
    if c.se is None:
        return Judgement(TOO_FEW, (Judged(f"|Δ| < {margin:g}", c, None, TOO_FEW, None),))
    df = c.df
    p_lo = float(stats.t.sf((c.diff + margin) / c.se, df))     # H0: diff <= -margin
    p_hi = float(stats.t.cdf((c.diff - margin) / c.se, df))    # H0: diff >= +margin
    p = max(p_lo, p_hi)
    if p < alpha:
        return Judgement(HOLDS, (Judged(f"|Δ| < {margin:g}", c, p, HOLDS, None),))
    # the complement, one-sided: H0 |diff| <= margin against |diff| > margin
    beyond = float(stats.t.sf((abs(c.diff) - margin) / c.se, df))
    if beyond < alpha:
        return Judgement(DIFFERS, (Judged(f"|Δ| > {margin:g}", c, beyond, DIFFERS, None),))
    seeds = _tost_seeds(c, margin, alpha) if abs(c.diff) < margin else None
    v = NOISE if seeds is not None and seeds > MAX_SEEDS else TOO_FEW   # at or past the margin: more seeds decide
    return Judgement(v, (Judged(f"|Δ| < {margin:g}", c, p, v, seeds),))


def _tost_seeds(c: Comparison, margin: float, alpha: float, most: int = 1000) -> int | None:
    """Seeds a side for Welch's TOST to show equivalence with POWER when the true difference is the observed one
    (inside the margin), by the usual approximation: P(both reject) = F((m - |d|)/se - crit) + F((m + |d|)/se
    - crit) - 1. Welch only (a single run cannot be shown equivalent to a spread it is one draw of)."""
    if c.test != "welch":
        return None
    sa, sb = c._spreads
    s2 = sa ** 2 + sb ** 2
    for n in range(2, most + 1):
        df = (n - 1) * s2 ** 2 / (sa ** 4 + sb ** 4)
        se = math.sqrt(s2 / n)
        crit = stats.t.isf(alpha, df)
        pw = stats.t.cdf((margin - abs(c.diff)) / se - crit, df) - stats.t.sf((margin + abs(c.diff)) / se - crit, df)
        if pw >= POWER:
            return n
    return most + 1
