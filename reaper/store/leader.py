"""The leader lease: of several replicas on one Redis, only the lease holder works (docs/design.md, the keys reaper owns).

    acquire  SET <prefix>leader <token> NX PX <lease>    a replica that does not lead, every lease/3
    renew    PEXPIRE while the key holds our token        the leader, every lease/3 and before each job
    release  DEL while the key holds our token            on a clean stop, so another takes over at once

Only the expiry Redis keeps decides: no replica compares its clock with another's. A leader
whose renewal fails (taken, ran out, Redis error) stops leading on the spot. A replica that
stands by tries again lease/3 later, or just after the holder's lease runs out if that is
sooner, so one takes over within the lease after the leader dies.

A reply can be lost after Redis applied the command (a timeout, a connection reset; redis-py
then sends it again): the key holds our own token though we did not hear so. The next try finds
our token and renews it: a replica never stands by behind itself. Timing is on the monotonic
clock: the tries' intervals, and how long this replica may believe it leads (``is_leader``)
without a renewal, which a frozen process outlives.
"""

import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass

import redis
from loguru import logger

from reaper import logs
from reaper.store import scripts
from reaper.core.durations import format_duration

GAINED, KEPT, LOST, STANDBY = "gained", "kept", "lost", "standby"
EXPIRY_MARGIN_S = 0.005  # try just after the holder's PX has run out, not just before


def new_token() -> str:
    """Unique per process, and says who holds the lease: "host:pid:random"."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def replica_name(token: str) -> str:
    """"host:pid" of a token; a value reaper did not write is shown as it is."""
    head, sep, _ = token.rpartition(":")
    return head if sep and head else token


def decide(was_leader: bool, held: bool) -> str:
    """What an acquire or renew attempt means for this replica."""
    if held:
        return KEPT if was_leader else GAINED
    return LOST if was_leader else STANDBY


def next_try_in(interval_s: float, leader: bool, holder_left_s: float | None) -> float:
    """A leader renews every interval; a replica standing by tries again every interval, or
    right after the holder's lease runs out when that comes first."""
    if leader or holder_left_s is None:
        return interval_s
    return min(interval_s, max(holder_left_s, 0.0) + EXPIRY_MARGIN_S)


@dataclass(frozen=True)
class Holder:
    token: str
    left_s: float  # what remains of its lease, by Redis's PTTL

    @property
    def name(self) -> str:
        return replica_name(self.token)


@dataclass(frozen=True)
class Attempt:
    held: bool
    holder: Holder | None = None  # who leads when we do not (None: nobody, or unknown)
    healed: bool = False  # the key had no expiry and was given one
    reconciled: bool = False  # the key held our own token already: a reply we never heard
    error: str | None = None
    failure: Exception | None = None  # what Redis raised, when it could not be asked


def read_holder(client: redis.Redis, key: str) -> Holder | None:
    """Who holds the lease now, and for how long; None when nobody does."""
    pipe = client.pipeline(transaction=True)
    pipe.type(key)
    pipe.pttl(key)
    pipe.get(key)
    kind, ttl_ms, value = pipe.execute(raise_on_error=False)
    kind = kind.decode() if isinstance(kind, bytes) else kind
    if kind == "none" or ttl_ms == -2:
        return None
    token = value.decode(errors="replace") if isinstance(value, bytes) else f"<{kind}>"
    return Holder(token, -1.0 if ttl_ms == -1 else ttl_ms / 1000)


class Lease:
    """One process's lease operations; each one a single atomic command or script."""

    def __init__(self, client: redis.Redis, key: str, lease_s: float, token: str | None = None):
        self.client, self.key = client, key
        self.lease_s = lease_s
        self.lease_ms = max(1, round(lease_s * 1000))
        self.token = token or new_token()
        self._acquire = client.register_script(scripts.ACQUIRE_LEASE)
        self._renew = client.register_script(scripts.RENEW_LEASE)
        self._release = client.register_script(scripts.RELEASE_LEASE)

    def acquire(self) -> Attempt:
        reply = self._acquire(keys=[self.key], args=[self.token, self.lease_ms])
        if reply[0] == 1:
            return Attempt(True)
        holder = Holder(reply[1].decode(errors="replace"), int(reply[2]) / 1000)
        if holder.token == self.token and self.renew():  # ours: a SET or renewal we never heard back
            return Attempt(True, reconciled=True)
        return Attempt(False, holder, healed=reply[3] == 1)

    def renew(self) -> bool:
        return self._renew(keys=[self.key], args=[self.token, self.lease_ms]) == 1

    def release(self) -> bool:
        return self._release(keys=[self.key], args=[self.token]) == 1


class Leadership:
    """Whether this replica leads, kept current by a thread that renews or tries every lease/3.

    ``confirm()`` is what a job asks: it renews the lease on the spot, so a job starts only
    while Redis says this replica holds it."""

    def __init__(self, lease: Lease, clock=time.monotonic):
        self.lease, self.clock = lease, clock
        self.me = replica_name(lease.token)
        self.interval_s = lease.lease_s / 3
        self.holder: Holder | None = None  # the other replica seen leading at the last try
        self.error: str | None = None  # why the last try could not ask Redis
        self.failure: Exception | None = None  # and what Redis raised then
        self._leader = False
        self._until = 0.0  # on ``clock``: the lease runs out by then at the latest, unless renewed
        self._wait_s = 0.0
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def is_leader(self) -> bool:
        """Leading, as far as this replica knows, and not past its lease since the last renewal
        (a process frozen longer than its lease believes nothing when it wakes)."""
        return self._leader and self.clock() < self._until

    def tick(self) -> bool:
        """Renew when leading, try to acquire otherwise; True when this replica leads after it."""
        with self._lock:
            return self._settle(self._attempt())

    def confirm(self) -> bool:
        """True when this replica leads and Redis has just renewed its lease; never acquires."""
        with self._lock:
            return self._leader and self._settle(self._attempt())

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._keep, name="reaper-lease", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop trying; a leader releases the lease so another replica takes over at once."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            if self._leader:
                self._leader = False
                self._release()

    def _keep(self) -> None:
        while not self._stopped.wait(self._wait_s):
            try:
                self.tick()
            except Exception as exc:  # the thread must outlive any surprise, or nobody renews
                with self._lock:
                    self._leader, self._wait_s = False, self.interval_s
                logger.bind(replica=self.me, error=logs.error_fields(exc)).error(
                    "Leader: lease check failed: {}: {}", type(exc).__name__, exc)

    def _attempt(self) -> Attempt:
        sent = self.clock()  # the lease Redis grants runs from no earlier than this
        try:
            attempt = self._try()
        except redis.RedisError as exc:
            return Attempt(False, error=f"{type(exc).__name__}: {exc}", failure=exc)
        if attempt.held:
            self._until = sent + self.lease.lease_s
        return attempt

    def _try(self) -> Attempt:
        if not self._leader:
            return self.lease.acquire()
        if self.lease.renew():
            return Attempt(True)
        return Attempt(False, read_holder(self.lease.client, self.lease.key))

    def _settle(self, attempt: Attempt) -> bool:
        event = decide(self._leader, attempt.held)
        seen_before = self.holder
        self.error, self.failure = attempt.error, attempt.failure
        self._leader = attempt.held
        if attempt.held or attempt.holder or not attempt.error:
            self.holder = attempt.holder
        # else Redis could not be asked: whoever led before is still the best guess
        left = attempt.holder.left_s if attempt.holder else None
        self._wait_s = next_try_in(self.interval_s, self._leader, None if attempt.error else left)
        self._say(event, attempt, seen_before)
        return self._leader

    def _say(self, event: str, attempt: Attempt, seen_before: Holder | None) -> None:
        said = logger.bind(replica=self.me, event=event,
                           leader=attempt.holder.name if attempt.holder else self.me if attempt.held else None)
        if attempt.healed:
            said.warning("Leader: {} had no expiry (written by hand?); it now runs out in {}",
                           self.lease.key, format_duration(self.lease.lease_s))
        if event == GAINED and attempt.reconciled:
            said.info("Leader: this replica ({}) is the leader: the lease holds its own token (a "
                      "reply from Redis was lost, e.g. to a timeout)", self.me)
        elif event == GAINED:
            said.info("Leader: this replica ({}) is now the leader", self.me)
        elif event == LOST:
            said.info("Leader: this replica ({}) lost the lease {}", self.me, _why_lost(attempt))
        elif event == STANDBY and attempt.error:
            said.debug("Leader: could not try for the lease: {}", attempt.error)
        elif event == STANDBY and attempt.holder and _changed(seen_before, attempt.holder):
            said.info("Leader: {} leads; this replica ({}) stands by", attempt.holder.name, self.me)

    def _release(self) -> None:
        try:
            released = self.lease.release()
        except redis.RedisError as exc:
            logger.warning("Leader: could not release the lease ({}); another replica takes over "
                           "when it runs out", exc)
            return
        if released:
            logger.bind(replica=self.me, event="released").info("Leader: this replica ({}) released the lease",
                                                                self.me)


class Unelected:
    """A dry run neither takes the lease nor needs it: it writes nothing anywhere (docs/design.md, the cascade), so
    it cannot do work twice, and holding the lease would stop the replicas that really work."""

    is_leader = True
    holder = None
    error = None
    failure = None

    def __init__(self):
        self.me = replica_name(new_token())
        logger.info("Leader: dry run: this replica ({}) neither takes nor needs the lease", self.me)

    def tick(self) -> bool:
        return True

    def confirm(self) -> bool:
        return True

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


def elect(client: redis.Redis, key: str, lease_s: float, dry_run: bool) -> "Leadership | Unelected":
    return Unelected() if dry_run else Leadership(Lease(client, key, lease_s))


def _why_lost(attempt: Attempt) -> str:
    if attempt.error:
        return f"(Redis error: {attempt.error})"
    if attempt.holder:
        return f"to {attempt.holder.name}"
    return "(it ran out before it was renewed)"


def _changed(seen: Holder | None, now: Holder) -> bool:
    return seen is None or seen.token != now.token
