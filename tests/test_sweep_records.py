"""The sweep and what records look like: malformed ones, timestamp forms, hash records (docs/design.md: the data read, the sweep)."""

import json
from datetime import datetime, timedelta, timezone

import pytest

from support.guests import CONN, World, record
from sweep_helpers import assert_intents_consistent, intents, keys_of, reasons_of, with_seams

pytestmark = pytest.mark.cluster_too  # the same scenarios on a Redis Cluster


DAY = 24 * 3600
KEY = CONN + "sock1"


def _without(data: dict, *names: str) -> dict:
    return {k: v for k, v in data.items() if k not in names}


def _fresh(world) -> dict:
    return record("sock1", "guest_1", world.now - 10)


# Each writer puts one malformed record at KEY; True when its userId can be read.
MALFORMED = {
    "bad JSON": (lambda r, w: r.set(KEY, b'{"userId": "guest_1", '), False),
    "undecodable bytes": (lambda r, w: r.set(KEY, b"\xff\xfe\x00"), False),
    "JSON array": (lambda r, w: r.set(KEY, json.dumps([_fresh(w)])), False),
    "JSON number": (lambda r, w: r.set(KEY, b"42"), False),
    "JSON null": (lambda r, w: r.set(KEY, b"null"), False),
    "empty string": (lambda r, w: r.set(KEY, b""), False),
    "missing userId": (lambda r, w: r.set(KEY, json.dumps(_without(_fresh(w), "userId"))), False),
    "userId not a string": (lambda r, w: r.set(KEY, json.dumps({**_fresh(w), "userId": 7})), False),
    "missing lastHeartbeat": (
        lambda r, w: r.set(KEY, json.dumps(_without(_fresh(w), "lastHeartbeat"))), True),
    "unreadable lastHeartbeat": (
        lambda r, w: r.set(KEY, json.dumps({**_fresh(w), "lastHeartbeat": "yesterday"})), True),
    "lastHeartbeat a boolean": (
        lambda r, w: r.set(KEY, json.dumps({**_fresh(w), "lastHeartbeat": True})), True),
    "unreadable lastPongReceived": (
        lambda r, w: r.set(KEY, json.dumps({**_fresh(w), "lastPongReceived": "2026-13-45"})), True),
    "list": (lambda r, w: r.rpush(KEY, json.dumps(_fresh(w))), False),
    "set": (lambda r, w: r.sadd(KEY, "guest_1"), False),
    "zset": (lambda r, w: r.zadd(KEY, {"guest_1": 1}), False),
    "hash in json mode": (lambda r, w: World(r, "hash").write_record("sock1", _fresh(w)), False),
}


def test_unreadable_record_without_an_entry_cascades_nothing(ctx_factory, world, r):
    r.set(KEY, b"{not json")
    world.guest(2, age=5)

    report = ctx_factory().sweep()

    assert report.quarantined == 1
    assert intents(r) == {}
    assert report.reaped == {}
    assert set(world.online()) == {"guest_2"}


@pytest.mark.parametrize("kind", MALFORMED)
def test_malformed_record_is_counted_quarantined_and_warned_once(ctx_factory, world, r, logs, kind):
    write, user_readable = MALFORMED[kind]
    write(r, world)
    world.entry("guest_1", "sock1")
    redis_type, dumped = r.type(KEY), r.dump(KEY)
    ctx = ctx_factory()

    report = ctx.sweep()

    assert report.malformed == 1 and report.quarantined == 1
    assert not r.exists(KEY)
    quarantined = keys_of(r).quarantine(KEY)
    assert (r.type(quarantined), r.dump(quarantined)) == (redis_type, dumped)
    assert DAY - 60 <= r.ttl(quarantined) <= DAY
    assert len(logs.at("WARNING", KEY)) == 1
    # Without a readable userId the record names nobody; the entry naming its socket is an
    # orphan once the record is quarantined, in the same sweep.
    reason = "malformed" if user_readable else "orphan"
    assert reasons_of(r) == {"guest_1": reason}
    assert report.reaped == {reason: 1}
    assert "guest_1" not in world.online()
    assert_intents_consistent(r)

    again = ctx.sweep()  # the quarantined record is out of the key space: not warned again

    assert again.malformed == 0
    assert len(logs.at("WARNING", KEY)) == 1


def _move(r, key: str, to: str) -> None:
    """RENAME, also across the slots of a cluster."""
    r.restore(to, max(r.pttl(key), 0), r.dump(key))
    r.delete(key)


def test_malformed_records_among_good_ones_do_not_stop_the_sweep(ctx_factory, world, r):
    for kind, (write, _) in MALFORMED.items():
        r.delete(KEY)
        write(r, world)
        _move(r, KEY, CONN + "bad-" + kind.replace(" ", "-"))
    live = world.guest(1, age=10)
    stale = world.guest(2, age=400)

    report = ctx_factory().sweep()

    assert report.malformed == len(MALFORMED)
    assert report.quarantined == len(MALFORMED)
    assert world.records() == {live[1]}
    assert report.reaped["heartbeat_timeout"] == 1
    assert stale[0] not in world.online()
    readable = sum(user_readable for _, user_readable in MALFORMED.values())
    assert report.reaped["malformed"] == readable
    assert len(list(r.scan_iter(match=keys_of(r).quarantine_pattern))) == len(MALFORMED)


def test_quarantine_keeps_the_record_a_writer_rewrote(ctx_factory, world, r):
    r.set(KEY, b"not json")
    fixed = json.dumps(record("sock1", "guest_1", world.now))

    report = with_seams(ctx_factory(), records_loaded=lambda _: r.set(KEY, fixed)).sweep()

    assert r.get(KEY) == fixed.encode()
    assert report.quarantined == 0
    assert not r.exists(keys_of(r).quarantine(KEY))


# -- timestamp forms ------------------------------------------------------------------------

def _epoch_s(t):
    return int(t)


def _epoch_ms(t):
    return int(t * 1000)


def _epoch_s_text(t):
    return f"{t:.3f}"


def _iso_plus_two(t):
    return datetime.fromtimestamp(t, tz=timezone(timedelta(hours=2))).isoformat(timespec="milliseconds")


def _iso_minus_five_thirty(t):
    return datetime.fromtimestamp(t, tz=timezone(-timedelta(hours=5, minutes=30))).isoformat()


def _iso_plus_zero(t):
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat()  # "+00:00" rather than "Z"


@pytest.mark.parametrize("form", [_epoch_s, _epoch_ms, _epoch_s_text, _iso_plus_two,
                                  _iso_minus_five_thirty, _iso_plus_zero])
def test_timestamp_forms_are_judged_by_their_moment(ctx_factory, world, r, form):
    world.write_record("live", record("live", "guest_1", form(world.now - 10)))
    world.write_record("dead", record("dead", "guest_2", form(world.now - 400)))
    world.write_record("deaf", record("deaf", "guest_3", form(world.now - 10), form(world.now - 400)))

    report = ctx_factory().sweep()

    assert world.records() == {"live"}
    assert report.malformed == 0
    assert reasons_of(r) == {"guest_2": "heartbeat_timeout", "guest_3": "ping_timeout"}


# -- record_format = "hash" -----------------------------------------------------------------

@pytest.fixture
def hash_world(r):
    return World(r, record_format="hash")


def test_hash_records_live_kept_stale_reaped(ctx_factory, hash_world, r):
    live = hash_world.guest(1, age=10)
    stale = hash_world.guest(2, age=400)
    deaf = hash_world.guest(3, age=10, pong_age=400)

    report = ctx_factory(redis__record_format="hash").sweep()

    assert hash_world.records() == {live[1]}
    assert r.type(CONN + live[1]) == b"hash"
    assert set(hash_world.online()) == {live[0]}
    assert report.reaped == {"heartbeat_timeout": 1, "ping_timeout": 1}
    assert reasons_of(r) == {stale[0]: "heartbeat_timeout", deaf[0]: "ping_timeout"}
    assert report.malformed == 0


@pytest.mark.parametrize("write, user_readable", [
    (lambda r, w: w.write_record("sock1", _without(_fresh(w), "userId")), False),
    (lambda r, w: r.hset(KEY, mapping={"userId": "guest_1", "lastHeartbeat": "soon"}), True),
    (lambda r, w: r.hset(KEY, mapping={"userId": "guest_1", "name": "only a name"}), True),
    (lambda r, w: r.set(KEY, json.dumps(_fresh(w))), False),  # a string in hash mode
    (lambda r, w: r.rpush(KEY, "x"), False),
], ids=["no userId", "unreadable lastHeartbeat", "no timestamps", "string", "list"])
def test_malformed_hash_records_are_quarantined(ctx_factory, hash_world, r, logs, write, user_readable):
    write(r, hash_world)
    dumped = r.dump(KEY)

    report = ctx_factory(redis__record_format="hash").sweep()

    assert report.malformed == 1 and report.quarantined == 1
    assert not r.exists(KEY)
    assert r.dump(keys_of(r).quarantine(KEY)) == dumped
    assert r.ttl(keys_of(r).quarantine(KEY)) > DAY - 60
    assert len(logs.at("WARNING", KEY)) == 1
    assert reasons_of(r) == ({"guest_1": "malformed"} if user_readable else {})


@pytest.mark.parametrize("field", ["lastHeartbeat", "lastPongReceived"])
def test_hash_compare_and_delete_keeps_a_hash_that_moved_on(ctx_factory, hash_world, r, field):
    user, sock = hash_world.guest(1, age=400, pong_age=400)

    def heartbeat(loaded):
        r.hset(CONN + sock, field, datetime.now(timezone.utc).isoformat())

    report = with_seams(ctx_factory(redis__record_format="hash"), records_loaded=heartbeat).sweep()

    assert hash_world.records() == {sock}
    assert user in hash_world.online()
    assert report.skipped_live == 1
    assert report.reaped == {}
    assert intents(r) == {}
