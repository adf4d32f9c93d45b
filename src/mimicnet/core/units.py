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
