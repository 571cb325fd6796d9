"""Faults injected for real (issue #3, items 6 and 7): a daemon SIGKILLed in the middle of a
cascade and started again, an auth-service outage, Redis killed, frozen or absent, a Redis
that answers nothing, a slow downstream, a host clock hours off.

Every test ends the same way: each reaped guest's DELETE was answered 200, no live guest and no
registered user was touched, and no removal lacks its intent (``untraced``).
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pytest

from support.daemons import Launcher
from support.door import HeldDoor, scans
from support.guests import CONN, ONLINE, record, redis_now
from support.keys import KEYS
from support.redis_proc import RedisProcess, find_free_port
from support.standin import wait_for

AUTH_GUEST = "/auth/guest/"
INTENTS, DUE, DEAD = KEYS.intents, KEYS.due, KEYS.dead
CLAIM_TIMEOUT_S = 1.0
HEARTBEAT_S = 0.2

# On top of support.daemons.QUICK (short intervals, nothing at start, no MongoDB):
FAST = {
    "REAPER_TIMING_HEARTBEAT_INTERVAL": f"{HEARTBEAT_S}s",
    "REAPER_CASCADE_CLAIM_TIMEOUT": f"{CLAIM_TIMEOUT_S}s",
    "REAPER_LEADER_LEASE": "2s",  # a SIGKILLed leader must not hold up its successor for long
    "REAPER_SAFETY_MAX_REAP_FRACTION": "1",  # these worlds are mostly dead on purpose
}


# -- a real `python -m reaper` ----------------------------------------------------------------

@pytest.fixture
def launch(redis_server, auth_service, user_service, tmp_path):
    launcher = Launcher({"REAPER_REDIS_URL": redis_server.url}, auth_service.url, user_service.url,
                        tmp_path, FAST)
    yield launcher.start
    launcher.kill_all()


# -- the world and what must become of it --------------------------------------------------------

@dataclass
class Cast:
    """Who is in the world: the dead must be DELETEd, the others never touched."""

    stale: list[str] = field(default_factory=list)  # records that say dead
    orphans: list[str] = field(default_factory=list)  # entries whose record is gone
    live: list[str] = field(default_factory=list)
    registered: list[str] = field(default_factory=list)

    @property
    def dead(self) -> set[str]:
        return set(self.stale) | set(self.orphans)

    @property
    def kept_entries(self) -> set[str]:
        return set(self.live) | set(self.registered)


def socket_of(user_id: str) -> str:
    return "sock" + user_id.removeprefix("guest_")


def populate(r, stale=0, orphans=0, live=0, registered=0, first=0, live_age=5, stale_age=400,
             stale_pong_age=None) -> Cast:
    """A world written in one pipeline; users are numbered from ``first``, interleaved. Ages are
    seconds before Redis's now (heartbeat, and pong where given)."""
    now, cast, pipe = redis_now(r), Cast(), r.pipeline(transaction=False)
    kinds = ["stale"] * stale + ["orphans"] * orphans + ["live"] * live
    stale_pong = None if stale_pong_age is None else now - stale_pong_age
    for n, kind in enumerate(_interleave(kinds), start=first):
        user, sock = f"guest_{n}", f"sock{n}"
        if kind != "orphans":
            rec = (record(sock, user, now - live_age) if kind == "live"
                   else record(sock, user, now - stale_age, stale_pong))
            pipe.set(CONN + sock, json.dumps(rec), ex=3600)
        pipe.hset(ONLINE, user, json.dumps({"userId": user, "socketId": sock, "isGuest": True}))
        getattr(cast, kind).append(user)
    for n in range(registered):
        # A registered user's socket has no guest record: it looks like an orphan, and is not one.
        user = f"member_{first + n}"
        pipe.hset(ONLINE, user, json.dumps({"userId": user, "socketId": f"msock{n}", "isGuest": False}))
        cast.registered.append(user)
    pipe.execute()
    return cast


def _interleave(kinds: list[str]) -> list[str]:
    """Spread the kinds evenly, so every SCAN batch holds some of each."""
    return [k for _, k in sorted((i / kinds.count(k), k) for k in set(kinds)
                                 for i in range(kinds.count(k)))]


def sent(auth) -> Counter:
    """DELETE /auth/guest/{id} per id, however it was answered (or not)."""
    return Counter(r.path[len(AUTH_GUEST):] for r in auth.calls("DELETE", AUTH_GUEST)
                   if "/cleanup" not in r.path)


def answered(auth) -> Counter:
    """DELETE /auth/guest/{id} answered 200, per id."""
    return Counter(r.path[len(AUTH_GUEST):] for r in auth.calls("DELETE", AUTH_GUEST)
                   if r.status == 200 and "/cleanup" not in r.path)


def in_flight(auth) -> int:
    """DELETEs received and not answered yet."""
    return sum(r.status is None for r in auth.calls("DELETE", AUTH_GUEST))


def pending_users(r) -> set[str]:
    return {k.decode().removeprefix("guest:") for k in r.hkeys(INTENTS)}


def untraced(r, auth, cast: Cast) -> set[str]:
    """Dead guests already removed from Redis with neither an intent nor an answered DELETE.

    Read in this order (Redis state, then intents, then DELETEs) so that a cascade finishing
    between two reads is not mistaken for a loss: an intent is written with the removal and
    deleted only after its DELETE was answered."""
    pipe = r.pipeline(transaction=False)
    for user in cast.stale:
        pipe.exists(CONN + socket_of(user))
    for user in cast.orphans:
        pipe.hexists(ONLINE, user)
    still_there = pipe.execute()
    removed = {u for u, there in zip(cast.stale + cast.orphans, still_there) if not there}
    return removed - pending_users(r) - set(answered(auth))


def assert_only_the_dead_deleted(r, auth, cast: Cast) -> None:
    assert set(sent(auth)) <= cast.dead, "a DELETE for a live guest or a registered user"
    assert set(answered(auth)) == cast.dead
    online = {k.decode() for k in r.hkeys(ONLINE)}
    assert online == cast.kept_entries
    records = {k.decode()[len(CONN):] for k in r.scan_iter(match=CONN + "*", count=1000)}
    assert records == {socket_of(u) for u in cast.live}


def all_settled(r) -> bool:
    return r.hlen(INTENTS) == 0 and r.zcard(DUE) == 0


def report(name: str, **figures) -> None:
    """Measured figures, printed for `pytest -s` and the closing note."""
    print(f"\n[figures] {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


# -- 1. SIGKILL in the middle of a cascade --------------------------------------------------------

CONCURRENCY = 8


def test_sigkill_mid_cascade_then_restart_deletes_every_reaped_guest(r, auth_service, launch):
    cast = populate(r, stale=250, orphans=50, live=40, registered=10)
    auth_service.hang_seconds = 0.1  # slow, not failing: the kill lands with DELETEs in flight
    auth_service.fail("hang", path_prefix=AUTH_GUEST)
    first = launch("run", REAPER_CASCADE_CONCURRENCY=str(CONCURRENCY))
    try:
        assert auth_service.wait_for(lambda: len(answered(auth_service)) >= 60, timeout=30), first.stderr()
        first.kill()
        answered_at_kill = answered(auth_service)
        assert len(answered_at_kill) < len(cast.dead)  # the kill landed mid-cascade
        assert r.hlen(INTENTS) > 0 and untraced(r, auth_service, cast) == set()
        # What the first sent may reach the stand-in a moment after the kill; the second sends
        # nothing before it has started.
        assert auth_service.wait_for(lambda: in_flight(auth_service) == 0, timeout=5)
        sent_by_first = sent(auth_service)

        restarted_at = time.monotonic()
        second = launch("run")
        assert auth_service.wait_for(lambda: set(answered(auth_service)) >= cast.dead, timeout=40), \
            second.stderr()
        finished_s = time.monotonic() - restarted_at
        assert wait_for(lambda: all_settled(r), timeout=10)
        assert second.stop() == 0
    finally:
        first.proc.kill()
    assert_only_the_dead_deleted(r, auth_service, cast)
    assert r.llen(DEAD) == 0
    twice = {u for u, n in sent(auth_service).items() if n > 1}
    assert twice <= set(sent_by_first), "the second daemon sent a DELETE twice"
    # Repeated: those out at the kill, and those answered but not yet written back (one wake-up's worth).
    assert len(twice) <= 2 * CONCURRENCY, "DELETEs answered well before the kill were repeated"
    report("sigkill_mid_cascade", reaped=len(cast.dead), sent_by_first=sum(sent_by_first.values()),
           answered_at_kill=len(answered_at_kill), sent_twice=len(twice),
           restart_to_last_delete_s=f"{finished_s:.1f}")


def test_a_delete_answered_is_recorded_while_the_rest_of_its_batch_still_runs(r, world, ctx_factory,
                                                                             auth_service):
    """Why a kill repeats only the DELETEs out at that moment: each answer is written back at once."""
    world.guest(1, age=400)
    world.guest(2, age=400)
    ctx = ctx_factory()
    ctx.sweep()
    auth_service.hang_seconds = 2.0
    auth_service.fail("hang", path_prefix=AUTH_GUEST + "guest_2")
    drain = threading.Thread(target=ctx.drain)
    drain.start()
    try:
        assert auth_service.wait_for(lambda: answered(auth_service) == Counter({"guest_1": 1}), timeout=5)
        recorded = wait_for(lambda: "auth" not in _steps_left(r, "guest_1"), timeout=1.0)
        still_hanging = "guest_2" not in answered(auth_service)
    finally:
        drain.join(10)
    assert still_hanging  # so the look above was taken in the middle of the batch
    assert recorded, "guest_1's DELETE was answered 200 but its intent still says 'auth'"


def _steps_left(r, user_id: str) -> list[str]:
    raw = r.hget(INTENTS, f"guest:{user_id}")
    return json.loads(raw)["steps"] if raw else []


# -- 2. an auth-service outage, with a SIGKILL in the middle of it ---------------------------------

OUTAGE_ENV = {"REAPER_CASCADE_RETRY_INITIAL": "200ms", "REAPER_CASCADE_RETRY_MAX": "2s",
              "REAPER_CASCADE_BREAKER_COOLDOWN": "1s"}
# Long enough for the retry backoff to reach its ceiling; FAULTS_OUTAGE_S=60 gives issue #3's minute.
OUTAGE_MIN_S = float(os.environ.get("FAULTS_OUTAGE_S", "4"))


def failed_503(auth) -> int:
    return sum(r.status == 503 for r in auth.calls("DELETE", AUTH_GUEST))


def test_auth_outage_with_a_sigkill_midway_every_delete_arrives_after_heal(r, auth_service, launch):
    cast = populate(r, stale=180, orphans=20, live=30, registered=10)
    auth_service.fail(503, path_prefix=AUTH_GUEST)
    outage_began = time.monotonic()
    first = launch("run", **OUTAGE_ENV)
    try:
        assert auth_service.wait_for(  # midway through the outage
            lambda: failed_503(auth_service) >= 3 and time.monotonic() - outage_began >= OUTAGE_MIN_S / 2,
            timeout=OUTAGE_MIN_S + 20), first.stderr()
        first.kill()
        assert untraced(r, auth_service, cast) == set()
        second = launch("run", **OUTAGE_ENV)
        assert second.wait_log("Run: sweeping"), second.stderr()
        failed_before_second = failed_503(auth_service)  # the first's last requests are answered by now
        assert auth_service.wait_for(  # the outage goes on for the second daemon too
            lambda: failed_503(auth_service) > failed_before_second
            and time.monotonic() - outage_began >= OUTAGE_MIN_S, timeout=OUTAGE_MIN_S + 20), second.stderr()
        auth_service.heal()
        healed_at = time.monotonic()
        assert auth_service.wait_for(lambda: set(answered(auth_service)) >= cast.dead, timeout=30), \
            second.stderr()
        heal_to_last_s = time.monotonic() - healed_at
        assert wait_for(lambda: all_settled(r), timeout=10)
        assert second.stop() == 0
    finally:
        first.proc.kill()
    assert_only_the_dead_deleted(r, auth_service, cast)
    assert r.llen(DEAD) == 0  # 503 is an outage: retried, never a dead letter
    report("auth_outage_sigkill", reaped=len(cast.dead), outage_s=f"{healed_at - outage_began:.1f}",
           answered_503=failed_503(auth_service), heal_to_last_delete_s=f"{heal_to_last_s:.1f}",
           answered_twice=sum(n > 1 for n in answered(auth_service).values()))


# -- 3. Redis killed, or frozen, in the middle of a sweep ------------------------------------------

def reaps_a_new_world_then_stops(client, auth, daemon, timeout: float = 30, **world) -> None:
    """A world written into a Redis the daemon has just found again: every dead guest DELETEd,
    every intent settled, a clean stop, nobody else touched."""
    cast = populate(client, **world)
    assert auth.wait_for(lambda: set(answered(auth)) >= cast.dead, timeout=timeout), daemon.stderr()
    assert wait_for(lambda: all_settled(client), timeout=10)
    assert daemon.stop() == 0
    assert_only_the_dead_deleted(client, auth, cast)


def full_sweeps(stderr: str) -> int:
    """Sweeps that went over the whole 20 000 (SCAN may return a key twice, never skip one)."""
    return sum(int(n) >= 20_000 for n in re.findall(r"Sweep: scanned=(\d+)", stderr))


def test_redis_killed_mid_sweep_then_back_empty_the_next_sweep_reaps(redis_server, r, auth_service,
                                                                     launch):
    populate(r, live=20_000)
    with HeldDoor((redis_server.host, redis_server.port)) as door:
        daemon = launch("run", REAPER_REDIS_URL=door.url, REAPER_REDIS_SCAN_COUNT="100",
                        REAPER_REDIS_SOCKET_TIMEOUT="500ms")
        try:
            assert wait_for(lambda: full_sweeps(daemon.stderr()) > 0, timeout=30), daemon.stderr()
            # A sweep reads 200 pages here: Redis dies while one waits for its 50th.
            door.hold_at(scans(CONN.encode() + b"*"), nth=50)
            assert door.held.wait(30), daemon.stderr()
            completed = full_sweeps(daemon.stderr())
            redis_server.kill()  # no persistence: it comes back empty
            door.release()
            assert daemon.wait_log("Redis unreachable", timeout=20), daemon.stderr()
            assert daemon.proc.poll() is None
            redis_server.start()
            with redis_server.client() as fresh:
                reaps_a_new_world_then_stops(fresh, auth_service, daemon, stale=20, orphans=5, live=10,
                                             registered=3)
        finally:
            daemon.proc.kill()
            if not redis_server.is_running:
                redis_server.start()
    text = daemon.stderr()
    assert "Redis reachable again" in text and "Run: stopped cleanly" in text
    assert "Traceback" not in text and "Job sweep failed" not in text
    assert full_sweeps(text) == completed  # the sweep cut short did not complete


class Freezer:
    """SIGSTOP / SIGCONT of the session redis-server: it answers nothing and keeps its data."""

    def __init__(self, server: RedisProcess):
        self.server, self.pid = server, None

    def freeze(self) -> None:
        self.pid = self.server.pid
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        if self.pid is not None:
            os.kill(self.pid, signal.SIGCONT)
            self.pid = None


@pytest.fixture
def freezer(redis_server):
    frozen = Freezer(redis_server)
    yield frozen
    frozen.thaw()  # whatever happened, later tests get a Redis that answers


def test_redis_frozen_while_reaping_leaves_no_removal_without_its_intent(r, auth_service, launch, freezer):
    cast = populate(r, stale=1000, live=1000, registered=5)
    auth_service.hang_seconds = 0.02  # the cascade lags behind the sweep, as it does in production
    auth_service.fail("hang", path_prefix=AUTH_GUEST)
    size, losses = r.dbsize(), []
    daemon = launch("run", REAPER_REDIS_SCAN_COUNT="100", REAPER_REDIS_SOCKET_TIMEOUT="250ms")
    try:
        assert wait_for(lambda: r.dbsize() <= size - 100, timeout=20, interval=0.005), daemon.stderr()
        freezer.freeze()
        sent_at_freeze = sum(sent(auth_service).values())
        assert daemon.wait_log("Redis unreachable", timeout=20), daemon.stderr()
        sent_while_frozen = sum(sent(auth_service).values()) - sent_at_freeze
        freezer.thaw()
        pending_after_thaw = r.hlen(INTENTS)

        def finished() -> bool:
            losses.extend(untraced(r, auth_service, cast))  # at every look, not only at the end
            return set(answered(auth_service)) >= cast.dead and all_settled(r)

        assert wait_for(finished, timeout=40, interval=0.05), daemon.stderr()
        assert daemon.stop() == 0
    finally:
        freezer.thaw()
        daemon.proc.kill()
    assert losses == []
    assert_only_the_dead_deleted(r, auth_service, cast)
    assert "Redis reachable again" in daemon.stderr()
    report("redis_frozen", reaped=len(cast.dead), pending_after_thaw=pending_after_thaw,
           sent_while_frozen=sent_while_frozen,
           answered_twice=sum(n > 1 for n in answered(auth_service).values()))


def test_no_more_deletes_go_out_once_redis_cannot_record_them(r, world, ctx_factory, auth_service, freezer):
    """Those out when Redis went away, and at most one more round, are repeated later; never the
    whole batch."""
    for n in range(24):
        world.guest(n, age=400)
    ctx = ctx_factory(cascade__concurrency=4, redis__socket_timeout="300ms")
    ctx.sweep()
    auth_service.hang_seconds = 0.6  # longer than the Redis timeout: the first answers find it gone
    auth_service.fail("hang", path_prefix=AUTH_GUEST)
    failures = []
    drain = threading.Thread(target=_catching(ctx.drain, failures))
    drain.start()
    try:
        assert auth_service.wait_for(lambda: len(auth_service.calls("DELETE", AUTH_GUEST)) >= 4, timeout=5)
        freezer.freeze()
        drain.join(10)
        assert failures, "the drain went on without Redis"
        over = wait_for(lambda: len(auth_service.calls("DELETE", AUTH_GUEST)) > 8, timeout=1.5)
    finally:
        freezer.thaw()
    assert not over, f"{len(auth_service.calls('DELETE', AUTH_GUEST))} DELETEs sent that no one can record"


def _catching(job, failures: list):
    def run() -> None:
        try:
            job()
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            failures.append(exc)

    return run


# -- 4. Redis not there at start, or not answering -------------------------------------------------

def waits(stderr: str) -> list[float]:
    """The delays the daemon said (at DEBUG) it waits before trying again."""
    return [float(s) for s in re.findall(r"Run: trying again in ([0-9.]+)s", stderr)]


def test_the_daemon_waits_for_redis_with_backoff_then_reaps_once_it_starts(auth_service, launch, tmp_path):
    port = find_free_port()
    daemon = launch("run", REAPER_REDIS_URL=f"redis://127.0.0.1:{port}/0", REAPER_LOG_LEVEL="DEBUG")
    late = RedisProcess(port=port, tmpdir=tmp_path / "late-redis")
    try:
        assert wait_for(lambda: len(waits(daemon.stderr())) >= 2, timeout=15), daemon.stderr()
        first, second = waits(daemon.stderr())[:2]
        assert 0.5 <= first <= 1.0 and 1.0 <= second <= 2.0  # doubled, with jitter
        assert daemon.proc.poll() is None and auth_service.requests == []
        late.start()
        with late.client() as client:
            reaps_a_new_world_then_stops(client, auth_service, daemon, timeout=40, stale=10, orphans=3,
                                         live=5, registered=2)
    finally:
        daemon.proc.kill()
        late.close()
    assert daemon.count("| WARNING | Run: Redis unreachable") == 1  # said once, however many tries
    assert daemon.count("Run: Redis reachable again") == 1


class BlackHole:
    """A TCP port that accepts connections and never answers: a hung Redis. It counts the
    connections made to it and the commands sent on them (RESP arrays: lines starting "*")."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.url = f"redis://127.0.0.1:{self.listener.getsockname()[1]}/0"
        self.connections, self.commands = 0, 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._swallow, args=(conn,), daemon=True).start()

    def _swallow(self, conn) -> None:
        with conn:
            while data := conn.recv(65536):
                with self._lock:
                    self.commands += sum(1 for line in data.split(b"\r\n") if line.startswith(b"*"))

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def black_hole():
    hole = BlackHole()
    yield hole
    hole.close()


def test_run_once_exits_3_after_a_timeout_when_redis_answers_nothing(black_hole, auth_service, launch):
    started = time.monotonic()
    daemon = launch("run", "--once", REAPER_REDIS_URL=black_hole.url, REAPER_REDIS_SOCKET_TIMEOUT="1s")
    code = daemon.proc.wait(60)
    took = time.monotonic() - started

    assert code == 3, daemon.stderr()
    assert "Redis unreachable" in daemon.stderr() and auth_service.requests == []
    # A couple of 1 s timeouts at most, not a dozen hidden retries of each command.
    assert wait_for(lambda: black_hole.commands >= 1, timeout=5)
    assert black_hole.connections <= 2 and black_hole.commands <= 2, (black_hole.connections, black_hole.commands)
    report("run_once_black_hole", exit_code=code, seconds=f"{took:.1f}")


# -- 5. the reaper host's clock hours off ----------------------------------------------------------

SHIFTED_CLOCK = '''
"""Test-only: this interpreter's wall clock runs CLOCK_SHIFT_S seconds off (monotonic untouched)."""
import datetime as _datetime
import os as _os
import time as _time

_SHIFT = float(_os.environ["CLOCK_SHIFT_S"])
_real_time, _real_time_ns = _time.time, _time.time_ns
_time.time = lambda: _real_time() + _SHIFT
_time.time_ns = lambda: _real_time_ns() + int(_SHIFT * 1e9)


class _ShiftedDatetime(_datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return super().now(tz) + _datetime.timedelta(seconds=_SHIFT)

    @classmethod
    def utcnow(cls):
        return super().utcnow() + _datetime.timedelta(seconds=_SHIFT)

    @classmethod
    def today(cls):
        return cls.now()


_datetime.datetime = _ShiftedDatetime
'''
PROBE = ("import datetime, time; "
         "print(time.time(), datetime.datetime.now(datetime.timezone.utc).timestamp())")


@pytest.fixture
def shifted_clock(tmp_path):
    """shifted_clock(seconds) -> env making a Python subprocess's wall clock that far off."""
    site = tmp_path / "shifted-clock"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SHIFTED_CLOCK)

    def env(seconds: float) -> dict:
        path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
        return {"PYTHONPATH": path, "CLOCK_SHIFT_S": str(seconds)}

    return env


@pytest.mark.parametrize("shift_h", [6, -6], ids=["6h-ahead", "6h-behind"])
def test_a_host_clock_hours_off_changes_nothing(r, auth_service, user_service, launch, shifted_clock,
                                                shift_h):
    env = shifted_clock(shift_h * 3600)
    probe = subprocess.run([sys.executable, "-c", PROBE], env={**os.environ, **env}, capture_output=True,
                           text=True, timeout=30)
    host_time, host_datetime = map(float, probe.stdout.split())
    for shown in (host_time, host_datetime):  # the shift really is in force in the subprocess
        assert abs(shown - time.time() - shift_h * 3600) < 60
    cast = populate(r, stale=6, orphans=3, live=8, registered=2)
    cast.stale += populate(r, stale=4, first=100, stale_age=5, stale_pong_age=250).stale  # by ping
    cast.live += populate(r, live=3, first=200, live_age=170).live  # near the edge, either side
    cast.stale += populate(r, stale=3, first=300, stale_age=200).stale

    daemon = launch("run", "--once", **env)
    code = daemon.proc.wait(30)

    assert code == 0, daemon.stderr()
    assert_only_the_dead_deleted(r, auth_service, cast)
    assert all_settled(r)
    cutoff = user_service.calls("DELETE", "/guests/cleanup")[0].query["before"]
    day_ago = datetime.fromtimestamp(redis_now(r) - 24 * 3600, tz=timezone.utc)
    assert abs(datetime.fromisoformat(cutoff.replace("Z", "+00:00")) - day_ago) < timedelta(minutes=1)


# -- 7. a slow downstream never stalls the Redis side ----------------------------------------------

def test_a_hanging_auth_service_never_stalls_the_sweeps(r, auth_service, launch):
    populate(r, stale=40, live=20)
    auth_service.hang_seconds = 120  # longer than the test: the first DELETEs stay in flight throughout
    auth_service.fail("hang", path_prefix=AUTH_GUEST)
    daemon = launch("run", REAPER_AUTH_SERVICE_TIMEOUT="60s", REAPER_CASCADE_CONCURRENCY="2")
    try:
        assert auth_service.wait_for(lambda: len(auth_service.calls("DELETE", AUTH_GUEST)) == 2, timeout=15)
        stuck = auth_service.calls("DELETE", AUTH_GUEST)
        assert daemon.wait_log("Sweep: scanned=20 "), daemon.stderr()  # the stale ones are gone
        sweeps_before = daemon.count("Sweep: ")
        ghosts = populate(r, orphans=5, first=1000).orphans

        # The sweep that was running when they were written may miss them; the next one may not.
        assert wait_for(lambda: daemon.count("Sweep: ") >= sweeps_before + 2, timeout=30), daemon.stderr()
        assert not any(r.hmget(ONLINE, ghosts))
        assert wait_for(lambda: daemon.count("Sweep: ") >= sweeps_before + 10, timeout=30), daemon.stderr()
        # ...all of it while the cascade's first batch still hangs: same two DELETEs, unanswered.
        assert auth_service.calls("DELETE", AUTH_GUEST) == stuck
        assert all(req.status is None for req in stuck)
    finally:
        daemon.kill()  # a SIGTERM would wait for the hanging batch; that is test_graceful_stop's part
    report("hanging_auth", sweeps_while_a_batch_hung=daemon.count("Sweep: ") - sweeps_before,
           heartbeat_interval_s=HEARTBEAT_S)
