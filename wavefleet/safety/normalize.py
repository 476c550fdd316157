"""Text normalisation before the safety rules read it: one spelling for the many an attacker can use.

`normalize` undoes Unicode tricks (NFKC compatibility forms, zero-width and bidi characters,
Cyrillic/Greek look-alikes of Latin letters) and folds case; `shell_normalize` also undoes shell
obfuscation (quoting inside words, `$IFS`, ANSI-C `$'\\x72m'` escapes, empty expansions, simple
variable indirection, `$(echo WORD)`, backslash-newlines). Both are pure, never raise on any string,
and are meant to over-approximate: the result is for matching rules against, never for running.
"""

# ruff: noqa: RUF001 - the look-alike table below is made of ambiguous characters on purpose
from __future__ import annotations

import re
import unicodedata

__all__ = ["normalize", "shell_normalize"]

# Invisible characters: zero-width, joiners, bidi controls and isolates, word joiner and invisible
# operators, variation selectors, BOM, soft hyphen, Hangul fillers, Mongolian selectors, tag chars.
_INVISIBLE_RANGES = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE007F),
    (0xE0100, 0xE01EF),
)
# Letters that look like Latin ones (NFKC keeps them apart): Cyrillic and Greek, both cases.
_HOMOGLYPHS = {
    "а": "a", "в": "b", "е": "e", "ё": "e", "з": "3", "і": "i", "ї": "i", "ј": "j", "к": "k",
    "м": "m", "н": "h", "о": "o", "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s",
    "ԁ": "d", "ԛ": "q", "ԝ": "w", "ѵ": "v", "һ": "h", "ɡ": "g", "ı": "i", "ꞵ": "b",
    "А": "A", "В": "B", "Е": "E", "Ё": "E", "І": "I", "Ј": "J", "К": "K", "М": "M", "Н": "H",
    "О": "O", "Р": "P", "С": "C", "Т": "T", "Х": "X", "Ѕ": "S", "Ү": "Y", "Ԁ": "D", "Ԛ": "Q",
    "Ԝ": "W", "Һ": "H",
    "α": "a", "β": "b", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t",
    "υ": "u", "χ": "x", "ϲ": "c", "ϳ": "j", "ς": "s",
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N",
    "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
    # Punctuation look-alikes that matter in commands (NFKC leaves these alone).
    "‐": "-", "‑": "-", "‒": "-", "–": "-", "—": "-", "―": "-", "−": "-", "⁃": "-",
    "‘": "'", "’": "'", "‚": "'", "‛": "'", "“": '"', "”": '"', "„": '"', "‟": '"',
    "∕": "/", "⁄": "/", "∖": "\\", "ǀ": "|", "∣": "|", "׀": "|",
}  # fmt: skip
_TABLE: dict[int, str | None] = {ord(k): v for k, v in _HOMOGLYPHS.items()}
for _lo, _hi in _INVISIBLE_RANGES:
    _TABLE.update(dict.fromkeys(range(_lo, _hi + 1)))
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def normalize(text: str, *, fold_case: bool = True) -> str:
    """`text` in NFKC with invisible characters gone, look-alike letters made Latin, control
    characters (but tab and newlines) gone, and (by default) lower case."""
    if not isinstance(text, str):
        text = str(text)
    if not text.isascii():
        try:
            text = unicodedata.normalize("NFKC", text).translate(_TABLE)
        except ValueError:  # lone surrogates: keep what can be kept
            text = text.encode("utf-8", "ignore").decode("utf-8").translate(_TABLE)
            text = unicodedata.normalize("NFKC", text)
    if _CONTROL.search(text):
        text = _CONTROL.sub("", text)
    return text.lower() if fold_case else text


_ANSI_C = re.compile(r"\$'((?:[^'\\]|\\.)*)'", re.S)
_ANSI_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{1,2}|u[0-9a-fA-F]{1,4}|U[0-9a-fA-F]{1,8}|[0-7]{1,3}|c.|.)", re.S)
_SIMPLE = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "e": "\x1b", "f": "\f", "v": "\v"}
# `$IFSx` is, strictly, another (empty) variable; read as a space anyway: over-approximate.
_IFS = re.compile(r"\$\{IFS[^}]*\}|\$IFS", re.I)
# Expansions that are empty in `sh -c CMD` (no positional arguments): `r$@m`, `c${*}at`, `$9`.
_EMPTY = re.compile(r"\$\{[@*1-9]\}|\$[@*1-9]|\$\{[A-Za-z_]\w*:0:0\}")
_QUOTED = re.compile(r"'([^']*)'|\"((?:[^\"\\]|\\.)*)\"|\\(.)", re.S)
_ASSIGN = re.compile(r"(?:^|(?<=[\s;&|(]))([A-Za-z_]\w*)=([^\s;&|()<>`$]*)(?=[\s;&|)]|$)")
# A word printed by a substitution is the word (`$(echo rm) -rf /`); `$(pwd)` is `$PWD`.
_PRINTED = re.compile(
    r"\$\(\s*(?:echo|printf)\s+([^()`;|&\n]*?)\s*\)|`\s*(?:echo|printf)\s+([^`;|&\n]*?)\s*`", re.I
)
_PWD = re.compile(r"\$\(\s*pwd\s*\)|`\s*pwd\s*`", re.I)
_VAR = re.compile(r"\$\{([A-Za-z_]\w*)\}|\$([A-Za-z_]\w*)")
_SPACES = re.compile(r"[ \t\f\v\r]+")
_NEWLINES = re.compile(r" ?\n[\s]*")


def shell_normalize(cmd: str, *, fold_case: bool = True) -> str:
    """`cmd` as one spelling: `normalize`d, backslash-newlines joined, ANSI-C strings decoded, `$IFS`
    as a space, empty expansions dropped, quotes and backslashes removed (their text kept), simple
    `a=r; $a` indirection substituted, runs of blanks collapsed (newlines kept: they separate)."""
    text = normalize(cmd, fold_case=False).replace("\\\n", "")
    if "$'" in text:
        text = _ANSI_C.sub(lambda m: _decode_ansi_c(m.group(1)), text)
    if "$" in text:
        text = _EMPTY.sub("", _IFS.sub(" ", text))
    if "'" in text or '"' in text or "\\" in text:
        text = _QUOTED.sub(_unquote, text).replace("'", "").replace('"', "")
        # A backslash kept literal by single quotes is read again by `bash -c '...'`, `eval`: drop it.
        text = text.replace("\\", "")
    if "$(" in text or "`" in text:
        text = _PWD.sub("$PWD", _PRINTED.sub(lambda m: m.group(1) or m.group(2) or "", text))
    if "=" in text and "$" in text:
        text = _substitute(text)
    text = _NEWLINES.sub("\n", _SPACES.sub(" ", text)).strip()
    # Decoded escapes and substituted values may hold new look-alikes or upper case.
    return normalize(text, fold_case=fold_case) if not text.isascii() or fold_case else text


def _unquote(m: re.Match[str]) -> str:
    single, double, escaped = m.group(1), m.group(2), m.group(3)
    if single is not None:
        return single
    if double is not None:
        return re.sub(r"\\(.)", r"\1", double, flags=re.S)
    return "" if escaped == "\n" else escaped


def _decode_ansi_c(body: str) -> str:
    def one(m: re.Match[str]) -> str:
        e = m.group(1)
        try:
            if e[0] in "xuU":
                return chr(int(e[1:], 16))
            if e[0] in "01234567":
                return chr(int(e, 8))
            if e[0] == "c" and len(e) == 2:
                return chr(ord(e[1]) & 0x1F)
        except (ValueError, OverflowError):
            return ""
        return _SIMPLE.get(e, e)

    return _ANSI_ESCAPE.sub(one, body)


def _substitute(text: str) -> str:
    """`a=r;b=m;$a$b -rf /` -> `... rm -rf /`: each `$name` set by a plain assignment earlier in the
    text gets its (last) value; other variables stay as they are."""
    values: dict[str, str] = {}
    for m in _ASSIGN.finditer(text):
        values[m.group(1)] = m.group(2)
    if not values:
        return text

    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return values.get(name, m.group(0))

    return _VAR.sub(one, text)
