"""Every Redis key name reaper reads or writes (docs/design.md: the data read, the keys reaper owns). No I/O here."""

from dataclasses import dataclass

from reaper.core.config import RedisConfig

QUARANTINE_TTL_S = 24 * 3600


@dataclass(frozen=True)
class Keys:
    """Key names for one configuration; reaper-owned keys all start with ``reaper_prefix``.

    On a Redis Cluster the cascade keys, which scripts use together, share the hash tag
    ``{cascade}`` and so one slot; a quarantine key ``<prefix>quarantine:{<original key>}`` is
    in its original's slot by construction (its tag is the original key's whole name)."""

    connection_prefix: str
    session_prefix: str
    online: str
    reaper_prefix: str
    cluster: bool = False

    @classmethod
    def from_config(cls, redis: RedisConfig) -> "Keys":
        return cls(redis.connection_prefix, redis.session_prefix, redis.online_key, redis.reaper_prefix,
                   redis.is_cluster)

    # -- the signaling service's keys
    def connection(self, socket_id: str) -> str:
        return self.connection_prefix + socket_id

    def socket_id_of(self, connection_key: str) -> str:
        return connection_key[len(self.connection_prefix):]

    @property
    def connection_pattern(self) -> str:
        return _glob_escape(self.connection_prefix) + "*"

    @property
    def session_pattern(self) -> str:
        return _glob_escape(self.session_prefix) + "*"

    # -- reaper's own keys
    @property
    def intents(self) -> str:
        """Hash: cascade id -> JSON intent (what is left to do for a reaped guest)."""
        return self._cascade("intents")

    @property
    def due(self) -> str:
        """Sorted set: cascade id -> Redis time (s) at which it is next tried."""
        return self._cascade("due")

    @property
    def dead(self) -> str:
        """List of JSON intents that failed for good (newest first)."""
        return self._cascade("dead")

    def _cascade(self, name: str) -> str:
        return self.reaper_prefix + ("{cascade}:" if self.cluster else "cascade:") + name

    @property
    def state(self) -> str:
        """Hash of small facts carried from one run to the next (evicted_keys, last sweep)."""
        return self.reaper_prefix + "state"

    @property
    def leader(self) -> str:
        """String with a PX expiry: the token ("host:pid:random") of the replica that leads."""
        return self.reaper_prefix + "leader"

    @property
    def paused(self) -> str:
        """String (JSON: by, since, until, reason), with a PX expiry for `reaper pause --for`."""
        return self.reaper_prefix + "paused"

    @property
    def pause_ack(self) -> str:
        """String (JSON: the pause's fingerprint, the replica): the leader saw that pause."""
        return self.reaper_prefix + "pause_ack"

    @property
    def events(self) -> str:
        """Stream, capped near events.max_len: one decision record per reaped guest."""
        return self.reaper_prefix + "events"

    def expected_types(self) -> dict[str, str]:
        """The single keys reaper reads, and the Redis type each must have when it exists."""
        return {self.online: "hash", self.intents: "hash", self.due: "zset", self.dead: "list",
                self.state: "hash", self.leader: "string", self.paused: "string", self.events: "stream"}

    def quarantine(self, original_key: str) -> str:
        """Where a malformed record is moved. On a cluster it must stay in its slot (RENAME):
        braces around the original's name, unless that name brings its own hash tag."""
        if self.cluster and "{" not in original_key:
            original_key = "{" + original_key + "}"
        return self.reaper_prefix + "quarantine:" + original_key

    @property
    def quarantine_pattern(self) -> str:
        return _glob_escape(self.reaper_prefix + "quarantine:") + "*"


def _glob_escape(text: str) -> str:
    """Escape SCAN MATCH metacharacters so a prefix matches only itself."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
