"""Issue #16 item 4: `reaper dead-letters retry` of a purge's letter goes through the same question
as the drain's gate: while a signaling server is attached (PUBSUB NUMSUB on the socket.io request
channel) the letter is not requeued and the CLI says why (exit 1); on a cold tier it is requeued,
and the drain's gate asks again at the moment of the call. Guest letters are unaffected.

A signaling server is stood in for by a real subscriber of the request channel, and by real
Node.js socket.io servers in one variant (on one Redis, as the ACL variant)."""

import json
import time

import pytest
from redis.cluster import RedisCluster

from reaper.core.intents import guest_intent
from reaper.app.purge import purge
from support.cli import invoke
from support.guests import redis_now
from sweep_helpers import keys_of

REQUEST_CHANNEL = "socket.io-request#/#"
CLEANUP_ALL = "/auth/guest/cleanup-all"
AUTH_GUEST = "/auth/guest/guest_"
LIVE_LINE = ("purge step auth_all not retried: {attached} attached, so the tier holds live guests; "
             "it would be dropped anyway")


class Server:
    """A signaling server as Redis sees it: a subscriber of the socket.io adapter's request channel."""

    def __init__(self, r):
        node = r.get_redis_connection(r.get_primaries()[0]) if isinstance(r, RedisCluster) else r
        self.r, self.listener = r, node.pubsub()
        self.listener.subscribe(REQUEST_CHANNEL)
        assert self.listener.get_message(timeout=5)["type"] == "subscribe"

    def leave(self) -> None:
        self.listener.close()
        deadline = time.monotonic() + 10
        while subscribers(self.r):  # Redis forgets the subscription once it sees the connection closed
            assert time.monotonic() < deadline, "the subscriber never left"
            time.sleep(0.01)  # poll interval, bounded by the deadline


def subscribers(r) -> int:
    if isinstance(r, RedisCluster):
        nodes = [r.get_redis_connection(node) for node in r.get_primaries()]
    else:
        nodes = [r]
    return sum(int(dict(node.pubsub_numsub(REQUEST_CHANNEL)).get(REQUEST_CHANNEL.encode(), 0)) for node in nodes)


@pytest.fixture
def server(r):
    attached = []
    yield lambda: attached.append(Server(r)) or attached[-1]
    for one in attached:
        one.listener.close()


def letters(r) -> list[dict]:
    return [json.loads(raw) for raw in r.lrange(keys_of(r).dead, 0, -1)]


def pending(r) -> set[str]:
    return {k.decode() for k in r.hkeys(keys_of(r).intents)}


@pytest.fixture
def buried(r, ctx_factory, auth_service):
    """Dead letters made the real way, oldest first: a purge whose cleanup-all was refused (403),
    then guest_1 and guest_2 refused (401)."""
    ctx = ctx_factory(mongo__uri="")
    auth_service.fail(403, path_prefix=CLEANUP_ALL)
    purge(ctx)
    assert ctx.drain().dead == 1
    auth_service.fail(401, path_prefix=AUTH_GUEST)
    for user_id in ("guest_1", "guest_2"):
        intent = guest_intent(user_id, None, "orphan", redis_now(r), False, ["auth"])
        r.hset(keys_of(r).intents, intent.id, intent.to_json())
        r.zadd(keys_of(r).due, {intent.id: 0})
        assert ctx.drain().dead == 1
    assert [l["id"] for l in letters(r)] == ["guest:guest_2", "guest:guest_1", "purge"]
    assert letters(r)[2]["steps"] == ["auth_all"]
    auth_service.heal()  # the token is fixed, as docs/safety.md advises before a retry
    auth_service.clear()
    return ctx


def cleanup_alls(auth_service) -> int:
    return len(auth_service.calls("DELETE", CLEANUP_ALL))


# -- a live tier: refused up front -------------------------------------------------------------------

@pytest.mark.cluster_too
def test_retry_all_on_a_live_tier_requeues_the_guests_and_refuses_the_purge(
        cli_env, r, buried, server, auth_service):
    server()

    result = invoke(["dead-letters", "retry", "--all"], cli_env)

    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[0] == "Retried 2 dead letters: guest:guest_2, guest:guest_1"
    assert lines[1].startswith(LIVE_LINE.format(attached="1 signaling server is"))
    assert "reaper dead-letters drop purge" in lines[1]
    assert [l["id"] for l in letters(r)] == ["purge"]  # left where it was
    assert pending(r) == {"guest:guest_1", "guest:guest_2"}

    buried.drain()

    assert cleanup_alls(auth_service) == 0
    assert sorted(q.path for q in auth_service.calls("DELETE")) == ["/auth/guest/guest_1", "/auth/guest/guest_2"]


@pytest.mark.cluster_too
def test_retry_of_the_purge_by_id_on_a_live_tier_exits_1_and_moves_nothing(cli_env, r, buried, server):
    server()
    server()
    before = r.lrange(keys_of(r).dead, 0, -1)

    result = invoke(["dead-letters", "retry", "purge"], cli_env)

    assert result.exit_code == 1, result.output
    assert result.output.startswith(LIVE_LINE.format(attached="2 signaling servers are"))
    assert "Retried" not in result.output
    assert r.lrange(keys_of(r).dead, 0, -1) == before and pending(r) == set()


@pytest.mark.cluster_too
def test_guest_letters_alone_are_retried_on_a_live_tier(cli_env, r, buried, server):
    server()

    result = invoke(["dead-letters", "retry", "guest:guest_1"], cli_env)

    assert result.exit_code == 0, result.output
    assert result.output.strip() == "Retried 1 dead letter: guest:guest_1"
    assert pending(r) == {"guest:guest_1"}


# -- cold, then live -------------------------------------------------------------------------------

@pytest.mark.cluster_too
def test_the_purge_is_refused_while_live_and_requeued_once_the_tier_is_cold(
        cli_env, r, buried, server, auth_service):
    attached = server()
    refused = invoke(["dead-letters", "retry", "purge"], cli_env)
    assert refused.exit_code == 1 and "not retried" in refused.output

    attached.leave()  # the tier went cold
    result = invoke(["dead-letters", "retry", "purge"], cli_env)

    assert result.exit_code == 0, result.output
    assert result.output.strip() == "Retried 1 dead letter: purge"
    assert pending(r) == {"purge"} and [l["id"] for l in letters(r)] == ["guest:guest_2", "guest:guest_1"]
    buried.drain()
    assert cleanup_alls(auth_service) == 1 and pending(r) == set()


@pytest.mark.cluster_too
def test_a_purge_requeued_on_a_cold_tier_is_dropped_if_a_server_attaches_before_the_call(
        cli_env, r, buried, server, auth_service):
    result = invoke(["dead-letters", "retry", "purge"], cli_env)
    assert result.exit_code == 0 and pending(r) == {"purge"}

    server()  # a signaling server came up between the retry and the drain
    buried.drain()

    assert cleanup_alls(auth_service) == 0  # the drain's gate asked again, at the moment of the call
    assert pending(r) == set() and buried.counters.get("purge_dropped.auth_all") == 1


# -- letters written by hand -------------------------------------------------------------------------

def hand_written_purge(r, steps: list[str]) -> None:
    r.lpush(keys_of(r).dead, json.dumps({"id": "purge", "reason": "startup_purge", "created": redis_now(r),
                                         "steps": steps, "attempts": 3, "last_error": "HTTP 403"}))


@pytest.mark.cluster_too
def test_a_purge_letter_written_by_hand_is_refused_on_a_live_tier(cli_env, r, server, auth_service):
    hand_written_purge(r, ["auth_all", "users_all"])
    server()

    result = invoke(["dead-letters", "retry", "--all"], cli_env)

    assert result.exit_code == 1, result.output
    assert result.output.startswith("purge steps auth_all, users_all not retried: 1 signaling server is "
                                    "attached, so the tier holds live guests; it would be dropped anyway")
    assert r.llen(keys_of(r).dead) == 1 and pending(r) == set()


@pytest.mark.cluster_too
def test_a_purge_letter_written_by_hand_is_requeued_on_a_cold_tier(cli_env, r):
    hand_written_purge(r, ["users_all"])

    result = invoke(["dead-letters", "retry", "purge"], cli_env)

    assert result.exit_code == 0, result.output
    assert r.llen(keys_of(r).dead) == 0 and pending(r) == {"purge"}


# -- the real signaling tier (Node.js socket.io servers with the Redis adapter) ------------------------

def test_three_real_signaling_servers_keep_the_purge_letter_until_they_are_gone(
        cli_env, r, buried, signaling, auth_service):
    signaling.servers(3)

    result = invoke(["dead-letters", "retry", "--all"], cli_env)

    assert result.exit_code == 1, result.output
    assert LIVE_LINE.format(attached="3 signaling servers are") in result.output
    assert [l["id"] for l in letters(r)] == ["purge"]
    buried.drain()
    assert cleanup_alls(auth_service) == 0

    signaling.stop_all()  # the whole tier went down: cold
    cold = invoke(["dead-letters", "retry", "--all"], cli_env)

    assert cold.exit_code == 0 and cold.output.strip() == "Retried 1 dead letter: purge"
    buried.drain()
    assert cleanup_alls(auth_service) == 1


# -- Redis will not say ------------------------------------------------------------------------------

def test_a_purge_letter_is_refused_when_redis_will_not_say_who_is_attached(cli_env, r, redis_server):
    hand_written_purge(r, ["auth_all"])
    r.acl_setuser("nopubsub", enabled=True, passwords=["+pw-9f1"], keys=["~*"], channels=["*"],
                  commands=["+@all", "-pubsub"])
    url = redis_server.url.replace("redis://", "redis://nopubsub:pw-9f1@", 1)
    try:
        result = invoke(["dead-letters", "retry", "--all"], {**cli_env, "REAPER_REDIS_URL": url})
    finally:
        r.acl_deluser("nopubsub")

    assert result.exit_code == 1, result.output
    assert result.output.startswith("purge step auth_all not retried: could not ask whether a signaling "
                                    "server is attached")
    assert "pw-9f1" not in result.output
    assert r.llen(keys_of(r).dead) == 1 and pending(r) == set()
