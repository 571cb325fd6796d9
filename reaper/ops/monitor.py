"""What the daemon's jobs tell the world outside: health and readiness, Prometheus metrics,
and systemd's notify protocol. The job wrappers in ``daemon`` call it; it decides no reaping.

    startup step done   READY=1, /readyz 200
    sweep turn          a sweep (leader), or the check that found this replica paused or
                        standing by: /healthz fresh, metrics recorded
    turn finished       WATCHDOG=1 and /livez fresh, also when the turn found Redis unreachable:
                        they catch a hung process, while reaper waits out a Redis outage itself
    stop signal         STOPPING=1, /readyz 503
"""

import time
from collections.abc import Callable

from loguru import logger

from reaper.ops import health
from reaper.core.config import Config
from reaper.ops.health import Health
from reaper.ops.metrics import Metrics
from reaper.store.outage import UNREACHABLE, Trouble
from reaper.ops.sdnotify import Notifier
from reaper.ops.server import Endpoint, Reply, Routes, Wsgi, serve
from reaper.sweep.sweep import SweepReport


class Monitor:
    """Built before Redis is reached (so /healthz answers "starting" meanwhile); ``attach``
    gives it the context and the gate once they exist."""

    def __init__(self, config: Config, notifier: Notifier | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.interval_s = config.timing.heartbeat_interval_s
        self.health = Health(self.interval_s, clock)  # ages on the monotonic clock: the wall clock may step
        self.ctx = None  # the run's app Context, once attached (ops is below app: no import)
        self.gate = None
        self.metrics = Metrics(self._counts, self._leads, self._paused, self._circuits)
        self.notifier = Notifier() if notifier is None else notifier
        self.endpoint: Endpoint | None = None
        self._stopping = False

    def attach(self, ctx, gate) -> "Monitor":
        self.ctx, self.gate = ctx, gate
        return self

    def _counts(self) -> dict[str, int]:
        return {} if self.ctx is None else self.ctx.counters.snapshot()

    def _leads(self) -> bool:
        return self.gate is not None and self.gate.leadership.is_leader

    def _paused(self) -> bool:
        return self.gate is not None and self.gate.pause_watch.seen_paused

    def _circuits(self) -> tuple:
        return () if self.ctx is None else self.ctx.runner.circuits.all()

    def routes(self) -> Routes:
        return {"/livez": lambda: _json(self.health.livez()),
                "/healthz": lambda: _json(self.health.healthz()),
                "/readyz": lambda: _json(self.health.readyz()),
                "/metrics": Wsgi(self.metrics.app)}

    def listen(self, address: str) -> None:
        """Serve the routes on ``address`` ("" serves nothing); ConfigError when it cannot."""
        if address:
            self.endpoint = serve(address, self.routes())

    def ready(self) -> None:
        self.health.ready()
        self.metrics.redis_up.set(1)  # the startup step has just used it
        self.notifier.ready("running: startup step done")
        self._check_watchdog()

    def swept(self, report: SweepReport) -> None:
        self.metrics.record_sweep(report)
        self.health.turned(health.SWEPT)
        self._read_tier(with_mass_expiry=False)  # this sweep's own verdict is fresher

    def stood_by(self, why: str) -> None:
        """The gate said paused or standby: the turn's check is done, and that is healthy."""
        self.health.turned(why)
        self._read_tier(with_mass_expiry=True)

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

    def waiting(self, trouble: Trouble | None) -> None:
        """What holds the startup step up, for /healthz; None once nothing does."""
        self.health.waiting(None if trouble is None else str(trouble))

    def redis_up(self) -> None:
        self.health.redis_up()
        self.metrics.redis_up.set(1)

    def stopping(self) -> None:
        if not self._stopping:
            self._stopping = True
            self.health.stopping()
            self.notifier.stopping("stopping: finishing the batch in hand")

    def close(self) -> None:
        if self.endpoint is not None:
            self.endpoint.close()
            self.endpoint = None
        self.notifier.close()

    def _read_tier(self, with_mass_expiry: bool) -> None:
        """Pending and dead cascades (and the leader's last mass-expiry verdict), in one round trip."""
        keys = self.ctx.keys
        pipe = self.ctx.client.pipeline(transaction=False)
        pipe.hlen(keys.intents)  # pending: every intent, with its schedule or not (reaper/store/reschedule.py)
        pipe.llen(keys.dead)
        pipe.hget(keys.state, "mass_expiry")
        replies = pipe.execute(raise_on_error=False)
        if any(isinstance(reply, Exception) for reply in replies):
            return  # a key of the wrong type: the leader's jobs say so, the gauges keep their values
        pending, dead, mass_expiry = replies
        self.metrics.record_tier(pending, dead, mass_expiry == b"1" if with_mass_expiry else None)

    def _check_watchdog(self) -> None:
        watchdog_s = self.notifier.watchdog_s
        if watchdog_s is not None and watchdog_s < 2 * self.interval_s:
            logger.warning("systemd: WatchdogSec={:g}s is shorter than 2 x heartbeat_interval ({:g}s); "
                           "a sweep turn comes once per interval, so systemd may kill a healthy reaper. "
                           "Set WatchdogSec to at least 3 x heartbeat_interval.", watchdog_s, self.interval_s)


def _json(answer: health.Answer) -> Reply:
    return Reply.json(answer.status, answer.body)
