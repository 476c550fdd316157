"""Claude through the `anthropic` SDK: tool use, prompt caching, usage, and its errors mapped to ours."""

from __future__ import annotations

from typing import Any

import anthropic
from pydantic import ValidationError

from ..config import AnthropicSettings
from ..errors import ProviderError, ProviderRateLimitedError
from .types import Completion, LLMRequest, Message, ProviderName, ToolCall, Usage

EPHEMERAL = {"type": "ephemeral"}
# Statuses that say our request was wrong, not that the provider is unwell: no fallback for them.
REQUEST_ERRORS = frozenset({400, 404, 413, 422})


class AnthropicProvider:
    name = ProviderName.ANTHROPIC

    def __init__(self, settings: AnthropicSettings) -> None:
        if settings.api_key is None:
            raise ValueError("AnthropicProvider needs an API key")
        self.model = settings.model
        self._caching = settings.prompt_caching
        self._client = anthropic.Anthropic(
            api_key=settings.api_key.get_secret_value(),
            base_url=settings.base_url,
            timeout=settings.timeout_s,
            max_retries=settings.max_retries,
        )

    def complete(self, request: LLMRequest, max_tokens: int) -> Completion:
        params = self.params(request, max_tokens)
        try:
            message = self._client.messages.create(**params)
        except anthropic.APIStatusError as exc:
            raise _status_error(exc) from None
        except anthropic.APITimeoutError:
            raise ProviderError(self.name, "timed out") from None
        except anthropic.APIConnectionError as exc:
            raise ProviderError(self.name, f"connection failed: {exc}") from None
        except (ValueError, RecursionError, anthropic.APIResponseValidationError) as exc:
            # a body that is not JSON, or JSON nested deeper than the decoder goes
            raise ProviderError(self.name, f"malformed reply: {exc}") from None
        return _completion(message)

    def params(self, request: LLMRequest, max_tokens: int) -> dict[str, Any]:
        """The Messages API arguments: cache breakpoints on the last tool and on the system prompt."""
        params: dict[str, Any] = {
            "model": self.model,
            "max_tokens": max_tokens,
            # a turn left with no block (blank text, no calls) is dropped: the API refuses an empty
            # turn, and joins the two user turns around it into one
            "messages": [m for m in map(_message, request.messages) if m["content"]],
        }
        if request.system:
            block: dict[str, Any] = {"type": "text", "text": request.system}
            if self._caching:
                block["cache_control"] = EPHEMERAL
            params["system"] = [block]
        if request.tools:
            tools = [
                {"name": t.name, "description": t.description, "input_schema": t.input_schema}
                for t in request.tools
            ]
            if self._caching:
                tools[-1]["cache_control"] = EPHEMERAL
            params["tools"] = tools
        # No temperature: the Messages API of anthropic 2.x (version 2026-10-21) has none to send.
        if request.stop:
            params["stop_sequences"] = list(request.stop)
        return params


def _message(message: Message) -> dict[str, Any]:
    """One turn as content blocks: tool results first (the API requires them to lead a user turn),
    then the text, then tool calls. No text block for empty or blank text: the API refuses those."""
    blocks: list[dict[str, Any]] = [
        {"type": "tool_result", "tool_use_id": r.tool_call_id, "content": r.content, "is_error": r.is_error}
        for r in message.tool_results
    ]
    if message.text.strip():
        blocks.append({"type": "text", "text": message.text})
    blocks.extend(
        {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments} for c in message.tool_calls
    )
    return {"role": message.role, "content": blocks}


def _completion(message: Any) -> Completion:
    """The SDK's Message as ours; a reply missing its content or usage is malformed."""
    try:
        content = list(message.content)
        usage = message.usage
        texts = [block.text for block in content if block.type == "text"]
        calls = tuple(_tool_call(b) for b in content if b.type == "tool_use")
        ours = Usage(
            input_tokens=int(usage.input_tokens),
            output_tokens=int(usage.output_tokens),
            cache_read_tokens=int(usage.cache_read_input_tokens or 0),
            cache_write_tokens=int(usage.cache_creation_input_tokens or 0),
        )
    except (AttributeError, TypeError, ValueError, ValidationError) as exc:
        raise ProviderError(ProviderName.ANTHROPIC, f"malformed reply: {exc}") from None
    return Completion(
        text="".join(texts), tool_calls=calls, stop_reason=str(message.stop_reason or ""), usage=ours
    )


def _tool_call(block: Any) -> ToolCall:
    """A tool_use block; arguments nested too deep are the model's slip, shown to it (see ToolCall)."""
    try:
        return ToolCall(id=block.id, name=block.name, arguments=dict(block.input))
    except ValidationError as exc:
        if not any(e["loc"] == ("arguments",) for e in exc.errors()):
            raise
        return ToolCall(id=block.id, name=block.name, invalid_arguments=f"arguments {exc.errors()[0]['msg']}")


def _status_error(exc: anthropic.APIStatusError) -> ProviderError:
    status = exc.status_code
    detail = _error_message(exc)
    if status == 429:
        return ProviderRateLimitedError(
            ProviderName.ANTHROPIC, f"rate limited (429): {detail}", retry_after_s=_retry_after(exc)
        )
    if status == 529:
        return ProviderError(ProviderName.ANTHROPIC, f"overloaded (529): {detail}")
    if status in REQUEST_ERRORS:
        return ProviderError(ProviderName.ANTHROPIC, f"request refused ({status}): {detail}", counts=False)
    return ProviderError(ProviderName.ANTHROPIC, f"HTTP {status}: {detail}")


def _error_message(exc: anthropic.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message", ""))
    return str(exc.message)[:200]


def _retry_after(exc: anthropic.APIStatusError) -> float | None:
    headers = exc.response.headers
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                continue
    return None
