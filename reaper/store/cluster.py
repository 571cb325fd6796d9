"""Redis Cluster: what a sweep does differently when the guest keys live on many nodes.

SCAN runs on every primary; reads that span slots go as pipelines of single-key commands
(redis-py sends one batch per node); INFO counters and PUBSUB NUMSUB are summed over the
primaries, because each node counts only its own. No script touches keys of two slots:
``ClusterTakes`` removes a guest in three steps instead of one script (scripts.TAKE_ONE and
its neighbours say how a crash between them is harmless).
"""

from collections.abc import Callable
from urllib.parse import urlsplit

import redis
from redis.cluster import RedisCluster
from redis.connection import ConnectionPool
from redis.crc import key_slot
from redis.exceptions import NoScriptError, RedisClusterException

from reaper.store import scripts
from reaper.core.errors import RedisUnavailable
from reaper.core.keys import QUARANTINE_TTL_S, Keys
from reaper.core.names import encode_name
from reaper.store.packer import CLIENT_OPTIONS
from reaper.store.presence import OnlineList
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
    """What MGET answers, for keys of many slots: a GET each, one pipeline batch per node."""
    pipe = pipeline(client)
    for name in names:
        pipe.get(name)
    return [_nil_for_wrong_type(reply) for reply in pipe.execute(raise_on_error=False)]


def _nil_for_wrong_type(reply):
    if isinstance(reply, redis.ResponseError) and str(reply).startswith("WRONGTYPE"):
        return None  # as MGET says for a key of another type; the caller asks TYPE
    if isinstance(reply, Exception):
        raise reply
    return reply


def exist_each(client: RedisCluster, names: list) -> list[int]:
    pipe = pipeline(client)
    for name in names:
        pipe.exists(name)
    return pipe.execute()


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

    def __init__(self, client: RedisCluster, keys: Keys, online: OnlineList, hold_s: float,
                 before_keys_taken: Callable[[list[str]], None] = lambda keys: None):
        self.client, self.keys, self.online, self.hold_s = client, keys, online, hold_s
        self.before_keys_taken = before_keys_taken
        self._hold = client.register_script(scripts.HOLD_INTENTS)
        self._confirm = client.register_script(scripts.CONFIRM_INTENTS)
        self._take_sha: str | None = None

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
        """TAKE_ONE per record, pipelined (EVALSHA; loaded again where a node lacks it)."""
        if self._take_sha is None:
            self._take_sha = self.client.script_load(scripts.TAKE_ONE)  # on every primary
        replies = self._evalsha_each(format_type, takes)
        if any(isinstance(reply, NoScriptError) for reply in replies):
            self.client.script_load(scripts.TAKE_ONE)  # a node new since (failover)
            replies = [self._evalsha_each(format_type, [take])[0] if isinstance(reply, NoScriptError)
                       else reply for take, reply in zip(takes, replies)]
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return [reply == 1 for reply in replies]

    def _evalsha_each(self, format_type: str, takes: list[RecordTake]) -> list:
        pipe = pipeline(self.client)
        for take in takes:
            argv = take.take_one_argv()
            # A quarantine key outside the record's slot (a socket id with braces) cannot be a
            # RENAME target: such a malformed record is deleted instead of kept.
            if take.quarantined and key_slot(encode_name(take.key)) != key_slot(encode_name(take.quarantine)):
                argv = ["delete", *argv[1:]]
            pipe.execute_command("EVALSHA", self._take_sha, 2, take.key, take.quarantine, "", QUARANTINE_TTL_S,
                                 format_type, *argv)
        return pipe.execute(raise_on_error=False)

    def _remove_entries(self, orphans: list[OrphanTake]) -> list[bool]:
        """Each orphan's entry, compare-and-removed, if its socket still has no record."""
        named = [(i, o.record_key) for i, o in enumerate(orphans) if o.record_key]
        back = {i for (i, _), found in zip(named, exist_each(self.client, [n for _, n in named])) if found}
        answers = iter(self.online.remove_unchanged([(o.user_id, o.raw) for i, o in enumerate(orphans)
                                                     if i not in back]))
        return [i not in back and next(answers) for i in range(len(orphans))]

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

