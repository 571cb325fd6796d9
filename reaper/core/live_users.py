"""The users one complete record pass saw with a live record, on any socket. Pure.

The gate asks it before every irreversible step: a guest reaped on its old socket may already
have a fresh record on a new one while ``users:online`` still names the old socket, or nothing
yet (the signaling server writes the record first). Redis has no index from user to sockets,
so the sweep, which reads every record anyway, remembers the live users as it goes.

A salted filter (reaper/core/salted_filter.py): a false positive only makes the gate wait for
the next sweep, whose new salt makes it a different user's turn; a live user is never missed.
"""

import itertools

from reaper.core.salted_filter import SaltedFilter

_serials = itertools.count(1)


class LiveUsers(SaltedFilter):
    def __init__(self, expected: int, started_at: float):
        super().__init__(expected)
        self.started_at = started_at  # monotonic time the record pass began
        self.serial = next(_serials)  # tells one pass's filter (and salt) from the next

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
