import pytest

from auth_service.tokens import InvalidToken, issue, verify

SECRET = b"test-secret"


def test_token_round_trip():
    assert verify(issue("ada", SECRET), SECRET) == "ada"


def test_tampered_token_is_refused():
    token = issue("ada", SECRET)
    with pytest.raises(InvalidToken):
        verify(token[:-1] + ("0" if token[-1] != "0" else "1"), SECRET)


def test_expired_token_is_refused():
    token = issue("ada", SECRET, ttl_s=10, now=1000)
    with pytest.raises(InvalidToken):
        verify(token, SECRET, now=2000)
