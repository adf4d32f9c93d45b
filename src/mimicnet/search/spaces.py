"""Search spaces as data (SPEC S2, S4): one ``Space`` per family and budget, each a tuple of ``Param``
ranges plus the config fields it fixes; spaces are found by name (``get_space``) and registered in
``SPACES``. ``apply(space, params, base)`` turns one sampled point into a ``TrainConfig``."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import ConfigError
from ..core.index import RunKind
from ..core.units import budget_name, parse_budget
from ..models import families as models
from ..data.augment import IMAGE_SHAPE
from ..train.config import HSV_FIELDS, TrainConfig, resolve_widths


class SearchError(ConfigError):
    """A search that cannot run as asked (bad space name, storage, study mismatch, ...)."""


# ---------------------------------------------------------------------------------------------------
# Spaces (data)
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    """One searched hyperparameter: uniform on [low, high], or log-uniform when ``log``.

    ``target`` names the flat TrainConfig field it sets (``lr``; ``dh`` for one HSV range of the
    AugmentConfig), with ``.i`` for one element of a tuple field (``dropout.2``, ``constants.1``); default:
    the field called ``name``."""
    name: str
    low: float
    high: float
    log: bool = False
    kind: str = "float"
    target: str = ""

    @property
    def field(self) -> str:
        return (self.target or self.name).split(".")[0]

    @property
    def index(self) -> int | None:
        t = self.target or self.name
        return int(t.split(".")[1]) if "." in t else None


@dataclass(frozen=True)
class Space:
    name: str
    kind: str                                   # teacher | baseline | student
    family: str
    budget: int | None                          # parameter budget (None: teacher, widths are free)
    params: tuple[Param, ...]
    fixed: dict = field(default_factory=dict)   # TrainConfig fields every trial gets
    bounds: tuple[tuple[int, int], ...] = ()    # (lo, hi) width per constant C1, C2, ...

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def controlled_fields(self) -> set[str]:
        """TrainConfig fields this space sets (a base config's values for them are replaced)."""
        widths = {"family", "widths", "constants", "budget", "bounds"}
        # the HSV ranges are one flag (--hsv) and one on-disk field (hsv)
        fields = {"hsv" if p.field in HSV_FIELDS else p.field for p in self.params}
        return widths | fields | set(self.fixed)

    def describe(self) -> list[str]:
        fam = models.get_family(self.family)
        budget = "free widths" if self.budget is None else f"budget {self.budget:,} parameters"
        lines = [f"{self.name}: {self.kind} search, family {self.family} ({fam.description}), {budget}",
                 f"  {len(self.params)} searched hyperparameters:",
                 f"  {'name':14s} {'low':>9s} {'high':>9s}  {'scale':6s} sets"]
        const_names = [p.name for p in self.params if p.field == "constants"]
        for p in self.params:
            sets = p.target or p.name
            if p.field == "constants":
                i = p.index
                lo, hi = self.bounds[i]
                widths = ",".join(fam.width_names[j] for j in fam.constants[i])
                sets = f"{widths} in [{lo}, {hi}]"
            lines.append(f"  {p.name:14s} {p.low:>9g} {p.high:>9g}  {'log' if p.log else 'linear':6s} {sets}")
        if fam.dependent is not None:
            dep = fam.width_names[fam.dependent]
            what = "linear bottleneck" if self.family in ("conv0", "conv1") else "ReLU fc layer"
            lines.append(f"  dependent width: {dep} ({what}), solved so the model has as close to {self.budget:,} "
                         f"parameters as integer widths allow (models.solve_budget); constants "
                         f"{', '.join(const_names)} whose other layers leave no room are infeasible")
        else:
            lines.append("  dependent width: none")
        if self.fixed:
            lines.append("  fixed: " + ", ".join(f"{k}={v!r}" for k, v in self.fixed.items()))
        return lines


def _constants(n: int) -> tuple[Param, ...]:
    return tuple(Param(f"C{i + 1}", 0.0, 1.0, target=f"constants.{i}") for i in range(n))


def _teacher_space() -> Space:
    # S2: the 18 hyperparameters of the teachers, in the paper's order.
    p = (Param("C1", 0.0, 1.0, target="constants.0"), Param("C2", 0.0, 1.0, target="constants.1"),
         Param("C3", 0.0, 1.0, target="constants.2"), Param("H1", 0.0, 1.0, target="constants.3"),
         Param("DOc1", 0.1, 0.3, target="dropout.0"), Param("DOc2", 0.25, 0.35, target="dropout.1"),
         Param("DOc3", 0.3, 0.44, target="dropout.2"),
         Param("DOf1", 0.2, 0.65, target="dropout.3"), Param("DOf2", 0.2, 0.65, target="dropout.4"),
         Param("init_scale", 0.8, 1.35),
         Param("lr", 0.01, 0.05, log=True), Param("momentum", 0.80, 0.91, log=True),
         Param("weight_decay", 5e-5, 4e-4),
         Param("Dh", 0.03, 0.11, target="dh"), Param("Ds", 0.2, 0.3, target="ds"),
         Param("Dv", 0.0, 0.2, target="dv"), Param("As", 0.2, 0.3, target="as_"),
         Param("Av", 0.03, 0.2, target="av"))
    return Space("teacher", "teacher", "teacher", None, p, {}, models.TEACHER_BOUNDS)


# S4 hard-target baselines: dropout after every pool, then after the fc layer (one range per position).
_BASELINE_DROPOUT = (("DOc1", 0.05, 0.4), ("DOc2", 0.1, 0.6), ("DOc3", 0.1, 0.7))


def _baseline_bounds(family: str, budget: int) -> tuple[tuple[int, int], ...]:
    """S4's bounds at 10M; at another budget every width scaled by sqrt(budget / 10M), floored at 4
    (the rule of models.scaled_bounds, from the baselines' own 10M row)."""
    b = models.BASELINE_BOUNDS[family]
    if budget == models.BASELINE_BUDGET:
        return b
    s = math.sqrt(budget / models.BASELINE_BUDGET)
    return tuple((max(4, models.round_half_up(lo * s)), max(4, models.round_half_up(hi * s))) for lo, hi in b)


def make_space(kind: str, family: str | None = None, budget: int | None = None) -> Space:
    """The search space of a kind (teacher | baseline | student), family and budget. Baselines default to
    10M; students need a budget (a table budget of S4, or any other: bounds from models.scaled_bounds)."""
    if kind == RunKind.TEACHER:
        if family not in (None, "teacher") or budget is not None:
            raise SearchError("the teacher space has no family or budget to choose (S2: widths are free)")
        return _teacher_space()
    if kind not in (RunKind.BASELINE, RunKind.STUDENT):
        raise SearchError(f"space kind must be teacher, baseline or student, not {kind!r}")
    fam = models.get_family(family or "")
    if kind == RunKind.BASELINE:
        if fam.name not in models.BASELINE_BOUNDS:
            raise SearchError(f"no hard-target baseline for {fam.name!r}; baselines: "
                              f"{', '.join(models.BASELINE_BOUNDS)}")
        budget = int(budget or models.BASELINE_BUDGET)
        n_pools = fam.n_dropout - 1
        drop = tuple(Param(n, lo, hi, target=f"dropout.{i}")
                     for i, (n, lo, hi) in enumerate(_BASELINE_DROPOUT[:n_pools]))
        p = (Param("lr", 0.0015, 0.025, log=True), Param("momentum", 0.68, 0.97, log=True), *drop,
             Param("DOf1", 0.1, 0.7, target=f"dropout.{n_pools}"), *_constants(fam.n_constants))
        return Space(f"baseline-{fam.name}" + ("" if budget == models.BASELINE_BUDGET else f"-{budget_name(budget)}"),
                     "baseline", fam.name, budget, p, {"weight_decay": 2e-4}, _baseline_bounds(fam.name, budget))
    if fam.name not in models.STUDENT_BOUNDS:
        raise SearchError(f"no student family {fam.name!r}; students: {', '.join(models.STUDENT_BOUNDS)}")
    if budget is None:
        raise SearchError(f"a student space needs a budget (e.g. student-{fam.name}-1M)")
    budget = int(budget)
    p = (Param("lr", 0.0013, 0.016, log=True), Param("momentum", 0.68, 0.97, log=True),
         Param("input_scale", 0.8, 1.25), Param("init_scale", 0.4, 2.0), *_constants(fam.n_constants))
    # S4: students have no dropout and no weight decay.
    return Space(f"student-{fam.name}-{budget_name(budget)}", "student", fam.name, budget, p,
                 {"dropout": (), "weight_decay": 0.0}, models.scaled_bounds(fam.name, budget))


def _all_spaces() -> dict[str, Space]:
    out = {"teacher": make_space("teacher")}
    for fam in models.BASELINE_BOUNDS:
        s = make_space("baseline", fam)
        out[s.name] = s
    for fam in models.STUDENT_BOUNDS:
        for b in models.BUDGETS:
            s = make_space("student", fam, b)
            out[s.name] = s
    return out


SPACES: dict[str, Space] = _all_spaces()


def space_names() -> list[str]:
    return list(SPACES)


def get_space(name: str | Space) -> Space:
    """A space by name: teacher, baseline-convK[-BUDGET], student-convK-BUDGET (BUDGET like 1M, 3.16M,
    100k, 0.1M; any budget works, the S4 ones are listed by `mimicnet search show`)."""
    if isinstance(name, Space):
        return name
    if name in SPACES:
        return SPACES[name]
    m = re.fullmatch(r"(baseline|student)-([A-Za-z_]\w*)(?:-([0-9.]+[kKmM]?))?", name.strip())  # any family
    if not m:
        raise SearchError(f"unknown search space {name!r}; spaces: teacher, baseline-convK[-BUDGET], "
                          f"student-convK-BUDGET (e.g. {', '.join(list(SPACES)[:3])}, student-conv2-0.1M)")
    kind, fam, b = m.groups()
    try:
        return make_space(kind, fam, parse_budget(b) if b else None)
    except models.ModelError as e:
        raise SearchError(str(e)) from None


# ---------------------------------------------------------------------------------------------------
# One sampled point -> TrainConfig
# ---------------------------------------------------------------------------------------------------
def apply(space: Space, params: dict, base: TrainConfig, num_classes: int = 10, in_shape=IMAGE_SHAPE) -> TrainConfig:
    """The config of one trial: ``base`` (data, epochs, schedule, batch size, loss, transfer set, ...) with
    the space's fixed fields and the sampled ``params`` put in. Raises ``models.BudgetError`` when the width
    constants cannot meet the budget (the trial is infeasible) with the data's ``num_classes`` outputs and
    input shape."""
    space = get_space(space)
    names = {p.name for p in space.params}
    if set(params) != names:
        raise SearchError(f"space {space.name}: params must be exactly {sorted(names)}; "
                          f"missing {sorted(names - set(params))}, unknown {sorted(set(params) - names)}")
    changes: dict[str, Any] = {"family": space.family, **space.fixed}
    tuples: dict[str, dict[int, float]] = {}
    for p in space.params:
        v = float(params[p.name])
        if p.index is None:
            changes[p.field] = v
        else:
            tuples.setdefault(p.field, {})[p.index] = v
    for name, items in tuples.items():
        changes[name] = tuple(items.get(i, 0.0) for i in range(max(items) + 1))
    constants = changes.pop("constants")
    if space.kind == RunKind.TEACHER:
        changes.update(constants=constants, widths=None, budget=None)
    elif space.kind == RunKind.STUDENT:
        changes.update(constants=constants, widths=None, budget=space.budget)
    else:
        # Baselines have their own bounds (S4), carried in the config so the run records its budget.
        changes.update(constants=constants, budget=space.budget, bounds=tuple(map(tuple, space.bounds)), widths=None)
    cfg = base.replace(**changes)
    resolve_widths(cfg, num_classes, in_shape)  # raises BudgetError exactly where fit() would
    return cfg


def budget_violation(space: Space, params: dict, num_classes: int = 10, in_shape=IMAGE_SHAPE) -> float:
    """How far the constants are from infeasible, relative to the budget: (parameters at dependent width
    1/2) / budget - 1. models.solve_budget rounds the solved width to the nearest integer and fails when
    that is 0, i.e. exactly when this is > 0. It grows smoothly with the overshoot of the fixed layers, so
    the sampler can model the boundary; feasibility itself is always decided by the solver (apply())."""
    fam = models.get_family(space.family)
    consts = tuple(float(params[p.name]) for p in sorted((p for p in space.params if p.field == "constants"),
                                                          key=lambda p: p.index))
    widths = list(models.widths_from_constants(fam, consts, space.bounds))

    def count(w: int) -> int:
        widths[fam.dependent] = w
        return models.count_params(fam, tuple(widths), num_classes=num_classes,  # the output layer counts
                                   **({} if tuple(in_shape) == IMAGE_SHAPE else {"in_shape": tuple(in_shape)}))

    p1, p2 = count(1), count(2)  # the count is affine in the dependent width (models.py)
    return (p1 - (p2 - p1) / 2) / space.budget - 1.0

