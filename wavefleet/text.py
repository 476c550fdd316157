"""Making untrusted or secret-bearing text safe to show: URL masking, control-character stripping,
rich-markup escaping.

Everything WAVE prints that it did not write itself (a story's fields, a reason an operator or an
agent gave, a URL from the settings) goes through one of these functions on its way to a terminal,
a log line or a live view. `--json` output is not touched: it is data, and JSON escapes controls.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import unquote_plus

if TYPE_CHECKING:
    from rich.text import Text

MASK = "***"
REPLACEMENT = "\ufffd"  # what a control character becomes: visible, and never an instruction to the terminal
NEWLINE = "\u21b5"  # a newline in one-line output: shown, so it cannot forge a line of its own

# A query parameter whose name contains one of these is a secret (password, pwd, api_key, token,
# client_secret, auth, sig, credentials...): over-masking a harmless one costs nothing.
_SECRET_NAME = re.compile(r"pass|pwd|token|secret|key|auth|cred|sig|session|cookie", re.IGNORECASE)

# Terminal escape sequences, removed whole so that their printable tail ("[2J") does not remain:
# CSI (ESC [ or 8-bit 0x9b) up to its final byte; OSC, DCS, SOS, PM, APC (ESC ] P X ^ _ or 8-bit
# 0x9d 0x90 0x98 0x9e 0x9f) up to BEL or ST (ESC \ or 0x9c), or to the end when unterminated;
# any other ESC plus the one character after it.
_ESCAPE_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|(?:\x1b[\]PX^_]|[\x9d\x90\x98\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b.?",
    re.DOTALL,
)
# C0 (but newline and tab, handled apart), DEL, C1, and the invisible characters that reorder or
# break what is shown: bidi embeddings, overrides and isolates, the direction marks, and the
# Unicode line and paragraph separators.
_UNSAFE_CHARACTER = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)


def mask_url(url: str) -> str:
    """The URL with its password and every secret-looking query value replaced by ***, safe to print.

    A password may hold "@", ":", "/", "?", "#" unencoded (people write Redis URLs so), which makes
    the URL ambiguous; both readings are masked: the user part up to the LAST "@" (keeping only a
    username before its first ":"), and each secret query value from the FIRST "?". The result is
    also terminal-safe.
    """
    _, separator, rest = url.partition("://")
    start = len(url) - len(rest) if separator else 0
    hidden = [False] * len(url)
    at = url.rfind("@", start)
    if at >= 0:
        name, colon, _ = url[start:at].partition(":")
        for i in range(start + len(name) + 1 if colon and name else start, at):
            hidden[i] = True
    question = url.find("?", start)
    if question >= 0:
        offset = question + 1
        for part in url[offset:].split("&"):
            name, equals, value = part.partition("=")
            # redis-py decodes a name before reading it: `p%61ssword` is the password too
            if equals and _SECRET_NAME.search(unquote_plus(name)):
                value_start = offset + len(name) + 1
                hidden[value_start : value_start + len(value)] = [True] * len(value)
            offset += len(part) + 1
    return terminal_safe(_replace_runs(url, hidden))


def _replace_runs(text: str, hidden: list[bool]) -> str:
    """The text with each run of hidden characters replaced by one MASK."""
    shown: list[str] = []
    for i, char in enumerate(text):
        if not hidden[i]:
            shown.append(char)
        elif i == 0 or not hidden[i - 1]:
            shown.append(MASK)
    return "".join(shown)


def terminal_safe(text: str, *, multiline: bool = False) -> str:
    """The text with escape sequences removed and every other control or bidi character replaced
    by U+FFFD, so it cannot move the cursor, clear the screen, set the clipboard (OSC 52) or
    reorder what a reader sees. Newlines stay only where `multiline` (else they show as a return
    arrow); a tab becomes a space."""
    text = _ESCAPE_SEQUENCE.sub("", text)
    text = text.replace("\t", " ")
    if not multiline:
        text = text.replace("\r\n", "\n").replace("\n", NEWLINE)
    return _UNSAFE_CHARACTER.sub(REPLACEMENT, text)


def shown(text: str) -> Text:
    """User text for a rich table or banner: terminal-safe and never read as markup."""
    from rich.text import Text  # noqa: PLC0415 - workers log through this module and never need rich

    return Text(terminal_safe(text))
