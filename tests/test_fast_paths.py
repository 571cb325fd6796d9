"""The fast paths of parsing, judging and intents give exactly what the careful paths give."""

import codecs
import json
from dataclasses import asdict

import pytest

from reaper.core import intents

from reaper.core import reasons
from reaper.core.intents import Intent, guest_intent, purge_intent
from reaper.core.records import (GuestRecord, Malformed, _carefully, _parse_entry_carefully, _parse_json_carefully,
                                 _well_formed, loads, online_sockets, parse_json_record, parse_online_entry,
                                 parse_timestamp)
from reaper.core.names import decode_name, encode_name
from reaper.core.staleness import Policy, judge, missed_pings
from support.keys import KEYS

KEY, SOCK = KEYS.connection("s1"), "s1"
ISO = "2026-11-29T10:05:41.090Z"


# -- loads: json.loads, sooner ----------------------------------------------------------------

OBJECT = {"userId": "guest_1", "n": [1, 2.5, None, True], "t": "é ☃ \\ \" 😀"}


@pytest.mark.parametrize("raw", [
    json.dumps(OBJECT).encode(),
    json.dumps(OBJECT, ensure_ascii=False).encode(),
    b'{"a": 1}   \n\t\r',
    b"{}",
    b'{"a": "\\ud800"}',  # a lone surrogate, escaped or encoded: json.loads keeps it
    b'{"a": "\xed\xa0\x80"}',
    codecs.BOM_UTF8 + b'{"a": 1}',
    json.dumps(OBJECT).encode("utf-16-le"),
    json.dumps(OBJECT).encode("utf-16"),
    json.dumps(OBJECT).encode("utf-32"),
    b'  {"a": 1}',
    b"[1, 2]",
    b'"text"',
    b"42",
], ids=repr)
def test_loads_reads_what_json_loads_reads(raw):
    assert loads(raw) == json.loads(raw)


@pytest.mark.parametrize("raw", [
    b'{"a": 1} x', b'{"a": 1}{"b": 2}', b'{"a": 1', b"{", b"{\xff}", b"",
    b"not json", b"\xff\xfe\x00",
], ids=repr)
def test_loads_refuses_what_json_loads_refuses(raw):
    with pytest.raises(ValueError):
        json.loads(raw)
    with pytest.raises(ValueError):
        loads(raw)


@pytest.mark.parametrize("raw", [b"[" * 100_000, b'{"a":' * 100_000, b'{"a":[' * 60_000])
def test_json_nested_deeper_than_the_stack_is_malformed_not_a_crash(raw):
    parsed = parse_json_record(KEY, SOCK, raw)

    assert isinstance(parsed, Malformed) and parsed.problem == "not JSON"
    assert parse_online_entry("guest_1", raw, "guest_").socket_id is None


# -- records: the well-formed path against the careful one -------------------------------------

def _data(**fields) -> dict:
    data = {"userId": "guest_1", "lastHeartbeat": ISO, "lastPongReceived": "2026-11-29T10:05:11.004Z"}
    data.update(fields)
    return {k: v for k, v in data.items() if v is not _ABSENT}


class _Absent:
    """A field left out of the record (a stable repr keeps test ids the same in every process)."""

    def __repr__(self) -> str:
        return "ABSENT"


_ABSENT = _Absent()


@pytest.mark.parametrize("fields", [
    {},
    {"lastPongReceived": ISO},  # one write set both: read once
    {"lastHeartbeat": "2026-11-29T12:05:41.090+02:00", "lastPongReceived": "2026-11-29T10:05:41+00:00"},
    {"lastHeartbeat": "2026-11-29T10:05:41.090"},  # no offset: UTC, by the careful path
    {"lastHeartbeat": " 2026-11-29T10:05:41.090Z "},
    {"lastHeartbeat": "20261129"},  # digits alone are an epoch number, not a basic-format date
    {"lastHeartbeat": "1795946741.090", "lastPongReceived": 1795946711004},
    {"lastHeartbeat": "1.0e-5"},
    {"lastHeartbeat": "1969-12-31T23:59:59Z"},
    {"lastHeartbeat": "9999-12-31T23:59:59Z"},
    {"lastHeartbeat": "0001-01-01T00:00:00+01:00"},
    {"lastHeartbeat": "2026-13-01T00:00:00Z"},
    {"lastHeartbeat": "2026-11-29T10:05:41.090Z", "lastPongReceived": "2026-11-29T10:05:41.090Z "},
    {"lastPongReceived": _ABSENT},
    {"lastPongReceived": ""},
    {"lastPongReceived": None},
    {"lastHeartbeat": _ABSENT},
    {"userId": ""}, {"userId": 7}, {"userId": _ABSENT},
    {"lastHeartbeat": True}, {"lastHeartbeat": ["x"]},
], ids=repr)
def test_the_well_formed_path_agrees_with_the_careful_one(fields):
    data = _data(**fields)
    careful = _carefully(KEY, SOCK, data, "string", (b"raw", b""))

    fast = _well_formed(KEY, SOCK, data, (b"raw", b""))

    assert fast is None or fast == careful  # None: the careful path reads it


@pytest.mark.parametrize("pong", [ISO, "2026-11-29T10:05:11.004Z", "2026-11-29T10:05:11.004+00:00"])
def test_what_the_signaling_service_writes_takes_the_well_formed_path(pong):
    data = _data(lastPongReceived=pong)

    fast = _well_formed(KEY, SOCK, data, (b"raw", b""))

    assert isinstance(fast, GuestRecord)
    assert fast == _carefully(KEY, SOCK, data, "string", (b"raw", b""))


# -- records and entries: msgspec's decode against json.loads and the careful rules ---------------

def _record(**fields) -> bytes:
    return json.dumps(_data(**fields)).encode()


DEEP_ARRAY = lambda depth: ("[" * depth + "]" * depth).encode()  # noqa: E731
RECORD_TEXT = _record().decode()


@pytest.mark.parametrize("raw", [
    _record(),
    json.dumps(_data(), ensure_ascii=False, indent=2).encode(),
    _record(lastHeartbeat="2026-11-29t10:05:41.090z"),  # msgspec reads lower case; Python 3.11 does not
    _record(lastHeartbeat="2026-11-29T10:05:41.9999999Z"),  # msgspec would round to the next second
    _record(lastHeartbeat="2026-11-29T10:05:41+05"),
    _record(lastHeartbeat="2026-11-29 10:05:41Z"),
    _record(lastHeartbeat="2026-11-29T23:59:60Z"),
    _record(lastHeartbeat="0001-01-01T00:00:00Z"),
    _record(lastHeartbeat=1795946741090),
    _record(lastPongReceived=_ABSENT), _record(lastPongReceived=None), _record(userId=None),
    _record(userId="guest_\u00e9"), _record(userId="guest_\x00"), _record(userId=7),
    _record(userId="g\u2028"), _record(extra={"deep": [[["x"]]]}),
    RECORD_TEXT.replace('"userId"', '"\\u0075serId"').encode(),  # an escaped key is the same key
    RECORD_TEXT.replace("{", '{"userId": "guest_first", ', 1).encode(),  # twice: the last one counts
    RECORD_TEXT.replace("{", '{"userId": 5, ', 1).encode(),
    RECORD_TEXT.replace('"guest_1"', '"guest_1", "userId": 5', 1).encode(),
    RECORD_TEXT.replace('"guest_1"', '"\\ud800"').encode(),  # a lone surrogate, escaped
    RECORD_TEXT.replace('"guest_1"', '"guest_\xed\xa0\x80"').encode(),  # ... and encoded
    RECORD_TEXT.replace("{", '{"n": NaN, "big": 1e999, ', 1).encode(),
    RECORD_TEXT.replace("{", '{"x": "\xff", ', 1).encode(),
    codecs.BOM_UTF8 + _record(),
    _record().decode().encode("utf-16"),
    b"  \n" + _record() + b" \t",
    _record() + b" x", _record() + b"\x00", _record()[:-1], b"[" + _record() + b"]", b'"text"', b"null",
    b'{"x": ' + DEEP_ARRAY(500) + b", " + _record()[1:],
    b'{"x": ' + DEEP_ARRAY(990) + b", " + _record()[1:],
    b'{"x": ' + DEEP_ARRAY(5000) + b", " + _record()[1:],
], ids=repr)
def test_a_record_msgspec_decodes_is_read_as_json_loads_and_the_rules_read_it(raw):
    assert parse_json_record(KEY, SOCK, raw) == _parse_json_carefully(KEY, SOCK, raw)


ENTRIES = [
    b'{"userId": "guest_1", "status": "online", "socketId": "s1", "isGuest": true}',
    b'{"socketId": "s1", "isGuest": false}', b'{"socketId": "s1", "isGuest": "true"}',
    b'{"socketId": "s1", "isGuest": 1}', b'{"socketId": "s1", "isGuest": null}',
    b'{"socketId": "", "isGuest": true}', b'{"socketId": 5, "isGuest": true}',
    b'{"socketId": "\\ud800", "isGuest": true}', b'{"socketId": "s\xed\xa0\x80", "isGuest": true}',
    b'{"socketId": "s1", "socketId": "s2"}', b'{"socketId": "s1", "socketId": null}',
    b'{"socketId": "s1"} x', b"[1]", b"online", b"", b"\xff", codecs.BOM_UTF8 + b'{"socketId": "s1"}',
    b'{"x": ' + DEEP_ARRAY(5000) + b', "socketId": "s1"}',
]


@pytest.mark.parametrize("raw", ENTRIES, ids=repr)
@pytest.mark.parametrize("user_id", ["guest_1", "user_1"])
def test_an_entry_msgspec_decodes_is_read_as_json_loads_and_the_rules_read_it(raw, user_id):
    assert parse_online_entry(user_id, raw, "guest_") == _parse_entry_carefully(user_id, raw, "guest_")


@pytest.mark.parametrize("connection", ["guest_connection:", "gäst:", "", "\udcff:"])
@pytest.mark.parametrize("prefix", ["guest_", "gäst_", ""])
def test_a_page_sorted_after_the_records_reads_each_entry_as_parse_online_entry(prefix, connection):
    names = [b"guest_1", b"user_1", "gäst_1".encode(), b"g\xe4st_1", b"guest_\xff", b"", b"..", b"\xff"]
    page = [(name, raw) for name in names for raw in ENTRIES]

    sorted_page = online_sockets(page, prefix, connection)

    parsed = [(name, raw, parse_online_entry(decode_name(name), raw, prefix)) for name, raw in page]
    assert sorted_page.registered == sum(not entry.is_guest for _, _, entry in parsed)
    assert sorted_page.socketless == sum(entry.is_guest and not entry.socket_id for _, _, entry in parsed)
    # Each with the key its socket's record has in Redis, as SCAN would give it.
    assert sorted_page.named == [(name, raw, encode_name(connection + entry.socket_id)) for name, raw, entry in parsed
                                 if entry.is_guest and entry.socket_id]


@pytest.mark.parametrize("text, seconds", [
    ("20261129", 20261129.0),  # an epoch number, as before ISO was tried first
    ("2026-11-29", 1795910400.0),
    ("1.0e-5", 1e-05),
    ("+1.e-5", 1e-05),
])
def test_iso_first_leaves_numbers_numbers(text, seconds):
    assert parse_timestamp(text) == pytest.approx(seconds)


# -- judging --------------------------------------------------------------------------------------

@pytest.mark.parametrize("policy", [Policy(180, 60, 3, 5), Policy(0.5, 0.1, 3, 0), Policy(30, 0, 1, 2)])
@pytest.mark.parametrize("pong_age", [-30, 0, 4.999999, 65, 184.999999, 185, 0.3, 1e6])
def test_judge_counts_missed_pings_as_missed_pings_does(policy, pong_age):
    now = 1_800_000_000.0
    assert judge(now, now - pong_age, now, policy).missed_pings == missed_pings(now - pong_age, now, policy)


def test_policy_thresholds_are_worked_out_not_compared():
    policy = Policy(180, 60, 3, 5)

    assert (policy.heartbeat_limit_us, policy.ping_interval_us) == (185_000_000, 60_000_000)
    assert policy == Policy(180.0, 60.0, 3, 5.0)
    assert (policy.heartbeat_future_us, policy.pong_future_us) == (-300_000_000, -305_000_000)
    assert repr(policy) == ("Policy(connection_timeout_s=180, ping_interval_s=60, max_missed_pings=3, "
                            "clock_skew_s=5, max_future_s=300.0)")


# -- intents ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("intent", [
    guest_intent("guest_1", "sock1", reasons.HEARTBEAT_TIMEOUT, 1.8e9 + 0.123456, True, ["auth", "mongo"]),
    guest_intent("guest_é\"x", None, reasons.ORPHAN, 1.8e9, False, []),
    purge_intent(reasons.STARTUP_PURGE, 1.8e9, [intents.AUTH_ALL, intents.USERS_ALL]),
    Intent("guest:guest_2", reasons.PING_TIMEOUT, 1.8e9, ["auth"], "guest_2", "s2", attempts=3,
           last_error="auth: 503", errors={"mongo": "AutoReconnect", "auth": "503 ☃"}),
    Intent("guest:g\x00\n\t\u2028😀", reasons.ORPHAN, 1.8e9, ["auth"], "g\x00\n\t\u2028😀", "s/\\\"",
           attempts=1, last_error="timeout"),
    Intent("guest:g", reasons.ORPHAN, 1800000000, ["auth"], "g"),  # an int time: the encoder's way
    Intent("guest:g", reasons.ORPHAN, 1e-7, [], "g", attempts=True),  # bool: the encoder's way
], ids=["fresh", "odd id, no socket", "purge", "retried", "control and non-ASCII text", "int time",
        "bool attempts"])
def test_intent_json_is_asdict_sorted_compact(intent):
    """SETTLE compares intents byte for byte: the hand-built JSON must be asdict's, field for field."""
    assert intent.to_json() == json.dumps(asdict(intent), separators=(",", ":"), sort_keys=True)
    assert Intent.from_json(intent.to_json()) == intent


@pytest.mark.parametrize("raw, problem", [
    (b"[" * 100_000, "nested too deeply"),
    (b'{"id": "guest:g", "reason": "orphan", "created": 1, "steps": [], "user_id": "g", "later": 1}', None),
    ('{"id": "purge", "reason": "startup_purge", "created": 1, "steps": ["auth_all"]}', None),
    (b'{"id": "guest:g"}', "missing"),
    (b"not json", "Expecting value"),
])
def test_intent_from_json_reads_or_says_why_not(raw, problem):
    if problem is None:
        assert Intent.from_json(raw).id in ("guest:g", "purge")  # unknown fields of a later version dropped
    else:
        with pytest.raises(ValueError, match=problem):
            Intent.from_json(raw)
