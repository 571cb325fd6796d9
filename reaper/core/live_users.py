"""The users one complete record pass saw with a live record, on any socket. Pure.

The gate asks it before every irreversible step: a guest reaped on its old socket may already
have a fresh record on a new one while ``users:online`` still names the old socket, or nothing
yet (the signaling server writes the record first). Redis has no index from user to sockets,
so the sweep, which reads every record anyway, remembers the live users as it goes.

A salted Bloom filter: 32 to 64 bits a user (4 MiB at a million live guests), two probes, a
false positive rate near 0.3 %. A false positive only makes the gate wait for the next sweep,
whose new salt makes it a different user's turn; a live user is never missed.
"""

import itertools
import secrets

BITS_PER_USER = 32
MIN_BITS = 1 << 23  # 1 MiB: a small tier's false positives far rarer than a big one's
_serials = itertools.count(1)


class LiveUsers:
    def __init__(self, expected: int, started_at: float):
        self.started_at = started_at  # monotonic time the record pass began
        bits = MIN_BITS
        while bits < expected * BITS_PER_USER:
            bits <<= 1
        self._mask = bits - 1
        self._bits = bytearray(bits >> 3)
        self._salt = secrets.randbits(64)
        self.count = 0
        self.serial = next(_serials)  # tells one pass's filter (and salt) from the next

    @property
    def size_bytes(self) -> int:
        return len(self._bits)

    def add_all(self, user_ids: list[str]) -> None:
        bits, mask, salt = self._bits, self._mask, self._salt
        for user_id in user_ids:  # runs for every live record: kept to plain integer work
            h = hash((salt, user_id))
            i, j = h & mask, (h >> 32) & mask
            bits[i >> 3] |= 1 << (i & 7)
            bits[j >> 3] |= 1 << (j & 7)
        self.count += len(user_ids)

    def __contains__(self, user_id: str) -> bool:
        h = hash((self._salt, user_id))
        i, j = h & self._mask, (h >> 32) & self._mask
        return bool(self._bits[i >> 3] & (1 << (i & 7)) and self._bits[j >> 3] & (1 << (j & 7)))

    def fresh(self, now: float, max_age_s: float) -> bool:
        """Recent enough to stand for "now" (``now`` monotonic)?"""
        return now - self.started_at <= max_age_s


class LiveUsersBoard:
    """The latest complete pass's set, shared by the sweep that builds it and the gate. A pass
    that did not finish (stopped, failed) publishes nothing: a partial set would miss users."""

    def __init__(self):
        self.latest: LiveUsers | None = None
        self.expected = 0  # live users seen by the last pass: the next one's size

    def publish(self, live: LiveUsers) -> None:
        self.expected = live.count
        self.latest = live
