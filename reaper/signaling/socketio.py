"""The socket.io Redis adapter protocol, as far as reaper speaks it (SPEC §8). No I/O here.

Compatible with ``@socket.io/redis-adapter`` 8.x (the classic ``createAdapter``, not the
sharded one) and written the way ``@socket.io/redis-emitter`` 5.x writes. Read from
their dist/index.js and checked against real servers in tests/test_signaling.py.

Channels, for prefix P (``notify.channel_prefix``, the adapter's ``key`` option) and
namespace N (``notify.namespace``):

    P#N#              broadcasts; servers PSUBSCRIBE ``P#N#*`` (``P#N#room#`` targets one room)
    P-request#N#      requests; every server SUBSCRIBEs it, so PUBSUB NUMSUB counts the servers
    P-response#N#     responses, by default
    P-response#N#U#   responses for requester U, from servers started with
                      ``publishOnSpecificResponseChannel: true``

Broadcast (msgpack, never JSON): ``[uid, packet, opts]``
    uid      the sender; a server drops its own (the emitter says "emitter", reaper "reaper")
    packet   {"type": 2 (EVENT), "data": [event, *args], "nsp": N}
    opts     {"rooms": [], "except": [], "flags": {}}; no rooms = every socket of N

Requests (JSON text; a server reads a body starting with "{" as JSON, anything else as msgpack):
    REMOTE_DISCONNECT  {"type": 4, "opts": {"rooms": [...], "except": []}, "close": true}
                       every server disconnects its sockets in any of the rooms (close: and
                       closes the underlying connection); nobody answers.
    REMOTE_FETCH       {"uid": U, "requestId": R, "type": 5, "opts": {"rooms": [...], "except": []}}
                       every server answers once, also when it holds none of them:
                       {"requestId": R, "sockets": [{"id", "handshake", "rooms", "data"}, ...]}
                       (the handshake carries the client's headers: never log an answer).

Every socket is in the room named after its own id, so ``rooms: [socketId]`` addresses exactly
that socket wherever it is connected.
"""

import json
from dataclasses import dataclass

from reaper.core.config import RESERVED_EVENTS
from reaper.signaling.msgpack import MsgpackError, packb, unpackb

EVENT = 2  # socket.io-parser PacketType.EVENT
REMOTE_DISCONNECT = 4
REMOTE_FETCH = 5
SENDER_UID = "reaper"


@dataclass(frozen=True)
class Channels:
    broadcast: str
    request: str
    response: str

    @classmethod
    def of(cls, prefix: str, namespace: str) -> "Channels":
        return cls(f"{prefix}#{namespace}#", f"{prefix}-request#{namespace}#",
                   f"{prefix}-response#{namespace}#")

    def response_for(self, uid: str) -> str:
        """The requester's own response channel."""
        return f"{self.response}{uid}#"


@dataclass(frozen=True)
class Answer:
    """One server's answer to a REMOTE_FETCH; ``socket_ids`` is None when it is malformed."""

    request_id: str
    socket_ids: frozenset | None


def broadcast_packet(namespace: str, event: str, *args) -> bytes:
    if event in RESERVED_EVENTS:
        raise ValueError(f"socket.io: {event!r} is a reserved event name")
    packet = {"type": EVENT, "data": [event, *args], "nsp": namespace}
    return packb([SENDER_UID, packet, {"rooms": [], "except": [], "flags": {}}])


def disconnect_request(rooms: list[str], close: bool = True) -> bytes:
    return _json({"type": REMOTE_DISCONNECT, "opts": {"rooms": list(rooms), "except": []},
                  "close": close})


def fetch_request(uid: str, request_id: str, rooms: list[str]) -> bytes:
    return _json({"uid": uid, "requestId": request_id, "type": REMOTE_FETCH,
                  "opts": {"rooms": list(rooms), "except": []}})


def parse_answer(raw: bytes) -> Answer | None:
    """A fetch answer as the adapter reads one (JSON when it starts with "{", else msgpack);
    None when it is no answer at all (unreadable, or without a string requestId)."""
    body = _decode(raw)
    if not isinstance(body, dict) or not isinstance(body.get("requestId"), str):
        return None
    return Answer(body["requestId"], _socket_ids(body.get("sockets")))


def _decode(raw: bytes):
    try:
        if raw[:1] == b"{":
            return json.loads(raw)
        return unpackb(raw)
    except (ValueError, MsgpackError, RecursionError):  # JSONDecodeError/UnicodeError are ValueErrors
        return None


def _socket_ids(sockets) -> frozenset | None:
    if not isinstance(sockets, list):
        return None
    if not all(isinstance(s, dict) and isinstance(s.get("id"), str) for s in sockets):
        return None
    return frozenset(s["id"] for s in sockets)


def _json(body: dict) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()
