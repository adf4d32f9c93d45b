"""The parameter budget: the paper's budgets, the search bounds at budgets the paper does not list, width constants
to widths, and the solver of the dependent width (paper §2.8)."""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

from .describe import count_params
from .layers import _check_widths
from .paper import BASELINE_BUDGET, TEACHER_BOUNDS
from .registry import STUDENT_BOUNDS, Bounds, BudgetError, ModelError, get_family

BUDGETS = (1_000_000, 3_160_000, 10_000_000, 31_600_000)
__all__ = ["BUDGETS", "BASELINE_BUDGET", "round_half_up", "scaled_bounds", "widths_from_constants", "teacher_widths", "solve_budget",
           "scale_to_budget"]


def round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))  # half-up, not banker's rounding: 0.5 maps to the midpoint


def scaled_bounds(family, budget: int) -> Bounds:
    """Bounds for ``budget``: the table's when listed, else the 1M row with every width (conv filters
    and fc units alike) scaled by sqrt(budget / 1M), floored at 4. sqrt because conv-to-conv and
    fc-to-fc parameters grow with the product of two widths. E.g. 0.1M conv2: 20-120 -> 6-38."""
    fam = get_family(family)
    if fam.name not in STUDENT_BOUNDS:
        raise ModelError(f"family {fam.name!r} has no student bounds; known: "
                         f"{', '.join(sorted(STUDENT_BOUNDS))}")
    table = STUDENT_BOUNDS[fam.name]
    if budget in table:
        return table[budget]
    s = math.sqrt(budget / 1_000_000)
    return tuple((max(4, round_half_up(lo * s)), max(4, round_half_up(hi * s))) for lo, hi in table[1_000_000])


def widths_from_constants(family, constants: Sequence[float], bounds: Bounds
                          ) -> tuple[int | None, ...]:
    """Map constants in [0, 1] linearly into ``bounds`` (one (lo, hi) per constant); the dependent
    width is left ``None``."""
    fam = get_family(family)
    constants = tuple(float(c) for c in constants)
    if fam.variable_widths:  # one constant per width but the last (dependent) one
        fam = dataclasses.replace(fam, width_names=("h",) * (len(constants) + 1),
                                  constants=tuple((i,) for i in range(len(constants))))
    if len(constants) != fam.n_constants:
        raise ModelError(f"family {fam.name!r} takes {fam.n_constants} width constants, "
                         f"got {len(constants)}: {constants}")
    if len(bounds) != fam.n_constants:
        raise ModelError(f"family {fam.name!r} needs {fam.n_constants} (lo, hi) bounds, "
                         f"got {len(bounds)}: {bounds}")
    if any(not 0.0 <= c <= 1.0 for c in constants):
        raise ModelError(f"width constants must be in [0, 1], got {constants}")
    widths: list[int | None] = [None] * len(fam.width_names)
    for c, (lo, hi), idx in zip(constants, bounds, fam.constants):
        for i in idx:
            widths[i] = max(1, round_half_up(lo + c * (hi - lo)))
    return tuple(widths)


def teacher_widths(c1: float, c2: float, c3: float, h1: float) -> tuple[int, int, int, int]:
    """S2: C1->g1 in [32,96], C2->g2 in [64,192], C3->g3 in [128,384], H1->h in [512,1536]."""
    return widths_from_constants("teacher", (c1, c2, c3, h1), TEACHER_BOUNDS)  # type: ignore


def solve_budget(family, budget: int, constants: Sequence[float], bounds: Bounds | None = None,
                 *, tol: float = 0.01, **opts) -> tuple[int, ...]:
    """Full width tuple whose trainable-parameter count is as close as possible to ``budget``.

    The count is affine in the dependent width (it feeds one layer and is fed by another), so count
    at widths 1 and 2 on the meta device, solve, round, and keep the better of the two neighbours.
    ``bounds`` defaults to STUDENT_BOUNDS[family][budget], else ``scaled_bounds``. ``opts`` (batchnorm,
    num_classes, in_shape, ...) go to the builder since they change the count. Raises BudgetError if
    the solved width is < 1, or if the best count misses the budget by more than ``tol`` (1%) although
    integer widths could land closer. At the paper's budgets one unit of the dependent width costs well
    under 1%, so every solution lands within 1%; at budgets scaled down for CPU runs (e.g. 0.1M) one
    bottleneck unit of conv0/conv1 can cost 3-9% of the budget, and the nearest integer width is then
    the honest answer (its actual count is what every report shows)."""
    fam = get_family(family)
    if fam.dependent is None:
        raise ModelError(f"family {fam.name!r} has no dependent width to solve from a budget")
    if bounds is None:  # no constants (a one-layer mlp): nothing to bound
        bounds = () if len(tuple(constants)) == 0 else scaled_bounds(fam, budget)
    fixed = widths_from_constants(fam, constants, bounds)
    widths = list(fixed)
    opts.pop("dropout", None)  # dropout has no parameters; also lets callers pass full build opts

    def count(w: int) -> int:
        widths[fam.dependent] = w
        return count_params(fam, tuple(widths), **opts)

    p1, p2 = count(1), count(2)
    slope = p2 - p1
    where = (f"family {fam.name!r}, budget {budget:,}, constants {tuple(constants)}, "
             f"bounds {tuple(bounds)}")
    exact = 1 + (budget - p1) / slope
    if round_half_up(exact) < 1:
        raise BudgetError(
            f"{where}: the fixed widths {fixed} already use {p1 - slope:,} "
            f"parameters before the dependent width {fam.width_names[fam.dependent]!r}; solved "
            f"{fam.width_names[fam.dependent]} = {exact:.2f} < 1, so these bounds cannot meet the "
            f"budget")
    candidates = {max(1, math.floor(exact)), max(1, math.ceil(exact))}
    best = min(candidates, key=lambda w: (abs(p1 + (w - 1) * slope - budget), w))
    got = count(best)  # recount for real: guards the affine assumption
    if got != p1 + (best - 1) * slope:
        # Not affine (a ResNet's last stage feeds itself: quadratic). The count still grows with the
        # width, so bisect for the first width at or over the budget and keep the closer neighbour.
        lo, hi = 1, 2
        while count(hi) < budget:
            lo, hi = hi, hi * 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if count(mid) < budget else (lo, mid)
        best = min({lo, hi}, key=lambda w: (abs(count(w) - budget), w))
        got = count(best)
        slope = count(best + 1) - got  # one unit of the dependent width, for the tolerance below
    if abs(got - budget) > max(tol * budget, abs(slope) / 2):
        raise BudgetError(
            f"{where}: best {fam.width_names[fam.dependent]} = {best} gives {got:,} parameters, "
            f"{100 * (got - budget) / budget:+.2f}% off the budget (tolerance {100 * tol:g}%)")
    widths[fam.dependent] = best
    return tuple(widths)  # type: ignore[return-value]


def scale_to_budget(family, widths: Sequence[int], budget: int, **opts) -> tuple[int, ...]:
    """``widths`` times one common factor s (each rounded, at least 1) so that the parameter count is as
    close to ``budget`` as the rounding allows: a published architecture shrunk (or grown) to another
    budget with its shape kept, e.g. S6's ~10M students at a CPU budget. The count grows with s, so s is
    bisected (on the meta device: nothing is allocated). ``opts`` (batchnorm, num_classes, in_shape) go
    to the builder since they change the count."""
    fam = get_family(family)
    ws = _check_widths(fam, widths)
    opts.pop("dropout", None)
    scaled = lambda s: tuple(max(1, round_half_up(w * s)) for w in ws)  # noqa: E731
    count = lambda s: count_params(fam, scaled(s), **opts)  # noqa: E731
    if budget < count(0.0):
        raise BudgetError(f"family {fam.name!r}: {budget:,} parameters is below the smallest "
                          f"{fam.name} of this shape ({count(0.0):,} at width 1)")
    lo, hi = 0.0, 1.0
    while count(hi) < budget:
        lo, hi = hi, hi * 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if count(mid) < budget else (lo, mid)
    best = min((lo, hi), key=lambda s: abs(count(s) - budget))
    return scaled(best)
