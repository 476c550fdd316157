"""Shell text as the rules read it: the simple commands of a command line, wrappers peeled off.

`commands` splits a `shell_normalize`d line on `;`, `&&`, `||`, `|`, `&`, newlines, `$(`, backticks and
parentheses, then peels what only runs another command (`sudo`, `env X=1`, `nohup`, `timeout 5`,
`xargs -0`, `bash -c`, `sh -c`, `eval`, `exec`, `find ... -exec`), so `sudo env A=1 bash -c rm -rf /`
reads as `sudo`, `env`, `bash` and `rm -rf /`. An over-approximation on purpose: quoted text that a
real shell would keep as one word is split too, which can only make more rules fire.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["Command", "commands", "words"]

_SPLIT = re.compile(r"\|\||&&|\$\(|<\(|>\(|(?<![<>])&(?!>)|[;|\n`()]")
_ASSIGNMENT = re.compile(r"[a-z_][\w]*=\S*$")
# Commands that run their arguments as another command, and how many option words they take.
_WRAPPERS = frozenset(
    [
        "sudo",
        "doas",
        "env",
        "nohup",
        "time",
        "nice",
        "ionice",
        "exec",
        "command",
        "builtin",
        "xargs",
        "stdbuf",
        "setsid",
        "timeout",
        "watch",
        "strace",
        "ltrace",
        "chroot",
        "unbuffer",
        "runuser",
        "su",
        "eval",
        "then",
        "do",
        "else",
        "if",
        "while",
        "until",
        "!",
        "nsenter",
        "flock",
        "caffeinate",
        "busybox",
    ]
)
_SHELLS = frozenset(["sh", "bash", "zsh", "dash", "ksh", "ash", "fish", "csh", "tcsh", "mksh"])
_WITH_VALUE = frozenset(
    [
        "-u",
        "-g",
        "-n",
        "-c",
        "-s",
        "-k",
        "-i",
        "-e",
        "-o",
        "-p",
        "-t",
        "-d",
        "-I",
        "-L",
        "-P",
        "--user",
        "--group",
        "--signal",
    ]
)


class Command(NamedTuple):
    name: str  # the program's base name: /usr/bin/rm -> rm
    args: tuple[str, ...]
    text: str  # the arguments as one string (for argument patterns)


def words(segment: str) -> list[str]:
    return segment.split()


def commands(line: str) -> list[Command]:
    """Every simple command of `line` (normalised text), wrappers included as commands of their own."""
    found: list[Command] = []
    for segment in _SPLIT.split(line):
        _peel(segment.split(), found, depth=0)
    return found


def _peel(toks: list[str], found: list[Command], depth: int) -> None:
    while toks and (_ASSIGNMENT.match(toks[0]) or toks[0] in ("!", "-", "--", "{", "}")):
        toks = toks[1:]
    if not toks or depth > 8:
        return
    name = toks[0].rsplit("/", 1)[-1] or toks[0]
    args = toks[1:]
    found.append(Command(name, tuple(args), " ".join(args)))
    if name == "find":
        _find_exec(args, found, depth)
        return
    if name in _SHELLS or name.startswith("python") or name in ("perl", "ruby", "node"):
        inner = _after_c_flag(args)
        if inner is not None and name in _SHELLS:
            _peel(inner, found, depth + 1)
        return
    if name not in _WRAPPERS:
        return
    i = 0
    while i < len(args) and (args[i].startswith("-") or _ASSIGNMENT.match(args[i]) or _is_duration(args[i])):
        i += 2 if args[i] in _WITH_VALUE and name not in ("env", "eval") else 1
    _peel(args[i:], found, depth + 1)


def _after_c_flag(args: list[str]) -> list[str] | None:
    for i, arg in enumerate(args):
        if arg.startswith("-") and not arg.startswith("--") and "c" in arg:
            return args[i + 1 :]
        if not arg.startswith("-"):
            return None
    return None


def _find_exec(args: list[str], found: list[Command], depth: int) -> None:
    for i, arg in enumerate(args):
        if arg in ("-exec", "-execdir", "-ok", "-okdir"):
            rest = []
            for tok in args[i + 1 :]:
                if tok in (";", "\\;", "+", "{}+"):
                    break
                rest.append(tok)
            _peel(rest, found, depth + 1)


def _is_duration(tok: str) -> bool:
    return bool(re.fullmatch(r"\d+(?:\.\d+)?[smhd]?", tok))
