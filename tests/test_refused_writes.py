"""Issue #12 item 6: a Redis that answers but refuses writes (a read-only replica, maxmemory under
noeviction, an ACL without write commands, a failed RDB save). The daemon used to retry its
startup step at once, forever (18,084 WARNING lines in 5 s at 65 % CPU, /healthz stuck at
"starting"), and `run --once` ended in an OutOfMemoryError traceback. Now every retry backs off
(exponential, jitter, capped: reaper/store/outage.py), the state is said once when it begins and once
when it ends, /healthz says why it is not ready, and the commands exit 3 in one line."""

import re
import shutil
import threading

import httpx
import pytest
import redis

from reaper.app.context import Context
from reaper.app.daemon import RedisOutage
from reaper.core.errors import RedisRefused, RedisUnavailable
from reaper.ops.health import READY, SWEPT, Snapshot, healthz
from reaper.core.intents import guest_intent
from reaper.core.turns import SWEEP
from reaper.ops.monitor import Monitor
from reaper.store.outage import REFUSED, UNREACHABLE, WRONG_TYPE, Outage, trouble_of, wait_out
from reaper.core.retry import RetryPolicy
from reaper.store.client import explain, refusals
from support.cli import invoke
from support.guests import CONN, ONLINE, World
from support.redis_proc import RedisProcess, find_free_port
from support.standin import wait_for
from support.intents import all_stored
from support.keys import KEYS, keys_of
from support.snapshots import snapshot
from sweep_helpers import after_each_load

ACL_USER, ACL_PASSWORD = "reaper", "not-a-secret"
READONLY_LINE = "Redis refuses writes (READONLY You can't write against a read only replica.)"


# -- private servers: never the session's ------------------------------------------------------

@pytest.fixture
def private(tmp_path):
    with RedisProcess(tmpdir=tmp_path / "private") as server:
        yield server


@pytest.fixture
def client(private):
    with private.client() as c:
        yield c


@pytest.fixture
def replica(private, tmp_path):
    """A read-only replica of ``private``, in sync: what it says is what the master holds."""
    with RedisProcess(["--replicaof", private.host, str(private.port)], tmpdir=tmp_path / "replica") as server:
        with server.client() as c:
            assert wait_for(lambda: c.info("replication").get("master_link_status") == "up", timeout=15)
        yield server


def in_sync(master: redis.Redis, replica: RedisProcess) -> bool:
    with replica.client() as c:
        return wait_for(lambda: c.dbsize() == master.dbsize() and c.hgetall(ONLINE) == master.hgetall(ONLINE))


def oom(c: redis.Redis) -> None:
    c.config_set("maxmemory-policy", "noeviction")
    c.config_set("maxmemory", "1")


def no_write_acl(c: redis.Redis) -> None:
    """A user that may read and run scripts, but whose scripts may not write."""
    c.execute_command("ACL", "SETUSER", ACL_USER, "on", f">{ACL_PASSWORD}", "~*", "&*", "+@all", "-@write")


def misconf(server: RedisProcess, c: redis.Redis) -> None:
    """A failed RDB save: Redis refuses writes until one succeeds (stop-writes-on-bgsave-error)."""
    shutil.rmtree(server.log_path.parent)  # its working directory: the dump cannot be written
    c.config_set("save", "3600 1")
    c.bgsave()
    assert wait_for(lambda: c.info("persistence")["rdb_last_bgsave_status"] == "err", timeout=10)


def acl_url(server: RedisProcess) -> str:
    return f"redis://{ACL_USER}:{ACL_PASSWORD}@{server.host}:{server.port}/0"


LETTER = guest_intent("guest_8", "sock8", "heartbeat_timeout", 100.0, False, ["auth"]).to_json()


def dead_and_alive(c: redis.Redis) -> World:
    """A stale guest with its entry, an orphan entry, a live guest, and a dead letter."""
    world = World(c)
    world.guest(1, age=3600)
    world.entry("guest_3", "sock3")
    world.guest(6, age=5)
    c.lpush(keys_of(c).dead, LETTER)
    return world


# Each way of refusing writes, on ``private``: (Redis URL for reaper, what the line says).
REFUSALS = {
    "readonly": None,  # the replica fixture: see refusing()
    "oom": lambda server, c: (oom(c), (server.url, "OOM command not allowed when used memory"))[1],
    "noperm": lambda server, c: (no_write_acl(c), (acl_url(server), "NOPERM"))[1],
    "misconf": lambda server, c: (misconf(server, c), (server.url, "MISCONF Redis is configured to save"))[1],
}


@pytest.fixture(params=sorted(REFUSALS))
def refusing(request, private, client, tmp_path):
    """``private`` holding dead guests and a live one, then refusing writes one way or another;
    (URL reaper is given, what its line says, the master's client)."""
    dead_and_alive(client)
    if request.param == "readonly":
        server = request.getfixturevalue("replica")
        assert in_sync(client, server)
        return server.url, "READONLY You can't write against a read only replica", client
    url, said = REFUSALS[request.param](private, client)
    return url, said, client


# -- the commands: one line, exit 3, nothing touched -------------------------------------------

def env_for(url: str, auth_service) -> dict:
    return {"REAPER_REDIS_URL": url, "REAPER_AUTH_SERVICE_BASE_URL": auth_service.url, "REAPER_MONGO_URI": ""}


def assert_one_line(result, said: str) -> None:
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "Redis refuses writes: " in errors[0] and said in errors[0], result.stderr


@pytest.mark.usefixtures("isolated_cli")
@pytest.mark.parametrize("args", [["run", "--once"], ["purge", "--yes"], ["pause"]], ids=lambda a: a[0])
def test_a_command_that_writes_exits_3_in_one_line(refusing, auth_service, args):
    url, said, master = refusing
    before = snapshot(master)

    result = invoke(args, env_for(url, auth_service))

    assert_one_line(result, said)
    assert snapshot(master) == before and auth_service.requests == []


@pytest.mark.usefixtures("isolated_cli")
@pytest.mark.parametrize("args", [["dead-letters", "retry", "--all"], ["dead-letters", "drop", "--all", "--yes"],
                                  ["resume"]], ids=lambda a: "-".join(a[:2]))
@pytest.mark.parametrize("kind", ["readonly", "noperm", "misconf"])
def test_a_command_that_deletes_exits_3_when_redis_refuses_it(request, kind, args, private, client, auth_service):
    """(Under maxmemory alone Redis lets these through: deleting frees memory.)"""
    dead_and_alive(client)
    client.set(KEYS.paused, '{"by": "ops"}')
    if kind == "readonly":
        server = request.getfixturevalue("replica")
        assert in_sync(client, server)
        url, said = server.url, "READONLY"
    else:
        url, said = REFUSALS[kind](private, client)
    before = snapshot(client)

    result = invoke(args, env_for(url, auth_service))

    assert_one_line(result, said)
    assert snapshot(client) == before


def test_stats_reads_a_read_only_replica(replica, client, isolated_cli):
    """Reading needs no write: `stats` on a replica works as on its master."""
    dead_and_alive(client)
    assert in_sync(client, replica)

    result = invoke(["stats", "--json"], {"REAPER_REDIS_URL": replica.url, "REAPER_MONGO_URI": ""})

    assert result.exit_code == 0, result.output
    assert '"stale_now": 1' in result.stdout and '"orphans_now": 1' in result.stdout


# -- the daemon: backoff, said once, /healthz says why ------------------------------------------

def waits(stderr: str) -> list[float]:
    return [float(s) for s in re.findall(r"Run: trying again in ([0-9.]+)s", stderr)]


def serving(launch, url: str):
    port = find_free_port()
    daemon = launch("run", REAPER_REDIS_URL=url, REAPER_SERVER_LISTEN=f"127.0.0.1:{port}",
                    REAPER_LOG_LEVEL="DEBUG")
    return daemon, f"http://127.0.0.1:{port}"


def health_of(base: str) -> dict | None:
    try:
        return httpx.get(base + "/healthz", timeout=2).json()
    except httpx.TransportError:
        return None


def ready(base: str) -> bool:
    try:
        return httpx.get(base + "/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def heal(kind: str, server: RedisProcess, c: redis.Redis) -> None:
    if kind == "readonly":
        with server.client() as promoted:
            promoted.replicaof("NO", "ONE")
    elif kind == "oom":
        c.config_set("maxmemory", "0")
    elif kind == "noperm":
        c.execute_command("ACL", "SETUSER", ACL_USER, "+@all")
    else:
        c.config_set("save", "")


@pytest.mark.parametrize("kind", sorted(REFUSALS))
def test_the_daemon_backs_off_says_it_once_and_starts_once_writes_are_accepted(
        request, kind, private, client, launch, auth_service):
    dead_and_alive(client)
    if kind == "readonly":
        server = request.getfixturevalue("replica")
        assert in_sync(client, server)
        url, said = server.url, "READONLY"
    else:
        server = private
        url, said = REFUSALS[kind](private, client)
    daemon, base = serving(launch, url)
    try:
        assert wait_for(lambda: len(waits(daemon.stderr())) >= 3, timeout=20), daemon.stderr()
        first, second, third = waits(daemon.stderr())[:3]
        assert 0.5 <= first <= 1 <= second <= 2 <= third <= 4  # doubling, half of it random
        assert daemon.count("| WARNING | Run: Redis refuses writes (") == 1, daemon.stderr()
        assert said in daemon.stderr()
        body = health_of(base)
        assert body is not None and body["status"] == "unhealthy"
        assert body["reason"].startswith("starting: the startup step has not finished: Redis refuses writes (")
        assert said in body["reason"]
        assert auth_service.requests == []

        heal(kind, server, client)
        assert wait_for(lambda: ready(base), timeout=40), daemon.stderr()
        assert auth_service.wait_for(lambda: sorted(auth_service.deleted_guests()) == ["guest_1", "guest_3"],
                                     timeout=20), daemon.stderr()  # the stale guest and the orphan
        assert daemon.stop() == 0
    finally:
        daemon.proc.kill()
    assert daemon.count("Run: Redis accepts writes again") == 1
    assert daemon.count("| WARNING | Run: Redis refuses writes (") == 1
    assert "Traceback" not in daemon.stderr()


@pytest.mark.parametrize("kind", ["oom", "readonly"])
def test_writes_refused_while_it_runs_are_said_once_and_healthz_says_why(kind, private, client, launch,
                                                                         auth_service, tmp_path):
    daemon, base = serving(launch, private.url)
    other = RedisProcess(tmpdir=tmp_path / "other")
    try:
        assert wait_for(lambda: (health_of(base) or {}).get("role") == "leader", timeout=20), daemon.stderr()
        if kind == "oom":
            oom(client)
        else:  # demoted: a replica of another (empty) server now
            other.start()
            client.replicaof(other.host, other.port)
        assert wait_for(lambda: (health_of(base) or {}).get("reason", "").startswith("redis refuses writes: "),
                        timeout=20), daemon.stderr()
        assert wait_for(lambda: daemon.count("Run: job ") >= 5, timeout=20), daemon.stderr()  # many runs met it
        assert daemon.count("| WARNING | Run: Redis refuses writes (") == 1

        if kind == "oom":
            client.config_set("maxmemory", "0")
        else:
            client.replicaof("NO", "ONE")
        World(client).guest(2, age=3600)
        assert auth_service.wait_for(lambda: auth_service.deleted_guests() == ["guest_2"], timeout=30), \
            daemon.stderr()
        assert wait_for(lambda: (health_of(base) or {}).get("status") == "ok", timeout=20)
        assert daemon.stop() == 0
    finally:
        daemon.proc.kill()
        other.close()
    assert daemon.count("Run: Redis accepts writes again") == 1
    assert "Traceback" not in daemon.stderr() and "Job sweep failed" not in daemon.stderr()


# -- a write refused mid-sweep: no removal without its intent -----------------------------------

@pytest.fixture
def private_ctx(private, make_config, mongo):
    opened = []

    def make(url: str | None = None, **overrides) -> Context:
        ctx = Context.open(make_config({"REAPER_REDIS_URL": url or private.url}, **overrides))
        opened.append(ctx)
        return ctx

    yield make
    for ctx in opened:
        ctx.close()


def refuse_at_batch(ctx, n: int, refuse) -> None:
    """Redis starts refusing writes once the sweep has read its ``n``-th page of records."""
    after_each_load(ctx, lambda records, i: refuse() if i == n else None)


@pytest.mark.parametrize("kind", ["oom", "noperm", "misconf"])
def test_a_write_refused_mid_sweep_leaves_no_removal_without_its_intent(kind, private, client, private_ctx):
    world = World(client)
    stale = [world.guest(n, age=3600) for n in range(300)]
    url = acl_url(private) if kind == "noperm" else private.url
    if kind == "noperm":
        client.execute_command("ACL", "SETUSER", ACL_USER, "on", f">{ACL_PASSWORD}", "~*", "&*", "+@all")
    ctx = private_ctx(url, redis__scan_count=50, safety__max_reap_fraction=1.0)
    refuse = {"oom": lambda: oom(client), "noperm": lambda: no_write_acl(client),
              "misconf": lambda: misconf(private, client)}[kind]
    refuse_at_batch(ctx, 3, refuse)

    with pytest.raises(RedisRefused), refusals():
        ctx.sweep()

    gone = {user for user, sock in stale if not client.exists(CONN + sock)}
    assert len(gone) < len(stale)  # stopped part way
    assert {i.removeprefix("guest:") for i in all_stored(client)} == gone  # each removal has its intent...
    assert {m.decode().removeprefix("guest:") for m in client.zrange(keys_of(client).due, 0, -1)} == gone
    assert set(world.online()) == {user for user, _ in stale} - gone  # ...and only those entries went


# -- in process: the pieces ------------------------------------------------------------------

@pytest.mark.parametrize("error, kind, said", [
    (redis.exceptions.ReadOnlyError("You can't write against a read only replica. script: "
                                    "1ec506af921a9fc2c7fc71dd0f6cf5ce6e5e81a6, on @user_script:2."),
     REFUSED, "READONLY You can't write against a read only replica."),
    (redis.exceptions.OutOfMemoryError("Command # 1 (TYPE reaper:paused) of pipeline caused error: "
                                       "command not allowed when used memory > 'maxmemory'."),
     REFUSED, "OOM command not allowed when used memory > 'maxmemory'."),
    (redis.exceptions.NoPermissionError("this user has no permissions to run the 'set' command"),
     REFUSED, "NOPERM this user has no permissions to run the 'set' command"),
    (redis.ResponseError("MISCONF Redis is configured to save RDB snapshots"), REFUSED,
     "MISCONF Redis is configured to save RDB snapshots"),
    (redis.ResponseError("NOREPLICAS Not enough good replicas to write."), REFUSED,
     "NOREPLICAS Not enough good replicas to write."),
    (redis.ResponseError(f"WRONGTYPE {KEYS.due} holds a hash, not a zset"), WRONG_TYPE,
     f"{KEYS.due} holds a hash, not a zset"),
    (redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), WRONG_TYPE,
     "`reaper check` names the key"),
    (redis.ConnectionError("Connection refused"), UNREACHABLE, "Connection refused"),
    (RedisUnavailable("redis: down"), UNREACHABLE, "redis: down"),
])
def test_each_redis_trouble_is_named(error, kind, said):
    trouble = trouble_of(error)
    assert trouble.kind == kind and said in trouble.detail
    assert "script:" not in trouble.detail and "pipeline" not in trouble.detail


@pytest.mark.parametrize("error", [redis.ResponseError("ERR unknown command"), RuntimeError("a bug"),
                                   redis.exceptions.NoScriptError("No matching script")])
def test_other_errors_are_no_trouble_to_wait_out(error):
    assert trouble_of(error) is None and explain(error) is None


class Attempts:
    """Fails with each of ``errors`` in turn, then answers."""

    def __init__(self, *errors):
        self.errors, self.calls = list(errors), 0

    def __call__(self):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


TINY = RetryPolicy(initial_s=0.001, max_s=0.004)


def test_wait_out_backs_off_and_says_the_state_once(logs):
    readonly = redis.exceptions.ReadOnlyError("You can't write against a read only replica.")
    attempt, heard = Attempts(*[readonly] * 6), []

    answer = wait_out(attempt, threading.Event(), Outage("retrying with backoff"), heard.append, TINY)

    assert answer == "done" and attempt.calls == 7
    assert logs.at("WARNING") == [f"Run: {READONLY_LINE}; retrying with backoff"]
    assert logs.at("INFO") == ["Run: Redis accepts writes again"]
    assert [t.kind if t else None for t in heard] == [REFUSED] * 6 + [None]
    assert len(logs.at("DEBUG", "Run: trying again in")) == 6


def test_wait_out_says_a_new_kind_of_trouble_and_raises_a_bug(logs):
    attempt = Attempts(redis.ConnectionError("refused"), redis.exceptions.OutOfMemoryError("full"),
                       RuntimeError("a bug"))

    with pytest.raises(RuntimeError):
        wait_out(attempt, threading.Event(), Outage("retrying with backoff"), policy=TINY)

    assert [m.split(" (")[0] for m in logs.at("WARNING")] == ["Run: Redis unreachable", "Run: Redis refuses writes"]


def test_wait_out_stops_when_told():
    stopping = threading.Event()
    stopping.set()
    assert wait_out(Attempts(), stopping, Outage("")) is None


def test_refused_writes_in_jobs_are_said_once_and_their_end_too(r, ctx_factory, logs, auth_service):
    ctx = ctx_factory()
    monitor = Monitor(ctx.config)
    monitor.health.ready()
    outcomes = iter([redis.exceptions.ReadOnlyError("You can't write against a read only replica."),
                     redis.exceptions.ReadOnlyError("You can't write against a read only replica."),
                     None, None])

    def job():
        error = next(outcomes)
        if error:
            raise error

    guarded = RedisOutage(ctx, monitor).guard(SWEEP, job)
    guarded()
    assert monitor.health.healthz().body["reason"] == ("redis refuses writes: READONLY You can't write "
                                                       "against a read only replica.")
    for _ in range(3):
        guarded()

    assert logs.at("WARNING") == [f"Run: {READONLY_LINE}; jobs wait for it and go on when it is over"]
    assert logs.at("INFO", "Run: Redis accepts writes again") == ["Run: Redis accepts writes again"]
    assert ctx.counters.get("redis_refused.sweep") == 2 and ctx.counters.get("redis_unreachable.sweep") == 0


def test_a_wrong_key_type_in_a_job_is_said_once(r, ctx_factory, logs):
    ctx = ctx_factory()
    r.hset(keys_of(r).due, "x", "y")
    guarded = RedisOutage(ctx).guard(SWEEP, ctx.sweep)
    for _ in range(3):
        guarded()

    assert len(logs.at("ERROR", f"{KEYS.due} holds a hash, not a zset")) == 1
    assert ctx.counters.get("wrong_key_type.sweep") == 3
    r.delete(keys_of(r).due)
    guarded()
    assert logs.at("INFO", "Run: reaper's keys are of the right types again")


@pytest.mark.parametrize("state, reason", [
    (Snapshot(waiting="Redis refuses writes (READONLY no)"),
     "starting: the startup step has not finished: Redis refuses writes (READONLY no); retrying with backoff"),
    (Snapshot(READY, 0.0, SWEPT, 100.0, "OOM full", redis_trouble=REFUSED), "redis refuses writes: OOM full"),
    (Snapshot(READY, 0.0, SWEPT, 100.0, "redis: k holds a hash", redis_trouble=WRONG_TYPE),
     "wrong key type: redis: k holds a hash"),
])
def test_healthz_says_what_holds_reaper_up(state, reason):
    answer = healthz(state, 101.0, 30.0)
    assert answer.status == 503 and answer.body["reason"] == reason
