"""Does a user have a live connection right now, on any socket? Asked by the gate (reaper/safety/gate.py)
before every irreversible step.

Three witnesses, any one of which makes a user live: its ``users:online`` entry names a fresh
record; the socket it was reaped on has a fresh record again; the last complete record pass saw
a fresh record carrying its userId (reaper/core/live_users.py). Without a pass recent enough to
stand for "now" the answer is UNKNOWN, and the caller waits: ``survey`` makes one.
"""

import time
from dataclasses import dataclass, field

import redis

from reaper.core.keys import Keys
from reaper.core.live_users import LiveUsers, LiveUsersBoard
from reaper.core.names import encode_name
from reaper.core.records import GuestRecord, parse_online_entry
from reaper.core.staleness import Policy, judge, live_user_of
from reaper.store.client import load_records, read_values, scan_batches

LIVE, REGISTERED, GONE, UNKNOWN = "live", "registered", "gone", "unknown"
SEEN = "seen"  # only the last pass's filter says live: true, or one of its rare false positives


@dataclass(frozen=True)
class Liveness:
    client: redis.Redis
    keys: Keys
    policy: Policy
    record_format: str
    guest_id_prefix: str
    board: LiveUsersBoard = field(default_factory=LiveUsersBoard)
    max_age_s: float = 90.0  # how old the last pass's live users may be to stand for "now"
    clock: object = field(default=time.monotonic, compare=False)

    def of(self, guests: list[tuple[str, str | None]], now: float) -> tuple[dict[str, str], int]:
        """LIVE, REGISTERED (never ours to delete), SEEN (by the pass whose serial comes second),
        UNKNOWN (no recent pass) or GONE for each (userId, socketId it was reaped on)."""
        if not guests:
            return {}, 0
        user_ids = [u for u, _ in guests]
        raw_entries = self.client.hmget(self.keys.online, user_ids)
        entries = {u: parse_online_entry(u, raw, self.guest_id_prefix)
                   for u, raw in zip(user_ids, raw_entries) if raw is not None}
        sockets = {s for u, s in guests if s} | {e.socket_id for e in entries.values() if e.is_guest and e.socket_id}
        live_sockets = self.live_sockets(sorted(sockets), now)
        seen = self._recent_pass()
        states = {u: self._decide(entries.get(u), s, live_sockets, seen, u) for u, s in guests}
        return states, 0 if seen is None else seen.serial

    def live_sockets(self, socket_ids: list[str], now: float) -> set[str]:
        """The sockets among these whose record is there and not stale."""
        if not socket_ids:
            return set()
        names = [encode_name(self.keys.connection(s)) for s in socket_ids]
        records = load_records(self.client, self.keys, names, self.record_format)
        return {s for s, record in zip(socket_ids, records) if self._fresh(record, now)}

    def _fresh(self, record, now: float) -> bool:
        return isinstance(record, GuestRecord) and not judge(record.last_heartbeat, record.last_pong,
                                                             now, self.policy).stale

    def _recent_pass(self) -> LiveUsers | None:
        latest = self.board.latest
        return latest if latest is not None and latest.fresh(self.clock(), self.max_age_s) else None

    def _decide(self, entry, socket_id, live_sockets: set, seen: LiveUsers | None, user_id: str) -> str:
        if entry is not None and not entry.is_guest:
            return REGISTERED
        if entry is not None and entry.socket_id is None:
            # Ours was removed before this check; an entry back without a socket is a new one.
            return LIVE
        if socket_id in live_sockets or (entry is not None and entry.socket_id in live_sockets):
            return LIVE
        if seen is None:
            return UNKNOWN
        return SEEN if user_id in seen else GONE

    # -- the pass of its own, when no sweep made one recently
    def needs_survey(self) -> bool:
        return self._recent_pass() is None

    def survey(self, now: float, scan_count: int) -> LiveUsers:
        """Read every record once and publish who is live: what a sweep's record pass does,
        without judging anyone dead."""
        live = LiveUsers(max(self.board.expected, self.client.hlen(self.keys.online)), self.clock())
        for names in scan_batches(self.client, self.keys.connection_pattern, scan_count):
            values = read_values(self.client, names, self.record_format)
            records = load_records(self.client, self.keys, names, self.record_format, values)
            live.add_all([r.user_id for r in records if live_user_of(r, now, self.policy)])
        self.board.publish(live)
        return live
