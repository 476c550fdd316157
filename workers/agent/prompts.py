"""The roles' system prompts: one Markdown file per role in the domain's folder, `prompts/<role>.md`.

A prompt is the role's standing instructions only; the story, plan and QA report are data and go in
the opening user message (so the system prompt is the same on every call, and cacheable).
"""

from __future__ import annotations

from wavefleet.domains import Domain
from wavefleet.errors import ConfigError
from wavefleet.lifecycle import Role

MAX_PROMPT_BYTES = 64_000


def load_prompt(domain: Domain, role: Role) -> str:
    """The role's prompt; a missing, empty or oversized file is a ConfigError naming the file."""
    path = domain.folder / "prompts" / f"{role.value}.md"
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"domain {domain.name}: the {role.value} prompt {path} cannot be read ({exc.strerror}); "
            "write the role's instructions there"
        ) from None
    if not raw.strip() or len(raw) > MAX_PROMPT_BYTES:
        raise ConfigError(
            f"domain {domain.name}: the {role.value} prompt {path} is "
            f"{'empty' if not raw.strip() else f'over {MAX_PROMPT_BYTES} bytes'}; "
            "write the role's instructions there"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"domain {domain.name}: the {role.value} prompt {path} is not UTF-8") from None
