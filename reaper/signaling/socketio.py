"""The socket.io Redis adapter protocol, as far as reaper speaks it (docs/signaling.md). No I/O here.

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

MessagePack is the ``msgpack`` package's (the notepack.io codec the adapter uses writes the
same bytes: tests/test_msgpack.py). ``unpack`` reads what other processes publish, so it
trusts nothing: see its docstring for the limits.
"""

import json
from dataclasses import dataclass

import msgpack

from reaper.core.config import RESERVED_EVENTS

EVENT = 2  # socket.io-parser PacketType.EVENT
REMOTE_DISCONNECT = 4
REMOTE_FETCH = 5
SENDER_UID = "reaper"
# Redis's default pubsub output buffer hard limit: it drops a subscriber before a larger message
MAX_PACKET_BYTES = 32 * 2**20
MAX_DEPTH = 64  # what recursive code (repr, ==, json) walks safely; real answers nest 4 deep


class MsgpackError(ValueError):
    """The bytes are not one MessagePack value that ``unpack`` accepts."""


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
    return pack([SENDER_UID, packet, {"rooms": [], "except": [], "flags": {}}])


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
        return unpack(raw)
    except (ValueError, RecursionError):  # MsgpackError, JSONDecodeError, UnicodeError: ValueErrors
        return None


def _socket_ids(sockets) -> frozenset | None:
    if not isinstance(sockets, list):
        return None
    if not all(isinstance(s, dict) and isinstance(s.get("id"), str) for s in sockets):
        return None
    return frozenset(s["id"] for s in sockets)


def _json(body: dict) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


# -- MessagePack ------------------------------------------------------------------------------

def pack(value) -> bytes:
    """Smallest forms, str as str and bytes as bin, floats 64-bit: what notepack.io writes."""
    return msgpack.packb(value, use_bin_type=True, use_single_float=False)


def unpack(raw: bytes):
    """The one value ``raw`` holds, or MsgpackError saying why not. Nothing declared is
    trusted: the packet is at most MAX_PACKET_BYTES; no length may claim more items or bytes
    than the packet holds (checked before anything is allocated); ext types (a JavaScript
    Date included) are refused; map keys are str or bytes (notepack writes object keys as
    strings; int keys would let a sender aim hash collisions at us); strings must be UTF-8;
    nesting stops at MAX_DEPTH; trailing bytes are an error."""
    if len(raw) > MAX_PACKET_BYTES:
        raise MsgpackError(f"msgpack: a packet of {len(raw)} bytes is over {MAX_PACKET_BYTES}")
    try:
        value = msgpack.unpackb(raw, raw=False, strict_map_key=True, use_list=True,
                                max_str_len=len(raw), max_bin_len=len(raw), max_array_len=len(raw),
                                max_map_len=len(raw) // 2, max_ext_len=0, ext_hook=_refuse_ext)
    except ValueError as exc:  # every refusal of msgpack.unpackb is one
        raise MsgpackError(f"msgpack: {_why(exc)}") from None
    except RecursionError:  # msgpack's pure-Python fallback, where its C extension is missing
        raise MsgpackError(f"msgpack: nesting deeper than {MAX_DEPTH}") from None
    _check_depth(value)
    return value


def _refuse_ext(code: int, data: bytes):
    raise ValueError(f"ext type {code}")  # the empty ones: max_ext_len=0 refuses all others unread


def _why(exc: ValueError) -> str:
    if isinstance(exc, msgpack.ExtraData):
        return f"{len(exc.extra)} trailing bytes after the value"
    if isinstance(exc, msgpack.StackError):
        return f"nesting deeper than {MAX_DEPTH}"
    if isinstance(exc, msgpack.FormatError):
        return "a reserved type byte (0xc1): not MessagePack"
    if isinstance(exc, UnicodeDecodeError):
        return f"a string is not valid UTF-8 ({exc.reason} at byte {exc.start})"
    return next((why.format(exc=exc) for phrase, why in _SAID if phrase in str(exc)), str(exc))


_EXT = "an ext type (a timestamp, a JavaScript Date, ...): not accepted"
_SAID = (  # a phrase of msgpack.unpackb's ValueError -> why, in words
    ("max_ext_len", _EXT), ("ext type", _EXT), ("timestamp", _EXT),
    ("for map key", "a map key that is not str or bytes ({exc})"),
    ("incomplete input", "truncated"),
    ("exceeds max_", "a length longer than the packet ({exc})"),
)


def _check_depth(value) -> None:
    """msgpack's C decoder stops at 1024 levels only, deep enough that walking the result
    recursively (repr, ==, json.dumps) raises RecursionError: keep the old codec's bound, no
    container more than MAX_DEPTH levels inside the top one. One pass over the containers."""
    level, depth = [value] if type(value) in _CONTAINERS else [], 0
    while level:
        if depth > MAX_DEPTH:
            raise MsgpackError(f"msgpack: nesting deeper than {MAX_DEPTH}")
        level = [child for container in level
                 for child in (container.values() if type(container) is dict else container)
                 if type(child) in _CONTAINERS]
        depth += 1


_CONTAINERS = (list, dict)  # msgpack.unpackb builds exactly these, no subclasses
