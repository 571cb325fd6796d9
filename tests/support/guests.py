"""Building the signaling service's Redis state for tests: records, entries, registered users."""

import json
from datetime import datetime, timezone

from .keys import KEYS

CONN = KEYS.connection_prefix
ONLINE = KEYS.online


def iso(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def redis_now(r) -> float:
    seconds, micros = r.time()
    return seconds + micros / 1e6


def record(socket_id: str, user_id: str, heartbeat, pong=None, **extra) -> dict:
    """A record as the signaling service writes it; timestamps as given (ISO text if float)."""
    fmt = lambda t: iso(t) if isinstance(t, float) else t  # noqa: E731
    data = {
        "socketId": socket_id, "userId": user_id, "name": f"Guest {user_id[-4:]}",
        "joinedAt": fmt(heartbeat), "lastHeartbeat": fmt(heartbeat), "lastPing": fmt(heartbeat),
        "lastPongReceived": fmt(heartbeat if pong is None else pong), "status": "online",
        "roomId": None, "ipAddress": "::ffff:10.0.3.7", "userAgent": "Mozilla/5.0 (Linux; Android 14)",
        "isResponsive": True, "missedPings": 0,
    }
    data.update(extra)
    return data


class World:
    """Writes guests into a test Redis the way the signaling service does."""

    def __init__(self, r, record_format: str = "json"):
        self.r, self.record_format = r, record_format
        self.now = redis_now(r)

    def guest(self, n: int | str, age: float = 0.0, pong_age: float | None = None, entry: bool = True,
              ttl: int = 3600, **extra) -> tuple[str, str]:
        """A guest whose last heartbeat was ``age`` seconds ago; returns (userId, socketId)."""
        user_id, socket_id = f"guest_{n}", f"sock{n}"
        rec = record(socket_id, user_id, self.now - age,
                     None if pong_age is None else self.now - pong_age, **extra)
        self.write_record(socket_id, rec, ttl)
        if entry:
            self.entry(user_id, socket_id)
        return user_id, socket_id

    def write_record(self, socket_id: str, rec: dict, ttl: int = 3600) -> None:
        key = CONN + socket_id
        if self.record_format == "hash":
            self.r.hset(key, mapping={k: "" if v is None else str(v) for k, v in rec.items()})
            self.r.expire(key, ttl)
        else:
            self.r.set(key, json.dumps(rec), ex=ttl)

    def entry(self, user_id: str, socket_id: str | None, is_guest: bool | None = True, **extra) -> None:
        value = {"userId": user_id, "status": "online", **extra}
        if socket_id is not None:
            value["socketId"] = socket_id
        if is_guest is not None:
            value["isGuest"] = is_guest
        self.r.hset(ONLINE, user_id, json.dumps(value))

    def registered(self, user_id: str, socket_id: str | None = None) -> None:
        self.entry(user_id, socket_id, is_guest=False, name="Registered")

    def online(self) -> dict[str, dict]:
        return {k.decode(): _loads(v) for k, v in self.r.hgetall(ONLINE).items()}

    def records(self) -> set[str]:
        return {k.decode()[len(CONN):] for k in self.r.scan_iter(match=CONN + "*", count=1000)}


def _loads(raw: bytes):
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode()
