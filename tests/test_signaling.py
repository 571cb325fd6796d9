"""reaper.signaling.servers against real socket.io servers (Node.js, @socket.io/redis-adapter 8) on the
test Redis, with real socket.io clients: tell, fence, ask, and what happens with nobody there."""

import dataclasses
import json
import threading
from collections import Counter

import pytest
import redis

from reaper.core.config import NotifyConfig
from reaper.app.daemon import startup
from reaper.core.turns import SWEEP
from reaper.signaling.servers import ATTACHED, NOT_ATTACHED, UNKNOWN, SignalingCluster
from support.gates import cleared, permit
from support.redis_proc import find_free_port
from support.signaling import NodeTier
from support.standin import wait_for

CUSTOM = {"channel_prefix": "voip-sig", "namespace": "/calls"}


@pytest.fixture
def notify_cluster(r):
    """notify_cluster(**NotifyConfig fields): reaper's side, on the test Redis."""
    def make(**fields) -> SignalingCluster:
        return SignalingCluster(r, dataclasses.replace(NotifyConfig(), **fields))

    return make


def tell(cluster: SignalingCluster, user_id: str, reason: str) -> int:
    return cluster.tell_many([(cleared(user_id), reason)])


def guest_left(client) -> list:
    return [args[0] for args in client.received("guestLeft")]


NO_DEADLINE_S = 3600.0


def ask_until_done(cluster: SignalingCluster, socket_ids: list[str]):
    """ask() with a deadline no test reaches: it returns only when it stops by itself (every
    server answered, every socket found, or nobody to ask), never by waiting its timeout out."""
    answers = []
    threading.Thread(target=lambda: answers.append(cluster.ask(socket_ids, timeout_s=NO_DEADLINE_S)),
                     daemon=True).start()
    assert wait_for(lambda: answers, timeout=30), "ask waited for its deadline"
    return answers[0]


def commands(r) -> Counter:
    """How many times each command ran on the test Redis (INFO commandstats)."""
    return Counter({name.removeprefix("cmdstat_"): stats["calls"]
                    for name, stats in r.info("commandstats").items()})


# -- tell --------------------------------------------------------------------------------------

def test_every_client_on_every_server_hears_guest_left(signaling: NodeTier, notify_cluster):
    first, second = signaling.servers(2)
    clients = [signaling.client(first), signaling.client(second), signaling.client(second)]

    receivers = tell(notify_cluster(), "guest_6f1c2a9e", "heartbeat_timeout")

    assert receivers == 2  # each server's adapter PSUBSCRIBEs the broadcast channel
    for client in clients:
        assert client.expect("message", name="guestLeft")["args"] == [
            {"userId": "guest_6f1c2a9e", "reason": "heartbeat_timeout"}]


def test_tell_many_sends_one_event_per_guest_in_order(signaling, notify_cluster):
    first, second = signaling.servers(2)
    clients = [signaling.client(first), signaling.client(second)]
    guests = [(f"guest_{n}", reason) for n, reason in enumerate(["orphan", "ping_timeout", "malformed"])]

    notify_cluster().tell_many([(cleared(u), why) for u, why in guests])

    for client in clients:
        assert wait_for(lambda: len(guest_left(client)) == 3, timeout=10)
        assert guest_left(client) == [{"userId": u, "reason": r} for u, r in guests]


def test_tell_uses_the_configured_event_name(signaling, notify_cluster):
    client = signaling.client(signaling.servers(1)[0])

    tell(notify_cluster(event="guestGone"), "guest_1", "orphan")

    assert client.expect("message", name="guestGone")["args"] == [{"userId": "guest_1", "reason": "orphan"}]
    assert client.received("guestLeft") == []


def test_tell_reaches_only_the_configured_prefix_and_namespace(signaling, notify_cluster):
    custom = signaling.client(signaling.servers(1, "voip-sig", "/calls")[0])
    default = signaling.client(signaling.servers(1)[0])

    assert tell(notify_cluster(**CUSTOM), "guest_1", "orphan") == 1
    tell(notify_cluster(), "guest_marker", "orphan")

    assert custom.expect("message", name="guestLeft")["args"] == [{"userId": "guest_1", "reason": "orphan"}]
    default.expect("message", name="guestLeft")
    # Redis delivers in publish order: the marker came second, so the first was never delivered
    assert guest_left(default) == [{"userId": "guest_marker", "reason": "orphan"}]
    assert guest_left(custom) == [{"userId": "guest_1", "reason": "orphan"}]


# -- fence -------------------------------------------------------------------------------------

@pytest.mark.parametrize("holder", [0, 1])
def test_fence_disconnects_the_socket_on_whichever_server_holds_it(signaling, notify_cluster, holder):
    servers = signaling.servers(2)
    clients = [signaling.client(servers[0]), signaling.client(servers[1])]
    target, bystander = clients[holder], clients[1 - holder]

    assert notify_cluster().fence(permit("fence", [target.id])) == 2

    assert target.expect("disconnect")["reason"] == "io server disconnect"
    holding = servers[holder]
    assert holding.expect("disconnect", id=target.id)["reason"] == "server namespace disconnect"
    # close=true: the server closed the connection itself, not the client after the fact
    assert holding.expect("connection_closed", id=target.id)["reason"] == "forced close"
    answer = notify_cluster().ask([target.id, bystander.id])
    assert answer.verdict(target.id) == NOT_ATTACHED and answer.verdict(bystander.id) == ATTACHED
    assert bystander.events("disconnect") == []


def test_fence_of_several_sockets_at_once(signaling, notify_cluster):
    first, second = signaling.servers(2)
    a, b, c = signaling.client(first), signaling.client(second), signaling.client(second)

    notify_cluster().fence(permit("fence", [a.id, b.id, "not-connected-anywhere"]))

    a.expect("disconnect")
    b.expect("disconnect")
    assert notify_cluster().ask([a.id, b.id, c.id]).attached == {c.id}


def test_fence_with_an_empty_list_sends_nothing(signaling, notify_cluster):
    client = signaling.client(signaling.servers(1)[0])
    assert notify_cluster().fence(permit("fence", [])) == 0
    assert notify_cluster().ask([client.id]).verdict(client.id) == ATTACHED


# -- ask ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("specific", [(), (1,), (0, 1)], ids=["shared", "mixed", "per-requester"])
def test_ask_finds_a_socket_on_either_server_and_not_one_that_is_gone(signaling, notify_cluster, specific):
    """Servers answer on the shared response channel, or with publishOnSpecificResponseChannel
    on the requester's own: both are heard."""
    first, second = signaling.servers(2, specific_response=specific)
    a, b, gone = signaling.client(first), signaling.client(second), signaling.client(second)
    gone.stop()
    second.expect("disconnect", id=gone.id)

    answer = ask_until_done(notify_cluster(), [a.id, b.id, gone.id])  # both servers answered

    assert answer.attached == {a.id, b.id}
    assert [answer.verdict(s) for s in (a.id, b.id, gone.id)] == [ATTACHED, ATTACHED, NOT_ATTACHED]
    assert (answer.complete, answer.expected, answer.answered, answer.why) == (True, 2, 2, "")


def test_ask_follows_the_configured_prefix_and_namespace(signaling, notify_cluster):
    custom = signaling.client(signaling.servers(1, "voip-sig", "/calls")[0])
    signaling.servers(1)  # on the default channels: not part of this tier

    answer = notify_cluster(**CUSTOM).ask([custom.id])

    assert answer.verdict(custom.id) == ATTACHED and answer.expected == 1
    assert notify_cluster().ask([custom.id]).verdict(custom.id) == NOT_ATTACHED


def test_with_no_server_nothing_is_attached_and_nobody_waits(r, signaling, notify_cluster):
    cluster = notify_cluster()
    before = commands(r)

    answer = ask_until_done(cluster, ["Qx7b2M1dZk_AAAB"])

    ran = commands(r) - before
    ran.pop("info", None)
    assert ran == Counter({"pubsub|numsub": 1})  # no wait for answers: one PUBSUB NUMSUB, nothing else
    assert answer.verdict("Qx7b2M1dZk_AAAB") == NOT_ATTACHED
    assert (answer.complete, answer.expected, answer.answered) == (True, 0, 0)
    assert "no signaling server subscribes socket.io-request#/#" in answer.why
    assert cluster.servers() == 0 and tell(cluster, "guest_1", "orphan") == 0 and cluster.fence(permit("fence", ["x"])) == 0
    assert r.pubsub_channels() == []  # nothing subscribed, nothing left behind


def test_asking_for_nothing_asks_nobody(notify_cluster):
    answer = notify_cluster().ask([])
    assert answer.asked == frozenset() and answer.complete and answer.why == ""


def test_a_frozen_server_makes_the_answer_unknown_within_the_timeout(signaling, notify_cluster):
    first, second = signaling.servers(2)
    a, b = signaling.client(first), signaling.client(second)
    second.pause()  # SIGSTOP: still subscribed in Redis, never answers

    answer = notify_cluster(ask_timeout_s=0.5).ask([a.id, b.id, "gone-socket"])

    assert answer.verdict(a.id) == ATTACHED  # one server's word is enough for "attached"
    assert answer.verdict(b.id) == UNKNOWN and answer.verdict("gone-socket") == UNKNOWN
    assert (answer.complete, answer.expected, answer.answered) == (False, 2, 1)
    assert answer.why == "1 of 2 servers answered within 0.5s"
    assert answer.elapsed_s >= 0.5  # it waited its timeout out for the frozen one (and came back)
    second.resume()
    assert notify_cluster().ask([b.id]).verdict(b.id) == ATTACHED


def test_ask_stops_as_soon_as_every_socket_is_found(signaling, notify_cluster):
    first, second = signaling.servers(2)
    a = signaling.client(first)
    second.pause()

    answer = ask_until_done(notify_cluster(), [a.id])  # the frozen one never answers

    assert answer.verdict(a.id) == ATTACHED and answer.complete
    assert answer.answered == 1 and answer.expected == 2 and answer.why == ""


def test_ask_leaves_no_subscription_behind(r, signaling, notify_cluster):
    signaling.servers(2)
    cluster = notify_cluster()
    before = set(r.pubsub_channels())

    cluster.ask(["x"])

    assert set(r.pubsub_channels()) == before
    assert cluster.channels.response_for(cluster.uid).encode() not in before


# -- ask against a stand-in server that answers badly -----------------------------------------

class Impostor:
    """A subscriber of the request channel that answers each request with ``reply(request)``
    (a list of message bodies), as a buggy or foreign server might."""

    def __init__(self, redis_server, reply, channels=("socket.io-request#/#", "socket.io-response#/#")):
        self.client = redis_server.client()
        self.pubsub = self.client.pubsub()
        self.reply, self.response_channel = reply, channels[1]
        self.pubsub.subscribe(**{channels[0]: self._on_request})
        self.thread = self.pubsub.run_in_thread(sleep_time=0.01, daemon=True)

    def _on_request(self, message) -> None:
        for body in self.reply(json.loads(message["data"])):
            self.client.publish(self.response_channel, body)

    def close(self) -> None:
        self.thread.stop()
        self.thread.join(5)
        self.pubsub.close()
        self.client.close()


@pytest.fixture
def impostor(redis_server, r):
    made = []

    def make(reply) -> Impostor:
        made.append(Impostor(redis_server, reply))
        assert wait_for(lambda: dict(r.pubsub_numsub("socket.io-request#/#"))[b"socket.io-request#/#"] == 1)
        return made[-1]

    yield make
    for one in made:
        one.close()


def answer_to(request, body) -> bytes:
    return json.dumps({"requestId": request["requestId"], **body}).encode()


def test_an_unreadable_answer_makes_the_verdict_unknown_not_absent(impostor, notify_cluster):
    impostor(lambda req: [answer_to(req, {"sockets": "garbage"})])

    answer = ask_until_done(notify_cluster(), ["s1"])  # an unreadable answer is an answer: no more to wait for

    assert answer.verdict("s1") == UNKNOWN
    assert answer.why == "1 of 1 answers were unreadable"


def test_answers_to_other_requests_and_noise_are_ignored(impostor, notify_cluster):
    impostor(lambda req: [b"\xc1 not msgpack", b"{not json", json.dumps({"requestId": "other", "sockets": []}).encode(),
                          answer_to(req, {"sockets": [{"id": "s1"}, {"id": "not-asked"}]})])

    answer = notify_cluster(ask_timeout_s=5.0).ask(["s1", "s2"])

    assert answer.attached == {"s1"}  # a socket nobody asked about is not taken in
    assert answer.verdict("s2") == NOT_ATTACHED and (answer.expected, answer.answered) == (1, 1)


def test_a_silent_subscriber_times_out_to_unknown(impostor, notify_cluster):
    impostor(lambda req: [])

    answer = notify_cluster(ask_timeout_s=0.3).ask(["s1"])

    assert answer.verdict("s1") == UNKNOWN and answer.why == "0 of 1 servers answered within 0.3s"


def test_the_request_is_what_the_adapter_reads(impostor, notify_cluster):
    seen = []
    impostor(lambda req: seen.append(req) or [answer_to(req, {"sockets": []})])
    cluster = notify_cluster()

    cluster.ask(["s2", "s1"])

    assert len(seen) == 1
    assert seen[0] == {"uid": cluster.uid, "requestId": seen[0]["requestId"], "type": 5,
                       "opts": {"rooms": ["s1", "s2"], "except": []}}


# -- the cold-start check (docs/design.md, the startup purge) ----------------------------------------------------------

def test_cold_start_counts_real_servers_and_sweeps_instead_of_purging(signaling, ctx_factory, world, logs):
    live = world.guest(1, age=5)
    signaling.servers(2, "voip-sig", "/calls")

    start_now = startup(ctx_factory(startup__purge="cold", notify__channel_prefix="voip-sig",
                                    notify__namespace="/calls"))

    assert SWEEP in start_now and world.records() == {live[1]}
    assert any("2 signaling server(s) subscribe voip-sig-request#/calls#" in m for _, m in logs)


def test_concurrent_asks_each_get_their_own_answers(signaling, notify_cluster):
    first, second = signaling.servers(2, specific_response=(1,))
    a, b = signaling.client(first), signaling.client(second)
    results = {}

    def ask(name, sockets):
        results[name] = notify_cluster(ask_timeout_s=5.0).ask(sockets)

    threads = [threading.Thread(target=ask, args=(n, s)) for n, s in (("a", [a.id]), ("b", [b.id, "x"]))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert results["a"].attached == {a.id} and results["b"].attached == {b.id}
    assert results["a"].complete and results["b"].complete


def test_a_redis_error_makes_ask_unknown_and_tell_and_fence_raise():
    unreachable = redis.Redis(host="127.0.0.1", port=find_free_port(), retry=None)
    cluster = SignalingCluster(unreachable, NotifyConfig())

    answer = cluster.ask(["s1"])

    assert answer.verdict("s1") == UNKNOWN and answer.why.startswith("redis: ")
    with pytest.raises(redis.ConnectionError):
        tell(cluster, "guest_1", "orphan")
    with pytest.raises(redis.ConnectionError):
        cluster.fence(permit("fence", ["s1"]))
