"""Shared by the tests/test_sweep_*.py modules: reading what a sweep left in Redis (through
tests/support, re-exported under the names these tests use), filling it, stepping in through
the sweep's seams."""

import dataclasses

from support.intents import all_stored, assert_intents_consistent, dues
from support.keys import KEYS, keys_of
from support.snapshots import snapshot


INTENTS, DUE = KEYS.intents, KEYS.due  # on a single Redis; keys_of(r) for both
intents = all_stored  # {cascade id: intent}, the name the sweep's tests read it by
__all__ = ["DUE", "INTENTS", "add_guests", "after_each_load", "assert_deletable_intents",
           "assert_intents_consistent", "due_ids", "intents", "keys_of", "reasons_of", "snapshot",
           "stop_at_batch", "with_seams"]


def due_ids(r) -> set[str]:
    return set(dues(r))


def reasons_of(r) -> dict[str, str]:
    """userId -> reason of its pending cascade."""
    return {i["user_id"]: i["reason"] for i in intents(r).values()}


def assert_deletable_intents(r, count: int) -> None:
    """``count`` scheduled cascades, each carrying the auth-service DELETE."""
    assert len(intents(r)) == count
    assert all("auth" in i["steps"] for i in intents(r).values())
    assert_intents_consistent(r)


def add_guests(world, live: int, stale: int, orphans: int = 0, socketless: int = 0) -> None:
    """``live`` fresh guests, then ``stale`` silent ones, then ``orphans`` entries without records
    (naming a socket) and ``socketless`` ones (naming none)."""
    n = 0
    for _ in range(live):
        world.guest(n := n + 1, age=5)
    for _ in range(stale):
        world.guest(n := n + 1, age=600)
    for _ in range(orphans):
        world.entry(f"guest_{(n := n + 1)}", f"sock{n}")
    for _ in range(socketless):
        world.entry(f"guest_{(n := n + 1)}", None)


def with_seams(ctx, **hooks):
    """``ctx`` whose sweeps call these hooks (reaper/sweep/seams.py names the points)."""
    ctx.seams = dataclasses.replace(ctx.seams, **hooks)
    return ctx


def after_each_load(ctx, then) -> list:
    """``then(records, n)`` after the sweep has read its ``n``-th page of records (from 1), before it
    judges them; the returned list grows by one per page read."""
    loads = []

    def loaded(records):
        loads.append(1)
        then(records, len(loads))

    with_seams(ctx, records_loaded=loaded)
    return loads


def stop_at_batch(ctx, n: int) -> list:
    """Set ``ctx.stopping`` (as SIGTERM does) while the sweep reads its ``n``-th batch of records;
    the returned list grows by one per batch read."""
    return after_each_load(ctx, lambda records, i: ctx.stopping.set() if i == n else None)
