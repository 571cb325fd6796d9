"""Loopback stand-ins for the auth-service and the user-service (docs/design.md, the cascade), counting DELETEs.

The auth-service knows the guests the simulated signaling server created: deleting one
answers 200, deleting an unknown or already deleted one 404 (which reaper counts as done).
"""

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

AUTH_GUEST = "/auth/guest/"
_CLEANUPS = {"/auth/guest/cleanup": {"deletedCount": 0},
             "/auth/guest/cleanup-all": {"data": {"deletedCount": 0}},
             "/guests/cleanup": {},
             "/guests/cleanup-all": {"data": {"removedUsers": 0}}}


class Service:
    """One stand-in service on 127.0.0.1, served from a daemon thread."""

    def __init__(self, name: str):
        self.name = name
        self.users: set[str] = set()
        self.deletes: Counter = Counter()  # userId -> DELETE /auth/guest/{userId} received
        self.cleanups: Counter = Counter()  # cleanup path -> calls
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.service = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"demo-{name}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "Service":
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def add_user(self, user_id: str) -> None:
        with self._lock:
            self.users.add(user_id)

    def deleted(self) -> Counter:
        with self._lock:
            return Counter(self.deletes)

    def answer(self, method: str, path: str) -> tuple[int, dict]:
        if method == "GET" and path == "/health":
            return 200, {"status": "ok"}
        if method != "DELETE":
            return 404, {"error": "not found"}
        with self._lock:
            if path in _CLEANUPS:
                self.cleanups[path] += 1
                return 200, _CLEANUPS[path]
            if path.startswith(AUTH_GUEST) and "/" not in path[len(AUTH_GUEST):]:
                return self._delete_guest(unquote(path[len(AUTH_GUEST):]))
        return 404, {"error": "not found"}

    def _delete_guest(self, user_id: str) -> tuple[int, dict]:
        self.deletes[user_id] += 1
        if user_id in self.users:
            self.users.discard(user_id)
            return 200, {"ok": True}
        return 404, {"error": "guest not found"}


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self._reply(*self.server.service.answer(self.command, urlsplit(self.path).path))

    do_DELETE = do_GET

    def log_message(self, format, *args) -> None:
        pass  # the demo's view shows what matters; one line per request would drown it

    def _reply(self, status: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class StandIns:
    """Both services, started and stopped together."""

    def __init__(self):
        self.auth, self.users = Service("auth-service"), Service("user-service")

    def __enter__(self) -> "StandIns":
        self.auth.start()
        self.users.start()
        return self

    def __exit__(self, *exc) -> None:
        self.auth.stop()
        self.users.stop()
