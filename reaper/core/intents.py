"""What is left to do for a reaped guest (or a purge): the durable half of a cascade.

An intent is JSON in a reaper-owned hash, scheduled in a sorted set by Redis time. It is
written together with the Redis removal it follows (scripts.TAKE_*), so a reaped guest
never lacks one; its steps are removed from ``steps`` as they succeed.
"""

import json
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii
from math import isfinite

from reaper.core.records import loads

# Steps, in the order they run. "online" is reversible; the others are not (a guestLeft told
# cannot be taken back either), so the liveness check comes before each of them.
ONLINE, AUTH, MONGO, TELL = "online", "auth", "mongo", "tell"
AUTH_ALL, USERS_ALL, MONGO_ALL = "auth_all", "users_all", "mongo_all"
IRREVERSIBLE = frozenset({AUTH, MONGO, TELL})
GUEST_STEPS = frozenset({ONLINE, AUTH, MONGO, TELL})
PURGE_STEPS = frozenset({AUTH_ALL, USERS_ALL, MONGO_ALL})
PURGE_ID = "purge"
# What each step talks to: the `target` field of a log line (docs/logging.md).
TARGETS = {ONLINE: "redis", AUTH: "auth-service", MONGO: "mongo", TELL: "signaling",
           AUTH_ALL: "auth-service", USERS_ALL: "user-service", MONGO_ALL: "mongo"}

_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True)  # one, not one per dumps()
_text = encode_basestring_ascii  # a JSON string, as the encoder writes it (ensure_ascii)


def _text_or_null(value: str | None) -> str:
    return "null" if value is None else _text(value)


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
        """Compact JSON, keys sorted: what SETTLE compares byte for byte, so always the same text."""
        if self.errors or not self._plain():
            return _ENCODER.encode({
                "attempts": self.attempts, "created": self.created, "errors": self.errors, "id": self.id,
                "last_error": self.last_error, "reason": self.reason, "socket_id": self.socket_id,
                "steps": self.steps, "user_id": self.user_id})
        # The encoder's very text, written out: a sweep writes one intent per reaped guest and a
        # cascade rewrites it per step, and this takes a third of the encoder's time.
        return (f'{{"attempts":{self.attempts!r},"created":{self.created!r},"errors":{{}},'
                f'"id":{_text(self.id)},"last_error":{_text_or_null(self.last_error)},'
                f'"reason":{_text(self.reason)},"socket_id":{_text_or_null(self.socket_id)},'
                f'"steps":[{",".join(map(_text, self.steps))}],"user_id":{_text_or_null(self.user_id)}}}')

    def _plain(self) -> bool:
        """Of the types whose JSON the encoder writes as their repr or quoted text."""
        return (type(self.attempts) is int and type(self.created) is float and isfinite(self.created)
                and type(self.id) is str and type(self.reason) is str and type(self.steps) is list
                and all(type(step) is str for step in self.steps)
                and all(type(v) is str or v is None for v in (self.user_id, self.socket_id, self.last_error)))

    @classmethod
    def from_json(cls, raw: bytes | str) -> "Intent":
        """The intent in ``raw``; ValueError when it cannot be run as it stands (not JSON,
        wrong shapes, a step this version does not know), so it can be set aside."""
        try:
            data = loads(raw.encode() if isinstance(raw, str) else raw)
        except RecursionError:
            raise ValueError("JSON nested too deeply") from None
        if not isinstance(data, dict):
            raise ValueError(f"JSON {type(data).__name__}, not an object")
        if not data.keys() <= cls.__dataclass_fields__.keys():  # fields of a later version: dropped
            data = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        try:
            intent = cls(**data)
        except TypeError as exc:  # a required field is missing
            raise ValueError(str(exc)) from None
        problem = intent._shape_problem()
        if problem:
            raise ValueError(problem)
        return intent

    def _shape_problem(self) -> str | None:
        if not isinstance(self.id, str) or not isinstance(self.reason, str):
            return "id or reason is not a string"
        if not isinstance(self.created, (int, float)) or isinstance(self.created, bool):
            return f"created {self.created!r} is not a Redis time"
        if not isinstance(self.attempts, int) or not isinstance(self.errors, dict):
            return "attempts or errors of the wrong type"
        if not isinstance(self.steps, list) or not all(isinstance(s, str) for s in self.steps):
            return f"steps {self.steps!r} is not a list of step names"
        known = GUEST_STEPS if isinstance(self.user_id, str) and self.user_id else PURGE_STEPS
        unknown = [s for s in self.steps if s not in known]
        return f"unknown steps {unknown} for this intent" if unknown else None

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
