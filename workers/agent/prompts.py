"""The roles' system prompts: one Markdown file per role in the domain's folder, `prompts/<role>.md`.

A prompt is the role's standing instructions only; the story, plan and QA report are data and go in
the opening user message (so the system prompt is the same on every call, and cacheable).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from wavefleet.domains import Domain
from wavefleet.errors import ConfigError
from wavefleet.lifecycle import Role

MAX_PROMPT_BYTES = 64_000


def load_prompt(domain: Domain, role: Role) -> str:
    """The role's prompt; a missing, empty, oversized or non-UTF-8 file is a ConfigError naming it.

    Domain files may be hostile, and the prompt is sent to the model provider: a `prompts/pm.md`
    linked to the fleet's password file would hand it over. So neither the folder nor the file may
    be a symbolic link, and the file must be a regular file with one name (no hard link)."""
    path = domain.folder / "prompts" / f"{role.value}.md"
    try:
        raw = _read_plain(path)
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


def _read_plain(path: Path) -> bytes:
    """At most MAX_PROMPT_BYTES + 1 bytes of a regular, singly linked file reached through no link."""
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fd = os.open(path.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder)
    finally:
        os.close(folder)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            raise OSError(errno.EPERM, "not a regular file with one name (a link or a special file)")
        return os.read(fd, MAX_PROMPT_BYTES + 1)
    finally:
        os.close(fd)
