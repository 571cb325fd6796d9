"""Parsing what the signaling service writes (SPEC §1). Pure: bytes in, values out.

A guest record becomes a GuestRecord when reaper can read the three things it judges by
(userId, lastHeartbeat, lastPongReceived) and a Malformed otherwise. Other fields are the
signaling service's business: a wrong type there does not make a record malformed.
"""

import json
import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

# Epoch numbers at or above this are milliseconds: 1e11 s is the year 5138, 1e11 ms is 1973.
_EPOCH_MS_THRESHOLD = 1e11
_JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean",
               type(None): "null"}
_MAX_EPOCH_S = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc).timestamp()


@dataclass(frozen=True)
class GuestRecord:
    key: str
    socket_id: str
    user_id: str
    last_heartbeat: float  # epoch seconds
    last_pong: float  # epoch seconds
    witness: tuple = field(default=(b"", b""), repr=False)  # what compare-and-delete compares


@dataclass(frozen=True)
class Malformed:
    key: str
    socket_id: str
    problem: str
    redis_type: str  # "string", "hash", or whatever TYPE said
    user_id: str | None = None
    last_heartbeat: float | None = None
    last_pong: float | None = None
    witness: tuple = field(default=(b"", b""), repr=False)


@dataclass(frozen=True)
class OnlineEntry:
    """One field of ``users:online``."""

    user_id: str
    raw: bytes
    is_guest: bool
    socket_id: str | None


def parse_timestamp(value: object) -> float:
    """Epoch seconds from ISO-8601 text or an epoch number (s or ms); ValueError otherwise."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"not a timestamp: {value!r}")
    if isinstance(value, str):
        value = value.strip()
        number = _number_or_none(value)
        seconds = _from_iso(value) if number is None else _from_epoch(number)
    elif isinstance(value, (int, float)):
        seconds = _from_epoch(_float(value))
    else:
        raise ValueError(f"not a timestamp: {value!r}")
    # Outside datetime's years 1970..9999 a "timestamp" is garbage; a far-future one would
    # otherwise keep its record live for ever.
    if not 0 <= seconds <= _MAX_EPOCH_S:
        raise ValueError(f"timestamp out of range: {value!r}")
    return seconds


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
    witness = (raw or b"", b"")
    if not raw:
        return Malformed(key, socket_id, "empty value", "string", witness=witness)
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return Malformed(key, socket_id, "not JSON", "string", witness=witness)
    if not isinstance(data, dict):
        problem = f"JSON {_JSON_TYPES.get(type(data), type(data).__name__)}, not an object"
        return Malformed(key, socket_id, problem, "string", witness=witness)
    return replace(_from_fields(key, socket_id, data, "string"), witness=witness)


def parse_hash_record(key: str, socket_id: str, fields: dict) -> GuestRecord | Malformed:
    """A ``guest_connection:*`` hash value (``record_format = "hash"``)."""
    decoded = {_text(k): _text(v) for k, v in fields.items()}
    witness = tuple(_raw(fields, name) for name in ("lastHeartbeat", "lastPongReceived"))
    if not fields:
        return Malformed(key, socket_id, "empty hash", "hash", witness=witness)
    return replace(_from_fields(key, socket_id, decoded, "hash"), witness=witness)


def _raw(fields: dict, name: str) -> bytes:
    value = fields.get(name.encode(), fields.get(name, b""))
    return value.encode() if isinstance(value, str) else value


def _text(value: object) -> object:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _from_fields(key: str, socket_id: str, data: dict, redis_type: str) -> GuestRecord | Malformed:
    user_id, user_problem = _user_id_field(data)
    heartbeat, heartbeat_problem = _timestamp_field(data, "lastHeartbeat")
    # A record that has not been ponged yet is judged by its heartbeat alone.
    pong, pong_problem = _timestamp_field(data, "lastPongReceived", absent_ok=True)
    if pong is None and not pong_problem:
        pong = heartbeat
    problem = user_problem or heartbeat_problem or pong_problem
    if problem:
        return Malformed(key, socket_id, problem, redis_type, user_id, heartbeat, pong)
    return GuestRecord(key, socket_id, user_id, heartbeat, pong)


def _user_id_field(data: dict) -> tuple[str | None, str | None]:
    user_id = data.get("userId")
    if user_id is None:
        return None, "missing userId"
    if not isinstance(user_id, str):
        return None, f"userId is {type(user_id).__name__}, not a string"
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
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        return OnlineEntry(user_id, raw, user_id.startswith(guest_id_prefix), None)
    is_guest = data.get("isGuest") is True or user_id.startswith(guest_id_prefix)
    socket_id = data.get("socketId")
    socket_id = socket_id if isinstance(socket_id, str) and socket_id else None
    return OnlineEntry(user_id, raw, is_guest, socket_id)


def entry_belongs_to(entry: OnlineEntry, socket_id: str | None) -> bool:
    """May reaping ``socket_id`` remove this entry? Only a guest's, naming that socket or none."""
    return entry.is_guest and (entry.socket_id is None or entry.socket_id == socket_id)
