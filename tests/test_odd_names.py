"""Names that are no UTF-8 and text with lone surrogates (docs/design.md, the data read: whatever is in Redis, a sweep
never crashes on it). A name read from Redis is removed as exactly the bytes it was read as; a
userId or socketId inside JSON that holds a lone surrogate reads as absent."""

import json
import os
import subprocess
import sys

import pytest
import redis
from redis.connection import Encoder, HiredisRespSerializer, PythonRespSerializer

from reaper.core import names
from reaper.app.purge import purge
from reaper.store.packer import PACKER
from reaper.signaling.servers import SignalingCluster
from support.gates import cleared, permit
from support.guests import CONN, ONLINE, record
from support.intents import all_stored, assert_intents_consistent
from support.keys import KEYS, keys_of

cluster_too = pytest.mark.cluster_too  # the same scenarios on a Redis Cluster

STALE_AGE = 3600.0
ODD_SOCKET = b"\xffsock"  # a socket id (the end of a key name) that is no UTF-8
ODD_GUEST = b"guest_\xff2"  # a users:online field that is no UTF-8, with the guest prefix
ODD_MEMBER = b"member_\xfe3"  # a registered user's field that is no UTF-8
LONE = "\\ud800"  # JSON text for a lone surrogate


def _json(data: dict) -> bytes:
    return json.dumps(data).encode()


def _raw_record(socket_id: str, user_id: str, age: float, world) -> bytes:
    """A record whose userId is JSON text as given (escapes kept as written)."""
    data = json.dumps(record(socket_id, "guest_x", world.now - age))
    return data.replace('"guest_x"', f'"{user_id}"').encode()


# -- names.py --------------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [b"guest_1", b"\xff", b"a\x80b\xfe", "é✓".encode(), b"\xed\xa0\x80",
                                 bytes(range(256))])
def test_a_decoded_name_encodes_back_to_its_bytes(raw):
    assert names.encode_name(names.decode_name(raw)) == raw


@pytest.mark.parametrize("text, expected", [("guest_1", True), ("é✓", True), ("\ud800", False),
                                            (names.decode_name(b"\xff"), False), ("", True)])
def test_is_text(text, expected):
    assert names.is_text(text) is expected


@cluster_too
def test_reapers_client_sends_a_decoded_name_as_its_bytes(ctx_factory, r):
    ctx = ctx_factory()
    name = names.decode_name(KEYS.connection_prefix.encode() + b"\xff\xfe")

    ctx.client.set(name, b"v")
    ctx.client.hset(ONLINE, names.decode_name(ODD_GUEST), b"w")

    assert r.get(KEYS.connection_prefix.encode() + b"\xff\xfe") == b"v"
    assert r.hget(ONLINE, ODD_GUEST) == b"w"


# -- a sweep, and the cascades it leaves -----------------------------------------------------

@cluster_too
def test_names_that_are_no_utf8_are_reaped_as_read_and_nothing_else(ctx_factory, world, r,
                                                                    auth_service, users):
    r.set(CONN.encode() + ODD_SOCKET, _json(record("x", "guest_1", world.now - STALE_AGE)))
    r.hset(ONLINE, ODD_GUEST, _json({"socketId": "gone", "isGuest": True}))  # an orphan
    r.hset(ONLINE, ODD_MEMBER, _json({"socketId": "gone", "isGuest": False}))
    r.set(CONN.encode() + b"\xfelive", _json(record("y", "guest_4", world.now - 5)))
    world.entry("guest_4", None)  # socketless, and its user has a live record: kept
    users.insert_many([{"userId": "guest_1", "isGuest": True}, {"userId": "guest_4", "isGuest": True}])
    ctx = ctx_factory()

    report = ctx.sweep()

    assert (report.stale["heartbeat_timeout"], report.orphans, report.skipped_live) == (1, 1, 0)
    assert r.exists(CONN.encode() + ODD_SOCKET) == 0
    assert r.exists(CONN.encode() + b"\xfelive") == 1
    assert set(r.hkeys(ONLINE)) == {ODD_MEMBER, b"guest_4"}
    assert set(r.hkeys(keys_of(r).intents)) == {b"guest:guest_1", b"guest:" + ODD_GUEST}
    assert all_stored(r)["guest:guest_1"]["socket_id"] == names.decode_name(ODD_SOCKET)
    assert_intents_consistent(r)

    drained = ctx.drain()

    assert (drained.completed, drained.dead, drained.retrying) == (2, 0, 0)
    assert all_stored(r) == {}
    assert sorted(q.path for q in auth_service.calls("DELETE")) == [
        "/auth/guest/guest_%FF2", "/auth/guest/guest_1"]
    assert [d["userId"] for d in users.find()] == ["guest_4"]  # the odd id matches no document


@cluster_too
def test_a_userid_with_a_lone_surrogate_is_malformed_and_cascades_nothing(ctx_factory, world, r, logs):
    r.set(CONN + "s1", _raw_record("s1", f"guest_{LONE}", STALE_AGE, world))

    report = ctx_factory().sweep()

    assert (report.malformed, report.quarantined, report.reaped) == (1, 1, {})
    assert r.exists(keys_of(r).quarantine(CONN + "s1")) == 1
    assert all_stored(r) == {}
    assert any("lone surrogate" in message for level, message in logs if level == "WARNING")


@cluster_too
def test_a_socketid_with_a_lone_surrogate_reads_as_no_socket(ctx_factory, world, r):
    r.hset(ONLINE, "guest_5", f'{{"socketId":"{LONE}","isGuest":true}}')  # nobody's: an orphan
    r.hset(ONLINE, "guest_6", f'{{"socketId":"{LONE}","isGuest":true}}')
    world.guest(6, age=5, entry=False)  # guest_6 has a live record on sock6

    report = ctx_factory().sweep()

    assert report.orphans == 1
    assert set(r.hkeys(ONLINE)) == {b"guest_6"}
    assert set(all_stored(r)) == {"guest:guest_5"}


@cluster_too
def test_the_purge_removes_odd_names_and_keeps_registered_ones(ctx_factory, r):
    r.set(CONN.encode() + ODD_SOCKET, b"{}")
    r.set(KEYS.session_prefix.encode() + b"\xff", b"token")
    r.hset(ONLINE, ODD_GUEST, b"not json")
    r.hset(ONLINE, ODD_MEMBER, _json({"isGuest": False}))
    ctx = ctx_factory()

    report = purge(ctx)
    ctx.drain()

    assert (report.connections, report.sessions, report.online_entries) == (1, 1, 1)
    assert r.hkeys(ONLINE) == [ODD_MEMBER]
    assert r.exists(CONN.encode() + ODD_SOCKET, KEYS.session_prefix.encode() + b"\xff") == 0


# -- the signaling tier and the command line -------------------------------------------------

def test_socketio_is_never_told_about_an_odd_name(ctx_factory, r):
    ctx = ctx_factory(notify__enabled=True)
    tier = SignalingCluster(ctx.client, ctx.config.notify)
    listener = r.pubsub()
    listener.subscribe(tier.channels.request, tier.channels.broadcast)
    odd = names.decode_name(ODD_SOCKET)
    try:
        confirmed = [listener.get_message(timeout=5) for _ in range(2)]
        assert [m["type"] for m in confirmed] == ["subscribe", "subscribe"]
        assert tier.fence(permit("fence", [odd])) == 0  # nothing published
        assert tier.tell_many([(cleared(names.decode_name(ODD_GUEST)), "orphan")]) == 0
        assert tier.fence(permit("fence", [odd, "sock1"])) == 1  # the other one still goes, to our listener
    finally:
        listener.close()


def test_dead_letters_list_shows_an_odd_id_escaped(redis_env, r, tmp_path):
    odd = names.decode_name(ODD_GUEST)
    r.lpush(keys_of(r).dead, json.dumps({"id": f"guest:{odd}", "user_id": odd, "reason": "orphan",
                                         "steps": ["auth"], "last_error": "HTTP 400"}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("REAPER_")}
    env.update({**redis_env, "PYTHONIOENCODING": "utf-8"})

    shown = subprocess.run([sys.executable, "-m", "reaper", "dead-letters", "list"], env=env,
                           cwd=tmp_path, capture_output=True, timeout=60)

    assert shown.returncode == 0, shown.stderr.decode(errors="replace")
    assert b"guest:guest_\\udcff2" in shown.stdout


def test_redis_py_alone_would_refuse_such_a_name(r, redis_server):
    """Why store/packer.py exists: hiredis's packer, redis-py's default here, sends strict UTF-8 only."""
    plain = redis.Redis(port=redis_server.port)
    try:
        with pytest.raises(UnicodeEncodeError):
            plain.set(names.decode_name(b"\xff"), b"v")
    finally:
        plain.close()


# Commands as redis-py hands them to the packer: names of one or several words, every argument
# type it passes on, names read as no UTF-8, and values it refuses.
PACKED = [
    ("EVALSHA", "a" * 40, 2, "guest_connection:s1", b"raw", 1.8e9, 86400, "delete", "\u00e9t\u00e9"),
    ("MGET", *[f"guest_connection:sk{i:010d}_AAAB" for i in range(1000)]),
    ("SET", names.decode_name(b"guest_connection:\xff"), b"v"),
    ("SCRIPT LOAD", "return 1"),
    ("CLIENT SETNAME", "reaper"),
    ("SET", "k", memoryview(b"view")),
    ("SET", "k", bytearray(b"array")),
    ("SET", "k", 0.1 + 0.2),
    ("SET", "k", 1e300),
    ("SET", "k", -7),
    ("SET", "k", ""),
    ("HSET", "k", "..", "cleanup-all", "a\x00b", "x" * 7000),
]


@pytest.mark.parametrize("args", PACKED, ids=lambda a: a[0] + str(len(a)))
def test_the_packer_sends_what_redis_py_would_and_names_as_read(args):
    exact = PythonRespSerializer(6000, Encoder("utf-8", "surrogateescape", False).encode)
    try:
        expected = b"".join(HiredisRespSerializer().pack(*args))
    except UnicodeEncodeError:  # hiredis's own refuses a name that is no UTF-8
        expected = b"".join(exact.pack(*args))

    assert b"".join(PACKER.pack(*args)) == expected


@pytest.mark.parametrize("value", [None, True, object()])
def test_the_packer_refuses_what_redis_py_refuses(value):
    with pytest.raises(redis.DataError):
        PACKER.pack("SET", "k", value)
