"""Is this reaper healthy, and ready? (What /healthz and /readyz answer.)

Healthy: Redis answered the jobs that last asked it, and a sweep turn finished within
3 x heartbeat_interval (counted from the end of the startup step until the first one). A
sweep turn is a sweep on the leader; on a replica that stands by, or while reaper is paused,
it is the check that found it must not sweep (it asked Redis whether it is paused and who
leads): that replica is doing its job, so probes and the watchdog must not kill it.
Ready: the startup step is done, and no stop signal has come. Until it is, /healthz says why it
is not when Redis holds it up (unreachable, refusing writes, a key of the wrong type).
Alive (/livez, for a liveness probe): what systemd's watchdog hears. A sweep turn finished within
3 x heartbeat_interval whatever it found, Redis unreachable included: reaper waits out an outage
by itself, and restarting it would not end one. While starting or stopping it is alive: the
startup step retries with backoff on its own, and a stop finishes by itself.

The decisions are pure functions of a snapshot and ``now`` (a monotonic clock: only ages
are measured here); ``Health`` keeps what the jobs told it.
"""

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from reaper.core.turns import PAUSED, STANDBY

STARTING, READY, STOPPING = "starting", "ready", "stopping"
SWEPT = "swept"  # what the last sweep turn did: SWEPT, or the gate's PAUSED / STANDBY
ROLES = {SWEPT: "leader", STANDBY: "standby", PAUSED: "paused"}
LATE_AFTER_INTERVALS = 3


@dataclass(frozen=True)
class Snapshot:
    phase: str = STARTING
    ready_at: float | None = None
    turn: str | None = None  # SWEPT, STANDBY or PAUSED
    turn_at: float | None = None
    redis_error: str | None = None
    redis_trouble: str = "redis unreachable"  # what redis_error means (reaper/store/outage.py's kinds)
    waiting: str | None = None  # what holds the startup step up, while it is tried again
    beat_at: float | None = None  # when a sweep turn last finished, whatever it found


@dataclass(frozen=True)
class Answer:
    ok: bool
    body: dict

    @property
    def status(self) -> int:
        return 200 if self.ok else 503


def healthz(state: Snapshot, now: float, interval_s: float) -> Answer:
    if state.ready_at is None:
        why = f": {state.waiting}; retrying with backoff" if state.waiting else ""
        return _unhealthy(f"starting: the startup step has not finished{why}")
    limit_s = LATE_AFTER_INTERVALS * interval_s
    since = state.turn_at if state.turn_at is not None else state.ready_at
    facts = {"role": ROLES.get(state.turn), "last_turn_age_s": _age(state.turn_at, now),
             "limit_s": limit_s}
    if state.redis_error is not None:
        return _unhealthy(f"{state.redis_trouble}: {state.redis_error}", facts)
    if now - since > limit_s:
        return _unhealthy(f"{_late(state.turn)} for {now - since:.1f}s, more than "
                          f"{LATE_AFTER_INTERVALS} x heartbeat_interval ({limit_s:g}s)", facts)
    return Answer(True, {"status": "ok", **facts})


def readyz(state: Snapshot) -> Answer:
    return Answer(state.phase == READY, {"status": state.phase})


def livez(state: Snapshot, now: float, interval_s: float) -> Answer:
    if state.phase != READY:
        return Answer(True, {"status": state.phase})
    limit_s = LATE_AFTER_INTERVALS * interval_s
    since = state.beat_at if state.beat_at is not None else state.ready_at
    facts = {"last_beat_age_s": _age(state.beat_at, now), "limit_s": limit_s}
    if now - since > limit_s:
        return _unhealthy(f"no sweep turn finished for {now - since:.1f}s, more than "
                          f"{LATE_AFTER_INTERVALS} x heartbeat_interval ({limit_s:g}s)", facts)
    return Answer(True, {"status": "ok", **facts})


def _late(turn: str | None) -> str:
    if turn is None:
        return "no sweep turn since the startup step"
    return "no sweep" if turn == SWEPT else "no pause and leader check"


def _age(at: float | None, now: float) -> float | None:
    return None if at is None else round(now - at, 3)


def _unhealthy(reason: str, facts: dict | None = None) -> Answer:
    return Answer(False, {"status": "unhealthy", "reason": reason, **(facts or {})})


class Health:
    """What the jobs tell; thread-safe. ``clock`` is monotonic (time.monotonic by default)."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic):
        self.interval_s, self.clock = interval_s, clock
        self._state = Snapshot()
        self._lock = threading.Lock()

    def snapshot(self) -> Snapshot:
        with self._lock:
            return self._state

    def ready(self) -> None:
        self._change(phase=READY, ready_at=self.clock())

    def stopping(self) -> None:
        self._change(phase=STOPPING)

    def turned(self, turn: str) -> None:
        """A sweep turn finished: SWEPT, or STANDBY / PAUSED after asking Redis. Redis answered."""
        self._change(turn=turn, turn_at=self.clock(), redis_error=None)

    def beat(self) -> None:
        """A sweep turn finished, whatever it found (Redis unreachable too): the process works."""
        self._change(beat_at=self.clock())

    def redis_down(self, error: str, trouble: str = "redis unreachable") -> None:
        self._change(redis_error=error, redis_trouble=trouble)

    def waiting(self, why: str | None) -> None:
        """What holds the startup step up (None: nothing now)."""
        self._change(waiting=why)

    def redis_up(self) -> None:
        self._change(redis_error=None)

    def healthz(self) -> Answer:
        return healthz(self.snapshot(), self.clock(), self.interval_s)

    def readyz(self) -> Answer:
        return readyz(self.snapshot())

    def livez(self) -> Answer:
        return livez(self.snapshot(), self.clock(), self.interval_s)

    def _change(self, **changes) -> None:
        with self._lock:
            self._state = replace(self._state, **changes)
