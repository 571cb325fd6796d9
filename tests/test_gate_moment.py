"""The gate decides at the moment of each call, not when the work was queued (issue #16, items 1
and 7): a DELETE waiting behind a slow auth-service, and the MongoDB and guestLeft steps after
it, go only on a check at most ``Gate.fresh_s`` old. The gate's clock is injected: the test says
when time passes."""

import threading

from reaper.core.intents import guest_intent
from reaper.core.keys import Keys
from reaper.signaling.servers import SignalingCluster
from support.clocks import ManualClock
from support.guests import record, redis_now
from support.standin import wait_for

AUTH_GUEST = "/auth/guest/"


def queue_cascades(ctx, count: int, steps: list[str]) -> list[str]:
    keys, now = Keys.from_config(ctx.config.redis), redis_now(ctx.client)
    users = [f"guest_{n:03d}" for n in range(count)]
    for n, user in enumerate(users):
        intent = guest_intent(user, f"sock{n}", "orphan", now, False, steps)
        ctx.client.hset(keys.intents, intent.id, intent.to_json())
        ctx.client.zadd(keys.due, {intent.id: n})
    return users


def reconnect(world, user_id: str) -> None:
    """Back on a new socket: a fresh record and the entry naming it."""
    socket_id = f"new-{user_id}"
    world.write_record(socket_id, record(socket_id, user_id, redis_now(world.r)))
    world.entry(user_id, socket_id)


def deleted(auth_service) -> list[str]:
    return [q.path[len(AUTH_GUEST):] for q in auth_service.calls("DELETE", AUTH_GUEST)]


class SlowDeletes:
    """Wraps the auth-service client: each DELETE waits for ``release`` before it goes."""

    def __init__(self, ctx, monkeypatch, before=None):
        self.original, self.before = ctx.targets.auth.delete_guest, before
        self.release, self.started = threading.Event(), []
        monkeypatch.setattr(ctx.targets.auth, "delete_guest", self)

    def __call__(self, guest) -> None:
        self.started.append(guest.user_id)
        if self.before is not None:
            self.before(guest)
        assert self.release.wait(30), "never released"
        self.original(guest)


def test_deletes_queued_behind_a_slow_auth_service_are_checked_again_as_they_leave(
        r, world, ctx_factory, auth_service, monkeypatch):
    ctx = ctx_factory({"REAPER_MONGO_URI": ""}, cascade__concurrency=16)
    clock = ManualClock()
    ctx.gate.clock = clock
    users = queue_cascades(ctx, 24, ["auth"])
    slow = SlowDeletes(ctx, monkeypatch)
    reports = []
    drain = threading.Thread(target=lambda: reports.append(ctx.drain()), daemon=True)
    drain.start()
    assert wait_for(lambda: len(slow.started) == 16, timeout=20)  # 16 out, 8 queued in the senders
    for user_id in users:
        reconnect(world, user_id)
    clock.advance(ctx.gate.fresh_s + 1)  # the queued DELETEs' checks are old now
    slow.release.set()
    drain.join(30)

    assert not drain.is_alive()
    assert sorted(deleted(auth_service)) == sorted(slow.started)  # only those already out
    assert len(slow.started) == 16 and reports[0].skipped_live == 8


def test_with_one_sender_each_delete_leaves_on_a_check_younger_than_the_bound(
        r, world, ctx_factory, auth_service, monkeypatch):
    ctx = ctx_factory({"REAPER_MONGO_URI": ""}, cascade__concurrency=1)
    clock = ManualClock()
    ctx.gate.clock = clock
    queue_cascades(ctx, 6, ["auth"])
    ages, clear = [], ctx.gate.clear

    def measured(check):
        ages.append(clock() - check.at)
        return clear(check)

    monkeypatch.setattr(ctx.gate, "clear", measured)
    original = ctx.targets.auth.delete_guest

    def slow(guest):  # each DELETE takes 1.5 s of the gate's clock
        original(guest)
        clock.advance(1.5)

    monkeypatch.setattr(ctx.targets.auth, "delete_guest", slow)

    report = ctx.drain()

    assert report.completed == 6 and len(deleted(auth_service)) == 6
    assert len(ages) == 6 and max(ages) <= ctx.gate.fresh_s


def test_a_guest_back_after_its_delete_is_neither_told_nor_deleted_in_mongo(
        r, world, ctx_factory, auth_service, users, monkeypatch):
    ctx = ctx_factory(notify__enabled=True)
    clock = ManualClock()
    ctx.gate.clock = clock
    guests = queue_cascades(ctx, 4, ["auth", "mongo", "tell"])
    users.insert_many([{"userId": u, "isGuest": True} for u in guests])
    original = ctx.targets.auth.delete_guest

    def then_back(guest):
        original(guest)
        if guest.user_id == guests[0]:  # answered; the rest of the batch still goes
            reconnect(world, guests[0])
            clock.advance(ctx.gate.fresh_s + 1)

    monkeypatch.setattr(ctx.targets.auth, "delete_guest", then_back)
    channel = SignalingCluster(r, ctx.config.notify).channels.broadcast
    listener = r.pubsub()
    listener.subscribe(channel)
    assert listener.get_message(timeout=5)["type"] == "subscribe"

    report = ctx.drain()

    assert sorted(deleted(auth_service)) == guests
    assert [d["userId"] for d in users.find()] == [guests[0]]  # its document stays
    r.publish(channel, b"marker")
    told = []
    while (message := listener.get_message(timeout=10)) is not None and message["data"] != b"marker":
        told.append(message["data"])
    listener.close()
    assert len(told) == 3 and not any(guests[0].encode() in packet for packet in told)
    assert report.skipped_live == 1 and report.completed == 3
