"""Cascades after the Redis record is gone: auth DELETEs, Mongo deletes, retries, dead letters,
liveness, claims (docs/design.md, the cascade rules "Nothing lost", "Idempotent", "Never a live guest")."""

import json
import threading

import pymongo.errors
import pytest

from reaper.core.intents import Intent, guest_intent
from support.guests import record, redis_now
from sweep_helpers import keys_of

pytestmark = pytest.mark.cluster_too  # the same scenarios on a Redis Cluster

GUEST_STEPS = ["online", "auth", "mongo"]


@pytest.fixture
def mongo_deletes(users, monkeypatch):
    """The filters of every delete_many reaper sends to the users collection."""
    seen = []
    original = users.delete_many

    def counting(query, *args, **kwargs):
        seen.append(query)
        return original(query, *args, **kwargs)

    monkeypatch.setattr(users, "delete_many", counting)
    return seen


def inject_mongo_fault(users, monkeypatch, error: Exception, times: int = 1):
    """delete_many raises ``error`` ``times`` times, then works again."""
    original, left = users.delete_many, [times]

    def faulty(query, *args, **kwargs):
        if left[0] > 0:
            left[0] -= 1
            raise error
        return original(query, *args, **kwargs)

    monkeypatch.setattr(users, "delete_many", faulty)


def guest_docs(users, *user_ids, is_guest=True):
    users.insert_many([{"userId": u, "isGuest": is_guest} for u in user_ids])


def doc_ids(users) -> list:
    return sorted((d["userId"], d.get("isGuest")) for d in users.find())


def stored(r, cascade_id: str) -> dict | None:
    raw = r.hget(keys_of(r).intents, cascade_id)
    return None if raw is None else json.loads(raw)


def dead_letters(r) -> list[dict]:
    return [json.loads(raw) for raw in r.lrange(keys_of(r).dead, 0, -1)]


def make_due(r, cascade_id: str) -> None:
    """Instead of sleeping through the backoff: the intent is due at once."""
    r.zadd(keys_of(r).due, {cascade_id: 0})


def write_intent(r, intent: Intent, due: float = 0) -> None:
    r.hset(keys_of(r).intents, intent.id, intent.to_json())
    r.zadd(keys_of(r).due, {intent.id: due})


def auth_deletes(auth_service) -> list[str]:
    return [req.path for req in auth_service.calls("DELETE", "/auth/guest/")]


def settled_deletes(auth_service, expected: list[str]) -> list[str]:
    """deleted_guests() once the stand-in has recorded every answer (it records after replying)."""
    auth_service.wait_for(lambda: sorted(auth_service.deleted_guests()) == sorted(expected), timeout=5)
    return sorted(auth_service.deleted_guests())


# -- happy path ------------------------------------------------------------------------------

def test_drain_deletes_each_reaped_guest_once_everywhere(r, world, ctx_factory, auth_service, users):
    stale = [world.guest(n, age=400)[0] for n in (1, 2, 3)]
    world.guest(4, age=5)
    guest_docs(users, *stale, "guest_4")
    guest_docs(users, "guest_2", is_guest=False)  # same userId, not a guest document
    users.insert_one({"userId": "guest_3"})  # no isGuest at all
    ctx = ctx_factory()
    ctx.sweep()

    report = ctx.drain()

    assert (report.claimed, report.completed, report.retrying, report.dead) == (3, 3, 0, 0)
    assert settled_deletes(auth_service, stale) == stale
    assert sorted(auth_deletes(auth_service)) == [f"/auth/guest/{u}" for u in stale]
    assert doc_ids(users) == [("guest_2", False), ("guest_3", None), ("guest_4", True)]
    assert r.hlen(keys_of(r).intents) == 0 and r.zcard(keys_of(r).due) == 0 and r.llen(keys_of(r).dead) == 0


def test_a_registered_users_doc_survives_and_its_id_never_reaches_mongo(
        r, world, ctx_factory, auth_service, users, mongo_deletes):
    world.write_record("sock7", record("sock7", "member_7", world.now - 400))
    world.guest(8, age=400)
    guest_docs(users, "guest_8")
    guest_docs(users, "member_7", is_guest=False)
    ctx = ctx_factory()
    ctx.sweep()

    ctx.drain()

    assert doc_ids(users) == [("member_7", False)]
    assert len(mongo_deletes) == 1  # one $in for the batch
    [query] = mongo_deletes
    assert query["isGuest"] is True and query["userId"]["$in"] == ["guest_8"]


def test_a_404_from_the_auth_service_means_already_gone(r, world, ctx_factory, auth_service, users):
    user_id, _ = world.guest(1, age=400)
    guest_docs(users, user_id)
    auth_service.missing.add(user_id)
    ctx = ctx_factory()
    ctx.sweep()

    report = ctx.drain()

    assert report.completed == 1 and report.retrying == 0
    assert settled_deletes(auth_service, [user_id]) == [user_id]
    assert [req.status for req in auth_service.calls("DELETE", "/auth/guest/")] == [404]
    assert doc_ids(users) == [] and r.hlen(keys_of(r).intents) == 0 and r.zcard(keys_of(r).due) == 0


def test_a_200_with_an_html_body_still_counts_as_deleted(r, world, ctx_factory, auth_service):
    """A 200 whose body is an HTML page: the status says deleted, the body is not needed."""
    user_id, _ = world.guest(1, age=400)
    auth_service.fail("garbage", times=1)
    ctx = ctx_factory()
    ctx.sweep()

    assert ctx.drain().completed == 1
    assert r.hlen(keys_of(r).intents) == 0


# -- transient failures ----------------------------------------------------------------------

@pytest.mark.parametrize("mode", [500, 502, 503, 504, 429, "hang", "reset"])
def test_a_transient_auth_failure_is_retried_and_mongo_is_not_repeated(
        r, world, ctx_factory, auth_service, users, mongo_deletes, mode):
    user_id, _ = world.guest(1, age=400)
    guest_docs(users, user_id)
    auth_service.hang_seconds = 1.0
    auth_service.fail(mode)
    ctx = ctx_factory(auth_service__timeout="300ms", cascade__retry_initial="10s",
                      cascade__retry_max="1m")
    ctx.sweep()
    before = redis_now(r)

    report = ctx.drain()

    after = redis_now(r)
    intent = stored(r, f"guest:{user_id}")
    assert report.retrying == 1 and report.completed == 0
    assert intent["attempts"] == 1 and intent["steps"] == ["auth"]
    assert intent["last_error"] and "auth-service" in intent["last_error"]
    due = r.zscore(keys_of(r).due, f"guest:{user_id}")
    assert before + 5 <= due <= after + 10  # first retry: between initial/2 and initial
    assert doc_ids(users) == [] and len(mongo_deletes) == 1

    auth_service.heal()
    guest_docs(users, user_id)  # were the mongo step repeated, this would go
    assert ctx.drain().claimed == 0  # not due yet: the backoff holds
    make_due(r, f"guest:{user_id}")
    report = ctx.drain()

    assert report.completed == 1
    assert auth_service.wait_for(lambda: auth_service.calls("DELETE", "/auth/guest/")[-1].status == 200)
    assert len(auth_service.calls("DELETE", "/auth/guest/")) == 2
    assert doc_ids(users) == [(user_id, True)] and len(mongo_deletes) == 1
    assert r.hlen(keys_of(r).intents) == 0 and r.zcard(keys_of(r).due) == 0 and r.llen(keys_of(r).dead) == 0


def test_backoff_grows_with_each_failure_and_stays_under_the_cap(r, ctx_factory, auth_service):
    auth_service.fail(503)
    ctx = ctx_factory(cascade__retry_initial="4s", cascade__retry_max="10s")
    intent = guest_intent("guest_1", "sock1", "orphan", redis_now(r), False, ["auth"])
    write_intent(r, intent)
    delays = []
    for attempt in range(1, 5):
        before = redis_now(r)
        ctx.drain()
        delays.append(r.zscore(keys_of(r).due, intent.id) - before)
        assert stored(r, intent.id)["attempts"] == attempt
        make_due(r, intent.id)

    ceilings = [4, 8, 10, 10]
    for delay, ceiling in zip(delays, ceilings):
        assert ceiling / 2 - 0.5 <= delay <= ceiling + 0.5


def test_a_tiny_backoff_does_not_spin_inside_one_drain(r, ctx_factory, auth_service):
    auth_service.fail(503)
    ctx = ctx_factory(cascade__retry_initial="1ms", cascade__retry_max="2ms")
    write_intent(r, guest_intent("guest_1", "sock1", "orphan", redis_now(r), False, ["auth"]))

    report = ctx.drain()

    assert (report.claimed, report.retrying) == (1, 1)
    assert len(auth_service.calls("DELETE")) == 1


# -- permanent failures and age ----------------------------------------------------------------

@pytest.mark.parametrize("status", [400, 401, 403, 422])
def test_a_refused_delete_goes_to_the_dead_letters_at_once(
        r, world, ctx_factory, auth_service, users, logs, status):
    user_id, _ = world.guest(1, age=400)
    guest_docs(users, user_id)
    auth_service.fail(status)
    ctx = ctx_factory()
    ctx.sweep()

    report = ctx.drain()

    assert report.dead == 1 and report.retrying == 0
    assert r.hlen(keys_of(r).intents) == 0 and r.zcard(keys_of(r).due) == 0
    [letter] = dead_letters(r)
    assert letter["id"] == f"guest:{user_id}" and letter["user_id"] == user_id
    assert letter["steps"] == ["auth"] and letter["attempts"] == 1
    assert f"HTTP {status}" in letter["last_error"] and f"HTTP {status}" in letter["errors"]["auth"]
    errors = [m for level, m in logs if level == "ERROR"]
    assert any(user_id in m and "dead letters" in m and f"HTTP {status}" in m for m in errors)
    assert doc_ids(users) == []  # the mongo step, which worked, is not undone


def test_a_cascade_older_than_max_age_goes_to_the_dead_letters(r, ctx_factory, auth_service, logs):
    auth_service.fail(503)
    ctx = ctx_factory(safety__cascade_max_age="1h")
    intent = guest_intent("guest_1", "sock1", "orphan", redis_now(r) - 2 * 3600, False, ["auth"])
    write_intent(r, intent)

    report = ctx.drain()

    assert report.dead == 1
    [letter] = dead_letters(r)
    assert letter["id"] == intent.id and "HTTP 503" in letter["last_error"]
    assert r.hlen(keys_of(r).intents) == 0 and r.zcard(keys_of(r).due) == 0
    assert any(level == "ERROR" and intent.id in m and "still failing" in m for level, m in logs)


def test_a_young_cascade_with_the_same_failure_is_retried(r, ctx_factory, auth_service, logs):
    auth_service.fail(503)
    ctx = ctx_factory(safety__cascade_max_age="1h")
    intent = guest_intent("guest_1", "sock1", "orphan", redis_now(r) - 1800, False, ["auth"])
    write_intent(r, intent)

    assert ctx.drain().retrying == 1
    assert r.llen(keys_of(r).dead) == 0 and stored(r, intent.id)["attempts"] == 1
    assert not [m for level, m in logs if level == "ERROR"]


# -- MongoDB faults -----------------------------------------------------------------------------

@pytest.mark.parametrize("error", [
    pymongo.errors.AutoReconnect("connection reset by peer"),
    pymongo.errors.ServerSelectionTimeoutError("no primary available"),
    pymongo.errors.NotPrimaryError("not primary"),
], ids=lambda e: type(e).__name__)
def test_a_mongo_fault_is_retried_without_repeating_the_auth_delete(
        r, world, ctx_factory, auth_service, users, monkeypatch, error):
    user_id, _ = world.guest(1, age=400)
    guest_docs(users, user_id)
    inject_mongo_fault(users, monkeypatch, error)
    ctx = ctx_factory()
    ctx.sweep()

    report = ctx.drain()

    intent = stored(r, f"guest:{user_id}")
    assert report.retrying == 1
    assert intent["steps"] == ["mongo"] and intent["attempts"] == 1
    assert type(error).__name__ in intent["last_error"]
    assert doc_ids(users) == [(user_id, True)]
    assert settled_deletes(auth_service, [user_id]) == [user_id]

    make_due(r, f"guest:{user_id}")
    assert ctx.drain().completed == 1
    assert doc_ids(users) == []
    assert len(auth_service.calls("DELETE")) == 1
    assert r.hlen(keys_of(r).intents) == 0 and r.zcard(keys_of(r).due) == 0


def test_a_bug_in_a_step_keeps_the_intent_and_is_logged(r, ctx_factory, users, monkeypatch, logs):
    """Not a pymongo error: still never lost, and said loudly."""
    inject_mongo_fault(users, monkeypatch, KeyError("surprise"))
    ctx = ctx_factory()
    intent = guest_intent("guest_1", "sock1", "orphan", redis_now(r), False, ["mongo"])
    write_intent(r, intent)

    assert ctx.drain().retrying == 1
    assert stored(r, intent.id)["steps"] == ["mongo"]
    assert any(level == "ERROR" and "crashed" in m for level, m in logs)


# -- never a live guest -------------------------------------------------------------------------

def come_back(world) -> None:
    """guest_1 connects again on a new socket. (An id that is no guest id, a registered user's,
    never reaches the services at all: tests/test_gate.py.)"""
    world.write_record("sock1b", record("sock1b", "guest_1", world.now))
    world.entry("guest_1", "sock1b")


@pytest.mark.parametrize("when", ["first_try", "retry"])
def test_a_user_who_is_back_keeps_its_database_records(
        r, world, ctx_factory, auth_service, users, monkeypatch, mongo_deletes, when):
    user_id = "guest_1"
    world.write_record("sock1", record("sock1", user_id, world.now - 400))
    world.entry(user_id, "sock1")
    guest_docs(users, user_id)
    ctx = ctx_factory()
    ctx.sweep()
    if when == "retry":
        auth_service.fail(503, times=1)
        inject_mongo_fault(users, monkeypatch, pymongo.errors.AutoReconnect("down"))
        assert ctx.drain().retrying == 1
        make_due(r, f"guest:{user_id}")
    sent_before = len(auth_service.calls("DELETE"))
    come_back(world)
    mongo_deletes.clear()

    report = ctx.drain()

    assert (report.skipped_live, report.skipped_registered) == (1, 0)
    assert report.completed == 0
    assert len(auth_service.calls("DELETE")) == sent_before
    assert auth_service.deleted_guests() == []
    assert mongo_deletes == [] and doc_ids(users) == [(user_id, True)]
    assert r.hlen(keys_of(r).intents) == 0 and r.zcard(keys_of(r).due) == 0 and r.llen(keys_of(r).dead) == 0
    assert user_id in world.online()  # the new entry is untouched


# -- the online step after a crash -------------------------------------------------------------

def crash_intent(r, user_id="guest_9", socket_id="sockX") -> Intent:
    """What the sweep writes with the record removal, left as if we died right after."""
    intent = Intent(f"guest:{user_id}", "heartbeat_timeout", redis_now(r), list(GUEST_STEPS),
                    user_id, socket_id)
    write_intent(r, intent)
    return intent


def test_the_online_step_of_a_crashed_cascade_removes_its_entry(r, world, ctx_factory, auth_service, users):
    crash_intent(r)
    world.entry("guest_9", "sockX")
    world.registered("member_1", "sockX")  # a registered user naming the same socket stays
    guest_docs(users, "guest_9")
    ctx = ctx_factory()

    assert ctx.drain().completed == 1

    assert set(world.online()) == {"member_1"}
    assert settled_deletes(auth_service, ["guest_9"]) == ["guest_9"]
    assert doc_ids(users) == []


def test_an_entry_naming_a_live_new_socket_stays_and_the_cascade_is_dropped(
        r, world, ctx_factory, auth_service, users):
    crash_intent(r)
    world.write_record("sockY", record("sockY", "guest_9", world.now))
    world.entry("guest_9", "sockY")
    guest_docs(users, "guest_9")
    ctx = ctx_factory()

    report = ctx.drain()

    assert report.skipped_live == 1
    assert world.online()["guest_9"]["socketId"] == "sockY"
    assert auth_service.calls("DELETE") == [] and doc_ids(users) == [("guest_9", True)]


def test_an_entry_naming_another_dead_socket_stays_but_does_not_save_the_guest(
        r, world, ctx_factory, auth_service):
    crash_intent(r)
    world.entry("guest_9", "sockY")  # sockY has no record: a ghost the next sweep reaps

    assert ctx_factory().drain().completed == 1

    assert world.online()["guest_9"]["socketId"] == "sockY"
    assert settled_deletes(auth_service, ["guest_9"]) == ["guest_9"]


def test_a_disabled_service_since_the_intent_was_written_is_skipped(r, ctx_factory, auth_service, users):
    write_intent(r, guest_intent("guest_1", "sock1", "orphan", redis_now(r), False, ["auth", "mongo"]))
    guest_docs(users, "guest_1")
    ctx = ctx_factory({"REAPER_AUTH_SERVICE_BASE_URL": ""})

    assert ctx.drain().completed == 1
    assert auth_service.requests == [] and doc_ids(users) == []


# -- claims ---------------------------------------------------------------------------------

def test_two_racing_drains_never_delete_a_guest_twice(r, world, ctx_factory, auth_service):
    user_ids = [world.guest(n, age=400)[0] for n in range(40)]
    first = ctx_factory(cascade__batch_size=3)
    second = ctx_factory(cascade__batch_size=3)
    first.sweep(force=True)
    start, reports = threading.Barrier(2), []

    def drain(ctx):
        start.wait(5)
        reports.append(ctx.drain())

    threads = [threading.Thread(target=drain, args=(c,)) for c in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sum(rep.claimed for rep in reports) == 40
    assert sorted(auth_deletes(auth_service)) == sorted(f"/auth/guest/{u}" for u in user_ids)
    assert r.hlen(keys_of(r).intents) == 0 and r.zcard(keys_of(r).due) == 0


def test_a_claim_whose_owner_died_is_picked_up_again(r, world, ctx_factory, auth_service):
    user_id, _ = world.guest(1, age=400)
    ctx = ctx_factory()
    ctx.sweep()
    r.zadd(keys_of(r).due, {f"guest:{user_id}": redis_now(r) + 120})  # claimed by a reaper that then died

    assert ctx.drain().claimed == 0
    assert auth_service.calls("DELETE") == []

    r.zadd(keys_of(r).due, {f"guest:{user_id}": redis_now(r) - 1})  # its claim ran out
    assert ctx.drain().completed == 1
    assert settled_deletes(auth_service, [user_id]) == [user_id]


def test_a_due_id_without_an_intent_is_dropped(r, ctx_factory, auth_service):
    r.zadd(keys_of(r).due, {"guest:ghost": 0})
    write_intent(r, guest_intent("guest_1", None, "orphan", redis_now(r), False, ["auth"]))

    report = ctx_factory().drain()

    assert report.completed == 1
    assert r.zcard(keys_of(r).due) == 0 and r.llen(keys_of(r).dead) == 0


VALID = {"id": "guest:guest_5", "reason": "orphan", "created": 1.0, "steps": ["auth"],
         "user_id": "guest_5", "socket_id": "sock5"}


@pytest.mark.parametrize("raw", [
    b"not json",
    b"\xff\xfe\x00",
    b"[1, 2]",
    b"null",
    b'"a string"',
    b"{}",
    json.dumps({**VALID, "steps": "auth"}).encode(),
    json.dumps({**VALID, "steps": [1]}).encode(),
    json.dumps({**VALID, "steps": ["fax"]}).encode(),
    json.dumps({**VALID, "steps": ["auth_all"]}).encode(),
    json.dumps({**VALID, "user_id": None}).encode(),
    json.dumps({**VALID, "created": "yesterday"}).encode(),
    json.dumps({**VALID, "attempts": "many"}).encode(),
    json.dumps({**VALID, "id": "guest:someone_else"}).encode(),
], ids=lambda raw: raw[:40].decode("utf-8", "replace"))
def test_an_unreadable_intent_goes_to_the_dead_letters_and_the_drain_goes_on(
        r, ctx_factory, auth_service, logs, raw):
    r.hset(keys_of(r).intents, "guest:guest_5", raw)
    r.zadd(keys_of(r).due, {"guest:guest_5": 0})
    good = guest_intent("guest_1", None, "orphan", redis_now(r), False, ["auth"])
    write_intent(r, good)

    report = ctx_factory().drain()

    assert report.completed == 1 and report.dead == 1
    assert settled_deletes(auth_service, ["guest_1"]) == ["guest_1"]
    [letter] = dead_letters(r)
    assert letter["id"] == "guest:guest_5" and letter["last_error"].startswith("unreadable")
    assert letter["raw"] == raw.decode("utf-8", "replace")
    assert r.hlen(keys_of(r).intents) == 0 and r.zcard(keys_of(r).due) == 0
    assert any(level == "ERROR" and "unreadable" in m for level, m in logs)


def test_an_unknown_step_never_loops(r, ctx_factory):
    write_intent(r, Intent("guest:guest_1", "orphan", redis_now(r), ["fax"], "guest_1"))
    ctx = ctx_factory()
    done = threading.Event()
    thread = threading.Thread(target=lambda: (ctx.drain(), done.set()))
    thread.start()
    finished = done.wait(5)
    ctx.stopping.set()
    thread.join(5)

    assert finished
    assert r.hlen(keys_of(r).intents) == 0 and r.llen(keys_of(r).dead) == 1


def test_an_intent_replaced_while_running_is_not_lost(r, ctx_factory, auth_service, users, monkeypatch):
    """The sweep reaps the guest again meanwhile: the new intent survives the old one's settling."""
    guest_docs(users, "guest_1")
    old = guest_intent("guest_1", "sock1", "orphan", redis_now(r) - 10, False, ["auth"])
    write_intent(r, old)
    new = guest_intent("guest_1", "sock2", "heartbeat_timeout", redis_now(r), False, ["auth", "mongo"])
    ctx = ctx_factory()
    original = ctx.targets.auth.delete_guest

    def replaced_meanwhile(user_id):
        write_intent(r, new, due=redis_now(r) + 60)
        monkeypatch.setattr(ctx.targets.auth, "delete_guest", original)
        return original(user_id)

    monkeypatch.setattr(ctx.targets.auth, "delete_guest", replaced_meanwhile)
    assert ctx.drain().claimed == 1
    assert json.loads(r.hget(keys_of(r).intents, new.id))["socket_id"] == "sock2"
    assert r.zscore(keys_of(r).due, new.id) > redis_now(r)  # still scheduled, as written

    make_due(r, new.id)
    assert ctx.drain().completed == 1
    assert doc_ids(users) == []
    assert r.hlen(keys_of(r).intents) == 0 and r.zcard(keys_of(r).due) == 0


# -- the auth-service client ----------------------------------------------------------------------

def test_the_bearer_token_is_sent_and_odd_ids_stay_one_path_segment(r, ctx_factory, auth_service, logs):
    write_intent(r, guest_intent("guest_a b?c#d%e", None, "orphan", redis_now(r), False, ["auth"]))
    ctx = ctx_factory(auth_service__token="s3cret-token")

    assert ctx.drain().completed == 1

    [request] = auth_service.calls("DELETE")
    assert request.path == "/auth/guest/guest_a%20b%3Fc%23d%25e"
    assert request.headers["authorization"] == "Bearer s3cret-token"
    assert settled_deletes(auth_service, ["guest_a b?c#d%e"]) == ["guest_a b?c#d%e"]


@pytest.mark.parametrize("raw", [b"[1]", b"null", b'{"id": "x"}', b'{"id":"x","reason":"r","created":1,"steps":"auth"}'])
def test_intent_from_json_refuses_a_non_object_with_value_error(raw):
    with pytest.raises(ValueError):
        Intent.from_json(raw)
