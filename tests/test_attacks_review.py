"""Attacks from the issue-8 review that got through the merged fixes: each test performs one for real.

ATTACK tests: each fails while its hole is open and passes once it is closed.
"""

from __future__ import annotations

import contextlib
import os
import pty
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from contexts import bare_context

from wavefleet.cli import EMBEDDED_DIR
from wavefleet.config import Settings
from wavefleet.domains import load_domains
from wavefleet.embedded import EmbeddedRedis, free_port
from wavefleet.errors import ConfigError, RedisUnavailableError, StageError
from wavefleet.lifecycle import Role, StoryState
from wavefleet.processes import processes_with
from wavefleet.sandbox import BwrapSandbox, sandbox_for
from wavefleet.store import StoryStore
from wavefleet.stories import Story
from wavefleet.testing import Processes, run_wave, wait_until
from wavefleet.watcher import read_reason
from workers.commands import run_in
from workers.git import git
from workers.offline import OfflineAgent
from workers.roles import StageInput

REPO = Path(__file__).resolve().parent.parent
WAVE = [sys.executable, "-m", "wavefleet.cli"]


def test_attack_percent_encoded_password_query_name_is_masked(tmp_path: Path) -> None:
    # ATTACK: redis-py decodes query names, so `?p%61ssword=` is the password; the mask must see it
    secret = "TOPSECRET42"
    for url in (
        f"redis://127.0.0.1:1/0?p%61ssword={secret}",
        f"unix:///nonexistent.sock?%70assword={secret}",
    ):
        env = {**os.environ, "WAVE_DATA_DIR": str(tmp_path / "data"), "WAVE_REDIS__URL": url}
        env = {k: v for k, v in env.items() if k != "WAVE_REDIS__PASSWORD"}
        proc = subprocess.run(
            [*WAVE, "status"], capture_output=True, text=True, env=env, timeout=60, check=False, cwd=tmp_path
        )
        assert proc.returncode != 0
        assert secret not in proc.stdout + proc.stderr, proc.stderr


def test_attack_a_hard_link_to_a_secret_is_not_read_as_the_stop_reason(tmp_path: Path) -> None:
    # ATTACK: a hard link is a regular file to lstat/fstat; linked to the Redis password file (same
    # data dir, where EMERGENCY-STOP lives by default) its content would become the published reason
    secret = tmp_path / "redis.password"
    secret.write_text("hunter2-the-redis-password\n")
    stop = tmp_path / "EMERGENCY-STOP"
    os.link(secret, stop)

    reason = read_reason(stop)

    assert reason is not None
    assert "hunter2" not in reason


def test_attack_a_committed_symlink_does_not_make_an_agent_write_outside_its_worktree(
    domains_dir: Path, tmp_path: Path
) -> None:
    # ATTACK: the domain's repository (or an earlier agent's commit) holds `ui` as a symlink to a
    # folder outside; the FE agent's writes through it land on the host, outside every worktree
    outside = tmp_path / "outside"
    outside.mkdir()
    repo = tmp_path / "hostile-repo"
    repo.mkdir()
    (repo / "README.md").write_text("hostile\n")
    (repo / "ui").symlink_to(outside)
    git(repo, "init", "--quiet", "--initial-branch", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "-m", "a link out")
    toml = domains_dir / "auth" / "domain.toml"
    toml.write_text(toml.read_text().replace('repo = "sample"', f'repo = "{repo}"'))
    domain = load_domains(domains_dir).get("auth")
    story = Story(id="AUTH-901", title="link out")
    stage = StageInput(
        story=story, domain=domain, role=Role.FE, round=1, attempt=1, worker="t", data_dir=tmp_path / "data"
    )

    with contextlib.suppress(StageError):  # refusing the stage is a fine outcome; writing out is not
        OfflineAgent(Role.FE).run(stage, bare_context(stage, BwrapSandbox()))

    assert list(outside.iterdir()) == []


def _wave(fleet: Settings, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """`wave ARGS` against the test's real Redis, with the given WAVE_* settings on top."""
    return subprocess.run(
        [*WAVE, *args],
        capture_output=True,
        text=True,
        env=_env(fleet, **settings),
        timeout=60,
        check=False,
        cwd=fleet.data_dir.parent,
    )


def _env(fleet: Settings, **settings: str) -> dict[str, str]:
    password = fleet.redis.password.get_secret_value() if fleet.redis.password else ""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAVE_")}
    env |= {
        "WAVE_DATA_DIR": str(fleet.data_dir),
        "WAVE_DOMAINS_DIR": str(fleet.domains_dir),
        "WAVE_REDIS__URL": fleet.redis.url,
        "WAVE_REDIS__PASSWORD": password,
        **settings,
    }
    return env


def _refused_in_one_line(proc: subprocess.CompletedProcess[str], *names: str) -> None:
    assert proc.returncode not in (0, 1, 69), (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert all(name in proc.stderr for name in names), proc.stderr


def test_attack_an_infinite_or_overflowing_domain_budget_is_refused_at_load(
    settings: Settings, domains_dir: Path
) -> None:
    # ATTACK: TOML has `inf`; a domain file's `daily_usd = inf` (or 1e308, which is inf in nano-USD)
    # passed `gt=0` and ended in an OverflowError traceback in `wave budget show` (and every budget check)
    toml = domains_dir / "auth" / "domain.toml"
    original = toml.read_text()
    for hostile in ("daily_usd = inf", "daily_usd = 1e308"):
        toml.write_text(original.replace("daily_usd = 100.0", hostile))
        proc = _wave(settings, "budget", "show")
        _refused_in_one_line(proc, "daily_usd")


def test_attack_an_infinite_fleet_budget_setting_is_refused_at_start(settings: Settings) -> None:
    # ATTACK: WAVE_BUDGETS__GLOBAL_DAILY_USD=inf (or 1e308) passed `gt=0`: OverflowError traceback
    for hostile in ("inf", "1e308"):
        proc = _wave(settings, "budget", "show", WAVE_BUDGETS__GLOBAL_DAILY_USD=hostile)
        _refused_in_one_line(proc, "GLOBAL_DAILY_USD")


def test_attack_a_domain_file_cannot_set_an_infinite_model_timeout(
    settings: Settings, domains_dir: Path
) -> None:
    # ATTACK: `[models.anthropic] timeout_s = inf` passed `gt=0`: a model call that never times out
    # holds its worker for ever (the issue's `offline:slow=pm:inf`, through a domain file instead)
    toml = domains_dir / "auth" / "domain.toml"
    toml.write_text(toml.read_text() + "\n[models.anthropic]\ntimeout_s = inf\n")
    proc = _wave(settings, "enqueue", "AUTH-001", "--title", "x")
    _refused_in_one_line(proc, "timeout_s")


# Embedded Redis (issue 8, "What to build" 7): not in this snapshot at all; each test below fails.
def test_attack_a_newline_in_the_embedded_password_adds_no_redis_config(tmp_path: Path) -> None:
    # ATTACK: the password is pasted unquoted into redis.conf; a newline in it adds a config line
    # (here `bind 0.0.0.0`: the fleet's Redis on every interface; its own client then fails to log in)
    hostile = "pw\nbind 0.0.0.0"
    try:
        server = EmbeddedRedis(tmp_path / "redis", free_port(), password=hostile)
    except (ConfigError, ValueError) as exc:  # refused before anything runs: fine
        assert "\n" not in str(exc)
        return
    try:
        try:
            server.start()
        except (ConfigError, ValueError) as exc:  # refused before anything runs: fine
            assert "\n" not in str(exc)
            return
        except RedisUnavailableError:  # started with the injected lines; the password is not its own
            conf = (server.directory / "redis.conf").read_text()
            raise AssertionError(f"the password became config lines:\n{conf}") from None
        binds = server.client(decode_responses=True).config_get("bind")["bind"]
        assert binds == "127.0.0.1", binds
    finally:
        server.kill()


def test_attack_the_embedded_data_dir_is_not_world_readable(tmp_path: Path) -> None:
    # ATTACK: the data dir (AOF: every story, every reason) and its files were readable by any local user
    os.umask(0o022)  # a common default: what the fleet creates must not rely on the operator's umask
    server = EmbeddedRedis(tmp_path / "redis", free_port())
    server.start()
    try:
        server.client().set("probe", "x")
        for path in [server.directory, *server.directory.rglob("*")]:
            assert path.stat().st_mode & 0o077 == 0, f"{path} is {oct(path.stat().st_mode)}"
    finally:
        server.stop()


def test_attack_a_password_given_by_environment_works_for_every_command(
    settings: Settings, tmp_path: Path
) -> None:
    # ATTACK (finding 6): with WAVE_EMBEDDED_REDIS__PASSWORD set, `wave up` writes no password file and
    # every later command died with a FileNotFoundError traceback
    data = tmp_path / "fleet"
    server = EmbeddedRedis(data / EMBEDDED_DIR, free_port(), password="given-by-env-0123")  # as `wave up`
    server.start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WAVE_")}
        env |= {
            "WAVE_DATA_DIR": str(data),
            "WAVE_DOMAINS_DIR": str(settings.domains_dir),
            "WAVE_EMBEDDED_REDIS__PASSWORD": "given-by-env-0123",
        }
        proc = subprocess.run(
            [*WAVE, "status"], capture_output=True, text=True, env=env, timeout=60, check=False, cwd=tmp_path
        )
        assert proc.returncode == 0, proc.stderr
    finally:
        server.stop()


def test_attack_output_to_a_full_disk_ends_in_one_line_not_a_traceback(settings: Settings) -> None:
    # ATTACK (low): `wave status > file` on a full disk (/dev/full: ENOSPC on every write) ended in an
    # OSError traceback; a closed pipe is handled (141), any other write error is not
    with Path("/dev/full").open("w") as full:
        proc = subprocess.run(
            [*WAVE, "status"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(settings),
            timeout=60,
            check=False,
            cwd=settings.data_dir.parent,
        )
    assert proc.returncode not in (0, 1), proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_attack_a_domain_allowing_network_still_gives_its_tests_no_way_into_the_fleets_redis(
    settings: Settings, domains_dir: Path, redis_proc: EmbeddedRedis, tmp_path: Path
) -> None:
    # ATTACK: a domain file, which may come with a repository from elsewhere, sets `[sandbox] network
    # = true` (the issue lets a domain allow network). `--share-net` is the host's network namespace,
    # so its test command can open a connection to the fleet's Redis on 127.0.0.1: what must hold is
    # that it cannot use it. It holds no credential (the allow-listed environment), and the fleet's
    # Redis answers nothing without one (requirepass here; ACL users and `default` off in `wave up`).
    toml = domains_dir / "auth" / "domain.toml"
    toml.write_text(toml.read_text() + "\n[sandbox]\nnetwork = true\n")
    domain = load_domains(domains_dir).get("auth")
    sandbox = sandbox_for(settings, network=domain.sandbox.network)  # as the worker builds it
    redis_proc.client().set(settings.keys.halt(), "halted by the operator")
    tree = tmp_path / "tree"
    tree.mkdir()
    code = (
        "import socket\n"
        f"s = socket.create_connection(('127.0.0.1', {redis_proc.port}), timeout=5)\n"
        f"s.sendall(b'DEL {settings.keys.halt()}\\r\\nFLUSHALL\\r\\n')\n"
        "print(s.recv(200).decode())\n"
    )

    outcome = run_in(sandbox, ["python3", "-c", code], tree, timeout_s=60, max_output_bytes=10_000)

    assert outcome.exit_code == 0, outcome.output
    assert "NOAUTH" in outcome.output, outcome.output
    assert redis_proc.client().get(settings.keys.halt()) == b"halted by the operator"


def test_attack_a_story_id_argument_cannot_forge_a_second_error_line(settings: Settings) -> None:
    # ATTACK (low): an id with a newline (pasted from a model's output, say) was printed verbatim in
    # "no story ...", and main() prints each line of an error as its own "wave: error:" line
    proc = _wave(settings, "cancel", "AUTH-001\nwave: error: forged")
    assert proc.returncode == 66, proc.stderr  # NotFound, as for any unknown story
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.slow
def test_attack_cancel_kills_a_sandboxed_test_command_that_ignores_signals_and_its_setsid_child(
    procs: Processes, settings: Settings, store: StoryStore, domains_dir: Path
) -> None:
    # ATTACK (held when written; kept as a guard): the QA command ignores SIGTERM/SIGHUP and leaves a
    # `setsid` child behind; `wave cancel` must still end both within a second
    token = f"999.{uuid.uuid4().int % 10**9}"
    script = (
        "import signal, subprocess, time\n"
        "for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):\n"
        "    signal.signal(s, signal.SIG_IGN)\n"
        f"subprocess.Popen(['setsid', 'sleep', '{token}'])\n"
        "time.sleep(1000)\n"
    )
    (domains_dir / "auth" / "sample" / "attack.py").write_text(script)
    toml = domains_dir / "auth" / "domain.toml"
    toml.write_text(
        toml.read_text().replace(
            'base_branch = "main"', 'base_branch = "main"\ntest_command = ["{python}", "attack.py"]'
        )
    )
    procs.team("auth")
    procs.supervisor()
    store.enqueue([Story(id="AUTH-702", title="attack")], load_domains(domains_dir))
    wait_until(lambda: processes_with(token), timeout_s=120, message="the setsid child", diagnose=procs.logs)

    assert run_wave(settings, "cancel", "AUTH-702").returncode == 0

    wait_until(
        lambda: not processes_with(token),
        timeout_s=1.0,
        message="the setsid child to be gone",
        diagnose=procs.logs,
    )
    assert store.get("AUTH-702").state is StoryState.CANCELLED


def test_attack_a_sandboxed_command_cannot_reach_the_operators_terminal_through_stdin(tmp_path: Path) -> None:
    # ATTACK: `wave up` (and `wave worker` run by hand) start workers on the operator's terminal as
    # stdin; the test command inherited it (a tty is opened read-write): it could write escape sequences
    # past every terminal_safe (OSC 52 sets the clipboard) and read what the operator types
    tree = tmp_path / "tree"
    tree.mkdir()
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from wavefleet.sandbox import BwrapSandbox\n"
        "from workers.commands import run_in\n"
        "attack = 'printf \"\\\\033]52;c;UFdORUQ=\\\\007MARK-ON-TTY\" >&0; echo done'\n"
        "argv = ['sh', '-c', attack]\n"
        "out = run_in(BwrapSandbox(), argv, Path(sys.argv[1]), timeout_s=60, max_output_bytes=9999)\n"
        "print(out.output, file=sys.stderr)\n"
    )
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, str(tree)],
            stdin=secondary,
            capture_output=True,
            timeout=60,
            check=False,
            cwd=REPO,
        )
        assert proc.returncode == 0, proc.stderr
        os.set_blocking(primary, False)
        try:
            seen = os.read(primary, 4096)
        except BlockingIOError:  # nothing was written to the terminal: the run above has ended
            seen = b""
    finally:
        os.close(primary)
        os.close(secondary)
    assert b"MARK-ON-TTY" not in seen, seen


def test_attack_a_domain_file_cannot_seed_its_repository_from_the_fleets_data_dir(
    settings: Settings, domains_dir: Path
) -> None:
    # ATTACK: `repo` may name any plain folder, and seeding copies and commits all of it into every
    # worktree: `repo = "../../.wave/redis"` (the default data dir, seen from domains/NAME) hands the
    # embedded Redis's password and AOF to the sandboxed test command (and, with `[sandbox] network`,
    # the fleet's Redis itself). Same for any folder the worker can read: ~/.ssh, a secrets folder.
    secret = "the-embedded-redis-password-0123"
    fleet_files = settings.data_dir / "redis"
    fleet_files.mkdir(parents=True)
    (fleet_files / "password").write_text(secret)
    toml = domains_dir / "auth" / "domain.toml"
    toml.write_text(toml.read_text().replace('repo = "sample"', f'repo = "{fleet_files}"'))
    domain = load_domains(domains_dir).get("auth")
    stage = StageInput(
        story=Story(id="AUTH-903", title="x"),
        domain=domain,
        role=Role.FE,
        round=1,
        attempt=1,
        worker="t",
        data_dir=settings.data_dir,
    )

    with contextlib.suppress(StageError):  # refusing the stage is a fine outcome
        OfflineAgent(Role.FE).run(stage, bare_context(stage, BwrapSandbox()))

    repos = settings.data_dir / "repos"
    copied = [p for p in repos.rglob("*") if p.is_file() and secret in p.read_text(errors="replace")]
    assert copied == []


def test_attack_a_huge_stop_reason_is_refused_and_the_fleet_not_halted(settings: Settings) -> None:
    # ATTACK (low): `wave stop --reason` took any length (100 KB stored and printed to every status);
    # the file's reason is capped at 500 characters, the command's now too
    proc = subprocess.run(
        [*WAVE, "stop", "--reason", "x" * 100_000],
        capture_output=True,
        text=True,
        env=_env(settings),
        timeout=60,
        check=False,
        cwd=settings.data_dir.parent,
    )

    assert proc.returncode == 65, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "at most 500" in proc.stderr
    assert run_wave(settings, "status").stdout.count("HALTED") == 0
