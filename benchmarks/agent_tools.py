"""The agents' tool loop: what a `run` tool call adds to its command, and what the loop adds per model call.

(a) run tool: the same command, interleaved, (1) as a bare subprocess of the bwrap invocation
    (`subprocess.run` of `BwrapSandbox().wrap(argv)`), (2) as the model's `run` tool call through
    the loop's `call_tool` (allow-all gate, middleware, argument validation, `commands.run_in`:
    setpriv, output cap). Two commands: argv `["true"]` and the shell line `echo hi`.
    Target: <= 25 ms p50 added.
(b) loop overhead per model call: the real `ToolLoop` with the real `LLMClient` and anthropic SDK
    against the local Messages API (in a process of its own, scripted to read a file in windows for
    39 turns and finish on the 40th), on a real redis-server. Per iteration: wall time minus the
    time in the provider (`LLMResponse.latency_ms`), in Redis (every send and reply on the client's
    connections) and in the tools (timed by a middleware). Target: <= 5 ms p50.

    .venv/bin/python benchmarks/agent_tools.py               # about a minute
    .venv/bin/python benchmarks/agent_tools.py --runs 20 --loops 2 --profile
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from redis.connection import Connection

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from servers.anthropic_server import Reply  # noqa: E402

from wavefleet import logs  # noqa: E402
from wavefleet.config import AnthropicSettings, LLMSettings  # noqa: E402
from wavefleet.connection import connect  # noqa: E402
from wavefleet.domains import load_domains  # noqa: E402
from wavefleet.lifecycle import Role  # noqa: E402
from wavefleet.llm.client import LLMClient  # noqa: E402
from wavefleet.llm.types import LLMRequest, LLMResponse, TaskKind, ToolCall, ToolResult  # noqa: E402
from wavefleet.sandbox import BwrapSandbox  # noqa: E402
from wavefleet.store import StoryStore  # noqa: E402
from wavefleet.stories import Story  # noqa: E402
from wavefleet.testing import fast_settings, redis_server  # noqa: E402
from workers.agent.assemble import context_for  # noqa: E402
from workers.agent.context import AgentContext, LoopLimits  # noqa: E402
from workers.agent.events import StoryEventSink  # noqa: E402
from workers.agent.loop import ToolLoop  # noqa: E402
from workers.agent.middleware import Middleware  # noqa: E402
from workers.agent.tools import file_tools, run_tool  # noqa: E402
from workers.roles import StageInput  # noqa: E402

RUN_TARGET_MS = 25.0
LOOP_TARGET_MS = 5.0
TURNS = 40
SYSTEM = "You are the backend developer of the auth team. Keep every change small and tested. " * 60


class Done(BaseModel):
    summary: str
    files: list[str]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def scripted_model(server: str) -> Any:
    """The servers' responder (run.py --respond-with): read `big.txt` in windows, finish at turn 40."""

    def respond(body: dict[str, Any]) -> Reply:
        turn = sum(1 for m in body.get("messages", []) if m.get("role") == "assistant")
        if turn >= TURNS - 1:
            return Reply(text="", tool_use=[("finish", {"summary": "done", "files": []})])
        window = {"path": "big.txt", "offset": turn * 400, "limit": 400}
        return Reply(text="", tool_use=[("read_file", window)])

    return respond


# (a) ---------------------------------------------------------------------------------------------
def bench_run(tree: Path, ctx: AgentContext, runs: int) -> dict[str, Any]:
    sandbox = BwrapSandbox()
    loop = ToolLoop(ctx, [run_tool(sandbox, tree, ctx.limits)], Done, TaskKind.CODE_GENERATION)
    figures = {}
    for label, argv, command in (
        ("true (argv)", ["true"], ["true"]),
        ("echo hi (sh -c)", ["sh", "-c", "echo hi"], "echo hi"),
    ):
        invocation = sandbox.wrap(argv, tree)
        call = ToolCall(id="t", name="run", arguments={"command": command})
        bare, tool = [], []
        for i in range(runs + 3):  # three warm-up rounds, not counted
            started = time.perf_counter()
            done = subprocess.run(
                invocation.argv, cwd=invocation.cwd, env=invocation.env, capture_output=True, check=False
            )
            middle = time.perf_counter()
            result = loop.call_tool(call)
            ended = time.perf_counter()
            if done.returncode != 0 or result.is_error or not result.content.startswith("exit code 0"):
                raise SystemExit(f"{label}: failed: {done.stderr!r} {result.content!r}")
            if i >= 3:
                bare.append((middle - started) * 1000)
                tool.append((ended - middle) * 1000)
        figures[label] = {
            "bare_p50": statistics.median(bare),
            "bare_p95": percentile(bare, 0.95),
            "tool_p50": statistics.median(tool),
            "tool_p95": percentile(tool, 0.95),
            "added_p50": statistics.median(tool) - statistics.median(bare),
        }
    return figures


# (b) ---------------------------------------------------------------------------------------------
class TimedConnection(Connection):
    """A Redis connection that adds the time of every send and reply to `spent_s`."""

    spent_s = 0.0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        started = time.perf_counter()
        try:
            super().send_packed_command(command, check_health)
        finally:
            TimedConnection.spent_s += time.perf_counter() - started

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return super().read_response(*args, **kwargs)
        finally:
            TimedConnection.spent_s += time.perf_counter() - started


class Clock(Middleware):
    """Times each model call's provider share, Redis share and each tool call."""

    def __init__(self) -> None:
        self.tool_s = 0.0
        # per iteration: wall, provider, Redis, tools, the whole model call (client included)
        self.iterations: list[tuple[float, float, float, float, float]] = []
        self._mark = (0.0, 0.0, 0.0)
        self._tool_started = 0.0

    def before_model_call(self, stage: StageInput, request: LLMRequest) -> None:
        now = time.perf_counter()
        if self._mark[0]:
            self._close(now)
        self._mark = (now, TimedConnection.spent_s, self.tool_s)
        self._provider_ms = 0.0

    def after_model_call(self, stage: StageInput, request: LLMRequest, response: LLMResponse) -> None:
        self._provider_ms = response.latency_ms
        self._model_ms = (time.perf_counter() - self._mark[0]) * 1000

    def before_tool_call(self, stage: StageInput, call: ToolCall) -> None:
        self._tool_started = time.perf_counter()

    def after_tool_call(self, stage: StageInput, call: ToolCall, result: ToolResult) -> None:
        self.tool_s += time.perf_counter() - self._tool_started

    def _close(self, now: float) -> None:
        started, redis_before, tools_before = self._mark
        self.iterations.append(
            (
                (now - started) * 1000,
                self._provider_ms,
                (TimedConnection.spent_s - redis_before) * 1000,
                (self.tool_s - tools_before) * 1000,
                self._model_ms,
            )
        )

    def finish(self) -> None:
        self._close(time.perf_counter())
        self._mark = (0.0, 0.0, 0.0)


def context(settings: Any, client: LLMClient, store: StoryStore, story: str, clock: Clock) -> AgentContext:
    domains = load_domains(settings.domains_dir)
    store.enqueue([Story(id=story, title="bench")], domains)
    stage = StageInput(
        story=store.get(story).story,
        domain=domains.get("auth"),
        role=Role.BE,
        round=1,
        attempt=1,
        worker="bench",
        data_dir=settings.data_dir,
    )
    limits = LoopLimits(max_iterations=TURNS)
    return context_for(
        stage, client, BwrapSandbox(), events=StoryEventSink(store, stage), limits=limits, middleware=[clock]
    )


def bench_loop(settings: Any, tree: Path, loops: int, profile: bool) -> tuple[dict[str, float], str]:
    redis = connect(settings)
    redis.connection_pool.connection_class = TimedConnection
    client = LLMClient(settings, redis)
    store = StoryStore(redis, settings.keys, 3)
    clock = Clock()
    profiler = cProfile.Profile() if profile else None
    for n in range(loops + 1):  # the first loop warms connections and imports: not counted
        ctx = context(settings, client, store, f"AUTH-{n + 1:03d}", clock)
        loop = ToolLoop(ctx, file_tools(tree, ctx.limits), Done, TaskKind.CODE_GENERATION)
        if profiler and n:
            profiler.enable()
        loop.run(SYSTEM, "Read big.txt.")
        if profiler:
            profiler.disable()
        clock.finish()
        if n == 0:
            clock.iterations.clear()
    overhead = [wall - provider - redis_ms - tools for wall, provider, redis_ms, tools, _ in clock.iterations]
    alone = [wall - tools - model for wall, _, _, tools, model in clock.iterations]
    figures = {
        "iterations": len(overhead),
        "overhead_p50": statistics.median(overhead),
        "overhead_p95": percentile(overhead, 0.95),
        "loop_alone_p50": statistics.median(alone),
        "loop_alone_p95": percentile(alone, 0.95),
        "wall_p50": statistics.median(i[0] for i in clock.iterations),
        "provider_p50": statistics.median(i[1] for i in clock.iterations),
        "redis_p50": statistics.median(i[2] for i in clock.iterations),
        "tools_p50": statistics.median(i[3] for i in clock.iterations),
    }
    text = ""
    if profiler:
        with tempfile.TemporaryFile("w+") as sink:
            pstats.Stats(profiler, stream=sink).sort_stats("cumulative").print_stats(25)
            sink.seek(0)
            text = sink.read()
    return figures, text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100, help="run-tool calls of each command (default 100)")
    parser.add_argument("--loops", type=int, default=10, help=f"tool loops of {TURNS} calls (default 10)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the measured loops")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logs.setup("bench", level="warning")  # a worker logs each call at info: measured, not printed
    with tempfile.TemporaryDirectory() as scratch, redis_server(Path(scratch) / "redis") as server:
        tree = Path(scratch) / "tree"
        tree.mkdir()
        (tree / "big.txt").write_text("".join(f"line {i:05d} of the file\n" for i in range(2000)))
        servers = subprocess.Popen(
            [
                sys.executable,
                str(REPO / "tests" / "servers" / "run.py"),
                "--respond-with",
                f"{Path(__file__).resolve()}:scripted_model",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert servers.stdout is not None
            where = json.loads(servers.stdout.readline())
            settings = fast_settings(server, Path(scratch) / "data", REPO / "domains").model_copy(
                update={
                    "anthropic": AnthropicSettings(
                        api_key="test-anthropic-key", base_url=where["anthropic_url"], max_retries=0
                    ),
                    "llm": LLMSettings(
                        offline="never", anthropic_requests_per_min=0, anthropic_tokens_per_min=0
                    ),
                }
            )
            loop_figures, profile = bench_loop(settings, tree, args.loops, args.profile)
            redis = connect(settings)
            store = StoryStore(redis, settings.keys, 3)
            ctx = context(settings, LLMClient(settings, redis), store, "AUTH-999", Clock())
            run_figures = bench_run(tree, ctx, args.runs)
        finally:
            servers.communicate(timeout=30)
    return report(run_figures, loop_figures, profile, args.json)


def report(run: dict[str, Any], loop: dict[str, float], profile: str, as_json: bool) -> int:
    within = all(f["added_p50"] <= RUN_TARGET_MS for f in run.values()) and (
        loop["overhead_p50"] <= LOOP_TARGET_MS
    )
    if as_json:
        print(json.dumps({"run": run, "loop": loop, "within_targets": within}, indent=2))
        return 0 if within else 1
    print(f"(a) run tool call vs bare bwrap subprocess (target: <= {RUN_TARGET_MS:g} ms added at p50)")
    print(
        f"  {'command':<18} {'bare p50':>9} {'bare p95':>9} {'tool p50':>9} {'tool p95':>9} {'added p50':>10}"
    )
    for label, f in run.items():
        print(
            f"  {label:<18} {f['bare_p50']:>9.1f} {f['bare_p95']:>9.1f} {f['tool_p50']:>9.1f} "
            f"{f['tool_p95']:>9.1f} {f['added_p50']:>+10.1f}"
        )
    print(
        f"\n(b) tool loop overhead per model call, {loop['iterations']:.0f} iterations "
        f"(target <= {LOOP_TARGET_MS:g} ms p50)"
    )
    print(
        f"  overhead p50 {loop['overhead_p50']:.2f} ms, p95 {loop['overhead_p95']:.2f} ms; "
        f"per iteration p50: wall {loop['wall_p50']:.1f}, provider {loop['provider_p50']:.1f}, "
        f"Redis {loop['redis_p50']:.2f}, tools {loop['tools_p50']:.2f} ms"
    )
    print(
        f"  of which the loop alone (outside the LLM client's call): p50 {loop['loop_alone_p50']:.2f} ms, "
        f"p95 {loop['loop_alone_p95']:.2f} ms"
    )
    if profile:
        print("\nprofile of the measured loops (cumulative):\n" + profile)
    print("\nwithin targets" if within else "\nTARGET MISSED")
    return 0 if within else 1


if __name__ == "__main__":
    raise SystemExit(main())
