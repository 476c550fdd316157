"""The offline agents: deterministic stand-ins for the LLM agents, labelled offline everywhere.

They do real work on the domain's repository (branches, files, commits, the repository's own test
suite, checks on the diff), with no model call. Story labels steer them, so tests and demos can
exercise every path of the pipeline:

- ``offline:qa-fails=N``   BE ships a bug the tests catch in rounds 1..N, and fixes it after
- ``offline:oversize``     BE writes a diff too large for automatic review (CTO HOLDs)
- ``offline:leak-secret``  BE commits a credential (CTO KILLs)
- ``offline:give-up=ROLE`` that role's agent gives up (the story fails)
- ``offline:slow=SECONDS`` every stage takes at least this long, waiting in a child process as a
  long build or test command would (for recovery and halt tests); ``offline:slow=ROLE:SECONDS``
  slows only that role
"""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from wavefleet.errors import StageError
from wavefleet.lifecycle import Decision, Role
from wavefleet.redact import CREDENTIALS
from wavefleet.stories import offline_labels

from . import commands, jail
from .git import branch_name
from .qa import merge_and_test
from .roles import DevResult, Plan, QAReport, Review, StageInput, StageOutput, Task

if TYPE_CHECKING:
    from .agent.context import AgentContext

LABEL = "offline"
MAX_REVIEW_LINES = 1500
DELETED_FILE = re.compile(r"^diff --git a/(\S+) b/\S+\ndeleted file mode", re.MULTILINE)


def label_value(stage: StageInput, name: str) -> str | None:
    """The value of the story's `offline:NAME` label, as parsed and bounded at intake (None: absent)."""
    labels = offline_labels(stage.story.labels)
    value = {
        "qa-fails": labels.qa_fails or None,
        "oversize": labels.oversize or None,
        "leak-secret": labels.leak_secret or None,
        "give-up": labels.give_up.value if labels.give_up else None,
    }.get(name)
    return None if value is None else str(value)


def slug(story_id: str) -> str:
    return story_id.lower().replace("-", "_")


class OfflineAgent:
    """One role's offline behaviour; `run` dispatches on the role."""

    label = LABEL

    def __init__(self, role: Role, command_timeout_s: float = 300.0) -> None:
        self.role = role
        self.command_timeout_s = command_timeout_s

    def run(self, stage: StageInput, ctx: AgentContext) -> StageOutput:
        if label_value(stage, "give-up") == self.role.value:
            raise StageError(f"offline {self.role.value} agent gave up (label offline:give-up)")
        started = time.monotonic()
        output = _ROLE_RUNNERS[self.role](self, stage, ctx)
        remaining = self._slow_seconds(stage) - (time.monotonic() - started)
        if remaining > 0:
            commands.run(["sleep", f"{remaining:.3f}"])
        return output

    def _slow_seconds(self, stage: StageInput) -> float:
        return offline_labels(stage.story.labels).slow_s(self.role)  # at most MAX_SLOW_S

    # PM --------------------------------------------------------------------------------------
    def plan(self, stage: StageInput, ctx: AgentContext) -> Plan:
        story = stage.story
        criteria = list(story.acceptance_criteria) or [story.title]
        tasks = [
            Task(id=f"{story.id}-BE", role="be", title=f"Implement: {story.title}", criteria=criteria),
            Task(
                id=f"{story.id}-FE", role="fe", title=f"User interface for: {story.title}", criteria=criteria
            ),
        ]
        return Plan(
            agent=LABEL, tasks=tasks, summary=f"offline plan: {len(tasks)} tasks, {len(criteria)} criteria"
        )

    # FE and BE ---------------------------------------------------------------------------------
    def develop(self, stage: StageInput, ctx: AgentContext) -> DevResult:
        workspace = ctx.workspace
        branch = branch_name(stage.story.id, stage.role.value)
        tree = workspace.worktree(branch)
        files = _write_frontend(tree, stage) if stage.role is Role.FE else _write_backend(tree, stage)
        commit = workspace.commit_all(
            tree, f"{stage.story.id} round {stage.round}: {stage.role.value} (offline agent)"
        )
        return DevResult(
            agent=LABEL,
            branch=branch,
            commit=commit,
            files=files,
            summary=f"offline {stage.role.value}: wrote {len(files)} files on {branch}",
        )

    # QA --------------------------------------------------------------------------------------
    def test(self, stage: StageInput, ctx: AgentContext) -> QAReport:
        run = merge_and_test(stage, ctx.workspace, ctx.sandbox, self.command_timeout_s)
        return run.report(LABEL, f"offline qa: {run.outcome()}")

    # CTO -------------------------------------------------------------------------------------
    def review(self, stage: StageInput, ctx: AgentContext) -> Review:
        diff = ctx.workspace.diff(branch_name(stage.story.id, "qa"))
        added = [
            line[1:] for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")
        ]
        shapes = CREDENTIALS.find("\n".join(added))  # the fleet's one definition of credential shapes
        if shapes:
            reasons = [f"the diff adds a credential ({', '.join(shapes)})"]
            return Review(agent=LABEL, decision=Decision.KILL, reasons=reasons)
        if any("test" in path for path in DELETED_FILE.findall(diff)):
            return Review(agent=LABEL, decision=Decision.KILL, reasons=["the diff deletes tests"])
        changed = sum(1 for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---"))
        if changed > MAX_REVIEW_LINES:
            return Review(
                agent=LABEL,
                decision=Decision.HOLD,
                reasons=[f"{changed} changed lines: above {MAX_REVIEW_LINES}, needs a human review"],
            )
        return Review(
            agent=LABEL,
            decision=Decision.GO,
            reasons=[f"tests passed in QA; {changed} changed lines; no credential or test deletion"],
        )


_ROLE_RUNNERS: dict[Role, Callable[[OfflineAgent, StageInput, AgentContext], StageOutput]] = {
    Role.PM: OfflineAgent.plan,
    Role.FE: OfflineAgent.develop,
    Role.BE: OfflineAgent.develop,
    Role.QA: OfflineAgent.test,
    Role.CTO: OfflineAgent.review,
}


def _write_backend(tree: Path, stage: StageInput) -> list[str]:
    story = stage.story
    criteria = list(story.acceptance_criteria) or [story.title]
    buggy = stage.round <= int(label_value(stage, "qa-fails") or 0)
    jail.write_text(tree, "wave_stories/__init__.py", "", keep_existing=True)
    name = slug(story.id)
    status = "index < len(ACCEPTANCE) - 1" if buggy else "True"
    # Story text is data: every string from the story enters the source through json.dumps (an
    # ASCII-only JSON string is a valid Python literal), never pasted into a docstring or comment.
    module = (
        '"""One story\'s acceptance status, written by the WAVE offline agent (deterministic, no LLM)."""\n\n'
        f"STORY_ID = {json.dumps(story.id)}\n"
        f"TITLE = {json.dumps(story.title)}\n"
        f"ACCEPTANCE = {json.dumps(criteria, indent=4)}\n\n\n"
        "def acceptance_status() -> dict[str, bool]:\n"
        f"    return {{c: {status} for index, c in enumerate(ACCEPTANCE)}}\n"
    )
    if label_value(stage, "leak-secret"):
        module += '\n\nAPI_KEY = "AKIAIOSFODNN7EXAMPLE"  # offline:leak-secret\n'
    jail.write_text(tree, f"wave_stories/{name}.py", module)
    test = (
        f"from wave_stories import {name} as story\n\n\n"
        "def test_every_acceptance_criterion_is_met():\n"
        "    status = story.acceptance_status()\n"
        "    assert set(status) == set(story.ACCEPTANCE)\n"
        "    assert all(status.values()), [c for c, ok in status.items() if not ok]\n"
    )
    jail.write_text(tree, f"tests/test_{name}.py", test)
    files = [f"wave_stories/{name}.py", f"tests/test_{name}.py"]
    if label_value(stage, "oversize"):
        rows = "".join(f"ROW_{i} = {i}\n" for i in range(MAX_REVIEW_LINES + 1))
        jail.write_text(tree, f"wave_stories/{name}_data.py", rows)
        files.append(f"wave_stories/{name}_data.py")
    return files


def _write_frontend(tree: Path, stage: StageInput) -> list[str]:
    story = stage.story
    criteria = list(story.acceptance_criteria) or [story.title]
    items = "\n".join(f"    <li>{html.escape(c)}</li>" for c in criteria)
    story_id = html.escape(story.id)
    page = (
        "<!-- written by the WAVE offline agent (deterministic, no LLM) -->\n"
        f'<section id="{story_id}">\n  <h2>{html.escape(story.title)}</h2>\n'
        f"  <ul>\n{items}\n  </ul>\n</section>\n"
    )
    jail.write_text(tree, f"ui/{slug(story.id)}.html", page)
    return [f"ui/{slug(story.id)}.html"]
