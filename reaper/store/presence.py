"""Removing a reaped guest's ``users:online`` entry, and only a guest's naming that socket."""

import redis

from reaper.store import scripts
from reaper.core.keys import Keys
from reaper.core.records import entry_belongs_to, parse_online_entry


class OnlineList:
    def __init__(self, client: redis.Redis, keys: Keys, guest_id_prefix: str):
        self.client, self.keys, self.guest_id_prefix = client, keys, guest_id_prefix
        self._remove_entry = client.register_script(scripts.REMOVE_ENTRY)

    def remove(self, guests: list[tuple[str, str | None]]) -> int:
        """Remove each (userId, socketId)'s entry if it is still that guest's; returns how many.

        Decided here on the value read, removed in Redis only if that value is unchanged: a
        guest that reconnected on a new socket, or a registered user, keeps its entry.
        """
        if not guests:
            return 0
        raws = self.client.hmget(self.keys.online, [user_id for user_id, _ in guests])
        doomed = [(user_id, raw) for (user_id, socket_id), raw in zip(guests, raws)
                  if raw is not None and entry_belongs_to(
                      parse_online_entry(user_id, raw, self.guest_id_prefix), socket_id)]
        return sum(self.remove_unchanged(doomed))

    def remove_unchanged(self, entries: list[tuple[str, bytes]]) -> list[bool]:
        """Remove each (userId, value read) entry that still holds that value; True where removed."""
        removed = []
        for args in remove_entry_args(entries):
            removed += [result == 1 for result in self._remove_entry(keys=[self.keys.online], args=args)]
        return removed


def remove_entry_args(entries: list[tuple[str, bytes]]) -> list[list]:
    """REMOVE_ENTRY's ARGV for (userId, value read) entries: a call of ENTRY_BATCH entries at most."""
    return [[value for pair in entries[start:start + scripts.ENTRY_BATCH] for value in pair]
            for start in range(0, len(entries), scripts.ENTRY_BATCH)]
