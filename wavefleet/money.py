"""Money as the fleet adds it up in Redis: integer nano-USD (1e-9 USD), so budgets compare exactly;
floats are for display only. Below both the budget and the LLM layer, which both count in it."""

from __future__ import annotations

import math

NANO = 1_000_000_000


def to_nusd(usd: float) -> int:
    """USD to nano-USD, rounded up: a cost is never under-counted."""
    return math.ceil(round(usd * NANO, 3))


def to_usd(nusd: int | float) -> float:
    return float(nusd) / NANO
