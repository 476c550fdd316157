"""The detail view of one story (`wave status ID`, as text or `--json`): its record, stage results in
pipeline order, delivery, waits and model calls."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any

from .llm.accounting import CallTotals, format_call, story_calls
from .messages import Delivery, StageResult
from .retries import RetrySchedule
from .store import StoryRecord, StoryStore
from .text import terminal_safe

LAST_CALLS_SHOWN = 10


def show(line: str) -> None:
    """Print a line for a human: story fields, reasons and results in it came from users or agents,
    so control characters and escape sequences are made harmless (`--json` prints data as it is)."""
    print(terminal_safe(line))


def age(seconds: float) -> str:
    """A duration in its largest whole unit: 42s, 5m, 3h, 2d."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def print_story(store: StoryStore, record: StoryRecord, *, as_json: bool) -> None:
    results = store.results(record.id)
    data = story_data(store, record, results)
    if as_json:
        print(json.dumps(data, indent=2))
        return
    for key in ("id", "domain", "title", "state", "round", "stage", "reason", "cost_usd"):
        show(f"{key + ':':<10} {data[key]}")
    show(f"{'age:':<10} {age(time.time() - record.created_at)}")
    for waiting in data["waiting"]:
        show(f"{'waiting:':<10} {waiting['role']} {waiting['status']}")
    for name, result in results:
        show(f"  {name:<12} {_result_line(result)}")
    delivery = _delivery(results)
    if delivery is not None:
        show(_delivery_line(delivery))
    llm = data["llm"]
    show(
        f"{'llm:':<10} {len(llm['calls'])} calls ({llm['cache_hits']} cache hits), {llm['tokens']} tokens, "
        f"${llm['cost_usd']:.6f}"
    )
    for call in llm["calls"][-LAST_CALLS_SHOWN:]:
        show(f"  {format_call(call)}")


def story_data(
    store: StoryStore, record: StoryRecord, results: list[tuple[str, StageResult]]
) -> dict[str, Any]:
    """The story as `wave status ID --json` prints it."""
    calls = story_calls(store.redis, store.keys, record.id)
    delivery = _delivery(results)
    return {
        **record.to_dict(),
        "story": record.story.model_dump(mode="json"),
        "results": {name: result.model_dump(mode="json", exclude_defaults=True) for name, result in results},
        "delivery": delivery.model_dump(mode="json") if delivery else None,
        "llm": {**asdict(CallTotals.of(calls)), "calls": calls},
        "waiting": [  # stages waiting out a backoff after a failure that was not the story's
            {
                "role": e.stage[2].value,
                "retry": e.retry,
                "of": e.of,
                "due_in_s": round(due, 1),
                "reason": e.reason,
                "status": e.describe(due),
            }
            for e, due in RetrySchedule(store.redis, store.keys).waiting(record.id)
        ],
    }


def _result_line(result: StageResult) -> str:
    output = result.output  # the role's output (Plan, DevResult, QAReport or Review) as stored
    summary = output.get("summary") or "; ".join(output.get("reasons", [])) or result.error
    decision = f" {output['decision']}" if "decision" in output else ""
    status = "ok" if result.ok else "FAILED"
    # The agent kind (llm, offline, noop) and, for llm, the models that answered the stage.
    who = f"[{output.get('agent') or result.agent}] {result.worker}"
    return f"{status:<6} {who}{decision}: {summary}"


def _delivery(results: list[tuple[str, StageResult]]) -> Delivery | None:
    """What the last GO delivered (workers/delivery.py writes it into the CTO's output)."""
    delivered = [r.output["delivery"] for _name, r in results if r.output.get("delivery")]
    return Delivery.model_validate(delivered[-1]) if delivered else None


def _delivery_line(delivery: Delivery) -> str:
    if delivery.remote:
        return f"{'delivered:':<10} {delivery.branch} at {delivery.commit} on {delivery.remote}"
    why = f" ({delivery.note})" if delivery.note else ""
    return f"{'delivery:':<10} kept in {delivery.clone} as {delivery.branch} at {delivery.commit}{why}"
