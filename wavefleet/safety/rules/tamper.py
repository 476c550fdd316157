"""Rules on checks turned off through their configuration or by moving tests away: a human decides.

A story may rightly touch test or lint configuration, so these escalate and never block. File rules
read a written file by its name (pytest, ESLint, flake8/ruff, mypy configuration, package.json's test
script); command rules read `sed -i`/`perl -i` renaming tests, `mv`/`git mv` and `git rm -r` of tests.
"""

from __future__ import annotations

import json
import re

from .base import Hit, escalate
from .git import split_git
from .shell import Command

__all__ = ["config_hits", "strip_code_comments", "tamper_command_hits"]

# Files whose name says which tool they configure (lower-case normalised path).
_PYTEST_CFG = re.compile(r"(?:^|/)(?:\.?pytest\.ini|setup\.cfg|tox\.ini|pyproject\.toml)$")
_ESLINT_CFG = re.compile(r"(?:^|/)(?:\.eslintrc(?:\.\w+)?|eslint\.config\.[cm]?[jt]s|package\.json)$")
_ESLINT_IGNORE = re.compile(r"(?:^|/)\.eslintignore$")
_LINT_CFG = re.compile(
    r"(?:^|/)(?:\.flake8|setup\.cfg|tox\.ini|\.?ruff\.toml|pyproject\.toml|\.?mypy\.ini|\.pylintrc|pylintrc)$"
)
_PACKAGE_JSON = re.compile(r"(?:^|/)package\.json$")

# A pytest `addopts` value: the rest of its line, its indented continuation lines, or a TOML list.
_ADDOPTS = re.compile(r"^\s*addopts\s*=\s*(\[[^\]]*\]?|.*(?:\n[ \t]+\S.*)*)", re.M)
# Options that leave tests out of every run: ignore, deselect, -k, disable a plugin, only collect.
_DESELECTS = re.compile(
    r"(?:^|[\s\"'\[,])(?:--ignore(?:-glob)?\b|--deselect\b|-k\b|-p\s*[\"']?\s*no:(?!cacheprovider|randomly)"
    r"|--co\b|--collect-only\b|--continue-on-collection-errors\b)"
)
_TESTPATHS = re.compile(r"^\s*testpaths\s*=\s*(\[[^\]]*\]?|.*(?:\n[ \t]+\S.*)*)", re.M)
_TEST_DIR_WORD = re.compile(r"test|spec|e2e|src|check")
_ESLINT_OFF = re.compile(  # a JSON/JS list or a YAML one
    r"(?:ignorepatterns|ignores)[\"']?\s*:\s*(?:\[|\n\s*-)\s*[\"']?(?:\*\*?|\*\*/\*|\.|\./?\*\*?(?:/\*)?)(?:[\"']|\s*$)",
    re.M,
)
_EMPTY_RULES = re.compile(r"[\"']?rules[\"']?\s*:\s*\{\s*\}")
_ESLINT_BASE = re.compile(r"extends|recommended|configs\.|\.\.\.")
_IGNORE_ALL_LINE = re.compile(r"^\s*(?:\*|\*\*|\*\*/\*|/\*\*?|\.|\./)\s*$", re.M)
# flake8/ruff/pylint/mypy: everything excluded, nothing selected, every rule ignored, errors ignored.
_LINT_OFF = re.compile(
    r"^\s*(?:extend-)?exclude\s*=\s*(?:[\[\"'\s]*)(?:\.|\*|\*\*|\./|\.\*|\*\*/\*)[\"'\s]*\]?\s*$"
    r"|^\s*(?:lint\.)?select\s*=\s*(?:\[\s*\]|)\s*$|^\s*(?:lint\.)?(?:extend-)?ignore\s*=\s*\[?\s*[\"']?all\b"
    r"|^\s*disable\s*=\s*all\b|^\s*ignore_errors\s*=\s*true\b",
    re.M,
)
_PER_MODULE = re.compile(r"\[mypy-|overrides|^\s*module\s*=", re.M)
_NO_RUNNER = re.compile(
    r"^\s*(?:exit\s+0|true|:|echo\b[^&|;]*|node\s+-e\s+[\"']?[\"']?)\s*$|\|\|\s*(?:true|:|exit\s+0|echo)\b"
    r"|;\s*(?:true|exit\s+0)\s*$"
)
_CONFIG_GATE = ("addopts", "testpaths", "ignore", "rules", "*", "exclude", "select", "disable", "test")


def config_hits(path: str, text: str) -> list[Hit]:
    """The config-tamper rules a written file fires (`path` and `text` lower-case normalised)."""
    if not any(word in text for word in _CONFIG_GATE):
        return []
    hits: list[Hit] = []
    if _PYTEST_CFG.search(path) and _pytest_off(text):
        hits.append(
            escalate("tamper.test_config", f"test configuration leaves tests out of the run ({path})")
        )
    if (_ESLINT_CFG.search(path) and _eslint_off(text)) or (
        _ESLINT_IGNORE.search(path) and _IGNORE_ALL_LINE.search(text)
    ):
        hits.append(escalate("tamper.lint_config", f"ESLint configuration checks nothing ({path})"))
    elif _LINT_CFG.search(path) and _lint_off(text):
        hits.append(escalate("tamper.lint_config", f"linter or type checker configured off ({path})"))
    if _PACKAGE_JSON.search(path) and _test_script_off(text):
        hits.append(escalate("tamper.test_script", "package.json's test script runs no tests"))
    return hits


def _pytest_off(text: str) -> bool:
    if any(_DESELECTS.search(m.group(1)) for m in _ADDOPTS.finditer(text)):
        return True
    for m in _TESTPATHS.finditer(text):
        entries = re.findall(r"[^\s\"',\[\]]+", m.group(1))
        if not any(_TEST_DIR_WORD.search(e) for e in entries):
            return True  # no folder that tests live in: pytest collects nothing, or not the suite
    return False


def _lint_off(text: str) -> bool:
    """Off for the whole project: `ignore_errors` counts unless it sits in a per-module section."""
    per_module = _PER_MODULE.search(text) is not None
    return any(
        not (per_module and m.group(0).strip().startswith("ignore_errors")) for m in _LINT_OFF.finditer(text)
    )


def _eslint_off(text: str) -> bool:
    if _ESLINT_OFF.search(text):
        return True
    return bool(_EMPTY_RULES.search(text)) and not _ESLINT_BASE.search(text)


def _test_script_off(text: str) -> bool:
    try:
        scripts = json.loads(text).get("scripts", {})
    except (ValueError, AttributeError):
        found = re.findall(r"[\"']test[\"']\s*:\s*\"((?:[^\"\\]|\\.)*)\"", text)
        return any(_NO_RUNNER.search(s) for s in found)
    if not isinstance(scripts, dict):
        return False
    return any(
        isinstance(v, str) and _NO_RUNNER.search(v)
        for k, v in scripts.items()
        if k == "test" or k.startswith("test:")
    )


# A test's definition, as a substitution's pattern would spell it (Python, JS, Go, Ruby specs).
_TEST_DEF = re.compile(r"def\\?s*\+?\s*test|class\s+test|func\s+test|(?<![\w.])(?:it|test|describe)\\?\(")
_SUBST = re.compile(r"\bs([/|#,:@!])(.*?)\1(.*?)\1")
_DELETE = re.compile(r"/([^/]*)/\s*d\b")
_TEST_DIR = re.compile(r"(?:\./)?(?:tests?|__tests__|spec|specs|e2e|cypress)/?")
_TEST_FILE = re.compile(r"(?:^|/)(?:test_[^/]*\.py|[^/]*_test\.(?:py|go)|[^/]*\.(?:test|spec)\.[jt]sx?)$")


def rename_tests_hits(cmd: Command, t: str) -> list[Hit]:
    """`sed -i`/`perl -i` that renames test definitions away (`s/def test_/def _test_/`) or deletes them.
    Its script is read on the whole line `t`: the command splitter cuts `s/it(/xit(/` at the parenthesis."""
    if not re.search(r"(?:^|\s)(?:-\w*i|--in-place)", cmd.text):
        return []
    for m in _SUBST.finditer(t):
        pattern, replacement = m.group(2), m.group(3)
        if _TEST_DEF.search(pattern) and not _same_test_def(pattern, replacement):
            return [escalate("tamper.rename_tests", f"{cmd.name} renames tests so they are not collected")]
    if any(_TEST_DEF.search(m.group(1)) for m in _DELETE.finditer(t)):
        return [escalate("tamper.rename_tests", f"{cmd.name} deletes test definitions")]
    return []


def _same_test_def(pattern: str, replacement: str) -> bool:
    """The replacement still starts the definition the pattern matched (`def test_a` -> `def test_b`)."""
    head = _TEST_DEF.search(pattern)
    return head is not None and replacement.replace("\\", "").startswith(head.group(0).replace("\\", ""))


def move_tests_hits(cmd: Command, sub_args: list[str] | None = None) -> list[Hit]:
    """`mv`/`git mv` of a test suite or a test file to a name no runner collects; `git rm -r` of a suite
    (`sub_args`: a git subcommand and its arguments, for `git mv`/`git rm`)."""
    args = sub_args[1:] if sub_args else list(cmd.args)
    ops = [a for a in args if not a.startswith("-")]
    verb = sub_args[0] if sub_args else cmd.name
    if verb == "rm":
        recursive = any(
            a == "-r" or (a.startswith("-") and "r" in a and not a.startswith("--")) for a in args
        )
        if recursive and any(_TEST_DIR.fullmatch(a) for a in ops):
            return [escalate("tamper.delete_tests", "git rm deletes a test suite")]
        return []
    if len(ops) < 2:
        return []
    sources, target = ops[:-1], ops[-1]
    if any(_TEST_DIR.fullmatch(s) for s in sources) and not _TEST_DIR.fullmatch(target):
        return [escalate("tamper.move_tests", f"{verb} moves a test suite out of the runner's reach")]
    if any(_TEST_FILE.search(s) for s in sources) and not (
        _TEST_FILE.search(target) or target.endswith("/") or "." not in target.rsplit("/", 1)[-1]
    ):
        return [escalate("tamper.move_tests", f"{verb} renames a test file so it is not collected")]
    return []


_BLOCK_COMMENT = re.compile(r"^[ \t]*/\*.*?\*/", re.M | re.S)


def strip_code_comments(content: str) -> str:
    """Code without the block comments that open a line (`/* eslint-disable */`): read as shell text
    they would spell the glob `/*`, a command name matching every program in /bin."""
    return _BLOCK_COMMENT.sub("", content) if "/*" in content else content


def tamper_command_hits(t: str, cmds: list[Command]) -> list[Hit]:
    """The command rules above, over the simple commands `cmds` of command line `t`."""
    hits: list[Hit] = []
    for cmd in cmds:
        if cmd.name in ("sed", "perl"):
            hits.extend(rename_tests_hits(cmd, t))
        elif cmd.name == "mv":
            hits.extend(move_tests_hits(cmd))
        elif cmd.name == "git":
            _, sub, args = split_git(cmd)
            if sub in ("mv", "rm"):
                hits.extend(move_tests_hits(cmd, [sub, *args]))
    return hits
