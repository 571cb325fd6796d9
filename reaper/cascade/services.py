"""Thin clients for the auth-service, the user-service and MongoDB (docs/design.md, the cascade).

Each maps its failures onto errors.py: 5xx, timeouts and connection errors are
TransientError; other 4xx are PermanentError. Nothing here retries; the cascade does.
"""

from typing import Any

import httpx
from loguru import logger

from reaper.core import redact
from reaper.core.config import MongoConfig, ServiceConfig
from reaper.core.errors import PermanentError, TransientError
from reaper.safety.gate import Cleared, Permit, require
from reaper.core.names import is_text
from reaper.core.clock import iso, utc

# Tests replace this with mongomock.MongoClient; None: pymongo's. pymongo is imported only when
# MongoDB is used: ~40 ms of every start-up, and `run --once` without mongo.uri needs none of it.
mongo_client_factory = None


class HttpService:
    """One pooled, thread-safe httpx client for one service."""

    def __init__(self, name: str, config: ServiceConfig, max_connections: int = 16,
                 dry_run: bool = False):
        self.name = name
        self.enabled = bool(config.base_url)
        # None when disabled: a client loads the CA bundle and httpcore, ~0.1 s of start-up.
        self._client = _http_client(config, max_connections, dry_run) if self.enabled else None

    def request(self, method: str, path: str, ok_statuses=(200, 201, 202, 204), **kw) -> httpx.Response:
        if self._client is None:  # callers ask `enabled` first
            raise PermanentError(f"{self.name}: {method} {path}: disabled (no base_url)")
        try:
            response = self._client.request(method, path, **kw)
        except httpx.HTTPError as exc:  # connection, timeout, a body that cannot be decoded
            raise TransientError(f"{self.name}: {method} {path}: {type(exc).__name__}: {exc}") from exc
        if response.status_code in ok_statuses:
            return response
        detail = f"{self.name}: {method} {path}: HTTP {response.status_code} {redact.reply(response)}"
        if response.status_code >= 500 or response.status_code == 429:
            raise TransientError(detail)
        raise PermanentError(detail)

    def health(self) -> None:
        self.request("GET", "/health")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _http_client(config: ServiceConfig, max_connections: int, dry_run: bool) -> httpx.Client:
    headers = {"Authorization": f"Bearer {config.token}"} if config.token else {}
    return httpx.Client(
        base_url=config.base_url,
        headers=headers,
        timeout=config.timeout_s,
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        event_hooks={"request": [_refuse_writes]} if dry_run else {},
    )


def _refuse_writes(request: httpx.Request) -> None:
    """Dry run's last line of defence: no request but GET leaves the process."""
    if request.method != "GET":
        raise RuntimeError(f"dry run: refusing to send {request.method} {request.url.path}")


class AuthService(HttpService):
    def __init__(self, config: ServiceConfig, max_connections: int = 16, dry_run: bool = False):
        super().__init__("auth-service", config, max_connections, dry_run)

    def delete_guest(self, guest: Cleared) -> None:
        """DELETE one guest; 404 means it is gone already, which is what we wanted."""
        require(guest, Cleared)
        self.request("DELETE", f"/auth/guest/{guest.segment}", ok_statuses=(200, 202, 204, 404))

    def cleanup_before(self, permit: Permit) -> int | None:
        require(permit, Permit)
        reply = self.request("DELETE", "/auth/guest/cleanup", params={"before": iso(utc(permit.detail))})
        return _count(self.name, reply, ("deletedCount",))

    def cleanup_all(self, permit: Permit) -> int | None:
        require(permit, Permit)
        reply = self.request("DELETE", "/auth/guest/cleanup-all")
        return _count(self.name, reply, ("data", "deletedCount"))


class UserService(HttpService):
    def __init__(self, config: ServiceConfig, max_connections: int = 4, dry_run: bool = False):
        super().__init__("user-service", config, max_connections, dry_run)

    def cleanup_before(self, permit: Permit) -> int | None:
        require(permit, Permit)
        self.request("DELETE", "/guests/cleanup", params={"before": iso(utc(permit.detail))})
        return None

    def cleanup_all(self, permit: Permit) -> int | None:
        require(permit, Permit)
        reply = self.request("DELETE", "/guests/cleanup-all")
        return _count(self.name, reply, ("data", "removedUsers"))


def _count(name: str, reply: httpx.Response, path: tuple[str, ...]) -> int | None:
    """The count a cleanup reply carries; an unexpected body is logged, never fatal."""
    try:
        value: Any = reply.json()
        for part in path:
            value = value[part]
        return int(value)
    except (ValueError, KeyError, TypeError, IndexError):
        logger.warning("{}: unexpected reply body {} (wanted {})", name, redact.reply(reply), ".".join(path))
        return None


def _pymongo_client():
    from pymongo import MongoClient

    return MongoClient


class GuestStore:
    """The guest documents in MongoDB. Every delete carries ``guest_filter``."""

    def __init__(self, config: MongoConfig, client=None):
        self.enabled = bool(config.uri) or client is not None
        self._config = config
        self._client = client
        if self.enabled and client is None:
            timeout_ms = int(config.timeout_s * 1000)
            self._client = (mongo_client_factory or _pymongo_client())(
                config.uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms,
                socketTimeoutMS=timeout_ms, retryWrites=True,
            )

    @property
    def _collection(self):
        return self._client[self._config.database][self._config.collection]

    def delete_guests(self, guests: list[Cleared]) -> int:
        """Delete these guests' documents in one round trip. An id that is no Unicode text (a
        users:online field whose name is no UTF-8) matches no document: BSON text is UTF-8."""
        for guest in guests:
            require(guest, Cleared)
        user_ids = [guest.user_id for guest in guests if is_text(guest.user_id)]
        if not user_ids:
            return 0
        query = {**self._config.guest_filter, self._config.id_field: {"$in": user_ids}}
        return self._run("delete guests", lambda: self._collection.delete_many(query).deleted_count)

    def delete_created_before(self, permit: Permit) -> int:
        require(permit, Permit)
        query = {**self._config.guest_filter, self._config.created_field: {"$lt": utc(permit.detail)}}
        return self._run("retention", lambda: self._collection.delete_many(query).deleted_count)

    def delete_all(self, permit: Permit) -> int:
        require(permit, Permit)
        query = dict(self._config.guest_filter)
        return self._run("delete all guests", lambda: self._collection.delete_many(query).deleted_count)

    def ping(self) -> None:
        self._run("ping", lambda: self._client.admin.command("ping"))

    def _run(self, what: str, operation):
        from pymongo.errors import PyMongoError  # loaded by now: there is a client

        try:
            return operation()
        except PyMongoError as exc:
            # Network faults, elections and even auth failures may pass: retry until max age.
            raise TransientError(f"mongo: {what}: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
