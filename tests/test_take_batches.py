"""TAKE_GUEST and TAKE_ORPHAN read a batch in one call per kind of read (MGET, HMGET, EXISTS) and
write it in one call per kind of write (reaper/store/scripts.py); they and TAKE_RECORD write
nothing until every guest of the batch is decided, decision records first. Each guest must still
be decided as if the guests of the batch came one call at a time, in order: a key taken earlier
in the batch is gone (SCAN may name a key twice, HSCAN an entry), an entry removed earlier is
absent, and what one guest writes is what a call of its own writes."""

import hashlib
import json
import random

import pytest
import redis

from reaper.store import scripts
from reaper.core.keys import QUARANTINE_TTL_S
from reaper.store.sweep_scripts import GuestOutcome, OrphanTake, RecordTake, TakeGuests, TakeOrphans, TakeRecords
from support.guests import CONN, ONLINE, record
from support.keys import KEYS

PREFIX = "guest_"
DUE = 1.8e9


@pytest.fixture
def two_dbs(r, redis_server):
    """The test Redis's db 0 (``r``) and db 1: the same scenario played two ways, side by side."""
    other = redis.Redis(host=redis_server.host, port=redis_server.port, db=1)
    other.flushdb()
    yield r, other
    other.flushdb()
    other.close()


@pytest.mark.parametrize("seed, scenario_of, take", [
    (14, lambda rng: _scenario(rng), lambda client, guests: _take(client, guests)),
    (15, lambda rng: _orphan_scenario(rng), lambda client, orphans: _take_orphans(client, orphans)),
], ids=["TAKE_GUEST", "TAKE_ORPHAN"])
def test_one_call_decides_as_calls_of_one_guest_each_would(two_dbs, seed, scenario_of, take):
    rng = random.Random(seed)
    for scenario in range(100):
        batch, sequence = two_dbs
        batch.flushdb(), sequence.flushdb()
        guests, writes = scenario_of(rng)
        for client in two_dbs:
            writes(client)

        together = take(batch, guests)
        one_by_one = [answer for guest in guests for answer in take(sequence, [guest])]

        assert together == one_by_one, f"scenario {scenario}"
        assert _contents(batch) == _contents(sequence), f"scenario {scenario}"


def test_a_key_named_twice_in_a_batch_is_taken_once(r):
    raw = _write_guest(r, "s1", "guest_1")
    take = _guest_take("s1", "guest_1", raw, decision='{"n":1}')

    assert _take(r, [take, take]) == [GuestOutcome.TAKEN, GuestOutcome.CHANGED]
    assert not r.exists(CONN + "s1") and not r.hexists(ONLINE, "guest_1")
    assert [fields[b"decision"] for _, fields in r.xrange(KEYS.events)] == [b'{"n":1}']


def test_the_long_way_too_takes_a_key_named_twice_once(r):
    raw = _write_guest(r, "s1", "guest_1")
    take = _guest_take("s1", "guest_1", raw, decision='{"n":1}')
    take.intent_id, take.intent = "guest:guest_1", '{"steps":["auth"]}'

    assert _take_records(r, [take, take]) == [True, False]
    assert not r.exists(CONN + "s1") and r.hkeys(KEYS.intents) == [b"guest:guest_1"]
    assert [fields[b"decision"] for _, fields in r.xrange(KEYS.events)] == [b'{"n":1}']


def test_an_entry_removed_earlier_in_the_batch_is_absent_for_the_guests_after(r):
    """One user on two sockets: the entry names the first; the second finds it gone, as a call of
    its own would, and is taken with nothing left to judge."""
    first, second = _write_guest(r, "s1", "guest_1"), _write_guest(r, "s2", "guest_1")
    r.hset(ONLINE, "guest_1", _entry("guest_1", "s1"))

    answers = _take(r, [_guest_take("s1", "guest_1", first), _guest_take("s2", "guest_1", second)])

    assert answers == [GuestOutcome.TAKEN, GuestOutcome.TAKEN]
    assert not r.exists(CONN + "s1", CONN + "s2") and not r.hexists(ONLINE, "guest_1")


def test_an_entry_naming_a_later_guest_of_the_batch_goes_with_that_guest(r):
    first, second = _write_guest(r, "s1", "guest_1"), _write_guest(r, "s2", "guest_1")
    r.hset(ONLINE, "guest_1", _entry("guest_1", "s2"))

    answers = _take(r, [_guest_take("s1", "guest_1", first), _guest_take("s2", "guest_1", second)])

    assert answers == [GuestOutcome.LEFT_TO_SWEEP, GuestOutcome.TAKEN]
    assert r.exists(CONN + "s1") and not r.exists(CONN + "s2") and not r.hexists(ONLINE, "guest_1")


def test_a_batch_of_hostile_names_and_values_is_decided_guest_by_guest(two_dbs):
    """Names no script should trip on: the same scenario with them, one call and calls of one."""
    batch, sequence = two_dbs
    odd = ["..", "cleanup-all", "guest_\x00nul", "guest_\r\nx", "guest_" + "é" * 50, "guest_" + "x" * 4096]
    takes = []
    for client in two_dbs:
        for n, user in enumerate(odd):
            raw = _write_guest(client, f"s{n}", user, padding="\x7f" * 3000)
            client.hset(ONLINE, user, _entry(user, f"s{n}") if n % 2 else b"\xff\xfe not json")
            if client is batch:
                takes.append(_guest_take(f"s{n}", user, raw, decision=json.dumps({"user": user})))

    together = _take(batch, takes)

    assert together == [answer for take in takes for answer in _take(sequence, [take])]
    assert _contents(batch) == _contents(sequence)
    # taken: the two under the prefix whose entry names their socket ("cleanup-all" has no prefix)
    assert together.count(GuestOutcome.TAKEN) == 2


def test_an_orphan_named_twice_in_a_batch_is_taken_once(r):
    raw = _entry("guest_1", "s1")
    r.hset(ONLINE, "guest_1", raw)
    orphan = OrphanTake("guest_1", raw, CONN + "s1", "guest:guest_1", '{"steps":["auth"]}', '{"n":1}')

    assert _take_orphans(r, [orphan, orphan]) == [True, False]
    assert not r.hexists(ONLINE, "guest_1") and r.hkeys(KEYS.intents) == [b"guest:guest_1"]
    assert r.zrange(KEYS.due, 0, -1) == [b"guest:guest_1"]
    assert [fields[b"decision"] for _, fields in r.xrange(KEYS.events)] == [b'{"n":1}']


@pytest.mark.parametrize("record_type", ["string", "hash", "list"])
def test_among_orphans_whose_records_are_gone_one_whose_record_came_back_is_kept(r, record_type):
    """One EXISTS answers for the batch only when it counts no record at all."""
    orphans = []
    for n in range(5):
        raw = _entry(f"guest_{n}", f"s{n}")
        r.hset(ONLINE, f"guest_{n}", raw)
        orphans.append(OrphanTake(f"guest_{n}", raw, CONN + f"s{n}"))
    {"string": lambda: r.set(CONN + "s3", "{}"), "hash": lambda: r.hset(CONN + "s3", "userId", "guest_3"),
     "list": lambda: r.rpush(CONN + "s3", "x")}[record_type]()

    assert _take_orphans(r, orphans) == [True, True, True, False, True]
    assert set(r.hkeys(ONLINE)) == {b"guest_3"}


@pytest.mark.parametrize("kind", ["TAKE_GUEST", "TAKE_RECORD", "TAKE_ORPHAN"])
def test_an_audit_trail_that_takes_no_more_entries_stops_a_batch_before_anything_is_removed(r, kind):
    """XADD is the one write a stream of the right type can still refuse (it used its last id):
    the decision records go before every other write, so nothing is removed, nothing lost."""
    r.xadd(KEYS.events, {"decision": "{}"}, id="18446744073709551615-18446744073709551615")
    if kind in ("TAKE_GUEST", "TAKE_RECORD"):
        r.rpush(CONN + "s0", "not a record")  # malformed: to quarantine, first in the batch
        raw = _write_guest(r, "s1", "guest_1")
        r.hset(ONLINE, "guest_1", _entry("guest_1", "s1"))
        takes = [RecordTake(CONN + "s0", KEYS.quarantine(CONN + "s0"), True, "list", (b"", b""), "guest:guest_0",
                            '{"steps":["auth"]}', "guest_0", "s0", '{"n":0}'),
                 _guest_take("s1", "guest_1", raw, decision='{"n":1}')]
        take = lambda: _take(r, takes) if kind == "TAKE_GUEST" else _take_records(r, takes)  # noqa: E731
    else:
        entry = _entry("guest_1", "s1")
        r.hset(ONLINE, "guest_1", entry)
        take = lambda: _take_orphans(r, [  # noqa: E731
            OrphanTake("guest_1", entry, CONN + "s1", "guest:guest_1", '{"steps":["auth"]}', '{"n":1}')])
    before = _contents(r)

    with pytest.raises(redis.ResponseError, match="exhausted"):
        take()

    assert _contents(r) == before


# A held-back record's witness is the SHA-1 of the value read (reaper/sweep/budget.py HeldRecord).
WITNESSES = {
    "its digest": lambda raw: hashlib.sha1(raw).hexdigest(),
    "its digest in capitals": lambda raw: hashlib.sha1(raw).hexdigest().upper(),
    "its digest cut short": lambda raw: hashlib.sha1(raw).hexdigest()[:39],
    "another value's digest": lambda raw: hashlib.sha1(raw + b"x").hexdigest(),
    "the value itself": lambda raw: raw,
    "a digest of nothing": lambda raw: hashlib.sha1(b"").hexdigest(),
}
NOW = {
    "as read": lambda r, key, raw: None,
    "one byte longer": lambda r, key, raw: r.set(key, raw + b" "),
    "gone": lambda r, key, raw: r.delete(key),
    "a list": lambda r, key, raw: (r.delete(key), r.rpush(key, raw)),
    "a hash": lambda r, key, raw: (r.delete(key), r.hset(key, "lastHeartbeat", raw)),
}


@pytest.mark.parametrize("script", ["TAKE_GUEST", "TAKE_RECORD", "TAKE_ONE"])
@pytest.mark.parametrize("now", list(NOW))
@pytest.mark.parametrize("witness", list(WITNESSES))
def test_a_record_witnessed_by_a_digest_is_taken_only_while_it_holds_what_was_read(r, script, now, witness):
    raw = _write_guest(r, "s1", "guest_1")
    r.hset(ONLINE, "guest_1", _entry("guest_1", "s1"))
    NOW[now](r, CONN + "s1", raw)
    take = RecordTake(CONN + "s1", KEYS.quarantine(CONN + "s1"), False, "string", (b"", WITNESSES[witness](raw)),
                      user_id="guest_1", socket_id="s1", decision='{"n":1}')
    before = _contents(r)

    taken = {"TAKE_GUEST": lambda: _take(r, [take]) == [GuestOutcome.TAKEN],
             "TAKE_RECORD": lambda: _take_records(r, [take]) == [True],
             "TAKE_ONE": lambda: r.register_script(scripts.TAKE_ONE)(
                 keys=[take.key, take.quarantine], args=["", QUARANTINE_TTL_S, "string", *take.take_one_argv()]) == 1}[script]()

    expected = (now, witness) == ("as read", "its digest")
    assert taken is expected
    if expected:
        assert not r.exists(CONN + "s1")
    else:  # left exactly as it was: no removal, no entry gone, no decision record
        assert _contents(r) == before


# -- scenario -------------------------------------------------------------------------------


def _scenario(rng: random.Random):
    """Takes for 1..30 guests over a few users and sockets, with repeats, records that changed,
    vanished or changed type, malformed keys to quarantine, entries of every shape, and what to
    write before the take (a function of a client, applied to both databases)."""
    sockets = [f"s{n}" for n in range(rng.randint(1, 8))]
    users = [f"guest_{n}" for n in range(rng.randint(1, 4))] + ["registered_1", ""]
    plan, takes = [], []
    for _ in range(rng.randint(1, 30)):
        socket, user = rng.choice(sockets), rng.choice(users)
        raw = json.dumps(record(socket, user or "guest_x", 1.7e9 + rng.randint(0, 3))).encode()
        quarantined = rng.random() < 0.15
        seen = rng.choice(["list", "hash"]) if quarantined else "string"
        intent = rng.random() < 0.5
        takes.append(RecordTake(CONN + socket, KEYS.quarantine(CONN + socket), quarantined, seen,
                                _witness(rng, raw, quarantined), f"guest:{user}" if intent and user else "",
                                json.dumps({"id": user, "steps": ["auth"]}) if intent and user else "",
                                user, socket, json.dumps({"user_id": user}) if rng.random() < 0.7 else ""))
        plan.append((socket, seen, raw, rng.choice(["as read"] * 4 + ["changed", "gone", "other type"])))
    entries = {user: rng.choice([None, "this", "this", "this", "other", "not json", "array"]) for user in users if user}
    socket_of = {user: rng.choice([take.socket_id for take in takes if take.user_id == user] or ["s0"])
                 for user in entries}  # an entry naming one of its user's guests: any of them

    def writes(client):
        for socket, seen, raw, state in plan:
            key = CONN + socket
            if state == "gone" or client.exists(key):
                continue
            if state == "other type" or (seen != "string" and state == "as read"):
                client.rpush(key, "x") if seen == "list" else client.hset(key, "a", "b")
            else:
                client.set(key, raw if state == "as read" else raw + b" ")
        for user, shape in entries.items():
            value = {"this": _entry(user, socket_of[user]), "other": _entry(user, "elsewhere"),
                     "not json": b"{nope", "array": b"[1, 2]", None: None}[shape]
            if value is not None:
                client.hset(ONLINE, user, value)
    return takes, writes


def _witness(rng: random.Random, raw: bytes, quarantined: bool) -> tuple:
    """What the sweep read: nothing but the type (a key to quarantine), the value, or, for a
    record held back for the second look, the value's SHA-1."""
    if quarantined:
        return b"", b""
    return rng.choice([(raw, b""), (b"", hashlib.sha1(raw).hexdigest())])


def _orphan_scenario(rng: random.Random):
    """1..30 orphan entries over a few users, with repeats, entries changed or gone since they
    were read, and records (of any type) that came back for some of their sockets."""
    users = [f"guest_{n}" for n in range(rng.randint(1, 8))]
    orphans, plan = [], {}
    for _ in range(rng.randint(1, 30)):
        user = rng.choice(users)
        socket = rng.choice([None, f"s{rng.randint(0, 5)}"])
        raw = _entry(user, socket or "")
        intent = rng.random() < 0.5
        orphans.append(OrphanTake(user, raw, CONN + socket if socket else None, f"guest:{user}" if intent else "",
                                  json.dumps({"id": user, "steps": ["auth"]}) if intent else "",
                                  json.dumps({"user_id": user}) if rng.random() < 0.7 else ""))
        plan.setdefault(user, (raw, rng.choice(["as read"] * 4 + ["changed", "gone"])))
    records = {f"s{n}": rng.choice([None, None, None, "string", "hash"]) for n in range(6)}

    def writes(client):
        for user, (raw, state) in plan.items():
            if state != "gone":
                client.hset(ONLINE, user, raw if state == "as read" else raw + b" ")
        for socket, kind in records.items():
            if kind == "string":
                client.set(CONN + socket, json.dumps(record(socket, "guest_x", 1.7e9)))
            elif kind == "hash":
                client.hset(CONN + socket, "userId", "guest_x")
    return orphans, writes


def _take_records(client, takes: list[RecordTake]) -> list[bool]:
    return TakeRecords(client, KEYS, 1000).take(DUE, "string", takes)


def _take_orphans(client, orphans: list[OrphanTake]) -> list[bool]:
    return TakeOrphans(client, KEYS, 1000).take_all(DUE, orphans)


def _write_guest(client, socket: str, user: str, **extra) -> bytes:
    raw = json.dumps(record(socket, user, 1.7e9, **extra)).encode()
    client.set(CONN + socket, raw)
    return raw


def _entry(user: str, socket: str) -> bytes:
    return json.dumps({"userId": user, "socketId": socket, "isGuest": True}).encode()


def _guest_take(socket: str, user: str, raw: bytes, decision: str = "") -> RecordTake:
    return RecordTake(CONN + socket, KEYS.quarantine(CONN + socket), False, "string", (raw, b""),
                      user_id=user, socket_id=socket, decision=decision)


def _take(client, takes: list[RecordTake]) -> list[GuestOutcome]:
    return TakeGuests(client, KEYS, PREFIX, 1000).take_all(DUE, "string", [take.guest_row() for take in takes])


def _contents(client) -> dict:
    """Every key's type and value (a stream's entries without their ids; a TTL as set or not)."""
    contents = {}
    for key in client.scan_iter(count=1000):
        kind = client.type(key).decode()
        value = {"string": lambda: client.get(key), "hash": lambda: client.hgetall(key),
                 "list": lambda: client.lrange(key, 0, -1),
                 "zset": lambda: client.zrange(key, 0, -1, withscores=True),
                 "stream": lambda: [fields for _, fields in client.xrange(key)]}[kind]()
        contents[key] = (kind, value, client.ttl(key) > 0)
    return contents
