"""The audit trail: one decision record per reaped guest, so "who removed guest X, when and
why" has an answer (`reaper events`). A cascade that ends otherwise than planned adds one more:
``skipped_live`` / ``skipped_registered`` (the user was back before its database records went)
or ``dead_letter``.

Records go to the stream ``<reaper_prefix>events`` as one JSON field each, capped near
``events.max_len`` (XTRIM MAXLEN ~ after each call's XADDs, which trims whole radix-tree nodes:
cheap, and never below the cap). Entry ids are Redis's own clock, the clock every sweep judges
by, so ``--since`` is measured on it too. Building and showing records is pure; ``EventStream``
does the I/O: one script call per batch, where a pipeline of XADDs would cost the sweep three
times as much (redis-py packs every field of every XADD).
"""

import json
import math
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone

import msgspec
import redis

from reaper.core import ownkeys
from reaper.core import reasons
from reaper.core import redact
from reaper.store import scripts
from reaper.core.config import Config
from reaper.core.keys import Keys
from reaper.core.staleness import Verdict
from reaper.store.client import require_type

READ_PAGE = 1000  # entries per XREVRANGE while filtering by user
FIELD = "decision"  # each entry's one field, holding the record as JSON
REAPED, DEAD_LETTER = "reaped", "dead_letter"


class _Wire(msgspec.Struct, omit_defaults=True):
    """A Decision as the stream holds it, in this order: what is None or False is left out.
    A sweep writes one per reaped guest: ~0.8 us with msgspec, where json's encoder took ~4."""

    event: str
    user_id: str
    socket_id: str | None = None
    reason: str | None = None
    at: float | None = None
    heartbeat_age_s: float | None = None
    missed_pings: int | None = None
    problem: str | None = None
    note: str | None = None
    orphan: bool = False
    dry_run: bool = False


_encode = msgspec.json.Encoder().encode  # nan and inf as null


@dataclass(slots=True)
class Decision:
    """Why one guest was reaped, with what the sweep saw. ``None`` where it saw nothing."""

    user_id: str
    socket_id: str | None
    reason: str
    at: float  # the sweep's Redis TIME
    heartbeat_age_s: float | None = None
    missed_pings: int | None = None
    orphan: bool = False
    problem: str | None = None  # what made the record malformed
    note: str | None = None  # the sweep's words for any other guest, e.g. an orphan's "no record"
    dry_run: bool = False
    event: str = REAPED
    audited: bool = False  # already in the audit trail: written by the script that took the guest

    def to_json(self) -> str:
        """The stream entry's one field: compact JSON, unknown values and false flags left out,
        a number that is no number (nan, inf) null."""
        return _json_of(_Wire(self.event, self.user_id, self.socket_id, self.reason, self.at,
                              None if self.heartbeat_age_s is None else round(self.heartbeat_age_s, 3),
                              None if self.missed_pings is None else int(self.missed_pings),
                              self.problem, self.note, self.orphan, self.dry_run))

    @property
    def detail(self) -> str:
        """What the log line says after the reason (reaper/demo parses it)."""
        if self.problem is not None or self.note is not None:
            return self.problem if self.problem is not None else self.note
        return f"heartbeat age {self.heartbeat_age_s:.0f}s, missed pings {self.missed_pings}"


def stale_json(user_id: str, socket_id: str | None, reason: str, heartbeat_age_s: float, missed_pings: int,
               now: float) -> str:
    """``decision(user_id, socket_id, reason, Verdict(reason, heartbeat_age_s, missed_pings),
    now).to_json()`` without the Decision: the second look writes one for each of up to 200,000
    held guests (sweep/taking.py, prepare_as_read)."""
    return _json_of(_Wire(REAPED, user_id, socket_id or None, reason, now, round(heartbeat_age_s, 3),
                          int(missed_pings)))


def _json_of(wire: _Wire) -> str:
    try:
        return _encode(wire).decode()
    except UnicodeEncodeError:  # a lone surrogate (a name that is no UTF-8): JSON escapes it
        fields = ((name, getattr(wire, name)) for name in wire.__struct_fields__)
        return json.dumps({name: _finite(value) for name, value in fields if value is not None and value is not False},
                          separators=(",", ":"))


def _finite(value: object) -> object:
    return None if type(value) is float and not math.isfinite(value) else value


def decision(user_id: str, socket_id: str | None, reason: str, seen: Verdict | str, now: float,
             dry_run: bool = False) -> Decision:
    """The record for a guest the sweep reaped: ``seen`` is the stale verdict, or for an orphan or
    a malformed record the sweep's words ("no record", or the problem). Positional: one per reaped guest."""
    socket_id = socket_id or None
    if type(seen) is Verdict:
        return Decision(user_id, socket_id, reason, now, seen.heartbeat_age_s, seen.missed_pings, False,
                        None, None, dry_run)
    if reason == reasons.MALFORMED:
        return Decision(user_id, socket_id, reason, now, None, None, False, seen, None, dry_run)
    return Decision(user_id, socket_id, reason, now, None, None, reason == reasons.ORPHAN, None, seen, dry_run)


def outcome(user_id: str | None, socket_id: str | None, reason: str, event: str, now: float,
            note: str | None) -> Decision:
    """A cascade's end worth auditing: ``event`` is skipped_<state> or dead_letter. The note
    (the last error) may quote a reply: kept scrubbed of credentials."""
    return Decision(user_id=user_id or "-", socket_id=socket_id or None, reason=reason, at=now,
                    note=None if note is None else redact.scrub(note), event=event)


def from_entry(entry_id: bytes | str, raw: dict) -> dict | None:
    """A stream entry as `reaper events` shows it: id, its Redis time, and the record's fields;
    None when it holds nothing that can be shown (the reader skips and counts it)."""
    entry_id = _text(entry_id)
    fields = {_text(k): v for k, v in raw.items()}
    record = _record(fields.pop(FIELD, None))
    if record is None:  # not one of ours: its other fields are shown, as they are
        if not fields:
            return None
        record = {k: _text(v) for k, v in fields.items()}
    return {"id": entry_id, "time": _time_of(entry_id), **record}


def _time_of(entry_id: str) -> str:
    try:
        return _iso(int(entry_id.split("-")[0]) / 1000)
    except (ValueError, OverflowError, OSError):  # an id given by hand, past the year 9999
        return "?"


# Each field a decision record may hold, and what it must be to be shown; others are dropped.
_TEXT, _NUMBER_OR_NULL, _FLAG = (str,), (int, float, type(None)), (bool,)
SCHEMA = {"event": _TEXT, "user_id": _TEXT, "socket_id": _TEXT, "reason": _TEXT, "at": _NUMBER_OR_NULL,
          "heartbeat_age_s": _NUMBER_OR_NULL, "missed_pings": (int,), "orphan": _FLAG, "dry_run": _FLAG,
          "problem": _TEXT, "note": _TEXT}
REQUIRED = ("user_id", "reason")


def _record(raw: bytes | str | None) -> dict | None:
    """The decision record in the entry's field, or None when it is not one reaper wrote: not
    UTF-8, not JSON, not an object, or a field of another type than reaper writes."""
    if raw is None:
        return None
    try:
        record = ownkeys.loads(raw)
    except ValueError:
        return None
    if not isinstance(record, dict) or not all(isinstance(record.get(k), str) for k in REQUIRED):
        return None
    shown = {k: v for k, v in record.items() if k in SCHEMA}
    return shown if all(_fits(k, v) for k, v in shown.items()) else None


def _fits(name: str, value) -> bool:
    if isinstance(value, bool) and bool not in SCHEMA[name]:
        return False  # JSON true is no number
    return isinstance(value, SCHEMA[name])


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _iso(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def since_id(now: float, since_s: float) -> str:
    """The smallest stream id at or after ``now - since_s`` (both Redis time, seconds)."""
    return f"{max(0, int((now - since_s) * 1000))}-0"


# -- showing ------------------------------------------------------------------------------

COLUMNS = (("time", 24), ("user", 20), ("socket", 20), ("reason", 17))
SHOWN_CHARS = 300  # of one value in the table: a huge one is cut, never a screenful


def as_text(found: list[dict], unreadable: int = 0) -> str:
    """A table, newest first; the last column says what was observed. Values are scrubbed of
    credentials and shown on one line, control characters escaped."""
    lines = [_skipped(unreadable)] if unreadable else []
    if not found:
        return "\n".join(["No decision records."] + lines)
    header = "".join(f"{title:<{width}} " for title, width in COLUMNS) + "observed"
    return "\n".join([header] + [_row(event) for event in found] + lines)


def _skipped(unreadable: int) -> str:
    return f"{unreadable} {'entry' if unreadable == 1 else 'entries'} unreadable, skipped"


def _row(event: dict) -> str:
    cells = [event["time"], event.get("user_id", "?"), event.get("socket_id", "-"), event.get("reason", "?")]
    return "".join(f"{_shown(cell):<{width}} " for cell, (_, width) in zip(cells, COLUMNS)) + \
        _shown(_observed(event), 2 * SHOWN_CHARS)


def _shown(value, limit: int = SHOWN_CHARS) -> str:
    return redact.printable(redact.cut(redact.scrub(str(value)), limit))


def _observed(event: dict) -> str:
    parts = []
    if isinstance(event.get("heartbeat_age_s"), (int, float)):
        parts.append(f"heartbeat age {event['heartbeat_age_s']:.0f}s")
    if "missed_pings" in event:
        parts.append(f"missed pings {event['missed_pings']}")
    if event.get("event", REAPED) != REAPED:
        parts.append(f"cascade {event['event']}")
    if "problem" in event:
        parts.append(f"malformed: {event['problem']}")
    if "note" in event:
        parts.append(event["note"])
    if event.get("dry_run"):
        parts.append("dry run")
    return ", ".join(parts)


def as_json_lines(found: list[dict], unreadable: int = 0) -> str:
    """One object per record, its text scrubbed of credentials; after them, when entries were
    skipped, one more: {"unreadable": N}."""
    lines = [json.dumps(_scrubbed(event), sort_keys=True) for event in found]
    return "\n".join(lines + ([json.dumps({"unreadable": unreadable})] if unreadable else []))


def _scrubbed(event: dict) -> dict:
    return {k: redact.scrub(v) if isinstance(v, str) else v for k, v in event.items()}


@dataclass
class Found:
    """What a read found: the records to show, and how many entries could not be read."""

    records: list[dict]
    unreadable: int = 0


# -- I/O ---------------------------------------------------------------------------------------

class EventStream:
    """Writes decision records, one round trip per batch; reads them back newest first."""

    def __init__(self, client: redis.Redis, keys: Keys, max_len: int):
        self.client, self.key, self.max_len = client, keys.events, max_len
        self.prefix = keys.reaper_prefix
        self._add = client.register_script(scripts.ADD_EVENTS)

    @classmethod
    def from_config(cls, client: redis.Redis, keys: Keys, config: Config) -> "EventStream":
        return cls(client, keys, config.events.max_len)

    def write(self, decisions: list[Decision], turn: AbstractContextManager = nullcontext()) -> None:
        """One round trip per EVENTS_BATCH, each in ``turn`` (the records are made before it is
        taken). A dry run writes nothing, and neither does max_len 0."""
        records = [d.to_json() for d in decisions if not d.dry_run]
        if not records or self.max_len == 0:
            return
        for start in range(0, len(records), scripts.EVENTS_BATCH):
            args = [self.max_len, *records[start:start + scripts.EVENTS_BATCH]]
            with turn:
                self._add(keys=[self.key], args=args)

    def read(self, now: float, since_s: float | None = None, user_id: str | None = None,
             limit: int = 100) -> list[dict]:
        return self.query(now, since_s, user_id, limit).records

    def query(self, now: float, since_s: float | None = None, user_id: str | None = None,
              limit: int = 100) -> Found:
        """At most ``limit`` records, newest first, of ``user_id`` (or anyone), not older than
        ``since_s`` before ``now`` (Redis time); entries that cannot be read are counted."""
        require_type(self.client, self.key, "stream")
        oldest = "-" if since_s is None else since_id(now, since_s)
        found, newest, page_size = Found([]), "+", READ_PAGE if user_id else limit
        while len(found.records) < limit:
            page = self.client.xrevrange(self.key, newest, oldest, count=page_size)
            for entry_id, raw in page:
                self._take(found, from_entry(entry_id, raw), user_id)
            if len(page) < page_size:
                break
            newest = "(" + _text(page[-1][0])
        found.records = found.records[:limit]
        return found

    @staticmethod
    def _take(found: Found, event: dict | None, user_id: str | None) -> None:
        if event is None:
            found.unreadable += 1
        elif user_id is None or event.get("user_id") == user_id:
            found.records.append(event)
