"""The sweep against a real Redis: who is stale, who is kept (docs/design.md: staleness, the sweep)."""

import json
import time

import pytest

import reaper.store.client
from reaper.core import guest_ids
from support.guests import CONN, ONLINE, record
from sweep_helpers import assert_intents_consistent, intents, reasons_of, with_seams

pytestmark = pytest.mark.cluster_too  # the same scenarios on a Redis Cluster


# Defaults: connection_timeout 180 s, ping_interval 60 s, 3 missed pings, clock_skew 5 s.
# Margins of 0.5 s absorb the few milliseconds between writing the guests and the sweep
# reading TIME (the context is opened and world.now read afresh just before writing).
JUST_LIVE_HB = 180 + 5 - 0.5
JUST_STALE_HB = 180 + 5 + 0.5
JUST_LIVE_PONG = 3 * 60 + 5 - 0.5  # floor((184.5 - 5) / 60) = 2 missed
JUST_STALE_PONG = 3 * 60 + 5 + 0.5  # floor((185.5 - 5) / 60) = 3 missed
# The races below hit the first pass's takes: it takes only what the mass-expiry budget allows
# (default 0: it judges, and a second look takes), so they give it room.
FIRST_PASS_TAKES = dict(safety__mass_reap_per_sweep=100)


# -- live and stale ------------------------------------------------------------------------

@pytest.mark.parametrize("age, pong_age", [
    (0, None),
    (30, 30),
    (JUST_LIVE_HB, None),  # lastPongReceived as old as the heartbeat, still within both limits
    (10, JUST_LIVE_PONG),
])
def test_live_guest_is_never_touched(ctx_factory, world, r, age, pong_age):
    ctx = ctx_factory()
    world.now = reaper.store.client.redis_now(r)
    user, sock = world.guest(1, age=age, pong_age=pong_age)
    before = r.get(CONN + sock)

    report = ctx.sweep()

    assert r.get(CONN + sock) == before
    assert user in world.online()
    assert intents(r) == {}
    assert (report.total, sum(report.stale.values()), sum(report.reaped.values())) == (1, 0, 0)


@pytest.mark.parametrize("age, pong_age, reason", [
    (JUST_STALE_HB, 10, "heartbeat_timeout"),
    (3600, 3600, "heartbeat_timeout"),
    (10, JUST_STALE_PONG, "ping_timeout"),
    (100, 900, "ping_timeout"),
])
def test_stale_guest_is_reaped_with_its_reason(ctx_factory, world, r, age, pong_age, reason):
    ctx = ctx_factory()
    world.now = reaper.store.client.redis_now(r)
    user, sock = world.guest(1, age=age, pong_age=pong_age)

    report = ctx.sweep()

    assert world.records() == set()
    assert user not in world.online()
    assert report.stale == {reason: 1}
    assert report.reaped == {reason: 1}
    [intent] = intents(r).values()
    assert (intent["id"], intent["user_id"], intent["socket_id"]) == (f"guest:{user}", user, sock)
    assert intent["reason"] == reason
    assert intent["steps"] == ["auth", "mongo"]  # the sweep removed the entry and settled "online"
    assert_intents_consistent(r)


def test_writer_clock_behind_redis_within_skew_is_not_stale(ctx_factory, world, r):
    # The writer stamped heartbeat and pong 180 s ago by its own clock, which runs 4 s behind
    # Redis: 184 s by Redis's, 3 missed pings without the skew, 2 with it.
    ctx = ctx_factory()
    world.now = reaper.store.client.redis_now(r)
    written = world.now - 180 - 4.0
    world.write_record("sock1", record("sock1", "guest_1", written, written))
    world.entry("guest_1", "sock1")

    report = ctx.sweep()

    assert world.records() == {"sock1"}
    assert report.stale == {}
    assert "guest_1" in world.online()


def test_reaper_host_clock_never_matters(ctx_factory, world, r, monkeypatch):
    live = world.guest(1, age=10)
    stale = world.guest(2, age=400)
    ctx = ctx_factory()
    for hours_off in (-6, +6):
        monkeypatch.setattr(time, "time", lambda off=hours_off: world.now + off * 3600)
        report = ctx.sweep()
        assert world.records() == {live[1]}
    assert stale[0] not in world.online()
    assert set(reasons_of(r)) == {stale[0]}
    assert report.now == pytest.approx(reaper.store.client.redis_now(r), abs=5)


# -- compare-and-delete --------------------------------------------------------------------

def test_heartbeat_moving_on_between_read_and_delete_keeps_the_guest(ctx_factory, world, r):
    user, sock = world.guest(1, age=400)
    fresh = json.dumps(record(sock, user, world.now))
    ctx = with_seams(ctx_factory(**FIRST_PASS_TAKES), records_loaded=lambda _: r.set(CONN + sock, fresh, ex=180))

    report = ctx.sweep()

    assert report.stale == {"heartbeat_timeout": 1}
    assert report.reaped == {}
    assert report.skipped_live == 1
    assert r.get(CONN + sock) == fresh.encode()
    assert user in world.online()
    assert intents(r) == {}


def test_reconnected_guest_keeps_its_entry(ctx_factory, world, r):
    # Old socket A went silent; the guest came back on socket B, and users:online says B.
    world.write_record("sockA", record("sockA", "guest_1", world.now - 400))
    world.write_record("sockB", record("sockB", "guest_1", world.now - 5))
    world.entry("guest_1", "sockB")

    report = ctx_factory().sweep()

    assert world.records() == {"sockB"}
    assert world.online()["guest_1"]["socketId"] == "sockB"
    assert report.reaped == {"heartbeat_timeout": 1}
    assert report.orphans == 0


# -- registered users ----------------------------------------------------------------------

def test_registered_users_are_never_touched(ctx_factory, world, r):
    world.guest(5, age=400, entry=False)  # a stale guest record on sock5
    world.registered("alice", "sock5")  # names the stale guest's socket
    world.registered("bob", "sock-without-record")
    world.registered("carol")  # no socketId at all
    r.hset(ONLINE, "dave", b"not json {")
    r.hset(ONLINE, "erin", b"[1, 2]")
    before = r.hgetall(ONLINE)

    report = ctx_factory().sweep(force=True)

    assert r.hgetall(ONLINE) == before
    assert report.orphans == 0
    assert report.registered_online == 5
    assert report.reaped == {"heartbeat_timeout": 1}
    assert set(reasons_of(r)) == {"guest_5"}


# -- orphans -------------------------------------------------------------------------------

def test_orphan_whose_socket_has_no_record_is_reaped(ctx_factory, world, r):
    world.entry("guest_7", "sock7")
    world.guest(8, age=10)

    report = ctx_factory().sweep()

    assert set(world.online()) == {"guest_8"}
    assert report.orphans == 1
    assert report.reaped == {"orphan": 1}
    intent = intents(r)["guest:guest_7"]
    assert (intent["reason"], intent["socket_id"]) == ("orphan", "sock7")
    assert intent["steps"] == ["auth", "mongo"]  # the entry went with the script
    assert_intents_consistent(r)


def test_socketless_entry_is_orphan_only_without_a_record_of_its_user(ctx_factory, world, r):
    world.entry("guest_1", None)  # no record anywhere
    world.entry("guest_2", None)
    world.write_record("sockX", record("sockX", "guest_2", world.now - 10))  # live, under another key

    report = ctx_factory().sweep()

    assert set(world.online()) == {"guest_2"}
    assert report.orphans == 1
    assert reasons_of(r) == {"guest_1": "orphan"}
    assert intents(r)["guest:guest_1"]["socket_id"] is None


def test_non_json_guest_entry_is_a_socketless_orphan(ctx_factory, world, r):
    r.hset(ONLINE, "guest_3", b"\xff garbage")
    r.hset(ONLINE, "guest_4", b"garbage")
    world.write_record("sock4", record("sock4", "guest_4", world.now - 10))

    report = ctx_factory().sweep()

    assert set(world.online()) == {"guest_4"}
    assert report.orphans == 1
    assert reasons_of(r) == {"guest_3": "orphan"}


# users:online values of every shape, for the online pass. On a single Redis a script settles
# the plain ones on the server (scripts.ONLINE_PAGE_SCRIPT) and hands back the rest; on a cluster
# the sweep reads them all. Either way the orphans must be exactly those the sweep's own rule
# (parse_online_entry) finds, including where Lua's cjson and Python's json read a value apart.
ODD_ENTRIES = {
    "guest_a": b'{"userId":"guest_a","socketId":"sa","isGuest":true}',
    "guest_b": b'{"socketId":"sb"}',
    "guest_c": b'{"socketId":null,"isGuest":true}',
    "guest_d": b'{"socketId":"","isGuest":true}',
    "guest_e": b'{"socketId":7}',
    "guest_f": b'["sf"]',
    "guest_g": b"garbage",
    "guest_h": b'{"socketId":"sh","n":0x10}',  # cjson reads it, json does not: no socket for the sweep
    "guest_i": b'{"socketId":"\\u0073i"}',  # "si", escaped
    "guest_j": b'{"socketId":"other","socketId":"sj"}',
    "vip_k": b'{"socketId":"sk","isGuest":true}',
    "vip_l": b'{"socketId":"sl","isGuest":true,"n":0x10}',  # a guest only to cjson: never touched
    "member_m": b'{"socketId":"sm","isGuest":false}',
    "member_n": b"garbage",
    "member_o": b'{"isGuest":"true","socketId":"so"}',
}


@pytest.mark.parametrize("with_records", [False, True], ids=["no records", "every socket has its record"])
def test_the_online_pass_finds_the_orphans_the_sweeps_rule_finds(ctx_factory, world, r, with_records):
    from reaper.core.records import parse_online_entry
    for user, value in ODD_ENTRIES.items():
        r.hset(ONLINE, user, value)
        if with_records:  # live records for every socket named, each under its entry's user
            socket = "s" + user[-1]
            world.write_record(socket, record(socket, user, world.now - 10))
    entries = {user: parse_online_entry(user, value, "guest_") for user, value in ODD_ENTRIES.items()}
    expected = {user for user, e in entries.items() if e.is_guest and not with_records}
    cascaded = {user for user in expected if guest_ids.problem(user, "guest_") is None}  # vip_k: no call

    report = ctx_factory().sweep(force=True)

    assert set(reasons_of(r)) == cascaded
    assert set(world.online()) == set(ODD_ENTRIES) - expected
    assert report.orphans == len(expected)
    assert report.registered_online == sum(not e.is_guest for e in entries.values())


def test_guest_id_prefix_is_configurable(ctx_factory, world, r):
    r.hset(ONLINE, "g-1", b"no json")  # a guest by the configured prefix
    r.hset(ONLINE, "guest_1", b"no json")  # with that prefix, not a guest: left alone
    world.entry("member", "sock9", is_guest=True)  # isGuest marks a guest whatever its id

    report = ctx_factory(redis__guest_id_prefix="g-").sweep()

    assert set(world.online()) == {"guest_1"}
    assert report.orphans == 2
    assert reasons_of(r) == {"g-1": "orphan"}  # "member" is no guest id: its entry goes, nothing else
    assert report.not_a_guest_id == 1


def test_orphan_whose_record_appears_before_the_script_is_kept(ctx_factory, world, r):
    world.entry("guest_1", "sock1")

    def record_appears_first(orphans):
        world.write_record("sock1", record("sock1", "guest_1", world.now))  # it just connected

    report = with_seams(ctx_factory(**FIRST_PASS_TAKES), orphans_found=record_appears_first).sweep()

    assert "guest_1" in world.online()
    assert world.records() == {"sock1"}
    assert report.reaped == {}
    assert report.skipped_live == 1
    assert intents(r) == {}


def test_orphan_entry_changed_before_the_script_is_kept(ctx_factory, world, r):
    world.entry("guest_1", "sock1")

    def entry_changes_first(orphans):
        world.entry("guest_1", "sock2")  # reconnected on a new socket meanwhile

    report = with_seams(ctx_factory(**FIRST_PASS_TAKES), orphans_found=entry_changes_first).sweep()

    assert world.online()["guest_1"]["socketId"] == "sock2"
    assert report.reaped == {}
    assert intents(r) == {}


def test_stale_record_takes_its_socketless_entry_along(ctx_factory, world, r):
    world.write_record("sock1", record("sock1", "guest_1", world.now - 400))
    world.entry("guest_1", None)

    report = ctx_factory().sweep()

    assert world.online() == {}
    assert world.records() == set()
    assert report.orphans == 0
    assert report.reaped == {"heartbeat_timeout": 1}


def test_summary_line_is_logged(ctx_factory, world, logs):
    world.guest(1, age=400)
    world.guest(2, age=1)

    ctx_factory().sweep()

    [summary] = logs.at("INFO", "Sweep: scanned=")
    assert "scanned=2 stale=1" in summary and "reaped=1" in summary and "skipped_live=0" in summary
