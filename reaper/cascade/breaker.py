"""Circuit breakers: while a downstream keeps failing, it is called less often, not hammered.

    closed ── breaker_failures transient failures in a row ──▶ open
    open ── breaker_cooldown over: the next call goes, as the probe ──▶ half-open
    half-open ── the probe succeeds ──▶ closed
    half-open ── the probe fails ──▶ open (for another cooldown)

One circuit per target (auth-service, user-service, MongoDB, the signaling channels of the
tell step). A refused call raises CircuitOpen without touching the network; the cascade then
waits for the next probe without charging the intent an attempt. A 4xx is an answer, not an
outage: it never trips a circuit, and a probe answered with one closes it.

Breaker is the pure state machine (time comes in as an argument); Circuit puts it to work
for the cascade's threads: the lock, the monotonic clock, the log lines, the counters.
"""

import threading
import time
from dataclasses import dataclass

from loguru import logger

from reaper.core.counters import Counters
from reaper.core.durations import format_duration
from reaper.core.errors import PermanentError, StepError, TransientError
from reaper.core.intents import AUTH, AUTH_ALL, MONGO, MONGO_ALL, TELL, USERS_ALL

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


class CircuitOpen(StepError):
    """A step that was not attempted because its target's circuit is open: neither an
    outage of this intent (no attempt charged) nor a refusal."""

    def __init__(self, target: str, wait_s: float):
        self.target, self.wait_s = target, wait_s
        super().__init__(f"{target}: circuit open; next probe in {wait_s:.1f}s")


@dataclass
class Breaker:
    failures_to_open: int
    cooldown_s: float
    state: str = CLOSED
    failures: int = 0  # transient failures in a row
    opened_at: float = 0.0

    def allow(self, now: float) -> bool:
        """May a call go now? Granting the probe turns an open circuit half-open."""
        if self.state == CLOSED:
            return True
        if self.state == OPEN and now >= self.probe_at:
            self.state = HALF_OPEN
            return True
        return False  # open, or half-open with its probe still out

    def succeeded(self) -> bool:
        """The target answered; True when that closed the circuit."""
        was_closed = self.state == CLOSED
        self.state, self.failures = CLOSED, 0
        return not was_closed

    def failed(self, now: float) -> str | None:
        """A transient failure. When it opens the circuit, the state it left (CLOSED, or
        HALF_OPEN for a failed probe); None when it changes nothing."""
        self.failures += 1
        left = self.state
        if left == HALF_OPEN or (left == CLOSED and self.failures >= self.failures_to_open):
            self.state, self.opened_at = OPEN, now
            return left
        return None  # still closed, or already open: a call let through before, failing late

    def abandoned(self) -> None:
        """The probe ended without a verdict on the target (a bug of ours): the next call probes."""
        if self.state == HALF_OPEN:
            self.state = OPEN

    @property
    def probe_at(self) -> float:
        return self.opened_at + self.cooldown_s

    def wait(self, now: float) -> float:
        """Seconds until a call may go: 0 when closed or when the probe may go now."""
        return max(0.0, self.probe_at - now) if self.state == OPEN else 0.0


class Circuit:
    """A breaker guarding one target, shared by the cascade's threads."""

    def __init__(self, name: str, failures_to_open: int, cooldown_s: float, counters: Counters,
                 clock=time.monotonic):
        self.name, self.counters, self.clock = name, counters, clock
        self.breaker = Breaker(failures_to_open, cooldown_s)
        self.outage_since = 0.0  # when it last opened from closed, for the closing line
        self._lock = threading.Lock()

    @property
    def closed(self) -> bool:
        with self._lock:
            return self.breaker.state == CLOSED

    def wait(self) -> float:
        with self._lock:
            return self.breaker.wait(self.clock())

    def call(self, operation, *args):
        """``operation(*args)``, unless the circuit is open: then CircuitOpen and no call."""
        with self._lock:
            allowed = self.breaker.allow(self.clock())
        if not allowed:
            self.counters.add(f"circuit_refused.{self.name}")
            raise CircuitOpen(self.name, self.wait())
        try:
            result = operation(*args)
        except TransientError:
            self._failed()
            raise
        except PermanentError:
            self._succeeded()
            raise
        except BaseException:
            with self._lock:
                self.breaker.abandoned()
            raise
        self._succeeded()
        return result

    def _failed(self) -> None:
        with self._lock:
            now = self.clock()
            left = self.breaker.failed(now)
            if left == CLOSED:
                self.outage_since = now
        cooldown = format_duration(self.breaker.cooldown_s)
        if left == HALF_OPEN:
            logger.debug("Circuit: {} probe failed; next probe in {}", self.name, cooldown)
        elif left == CLOSED:
            self.counters.add(f"circuit_opened.{self.name}")
            logger.bind(target=self.name, circuit="open").warning(
                "Circuit: {} open after {} failures; next probe in {}", self.name,
                self.breaker.failures_to_open, cooldown)

    def _succeeded(self) -> None:
        with self._lock:
            closed = self.breaker.succeeded()
            open_for = self.clock() - self.outage_since
        if closed:  # counted by nothing: reaper_circuit_open and the log say it
            logger.bind(target=self.name, circuit="closed", open_s=round(open_for, 3)).info(
                "Circuit: {} closed; it answers again after {:.1f}s open", self.name, open_for)


@dataclass
class Circuits:
    auth: Circuit
    users: Circuit
    mongo: Circuit
    signaling: Circuit

    @classmethod
    def build(cls, failures_to_open: int, cooldown_s: float, counters: Counters,
              clock=time.monotonic) -> "Circuits":
        def circuit(name: str) -> Circuit:
            return Circuit(name, failures_to_open, cooldown_s, counters, clock)

        return cls(circuit("auth-service"), circuit("user-service"), circuit("mongo"), circuit("signaling"))

    def all(self) -> tuple[Circuit, ...]:
        return self.auth, self.users, self.mongo, self.signaling

    def of(self, step: str) -> "Circuit | None":
        """The circuit a cascade step's calls go through; None for a step with no target (online)."""
        return {AUTH: self.auth, AUTH_ALL: self.auth, USERS_ALL: self.users, MONGO: self.mongo,
                MONGO_ALL: self.mongo, TELL: self.signaling}.get(step)
