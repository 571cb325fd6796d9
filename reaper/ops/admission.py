"""Who may hold a connection to reaper's HTTP endpoint, and who must let go: at most ``cap`` at a
time, each for at most ``deadline_s`` from accept to answer, however it trickles its bytes.

Decisions only: the server (server.py) owns the sockets, the lock and the clock. A holder is
"cut" once told to go; it keeps its place, and its thread, until it gives the place back.
"""

from collections.abc import Hashable

GRACE_SHARE = 0.1  # of the deadline: held longer than that, a connection may be cut for a newcomer


class Admission:
    def __init__(self, cap: int, deadline_s: float):
        if cap < 1 or deadline_s <= 0:
            raise ValueError(f"cap must be >= 1 and deadline_s > 0, not {cap} and {deadline_s}")
        self.cap, self.deadline_s, self.grace_s = cap, deadline_s, deadline_s * GRACE_SHARE
        self._since: dict[Hashable, float] = {}  # holder: when it took its place; oldest first
        self._cut: set[Hashable] = set()

    def __len__(self) -> int:
        return len(self._since)

    def full(self) -> bool:
        return len(self._since) >= self.cap

    def take(self, holder: Hashable, now: float) -> None:
        self._since[holder] = now

    def give_back(self, holder: Hashable) -> None:
        self._since.pop(holder, None)
        self._cut.discard(holder)

    def overdue(self, now: float) -> list:
        """The holders past their deadline and not cut yet; they count as cut from now on."""
        late = now - self.deadline_s
        return self._mark([h for h, since in self._since.items() if since <= late and h not in self._cut])

    def oldest(self, now: float) -> list:
        """The oldest holder not cut yet (none or one), to make room for a newcomer, if held for
        longer than ``grace_s``: a quick client has long been answered by then, so it is a slow
        or hostile one; a burst of newcomers does not push out the one before."""
        first = next((h for h in self._since if h not in self._cut), None)
        ripe = first is not None and now - self._since[first] > self.grace_s
        return self._mark([first] if ripe else [])

    def everyone(self) -> list:
        """Every holder not cut yet (the endpoint closes)."""
        return self._mark([h for h in self._since if h not in self._cut])

    def _mark(self, holders: list) -> list:
        self._cut.update(holders)
        return holders
