import pytest

from payments_service.money import Money, parse


def test_parse_keeps_cents_exact():
    assert parse("10.05", "EUR") == Money(1005, "EUR")


def test_adding_other_currencies_is_refused():
    with pytest.raises(ValueError):
        Money(1, "EUR") + Money(1, "USD")
