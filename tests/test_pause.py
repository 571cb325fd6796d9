"""The pause switch (issue #3 item 4): the decisions, the key in a real Redis, the jobs it
gates, and `reaper pause` / `resume` / `stats` on the command line (leader included)."""

import json
from datetime import datetime

import pytest

from reaper.app import daemon
from reaper.app.jobs import Gate
from reaper.core.turns import CASCADE, CLEANUP, SWEEP
from reaper.store.leader import Lease, Leadership
from reaper.store.pause import PAUSED, RESUMED, PauseWatch, change, parse_pause, pause, paused_state, resume
from support.keys import KEYS, keys_of
from support.redis_proc import find_free_port
from support.standin import wait_for
from support.cli import invoke

PAUSE_KEY, LEADER_KEY = KEYS.paused, KEYS.leader
NOW = 1_795_000_000.0
WRITTEN = json.dumps({"by": "ops@bastion", "since": "2026-11-29T10:00:00.000Z", "until": None,
                      "reason": "deploy"}).encode()
UNKNOWN = "unknown (not written by `reaper pause`)"

# Every test here runs the CLI as an operator would: no ./reaper.toml, no REAPER_* from the machine.
pytestmark = [pytest.mark.usefixtures("isolated_cli"),
              pytest.mark.cluster_too]  # the same scenarios on a Redis Cluster


@pytest.fixture
def env(cli_env):
    return cli_env


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- pure decisions --------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, kind, ttl_ms, by, reason, left_s", [
    (WRITTEN, "string", -1, "ops@bastion", "deploy", None),
    (WRITTEN, "string", 30_000, "ops@bastion", "deploy", 30.0),
    (b"1", "string", -1, UNKNOWN, "", None),  # set by hand with redis-cli: still a pause
    (b"{not json", "string", 5_000, UNKNOWN, "", 5.0),
    (b"[1, 2]", "string", -1, UNKNOWN, "", None),
    (b'{"by": 5, "reason": ["x"]}', "string", -1, UNKNOWN, "", None),
    (b'{"by": ""}', "string", -1, UNKNOWN, "", None),
    (b"", "string", -1, UNKNOWN, "", None),
    (b"\xff\xfe", "string", -1, UNKNOWN, "", None),
    (None, "hash", -1, UNKNOWN, "", None),  # wrong type: still a pause
], ids=["written", "written-for", "by-hand", "not-json", "array", "wrong-types", "empty-by", "empty",
        "not-utf8", "hash"])
def test_any_pause_key_is_a_pause(raw, kind, ttl_ms, by, reason, left_s):
    state = parse_pause(raw, kind, ttl_ms, NOW)

    assert (state.by, state.reason, state.left_s) == (by, reason, left_s)
    assert (state.until is None) == (left_s is None)
    assert change(None, state) == PAUSED


def test_until_is_redis_now_plus_what_is_left():
    state = parse_pause(WRITTEN, "string", 90_000, NOW)

    assert at(state.until).timestamp() == pytest.approx(NOW + 90, abs=0.001)
    assert state.since == "2026-11-29T10:00:00.000Z"
    assert "until" in state.describe() and "90.0s left" in state.describe() and ": deploy" in state.describe()


@pytest.mark.parametrize("kind, ttl_ms", [("none", -2), ("string", -2)])
def test_no_key_is_no_pause(kind, ttl_ms):
    assert parse_pause(None, kind, ttl_ms, NOW) is None


def _state(identity: bytes):
    return parse_pause(identity, "string", -1, NOW)


@pytest.mark.parametrize("seen, now, expected", [
    (None, None, None),
    (None, b"a", PAUSED),
    (b"a", b"a", None),  # the same pause: said once
    (b"a", b"b", PAUSED),  # paused again meanwhile: a new pause, said again
    (b"a", None, RESUMED),
])
def test_what_a_pause_check_says(seen, now, expected):
    assert change(seen, None if now is None else _state(now)) == expected


# -- the key in Redis ------------------------------------------------------------------------------

def test_pause_until_resumed(r):
    state = pause(r, KEYS, by="ops@test", reason="deploy")

    assert r.pttl(PAUSE_KEY) == -1
    assert (state.by, state.reason, state.until, state.left_s) == ("ops@test", "deploy", None, None)
    stored = json.loads(r.get(PAUSE_KEY))
    assert stored["by"] == "ops@test" and stored["since"].endswith("Z") and stored["until"] is None
    assert paused_state(r, KEYS) == state

    assert resume(r, KEYS) is True
    assert paused_state(r, KEYS) is None and not r.exists(PAUSE_KEY)
    assert resume(r, KEYS) is False


def test_a_pause_for_a_while_ends_by_itself(r):
    state = pause(r, KEYS, for_s=0.3, by="ops@test")

    ttl_ms = r.pttl(PAUSE_KEY)
    assert ttl_ms != -1 and ttl_ms <= 300  # an expiry (maybe run out already)
    assert 0 < state.left_s <= 0.3
    stored = json.loads(r.get(PAUSE_KEY))
    assert (at(stored["until"]) - at(stored["since"])).total_seconds() == pytest.approx(0.3, abs=0.002)
    assert wait_for(lambda: paused_state(r, KEYS) is None, timeout=2)


def test_a_pause_names_whoever_paused_by_default(r):
    assert "@" in pause(r, KEYS).by


@pytest.mark.parametrize("write", [
    lambda r: r.set(PAUSE_KEY, "1"),
    lambda r: r.hset(PAUSE_KEY, "by", "someone"),
    lambda r: r.set(PAUSE_KEY, "", px=10_000),
], ids=["string", "hash", "empty-with-ttl"])
def test_a_pause_key_written_by_hand_pauses_too(r, write):
    write(r)

    state = paused_state(r, KEYS)

    assert state is not None and state.by == UNKNOWN


def test_a_paused_replica_says_so_once_per_pause_and_once_when_resumed(r, logs):
    watch = PauseWatch(r, KEYS)
    assert watch.paused() is False

    pause(r, KEYS, by="ops@test", reason="deploy")
    assert [watch.paused() for _ in range(3)] == [True, True, True]
    pause(r, KEYS, by="ops@test", reason="deploy, again")
    assert watch.paused() is True
    resume(r, KEYS)
    assert [watch.paused() for _ in range(2)] == [False, False]

    said = [m for _, m in logs if m.startswith(("Paused:", "Resumed:"))]
    assert len(said) == 3
    assert said[0].startswith("Paused: by ops@test since ") and said[0].endswith(
        "(until `reaper resume`): deploy; doing nothing")
    assert said[1].endswith(": deploy, again; doing nothing")
    assert said[2] == "Resumed: the pause is over; jobs run again"


# -- the jobs it gates -------------------------------------------------------------------------

def leading_gate(ctx) -> Gate:
    leadership = Leadership(Lease(ctx.client, ctx.keys.leader, 10))
    assert leadership.tick()
    return Gate(PauseWatch(ctx.client, ctx.keys), leadership)


def test_a_paused_leader_does_no_sweep_cascade_or_cleanup(r, world, ctx_factory, auth_service, user_service):
    world.guest(2, age=400)
    world.entry("guest_4", "sock4")  # an orphan
    ctx = ctx_factory()
    gate = leading_gate(ctx)
    jobs = daemon.jobs(ctx, False, gate)
    try:
        pause(r, KEYS, by="ops@test")
        for job_id in (SWEEP, CASCADE, CLEANUP):
            jobs[job_id]()
        assert world.records() == {"sock2"} and set(world.online()) == {"guest_2", "guest_4"}
        assert auth_service.requests == [] and user_service.requests == []
        assert r.get(LEADER_KEY) == gate.leadership.lease.token.encode()  # it keeps its lease

        resume(r, KEYS)
        jobs[SWEEP](), jobs[CASCADE]()
        assert world.records() == set() and world.online() == {}
        assert sorted(auth_service.deleted_guests()) == ["guest_2", "guest_4"]
    finally:
        gate.leadership.stop()


def test_a_replica_started_while_paused_skips_the_startup_step(r, world, ctx_factory, logs):
    world.guest(1, age=5)
    pause(r, KEYS, by="ops@test")
    ctx = ctx_factory(startup__purge="all")
    gate = Gate(PauseWatch(ctx.client, ctx.keys), Leadership(Lease(ctx.client, ctx.keys.leader, 10)))
    try:
        assert daemon.first_step(ctx, gate) == set()
        assert gate.leadership.is_leader  # it takes part in the election all the same
    finally:
        gate.leadership.stop()

    assert world.records() == {"sock1"} and not r.hexists(keys_of(r).intents, "purge")
    assert logs.at("INFO", "Startup: paused; skipping the startup step (startup.purge = all)")


def test_run_once_while_paused_does_nothing_and_exits_0(r, world, make_config, mongo, auth_service, logs):
    world.guest(2, age=400)
    pause(r, KEYS, by="ops@test")

    assert daemon.run_once(make_config()) == 0

    assert world.records() == {"sock2"} and auth_service.requests == []
    assert logs.at("INFO", "Run: paused; nothing done")
    assert not r.exists(LEADER_KEY)  # a paused run does not even take the lease


# -- the command line --------------------------------------------------------------------------

def stats_json(env) -> dict:
    result = invoke(["stats", "--json"], env)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def stats_rows(env) -> dict:
    result = invoke(["stats"], env)
    assert result.exit_code == 0, result.output
    return {name.strip(): value.strip() for name, _, value in
            (line.partition(":") for line in result.stdout.splitlines())}


def test_cli_pause_resume_and_stats(env, r):
    result = invoke(["pause", "--reason", "deploy"], env)

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Paused by ") and "(until `reaper resume`): deploy" in result.stdout
    assert r.exists(PAUSE_KEY) and r.pttl(PAUSE_KEY) == -1
    paused = stats_json(env)["paused"]
    assert paused["until"] is None and paused["left_s"] is None and paused["reason"] == "deploy"
    assert "@" in paused["by"] and paused["since"].endswith("Z")
    assert stats_rows(env)["paused"].startswith("YES, by ")

    result = invoke(["resume"], env)
    assert (result.exit_code, result.stdout) == (0, "Resumed\n")
    assert not r.exists(PAUSE_KEY)
    assert stats_json(env)["paused"] is None and stats_rows(env)["paused"] == "no"
    assert invoke(["resume"], env).stdout == "Not paused; nothing to do\n"


def test_cli_pause_for_a_duration(env, r):
    result = invoke(["pause", "--for", "10m"], env)

    assert result.exit_code == 0, result.output
    assert 599_000 < r.pttl(PAUSE_KEY) <= 600_000
    assert "s left)" in result.stdout
    paused = stats_json(env)["paused"]
    assert 599 < paused["left_s"] <= 600 and paused["until"].endswith("Z")
    assert "s left)" in stats_rows(env)["paused"]


@pytest.mark.parametrize("duration", ["soon", "0", "0ms", "-5s", "", "1 hour", "nan"])
def test_cli_pause_refuses_a_bad_duration_before_touching_anything(env, r, duration):
    result = invoke(["pause", "--for", duration], env)

    assert result.exit_code == 2
    assert "--for" in result.output and repr(duration) in result.output
    assert not r.exists(PAUSE_KEY)


@pytest.mark.parametrize("command", [["pause"], ["pause", "--for", "1m"], ["resume"]])
def test_cli_pause_and_resume_exit_3_when_redis_is_unreachable(env, command):
    result = invoke(command, {**env, "REAPER_REDIS_URL": f"redis://127.0.0.1:{find_free_port()}/0"})

    assert result.exit_code == 3
    assert "Redis unreachable" in result.output


def test_cli_stats_shows_the_leader_and_its_lease(env, r):
    assert stats_json(env)["leader"] is None
    assert stats_rows(env)["leader"] == "none (no replica holds the lease)"

    r.set(LEADER_KEY, "web-1:4242:ab12cd34", px=8_000)

    leader = stats_json(env)["leader"]
    assert leader["holder"] == "web-1:4242:ab12cd34" and leader["replica"] == "web-1:4242"
    assert r.pttl(LEADER_KEY) / 1000 - 0.1 <= leader["lease_left_s"] <= 8  # read before this PTTL (to 0.1 s)
    assert stats_rows(env)["leader"].startswith("web-1:4242 (lease ")
    assert r.get(LEADER_KEY) == b"web-1:4242:ab12cd34"  # stats only reads
