"""The mass-expiry budget of one pass: how many removals it may still claim, and what it held
back for the second look once the totals show no mass expiry: a stale record with what taking
it needs (HeldRecords), anything else by name."""

import hashlib
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from reaper.core import reasons
from reaper.core.names import decode_name
from reaper.core.records import GuestRecord, OnlineEntry
from reaper.core.staleness import Verdict
from reaper.store.events import Decision, decision
from reaper.sweep.judging import Doomed

# Records and entries held back by the budget, remembered for the second look: about 200 bytes
# each (HeldRecords; a name ~100), so at most ~40 MB, plus the values kept as read (below). A sweep
# holding back more runs a second full pass instead.
MAX_HELD = 200_000
# The values of held stale records kept as read, in all: Redis compares a kept value as two
# strings, where for a digest it hashes the record inside the take's script (~2 µs for 400
# bytes, a sixth of a take's cost; 3-4 µs a take at a million guests). Past this, the SHA-1 of
# the value: 20 bytes each. 8 MB keeps
# ~21,000 records as the signaling service writes them (a sweep's usual catch is far fewer)
# and reaper's memory nearly flat in a big sweep: at 1M guests with 100,000 held, 91 MB of RSS
# against 81 with digests only and 118 with 32 MB of values.
MAX_HELD_VALUES_BYTES = 8 * 1024 * 1024


class HeldRecords:
    """Stale string records held back, with what the second look needs to take them without
    reading them again: their timestamps, the first pass's verdict (against the same Redis time
    it would be the same again) and their takes' witness (store/scripts.py, _UNCHANGED): the
    value read itself, the very object MGET answered, while MAX_HELD_VALUES_BYTES allow; then the
    SHA-1 of the value read. A record that changed since is left alone, as one read again and
    found live would be. In columns: no object is made for a record."""

    DIGEST_BYTES = 20  # a SHA-1
    # A value beyond this is held by name instead: Redis would hash it inside the take's script
    # (~1.5 ms a megabyte), while a record as the signaling service writes it is ~400 bytes.
    MAX_VALUE_BYTES = 16_384

    def __init__(self):
        self.keys: list[str] = []
        self.user_ids: list[str] = []
        self.heartbeats, self.pongs = array("d"), array("d")
        self.reasons: list[str] = []  # the verdicts: reasons.HEARTBEAT_TIMEOUT or PING_TIMEOUT,
        self.ages, self.missed = array("d"), array("q")  # heartbeat ages and missed pings
        self.values: list[bytes] = []  # the first records' values, as read
        self.values_bytes = 0
        self.digests = bytearray()  # the SHA-1 of the values of the records after them

    def __len__(self) -> int:
        return len(self.keys)

    def extend(self, keys: Sequence[str], user_ids: Sequence[str], heartbeats: Sequence[float],
               pongs: Sequence[float], verdicts: Sequence[str], ages: Sequence[float], missed: Sequence[int],
               values: Sequence[bytes]) -> None:
        """Records, a column each (``verdicts``: their reasons), with their values as read."""
        if not _STALE.issuperset(verdicts):  # a guest is taken only for a stale verdict
            raise ValueError(f"not a stale verdict: {sorted(set(verdicts) - _STALE, key=repr)!r}")
        self.keys += keys
        self.user_ids += user_ids
        self.heartbeats.extend(heartbeats)
        self.pongs.extend(pongs)
        self.reasons += verdicts
        self.ages.extend(ages)
        self.missed.extend(missed)
        self._witness(values)

    def _witness(self, values: Sequence[bytes]) -> None:
        """The values kept as read while MAX_HELD_VALUES_BYTES allow; the SHA-1 of each after.
        Once one is digested, every later one is too: values are the first records', digests the rest's."""
        kept = 0
        if not self.digests:
            for value in values:
                if self.values_bytes + len(value) > MAX_HELD_VALUES_BYTES:
                    break
                self.values_bytes += len(value)
                kept += 1
            self.values += values[:kept]
        if kept < len(values):
            sha1 = hashlib.sha1
            self.digests += b"".join([sha1(value).digest() for value in values[kept:]])

    def chunk(self, start: int, stop: int, prefix_chars: int) -> "HeldDoomed":
        """Records start..stop-1, doomed as the first pass doomed them, in columns."""
        return HeldDoomed(prefix_chars, self.keys[start:stop], self.user_ids[start:stop],
                          self.heartbeats[start:stop], self.pongs[start:stop], self._witnesses(start, stop),
                          self.reasons[start:stop], self.ages[start:stop], self.missed[start:stop])

    def _witnesses(self, start: int, stop: int) -> list[tuple]:
        """Each take's witness: (value read, b"") or (b"", SHA-1 of the value read in hex)."""
        stop, kept, size = min(stop, len(self)), len(self.values), self.DIGEST_BYTES
        witnesses = [(value, b"") for value in self.values[start:stop]]
        witnesses += [(b"", self.digests[at:at + size].hex())
                      for at in range(max(start - kept, 0) * size, max(stop - kept, 0) * size, size)]
        return witnesses


_STALE = frozenset((reasons.HEARTBEAT_TIMEOUT, reasons.PING_TIMEOUT))


@dataclass(slots=True)
class HeldDoomed:
    """A chunk of the held stale records, as the second look takes them: in columns, one entry a
    record, so that up to 200,000 go without an object each (record_pass.py, _take_columns).
    ``as_doomed`` and ``decisions`` make the objects of the careful way, where they are wanted."""

    prefix_chars: int  # of a record key before its socketId
    keys: list[str]
    user_ids: list[str]
    heartbeats: Sequence[float]
    pongs: Sequence[float]
    witnesses: list[tuple]
    reasons: list[str]
    ages: Sequence[float]
    missed: Sequence[int]

    def __len__(self) -> int:
        return len(self.keys)

    def socket_ids(self) -> list[str]:
        cut = self.prefix_chars
        return [key[cut:] for key in self.keys]

    def verdict(self, i: int) -> Verdict:
        return Verdict(self.reasons[i], self.ages[i], self.missed[i])

    def as_doomed(self, indexes: list[int] | None = None) -> list[Doomed]:
        """The records (those at ``indexes``, or all) as the careful way dooms them."""
        cut = self.prefix_chars
        return [Doomed(GuestRecord(self.keys[i], self.keys[i][cut:], self.user_ids[i], self.heartbeats[i],
                                   self.pongs[i], self.witnesses[i]), self.reasons[i], self.verdict(i))
                for i in (range(len(self)) if indexes is None else indexes)]

    def decisions(self, at: float, indexes: list[int]) -> list[Decision | None]:
        """The decision records of the records at ``indexes`` (None for one naming no userId)."""
        cut, keys, users = self.prefix_chars, self.keys, self.user_ids
        return [decision(users[i], keys[i][cut:], self.reasons[i], self.verdict(i), at) if users[i] else None
                for i in indexes]


class Budget:
    """At most ``limit`` removals (None: no limit); a removal the scripts refused gives its place back."""

    def __init__(self, limit: int | None, records_are_strings: bool = True):
        self.limit, self.claimed, self.deferred = limit, 0, 0
        self.held = HeldBack(as_read=records_are_strings)

    @property
    def waits_for_answers(self) -> bool:
        """A limited budget must know what was refused before it claims again."""
        return self.limit is not None

    def give_back(self, refused: int) -> None:
        self.claimed -= refused

    def claim_all(self, count: int) -> None:
        """Places for ``count`` removals, of a budget without a limit (the second look's)."""
        assert self.limit is None, "a limited budget claims through records_within and entries_within"
        self.claimed += count

    @property
    def full(self) -> bool:
        """No place left: every stale record of a page is held back (the quick lane's rows may
        be, with no object made for each: judging.Judged.stale_rows)."""
        return self.limit is not None and self.claimed >= self.limit

    def hold_rows(self, rows: list[tuple]) -> None:
        """Stale records of a full budget's page, as the quick lane's rows: held back, as
        records_within holds back what it has no place for."""
        self.deferred += len(rows)
        self.held.stale_rows(rows)

    def records_within(self, doomed: list) -> list:
        """Those the budget allows, in order; the others are held back for the second look."""
        chosen, deferred = self._within(doomed)
        self.held.records_of([(one.record, one.witness) for one in deferred])
        return chosen

    def entries_within(self, entries: list[OnlineEntry]) -> list[OnlineEntry]:
        chosen, deferred = self._within(entries)
        for entry in deferred:
            self.held.entry(entry)
        return chosen

    def _within(self, items: list) -> tuple[list, list]:
        """The items that still have a place (the first ones, in order; each claims it), and the
        rest, deferred: a page at a time, not a call an item."""
        room = len(items) if self.limit is None else max(0, self.limit - self.claimed)
        chosen, deferred = items[:room], items[room:]
        self.claimed += len(chosen)
        self.deferred += len(deferred)
        return chosen, deferred


@dataclass
class HeldBack:
    """What the budget held back in a first pass, for the second look."""

    stale: HeldRecords = field(default_factory=HeldRecords)  # stale string records, taken as read
    records: list[str] = field(default_factory=list)  # guest_connection keys of the others, read again
    orphans: list[str] = field(default_factory=list)  # userIds of entries naming a socket
    socketless: list[OnlineEntry] = field(default_factory=list)  # already held by the orphan pass
    overflowed: bool = False  # more than MAX_HELD: forgotten, the second look is a full pass
    as_read: bool = True  # records are strings: a stale one is held in HeldRecords, taken as read
    count: int = 0  # len(self), counted as they come: it is asked for each of up to MAX_HELD

    def __len__(self) -> int:
        return len(self.stale) + len(self.records) + len(self.orphans) + len(self.socketless)

    def records_of(self, doomed: list[tuple]) -> None:
        """Doomed records (GuestRecord or Malformed), each with what doomed it (Doomed.witness),
        as (record, witness) pairs. A stale string record is kept with its timestamps, its
        verdict and its value or the value's SHA-1 (HeldRecords); a malformed one, a hash, a huge
        value or anything else, by name: they are rare, and read and judged again."""
        if not self._claim(len(doomed)):
            return
        doomed = self._in_columns(doomed, [
            type(witness) is Verdict and witness.reason in _STALE and type(record) is GuestRecord
            and self._keeps(record.witness[0]) for record, witness in doomed], lambda pair: pair[0].key)
        if doomed:
            records, verdicts = zip(*doomed)
            self.stale.extend([r.key for r in records], [r.user_id for r in records],
                              [r.last_heartbeat for r in records], [r.last_pong for r in records],
                              [v.reason for v in verdicts], [v.heartbeat_age_s for v in verdicts],
                              [v.missed_pings for v in verdicts], [r.witness[0] for r in records])

    def stale_rows(self, rows: list[tuple]) -> None:
        """Stale string records as the quick lane lists them (judging.Judged.stale_rows), each
        held as records_of() holds it: in columns, or by name when its value is not one to keep."""
        if not self._claim(len(rows)):
            return
        rows = self._in_columns(rows, [self._keeps(row[1]) for row in rows], lambda row: decode_name(row[0]))
        if rows:
            names, values, user_ids, heartbeats, pongs, verdicts, ages, missed = zip(*rows)
            self.stale.extend([decode_name(name) for name in names], user_ids, heartbeats, pongs, verdicts, ages,
                              missed, values)

    def _in_columns(self, items: list, kept: list[bool], key_of: Callable[[object], str]) -> list:
        """The items to hold in columns; the others (rare) are held by name, their keys."""
        if all(kept):
            return items
        self.records += [key_of(item) for item, keep in zip(items, kept) if not keep]
        return [item for item, keep in zip(items, kept) if keep]

    def _keeps(self, value: object) -> bool:
        """Is a stale record with this value held in columns, taken as read? Only a string
        record's value as MGET gives it (bytes), small enough to compare in the take's script."""
        return self.as_read and type(value) is bytes and len(value) <= HeldRecords.MAX_VALUE_BYTES

    def entry(self, entry: OnlineEntry) -> None:
        if self._claim(1):
            (self.orphans.append(entry.user_id) if entry.socket_id
             else self.socketless.append(entry))

    def _claim(self, more: int) -> bool:
        """Room for ``more`` (none: nothing to hold), counted? Past MAX_HELD everything held is
        forgotten (``overflowed``), and nothing more is held."""
        if not more:
            return False
        if not self.overflowed and self.count + more > MAX_HELD:
            self.overflowed, self.count = True, 0
            self.stale, self.records, self.orphans, self.socketless = HeldRecords(), [], [], []
        if self.overflowed:
            return False
        self.count += more
        return True
