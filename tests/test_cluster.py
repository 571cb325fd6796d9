"""Redis Cluster (issue #4): a real local cluster of three primaries. What is the same as on a
single Redis runs in the modules marked ``cluster_too``; here is what only a cluster has: keys
spread over nodes, slots, no cross-slot script, and a removal done in three steps."""

import pytest
import redis
from redis.crc import key_slot

from reaper.store import cluster
from reaper.core.config import load_config
from reaper.core.errors import ConfigError
from reaper.core.keys import Keys
from reaper.signaling.servers import SignalingCluster
from support.cli import invoke
from support.cluster_proc import RedisClusterProcess
from support.guests import CONN, World
from support.standin import wait_for
from sweep_helpers import assert_intents_consistent, due_ids, intents, keys_of, with_seams



@pytest.fixture
def redis_backend():
    """Every test here runs on the cluster."""
    return "cluster"


def _nodes_holding(r) -> int:
    return sum(1 for node in cluster.primaries(r) if node.dbsize() > 0)


# -- configuration ------------------------------------------------------------------------------

@pytest.mark.parametrize("url,env,expected", [
    ("redis://10.0.0.1:7000/0", {"REAPER_REDIS_SENTINELS": "10.0.0.5:26379"}, "redis.sentinels"),
    ("unix:///run/redis.sock", {}, "redis.url"),
    ("redis://10.0.0.1:7000/2", {}, "database 0"),
    ("redis://10.0.0.1:7000", {"REAPER_REDIS_REAPER_PREFIX": "{reaper}:"}, "redis.reaper_prefix"),
])
def test_cluster_settings_that_cannot_work_are_refused(url, env, expected):
    with pytest.raises(ConfigError) as refused:
        load_config(None, {"REAPER_REDIS_URL": url, "REAPER_REDIS_CLUSTER": "true", **env})
    assert expected in str(refused.value)


@pytest.mark.parametrize("url,is_cluster", [
    ("redis+cluster://10.0.0.1:7000", True), ("rediss+cluster://10.0.0.1:7000", True),
    ("redis://10.0.0.1:7000", False),
])
def test_a_cluster_url_means_cluster(url, is_cluster):
    assert load_config(None, {"REAPER_REDIS_URL": url}).redis.is_cluster is is_cluster


def test_cascade_keys_share_a_slot_and_quarantine_stays_with_its_record():
    keys = Keys("guest_connection:", "guest_session:", "users:online", "reaper:", cluster=True)
    assert len({key_slot(k.encode()) for k in (keys.intents, keys.due, keys.dead)}) == 1
    for original in ("guest_connection:Qx7b2M1dZk_AAAB", "guest_connection:{tagged}rest"):
        assert key_slot(keys.quarantine(original).encode()) == key_slot(original.encode())
    single = Keys("guest_connection:", "guest_session:", "users:online", "reaper:")
    assert (single.intents, single.quarantine("guest_connection:x")) == (
        "reaper:cascade:intents", "reaper:quarantine:guest_connection:x")


# -- sweeping across nodes ----------------------------------------------------------------------

def test_every_primary_is_scanned(ctx_factory, r):
    world = World(r)
    dead = {world.guest(n, age=600)[0] for n in range(60)}
    live = {world.guest(n, age=5)[1] for n in range(100, 160)}
    assert _nodes_holding(r) == 3, "the test needs guests on every node"

    report = ctx_factory().sweep()

    assert report.scanned == 120 and report.reaped["heartbeat_timeout"] == 60
    assert world.records() == live
    assert {i["user_id"] for i in intents(r).values()} == dead
    assert_intents_consistent(r)


def test_orphans_are_taken_where_users_online_lives(ctx_factory, r):
    world = World(r)
    for n in range(30):
        world.entry(f"guest_{n}", f"sock{n}")  # no record: orphans
    world.guest(99, age=5)
    world.registered("user_1", "sockR")

    report = ctx_factory().sweep()

    assert report.reaped["orphan"] == 30
    assert set(world.online()) == {"guest_99", "user_1"}
    assert {i["user_id"] for i in intents(r).values()} == {f"guest_{n}" for n in range(30)}
    assert_intents_consistent(r)


def test_a_malformed_record_is_quarantined_in_its_own_slot(ctx_factory, r):
    r.set(CONN + "sockM", b"not json")
    r.set(CONN + "{tag}M", b"not json either")  # a socket id with braces: its own hash tag

    report = ctx_factory().sweep()

    assert report.malformed == 2 and report.quarantined == 2
    assert r.get(keys_of(r).quarantine(CONN + "sockM")) == b"not json"
    assert r.get(keys_of(r).quarantine(CONN + "{tag}M")) == b"not json either"
    assert not r.exists(CONN + "sockM") and not r.exists(CONN + "{tag}M")


def test_evictions_on_any_node_skip_orphans(ctx_factory, r, monkeypatch):
    world = World(r)
    world.entry("guest_1", "sock1")
    ctx = ctx_factory()
    ctx.sweep()  # remembers the evictions so far
    world.entry("guest_2", "sock2")
    counts = iter([0, 0, 7])  # the third primary evicted keys since
    monkeypatch.setattr(cluster, "info_total",
                        lambda client, section, field: sum(next(counts) for _ in cluster.primaries(client)))

    report = ctx.sweep()

    assert report.orphans_skipped and "guest_2" in world.online()


# -- a removal in three steps --------------------------------------------------------------------

def test_a_sweep_killed_before_its_takes_leaves_held_intents_that_harm_nobody(ctx_factory, r, auth_service):
    world = World(r)
    live_user, live_sock = world.guest(1, age=5)
    dead_user, dead_sock = world.guest(2, age=600)

    def killed(keys):
        raise redis.ConnectionError("killed")

    with pytest.raises(redis.ConnectionError):
        with_seams(ctx_factory(), before_cluster_keys_taken=killed).sweep()
    held = intents(r)
    assert set(held) == {f"guest:{dead_user}"} and world.records() == {live_sock, dead_sock}
    assert due_ids(r) == set(held)
    # The held intent is due only after the hold: no cascade runs it before the take is known.
    ctx = ctx_factory()
    assert ctx.drain().claimed == 0
    # Meanwhile the guest came back: its record is fresh again. Past the hold, the cascade drops it.
    world.guest(2, age=0)
    r.zadd(keys_of(r).due, {f"guest:{dead_user}": 0})

    report = ctx.drain()

    assert report.skipped_live == 1 and intents(r) == {}
    assert dead_user in world.online() and auth_service.deleted_guests() == []


def test_a_take_refused_drops_its_held_intent_and_keeps_a_pending_one(ctx_factory, r):
    world = World(r)
    user, sock = world.guest(1, age=600)
    pending = '{"pending": true}'
    r.hset(keys_of(r).intents, f"guest:{user}", pending)
    r.zadd(keys_of(r).due, {f"guest:{user}": 123})
    world.guest(3, age=600)

    def both_move_on(keys):  # rewritten, still stale: the takes find them changed
        for n in (1, 3):
            world.guest(n, age=600, entry=False, roomId="other")

    report = with_seams(ctx_factory(), before_cluster_keys_taken=both_move_on).sweep()

    assert report.skipped_live == 2 and sum(report.reaped.values()) == 0
    assert r.hget(keys_of(r).intents, f"guest:{user}") == pending.encode()  # untouched
    assert r.zscore(keys_of(r).due, f"guest:{user}") == 123
    assert set(intents_raw(r)) == {f"guest:{user}"}  # guest_3's held intent is gone


def intents_raw(r) -> dict:
    return {k.decode(): v for k, v in r.hgetall(keys_of(r).intents).items()}


# -- around the sweep ---------------------------------------------------------------------------

def test_cold_start_counts_subscribers_on_every_node(ctx_factory, r, redis_cluster):
    ctx = ctx_factory()
    tier = SignalingCluster(ctx.client, ctx.config.notify)
    assert tier.servers() == 0
    node = redis_cluster.nodes[2].client()
    subscriber = node.pubsub()
    subscriber.subscribe(tier.channels.request)
    try:
        assert wait_for(lambda: tier.servers() == 1, timeout=5)
    finally:
        subscriber.close()
        node.close()


def test_check_says_it_is_a_cluster(cli_env):
    result = invoke(["check"], cli_env)

    assert "cluster of 3 primaries" in result.output, result.output


def test_a_daemon_started_before_its_cluster_waits_for_it(launch, tmp_path):
    later = RedisClusterProcess(tmp_path / "later")
    daemon = launch("run", REAPER_REDIS_URL=later.url, REAPER_REDIS_CLUSTER="true")
    try:
        assert daemon.wait_log("Redis unreachable", timeout=20), daemon.stderr()
        later.start()
        with later.client() as client:
            World(client).guest(1, age=600)
            assert wait_for(lambda: not World(client).records(), timeout=30), daemon.stderr()
        assert daemon.stop() == 0
    finally:
        later.stop()


def test_run_once_against_a_cluster_that_is_down_exits_3(launch, tmp_path):
    never = RedisClusterProcess(tmp_path / "never")
    done = launch("run", "--once", REAPER_REDIS_URL=never.url, REAPER_REDIS_CLUSTER="true")

    assert done.proc.wait(30) == 3
    assert "Redis unreachable" in done.stderr()
