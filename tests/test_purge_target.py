"""Issue #16 item 9: a purge names the Redis it purges, the one actually used: the master the
sentinels name now (and their service), a cluster's primaries, a server's address or unix socket
and db; never redis.url's host when sentinels decide, never a password. In `reaper purge`'s
question, and in the log of every purge (`--yes`, and the daemon's startup purge)."""

import shutil
import tempfile
from pathlib import Path

import pytest
import redis

from support.cli import invoke
from support.guests import World
from support.sentinel_proc import PasswordRedisProcess, SentinelProcess, failover_set  # noqa: F401 - a fixture
from support.terminal import on_terminal, operator_env

MASTER_PASSWORD, SENTINEL_PASSWORD = "master-pw-31ad", "sentinel-pw-c04b"
# With sentinels the host of redis.url is never dialled: an unresolvable one proves it.
SENTINEL_URL = f"redis://:{MASTER_PASSWORD}@master.invalid:1/0"
QUESTION = "Delete all guest state in {target} and the databases? [y/N]"
STARTED = "Purge: deleting all guest state in {target}"
NO_SERVICES = {"REAPER_AUTH_SERVICE_BASE_URL": "", "REAPER_USER_SERVICE_BASE_URL": "", "REAPER_MONGO_URI": ""}


def sentinel_target(port: int) -> str:
    return f"Redis 127.0.0.1:{port} db 0 (master of sentinel service 'mymaster')"


def guest_world(client) -> World:
    world = World(client)
    world.guest(1, age=5)
    world.registered("user_reg", "sockR")
    return world


# -- sentinels ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """A master with a password, and a sentinel with its own."""
    started = []
    try:
        master = PasswordRedisProcess(MASTER_PASSWORD, tmpdir=tmp_path_factory.mktemp("master")).start()
        started.append(master)
        sentinel = SentinelProcess(master.port, password=SENTINEL_PASSWORD, master_password=MASTER_PASSWORD,
                                   tmpdir=tmp_path_factory.mktemp("sentinel")).start()
        started.append(sentinel)
        sentinel.wait_for_master(master.port)
        yield master, sentinel
    finally:
        for process in reversed(started):
            process.close()


@pytest.fixture
def through_sentinel(guarded, isolated_cli):
    """The master (flushed) and the environment that reaches it through the sentinel."""
    master, sentinel = guarded
    client = master.client()
    client.flushall()
    env = {"REAPER_REDIS_URL": SENTINEL_URL, "REAPER_REDIS_SENTINELS": sentinel.address,
           "REAPER_REDIS_SENTINEL_PASSWORD": SENTINEL_PASSWORD, **NO_SERVICES}
    yield client, master.port, env
    client.close()


@pytest.mark.parametrize("answer", ["y", "n"])
def test_the_question_names_the_sentinels_master_not_the_urls_host(through_sentinel, tmp_path, answer):
    client, port, env = through_sentinel
    world = guest_world(client)

    code, shown = on_terminal(["purge"], operator_env(env), answer, tmp_path)

    assert QUESTION.format(target=sentinel_target(port)) in shown, shown
    assert "master.invalid" not in shown
    assert MASTER_PASSWORD not in shown and SENTINEL_PASSWORD not in shown
    if answer == "y":
        assert code == 0, shown
        assert world.records() == set() and set(world.online()) == {"user_reg"}  # that master was purged
        assert STARTED.format(target=sentinel_target(port)) in shown
    else:
        assert code == 1, shown
        assert world.records() == {"sock1"}


def test_a_yes_purge_logs_the_master_it_purged(through_sentinel):
    client, port, env = through_sentinel
    world = guest_world(client)

    result = invoke(["purge", "--yes"], env)

    assert result.exit_code == 0, result.output
    assert world.records() == set()
    assert STARTED.format(target=sentinel_target(port)) in result.stderr
    assert f"online entries in {sentinel_target(port)}" in result.stderr  # and the summary says it again
    assert "master.invalid" not in result.stderr and MASTER_PASSWORD not in result.stderr


def test_the_daemons_startup_purge_logs_the_master_it_purged(through_sentinel, launch):
    client, port, env = through_sentinel
    world = guest_world(client)

    daemon = launch("run", **env, REAPER_STARTUP_PURGE="all")
    try:
        assert daemon.wait_log("online entries in"), daemon.stderr()
    finally:
        assert daemon.stop() == 0
    stderr = daemon.stderr()
    assert STARTED.format(target=sentinel_target(port)) in stderr
    assert world.records() == set()
    assert MASTER_PASSWORD not in stderr and SENTINEL_PASSWORD not in stderr


def test_after_a_failover_the_purge_names_the_new_master(failover_set, isolated_cli):
    old, new, sentinel = failover_set
    env = {"REAPER_REDIS_URL": "redis://master.invalid:1/0", "REAPER_REDIS_SENTINELS": sentinel.address,
           **NO_SERVICES}
    with old.client() as client:
        assert client.wait(1, 15_000) == 1
    with sentinel.client() as client:
        assert client.execute_command("SENTINEL", "FAILOVER", sentinel.service)
    sentinel.wait_for_master(new.port)
    world = guest_world(new.client())

    result = invoke(["purge", "--yes"], env)

    assert result.exit_code == 0, result.output
    assert STARTED.format(target=sentinel_target(new.port)) in result.stderr
    assert f"127.0.0.1:{old.port}" not in result.stderr
    assert world.records() == set()


# -- one server: its address or socket, its db, never its password -----------------------------------

@pytest.fixture(scope="module")
def locked(tmp_path_factory):
    """A redis-server with a password, on a port and on a unix socket (a short path: at most 108 bytes)."""
    socket_dir = Path(tempfile.mkdtemp(prefix="rp-", dir="/tmp"))
    socket = socket_dir / "redis.sock"
    server = PasswordRedisProcess(MASTER_PASSWORD, ["--unixsocket", str(socket), "--unixsocketperm", "700"],
                                  tmpdir=tmp_path_factory.mktemp("locked")).start()
    try:
        yield server, socket
    finally:
        server.close()
        shutil.rmtree(socket_dir, ignore_errors=True)


@pytest.mark.parametrize("url, target", [
    ("redis://:{pw}@127.0.0.1:{port}/0", "Redis 127.0.0.1:{port} db 0"),
    ("redis://default:{pw}@127.0.0.1:{port}/3", "Redis 127.0.0.1:{port} db 3"),
    ("redis://127.0.0.1:{port}/2?password={pw}", "Redis 127.0.0.1:{port} db 2"),
    ("unix://:{pw}@{socket}?db=4", "Redis unix:{socket} db 4"),
], ids=["password", "user and password", "password in the query", "unix socket"])
def test_the_question_and_the_log_name_the_server_and_db_without_the_password(
        locked, isolated_cli, tmp_path, url, target):
    server, socket = locked
    fill = {"pw": MASTER_PASSWORD, "port": server.port, "socket": socket}
    env = operator_env({"REAPER_REDIS_URL": url.format(**fill), **NO_SERVICES})
    db = int(target.format(**fill).rsplit(" ", 1)[1])
    with redis.Redis(host=server.host, port=server.port, db=db, password=MASTER_PASSWORD) as client:
        client.flushdb()
        world = guest_world(client)

        code, shown = on_terminal(["purge"], env, "y", tmp_path)

        assert code == 0, shown
        assert QUESTION.format(target=target.format(**fill)) in shown
        assert STARTED.format(target=target.format(**fill)) in shown
        assert MASTER_PASSWORD not in shown
        assert world.records() == set()


def test_a_dry_run_names_its_target_too(locked, isolated_cli):
    server, _ = locked
    env = {"REAPER_REDIS_URL": f"redis://:{MASTER_PASSWORD}@127.0.0.1:{server.port}/5", **NO_SERVICES}

    result = invoke(["purge", "--dry-run"], env)

    assert result.exit_code == 0, result.output
    assert f"Purge: deleting all guest state in Redis 127.0.0.1:{server.port} db 5 [dry run]" in result.stderr
    assert MASTER_PASSWORD not in result.output


# -- a cluster: its primaries --------------------------------------------------------------------------

def cluster_target(redis_cluster) -> str:
    return "Redis Cluster " + ", ".join(sorted(f"127.0.0.1:{node.port}" for node in redis_cluster.nodes))


def test_a_cluster_purge_names_the_clusters_primaries(redis_cluster, isolated_cli, tmp_path):
    redis_cluster.flushall()
    world = guest_world(redis_cluster.client())
    env = operator_env({"REAPER_REDIS_URL": redis_cluster.url, "REAPER_REDIS_CLUSTER": "true", **NO_SERVICES})

    code, shown = on_terminal(["purge"], env, "y", tmp_path)

    assert code == 0, shown
    assert QUESTION.format(target=cluster_target(redis_cluster)) in shown
    assert STARTED.format(target=cluster_target(redis_cluster)) in shown
    assert world.records() == set()


def test_a_yes_cluster_purge_logs_the_primaries(redis_cluster, isolated_cli):
    redis_cluster.flushall()
    env = {"REAPER_REDIS_URL": redis_cluster.url, "REAPER_REDIS_CLUSTER": "true", **NO_SERVICES}

    result = invoke(["purge", "--yes"], env)

    assert result.exit_code == 0, result.output
    assert STARTED.format(target=cluster_target(redis_cluster)) in result.stderr
