"""Commands that span slots on a Redis Cluster go one a key, as one plain pipeline per primary
(reaper/store/cluster.py ``each_on_its_node``). Reads follow a resharding; writes (the takes) are
never sent twice: a take whose node said "elsewhere" did not run and waits for the next sweep, and
one whose node did not answer may have run, so its held intent stays held. A cluster of its own
(its slots are moved here), never the session's."""

import time

import pytest
import redis

from reaper.core.keys import Keys
from reaper.core.names import decode_name
from reaper.store import cluster
from reaper.store.sweep_scripts import OrphanTake, RecordTake
from support.cluster_proc import RedisClusterProcess

CONN = "guest_connection:"
HOLD_S = 60.0
HOSTILE = [b"..", b"cleanup-all", b"a\r\nDEL x", b"nul\x00byte", b"\xff\xfe not utf-8", b"{tag}x", b"x" * 4096]


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory):
    with RedisClusterProcess(tmp_path_factory.mktemp("own-cluster")) as server:
        yield server


@pytest.fixture
def client(own_cluster):
    """reaper's own cluster client (names as read), on a flushed cluster."""
    own_cluster.flushall()
    client = cluster.connect(own_cluster.url, {"socket_timeout": 10})
    yield client
    client.close()


def _keys() -> Keys:
    return Keys(CONN, "guest_session:", "users:online", "reaper:", cluster=True)


def _spread(own_cluster, count: int) -> list[bytes]:
    """``count`` guest key names, on every primary."""
    names = [f"{CONN}sock{n}".encode() for n in range(count)]
    assert len({own_cluster.node_of(name).port for name in names}) == 3, "the test needs keys on every node"
    return names


def _take(name: bytes, witness: bytes) -> RecordTake:
    key = decode_name(name)
    return RecordTake(key, _keys().quarantine(key), False, "string", (witness, b""),
                      f"guest:{key}", '{"steps":["auth"]}')


def _held(client, take: RecordTake) -> tuple:
    keys = _keys()
    return client.hget(keys.intents, take.intent_id), client.zscore(keys.due, take.intent_id)


# -- reads ----------------------------------------------------------------------------------------

def test_reads_answer_as_the_cluster_does_on_every_node(own_cluster, client):
    names = _spread(own_cluster, 30) + [CONN.encode() + n for n in HOSTILE]
    for i, name in enumerate(names):
        if i % 3 == 0:
            client.set(name, b"v%d" % i)
        elif i % 3 == 1:
            client.hset(name, "f", "v")  # another type: MGET's nil
    absent = CONN.encode() + b"never-written"

    values = cluster.get_each(client, names + [absent])
    found = cluster.exist_each(client, [decode_name(n) for n in names] + [absent])

    assert values == [b"v%d" % i if i % 3 == 0 else None for i in range(len(names))] + [None]
    assert found == [int(i % 3 != 2) for i in range(len(names))] + [0]


def test_a_read_of_a_slot_moved_since_follows_it(own_cluster, client):
    name = f"{CONN}moving".encode()
    client.set(name, b"here")
    cluster.get_each(client, [name])  # the client's map now says where the slot was
    elsewhere = next(n for n in own_cluster.nodes if n is not own_cluster.node_of(name))

    own_cluster.move_slot_of(name, elsewhere)

    assert cluster.get_each(client, [name]) == [b"here"]
    assert cluster.exist_each(client, [name]) == [1]
    assert own_cluster.node_of(name) is elsewhere


# -- writes ---------------------------------------------------------------------------------------

def test_takes_on_every_node_take_each_record_once(own_cluster, client):
    names = _spread(own_cluster, 30)
    for name in names:
        client.set(name, b"stale " + name)
    takes = [_take(name, b"stale " + name) for name in names]
    takes[4] = _take(names[4], b"read before it changed")
    takes.append(_take(names[7], b"stale " + names[7]))  # named twice: taken once

    taken = cluster.ClusterTakes(client, _keys(), HOLD_S).records(1000.0, 2000.0, "string", takes)

    assert taken == [i != 4 for i in range(30)] + [False]
    assert [bool(client.exists(name)) for name in names] == [i == 4 for i in range(30)]
    assert _held(client, takes[0]) == (takes[0].intent.encode(), 2000.0)  # confirmed: due
    assert _held(client, takes[4]) == (None, None)  # not taken: its held intent dropped


def test_a_take_of_a_slot_moved_since_is_left_for_the_next_sweep(own_cluster, client):
    name = f"{CONN}resharded".encode()
    client.set(name, b"stale")
    takes = cluster.ClusterTakes(client, _keys(), HOLD_S)
    cluster.get_each(client, [name])  # the client's map now says where the slot was
    own_cluster.move_slot_of(name, next(n for n in own_cluster.nodes if n is not own_cluster.node_of(name)))

    first = takes.records(1000.0, 2000.0, "string", [_take(name, b"stale")])

    # "MOVED": the node did not run it, so its intent is rightly dropped and the record stays.
    assert first == [False] and client.get(name) == b"stale"
    assert _held(client, _take(name, b"stale")) == (None, None)
    client.nodes_manager.initialize()  # what the client learns on its next redirected read
    assert takes.records(1000.0, 2000.0, "string", [_take(name, b"stale")]) == [True]
    assert client.exists(name) == 0 and _held(client, _take(name, b"stale"))[1] == 2000.0


def test_a_take_whose_node_does_not_answer_is_not_sent_again_and_its_intent_stays_held(own_cluster):
    own_cluster.flushall()
    client = cluster.connect(own_cluster.url, {"socket_timeout": 0.5})
    intents_node = own_cluster.node_of(_keys().intents.encode())
    name = next(n for n in (f"{CONN}silent{i}".encode() for i in range(100))
                if own_cluster.node_of(n) is not intents_node)  # the intent is held elsewhere
    client.set(name, b"stale")
    take = _take(name, b"stale")
    takes = cluster.ClusterTakes(client, _keys(), HOLD_S)
    takes.records(1000.0, 2000.0, "string", [_take(f"{CONN}warmup".encode(), b"-")])  # scripts loaded
    node = own_cluster.node_of(name)
    with node.client() as admin:
        connections = admin.info("stats")["total_connections_received"]
        admin.execute_command("CLIENT", "PAUSE", 3000, "ALL")  # TAKE_ONE waits, unanswered
        try:
            with pytest.raises((redis.TimeoutError, redis.ConnectionError)):
                takes.records(1000.0, 2000.0, "string", [take])
            # INFO is answered once the pause ends, after any second try would have been made: one
            # connection for the one try (or none: the pool's own); a second try opens another.
            assert admin.info("stats")["total_connections_received"] - connections <= 1
        finally:
            admin.execute_command("CLIENT", "UNPAUSE")
    # Neither confirmed nor dropped: due when its hold ends, so the cascade looks again then.
    assert _held(client, take) == (take.intent.encode(), 1000.0 + HOLD_S)
    client.close()


def test_orphans_on_a_cluster_are_removed_once_and_only_unchanged(own_cluster, client):
    keys = _keys()
    for n in range(5):
        client.hset(keys.online, f"guest_{n}", f'{{"socketId":"s{n}"}}')
    client.set(f"{CONN}s3", b"came back")
    orphans = [OrphanTake(f"guest_{n}", f'{{"socketId":"s{n}"}}'.encode(), f"{CONN}s{n}", f"guest:guest_{n}",
                          '{"steps":["auth"]}') for n in range(5)]
    orphans[1] = OrphanTake("guest_1", b"read before it changed", f"{CONN}s1", "guest:guest_1", '{"steps":[]}')
    orphans.append(orphans[0])  # named twice: removed once

    taken = cluster.ClusterTakes(client, keys, HOLD_S).orphans(time.time(), 2000.0, orphans)

    assert taken == [True, False, True, False, True, False]
    assert sorted(client.hkeys(keys.online)) == [b"guest_1", b"guest_3"]
    assert client.zscore(keys.due, "guest:guest_0") == 2000.0
    assert client.hget(keys.intents, "guest:guest_1") is None


def test_orphans_whose_online_list_moved_since_are_left_for_the_next_sweep(own_cluster, client):
    keys = _keys()
    client.hset(keys.online, "guest_1", b'{"socketId":"s1"}')
    orphan = OrphanTake("guest_1", b'{"socketId":"s1"}', f"{CONN}s1", "guest:guest_1", '{"steps":["auth"]}')
    takes = cluster.ClusterTakes(client, keys, HOLD_S)
    takes.orphans(1000.0, 2000.0, [OrphanTake("guest_0", b"-", None)])  # scripts loaded, the map read
    online = keys.online.encode()
    own_cluster.move_slot_of(online, next(n for n in own_cluster.nodes if n is not own_cluster.node_of(online)))

    # "MOVED": REMOVE_ENTRY did not run, so the entry stays and its held intent goes.
    assert takes.orphans(1000.0, 2000.0, [orphan]) == [False]
    assert client.hget(keys.online, "guest_1") == b'{"socketId":"s1"}'
    assert client.hget(keys.intents, "guest:guest_1") is None


def test_a_node_that_lost_the_scripts_gets_them_again(own_cluster, client):
    name = f"{CONN}forgetful".encode()
    client.set(name, b"stale")
    takes = cluster.ClusterTakes(client, _keys(), HOLD_S)
    takes.records(1000.0, 2000.0, "string", [_take(f"{CONN}warmup".encode(), b"-")])  # scripts loaded
    with own_cluster.node_of(name).client() as node:
        node.script_flush()  # as a node new since a failover would be

    assert takes.records(1000.0, 2000.0, "string", [_take(name, b"stale")]) == [True]
    assert client.exists(name) == 0


def test_a_wrong_type_of_users_online_is_an_error_not_a_removal(client):
    keys = _keys()
    client.set(keys.online, b"not a hash")
    orphan = OrphanTake("guest_1", b"{}", f"{CONN}s1", "", "")

    with pytest.raises(redis.ResponseError):
        cluster.ClusterTakes(client, keys, HOLD_S).orphans(1000.0, 2000.0, [orphan])
    assert client.get(keys.online) == b"not a hash"

