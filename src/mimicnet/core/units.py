"""Parameter budgets as numbers a person reads: 1M, 3.16M, 100k (one parser and one spelling everywhere)."""
from __future__ import annotations

from .errors import ConfigError

# No model of this toolkit comes near it (the paper's largest is 31.6M): a larger number is a typo (1e12 for
# 1e6), and would only fail later, allocating terabytes.
MAX_BUDGET = 1_000_000_000


def parse_budget(s: str | int | float) -> int:
    """'1M', '3.16M', '100k', '0.1M', '31600000' -> parameters. ConfigError on anything else, <= 0 or above
    MAX_BUDGET."""
    if isinstance(s, (int, float)) and not isinstance(s, bool):
        b = int(round(s))
    else:
        t = str(s).strip().lower().replace("_", "").replace(",", "")
        mult = {"k": 1e3, "m": 1e6}.get(t[-1:], 1)
        try:
            b = int(round(float(t.rstrip("km")) * mult))
        except (ValueError, OverflowError):
            raise ConfigError(f"budget must look like 1M, 3.16M, 100k or 1000000, got {s!r}") from None
    if b <= 0:
        raise ConfigError(f"budget must be positive, got {s!r}")
    if b > MAX_BUDGET:
        raise ConfigError(f"budget must be at most {budget_name(MAX_BUDGET)} parameters, got {s!r}")
    return b


def budget_name(budget: int | float) -> str:
    """1M, 3.16M, 31.6M, 100k: the spelling of folders, space names and tables."""
    return f"{budget / 1e6:g}M" if budget >= 1_000_000 else f"{budget / 1e3:g}k"


def parse_count(s: str | int | float, what: str = "--flops") -> int:
    """'20M', '1.5G', '300k', '20000000' -> a positive integer (multiply-adds of a forward pass, ...); a
    ConfigError naming `what` on anything else."""
    t = str(s).strip().lower().replace("_", "")
    mult = {"k": 1e3, "m": 1e6, "g": 1e9}.get(t[-1:], 1)
    try:
        v = float(t[:-1] if mult != 1 else t) * mult
    except ValueError:
        raise ConfigError(f"{what} must look like 20M, 1.5G, 300k or 20000000, got {s!r}") from None
    if not v >= 1 or v > 1e15:
        raise ConfigError(f"{what} must be a count from 1 to 1e15, got {s!r}")
    return int(round(v))


def parse_ms(s: str | int | float, what: str = "--latency") -> float:
    """'0.5ms', '500us', '0.002s', '2' (milliseconds) -> milliseconds; a ConfigError naming `what` otherwise."""
    t = str(s).strip().lower().replace(" ", "").replace("µs", "us")
    scale = 1.0
    for unit, mult in (("ms", 1.0), ("us", 1e-3), ("s", 1e3)):
        if t.endswith(unit):
            t, scale = t[:-len(unit)], mult
            break
    try:
        v = float(t) * scale
    except ValueError:
        raise ConfigError(f"{what} must look like 0.5ms, 500us or 0.002s, got {s!r}") from None
    if not 0 < v < 1e7:
        raise ConfigError(f"{what} must be a positive time, got {s!r}")
    return v
