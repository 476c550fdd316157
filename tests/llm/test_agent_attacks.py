"""Attacks on the LLM roles through what the models themselves wrote, in-process on the real client
and the local model servers (real bwrap, real git).

ATTACK tests: each fails while its hole is open and passes once it is closed.
"""

from __future__ import annotations

import json
from pathlib import Path

from redis import Redis
from servers.xai_server import Reply as XReply
from servers.xai_server import XaiServer
from test_agent_team import STORY_ID, run_role

from wavefleet.config import Settings
from wavefleet.domains import Domains
from wavefleet.lifecycle import Decision, Role
from wavefleet.sandbox import BwrapSandbox
from wavefleet.store import StoryStore
from workers.agent.context import LoopLimits
from workers.agent.team import commit_as
from workers.agent.tools import run_tool
from workers.git import Workspace, branch_name

MIB = 1 << 20


def _peak_rss_reset() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # the kernel's reset of VmHWM, the peak RSS


def _peak_rss() -> int:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def test_attack_a_diff_of_hundreds_of_megabytes_the_developers_wrote_is_not_read_whole_by_the_cto(
    live: Settings, redis: Redis, store: StoryStore, domains: Domains, xai_server: XaiServer
) -> None:
    # ATTACK: one sandboxed command writes 300 MB of text (a few GB would do the same to the host); the
    # CTO stage read the whole diff into the worker, three times its size, to show the model 200 kB
    workspace = Workspace(domains.get("auth"), live.data_dir)
    tree = workspace.worktree(branch_name(STORY_ID, "qa"))
    write = "import sys; sys.stdout.write('+a line the model wrote\\n' * 4_500_000)"
    run = run_tool(BwrapSandbox(), tree, LoopLimits())
    assert run({"command": f'for i in 1 2 3; do python3 -c "{write}" > big$i.txt; done'}).startswith(
        "exit code 0"
    )
    commit_as(tree, "WAVE be (w1) <wave-be@localhost>", f"{STORY_ID} round 1: be")
    verdict = {"decision": "HOLD", "reasons": ["too big to review"]}
    xai_server.respond_with(lambda body: XReply(text="", tool_calls=[("finish", json.dumps(verdict))]))
    _peak_rss_reset()
    before = _peak_rss()

    review = run_role(Role.CTO, live, redis, store, domains)

    grew = _peak_rss() - before
    assert grew < 100 * MIB, f"the CTO stage grew the worker by {grew // MIB} MiB for a 300 MB diff"
    assert review.decision is Decision.HOLD
    text = xai_server.requests[0]["body"]["messages"][1]["content"][0]["text"]
    shown = json.loads(text[text.index("{") :])
    assert len(shown["diff"].encode()) <= 200_000 and "first" in shown["diff_truncated"]
