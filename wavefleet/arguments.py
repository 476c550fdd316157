"""Argument types of the `wave` command: whole numbers and amounts checked against their bounds.

argparse's own `type=int` takes `-5` and a 20-digit count, and `type=float` takes `nan`, `inf` and
`1e30`; they then fail deep inside a command (a Redis range error, a division by zero, a traceback).
Each numeric option names its bounds here, so argparse refuses a value outside them in one line
(exit 2, as every other malformed command line).
"""

from __future__ import annotations

import argparse
import datetime
import math
import re
from collections.abc import Callable

WHOLE = re.compile(r"[0-9]{1,19}")  # ASCII digits only: str.isdigit() also takes "²", which int() refuses
DECIMAL = re.compile(r"[0-9]{1,15}(\.[0-9]{1,9})?")  # plain notation: no exponent, nan or inf


def whole(low: int, high: int) -> Callable[[str], int]:
    """A type for a whole number from `low` to `high`."""

    def parse(value: str) -> int:
        number = int(value) if WHOLE.fullmatch(value) else None
        if number is None or not low <= number <= high:
            raise argparse.ArgumentTypeError(
                f"{_shown(value)} is not a whole number from {low:,} to {high:,}"
            )
        return number

    parse.__name__ = "whole number"  # argparse names the type in some of its messages
    return parse


def amount(high: float) -> Callable[[str], float]:
    """A type for a decimal amount above 0 and at most `high` (no exponent, nan or infinity)."""

    def parse(value: str) -> float:
        number = float(value) if DECIMAL.fullmatch(value) else math.nan
        if not 0 < number <= high:  # also false for nan
            raise argparse.ArgumentTypeError(f"{_shown(value)} is not an amount above 0 and at most {high:,}")
        return number

    parse.__name__ = "amount"
    return parse


def day(value: str) -> str:
    """A type for a UTC day, YYYY-MM-DD (it becomes part of a budget scope's key)."""
    try:
        if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
            return datetime.date.fromisoformat(value).isoformat()
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{_shown(value)} is not a day: use YYYY-MM-DD, e.g. 2026-01-31")


def _shown(value: str) -> str:
    """The value quoted, cut short: a megabyte argument must not become a megabyte error line. Cut
    after quoting: one character may quote as ten (`\U0001b2fc`), so 40 characters could be 400."""
    quoted = repr(value)
    return quoted if len(quoted) <= 60 else quoted[:57] + "..."
