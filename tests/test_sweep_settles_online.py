"""The sweep settles the online step it did itself (issue #4): after removing a reaped guest's
users:online entry it takes "online" out of the intent it wrote with the take (SETTLE_ONLINE),
or deletes the intent when no step is left, so no cascade runs only to find its work done."""

import json

import pytest
import redis
from redis.commands.core import Script

from reaper import scripts
from reaper.intents import guest_intent
from reaper.presence import OnlineList
from reaper.sweep import Sweep
from support.guests import CONN, ONLINE, record
from sweep_helpers import DUE, INTENTS, assert_intents_consistent, due_ids, intents, snapshot

NO_SERVICES = {"REAPER_AUTH_SERVICE_BASE_URL": "", "REAPER_USER_SERVICE_BASE_URL": "",
               "REAPER_MONGO_URI": ""}
AUTH_ONLY = {"REAPER_USER_SERVICE_BASE_URL": "", "REAPER_MONGO_URI": ""}


def _fill(world, live: int, stale: int, orphans: int) -> tuple[list[str], list[str], list[str]]:
    """userIds of ``live`` fresh guests, ``stale`` silent ones and ``orphans`` entries without records."""
    made = {"live": [], "stale": [], "orphans": []}
    n = 0
    for kind, count in (("live", live), ("stale", stale), ("orphans", orphans)):
        for _ in range(count):
            n += 1
            if kind == "orphans":
                world.entry(f"guest_{n}", f"sock{n}")
            else:
                world.guest(n, age=5 if kind == "live" else 600)
            made[kind].append(f"guest_{n}")
    return made["live"], made["stale"], made["orphans"]


def _settle_calls(monkeypatch) -> list[int]:
    """Cascades per SETTLE_ONLINE call, as sent."""
    calls = []
    original = Script.__call__

    def spy(self, keys=(), args=(), client=None):
        if self.script == scripts.SETTLE_ONLINE:
            assert list(keys) == [INTENTS, DUE]  # reaper keys only: users:online may be in another slot
            calls.append((len(args) - 1) // 3)
        return original(self, keys=keys, args=args, client=client)

    monkeypatch.setattr(Script, "__call__", spy)
    return calls


# -- what a sweep leaves ---------------------------------------------------------------------


def test_with_every_service_disabled_a_sweep_leaves_no_cascade(ctx_factory, world, r, monkeypatch):
    live, stale, orphans = _fill(world, live=9, stale=23, orphans=4)
    registered = "member_1"
    world.registered(registered, "sockm")
    monkeypatch.setattr(scripts, "SETTLE_ONLINE_BATCH", 2)
    calls = _settle_calls(monkeypatch)
    ctx = ctx_factory(NO_SERVICES, redis__scan_count=5)

    report = ctx.sweep(force=True)

    assert report.reaped == {"heartbeat_timeout": 23, "orphan": 4}
    assert intents(r) == {} and due_ids(r) == set()
    assert set(world.online()) == set(live) | {registered}
    assert world.records() == {f"sock{u.split('_')[1]}" for u in live}
    assert sum(calls) == 23 and max(calls) <= 2  # every take settled, in batches of SETTLE_ONLINE_BATCH
    assert ctx.drain().claimed == 0


@pytest.mark.parametrize("environ, steps", [
    ({}, ["auth", "mongo"]),
    (AUTH_ONLY, ["auth"]),
])
def test_with_auth_enabled_the_intents_keep_every_step_but_online(ctx_factory, world, r, auth_service,
                                                                   environ, steps):
    live, stale, orphans = _fill(world, live=3, stale=6, orphans=2)
    ctx = ctx_factory(environ, redis__scan_count=4)

    ctx.sweep(force=True)

    pending = intents(r)
    assert {i["user_id"]: i["steps"] for i in pending.values()} == {u: steps for u in stale + orphans}
    assert set(world.online()) == set(live)
    assert_intents_consistent(r)
    for user in stale:  # byte for byte what Intent.to_json writes, so SETTLE can compare it
        intent = pending[f"guest:{user}"]
        expected = guest_intent(user, intent["socket_id"], "heartbeat_timeout", intent["created"],
                                remove_entry=False, irreversible=steps)
        assert r.hget(INTENTS, f"guest:{user}") == expected.to_json().encode()

    ctx.drain()

    assert sorted(auth_service.deleted_guests()) == sorted(stale + orphans)
    assert intents(r) == {} and due_ids(r) == set()


def test_a_dry_run_settles_nothing(ctx_factory, world, r):
    _fill(world, live=2, stale=5, orphans=2)
    before = snapshot(r)

    report = ctx_factory(NO_SERVICES, safety__dry_run=True).sweep()

    assert sum(report.reaped.values()) == 7
    assert snapshot(r) == before


# -- failures and races ----------------------------------------------------------------------


def _fails(monkeypatch, owner, name: str) -> list:
    calls = []

    def refuse(*args, **kwargs):
        calls.append(1)
        raise redis.ConnectionError("Connection reset by peer")

    monkeypatch.setattr(owner, name, refuse)
    return calls


@pytest.mark.parametrize("environ", [NO_SERVICES, AUTH_ONLY], ids=["no services", "auth"])
def test_a_failure_between_take_and_settle_leaves_online_for_the_cascade(ctx_factory, world, r, monkeypatch,
                                                                           auth_service, environ):
    live, stale, _ = _fill(world, live=2, stale=5, orphans=0)
    calls = _fails(monkeypatch, Sweep, "_settle_online")
    ctx = ctx_factory(environ)

    with pytest.raises(redis.ConnectionError, match="reset by peer"):
        ctx.sweep(force=True)

    assert calls
    steps = ["online"] + (["auth"] if environ is AUTH_ONLY else [])
    assert {i["user_id"]: i["steps"] for i in intents(r).values()} == {u: steps for u in stale}
    assert set(world.online()) == set(live)  # the entries went before the settle failed
    assert_intents_consistent(r)

    monkeypatch.undo()
    report = ctx.drain()

    assert report.claimed == 5 and report.completed == 5
    assert intents(r) == {} and due_ids(r) == set()
    assert sorted(auth_service.deleted_guests()) == (sorted(stale) if environ is AUTH_ONLY else [])


def test_a_failure_before_the_entries_are_removed_leaves_them_to_the_cascade(ctx_factory, world, r,
                                                                              monkeypatch):
    live, stale, _ = _fill(world, live=2, stale=4, orphans=0)
    _fails(monkeypatch, OnlineList, "remove")
    ctx = ctx_factory(NO_SERVICES)

    with pytest.raises(redis.ConnectionError):
        ctx.sweep(force=True)

    assert {i["user_id"]: i["steps"] for i in intents(r).values()} == {u: ["online"] for u in stale}
    assert set(world.online()) == set(live) | set(stale)

    monkeypatch.undo()
    ctx.drain()

    assert set(world.online()) == set(live)
    assert intents(r) == {} and due_ids(r) == set()


def _before_settle(monkeypatch, meddle) -> None:
    """Run ``meddle`` after the sweep removed the entries and before it settles their intents."""
    original = Sweep._settle_online

    def meddle_then_settle(self, reaped):
        meddle()
        return original(self, reaped)

    monkeypatch.setattr(Sweep, "_settle_online", meddle_then_settle)


def test_an_intent_replaced_meanwhile_is_left_alone(ctx_factory, world, r, monkeypatch):
    _fill(world, live=0, stale=3, orphans=0)  # guest_1 .. guest_3
    newer = guest_intent("guest_2", "sock2b", "orphan", 1.8e9, remove_entry=False, irreversible=["auth"])
    _before_settle(monkeypatch, lambda: r.hset(INTENTS, newer.id, newer.to_json()))
    ctx = ctx_factory(NO_SERVICES)

    ctx.sweep(force=True)

    assert r.hgetall(INTENTS) == {b"guest:guest_2": newer.to_json().encode()}
    assert due_ids(r) == {"guest:guest_2"}


def test_an_intent_claimed_by_a_cascade_meanwhile_is_left_to_it(ctx_factory, world, r, monkeypatch):
    _fill(world, live=0, stale=3, orphans=0)
    ctx = ctx_factory(AUTH_ONLY)
    claimed = []
    _before_settle(monkeypatch, lambda: claimed.extend(ctx.runner.claim(ctx.now()) or []))

    ctx.sweep(force=True)

    assert sorted(c.intent.user_id for c in claimed) == ["guest_1", "guest_2", "guest_3"]
    kept = {c.intent.id: c.raw for c in claimed}
    assert {k.decode(): v for k, v in r.hgetall(INTENTS).items()} == kept  # still with "online"
    assert all(json.loads(raw)["steps"] == ["online", "auth"] for raw in kept.values())
    assert all(score == claimed[0].until for _, score in r.zrange(DUE, 0, -1, withscores=True))


def test_an_intent_a_cascade_finished_meanwhile_is_not_written_again(ctx_factory, world, r, monkeypatch):
    _fill(world, live=0, stale=2, orphans=0)
    _before_settle(monkeypatch, lambda: (r.delete(INTENTS), r.delete(DUE)))
    ctx = ctx_factory(AUTH_ONLY)

    ctx.sweep(force=True)

    assert intents(r) == {} and due_ids(r) == set()


# -- whose entries stay ----------------------------------------------------------------------


@pytest.mark.parametrize("environ", [NO_SERVICES, AUTH_ONLY], ids=["no services", "auth"])
def test_registered_users_and_a_guest_back_on_a_new_socket_keep_their_entries(ctx_factory, world, r,
                                                                               environ):
    world.guest(1, age=600, entry=False)  # guest_1's old socket, silent...
    world.guest("1b", age=5, entry=False)
    world.entry("guest_1", "sock1b")  # ...and it is back on a new one
    world.write_record("sock2", record("sock2", "member_2", world.now - 600))
    world.registered("member_2", "sock2")  # registered meanwhile, on the socket of its old record
    world.registered("member_1")
    world.guest(3, age=600)  # an ordinary ghost
    kept = {user: r.hget(ONLINE, user) for user in ("guest_1", "member_2", "member_1")}
    ctx = ctx_factory(environ)

    report = ctx.sweep(force=True)

    assert report.reaped == {"heartbeat_timeout": 3}
    assert world.records() == {"sock1b"}
    assert {user: r.hget(ONLINE, user) for user in kept} == kept
    assert r.hget(ONLINE, "guest_3") is None
    # Their online step is done all the same (the entry is not theirs): settled like the rest.
    expected = {} if environ is NO_SERVICES else {u: ["auth"] for u in ("guest_1", "member_2", "guest_3")}
    assert {i["user_id"]: i["steps"] for i in intents(r).values()} == expected
    assert_intents_consistent(r)
    assert r.exists(CONN + "sock1b")
