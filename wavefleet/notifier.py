"""The Slack notifier: the fleet's events stream read through its own consumer group and posted to Slack.

Producers never wait on it: it reads what they already wrote. Entries are taken in order and acked
only once Slack took every post of the entry or it went to the dead letters, so a crash or an outage
loses nothing (a restarted notifier reads its unacked entries first). An outage is retried with a
doubling backoff, `retries` times, then the message is dead-lettered (a bounded list `wave status`
counts); a refused token is logged once and every message meanwhile is dead-lettered at once (a
revoked token does not come back by waiting; README "Slack").

One story's ordinary thread replies are posted as one reply when they come together: taken while the
notifier keeps up, a reply waits up to `merge_window_s` for its story's next events; taken behind (a
read that filled its batch, or what a restart finds pending), the ones found together merge at
once. Slack takes about a message a second a channel, and a zero-work stage's events come faster;
alerts and parents never wait, and a story's alert posts its waiting replies first. A stop leaves
held replies pending: the next start posts them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import replace
from typing import Any, Protocol

import structlog
from redis import Redis
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry import RetryHandler
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.webhook import WebhookClient

from .config import Settings, SlackSettings
from .errors import ConfigError, SlackDeliveryError
from .fleet_events import GATHER_S, EventConsumer, FleetEvent, StoryEvent, UnknownEvent
from .notifier_status import GROUP
from .redact import redactor_for
from .slack_format import (
    MAX_MERGED_EVENTS,
    Message,
    StoryFacts,
    dozzle_link,
    flattened,
    mergeable,
    merged,
    parent_for,
    plan,
)

BLOCK_MS = 1000  # how long one read waits for new entries (stopping is checked between reads)
# Entries held at once, waiting replies included: a merge window's worth at 500 events a second.
HELD_MAX = 1000
Entry = tuple[str, FleetEvent]  # a stream entry's id and its event
AUTH_ERRORS = frozenset({"invalid_auth", "token_revoked", "account_inactive", "not_authed", "token_expired"})
# The story hash's fields a post shows (read alone: the whole record is most of a post's Redis cost).
FACT_FIELDS = ("id", "title", "domain", "state", "cost_usd")
WEBHOOK_AUTH = frozenset({"invalid_token", "no_service", "no_team", "team_disabled", "action_prohibited"})

log = structlog.get_logger("wave.notifier")
# The SDK logs an error for every failed request; the notifier says it once per outage or bad token.
logging.getLogger("slack_sdk").setLevel(logging.CRITICAL)


class Sender(Protocol):
    threads: bool

    def post(self, message: Message, thread_ts: str | None) -> str:
        """Post `message` (a reply when `thread_ts` is given); its ts. SlackDeliveryError if not."""
        ...


class WebApiSender:
    """chat.postMessage with the bot token; the SDK waits out 429s itself (Retry-After)."""

    threads = True

    def __init__(self, slack: SlackSettings, token: str) -> None:
        handlers: list[RetryHandler] = [RateLimitErrorRetryHandler(max_retry_count=slack.rate_limit_retries)]
        self.client = WebClient(
            token=token, base_url=slack.base_url, timeout=int(slack.timeout_s), retry_handlers=handlers
        )

    def post(self, message: Message, thread_ts: str | None) -> str:
        extra: dict[str, Any] = {"thread_ts": thread_ts} if thread_ts else {}
        if thread_ts and message.broadcast:
            extra["reply_broadcast"] = True
        try:
            reply = self.client.chat_postMessage(
                channel=message.channel,
                text=message.text,
                blocks=message.blocks,
                unfurl_links=False,
                unfurl_media=False,
                **extra,
            )
        except SlackApiError as exc:
            raise _api_error(exc) from None
        except OSError as exc:  # refused, reset, a timeout (URLError is one)
            raise SlackDeliveryError(f"Slack unreachable: {type(exc).__name__}", kind="transient") from None
        return str(reply.get("ts") or "")


def _api_error(exc: SlackApiError) -> SlackDeliveryError:
    status, error = exc.response.status_code, str(exc.response.get("error", "") or "")
    if error in AUTH_ERRORS:
        return SlackDeliveryError(f"Slack refused the bot token ({error})", kind="auth")
    if status == 429 or status >= 500 or error in ("ratelimited", "service_unavailable", "fatal_error"):
        return SlackDeliveryError(f"Slack answered {status} {error}".rstrip(), kind="transient")
    return SlackDeliveryError(f"Slack rejected the message ({error or status})", kind="rejected")


class WebhookSender:
    """An incoming webhook: one channel (the webhook's own), no threads, no ts."""

    threads = False

    def __init__(self, slack: SlackSettings, url: str) -> None:
        handlers: list[RetryHandler] = [RateLimitErrorRetryHandler(max_retry_count=slack.rate_limit_retries)]
        self.client = WebhookClient(url, timeout=int(slack.timeout_s), retry_handlers=handlers)

    def post(self, message: Message, thread_ts: str | None) -> str:
        try:
            reply = self.client.send(text=message.text, blocks=message.blocks, unfurl_links=False)
        except OSError as exc:  # refused, reset, a timeout (URLError is one)
            raise SlackDeliveryError(f"Slack unreachable: {type(exc).__name__}", kind="transient") from None
        if reply.status_code == 200:
            return ""
        body = str(reply.body or "")[:80]
        if reply.status_code in (403, 404, 410) or body in WEBHOOK_AUTH:
            raise SlackDeliveryError(f"Slack refused the webhook ({body or reply.status_code})", kind="auth")
        kind = "transient" if reply.status_code == 429 or reply.status_code >= 500 else "rejected"
        raise SlackDeliveryError(f"Slack answered {reply.status_code} {body}".rstrip(), kind=kind)


def sender_for(slack: SlackSettings) -> Sender:
    """The bot token's Web API client (threads), else the webhook's; ConfigError when neither is set."""
    if slack.bot_token is not None:
        return WebApiSender(slack, slack.bot_token.get_secret_value())
    if slack.webhook_url is not None:
        return WebhookSender(slack, slack.webhook_url.get_secret_value())
    raise ConfigError(
        "Slack is not configured: set WAVE_SLACK__BOT_TOKEN (threads) or WAVE_SLACK__WEBHOOK_URL"
    )


class Notifier:
    """Reads the events stream (group `notifier`) and posts each entry, in order."""

    def __init__(self, settings: Settings, redis: Redis, sender: Sender, name: str) -> None:
        self.settings, self.slack, self.keys = settings, settings.slack, settings.keys
        self.redis, self.sender = redis, sender
        self.consumer = EventConsumer(redis, self.keys, GROUP, name)
        self.redactor = redactor_for(settings)
        self.stopping = threading.Event()
        self._posted: dict[str, int] = {}  # entry id -> how many of its posts Slack took already
        self._auth_failed = self._outage = False
        # Cost per message (benchmarks/README.md "Notifier cost"): an entry's acks go with the next
        # entry's reads, in one round trip; the state hash's problem is cleared only when one may be
        # there (at start, after one of ours), not after every post.
        self._owed_acks: list[str] = []
        self._threads: dict[str, str] = {}  # the current entry's story -> thread ts, read with its facts
        self._due: dict[str, float] = {}  # a held reply's entry id -> when it goes (time.monotonic())
        self._problem_said = True  # a problem may be left by an earlier notifier: the first post clears it

    def run(self) -> None:
        # taken before a restart, never acked: posted first, at once
        backlog = self.consumer.all_pending(self.slack.batch)
        log.info("notifier started", pending=len(backlog), threads=self.sender.threads)
        while not self.stopping.is_set():
            if not self._any_due(backlog):
                if len(backlog) >= HELD_MAX:  # full of waiting replies: the oldest is due first
                    self._ack_owed()
                    self.stopping.wait(self._until_due())
                    continue
                taken = self._take(len(backlog))
                backlog += taken
                if not self._any_due(backlog):
                    if taken:  # only held replies came: let more gather (an alert waits this much more)
                        self.stopping.wait(min(GATHER_S, self._until_due()))
                    continue
            backlog = self._post_due(backlog)
        # Held replies stay pending (unacked): the next start posts them at once. Posting them now
        # could take a second a message at Slack's rate, and a stop must be quick.
        self._ack_owed()

    def _take(self, held: int) -> list[Entry]:
        """New entries (waiting up to a second for one, less when a held reply is due sooner), after
        acking what is done. An ordinary reply taken while the notifier keeps up (the read did not
        fill a batch) waits up to `merge_window_s` for its story's next events; behind (a full
        batch), or with HELD_MAX replies held already, nothing waits."""
        count = min(self.slack.batch, HELD_MAX - held)
        block_ms = BLOCK_MS if not self._due else max(1, min(BLOCK_MS, int(self._until_due() * 1000) + 1))
        taken = self.consumer.read(count, block_ms=block_ms, ack=self._owed_acks)
        self._owed_acks = []
        if len(taken) < self.slack.batch and self.slack.merge_window_s and self.sender.threads:
            due = time.monotonic() + self.slack.merge_window_s
            for entry_id, event in taken:
                if mergeable(event) and len(self._due) < HELD_MAX:
                    self._due[entry_id] = due
        return taken

    def _until_due(self) -> float:
        """Seconds until the first held reply is due (0 when one is)."""
        return max(0.0, min(self._due.values(), default=0.0) - time.monotonic())

    def _any_due(self, backlog: list[Entry]) -> bool:
        """Whether the backlog holds anything to post now: an entry that does not wait, or a held
        reply whose time is up."""
        return len(backlog) > len(self._due) or (bool(backlog) and self._until_due() == 0.0)

    def _post_due(self, backlog: list[Entry]) -> list[Entry]:
        """Post what is due, in stream order (one story's replies merged into one, README "Slack");
        what is left: the replies still waiting, and what was not reached when stopping."""
        now = time.monotonic()
        # a story with an entry that does not wait (an alert, its parent): its replies before it go now
        unheld = {event.story for entry_id, event in backlog if entry_id not in self._due}
        positions: dict[str, list[int]] = {}  # each story's indexes, made when a group is first due
        posted: set[int] = set()
        for i, (entry_id, event) in enumerate(backlog):
            if self.stopping.is_set():
                break  # a stop is quick: what is left stays pending for the next start
            if i in posted or (self._due.get(entry_id, now) > now and event.story not in unheld):
                continue  # posted in a group, or waits (its story's later replies wait longer)
            if not positions:
                for j, (_id, other) in enumerate(backlog):
                    positions.setdefault(other.story, []).append(j)
            group = self._replies_to_merge(backlog, i, positions[event.story])
            if len(group) > 1:
                done = self.deliver_merged([backlog[j] for j in group])
            else:
                done = 1 if self.deliver(entry_id, event) else 0
            if not done:
                break  # stopping mid-backoff: the entries stay pending for the next start
            for j in group[:done]:
                taken_id = backlog[j][0]
                self._owed_acks.append(taken_id)  # acked with the next entry's reads (or idling)
                self._posted.pop(taken_id, None)
                self._due.pop(taken_id, None)
            posted.update(group[:done])
        left = [entry for i, entry in enumerate(backlog) if i not in posted]
        if len(self._due) > len(left):  # only the backlog's entries may wait (`_any_due` counts on it)
            ids = {entry_id for entry_id, _event in left}
            self._due = {i: at for i, at in self._due.items() if i in ids}
        return left

    def _replies_to_merge(self, backlog: list[Entry], i: int, story_at: list[int]) -> list[int]:
        """The backlog's indexes posted as one: entry `i` and, when it is an ordinary reply in a
        story's thread, that story's later ones up to its first that is not (its order holds; other
        stories' entries between are left where they are). `story_at`: the story's indexes."""
        first = backlog[i][1]
        if not self.sender.threads or not mergeable(first):
            return [i]
        group = [i]
        for j in story_at[story_at.index(i) + 1 :]:
            if not mergeable(backlog[j][1]) or len(group) == MAX_MERGED_EVENTS:
                break
            group.append(j)
        return group

    def _ack_owed(self) -> None:
        self.consumer.ack(self._owed_acks)
        self._owed_acks = []

    def deliver(self, entry_id: str, event: FleetEvent) -> bool:
        """Post every message of one entry; True once each is posted or dead-lettered."""
        if isinstance(event, UnknownEvent) and not event.event and not event.raw:
            # taken, then trimmed from the capped stream during a long outage: its text is gone
            self._dead_letter(
                [(entry_id, event, Message("", ""))], "trimmed from the stream before it was posted"
            )
            return True
        [facts] = self._read(event)
        messages = self._plan(event, facts)
        done = self._posted.get(entry_id, 0)
        for message in messages[done:]:
            if not self._post_with_retries([(entry_id, event, message)], message, facts):
                return False
            self._posted[entry_id] = done = done + 1
        return True

    def deliver_merged(self, entries: list[Entry]) -> int:
        """Post the first of one story's ordinary replies as one reply (README "Slack"); how many it
        held, all posted or dead-lettered together (0: stopping mid-backoff, none is)."""
        events = [event for _id, event in entries]
        facts = self._read(*events)  # the story's latest state and cost; each event's own worker
        replies: list[tuple[str, FleetEvent, Message]] = []
        for (entry_id, event), its_facts in zip(entries, facts, strict=True):
            [reply] = self._plan(event, its_facts)  # an ordinary reply is one post
            replies.append((entry_id, event, reply))
        message, count = merged([reply for _id, _event, reply in replies])
        return count if self._post_with_retries(replies[:count], message, facts[-1]) else 0

    def _plan(self, event: FleetEvent, facts: StoryFacts | None) -> list[Message]:
        dozzle = None
        if facts and facts.worker and self.settings.dozzle_url:
            dozzle = dozzle_link(
                self.settings.dozzle_url, self.settings.dozzle_container_prefix, facts.worker
            )
        return plan(event, facts, self.slack.alerts_channel, self.slack.activity_channel, dozzle)

    def _post_with_retries(
        self, entries: list[tuple[str, FleetEvent, Message]], message: Message, facts: StoryFacts | None
    ) -> bool:
        """Post `message` (made of `entries`, each dead-lettered with its own text if it never is)."""
        delay = self.slack.backoff_s
        for attempt in range(1, self.slack.retries + 1):
            try:
                self._post(message, facts)
            except SlackDeliveryError as exc:
                if exc.kind == "auth":
                    self._report_auth(str(exc))
                if exc.kind != "transient" or attempt == self.slack.retries:
                    self._dead_letter(entries, str(exc))
                    return True
                self._report_outage(str(exc))
                self._problem(f"{exc}: try {attempt} of {self.slack.retries}")
                if self.stopping.wait(delay):
                    return False
                delay = min(delay * 2, self.slack.backoff_max_s)
            else:
                self._recovered()
                return True
        return True

    def _post(self, message: Message, facts: StoryFacts | None) -> None:
        message = self._redacted(message if self.sender.threads else flattened(message))
        thread_ts = None
        if message.thread_of and self.sender.threads and not message.parent:
            thread_ts = self._thread(message.thread_of, facts, lazy_parent=message.story)
        ts = self.sender.post(message, thread_ts)
        if message.parent and message.thread_of and ts:
            self.redis.set(self.keys.notifier_thread(message.thread_of), ts, ex=self.slack.thread_ttl_s)

    def _thread(self, story: str, facts: StoryFacts | None, lazy_parent: bool = True) -> str | None:
        """The story's thread ts; its parent is posted first when there is none (the story was
        enqueued before this notifier's group existed, or its thread key expired)."""
        ts = self._threads.get(story) or self.redis.get(self.keys.notifier_thread(story))
        if ts or not lazy_parent:
            return str(ts) if ts else None  # a finding's alert gone (expired): an unthreaded reply
        self._post(parent_for(story, facts, self.slack.activity_channel), facts)
        return str(self.redis.get(self.keys.notifier_thread(story)) or "")

    def _redacted(self, message: Message) -> Message:
        text = self.redactor.text(message.text)
        blocks = self.redactor.clean(message.blocks)
        return replace(message, text=text, blocks=blocks)

    def _read(self, *events: FleetEvent) -> list[StoryFacts | None]:
        """One story's facts for each of its `events` (its state and cost now, the worker that ran each
        event's stage) and its thread ts (kept for `_thread`; an enqueue starts the thread, so it has
        none), in one round trip, which also carries the acks of the entries done before it."""
        self._threads = {}
        story = events[0].story
        if not story:
            return [None] * len(events)
        pipe = self.redis.pipeline(transaction=False)
        if self._owed_acks:
            pipe.xack(self.keys.events(), self.keys.events_group(GROUP), *self._owed_acks)
        pipe.hmget(self.keys.story(story), FACT_FIELDS)
        roles = [event.role if isinstance(event, StoryEvent) else "" for event in events]
        if any(roles):
            pipe.hgetall(self.keys.story_results(story))
        if any(event.event != "enqueued" for event in events):
            pipe.get(self.keys.notifier_thread(story))
        replies = pipe.execute()[1 if self._owed_acks else 0 :]
        self._owed_acks = []
        fields = dict(zip(FACT_FIELDS, replies.pop(0), strict=True))
        results = replies.pop(0) if any(roles) else {}
        if replies and replies[0]:
            self._threads[story] = str(replies[0])
        return [_facts(fields, _worker(results, role) if role else "") for role in roles]

    def _dead_letter(self, entries: list[tuple[str, FleetEvent, Message]], error: str) -> None:
        """One letter per entry (a merged reply's entries each with its own text), in stream order."""
        pipe = self.redis.pipeline()
        for entry_id, event, message in entries:
            letter = {"entry": entry_id, "event": event.event, "story": event.story, "error": error}
            letter.update(
                channel=message.channel, text=self.redactor.text(message.text), at=f"{time.time():.3f}"
            )
            pipe.lpush(self.keys.notifier_dead(), json.dumps(letter))
        pipe.ltrim(self.keys.notifier_dead(), 0, self.slack.dead_letters_max - 1)
        pipe.incrby(self.keys.notifier_dead_total(), len(entries))
        pipe.execute()
        if not self._auth_failed:  # a refused token is said once, not per message
            ids = [entry_id for entry_id, _event, _message in entries]
            log.warning(
                "slack message dead-lettered",
                entries=ids,
                kinds=[e.event for _i, e, _m in entries],
                error=error,
            )

    def _report_outage(self, problem: str) -> None:
        if not self._outage:  # once per outage, not per try: the state hash has the current one
            log.warning(f"{problem}: messages wait and are retried with backoff")
        self._outage = True

    def _report_auth(self, problem: str) -> None:
        if self._auth_failed:
            return
        self._auth_failed = True
        fix = "set WAVE_SLACK__BOT_TOKEN (or WAVE_SLACK__WEBHOOK_URL) to a valid one and restart the notifier"
        log.error(f"{problem}: messages go to the dead letters until it is fixed; {fix}")
        self._problem(problem)

    def _problem(self, problem: str) -> None:
        self._problem_said = True
        self.redis.hset(
            self.keys.notifier_state(), mapping={"problem": problem, "since": f"{time.time():.0f}"}
        )

    def _recovered(self) -> None:
        if self._auth_failed or self._outage:
            log.info("slack takes messages again")
        self._auth_failed = self._outage = False
        if self._problem_said:
            self.redis.hdel(self.keys.notifier_state(), "problem", "since")
            self._problem_said = False


def _order(result_name: str) -> tuple[int, int]:
    """(round, attempt) of a stage result's name ``r{round}.{role}.a{attempt}``."""
    head, _, attempt = result_name.rpartition(".a")
    round_ = head.split(".", 1)[0].removeprefix("r")
    return (int(round_) if round_.isdigit() else 0, int(attempt) if attempt.isdigit() else 0)


def _facts(story: dict[str, str | None], worker: str) -> StoryFacts | None:
    """What the story hash says (the fields read directly: parsing the whole record is most of the
    cost of a post); None when it is gone or unreadable (posted without what the store knows)."""
    try:
        cost = float(story.get("cost_usd") or 0)
    except ValueError:
        return None
    if not story.get("id"):
        return None
    return StoryFacts(story["title"] or "", story["domain"] or "", story["state"] or "", cost, worker)


def _worker(results: dict[str, str], role: str) -> str:
    """The worker that ran `role`'s latest stage, from its stored result ("" if none: the history
    does not name the attempt, and a stage's result is stored before its event)."""
    mine = [(_order(name), raw) for name, raw in results.items() if f".{role}.a" in name]
    latest = max(mine) if mine else None
    try:
        worker = json.loads(latest[1]).get("worker", "") if latest else ""
    except (ValueError, AttributeError):
        return ""
    return worker if isinstance(worker, str) else ""
