"""Tokens per story: what one story costs through the LLM team, with prompt caching on and off.

The scripted story of tests/test_agents_e2e.py (PM plans, FE and BE write code and tests, QA fails on
a real pytest failure, FE and BE fix it, QA passes, the CTO says GO on Grok) runs on a real fleet of
worker processes, with the real `anthropic` and `xai-sdk` clients talking to the local servers of
tests/servers, which count tokens (one per 4 characters of the request's JSON) and bill at the
default prices, and simulate prompt caching (Claude: a prefix of at least 1,024 tokens up to a
`cache_control` breakpoint; Grok: a repeated leading-message prefix). Each configuration runs on a
fresh Redis, fresh servers and a fresh clone. Reports, per story and per role: model calls, input,
cache read, cache write and output tokens, and cost, from the story's own call records.

    .venv/bin/python benchmarks/story_tokens.py          # ~1-2 min on 2 cores
    .venv/bin/python benchmarks/story_tokens.py --json   # the figures as JSON
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from scripted_team import STORY, STORY_ID, ScriptedTeam  # noqa: E402
from servers.anthropic_server import AnthropicServer  # noqa: E402
from servers.xai_server import XaiServer  # noqa: E402

from wavefleet.config import AnthropicSettings, Settings, XaiSettings  # noqa: E402
from wavefleet.connection import connect  # noqa: E402
from wavefleet.domains import load_domains  # noqa: E402
from wavefleet.lifecycle import StoryState  # noqa: E402
from wavefleet.llm.accounting import story_calls  # noqa: E402
from wavefleet.store import StoryStore  # noqa: E402
from wavefleet.stories import Story  # noqa: E402
from wavefleet.testing import Processes, fast_settings, redis_server, wait_until  # noqa: E402

FIELDS = ("input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens")


def run_story(prompt_caching: bool, workdir: Path) -> dict[str, Any]:
    """One scripted story on a fresh fleet; its calls summed, in total and per role."""
    anthropic, xai = AnthropicServer(api_key="bench-a").start(), XaiServer(api_key="bench-x").start()
    team = ScriptedTeam()
    anthropic.respond_with(team.anthropic)
    xai.respond_with(team.xai)
    domains_dir = workdir / "domains"
    shutil.copytree(REPO / "domains", domains_dir, ignore=shutil.ignore_patterns("__pycache__"))
    try:
        with redis_server(workdir / "redis") as server:
            settings = fast_settings(server, workdir / "data", domains_dir, log_level="warning")
            settings = keyed(settings, anthropic, xai, prompt_caching)
            store = StoryStore(connect(settings), settings.keys, settings.pipeline.max_rounds)
            procs = Processes(settings, workdir / "logs")
            started = time.monotonic()
            try:
                procs.team("auth")
                procs.supervisor()
                store.enqueue([Story.model_validate(STORY)], load_domains(domains_dir))
                wait_until(
                    lambda: store.get(STORY_ID).state in (StoryState.DONE, StoryState.FAILED),
                    timeout_s=600,
                    interval_s=0.2,
                    message="the story to finish",
                    diagnose=lambda: procs.logs()[-4000:],
                )
            finally:
                procs.stop_all()
            record = store.get(STORY_ID)
            calls = story_calls(store.redis, settings.keys, STORY_ID)
    finally:
        anthropic.stop()
        xai.stop()
    return {
        "prompt_caching": prompt_caching,
        "state": record.state.value,
        "rounds": record.round,
        "seconds": round(time.monotonic() - started, 1),
        "total": totals(calls),
        "by_role": {role: totals([c for c in calls if c["role"] == role]) for role in roles_of(calls)},
    }


def keyed(settings: Settings, anthropic: AnthropicServer, xai: XaiServer, caching: bool) -> Settings:
    return settings.model_copy(
        update={
            "anthropic": AnthropicSettings(
                api_key="bench-a", base_url=anthropic.url, max_retries=0, prompt_caching=caching
            ),
            "xai": XaiSettings(
                api_key="bench-x", api_host=xai.host, use_insecure_channel=True, max_retries=0
            ),
        }
    )


def roles_of(calls: list[dict[str, str]]) -> list[str]:
    order = ["pm", "fe", "be", "qa", "cto"]
    return sorted({c["role"] for c in calls}, key=lambda r: order.index(r) if r in order else 99)


def totals(calls: list[dict[str, str]]) -> dict[str, Any]:
    sums: dict[str, Any] = defaultdict(int)
    for call in calls:
        for name in FIELDS:
            sums[name] += int(call[name])
    sums["calls"] = len(calls)
    sums["cost_usd"] = round(sum(float(c["cost_usd"]) for c in calls), 6)
    return dict(sums)


def table(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| prompt caching | role | calls | input | cache read | cache write | output | cost |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for run in runs:
        rows = [*run["by_role"].items(), ("**story**", run["total"])]
        for role, t in rows:
            lines.append(
                f"| {'on' if run['prompt_caching'] else 'off'} | {role} | {t['calls']} | "
                f"{t['input_tokens']:,} | {t['cache_read_tokens']:,} | {t['cache_write_tokens']:,} | "
                f"{t['output_tokens']:,} | ${t['cost_usd']:.4f} |"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    load = [os.getloadavg()[0]]
    runs = []
    for caching in (True, False):
        with tempfile.TemporaryDirectory(prefix="wave-tokens-") as tmp:
            runs.append(run_story(caching, Path(tmp)))
    load.append(os.getloadavg()[0])
    if args.json:
        print(json.dumps({"runs": runs, "load": load}, indent=2))
    else:
        print(
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.node()}, "
            f"{os.cpu_count()} CPUs, Python {platform.python_version()}, load {load[0]:.1f} -> {load[1]:.1f}"
        )
        for run in runs:
            print(
                f"prompt caching {'on' if run['prompt_caching'] else 'off'}: {run['state']} in "
                f"{run['rounds']} rounds, {run['seconds']} s"
            )
        print(table(runs))
    return 0 if all(r["state"] == StoryState.DONE.value for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
