"""The rule layer: a tool call scored in microseconds against named rules, before any judge is asked.

`evaluate(call)` reads the call's arguments as hostile text, normalised first (`..normalize`), and
returns a RuleDecision naming every rule that fired: block (score <= 0.3) when one refuses it,
escalate (0.5..0.8) when one wants a human, allow with `decided=True` for clearly ordinary work
(tests, linters, local git on the story branch, files inside the worktree) and `decided=False`
(no opinion: the judge decides) for the rest. Pure: no I/O, compiled regexes, no state.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import shlex
from collections.abc import Iterator
from typing import Any

from ..injection import find_injection
from ..normalize import normalize, shell_normalize
from ..types import ActionCall, Decision, RuleDecision
from .allow import ordinary_command
from .base import BLOCK, Hit, block, escalate
from .commands import command_hits
from .content import content_hits, globs_credential_file, has_credential_path, secret_hits
from .files import path_hits
from .git import git_hits
from .network import network_hits
from .shell import commands
from .tamper import config_hits, strip_code_comments, tamper_command_hits

__all__ = ["ALLOW_SCORE", "UNDECIDED_SCORE", "evaluate", "run_hits"]

ALLOW_SCORE = 0.95
UNDECIDED_SCORE = 0.85  # no opinion: neither allowed nor refused by the rules; the judge decides
_READERS = frozenset(("read_file", "list_files", "search"))
_WRITERS = frozenset(("write_file", "edit_file"))
_B64 = re.compile(r"[A-Za-z0-9+/_-]{8,}={0,2}")
# Files an ordinary command runs: build and task files, shell scripts, npm's scripts, shell rc files.
_SCRIPT = re.compile(
    r"(?:^|/)(?:makefile|gnumakefile|[\w.-]+\.mk|justfile|dockerfile|procfile|package\.json|\.envrc"
    r"|\.(?:bash|zsh)rc|\.profile|[\w.-]+\.(?:sh|bash|zsh|ksh))$"
)
_CODE = re.compile(r"\.(?:py|pyw|js|mjs|cjs|ts|tsx|jsx|rb|pl|php|lua)$")
# What code must not do when run (names of docs-free rules: `sudo` in a string is no finding).
_CODE_RULES = (
    "rce.", "destructive.code_rmtree", "destructive.rm_outside", "destructive.find_delete", "net.code_upload",
    "net.upload", "net.reverse_shell", "net.dev_tcp", "net.dns_exfil", "net.raw_socket", "priv.docker_socket",
)  # fmt: skip
_HEX = re.compile(r"\\x([0-9a-fA-F]{2})|\\([0-7]{3})")


def evaluate(call: ActionCall) -> RuleDecision:
    """The rules' decision on `call`. Never raises: a rule that fails refuses the call (fail closed)."""
    try:
        hits, ordinary = _hits(call)
    except Exception as exc:
        return _made(decision=Decision.BLOCK, score=0.0, rules=("rules.error",),
                            reason=f"the rule layer failed ({type(exc).__name__}): refused")  # fmt: skip
    return _decide(hits, ordinary)


def _hits(call: ActionCall) -> tuple[list[Hit], bool]:
    tool, args = call.tool, call.args
    if tool == "run":
        command = args.get("command")
        if isinstance(command, list):
            command = shlex.join(str(a) for a in command)
        if not isinstance(command, str):
            return [], False
        return run_hits(command, call.branch)
    if tool in _READERS:
        return path_hits(str(args.get("path", ".")), write=False), True
    if tool in _WRITERS:
        path = str(args.get("path", ""))
        content = args.get("content") if tool == "write_file" else args.get("new_text")
        raw = normalize(str(content or ""), fold_case=False)
        text, npath = raw.lower(), normalize(path)
        hits = path_hits(path, write=True) + content_hits(text, raw, npath) + config_hits(npath, text)
        return hits + _written_commands(npath, str(content or ""), call.branch), True
    raw = normalize("\n".join(_strings(args)), fold_case=False)
    hits = secret_hits(raw) + [block(n, "a prompt-injection phrase", 0.2) for n in find_injection(raw)]
    return hits, tool == "finish"


def run_hits(command: str, branch: str = "", depth: int = 0) -> tuple[list[Hit], bool]:
    """The hits on shell text `command`, and whether every command of it is ordinary work."""
    raw = shell_normalize(command, fold_case=False)
    t = raw.lower()
    cmds = commands(t)
    hits = command_hits(t, cmds) + network_hits(t, cmds) + secret_hits(raw) + tamper_command_hits(t, cmds)
    for cmd in cmds:
        if cmd.name == "git":
            hits.extend(git_hits(cmd, t, branch))
    if has_credential_path(t) or (("*" in t or "?" in t or "[" in t) and globs_credential_file(t)):
        hits.append(block("secrets.credential_file", "touches a credentials file"))
    hits.extend(block(n, "a prompt-injection phrase in a command", 0.2) for n in find_injection(t))
    if depth < 2:
        for decoded in _decoded(command, raw, t):
            inner, _ = run_hits(decoded, branch, depth + 1)
            hits.extend(inner)
    return hits, bool(cmds) and all(ordinary_command(c) for c in cmds)


def _written_commands(path: str, content: str, branch: str) -> list[Hit]:
    """The commands a written file holds, when an ordinary command runs it next (`make test`, `npm
    test`, `pytest` loading a conftest.py): a script's refusals are the file's; code that would run
    a destructive, remote or leaking command waits for a human (it may be a test of such a rule)."""
    if _SCRIPT.search(path):
        if path.endswith("package.json"):
            content = "\n".join(_strings(_json_or_text(content)))  # each script a line of its own
        return [h for h in run_hits(content, branch)[0] if h.decision == BLOCK]
    if _CODE.search(path):
        ran = {h.rule for h in run_hits(strip_code_comments(content), branch)[0] if h.decision == BLOCK}
        named = sorted(r for r in ran if r.startswith(_CODE_RULES))
        if named:
            return [escalate("rce.written_code", f"writes code that would run: {', '.join(named)}")]
    return []


def _json_or_text(content: str) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        return content


def _decoded(command: str, raw: str, t: str) -> Iterator[str]:
    """Payloads hidden in base64, \\x or octal escapes (`echo cm0gLXJmIC8= | base64 -d | sh`): decoded, to be
    read by the same rules."""
    if "base64" in t or "b64decode" in t or "atob" in t or "frombase64" in t:
        for token in _B64.findall(raw):
            try:
                text = base64.b64decode(
                    token + "=" * (-len(token) % 4), altchars=b"-_" if "-" in token or "_" in token else None
                ).decode()
            except (binascii.Error, UnicodeDecodeError, ValueError):
                continue
            if text.isprintable() or text.strip().isprintable():
                yield text
    if "\\" in command and _HEX.search(command):
        yield _HEX.sub(lambda m: chr(int(m.group(1), 16) if m.group(1) else int(m.group(2), 8)), command)


def _decide(hits: list[Hit], ordinary: bool) -> RuleDecision:
    rules = tuple(dict.fromkeys(h.rule for h in hits))
    if not hits:
        if ordinary:
            return _made(decision=Decision.ALLOW, score=ALLOW_SCORE, reason="ordinary work")
        return _made(decision=Decision.ALLOW, score=UNDECIDED_SCORE, decided=False,
                            reason="no rule decides: the judge is asked")  # fmt: skip
    worst = min(hits, key=lambda h: (h.decision != BLOCK, h.score))
    decision = Decision.BLOCK if worst.decision == BLOCK else Decision.ESCALATE
    whys = list(dict.fromkeys(h.why for h in hits if h.decision == worst.decision))
    reason = f"{rules[0] if len(rules) == 1 else ', '.join(rules)}: {'; '.join(whys[:3])}"
    return _made(decision=decision, score=worst.score, rules=rules, reason=reason[:300])


def _made(**fields: Any) -> RuleDecision:
    """A RuleDecision of values this module chose (scores in [0, 1]): built without re-validation,
    which is a third of a decision's time."""
    return RuleDecision.model_construct(**fields)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)
