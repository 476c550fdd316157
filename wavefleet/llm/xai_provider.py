"""Grok through `xai-sdk` over gRPC: chat create/append/sample, tool calls, usage, cost, status codes."""

from __future__ import annotations

import json
import os
from contextvars import ContextVar
from typing import Any

import grpc
from pydantic import ValidationError
from xai_sdk import Client
from xai_sdk.chat import system, tool, tool_result, user
from xai_sdk.proto import chat_pb2
from xai_sdk.sync.chat import Client as ChatClient

from ..config import XaiSettings
from ..errors import ProviderError, ProviderRateLimitedError
from .types import Completion, LLMRequest, Message, ProviderName, ToolCall, Usage

# Codes that say our request was wrong, not that the service is unwell: no fallback for them.
REQUEST_ERRORS = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)


TELEMETRY_SWITCH = "XAI_SDK_DISABLE_SENSITIVE_TELEMETRY_ATTRIBUTES"
# The request's prompt-cache key while its call is sent (per thread), for the interceptor below.
_CONVERSATION: ContextVar[str] = ContextVar("xai_conversation", default="")
CONVERSATION_HEADER = "x-grok-conv-id"


class _ConversationHeader(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Sends the call's cache key as x-grok-conv-id: xAI routes calls with the same id to the same
    server, where their shared prefix is cached. The SDK sets metadata only per client, so per call
    it is added here."""

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        key = _CONVERSATION.get()
        if key:
            details = details._replace(metadata=[*(details.metadata or ()), (CONVERSATION_HEADER, key)])
        return continuation(details, request)


class XaiProvider:
    name = ProviderName.XAI

    def __init__(self, settings: XaiSettings) -> None:
        if settings.api_key is None:
            raise ValueError("XaiProvider needs an API key")
        # The SDK copies every prompt and reply into OpenTelemetry span attributes unless told not
        # to (even with no tracer set up): story text and repository content would be copied into
        # any tracing backend, each call would serialise the whole conversation again, and the SDK
        # parses the model's tool arguments there, raising on malformed ones before we see the reply.
        # The SDK reads this switch on every call; an operator's own setting is kept.
        os.environ.setdefault(TELEMETRY_SWITCH, "1")
        self.model = settings.model
        self._server_cost = settings.use_server_cost
        self._client = Client(
            api_key=settings.api_key.get_secret_value(),
            api_host=settings.api_host,
            timeout=settings.timeout_s,
            use_insecure_channel=settings.use_insecure_channel,
            channel_options=_retry_options(settings.max_retries),
        )
        # The SDK's chat client on its own channel with our interceptor added (`_api_channel` is not
        # public: the tool-use tests fail at once if an SDK release renames it).
        self._chat = ChatClient(grpc.intercept_channel(self._client._api_channel, _ConversationHeader()))

    def complete(self, request: LLMRequest, max_tokens: int) -> Completion:
        settings: dict[str, Any] = {"model": self.model, "max_tokens": max_tokens}
        if request.tools:
            settings["tools"] = [tool(t.name, t.description, t.input_schema) for t in request.tools]
        if request.temperature is not None:
            settings["temperature"] = request.temperature
        if request.stop:
            settings["stop"] = list(request.stop)
        chat = self._chat.create(**settings)
        if request.system:
            chat.append(system(request.system))
        for message in request.messages:
            for proto in _messages(message):
                chat.append(proto)
        sending = _CONVERSATION.set(request.cache_key)
        try:
            response = chat.sample()
        except grpc.RpcError as exc:
            raise _status_error(exc) from None
        except ValueError as exc:  # the SDK's telemetry parses tool arguments, if an operator turns it on
            raise ProviderError(self.name, f"malformed reply: {exc}") from None
        finally:
            _CONVERSATION.reset(sending)
        return self._completion(response)

    def _completion(self, response: Any) -> Completion:
        usage = response.usage
        cached = int(usage.cached_prompt_text_tokens)
        ours = Usage(
            input_tokens=max(0, int(usage.prompt_tokens) - cached),
            output_tokens=int(usage.completion_tokens) + int(usage.reasoning_tokens),
            cache_read_tokens=cached,
        )
        calls = tuple(_tool_call(c) for c in response.tool_calls)
        cost = response.cost_usd if self._server_cost else None
        return Completion(
            text=response.content,
            tool_calls=calls,
            stop_reason=response.finish_reason,
            usage=ours,
            reported_cost_usd=cost,
        )


def _retry_options(max_retries: int) -> list[tuple[str, Any]]:
    """The SDK retries UNAVAILABLE 4 times by default; make that the `max_retries` setting."""
    if max_retries == 0:
        return [("grpc.enable_retries", 0)]
    policy = {
        "maxAttempts": min(5, max_retries + 1),
        "initialBackoff": "0.1s",
        "maxBackoff": "1s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    return [("grpc.service_config", json.dumps({"methodConfig": [{"name": [{}], "retryPolicy": policy}]}))]


# xAI's tool messages have no error flag: a failed tool says so in its text, which the model reads.
ERROR_PREFIX = "ERROR: "


def _messages(message: Message) -> list[chat_pb2.Message]:
    """One of our turns as xAI messages: tool results are messages of their own (role tool)."""
    protos = [
        tool_result(ERROR_PREFIX + r.content if r.is_error else r.content, tool_call_id=r.tool_call_id)
        for r in message.tool_results
    ]
    if message.role == "user":
        if message.text:
            protos.append(user(message.text))
        return protos
    # As the SDK replays an assistant reply (`Chat.append(response)`): its text as one content part,
    # even when empty, and its calls typed as the client-side tool calls the service returned.
    calls = [
        chat_pb2.ToolCall(
            id=c.id,
            type=chat_pb2.ToolCallType.TOOL_CALL_TYPE_CLIENT_SIDE_TOOL,
            function=chat_pb2.FunctionCall(name=c.name, arguments=json.dumps(c.arguments)),
        )
        for c in message.tool_calls
    ]
    protos.append(
        chat_pb2.Message(
            role=chat_pb2.MessageRole.ROLE_ASSISTANT,
            content=[chat_pb2.Content(text=message.text)],
            tool_calls=calls,
        )
    )
    return protos


MAX_INVALID_ARGUMENTS_CHARS = 4000  # of a malformed argument text kept for the model to see


def _tool_call(call: chat_pb2.ToolCall) -> ToolCall:
    text = call.function.arguments or "{}"
    try:
        arguments = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the decoder goes
        arguments = None
    invalid = ToolCall(
        id=call.id, name=call.function.name, invalid_arguments=text[:MAX_INVALID_ARGUMENTS_CHARS]
    )
    if not isinstance(arguments, dict):
        return invalid
    try:
        return ToolCall(id=call.id, name=call.function.name, arguments=arguments)
    except ValidationError:  # nested deeper than MAX_NESTING
        return invalid


def _status_error(exc: grpc.RpcError) -> ProviderError:
    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ProviderRateLimitedError(
            ProviderName.XAI, f"rate limited (RESOURCE_EXHAUSTED): {details}", retry_after_s=_retry_after(exc)
        )
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return ProviderError(ProviderName.XAI, "timed out (DEADLINE_EXCEEDED)")
    if code in REQUEST_ERRORS:
        return ProviderError(ProviderName.XAI, f"request refused ({code.name}): {details}", counts=False)
    return ProviderError(ProviderName.XAI, f"{code.name}: {details}")


def _retry_after(exc: grpc.RpcError) -> float | None:
    if not isinstance(exc, grpc.Call):
        return None
    for key, value in exc.trailing_metadata() or ():
        if key in ("retry-after", "retry-after-ms"):
            try:
                return float(value) / (1000.0 if key.endswith("-ms") else 1.0)
            except (TypeError, ValueError):
                return None
    return None
