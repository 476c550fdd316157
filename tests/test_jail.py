"""Repository content is hostile: the agents' own writes stay in the worktree, never through a link."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from contexts import bare_context

from wavefleet.domains import Domains
from wavefleet.errors import StageError
from wavefleet.lifecycle import Role
from wavefleet.sandbox import NoSandbox, Sandbox
from wavefleet.stories import Story
from workers import jail
from workers.git import git
from workers.offline import OfflineAgent
from workers.roles import StageInput


def hostile_repository(tmp_path: Path, links: dict[str, Path]) -> Path:
    """A real git repository whose base branch commits symbolic links that lead out of it."""
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "README").write_text("a service\n")
    for name, target in links.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).symlink_to(target)
    git(repo, "init", "--quiet", "--initial-branch", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "-m", "links out")
    return repo


def run_offline(role: Role, stage: StageInput, sandbox: Sandbox) -> None:
    OfflineAgent(role).run(stage, bare_context(stage, sandbox))


def stage(domains: Domains, repo: Path, role: Role, data_dir: Path) -> StageInput:
    domain = domains.get("auth").model_copy(update={"repo": repo})
    story = Story(id="AUTH-001", title="lock accounts", acceptance_criteria=("locks",))
    return StageInput(
        story=story, domain=domain, role=role, round=1, attempt=1, worker="t", data_dir=data_dir
    )


def test_a_committed_folder_link_cannot_redirect_the_backend_agents_writes(
    domains: Domains, tmp_path: Path
) -> None:
    # Given a repository whose `wave_stories` and `tests` are links to folders outside it
    outside = tmp_path / "outside"
    outside.mkdir()
    repo = hostile_repository(tmp_path, {"wave_stories": outside, "tests": outside})

    # When the BE agent does its work in a worktree of it
    with pytest.raises(StageError, match="symbolic link"):
        run_offline(Role.BE, stage(domains, repo, Role.BE, tmp_path / "data"), NoSandbox())

    # Then nothing was written outside the worktree
    assert list(outside.iterdir()) == []


def test_a_committed_file_link_cannot_redirect_the_frontend_agents_page(
    domains: Domains, tmp_path: Path
) -> None:
    victim = tmp_path / "authorized_keys"
    victim.write_text("ssh-ed25519 AAAA the owner's key\n")
    repo = hostile_repository(tmp_path, {"ui/auth_001.html": victim})

    with pytest.raises(StageError, match="symbolic link"):
        run_offline(Role.FE, stage(domains, repo, Role.FE, tmp_path / "data"), NoSandbox())

    assert victim.read_text() == "ssh-ed25519 AAAA the owner's key\n"


@pytest.mark.parametrize("relative", ["/etc/passwd", "../escape.txt", "a/../../b", "", "nul\0.txt"])
def test_paths_that_leave_the_worktree_are_refused(tmp_path: Path, relative: str) -> None:
    with pytest.raises(StageError, match="not a path inside the worktree"):
        jail.write_text(tmp_path, relative, "x")


def test_a_fifo_under_the_files_name_is_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "page.html")  # no reader: opening it for writing would block forever

    with pytest.raises(StageError, match="not a regular file"):
        jail.write_text(tmp_path, "page.html", "x")


def test_a_folder_under_the_files_name_or_a_file_under_a_folders_name_is_refused(tmp_path: Path) -> None:
    (tmp_path / "page.html").mkdir()
    (tmp_path / "ui").write_text("a file")

    with pytest.raises(StageError):
        jail.write_text(tmp_path, "page.html", "x")
    with pytest.raises(StageError):
        jail.write_text(tmp_path, "ui/page.html", "x")


def test_keep_existing_leaves_a_file_as_it_is_and_writes_a_new_one(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("VERSION = 1\n")

    jail.write_text(tmp_path, "pkg/__init__.py", "", keep_existing=True)
    jail.write_text(tmp_path, "new/deeper/__init__.py", "", keep_existing=True)

    assert (tmp_path / "pkg" / "__init__.py").read_text() == "VERSION = 1\n"
    assert (tmp_path / "new" / "deeper" / "__init__.py").read_text() == ""


def test_keep_existing_still_refuses_a_link_in_the_files_place(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "__init__.py").symlink_to(victim)

    with pytest.raises(StageError, match="symbolic link"):
        jail.write_text(tmp_path / "tree", "__init__.py", "", keep_existing=True)
    assert victim.read_text() == "keep"
