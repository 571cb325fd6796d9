"""Redis Cluster: what a sweep does differently when the guest keys live on many nodes.

SCAN runs on every primary; commands that span slots go one a key, as one plain pipeline per
primary (``each_on_its_node``); INFO counters and PUBSUB NUMSUB are summed over the primaries,
because each node counts only its own. No script touches keys of two slots: ``ClusterTakes``
removes a guest in three steps instead of one script (scripts.TAKE_ONE and its neighbours say
how a crash between them is harmless).
"""

from collections.abc import Callable
from urllib.parse import urlsplit

import redis
from redis.cluster import RedisCluster
from redis.connection import ConnectionPool
from redis.crc import key_slot
from redis.exceptions import (AskError, ClusterDownError, MovedError, NoScriptError, RedisClusterException,
                              TryAgainError)

from reaper.store import scripts
from reaper.core.errors import RedisUnavailable
from reaper.core.keys import QUARANTINE_TTL_S, Keys
from reaper.core.names import encode_name
from reaper.store.packer import CLIENT_OPTIONS
from reaper.store.presence import remove_entry_args
from reaper.store.sweep_scripts import OrphanTake, RecordTake


def connect(url: str, options: dict) -> RedisCluster:
    """A cluster client from one node's address (it finds the others). Bytes in and out."""
    parts = urlsplit(url)
    url = parts._replace(scheme=parts.scheme.removesuffix("+cluster")).geturl()
    try:
        return RedisCluster.from_url(url, decode_responses=False, connection_pool_class=_NamesAsReadPool,
                                     encoding_errors=CLIENT_OPTIONS["encoding_errors"], **options)
    except RedisClusterException as exc:  # no node answered: like a single Redis that is down
        raise RedisUnavailable(f"redis cluster: {exc}") from exc


class _NamesAsReadPool(ConnectionPool):
    """A node's pool whose connections send names as read (reaper/core/names.py): RedisCluster
    hands its nodes only the options it knows, and a command packer is not one of them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, **CLIENT_OPTIONS})


def is_cluster(client) -> bool:
    return isinstance(client, RedisCluster)


def pick(client, single, clustered):
    """``clustered`` for a Redis Cluster's client, else ``single``: the one place a caller's
    way of working is chosen by the kind of Redis, once, at its start."""
    return clustered if is_cluster(client) else single


def primaries(client: RedisCluster) -> list[redis.Redis]:
    """A plain client per primary, for commands whose answer is the node's own."""
    return [client.get_redis_connection(node) for node in client.get_primaries()]


def pipeline(client: RedisCluster):
    """A pipeline whose key slots are those of the names reaper sends (reaper/core/names.py):
    redis-py gives a cluster pipeline an encoder of its own, which refuses such a name."""
    pipe = client.pipeline(transaction=False)
    pipe.encoder = client.encoder
    return pipe


def get_each(client: RedisCluster, names: list[bytes]) -> list:
    """What MGET answers, for keys of many slots: a GET each, one pipeline per node."""
    return [_nil_for_wrong_type(reply) for reply in each_on_its_node(client, [(name, ("GET", name)) for name in names])]


# The node says the key's slot is served elsewhere now, or not at the moment (a resharding, a
# failover): the command was not run.
_ELSEWHERE = (MovedError, AskError, TryAgainError, ClusterDownError)


def each_on_its_node(client: RedisCluster, commands: list[tuple[str | bytes, tuple]], writes: bool = False) -> list:
    """The replies (errors as values) of single-key commands, each given as (its key, the command):
    one plain pipeline per primary, routed by redis-py's slot map. redis-py's cluster pipeline
    costs ~15 µs of Python a command, a node's own pipeline a few.

    Reads answered "elsewhere", or whose node cannot be reached, go again through the cluster
    pipeline, which follows redirections and learns the new map. Writes are never sent twice: an
    "elsewhere" stays their reply (not run: the caller leaves the guest to the next sweep), and an
    unreachable node raises, as it may have run them without answering; the caller's held intents
    then stay held (scripts.TAKE_ONE says why that is harmless). redis-py's cluster client would
    send such a write again, and a take run twice answers "changed" the second time."""
    by_node: dict[str, list[int]] = {}
    nodes, owners = {}, getattr(client.nodes_manager, "slots_cache", {})  # slot -> [primary, replicas...]
    for i, (key, _) in enumerate(commands):
        slot = key_slot(encode_name(key) if isinstance(key, str) else key)
        served = owners.get(slot)  # read without the manager's lock: a stale map only redirects
        node = served[0] if served else client.nodes_manager.get_node_from_slot(slot)
        nodes[node.name] = node
        by_node.setdefault(node.name, []).append(i)
    replies: list = [None] * len(commands)
    again: list[int] = []
    for name, indexes in by_node.items():
        pipe = client.get_redis_connection(nodes[name]).pipeline(transaction=False)
        for i in indexes:
            pipe.execute_command(*commands[i][1])
        try:
            answers = pipe.execute(raise_on_error=False)
        except (redis.ConnectionError, redis.TimeoutError):
            if writes:
                raise
            again += indexes
            continue
        for i, answer in zip(indexes, answers):
            replies[i] = answer
            if isinstance(answer, _ELSEWHERE) and not writes:
                again.append(i)
    if again:
        pipe = pipeline(client)
        for i in again:
            pipe.execute_command(*commands[i][1])
        for i, answer in zip(again, pipe.execute(raise_on_error=False)):
            replies[i] = answer
    return replies


def _nil_for_wrong_type(reply):
    if isinstance(reply, redis.ResponseError) and str(reply).startswith("WRONGTYPE"):
        return None  # as MGET says for a key of another type; the caller asks TYPE
    if isinstance(reply, Exception):
        raise reply
    return reply


def exist_each(client: RedisCluster, names: list) -> list[int]:
    return [_raised(reply) for reply in each_on_its_node(client, [(name, ("EXISTS", name)) for name in names])]


def _raised(reply):
    if isinstance(reply, Exception):
        raise reply
    return reply


def info_total(client: RedisCluster, section: str, field: str) -> int:
    """An INFO counter summed over the primaries (evicted_keys: one node's evictions count)."""
    return sum(int(node.info(section).get(field, 0)) for node in primaries(client))


def info_of_each(client: RedisCluster) -> list[dict]:
    return [node.info() for node in primaries(client)]


def subscribers(client: RedisCluster, channel: str) -> int:
    """Subscribers of a (non-sharded) channel: each node counts only the clients connected to it."""
    return sum(int(dict(node.pubsub_numsub(channel)).get(channel.encode(), 0))
               for node in primaries(client))


class ClusterTakes:
    """The sweep's removals on a cluster, each guest on its own: intents held, guest keys taken
    one by one (compare-and-delete in the key's own slot), intents confirmed or dropped.
    ``before_keys_taken`` (a seam: a test's kill or race) sees the guest keys once their
    intents are held, right before they are taken."""

    def __init__(self, client: RedisCluster, keys: Keys, hold_s: float,
                 before_keys_taken: Callable[[list[str]], None] = lambda keys: None):
        self.client, self.keys, self.hold_s = client, keys, hold_s
        self.before_keys_taken = before_keys_taken
        self._hold = client.register_script(scripts.HOLD_INTENTS)
        self._confirm = client.register_script(scripts.CONFIRM_INTENTS)
        self._shas: dict[str, str] = {}  # script text -> SHA1, loaded on every primary

    def records(self, now: float, due: float, format_type: str, takes: list[RecordTake]) -> list[bool]:
        intents = [take.held_intent for take in takes]
        held = self._hold_intents(now, intents)
        self.before_keys_taken([take.key for take in takes])
        taken = self._take_each(format_type, takes)
        self._confirm_intents(due, intents, held, taken)
        return taken

    def orphans(self, now: float, due: float, orphans: list[OrphanTake]) -> list[bool]:
        intents = [orphan.held_intent for orphan in orphans]
        held = self._hold_intents(now, intents)
        taken = self._remove_entries(orphans)
        self._confirm_intents(due, intents, held, taken)
        return taken

    def _hold_intents(self, now: float, intents: list[tuple | None]) -> list[bool]:
        args = [now + self.hold_s] + [part for intent in intents if intent for part in intent]
        cascade_keys = [self.keys.intents, self.keys.due]
        answers = iter(self._hold(keys=cascade_keys, args=args) if len(args) > 1 else [])
        return [intent is not None and next(answers) == 1 for intent in intents]

    def _take_each(self, format_type: str, takes: list[RecordTake]) -> list[bool]:
        """TAKE_ONE per record, on its node; a record whose slot was elsewhere is left alone."""
        commands = []
        for take in takes:
            argv = take.take_one_argv()
            # A quarantine key outside the record's slot (a socket id with braces) cannot be a
            # RENAME target: such a malformed record is deleted instead of kept.
            if take.quarantined and key_slot(encode_name(take.key)) != key_slot(encode_name(take.quarantine)):
                argv = ["delete", *argv[1:]]
            commands.append((take.key, (2, take.key, take.quarantine, "", QUARANTINE_TTL_S, format_type, *argv)))
        return [reply == 1 for reply in self._run_each(scripts.TAKE_ONE, commands)]

    def _remove_entries(self, orphans: list[OrphanTake]) -> list[bool]:
        """Each orphan's entry, compare-and-removed, if its socket still has no record."""
        named = [(i, o.record_key) for i, o in enumerate(orphans) if o.record_key]
        back = {i for (i, _), found in zip(named, exist_each(self.client, [n for _, n in named])) if found}
        calls = remove_entry_args([(o.user_id, o.raw) for i, o in enumerate(orphans) if i not in back])
        online = self.keys.online
        replies = self._run_each(scripts.REMOVE_ENTRY, [(online, (1, online, *args)) for args in calls])
        # None: users:online's slot was elsewhere, nothing run (each entry left, as changed)
        answers = iter([one == 1 for args, reply in zip(calls, replies) for one in (reply or [0] * (len(args) // 2))])
        return [i not in back and next(answers) for i in range(len(orphans))]

    def _run_each(self, text: str, commands: list[tuple[str, tuple]]) -> list:
        """A script call per command (its key, then EVALSHA's numkeys, keys and arguments), each on
        its key's node and never sent twice (each_on_its_node): the replies, None where the key's
        slot was elsewhere (not run). A node that lacks the script (new since a failover) had
        it not run either: loaded, and sent again."""
        sha = self._shas.get(text) or self._shas.setdefault(text, self.client.script_load(text))  # every primary
        replies = self._evalsha_each(sha, commands)
        lacking = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if lacking:
            self.client.script_load(text)
            for i, reply in zip(lacking, self._evalsha_each(sha, [commands[i] for i in lacking])):
                replies[i] = reply
        return [None if isinstance(reply, _ELSEWHERE) else _raised(reply) for reply in replies]

    def _evalsha_each(self, sha: str, commands: list[tuple[str, tuple]]) -> list:
        return each_on_its_node(self.client, [(key, ("EVALSHA", sha, *rest)) for key, rest in commands], writes=True)

    def _confirm_intents(self, due: float, intents: list[tuple | None], held: list[bool],
                         taken: list[bool]) -> None:
        args = [due]
        for intent, was_held, ok in zip(intents, held, taken):
            if intent is None or not (was_held or ok):
                continue
            action = ("due" if was_held else "put") if ok else "drop"
            args += [*intent, action]
        if len(args) > 1:
            self._confirm(keys=[self.keys.intents, self.keys.due], args=args)

