"""Does a user have a live connection right now? Asked before every irreversible step."""

from dataclasses import dataclass

import redis

from .keys import Keys
from .names import encode_name
from .records import GuestRecord, parse_online_entry
from .staleness import Policy, judge
from .store import load_records

LIVE, REGISTERED, GONE = "live", "registered", "gone"


@dataclass(frozen=True)
class Liveness:
    client: redis.Redis
    keys: Keys
    policy: Policy
    record_format: str
    guest_id_prefix: str

    def of(self, user_ids: list[str], now: float) -> dict[str, str]:
        """LIVE, REGISTERED (never ours to delete) or GONE for each user."""
        if not user_ids:
            return {}
        raw_entries = self.client.hmget(self.keys.online, user_ids)
        entries = {u: parse_online_entry(u, raw, self.guest_id_prefix)
                   for u, raw in zip(user_ids, raw_entries) if raw is not None}
        sockets = {u: e.socket_id for u, e in entries.items() if e.is_guest and e.socket_id}
        names = [encode_name(self.keys.connection(s)) for s in sockets.values()]
        records = dict(zip(sockets, load_records(self.client, self.keys, names, self.record_format)))
        return {u: self._decide(entries.get(u), records.get(u), now) for u in user_ids}

    def live_sockets(self, socket_ids: list[str], now: float) -> set[str]:
        """The sockets among these whose record is there and not stale."""
        names = [encode_name(self.keys.connection(s)) for s in socket_ids]
        records = load_records(self.client, self.keys, names, self.record_format)
        return {s for s, record in zip(socket_ids, records) if self._fresh(record, now)}

    def _fresh(self, record, now: float) -> bool:
        return isinstance(record, GuestRecord) and not judge(record.last_heartbeat, record.last_pong,
                                                             now, self.policy).stale

    def _decide(self, entry, record, now: float) -> str:
        if entry is None:
            return GONE
        if not entry.is_guest:
            return REGISTERED
        if entry.socket_id is None:
            # Ours was removed before this check; an entry back without a socket is a new one.
            return LIVE
        return LIVE if self._fresh(record, now) else GONE
