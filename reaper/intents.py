"""What is left to do for a reaped guest (or a purge): the durable half of a cascade.

An intent is JSON in a reaper-owned hash, scheduled in a sorted set by Redis time. It is
written together with the Redis removal it follows (scripts.TAKE_*), so a reaped guest
never lacks one; its steps are removed from ``steps`` as they succeed.
"""

import json
from dataclasses import asdict, dataclass, field

# Steps, in the order they run. "online" is reversible; the others are not.
ONLINE, AUTH, MONGO = "online", "auth", "mongo"
AUTH_ALL, USERS_ALL, MONGO_ALL = "auth_all", "users_all", "mongo_all"
IRREVERSIBLE = frozenset({AUTH, MONGO})
PURGE_ID = "purge"


@dataclass
class Intent:
    id: str
    reason: str
    created: float  # Redis time (s)
    steps: list[str]
    user_id: str | None = None
    socket_id: str | None = None
    attempts: int = 0
    last_error: str | None = None
    errors: dict = field(default_factory=dict)  # step -> last error, for dead letters

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, raw: bytes | str) -> "Intent":
        data = json.loads(raw)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    @property
    def is_guest(self) -> bool:
        return self.user_id is not None

    @property
    def needs_liveness_check(self) -> bool:
        return self.is_guest and any(s in IRREVERSIBLE for s in self.steps)


def guest_id(user_id: str) -> str:
    """One cascade per user: a guest reaped twice (old and new socket) gets one DELETE."""
    return f"guest:{user_id}"


def guest_intent(user_id: str, socket_id: str | None, reason: str, now: float,
                 remove_entry: bool, irreversible: list[str]) -> Intent:
    steps = ([ONLINE] if remove_entry else []) + list(irreversible)
    return Intent(guest_id(user_id), reason, now, steps, user_id, socket_id)


def purge_intent(reason: str, now: float, steps: list[str]) -> Intent:
    return Intent(PURGE_ID, reason, now, list(steps))
