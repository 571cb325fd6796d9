"""The sweep's safety nets: mass expiry, evictions, dry run (docs/design.md, the cascade "Bounded effect" ff.)."""

import json

import pytest
import redis

from support.guests import CONN, record
from support.keys import KEYS
from sweep_helpers import (add_guests, assert_deletable_intents, assert_intents_consistent,
                           intents, reasons_of, snapshot, stop_at_batch, with_seams)

pytestmark = pytest.mark.cluster_too  # the same scenarios on a Redis Cluster


GUARD = dict(safety__mass_expiry_min=50, safety__max_reap_fraction=0.5, safety__mass_reap_per_sweep=10)


# -- mass expiry ----------------------------------------------------------------------------

def test_mass_expiry_reaps_only_the_budget_and_warns(ctx_factory, world, r, logs):
    add_guests(world, live=10, stale=50)

    report = ctx_factory(**GUARD).sweep()

    assert report.mass_expiry
    assert sum(report.reaped.values()) == 10
    assert report.deferred == 40
    assert len(world.records()) == 50
    assert_deletable_intents(r, 10)
    [warning] = logs.at("WARNING", "mass expiry")
    assert "50 of 60" in warning


def test_orphans_count_toward_mass_expiry(ctx_factory, world, r, logs):
    add_guests(world, live=10, stale=25, orphans=25)

    report = ctx_factory(**GUARD).sweep()

    assert report.mass_expiry
    assert report.orphans == 25
    assert sum(report.reaped.values()) == 10
    assert len(world.online()) == 50
    assert_deletable_intents(r, 10)
    assert logs.at("WARNING", "mass expiry")


def test_mass_expiry_budget_holds_across_small_batches(ctx_factory, world, r):
    add_guests(world, live=10, stale=25, orphans=25)

    report = ctx_factory(redis__scan_count=3, **GUARD).sweep()

    assert sum(report.reaped.values()) == 10
    assert_deletable_intents(r, 10)


def test_a_refused_take_gives_its_place_in_the_budget_back(ctx_factory, world, r):
    add_guests(world, live=10, stale=50)
    revived = []

    def revive_one(loaded):
        stale = [rec for rec in loaded if rec and rec.last_heartbeat < world.now - 500]
        if not revived and stale:
            revived.append(stale[0].socket_id)
            world.write_record(stale[0].socket_id, record(stale[0].socket_id, stale[0].user_id, world.now))

    report = with_seams(ctx_factory(redis__scan_count=3, **GUARD), records_loaded=revive_one).sweep()

    assert report.skipped_live == 1
    assert sum(report.reaped.values()) == 10
    assert revived[0] in world.records()
    assert_deletable_intents(r, 10)


def test_malformed_records_are_warned_once_when_a_second_pass_runs(ctx_factory, world, r, logs):
    add_guests(world, live=40, stale=5)
    for n in range(15):
        r.set(f"{CONN}bad{n}", b"not json")

    report = ctx_factory(**GUARD).sweep()

    assert not report.mass_expiry  # 20 of 60 dead
    assert report.quarantined == 15
    assert sum(report.reaped.values()) == 5
    for n in range(15):
        assert len(logs.at("WARNING", f"{CONN}bad{n}:")) == 1


def test_stopping_during_the_second_pass_is_reported(ctx_factory, world, r):
    add_guests(world, live=10, stale=30)  # 40 guests: no mass expiry, but more than the budget
    world.entry("guest_99", None)  # a socketless orphan, reaped only after a full record pass
    ctx = ctx_factory(**GUARD)
    stop_at_batch(ctx, 2)  # one batch per pass with the default scan_count

    report = ctx.sweep()

    assert report.interrupted
    assert "guest_99" in world.online()
    assert len(intents(r)) == sum(report.reaped.values())
    assert_intents_consistent(r)


def test_force_lifts_the_mass_expiry_limit(ctx_factory, world, r, logs):
    add_guests(world, live=10, stale=40, orphans=10)

    report = ctx_factory(**GUARD).sweep(force=True)

    assert report.mass_expiry
    assert report.reaped == {"heartbeat_timeout": 40, "orphan": 10}
    assert len(world.records()) == 10 and len(world.online()) == 10
    assert_deletable_intents(r, 50)
    assert not logs.at("WARNING", "mass expiry")


@pytest.mark.parametrize("live, stale, orphans", [
    (5, 40, 0),  # 45 guests: fewer than mass_expiry_min
    (40, 25, 5),  # 70 guests, 30 dead: not more than half
    (30, 30, 0),  # exactly half is not more than half
])
def test_no_mass_expiry_reaps_all_beyond_the_budget(ctx_factory, world, r, logs, live, stale, orphans):
    add_guests(world, live, stale, orphans)

    report = ctx_factory(**GUARD).sweep()

    assert not report.mass_expiry
    assert sum(report.reaped.values()) == stale + orphans
    assert report.deferred == 0
    assert len(world.records()) == live
    assert len(world.online()) == live
    assert_deletable_intents(r, stale + orphans)
    assert not logs.at("WARNING", "mass expiry")


def test_mass_expiry_goes_on_sweep_after_sweep(ctx_factory, world, r):
    add_guests(world, live=10, stale=50)
    ctx = ctx_factory(**GUARD)

    reaped = [sum(ctx.sweep().reaped.values()) for _ in range(3)]

    # 60 guests/50 dead and 50/40 are mass expiries, held to the budget; 40 guests are fewer
    # than mass_expiry_min, so the third sweep reaps the remaining 30.
    assert reaped == [10, 10, 30]
    assert_deletable_intents(r, 50)
    assert len(world.records()) == 10


# -- evictions ------------------------------------------------------------------------------

@pytest.fixture
def evict(r):
    """Call to make Redis really evict keys (allkeys-random); the config is restored after."""
    saved = {k: r.config_get(k)[k] for k in ("maxmemory", "maxmemory-policy")}

    def produce_evictions() -> int:
        before = _evicted(r)
        filler = r.pipeline(transaction=False)
        for i in range(3000):  # many small keys: a random eviction rarely picks a guest's
            filler.set(f"filler:{i}", "x" * 50)
        filler.execute()
        used = int(r.info("memory")["used_memory"])
        r.config_set("maxmemory-policy", "allkeys-random")
        r.config_set("maxmemory", used + 64 * 1024)
        for i in range(10_000):
            try:
                r.set(f"filler:big:{i}", "x" * 4096)
            except redis.ResponseError:  # OOM when nothing more can go
                pass
            if _evicted(r) > before:
                break
        r.config_set("maxmemory", 0)
        assert _evicted(r) > before, "redis did not evict"
        return _evicted(r) - before

    yield produce_evictions
    for key, value in saved.items():
        r.config_set(key, value)
    r.config_resetstat()  # evicted_keys back to 0: later tests start with no evictions seen


def _evicted(r) -> int:
    return int(r.info("stats")["evicted_keys"])


def _remove_fillers(r) -> None:
    for key in list(r.scan_iter(match="filler:*", count=1000)):
        r.delete(key)


def test_orphans_wait_a_sweep_after_evictions(ctx_factory, world, r, logs, evict):
    ctx = ctx_factory()
    ctx.sweep()  # remembers the eviction count
    evict()
    _remove_fillers(r)
    world.entry("guest_1", "sock1")  # an orphan, or a live guest whose record was evicted
    world.guest(2, age=400)

    report = ctx.sweep()

    assert report.orphans_skipped
    assert "guest_1" in world.online()
    assert reasons_of(r) == {"guest_2": "heartbeat_timeout"}  # stale records are still judged
    assert world.records() == set()
    [warning] = logs.at("WARNING", "evicted")
    assert "orphans are not reaped" in warning

    calm = ctx.sweep()  # no eviction since: orphans are reaped again

    assert not calm.orphans_skipped
    assert reasons_of(r) == {"guest_1": "orphan", "guest_2": "heartbeat_timeout"}


def test_evictions_noticed_even_when_the_reaper_state_was_evicted(ctx_factory, world, r, evict):
    ctx = ctx_factory()
    ctx.sweep()
    evict()
    r.delete(KEYS.state)  # allkeys-* may evict reaper's own keys too
    world.entry("guest_1", "sock1")

    report = ctx.sweep()

    assert report.orphans_skipped
    assert "guest_1" in world.online()
    assert intents(r) == {}


@pytest.mark.parametrize("kept", [b"garbage", b"-3", b"\xff\xfe", b"9" * 5000])
def test_an_eviction_count_that_cannot_be_read_counts_as_none_kept(ctx_factory, world, r, evict, kept):
    ctx = ctx_factory()
    ctx.sweep()
    evict()
    r.hset(KEYS.state, "evicted_keys", kept)  # a hand or a fault left this in reaper's own hash
    world.entry("guest_1", "sock1")

    report = ctx.sweep()  # no crash, and the safe side: any eviction may be recent

    assert report.orphans_skipped
    assert "guest_1" in world.online()
    assert int(r.hget(KEYS.state, "evicted_keys")) > 0  # a readable count again


def test_no_evictions_no_skipping(ctx_factory, world, r, logs):
    ctx = ctx_factory()
    ctx.sweep()
    world.entry("guest_1", "sock1")

    report = ctx.sweep()

    assert not report.orphans_skipped
    assert reasons_of(r) == {"guest_1": "orphan"}
    assert not logs.at("WARNING", "evicted")


# -- dry run --------------------------------------------------------------------------------

def test_dry_run_writes_nothing_but_reports_everything(ctx_factory, world, r, logs, auth_service):
    world.guest(1, age=5)
    world.guest(2, age=400)
    world.guest(3, age=5, pong_age=400)
    world.entry("guest_4", "sock4")
    world.entry("guest_5", None)
    r.set(CONN + "bad", b"not json")
    r.set(CONN + "bad-user", json.dumps({"userId": "guest_6"}))
    world.registered("alice", "sock2")
    r.hset(KEYS.state, "evicted_keys", _evicted(r))
    before = snapshot(r)

    report = ctx_factory(safety__dry_run=True).sweep()

    assert snapshot(r) == before
    assert report.dry_run
    assert report.reaped == {"heartbeat_timeout": 1, "ping_timeout": 1, "orphan": 2, "malformed": 1}
    assert report.malformed == 2 and report.orphans == 2
    assert report.quarantined == 2
    assert auth_service.requests == []
    assert "dry run" in logs.at("INFO", "Sweep: scanned=")[0]


def test_dry_run_under_mass_expiry_says_what_it_would_hold_back(ctx_factory, world, r, logs):
    add_guests(world, live=10, stale=50)
    before = snapshot(r)

    report = ctx_factory(safety__dry_run=True, **GUARD).sweep()

    assert snapshot(r) == before
    assert report.mass_expiry
    assert report.deferred == 40
    assert logs.at("WARNING", "mass expiry")
