"""The record of a passing `wave preflight`, and autonomous mode: workers start only on a matching one.

A pass is kept for a day with a digest of the settings it proved things about; `WAVE_AUTONOMOUS=true`
workers compare it with their own settings, and `wave status` shows it.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit, urlunsplit

from redis import Redis

from ..config import Settings
from ..errors import PreflightError
from ..keys import Keys

PASS_TTL_S = 24 * 3600  # a pass proves the setup of today: after a day, run preflight again


# The pass -------------------------------------------------------------------------------------------
def safe_url(url: str) -> str:
    """The Redis URL without its credentials: part of the digest, and safe to show."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def safety_digest(settings: Settings) -> str:
    """sha256 of what preflight proved things about: the sandbox mode, the safety thresholds, the
    judge on or off, and which Redis (its URL without credentials and the key prefix)."""
    relevant = {
        "sandbox": settings.sandbox,
        "safety": settings.safety.model_dump(mode="json"),
        "redis": safe_url(settings.redis.url),
        "prefix": settings.redis.key_prefix,
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class PreflightPass:
    at: float
    by: str
    digest: str
    sandbox: str


def record_pass(redis: Redis, settings: Settings, by: str) -> PreflightPass:
    passed = PreflightPass(time.time(), by, safety_digest(settings), settings.sandbox)
    redis.set(settings.keys.preflight_pass(), json.dumps(asdict(passed)), ex=PASS_TTL_S)
    return passed


def read_pass(redis: Redis, keys: Keys) -> PreflightPass | None:
    raw = redis.get(keys.preflight_pass())
    if raw is None:
        return None
    try:
        fields = json.loads(raw)
        return PreflightPass(
            float(fields["at"]), str(fields["by"]), str(fields["digest"]), str(fields["sandbox"])
        )
    except (ValueError, KeyError, TypeError):
        return None  # not ours to trust: as if there were none


def pass_state(redis: Redis, settings: Settings) -> tuple[str, PreflightPass | None]:
    """``passed`` (a pass for these settings), ``stale`` (for other settings) or ``missing``."""
    found = read_pass(redis, settings.keys)
    if found is None:
        return "missing", None
    return ("passed" if found.digest == safety_digest(settings) else "stale"), found


def status_line(redis: Redis, settings: Settings) -> str:
    """`wave status`'s line: the autonomous mode and the last pass; empty when neither is there to
    tell (autonomous mode off and no pass), as the other status lines stay quiet when all is usual."""
    state, found = pass_state(redis, settings)
    mode = "on" if settings.autonomous else "off"
    if found is None:
        return f"autonomous mode {mode}; preflight: missing (`wave preflight`)" if settings.autonomous else ""
    at = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(found.at))
    if state == "stale":
        return f"autonomous mode {mode}; preflight: stale (passed at {at} for other safety settings)"
    return f"autonomous mode {mode}; preflight: passed at {at} by {found.by}"


def require_pass(redis: Redis, settings: Settings) -> None:
    """What an autonomous worker checks before it starts: PreflightError unless a matching pass exists."""
    if not settings.autonomous:
        return
    state, _found = pass_state(redis, settings)
    if state != "passed":
        why = (
            "none recorded in the last 24 h"
            if state == "missing"
            else "the last one was for other safety settings"
        )
        raise PreflightError(
            f"autonomous mode needs a passing `wave preflight` for these settings ({why}): "
            "run `wave preflight`, or unset WAVE_AUTONOMOUS"
        )
