"""A simulated signaling server: it writes guest records and users:online entries exactly as
docs/design.md, the data read describes, keeps live guests heartbeating, and lets others die in the ways real ones do.

    live        heartbeat and pong every heartbeat_interval, all demo long (some join late)
    dropped     the phone loses the network: writes stop; the record expires (its TTL is
                connection_timeout), so the entry becomes an orphan
    killed      the app is killed on a server whose records outlive the timeout: the record
                stays, its heartbeat grows old (heartbeat_timeout)
    frozen      the socket stays up but the app stops answering pings (ping_timeout)
    leftover    a crashed server's guests, there at start: entries whose record is gone, one
                entry that is not JSON, and one old record
    malformed   a record that is not JSON, and one without lastHeartbeat

Registered users share users:online and must never be touched. After its first write a
record is only refreshed while it exists (SET XX): a guest the reaper removed stays removed,
as if its socket had been disconnected. The server also subscribes to the socket.io adapter's
request channel, so the reaper's default startup.purge = "cold" sees a running tier; it answers
no request, so the demo's reaper must not ask (notify.ask_before_reap stays off).
"""

import json
import random
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import redis

from reaper.signaling.socketio import Channels
from reaper.demo.timings import Timings

KINDS = LIVE, DROPPED, KILLED, FROZEN, LEFTOVER, MALFORMED = (
    "live", "dropped", "killed", "frozen", "leftover", "malformed")
CONNECTION, ONLINE = "guest_connection:", "users:online"
# The adapter's request channel with reaper's default notify settings. The simulation only
# subscribes it and never answers a request: the demo's reaper runs with ask_before_reap off.
ADAPTER_CHANNEL = Channels.of("socket.io", "/").request
LONG_TTL_S = 300  # records that outlive the demo unless the reaper removes them
_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"


@dataclass
class Guest:
    kind: str
    user_id: str
    socket_id: str
    join_at: float = 0.0  # seconds after the start
    stop_at: float | None = None  # when it stops heartbeating (frozen: stops answering pings)
    ttl_s: float = 0.0
    preset: str | None = None  # a leftover or malformed record written once at start
    entry: str | None = None  # its users:online value, when it has one

    @property
    def dies(self) -> bool:
        return self.kind != LIVE

    def alive_at(self, t: float) -> bool:
        """Still heartbeating at ``t`` seconds (as the simulation means it)."""
        return self.kind in (LIVE, DROPPED, KILLED, FROZEN) and (self.stop_at is None or t < self.stop_at)


@dataclass
class Scenario:
    guests: list[Guest]
    registered: dict[str, str]  # userId -> users:online value, never to be touched

    def of_kind(self, kind: str) -> list[Guest]:
        return [g for g in self.guests if g.kind == kind]


def plan(duration_s: float, timings: Timings, rng: random.Random | None = None) -> Scenario:
    """Who lives and who dies when. Deaths fall in the first half-and-a-bit of the demo, so each
    is reaped before it ends; fewer than safety.mass_expiry_min guests keep the guard quiet."""
    rng = rng or random.Random()
    ids, ttl = _Ids(rng), timings.connection_timeout_s

    def at(start: float, end: float) -> float:
        return round(rng.uniform(start, end) * duration_s, 1)

    guests = [Guest(LIVE, *ids.pair(), join_at=0.0 if n < 6 else at(0.2, 0.6), ttl_s=ttl) for n in range(8)]
    guests += [Guest(DROPPED, *ids.pair(), stop_at=at(0.15, 0.55), ttl_s=ttl) for _ in range(4)]
    guests += [Guest(KILLED, *ids.pair(), stop_at=at(0.15, 0.55), ttl_s=LONG_TTL_S) for _ in range(2)]
    guests += [Guest(FROZEN, *ids.pair(), stop_at=at(0.15, 0.55), ttl_s=ttl) for _ in range(2)]
    guests += _leftovers(ids) + _malformed(ids)
    return Scenario(guests, _registered(ids))


def _leftovers(ids: "_Ids") -> list[Guest]:
    """A crashed server's guests: three entries without a record, one of them not JSON (so its
    socket is unknown), and one record whose heartbeat stopped a minute ago."""
    found = [Guest(LEFTOVER, *ids.pair(), ttl_s=LONG_TTL_S) for _ in range(4)]
    found[2].entry = "online"  # a guest only by its guest_ prefix, no socketId
    found[3].preset = "old"
    return found


def _malformed(ids: "_Ids") -> list[Guest]:
    found = [Guest(MALFORMED, *ids.pair(), ttl_s=LONG_TTL_S) for _ in range(2)]
    found[0].preset = "not json"
    found[1].preset = "no heartbeat"
    return found


def _registered(ids: "_Ids") -> dict[str, str]:
    alice, bob, carol = (f"user_{name}" for name in ("alice", "bob", "carol"))
    return {alice: json.dumps({"userId": alice, "isGuest": False, "status": "online",
                               "socketId": ids.socket()}),  # a socket with no record: never an orphan
            bob: json.dumps({"userId": bob, "status": "online"}),
            carol: "online"}


class _Ids:
    def __init__(self, rng: random.Random):
        self.rng = rng

    def pair(self) -> tuple[str, str]:
        return f"guest_{self.rng.getrandbits(32):08x}", self.socket()

    def socket(self) -> str:
        return "".join(self.rng.choice(_ALPHABET) for _ in range(16))


def iso(seconds: float) -> str:
    """ISO-8601 UTC with milliseconds and Z, as the signaling server writes timestamps."""
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def record(guest: Guest, joined: float, heartbeat: float, pong: float) -> dict:
    return {"socketId": guest.socket_id, "userId": guest.user_id, "name": f"Guest {guest.user_id[-4:]}",
            "joinedAt": iso(joined), "lastHeartbeat": iso(heartbeat), "lastPing": iso(heartbeat),
            "lastPongReceived": iso(pong), "status": "online", "roomId": None,
            "ipAddress": "::ffff:10.0.3.7", "userAgent": "Mozilla/5.0 (Linux; Android 14) reaper-demo",
            "isResponsive": True, "missedPings": 0}


def entry(guest: Guest) -> str:
    return guest.entry or json.dumps({"userId": guest.user_id, "socketId": guest.socket_id,
                                      "isGuest": True, "status": "online"})


def preset_record(guest: Guest, now: float) -> str:
    """The record a leftover or malformed guest starts with."""
    if guest.preset == "not json":
        return "<<garbled write: not JSON>>"
    if guest.preset == "no heartbeat":
        data = record(guest, now, now, now)
        del data["lastHeartbeat"]
        return json.dumps(data)
    return json.dumps(record(guest, now - 60, now - 60, now - 60))  # "old"


@dataclass
class _Heartbeats:
    joined_at: float
    last_pong: float
    written: bool = False


class Signaling:
    """Writes the scenario into Redis from a thread, one round every heartbeat_interval."""

    def __init__(self, client: redis.Redis, scenario: Scenario, timings: Timings):
        self.client, self.scenario, self.timings = client, scenario, timings
        self.lost: set[str] = set()  # live guests whose record vanished under them
        self.error: Exception | None = None  # Redis failed under the simulation
        self._state: dict[str, _Heartbeats] = {}
        self._joined: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="demo-signaling", daemon=True)
        self._adapter = client.pubsub()
        self.started = 0.0

    def start(self) -> "Signaling":
        self._adapter.subscribe(ADAPTER_CHANNEL)  # "a signaling server is attached"
        self.started = time.monotonic()
        self._write_presets()
        self.round()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self._adapter.close()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def joined(self) -> set[str]:
        with self._lock:
            return set(self._joined)

    def _loop(self) -> None:
        while not self._stop.wait(self.timings.heartbeat_interval_s):
            try:
                self.round()
            except redis.RedisError as exc:
                if not self._stop.is_set():
                    self.error = exc
                return

    def _write_presets(self) -> None:
        now = time.time()
        with self.client.pipeline(transaction=False) as pipe:
            for user_id, value in self.scenario.registered.items():
                pipe.hset(ONLINE, user_id, value)
            for guest in self.scenario.guests:
                if guest.kind in (LEFTOVER, MALFORMED):
                    if guest.preset:
                        pipe.set(CONNECTION + guest.socket_id, preset_record(guest, now), ex=LONG_TTL_S)
                    pipe.hset(ONLINE, guest.user_id, entry(guest))
            pipe.execute()
        with self._lock:
            self._joined.update(g.user_id for g in self.scenario.guests if g.kind in (LEFTOVER, MALFORMED))

    def round(self) -> None:
        """One heartbeat round: every guest that is still writing writes its record."""
        t, now = self.elapsed(), time.time()
        for guest in self.scenario.guests:
            if guest.kind in (LEFTOVER, MALFORMED) or guest.user_id in self.lost or t < guest.join_at:
                continue
            if guest.kind == FROZEN or guest.alive_at(t):
                self._heartbeat(guest, t, now)

    def _heartbeat(self, guest: Guest, t: float, now: float) -> None:
        beat = self._state.setdefault(guest.user_id, _Heartbeats(joined_at=now, last_pong=now))
        if guest.alive_at(t):
            beat.last_pong = now  # a frozen app's pongs stop; its heartbeats go on
        value = json.dumps(record(guest, beat.joined_at, now, beat.last_pong))
        key = CONNECTION + guest.socket_id
        if not beat.written:
            self.client.set(key, value, ex=int(guest.ttl_s))
            self.client.hset(ONLINE, guest.user_id, entry(guest))  # the writer's order: record first
            beat.written = True
            with self._lock:
                self._joined.add(guest.user_id)
        elif not self.client.set(key, value, ex=int(guest.ttl_s), xx=True) and not guest.dies:
            with self._lock:
                self.lost.add(guest.user_id)
