"""A local xAI Chat service on 127.0.0.1: the real `xai-sdk` connects with `api_host` and
`use_insecure_channel=True`.

The servicer subclasses the SDK's own generated `chat_pb2_grpc.ChatServicer` and is registered with
its `add_ChatServicer_to_server`, so requests and replies are the service's real protobuf messages.
`GetCompletion` checks the bearer key in the call metadata, answers with the assistant's text or tool
calls and a `SamplingUsage` (prompt, completion and cached prompt tokens, cost in USD ticks), and
simulates xAI's automatic prompt caching: a request whose leading messages repeat an earlier
request's reports that prefix as cached. Tests script gRPC status codes and delays in order, or
answer by the request's content with `respond_with(fn)` (fn gets the request as a JSON dict).
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from xai_sdk.proto import chat_pb2, chat_pb2_grpc, sample_pb2, usage_pb2

from .anthropic_server import padded

USD_TICKS = 10_000_000_000  # 1 USD in the service's cost unit (1 tick = 1e-10 USD)


@dataclass
class Reply:
    """One scripted answer; the defaults give a normal computed reply."""

    code: grpc.StatusCode = grpc.StatusCode.OK
    text: str | None = None
    tool_calls: list[tuple[str, str]] = field(default_factory=list)  # (name, JSON arguments text)
    delay_s: float = 0.0
    trailers: tuple[tuple[str, str], ...] = ()


Responder = Callable[[dict[str, Any]], Reply | None]


@dataclass(frozen=True)
class Prices:
    """USD per million tokens, used to fill `cost_in_usd_ticks` as the service does."""

    input: float = 3.0
    cached_input: float = 0.75
    output: float = 15.0


def tokens_of(value: Any) -> int:
    return math.ceil(len(json.dumps(value, sort_keys=True)) / 4)


class XaiServer(chat_pb2_grpc.ChatServicer):
    def __init__(
        self,
        api_key: str = "test-xai-key",
        prices: Prices | None = None,
        min_cache_tokens: int = 1024,
        reply_chars: int = 0,
    ) -> None:
        self.api_key = api_key
        self.reply_chars = reply_chars  # pad default replies to this length (realistic output sizes)
        self.prices = prices or Prices()
        self.min_cache_tokens = min_cache_tokens
        self.requests: list[dict[str, Any]] = []
        self._script: deque[Reply] = deque()
        self._responder: Responder | None = None
        self._prefixes: set[str] = set()
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        chat_pb2_grpc.add_ChatServicer_to_server(self, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> XaiServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=0).wait(5)

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._script.extend(replies)

    def respond_with(self, fn: Responder | None) -> None:
        """Answer each request with `fn(body)` (the request as a dict, proto field names); None from
        it: a normal reply. Queued `script` replies still come first."""
        with self._lock:
            self._responder = fn

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self._responder = None
            self.requests.clear()
            self._prefixes.clear()

    def _next(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            if self._script:
                return self._script.popleft()
            responder = self._responder
        reply = responder(body) if responder is not None else None
        return reply if reply is not None else Reply()

    # The Chat service ----------------------------------------------------------------------------
    def GetCompletion(  # noqa: N802 - the gRPC service's method name
        self,
        request: chat_pb2.GetCompletionsRequest,
        context: grpc.ServicerContext,
    ) -> chat_pb2.GetChatCompletionResponse:
        metadata = dict(context.invocation_metadata())
        if metadata.get("authorization") != f"Bearer {self.api_key}":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid api key")
        body = MessageToDict(request, preserving_proto_field_name=True)
        self.requests.append({"metadata": metadata, "body": body, "at": time.time()})
        reply = self._next(body)
        if reply.delay_s:
            time.sleep(reply.delay_s)
        if reply.code is not grpc.StatusCode.OK:
            if reply.trailers:
                context.set_trailing_metadata(reply.trailers)
            context.abort(reply.code, f"scripted {reply.code.name}")
        return self._completion(request, body, reply)

    def _completion(
        self, request: chat_pb2.GetCompletionsRequest, body: dict[str, Any], reply: Reply
    ) -> chat_pb2.GetChatCompletionResponse:
        text = (
            reply.text
            if reply.text is not None
            else padded(f"echo: {_last_user_text(request)[:200]}", self.reply_chars)
        )
        calls = [
            chat_pb2.ToolCall(
                id=f"call_{len(self.requests)}_{i}",
                function=chat_pb2.FunctionCall(name=name, arguments=arguments),
            )
            for i, (name, arguments) in enumerate(reply.tool_calls)
        ]
        message = chat_pb2.CompletionMessage(
            content=text, role=chat_pb2.MessageRole.ROLE_ASSISTANT, tool_calls=calls
        )
        finish = sample_pb2.FinishReason.REASON_TOOL_CALLS if calls else sample_pb2.FinishReason.REASON_STOP
        output = chat_pb2.CompletionOutput(index=0, message=message, finish_reason=finish)
        completion = max(1, tokens_of(text) + tokens_of([c.function.arguments for c in calls]))
        return chat_pb2.GetChatCompletionResponse(
            id=f"resp_{len(self.requests):06d}",
            outputs=[output],
            model=request.model,
            usage=self._usage(body, completion),
        )

    def _usage(self, body: dict[str, Any], completion: int) -> usage_pb2.SamplingUsage:
        prompt = tokens_of({"tools": body.get("tools", []), "messages": body.get("messages", [])})
        cached = self._cached_tokens(body)
        ticks = (
            (
                (prompt - cached) * self.prices.input
                + cached * self.prices.cached_input
                + completion * self.prices.output
            )
            / 1_000_000
            * USD_TICKS
        )
        return usage_pb2.SamplingUsage(
            prompt_tokens=prompt,
            prompt_text_tokens=prompt,
            cached_prompt_text_tokens=cached,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            cost_in_usd_ticks=round(ticks),
        )

    def _cached_tokens(self, body: dict[str, Any]) -> int:
        """The longest prefix (tools and leading messages) an earlier request also began with counts
        as cached, as the service caches the common prefix of consecutive calls of a conversation."""
        messages = body.get("messages", [])
        digests = [
            hashlib.sha256(
                json.dumps([body.get("model"), body.get("tools", []), messages[:k]], sort_keys=True).encode()
            ).hexdigest()
            for k in range(1, len(messages) + 1)
        ]
        with self._lock:
            seen = [k for k, digest in enumerate(digests, start=1) if digest in self._prefixes]
            self._prefixes.update(digests)
        if not seen:
            return 0
        tokens = tokens_of([body.get("tools", []), messages[: max(seen)]])
        return tokens if tokens >= self.min_cache_tokens else 0


def _last_user_text(request: chat_pb2.GetCompletionsRequest) -> str:
    for message in reversed(request.messages):
        if message.role in (chat_pb2.MessageRole.ROLE_USER, chat_pb2.MessageRole.ROLE_TOOL):
            return " ".join(c.text for c in message.content)
    return ""
