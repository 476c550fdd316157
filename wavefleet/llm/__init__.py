"""The LLM layer: Claude and Grok behind one router, with fallback, caching, rate limits and budgets.

Agents use `wavefleet.llm.client.LLMClient` (see its module docstring); the request and reply
models are re-exported here. Importing this package loads no provider SDK.
"""

from .types import (
    LLMRequest,
    LLMResponse,
    Message,
    ProviderName,
    TaskKind,
    ToolCall,
    ToolResult,
    ToolSpec,
    Usage,
)

__all__ = [
    "LLMRequest",
    "LLMResponse",
    "Message",
    "ProviderName",
    "TaskKind",
    "ToolCall",
    "ToolResult",
    "ToolSpec",
    "Usage",
]
