"""Git rules: force pushes and pushes to shared branches, resets, deletes and commits there, config
that runs code, remotes changed; any other push waits for a human."""

from __future__ import annotations

import re

from .base import PROTECTED, Hit, block, escalate, is_outside_path
from .shell import Command

__all__ = ["git_hits", "split_git"]

_GLOBAL_WITH_VALUE = frozenset(
    ("-c", "--git-dir", "--work-tree", "--namespace", "--exec-path", "--config-env")
)
_FORCE = re.compile(
    r"(?:^|\s)(?:-f|--force(?:-with-lease|-if-includes)?(?:=\S*)?|-[a-z]*f[a-z]*|--mirror|--delete|-d|--prune)(?=\s|$)"
    r"|(?:^|\s)\+\S|(?:^|\s):\S"
)
_CONFIG_EXEC = re.compile(
    r"core\.(?:hookspath|sshcommand|fsmonitor|editor|pager|askpass|gitproxy)|\balias\.|credential\.|url\.\S*insteadof"
    r"|http\.proxy|remote\.\S+\.(?:url|pushurl)|filter\.|diff\.\S+\.textconv|sequence\.editor|core\.worktree"
)
_COMMITS = frozenset(("commit", "merge", "cherry-pick", "revert", "am", "pull", "rebase"))


def split_git(cmd: Command) -> tuple[list[str], str, list[str]]:
    """A git command's global options, its subcommand and the subcommand's arguments."""
    args = list(cmd.args)
    i, glob = 0, []
    while i < len(args) and args[i].startswith("-"):
        takes = args[i] in _GLOBAL_WITH_VALUE or args[i] == "-C"
        glob.extend(args[i : i + 1 + takes])
        i += 1 + takes
    return glob, (args[i] if i < len(args) else ""), args[i + 1 :]


def git_hits(cmd: Command, t: str, branch: str) -> list[Hit]:  # noqa: PLR0912 - one branch per subcommand
    glob, sub, args = split_git(cmd)
    hits = _global(glob)
    rest = " ".join(args)
    operands = [a for a in args if not a.startswith("-")]
    if sub == "push":
        hits.extend(_push(rest, operands, branch))
    elif sub == "reset" and "--hard" in args:
        if any(PROTECTED.search(a) for a in operands) or re.search(
            r"\bgit\s+(?:checkout|switch)\s+(?:-\S+\s+)*(?:main|master)\b", t
        ):
            hits.append(block("git.reset_shared", "git reset --hard on a shared branch"))
        else:
            hits.append(escalate("git.reset_hard", "git reset --hard throws work away", 0.7))
    elif sub in ("checkout", "switch") and any(PROTECTED.search(a) for a in operands[:1]):
        if re.search(r"\bgit\s+(?:commit|merge|push|cherry-pick|am|revert|reset)\b", t):
            hits.append(block("git.commit_protected", f"git {sub} to a shared branch, then changes it"))
        else:
            hits.append(escalate("git.switch_protected", f"git {sub} to a shared branch", 0.7))
    elif sub in _COMMITS and branch and PROTECTED.search(branch) and sub != "pull":
        hits.append(block("git.commit_protected", f"git {sub} on the shared branch {branch}"))
    elif (
        sub == "branch"
        and re.search(r"(?:^|\s)(?:-[dDmMfcC]|--delete|--force|--move|--copy)\b", rest)
        and any(PROTECTED.search(a) for a in operands)
    ):
        hits.append(block("git.branch_protected", "deletes or moves a shared branch"))
    elif sub == "update-ref" and any(PROTECTED.search(a) for a in operands):
        hits.append(block("git.branch_protected", "rewrites a shared branch's ref"))
    elif sub == "config":
        hits.extend(_config(rest))
    elif sub == "remote" and operands[:1] and operands[0] in ("add", "set-url", "rename"):
        hits.append(escalate("git.remote_change", "adds or changes a remote"))
    elif sub in ("filter-branch", "filter-repo", "replace") or (sub == "reflog" and "expire" in args):
        hits.append(escalate("git.rewrite_history", f"git {sub} rewrites history"))
    return hits


def _global(glob: list[str]) -> list[Hit]:
    hits: list[Hit] = []
    for i, opt in enumerate(glob):
        value = glob[i + 1] if i + 1 < len(glob) else ""
        # Lower-cased text: `-c` is both -C PATH and -c KEY=VALUE; a value without "=" is a path.
        if opt.startswith(("--git-dir", "--work-tree")) or (opt == "-c" and "=" not in value):
            path = opt.split("=", 1)[1] if "=" in opt else value
            if is_outside_path(path):
                hits.append(block("fs.git_outside", "runs git on a repository outside the worktree"))
        if opt.startswith("--config-env") and _CONFIG_EXEC.search(f"{opt} {value}"):
            hits.append(block("git.config_exec", "git --config-env sets a key that can run a program"))
        if opt == "-c" and _CONFIG_EXEC.search(value):
            hits.append(block("git.config_exec", f"git -c {value.split('=')[0]} can run a program"))
    return hits


def _push(rest: str, operands: list[str], branch: str) -> list[Hit]:
    if _FORCE.search(rest):
        return [block("git.force_push", "git push --force (or a delete or mirror) rewrites a shared history")]
    refs = operands[1:]
    if (
        "--all" in rest
        or any(PROTECTED.search(r.split(":")[-1]) for r in refs)
        or (not refs and branch and PROTECTED.search(branch))
    ):
        return [block("git.push_protected", "git push to a protected branch")]
    return [escalate("git.push", "a push leaves the machine: a human approves it", 0.7)]


def _config(rest: str) -> list[Hit]:
    if re.search(r"(?:^|\s)--(?:global|system)\b", rest):
        return [block("git.config_global", "git config outside the worktree (--global/--system)")]
    if _CONFIG_EXEC.search(rest):
        return [block("git.config_exec", "git config that runs a program or redirects a remote")]
    return []
