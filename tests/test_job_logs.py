"""Logs of real processes: each job's lines carry its story, stage and round (structlog's lines,
rq's and httpx's alike, in one JSON shape), the next job's do not carry the last one's, and a
secret from the settings never reaches a log file."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers.anthropic_server import AnthropicServer, Reply

from wavefleet.config import AnthropicSettings, Settings
from wavefleet.domains import Domains
from wavefleet.lifecycle import StoryState
from wavefleet.store import StoryStore
from wavefleet.stories import Story
from wavefleet.testing import TEST_PASSWORD, Processes, env_of, wait_until

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
API_KEY = "sk-ant-logs-test-0123456789abcdef"  # the settings' SecretStr the redactor must know


@pytest.fixture
def anthropic() -> Iterator[AnthropicServer]:
    server = AnthropicServer(api_key=API_KEY).start()
    yield server
    server.stop()


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def story(story_id: str) -> Story:
    return Story(id=story_id, title=f"Story {story_id}", acceptance_criteria=("it works",))


def test_a_real_workers_job_lines_carry_its_story_stage_and_round_and_never_a_secret(
    settings: Settings, anthropic: AnthropicServer, store: StoryStore, domains: Domains, tmp_path: Path
) -> None:
    # Given a PM worker whose model provider refuses every call with a message that echoes the key
    # (as a misbehaving proxy might): the stage fails, its error carrying the key
    echoed = json.dumps({"type": "error", "error": {"type": "invalid_request_error", "message": API_KEY}})
    anthropic.respond_with(lambda _body: Reply(status=400, raw=echoed.encode()))
    live = settings.model_copy(
        update={
            "anthropic": AnthropicSettings(api_key=API_KEY, base_url=anthropic.url, max_retries=0),
            "agent": "llm",
            "log_level": "info",
        }
    )
    procs = Processes(live, tmp_path / "logs")
    try:
        procs.worker("auth", "pm")
        procs.supervisor()
        # When two stories run one after the other on it
        for story_id in ("AUTH-001", "AUTH-002"):
            store.enqueue([story(story_id)], domains)
            wait_until(
                lambda s=story_id: store.get(s).state is StoryState.FAILED,  # type: ignore[misc]
                timeout_s=60,
                message=f"{story_id} to fail",
                diagnose=procs.logs,
            )
    finally:
        procs.stop_all()
    worker = lines(tmp_path / "logs" / "auth-pm-1.log")

    # Then each job's lines, ours and the libraries', carry its story, stage and round
    for story_id in ("AUTH-001", "AUTH-002"):
        job = f"{story_id}_r0_pm_a1"
        ours = [x for x in worker if x["event"] == "stage started" and x.get("job") == job]
        http = [x for x in worker if x.get("logger", "").startswith("httpx") and x.get("story") == story_id]
        rq_done = [
            x for x in worker if x.get("logger") == "rq.worker" and x["event"].endswith(f"Job OK ({job})")
        ]
        for found in (ours, http, rq_done):
            assert found and {(x["story"], x["stage"], x["round"]) for x in found} == {(story_id, "pm", 0)}, (
                worker
            )
        assert {"level", "timestamp", "worker"} <= set(http[0]) and http[0]["worker"] == "AUTH-PM-1"
        # and rq's line taking the job off the queue (the worker's loop, between jobs) carries no story
        taken = [
            x for x in worker if x.get("logger") == "rq.worker" and x["event"].endswith(f"round 0 ({job})")
        ]
        assert taken and all("story" not in x for x in taken), taken
    # and no line about the second job carries the first one's story
    second = [x for x in worker if "AUTH-002" in json.dumps(x)]
    assert second and all(x.get("story") in (None, "AUTH-002") for x in second), second
    # and the key the provider echoed was redacted from every file, not merely left out
    raw = b"".join(p.read_bytes() for p in (tmp_path / "logs").glob("*.log"))
    assert API_KEY.encode() not in raw and TEST_PASSWORD.encode() not in raw
    assert b"[redacted]" in raw


def test_a_secret_from_the_settings_logged_on_purpose_never_reaches_the_log_file(
    settings: Settings, tmp_path: Path
) -> None:
    live = settings.model_copy(update={"anthropic": AnthropicSettings(api_key=API_KEY)})
    log = tmp_path / "proc.log"
    with log.open("wb") as sink:
        done = subprocess.run(
            [sys.executable, str(HERE / "log_proc.py"), API_KEY],
            env=env_of(live),
            stderr=sink,
            check=False,
            timeout=60,
        )

    raw = log.read_bytes()
    assert done.returncode == 0, raw.decode(errors="replace")
    assert API_KEY.encode() not in raw, raw.decode(errors="replace")
    written = lines(log)
    by_event = {x["event"]: x for x in written}
    assert by_event["the key is [redacted]"]["level"] == "warning"
    assert by_event["a field"]["key"] == "[redacted]"
    assert by_event["a field"]["nested"] == {"headers": [["x-api-key", "Bearer [redacted]"]]}
    assert "invalid key [redacted]" in by_event["an exception"]["exception"]
    assert by_event["an exception"]["error"] == "the provider said: invalid key [redacted]"
    stdlib = by_event["stdlib line: [redacted]"]
    assert stdlib["logger"] == "httpx" and "invalid key [redacted]" in stdlib["exception"]
    assert by_event["done"]["story"] == "AUTH-001"
    assert len(written) == 5, written  # one line each: no duplicate from a second handler
