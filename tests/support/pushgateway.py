"""A Pushgateway stand-in on a real loopback socket: records every request, answers ``status``."""

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Push:
    method: str
    path: str
    content_type: str
    body: bytes


class PushGateway:
    def __init__(self, status: int = 200):
        self.status, self.pushes = status, []
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self):
                self._record()

            def do_POST(self):
                self._record()

            def _record(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                gateway.pushes.append(Push(self.command, self.path, self.headers.get("Content-Type", ""), body))
                self.send_response(gateway.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format, *args):  # noqa: A002 - the base class's name
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)  # a quick shutdown()

    def __enter__(self) -> "PushGateway":
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
