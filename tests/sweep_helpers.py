"""Shared by the tests/test_sweep_*.py modules: reading what a sweep left in Redis."""

import json

from redis.cluster import RedisCluster

import reaper.store.client
from reaper.core.keys import Keys
from reaper.core.names import decode_name


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


def stop_at_batch(ctx, monkeypatch, n: int) -> list:
    """Set ``ctx.stopping`` (as SIGTERM does) while the sweep reads its ``n``-th batch of records;
    the returned list grows by one per batch read."""
    original, loads = reaper.store.client.load_records, []

    def load_then_stop(*args, **kwargs):
        loads.append(1)
        if len(loads) == n:
            ctx.stopping.set()
        return original(*args, **kwargs)

    monkeypatch.setattr(reaper.store.client, "load_records", load_then_stop)
    return loads
