"""What `wave status`, `wave list` and `wave events` print: the story lines, the halt banner, one story
in detail (record, stage results in pipeline order, delivery, waits, model calls) and its history."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from .halt import acks, read_halt
from .llm.accounting import CallTotals, format_call, story_calls
from .messages import Delivery, StageResult
from .retries import RetrySchedule
from .sandbox.protocol import SandboxUsage
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


def print_records(records: Sequence[StoryRecord], *, as_json: bool) -> None:
    """The stories one line each (`wave status`, `wave list`), or as JSON."""
    if as_json:
        print(json.dumps([r.to_dict() for r in records], indent=2))
        return
    if not records:
        show("no stories")
        return
    now = time.time()
    header = f"{'ID':<16} {'DOMAIN':<10} {'STATE':<11} {'ROUND':>5} {'STAGE':<7} {'AGE':>5} {'COST':>9}"
    show(header)
    for r in records:
        show(
            f"{r.id:<16} {r.domain:<10} {r.state.value:<11} {r.round:>5} {r.stage:<7} "
            f"{age(now - r.created_at):>5} {f'${r.cost_usd:.4f}':>9}"
        )


def print_story(store: StoryStore, record: StoryRecord, *, as_json: bool) -> None:
    results = store.results(record.id)
    data = story_data(store, record, results)
    if as_json:
        print(json.dumps(data, indent=2))
        return
    for key in ("id", "domain", "title", "state", "round", "stage", "reason", "cost_usd"):
        show(f"{key + ':':<10} {data[key]}")
    if record.approved:  # the CTO stage after it shows the same GO as agent [human]
        show(f"{'approved:':<10} {record.approved} (a human's GO after the CTO's HOLD)")
    show(f"{'age:':<10} {age(time.time() - record.created_at)}")
    for waiting in data["waiting"]:
        show(f"{'waiting:':<10} {waiting['role']} {waiting['status']}")
    for name, result in results:
        show(f"  {name:<12} {_result_line(result)}")
        if result.sandbox_usage is not None:
            show(f"  {'':<12} {usage_line(result.sandbox_usage)}")
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


def usage_line(usage: SandboxUsage) -> str:
    """`container: 3.2 cpu-s, peak 84 MiB, 12.4 s, 3 commands in 1 container`, and the limits hit."""
    peak = (
        "peak unknown"
        if usage.peak_memory_bytes is None
        else f"peak {usage.peak_memory_bytes / 2**20:.0f} MiB"
    )
    line = (
        f"container: {usage.cpu_s:.1f} cpu-s, {peak}, {usage.wall_s:.1f} s, "
        f"{usage.commands} command{'s' * (usage.commands != 1)} in "
        f"{usage.containers} container{'s' * (usage.containers != 1)}"
    )
    if usage.limits_hit:
        line += f"; LIMIT HIT: {', '.join(usage.limits_hit)}"
    return line


def _delivery(results: list[tuple[str, StageResult]]) -> Delivery | None:
    """What the last GO delivered (workers/delivery.py writes it into the CTO's output)."""
    delivered = [r.output["delivery"] for _name, r in results if r.output.get("delivery")]
    return Delivery.model_validate(delivered[-1]) if delivered else None


def _delivery_line(delivery: Delivery) -> str:
    if delivery.remote:
        return f"{'delivered:':<10} {delivery.branch} at {delivery.commit} on {delivery.remote}"
    why = f" ({delivery.note})" if delivery.note else ""
    return f"{'delivery:':<10} kept in {delivery.clone} as {delivery.branch} at {delivery.commit}{why}"


def halt_banner(store: StoryStore) -> str | None:
    """The line `wave status` opens with while the fleet is halted."""
    redis, keys = store.redis, store.keys
    state = read_halt(redis, keys)
    if state is None:
        return None
    alive = [w for w in redis.smembers(keys.workers()) if redis.exists(keys.worker_heartbeat(w))]
    acked = acks(redis, keys)
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(state.at))
    return (
        f"FLEET HALTED since {since} by {state.by}: {state.reason} "
        f"({sum(1 for w in alive if w in acked)}/{len(alive)} live workers acked)"
    )


def print_history(store: StoryStore, story_id: str, *, as_json: bool) -> None:
    """The story's events and model calls, oldest first."""
    events = store.events(story_id)
    calls = [{"event": "llm_call", **c} for c in story_calls(store.redis, store.keys, story_id)]
    merged = sorted(events + calls, key=lambda e: float(e["at"]))
    if as_json:
        print(json.dumps(merged, indent=2))
        return
    for event in merged:
        show(format_call(event) if event["event"] == "llm_call" else format_event(event))


# Fields every history entry may carry, shown in their own places; any other field (an agent
# event's guard, tool or iterations) is shown as name=value before the reason.
EVENT_FIELDS = frozenset(
    {"event", "from", "to", "role", "round", "reason", "story", "at", "attempt", "worker"}
)


def format_event(event: dict[str, str]) -> str:
    """One history line: a transition shows from -> to; an agent or budget note has no `to`."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(event["at"])))
    to = event.get("to", "")
    change = f"{event.get('from', '')} -> {to}" if event.get("from") else (f"-> {to}" if to else "")
    extra = [f"{k}={v}" for k, v in sorted(event.items()) if k not in EVENT_FIELDS and v != ""]
    detail = "  ".join(
        x
        for x in (
            event.get("role") and f"role={event['role']}",
            event.get("round") and f"round={event['round']}",
            *extra,
            event.get("reason"),
        )
        if x
    )
    return f"{stamp}  {event.get('event', '?'):<12} {change:<28} {detail}"


FOLLOW_BLOCK_MS = 1000  # one XREAD waits this long; Ctrl-C interrupts it at once anyway


def follow_events(store: StoryStore, story_id: str | None, *, as_json: bool) -> None:
    """Print the events stream as entries arrive, until Ctrl-C: one story's (its history first, then
    what follows; model calls are not in it) or the whole fleet's (new entries only: the fleet's
    stream holds up to 100,000)."""
    if story_id is not None:
        store.get(story_id)  # an unknown story is named as such, not followed forever
    stream = store.keys.story_events(story_id) if story_id else store.keys.events()
    # Not "$" in the loop: each XREAD would mean "after the newest now", losing what came in between.
    newest = store.redis.xrevrange(stream, count=1)
    last = newest[0][0] if newest else "0-0"
    try:
        if story_id is not None:
            last = "0"
            for entry_id, fields in store.redis.xrange(stream):
                _print_followed(fields, fleet=False, as_json=as_json)
                last = entry_id
        while True:
            reply = store.redis.xread({stream: last}, block=FOLLOW_BLOCK_MS, count=100)
            for _stream, entries in reply or ():
                for entry_id, fields in entries:
                    _print_followed(fields, fleet=story_id is None, as_json=as_json)
                    last = entry_id
    except KeyboardInterrupt:
        return


def _print_followed(fields: dict[str, str], *, fleet: bool, as_json: bool) -> None:
    if as_json:
        print(json.dumps(fields), flush=True)
        return
    line = format_event({"at": "0", **fields})
    print(terminal_safe(f"{fields.get('story') or '(fleet)':<16} {line}" if fleet else line), flush=True)
