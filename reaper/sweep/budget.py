"""The mass-expiry budget of one pass: how many removals it may still claim, and what it held
back (by name) for the second look once the totals show no mass expiry."""

from dataclasses import dataclass, field

from reaper.core.records import OnlineEntry

# Names of records and entries held back by the budget, remembered for the second look: about
# 100 bytes each, so at most ~20 MB. A sweep holding back more runs a second full pass instead.
MAX_HELD = 200_000


class Budget:
    """At most ``limit`` removals (None: no limit); a removal the scripts refused gives its place back."""

    def __init__(self, limit: int | None):
        self.limit, self.claimed, self.deferred = limit, 0, 0
        self.held = HeldBack()

    @property
    def waits_for_answers(self) -> bool:
        """A limited budget must know what was refused before it claims again."""
        return self.limit is not None

    def claim(self) -> bool:
        if self.limit is None or self.claimed < self.limit:
            self.claimed += 1
            return True
        self.deferred += 1
        return False

    def give_back(self, refused: int) -> None:
        self.claimed -= refused

    def records_within(self, doomed: list) -> list:
        """Those the budget allows, in order; the others are held back for the second look."""
        chosen = []
        for one in doomed:
            if self.claim():
                chosen.append(one)
            else:
                self.held.record(one.record.key)
        return chosen

    def entries_within(self, entries: list[OnlineEntry]) -> list[OnlineEntry]:
        chosen = []
        for entry in entries:
            if self.claim():
                chosen.append(entry)
            else:
                self.held.entry(entry)
        return chosen


@dataclass
class HeldBack:
    """What the budget held back in a first pass, by name, for the second look."""

    records: list[str] = field(default_factory=list)  # guest_connection keys
    orphans: list[str] = field(default_factory=list)  # userIds of entries naming a socket
    socketless: list[OnlineEntry] = field(default_factory=list)  # already held by the orphan pass
    overflowed: bool = False  # more than MAX_HELD: forgotten, the second look is a full pass

    def __len__(self) -> int:
        return len(self.records) + len(self.orphans) + len(self.socketless)

    def record(self, key: str) -> None:
        if self._room():
            self.records.append(key)

    def entry(self, entry: OnlineEntry) -> None:
        if self._room():
            (self.orphans.append(entry.user_id) if entry.socket_id
             else self.socketless.append(entry))

    def _room(self) -> bool:
        if not self.overflowed and len(self) >= MAX_HELD:
            self.overflowed = True
            self.records, self.orphans, self.socketless = [], [], []
        return not self.overflowed
