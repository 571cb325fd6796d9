"""The auth-service DELETE stream (issue #4, cascade throughput): DELETEs flow from one batch into
the next, answers are written back in small groups, never more than 2 x concurrency DELETEs are
sent and not yet written back, a stop leaves the batch claimed ahead due at once, an open circuit
stops the stream whatever the batch, and SETTLE settles a group of cascades in one call."""

import json
import threading
from collections import Counter

import pymongo.errors
import pytest

from reaper.store import cascade_scripts
from reaper.cascade.senders import Senders
from reaper.store.cascade_scripts import ClaimDue, Settle, Settlement
from reaper.core.intents import guest_intent
from support.clocks import ManualClock
from support.guests import record, redis_now
from support.standin import wait_for
from support.keys import KEYS

INTENTS, DUE, DEAD = KEYS.intents, KEYS.due, KEYS.dead
AUTH_GUEST = "/auth/guest/"
NO_MONGO = {"REAPER_MONGO_URI": ""}  # the DELETE is the last step: its write-back settles the cascade


def queue_cascades(r, count: int, steps=("auth",)) -> list[str]:
    """Pending cascades due one after the other, so batches are claimed in this order."""
    now, pipe = redis_now(r), r.pipeline(transaction=False)
    users = [f"guest_{n:03d}" for n in range(count)]
    for n, user in enumerate(users):
        intent = guest_intent(user, f"sock{n}", "orphan", now, False, list(steps))
        pipe.hset(INTENTS, intent.id, intent.to_json())
        pipe.zadd(DUE, {intent.id: n})
    pipe.execute()
    return users


def sent(auth) -> Counter:
    return Counter(req.path[len(AUTH_GUEST):] for req in auth.calls("DELETE", AUTH_GUEST))


def answered(auth) -> set[str]:
    return {req.path[len(AUTH_GUEST):] for req in auth.calls("DELETE", AUTH_GUEST) if req.status == 200}


def stored(r) -> dict[str, dict]:
    return {k.decode(): json.loads(v) for k, v in r.hgetall(INTENTS).items()}


def draining(ctx) -> threading.Thread:
    thread = threading.Thread(target=ctx.drain, daemon=True)  # a failing test must not hang the run
    thread.start()
    return thread


# -- the stream -----------------------------------------------------------------------------------

def test_the_next_batch_goes_out_while_a_delete_of_the_one_before_hangs(r, ctx_factory, auth_service):
    users = queue_cascades(r, 12)
    auth_service.hang_seconds = 2.0
    auth_service.fail("hang", path_prefix=AUTH_GUEST + users[3])  # the last of the first batch
    ctx = ctx_factory(NO_MONGO, cascade__batch_size=4, cascade__concurrency=2)
    drain = draining(ctx)
    try:
        second_done = auth_service.wait_for(lambda: answered(auth_service) >= set(users[4:8]), timeout=1.5)
        hanging, sent_meanwhile = users[3] not in answered(auth_service), set(sent(auth_service))
        assert wait_for(lambda: users[4] not in pending_users(r), timeout=1.0)  # settled, not waiting
    finally:
        drain.join(10)
    assert second_done and hanging, "the second batch waited for the slowest DELETE of the first"
    assert not sent_meanwhile & set(users[8:])  # two batches in hand at most
    assert sent(auth_service) == Counter(users) and r.hlen(INTENTS) == 0 and r.zcard(DUE) == 0


def pending_users(r) -> set[str]:
    return {k.decode().removeprefix("guest:") for k in r.hkeys(INTENTS)}


def test_never_more_than_twice_the_concurrency_is_sent_and_not_yet_written_back(r, ctx_factory,
                                                                               auth_service):
    """What a kill -9 would repeat, watched throughout a drain of three batches."""
    users, concurrency = queue_cascades(r, 120), 4
    auth_service.hang_seconds = 0.01  # every DELETE takes a little while: the drain lasts
    auth_service.fail("hang", path_prefix=AUTH_GUEST)
    ctx = ctx_factory(NO_MONGO, cascade__batch_size=50, cascade__concurrency=concurrency)
    looks = []

    def look() -> bool:
        out = sum(sent(auth_service).values())  # read first, so what is written never overstates
        looks.append(out - (len(users) - r.hlen(INTENTS)))
        return not drain.is_alive()

    drain = draining(ctx)
    try:
        assert wait_for(look, timeout=30, interval=0.002)
    finally:
        drain.join(10)
    assert max(looks) <= 2 * concurrency, f"up to {max(looks)} DELETEs answered and not recorded"
    assert max(looks) > 0  # the looks were taken while DELETEs were out
    assert sent(auth_service) == Counter(users) and r.hlen(INTENTS) == 0


def test_a_redis_that_lost_its_scripts_mid_drain_still_records_every_answer(r, ctx_factory, auth_service,
                                                                           monkeypatch):
    users = queue_cascades(r, 10)
    ctx = ctx_factory(NO_MONGO, cascade__batch_size=5)
    original, flushed = ctx.targets.auth.delete_guest, []

    def flush_then_delete(user_id: str) -> None:
        if not flushed:
            flushed.append(user_id)
            r.script_flush()  # as after a Redis restart or failover: the next EVALSHA gets NOSCRIPT
        original(user_id)

    monkeypatch.setattr(ctx.targets.auth, "delete_guest", flush_then_delete)
    report = ctx.drain()

    assert flushed and report.completed == 10
    assert sent(auth_service) == Counter(users)  # none repeated
    assert r.hlen(INTENTS) == 0 and r.zcard(DUE) == 0 and r.llen(DEAD) == 0


def test_stopping_leaves_the_batch_claimed_ahead_due_at_once(r, ctx_factory, auth_service):
    users = queue_cascades(r, 12)
    auth_service.hang_seconds = 0.3
    auth_service.fail("hang", path_prefix=AUTH_GUEST)
    ctx = ctx_factory(NO_MONGO, cascade__batch_size=4, cascade__concurrency=2, cascade__claim_timeout="1h")
    drain = draining(ctx)
    try:
        assert auth_service.wait_for(lambda: len(answered(auth_service)) >= 4, timeout=10)
        ctx.stopping.set()
        stopped_at = redis_now(r)
    finally:
        drain.join(10)
    assert not drain.is_alive()
    done = answered(auth_service)
    assert set(sent(auth_service)) == done  # every DELETE sent was waited for
    assert pending_users(r) == set(users) - done
    assert set(users[4:8]) - done, "the stop did not land with the second batch in hand"
    left = r.zrange(DUE, 0, -1, withscores=True)
    assert all(due <= stopped_at + 1 for _, due in left)  # due at once, not held for an hour's claim
    assert all(i["attempts"] == 0 for i in stored(r).values())  # not sent is not a failure


def test_an_open_circuit_stops_the_stream_whatever_the_batch(r, ctx_factory, auth_service):
    queue_cascades(r, 30)
    auth_service.fail(503, path_prefix=AUTH_GUEST)
    ctx = ctx_factory(NO_MONGO, cascade__batch_size=4, cascade__concurrency=4, cascade__breaker_failures=5,
                      cascade__breaker_cooldown="1h")

    report = ctx.drain()

    burst = sum(sent(auth_service).values())
    assert 5 <= burst <= 5 + 4 - 1  # only those already out when it opened
    assert (report.claimed, report.retrying, report.deferred) == (30, burst, 30 - burst)
    assert sum(i["attempts"] for i in stored(r).values()) == burst  # refusals are not charged


def test_after_a_probe_that_succeeds_the_rest_go_in_the_same_drain(r, ctx_factory, auth_service):
    users = queue_cascades(r, 12)
    auth_service.fail(503, path_prefix=AUTH_GUEST)
    ctx = ctx_factory(NO_MONGO, cascade__concurrency=4, cascade__breaker_failures=2,
                      cascade__breaker_cooldown="1h")
    clock = [1000.0]
    for circuit in ctx.runner.circuits.all():
        circuit.clock = lambda: clock[0]
    ctx.drain()
    assert not ctx.runner.circuits.auth.closed
    failed = sum(sent(auth_service).values())
    auth_service.heal()
    clock[0] += 3600  # the cooldown is over: the next DELETE is the probe
    r.zadd(DUE, {cascade_id: 0 for cascade_id in r.hkeys(INTENTS)})

    report = ctx.drain()

    assert (report.completed, report.deferred) == (12, 0), "those behind the probe were refused"
    assert answered(auth_service) == set(users)
    assert sum(sent(auth_service).values()) == failed + 12


def test_more_cascades_than_one_settle_call_takes_are_all_settled(r, ctx_factory, users, monkeypatch):
    count = cascade_scripts.SETTLE_BATCH * 2 + 10
    queue_cascades(r, count, steps=("mongo",))

    def down(*args, **kwargs):
        raise pymongo.errors.AutoReconnect("connection reset by peer")

    monkeypatch.setattr(users, "delete_many", down)
    ctx = ctx_factory(cascade__batch_size=count)
    before = redis_now(r)

    report = ctx.drain()

    assert report.retrying == count
    left = stored(r)
    assert len(left) == count and all(i["attempts"] == 1 and i["steps"] == ["mongo"] for i in left.values())
    assert all(due > before for _, due in r.zrange(DUE, 0, -1, withscores=True))


class Escaped(BaseException):
    """Not an Exception: what `except Exception` lets through (as SystemExit would)."""


def test_a_delete_that_raises_past_except_exception_still_gets_an_answer(r, ctx_factory, auth_service,
                                                                         monkeypatch, logs):
    users = queue_cascades(r, 6)
    ctx = ctx_factory(NO_MONGO, cascade__concurrency=2)
    original = ctx.targets.auth.delete_guest

    def escaping(guest) -> None:
        if guest.user_id == users[2]:
            raise Escaped("out of the blue")
        original(guest)

    monkeypatch.setattr(ctx.targets.auth, "delete_guest", escaping)
    reports = []
    drain = threading.Thread(target=lambda: reports.append(ctx.drain()), daemon=True)
    drain.start()
    drain.join(10)

    assert not drain.is_alive(), "the drain waits for an answer that never comes"
    assert (reports[0].completed, reports[0].retrying) == (5, 1)
    assert stored(r)[f"guest:{users[2]}"]["steps"] == ["auth"]  # kept, to be tried again
    assert any(level == "ERROR" and "crashed" in message for level, message in logs)


# -- the senders ----------------------------------------------------------------------------------

class Owner:
    def __init__(self, ran: list, release: threading.Event):
        self.ran, self.release = ran, release

    def run(self, tag) -> None:
        self.ran.append(tag)
        if tag == "first":
            assert self.release.wait(5)


def test_taken_back_are_only_the_owners_jobs_not_started_and_they_never_run():
    ran, release = [], threading.Event()
    a, b = Owner(ran, release), Owner(ran, release)
    senders = Senders(1)
    try:
        senders.hand(a, "first")  # the one thread is busy with it
        assert wait_for(lambda: ran == ["first"], timeout=5)
        for owner, tag in ((b, "b1"), (a, "a2"), (b, "b3"), (a, "a4")):
            senders.hand(owner, tag)

        assert senders.take_back(a) == [("a2",), ("a4",)]

        release.set()
    finally:
        senders.close()
    assert ran == ["first", "b1", "b3"]


# -- SETTLE ---------------------------------------------------------------------------------------

SETTLEMENTS = {
    "retry": lambda cascade_id, claimed, payload: Settlement.retry(cascade_id, claimed, payload, 50),
    "done": lambda cascade_id, claimed, payload: Settlement.done(cascade_id, claimed),
    "dead": lambda cascade_id, claimed, payload: Settlement.dead(cascade_id, claimed, payload),
}


def settle_script(r, dead_letters_max: int = 0) -> Settle:
    return Settle(r, KEYS, dead_letters_max)


@pytest.mark.parametrize("action, stored_value, payload, settled, intent_after, due_after, letters", [
    ("retry", b"A", "A2", True, b"A2", 50.0, []),
    ("done", b"A", "", True, None, None, []),
    ("dead", b"A", "letter", True, None, None, [b"letter"]),
    ("retry", b"newer", "A2", False, b"newer", 1.0, []),  # replaced since the claim: left alone
    ("done", b"newer", "", False, b"newer", 1.0, []),
    ("dead", b"newer", "letter", False, b"newer", 1.0, []),
    ("done", None, "", False, None, None, []),  # gone already
])
def test_settle_changes_a_cascade_only_if_it_is_still_as_claimed(r, action, stored_value, payload, settled,
                                                                intent_after, due_after, letters):
    if stored_value is not None:
        r.hset(INTENTS, "a", stored_value)
        r.zadd(DUE, {"a": 1})

    [result] = settle_script(r)([SETTLEMENTS[action]("a", "A", payload)])

    assert result.applied is settled and result.trimmed == 0
    assert r.hget(INTENTS, "a") == intent_after
    assert r.zscore(DUE, "a") == due_after
    assert r.lrange(DEAD, 0, -1) == letters


def test_settle_answers_each_cascade_of_a_group_in_order(r):
    r.hset(INTENTS, mapping={"a": "A", "b": "B", "c": "C", "d": "newer"})
    r.zadd(DUE, {"a": 1, "b": 1, "c": 1, "d": 1})

    results = settle_script(r)([Settlement.retry("a", "A", "A2", 50), Settlement.done("b", "B"),
                                Settlement.dead("c", "C", "letter"), Settlement.done("d", "D"),
                                Settlement.done("e", "E")])

    assert [result.applied for result in results] == [True, True, True, False, False]
    assert r.hgetall(INTENTS) == {b"a": b"A2", b"d": b"newer"}
    assert dict(r.zrange(DUE, 0, -1, withscores=True)) == {b"d": 1.0, b"a": 50.0}
    assert r.lrange(DEAD, 0, -1) == [b"letter"]


def test_settle_cuts_the_dead_letters_to_their_cap_and_says_how_many_went(r):
    r.rpush(DEAD, "old1", "old2", "old3")
    r.hset(INTENTS, mapping={"a": "A", "b": "B"})

    results = settle_script(r, dead_letters_max=3)([Settlement.dead("a", "A", "new-a"),
                                                    Settlement.dead("b", "B", "new-b")])

    assert [(s.applied, s.trimmed) for s in results] == [(True, 1), (True, 1)]
    assert r.lrange(DEAD, 0, -1) == [b"new-b", b"new-a", b"old1"]


# -- liveness stays fresh --------------------------------------------------------------------------

def test_a_guest_back_while_a_slow_auth_service_works_through_the_batch_keeps_its_user(
        r, ctx_factory, auth_service, world, monkeypatch):
    """The gate's check of a batch is repeated for the DELETEs still to go once it is older
    than the gate trusts: a slow auth-service must not carry a DELETE past a guest's return."""
    users = queue_cascades(r, 4)
    ctx = ctx_factory(NO_MONGO, cascade__batch_size=4, cascade__concurrency=1)
    clock = ManualClock()
    ctx.gate.clock = clock  # the gate's checks age only when a DELETE takes long
    original = ctx.targets.auth.delete_guest

    def first_delete_sees_the_last_guest_come_back(guest):
        clock.advance(ctx.gate.fresh_s + 1)  # a slow DELETE: every check before it is old now
        if guest.user_id == users[0]:
            world.write_record("sock3", record("sock3", users[3], world.now))  # back, same socket
            world.entry(users[3], "sock3")
        original(guest)

    monkeypatch.setattr(ctx.targets.auth, "delete_guest", first_delete_sees_the_last_guest_come_back)

    report = ctx.drain()

    assert set(sent(auth_service)) == set(users[:3])  # the one back was never DELETEd
    assert report.skipped_live == 1 and report.completed == 3
    assert stored(r) == {} and r.zcard(DUE) == 0


def test_a_claim_names_what_it_took_and_counts_the_due_ids_it_dropped(r):
    r.hset(INTENTS, mapping={"a": "A", "b": "B"})
    r.zadd(DUE, {"a": 1, "orphaned": 2, "b": 3, "later": 100})
    r.hset(INTENTS, "later", "L")
    claim = ClaimDue(r, KEYS)

    page = claim(due_by=10, until=70, limit=10)

    assert page.intents == [(b"a", b"A"), (b"b", b"B")] and page.dropped == 1 and not page.empty
    assert dict(r.zrange(DUE, 0, -1, withscores=True)) == {b"a": 70.0, b"b": 70.0, b"later": 100.0}
    assert claim(due_by=10, until=80, limit=10).empty  # claimed: not due again until the claim runs out
