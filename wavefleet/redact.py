"""The redactor: known secret values (every SecretStr in the settings) blanked out of log lines.

This is the first version (issue 12 makes it complete): it knows the values the settings hold, not
patterns; the offline agent's key patterns stay in workers/offline.py until that issue unifies them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretStr

REDACTED = "[redacted]"
# Shorter values are not redacted: a 3-character password would blank every "abc" in every line
# (story ids, words, numbers) and make logs unreadable while saying which three letters it is. A
# secret that short is no secret anyway; `wave` settings refuse nothing here, the lines just keep it.
MIN_SECRET_CHARS = 8
_PRIMITIVES = (int, float, bool, type(None))


def secret_values(settings: BaseModel) -> list[str]:
    """Every secret the settings hold: each SecretStr, at any depth, and the password in a URL."""
    found = {value for value in _walk(settings) if len(value) >= MIN_SECRET_CHARS}
    return sorted(found, key=len, reverse=True)  # longest first: one secret may contain another


def _walk(value: Any) -> Iterator[str]:
    if isinstance(value, SecretStr):
        yield value.get_secret_value()
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:  # not the instance dict: cached properties live there
            yield from _walk(getattr(value, name))
    elif isinstance(value, dict):
        for item in value.values():
            yield from _walk(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _walk(item)
    elif isinstance(value, str) and "@" in value and "://" in value:
        password = _url_password(value)  # redis://user:PASSWORD@host: the URL is a plain string
        if password:
            yield password


def _url_password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


class Redactor:
    """A structlog processor: every string in the event (message, fields, nested values, the
    formatted exception) with each known secret replaced by ``[redacted]``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = [s for s in secrets if len(s) >= MIN_SECRET_CHARS]

    def __call__(self, _logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
        if not self.secrets:
            return event
        return {key: self.clean(value) for key, value in event.items()}

    def clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, _PRIMITIVES):
            return value
        if isinstance(value, dict):
            return {self.clean(k): self.clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.clean(item) for item in value]
        # Anything else (an exception object, a path, a model) is rendered by its str(): redact that.
        shown = str(value)
        cleaned = self.text(shown)
        return value if cleaned == shown else cleaned

    def text(self, value: str) -> str:
        for secret in self.secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value
