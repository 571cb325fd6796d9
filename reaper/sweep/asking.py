"""Asking socket.io before a take, and fencing right before it (reaper/signaling/notify.py):
a guest whose socket is still attached is kept and takes no place of the budget. Without
[notify] (``notify`` None) neither costs anything."""

import threading

from reaper.core import reasons
from reaper.core.records import OnlineEntry
from reaper.signaling.notify import SweepNotify
from reaper.sweep.judging import Doomed
from reaper.sweep.reporting import SweepEvents


class Asking:
    def __init__(self, notify: SweepNotify | None, turn: threading.Lock, now: float, events: SweepEvents):
        self.notify, self.turn, self.now, self.events = notify, turn, now, events

    @property
    def asks(self) -> bool:
        """Does a take wait for socket.io's answer first? (Fencing needs no answer.)"""
        return self.notify is not None and self.notify.asking

    def unattached_records(self, doomed: list[Doomed]) -> list[Doomed]:
        """Stale records whose socket is still attached are kept. Malformed ones are not asked
        about: they are moved aside whatever socket.io says (docs/design.md, the cascade.4)."""
        attached = self._attached([d.record.socket_id for d in doomed if not d.malformed])
        if not attached:
            return doomed
        left = []
        for one in doomed:
            if not one.malformed and one.record.socket_id in attached:
                self._keep(one.record.user_id, one.record.socket_id, one.reason)
            else:
                left.append(one)
        return left

    def unattached_orphans(self, orphans: list[OnlineEntry]) -> list[OnlineEntry]:
        attached = self._attached([e.socket_id for e in orphans if e.socket_id])
        if not attached:
            return orphans
        for entry in orphans:
            if entry.socket_id in attached:
                self._keep(entry.user_id, entry.socket_id, reasons.ORPHAN)
        return [e for e in orphans if e.socket_id not in attached]

    def fence(self, guests: list[tuple[str | None, str | None]]) -> None:
        """(socketId, userId) of the guests about to be taken: the gate decides which sockets go."""
        if self.notify is not None and self.notify.fencing and guests:
            with self.turn:
                self.notify.fence(guests, self.now)

    def _attached(self, socket_ids: list[str]) -> set[str]:
        if not (self.asks and socket_ids):
            return set()
        with self.turn:  # the answers are waited for holding it: Redis serves nothing of ours meanwhile
            return self.notify.attached(socket_ids)

    def _keep(self, user_id: str, socket_id: str, reason: str) -> None:
        self.events.on_kept_attached(1)
        self.notify.keep(user_id, socket_id, reason)
