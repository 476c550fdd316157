"""Redis clients for the fleet: one decoding client for WAVE's own keys, one raw client for RQ."""

from __future__ import annotations

from redis import Redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import AuthenticationError, ConnectionError, RedisError, TimeoutError
from redis.retry import Retry

from .config import Settings
from .errors import RedisUnavailableError
from .text import mask_url


def connect(settings: Settings, *, decode: bool = True) -> Redis:
    """A client that retries a dropped connection with backoff (bounded per command)."""
    password = settings.redis.password.get_secret_value() if settings.redis.password else None
    return Redis.from_url(
        settings.redis.url,
        username=settings.redis.username,
        password=password,
        decode_responses=decode,
        socket_timeout=settings.redis.socket_timeout_s,
        socket_connect_timeout=5,
        health_check_interval=15,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=5),
        retry_on_error=[ConnectionError, TimeoutError],
    )


def check(redis: Redis, settings: Settings) -> None:
    """Ping once, without the client's retries (a command-line user should not wait for them);
    turn the failure into one line naming the URL (never the password)."""
    password = settings.redis.password.get_secret_value() if settings.redis.password else None
    probe = Redis.from_url(
        settings.redis.url,
        username=settings.redis.username,
        password=password,
        socket_connect_timeout=5,
        socket_timeout=5,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        probe.ping()
    except AuthenticationError:
        raise RedisUnavailableError(
            f"Redis at {redis_location(settings)} refused the user or password "
            "(set WAVE_REDIS__USERNAME and WAVE_REDIS__PASSWORD)"
        ) from None
    except RedisError as exc:
        raise RedisUnavailableError(
            f"cannot reach Redis at {redis_location(settings)}: {exc} "
            "(start one with `wave up`, or set WAVE_REDIS__URL)"
        ) from None
    finally:
        probe.close()


def redis_location(settings: Settings) -> str:
    """The Redis URL with any inline password masked, safe to print."""
    return mask_url(settings.redis.url)
