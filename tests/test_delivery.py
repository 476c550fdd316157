"""Delivery: a GO'd story's reviewed merge lands in the domain's repository as `wave/<ID>`, and only that.

The domain's repository is a real bare repository the test makes (as a server keeps one); stories go
through the real pipeline (supervisor and workers as processes, offline agents, QA in bwrap).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from wavefleet.config import Settings
from wavefleet.domains import DOMAIN_FILE, Domains, load_domains
from wavefleet.errors import ConfigError, HoldStory
from wavefleet.lifecycle import Decision, Role, StoryState
from wavefleet.messages import StageResult
from wavefleet.store import StoryStore
from wavefleet.stories import Story
from wavefleet.testing import Processes, run_wave, wait_until
from workers.agents import NoopAgent
from workers.delivery import after_review, deliver
from workers.git import Workspace, branch_name, git
from workers.roles import Review, StageInput

DOMAINS = Path(__file__).resolve().parent.parent / "domains"


def make_origin(tmp_path: Path) -> Path:
    """A bare repository holding the auth sample on `main`, plus a branch and a tag that must not move."""
    work = tmp_path / "upstream"
    shutil.copytree(DOMAINS / "auth" / "sample", work, ignore=shutil.ignore_patterns("__pycache__"))
    git(work, "init", "--quiet", "--initial-branch", "main")
    git(work, "add", "-A")
    git(work, "commit", "--quiet", "-m", "upstream")
    git(work, "tag", "v1.0")
    git(work, "branch", "feature/login")
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "--quiet", "--bare", "--initial-branch", "main", str(origin))
    git(work, "push", "--quiet", str(origin), "main", "feature/login", "v1.0")
    return origin


def point_auth_at(domains_dir: Path, repo: Path, delivery: str = "") -> None:
    toml = domains_dir / "auth" / DOMAIN_FILE
    text = toml.read_text().replace('repo = "sample"', f"repo = {json.dumps(str(repo))}")
    toml.write_text(text + delivery)


def refs(repo: Path) -> dict[str, str]:
    out = git(repo, "for-each-ref", "--format=%(refname) %(objectname)")
    return dict(line.split(" ") for line in out.splitlines())


def worktrees(clone: Path) -> list[str]:
    out = git(clone, "worktree", "list", "--porcelain")
    return [line.removeprefix("worktree ") for line in out.splitlines() if line.startswith("worktree ")]


@pytest.fixture
def origin(tmp_path: Path, domains_dir: Path) -> Path:
    repo = make_origin(tmp_path)
    point_auth_at(domains_dir, repo)
    return repo


def run_story(
    procs: Processes,
    store: StoryStore,
    settings: Settings,
    story_id: str,
    state: StoryState,
    labels: tuple[str, ...] = (),
) -> None:
    procs.team("auth")
    procs.supervisor()
    store.enqueue(
        [Story(id=story_id, title="Sign in", acceptance_criteria=("it works",), labels=labels)],
        load_domains(settings.domains_dir),
    )
    wait_until(
        lambda: store.get(story_id).state is state,
        timeout_s=90,
        message=f"{story_id} to be {state}",
        diagnose=lambda: f"{store.get(story_id)}\n{procs.logs()[-4000:]}",
    )


def clone_of(settings: Settings) -> Path:
    return settings.data_dir / "repos" / "auth" / "clone"


def test_a_go_pushes_the_reviewed_merge_as_wave_id_and_nothing_else_and_removes_the_worktrees(
    procs: Processes, store: StoryStore, settings: Settings, origin: Path
) -> None:
    before = refs(origin)

    run_story(procs, store, settings, "AUTH-501", StoryState.DONE)

    clone = clone_of(settings)
    reviewed = git(clone, "rev-parse", "wave/AUTH-501-qa")
    assert refs(origin) == {**before, "refs/heads/wave/AUTH-501": reviewed}
    assert git(origin, "show", "wave/AUTH-501:wave_stories/auth_501.py")  # the story's work is in it
    assert worktrees(clone) == [str(clone)]
    assert {f"wave/AUTH-501-{r}" for r in ("fe", "be", "qa")} <= set(git(clone, "branch").split())
    shown = run_wave(settings, "status", "AUTH-501")
    assert f"delivered: wave/AUTH-501 at {reviewed} on origin" in shown.stdout.replace("  ", " ")
    cto = store.latest_result(store.get("AUTH-501"), Role.CTO)
    assert cto is not None
    delivered = {
        "branch": "wave/AUTH-501",
        "commit": reviewed,
        "remote": "origin",
        "clone": str(clone.resolve()),
        "note": "",
    }
    assert cto.output["delivery"] == delivered
    assert json.loads(run_wave(settings, "status", "AUTH-501", "--json").stdout)["delivery"] == delivered


def test_a_wave_branch_someone_else_made_is_never_overwritten_and_the_story_is_held_naming_it(
    procs: Processes, store: StoryStore, settings: Settings, origin: Path
) -> None:
    # Given wave/AUTH-502 on the origin at main: an ancestor of the merge, so a plain push would move it
    git(origin, "branch", "wave/AUTH-502", "main")
    before = refs(origin)

    run_story(procs, store, settings, "AUTH-502", StoryState.HELD)

    assert refs(origin) == before
    record = store.get("AUTH-502")
    assert "wave/AUTH-502 already exists on origin" in record.reason
    assert "\n" not in record.reason
    # When the operator removes it and approves, the CTO stage runs again and delivers
    git(origin, "branch", "-D", "wave/AUTH-502")
    assert run_wave(settings, "approve", "AUTH-502").returncode == 0
    wait_until(lambda: store.get("AUTH-502").state is StoryState.DONE, message="AUTH-502 done")
    reviewed = git(clone_of(settings), "rev-parse", "wave/AUTH-502-qa")
    assert refs(origin) == {**before, "refs/heads/wave/AUTH-502": reviewed}


def cto_results(store: StoryStore, story_id: str) -> list[tuple[str, str, str]]:
    """(agent, decision or hold, first reason or error) of each CTO attempt, in order."""
    record = store.get(story_id)
    found = []
    for attempt in range(1, record.attempts[Role.CTO] + 1):
        result = store.result(story_id, record.round, Role.CTO, attempt)
        assert result is not None, f"no result for CTO attempt {attempt}"
        out = result.output or {}
        first = (out.get("reasons") or [result.error])[0]
        found.append((out.get("agent") or result.agent, out.get("decision", "held"), first))
    return found


def test_a_story_the_cto_held_is_delivered_when_a_human_approves_it_without_asking_the_cto_again(
    procs: Processes, store: StoryStore, settings: Settings, origin: Path
) -> None:
    # Given a story whose diff is too big for the CTO to pass: held, nothing pushed, worktrees kept
    before = refs(origin)
    run_story(procs, store, settings, "AUTH-512", StoryState.HELD, labels=("offline:oversize",))
    clone = clone_of(settings)
    assert refs(origin) == before
    assert len(worktrees(clone)) == 4

    # When a human approves it
    approved = run_wave(settings, "approve", "AUTH-512", "--reason", "read it: generated rows")

    # Then the review runs again as the human's GO and delivers it as a model's GO would
    assert (approved.returncode, approved.stdout) == (0, "AUTH-512: held -> reviewing\n")
    wait_until(
        lambda: store.get("AUTH-512").state is StoryState.DONE,
        message="AUTH-512 done after the approval",
        diagnose=lambda: f"{store.get('AUTH-512')}\n{procs.logs()[-4000:]}",
    )
    reviewed = git(clone, "rev-parse", "wave/AUTH-512-qa")
    assert refs(origin) == {**before, "refs/heads/wave/AUTH-512": reviewed}
    assert worktrees(clone) == [str(clone)]
    assert [r[:2] for r in cto_results(store, "AUTH-512")] == [("offline", "HOLD"), ("human", "GO")]
    assert cto_results(store, "AUTH-512")[1][2] == "read it: generated rows"
    shown = run_wave(settings, "status", "AUTH-512").stdout.replace("  ", " ")
    assert "approved: read it: generated rows (a human's GO after the CTO's HOLD)" in shown
    assert "[human]" in shown and "GO: read it: generated rows" in shown
    assert f"delivered: wave/AUTH-512 at {reviewed} on origin" in shown
    data = json.loads(run_wave(settings, "status", "AUTH-512", "--json").stdout)
    assert (data["approved"], data["delivery"]["commit"]) == ("read it: generated rows", reviewed)


def test_an_approved_story_whose_delivery_is_refused_is_held_again_and_a_second_approve_delivers(
    procs: Processes, store: StoryStore, settings: Settings, origin: Path
) -> None:
    # Given a held story whose wave/<ID> someone else already made on the origin
    git(origin, "branch", "wave/AUTH-513", "main")
    run_story(procs, store, settings, "AUTH-513", StoryState.HELD, labels=("offline:oversize",))
    before = refs(origin)

    # When a human approves it, the delivery is refused and the story held again, approval kept
    assert run_wave(settings, "approve", "AUTH-513", "--reason", "fine by me").returncode == 0
    wait_until(
        lambda: "already exists on origin" in store.get("AUTH-513").reason,
        message="AUTH-513 held by its delivery",
        diagnose=lambda: f"{store.get('AUTH-513')}\n{procs.logs()[-4000:]}",
    )
    record = store.get("AUTH-513")
    assert (record.state, record.approved) == (StoryState.HELD, "fine by me")
    assert refs(origin) == before

    # When the operator removes the branch and approves again
    git(origin, "branch", "-D", "wave/AUTH-513")
    assert run_wave(settings, "approve", "AUTH-513", "--reason", "branch removed").returncode == 0

    # Then the delivery is made under the first approval, still without the CTO agent
    wait_until(lambda: store.get("AUTH-513").state is StoryState.DONE, message="AUTH-513 done")
    reviewed = git(clone_of(settings), "rev-parse", "wave/AUTH-513-qa")
    del before["refs/heads/wave/AUTH-513"]
    assert refs(origin) == {**before, "refs/heads/wave/AUTH-513": reviewed}
    assert [r[:2] for r in cto_results(store, "AUTH-513")] == [
        ("offline", "HOLD"),
        ("human", "held"),
        ("human", "GO"),
    ]
    assert cto_results(store, "AUTH-513")[2][2] == "fine by me"


def test_approving_a_hold_inside_the_review_asks_the_cto_agent_again_as_before(
    procs: Processes, store: StoryStore, settings: Settings, origin: Path
) -> None:
    # Given a story held inside its CTO stage, as a budget stop holds it (the stage's result says hold)
    for role in ("pm", "fe", "be", "qa"):
        procs.worker("auth", role)
    procs.supervisor()
    store.enqueue([Story(id="AUTH-514", title="Sign in")], load_domains(settings.domains_dir))
    wait_until(lambda: store.get("AUTH-514").state is StoryState.REVIEWING, message="AUTH-514 reviewing")
    budget = "budget: story AUTH-514 would exceed $0.50 (wave budget grant, then wave approve)"
    held = StageResult(ok=False, hold=True, error=budget, agent="llm", worker="w", job="j")
    store.record_result("AUTH-514", 1, Role.CTO, 1, job="j", result=held)
    wait_until(lambda: store.get("AUTH-514").state is StoryState.HELD, message="AUTH-514 held")

    # When a human approves it and a CTO worker runs
    assert run_wave(settings, "approve", "AUTH-514").returncode == 0
    procs.worker("auth", "cto")

    # Then the CTO agent reviews again (no human GO) and its GO delivers as always
    wait_until(lambda: store.get("AUTH-514").state is StoryState.DONE, message="AUTH-514 done")
    assert store.get("AUTH-514").approved == ""
    assert [r[:2] for r in cto_results(store, "AUTH-514")] == [("llm", "held"), ("offline", "GO")]
    assert "refs/heads/wave/AUTH-514" in refs(origin)
    assert "approved:" not in run_wave(settings, "status", "AUTH-514").stdout


def test_with_no_remote_the_branch_stays_in_the_clone_and_status_says_where(
    procs: Processes, store: StoryStore, settings: Settings, tmp_path: Path, domains_dir: Path
) -> None:
    origin = make_origin(tmp_path)
    point_auth_at(domains_dir, origin, '\n[delivery]\nremote = ""\n')
    before = refs(origin)

    run_story(procs, store, settings, "AUTH-503", StoryState.DONE)

    clone = clone_of(settings)
    assert refs(origin) == before
    assert worktrees(clone) == [str(clone)]
    reviewed = git(clone, "rev-parse", "wave/AUTH-503-qa")
    shown = run_wave(settings, "status", "AUTH-503").stdout
    assert f"kept in {clone.resolve()} as wave/AUTH-503-qa at {reviewed}" in shown
    assert '[delivery] remote = ""' in shown


def test_status_lists_the_stages_in_pipeline_order_round_by_round(
    store: StoryStore, settings: Settings, domains: Domains
) -> None:
    store.enqueue([Story(id="AUTH-504", title="Order")], domains)
    stages = [
        (0, Role.PM),
        *((n, r) for n in (1, 2, 10) for r in (Role.FE, Role.BE, Role.QA)),
        (10, Role.CTO),
    ]
    for round_, role in stages:
        output = {"summary": f"{role.value} of {round_}"}
        result = StageResult(
            ok=True, agent="offline", worker="w", job=f"j{round_}{role.value}", output=output
        )
        store.record_result("AUTH-504", round_, role, 1, job=f"j{round_}{role.value}", result=result)

    shown = run_wave(settings, "status", "AUTH-504").stdout

    listed = [line.split()[0] for line in shown.splitlines() if line.startswith("  r")]
    assert listed == [f"r{n}.{r.value}.a1" for n, r in stages]
    assert "llm:       0 calls (0 cache hits)" in shown  # a count, not the list of calls


# Delivery itself, on a workspace without the pipeline ---------------------------------------------
def reviewed_story(workspace: Workspace, story_id: str) -> str:
    """What FE, BE and QA leave: a commit on each of FE and BE, merged on the QA branch."""
    for role in ("fe", "be"):
        tree = workspace.worktree(branch_name(story_id, role))
        (tree / f"{role}.txt").write_text(role)
        workspace.commit_all(tree, role)
    qa = workspace.worktree(branch_name(story_id, "qa"), start="main")
    workspace.merge(qa, branch_name(story_id, "fe"), branch_name(story_id, "be"))
    return git(qa, "rev-parse", "HEAD")


def test_a_retried_delivery_finds_its_branch_at_the_same_commit_and_succeeds(
    settings: Settings, origin: Path
) -> None:
    workspace = Workspace(load_domains(settings.domains_dir).get("auth"), settings.data_dir)
    head = reviewed_story(workspace, "AUTH-505")

    first = deliver(workspace, "AUTH-505")
    again = deliver(workspace, "AUTH-505")  # the stage ran again after its worker died, say

    assert first == again
    assert refs(origin)["refs/heads/wave/AUTH-505"] == head


class StaleView(Workspace):
    """A workspace whose first look at the remote branch predates someone else's push of it."""

    looked = False

    def remote_branch(self, remote: str, branch: str) -> str | None:
        if not self.looked:
            self.looked = True
            return None
        return super().remote_branch(remote, branch)


def test_a_branch_made_between_the_look_and_the_push_is_not_moved_even_by_a_fast_forward(
    settings: Settings, origin: Path
) -> None:
    workspace = StaleView(load_domains(settings.domains_dir).get("auth"), settings.data_dir)
    reviewed_story(workspace, "AUTH-511")
    git(origin, "branch", "wave/AUTH-511", "main")  # an ancestor: a plain push would fast-forward it
    before = refs(origin)

    with pytest.raises(HoldStory, match="wave/AUTH-511 already exists on origin"):
        deliver(workspace, "AUTH-511")

    assert refs(origin) == before


def test_a_remote_the_clone_does_not_have_holds_the_story_naming_it(
    settings: Settings, tmp_path: Path, domains_dir: Path
) -> None:
    point_auth_at(domains_dir, make_origin(tmp_path), '\n[delivery]\nremote = "upstream"\n')
    workspace = Workspace(load_domains(settings.domains_dir).get("auth"), settings.data_dir)
    reviewed_story(workspace, "AUTH-506")

    with pytest.raises(HoldStory, match="has no remote 'upstream'"):
        deliver(workspace, "AUTH-506")


def test_the_remote_default_branch_is_never_pushed_even_when_named_wave_id(
    settings: Settings, origin: Path
) -> None:
    git(origin, "branch", "wave/AUTH-508", "main")
    git(origin, "symbolic-ref", "HEAD", "refs/heads/wave/AUTH-508")  # a remote whose default is ours
    workspace = Workspace(load_domains(settings.domains_dir).get("auth"), settings.data_dir)
    reviewed_story(workspace, "AUTH-508")
    before = refs(origin)

    with pytest.raises(HoldStory, match="wave/AUTH-508 is the default branch of origin"):
        deliver(workspace, "AUTH-508")

    assert refs(origin) == before


def test_an_unreachable_remote_holds_the_story_with_gits_reason_and_keeps_the_worktrees(
    settings: Settings, origin: Path
) -> None:
    workspace = Workspace(load_domains(settings.domains_dir).get("auth"), settings.data_dir)
    reviewed_story(workspace, "AUTH-509")
    shutil.rmtree(origin)  # the server went away after the clone was made

    with pytest.raises(HoldStory, match=r"delivery of wave/AUTH-509 to origin failed .*fix it") as held:
        deliver(workspace, "AUTH-509")

    assert "\n" not in str(held.value)
    assert len(worktrees(workspace.clone)) == 4  # the clone and the story's three, for a look


def test_the_shipped_sample_folder_keeps_its_result_in_the_clone(
    settings: Settings, domains: Domains
) -> None:
    workspace = Workspace(domains.get("auth"), settings.data_dir)
    head = reviewed_story(workspace, "AUTH-507")

    delivery = deliver(workspace, "AUTH-507")

    assert (delivery.remote, delivery.branch, delivery.commit) == ("", "wave/AUTH-507-qa", head)
    assert "is a folder, not a git repository" in delivery.note
    assert worktrees(workspace.clone) == [str(workspace.clone)]


def test_the_noop_agent_of_the_benchmarks_delivers_nothing_and_touches_no_git(
    settings: Settings, domains: Domains
) -> None:
    stage = StageInput(
        story=Story(id="AUTH-510", title="x"),
        domain=domains.get("auth"),
        role=Role.CTO,
        round=1,
        attempt=1,
        worker="t",
        data_dir=settings.data_dir,
    )
    review = Review(agent="noop", decision=Decision.GO, reasons=["noop"])

    assert after_review(stage, review, NoopAgent.label) == review
    assert not (settings.data_dir / "repos").exists()


# The setting --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("section", "fragment"),
    [
        ('remote = "--upload-pack=touch /tmp/x"', "delivery.remote: Value error, '--upload-pack"),
        ('remote = "https://example.com/r.git"', "is not a remote name"),
        ("remote = 5", "delivery.remote: Input should be a valid string"),
        ("push = true", "delivery.push: Extra inputs are not permitted"),
    ],
)
def test_a_malformed_delivery_section_is_refused_in_one_line(
    domains_dir: Path, section: str, fragment: str
) -> None:
    toml = domains_dir / "auth" / DOMAIN_FILE
    toml.write_text(toml.read_text() + f"\n[delivery]\n{section}\n")

    with pytest.raises(ConfigError) as refused:
        load_domains(domains_dir)

    assert fragment in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize(
    ("section", "remote"),
    [("", "origin"), ('[delivery]\nremote = ""', ""), ('[delivery]\nremote = "up"', "up")],
)
def test_a_git_repository_delivers_to_origin_unless_the_domain_says_otherwise(
    tmp_path: Path, domains_dir: Path, section: str, remote: str
) -> None:
    point_auth_at(domains_dir, make_origin(tmp_path), f"\n{section}\n")

    assert load_domains(domains_dir).get("auth").delivery_remote() == remote
