"""The sweep's Lua scripts (reaper/store/scripts.py), each behind a typed wrapper that owns its
KEYS and ARGV layout: callers hand in small typed values and get one answer per guest back.
Each call is one round trip for one batch; the callers keep batches to scripts.*_BATCH, but for
TakeGuests and TakeOrphans, which batch themselves and keep two calls in Redis at a time
(store/windowed.py)."""

from dataclasses import dataclass
from enum import IntEnum
from itertools import repeat

import redis

from reaper.core.keys import QUARANTINE_TTL_S, Keys
from reaper.store import scripts, windowed


# One of these per guest taken, a hundred thousand in a big sweep: slots, not frozen (a frozen
# dataclass's __init__ costs several times as much; nothing changes one after it is made).
@dataclass(slots=True)
class RecordTake:
    """A guest key to compare-and-take: deleted, or moved to ``quarantine`` when malformed,
    only if it still holds ``witness`` (of a hash: lastHeartbeat, lastPongReceived)."""

    key: str
    quarantine: str
    quarantined: bool
    seen_type: str  # the Redis type the sweep read
    witness: tuple[str, str]
    intent_id: str = ""  # "": no intent written (no step left)
    intent: str = ""  # the intent's JSON
    user_id: str = ""  # TAKE_GUEST only: the entry to take along, "" for none
    socket_id: str = ""
    decision: str = ""  # single Redis: the decision record written with the take, "" for none

    def take_one_argv(self) -> tuple:
        """TAKE_ONE's ARGV[4..7] (and TAKE_RECORD's per-record head)."""
        return "quarantine" if self.quarantined else "delete", self.seen_type, *self.witness

    def record_argv(self) -> tuple:
        """TAKE_RECORD's per-record arguments but the decision (the first six of TAKE_GUEST's)."""
        return *self.take_one_argv(), self.intent_id, self.intent

    def guest_row(self) -> "GuestRow":
        """This take as TAKE_GUEST sends it."""
        return (self.key, self.quarantine), (*self.record_argv(), self.user_id, self.socket_id, self.decision)

    @property
    def held_intent(self) -> tuple[str, str] | None:
        return (self.intent_id, self.intent) if self.intent_id else None


# One guest of a TAKE_GUEST call: its two KEYS and its nine ARGV (scripts.TAKE_GUEST), as a
# RecordTake gives them (guest_row) or as rows_to_delete makes them from columns.
GuestRow = tuple[tuple[str, str], tuple]


def rows_to_delete(keys: list[str], quarantines: list[str], seen_type: str, witnesses: list[tuple],
                   intent_ids: list[str], intents: list[str], user_ids: list[str], socket_ids: list[str],
                   decisions: list[str]) -> list[GuestRow]:
    """TAKE_GUEST's rows for records to delete (none quarantined), one entry a guest in each
    column: RecordTake(...).guest_row() for each, without the RecordTake (the second look's)."""
    firsts, seconds = [w[0] for w in witnesses], [w[1] for w in witnesses]
    return list(zip(zip(keys, quarantines), zip(repeat("delete"), repeat(seen_type), firsts, seconds, intent_ids,
                                                 intents, user_ids, socket_ids, decisions)))


@dataclass(slots=True)
class OrphanTake:
    """A users:online entry to remove if unchanged and its socket (``record_key``) still has no record."""

    user_id: str
    raw: bytes
    record_key: str | None
    intent_id: str = ""
    intent: str = ""
    decision: str = ""  # single Redis: the decision record written with the take, "" for none

    @property
    def held_intent(self) -> tuple[str, str] | None:
        return (self.intent_id, self.intent) if self.intent_id else None


@dataclass(slots=True)
class OnlineSettle:
    """An intent written with the online step, and what it becomes once that step is done
    ("" when no step is left: deleted)."""

    intent_id: str
    written: str
    settled: str


class GuestOutcome(IntEnum):
    CHANGED = 0  # left alone: the record moved on
    TAKEN = 1  # taken, its entry removed or absent
    LEFT_TO_SWEEP = 2  # left alone: an entry only the sweep can judge


_OUTCOMES = tuple(GuestOutcome)  # TAKE_GUEST's answers (0, 1, 2) by index: cheaper than GuestOutcome(n) per guest


@dataclass(frozen=True, slots=True)
class OnlinePage:
    cursor: int
    registered: int  # registered users' entries the script counted and left out
    fields: list[tuple[bytes, bytes]]  # the entries left to the sweep


class TakeRecords:
    """TAKE_RECORD (single Redis): compare-and-take each record, its intent and decision record
    in the same step."""

    def __init__(self, client: redis.Redis, keys: Keys, events_cap: int):
        self.keys, self.events_cap = keys, events_cap
        self._script = client.register_script(scripts.TAKE_RECORD)

    def take(self, due: float, format_type: str, takes: list[RecordTake]) -> list[bool]:
        keys = [self.keys.intents, self.keys.due, self.keys.events]
        args = [due, QUARANTINE_TTL_S, format_type, self.events_cap]
        for take in takes:
            keys += (take.key, take.quarantine)
            args += (*take.record_argv(), take.decision)
        return [ok == 1 for ok in self._script(keys=keys, args=args)]


class TakeGuests:
    """TAKE_GUEST (single Redis): each record, the users:online entry naming its socket and the
    guest's decision record, in one step."""

    def __init__(self, client: redis.Redis, keys: Keys, guest_id_prefix: str, events_cap: int):
        self.keys, self.prefix, self.events_cap = keys, guest_id_prefix, events_cap
        self._script = client.register_script(scripts.TAKE_GUEST)

    def take_all(self, due: float, format_type: str, rows: list[GuestRow]) -> list[GuestOutcome]:
        """Any number, in batches of scripts.TAKE_BATCH kept two deep (store/windowed.py)."""
        answers = windowed.call_in_batches(self._script, rows, scripts.TAKE_BATCH,
                                           lambda batch: self.arguments(due, format_type, batch))
        return [_OUTCOMES[outcome] for outcome in answers]

    def arguments(self, due: float, format_type: str, rows: list[GuestRow]) -> tuple[list, list]:
        """KEYS and ARGV of one call, for one batch."""
        keys = [self.keys.intents, self.keys.due, self.keys.online, self.keys.events]
        args = [due, QUARANTINE_TTL_S, format_type, self.prefix, self.events_cap]
        for names, values in rows:
            keys += names
            args += values
        return keys, args


class TakeOrphans:
    """TAKE_ORPHAN (single Redis): compare-and-remove each orphan entry, its intent and decision
    record in the same step."""

    def __init__(self, client: redis.Redis, keys: Keys, events_cap: int):
        self.keys, self.events_cap = keys, events_cap
        self._script = client.register_script(scripts.TAKE_ORPHAN)

    def take_all(self, due: float, orphans: list[OrphanTake]) -> list[bool]:
        """Any number, in batches of scripts.TAKE_BATCH kept two deep (store/windowed.py)."""
        answers = windowed.call_in_batches(self._script, orphans, scripts.TAKE_BATCH,
                                           lambda batch: self.arguments(due, batch))
        return [ok == 1 for ok in answers]

    def arguments(self, due: float, orphans: list[OrphanTake]) -> tuple[list, list]:
        """KEYS and ARGV of one call, for one batch."""
        keys = [self.keys.online, self.keys.intents, self.keys.due, self.keys.events]
        args = [due, self.events_cap]
        for orphan in orphans:
            if orphan.record_key:
                keys.append(orphan.record_key)
            args += (orphan.user_id, orphan.raw, orphan.intent_id, orphan.intent,
                     len(keys) if orphan.record_key else 0, orphan.decision)
        return keys, args


class SettleOnline:
    """SETTLE_ONLINE: the online step done, taken out of intents still as written (reaper keys only)."""

    def __init__(self, client: redis.Redis, keys: Keys):
        self.keys, self._script = keys, client.register_script(scripts.SETTLE_ONLINE)

    def settle(self, due: float, settles: list[OnlineSettle]) -> list[bool]:
        args = [due]
        for one in settles:
            args += (one.intent_id, one.written, one.settled)
        return [ok == 1 for ok in self._script(keys=[self.keys.intents, self.keys.due], args=args)]


class ExistEach:
    """EXIST_EACH (single Redis): whether each key exists, in one round trip."""

    def __init__(self, client: redis.Redis):
        self._script = client.register_script(scripts.EXIST_EACH)

    def exist(self, names: list) -> list[bool]:
        return [found == 1 for found in self._script(keys=names)]


class ReadOnlinePage:
    """ONLINE_PAGE_SCRIPT (single Redis): one HSCAN page of users:online, less what needs no more look."""

    def __init__(self, client: redis.Redis, keys: Keys, guest_id_prefix: str):
        self.keys, self.prefix = keys, guest_id_prefix
        self._script = client.register_script(scripts.ONLINE_PAGE_SCRIPT)

    def read(self, cursor: int, count: int) -> OnlinePage:
        cursor, registered, *left = self._script(
            keys=[self.keys.online], args=[cursor, count, self.prefix, self.keys.connection_prefix])
        return OnlinePage(int(cursor), registered, list(zip(left[::2], left[1::2])))
