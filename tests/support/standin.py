"""HTTP stand-in for the auth-service and the user-service, on a real socket."""

from __future__ import annotations

import io
import json
import socket
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qsl, unquote, urlsplit

AUTH_GUEST = "/auth/guest/"
_CLEANUP_IDS = frozenset({"cleanup", "cleanup-all"})
_MODES = frozenset({"hang", "reset", "garbage"})
_GARBAGE = b"<html><body>502 Bad Gateway (not JSON)</body></html>"


@dataclass
class Request:
    """One request seen by the stand-in; status is None until answered (or on reset)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # keys lower-cased
    status: int | None = None
    body: bytes = b""
    at: float = field(default_factory=time.monotonic)  # when it arrived


@dataclass
class _Failure:
    mode: int | str
    remaining: int | None
    path_prefix: str | None

    def matches(self, path: str) -> bool:
        return self.path_prefix is None or path.startswith(self.path_prefix)


@dataclass
class _Reply:
    status: int
    body: bytes = b"{}"
    content_type: str = "application/json"

    @classmethod
    def json(cls, status: int, payload: object) -> "_Reply":
        return cls(status, json.dumps(payload).encode())


def wait_for(predicate: Callable[[], bool], timeout: float = 10, interval: float = 0.02) -> bool:
    """Poll predicate until it is true or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(interval, remaining))  # poll interval, bounded by the deadline


class StandIn:
    """Fake downstream HTTP services with request recording and failure injection."""

    def __init__(self) -> None:
        self.missing: set[str] = set()
        self.hang_seconds: float = 3.0
        self._requests: list[Request] = []
        self._failures: list[_Failure] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._version = 0  # bumped on every recorded change; wakes wait_for
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("StandIn not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "StandIn":
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", 0), _Handler, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"standin-{self._server.server_address[1]}", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Wake hanging handlers, stop serving and close the socket."""
        self._stopping.set()
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> "StandIn":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- recording --------------------------------------------------------

    @property
    def requests(self) -> list[Request]:
        """A snapshot of every request so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    def calls(self, method: str | None = None, prefix: str | None = None) -> list[Request]:
        """Recorded requests filtered by method and/or path prefix."""
        return [
            req for req in self.requests
            if (method is None or req.method == method.upper())
            and (prefix is None or req.path.startswith(prefix))
        ]

    def deleted_guests(self) -> list[str]:
        """userIds of DELETE /auth/guest/{id} answered 200 or 404."""
        ids = []
        for req in self.calls("DELETE", AUTH_GUEST):
            guest_id = _guest_id(req.path)
            if guest_id is not None and req.status in (200, 404):
                ids.append(guest_id)
        return ids

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10) -> bool:
        """Wait until predicate() is true, re-checking whenever a request is recorded."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                seen = self._version
            if predicate():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._changed:
                # Short cap: the predicate may depend on state outside this stand-in.
                if self._version == seen:
                    self._changed.wait(min(remaining, 0.05))

    # -- failure injection ------------------------------------------------

    def fail(self, mode: int | str, times: int | None = None, path_prefix: str | None = None) -> None:
        """Fail matching requests: an HTTP status, "hang", "reset" or "garbage".

        times=None fails until heal(); otherwise only the next `times` matches.
        """
        if isinstance(mode, bool) or not (
            (isinstance(mode, int) and 100 <= mode <= 599) or mode in _MODES
        ):
            raise ValueError(f"unknown failure mode {mode!r}")
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 or None")
        with self._lock:
            self._failures.append(_Failure(mode, times, path_prefix))

    def heal(self) -> None:
        """Drop every injected failure."""
        with self._lock:
            self._failures.clear()

    # -- used by the handler ----------------------------------------------

    def _record(self, req: Request) -> None:
        with self._changed:
            self._requests.append(req)
            self._bump()

    def _set_status(self, req: Request, status: int | None) -> None:
        with self._changed:
            req.status = status
            self._bump()

    def _bump(self) -> None:
        self._version += 1
        self._changed.notify_all()

    def _take_failure(self, path: str) -> int | str | None:
        """The failure mode for this request, consuming one use of a counted rule."""
        with self._lock:
            for rule in self._failures:
                if not rule.matches(path):
                    continue
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining == 0:
                        self._failures.remove(rule)
                return rule.mode
        return None

    def _route(self, method: str, path: str, query: dict[str, str]) -> _Reply:
        """Default answers of the two services."""
        if method == "GET" and path == "/health":
            return _Reply.json(200, {"status": "ok"})
        if method != "DELETE":
            return _not_found()
        if path == "/auth/guest/cleanup-all":
            return _Reply.json(200, {"data": {"deletedCount": 0}})
        if path == "/auth/guest/cleanup":
            return _needs_before(query) or _Reply.json(200, {"deletedCount": 0})
        if path == "/guests/cleanup-all":
            return _Reply.json(200, {"data": {"removedUsers": 0}})
        if path == "/guests/cleanup":
            return _needs_before(query) or _Reply.json(200, {})
        guest_id = _guest_id(path)
        if guest_id is not None:
            if guest_id in self.missing:
                return _Reply.json(404, {"error": "guest not found"})
            return _Reply.json(200, {"ok": True})
        return _not_found()


def _guest_id(path: str) -> str | None:
    """The {id} of /auth/guest/{id}, or None for other paths and the cleanup routes."""
    if not path.startswith(AUTH_GUEST):
        return None
    rest = path[len(AUTH_GUEST):]
    if not rest or "/" in rest:
        return None
    guest_id = unquote(rest)
    return None if guest_id in _CLEANUP_IDS else guest_id


def _not_found() -> _Reply:
    return _Reply.json(404, {"error": "not found"})


def _needs_before(query: dict[str, str]) -> _Reply | None:
    # Strict on purpose: a cleanup call without `before` is a client bug.
    return None if query.get("before") else _Reply.json(400, {"error": "missing before"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address, handler, standin: StandIn) -> None:
        self.standin = standin
        super().__init__(address, handler)

    def handle_error(self, request, client_address) -> None:
        # Clients that time out or hang up are part of the tests; stay quiet.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self._handle()

    do_DELETE = do_POST = do_PUT = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def log_message(self, format: str, *args) -> None:
        pass  # one line per request on stderr would drown test output

    def _handle(self) -> None:
        standin = self.server.standin
        parts = urlsplit(self.path)
        req = Request(
            method=self.command,
            path=parts.path,
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=self._read_body(),
        )
        standin._record(req)
        mode = standin._take_failure(req.path)
        if mode == "reset":
            self._reset()
            return
        if mode == "hang" and standin._stopping.wait(standin.hang_seconds):
            self.close_connection = True  # stopped while hanging: no answer
            return
        if isinstance(mode, int):
            reply = _Reply.json(mode, {"error": "injected failure", "status": mode})
        elif mode == "garbage":
            reply = _Reply(200, _GARBAGE, "text/html")
        else:
            reply = standin._route(req.method, req.path, req.query)
        standin._set_status(req, reply.status)  # before the client can see the reply
        self._send(reply)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, reply: _Reply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)
        self.close_connection = True

    def _reset(self) -> None:
        """Close with SO_LINGER 0 so the peer gets an RST, not a response."""
        self.close_connection = True
        sock = self.connection
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # The makefile() wrappers hold references; the fd only closes once all go.
        self.wfile.close()
        self.rfile.close()
        sock.close()
        # handle_one_request() flushes wfile after us; give it a harmless sink.
        self.wfile = io.BytesIO()
