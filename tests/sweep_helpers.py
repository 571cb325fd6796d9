"""Shared by the tests/test_sweep_*.py modules: reading what a sweep left in Redis."""

import json

from redis.cluster import RedisCluster

import dataclasses

from reaper.core.keys import Keys
from reaper.core.names import decode_name
from reaper.sweep.seams import Seams


INTENTS, DUE = "reaper:cascade:intents", "reaper:cascade:due"  # on a single Redis; keys_of(r) for both


def keys_of(r) -> Keys:
    """The default key names, as reaper names them on this kind of Redis (single or cluster)."""
    return Keys("guest_connection:", "guest_session:", "users:online", "reaper:", isinstance(r, RedisCluster))


def intents(r) -> dict[str, dict]:
    """reaper:cascade:intents as {cascade id: intent}."""
    return {decode_name(k): json.loads(v) for k, v in r.hgetall(keys_of(r).intents).items()}


def due_ids(r) -> set[str]:
    return {decode_name(m) for m in r.zrange(keys_of(r).due, 0, -1)}


def assert_intents_consistent(r) -> None:
    """Every intent is scheduled and every scheduled id has an intent."""
    assert set(intents(r)) == due_ids(r)


def reasons_of(r) -> dict[str, str]:
    """userId -> reason of its pending cascade."""
    return {i["user_id"]: i["reason"] for i in intents(r).values()}


def snapshot(r) -> dict[bytes, tuple]:
    """Every key: (type, DUMP, has a TTL) — equal snapshots mean nothing was written."""
    return {key: (r.type(key), r.dump(key), r.pttl(key) > 0) for key in r.scan_iter(count=1000)}


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
