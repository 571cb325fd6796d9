"""Parsing what the signaling service writes (docs/design.md, the data read). Pure: bytes in, values out.

A guest record becomes a GuestRecord when reaper can read the three things it judges by
(userId, lastHeartbeat, lastPongReceived) and a Malformed otherwise. Other fields are the
signaling service's business: a wrong type there does not make a record malformed.
"""

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone

import msgspec

from reaper.core.names import decode_name, encode_name, is_text

# Epoch numbers at or above this are milliseconds: 1e11 s is the year 5138, 1e11 ms is 1973.
_EPOCH_MS_THRESHOLD = 1e11
_JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean",
               type(None): "null"}
_MAX_EPOCH_S = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc).timestamp()
_raw_decode = json.JSONDecoder().raw_decode


# Records and entries are built a million times per sweep at scale: slots, and not frozen
# (a frozen dataclass's __init__ costs four times as much).
@dataclass(slots=True)
class GuestRecord:
    key: str
    socket_id: str
    user_id: str
    last_heartbeat: float  # epoch seconds
    last_pong: float  # epoch seconds
    witness: tuple = field(default=(b"", b""), repr=False)  # what compare-and-delete compares

    def malformed(self, problem: str, redis_type: str) -> "Malformed":
        """This record as malformed after all: readable, but judged unbelievable (a timestamp in
        the future, reaper/core/staleness.py)."""
        return Malformed(self.key, self.socket_id, problem, redis_type, self.user_id,
                         self.last_heartbeat, self.last_pong, self.witness)


@dataclass(slots=True)
class Malformed:
    key: str
    socket_id: str
    problem: str
    redis_type: str  # "string", "hash", or whatever TYPE said
    user_id: str | None = None
    last_heartbeat: float | None = None
    last_pong: float | None = None
    witness: tuple = field(default=(b"", b""), repr=False)


@dataclass(slots=True)
class OnlineEntry:
    """One field of ``users:online``."""

    user_id: str
    raw: bytes
    is_guest: bool
    socket_id: str | None


# gc=False: a decoded record holds text and None only, so it can be in no reference cycle, and
# the garbage collector need not track the million a sweep makes and drops (~4 % of the decode).
class Written(msgspec.Struct, gc=False):
    """The fields reaper reads, as the signaling service writes them (every other field is
    skipped unread). A value of any other type fails the decode, and the record goes the
    careful way, which says what is wrong."""

    userId: str | None = None
    lastHeartbeat: str | None = None
    lastPongReceived: str | None = None


class _Entry(msgspec.Struct, gc=False):
    socketId: str | None = None
    isGuest: bool | None = None


# msgspec decodes straight into these in C, about six times as fast as json.loads and a dict
# (bench/README.md). What it accepts, json.loads reads the same (duplicate keys: the last wins);
# what it refuses (raising one of REFUSED) goes to json.loads, so the rules for anything unusual
# are json's and ours. The sweep's quick lane calls decode_written in its own loop.
decode_written = msgspec.json.Decoder(Written).decode
_decode_entry = msgspec.json.Decoder(_Entry).decode
# ValidationError (a wrong type) is a DecodeError; RecursionError: nested deeper than it goes.
REFUSED = (msgspec.DecodeError, RecursionError)


def loads(raw: bytes) -> object:
    """json.loads(raw), a third faster for what the signaling service writes: UTF-8 JSON
    objects. json.loads first guesses the encoding of bytes; a leading "{" with no NUL after it
    is UTF-8 by its own rules, and anything else goes to json.loads itself."""
    if raw[:1] == b"{" and raw[1:2] != b"\x00":
        text = raw.decode("utf-8", "surrogatepass")
        data, end = _raw_decode(text)
        if end == len(text) or not text[end:].strip(" \t\n\r"):
            return data
    return json.loads(raw)  # also raises the error for text after the object


def parse_timestamp(value: object) -> float:
    """Epoch seconds from ISO-8601 text or an epoch number (s or ms); ValueError otherwise."""
    if isinstance(value, str):
        seconds = _from_text(value.strip())
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = _from_epoch(_float(value))
    else:
        raise ValueError(f"not a timestamp: {value!r}")
    # Outside datetime's years 1970..9999 a "timestamp" is garbage; a far-future one would
    # otherwise keep its record live for ever.
    if not 0 <= seconds <= _MAX_EPOCH_S:
        raise ValueError(f"timestamp out of range: {value!r}")
    return seconds


def _from_text(text: str) -> float:
    # What the signaling service writes ("2026-11-29T10:05:41.090Z") is tried first; no text
    # with "-" after four characters is a number, and digits alone ("20261129") stay epoch numbers.
    if text[4:5] == "-":
        try:
            return _from_iso(text)
        except ValueError:
            pass
    number = _number_or_none(text)
    return _from_iso(text) if number is None else _from_epoch(number)


def _float(number: int | float) -> float:
    try:
        return float(number)
    except OverflowError:
        raise ValueError(f"not a timestamp: {number!r}") from None


def _number_or_none(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _from_epoch(number: float) -> float:
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"not a timestamp: {number!r}")
    return number / 1000.0 if number >= _EPOCH_MS_THRESHOLD else number


def _from_iso(text: str) -> float:
    parsed = datetime.fromisoformat(text)  # ValueError on garbage
    if parsed.tzinfo is None:  # the signaling service writes UTC
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def parse_json_record(key: str, socket_id: str, raw: bytes | None) -> GuestRecord | Malformed:
    """A ``guest_connection:*`` string value."""
    if not raw:
        return Malformed(key, socket_id, "empty value", "string", witness=(raw or b"", b""))
    fields = read_written(raw)
    if fields is not None:
        return GuestRecord(key, socket_id, *fields, (raw, b""))
    return _parse_json_carefully(key, socket_id, raw)


def read_written(raw: bytes) -> tuple[str, float, float] | None:
    """(userId, heartbeat, pong) of a record as the signaling service writes it, read in one go
    by msgspec; None for anything else, which the careful way reads (and says what is wrong).
    parse_json_record reads by it; the sweep's quick lane (reaper/sweep/judging.py) does the same
    in its own loop (decode_written, then fields_of)."""
    try:
        written = decode_written(raw)
    except REFUSED:
        return None
    return fields_of(written)


def fields_of(written: Written) -> tuple[str, float, float] | None:
    """read_written's answer for a decoded record."""
    return _written(written.userId, written.lastHeartbeat, written.lastPongReceived)


def _parse_json_carefully(key: str, socket_id: str, raw: bytes) -> GuestRecord | Malformed:
    try:
        data = loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python's stack
        return Malformed(key, socket_id, "not JSON", "string", witness=(raw, b""))
    if not isinstance(data, dict):
        problem = f"JSON {_JSON_TYPES.get(type(data), type(data).__name__)}, not an object"
        return Malformed(key, socket_id, problem, "string", witness=(raw, b""))
    return _from_fields(key, socket_id, data, "string", (raw, b""))


def parse_hash_record(key: str, socket_id: str, fields: dict) -> GuestRecord | Malformed:
    """A ``guest_connection:*`` hash value (``record_format = "hash"``)."""
    decoded = {_text(k): _text(v) for k, v in fields.items()}
    witness = tuple(_raw(fields, name) for name in ("lastHeartbeat", "lastPongReceived"))
    if not fields:
        return Malformed(key, socket_id, "empty hash", "hash", witness=witness)
    return _from_fields(key, socket_id, decoded, "hash", witness)


def _raw(fields: dict, name: str) -> bytes:
    value = fields.get(name.encode(), fields.get(name, b""))
    return value.encode() if isinstance(value, str) else value


def _text(value: object) -> object:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _from_fields(key: str, socket_id: str, data: dict, redis_type: str,
                 witness: tuple) -> GuestRecord | Malformed:
    return _well_formed(key, socket_id, data, witness) or _carefully(key, socket_id, data, redis_type, witness)


def _well_formed(key: str, socket_id: str, data: dict, witness: tuple) -> GuestRecord | None:
    fields = _written(data.get("userId"), data.get("lastHeartbeat"), data.get("lastPongReceived"))
    return None if fields is None else GuestRecord(key, socket_id, *fields, witness)


def _written(user_id: object, beat_text: object, pong_text: object) -> tuple[str, float, float] | None:
    """(userId, heartbeat, pong) when the three are as the signaling service writes them (ASCII
    id, ISO text with an offset); None when anything is otherwise, for _carefully to read."""
    heartbeat = _offset_iso(beat_text)
    pong = heartbeat if pong_text == beat_text else _offset_iso(pong_text)  # one write sets both
    if type(user_id) is str and user_id and user_id.isascii() and heartbeat is not None and pong is not None:
        return user_id, heartbeat, pong
    return None


# Heartbeat texts already read, and what they said. A sweep reads each one many times over: the
# signaling servers stamp a million guests' beats with some 25,000 distinct milliseconds of
# their interval. A look-up costs ~0.05 µs against ~0.3 µs to parse; the memo is emptied when
# full, so it holds at most ~5 MB.
_READ_ISO: dict[str, float | None] = {}
_READ_ISO_MAX = 50_000


def _offset_iso(value: object) -> float | None:
    """Epoch seconds of ISO text with an offset ("...Z"), within range; None for anything else."""
    if type(value) is not str:
        return None
    try:
        return _READ_ISO[value]
    except KeyError:
        pass
    seconds = _parse_offset_iso(value)
    if len(_READ_ISO) >= _READ_ISO_MAX:
        _READ_ISO.clear()
    _READ_ISO[value] = seconds
    return seconds


def _parse_offset_iso(value: str) -> float | None:
    if value[4:5] != "-":
        return None
    try:
        parsed = datetime.fromisoformat(value)
        seconds = parsed.timestamp() if parsed.tzinfo is not None else -1.0
    except (ValueError, OverflowError):
        return None
    return seconds if 0 <= seconds <= _MAX_EPOCH_S else None


def _carefully(key: str, socket_id: str, data: dict, redis_type: str,
               witness: tuple) -> GuestRecord | Malformed:
    user_id, user_problem = _user_id_field(data)
    heartbeat, heartbeat_problem = _timestamp_field(data, "lastHeartbeat")
    # A record that has not been ponged yet is judged by its heartbeat alone.
    pong, pong_problem = _timestamp_field(data, "lastPongReceived", absent_ok=True)
    if pong is None and not pong_problem:
        pong = heartbeat
    problem = user_problem or heartbeat_problem or pong_problem
    if problem:
        return Malformed(key, socket_id, problem, redis_type, user_id, heartbeat, pong, witness)
    return GuestRecord(key, socket_id, user_id, heartbeat, pong, witness)


def _user_id_field(data: dict) -> tuple[str | None, str | None]:
    user_id = data.get("userId")
    if user_id is None:
        return None, "missing userId"
    if not isinstance(user_id, str):
        return None, f"userId is {type(user_id).__name__}, not a string"
    if not is_text(user_id):  # "\ud800": no signaling server writes it, no service knows it
        return None, "userId is not Unicode text (a lone surrogate)"
    return (user_id, None) if user_id else (None, "empty userId")


def _timestamp_field(data: dict, name: str, absent_ok: bool = False) -> tuple[float | None, str | None]:
    value = data.get(name)
    if value is None or value == "":
        return None, None if absent_ok else f"missing {name}"
    try:
        return parse_timestamp(value), None
    except (ValueError, OverflowError):  # a sweep never crashes on a record
        return None, f"unreadable {name}: {str(value)[:40]!r}"


def parse_online_entry(user_id: str, raw: bytes, guest_id_prefix: str) -> OnlineEntry:
    """A ``users:online`` field. Not JSON: a guest only by its id prefix, with no known socket."""
    quick = _guest_and_socket(raw, user_id.startswith(guest_id_prefix))
    if quick is None:
        return _parse_entry_carefully(user_id, raw, guest_id_prefix)
    return OnlineEntry(user_id, raw, *quick)


def _guest_and_socket(raw: bytes, prefixed: bool) -> tuple[bool, str | None] | None:
    """(a guest's?, the socket it names) of an entry msgspec reads; None when it refuses it."""
    try:
        entry = _decode_entry(raw)
    except REFUSED:
        return None
    socket_id = entry.socketId
    return entry.isGuest is True or prefixed, socket_id if socket_id and is_text(socket_id) else None


@dataclass(slots=True)
class OnlineSockets:
    """A page of ``users:online`` sorted for a sweep that has read the records already."""

    registered: int = 0  # entries of users that are no guests
    socketless: int = 0  # guest entries naming no socket
    named: list = field(default_factory=list)  # (field, value, its socket's record key) of every other guest entry


def online_sockets(page: list[tuple[bytes, bytes]], guest_id_prefix: str, connection_prefix: str) -> OnlineSockets:
    """Each entry of ``page`` (field and value as Redis gave them) read as parse_online_entry
    reads it, without an OnlineEntry for each: this runs for every entry of a big list. Each
    entry naming a socket comes with the name of that socket's record as Redis holds it (the
    prefix's bytes and the socket's UTF-8: a socketId read here is Unicode text)."""
    prefix = encode_name(guest_id_prefix)  # the bytes a field holding a guest's id starts with
    connection = encode_name(connection_prefix)
    sockets = OnlineSockets()
    named, decode = sockets.named, _decode_entry
    registered = socketless = 0
    for name, raw in page:
        try:  # _guest_and_socket inlined
            entry = decode(raw)
            guest, socket_id = entry.isGuest is True or name.startswith(prefix), entry.socketId
        except REFUSED:
            careful = _parse_entry_carefully(decode_name(name), raw, guest_id_prefix)
            guest, socket_id = careful.is_guest, careful.socket_id
        if not guest:
            registered += 1
        elif not socket_id or not is_text(socket_id):
            socketless += 1
        else:
            named.append((name, raw, connection + socket_id.encode()))
    sockets.registered, sockets.socketless = registered, socketless
    return sockets


def _parse_entry_carefully(user_id: str, raw: bytes, guest_id_prefix: str) -> OnlineEntry:
    try:
        data = loads(raw)
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        return OnlineEntry(user_id, raw, user_id.startswith(guest_id_prefix), None)
    is_guest = data.get("isGuest") is True or user_id.startswith(guest_id_prefix)
    socket_id = data.get("socketId")
    socket_id = socket_id if isinstance(socket_id, str) and socket_id and is_text(socket_id) else None
    return OnlineEntry(user_id, raw, is_guest, socket_id)


def entry_belongs_to(entry: OnlineEntry, socket_id: str | None) -> bool:
    """May reaping ``socket_id`` remove this entry? Only a guest's, naming that socket or none."""
    return entry.is_guest and (entry.socket_id is None or entry.socket_id == socket_id)
