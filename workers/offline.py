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
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from wavefleet.errors import StageError
from wavefleet.lifecycle import Decision, Role
from wavefleet.sandbox import Sandbox
from wavefleet.stories import offline_labels

from . import commands
from .git import Workspace, branch_name
from .roles import DevResult, Plan, QAReport, Review, StageInput, StageOutput, Task

LABEL = "offline"
MAX_REVIEW_LINES = 1500
MAX_OUTPUT = 1_000_000  # bytes of a test command's output kept (its end)
SECRET_PATTERNS = (
    re.compile(r"AKIA[0-9A-Z]{16}"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"(?i)(password|secret|api_key|token)\s*=\s*['\"][^'\"]{12,}['\"]"),
)
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

    def __init__(self, role: Role, sandbox: Sandbox, command_timeout_s: float = 300.0) -> None:
        self.role = role
        self.sandbox = sandbox
        self.command_timeout_s = command_timeout_s

    def run(self, stage: StageInput) -> StageOutput:
        if label_value(stage, "give-up") == self.role.value:
            raise StageError(f"offline {self.role.value} agent gave up (label offline:give-up)")
        started = time.monotonic()
        output = _ROLE_RUNNERS[self.role](self, stage)
        remaining = self._slow_seconds(stage) - (time.monotonic() - started)
        if remaining > 0:
            commands.run(["sleep", f"{remaining:.3f}"])
        return output

    def _slow_seconds(self, stage: StageInput) -> float:
        return offline_labels(stage.story.labels).slow_s(self.role)  # at most MAX_SLOW_S

    # PM --------------------------------------------------------------------------------------
    def plan(self, stage: StageInput) -> Plan:
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
    def develop(self, stage: StageInput) -> DevResult:
        workspace = Workspace(stage.domain, stage.data_dir)
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
    def test(self, stage: StageInput) -> QAReport:
        workspace = Workspace(stage.domain, stage.data_dir)
        story_id = stage.story.id
        branch = branch_name(story_id, "qa")
        tree = workspace.worktree(branch, start=stage.domain.base_branch)
        workspace.merge(tree, branch_name(story_id, "fe"), branch_name(story_id, "be"))
        command = stage.domain.resolved_test_command()
        try:
            outcome = commands.run_in(
                self.sandbox,
                command,
                tree,
                timeout_s=self.command_timeout_s,
                max_output_bytes=MAX_OUTPUT,
            )
        except subprocess.TimeoutExpired:
            raise StageError(f"tests timed out after {self.command_timeout_s}s") from None
        output = outcome.output
        passed, failed = _counts(output)
        ok = outcome.exit_code == 0
        return QAReport(
            agent=LABEL,
            passed=ok,
            branch=branch,
            tests_passed=passed,
            tests_failed=failed,
            summary=f"offline qa: {' '.join(command[1:])} exited {outcome.exit_code}: "
            f"{passed} passed, {failed} failed",
            output_tail=output[-4000:],
        )

    # CTO -------------------------------------------------------------------------------------
    def review(self, stage: StageInput) -> Review:
        diff = Workspace(stage.domain, stage.data_dir).diff(branch_name(stage.story.id, "qa"))
        added = [
            line[1:] for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")
        ]
        if any(p.search(line) for p in SECRET_PATTERNS for line in added):
            return Review(agent=LABEL, decision=Decision.KILL, reasons=["the diff adds a credential"])
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


_ROLE_RUNNERS: dict[Role, Callable[[OfflineAgent, StageInput], StageOutput]] = {
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
    name = slug(story.id)
    package = _checked(tree, "wave_stories", "__init__.py", f"{name}.py", f"{name}_data.py")
    package.mkdir(exist_ok=True)
    (package / "__init__.py").touch()
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
    (package / f"{name}.py").write_text(module)
    test = (
        f"from wave_stories import {name} as story\n\n\n"
        "def test_every_acceptance_criterion_is_met():\n"
        "    status = story.acceptance_status()\n"
        "    assert set(status) == set(story.ACCEPTANCE)\n"
        "    assert all(status.values()), [c for c, ok in status.items() if not ok]\n"
    )
    tests = _checked(tree, "tests", f"test_{name}.py")
    tests.mkdir(exist_ok=True)
    (tests / f"test_{name}.py").write_text(test)
    files = [f"wave_stories/{name}.py", f"tests/test_{name}.py"]
    if label_value(stage, "oversize"):
        (package / f"{name}_data.py").write_text(
            "".join(f"ROW_{i} = {i}\n" for i in range(MAX_REVIEW_LINES + 1))
        )
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
    ui = _checked(tree, "ui", f"{slug(story.id)}.html")
    ui.mkdir(exist_ok=True)
    (ui / f"{slug(story.id)}.html").write_text(page)
    return [f"ui/{slug(story.id)}.html"]


def _checked(tree: Path, folder: str, *files: str) -> Path:
    """`tree/folder`, refused if it or one of the files the agent writes in it is a symlink: one
    committed to the repository (by its owner or an earlier agent) would carry the write outside."""
    for path in [tree / folder, *(tree / folder / name for name in files)]:
        if path.is_symlink():
            raise StageError(
                f"{path.relative_to(tree)} is a symlink in the repository; the offline agent writes "
                "only real files of its worktree (remove the link from the branch)"
            )
    return tree / folder


def _counts(output: str) -> tuple[int, int]:
    passed = re.search(r"(\d+) passed", output)
    failed = re.search(r"(\d+) failed", output)
    return (int(passed[1]) if passed else 0, int(failed[1]) if failed else 0)
