"""Clock jumps (docs/design.md, the cascade): Redis TIME moving against reaper's own monotonic clock.

Between two looks of one process, Redis TIME and ``time.monotonic`` move alike. When they
part by more than ``clock_skew``, Redis's clock stepped (NTP, an operator, a failover to a
master whose clock differs), and every age reaper computes says nothing true: forward, live
guests look dead (and Redis expires their records early, so they look like orphans too);
back, their timestamps look like the future. As the Kubernetes node controller grants every
node a fresh grace period after a disruption, no guest is judged by its timestamps until a
full ``connection_timeout`` has passed on the new clock: by then every live guest has written
its record again.

``decide`` is pure. ``ClockWatch`` keeps this process's last reading (a monotonic clock means
nothing to another process) and the hold in ``reaper:state`` (``clock_hold_until``, Redis
time), so a restart, or another replica taking over, keeps holding.
"""

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis
from loguru import logger

from reaper.core.counters import Counters
from reaper.core.durations import format_duration
from reaper.core.keys import Keys
from reaper.core import state

HOLD_FIELD = state.CLOCK_HOLD_UNTIL


@dataclass(frozen=True)
class Reading:
    """Redis TIME, and reaper's monotonic clock at the moment Redis read it: the midpoint of the
    call, give or take ``spread_s`` (half the call's duration)."""

    redis_s: float
    mono_s: float
    spread_s: float = 0.0


@dataclass(frozen=True)
class Verdict:
    jump_s: float | None  # how far Redis's clock stepped since the last reading (+ forward); None: it did not
    hold_until: float | None  # Redis time until which no guest is judged by timestamps; None: no hold

    @property
    def holding(self) -> bool:
        return self.hold_until is not None


def jump(previous: Reading | None, current: Reading, clock_skew_s: float) -> float | None:
    """How far Redis's clock moved beyond ours between two readings, when more than
    ``clock_skew`` (widened by how long each TIME call took); else None."""
    if previous is None:
        return None
    moved = (current.redis_s - previous.redis_s) - (current.mono_s - previous.mono_s)
    return moved if abs(moved) > clock_skew_s + previous.spread_s + current.spread_s else None


def decide(previous: Reading | None, current: Reading, held_until: float | None,
           clock_skew_s: float, connection_timeout_s: float) -> Verdict:
    """A jump now starts a hold of ``connection_timeout`` on the new clock. A hold already written
    lasts until its end, but never longer than a fresh one: written before Redis's clock went
    back again, its end would lie far ahead."""
    jumped = jump(previous, current, clock_skew_s)
    if jumped is not None:
        return Verdict(jumped, current.redis_s + connection_timeout_s)
    if held_until is None or current.redis_s >= held_until:
        return Verdict(None, None)
    return Verdict(None, min(held_until, current.redis_s + connection_timeout_s))


class ClockWatch:
    """Looks at Redis TIME for the jobs that judge guests (the sweep) or act on them (the drain,
    retention): each look is compared with the one before, in this process. A jump is said once
    (WARNING), counted (``clock_jumps``), and the hold written to reaper:state; its end is said
    at INFO."""

    def __init__(self, client: redis.Redis, keys: Keys, clock_skew_s: float, connection_timeout_s: float,
                 counters: Counters, mono: Callable[[], float] = time.monotonic):
        self.client, self.keys, self.counters, self.mono = client, keys, counters, mono
        self.clock_skew_s, self.connection_timeout_s = clock_skew_s, connection_timeout_s
        self.previous: Reading | None = None
        self.held = False  # as this process last said
        self._lock = threading.Lock()  # the jobs look from their own threads

    def look(self, read_now: Callable[[], float], dry_run: bool = False) -> tuple[float, Verdict]:
        """Redis TIME by ``read_now``, and whether guests may be judged by timestamps now."""
        with self._lock:
            return self._look(read_now, dry_run)

    def _look(self, read_now: Callable[[], float], dry_run: bool) -> tuple[float, Verdict]:
        current = self._read(read_now)
        stored = hold_end(self.client.hget(self.keys.state, HOLD_FIELD))
        verdict = decide(self.previous, current, stored, self.clock_skew_s, self.connection_timeout_s)
        self.previous = current
        if verdict.jump_s is not None:
            self._jumped(verdict, dry_run)
        elif verdict.holding != self.held:
            self._changed(verdict, current.redis_s)
        if not dry_run and verdict.hold_until != stored:
            self._write(verdict.hold_until)
        self.held = verdict.holding
        return current.redis_s, verdict

    def _read(self, read_now: Callable[[], float]) -> Reading:
        before = self.mono()
        now = read_now()
        after = self.mono()
        return Reading(now, (before + after) / 2, (after - before) / 2)

    def _jumped(self, verdict: Verdict, dry_run: bool) -> None:
        self.counters.add("clock_jumps")
        way = "forward" if verdict.jump_s > 0 else "back"
        logger.warning("Clock: Redis TIME jumped {:.1f}s {} against reaper's own clock since its last "
                       "look (more than clock_skew {}): no guest is judged by its timestamps, and no "
                       "cascade or retention runs, for {} (connection_timeout) on the new clock{}",
                       abs(verdict.jump_s), way, format_duration(self.clock_skew_s),
                       format_duration(self.connection_timeout_s), " [dry run]" if dry_run else "")

    def _changed(self, verdict: Verdict, now: float) -> None:
        if verdict.holding:  # found written: by another replica, or by this one before a restart
            logger.warning("Clock: holding after a clock jump for {:.0f}s more: no guest is judged by its "
                           "timestamps, and no cascade or retention runs, until then", verdict.hold_until - now)
        else:
            logger.info("Clock: the hold after the clock jump is over; guests are judged by their "
                        "timestamps again")

    def _write(self, hold_until: float | None) -> None:
        """The hold as it is now: started, shortened, or over (a past end is deleted too)."""
        if hold_until is None:
            self.client.hdel(self.keys.state, HOLD_FIELD)
        else:
            self.client.hset(self.keys.state, HOLD_FIELD, repr(hold_until))


def hold_end(raw) -> float | None:
    """``clock_hold_until`` as written; None when absent or unreadable (then no hold: a value
    reaper did not write decides nothing). Pure."""
    if raw is None:
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
