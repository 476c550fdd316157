"""Shell text as the rules read it: the simple commands of a command line, wrappers peeled off.

`commands` splits a `shell_normalize`d line on `;`, `&&`, `||`, `|`, `&`, newlines, `$(`, backticks and
parentheses, then peels what only runs another command (`sudo`, `env X=1`, `nohup`, `timeout 5`,
`xargs -0`, `bash -c`, `sh -c`, `eval`, `exec`, `find ... -exec`), so `sudo env A=1 bash -c rm -rf /`
reads as `sudo`, `env`, `bash` and `rm -rf /`. An over-approximation on purpose: quoted text that a
real shell would keep as one word is split too, which can only make more rules fire.
"""

from __future__ import annotations

import fnmatch
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


# What a globbed program name (`/bin/r? -rf /`, `/???/?m`) may stand for: every name a rule reads.
_GLOB_TARGETS = (
    "rm", "rmdir", "unlink", "shred", "dd", "find", "chmod", "chown", "mv", "cp", "ln", "tee", "truncate",
    "tar", "sed", "perl", "ruby", "node", "php", "python", "python3", "curl", "wget", "nc", "ncat", "netcat",
    "socat", "telnet", "ssh", "scp", "rsync", "sudo", "su", "doas", "env", "eval", "exec", "xargs", "git",
    "mkfs", "mke2fs", "wipefs", "fdisk", "shutdown", "reboot", "kill", "docker", "kubectl", *sorted(_SHELLS),
)  # fmt: skip
_KNOWN = frozenset(_GLOB_TARGETS)
# Programs with an option whose value is a command they run (lower case, as the rules read them).
_OPT = r"(?:=(.*))?$"
_RUNS_OPTION: dict[str, re.Pattern[str]] = {
    "git": re.compile(r"^(?:-x|--exec)" + _OPT),
    "go": re.compile(r"^-exec" + _OPT),
    "tar": re.compile(
        r"^(?:--to-command|--checkpoint-action|--use-compress-program|-i|--info-script|--new-volume-script)"
        + _OPT
    ),
    "zip": re.compile(r"^(?:-tt|--unzip-command)" + _OPT),
    "make": re.compile(r"^(?:shell|\.shellflags)" + _OPT),
    "rsync": re.compile(r"^(?:-e|--rsh|--rsync-path)" + _OPT),
    "rg": re.compile(r"^--pre" + _OPT),
}
# `[rm,-rf,/]` of `subprocess.run(['rm','-rf','/'])` (quotes already gone): a list of words.
_LIST_PUNCT = re.compile(r"[\[\],]")


class Command(NamedTuple):
    name: str  # the program's base name: /usr/bin/rm -> rm
    args: tuple[str, ...]
    text: str  # the arguments as one string (for argument patterns)


def words(segment: str) -> list[str]:
    return segment.split()


def commands(line: str) -> list[Command]:
    """Every simple command of `line` (normalised text), wrappers included as commands of their own."""
    found: list[Command] = []
    if "<<<" in line:  # `sh <<< 'rm -rf /'`: the here-string is the shell's input
        line = line.replace("<<<", " <<< ")
    for segment in _SPLIT.split(line):
        listed = _LIST_PUNCT.sub(" ", segment) if "," in segment and "[" in segment else segment
        _peel(listed.split(), found, depth=0)
    return found


def _peel(toks: list[str], found: list[Command], depth: int) -> None:
    assigned = False
    while toks and (_ASSIGNMENT.match(toks[0]) or toks[0] in ("!", "-", "--", "{", "}")):
        assigned = assigned or "=" in toks[0]
        toks = toks[1:]
    if not toks or depth > 8:
        return
    name = toks[0].rsplit("/", 1)[-1] or toks[0]
    args = toks[1:]
    _hidden(toks, name, assigned, found, depth)
    found.append(Command(name, tuple(args), " ".join(args)))
    if name == "find":
        _find_exec(args, found, depth)
        return
    if name in _SHELLS or name.startswith("python") or name in ("perl", "ruby", "node"):
        if "<<<" in args:
            _peel(args[args.index("<<<") + 1 :], found, depth + 1)
        inner = _after_c_flag(args)
        if inner is not None and name in _SHELLS:
            _peel(inner, found, depth + 1)
        return
    if name in _RUNS_OPTION:
        _option_commands(_RUNS_OPTION[name], args, found, depth)
    if name not in _WRAPPERS:
        return
    if name == "env":  # `env -S'rm -rf /'` (-S split-string, lower-cased, value attached)
        args = [a[2:] if a.startswith("-s") and len(a) > 2 else a for a in args]
    i = 0
    while i < len(args) and (args[i].startswith("-") or _ASSIGNMENT.match(args[i]) or _is_duration(args[i])):
        i += 2 if args[i] in _WITH_VALUE and name not in ("env", "eval") else 1
    _peel(args[i:], found, depth + 1)


def _hidden(toks: list[str], name: str, assigned: bool, found: list[Command], depth: int) -> None:
    """Programs the split cannot see: behind a quoted assignment's words, or named by a glob."""
    if assigned:  # `A='x y' rm -rf /`: the quotes are gone, so the value's words hide the program
        for j in range(1, min(len(toks), 8)):
            if toks[j] in _KNOWN:
                _peel(toks[j:], found, depth + 1)
                break
    if any(c in name for c in "?*["):  # a glob runs whatever it matches: read it as each of them
        for match in fnmatch.filter(_GLOB_TARGETS, name):
            _peel([match, *toks[1:]], found, depth + 1)


def _option_commands(option: re.Pattern[str], args: list[str], found: list[Command], depth: int) -> None:
    """The command an option runs (`git rebase -x CMD`, `go test -exec CMD`, `tar --to-command=CMD`,
    `make SHELL=CMD`): its words up to the end of the segment (more than it is: over-approximate)."""
    for i, arg in enumerate(args):
        m = option.match(arg)
        if m:
            value = (m.group(1) or "").removeprefix("exec=")
            _peel(([value] if value else []) + args[i + 1 :], found, depth + 1)
            return


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
