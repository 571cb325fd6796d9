"""The one gate before every irreversible action (issue #12, holes 1-4): only guest ids reach a
service, MongoDB or socket.io; never a user live on any socket; a purge's delete-everything calls
only while the signaling tier is cold, asked again on every try."""

import json

import pytest

from reaper.core import guest_ids
from reaper.core.config import load_config
from reaper.core.errors import ConfigError
from reaper.safety.gate import Cleared, Permit
from reaper.core.intents import guest_intent
from reaper.core.keys import Keys
from reaper.app.purge import purge
from reaper.signaling.servers import SignalingCluster
from support.gates import cleared
from support.guests import record, redis_now
from support.keys import KEYS

# Ids that must never reach a service, whatever they are found in.
HOSTILE = [
    "cleanup-all", "cleanup", ".", "..", "health", "bob", "member_7", "admin", "", "Guest_1", " guest_1",
    "guest_", "guest_/../cleanup-all", "guest_a/b", "guest_a\\..\\b", "guest_1\nERROR | forged line",
    "guest_1\r\nX-Injected: 1", "guest_\x00", "guest_\x1b[31mred", "guest_\x7f", "guest_\u2028x",
    "guest_\u202eevil", "guest_\u200bzero", "guest_\x85", "guest_" + "a" * 300,
]
# Odd but safe: one path segment once percent-encoded.
ODD_BUT_GUESTS = {
    "guest_..": "guest_..", "guest_a b?c#d%e": "guest_a%20b%3Fc%23d%25e",
    "guest_%2F..%2Fcleanup-all": "guest_%252F..%252Fcleanup-all", "guest_é": "guest_%C3%A9",
    "guest_cleanup-all": "guest_cleanup-all",
}


def external_calls(auth_service, user_service) -> list[str]:
    return [f"{q.method} {q.path}" for q in auth_service.requests + user_service.requests if q.method != "GET"]


def write_intent(ctx, intent, due: float = 0) -> None:
    keys = Keys.from_config(ctx.config.redis)
    ctx.client.hset(keys.intents, intent.id, intent.to_json())
    ctx.client.zadd(keys.due, {intent.id: due})


def intents_left(ctx) -> dict:
    return ctx.client.hgetall(Keys.from_config(ctx.config.redis).intents)


# -- who is a guest (pure) -----------------------------------------------------------------------

@pytest.mark.parametrize("user_id", HOSTILE)
def test_no_hostile_id_is_a_guest_id(user_id):
    assert guest_ids.problem(user_id, "guest_") is not None


@pytest.mark.parametrize("user_id,segment", ODD_BUT_GUESTS.items())
def test_odd_guest_ids_become_one_fully_escaped_segment(user_id, segment):
    assert guest_ids.problem(user_id, "guest_") is None
    assert guest_ids.path_segment(user_id) == segment
    assert "/" not in segment and segment not in (".", "..")


@pytest.mark.parametrize("user_id, is_guest", [
    ("guest_" + "a" * (guest_ids.MAX_BYTES - 6), True), ("guest_" + "a" * (guest_ids.MAX_BYTES - 5), False),
    ("guest_" + "é" * ((guest_ids.MAX_BYTES - 6) // 2), True),  # bytes, not characters, are counted
    ("guest_" + "é" * ((guest_ids.MAX_BYTES - 6) // 2) + "a", False),
    ("guest_" + "\udcff" * (guest_ids.MAX_BYTES - 5), False)])  # a byte each, no UTF-8
def test_a_guest_id_is_at_most_max_bytes_long_in_utf8(user_id, is_guest):
    assert (guest_ids.problem(user_id, "guest_") is None) is is_guest


def test_a_name_that_is_no_utf8_goes_out_as_its_bytes():
    name = b"guest_\xff2".decode("utf-8", "surrogateescape")
    assert guest_ids.problem(name, "guest_") is None and guest_ids.path_segment(name) == "guest_%FF2"


@pytest.mark.parametrize("prefix", ["", "a/", "x\n", "\x00"])
def test_a_prefix_no_guest_id_could_have_is_refused_at_load(prefix):
    for environ in ({"REAPER_REDIS_GUEST_ID_PREFIX": prefix}, {}):
        if not environ:
            with pytest.raises(ConfigError, match="guest_id_prefix"):
                load_config(None, {}, {"redis.guest_id_prefix": prefix})
        else:
            with pytest.raises(ConfigError, match="guest_id_prefix"):
                load_config(None, environ)


def test_only_the_gate_mints_what_the_services_take(ctx_factory):
    ctx = ctx_factory()
    with pytest.raises(TypeError, match="only reaper.safety.gate"):
        Cleared("guest_1", "guest_1")
    with pytest.raises(TypeError, match="only reaper.safety.gate"):
        Permit("auth_all")
    with pytest.raises(TypeError, match="from reaper.safety.gate"):
        ctx.targets.auth.delete_guest("guest_1")
    with pytest.raises(TypeError, match="from reaper.safety.gate"):
        ctx.targets.mongo.delete_guests(["guest_1"])
    with pytest.raises(TypeError, match="from reaper.safety.gate"):
        ctx.targets.auth.cleanup_all(cleared("guest_1"))  # a guest's token is no purge permit


# -- hole 1 and 2: ids that are no guest ids -----------------------------------------------------

@pytest.mark.cluster_too
@pytest.mark.parametrize("user_id", HOSTILE[:12])
def test_a_stale_record_with_a_hostile_user_id_gets_no_external_call(
        r, world, ctx_factory, auth_service, user_service, users, user_id):
    world.guest(1, age=400)  # a real dead guest beside it still goes
    world.write_record("sockX", record("sockX", user_id, world.now - 400))
    users.insert_many([{"userId": user_id, "isGuest": True}, {"userId": "guest_1", "isGuest": True}])
    ctx = ctx_factory()

    report = ctx.sweep()
    ctx.drain()

    assert "sockX" not in world.records()  # Redis-side: the usual rules (it was stale)
    assert external_calls(auth_service, user_service) == ["DELETE /auth/guest/guest_1"]
    assert [d["userId"] for d in users.find()] == [user_id]
    counted = 1 if user_id else 0  # an empty userId makes the record malformed, with nobody to cascade
    assert report.not_a_guest_id == counted and ctx.counters.get("not_a_guest_id") == counted
    assert intents_left(ctx) == {}


@pytest.mark.parametrize("user_id", HOSTILE[12:])
def test_an_orphan_entry_with_a_hostile_field_gets_no_external_call(
        r, world, ctx_factory, auth_service, user_service, users, user_id, logs):
    r.hset(KEYS.online, user_id, json.dumps({"isGuest": True, "socketId": "gone"}))
    users.insert_one({"userId": user_id, "isGuest": True})
    ctx = ctx_factory()

    report = ctx.sweep()
    ctx.drain()

    assert report.orphans == 1 and report.not_a_guest_id == 1
    assert r.hexists(KEYS.online, user_id) is False  # a guest entry by isGuest: removed in Redis
    assert external_calls(auth_service, user_service) == []
    assert users.count_documents({}) == 1
    assert len([m for level, m in logs if level == "WARNING" and "is not a guest id" in m]) == 1


def published_until_marker(r, listener, channel: str) -> list[bytes]:
    """What reaper published on ``channel`` so far: our own marker, published last, arrives after
    everything before it (Redis delivers in order), so no wait for silence is needed."""
    r.publish(channel, b"marker")
    seen = []
    while (message := listener.get_message(timeout=10)) is not None:
        if message["type"] in ("message", "pmessage"):
            if message["data"] == b"marker":
                return seen
            seen.append(message["data"])
    raise AssertionError("the marker never arrived")


@pytest.mark.cluster_too
@pytest.mark.parametrize("user_id", [u for u in HOSTILE if u])  # an empty one is no guest intent at all
def test_an_intent_in_redis_naming_a_hostile_id_gets_no_external_call(
        r, ctx_factory, auth_service, user_service, users, user_id):
    """reaper's own keys are input too: an intent written by hand, an old version or an attacker."""
    ctx = ctx_factory(notify__enabled=True)
    write_intent(ctx, guest_intent(user_id, "sockX", "orphan", redis_now(r), False, ["auth", "mongo", "tell"]))
    users.insert_one({"userId": user_id, "isGuest": True})
    channel = SignalingCluster(r, ctx.config.notify).channels.broadcast
    listener = r.pubsub()
    listener.subscribe(channel)

    report = ctx.drain()

    assert report.not_a_guest_id == 1 and report.completed == 0
    assert external_calls(auth_service, user_service) == []
    assert users.count_documents({}) == 1
    assert intents_left(ctx) == {}  # dropped, not retried for ever
    assert published_until_marker(r, listener, channel) == []  # nothing told
    listener.close()


def test_a_registered_users_entry_and_records_survive_a_stale_record_naming_it(
        r, world, ctx_factory, auth_service, user_service, users):
    world.registered("bob", "sockB")
    world.write_record("sockB", record("sockB", "bob", world.now - 400))
    users.insert_one({"userId": "bob", "isGuest": False})
    ctx = ctx_factory()

    ctx.sweep()
    ctx.drain()

    assert world.online()["bob"]["isGuest"] is False
    assert external_calls(auth_service, user_service) == []
    assert users.count_documents({"userId": "bob"}) == 1


# -- hole 3: live on another socket --------------------------------------------------------------

def next_round(ctx):
    """Another sweep, then a drain with every pending cascade due now (no waiting out a delay)."""
    ctx.sweep()
    due = Keys.from_config(ctx.config.redis).due
    for cascade_id in ctx.client.zrange(due, 0, -1):
        ctx.client.zadd(due, {cascade_id: 0})
    return ctx.drain()


@pytest.mark.cluster_too
@pytest.mark.parametrize("entry", ["old_socket", "none", "old_socket_orphan"])
def test_a_guest_live_on_a_new_socket_keeps_its_user(
        r, world, ctx_factory, auth_service, user_service, users, entry):
    """The signaling server writes the new record before the entry: users:online still names the
    old socket, or nothing yet."""
    if entry != "old_socket_orphan":
        world.write_record("sock1", record("sock1", "guest_1", world.now - 400))
    if entry.startswith("old_socket"):
        world.entry("guest_1", "sock1")
    world.write_record("sock2", record("sock2", "guest_1", world.now))  # back, new socket
    users.insert_one({"userId": "guest_1", "isGuest": True})
    ctx = ctx_factory(notify__enabled=True)

    ctx.sweep()
    first = ctx.drain()
    second = next_round(ctx)

    assert external_calls(auth_service, user_service) == []
    assert users.count_documents({}) == 1
    assert "sock2" in world.records()
    # Only the record pass saw it live: the first check waits for a second pass to agree.
    assert (first.waiting, second.skipped_live, ctx.pending()) == (1, 1, 0)


def test_a_guest_back_on_a_new_socket_before_a_retry_keeps_its_user(
        r, world, ctx_factory, auth_service, user_service, users):
    world.write_record("sock1", record("sock1", "guest_1", world.now - 400))
    world.entry("guest_1", "sock1")
    ctx = ctx_factory(cascade__retry_initial="10ms", cascade__retry_max="10ms", mongo__uri="")
    auth_service.fail(503, times=1)
    ctx.sweep()
    assert ctx.drain().retrying == 1
    world.write_record("sock2", record("sock2", "guest_1", redis_now(r)))  # back; no entry yet
    sent_before = len(auth_service.calls("DELETE"))

    first, second = next_round(ctx), next_round(ctx)  # the next sweeps see the new record

    assert (first.waiting, second.skipped_live) == (1, 1)
    assert len(auth_service.calls("DELETE")) == sent_before


def test_without_a_recent_record_pass_the_drain_reads_the_records_first(
        r, world, ctx_factory, auth_service, user_service, users):
    """A drain before any sweep (a new leader, `dead-letters retry`) does not trust nothing."""
    world.write_record("sock2", record("sock2", "guest_1", world.now))
    ctx = ctx_factory()
    write_intent(ctx, guest_intent("guest_1", "sock1", "orphan", redis_now(r), False, ["auth"]))
    write_intent(ctx, guest_intent("guest_2", "sock3", "orphan", redis_now(r), False, ["auth"]))

    report = ctx.drain()

    assert report.waiting == 1 and report.completed == 1
    assert external_calls(auth_service, user_service) == ["DELETE /auth/guest/guest_2"]
    assert next_round(ctx).skipped_live == 1 and ctx.pending() == 0


# -- hole 4: the purge asks again on every try ---------------------------------------------------

def attach_server(r, ctx):
    """A signaling server attached to Redis, as the socket.io adapter is: a subscriber of the
    request channel."""
    listener = r.pubsub()
    listener.subscribe(SignalingCluster(r, ctx.config.notify).channels.request)
    assert listener.get_message(timeout=5)["type"] == "subscribe"
    return listener


@pytest.mark.parametrize("failing", ["auth", "users", "both"])
def test_a_purge_retried_after_the_tier_came_up_sends_no_cleanup_all(
        r, world, ctx_factory, auth_service, user_service, users, failing, logs):
    world.guest(1)
    users.insert_one({"userId": "guest_1", "isGuest": True})
    ctx = ctx_factory(cascade__retry_initial="10ms", cascade__retry_max="10ms")
    for name, service in (("auth", auth_service), ("users", user_service)):
        if failing in (name, "both"):
            service.fail(503)
    purge(ctx)
    ctx.drain()  # the cleanup-all calls fail (503); MongoDB's may go while the tier is cold
    tried = external_calls(auth_service, user_service)
    auth_service.heal()
    user_service.heal()
    listener = attach_server(r, ctx)  # a server came up, guests connect
    world.guest(2)
    users.insert_one({"userId": "guest_2", "isGuest": True})
    r.zadd(Keys.from_config(ctx.config.redis).due, {"purge": 0})

    ctx.drain()

    assert external_calls(auth_service, user_service) == tried  # nothing more went out
    assert users.count_documents({"userId": "guest_2"}) == 1
    assert intents_left(ctx) == {}  # dropped for good: never replayed
    assert any("dropped" in m and "signaling server" in m for _, m in logs)
    assert sum(v for k, v in ctx.counters.snapshot().items() if k.startswith("purge_dropped.")) >= 1
    listener.close()


def test_a_purge_on_a_cold_tier_still_goes(r, world, ctx_factory, auth_service, user_service):
    world.guest(1)
    ctx = ctx_factory(cascade__retry_initial="10ms", cascade__retry_max="10ms")
    auth_service.fail(503, times=1)
    purge(ctx)
    ctx.drain()
    r.zadd(Keys.from_config(ctx.config.redis).due, {"purge": 0})

    ctx.drain()

    assert [q.path for q in auth_service.calls("DELETE")] == ["/auth/guest/cleanup-all"] * 2
    assert [q.path for q in user_service.calls("DELETE")] == ["/guests/cleanup-all"]
    assert intents_left(ctx) == {}


# -- retention and fences --------------------------------------------------------------------

def test_a_retention_younger_than_a_heartbeat_timeout_deletes_nothing(ctx_factory, auth_service,
                                                                      user_service, users):
    from reaper.app.cleanup import periodic_cleanup

    users.insert_one({"userId": "guest_1", "isGuest": True, "createdAt": 0})
    ctx = ctx_factory(timing__retention="1s")

    assert periodic_cleanup(ctx) is False
    assert external_calls(auth_service, user_service) == [] and users.count_documents({}) == 1


@pytest.mark.parametrize("user_id", ["bob", "cleanup-all", "guest_a/b", "guest_1\n"])
def test_a_socket_is_fenced_only_for_a_guest_id(r, world, ctx_factory, user_id):
    world.write_record("sockX", record("sockX", user_id, world.now - 400))
    world.guest(1, age=400)
    ctx = ctx_factory(notify__enabled=True, auth_service__base_url="", user_service__base_url="",
                      mongo__uri="")
    listener = attach_server(r, ctx)

    ctx.sweep()

    packets = published_until_marker(r, listener, SignalingCluster(r, ctx.config.notify).channels.request)
    assert len(packets) == 1 and b"sock1" in packets[0] and b"sockX" not in packets[0]
    assert "sockX" not in world.records()  # its record still goes: the usual rules
    listener.close()


# -- the record pass's live users (a Bloom filter) and what the gate makes of them -------------

def test_the_live_users_filter_never_misses_a_live_user_and_rarely_adds_one():
    from reaper.core.live_users import LiveUsers

    live = LiveUsers(10_000, started_at=0.0)
    added = [f"guest_{n}" for n in range(10_000)]
    live.add_all(added)

    assert all(user in live for user in added)
    false_positives = sum(f"guest_x{n}" in live for n in range(10_000))
    assert false_positives < 100  # under 1 % (32 bits a user: about 0.07 %)
    assert round(LiveUsers(1_000_000, 0.0).size_bytes / 1e6, 2) == 4.0  # what docs/safety.md states: 4 MB


class FilterOnly:
    """A Liveness whose only witness is the passes' filter, which says ``state`` for everyone."""

    def __init__(self):
        self.serial, self.state = 1, "seen"

    def of(self, guests, now):
        return {u: self.state for u, _ in guests}, self.serial


def test_a_user_only_the_filter_calls_live_waits_until_two_passes_agree():
    from reaper.safety.gate import Gate

    liveness = FilterOnly()
    gate = Gate(liveness, "guest_")

    assert gate.check([("guest_1", "s1")], 0.0)[0].verdict == "unknown"  # maybe a false positive
    assert gate.check([("guest_1", "s1")], 0.0)[0].verdict == "unknown"  # same pass: no new word
    liveness.serial = 2
    assert gate.check([("guest_1", "s1")], 0.0)[0].verdict == "live"  # a second salt agrees
    liveness.serial, liveness.state = 3, "gone"
    assert gate.check([("guest_1", "s1")], 0.0)[0].verdict == "clear"
