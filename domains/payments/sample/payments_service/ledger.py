"""A double-entry ledger: every posting moves money between two accounts and balances to zero."""

from collections import defaultdict

from .money import Money


class Ledger:
    def __init__(self) -> None:
        self.entries: list[tuple[str, Money]] = []

    def post(self, debit: str, credit: str, amount: Money) -> None:
        if amount.minor <= 0:
            raise ValueError("amount must be positive")
        self.entries += [(debit, -amount), (credit, amount)]

    def balance(self, account: str) -> int:
        return sum(m.minor for a, m in self.entries if a == account)

    def is_balanced(self) -> bool:
        totals: dict[str, int] = defaultdict(int)
        for _account, money in self.entries:
            totals[money.currency] += money.minor
        return all(v == 0 for v in totals.values())
