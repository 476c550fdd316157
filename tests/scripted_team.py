"""A scripted team for the local model servers: replies chosen from the request alone (the role from
the system prompt, the round from the opening message's JSON, the step from the assistant turns so
far), so FE and BE may call at once from different worker processes.

The story: lock an account after repeated failed logins (auth domain). BE ships an off-by-one bug in
round 1 with a test that catches it; QA's real pytest run fails; QA's model names the fix; BE applies
it in round 2 only if the QA report reached it; QA passes; the CTO (on the xAI server) says GO.
Every `run` prints its process id first: inside bwrap's pid namespace it is tiny, on the host not.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

from servers.anthropic_server import Reply as AnthropicReply
from servers.xai_server import Reply as XaiReply

STORY_ID = "AUTH-901"
STORY = {
    "id": STORY_ID,
    "title": "Lock an account after repeated failed logins",
    "description": "Too many wrong passwords in a row must lock the account.",
    "acceptance_criteria": ["an account locks after 3 failed logins", "a success resets the count"],
}
LOCKOUT = "auth_service/lockout.py"
FIX_MARK = "FIX-LOCKOUT-OFF-BY-ONE"
PID_MARK = "pid-in-sandbox"
FAILING_TEST = "test_locks_after_the_limit"

LOCKOUT_BUGGY = '''"""Account lockout after repeated failed logins."""


class Lockout:
    def __init__(self, limit: int = 3) -> None:
        self.limit = limit
        self.failures: dict[str, int] = {}

    def failed(self, user: str) -> None:
        self.failures[user] = self.failures.get(user, 0) + 1

    def succeeded(self, user: str) -> None:
        self.failures.pop(user, None)

    def locked(self, user: str) -> bool:
        return self.failures.get(user, 0) > self.limit
'''
LOCKOUT_TEST = f"""from auth_service.lockout import Lockout


def {FAILING_TEST}():
    lockout = Lockout(limit=3)
    for _ in range(3):
        lockout.failed("ada")
    assert lockout.locked("ada")


def test_a_success_resets_the_count():
    lockout = Lockout(limit=3)
    lockout.failed("ada")
    lockout.succeeded("ada")
    assert not lockout.locked("ada")
"""
DOCS = "# Account lockout\n\nAfter 3 failed logins in a row the account is locked.\n"
DOCS_TEST = """from pathlib import Path


def test_the_lockout_is_documented():
    assert "3 failed logins" in (Path(__file__).parent.parent / "docs" / "lockout.md").read_text()
"""


def run_command(*pytest_args: str) -> list[str]:
    py = sys.executable
    probe = f"import os; print('{PID_MARK}', os.getpid())"
    tests = " ".join([py, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args])
    return ["sh", "-c", f'{py} -c "{probe}" && {tests}']


Call = tuple[str, dict[str, Any]]


def pm(round_: int, step: int, opening: dict[str, Any]) -> Call:
    if step == 0:
        return ("list_files", {"path": "."})
    criteria = opening["story"]["acceptance_criteria"]
    tasks = [
        {"role": "be", "title": "Lockout in auth_service with tests", "criteria": criteria},
        {"role": "fe", "title": "Document the lockout for users", "criteria": criteria[:1]},
    ]
    return ("finish", {"tasks": tasks, "summary": "a lockout module (be) and its user documentation (fe)"})


def be(round_: int, step: int, opening: dict[str, Any]) -> Call:
    if round_ == 1:
        script: list[Call] = [
            ("write_file", {"path": "auth_service/lockout.py", "content": LOCKOUT_BUGGY}),
            ("write_file", {"path": "tests/test_lockout.py", "content": LOCKOUT_TEST}),
            ("run", {"command": run_command("tests/test_lockout.py")}),
            ("finish", {"summary": "lockout module and its tests"}),
        ]
        return script[min(step, len(script) - 1)]
    report = json.dumps(opening.get("previous_qa_report", {}))
    if FIX_MARK not in report:  # the QA report did not reach the developer: nothing to act on
        return ("finish", {"summary": "no QA report: nothing to fix"})
    script = [
        (
            "edit_file",
            {"path": "auth_service/lockout.py", "old_text": "> self.limit", "new_text": ">= self.limit"},
        ),
        ("run", {"command": run_command()}),
        ("finish", {"summary": f"fixed as QA asked ({FIX_MARK})"}),
    ]
    return script[min(step, len(script) - 1)]


def fe(round_: int, step: int, opening: dict[str, Any]) -> Call:
    if round_ > 1:
        return ("finish", {"summary": "the failure is in the back end; nothing to change here"})
    script: list[Call] = [
        ("write_file", {"path": "docs/lockout.md", "content": DOCS}),
        ("write_file", {"path": "tests/test_lockout_docs.py", "content": DOCS_TEST}),
        ("run", {"command": run_command("tests/test_lockout_docs.py")}),
        ("finish", {"summary": "documented the lockout"}),
    ]
    return script[min(step, len(script) - 1)]


def qa(round_: int, step: int, opening: dict[str, Any]) -> Call:
    if step == 0:
        return ("read_file", {"path": "tests/test_lockout.py"})
    failures = [
        {
            "file": "auth_service/lockout.py",
            "test": f"tests/test_lockout.py::{FAILING_TEST}",
            "fix": f"{FIX_MARK}: lock when the failures reach the limit (>=), not when they exceed it",
        }
    ]
    return ("finish", {"summary": "the lockout engages one failure late", "failures": failures})


def cto(round_: int, step: int, opening: dict[str, Any]) -> Call:
    if step == 0:
        return ("read_file", {"path": "auth_service/lockout.py"})
    return (
        "finish",
        {"decision": "GO", "reasons": ["tested lockout, QA passed", "no credential or test removed"]},
    )


ROLES = {"pm": pm, "be": be, "fe": fe, "qa": qa, "cto": cto}


@dataclass
class Seen:
    """What the servers were asked, for the test's assertions (appended from the servers' threads)."""

    calls: list[tuple[str, str, int, int, str]] = field(
        default_factory=list
    )  # provider, role, round, step, tool
    openings: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    run_outputs: list[str] = field(default_factory=list)
    systems: set[str] = field(default_factory=set)  # every system prompt the servers received
    unexpected: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class ScriptedTeam:
    """The responders for both servers: `anthropic.respond_with(team.anthropic)` and the same for xAI."""

    def __init__(self) -> None:
        self.seen = Seen()

    def anthropic(self, body: dict[str, Any]) -> AnthropicReply | None:
        system = body.get("system") or ""
        system_text = system if isinstance(system, str) else " ".join(b.get("text", "") for b in system)
        messages = body.get("messages") or []
        turns = [(m["role"], _anthropic_texts(m)) for m in messages]
        call = self._decide("anthropic", system_text, turns)
        return AnthropicReply(text="", tool_use=[call]) if call else AnthropicReply(text="confused")

    def xai(self, body: dict[str, Any]) -> XaiReply | None:
        messages = body.get("messages") or []
        system_text = " ".join(_xai_texts(m) for m in messages if m.get("role") == "ROLE_SYSTEM")
        roles = {"ROLE_USER": "user", "ROLE_ASSISTANT": "assistant", "ROLE_TOOL": "user"}
        turns = [(roles[m["role"]], _xai_texts(m)) for m in messages if m.get("role") in roles]
        call = self._decide("xai", system_text, turns)
        return XaiReply(text="", tool_calls=[(call[0], json.dumps(call[1]))]) if call else XaiReply(text="?")

    def _decide(self, provider: str, system: str, turns: list[tuple[str, str]]) -> Call | None:
        role_match = re.search(r"^# Role: (\w+)", system, re.MULTILINE)
        first_user = next((text for who, text in turns if who == "user"), "")
        try:
            opening = json.loads(first_user[first_user.index("{") :])
        except ValueError:
            opening = {}
        step = sum(1 for who, _ in turns if who == "assistant")
        role = role_match[1] if role_match else "?"
        round_ = int(opening.get("round", 0))
        with self.seen.lock:
            self.seen.systems.add(system)
            if role not in ROLES or not opening:
                self.seen.unexpected.append(f"{provider}: role {role}, opening {first_user[:200]!r}")
                return None
            call = ROLES[role](round_, step, opening)
            self.seen.calls.append((provider, role, round_, step, call[0]))
            self.seen.openings.setdefault((role, round_), opening)
            if turns and PID_MARK in turns[-1][1]:
                self.seen.run_outputs.append(turns[-1][1])
        return call


def _anthropic_texts(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    parts = []
    for block in content or []:
        if block.get("type") == "text":
            parts.append(block.get("text", ""))
        elif block.get("type") == "tool_result":
            inner = block.get("content")
            parts.append(inner if isinstance(inner, str) else json.dumps(inner))
    return "\n".join(parts)


def _xai_texts(message: dict[str, Any]) -> str:
    return "\n".join(str(c.get("text", "")) for c in message.get("content") or [])
