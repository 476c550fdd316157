"""Signed, expiring session tokens (HMAC-SHA256)."""

import base64
import hashlib
import hmac
import json
import time


class InvalidToken(Exception):
    pass


def issue(user: str, secret: bytes, *, ttl_s: int = 3600, now: float | None = None) -> str:
    payload = json.dumps({"sub": user, "exp": (now or time.time()) + ttl_s}).encode()
    body = base64.urlsafe_b64encode(payload).decode()
    signature = hmac.new(secret, body.encode(), hashlib.sha256).hexdigest()
    return f"{body}.{signature}"


def verify(token: str, secret: bytes, *, now: float | None = None) -> str:
    try:
        body, signature = token.rsplit(".", 1)
    except ValueError:
        raise InvalidToken("malformed token") from None
    expected = hmac.new(secret, body.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(signature, expected):
        raise InvalidToken("bad signature")
    claims = json.loads(base64.urlsafe_b64decode(body))
    if claims["exp"] < (now or time.time()):
        raise InvalidToken("expired")
    return str(claims["sub"])
