"""The agents' file tools keep to the worktree: a table of escape attempts, each refused with a
message the model sees (a ToolError), and nothing outside the worktree changed."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from wavefleet.errors import StageError, ToolError
from wavefleet.sandbox import BwrapSandbox
from workers.agent import tools as tools_module
from workers.agent.context import LoopLimits
from workers.agent.tools import Tool, file_tools, run_tool

pytestmark = pytest.mark.timeout(30)
SECRET = "SECRET-do-not-leak\n"
Setup = Callable[[Path, Path], None]


def _link_file(tree: Path, outside: Path) -> None:
    (tree / "leak.txt").symlink_to(outside / "secret.txt")


def _link_dir(tree: Path, outside: Path) -> None:
    (tree / "leak").symlink_to(outside)


def _link_by_run(tree: Path, outside: Path) -> None:
    # made by the model's own sandboxed command, as the loop would run it
    run = run_tool(BwrapSandbox(), tree, LoopLimits())
    assert run({"command": f"ln -s {outside} leak && ln -s {outside}/secret.txt leak.txt"}).startswith(
        "exit code 0"
    )


def _device(tree: Path, outside: Path) -> None:
    if os.geteuid() == 0:  # a real character device (/dev/zero's numbers): reading it never ends
        os.mknod(tree / "leak.txt", 0o666 | stat.S_IFCHR, os.makedev(1, 5))
    else:
        os.mkfifo(tree / "leak.txt")


def _fifo(tree: Path, outside: Path) -> None:
    os.mkfifo(tree / "leak.txt")


def _hard_link(tree: Path, outside: Path) -> None:
    os.link(outside / "secret.txt", tree / "leak.txt")


def _nothing(tree: Path, outside: Path) -> None:
    pass


# (name, setup, path the model gives, tools that must refuse it)
ALL = ("read_file", "write_file", "edit_file", "list_files", "search")
FILES = ("read_file", "write_file", "edit_file", "search")
ATTEMPTS: list[tuple[str, Setup, str, tuple[str, ...]]] = [
    ("absolute path", _nothing, "{outside}/secret.txt", ALL),
    ("dot-dot", _nothing, "../outside/secret.txt", ALL),
    ("dot-dot inside", _nothing, "src/../../outside/secret.txt", ALL),
    ("symlink to a file out", _link_file, "leak.txt", FILES),
    ("symlink to a folder out", _link_dir, "leak/secret.txt", ALL),
    ("symlink folder itself", _link_dir, "leak", ("list_files", "search")),
    ("symlinks a run command made", _link_by_run, "leak/secret.txt", ALL),
    ("file symlink a run command made", _link_by_run, "leak.txt", FILES),
    ("device node", _device, "leak.txt", FILES),
    ("fifo", _fifo, "leak.txt", FILES),
    ("hard link out (write)", _hard_link, "leak.txt", ("write_file", "edit_file")),
    ("NUL byte", _nothing, "app.py\x00.txt", ALL),
    ("lone surrogate", _nothing, "app\ud800.py", ALL),
    ("5000-character path", _nothing, "a/" * 2500 + "x.txt", ALL),
    ("git hooks", _nothing, ".git/hooks/pre-commit", ALL),
    ("git config", _nothing, ".git/config", ALL),
    ("git folder", _nothing, ".git", ("list_files", "search")),
    ("git, other case", _nothing, ".GIT/config", ALL),
]


def _arguments(tool: str, path: str) -> dict[str, Any]:
    return {
        "read_file": {"path": path},
        "write_file": {"path": path, "content": "pwned"},
        "edit_file": {"path": path, "old_text": "SECRET", "new_text": "pwned"},
        "list_files": {"path": path},
        "search": {"pattern": "SECRET", "path": path},
    }[tool]


def _snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every entry under `root` (links not followed): mode, modification time, content digest."""
    seen = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            info = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(info.st_mode) else ""
            seen[str(path.relative_to(root))] = (info.st_mode, info.st_mtime_ns, digest)
    return seen


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, Path, dict[str, Tool]]:
    """A real git worktree at tmp/tree, and tmp/outside holding a secret (also in .git/config)."""
    tree, outside = tmp_path / "tree", tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    tree.mkdir()
    (tree / "app.py").write_text("x = 1\n")
    subprocess.run(["git", "init", "-q"], cwd=tree, check=True)
    with (tree / ".git" / "config").open("a") as config:
        config.write(f"# {SECRET}")
    tools = {t.spec.name: t for t in file_tools(tree, LoopLimits())}
    return tree, outside, tools


@pytest.mark.parametrize(
    ("name", "tool"), [(a[0], tool) for a in ATTEMPTS for tool in a[3]], ids=lambda v: str(v)[:40]
)
def test_every_escape_attempt_is_refused_with_a_message_and_nothing_outside_changes(
    world: tuple[Path, Path, dict[str, Tool]], name: str, tool: str
) -> None:
    tree, outside, tools = world
    _, setup, path, _ = next(a for a in ATTEMPTS if a[0] == name)
    # Given the attempt's setup (a link, a device, a FIFO...)
    setup(tree, outside)
    before_outside, before_git = _snapshot(outside), _snapshot(tree / ".git")

    # When the model calls the tool on the path, it gets a refusal it can read (never a crash)
    with pytest.raises(ToolError) as refused:
        tools[tool](_arguments(tool, path.format(outside=outside)))
    message = str(refused.value)
    assert message and "\n" not in message and len(message) < 400
    assert "SECRET" not in message

    # Then nothing outside the worktree, and nothing in its .git, changed
    assert _snapshot(outside) == before_outside
    assert _snapshot(tree / ".git") == before_git


def test_a_search_of_the_whole_worktree_never_follows_a_link_out_nor_reads_git(
    world: tuple[Path, Path, dict[str, Tool]],
) -> None:
    tree, outside, tools = world
    _link_dir(tree, outside)
    _link_file(tree, outside)
    (tree / "src").mkdir()
    (tree / "src" / "ok.py").write_text("# SECRET marker inside\n")
    assert tools["search"]({"pattern": "SECRET"}) == "src/ok.py:1: # SECRET marker inside"
    listing = tools["list_files"]({"path": "."})
    assert listing.splitlines() == [
        "app.py  (6 bytes)",
        "leak  (symbolic link)",
        "leak.txt  (symbolic link)",
        "src/",
    ]


def test_a_large_file_is_read_in_windows_that_say_where_they_are(tmp_path: Path) -> None:
    (tmp_path / "big.txt").write_text("0123456789" * 250)
    read = {t.spec.name: t for t in file_tools(tmp_path, LoopLimits(read_window_bytes=1000))}["read_file"]
    first = read({"path": "big.txt"})
    assert first.splitlines()[0] == "[big.txt: bytes 0-1000 of 2500; the next window starts at offset 1000]"
    assert len(first.split("\n", 1)[1]) == 1000
    last = read({"path": "big.txt", "offset": 2000, "limit": 5000})
    assert last.splitlines()[0] == "[big.txt: bytes 2000-2500 of 2500; the end of the file]"


def test_a_hostile_regex_is_stopped_and_a_bad_one_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a.txt").write_text("a" * 40 + "!\n")
    search = {t.spec.name: t for t in file_tools(tmp_path, LoopLimits())}["search"]
    with pytest.raises(ToolError, match="not a valid Python regex"):
        search({"pattern": "(unclosed"})
    assert search({"pattern": "a+!"}) == "a.txt:1: " + "a" * 40 + "!"
    # a pattern that backtracks for hours is killed at the search's deadline
    monkeypatch.setattr(tools_module, "SEARCH_TIME_S", 0.5)
    started = time.monotonic()
    with pytest.raises(ToolError, match=r"the pattern took over 0\.5 s"):
        search({"pattern": "(a+)+$"})
    assert time.monotonic() - started < 5


FSMONITOR_ATTACK = (
    "git init -q --bare evil && "
    "printf '[core]\\n\\trepositoryformatversion = 0\\n\\tfsmonitor = \"touch {flag}; false\"\\n' "
    "> evil/config && "
    'echo "gitdir: $PWD/evil" > .git'
)


def test_a_run_command_that_rewrites_a_worktrees_git_file_is_undone_before_git_reads_it(
    tmp_path: Path,
) -> None:
    # Given a real worktree of a real clone (its .git is a file naming the git dir outside it)
    repo, tree, flag = tmp_path / "repo", tmp_path / "tree", tmp_path / "PWNED"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    ident = ["-c", "user.name=t", "-c", "user.email=t@x"]
    subprocess.run(["git", *ident, "-C", str(repo), "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    subprocess.run(["git", "-C", str(repo), "worktree", "add", "-q", str(tree), "-b", "t"], check=True)
    original = (tree / ".git").read_text()
    run = run_tool(BwrapSandbox(), tree, LoopLimits())

    # When a sandboxed command points .git at a git dir whose config runs a command (core.fsmonitor)
    with pytest.raises(ToolError, match=r"changed the worktree's \.git"):
        run({"command": FSMONITOR_ATTACK.format(flag=flag)})

    # Then the .git file was put back, and the fleet's git (on the host) runs nothing of the command's
    assert (tree / ".git").read_text() == original
    subprocess.run(
        ["git", "-c", "core.hooksPath=/dev/null", "status"], cwd=tree, check=True, capture_output=True
    )
    assert not flag.exists()
    # and a command that leaves .git alone is a plain result
    assert run({"command": "echo fine > notes.txt"}).startswith("exit code 0")


def test_a_run_command_that_changes_a_git_folders_config_ends_the_stage(
    world: tuple[Path, Path, dict[str, Tool]],
) -> None:
    tree, _, _ = world
    run = run_tool(BwrapSandbox(), tree, LoopLimits())
    with pytest.raises(StageError, match=r"changed the worktree's \.git folder") as ended:
        run({"command": "echo '[core]' >> .git/config"})
    assert not isinstance(ended.value, ToolError)
