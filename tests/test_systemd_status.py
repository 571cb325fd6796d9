"""What `systemctl status` shows (STATUS=, reaper/ops/status.py) and EXTEND_TIMEOUT_USEC= while the
startup step runs, read off a real AF_UNIX datagram socket given as NOTIFY_SOCKET: in process
across sweep turns, pause, standby and a Redis outage, and from a real `reaper run`."""

import re
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from reaper.app import daemon
from reaper.app.context import Context
from reaper.app.jobs import Gate
from reaper.core.config import RedisConfig
from reaper.core.keys import Keys
from reaper.core.turns import CASCADE, SWEEP
from reaper.ops import status
from reaper.ops.monitor import EXTEND_EVERY_S, Monitor, startup_extension_s
from reaper.ops.sdnotify import Notifier
from reaper.store.leader import Lease, Leadership
from reaper.store.outage import REFUSED, UNREACHABLE, WRONG_TYPE, Trouble
from reaper.store.pause import Pause, PauseWatch, pause, resume
from support.notify import NotifySocket
from support.redis_proc import RedisProcess, find_free_port
from support.standin import wait_for

KEYS = Keys.from_config(RedisConfig())
NOON = 1_796_731_203.0  # 2026-12-07T12:00:03Z
SWEEP_STATUS = re.compile(r"^leader; last sweep \d\d:\d\d:\d\dZ: scanned=(\d+) stale=(\d+) reaped=(\d+); pending=(\d+)$")


@pytest.fixture
def sock():
    """systemd's side: a datagram socket with a short path (a unix socket's path fits in 108 bytes)."""
    where = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))
    listener = NotifySocket(where / "notify")
    yield listener
    listener.close()
    shutil.rmtree(where, ignore_errors=True)


def fields(sock: NotifySocket, name: str) -> list[str]:
    """The values of every ``name=`` field received so far, in order."""
    sock.drain()
    return [line.split("=", 1)[1] for message in sock.received for line in message.split("\n")
            if line.startswith(name + "=")]


def statuses(sock: NotifySocket) -> list[str]:
    return fields(sock, "STATUS")


def leading(ctx) -> Gate:
    """The gate of a replica that leads, and keeps trying for the lease as the daemon does."""
    leadership = Leadership(Lease(ctx.client, ctx.keys.leader, 10))
    assert leadership.tick()
    leadership.start()
    return Gate(PauseWatch(ctx.client, ctx.keys), leadership)


class Ticking:
    """A monotonic clock that moves ``step`` seconds at each reading: a slow startup step
    without a sleep. ``sock`` is read at each tick, as systemd reads its socket meanwhile (a
    datagram socket's queue holds only a few)."""

    def __init__(self, step: float, sock: NotifySocket):
        self.now, self.step, self.sock = 0.0, step, sock

    def __call__(self) -> float:
        self.sock.drain()
        self.now += self.step
        return self.now


# -- the lines, pure ---------------------------------------------------------------------------

def report(**kw):
    base = dict(now=NOON, scanned=1200, stale=Counter(heartbeat_timeout=2, ping_timeout=1),
                reaped=Counter(heartbeat_timeout=2, ping_timeout=1), mass_expiry=False, clock_hold_s=0.0,
                interrupted=False, dry_run=False)
    return SimpleNamespace(**{**base, **kw})


@pytest.mark.parametrize("given, pending, line", [
    (report(), 4, "leader; last sweep 12:00:03Z: scanned=1200 stale=3 reaped=3; pending=4"),
    (report(), None, "leader; last sweep 12:00:03Z: scanned=1200 stale=3 reaped=3"),
    (report(dry_run=True), 0, "dry run; last sweep 12:00:03Z: scanned=1200 stale=3 reaped=3; pending=0"),
    (report(mass_expiry=True, reaped=Counter()), 0,
     "leader; last sweep 12:00:03Z: scanned=1200 stale=3 reaped=0; pending=0; mass expiry: holding back"),
    (report(clock_hold_s=41.6, interrupted=True), 0,
     "leader; last sweep 12:00:03Z: scanned=1200 stale=3 reaped=3; pending=0; clock jump hold 42s, interrupted"),
])
def test_a_sweep_line(given, pending, line):
    assert status.swept(given, pending) == line


def test_the_other_lines():
    assert status.standby("web-2:4242") == "standby: web-2:4242 leads"
    assert status.standby(None).startswith("standby: no replica holds the leader lease")
    assert status.outage(UNREACHABLE, NOON) == "Redis unreachable since 12:00:03Z, retrying"
    assert status.outage(REFUSED, NOON) == "Redis refuses writes since 12:00:03Z, retrying"
    assert status.outage(WRONG_TYPE, NOON).startswith("a reaper key holds another Redis type since 12:00:03Z")
    assert status.progress("Purge: 40 keys matching guest_connection:*") == \
        "starting: purge: 40 keys matching guest_connection:*"


def test_a_pause_line_is_one_short_line_whatever_the_reason_holds():
    hostile = Pause(by="ops@web-1", since="2026-12-07T12:00:00.000Z", until=None, left_s=None,
                    reason="deploy\nSTATUS=forged\x1b[2J" + "x" * 500, identity=b"p")

    line = status.paused(hostile)

    assert line.startswith("paused by `reaper pause` (ops@web-1 since 2026-12-07T12:00:00.000Z, "
                           "until `reaper resume`): deploy\\nSTATUS=forged\\x1b[2J")
    assert "\n" not in line and "\x1b" not in line and len(line) <= status.LIMIT + 1
    assert status.paused(None) == "paused by `reaper pause`; `reaper resume` lifts it"


def test_the_same_status_is_never_sent_twice_in_a_row(sock):
    notifier = Notifier(sock.env)
    assert notifier.status("a") and not notifier.status("a")
    assert notifier.watchdog() and not notifier.status("a")  # another message between: still the same
    assert notifier.status("b") and notifier.status("a")
    assert notifier.ready("a") and notifier.stopping("c")  # READY=1 goes, its unchanged STATUS= does not
    assert sock.wait_for("STOPPING=1")
    assert sock.received == ["STATUS=a", "WATCHDOG=1", "STATUS=b", "STATUS=a", "READY=1", "STOPPING=1\nSTATUS=c"]
    notifier.close()


# -- sweep turns, standby, pause: the daemon's own jobs, in process ----------------------------

def test_each_sweep_turn_says_its_counts_and_the_pending_cascades(r, world, ctx_factory, sock):
    world.guest(1, age=5)
    world.guest(2, age=400)  # stale: reaped, its cascade pending
    ctx = ctx_factory()
    gate = leading(ctx)
    monitor = Monitor(ctx.config, Notifier(sock.env)).attach(ctx, gate)
    turns = daemon.jobs(ctx, False, gate, monitor)
    try:
        turns[SWEEP]()
        assert sock.wait_for("WATCHDOG=1")
        [line] = statuses(sock)
        assert SWEEP_STATUS.match(line).groups() == ("2", "1", "1", "1"), line

        world.guest(3, age=400)
        turns[SWEEP]()
        assert sock.wait_for("WATCHDOG=1", count=2)
        assert SWEEP_STATUS.match(statuses(sock)[-1]).groups()[1:] == ("1", "1", "2")
    finally:
        gate.leadership.stop()
        monitor.close()


def test_a_standby_replica_says_who_leads_once_while_the_watchdog_is_fed_every_turn(r, ctx_factory, sock):
    r.set(KEYS.leader, "web-2:4242:0123abcd", px=60_000)
    ctx = ctx_factory()
    gate = Gate(PauseWatch(ctx.client, ctx.keys), Leadership(Lease(ctx.client, ctx.keys.leader, 10)))
    assert not gate.leadership.tick()
    monitor = Monitor(ctx.config, Notifier(sock.env)).attach(ctx, gate)
    turns = daemon.jobs(ctx, False, gate, monitor)
    for _ in range(3):
        turns[SWEEP]()
    assert sock.wait_for("WATCHDOG=1", count=3)
    assert statuses(sock) == ["standby: web-2:4242 leads"]
    monitor.close()


def test_pause_and_resume_each_show_at_the_next_turn(r, world, ctx_factory, sock):
    world.guest(2, age=400)
    ctx = ctx_factory()
    gate = leading(ctx)
    monitor = Monitor(ctx.config, Notifier(sock.env)).attach(ctx, gate)
    turns = daemon.jobs(ctx, False, gate, monitor)
    try:
        pause(r, KEYS, by="ops@test", reason="maintenance")
        turns[SWEEP](), turns[SWEEP]()
        assert sock.wait_for("WATCHDOG=1", count=2)
        [line] = statuses(sock)
        assert re.fullmatch(r"paused by `reaper pause` \(ops@test since \S+Z, until `reaper resume`\): maintenance",
                            line), line
        assert world.records() == {"sock2"}  # and nothing done

        resume(r, KEYS)
        turns[SWEEP]()
        assert sock.wait_for("WATCHDOG=1", count=3)
        assert SWEEP_STATUS.match(statuses(sock)[-1]).groups()[:3] == ("1", "1", "1")
    finally:
        gate.leadership.stop()
        monitor.close()


def test_an_outage_says_since_when_then_the_sweeps_again(tmp_path, make_config, mongo, sock):
    with RedisProcess(tmpdir=tmp_path / "redis") as private:
        ctx = Context.open(make_config({"REAPER_REDIS_URL": private.url}))
        gate = leading(ctx)
        monitor = Monitor(ctx.config, Notifier(sock.env), wall=lambda: NOON).attach(ctx, gate)
        turns = daemon.jobs(ctx, False, gate, monitor)
        try:
            turns[SWEEP]()
            assert SWEEP_STATUS.match(statuses(sock)[-1])

            private.stop()
            turns[SWEEP](), turns[SWEEP](), turns[CASCADE]()
            assert sock.wait_for("WATCHDOG=1", count=3)  # the watchdog is fed all the same
            assert statuses(sock)[1:] == ["Redis unreachable since 12:00:03Z, retrying"]  # said once

            private.start()
            assert wait_for(lambda: (turns[SWEEP]() or True) and bool(SWEEP_STATUS.match(statuses(sock)[-1])),
                            timeout=20), statuses(sock)
            assert all(not line.startswith("Redis unreachable") for line in statuses(sock)[2:])
        finally:
            gate.leadership.stop()
            monitor.close()
            ctx.close()


# -- the startup step: STATUS= and EXTEND_TIMEOUT_USEC= -------------------------------------------

def test_a_long_startup_purge_extends_the_start_timeout_as_it_progresses_and_not_after_ready(
        r, world, ctx_factory, sock):
    for n in range(60):
        world.guest(n, age=5)
    ctx = ctx_factory(startup__purge="all", redis__scan_count=5)
    clock = Ticking(step=2.0, sock=sock)  # every reading two seconds on: each batch "takes" time
    monitor = Monitor(ctx.config, Notifier(sock.env), clock=clock).attach(ctx, None)
    ctx.progress = monitor.startup

    daemon.startup(ctx)
    sock.drain()
    during = len(sock.received)
    monitor.ready()
    monitor.startup.show("Purge: 1 more key")  # too late: nothing once READY=1 is sent
    monitor.startup.say("starting: anything")
    assert sock.wait_for("READY=1")
    sock.drain()

    extensions = fields(sock, "EXTEND_TIMEOUT_USEC")
    assert len(extensions) >= 3, sock.received
    assert set(extensions) == {str(round(startup_extension_s(ctx.config) * 1_000_000))}
    assert startup_extension_s(ctx.config) > EXTEND_EVERY_S  # each one outlasts the gap to the next
    assert all("EXTEND_TIMEOUT_USEC" not in message for message in sock.received[during:])
    assert sock.received[-1] == "READY=1\nSTATUS=running: startup step done"
    said = statuses(sock)
    assert said[0].startswith("starting: purge: deleting all guest state in Redis 127.0.0.1:")
    assert "starting: purge: 60 guest entries of users:online" in said  # the last, held back or not
    assert world.records() == set()


def test_extensions_and_progress_lines_are_paced_by_the_clock_not_by_the_batches(sock):
    clock = Ticking(step=0.5, sock=sock)  # a batch every half second
    progress_ = Monitor(SimpleNamespace(timing=SimpleNamespace(heartbeat_interval_s=30),
                                        redis=SimpleNamespace(socket_timeout_s=5)),
                        Notifier(sock.env), clock=clock).startup
    for n in range(40):  # 20 s of batches
        progress_.show(f"Purge: {n} keys")
    progress_.done()

    assert len(fields(sock, "EXTEND_TIMEOUT_USEC")) == 4  # one each 5 s
    said = statuses(sock)
    assert len(said) == 21  # one a second, and the last one, held back until the purge is done
    assert said[0] == "starting: purge: 0 keys" and said[-1] == "starting: purge: 39 keys"


def test_waiting_for_redis_at_start_says_so_and_extends(sock):
    config = SimpleNamespace(timing=SimpleNamespace(heartbeat_interval_s=30), redis=SimpleNamespace(socket_timeout_s=5))
    clock = Ticking(step=10.0, sock=sock)  # a retry every 10 s
    monitor = Monitor(config, Notifier(sock.env), clock=clock, wall=lambda: NOON)
    monitor.starting("connecting to Redis")
    trouble = Trouble(UNREACHABLE, "Error 111 connecting to 127.0.0.1:1. Connection refused.")
    for _ in range(3):
        monitor.waiting(trouble)
    monitor.waiting(None)
    monitor.ready()

    assert sock.wait_for("READY=1")
    assert statuses(sock) == ["starting: connecting to Redis",
                              "starting: Redis unreachable since 12:00:03Z, retrying",
                              "running: startup step done"]
    assert len(fields(sock, "EXTEND_TIMEOUT_USEC")) == 4  # each retry is progress
    monitor.close()


# -- a real `reaper run` ------------------------------------------------------------------------

def test_reaper_run_waiting_for_redis_extends_then_says_ready_then_its_sweeps(launch, sock, tmp_path):
    later = RedisProcess(port=find_free_port(), tmpdir=tmp_path / "later")
    try:
        daemon_ = launch("run", REAPER_REDIS_URL=later.url, REAPER_STARTUP_PURGE="all", **sock.env)
        assert wait_for(lambda: fields(sock, "EXTEND_TIMEOUT_USEC"), timeout=20), daemon_.stderr()
        assert wait_for(lambda: any(line.startswith("starting: Redis unreachable since ") for line in statuses(sock)),
                        timeout=20), (statuses(sock), daemon_.stderr())

        later.start()
        assert sock.wait_for("READY=1", timeout=30), daemon_.stderr()
        assert wait_for(lambda: any(SWEEP_STATUS.match(line) for line in statuses(sock)), timeout=20), statuses(sock)
        assert daemon_.stop() == 0
        assert sock.wait_for("STOPPING=1")

        ready = sock.index("READY=1")
        assert all("EXTEND_TIMEOUT_USEC" not in message for message in sock.received[ready:])
        said = statuses(sock)
        assert said[0] == "starting: connecting to Redis"
        assert "starting: startup step (startup.purge = all)" in said
        assert said[-1] == status.STOPPING
        assert all(a != b for a, b in zip(said, said[1:]))  # never the same twice in a row
    finally:
        later.close()
