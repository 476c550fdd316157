"""The tools a model calls in the tool loop: files in the jailed worktree, a search, a sandboxed command.

A tool is its `ToolSpec` (name, short description, JSON Schema of its arguments) and a callable
taking the model's arguments and returning the text the model reads; a `ToolError` is an error
result the model sees (a refused path, an ambiguous edit), never a failed stage. Arguments are
model output, hence hostile: each tool validates them against the same pydantic model that
produced its schema, every path goes through the jail and every command through the sandbox.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from wavefleet.errors import StageError, ToolError
from wavefleet.llm.types import ToolSpec
from wavefleet.sandbox import Sandbox

from .. import commands, jail
from .context import LoopLimits, time_left_s

__all__ = ["Tool", "ToolError", "file_tools", "parse_arguments", "run_tool", "schema_of"]

MAX_WRITE_BYTES = 2_000_000  # a file the model writes or edits in one call
MAX_LIST_ENTRIES = 500
MAX_SEARCH_MATCHES = 100
SEARCH_TIME_S = 10.0
SEARCH_FILE_BYTES = 2_000_000  # of each file searched
SEARCH_MEMORY_BYTES = 1 << 30  # the search process's address space (see grep.py)
MAX_PATTERN_CHARS = 2000
GREP = Path(__file__).with_name("grep.py")

A = TypeVar("A", bound=BaseModel)


class Tool(Protocol):
    @property
    def spec(self) -> ToolSpec: ...

    def __call__(self, arguments: dict[str, Any]) -> str: ...


@dataclass(frozen=True)
class FunctionTool:
    """A tool made of a spec and a function of the validated arguments."""

    spec: ToolSpec
    arguments: type[BaseModel]
    function: Callable[[Any], str]

    def __call__(self, arguments: dict[str, Any]) -> str:
        return self.function(parse_arguments(self.arguments, arguments, self.spec.name))


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON Schema of `model` as a tool's input schema (without pydantic's titles: tokens)."""
    schema: dict[str, Any] = _untitled(model.model_json_schema())
    return schema


def _untitled(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _untitled(v) for k, v in value.items() if not (k == "title" and isinstance(v, str))}
    if isinstance(value, list):
        return [_untitled(v) for v in value]
    return value


def parse_arguments(model: type[A], arguments: dict[str, Any], tool: str) -> A:
    """`arguments` validated into `model`, or a ToolError naming each wrong field in one line."""
    try:
        return model.model_validate(arguments)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in exc.errors()[:5]
        )
        raise ToolError(f"invalid arguments for {tool}: {problems}") from None


def _tool(name: str, description: str, arguments: type[A], function: Callable[[A], str]) -> FunctionTool:
    spec = ToolSpec(name=name, description=description, input_schema=schema_of(arguments))
    return FunctionTool(spec, arguments, function)


Path_ = Annotated[str, Field(min_length=1, description="A path relative to the worktree root")]


class ReadArgs(_Args):
    path: Path_
    # le: a larger offset overflows pread's off_t (an OverflowError, not a result the model sees)
    offset: int = Field(default=0, ge=0, le=2**62, description="Byte offset to start at (for large files)")
    limit: int | None = Field(default=None, ge=1, description="Bytes to read (default and maximum: a window)")


class WriteArgs(_Args):
    path: Path_
    content: str = Field(description="The whole new content of the file")


class EditArgs(_Args):
    path: Path_
    old_text: str = Field(min_length=1, description="Exact text to replace; must occur exactly once")
    new_text: str = Field(description="The replacement text")


class ListArgs(_Args):
    path: str = Field(default=".", description="A folder relative to the worktree root")


class SearchArgs(_Args):
    pattern: str = Field(
        min_length=1,
        max_length=MAX_PATTERN_CHARS,
        description="A Python regular expression, matched per line",
    )
    path: str = Field(default=".", description="A folder or file relative to the worktree root")


class RunArgs(_Args):
    command: str | list[str] = Field(
        description="A shell command line (run with sh -c) or an argv list, run in the worktree"
    )


def file_tools(tree: Path, limits: LoopLimits, writable: bool = True) -> list[Tool]:
    """read_file, list_files and search; with write_file and edit_file unless read-only."""
    window = limits.read_window_bytes

    def read(a: ReadArgs) -> str:
        return _read(tree, a, window)

    def write(a: WriteArgs) -> str:
        size = len(a.content.encode())
        if size > MAX_WRITE_BYTES:
            raise ToolError(f"{a.path}: {size} bytes is over the {MAX_WRITE_BYTES}-byte limit of one write")
        jail.write_text(tree, a.path, a.content)
        return f"wrote {a.path} ({size} bytes)"

    tools: list[Tool] = [
        _tool(
            "read_file",
            f"Read a text file of the worktree. Files over {window} bytes are read in windows: "
            "the reply says which bytes it holds and the total size; pass offset for the next one.",
            ReadArgs,
            read,
        ),
        _tool(
            "list_files",
            f"List a folder of the worktree (at most {MAX_LIST_ENTRIES} entries; .git is left out).",
            ListArgs,
            lambda a: _list(tree, a.path),
        ),
        _tool(
            "search",
            f"Search the worktree's text files for a Python regex, line by line (at most "
            f"{MAX_SEARCH_MATCHES} matches, shown as path:line: text).",
            SearchArgs,
            lambda a: _search(tree, a),
        ),
    ]
    if writable:
        tools[1:1] = [
            _tool("write_file", "Create or overwrite a file of the worktree.", WriteArgs, write),
            _tool(
                "edit_file",
                "Replace old_text with new_text in a file; old_text must occur exactly once "
                "(include surrounding lines to make it unique).",
                EditArgs,
                lambda a: _edit(tree, a),
            ),
        ]
    return tools


def run_tool(sandbox: Sandbox, tree: Path, limits: LoopLimits) -> Tool:
    """`run`: a command in the sandbox, in the worktree, with the loop's timeout and output cap."""

    def run(a: RunArgs) -> str:
        argv = ["sh", "-c", a.command] if isinstance(a.command, str) else list(a.command)
        if not argv or not argv[0]:
            raise ToolError("run: the command is empty")
        if any("\0" in arg for arg in argv):
            raise ToolError("run: a command may not contain a NUL byte")
        timeout_s = time_left_s(limits.run_timeout_s)
        if timeout_s <= 0:
            raise ToolError("run: the stage's wall-clock cap has passed; nothing was run")
        before = jail.git_mark(tree)
        try:
            outcome = commands.run_in(
                sandbox,
                argv,
                tree,
                timeout_s=timeout_s,
                max_output_bytes=limits.run_output_bytes,
            )
        except subprocess.TimeoutExpired:
            outcome = None
        except FileNotFoundError as exc:
            _refuse_git_changes(tree, before, argv)
            raise ToolError(f"run: {exc}") from None
        except StageError:
            # The stage ends here (a limit hit, the sandbox gone): never turned into a ToolError the
            # model reads and goes on after. A changed `.git` file is still put back.
            with contextlib.suppress(ToolError):
                _refuse_git_changes(tree, before, argv)
            raise
        _refuse_git_changes(tree, before, argv)
        if outcome is None:
            return f"timed out after {timeout_s:.3g} s: the command was killed"
        cut = f" (only its last {limits.run_output_bytes} bytes)" if outcome.truncated else ""
        return f"exit code {outcome.exit_code}\noutput{cut}:\n{outcome.output}"

    return _tool(
        "run",
        f"Run a command in a sandbox, in the worktree (killed after {limits.run_timeout_s:g} s; no "
        "network unless the domain allows it). The reply has its exit code and the end of its output.",
        RunArgs,
        run,
    )


def _refuse_git_changes(tree: Path, before: jail.GitMark, argv: list[str]) -> None:
    """A command that changed the worktree's `.git`: the `.git` file is put back and the model told;
    a changed `.git` folder (not put back) ends the stage, before the fleet's git (outside the
    sandbox) reads what the command wrote."""
    if jail.git_mark(tree).fingerprint == before.fingerprint:
        return
    if not jail.restore_git(tree, before):
        raise StageError(f"a command changed the worktree's .git folder: {argv[-1][:200]!r}")
    raise ToolError(
        "the command changed the worktree's .git, which is git's, not the agent's: it was put back "
        "(use the files of the worktree only)"
    )


def _read(tree: Path, a: ReadArgs, window: int) -> str:
    limit = min(a.limit or window, window)
    got = jail.read_window(tree, a.path, a.offset, limit)
    if b"\0" in got.data[:8192]:
        raise ToolError(f"{a.path}: a binary file ({got.total} bytes); not shown")
    text = got.data.decode(errors="replace")
    end = got.offset + len(got.data)
    if got.offset == 0 and end >= got.total:
        return text
    more = f"; the next window starts at offset {end}" if end < got.total else "; the end of the file"
    return f"[{a.path}: bytes {got.offset}-{end} of {got.total}{more}]\n{text}"


def _edit(tree: Path, a: EditArgs) -> str:
    text = jail.read_text(tree, a.path, MAX_WRITE_BYTES)
    count = text.count(a.old_text)
    if count == 0:
        raise ToolError(f"{a.path}: old_text was not found; read the file and copy the text exactly")
    if count > 1:
        raise ToolError(
            f"{a.path}: old_text matches {count} times; include surrounding lines so it matches once"
        )
    jail.write_text(tree, a.path, text.replace(a.old_text, a.new_text, 1))
    return f"edited {a.path}"


def _list(tree: Path, relative: str) -> str:
    entries, total = jail.list_folder(tree, relative, MAX_LIST_ENTRIES)
    lines = []
    for e in entries:
        if e.kind == "folder":
            lines.append(f"{e.name}/")
        elif e.kind == "file":
            lines.append(f"{e.name}  ({e.size} bytes)")
        else:
            lines.append(f"{e.name}  ({'symbolic link' if e.kind == 'link' else 'not a regular file'})")
    if total > len(entries):
        lines.append(f"... and {total - len(entries)} more entries")
    return "\n".join(lines) if lines else "(an empty folder)"


def _search(tree: Path, a: SearchArgs) -> str:
    try:
        re.compile(a.pattern)
    except (re.error, RecursionError, OverflowError) as exc:  # nested too deep, a repeat count too big
        raise ToolError(f"search: not a valid Python regex: {exc}") from None
    parts = jail.parts_of(a.path)
    if jail.stat_path(tree, a.path).kind not in ("file", "folder"):
        raise ToolError(f"{a.path}: a symbolic link or not a regular file or folder: refusing to search it")
    job = {
        "root": str(tree),
        "parts": list(parts),
        "pattern": a.pattern,
        "time_s": SEARCH_TIME_S,
        "max_matches": MAX_SEARCH_MATCHES,
        "max_file_bytes": SEARCH_FILE_BYTES,
        "max_memory_bytes": SEARCH_MEMORY_BYTES,
    }
    try:
        # commands.run: the worker's process group and parent-death signal (a halt kills it too)
        done = commands.run([sys.executable, "-I", str(GREP), json.dumps(job)], timeout_s=SEARCH_TIME_S + 2)
    except subprocess.TimeoutExpired:
        raise ToolError(f"search: the pattern took over {SEARCH_TIME_S:g} s; make it simpler") from None
    return _matches(a, done)


def _matches(a: SearchArgs, done: subprocess.CompletedProcess[str]) -> str:
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["failed"])[-1]
        raise ToolError(f"search: {last[:300]}")
    lines, summary = [], {}
    for raw in done.stdout.splitlines():
        item = json.loads(raw)
        if "summary" in item:
            summary = item["summary"]
        else:
            lines.append(f"{item['path']}:{item['line']}: {item['text']}")
    if summary.get("stopped") == "matches":
        lines.append(f"(stopped at {MAX_SEARCH_MATCHES} matches: narrow the pattern or path)")
    elif summary.get("stopped") == "time":
        lines.append(f"(stopped after {SEARCH_TIME_S:g} s: narrow the pattern or path)")
    return "\n".join(lines) if lines else f"no match in {summary.get('files', 0)} text files"


def tool_names(tools: Sequence[Tool]) -> list[str]:
    return [t.spec.name for t in tools]
