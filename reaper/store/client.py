"""Reading guest state from Redis in bounded batches: SCAN, never KEYS."""

import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TypeVar

import redis
from loguru import logger
from redis.backoff import NoBackoff
from redis.connection import parse_url
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool

from reaper.store import cluster, mget
from reaper.core.config import Config, RedisConfig, split_host_port
from reaper.core.errors import AuditTrailFull, ConfigError, ReaperError, RedisRefused, RedisUnavailable, WrongKeyType
from reaper.core.gil import quick_switches
from reaper.core.keys import Keys
from reaper.core.names import decode_name
from reaper.store.packer import CLIENT_OPTIONS
from reaper.store.scan_ahead import ScanAhead
from reaper.core.records import Malformed, parse_hash_record, parse_json_record

# A cluster that lost a node answers CLUSTERDOWN, or redis-py finds no node for a slot.
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ClusterDownError,
              redis.exceptions.RedisClusterException)
T = TypeVar("T")
_END = object()
MASTER_CHECK_S = 1.0  # how often a sentinel client re-asks where the master is
TARGET_NODES = 10  # a cluster's primaries named by describe_target, at most
# Errors by which Redis refuses a write it would otherwise do: a read-only replica, maxmemory with
# noeviction, an ACL, a failed RDB save, too few replicas (min-replicas-to-write).
REFUSED_CLASSES = {redis.exceptions.ReadOnlyError: "READONLY", redis.exceptions.OutOfMemoryError: "OOM",
                   redis.exceptions.NoPermissionError: "NOPERM"}
REFUSED_CODES = ("MISCONF", "NOREPLICAS")
_SCRIPT_NOPERM = "The user executing the script can't run"  # an ACL refusing a script's command (ERR)
_SCRIPT_TRAIL = re.compile(r"\s*script: \w+, on @user_script:\d+\.?$")
_PIPELINE_HEAD = re.compile(r"^Command # \d+ \(.*?\) of pipeline caused error: ", re.S)
# The keys require_types checks by default: users:online and every key reaper writes. The leader
# lease and the pause switch are left out: their readers take a key of another type for "held by
# someone else" and "paused", and wait it out.
CHECKED = ("online", "intents", "due", "dead", "state", "events")
_STREAM_FULL = "The stream has exhausted the last possible ID"  # XADD's refusal
_WRONG_TYPE = re.compile(r"^WRONGTYPE (?P<key>.+) holds a (?P<found>\w+), not a (?P<wanted>\w+)$", re.S)


def connect(config: Config) -> redis.Redis:
    """A client for the master: ``redis.url`` itself, the master that ``redis.sentinels``
    name for ``redis.service_name``, or the cluster ``redis.url`` is a node of; TLS for
    rediss://. Bytes in and out: records are compared byte for byte, and a name read is sent
    back as the bytes it was read as (reaper/core/names.py)."""
    settings = config.redis
    if not settings.tls_verify:
        logger.warning("Redis: redis.tls_verify = false: the server's certificate and host name "
                       "are NOT checked; use this for tests only")
    options = {**_socket_options(settings), **_tls_options(settings)}
    if settings.sentinels:
        return _sentinel_master(settings, options)
    if settings.is_cluster:
        return cluster.connect(settings.url, options)
    return redis.Redis.from_url(settings.url, decode_responses=False, **options, **CLIENT_OPTIONS)


def _socket_options(settings: RedisConfig) -> dict:
    timeout = settings.socket_timeout_s
    return {"socket_timeout": timeout, "socket_connect_timeout": timeout, "health_check_interval": 30}


def _uses_tls(settings: RedisConfig) -> bool:
    return settings.scheme == "rediss"


def _tls_options(settings: RedisConfig) -> dict:
    """redis-py's ssl_* arguments for a rediss:// URL; none for redis://, which takes none."""
    if not _uses_tls(settings):
        return {}
    verify = settings.tls_verify
    options = {"ssl_cert_reqs": "required" if verify else "none", "ssl_check_hostname": verify}
    files = {"ssl_ca_certs": settings.tls_ca_file, "ssl_certfile": settings.tls_cert_file,
             "ssl_keyfile": settings.tls_key_file}
    return {**options, **{name: path for name, path in files.items() if path}}


def _sentinel_master(settings: RedisConfig, options: dict) -> redis.Redis:
    """The master's client; each new connection asks the sentinels where the master is now,
    so the next connection after a failover reaches the new one."""
    tls = {"ssl": True} if _uses_tls(settings) else {}
    from_url = parse_url(settings.url)  # only the credentials and db: the host is the sentinels' to say
    credentials = {k: from_url[k] for k in ("username", "password", "db") if from_url.get(k) is not None}
    sentinel_auth = {"password": settings.sentinel_password} if settings.sentinel_password else {}
    no_retry = {"retry": Retry(NoBackoff(), 0)}  # a sentinel that does not answer: ask the next one
    sentinel = _Sentinels([split_host_port(address) for address in settings.sentinels],
                          sentinel_kwargs={**options, **tls, **sentinel_auth, **no_retry},
                          **options, **tls, **credentials)
    return sentinel.master_for(settings.service_name, decode_responses=False,
                               connection_pool_class=_MasterFollowingPool, **CLIENT_OPTIONS)


class _MasterFollowingPool(SentinelConnectionPool):
    """Asks the sentinels where the master is when a connection is taken, at most every
    MASTER_CHECK_S. redis-py asks only for new connections, so a daemon's pooled ones would
    keep writing to a demoted master that still accepts writes until sentinel reconfigures it;
    a changed answer drops the idle ones (redis-py's get_master_address does that)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._next_check = 0.0

    def get_connection(self, *args, **kwargs):
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + MASTER_CHECK_S
            self.get_master_address()
        return super().get_connection(*args, **kwargs)


class _Sentinels(Sentinel):
    """redis-py's Sentinel, saying in one line what each sentinel answered when none names
    a master that is up (its own message prints every client's repr)."""

    def discover_master(self, service_name):
        problems = []
        for position, sentinel in enumerate(self.sentinels):
            address = "{host}:{port}".format_map(sentinel.connection_pool.connection_kwargs)
            try:
                state = sentinel.sentinel_masters().get(service_name)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                problems.append(f"{address}: {type(exc).__name__}: {exc}")
                continue
            if state and self.check_master_state(state, service_name):
                # The one that answered is asked first next time, as in redis-py.
                self.sentinels[0], self.sentinels[position] = sentinel, self.sentinels[0]
                return state["ip"], state["port"]
            problems.append(f"{address}: {'master is down' if state else 'does not monitor it'}")
        raise MasterNotFoundError(f"no sentinel names a master for {service_name!r} "
                                  f"({'; '.join(problems)})")


def describe_connection(config: Config, client: redis.Redis) -> str:
    """How ``client`` reaches Redis, for `reaper check`: through which sentinels to which
    master, and whether TLS checks the server. "" for a plain redis:// or unix:// URL."""
    settings = config.redis
    parts = []
    if cluster.is_cluster(client):
        parts.append(f"cluster of {len(client.get_primaries())} primaries")
    if settings.sentinels:
        master = getattr(client.connection_pool, "master_address", None)
        found = f", master {master[0]}:{master[1]}" if master else ""
        parts.append(f"sentinel service {settings.service_name!r} via "
                     f"{', '.join(settings.sentinels)}{found}")
    if _uses_tls(settings):
        parts.append(_describe_tls(settings))
    return "; ".join(parts)


def describe_target(client: redis.Redis) -> str:
    """Which Redis ``client`` works on, as a purge names it: the master the sentinels name now
    and their service, a cluster's primaries, or the server's address (or unix socket) and db.
    Made of the connection's own settings, never of the URL: no credential, and never a host
    reaper does not use (with sentinels, redis.url's host is not dialled)."""
    if cluster.is_cluster(client):
        nodes = sorted(_address(node.host, node.port) for node in client.get_primaries())
        more = f" and {len(nodes) - TARGET_NODES} more" if len(nodes) > TARGET_NODES else ""
        return f"Redis Cluster {', '.join(nodes[:TARGET_NODES])}{more}"
    pool = client.connection_pool
    settings, db = pool.connection_kwargs, f"db {pool.connection_kwargs.get('db') or 0}"
    if isinstance(pool, SentinelConnectionPool):
        host, port = pool.get_master_address()  # asks the sentinels now
        return f"Redis {_address(host, port)} {db} (master of sentinel service {pool.service_name!r})"
    if settings.get("path"):
        return f"Redis unix:{settings['path']} {db}"
    return f"Redis {_address(settings.get('host', 'localhost'), settings.get('port', 6379))} {db}"


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _describe_tls(settings: RedisConfig) -> str:
    if settings.tls_verify:
        checks = f"server certificate verified against {settings.tls_ca_file or 'the system CAs'}"
    else:
        checks = "server certificate NOT verified (redis.tls_verify = false)"
    client_cert = f", client certificate {settings.tls_cert_file}" if settings.tls_cert_file else ""
    return f"TLS, {checks}{client_cert}"


def ping(client: redis.Redis) -> None:
    """Raise RedisUnavailable unless Redis answers."""
    try:
        client.ping()
    except REDIS_DOWN as exc:
        raise RedisUnavailable(f"redis: {exc}") from exc


def key_type(client: redis.Redis, key: str) -> str:
    """What TYPE says of ``key``: "none" when it is absent."""
    found = client.type(key)
    return found.decode() if isinstance(found, bytes) else found


# The highest stream id: once a stream's last id is this, XADD refuses every entry (AuditTrailFull).
LAST_STREAM_ID = b"18446744073709551615-18446744073709551615"


def stream_full(client: redis.Redis, key: str) -> bool:
    """Has the stream ``key`` (a stream: the caller knows its type) used its last possible id?
    False when it is no stream by now (replaced since its TYPE was read)."""
    try:
        last = client.xinfo_stream(key).get("last-generated-id")
    except redis.ResponseError:  # WRONGTYPE, or gone: "no such key"
        return False
    return (last.encode() if isinstance(last, str) else last) == LAST_STREAM_ID


def require_hash(client: redis.Redis, key: str, setting: str) -> None:
    """ConfigError unless ``key`` is a hash or absent. users:online is the signaling service's
    hash; another type means ``setting`` names the wrong key (or a writer broke it), and every
    command on it would fail: stop before anything is touched, and say which key and why."""
    _require_online(key, key_type(client, key), setting)


def _require_online(key: str, found: str, setting: str) -> None:
    if found not in ("hash", "none"):
        raise ConfigError(setting, key, f"the name of a hash (the online list), but that key holds a {found}")


def require_type(client: redis.Redis, key: str, wanted: str) -> None:
    """WrongKeyType unless ``key`` is absent or of Redis type ``wanted``."""
    found = key_type(client, key)
    if found not in (wanted, "none"):
        raise WrongKeyType(key, found, wanted)


def require_types(client: redis.Redis, keys: Keys, names: tuple[str, ...] = CHECKED) -> None:
    """users:online a hash (ConfigError, as require_hash) and each key reaper writes absent or of
    its type (WrongKeyType), in one round trip: what a sweep, a purge or a drain checks before
    it touches anything. ``names``: those Keys properties only."""
    expected = keys.expected_types()
    found = _types(client, [getattr(keys, name) for name in names])
    for name in names:
        key = getattr(keys, name)
        if name == "online":
            _require_online(key, found[key], "redis.online_key")
        elif found[key] not in (expected[key], "none"):
            raise WrongKeyType(key, found[key], expected[key])


def explain(exc: Exception) -> ReaperError | None:
    """What a Redis error means to reaper: WrongKeyType when a script refused a key of another type
    (scripts.CHECK_TYPES), AuditTrailFull when the only stream reaper adds to refused an entry,
    RedisRefused when Redis refuses writes; None for anything else."""
    if not isinstance(exc, redis.ResponseError):
        return None
    text = _PIPELINE_HEAD.sub("", _SCRIPT_TRAIL.sub("", str(exc)))
    wrong = _WRONG_TYPE.match(text)
    if wrong:
        return WrongKeyType(wrong["key"], wrong["found"], wrong["wanted"])
    if text.startswith(_STREAM_FULL):
        return AuditTrailFull()
    if text.startswith("WRONGTYPE "):  # a command's own: it does not say which key
        return WrongKeyType(None, None, None, text)
    code = REFUSED_CLASSES.get(type(exc))
    if code is not None:
        return RedisRefused(f"{code} {text}")
    if text.startswith(REFUSED_CODES):
        return RedisRefused(text)
    if text.startswith(_SCRIPT_NOPERM):
        return RedisRefused(f"NOPERM {text}")
    return None


@contextmanager
def refusals() -> Iterator[None]:
    """Raises the Redis errors reaper knows the meaning of as that meaning (explain); other errors
    pass unchanged."""
    try:
        yield
    except redis.ResponseError as exc:
        known = explain(exc)
        if known is None:
            raise
        raise known from exc


def redis_now(client: redis.Redis) -> float:
    """Redis's clock, in seconds: the only clock reaper judges by."""
    seconds, micros = client.time()
    return seconds + micros / 1_000_000


def scan_batches(client: redis.Redis, pattern: str, count: int) -> Iterator[list[bytes]]:
    """Batches of key names matching ``pattern``; each key at least once, memory per batch. On a
    cluster, every primary in turn (keys moved by a resharding meanwhile may be missed or seen
    twice, like keys written during any SCAN)."""
    for node in cluster.primaries(client) if cluster.is_cluster(client) else [client]:
        cursor = 0
        while True:
            cursor, batch = node.scan(cursor, match=pattern, count=count)
            if batch:
                yield batch
            if cursor == 0:
                break


def scan_and_read(client: redis.Redis, pattern: str, count: int, record_format: str,
                  before_read: Callable[[list[bytes]], None],
                  alone: bool = False) -> Iterator[tuple[list[bytes], list | None]]:
    """Pages of key names matching ``pattern`` with what read_values gives for them.
    ``before_read(names)`` runs before a page's values are asked for. JSON records on a single
    Redis take one round trip a page: each page's MGETs go out with the next page's SCAN; and
    ``alone`` (nothing else of the caller's talks to Redis meanwhile), before the page before
    is read (store/scan_ahead.py)."""
    if record_format == "hash" or cluster.is_cluster(client):
        for names in scan_batches(client, pattern, count):
            before_read(names)
            yield names, read_values(client, names, record_format)
        return
    if asks_ahead(client, alone, record_format):
        yield from ScanAhead(client, pattern, count, before_read).pages()
        return
    yield from _scan_with_mget(client, pattern, count, before_read)


def asks_ahead(client: redis.Redis, alone: bool, record_format: str = "json") -> bool:
    """Does scan_and_read (or, for users:online, the caller with store/scan_ahead.hscan_ahead) ask
    for each page before the page before is read? JSON records or a hash's fields on a single
    Redis, ``alone``: then Redis reads the next page while its caller works on this one."""
    return alone and record_format != "hash" and not cluster.is_cluster(client)


def _scan_with_mget(client: redis.Redis, pattern: str, count: int,
                    before_read: Callable[[list[bytes]], None]) -> Iterator[tuple[list[bytes], list]]:
    cursor, names = client.scan(0, match=pattern, count=count)
    while True:
        if names:
            before_read(names)
        pipe = client.pipeline(transaction=False)
        for keys in mget.batches(names):
            pipe.mget(keys)
        if cursor != 0:
            pipe.scan(cursor, match=pattern, count=count)
        answers = pipe.execute() if len(pipe) else []
        if names:
            yield names, [value for values in answers[:-1 if cursor else None] for value in values]
        if cursor == 0:
            return
        cursor, names = answers[-1]


def hscan_batches(client: redis.Redis, key: str, count: int) -> Iterator[list[tuple[bytes, bytes]]]:
    cursor = 0
    while True:
        cursor, fields = client.hscan(key, cursor, count=count)
        if fields:
            yield list(fields.items())
        if cursor == 0:
            return


def read_ahead(batches: Iterator[T], stopping: threading.Event | None = None,
               turn: AbstractContextManager | None = None, quick: bool = True) -> Iterator[T]:
    """``batches``, each produced by a thread while the caller works on the one before: Redis
    reads the next batch while Python judges this one. One batch ahead at most; the thread
    stops when the caller stops iterating or ``stopping`` is set, and its errors are raised here.

    The thread produces each batch holding ``turn``: a caller that holds it too for its own
    Redis calls never has the reader's call and its own waiting in Redis at once, so other
    clients of Redis wait behind one of them at most, as they would for a single-threaded sweep.
    ``quick``: the GIL changes hands quickly while the reader runs (core/gil.py)."""
    ahead: queue.Queue = queue.Queue(maxsize=1)
    done = threading.Event()
    reader = threading.Thread(target=_produce, name="reaper-read-ahead", daemon=True,
                              args=(batches, ahead, done, stopping, turn or nullcontext()))
    # quick: the reader gets the GIL back soon after each reply (core/gil.py)
    with quick_switches if quick else nullcontext():
        reader.start()
        try:
            while True:
                kind, item = ahead.get()
                if kind == "batch":
                    yield item
                elif kind == "error":
                    raise item
                else:
                    return
        finally:
            done.set()
            _unblock(ahead)
            reader.join()


def _produce(batches: Iterator, ahead: queue.Queue, done: threading.Event,
             stopping: threading.Event | None, turn: AbstractContextManager) -> None:
    # After `done` the caller empties the queue once: at most one more put() may follow.
    batches = iter(batches)
    try:
        while True:
            with turn:
                batch = next(batches, _END)
            if batch is _END:
                break
            ahead.put(("batch", batch))
            if done.is_set():
                return
            if stopping is not None and stopping.is_set():
                break
        last = ("end", None)
    except BaseException as exc:  # raised in the caller's thread
        last = ("error", exc)
    if not done.is_set():
        ahead.put(last)


def _unblock(ahead: queue.Queue) -> None:
    """Empty the queue so that a producer blocked on put() sees ``done``."""
    while True:
        try:
            ahead.get_nowait()
        except queue.Empty:
            return


def read_values(client: redis.Redis, names: list[bytes], record_format: str) -> list | None:
    """What load_records reads first, for reading ahead: the MGET of JSON records, in MGETs of
    mget.BATCH keys at most. None for hashes, which load_records reads itself."""
    if not names or record_format == "hash":
        return None
    return [value for keys in mget.batches(names) for value in _mget(client, keys)]


def _mget(client: redis.Redis, names: list[bytes]) -> list:
    return cluster.get_each(client, names) if cluster.is_cluster(client) else client.mget(names)


def load_records(client: redis.Redis, keys: Keys, names: list[bytes], record_format: str,
                 values: list | None = None):
    """Each key's record: GuestRecord, Malformed, or None when the key is gone. ``values``:
    what read_values answered for ``names``, when it was read ahead."""
    if record_format == "hash":
        return _load_hashes(client, keys, names)
    if values is None:
        values = _mget(client, names) if names else []
    missing = [n for n, v in zip(names, values) if v is None]
    types = _types(client, missing)  # MGET answers nil for gone keys and for other types alike
    cut = len(keys.connection_prefix)
    return [
        parse_json_record(key, key[cut:], v) if v is not None
        else _wrong_type_or_gone(keys, n, types[n], "string")
        for n, v, key in zip(names, values, map(decode_name, names))
    ]


def _load_hashes(client: redis.Redis, keys: Keys, names: list[bytes]):
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(name)
    replies = pipe.execute(raise_on_error=False)
    empty = [n for n, reply in zip(names, replies) if not isinstance(reply, dict) or not reply]
    types = _types(client, empty)
    return [
        parse_hash_record(decode_name(n), keys.socket_id_of(decode_name(n)), reply)
        if n not in types else _wrong_type_or_gone(keys, n, types[n], "hash")
        for n, reply in zip(names, replies)
    ]


def _types(client: redis.Redis, names: list[bytes]) -> dict[bytes, str]:
    if not names:
        return {}
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.type(name)
    return {n: t.decode() if isinstance(t, bytes) else t for n, t in zip(names, pipe.execute())}


def _wrong_type_or_gone(keys: Keys, name: bytes, redis_type: str, expected: str):
    if redis_type == "none":
        return None
    key = decode_name(name)
    if redis_type == expected:  # an empty hash reads as gone; a present one is just empty
        return Malformed(key, keys.socket_id_of(key), f"empty {expected}", redis_type)
    return Malformed(key, keys.socket_id_of(key), f"wrong Redis type {redis_type}", redis_type)

