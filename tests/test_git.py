"""The domain's repository as agents see it: a clone per domain, a worktree per branch, crash-safe set-up."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from wavefleet.domains import Domains
from wavefleet.errors import GitError
from workers.git import Workspace, branch_name, git


def workspace(domains: Domains, tmp_path: Path) -> Workspace:
    return Workspace(domains.get("auth"), tmp_path / "data")


def test_a_sample_folder_is_seeded_once_and_cloned_on_the_base_branch(
    domains: Domains, tmp_path: Path
) -> None:
    ws = workspace(domains, tmp_path)

    clone = ws.ensure_clone()

    assert git(clone, "rev-parse", "--abbrev-ref", "HEAD") == "main"
    assert (clone / "auth_service" / "tokens.py").is_file()
    assert ws.ensure_clone() == clone  # the second call finds it done


def test_a_seed_interrupted_half_way_leaves_nothing_that_looks_finished(
    domains: Domains, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = workspace(domains, tmp_path)
    real_seed = Workspace._seed

    def dies_after_init(self: Workspace, repo: Path, scratch: Path) -> None:
        scratch.mkdir(parents=True)
        git(scratch, "init", "--quiet")
        raise GitError("killed")

    monkeypatch.setattr(Workspace, "_seed", dies_after_init)
    with pytest.raises(GitError):
        ws.ensure_clone()
    monkeypatch.setattr(Workspace, "_seed", real_seed)

    clone = ws.ensure_clone()

    assert git(clone, "log", "--oneline", "-1") != ""


def test_parallel_branches_commit_independently_and_merge_for_qa(domains: Domains, tmp_path: Path) -> None:
    ws = workspace(domains, tmp_path)
    for role in ("fe", "be"):
        tree = ws.worktree(branch_name("AUTH-001", role))
        (tree / f"{role}.txt").write_text(role)
        ws.commit_all(tree, f"{role} work")

    qa = ws.worktree(branch_name("AUTH-001", "qa"), start="main")
    ws.merge(qa, branch_name("AUTH-001", "fe"), branch_name("AUTH-001", "be"))

    assert (qa / "fe.txt").read_text() == "fe"
    assert (qa / "be.txt").read_text() == "be"
    assert "+be" in ws.diff(branch_name("AUTH-001", "qa"))


def test_committing_an_unchanged_worktree_makes_no_new_commit(domains: Domains, tmp_path: Path) -> None:
    ws = workspace(domains, tmp_path)
    tree = ws.worktree(branch_name("AUTH-002", "be"))
    (tree / "x.txt").write_text("x")
    first = ws.commit_all(tree, "once")

    again = ws.commit_all(ws.worktree(branch_name("AUTH-002", "be")), "twice")

    assert again == first


def test_a_missing_repository_is_named_with_how_to_fix_it(domains: Domains, tmp_path: Path) -> None:
    domain = domains.get("auth").model_copy(update={"repo": tmp_path / "nowhere"})

    with pytest.raises(GitError, match=re.escape("fix `repo` in domain.toml")):
        Workspace(domain, tmp_path / "data").ensure_clone()


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_seeding_refuses_a_symlink_out_of_the_folder_and_copies_none_of_its_target(
    domains: Domains, domains_dir: Path, tmp_path: Path, kind: str
) -> None:
    # Given a sample folder holding a link to a secret outside it (the fleet's password, say)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "password").write_text("the-fleet-secret")
    sample = domains_dir / "auth" / "sample"
    (sample / "leak").symlink_to(outside / "password" if kind == "file" else outside)
    ws = workspace(domains, tmp_path)

    # When the fleet seeds its repository from the folder
    with pytest.raises(GitError, match=r"leak is a symlink to .*outside .*sample.*never follows"):
        ws.ensure_clone()

    # Then it refused in one line, and nothing of the target was copied anywhere under the data dir
    copied = [p for p in (tmp_path / "data").rglob("*") if p.is_file() and not p.is_symlink()]
    assert not any(b"the-fleet-secret" in p.read_bytes() for p in copied)


def test_seeding_keeps_a_symlink_inside_the_folder_as_a_symlink(
    domains: Domains, domains_dir: Path, tmp_path: Path
) -> None:
    sample = domains_dir / "auth" / "sample"
    (sample / "docs-link").symlink_to("README.md")

    clone = workspace(domains, tmp_path).ensure_clone()

    assert (clone / "docs-link").is_symlink()
    assert git(clone, "ls-files", "-s", "docs-link").startswith("120000")  # git's mode for a symlink


def test_a_hook_planted_in_the_clone_never_runs(domains: Domains, tmp_path: Path) -> None:
    # Given a pre-commit hook written into the clone (as an unsandboxed command could)
    ws = workspace(domains, tmp_path)
    marker = tmp_path / "hook-ran"
    hook = ws.ensure_clone() / ".git" / "hooks" / "pre-commit"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
    hook.chmod(0o755)

    # When an agent commits
    tree = ws.worktree(branch_name("AUTH-003", "be"))
    (tree / "x.txt").write_text("x")
    ws.commit_all(tree, "work")

    # Then the hook did not run
    assert not marker.exists()


def test_a_worktree_left_locked_by_a_killed_git_is_made_again(domains: Domains, tmp_path: Path) -> None:
    # Given a worktree whose `git worktree add` was SIGKILLed by a halt: git's "initializing" lock is
    # left on it and its folder is half made
    ws = workspace(domains, tmp_path)
    branch = branch_name("AUTH-001", "fe")
    tree = ws.worktree(branch)
    git(ws.clone, "worktree", "lock", "--reason", "initializing", str(tree))
    (tree / "auth_service").rename(tmp_path / "half-made")
    (ws.clone / ".git" / "refs" / "heads" / f"{branch}.lock").write_text("")  # a ref update cut off

    # When the stage runs again
    again = ws.worktree(branch)

    # Then it gets a whole worktree of its branch
    assert (again / "auth_service" / "tokens.py").is_file()
    assert git(again, "rev-parse", "--abbrev-ref", "HEAD") == branch


def test_the_fleets_git_runs_without_the_workers_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a worker holding the Redis password and a model key in its environment
    monkeypatch.setenv("WAVE_REDIS__PASSWORD", "REDIS-SECRET")
    monkeypatch.setenv("WAVE_ANTHROPIC__API_KEY", "MODEL-SECRET")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "SDK-SECRET")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)

    # When the fleet's git runs a command of a repository's choosing (here an alias printing its env,
    # as a filter or pager git were tricked into running would see it)
    shown = git(tmp_path, "-c", "alias.showenv=!env", "showenv")

    # Then none of the secrets is there, and what git needs is
    assert "SECRET" not in shown
    assert "PATH=" in shown and "GIT_TERMINAL_PROMPT=0" in shown
