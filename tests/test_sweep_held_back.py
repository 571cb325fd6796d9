"""The second look (docs/design.md, the cascade "Bounded effect"): what the budget held back in the first pass is
taken, once the totals show no mass expiry, by name and without a second full pass; every take
still compares against what was read, so a guest that came back meanwhile is kept."""

import hashlib

import pytest

import reaper.sweep.budget
from reaper.store import cluster
from reaper.store import scripts
from reaper.core import reasons
from reaper.core.records import GuestRecord, Malformed, OnlineEntry
from reaper.core.staleness import Verdict
from reaper.sweep.budget import HeldBack, HeldRecords
from support.guests import World, record
from support.keys import KEYS
from sweep_helpers import (add_guests, after_each_load, assert_deletable_intents, assert_intents_consistent,
                           intents, reasons_of, with_seams)

pytestmark = pytest.mark.cluster_too  # the same scenarios on a Redis Cluster

GUARD = dict(safety__mass_expiry_min=50, safety__max_reap_fraction=0.5, safety__mass_reap_per_sweep=10)


@pytest.fixture(params=["values", "digests"])
def kept(request, monkeypatch) -> str:
    """What a held stale record keeps as its take's witness: the value read, or (past the
    values' allowance, here from the first) the value's SHA-1."""
    if request.param == "digests":
        monkeypatch.setattr(reaper.sweep.budget, "MAX_HELD_VALUES_BYTES", 0)
    return request.param


def _commands(client) -> list[str]:
    """Names of the commands ``client`` sends from now on, from any thread, pipelines aside
    (on a cluster, also those sent to each primary's own client: SCAN)."""
    sent = []
    for each in [client, *(cluster.primaries(client) if cluster.is_cluster(client) else [])]:
        _record(each, sent)
    return sent


def _record(client, sent: list[str]) -> None:
    original = client.execute_command

    def recording(*args, **kwargs):
        reply = original(*args, **kwargs)  # counted once answered: an EVALSHA may first meet NOSCRIPT
        name = str(args[0]).upper()
        sent.append("HSCAN" if name == "EVALSHA" and args[1] == _ONLINE_PAGE_SHA else name)  # HSCAN in a script
        return reply

    client.execute_command = recording


_ONLINE_PAGE_SHA = hashlib.sha1(scripts.ONLINE_PAGE_SCRIPT.encode()).hexdigest()


def _scans(client, passes: int) -> int:
    """SCANs in ``passes`` passes over a small database: one per pass and primary."""
    return passes * (len(cluster.primaries(client)) if cluster.is_cluster(client) else 1)


def test_held_back_guests_are_taken_without_a_second_scan(ctx_factory, world, r):
    add_guests(world, live=40, stale=25, orphans=3, socketless=2)  # 30 of 70 dead: no mass expiry
    ctx = ctx_factory(**GUARD)
    sent = _commands(ctx.client)

    report = ctx.sweep()

    assert not report.mass_expiry and report.deferred == 0
    assert report.reaped == {"heartbeat_timeout": 25, "orphan": 5}
    assert len(world.records()) == 40 and len(world.online()) == 40
    assert_deletable_intents(r, 30)
    assert sent.count("SCAN") == _scans(r, 1) and sent.count("HSCAN") == 1  # one pass, a small database


def test_beyond_max_held_the_second_look_is_a_full_pass(ctx_factory, world, r, monkeypatch, logs):
    monkeypatch.setattr(reaper.sweep.budget, "MAX_HELD", 5)
    add_guests(world, live=40, stale=25, orphans=3, socketless=2)
    ctx = ctx_factory(**GUARD)
    sent = _commands(ctx.client)

    report = ctx.sweep()

    assert report.reaped == {"heartbeat_timeout": 25, "orphan": 5}
    assert len(world.records()) == 40 and len(world.online()) == 40
    assert_deletable_intents(r, 30)
    assert sent.count("SCAN") == _scans(r, 2) and sent.count("HSCAN") == 2
    assert logs.at("INFO", "more than 5 held back; a second full pass")


@pytest.mark.parametrize("record_format, as_read", [("json", True), ("hash", False)])
def test_held_back_stale_records_are_taken_as_read_without_reading_them_again(ctx_factory, r, record_format,
                                                                              as_read, kept):
    """A stale string record is held with its timestamps and the value read (or its SHA-1), and
    taken against it; a hash (rare) is held by name and read again."""
    world = World(r, record_format)
    add_guests(world, live=40, stale=25)
    seen, fetched_in_second_look = [], []

    def second_look(held):
        seen.append(held)

    def fetched(names):
        if seen:
            fetched_in_second_look.extend(names)

    report = with_seams(ctx_factory(redis__record_format=record_format, **GUARD), before_second_look=second_look,
                        before_page_fetched=fetched).sweep()

    [held] = seen
    assert (len(held.stale), len(held.records)) == ((15, 0) if as_read else (0, 15))
    if kept == "digests":  # the values are not kept: 20 bytes each instead
        assert held.stale.values == [] and len(held.stale.digests) == 20 * len(held.stale)
    else:
        assert len(held.stale.values) == len(held.stale) and held.stale.digests == b""
    assert len(fetched_in_second_look) == (0 if as_read else 15)
    assert report.reaped == {"heartbeat_timeout": 25} and report.skipped_live == 0
    assert len(world.records()) == 40 and len(world.online()) == 40
    assert_deletable_intents(r, 25)


@pytest.mark.parametrize("becomes", ["a list", "a hash", "gone", "the same, written again"])
def test_a_held_back_record_is_compared_with_what_was_read_when_taken(ctx_factory, world, r, becomes, kept):
    add_guests(world, live=40, stale=25)
    changed = []

    def change_first(held):
        key = held.stale.keys[0]
        raw = r.get(key)
        {"a list": lambda: (r.delete(key), r.rpush(key, raw)),
         "a hash": lambda: (r.delete(key), r.hset(key, "lastHeartbeat", raw)),
         "gone": lambda: r.delete(key),
         "the same, written again": lambda: r.set(key, raw)}[becomes]()
        changed.append(key)

    report = with_seams(ctx_factory(**GUARD), before_second_look=change_first).sweep()

    [key] = changed
    if becomes == "the same, written again":  # still what was read, still stale: taken
        assert report.reaped == {"heartbeat_timeout": 25} and not r.exists(key)
    else:
        assert report.reaped == {"heartbeat_timeout": 24} and report.skipped_live == 1
        assert r.type(key).decode() == {"a list": "list", "a hash": "hash", "gone": "none"}[becomes]
    assert report.quarantined == 0
    assert_intents_consistent(r)


def test_held_back_records_kept_as_values_then_as_digests_are_each_compared_with_what_was_read(
        ctx_factory, world, r, monkeypatch):
    """The values' allowance spent part way: the first held records keep their values, the rest
    digests. A record of each kind rewritten before the second look is kept; the others are taken."""
    monkeypatch.setattr(reaper.sweep.budget, "MAX_HELD_VALUES_BYTES", 1000)  # two or three records
    add_guests(world, live=40, stale=25)
    rewritten = []

    def rewrite_one_of_each(held):
        assert held.stale.values and held.stale.digests
        for key in (held.stale.keys[0], held.stale.keys[-1]):
            r.set(key, r.get(key) + b" ")  # one byte more: no longer what was read
            rewritten.append(key)

    report = with_seams(ctx_factory(**GUARD), before_second_look=rewrite_one_of_each).sweep()

    assert report.reaped == {"heartbeat_timeout": 23} and report.skipped_live == 2
    assert all(r.exists(key) for key in rewritten)
    assert len(world.records()) == 42
    assert_intents_consistent(r)


def test_a_held_back_guest_that_came_back_is_kept(ctx_factory, world, r, kept):
    add_guests(world, live=40, stale=25)

    def guest_beats_first(held):
        socket_id = held.stale.keys[0][len("guest_connection:"):]
        user_id = "guest_" + socket_id[len("sock"):]
        world.write_record(socket_id, record(socket_id, user_id, world.now))  # heartbeat again
        revived.append((user_id, socket_id))

    revived = []
    report = with_seams(ctx_factory(**GUARD), before_second_look=guest_beats_first).sweep()

    [(user_id, socket_id)] = revived
    assert socket_id in world.records() and user_id in world.online()
    assert sum(report.reaped.values()) == 24
    assert user_id not in reasons_of(r)
    assert_deletable_intents(r, 24)


def test_a_held_back_record_rewritten_before_the_second_look_takes_it_is_kept(ctx_factory, world, r, kept):
    add_guests(world, live=40, stale=25)
    rewritten = []
    first_pass = _scans(r, 1)  # batches: one per primary scanned

    def rewrite_in_second_look(loaded, n):
        if n == first_pass + 1:  # the second look's records, before they are taken
            rec = next(x for x in loaded if x is not None)
            world.write_record(rec.socket_id, record(rec.socket_id, rec.user_id, world.now - 600,
                                                     roomId="moved"))
            rewritten.append(rec.socket_id)

    ctx = ctx_factory(**GUARD)
    calls = after_each_load(ctx, rewrite_in_second_look)

    report = ctx.sweep()

    assert len(calls) == first_pass + 1
    assert rewritten[0] in world.records()
    assert report.skipped_live == 1
    assert sum(report.reaped.values()) == 24
    assert_intents_consistent(r)


def test_a_held_back_orphan_that_reconnected_is_kept(ctx_factory, world, r):
    add_guests(world, live=40, stale=10, orphans=15)

    def reconnects_first(held):
        user_id = held.orphans[0]
        world.guest(user_id[len("guest_"):] + "-new", age=0)  # a record on a new socket ...
        world.entry(user_id, f"sock{user_id[len('guest_'):]}-new")  # ... and its entry names it
        back.append(user_id)

    back = []
    report = with_seams(ctx_factory(**GUARD), before_second_look=reconnects_first).sweep()

    assert back[0] in world.online()
    assert back[0] not in reasons_of(r)
    assert report.reaped == {"heartbeat_timeout": 10, "orphan": 14}
    assert_intents_consistent(r)


def test_a_held_back_socketless_orphan_whose_entry_changed_is_kept(ctx_factory, world, r):
    add_guests(world, live=40, stale=10, socketless=15)

    def entry_changes_first(held):
        changed.append(held.socketless[0].user_id)
        world.entry(changed[0], None, status="busy")

    changed = []
    report = with_seams(ctx_factory(**GUARD), before_second_look=entry_changes_first).sweep()

    assert world.online()[changed[0]]["status"] == "busy"
    assert report.skipped_live == 1
    assert report.reaped == {"heartbeat_timeout": 10, "orphan": 14}
    assert_intents_consistent(r)


def test_a_held_back_record_of_a_huge_value_is_read_again_not_hashed_in_redis(ctx_factory, world, r):
    """Redis would hash a value inside the take's script: past HeldRecords.MAX_VALUE_BYTES a
    stale record is held by name, read again and taken as any record read is."""
    add_guests(world, live=40, stale=24)
    huge = record("huge", "guest_huge", world.now - 600, padding="x" * HeldRecords.MAX_VALUE_BYTES)
    world.write_record("huge", huge)
    world.entry("guest_huge", "huge")
    seen = []

    report = with_seams(ctx_factory(**dict(GUARD, safety__mass_reap_per_sweep=0)), before_second_look=seen.append).sweep()

    [held] = seen
    assert held.records == [KEYS.connection("huge")] and len(held.stale) == 24
    assert report.reaped == {"heartbeat_timeout": 25}
    assert "huge" not in world.records() and "guest_huge" not in world.online()
    assert_deletable_intents(r, 25)


def test_held_back_malformed_records_are_quarantined_and_their_entries_reaped(ctx_factory, world, r):
    add_guests(world, live=40, stale=5)
    for n in range(15):
        r.set(KEYS.connection(f"bad{n}"), b"not json")
        world.entry(f"guest_bad{n}", f"bad{n}")  # orphans once their record is quarantined

    report = ctx_factory(**GUARD).sweep()

    assert report.quarantined == 15
    assert report.reaped == {"heartbeat_timeout": 5, "orphan": 15}
    assert len(world.online()) == 40
    assert len(list(r.scan_iter(match="reaper:quarantine:*"))) == 15


def test_mass_expiry_still_holds_everything_back(ctx_factory, world, r):
    add_guests(world, live=10, stale=50)

    report = ctx_factory(**GUARD).sweep()

    assert report.mass_expiry
    assert sum(report.reaped.values()) == 10 and report.deferred == 40
    assert len(world.records()) == 50
    assert len(intents(r)) == 10


# -- HeldBack: the memory bound ----------------------------------------------------------------

def _stale(n: int) -> tuple[GuestRecord, Verdict]:
    return (GuestRecord(KEYS.connection(f"sock{n}"), f"sock{n}", f"guest_{n}", 1.0, 2.0, (b'{"userId": "..."}', b"")),
            Verdict(reasons.HEARTBEAT_TIMEOUT, 600.0, 20))


def _malformed(n: int) -> tuple[Malformed, str]:
    return Malformed(KEYS.connection(f"sock{n}"), f"sock{n}", "not JSON", "string", witness=(b"{", b"")), "not JSON"


def _entry(n: int, socket: bool) -> OnlineEntry:
    return OnlineEntry(f"guest_{n}", b"{}", True, f"sock{n}" if socket else None)


@pytest.mark.parametrize("records, orphans, socketless, overflowed", [
    (0, 0, 0, False),
    (5, 0, 0, False),
    (2, 2, 1, False),  # exactly MAX_HELD
    (3, 2, 1, True),  # one more
    (0, 6, 0, True),
    (0, 0, 6, True),
])
def test_held_back_names_are_bounded(monkeypatch, records, orphans, socketless, overflowed):
    monkeypatch.setattr(reaper.sweep.budget, "MAX_HELD", 5)
    held = HeldBack()

    for n in range(records):
        held.records_of([_stale(n) if n % 2 else _malformed(n)])
    for n in range(orphans):
        held.entry(_entry(n, socket=True))
    for n in range(socketless):
        held.entry(_entry(n, socket=False))

    assert held.overflowed is overflowed and held.count == len(held)
    if overflowed:  # forgotten at once: the second look will be a full pass
        assert (len(held.stale), held.records, held.orphans, held.socketless) == (0, [], [], [])
        assert len(held) == 0
    else:
        assert (len(held.stale), len(held.records)) == (records // 2, records - records // 2)
        assert (len(held.orphans), len(held.socketless)) == (orphans, socketless)
        assert held.orphans == [f"guest_{n}" for n in range(orphans)]  # userIds only, for entries
