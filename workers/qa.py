"""QA's deterministic half, shared by every agent kind: merge FE and BE on base, run the test command.

The verdict comes from here, never from a model: a merge conflict fails QA naming the files, and the
test command's exit code decides `passed`. The LLM QA only turns a failure into a report.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from wavefleet.errors import GitError, StageError
from wavefleet.sandbox import Sandbox

from . import commands
from .git import Workspace, branch_name, git
from .roles import QAReport, StageInput

MAX_OUTPUT = 1_000_000  # bytes of a test command's output kept (its end)
TAIL_SHOWN = 4000  # of it, in the report


@dataclass(frozen=True)
class QARun:
    """The merge and the test run of one QA stage."""

    branch: str
    tree: Path
    conflicts: tuple[str, ...] = ()  # files FE and BE both changed incompatibly: tests did not run
    exit_code: int | None = None
    output: str = ""
    command: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.conflicts and self.exit_code == 0

    def counts(self) -> tuple[int, int]:
        passed = re.search(r"(\d+) passed", self.output)
        failed = re.search(r"(\d+) (?:failed|errors?)", self.output)
        return (int(passed[1]) if passed else 0, int(failed[1]) if failed else 0)

    def report(self, agent: str, summary: str) -> QAReport:
        passed, failed = self.counts()
        return QAReport(
            agent=agent,
            passed=self.passed,
            branch=self.branch,
            tests_passed=passed,
            tests_failed=failed,
            summary=summary,
            output_tail=self.output[-TAIL_SHOWN:],
        )

    def outcome(self) -> str:
        """One line: the conflict, or what the command did."""
        if self.conflicts:
            return f"merge conflict between the fe and be branches in {', '.join(self.conflicts)}"
        passed, failed = self.counts()
        return f"{' '.join(self.command[1:])} exited {self.exit_code}: {passed} passed, {failed} failed"


def merge_and_test(stage: StageInput, workspace: Workspace, sandbox: Sandbox, timeout_s: float) -> QARun:
    """Build `wave/<ID>-qa` from base plus FE and BE, and run the domain's test command on it."""
    story_id = stage.story.id
    branch = branch_name(story_id, "qa")
    tree = workspace.worktree(branch, start=stage.domain.base_branch)
    for role in ("fe", "be"):
        conflicts = _merge(tree, branch_name(story_id, role))
        if conflicts:
            return QARun(branch, tree, conflicts=conflicts)
    command = stage.domain.resolved_test_command(sandbox.python)
    try:
        outcome = commands.run_in(sandbox, command, tree, timeout_s=timeout_s, max_output_bytes=MAX_OUTPUT)
    except subprocess.TimeoutExpired:
        raise StageError(f"tests timed out after {timeout_s}s") from None
    return QARun(branch, tree, exit_code=outcome.exit_code, output=outcome.output, command=tuple(command))


def _merge(tree: Path, branch: str) -> tuple[str, ...]:
    """Merge `branch` into the worktree; on a conflict, abort it and return the conflicting files."""
    try:
        git(tree, "merge", "--quiet", "--no-edit", "--no-ff", branch)
    except GitError:
        unmerged = git(tree, "diff", "--name-only", "--diff-filter=U")
        if not unmerged:
            raise  # not a conflict: a missing branch or a broken clone is the stage's error
        git(tree, "merge", "--abort", check=False)
        return tuple(sorted(unmerged.splitlines()))
    return ()
