"""Talking to the signaling cluster through Redis (docs/signaling.md): tell, fence, ask.

The packets are socketio.py's; this module publishes them and gathers the answers. tell and
fence raise Redis errors as redis-py raises them (Teller, the cascade's tell step, maps them onto
errors.py; the sweep logs a failed fence and goes on); ask turns one into an "unknown" answer,
as it does a timeout. A socket id or userId that is no Unicode text (a Redis name that is no
UTF-8, reaper/core/names.py) cannot be socket.io's: it is left out of every packet.

    ask: NUMSUB → (0: nobody attached, done) → SUBSCRIBE both response channels → PUBLISH the
         fetch request → read answers until every server answered, a socket is found, or the
         deadline.
"""

import secrets
import time
from dataclasses import dataclass, field

import redis
from loguru import logger
from redis.exceptions import NoPermissionError

from reaper.store import cluster
from reaper.core.config import NotifyConfig
from reaper.core.errors import PermanentError, TransientError
from reaper.safety.gate import Cleared, Permit, require
from reaper.core.names import is_text
from reaper.signaling.socketio import Channels, broadcast_packet, disconnect_request, fetch_request, parse_answer

ATTACHED, NOT_ATTACHED, UNKNOWN = "attached", "not_attached", "unknown"


@dataclass(frozen=True)
class AskResult:
    """What the cluster said about some socket ids. Complete when every verdict is certain:
    every expected server answered, or every socket was found. ``why`` explains the others."""

    asked: frozenset
    attached: frozenset = frozenset()
    complete: bool = True
    expected: int = 0
    answered: int = 0
    why: str = ""
    elapsed_s: float = field(default=0.0, compare=False)

    def verdict(self, socket_id: str) -> str:
        """Attached when any server holds it (even in a partial answer); not attached only
        when every expected server answered; unknown otherwise."""
        if socket_id in self.attached:
            return ATTACHED
        return NOT_ATTACHED if self.complete else UNKNOWN


class SignalingCluster:
    """The signaling servers behind one prefix and namespace, reached through ``client``."""

    def __init__(self, client: redis.Redis, notify: NotifyConfig):
        self.client = client
        self.notify = notify
        self.channels = Channels.of(notify.channel_prefix, notify.namespace)
        self.uid = f"reaper-{secrets.token_hex(4)}"

    def servers(self) -> int:
        """How many servers subscribe the request channel (PUBSUB NUMSUB): 0 = cold tier."""
        channel = self.channels.request
        if cluster.is_cluster(self.client):  # each Redis Cluster node counts only its own clients
            return cluster.subscribers(self.client, channel)
        return int(dict(self.client.pubsub_numsub(channel)).get(channel.encode(), 0))

    def servers_or_transient(self) -> int:
        """servers(), with a Redis error as a TransientError: asked before each purge step."""
        try:
            return self.servers()
        except redis.RedisError as exc:
            raise TransientError(f"signaling: asking who is attached: {exc}") from exc

    def tell_many(self, guests: list[tuple[Cleared, str]]) -> int:
        """Broadcast ``event {userId, reason}`` to the namespace for each guest the gate cleared,
        in one round trip (a cascade batch); how many servers got them, summed."""
        for guest, _ in guests:
            require(guest, Cleared)
        guests = [(guest.user_id, reason) for guest, reason in guests if is_text(guest.user_id)]
        if not guests:
            return 0
        pipe = self._publisher().pipeline(transaction=False)
        for user_id, reason in guests:
            pipe.publish(self.channels.broadcast, self._guest_left(user_id, reason))
        return sum(pipe.execute())

    def _publisher(self) -> redis.Redis:
        """Where to publish: a Redis Cluster refuses PUBLISH in a pipeline, but any one node
        forwards a (non-sharded) PUBLISH to the subscribers of every node."""
        if cluster.is_cluster(self.client):
            return self.client.get_redis_connection(self.client.get_default_node())
        return self.client

    def fence(self, permit: Permit) -> int:
        """Disconnect the sockets the gate let through wherever they are and close their
        connections; how many servers got the request (nobody answers a disconnect)."""
        require(permit, Permit)
        socket_ids = _socket_io_ids(permit.detail)
        if not socket_ids:
            return 0
        return self.client.publish(self.channels.request, disconnect_request(socket_ids, close=True))

    def _guest_left(self, user_id: str, reason: str) -> bytes:
        return broadcast_packet(self.notify.namespace, self.notify.event, {"userId": user_id, "reason": reason})

    def ask(self, socket_ids: list[str], timeout_s: float | None = None) -> AskResult:
        """Which of these sockets are attached to some server, within ``timeout_s``
        (default ``notify.ask_timeout``). A Redis error makes every verdict unknown."""
        socket_ids = _socket_io_ids(socket_ids)
        try:
            return self._ask(frozenset(socket_ids), timeout_s)
        except redis.RedisError as exc:
            return AskResult(frozenset(socket_ids), complete=False, why=f"redis: {exc}")

    def _ask(self, asked: frozenset, timeout_s: float | None) -> AskResult:
        timeout_s = self.notify.ask_timeout_s if timeout_s is None else timeout_s
        started = time.monotonic()
        expected = self.servers() if asked else 0
        if expected == 0:
            return AskResult(asked, why=f"no signaling server subscribes {self.channels.request}"
                             if asked else "")
        tally = self._gather(asked, expected, started + timeout_s)
        return tally.result(time.monotonic() - started, timeout_s)

    def _gather(self, asked: frozenset, expected: int, deadline: float) -> "_Tally":
        request_id = secrets.token_hex(8)
        request = fetch_request(self.uid, request_id, sorted(asked))
        with _Listener(self.client, [self.channels.response, self.channels.response_for(self.uid)]) as listener:
            if not listener.ready(deadline):
                return _Tally(asked, expected, unsubscribed=True)
            receivers = self.client.publish(self.channels.request, request)
            # A server that left between NUMSUB and PUBLISH will never answer. (On a Redis
            # Cluster PUBLISH counts only the receiving node's subscribers: NUMSUB it is.)
            tally = _Tally(asked, expected if cluster.is_cluster(self.client) else min(expected, receivers))
            while not tally.done() and (raw := listener.next(deadline)) is not None:
                tally.add(parse_answer(raw), request_id)
        return tally


class Teller:
    """The cascade's tell step (docs/design.md, the cascade step 5): Redis failures become step errors, so a tell is
    retried with backoff (or buried, when Redis refuses it for good) like any other step.
    Publishing to nobody is a success: no server is up to tell, and none will remember."""

    def __init__(self, tier: SignalingCluster | None):
        self.tier = tier

    @property
    def enabled(self) -> bool:
        return self.tier is not None

    def tell_guests(self, guests: list[tuple[Cleared, str]]) -> None:
        try:
            self.tier.tell_many(guests)
        except NoPermissionError as exc:  # an ACL without PUBLISH: retrying cannot help
            raise PermanentError(f"signaling: {exc}") from exc
        except redis.RedisError as exc:
            raise TransientError(f"signaling: {exc}") from exc
        logger.info("Notify: {} told for {} reaped guest(s)", self.tier.notify.event, len(guests))


class _Tally:
    """Answers to one request so far."""

    def __init__(self, asked: frozenset, expected: int, unsubscribed: bool = False):
        self.asked, self.expected, self.unsubscribed = asked, expected, unsubscribed
        self.answered, self.malformed = 0, 0
        self.attached: set = set()

    def add(self, answer, request_id: str) -> None:
        if answer is None or answer.request_id != request_id:
            return  # another requester's traffic on the shared channel
        self.answered += 1
        if answer.socket_ids is None:
            self.malformed += 1
        else:
            self.attached |= answer.socket_ids & self.asked

    def done(self) -> bool:
        return self.answered >= self.expected or self.attached == self.asked

    def result(self, elapsed_s: float, timeout_s: float) -> AskResult:
        complete = self.attached == self.asked or (
            self.answered >= self.expected and not (self.malformed or self.unsubscribed))
        return AskResult(self.asked, frozenset(self.attached), complete, self.expected, self.answered,
                         "" if complete else self._why(timeout_s), elapsed_s)

    def _why(self, timeout_s: float) -> str:
        if self.unsubscribed:
            return f"could not subscribe the response channels within {timeout_s:g}s"
        if self.malformed:
            return f"{self.malformed} of {self.answered} answers were unreadable"
        return f"{self.answered} of {self.expected} servers answered within {timeout_s:g}s"


class _Listener:
    """A pub/sub connection on the response channels, closed on exit."""

    def __init__(self, client: redis.Redis, channels: list[str]):
        self.pubsub = client.pubsub()
        self.channels = channels

    def __enter__(self) -> "_Listener":
        self.pubsub.subscribe(*self.channels)
        self.confirmed = 0
        return self

    def __exit__(self, *exc) -> None:
        self.pubsub.close()

    def ready(self, deadline: float) -> bool:
        """Wait for the SUBSCRIBE confirmations: publishing before them could lose answers."""
        while self.confirmed < len(self.channels):
            if self._read(deadline) is None and time.monotonic() >= deadline:
                return False
        return True

    def next(self, deadline: float) -> bytes | None:
        """The next message body on the channels, or None at the deadline."""
        while time.monotonic() < deadline:
            message = self._read(deadline)
            if message is not None and message["type"] == "message":
                return message["data"]
        return None

    def _read(self, deadline: float):
        message = self.pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
        if message is not None and message["type"] == "subscribe":
            self.confirmed += 1
        return message


def _socket_io_ids(socket_ids: list[str]) -> list[str]:
    """Those that can be socket.io's: text (a Redis name that is no UTF-8 cannot)."""
    return [socket_id for socket_id in socket_ids if is_text(socket_id)]
