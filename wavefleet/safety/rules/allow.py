"""The ordinary work the rules allow without asking the judge: tests, linters, builds, local git,
reading and listing, file edits inside the worktree."""

from __future__ import annotations

import re

from .base import is_outside_path
from .git import split_git
from .shell import Command

__all__ = ["ordinary_command"]

# Programs that only read, print, or change files of the worktree (the rules have already looked at
# their paths): allowed with any arguments that stay inside the worktree.
_PLAIN = frozenset(
    [
        "ls",
        "ll",
        "pwd",
        "echo",
        "printf",
        "cat",
        "head",
        "tail",
        "less",
        "more",
        "wc",
        "grep",
        "egrep",
        "fgrep",
        "rg",
        "ag",
        "diff",
        "cmp",
        "sort",
        "uniq",
        "tree",
        "which",
        "type",
        "true",
        "false",
        "test",
        "[",
        "[[",
        "mkdir",
        "touch",
        "cp",
        "mv",
        "rm",
        "rmdir",
        "sed",
        "awk",
        "jq",
        "yq",
        "cut",
        "tr",
        "basename",
        "dirname",
        "realpath",
        "readlink",
        "stat",
        "file",
        "du",
        "date",
        "sleep",
        "find",
        "cd",
        "pytest",
        "ruff",
        "mypy",
        "black",
        "isort",
        "flake8",
        "pylint",
        "eslint",
        "prettier",
        "tsc",
        "jest",
        "vitest",
        "mocha",
        "pyright",
        "tox",
        "nox",
        "column",
        "nl",
        "fold",
        "paste",
        "comm",
        "xxd",
        "od",
        "hexdump",
        "md5sum",
        "sha256sum",
        "sha1sum",
        "tac",
        "rev",
        "seq",
        "yes",
        "tput",
        "exit",
        "source",
        ".",
        "ln",
        "chmod",
        "tar",
        "gzip",
        "gunzip",
        "zcat",
        "unzip",
        "zip",
    ]
)
_SUBCOMMANDS: dict[str, frozenset[str]] = {
    "git": frozenset(
        [
            "status",
            "diff",
            "log",
            "show",
            "add",
            "commit",
            "branch",
            "checkout",
            "switch",
            "restore",
            "stash",
            "rev-parse",
            "blame",
            "grep",
            "ls-files",
            "merge-base",
            "describe",
            "mv",
            "rm",
            "tag",
            "shortlog",
            "reflog",
            "show-ref",
            "symbolic-ref",
            "cat-file",
            "rev-list",
            "config",
            "init",
            "notes",
            "cherry-pick",
            "revert",
            "merge",
            "rebase",
            "reset",
            "clean",
            "worktree",
        ]
    ),
    "npm": frozenset(
        ["test", "t", "run", "run-script", "ci", "ls", "outdated", "audit", "version", "help", "pack"]
    ),
    "yarn": frozenset(["test", "run", "lint", "build", "typecheck", "format"]),
    "pnpm": frozenset(["test", "run", "lint", "build", "typecheck", "format"]),
    "npx": frozenset(
        ["jest", "vitest", "eslint", "prettier", "tsc", "playwright", "mocha", "ts-node", "tsx", "stylelint"]
    ),
    "make": frozenset(
        [
            "test",
            "tests",
            "lint",
            "build",
            "check",
            "format",
            "fmt",
            "typecheck",
            "all",
            "clean",
            "dist",
            "docs",
            "coverage",
        ]
    ),
    "go": frozenset(["test", "build", "vet", "fmt", "mod", "version", "env", "list"]),
    "cargo": frozenset(["test", "build", "check", "clippy", "fmt", "doc", "run"]),
}
_PY_MODULES = frozenset(
    [
        "pytest",
        "mypy",
        "ruff",
        "black",
        "isort",
        "flake8",
        "pylint",
        "unittest",
        "compileall",
        "json.tool",
        "coverage",
        "doctest",
    ]
)
_URL_HOST = re.compile(r"\b[a-z]+://([^\s/:?#@]*)")
_LOCAL_HOST = re.compile(r"^(?:localhost|127(?:\.\d{1,3}){3}|0\.0\.0\.0)$")
_PIP_READ = frozenset(("list", "show", "freeze", "check", "--version", "-v"))


def ordinary_command(cmd: Command) -> bool:  # noqa: PLR0911 - one return per kind of program
    """`cmd` is everyday work of a development agent, with every path inside the worktree."""
    if any(is_outside_path(a) for a in cmd.args if not a.startswith("-")) or any(
        is_outside_path(a.split("=", 1)[1]) for a in cmd.args if a.startswith("-") and "=" in a
    ):  # `--output=/etc/x`: an option's value is a path too
        return False
    name, args = cmd.name, cmd.args
    if name in _PLAIN:
        return True
    if name == "git":
        _, sub, rest = split_git(cmd)
        return sub in _SUBCOMMANDS["git"] and not (
            sub == "config" and ("--global" in rest or "--system" in rest)
        )
    if name in ("npm", "yarn", "pnpm") and args[:1] in (("install",), ("i",)):
        return _install_declared(name, args)
    if name in ("curl", "wget", "http"):
        urls = _URL_HOST.findall(cmd.text)
        return bool(urls) and all(_LOCAL_HOST.match(h) for h in urls) and "@" not in cmd.text
    if name in _SUBCOMMANDS:
        return not args or args[0] in _SUBCOMMANDS[name] or (name == "make" and args[0].startswith("-"))
    if name in ("npm", "yarn", "pnpm") or name.startswith("pip"):
        return _install_declared(name, args)
    if re.fullmatch(r"python[\d.]*", name):
        return _python(args)
    return name in ("node", "npm", "ruby", "java", "go", "cargo", "rustc") and args in (
        ("--version",),
        ("-v",),
    )


def _install_declared(name: str, args: tuple[str, ...]) -> bool:
    """`npm install`/`npm ci` with no package named, `pip install -r requirements*.txt`, `pip install -e .`:
    what the project already declares. A named package goes to the judge (typosquats)."""
    if name.startswith("pip"):
        if args[:1] and args[0] in _PIP_READ:
            return True
        return args[:1] == ("install",) and (
            (
                len(args) == 3
                and args[1] in ("-r", "--requirement")
                and re.fullmatch(r"[\w./-]*requirements[\w.-]*\.txt", args[2]) is not None
            )
            or args[1:] in (("-e", "."), ("-e", ".[dev]"), ("-e", ".[test]"), (".",))
        )
    return args in (("install",), ("i",), ("ci",)) or (
        args[:1] == ("install",) and all(a.startswith("-") for a in args[1:])
    )


def _python(args: tuple[str, ...]) -> bool:
    if args[:1] in (("--version",), ("-V",)):
        return True
    if args[:1] == ("-m",) and len(args) > 1:
        if args[1] == "pip":
            return _install_declared("pip", args[2:])
        return args[1] in _PY_MODULES
    return False
