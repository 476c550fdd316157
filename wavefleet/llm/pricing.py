"""Prices of model calls: what a completed call cost, and what an upcoming one may cost at most.

Money is counted in integer nano-USD (wavefleet/money.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..money import to_nusd
from .types import Usage

if TYPE_CHECKING:
    from .registry import ProviderSection

PER_MILLION = 1_000_000
REQUEST_OVERHEAD_TOKENS = 32  # role markers and message framing the provider adds
TOOLS_OVERHEAD_TOKENS = 512  # the tool-use system prompt a provider adds when tools are given


@dataclass(frozen=True)
class Prices:
    """USD per million tokens."""

    input: float
    output: float
    cache_read: float
    cache_write: float

    @classmethod
    def of(cls, section: ProviderSection) -> Prices:
        # a provider with no cache-write price (xAI caches by itself) pays its input price
        write = getattr(section, "price_cache_write_per_mtok_usd", section.price_input_per_mtok_usd)
        return cls(
            section.price_input_per_mtok_usd,
            section.price_output_per_mtok_usd,
            section.price_cache_read_per_mtok_usd,
            write,
        )

    def cost_usd(self, usage: Usage) -> float:
        return (
            usage.input_tokens * self.input
            + usage.output_tokens * self.output
            + usage.cache_read_tokens * self.cache_read
            + usage.cache_write_tokens * self.cache_write
        ) / PER_MILLION


@dataclass(frozen=True)
class Estimate:
    """The most a call is expected to cost, reserved against budgets and rate limits before it is sent."""

    input_tokens: int
    output_tokens: int
    cost_nusd: int

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def estimate(
    payload_bytes: int, has_tools: bool, max_tokens: int, prices: Prices, bytes_per_token: float
) -> Estimate:
    """Input tokens from the request's size in bytes, output at `max_tokens`, priced at the dearest
    input rate.

    With `bytes_per_token` 1.0 this is an upper bound for byte-level tokenizers (no token is shorter
    than one byte); the default 3.0 is closer to real counts and can, rarely, be exceeded.
    """
    input_tokens = math.ceil(payload_bytes / bytes_per_token) + REQUEST_OVERHEAD_TOKENS
    if has_tools:
        input_tokens += TOOLS_OVERHEAD_TOKENS
    dearest_input = max(prices.input, prices.cache_write)
    cost = (input_tokens * dearest_input + max_tokens * prices.output) / PER_MILLION
    return Estimate(input_tokens, max_tokens, to_nusd(cost))
