"""When is a difference a finding? One rule for every claim of every study report.

Both sides are samples over seeds (test accuracy of the same config trained with different seeds). Their
difference of means counts only when it is larger than twice its standard error,

    SE = sqrt(sd_a² / n_a + sd_b² / n_b),

about a 95% interval under a normal approximation. A side with one run, or whose runs all scored the same
(two seeds can tie on a 1,000-image test set: an sd of 0 is a tie, not the absence of noise), has no spread
of its own: it borrows the other side's sd (same kind of training, same seed noise). When neither side has a
spread, nothing is known about the noise and the verdict says so. The verdicts:

    holds          the difference is in the claimed direction and beyond 2 SE
    differs        it is beyond 2 SE in the other direction
    within noise   |difference| <= 2 SE
    no spread      one run on each side: no seed spread measured
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

RULE = ("a difference counts only when it exceeds twice its standard error over seeds, "
        "SE = sqrt(sd_a²/n_a + sd_b²/n_b) (a side with one run borrows the other side's sd)")
HOLDS, DIFFERS, NOISE, NO_SPREAD, NOT_MEASURED = "holds", "differs", "within noise", "no spread", "not measured"


@dataclass(frozen=True)
class Difference:
    a: float            # mean of side a
    b: float            # mean of side b
    n_a: int
    n_b: int
    se: float | None    # standard error of a - b; None: no spread measured

    @property
    def diff(self) -> float:
        return self.a - self.b

    def verdict(self, sign: int = +1) -> str:
        """Claim "a - b has this sign" (+1: a beats b; -1: b beats a)."""
        if self.se is None:
            return NO_SPREAD
        d = sign * self.diff
        if d > 2 * self.se:
            return HOLDS
        if d < -2 * self.se:
            return DIFFERS
        return NOISE

    def text(self) -> str:
        se = "no spread" if self.se is None else f"2 SE {2 * self.se:.2f}"
        return f"{self.a:.2f} vs {self.b:.2f}: {self.diff:+.2f} ({se}; n {self.n_a}/{self.n_b})"


def difference(a: Sequence[float], b: Sequence[float]) -> Difference | None:
    """The difference of two seed samples (None when a side is empty)."""
    a, b = [float(x) for x in a], [float(x) for x in b]
    if not a or not b:
        return None
    sd_a = (statistics.stdev(a) or None) if len(a) > 1 else None
    sd_b = (statistics.stdev(b) or None) if len(b) > 1 else None
    sd_a = sd_b if sd_a is None else sd_a
    sd_b = sd_a if sd_b is None else sd_b
    se = None if sd_a is None else math.sqrt(sd_a ** 2 / len(a) + sd_b ** 2 / len(b))
    return Difference(statistics.fmean(a), statistics.fmean(b), len(a), len(b), se)


def combine(verdicts: Sequence[str]) -> str:
    """One verdict for a claim made of several comparisons (e.g. every pair of depths at every budget):
    differs if any differs, holds if all hold, no spread if none was measurable, else within noise."""
    v = [x for x in verdicts if x != NOT_MEASURED]
    if not v:
        return NOT_MEASURED
    if DIFFERS in v:
        return DIFFERS
    if all(x == HOLDS for x in v):
        return HOLDS
    if all(x == NO_SPREAD for x in v):
        return NO_SPREAD
    return NOISE


def judge_pairs(pairs: Iterable[tuple[str, Sequence[float], Sequence[float]]],
                describe: Callable[[str, Difference], str]) -> tuple[str, str]:
    """A claim made of comparisons "a beats b", one per (label, a, b): (its verdict by `combine`, 'k hold, ...
    of n: ' + each comparison as `describe(label, difference)`). Pairs with an empty side are left out;
    with none left the claim is not measured."""
    ds = [(label, d) for label, a, b in pairs if (d := difference(a, b)) is not None]
    if not ds:
        return NOT_MEASURED, "not measured"
    verdicts = [d.verdict(+1) for _, d in ds]
    return combine(verdicts), f"{tally(verdicts)} of {len(ds)}: " + ", ".join(describe(n, d) for n, d in ds)


def tally(verdicts: Sequence[str]) -> str:
    """'3 hold, 1 within noise' of a claim's comparisons."""
    names = {HOLDS: "hold", DIFFERS: "differ", NOISE: "within noise", NO_SPREAD: "no spread"}
    counts = {k: sum(x == k for x in verdicts) for k in names}
    return ", ".join(f"{n} {names[k]}" for k, n in counts.items() if n)
