"""For the tests of the gate's authority (reaper/safety/authority.py): cascades queued straight into
Redis, and the two things that make a replica lose its authority mid-work."""

from reaper.safety.authority import Authority
from reaper.core.intents import guest_intent
from reaper.core.keys import Keys
from reaper.store.leader import Lease
from reaper.store.pause import pause

from .guests import redis_now

OTHER = "other-host:77:abcd1234"  # a replica that is not the test's


def queue_cascades(client, keys: Keys, count: int, steps: list[str], prefix: str = "guest_") -> list[str]:
    """``count`` guest cascades due at once (scores 0 .. count-1, in this order)."""
    now = redis_now(client)
    users = [f"{prefix}{n:03d}" for n in range(count)]
    for n, user in enumerate(users):
        intent = guest_intent(user, f"sock{n}", "orphan", now, False, steps)
        client.hset(keys.intents, intent.id, intent.to_json())
        client.zadd(keys.due, {intent.id: n})
    return users


def lead(ctx, clock, lease_s: float = 30) -> Lease:
    """The test's replica takes the lease; the gate's authority checks it on ``clock``."""
    lease = Lease(ctx.client, ctx.keys.leader, lease_s)
    assert lease.acquire().held
    ctx.gate.authority = Authority(ctx.client, ctx.keys, lease.token, ctx.gate.fresh_s, clock)
    return lease


def take_lease(ctx) -> None:
    """Another replica holds the lease now (ours ran out while we were frozen, say)."""
    ctx.client.set(ctx.keys.leader, OTHER, px=60_000)


def pause_now(ctx) -> None:
    pause(ctx.client, ctx.keys, by="ops@test", reason="test")


CAUSES = {"lease_lost": take_lease, "paused": pause_now}
