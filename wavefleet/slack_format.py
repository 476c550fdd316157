"""Slack messages of fleet events: which channel each goes to, its Block Kit and plain-text fallback.

Story text (titles, reasons, worker names) is hostile data: every piece is escaped for Slack's
mrkdwn (``&``, ``<``, ``>``: no ``<!channel>``, no ``<url|label>`` link) and a bare URL is defused
with a zero-width space so Slack does not turn it into a link. Severity chooses the channel: what
needs a human goes to the alerts channel, the rest to the activity channel (README "Slack").
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote

from .fleet_events import FleetEvent, StoryEvent, UnknownEvent

MAX_FIELD_CHARS = 300  # one value of an event, shown
MAX_TEXT_CHARS = 2900  # under Block Kit's 3000 for a section's text
# One merged reply's bounds (README "Slack"): Slack takes at most 50 blocks a message and cuts its
# text past 40,000 characters; 20 events keep a reply readable. Beyond, the rest is the next reply.
MAX_MERGED_EVENTS = 20
MAX_BLOCKS = 50
MAX_MERGED_CHARS = 30_000
# Fleet-wide kinds that need a human (any kind this version does not know goes there too).
ALERT_KINDS = frozenset(
    {
        "fleet_halted",
        "fleet_resumed",  # pairs with the halt: whoever saw the stop sees it lifted
        "worker_dead",
        "budget_critical",
        "budget_exceeded",
        "monitor_finding",
        "monitor_cleared",
    }
)
ACTIVITY_KINDS = frozenset({"budget_warning"})
ALERT_STATES = frozenset({"failed", "held", "killed"})  # a story transition that needs a human
_SKIPPED_FIELDS = frozenset({"at", "story", "event", "raw"})


@dataclass(frozen=True)
class Message:
    """One post: to `channel`, in the thread of story `thread_of` (None: unthreaded); `parent`
    starts that story's thread."""

    channel: str
    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)
    thread_of: str | None = None
    parent: bool = False
    broadcast: bool = False  # a thread reply also shown in the channel (alerts == activity)
    story: bool = True  # thread_of is a story (else a monitor finding: no parent made late)


@dataclass(frozen=True)
class StoryFacts:
    """What the store knows of a story when its event is posted."""

    title: str = ""
    domain: str = ""
    state: str = ""
    cost_usd: float = 0.0
    worker: str = ""  # the worker that ran the event's stage (its container's logs are linked)


def finding_thread(event: FleetEvent) -> str | None:
    """The thread of a monitor finding (``monitor:<detector>:<key>``), by the event's name and fields
    (the notifier does not depend on the monitor's classes); None for any other event."""
    if event.event not in ("monitor_finding", "monitor_cleared"):
        return None
    fields = fields_of(event)
    return f"monitor:{fields.get('detector', '')}:{fields.get('key', '')}"


def escape(value: object, limit: int = MAX_FIELD_CHARS) -> str:
    """`value` as inert mrkdwn: control characters escaped, bare URLs defused, cut at `limit`."""
    text = str(value)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("://", ":\u200b//")


def is_alert(event: FleetEvent) -> bool:
    if isinstance(event, StoryEvent):
        return event.to in ALERT_STATES
    if event.story:
        return event.event in ALERT_KINDS
    return event.event not in ACTIVITY_KINDS


def fields_of(event: FleetEvent) -> dict[str, str]:
    """The event's own fields (an unknown kind's as they came), empty ones left out."""
    data = event.raw if isinstance(event, UnknownEvent) else event.fields()
    return {k: v for k, v in data.items() if k not in _SKIPPED_FIELDS and v not in ("", None)}


def summary(event: FleetEvent) -> str:
    """One mrkdwn line: the kind in bold, then its fields (a transition as from → to)."""
    fields = fields_of(event)
    head = f"*{escape(event.event or 'event')}*"
    moved = ""
    if "to" in fields:
        moved = f" {escape(fields.pop('from', '?'))} → {escape(fields.pop('to'))}"
    rest = " ".join(f"{escape(k, 40)}={escape(v)}" for k, v in sorted(fields.items()))
    return f"{head}{moved} {rest}".rstrip()


def plan(
    event: FleetEvent,
    facts: StoryFacts | None,
    alerts: str,
    activity: str,
    dozzle: str | None = None,
) -> list[Message]:
    """The posts one stream entry makes: a story's enqueue starts its thread, its later events are
    replies there (one that needs a human also alerts); a fleet-wide event is one unthreaded post."""
    line = summary(event)
    context = _context(facts, facts.worker if facts else "", dozzle)
    if not event.story:
        icon = ":rotating_light:" if is_alert(event) else ":information_source:"
        message = _message(alerts if is_alert(event) else activity, f"{icon} {line}", context)
        finding = finding_thread(event)
        if finding is None:
            return [message]
        # a finding opens a thread in the alerts channel; its "cleared" is a reply there
        opened = event.event == "monitor_finding"
        return [replace(message, thread_of=finding, parent=opened, story=False)]
    story = escape(event.story, 80)
    if event.event == "enqueued":
        title = escape(facts.title if facts else "", 200)
        domain = escape(facts.domain if facts else "", 40)
        head = f":inbox_tray: *{story}* ({domain}) {title}"
        return [_message(activity, head, context, thread_of=event.story, parent=True)]
    alert = is_alert(event)
    reply = _message(activity, line, context, thread_of=event.story, broadcast=alert and alerts == activity)
    if not alert or alerts == activity:
        return [reply]
    return [reply, _message(alerts, f":rotating_light: *{story}* {line}", context)]


def mergeable(event: FleetEvent) -> bool:
    """An ordinary reply in its story's thread (activity, not its parent): several of one story's may
    be posted as one reply. What needs a human (failed, held, killed, budget critical) never is."""
    return bool(event.story) and event.event not in ("enqueued", "") and not is_alert(event)


def merged(replies: list[Message]) -> tuple[Message, int]:
    """The first replies (one story's, in stream order) as one reply within the bounds: one section
    (and its context) per event, a fallback of one line per event; and how many it holds (>= 1)."""
    count, blocks, chars = 0, 0, 0
    for reply in replies[:MAX_MERGED_EVENTS]:
        if count and (blocks + len(reply.blocks) > MAX_BLOCKS or chars + len(reply.text) > MAX_MERGED_CHARS):
            break
        count, blocks, chars = count + 1, blocks + len(reply.blocks), chars + len(reply.text) + 1
    taken = replies[:count]
    # one line per event: a newline in an event's own text (a reason) must not make it two
    text = "\n".join(r.text.replace("\n", " ") for r in taken)
    return replace(taken[0], text=text, blocks=[b for r in taken for b in r.blocks]), count


def flattened(message: Message) -> Message:
    """A story reply as a message of its own (a webhook has no threads): the story id first."""
    if not message.thread_of or message.parent or not message.story:
        return message
    head = f"*{escape(message.thread_of, 80)}* "
    blocks = [dict(b) for b in message.blocks]
    if blocks and blocks[0].get("type") == "section":
        blocks[0] = {**blocks[0], "text": {"type": "mrkdwn", "text": head + blocks[0]["text"]["text"]}}
    return Message(message.channel, head + message.text, blocks)  # unthreaded


def parent_for(story: str, facts: StoryFacts | None, activity: str) -> Message:
    """A thread's first message made late (the enqueue was before the notifier's group existed)."""
    title = escape(facts.title if facts else "", 200)
    text = f":inbox_tray: *{escape(story, 80)}* ({escape(facts.domain if facts else '', 40)}) {title}"
    return _message(activity, text, [], thread_of=story, parent=True)


def dozzle_link(dozzle_url: str, container_prefix: str, worker: str) -> str:
    """Dozzle's page of a worker's container: its name is the prefix and the worker's identity (the
    worker name up to its first dot: ``auth-be-2.1a2b3c.41`` runs in ``wave-auth-be-2``)."""
    container = container_prefix + worker.split(".", 1)[0]
    return f"{dozzle_url}/show?name={quote(container, safe='')}"


def _context(facts: StoryFacts | None, worker: str, dozzle: str | None) -> list[str]:
    parts = []
    if facts is not None:
        parts.append(f"state {escape(facts.state, 20)} · cost so far ${facts.cost_usd:.4f}")
    if worker and dozzle:
        # the link's target is ours (the worker's name in it percent-encoded), its label escaped
        parts.append(f"<{dozzle}|logs of {escape(worker, 80)}>")
    elif worker:
        parts.append(f"worker {escape(worker, 80)}")
    return parts


def _message(
    channel: str,
    text: str,
    context: list[str],
    *,
    thread_of: str | None = None,
    parent: bool = False,
    broadcast: bool = False,
) -> Message:
    text = text[:MAX_TEXT_CHARS]
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    if context:
        elements = [{"type": "mrkdwn", "text": part} for part in context]
        blocks.append({"type": "context", "elements": elements})
    fallback = " · ".join([text, *context])
    return Message(channel, fallback, blocks, thread_of, parent, broadcast)
