"""The purge (docs/design.md, the startup purge): all guest state, never a registered user's, and the database calls as a
cascade that is recorded first and retried until it succeeds."""

import pytest
import json


from reaper.app.purge import purge
from support.keys import KEYS, keys_of
from support.snapshots import snapshot

pytestmark = pytest.mark.cluster_too  # the same scenarios on a Redis Cluster


def mixed_world(r, world, users) -> None:
    """Guest state of every kind next to registered users and reaper's own keys."""
    world.guest(1, age=5)
    world.guest(2, age=400)
    r.hset(KEYS.connection("h1"), mapping={"userId": "guest_h", "lastHeartbeat": "x"})
    r.rpush(KEYS.connection("l1"), "odd")
    r.set(session("s1"), "token")
    r.hset(session("s2"), mapping={"a": "1"})
    r.rpush(session("s3"), "a", "b")
    r.sadd(session("s4"), "a")
    r.zadd(session("s5"), {"a": 1})
    r.xadd(session("s6"), {"a": "1"})
    world.entry("guest_3", "sock3")  # an orphan
    r.hset(KEYS.online, "guest_raw", b"not json")
    world.entry("visitor_1", "sockv", is_guest=True)  # a guest by its flag, not its prefix
    world.registered("member_1", "sockm")
    r.hset(KEYS.online, "member_raw", b"not json either")
    r.hset(KEYS.state, mapping={"last_sweep_at": "1"})
    r.set(keys_of(r).quarantine(KEYS.connection("q1")), "bad", ex=3600)
    r.lpush(keys_of(r).dead, json.dumps({"id": "guest:old", "last_error": "HTTP 400"}))
    r.set("session:guest_1", "not ours")  # near-miss names
    r.set("guest_connectionX", "not ours")
    users.insert_many([{"userId": u, "isGuest": True} for u in ("guest_1", "guest_2", "guest_3")]
                      + [{"userId": "member_1", "isGuest": False}, {"userId": "guest_odd"}])


def session(name: str) -> str:
    return KEYS.session_prefix + name


GUEST_KEYS = {KEYS.connection(s).encode() for s in ("sock1", "sock2", "h1", "l1")} | \
    {session(f"s{n}").encode() for n in range(1, 7)}


def remaining_docs(users) -> list:
    return sorted(d["userId"] for d in users.find())


def test_purge_deletes_every_guest_thing_and_nothing_else(r, world, ctx_factory, auth_service,
                                                         user_service, users):
    mixed_world(r, world, users)
    before = snapshot(r)
    ctx = ctx_factory()

    report = purge(ctx)
    ctx.drain()

    after = snapshot(r)
    assert (report.connections, report.sessions, report.online_entries) == (4, 6, 5)
    audit = keys_of(r).events.encode()
    assert set(after) == set(before) - GUEST_KEYS | {audit}
    for key in set(after) - {KEYS.online.encode(), audit}:
        assert after[key] == before[key], key  # reaper's own and other keys untouched
    assert set(world.online()) == {"member_1", "member_raw"}
    recorded = [json.loads(fields[b"decision"]) for _, fields in r.xrange(audit)]  # the audit trail
    assert sorted((e["user_id"], e["reason"]) for e in recorded) == [
        (u, "startup_purge") for u in ("guest_1", "guest_2", "guest_3", "guest_raw", "visitor_1")]
    assert r.hlen(keys_of(r).intents) == 0 and r.zcard(keys_of(r).due) == 0 and r.llen(keys_of(r).dead) == 1
    assert [q.path for q in auth_service.requests] == ["/auth/guest/cleanup-all"]
    assert [q.path for q in user_service.requests] == ["/guests/cleanup-all"]
    assert [q.method for q in auth_service.requests + user_service.requests] == ["DELETE", "DELETE"]
    assert remaining_docs(users) == ["guest_odd", "member_1"]


def test_the_purge_intent_is_recorded_before_anything_is_deleted(r, world, ctx_factory, auth_service):
    world.guest(1, age=5)
    ctx = ctx_factory()

    purge(ctx)

    intent = json.loads(r.hget(keys_of(r).intents, "purge"))
    assert intent["steps"] == ["auth_all", "users_all", "mongo_all"]
    assert intent["reason"] == "startup_purge" and intent["user_id"] is None
    assert r.zscore(keys_of(r).due, "purge") == 0
    assert auth_service.requests == []  # the calls themselves are the cascade's job


def test_a_failing_cleanup_all_waits_for_a_later_drain(r, world, ctx_factory, auth_service,
                                                       user_service, users):
    mixed_world(r, world, users)
    auth_service.fail(503)
    ctx = ctx_factory()
    purge(ctx)

    report = ctx.drain()

    intent = json.loads(r.hget(keys_of(r).intents, "purge"))
    assert report.retrying == 1
    assert intent["steps"] == ["auth_all"] and intent["attempts"] == 1
    assert "HTTP 503" in intent["last_error"]
    assert r.zscore(keys_of(r).due, "purge") > 0
    assert remaining_docs(users) == ["guest_odd", "member_1"]

    auth_service.heal()
    users.insert_one({"userId": "guest_new", "isGuest": True})  # the mongo step is not repeated
    r.zadd(keys_of(r).due, {"purge": 0})
    assert ctx.drain().completed == 1

    assert [q.status for q in auth_service.calls("DELETE", "/auth/guest/cleanup-all")][0] == 503
    assert len(auth_service.calls("DELETE", "/auth/guest/cleanup-all")) == 2
    assert len(user_service.calls("DELETE", "/guests/cleanup-all")) == 1
    assert remaining_docs(users) == ["guest_new", "guest_odd", "member_1"]
    assert r.hlen(keys_of(r).intents) == 0 and r.zcard(keys_of(r).due) == 0


def test_an_unexpected_cleanup_reply_is_logged_not_fatal(r, ctx_factory, auth_service, logs):
    auth_service.fail("garbage")
    ctx = ctx_factory()
    purge(ctx)

    assert ctx.drain().completed == 1
    assert any(level == "WARNING" and "unexpected reply body" in m for level, m in logs)


def test_a_refused_cleanup_all_goes_to_the_dead_letters(r, ctx_factory, user_service, logs):
    user_service.fail(403)
    ctx = ctx_factory()
    purge(ctx)

    assert ctx.drain().dead == 1
    [letter] = [json.loads(x) for x in r.lrange(keys_of(r).dead, 0, -1)]
    assert letter["id"] == "purge" and letter["steps"] == ["users_all"]
    assert any(level == "ERROR" and "purge" in m and "HTTP 403" in m for level, m in logs)


def test_only_configured_targets_become_purge_steps(r, ctx_factory, auth_service, user_service):
    ctx = ctx_factory({"REAPER_USER_SERVICE_BASE_URL": "", "REAPER_MONGO_URI": ""})

    purge(ctx)

    assert json.loads(r.hget(keys_of(r).intents, "purge"))["steps"] == ["auth_all"]
    ctx.drain()
    assert len(auth_service.requests) == 1 and user_service.requests == []


def test_a_dry_run_purge_changes_nothing_and_sends_nothing(r, world, ctx_factory, auth_service,
                                                          user_service, users, logs):
    mixed_world(r, world, users)
    before, docs = snapshot(r), list(users.find())
    ctx = ctx_factory(safety__dry_run=True)

    report = purge(ctx)
    ctx.drain()

    assert report.dry_run and (report.connections, report.sessions, report.online_entries) == (4, 6, 5)
    assert snapshot(r) == before
    assert auth_service.requests == [] and user_service.requests == []
    assert list(users.find()) == docs
    assert any("would delete" in m and "[dry run]" in m for _, m in logs)
