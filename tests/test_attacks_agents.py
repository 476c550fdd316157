"""Attacks on the LLM agents from the issue-9 review: the model's output, the repository's content and
the domain's files are the attacker's. Each test performs one for real (real bwrap, real git).

ATTACK tests: each fails while its hole is open and passes once it is closed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from wavefleet.domains import Domains
from wavefleet.errors import ToolError
from wavefleet.sandbox import BwrapSandbox
from workers.agent.context import LoopLimits
from workers.agent.team import MAX_FILE_LIST_BYTES, commit_as
from workers.agent.tools import file_tools, run_tool
from workers.git import Workspace, branch_name, git

pytestmark = pytest.mark.timeout(60)


def _hostile_nested_repo(marker: Path) -> str:
    """A shell command making `sub/` a repository whose clean filter runs `touch marker` (on whatever
    machine a git enters it), with a file the filter must run on (its stat differs from the index)."""
    filter_command = f'sh -c "touch {marker}; cat"'
    return (
        "set -e; git init -q sub; cd sub; "
        f"git config filter.x.clean '{filter_command}'; git config core.fsmonitor 'touch {marker}'; "
        "echo '* filter=x' > .gitattributes; echo one > f; "
        "git -c user.name=a -c user.email=b add -A; git -c user.name=a -c user.email=b commit -qm s; "
        "echo two > f; touch -d 2000-01-01 f"
    )


def test_attack_a_nested_repository_a_run_command_made_runs_nothing_on_the_host_at_commit(
    domains: Domains, tmp_path: Path
) -> None:
    # ATTACK: the model's sandboxed `run` makes sub/.git with a clean filter; the fleet's `git add -A`
    # and `status` (on the host, outside the sandbox) would enter it and run the filter there
    ws = Workspace(domains.get("auth"), tmp_path / "data")
    tree = ws.worktree(branch_name("AUTH-001", "be"))
    marker = tmp_path / "RAN-ON-THE-HOST"
    run = run_tool(BwrapSandbox(), tree, LoopLimits())
    assert run({"command": _hostile_nested_repo(marker)}).startswith("exit code 0")

    commit, files = commit_as(tree, "WAVE be (w1) <wave-be@localhost>", "AUTH-001 round 1: be")

    assert not marker.exists(), "the nested repository's filter ran on the host"
    # And the model's files are committed as files, not as an opaque gitlink to a repository
    assert "sub/f" in files and "sub" not in files
    assert git(tree, "show", f"{commit}:sub/f") == "two"


def test_attack_folders_nested_thousands_deep_by_a_run_command_neither_crash_the_commit_nor_stay(
    domains: Domains, tmp_path: Path
) -> None:
    # ATTACK: Python 3.11's os.walk and shutil.rmtree recurse; a tree 1200 folders deep (a
    # shell can make) raised RecursionError in the host-side commit and worktree removal
    ws = Workspace(domains.get("auth"), tmp_path / "data")
    branch = branch_name("AUTH-001", "be")
    tree = ws.worktree(branch)
    run = run_tool(BwrapSandbox(), tree, LoopLimits())
    deep = "i=0; while [ $i -lt 1200 ]; do mkdir d && cd d || exit 1; i=$((i+1)); done; "
    deep += "git init -q s; echo x > f"
    assert run({"command": deep}).startswith("exit code 0")

    _, files = commit_as(tree, "WAVE be (w1) <wave-be@localhost>", "AUTH-001 round 1: be")

    assert len(files) == 1 and files[0].endswith("/d/f")
    # And the next round's fresh worktree of the branch replaces it, leaving nothing of the old one
    again = ws.worktree(branch, start="main")
    assert again == tree and not (tree / "d").exists()


def test_attack_a_commit_of_a_hundred_thousand_files_lists_a_bounded_head_of_them(
    domains: Domains, tmp_path: Path
) -> None:
    # ATTACK: the model's command makes 100,000 files with long names; the stage result (kept in
    # Redis, shown by `wave status`) listed every name of the commit
    ws = Workspace(domains.get("auth"), tmp_path / "data")
    tree = ws.worktree(branch_name("AUTH-001", "be"))
    run = run_tool(BwrapSandbox(), tree, LoopLimits())
    many = "mkdir m && cd m && seq -f 'file-%06g-" + "x" * 60 + "' 100000 | xargs touch"
    assert run({"command": many}).startswith("exit code 0")

    _, files = commit_as(tree, "WAVE be (w1) <wave-be@localhost>", "AUTH-001 round 1: be")

    # Then the result lists a head of whole names, under the cap
    assert 0 < len(files) < 2_000 and sum(len(f) + 1 for f in files) <= MAX_FILE_LIST_BYTES
    assert all(f.startswith("m/file-") and f.endswith("x" * 60) for f in files)


SEARCH_IN_A_CHILD = """
import json, resource, sys
from pathlib import Path
from wavefleet.errors import ToolError
from workers.agent.context import LoopLimits
from workers.agent.tools import file_tools
tree, pattern = Path(sys.argv[1]), sys.argv[2]
search = {t.spec.name: t for t in file_tools(tree, LoopLimits())}["search"]
try:
    said = search({"pattern": pattern, "path": "long.txt"})
except ToolError as exc:
    said = f"error: {exc}"
print(json.dumps({"said": said, "peak_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def test_attack_a_search_pattern_that_saves_many_groups_per_step_cannot_eat_the_hosts_memory(
    tmp_path: Path,
) -> None:
    # ATTACK: 200 groups in a repetition over a 1 MB line: sre saves every group on every step, over
    # 2 GB within seconds, in the (unsandboxed) search process. Run in a child capped at 4 GB so
    # that the attack, while it works, cannot hurt the machine running the tests.
    (tmp_path / "long.txt").write_text("a" * 1_000_000 + "\n")
    pattern = "(?:" + "|".join(["(b)"] * 200) + "|(a)|(aa))*c"
    done = subprocess.run(
        ["prlimit", "--as=4000000000", "--", sys.executable, "-c", SEARCH_IN_A_CHILD, str(tmp_path), pattern],
        capture_output=True,
        text=True,
        timeout=40,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    result = json.loads(done.stdout)
    assert result["peak_kib"] < 1_200_000, f"the search grew to {result['peak_kib'] // 1024} MiB"
    assert "memory; make it simpler" in result["said"]


@pytest.mark.parametrize("pattern", ["(" * 1000 + ")" * 1000, "x{4294967295}"])
def test_attack_a_search_pattern_python_cannot_compile_is_an_error_the_model_sees(
    tmp_path: Path, pattern: str
) -> None:
    # ATTACK: RecursionError and OverflowError from re.compile are no re.error: the stage crashed
    search = {t.spec.name: t for t in file_tools(tmp_path, LoopLimits())}["search"]
    with pytest.raises(ToolError, match="not a valid Python regex"):
        search({"pattern": pattern})


def test_attack_a_read_offset_past_what_pread_takes_is_an_error_the_model_sees(tmp_path: Path) -> None:
    # ATTACK: an offset of 2**63 raised OverflowError from os.pread, which crashed the stage
    (tmp_path / "a.txt").write_text("a\n")
    read = {t.spec.name: t for t in file_tools(tmp_path, LoopLimits())}["read_file"]
    with pytest.raises(ToolError, match="offset"):
        read({"path": "a.txt", "offset": 2**63})
