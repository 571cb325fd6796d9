"""A service that refuses every request and echoes its credentials in the reply body, the way
careless error pages do: a real loopback HTTP server, for tests of what reaper keeps of replies."""

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PADDING = "x" * 190  # puts an echoed credential across the 200-character cut of a reply


def bodies(authorization: str) -> dict[str, str]:
    """Reply bodies that carry ``authorization`` (a header value) in the ways error pages do."""
    scheme, _, credential = authorization.partition(" ")
    decoded = ""
    if scheme == "Basic":
        decoded = base64.b64decode(credential).decode()
    return {
        "json": json.dumps({"error": "unauthorized", "request": {"headers": {"authorization": authorization}}}),
        "headers": f"401 Unauthorized\r\nHost: auth\r\nAuthorization: {authorization}\r\nAccept: */*\r\n",
        "query": f"rejected DELETE /auth/guest/x?access_token={credential}&api_key={credential}&user=x",
        "bare": f"the credential {credential} is not valid here",
        "decoded": f"login {decoded} refused" if decoded else f"bearer value was {credential}",
        "json in json": json.dumps({"detail": json.dumps({"Authorization": authorization, "token": credential})}),
        "html": f"<html><p>Authorization: {authorization}</p><p>token={credential}</p></html>",
        "at the cut": PADDING + f"Authorization: {authorization}",
        "python repr": repr({"Authorization": authorization}),
    }


class EchoService:
    """Answers every request with ``status`` and the body ``mode`` of ``bodies``."""

    def __init__(self, status: int = 401, mode: str = "json"):
        self.status, self.mode = status, mode
        self.seen: list[str] = []  # the Authorization header of each request
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def url(self, userinfo: str = "") -> str:
        return f"http://{userinfo + '@' if userinfo else ''}127.0.0.1:{self.port}"

    def __enter__(self) -> "EchoService":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


def _handler(service: EchoService):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            authorization = self.headers.get("Authorization", "")
            service.seen.append(authorization)
            body = bodies(authorization)[service.mode].encode()
            self.send_response(service.status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True

        do_DELETE = do_POST = do_GET

        def log_message(self, format: str, *args) -> None:
            pass

    return Handler
