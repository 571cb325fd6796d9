"""Dry run (docs/design.md, the cascade): everything is read and reported, nothing is written anywhere."""

import json
from datetime import datetime

import pytest

from reaper.app import stats
from reaper.core.config import ServiceConfig
from reaper.app.daemon import run_once
from reaper.core.intents import guest_intent
from reaper.cascade.services import AuthService, UserService
from support.gates import cleared, permit
from support.guests import record
from sweep_helpers import keys_of
from support.keys import KEYS

pytestmark = pytest.mark.cluster_too  # the same scenarios on a Redis Cluster


def snapshot(r) -> dict:
    return {k: (r.type(k), r.dump(k), r.ttl(k) > 0) for k in r.scan_iter(count=1000)}


def mixed_world(r, world, users) -> None:
    world.guest(1, age=5)
    world.guest(2, age=400)  # heartbeat timeout
    world.guest(3, age=5, pong_age=250)  # ping timeout
    world.entry("guest_4", "sock4")  # orphan with a socket
    world.entry("guest_5", None)  # orphan without one
    r.set(KEYS.connection("bad"), b"{not json", ex=600)  # malformed
    world.write_record("sock6", record("sock6", "guest_6", "yesterday-ish"))  # unreadable timestamp
    r.rpush(KEYS.connection("list"), "wrong type")
    world.registered("member_1", "sockm")
    r.set("guest_session:s1", "token")
    intent = guest_intent("guest_9", "sock9", "orphan", 0.0, False, ["auth", "mongo"])
    r.hset(keys_of(r).intents, intent.id, intent.to_json())
    r.zadd(keys_of(r).due, {intent.id: 0})
    r.hset(KEYS.state, mapping={"evicted_keys": 0})
    users.insert_many([{"userId": f"guest_{n}", "isGuest": True, "createdAt": datetime(2000, 1, 1)}
                       for n in range(1, 10)] + [{"userId": "member_1", "isGuest": False}])


def test_a_dry_run_cycle_writes_nothing_anywhere(r, world, make_config, mongo, auth_service,
                                                 user_service, logs):
    users = mongo["voip"]["users"]
    mixed_world(r, world, users)
    keys, docs = snapshot(r), list(users.find())

    code = run_once(make_config(safety__dry_run=True))

    assert snapshot(r) == keys
    assert list(users.find()) == docs
    assert [q for q in auth_service.requests + user_service.requests if q.method != "GET"] == []
    assert code == 1  # the pending cascade is still pending
    text = "\n".join(m for _, m in logs)
    assert "Reaped guest_2 (socket sock2): heartbeat_timeout" in text and "[dry run]" in text
    assert "Reaped guest_4 (socket sock4): orphan" in text
    assert "1 due; would run them [dry run]" in text
    assert "Retention: would delete" in text


def test_stats_reads_only(r, world, ctx_factory, mongo):
    mixed_world(r, world, mongo["voip"]["users"])
    keys = snapshot(r)

    found = stats.collect(ctx_factory())

    assert snapshot(r) == keys
    assert found["guests"] == {"total": 3, "responsive": 1, "unresponsive": 2}
    assert found["cascades"]["pending"] == 1 and found["orphans_now"] == 2


@pytest.mark.parametrize("call", [
    lambda auth, users: auth.delete_guest(cleared("guest_1")),
    lambda auth, users: auth.cleanup_all(permit("auth_all")),
    lambda auth, users: auth.cleanup_before(permit("retention", datetime(2030, 1, 1).timestamp())),
    lambda auth, users: users.cleanup_all(permit("users_all")),
    lambda auth, users: users.cleanup_before(permit("retention", datetime(2030, 1, 1).timestamp())),
], ids=["delete_guest", "auth_cleanup_all", "auth_cleanup", "users_cleanup_all", "users_cleanup"])
def test_the_http_clients_refuse_to_write_in_a_dry_run(auth_service, user_service, call):
    auth = AuthService(ServiceConfig(base_url=auth_service.url), dry_run=True)
    users = UserService(ServiceConfig(base_url=user_service.url), dry_run=True)
    try:
        with pytest.raises(RuntimeError, match="dry run: refusing to send DELETE"):
            call(auth, users)
        auth.health()  # reading is allowed
    finally:
        auth.close()
        users.close()
    assert [q.method for q in auth_service.requests] == ["GET"]
    assert user_service.requests == []


def test_without_dry_run_the_same_client_sends(auth_service):
    auth = AuthService(ServiceConfig(base_url=auth_service.url))
    try:
        auth.delete_guest(cleared("guest_1"))
    finally:
        auth.close()
    assert auth_service.wait_for(lambda: auth_service.deleted_guests() == ["guest_1"])


def test_a_dry_run_intent_is_left_exactly_as_it_was(r, ctx_factory, auth_service):
    intent = guest_intent("guest_1", None, "orphan", 0.0, False, ["auth"])
    r.hset(keys_of(r).intents, intent.id, intent.to_json())
    r.zadd(keys_of(r).due, {intent.id: 0})

    report = ctx_factory(safety__dry_run=True).drain()

    assert report.claimed == 0
    assert json.loads(r.hget(keys_of(r).intents, intent.id))["attempts"] == 0
    assert r.zscore(keys_of(r).due, intent.id) == 0
    assert auth_service.requests == []
