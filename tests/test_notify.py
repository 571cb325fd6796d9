"""[notify] wired in (docs/design.md, the cascade; docs/signaling.md): the tell step of a cascade, the sweep's fence
and ask, against real socket.io servers and clients (Node.js, @socket.io/redis-adapter 8) on the
test Redis, and a real `reaper run --once` end to end."""

import json

import pytest
import redis

from reaper.core.config import NotifyConfig
from reaper.core.errors import PermanentError
from reaper.app.purge import purge
from reaper.signaling.servers import SignalingCluster, Teller
from reaper.signaling.socketio import REMOTE_FETCH, unpack
from support.gates import cleared
from support.guests import record
from support.redis_proc import find_free_port
from support.standin import wait_for
from support.intents import all_stored
from support.keys import keys_of

NOTIFY = {"notify__enabled": True}


def guest_left(client) -> list:
    return [args[0] for args in client.received("guestLeft")]


def told(*guests) -> list[dict]:
    return [{"userId": user_id, "reason": reason} for user_id, reason in guests]


def hear_marker(ctx, clients, marker="guest_marker") -> None:
    """Tell a marker to every client and wait until each heard it: Redis delivers in publish
    order, so whatever a client has not heard by then was never sent."""
    SignalingCluster(ctx.client, ctx.config.notify).tell_many([(cleared(marker), "orphan")])
    for client in clients:
        assert wait_for(lambda: {"userId": marker, "reason": "orphan"} in guest_left(client), timeout=10)


class Requests:
    """What was published on the signaling request channel while it is open."""

    MARKER = "test:requests-marker"

    def __init__(self, redis_server, channel: str = "socket.io-request#/#"):
        self.client = redis_server.client()
        self.pubsub = self.client.pubsub()
        self.pubsub.psubscribe(channel)  # a pattern: PUBSUB NUMSUB does not count it as a server
        self.pubsub.subscribe(self.MARKER)

    def __enter__(self) -> "Requests":
        # The PSUBSCRIBE went first on this connection: once the SUBSCRIBE shows, both hold.
        assert wait_for(lambda: self.client.pubsub_numsub(self.MARKER)[0][1] == 1)
        return self

    def __exit__(self, *exc) -> None:
        self.pubsub.close()
        self.client.close()

    def fetches(self) -> int:
        """How many fetch (ask) requests went out so far: Redis delivers what was published
        before the marker before the marker, so reading up to it is reading everything."""
        self.client.publish(self.MARKER, "end")
        count = 0
        while (message := self.pubsub.get_message(timeout=10)) is not None:
            if message["type"] not in ("message", "pmessage"):
                continue
            if message["channel"].decode() == self.MARKER:
                return count
            count += json.loads(message["data"]).get("type") == REMOTE_FETCH
        raise AssertionError("the marker never came back")


def attach_guest(world, client, user_id: str, age: float) -> None:
    """A guest whose record and entry name this real socket, its heartbeat ``age`` seconds old."""
    world.write_record(client.id, record(client.id, user_id, world.now - age))
    world.entry(user_id, client.id)


# -- tell: the last step of a guest's cascade -------------------------------------------------

def test_every_client_hears_guest_left_for_each_reaped_guest(signaling, world, ctx_factory):
    first, second = signaling.servers(2)
    clients = [signaling.client(first), signaling.client(second)]
    world.guest(1, age=600)  # heartbeat_timeout
    world.entry("guest_2", "sock2")  # an orphan: no record
    world.guest(3, age=5)  # live
    ctx = ctx_factory(**NOTIFY)

    ctx.sweep()
    report = ctx.drain()

    assert report.completed == 2 and ctx.pending() == 0
    for client in clients:
        assert wait_for(lambda: len(guest_left(client)) == 2, timeout=10)
        assert sorted(guest_left(client), key=lambda m: m["userId"]) == told(
            ("guest_1", "heartbeat_timeout"), ("guest_2", "orphan"))
    hear_marker(ctx, clients)
    assert "guest_3" not in [m["userId"] for m in guest_left(clients[0])]


def test_tell_is_the_last_step_and_only_when_enabled(r, world, ctx_factory):
    world.guest(1, age=600)
    world.entry("guest_2", "sock2")

    ctx_factory(**NOTIFY).sweep()

    assert {i["user_id"]: i["steps"] for i in all_stored(r).values()} == {
        "guest_1": ["auth", "mongo", "tell"], "guest_2": ["auth", "mongo", "tell"]}
    r.delete(keys_of(r).intents, keys_of(r).due)
    world.guest(3, age=600)
    ctx_factory().sweep()
    assert [i["steps"] for i in all_stored(r).values()] == [["auth", "mongo"]]


def test_with_only_notify_on_an_orphan_still_gets_a_cascade_to_tell(r, world, ctx_factory):
    """No auth-service, no MongoDB: the tell alone is worth an intent."""
    world.entry("guest_2", "sock2")
    ctx = ctx_factory(auth_service__base_url="", user_service__base_url="", mongo__uri="", **NOTIFY)

    ctx.sweep()

    assert [(i["reason"], i["steps"]) for i in all_stored(r).values()] == [("orphan", ["tell"])]
    assert ctx.drain().completed == 1 and ctx.pending() == 0


def test_a_guest_live_again_is_not_told(signaling, world, ctx_factory, auth_service):
    client = signaling.client(signaling.servers(1)[0])
    world.guest(1, age=600)
    ctx = ctx_factory(**NOTIFY)
    ctx.sweep()
    world.guest(1, age=1)  # back on the same socket before the cascade ran

    report = ctx.drain()

    assert report.skipped_live == 1 and report.completed == 0 and ctx.pending() == 0
    hear_marker(ctx, [client])
    assert guest_left(client) == told(("guest_marker", "orphan"))
    assert auth_service.deleted_guests() == []


def test_with_no_server_listening_the_tell_step_completes(r, world, ctx_factory, logs):
    """Publishing to nobody is a success: no server is up, so no client is left to tell."""
    world.guest(1, age=600)
    ctx = ctx_factory(**NOTIFY)

    ctx.sweep()
    report = ctx.drain()

    assert (report.completed, report.retrying, report.dead) == (1, 0, 0)
    assert ctx.pending() == 0 and ctx.dead() == 0 and not logs.at("WARNING")


class FailingRedis:
    """A Teller on a Redis nobody listens on: every PUBLISH fails as redis-py fails it."""

    def __init__(self, notify):
        self.client = redis.Redis(host="127.0.0.1", port=find_free_port(), retry=None)
        self.teller = Teller(SignalingCluster(self.client, notify))


def test_a_tell_that_fails_on_redis_is_retried_without_repeating_the_other_steps(
        r, signaling, world, ctx_factory, auth_service):
    client = signaling.client(signaling.servers(1)[0])
    world.guest(1, age=600)
    ctx = ctx_factory(cascade__retry_initial="1ms", cascade__retry_max="1ms", **NOTIFY)
    working, failing = ctx.targets.tell, FailingRedis(ctx.config.notify)
    ctx.sweep()

    ctx.targets.tell = failing.teller
    report = ctx.drain()

    assert (report.completed, report.retrying) == (0, 1)
    [intent] = all_stored(r).values()
    assert intent["steps"] == ["tell"] and intent["attempts"] == 1
    assert intent["last_error"].startswith("signaling: ") and "tell" in intent["errors"]
    assert ctx.counters.get("step_failed.tell") == 1

    ctx.targets.tell = working
    assert wait_for(lambda: ctx.drain().completed == 1 or not all_stored(r), timeout=10)
    assert client.expect("message", name="guestLeft")["args"] == told(("guest_1", "heartbeat_timeout"))
    assert auth_service.deleted_guests() == ["guest_1"]  # the DELETE was not sent again
    failing.client.close()


def test_the_signaling_circuit_opens_after_repeated_tell_failures(world, ctx_factory, logs):
    ctx = ctx_factory(cascade__breaker_failures=2, cascade__retry_initial="1ms", cascade__retry_max="1ms",
                      **NOTIFY)
    failing = FailingRedis(ctx.config.notify)
    ctx.targets.tell = failing.teller
    world.guest(1, age=600)
    ctx.sweep()

    assert wait_for(lambda: (ctx.drain(), not ctx.runner.circuits.signaling.closed)[1], timeout=10)

    assert logs.at("WARNING", "Circuit: signaling open after 2 failures")
    assert ctx.pending() == 1 and ctx.dead() == 0
    failing.client.close()


def test_a_publish_refused_by_an_acl_is_a_permanent_failure(r, redis_server):
    """Retrying cannot help until someone changes the ACL: dead letter, like a refused DELETE."""
    r.acl_setuser("reaper-no-publish", enabled=True, passwords=["+secret"], keys=["*"], channels=["*"],
                  commands=["+@all", "-publish"])
    limited = redis.Redis(host="127.0.0.1", port=redis_server.port, username="reaper-no-publish",
                          password="secret")
    try:
        with pytest.raises(PermanentError, match="signaling: .*publish"):
            Teller(SignalingCluster(limited, NotifyConfig())).tell_guests([(cleared("guest_1"), "orphan")])
    finally:
        limited.close()
        r.acl_deluser("reaper-no-publish")


def test_a_purge_tells_no_guest(signaling, world, ctx_factory):
    """A purge is a restart of the whole tier: nobody is connected who could hear of a guest."""
    client = signaling.client(signaling.servers(1)[0])
    world.guest(1, age=5)
    world.entry("guest_2", "sock2")
    ctx = ctx_factory(**NOTIFY)

    purge(ctx)
    ctx.drain()

    assert world.records() == set() and ctx.pending() == 0
    hear_marker(ctx, [client])
    assert guest_left(client) == told(("guest_marker", "orphan"))


class RawSubscriber:
    """A plain subscriber of the adapter's channels on one Redis node (on a Redis Cluster: any
    node, a PUBLISH reaches every node's subscribers), decoding what reaper sends."""

    def __init__(self, node: redis.Redis, *channels: str):
        self.node, self.pubsub = node, node.pubsub()
        self.pubsub.subscribe(*channels)
        for _ in channels:
            assert self.pubsub.get_message(timeout=5)["type"] == "subscribe"

    def messages(self, count: int, timeout: float = 10) -> list[tuple[str, object]]:
        got = []
        while len(got) < count:
            message = self.pubsub.get_message(timeout=timeout)
            assert message is not None, f"only {got} within {timeout}s"
            if message["type"] == "message":
                data = message["data"]
                got.append((message["channel"].decode(),
                            json.loads(data) if data[:1] == b"{" else unpack(data)))
        return got

    def close(self) -> None:
        self.pubsub.close()
        self.node.close()


@pytest.fixture
def raw_subscriber(request, redis_backend, redis_server):
    made = []

    def make(*channels: str) -> RawSubscriber:
        if redis_backend == "cluster":
            node = request.getfixturevalue("redis_cluster").nodes[-1].client()
        else:
            node = redis_server.client()
        made.append(RawSubscriber(node, *channels))
        return made[-1]

    yield make
    for one in made:
        one.close()


@pytest.mark.cluster_too
def test_the_cascade_tells_and_the_sweep_fences_on_either_kind_of_redis(r, world, ctx_factory, raw_subscriber):
    """On a Redis Cluster, PUBLISH goes through one node (a pipeline of them is refused there)."""
    listener = raw_subscriber("socket.io#/#", "socket.io-request#/#")
    world.guest(1, age=600)
    ctx = ctx_factory(**NOTIFY)

    ctx.sweep()
    ctx.drain()

    (fence_channel, fence), (tell_channel, tell) = listener.messages(2)
    assert (fence_channel, fence) == ("socket.io-request#/#", {
        "type": 4, "opts": {"rooms": ["sock1"], "except": []}, "close": True})
    assert tell_channel == "socket.io#/#"
    assert tell == ["reaper", {"type": 2, "data": ["guestLeft", {"userId": "guest_1", "reason": "heartbeat_timeout"}],
                               "nsp": "/"}, {"rooms": [], "except": [], "flags": {}}]
    assert ctx.pending() == 0


# -- fence: before a guest's records are deleted ----------------------------------------------

def still_attached(ctx, *clients) -> bool:
    """Asked after a sweep: a fence sent before it would have been handled first (each server
    reads its request channel in order), so an attached socket was never fenced."""
    answer = SignalingCluster(ctx.client, ctx.config.notify).ask([c.id for c in clients], timeout_s=10)
    return answer.complete and answer.attached == {c.id for c in clients}


@pytest.mark.parametrize("holder", [0, 1])
def test_a_stale_guests_socket_is_disconnected_on_whichever_server_holds_it(signaling, world, ctx_factory, holder):
    servers = signaling.servers(2)
    clients = [signaling.client(servers[0]), signaling.client(servers[1])]
    target, bystander = clients[holder], clients[1 - holder]
    attach_guest(world, target, "guest_frozen", age=600)
    attach_guest(world, bystander, "guest_fine", age=5)
    ctx = ctx_factory(**NOTIFY)

    report = ctx.sweep()

    assert report.reaped == {"heartbeat_timeout": 1} and world.records() == {bystander.id}
    assert target.expect("disconnect")["reason"] == "io server disconnect"
    assert servers[holder].expect("connection_closed", id=target.id)["reason"] == "forced close"
    assert still_attached(ctx, bystander)


def test_an_orphans_known_socket_is_fenced_too(signaling, world, ctx_factory):
    client = signaling.client(signaling.servers(1)[0])
    world.entry("guest_7", client.id)  # its record expired; the socket lingers

    report = ctx_factory(**NOTIFY).sweep()

    assert report.reaped == {"orphan": 1} and "guest_7" not in world.online()
    assert client.expect("disconnect")["reason"] == "io server disconnect"


@pytest.mark.parametrize("settings", [{"notify__fence": False}, {"safety__dry_run": True}, {}],
                         ids=["fence-off", "dry-run", "notify-off"])
def test_no_fence_when_off_or_in_a_dry_run(signaling, world, ctx_factory, settings):
    client = signaling.client(signaling.servers(1)[0])
    attach_guest(world, client, "guest_frozen", age=600)
    enabled = {} if not settings else NOTIFY
    ctx = ctx_factory(**enabled, **settings)

    report = ctx.sweep()

    assert report.reaped == {"heartbeat_timeout": 1}
    assert still_attached(ctx, client)


# -- ask: socket.io's own view wins ------------------------------------------------------------

def test_ask_keeps_guests_whose_socket_is_attached_and_reaps_those_gone(signaling, world, ctx_factory, logs):
    first, second = signaling.servers(2)
    frozen, lingering = signaling.client(second), signaling.client(first)
    attach_guest(world, frozen, "guest_frozen", age=600)  # its app froze; socket.io still holds it
    world.entry("guest_lingering", lingering.id)  # its record expired, its socket did not
    world.guest(2, age=600)  # its socket is connected nowhere
    world.entry("guest_3", "sock3")  # an orphan connected nowhere
    ctx = ctx_factory(notify__ask_before_reap=True, **NOTIFY)

    report = ctx.sweep()

    assert report.attached == 2
    assert report.reaped == {"heartbeat_timeout": 1, "orphan": 1}
    assert world.records() == {frozen.id}
    assert set(world.online()) == {"guest_frozen", "guest_lingering"}
    assert still_attached(ctx, frozen, lingering)  # neither reaped nor fenced
    kept = logs.at("WARNING", "but its socket is still attached")
    assert len(kept) == 2 and any(f"guest_frozen (socket {frozen.id}) looks dead in Redis (heartbeat_timeout)"
                                  in m for m in kept)
    assert "attached=2" in report.summary()
    assert not logs.at("WARNING", "incomplete")


def test_ask_alone_keeps_an_attached_guest_without_telling_or_fencing(r, signaling, world, ctx_factory):
    client = signaling.client(signaling.servers(1)[0])
    attach_guest(world, client, "guest_frozen", age=600)
    world.guest(2, age=600)
    ctx = ctx_factory(notify__ask_before_reap=True)

    report = ctx.sweep()

    assert report.attached == 1 and report.reaped == {"heartbeat_timeout": 1}
    assert [i["steps"] for i in all_stored(r).values()] == [["auth", "mongo"]]


def test_a_guest_kept_as_attached_takes_no_place_of_the_mass_expiry_budget(signaling, world, ctx_factory):
    client = signaling.client(signaling.servers(1)[0])
    attach_guest(world, client, "guest_frozen", age=600)
    for n in range(3):
        world.guest(n, age=600)
    ctx = ctx_factory(notify__ask_before_reap=True, safety__mass_expiry_min=3,
                      safety__mass_reap_per_sweep=2)

    report = ctx.sweep()

    assert report.mass_expiry and report.attached == 1
    assert sum(report.reaped.values()) == 2 and report.deferred == 1


def test_a_dry_run_asks_and_reports_what_it_would_keep(signaling, world, ctx_factory):
    client = signaling.client(signaling.servers(1)[0])
    attach_guest(world, client, "guest_frozen", age=600)
    world.guest(2, age=600)

    report = ctx_factory(notify__ask_before_reap=True, safety__dry_run=True, **NOTIFY).sweep()

    assert report.attached == 1 and report.reaped == {"heartbeat_timeout": 1}
    assert world.records() == {client.id, "sock2"}


def test_a_frozen_server_leaves_the_guests_to_the_redis_evidence_and_is_asked_once(
        signaling, world, ctx_factory, logs, redis_server):
    first, second = signaling.servers(2)
    signaling.client(first)
    world.entry("guest_1", "sock1")  # asked in the online pass...
    world.guest(2, age=600)  # ...and this one would be in the record pass
    second.pause()  # SIGSTOP: still subscribed, never answers
    ctx = ctx_factory(notify__ask_before_reap=True, notify__ask_timeout="500ms", **NOTIFY)

    with Requests(redis_server) as requests:
        report = ctx.sweep()
        asked = requests.fetches()

    assert asked == 1  # the record pass did not ask again
    assert report.reaped == {"orphan": 1, "heartbeat_timeout": 1} and report.attached == 0
    assert report.duration_s >= 0.5  # the one ask waited its timeout out
    [warning] = logs.at("WARNING", "incomplete")
    assert "1 of 2 servers answered within 0.5s" in warning and "asks no more" in warning
    second.resume()


def test_a_server_frozen_then_back_is_asked_again_in_the_next_sweep(signaling, world, ctx_factory, logs):
    server = signaling.servers(1)[0]
    client = signaling.client(server)
    attach_guest(world, client, "guest_frozen", age=600)
    ctx = ctx_factory(notify__ask_before_reap=True, notify__ask_timeout="300ms")
    server.pause()
    world.entry("guest_2", "sock2")

    first = ctx.sweep()
    server.resume()
    attach_guest(world, client, "guest_frozen", age=600)  # the first sweep reaped it: judged by Redis
    second = ctx.sweep()

    assert first.reaped == {"heartbeat_timeout": 1, "orphan": 1} and first.attached == 0
    assert second.attached == 1 and not second.reaped
    assert len(logs.at("WARNING", "incomplete")) == 1


def test_with_no_server_listening_everything_degrades_cleanly(r, world, ctx_factory, logs):
    world.guest(1, age=600)
    world.entry("guest_2", "sock2")
    ctx = ctx_factory(notify__ask_before_reap=True, **NOTIFY)

    report = ctx.sweep()
    drained = ctx.drain()

    assert report.reaped == {"heartbeat_timeout": 1, "orphan": 1} and report.attached == 0
    assert drained.completed == 2 and ctx.pending() == 0
    assert not logs.at("WARNING") and r.pubsub_channels() == []


# -- end to end: `reaper run --once` against two real servers ----------------------------------

def test_a_guest_whose_app_froze_is_fenced_reaped_and_every_other_client_hears_it(
        signaling, world, launch, auth_service):
    """The issue's "done when": the frozen app's record stopped refreshing while its socket stays
    connected (ask off, fence on)."""
    first, second = signaling.servers(2)
    frozen = signaling.client(second)
    others = [signaling.client(first), signaling.client(second)]
    attach_guest(world, frozen, "guest_frozen", age=600)
    for n, client in enumerate(others):
        attach_guest(world, client, f"guest_fine{n}", age=5)

    daemon = launch("run", "--once", REAPER_NOTIFY_ENABLED="true")

    assert daemon.proc.wait(30) == 0, daemon.stderr()
    assert frozen.expect("disconnect")["reason"] == "io server disconnect"
    assert second.expect("connection_closed", id=frozen.id)["reason"] == "forced close"
    for client in others:
        assert client.expect("message", name="guestLeft")["args"] == told(("guest_frozen", "heartbeat_timeout"))
        assert client.events("disconnect") == []
    assert world.records() == {c.id for c in others} and "guest_frozen" not in world.online()
    assert auth_service.deleted_guests() == ["guest_frozen"]
    lines = [line for line in daemon.stderr().splitlines()
             if any(word in line for word in ("Reaped", "Sweep:", "Cascades:", "Notify"))]
    print("\n".join(["--- reaper run --once ---", *lines]))
    assert any("Reaped guest_frozen" in line for line in lines)


def test_a_tell_left_when_notify_was_switched_off_is_skipped(r, world, ctx_factory):
    world.guest(1, age=600)
    ctx_factory(auth_service__base_url="", mongo__uri="", **NOTIFY).sweep()
    assert [i["steps"] for i in all_stored(r).values()] == [["tell"]]

    report = ctx_factory().drain()

    assert report.completed == 1 and not all_stored(r)


def test_guests_kept_as_attached_are_counted_since_start(signaling, world, ctx_factory):
    client = signaling.client(signaling.servers(1)[0])
    attach_guest(world, client, "guest_frozen", age=600)
    ctx = ctx_factory(notify__ask_before_reap=True)

    ctx.sweep()
    ctx.sweep()

    assert ctx.counters.get("kept_attached") == 2 and world.records() == {client.id}
