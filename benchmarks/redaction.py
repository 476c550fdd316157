"""Redaction cost per log line: the first redactor (known values, `in` and `replace`) against the
one-pass redactor (known values and every credential shape behind a literal prefilter).

Three kinds of line: a typical structlog line (no trigger: the prefilter says no), a line with a
trigger but no secret (an httpx URL: the full pattern runs), and a line with a key in it.

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
    "trigger, no secret": "2026-12-02T07:10:00Z [info] HTTP Request: POST "
    'https://api.anthropic.com/v1/messages "HTTP/1.1 200 OK"',
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
    print(f"{'line':<20} {'before µs':>10} {'after µs':>10}")
    for name, line in LINES.items():
        before = timeit.timeit(partial(first_redactor, line), number=number) / number * 1e6
        after = timeit.timeit(partial(redactor.text, line), number=number) / number * 1e6
        print(f"{name:<20} {before:>10.2f} {after:>10.2f}")


if __name__ == "__main__":
    main()
