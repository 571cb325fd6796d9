"""A few hundred guests of every kind, and what one reaper cycle must leave of them."""

import json
from dataclasses import dataclass, field

from .guests import CONN, World, record
from .keys import KEYS


@dataclass
class Expectation:
    live_sockets: set = field(default_factory=set)  # records that must survive
    kept_entries: set = field(default_factory=set)  # users:online fields that must survive
    reaped_users: set = field(default_factory=set)  # exactly one DELETE each, nobody else


def populate(world: World, scale: int = 1) -> Expectation:
    """Live, stale by heartbeat, stale by ping, orphans with and without socket, malformed with
    and without userId, reconnected guests and registered users: about 300 guests at scale 1."""
    want = Expectation()
    n = iter(range(1, 1_000_000))
    for _ in range(140 * scale):  # live (dead ones stay under max_reap_fraction)
        user, sock = world.guest(next(n), age=5)
        want.live_sockets.add(sock)
        want.kept_entries.add(user)
    for _ in range(30 * scale):  # live but slow writers, inside clock_skew
        user, sock = world.guest(next(n), age=181, pong_age=181)
        want.live_sockets.add(sock)
        want.kept_entries.add(user)
    for _ in range(40 * scale):  # stale by heartbeat
        want.reaped_users.add(world.guest(next(n), age=400)[0])
    for _ in range(40 * scale):  # stale by ping: heartbeats fine, pongs long gone
        want.reaped_users.add(world.guest(next(n), age=5, pong_age=250)[0])
    for _ in range(30 * scale):  # orphans: the record expired, the entry stayed
        i = next(n)
        world.entry(f"guest_{i}", f"sock{i}")
        want.reaped_users.add(f"guest_{i}")
    for _ in range(10 * scale):  # orphans with no socketId in the entry
        i = next(n)
        world.entry(f"guest_{i}", None)
        want.reaped_users.add(f"guest_{i}")
    for _ in range(10 * scale):  # malformed, userId readable: quarantined and cascaded
        i = next(n)
        world.write_record(f"sock{i}", record(f"sock{i}", f"guest_{i}", "yesterday-ish"))
        world.entry(f"guest_{i}", f"sock{i}")
        want.reaped_users.add(f"guest_{i}")
    for _ in range(10 * scale):  # malformed, no userId: quarantined; its entry is then an orphan
        i = next(n)
        world.r.set(CONN + f"sock{i}", b"{not json", ex=3600)
        world.entry(f"guest_{i}", f"sock{i}")
        want.reaped_users.add(f"guest_{i}")
    for _ in range(5 * scale):  # wrong Redis type
        i = next(n)
        world.r.rpush(CONN + f"sock{i}", b"x")
    for _ in range(20 * scale):  # reconnected: stale old socket, entry on a fresh new one
        i = next(n)
        user = f"guest_{i}"
        world.write_record(f"old{i}", record(f"old{i}", user, world.now - 400))
        world.write_record(f"sock{i}", record(f"sock{i}", user, world.now - 3))
        world.entry(user, f"sock{i}")
        want.live_sockets.add(f"sock{i}")
        want.kept_entries.add(user)
    for _ in range(25 * scale):  # registered users, some naming stale or missing sockets
        i = next(n)
        world.registered(f"user_{i}", f"rsock{i}" if i % 3 else None)
        if i % 3 == 1:
            world.write_record(f"rsock{i}", record(f"rsock{i}", f"user_{i}", world.now - 400))
        want.kept_entries.add(f"user_{i}")
    world.r.hset(KEYS.online, "legacy_admin", b"not json at all")  # registered, not JSON
    want.kept_entries.add("legacy_admin")
    return want


def mongo_docs(want: Expectation, world: World) -> list[dict]:
    """A guest document for every guest user and a registered one for every registered user."""
    guests = {u for u in want.kept_entries | want.reaped_users if u.startswith("guest_")}
    registered = {u for u in want.kept_entries if not u.startswith("guest_")}
    return ([{"userId": u, "isGuest": True} for u in sorted(guests)]
            + [{"userId": u, "isGuest": False} for u in sorted(registered)])


def dumps(value) -> str:
    return json.dumps(value, sort_keys=True)
