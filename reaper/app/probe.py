"""`reaper health`: ask a running reaper's /healthz, for a container HEALTHCHECK or a script.

One GET, one line, exit 0 on 200 and 1 otherwise, so an image needs no curl to check itself.
"""

from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from reaper.core.config import split_host_port

HEALTH_PATH = "/healthz"
# A server bound to every address is reached through loopback from inside its own container.
_ANY_ADDRESS = {"0.0.0.0": "127.0.0.1", "::": "::1", "*": "127.0.0.1"}
_MAX_BODY = 200


@dataclass(frozen=True)
class Probe:
    healthy: bool
    line: str


def url_for_listen(listen: str) -> str:
    """The /healthz URL of a server bound to ``listen`` ("host:port", as server.listen)."""
    host, port = split_host_port(listen)
    host = _ANY_ADDRESS.get(host, host)
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}{HEALTH_PATH}"


def with_health_path(url: str) -> str:
    """A bare base URL ("http://host:9108") means its /healthz; a URL with a path is kept."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r}: expected an http:// URL such as http://127.0.0.1:9108/healthz")
    return url.rstrip("/") + HEALTH_PATH if parts.path in ("", "/") else url


def probe(url: str, timeout_s: float, transport: httpx.BaseTransport | None = None) -> Probe:
    """GET ``url``; healthy only on 200. Never raises for what the network does."""
    try:
        with httpx.Client(timeout=timeout_s, transport=transport) as client:
            reply = client.get(url)
    except httpx.HTTPError as exc:
        return Probe(False, f"unhealthy: {url}: {type(exc).__name__}: {exc or 'no answer'}")
    body = _one_line(reply.text)
    word = "healthy" if reply.status_code == 200 else "unhealthy"
    return Probe(reply.status_code == 200, f"{word}: {url}: {reply.status_code} {body}".rstrip())


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _MAX_BODY else flat[:_MAX_BODY] + "…"
