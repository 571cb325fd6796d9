"""Pages of JSON records read with the next page's request already in Redis: while reaper reads
the answer to page i (a sweep's largest replies, ~400 KB), Redis scans and reads page i+1.

One connection, each request SCAN (the next cursor) then MGET (this page's keys): the SCAN's small
answer, read first, says what to ask next before the MGET's is read. Redis so works while the
reading thread takes in the last answer and waits for the GIL (measured at 1M guests: the record
and online passes ~0.5 s shorter than one request at a time, the same CPU on both sides).

Used only while nothing else of the sweep talks to Redis (store.scan_and_read's ``alone``): then
Redis holds one page's request of ours at a time, as with one request at a time. A lost
connection is retried as the client retries any command (its ``Retry``): on a new connection the
requests not answered yet are sent again (SCAN and MGET only read). Whatever is raised, the
connection is dropped rather than pooled: an answer may still be on its way."""

from collections import deque
from collections.abc import Callable, Iterator

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from reaper.store import mget


class ScanAhead:
    def __init__(self, client: redis.Redis, pattern: str, count: int, before_read: Callable[[list[bytes]], None]):
        self.client, self.pattern, self.count = client, pattern, count
        self.before_read = before_read
        self._retry = client.get_retry() or Retry(NoBackoff(), 0)
        self._unanswered: deque = deque()  # commands sent whose answers are not read yet, in order
        self._conn = None

    def pages(self) -> Iterator[tuple[list[bytes], list]]:
        """Every page SCAN gives (each key at least once) with MGET's answer for its keys."""
        pool = self.client.connection_pool
        try:
            self._send([self._scan(0)])
            cursor, names = self._scanned()
            self._ask(cursor, names)
            while True:
                page, last = names, cursor == 0
                if not last:  # the SCAN of this page's request: the next page, asked for at once
                    cursor, names = self._scanned()
                    self._ask(cursor, names)
                values = [value for _ in range(mget.calls(len(page))) for value in self._read()]
                if page:
                    yield page, values
                if last:
                    break
        except BaseException:
            self._drop()
            raise
        finally:
            if self._conn is not None:
                pool.release(self._conn)

    def _ask(self, cursor: int, names: list[bytes]) -> None:
        """The request for ``names``' values and, unless the scan is done, the page after them."""
        if names:
            self.before_read(names)
        self._send(([self._scan(cursor)] if cursor != 0 else [])
                   + [("MGET", *keys) for keys in mget.batches(names)])

    def _scan(self, cursor: int) -> tuple:
        return "SCAN", cursor, "MATCH", self.pattern, "COUNT", self.count

    def _scanned(self) -> tuple[int, list[bytes]]:
        cursor, names = self._read()
        return int(cursor), names

    def _send(self, commands: list[tuple]) -> None:
        self._unanswered.extend(commands)
        if self._conn is not None and commands:
            try:
                # No health check: its PING would read an answer of ours still on its way.
                self._conn.send_packed_command(self._conn.pack_commands(commands), check_health=False)
            except (redis.ConnectionError, redis.TimeoutError):
                self._drop()  # sent again with the others once a read finds no connection

    def _read(self):
        return self._retry.call_with_retry(self._read_one, lambda error: self._drop())

    def _read_one(self):
        if self._conn is None:
            self._conn = self.client.connection_pool.get_connection()
            if self._unanswered:
                self._conn.send_packed_command(self._conn.pack_commands(list(self._unanswered)), check_health=False)
        answer = self._conn.read_response()
        self._unanswered.popleft()
        return answer

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.disconnect()
            self.client.connection_pool.release(self._conn)
            self._conn = None
