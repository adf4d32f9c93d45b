"""`--set field=value` on a preset (main.Preset, fixed.StudyPreset), checked where it enters: each value
against its field's type (int, str, bool, tuples of ints, JSON objects, lists of objects, nested specs),
a few str fields against their choices and a few ints against their range. A ConfigError names the field
(and the element, `teachers[2]`, `models.mlp.widths`) and what it must be, before anything is written.

The TrainConfig fields inside a preset (teacher_base, student_base, ...) are checked by TrainConfig itself
when the study builds every config it will train (check_preset), also before anything is written."""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from numbers import Integral, Real
from typing import Any

from ..core import artifacts
from ..core.errors import ConfigError
from ..core.units import parse_budget
from ..distill.ensemble import METHODS
from ..models import families as models
from ..search.pruners import PRUNERS
from ..search.samplers import SAMPLERS

# str fields (and tuple elements, `name[]`) with a fixed set of values
CHOICES: dict[str, typing.Callable[[], typing.Iterable[str]]] = {
    "teacher_mode": lambda: ("fixed", "search"),
    "sampler": lambda: SAMPLERS,
    "pruner": lambda: PRUNERS,
    "ensemble_method": lambda: METHODS,
    "method": lambda: METHODS,                           # EnsembleSpec.method
    "transfer_mode": lambda: ("images", "replay"),
    "logits_dtype": lambda: ("float16", "float32"),
    "inputs": lambda: ("images", "features"),
    "family": lambda: sorted(models.FAMILIES),           # ModelSpec.family
    "baseline_families[]": lambda: models.BASELINE_BOUNDS,
    "student_families[]": lambda: models.STUDENT_BOUNDS,
}
# ints other than >= 0
AT_LEAST = {"ensemble_size": 1, "transfer_epochs": 1, "max_train": 1, "size": 1,
            "pruner_min_epochs": 1, "pruner_eta": 2, "widths[]": 1}
# parameter budgets: integers, or spelled 1M, 0.3M, 100k
BUDGETS = {"budget", "baseline_budgets[]", "student_budgets[]"}


def override(preset, name: str, raw: str):
    """The value of `--set name=raw` for `preset`'s field `name`: JSON (numbers, lists, objects), or else the
    plain string; a str field takes the string as written (`--set data=2024.tar.gz`)."""
    hint = typing.get_type_hints(type(preset))[name]
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    if hint is str and not isinstance(value, str):
        value = raw
    return convert(value, hint, getattr(preset, name), name, name)


def convert(value: Any, hint: Any, current: Any, where: str, name: str | None) -> Any:
    """`value` (from JSON) as a value of type `hint` (JSON lists become tuples where the field is a tuple,
    objects become the field's dataclass); `current` (the preset's value) tells the element type of a bare
    `tuple`, `list` or `dict` field. ConfigError `--set WHERE: must be ..., got ...` otherwise."""
    def fail(what: str):
        raise ConfigError(f"--set {where}: must be {what}, got {_show(value)}")

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        return convert(value, rest[0] if len(rest) == 1 else Any, current, where, name)
    if hint is Any:
        return value
    if name in BUDGETS:
        if isinstance(value, bool) or not isinstance(value, (Real, str)) or (
                isinstance(value, Real) and not (math.isfinite(value) and float(value).is_integer())):
            fail("a parameter budget (an integer, or like 1M, 0.3M, 100k)")
        try:
            return parse_budget(value)
        except ConfigError as e:
            raise ConfigError(f"--set {where}: {e}") from None
    if hint is bool:
        return value if isinstance(value, bool) else fail("true or false")
    if hint is int:
        low = AT_LEAST.get(name or "", 0)
        if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
            fail(f"an integer >= {low}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
            fail("a number")
        return value
    if hint is str:
        if not isinstance(value, str):
            fail("a string")
        options = CHOICES.get(name or "")
        if options is not None and value not in options():
            fail("one of " + ", ".join(options()))
        return value
    if hint in (tuple, list) or origin in (tuple, list):
        item = args[0] if args else _item_type(current)
        if not isinstance(value, (list, tuple)):
            fail(f"a list of {_describe(BUDGETS if f'{name}[]' in BUDGETS else item)}")
        items = [convert(v, item, None, f"{where}[{i}]", f"{name}[]") for i, v in enumerate(value)]
        return tuple(items) if tuple in (hint, origin) else items
    if hint is dict or origin is dict:
        item = args[1] if len(args) == 2 else _item_type(list((current or {}).values()))
        if not isinstance(value, dict):
            fail(f"a JSON object ({{name: {_describe(item)}}})" if item is not Any else "a JSON object")
        return {k: convert(v, item, None, f"{where}.{k}", None) for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            fail(f"a JSON object of {hint.__name__} fields")
        fields = {f.name: f for f in dataclasses.fields(hint)}
        unknown = sorted(set(value) - set(fields))
        if unknown:
            fail(f"a JSON object of {hint.__name__} fields ({', '.join(fields)}); unknown: {', '.join(unknown)}")
        missing = [f for f, spec in fields.items() if f not in value and spec.default is dataclasses.MISSING
                   and spec.default_factory is dataclasses.MISSING]
        if missing:
            fail(f"a JSON object of {hint.__name__} fields (needs {', '.join(missing)})")
        hints = typing.get_type_hints(hint)
        return hint(**{k: convert(v, hints[k], None, f"{where}.{k}", k) for k, v in value.items()})
    return value


def _item_type(values) -> Any:
    """The element type of a bare tuple/list/dict field, from its current elements (all of one type)."""
    kinds = {type(v) for v in values or ()}
    if len(kinds) != 1:
        return Any
    kind = kinds.pop()
    if kind in (bool, int, float, str, dict) or dataclasses.is_dataclass(kind):
        return kind
    return Any


def _describe(hint: Any) -> str:
    if hint is BUDGETS:
        return "parameter budgets (integers, or like 1M, 0.3M, 100k)"
    names = {bool: "true/false values", int: "integers", float: "numbers", str: "strings", dict: "JSON objects"}
    if hint in names:
        return names[hint]
    if dataclasses.is_dataclass(hint):
        return f"JSON objects of {hint.__name__} fields"
    return "values"


def _show(value: Any) -> str:
    try:
        return json.dumps(artifacts.to_jsonable(value))
    except (TypeError, ValueError):
        return repr(value)
