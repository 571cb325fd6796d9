"""Parsing what the signaling service writes (docs/design.md, the data read): timestamps, records, users:online entries."""

import json
from datetime import datetime

import pytest

from reaper.core import records
from reaper.core.records import (
    GuestRecord, Malformed, OnlineEntry, entry_belongs_to, parse_hash_record, parse_json_record,
    parse_online_entry, parse_timestamp, read_written,
)
from support.keys import KEYS

T = 1795946741.09  # 2026-11-29T10:05:41.090Z
ISO = "2026-11-29T10:05:41.090Z"
SOCK = "Qx7b2M1dZk_AAAB"
KEY = KEYS.connection(SOCK)


# -- timestamps ---------------------------------------------------------------------------


@pytest.mark.parametrize("value, seconds", [
    (ISO, T),
    ("2026-11-29T10:05:41Z", 1795946741.0),
    ("2026-11-29T12:05:41.090+02:00", T),
    ("2026-11-29T05:05:41.090-05:00", T),
    ("2026-11-29T10:05:41.090+00:00", T),
    ("2026-11-29T10:05:41.090", T),  # no offset: the signaling service writes UTC
    ("  2026-11-29T10:05:41.090Z  ", T),
    (1795946741, 1795946741.0),
    (1795946741.09, T),
    ("1795946741", 1795946741.0),
    ("1795946741.09", T),
    (1795946741090, T),  # milliseconds, told apart by magnitude
    (1795946741090.0, T),
    ("1795946741090", T),
    (99_999_999_999, 99_999_999_999.0),  # just below the threshold: still seconds (year 5138)
    (100_000_000_000, 100_000_000.0),  # at the threshold: milliseconds (1973)
    (0, 0.0),
    ("9999-12-31T23:59:59Z", 253402300799.0),
    (253402300799000, 253402300799.0),
])
def test_parse_timestamp_reads(value, seconds):
    assert parse_timestamp(value) == pytest.approx(seconds, abs=1e-6)


@pytest.mark.parametrize("value", [
    "garbage", "", "   ", "yesterday-ish", "2026-13-01T00:00:00Z", "2026-11-29T25:00:00Z",
    True, False, None, -1, -1.5, "-1", "-1795946741", float("nan"), "nan", float("inf"), "inf", "-inf",
    10 ** 400, 1e300, 1e20, "99999999999999999999", 253402300800000,
    "0001-01-01T00:00:00+01:00", "1969-12-31T23:59:59Z",
    [ISO], {"t": ISO}, b"1795946741",
], ids=repr)
def test_parse_timestamp_refuses(value):
    with pytest.raises(ValueError):
        parse_timestamp(value)


# -- JSON records -------------------------------------------------------------------------


def record_bytes(**fields) -> bytes:
    data = {"socketId": SOCK, "userId": "guest_6f1c2a9e", "name": "Guest 4821", "joinedAt": ISO,
            "lastHeartbeat": ISO, "lastPing": ISO, "lastPongReceived": ISO, "status": "online",
            "roomId": None, "isResponsive": True, "missedPings": 0}
    for name, value in fields.items():
        if value is _ABSENT:
            data.pop(name)
        else:
            data[name] = value
    return json.dumps(data).encode()


_ABSENT = object()


def test_parse_json_record_reads_the_spec_example():
    raw = record_bytes(lastHeartbeat="2026-11-29T10:05:41.090Z", lastPongReceived="2026-11-29T10:05:11.004Z")

    parsed = parse_json_record(KEY, SOCK, raw)

    assert isinstance(parsed, GuestRecord)
    assert (parsed.key, parsed.socket_id, parsed.user_id) == (KEY, SOCK, "guest_6f1c2a9e")
    assert parsed.last_heartbeat == pytest.approx(T)
    assert parsed.last_pong == pytest.approx(T - 30.086)
    assert parsed.witness == (raw, b"")


def test_a_record_without_lastPongReceived_is_judged_by_its_heartbeat():
    for pong in (_ABSENT, None, ""):
        parsed = parse_json_record(KEY, SOCK, record_bytes(lastPongReceived=pong))
        assert isinstance(parsed, GuestRecord)
        assert parsed.last_pong == parsed.last_heartbeat == pytest.approx(T)


@pytest.mark.parametrize("fields", [
    {"missedPings": "many"}, {"name": 42}, {"isResponsive": "yes"}, {"roomId": {"a": 1}},
    {"lastPing": "garbage"}, {"joinedAt": None}, {"socketId": 7}, {"extra": [1, 2]},
])
def test_other_fields_of_the_wrong_type_do_not_make_a_record_malformed(fields):
    assert isinstance(parse_json_record(KEY, SOCK, record_bytes(**fields)), GuestRecord)


@pytest.mark.parametrize("raw, problem", [
    (b"{not json", "not JSON"),
    (b"\xff\xfe\x00", "not JSON"),
    (b"[1, 2]", "JSON array, not an object"),
    (b"42", "JSON number, not an object"),
    (b"4.2", "JSON number, not an object"),
    (b'"text"', "JSON string, not an object"),
    (b"null", "JSON null, not an object"),
    (b"true", "JSON boolean, not an object"),
    (b"", "empty value"),
    (None, "empty value"),
], ids=repr)
def test_unreadable_values_are_malformed_without_a_user(raw, problem):
    parsed = parse_json_record(KEY, SOCK, raw)

    assert isinstance(parsed, Malformed)
    assert parsed.problem == problem
    assert (parsed.key, parsed.socket_id, parsed.redis_type) == (KEY, SOCK, "string")
    assert parsed.user_id is None
    assert parsed.witness == (raw or b"", b"")


@pytest.mark.parametrize("fields, problem, user_id, heartbeat, pong", [
    ({"userId": _ABSENT}, "missing userId", None, T, T),
    ({"userId": None}, "missing userId", None, T, T),
    ({"userId": ""}, "empty userId", None, T, T),
    ({"userId": 42}, "userId is int, not a string", None, T, T),
    ({"userId": ["guest_1"]}, "userId is list, not a string", None, T, T),
    ({"lastHeartbeat": _ABSENT}, "missing lastHeartbeat", "guest_6f1c2a9e", None, T),
    ({"lastHeartbeat": ""}, "missing lastHeartbeat", "guest_6f1c2a9e", None, T),
    ({"lastHeartbeat": _ABSENT, "lastPongReceived": _ABSENT}, "missing lastHeartbeat",
     "guest_6f1c2a9e", None, None),
    ({"lastHeartbeat": "yesterday"}, "unreadable lastHeartbeat: 'yesterday'", "guest_6f1c2a9e", None, T),
    ({"lastHeartbeat": True}, "unreadable lastHeartbeat", "guest_6f1c2a9e", None, T),
    ({"lastHeartbeat": -5}, "unreadable lastHeartbeat", "guest_6f1c2a9e", None, T),
    ({"lastHeartbeat": {"t": 1}}, "unreadable lastHeartbeat", "guest_6f1c2a9e", None, T),
    ({"lastPongReceived": "soon"}, "unreadable lastPongReceived: 'soon'", "guest_6f1c2a9e", T, None),
    ({"lastPongReceived": 10 ** 400}, "unreadable lastPongReceived", "guest_6f1c2a9e", T, None),
])
def test_malformed_records_keep_what_could_be_read(fields, problem, user_id, heartbeat, pong):
    raw = record_bytes(**fields)

    parsed = parse_json_record(KEY, SOCK, raw)

    assert isinstance(parsed, Malformed)
    assert parsed.problem.startswith(problem)
    assert parsed.user_id == user_id
    assert parsed.last_heartbeat == (None if heartbeat is None else pytest.approx(heartbeat))
    assert parsed.last_pong == (None if pong is None else pytest.approx(pong))
    assert parsed.witness == (raw, b"")


def test_a_long_unreadable_timestamp_is_cut_short_in_the_problem():
    parsed = parse_json_record(KEY, SOCK, record_bytes(lastHeartbeat="x" * 500))
    assert isinstance(parsed, Malformed) and len(parsed.problem) < 80


# -- hash records -------------------------------------------------------------------------


def test_parse_hash_record_reads_bytes_fields():
    fields = {b"socketId": SOCK.encode(), b"userId": b"guest_1", b"lastHeartbeat": ISO.encode(),
              b"lastPongReceived": b"1795946711090", b"missedPings": b"0", b"roomId": b""}

    parsed = parse_hash_record(KEY, SOCK, fields)

    assert isinstance(parsed, GuestRecord)
    assert parsed.user_id == "guest_1"
    assert parsed.last_heartbeat == pytest.approx(T)
    assert parsed.last_pong == pytest.approx(T - 30)
    assert parsed.witness == (ISO.encode(), b"1795946711090")


def test_parse_hash_record_reads_str_fields():
    parsed = parse_hash_record(KEY, SOCK, {"userId": "guest_1", "lastHeartbeat": ISO})
    assert isinstance(parsed, GuestRecord)
    assert parsed.last_pong == parsed.last_heartbeat
    assert parsed.witness == (ISO.encode(), b"")


def test_an_empty_hash_is_malformed():
    parsed = parse_hash_record(KEY, SOCK, {})
    assert isinstance(parsed, Malformed)
    assert (parsed.problem, parsed.redis_type, parsed.user_id) == ("empty hash", "hash", None)
    assert parsed.witness == (b"", b"")


@pytest.mark.parametrize("fields, problem, user_id", [
    ({b"lastHeartbeat": ISO.encode()}, "missing userId", None),
    ({b"userId": b"", b"lastHeartbeat": ISO.encode()}, "empty userId", None),
    ({b"userId": b"guest_1"}, "missing lastHeartbeat", "guest_1"),
    ({b"userId": b"guest_1", b"lastHeartbeat": b"garbage"}, "unreadable lastHeartbeat", "guest_1"),
    ({b"userId": b"guest_1", b"lastHeartbeat": ISO.encode(), b"lastPongReceived": b"\xff"},
     "unreadable lastPongReceived", "guest_1"),
])
def test_malformed_hashes(fields, problem, user_id):
    parsed = parse_hash_record(KEY, SOCK, fields)
    assert isinstance(parsed, Malformed)
    assert parsed.problem.startswith(problem)
    assert parsed.redis_type == "hash"
    assert parsed.user_id == user_id
    assert parsed.witness == (fields.get(b"lastHeartbeat", b""), fields.get(b"lastPongReceived", b""))


# -- users:online entries -----------------------------------------------------------------


def entry_json(**fields) -> bytes:
    return json.dumps({"status": "online", **fields}).encode()


@pytest.mark.parametrize("user_id, raw, prefix, is_guest, socket_id", [
    ("guest_1", entry_json(isGuest=True, socketId="s1"), "guest_", True, "s1"),
    ("u1", entry_json(isGuest=True, socketId="s1"), "guest_", True, "s1"),
    ("u1", entry_json(isGuest=False, socketId="s1"), "guest_", False, "s1"),
    ("u1", entry_json(socketId="s1"), "guest_", False, "s1"),
    ("guest_1", entry_json(isGuest=False, socketId="s1"), "guest_", True, "s1"),  # the prefix suffices
    ("guest_1", entry_json(), "guest_", True, None),
    ("u1", entry_json(isGuest="true"), "guest_", False, None),  # only JSON true counts
    ("u1", entry_json(isGuest=1), "guest_", False, None),
    ("guest_1", entry_json(isGuest=True, socketId=123), "guest_", True, None),
    ("guest_1", entry_json(isGuest=True, socketId=""), "guest_", True, None),
    ("guest_1", entry_json(isGuest=True, socketId=None), "guest_", True, None),
    ("guest_1", entry_json(isGuest=True, socketId=["s1"]), "guest_", True, None),
    ("guest_1", b"not json at all", "guest_", True, None),
    ("u1", b"not json at all", "guest_", False, None),
    ("guest_1", b'{"socketId": "s1"', "guest_", True, None),  # truncated JSON: no known socket
    ("guest_1", b"[1, 2]", "guest_", True, None),
    ("u1", b"[1, 2]", "guest_", False, None),
    ("u1", b'"guest"', "guest_", False, None),
    ("guest_1", b"\xff\xfe", "guest_", True, None),
    ("guest_1", b"", "guest_", True, None),
    ("anon-7", b"not json", "anon-", True, None),
    ("guest_7", b"not json", "anon-", False, None),
    ("anon-7", entry_json(socketId="s7"), "anon-", True, "s7"),
], ids=repr)
def test_parse_online_entry(user_id, raw, prefix, is_guest, socket_id):
    entry = parse_online_entry(user_id, raw, prefix)
    assert entry == OnlineEntry(user_id, raw, is_guest, socket_id)


@pytest.mark.parametrize("is_guest, entry_socket, reaped_socket, belongs", [
    (True, "s1", "s1", True),
    (True, "s1", "s2", False),  # reconnected on a new socket: keeps its entry
    (True, None, "s1", True),  # no known socket: any of the guest's sockets may remove it
    (True, None, None, True),
    (True, "s1", None, False),  # a socketless orphan never removes an entry naming a socket
    (False, "s1", "s1", False),  # registered users: never
    (False, None, "s1", False),
    (False, None, None, False),
])
def test_entry_belongs_to(is_guest, entry_socket, reaped_socket, belongs):
    entry = OnlineEntry("someone", b"{}", is_guest, entry_socket)
    assert entry_belongs_to(entry, reaped_socket) is belongs


# -- heartbeat texts read once, remembered (records._offset_iso) ----------------------------------

def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


# Read in the quick lane (epoch seconds), or left to the careful way (None).
ISO_TEXTS = {"2026-12-07T08:03:12.345Z": _epoch("2026-12-07T08:03:12.345+00:00"),
             "2026-12-07T10:03:12.345+02:00": _epoch("2026-12-07T08:03:12.345+00:00"),
             "9999-12-31T23:59:59Z": _epoch("9999-12-31T23:59:59+00:00"),
             # CPython's fromisoformat stops at a NUL: the time before it, read so by both lanes
             "2026-12-07T08:03:12.345Z\x00": _epoch("2026-12-07T08:03:12.345+00:00"),
             "2026-12-07T08:03:12.345": None,  # no offset
             "2026-12-07T08:03:99.999Z": None, "1969-12-31T23:59:59Z": None, "": None, "x" * 10_000: None,
             "\udcff": None, "12345": None, "2026-13-01T00:00:00Z": None}


@pytest.mark.parametrize("text", list(ISO_TEXTS))
def test_a_heartbeat_text_read_again_reads_as_it_did_the_first_time(text):
    raw = json.dumps({"userId": "guest_1", "lastHeartbeat": text, "lastPongReceived": text}).encode()

    first, again = read_written(raw), read_written(raw)

    assert first == again == (None if ISO_TEXTS[text] is None else ("guest_1", ISO_TEXTS[text], ISO_TEXTS[text]))


def test_the_heartbeat_texts_remembered_are_bounded():
    for n in range(records._READ_ISO_MAX + 100):
        read_written(json.dumps({"userId": "guest_1", "lastHeartbeat": f"2026-12-07T08:03:12.{n:06d}Z"}).encode())

    assert 0 < len(records._READ_ISO) <= records._READ_ISO_MAX
