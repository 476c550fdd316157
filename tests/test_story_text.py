"""Story text is data: hostile titles and criteria go through the agents without running or escaping."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from wavefleet.domains import Domains
from wavefleet.lifecycle import Role, StoryState
from wavefleet.store import StoryStore
from wavefleet.stories import Story
from wavefleet.testing import Processes, wait_until
from workers.git import Workspace, branch_name, git
from workers.offline import _write_backend, _write_frontend, slug
from workers.roles import StageInput

# {marker} is replaced by a path outside every worktree: the file appears only if injected code ran.
RUN = '__import__("pathlib").Path(r"{marker}").write_text("ran")'
HOSTILE: list[tuple[str, str, tuple[str, ...]]] = [
    ("triple-quote-title", f'x"""; {RUN}; """', ("it works",)),
    ("single-triple-quote-title", f"x'''; {RUN}; '''", ("it works",)),
    ("newline-breakout-title", f'x"""\n{RUN}\n"""', ("it works",)),
    ("criterion-breakout", "plain title", (f'"]; {RUN}; X = ["', "it works")),
    ("backslashes", "C:\\new\\table \\N \\x \\", ("a \\ b", "ends \\")),
    ("nul-byte", "nul \x00 here", ("nul \x00 too",)),
    ("line-separators", "a\u2028b\u0085c\u2029d", (f"u2028\u2028{RUN}", "nel\x85x")),
    ("braces", "{status} {{}} {0} {story.id!r}", ("{c: True for c in []}",)),
    ("script-tag", "</script><script>alert(1)</script><!--", ("</ul><img src=x onerror=alert(1)>",)),
    ("very-long", '"""' * 66, ('"""; ' + "A" * 990, *(f"criterion {i} \\" for i in range(48)))),
]


def hostile_story(index: int, title: str, criteria: tuple[str, ...], marker: Path) -> Story:
    def fill(text: str) -> str:
        return text.replace("{marker}", str(marker))

    return Story(
        id=f"AUTH-{900 + index}", title=fill(title), acceptance_criteria=tuple(fill(c) for c in criteria)
    )


def stage_input(domains: Domains, story: Story, role: Role, data_dir: Path) -> StageInput:
    domain = domains.get("auth")
    return StageInput(
        story=story, domain=domain, role=role, round=1, attempt=1, worker="t", data_dir=data_dir
    )


def module_values(tree: Path, story: Story) -> list[object]:
    """Import the BE module as QA's pytest does, in a fresh interpreter, and read its data back."""
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]);"
        f"from wave_stories import {slug(story.id)} as m;"
        "print(json.dumps([m.STORY_ID, m.TITLE, m.ACCEPTANCE]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tree)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return list(json.loads(proc.stdout))


@pytest.mark.parametrize(("title", "criteria"), [row[1:] for row in HOSTILE], ids=[row[0] for row in HOSTILE])
def test_hostile_story_text_lands_as_data_in_the_agents_files(
    domains: Domains, tmp_path: Path, title: str, criteria: tuple[str, ...]
) -> None:
    # Given a story whose title and criteria try to break out of the files the agents write
    marker = tmp_path / "marker"
    story = hostile_story(0, title, criteria, marker)
    tree = tmp_path / "tree"
    tree.mkdir()

    # When the BE and FE agents write their files and the module is imported
    _write_backend(tree, stage_input(domains, story, Role.BE, tmp_path))
    _write_frontend(tree, stage_input(domains, story, Role.FE, tmp_path))
    values = module_values(tree, story)

    # Then the text is exactly the story's, nothing ran, and the page holds no markup from it
    assert values == [story.id, story.title, list(story.acceptance_criteria)]
    assert not marker.exists()
    page = (tree / "ui" / f"{slug(story.id)}.html").read_text()
    assert "<script" not in page and "<img" not in page and page.count("<!--") == 1


@pytest.mark.slow
@pytest.mark.timeout(600)  # ten stories through one team, one QA worker, on a loaded machine
def test_hostile_stories_go_through_the_pipeline_and_change_only_their_own_files(
    procs: Processes, store: StoryStore, domains: Domains, tmp_path: Path
) -> None:
    # Given every hostile story of the table, enqueued to a real team
    marker = tmp_path / "marker"
    stories = [hostile_story(i, title, crit, marker) for i, (_n, title, crit) in enumerate(HOSTILE)]
    sample = domains.get("auth").repo
    before = {p: p.read_bytes() for p in sample.rglob("*") if p.is_file()}
    procs.team("auth")
    procs.supervisor()
    store.enqueue(stories, domains)

    # When each reaches an end state
    for story in stories:
        wait_until(
            lambda s=story: store.get(s.id).state is StoryState.DONE,  # type: ignore[misc]
            timeout_s=240,
            message=f"{story.id} to be done",
            diagnose=lambda s=story: (
                f"{store.get(s.id).state}: {store.get(s.id).reason}\n{procs.logs()[-3000:]}"
            ),  # type: ignore[misc]
        )

    # Then no injected code ran, the source folder is untouched, and each story changed only its files
    assert not marker.exists()
    assert {p: p.read_bytes() for p in sample.rglob("*") if p.is_file()} == before
    workspace = Workspace(domains.get("auth"), procs.settings.data_dir)
    for story in stories:
        name = slug(story.id)
        changed = git(workspace.clone, "diff", "--name-only", f"main...{branch_name(story.id, 'qa')}")
        own = {
            "wave_stories/__init__.py",
            f"wave_stories/{name}.py",
            f"tests/test_{name}.py",
            f"ui/{name}.html",
        }
        assert set(changed.splitlines()) <= own, story.id
        source = git(workspace.clone, "show", f"{branch_name(story.id, 'qa')}:wave_stories/{name}.py")
        assert _assigned(source, "TITLE") == story.title


def _assigned(source: str, name: str) -> object:
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{name} not assigned in the module")
