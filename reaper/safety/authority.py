"""May this replica act now? (docs/design.md, the cascade "Decided at the moment of acting")

    it leads    the lease key holds this replica's token, as Redis says now (a fencing check:
                not what the replica last believed, so one frozen past its lease cannot act)
    not paused  no ``<prefix>paused`` key

The gate asks before each irreversible call, the drain before each claim, the sweep before each
fence and take. One answer is shared by the calls that follow only while it is younger than
``fresh_s`` on the monotonic clock, and never past what was left of the lease when it was read.

A leader that finds reaper paused says so in ``<prefix>pause_ack`` (the pause's fingerprint and
its own name): `reaper pause` waits for that word before it returns (``wait_for_ack``).
"""

import hashlib
import json
import threading
import time
from dataclasses import dataclass

import redis
from loguru import logger

from reaper.core.keys import Keys
from reaper.store.leader import replica_name

LEASE, PAUSED, UNASKED = "lease", "paused", "unasked"  # why a replica may not act
NOT_A_STRING = b"<not a string>"  # the identity of a pause key of another type


class Unauthorized(Exception):
    """This replica may not act now (it lost the lease, or reaper is paused): no call is made,
    and the work in hand stays pending as it was."""

    def __init__(self, why: str):
        self.why = why
        super().__init__(f"this replica may not act now: {why}")


@dataclass(frozen=True)
class Standing:
    """One answer, and until when (monotonic) the calls after it may share it."""

    refusal: str | None  # None: may act; else LEASE, PAUSED or UNASKED (Redis could not be asked)
    until: float
    holder: str | None = None  # the lease's token (our own when we lead)
    pause: bytes | None = None  # the pause's identity while paused


def judge(token: str, lease: bytes | None, lease_ttl_ms: int, pause: bytes | None, at: float,
          fresh_s: float) -> Standing:
    """The answer to what Redis said at ``at``. Pure. Paused first, as the jobs ask it first;
    a "yes" lasts no longer than the lease had left."""
    holder = lease.decode(errors="replace") if isinstance(lease, bytes) else None
    if pause is not None:
        return Standing(PAUSED, at + fresh_s, holder, pause)
    if holder != token:
        return Standing(LEASE, at + fresh_s, holder)
    left_s = lease_ttl_ms / 1000 if lease_ttl_ms >= 0 else fresh_s
    return Standing(None, at + min(fresh_s, left_s), holder)


def fingerprint(pause: bytes) -> str:
    """What names one pause in its acknowledgement (the pause key's value is its identity)."""
    return hashlib.sha256(pause).hexdigest()[:16]


def acknowledged_by(raw: bytes | None, pause: bytes) -> str | None:
    """The replica that acknowledged this pause, from ``<prefix>pause_ack``; None when none did. Pure."""
    try:
        ack = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(ack, dict) and ack.get("pause") == fingerprint(pause):
        return str(ack.get("by") or "a replica")
    return None


class Authority:
    """One replica's answer to "may I act now?", shared by its threads."""

    def __init__(self, client: redis.Redis, keys: Keys, token: str, fresh_s: float, clock=time.monotonic):
        """``fresh_s``: the gate's bound (Gate.fresh_s, FRESH_S = 2 s), for this answer as for a
        guest's check."""
        self.client, self.keys, self.token = client, keys, token
        self.fresh_s, self.clock = fresh_s, clock
        self.held_back = 0  # calls refused since the refusals began
        self._standing: Standing | None = None
        self._said: str | None = None  # the refusal logged last; None: none, or it is over
        self._acked: bytes | None = None  # the pause this replica acknowledged last
        self._lock = threading.Lock()

    def allows(self) -> bool:
        """True when this replica may act now; a refusal is counted, and said once."""
        return self._current().refusal is None

    def require(self) -> None:
        """Unauthorized unless this replica may act now."""
        refusal = self._current().refusal
        if refusal is not None:
            raise Unauthorized(refusal)

    def _current(self) -> Standing:
        with self._lock:
            standing = self._standing
            if standing is None or self.clock() >= standing.until:
                standing = self._standing = self._ask()
            self._tell(standing)
            return standing

    @property
    def refusal(self) -> str | None:
        """Why the last answer refused, without asking Redis; None when it allowed."""
        return None if self._standing is None else self._standing.refusal

    def pause_seen(self, pause: bytes | None) -> None:
        """What a job's start saw of the pause (its identity; None: none). A pause refuses the
        next call at once, however young the last answer, and the leader acknowledges it (once
        per pause, only while this replica holds the lease). No pause: a refusal for a pause is
        not trusted any longer, the next call asks Redis again."""
        with self._lock:
            if pause is None:
                if self._standing is not None and self._standing.refusal == PAUSED:
                    self._standing = None
                return
            self._standing = Standing(PAUSED, self.clock() + self.fresh_s, pause=pause)
            if pause != self._acked and self.client.get(self.keys.leader) == self.token.encode():
                self._write_ack(pause)

    def _ask(self) -> Standing:
        """Redis's word now; a replica that cannot ask may not act (it cannot know it leads)."""
        at = self.clock()  # before asking: the answer is no younger than this
        try:
            return self._read(at)
        except redis.RedisError as exc:
            logger.debug("Gate: could not ask Redis whether this replica may act: {}", exc)
            return Standing(UNASKED, at + self.fresh_s)

    def _read(self, at: float) -> Standing:
        pipe = self.client.pipeline(transaction=False)  # two slots on a cluster
        pipe.get(self.keys.leader)
        pipe.pttl(self.keys.leader)
        pipe.exists(self.keys.paused)
        pipe.get(self.keys.paused)
        lease, ttl_ms, paused, pause = pipe.execute(raise_on_error=False)
        for reply in (ttl_ms, paused):  # a lease key of another type only fails its GET
            if isinstance(reply, Exception):
                raise reply
        pause = (pause if isinstance(pause, bytes) else NOT_A_STRING) if paused == 1 else None
        standing = judge(self.token, lease if isinstance(lease, bytes) else None,
                         ttl_ms, pause, at, self.fresh_s)
        if standing.refusal == PAUSED and standing.holder == self.token and pause != self._acked:
            self._write_ack(pause)
        return standing

    def _write_ack(self, pause: bytes) -> None:
        value = json.dumps({"pause": fingerprint(pause), "by": replica_name(self.token)})
        self.client.set(self.keys.pause_ack, value)
        self._acked = pause
        logger.info("Gate: pause acknowledged: this replica ({}) starts no new call while paused",
                    replica_name(self.token))

    def _tell(self, standing: Standing) -> None:
        """Said once when refusals begin (and again if their reason changes), and when they end."""
        if standing.refusal is None:
            if self._said is not None:
                logger.info("Gate: this replica may act again (calls held back meanwhile: {})", self.held_back)
            self._said, self.held_back = None, 0
            return
        self.held_back += 1
        if standing.refusal != self._said:
            self._said = standing.refusal
            logger.warning("Gate: {}: no irreversible call from now on; the work in hand stays "
                           "pending, due at once", _why(standing, self.token))


def _why(standing: Standing, token: str) -> str:
    if standing.refusal == PAUSED:
        return "reaper is paused"
    if standing.refusal == UNASKED:
        return "Redis could not be asked whether this replica still leads"
    holder = "nobody holds it now" if standing.holder is None else f"{replica_name(standing.holder)} holds it now"
    return f"this replica ({replica_name(token)}) lost the lease ({holder})"


@dataclass(frozen=True)
class Ack:
    by: str | None  # the replica that acknowledged; None: none did
    leader: bool  # a replica held the lease at the last look (else nobody was there to answer)


def wait_for_ack(client: redis.Redis, keys: Keys, pause: bytes, within_s: float,
                 poll_s: float = 0.05, clock=time.monotonic) -> Ack:
    """Who acknowledged ``pause`` within ``within_s``. Given up at once when no replica holds
    the lease: nobody is there to answer."""
    deadline = clock() + within_s
    while True:
        raw, leads = client.get(keys.pause_ack), client.exists(keys.leader)  # two slots on a cluster
        ack = Ack(acknowledged_by(raw, pause), bool(leads))
        if ack.by is not None or not ack.leader or clock() >= deadline:
            return ack
        time.sleep(min(poll_s, max(0.0, deadline - clock())))  # a poll, bounded by the deadline
