"""What a command module needs of `wavefleet.cli.App`, typed without importing the CLI (which imports
every command module): the settings, and the story store and domains it builds on first use."""

from __future__ import annotations

from typing import Protocol

from .config import Settings
from .domains import Domains
from .store import StoryStore


class AppLike(Protocol):
    settings: Settings

    @property
    def store(self) -> StoryStore: ...

    @property
    def domains(self) -> Domains: ...
