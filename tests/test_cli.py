"""The `reaper` command line (docs/cli.md): exit codes, messages, and what each command touches."""

import json
import os
import re
import subprocess
import sys
import tomllib

import pymongo.errors
import pytest

from reaper.store import pause as pausing
from reaper.store.client import stream_full
from reaper.core.config import SECTIONS, as_masked_dict, load_config
from support.redis_proc import find_free_port
from support.cli import invoke
from support.keys import KEYS, keys_of
from support.snapshots import snapshot

STATUS_LINE = re.compile(r"^(?P<name>[a-z -]+):\s+(?P<status>OK|FAIL|WARN|disabled)\b(?P<detail>.*)$")

# Every test here runs the CLI as an operator would: no ./reaper.toml, no REAPER_* from the machine.
pytestmark = [pytest.mark.usefixtures("isolated_cli"),
              pytest.mark.cluster_too]  # the same scenarios on a Redis Cluster


@pytest.fixture
def env(cli_env):
    return cli_env


@pytest.fixture
def unreachable_redis():
    return f"redis://127.0.0.1:{find_free_port()}/0"


def statuses(stdout: str) -> dict[str, tuple[str, str]]:
    found = {}
    for line in stdout.splitlines():
        match = STATUS_LINE.match(line)
        assert match, f"unexpected check line {line!r}"
        found[match["name"]] = (match["status"], match["detail"])
    return found


# -- configuration errors: exit 2 before anything is touched --------------------------------

COMMANDS = [["run", "--once"], ["purge", "--yes"], ["stats"], ["check"], ["config"]]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: a[0])
def test_a_bad_environment_value_exits_2_naming_the_key(args, env, world):
    stale = world.guest(1, age=400)

    result = invoke(args, {**env, "REAPER_TIMING_PING_INTERVAL": "soon"})

    assert result.exit_code == 2
    assert "timing.ping_interval = 'soon' (from REAPER_TIMING_PING_INTERVAL)" in result.stderr
    assert "duration" in result.stderr
    assert world.records() == {stale[1]}  # nothing touched
    assert "guest_1" in world.online()


def test_an_unknown_key_in_the_config_file_exits_2(tmp_path, env):
    path = tmp_path / "reaper.toml"
    path.write_text('[timing]\nheartbeat_intervall = "30s"\n')

    result = invoke(["config", "--config", str(path)], env)

    assert result.exit_code == 2
    assert "timing.heartbeat_intervall" in result.stderr
    assert "heartbeat_interval" in result.stderr  # the message lists the keys that exist


def test_a_missing_config_file_exits_2(tmp_path, env):
    result = invoke(["check", "--config", str(tmp_path / "missing.toml")], env)

    assert result.exit_code == 2
    assert "--config" in result.stderr and "missing.toml" in result.stderr


def test_an_unknown_environment_variable_exits_2(env):
    result = invoke(["config"], {**env, "REAPER_TIMING_HEARTBEAT": "30s"})
    assert result.exit_code == 2 and "REAPER_TIMING_HEARTBEAT" in result.stderr


def test_an_unknown_command_line_option_exits_2(env):
    result = invoke(["run", "--twice"], env)
    assert result.exit_code == 2 and "--twice" in result.stderr


def test_a_real_process_exits_2_on_a_bad_value(tmp_path):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("REAPER_")}
    environ["REAPER_SAFETY_MAX_REAP_FRACTION"] = "1.5"

    done = subprocess.run([sys.executable, "-m", "reaper", "run", "--once"], env=environ, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)

    assert done.returncode == 2
    assert "safety.max_reap_fraction" in done.stderr and "1.5" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_real_process_prints_the_configuration_masked(tmp_path):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("REAPER_")}
    environ.update(REAPER_REDIS_URL="redis://:hunter2@cache:6379/0", REAPER_AUTH_SERVICE_TOKEN="tok-secret")

    done = subprocess.run([sys.executable, "-m", "reaper", "config"], env=environ, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    assert 'url = "redis://:***@cache:6379/0"' in done.stdout
    assert "hunter2" not in done.stdout + done.stderr and "tok-secret" not in done.stdout + done.stderr


@pytest.mark.parametrize("args", [[], *[[a[0]] for a in COMMANDS]], ids=lambda a: a[0] if a else "reaper")
def test_help_is_written_for_operators(args):
    result = invoke([*args, "--help"], {})
    assert result.exit_code == 0
    assert "Usage:" in result.stdout and len(result.stdout.splitlines()) > 5


# -- reaper config --------------------------------------------------------------------------


def test_config_prints_every_section_as_toml_with_secrets_masked(env):
    environ = {**env, "REAPER_REDIS_URL": "redis://reaper:hunter2@cache:6379/0",
               "REAPER_AUTH_SERVICE_TOKEN": "auth-tok", "REAPER_USER_SERVICE_TOKEN": "user-tok",
               "REAPER_MONGO_URI": "mongodb://app:mongo-pw@mongo:27017/voip",
               "REAPER_TIMING_HEARTBEAT_INTERVAL": "15s"}

    result = invoke(["config"], environ)

    assert result.exit_code == 0
    for section in SECTIONS:
        assert f"[{section}]" in result.stdout
    for secret in ("hunter2", "auth-tok", "user-tok", "mongo-pw"):
        assert secret not in result.output
    printed = tomllib.loads(result.stdout)
    assert printed == as_masked_dict(load_config(None, environ))
    assert printed["redis"]["url"] == "redis://reaper:***@cache:6379/0"
    assert printed["auth_service"]["token"] == printed["user_service"]["token"] == "***"
    assert printed["timing"]["heartbeat_interval"] == "15s"
    assert result.stdout.startswith("# source: defaults")


def test_config_names_the_file_it_read(tmp_path, env):
    path = tmp_path / "reaper.toml"
    path.write_text('[startup]\npurge = "off"\n')

    result = invoke(["config"], env)

    assert result.exit_code == 0
    assert result.stdout.startswith("# source: reaper.toml")
    assert tomllib.loads(result.stdout)["startup"]["purge"] == "off"


# -- reaper check ---------------------------------------------------------------------------


def test_check_all_ok(env):
    result = invoke(["check"], env)

    assert result.exit_code == 0, result.output
    found = statuses(result.stdout)
    assert {name: status for name, (status, _) in found.items()} == {
        "redis": "OK", "keys": "OK", "signaling": "WARN", "auth-service": "OK", "user-service": "OK",
        "mongo": "disabled"}


def test_check_fails_when_the_auth_service_is_unhealthy(env, auth_service):
    auth_service.fail(503)

    result = invoke(["check"], env)

    assert result.exit_code == 1
    found = statuses(result.stdout)
    assert found["auth-service"][0] == "FAIL" and "503" in found["auth-service"][1]
    assert found["redis"][0] == found["user-service"][0] == "OK"


def test_check_exits_3_when_redis_is_unreachable(env, unreachable_redis):
    url = unreachable_redis.replace("redis://", "redis://:hunter2@")

    result = invoke(["check"], {**env, "REAPER_REDIS_URL": url})

    assert result.exit_code == 3
    found = statuses(result.stdout)
    assert found["redis"][0] == "FAIL" and "redis://:***@127.0.0.1" in found["redis"][1]
    assert found["auth-service"][0] == "OK"  # the others are still reported
    assert "hunter2" not in result.output


def test_check_reports_disabled_services(env):
    result = invoke(["check"], {**env, "REAPER_AUTH_SERVICE_BASE_URL": "", "REAPER_USER_SERVICE_BASE_URL": ""})

    assert result.exit_code == 0
    found = statuses(result.stdout)
    assert found["auth-service"][0] == found["user-service"][0] == "disabled"


def test_check_mongo_ok(env, mongo):
    result = invoke(["check"], {**env, "REAPER_MONGO_URI": "mongodb://app:mongo-pw@mongo.test:27017"})

    assert result.exit_code == 0
    found = statuses(result.stdout)
    assert found["mongo"][0] == "OK"
    assert "mongo-pw" not in result.output and "voip.users" in found["mongo"][1]


def test_check_mongo_fails_on_server_selection_timeout(env, mongo, monkeypatch):
    def timeout(*args, **kwargs):
        raise pymongo.errors.ServerSelectionTimeoutError("mongo.test:27017: timed out")

    monkeypatch.setattr(type(mongo.admin), "command", timeout)

    result = invoke(["check"], {**env, "REAPER_MONGO_URI": "mongodb://mongo.test:27017"})

    assert result.exit_code == 1
    status, detail = statuses(result.stdout)["mongo"]
    assert status == "FAIL" and "ServerSelectionTimeoutError" in detail


def test_check_warns_about_an_allkeys_eviction_policy(env, r):
    r.config_set("maxmemory-policy", "allkeys-lru")
    try:
        result = invoke(["check"], env)
    finally:
        r.config_set("maxmemory-policy", "noeviction")

    assert result.exit_code == 0  # a warning, not a failure
    found = statuses(result.stdout)
    assert found["redis policy"][0] == "WARN" and "allkeys-lru" in found["redis policy"][1]


def test_check_does_not_warn_under_noeviction(env):
    assert "redis policy" not in statuses(invoke(["check"], env).stdout)


def test_check_fails_on_keys_of_another_type_naming_each(env, r):
    keys = keys_of(r)
    r.set(KEYS.online, "oops")
    r.rpush(keys.state, "x")
    r.hset(keys.due, "a", "1")

    result = invoke(["check"], env)

    assert result.exit_code == 1
    status, detail = statuses(result.stdout)["keys"]
    assert status == "FAIL"
    assert f"{KEYS.online} holds a string, not a hash" in detail
    assert f"{keys.state} holds a list, not a hash" in detail
    assert f"{keys.due} holds a hash, not a zset" in detail
    assert statuses(result.stdout)["redis"][0] == "OK"  # Redis itself answers


def test_check_fails_on_an_audit_trail_that_takes_no_more_entries(env, r):
    r.xadd(keys_of(r).events, {"decision": "{}"}, id="18446744073709551615-18446744073709551615")

    result = invoke(["check"], env)

    assert result.exit_code == 1
    status, detail = statuses(result.stdout)["keys"]
    assert status == "FAIL" and f"{keys_of(r).events} has used the last possible entry id" in detail
    r.delete(keys_of(r).events)  # what the line says to do
    assert statuses(invoke(["check"], env).stdout)["keys"][0] == "OK"


def test_a_stream_replaced_or_deleted_after_its_type_was_read_is_not_full(r):
    r.set("was-a-stream", "x")
    r.xadd("a-stream", {"a": "b"})

    assert not stream_full(r, "was-a-stream") and not stream_full(r, "gone") and not stream_full(r, "a-stream")
    r.xadd("a-stream", {"a": "b"}, id="18446744073709551615-18446744073709551615")
    assert stream_full(r, "a-stream")


def test_check_takes_reapers_own_keys_as_they_are_written(env, r, ctx_factory, world):
    world.guest(1, age=3600)  # reaped: an intent, its due time, a decision record
    ctx = ctx_factory(auth_service__base_url="http://127.0.0.1:9")  # the DELETE fails: a retry
    ctx.sweep()
    ctx.drain()
    pausing.pause(r, keys_of(r), 60.0, reason="test")
    r.lpush(keys_of(r).dead, json.dumps({"id": "guest:old"}))
    r.set(keys_of(r).leader, "host:1:token", px=60_000)
    assert all(r.exists(key) for key in keys_of(r).expected_types() if key != KEYS.online)

    assert statuses(invoke(["check"], env).stdout)["keys"][0] == "OK"


def test_check_warns_that_a_cold_start_would_purge_when_no_signaling_server_subscribes(env):
    result = invoke(["check"], env)  # startup.purge = "cold" by default

    assert result.exit_code == 0  # a warning, not a failure
    status, detail = statuses(result.stdout)["signaling"]
    assert status == "WARN"
    assert "no server subscribes socket.io-request#/#" in detail and "purges all guest state" in detail
    assert "fenced" not in detail  # [notify] is off


def test_check_counts_the_signaling_servers(env, r):
    servers = [r.pubsub() for _ in range(2)]
    for server in servers:  # as the socket.io Redis adapter of a signaling server does
        server.subscribe("chat-request#/calls#")
        assert server.get_message(timeout=5)["type"] == "subscribe"
    try:
        result = invoke(["check"], {**env, "REAPER_NOTIFY_ENABLED": "true",
                                    "REAPER_NOTIFY_CHANNEL_PREFIX": "chat", "REAPER_NOTIFY_NAMESPACE": "/calls"})
    finally:
        for server in servers:
            server.close()

    assert result.exit_code == 0
    status, detail = statuses(result.stdout)["signaling"]
    assert (status, detail.strip()) == (
        "OK", "2 server(s) subscribe chat-request#/calls#; a `reaper run` starting now sweeps instead of purging")


def test_check_warns_when_notify_reaches_no_server(env, r):
    listener = r.pubsub()
    listener.subscribe("socket.io-request#/#")  # the default channel: not the configured one
    assert listener.get_message(timeout=5)["type"] == "subscribe"
    try:
        result = invoke(["check"], {**env, "REAPER_NOTIFY_ENABLED": "true", "REAPER_STARTUP_PURGE": "stale",
                                    "REAPER_NOTIFY_CHANNEL_PREFIX": "chat"})
    finally:
        listener.close()

    status, detail = statuses(result.stdout)["signaling"]
    assert status == "WARN" and "no server subscribes chat-request#/#: nothing is fenced or told" in detail
    assert "purge" not in detail.split(". If")[0]


def test_check_says_the_signaling_tier_is_unused(env):
    result = invoke(["check"], {**env, "REAPER_STARTUP_PURGE": "stale"})

    status, detail = statuses(result.stdout)["signaling"]
    assert (status, detail.strip()) == ("disabled", "(notify.enabled = false, startup.purge = stale)")


# -- reaper stats ---------------------------------------------------------------------------


@pytest.fixture
def small_world(world):
    world.guest(1, age=10)  # live
    world.guest(2, age=400)  # stale by heartbeat
    world.guest(3, age=10, pong_age=250)  # stale by ping
    world.entry("guest_4", "sock4")  # orphan: its record expired
    world.registered("user_5", "rsock5")
    return world


def test_stats_json_counts_the_world_and_writes_nothing(env, r, small_world):
    r.set(KEYS.connection("broken"), b"{not json", ex=3600)
    before = snapshot(r)

    result = invoke(["stats", "--json"], env)

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "guests": {"total": 3, "responsive": 1, "unresponsive": 2},
        "stale_now": 2,
        "stale_by_reason": {"heartbeat_timeout": 1, "ping_timeout": 1},
        "orphans_now": 1,
        "malformed_now": 1,
        "not_a_guest_id_now": 0,
        "registered_online": 1,
        "cascades": {"pending": 0, "due_now": 0, "dead": 0},
        "last_sweep_age_s": None,
        "mass_expiry": False,
        "leader": None,
        "paused": None,
    }
    assert snapshot(r) == before


def test_stats_text_and_writes_nothing(env, r, small_world, auth_service):
    before = snapshot(r)

    result = invoke(["stats"], env)

    assert result.exit_code == 0, result.output
    rows = dict(line.split(":", 1) for line in result.stdout.splitlines())
    rows = {name: value.strip() for name, value in rows.items()}
    assert rows["guests"] == "3 (responsive 1, unresponsive 2)"
    assert rows["stale now"] == "2 (heartbeat_timeout 1, ping_timeout 1)"
    assert rows["orphans now"] == "1"
    assert rows["registered online"] == "1"
    assert rows["cascades"] == "0 pending (0 due now), 0 dead letters"
    assert rows["last sweep"] == "never"
    assert snapshot(r) == before
    assert auth_service.requests == []


def test_stats_exits_3_when_redis_is_unreachable(env, unreachable_redis):
    assert invoke(["stats"], {**env, "REAPER_REDIS_URL": unreachable_redis}).exit_code == 3


# -- reaper run --once ----------------------------------------------------------------------


def test_run_once_exits_0_when_everything_is_done(env, r, small_world, auth_service):
    result = invoke(["run", "--once"], env)

    assert result.exit_code == 0, result.output
    assert small_world.records() == {"sock1"}
    assert set(small_world.online()) == {"guest_1", "user_5"}
    assert sorted(auth_service.deleted_guests()) == ["guest_2", "guest_3", "guest_4"]
    assert r.zcard(keys_of(r).due) == 0
    assert "Sweep: scanned=" in result.stderr


def test_run_once_exits_1_while_cascades_wait_for_a_retry(env, r, world, auth_service):
    world.guest(1, age=400)
    auth_service.fail(503, path_prefix="/auth/guest/guest_")  # the periodic cleanup still works

    result = invoke(["run", "--once"], env)

    assert result.exit_code == 1, result.output
    assert r.zcard(keys_of(r).due) == 1 and r.hexists(keys_of(r).intents, "guest:guest_1")
    assert world.records() == set()  # the Redis half is done; the rest waits
    assert auth_service.calls("DELETE", "/auth/guest/cleanup")  # the cleanup did run


def test_run_once_exits_3_when_redis_is_unreachable(env, unreachable_redis, auth_service):
    url = unreachable_redis.replace("redis://", "redis://:hunter2@")

    result = invoke(["run", "--once"], {**env, "REAPER_REDIS_URL": url})

    assert result.exit_code == 3
    assert "Redis unreachable" in result.stderr and "hunter2" not in result.output
    assert auth_service.requests == []


def test_run_once_dry_run_writes_nothing(env, r, small_world, auth_service, user_service):
    before = snapshot(r)

    result = invoke(["run", "--once", "--dry-run"], env)

    assert result.exit_code == 0, result.output
    assert snapshot(r) == before
    assert [q for q in auth_service.requests + user_service.requests if q.method != "GET"] == []


# -- reaper purge ---------------------------------------------------------------------------


def test_purge_refuses_without_yes_and_without_a_terminal(env, r, small_world, auth_service):
    before = snapshot(r)

    result = invoke(["purge"], env)

    assert result.exit_code == 2
    assert "--yes" in result.stderr
    assert snapshot(r) == before
    assert auth_service.requests == []


def test_purge_with_yes_deletes_all_guest_state(env, r, small_world, auth_service, user_service):
    r.set(KEYS.session_prefix + "abc", "x")

    result = invoke(["purge", "--yes"], env)

    assert result.exit_code == 0, result.output
    assert small_world.records() == set()
    assert r.exists(KEYS.session_prefix + "abc") == 0
    assert set(small_world.online()) == {"user_5"}
    assert len(auth_service.calls("DELETE", "/auth/guest/cleanup-all")) == 1
    assert len(user_service.calls("DELETE", "/guests/cleanup-all")) == 1
    assert r.zcard(keys_of(r).due) == 0


def test_purge_exits_1_when_a_cleanup_call_must_wait(env, r, small_world, auth_service):
    auth_service.fail(503, path_prefix="/auth/guest/cleanup-all")

    result = invoke(["purge", "--yes"], env)

    assert result.exit_code == 1, result.output
    assert small_world.records() == set()
    assert r.hexists(keys_of(r).intents, "purge")


def test_purge_dry_run_changes_nothing(env, r, small_world, auth_service, user_service):
    r.set(KEYS.session_prefix + "abc", "x")
    before = snapshot(r)

    result = invoke(["purge", "--dry-run"], env)

    assert result.exit_code == 0, result.output
    assert snapshot(r) == before
    assert auth_service.requests == [] and user_service.requests == []
    assert "would delete" in result.stderr


def test_purge_exits_3_when_redis_is_unreachable(env, unreachable_redis):
    assert invoke(["purge", "--yes"], {**env, "REAPER_REDIS_URL": unreachable_redis}).exit_code == 3
