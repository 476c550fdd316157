"""Rules on a file tool's path: outside the worktree, git's own files, credentials files."""

from __future__ import annotations

import re

from ..normalize import normalize
from .base import Hit, block, is_outside_path
from .content import has_credential_path

__all__ = ["path_hits"]

_GIT_DIR = re.compile(r"(?:^|/)\.git(?:/|$)")


def path_hits(path: str, *, write: bool) -> list[Hit]:
    """The rules a file tool's `path` (relative to the worktree) fires; `write` for write_file/edit_file."""
    p = normalize(path).replace("\\", "/")
    if "\0" in path or not p.strip():
        return [block("fs.bad_path", "an empty path or one with a NUL byte")]
    hits: list[Hit] = []
    if is_outside_path(p) or p.startswith("$"):
        rule = "fs.write_outside" if write else "fs.read_outside"
        hits.append(block(rule, f"{'writes' if write else 'reads'} outside the worktree ({path[:80]})"))
    if has_credential_path(p):
        hits.append(block("secrets.credential_file", f"a credentials file ({path[:80]})"))
    if _GIT_DIR.search(p) and (write or re.search(r"\.git/config|\.git-credentials", p)):
        hits.append(block("fs.git_dir", "git's own files (hooks, config) are not the agent's"))
    return hits
