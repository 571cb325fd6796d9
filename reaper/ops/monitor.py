"""What the daemon's jobs tell the world outside: health and readiness, Prometheus metrics,
and systemd's notify protocol. The job wrappers in ``daemon`` call it; it decides no reaping.

    startup step        STATUS= what it waits for or how far the purge is, and
                        EXTEND_TIMEOUT_USEC= at each sign of progress (``StartupProgress``)
    startup step done   READY=1, /readyz 200
    sweep turn          a sweep (leader), or the check that found this replica paused or
                        standing by: /healthz fresh, metrics recorded, STATUS= what it found
    turn finished       WATCHDOG=1 and /livez fresh, also when the turn found Redis unreachable:
                        they catch a hung process, while reaper waits out a Redis outage itself
    Redis trouble       STATUS= since when; the last status again once it is over
    stop signal         STOPPING=1, /readyz 503
"""

import math
import threading
import time
from collections.abc import Callable

import redis
from loguru import logger

from reaper.ops import health, status
from reaper.core.config import Config
from reaper.core.turns import PAUSED
from reaper.ops.health import Health
from reaper.ops.metrics import Metrics
from reaper.store.client import REDIS_DOWN
from reaper.store.outage import BACKOFF, UNREACHABLE, Trouble
from reaper.store.pause import paused_state
from reaper.ops.sdnotify import Notifier
from reaper.ops.server import Endpoint, Reply, Routes, Wsgi, serve
from reaper.sweep.sweep import SweepReport
from reaper.core import state

EXTEND_EVERY_S = 5.0  # at most one EXTEND_TIMEOUT_USEC= per this long of progress
STATUS_EVERY_S = 1.0  # at most one purge progress STATUS= per second


def startup_extension_s(config: Config) -> float:
    """What each EXTEND_TIMEOUT_USEC= asks for: longer than the longest wait between two signs
    of progress (a retry's backoff, or a few Redis round trips of redis.socket_timeout each),
    twice over, plus the time the next one may be held back."""
    return 2 * (BACKOFF.max_s + 3 * config.redis.socket_timeout_s) + EXTEND_EVERY_S


class StartupProgress:
    """While the startup step runs, each sign of progress (a retry to reach Redis, a batch of
    the startup purge) says itself in STATUS= and extends systemd's start timeout, so a long
    purge that progresses is not killed by TimeoutStartSec= while a hung one still is. ``over``
    once READY=1 is sent: nothing more. ``show``/``done`` make it the purge's progress hook."""

    def __init__(self, notifier: Notifier, extend_s: float, clock: Callable[[], float] = time.monotonic):
        self.notifier, self.extend_s, self.clock = notifier, extend_s, clock
        self.over = False
        self._next_extend = self._next_status = -math.inf
        self._held: str | None = None  # a progress line held back by STATUS_EVERY_S
        self._lock = threading.Lock()

    def say(self, line: str) -> None:
        """A change of state (waiting for Redis, the startup step begins): said at once."""
        with self._lock:
            if not self.over:
                self._held = None
                self.notifier.status(line)
                self._extend(self.clock())

    def show(self, text: str) -> None:
        """A purge batch done ("Purge: 4000 keys matching …"): said at most once a second."""
        with self._lock:
            if self.over:
                return
            now = self.clock()
            self._held = status.progress(text)
            if now >= self._next_status:
                self._next_status = now + STATUS_EVERY_S
                self.notifier.status(self._held)
                self._held = None
            self._extend(now)

    def done(self) -> None:
        """The purge is over: its last progress line, if held back."""
        with self._lock:
            if self._held is not None and not self.over:
                self.notifier.status(self._held)
            self._held = None

    def end(self) -> None:
        with self._lock:
            self.over = True

    def _extend(self, now: float) -> None:
        if now >= self._next_extend:
            self._next_extend = now + EXTEND_EVERY_S
            self.notifier.extend_timeout(self.extend_s)


class Attached:
    """The run's context and gate, once they exist: what the metrics read at scrape time and the
    status line names. Before ``attach`` every reading is the quiet one."""

    def __init__(self):
        self.ctx = None  # the run's app Context (ops is below app: no import)
        self.gate = None

    def counts(self) -> dict[str, int]:
        return {} if self.ctx is None else self.ctx.counters.snapshot()

    def leads(self) -> bool:
        return self.gate is not None and self.gate.leadership.is_leader

    def paused(self) -> bool:
        return self.gate is not None and self.gate.pause_watch.seen_paused

    def circuits(self) -> tuple:
        return () if self.ctx is None else self.ctx.runner.circuits.all()

    def leader_name(self) -> str | None:
        holder = None if self.gate is None else self.gate.leadership.holder
        return holder.name if holder else None


class SteadyStatus:
    """STATUS= as `systemctl status` shows it: the last turn's line is the steady one, said again
    once a Redis outage's line has had its time."""

    def __init__(self, notifier: Notifier, wall: Callable[[], float]):
        self.notifier = notifier
        self.wall = wall  # for "Redis unreachable since 12:00:03Z": Redis's own clock is out of reach
        self._steady: str | None = None
        self._down_since: float | None = None
        self._lock = threading.Lock()

    def turned(self, line: str) -> None:
        """A turn that reached Redis: its line is the steady one, said now and after an outage."""
        with self._lock:
            self._steady, self._down_since = line, None
        self.notifier.status(line)

    def outage(self, kind: str) -> str:
        return status.outage(kind, self._since())

    def back(self) -> None:
        with self._lock:
            self._down_since = None

    def restore(self) -> None:
        """Redis answers again: the last turn's line, until the next turn says more."""
        self.back()
        with self._lock:
            steady = self._steady
        if steady is not None:
            self.notifier.status(steady)

    def _since(self) -> float:
        """When the Redis trouble in hand began (on the wall clock: it is said as a time of day)."""
        with self._lock:
            if self._down_since is None:
                self._down_since = self.wall()
            return self._down_since


class Monitor:
    """Built before Redis is reached (so /healthz answers "starting" meanwhile); ``attach``
    gives it the context and the gate once they exist."""

    def __init__(self, config: Config, notifier: Notifier | None = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time):
        self.interval_s = config.timing.heartbeat_interval_s
        self.health = Health(self.interval_s, clock)  # ages on the monotonic clock: the wall clock may step
        self.attached = attached = Attached()
        self.metrics = Metrics(attached.counts, attached.leads, attached.paused, attached.circuits)
        self.notifier = Notifier() if notifier is None else notifier
        self.startup = StartupProgress(self.notifier, startup_extension_s(config), clock)
        self.steady = SteadyStatus(self.notifier, wall)
        self.endpoint: Endpoint | None = None
        self._stopping = False

    def attach(self, ctx, gate) -> "Monitor":
        self.attached.ctx, self.attached.gate = ctx, gate
        return self

    def routes(self) -> Routes:
        return {"/livez": lambda: _json(self.health.livez()),
                "/healthz": lambda: _json(self.health.healthz()),
                "/readyz": lambda: _json(self.health.readyz()),
                "/metrics": Wsgi(self.metrics.app)}

    def listen(self, address: str) -> None:
        """Serve the routes on ``address`` ("" serves nothing); ConfigError when it cannot."""
        if address:
            self.endpoint = serve(address, self.routes())

    def starting(self, what: str) -> None:
        """The startup step's stage, for `systemctl status` ("connecting to Redis")."""
        self.startup.say(status.starting(what))

    def ready(self) -> None:
        self.startup.end()  # no EXTEND_TIMEOUT_USEC= after READY=1
        self.health.ready()
        self.metrics.redis_up.set(1)  # the startup step has just used it
        self.notifier.ready(status.READY)
        self._check_watchdog()

    def swept(self, report: SweepReport) -> None:
        self.metrics.record_sweep(report)
        self.health.turned(health.SWEPT)
        pending = self._read_tier(with_mass_expiry=False)  # this sweep's own verdict is fresher
        self.steady.turned(status.swept(report, pending))

    def stood_by(self, why: str) -> None:
        """The gate said paused or standby: the turn's check is done, and that is healthy."""
        self.health.turned(why)
        self._read_tier(with_mass_expiry=True)
        self.steady.turned(self._paused_status() if why == PAUSED else status.standby(self.attached.leader_name()))

    def drained(self, _report=None) -> None:
        self._read_tier(with_mass_expiry=False)

    def turn_finished(self) -> None:
        self.health.beat()
        self.notifier.watchdog()

    def redis_down(self, exc: Exception, trouble: Trouble | None = None) -> None:
        """A job met Redis trouble: unreachable (the metric says so), refusing writes, or a key
        of the wrong type (it answers, but reaper cannot work)."""
        if trouble is None or trouble.kind == UNREACHABLE:
            self.health.redis_down(f"{type(exc).__name__}: {exc}")
            self.metrics.redis_up.set(0)
        else:
            self.health.redis_down(trouble.detail, trouble.kind)
        self.notifier.status(self.steady.outage(UNREACHABLE if trouble is None else trouble.kind))

    def waiting(self, trouble: Trouble | None) -> None:
        """What holds the startup step up, for /healthz and `systemctl status`; None once nothing does."""
        self.health.waiting(None if trouble is None else str(trouble))
        if trouble is None:
            self.steady.back()
        else:
            self.startup.say(status.starting(self.steady.outage(trouble.kind)))

    def redis_up(self) -> None:
        self.health.redis_up()
        self.metrics.redis_up.set(1)
        self.steady.restore()

    def stopping(self) -> None:
        if not self._stopping:
            self._stopping = True
            self.health.stopping()
            self.startup.end()
            self.notifier.stopping(status.STOPPING)

    def close(self) -> None:
        if self.endpoint is not None:
            self.endpoint.close()
            self.endpoint = None
        self.notifier.close()

    def _paused_status(self) -> str:
        try:
            ctx = self.attached.ctx
            return status.paused(paused_state(ctx.client, ctx.keys))
        except (*REDIS_DOWN, redis.RedisError):  # the gate read it a moment ago; said without details
            return status.paused(None)

    def _read_tier(self, with_mass_expiry: bool) -> int | None:
        """Pending and dead cascades (and the leader's last mass-expiry verdict), in one round trip;
        the pending count, None when it could not be read."""
        ctx = self.attached.ctx
        keys = ctx.keys
        pipe = ctx.client.pipeline(transaction=False)
        pipe.hlen(keys.intents)  # pending: every intent, with its schedule or not (reaper/store/reschedule.py)
        pipe.llen(keys.dead)
        pipe.hget(keys.state, state.MASS_EXPIRY)
        replies = pipe.execute(raise_on_error=False)
        if any(isinstance(reply, Exception) for reply in replies):
            return None  # a key of the wrong type: the leader's jobs say so, the gauges keep their values
        pending, dead, mass_expiry = replies
        self.metrics.record_tier(pending, dead, mass_expiry == b"1" if with_mass_expiry else None)
        return pending

    def _check_watchdog(self) -> None:
        watchdog_s = self.notifier.watchdog_s
        if watchdog_s is not None and watchdog_s < 2 * self.interval_s:
            logger.warning("systemd: WatchdogSec={:g}s is shorter than 2 x heartbeat_interval ({:g}s); "
                           "a sweep turn comes once per interval, so systemd may kill a healthy reaper. "
                           "Set WatchdogSec to at least 3 x heartbeat_interval.", watchdog_s, self.interval_s)


def _json(answer: health.Answer) -> Reply:
    return Reply.json(answer.status, answer.body)
