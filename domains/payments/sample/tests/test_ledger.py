from payments_service.ledger import Ledger
from payments_service.money import Money


def test_posting_balances():
    ledger = Ledger()
    ledger.post("customer", "merchant", Money(500, "EUR"))
    assert ledger.is_balanced()
    assert ledger.balance("merchant") == 500
