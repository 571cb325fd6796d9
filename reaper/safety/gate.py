"""The one gate before every irreversible action (docs/design.md, the cascade "One gate").

    auth-service DELETE, MongoDB delete, guestLeft   check() a batch, then clear() each call
    fence (disconnect a socket)                      fence()
    a purge's cleanup-all and MongoDB delete-all     purge_step()
    retention (delete guests created before ...)     retention()

Everything is decided when the call is made, not when the work was queued: a guest's check is
trusted for at most ``fresh_s`` (FRESH_S) and made again when older. The services take nothing
but what this module mints (``Cleared``, ``Permit``), so no other path reaches them.

Before any of these the gate asks its ``authority`` (reaper/safety/authority.py) whether this replica may
act at all: it still holds the leader lease and reaper is not paused. Refused, it makes no call
and raises Unauthorized (retention: None), so the work in hand stays pending as it was.

A guest is cleared when its id is a guest id (reaper/core/guest_ids.py) and it is live nowhere: no
``users:online`` entry naming a fresh record, no fresh record on the socket it was reaped on,
and not among the users the last complete record pass saw live (reaper/core/live_users.py).
"""

import threading
import time
from dataclasses import dataclass, field

from loguru import logger

from reaper.core import guest_ids
from reaper.safety.authority import Unauthorized
from reaper.safety.liveness import GONE, LIVE, REGISTERED, SEEN, UNKNOWN, Liveness

# A check stands for "now" this long; docs/running.md ("Replicas and pausing") promises it.
FRESH_S = 2.0
# A user only the passes' filters call live is live once this many passes, each salted anew,
# agree: a false positive (about 0.3 %) twice in a row is about one in 100,000.
SEEN_BY_PASSES = 2
MAX_SEEN = 100_000  # users remembered as seen, at most: past that the oldest are forgotten
CLEAR, NOT_A_GUEST_ID = "clear", guest_ids.NOT_A_GUEST_ID
_MINT = object()  # only this module makes a Cleared


@dataclass(frozen=True)
class Check:
    """What the gate found for one user, and when (monotonic)."""

    user_id: str
    socket_id: str | None
    verdict: str  # CLEAR, LIVE, REGISTERED, NOT_A_GUEST_ID or UNKNOWN
    at: float


@dataclass(frozen=True)
class Cleared:
    """A guest the gate let through just now: the only argument the irreversible calls take."""

    user_id: str
    segment: str  # the id as one percent-encoded path segment
    mint: object = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if self.mint is not _MINT:
            raise TypeError("only reaper.safety.gate clears a guest for an irreversible call")


@dataclass(frozen=True)
class Permit:
    """Leave for one call that is no single guest's: a purge step, retention, a fence."""

    what: str
    detail: object = None  # the fenced sockets, the retention cutoff
    mint: object = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if self.mint is not _MINT:
            raise TypeError("only reaper.safety.gate permits an irreversible call")


def require(token, kind) -> None:
    """What every irreversible call asks first: a token this gate minted, of the right kind."""
    if type(token) is not kind or token.mint is not _MINT:
        raise TypeError(f"an irreversible call needs a {kind.__name__} from reaper.safety.gate, not {token!r:.80}")


class NotCleared(Exception):
    """The gate refused a call; ``check`` says why."""

    def __init__(self, check: Check):
        self.check = check
        super().__init__(f"{check.user_id!r}: {check.verdict}")


class Gate:
    def __init__(self, liveness: Liveness, guest_id_prefix: str, tier=None,
                 fresh_s: float = FRESH_S, clock=time.monotonic, authority=None):
        self.liveness, self.prefix, self.tier = liveness, guest_id_prefix, tier
        self.authority = authority  # None: anyone may act (an operator's command, a test)
        self.fresh_s, self.clock = fresh_s, clock
        self._refused_ids: set[str] = set()  # logged once each
        self._seen: dict[str, set[int]] = {}  # userId -> serials of the passes that saw it live
        self._lock = threading.Lock()

    # -- this replica
    def may_act(self) -> bool:
        """Does this replica still lead, and is reaper not paused? Asked before each claim and
        take too; the answer is shared only while fresher than the bound (reaper/safety/authority.py)."""
        return self.authority is None or self.authority.allows()

    def _authorized(self) -> None:
        if self.authority is not None:
            self.authority.require()

    # -- guests
    def check(self, guests: list[tuple[str, str | None]], now: float) -> list[Check]:
        """One check per (userId, socketId reaped): identity first, then liveness on any socket."""
        at = self.clock()
        identity = {user_id: guest_ids.problem(user_id, self.prefix) for user_id, _ in guests}
        asked = [(u, s) for u, s in guests if identity[u] is None]
        states, serial = self.liveness.of(asked, now) if asked else ({}, 0)
        return [Check(u, s, NOT_A_GUEST_ID if identity[u] else self._verdict(u, states[u], serial), at)
                for u, s in guests]

    def _verdict(self, user_id: str, state: str, serial: int) -> str:
        if state == GONE:
            return CLEAR
        if state != SEEN:
            return state
        with self._lock:  # a filter's word: LIVE once enough passes agree, else wait for the next
            passes = self._seen.setdefault(user_id, set())
            passes.add(serial)
            if len(self._seen) > MAX_SEEN:
                del self._seen[next(iter(self._seen))]
            if len(passes) < SEEN_BY_PASSES:
                return UNKNOWN
            del self._seen[user_id]
        return LIVE

    def fresh(self, check: Check) -> bool:
        return self.clock() - check.at <= self.fresh_s

    def clear(self, check: Check) -> Cleared:
        """The guest of a fresh CLEAR check, minted for one call; NotCleared otherwise, and
        Unauthorized when this replica may not act now."""
        self._authorized()
        if check.verdict != CLEAR or not self.fresh(check):
            raise NotCleared(check)
        if guest_ids.problem(check.user_id, self.prefix) is not None:  # never trust the caller
            raise NotCleared(Check(check.user_id, check.socket_id, NOT_A_GUEST_ID, check.at))
        return Cleared(check.user_id, guest_ids.path_segment(check.user_id), _MINT)

    def refuse_id(self, user_id: str, where: str) -> None:
        """Say once per id that it got no external call."""
        with self._lock:
            if user_id in self._refused_ids:
                return
            if len(self._refused_ids) < 10_000:
                self._refused_ids.add(user_id)
        logger.warning("Gate: {!r} is not a guest id ({}): no service, MongoDB or socket.io call "
                       "for it ({})", user_id, guest_ids.problem(user_id, self.prefix), where)

    # -- sockets
    def fence(self, doomed: list[tuple[str, str | None]], now: float) -> Permit | None:
        """The sockets among (socketId, userId) that may be disconnected now: a guest id's, and
        whose record is not live (a fence disconnects a socket, not a user: the heartbeat of
        that very socket is what must have stopped). Unauthorized when this replica may not act."""
        self._authorized()
        candidates = [(s, u) for s, u in doomed if s and u and guest_ids.problem(u, self.prefix) is None]
        for s, u in doomed:
            if u and guest_ids.problem(u, self.prefix) is not None:
                self.refuse_id(u, "fence")
        live = self.liveness.live_sockets([s for s, _ in candidates], now) if candidates else set()
        sockets = [s for s, _ in candidates if s not in live]
        return Permit("fence", sockets, _MINT) if sockets else None

    # -- the purge
    def purge_step(self, step: str) -> Permit | None:
        """May a purge's delete-everything step go now? Only while no signaling server is
        attached: deleting every guest while guests connect is the one harm a purge must never
        do. Asked on every try; a Redis error asking is a TransientError (tried again later).
        Unauthorized when this replica may not act now: the step stays as it was."""
        self._authorized()
        servers = 0 if self.tier is None else self.tier.servers_or_transient()
        if servers:
            logger.warning("Gate: purge step {} dropped: {} signaling server(s) attached now, so the "
                           "tier holds live guests (never replayed)", step, servers)
            return None
        return Permit(step, None, _MINT)

    # -- retention
    def retention(self, cutoff: float, now: float, youngest_s: float) -> Permit | None:
        """Deleting guests created before ``cutoff`` (Redis time): never one young enough to be
        within its heartbeat timeout, whatever ``timing.retention`` says. None too when this
        replica may not act now (the next cleanup tries again)."""
        if not self.may_act():
            return None
        if now - cutoff < youngest_s:
            logger.error("Gate: retention refused: its cutoff is {:.0f}s before now, less than the "
                         "{:.0f}s a live guest may go without a heartbeat", now - cutoff, youngest_s)
            return None
        return Permit("retention", cutoff, _MINT)


__all__ = ["CLEAR", "NOT_A_GUEST_ID", "LIVE", "REGISTERED", "UNKNOWN", "Check", "Cleared", "Gate",
           "NotCleared", "Permit", "Unauthorized", "require"]
