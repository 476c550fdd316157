"""Money as integer minor units, so no amount is ever rounded by floating point."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Money:
    minor: int
    currency: str

    def __add__(self, other: "Money") -> "Money":
        if other.currency != self.currency:
            raise ValueError(f"cannot add {other.currency} to {self.currency}")
        return Money(self.minor + other.minor, self.currency)

    def __neg__(self) -> "Money":
        return Money(-self.minor, self.currency)


def parse(text: str, currency: str) -> Money:
    units, _, cents = text.partition(".")
    if len(cents) > 2:
        raise ValueError("at most two decimal places")
    return Money(int(units) * 100 + int(cents.ljust(2, "0") or 0), currency)
