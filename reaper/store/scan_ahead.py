"""Pages of JSON records, or of a hash's fields (users:online), read with the next page's request
already in Redis: while the caller works on page i, Redis reads page i+1 and scans on.

One connection. For records each request is MGET (this page's keys) then SCAN (the next page):
Redis reads the keys its last SCAN just walked, still in its caches (the SCAN first costs Redis
~20 % more a MGET at a million records); for a hash, the next HSCAN. The request for page i+1
leaves before page i is handed out, so Redis works while the caller judges, and reaper waits for
no round trip a page (measured at 1M guests: the record and online passes ~0.5 s shorter than
one request at a time).

Used only in a pass that sends Redis nothing else meanwhile (store.asks_ahead's ``alone``; with
users:online, but the EXISTS of entries naming a socket the records did not show): then Redis
holds one page's request of ours at a time, as with one request at a time. A lost
connection is retried as the client retries any command (its ``Retry``): on a new connection the
requests not answered yet are sent again (SCAN, MGET and HSCAN only read). Whatever is raised, the
connection is dropped rather than pooled: an answer may still be on its way."""

from collections import deque
from collections.abc import Callable, Iterator

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from reaper.store import mget


class _Ahead:
    """One connection of ``client``'s pool, each request sent before the answers to those before it
    are read; requests not answered yet are sent again on a new connection when one is lost."""

    def __init__(self, client: redis.Redis):
        self.client = client
        self._retry = client.get_retry() or Retry(NoBackoff(), 0)
        self._unanswered: deque = deque()  # commands sent whose answers are not read yet, in order
        self._conn = None

    def send(self, commands: list[tuple]) -> None:
        self._unanswered.extend(commands)
        if self._conn is not None and commands:
            try:
                # No health check: its PING would read an answer of ours still on its way.
                self._conn.send_packed_command(self._conn.pack_commands(commands), check_health=False)
            except (redis.ConnectionError, redis.TimeoutError):
                self.drop()  # sent again with the others once a read finds no connection

    def read(self):
        return self._retry.call_with_retry(self._read_one, lambda error: self.drop())

    def _read_one(self):
        if self._conn is None:
            self._conn = self.client.connection_pool.get_connection()
            if self._unanswered:
                self._conn.send_packed_command(self._conn.pack_commands(list(self._unanswered)), check_health=False)
        answer = self._conn.read_response()
        self._unanswered.popleft()
        return answer

    def drop(self) -> None:
        """The connection closed, not pooled: an answer may still be on its way."""
        if self._conn is not None:
            self._conn.disconnect()
            self.client.connection_pool.release(self._conn)
            self._conn = None

    def release(self) -> None:
        if self._conn is not None:
            self.client.connection_pool.release(self._conn)
            self._conn = None


class ScanAhead:
    def __init__(self, client: redis.Redis, pattern: str, count: int, before_read: Callable[[list[bytes]], None]):
        self.pattern, self.count, self.before_read = pattern, count, before_read
        self._ahead = _Ahead(client)

    def pages(self) -> Iterator[tuple[list[bytes], list]]:
        """Every page SCAN gives (each key at least once) with MGET's answer for its keys."""
        ahead = self._ahead
        try:
            ahead.send([self._scan(0)])
            cursor, names = self._scanned()
            page = None
            while True:
                self._ask(cursor, names)  # this page's values, then the next page's names
                if page:  # handed over once Redis has the next request
                    yield page
                values = [value for _ in range(mget.calls(len(names))) for value in ahead.read()]
                page = (names, values) if names else None
                if cursor == 0:
                    break
                cursor, names = self._scanned()
            if page:
                yield page
        except BaseException:
            ahead.drop()
            raise
        finally:
            ahead.release()

    def _ask(self, cursor: int, names: list[bytes]) -> None:
        """The request for ``names``' values and, unless the scan is done, the page after them.
        MGET first: Redis reads the keys its last SCAN just walked, still in its caches (the
        other order costs Redis ~20 % more a MGET at a million records, bench/README.md)."""
        if names:
            self.before_read(names)
        self._ahead.send([("MGET", *keys) for keys in mget.batches(names)]
                         + ([self._scan(cursor)] if cursor != 0 else []))

    def _scan(self, cursor: int) -> tuple:
        return "SCAN", cursor, "MATCH", self.pattern, "COUNT", self.count

    def _scanned(self) -> tuple[int, list[bytes]]:
        cursor, names = self._ahead.read()
        return int(cursor), names


def hscan_ahead(client: redis.Redis, key: str, count: int) -> Iterator[list[tuple[bytes, bytes]]]:
    """Every page HSCAN gives of hash ``key`` (each field at least once), as (field, value) pairs,
    each handed out once the request for the next is in Redis."""
    ahead = _Ahead(client)
    try:
        ahead.send([("HSCAN", key, 0, "COUNT", count)])
        while True:
            cursor, flat = ahead.read()
            cursor = int(cursor)
            if cursor != 0:
                ahead.send([("HSCAN", key, cursor, "COUNT", count)])
            if flat:
                yield list(zip(flat[0::2], flat[1::2]))
            if cursor == 0:
                return
    except BaseException:
        ahead.drop()
        raise
    finally:
        ahead.release()
