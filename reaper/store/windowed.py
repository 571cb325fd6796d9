"""Batches of one script kept two deep on one connection: Redis runs the next batch while Python
reads the answer to the last one and sends the one after. Redis then holds at most two calls of
ours at a time (two TAKE_BATCHes: ~3 ms of Redis), and never waits for Python between them.

A call Redis answers NOSCRIPT did nothing (its script was not in Redis's cache): it is sent again
once the script is loaded, once. Any other error Redis answers stops the sending; the answers
already in flight are read, and the first error is raised. A lost connection is retried as the
client retries any command (its ``Retry``): on a new connection, the calls not answered yet are
sent again; one that had run before the loss runs twice, which the sweep's scripts allow (they
compare before they take: a guest taken once is "changed" the second time). Whatever is raised,
the connection is dropped rather than pooled: an answer may still be on its way."""

from collections import deque
from collections.abc import Callable, Sequence

import redis
from redis.commands.core import Script

DEPTH = 2
_UNANSWERED = object()


def call_in_batches(script: Script, items: list, size: int,
                    arguments: Callable[[list], tuple[list, list]]) -> list:
    """One answer per item of ``items``, whose script answers one per item of its batch: calls
    of ``size`` items at most, each call's KEYS and ARGV made by ``arguments(batch)`` when it is
    about to be sent, while Redis runs the call before (made all first, Redis would wait for
    them between one caller's calls and the next's: ~2 ms a thousand guests)."""
    calls = _MadeWhenSent([items[start:start + size] for start in range(0, len(items), size)], arguments)
    return [one for answer in call_all(script, calls) for one in answer]


class _MadeWhenSent(Sequence):
    """Calls' (keys, args), each made on first use and kept (a call may be sent again)."""

    def __init__(self, batches: list[list], arguments: Callable[[list], tuple[list, list]]):
        self.batches, self.arguments = batches, arguments
        self.made: dict[int, tuple[list, list]] = {}

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> tuple[list, list]:
        made = self.made.get(i)
        if made is None:
            made = self.made[i] = self.arguments(self.batches[i])
        return made


def call_all(script: Script, calls: Sequence[tuple[list, list]]) -> list:
    """Each call's answer, in the order of ``calls`` (each a (keys, args) pair)."""
    client = script.registered_client
    window = _Window(script, calls)
    retry = client.get_retry()
    if retry is None:
        return window.run_on(client.connection_pool)
    return retry.call_with_retry(lambda: window.run_on(client.connection_pool), lambda error: None)


class _Window:
    def __init__(self, script: Script, calls: Sequence[tuple[list, list]]):
        self.script, self.calls = script, calls
        self.answers: list = [_UNANSWERED] * len(calls)
        self.reloaded = False  # the script is loaded once at most

    def run_on(self, pool: redis.ConnectionPool) -> list:
        """Every call not answered yet, on a connection of ``pool``."""
        self.conn = pool.get_connection()
        self.waiting = deque(i for i, answer in enumerate(self.answers) if answer is _UNANSWERED)
        self.in_flight: deque = deque()
        self.again: list[int] = []  # answered NOSCRIPT: not run, to send once the script is loaded
        self.error: Exception | None = None
        try:
            return self._run()
        except BaseException:
            self.conn.disconnect()  # an answer may still be in flight: never hand it to the next caller
            raise
        finally:
            pool.release(self.conn)

    def _run(self) -> list:
        while True:
            while self.waiting and len(self.in_flight) < DEPTH and self.error is None and not self.again:
                self._send(self.waiting.popleft())
            if not self.in_flight:
                if self.again and self.error is None:
                    self._load_and_send_again()
                    continue
                break
            self._read(self.in_flight.popleft())
        if self.error is not None:
            raise self.error
        return self.answers

    def _send(self, i: int) -> None:
        keys, args = self.calls[i]
        # A health check's PING, with a call's answer still on its way, would read that answer.
        self.conn.send_packed_command(self.conn.pack_command("EVALSHA", self.script.sha, len(keys), *keys, *args),
                                      check_health=not self.in_flight)
        self.in_flight.append(i)

    def _read(self, i: int) -> None:
        try:
            self.answers[i] = self.conn.read_response()
        except redis.exceptions.NoScriptError as exc:
            if self.reloaded:
                self.error = self.error or exc
            else:
                self.again.append(i)
        except redis.ResponseError as exc:
            self.error = self.error or exc

    def _load_and_send_again(self) -> None:
        self.reloaded = True
        self.script.registered_client.script_load(self.script.script)
        self.waiting.extendleft(reversed(self.again))
        self.again = []
