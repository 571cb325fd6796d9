"""A jump of Redis's clock (issue #16 item 6, docs/design.md, the cascade "Clock jumps"): when Redis TIME moves against
reaper's monotonic clock by more than clock_skew, no guest is judged by its timestamps, and no
cascade runs, until a full connection_timeout has passed on the new clock.

A real redis-server's clock cannot be moved from a test: reaper is given a client whose TIME answers a
shifted clock instead, and the heartbeat writer stamps its records with that clock, as
signaling servers that take Redis's time do."""

import json
import threading

import pytest
import redis

from reaper.app import daemon
from reaper.store.clockjump import HOLD_FIELD, ClockWatch, Reading, Verdict, decide, hold_end, jump
from reaper.core.counters import Counters
from reaper.core.keys import Keys
from reaper.core.config import RedisConfig
from reaper.app.context import Context
from reaper.store.packer import CLIENT_OPTIONS
from reaper.store.client import redis_now
from support.cli import invoke
from support.clocks import ManualClock
from support.guests import CONN, ONLINE, record
from support.keys import KEYS
from support.metrics import metrics_of, samples, value
from support.standin import wait_for
from support.intents import all_stored

SKEW, TIMEOUT = 5.0, 180.0
STATE = KEYS.state


# -- the decision, pure --------------------------------------------------------------------------

@pytest.mark.parametrize("previous, current, moved", [
    (None, Reading(5000.0, 10.0), None),  # a first look has nothing to compare with
    (Reading(1000.0, 10.0), Reading(1030.0, 40.0), None),  # both moved 30 s
    (Reading(1000.0, 10.0), Reading(1034.0, 40.0), None),  # 4 s apart: within clock_skew
    (Reading(1000.0, 10.0), Reading(1035.0, 40.0), None),  # exactly clock_skew: not more
    (Reading(1000.0, 10.0), Reading(1035.5, 40.0), 5.5),
    (Reading(1000.0, 10.0), Reading(4630.0, 40.0), 3600.0),  # stepped an hour forward
    (Reading(1000.0, 10.0), Reading(-2570.0, 40.0), -3600.0),  # an hour back
    (Reading(1000.0, 10.0), Reading(1000.0, 40.0), -30.0),  # Redis's clock stood still for 30 s
    (Reading(1000.0, 10.0), Reading(1000.0, 14.0), None),  # ... for 4 s
    (Reading(1000.0, 10.0, 0.5), Reading(1036.0, 40.0, 0.75), None),  # slow TIME calls widen the slack
    (Reading(1000.0, 10.0, 0.5), Reading(1036.5, 40.0, 0.75), 6.5),
])
def test_a_jump_is_redis_time_moving_against_ours_by_more_than_clock_skew(previous, current, moved):
    assert jump(previous, current, SKEW) == moved


@pytest.mark.parametrize("previous, current, held_until, verdict", [
    (Reading(1000.0, 10.0), Reading(1030.0, 40.0), None, Verdict(None, None)),
    (Reading(1000.0, 10.0), Reading(4630.0, 40.0), None, Verdict(3600.0, 4630.0 + TIMEOUT)),
    (Reading(1000.0, 10.0), Reading(-2570.0, 40.0), None, Verdict(-3600.0, -2570.0 + TIMEOUT)),
    # A hold goes on until its end on the new clock, then is over.
    (Reading(4630.0, 40.0), Reading(4700.0, 110.0), 4810.0, Verdict(None, 4810.0)),
    (Reading(4630.0, 40.0), Reading(4810.0, 220.0), 4810.0, Verdict(None, None)),
    # After a restart there is no reading to compare with; the hold written is kept.
    (None, Reading(4700.0, 7.0), 4810.0, Verdict(None, 4810.0)),
    (None, Reading(4900.0, 7.0), 4810.0, Verdict(None, None)),
    # Written before Redis's clock went back again: never longer than a fresh hold.
    (None, Reading(1000.0, 7.0), 4810.0, Verdict(None, 1000.0 + TIMEOUT)),
    # A second jump during a hold starts a fresh one on the newest clock.
    (Reading(4700.0, 110.0), Reading(1100.0, 120.0), 4810.0, Verdict(-3610.0, 1100.0 + TIMEOUT)),
])
def test_a_jump_holds_for_connection_timeout_on_the_new_clock(previous, current, held_until, verdict):
    assert decide(previous, current, held_until, SKEW, TIMEOUT) == verdict


@pytest.mark.parametrize("raw, end", [
    (None, None), (b"4810.5", 4810.5), ("4810", 4810.0), (b"soon", None), (b"nan", None), (b"inf", None),
])
def test_a_hold_reaper_did_not_write_decides_nothing(raw, end):
    assert hold_end(raw) == end


# -- the watch, with the hold in a real Redis ------------------------------------------------------

class Clocks:
    """Reaper's monotonic clock and the Redis TIME it reads, moved by the test."""

    def __init__(self):
        self.mono = ManualClock(100.0)
        self.redis_s = 1_795_000_000.0

    def read_now(self) -> float:
        return self.redis_s

    def both(self, seconds: float) -> None:
        self.mono.advance(seconds)
        self.redis_s += seconds


@pytest.fixture
def watched(r):
    def make(clocks: Clocks, counters: Counters | None = None) -> ClockWatch:
        return ClockWatch(r, Keys.from_config(RedisConfig()), SKEW, TIMEOUT, counters or Counters(), clocks.mono)

    return make


def test_a_jump_is_said_once_counted_held_in_redis_and_its_end_said(r, watched, logs):
    clocks, counters = Clocks(), Counters()
    watch = watched(clocks, counters)
    assert not watch.look(clocks.read_now)[1].holding
    clocks.both(30)

    clocks.redis_s += 3600
    now, verdict = watch.look(clocks.read_now)

    assert verdict == Verdict(3600.0, now + TIMEOUT)
    assert float(r.hget(STATE, HOLD_FIELD)) == now + TIMEOUT
    clocks.both(TIMEOUT - 1)
    assert watch.look(clocks.read_now)[1].holding  # still, and said no more
    [warning] = logs.at("WARNING", "Clock:")
    assert "Redis TIME jumped 3600.0s forward" in warning and "3m" in warning
    assert counters.get("clock_jumps") == 1

    clocks.both(1)
    assert not watch.look(clocks.read_now)[1].holding
    assert r.hget(STATE, HOLD_FIELD) is None
    assert logs.at("INFO", "Clock: the hold after the clock jump is over")
    assert len(logs.at("WARNING", "Clock:")) == 1


def test_a_restart_during_a_hold_keeps_holding(r, watched, logs):
    clocks = Clocks()
    first = watched(clocks)
    first.look(clocks.read_now)
    clocks.redis_s -= 3600  # back an hour
    now, _ = first.look(clocks.read_now)
    clocks.both(60)

    again = watched(clocks)  # a new process: no reading of its own, the hold in Redis
    _, verdict = again.look(clocks.read_now)

    assert verdict == Verdict(None, now + TIMEOUT)
    assert logs.at("WARNING", "Clock: holding after a clock jump for 120s more")
    clocks.both(TIMEOUT)
    assert not again.look(clocks.read_now)[1].holding


def test_a_slow_time_call_is_no_jump(r, watched):
    clocks = Clocks()
    watch = watched(clocks)
    watch.look(clocks.read_now)
    clocks.both(30)

    def slow():  # Redis answers after 8 s (a stall): its TIME is read somewhere in between
        clocks.mono.advance(8)
        return clocks.read_now()

    assert not watch.look(slow)[1].holding


def test_a_dry_run_holds_and_writes_nothing(r, watched):
    clocks = Clocks()
    watch = watched(clocks)
    watch.look(clocks.read_now, dry_run=True)
    clocks.redis_s += 3600

    assert watch.look(clocks.read_now, dry_run=True)[1].holding
    assert r.exists(STATE) == 0


# -- 300 live guests heartbeating on Redis's clock, and the clock jumps -----------------------------

class JumpyRedis(redis.Redis):
    """A client whose TIME answers Redis's clock moved by ``offset_s``: what every reader of Redis
    TIME sees when the server's clock steps (a real redis-server's clock cannot be moved here)."""

    offset_s = 0.0

    def time(self):
        seconds, micros = super().time()
        return divmod(seconds * 1_000_000 + micros + round(self.offset_s * 1_000_000), 1_000_000)

    def step(self, seconds: float) -> None:
        self.offset_s += seconds


class Heartbeats:
    """A thread rewriting ``n`` live guests' records (and entries) with Redis's clock, round after
    round, as a signaling server does; ``paused()`` stops it between rounds."""

    def __init__(self, client: JumpyRedis, n: int, first: int = 1):
        self.client = client
        self.guests = [(f"guest_{i}", f"live{i}") for i in range(first, first + n)]
        self.rounds = 0
        self._go, self._idle, self._stop = threading.Event(), threading.Event(), threading.Event()
        self._go.set()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Heartbeats":
        self.write()  # every record exists before the first sweep
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._go.set()
        self._thread.join()

    def write(self) -> None:
        now = redis_now(self.client)
        pipe = self.client.pipeline(transaction=False)
        for user, sock in self.guests:
            pipe.set(CONN + sock, json.dumps(record(sock, user, now)), ex=180)
            pipe.hset(ONLINE, user, json.dumps({"userId": user, "socketId": sock, "isGuest": True}))
        pipe.execute()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._idle.clear()
            if not self._go.is_set():
                self._idle.set()
                self._go.wait()
                continue
            self.write()
            self.rounds += 1

    def pause(self) -> None:
        self._go.clear()
        assert self._idle.wait(30)

    def resume(self, rounds: int = 2) -> None:
        """Go on, and return once ``rounds`` more full rounds were written."""
        start = self.rounds
        self._go.set()
        assert wait_for(lambda: self.rounds >= start + rounds + 1, timeout=30)

    def sockets(self) -> set[str]:
        return {sock for _, sock in self.guests}

    def users(self) -> set[str]:
        return {user for user, _ in self.guests}


FAST = dict(timing__connection_timeout="3s", timing__ping_interval="1s", notify__enabled=False)


@pytest.fixture
def jumpy(redis_server, make_config, mongo):
    """jumpy(**overrides): a context on a client whose Redis clock the test steps (ctx.client.step),
    with a short connection_timeout (3 s)."""
    opened = []

    def make(**overrides) -> Context:
        client = JumpyRedis.from_url(redis_server.url, decode_responses=False, **CLIENT_OPTIONS)
        ctx = Context.open(make_config(**{**FAST, **overrides}), client=client)
        opened.append(ctx)
        return ctx

    yield make
    for ctx in opened:
        ctx.close()


def _dead(client: JumpyRedis, n: int, first: int = 1000) -> set[str]:
    """``n`` guests silent for 600 s on Redis's clock as it reads now."""
    now = redis_now(client)
    for i in range(first, first + n):
        client.set(f"{CONN}dead{i}", json.dumps(record(f"dead{i}", f"guest_{i}", now - 600)), ex=3600)
        client.hset(ONLINE, f"guest_{i}", json.dumps({"userId": f"guest_{i}", "socketId": f"dead{i}",
                                                      "isGuest": True}))
    return {f"guest_{i}" for i in range(first, first + n)}


def drain(ctx):
    """The cascade job, as the daemon and `run --once` run it."""
    return daemon.drain(ctx, daemon.lost_intents(ctx))


def _untouched(r, world, live: Heartbeats, auth_service) -> None:
    """No live guest touched: no record deleted, no entry removed, no DELETE, no intent."""
    assert live.sockets() <= world.records()
    assert live.users() <= set(world.online())
    assert not set(auth_service.deleted_guests()) & live.users()
    assert not {i["user_id"] for i in all_stored(r).values()} & live.users()


@pytest.mark.parametrize("step_s", [3600, -3600], ids=["forward-1h", "back-1h"])
def test_a_jump_of_redis_clock_reaps_no_live_guest(r, world, jumpy, auth_service, logs, step_s):
    ctx = jumpy()
    clock = ctx.client
    with Heartbeats(clock, 300) as live:
        assert ctx.sweep().clock_hold_until is None  # the first look: the reading to compare with
        live.pause()

        clock.step(step_s)
        dead = _dead(clock, 5)  # dead on the new clock: reaped once the hold is over
        looked = redis_now(clock)
        held = ctx.sweep()

        # connection_timeout (3 s) from the look that saw the jump, which came after `looked`
        assert held.clock_hold_until is not None and looked + 3.0 <= held.clock_hold_until <= held.now + 3.0
        assert 0 < held.clock_hold_s <= 3.0
        assert held.reaped == {} and held.quarantined == 0 and not held.mass_expiry
        assert "clock_hold=3s" in held.summary()
        assert drain(ctx).completed == 0
        _untouched(r, world, live, auth_service)
        assert dead <= set(world.online())
        assert ctx.sweep(force=True).reaped == {}  # --force lifts a mass expiry's hold, not this one

        live.resume()
        assert wait_for(lambda: (drain(ctx), ctx.sweep().clock_hold_until is None)[1], timeout=60)
        drain(ctx)
        _untouched(r, world, live, auth_service)
        assert auth_service.wait_for(lambda: set(auth_service.deleted_guests()) == dead, timeout=30)
        assert not dead & set(world.online())

    [jumped] = logs.at("WARNING", "Clock: Redis TIME jumped")
    assert ("forward" if step_s > 0 else "back") in jumped and "3600." in jumped
    assert ctx.counters.get("clock_jumps") == 1
    assert logs.at("INFO", "Clock: the hold after the clock jump is over")
    assert not logs.at("WARNING", "mass expiry")


@pytest.mark.parametrize("drift_s", [3, -3], ids=["ahead-3s", "behind-3s"])
def test_a_drift_within_clock_skew_holds_nothing(r, world, jumpy, auth_service, logs, drift_s):
    ctx = jumpy()
    clock = ctx.client
    with Heartbeats(clock, 300) as live:
        ctx.sweep()
        live.pause()
        clock.step(drift_s)
        dead = _dead(clock, 5)

        report = ctx.sweep()

        assert report.clock_hold_until is None and report.reaped == {"heartbeat_timeout": 5}
        drain(ctx)
        assert set(auth_service.deleted_guests()) == dead
        _untouched(r, world, live, auth_service)
    assert ctx.counters.get("clock_jumps") == 0 and not logs.at("WARNING", "Clock:")


def test_a_jump_during_a_mass_expiry_holds_through_both(r, world, jumpy, auth_service, logs):
    ctx = jumpy()
    clock = ctx.client
    with Heartbeats(clock, 300) as live:
        dead = _dead(clock, 400)  # 400 of 700 look dead: a mass expiry, held by default
        first = ctx.sweep()
        assert first.mass_expiry and first.reaped == {} and first.deferred == 400
        live.pause()

        clock.step(3600)
        during = ctx.sweep()

        assert during.clock_hold_until is not None and during.reaped == {}
        _untouched(r, world, live, auth_service)
        live.resume()
        assert wait_for(lambda: ctx.sweep().clock_hold_until is None, timeout=60)
        after = ctx.sweep()  # the clock hold is over; the mass expiry (400 of 700) still holds
        assert after.mass_expiry and after.reaped == {}
        assert dead <= set(world.online())

        forced = ctx.sweep(force=True)  # an operator lifts the mass-expiry hold

        assert forced.reaped["heartbeat_timeout"] == 400
        drain(ctx)
        _untouched(r, world, live, auth_service)
        assert set(auth_service.deleted_guests()) == dead


def test_a_new_process_during_a_hold_keeps_holding(r, world, jumpy, auth_service, logs):
    ctx = jumpy()
    clock = ctx.client
    with Heartbeats(clock, 50) as live:
        ctx.sweep()
        live.pause()
        clock.step(3600)
        dead = _dead(clock, 5)
        assert ctx.sweep().clock_hold_until is not None

        restarted = jumpy()  # another process (or replica) on the same Redis
        restarted.client.step(3600)
        report = restarted.sweep()

        assert report.clock_hold_until is not None and report.reaped == {}
        assert drain(restarted).completed == 0
        assert restarted.counters.get("clock_jumps") == 0  # it saw no jump; it found the hold
        assert logs.at("WARNING", "Clock: holding after a clock jump")
        assert dead <= set(world.online())
        _untouched(r, world, live, auth_service)


def test_no_cascade_and_no_retention_run_while_a_hold_lasts(r, world, jumpy, auth_service):
    """The drain and the cleanup look too: the gate would judge liveness, and retention its
    cutoff, on the jumped clock."""
    ctx = jumpy()
    world.entry("guest_900", "gone900")  # an orphan: its cascade is written by the sweep...
    assert ctx.sweep().reaped == {"orphan": 1}

    ctx.client.step(3600)  # ...and Redis's clock jumps before the cascade runs
    held = drain(ctx)

    assert held.completed == 0 and auth_service.calls("DELETE") == []
    assert set(all_stored(r)) == {"guest:guest_900"} and ctx.counters.get("clock_jumps") == 1
    assert daemon.cleanup(ctx) and auth_service.calls("DELETE") == []  # nor retention: Redis time too
    assert wait_for(lambda: drain(ctx).completed == 1, timeout=60)
    assert auth_service.deleted_guests() == ["guest_900"]


def test_a_hold_shows_in_metrics(r, world, jumpy):
    ctx = jumpy()
    metrics = metrics_of(ctx.counters)
    ctx.sweep()
    ctx.client.step(3600)

    report = ctx.sweep()
    metrics.record_sweep(report)

    scraped = samples(metrics)
    assert value(scraped, "reaper_clock_jumps_total") == 1
    assert value(scraped, "reaper_clock_hold_seconds") == report.clock_hold_s and 0 < report.clock_hold_s <= 3.0


# -- reaper check and reaper stats ---------------------------------------------------------------------

def test_check_and_stats_show_a_hold_while_it_lasts(r, cli_env):
    until = redis_now(r) + 120
    r.hset(STATE, HOLD_FIELD, repr(until))

    check = invoke(["check"], cli_env)
    stats = invoke(["stats", "--json"], cli_env)
    text = invoke(["stats"], cli_env)

    [line] = [line for line in check.stdout.splitlines() if line.startswith("clock:")]
    assert "WARN" in line and "no guest is judged by its timestamps" in line
    assert check.exit_code == 0  # a warning, not a failure
    assert until - redis_now(r) <= json.loads(stats.stdout)["clock_hold_left_s"] <= 120
    assert "clock hold:" in text.stdout and "ACTIVE after a clock jump" in text.stdout


def test_check_and_stats_say_nothing_of_a_hold_that_is_over(r, cli_env):
    r.hset(STATE, HOLD_FIELD, repr(redis_now(r) - 1))

    check = invoke(["check"], cli_env)
    stats = invoke(["stats", "--json"], cli_env)

    assert not [line for line in check.stdout.splitlines() if line.startswith("clock:")]
    assert "clock_hold_left_s" not in json.loads(stats.stdout)


def test_the_daemons_jobs_hold_through_a_jump_and_go_on_after_it(r, world, jumpy, auth_service):
    """The scheduled jobs (gate, sweep, cascade, cleanup, monitor) on the jumpy client."""

    from reaper.app.jobs import Gate, build_scheduler

    from reaper.core.turns import CASCADE, CLEANUP, SWEEP
    from reaper.store.leader import elect
    from reaper.ops.monitor import Monitor
    from reaper.store.pause import PauseWatch

    ctx = jumpy(timing__heartbeat_interval="200ms", timing__cascade_interval="100ms")
    leadership = elect(ctx.client, ctx.keys.leader, 10, False)
    assert leadership.tick()
    gate = Gate(PauseWatch(ctx.client, ctx.keys), leadership)
    monitor = Monitor(ctx.config).attach(ctx, gate)
    monitor.ready()
    reports = []
    jobs = daemon.jobs(ctx, False, gate, monitor)
    sweep_turn = jobs[SWEEP]

    def turn():
        sweep_turn()
        reports.append(ctx.last_sweep)

    def gauge(name: str) -> float:
        return value(samples(monitor.metrics), name)

    with Heartbeats(ctx.client, 300) as live:
        scheduler = build_scheduler(ctx.counters, {**jobs, SWEEP: turn},
                                    {SWEEP: 0.2, CASCADE: 0.1, CLEANUP: 0.5}, {SWEEP, CASCADE})
        scheduler.start()
        try:
            assert wait_for(lambda: len(reports) >= 2, timeout=30)
            live.pause()
            ctx.client.step(3600)
            dead = _dead(ctx.client, 5)
            assert wait_for(lambda: gauge("reaper_clock_hold_seconds") > 0, timeout=30)
            assert gauge("reaper_clock_jumps_total") == 1
            _untouched(r, world, live, auth_service)
            live.resume()

            assert auth_service.wait_for(lambda: set(auth_service.deleted_guests()) == dead, timeout=60)
            assert wait_for(lambda: gauge("reaper_clock_hold_seconds") == 0, timeout=30)
            _untouched(r, world, live, auth_service)
            assert ctx.counters.get("job_failed.sweep") == ctx.counters.get("job_failed.cascade") == 0
        finally:
            scheduler.shutdown(wait=True)
            leadership.stop()
            monitor.close()
