"""`wave safety check --rules-only` as a real process: JSON lines in, one decision line out per input
line, an error line (and exit 65) for a malformed one, never a traceback; no Redis is needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from wavefleet.errors import ExitCode


def check(stdin: bytes, *flags: str, data_dir: Path) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAVE_")}
    env["WAVE_DATA_DIR"] = str(data_dir)  # nothing of a running fleet: the checker must not need one
    return subprocess.run(
        [sys.executable, "-m", "wavefleet.cli", "safety", "check", *flags],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_each_line_gets_its_decision_in_order(tmp_path: Path) -> None:
    calls = [
        {"tool": "run", "args": {"command": "rm -rf /"}},
        {"tool": "run", "args": {"command": "pytest -q"}},
        {"tool": "run", "args": {"command": "git push origin wave/s1-be"}, "branch": "wave/s1-be"},
        {"tool": "run", "args": {"command": "python src/main.py"}},
        {"tool": "write_file", "args": {"path": "../x", "content": "x"}},
    ]
    done = check("".join(json.dumps(c) + "\n" for c in calls).encode(), "--rules-only", data_dir=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert [line["decision"] for line in lines] == ["block", "allow", "escalate", "allow", "block"]
    assert lines[0]["rules"] == ["destructive.rm_outside"] and lines[0]["score"] <= 0.3
    assert lines[1]["decided"] is True and lines[3]["decided"] is False  # the judge would be asked
    assert lines[4]["rules"] == ["fs.write_outside"] and lines[4]["reason"]


def test_a_malformed_line_gets_an_error_line_and_the_exit_code_says_so(tmp_path: Path) -> None:
    stdin = b'not json\n[1, 2]\n{"tool": "run", "args": "rm"}\n\n'
    stdin += b'{"tool": "run", "args": {"command": "ls"}, "x": 1}\n'
    stdin += b'{"tool": "run", "args": {"command": "cat \xff .env"}}\n'  # not UTF-8: still a call
    done = check(stdin, "--rules-only", data_dir=tmp_path)
    assert done.returncode == ExitCode.INVALID_INPUT
    assert b"Traceback" not in done.stderr + done.stdout
    lines = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert [sorted(line) for line in lines[:4]] == [["error"]] * 4
    assert lines[0]["error"].startswith("line 1: not JSON")
    assert lines[2]["error"].startswith("line 3: args")
    assert lines[3]["error"].startswith("line 5: unknown field 'x'")
    assert lines[4]["decision"] == "block" and lines[4]["rules"] == ["secrets.credential_file"]


def test_without_rules_only_it_says_the_full_gate_needs_the_judge(tmp_path: Path) -> None:
    done = check(b'{"tool": "run", "args": {"command": "ls"}}\n', data_dir=tmp_path)
    assert done.returncode == ExitCode.USAGE
    assert done.stdout == b""
    assert len(done.stderr.decode().strip().splitlines()) == 1 and "--rules-only" in done.stderr.decode()
