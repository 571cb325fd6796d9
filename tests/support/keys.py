"""Reaper's key names as the tests read and write them: ``Keys`` (reaper/core/keys.py) for the
default configuration, never string literals. ``KEYS`` is the single-Redis naming; ``keys_of(r)``
picks the naming of the Redis (or Redis Cluster) a test runs on."""

import dataclasses

from redis.cluster import RedisCluster

from reaper.core.config import RedisConfig
from reaper.core.keys import Keys

KEYS = Keys.from_config(RedisConfig())  # guest_connection:, guest_session:, users:online, reaper:
CLUSTER_KEYS = dataclasses.replace(KEYS, cluster=True)  # the cascade keys in one slot: reaper:{cascade}:*


def keys_of(r) -> Keys:
    """The default key names, as reaper names them on this kind of Redis (single or cluster)."""
    return CLUSTER_KEYS if isinstance(r, RedisCluster) else KEYS
