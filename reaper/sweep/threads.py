"""The sweep's two helpers that keep Redis and Python busy at once: answers handled one call
behind, and the online pages read beside the record pass. Every thread takes the sweep's turn
for each Redis call, so Redis never serves more than one of our commands at a time."""

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing

from reaper.core.records import OnlineEntry


class OneBehind:
    """Redis calls answered while the next batch is judged: the call for batch i runs in a
    thread of its own, and its answer is handled here, in order, when batch i+1 hands over its
    call (or at flush), so that Redis works while Python judges."""

    def __init__(self):
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="reaper-one-behind")
        self._pending: tuple[Future, Callable] | None = None

    def submit(self, call: Callable, then: Callable) -> None:
        """Start ``call``; ``then(its answer)`` runs here once the next call has started."""
        started = self._worker.submit(call)
        self.flush()
        self._pending = (started, then)

    def flush(self) -> None:
        if self._pending is not None:
            answer, then = self._pending
            self._pending = None
            then(answer.result())

    def close(self) -> None:
        """Wait for the call in flight; its answer is dropped only when we are failing anyway."""
        self._worker.shutdown(wait=True)


class OnlinePagesBeside:
    """Reads every batch of ``pages`` in a thread of its own and keeps their entries; ``entries()``
    waits for the last and raises what the thread raised. Each page takes the sweep's turn, so
    Redis still serves one of our commands at a time."""

    def __init__(self, pages: Callable[[], Iterator[list[OnlineEntry]]], stopping: threading.Event | None):
        self._pages, self._kept, self._error = pages, [], None
        self._stopping, self._quit = stopping, threading.Event()
        self._thread = threading.Thread(target=self._read, name="reaper-online", daemon=True)

    def __enter__(self) -> "OnlinePagesBeside":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is not None:  # the record pass failed: no use reading on
            self._quit.set()
        self._thread.join()

    def _read(self) -> None:
        try:
            with closing(self._pages()) as pages:
                for entries in pages:
                    self._kept += entries
                    if self._quit.is_set() or (self._stopping is not None and self._stopping.is_set()):
                        return
        except BaseException as exc:  # raised by entries(), in the sweep's thread
            self._error = exc

    def entries(self) -> list[OnlineEntry]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._kept
