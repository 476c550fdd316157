"""Which agent kind plays the roles, refusals at worker start, and QA's merge conflict report."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from contexts import bare_context
from pydantic import SecretStr

from wavefleet.config import Settings
from wavefleet.domains import load_domains
from wavefleet.lifecycle import Event, EventKind, Role
from wavefleet.messages import StageResult
from wavefleet.sandbox import BwrapSandbox
from wavefleet.store import StoryStore
from wavefleet.stories import Story
from wavefleet.testing import run_wave
from workers.git import Workspace, branch_name, git
from workers.offline import OfflineAgent
from workers.roles import StageInput


def with_key(settings: Settings, **changes: object) -> Settings:
    anthropic = settings.anthropic.model_copy(update={"api_key": SecretStr("k")})
    return settings.model_copy(update={"anthropic": anthropic, **changes})


@pytest.mark.parametrize(
    ("agent", "keyed", "offline", "kind"),
    [
        ("auto", False, "auto", "offline"),
        ("auto", True, "auto", "llm"),
        ("auto", True, "always", "offline"),
        ("offline", True, "auto", "offline"),
        ("noop", True, "auto", "noop"),
        ("llm", True, "never", "llm"),
    ],
)
def test_auto_is_llm_only_with_a_key_and_offline_not_forced(
    settings: Settings, agent: str, keyed: bool, offline: str, kind: str
) -> None:
    llm = settings.llm.model_copy(update={"offline": offline})
    chosen = settings.model_copy(update={"agent": agent, "llm": llm})
    assert (with_key(chosen) if keyed else chosen).agent_kind == kind


def refusal(settings: Settings) -> str:
    proc = run_wave(settings, "worker", "--domain", "auth", "--role", "be", "--burst", timeout_s=60)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_a_worker_refuses_llm_without_a_provider_key_in_one_line(settings: Settings) -> None:
    line = refusal(settings.model_copy(update={"agent": "llm"}))
    assert "WAVE_AGENT=llm" in line and "WAVE_ANTHROPIC__API_KEY" in line


def test_a_worker_refuses_llm_when_offline_replies_are_forced(settings: Settings) -> None:
    llm = settings.llm.model_copy(update={"offline": "always"})
    line = refusal(with_key(settings, agent="llm", llm=llm))
    assert "WAVE_LLM__OFFLINE=always" in line


def test_a_worker_refuses_to_start_without_its_roles_prompt(settings: Settings, domains_dir: Path) -> None:
    prompt = domains_dir / "auth" / "prompts" / "be.md"
    prompt.unlink()
    line = refusal(with_key(settings, agent="llm"))
    assert str(prompt) in line and "be prompt" in line


def test_a_merge_conflict_between_fe_and_be_fails_qa_naming_the_file(
    settings: Settings, store: StoryStore, tmp_path: Path
) -> None:
    # Given FE and BE branches that both rewrote the same file differently
    domain = load_domains(settings.domains_dir).get("auth")
    story = Story(id="AUTH-902", title="conflict")
    workspace = Workspace(domain, settings.data_dir)
    for role, text in (("fe", "fe's version\n"), ("be", "be's version\n")):
        tree = workspace.worktree(branch_name(story.id, role))
        (tree / "README.md").write_text(text)
        (tree / f"{role}.txt").write_text(role)
        workspace.commit_all(tree, role)
    stage = StageInput(
        story=story, domain=domain, role=Role.QA, round=1, attempt=1, worker="t", data_dir=settings.data_dir
    )

    # When QA runs (the offline agent: the merge is shared by every agent kind)
    report = OfflineAgent(Role.QA).run(stage, bare_context(stage, BwrapSandbox()))

    # Then it fails, naming the conflicting file, and leaves no merge half done
    assert not report.passed
    assert "merge conflict" in report.summary and "README.md" in report.summary
    qa_tree = workspace.trees / branch_name(story.id, "qa").replace("/", "_")
    assert git(qa_tree, "status", "--porcelain") == ""


def test_status_shows_the_agent_kind_and_models_of_each_stage(
    settings: Settings, store: StoryStore, tmp_path: Path
) -> None:
    domains = load_domains(settings.domains_dir)
    store.enqueue([Story(id="AUTH-903", title="x")], domains)
    store.apply("AUTH-903", Event(EventKind.ROUTE))
    output = {"kind": "plan", "agent": "llm anthropic claude-x", "tasks": [], "summary": "planned"}
    result = StageResult(ok=True, agent="llm", worker="AUTH-PM-1", job="AUTH-903_r0_pm_a1", output=output)
    store.record_result("AUTH-903", 0, Role.PM, 1, job="AUTH-903_r0_pm_a1", result=result)

    text = run_wave(settings, "status", "AUTH-903")

    assert text.returncode == 0, text.stderr
    assert "[llm anthropic claude-x] AUTH-PM-1" in text.stdout


@pytest.mark.parametrize("link", ["file", "folder", "hard"])
def test_a_prompt_linked_to_a_secret_is_refused_and_never_read(
    settings: Settings, domains_dir: Path, tmp_path: Path, link: str
) -> None:
    # Given a domain whose BE prompt leads to a secret of the fleet (the prompt goes to the provider)
    secret = tmp_path / "passwords.json"
    secret.write_text('{"admin": "SECRET-PASSWORD"}')
    prompts = domains_dir / "auth" / "prompts"
    if link == "folder":
        secret_dir = tmp_path / "secrets"
        secret_dir.mkdir()
        (secret_dir / "be.md").write_text("SECRET-PASSWORD")
        shutil.rmtree(prompts)
        prompts.symlink_to(secret_dir)
    else:
        (prompts / "be.md").unlink()
        (prompts / "be.md").symlink_to(secret) if link == "file" else os.link(secret, prompts / "be.md")

    # When a worker starts with the LLM agents, then Then it refuses in one line, showing none of it
    line = refusal(with_key(settings, agent="llm"))
    assert "be prompt" in line and "SECRET" not in line


def test_a_worker_refuses_a_domain_route_to_a_provider_no_one_registered(
    settings: Settings, domains_dir: Path
) -> None:
    # Given the auth domain routing planning to a provider the fleet does not have
    toml = domains_dir / "auth" / "domain.toml"
    toml.write_text(toml.read_text() + '\n[models.routes]\nplanning = "mistral"\n')

    # When a worker starts with the LLM agents, Then it refuses in one line naming the file and name
    line = refusal(with_key(settings, agent="llm"))
    assert "domain.toml [models.routes]" in line and "unknown provider 'mistral'" in line
