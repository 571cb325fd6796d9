"""Reading guest state from Redis in bounded batches: SCAN, never KEYS."""

from collections.abc import Iterator

import redis

from .config import Config
from .errors import RedisUnavailable
from .keys import Keys
from .records import Malformed, parse_hash_record, parse_json_record

REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)


def connect(config: Config) -> redis.Redis:
    """A client for ``redis.url`` (bytes in and out: records are compared byte for byte)."""
    return redis.Redis.from_url(
        config.redis.url,
        socket_timeout=config.redis.socket_timeout_s,
        socket_connect_timeout=config.redis.socket_timeout_s,
        health_check_interval=30,
    )


def ping(client: redis.Redis) -> None:
    """Raise RedisUnavailable unless Redis answers."""
    try:
        client.ping()
    except REDIS_DOWN as exc:
        raise RedisUnavailable(f"redis: {exc}") from exc


def redis_now(client: redis.Redis) -> float:
    """Redis's clock, in seconds: the only clock reaper judges by."""
    seconds, micros = client.time()
    return seconds + micros / 1_000_000


def scan_batches(client: redis.Redis, pattern: str, count: int) -> Iterator[list[bytes]]:
    """Batches of key names matching ``pattern``; each key at least once, memory per batch."""
    cursor = 0
    while True:
        cursor, batch = client.scan(cursor, match=pattern, count=count)
        if batch:
            yield batch
        if cursor == 0:
            return


def hscan_batches(client: redis.Redis, key: str, count: int) -> Iterator[list[tuple[bytes, bytes]]]:
    cursor = 0
    while True:
        cursor, fields = client.hscan(key, cursor, count=count)
        if fields:
            yield list(fields.items())
        if cursor == 0:
            return


def load_records(client: redis.Redis, keys: Keys, names: list[bytes], record_format: str):
    """Each key's record: GuestRecord, Malformed, or None when the key is gone."""
    if record_format == "hash":
        return _load_hashes(client, keys, names)
    values = client.mget(names) if names else []
    missing = [n for n, v in zip(names, values) if v is None]
    types = _types(client, missing)  # MGET answers nil for gone keys and for other types alike
    return [
        parse_json_record(n.decode(), keys.socket_id_of(n.decode()), v) if v is not None
        else _wrong_type_or_gone(keys, n, types[n], "string")
        for n, v in zip(names, values)
    ]


def _load_hashes(client: redis.Redis, keys: Keys, names: list[bytes]):
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(name)
    replies = pipe.execute(raise_on_error=False)
    empty = [n for n, reply in zip(names, replies) if not isinstance(reply, dict) or not reply]
    types = _types(client, empty)
    return [
        parse_hash_record(n.decode(), keys.socket_id_of(n.decode()), reply)
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
    key = name.decode()
    if redis_type == expected:  # an empty hash reads as gone; a present one is just empty
        return Malformed(key, keys.socket_id_of(key), f"empty {expected}", redis_type)
    return Malformed(key, keys.socket_id_of(key), f"wrong Redis type {redis_type}", redis_type)

