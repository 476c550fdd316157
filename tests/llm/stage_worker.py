"""A real fleet worker (`run_worker`: RQ, heartbeat, halt gate) whose agent makes one model call
through the real LLMClient before doing the offline agent's work: the stage meets the providers
as an LLM agent would, for tests of failures that are not the story's (argv: domain role)."""

from __future__ import annotations

import sys
from typing import Any

from wavefleet import logs
from wavefleet.config import Settings, load_settings
from wavefleet.connection import connect
from wavefleet.domains import load_domains
from wavefleet.lifecycle import Role
from wavefleet.llm.client import LLMClient
from wavefleet.llm.types import LLMRequest, Message, TaskKind
from workers import stage
from workers.offline import OfflineAgent
from workers.roles import StageInput, StageOutput
from workers.worker import run_worker


class ModelThenOffline:
    """Asks the model first (as every LLM agent's first step does), then does the offline work."""

    label = "model-then-offline"

    def __init__(self, settings: Settings, offline: OfflineAgent) -> None:
        self.settings, self.offline = settings, offline

    def run(self, stage_input: StageInput, ctx: Any = None) -> StageOutput:
        story = stage_input.story
        client = LLMClient(self.settings, connect(self.settings))  # in the work horse: no gRPC across a fork
        llm = client.for_story(story.id, stage_input.domain.name, stage_input.role.value)
        llm.call(LLMRequest(task=TaskKind.PLANNING, messages=(Message.user(f"plan {story.title}"),)))
        return self.offline.run(stage_input)


def main() -> None:
    domain_name, role = sys.argv[1], Role(sys.argv[2])
    settings = load_settings()
    logs.setup(f"{domain_name}-{role.value}-model", fmt="json", level="info")
    original = stage.agent_for

    def agent_for(kind: str, role: Role, **kwargs: Any) -> Any:
        offline = original(kind, role, **kwargs)
        assert isinstance(offline, OfflineAgent)
        return ModelThenOffline(settings, offline)

    stage.agent_for = agent_for  # the work horses fork from here, and inherit it
    LLMClient(settings, connect(settings)).preload()  # the SDKs imported once, not in every horse
    domain = load_domains(settings.domains_dir).get(domain_name)
    run_worker(settings, domain, role, 1)


if __name__ == "__main__":
    main()
