"""The domain's git repository as the agents see it: one clone per domain, one worktree per branch."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from wavefleet.domains import Domain
from wavefleet.errors import GitError

from . import commands

GIT_TIMEOUT_S = 120
GIT_DIR = ".git"
SYSTEM_ONLY = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}  # find's -execdir refuses a relative PATH entry
# git is the fleet's own tooling and runs on the host: never a hook, whoever wrote one into the clone
# (hooks are not cloned, but a command run unsandboxed could write one through a worktree's gitdir),
# and never an fsmonitor command (a `.git` swapped for one naming a hostile git dir would set one).
NO_HOOKS = ("-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false")
# Agents commit as WAVE; set here so a machine without a global git identity still commits.
IDENTITY = {
    "GIT_AUTHOR_NAME": "WAVE",
    "GIT_AUTHOR_EMAIL": "wave@localhost",
    "GIT_COMMITTER_NAME": "WAVE",
    "GIT_COMMITTER_EMAIL": "wave@localhost",
}


# Talking to a remote never waits for a person: git's and ssh's prompts go to `true`, which answers
# nothing, so a missing credential fails the push at once (a credential helper, key or agent works).
# ssh's own command is left alone: a user's core.sshCommand may be what reaches their host.
NO_PROMPTS = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_ASKPASS": "true",
    "SSH_ASKPASS": "true",
    "SSH_ASKPASS_REQUIRE": "force",
}


def git(cwd: Path, *args: str, check: bool = True) -> str:
    try:
        proc = commands.run(["git", *NO_HOOKS, *args], cwd=cwd, env=_env(), timeout_s=GIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise GitError(f"git {' '.join(args)} timed out after {GIT_TIMEOUT_S}s in {cwd}") from None
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise GitError(f"git {' '.join(args)} failed in {cwd}: {detail[-1] if detail else proc.returncode}")
    return proc.stdout.strip()


def git_head(cwd: Path, max_bytes: int, *args: str) -> tuple[str, bool]:
    """The first `max_bytes` of a git command's output (stdout and stderr), and whether there was
    more: for output a model sized (a diff of files it wrote), read whole into the worker otherwise."""
    try:
        outcome = commands.run_capped(
            ["git", *NO_HOOKS, *args],
            cwd=cwd,
            env=_env(),
            timeout_s=GIT_TIMEOUT_S,
            max_output_bytes=max_bytes,
            head=True,
        )
    except subprocess.TimeoutExpired:
        raise GitError(f"git {' '.join(args)} timed out after {GIT_TIMEOUT_S}s in {cwd}") from None
    if outcome.exit_code != 0 and not outcome.truncated:
        detail = outcome.output.strip().splitlines()
        raise GitError(f"git {' '.join(args)} failed in {cwd}: {detail[-1] if detail else outcome.exit_code}")
    return outcome.output, outcome.truncated


def _env() -> dict[str, str]:
    return {**commands.host_env(), **IDENTITY, **NO_PROMPTS}


def drop_nested_repos(tree: Path) -> list[str]:
    """Remove every `.git` below `tree`'s top (a folder, a file naming a git dir, or a link); returns
    their paths. A sandboxed command can make a nested repository (`git init sub`) with its own
    config: the fleet's `git add` and `status` on the host would enter it as an embedded repository
    and run its `filter.*.clean` command there, outside every sandbox. Its files stay, committed as
    plain files. `find` and `rm`: they never follow a link, and a command may nest folders thousands
    deep, past Python's recursion limit and PATH_MAX (`-execdir` works relative to each folder)."""
    found = commands.run(
        [
            "find",
            str(tree),
            "-mindepth",
            "2",
            "-iname",
            GIT_DIR,
            "-prune",
            "-print0",
            "-execdir",
            "rm",
            "-rf",
            "--",
            "{}",
            "+",
        ],
        env=SYSTEM_ONLY,
        timeout_s=GIT_TIMEOUT_S,
    )
    if found.returncode != 0:
        raise GitError(f"could not clear nested repositories from {tree}: {found.stderr.strip()[-300:]}")
    return [p.removeprefix(f"{tree}/") for p in found.stdout.split("\0") if p]


def remove_tree(path: Path) -> None:
    """`rm -rf` a folder a command may have nested deeper than shutil.rmtree can recurse."""
    commands.run(["rm", "-rf", "--", str(path)], env=SYSTEM_ONLY, timeout_s=GIT_TIMEOUT_S)


def branch_name(story_id: str, role: str) -> str:
    return f"wave/{story_id}-{role}"


class Workspace:
    """A domain's clone under the data dir, and the worktrees the agents work in."""

    def __init__(self, domain: Domain, data_dir: Path) -> None:
        self.domain = domain
        self.root = (data_dir / "repos" / domain.name).resolve()
        self.clone = self.root / "clone"
        self.trees = self.root / "worktrees"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # Several workers share one clone: serialise what changes its administrative files.
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def ensure_clone(self) -> Path:
        """Clone the domain's repository on first use (a plain folder is first made a repository).

        Both steps build in a scratch folder and rename it into place when complete, so a worker
        killed half-way leaves nothing that looks finished."""
        with self._locked():
            if not (self.clone / ".git").exists():
                source = self._source()
                self._build(
                    self.clone,
                    lambda scratch: git(
                        self.root,
                        "clone",
                        "--quiet",
                        "--branch",
                        self.domain.base_branch,
                        str(source),
                        str(scratch),
                    ),
                )
        return self.clone

    def _source(self) -> Path:
        repo = self.domain.repo
        if not repo.is_dir():
            raise GitError(
                f"domain {self.domain.name}: repository {repo} does not exist (fix `repo` in domain.toml)"
            )
        if self.domain.is_git_repo():
            return repo
        # A sample service shipped as a folder: seed a repository from it, once. Only from inside the
        # domain's own folder: seeding commits all of it into every worktree, and a domain file naming
        # any folder (the data dir with the Redis password, ~/.ssh) would hand it to the tests.
        folder = self.domain.folder.resolve()
        if not repo.resolve().is_relative_to(folder):
            raise GitError(
                f"domain {self.domain.name}: {repo} is neither a git repository nor inside {folder}; "
                "only a domain's own folder is seeded as a repository (make it a git repository)"
            )
        seed = self.root / "seed"
        if not (seed / ".git").exists():
            self._build(seed, lambda scratch: self._seed(repo, scratch))
        return seed

    def _seed(self, repo: Path, scratch: Path) -> None:
        self._refuse_links_out(repo)
        shutil.copytree(
            repo, scratch, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache")
        )
        git(scratch, "init", "--quiet", "--initial-branch", self.domain.base_branch)
        git(scratch, "add", "-A")
        git(scratch, "commit", "--quiet", "-m", f"Seed {self.domain.name} sample service")

    def _refuse_links_out(self, repo: Path) -> None:
        """Seeding never follows a symlink out of the folder: a link to the fleet's password file
        would put the file in every agent's worktree. Links inside are copied as links."""
        root = repo.resolve()
        for folder, dirs, files in os.walk(root):  # does not descend into linked folders
            for name in [*dirs, *files]:
                path = Path(folder) / name
                if path.is_symlink() and not path.resolve().is_relative_to(root):
                    raise GitError(
                        f"domain {self.domain.name}: {path} is a symlink to {path.resolve()}, outside "
                        f"{root}; seeding never follows links out of the folder (copy the file in instead)"
                    )

    def _build(self, target: Path, make: Callable[[Path], object]) -> None:
        """Make `target` in a scratch folder beside it, then rename it into place (atomic).

        The scratch folder is this process's own, so leftovers of a killed attempt (whose command
        may still be exiting) are never built upon, only removed."""
        for leftover in [target, *target.parent.glob(f".{target.name}.partial-*")]:
            shutil.rmtree(leftover, ignore_errors=True)
        scratch = target.with_name(f".{target.name}.partial-{os.getpid()}")
        make(scratch)
        scratch.rename(target)

    def worktree(self, branch: str, *, start: str | None = None) -> Path:
        """Check out `branch` in its own worktree, creating it from `start` (default: base) if new."""
        self.ensure_clone()
        path = self._tree_path(branch)
        with self._locked():
            # The branch's ref lock of a killed ref update: the branch is this stage's alone.
            (self.clone / ".git" / "refs" / "heads" / f"{branch}.lock").unlink(missing_ok=True)
            self._drop_tree(path)
            git(self.clone, "worktree", "prune")
            exists = git(self.clone, "branch", "--list", branch) != ""
            if exists and start is None:
                git(self.clone, "worktree", "add", "--quiet", str(path), branch)
            else:
                git(
                    self.clone,
                    "worktree",
                    "add",
                    "--quiet",
                    "-B",
                    branch,
                    str(path),
                    start or self.domain.base_branch,
                )
        return path

    def _tree_path(self, branch: str) -> Path:
        return self.trees / branch.replace("/", "_")

    def _drop_tree(self, path: Path) -> None:
        """Remove a worktree, whatever state a killed command left it in (call with the lock held)."""
        # A `git worktree add` killed by a halt or a cancel leaves its "initializing" lock, which
        # `prune` respects: unlock it, or every later attempt of the stage fails.
        git(self.clone, "worktree", "unlock", str(path), check=False)
        if path.exists():
            git(self.clone, "worktree", "remove", "--force", str(path), check=False)
            remove_tree(path)

    def commit_all(self, tree: Path, message: str) -> str:
        """Commit everything in the worktree; no change means no new commit. Returns HEAD."""
        drop_nested_repos(tree)
        git(tree, "add", "-A")
        if git(tree, "status", "--porcelain"):
            git(tree, "commit", "--quiet", "-m", message)
        return git(tree, "rev-parse", "HEAD")

    def merge(self, tree: Path, *branches: str) -> None:
        for branch in branches:
            git(tree, "merge", "--quiet", "--no-edit", "--no-ff", branch)

    def diff(self, branch: str) -> str:
        self.ensure_clone()
        return git(self.clone, "diff", f"{self.domain.base_branch}...{branch}")

    def diff_head(self, branch: str, max_bytes: int) -> tuple[str, bool]:
        """The diff's first `max_bytes`, and whether there is more: never the whole of it in memory."""
        self.ensure_clone()
        return git_head(self.clone, max_bytes, "diff", f"{self.domain.base_branch}...{branch}")

    def has_branch(self, branch: str) -> bool:
        self.ensure_clone()
        return git(self.clone, "branch", "--list", branch) != ""

    # Delivery ------------------------------------------------------------------------------
    def commit_of(self, branch: str) -> str:
        self.ensure_clone()
        return git(self.clone, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}")

    def is_seeded(self) -> bool:
        """Whether the clone's origin is the repository the fleet seeded from a plain folder."""
        self.ensure_clone()
        return git(self.clone, "config", "--get", "remote.origin.url", check=False) == str(self.root / "seed")

    def has_remote(self, remote: str) -> bool:
        self.ensure_clone()
        return remote in git(self.clone, "remote").splitlines()

    def remote_branch(self, remote: str, branch: str) -> str | None:
        """The commit `branch` has on `remote` now (asked of the remote, not a stale tracking ref)."""
        self.ensure_clone()
        ref = f"refs/heads/{branch}"
        for line in git(self.clone, "ls-remote", "--refs", remote, ref).splitlines():
            sha, _, name = line.partition("\t")
            if name == ref:
                return sha
        return None

    def remote_default(self, remote: str) -> str | None:
        """The branch the remote's HEAD names (its default branch), if it says."""
        self.ensure_clone()
        for line in git(self.clone, "ls-remote", "--symref", remote, "HEAD").splitlines():
            if line.startswith("ref: refs/heads/") and line.endswith("\tHEAD"):
                return line[len("ref: refs/heads/") : -len("\tHEAD")]
        return None

    def push_new_branch(self, remote: str, commit: str, branch: str) -> None:
        """Create `branch` on `remote` at `commit`; GitError if it exists there already (or any failure).

        Not a force: the empty lease is git's compare-and-swap for "the ref must not exist", checked
        by the remote as it updates. A plain push would fast-forward a branch someone created
        meanwhile, and that branch is not ours to move. `--no-verify`: no pre-push hook either."""
        self.ensure_clone()
        ref = f"refs/heads/{branch}"
        git(
            self.clone,
            "push",
            "--quiet",
            "--no-verify",
            f"--force-with-lease={ref}:",
            remote,
            f"{commit}:{ref}",
        )

    def remove_worktrees(self, branches: Sequence[str]) -> None:
        """Remove the worktrees of these branches (the branches stay in the clone)."""
        self.ensure_clone()
        with self._locked():
            for branch in branches:
                self._drop_tree(self._tree_path(branch))
            git(self.clone, "worktree", "prune")
