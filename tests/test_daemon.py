"""`reaper run`: the startup modes (docs/design.md, the startup purge) in process, and the daemon as a real subprocess
(docs/cli.md: exit codes, signals, Redis going away and coming back)."""

import json
import signal

import pytest
import redis

from reaper.core.counters import Counters
from reaper.app import daemon
from reaper.app.daemon import RedisOutage, startup
from reaper.app.jobs import build_scheduler
from reaper.core.turns import CASCADE, SWEEP
from support.keys import KEYS
from support.metrics import metrics_of, samples, value
from support.redis_proc import find_free_port
from support.standin import wait_for

INTENTS = KEYS.intents
DEFAULT_CHANNEL = "socket.io-request#/#"


@pytest.fixture
def subscribe(redis_server, r):
    """subscribe(channel): a second connection SUBSCRIBEd as a signaling server's adapter is."""
    opened = []

    def make(channel: str) -> None:
        client = redis_server.client()
        pubsub = client.pubsub()
        pubsub.subscribe(channel)
        opened.append((client, pubsub))
        assert wait_for(lambda: dict(r.pubsub_numsub(channel)).get(channel.encode(), 0) >= 1, timeout=5)

    yield make
    for client, pubsub in opened:
        pubsub.close()
        client.close()


def messages(logs) -> str:
    return "\n".join(m for _, m in logs)


# -- startup modes, in process ------------------------------------------------------------------

def test_cold_start_without_a_signaling_server_purges(r, world, ctx_factory, logs):
    world.guest(1, age=5)
    ctx = ctx_factory(startup__purge="cold")

    start_now = startup(ctx)

    assert SWEEP not in start_now and CASCADE in start_now
    assert world.records() == set() and world.online() == {}
    assert json.loads(r.hget(INTENTS, "purge"))["reason"] == "startup_purge"
    text = messages(logs)
    assert "purge=cold" in text and DEFAULT_CHANNEL in text and "cold start" in text


def test_cold_start_with_a_signaling_server_attached_sweeps_instead(r, world, ctx_factory, subscribe, logs):
    live = world.guest(1, age=5)
    subscribe(DEFAULT_CHANNEL)
    ctx = ctx_factory(startup__purge="cold")

    start_now = startup(ctx)

    assert SWEEP in start_now
    assert world.records() == {live[1]} and set(world.online()) == {live[0]}
    assert not r.hexists(INTENTS, "purge")
    text = messages(logs)
    assert "purge=cold" in text and "1 signaling server(s)" in text and "full sweep" in text


def test_the_request_channel_follows_the_notify_prefix_and_namespace(r, world, ctx_factory, subscribe, logs):
    live = world.guest(1, age=5)
    subscribe("voip-sig-request#/calls#")
    ctx = ctx_factory(startup__purge="cold", notify__channel_prefix="voip-sig",
                      notify__namespace="/calls")

    assert SWEEP in startup(ctx)
    assert world.records() == {live[1]}
    assert "voip-sig-request#/calls#" in messages(logs)


def test_a_subscriber_on_another_channel_does_not_count(r, world, ctx_factory, subscribe):
    world.guest(1, age=5)
    subscribe(DEFAULT_CHANNEL)
    ctx = ctx_factory(startup__purge="cold", notify__channel_prefix="voip-sig")

    assert SWEEP not in startup(ctx)
    assert world.records() == set()


def test_purge_all_purges_even_with_a_signaling_server(r, world, ctx_factory, subscribe, logs):
    world.guest(1, age=5)
    subscribe(DEFAULT_CHANNEL)

    start_now = startup(ctx_factory(startup__purge="all"))

    assert SWEEP not in start_now
    assert world.records() == set() and r.hexists(INTENTS, "purge")
    assert "purge=all" in messages(logs)


@pytest.mark.parametrize("mode, sweeps_now", [("stale", True), ("off", False)])
def test_stale_and_off_never_purge(r, world, ctx_factory, logs, mode, sweeps_now):
    live, stale = world.guest(1, age=5), world.guest(2, age=400)

    start_now = startup(ctx_factory(startup__purge=mode))

    assert (SWEEP in start_now) is sweeps_now
    assert world.records() == {live[1], stale[1]}  # startup itself reaps nothing
    assert not r.hexists(INTENTS, "purge")
    assert f"purge={mode}" in messages(logs)


# -- the daemon as a subprocess --------------------------------------------------------------------

def run_once(launch, **env) -> tuple[int, str]:
    daemon = launch("run", "--once", **env)
    code = daemon.proc.wait(30)
    return code, daemon.stderr()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_the_daemon_reaps_the_dead_keeps_the_living_and_stops_cleanly(
        r, world, launch, auth_service, sig):
    live = world.guest(1, age=5)
    world.guest(2, age=400)
    daemon = launch("run")
    try:
        assert auth_service.wait_for(lambda: auth_service.deleted_guests() == ["guest_2"], timeout=20), \
            daemon.stderr()
        assert daemon.wait_log("Sweep: scanned=1")  # a later sweep, with only the live guest left
        assert world.records() == {live[1]} and set(world.online()) == {live[0]}

        # It stops between runs: it does not wait for the cleanup job's next point (5 minutes
        # off), which stop()'s guard would not see the end of.
        assert daemon.stop(sig) == 0
    finally:
        daemon.proc.kill()
    assert "stopped cleanly" in daemon.stderr()
    assert r.zcard(KEYS.due) == 0


def test_run_once_exits_0_when_everything_is_done(r, world, launch, auth_service):
    world.guest(2, age=400)

    code, stderr = run_once(launch)

    assert code == 0, stderr
    assert auth_service.deleted_guests() == ["guest_2"] and world.records() == set()
    assert "Connection Stats - Total: 1, Responsive: 0, Unresponsive: 1" in stderr


def test_run_once_exits_1_when_a_cascade_waits_for_a_retry(r, world, launch, auth_service):
    world.guest(2, age=400)
    auth_service.fail(503)

    code, stderr = run_once(launch)

    assert code == 1, stderr
    assert r.hexists(INTENTS, "guest:guest_2") and world.records() == set()


def test_run_once_exits_1_when_retention_failed(r, launch, user_service):
    user_service.fail(503, path_prefix="/guests/cleanup")

    code, stderr = run_once(launch)

    assert code == 1, stderr
    assert "Retention: user-service failed" in stderr


def test_run_once_exits_3_when_redis_is_unreachable(launch, auth_service):
    code, stderr = run_once(launch, REAPER_REDIS_URL=f"redis://127.0.0.1:{find_free_port()}/0")

    assert code == 3, stderr
    assert "Redis unreachable" in stderr
    assert auth_service.requests == []


def test_run_exits_2_on_a_bad_setting_before_touching_anything(r, world, launch, auth_service):
    world.guest(2, age=400)

    code, stderr = run_once(launch, REAPER_TIMING_HEARTBEAT_INTERVAL="soon")

    assert code == 2
    assert "timing.heartbeat_interval" in stderr and "soon" in stderr
    assert world.records() == {"sock2"} and auth_service.requests == []


def test_the_daemon_waits_for_an_unreachable_redis_and_stops_on_sigterm(launch):
    daemon = launch("run", REAPER_REDIS_URL=f"redis://127.0.0.1:{find_free_port()}/0")
    try:
        assert daemon.wait_log("Redis unreachable"), daemon.stderr()
        assert daemon.proc.poll() is None  # still trying, not dead
        assert daemon.stop() == 0
    finally:
        daemon.proc.kill()
    assert "Traceback" not in daemon.stderr()


def test_the_daemon_survives_redis_going_away_and_coming_back(redis_server, r, world, launch,
                                                             auth_service):
    daemon = launch("run")
    try:
        assert daemon.wait_log("Sweep: scanned=0"), daemon.stderr()
        redis_server.stop()
        assert daemon.wait_log("Job sweep failed", "Redis unreachable", timeout=30), daemon.stderr()
        assert daemon.proc.poll() is None

        redis_server.start()
        with redis_server.client() as fresh:
            world.r = fresh
            world.guest(3, age=400)
            assert auth_service.wait_for(lambda: auth_service.deleted_guests() == ["guest_3"], timeout=30), \
                daemon.stderr()
            assert world.records() == set()
        assert daemon.stop() == 0
    finally:
        daemon.proc.kill()
        if not redis_server.is_running:
            redis_server.start()


# -- job errors, in process ------------------------------------------------------------------------

def test_a_failing_job_is_logged_and_counted(logs):
    counters = Counters()
    scheduler = build_scheduler(counters, {SWEEP: _boom}, {SWEEP: 0.05}, {SWEEP})
    scheduler.start()
    try:
        assert wait_for(lambda: counters.get("job_failed.sweep") >= 1, timeout=5)
    finally:
        scheduler.shutdown(wait=True)
    assert any(level == "ERROR" and "Job sweep failed: RuntimeError: broken on purpose" in m
               for level, m in logs)


def _boom():
    raise RuntimeError("broken on purpose")


def test_a_redis_outage_is_said_once_and_its_end_too(r, ctx_factory, logs):
    ctx = ctx_factory()
    outcomes = iter([redis.ConnectionError("refused"), redis.TimeoutError("slow"), None, None])

    def job():
        error = next(outcomes)
        if error:
            raise error

    guarded = RedisOutage(ctx).guard(SWEEP, job)
    for _ in range(4):
        guarded()  # never raises

    warnings = [m for level, m in logs if level == "WARNING"]
    assert len(warnings) == 1 and "Redis unreachable (refused)" in warnings[0]
    assert [m for _, m in logs if "reachable again" in m] == ["Run: Redis reachable again"]
    assert ctx.counters.get("redis_unreachable.sweep") == 2
    scraped = samples(metrics_of(ctx.counters))
    assert value(scraped, "reaper_redis_unreachable_total", job_name="sweep") == 2
    assert value(scraped, "reaper_redis_unreachable_total", job_name="cascade") == 0


def test_a_job_bug_is_not_mistaken_for_an_outage(r, ctx_factory):
    guarded = RedisOutage(ctx_factory()).guard(SWEEP, _boom)

    with pytest.raises(RuntimeError):
        guarded()


def test_settings_acted_on_now_are_no_longer_warned_about(r, make_config, mongo, logs):
    config = make_config(server__listen="127.0.0.1:9108", notify__enabled=True)

    assert daemon.run_once(config) == 0

    # server.listen is served by `reaper run` (test_server.py), notify by test_notify.py
    assert logs.at("WARNING", "Config: ") == []
