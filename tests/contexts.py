"""A stage's AgentContext outside a worker, for tests that run one agent in-process."""

from __future__ import annotations

from redis import Redis

from wavefleet.config import Settings
from wavefleet.llm.client import LLMClient
from wavefleet.sandbox import Sandbox
from workers.agent.assemble import context_for
from workers.agent.context import AgentContext
from workers.roles import StageInput


def bare_context(stage: StageInput, sandbox: Sandbox, redis: Redis | None = None) -> AgentContext:
    """Offline agents call no model: the client is built but never connects (redis-py is lazy)."""
    llm = LLMClient(Settings(data_dir=stage.data_dir), redis or Redis(host="127.0.0.1", port=9))
    return context_for(stage, llm, sandbox)
