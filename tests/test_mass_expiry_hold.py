"""Mass expiry holds by default (issue #16 item 6; docs/design.md, the sweep; docs/configuration.md): when most
guests look dead at once, nothing is reaped until the condition clears or an operator forces it;
a trickle per sweep (safety.mass_reap_per_sweep) is an explicit setting, 0 by default."""

import json

import pytest

from support.cli import invoke
from support.guests import CONN, record
from sweep_helpers import add_guests, assert_deletable_intents, intents, keys_of

pytestmark = pytest.mark.cluster_too  # the same scenarios on a Redis Cluster


def _live_and_dead(world) -> tuple[set[str], set[str]]:
    """10 live guests, 40 silent ones and 10 orphans: 50 of 60 dead, a mass expiry."""
    add_guests(world, live=10, stale=40, orphans=10)
    return {f"guest_{n}" for n in range(1, 11)}, {f"guest_{n}" for n in range(11, 61)}


def test_a_mass_expiry_holds_every_guest_by_default(ctx_factory, world, r, logs):
    live, dead = _live_and_dead(world)
    records_before = world.records()

    report = ctx_factory().sweep()

    assert report.mass_expiry and report.dead == 50
    assert report.reaped == {} and report.quarantined == 0 and report.deferred == 50
    assert world.records() == records_before and set(world.online()) == live | dead
    assert intents(r) == {}
    [warning] = logs.at("WARNING", "mass expiry")
    assert "50 of 60" in warning and "holding them: none is reaped until it clears" in warning
    assert "--force" in warning


def test_far_future_records_are_held_too(ctx_factory, world, r):
    far = world.now + 365 * 86400
    for n in range(100):
        world.write_record(f"sock{n}", record(f"sock{n}", f"guest_{n}", far))

    report = ctx_factory().sweep()

    assert report.mass_expiry and report.malformed == 100
    assert report.quarantined == 0 and report.reaped == {}
    assert len(world.records()) == 100
    assert list(r.scan_iter(match=keys_of(r).quarantine_pattern)) == []


def test_the_hold_lasts_until_the_condition_clears(ctx_factory, world, r):
    live, dead = _live_and_dead(world)
    ctx = ctx_factory()
    assert ctx.sweep().reaped == {} and ctx.sweep().reaped == {}  # sweep after sweep

    for n in range(11, 41):  # 30 of the silent guests write heartbeats again: 20 of 60 dead
        world.write_record(f"sock{n}", record(f"sock{n}", f"guest_{n}", world.now))
    report = ctx.sweep()

    assert not report.mass_expiry
    assert sum(report.reaped.values()) == 20  # the 10 still silent and the 10 orphans
    assert set(world.online()) == live | {f"guest_{n}" for n in range(11, 41)}
    assert_deletable_intents(r, 20)


def test_force_lifts_the_hold_for_one_sweep(ctx_factory, world, r):
    live, dead = _live_and_dead(world)
    ctx = ctx_factory()

    report = ctx.sweep(force=True)

    assert sum(report.reaped.values()) == 50
    assert set(world.online()) == live
    assert_deletable_intents(r, 50)


def test_a_trickle_per_sweep_is_an_explicit_setting(ctx_factory, world, r, logs):
    _live_and_dead(world)

    report = ctx_factory(safety__mass_reap_per_sweep=5).sweep()

    assert report.mass_expiry and sum(report.reaped.values()) == 5 and report.deferred == 45
    assert_deletable_intents(r, 5)
    assert "reaping at most 5 per sweep" in logs.at("WARNING", "mass expiry")[0]


def test_a_dry_run_says_it_would_hold_them_all(ctx_factory, world, r, logs):
    _live_and_dead(world)

    report = ctx_factory(safety__dry_run=True).sweep()

    assert report.mass_expiry and report.deferred == 50
    assert intents(r) == {}
    assert logs.at("WARNING", "mass expiry")


def test_run_once_holds_and_run_once_force_reaps(cli_env, r, world, auth_service):
    live, dead = _live_and_dead(world)

    held = invoke(["run", "--once"], cli_env)

    assert "mass expiry" in held.stderr, held.output
    assert auth_service.deleted_guests() == [] and set(world.online()) == live | dead

    forced = invoke(["run", "--once", "--force"], cli_env)

    assert forced.exit_code == 0, forced.output
    assert set(auth_service.deleted_guests()) == dead
    assert set(world.online()) == live
    assert {json.loads(v)["userId"] for v in [r.get(CONN + f"sock{n}") for n in range(1, 11)]} == live
