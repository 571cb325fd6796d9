"""The HTTP endpoint of ``[server] listen``: GET /healthz, /readyz and /metrics, answered from
what the jobs recorded (never waiting for Redis), on threads of its own."""

import json
import socket
import socketserver
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from loguru import logger

from .config import split_host_port
from .errors import ConfigError

LISTEN_KEY = "server.listen"
REQUEST_TIMEOUT_S = 10.0  # a client that sends nothing does not hold a thread for ever


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    body: bytes

    @classmethod
    def json(cls, status: int, payload: dict) -> "Reply":
        return cls(status, "application/json", json.dumps(payload).encode() + b"\n")


Routes = dict[str, Callable[[], Reply]]


class _Handler(BaseHTTPRequestHandler):
    server_version = "reaper"
    timeout = REQUEST_TIMEOUT_S

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
            return route()
        except Exception as exc:  # a bug in one answer must not take the endpoint down
            logger.opt(exception=exc).error("HTTP: {} failed", self.path)
            return Reply.json(500, {"error": f"{type(exc).__name__}: {exc}"})

    def _answer(self, reply: Reply, with_body: bool) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if with_body:
            self.wfile.write(reply.body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        logger.debug("HTTP: {} {}", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple, family: int, routes: Routes):
        self.address_family, self.routes = family, routes
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer's own looks up the host's FQDN, which can hang on a broken resolver.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]


class Endpoint:
    """A bound, serving endpoint; ``close()`` stops it."""

    def __init__(self, server: _Server):
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="reaper-http", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def serve(listen: str, routes: Routes) -> Endpoint:
    """Bind ``listen`` ("host:port", as server.listen) and serve ``routes`` until closed;
    ConfigError naming server.listen when that address cannot be had."""
    try:
        host, port = split_host_port(listen)
    except ValueError:
        raise ConfigError(LISTEN_KEY, listen, 'host:port such as "127.0.0.1:9108", or "" to disable') from None
    try:
        family, address = _resolve(host, port)
        server = _Server(address, family, routes)
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
