"""The family registry: a family is a builder function registered by name with what the rest of mimicnet
needs to know of it (timm-style ``@register_family`` beside the builder), and one factory, ``build_model``.

    @register_family("conv2", widths=("c1", "c2", "h"), dependent=2, n_dropout=3, description="c-mp-c-mp-fc",
                     constants=((0,), (1,)), role=STUDENT, student_bounds={1_000_000: ((20, 120),) * 2, ...})
    def conv2(widths, *, num_classes=10, dropout=(), batchnorm=False, in_shape=(3, 32, 32), init_scale=1.0,
              generator=None) -> MimicNet: ...

The lists the studies iterate over (the student families, the hard-target baseline families) are read from
the registry (``student_families()``, ``baseline_families()``, ``STUDENT_BOUNDS``, ``BASELINE_BOUNDS``), never
written out elsewhere: a family registered with student bounds is a student of the main study's search.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from ..core.errors import UserError

Bounds = tuple[tuple[int, int], ...]

# A family's role: its hard-label runs are teachers, or it is a student / baseline of a study, or neither
# (a family that studies name explicitly, e.g. S5/S6's).
TEACHER, STUDENT, OTHER = "teacher", "student", "other"
PER_WIDTH = -1


class ModelError(UserError, ValueError):
    """A model that cannot be built as asked (unknown family, wrong number of widths or constants, ...)."""


class BudgetError(ModelError):
    """The width bounds of a family cannot meet a parameter budget."""


@dataclass(frozen=True, kw_only=True)
class Family:
    name: str
    width_names: tuple[str, ...]
    dependent: int | None          # index of the width solved from the budget (None: widths are free)
    build: Callable[..., nn.Module]
    n_dropout: int                 # pools first, then ReLU fc layers; PER_WIDTH: one per width
    description: str
    # Which width indices each width constant C1, C2, ... sets (see models/families.py's docstring).
    constants: tuple[tuple[int, ...], ...] = field(default=())
    # Variable-depth families (mlp, linear): widths may have any length >= 1; width_names holds one
    # name for all of them; constant i sets width i and the dependent width is the last (-1).
    variable_widths: bool = False
    role: str = OTHER
    # The paper's search bounds: a student's per budget (one (lo, hi) per constant; other budgets are
    # scaled from the 1M row), a hard-target baseline's at BASELINE_BUDGET. None: not searched by the study.
    student_bounds: dict[int, Bounds] | None = None
    baseline_bounds: Bounds | None = None
    # The paper-style architecture name of a width tuple; None: read off ``description`` (c -> "{w}c").
    arch: Callable[[tuple[int, ...]], str] | None = None
    # data_init(model, x): set data-dependent weights (x: the standardised training images) after the
    # random init, before the first step (airbench's whitening layer); None: nothing to set.
    data_init: Callable[[nn.Module, torch.Tensor], None] | None = None

    @property
    def teacher(self) -> bool:
        """A teacher family: its hard-label runs are teachers (index kind), not hard-target baselines."""
        return self.role == TEACHER

    @property
    def n_constants(self) -> int:
        """Fixed families only; a variable family takes one constant per width but the last."""
        return len(self.constants)

    def dropout_count(self, widths=()) -> int:
        """Dropout rates the family takes; PER_WIDTH (-1) means one per width (after each ReLU layer)."""
        return len(tuple(widths)) if self.n_dropout == PER_WIDTH else self.n_dropout


FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    if family.variable_widths:  # constants are implied by the width tuple's length
        FAMILIES[family.name] = family
        return family
    covered = sorted(i for grp in family.constants for i in grp)
    expected = sorted(i for i in range(len(family.width_names)) if i != family.dependent)
    if covered != expected:  # every non-dependent width set by exactly one constant
        raise ValueError(f"family {family.name!r}: constants {family.constants} must cover widths "
                         f"{expected} exactly once")
    FAMILIES[family.name] = family
    return family


def register_family(name: str, **fields) -> Callable:
    """Decorator: register the function below as family ``name``'s builder, with the Family fields given."""
    def add(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        register(Family(name=name, build=build, **fields))
        return build
    return add


def get_family(name: str | Family) -> Family:
    if isinstance(name, Family):
        return name
    try:
        return FAMILIES[name]
    except KeyError:
        raise ModelError(f"unknown model family {name!r}; known families: "
                         f"{', '.join(sorted(FAMILIES))}") from None


def student_families() -> tuple[str, ...]:
    """The families the main study searches as students, in registration order (conv0 ... conv4)."""
    return tuple(n for n, f in FAMILIES.items() if f.student_bounds)


def baseline_families() -> tuple[str, ...]:
    """The families the main study searches on hard targets (conv1 ... conv4)."""
    return tuple(n for n, f in FAMILIES.items() if f.baseline_bounds)


class _BoundsView(Mapping):
    """family name -> its bounds, read from the registry at each use (a family registered later shows)."""

    def __init__(self, attr: str):
        self.attr = attr

    def __getitem__(self, name: str):
        b = getattr(FAMILIES[name], self.attr) if name in FAMILIES else None
        if b is None:
            raise KeyError(name)
        return b

    def __iter__(self):
        return (n for n, f in FAMILIES.items() if getattr(f, self.attr))

    def __len__(self) -> int:
        return sum(1 for _ in self)


STUDENT_BOUNDS: Mapping[str, dict[int, Bounds]] = _BoundsView("student_bounds")
BASELINE_BOUNDS: Mapping[str, Bounds] = _BoundsView("baseline_bounds")


def build_model(family: str | Family, widths, *, num_classes: int = 10, dropout=(),
                batchnorm: bool = False, in_shape=(3, 32, 32), init_scale: float = 1.0,
                generator: torch.Generator | None = None) -> nn.Module:
    """Build a family at full widths (ints; solve the dependent one first), Glorot-initialised and
    scaled by ``init_scale``. Under ``with torch.device('meta'):`` nothing is allocated."""
    fam = get_family(family)
    return fam.build(widths, num_classes=num_classes, dropout=dropout, batchnorm=batchnorm,
                     in_shape=in_shape, init_scale=init_scale, generator=generator)
