"""The HTTP endpoint of ``[server] listen``: GET /healthz, /readyz and /metrics, answered from
what the jobs recorded (never waiting for Redis), on threads of its own. A route is a function
of nothing, or a WSGI application that sees the request's headers and query (/metrics is
prometheus_client's own, which negotiates OpenMetrics and gzip and filters by name[]).

Bounded, so that no client, slow or hostile, can take the descriptors and threads the cascade
needs: at most CAP connections at a time, served by a pool of as many threads, each cut
DEADLINE_S after accept however it trickles its bytes. Over the cap, a newcomer takes the place
of the oldest connection once that one is past a grace, or is closed at once (admission.py
decides).
Nothing reaches stderr but through loguru: a reset or a broken pipe is one DEBUG line.
"""

import io
import json
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import urlsplit

from loguru import logger

from reaper.ops.admission import Admission
from reaper.core.config import split_host_port
from reaper.core.errors import ConfigError

LISTEN_KEY = "server.listen"
CAP = 32  # connections at a time: far below any descriptor limit (systemd's soft one is 1024)
DEADLINE_S = 5.0  # from accept to answer, for the whole request, not per read
ROOM_WAIT_S = 0.25  # how long a newcomer waits for the oldest connection, cut, to let go
POLL_S = 0.2  # how often deadlines are enforced (and shutdown() is noticed), at most
LOGGED_CHARS = 200  # of a client's request line in a log line
_PRINTABLE = str.maketrans({c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7f, 0xa0))})


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()  # more of them: Content-Encoding, say

    @classmethod
    def json(cls, status: int, payload: dict) -> "Reply":
        return cls(status, "application/json", json.dumps(payload).encode() + b"\n")


@dataclass(frozen=True)
class Wsgi:
    """A route answered by a WSGI application (PEP 3333), called on GET and HEAD alike."""

    app: Callable


Routes = dict[str, Callable[[], Reply] | Wsgi]


class _Handler(BaseHTTPRequestHandler):
    server_version = "reaper"

    def setup(self) -> None:
        # A backstop per read and write, should the server's thread that enforces the deadline
        # for the whole request (service_actions) be late.
        self.timeout = 2 * self.server.admission.deadline_s
        super().setup()

    def do_GET(self) -> None:
        self._answer(self._reply(), with_body=True)

    def do_HEAD(self) -> None:
        self._answer(self._reply(), with_body=False)

    def _reply(self) -> Reply:
        routes: Routes = self.server.routes
        route = routes.get(urlsplit(self.path).path)
        if route is None:
            return Reply.json(404, {"error": f"not found; this server answers {', '.join(routes)}"})
        try:
            return _call_wsgi(route.app, self) if isinstance(route, Wsgi) else route()
        except Exception as exc:  # a bug in one answer must not take the endpoint down
            logger.opt(exception=exc).error("HTTP: {} failed", printable(self.path))
            return Reply.json(500, {"error": f"{type(exc).__name__}: {exc}"})

    def _answer(self, reply: Reply, with_body: bool) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in reply.headers:
            self.send_header(name, value)
        self.end_headers()
        if with_body:
            self.wfile.write(reply.body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        shown = tuple(printable(a) if isinstance(a, str) else a for a in args)  # the request line, say
        logger.debug("HTTP: {} {}", self.address_string(), format % shown)


def _call_wsgi(app: Callable, request: _Handler) -> Reply:
    """``app``'s answer to the request in hand, whole (a HEAD is asked as a GET; _answer drops
    the body)."""
    split = urlsplit(request.path)
    environ = {f"HTTP_{name.upper().replace('-', '_')}": value for name, value in request.headers.items()}
    environ.update({
        "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": split.path, "QUERY_STRING": split.query,
        "SERVER_NAME": request.server.server_name, "SERVER_PORT": str(request.server.server_port),
        "SERVER_PROTOCOL": request.request_version, "wsgi.version": (1, 0), "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(), "wsgi.errors": io.StringIO(), "wsgi.multithread": True,
        "wsgi.multiprocess": False, "wsgi.run_once": False})
    started = []

    def start_response(status: str, headers: list, exc_info=None):
        started[:] = [status, headers]
        return lambda _data: None  # the legacy write(): prometheus_client's app returns its body

    chunks = app(environ, start_response)
    try:
        body = b"".join(chunks)
    finally:
        getattr(chunks, "close", lambda: None)()
    status, headers = started
    content_type = next((v for k, v in headers if k.lower() == "content-type"), "application/octet-stream")
    more = tuple((k, v) for k, v in headers if k.lower() not in ("content-type", "content-length"))
    return Reply(int(status.split()[0]), content_type, body, more)


def printable(text: str) -> str:
    """A client's text fit for a log line: control characters escaped, the length cut."""
    cut = text[:LOGGED_CHARS] + ("…" if len(text) > LOGGED_CHARS else "")
    return cut.translate(_PRINTABLE)


class _Server(HTTPServer):
    request_queue_size = 128  # a burst waits in the kernel's backlog rather than being refused

    def __init__(self, address: tuple, family: int, routes: Routes, admission: Admission):
        self.address_family, self.routes, self.admission = family, routes, admission
        self.changed = threading.Condition()  # guards admission; notified when a place frees
        # As many threads as places, made when first needed: a thread per connection held, never more.
        self.workers = ThreadPoolExecutor(admission.cap, thread_name_prefix="reaper-http")
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer's own looks up the host's FQDN, which can hang on a broken resolver.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def process_request(self, request: socket.socket, client_address) -> None:
        if self._admit(request):
            self.workers.submit(self._serve, request, client_address)
            return
        logger.debug("HTTP: {} turned away: {} connections held", client_address[0], len(self.admission))
        self.shutdown_request(request)

    def _admit(self, request: socket.socket) -> bool:
        with self.changed:
            if self.admission.full() and _cut(self.admission.oldest(time.monotonic()), "to make room"):
                self.changed.wait_for(lambda: not self.admission.full(), timeout=ROOM_WAIT_S)
            if self.admission.full():
                return False
            self.admission.take(request, time.monotonic())
            return True

    def _serve(self, request: socket.socket, client_address) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def service_actions(self) -> None:
        # serve_forever calls this after every accept and every poll interval.
        with self.changed:
            _cut(self.admission.overdue(time.monotonic()), f"past its {self.admission.deadline_s:g}s deadline")

    def shutdown_request(self, request: socket.socket) -> None:
        # The place is given back and the socket closed under one lock: a socket still held is
        # still open, so cutting one (under the same lock) never touches a descriptor reused
        # since; and a place is free only once its socket is gone, so however late a worker gets
        # the CPU back, no more than ``cap`` connections are open besides the newcomer being
        # decided. Neither call waits (no SO_LINGER).
        with self.changed:
            self.admission.give_back(request)
            super().shutdown_request(request)
            self.changed.notify_all()

    def server_close(self) -> None:
        with self.changed:
            _cut(self.admission.everyone(), "the endpoint closes")
        super().server_close()
        self.workers.shutdown(wait=True)  # soon: every connection was just cut

    def handle_error(self, request, client_address) -> None:
        # socketserver's own prints a traceback on stderr, outside the logging setup.
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # a reset, a broken pipe: the client's doing
            logger.debug("HTTP: {} connection ended: {}: {}", client_address[0], type(exc).__name__, exc)
        else:
            logger.opt(exception=exc).error("HTTP: {} the handler failed", client_address[0])


def _cut(connections: list[socket.socket], why: str) -> bool:
    """Shut connections down from outside their threads: a thread's read or write returns at
    once, and the thread closes its socket itself. Whether there were any."""
    for connection in connections:
        logger.debug("HTTP: {} cut: {}", _peer(connection), why)
        try:
            connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already reset by the client
    return bool(connections)


def _peer(connection: socket.socket) -> str:
    try:
        return str(connection.getpeername()[0])
    except OSError:
        return "a client"


class Endpoint:
    """A bound, serving endpoint; ``close()`` stops it."""

    def __init__(self, server: _Server):
        self._server = server
        poll_s = min(POLL_S, server.admission.deadline_s / 4)
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": poll_s},
                                        name="reaper-http", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def serve(listen: str, routes: Routes, cap: int = CAP, deadline_s: float = DEADLINE_S) -> Endpoint:
    """Bind ``listen`` ("host:port", as server.listen) and serve ``routes`` until closed, to at
    most ``cap`` connections at a time, each for at most ``deadline_s``; ConfigError naming
    server.listen when that address cannot be had."""
    try:
        host, port = split_host_port(listen)
    except ValueError:
        raise ConfigError(LISTEN_KEY, listen, 'host:port such as "127.0.0.1:9108", or "" to disable') from None
    try:
        family, address = _resolve(host, port)
        server = _Server(address, family, routes, Admission(cap, deadline_s))
    except OSError as exc:
        raise ConfigError(LISTEN_KEY, listen, f"an address this host can listen on, but: "
                          f"{exc.strerror or exc}") from exc
    logger.info("HTTP: serving {} on {}", ", ".join(routes), listen)
    return Endpoint(server)


def _resolve(host: str, port: int) -> tuple[int, tuple]:
    """The first address ``host`` names: ("localhost" may be ::1 or 127.0.0.1)."""
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                  flags=socket.AI_PASSIVE)[0]
    return family, address
