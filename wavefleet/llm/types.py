"""The provider-neutral shape of a model call: request, reply, usage, and the Provider protocol.

Agents build an `LLMRequest` (system prompt, messages, tools, max tokens) and get an `LLMResponse`
(text, tool calls, usage, cost, latency, and where it came from) whichever provider answered.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal, Protocol

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field


class ProviderName(StrEnum):
    """The built-in providers; others are registered by name (`wavefleet.llm.registry`)."""

    ANTHROPIC = "anthropic"
    XAI = "xai"
    OFFLINE = "offline"


def provider_name(name: str) -> str:
    """A built-in provider's name as its enum member, any other (registered) name as it is."""
    try:
        return ProviderName(name)
    except ValueError:
        return name


# A provider's name in a reply: `ProviderName.XAI` for the built-ins (so `is` comparisons hold), the
# plain name for a registered third provider.
ProviderId = Annotated[str, AfterValidator(provider_name)]


class TaskKind(StrEnum):
    """What a call is for; the router picks the provider from it."""

    CONSTITUTIONAL_CHECK = "constitutional_check"
    CTO_REVIEW = "cto_review"
    SAFETY_PROBE = "safety_probe"
    ARCHITECTURE_VALIDATION = "architecture_validation"
    CODE_GENERATION = "code_generation"
    PLANNING = "planning"
    QA_ANALYSIS = "qa_analysis"
    DOCUMENTATION = "documentation"


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
MAX_NESTING = 64  # of a tool call's arguments: no tool's schema is deeper; every walk of them recurses


def valid_unicode(value: Any, depth: int = 0) -> Any:
    """`value` with every lone surrogate (in strings, keys and items) replaced by U+FFFD; a ValueError
    when it is nested deeper than MAX_NESTING.

    A model's JSON may escape half a surrogate pair (`"\\ud800"`); the SDK decodes it into a str
    that no UTF-8 encoder takes, so the reply would crash the cache, the story's record and every
    tool that encodes it. And arguments nested a thousand deep make every later walk of them (this
    one, json.dumps of the next request, the cache key) raise RecursionError. Replies are made valid
    text where they enter the fleet."""
    if depth > MAX_NESTING:
        raise ValueError(f"nested deeper than {MAX_NESTING} levels")
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {valid_unicode(k): valid_unicode(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [valid_unicode(v, depth + 1) for v in value]
    return value


# Text that came from a provider's reply (see valid_unicode).
ReplyText = Annotated[str, BeforeValidator(valid_unicode)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ToolSpec(_Model):
    """A tool the model may call; `input_schema` is a JSON Schema object."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class ToolCall(_Model):
    id: ReplyText
    name: ReplyText
    arguments: Annotated[dict[str, Any], BeforeValidator(valid_unicode)] = Field(default_factory=dict)
    # The model's argument text when it is not a JSON object (cut short at the token limit, or
    # malformed), `arguments` then empty: the model's mistake, for the loop to answer with an error
    # result, never a provider failure. (Claude's API always parses them; Grok's passes them through.)
    invalid_arguments: ReplyText = ""


class ToolResult(_Model):
    tool_call_id: str
    content: str
    is_error: bool = False
    verdict: str = "allow"  # the gate's decision: "allow", or "block" (then is_error); shown in traces


class Message(_Model):
    """One turn: a user turn carries text and/or tool results; an assistant turn text and/or tool calls."""

    role: Literal["user", "assistant"]
    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_results: tuple[ToolResult, ...] = ()

    @classmethod
    def user(cls, text: str) -> Message:
        return cls(role="user", text=text)

    @classmethod
    def assistant(cls, text: str, tool_calls: tuple[ToolCall, ...] = ()) -> Message:
        return cls(role="assistant", text=text, tool_calls=tool_calls)

    @classmethod
    def results(cls, *results: ToolResult) -> Message:
        return cls(role="user", tool_results=results)


# Above every model's output limit; a larger figure is a typo, refused before any call.
MAX_TOKENS_PER_CALL = 1_000_000


class LLMRequest(_Model):
    task: TaskKind
    messages: tuple[Message, ...] = Field(min_length=1)
    system: str = ""
    tools: tuple[ToolSpec, ...] = ()
    max_tokens: int | None = Field(
        default=None, ge=1, le=MAX_TOKENS_PER_CALL
    )  # None: the `llm.max_tokens` setting
    temperature: float | None = Field(default=None, ge=0, le=2)  # xAI only: Anthropic's API has none
    stop: tuple[str, ...] = ()
    use_cache: bool = True  # False: always ask the provider (a retry that wants a fresh answer)
    # Calls with the same key share a provider's prompt cache where routing decides it (xAI sends
    # them to one server: x-grok-conv-id). Not content: no part of the response cache's key.
    cache_key: str = Field(default="", max_length=128, pattern=r"^[A-Za-z0-9_.:-]*$")


class Usage(_Model):
    """Tokens of one call. `input_tokens` excludes the cached prompt tokens read or written."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens


class Completion(_Model):
    """What a provider returns for one request, before the fleet prices and records it."""

    text: ReplyText
    tool_calls: tuple[ToolCall, ...] = ()
    stop_reason: ReplyText = ""
    usage: Usage = Usage()
    reported_cost_usd: float | None = None  # when the provider reports the bill itself (xAI does)


class LLMResponse(_Model):
    """One answered call, as agents see it and as it is recorded on the story."""

    provider: ProviderId
    model: str
    task: TaskKind
    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    stop_reason: str = ""
    usage: Usage = Usage()
    cost_usd: float = 0.0  # what this call cost: 0 for a response-cache hit and offline
    latency_ms: float = 0.0  # time in the provider (0 for a cache hit)
    cache_hit: bool = False
    offline: bool = False
    fallback_from: ProviderId | None = None  # set when the routed provider failed or its breaker was open

    @property
    def label(self) -> str:
        """``anthropic claude-sonnet-4-5``, or ``OFFLINE offline-echo`` so no one mistakes it for a model."""
        return f"{'OFFLINE' if self.offline else self.provider} {self.model}"


class Provider(Protocol):
    """A model service behind the fleet's one interface. Raise ProviderError, never an SDK error."""

    model: str

    @property
    def name(self) -> str:
        """Its registered name."""
        ...

    def complete(self, request: LLMRequest, max_tokens: int) -> Completion: ...
