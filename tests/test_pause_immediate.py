"""A pause stops the work already running (issue #16 item 3): the next gate refuses (each DELETE,
the MongoDB and guestLeft steps, a purge's cleanup-all, the next claim), the leader acknowledges
the pause in ``<prefix>pause_ack``, and `reaper pause` returns once it has, or says it could not
confirm. In-process drains take the gate's clock from the test; the daemons are real."""

import json
import threading
import time

import pytest

from reaper.app import daemon
from reaper.safety.authority import acknowledged_by, wait_for_ack
from reaper.app.daemon import run_once
from reaper.core.intents import AUTH_ALL, USERS_ALL, purge_intent
from reaper.core.turns import CASCADE
from reaper.core.keys import Keys
from reaper.core.config import RedisConfig
from reaper.store.pause import pause, paused_state, resume
from reaper.signaling.servers import SignalingCluster
from support.cli import invoke
from support.clocks import ManualClock
from support.guests import redis_now
from support.held import OTHER, lead, pause_now, queue_cascades
from support.standin import wait_for

KEYS = Keys.from_config(RedisConfig())
AUTH_GUEST = "/auth/guest/"
CONCURRENCY = 4


def deleted(standin) -> list[str]:
    return [q.path[len(AUTH_GUEST):] for q in standin.calls("DELETE", AUTH_GUEST)]


def intents(r, keys=KEYS) -> list[dict]:
    return [json.loads(raw) for raw in r.hvals(keys.intents)]


def drain_paused_after(ctx, after: int, clock: ManualClock):
    """The drain; reaper is paused after the ``after``-th DELETE, and the gate's clock moves past
    its bound then, so the next call asks again."""
    original, sent = ctx.targets.auth.delete_guest, []

    def delete(guest):
        original(guest)
        sent.append(guest.user_id)
        if len(sent) == after:
            pause_now(ctx)
            clock.advance(ctx.gate.fresh_s + 0.01)

    ctx.targets.auth.delete_guest = delete
    return ctx.drain()


def leading_ctx(ctx_factory, environ=None, **overrides):
    ctx = ctx_factory(environ, **overrides)
    clock = ManualClock()
    ctx.gate.clock = clock
    lead(ctx, clock)
    return ctx, clock


# -- in process: each irreversible step stops at its gate ------------------------------------------

@pytest.mark.cluster_too
def test_a_pause_stops_the_next_delete_and_the_leader_acknowledges_it(r, ctx_factory, auth_service, logs):
    ctx, clock = leading_ctx(ctx_factory, {"REAPER_MONGO_URI": ""}, cascade__concurrency=1,
                             cascade__batch_size=5)
    users = queue_cascades(r, ctx.keys, 12, ["auth"])

    report = drain_paused_after(ctx, 3, clock)

    assert deleted(auth_service) == users[:3]
    assert report.claimed == 5 and report.held == 2 and report.completed == 3
    assert len(intents(r, ctx.keys)) == 9 and {i["attempts"] for i in intents(r, ctx.keys)} == {0} and r.llen(ctx.keys.dead) == 0
    due = dict(r.zrange(ctx.keys.due, 0, -1, withscores=True))
    assert [due[f"guest:{u}".encode()] for u in users[5:]] == list(range(5, 12))  # no claim since
    assert acknowledged_by(r.get(ctx.keys.pause_ack), r.get(ctx.keys.paused)) is not None
    assert len(logs.at("WARNING", "Gate: reaper is paused")) == 1
    assert logs.at("INFO", "Gate: pause acknowledged")


@pytest.mark.cluster_too
def test_a_pause_stops_the_mongo_and_tell_steps(r, ctx_factory, auth_service, users):
    ctx, clock = leading_ctx(ctx_factory, notify__enabled=True)
    guests = queue_cascades(r, ctx.keys, 4, ["auth", "mongo", "tell"])
    users.insert_many([{"userId": u, "isGuest": True} for u in guests])
    channel = SignalingCluster(r, ctx.config.notify).channels.broadcast
    listener = r.pubsub()
    listener.subscribe(channel)
    assert listener.get_message(timeout=5)["type"] == "subscribe"

    report = drain_paused_after(ctx, 4, clock)

    assert sorted(deleted(auth_service)) == guests
    assert sorted(d["userId"] for d in users.find()) == guests
    r.publish(channel, b"marker")
    assert listener.get_message(timeout=5)["data"] == b"marker"  # no guestLeft before it
    listener.close()
    assert report.held == 4
    assert sorted(i["steps"] for i in intents(r, ctx.keys)) == [["mongo", "tell"]] * 4
    assert {i["attempts"] for i in intents(r, ctx.keys)} == {0}


def test_a_pause_stops_a_purges_cleanup_all(r, ctx_factory, auth_service, user_service):
    ctx, clock = leading_ctx(ctx_factory, {"REAPER_MONGO_URI": ""})
    queue_cascades(r, ctx.keys, 1, ["auth"])
    purge = purge_intent("startup_purge", redis_now(r), [AUTH_ALL, USERS_ALL])
    r.hset(KEYS.intents, purge.id, purge.to_json())
    r.zadd(KEYS.due, {purge.id: 1})

    report = drain_paused_after(ctx, 1, clock)

    assert auth_service.calls("DELETE", "/auth/guest/cleanup-all") == []
    assert user_service.calls("DELETE", "/guests/cleanup-all") == []
    kept = json.loads(r.hget(KEYS.intents, purge.id))
    assert kept["steps"] == [AUTH_ALL, USERS_ALL] and kept["attempts"] == 0
    assert report.held == 1

    resume(r, KEYS)  # and after the pause, the same drain goes on from there
    clock.advance(ctx.gate.fresh_s + 0.01)
    ctx.drain()
    assert len(auth_service.calls("DELETE", "/auth/guest/cleanup-all")) == 1
    assert not r.hexists(KEYS.intents, purge.id)


def test_a_pause_stops_a_sweep_before_its_next_take(r, world, ctx_factory):
    for n in range(5):
        world.guest(n, age=400)
    ctx, clock = leading_ctx(ctx_factory, {"REAPER_MONGO_URI": ""})
    pause_now(ctx)

    report = ctx.sweep()

    assert report.interrupted and len(world.records()) == 5 and r.hlen(KEYS.intents) == 0


def test_an_idle_leader_acknowledges_a_pause_at_its_next_job_and_a_standby_does_not(r, ctx_factory):
    leader_ctx, standby_ctx = ctx_factory(), ctx_factory()
    leader_gate, standby_gate = daemon._gate(leader_ctx), daemon._gate(standby_ctx)
    try:
        assert leader_gate.leadership.tick() and not standby_gate.leadership.tick()
        state = pause(r, KEYS, by="ops@test")

        daemon.jobs(standby_ctx, False, standby_gate)[CASCADE]()
        assert not r.exists(KEYS.pause_ack)  # only the leader's word counts

        daemon.jobs(leader_ctx, False, leader_gate)[CASCADE]()
        assert acknowledged_by(r.get(KEYS.pause_ack), state.identity) == leader_gate.leadership.me
    finally:
        leader_gate.leadership.stop()
        standby_gate.leadership.stop()


def test_run_once_stops_at_the_gate_when_paused_midway(r, make_config, mongo, auth_service):
    queue_cascades(r, KEYS, 200, ["auth"])
    auth_service.hang_seconds = 0.1
    auth_service.fail("hang", path_prefix=AUTH_GUEST)
    acked = {}

    def pause_midway():
        assert auth_service.wait_for(lambda: len(auth_service.calls("DELETE")) >= 8, timeout=30)
        state = pause(r, KEYS, by="ops@test")
        ack = wait_for_ack(r, KEYS, state.identity, within_s=30)
        acked["at"], acked["by"] = time.monotonic(), ack.by

    pauser = threading.Thread(target=pause_midway, daemon=True)
    pauser.start()
    code = run_once(make_config({"REAPER_MONGO_URI": ""}, cascade__concurrency=CONCURRENCY,
                                cascade__batch_size=20))
    pauser.join(30)

    assert code == 1 and acked["by"] is not None  # cascades wait; the run acknowledged the pause
    late = [q for q in auth_service.calls("DELETE") if q.at > acked["at"]]
    assert len(late) <= CONCURRENCY  # only those already in flight
    assert 0 < r.hlen(KEYS.intents) < 200 and {i["attempts"] for i in intents(r)} == {0}


# -- a real daemon, and `reaper pause` ------------------------------------------------------------

@pytest.fixture
def env(cli_env):
    return cli_env


def test_pause_stops_a_long_drain_once_acknowledged(r, launch, auth_service, env):
    queue_cascades(r, KEYS, 200, ["auth"])
    auth_service.hang_seconds = 0.1  # a slow auth-service
    auth_service.fail("hang", path_prefix=AUTH_GUEST)
    leader = launch("run", REAPER_CASCADE_CONCURRENCY=str(CONCURRENCY), REAPER_CASCADE_BATCH_SIZE="20")
    assert auth_service.wait_for(lambda: len(auth_service.calls("DELETE")) >= 20, timeout=30), leader.stderr()
    summaries = leader.count("Cascades: claimed=")

    result = invoke(["pause", "--reason", "deploy"], env)
    acked = time.monotonic()

    assert result.exit_code == 0, result.output
    assert f"Acknowledged by {leader.stderr().split('this replica (')[1].split(')')[0]}" in result.stdout
    assert wait_for(lambda: leader.count("Cascades: claimed=") > summaries, timeout=30), leader.stderr()
    late = [q for q in auth_service.calls("DELETE") if q.at > acked]
    print(f"DELETEs after the acknowledgement: {len(late)}")
    assert len(late) <= CONCURRENCY, len(late)  # at most those in flight when it acknowledged
    left = r.hlen(KEYS.intents)
    assert left > 0 and {i["attempts"] for i in intents(r)} == {0} and r.llen(KEYS.dead) == 0
    assert leader.count("Gate: reaper is paused") == 1

    assert invoke(["resume"], env).exit_code == 0  # the rest is done after the pause, none lost
    assert wait_for(lambda: r.hlen(KEYS.intents) == 0, timeout=60), leader.stderr()
    assert sorted(set(deleted(auth_service))) == [f"guest_{n:03d}" for n in range(200)]
    assert leader.stop() == 0


def test_pause_with_an_idle_daemon_is_acknowledged_at_its_next_job(r, launch, env):
    leader = launch("run")
    assert leader.wait_log("is now the leader"), leader.stderr()

    result = invoke(["pause"], env)

    assert result.exit_code == 0 and "Acknowledged by " in result.stdout, result.output
    assert "WARNING" not in result.output
    assert invoke(["resume"], env).stdout == "Resumed\n"
    assert not r.exists(KEYS.pause_ack) and not r.exists(KEYS.paused)
    assert leader.stop() == 0


@pytest.mark.cluster_too
def test_pause_with_no_daemon_running_says_it_could_not_confirm(r, env):
    result = invoke(["pause"], env)

    assert result.exit_code == 0 and result.stdout.startswith("Paused by ")
    # nobody to wait for: said at once, not after the 10 s deadline
    assert "no replica holds the leader lease, so none acknowledged (is a reaper running?)" in result.output
    assert "WARNING" in result.output and "within 10s" not in result.output
    assert paused_state(r, KEYS) is not None  # the pause holds all the same


@pytest.mark.cluster_too
def test_pause_says_so_when_the_leader_does_not_answer_in_time(r, env):
    r.set(KEYS.leader, OTHER, px=60_000)  # a leader that never answers (frozen, say)

    result = invoke(["pause", "--wait", "300ms"], env)

    assert result.exit_code == 0
    assert "no leader acknowledged within 0.3s (is a reaper running?)" in result.output
    assert paused_state(r, KEYS) is not None


def test_pause_no_wait_returns_at_once(r, env):
    r.set(KEYS.leader, OTHER, px=60_000)

    result = invoke(["pause", "--no-wait"], env)

    assert result.exit_code == 0 and result.stdout.startswith("Paused by ")
    assert "acknowledged" not in result.output.lower()


@pytest.mark.parametrize("wait", ["0", "soon", "-1s"])
def test_pause_refuses_a_bad_wait(r, env, wait):
    result = invoke(["pause", "--wait", wait], env)

    assert result.exit_code == 2 and "--wait" in result.output
    assert not r.exists(KEYS.paused)
