"""Delivery: a GO'd story's reviewed merge, pushed to the domain's repository as `wave/<ID>`.

Runs in the CTO stage right after the review, so the stage's result carries what was delivered.
The pushed commit is the head of `wave/<ID>-qa`, the merge QA tested and the CTO reviewed. The fleet
never moves a branch it did not create: it creates `wave/<ID>` on the remote or finds it already at
this very commit (a retried delivery), and anything else holds the story for a human.
"""

from __future__ import annotations

from wavefleet.domains import DOMAIN_FILE, Domain
from wavefleet.errors import GitError, HoldStory
from wavefleet.lifecycle import Decision, Role

from .agents import NoopAgent
from .git import Workspace, branch_name
from .roles import Delivery, Review, StageInput, StageOutput

# The worktrees a story leaves in the clone; their branches stay (the QA one is the result).
STORY_ROLES = (Role.FE, Role.BE, Role.QA)


def delivered_branch(story_id: str) -> str:
    return f"wave/{story_id}"


def after_review(stage: StageInput, output: StageOutput, agent: str) -> StageOutput:
    """The CTO stage's output with its delivery: made on GO, none for anything else. `agent` is the
    label of the agent that ran (the code's, not the output's: a model writes the output)."""
    if not isinstance(output, Review) or agent == NoopAgent.label:  # noop: no git, nothing to deliver
        return output
    if output.decision is not Decision.GO:
        return output.model_copy(update={"delivery": None})
    delivery = deliver(Workspace(stage.domain, stage.data_dir), stage.story.id)
    return output.model_copy(update={"delivery": delivery})


def deliver(workspace: Workspace, story_id: str) -> Delivery:
    """Push the story's reviewed merge (or keep it in the clone), then remove its worktrees.

    Raises HoldStory, naming the branch or the remote, when the push cannot be made as it must."""
    reviewed = branch_name(story_id, Role.QA.value)
    try:
        commit = workspace.commit_of(reviewed)
    except GitError:
        raise GitError(
            f"delivery: the reviewed branch {reviewed} is missing from the fleet's clone"
        ) from None
    # Decided by the clone, not by the domain's folder now: a repository that went missing must fail
    # the push, not pass for a plain folder.
    remote = "" if workspace.is_seeded() else workspace.domain.delivery_remote()
    clone = str(workspace.clone)
    if remote:
        target = delivered_branch(story_id)
        _push(workspace, remote, commit, target)
        delivery = Delivery(branch=target, commit=commit, remote=remote, clone=clone)
    else:
        delivery = Delivery(branch=reviewed, commit=commit, clone=clone, note=_why_kept(workspace))
    workspace.remove_worktrees([branch_name(story_id, role.value) for role in STORY_ROLES])
    return delivery


def _push(workspace: Workspace, remote: str, commit: str, branch: str) -> None:
    domain = workspace.domain
    if not workspace.has_remote(remote):
        raise HoldStory(
            f"delivery: the fleet's clone {workspace.clone} has no remote {remote!r} (`[delivery] remote` "
            f"in {_domain_file(domain)}): add it there or fix the setting, then `wave approve`"
        )
    try:
        if branch in {domain.base_branch, workspace.remote_default(remote)}:
            raise HoldStory(
                f"delivery: {branch} is the default branch of {remote}; the fleet never pushes it"
            )
        existing = workspace.remote_branch(remote, branch)
        if existing is None:
            try:
                workspace.push_new_branch(remote, commit, branch)
                return
            except GitError:
                existing = workspace.remote_branch(remote, branch)  # made meanwhile, by us or another?
                if existing is None:
                    raise
    except GitError as exc:  # the remote is unreachable or refuses us: a human must fix that first
        raise HoldStory(
            f"delivery of {branch} to {remote} failed ({exc}); fix it, then `wave approve`"
        ) from None
    if existing != commit:
        raise HoldStory(
            f"delivery: {branch} already exists on {remote} at {existing}, not at the reviewed {commit}; "
            "the fleet never overwrites a branch (delete or rename it there, then `wave approve`)"
        )


def _why_kept(workspace: Workspace) -> str:
    if workspace.is_seeded():
        return f"the domain's repo {workspace.domain.repo} is a folder, not a git repository"
    return f'[delivery] remote = "" in {_domain_file(workspace.domain)}'


def _domain_file(domain: Domain) -> str:
    return str(domain.folder / DOMAIN_FILE)
