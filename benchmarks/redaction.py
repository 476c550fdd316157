"""Redaction cost per log line: the first redactor (known values, `in` and `replace`) against the
one-pass redactor (known values and every credential shape behind a literal prefilter).

Lines without a candidate (a stage's line, a model call's, an httpx URL: the prefilter says no) and
with one (a URL with a password, a key: the full pattern runs).

    python benchmarks/redaction.py
"""

from __future__ import annotations

import sys
import timeit
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wavefleet.redact import Redactor

KNOWN = ["sk-ant-settings-0123456789abcdef", "redis-password-0123", "slack-bot-token-xyz"]
LINES = {
    "typical": "2026-12-02T07:10:00Z [info] [AUTH-BE-1] stage finished agent=offline ok=True "
    "transient=False duration_s=1.234 story=AUTH-007 stage=be round=1",
    "llm call": "2026-12-02T07:10:00Z [info] llm call cache_hit=False cost_usd=0.003183 latency_ms=18.4 "
    "model=claude-sonnet-4-6 provider=anthropic role=be story=AUTH-001 task=code_generation tokens=929",
    "a URL": "2026-12-02T07:10:00Z [info] HTTP Request: POST "
    'https://api.anthropic.com/v1/messages "HTTP/1.1 200 OK"',
    "a URL with a user": "2026-12-02T07:10:00Z [info] connecting to redis://wave:redis-password-0123@redis:6379/0",
    "with a key": "2026-12-02T07:10:00Z [warning] provider said: invalid x-api-key "
    "sk-ant-api03-AbCdEf0123456789_ghIJ",
}


def first_redactor(value: str) -> str:
    for secret in KNOWN:
        if secret in value:
            value = value.replace(secret, "[redacted]")
    return value


def main() -> None:
    redactor = Redactor(KNOWN)
    number = 50_000
    print(f"{'line':<20} {'before µs':>10} {'after µs':>10}")  # µs per line, mean of 50,000 runs
    for name, line in LINES.items():
        before = timeit.timeit(partial(first_redactor, line), number=number) / number * 1e6
        after = timeit.timeit(partial(redactor.text, line), number=number) / number * 1e6
        print(f"{name:<20} {before:>10.2f} {after:>10.2f}")


if __name__ == "__main__":
    main()
