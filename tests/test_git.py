"""The domain's repository as agents see it: a clone per domain, a worktree per branch, crash-safe set-up."""

from __future__ import annotations

import re
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
