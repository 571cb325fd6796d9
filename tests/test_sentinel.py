"""Redis Sentinel: redis.sentinels / redis.service_name / redis.sentinel_password, against real
local sentinels (`redis-server <conf> --sentinel`) watching a master the tests start; a forced
failover to a replica; sentinels over TLS."""

import pytest
import redis

from reaper.store import client as store
from reaper.core.config import as_masked_dict, load_config, secrets_of
from reaper.app.context import Context
from reaper.app.daemon import run_once
from reaper.core.errors import ConfigError
from reaper.store.client import connect
from support.cli import invoke
from support.guests import World
from support.keys import KEYS
from support.redis_proc import RedisProcess, find_free_port
from support.config_errors import config_error
from support.sentinel_proc import PasswordRedisProcess, SentinelProcess, failover_set  # noqa: F401 - a fixture
from support.tls import TlsRedisProcess, make_certificates

MASTER_PASSWORD, SENTINEL_PASSWORD = "master-pw-5e1f", "sentinel-pw-77c2"
# The host of redis.url is never dialled with sentinels: an unresolvable one proves it.
URL = f"redis://:{MASTER_PASSWORD}@master.invalid:1/0"
INTENTS, DUE = KEYS.intents, KEYS.due
FAILOVER_TIMEOUT = 15.0


class Guarded:
    """A master with a password and two sentinels with their own password."""

    def __init__(self, master: PasswordRedisProcess, sentinels: list[SentinelProcess]):
        self.master, self.sentinels = master, sentinels

    @property
    def addresses(self) -> str:
        return ",".join(s.address for s in self.sentinels)

    def env(self, **extra) -> dict:
        return {"REAPER_REDIS_URL": URL, "REAPER_REDIS_SENTINELS": self.addresses,
                "REAPER_REDIS_SENTINEL_PASSWORD": SENTINEL_PASSWORD, **extra}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    started = []
    try:
        master = PasswordRedisProcess(MASTER_PASSWORD, tmpdir=tmp_path_factory.mktemp("master")).start()
        started.append(master)
        for _ in range(2):
            sentinel = SentinelProcess(master.port, password=SENTINEL_PASSWORD,
                                       master_password=MASTER_PASSWORD,
                                       tmpdir=tmp_path_factory.mktemp("sentinel"))
            started.append(sentinel.start())
            sentinel.wait_for_master(master.port)
        yield Guarded(master, started[1:])
    finally:
        for process in reversed(started):
            process.close()


@pytest.fixture
def master(guarded) -> redis.Redis:
    client = guarded.master.client()
    client.flushall()
    yield client
    client.close()


def cycle(world: World) -> tuple[tuple[str, str], tuple[str, str]]:
    """A live guest, a stale one, an orphan and a registered user; returns (live, stale)."""
    live, stale = world.guest(1, age=5), world.guest(2, age=400)
    world.entry("guest_3", "sock3")
    world.registered("user_reg", "sockR")
    return live, stale


# -- configuration ----------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    ("", ()),
    ("10.0.0.5:26379", ("10.0.0.5:26379",)),
    (" sentinel-a:26379 , sentinel-b:26380 ", ("sentinel-a:26379", "sentinel-b:26380")),
    ("[::1]:26379,localhost:1", ("[::1]:26379", "localhost:1")),
])
def test_sentinels_from_the_environment_are_a_comma_separated_list(raw, expected):
    loaded = load_config(None, {"REAPER_REDIS_SENTINELS": raw})
    assert loaded.redis.sentinels == expected


def test_sentinels_from_the_toml_file_are_a_list(tmp_path):
    path = tmp_path / "reaper.toml"
    path.write_text('[redis]\nsentinels = ["s1:26379", "[fd00::7]:26380"]\nservice_name = "voip"\n')

    loaded = load_config(path, {}).redis

    assert loaded.sentinels == ("s1:26379", "[fd00::7]:26380") and loaded.service_name == "voip"
    assert as_masked_dict(load_config(path, {}))["redis"]["sentinels"] == ["s1:26379", "[fd00::7]:26380"]


@pytest.mark.parametrize("raw", [
    "sentinel-a", "sentinel-a:", ":26379", "sentinel-a:0", "sentinel-a:65536", "sentinel-a:port",
    "sentinel-a:-1", "s1:26379,,s2:26379", "s1:26379,", "::1:26379", "[::1]", "user@s1:26379",
    "s 1:26379", "redis://s1:26379",
])
def test_a_bad_sentinel_address_in_the_environment_is_refused(raw):
    error = config_error({"REAPER_REDIS_SENTINELS": raw})
    assert error.key == "redis.sentinels" and error.value == raw
    assert "host:port" in error.expected


@pytest.mark.parametrize("toml", ["26379", '["s1:26379", 26380]', "{ s1 = 26379 }", "true", '["s1"]'])
def test_a_bad_sentinels_value_in_the_toml_file_is_refused(tmp_path, toml):
    path = tmp_path / "reaper.toml"
    path.write_text(f"[redis]\nsentinels = {toml}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert caught.value.key == "redis.sentinels"


@pytest.mark.parametrize("raw", ["", "   ", "my master"])
def test_service_name_must_be_a_name(raw):
    error = config_error({"REAPER_REDIS_SERVICE_NAME": raw})
    assert error.key == "redis.service_name"


def test_service_name_defaults_to_mymaster():
    assert load_config(None, {}).redis.service_name == "mymaster"


def test_sentinels_need_a_tcp_url_for_the_password_and_db():
    error = config_error({"REAPER_REDIS_URL": "unix:///run/redis.sock", "REAPER_REDIS_SENTINELS": "s1:26379"})
    assert error.key == "redis.sentinels" and "unix://" in error.expected


def test_the_sentinel_password_is_a_secret_masked_everywhere(isolated_cli):
    config = load_config(None, {"REAPER_REDIS_SENTINELS": "s1:26379",
                                "REAPER_REDIS_SENTINEL_PASSWORD": SENTINEL_PASSWORD})

    assert SENTINEL_PASSWORD in secrets_of(config)
    assert as_masked_dict(config)["redis"]["sentinel_password"] == "***"
    shown = invoke(["config"], {"REAPER_REDIS_SENTINELS": "s1:26379",
                                "REAPER_REDIS_SENTINEL_PASSWORD": SENTINEL_PASSWORD})
    assert shown.exit_code == 0 and SENTINEL_PASSWORD not in shown.output
    assert 'sentinel_password = "***"' in shown.output and 'sentinels = ["s1:26379"]' in shown.output


@pytest.mark.parametrize("environ, expected", [
    ({"REAPER_REDIS_URL": "redis://reaper:pw1@x.invalid:1/3"}, {"username": "reaper", "password": "pw1", "db": 3}),
    ({"REDIS_PASSWORD": "pw2"}, {"password": "pw2", "db": 0}),
    ({"REAPER_REDIS_URL": "redis://x.invalid:1"}, {"password": None, "db": 0}),
], ids=["from the url", "from REDIS_PASSWORD", "none"])
def test_the_master_gets_the_url_credentials_and_db_and_the_sentinels_their_own(environ, expected):
    config = load_config(None, {**environ, "REAPER_REDIS_SENTINELS": "127.0.0.1:1,127.0.0.1:2",
                                "REAPER_REDIS_SENTINEL_PASSWORD": "spw", "REAPER_REDIS_SOCKET_TIMEOUT": "750ms"})
    client = connect(config)
    pool = client.connection_pool

    assert type(pool).__name__ == "_MasterFollowingPool" and pool.service_name == "mymaster"
    assert pool.connection_class.__name__ == "SentinelManagedConnection"
    master_kwargs = pool.connection_kwargs
    assert {k: master_kwargs.get(k, 0 if k == "db" else None) for k in expected} == expected
    assert master_kwargs["socket_timeout"] == 0.75 and master_kwargs.get("decode_responses") is False
    sentinels = [s.connection_pool.connection_kwargs for s in pool.sentinel_manager.sentinels]
    assert [(s["host"], s["port"]) for s in sentinels] == [("127.0.0.1", 1), ("127.0.0.1", 2)]
    assert all(s["password"] == "spw" and s["socket_timeout"] == 0.75 for s in sentinels)


# -- real sentinels --------------------------------------------------------------------------------

def test_run_once_through_the_sentinels_reaps_the_dead_and_keeps_the_living(guarded, master, launch,
                                                                          auth_service):
    world = World(master)
    live, stale = cycle(world)

    daemon = launch("run", "--once", **guarded.env())
    code, stderr = daemon.proc.wait(30), daemon.stderr()

    assert code == 0, stderr
    assert world.records() == {live[1]}
    assert set(world.online()) == {"guest_1", "user_reg"}
    assert sorted(auth_service.deleted_guests()) == ["guest_2", "guest_3"]
    assert master.zcard(DUE) == 0 and master.hexists(KEYS.state, "last_sweep_at")
    assert MASTER_PASSWORD not in stderr and SENTINEL_PASSWORD not in stderr


def test_a_sentinel_that_is_down_is_skipped(guarded, master, make_config, auth_service, mongo):
    world = World(master)
    live, _ = cycle(world)
    dead_first = f"127.0.0.1:{find_free_port()},{guarded.addresses}"

    assert run_once(make_config(guarded.env(REAPER_REDIS_SENTINELS=dead_first))) == 0

    assert world.records() == {live[1]}
    assert sorted(auth_service.deleted_guests()) == ["guest_2", "guest_3"]


@pytest.mark.parametrize("change, says", [
    ({"REAPER_REDIS_SENTINEL_PASSWORD": "wrong"}, "AuthenticationError"),
    ({"REAPER_REDIS_SERVICE_NAME": "othermaster"}, "does not monitor it"),
], ids=["wrong sentinel password", "unknown service"])
def test_no_master_found_exits_3_saying_what_each_sentinel_answered(guarded, master, launch, auth_service,
                                                                   change, says):
    world = World(master)
    world.guest(2, age=400)
    before = master.dbsize()

    daemon = launch("run", "--once", **guarded.env(**change))
    code, stderr = daemon.proc.wait(30), daemon.stderr()

    assert code == 3, stderr
    assert "Redis unreachable" in stderr and "no sentinel names a master" in stderr
    assert all(f"{s.address}: " in stderr and says in stderr for s in guarded.sentinels)
    assert "Traceback" not in stderr and SENTINEL_PASSWORD not in stderr
    assert master.dbsize() == before and auth_service.requests == []


def test_a_wrong_master_password_exits_3(guarded, master, launch, auth_service):
    daemon = launch("run", "--once", **guarded.env(REAPER_REDIS_URL="redis://:nope@master.invalid:1/0"))
    code, stderr = daemon.proc.wait(30), daemon.stderr()

    assert code == 3, stderr
    assert "Redis unreachable" in stderr and auth_service.requests == []


def test_check_names_the_sentinels_and_the_master_they_gave(guarded, isolated_cli):
    env = guarded.env(REAPER_AUTH_SERVICE_BASE_URL="", REAPER_USER_SERVICE_BASE_URL="")

    result = invoke(["check"], env)

    assert result.exit_code == 0, result.output
    line = next(line for line in result.stdout.splitlines() if line.startswith("redis:"))
    assert "OK" in line
    assert (f"sentinel service 'mymaster' via {', '.join(s.address for s in guarded.sentinels)}, "
            f"master 127.0.0.1:{guarded.master.port}") in line
    assert MASTER_PASSWORD not in result.output


# -- failover ----------------------------------------------------------------------------------------

def fail_over(sentinel: SentinelProcess, old: RedisProcess, to: RedisProcess) -> None:
    """A planned failover: once ``to`` has every write (WAIT), SENTINEL FAILOVER; then wait until
    it is over: ``to`` is a master and SENTINEL MASTERS (what clients ask) names it.
    GET-MASTER-ADDR-BY-NAME names it earlier, mid-failover."""
    with old.client() as client:
        assert client.wait(1, int(FAILOVER_TIMEOUT * 1000)) == 1
    with sentinel.client() as client:
        assert client.execute_command("SENTINEL", "FAILOVER", sentinel.service)
    sentinel.wait_for_master(to.port, timeout=FAILOVER_TIMEOUT)
    with to.client() as client:
        assert client.execute_command("ROLE")[0] == b"master"


def test_after_a_failover_the_next_run_reaches_the_new_master(failover_set, make_config, auth_service, mongo):
    old, new, sentinel = failover_set
    config = make_config({"REAPER_REDIS_URL": "redis://master.invalid:1/0",
                          "REAPER_REDIS_SENTINELS": sentinel.address})
    before = World(old.client())
    live = before.guest(1, age=5)
    before.guest(2, age=400)
    assert run_once(config) == 0
    assert before.records() == {live[1]}

    fail_over(sentinel, old, to=new)
    after = World(new.client())
    assert after.records() == {live[1]}, sentinel.log_tail()  # what the old master had
    after.guest(3, age=400)

    assert run_once(config) == 0
    assert after.records() == {live[1]}
    assert set(after.online()) == {"guest_1"}
    assert sorted(auth_service.deleted_guests()) == ["guest_2", "guest_3"]


def test_a_running_reaper_follows_the_failover_with_its_open_connections(failover_set, make_config, mongo,
                                                                         monkeypatch):
    old, new, sentinel = failover_set
    monkeypatch.setattr(store, "MASTER_CHECK_S", 0.0)  # ask on every command: no waiting in the test
    ctx = Context.open(make_config({"REAPER_REDIS_URL": "redis://master.invalid:1/0",
                                    "REAPER_REDIS_SENTINELS": sentinel.address}))
    try:
        World(old.client()).guest(2, age=400)
        assert ctx.sweep().reaped
        fail_over(sentinel, old, to=new)
        # The demoted master still takes writes until the sentinel reconfigures it: a client
        # that kept talking to it would reap nothing on the new one.
        World(new.client()).guest(3, age=400)

        report = ctx.sweep()
    finally:
        ctx.close()

    assert sum(report.reaped.values()) == 1
    with new.client() as client:
        assert client.hexists(INTENTS, "guest:guest_3")
        assert not client.exists(KEYS.connection("sock3"))


# -- sentinels over TLS ------------------------------------------------------------------------------

@pytest.fixture
def tls_set(tmp_path):
    """A TLS-only master and a TLS-only sentinel, with the certificates."""
    certs = make_certificates(tmp_path / "certs")
    started = []
    try:
        master = TlsRedisProcess(certs, tmpdir=tmp_path / "master").start()
        started.append(master)
        sentinel = SentinelProcess(master.port, certs=certs, tmpdir=tmp_path / "sentinel").start()
        started.append(sentinel)
        sentinel.wait_for_master(master.port)
        yield master, sentinel, certs
    finally:
        for process in reversed(started):
            process.close()


def test_sentinels_and_master_over_tls(tls_set, make_config, auth_service, mongo):
    master, sentinel, certs = tls_set
    world = World(master.client())
    live, _ = cycle(world)

    code = run_once(make_config({"REAPER_REDIS_URL": "rediss://master.invalid:1/0",
                                 "REAPER_REDIS_SENTINELS": sentinel.address,
                                 "REAPER_REDIS_TLS_CA_FILE": str(certs.ca)}))

    assert code == 0
    assert world.records() == {live[1]} and set(world.online()) == {"guest_1", "user_reg"}
    assert sorted(auth_service.deleted_guests()) == ["guest_2", "guest_3"]
