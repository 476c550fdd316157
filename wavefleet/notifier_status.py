"""The Slack notifier's state as `wave status` shows it (apart from wavefleet/notifier.py, so the
status command does not import slack_sdk)."""

from __future__ import annotations

from redis import Redis
from redis.exceptions import ResponseError

from .keys import Keys

GROUP = "notifier"  # its consumer group on the events stream


def status_line(redis: Redis, keys: Keys) -> str | None:
    """`wave status`'s notifier line (None when there is nothing to say): entries waiting for the
    notifier, dead letters, its current problem."""
    try:
        waiting = backlog(redis.xinfo_groups(keys.events()), keys)
    except ResponseError:  # no stream yet: nothing waits
        waiting = 0
    dead = int(redis.get(keys.notifier_dead_total()) or 0)
    problem = redis.hget(keys.notifier_state(), "problem")
    if not waiting and not dead and not problem:
        return None
    line = f"notifier: {waiting} waiting, {dead} dead letters"
    return f"{line} ({problem})" if problem else line


def backlog(groups: list[dict[str, object]], keys: Keys) -> int:
    """Events the notifier has not finished (delivered but unacknowledged, or not yet read), from
    XINFO GROUPS of the events stream (an empty list: no group yet, so nothing is owed)."""
    for group in groups:
        if group.get("name") == keys.events_group(GROUP):
            return int(str(group.get("pending") or 0)) + int(str(group.get("lag") or 0))
    return 0
