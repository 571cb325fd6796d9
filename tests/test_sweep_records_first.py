"""The records first, then users:online (issues #4 and #14): with a big users:online the record
pass remembers the sockets it saw, and the online pass after it looks up only entries naming
another. The result is the sequential sweep's, except for guest entries naming no socket: those
wait for the next sweep, which runs sequentially because this one saw them."""

import json
import threading

import pytest
import redis

import reaper.sweep.redis_kinds
from reaper.core import reasons
from support.guests import ONLINE, record
from sweep_helpers import add_guests, assert_intents_consistent, reasons_of, stop_at_batch, with_seams
from support.keys import KEYS

STATE = KEYS.state


@pytest.fixture
def records_first(monkeypatch):
    """Every sweep of more than 3 online entries reads the records first (a report's
    ``records_first`` says whether its first pass did)."""
    monkeypatch.setattr(reaper.sweep.redis_kinds, "RECORDS_FIRST_MIN_ENTRIES", 3)


def _threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("reaper-")]


def test_records_first_the_sweep_reaps_what_a_sequential_one_does(ctx_factory, world, r, records_first):
    add_guests(world, live=12, stale=7, orphans=4)
    world.registered("member_1", "sock-member")
    ctx = ctx_factory(redis__scan_count=5)

    report = ctx.sweep(force=True)

    assert report.records_first
    assert report.reaped == {"heartbeat_timeout": 7, "orphan": 4}
    assert report.orphans == 4 and report.skipped_live == 0 and report.registered_online == 1
    assert set(world.online()) == {f"guest_{n}" for n in range(1, 13)} | {"member_1"}
    assert len(world.records()) == 12
    assert_intents_consistent(r)
    assert _threads() == []


def test_an_entry_that_went_with_its_record_is_no_orphan(ctx_factory, world, r, records_first):
    # Entries naming another socket go the long way: the sweep removes them after the take,
    # by which time the online pages may have left them as orphans (their record is gone).
    add_guests(world, live=6, stale=0)
    for n in range(20, 30):
        world.guest(n, age=600, entry=False)
        r.hset(ONLINE, f"guest_{n}", b"garbage")  # a guest's by its prefix; the script leaves it
    ctx = ctx_factory(redis__scan_count=3)

    report = ctx.sweep(force=True)

    assert report.records_first
    assert report.reaped == {"heartbeat_timeout": 10}
    assert report.orphans == 0 and report.skipped_live == 0
    assert set(world.online()) == {f"guest_{n}" for n in range(1, 7)}


def test_socketless_entries_wait_for_a_sequential_sweep(ctx_factory, world, r, records_first):
    add_guests(world, live=6, stale=0, socketless=2)  # guest_7 and guest_8 name no socket, have no record
    world.entry("guest_9", None)
    world.write_record("sock9", record("sock9", "guest_9", world.now - 10))  # live, by its user
    ctx = ctx_factory()

    first = ctx.sweep()

    assert first.records_first
    assert first.reaped == {} and first.socketless_seen == 3
    assert r.hget(STATE, "socketless_entries") == b"3"
    assert {"guest_7", "guest_8", "guest_9"} <= set(world.online())

    second = ctx.sweep()

    assert not second.records_first
    assert second.reaped == {"orphan": 2} and reasons_of(r) == {"guest_7": "orphan", "guest_8": "orphan"}
    assert "guest_9" in world.online()
    assert r.hget(STATE, "socketless_entries") == b"3"  # seen, reaped or not

    third = ctx.sweep()

    assert not third.records_first  # guest_9's entry names no socket still
    assert third.reaped == {} and r.hget(STATE, "socketless_entries") == b"1"


@pytest.mark.parametrize("entries, state, expected", [
    (10, None, True),
    (10, b"0", True),
    (10, b"2", False),  # the last sweep saw socketless entries
    (10, b"garbage", False),  # a count it cannot read: in order, the safe way
    (10, b"-1", False),
    (10, b"\xff\xfe", False),
    (10, b"9" * 5000, False),  # past int()'s digit limit
    (2, None, False),  # too few entries to matter
])
def test_when_the_records_go_first(ctx_factory, world, r, records_first, entries, state, expected):
    add_guests(world, live=entries, stale=0)
    if state is not None:
        r.hset(STATE, "socketless_entries", state)

    report = ctx_factory().sweep()

    assert report.records_first is expected


def test_a_dry_run_leaves_no_state(ctx_factory, world, r, records_first):
    add_guests(world, live=5, stale=0, socketless=1)

    report = ctx_factory(safety__dry_run=True).sweep()

    assert report.socketless_seen == 1 and r.hget(STATE, "socketless_entries") is None


# force: the online pages read by a reader thread while the pass takes as it goes; not forced (the
# default first pass, nobody taken before the totals): asked for ahead, read by the judging thread.
@pytest.mark.parametrize("force", [True, False], ids=["reader-thread", "ahead"])
def test_a_failing_online_page_is_raised_by_the_sweep(ctx_factory, world, r, records_first, force):
    add_guests(world, live=20, stale=5, orphans=3)
    pages = []

    def fails_on_the_second_page(entries):
        pages.append(1)
        if len(pages) == 2:
            raise redis.ConnectionError("Connection reset by peer")

    ctx = with_seams(ctx_factory(redis__scan_count=4), online_page_read=fails_on_the_second_page)

    with pytest.raises(redis.ConnectionError, match="reset by peer"):
        ctx.sweep(force=force)

    assert _threads() == []
    assert_intents_consistent(r)
    taken = 5 - len({f"sock{n}" for n in range(21, 26)} & world.records())
    assert len(world.online()) == 28 - taken and (taken > 0) is force  # nobody taken before the totals
    assert r.ping() is True and r.hlen(ONLINE) == 28 - taken  # no answer left in a pooled connection


@pytest.mark.parametrize("force", [True, False], ids=["reader-thread", "ahead"])
def test_a_stop_during_the_online_pass_ends_the_sweep_there(ctx_factory, world, r, records_first, force):
    add_guests(world, live=30, stale=10, orphans=5)
    ctx = ctx_factory(redis__scan_count=4)
    pages = []

    def stop_on_the_second_page(entries):
        pages.append(len(entries))
        if len(pages) == 2:
            ctx.stopping.set()

    report = with_seams(ctx, online_page_read=stop_on_the_second_page).sweep(force=force)

    assert report.interrupted and len(pages) == 2  # no page read after the stop
    assert _threads() == []
    assert_intents_consistent(r)
    records_taken = sum(n for reason, n in report.reaped.items() if reason != reasons.ORPHAN)
    assert (records_taken > 0) is force and len(world.records()) == 40 - records_taken  # nobody before the totals


def test_a_stop_during_the_record_pass_stops_both(ctx_factory, world, r, records_first):
    add_guests(world, live=30, stale=10, orphans=5)
    ctx = ctx_factory(redis__scan_count=4)
    stop_at_batch(ctx, 2)

    report = ctx.sweep(force=True)

    assert report.interrupted and report.orphans == 0  # the pages' leftovers wait for the next sweep
    assert r.hget(STATE, "socketless_entries") is None
    assert _threads() == []
    assert_intents_consistent(r)


# -- the online list after the records: what is looked up, and what a record pass cannot know ----

@pytest.mark.cluster_too
def test_only_entries_naming_a_socket_the_records_did_not_show_are_looked_up(ctx_factory, world, r,
                                                                             records_first):
    add_guests(world, live=30, stale=5, orphans=4)
    world.registered("member_1", "sock-member")
    looked_up = []
    ctx = with_seams(ctx_factory(redis__scan_count=7), before_exist_check=looked_up.extend)

    report = ctx.sweep(force=True)

    assert report.records_first
    assert sorted(looked_up) == sorted(KEYS.connection(f"sock{n}") for n in range(36, 40))
    assert report.reaped == {"heartbeat_timeout": 5, "orphan": 4}
    assert set(world.online()) == {f"guest_{n}" for n in range(1, 31)} | {"member_1"}
    assert_intents_consistent(r)


@pytest.mark.cluster_too
def test_a_guest_connecting_after_the_records_were_read_is_looked_up_and_kept(ctx_factory, world, r,
                                                                              records_first):
    add_guests(world, live=10, stale=0)
    arrived = []

    def connects_once(entries):  # a new guest writes its record, then its entry, mid-sweep
        if not arrived:
            arrived.append(world.guest(99, age=0))

    ctx = with_seams(ctx_factory(), online_page_read=connects_once)

    report = ctx.sweep(force=True)

    assert report.records_first and report.reaped == {}
    assert {"guest_99", *(f"guest_{n}" for n in range(1, 11))} <= set(world.online())
    assert "sock99" in world.records()


def test_a_record_gone_after_the_records_were_read_leaves_its_entry_to_the_next_sweep(ctx_factory, world,
                                                                                    r, records_first):
    """The price of not looking up entries whose socket the records showed: one that expires
    between the two passes is an orphan one sweep later."""
    add_guests(world, live=10, stale=0)
    expired = []

    def expires_once(entries):
        if not expired:
            expired.append(r.delete(KEYS.connection("sock3")))

    first = with_seams(ctx_factory(), online_page_read=expires_once).sweep(force=True)
    assert first.records_first and first.reaped == {} and "guest_3" in world.online()

    second = ctx_factory().sweep(force=True)

    assert second.reaped == {"orphan": 1} and reasons_of(r) == {"guest_3": "orphan"}
    assert "guest_3" not in world.online()


HOSTILE_SOCKETS = ["..", "cleanup-all", "a\x00b", "\u00e9t\u00e9", "x" * 4096, "sp ace", "*", "\\", "\u2028"]


@pytest.mark.cluster_too
def test_entries_are_matched_to_the_record_keys_the_scan_showed_byte_for_byte(ctx_factory, world, r,
                                                                                records_first):
    """The record pass remembers key names as Redis gave them; an entry's socketId is matched by
    its key's bytes: a live guest under any of these names is not looked up, an entry naming a
    like socket without a record is, and is reaped."""
    add_guests(world, live=4, stale=0)
    for n, socket_id in enumerate(HOSTILE_SOCKETS):
        world.write_record(socket_id, record(socket_id, f"guest_h{n}", world.now - 5))
        world.entry(f"guest_h{n}", socket_id)
        world.entry(f"guest_o{n}", socket_id + "\u00e9")  # no record: an orphan
    r.set(KEYS.connection_prefix.encode() + b"\xff\xfe", json.dumps(record("raw", "guest_raw", world.now - 5)))
    world.entry("guest_latin", "\u00ff\u00fe")  # the text those bytes are not, as UTF-8: no record
    looked_up = []
    ctx = with_seams(ctx_factory(redis__scan_count=5), before_exist_check=looked_up.extend)

    report = ctx.sweep(force=True)

    orphans = [s + "\u00e9" for s in HOSTILE_SOCKETS] + ["\u00ff\u00fe"]
    assert report.records_first
    assert sorted(looked_up) == sorted(KEYS.connection(s) for s in orphans)
    assert report.reaped == {"orphan": len(orphans)} and report.skipped_live == 0
    assert {f"guest_h{n}" for n in range(len(HOSTILE_SOCKETS))} <= set(world.online())
    assert not {f"guest_o{n}" for n in range(len(HOSTILE_SOCKETS))} & set(world.online())
    assert_intents_consistent(r)


def test_a_record_gone_between_scan_and_its_read_leaves_its_entry_to_the_next_sweep(ctx_factory, world, r,
                                                                                   records_first):
    """A key SCAN showed counts as seen, read or not: its entry is an orphan one sweep later."""
    add_guests(world, live=10, stale=0)
    gone = []

    def disconnects_once(names):  # the guest's record expires before its page is read
        if not gone:
            gone.append(r.delete(KEYS.connection("sock4")))

    first = with_seams(ctx_factory(), before_page_fetched=disconnects_once).sweep(force=True)
    assert first.records_first and gone == [1]
    assert first.reaped == {} and first.total == 9 and "guest_4" in world.online()

    second = ctx_factory().sweep(force=True)

    assert second.reaped == {"orphan": 1} and reasons_of(r) == {"guest_4": "orphan"}
    assert "guest_4" not in world.online()
