"""One round trip for everything a finished call writes: Lua scripts and plain commands on a pipeline.

redis-py sends SCRIPT EXISTS before every pipeline that holds scripts, a second round trip on each
call. Here scripts are queued by their sha; the rare NOSCRIPT (Redis restarted or flushed its
scripts since they were loaded) is answered by running just that script again, directly, so no
command of the batch runs twice.
"""

from __future__ import annotations

from typing import Any

from redis import Redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError


class Batch:
    def __init__(self, redis: Redis) -> None:
        self.pipe = redis.pipeline(transaction=False)
        self._scripts: dict[int, tuple[Script, list[Any], list[Any]]] = {}
        self._queued = 0

    def script(self, script: Script, keys: list[Any], args: list[Any]) -> int:
        """Queue a script call; returns its index in `execute()`'s results."""
        self._scripts[self._queued] = (script, keys, args)
        self.pipe.evalsha(script.sha, len(keys), *keys, *args)
        return self._next()

    def command(self, name: str, *args: Any, **kwargs: Any) -> int:
        """Queue a plain command (``batch.command("xadd", key, fields)``); returns its index."""
        getattr(self.pipe, name)(*args, **kwargs)
        return self._next()

    @property
    def queued(self) -> int:
        return self._queued

    def _next(self) -> int:
        self._queued += 1
        return self._queued - 1

    def execute(self) -> list[Any]:
        try:
            results = list(self.pipe.execute(raise_on_error=False))
        finally:
            self.pipe.reset()
        for index, result in enumerate(results):
            if isinstance(result, NoScriptError):
                script, keys, args = self._scripts[index]
                results[index] = script(keys=keys, args=args)  # loads it, then runs it once
            elif isinstance(result, Exception):
                raise result
        return results
