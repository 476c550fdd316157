"""The offline provider: deterministic replies with no key and no network, labelled offline everywhere.

It exists so the fleet runs (demo, tests) with no API key. It goes through the same router, cache,
rate limits, budgets and accounting as the real providers; it is chosen only when the `llm.offline`
setting allows it, never as a silent stand-in for a provider that failed.
"""

from __future__ import annotations

import hashlib
import math

from .types import Completion, LLMRequest, ProviderName, Usage

MODEL = "offline-echo-1"


class OfflineProvider:
    name = ProviderName.OFFLINE
    model = MODEL

    def complete(self, request: LLMRequest, max_tokens: int) -> Completion:
        """The same request always gets the same reply: a digest and an echo of the last user turn."""
        body = request.model_dump_json(include={"system", "messages", "tools"})
        digest = hashlib.sha256(body.encode()).hexdigest()[:12]
        last = request.messages[-1]
        said = last.text or " ".join(r.content for r in last.tool_results)
        text = f"[OFFLINE {digest}] no model was called; {request.task.value} request: {said[:160]}"
        words = text.split()
        while len(" ".join(words)) > max_tokens * 4 and len(words) > 1:
            words.pop()
        text = " ".join(words)
        usage = Usage(input_tokens=math.ceil(len(body) / 4), output_tokens=math.ceil(len(text) / 4))
        return Completion(text=text, stop_reason="end_turn", usage=usage, reported_cost_usd=0.0)
