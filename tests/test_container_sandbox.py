"""The container sandbox's worker side, without Docker: a real Redis, and a small runner in a thread
that answers the protocol (a test double for `wave sandbox` only: what is tested is how workers ask,
wait and map replies; the real runner's own tests are under tests/containers/)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from contexts import bare_context
from pydantic import BaseModel
from redis import Redis

from wavefleet.config import Settings
from wavefleet.connection import connect
from wavefleet.domains import Domains
from wavefleet.errors import ConfigError, SandboxLimitError, SandboxUnavailableError
from wavefleet.lifecycle import Role, StoryState
from wavefleet.llm.types import TaskKind, ToolCall
from wavefleet.sandbox import ContainerSandbox, sandbox_for
from wavefleet.sandbox.fleet import NO_RUNNER, probe
from wavefleet.sandbox.protocol import (
    REQUEST,
    ExecReply,
    ExecRequest,
    PingReply,
    PingRequest,
    ReleaseReply,
    ReleaseRequest,
    SandboxUsage,
    StageLabels,
)
from wavefleet.store import StoryStore
from wavefleet.stories import Story
from wavefleet.testing import Processes, run_wave, wait_until
from workers import commands
from workers.agent.loop import ToolLoop
from workers.agent.tools import run_tool
from workers.roles import StageInput

LABELS = StageLabels(story="AUTH-001", domain="auth", role="qa", round=1, attempt=1, job="j1", worker="w1")
IMAGE = "wave-sandbox:test"


class Done(BaseModel):
    summary: str


Handler = Callable[[ExecRequest | ReleaseRequest | PingRequest], ExecReply | ReleaseReply | PingReply | None]


class FakeRunner(threading.Thread):
    """Beats like `wave sandbox` and answers each request with `handler` (None: the reply is lost)."""

    def __init__(self, redis: Redis, settings: Settings, handler: Handler) -> None:
        super().__init__(daemon=True)
        self.redis, self.keys, self.handler = redis, settings.keys, handler
        self.received: list[ExecRequest | ReleaseRequest | PingRequest] = []
        self.stopping = threading.Event()

    def beat(self) -> None:
        self.redis.set(self.keys.sandbox_runner(), json.dumps({"name": "fake", "image": IMAGE}), px=2000)

    def run(self) -> None:
        while not self.stopping.is_set():
            self.beat()
            got = self.redis.blpop([self.keys.sandbox_requests()], timeout=0.1)
            if got is None:
                continue
            request = REQUEST.validate_json(got[1])
            self.received.append(request)
            reply = self.handler(request)
            if reply is not None:
                key = self.keys.sandbox_reply(request.request_id)
                self.redis.lpush(key, reply.model_dump_json())
                self.redis.expire(key, 60)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=5)
        self.redis.delete(self.keys.sandbox_runner())


@pytest.fixture
def runner(redis: Redis, settings: Settings) -> Iterator[Callable[[Handler], FakeRunner]]:
    started: list[FakeRunner] = []

    def start(handler: Handler) -> FakeRunner:
        fake = FakeRunner(connect(settings), settings, handler)
        fake.beat()
        fake.start()
        started.append(fake)
        return fake

    yield start
    for fake in started:
        fake.stop()


def answering(exec_reply: ExecReply, usage: SandboxUsage | None = None) -> Handler:
    def handle(request: ExecRequest | ReleaseRequest | PingRequest) -> ExecReply | ReleaseReply | PingReply:
        if isinstance(request, ExecRequest):
            return exec_reply
        if isinstance(request, ReleaseRequest):
            return ReleaseReply(usage=usage)
        return PingReply(image=IMAGE, engine="20.10")

    return handle


def bound(settings: Settings, redis: Redis, **container: float) -> ContainerSandbox:
    settings = settings.model_copy(
        update={
            "sandbox": "container",
            "sandbox_container": settings.sandbox_container.model_copy(update=container),
        }
    )
    sandbox = sandbox_for(settings, redis=redis)
    assert isinstance(sandbox, ContainerSandbox)
    return sandbox.for_stage(LABELS)


def test_without_a_runner_a_command_is_unavailable_at_once_and_the_probe_refuses_in_one_line(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    sandbox = bound(settings, redis)

    started = time.monotonic()
    with pytest.raises(SandboxUnavailableError, match="no `wave sandbox` runner is alive"):
        commands.run_in(sandbox, ["true"], tmp_path, timeout_s=60, max_output_bytes=100)
    # No heartbeat: one GET decides, not the 60 s timeout plus the grace.
    assert time.monotonic() - started < 1.0
    assert redis.llen(settings.keys.sandbox_requests()) == 0  # nothing left for a runner to start late

    with pytest.raises(ConfigError) as refused:
        probe(sandbox, runner_wait_s=0.3)
    assert str(refused.value) == f"sandbox: {NO_RUNNER}"


@pytest.mark.parametrize(
    ("reply", "raised", "match"),
    [
        (ExecReply(timed_out=True), subprocess.TimeoutExpired, "timed out after 7"),
        (ExecReply(exit_code=-9, limit="pids limit (256)"), SandboxLimitError, r"pids limit \(256\)"),
        (ExecReply(error="no such image"), SandboxUnavailableError, "no such image"),
    ],
)
def test_a_reply_maps_to_what_the_local_sandboxes_callers_already_catch(
    settings: Settings,
    redis: Redis,
    runner: Callable[[Handler], FakeRunner],
    tmp_path: Path,
    reply: ExecReply,
    raised: type[Exception],
    match: str,
) -> None:
    runner(answering(reply))
    with pytest.raises(raised, match=match):
        commands.run_in(
            bound(settings, redis), ["sh", "-c", "x"], tmp_path, timeout_s=7, max_output_bytes=100
        )


def test_a_command_goes_out_with_the_stage_labels_the_container_env_and_a_user_that_is_never_root(
    settings: Settings, redis: Redis, runner: Callable[[Handler], FakeRunner], tmp_path: Path
) -> None:
    fake = runner(answering(ExecReply(exit_code=3, output="tail", truncated=True)))

    outcome = commands.run_in(
        bound(settings, redis), ["ls", "-a"], tmp_path, timeout_s=9, max_output_bytes=64
    )

    assert (outcome.exit_code, outcome.output, outcome.truncated) == (3, "tail", True)
    (sent,) = fake.received
    assert isinstance(sent, ExecRequest)
    assert (sent.argv, sent.timeout_s, sent.max_output_bytes) == (["ls", "-a"], 9, 64)
    assert sent.spec.labels == LABELS and sent.spec.worktree == str(tmp_path.resolve())
    assert not sent.spec.user.startswith("0:")
    assert sent.env["PATH"].startswith("/opt/sandbox/bin:") and sent.env["HOME"] == "/workspace"
    assert not any(name.startswith(("WAVE_", "REDIS_")) for name in sent.env)


def test_a_lost_reply_is_unavailable_after_the_timeout_and_the_grace_not_before(
    settings: Settings, redis: Redis, runner: Callable[[Handler], FakeRunner], tmp_path: Path
) -> None:
    runner(lambda request: None)  # takes every request, answers none
    sandbox = bound(settings, redis, reply_grace_s=1.0)

    started = time.monotonic()
    with pytest.raises(SandboxUnavailableError, match="did not answer"):
        commands.run_in(sandbox, ["true"], tmp_path, timeout_s=0.5, max_output_bytes=100)
    waited = time.monotonic() - started
    # timeout 0.5 + grace 1.0; the last BLPOP ends at the deadline (it is cut to what is left).
    assert 1.5 <= waited < 2.5, waited


def test_a_runner_that_stops_beating_mid_wait_is_unavailable_at_once_and_its_request_withdrawn(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    redis.set(settings.keys.sandbox_runner(), "{}", px=300)  # a runner that beats once, then dies
    sandbox = bound(settings, redis, reply_grace_s=600.0)

    started = time.monotonic()
    with pytest.raises(SandboxUnavailableError, match="stopped before answering"):
        commands.run_in(sandbox, ["true"], tmp_path, timeout_s=600, max_output_bytes=100)
    # Noticed after the BLPOP slice during which the heartbeat expired (block_s: 5 s at most).
    assert time.monotonic() - started < sandbox.block_s + 1.0
    assert redis.llen(settings.keys.sandbox_requests()) == 0


def test_a_limit_hit_by_the_run_tool_ends_the_stage_instead_of_being_a_result_the_model_reads(
    settings: Settings,
    redis: Redis,
    runner: Callable[[Handler], FakeRunner],
    tmp_path: Path,
    domains: Domains,
) -> None:
    runner(answering(ExecReply(exit_code=-9, limit="pids limit (256)")))
    stage = StageInput(
        story=Story(id="AUTH-001", title="t"),
        domain=domains.get("auth"),
        role=Role.BE,
        round=1,
        attempt=1,
        worker="w",
        data_dir=settings.data_dir,
    )
    ctx = bare_context(stage, bound(settings, redis), redis)
    tree = tmp_path / "tree"
    tree.mkdir()
    loop = ToolLoop(ctx, [run_tool(ctx.sandbox, tree, ctx.limits)], Done, TaskKind.CODE_GENERATION)

    with pytest.raises(SandboxLimitError, match=r"pids limit \(256\)"):
        # ordinary work to the safety gate (a fork bomb spelled out would be blocked before it runs):
        # the runner's reply is what hits the limit here
        loop.call_tool(ToolCall(id="c1", name="run", arguments={"command": "pytest -q tests/test_load.py"}))


def test_a_qa_stage_whose_tests_hit_a_limit_fails_the_story_and_status_shows_the_usage(
    settings: Settings,
    redis: Redis,
    store: StoryStore,
    domains: Domains,
    runner: Callable[[Handler], FakeRunner],
    tmp_path: Path,
) -> None:
    usage = SandboxUsage(
        containers=1,
        commands=1,
        cpu_s=3.2,
        peak_memory_bytes=84 * 2**20,
        wall_s=12.4,
        limits_hit=["pids limit (256)"],
    )
    fake = runner(answering(ExecReply(exit_code=-9, limit="pids limit (256)"), usage))
    container = settings.model_copy(update={"sandbox": "container"})
    procs = Processes(container, tmp_path / "logs")
    try:
        procs.team("auth")
        procs.supervisor()
        store.enqueue([Story(id="AUTH-001", title="a login page")], domains)
        wait_until(
            lambda: store.get("AUTH-001").state is StoryState.FAILED,
            timeout_s=90,
            message="AUTH-001 to fail",
            diagnose=lambda: f"{store.get('AUTH-001').state}\n{procs.logs()[-3000:]}",
        )
        fleet = run_wave(container, "status").stdout  # while the workers live
    finally:
        procs.stop_all()

    assert f"sandbox: container (runner fake, alive, image {IMAGE})" in fleet
    assert "pids limit (256)" in store.get("AUTH-001").reason
    execs = [r for r in fake.received if isinstance(r, ExecRequest)]
    assert execs and execs[-1].argv[0] == "python3"  # `{python}` is the image's, not sys.executable
    assert execs[-1].spec.labels.story == "AUTH-001" and execs[-1].spec.labels.role == "qa"
    shown = run_wave(container, "status", "AUTH-001")
    assert (
        "container: 3.2 cpu-s, peak 84 MiB, 12.4 s, 1 command in 1 container; LIMIT HIT: pids limit (256)"
        in shown.stdout
    )
    data = json.loads(run_wave(container, "status", "AUTH-001", "--json").stdout)
    qa = [r for name, r in data["results"].items() if "qa" in name]
    assert qa and qa[-1]["sandbox_usage"]["limits_hit"] == ["pids limit (256)"]
