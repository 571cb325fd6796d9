"""The pause switch: while ``<prefix>paused`` exists, every replica skips every job, and the
work already running stops at its next gate (reaper/safety/authority.py).

`reaper pause [--for 30m]` writes who paused, when and why (with a PX expiry when a duration
is given), then waits for the leader's acknowledgement (``<prefix>pause_ack``); `reaper resume`
deletes both. Any value counts, even one written by hand with redis-cli: an operator who set the
key means "stop".
"""

import getpass
import json
import secrets
import socket
import threading
from dataclasses import dataclass

import redis
from loguru import logger

from reaper.core.keys import Keys
from reaper.core.clock import iso, utc
from reaper.store.client import redis_now

PAUSED, RESUMED = "paused", "resumed"


@dataclass(frozen=True)
class Pause:
    by: str
    since: str | None  # ISO time `reaper pause` ran, as written
    until: str | None  # ISO time it ends by itself; None: until `reaper resume`
    left_s: float | None
    reason: str
    identity: bytes  # what tells one pause from the next

    def describe(self) -> str:
        since = f" since {self.since}" if self.since else ""
        until = ("until `reaper resume`" if self.until is None
                 else f"until {self.until}, {self.left_s:.1f}s left")
        why = f": {self.reason}" if self.reason else ""
        return f"by {self.by}{since} ({until}){why}"

    def as_dict(self) -> dict:
        return {"by": self.by, "since": self.since, "until": self.until,
                "left_s": None if self.left_s is None else round(self.left_s, 1), "reason": self.reason}


def parse_pause(raw: bytes | None, kind: str, ttl_ms: int, now: float) -> Pause | None:
    """The pause a key holds, from its value, type and PTTL; None when there is no key. Pure."""
    if kind == "none" or ttl_ms == -2:
        return None
    fields = _fields(raw)
    left_s = ttl_ms / 1000 if ttl_ms >= 0 else None
    return Pause(
        by=_text(fields.get("by")) or "unknown (not written by `reaper pause`)",
        since=_text(fields.get("since")),
        until=None if left_s is None else iso(utc(now + left_s)),
        left_s=left_s,
        reason=_text(fields.get("reason")) or "",
        identity=raw if raw is not None else f"<{kind}>".encode(),
    )


def pause(client: redis.Redis, keys: Keys, for_s: float | None = None, by: str | None = None,
          reason: str = "") -> Pause:
    """Pause every replica, until `resume()` or for ``for_s`` seconds."""
    now = redis_now(client)
    value = {"by": by or operator(), "since": iso(utc(now)),
             "until": None if for_s is None else iso(utc(now + for_s)), "reason": reason,
             "id": secrets.token_hex(4)}  # two pauses alike are still two: each is acknowledged
    px = None if for_s is None else max(1, round(for_s * 1000))
    client.set(keys.paused, json.dumps(value), px=px)
    return paused_state(client, keys)


def resume(client: redis.Redis, keys: Keys) -> bool:
    """Lift the pause (and its acknowledgement); False when there was none."""
    resumed = client.delete(keys.paused) == 1
    client.delete(keys.pause_ack)  # apart: another slot on a cluster
    return resumed


def paused_state(client: redis.Redis, keys: Keys) -> Pause | None:
    now = redis_now(client)  # apart: a cluster pipeline refuses TIME, which has no key
    pipe = client.pipeline(transaction=True)
    pipe.type(keys.paused)
    pipe.pttl(keys.paused)
    pipe.get(keys.paused)
    kind, ttl_ms, raw = pipe.execute(raise_on_error=False)
    kind = kind.decode() if isinstance(kind, bytes) else kind
    return parse_pause(raw if isinstance(raw, bytes) else None, kind, ttl_ms, now)


def operator() -> str:
    """"user@host" of whoever runs `reaper pause`."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def change(seen: bytes | None, now: Pause | None) -> str | None:
    """PAUSED when a pause starts (or a new one replaces it), RESUMED when it ends. Pure."""
    current = now.identity if now else None
    if current == seen:
        return None
    return RESUMED if current is None else PAUSED


class PauseWatch:
    """What every job asks first. Says once per pause that this replica does nothing, and
    once that it works again. ``seen(identity or None)``, when given, hears what each look
    found: the running work's gate refuses at once, and the leader acknowledges the pause
    (reaper/safety/authority.py)."""

    def __init__(self, client: redis.Redis, keys: Keys, seen=None):
        self.client, self.keys, self.seen = client, keys, seen
        self._seen: bytes | None = None
        self._lock = threading.Lock()

    def paused(self) -> bool:
        state = paused_state(self.client, self.keys)
        with self._lock:
            event = change(self._seen, state)
            self._seen = state.identity if state else None
        if event == PAUSED:
            logger.info("Paused: {}; doing nothing", state.describe())
        elif event == RESUMED:
            logger.info("Resumed: the pause is over; jobs run again")
        if self.seen is not None:
            self.seen(state.identity if state else None)
        return state is not None

    @property
    def seen_paused(self) -> bool:
        """What the last ``paused()`` saw, without asking Redis (for metrics)."""
        with self._lock:
            return self._seen is not None


def _fields(raw: bytes | None) -> dict:
    try:
        value = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _text(value) -> str | None:
    return value if isinstance(value, str) and value else None
