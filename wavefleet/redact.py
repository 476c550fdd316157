"""The redactor: secrets blanked out of every text the fleet writes, in one compiled regular-expression pass.

It knows two things: the secret values the settings hold (every SecretStr, the password in a URL;
each also percent-encoded, JSON-escaped and base64'd) and the shapes of credentials (Anthropic,
OpenAI-style, xAI, AWS, GitHub, Slack keys and tokens, private-key blocks, JWTs, passwords in URLs,
Authorization header values, and, unless asked for shapes only, `password=`-style assignments).
It is THE definition of those shapes: logs, the events stream, Slack, traces, stored results, the
tool output a model reads, the story intake check and the offline CTO's credential check all use it
(`find` says which shapes a text holds, `text` blanks them).
"""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus, urlsplit

from pydantic import BaseModel, SecretStr

if TYPE_CHECKING:
    from .config import Settings

REDACTED = "[redacted]"
# Shorter values are not redacted: a 3-character password would blank every "abc" in every line
# (story ids, words, numbers) and make logs unreadable while saying which three letters it is. A
# secret that short is no secret anyway; `wave` settings refuse nothing here, the lines just keep it.
MIN_SECRET_CHARS = 8
_PRIMITIVES = (int, float, bool, type(None))

# The credential shapes, by name (the name is what `find` reports). A shape with a `v` group
# blanks only that group (the password, not the URL around it); others blank the whole match.
# Each opens with a literal prefix where it can: the regex engine then skips most positions fast.
_KEY = r"[A-Za-z0-9_\-]"
SHAPES: dict[str, str] = {
    "anthropic_key": rf"\bsk-ant-{_KEY}{{20,}}",
    # OpenAI-style (sk-..., sk-proj-...): a digit somewhere, so words like "sk-learn-..." stay
    "openai_key": rf"\bsk-(?={_KEY}*\d){_KEY}{{20,}}",
    "xai_key": r"\bxai-[A-Za-z0-9]{20,}",
    "aws_access_key_id": r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|AIPA)[0-9A-Z]{16}\b",
    "aws_secret_access_key": r"(?i:aws_?secret_?access_?key)[\"']?\s*[:=]\s*[\"']?(?P<v>[A-Za-z0-9/+=]{40,})",
    "github_token": r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})",
    "slack_token": r"\b(?:xox[abposre]|xapp)-[A-Za-z0-9\-]{10,}",
    "slack_webhook": r"hooks\.slack\.com/services/(?P<v>[A-Za-z0-9/_\-]{8,})",
    # to its END line; a block cut short (one log line of it): the rest of its line and the base64
    # lines after it (not the rest of the text: code that names the header must stay readable)
    "private_key": r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
    r"(?:.*?-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|[^\n]*(?:\n[A-Za-z0-9+/=]{16,}(?=\n|$))*)",
    "jwt": r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",
    # not a placeholder (user:password@, :changeme@, :${DB_PASS}@, :<pass>@, :xxx@): docs and
    # examples are full of them, and the gate would block their every mention
    "url_password": r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s/:@'\"]*:"
    r"(?![$<{*]|x{3}|pass(?:word)?@|secret@|changeme@|example@|test@|postgres@|redis@|guest@)"
    r"(?P<v>[^\s/@'\"]{3,})@",
    "gitlab_token": rf"\bglpat-{_KEY}{{20,}}",
    "google_api_key": r"\bAIza[0-9A-Za-z_\-]{35}\b",
    "stripe_live_key": r"\b[sr]k_live_[0-9a-zA-Z]{20,}",
    "npm_token": r"\bnpm_[A-Za-z0-9]{36}\b",
    # a credential of any shape in an HTTP Authorization header (an opaque API token, Basic auth)
    "authorization_header": r"(?i:authorization)[\"']?\s*[:=]\s*[\"']?(?i:bearer|basic|token|digest)\s+"
    r"(?![$<{])(?P<v>[A-Za-z0-9._~+/\-]{16,}=*)",
}
# Not a key shape but a context: a value assigned to a name that says it is a secret. Precise
# enough for logs and events; left out of tool output, where code such as `password = ask()` must
# reach the model as it is (a blanked line would make its edits fail).
ASSIGNMENT = (
    # not after a path separator: `.../redis/password": "FileNotFoundError"` names a file, not a secret
    r"(?i:(?<![A-Za-z0-9/\\])(?:password|passwd|secret|secret[_-]?key|api[_-]?key|access[_-]?token|auth[_-]?token"
    r"|client[_-]?secret|private[_-]?key))[\"']?\s*[:=]\s*"
    # not when the value is itself a shape (a URL with a password, a key block): that shape's own
    # branch must match it, or the assignment would take its first word and leave the secret
    r"(?!-----BEGIN|[a-zA-Z][a-zA-Z0-9+.\-]*://)"
    r"(?:[\"'](?P<w>[^\"'\s]{8,})[\"']|(?P<W>[A-Za-z0-9_\-+/=!#$%^*~]{8,}))"
)

# What a text must contain (lower-cased) for any shape to match: most log lines contain none, and
# one search of this alternation of literals (no groups, so the engine skips ahead on its first
# characters) costs ~4 µs against ~30 µs for the full pattern. A superset: a trigger may not match.
TRIGGERS = (
    "sk-",
    "xai-",
    "akia",
    "asia",
    "agpa",
    "aida",
    "aroa",
    "anpa",
    "aipa",
    "aws_secret",
    "awssecret",
    "glpat-",
    "aiza",
    "k_live_",
    "npm_",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "xox",
    "xapp-",
    "hooks.slack.com",
    "-----begin",
    "eyj",
    "authorization",
)
URL_TRIGGER = r"://[^\s/@]*@"  # a URL with a user part: most URLs have none, and skip the full pass
ASSIGNMENT_TRIGGERS = (
    "passw",
    "secret",
    "api_key",
    "api-key",
    "apikey",
    "access_token",
    "access-token",
    "accesstoken",
    "auth_token",
    "auth-token",
    "authtoken",
    "private_key",
    "private-key",
)


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


def encoded_forms(secret: str) -> set[str]:
    """`secret` as other writers spell it: percent-encoded (a URL, a form), with JSON's escaped
    slashes, and base64'd (Basic auth, a dumped header) at each of the three byte offsets it may
    start at inside a longer payload, standard and URL-safe; the base64 forms keep only the
    characters that depend on the secret alone (never a partial first or last group)."""
    forms = {secret, quote(secret, safe=""), quote_plus(secret), secret.replace("/", "\\/")}
    raw = secret.encode()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw).decode().rstrip("=")
        start = 4 if offset else 0  # the first group mixes the bytes before the secret
        tail = (offset + len(raw)) % 3  # a last group cut short also holds the bytes after it
        end = len(encoded) - (tail + 1 if tail else 0)
        core = encoded[start:end] if end > start else ""
        forms.update((core, core.replace("+", "-").replace("/", "_")))
    return {f for f in forms if len(f) >= MIN_SECRET_CHARS}


def _trigger(secrets: list[str], assignments: bool) -> re.Pattern[str]:
    words = [*TRIGGERS, *(ASSIGNMENT_TRIGGERS if assignments else ()), *(s.lower() for s in secrets)]
    literals = "|".join(map(re.escape, sorted(set(words), key=len, reverse=True)))
    return re.compile(f"{literals}|{URL_TRIGGER}")


def _compile(secrets: list[str], assignments: bool) -> re.Pattern[str]:
    # Known values first, longest first: at a position where several match, the alternation takes
    # the first, so a secret containing another is blanked whole.
    branches = [f"(?P<known>{'|'.join(map(re.escape, secrets))})"] if secrets else []
    for index, (name, body) in enumerate(SHAPES.items()):
        # group names are unique per pattern: the value group of shape i is v{i}
        branches.append(f"(?P<{name}>{body.replace('(?P<v>', f'(?P<v{index}>')})")
    if assignments:
        body = ASSIGNMENT.replace("(?P<w>", "(?P<w0>").replace("(?P<W>", "(?P<w1>")
        branches.append(f"(?P<assignment>{body})")
    return re.compile("|".join(branches), re.DOTALL)


class Redactor:
    """Blanks secrets out of text. Also a structlog processor: every string in the event (message,
    fields, nested values, the formatted exception) is redacted.

    `assignments=False` keeps to the key shapes and known values (for file contents a model reads)."""

    def __init__(self, secrets: Iterable[str] = (), *, assignments: bool = True) -> None:
        self.secrets = sorted({s for s in secrets if len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True)
        forms = sorted({form for s in self.secrets for form in encoded_forms(s)}, key=len, reverse=True)
        self.pattern = _compile(forms, assignments)
        self._trigger = _trigger(forms, assignments)
        names = ["known", *SHAPES] + (["assignment"] if assignments else [])
        self._values = {name: _value_groups(self.pattern, name) for name in names}

    def __call__(self, _logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
        return {key: self.clean(value) for key, value in event.items()}

    def clean(self, value: Any) -> Any:
        """`value` with every string in it redacted (dict keys too); containers become dicts and lists."""
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
        """`value` with each secret replaced by ``[redacted]``."""
        if not self._trigger.search(value.lower()):
            return value
        return self.pattern.sub(self._replace, value)

    def find(self, value: str) -> tuple[str, ...]:
        """The names of the shapes `value` holds (``known`` for a settings value), sorted, once each."""
        if not self._trigger.search(value.lower()):
            return ()
        found = {m.lastgroup or "?" for m in self.pattern.finditer(value) if self._value(m) != REDACTED}
        return tuple(sorted(found))

    def _value(self, match: re.Match[str]) -> str:
        """The secret in `match`: its value group's text (a URL's password), else all of it. A value
        already ``[redacted]`` is no secret: text redacted once is not flagged again."""
        for group in self._values.get(match.lastgroup or "", ()):
            if match.start(group) >= 0:
                return match.group(group)
        return match.group()

    def _replace(self, match: re.Match[str]) -> str:
        for group in self._values.get(match.lastgroup or "", ()):
            start, end = match.span(group)
            if start >= 0:  # blank the value only, keep its context (the URL, the name)
                whole = match.group()
                offset = match.start()
                return whole[: start - offset] + REDACTED + whole[end - offset :]
        return REDACTED


def _value_groups(pattern: re.Pattern[str], shape: str) -> tuple[str, ...]:
    """The value groups inside `shape`'s branch (v3, w0, ...), in the pattern's order."""
    outer = pattern.groupindex.get(shape)
    if outer is None:
        return ()
    following = sorted((index, name) for name, index in pattern.groupindex.items() if index > outer)
    inner = []
    for _index, name in following:
        if not (name[0] in "vw" and name[1:].isdigit()):
            break  # the next shape's outer group: this branch's groups are over
        inner.append(name)
    return tuple(inner)


# Without settings: every shape and assignment (the offline CTO's credential check, a story's
# intake check), and the key shapes only (the tool output a model reads).
CREDENTIALS = Redactor()
SHAPES_ONLY = Redactor(assignments=False)
_process: list[Redactor] = [CREDENTIALS]


@functools.lru_cache(maxsize=8)
def _for_secrets(secrets: tuple[str, ...]) -> Redactor:
    return Redactor(secrets)


def redactor_for(settings: Settings) -> Redactor:
    """The redactor of `settings` (its known values and every shape): one compiled per set of secrets."""
    return _for_secrets(tuple(secret_values(settings)))


@functools.lru_cache(maxsize=8)
def _shapes_for(secrets: tuple[str, ...]) -> Redactor:
    return Redactor(secrets, assignments=False)


def shapes_for_process() -> Redactor:
    """This process's known values and the key shapes, no assignments: for file contents and command
    output a model reads (code such as `password = ask()` must reach it unchanged)."""
    return _shapes_for(tuple(process_redactor().secrets))


def use_for_process(redactor: Redactor) -> None:
    """Make `redactor` the one `process_redactor` returns (logs.setup_for calls this)."""
    _process[0] = redactor


def process_redactor() -> Redactor:
    """This process's redactor: its settings' (after logs.setup_for), else every shape and no value.
    For writers that are not handed the settings (the events stream, stored results)."""
    return _process[0]
