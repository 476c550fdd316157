"""A stand-in fleet worker for multi-process tests: reads one JSON call per stdin line, makes it through
the real LLMClient (settings from WAVE_* variables, the fleet's Redis), prints one JSON result line."""

from __future__ import annotations

import json
import sys

from wavefleet import logs
from wavefleet.config import load_settings
from wavefleet.connection import connect
from wavefleet.errors import WaveError
from wavefleet.llm.client import LLMClient
from wavefleet.llm.types import LLMRequest, Message, TaskKind

MAX_CALLS = 1_000


def main() -> None:
    settings = load_settings()
    logs.setup("LLM-PROC", fmt="json", level="info")  # log lines to stderr: stdout carries the results
    client = LLMClient(settings, connect(settings))
    client.preload()
    print(json.dumps({"ready": True}), flush=True)
    for _, line in zip(range(MAX_CALLS), sys.stdin, strict=False):
        order = json.loads(line)
        request = LLMRequest(task=TaskKind(order["task"]), messages=(Message.user(order["prompt"]),))
        try:
            reply = client.call(request)
            result = {
                "provider": reply.provider.value,
                "fallback_from": reply.fallback_from,
                "text": reply.text,
            }
        except WaveError as exc:
            result = {"error": type(exc).__name__, "message": str(exc)}
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
