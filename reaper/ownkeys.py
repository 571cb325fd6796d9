"""Reaper's own keys as the tools read them back (`reaper events`, `dead-letters`, `stats`).

Each must be of the type reaper writes, or absent. Another type means another writer, or a
redis.reaper_prefix that names someone else's keys: every read would fail on it, so the tool
stops first with one line naming the key (exit 2, as for a redis.online_key naming no hash).
A value in them is read as reaper writes it (``loads``), or not at all: the tool skips it.
"""

import json

import redis

from .errors import ConfigError
from .store import key_type

HASH, LIST, STREAM, ZSET = "hash", "list", "stream", "zset"


def require_types(client: redis.Redis, prefix: str, expected: dict[str, str]) -> None:
    """ConfigError naming the first key in ``expected`` (name -> type) of another type."""
    for key, kind in expected.items():
        found = key_type(client, key)
        if found not in (kind, "none"):
            raise ConfigError("redis.reaper_prefix", prefix,
                              f"a prefix of reaper's own keys, but {key} holds a {found}, not a {kind} "
                              "(another writer, or a prefix naming someone else's keys)")


def loads(raw: bytes | str):
    """A JSON value as reaper writes it: UTF-8, finite numbers, not nested past recursion.
    ValueError for anything else (non-UTF-8 bytes, NaN, Infinity, 1e999, a 5000-digit number)."""
    try:
        value = json.loads(raw, parse_constant=_refuse, parse_float=_finite)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    return value


def _refuse(constant: str):
    raise ValueError(f"{constant} is no JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text[:20]} is too large")
    return value
