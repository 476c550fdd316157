"""A known secret leaks in other spellings than its own: percent-encoded in a URL or a form, with
JSON's escaped slashes, base64'd alone or inside a longer payload (HTTP Basic auth, a dumped
header): each is blanked like the secret itself, and text around it is kept."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote, quote_plus

import pytest

from wavefleet.redact import CREDENTIALS, SHAPES_ONLY, Redactor

# A value with the characters encodings change (/, +, =) and one without any.
SECRETS = ["wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY+a=", "Zq8vN3pLr2Xs9TkW"]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def spellings(secret: str) -> dict[str, str]:
    return {
        "percent": f"GET /login?pw={quote(secret, safe='')} 200",
        "form": f"body=user%3Dme%26pw%3D{quote_plus(secret)}",
        "json_slashes": json.dumps({"pw": secret}).replace("/", "\\/"),
        "basic_auth": f"Authorization: Basic {b64('admin:' + secret)}",
        "base64_alone": f"token={b64(secret)}",
        "base64_offset_1": b64("x" + secret + "tail"),
        "base64_offset_2": b64("xy" + secret),
        "base64_urlsafe": base64.urlsafe_b64encode(("xyz" + secret).encode()).decode(),
    }


@pytest.mark.parametrize("secret", SECRETS)
@pytest.mark.parametrize("how", sorted(spellings(SECRETS[0])))
def test_a_known_secret_is_blanked_in_its_encoded_spellings(secret: str, how: str) -> None:
    line = spellings(secret)[how]
    cleaned = Redactor([secret]).text(line)
    assert "[redacted]" in cleaned, (how, line)
    # nothing of the encoded secret that decodes back to 8+ of its characters is left
    encoded = line.split("=", 1)[-1] if how != "json_slashes" else line
    assert all(part not in cleaned for part in _encoded_parts(secret) if part in encoded), cleaned


def _encoded_parts(secret: str) -> list[str]:
    forms = [quote(secret, safe=""), quote_plus(secret), secret.replace("/", "\\/")]
    return [f for f in forms if f != secret]


def test_ordinary_text_with_no_secret_in_it_is_kept() -> None:
    line = f"payload={b64('admin:not-it-at-all')} GET /a?b=c%2Fd"
    assert Redactor(SECRETS).text(line) == line


OPAQUE = "d41d8cd98f00b204e9800998ecf8427e.Zk3"  # a token of no known shape


@pytest.mark.parametrize(
    "line",
    [
        f"Authorization: Bearer {OPAQUE}",
        f"curl -H 'authorization: token {OPAQUE}' https://api.x.io",
        f'{{"headers": {{"Authorization": "Basic {OPAQUE}"}}}}',
    ],
)
def test_an_authorization_header_value_is_blanked_whatever_its_shape(line: str) -> None:
    # in logs and events, and in the tool output a model reads (no assignment rule there)
    for redactor in (CREDENTIALS, SHAPES_ONLY):
        cleaned = redactor.text(line)
        assert OPAQUE not in cleaned and "[redacted]" in cleaned, cleaned
        assert redactor.find(line) == ("authorization_header",)
